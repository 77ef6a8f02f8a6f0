//! Ruleset change notifications from every programmed namespace: a socket per namespace
//! joined to NFNLGRP_NFTABLES hears every committed change there (ours included), so a
//! tampered table is checked at once instead of at the next tick. The checks themselves
//! stay in `reconcile` (generation id, rule compare); this only says "look now".
//!
//! Each socket is opened inside its namespace (on a short-lived thread, `crate::netns`)
//! and then waited on by a task on the daemon's runtime: no thread per namespace, and no
//! polling.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::io::unix::AsyncFd;
use tracing::{debug, warn};

const NETLINK_NETFILTER: isize = 12;
const NFNLGRP_NFTABLES: u32 = 7;

pub enum Cmd {
    Watch(String, PathBuf),
    Unwatch(String),
}

fn subscribe(netns: &std::path::Path) -> Result<netlink_sys::Socket, String> {
    let mut s = crate::netns::netlink_socket(netns, NETLINK_NETFILTER).map_err(|e| e.to_string())?;
    s.bind_auto().map_err(|e| format!("bind: {e}"))?;
    s.add_membership(NFNLGRP_NFTABLES).map_err(|e| format!("join NFNLGRP_NFTABLES: {e}"))?;
    s.set_non_blocking(true).map_err(|e| format!("non-blocking: {e}"))?;
    Ok(s)
}

/// Says which container's namespace saw a change.
pub type Changed = Arc<dyn Fn(String) + Send + Sync>;

/// The watch tasks, by container.
pub struct Watcher {
    rt: tokio::runtime::Handle,
    changed: Changed,
    tasks: HashMap<String, (PathBuf, tokio::task::JoinHandle<()>)>,
}

impl Watcher {
    pub fn new(rt: tokio::runtime::Handle, changed: Changed) -> Watcher {
        Watcher { rt, changed, tasks: HashMap::new() }
    }

    pub fn apply(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Watch(name, netns) => {
                if self.tasks.get(&name).is_some_and(|(p, _)| *p == netns) {
                    return;
                }
                self.stop(&name);
                let sock = match subscribe(&netns) {
                    Ok(s) => s,
                    Err(e) => {
                        return warn!(container = %name, error = %e, "no change notifications; periodic checks only")
                    }
                };
                let changed = self.changed.clone();
                let who = name.clone();
                // AsyncFd registers with the reactor of the runtime it is created in.
                let _enter = self.rt.enter();
                let fd = match crate::nft::async_socket(sock) {
                    Ok(fd) => fd,
                    Err(e) => {
                        return warn!(container = %name, error = %e, "change notifications: cannot register")
                    }
                };
                let task = self.rt.spawn(async move { watch(who, fd, changed).await });
                self.tasks.insert(name, (netns, task));
            }
            Cmd::Unwatch(name) => self.stop(&name),
        }
    }

    fn stop(&mut self, name: &str) {
        if let Some((_, t)) = self.tasks.remove(name) {
            t.abort();
        }
    }

    pub fn watched(&self) -> usize {
        self.tasks.len()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        for (_, (_, t)) in self.tasks.drain() {
            t.abort();
        }
    }
}

async fn watch(name: String, fd: AsyncFd<netlink_sys::Socket>, changed: Changed) {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let mut ready = match fd.readable().await {
            Ok(r) => r,
            Err(e) => return warn!(container = %name, error = %e, "change notifications stopped"),
        };
        // Drain: one look is enough however many changes were announced.
        let mut got = false;
        loop {
            match fd.get_ref().recv(&mut &mut buf[..], 0) {
                Ok(_) => got = true,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    ready.clear_ready();
                    break;
                }
                // ENOBUFS: notifications were lost, which is itself a reason to look.
                Err(_) => {
                    got = true;
                    break;
                }
            }
        }
        if got {
            debug!(container = %name, "ruleset change notified");
            changed(name.clone());
        }
    }
}
