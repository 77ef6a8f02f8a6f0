//! What inline inspection (`flows/inline.rs`) found, made visible: which policy flagged a
//! queued packet (by its mark), and each finding applied where it belongs:
//! - `Identified` -> the flow's row gets `inspection { protocol, name, raw_name }`;
//! - `Violation` -> the row gets `inspection { .., violation }`, and a [`Violation`] goes to
//!   the daemon, which raises an alert, audits what was done, and for `quarantine` cuts the
//!   container (the flow itself was already cut in the kernel);
//! - `DnsAnswer` -> the container's name map (rows to those addresses show the name as peer).

use std::collections::HashMap;
use std::net::IpAddr;

use fw_proto::control::Inspection;
use fw_proto::RuleRef;

use super::conntrack::Tuple;
use super::table::FlowTable;
use crate::inspect::{mark, Finding, FlowKey};
use crate::rules::model::{AppProto, Inspect, OnViolation};
use crate::ruleset::Ruleset;

/// Flows with inspection state at once, per container.
pub const MAX_FLOWS: usize = 4096;

/// A violation the daemon must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub container: String,
    /// As conntrack's original tuple (initiator -> responder).
    pub flow: FlowKey,
    pub rule: RuleRef,
    pub on: OnViolation,
    pub protocol: Option<AppProto>,
    pub name: Option<String>,
    pub reason: String,
    /// The flow's row, when the table has it.
    pub row: Option<u64>,
    /// Unix ms when the deciding packet was read.
    pub seen_ms: i64,
    /// What the kernel side already did about it (`flow cut: reset both ends`), if anything.
    pub done: Option<String>,
}

impl Violation {
    /// One line for the alert and the log.
    pub fn message(&self) -> String {
        let f = &self.flow;
        let mut m = format!(
            "{} {}:{} -> {}:{}: {}",
            proto_name(f.proto),
            f.src,
            f.sport,
            f.dst,
            f.dport,
            self.reason
        );
        if let Some(n) = &self.name {
            m.push_str(&format!(" (name {n})"));
        }
        m.push_str(match self.on {
            OnViolation::Alert => "; alert only",
            OnViolation::Cut => "; flow cut",
            OnViolation::Quarantine => "; container quarantined",
        });
        if let Some(d) = &self.done {
            m.push_str(&format!(" ({d})"));
        }
        m
    }
}

fn proto_name(p: u8) -> &'static str {
    match p {
        6 => "tcp",
        17 => "udp",
        _ => "ip",
    }
}

pub fn app_name(p: AppProto) -> &'static str {
    match p {
        AppProto::Tls => "tls",
        AppProto::Http => "http",
        AppProto::Dns => "dns",
    }
}

pub fn tuple_of(k: &FlowKey) -> Tuple {
    Tuple { src: k.src, dst: k.dst, proto: k.proto, sport: k.sport, dport: k.dport }
}

pub fn key_of(t: &Tuple) -> FlowKey {
    FlowKey { proto: t.proto, src: t.src, sport: t.sport, dst: t.dst, dport: t.dport }
}

/// What inspection needs from the policy: each inspected rule's `inspect` table and
/// reference, and per container which mark stands for which rule.
#[derive(Debug, Default, Clone)]
pub struct Policies {
    pub by_id: HashMap<String, (Inspect, RuleRef)>,
    /// Container -> the policy bits of a mark (`mark::POLICY_BITS`) -> rule id.
    pub by_mark: HashMap<String, HashMap<u32, String>>,
}

impl Policies {
    /// Learns the marks `rs` (one container's table) sets for its inspected policies.
    pub fn index_marks(&mut self, container: &str, rs: &Ruleset) {
        let marks = self.by_mark.entry(container.to_string()).or_default();
        for r in rs.chains.iter().flat_map(|c| &c.rules) {
            if let (Some(m), Some(o)) = (r.mark, &r.origin) {
                marks.insert(m & mark::POLICY_BITS, o.id.clone());
            }
        }
    }

    /// The policy that flagged a packet of `container` whose connection mark is `m`.
    pub fn flagged(&self, container: &str, m: u32) -> Option<&(Inspect, RuleRef)> {
        let id = self.by_mark.get(container)?.get(&(m & mark::POLICY_BITS))?;
        self.by_id.get(id)
    }
}

/// Counters for status and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TapStats {
    /// Packets the kernel queued for a verdict.
    pub packets: u64,
    /// Queued packets whose mark named no loaded policy (a reload race): judged undecided.
    pub unknown_rule: u64,
    pub identified: u64,
    pub violations: u64,
    pub dns_answers: u64,
    /// Packets held, at most, at once, and those that waited until their flow timed out.
    pub held_peak: u64,
    pub timeouts: u64,
    /// Packets the kernel could not queue (queue full or socket overrun): dropped for
    /// fail-closed policies, let through uninspected for fail-open ones.
    pub overflow: u64,
}

/// Applies findings of `container`'s flows to the table; returns the violations (each with
/// its policy) for the daemon. The table lock is taken once per call.
pub fn record(
    container: &str,
    findings: Vec<(Finding, RuleRef, OnViolation)>,
    table: &std::sync::Mutex<FlowTable>,
    stats: &mut TapStats,
    now_ms: i64,
) -> Vec<Violation> {
    if findings.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut t = table.lock().unwrap_or_else(|e| e.into_inner());
    for (f, rule, on) in findings {
        match f {
            Finding::Identified { flow, protocol, name, raw } => {
                stats.identified += 1;
                let found = Inspection {
                    protocol: Some(app_name(protocol).into()),
                    name,
                    raw_name: raw,
                    violation: None,
                };
                t.annotate(container, tuple_of(&flow), found);
            }
            Finding::Violation { flow, protocol, name, raw, reason } => {
                stats.violations += 1;
                let found = Inspection {
                    protocol: Some(protocol.map_or("unknown", app_name).into()),
                    name: name.clone(),
                    raw_name: raw,
                    violation: Some(reason.clone()),
                };
                let row = t.annotate(container, tuple_of(&flow), found);
                out.push(Violation {
                    container: container.to_string(),
                    flow,
                    rule,
                    on,
                    protocol,
                    name,
                    reason,
                    row,
                    seen_ms: now_ms,
                    done: None,
                });
            }
            Finding::DnsAnswer { name, addrs, .. } => {
                stats.dns_answers += 1;
                let addrs: Vec<IpAddr> = addrs.into_iter().take(64).collect();
                t.learn_name(container, &name, &addrs);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::table::FlowTable;
    use std::sync::Mutex;

    fn key() -> FlowKey {
        FlowKey {
            proto: 6,
            src: "10.0.0.1".parse().unwrap(),
            sport: 40000,
            dst: "10.0.0.2".parse().unwrap(),
            dport: 443,
        }
    }

    #[test]
    fn violation_messages_say_what_and_what_was_done() {
        let mut v = Violation {
            container: "api-1".into(),
            flow: key(),
            rule: RuleRef { kind: fw_proto::RuleKind::Policy, id: "p".into(), source: None },
            on: OnViolation::Cut,
            protocol: Some(AppProto::Tls),
            name: Some("evil.example".into()),
            reason: "SNI not allowed".into(),
            row: None,
            seen_ms: 0,
            done: None,
        };
        assert_eq!(
            v.message(),
            "tcp 10.0.0.1:40000 -> 10.0.0.2:443: SNI not allowed (name evil.example); flow cut"
        );
        v.done = Some("reset both ends".into());
        assert!(v.message().ends_with("; flow cut (reset both ends)"), "{}", v.message());
    }

    #[test]
    fn findings_reach_the_table_and_violations_the_daemon() {
        let table = Mutex::new(FlowTable::new(16));
        let rule = RuleRef { kind: fw_proto::RuleKind::Policy, id: "p".into(), source: None };
        let mut stats = TapStats::default();
        let v = record(
            "c",
            vec![
                (
                    Finding::Identified {
                        flow: key(),
                        protocol: AppProto::Tls,
                        name: Some("a.example".into()),
                        raw: Some("A.Example.".into()),
                    },
                    rule.clone(),
                    OnViolation::Cut,
                ),
                (
                    Finding::Violation {
                        flow: key(),
                        protocol: None,
                        name: None,
                        raw: None,
                        reason: "undecided after 2000 ms".into(),
                    },
                    rule.clone(),
                    OnViolation::Quarantine,
                ),
            ],
            &table,
            &mut stats,
            5,
        );
        assert_eq!((stats.identified, stats.violations), (1, 1));
        assert_eq!(v.len(), 1);
        assert_eq!(
            (v[0].on, v[0].seen_ms, v[0].reason.as_str()),
            (OnViolation::Quarantine, 5, "undecided after 2000 ms")
        );
    }

    #[test]
    fn marks_name_their_policy_per_container() {
        let mut p = Policies::default();
        let rule = RuleRef { kind: fw_proto::RuleKind::Policy, id: "tls".into(), source: None };
        let insp = Inspect {
            protocol: Some(AppProto::Tls),
            tls_sni: vec![],
            http_host: vec![],
            dns_names: vec![],
            on_violation: OnViolation::Alert,
            max_packets: 6,
            timeout_ms: 2000,
            fail: None,
        };
        p.by_id.insert("tls".into(), (insp, rule.clone()));
        let rs = Ruleset {
            container: "c".into(),
            zone: "z".into(),
            mode: fw_proto::Mode::Enforce,
            family: Default::default(),
            table: crate::ruleset::ir::TABLE.into(),
            sets: vec![],
            chains: vec![crate::ruleset::ir::Chain {
                name: "egress".into(),
                base: None,
                rules: vec![crate::ruleset::ir::Rule {
                    mark: Some(0x6677_1234),
                    origin: Some(rule),
                    ..Default::default()
                }],
            }],
        };
        p.index_marks("c", &rs);
        // Either side, any state: the policy bits decide.
        assert!(p.flagged("c", 0x6677_1234).is_some());
        assert!(p.flagged("c", 0x6676_9234).is_some());
        assert!(p.flagged("c", 0x6677_1235).is_none());
        assert!(p.flagged("other", 0x6677_1234).is_none());
    }
}
