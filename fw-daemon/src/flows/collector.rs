//! Feeds the flow table from the kernel: per programmed container, one thread reads
//! conntrack events (after an initial dump) and one reads NFLOG records, each on sockets
//! opened inside the container's namespace. A socket overrun (ENOBUFS) is counted as lost
//! events and answered with a fresh dump. Threads stop (closing their sockets, which
//! releases the namespace) when the container is forgotten.
//!
//! The table's questions about containers, peers and rules are answered by `FlowContext`,
//! a value the daemon rebuilds after every reconcile.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fw_proto::control::{Direction, FlowFilter, FlowSnapshot, FlowVerdict, Proto};
use fw_proto::RuleRef;
use tracing::{debug, warn};

use super::conntrack::{self, CtControl, CtError, CtEvents, CtKind};
use super::inline::{self, Inline};
use super::inspection::{self, TapStats, Violation};
use super::nflog::Nflog;
use super::table::{Context, FlowTable};
use crate::control::{FlowChanges, FlowView};
use crate::inspect::Inspector;
use crate::ruleset::eval::{self, Packet};
use crate::ruleset::ir::Hook;
use crate::ruleset::Ruleset;

/// Conntrack event socket buffer: at ~45k new flows/s the default loses a fifth.
const CT_RCVBUF: usize = 32 << 20;
const LOG_RCVBUF: usize = 4 << 20;
const POLL: Duration = Duration::from_millis(250);
/// Counter refresh: every second for tables up to 10k entries; a bigger table is a flood
/// of short flows (its rows get counters from DESTROY events) and a dump of it costs
/// memory in proportion, so it is refreshed only every minute.
fn refresh_interval(entries: usize) -> Duration {
    if entries <= 10_000 {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(60)
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// What the table needs to know about the fleet; rebuilt by the daemon after reconciles.
#[derive(Default)]
pub struct FlowContext {
    pub zones: HashMap<String, String>,
    pub addrs: HashMap<String, Vec<IpAddr>>,
    pub owner: HashMap<IpAddr, (String, String)>,
    pub rulesets: HashMap<String, Ruleset>,
    /// Rule id -> its reference with `path:line`.
    pub rules: HashMap<String, RuleRef>,
    /// Inspected policies and the marks that name them, for inline inspection.
    pub inspect: inspection::Policies,
}

impl Context for FlowContext {
    fn zone_of(&self, container: &str) -> Option<String> {
        self.zones.get(container).cloned()
    }

    fn local_addrs(&self, container: &str) -> &[IpAddr] {
        self.addrs.get(container).map_or(&[], Vec::as_slice)
    }

    fn peer(&self, addr: IpAddr) -> Option<(String, String)> {
        self.owner.get(&addr).cloned()
    }

    fn attribute(
        &self,
        container: &str,
        direction: Direction,
        proto: Proto,
        peer: IpAddr,
        port: u16,
    ) -> (FlowVerdict, Option<RuleRef>) {
        let Some(rs) = self.rulesets.get(container) else { return (FlowVerdict::Allowed, None) };
        let p = match proto {
            Proto::Tcp => eval::Proto::Tcp,
            Proto::Udp => eval::Proto::Udp,
            Proto::Icmp | Proto::Icmpv6 => eval::Proto::Icmp,
            Proto::Other(_) => return (FlowVerdict::Allowed, None),
        };
        let own = self.local_addrs(container).iter().find(|a| a.is_ipv4() == peer.is_ipv4()).copied();
        let Some(own) = own else { return (FlowVerdict::Allowed, None) };
        let dport = matches!(p, eval::Proto::Tcp | eval::Proto::Udp).then_some(port);
        let (hook, pkt) = match direction {
            Direction::Egress => (Hook::Output, Packet { src: own, dst: peer, proto: p, dport }),
            Direction::Ingress => (Hook::Input, Packet { src: peer, dst: own, proto: p, dport }),
        };
        let d = eval::evaluate(rs, hook, &pkt);
        let v = match d.verdict {
            fw_proto::Verdict::Allow => FlowVerdict::Allowed,
            fw_proto::Verdict::AuditDeny => FlowVerdict::AuditDenied,
            fw_proto::Verdict::Deny => FlowVerdict::Denied,
        };
        (v, d.by)
    }

    fn rule_ref(&self, _container: &str, rule_id: &str) -> Option<RuleRef> {
        self.rules.get(rule_id).cloned()
    }
}

/// The cap rule an NFLOG record says was hit: `fw:cap:<zone>:<cap>` in enforce mode, an
/// audit record of a cap rule (`fw:audit:<zone>:<cap>`) in audit mode.
fn cap_rule(container: &str, rec: &super::nflog::LogRecord, ctx: &dyn Context) -> Option<RuleRef> {
    let tag = rec.tag.as_ref()?;
    let known = ctx.rule_ref(container, &tag.rule);
    match (tag.kind.as_str(), known) {
        ("cap", Some(r)) => Some(r),
        ("cap", None) => Some(RuleRef { kind: fw_proto::RuleKind::Cap, id: tag.rule.clone(), source: None }),
        ("audit", Some(r)) if r.kind == fw_proto::RuleKind::Cap => Some(r),
        _ => None,
    }
}

struct Collector {
    netns: PathBuf,
    stop: Arc<AtomicBool>,
}

/// Where flagged flows' packets wait for verdicts and where violations go.
#[derive(Clone)]
pub struct InspectConfig {
    /// The fail-closed NFQUEUE number; the fail-open one is the next.
    pub queue: u16,
    pub violations: std::sync::mpsc::Sender<Violation>,
}

/// The shared flow table, its context, and the collectors feeding it.
pub struct Flows {
    table: Mutex<FlowTable>,
    ctx: RwLock<Arc<FlowContext>>,
    collectors: Mutex<BTreeMap<String, Collector>>,
    log_group: u16,
    /// One dump at a time across namespaces: a dump's entries are held in memory until
    /// merged, and ten large ones at once would multiply the peak.
    dumping: Mutex<()>,
    /// Set before the first `sync`; without it no inspection queue is bound.
    inspect: Mutex<Option<InspectConfig>>,
    tap_stats: Mutex<TapStats>,
    /// Where cap hits seen in NFLOG records are raised.
    alerts: Arc<crate::alerts::Alerts>,
}

impl Flows {
    pub fn new(cap: usize, log_group: u16, alerts: Arc<crate::alerts::Alerts>) -> Arc<Flows> {
        Arc::new(Flows {
            table: Mutex::new(FlowTable::new(cap)),
            ctx: RwLock::new(Arc::new(FlowContext::default())),
            collectors: Mutex::new(BTreeMap::new()),
            log_group,
            dumping: Mutex::new(()),
            inspect: Mutex::new(None),
            tap_stats: Mutex::new(TapStats::default()),
            alerts,
        })
    }

    /// Starts inspection listeners with the collectors started from now on.
    pub fn set_inspection(&self, cfg: InspectConfig) {
        *self.inspect.lock().unwrap_or_else(|e| e.into_inner()) = Some(cfg);
    }

    pub fn tap_stats(&self) -> TapStats {
        *self.tap_stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn table(&self) -> std::sync::MutexGuard<'_, FlowTable> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn context(&self) -> Arc<FlowContext> {
        self.ctx.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_context(&self, ctx: FlowContext) {
        *self.ctx.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ctx);
    }

    /// The daemon's alerts, for code that watches flows (inspection raises
    /// `AlertKind::Violation` here with the flow's row id).
    pub fn alerts(&self) -> &Arc<crate::alerts::Alerts> {
        &self.alerts
    }

    /// Open flows per container (what `max_conns` counts), from the table.
    pub fn open_flows(&self) -> HashMap<String, usize> {
        self.table().open_flows()
    }

    /// Rows of open flows dropped at the table's cap (see `FlowTable::evicted_open`).
    pub fn dropped_open(&self) -> u64 {
        self.table().evicted_open()
    }

    /// (rows, lost events).
    pub fn stats(&self) -> (usize, u64) {
        let t = self.table();
        (t.len(), t.lost_events())
    }

    /// Starts collectors for new containers and stops those of containers gone.
    pub fn sync(self: &Arc<Self>, programmed: &BTreeMap<String, PathBuf>) {
        let mut cs = self.collectors.lock().unwrap_or_else(|e| e.into_inner());
        let gone: Vec<String> =
            cs.iter().filter(|(n, c)| programmed.get(*n) != Some(&c.netns)).map(|(n, _)| n.clone()).collect();
        for name in gone {
            if let Some(c) = cs.remove(&name) {
                c.stop.store(true, Ordering::SeqCst);
            }
            self.table().forget_container(&name);
        }
        for (name, ns) in programmed {
            if cs.contains_key(name) {
                continue;
            }
            let stop = Arc::new(AtomicBool::new(false));
            if let Err(e) = self.spawn(name, ns, stop.clone()) {
                warn!(container = %name, error = %e, "flows: cannot start the collectors");
                continue;
            }
            cs.insert(name.clone(), Collector { netns: ns.clone(), stop });
        }
    }

    fn spawn(self: &Arc<Self>, name: &str, ns: &Path, stop: Arc<AtomicBool>) -> std::io::Result<()> {
        let inspector = Arc::new(Mutex::new(Inspector::new(inspection::MAX_FLOWS)));
        let cfg = self.inspect.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(cfg) = cfg {
            let (f, n, p, s, i) =
                (self.clone(), name.to_string(), ns.to_path_buf(), stop.clone(), inspector.clone());
            std::thread::Builder::new().name(format!("insp-{name}")).spawn(move || {
                let _span = tracing::info_span!("container", container = %n).entered();
                f.inline_loop(&n, &p, &s, &i, &cfg);
            })?;
        }
        let (f, n, p, s) = (self.clone(), name.to_string(), ns.to_path_buf(), stop.clone());
        std::thread::Builder::new().name(format!("ct-{name}")).spawn(move || {
            let _span = tracing::info_span!("container", container = %n).entered();
            if let Err(e) = f.conntrack_loop(&n, &p, &s, &inspector) {
                warn!(error = %e, "flows: conntrack collector stopped");
            }
        })?;
        let (f, n, p) = (self.clone(), name.to_string(), ns.to_path_buf());
        std::thread::Builder::new().name(format!("log-{name}")).spawn(move || {
            let _span = tracing::info_span!("container", container = %n).entered();
            let mut log = match Nflog::open(&p, f.log_group, LOG_RCVBUF) {
                Ok(l) => l,
                Err(e) => return warn!(error = %e, "flows: cannot listen for NFLOG records"),
            };
            while !stop.load(Ordering::SeqCst) {
                match log.recv(POLL) {
                    Ok(recs) if recs.is_empty() => {}
                    Ok(recs) => {
                        let ctx = f.context();
                        let now = now_ms();
                        let mut hits = Vec::new();
                        {
                            let mut t = f.table();
                            for r in &recs {
                                let row = t.apply_log(&n, r, now, &*ctx);
                                if let Some(rule) = cap_rule(&n, r, &*ctx) {
                                    hits.push((rule, row));
                                }
                            }
                        }
                        // Raised outside the table lock: an alert wakes subscribers.
                        for (rule, row) in hits {
                            f.alerts.cap_hit(&n, &rule, row, now);
                        }
                    }
                    Err(e) => {
                        // ENOBUFS: records were dropped by the kernel; count and go on.
                        if let super::nflog::NflogError::Overrun { .. } = &e {
                            f.table().add_lost(1);
                            continue;
                        }
                        return warn!(error = %e, "flows: NFLOG collector stopped");
                    }
                }
            }
        })?;
        Ok(())
    }

    /// Answers the inspection queues of one namespace until stopped (see `flows/inline.rs`).
    fn inline_loop(
        &self,
        name: &str,
        ns: &Path,
        stop: &AtomicBool,
        inspector: &Mutex<Inspector>,
        cfg: &InspectConfig,
    ) {
        let mut k = match inline::Kernel::open(ns, cfg.queue) {
            Ok(k) => k,
            Err(e) => return warn!(error = %e, "flows: cannot bind the inspection queues"),
        };
        let mut st = Inline::default();
        let mut overflow_seen = 0;
        let mut last_counters = std::time::Instant::now();
        while !stop.load(Ordering::SeqCst) {
            // Wake for the next undecided flow's deadline even if no packet comes.
            let deadline = inspector.lock().unwrap_or_else(|e| e.into_inner()).next_deadline();
            let wait = deadline
                .map_or(POLL, |d| Duration::from_millis(u64::try_from(d - now_ms()).unwrap_or(0)).min(POLL));
            let pkts = match k.queue.recv(wait) {
                Ok(p) => p,
                Err(e) => return warn!(error = %e, "flows: inspection queue stopped"),
            };
            let ctx = self.context();
            let now = now_ms();
            let mut step = inline::Step::default();
            {
                let mut i = inspector.lock().unwrap_or_else(|e| e.into_inner());
                for p in &pkts {
                    st.packet(p, name, &ctx.inspect, &mut i, now, &mut step);
                }
                let expired = i.expire(now);
                st.stats.timeouts += expired.len() as u64;
                for (key, f) in expired.into_iter().chain(i.take_dropped()) {
                    st.decided(key, f, &mut step);
                }
            }
            // The kernel first: held packets wait for these verdicts.
            k.execute(&step.actions);
            let mut stats = std::mem::take(&mut st.stats);
            for mut v in inspection::record(name, step.findings, &self.table, &mut stats, now) {
                v.done = step.cut.get(&v.flow).map(|d| d.to_string());
                warn!(rule = %v.rule.id, "inspection: {}", v.message());
                if cfg.violations.send(v).is_err() {
                    debug!("inspection: nobody acts on violations (daemon stopping)");
                }
            }
            if last_counters.elapsed() >= Duration::from_secs(1) || k.queue.overruns > 0 {
                last_counters = std::time::Instant::now();
                let n = k.overflow();
                if n > overflow_seen {
                    stats.overflow += n - overflow_seen;
                    self.alerts.raise(
                        fw_proto::control::AlertKind::InspectionOverflow,
                        Some(name),
                        None,
                        None,
                        format!(
                            "inspection queue overflow: {} packet(s) of flagged flows could not wait for a \
                             verdict (dropped for fail-closed policies, passed uninspected for fail-open ones)",
                            n - overflow_seen
                        ),
                    );
                    overflow_seen = n;
                }
            }
            let mut all = self.tap_stats.lock().unwrap_or_else(|e| e.into_inner());
            all.packets += stats.packets;
            all.unknown_rule += stats.unknown_rule;
            all.identified += stats.identified;
            all.violations += stats.violations;
            all.dns_answers += stats.dns_answers;
            all.held_peak = all.held_peak.max(stats.held_peak);
            all.timeouts += stats.timeouts;
            all.overflow += stats.overflow;
        }
    }

    fn conntrack_loop(
        &self,
        name: &str,
        ns: &Path,
        stop: &AtomicBool,
        inspector: &Mutex<Inspector>,
    ) -> Result<(), CtError> {
        if let Err(e) = conntrack::enable_accounting(ns) {
            warn!(error = %e, "flows: byte counters unavailable");
        }
        // Subscribe before the dump: a flow that starts in between is seen twice, never missed.
        let mut events = CtEvents::open(ns, CT_RCVBUF)?;
        let mut ctl = CtControl::open(ns)?;
        let mut size = self.redump(name, &mut ctl)?;
        let mut last_dump = std::time::Instant::now();
        while !stop.load(Ordering::SeqCst) {
            // Conntrack reports counters only in dumps and on DESTROY: a periodic dump keeps
            // the byte counts and rates of long-lived flows moving. A big table is dumped
            // less often (events keep flowing in meanwhile; only counters wait).
            if last_dump.elapsed() >= refresh_interval(size) {
                size = self.redump(name, &mut ctl)?;
                last_dump = std::time::Instant::now();
            }
            match events.recv(POLL) {
                Ok(evs) if evs.is_empty() => {}
                Ok(evs) => {
                    let ctx = self.context();
                    let now = now_ms();
                    let mut t = self.table();
                    for e in &evs {
                        t.apply_ct(name, e, now, &*ctx);
                    }
                    drop(t);
                    // Ended flows free their inspection state.
                    let mut i = inspector.lock().unwrap_or_else(|e| e.into_inner());
                    if i.flows() > 0 {
                        for e in evs.iter().filter(|e| e.kind == CtKind::Destroy) {
                            i.forget(&inspection::key_of(&e.entry.orig));
                        }
                    }
                }
                Err(CtError::Overrun { .. }) => {
                    debug!("flows: conntrack events lost; re-dumping");
                    self.table().add_lost(1);
                    self.redump(name, &mut ctl)?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Replaces the container's rows with a fresh dump; returns the number of entries.
    fn redump(&self, name: &str, ctl: &mut CtControl) -> Result<usize, CtError> {
        let _one_at_a_time = self.dumping.lock().unwrap_or_else(|e| e.into_inner());
        let entries = ctl.dump()?;
        let ctx = self.context();
        self.table().replace_dump(name, &entries, now_ms(), &*ctx);
        Ok(entries.len())
    }
}

impl FlowView for Flows {
    fn open_flows(&self) -> HashMap<String, usize> {
        Flows::open_flows(self)
    }

    fn dropped_open(&self) -> u64 {
        Flows::dropped_open(self)
    }

    fn snapshot(&self, filter: &FlowFilter, limit: Option<usize>) -> FlowSnapshot {
        self.table().snapshot(filter, limit)
    }

    fn changes(&self, since: Option<u64>, filter: &FlowFilter) -> FlowChanges {
        let t = self.table();
        let d = t.changes_since(since, filter);
        FlowChanges {
            changed: d.changed,
            removed: d.removed,
            total: d.total,
            lost_events: t.lost_events(),
            next: d.next,
            full: d.full || since.is_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::nflog::{LogRecord, Tag};
    use fw_proto::RuleKind;

    fn rec(prefix: &str) -> LogRecord {
        LogRecord {
            prefix: prefix.into(),
            tag: Tag::parse(prefix),
            indev: None,
            outdev: Some(2),
            src: None,
            dst: None,
            proto: None,
            sport: None,
            dport: None,
            payload: Vec::new(),
        }
    }

    #[test]
    fn cap_hits_are_cap_tags_and_audited_cap_rules() {
        let mut ctx = FlowContext::default();
        let r = |kind, id: &str| RuleRef { kind, id: id.into(), source: Some("10-zones.toml:3".into()) };
        ctx.rules.insert("web:max_conns".into(), r(RuleKind::Cap, "web:max_conns"));
        ctx.rules.insert("batch:new_conns_per_sec".into(), r(RuleKind::Cap, "batch:new_conns_per_sec"));
        ctx.rules.insert("no-web".into(), r(RuleKind::Policy, "no-web"));
        // Enforce mode: the cap tag, with the rule's position when known.
        let hit = cap_rule("web-1", &rec("fw:cap:web:max_conns"), &ctx).unwrap();
        assert_eq!((hit.kind, hit.id.as_str(), hit.source.is_some()), (RuleKind::Cap, "web:max_conns", true));
        let unknown = cap_rule("web-1", &rec("fw:cap:gone:max_conns"), &ctx).unwrap();
        assert_eq!((unknown.kind, unknown.id.as_str()), (RuleKind::Cap, "gone:max_conns"));
        // Audit mode logs a cap as an audit record of a cap rule.
        assert!(cap_rule("batch-1", &rec("fw:audit:batch:new_conns_per_sec"), &ctx).is_some());
        // Other records are not cap hits.
        for p in ["fw:audit:no-web", "fw:deny:default", "fw:block:quarantine", "fw:log:x", "junk"] {
            assert_eq!(cap_rule("web-1", &rec(p), &ctx), None, "{p}");
        }
    }
}
