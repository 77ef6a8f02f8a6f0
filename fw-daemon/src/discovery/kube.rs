//! What only the Kubernetes API server knows, for the node agent: the labels of each
//! Kubernetes namespace (`match.namespace_labels`), and the pods on *other* nodes, so a
//! local pod's traffic to a remote pod is judged by that pod's zone (its address joins the
//! zone's sets; it has no table here: `netns` is `None`).
//!
//! Both are followed with kube-rs's watcher (list, then watch from the resourceVersion,
//! relisting when the server expires it). Memory is bounded by what is kept: namespaces are
//! watched as metadata only; of a pod only its name, namespace, labels and addresses stay.
//! Pods of this node (`--node-name`, the downward API's `spec.nodeName`) are left out by a
//! field selector: the CRI runtime describes those. hostNetwork pods are left out too: their
//! address is their node's, which no pod zone may claim.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::runtime::watcher::{self, Event};
use kube::Api;
use tracing::{info, warn};

use crate::inventory::{Container, KubeMeta};

/// Namespaces and remote pods kept at most (a large cluster has tens of thousands of pods).
const MAX_NAMESPACES: usize = 10_000;
const MAX_PODS: usize = 100_000;
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
    Snapshot { namespaces: NamespaceLabels, remote: Vec<Container> },
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

fn snapshot(namespaces: &Mirror<Vec<(String, String)>>, pods: &Mirror<Container>) -> Update {
    Update::Snapshot { namespaces: namespaces.live.clone(), remote: pods.live.values().cloned().collect() }
}

/// Follows namespaces and remote pods until the receiver goes away.
async fn follow(s: &KubeSettings, tx: &Sink) -> Result<(), KubeError> {
    let client = client(s).await?;
    let ns_api: Api<Namespace> = Api::all(client.clone());
    let pod_api: Api<Pod> = Api::all(client);
    let pod_cfg = match &s.node {
        Some(node) => watcher::Config::default().fields(&format!("spec.nodeName!={node}")),
        None => watcher::Config::default(),
    };
    let mut ns_events = std::pin::pin!(watcher::metadata_watcher(ns_api, watcher::Config::default()));
    let mut pod_events = std::pin::pin!(watcher::watcher(pod_api, pod_cfg));
    let mut namespaces: Mirror<Vec<(String, String)>> = Mirror::new(MAX_NAMESPACES);
    let mut pods: Mirror<Container> = Mirror::new(MAX_PODS);
    let mut dirty = false;
    let mut reported_drops = 0;
    info!(api = s.api.as_deref().unwrap_or("in-cluster or kubeconfig"), node = ?s.node, "kubernetes API: following namespaces and remote pods");
    loop {
        let flush = tokio::time::sleep(if dirty { DEBOUNCE } else { Duration::from_secs(3600) });
        tokio::select! {
            ev = ns_events.next() => {
                let ev = ev.ok_or_else(|| KubeError::Config("namespace watch ended".into()))??;
                dirty |= namespaces.apply(ev, |m| m.metadata.name.clone(), |m| Some(labels(m.metadata.labels.as_ref())));
            }
            ev = pod_events.next() => {
                let ev = ev.ok_or_else(|| KubeError::Config("pod watch ended".into()))??;
                dirty |= pods.apply(
                    ev,
                    |p| Some(format!("{}/{}", p.metadata.namespace.as_deref()?, p.metadata.name.as_deref()?)),
                    remote_pod,
                );
            }
            _ = flush, if dirty => {
                dirty = false;
                let drops = namespaces.dropped + pods.dropped;
                if drops != reported_drops {
                    warn!(dropped = drops, "kubernetes API: more objects than fw keeps; the rest are ignored");
                    reported_drops = drops;
                }
                if !tx(snapshot(&namespaces, &pods)) {
                    return Ok(());
                }
            }
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
}
