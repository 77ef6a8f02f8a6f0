//! A minimal control-socket client for tests: JSON lines, raw access for hostile input, and
//! typed shortcuts that fail the test on an unexpected answer.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use fw_proto::control::*;

pub struct Client {
    pub r: BufReader<UnixStream>,
    pub w: UnixStream,
    next: u64,
}

impl Client {
    /// Connects and says hello; the tests run as root, so the role is admin.
    pub fn connect(path: &Path) -> Client {
        let s = UnixStream::connect(path).expect("connect to the control socket");
        s.set_read_timeout(Some(Duration::from_secs(20))).expect("read timeout");
        let mut c = Client { r: BufReader::new(s.try_clone().expect("clone the socket")), w: s, next: 1 };
        let hello = c.call(Op::Hello { version: PROTOCOL_VERSION, client: "test".into() });
        assert!(matches!(hello, Ok(Answer::Hello { role: Role::Admin, .. })), "{hello:?}");
        c
    }

    /// Connects without a hello (to test what the daemon does without one).
    pub fn raw(path: &Path) -> Client {
        let s = UnixStream::connect(path).expect("connect to the control socket");
        Client { r: BufReader::new(s.try_clone().expect("clone the socket")), w: s, next: 1 }
    }

    pub fn send_raw(&mut self, line: &str) {
        self.w.write_all(line.as_bytes()).expect("write to the daemon");
    }

    pub fn read_msg(&mut self) -> ServerMsg {
        self.try_read(Duration::from_secs(20)).expect("a message from the daemon")
    }

    /// The next message, or `None` when nothing comes within `timeout`.
    pub fn try_read(&mut self, timeout: Duration) -> Option<ServerMsg> {
        self.r.get_ref().set_read_timeout(Some(timeout)).expect("read timeout");
        let mut line = String::new();
        match self.r.read_line(&mut line) {
            Ok(0) => panic!("the daemon closed the connection"),
            Ok(_) => Some(serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad line {line:?}: {e}"))),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                assert!(line.is_empty(), "a partial line: {line:?}");
                None
            }
            Err(e) => panic!("read from the daemon: {e}"),
        }
    }

    /// Sends `op` and waits for its answer, skipping events and other answers.
    pub fn call(&mut self, op: Op) -> Result<Answer, (ErrorCode, String)> {
        let id = self.next;
        self.next += 1;
        let mut line = serde_json::to_string(&Request { id, op }).expect("a request serializes");
        line.push('\n');
        self.send_raw(&line);
        loop {
            match self.read_msg() {
                ServerMsg::Ok { id: i, answer } if i == id => return Ok(answer),
                ServerMsg::Error { id: Some(i), code, message } if i == id => return Err((code, message)),
                ServerMsg::Error { id: None, code, message } => return Err((code, message)),
                _ => {}
            }
        }
    }

    pub fn status(&mut self) -> StatusInfo {
        match self.call(Op::Status) {
            Ok(Answer::Status(s)) => s,
            other => panic!("{other:?}"),
        }
    }

    /// Rows matching `filter` (the wire syntax, `""` for all).
    pub fn flows(&mut self, filter: &str) -> Vec<FlowRow> {
        let filter = FlowFilter::parse(filter).expect("a valid filter");
        match self.call(Op::Flows { filter, limit: None }) {
            Ok(Answer::Flows(s)) => s.flows,
            other => panic!("{other:?}"),
        }
    }

    pub fn block(&mut self, target: BlockTarget, ttl: Option<u64>) -> BlockInfo {
        match self.call(Op::Block { target, ttl_secs: ttl, ttl_ms: None, reason: Some("test".into()) }) {
            Ok(Answer::Blocked { block }) => block,
            other => panic!("{other:?}"),
        }
    }

    pub fn blocks(&mut self) -> Vec<BlockInfo> {
        match self.call(Op::Blocks) {
            Ok(Answer::Blocks { blocks }) => blocks,
            other => panic!("{other:?}"),
        }
    }

    pub fn alerts(&mut self, since_ms: Option<i64>, limit: Option<usize>) -> Vec<Alert> {
        match self.call(Op::Alerts { since_ms, limit }) {
            Ok(Answer::Alerts { alerts }) => alerts,
            other => panic!("{other:?}"),
        }
    }
}

impl Client {
    /// Sends `op` (a JSON object without `id`) and returns the raw `answer` object: for
    /// fields this test binary's fw-proto may not know yet.
    pub fn call_raw(&mut self, op: serde_json::Value) -> serde_json::Value {
        let id = self.next;
        self.next += 1;
        let mut req = op;
        req["id"] = id.into();
        let mut line = req.to_string();
        line.push('\n');
        self.send_raw(&line);
        loop {
            self.r.get_ref().set_read_timeout(Some(Duration::from_secs(20))).expect("read timeout");
            let mut l = String::new();
            match self.r.read_line(&mut l) {
                Ok(0) => panic!("the daemon closed the connection"),
                Ok(_) => {}
                Err(e) => panic!("read from the daemon: {e}"),
            }
            let v: serde_json::Value =
                serde_json::from_str(&l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}"));
            if v["id"] == id {
                assert_eq!(v["type"], "ok", "{v}");
                return v["answer"].clone();
            }
        }
    }

    /// `status` as raw JSON.
    pub fn status_raw(&mut self) -> serde_json::Value {
        self.call_raw(serde_json::json!({"op": "status"}))
    }
}

/// Containers a raw `status` reports as skipped (not programmed on purpose, e.g. their
/// namespace is the host's): a top-level `skipped` list of names or `{"name": ...}` objects,
/// or a `containers` entry whose `skipped` is a reason (non-empty string) or `true`, or whose
/// `state` is `"skipped"`.
pub fn skipped_names(status: &serde_json::Value) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    if let Some(list) = status["skipped"].as_array() {
        for s in list {
            if let Some(n) = s.as_str().or_else(|| s["name"].as_str()) {
                out.insert(n.to_string());
            }
        }
    }
    for c in status["containers"].as_array().into_iter().flatten() {
        let sk = &c["skipped"];
        let yes = sk.as_bool() == Some(true)
            || sk.as_str().is_some_and(|s| !s.is_empty())
            || sk.is_object()
            || c["state"] == "skipped";
        if let (true, Some(n)) = (yes, c["name"].as_str()) {
            out.insert(n.to_string());
        }
    }
    out
}
