//! Running code inside a network namespace given by path (`/run/netns/NAME`,
//! `/proc/PID/ns/net`, `/var/run/docker/netns/ID`).
//!
//! `setns` only moves the calling thread, so every entry happens on a fresh std thread that
//! exits afterwards: tokio workers and the caller never change namespace. A netlink socket
//! opened on that thread stays bound to the namespace and is usable from any thread.

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::sched::{setns, CloneFlags};

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("netns {path}: cannot open: {source}")]
    Open { path: PathBuf, source: std::io::Error },
    #[error("netns {path}: cannot enter: {source}")]
    Enter { path: PathBuf, source: nix::Error },
    #[error("netns {path}: worker thread failed: {what}")]
    Thread { path: PathBuf, what: String },
}

thread_local! {
    /// The namespace this thread entered with [`run_in`], if it is one of its threads.
    static ENTERED: std::cell::RefCell<Option<PathBuf>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` on a new thread inside the namespace at `path` and returns its result. Called
/// from within `run_in` for the same path (opening several sockets in one entry), `f` runs
/// right there: one thread and one `setns` for all of them.
pub fn run_in<T, F>(path: &Path, f: F) -> Result<T, NetnsError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    if ENTERED.with(|e| e.borrow().as_deref() == Some(path)) {
        return Ok(f());
    }
    let file = File::open(path).map_err(|source| NetnsError::Open { path: path.to_path_buf(), source })?;
    let p = path.to_path_buf();
    let handle = std::thread::Builder::new()
        .name("fw-netns".into())
        .spawn(move || -> Result<T, NetnsError> {
            // Already there (the daemon's own namespace, `--self`): no setns, which would
            // need CAP_SYS_ADMIN that a sidecar does not have.
            if !same_namespace(&file) {
                setns(&file, CloneFlags::CLONE_NEWNET)
                    .map_err(|source| NetnsError::Enter { path: p.clone(), source })?;
            }
            ENTERED.with(|e| *e.borrow_mut() = Some(p));
            Ok(f())
        })
        .map_err(|e| NetnsError::Thread { path: path.to_path_buf(), what: e.to_string() })?;
    handle.join().map_err(|_| NetnsError::Thread { path: path.to_path_buf(), what: "panicked".into() })?
}

/// Opens a netlink socket of `protocol` inside the namespace at `path`.
pub fn netlink_socket(path: &Path, protocol: isize) -> Result<netlink_sys::Socket, NetnsError> {
    let p = path.to_path_buf();
    run_in(path, move || netlink_sys::Socket::new(protocol))?
        .map_err(|e| NetnsError::Thread { path: p, what: format!("netlink socket: {e}") })
}

/// A network namespace's identity: the device and inode of its nsfs file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NsId {
    pub dev: u64,
    pub ino: u64,
}

impl NsId {
    pub fn of(path: &Path) -> std::io::Result<NsId> {
        std::fs::metadata(path).map(|m| NsId::from(&m))
    }
}

impl From<&std::fs::Metadata> for NsId {
    fn from(m: &std::fs::Metadata) -> NsId {
        use std::os::unix::fs::MetadataExt;
        NsId { dev: m.dev(), ino: m.ino() }
    }
}

impl std::fmt::Display for NsId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "net:[{}]", self.ino)
    }
}

/// Whether `ns` (an open namespace file) is the calling thread's network namespace.
fn same_namespace(ns: &File) -> bool {
    match (ns.metadata(), NsId::of(Path::new("/proc/thread-self/ns/net"))) {
        (Ok(m), Ok(here)) => NsId::from(&m) == here,
        _ => false,
    }
}
