//! Where containers come from: the static inventory file (see `inventory`), Docker, the
//! node's CRI runtime (Kubernetes pods), the Kubernetes API (namespace labels, remote pods), and the daemon's own namespace (`--self`).

pub mod cri;
pub mod docker;
pub mod kube;
pub mod own;
