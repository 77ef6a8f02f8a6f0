//! The daemon side of inspection: reads the copies the inspection tap sends (NFLOG group
//! `inspect_group`, prefix `fw:inspect:<rule id>`, see `compile`), feeds them to the
//! container's [`Inspector`] with the flagging policy's `inspect` table, and acts on what it
//! finds:
//! - `Identified` -> the flow's row gets `inspection { protocol, name }`;
//! - `Violation` -> the row gets `inspection { .., violation }`, and a [`Violation`] goes to
//!   the daemon, which raises an alert and, per `on_violation`, cuts the flow (a 5-tuple
//!   block + conntrack delete) or quarantines the container;
//! - `DnsAnswer` -> the container's name map (rows to those addresses show the name as peer).
//!
//! Nothing here is in the packet path: the kernel copies and moves on. If this thread lags or
//! the daemon is down, the flow simply follows the rules as written; a cut lands when the
//! daemon gets to it (measured by `bench/src/bin/inspect_cut.rs`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use fw_proto::control::Inspection;
use fw_proto::RuleRef;

use super::conntrack::Tuple;
use super::nflog::LogRecord;
use super::table::FlowTable;
use crate::inspect::{Finding, FlowKey, Inspector};
use crate::rules::model::{AppProto, Inspect, OnViolation};

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
    /// Unix ms when the offending packet's copy was read.
    pub seen_ms: i64,
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

/// What the tap needs from the policy: each inspected rule's `inspect` table and reference.
#[derive(Debug, Default, Clone)]
pub struct Policies {
    pub by_id: HashMap<String, (Inspect, RuleRef)>,
}

/// Counters for status and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TapStats {
    pub packets: u64,
    /// Copies whose prefix named no inspected policy (reload race): ignored.
    pub unknown_rule: u64,
    pub identified: u64,
    pub violations: u64,
    pub dns_answers: u64,
}

/// Handles one batch of copies from `container`'s namespace; returns the violations to act
/// on. The table lock is taken once per finding, never while the inspector parses.
pub fn handle(
    container: &str,
    recs: &[LogRecord],
    policies: &Policies,
    inspector: &Mutex<Inspector>,
    table: &Mutex<FlowTable>,
    stats: &mut TapStats,
    now_ms: i64,
) -> Vec<Violation> {
    let mut out = Vec::new();
    for r in recs {
        let Some(tag) = r.tag.as_ref().filter(|t| t.kind == "inspect") else { continue };
        if r.payload.is_empty() {
            continue;
        }
        stats.packets += 1;
        let Some((insp, rule)) = policies.by_id.get(&tag.rule) else {
            stats.unknown_rule += 1;
            continue;
        };
        let findings = inspector.lock().unwrap_or_else(|e| e.into_inner()).packet(&r.payload, insp, now_ms);
        for f in findings {
            let mut t = table.lock().unwrap_or_else(|e| e.into_inner());
            match f {
                Finding::Identified { flow, protocol, name } => {
                    stats.identified += 1;
                    let found =
                        Inspection { protocol: Some(app_name(protocol).into()), name, violation: None };
                    t.annotate(container, tuple_of(&flow), found);
                }
                Finding::Violation { flow, protocol, name, reason } => {
                    stats.violations += 1;
                    let found = Inspection {
                        protocol: Some(protocol.map_or("unknown", app_name).into()),
                        name: name.clone(),
                        violation: Some(reason.clone()),
                    };
                    let row = t.annotate(container, tuple_of(&flow), found);
                    out.push(Violation {
                        container: container.to_string(),
                        flow,
                        rule: rule.clone(),
                        on: insp.on_violation,
                        protocol,
                        name,
                        reason,
                        row,
                        seen_ms: now_ms,
                    });
                }
                Finding::DnsAnswer { name, addrs, .. } => {
                    stats.dns_answers += 1;
                    let addrs: Vec<IpAddr> = addrs.into_iter().take(64).collect();
                    t.learn_name(container, &name, &addrs);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::nflog::Tag;

    fn rec(rule: &str, payload: Vec<u8>) -> LogRecord {
        LogRecord {
            prefix: format!("fw:inspect:{rule}"),
            tag: Some(Tag { kind: "inspect".into(), rule: rule.into() }),
            indev: None,
            outdev: Some(2),
            src: None,
            dst: None,
            proto: None,
            sport: None,
            dport: None,
            payload,
        }
    }

    #[test]
    fn copies_of_unknown_rules_and_other_kinds_are_ignored() {
        let insp = Mutex::new(Inspector::new(16));
        let table = Mutex::new(FlowTable::new(16));
        let mut stats = TapStats::default();
        let mut other = rec("x", vec![0x45]);
        other.tag = Some(Tag { kind: "deny".into(), rule: "x".into() });
        let v = handle(
            "c",
            &[rec("nope", vec![0x45, 0]), other, rec("x", vec![])],
            &Policies::default(),
            &insp,
            &table,
            &mut stats,
            0,
        );
        assert!(v.is_empty());
        assert_eq!((stats.packets, stats.unknown_rule), (1, 1));
    }

    #[test]
    fn violation_messages_say_what_and_what_was_done() {
        let v = Violation {
            container: "api-1".into(),
            flow: FlowKey {
                proto: 6,
                src: "10.0.0.1".parse().unwrap(),
                sport: 40000,
                dst: "10.0.0.2".parse().unwrap(),
                dport: 443,
            },
            rule: RuleRef { kind: fw_proto::RuleKind::Policy, id: "p".into(), source: None },
            on: OnViolation::Cut,
            protocol: Some(AppProto::Tls),
            name: Some("evil.example".into()),
            reason: "SNI not allowed".into(),
            row: None,
            seen_ms: 0,
        };
        assert_eq!(
            v.message(),
            "tcp 10.0.0.1:40000 -> 10.0.0.2:443: SNI not allowed (name evil.example); flow cut"
        );
    }
}
