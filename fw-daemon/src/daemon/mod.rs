//! `fw-daemon run`: keeps every container's firewall equal to the rule files.
//!
//! One event loop (on the runtime's main thread) owns the daemon's state ([`core::Core`]:
//! sources, enforcer, blocks, what readers see) and reacts to events: rule or inventory
//! files changed (inotify, plus a periodic re-read in case an event was missed), Docker
//! snapshots, ruleset change notifications from programmed namespaces, control-socket
//! commands, inspection violations, SIGHUP (reload both), SIGTERM / SIGINT (stop, leaving
//! enforcement in place: the tables are kernel state). Sources are tasks on the same
//! runtime; timers, not polling threads, drive the periodic drift check and resync.
//!
//! A reload is all or nothing: the new files are validated in full and compiled for every
//! container before any namespace changes; invalid files change nothing, their errors are
//! logged (path:line:col) and kept in the state directory, and the last good policy stays.

pub mod block_service;
pub mod core;
pub mod enforcer;
pub mod sources;
pub mod status;
pub mod trail;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tracing::{info, warn};

use crate::compile::CompileOptions;
use crate::discovery::docker;
use crate::rules::ReadLimits;
use crate::state::StateError;

pub use self::core::{Core, Deps};
pub use sources::MAX_DIAGNOSTICS;

#[derive(Debug, Clone)]
pub struct Config {
    pub rules: PathBuf,
    pub inventory: Option<PathBuf>,
    /// Docker API socket to discover containers from, if any.
    pub docker: Option<String>,
    /// The CRI runtime's socket and poll interval (Kubernetes pods), if any.
    pub cri: Option<(String, std::time::Duration)>,
    /// The Kubernetes API (namespace labels, remote pods), if followed.
    pub kube: Option<crate::discovery::kube::KubeSettings>,
    /// Deny: the host guard closes the start-up window (with Docker).
    pub unknown_containers: crate::config::Unknown,
    pub state_dir: PathBuf,
    pub opts: CompileOptions,
    /// How often every namespace is checked for drift.
    pub tick: Duration,
    /// How often files are re-read and the fleet re-reconciled without an event.
    pub resync: Duration,
    pub socket: Option<PathBuf>,
    pub socket_group: String,
    pub roles: crate::control::Roles,
    pub audit_log: Option<PathBuf>,
    pub audit_rotation: crate::control::audit::Rotation,
    pub max_flows: usize,
    /// The floors, tamper escalation, revocation.
    pub containment: crate::containment::ContainmentConfig,
    pub read_limits: ReadLimits,
    pub max_inventory_bytes: u64,
    /// `--self`: the only container is the daemon's own namespace (a pod's sidecar); only
    /// CAP_NET_ADMIN is needed, and there is no floor.
    pub own_namespace: bool,
    /// With `own_namespace`: the downward-API directory, re-read at each resync so a
    /// relabelled pod changes zone without a restart.
    pub pod_info: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("no valid policy: {0} has errors and there is no last good copy in the state directory")]
    NoPolicy(PathBuf),
    #[error("{0}: not a directory (the rules directory must exist to be watched)")]
    RulesDir(PathBuf),
    #[error(transparent)]
    Watch(#[from] crate::watch::WatchError),
    #[error(
        "fw-daemon run needs root: it programs nftables in every container's network namespace \
         (CAP_NET_ADMIN) and enters those namespaces (CAP_SYS_ADMIN); missing: {0}"
    )]
    NeedsRoot(String),
    #[error(transparent)]
    Privileges(#[from] crate::privileges::PrivError),
    #[error("starting the runtime, a thread or signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    #[error(transparent)]
    Control(#[from] crate::control::server::ServerError),
    #[error(transparent)]
    Audit(#[from] crate::control::audit::AuditError),
}

/// What the event loop reacts to.
#[derive(Debug)]
pub enum Event {
    Rules,
    Inventory,
    Docker(docker::Update),
    Cri(crate::discovery::cri::Update),
    Kube(crate::discovery::kube::Update),
    /// A programmed container's namespace announced a ruleset change (maybe ours): check it.
    Drift(String),
    /// SIGHUP: reload rules and inventory.
    Reload,
    /// A state-changing request from the control socket.
    Control(crate::control::Command),
    /// The inspection engine found a flow breaking its policy.
    Inspect(crate::flows::inspection::Violation),
    Stop,
}

/// Something people must hear about: raised as an alert (kept, pushed, logged).
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub kind: fw_proto::control::AlertKind,
    pub container: Option<String>,
    pub rule: Option<fw_proto::RuleRef>,
    pub flow: Option<u64>,
    pub message: String,
}

impl Notice {
    pub fn new(kind: fw_proto::control::AlertKind, message: impl Into<String>) -> Notice {
        Notice { kind, container: None, rule: None, flow: None, message: message.into() }
    }

    pub fn about(mut self, container: &str) -> Notice {
        self.container = Some(container.to_string());
        self
    }

    pub fn raise(self, alerts: &crate::alerts::Alerts) -> fw_proto::control::Alert {
        alerts.raise(self.kind, self.container.as_deref(), self.rule, self.flow, self.message)
    }
}

/// Editors write a file in several steps: wait briefly and take every pending event.
async fn settle(first: Event, rx: &mut UnboundedReceiver<Event>) -> Vec<Event> {
    let mut events = vec![first];
    // Docker snapshots, notifications and commands need no settling; file edits do.
    if matches!(events[0], Event::Rules | Event::Inventory | Event::Reload) {
        let until = tokio::time::Instant::now() + Duration::from_millis(150);
        while let Ok(Some(e)) = tokio::time::timeout_at(until, rx.recv()).await {
            events.push(e);
        }
    }
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    events
}

async fn signals(tx: UnboundedSender<Event>) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        loop {
            let ev = tokio::select! {
                _ = hup.recv() => Event::Reload,
                _ = int.recv() => Event::Stop,
                _ = term.recv() => Event::Stop,
            };
            if tx.send(ev).is_err() {
                return;
            }
        }
    });
    Ok(())
}

pub fn run(cfg: Config) -> Result<(), DaemonError> {
    // Said plainly up front, instead of an EPERM per namespace or from PR_CAPBSET_DROP.
    crate::privileges::require_enforcing(cfg.own_namespace).map_err(DaemonError::NeedsRoot)?;
    // The socket is handed to its group with chown, which needs CAP_CHOWN: bind it first.
    let listener = match &cfg.socket {
        Some(path) => Some((crate::control::server::bind(path, Some(&cfg.socket_group))?, path.clone())),
        None => None,
    };
    // Capabilities are per thread: drop them before any thread exists, so every thread
    // (the runtime's, and every per-namespace socket thread spawned later) inherits the
    // reduced sets.
    crate::privileges::drop_unneeded()?;
    if !cfg.rules.is_dir() {
        return Err(DaemonError::RulesDir(cfg.rules.clone()));
    }
    // The runtime's few threads carry the sources, the socket and the collectors; the state
    // is owned by the loop on this thread. The thread count does not grow with containers or
    // subscribers. Sources blocked in reads (a Docker request) end with the
    // process.
    let rt = crate::runtime::handle().map_err(DaemonError::Signals)?;
    let deps = if cfg.own_namespace { Deps::own_namespace() } else { Deps::real() };
    rt.block_on(event_loop(cfg, listener, deps))
}

async fn event_loop(
    cfg: Config,
    listener: Option<(std::os::unix::net::UnixListener, PathBuf)>,
    deps: Deps,
) -> Result<(), DaemonError> {
    let rt = tokio::runtime::Handle::current();
    let (tx, mut rx) = unbounded_channel();
    let wtx = tx.clone();
    let _watcher = crate::watch::watch(&cfg.rules, cfg.inventory.as_deref(), move |c| {
        let _ = wtx.send(match c {
            crate::watch::Change::Rules => Event::Rules,
            crate::watch::Change::Inventory => Event::Inventory,
        });
    })?;
    signals(tx.clone()).await.map_err(DaemonError::Signals)?;
    if let Some(socket) = cfg.docker.clone() {
        let dtx = tx.clone();
        docker::spawn(&rt, socket, Box::new(move |u| dtx.send(Event::Docker(u)).is_ok()));
    }
    if let Some((socket, poll)) = cfg.cri.clone() {
        let ctx = tx.clone();
        crate::discovery::cri::spawn(&rt, socket, poll, Box::new(move |u| ctx.send(Event::Cri(u)).is_ok()));
    }
    if let Some(k) = cfg.kube.clone() {
        let ktx = tx.clone();
        crate::discovery::kube::spawn(&rt, k, Box::new(move |u| ktx.send(Event::Kube(u)).is_ok()));
    }
    // Commands go straight onto the loop's channel: no thread in between.
    let cmd_tx = tx.clone();
    let group = cfg.socket_group.clone();
    let (tick, resync) = (cfg.tick, cfg.resync);
    let (mut d, initial) = Core::start(cfg, deps)?;
    let ctx = tx.clone();
    let mut watcher = crate::drift_watch::Watcher::new(
        rt.clone(),
        Arc::new(move |name| drop(ctx.send(Event::Drift(name)))),
    );
    d.set_watch(Box::new(move |cmd| watcher.apply(cmd)));
    let vtx = tx.clone();
    d.flows().set_inspection(crate::flows::collector::InspectConfig {
        queue: d.cfg.opts.inspect_queue,
        violations: Arc::new(move |v| vtx.send(Event::Inspect(v)).is_ok()),
    });
    // Floors, change notifications and flow collectors (inspection included) follow.
    d.converged(&initial);
    if let Some((listener, path)) = listener {
        let server = crate::control::server::Server::new(
            d.cfg.roles.clone(),
            crate::control::Published { status: d.status_info(), blocks: d.block_infos() },
            d.flows().clone(),
            d.trail.log().cloned(),
            Box::new(move |c| cmd_tx.send(Event::Control(c)).is_ok()),
            d.alerts().clone(),
        );
        crate::control::server::spawn(listener, server.clone()).map_err(DaemonError::Signals)?;
        if crate::control::auth::system_gid(&group).is_some() {
            info!(socket = %path.display(), group = %group, "control socket ready");
        } else {
            warn!(
                socket = %path.display(),
                "control socket ready for root only (mode 0600): group {group} does not exist; \
                 create it (groupadd --system {group}) and restart to let its members connect"
            );
        }
        let roles = &d.cfg.roles;
        for g in [&roles.viewer_group, &roles.operator_group].into_iter().chain(roles.admin_group.as_ref()) {
            if *g != group && crate::control::auth::system_gid(g).is_none() {
                warn!(
                    "role group {g} does not exist: nobody but root gets that role (groupadd --system {g})"
                );
            }
        }
        d.server = Some(server);
    }
    drop(tx);
    let start = tokio::time::Instant::now();
    let mut next_tick = start + tick;
    let mut next_resync = start + resync;
    loop {
        tokio::select! {
            ev = rx.recv() => {
                let Some(first) = ev else { return Ok(()) };
                let events = settle(first, &mut rx).await;
                if !d.handle(events) {
                    return Ok(());
                }
            }
            _ = tokio::time::sleep_until(next_tick) => {}
            _ = tokio::time::sleep_until(next_resync) => {}
        }
        let now = tokio::time::Instant::now();
        // The periodic check, in case a notification was lost (socket overrun).
        if now >= next_tick {
            d.tick();
            next_tick = now + tick;
        }
        if now >= next_resync {
            d.resync();
            next_resync = now + resync;
        }
    }
}
