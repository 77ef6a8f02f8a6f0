//! A STAND-IN for the Kubernetes API server (no kube-apiserver package exists for this
//! machine): a small HTTP/1.1 server speaking the list and watch protocol kube-rs's watcher
//! uses, for namespaces (as PartialObjectMetadata), pods, services and endpointslices, with
//! resourceVersions, watch
//! streams of ADDED / MODIFIED / DELETED events resumed from a resourceVersion, and the
//! `spec.nodeName!=X` / `spec.nodeName=X` field selectors. It binds inside a namespace the test created (the
//! node's), on loopback: no traffic leaves it. The CRI side of these tests stays real.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

#[derive(Default)]
struct State {
    rv: u64,
    /// kind ("namespaces", "pods", "services", "endpointslices") -> key -> object
    objects: BTreeMap<&'static str, BTreeMap<String, Value>>,
    /// (resourceVersion, kind, event type, object)
    log: Vec<(u64, &'static str, &'static str, Value)>,
    stop: bool,
}

pub struct ApiServer {
    pub addr: SocketAddr,
    state: Arc<(Mutex<State>, Condvar)>,
}

impl ApiServer {
    /// Listens on 127.0.0.1 inside `netns`.
    pub fn start(netns: &Path) -> ApiServer {
        let l = fw_daemon::netns::run_in(netns, || TcpListener::bind("127.0.0.1:0"))
            .expect("enter the node's namespace")
            .expect("bind the API stand-in");
        let addr = l.local_addr().unwrap();
        let state: Arc<(Mutex<State>, Condvar)> = Arc::default();
        let st = state.clone();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let st = st.clone();
                std::thread::spawn(move || serve(s, st));
            }
        });
        ApiServer { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn change(&self, kind: &'static str, key: String, obj: Option<Value>) {
        let (m, cv) = &*self.state;
        let mut s = m.lock().unwrap();
        s.rv += 1;
        let rv = s.rv;
        let map = s.objects.entry(kind).or_default();
        let (ty, obj) = match obj {
            Some(mut o) => {
                o["metadata"]["resourceVersion"] = json!(rv.to_string());
                let ty = if map.contains_key(&key) { "MODIFIED" } else { "ADDED" };
                map.insert(key, o.clone());
                (ty, o)
            }
            None => match map.remove(&key) {
                Some(mut o) => {
                    o["metadata"]["resourceVersion"] = json!(rv.to_string());
                    ("DELETED", o)
                }
                None => return,
            },
        };
        s.log.push((rv, kind, ty, obj));
        cv.notify_all();
    }

    pub fn namespace(&self, name: &str, labels: &[(&str, &str)]) {
        let labels: serde_json::Map<String, Value> =
            labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
        let o = json!({
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
            "metadata": {"name": name, "uid": format!("ns-{name}"), "labels": labels}
        });
        self.change("namespaces", name.into(), Some(o));
    }

    pub fn pod(&self, ns: &str, name: &str, node: &str, labels: &[(&str, &str)], ip: &str) {
        let labels: serde_json::Map<String, Value> =
            labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
        let o = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "uid": format!("pod-{ns}-{name}"), "labels": labels},
            "spec": {"nodeName": node, "containers": []},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}
        });
        self.change("pods", format!("{ns}/{name}"), Some(o));
    }

    pub fn delete_pod(&self, ns: &str, name: &str) {
        self.change("pods", format!("{ns}/{name}"), None);
    }

    /// A ClusterIP Service; `ports`: (name, port, targetPort).
    pub fn service(&self, ns: &str, name: &str, ip: &str, ports: &[(&str, u16, u16)]) {
        let ports: Vec<Value> = ports
            .iter()
            .map(|(n, p, t)| json!({"name": n, "port": p, "targetPort": t, "protocol": "TCP"}))
            .collect();
        let o = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns, "uid": format!("svc-{ns}-{name}")},
            "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip], "ports": ports}
        });
        self.change("services", format!("{ns}/{name}"), Some(o));
    }

    pub fn delete_service(&self, ns: &str, name: &str) {
        self.change("services", format!("{ns}/{name}"), None);
    }

    /// The EndpointSlice the endpoint controller keeps for Service `service`: `ports` are
    /// (name, resolved target port), `ready` the ready endpoints' addresses.
    pub fn endpoint_slice(&self, ns: &str, name: &str, service: &str, ports: &[(&str, u16)], ready: &[&str]) {
        let ports: Vec<Value> =
            ports.iter().map(|(n, p)| json!({"name": n, "port": p, "protocol": "TCP"})).collect();
        let endpoints: Vec<Value> =
            ready.iter().map(|a| json!({"addresses": [a], "conditions": {"ready": true}})).collect();
        let o = json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": ns, "uid": format!("eps-{ns}-{name}"),
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4", "endpoints": endpoints, "ports": ports
        });
        self.change("endpointslices", format!("{ns}/{name}"), Some(o));
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let (m, cv) = &*self.state;
        m.lock().unwrap().stop = true;
        cv.notify_all();
    }
}

/// `spec.nodeName!=X` and `spec.nodeName=X` (the selectors fw uses); anything else selects
/// all.
fn selected(pod: &Value, selector: Option<&str>) -> bool {
    let node = pod["spec"]["nodeName"].as_str();
    match selector {
        Some(s) if s.starts_with("spec.nodeName!=") => node != s.strip_prefix("spec.nodeName!="),
        Some(s) if s.starts_with("spec.nodeName=") => node == s.strip_prefix("spec.nodeName="),
        _ => true,
    }
}

fn query(target: &str) -> (String, BTreeMap<String, String>) {
    let (path, q) = target.split_once('?').unwrap_or((target, ""));
    let params = q
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.replace("%21", "!").replace("%3D", "=").replace("%3d", "=")))
        .collect();
    (path.to_string(), params)
}

fn serve(s: TcpStream, state: Arc<(Mutex<State>, Condvar)>) {
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" {
                break;
            }
        }
        let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let (path, params) = query(&target);
        let kind: &'static str = match path.as_str() {
            "/api/v1/namespaces" => "namespaces",
            "/api/v1/pods" => "pods",
            "/api/v1/services" => "services",
            "/apis/discovery.k8s.io/v1/endpointslices" => "endpointslices",
            _ => {
                let _ = w.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n");
                continue;
            }
        };
        let selector = params.get("fieldSelector").cloned();
        if params.get("watch").map(String::as_str) == Some("true") {
            let from: u64 = params.get("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
            let timeout = params.get("timeoutSeconds").and_then(|v| v.parse().ok()).unwrap_or(5u64).min(5);
            if watch(&mut w, &state, kind, from, selector.as_deref(), Duration::from_secs(timeout)).is_err() {
                return;
            }
        } else {
            let (m, _) = &*state;
            let s = m.lock().unwrap();
            let items: Vec<&Value> = s
                .objects
                .get(kind)
                .into_iter()
                .flat_map(|m| m.values())
                .filter(|p| kind != "pods" || selected(p, selector.as_deref()))
                .collect();
            let (api_version, list_kind) = match kind {
                "namespaces" => ("meta.k8s.io/v1", "PartialObjectMetadataList"),
                "pods" => ("v1", "PodList"),
                "services" => ("v1", "ServiceList"),
                _ => ("discovery.k8s.io/v1", "EndpointSliceList"),
            };
            let body = json!({
                "apiVersion": api_version,
                "kind": list_kind,
                "metadata": {"resourceVersion": s.rv.to_string()},
                "items": items,
            })
            .to_string();
            drop(s);
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            if w.write_all(head.as_bytes()).and_then(|_| w.write_all(body.as_bytes())).is_err() {
                return;
            }
        }
    }
}

/// Streams the events after `from` as chunks, until `timeout` (the client then watches
/// again from the last resourceVersion it saw).
fn watch(
    w: &mut TcpStream,
    state: &Arc<(Mutex<State>, Condvar)>,
    kind: &'static str,
    mut from: u64,
    selector: Option<&str>,
    timeout: Duration,
) -> std::io::Result<()> {
    w.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")?;
    let until = Instant::now() + timeout;
    let (m, cv) = &**state;
    loop {
        let events: Vec<String> = {
            let mut s = m.lock().unwrap();
            while !s.stop && s.rv <= from && Instant::now() < until {
                s = cv.wait_timeout(s, until.saturating_duration_since(Instant::now())).unwrap().0;
            }
            if s.stop || Instant::now() >= until && s.rv <= from {
                break;
            }
            let out = s
                .log
                .iter()
                .filter(|(rv, k, _, o)| *rv > from && *k == kind && (kind != "pods" || selected(o, selector)))
                .map(|(_, _, ty, o)| json!({"type": ty, "object": o}).to_string() + "\n")
                .collect();
            from = s.rv;
            out
        };
        for e in events {
            write!(w, "{:x}\r\n{e}\r\n", e.len())?;
        }
        w.flush()?;
    }
    w.write_all(b"0\r\n\r\n")?;
    w.flush()
}
