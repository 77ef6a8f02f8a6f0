//! `check` on the language's additions (zone lists, services, zones of containers and
//! networks, ICMP types, case-insensitive proto): what each one means once loaded, and an
//! error with its position for every misuse.

mod common;
use common::{diags, load, policy};
use fw_daemon::rules::{IcmpTypes, Protos, ZoneKind};

const ZONES: &str = r#"
[zone.web]
match = { name = "web-*" }
[zone.api]
match = { name = "api-*" }
[zone.db]
match = { name = "db-*" }
[zone.partners]
cidrs = ["192.0.2.0/24"]
[zone.backup]
cidrs = ["198.51.100.0/24"]
"#;

const SERVICES: &str = r#"
[service.https]
proto = "tcp"
ports = [443, 8443]
[service.dns]
proto = ["udp", "tcp"]
ports = 53
[service.ping]
proto = "icmp"
icmp_types = ["echo-request"]
"#;

fn with(p: &str) -> Vec<String> {
    diags(&[("10-zones.toml", ZONES), ("15-services.toml", SERVICES), ("20-p.toml", p)])
}

#[test]
fn lists_services_and_icmp_types_load_as_written() {
    let p = "[[policy]]\nfrom = [\"web\", \"api\"]\nto = [\"db\", \"partners\"]\nservice = [\"https\", \"ping\"]\naction = \"allow\"\n\
             [[policy]]\nfrom = \"any\"\nto = \"web\"\nproto = [\"ICMP\", \"Tcp\"]\nicmp_types = [\"Echo-Request\", \"packet-too-big\", \"echo-request\"]\naction = \"deny\"\n";
    let pol = policy(&[("10-zones.toml", ZONES), ("15-services.toml", SERVICES), ("20-p.toml", p)]);
    let r = &pol.rules[0];
    assert_eq!(r.id, "web,api->db,partners:https,ping");
    assert_eq!(r.from.0, vec!["web", "api"]);
    assert_eq!(r.services, vec!["https", "ping"]);
    assert_eq!(r.traffic.len(), 2);
    assert_eq!(r.traffic[0].to_string(), "tcp/443,8443");
    assert_eq!(r.traffic[1].to_string(), "icmp/echo-request");
    let r = &pol.rules[1];
    // Case-insensitive protocol and type names; duplicates merged, in the table's order.
    assert_eq!(r.traffic[0].protos, Protos { tcp: true, udp: false, icmp: true });
    assert_eq!(r.traffic[0].icmp, IcmpTypes(vec!["echo-request", "packet-too-big"]));
    assert_eq!(r.id, "any->web:tcp+icmp/echo-request,packet-too-big");
    assert_eq!(r.traffic[0].icmp.numbers(false), vec![8], "packet-too-big is ICMPv6 only");
    assert_eq!(r.traffic[0].icmp.numbers(true), vec![128, 2]);
    assert_eq!(pol.services.len(), 3);
}

#[test]
fn a_zone_may_hold_containers_and_networks() {
    let z = "[zone.api]\nmatch = { name = \"api-*\" }\ncidrs = [\"10.8.0.0/24\", \"fd00:8::/64\"]\nmax_conns = 10\n";
    let r = load(&[("z.toml", z)]);
    assert!(r.diagnostics.is_empty(), "no warning about caps: the zone has containers {:?}", r.diagnostics);
    let pol = r.policy.unwrap();
    let api = pol.zone("api").unwrap();
    assert!(matches!(api.kind, ZoneKind::Mixed(..)), "{:?}", api.kind);
    assert_eq!(api.cidrs().len(), 2);
    assert!(api.selector().is_some() && !api.is_external());
    assert_eq!(api.caps.max_conns, Some(10));
}

#[test]
fn zone_list_misuse() {
    let p = "[[policy]]\nfrom = []\nto = \"db\"\naction = \"allow\"\n\
             [[policy]]\nfrom = [\"web\", \"any\"]\nto = \"db\"\naction = \"allow\"\n\
             [[policy]]\nfrom = [\"web\", 3]\nto = \"db\"\naction = \"allow\"\n\
             [[policy]]\nfrom = \"web\"\nto = [\"db\", \"dbb\", \"db\"]\naction = \"allow\"\n";
    assert_eq!(
        with(p).into_iter().filter(|d| !d.contains("is declared but")).collect::<Vec<_>>(),
        vec![
            "20-p.toml:2:8: error: `from` is an empty list: name one or more zones, or `any`",
            "20-p.toml:6:16: error: `any` already covers every zone: write `from = \"any\"` alone",
            "20-p.toml:10:16: error: `from` must be a string, found an integer",
            "20-p.toml:15:13: error: unknown zone `dbb`; did you mean `db`?",
            "20-p.toml:15:20: warning: zone `db` is listed twice in `to`",
        ]
    );
}

#[test]
fn service_misuse() {
    let p = "[[policy]]\nfrom = \"web\"\nto = \"db\"\nservice = \"htps\"\naction = \"allow\"\n\
             [[policy]]\nfrom = \"web\"\nto = \"db\"\nservice = \"https\"\nports = 80\naction = \"allow\"\n\
             [[policy]]\nfrom = \"web\"\nto = \"db\"\nservice = []\naction = \"allow\"\n\
             [[policy]]\nfrom = \"web\"\nto = \"db\"\nservice = [\"https\", \"https\"]\naction = \"allow\"\n\
             [[policy]]\nfrom = \"web\"\nto = \"db\"\nservice = \"ping\"\naction = \"allow\"\ninspect = { protocol = \"tls\" }\n";
    let s = "[service.https]\nproto = \"udp\"\nports = 1\n[service.\"bad name\"]\nproto = \"tcp\"\n[service.empty]\ndescription = \"x\"\n[service.odd]\nprto = \"tcp\"\n";
    let d = diags(&[
        ("10-zones.toml", ZONES),
        ("15-services.toml", SERVICES),
        ("16-more.toml", s),
        ("20-p.toml", p),
    ]);
    assert_eq!(
        d,
        vec![
            "15-services.toml:5:10: warning: service `dns` is declared but no policy or failsafe names it",
            "16-more.toml:1:10: error: service `https` is already declared at 15-services.toml:2:10",
            "16-more.toml:4:10: error: service name `bad name` must be 1-32 letters, digits, `-` or `_`, starting with a letter or digit",
            "16-more.toml:6:10: error: service `empty` says nothing: it would match every packet",
            "16-more.toml:8:10: error: service `odd` says nothing: it would match every packet",
            "16-more.toml:9:1: error: unknown key `prto` in service `odd`; did you mean `proto`?",
            "20-p.toml:4:11: error: unknown service `htps`; did you mean `https`?",
            "20-p.toml:10:1: error: `ports` cannot be given with `service`: the service says which protocols and ports",
            "20-p.toml:15:11: error: `service` names no service: give one or more, like `service = [\"https\"]`",
            "20-p.toml:20:21: warning: service `https` is listed twice",
            "20-p.toml:27:11: error: inspecting needs a policy that covers its transport, and none of its services does (tls and http need tcp, dns tcp or udp)",
        ]
    );
}

#[test]
fn unused_services_are_warned_about() {
    let p = "[[policy]]\nfrom = \"web\"\nto = \"db\"\nservice = \"https\"\naction = \"allow\"\n";
    assert_eq!(
        with(p),
        vec![
            "15-services.toml:5:10: warning: service `dns` is declared but no policy or failsafe names it",
            "15-services.toml:8:10: warning: service `ping` is declared but no policy or failsafe names it",
        ]
    );
}

#[test]
fn icmp_type_misuse() {
    let p = "[[policy]]\nfrom = \"web\"\nto = \"db\"\nproto = \"icmp\"\nicmp_types = [\"echo-requets\", \"bogus\"]\naction = \"allow\"\n\
             [[policy]]\nfrom = \"web\"\nto = \"db\"\nicmp_types = \"echo-request\"\naction = \"allow\"\n\
             [[policy]]\nfrom = \"web\"\nto = \"db\"\nproto = \"tcp\"\nicmp_types = \"echo-request\"\naction = \"allow\"\n\
             [[policy]]\nfrom = \"web\"\nto = \"db\"\nproto = \"icmp\"\nicmp_types = []\naction = \"allow\"\n\
             [[policy]]\nfrom = \"web\"\nto = \"db\"\nproto = [\"icmp\", \"tcp\"]\nports = 22\nicmp_types = \"echo-request\"\naction = \"allow\"\n\
             [[policy]]\nfrom = \"web\"\nto = \"db\"\nproto = \"TPC\"\naction = \"allow\"\n";
    let r = load(&[("10-zones.toml", ZONES), ("20-p.toml", p)]);
    let d: Vec<String> = r.diagnostics.iter().map(|d| d.to_string()).collect();
    assert_eq!(
        d,
        vec![
            "20-p.toml:5:15: error: unknown ICMP type `echo-requets`; did you mean `echo-request`?",
            "20-p.toml:5:31: error: unknown ICMP type `bogus`",
            "20-p.toml:10:14: error: `icmp_types` need `proto = \"icmp\"`: `any` covers tcp and udp too, which have no ICMP types",
            "20-p.toml:16:14: error: `icmp_types` need `proto = \"icmp\"`: the policy covers no ICMP",
            "20-p.toml:22:14: error: `icmp_types` is an empty list: leave it out to mean every type",
            "20-p.toml:28:9: error: `ports` need `proto = \"tcp\"`, `\"udp\"` or `[\"tcp\", \"udp\"]`: ICMP and `any` have no ports",
            "20-p.toml:34:9: error: unknown protocol `TPC`: use tcp, udp, icmp or any; did you mean `tcp`?",
        ]
    );
    // The unknown type lists the known ones.
    assert!(
        r.diagnostics[1].notes[0].starts_with("ICMP types: echo-request, echo-reply, "),
        "{:?}",
        r.diagnostics[1]
    );
}

#[test]
fn mixed_zone_misuse() {
    let z = "[zone.a]\nmatch = { name = \"a-*\" }\ncidrs = []\n[zone.default]\ncidrs = [\"10.0.0.0/8\"]\n";
    assert_eq!(
        diags(&[("z.toml", z)]),
        vec![
            "z.toml:3:9: error: `cidrs` is an empty list: it would hold no network (leave it out)",
            "z.toml:4:7: error: zone `default` holds the containers no other zone selects: it takes no `match` or `cidrs`, only mode and caps",
        ]
    );
}

#[test]
fn external_pairs_in_lists() {
    let p = "[[policy]]\nfrom = [\"partners\", \"web\"]\nto = [\"backup\", \"db\"]\naction = \"allow\"\n\
             [[policy]]\nfrom = [\"partners\", \"backup\"]\nto = \"backup\"\naction = \"allow\"\n";
    assert_eq!(
        with(p).into_iter().filter(|d| !d.contains("service")).collect::<Vec<_>>(),
        vec![
            "20-p.toml:1:1: warning: `partners` -> `backup` joins two external zones: fw enforces inside containers, so that part of this rule never applies",
            "20-p.toml:5:1: error: `partners,backup` -> `backup` joins two external zones: fw enforces inside containers, so this rule could never apply",
        ]
    );
}

#[test]
fn shadowing_sees_through_lists_and_services() {
    let p = "[[policy]]\nid = \"wide\"\nfrom = [\"web\", \"api\"]\nto = \"db\"\nproto = \"tcp\"\nports = [443, 8443, 9000]\naction = \"deny\"\n\
             [[policy]]\nid = \"narrow\"\nfrom = \"api\"\nto = \"db\"\nservice = \"https\"\naction = \"allow\"\n\
             [[policy]]\nid = \"partly\"\nfrom = [\"api\", \"partners\"]\nto = \"db\"\nservice = \"https\"\naction = \"allow\"\n\
             [[policy]]\nid = \"pings\"\nfrom = \"web\"\nto = \"db\"\nservice = [\"ping\", \"https\"]\naction = \"deny\"\n\
             [[failsafe]]\nid = \"fs\"\nto = \"db\"\nproto = \"icmp\"\nicmp_types = [\"echo-request\", \"echo-reply\"]\n";
    let d = with(p);
    let d: Vec<&String> = d.iter().filter(|d| !d.contains("is declared but")).collect();
    assert_eq!(
        d,
        vec![
            "20-p.toml:8:1: warning: policy `narrow` is shadowed by `wide` (20-p.toml:1), which matches everything it matches first: it never decides any traffic",
            "20-p.toml:20:1: warning: policy `pings` cannot deny all it matches: failsafe `fs` (20-p.toml:26) allows the traffic they share first (web -> db, icmp types echo-request,echo-reply), and no policy can remove a failsafe",
        ]
    );
}
