//! Merging rule files into one `Policy` and the checks that need all files at once:
//! zone references, unique ids, shadowed policies, overlapping selectors.

use std::collections::{HashMap, HashSet};

use ipnet::IpNet;
use sha2::{Digest, Sha256};

use super::diag::{suggest, Diagnostic, Severity};
use super::load::{format_unix, read_file, LoadResult, RawRule, SourceFile};
use super::model::*;

/// Loads a policy from in-memory files (in evaluation order). Pure: the fuzz target and the
/// property tests drive this directly.
pub fn load_sources(files: &[SourceFile], now: i64) -> LoadResult {
    let mut diags = Vec::new();
    let mut defaults: Option<Defaults> = None;
    let mut zones: Vec<Zone> = Vec::new();
    let mut zone_mode_set: Vec<bool> = Vec::new();
    let mut raw_rules: Vec<RawRule> = Vec::new();
    let mut raw_failsafes: Vec<RawRule> = Vec::new();
    let mut declared: Vec<String> = Vec::new();
    let err = |pos: &SourcePos, msg: String| Diagnostic::at(Severity::Error, pos, msg);
    let warn = |pos: &SourcePos, msg: String| Diagnostic::at(Severity::Warning, pos, msg);

    for file in files {
        let raw = read_file(file);
        diags.extend(raw.diags);
        if let Some((d, _)) = raw.defaults {
            match &defaults {
                Some(prev) => {
                    let here = d.pos.clone().expect("file defaults have a position");
                    diags.push(err(
                        &here,
                        format!(
                            "[defaults] already set at {}: keep one [defaults] table",
                            prev.pos.as_ref().map(|p| p.to_string()).unwrap_or_default()
                        ),
                    ));
                }
                None => defaults = Some(d),
            }
        }
        for rz in raw.zones {
            let here = rz.zone.pos.clone().expect("file zones have a position");
            if let Some(prev) = zones.iter().find(|z| z.name == rz.zone.name) {
                diags.push(err(
                    &here,
                    format!(
                        "zone `{}` is already declared at {}",
                        rz.zone.name,
                        prev.pos.as_ref().map(|p| p.to_string()).unwrap_or_default()
                    ),
                ));
                continue;
            }
            if let Some(prev) = zones.iter().find(|z| set_stem(&z.name) == set_stem(&rz.zone.name)) {
                diags.push(err(&here, format!(
                    "zone `{}` is too close to zone `{}` ({}): names that differ only in `-` vs `_` would share nftables sets",
                    rz.zone.name,
                    prev.name,
                    prev.pos.as_ref().map(|p| p.to_string()).unwrap_or_default()
                )));
                continue;
            }
            cidr_overlap_warnings(&rz.zone.name, &rz.raw_cidrs, &mut diags);
            zone_mode_set.push(rz.mode_set);
            zones.push(rz.zone);
        }
        declared.extend(raw.declared);
        raw_rules.extend(raw.policies);
        raw_failsafes.extend(raw.failsafes);
    }
    let defaults = defaults.unwrap_or_default();

    // Zones that did not set a mode take the default one; the implicit default zone comes last
    // among container zones (it only gets containers nobody else selects).
    for (z, set) in zones.iter_mut().zip(&zone_mode_set) {
        if !set {
            z.mode = defaults.mode;
        }
    }
    if !zones.iter().any(|z| z.name == ZONE_DEFAULT) {
        zones.push(Zone {
            name: ZONE_DEFAULT.into(),
            pos: None,
            kind: ZoneKind::Containers(Selector::default()),
            mode: defaults.mode,
            caps: Caps::default(),
            forward: false,
            description: Some("containers no other zone selects".into()),
        });
    }
    // Stable order: container zones (declaration order, default last), then external zones.
    zones.sort_by_key(|z| (z.is_external(), z.name == ZONE_DEFAULT));

    overlap_warnings(&zones, &mut diags);

    let zone_names: Vec<&str> = zones.iter().map(|z| z.name.as_str()).chain([ZONE_ANY]).collect();
    let check_ref = |name: &str, pos: &SourcePos, diags: &mut Vec<Diagnostic>| -> bool {
        if zone_names.contains(&name) {
            return true;
        }
        if declared.iter().any(|d| d == name) {
            return false; // the zone itself has errors, already reported
        }
        let hint = suggest(name, &zone_names).map(|s| format!("; did you mean `{s}`?")).unwrap_or_default();
        diags.push(err(pos, format!("unknown zone `{name}`{hint}")));
        false
    };
    let resolved = |raws: Vec<RawRule>, diags: &mut Vec<Diagnostic>| -> Vec<RawRule> {
        raws.into_iter()
            .filter(|r| {
                let a = check_ref(&r.rule.from, &r.from_pos, diags);
                let b = check_ref(&r.rule.to, &r.to_pos, diags);
                a && b
            })
            .collect()
    };
    let mut failsafes = resolved(raw_failsafes, &mut diags);
    let mut rules = resolved(raw_rules, &mut diags);

    for r in failsafes.iter().chain(rules.iter()) {
        let ext = |n: &str| zones.iter().any(|z| z.name == n && z.is_external());
        if ext(&r.rule.from) && ext(&r.rule.to) {
            diags.push(err(&r.rule.pos, format!(
                "`{}` -> `{}` joins two external zones: fw enforces inside containers, so this rule could never apply",
                r.rule.from, r.rule.to
            )));
        }
    }

    assign_ids(&mut failsafes, &mut rules, &mut diags);

    let failsafes: Vec<Rule> = failsafes.into_iter().map(|r| r.rule).collect();
    let rules: Vec<Rule> = rules.into_iter().map(|r| r.rule).collect();
    for r in &rules {
        if let Some(t) = r.expires.filter(|t| *t <= now) {
            diags.push(warn(
                &r.pos,
                format!("policy `{}` expired at {}: it is ignored", r.id, format_unix(t)),
            ));
        }
    }
    shadow_warnings(&zones, &failsafes, &rules, now, &mut diags);

    let has_errors = diags.iter().any(|d| d.is_error());
    diags.sort_by(|a, b| (a.path.as_ref(), a.line, a.col).cmp(&(b.path.as_ref(), b.line, b.col)));
    diags.dedup();
    let policy = (!has_errors).then(|| Policy {
        defaults,
        zones,
        failsafes,
        rules,
        hash: policy_hash(files),
        files: files.iter().map(|f| f.path.clone()).collect(),
    });
    LoadResult { policy, diagnostics: diags }
}

/// The stem of a zone's nftables set names (`web-tier` -> `web_tier`).
pub fn set_stem(zone: &str) -> String {
    zone.replace('-', "_")
}

fn policy_hash(files: &[SourceFile]) -> String {
    let mut h = Sha256::new();
    for f in files {
        let name = f.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        h.update(name.as_bytes());
        h.update([0]);
        h.update(f.text.as_bytes());
        h.update([0]);
    }
    h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Explicit ids must be unique; the others get an id derived from what the rule says, so it
/// survives reordering and edits elsewhere (`web->db:tcp/5432`, `#2` on a collision).
fn assign_ids(failsafes: &mut [RawRule], rules: &mut [RawRule], diags: &mut Vec<Diagnostic>) {
    let mut seen: HashMap<String, SourcePos> = HashMap::new();
    for r in failsafes.iter().chain(rules.iter()) {
        if let Some(pos) = &r.explicit_id {
            if let Some(prev) = seen.get(&r.rule.id) {
                diags.push(Diagnostic::at(
                    Severity::Error,
                    pos,
                    format!("duplicate id `{}`: already used at {prev}", r.rule.id),
                ));
            } else {
                seen.insert(r.rule.id.clone(), pos.clone());
            }
        }
    }
    let mut taken: HashSet<String> = seen.into_keys().collect();
    for (r, prefix) in failsafes.iter_mut().map(|r| (r, "failsafe:")).chain(rules.iter_mut().map(|r| (r, "")))
    {
        if r.explicit_id.is_some() {
            continue;
        }
        let mut base = format!("{prefix}{}->{}", r.rule.from, r.rule.to);
        if !r.rule.protos.is_any() {
            base.push(':');
            base.push_str(&r.rule.protos.to_string());
        }
        if !r.rule.ports.is_any() {
            base.push('/');
            base.push_str(&r.rule.ports.to_string());
        }
        if base.len() > 60 {
            let mut cut = 56;
            while !base.is_char_boundary(cut) {
                cut -= 1;
            }
            base.truncate(cut);
            base.push('~');
        }
        let mut id = base.clone();
        let mut n = 2;
        while taken.contains(&id) {
            id = format!("{base}#{n}");
            n += 1;
        }
        taken.insert(id.clone());
        r.rule.id = id;
    }
}

fn zone_covers(zones: &[Zone], outer: &str, inner: &str) -> bool {
    if outer == ZONE_ANY || outer == inner {
        return true;
    }
    let cidrs = |n: &str| {
        zones.iter().find(|z| z.name == n).and_then(|z| match &z.kind {
            ZoneKind::External(nets) => Some(nets.clone()),
            _ => None,
        })
    };
    match (cidrs(outer), cidrs(inner)) {
        (Some(o), Some(i)) => i.iter().all(|n| o.iter().any(|m| m.contains(n))),
        _ => false,
    }
}

/// Whether some traffic can match both zones: the same zone, `any`, or external zones whose
/// networks meet. Two different container zones never share a container (a container
/// joins the first zone that selects it).
fn zones_meet(zones: &[Zone], x: &str, y: &str) -> bool {
    if x == ZONE_ANY || y == ZONE_ANY || x == y {
        return true;
    }
    let cidrs = |n: &str| {
        zones.iter().find(|z| z.name == n).and_then(|z| match &z.kind {
            ZoneKind::External(nets) => Some(nets.clone()),
            _ => None,
        })
    };
    match (cidrs(x), cidrs(y)) {
        (Some(a), Some(b)) => a.iter().any(|m| b.iter().any(|n| m.contains(n) || n.contains(m))),
        _ => false,
    }
}

/// Whether some traffic matches both rules.
fn overlaps(zones: &[Zone], a: &Rule, b: &Rule) -> bool {
    let shared = a.protos.and(&b.protos);
    let ports_matter = shared.tcp || shared.udp;
    zones_meet(zones, &a.from, &b.from)
        && zones_meet(zones, &a.to, &b.to)
        && (shared.tcp || shared.udp || shared.icmp)
        && (!ports_matter || a.ports.intersects(&b.ports))
}

fn covers(zones: &[Zone], a: &Rule, b: &Rule) -> bool {
    zone_covers(zones, &a.from, &b.from)
        && zone_covers(zones, &a.to, &b.to)
        && a.protos.contains(&b.protos)
        && a.ports.covers(&b.ports)
}

fn shadow_warnings(
    zones: &[Zone],
    failsafes: &[Rule],
    rules: &[Rule],
    now: i64,
    diags: &mut Vec<Diagnostic>,
) {
    let live: Vec<&Rule> = rules.iter().filter(|r| !r.is_expired(now)).collect();
    for (j, b) in live.iter().enumerate() {
        if let Some(f) = failsafes.iter().find(|f| covers(zones, f, b)) {
            if b.action == Action::Deny {
                diags.push(Diagnostic::at(Severity::Warning, &b.pos, format!(
                    "policy `{}` can never deny: failsafe `{}` ({}) allows this traffic first, and no policy can remove a failsafe",
                    b.id, f.id, f.pos.short()
                )));
            }
            continue;
        }
        // A failsafe allowing part of a deny: that part can never be denied.
        if b.action == Action::Deny {
            if let Some(f) = failsafes.iter().find(|f| overlaps(zones, f, b)) {
                diags.push(Diagnostic::at(Severity::Warning, &b.pos, format!(
                    "policy `{}` cannot deny all it matches: failsafe `{}` ({}) allows the traffic they share first ({} -> {}, {}{}), and no policy can remove a failsafe",
                    b.id,
                    f.id,
                    f.pos.short(),
                    f.from,
                    f.to,
                    f.protos.and(&b.protos),
                    if f.ports.is_any() { String::new() } else { format!(" ports {}", f.ports) },
                )));
            }
        }
        if let Some(a) = live[..j].iter().find(|a| covers(zones, a, b)) {
            let why = if a.action == b.action { "it is redundant" } else { "it never decides any traffic" };
            diags.push(Diagnostic::at(
                Severity::Warning,
                &b.pos,
                format!(
                    "policy `{}` is shadowed by `{}` ({}), which matches everything it matches first: {why}",
                    b.id,
                    a.id,
                    a.pos.short()
                ),
            ));
        }
    }
}

fn overlap_warnings(zones: &[Zone], diags: &mut Vec<Diagnostic>) {
    let selectors: Vec<(&Zone, &Selector)> = zones
        .iter()
        .filter_map(|z| match &z.kind {
            ZoneKind::Containers(s) if !s.is_empty() => Some((z, s)),
            _ => None,
        })
        .collect();
    for (j, (zb, sb)) in selectors.iter().enumerate() {
        if let Some((za, _)) = selectors[..j].iter().find(|(_, sa)| sa.may_overlap(sb)) {
            if let Some(pos) = &zb.pos {
                diags.push(Diagnostic::at(Severity::Warning, pos, format!(
                    "zone `{}` may select the same containers as zone `{}` ({}): such a container joins `{}`, declared first",
                    zb.name, za.name, za.pos.as_ref().map(|p| p.short()).unwrap_or_default(), za.name
                )));
            }
        }
    }
}

/// Overlapping CIDRs inside one zone are merged; say so, since it often hides a typo.
fn cidr_overlap_warnings(zone: &str, cidrs: &[(IpNet, SourcePos)], diags: &mut Vec<Diagnostic>) {
    let span = |n: &IpNet| -> (bool, u128, u128) {
        match n {
            IpNet::V4(v) => (false, u32::from(v.network()).into(), u32::from(v.broadcast()).into()),
            IpNet::V6(v) => (true, u128::from(v.network()), u128::from(v.broadcast())),
        }
    };
    let mut sorted: Vec<(bool, u128, u128, &IpNet, &SourcePos)> = cidrs
        .iter()
        .map(|(n, p)| {
            let (f, a, b) = span(n);
            (f, a, b, n, p)
        })
        .collect();
    sorted.sort_by_key(|(f, a, b, _, _)| (*f, *a, std::cmp::Reverse(*b)));
    let mut reach: Option<(bool, u128, &IpNet)> = None;
    for (f, a, b, n, p) in sorted {
        match reach {
            Some((rf, end, prev)) if rf == f && a <= end => {
                diags.push(Diagnostic::at(
                    Severity::Warning,
                    p,
                    format!("`{n}` overlaps `{prev}` in zone `{zone}`; they are merged"),
                ));
                if b > end {
                    reach = Some((f, b, n));
                }
            }
            _ => reach = Some((f, b, n)),
        }
    }
}
