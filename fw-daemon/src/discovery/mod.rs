//! Where containers come from: the static inventory file (see `inventory`), Docker, the
//! node's CRI runtime (Kubernetes pods), the Kubernetes API (namespace labels, remote pods), and the daemon's own namespace (`--self`).

pub mod cri;
pub mod docker;
pub mod kube;
pub mod own;

use std::time::Duration;

/// Follows a source again and again: `follow` returns `Ok` once nobody listens (the end),
/// or the error that broke it, which is logged and told to `unavailable` (`false`: nobody
/// listens) before the next try, after a backoff from 0.5 s doubling to 30 s. A connection
/// that lasted 30 s was healthy: the backoff starts over.
pub async fn follow_with_backoff<F, Fut, E>(what: &str, follow: F, unavailable: impl Fn(String) -> bool)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut backoff = Duration::from_millis(500);
    loop {
        let started = tokio::time::Instant::now();
        match follow().await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "{what} unavailable");
                if !unavailable(e.to_string()) {
                    return;
                }
            }
        }
        if started.elapsed() > Duration::from_secs(30) {
            backoff = Duration::from_millis(500);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}
