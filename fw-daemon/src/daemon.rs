//! `fw-daemon run`: keeps every container's firewall equal to the rule files.
//!
//! One thread owns the reconciler (and so every nftables socket) and reacts to events:
//! rule or inventory files changed (inotify, plus a periodic re-read in case an event was
//! missed), SIGHUP (reload both), SIGTERM / SIGINT (stop, leaving enforcement in place: the
//! tables are kernel state). Between events it checks every namespace for drift each tick
//! and re-reconciles periodically so policy expiries take effect.
//!
//! A reload is all or nothing: the new files are validated in full and compiled for every
//! container before any namespace changes; invalid files change nothing, their errors are
//! logged (path:line:col) and kept in the state directory, and the last good policy stays.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use notify::{RecursiveMode, Watcher};
use tracing::{error, info, warn};

use crate::compile::CompileOptions;
use crate::discovery::docker;
use crate::inventory::{parse_inventory, Container, Inventory};
use crate::reconcile::{Reconciler, Report};
use crate::rules::{load_sources, read_dir, Policy, SourceFile};
use crate::state::{StateDir, StateError, Status};

#[derive(Debug, Clone)]
pub struct Config {
    pub rules: PathBuf,
    pub inventory: Option<PathBuf>,
    /// Docker API socket to discover containers from, if any.
    pub docker: Option<String>,
    /// Deny: the host guard closes the start-up window (with Docker).
    pub unknown_containers: crate::config::Unknown,
    pub state_dir: PathBuf,
    pub opts: CompileOptions,
    /// How often every namespace is checked for drift.
    pub tick: Duration,
    /// How often files are re-read and the fleet re-reconciled without an event.
    pub resync: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("no valid policy: {0} has errors and there is no last good copy in the state directory")]
    NoPolicy(PathBuf),
    #[error("host guard: {0}")]
    Guard(String),
    #[error("{0}: not a directory (the rules directory must exist to be watched)")]
    RulesDir(PathBuf),
    #[error("watching {path}: {source}")]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
    #[error(transparent)]
    Privileges(#[from] crate::privileges::PrivError),
    #[error("starting a thread or signal handlers: {0}")]
    Signals(#[source] std::io::Error),
}

#[derive(Debug, Clone, PartialEq)]
enum Event {
    Rules,
    Inventory,
    Docker(docker::Update),
    /// A programmed container's namespace announced a ruleset change (maybe ours): check it.
    Drift(String),
    /// SIGHUP: reload rules and inventory.
    Reload,
    Stop,
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

fn read_rules(dir: &Path) -> Result<Vec<SourceFile>, Vec<String>> {
    read_dir(dir).map_err(|d| vec![d.to_string()])
}

/// Validates rule files (warnings are logged); errors come back as `path:line:col` lines.
fn validate(files: &[SourceFile], now: i64) -> Result<Arc<Policy>, Vec<String>> {
    let result = load_sources(files, now);
    for d in result.diagnostics.iter().filter(|d| !d.is_error()) {
        warn!("{d}");
    }
    match result.policy {
        Some(p) => Ok(Arc::new(p)),
        None => Err(result.errors().map(|d| d.to_string()).collect()),
    }
}

/// The inventory file's text (read once: it is both compared and parsed).
fn read_inventory_text(path: Option<&Path>) -> Option<String> {
    std::fs::read_to_string(path?).ok()
}

fn parse_inventory_text(path: &Path, text: Option<&str>) -> Result<Inventory, Vec<String>> {
    let text = text.ok_or_else(|| vec![format!("{}: error: cannot read the inventory", path.display())])?;
    parse_inventory(path, text).map_err(|ds| ds.iter().map(|d| d.to_string()).collect())
}

fn log_report(what: &str, r: &Report) {
    info!(
        replaced = r.replaced.len(),
        updated = r.updated.len(),
        unchanged = r.unchanged,
        forgotten = r.forgotten.len(),
        failed = r.failed.len(),
        "{what}"
    );
}

struct Daemon {
    cfg: Config,
    state: StateDir,
    rec: Reconciler,
    status: Status,
    /// The rule files as last read (good or not): a periodic re-read that differs means a
    /// change the watcher missed.
    seen_rules: Vec<SourceFile>,
    seen_inventory: Option<String>,
    /// The two sources, merged into the reconciler's inventory.
    static_inv: Inventory,
    docker_inv: Vec<Container>,
    /// Docker containers' MACs, and the host guard that admits those of programmed ones.
    docker_macs: std::collections::HashMap<String, Vec<[u8; 6]>>,
    guard: Option<Guard>,
    /// Change notifications: what the watcher listens to.
    watch: Option<Sender<crate::drift_watch::Cmd>>,
    watched: std::collections::BTreeMap<String, PathBuf>,
}

/// The host-side guard (see `nft::guard`): only with Docker, whose bridges are in the host
/// namespace. It is left in place when the daemon stops, so containers started meanwhile
/// stay cut until a daemon has programmed them.
struct Guard {
    nft: crate::nft::Nft,
    /// What the kernel's guard admits; `None` until this run has written it (a guard left by
    /// a previous run stays as it was until the first Docker snapshot).
    admitted: Option<Vec<[u8; 6]>>,
}

impl Daemon {
    fn start(cfg: Config) -> Result<Daemon, DaemonError> {
        let state = StateDir::open(&cfg.state_dir)?;
        let mut status = Status::default();
        let t = now();
        let read = read_rules(&cfg.rules);
        let seen_rules = read.clone().unwrap_or_default();
        let (policy, files) = match read.and_then(|f| validate(&f, t).map(|p| (p, f))) {
            Ok(ok) => ok,
            Err(errors) => {
                for e in &errors {
                    error!("{e}");
                }
                let fallback = read_rules(&state.last_good_dir())
                    .and_then(|f| validate(&f, t).map(|p| (p, f)))
                    .map_err(|_| DaemonError::NoPolicy(cfg.rules.clone()))?;
                warn!(
                    "{} is invalid: enforcing the last good policy from {}",
                    cfg.rules.display(),
                    state.last_good_dir().display()
                );
                status.rejected = errors;
                fallback
            }
        };
        if status.rejected.is_empty() {
            state.save_last_good(&files)?;
        }
        status.policy_hash = policy.hash.clone();
        status.loaded_at = t;
        let seen_inventory = read_inventory_text(cfg.inventory.as_deref());
        let inventory = match &cfg.inventory {
            None => Inventory::default(),
            Some(p) => parse_inventory_text(p, seen_inventory.as_deref()).unwrap_or_else(|errors| {
                for e in &errors {
                    error!("{e}");
                }
                Inventory::default()
            }),
        };
        let mut opts = cfg.opts.clone();
        opts.now = t;
        let mut rec = Reconciler::new(policy, inventory.clone(), opts);
        // Replacing an existing table is one atomic batch, so adopting the tables of a
        // previous run never opens a window.
        log_report("initial reconcile", &rec.reconcile());
        state.write_status(&status)?;
        info!(policy = %status.policy_hash, containers = rec.programmed().count(), "enforcing");
        let guard = match (&cfg.docker, cfg.unknown_containers) {
            (None, _) | (_, crate::config::Unknown::DefaultZone) => None,
            (Some(_), crate::config::Unknown::Deny) => Some(Guard {
                nft: crate::nft::Nft::open(Path::new("/proc/self/ns/net"), "host guard")
                    .map_err(|e| DaemonError::Guard(e.to_string()))?,
                admitted: None,
            }),
        };
        Ok(Daemon {
            cfg,
            state,
            rec,
            status,
            seen_rules,
            seen_inventory,
            static_inv: inventory,
            docker_inv: Vec::new(),
            docker_macs: Default::default(),
            guard,
            watch: None,
            watched: Default::default(),
        })
    }

    fn reload_rules(&mut self) {
        let read = read_rules(&self.cfg.rules);
        self.reload_rules_from(read);
    }

    /// Reloads from rule files already read (the periodic check reads them to compare).
    fn reload_rules_from(&mut self, read: Result<Vec<SourceFile>, Vec<String>>) {
        let t = now();
        if let Ok(files) = &read {
            self.seen_rules = files.clone();
        }
        match read.and_then(|f| validate(&f, t).map(|p| (p, f))) {
            Ok((policy, files)) => {
                let changed = policy.hash != self.status.policy_hash;
                self.rec.set_now(t);
                self.rec.set_policy(policy.clone());
                log_report("reload", &self.rec.reconcile());
                self.after_reconcile();
                if let Err(e) = self.state.save_last_good(&files) {
                    error!("{e}");
                }
                self.status = Status { policy_hash: policy.hash.clone(), loaded_at: t, rejected: Vec::new() };
                if changed {
                    info!(policy = %policy.hash, "new policy enforced");
                }
            }
            Err(errors) => {
                for e in &errors {
                    error!("{e}");
                }
                warn!(policy = %self.status.policy_hash, "reload rejected: the last good policy stays enforced");
                self.status.rejected = errors;
            }
        }
        if let Err(e) = self.state.write_status(&self.status) {
            error!("{e}");
        }
    }

    fn reload_inventory(&mut self) {
        let text = read_inventory_text(self.cfg.inventory.as_deref());
        self.reload_inventory_from(text);
    }

    /// Reloads from inventory text already read (the periodic check reads it to compare).
    fn reload_inventory_from(&mut self, text: Option<String>) {
        let Some(path) = self.cfg.inventory.clone() else { return };
        let parsed = parse_inventory_text(&path, text.as_deref());
        self.seen_inventory = text;
        match parsed {
            Ok(inv) => {
                self.static_inv = inv;
                self.rec.set_inventory(merge(&self.static_inv, &self.docker_inv));
                log_report("inventory changed", &self.rec.reconcile());
                self.after_reconcile();
            }
            Err(errors) => {
                for e in &errors {
                    error!("{e}");
                }
                warn!("inventory rejected: containers stay as they were");
            }
        }
    }

    fn docker_update(&mut self, u: docker::Update) {
        match u {
            docker::Update::Snapshot(found) => {
                let macs = found.iter().map(|(c, m)| (c.name.clone(), m.clone())).collect();
                let containers: Vec<Container> = found.into_iter().map(|(c, _)| c).collect();
                if containers != self.docker_inv {
                    self.docker_inv = containers;
                    self.rec.set_inventory(merge(&self.static_inv, &self.docker_inv));
                    log_report("docker containers changed", &self.rec.reconcile());
                }
                self.docker_macs = macs;
                self.after_reconcile();
            }
            // Keep enforcing what we know; the source logs and retries by itself.
            docker::Update::Unavailable(why) => tracing::debug!("docker unavailable: {why}"),
        }
    }

    /// Keeps the change-notification watcher on exactly the programmed namespaces.
    fn sync_watch(&mut self) {
        let Some(w) = &self.watch else { return };
        let now: std::collections::BTreeMap<String, PathBuf> =
            self.rec.programmed_netns().map(|(n, p)| (n.to_string(), p.to_path_buf())).collect();
        for (name, ns) in &now {
            if self.watched.get(name) != Some(ns) {
                let _ = w.send(crate::drift_watch::Cmd::Watch(name.clone(), ns.clone()));
            }
        }
        for name in self.watched.keys().filter(|n| !now.contains_key(*n)) {
            let _ = w.send(crate::drift_watch::Cmd::Unwatch(name.clone()));
        }
        self.watched = now;
    }

    /// What follows every reconcile: notifications for the programmed namespaces, and the
    /// guard admitting them (only now, once their own tables are in place).
    fn after_reconcile(&mut self) {
        self.sync_watch();
        self.update_guard();
    }

    /// Admits exactly the MACs of Docker containers whose tables are programmed.
    fn update_guard(&mut self) {
        let Some(g) = &mut self.guard else { return };
        let mut want: Vec<[u8; 6]> =
            self.rec.programmed().filter_map(|n| self.docker_macs.get(n)).flatten().copied().collect();
        want.sort();
        want.dedup();
        if g.admitted.as_ref() == Some(&want) {
            return;
        }
        match g.nft.apply_guard(&want) {
            Ok(()) => {
                info!(admitted = want.len(), "host guard updated");
                g.admitted = Some(want);
            }
            Err(e) => error!(error = %e, "host guard update failed"),
        }
    }

    /// Catches changes the watcher missed, and lets expiries take effect.
    fn resync(&mut self) {
        let read = read_rules(&self.cfg.rules);
        if read.as_ref().map_or(true, |f| *f != self.seen_rules) {
            if read.is_ok() {
                info!("rule files changed (periodic check)");
            }
            self.reload_rules_from(read);
        }
        let inv_now = read_inventory_text(self.cfg.inventory.as_deref());
        if inv_now != self.seen_inventory {
            info!("inventory changed (periodic check)");
            self.reload_inventory_from(inv_now);
        }
        self.rec.verify_rules();
        self.rec.set_now(now());
        let report = self.rec.reconcile();
        if report != (Report { unchanged: report.unchanged, ..Report::default() }) {
            log_report("resync", &report);
        }
        self.after_reconcile();
    }
}

/// The static inventory plus Docker's containers; a name in both keeps the static entry
/// (an operator's explicit word) and is reported.
fn merge(static_inv: &Inventory, docker: &[Container]) -> Inventory {
    let mut inv = static_inv.clone();
    for c in docker {
        if inv.get(&c.name).is_some() {
            warn!(container = %c.name, "in both the inventory file and Docker: the inventory file wins");
            continue;
        }
        inv.containers.push(c.clone());
    }
    inv
}

fn watch(cfg: &Config, tx: Sender<Event>) -> Result<notify::RecommendedWatcher, DaemonError> {
    let rules = cfg.rules.clone();
    let inventory = cfg.inventory.clone();
    let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(ev) = res else { return };
        if ev.kind.is_access() {
            return;
        }
        for p in &ev.paths {
            if p.parent() == Some(rules.as_path()) || p == &rules {
                let _ = tx.send(Event::Rules);
            }
            if inventory.as_deref() == Some(p.as_path()) {
                let _ = tx.send(Event::Inventory);
            }
        }
    })
    .map_err(|source| DaemonError::Watch { path: cfg.rules.clone(), source })?;
    w.watch(&cfg.rules, RecursiveMode::NonRecursive)
        .map_err(|source| DaemonError::Watch { path: cfg.rules.clone(), source })?;
    // The inventory's directory, not the file: editors and tools replace files by rename.
    if let Some(dir) = cfg.inventory.as_deref().and_then(Path::parent) {
        let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
        w.watch(dir, RecursiveMode::NonRecursive)
            .map_err(|source| DaemonError::Watch { path: dir.to_path_buf(), source })?;
    }
    Ok(w)
}

fn signals(tx: Sender<Event>) -> Result<(), DaemonError> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut sigs =
        signal_hook::iterator::Signals::new([SIGHUP, SIGINT, SIGTERM]).map_err(DaemonError::Signals)?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for s in sigs.forever() {
                let ev = if s == SIGHUP { Event::Reload } else { Event::Stop };
                if tx.send(ev).is_err() {
                    return;
                }
            }
        })
        .map_err(DaemonError::Signals)?;
    Ok(())
}

/// Moves a source's messages into the daemon's one event queue, on a thread of its own.
fn forward<T: Send + 'static>(
    name: &str,
    from: Receiver<T>,
    to: Sender<Event>,
    wrap: fn(T) -> Event,
) -> Result<(), DaemonError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            for m in from {
                if to.send(wrap(m)).is_err() {
                    return;
                }
            }
        })
        .map_err(DaemonError::Signals)?;
    Ok(())
}

/// Editors write a file in several steps: wait briefly and take every pending event.
fn settle(first: Event, rx: &Receiver<Event>) -> Vec<Event> {
    let mut events = vec![first];
    let until = Instant::now() + Duration::from_millis(150);
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(e) => events.push(e),
            Err(_) => break,
        }
    }
    events
}

pub fn run(cfg: Config) -> Result<(), DaemonError> {
    // Capabilities are per thread: drop them before any thread exists, so every thread
    // (and every per-namespace socket thread spawned later) inherits the reduced sets.
    crate::privileges::drop_unneeded()?;
    if !cfg.rules.is_dir() {
        return Err(DaemonError::RulesDir(cfg.rules.clone()));
    }
    let (tx, rx) = mpsc::channel();
    let _watcher = watch(&cfg, tx.clone())?;
    signals(tx.clone())?;
    if let Some(socket) = cfg.docker.clone() {
        let (dtx, drx) = mpsc::channel();
        docker::spawn(socket, dtx).map_err(DaemonError::Signals)?;
        forward("docker-fwd", drx, tx.clone(), Event::Docker)?;
    }
    let (ctx, crx) = mpsc::channel::<String>();
    let watch = crate::drift_watch::spawn(ctx).map_err(DaemonError::Signals)?;
    forward("drift-fwd", crx, tx, Event::Drift)?;
    let mut d = Daemon::start(cfg)?;
    d.watch = Some(watch);
    d.sync_watch();
    let mut last_resync = Instant::now();
    let mut last_drift_check = Instant::now();
    loop {
        match rx.recv_timeout(d.cfg.tick) {
            Ok(first) => {
                // Docker snapshots and change notifications need no settling; file edits do.
                let mut events = if matches!(first, Event::Docker(_) | Event::Drift(_)) {
                    vec![first]
                } else {
                    settle(first, &rx)
                };
                events.extend(rx.try_iter());
                let drifted: std::collections::BTreeSet<String> = events
                    .iter()
                    .filter_map(|e| if let Event::Drift(n) = e { Some(n.clone()) } else { None })
                    .collect();
                if events.contains(&Event::Stop) {
                    info!("stopping; enforcement stays in place (`fw-daemon flush` removes it)");
                    return Ok(());
                }
                if events.iter().any(|e| matches!(e, Event::Inventory | Event::Reload)) {
                    d.reload_inventory();
                }
                if events.iter().any(|e| matches!(e, Event::Rules | Event::Reload)) {
                    d.reload_rules();
                }
                // Snapshots are complete: only the newest matters.
                if let Some(Event::Docker(u)) =
                    events.into_iter().rev().find(|e| matches!(e, Event::Docker(_)))
                {
                    d.docker_update(u);
                }
                if !drifted.is_empty() {
                    d.rec.restore_drift_in(Some(&drifted));
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        }
        // The periodic check, in case a notification was lost (socket overrun).
        if last_drift_check.elapsed() >= d.cfg.tick {
            d.rec.restore_drift();
            last_drift_check = Instant::now();
        }
        if last_resync.elapsed() >= d.cfg.resync {
            d.resync();
            last_resync = Instant::now();
        }
    }
}
