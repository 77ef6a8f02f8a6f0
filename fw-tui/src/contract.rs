//! The `--json` contract, checked against what the commands really print: every command's
//! output (and its errors) against its schema in `fw-proto/schema/` (see
//! `fw_proto::output`), with the version, and the exit codes.

use std::path::Path;

use fw_proto::control::{Answer, BlockOrigin, ErrorCode, Event, FlowSnapshot, Op};

use crate::cli::{parse_args, run};
use crate::console::testdata;
use crate::testserver::{error, event, ok, Out, TestServer};

const NOW: i64 = 1_714_564_800;

fn now() -> i64 {
    NOW
}

fn validator(name: &str) -> jsonschema::Validator {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(fw_proto::output::SCHEMA_DIR)
        .join(format!("{name}.schema.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let schema: serde_json::Value = serde_json::from_str(&text).expect("a schema is JSON");
    jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("{name}: not a valid schema: {e}"))
}

/// Every stdout line is a JSON document valid against schema `name`, with `version`.
fn check(name: &str, stdout: &str) -> Vec<serde_json::Value> {
    assert!(!stdout.is_empty(), "{name}: no output");
    let v = validator(name);
    stdout
        .lines()
        .map(|l| {
            let doc: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{name}: {e}: {l}"));
            let errors: Vec<String> =
                v.iter_errors(&doc).map(|e| format!("{e} at {}", e.instance_path())).collect();
            assert!(errors.is_empty(), "{name}: {l}\n{}", errors.join("\n"));
            assert_eq!(doc["version"], fw_proto::output::JSON_VERSION, "{l}");
            doc
        })
        .collect()
}

/// Runs `fw-tui --json ARGS` against `srv`: (exit code, stdout).
fn json_run(srv: &TestServer, args: &[&str]) -> (u8, String) {
    let sock = srv.path.to_str().expect("utf-8 path").to_string();
    let all = ["fw-tui", "--json", "--socket", &sock].into_iter().chain(args.iter().copied());
    let cli = parse_args(all).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = run(&cli, &mut out, &mut err, now);
    (code, String::from_utf8(out).expect("utf-8"))
}

fn serving(answer: Answer) -> TestServer {
    TestServer::start(move |req| vec![ok(req.id, answer.clone())])
}

#[test]
fn every_answer_matches_its_schema() {
    let blocks = testdata::blocks();
    let cases: Vec<(&str, Vec<&str>, Answer)> = vec![
        ("status", vec!["status"], Answer::Status(testdata::status())),
        (
            "flows",
            vec!["flows"],
            Answer::Flows(FlowSnapshot { flows: testdata::flows(), total: 9, lost_events: 0 }),
        ),
        ("blocked", vec!["block", "quarantine", "api-1"], Answer::Blocked { block: blocks[0].clone() }),
        (
            "blocked",
            vec!["block", "dst", "198.51.100.9", "--container", "web-1", "--port", "443"],
            Answer::Blocked { block: testdata::destination_block(4, "web-1") },
        ),
        (
            "unblocked",
            vec!["unblock", "3"],
            Answer::Unblocked {
                block: blocks[0].clone(),
                remaining: vec![testdata::destination_block(4, "api-1")],
            },
        ),
        ("blocks", vec!["blocks"], Answer::Blocks { blocks: blocks.clone() }),
        ("audit", vec!["audit", "--since", "1h"], Answer::Audit { records: testdata::audit() }),
        ("reloaded", vec!["reload"], Answer::Reloaded { policy_hash: "sha256:ab".into(), rejected: vec![] }),
        ("alerts", vec!["alerts"], Answer::Alerts { alerts: testdata::alerts() }),
    ];
    for (schema, args, answer) in cases {
        let (code, out) = json_run(&serving(answer), &args);
        assert_eq!(code, 0, "{args:?}: {out}");
        let docs = check(schema, &out);
        assert_eq!(docs.len(), 1, "{args:?}: one line: {out}");
        assert_eq!(docs[0]["kind"], schema, "{args:?}");
    }
    // A reload that rejected files is still a `reloaded` document, and exit 1.
    let rejected =
        Answer::Reloaded { policy_hash: "h".into(), rejected: vec!["a.toml:1:1: error: x".into()] };
    let (code, out) = json_run(&serving(rejected), &["reload"]);
    assert_eq!(code, 1);
    check("reloaded", &out);
}

#[test]
fn times_are_milliseconds_and_targets_have_one_shape() {
    let (_, out) = json_run(&serving(Answer::Blocks { blocks: testdata::blocks() }), &["blocks"]);
    let block = &check("blocks", &out)[0]["blocks"][0];
    let (_, out) = json_run(&serving(Answer::Audit { records: testdata::audit() }), &["audit"]);
    let record = &check("audit", &out)[0]["records"][1];
    assert_eq!(
        block["target"], record["target"],
        "the same block's target, in a block and in the audit trail"
    );
    assert_eq!(block["target"]["kind"], "quarantine");
    for doc in [block, record] {
        let keys: Vec<&String> = doc.as_object().expect("an object").keys().collect();
        let times: Vec<&&String> =
            keys.iter().filter(|k| k.contains("time") || k.ends_with("_at") || k.contains("ttl")).collect();
        assert!(times.iter().all(|k| k.ends_with("_ms")), "times not in milliseconds: {times:?}");
    }
    let (_, out) = json_run(&serving(Answer::Status(testdata::status())), &["status"]);
    let status = &check("status", &out)[0];
    assert!(status.get("uptime_ms").is_some() && status.get("loaded_at_ms").is_some(), "{status}");
    assert!(status.get("uptime_secs").is_none() && status.get("loaded_at").is_none(), "{status}");
}

#[test]
fn follow_lines_match_the_event_schema_and_end_in_an_error_document() {
    let srv = TestServer::start(|req| match req.op {
        Op::Subscribe { .. } => vec![
            ok(req.id, Answer::Subscribed { sub: 1 }),
            event(
                1,
                Event::Flows {
                    changed: testdata::flows(),
                    removed: vec![],
                    total: 9,
                    lost_events: 0,
                    full: true,
                },
            ),
            event(
                1,
                Event::Flows { changed: vec![], removed: vec![4], total: 8, lost_events: 2, full: false },
            ),
            Out::Close,
        ],
        _ => vec![],
    });
    let (code, out) = json_run(&srv, &["flows", "--follow"]);
    assert_eq!(code, crate::cli::exit::UNREACHABLE);
    let mut lines: Vec<&str> = out.lines().collect();
    let last = lines.pop().expect("an error line");
    check("flows-event", &lines.join("\n"));
    let e = &check("error", last)[0];
    assert_eq!((e["code"].as_str(), e["exit"].as_u64()), (Some("unreachable"), Some(3)));
}

#[test]
fn errors_are_json_documents_with_the_exit_code() {
    // Refused by the daemon.
    let srv =
        TestServer::start(|req| vec![error(Some(req.id), ErrorCode::Conflict, "already blocked by block 3")]);
    let (code, out) = json_run(&srv, &["block", "quarantine", "api-1"]);
    assert_eq!(code, 1);
    let e = &check("error", &out)[0];
    assert_eq!(
        (e["code"].as_str(), e["message"].as_str()),
        (Some("conflict"), Some("conflict: already blocked by block 3"))
    );
    // Forbidden: exit 4.
    let srv = TestServer::start(|req| vec![error(Some(req.id), ErrorCode::Forbidden, "viewer")]);
    assert_eq!(json_run(&srv, &["reload"]).0, 4);
    // No daemon: exit 3, still a document.
    let cli = parse_args(["fw-tui", "--json", "status", "--socket", "/nonexistent/fw.sock"]).expect("parses");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    assert_eq!(run(&cli, &mut out, &mut err, now), 3);
    let e = &check("error", std::str::from_utf8(&out).expect("utf-8"))[0];
    assert_eq!(e["code"], "unreachable");
    // Several ids: one document each, the exit code of the first failure.
    let srv = TestServer::start(|req| match req.op {
        Op::Unblock { block: 2 } => vec![error(Some(req.id), ErrorCode::NotFound, "no block with id 2")],
        Op::Unblock { block } => {
            let mut b = testdata::destination_block(block, "web-1");
            b.origin = BlockOrigin::Operator;
            vec![ok(req.id, Answer::Unblocked { block: b, remaining: vec![] })]
        }
        _ => vec![],
    });
    let (code, out) = json_run(&srv, &["unblock", "1", "2", "3"]);
    assert_eq!(code, 1);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    check("unblocked", lines[0]);
    assert_eq!(check("error", lines[1])[0]["message"], "unblock 2: not-found: no block with id 2");
    check("unblocked", lines[2]);
    let got: Vec<Op> = srv.received().into_iter().map(|r| r.op).skip(1).collect();
    assert_eq!(got, [1, 2, 3].map(|block| Op::Unblock { block }), "every id is sent, in order");
}

#[test]
fn usage_errors_under_json_are_documents_with_exit_2() {
    let mut out = Vec::new();
    let e = parse_args(["fw-tui", "--json", "block", "quarantine"]).expect_err("no container");
    assert_eq!(crate::cli::usage_failure_for_test(&e, true, &mut out), 2);
    let e = &check("error", std::str::from_utf8(&out).expect("utf-8"))[0];
    assert_eq!((e["code"].as_str(), e["exit"].as_u64()), (Some("usage"), Some(2)));
    assert!(e["message"].as_str().is_some_and(|m| m.contains("CONTAINER")), "{e}");
}

#[test]
fn blocks_filter_by_container_kind_and_origin() {
    let mut auto = testdata::destination_block(8, "web-1");
    auto.origin = BlockOrigin::Tamper;
    auto.target = fw_proto::control::BlockTarget::Quarantine {
        container: "web-1".into(),
        direction: fw_proto::control::BlockDirection::Both,
    };
    let all = vec![testdata::blocks()[0].clone(), testdata::destination_block(4, "web-1"), auto];
    let ids = |args: &[&str]| -> Vec<u64> {
        let (code, out) = json_run(&serving(Answer::Blocks { blocks: all.clone() }), args);
        assert_eq!(code, 0);
        check("blocks", &out)[0]["blocks"]
            .as_array()
            .expect("a list")
            .iter()
            .filter_map(|b| b["id"].as_u64())
            .collect()
    };
    assert_eq!(ids(&["blocks"]), [3, 4, 8]);
    assert_eq!(ids(&["blocks", "--container", "web-1"]), [4, 8]);
    assert_eq!(ids(&["blocks", "--kind", "quarantine"]), [3, 8]);
    assert_eq!(ids(&["blocks", "--kind", "dst", "--container", "api-1"]), Vec::<u64>::new());
    assert_eq!(ids(&["blocks", "--auto"]), [8]);
    assert_eq!(ids(&["blocks", "--operator"]), [3, 4]);
    assert!(parse_args(["fw-tui", "blocks", "--auto", "--operator"]).is_err());
}
