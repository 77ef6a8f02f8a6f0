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
    pub socket: Option<PathBuf>,
    pub socket_group: String,
    pub roles: crate::control::Roles,
    pub audit_log: Option<PathBuf>,
    pub max_flows: usize,
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
        let (cfg_max_flows, cfg_log_group) = (cfg.max_flows, cfg.opts.log_group);
        let state = StateDir::open(&cfg.state_dir)?;
        let mut status = Status::default();
        let alerts = Arc::new(crate::alerts::Alerts::default());
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
        let audit = match &cfg.audit_log {
            Some(p) => Some(Arc::new(crate::control::audit::AuditLog::open(p)?)),
            None => None,
        };
        // Blocks survive restarts; those that lapsed meanwhile already left the kernel.
        let mut blocks = state.read_blocks()?;
        let lapsed = blocks.expire(t);
        for b in &lapsed {
            info!(block = b.id, target = %b.target, "block expired while the daemon was down");
        }
        if !lapsed.is_empty() {
            state.write_blocks(&blocks)?;
        }
        if !blocks.active().is_empty() {
            info!(blocks = blocks.active().len(), "restoring operator blocks");
        }
        rec.set_blocks(blocks);
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
            server: None,
            audit,
            started: Instant::now(),
            flows: crate::flows::collector::Flows::new(cfg_max_flows, cfg_log_group, alerts.clone()),
            alerts,
            rule_files,
            last_reload_at: Some(t),
        })
    }

    fn reload_rules(&mut self) {
        let read = read_rules(&self.cfg.rules);
        self.reload_rules_from(read);
    }

    /// Reloads from rule files already read (the periodic check reads them to compare).
    fn reload_rules_from(&mut self, read: Result<Vec<SourceFile>, Vec<String>>) {
        let t = now();
        self.last_reload_at = Some(t);
        if let Ok(files) = &read {
            self.seen_rules = files.clone();
        }
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
                self.after_reconcile();
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
                        format!("error: {} error(s), the last good policy stays", errors.len()),
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
        self.expire_blocks();
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
        let restored = self.rec.verify_rules();
        self.tampered(&restored);
        self.rec.set_now(now());
        let report = self.rec.reconcile();
        if report != (Report { unchanged: report.unchanged, ..Report::default() }) {
            log_report("resync", &report);
        }
        self.after_reconcile();
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
        let mut rec = fw_proto::control::AuditRecord {
            time_ms: now_ms(),
            peer: None,
            role: None,
            actor: Some(by.clone()),
            op: String::new(),
            target: None,
            block: None,
            reason: Some(reason.clone()),
            ttl_secs: None,
            result: "ok".into(),
            policy_hash: None,
            summary: None,
        };
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
                if v.done.is_none() {
                    rec.result = "error: not cut in the kernel".into();
                }
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
                match self.block(target, None, Some(reason), by) {
                    Ok(fw_proto::control::Answer::Blocked { block }) => {
                        rec.block = Some(block.id);
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
                    }
                }
                self.record(rec);
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

    fn tampered(&self, restored: &[String]) {
        for name in restored {
            self.alert(
                fw_proto::control::AlertKind::Tamper,
                Some(name),
                None,
                None,
                format!("table inet fw in {name}'s namespace was changed outside fw; restored"),
            );
        }
    }

    fn record(&self, rec: fw_proto::control::AuditRecord) {
        if let Some(a) = &self.audit {
            if let Err(e) = a.append(&rec) {
                error!(error = %e, "audit log: record lost");
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
        let gone = list.expire(now());
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
            self.record(fw_proto::control::AuditRecord {
                time_ms: now_ms(),
                peer: None,
                role: None,
                actor: None,
                op: "expire".into(),
                target: Some(b.target.to_string()),
                block: Some(b.id),
                reason: b.reason.clone(),
                ttl_secs: None,
                result: "ok".into(),
                policy_hash: None,
                summary: None,
            });
        }
    }

    /// A state-changing request from the control socket: do it, audit it, answer it.
    fn command(&mut self, cmd: crate::control::Command) {
        use fw_proto::control::{Answer, ErrorCode, Op};
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
            result: String::new(),
            policy_hash: None,
            summary: None,
        };
        let by = format!("{} (uid {})", who.peer.user, who.peer.uid);
        let result: Result<Answer, (ErrorCode, String)> = match op {
            Op::Block { target, ttl_secs, reason } => {
                rec.target = Some(target.to_string());
                rec.reason = reason.clone();
                rec.ttl_secs = ttl_secs;
                self.block(target, ttl_secs, reason, by).inspect(|a| {
                    if let Answer::Blocked { block } = a {
                        rec.block = Some(block.id);
                    }
                })
            }
            Op::Unblock { block } => {
                rec.block = Some(block);
                self.unblock(block, &by).inspect(|a| {
                    if let Answer::Unblocked { block } = a {
                        rec.target = Some(block.target.to_string());
                    }
                })
            }
            Op::Reload => {
                self.reload_inventory();
                self.reload_rules();
                rec.policy_hash = Some(self.status.policy_hash.clone());
                Ok(Answer::Reloaded {
                    policy_hash: self.status.policy_hash.clone(),
                    rejected: self.status.rejected.clone(),
                })
            }
            other => Err((ErrorCode::BadRequest, format!("{} is not a command", other.name()))),
        };
        rec.result = match &result {
            Ok(_) => "ok".into(),
            Err((code, m)) => format!("error: {code}: {m}"),
        };
        // Audited before the answer: a client that saw "ok" can find the record.
        self.record(rec);
        self.publish();
        let _ = reply.send(result);
    }

    fn block(
        &mut self,
        target: fw_proto::control::BlockTarget,
        ttl: Option<u64>,
        reason: Option<String>,
        by: String,
    ) -> Result<fw_proto::control::Answer, (fw_proto::control::ErrorCode, String)> {
        use fw_proto::control::ErrorCode;
        let zones = self.rec.zones();
        let before = self.rec.blocks().clone();
        let mut list = before.clone();
        let block = match list.add(target, ttl, reason, by, now(), &zones) {
            Ok(b) => b.clone(),
            Err(e @ crate::blocks::BlockError::Overlap { .. }) => {
                return Err((ErrorCode::Conflict, e.to_string()))
            }
            Err(e) => return Err((ErrorCode::NotFound, e.to_string())),
        };
        let affected: std::collections::BTreeSet<String> =
            zones.iter().filter(|(c, z)| block.applies_to(c, z)).map(|(c, _)| c.clone()).collect();
        // Applied first, saved before the answer: the cut does not wait for an fsync, and a
        // block is acknowledged only once it will survive a restart.
        self.rec.set_blocks(list);
        let report = self.rec.reconcile_some(Some(&affected));
        if !report.failed.is_empty() {
            self.rec.set_blocks(before);
            self.rec.reconcile_some(Some(&affected));
            let why: Vec<String> = report.failed.iter().map(|(c, e)| format!("{c}: {e}")).collect();
            return Err((ErrorCode::Internal, format!("block not applied: {}", why.join("; "))));
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
        let ttl = ttl.map_or_else(|| "until unblocked".to_string(), |s| format!("for {s} s"));
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

    fn unblock(
        &mut self,
        id: u64,
        by: &str,
    ) -> Result<fw_proto::control::Answer, (fw_proto::control::ErrorCode, String)> {
        use fw_proto::control::ErrorCode;
        let zones = self.rec.zones();
        let mut list = self.rec.blocks().clone();
        let block = list.remove(id).map_err(|e| (ErrorCode::NotFound, e.to_string()))?;
        let affected: std::collections::BTreeSet<String> =
            zones.iter().filter(|(c, z)| block.applies_to(c, z)).map(|(c, _)| c.clone()).collect();
        self.state.write_blocks(&list).map_err(|e| (ErrorCode::Internal, e.to_string()))?;
        self.rec.set_blocks(list);
        let report = self.rec.reconcile_some(Some(&affected));
        if !report.failed.is_empty() {
            let why: Vec<String> = report.failed.iter().map(|(c, e)| format!("{c}: {e}")).collect();
            warn!("unblock {id}: {}", why.join("; "));
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
    let first = errors.first().and_then(|e| e.lines().next()).unwrap_or("no detail");
    format!("rule files refused ({} error(s)); policy {stays} stays enforced: {first}", errors.len())
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
    let mut d = Daemon::start(cfg)?;
    d.watch = Some(watch);
    let (vtx, vrx) = mpsc::channel();
    d.flows.set_inspection(crate::flows::collector::InspectConfig {
        queue: d.cfg.opts.inspect_queue,
        violations: vtx,
    });
    forward("inspect-fwd", vrx, tx.clone(), Event::Inspect)?;
    d.after_reconcile();
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
            d.restore_drift(None);
            d.alerts.flush_caps(now_ms());
            last_drift_check = Instant::now();
        }
        if last_resync.elapsed() >= d.cfg.resync {
            d.resync();
            d.publish();
            last_resync = Instant::now();
        }
    }
}
