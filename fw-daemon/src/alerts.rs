//! Alerts: what an operator should notice (a reload, a refused reload, a tampered table, a
//! cap hit, an inspection violation, a block placed or lifted), kept in a bounded ring for
//! `Op::Alerts` and pushed to subscriptions that asked for them. Shared by every thread that
//! raises them (the event loop, the NFLOG collectors, inspection) and the socket server.
//!
//! Cap hits arrive once per logged packet; [`CapLimiter`] turns a flood into at most one
//! alert per (container, rule) per window, carrying the count of hits it stands for.

use crate::clock::now_ms;
use std::collections::{HashMap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use fw_proto::control::{Alert, AlertKind, ALERTS_KEPT};
use fw_proto::RuleRef;
use tracing::{info, warn};

/// At most one cap-hit alert per (container, rule) in this long.
pub const CAP_WINDOW_MS: i64 = 10_000;
/// (container, rule) pairs the limiter remembers; beyond this, quiet ones are dropped first.
const CAP_KEYS: usize = 10_000;

/// The last `cap` alerts, oldest first, with ids that increase by one per alert.
#[derive(Debug)]
pub struct Ring {
    cap: usize,
    alerts: VecDeque<Alert>,
    next_id: u64,
}

impl Ring {
    pub fn new(cap: usize) -> Ring {
        Ring { cap: cap.max(1), alerts: VecDeque::new(), next_id: 1 }
    }

    /// Stores an alert, giving it the next id; the oldest goes when full.
    pub fn push(&mut self, mut a: Alert) -> Alert {
        a.id = self.next_id;
        self.next_id += 1;
        if self.alerts.len() == self.cap {
            self.alerts.pop_front();
        }
        self.alerts.push_back(a.clone());
        a
    }

    /// Alerts at or after `since_ms`, oldest first, the last `limit` of them.
    pub fn recent(&self, since_ms: Option<i64>, limit: Option<usize>) -> Vec<Alert> {
        let hits: Vec<&Alert> =
            self.alerts.iter().filter(|a| since_ms.is_none_or(|s| a.time_ms >= s)).collect();
        let skip = limit.map_or(0, |l| hits.len().saturating_sub(l));
        hits.into_iter().skip(skip).cloned().collect()
    }

    /// Alerts with an id above `id`, oldest first (a subscriber's catch-up).
    pub fn after(&self, id: u64) -> Vec<Alert> {
        // Ids are consecutive: the ones wanted are a suffix.
        let newer = self.next_id.saturating_sub(1).saturating_sub(id) as usize;
        let n = newer.min(self.alerts.len());
        self.alerts.iter().skip(self.alerts.len() - n).cloned().collect()
    }

    /// The id of the newest alert (0 before the first).
    pub fn last_id(&self) -> u64 {
        self.next_id - 1
    }
}

/// Per (container, rule): when the last alert went out and the hits seen since.
#[derive(Debug, Clone, Copy)]
struct CapState {
    last_alert_ms: i64,
    pending: u64,
}

/// Rate limiter for cap-hit alerts. Pure (time comes in): the first hit of a quiet key
/// alerts at once; hits within the window after an alert are counted, and reported by the
/// next hit after the window or by [`CapLimiter::flush`], whichever comes first.
#[derive(Debug)]
pub struct CapLimiter {
    window_ms: i64,
    keys: HashMap<(String, String), CapState>,
}

impl CapLimiter {
    pub fn new(window: Duration) -> CapLimiter {
        CapLimiter { window_ms: window.as_millis() as i64, keys: HashMap::new() }
    }

    /// One hit; `Some(n)` when an alert for `n` hits should go out now.
    pub fn hit(&mut self, container: &str, rule: &str, now_ms: i64) -> Option<u64> {
        let key = (container.to_string(), rule.to_string());
        if !self.keys.contains_key(&key) && self.keys.len() >= CAP_KEYS {
            self.prune(now_ms);
            if self.keys.len() >= CAP_KEYS {
                // Still full of busy keys: the oldest alerted one makes room.
                if let Some(k) = self.keys.iter().min_by_key(|(_, s)| s.last_alert_ms).map(|(k, _)| k.clone())
                {
                    self.keys.remove(&k);
                }
            }
        }
        let window = self.window_ms;
        let st = self.keys.entry(key).or_insert(CapState { last_alert_ms: i64::MIN, pending: 0 });
        st.pending += 1;
        if now_ms.saturating_sub(st.last_alert_ms) >= window {
            let n = st.pending;
            *st = CapState { last_alert_ms: now_ms, pending: 0 };
            Some(n)
        } else {
            None
        }
    }

    /// Keys whose window has passed with hits still unreported: ((container, rule), hits).
    pub fn flush(&mut self, now_ms: i64) -> Vec<((String, String), u64)> {
        let mut out = Vec::new();
        for (k, st) in &mut self.keys {
            if st.pending > 0 && now_ms.saturating_sub(st.last_alert_ms) >= self.window_ms {
                out.push((k.clone(), st.pending));
                *st = CapState { last_alert_ms: now_ms, pending: 0 };
            }
        }
        out.sort();
        self.prune(now_ms);
        out
    }

    /// Forgets keys quiet for a whole window with nothing pending: their next hit alerts.
    fn prune(&mut self, now_ms: i64) {
        let w = self.window_ms;
        self.keys.retain(|_, s| s.pending > 0 || now_ms.saturating_sub(s.last_alert_ms) < w);
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The daemon's alerts: raise from any thread, read recent ones, wait for new ones.
pub struct Alerts {
    ring: Mutex<Ring>,
    raised: Condvar,
    /// The last alert's id, for async subscribers (woken by a change, never polling).
    last: tokio::sync::watch::Sender<u64>,
    caps: Mutex<CapLimiter>,
}

impl Default for Alerts {
    fn default() -> Self {
        Alerts::new(ALERTS_KEPT, Duration::from_millis(CAP_WINDOW_MS as u64))
    }
}

impl Alerts {
    pub fn new(kept: usize, cap_window: Duration) -> Alerts {
        Alerts {
            ring: Mutex::new(Ring::new(kept)),
            raised: Condvar::new(),
            last: tokio::sync::watch::Sender::new(0),
            caps: Mutex::new(CapLimiter::new(cap_window)),
        }
    }

    fn ring(&self) -> MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Raises an alert: kept for `Op::Alerts`, pushed to alert subscriptions, logged.
    /// Returns it with its id and time.
    pub fn raise(
        &self,
        kind: AlertKind,
        container: Option<&str>,
        rule: Option<RuleRef>,
        flow: Option<u64>,
        message: impl Into<String>,
    ) -> Alert {
        let message = message.into();
        let c = container.unwrap_or("-");
        let r = rule.as_ref().map_or_else(|| "-".to_string(), |r| r.id.clone());
        match kind {
            AlertKind::Reload | AlertKind::Blocked | AlertKind::Unblocked | AlertKind::Unknown => {
                info!(alert = %kind, container = c, rule = %r, "{message}")
            }
            AlertKind::ReloadFailed
            | AlertKind::Tamper
            | AlertKind::CapHit
            | AlertKind::Violation
            | AlertKind::Unenforced
            | AlertKind::Escalated
            | AlertKind::Audit
            | AlertKind::InventoryFailed
            | AlertKind::InspectionOverflow => {
                warn!(alert = %kind, container = c, rule = %r, "{message}")
            }
        }
        let a = Alert {
            id: 0,
            time_ms: now_ms(),
            kind,
            container: container.map(str::to_string),
            rule,
            flow,
            message,
        };
        let a = self.ring().push(a);
        self.raised.notify_all();
        self.last.send_replace(a.id);
        a
    }

    /// One logged cap hit (an NFLOG record of a cap rule) of `container`, rate-limited.
    pub fn cap_hit(&self, container: &str, rule: &RuleRef, flow: Option<u64>, now_ms: i64) -> Option<Alert> {
        let n = self.caps.lock().unwrap_or_else(|e| e.into_inner()).hit(container, &rule.id, now_ms)?;
        Some(self.raise(
            AlertKind::CapHit,
            Some(container),
            Some(rule.clone()),
            flow,
            cap_message(container, rule, n, None),
        ))
    }

    /// Reports hits held back by the limiter once their window has passed; called on ticks.
    pub fn flush_caps(&self, now_ms: i64) {
        let (due, window) = {
            let mut l = self.caps.lock().unwrap_or_else(|e| e.into_inner());
            (l.flush(now_ms), l.window_ms)
        };
        for ((container, rule), n) in due {
            let r = RuleRef { kind: fw_proto::RuleKind::Cap, id: rule, source: None };
            let msg = cap_message(&container, &r, n, Some(window));
            self.raise(AlertKind::CapHit, Some(&container), Some(r), None, msg);
        }
    }

    /// Alerts at or after `since_ms`, oldest first, the last `limit`.
    pub fn recent(&self, since_ms: Option<i64>, limit: Option<usize>) -> Vec<Alert> {
        self.ring().recent(since_ms, limit)
    }

    pub fn last_id(&self) -> u64 {
        self.ring().last_id()
    }

    /// Alerts newer than `id`, now.
    pub fn after(&self, id: u64) -> Vec<Alert> {
        self.ring().after(id)
    }

    /// A receiver that sees the last alert id change.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.last.subscribe()
    }

    /// Alerts newer than `id`, waiting up to `timeout` for one when there are none yet.
    pub fn wait_after(&self, id: u64, timeout: Duration) -> Vec<Alert> {
        let ring = self.ring();
        let (ring, _) = self
            .raised
            .wait_timeout_while(ring, timeout, |r| r.last_id() <= id)
            .unwrap_or_else(|e| e.into_inner());
        ring.after(id)
    }
}

fn cap_message(container: &str, rule: &RuleRef, hits: u64, window_ms: Option<i64>) -> String {
    // Cap rule ids are `<zone>:<cap>`.
    let cap = rule.id.rsplit(':').next().unwrap_or(&rule.id);
    let zone = rule.id.rsplit_once(':').map_or("?", |(z, _)| z);
    let plural = if hits == 1 { "" } else { "s" };
    match window_ms {
        None if hits == 1 => format!("{container} hit its {cap} cap (zone {zone})"),
        None => {
            format!("{container} hit its {cap} cap (zone {zone}): {hits} logged hits since the last alert")
        }
        Some(w) => format!(
            "{container} hit its {cap} cap (zone {zone}): {hits} more logged hit{plural} in the last {} s",
            w / 1000
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(time_ms: i64, msg: &str) -> Alert {
        Alert {
            id: 0,
            time_ms,
            kind: AlertKind::Reload,
            container: None,
            rule: None,
            flow: None,
            message: msg.into(),
        }
    }

    #[test]
    fn ring_keeps_the_last_n_with_consecutive_ids() {
        let mut r = Ring::new(3);
        assert_eq!((r.last_id(), r.recent(None, None).len()), (0, 0));
        for i in 0..5 {
            let a = r.push(alert(1000 + i, &format!("a{i}")));
            assert_eq!(a.id, i as u64 + 1);
        }
        let all = r.recent(None, None);
        assert_eq!(all.iter().map(|a| a.id).collect::<Vec<_>>(), vec![3, 4, 5]);
        assert_eq!(r.last_id(), 5);
        // since_ms is inclusive; limit keeps the newest.
        assert_eq!(r.recent(Some(1003), None).iter().map(|a| a.id).collect::<Vec<_>>(), vec![4, 5]);
        assert_eq!(r.recent(None, Some(1)).iter().map(|a| a.id).collect::<Vec<_>>(), vec![5]);
        assert_eq!(r.recent(Some(1003), Some(0)).len(), 0);
        assert!(r.recent(Some(9999), None).is_empty());
        // A subscriber's catch-up: only what it has not seen; one too far behind gets what is kept.
        assert_eq!(r.after(4).iter().map(|a| a.id).collect::<Vec<_>>(), vec![5]);
        assert!(r.after(5).is_empty());
        assert_eq!(r.after(0).iter().map(|a| a.id).collect::<Vec<_>>(), vec![3, 4, 5]);
    }

    #[test]
    fn cap_limiter_alerts_once_per_window_with_the_count() {
        let mut l = CapLimiter::new(Duration::from_secs(10));
        // The first hit alerts at once.
        assert_eq!(l.hit("web-1", "web:max_conns", 0), Some(1));
        // A flood inside the window is counted, not alerted.
        for t in 1..=500 {
            assert_eq!(l.hit("web-1", "web:max_conns", t * 10), None);
        }
        // Another key is independent.
        assert_eq!(l.hit("web-2", "web:max_conns", 100), Some(1));
        assert_eq!(l.hit("web-1", "web:new_conns_per_sec", 100), Some(1));
        // Nothing is due before the window ends.
        assert!(l.flush(9_999).is_empty());
        // The next hit after the window reports everything held back, itself included.
        assert_eq!(l.hit("web-1", "web:max_conns", 10_000), Some(501));
        assert_eq!(l.hit("web-1", "web:max_conns", 10_001), None);
        // A flood that stops is reported by the flush at the end of its window.
        assert_eq!(l.flush(20_000), vec![(("web-1".to_string(), "web:max_conns".to_string()), 1)]);
        // Flushed: nothing more to say, and quiet keys are forgotten (the next hit alerts).
        assert!(l.flush(40_000).is_empty());
        assert!(l.is_empty(), "{l:?}");
        assert_eq!(l.hit("web-1", "web:max_conns", 40_001), Some(1));
    }

    #[test]
    fn cap_limiter_memory_is_bounded() {
        let mut l = CapLimiter::new(Duration::from_secs(10));
        for i in 0..(CAP_KEYS + 50) {
            l.hit(&format!("c{i}"), "z:max_conns", 0);
        }
        assert!(l.len() <= CAP_KEYS);
    }

    #[test]
    fn alerts_are_raised_kept_and_awaited() {
        let a = std::sync::Arc::new(Alerts::new(10, Duration::from_secs(10)));
        assert!(a.wait_after(0, Duration::from_millis(10)).is_empty());
        let waiter = {
            let a = a.clone();
            std::thread::spawn(move || a.wait_after(0, Duration::from_secs(10)))
        };
        std::thread::sleep(Duration::from_millis(50));
        let raised = a.raise(AlertKind::Blocked, Some("web-1"), None, None, "blocked");
        let got = waiter.join().unwrap();
        assert_eq!(got, vec![raised.clone()]);
        assert_eq!(raised.id, 1);
        let rule = RuleRef { kind: fw_proto::RuleKind::Cap, id: "web:max_conns".into(), source: None };
        let first = a.cap_hit("web-1", &rule, Some(7), 1_000).expect("first hit alerts");
        assert_eq!((first.kind, first.flow), (AlertKind::CapHit, Some(7)));
        assert!(first.message.contains("max_conns") && first.message.contains("web-1"), "{first:?}");
        assert!(a.cap_hit("web-1", &rule, None, 2_000).is_none());
        a.flush_caps(11_000);
        let last = a.recent(None, None).pop().unwrap();
        assert!(last.message.contains("1 more logged hit in the last 10 s"), "{last:?}");
    }
}
