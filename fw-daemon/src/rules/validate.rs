//! Merging rule files into one `Policy` and the checks that need all files at once:
//! zone references, unique ids, shadowed policies, overlapping selectors.

use std::collections::{HashMap, HashSet};

use ipnet::IpNet;
use sha2::{Digest, Sha256};

use super::diag::{suggest, Diagnostic, Severity};
use super::load::{format_unix, read_file, LoadResult, RawRule, SourceFile};
use super::model::*;

/// Loads and validates a rules directory. `now` (unix seconds) decides which rules have expired.
pub fn load_dir(dir: &std::path::Path, now: i64) -> LoadResult {
    match super::load::read_dir(dir) {
        Ok(files) => load_sources(&files, now),
        Err(diagnostics) => LoadResult { policy: None, diagnostics },
    }
}

/// Loads a policy from in-memory files (in evaluation order). Pure: the fuzz target and the
/// property tests drive this directly.
pub fn load_sources(files: &[SourceFile], now: i64) -> LoadResult {
    let mut diags = Vec::new();
    let mut defaults: Option<Defaults> = None;
    let mut zones: Vec<Zone> = Vec::new();
    let mut zone_mode_set: Vec<bool> = Vec::new();
    let mut services: Vec<Service> = Vec::new();
    let mut raw_rules: Vec<RawRule> = Vec::new();
    let mut raw_failsafes: Vec<RawRule> = Vec::new();
    let mut declared: Vec<String> = Vec::new();
    let mut declared_services: Vec<String> = Vec::new();
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
        for sv in raw.services {
            if let Some(prev) = services.iter().find(|s| s.name == sv.name) {
                diags
                    .push(err(&sv.pos, format!("service `{}` is already declared at {}", sv.name, prev.pos)));
                continue;
            }
            services.push(sv);
        }
        declared.extend(raw.declared);
        declared_services.extend(raw.declared_services);
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
    // What may be named: the zones, those with errors too (reported where they are declared).
    let mut known: Vec<&str> = zones.iter().map(|z| z.name.as_str()).collect();
    for d in &declared {
        if !known.contains(&d.as_str()) {
            known.push(d);
        }
    }
    known.push(ZONE_ANY);
    let check_ref = |name: &str, pos: &SourcePos, diags: &mut Vec<Diagnostic>| -> bool {
        if zone_names.contains(&name) {
            return true;
        }
        if declared.iter().any(|d| d == name) {
            return false; // the zone itself has errors, already reported
        }
        let hint = suggest(name, &known).map(|s| format!("; did you mean `{s}`?")).unwrap_or_default();
        diags.push(
            err(pos, format!("unknown zone `{name}`{hint}"))
                .label("no such zone")
                .note(format!("zones: {}", known.join(", "))),
        );
        false
    };
    let service_names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
    let mut used_services: HashSet<String> = HashSet::new();
    let mut resolved = |raws: Vec<RawRule>, diags: &mut Vec<Diagnostic>| -> Vec<RawRule> {
        raws.into_iter()
            .filter_map(|mut r| {
                let mut ok = true;
                for (name, pos) in r.rule.from.iter().zip(&r.from_pos).chain(r.rule.to.iter().zip(&r.to_pos)) {
                    ok &= check_ref(name, pos, diags);
                }
                for (name, pos) in &r.services {
                    used_services.insert(name.clone());
                    match services.iter().find(|s| &s.name == name) {
                        Some(s) => r.rule.traffic.push(s.traffic.clone()),
                        None if declared_services.contains(name) => ok = false, // reported there
                        None => {
                            let hint = suggest(name, &service_names)
                                .map(|s| format!("; did you mean `{s}`?"))
                                .unwrap_or_default();
                            let note = if service_names.is_empty() {
                                "no service is declared: declare one as [service.NAME] with `proto` and `ports`".to_string()
                            } else {
                                format!("services: {}", service_names.join(", "))
                            };
                            diags.push(err(pos, format!("unknown service `{name}`{hint}")).label("no such service").note(note));
                            ok = false;
                        }
                    }
                }
                if !ok {
                    return None;
                }
                r.rule.services = r.services.iter().map(|(n, _)| n.clone()).collect();
                // What `inspect` needs of a rule's transports, now that its services are known.
                if let (Some(insp), Some(pos), false) = (&r.rule.inspect, &r.inspect_pos, r.services.is_empty()) {
                    let tcp = r.rule.traffic.iter().any(|t| t.protos.tcp);
                    let udp = r.rule.traffic.iter().any(|t| t.protos.udp);
                    let fits = match insp.protocol {
                        Some(AppProto::Tls) | Some(AppProto::Http) => tcp,
                        Some(AppProto::Dns) => tcp || udp,
                        None => true,
                    };
                    if !fits {
                        diags.push(err(pos, "inspecting needs a policy that covers its transport, and none of its services does (tls and http need tcp, dns tcp or udp)".into()));
                        return None;
                    }
                }
                Some(r)
            })
            .collect()
    };
    let mut failsafes = resolved(raw_failsafes, &mut diags);
    let mut rules = resolved(raw_rules, &mut diags);

    for s in &services {
        if !used_services.contains(&s.name) {
            diags.push(warn(
                &s.pos,
                format!("service `{}` is declared but no policy or failsafe names it", s.name),
            ));
        }
    }

    for r in failsafes.iter().chain(rules.iter()) {
        let ext = |n: &str| zones.iter().any(|z| z.name == n && z.is_external());
        let pairs: Vec<(&str, &str)> =
            r.rule.from.iter().flat_map(|f| r.rule.to.iter().map(move |t| (f, t))).collect();
        let dead: Vec<&(&str, &str)> = pairs.iter().filter(|(f, t)| ext(f) && ext(t)).collect();
        if dead.len() == pairs.len() {
            diags.push(err(&r.rule.pos, format!(
                "`{}` -> `{}` joins two external zones: fw enforces inside containers, so this rule could never apply",
                r.rule.from, r.rule.to
            )));
        } else {
            for (f, t) in dead {
                diags.push(warn(&r.rule.pos, format!(
                    "`{f}` -> `{t}` joins two external zones: fw enforces inside containers, so that part of this rule never applies"
                )));
            }
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
    // By position, stable: a cause comes before what follows from it on the same spot.
    diags.sort_by(|a, b| (a.path.as_ref(), a.line, a.col).cmp(&(b.path.as_ref(), b.line, b.col)));
    diags.dedup();
    let policy = (!has_errors).then(|| Policy {
        defaults,
        zones,
        failsafes,
        rules,
        services,
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
/// survives reordering and edits elsewhere (`web->db:tcp/5432`, `web,api->db:https`, `#2`
/// on a collision).
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
        if !r.rule.services.is_empty() {
            base.push(':');
            base.push_str(&r.rule.services.join(","));
        } else if let Some(t) = r.rule.traffic.first().filter(|t| !t.is_any()) {
            base.push(':');
            base.push_str(&t.to_string());
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
    let (Some(o), Some(i)) = (zones.iter().find(|z| z.name == outer), zones.iter().find(|z| z.name == inner))
    else {
        return false;
    };
    // Containers of another zone are never in this one: only networks can be covered.
    i.selector().is_none()
        && !o.cidrs().is_empty()
        && i.cidrs().iter().all(|n| o.cidrs().iter().any(|m| m.contains(n)))
}

/// Whether some traffic can match both zones: the same zone, `any`, or zones whose networks
/// meet. Two different zones never share a container (a container joins the first zone
/// that selects it).
fn zones_meet(zones: &[Zone], x: &str, y: &str) -> bool {
    if x == ZONE_ANY || y == ZONE_ANY || x == y {
        return true;
    }
    let cidrs = |n: &str| zones.iter().find(|z| z.name == n).map(|z| z.cidrs()).unwrap_or(&[]);
    cidrs(x).iter().any(|m| cidrs(y).iter().any(|n| m.contains(n) || n.contains(m)))
}

/// Every zone of `inner` is covered by some zone of `outer`.
fn refs_cover(zones: &[Zone], outer: &ZoneRefs, inner: &ZoneRefs) -> bool {
    inner.iter().all(|i| outer.iter().any(|o| zone_covers(zones, o, i)))
}

/// The first pair of zones, one from each, that traffic can match both of.
fn refs_meet<'r>(zones: &[Zone], a: &'r ZoneRefs, b: &'r ZoneRefs) -> Option<(&'r str, &'r str)> {
    a.iter().flat_map(|x| b.iter().map(move |y| (x, y))).find(|(x, y)| zones_meet(zones, x, y))
}

/// What some packet matches in both rules: the zones they meet in and the protocols shared
/// (with `a`'s ports and types), or `None`.
fn overlap(zones: &[Zone], a: &Rule, b: &Rule) -> Option<(String, String, Traffic)> {
    let (af, bf) = refs_meet(zones, &a.from, &b.from)?;
    let (at, bt) = refs_meet(zones, &a.to, &b.to)?;
    let pick = |x: &str, y: &str| if x == ZONE_ANY { y.to_string() } else { x.to_string() };
    a.traffic.iter().flat_map(|ta| b.traffic.iter().map(move |tb| (ta, tb))).find_map(|(ta, tb)| {
        let shared = ta.shared(tb);
        (!shared.is_empty()).then(|| {
            let t = Traffic {
                protos: shared,
                ports: if shared.has_ports() { ta.ports.clone() } else { Ports::default() },
                icmp: if shared.icmp { ta.icmp.clone() } else { IcmpTypes::default() },
            };
            (pick(af, bf), pick(at, bt), t)
        })
    })
}

fn covers(zones: &[Zone], a: &Rule, b: &Rule) -> bool {
    refs_cover(zones, &a.from, &b.from)
        && refs_cover(zones, &a.to, &b.to)
        && b.traffic.iter().all(|tb| a.traffic.iter().any(|ta| ta.covers(tb)))
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
            if let Some((f, (from, to, t))) =
                failsafes.iter().find_map(|f| overlap(zones, f, b).map(|o| (f, o)))
            {
                diags.push(Diagnostic::at(Severity::Warning, &b.pos, format!(
                    "policy `{}` cannot deny all it matches: failsafe `{}` ({}) allows the traffic they share first ({from} -> {to}, {}{}{}), and no policy can remove a failsafe",
                    b.id,
                    f.id,
                    f.pos.short(),
                    t.protos,
                    if t.ports.is_any() { String::new() } else { format!(" ports {}", t.ports) },
                    if t.icmp.is_any() { String::new() } else { format!(" types {}", t.icmp) },
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
    let selectors: Vec<(&Zone, &Selector)> =
        zones.iter().filter_map(|z| z.selector().filter(|s| !s.is_empty()).map(|s| (z, s))).collect();
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
