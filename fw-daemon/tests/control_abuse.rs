//! The control socket under a hostile local user, with real users and groups (useradd,
//! setpriv): a viewer holding every connection it can, idle or trickling bytes, does not
//! keep root or an operator out; a connection's role is the one it had when it connected,
//! even after its pid is reused by an operator's process (forced with ns_last_pid in a pid
//! namespace of the test's own); a refused request keeps its reason in the audit trail.
//! Peers are this same test binary re-executed as those users (see `common::helper`).

mod common;

use fw_proto::control::AuditOp;
use std::fs;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::accounts::{name, Accounts};
use common::client::Client;
use common::daemon::Daemon;
use common::helper::{self, report, reports};
use fw_proto::control::*;
use serde_json::{json, Value};

const HELLO: &str = r#"{"id":1,"op":"hello","version":2,"client":"abuse-test"}"#;

fn available() -> bool {
    common::lab::available()
        && ["useradd", "setpriv", "unshare"]
            .iter()
            .all(|t| Command::new("which").arg(t).output().is_ok_and(|o| o.status.success()))
}

fn env(k: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| panic!("helper needs {k}"))
}

/// A work dir with the demo rules and an empty inventory, open to other users (they
/// reach the socket in it).
fn work(tag: &str) -> PathBuf {
    let d = common::work_dir("abuse", tag);
    fs::create_dir_all(d.join("rules")).unwrap();
    for f in fs::read_dir(common::repo().join("rules/demo")).unwrap().flatten() {
        fs::copy(f.path(), d.join("rules").join(f.file_name())).unwrap();
    }
    fs::write(d.join("inventory.toml"), "").unwrap();
    Command::new("chmod").args(["777", d.to_str().unwrap()]).status().unwrap();
    d
}

fn group_flags(sock: &str, view: &str, op: &str) -> Vec<String> {
    ["--socket-group", sock, "--viewer-group", view, "--operator-group", op].map(String::from).to_vec()
}

/// Reads one line within `t`; `None` on timeout. Panics on a broken connection.
fn line_within(s: &mut UnixStream, t: Duration) -> Option<String> {
    s.set_read_timeout(Some(t)).unwrap();
    let mut buf = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match s.read(&mut b) {
            Ok(0) => return (!buf.is_empty()).then(|| String::from_utf8_lossy(&buf).into()),
            Ok(_) if b[0] == b'\n' => return Some(String::from_utf8_lossy(&buf).into()),
            Ok(_) => buf.push(b[0]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return None,
            Err(e) => panic!("read: {e}"),
        }
    }
}

fn msg(line: &str) -> ServerMsg {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

/// Helper: as a viewer, open `FW_IDLE` connections that say hello and then idle, and
/// `FW_SLOW` that send a few bytes of a hello and then one byte a second, never a newline.
/// Reports what got in, says READY, keeps trickling for `FW_HOLD_MS`, then reports when the
/// daemon closed the slow ones.
fn flood() {
    let sock = PathBuf::from(env("FW_SOCKET"));
    let n_idle: usize = env("FW_IDLE").parse().unwrap();
    let n_slow: usize = env("FW_SLOW").parse().unwrap();
    let hold = Duration::from_millis(env("FW_HOLD_MS").parse().unwrap());
    let (mut idle, mut idle_refused) = (Vec::new(), 0);
    for _ in 0..n_idle {
        let mut s = UnixStream::connect(&sock).expect("connect");
        // A refused connection may be closed before this write: its answer is read anyway.
        let _ = s.write_all(format!("{HELLO}\n").as_bytes());
        match line_within(&mut s, Duration::from_secs(5)).map(|l| msg(&l)) {
            Some(ServerMsg::Ok { answer: Answer::Hello { role: Role::Viewer, .. }, .. }) => idle.push(s),
            Some(ServerMsg::Error { code: ErrorCode::Busy, .. }) => idle_refused += 1,
            other => panic!("idle connection: {other:?}"),
        }
    }
    let mut slow = Vec::new();
    for _ in 0..n_slow {
        let mut s = UnixStream::connect(&sock).expect("connect");
        let _ = s.write_all(br#"{"id":1,"op":"hel"#);
        slow.push((s, Instant::now()));
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut slow_in = Vec::new();
    let mut slow_refused = 0;
    for (mut s, t0) in slow {
        match line_within(&mut s, Duration::from_millis(10)).map(|l| msg(&l)) {
            None => slow_in.push((s, t0)),
            Some(ServerMsg::Error { code: ErrorCode::Busy, .. }) => slow_refused += 1,
            other => panic!("slow connection: {other:?}"),
        }
    }
    report(
        &json!({"idle_in": idle.len(), "idle_refused": idle_refused, "slow_in": slow_in.len(), "slow_refused": slow_refused})
            .to_string(),
    );
    report("READY");
    // Trickle; note when the daemon gives up on each.
    let start = Instant::now();
    let mut closed_after_ms: Vec<u128> = Vec::new();
    let mut open: Vec<(UnixStream, Instant)> = slow_in;
    while start.elapsed() < hold {
        std::thread::sleep(Duration::from_secs(1));
        let mut still = Vec::new();
        for (mut s, t0) in open {
            let gone = s.write_all(b"l").is_err() || {
                s.set_nonblocking(true).unwrap();
                let mut b = [0u8; 256];
                let r = s.read(&mut b);
                s.set_nonblocking(false).unwrap();
                // A line (the daemon's reason) or EOF: it closed the connection.
                !matches!(r, Err(ref e) if e.kind() == ErrorKind::WouldBlock)
            };
            if gone {
                closed_after_ms.push(t0.elapsed().as_millis());
            } else {
                still.push((s, t0));
            }
        }
        open = still;
    }
    // The idle ones are still served.
    let mut idle_alive = 0;
    for s in &mut idle {
        s.write_all(b"{\"id\":2,\"op\":\"blocks\"}\n").unwrap();
        if line_within(s, Duration::from_secs(2)).is_some_and(|l| l.contains(r#""kind":"blocks""#)) {
            idle_alive += 1;
        }
    }
    report(
        &json!({"slow_closed_ms": closed_after_ms, "slow_never_closed": open.len(), "idle_alive": idle_alive})
            .to_string(),
    );
}

/// Helper: one request after hello, timed from its write to its answer.
fn one_request() {
    let sock = PathBuf::from(env("FW_SOCKET"));
    let t = Instant::now();
    let mut s = UnixStream::connect(&sock).expect("connect");
    s.write_all(format!("{HELLO}\n").as_bytes()).unwrap();
    let hello = line_within(&mut s, Duration::from_secs(5)).expect("a hello answer");
    let hello_ms = t.elapsed().as_secs_f64() * 1000.0;
    let t = Instant::now();
    s.write_all(format!("{}\n", env("FW_REQUEST")).as_bytes()).unwrap();
    let answer = line_within(&mut s, Duration::from_secs(5)).expect("an answer");
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    report(&json!({"hello": hello, "hello_ms": hello_ms, "answer": answer, "ms": ms}).to_string());
}

fn as_user_with(user: &str, test: &str, mode: &str, vars: &[(&str, String)]) -> Command {
    let pre = Accounts::as_user(user);
    let mut c = Command::new(&pre[0]);
    c.args(&pre[1..]).args(helper::self_args(test)).env(helper::MODE, mode);
    for (k, v) in vars {
        c.env(k, v);
    }
    c
}

fn run_one(user: &str, test: &str, sock: &Path, request: &str) -> Value {
    let out = as_user_with(
        user,
        test,
        "one-request",
        &[("FW_SOCKET", sock.display().to_string()), ("FW_REQUEST", request.into())],
    )
    .output()
    .expect("run the helper");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let r = reports(&text);
    assert!(out.status.success() && r.len() == 1, "helper failed:\n{text}");
    serde_json::from_str(&r[0]).unwrap()
}

/// A helper process, killed if the test ends before it does.
struct Reap(std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const LIMITS_TEST: &str = "a_viewer_holding_every_connection_it_can_keeps_no_responder_out";

#[test]
#[ignore = "needs root"]
fn a_viewer_holding_every_connection_it_can_keeps_no_responder_out() {
    match helper::mode().as_deref() {
        Some("flood") => return flood(),
        Some("one-request") => return one_request(),
        _ => {}
    }
    if !common::require(available(), "root with useradd, setpriv and unshare") {
        return;
    }
    let mut acc = Accounts::default();
    let (sock, view, op) = (name("s"), name("v"), name("o"));
    for g in [&sock, &view, &op] {
        acc.group(g);
    }
    let (va, vb, opu) = (name("va"), name("vb"), name("op"));
    acc.user(&va, &[&sock, &view]);
    acc.user(&vb, &[&sock, &view]);
    acc.user(&opu, &[&sock, &op]);
    let d = work("limits");
    let flags = group_flags(&sock, &view, &op);
    let daemon = Daemon::run_in_dir(&d, "1", &flags.iter().map(String::as_str).collect::<Vec<_>>());
    let socket = daemon.socket.clone();

    // Viewer A: 64 idle and 64 slowloris connections. Viewer B: 64 slowloris.
    let spawn_flood = |user: &str, idle: usize, slow: usize| {
        let vars = [
            ("FW_SOCKET", socket.display().to_string()),
            ("FW_IDLE", idle.to_string()),
            ("FW_SLOW", slow.to_string()),
            ("FW_HOLD_MS", "9000".to_string()),
        ];
        as_user_with(user, LIMITS_TEST, "flood", &vars)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the flood")
    };
    let mut floods = [Reap(spawn_flood(&va, 64, 64)), Reap(spawn_flood(&vb, 0, 64))];
    let mut outputs: Vec<BufReader<std::process::ChildStdout>> =
        floods.iter_mut().map(|c| BufReader::new(c.0.stdout.take().unwrap())).collect();
    let mut firsts = Vec::new();
    for out in &mut outputs {
        let mut seen = String::new();
        loop {
            let mut l = String::new();
            assert!(out.read_line(&mut l).unwrap() > 0, "a flood ended early:\n{seen}\n{}", daemon.log());
            seen.push_str(&l);
            let r = reports(&l);
            if r.first().is_some_and(|x| x == "READY") {
                break;
            }
            if let Some(x) = r.first() {
                firsts.push(serde_json::from_str::<Value>(x).unwrap());
            }
        }
    }
    // Every connection a viewer could get is taken: now root and an operator.
    for _ in 0..5 {
        let t = Instant::now();
        let mut root = Client::connect(&socket);
        let hello_ms = t.elapsed();
        let t = Instant::now();
        let st = root.status();
        let status_ms = t.elapsed();
        assert!(!st.policy_hash.is_empty());
        println!("root under the flood: connect+hello {hello_ms:?}, status {status_ms:?}");
        assert!(
            hello_ms < Duration::from_millis(100) && status_ms < Duration::from_millis(100),
            "root: hello {hello_ms:?}, status {status_ms:?}"
        );
    }
    let block = r#"{"id":2,"op":"block","target":{"kind":"destination","scope":{"scope":"all"},"net":"10.99.0.0/16"},"reason":"limits test"}"#;
    let r = run_one(&opu, LIMITS_TEST, &socket, block);
    assert!(r["hello"].as_str().unwrap().contains(r#""role":"operator""#), "{r}");
    assert!(r["answer"].as_str().unwrap().contains(r#""kind":"blocked""#), "{r}");
    let (hello_ms, ms) = (r["hello_ms"].as_f64().unwrap(), r["ms"].as_f64().unwrap());
    println!("operator under the flood: connect+hello {hello_ms:.2} ms, block {ms:.2} ms");
    assert!(hello_ms < 100.0 && ms < 100.0, "operator: connect+hello {hello_ms} ms, block {ms} ms");

    // What the viewers got: one uid's share, and the slow ones cut off at the hello deadline.
    let a = &firsts[0];
    assert_eq!(a["idle_in"], 16, "{a}");
    assert_eq!(a["idle_refused"], 48, "{a}");
    assert_eq!(a["slow_in"], 0, "A's uid was full: {a}");
    let b = &firsts[1];
    assert_eq!((b["slow_in"].as_u64(), b["slow_refused"].as_u64()), (Some(16), Some(48)), "{b}");
    let mut lasts = Vec::new();
    for (mut out, mut child) in outputs.into_iter().zip(floods) {
        let mut rest = String::new();
        out.read_to_string(&mut rest).unwrap();
        assert!(child.0.wait().unwrap().success(), "{rest}");
        lasts.push(serde_json::from_str::<Value>(&reports(&rest)[0]).unwrap());
    }
    assert_eq!(lasts[0]["idle_alive"], 16, "idle connections stay served: {}", lasts[0]);
    let closed: Vec<u64> =
        lasts[1]["slow_closed_ms"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    assert_eq!((closed.len(), &lasts[1]["slow_never_closed"]), (16, &json!(0)), "{}", lasts[1]);
    assert!(closed.iter().all(|&ms| (4_500..8_000).contains(&ms)), "closed after (ms): {closed:?}");
    assert!(daemon.log().contains("no hello within"), "{}", daemon.log());
    drop(acc);
}

const REFUSAL_TEST: &str = "a_refused_request_keeps_its_reason_in_the_trail";

#[test]
#[ignore = "needs root"]
fn a_refused_request_keeps_its_reason_in_the_trail() {
    if let Some("one-request") = helper::mode().as_deref() {
        return one_request();
    }
    if !common::require(available(), "root with useradd, setpriv and unshare") {
        return;
    }
    let mut acc = Accounts::default();
    let (sock, view, op) = (name("rs"), name("rv"), name("ro"));
    for g in [&sock, &view, &op] {
        acc.group(g);
    }
    let vu = name("rvu");
    acc.user(&vu, &[&sock, &view]);
    let d = work("refusal");
    let flags = group_flags(&sock, &view, &op);
    let daemon = Daemon::run_in_dir(&d, "1", &flags.iter().map(String::as_str).collect::<Vec<_>>());
    let block = r#"{"id":2,"op":"block","target":{"kind":"quarantine","container":"web-1","direction":"both"},"ttl_secs":900,"reason":"saw a beacon to 203.0.113.9"}"#;
    let r = run_one(&vu, REFUSAL_TEST, &daemon.socket, block);
    assert!(r["answer"].as_str().unwrap().contains(r#""code":"forbidden""#), "{r}");
    let audit = fs::read_to_string(d.join("audit.jsonl")).unwrap();
    let rec: AuditRecord = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<AuditRecord>(l).ok())
        .find(|r| r.op == AuditOp::Block)
        .unwrap_or_else(|| panic!("no block record:\n{audit}"));
    assert_eq!(rec.role, Some(Role::Viewer));
    assert!(rec.result.to_string().contains("forbidden"), "{rec:?}");
    assert_eq!(rec.reason.as_deref(), Some("saw a beacon to 203.0.113.9"), "{rec:?}");
    assert_eq!(rec.ttl_ms, Some(900_000), "{rec:?}");
    assert_eq!(
        rec.target,
        Some(BlockTarget::Quarantine { container: "web-1".into(), direction: BlockDirection::Both }),
        "{rec:?}"
    );
}

const PIDREUSE_TEST: &str = "a_reused_pid_lends_its_groups_to_no_connection";

/// Helper, in a fresh pid namespace as its pid 1: the daemon, a viewer that connects and
/// leaves its connection to a child before exiting, its pid handed to an operator's
/// process through ns_last_pid, and then the viewer's connection asks to block.
fn pidns(test: &str) {
    let d = PathBuf::from(env("FW_DIR"));
    let sock = d.join("fw.sock");
    let mut args: Vec<String> =
        ["run", "--no-docker", "--tick", "0.2", "--resync", "1"].map(String::from).to_vec();
    for (flag, p) in [("--rules", "rules"), ("--inventory", "inventory.toml"), ("--state-dir", "state")] {
        args.push(flag.into());
        args.push(d.join(p).display().to_string());
    }
    args.extend(["--audit-log".into(), d.join("audit.jsonl").display().to_string()]);
    args.extend(["--socket".into(), sock.display().to_string()]);
    args.extend(group_flags(&env("FW_SOCK_GROUP"), &env("FW_VIEW_GROUP"), &env("FW_OP_GROUP")));
    let mut daemon = Command::new(common::daemon::bin())
        .args(&args)
        .stderr(fs::File::create(d.join("daemon.log")).unwrap())
        .spawn()
        .expect("the daemon");
    let until = Instant::now() + Duration::from_secs(20);
    while UnixStream::connect(&sock).is_err() {
        assert!(Instant::now() < until, "no socket: {}", fs::read_to_string(d.join("daemon.log")).unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
    let vars = [("FW_SOCKET", sock.display().to_string()), ("FW_DIR", d.display().to_string())];
    let mut viewer = as_user_with(&env("FW_VIEWER"), test, "viewer-connect", &vars).spawn().unwrap();
    let pid = viewer.id() as i32;
    assert!(viewer.wait().unwrap().success(), "the viewer helper failed");
    report(&format!("viewer pid {pid}"));
    // Its pid is free now: the next process made gets it.
    let mut op = None;
    for _ in 0..200 {
        fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).expect("ns_last_pid");
        let pre = Accounts::as_user(&env("FW_OPERATOR"));
        let mut c = Command::new(&pre[0]).args(&pre[1..]).args(["sleep", "60"]).spawn().unwrap();
        if c.id() as i32 == pid {
            op = Some(c);
            break;
        }
        let _ = c.kill();
        let _ = c.wait();
    }
    let mut op = op.expect("the viewer's pid was reused by the operator's process");
    // What a per-request look at /proc/PID would find now: an operator.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let st = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let groups = st.lines().find_map(|l| l.strip_prefix("Groups:")).unwrap_or_default();
        if groups.split_whitespace().any(|g| g == env("FW_OP_GID")) {
            report(&format!("pid {pid} is now the operator's process"));
            break;
        }
        assert!(Instant::now() < deadline, "the reused pid never showed the operator's groups: {st}");
        std::thread::sleep(Duration::from_millis(20));
    }
    fs::write(d.join("go"), "").unwrap();
    let result = d.join("holder-result.json");
    let until = Instant::now() + Duration::from_secs(20);
    while !result.exists() {
        assert!(Instant::now() < until, "no answer from the holder");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(50));
    report(&format!("answer {}", fs::read_to_string(&result).unwrap().trim()));
    let _ = op.kill();
    let _ = op.wait();
    let _ = daemon.kill();
    let _ = daemon.wait();
}

/// Helper, as the viewer: connect, hello, hand the connection to a child, exit.
fn viewer_connect(test: &str) {
    let d = PathBuf::from(env("FW_DIR"));
    let mut s = UnixStream::connect(env("FW_SOCKET")).expect("connect");
    s.write_all(format!("{HELLO}\n").as_bytes()).unwrap();
    let hello = line_within(&mut s, Duration::from_secs(5)).expect("hello");
    assert!(hello.contains(r#""role":"viewer""#), "{hello}");
    fs::write(d.join("viewer-hello.json"), &hello).unwrap();
    let fd: std::os::fd::OwnedFd = s.into();
    // Not waited for: the holder outlives this process on purpose (the pid namespace's
    // pid 1 reaps it).
    #[allow(clippy::zombie_processes)]
    Command::new(helper::self_args(test)[0].clone())
        .args(&helper::self_args(test)[1..])
        .env(helper::MODE, "holder")
        .stdin(Stdio::from(fd))
        .stdout(Stdio::null())
        .stderr(fs::File::create(d.join("holder.err")).unwrap())
        .spawn()
        .unwrap();
    let ready = d.join("holder-ready");
    let until = Instant::now() + Duration::from_secs(20);
    while !ready.exists() {
        assert!(Instant::now() < until, "the holder never got ready");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Helper, the viewer's child: holds the connection (its stdin) until told to block.
fn holder() {
    let d = PathBuf::from(env("FW_DIR"));
    let fd = std::os::fd::AsFd::as_fd(&std::io::stdin()).try_clone_to_owned().unwrap();
    let mut s = UnixStream::from(fd);
    fs::write(d.join("holder-ready"), "").unwrap();
    while !d.join("go").exists() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let block = r#"{"id":2,"op":"block","target":{"kind":"destination","scope":{"scope":"all"},"net":"10.98.0.0/16"},"reason":"after pid reuse"}"#;
    s.write_all(format!("{block}\n").as_bytes()).unwrap();
    let answer = line_within(&mut s, Duration::from_secs(10)).unwrap_or_else(|| "no answer".into());
    fs::write(d.join("holder-result.json"), answer).unwrap();
}

#[test]
#[ignore = "needs root"]
fn a_reused_pid_lends_its_groups_to_no_connection() {
    match helper::mode().as_deref() {
        Some("pidns") => return pidns(PIDREUSE_TEST),
        Some("viewer-connect") => return viewer_connect(PIDREUSE_TEST),
        Some("holder") => return holder(),
        _ => {}
    }
    if !common::require(available(), "root with useradd, setpriv and unshare") {
        return;
    }
    let mut acc = Accounts::default();
    let (sock, view, op) = (name("ps"), name("pv"), name("po"));
    acc.group(&sock);
    acc.group(&view);
    let op_gid = acc.group(&op);
    let (vu, ou) = (name("pvu"), name("pou"));
    acc.user(&vu, &[&sock, &view]);
    acc.user(&ou, &[&sock, &op]);
    let d = work("pidreuse");
    let out = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc"])
        .args(helper::self_args(PIDREUSE_TEST))
        .env(helper::MODE, "pidns")
        .env("FW_DIR", &d)
        .env("FW_SOCK_GROUP", &sock)
        .env("FW_VIEW_GROUP", &view)
        .env("FW_OP_GROUP", &op)
        .env("FW_OP_GID", op_gid.to_string())
        .env("FW_VIEWER", &vu)
        .env("FW_OPERATOR", &ou)
        .output()
        .expect("unshare");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let log = fs::read_to_string(d.join("daemon.log")).unwrap_or_default();
    assert!(out.status.success(), "{text}\n--- daemon ---\n{log}");
    let r = reports(&text);
    assert!(r.iter().any(|l| l.ends_with("is now the operator's process")), "the pid was not reused: {r:?}");
    let answer = r.iter().find_map(|l| l.strip_prefix("answer ")).expect("an answer");
    // The connection was a viewer's when it was made, and stays one.
    assert!(answer.contains(r#""code":"forbidden""#), "{answer}\n{log}");
    assert!(answer.contains("viewer"), "{answer}");
    let audit = fs::read_to_string(d.join("audit.jsonl")).unwrap_or_default();
    assert!(
        !audit.lines().any(|l| l.contains(r#""op":"block""#) && l.contains(r#""result":"ok""#)),
        "{audit}"
    );
    assert!(
        audit.lines().any(|l| l.contains(r#""op":"block""#) && l.contains(r#""role":"viewer""#)),
        "the refusal is on record as the viewer's: {audit}"
    );
}
