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
    let dir = common::repo().join("rules/demo");
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
            path: PathBuf::from("rules/demo").join(p.file_name().expect("file name")),
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
