//! Feeds the flow table from the kernel. Per programmed container, sockets opened inside its
//! namespace (on a short-lived thread, see `netns`) are registered with the runtime and read
//! by tasks woken when the kernel has something: conntrack events, NFLOG records, and (with
//! inspection configured) the inspection queues. No thread is spent per container and an
//! idle namespace costs nothing but its sockets.
//!
//! Counters (conntrack reports them only in dumps and DESTROY events) come from one
//! scheduler for every namespace, whose cost follows activity:
//! - a namespace with no open flow is never asked;
//! - one with a few open flows has them looked up by tuple (`CtControl::get_many`: a hash
//!   lookup each), since a dump from any namespace walks the host's whole conntrack hash
//!   (262,144 buckets on the measuring VM: ~8 ms a dump however few entries it returns);
//! - one with many open flows is dumped, less often the bigger it is;
//! - each round does at most [`MAX_DUMPS_PER_ROUND`] dumps and [`MAX_GETS_PER_ROUND`]
//!   lookups; what does not fit waits for the next round, oldest first;
//! - a dump is owed at start (flows that predate the daemon) and after an event overrun.
//!
//! The table's questions about containers, peers and rules are answered by `FlowContext`,
//! a value the daemon rebuilds after every reconcile.

use crate::clock::now_ms;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use fw_proto::control::{Direction, FlowFilter, FlowSnapshot, FlowVerdict, Proto};
use fw_proto::RuleRef;
use tokio::runtime::Handle;
use tokio::sync::{watch, Notify};
use tokio::task::AbortHandle;
use tracing::{debug, warn};

use super::conntrack::{self, CtControl, CtError, CtEvents, CtKind, Tuple};
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
/// How often the counter scheduler looks for work.
const ROUND: Duration = Duration::from_secs(1);
/// Full dumps per round across namespaces (each walks the host's conntrack hash).
pub const MAX_DUMPS_PER_ROUND: usize = 2;
/// Flows looked up by tuple per round across namespaces.
pub const MAX_GETS_PER_ROUND: usize = 20_000;
/// Up to this many open flows a namespace's counters come from lookups; above, from a dump.
pub const LOOKUP_MAX: usize = 2_000;
/// How often an inspection queue's kernel drop counters are read while packets come.
const COUNTERS_EVERY: Duration = Duration::from_secs(1);

/// Counter refresh: every second for namespaces up to 10k open flows; a bigger table is a
/// flood of short flows (its rows get counters from DESTROY events) and a dump of it costs
/// memory in proportion, so it is refreshed only every minute.
fn refresh_interval(open: usize) -> Duration {
    if open <= 10_000 {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(60)
    }
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
            Direction::Egress => {
                (Hook::Output, Packet { src: own, dst: peer, proto: p, dport, icmp_type: None })
            }
            Direction::Ingress => {
                (Hook::Input, Packet { src: peer, dst: own, proto: p, dport, icmp_type: None })
            }
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

/// One container's collection: its tasks (aborted when it is forgotten, which closes its
/// sockets and releases the namespace) and its counter-refresh state.
struct Collector {
    netns: PathBuf,
    tasks: Vec<AbortHandle>,
}

/// A namespace the scheduler may work on this round: name, state, last refresh, dump owed.
type Due = (String, Arc<Mutex<Refresh>>, Option<Instant>, bool);

/// A namespace's request socket and what the scheduler knows about it.
struct Refresh {
    ctl: CtControl,
    last: Option<Instant>,
    /// A full dump is owed (start, event overrun).
    dump_owed: bool,
}

/// Where flagged flows' packets wait for verdicts and where violations go.
#[derive(Clone)]
pub struct InspectConfig {
    /// The fail-closed NFQUEUE number; the fail-open one is the next.
    pub queue: u16,
    /// Hands a violation to the daemon's loop; `false` once it is gone.
    pub violations: Arc<dyn Fn(Violation) -> bool + Send + Sync>,
}

/// What a round of the scheduler did, for tests and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RefreshStats {
    pub rounds: u64,
    pub dumps: u64,
    pub lookups: u64,
}

/// The shared flow table, its context, and the collectors feeding it.
pub struct Flows {
    table: Mutex<FlowTable>,
    ctx: RwLock<Arc<FlowContext>>,
    collectors: Mutex<BTreeMap<String, Collector>>,
    refresh: Mutex<HashMap<String, Arc<Mutex<Refresh>>>>,
    /// Wakes the scheduler early (a dump is owed).
    wake: Arc<Notify>,
    log_group: u16,
    /// Set before the first `sync`; without it no inspection queue is bound.
    inspect: Mutex<Option<InspectConfig>>,
    tap_stats: Mutex<TapStats>,
    /// Where cap hits seen in NFLOG records are raised.
    alerts: Arc<crate::alerts::Alerts>,
    rt: Handle,
    /// The table's change position, for subscribers that wait for changes.
    changed: watch::Sender<u64>,
    stats: Mutex<RefreshStats>,
    scheduler: Mutex<Option<AbortHandle>>,
}

impl Flows {
    /// A table of at most `cap` rows fed by collectors that run as tasks on `rt`.
    pub fn new(cap: usize, log_group: u16, alerts: Arc<crate::alerts::Alerts>, rt: Handle) -> Arc<Flows> {
        let f = Arc::new(Flows {
            table: Mutex::new(FlowTable::new(cap)),
            ctx: RwLock::new(Arc::new(FlowContext::default())),
            collectors: Mutex::new(BTreeMap::new()),
            refresh: Mutex::new(HashMap::new()),
            wake: Arc::new(Notify::new()),
            log_group,
            inspect: Mutex::new(None),
            tap_stats: Mutex::new(TapStats::default()),
            alerts,
            rt,
            changed: watch::Sender::new(0),
            stats: Mutex::new(RefreshStats::default()),
            scheduler: Mutex::new(None),
        });
        let (weak, wake) = (Arc::downgrade(&f), f.wake.clone());
        let h = f.rt.spawn(async move { scheduler(weak, wake).await });
        *f.scheduler.lock().unwrap_or_else(|e| e.into_inner()) = Some(h.abort_handle());
        f
    }

    /// Starts inspection listeners with the collectors started from now on.
    pub fn set_inspection(&self, cfg: InspectConfig) {
        *self.inspect.lock().unwrap_or_else(|e| e.into_inner()) = Some(cfg);
    }

    pub fn tap_stats(&self) -> TapStats {
        *self.tap_stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What the counter scheduler has done so far.
    pub fn refresh_stats(&self) -> RefreshStats {
        *self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn table(&self) -> std::sync::MutexGuard<'_, FlowTable> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the table and tells waiting subscribers when it changed something.
    fn with_table<T>(&self, f: impl FnOnce(&mut FlowTable) -> T) -> T {
        let (out, before, after) = {
            let mut t = self.table();
            let before = t.seq();
            let out = f(&mut t);
            (out, before, t.seq())
        };
        if after != before {
            self.changed.send_replace(after);
        }
        out
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
                c.tasks.iter().for_each(AbortHandle::abort);
            }
            self.refresh.lock().unwrap_or_else(|e| e.into_inner()).remove(&name);
            self.with_table(|t| t.forget_container(&name));
        }
        for (name, ns) in programmed {
            if cs.contains_key(name) {
                continue;
            }
            // Opened here, before the publication that says the container is programmed: a
            // connection made after that is seen from its first event, and has byte counters
            // (accounting is off until these sockets are opened). Entering a namespace and
            // opening four sockets costs a fraction of a millisecond; reading is on tasks.
            let inspect = self.inspect.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let opened = Sockets::open(ns, self.log_group, inspect.as_ref().map(|c| c.queue));
            cs.insert(name.clone(), Collector { netns: ns.clone(), tasks: Vec::new() });
            match opened {
                Ok(socks) => self.start(&mut cs, name, socks, inspect),
                Err(e) => warn!(container = %name, error = %e, "flows: cannot start the collectors"),
            }
        }
    }

    /// Starts the readers of a container's opened sockets, as tasks.
    fn start(
        self: &Arc<Self>,
        cs: &mut BTreeMap<String, Collector>,
        name: &str,
        socks: Sockets,
        cfg: Option<InspectConfig>,
    ) {
        let _span = tracing::info_span!("container", container = %name).entered();
        let Some(c) = cs.get_mut(name) else { return };
        let inspector = Arc::new(Mutex::new(Inspector::new(inspection::MAX_FLOWS)));
        let n: Arc<str> = Arc::from(name);
        match socks.events {
            Ok(ev) => {
                let f = self.clone();
                let (n, i) = (n.clone(), inspector.clone());
                c.tasks.push(self.rt.spawn(async move { f.conntrack_events(n, ev, i).await }).abort_handle());
            }
            Err(e) => warn!(container = %name, error = %e, "flows: no conntrack events"),
        }
        match socks.control {
            Ok(ctl) => {
                let r = Refresh { ctl, last: None, dump_owed: true };
                self.refresh
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(name.to_string(), Arc::new(Mutex::new(r)));
                self.wake.notify_one();
            }
            Err(e) => warn!(container = %name, error = %e, "flows: no conntrack counters"),
        }
        match socks.log {
            Ok(log) => {
                let (f, n) = (self.clone(), n.clone());
                c.tasks.push(self.rt.spawn(async move { f.nflog_records(n, log).await }).abort_handle());
            }
            Err(e) => warn!(container = %name, error = %e, "flows: cannot listen for NFLOG records"),
        }
        if let (Some(k), Some(cfg)) = (socks.inline, cfg) {
            match k {
                Ok(k) => {
                    let f = self.clone();
                    c.tasks.push(
                        self.rt
                            .spawn(async move { f.inline_queue(n, k, inspector, cfg).await })
                            .abort_handle(),
                    );
                }
                Err(e) => warn!(container = %name, error = %e, "flows: cannot bind the inspection queues"),
            }
        }
    }

    /// Reads conntrack events as they come.
    async fn conntrack_events(
        self: Arc<Self>,
        name: Arc<str>,
        ev: CtEvents,
        inspector: Arc<Mutex<Inspector>>,
    ) {
        let fd = match ev
            .set_nonblocking()
            .map_err(|e| e.to_string())
            .and_then(|()| crate::nl::register(ev).map_err(|e| e.to_string()))
        {
            Ok(fd) => fd,
            Err(e) => return warn!(container = %name, error = %e, "flows: conntrack collector stopped"),
        };
        let mut fd = fd;
        loop {
            let Ok(mut ready) = fd.readable_mut().await else { return };
            match ready.get_inner_mut().recv(Duration::ZERO) {
                Ok(evs) if evs.is_empty() => ready.clear_ready(),
                Ok(evs) => {
                    let ctx = self.context();
                    let now = now_ms();
                    self.with_table(|t| {
                        for e in &evs {
                            t.apply_ct(&name, e, now, &*ctx);
                        }
                    });
                    // Ended flows free their inspection state.
                    {
                        let mut i = inspector.lock().unwrap_or_else(|e| e.into_inner());
                        if i.flows() > 0 {
                            for e in evs.iter().filter(|e| e.kind == CtKind::Destroy) {
                                i.forget(&inspection::key_of(&e.entry.orig));
                            }
                        }
                    }
                    // A flood in one namespace must not starve the others.
                    tokio::task::yield_now().await;
                }
                Err(CtError::Overrun { .. }) => {
                    debug!(container = %name, "flows: conntrack events lost; a dump is owed");
                    self.with_table(|t| t.add_lost(1));
                    self.owe_dump(&name);
                }
                Err(e) => return warn!(container = %name, error = %e, "flows: conntrack collector stopped"),
            }
        }
    }

    fn owe_dump(&self, name: &str) {
        if let Some(r) = self.refresh.lock().unwrap_or_else(|e| e.into_inner()).get(name) {
            r.lock().unwrap_or_else(|e| e.into_inner()).dump_owed = true;
        }
        self.wake.notify_one();
    }

    /// Reads NFLOG records as they come; cap hits are raised as alerts.
    async fn nflog_records(self: Arc<Self>, name: Arc<str>, log: Nflog) {
        let mut fd = match log
            .set_nonblocking()
            .map_err(|e| e.to_string())
            .and_then(|()| crate::nl::register(log).map_err(|e| e.to_string()))
        {
            Ok(fd) => fd,
            Err(e) => return warn!(container = %name, error = %e, "flows: NFLOG collector stopped"),
        };
        loop {
            let Ok(mut ready) = fd.readable_mut().await else { return };
            match ready.get_inner_mut().recv(Duration::ZERO) {
                Ok(recs) if recs.is_empty() => ready.clear_ready(),
                Ok(recs) => {
                    let ctx = self.context();
                    let now = now_ms();
                    let hits = self.with_table(|t| {
                        let mut hits = Vec::new();
                        for r in &recs {
                            let row = t.apply_log(&name, r, now, &*ctx);
                            if let Some(rule) = cap_rule(&name, r, &*ctx) {
                                hits.push((rule, row));
                            }
                        }
                        hits
                    });
                    // Raised outside the table lock: an alert wakes subscribers.
                    for (rule, row) in hits {
                        self.alerts.cap_hit(&name, &rule, row, now);
                    }
                }
                // ENOBUFS: records were dropped by the kernel; count and go on.
                Err(super::nflog::NflogError::Overrun { .. }) => self.with_table(|t| t.add_lost(1)),
                Err(e) => return warn!(container = %name, error = %e, "flows: NFLOG collector stopped"),
            }
        }
    }

    /// Answers the inspection queues of one namespace (see `flows/inline.rs`): woken by a
    /// queued packet or by the next undecided flow's deadline, nothing else.
    async fn inline_queue(
        self: Arc<Self>,
        name: Arc<str>,
        k: inline::Kernel,
        inspector: Arc<Mutex<Inspector>>,
        cfg: InspectConfig,
    ) {
        let mut fd = match k
            .queue
            .set_nonblocking()
            .map_err(|e| e.to_string())
            .and_then(|()| crate::nl::register(k).map_err(|e| e.to_string()))
        {
            Ok(fd) => fd,
            Err(e) => return warn!(container = %name, error = %e, "flows: inspection queue stopped"),
        };
        let mut st = Inline::default();
        let mut overflow_seen = 0;
        let mut last_counters = Instant::now();
        let mut seen_since_counters = false;
        loop {
            // Wake for the next undecided flow's deadline even if no packet comes.
            let deadline = inspector.lock().unwrap_or_else(|e| e.into_inner()).next_deadline();
            let wait = deadline.map(|d| Duration::from_millis(u64::try_from(d - now_ms()).unwrap_or(0)));
            // After packets, the drop counters are due a second after their last read.
            let counters_due = seen_since_counters
                .then(|| (last_counters + COUNTERS_EVERY).saturating_duration_since(Instant::now()));
            let wait = match (wait, counters_due) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let mut pkts = Vec::new();
            let ready = match wait {
                Some(w) => tokio::time::timeout(w, fd.readable_mut()).await.ok(),
                None => Some(fd.readable_mut().await),
            };
            match ready {
                Some(Ok(mut ready)) => loop {
                    match ready.get_inner_mut().queue.recv(Duration::ZERO) {
                        Ok(p) if p.is_empty() => {
                            ready.clear_ready();
                            break;
                        }
                        Ok(p) => {
                            pkts.extend(p);
                            if pkts.len() >= 1024 {
                                break;
                            }
                        }
                        Err(e) => {
                            return warn!(container = %name, error = %e, "flows: inspection queue stopped")
                        }
                    }
                },
                Some(Err(_)) => return,
                None => {}
            }
            seen_since_counters |= !pkts.is_empty();
            let k = fd.get_mut();
            let ctx = self.context();
            let now = now_ms();
            let mut step = inline::Step::default();
            {
                let mut i = inspector.lock().unwrap_or_else(|e| e.into_inner());
                for p in &pkts {
                    st.packet(p, &name, &ctx.inspect, &mut i, now, &mut step);
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
            let before = self.table().seq();
            for mut v in inspection::record(&name, step.findings, &self.table, &mut stats, now) {
                v.done = step.cut.get(&v.flow).map(|d| d.to_string());
                warn!(rule = %v.rule.id, "inspection: {}", v.message());
                if !(cfg.violations)(v) {
                    debug!("inspection: nobody acts on violations (daemon stopping)");
                }
            }
            let after = self.table().seq();
            if after != before {
                self.changed.send_replace(after);
            }
            // The kernel's drop counters move only while packets come: read them then, at
            // most once a second, never for an idle namespace.
            if (seen_since_counters && last_counters.elapsed() >= Duration::from_secs(1))
                || k.queue.overruns > 0
            {
                last_counters = Instant::now();
                seen_since_counters = false;
                let n = k.overflow();
                if n > overflow_seen {
                    stats.overflow += n - overflow_seen;
                    self.alerts.raise(
                        fw_proto::control::AlertKind::InspectionOverflow,
                        Some(&name),
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

    /// One round of the counter scheduler (blocking: its netlink exchanges wait for the
    /// kernel). See the module documentation for what it asks and when. Returns whether
    /// dumps are still owed (the next round then follows at once).
    fn refresh_round(&self) -> bool {
        let now = Instant::now();
        let open = self.table().open_tuples();
        let mut due: Vec<Due> = self
            .refresh
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(|(n, r)| {
                let g = r.lock().unwrap_or_else(|e| e.into_inner());
                let flows = open.get(n).map_or(0, Vec::len);
                let is_due = g.last.is_none_or(|l| now.duration_since(l) >= refresh_interval(flows));
                (g.dump_owed || (flows > 0 && is_due)).then(|| (n.clone(), r.clone(), g.last, g.dump_owed))
            })
            .collect();
        // Owed dumps first, then the longest waiting.
        due.sort_by_key(|(_, _, last, owed)| (!*owed, *last));
        let (mut dumps, mut gets) = (0usize, 0usize);
        let mut stats = RefreshStats { rounds: 1, ..Default::default() };
        let mut still_owed = false;
        for (name, r, _, owed) in due {
            let tuples = open.get(&name).map_or(&[][..], Vec::as_slice);
            let dump = owed || tuples.len() > LOOKUP_MAX;
            if dump && dumps >= MAX_DUMPS_PER_ROUND || !dump && gets + tuples.len() > MAX_GETS_PER_ROUND {
                still_owed |= owed;
                continue;
            }
            let mut g = r.lock().unwrap_or_else(|e| e.into_inner());
            let ctx = self.context();
            if dump {
                dumps += 1;
                let taken_at = self.table().seq();
                match g.ctl.dump() {
                    Ok(entries) => {
                        self.with_table(|t| t.replace_dump(&name, &entries, taken_at, now_ms(), &*ctx));
                        g.dump_owed = false;
                    }
                    Err(e) => warn!(container = %name, error = %e, "flows: conntrack dump failed"),
                }
            } else {
                gets += tuples.len();
                match g.ctl.get_many(tuples) {
                    Ok(found) => {
                        let looked: Vec<(Tuple, Option<conntrack::CtEntry>)> =
                            tuples.iter().copied().zip(found).collect();
                        self.with_table(|t| t.refresh(&name, &looked, now_ms(), &*ctx));
                    }
                    Err(e) => warn!(container = %name, error = %e, "flows: conntrack lookups failed"),
                }
            }
            g.last = Some(Instant::now());
        }
        stats.dumps = dumps as u64;
        stats.lookups = gets as u64;
        let mut s = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        s.rounds += stats.rounds;
        s.dumps += stats.dumps;
        s.lookups += stats.lookups;
        still_owed
    }
}

/// The counter scheduler: a round every [`ROUND`], or at once when a dump is owed; the
/// round itself runs on the blocking pool, one at a time. Ends with the `Flows`.
async fn scheduler(flows: std::sync::Weak<Flows>, wake: Arc<Notify>) {
    let mut owed = false;
    loop {
        if !owed {
            let _ = tokio::time::timeout(ROUND, wake.notified()).await;
        }
        let Some(f) = flows.upgrade() else { return };
        match tokio::task::spawn_blocking(move || f.refresh_round()).await {
            Ok(more) => owed = more,
            Err(_) => {
                owed = false;
                warn!("flows: a counter refresh round failed");
            }
        }
    }
}

impl Drop for Flows {
    fn drop(&mut self) {
        if let Some(h) = self.scheduler.lock().unwrap_or_else(|e| e.into_inner()).take() {
            h.abort();
        }
        for c in self.collectors.lock().unwrap_or_else(|e| e.into_inner()).values() {
            c.tasks.iter().for_each(AbortHandle::abort);
        }
    }
}

/// A container's sockets, opened inside its namespace; each may fail on its own.
struct Sockets {
    events: Result<CtEvents, CtError>,
    control: Result<CtControl, CtError>,
    log: Result<Nflog, super::nflog::NflogError>,
    inline: Option<Result<inline::Kernel, inline::InlineError>>,
}

impl Sockets {
    /// Opens them all on one thread that entered the namespace once (`netns::run_in` nests).
    fn open(ns: &Path, log_group: u16, queue: Option<u16>) -> Result<Sockets, crate::netns::NetnsError> {
        let p = ns.to_path_buf();
        crate::netns::run_in(ns, move || {
            let ns = p.as_path();
            // First: entries made before accounting is on never get counters.
            if let Err(e) = conntrack::enable_accounting(ns) {
                warn!(error = %e, "flows: byte counters unavailable");
            }
            // Subscribe before the dump: a flow that starts in between is seen twice, never missed.
            let events = CtEvents::open(ns, CT_RCVBUF);
            let control = CtControl::open(ns);
            let log = Nflog::open(ns, log_group, LOG_RCVBUF);
            let inline = queue.map(|q| inline::Kernel::open(ns, q));
            Sockets { events, control, log, inline }
        })
    }
}

impl AsRawFd for inline::Kernel {
    fn as_raw_fd(&self) -> RawFd {
        self.queue.as_raw_fd()
    }
}

impl FlowView for Flows {
    fn open_flows(&self) -> HashMap<String, usize> {
        Flows::open_flows(self)
    }
    fn originated_conns(&self) -> Option<HashMap<String, usize>> {
        Some(self.table().originated_conns())
    }

    fn dropped_open(&self) -> u64 {
        Flows::dropped_open(self)
    }

    fn snapshot(&self, filter: &FlowFilter, limit: Option<usize>) -> FlowSnapshot {
        self.table().snapshot(filter, limit)
    }

    fn watch(&self) -> Option<watch::Receiver<u64>> {
        Some(self.changed.subscribe())
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
