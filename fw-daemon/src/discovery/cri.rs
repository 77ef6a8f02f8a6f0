//! Pods from the node's CRI runtime (containerd by default, CRI-O by its socket), for the
//! Kubernetes node agent.
//!
//! The runtime is polled: `ListPodSandbox` (READY only) every `poll` (containerd 1.6 has no
//! CRI event stream), and each sandbox not seen before is described once with a verbose
//! `PodSandboxStatus`: its metadata (name, namespace, uid), labels, network mode and the
//! runtime's `info` JSON, which holds the sandbox's network namespace path (the bind mount
//! under `/var/run/netns`, preferred: it outlives the pause process) and pid. A sandbox's
//! labels cannot change (a relabelled pod is a new sandbox), so nothing is asked twice.
//! Identity is `namespace/name`; addresses are read from inside the namespace, as for Docker.
//! Pods on the node's network (hostNetwork) are not programmed (their namespace is the
//! host's) and are reported. What the runtime says is hostile input: bounded, and a sandbox
//! without usable metadata is still programmed, as an unnamed pod in the default zone.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ListPodSandboxRequest, NamespaceMode, PodSandboxFilter, PodSandboxState, PodSandboxStateValue,
    PodSandboxStatus, PodSandboxStatusRequest, VersionRequest,
};
use serde::Deserialize;
use tonic::transport::Channel;
use tracing::{debug, info, warn};

use crate::inventory::{Container, KubeMeta};

/// The CRI messages, for callers that build them (tests, the fuzz target).
pub use k8s_cri::v1 as api;

/// containerd's socket, the default.
pub const DEFAULT_SOCKET: &str = "/run/containerd/containerd.sock";
/// CRI-O's socket.
pub const CRIO_SOCKET: &str = "/var/run/crio/crio.sock";
/// Between two lists of the runtime's sandboxes, by default.
pub const DEFAULT_POLL: Duration = Duration::from_millis(250);

/// Sandboxes followed at most; the rest are reported (a node runs a few hundred pods).
const MAX_PODS: usize = 4096;
/// Labels kept per pod, and bytes per key and value (Kubernetes allows 317 and 63).
const MAX_LABELS: usize = 256;
const MAX_LABEL_BYTES: usize = 1024;
/// The pod name and namespace together (Kubernetes allows 253 + 63).
const MAX_NAME_BYTES: usize = 512;
/// A message from the runtime bigger than this is refused (200 pods list in ~100 KB).
const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// The prefix of the labels the kubelet adds to every sandbox (pod name, namespace, uid):
/// identity, not the pod's own labels.
const KUBELET_LABELS: &str = "io.kubernetes.pod.";

/// What the source reports to the daemon.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// Every READY sandbox the runtime knows, as of now: the pods to program and the ones
    /// that cannot be.
    Snapshot { pods: Vec<Container>, skipped: Vec<Skipped> },
    /// The runtime is unreachable; the last snapshot stays in force.
    Unavailable(String),
}

/// A pod that is not programmed, and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Skipped {
    pub pod: String,
    pub why: SkipReason,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum SkipReason {
    /// `hostNetwork: true`: its namespace is the node's, which fw never programs.
    HostNetwork,
    /// Neither a namespace path nor a live pid in the runtime's answer.
    NoNamespace,
    /// More sandboxes than fw follows.
    TooMany,
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SkipReason::HostNetwork => {
                "on the node's network (hostNetwork): its namespace is the host's, which fw does not program"
            }
            SkipReason::NoNamespace => "the runtime gives no network namespace for it",
            SkipReason::TooMany => "over the limit of pods one node agent follows",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("CRI runtime on {socket}: {source}")]
    Connect {
        socket: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("CRI runtime on {socket}: {call}: {}", .status.message())]
    Call { socket: String, call: &'static str, status: tonic::Status },
}

/// What fw takes from a sandbox: who it is and where its namespace is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    /// `namespace/name`.
    pub name: String,
    pub namespace: Option<String>,
    pub labels: Vec<(String, String)>,
    pub netns: PathBuf,
}

/// The part of the runtime's verbose `info` JSON fw reads (containerd's and CRI-O's both
/// carry the OCI runtime spec and the sandbox's pid).
#[derive(Debug, Default, Deserialize)]
struct VerboseInfo {
    #[serde(default)]
    pid: i64,
    #[serde(rename = "runtimeSpec", default)]
    runtime_spec: Option<Spec>,
}

#[derive(Debug, Default, Deserialize)]
struct Spec {
    #[serde(default)]
    linux: Option<SpecLinux>,
}

#[derive(Debug, Default, Deserialize)]
struct SpecLinux {
    #[serde(default)]
    namespaces: Vec<SpecNamespace>,
}

#[derive(Debug, Deserialize)]
struct SpecNamespace {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    path: Option<String>,
}

/// Where a sandbox's network namespace is, from the verbose `info`: the spec's bind-mounted
/// path when it names one, else the pause process's.
pub fn netns_of(info: &HashMap<String, String>) -> Option<PathBuf> {
    let v: VerboseInfo = serde_json::from_str(info.get("info")?).ok()?;
    let spec_path = v
        .runtime_spec
        .and_then(|s| s.linux)
        .into_iter()
        .flat_map(|l| l.namespaces)
        .find(|n| n.kind == "network")
        .and_then(|n| n.path)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute() && p.as_os_str().len() < 4096);
    spec_path.or_else(|| {
        (v.pid > 0 && v.pid <= i64::from(i32::MAX)).then(|| format!("/proc/{}/ns/net", v.pid).into())
    })
}

/// Whether the sandbox shares the node's network namespace.
fn host_network(s: &PodSandboxStatus) -> bool {
    let mode = s.linux.as_ref().and_then(|l| l.namespaces.as_ref()).and_then(|n| n.options.as_ref());
    mode.is_some_and(|o| o.network == NamespaceMode::Node as i32)
}

/// Labels as fw keeps them: the pod's own (not the kubelet's identity labels), sorted,
/// bounded.
fn pod_labels(labels: &HashMap<String, String>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = labels
        .iter()
        .filter(|(k, v)| {
            !k.starts_with(KUBELET_LABELS) && k.len() <= MAX_LABEL_BYTES && v.len() <= MAX_LABEL_BYTES
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    out.sort();
    out.truncate(MAX_LABELS);
    out
}

/// The pod a verbose status describes, or why it is not programmed. Pure: the runtime's
/// answer in, a decision out.
pub fn describe(id: &str, status: &PodSandboxStatus, info: &HashMap<String, String>) -> Result<Pod, Skipped> {
    let meta = status.metadata.as_ref().filter(|m| {
        !m.name.is_empty() && !m.namespace.is_empty() && m.name.len() + m.namespace.len() < MAX_NAME_BYTES
    });
    let name = match meta {
        Some(m) => format!("{}/{}", m.namespace, m.name),
        // No usable identity: still programmed (default zone), under the sandbox's id.
        None => {
            format!("cri:{}", id.chars().filter(char::is_ascii_alphanumeric).take(12).collect::<String>())
        }
    };
    if host_network(status) {
        return Err(Skipped { pod: name, why: SkipReason::HostNetwork });
    }
    let netns = netns_of(info).ok_or_else(|| Skipped { pod: name.clone(), why: SkipReason::NoNamespace })?;
    Ok(Pod {
        name,
        namespace: meta.map(|m| m.namespace.clone()),
        labels: if meta.is_some() { pod_labels(&status.labels) } else { Vec::new() },
        netns,
    })
}

/// The inventory entry of a pod whose addresses were read from inside its namespace.
fn container_of(p: Pod, addresses: Vec<std::net::IpAddr>) -> Container {
    Container {
        name: p.name,
        netns: Some(p.netns),
        image: String::new(),
        labels: p.labels,
        addresses,
        link: None,
        kube: p.namespace.map(|namespace| KubeMeta { namespace, namespace_labels: Vec::new() }),
    }
}

/// Where updates go; `false` once nobody listens (the daemon is stopping).
pub type Sink = Box<dyn Fn(Update) -> bool + Send + Sync>;

async fn connect(socket: &str) -> Result<RuntimeServiceClient<Channel>, CriError> {
    let path = PathBuf::from(socket);
    let err = |source| CriError::Connect { socket: socket.to_string(), source };
    // The URI is required by tonic and never used: the connector dials the Unix socket.
    let channel = tonic::transport::Endpoint::from_static("http://cri.invalid")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                let s = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
            }
        }))
        .await
        .map_err(err)?;
    Ok(RuntimeServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES))
}

fn call<'a>(socket: &'a str, call: &'static str) -> impl Fn(tonic::Status) -> CriError + 'a {
    move |status| CriError::Call { socket: socket.to_string(), call, status }
}

/// What is known of one sandbox: the pod (with its addresses) or why it is skipped.
type Known = Result<Container, Skipped>;

fn snapshot(known: &BTreeMap<String, Known>, over: &[String]) -> Update {
    let mut pods: Vec<Container> = known.values().filter_map(|k| k.as_ref().ok().cloned()).collect();
    pods.sort_by(|a, b| a.name.cmp(&b.name));
    let mut skipped: Vec<Skipped> = known.values().filter_map(|k| k.as_ref().err().cloned()).collect();
    skipped.extend(over.iter().map(|id| Skipped { pod: format!("cri:{id}"), why: SkipReason::TooMany }));
    skipped.sort();
    Update::Snapshot { pods, skipped }
}

/// One sandbox, described and its addresses read; `None` when it went away meanwhile (the
/// next list settles it).
async fn inspect(
    client: &mut RuntimeServiceClient<Channel>,
    socket: &str,
    id: &str,
) -> Result<Option<Known>, CriError> {
    let req = PodSandboxStatusRequest { pod_sandbox_id: id.to_string(), verbose: true };
    let resp = match client.pod_sandbox_status(req).await {
        Ok(r) => r.into_inner(),
        Err(s) if s.code() == tonic::Code::NotFound => return Ok(None),
        Err(s) => return Err(call(socket, "PodSandboxStatus")(s)),
    };
    let Some(status) = resp.status else { return Ok(None) };
    if status.state != PodSandboxState::SandboxReady as i32 {
        return Ok(None);
    }
    let pod = match describe(id, &status, &resp.info) {
        Ok(p) => p,
        Err(skip) => return Ok(Some(Err(skip))),
    };
    let netns = pod.netns.clone();
    match tokio::task::spawn_blocking(move || super::docker::wire_identity(&netns)).await {
        Ok(Ok(wire)) => Ok(Some(Ok(container_of(pod, wire.addresses)))),
        Ok(Err(e)) => {
            debug!(pod = %pod.name, error = %e, "addresses unreadable (sandbox stopping?)");
            Ok(None)
        }
        Err(_) => Ok(None),
    }
}

/// Follows the runtime until the receiver goes away; returns the error that ended it.
async fn follow(socket: &str, poll: Duration, tx: &Sink) -> Result<(), CriError> {
    let mut client = connect(socket).await?;
    let v = client
        .version(VersionRequest { version: "v1".into() })
        .await
        .map_err(call(socket, "Version"))?
        .into_inner();
    info!(runtime = %v.runtime_name, version = %v.runtime_version, api = %v.runtime_api_version, "cri: connected");
    let ready = ListPodSandboxRequest {
        filter: Some(PodSandboxFilter {
            state: Some(PodSandboxStateValue { state: PodSandboxState::SandboxReady as i32 }),
            ..Default::default()
        }),
    };
    let mut known: BTreeMap<String, Known> = BTreeMap::new();
    let mut first = true;
    let mut last_over = 0;
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut items = client
            .list_pod_sandbox(ready.clone())
            .await
            .map_err(call(socket, "ListPodSandbox"))?
            .into_inner()
            .items;
        items.sort_by(|a, b| a.id.cmp(&b.id));
        let over: Vec<String> = items.iter().skip(MAX_PODS).map(|p| p.id.clone()).collect();
        items.truncate(MAX_PODS);
        let mut changed = first || over.len() != last_over;
        if over.len() != last_over && !over.is_empty() {
            warn!(pods = items.len() + over.len(), followed = MAX_PODS, "cri: too many sandboxes");
        }
        last_over = over.len();
        let before = known.len();
        known.retain(|id, _| items.binary_search_by(|p| p.id.as_str().cmp(id)).is_ok());
        changed |= known.len() != before;
        for item in &items {
            if known.contains_key(&item.id) {
                continue;
            }
            if let Some(k) = inspect(&mut client, socket, &item.id).await? {
                match &k {
                    Ok(c) => debug!(pod = %c.name, netns = ?c.netns, "cri: sandbox ready"),
                    Err(s) => warn!(pod = %s.pod, why = %s.why, "cri: sandbox not programmed"),
                }
                known.insert(item.id.clone(), k);
                changed = true;
            }
        }
        if changed {
            first = false;
            if !tx(snapshot(&known, &over)) {
                return Ok(());
            }
        }
    }
}

/// Runs the CRI source as a task on the daemon's runtime, until the sink closes.
pub fn spawn(
    rt: &tokio::runtime::Handle,
    socket: String,
    poll: Duration,
    tx: Sink,
) -> tokio::task::JoinHandle<()> {
    rt.spawn(async move {
        let (socket, tx) = (&socket, &tx);
        super::follow_with_backoff(
            "cri source",
            || follow(socket, poll, tx),
            |why| tx(Update::Unavailable(why)),
        )
        .await
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::{LinuxPodSandboxStatus, Namespace, NamespaceOption, PodSandboxMetadata};

    fn status(ns: &str, name: &str, network: NamespaceMode, labels: &[(&str, &str)]) -> PodSandboxStatus {
        PodSandboxStatus {
            id: "abc".into(),
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: "u1".into(),
                namespace: ns.into(),
                attempt: 0,
            }),
            linux: Some(LinuxPodSandboxStatus {
                namespaces: Some(Namespace {
                    options: Some(NamespaceOption { network: network as i32, ..Default::default() }),
                }),
            }),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        }
    }

    fn info(json: &str) -> HashMap<String, String> {
        HashMap::from([("info".to_string(), json.to_string())])
    }

    /// containerd 1.6's verbose info (trimmed): the spec's network namespace is the CNI
    /// bind mount, preferred over the pid.
    const CONTAINERD_INFO: &str = r#"{"pid":4242,"processStatus":"running","netNamespaceClosed":false,
        "runtimeSpec":{"ociVersion":"1.0.2","linux":{"namespaces":[{"type":"pid"},{"type":"ipc"},
        {"type":"uts"},{"type":"mount"},{"type":"network","path":"/var/run/netns/cni-1234"}]}}}"#;

    #[test]
    fn a_pod_is_namespace_slash_name_with_its_own_labels_and_its_bind_mounted_namespace() {
        let s = status(
            "pay",
            "api-7d9",
            NamespaceMode::Pod,
            &[("app", "api"), ("io.kubernetes.pod.namespace", "pay"), ("io.kubernetes.pod.uid", "u1")],
        );
        let p = describe("abc", &s, &info(CONTAINERD_INFO)).expect("programmed");
        assert_eq!(p.name, "pay/api-7d9");
        assert_eq!(p.namespace.as_deref(), Some("pay"));
        assert_eq!(
            p.labels,
            vec![("app".to_string(), "api".to_string())],
            "kubelet's identity labels are not the pod's"
        );
        assert_eq!(p.netns, PathBuf::from("/var/run/netns/cni-1234"));
        let c = container_of(p, vec![]);
        assert_eq!(c.kube.map(|k| k.namespace).as_deref(), Some("pay"));
    }

    #[test]
    fn without_a_namespace_path_the_pause_process_is_used_and_without_either_the_pod_is_reported() {
        let s = status("a", "b", NamespaceMode::Pod, &[]);
        let p = describe(
            "abc",
            &s,
            &info(r#"{"pid":77,"runtimeSpec":{"linux":{"namespaces":[{"type":"network"}]}}}"#),
        );
        assert_eq!(p.map(|p| p.netns), Ok(PathBuf::from("/proc/77/ns/net")));
        for bad in [
            r#"{"pid":0}"#,
            r#"{"pid":-5}"#,
            r#"{"pid":99999999999}"#,
            "not json",
            r#"{"runtimeSpec":{"linux":{"namespaces":[{"type":"network","path":"relative/x"}]}}}"#,
        ] {
            let r = describe("abc", &s, &info(bad));
            assert_eq!(r.map_err(|e| e.why), Err(SkipReason::NoNamespace), "{bad}");
        }
        assert_eq!(describe("abc", &s, &HashMap::new()).map_err(|e| e.why), Err(SkipReason::NoNamespace));
    }

    #[test]
    fn a_host_network_pod_is_reported_not_programmed() {
        let s = status("kube-system", "proxy", NamespaceMode::Node, &[]);
        let r = describe("abc", &s, &info(CONTAINERD_INFO));
        assert_eq!(r, Err(Skipped { pod: "kube-system/proxy".into(), why: SkipReason::HostNetwork }));
    }

    /// A sandbox whose metadata is missing or absurd still gets a table (fail closed): an
    /// unnamed pod, no labels, no Kubernetes namespace, so only the default zone takes it.
    #[test]
    fn a_sandbox_without_usable_metadata_is_programmed_unnamed() {
        let mut s = status("", "x", NamespaceMode::Pod, &[("app", "api")]);
        let p = describe("0123456789abcdef/../x", &s, &info(CONTAINERD_INFO)).expect("programmed");
        assert_eq!((p.name.as_str(), p.namespace, p.labels.len()), ("cri:0123456789ab", None, 0));
        s.metadata = None;
        assert!(describe("abc", &s, &info(CONTAINERD_INFO)).is_ok());
        let long = "n".repeat(600);
        let s = status(&long, "x", NamespaceMode::Pod, &[]);
        assert_eq!(describe("abc", &s, &info(CONTAINERD_INFO)).map(|p| p.name).as_deref(), Ok("cri:abc"));
    }

    #[test]
    fn labels_are_bounded() {
        let many: Vec<(String, String)> = (0..1000).map(|i| (format!("k{i:04}"), "v".to_string())).collect();
        let mut map: HashMap<String, String> = many.into_iter().collect();
        map.insert("huge".into(), "v".repeat(MAX_LABEL_BYTES + 1));
        let kept = pod_labels(&map);
        assert_eq!(kept.len(), MAX_LABELS);
        assert!(kept.iter().all(|(k, _)| k != "huge"));
        assert!(kept.windows(2).all(|w| w[0] <= w[1]), "sorted");
    }

    #[test]
    fn a_snapshot_lists_pods_by_name_and_the_skipped_with_the_overflow() {
        let pod = |n: &str| Container { name: n.into(), ..Container::default() };
        let known = BTreeMap::from([
            ("2".to_string(), Ok(pod("b/y"))),
            ("1".to_string(), Ok(pod("a/x"))),
            ("3".to_string(), Err(Skipped { pod: "k/p".into(), why: SkipReason::HostNetwork })),
        ]);
        let Update::Snapshot { pods, skipped } = snapshot(&known, &["9".into()]) else {
            panic!("a snapshot")
        };
        assert_eq!(pods.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["a/x", "b/y"]);
        assert_eq!(skipped.len(), 2);
        assert!(skipped.iter().any(|s| s.why == SkipReason::TooMany && s.pod == "cri:9"));
    }
}
