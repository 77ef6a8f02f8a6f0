//! `check` reports each class of problem as `path:line:col: error|warning: message`, all of
//! them in one run, and refuses to produce a policy when there is any error.

mod common;
use common::{diags, load};

const ZONES: &str = r#"
[zone.web]
match = { name = "web-*" }
[zone.db]
match = { name = "db-*" }
"#;

#[test]
fn toml_syntax_errors_point_at_the_line() {
    let d = diags(&[("a.toml", "[zone.web]\nmatch = { name = \"web-*\" \n")]);
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(d[0].starts_with("a.toml:2:"), "{}", d[0]);
    assert!(d[0].contains(": error: TOML syntax:"), "{}", d[0]);
}

#[test]
fn every_problem_is_reported_in_one_run() {
    let bad = r#"
[zone.web]
match = { name = "web-*" }
colour = "blue"

[zone.partners]
cidrs = ["10.0.0.1/8", "300.1.1.1/32"]

[[policy]]
from = "web"
to = "dbx"
proto = "tcp"
ports = [0, "90-80"]
action = "permit"

[[policy]]
from = "web"
to = "partners"
prot = "tcp"
action = "allow"
"#;
    let d = diags(&[("bad.toml", bad)]);
    let expected = [
        "bad.toml:4:1: error: unknown key `colour` in zone `web`; expected one of: description, match, cidrs, mode, max_conns, new_conns_per_sec, egress_bytes_per_sec, forward",
        "bad.toml:7:10: error: `10.0.0.1/8` has host bits set; did you mean `10.0.0.0/8`?",
        "bad.toml:7:24: error: `300.1.1.1/32` is not an IPv4 or IPv6 network (like 10.0.0.0/8 or fd00::/64)",
        "bad.toml:13:10: error: port 0 is out of range: ports go from 1 to 65535",
        "bad.toml:13:13: error: port range 90-80 is backwards: write 80-90",
        "bad.toml:14:10: error: `action` must be one of `allow`, `deny`, `log`, found `permit`",
        "bad.toml:19:1: error: unknown key `prot` in [[policy]]; did you mean `proto`?",
    ];
    for e in expected {
        assert!(d.iter().any(|x| x == e), "missing {e:?} in\n{}", d.join("\n"));
    }
    assert!(load(&[("bad.toml", bad)]).policy.is_none());
}

#[test]
fn unknown_zone_references_suggest_the_close_one() {
    let p = "[[policy]]\nfrom = \"web\"\nto = \"dbs\"\naction = \"allow\"\n";
    let d = diags(&[("10-zones.toml", ZONES), ("20-p.toml", p)]);
    assert_eq!(d, vec!["20-p.toml:3:6: error: unknown zone `dbs`; did you mean `db`?"]);
}

#[test]
fn wrong_types_say_what_was_expected() {
    let z = "[zone.web]\nmatch = { name = \"web-*\" }\nmax_conns = \"lots\"\nmode = 3\n";
    let d = diags(&[("z.toml", z)]);
    assert!(
        d.contains(&"z.toml:3:1: error: `max_conns` must be an integer, found a string".to_string()),
        "{d:?}"
    );
    assert!(d.contains(&"z.toml:4:8: error: `mode` must be a string, found an integer".to_string()), "{d:?}");
}

#[test]
fn bad_units_are_explained() {
    let z = "[zone.web]\nmatch = { name = \"web-*\" }\negress_bytes_per_sec = \"10Mb\"\n";
    let d = diags(&[("z.toml", z)]);
    // Cap errors point at the cap's key (the snippet underlines the key and its value).
    assert_eq!(d, vec!["z.toml:3:1: error: `egress_bytes_per_sec`: unit `Mb` is ambiguous: write `MB` for bytes or `mbit` for bits"]);
}

#[test]
fn duplicate_ids_name_the_first_use_across_files() {
    let a = format!("{ZONES}\n[[policy]]\nid = \"x\"\nfrom = \"web\"\nto = \"db\"\naction = \"allow\"\n");
    let b = "[[policy]]\nid = \"x\"\nfrom = \"db\"\nto = \"web\"\naction = \"deny\"\n";
    let d = diags(&[("a.toml", &a), ("b.toml", b)]);
    assert_eq!(d, vec!["b.toml:2:6: error: duplicate id `x`: already used at a.toml:8:6"]);
}

#[test]
fn duplicate_zones_and_defaults_are_errors() {
    let d = diags(&[
        ("a.toml", "[defaults]\naction = \"deny\"\n[zone.web]\nmatch = { name = \"w*\" }\n"),
        ("b.toml", "[defaults]\nmode = \"audit\"\n[zone.web]\nmatch = { name = \"x*\" }\n"),
    ]);
    assert_eq!(
        d,
        vec![
            "b.toml:1:1: error: [defaults] already set at a.toml:1:1: keep one [defaults] table",
            "b.toml:3:7: error: zone `web` is already declared at a.toml:3:7",
        ]
    );
}

#[test]
fn overlapping_selectors_warn_but_load() {
    let z = "[zone.web]\nmatch = { name = \"web-*\" }\n[zone.ones]\nmatch = { name = \"*-1\" }\n[zone.byimage]\nmatch = { image = \"nginx*\" }\n";
    let r = load(&[("z.toml", z)]);
    let d: Vec<String> = r.diagnostics.iter().map(|d| d.to_string()).collect();
    // name vs name intersect: warned; name vs image are different criteria: left to the inventory check.
    assert_eq!(d, vec![
        "z.toml:3:7: warning: zone `ones` may select the same containers as zone `web` (z.toml:1): such a container joins `web`, declared first",
    ]);
    assert!(r.policy.is_some());
}

#[test]
fn shadowed_and_redundant_policies_warn() {
    let p = r#"
[[policy]]
id = "web-any"
from = "web"
to = "any"
proto = "tcp"
action = "deny"

[[policy]]
id = "web-db-pg"
from = "web"
to = "db"
proto = "tcp"
ports = 5432
action = "allow"

[[policy]]
id = "web-db-pg-again"
from = "web"
to = "db"
proto = "tcp"
ports = "5000-6000"
action = "deny"
"#;
    let d = diags(&[("10-zones.toml", ZONES), ("20-p.toml", p)]);
    assert_eq!(d, vec![
        "20-p.toml:9:1: warning: policy `web-db-pg` is shadowed by `web-any` (20-p.toml:2), which matches everything it matches first: it never decides any traffic",
        "20-p.toml:17:1: warning: policy `web-db-pg-again` is shadowed by `web-any` (20-p.toml:2), which matches everything it matches first: it is redundant",
    ]);
}

#[test]
fn failsafes_cannot_be_denied_away() {
    let f = "[zone.dns]\nmatch = { name = \"dns-*\" }\n[[failsafe]]\nid = \"dns\"\nto = \"dns\"\nproto = \"udp\"\nports = 53\n";
    let p = "[[policy]]\nfrom = \"any\"\nto = \"dns\"\nproto = \"udp\"\nports = 53\naction = \"deny\"\n";
    let d = diags(&[("a.toml", f), ("b.toml", p)]);
    assert_eq!(d, vec!["b.toml:1:1: warning: policy `any->dns:udp/53` can never deny: failsafe `dns` (a.toml:3) allows this traffic first, and no policy can remove a failsafe"]);
}

#[test]
fn expired_policies_warn_and_are_not_compiled() {
    let p = format!("{ZONES}[[policy]]\nfrom = \"web\"\nto = \"db\"\naction = \"allow\"\nexpires = 1970-01-01T00:00:00Z\n");
    let d = diags(&[("a.toml", &p)]);
    assert_eq!(
        d,
        vec!["a.toml:6:1: warning: policy `web->db` expired at 1970-01-01T00:00:00Z: it is ignored"]
    );
    let local = format!(
        "{ZONES}[[policy]]\nfrom = \"web\"\nto = \"db\"\naction = \"allow\"\nexpires = 2030-01-01T00:00:00\n"
    );
    let d = diags(&[("a.toml", &local)]);
    assert!(d[0].contains("needs a UTC offset"), "{d:?}");
}

#[test]
fn zone_shape_errors() {
    // A zone may hold both containers and networks (`mixed`): no error for it.
    let d = diags(&[(
        "z.toml",
        "[zone.any]\ncidrs = [\"10.0.0.0/8\"]\n[zone.mixed]\nmatch = { name = \"x\" }\ncidrs = [\"10.0.0.0/8\"]\n[zone.empty]\ndescription = \"nothing\"\n[zone.default]\nmatch = { name = \"y\" }\n",
    )]);
    assert_eq!(d, vec![
        "z.toml:1:7: error: `any` is reserved: it means every address and cannot be declared",
        "z.toml:6:7: error: zone `empty` selects nothing: give it `match` (containers), `cidrs` (external networks), or both",
        "z.toml:8:7: error: zone `default` holds the containers no other zone selects: it takes no `match` or `cidrs`, only mode and caps",
    ]);
}

#[test]
fn ports_need_a_transport_and_inspect_is_validated() {
    let p = format!(
        "{ZONES}[[policy]]\nfrom = \"web\"\nto = \"db\"\nproto = \"icmp\"\nports = 80\naction = \"allow\"\n\
         [[policy]]\nfrom = \"web\"\nto = \"db\"\nproto = \"udp\"\nports = 443\naction = \"allow\"\ninspect = {{ tls_sni = [\"ok.example\", \"a.*.com\"], on_violation = \"explode\" }}\n"
    );
    let d = diags(&[("a.toml", &p)]);
    assert_eq!(d, vec![
        "a.toml:10:9: error: `ports` need `proto = \"tcp\"`, `\"udp\"` or `[\"tcp\", \"udp\"]`: ICMP and `any` have no ports",
        "a.toml:18:11: error: inspecting `tls` needs a policy that covers its transport (tcp)",
        "a.toml:18:38: error: `a.*.com` is not a host name or `*.domain` pattern: a wildcard may only be the whole first label, as in `*.example.com`",
        "a.toml:18:65: error: `on_violation` must be one of `alert`, `cut`, `quarantine`, found `explode`",
    ]);
}

#[test]
fn inspection_timeouts_and_fail_modes_are_validated() {
    let p = format!(
        "[defaults]\ninspect_fail = \"sometimes\"\n{ZONES}[[policy]]\nfrom = \"web\"\nto = \"db\"\nproto = \"tcp\"\nports = 443\naction = \"allow\"\n\
         inspect = {{ protocol = \"tls\", timeout = \"2 hours\", fail = \"maybe\" }}\n\
         [[policy]]\nfrom = \"web\"\nto = \"db\"\nproto = \"tcp\"\nports = 444\naction = \"allow\"\ninspect = {{ protocol = \"tls\", timeout = \"1ms\" }}\n"
    );
    let d = diags(&[("a.toml", &p)]);
    assert_eq!(d.len(), 4, "{d:#?}");
    assert!(
        d[0].starts_with("a.toml:2:16: error: `inspect_fail` must be one of `closed`, `open`"),
        "{}",
        d[0]
    );
    assert!(d[1].contains("error: `timeout`: `2 hours` is not a duration"), "{}", d[1]);
    assert!(d[2].contains("error: `fail` must be one of `closed`, `open`, found `maybe`"), "{}", d[2]);
    assert!(d[3].contains("error: `timeout` must be between 10ms and 30s"), "{}", d[3]);
    // Good values load, and a policy's `fail` wins over the default.
    let ok = format!(
        "[defaults]\ninspect_fail = \"open\"\n{ZONES}[[policy]]\nid = \"a\"\nfrom = \"web\"\nto = \"db\"\nproto = \"tcp\"\nports = 443\naction = \"allow\"\n\
         inspect = {{ protocol = \"tls\", timeout = \"1.5s\", fail = \"closed\" }}\n\
         [[policy]]\nid = \"b\"\nfrom = \"web\"\nto = \"db\"\nproto = \"tcp\"\nports = 444\naction = \"allow\"\ninspect = {{ protocol = \"tls\" }}\n"
    );
    let p = common::policy(&[("a.toml", &ok)]);
    let i = |id: &str| p.rules.iter().find(|r| r.id == id).unwrap().inspect.clone().unwrap();
    assert_eq!(i("a").timeout_ms, 1500);
    assert_eq!(i("a").fail_mode(&p.defaults), fw_daemon::rules::InspectFail::Closed);
    assert_eq!(
        (i("b").timeout_ms, i("b").fail_mode(&p.defaults)),
        (2000, fw_daemon::rules::InspectFail::Open)
    );
}

#[test]
fn two_external_zones_cannot_be_joined() {
    let z = "[zone.a]\ncidrs = [\"10.0.0.0/8\"]\n[zone.b]\ncidrs = [\"192.0.2.0/24\"]\n[[policy]]\nfrom = \"a\"\nto = \"b\"\naction = \"allow\"\n";
    let d = diags(&[("z.toml", z)]);
    assert_eq!(d, vec!["z.toml:5:1: error: `a` -> `b` joins two external zones: fw enforces inside containers, so this rule could never apply"]);
}

#[test]
fn the_cli_exits_1_and_prints_every_error() {
    let dir = std::env::temp_dir().join(format!("fw-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a.toml"), "[zone.web]\nmatch = { nme = \"web-*\" }\n[[policy]]\nfrom = \"web\"\nto = \"nowhere\"\naction = \"allow\"\n").unwrap();
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_fw-daemon")).arg("check").arg(&dir).output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let a = dir.join("a.toml");
    assert!(err.contains(&format!("{}:2:11: error: unknown key `nme`", a.display())), "{err}");
    assert!(err.contains(&format!("{}:5:6: error: unknown zone `nowhere`", a.display())), "{err}");
    assert!(err.contains("2 errors"), "no cascading errors expected: {err}");
}

#[test]
fn the_cli_accepts_the_demo() {
    let root = common::repo();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fw-daemon"))
        .args(["check"])
        .arg(root.join("rules/demo"))
        .arg("--inventory")
        .arg(root.join("rules/demo-inventory.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.stderr.is_empty(),
        "demo rules should be warning-free: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("batch-1          -> batch (audit)"), "{text}");
    assert!(text.contains("misc-1           -> default (enforce)"), "{text}");
}

/// The `check` binary on a directory of files, with optional inventory text and flags:
/// (exit code, stdout, stderr).
fn run_check(files: &[(&str, &str)], inventory: Option<&str>, flags: &[&str]) -> (i32, String, String) {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let tag = format!("cli{}", N.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
    let dir = common::work_dir("check", &tag);
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    for (name, text) in files {
        std::fs::write(rules.join(name), text).unwrap();
    }
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_fw-daemon"));
    cmd.arg("check").arg("rules").current_dir(&dir).args(flags).env_remove("NO_COLOR");
    if let Some(inv) = inventory {
        std::fs::write(dir.join("inv.toml"), inv).unwrap();
        cmd.args(["--inventory", "inv.toml"]);
    }
    let out = cmd.output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn follow_on_errors_never_come_before_their_cause() {
    // Each misspelt key is reported once, as misspelt: not also as the key it stands for
    // missing (which sat at the table's header, before its cause).
    let p = format!(
        "{ZONES}[[policy]]\nfrom = \"web\"\nto = \"db\"\nacton = \"allow\"\n\
         [[policy]]\nfrm = \"web\"\nto = \"db\"\naction = \"allow\"\n\
         [[policy]]\nfrom = \"web\"\nto = \"db\"\nports = 443\nprot = \"tcp\"\naction = \"allow\"\n\
         [[policy]]\nfrom = \"web\"\nto = \"db\"\nproto = \"tcp\"\naction = \"allow\"\ninspect = {{ protocl = \"tls\" }}\n\
         [zone.typo]\nmach = {{ name = \"x-*\" }}\n"
    );
    let d = diags(&[("a.toml", &p)]);
    assert_eq!(
        d,
        vec![
            "a.toml:9:1: error: unknown key `acton` in [[policy]]; did you mean `action`?",
            "a.toml:11:1: error: unknown key `frm` in [[policy]]; did you mean `from`?",
            "a.toml:18:1: error: unknown key `prot` in [[policy]]; did you mean `proto`?",
            "a.toml:25:13: error: unknown key `protocl` in `inspect`; did you mean `protocol`?",
            "a.toml:27:1: error: unknown key `mach` in zone `typo`; did you mean `match`?",
        ],
    );
}

#[test]
fn unknown_zones_and_services_list_the_known_ones() {
    let p =
        "[[policy]]\nfrom = \"web\"\nto = [\"db\", \"nowhere\"]\nservice = \"htps\"\naction = \"allow\"\n";
    let s = "[service.https]\nproto = \"tcp\"\nports = 443\n[service.dns]\nproto = [\"udp\", \"tcp\"]\nports = 53\n";
    let r = load(&[("10-zones.toml", ZONES), ("15-s.toml", s), ("20-p.toml", p)]);
    let find = |what: &str| r.diagnostics.iter().find(|d| d.message.contains(what)).cloned().unwrap();
    let zone = find("unknown zone `nowhere`");
    assert_eq!(zone.to_string(), "20-p.toml:3:13: error: unknown zone `nowhere`");
    assert_eq!(zone.notes, vec!["zones: web, db, default, any"]);
    let svc = find("unknown service");
    assert_eq!(svc.to_string(), "20-p.toml:4:11: error: unknown service `htps`; did you mean `https`?");
    assert_eq!(svc.notes, vec!["services: https, dns"]);
}

#[test]
fn port_problems_read_alike() {
    let p = format!(
        "{ZONES}[[policy]]\nfrom = \"web\"\nto = \"db\"\nproto = \"tcp\"\nports = [70000, 0, \"0-5\", \"99999\", -1, \"90-80\", \"80-\"]\naction = \"allow\"\n"
    );
    let d = diags(&[("a.toml", &p)]);
    assert_eq!(
        d,
        vec![
            "a.toml:10:10: error: port 70000 is out of range: ports go from 1 to 65535",
            "a.toml:10:17: error: port 0 is out of range: ports go from 1 to 65535",
            "a.toml:10:20: error: port range 0-5 is out of range: ports go from 1 to 65535",
            "a.toml:10:27: error: port 99999 is out of range: ports go from 1 to 65535",
            "a.toml:10:36: error: port -1 is out of range: ports go from 1 to 65535",
            "a.toml:10:40: error: port range 90-80 is backwards: write 80-90",
            "a.toml:10:49: error: port `80-` is not a port or a port range like \"8000-8100\"",
        ]
    );
}

#[test]
fn cap_problems_point_at_the_cap_key() {
    let z = "[zone.web]\nmatch = { name = \"web-*\" }\n    max_conns = 0\nnew_conns_per_sec = 99999999999\n\
             [zone.partners]\ncidrs = [\"192.0.2.0/24\"]\nmode = \"audit\"\n  egress_bytes_per_sec = \"1MB\"\n";
    let r = load(&[("z.toml", z)]);
    let d: Vec<String> = r.diagnostics.iter().map(|d| d.to_string()).collect();
    assert_eq!(
        d,
        vec![
            "z.toml:3:5: error: `max_conns` must be at least 1 (leave it out for no cap)",
            "z.toml:4:1: error: `new_conns_per_sec` must be at most 16777216",
            "z.toml:7:1: warning: `mode` is ignored in zone `partners`: it holds external networks only, and fw enforces a mode inside containers",
            "z.toml:8:3: warning: `egress_bytes_per_sec` is ignored in zone `partners`: it holds external networks only, and fw enforces caps inside containers",
        ]
    );
    // The underline covers the key and its value.
    assert_eq!(r.diagnostics[0].len, "max_conns = 0".len() as u32);
}

#[test]
fn check_prints_the_source_line_with_a_caret_and_colours_only_when_asked() {
    let p = "[[policy]]\nfrom = \"web\"\nto = \"dbs\"\naction = \"allow\"\n";
    let (code, out, err) = run_check(&[("10-zones.toml", ZONES), ("20-p.toml", p)], None, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(out.is_empty(), "no ok next to errors: {out}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines[0], "rules/20-p.toml:3:6: error: unknown zone `dbs`; did you mean `db`?");
    assert!(err.contains("3 | to = \"dbs\"\n  |      ^^^^^ no such zone\n"), "{err}");
    assert!(err.contains("= note: zones: web, db, default, any"), "{err}");
    assert!(!err.contains('\u{1b}'), "not a terminal: no colours: {err:?}");
    let (_, _, coloured) =
        run_check(&[("10-zones.toml", ZONES), ("20-p.toml", p)], None, &["--color", "always"]);
    assert!(coloured.contains("\u{1b}["), "{coloured:?}");
}

#[test]
fn deny_warnings_fails_the_check_on_warnings() {
    let z = "[zone.web]\nmatch = { name = \"web-*\" }\n[zone.ones]\nmatch = { name = \"*-1\" }\n";
    let (code, out, err) = run_check(&[("z.toml", z)], None, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("warning: zone `ones` may select"), "{err}");
    assert!(out.starts_with("rules: ok: "), "{out}");
    let (code, out, err) = run_check(&[("z.toml", z)], None, &["--deny-warnings"]);
    assert_eq!(code, 1, "{err}");
    assert!(out.is_empty(), "{out}");
    assert!(err.trim_end().ends_with("rules: 1 warning, denied by --deny-warnings"), "{err}");
}

#[test]
fn inventory_errors_are_all_reported_in_the_rules_dialect_and_no_ok_beside_them() {
    let inv = "[[container]]\nname = \"web-1\"\nimg = \"nginx\"\naddresses = [\"10.0.0.1\"]\n\
               [[container]]\nname = \"web-1\"\n\
               [[container]]\nname = \"db-1\"\naddress = [\"10.0.0.2\"]\nlabels = { tier = 3 }\n\
               [[container]]\nname = \"db-2\"\naddresses = [\"10.0.0.1\", \"10.0.0.3/24\"]\n";
    let (code, out, err) = run_check(&[("10-zones.toml", ZONES)], Some(inv), &[]);
    assert_eq!(code, 1, "{err}");
    assert!(out.is_empty(), "`ok` printed next to inventory errors: {out}");
    let firsts: Vec<&str> = err.lines().filter(|l| l.starts_with("inv.toml:")).collect();
    assert_eq!(
        firsts,
        vec![
            "inv.toml:3:1: error: unknown key `img` in [[container]]; did you mean `image`?",
            "inv.toml:6:8: error: container `web-1` is listed twice",
            "inv.toml:9:1: error: unknown key `address` in [[container]]; did you mean `addresses`?",
            "inv.toml:10:19: error: `labels.tier` must be a string, found an integer",
            "inv.toml:13:14: error: address 10.0.0.1 of `db-2` is also `web-1`'s",
            "inv.toml:13:26: error: `10.0.0.3/24` is not an IPv4 or IPv6 address; did you mean `10.0.0.3`?",
        ]
    );
    assert!(err.contains("= note: first listed at inv.toml:2:8"), "{err}");
}

#[test]
fn containers_two_zones_select_are_one_warning_per_pair_with_the_count() {
    let z = "[zone.web]\nmatch = { name = \"web-*\" }\n[zone.ones]\nmatch = { name = \"*-1\" }\n";
    let mut inv = String::new();
    for i in 0..9 {
        inv.push_str(&format!("[[container]]\nname = \"web-{i}-1\"\naddresses = [\"10.0.0.{}\"]\n", i + 1));
    }
    let (code, out, err) = run_check(&[("z.toml", z)], Some(&inv), &[]);
    assert_eq!(code, 0, "{err}");
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains(": warning: ")).collect();
    assert_eq!(
        warnings,
        vec!["rules/z.toml:3:7: warning: zone `ones` selects 9 containers that zone `web` (rules/z.toml:1) selects first: they join `web`"],
        "{err}"
    );
    assert!(
        err.contains("= note: selected by both: web-0-1, web-1-1, web-2-1, web-3-1, web-4-1, ... (9 in all)"),
        "{err}"
    );
    assert!(out.contains("web-8-1          -> web (enforce)"), "{out}");
}
