//! The kernel side of the daemon: every namespace's table (the reconciler), the floors,
//! first-instant flushes and revocation (containment), drift repair and what follows every
//! pass (change notifications and flow collectors on exactly the programmed namespaces).
//! It decides and commits; what people must hear about comes back as [`Notice`]s.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use fw_proto::control::{AlertKind, BlockDirection, BlockTarget};
use tracing::{error, info, warn};

use crate::alerts::CapLimiter;
use crate::clock::Clock;
use crate::containment::Containment;
use crate::inventory::Inventory;
use crate::reconcile::{Reconciler, Report};
use crate::rules::Policy;

use super::Notice;

/// Who places a tamper quarantine (audit records, `blocks`).
pub const TAMPER_ACTOR: &str = "fw-daemon tamper escalation";

pub fn tamper_message(name: &str, n: u64) -> String {
    let times = if n > 1 { format!(" ({n} restores in the last 10 s)") } else { String::new() };
    format!("table inet fw in {name}'s namespace was changed outside fw; restored{times}")
}

pub fn log_report(what: &str, r: &Report) {
    info!(
        replaced = r.replaced.len(),
        updated = r.updated.len(),
        unchanged = r.unchanged,
        forgotten = r.forgotten.len(),
        failed = r.failed.len(),
        "{what}"
    );
}

/// Tells the change-notification watcher which namespaces to listen to.
pub type WatchSink = Box<dyn FnMut(crate::drift_watch::Cmd) + Send>;

pub struct Enforcer {
    pub rec: Reconciler,
    pub contain: Containment,
    pub flows: Arc<crate::flows::collector::Flows>,
    /// Start collectors on programmed namespaces (off where there is no real kernel).
    collect_flows: bool,
    watch: Option<WatchSink>,
    watched: BTreeMap<String, PathBuf>,
    /// Containers reported as not (fully) enforced, and why (alerted once per change).
    unenforced: BTreeMap<String, String>,
    /// One tamper alert per container per 10 s, with the count.
    tamper_alerts: CapLimiter,
    clock: Arc<dyn Clock>,
}

impl Enforcer {
    pub fn new(
        rec: Reconciler,
        contain: Containment,
        flows: Arc<crate::flows::collector::Flows>,
        collect_flows: bool,
        clock: Arc<dyn Clock>,
    ) -> Enforcer {
        Enforcer {
            rec,
            contain,
            flows,
            collect_flows,
            watch: None,
            watched: BTreeMap::new(),
            unenforced: BTreeMap::new(),
            tamper_alerts: CapLimiter::new(std::time::Duration::from_secs(10)),
            clock,
        }
    }

    pub fn set_watch(&mut self, sink: WatchSink) {
        self.watch = Some(sink);
    }

    /// Why a container is not fully enforced, if it is not.
    pub fn unenforced(&self, name: &str) -> Option<&String> {
        self.unenforced.get(name)
    }

    /// What follows every reconcile pass: fresh namespaces flushed, then admitted by the
    /// floors; change notifications and flow collectors on the programmed namespaces.
    pub fn converged(&mut self, report: &Report) -> Vec<Notice> {
        let floors = self.contain.converge(&self.rec, report);
        for (ns, e) in &floors.failed {
            error!(netns = %ns, error = %e, "floor not programmed");
        }
        self.sync_watch();
        self.sync_flows();
        self.report_unenforced()
    }

    /// Deletes the established flows the current tables deny, in these namespaces
    /// (owners), and says so in the log.
    pub fn revoke(&mut self, namespaces: &BTreeSet<String>, why: &str) {
        let n = self.contain.revoke(&self.rec, namespaces);
        if n > 0 {
            info!(flows = n, "{why}: established flows the policy now denies were cut");
        }
    }

    /// Every programmed namespace, by owner.
    pub fn all_programmed(&self) -> BTreeSet<String> {
        self.rec.programmed_netns().map(|(n, _)| n.to_string()).collect()
    }

    /// A new policy, enforced everywhere (and the flows it denies cut when it is another
    /// policy than the one before).
    pub fn set_policy(&mut self, policy: Arc<Policy>, now: i64, changed: bool) -> (Report, Vec<Notice>) {
        self.rec.set_now(now);
        self.rec.set_policy(policy);
        let report = self.rec.reconcile();
        log_report("reload", &report);
        let notices = self.converged(&report);
        if changed {
            // What the new policy denies stops now, established or not.
            let all = self.all_programmed();
            self.revoke(&all, "reload");
        }
        (report, notices)
    }

    /// A new inventory (file or Docker): reconciled, floors and flows follow, and the flows
    /// it now denies are cut: in every namespace when an address moved between zones, else
    /// in the namespaces whose table was rebuilt.
    pub fn membership_changed(&mut self, inv: Inventory, what: &str) -> Vec<Notice> {
        let zone_of_addr = |rec: &Reconciler| -> BTreeMap<std::net::IpAddr, String> {
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
        let kernel = self.rec.kernel().clone();
        let changed: Vec<crate::floor::link::NsId> = inv
            .containers
            .iter()
            .filter(|c| self.rec.inventory().get(&c.name) != Some(*c))
            .filter_map(|c| c.netns.as_ref())
            .filter_map(|p| kernel.netns_id(p).ok())
            .collect();
        self.contain.forget_links(changed);
        self.rec.set_inventory(inv);
        let after = zone_of_addr(&self.rec);
        let report = self.rec.reconcile();
        log_report(what, &report);
        let notices = self.converged(&report);
        let moved = before.iter().any(|(a, z)| after.get(a).is_some_and(|z2| z2 != z));
        let scope: BTreeSet<String> = if moved {
            self.all_programmed()
        } else {
            report.replaced.iter().filter(|n| !report.fresh.contains(n)).cloned().collect()
        };
        if !scope.is_empty() {
            self.revoke(&scope, what);
        }
        notices
    }

    /// The periodic pass: expiries take effect (a policy that expired stops, and what it
    /// allowed is cut).
    pub fn resync(&mut self, now: i64) -> Vec<Notice> {
        self.rec.set_now(now);
        let report = self.rec.reconcile();
        if report != (Report { unchanged: report.unchanged, ..Report::default() }) {
            log_report("resync", &report);
        }
        let notices = self.converged(&report);
        if !report.replaced.is_empty() {
            let scope = report.replaced.iter().filter(|n| !report.fresh.contains(n)).cloned().collect();
            self.revoke(&scope, "expiry");
        }
        notices
    }

    /// Alerts once per container for what cannot be enforced about it: no table (its
    /// namespace is the host's), or no floor (no host side found).
    fn report_unenforced(&mut self) -> Vec<Notice> {
        let mut now_unenforced = BTreeMap::new();
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
        let mut notices = Vec::new();
        for (name, msg) in &now_unenforced {
            if self.unenforced.get(name) != Some(msg) {
                warn!(container = %name, "{msg}");
                notices.push(Notice::new(AlertKind::Unenforced, msg.clone()).about(name));
            }
        }
        self.unenforced = now_unenforced;
        notices
    }

    /// Keeps the change-notification watcher on exactly the programmed namespaces.
    fn sync_watch(&mut self) {
        let Some(w) = self.watch.as_mut() else { return };
        let now: BTreeMap<String, PathBuf> =
            self.rec.programmed_netns().map(|(n, p)| (n.to_string(), p.to_path_buf())).collect();
        for (name, ns) in &now {
            if self.watched.get(name) != Some(ns) {
                w(crate::drift_watch::Cmd::Watch(name.clone(), ns.clone()));
            }
        }
        for name in self.watched.keys().filter(|n| !now.contains_key(*n)) {
            w(crate::drift_watch::Cmd::Unwatch(name.clone()));
        }
        self.watched = now;
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
        if self.collect_flows {
            let programmed =
                self.rec.programmed_netns().map(|(n, p)| (n.to_string(), p.to_path_buf())).collect();
            self.flows.sync(&programmed);
        }
    }

    /// Puts back every table changed outside fw (of `only`, or all); returns the names
    /// restored, alerts (rate-limited per container) and those to escalate.
    pub fn restore_drift(&mut self, only: Option<&BTreeSet<String>>) -> (Vec<Notice>, Vec<String>) {
        let restored = self.rec.restore_drift_in(only);
        self.tampered(&restored)
    }

    /// The periodic backstop: rules compared with what fw wrote (a change can hide behind
    /// the generation id), and the floors checked.
    pub fn verify(&mut self) -> (Vec<Notice>, Vec<String>) {
        let restored = self.rec.verify_rules();
        let (mut notices, escalate) = self.tampered(&restored);
        for ns in self.contain.verify() {
            notices.push(Notice::new(
                AlertKind::Tamper,
                format!("the host-side floor in {} was changed outside fw; restored", ns.display()),
            ));
        }
        (notices, escalate)
    }

    fn tampered(&mut self, restored: &[String]) -> (Vec<Notice>, Vec<String>) {
        let mut notices = Vec::new();
        let mut escalate = Vec::new();
        let now = self.clock.now_ms();
        for name in restored {
            // One alert per container per window (with the count): a tamperer must not be
            // able to flush every other alert out of the ring.
            if let Some(n) = self.tamper_alerts.hit(name, "tamper", now) {
                notices.push(Notice::new(AlertKind::Tamper, tamper_message(name, n)).about(name));
            }
            if self.contain.repaired(name, self.clock.monotonic()) && !self.escalated(name) {
                escalate.push(name.clone());
            }
        }
        (notices, escalate)
    }

    /// The tamper alerts the limiter held back, now that their window passed.
    pub fn flush_tamper_alerts(&mut self) -> Vec<Notice> {
        self.tamper_alerts
            .flush(self.clock.now_ms())
            .into_iter()
            .map(|((name, _), n)| Notice::new(AlertKind::Tamper, tamper_message(&name, n)).about(&name))
            .collect()
    }

    /// Whether `name` sits in a tamper quarantine: its table is then restored on the
    /// periodic check only, so a tamperer cannot keep the daemon busy.
    pub fn escalated(&self, name: &str) -> bool {
        self.rec.blocks().active().iter().any(|b| {
            b.created_by == TAMPER_ACTOR
                && matches!(&b.target, BlockTarget::Quarantine { container, direction: BlockDirection::Both } if container == name)
        })
    }

    /// Whether `name` is quarantined both ways already (by anyone).
    pub fn quarantined_both(&self, name: &str) -> bool {
        self.rec.blocks().active().iter().any(|b| {
            matches!(&b.target, BlockTarget::Quarantine { container, direction: BlockDirection::Both } if container == name)
        })
    }
}
