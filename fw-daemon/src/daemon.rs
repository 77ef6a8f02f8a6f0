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

use tracing::{error, info, warn};

use fw_proto::control::ErrorCode;

use crate::compile::CompileOptions;
use crate::discovery::docker;
use crate::inventory::{parse_inventory, Container, Inventory};
use crate::reconcile::{Reconciler, Report};
use crate::rules::{load_sources, read_dir_limited, Policy, ReadLimits, SourceFile};
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
    pub socket: Option<PathBuf>,
    pub socket_group: String,
    pub roles: crate::control::Roles,
    pub audit_log: Option<PathBuf>,
    pub max_flows: usize,
    /// The floors, tamper escalation, revocation.
    pub containment: crate::containment::ContainmentConfig,
    pub read_limits: ReadLimits,
    pub max_inventory_bytes: u64,
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
    #[error(transparent)]
    Privileges(#[from] crate::privileges::PrivError),
    #[error("starting a thread or signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    #[error(transparent)]
    Control(#[from] crate::control::server::ServerError),
    #[error(transparent)]
    Audit(#[from] crate::control::audit::AuditError),
}

#[derive(Debug)]
enum Event {
    Rules,
    Inventory,
    Docker(docker::Update),
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

/// Who places a tamper quarantine (audit records, `blocks`).
const TAMPER_ACTOR: &str = "fw-daemon tamper escalation";

fn tamper_message(name: &str, n: u64) -> String {
    let times = if n > 1 { format!(" ({n} restores in the last 10 s)") } else { String::new() };
    format!("table inet fw in {name}'s namespace was changed outside fw; restored{times}")
}

/// A record of the daemon's own doing (no peer, no role): `op` on `target`, for `reason`.
fn own_record(op: &str, target: Option<String>, reason: Option<&str>) -> fw_proto::control::AuditRecord {
    fw_proto::control::AuditRecord {
        time_ms: now_ms(),
        peer: None,
        role: None,
        actor: None,
        op: op.into(),
        target,
        block: None,
        reason: reason.map(str::to_string),
        ttl_secs: None,
        ttl_ms: None,
        result: String::new(),
        policy_hash: None,
        summary: None,
    }
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// What reading the rules directory gave: the files, or why not (at most
/// [`MAX_DIAGNOSTICS`] lines and a count of the rest).
type RulesRead = Result<Vec<SourceFile>, Vec<String>>;

fn read_rules(dir: &Path, limits: &ReadLimits) -> RulesRead {
    read_dir_limited(dir, limits).map_err(|ds| capped(ds.iter().map(|d| d.to_string()).collect()))
}

/// Validates rule files (warnings are logged); errors come back as `path:line:col` lines.
fn validate(files: &[SourceFile], now: i64) -> Result<Arc<Policy>, Vec<String>> {
    let result = load_sources(files, now);
    for d in result.diagnostics.iter().filter(|d| !d.is_error()) {
        warn!("{d}");
    }
    match result.policy {
        Some(p) => Ok(Arc::new(p)),
        None => Err(capped(result.errors().map(|d| d.to_string()).collect())),
    }
}

/// The inventory file's text, or why it cannot be had (read once: it is both compared and
/// parsed). `None` without an inventory file.
type InventoryRead = Option<Result<String, String>>;

fn read_inventory_text(path: Option<&Path>, max: u64) -> InventoryRead {
    let path = path?;
    let why = |m: String| format!("{}: error: {m}", path.display());
    Some(match crate::rules::read_bounded(path, max) {
        Ok(bytes) => String::from_utf8(bytes).map_err(|_| why("not UTF-8".into())),
        Err(crate::rules::Bounded::TooBig(n)) => Err(why(format!(
            "{n} bytes, over the limit of {max} for the inventory (setting max_inventory_bytes): not read"
        ))),
        Err(crate::rules::Bounded::Io(e)) => Err(why(format!("cannot read the inventory: {e}"))),
    })
}

fn parse_inventory_text(path: &Path, text: &InventoryRead) -> Result<Inventory, Vec<String>> {
    match text {
        None => Err(vec![format!("{}: error: cannot read the inventory", path.display())]),
        Some(Err(e)) => Err(vec![e.clone()]),
        Some(Ok(text)) => {
            parse_inventory(path, text).map_err(|ds| capped(ds.iter().map(|d| d.to_string()).collect()))
        }
    }
}

/// Diagnostics kept (in status) and logged per reload: a file with a million errors must
/// not take the daemon's memory or its log with it.
pub const MAX_DIAGNOSTICS: usize = 100;

/// The first [`MAX_DIAGNOSTICS`] lines, then `... and N more`.
fn capped(mut errors: Vec<String>) -> Vec<String> {
    if errors.len() > MAX_DIAGNOSTICS {
        let more = errors.len() - MAX_DIAGNOSTICS;
        errors.truncate(MAX_DIAGNOSTICS);
        errors.push(format!("... and {more} more"));
    }
    errors
}

fn log_errors(errors: &[String]) {
    for e in errors {
        error!("{e}");
    }
}

fn first_error(errors: &[String]) -> &str {
    errors.first().and_then(|e| e.lines().next()).unwrap_or("no detail")
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
    /// The rule files as last read (good or not): a periodic re-read that differs, twice
    /// the same way, means a change the watcher missed.
    seen_rules: RulesRead,
    seen_inventory: InventoryRead,
    rules_backstop: crate::watch::Stable<RulesRead>,
    inventory_backstop: crate::watch::Stable<InventoryRead>,
    /// The two sources, merged into the reconciler's inventory.
    static_inv: Inventory,
    docker_inv: Vec<Container>,
    /// The floors, first-instant flushes, revocation and tamper escalation.
    contain: crate::containment::Containment,
    /// Docker has sent its first complete snapshot.
    docker_seen: bool,
    /// Change notifications: what the watcher listens to.
    watch: Option<Sender<crate::drift_watch::Cmd>>,
    watched: std::collections::BTreeMap<String, PathBuf>,
    server: Option<Arc<crate::control::server::Server>>,
    audit: Option<Arc<crate::control::audit::AuditLog>>,
    started: Instant,
    flows: Arc<crate::flows::collector::Flows>,
    /// Shared with the flow collectors (cap hits) and the socket server (reads, pushes).
    alerts: Arc<crate::alerts::Alerts>,
    /// The files the enforced policy came from, as shown in status.
    rule_files: Vec<String>,
    /// Unix seconds of the last load or reload attempt, good or refused.
    last_reload_at: Option<i64>,
    /// Containers reported as not (fully) enforced, and why (alerted once per change).
    unenforced: std::collections::BTreeMap<String, String>,
    /// One tamper alert per container per 10 s, with the count.
    tamper_alerts: crate::alerts::CapLimiter,
    /// Errors of the inventory file as last read (at most [`MAX_DIAGNOSTICS`] + 1 lines).
    inventory_errors: Vec<String>,
    /// The static inventory enforced is the state directory's last good copy.
    inventory_last_good: bool,
}

impl Daemon {
    /// Loads the policy and the inventory and programs every namespace; the caller finishes
    /// with [`Daemon::converged`] on the returned report once the flow collectors know
    /// what to listen to (inspection included).
    fn start(cfg: Config) -> Result<(Daemon, Report), DaemonError> {
        let (cfg_max_flows, cfg_log_group) = (cfg.max_flows, cfg.opts.log_group);
        let state = StateDir::open(&cfg.state_dir)?;
        let mut status = Status::default();
        let alerts = Arc::new(crate::alerts::Alerts::default());
        let t = now();
        let read = read_rules(&cfg.rules, &cfg.read_limits);
        let seen_rules = read.clone();
        let (policy, files) = match read.and_then(|f| validate(&f, t).map(|p| (p, f))) {
            Ok(ok) => ok,
            Err(errors) => {
                for e in &errors {
                    error!("{e}");
                }
                let fallback = read_rules(&state.last_good_dir(), &cfg.read_limits)
                    .and_then(|f| validate(&f, t).map(|p| (p, f)))
                    .map_err(|_| DaemonError::NoPolicy(cfg.rules.clone()))?;
                warn!(
                    "{} is invalid: enforcing the last good policy from {}",
                    cfg.rules.display(),
                    state.last_good_dir().display()
                );
                alerts.raise(
                    fw_proto::control::AlertKind::ReloadFailed,
                    None,
                    None,
                    None,
                    refused_message(&errors, &fallback.0.hash),
                );
                status.rejected = errors;
                fallback
            }
        };
        let rule_files = file_names(&cfg.rules, &files);
        if status.rejected.is_empty() {
            state.save_last_good(&files)?;
        }
        status.policy_hash = policy.hash.clone();
        status.loaded_at = t;
        let seen_inventory = read_inventory_text(cfg.inventory.as_deref(), cfg.max_inventory_bytes);
        let mut inventory_errors = Vec::new();
        let mut inventory_last_good = false;
        let inventory = match &cfg.inventory {
            None => Inventory::default(),
            Some(p) => match parse_inventory_text(p, &seen_inventory) {
                Ok(inv) => {
                    if let Some(Ok(text)) = &seen_inventory {
                        if let Err(e) = state.save_last_good_inventory(text) {
                            error!("{e}");
                        }
                    }
                    inv
                }
                Err(errors) => {
                    inventory_errors = errors;
                    log_errors(&inventory_errors);
                    // As with rule files: an invalid file must not leave containers
                    // unmanaged; the last one that loaded stays in force.
                    let saved = state.last_good_inventory();
                    let fallback = std::fs::read_to_string(&saved)
                        .ok()
                        .and_then(|text| parse_inventory(&saved, &text).ok());
                    let msg = match &fallback {
                        Some(inv) => format!(
                            "inventory {} is invalid ({}): enforcing the last good one ({} containers) from {}",
                            p.display(),
                            first_error(&inventory_errors),
                            inv.containers.len(),
                            saved.display()
                        ),
                        None => format!(
                            "inventory {} is invalid ({}) and there is no last good copy: no container from it is managed",
                            p.display(),
                            first_error(&inventory_errors)
                        ),
                    };
                    alerts.raise(fw_proto::control::AlertKind::InventoryFailed, None, None, None, msg);
                    inventory_last_good = fallback.is_some();
                    fallback.unwrap_or_default()
                }
            },
        };
        let mut opts = cfg.opts.clone();
        opts.now = t;
        let mut rec = Reconciler::new(policy, inventory.clone(), opts);
        let audit = cfg
            .audit_log
            .as_deref()
            .map(|p| Arc::new(crate::control::audit::AuditLog::open(p, Some(alerts.clone()))));
        // Blocks survive restarts; those that lapsed meanwhile already left the kernel, and
        // get their record now, dated when they expired.
        let mut blocks = state.read_blocks()?;
        let lapsed = blocks.expire(now_ms());
        for b in &lapsed {
            info!(block = b.id, target = %b.target, "block expired while the daemon was down");
            if let Some(a) = &audit {
                a.record(&expire_record(
                    b,
                    Some("expired while fw-daemon was not running; recorded at start"),
                ));
            }
        }
        if !lapsed.is_empty() {
            state.write_blocks(&blocks)?;
        }
        if !blocks.active().is_empty() {
            info!(blocks = blocks.active().len(), "restoring operator blocks");
        }
        rec.set_blocks(blocks);
        remove_leftovers();
        // Replacing an existing table is one atomic batch, so adopting the tables of a
        // previous run never opens a window.
        let report = rec.reconcile();
        log_report("initial reconcile", &report);
        state.write_status(&status)?;
        info!(policy = %status.policy_hash, containers = rec.programmed().count(), "enforcing");
        let mut contain_cfg = cfg.containment.clone();
        if cfg.docker.is_some() && cfg.unknown_containers == crate::config::Unknown::Deny {
            // Docker's bridges are in the namespace the daemon runs in with it (the host's):
            // its floor cuts every `veth` port fw has not programmed, daemon running or not.
            contain_cfg.guard = Some((PathBuf::from("/proc/self/ns/net"), vec!["veth".into()]));
        }
        let mut contain = crate::containment::Containment::new(contain_cfg);
        if !contain.guard_exists() {
            // A first start: no floor a previous run left to hold on to. Cut every
            // unidentified port now; Docker's snapshot admits them as they are programmed.
            contain.release_guard();
        }
        let d = Daemon {
            cfg,
            state,
            rec,
            status,
            seen_rules,
            seen_inventory,
            rules_backstop: Default::default(),
            inventory_backstop: Default::default(),
            static_inv: inventory,
            docker_inv: Vec::new(),
            contain,
            docker_seen: false,
            watch: None,
            watched: Default::default(),
            server: None,
            audit,
            started: Instant::now(),
            flows: crate::flows::collector::Flows::new(
                cfg_max_flows,
                cfg_log_group,
                alerts.clone(),
                crate::runtime::handle().map_err(DaemonError::Signals)?,
            ),
            alerts,
            rule_files,
            last_reload_at: Some(t),
            inventory_errors,
            inventory_last_good,
            unenforced: Default::default(),
            tamper_alerts: crate::alerts::CapLimiter::new(Duration::from_secs(10)),
        };
        Ok((d, report))
    }

    /// What follows every reconcile pass: fresh namespaces flushed, then admitted by the
    /// floors; change notifications and flow collectors on the programmed namespaces.
    fn converged(&mut self, report: &Report) {
        let floors = self.contain.converge(&self.rec, report);
        for (ns, e) in &floors.failed {
            error!(netns = %ns, error = %e, "floor not programmed");
        }
        self.after_reconcile();
        self.report_unenforced();
    }

    /// Deletes the established flows the current tables deny, in these namespaces (owners),
    /// and says so.
    fn revoke(&mut self, namespaces: &std::collections::BTreeSet<String>, why: &str) {
        let n = self.contain.revoke(&self.rec, namespaces);
        if n > 0 {
            info!(flows = n, "{why}: established flows the policy now denies were cut");
        }
    }

    /// Alerts once per container for what cannot be enforced about it: no table (its
    /// namespace is the host's), or no floor (no host side found).
    fn report_unenforced(&mut self) {
        let mut now_unenforced = std::collections::BTreeMap::new();
        for (name, why) in self.rec.skipped() {
            now_unenforced.insert(name.clone(), format!("{name} is not programmed: {why}"));
        }
        let programmed: Vec<String> = self.rec.programmed().map(str::to_string).collect();
        for name in programmed {
            if let Err(why) = self.contain.floor_of(&self.rec, &name) {
                now_unenforced.insert(
                    name.clone(),
                    format!("{name} has no host-side floor ({why}): its own table is all that holds it"),
                );
            }
        }
        for (name, msg) in &now_unenforced {
            if self.unenforced.get(name) != Some(msg) {
                warn!(container = %name, "{msg}");
                self.alerts.raise(
                    fw_proto::control::AlertKind::Unenforced,
                    Some(name),
                    None,
                    None,
                    msg.clone(),
                );
            }
        }
        self.unenforced = now_unenforced;
    }

    fn reload_rules(&mut self) {
        let read = read_rules(&self.cfg.rules, &self.cfg.read_limits);
        self.reload_rules_from(read);
    }

    /// Reloads from rule files already read (the periodic check reads them to compare).
    fn reload_rules_from(&mut self, read: Result<Vec<SourceFile>, Vec<String>>) {
        let t = now();
        self.last_reload_at = Some(t);
        self.seen_rules = read.clone();
        match read.and_then(|f| validate(&f, t).map(|p| (p, f))) {
            Ok((policy, files)) => {
                let changed = policy.hash != self.status.policy_hash;
                // Good files after refused ones: worth saying even when the hash is the old one.
                let recovered = !self.status.rejected.is_empty();
                self.rec.set_now(t);
                self.rec.set_policy(policy.clone());
                let report = self.rec.reconcile();
                log_report("reload", &report);
                if changed {
                    self.audit_reload(Some(&policy.hash), "ok".into(), Some(summary(&policy, &report)));
                }
                self.rule_files = file_names(&self.cfg.rules, &files);
                self.converged(&report);
                if changed {
                    // What the new policy denies stops now, established or not.
                    let all: std::collections::BTreeSet<String> =
                        self.rec.programmed_netns().map(|(n, _)| n.to_string()).collect();
                    self.revoke(&all, "reload");
                }
                if let Err(e) = self.state.save_last_good(&files) {
                    error!("{e}");
                }
                self.status = Status { policy_hash: policy.hash.clone(), loaded_at: t, rejected: Vec::new() };
                if changed || recovered {
                    let what = if changed { "new policy" } else { "rule files fixed: policy" };
                    self.alert(
                        fw_proto::control::AlertKind::Reload,
                        None,
                        None,
                        None,
                        format!("{what} {} enforced ({})", policy.hash, summary(&policy, &report)),
                    );
                }
            }
            Err(errors) => {
                for e in &errors {
                    error!("{e}");
                }
                warn!(policy = %self.status.policy_hash, "reload rejected: the last good policy stays enforced");
                let new_errors = self.status.rejected != errors;
                if new_errors {
                    self.audit_reload(
                        None,
                        format!("error: {} error(s), the last good policy stays", error_count(&errors)),
                        errors.first().cloned(),
                    );
                }
                self.status.rejected = errors;
                if new_errors {
                    let msg = refused_message(&self.status.rejected, &self.status.policy_hash);
                    self.alert(fw_proto::control::AlertKind::ReloadFailed, None, None, None, msg);
                }
            }
        }
        if let Err(e) = self.state.write_status(&self.status) {
            error!("{e}");
        }
    }

    fn reload_inventory(&mut self) {
        let text = read_inventory_text(self.cfg.inventory.as_deref(), self.cfg.max_inventory_bytes);
        self.reload_inventory_from(text);
    }

    /// Reloads from inventory text already read (the periodic check reads it to compare).
    fn reload_inventory_from(&mut self, text: InventoryRead) {
        let Some(path) = self.cfg.inventory.clone() else { return };
        let parsed = parse_inventory_text(&path, &text);
        match parsed {
            Ok(inv) => {
                if let Some(Ok(t)) = &text {
                    if let Err(e) = self.state.save_last_good_inventory(t) {
                        error!("{e}");
                    }
                }
                self.static_inv = inv;
                self.inventory_errors.clear();
                self.inventory_last_good = false;
                self.membership_changed(merge(&self.static_inv, &self.docker_inv), "inventory changed");
            }
            Err(errors) => {
                // Already capped when parsed.
                let new = errors != self.inventory_errors;
                if new {
                    log_errors(&errors);
                    warn!("inventory rejected: containers stay as they were");
                    self.alert(
                        fw_proto::control::AlertKind::InventoryFailed,
                        None,
                        None,
                        None,
                        format!(
                            "inventory {} refused ({}); containers stay as they were",
                            path.display(),
                            first_error(&errors)
                        ),
                    );
                }
                self.inventory_errors = errors;
            }
        }
        self.seen_inventory = text;
    }

    fn docker_update(&mut self, u: docker::Update) {
        match u {
            docker::Update::Snapshot(found) => {
                let containers: Vec<Container> = found.into_iter().map(|(c, _)| c).collect();
                if !self.docker_seen {
                    // Docker's picture is complete: the host's floor may now be written
                    // (until here it stayed as a previous run left it).
                    self.docker_seen = true;
                    self.contain.release_guard();
                }
                if containers != self.docker_inv {
                    self.docker_inv = containers;
                    self.membership_changed(
                        merge(&self.static_inv, &self.docker_inv),
                        "docker containers changed",
                    );
                } else {
                    self.converged(&Report::default());
                }
            }
            // Keep enforcing what we know; the source logs and retries by itself.
            docker::Update::Unavailable(why) => tracing::debug!("docker unavailable: {why}"),
        }
    }

    /// A new inventory (file or Docker): reconciled, floors and flows follow, and the flows
    /// it now denies are cut: in every namespace when an address moved between zones, else
    /// in the namespaces whose table was rebuilt.
    fn membership_changed(&mut self, inv: Inventory, what: &str) {
        let zone_of_addr = |rec: &Reconciler| -> std::collections::BTreeMap<std::net::IpAddr, String> {
            let p = rec.policy();
            rec.inventory()
                .containers
                .iter()
                .flat_map(|c| {
                    let z = p.zone_of(&c.identity()).name.clone();
                    c.addresses.iter().map(move |a| (*a, z.clone()))
                })
                .collect()
        };
        let before = zone_of_addr(&self.rec);
        // Containers whose description changed may have new links: look their host side up again.
        let changed: Vec<crate::floor::link::NsId> = inv
            .containers
            .iter()
            .filter(|c| self.rec.inventory().get(&c.name) != Some(*c))
            .filter_map(|c| c.netns.as_ref())
            .filter_map(|p| crate::floor::link::NsId::of(p).ok())
            .collect();
        self.contain.forget_links(changed);
        self.rec.set_inventory(inv);
        let after = zone_of_addr(&self.rec);
        let report = self.rec.reconcile();
        log_report(what, &report);
        self.converged(&report);
        let moved = before.iter().any(|(a, z)| after.get(a).is_some_and(|z2| z2 != z));
        let scope: std::collections::BTreeSet<String> = if moved {
            self.rec.programmed_netns().map(|(n, _)| n.to_string()).collect()
        } else {
            report.replaced.iter().filter(|n| !report.fresh.contains(n)).cloned().collect()
        };
        if !scope.is_empty() {
            self.revoke(&scope, what);
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
        self.sync_flows();
    }

    /// Flow collectors on exactly the programmed namespaces, and the context they attribute
    /// flows with (zones, peers, the compiled tables, rule positions).
    fn sync_flows(&mut self) {
        use crate::flows::collector::FlowContext;
        let mut ctx = FlowContext::default();
        for c in &self.rec.inventory().containers {
            let Some(rs) = self.rec.ruleset(&c.name) else { continue };
            ctx.zones.insert(c.name.clone(), rs.zone.clone());
            ctx.addrs.insert(c.name.clone(), c.addresses.clone());
            for a in &c.addresses {
                ctx.owner.insert(*a, (c.name.clone(), rs.zone.clone()));
            }
            for r in rs.chains.iter().flat_map(|ch| &ch.rules) {
                if let Some(o) = &r.origin {
                    ctx.rules.entry(o.id.clone()).or_insert_with(|| o.clone());
                }
            }
            ctx.inspect.index_marks(&c.name, rs);
            ctx.rulesets.insert(c.name.clone(), rs.clone());
        }
        let policy = self.rec.policy().clone();
        for (r, kind) in policy
            .failsafes
            .iter()
            .map(|r| (r, fw_proto::RuleKind::Failsafe))
            .chain(policy.rules.iter().map(|r| (r, fw_proto::RuleKind::Policy)))
        {
            if let Some(i) = &r.inspect {
                let rr = ctx.rules.get(&r.id).cloned().unwrap_or_else(|| fw_proto::RuleRef {
                    kind,
                    id: r.id.clone(),
                    source: Some(r.pos.short()),
                });
                ctx.inspect.by_id.insert(r.id.clone(), (i.clone(), rr));
            }
        }
        self.flows.set_context(ctx);
        let programmed = self.rec.programmed_netns().map(|(n, p)| (n.to_string(), p.to_path_buf())).collect();
        self.flows.sync(&programmed);
    }

    fn flow_view(&self) -> Arc<dyn crate::control::FlowView> {
        self.flows.clone()
    }

    fn flows_stats(&self) -> (usize, u64) {
        self.flows.stats()
    }

    /// Catches changes the watcher missed, and lets expiries take effect.
    fn resync(&mut self) {
        self.expire_blocks();
        // Acted on only when two reads in a row agree: a file being written is not loaded.
        let read = read_rules(&self.cfg.rules, &self.cfg.read_limits);
        if let Some(read) = self.rules_backstop.observe(read, &self.seen_rules) {
            info!("rule files changed (periodic check)");
            self.reload_rules_from(read);
        }
        let inv_now = read_inventory_text(self.cfg.inventory.as_deref(), self.cfg.max_inventory_bytes);
        if let Some(inv_now) = self.inventory_backstop.observe(inv_now, &self.seen_inventory) {
            info!("inventory changed (periodic check)");
            self.reload_inventory_from(inv_now);
        }
        let restored = self.rec.verify_rules();
        self.tampered(&restored);
        for ns in self.contain.verify() {
            self.alert(
                fw_proto::control::AlertKind::Tamper,
                None,
                None,
                None,
                format!("the host-side floor in {} was changed outside fw; restored", ns.display()),
            );
        }
        self.rec.set_now(now());
        let report = self.rec.reconcile();
        if report != (Report { unchanged: report.unchanged, ..Report::default() }) {
            log_report("resync", &report);
        }
        self.converged(&report);
        if !report.replaced.is_empty() {
            // A policy expired: what it allowed stops.
            let scope = report.replaced.iter().filter(|n| !report.fresh.contains(n)).cloned().collect();
            self.revoke(&scope, "expiry");
        }
    }
}

impl Daemon {
    /// Raises an alert: kept for `Op::Alerts`, pushed to alert subscriptions, logged.
    /// Other threads (inspection) raise through the shared [`crate::alerts::Alerts`].
    pub fn alert(
        &self,
        kind: fw_proto::control::AlertKind,
        container: Option<&str>,
        rule: Option<fw_proto::RuleRef>,
        flow: Option<u64>,
        message: impl Into<String>,
    ) -> fw_proto::control::Alert {
        // Published first: a reader who sees the alert and asks for status sees its cause.
        self.publish();
        self.alerts.raise(kind, container, rule, flow, message)
    }

    /// Acts on an inspection violation. The flow itself was already dealt with in the kernel
    /// before its offending bytes went anywhere (`flows/inline.rs`: let through for `alert`,
    /// dropped and reset at both ends for `cut` and `quarantine`); here it is made known: an
    /// alert always, an audit record of a cut, and for `quarantine` the container's block.
    /// Automatic actions are audited like an operator's, with the daemon's part as the actor.
    fn on_violation(&mut self, v: crate::flows::inspection::Violation) {
        use crate::rules::model::OnViolation;
        use fw_proto::control::{AlertKind, BlockDirection, BlockTarget};
        let f = &v.flow;
        let by = format!("fw-daemon inspection (policy {})", v.rule.id);
        let reason = format!("inspection: policy {}: {}", v.rule.id, v.reason);
        let mut rec = own_record("", None, Some(&reason));
        rec.actor = Some(by.clone());
        let mut outcome = String::new();
        match v.on {
            OnViolation::Alert => {}
            OnViolation::Cut => {
                let flow = BlockTarget::Flow {
                    container: v.container.clone(),
                    proto: crate::blocks::proto(f.proto),
                    src: f.src,
                    sport: f.sport,
                    dst: f.dst,
                    dport: f.dport,
                };
                rec.op = "cut".into();
                rec.target = Some(flow.to_string());
                rec.result =
                    if v.done.is_none() { "error: not cut in the kernel".into() } else { "ok".into() };
                self.record(rec);
                info!(after_ms = now_ms() - v.seen_ms, "inspection: flow cut");
            }
            OnViolation::Quarantine => {
                let target = BlockTarget::Quarantine {
                    container: v.container.clone(),
                    direction: BlockDirection::Both,
                };
                rec.op = "block".into();
                rec.target = Some(target.to_string());
                // The daemon's own action: it stands even when the trail cannot record it
                // (`block` writes the record).
                match self.block(target, None, Some(reason), by, &mut rec, Need::BestEffort) {
                    Ok(fw_proto::control::Answer::Blocked { block }) => {
                        outcome = format!(" [block {}]", block.id);
                        info!(
                            block = block.id,
                            after_ms = now_ms() - v.seen_ms,
                            "inspection: container quarantined"
                        );
                    }
                    Ok(_) => {}
                    Err((code, m)) => {
                        rec.result = format!("error: {code}: {m}");
                        outcome = format!(" [not applied: {m}]");
                        self.record(rec);
                    }
                }
                self.publish();
            }
        }
        self.alert(
            AlertKind::Violation,
            Some(&v.container),
            Some(v.rule.clone()),
            v.row,
            format!("{}{outcome}", v.message()),
        );
    }

    /// Puts back every table changed outside fw (of `only`, or all) and says so.
    fn restore_drift(&mut self, only: Option<&std::collections::BTreeSet<String>>) {
        let restored = self.rec.restore_drift_in(only);
        self.tampered(&restored);
    }

    fn tampered(&mut self, restored: &[String]) {
        for name in restored {
            // One alert per container per window (with the count): a tamperer must not be
            // able to flush every other alert out of the ring.
            if let Some(n) = self.tamper_alerts.hit(name, "tamper", now_ms()) {
                self.alert(
                    fw_proto::control::AlertKind::Tamper,
                    Some(name),
                    None,
                    None,
                    tamper_message(name, n),
                );
            }
            if self.contain.repaired(name, Instant::now()) && !self.escalated(name) {
                self.escalate(name);
            }
        }
    }

    /// Restores the tamper limiter held back (the window passed): alerted with their count.
    fn flush_tamper_alerts(&mut self) {
        for ((name, _), n) in self.tamper_alerts.flush(now_ms()) {
            self.alert(
                fw_proto::control::AlertKind::Tamper,
                Some(&name),
                None,
                None,
                tamper_message(&name, n),
            );
        }
    }

    /// Whether `name` sits in a tamper quarantine: its table is then restored on the
    /// periodic check only, so a tamperer cannot keep the daemon busy.
    fn escalated(&self, name: &str) -> bool {
        use fw_proto::control::{BlockDirection, BlockTarget};
        self.rec.blocks().active().iter().any(|b| {
            b.created_by == TAMPER_ACTOR
                && matches!(&b.target, BlockTarget::Quarantine { container, direction: BlockDirection::Both } if container == name)
        })
    }

    /// A container that keeps changing its table wins every race with a repairer inside its
    /// namespace; the floor it cannot reach cuts it instead: an automatic quarantine, both
    /// directions, until an operator lifts it. Audited and alerted like an operator's block.
    fn escalate(&mut self, name: &str) {
        use fw_proto::control::{AlertKind, BlockDirection, BlockTarget};
        let already = self.rec.blocks().active().iter().any(|b| {
            matches!(&b.target, BlockTarget::Quarantine { container, direction: BlockDirection::Both } if container == name)
        });
        if already {
            return; // quarantined both ways by someone already
        }
        let t = self.contain.tamper_policy();
        let reason =
            format!("tamper: its table was restored {} times within {} s", t.repairs, t.window.as_secs_f64());
        let target = BlockTarget::Quarantine { container: name.to_string(), direction: BlockDirection::Both };
        let by = TAMPER_ACTOR.to_string();
        let mut rec = own_record("block", Some(target.to_string()), Some(&reason));
        rec.actor = Some(TAMPER_ACTOR.into());
        // The daemon's own action: it stands even when the trail cannot record it.
        let outcome = match self.block(target, None, Some(reason.clone()), by, &mut rec, Need::BestEffort) {
            Ok(fw_proto::control::Answer::Blocked { block }) => {
                format!("quarantined at the host-side floor (block {})", block.id)
            }
            Ok(_) => "quarantined".into(),
            Err((code, m)) => {
                rec.result = format!("error: {code}: {m}");
                self.record(rec);
                format!("quarantine failed: {m}")
            }
        };
        warn!(container = %name, "{reason}: {outcome}");
        self.alert(AlertKind::Escalated, Some(name), None, None, format!("{name}: {reason}; {outcome}"));
    }

    /// A record of the daemon's own doing: the action stands even when it cannot be
    /// written (the trail is then marked broken and the record counted as lost).
    fn record(&self, rec: fw_proto::control::AuditRecord) {
        if let Some(a) = &self.audit {
            a.record(&rec);
        }
    }

    /// Writes `rec` as `need` says: a request's change must be in the trail before it
    /// stays; the daemon's own actions go on regardless.
    fn audit_write(
        &self,
        rec: &fw_proto::control::AuditRecord,
        need: Need,
    ) -> Result<(), (ErrorCode, String)> {
        let Some(a) = &self.audit else { return Ok(()) };
        match need {
            Need::Required => a.append(rec).map_err(|e| {
                (
                    ErrorCode::AuditUnavailable,
                    format!("{e}: {} refused, nothing changed (the change could not be recorded)", rec.op),
                )
            }),
            Need::BestEffort => {
                a.record(rec);
                Ok(())
            }
        }
    }

    fn audit_reload(&self, hash: Option<&str>, result: String, summary: Option<String>) {
        self.record(fw_proto::control::AuditRecord {
            time_ms: now_ms(),
            peer: None,
            role: None,
            actor: None,
            op: "reload".into(),
            target: Some(self.cfg.rules.display().to_string()),
            block: None,
            reason: Some("rule files changed".into()),
            ttl_secs: None,
            ttl_ms: None,
            result,
            policy_hash: hash.map(str::to_string),
            summary,
        });
    }

    /// What readers of the control socket see; refreshed after every change.
    fn publish(&self) {
        let Some(srv) = &self.server else { return };
        srv.publish(crate::control::Published { status: self.status_info(), blocks: self.block_infos() });
    }

    fn status_info(&self) -> fw_proto::control::StatusInfo {
        let policy = self.rec.policy();
        let containers = self
            .rec
            .inventory()
            .containers
            .iter()
            .map(|c| {
                let programmed = self.rec.ruleset(&c.name);
                let zone = policy.zone_of(&c.identity());
                let blocks: Vec<&crate::blocks::Block> =
                    self.rec.blocks().active().iter().filter(|b| b.applies_to(&c.name, &zone.name)).collect();
                fw_proto::control::ContainerInfo {
                    name: c.name.clone(),
                    zone: programmed.map_or_else(|| zone.name.clone(), |r| r.zone.clone()),
                    mode: programmed.map_or(zone.mode, |r| r.mode),
                    addresses: c.addresses.clone(),
                    programmed: programmed.is_some(),
                    caps: fw_proto::control::CapsInfo {
                        max_conns: zone.caps.max_conns,
                        new_conns_per_sec: zone.caps.new_conns_per_sec,
                        egress_bytes_per_sec: zone.caps.egress_bytes_per_sec,
                    },
                    // Counted when status is asked (the server fills it from the flow table).
                    open_flows: 0,
                    quarantined: blocks
                        .iter()
                        .any(|b| matches!(b.target, fw_proto::control::BlockTarget::Quarantine { .. })),
                    blocks: blocks.iter().map(|b| b.id).collect(),
                    floor: self.contain.floor_of(&self.rec, &c.name).unwrap_or_default(),
                    note: self.unenforced.get(&c.name).cloned(),
                    skipped: self.rec.skipped().get(&c.name).map(|why| why.to_string()),
                }
            })
            .collect();
        let (flows, lost_events) = self.flows_stats();
        fw_proto::control::StatusInfo {
            daemon_version: env!("CARGO_PKG_VERSION").into(),
            pid: std::process::id(),
            uptime_secs: self.started.elapsed().as_secs(),
            policy_hash: self.status.policy_hash.clone(),
            loaded_at: self.status.loaded_at,
            last_reload_errors: self.status.rejected.clone(),
            containers,
            flows,
            lost_events,
            active_blocks: self.rec.blocks().active().len(),
            rules_dir: Some(self.cfg.rules.display().to_string()),
            rule_files: self.rule_files.clone(),
            last_reload_at: self.last_reload_at,
            audit: self.audit.as_ref().map(|a| a.status()),
            flows_dropped_open: self.flows.dropped_open(),
            inventory: self.cfg.inventory.as_ref().map(|p| p.display().to_string()),
            inventory_errors: self.inventory_errors.clone(),
            inventory_last_good: self.inventory_last_good,
        }
    }

    fn block_infos(&self) -> Vec<fw_proto::control::BlockInfo> {
        let zones = self.rec.zones();
        self.rec
            .blocks()
            .active()
            .iter()
            .map(|b| {
                b.info(zones.iter().filter(|(c, z)| b.applies_to(c, z)).map(|(c, _)| c.clone()).collect())
            })
            .collect()
    }

    /// Drops blocks whose time is up (the kernel already removed their elements).
    fn expire_blocks(&mut self) {
        let mut list = self.rec.blocks().clone();
        let gone = list.expire(now_ms());
        if gone.is_empty() {
            return;
        }
        if let Err(e) = self.state.write_blocks(&list) {
            error!("{e}");
        }
        self.rec.set_blocks(list);
        for b in gone {
            self.alert(
                fw_proto::control::AlertKind::Unblocked,
                block_container(&b.target),
                None,
                None,
                format!("block {} on {} expired", b.id, b.target),
            );
            self.record(expire_record(&b, None));
        }
    }

    /// A state-changing request from the control socket: do it, audit it, answer it.
    /// Nothing a request changes stays unless its record is on disk: block, unblock and
    /// reload write it themselves, at the point that keeps that true; a request refused for
    /// any other reason is recorded here, with the reason the operator gave.
    fn command(&mut self, cmd: crate::control::Command) {
        use fw_proto::control::{Answer, Op};
        let crate::control::Command { op, who, role, reply } = cmd;
        let mut rec = fw_proto::control::AuditRecord {
            time_ms: now_ms(),
            peer: Some(who.peer.clone()),
            role: Some(role),
            actor: None,
            op: op.name().into(),
            target: None,
            block: None,
            reason: None,
            ttl_secs: None,
            ttl_ms: None,
            result: String::new(),
            policy_hash: None,
            summary: None,
        };
        let by = format!("{} (uid {})", who.peer.user, who.peer.uid);
        let result: Result<Answer, (ErrorCode, String)> = match op {
            Op::Block { target, ttl_secs, ttl_ms, reason } => {
                rec.target = Some(target.to_string());
                rec.reason = reason.clone();
                rec.ttl_secs = ttl_secs;
                rec.ttl_ms = ttl_ms;
                match crate::blocks::Ttl::from_request(ttl_secs, ttl_ms) {
                    Ok(ttl) => self.block(target, ttl, reason, by, &mut rec, Need::Required),
                    Err(e) => Err((ErrorCode::BadRequest, e.to_string())),
                }
            }
            Op::Unblock { block } => {
                rec.block = Some(block);
                self.unblock(block, &by, &mut rec)
            }
            Op::Reload => {
                rec.target = Some(self.cfg.rules.display().to_string());
                rec.reason = Some("requested over the control socket".into());
                rec.result = "ok".into();
                self.audit_write(&rec, Need::Required).map(|()| {
                    self.reload_inventory();
                    self.reload_rules();
                    Answer::Reloaded {
                        policy_hash: self.status.policy_hash.clone(),
                        rejected: self.status.rejected.clone(),
                    }
                })
            }
            other => Err((ErrorCode::BadRequest, format!("{} is not a command", other.name()))),
        };
        match &result {
            // The trail is what failed: writing the refusal there would fail too.
            Err((ErrorCode::AuditUnavailable, _)) => {}
            Err((code, m)) => {
                rec.result = format!("error: {code}: {m}");
                self.record(rec);
            }
            Ok(_) => {}
        }
        self.publish();
        let _ = reply.send(result);
    }

    /// Places a block. Its elements go in first (a cut must not wait for a disk), then its
    /// record is written (`rec`, completed here); if that fails and `need` requires it, the
    /// elements come out again and nothing else happens. Only then are conntrack entries
    /// deleted and the block saved.
    fn block(
        &mut self,
        target: fw_proto::control::BlockTarget,
        ttl: Option<crate::blocks::Ttl>,
        reason: Option<String>,
        by: String,
        rec: &mut fw_proto::control::AuditRecord,
        need: Need,
    ) -> Result<fw_proto::control::Answer, (ErrorCode, String)> {
        let zones = self.rec.zones();
        let before = self.rec.blocks().clone();
        let mut list = before.clone();
        let block = match list.add(target, ttl, reason, by, now_ms(), &zones) {
            Ok(b) => b.clone(),
            Err(e @ crate::blocks::BlockError::Overlap { .. }) => {
                return Err((ErrorCode::Conflict, e.to_string()))
            }
            Err(e) => return Err((ErrorCode::NotFound, e.to_string())),
        };
        rec.block = Some(block.id);
        let affected: std::collections::BTreeSet<String> =
            zones.iter().filter(|(c, z)| block.applies_to(c, z)).map(|(c, _)| c.clone()).collect();
        // Applied first, saved before the answer: the cut does not wait for an fsync, and a
        // block is acknowledged only once it will survive a restart. The floors first: they
        // are what the container cannot undo.
        let floors = self.contain.sync_with(&self.rec, &list, Some(&affected));
        if !floors.failed.is_empty() {
            self.contain.sync_with(&self.rec, &before, Some(&affected));
            let why: Vec<String> =
                floors.failed.iter().map(|(ns, e)| format!("floor in {ns}: {e}")).collect();
            return Err((ErrorCode::Internal, format!("block not applied: {}", why.join("; "))));
        }
        self.rec.set_blocks(list);
        let report = self.rec.reconcile_some(Some(&affected));
        if !report.failed.is_empty() {
            self.rec.set_blocks(before);
            self.rec.reconcile_some(Some(&affected));
            self.contain.sync(&self.rec, Some(&affected));
            let why: Vec<String> = report.failed.iter().map(|(c, e)| format!("{c}: {e}")).collect();
            return Err((ErrorCode::Internal, format!("block not applied: {}", why.join("; "))));
        }
        rec.result = "ok".into();
        if let Err(e) = self.audit_write(rec, need) {
            self.rec.set_blocks(before);
            let report = self.rec.reconcile_some(Some(&affected));
            for (c, why) in &report.failed {
                error!(container = %c, "taking back unrecorded block {}: {why}", block.id);
            }
            for (ns, why) in &self.contain.sync(&self.rec, Some(&affected)).failed {
                error!(netns = %ns, "taking back unrecorded block {} from the floor: {why}", block.id);
            }
            return Err(e);
        }
        let cut = self.cut_flows(&block, &affected);
        let mut list = self.rec.blocks().clone();
        if let Some(b) = list.get_mut(block.id) {
            b.flows_cut = cut;
        }
        self.rec.set_blocks(list.clone());
        if let Err(e) = self.state.write_blocks(&list) {
            error!("{e}");
            return Err((
                ErrorCode::Internal,
                format!("block {} is enforced but could not be saved: {e}", block.id),
            ));
        }
        let block = crate::blocks::Block { flows_cut: cut, ..block };
        let ttl = block.expires_ms.map_or_else(
            || "until unblocked".to_string(),
            |e| format!("for {} s", (e - block.created_ms) as f64 / 1000.0),
        );
        let why = block.reason.as_deref().map_or_else(String::new, |r| format!(": {r}"));
        self.alert(
            fw_proto::control::AlertKind::Blocked,
            block_container(&block.target),
            None,
            None,
            format!(
                "{} blocked {} {ttl} (block {}, {} container(s), {cut} flow(s) cut){why}",
                block.created_by,
                block.target,
                block.id,
                affected.len()
            ),
        );
        Ok(fw_proto::control::Answer::Blocked { block: block.info(affected.into_iter().collect()) })
    }

    /// Lifts a block: recorded first, since lifting opens traffic and must never happen
    /// unrecorded; then saved and applied.
    fn unblock(
        &mut self,
        id: u64,
        by: &str,
        rec: &mut fw_proto::control::AuditRecord,
    ) -> Result<fw_proto::control::Answer, (ErrorCode, String)> {
        let zones = self.rec.zones();
        let mut list = self.rec.blocks().clone();
        let block = list.remove(id).map_err(|e| (ErrorCode::NotFound, e.to_string()))?;
        rec.target = Some(block.target.to_string());
        rec.result = "ok".into();
        self.audit_write(rec, Need::Required)?;
        let affected: std::collections::BTreeSet<String> =
            zones.iter().filter(|(c, z)| block.applies_to(c, z)).map(|(c, _)| c.clone()).collect();
        if let Err(e) = self.state.write_blocks(&list) {
            // Recorded as done, then not done: say so in the trail too.
            let mut undo = rec.clone();
            undo.time_ms = now_ms();
            undo.result = format!("error: internal: not lifted after all: {e}");
            self.record(undo);
            return Err((ErrorCode::Internal, e.to_string()));
        }
        self.rec.set_blocks(list);
        let report = self.rec.reconcile_some(Some(&affected));
        if !report.failed.is_empty() {
            let why: Vec<String> = report.failed.iter().map(|(c, e)| format!("{c}: {e}")).collect();
            warn!("unblock {id}: {}", why.join("; "));
        }
        let floors = self.contain.sync(&self.rec, Some(&affected));
        for (ns, e) in &floors.failed {
            warn!("unblock {id}: floor in {ns}: {e}");
        }
        self.alert(
            fw_proto::control::AlertKind::Unblocked,
            block_container(&block.target),
            None,
            None,
            format!("{by} lifted block {id} on {}", block.target),
        );
        Ok(fw_proto::control::Answer::Unblocked { block: block.info(affected.into_iter().collect()) })
    }

    /// Deletes the conntrack entries a new block matches, by exact tuple: the set element
    /// already stops their packets; this also clears them from the table and the console.
    fn cut_flows(&self, block: &crate::blocks::Block, affected: &std::collections::BTreeSet<String>) -> u64 {
        let mut cut = 0;
        for c in self.rec.inventory().containers.iter().filter(|c| affected.contains(&c.name)) {
            let Some(ns) = &c.netns else { continue };
            let own = c.addresses.clone();
            let res = crate::flows::conntrack::CtControl::open(ns).and_then(|mut ct| {
                ct.delete_matching(|e| {
                    let o = &e.orig;
                    crate::blocks::cuts_flow(block, &own, o.proto, o.src, o.sport, o.dst, o.dport)
                })
            });
            match res {
                Ok(n) => cut += n,
                Err(e) => warn!(container = %c.name, error = %e, "block: deleting conntrack entries failed"),
            }
        }
        cut
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Removes what an older version left where fw never writes now: a `table bridge fw_guard`
/// (the MAC-keyed guard the floor replaces), and a `table inet fw` in the host's or the
/// daemon's own namespace (a container once thought to live there: it cuts the host).
/// Nothing is written where there is nothing to remove.
fn remove_leftovers() {
    use crate::ruleset::ir::{TableFamily, TABLE};
    for ns in ["/proc/self/ns/net", "/proc/1/ns/net"] {
        let Ok(mut nft) = crate::nft::Nft::open(Path::new(ns), "host namespace") else { continue };
        if nft.table_exists(TableFamily::Bridge, "fw_guard").unwrap_or(false) {
            match nft.flush_guard() {
                Ok(()) => {
                    info!(netns = ns, "removed the MAC-keyed guard of an older fw (the floor replaces it)")
                }
                Err(e) => warn!(netns = ns, error = %e, "removing the old host guard failed"),
            }
        }
        if nft.table_exists(TableFamily::Inet, TABLE).unwrap_or(false) {
            match nft.flush() {
                Ok(()) => warn!(netns = ns, "removed a table inet fw an older fw left in the host namespace"),
                Err(e) => {
                    error!(netns = ns, error = %e, "a table inet fw is in the host namespace and could not be removed")
                }
            }
        }
    }
}

/// Whether a change may go on without its audit record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// A request: refused (`audit-unavailable`) unless recorded.
    Required,
    /// The daemon's own action: goes on; a lost record is counted and alerted.
    BestEffort,
}

/// The record of a block that lapsed, dated when it did.
fn expire_record(b: &crate::blocks::Block, summary: Option<&str>) -> fw_proto::control::AuditRecord {
    fw_proto::control::AuditRecord {
        time_ms: b.expires_ms.unwrap_or_else(now_ms),
        peer: None,
        role: None,
        actor: None,
        op: "expire".into(),
        target: Some(b.target.to_string()),
        block: Some(b.id),
        reason: b.reason.clone(),
        ttl_secs: None,
        ttl_ms: b.expires_ms.map(|e| (e - b.created_ms).max(0) as u64),
        result: "ok".into(),
        policy_hash: None,
        summary: summary.map(str::to_string),
    }
}

/// The container a block names, if it names one.
fn block_container(t: &fw_proto::control::BlockTarget) -> Option<&str> {
    match t {
        fw_proto::control::BlockTarget::Quarantine { container, .. }
        | fw_proto::control::BlockTarget::Flow { container, .. } => Some(container),
        fw_proto::control::BlockTarget::Destination {
            scope: fw_proto::control::Scope::Container(c), ..
        } => Some(c),
        fw_proto::control::BlockTarget::Destination { .. } => None,
    }
}

/// A refused reload's alert: the count, the policy that stays, the first `path:line:col`.
fn refused_message(errors: &[String], stays: &str) -> String {
    format!(
        "rule files refused ({} error(s)); policy {stays} stays enforced: {}",
        error_count(errors),
        first_error(errors)
    )
}

/// How many errors `capped` lines stand for.
fn error_count(errors: &[String]) -> usize {
    let more = errors
        .last()
        .and_then(|l| l.strip_prefix("... and "))
        .and_then(|l| l.strip_suffix(" more"))
        .and_then(|n| n.parse::<usize>().ok());
    match more {
        Some(n) => errors.len() - 1 + n,
        None => errors.len(),
    }
}

/// The rule files as status shows them: relative to the rules directory when inside it.
fn file_names(dir: &Path, files: &[SourceFile]) -> Vec<String> {
    files.iter().map(|f| f.path.strip_prefix(dir).unwrap_or(&f.path).display().to_string()).collect()
}

/// A reload's audit summary: what the new policy holds and what the reload did.
fn summary(policy: &Policy, r: &Report) -> String {
    format!(
        "{} zones, {} policies; {} tables replaced, {} updated, {} unchanged, {} failed",
        policy.zones.len(),
        policy.rules.len(),
        r.replaced.len(),
        r.updated.len(),
        r.unchanged,
        r.failed.len()
    )
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
    Ok(crate::watch::watch(&cfg.rules, cfg.inventory.as_deref(), move |c| {
        let _ = tx.send(match c {
            crate::watch::Change::Rules => Event::Rules,
            crate::watch::Change::Inventory => Event::Inventory,
        });
    })?)
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
    // The socket is handed to its group with chown, which needs CAP_CHOWN: bind it first.
    let listener = match &cfg.socket {
        Some(path) => Some((crate::control::server::bind(path, Some(&cfg.socket_group))?, path.clone())),
        None => None,
    };
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
    forward("drift-fwd", crx, tx.clone(), Event::Drift)?;
    let (cmd_tx, cmd_rx) = mpsc::channel();
    forward("control-fwd", cmd_rx, tx.clone(), Event::Control)?;
    let group = cfg.socket_group.clone();
    let (mut d, initial) = Daemon::start(cfg)?;
    d.watch = Some(watch);
    let (vtx, vrx) = mpsc::channel();
    d.flows.set_inspection(crate::flows::collector::InspectConfig {
        queue: d.cfg.opts.inspect_queue,
        violations: vtx,
    });
    forward("inspect-fwd", vrx, tx.clone(), Event::Inspect)?;
    // Floors, change notifications and flow collectors (inspection included) follow.
    d.converged(&initial);
    if let Some((listener, path)) = listener {
        let server = crate::control::server::Server::new(
            d.cfg.roles.clone(),
            crate::control::Published { status: d.status_info(), blocks: d.block_infos() },
            d.flow_view(),
            d.audit.clone(),
            cmd_tx,
            d.alerts.clone(),
        );
        crate::control::server::spawn(listener, server.clone()).map_err(DaemonError::Signals)?;
        info!(socket = %path.display(), group = %group, "control socket ready");
        d.server = Some(server);
    }
    let mut last_resync = Instant::now();
    let mut last_drift_check = Instant::now();
    loop {
        match rx.recv_timeout(d.cfg.tick) {
            Ok(first) => {
                // Docker snapshots, notifications and commands need no settling; file edits do.
                let mut events = if matches!(
                    first,
                    Event::Docker(_) | Event::Drift(_) | Event::Control(_) | Event::Inspect(_)
                ) {
                    vec![first]
                } else {
                    settle(first, &rx)
                };
                events.extend(rx.try_iter());
                let drifted: std::collections::BTreeSet<String> = events
                    .iter()
                    .filter_map(|e| if let Event::Drift(n) = e { Some(n.clone()) } else { None })
                    .collect();
                if events.iter().any(|e| matches!(e, Event::Stop)) {
                    info!("stopping; enforcement stays in place (`fw-daemon flush` removes it)");
                    return Ok(());
                }
                if events.iter().any(|e| matches!(e, Event::Inventory | Event::Reload)) {
                    d.reload_inventory();
                }
                if events.iter().any(|e| matches!(e, Event::Rules | Event::Reload)) {
                    d.reload_rules();
                }
                let mut newest_docker = None;
                let mut commands = Vec::new();
                let mut violations = Vec::new();
                for e in events {
                    match e {
                        Event::Docker(u) => newest_docker = Some(u),
                        Event::Control(c) => commands.push(c),
                        Event::Inspect(v) => violations.push(v),
                        _ => {}
                    }
                }
                // Cuts first: the offending flow is live until its block lands.
                for v in violations {
                    d.on_violation(v);
                }
                // Commands next: a responder's block must not wait behind a reconcile.
                for c in commands {
                    d.command(c);
                }
                // Snapshots are complete: only the newest matters.
                if let Some(u) = newest_docker {
                    d.docker_update(u);
                }
                // A quarantined tamperer waits for the periodic check.
                let drifted: std::collections::BTreeSet<String> =
                    drifted.into_iter().filter(|n| !d.escalated(n)).collect();
                if !drifted.is_empty() {
                    d.restore_drift(Some(&drifted));
                }
                d.publish();
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        }
        // The periodic check, in case a notification was lost (socket overrun).
        if last_drift_check.elapsed() >= d.cfg.tick {
            // A broken trail clears as soon as it can be written again.
            if let Some(a) = &d.audit {
                if a.status().broken_since_ms.is_some() && a.retry() {
                    d.publish();
                }
            }
            d.restore_drift(None);
            d.alerts.flush_caps(now_ms());
            d.flush_tamper_alerts();
            last_drift_check = Instant::now();
        }
        if last_resync.elapsed() >= d.cfg.resync {
            d.resync();
            d.publish();
            last_resync = Instant::now();
        }
    }
}
