//! Human output: pure functions from answers to text. Times are rendered against a `now`
//! (unix seconds) passed in, so the output is deterministic in tests. Absolute times are UTC.

use std::fmt::Write as _;
use std::net::IpAddr;

use fw_proto::control::{
    Alert, Answer, AuditRecord, BlockInfo, Direction, Event, FlowRow, FlowSnapshot, Inspection, Proto,
    StatusInfo,
};
use fw_proto::{RuleKind, RuleRef};

/// Renders any answer; every output ends with a newline.
pub fn answer(a: &Answer, now: i64) -> String {
    match a {
        Answer::Hello { version, daemon, role, user } => {
            format!("fw-daemon {daemon} (protocol {version}): connected as {user} ({role})\n")
        }
        Answer::Status(s) => status(s, now),
        Answer::Flows(f) => flows(f, None),
        Answer::Subscribed { sub } => format!("subscribed ({sub})\n"),
        Answer::Unsubscribed { sub } => format!("unsubscribed ({sub})\n"),
        Answer::Blocked { block } => blocked(block, now),
        Answer::Unblocked { block, remaining } => unblocked(block, remaining, now),
        Answer::Blocks { blocks: b } => blocks(b, now),
        Answer::Audit { records } => audit(records, now),
        Answer::Reloaded { policy_hash, rejected } => reloaded(policy_hash, rejected),
        Answer::Alerts { alerts: list } => alerts(list),
    }
}

pub fn status(s: &StatusInfo, now: i64) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "fw-daemon {}, pid {}, up {}", s.daemon_version, s.pid, duration(s.uptime_ms / 1000));
    let _ = writeln!(o, "policy {}, loaded {}", s.policy_hash, when(s.loaded_at_ms.div_euclid(1000), now));
    if !s.last_reload_errors.is_empty() {
        let n = s.last_reload_errors.len();
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "!! LAST RELOAD REJECTED ({n} error{}): still enforcing the policy above. Fix and reload:",
            plural(n)
        );
        for e in &s.last_reload_errors {
            let _ = writeln!(o, "!!   {e}");
        }
    }
    if let Some(a) = s.audit.as_ref().filter(|a| a.broken_since_ms.is_some()) {
        let since = a.broken_since_ms.map_or_else(String::new, |t| format!(" since {}", when(t / 1000, now)));
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "!! AUDIT TRAIL BROKEN{since}: {} cannot be written ({}).",
            a.path,
            a.error.as_deref().unwrap_or("unknown error")
        );
        let _ = writeln!(
            o,
            "!!   blocks, unblocks and reloads are refused until it can; {} record{} of the daemon's own actions lost",
            a.lost,
            plural(a.lost as usize)
        );
    }
    if !s.inventory_errors.is_empty() {
        let n = s.inventory_errors.len();
        let _ = writeln!(o);
        let what = if s.inventory_last_good {
            "enforcing the last good inventory from the state directory"
        } else {
            "containers stay as they were"
        };
        let file = s.inventory.as_deref().unwrap_or("the inventory");
        let _ = writeln!(o, "!! INVENTORY REJECTED ({file}, {n} error{}): {what}. Fix it:", plural(n));
        for e in &s.inventory_errors {
            let _ = writeln!(o, "!!   {e}");
        }
    }
    let _ = writeln!(o);
    if s.containers.is_empty() {
        let _ = writeln!(o, "no containers");
    } else {
        let _ = writeln!(o, "containers ({}):", s.containers.len());
        let mut t = Table::new(&["NAME", "ZONE", "MODE", "ADDRESSES", "PROGRAMMED"]);
        for c in &s.containers {
            let addrs: Vec<String> = c.addresses.iter().map(IpAddr::to_string).collect();
            t.row(vec![
                c.name.clone(),
                c.zone.clone(),
                c.mode.to_string(),
                if addrs.is_empty() { "-".into() } else { addrs.join(", ") },
                if c.programmed { "yes".into() } else { "NO".into() },
            ]);
        }
        o.push_str(&t.render());
    }
    let _ = writeln!(o);
    let _ = write!(o, "flows {}, active blocks {}, lost events {}", s.flows, s.active_blocks, s.lost_events);
    if s.lost_events > 0 {
        o.push_str(" (the kernel dropped events: flow counts may be low)");
    }
    o.push('\n');
    if s.flows_dropped_open > 0 {
        let _ = writeln!(
            o,
            "{} rows of open flows dropped: the flow table was full (raise max_flows to see them)",
            s.flows_dropped_open
        );
    }
    o
}

/// A flow snapshot; `limit` caps the rows shown (the snapshot's own limit already applied).
pub fn flows(f: &FlowSnapshot, limit: Option<usize>) -> String {
    let mut o = String::new();
    if f.flows.is_empty() {
        o.push_str("no flows match\n");
    } else {
        o.push_str(&flow_table(&f.flows, limit));
        let shown = limit.map_or(f.flows.len(), |l| l.min(f.flows.len()));
        if f.total > shown {
            let _ = writeln!(o, "{shown} of {} matching flows shown (newest first; see --limit)", f.total);
        }
    }
    lost(&mut o, f.lost_events);
    o
}

/// One event of a `flows --follow` stream. `now` stamps the header; `limit` caps the rows.
pub fn event(e: &Event, now: i64, limit: Option<usize>) -> String {
    let mut o = String::new();
    match e {
        Event::Flows { changed, removed, total, lost_events, full } => {
            let time = utc(now);
            let time = time.split(' ').nth(1).unwrap_or(&time);
            if *full {
                let _ = writeln!(o, "== {time} full view: {total} matching flow{}", plural(*total));
            } else {
                let _ = writeln!(
                    o,
                    "-- {time} {} changed, {} gone, {total} matching",
                    changed.len(),
                    removed.len()
                );
            }
            if !changed.is_empty() {
                o.push_str(&flow_table(changed, limit));
            }
            lost(&mut o, *lost_events);
        }
        Event::Alert(a) => o.push_str(&alert_line(a)),
    }
    o
}

/// Alerts, oldest first, one line each.
pub fn alerts(list: &[Alert]) -> String {
    if list.is_empty() {
        return "no alerts\n".into();
    }
    list.iter().map(alert_line).collect()
}

/// `2026-11-27 01:02:03 tamper web-1: message (policy x (file:3))`
pub fn alert_line(a: &Alert) -> String {
    let mut o = format!("{} {}", utc(a.time_ms / 1000), a.kind);
    if let Some(c) = &a.container {
        let _ = write!(o, " {c}");
    }
    let _ = write!(o, ": {}", a.message);
    if let Some(r) = &a.rule {
        let _ = write!(o, " ({r})");
    }
    o.push('\n');
    o
}

fn lost(o: &mut String, n: u64) {
    if n > 0 {
        let _ = writeln!(o, "warning: the kernel dropped {n} event{}: counts may be low", plural(n as usize));
    }
}

/// The flow table: container, direction, protocol, endpoints, peer, state, bytes, verdict,
/// rule, count. At most `limit` rows, with a note of how many more there were.
pub fn flow_table(rows: &[FlowRow], limit: Option<usize>) -> String {
    let n = limit.map_or(rows.len(), |l| l.min(rows.len()));
    let shown = &rows[..n];
    // The inspection column appears only when a shown row was inspected.
    let inspected = shown.iter().any(|r| r.inspection.is_some());
    let mut headers =
        vec!["CONTAINER", "DIR", "PROTO", "FLOW", "PEER", "STATE", "OUT/IN", "VERDICT", "RULE", "COUNT"];
    if inspected {
        headers.push("INSPECTED");
    }
    let mut t = Table::new(&headers).right(&[9]);
    for r in shown {
        let mut cells = vec![
            r.container.clone(),
            match r.direction {
                Direction::Egress => "out".into(),
                Direction::Ingress => "in".into(),
            },
            r.proto.to_string(),
            format!("{} -> {}", endpoint(r.proto, r.src, r.sport), endpoint(r.proto, r.dst, r.dport)),
            peer(r.peer.as_deref(), r.peer_zone.as_deref()),
            r.state.clone(),
            format!("{}/{}", bytes(r.bytes_out), bytes(r.bytes_in)),
            r.verdict.to_string(),
            r.rule.as_ref().map_or_else(|| "-".into(), rule),
            r.count.to_string(),
        ];
        if inspected {
            cells.push(r.inspection.as_ref().map_or_else(|| "-".into(), inspection));
        }
        t.row(cells);
    }
    let mut o = t.render();
    if n < rows.len() {
        let _ = writeln!(o, "... and {} more", rows.len() - n);
    }
    o
}

/// `tls api.example.com`, `http evil.example VIOLATION: Host evil.example not in http_host`.
pub fn inspection(i: &Inspection) -> String {
    let mut o = i.protocol.clone().unwrap_or_else(|| "?".into());
    if let Some(name) = &i.name {
        let _ = write!(o, " {name}");
    }
    if let Some(v) = &i.violation {
        let _ = write!(o, " VIOLATION: {v}");
    }
    o
}

/// `addr:port` (`[v6]:port`), or the bare address for protocols without ports.
pub fn endpoint(proto: Proto, ip: IpAddr, port: u16) -> String {
    match (proto.has_ports(), ip) {
        (false, ip) => ip.to_string(),
        (true, IpAddr::V4(a)) => format!("{a}:{port}"),
        (true, IpAddr::V6(a)) => format!("[{a}]:{port}"),
    }
}

/// `db-1(db)`, `(db)` when only the zone is known, `-` when neither.
pub fn peer(name: Option<&str>, zone: Option<&str>) -> String {
    match (name, zone) {
        (Some(n), Some(z)) => format!("{n}({z})"),
        (Some(n), None) => n.to_string(),
        (None, Some(z)) => format!("({z})"),
        (None, None) => "-".into(),
    }
}

/// A rule as `id (path:line)`; kinds other than policies are named (`cap web-conns`), and
/// the default is just `default`.
pub fn rule(r: &RuleRef) -> String {
    let mut s = match r.kind {
        RuleKind::Default => "default".to_string(),
        RuleKind::Policy => r.id.clone(),
        k => format!("{k} {}", r.id),
    };
    if let Some(src) = &r.source {
        let _ = write!(s, " ({src})");
    }
    s
}

pub fn blocked(b: &BlockInfo, now: i64) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "block {}: {}", b.id, b.target);
    if let Some(r) = &b.reason {
        let _ = writeln!(o, "  reason:     {r}");
    }
    match b.expires_at_ms {
        Some(t) => {
            let _ = writeln!(o, "  expires:    {}", when(secs_up(t), now));
        }
        None => {
            let _ = writeln!(o, "  expires:    never (until `fw-tui unblock {}`)", b.id);
        }
    }
    if b.containers.is_empty() {
        let _ = writeln!(o, "  applied to: no container yet (applies when a matching one starts)");
    } else {
        let _ = writeln!(o, "  applied to: {}", b.containers.join(", "));
    }
    let _ = writeln!(o, "  flows cut:  {}", b.flows_cut);
    o
}

pub fn unblocked(b: &BlockInfo, remaining: &[BlockInfo], now: i64) -> String {
    let mut o = format!(
        "removed block {}: {}\n  created by {} {}\n",
        b.id,
        b.target,
        b.created_by,
        ago(b.created_at_ms.div_euclid(1000), now)
    );
    if remaining.is_empty() {
        let _ = writeln!(o, "  nothing else blocks what it blocked");
    }
    for r in remaining {
        let _ = writeln!(o, "  still applies: block {}: {} (on {})", r.id, r.target, r.containers.join(", "));
    }
    o
}

/// One line for a lifted block: what it was, and what still applies.
pub fn unblocked_line(b: &BlockInfo, remaining: &[BlockInfo]) -> String {
    let mut line = format!("block {} lifted: {}", b.id, b.target);
    if !remaining.is_empty() {
        let still: Vec<String> = remaining.iter().map(|r| format!("#{} {}", r.id, r.target)).collect();
        line.push_str(&format!("; still blocked by {}", still.join(", ")));
    }
    line
}

/// Active blocks: the operators' first, then the daemon's own (inspection, tamper
/// escalation), each under its heading.
pub fn blocks(bs: &[BlockInfo], now: i64) -> String {
    if bs.is_empty() {
        return "no active blocks\n".into();
    }
    let (auto, manual): (Vec<&BlockInfo>, Vec<&BlockInfo>) = bs.iter().partition(|b| b.origin.is_automatic());
    let mut o = String::new();
    for (title, list) in
        [("operator blocks", manual), ("automatic blocks (inspection, tamper escalation)", auto)]
    {
        if list.is_empty() {
            continue;
        }
        if !o.is_empty() {
            o.push('\n');
        }
        let _ = writeln!(o, "{title}:");
        o.push_str(&block_table(&list, now));
    }
    o
}

fn block_table(bs: &[&BlockInfo], now: i64) -> String {
    let mut t = Table::new(&["ID", "TARGET", "REASON", "CREATED BY", "CREATED", "EXPIRES"]).right(&[0]);
    for b in bs {
        t.row(vec![
            b.id.to_string(),
            b.target.to_string(),
            b.reason.clone().unwrap_or_else(|| "-".into()),
            b.created_by.clone(),
            ago(b.created_at_ms.div_euclid(1000), now),
            match b.expires_at_ms.map(secs_up) {
                None => "never".into(),
                Some(t) if t <= now => "expired".into(),
                Some(t) => ago(t, now),
            },
        ]);
    }
    t.render()
}

pub fn audit(records: &[AuditRecord], now: i64) -> String {
    if records.is_empty() {
        return "no audit records\n".into();
    }
    let mut t = Table::new(&["TIME", "AGO", "WHO", "OP", "DETAILS", "RESULT"]);
    for r in records {
        let secs = r.time_ms.div_euclid(1000);
        let who = match (&r.peer, r.role, &r.actor) {
            (Some(p), Some(role), _) => format!("{} ({role})", p.user),
            (Some(p), None, _) => format!("{} (no role)", p.user),
            (None, _, Some(a)) => format!("auto: {a}"),
            (None, _, None) => "auto: fw-daemon".into(),
        };
        let mut d: Vec<String> = Vec::new();
        if let Some(b) = r.block {
            d.push(format!("block {b}"));
        }
        if let Some(x) = r.subject() {
            d.push(x);
        }
        if let Some(x) = r.ttl_ms.map(|m| m.div_ceil(1000)) {
            d.push(format!("ttl {}", duration(x)));
        }
        if let Some(x) = &r.reason {
            d.push(format!("reason {x:?}"));
        }
        if let Some(x) = &r.policy_hash {
            d.push(format!("policy {}", short_hash(x)));
        }
        if let Some(x) = &r.summary {
            d.push(x.clone());
        }
        t.row(vec![
            utc(secs),
            ago(secs, now),
            who,
            r.op.to_string(),
            if d.is_empty() { "-".into() } else { d.join("; ") },
            r.result.to_string(),
        ]);
    }
    t.render()
}

pub fn reloaded(policy_hash: &str, rejected: &[String]) -> String {
    if rejected.is_empty() {
        return format!("reloaded: policy {policy_hash}\n");
    }
    let n = rejected.len();
    let mut o = format!("reload REJECTED ({n} error{}): still enforcing policy {policy_hash}\n", plural(n));
    for e in rejected {
        let _ = writeln!(o, "  {e}");
    }
    o
}

fn short_hash(h: &str) -> &str {
    // Hashes may carry an `algo:` prefix; keep it and 12 digits.
    let cut = h.find(':').map_or(0, |i| i + 1) + 12;
    h.get(..cut).unwrap_or(h)
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// `2024-05-01 12:00:00Z (3m ago)`.
/// Unix milliseconds as seconds, rounded up: an expiry read in seconds never comes early.
pub fn secs_up(ms: i64) -> i64 {
    ms.saturating_add(999).div_euclid(1000)
}

pub fn when(t: i64, now: i64) -> String {
    format!("{} ({})", utc(t), ago(t, now))
}

/// Relative time: `3m ago`, `in 14m`, `now`.
pub fn ago(t: i64, now: i64) -> String {
    let d = now.saturating_sub(t);
    match d {
        0 => "now".into(),
        d if d > 0 => format!("{} ago", duration(d.unsigned_abs())),
        d => format!("in {}", duration(d.unsigned_abs())),
    }
}

/// A duration in at most two units: `45s`, `3m`, `3m 20s`, `2h 5m`, `3d 4h`.
pub fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    let two = |a: u64, ua: &str, b: u64, ub: &str| {
        if b == 0 {
            format!("{a}{ua}")
        } else {
            format!("{a}{ua} {b}{ub}")
        }
    };
    if d > 0 {
        two(d, "d", h, "h")
    } else if h > 0 {
        two(h, "h", m, "m")
    } else if m > 0 {
        two(m, "m", s, "s")
    } else {
        format!("{s}s")
    }
}

/// Bytes in binary units: `512 B`, `1.5 KiB`, `3.2 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if v < 10.0 {
        format!("{v:.1} {}", UNITS[u])
    } else {
        format!("{v:.0} {}", UNITS[u])
    }
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SSZ` (UTC).
pub fn utc(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let rem = t.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

/// A plain-text table: columns separated by two spaces, left-aligned unless marked right.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    right: Vec<usize>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table { header: header.iter().map(|s| s.to_string()).collect(), rows: Vec::new(), right: Vec::new() }
    }

    /// Right-aligns these columns (numbers).
    pub fn right(mut self, cols: &[usize]) -> Table {
        self.right = cols.to_vec();
        self
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let width = |s: &str| s.chars().count();
        let mut w: Vec<usize> = self.header.iter().map(|h| width(h)).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                if i < w.len() {
                    w[i] = w[i].max(width(c));
                }
            }
        }
        let mut o = String::new();
        for r in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, c) in r.iter().enumerate().take(w.len()) {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = " ".repeat(w[i] - width(c));
                if self.right.contains(&i) {
                    line.push_str(&pad);
                    line.push_str(c);
                } else {
                    line.push_str(c);
                    line.push_str(&pad);
                }
            }
            o.push_str(line.trim_end());
            o.push('\n');
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fw_proto::control::{BlockDirection, BlockTarget, ContainerInfo, FlowVerdict, Peer, Role, Scope};
    use fw_proto::Mode;

    /// 2024-05-01 12:00:00Z.
    const NOW: i64 = 1_714_564_800;

    fn status_info() -> StatusInfo {
        StatusInfo {
            daemon_version: "0.1.0".into(),
            pid: 4242,
            uptime_ms: (3 * 86_400 + 4 * 3600 + 59) * 1000,
            policy_hash: "sha256:9f2c1ab04e77d3c1".into(),
            loaded_at_ms: (NOW - 180) * 1000,
            last_reload_errors: vec!["rules/demo/20-policies.toml:14:9: error: unknown zone \"dbb\"".into()],
            containers: vec![
                ContainerInfo {
                    name: "web-1".into(),
                    zone: "web".into(),
                    mode: Mode::Enforce,
                    addresses: vec!["10.0.0.2".parse().unwrap(), "fd00::2".parse().unwrap()],
                    programmed: true,
                    ..Default::default()
                },
                ContainerInfo {
                    name: "db-1".into(),
                    zone: "db".into(),
                    mode: Mode::Audit,
                    addresses: vec![],
                    programmed: false,
                    ..Default::default()
                },
            ],
            flows: 120,
            lost_events: 3,
            active_blocks: 1,
            ..Default::default()
        }
    }

    pub(crate) fn rows() -> Vec<FlowRow> {
        let base = FlowRow {
            id: 1,
            container: "web-1".into(),
            zone: "web".into(),
            direction: Direction::Egress,
            proto: Proto::Tcp,
            src: "10.0.0.2".parse().unwrap(),
            sport: 40000,
            dst: "10.0.0.3".parse().unwrap(),
            dport: 5432,
            peer: Some("db-1".into()),
            peer_zone: Some("db".into()),
            state: "ESTABLISHED".into(),
            bytes_out: 1536,
            bytes_in: 3 * 1024 * 1024 + 200 * 1024,
            packets_out: 10,
            packets_in: 20,
            rate_out: 0,
            rate_in: 0,
            first_seen_ms: (NOW - 60) * 1000,
            last_seen_ms: NOW * 1000,
            verdict: FlowVerdict::Allowed,
            rule: Some(RuleRef {
                kind: RuleKind::Policy,
                id: "web-to-db".into(),
                source: Some("rules/demo/20-policies.toml:12".into()),
            }),
            count: 1,
            open: true,
            inspection: None,
        };
        vec![
            base.clone(),
            FlowRow {
                id: 2,
                direction: Direction::Ingress,
                proto: Proto::Udp,
                src: "fd00::9".parse().unwrap(),
                sport: 5353,
                dst: "fd00::2".parse().unwrap(),
                dport: 53,
                peer: None,
                peer_zone: Some("world".into()),
                state: "dropped".into(),
                bytes_out: 0,
                bytes_in: 0,
                verdict: FlowVerdict::Denied,
                rule: Some(RuleRef { kind: RuleKind::Default, id: "default".into(), source: None }),
                count: 17,
                open: false,
                ..base.clone()
            },
            FlowRow {
                id: 3,
                proto: Proto::Icmp,
                dst: "192.0.2.1".parse().unwrap(),
                sport: 0,
                dport: 0,
                peer: None,
                peer_zone: None,
                state: "open".into(),
                bytes_out: 84,
                bytes_in: 84,
                verdict: FlowVerdict::CapHit,
                rule: Some(RuleRef { kind: RuleKind::Cap, id: "web-conns".into(), source: None }),
                count: 2,
                ..base
            },
        ]
    }

    fn block(id: u64, target: BlockTarget, expires_at: Option<i64>) -> BlockInfo {
        BlockInfo {
            id,
            target,
            reason: Some("suspected exfil".into()),
            created_at_ms: (NOW - 120) * 1000,
            expires_at_ms: expires_at.map(|t| t * 1000),
            created_by: "alice (uid 1000)".into(),
            containers: vec!["web-1".into(), "web-2".into()],
            flows_cut: 3,
            origin: Default::default(),
        }
    }

    fn quarantine() -> BlockTarget {
        BlockTarget::Quarantine { container: "web-1".into(), direction: BlockDirection::Egress }
    }

    #[test]
    fn small_formats() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(200 * 1024), "200 KiB");
        assert_eq!(bytes(3 * 1024 * 1024 + 200 * 1024), "3.2 MiB");
        assert_eq!(bytes(u64::MAX), "16 EiB");
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(59), "59s");
        assert_eq!(duration(200), "3m 20s");
        assert_eq!(duration(900), "15m");
        assert_eq!(duration(7500), "2h 5m");
        assert_eq!(duration(86_400 * 3 + 3600 * 4 + 5), "3d 4h");
        assert_eq!(ago(NOW - 180, NOW), "3m ago");
        assert_eq!(ago(NOW + 14 * 60 + 30, NOW), "in 14m 30s");
        assert_eq!(ago(NOW, NOW), "now");
        assert_eq!(utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(utc(NOW), "2024-05-01 12:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00Z");
        assert_eq!(utc(-1), "1969-12-31 23:59:59Z");
        assert_eq!(when(NOW - 3600, NOW), "2024-05-01 11:00:00Z (1h ago)");
        assert_eq!(short_hash("sha256:0123456789abcdef"), "sha256:0123456789ab");
        assert_eq!(short_hash("abc"), "abc");
    }

    #[test]
    fn endpoints_peers_and_rules() {
        assert_eq!(endpoint(Proto::Tcp, "fd00::2".parse().unwrap(), 53), "[fd00::2]:53");
        assert_eq!(endpoint(Proto::Udp, "10.0.0.1".parse().unwrap(), 53), "10.0.0.1:53");
        assert_eq!(endpoint(Proto::Icmp, "10.0.0.1".parse().unwrap(), 0), "10.0.0.1");
        assert_eq!(peer(Some("db-1"), Some("db")), "db-1(db)");
        assert_eq!(peer(None, Some("world")), "(world)");
        assert_eq!(peer(None, None), "-");
        let r = &rows()[0];
        assert_eq!(rule(r.rule.as_ref().unwrap()), "web-to-db (rules/demo/20-policies.toml:12)");
    }

    #[test]
    fn status_output() {
        insta::assert_snapshot!("status", status(&status_info(), NOW));
    }

    /// A broken audit trail, a refused inventory, rows dropped at the cap: each said plainly.
    #[test]
    fn status_says_what_is_degraded() {
        let s = StatusInfo {
            audit: Some(fw_proto::control::AuditStatus {
                path: "/var/log/fw/audit.jsonl".into(),
                broken_since_ms: Some((NOW - 60) * 1000),
                error: Some("No space left on device (os error 28)".into()),
                lost: 2,
                ..Default::default()
            }),
            inventory: Some("/etc/fw/inventory.toml".into()),
            inventory_errors: vec!["/etc/fw/inventory.toml:3:1: error: unknown field `img`".into()],
            inventory_last_good: true,
            flows_dropped_open: 306_000,
            ..status_info()
        };
        let text = status(&s, NOW);
        assert!(text.contains("!! AUDIT TRAIL BROKEN since "), "{text}");
        assert!(text.contains("(No space left on device (os error 28))"), "{text}");
        assert!(text.contains("refused until it can; 2 records of the daemon's own actions lost"), "{text}");
        assert!(
            text.contains(
                "!! INVENTORY REJECTED (/etc/fw/inventory.toml, 1 error): enforcing the last good inventory"
            ),
            "{text}"
        );
        assert!(text.contains("306000 rows of open flows dropped"), "{text}");
        let fine = StatusInfo {
            audit: Some(fw_proto::control::AuditStatus { path: "/a".into(), ..Default::default() }),
            ..status_info()
        };
        let text = status(&fine, NOW);
        assert!(
            !text.contains("AUDIT") && !text.contains("INVENTORY") && !text.contains("open flows dropped"),
            "{text}"
        );
        let mut ok = status_info();
        ok.last_reload_errors.clear();
        ok.lost_events = 0;
        let s = status(&ok, NOW);
        assert!(!s.contains("REJECTED") && !s.contains("dropped"), "{s}");
    }

    #[test]
    fn flow_table_output() {
        let snap = FlowSnapshot { flows: rows(), total: 120, lost_events: 0 };
        insta::assert_snapshot!("flows", flows(&snap, None));
        // An inspected row adds the INSPECTED column (SNI / Host / DNS name, and violations).
        let mut inspected = rows();
        inspected[0].inspection = Some(Inspection {
            protocol: Some("tls".into()),
            name: Some("api.partner.example".into()),
            raw_name: None,
            violation: None,
        });
        inspected[1].inspection = Some(Inspection {
            protocol: Some("http".into()),
            name: Some("evil.example".into()),
            raw_name: None,
            violation: Some("Host evil.example not in http_host".into()),
        });
        let out = flow_table(&inspected, None);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].ends_with("INSPECTED"), "{out}");
        assert!(lines[1].ends_with("tls api.partner.example"), "{out}");
        assert!(
            lines[2].ends_with("http evil.example VIOLATION: Host evil.example not in http_host"),
            "{out}"
        );
        assert!(lines[3].ends_with(" -"), "{out}");
        let limited = flow_table(&rows(), Some(1));
        assert_eq!(limited.lines().count(), 3, "{limited}");
        assert!(limited.ends_with("... and 2 more\n"));
        assert_eq!(
            flows(&FlowSnapshot { flows: vec![], total: 0, lost_events: 0 }, None),
            "no flows match\n"
        );
    }

    #[test]
    fn follow_events() {
        let full = Event::Flows { changed: rows(), removed: vec![], total: 3, lost_events: 0, full: true };
        insta::assert_snapshot!("follow_full", event(&full, NOW, None));
        let delta = Event::Flows {
            changed: rows()[..1].to_vec(),
            removed: vec![7, 8],
            total: 2,
            lost_events: 5,
            full: false,
        };
        insta::assert_snapshot!("follow_delta", event(&delta, NOW + 1, None));
    }

    #[test]
    fn block_outputs() {
        insta::assert_snapshot!("blocked_with_ttl", blocked(&block(7, quarantine(), Some(NOW + 900)), NOW));
        let mut forever = block(8, quarantine(), None);
        forever.containers.clear();
        forever.reason = None;
        insta::assert_snapshot!("blocked_forever", blocked(&forever, NOW));
        assert_eq!(
            unblocked(&block(7, quarantine(), None), &[], NOW),
            "removed block 7: quarantine web-1 (egress)\n  created by alice (uid 1000) 2m ago\n  \
             nothing else blocks what it blocked\n"
        );
        let both = block(
            9,
            BlockTarget::Quarantine { container: "web-1".into(), direction: BlockDirection::Both },
            None,
        );
        let out = unblocked(&block(7, quarantine(), None), std::slice::from_ref(&both), NOW);
        assert!(
            out.ends_with("  still applies: block 9: quarantine web-1 (both) (on web-1, web-2)\n"),
            "{out}"
        );
        assert_eq!(
            unblocked_line(&block(7, quarantine(), None), &[both]),
            "block 7 lifted: quarantine web-1 (egress); still blocked by #9 quarantine web-1 (both)"
        );
        let list = vec![
            block(7, quarantine(), Some(NOW + 14 * 60)),
            BlockInfo {
                reason: None,
                ..block(
                    12,
                    BlockTarget::Destination {
                        scope: Scope::Zone("web".into()),
                        net: "203.0.113.0/24".parse().unwrap(),
                        proto: Some(Proto::Tcp),
                        port: Some(443),
                    },
                    None,
                )
            },
            block(13, quarantine(), Some(NOW - 1)),
            BlockInfo {
                created_by: "fw-daemon inspection (policy api-tls)".into(),
                origin: fw_proto::control::BlockOrigin::Inspection,
                ..block(
                    14,
                    BlockTarget::Quarantine { container: "api-1".into(), direction: BlockDirection::Both },
                    None,
                )
            },
        ];
        insta::assert_snapshot!("blocks", blocks(&list, NOW));
        assert_eq!(blocks(&[], NOW), "no active blocks\n");
    }

    #[test]
    fn audit_output() {
        let alice =
            Peer { uid: 1000, gid: 1000, pid: 77, user: "alice".into(), process: Some("fw-tui".into()) };
        let records = vec![
            AuditRecord {
                time_ms: (NOW - 3600) * 1000,
                peer: None,
                role: None,
                actor: None,
                op: "reload".into(),
                target: None,
                path: None,
                block: None,
                reason: None,
                ttl_ms: None,
                result: "ok".into(),
                policy_hash: Some("sha256:9f2c1ab04e77d3c1".into()),
                summary: Some("1 container updated".into()),
            },
            AuditRecord {
                time_ms: (NOW - 120) * 1000 + 500,
                peer: Some(alice.clone()),
                role: Some(Role::Operator),
                actor: None,
                op: "block".into(),
                target: Some(quarantine()),
                path: None,
                block: Some(7),
                reason: Some("suspected exfil".into()),
                ttl_ms: Some(900_000),
                result: "ok".into(),
                policy_hash: None,
                summary: None,
            },
            AuditRecord {
                time_ms: (NOW - 5) * 1000,
                peer: Some(Peer { user: "bob".into(), ..alice }),
                role: Some(Role::Viewer),
                actor: None,
                op: "unblock".into(),
                target: None,
                path: None,
                block: Some(7),
                reason: None,
                ttl_ms: None,
                result: "error: bob is viewer; unblock needs operator".into(),
                policy_hash: None,
                summary: None,
            },
        ];
        insta::assert_snapshot!("audit", audit(&records, NOW));
        assert_eq!(audit(&[], NOW), "no audit records\n");
    }

    #[test]
    fn reload_outputs() {
        assert_eq!(reloaded("sha256:ab", &[]), "reloaded: policy sha256:ab\n");
        assert_eq!(
            reloaded("sha256:ab", &["a.toml:1:1: error: x".into(), "b.toml:2:1: error: y".into()]),
            "reload REJECTED (2 errors): still enforcing policy sha256:ab\n  a.toml:1:1: error: x\n  b.toml:2:1: error: y\n"
        );
    }

    #[test]
    fn every_answer_renders() {
        let answers = [
            Answer::Hello { version: 1, daemon: "0.1.0".into(), role: Role::Viewer, user: "bob".into() },
            Answer::Status(status_info()),
            Answer::Flows(FlowSnapshot { flows: rows(), total: 3, lost_events: 0 }),
            Answer::Subscribed { sub: 1 },
            Answer::Unsubscribed { sub: 1 },
            Answer::Blocked { block: block(1, quarantine(), None) },
            Answer::Unblocked { block: block(1, quarantine(), None), remaining: vec![] },
            Answer::Blocks { blocks: vec![] },
            Answer::Audit { records: vec![] },
            Answer::Reloaded { policy_hash: "h".into(), rejected: vec![] },
        ];
        for a in &answers {
            let s = answer(a, NOW);
            assert!(s.ends_with('\n') && !s.trim().is_empty(), "{a:?}: {s:?}");
        }
    }

    #[test]
    fn tables_align_and_trim() {
        let mut t = Table::new(&["A", "NUM", "LAST"]).right(&[1]);
        t.row(vec!["xyz".into(), "7".into(), "".into()]);
        t.row(vec!["é".into(), "1234".into(), "z".into()]);
        assert_eq!(t.render(), "A     NUM  LAST\nxyz     7\né    1234  z\n");
    }
}
