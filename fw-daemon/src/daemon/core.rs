//! The daemon's state and what it does with each event. One owner (the event loop) calls
//! it; it owns the sources, the enforcer (every table), the block lifecycle's inputs and
//! what readers see. The kernel and the clock are injected, so the whole of it runs on the
//! fake kernel in unprivileged tests.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use fw_proto::control::{AlertKind, Answer, AuditOp, AuditRecord, AuditResult, ErrorCode, Op};
use tracing::{error, info, warn};

use crate::clock::Clock;
use crate::discovery::docker;
use crate::kernel::Kernel;
use crate::reconcile::{Reconciler, Report};
use crate::state::StateDir;

use super::block_service::{expire_record, Blocks};
use super::enforcer::{log_report, Enforcer};
use super::sources::{error_count, refused_message, InventoryOutcome, RulesOutcome, Sources};
use super::trail::{Need, Trail};
use super::{Config, DaemonError, Event, Notice};

/// What the daemon runs on.
#[derive(Clone)]
pub struct Deps {
    pub kernel: Arc<dyn Kernel>,
    pub clock: Arc<dyn Clock>,
    /// Start flow collectors on programmed namespaces (real kernels only).
    pub collect_flows: bool,
}

impl Deps {
    /// This machine.
    pub fn real() -> Deps {
        Deps { kernel: crate::kernel::real(), clock: crate::clock::system(), collect_flows: true }
    }

    /// This machine, programming the daemon's own namespace (`--self`).
    pub fn own_namespace() -> Deps {
        Deps { kernel: Arc::new(crate::kernel::Real { own_namespace: true }), ..Deps::real() }
    }
}

pub struct Core {
    pub(super) cfg: Config,
    clock: Arc<dyn Clock>,
    state: StateDir,
    pub(super) sources: Sources,
    pub(super) enf: Enforcer,
    pub(super) trail: Trail,
    pub(super) alerts: Arc<crate::alerts::Alerts>,
    pub(super) server: Option<Arc<crate::control::server::Server>>,
}

/// A reload's audit summary: what the new policy holds and what the reload did.
fn summary(policy: &crate::rules::Policy, r: &Report) -> String {
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

/// Removes what an older version left where fw never writes now: a `table bridge fw_guard`
/// (the MAC-keyed guard the floor replaces), and a `table inet fw` in the host's or the
/// daemon's own namespace (a container once thought to live there: it cuts the host).
/// Nothing is written where there is nothing to remove.
fn remove_leftovers(kernel: &dyn Kernel) {
    use crate::ruleset::ir::{TableFamily, TABLE};
    for ns in ["/proc/self/ns/net", "/proc/1/ns/net"] {
        let Ok(mut nft) = kernel.tables(std::path::Path::new(ns), "host namespace") else { continue };
        if nft.table_exists(TableFamily::Bridge, "fw_guard").unwrap_or(false) {
            match nft.flush_table(TableFamily::Bridge, "fw_guard") {
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

impl Core {
    /// Loads the policy and the inventory and programs every namespace; the caller finishes
    /// with [`Core::converged`] on the returned report once the flow collectors know what
    /// to listen to (inspection included).
    pub fn start(cfg: Config, deps: Deps) -> Result<(Core, Report), DaemonError> {
        let Deps { kernel, clock, collect_flows } = deps;
        let state = StateDir::open(&cfg.state_dir)?;
        let alerts = Arc::new(crate::alerts::Alerts::default());
        let t = clock.now_secs();
        let start = Sources::start(&cfg, &state, t)?;
        for n in start.notices {
            n.raise(&alerts);
        }
        let mut opts = cfg.opts.clone();
        opts.now = t;
        let mut rec = Reconciler::with_kernel(start.policy, start.inventory, opts, kernel.clone());
        let trail = Trail::new(cfg.audit_log.as_deref().map(|p| {
            Arc::new(crate::control::audit::AuditLog::open_rotating(
                p,
                cfg.audit_rotation,
                Some(alerts.clone()),
            ))
        }));
        // Blocks survive restarts; those that lapsed meanwhile already left the kernel, and
        // get their record now, dated when they expired.
        let mut blocks = state.read_blocks()?;
        let lapsed = blocks.expire(clock.now_ms());
        for b in &lapsed {
            info!(block = b.id, target = %b.target, "block expired while the daemon was down");
            trail.record(&expire_record(
                b,
                Some("expired while fw-daemon was not running; recorded at start"),
                clock.now_ms(),
            ));
        }
        if !lapsed.is_empty() {
            state.write_blocks(&blocks)?;
        }
        if !blocks.active().is_empty() {
            info!(blocks = blocks.active().len(), "restoring operator blocks");
        }
        rec.set_blocks(blocks);
        if !cfg.own_namespace {
            remove_leftovers(&*kernel);
        }
        // Replacing an existing table is one atomic batch, so adopting the tables of a
        // previous run never opens a window.
        let report = rec.reconcile();
        log_report("initial reconcile", &report);
        state.write_status(&start.sources.status)?;
        info!(policy = %start.sources.status.policy_hash, containers = rec.programmed().count(), "enforcing");
        let mut contain_cfg = cfg.containment.clone();
        if cfg.docker.is_some() && cfg.unknown_containers == crate::config::Unknown::Deny {
            // Docker's bridges are in the namespace the daemon runs in with it (the host's):
            // its floor cuts every `veth` port fw has not programmed, daemon running or not.
            contain_cfg.guard = Some((PathBuf::from("/proc/self/ns/net"), vec!["veth".into()]));
        }
        let mut contain = crate::containment::Containment::with_kernel(contain_cfg, kernel);
        if !contain.guard_exists() {
            // A first start: no floor a previous run left to hold on to. Cut every
            // unidentified port now; Docker's snapshot admits them as they are programmed.
            contain.release_guard();
        }
        let rt = crate::runtime::handle().map_err(DaemonError::Signals)?;
        let flows =
            crate::flows::collector::Flows::new(cfg.max_flows, cfg.opts.log_group, alerts.clone(), rt);
        let enf = Enforcer::new(rec, contain, flows, collect_flows, clock.clone());
        let core = Core { cfg, clock, state, sources: start.sources, enf, trail, alerts, server: None };
        Ok((core, report))
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    pub fn enforcer(&self) -> &Enforcer {
        &self.enf
    }

    pub fn alerts(&self) -> &Arc<crate::alerts::Alerts> {
        &self.alerts
    }

    pub fn flows(&self) -> &Arc<crate::flows::collector::Flows> {
        &self.enf.flows
    }

    pub fn set_watch(&mut self, sink: super::enforcer::WatchSink) {
        self.enf.set_watch(sink);
    }

    /// Raises alerts: published first, so a reader who sees an alert and asks for status
    /// sees its cause.
    fn notify(&self, notices: Vec<Notice>) {
        if notices.is_empty() {
            return;
        }
        self.publish();
        for n in notices {
            n.raise(&self.alerts);
        }
    }

    /// What follows every reconcile pass (see [`Enforcer::converged`]).
    pub fn converged(&mut self, report: &Report) {
        let n = self.enf.converged(report);
        self.notify(n);
    }

    fn blocks(&mut self) -> Blocks<'_> {
        Blocks { enf: &mut self.enf, state: &self.state, trail: &self.trail, clock: &*self.clock }
    }

    /// Handles what arrived together. Returns `false` when the daemon must stop.
    pub fn handle(&mut self, events: Vec<Event>) -> bool {
        if events.iter().any(|e| matches!(e, Event::Stop)) {
            info!("stopping; enforcement stays in place (`fw-daemon flush` removes it)");
            return false;
        }
        let drifted: BTreeSet<String> = events
            .iter()
            .filter_map(|e| if let Event::Drift(n) = e { Some(n.clone()) } else { None })
            .collect();
        if events.iter().any(|e| matches!(e, Event::Inventory | Event::Reload)) {
            self.reload_inventory();
        }
        if events.iter().any(|e| matches!(e, Event::Rules | Event::Reload)) {
            self.reload_rules();
        }
        let mut newest_docker = None;
        let mut newest_cri = None;
        let mut newest_kube = None;
        let mut commands = Vec::new();
        let mut violations = Vec::new();
        for e in events {
            match e {
                Event::Docker(u) => newest_docker = Some(u),
                Event::Cri(u) => newest_cri = Some(u),
                Event::Kube(u) => newest_kube = Some(u),
                Event::Control(c) => commands.push(c),
                Event::Inspect(v) => violations.push(v),
                _ => {}
            }
        }
        // Cuts first: the offending flow is live until its block lands.
        for v in violations {
            self.on_violation(v);
        }
        // Commands next: a responder's block must not wait behind a reconcile.
        for c in commands {
            self.command(c);
        }
        // Snapshots are complete: only the newest matters.
        if let Some(u) = newest_docker {
            self.docker_update(u);
        }
        if let Some(u) = newest_cri {
            self.cri_update(u);
        }
        if let Some(u) = newest_kube {
            match u {
                crate::discovery::kube::Update::Snapshot { namespaces, remote, services, local_labels } => {
                    if let Some(inv) = self.sources.kube(namespaces, remote, services, local_labels) {
                        let n = self.enf.membership_changed(
                            inv,
                            "kubernetes namespaces, remote pods or services changed",
                        );
                        self.notify(n);
                    }
                }
                crate::discovery::kube::Update::Unavailable(why) => {
                    tracing::debug!("kubernetes API unavailable: {why}")
                }
            }
        }
        // A quarantined tamperer waits for the periodic check.
        let drifted: BTreeSet<String> = drifted.into_iter().filter(|n| !self.enf.escalated(n)).collect();
        if !drifted.is_empty() {
            let (n, escalate) = self.enf.restore_drift(Some(&drifted));
            self.notify(n);
            self.escalate(escalate);
        }
        self.publish();
        true
    }

    fn escalate(&mut self, names: Vec<String>) {
        for name in names {
            let n = self.blocks().escalate(&name);
            self.notify(n);
        }
    }

    /// The periodic check, in case a notification was lost (socket overrun).
    pub fn tick(&mut self) {
        // A broken trail clears as soon as it can be written again.
        if let Some(a) = self.trail.log() {
            if a.status().broken_since_ms.is_some() && a.retry() {
                self.publish();
            }
        }
        let (n, escalate) = self.enf.restore_drift(None);
        self.notify(n);
        self.escalate(escalate);
        self.alerts.flush_caps(self.clock.now_ms());
        let n = self.enf.flush_tamper_alerts();
        self.notify(n);
    }

    /// Catches changes the watcher missed, and lets expiries take effect.
    pub fn resync(&mut self) {
        let n = self.blocks().expire();
        self.notify(n);
        if let Some(pod_info) = &self.cfg.pod_info {
            // A refused re-read keeps the identity last written (and enforced).
            match crate::discovery::own::refresh_inventory(pod_info, &self.cfg.state_dir) {
                Ok((id, _, true)) => {
                    info!(pod = %id.name, labels = ?id.labels, "sidecar mode: the pod's downward API changed")
                }
                Ok(_) => {}
                Err(e) => warn!("sidecar mode: re-reading the pod's downward API: {e}"),
            }
        }
        let (rules, inv) = self.sources.backstop();
        if let Some(read) = rules {
            self.reload_rules_from(read);
        }
        if let Some(text) = inv {
            self.reload_inventory_from(text);
        }
        let (n, escalate) = self.enf.verify();
        self.notify(n);
        self.escalate(escalate);
        let n = self.enf.resync(self.clock.now_secs());
        self.notify(n);
        self.publish();
    }

    pub fn reload_rules(&mut self) {
        let read = self.sources.read_rules();
        self.reload_rules_from(read);
    }

    /// Reloads from rule files already read (the periodic check reads them to compare).
    fn reload_rules_from(&mut self, read: super::sources::RulesRead) {
        let t = self.clock.now_secs();
        match self.sources.rules(read, t) {
            RulesOutcome::Accepted { policy, files, changed, recovered } => {
                let (report, mut notices) = self.enf.set_policy(policy.clone(), t, changed);
                if changed {
                    self.audit_reload(Some(&policy.hash), AuditResult::Ok, Some(summary(&policy, &report)));
                }
                if let Err(e) = self.state.save_last_good(&files) {
                    error!("{e}");
                }
                self.sources.enforced(&policy, &files, t);
                if changed || recovered {
                    let what = if changed { "new policy" } else { "rule files fixed: policy" };
                    notices.push(Notice::new(
                        AlertKind::Reload,
                        format!("{what} {} enforced ({})", policy.hash, summary(&policy, &report)),
                    ));
                }
                self.notify(notices);
            }
            RulesOutcome::Refused { errors, new } => {
                if new {
                    self.audit_reload(
                        None,
                        AuditResult::Error(format!(
                            "{} error(s), the last good policy stays",
                            error_count(&errors)
                        )),
                        errors.first().cloned(),
                    );
                    let msg = refused_message(&errors, &self.sources.status.policy_hash);
                    self.notify(vec![Notice::new(AlertKind::ReloadFailed, msg)]);
                }
            }
        }
        if let Err(e) = self.state.write_status(&self.sources.status) {
            error!("{e}");
        }
    }

    pub fn reload_inventory(&mut self) {
        let text = self.sources.read_inventory();
        self.reload_inventory_from(text);
    }

    fn reload_inventory_from(&mut self, text: super::sources::InventoryRead) {
        match self.sources.inventory(text, &self.state) {
            InventoryOutcome::NoFile => {}
            InventoryOutcome::Changed(inv) => {
                let n = self.enf.membership_changed(inv, "inventory changed");
                self.notify(n);
            }
            InventoryOutcome::Refused { errors, new } => {
                if new {
                    let msg = self.sources.inventory_refused_message(&errors);
                    self.notify(vec![Notice::new(AlertKind::InventoryFailed, msg)]);
                }
            }
        }
    }

    fn docker_update(&mut self, u: docker::Update) {
        match u {
            docker::Update::Snapshot(found) => {
                let (changed, first) = self.sources.docker(found.into_iter().map(|(c, _)| c).collect());
                if first {
                    // Docker's picture is complete: the host's floor may now be written
                    // (until here it stayed as a previous run left it).
                    self.enf.contain.release_guard();
                }
                let n = match changed {
                    Some(inv) => self.enf.membership_changed(inv, "docker containers changed"),
                    None => self.enf.converged(&Report::default()),
                };
                self.notify(n);
            }
            // Keep enforcing what we know; the source logs and retries by itself.
            docker::Update::Unavailable(why) => tracing::debug!("docker unavailable: {why}"),
        }
    }

    fn cri_update(&mut self, u: crate::discovery::cri::Update) {
        use crate::discovery::cri::Update;
        match u {
            Update::Snapshot { pods, skipped } => {
                let (changed, new_skips) = self.sources.cri(pods, skipped);
                let mut n = match changed {
                    Some(inv) => self.enf.membership_changed(inv, "pods changed"),
                    None => Vec::new(),
                };
                n.extend(new_skips.into_iter().map(|s| {
                    Notice::new(AlertKind::Unenforced, format!("pod {} is not programmed: {}", s.pod, s.why))
                }));
                self.notify(n);
            }
            Update::Unavailable(why) => tracing::debug!("cri runtime unavailable: {why}"),
        }
    }

    /// A state-changing request from the control socket: do it, audit it, answer it.
    /// Nothing a request changes stays unless its record is on disk: block, unblock and
    /// reload write it themselves, at the point that keeps that true; a request refused for
    /// any other reason is recorded here, with the reason the operator gave.
    pub fn command(&mut self, cmd: crate::control::Command) {
        let crate::control::Command { op, who, role, reply } = cmd;
        let mut rec = AuditRecord {
            time_ms: self.clock.now_ms(),
            peer: Some(who.peer.clone()),
            role: Some(role),
            actor: None,
            op: AuditOp::of(&op),
            target: None,
            path: None,
            block: None,
            reason: None,
            ttl_ms: None,
            result: AuditResult::unfinished(),
            policy_hash: None,
            summary: None,
        };
        let by = format!("{} (uid {})", who.peer.user, who.peer.uid);
        let result: Result<Answer, (ErrorCode, String)> = match op {
            Op::Block { target, ttl_secs, ttl_ms, reason } => {
                rec.target = Some(target.clone());
                rec.reason = reason.clone();
                rec.ttl_ms = ttl_ms.or(ttl_secs.map(|s| s.saturating_mul(1000)));
                match crate::blocks::Ttl::from_request(ttl_secs, ttl_ms) {
                    Ok(ttl) => {
                        // A block whose time is up is gone from the kernel already: it must
                        // not refuse this one as a duplicate while waiting for the resync.
                        let n = self.blocks().expire();
                        self.notify(n);
                        let by = crate::blocks::By::operator(by.clone());
                        let (r, n) = self.blocks().block(target, ttl, reason, by, &mut rec, Need::Required);
                        self.notify(n);
                        r
                    }
                    Err(e) => Err((ErrorCode::BadRequest, e.to_string())),
                }
            }
            Op::Unblock { block } => {
                rec.block = Some(block);
                let (r, n) = self.blocks().unblock(block, &by, &mut rec);
                self.notify(n);
                r
            }
            Op::Reload => {
                rec.path = Some(self.cfg.rules.display().to_string());
                rec.reason = Some("requested over the control socket".into());
                rec.result = AuditResult::Ok;
                self.trail.write(&rec, Need::Required).map(|()| {
                    self.reload_inventory();
                    self.reload_rules();
                    Answer::Reloaded {
                        policy_hash: self.sources.status.policy_hash.clone(),
                        rejected: self.sources.status.rejected.clone(),
                    }
                })
            }
            other => Err((ErrorCode::BadRequest, format!("{} is not a command", other.name()))),
        };
        match &result {
            // The trail is what failed: writing the refusal there would fail too.
            Err((ErrorCode::AuditUnavailable, _)) => {}
            Err((code, m)) => {
                rec.result = AuditResult::failed(*code, m);
                self.trail.record(&rec);
            }
            Ok(_) => {}
        }
        self.publish();
        let _ = reply.send(result);
    }

    /// Acts on an inspection violation. The flow itself was already dealt with in the kernel
    /// before its offending bytes went anywhere (`flows/inline.rs`: let through for `alert`,
    /// dropped and reset at both ends for `cut` and `quarantine`); here it is made known: an
    /// alert always, an audit record of a cut, and for `quarantine` the container's block.
    /// Automatic actions are audited like an operator's, with the daemon's part as the actor.
    pub fn on_violation(&mut self, v: crate::flows::inspection::Violation) {
        use crate::rules::model::OnViolation;
        use fw_proto::control::{BlockDirection, BlockTarget};
        let f = &v.flow;
        let by = format!("fw-daemon inspection (policy {})", v.rule.id);
        let reason = format!("inspection: policy {}: {}", v.rule.id, v.reason);
        let op = if matches!(v.on, OnViolation::Quarantine) { AuditOp::Block } else { AuditOp::Cut };
        let mut rec = self.trail.own_record(op, None, Some(&reason), &*self.clock);
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
                rec.target = Some(flow.clone());
                rec.result = match v.done {
                    Some(_) => AuditResult::Ok,
                    None => AuditResult::Error("not cut in the kernel".into()),
                };
                self.trail.record(&rec);
                info!(after_ms = self.clock.now_ms() - v.seen_ms, "inspection: flow cut");
            }
            OnViolation::Quarantine => {
                let target = BlockTarget::Quarantine {
                    container: v.container.clone(),
                    direction: BlockDirection::Both,
                };
                rec.target = Some(target.clone());
                // The daemon's own action: it stands even when the trail cannot record it
                // (`block` writes the record).
                let by = crate::blocks::By { name: by, origin: fw_proto::control::BlockOrigin::Inspection };
                let (r, n) = self.blocks().block(target, None, Some(reason), by, &mut rec, Need::BestEffort);
                match r {
                    Ok(Answer::Blocked { block }) => {
                        outcome = format!(" [block {}]", block.id);
                        info!(
                            block = block.id,
                            after_ms = self.clock.now_ms() - v.seen_ms,
                            "inspection: container quarantined"
                        );
                    }
                    Ok(_) => {}
                    Err((code, m)) => {
                        rec.result = AuditResult::failed(code, &m);
                        outcome = format!(" [not applied: {m}]");
                        self.trail.record(&rec);
                    }
                }
                self.notify(n);
            }
        }
        let mut notice =
            Notice::new(AlertKind::Violation, format!("{}{outcome}", v.message())).about(&v.container);
        notice.rule = Some(v.rule.clone());
        notice.flow = v.row;
        self.notify(vec![notice]);
    }

    fn audit_reload(&self, hash: Option<&str>, result: AuditResult, summary: Option<String>) {
        let mut rec = self.trail.own_record(AuditOp::Reload, None, Some("rule files changed"), &*self.clock);
        rec.path = Some(self.cfg.rules.display().to_string());
        rec.result = result;
        rec.policy_hash = hash.map(str::to_string);
        rec.summary = summary;
        self.trail.record(&rec);
    }

    pub fn status_info(&self) -> fw_proto::control::StatusInfo {
        super::status::status_info(&self.enf, &self.sources, &self.trail, self.clock.monotonic())
    }

    pub fn block_infos(&self) -> Vec<fw_proto::control::BlockInfo> {
        super::status::block_infos(&self.enf)
    }

    /// What readers of the control socket see; refreshed after every change.
    pub fn publish(&self) {
        let Some(srv) = &self.server else { return };
        srv.publish(crate::control::Published { status: self.status_info(), blocks: self.block_infos() });
    }
}
