//! Property tests: the loader is fed the demo rule files after random edits (bytes
//! inserted, deleted or replaced, lines duplicated, swapped or cut, values swapped for
//! hostile tokens) and must never panic, must produce a policy exactly when it reports no
//! error, and must point every diagnostic at a real position of a real input file.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use fw_daemon::compile::{compile_all, CompileOptions};
use fw_daemon::rules::{load_sources, SourceFile};
use fw_daemon::ruleset::render::render;
use proptest::prelude::*;
use proptest::strategy::ValueTree;

fn demo_files() -> Vec<SourceFile> {
    rule_files("demo")
}

/// rules/features: lists, services, a mixed zone, ICMP types.
fn feature_files() -> Vec<SourceFile> {
    rule_files("features")
}

fn rule_files(name: &str) -> Vec<SourceFile> {
    let dir = common::repo().join("rules").join(name);
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .expect("rules/demo")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|p| SourceFile {
            text: std::fs::read_to_string(&p).expect("demo file"),
            path: PathBuf::from("rules").join(name).join(p.file_name().expect("file name")),
        })
        .collect()
}

/// Tokens that stress the parser and the validators: wrong types, out-of-range numbers,
/// malformed CIDRs and units, unbalanced brackets, odd unicode.
const HOSTILE: &[&str] = &[
    "\"\"",
    "\"10.0.0.0/33\"",
    "\"fd00::/129\"",
    "\"300.1.1.1\"",
    "65536",
    "-1",
    "0",
    "99999999999999999999",
    "\"80-70\"",
    "\"1-65535\"",
    "\"10XB\"",
    "\"80mbit\"",
    "\"0B\"",
    "true",
    "[",
    "]",
    "{",
    "}",
    "=",
    "[[",
    "]]",
    "\"\\u0000\"",
    "\"é\u{200b}\u{1F525}\"",
    "'''",
    "\"\"\"",
    "1979-05-27T07:32:00Z",
    "2099-01-01",
    "\"*\"",
    "\"**\"",
    "\"web-*\"",
    "inf",
    "nan",
    "0x10",
    "{ tier = \"api\" }",
    "[\"a\", 1]",
    "\n[zone.x]\n",
    "\n[[policy]]\n",
    "[\"web\", \"any\"]",
    "[\"web\", \"api\", \"web\"]",
    "[]",
    "\"TCP\"",
    "[\"Icmp\", \"udp\"]",
    "\"echo-request\"",
    "[\"echo-request\", \"bogus\"]",
    "\n[service.x]\nproto = \"tcp\"\n",
    "\nservice = \"x\"\n",
    "\nicmp_types = [\"packet-too-big\"]\n",
    "\ncidrs = [\"10.9.0.0/16\"]\n",
];

#[derive(Debug, Clone)]
enum Edit {
    InsertByte {
        file: usize,
        at: usize,
        byte: u8,
    },
    DeleteRange {
        file: usize,
        at: usize,
        len: usize,
    },
    ReplaceByte {
        file: usize,
        at: usize,
        byte: u8,
    },
    DuplicateLine {
        file: usize,
        line: usize,
    },
    SwapLines {
        file: usize,
        a: usize,
        b: usize,
    },
    DeleteLine {
        file: usize,
        line: usize,
    },
    Truncate {
        file: usize,
        at: usize,
    },
    /// Replaces the value after the first `=` of a line with a hostile token.
    HostileValue {
        file: usize,
        line: usize,
        token: usize,
    },
    /// Inserts a hostile token at a byte position.
    HostileInsert {
        file: usize,
        at: usize,
        token: usize,
    },
}

fn edit() -> impl Strategy<Value = Edit> {
    let f = 0usize..8;
    let n = 0usize..20_000;
    prop_oneof![
        (f.clone(), n.clone(), any::<u8>()).prop_map(|(file, at, byte)| Edit::InsertByte { file, at, byte }),
        (f.clone(), n.clone(), 1usize..40).prop_map(|(file, at, len)| Edit::DeleteRange { file, at, len }),
        (f.clone(), n.clone(), any::<u8>()).prop_map(|(file, at, byte)| Edit::ReplaceByte { file, at, byte }),
        (f.clone(), n.clone()).prop_map(|(file, line)| Edit::DuplicateLine { file, line }),
        (f.clone(), n.clone(), n.clone()).prop_map(|(file, a, b)| Edit::SwapLines { file, a, b }),
        (f.clone(), n.clone()).prop_map(|(file, line)| Edit::DeleteLine { file, line }),
        (f.clone(), n.clone()).prop_map(|(file, at)| Edit::Truncate { file, at }),
        (f.clone(), n.clone(), 0..HOSTILE.len()).prop_map(|(file, line, token)| Edit::HostileValue {
            file,
            line,
            token
        }),
        (f, n, 0..HOSTILE.len()).prop_map(|(file, at, token)| Edit::HostileInsert { file, at, token }),
    ]
}

/// Applies edits on bytes, then decodes lossily as the loader's caller (read_dir) would
/// after a failed UTF-8 check. Positions wrap modulo the file length.
fn mutate(files: &[SourceFile], edits: &[Edit]) -> Vec<SourceFile> {
    let mut bytes: Vec<Vec<u8>> = files.iter().map(|f| f.text.clone().into_bytes()).collect();
    for e in edits {
        let count = bytes.len();
        let pick = |file: usize| file % count;
        match *e {
            Edit::InsertByte { file, at, byte } => {
                let b = &mut bytes[pick(file)];
                let at = at % (b.len() + 1);
                b.insert(at, byte);
            }
            Edit::DeleteRange { file, at, len } => {
                let b = &mut bytes[pick(file)];
                if !b.is_empty() {
                    let at = at % b.len();
                    let end = (at + len).min(b.len());
                    b.drain(at..end);
                }
            }
            Edit::ReplaceByte { file, at, byte } => {
                let b = &mut bytes[pick(file)];
                if !b.is_empty() {
                    let at = at % b.len();
                    b[at] = byte;
                }
            }
            Edit::Truncate { file, at } => {
                let b = &mut bytes[pick(file)];
                let at = at % (b.len() + 1);
                b.truncate(at);
            }
            Edit::HostileInsert { file, at, token } => {
                let b = &mut bytes[pick(file)];
                let at = at % (b.len() + 1);
                b.splice(at..at, HOSTILE[token].bytes());
            }
            Edit::DuplicateLine { file, line }
            | Edit::DeleteLine { file, line }
            | Edit::HostileValue { file, line, .. } => {
                let b = &mut bytes[pick(file)];
                let mut lines: Vec<Vec<u8>> = b.split(|&c| c == b'\n').map(<[u8]>::to_vec).collect();
                let i = line % lines.len();
                match *e {
                    Edit::DuplicateLine { .. } => {
                        let l = lines[i].clone();
                        lines.insert(i, l);
                    }
                    Edit::DeleteLine { .. } => {
                        lines.remove(i);
                    }
                    Edit::HostileValue { token, .. } => {
                        if let Some(eq) = lines[i].iter().position(|&c| c == b'=') {
                            lines[i].truncate(eq + 1);
                            lines[i].push(b' ');
                            lines[i].extend_from_slice(HOSTILE[token].as_bytes());
                        }
                    }
                    _ => unreachable!("outer match covers only line edits"),
                }
                *b = lines.join(&b'\n');
            }
            Edit::SwapLines { file, a, b: other } => {
                let b = &mut bytes[pick(file)];
                let mut lines: Vec<Vec<u8>> = b.split(|&c| c == b'\n').map(<[u8]>::to_vec).collect();
                let (x, y) = (a % lines.len(), other % lines.len());
                lines.swap(x, y);
                *b = lines.join(&b'\n');
            }
        }
    }
    files
        .iter()
        .zip(bytes)
        .map(|(f, b)| SourceFile { path: f.path.clone(), text: String::from_utf8_lossy(&b).into_owned() })
        .collect()
}

fn check_invariants(files: &[SourceFile]) -> Result<(), TestCaseError> {
    let result = load_sources(files, 1_700_000_000);
    let has_error = result.errors().next().is_some();
    prop_assert_eq!(result.policy.is_some(), !has_error, "policy iff no error: {:#?}", result.diagnostics);

    let lines: HashMap<&PathBuf, usize> =
        files.iter().map(|f| (&f.path, f.text.lines().count().max(1))).collect();
    for d in &result.diagnostics {
        let shown = d.to_string();
        prop_assert!(!d.message.is_empty(), "empty message: {shown}");
        let Some(&n) = lines.get(&*d.path) else {
            return Err(TestCaseError::fail(format!("diagnostic names an unknown file: {shown}")));
        };
        if d.line > 0 {
            prop_assert!(d.col >= 1, "column 0 with a line: {shown}");
            prop_assert!(d.line as usize <= n + 1, "line past the end of a {n}-line file: {shown}");
            let prefix = format!("{}:{}:{}: ", d.path.display(), d.line, d.col);
            prop_assert!(shown.starts_with(&prefix), "not path:line:col: {shown}");
        }
    }

    // Every zone and policy written is compiled or reported: when the files load, none of
    // them went missing on the way.
    if let Some(policy) = &result.policy {
        let mut written = 0;
        for f in files {
            let Ok(doc) = f.text.parse::<toml::Table>() else { continue };
            if let Some(zones) = doc.get("zone").and_then(|z| z.as_table()) {
                for name in zones.keys() {
                    prop_assert!(
                        policy.zones.iter().any(|z| &z.name == name),
                        "zone `{}` declared in {} is neither compiled nor reported",
                        name,
                        f.path.display()
                    );
                }
            }
            if let Some(services) = doc.get("service").and_then(|z| z.as_table()) {
                for name in services.keys() {
                    prop_assert!(
                        policy.services.iter().any(|s| &s.name == name),
                        "service `{}` declared in {} is neither compiled nor reported",
                        name,
                        f.path.display()
                    );
                }
            }
            written += doc.get("policy").and_then(|p| p.as_array()).map_or(0, |a| a.len());
        }
        prop_assert_eq!(policy.rules.len(), written, "a policy vanished without a diagnostic");
    }

    // Whatever loads compiles and renders for the demo inventory, deterministically.
    if let Some(policy) = result.policy {
        let inv = common::demo_inventory();
        let opts = CompileOptions::default();
        let a: Vec<String> = compile_all(&policy, &inv, &opts).iter().map(render).collect();
        let again = load_sources(files, 1_700_000_000).policy.expect("same input loads again");
        let b: Vec<String> = compile_all(&again, &inv, &opts).iter().map(render).collect();
        prop_assert_eq!(a, b, "compilation is not deterministic");
    }
    Ok(())
}

#[test]
fn unmutated_demo_loads_cleanly() {
    let result = load_sources(&demo_files(), 1_700_000_000);
    assert!(result.policy.is_some(), "{:#?}", result.diagnostics);
    let result = load_sources(&feature_files(), 1_700_000_000);
    assert!(result.policy.is_some() && result.diagnostics.is_empty(), "{:#?}", result.diagnostics);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_demo_rules_never_panic(edits in prop::collection::vec(edit(), 1..6)) {
        let files = mutate(&demo_files(), &edits);
        check_invariants(&files)?;
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        check_invariants(&[SourceFile { path: PathBuf::from("rules/x.toml"), text }])?;
    }
    #[test]
    fn mutated_feature_rules_never_panic(edits in prop::collection::vec(edit(), 1..6)) {
        let files = mutate(&feature_files(), &edits);
        check_invariants(&files)?;
    }

    #[test]
    fn every_declared_zone_is_compiled_or_reported(zones in prop::collection::vec(zone(), 1..5)) {
        let mut text = String::from("[defaults]\naction = \"allow\"\n");
        for (name, body) in &zones {
            text.push_str(&format!("[zone.{name}]\n{body}"));
        }
        for (name, _) in &zones {
            text.push_str(&format!("[[policy]]\nfrom = \"any\"\nto = \"{name}\"\naction = \"deny\"\n"));
        }
        check_invariants(&[SourceFile { path: PathBuf::from("rules/z.toml"), text }])?;
    }
}

/// A zone: a name and a body from the shapes engineers write, right and wrong, empty
/// selectors included.
fn zone() -> impl Strategy<Value = (String, String)> {
    let name = prop::sample::select(vec!["web", "db", "api", "default", "w_1", "x"]);
    let matcher = prop::sample::select(vec![
        "",
        "match = {}\n",
        "match = { name = \"web-*\" }\n",
        "match = { labels = {} }\n",
        "match = { labels = { tier = \"web\" } }\n",
        "match = { labels = { tier = 5 } }\n",
        "match = { image = [] }\n",
        "match = { image = \"nginx:*\" }\n",
        "match = { name = [], labels = {} }\n",
        "match = { name = \"a\", labels = {} }\n",
        "match = { nme = \"x\" }\n",
        "match = { name = \"\" }\n",
        "match = \"web\"\n",
    ]);
    let cidrs =
        prop::sample::select(vec!["", "cidrs = [\"10.0.0.0/8\"]\n", "cidrs = []\n", "cidrs = [\"bad\"]\n"]);
    let extra = prop::sample::select(vec!["", "mode = \"audit\"\n", "mode = \"bogus\"\n", "max_conns = 0\n"]);
    (name, matcher, cidrs, extra).prop_map(|(n, m, c, e)| (n.to_string(), format!("{m}{c}{e}")))
}

/// The mutator itself must change its input, or the properties above test nothing.
#[test]
fn mutations_reach_errors_and_policies() {
    let demo = demo_files();
    let mut errors = 0;
    let mut policies = 0;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for _ in 0..300 {
        let edits = prop::collection::vec(edit(), 1..4).new_tree(&mut runner).expect("strategy").current();
        match load_sources(&mutate(&demo, &edits), 1_700_000_000).policy {
            Some(_) => policies += 1,
            None => errors += 1,
        }
    }
    assert!(errors > 30 && policies > 30, "mutations too weak or too strong: {errors} errors, {policies} ok");
}

/// Services of the equivalence property below, with what each says inline.
const SERVICES: &[(&str, &str)] = &[
    ("https", "proto = \"tcp\"\nports = [443, 8443]\n"),
    ("dns", "proto = [\"udp\", \"tcp\"]\nports = 53\n"),
    ("ping", "proto = \"icmp\"\nicmp_types = [\"echo-request\"]\n"),
    ("pg", "proto = \"TCP\"\nports = 5432\n"),
    ("v6err", "proto = \"icmp\"\nicmp_types = [\"packet-too-big\", \"timestamp-request\"]\n"),
];
const TOUR_ZONES: &[&str] = &["web", "api", "db", "batch", "resolvers", "partners", "default", "any"];

/// A policy in list form: from zones, to zones, services, action.
fn list_policy() -> impl Strategy<Value = (Vec<&'static str>, Vec<&'static str>, Vec<usize>, &'static str)> {
    let zones = prop::sample::subsequence(TOUR_ZONES[..7].to_vec(), 1..4);
    let any_or = |z: Vec<&'static str>, any: bool| if any { vec!["any"] } else { z };
    (
        zones.clone(),
        any::<bool>(),
        zones,
        prop::bool::weighted(0.2),
        prop::sample::subsequence((0..SERVICES.len()).collect::<Vec<_>>(), 1..4),
        prop::sample::select(vec!["allow", "deny", "log"]),
    )
        .prop_map(move |(f, fa, t, ta, s, a)| (any_or(f, fa), any_or(t, ta), s, a))
        // Only external zones at both ends can never apply: an error, not a policy.
        .prop_filter("partners -> partners alone", |(f, t, _, _)| !(f == &["partners"] && t == &["partners"]))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    /// Same semantics: a policy with zone lists and services decides every packet as its
    /// expansion into one block per (from, to, service), in order, does, at both ends.
    #[test]
    fn lists_and_services_mean_their_expansion(policies in prop::collection::vec(list_policy(), 1..5)) {
        let zones = std::fs::read_to_string(common::repo().join("rules/features/10-zones.toml")).unwrap();
        let mut services = String::new();
        for (name, body) in SERVICES {
            services.push_str(&format!("[service.{name}]\n{body}"));
        }
        let list = |xs: &[&str]| xs.iter().map(|x| format!("\"{x}\"")).collect::<Vec<_>>().join(", ");
        let mut short = String::from("[defaults]\naction = \"deny\"\n");
        let mut long = short.clone();
        for (from, to, svc, action) in &policies {
            let names: Vec<&str> = svc.iter().map(|i| SERVICES[*i].0).collect();
            short.push_str(&format!(
                "[[policy]]\nfrom = [{}]\nto = [{}]\nservice = [{}]\naction = \"{action}\"\n",
                list(from), list(to), list(&names)
            ));
            for f in from {
                // The part joining two external zones never applies (check warns about it).
                for t in to.iter().filter(|t| !(*f == "partners" && **t == "partners")) {
                    for i in svc {
                        long.push_str(&format!(
                            "[[policy]]\nfrom = \"{f}\"\nto = \"{t}\"\n{}action = \"{action}\"\n",
                            SERVICES[*i].1
                        ));
                    }
                }
            }
        }
        let load = |policies: &str, with_services: bool| {
            let mut files = vec![SourceFile { path: "rules/10-zones.toml".into(), text: zones.clone() }];
            if with_services {
                files.push(SourceFile { path: "rules/15-services.toml".into(), text: services.clone() });
            }
            files.push(SourceFile { path: "rules/20-policies.toml".into(), text: policies.to_string() });
            let r = load_sources(&files, 1_700_000_000);
            r.policy.ok_or_else(|| format!("{:#?}", r.diagnostics))
        };
        let a = load(&short, true).map_err(TestCaseError::fail)?;
        let b = load(&long, false).map_err(TestCaseError::fail)?;
        let inv = common::demo_inventory();
        let opts = CompileOptions::default();
        let ra = compile_all(&a, &inv, &opts);
        let rb = compile_all(&b, &inv, &opts);
        use fw_daemon::ruleset::eval::{evaluate, Packet, Proto};
        use fw_daemon::ruleset::ir::Hook;
        let probes: [(Proto, Option<u16>, Option<u8>); 7] = [
            (Proto::Tcp, Some(443), None),
            (Proto::Tcp, Some(5432), None),
            (Proto::Tcp, Some(22), None),
            (Proto::Udp, Some(53), None),
            (Proto::Icmp, None, None),
            (Proto::Icmp, None, Some(13)),
            (Proto::Icmp, None, Some(2)),
        ];
        let mut peers: Vec<std::net::IpAddr> = inv.containers.iter().flat_map(|c| c.addresses.clone()).collect();
        peers.extend(["10.77.8.7".parse::<std::net::IpAddr>().unwrap(), "10.77.9.7".parse().unwrap(), "fd77:0:9::7".parse().unwrap()]);
        for (i, c) in inv.containers.iter().enumerate() {
            for own in &c.addresses {
                for peer in peers.iter().filter(|p| p.is_ipv6() == own.is_ipv6() && *p != own) {
                    for (proto, dport, icmp_type) in probes {
                        // ICMPv6 numbers for an IPv6 packet: 2 is packet-too-big there.
                        let icmp_type = icmp_type.map(|t| if own.is_ipv6() && t == 13 { 128 } else { t });
                        for (hook, src, dst) in [(Hook::Output, *own, *peer), (Hook::Input, *peer, *own)] {
                            let pkt = Packet { src, dst, proto, dport, icmp_type };
                            let (x, y) = (evaluate(&ra[i], hook, &pkt).verdict, evaluate(&rb[i], hook, &pkt).verdict);
                            prop_assert_eq!(x, y, "{} {:?} {:?}:\n{}\n---\n{}", c.name, hook, pkt, short, long);
                        }
                    }
                }
            }
        }
    }
}
