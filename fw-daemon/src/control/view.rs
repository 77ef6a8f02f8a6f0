//! The policy in force as readers of the control socket see it (`status`): its zones and its
//! failsafes, policies and default in evaluation order. Flow rows name these rules by id, so
//! a console counts each rule's hits from the flow table.

use fw_proto::control::{CapsInfo, PolicyInfo, RuleAction, ZoneInfo, ZoneKind as WireZoneKind};
use fw_proto::RuleKind;

use crate::rules::model::{Action, AppProto, Caps, OnViolation, Policy, Rule, ZoneKind, ZONE_ANY};

pub fn caps(c: &Caps) -> CapsInfo {
    CapsInfo {
        max_conns: c.max_conns,
        new_conns_per_sec: c.new_conns_per_sec,
        egress_bytes_per_sec: c.egress_bytes_per_sec,
        egress_written: c.egress_written.clone(),
    }
}

pub fn zones(p: &Policy) -> Vec<ZoneInfo> {
    p.zones
        .iter()
        .map(|z| ZoneInfo {
            name: z.name.clone(),
            kind: if z.is_external() { WireZoneKind::External } else { WireZoneKind::Containers },
            mode: z.mode,
            caps: caps(&z.caps),
            nets: match &z.kind {
                // A mixed zone is listed as containers, with the networks beside them.
                ZoneKind::External(nets) | ZoneKind::Mixed(_, nets) => nets.clone(),
                ZoneKind::Containers(_) => Vec::new(),
            },
            source: z.pos.as_ref().map(|p| p.short()),
            description: z.description.clone(),
        })
        .collect()
}

/// What a rule inspects, for people: `tls sni a,b; on violation cut`.
pub fn inspect(r: &Rule) -> Option<String> {
    let i = r.inspect.as_ref()?;
    let mut s = match i.protocol {
        Some(AppProto::Tls) => "tls".to_string(),
        Some(AppProto::Http) => "http".to_string(),
        Some(AppProto::Dns) => "dns".to_string(),
        None => "any protocol".to_string(),
    };
    for (what, names) in [("sni", &i.tls_sni), ("host", &i.http_host), ("dns", &i.dns_names)] {
        if !names.is_empty() {
            s.push_str(&format!(" {what} {}", names.join(",")));
        }
    }
    let on = match i.on_violation {
        OnViolation::Alert => "alert",
        OnViolation::Cut => "cut",
        OnViolation::Quarantine => "quarantine",
    };
    s.push_str(&format!("; on violation {on}"));
    Some(s)
}

/// The protocols of every piece of traffic the rule matches (one per named service).
fn traffic_protos(r: &Rule) -> String {
    let mut v: Vec<String> = Vec::new();
    for t in &r.traffic {
        let p = t.protos.to_string();
        if !v.contains(&p) {
            v.push(p);
        }
    }
    v.join(",")
}

/// Ports (or ICMP types) of every piece of traffic, empty when all of them match any.
fn traffic_ports(r: &Rule) -> String {
    let v: Vec<String> = r
        .traffic
        .iter()
        .filter_map(|t| {
            if !t.ports.is_any() {
                Some(t.ports.to_string())
            } else if !t.icmp.is_any() {
                Some(t.icmp.to_string())
            } else {
                None
            }
        })
        .collect();
    v.join(",")
}

fn rule(r: &Rule, kind: RuleKind) -> PolicyInfo {
    PolicyInfo {
        id: r.id.clone(),
        kind,
        from: r.from.to_string(),
        to: r.to.to_string(),
        proto: traffic_protos(r),
        ports: traffic_ports(r),
        action: match r.action {
            Action::Allow => RuleAction::Allow,
            Action::Deny => RuleAction::Deny,
            Action::Log => RuleAction::Log,
        },
        inspect: inspect(r),
        source: Some(r.pos.short()),
        expires: r.expires,
        description: r.description.clone(),
    }
}

/// Failsafes, then policies, then the default: the order they are evaluated in.
pub fn policies(p: &Policy) -> Vec<PolicyInfo> {
    let mut v: Vec<PolicyInfo> = p
        .failsafes
        .iter()
        .map(|r| rule(r, RuleKind::Failsafe))
        .chain(p.rules.iter().map(|r| rule(r, RuleKind::Policy)))
        .collect();
    v.push(PolicyInfo {
        id: "default".into(),
        kind: RuleKind::Default,
        from: ZONE_ANY.into(),
        to: ZONE_ANY.into(),
        proto: "any".into(),
        ports: String::new(),
        action: match p.defaults.action {
            Action::Allow => RuleAction::Allow,
            Action::Deny => RuleAction::Deny,
            Action::Log => RuleAction::Log,
        },
        inspect: None,
        source: p.defaults.pos.as_ref().map(|p| p.short()),
        expires: None,
        description: Some("what no failsafe or policy matches".into()),
    });
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// The demo rules as the console's Rules screen lists them: every policy in order with
    /// its source, the default last, and caps as the file wrote them.
    #[test]
    fn the_demo_policy_as_readers_see_it() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules/demo");
        let loaded = crate::rules::load_dir(&dir, 0);
        let Some(policy) = loaded.policy else { panic!("{:?}", loaded.diagnostics) };
        let ps = policies(&policy);
        assert_eq!(ps.len(), policy.failsafes.len() + policy.rules.len() + 1);
        let last = ps.last().map(|p| (p.id.as_str(), p.kind));
        assert_eq!(last, Some(("default", RuleKind::Default)));
        for p in &ps[..ps.len() - 1] {
            let src = p.source.as_deref().unwrap_or("");
            assert!(src.contains(".toml:"), "{}: {src}", p.id);
        }
        let zs = zones(&policy);
        assert!(zs.iter().any(|z| z.name == "default" && z.source.is_none()));
        assert!(zs.iter().any(|z| z.kind == WireZoneKind::External && !z.nets.is_empty()));
        assert!(
            zs.iter().any(|z| z.caps.egress_written.as_deref() == Some("80mbit")),
            "caps as written: {zs:?}"
        );
    }
}
