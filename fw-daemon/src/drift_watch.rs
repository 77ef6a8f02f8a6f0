//! Ruleset change notifications from every programmed namespace: a socket per namespace
//! joined to NFNLGRP_NFTABLES hears every committed change there (ours included), so a
//! tampered table is checked at once instead of at the next tick. The checks themselves
//! stay in `reconcile` (generation id, rule compare); this only says "look now".

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender, TryRecvError};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
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

/// Starts the watcher thread; it reports the name of a container whose namespace saw a
/// ruleset change on `changed`, and takes watch / unwatch commands on the returned sender.
pub fn spawn(changed: Sender<String>) -> std::io::Result<Sender<Cmd>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new().name("drift-watch".into()).spawn(move || run(rx, changed))?;
    Ok(tx)
}

fn run(cmds: Receiver<Cmd>, changed: Sender<String>) {
    let mut socks: HashMap<String, netlink_sys::Socket> = HashMap::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        loop {
            match cmds.try_recv() {
                Ok(Cmd::Watch(name, netns)) => match subscribe(&netns) {
                    Ok(s) => {
                        socks.insert(name, s);
                    }
                    Err(e) => {
                        warn!(container = %name, error = %e, "no change notifications; periodic checks only")
                    }
                },
                Ok(Cmd::Unwatch(name)) => {
                    socks.remove(&name);
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        let names: Vec<&String> = socks.keys().collect();
        let fds: Vec<BorrowedFd<'_>> = names.iter().map(|n| socks[*n].as_fd()).collect();
        let mut pfds: Vec<PollFd<'_>> = fds.iter().map(|fd| PollFd::new(*fd, PollFlags::POLLIN)).collect();
        // Short timeout: new commands are picked up at least this often.
        if let Err(e) = poll(&mut pfds, PollTimeout::from(200u16)) {
            debug!(error = %e, "poll");
            continue;
        }
        let ready: Vec<String> = pfds
            .iter()
            .zip(&names)
            .filter(|(p, _)| p.revents().is_some_and(|r| !r.is_empty()))
            .map(|(_, n)| (*n).clone())
            .collect();
        drop(pfds);
        for name in ready {
            if let Some(s) = socks.get(&name) {
                // Drain: one look is enough however many changes were announced.
                while s.recv(&mut &mut buf[..], 0).is_ok() {}
                debug!(container = %name, fd = s.as_raw_fd(), "ruleset change notified");
            }
            if changed.send(name).is_err() {
                return;
            }
        }
    }
}
