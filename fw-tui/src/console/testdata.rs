//! Rows and daemon state for tests and benchmarks: a fixed clock and plausible values.

use fw_proto::control::{
    Alert, AlertKind, AuditRecord, BlockDirection, BlockInfo, BlockTarget, CapsInfo, ContainerInfo,
    Direction, FlowRow, FlowVerdict, Inspection, Peer, PolicyInfo, Proto, Role, RuleAction, Scope,
    StatusInfo, ZoneInfo, ZoneKind,
};
use fw_proto::{Mode, RuleKind, RuleRef};

/// The tests' "now": 2024-05-01 12:00:00Z, in unix milliseconds.
pub const NOW_MS: i64 = 1_714_564_800_000;

/// One flow row of `container` (zone from its name's prefix) to `dst:dport`.
pub fn flow(id: u64, container: &str, dst: &str, dport: u16, verdict: FlowVerdict) -> FlowRow {
    let zone = container.split('-').next().unwrap_or(container).to_string();
    let dst_ip = dst.parse().unwrap_or(std::net::IpAddr::from([10, 9, 9, 9]));
    let src = if dst_ip.is_ipv4() { "10.1.0.2" } else { "fd00::2" };
    let denied = verdict != FlowVerdict::Allowed;
    FlowRow {
        id,
        container: container.into(),
        zone,
        direction: Direction::Egress,
        proto: Proto::Tcp,
        src: src.parse().unwrap_or(dst_ip),
        sport: 40_000 + (id % 20_000) as u16,
        dst: dst_ip,
        dport,
        peer: None,
        peer_zone: None,
        state: if denied { "dropped".into() } else { "ESTABLISHED".into() },
        bytes_out: if denied { 0 } else { 1536 * id },
        bytes_in: if denied { 0 } else { 40_000 * id },
        packets_out: 10,
        packets_in: 20,
        rate_out: if denied { 0 } else { 100 * id },
        rate_in: if denied { 0 } else { 2000 * id },
        first_seen_ms: NOW_MS - 60_000,
        last_seen_ms: NOW_MS - 1000 * (id as i64 % 5),
        verdict,
        rule: Some(if denied {
            RuleRef { kind: RuleKind::Default, id: "default".into(), source: None }
        } else {
            RuleRef {
                kind: RuleKind::Policy,
                id: format!("{}-egress", container.split('-').next().unwrap_or("x")),
                source: Some("/etc/fw/rules/20-policies.toml:12".into()),
            }
        }),
        count: if denied { 3 } else { 1 },
        open: !denied,
        inspection: None,
    }
}

/// A small, varied flow table: allowed flows with peers and SNI, drops, a cap hit, a
/// blocked flow, a stale closed row, IPv6 and ingress.
pub fn flows() -> Vec<FlowRow> {
    let mut v = Vec::new();
    let mut r = flow(1, "web-1", "10.1.0.3", 5432, FlowVerdict::Allowed);
    r.peer = Some("db-1".into());
    r.peer_zone = Some("db".into());
    v.push(r);
    let mut r = flow(2, "web-1", "203.0.113.7", 443, FlowVerdict::Allowed);
    r.peer_zone = Some("world".into());
    r.inspection = Some(Inspection {
        protocol: Some("tls".into()),
        name: Some("api.example.com".into()),
        raw_name: None,
        violation: None,
    });
    v.push(r);
    let mut r = flow(3, "web-1", "198.51.100.9", 443, FlowVerdict::Denied);
    r.count = 17;
    r.last_seen_ms = NOW_MS - 2000;
    v.push(r);
    let mut r = flow(4, "web-2", "198.51.100.9", 443, FlowVerdict::Denied);
    r.last_seen_ms = NOW_MS - 30_000;
    v.push(r);
    let mut r = flow(5, "api-1", "10.1.0.3", 5432, FlowVerdict::CapHit);
    r.rule = Some(RuleRef {
        kind: RuleKind::Cap,
        id: "api-conns".into(),
        source: Some("/etc/fw/rules/10-zones.toml:8".into()),
    });
    v.push(r);
    let mut r = flow(6, "db-1", "fd00::9", 53, FlowVerdict::Allowed);
    r.proto = Proto::Udp;
    r.state = "closed".into();
    r.open = false;
    r.last_seen_ms = NOW_MS - 120_000;
    r.inspection = Some(Inspection {
        protocol: Some("dns".into()),
        name: Some("db.internal".into()),
        raw_name: None,
        violation: None,
    });
    v.push(r);
    let mut r = flow(7, "db-1", "10.1.0.2", 5432, FlowVerdict::Allowed);
    r.direction = Direction::Ingress;
    r.src = "10.1.0.2".parse().unwrap_or(r.src);
    r.sport = 40_123;
    r.dst = "10.1.0.3".parse().unwrap_or(r.dst);
    r.peer = Some("web-1".into());
    r.peer_zone = Some("web".into());
    v.push(r);
    let mut r = flow(8, "api-1", "192.0.2.50", 8080, FlowVerdict::Blocked);
    r.rule = Some(RuleRef { kind: RuleKind::Block, id: "block-3".into(), source: None });
    v.push(r);
    let mut r = flow(9, "web-2", "203.0.113.80", 80, FlowVerdict::AuditDenied);
    r.inspection = Some(Inspection {
        protocol: Some("http".into()),
        name: Some("evil.example".into()),
        raw_name: None,
        violation: Some("host evil.example is not allowed".into()),
    });
    v.push(r);
    v
}

pub fn container(name: &str, addr: &str) -> ContainerInfo {
    ContainerInfo {
        name: name.into(),
        zone: name.split('-').next().unwrap_or(name).into(),
        mode: Mode::Enforce,
        addresses: addr.parse().into_iter().collect(),
        programmed: true,
        caps: CapsInfo::default(),
        open_flows: 0,
        originated_conns: Some(0),
        blocks: Vec::new(),
        quarantined: false,
        floor: Vec::new(),
        note: None,
        skipped: None,
    }
}

pub fn status() -> StatusInfo {
    let mut web1 = container("web-1", "10.1.0.2");
    web1.caps = CapsInfo { max_conns: Some(100), new_conns_per_sec: Some(20), ..CapsInfo::default() };
    // Inbound connections and TIME_WAIT entries are tracked too; the cap counts what it opened.
    web1.open_flows = 438;
    web1.originated_conns = Some(3);
    let mut web2 = container("web-2", "10.1.0.4");
    web2.mode = Mode::Audit;
    let mut api = container("api-1", "10.1.0.5");
    api.caps = CapsInfo {
        max_conns: Some(2),
        egress_bytes_per_sec: Some(10_000_000),
        egress_written: Some("80mbit".into()),
        ..CapsInfo::default()
    };
    api.open_flows = 2;
    api.originated_conns = Some(2);
    api.blocks = vec![3];
    api.quarantined = true;
    let db = container("db-1", "10.1.0.3");
    StatusInfo {
        daemon_version: "0.1.0".into(),
        pid: 4242,
        uptime_ms: 3_725_000,
        policy_hash: "9f2c4e1ab7d03355".into(),
        loaded_at_ms: NOW_MS - 600_000,
        last_reload_errors: Vec::new(),
        containers: vec![web1, web2, api, db],
        flows: 9,
        lost_events: 0,
        active_blocks: 1,
        rules_dir: Some("/etc/fw/rules".into()),
        rule_files: vec!["00-defaults.toml".into(), "10-zones.toml".into(), "20-policies.toml".into()],
        last_reload_at_ms: Some(NOW_MS - 600_000),
        zones: zones(),
        policies: policies(),
        ..StatusInfo::default()
    }
}

fn zone(name: &str, kind: ZoneKind, line: u32) -> ZoneInfo {
    ZoneInfo {
        name: name.into(),
        kind,
        mode: if name == "web" { Mode::Audit } else { Mode::Enforce },
        caps: CapsInfo::default(),
        nets: Vec::new(),
        source: (line > 0).then(|| format!("/etc/fw/rules/10-zones.toml:{line}")),
        description: None,
    }
}

/// The zones of [`status`]: containers, external, and the implicit default.
pub fn zones() -> Vec<ZoneInfo> {
    let mut web = zone("web", ZoneKind::Containers, 1);
    web.caps = CapsInfo { max_conns: Some(100), new_conns_per_sec: Some(20), ..CapsInfo::default() };
    let mut api = zone("api", ZoneKind::Containers, 6);
    api.caps = CapsInfo {
        max_conns: Some(2),
        egress_bytes_per_sec: Some(10_000_000),
        egress_written: Some("80mbit".into()),
        ..CapsInfo::default()
    };
    let mut world = zone("world", ZoneKind::External, 14);
    world.nets = "0.0.0.0/0".parse().into_iter().collect();
    let mut partners = zone("partners", ZoneKind::External, 18);
    partners.nets = "203.0.113.0/24".parse().into_iter().collect();
    vec![
        web,
        api,
        zone("db", ZoneKind::Containers, 10),
        zone("default", ZoneKind::Containers, 0),
        world,
        partners,
    ]
}

fn policy(id: &str, from: &str, to: &str, ports: &str, action: RuleAction, line: u32) -> PolicyInfo {
    PolicyInfo {
        id: id.into(),
        kind: RuleKind::Policy,
        from: from.into(),
        to: to.into(),
        proto: "tcp".into(),
        ports: ports.into(),
        action,
        inspect: None,
        source: Some(format!("/etc/fw/rules/20-policies.toml:{line}")),
        expires: None,
        description: None,
    }
}

/// The policies of [`status`], in evaluation order; flow rows name them by id.
pub fn policies() -> Vec<PolicyInfo> {
    let mut dns = policy("dns", "any", "db", "53", RuleAction::Allow, 1);
    dns.kind = RuleKind::Failsafe;
    dns.proto = "udp".into();
    let mut partners = policy("api-to-partners", "api", "partners", "443", RuleAction::Allow, 30);
    partners.inspect = Some("tls sni api.partner.example; on violation cut".into());
    let mut default = policy("default", "any", "any", "", RuleAction::Deny, 0);
    default.kind = RuleKind::Default;
    default.proto = "any".into();
    default.source = Some("/etc/fw/rules/00-defaults.toml:2".into());
    vec![
        dns,
        policy("web-egress", "web", "world", "80,443", RuleAction::Allow, 12),
        policy("db-egress", "db", "any", "53", RuleAction::Allow, 20),
        policy("no-web-to-db", "web", "db", "5432", RuleAction::Deny, 24),
        partners,
        default,
    ]
}

pub fn blocks() -> Vec<BlockInfo> {
    vec![BlockInfo {
        id: 3,
        target: BlockTarget::Quarantine { container: "api-1".into(), direction: BlockDirection::Both },
        reason: Some("suspected exfil".into()),
        created_at_ms: NOW_MS - 300_000,
        expires_at_ms: Some(NOW_MS + 600_000),
        created_by: "alice (uid 1000)".into(),
        containers: vec!["api-1".into()],
        flows_cut: 4,
        origin: Default::default(),
    }]
}

pub fn destination_block(id: u64, container: &str) -> BlockInfo {
    BlockInfo {
        id,
        target: BlockTarget::Destination {
            scope: Scope::Container(container.into()),
            net: "198.51.100.9/32"
                .parse()
                .unwrap_or_else(|_| ipnet::IpNet::from(std::net::IpAddr::from([0, 0, 0, 0]))),
            proto: Some(Proto::Tcp),
            port: Some(443),
        },
        reason: None,
        created_at_ms: NOW_MS,
        expires_at_ms: None,
        created_by: "alice (uid 1000)".into(),
        containers: vec![container.into()],
        flows_cut: 1,
        origin: Default::default(),
    }
}

pub fn alerts() -> Vec<Alert> {
    vec![
        Alert {
            id: 1,
            time_ms: NOW_MS - 600_000,
            kind: AlertKind::Reload,
            container: None,
            rule: None,
            flow: None,
            message: "policy 9f2c4e1a loaded: 4 zones, 6 policies".into(),
        },
        Alert {
            id: 2,
            time_ms: NOW_MS - 90_000,
            kind: AlertKind::Tamper,
            container: Some("web-2".into()),
            rule: None,
            flow: None,
            message: "table inet fw changed by someone else; restored".into(),
        },
        Alert {
            id: 3,
            time_ms: NOW_MS - 5000,
            kind: AlertKind::CapHit,
            container: Some("api-1".into()),
            rule: Some(RuleRef { kind: RuleKind::Cap, id: "api-conns".into(), source: None }),
            flow: Some(5),
            message: "max_conns 2 reached".into(),
        },
    ]
}

pub fn audit() -> Vec<AuditRecord> {
    vec![
        AuditRecord {
            time_ms: NOW_MS - 600_000,
            peer: None,
            role: None,
            actor: None,
            op: "reload".into(),
            target: None,
            path: Some("/etc/fw/rules".into()),
            block: None,
            reason: None,
            ttl_ms: None,
            result: "ok".into(),
            policy_hash: Some("9f2c4e1ab7d03355".into()),
            summary: Some("4 containers updated".into()),
        },
        AuditRecord {
            time_ms: NOW_MS - 300_000,
            peer: Some(Peer {
                uid: 1000,
                gid: 1000,
                pid: 77,
                user: "alice".into(),
                process: Some("fw-tui".into()),
            }),
            role: Some(Role::Operator),
            actor: None,
            op: "block".into(),
            target: Some(BlockTarget::Quarantine {
                container: "api-1".into(),
                direction: BlockDirection::Both,
            }),
            path: None,
            block: Some(3),
            reason: Some("suspected exfil".into()),
            ttl_ms: Some(900_000),
            result: "ok".into(),
            policy_hash: None,
            summary: None,
        },
    ]
}
