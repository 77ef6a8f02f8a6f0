//! The daemon's async runtime: a fixed set of threads whatever the number of containers
//! and consoles. Per-namespace flow collection and control connections are tasks on it;
//! blocking netlink exchanges (dumps, lookups, opening sockets inside a namespace) run on
//! its small blocking pool, whose idle threads exit after a moment.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::runtime::{Builder, Handle, Runtime};

/// Worker threads: the machine fw is built for has two cores; more workers buy nothing.
const WORKERS: usize = 2;
/// Blocking-pool threads at most (counter dumps are one round at a time; audit reads and
/// Docker requests are short).
const BLOCKING: usize = 4;

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// The runtime this is called from, else the process's runtime, built on first use (after
/// capabilities were dropped: its threads inherit the reduced sets).
pub fn handle() -> std::io::Result<Handle> {
    // Inside the daemon's loop (or any runtime): that one, not a second set of threads.
    if let Ok(h) = Handle::try_current() {
        return Ok(h);
    }
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt.handle().clone());
    }
    let rt = Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .max_blocking_threads(BLOCKING)
        .thread_keep_alive(Duration::from_secs(2))
        .thread_name("fw-rt")
        .enable_all()
        .build()?;
    // A racing first call built one too: keep whichever won, drop the other.
    let rt = match RUNTIME.set(rt) {
        Ok(()) => RUNTIME.get(),
        Err(extra) => {
            extra.shutdown_background();
            RUNTIME.get()
        }
    };
    rt.map(|r| r.handle().clone()).ok_or_else(|| std::io::Error::other("no runtime"))
}
