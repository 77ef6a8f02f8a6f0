//! What only the Kubernetes API server knows, for the node agent: the labels of each
//! Kubernetes namespace (`match.namespace_labels`), and the pods on *other* nodes, so a
//! local pod's traffic to a remote pod is judged by that pod's zone (its address joins the
//! zone's sets; it has no table here: `netns` is `None`).
//!
//! And the Services: inside a pod's namespace egress sees a Service's ClusterIP before the
//! node's proxy rewrites it, so each ClusterIP and port stands for the endpoints behind it
//! (EndpointSlices), as `inventory::ServiceVip`.
//!
//! All are followed with kube-rs's watcher (list, then watch from the resourceVersion,
//! relisting when the server expires it). Memory is bounded by what is kept: namespaces are
//! watched as metadata only; of a pod only its name, namespace, labels and addresses stay.
//! Pods of this node (`--node-name`, the downward API's `spec.nodeName`) are left out by a
//! field selector: the CRI runtime describes those. hostNetwork pods are left out too: their
//! address is their node's, which no pod zone may claim.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event};
use kube::Api;
use tracing::{info, warn};

use crate::inventory::{Container, KubeMeta, ServicePort, ServiceVip, SvcProto};

/// Namespaces and remote pods kept at most (a large cluster has tens of thousands of pods).
const MAX_NAMESPACES: usize = 10_000;
const MAX_PODS: usize = 100_000;
const MAX_SERVICES: usize = 20_000;
const MAX_SLICES: usize = 50_000;
/// Kubernetes puts at most 1,000 endpoints in a slice and 100 ports in a Service.
const MAX_SLICE_ENDPOINTS: usize = 1000;
const MAX_PORTS: usize = 100;
/// Backends one Service port stands for, at most (the rest are left out and counted).
const MAX_BACKENDS: usize = 10_000;
const MAX_LABELS: usize = 256;
const MAX_LABEL_BYTES: usize = 1024;
/// Changes are sent on at most this often (a rollout is one update, not hundreds).
const DEBOUNCE: Duration = Duration::from_millis(100);

/// Where the API server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeSettings {
    /// An explicit URL (`--kube-api`); `None`: in-cluster service account, else kubeconfig.
    pub api: Option<String>,
    /// This node's name: its pods come from the CRI runtime, not from here.
    pub node: Option<String>,
}

/// Namespace name -> its labels.
pub type NamespaceLabels = BTreeMap<String, Vec<(String, String)>>;

#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    Snapshot {
        namespaces: NamespaceLabels,
        remote: Vec<Container>,
        services: Vec<ServiceVip>,
        /// This node's pods' labels as the API has them now (`namespace/name`): the CRI
        /// runtime keeps the labels a sandbox was created with, and `kubectl label` does
        /// not change those.
        local_labels: BTreeMap<String, Vec<(String, String)>>,
    },
    Unavailable(String),
}

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("kubernetes API: {0}")]
    Config(String),
    #[error("kubernetes API: {0}")]
    Client(#[from] kube::Error),
    #[error("kubernetes API watch: {0}")]
    Watch(#[from] watcher::Error),
}

fn labels(m: Option<&BTreeMap<String, String>>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = m
        .into_iter()
        .flatten()
        .filter(|(k, v)| k.len() <= MAX_LABEL_BYTES && v.len() <= MAX_LABEL_BYTES)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    out.truncate(MAX_LABELS); // BTreeMap order: already sorted
    out
}

/// A pod on another node as a peer: `None` for pods with no address of their own yet (or
/// ever: hostNetwork), or finished ones.
pub fn remote_pod(p: &Pod) -> Option<Container> {
    let ns = p.metadata.namespace.clone()?;
    let name = p.metadata.name.clone()?;
    if p.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
        return None;
    }
    let status = p.status.as_ref()?;
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let mut addresses: Vec<IpAddr> = status
        .pod_ips
        .iter()
        .flatten()
        .map(|ip| ip.ip.as_str())
        .chain(status.pod_ip.as_deref())
        .filter_map(|s| s.parse().ok())
        .collect();
    addresses.sort();
    addresses.dedup();
    if addresses.is_empty() || ns.len() + name.len() > 512 {
        return None;
    }
    Some(Container {
        name: format!("{ns}/{name}"),
        netns: None,
        image: String::new(),
        labels: labels(p.metadata.labels.as_ref()),
        addresses,
        link: None,
        kube: Some(KubeMeta { namespace: ns, namespace_labels: Vec::new() }),
    })
}

/// A Service port as fw keeps it: its name (how EndpointSlices refer to it), protocol, port.
type PortKey = (String, SvcProto, u16);

fn proto(p: Option<&str>) -> Option<SvcProto> {
    match p.unwrap_or("TCP") {
        "TCP" => Some(SvcProto::Tcp),
        "UDP" => Some(SvcProto::Udp),
        _ => None, // SCTP: no policy speaks it
    }
}

/// What fw keeps of a Service: its ClusterIPs and ports; `None` for a Service without a
/// virtual address (headless, ExternalName), whose clients reach the pods directly.
#[derive(Debug, Clone, PartialEq)]
pub struct SvcEntry {
    vips: Vec<IpAddr>,
    ports: Vec<PortKey>,
}

pub fn service_entry(s: &Service) -> Option<SvcEntry> {
    let spec = s.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    // The node's proxy rewrites these on the client's node too: the ClusterIPs, external
    // IPs and load-balancer ingress IPs all stand for the endpoints.
    let lb = s.status.as_ref().and_then(|st| st.load_balancer.as_ref()).and_then(|l| l.ingress.as_ref());
    let mut vips: Vec<IpAddr> = spec
        .cluster_ips
        .iter()
        .flatten()
        .map(String::as_str)
        .chain(spec.cluster_ip.as_deref())
        .chain(spec.external_ips.iter().flatten().map(String::as_str))
        .chain(lb.into_iter().flatten().filter_map(|i| i.ip.as_deref()))
        .filter_map(|a| a.parse().ok()) // "None": headless
        .collect();
    vips.sort();
    vips.dedup();
    let ports: Vec<PortKey> = spec
        .ports
        .iter()
        .flatten()
        .take(MAX_PORTS)
        .filter_map(|p| {
            let port = u16::try_from(p.port).ok().filter(|p| *p > 0)?;
            Some((p.name.clone().unwrap_or_default(), proto(p.protocol.as_deref())?, port))
        })
        .collect();
    (!vips.is_empty()).then_some(SvcEntry { vips, ports })
}

/// What fw keeps of an EndpointSlice: the Service it belongs to, its resolved ports (the
/// targetPorts) and its ready endpoints' addresses.
#[derive(Debug, Clone, PartialEq)]
pub struct SliceEntry {
    service: String,
    ports: Vec<PortKey>,
    addresses: Vec<IpAddr>,
    /// Terminating endpoints still serving: the proxy falls back to them when a Service
    /// has no ready endpoint.
    serving: Vec<IpAddr>,
    /// More endpoints than fw keeps: the Service is not fully known.
    truncated: bool,
}

pub fn slice_entry(e: &EndpointSlice) -> Option<SliceEntry> {
    let ns = e.metadata.namespace.as_deref()?;
    let svc = e.metadata.labels.as_ref()?.get("kubernetes.io/service-name")?;
    let ports = e
        .ports
        .iter()
        .flatten()
        .take(MAX_PORTS)
        .filter_map(|p| {
            let port = u16::try_from(p.port?).ok().filter(|p| *p > 0)?;
            Some((p.name.clone().unwrap_or_default(), proto(p.protocol.as_deref())?, port))
        })
        .collect();
    let addrs = |keep: &dyn Fn(Option<&k8s_openapi::api::discovery::v1::EndpointConditions>) -> bool| {
        let mut out: Vec<IpAddr> = e
            .endpoints
            .iter()
            .take(MAX_SLICE_ENDPOINTS)
            .filter(|ep| keep(ep.conditions.as_ref()))
            .flat_map(|ep| ep.addresses.iter())
            .filter_map(|a| a.parse().ok())
            .collect();
        out.sort();
        out.dedup();
        out
    };
    // "ready" unset means ready, as the API documents it.
    let addresses = addrs(&|c| c.and_then(|c| c.ready) != Some(false));
    let serving = addrs(&|c| c.is_some_and(|c| c.ready == Some(false) && c.serving == Some(true)));
    let truncated = e.endpoints.len() > MAX_SLICE_ENDPOINTS;
    Some(SliceEntry { service: format!("{ns}/{svc}"), ports, addresses, serving, truncated })
}

/// Each Service with a virtual address, its ports matched by name and protocol to the
/// slices' resolved ports (as the node's proxy matches them). `dropped`: backends left out
/// over the cap.
///
/// What fw does not fully know fails closed: a port with endpoints over the cap, or any
/// port while slices were dropped over the cap, is `incomplete` (an endpoint in no zone).
pub fn join_services(
    services: &BTreeMap<String, SvcEntry>,
    slices: &BTreeMap<String, SliceEntry>,
    slices_dropped: bool,
    dropped: &mut usize,
) -> Vec<ServiceVip> {
    let mut by_service: BTreeMap<&str, Vec<&SliceEntry>> = BTreeMap::new();
    for s in slices.values() {
        by_service.entry(s.service.as_str()).or_default().push(s);
    }
    let mut out = Vec::with_capacity(services.len());
    for (name, svc) in services {
        let slices = by_service.get(name.as_str()).map(Vec::as_slice).unwrap_or_default();
        let ports = svc
            .ports
            .iter()
            .map(|(pname, proto, port)| {
                let mut incomplete = slices_dropped;
                let mut pick = |serving: bool| {
                    let mut backends: Vec<(IpAddr, u16)> = Vec::new();
                    for s in slices {
                        let Some((_, _, target)) = s.ports.iter().find(|(n, p, _)| n == pname && p == proto)
                        else {
                            continue;
                        };
                        incomplete |= s.truncated;
                        for a in if serving { &s.serving } else { &s.addresses } {
                            if backends.len() >= MAX_BACKENDS {
                                *dropped += 1;
                                incomplete = true;
                                continue;
                            }
                            backends.push((*a, *target));
                        }
                    }
                    backends
                };
                let mut backends = pick(false);
                if backends.is_empty() {
                    backends = pick(true);
                }
                backends.sort();
                backends.dedup();
                ServicePort { proto: *proto, port: *port, backends, incomplete }
            })
            .collect();
        out.push(ServiceVip { name: name.clone(), addresses: svc.vips.clone(), ports });
    }
    out
}

/// One watched kind's objects as fw keeps them, with the relist buffer.
struct Mirror<V> {
    live: BTreeMap<String, V>,
    relist: Option<BTreeMap<String, V>>,
    cap: usize,
    dropped: usize,
}

impl<V: PartialEq> Mirror<V> {
    fn new(cap: usize) -> Self {
        Mirror { live: BTreeMap::new(), relist: None, cap, dropped: 0 }
    }

    /// Applies one watcher event; `true` when what is live changed.
    fn apply<K>(
        &mut self,
        ev: Event<K>,
        key: impl Fn(&K) -> Option<String>,
        value: impl Fn(&K) -> Option<V>,
    ) -> bool {
        let cap = self.cap;
        match ev {
            Event::Init => {
                self.relist = Some(BTreeMap::new());
                false
            }
            Event::InitApply(o) => {
                if let (Some(buf), Some(k)) = (self.relist.as_mut(), key(&o)) {
                    if let Some(v) = value(&o) {
                        if buf.len() < cap {
                            buf.insert(k, v);
                        } else {
                            self.dropped += 1;
                        }
                    }
                }
                false
            }
            Event::InitDone => match self.relist.take() {
                Some(buf) if buf != self.live => {
                    self.live = buf;
                    true
                }
                _ => false,
            },
            Event::Apply(o) => {
                let Some(k) = key(&o) else { return false };
                match value(&o) {
                    Some(v) => {
                        if self.live.get(&k) == Some(&v) {
                            return false;
                        }
                        if self.live.len() >= cap && !self.live.contains_key(&k) {
                            self.dropped += 1;
                            return false;
                        }
                        self.live.insert(k, v);
                        true
                    }
                    None => self.live.remove(&k).is_some(),
                }
            }
            Event::Delete(o) => key(&o).is_some_and(|k| self.live.remove(&k).is_some()),
        }
    }
}

/// Where updates go; `false` once nobody listens.
pub type Sink = Box<dyn Fn(Update) -> bool + Send + Sync>;

async fn client(s: &KubeSettings) -> Result<kube::Client, KubeError> {
    match &s.api {
        Some(url) => {
            let uri = url.parse().map_err(|e| KubeError::Config(format!("--kube-api {url}: {e}")))?;
            Ok(kube::Client::try_from(kube::Config::new(uri))?)
        }
        None => Ok(kube::Client::try_default().await?),
    }
}

struct Mirrors {
    namespaces: Mirror<Vec<(String, String)>>,
    pods: Mirror<Container>,
    local: Mirror<Vec<(String, String)>>,
    services: Mirror<SvcEntry>,
    slices: Mirror<SliceEntry>,
    backends_dropped: usize,
}

impl Mirrors {
    fn dropped(&self) -> usize {
        self.namespaces.dropped
            + self.pods.dropped
            + self.local.dropped
            + self.services.dropped
            + self.slices.dropped
    }

    fn snapshot(&mut self) -> Update {
        let mut dropped = 0;
        let services =
            join_services(&self.services.live, &self.slices.live, self.slices.dropped > 0, &mut dropped);
        self.backends_dropped = dropped;
        Update::Snapshot {
            namespaces: self.namespaces.live.clone(),
            remote: self.pods.live.values().cloned().collect(),
            services,
            local_labels: self.local.live.clone(),
        }
    }
}

fn ns_key(m: &kube::api::ObjectMeta) -> Option<String> {
    Some(format!("{}/{}", m.namespace.as_deref()?, m.name.as_deref()?))
}

/// Follows namespaces, remote pods, Services and EndpointSlices until the receiver goes
/// away.
async fn follow(s: &KubeSettings, tx: &Sink) -> Result<(), KubeError> {
    let client = client(s).await?;
    let ns_api: Api<Namespace> = Api::all(client.clone());
    let pod_api: Api<Pod> = Api::all(client.clone());
    let local_api: Api<Pod> = Api::all(client.clone());
    let svc_api: Api<Service> = Api::all(client.clone());
    let slice_api: Api<EndpointSlice> = Api::all(client);
    let pod_cfg = match &s.node {
        Some(node) => watcher::Config::default().fields(&format!("spec.nodeName!={node}")),
        None => watcher::Config::default(),
    };
    let all = watcher::Config::default;
    // This node's pods, for their current labels (none to follow without a node name).
    let local_cfg = match &s.node {
        Some(node) => watcher::Config::default().fields(&format!("spec.nodeName={node}")),
        None => all(),
    };
    let mut local_events = std::pin::pin!(watcher::watcher(local_api, local_cfg));
    let mut ns_events = std::pin::pin!(watcher::metadata_watcher(ns_api, all()));
    let mut pod_events = std::pin::pin!(watcher::watcher(pod_api, pod_cfg));
    let mut svc_events = std::pin::pin!(watcher::watcher(svc_api, all()));
    let mut slice_events = std::pin::pin!(watcher::watcher(slice_api, all()));
    let mut m = Mirrors {
        namespaces: Mirror::new(MAX_NAMESPACES),
        pods: Mirror::new(MAX_PODS),
        local: Mirror::new(MAX_PODS),
        services: Mirror::new(MAX_SERVICES),
        slices: Mirror::new(MAX_SLICES),
        backends_dropped: 0,
    };
    // Nothing is sent until every kind has been listed once: a snapshot with the pods but
    // not yet the Services (or the reverse) would take peers out of their zones. Until then
    // the daemon keeps what it had (across a reconnect too).
    let mut synced = [false, false, false, false, s.node.is_none()];
    // A change is sent DEBOUNCE after the first one since the last send, however busy the
    // cluster: later events join it, they do not push it back.
    let mut due: Option<tokio::time::Instant> = None;
    let mut reported_drops = 0;
    info!(api = s.api.as_deref().unwrap_or("in-cluster or kubeconfig"), node = ?s.node, "kubernetes API: following namespaces, remote pods, services and endpoint slices");
    let ended = |what: &str| KubeError::Config(format!("{what} watch ended"));
    fn listed<K>(ev: &Event<K>, flag: &mut bool) {
        if matches!(ev, Event::InitDone) {
            *flag = true;
        }
    }
    loop {
        let mut changed = false;
        let far = tokio::time::Instant::now() + Duration::from_secs(3600);
        let ready = synced.iter().all(|s| *s);
        tokio::select! {
            ev = ns_events.next() => {
                let ev = ev.ok_or_else(|| ended("namespace"))??;
                listed(&ev, &mut synced[0]);
                changed = m.namespaces.apply(ev, |o| o.metadata.name.clone(), |o| Some(labels(o.metadata.labels.as_ref())));
            }
            ev = pod_events.next() => {
                let ev = ev.ok_or_else(|| ended("pod"))??;
                listed(&ev, &mut synced[1]);
                changed = m.pods.apply(ev, |p| ns_key(&p.metadata), remote_pod);
            }
            ev = local_events.next(), if s.node.is_some() => {
                let ev = ev.ok_or_else(|| ended("local pod"))??;
                listed(&ev, &mut synced[4]);
                changed = m.local.apply(ev, |p| ns_key(&p.metadata), |p| Some(labels(p.metadata.labels.as_ref())));
            }
            ev = svc_events.next() => {
                let ev = ev.ok_or_else(|| ended("service"))??;
                listed(&ev, &mut synced[2]);
                changed = m.services.apply(ev, |o| ns_key(&o.metadata), service_entry);
            }
            ev = slice_events.next() => {
                let ev = ev.ok_or_else(|| ended("endpoint slice"))??;
                listed(&ev, &mut synced[3]);
                changed = m.slices.apply(ev, |o| ns_key(&o.metadata), slice_entry);
            }
            _ = tokio::time::sleep_until(due.unwrap_or(far)), if due.is_some() && ready => {
                due = None;
                let update = m.snapshot();
                let drops = m.dropped() + m.backends_dropped;
                if drops != reported_drops {
                    warn!(dropped = drops, "kubernetes API: more objects than fw keeps; the rest are ignored");
                    reported_drops = drops;
                }
                if !tx(update) {
                    return Ok(());
                }
            }
        }
        // The first full listing is sent even if it matches nothing before (an empty
        // cluster): the daemon learns the API is there.
        let first = !ready && synced.iter().all(|s| *s);
        if (changed || first) && due.is_none() {
            due = Some(tokio::time::Instant::now() + DEBOUNCE);
        }
    }
}

/// Runs the source as a task on the daemon's runtime, until the sink closes.
pub fn spawn(rt: &tokio::runtime::Handle, s: KubeSettings, tx: Sink) -> tokio::task::JoinHandle<()> {
    rt.spawn(async move {
        let (s, tx) = (&s, &tx);
        super::follow_with_backoff("kubernetes API", || follow(s, tx), |why| tx(Update::Unavailable(why)))
            .await
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodIP, PodSpec, PodStatus};
    use kube::api::ObjectMeta;

    fn pod(ns: &str, name: &str, ips: &[&str], host_network: bool, phase: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                labels: Some(BTreeMap::from([("app".to_string(), "api".to_string())])),
                ..Default::default()
            },
            spec: Some(PodSpec { host_network: Some(host_network), ..Default::default() }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                pod_ip: ips.first().map(|s| s.to_string()),
                pod_ips: Some(ips.iter().map(|s| PodIP { ip: s.to_string() }).collect()),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_remote_pod_is_a_peer_with_its_addresses_and_no_namespace_to_program() {
        let c =
            remote_pod(&pod("pay", "api-1", &["10.244.1.5", "fd00::5"], false, "Running")).expect("a peer");
        assert_eq!(c.name, "pay/api-1");
        assert_eq!(c.netns, None);
        assert_eq!(c.addresses.len(), 2);
        assert_eq!(c.labels, vec![("app".to_string(), "api".to_string())]);
        assert_eq!(c.kube.map(|k| k.namespace).as_deref(), Some("pay"));
    }

    #[test]
    fn host_network_pending_and_finished_pods_are_no_peers() {
        assert_eq!(remote_pod(&pod("a", "b", &["10.0.0.9"], true, "Running")), None, "a node's address");
        assert_eq!(remote_pod(&pod("a", "b", &[], false, "Pending")), None, "no address yet");
        assert_eq!(remote_pod(&pod("a", "b", &["10.0.0.9"], false, "Succeeded")), None);
        assert_eq!(remote_pod(&pod("a", "b", &["not-an-ip"], false, "Running")), None);
    }

    /// A relist replaces what was live at its end only (an object missing from it is gone),
    /// and the caps hold.
    #[test]
    fn the_mirror_follows_events_and_relists_and_stays_bounded() {
        let mut m: Mirror<u32> = Mirror::new(2);
        let k = |v: &(String, u32)| Some(v.0.clone());
        let v = |v: &(String, u32)| Some(v.1);
        assert!(m.apply(Event::Apply(("a".into(), 1)), k, v));
        assert!(!m.apply(Event::Apply(("a".into(), 1)), k, v), "no change, no update");
        assert!(m.apply(Event::Apply(("b".into(), 2)), k, v));
        assert!(!m.apply(Event::Apply(("c".into(), 3)), k, v), "over the cap: dropped");
        assert_eq!(m.dropped, 1);
        assert!(!m.apply(Event::Init, k, v));
        assert!(!m.apply(Event::InitApply(("b".into(), 2)), k, v), "buffered until done");
        assert_eq!(m.live.len(), 2);
        assert!(m.apply(Event::InitDone, k, v), "a is gone");
        assert_eq!(m.live.keys().collect::<Vec<_>>(), ["b"]);
        assert!(m.apply(Event::Delete(("b".into(), 0)), k, v));
        assert!(m.live.is_empty());
    }

    fn service(ns: &str, name: &str, ips: &[&str], ports: &[(&str, i32, &str)]) -> Service {
        use k8s_openapi::api::core::v1::{ServicePort as SP, ServiceSpec};
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: ips.first().map(|s| s.to_string()),
                cluster_ips: Some(ips.iter().map(|s| s.to_string()).collect()),
                ports: Some(
                    ports
                        .iter()
                        .map(|(n, p, proto)| SP {
                            name: Some(n.to_string()),
                            port: *p,
                            protocol: Some(proto.to_string()),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn slice(
        ns: &str,
        name: &str,
        svc: &str,
        ports: &[(&str, i32)],
        eps: &[(&str, Option<bool>)],
    ) -> EndpointSlice {
        use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
        EndpointSlice {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                labels: Some(BTreeMap::from([("kubernetes.io/service-name".to_string(), svc.to_string())])),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: eps
                .iter()
                .map(|(a, ready)| Endpoint {
                    addresses: vec![a.to_string()],
                    conditions: Some(EndpointConditions { ready: *ready, ..Default::default() }),
                    ..Default::default()
                })
                .collect(),
            ports: Some(
                ports
                    .iter()
                    .map(|(n, p)| EndpointPort {
                        name: Some(n.to_string()),
                        port: Some(*p),
                        ..Default::default()
                    })
                    .collect(),
            ),
        }
    }

    /// Service ports meet the slices' resolved ports by name and protocol; endpoints not
    /// ready are no backends; headless Services and SCTP ports are no virtual addresses.
    #[test]
    fn services_and_their_slices_become_virtual_addresses() {
        let mut services = BTreeMap::new();
        let s = service(
            "shop",
            "api",
            &["10.96.0.10"],
            &[("http", 80, "TCP"), ("admin", 81, "TCP"), ("x", 99, "SCTP")],
        );
        services.insert("shop/api".to_string(), service_entry(&s).expect("a ClusterIP"));
        assert_eq!(service_entry(&service("shop", "h", &["None"], &[("http", 80, "TCP")])), None, "headless");
        let mut slices = BTreeMap::new();
        let a = slice(
            "shop",
            "api-a",
            "api",
            &[("http", 8080), ("admin", 9090)],
            &[("10.0.0.2", Some(true)), ("10.0.0.9", Some(false))],
        );
        let b = slice("shop", "api-b", "api", &[("http", 8081)], &[("10.0.0.3", None)]);
        slices.insert("shop/api-a".to_string(), slice_entry(&a).unwrap());
        slices.insert("shop/api-b".to_string(), slice_entry(&b).unwrap());
        let other = slice("pay", "api-c", "api", &[("http", 1)], &[("10.0.0.4", None)]);
        slices.insert("pay/api-c".to_string(), slice_entry(&other).unwrap());
        let mut dropped = 0;
        let vips = join_services(&services, &slices, false, &mut dropped);
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        assert_eq!(
            vips,
            [ServiceVip {
                name: "shop/api".into(),
                addresses: vec![ip("10.96.0.10")],
                ports: vec![
                    ServicePort {
                        proto: SvcProto::Tcp,
                        port: 80,
                        backends: vec![(ip("10.0.0.2"), 8080), (ip("10.0.0.3"), 8081)],
                        incomplete: false,
                    },
                    ServicePort {
                        proto: SvcProto::Tcp,
                        port: 81,
                        backends: vec![(ip("10.0.0.2"), 9090)],
                        incomplete: false,
                    },
                ],
            }]
        );
        // Slices dropped over the cap: no port is fully known, each fails closed.
        let vips = join_services(&services, &slices, true, &mut dropped);
        assert!(vips[0].ports.iter().all(|p| p.incomplete));
        assert_eq!(dropped, 0);
    }

    /// With no ready endpoint the proxy uses the terminating ones still serving; load-
    /// balancer and external IPs are virtual addresses too.
    #[test]
    fn serving_endpoints_stand_in_and_every_proxied_address_counts() {
        use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, ServiceStatus};
        use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions};
        let mut s = service("shop", "web", &["10.96.0.30"], &[("http", 80, "TCP")]);
        s.spec.as_mut().unwrap().external_ips = Some(vec!["192.0.2.30".into()]);
        s.status = Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(vec![LoadBalancerIngress {
                    ip: Some("198.51.100.30".into()),
                    ..Default::default()
                }]),
            }),
            ..Default::default()
        });
        let e = service_entry(&s).unwrap();
        assert_eq!(e.vips.len(), 3, "{:?}", e.vips);
        let mut sl = slice("shop", "web-a", "web", &[("http", 8080)], &[("10.0.0.7", Some(false))]);
        sl.endpoints.push(Endpoint {
            addresses: vec!["10.0.0.8".into()],
            conditions: Some(EndpointConditions {
                ready: Some(false),
                serving: Some(true),
                terminating: Some(true),
            }),
            ..Default::default()
        });
        let services = BTreeMap::from([("shop/web".to_string(), e)]);
        let slices = BTreeMap::from([("shop/web-a".to_string(), slice_entry(&sl).unwrap())]);
        let vips = join_services(&services, &slices, false, &mut 0);
        let ip: IpAddr = "10.0.0.8".parse().unwrap();
        assert_eq!(vips[0].ports[0].backends, [(ip, 8080)], "the serving one, not the unready one");
    }
}
