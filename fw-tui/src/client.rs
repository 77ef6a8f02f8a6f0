//! A blocking client for fw-daemon's control socket (see [`fw_proto::control`]).
//!
//! One request is in flight at a time: [`Client::request`] writes a line, then reads until
//! the answer with the same id arrives. Events that arrive meanwhile (from a subscription)
//! are kept, in order, for [`Client::next_event`].

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fw_proto::control::{Answer, ErrorCode, Event, Op, Request, Role, ServerMsg, PROTOCOL_VERSION};

/// How long [`Client::request`] waits for an answer by default.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest line accepted from the daemon. Full flow snapshots can be large, but not this.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Events kept while waiting for an answer; older ones are dropped past this (a subscription
/// sends a full view again when a client falls behind, so a gap is recoverable).
const MAX_PENDING_EVENTS: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket does not exist, or nothing listens on it.
    #[error("cannot reach fw-daemon at {}: is it running?", path.display())]
    Unreachable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The socket (or its directory) is not accessible to this user.
    #[error(
        "{}: permission denied: your user must be in the socket's group (fw-viewer by default)",
        path.display()
    )]
    PermissionDenied {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The daemon answered the request with an error.
    #[error("{code}: {message}")]
    Daemon { code: ErrorCode, message: String },
    /// The daemon speaks another protocol version.
    #[error("version-mismatch: {0}")]
    VersionMismatch(String),
    /// The daemon sent something this client cannot understand.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// No answer within the request timeout.
    #[error("fw-daemon at {} did not answer within {}s", path.display(), timeout.as_secs())]
    Timeout { path: PathBuf, timeout: Duration },
    /// The daemon closed the connection.
    #[error("fw-daemon at {} closed the connection", path.display())]
    Closed { path: PathBuf },
    #[error("fw-daemon at {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl ClientError {
    /// The daemon's error code, when the daemon answered with an error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Daemon { code, .. } => Some(*code),
            ClientError::VersionMismatch(_) => Some(ErrorCode::VersionMismatch),
            _ => None,
        }
    }

    /// Maps an error from `connect(2)` on `path`.
    pub fn from_connect(path: &Path, source: io::Error) -> ClientError {
        let path = path.to_path_buf();
        match source.kind() {
            ErrorKind::NotFound | ErrorKind::ConnectionRefused => ClientError::Unreachable { path, source },
            ErrorKind::PermissionDenied => ClientError::PermissionDenied { path, source },
            _ => ClientError::Io { path, source },
        }
    }
}

/// What the daemon said in answer to `hello`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The daemon's protocol version (equal to [`PROTOCOL_VERSION`] once connected).
    pub protocol: u32,
    /// The daemon's version (`0.1.0`).
    pub daemon: String,
    /// What this connection may do.
    pub role: Role,
    /// The user the daemon sees, from the socket's peer credentials.
    pub user: String,
}

/// A connection to fw-daemon, past the hello handshake.
pub struct Client {
    path: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// Bytes of a line not yet complete (kept across a timeout).
    line: Vec<u8>,
    next_id: u64,
    hello: Hello,
    events: VecDeque<(u64, Event)>,
    request_timeout: Duration,
    /// The read timeout currently set on the socket, to skip redundant syscalls.
    read_timeout: Option<Duration>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("path", &self.path).field("hello", &self.hello).finish_non_exhaustive()
    }
}

/// The client name sent in `hello`.
pub fn client_name() -> String {
    format!("fw-tui {}", env!("CARGO_PKG_VERSION"))
}

impl Client {
    /// Connects to the socket at `path` and says hello.
    pub fn connect(path: impl AsRef<Path>) -> Result<Client, ClientError> {
        Client::connect_with_timeout(path, REQUEST_TIMEOUT)
    }

    /// [`Client::connect`] with another request timeout (for the handshake too).
    pub fn connect_with_timeout(path: impl AsRef<Path>, timeout: Duration) -> Result<Client, ClientError> {
        let path = path.as_ref();
        let stream = UnixStream::connect(path).map_err(|e| ClientError::from_connect(path, e))?;
        let io = |source| ClientError::Io { path: path.to_path_buf(), source };
        let writer = stream.try_clone().map_err(io)?;
        writer.set_write_timeout(Some(timeout)).map_err(io)?;
        let mut c = Client {
            path: path.to_path_buf(),
            reader: BufReader::new(stream),
            writer,
            line: Vec::new(),
            next_id: 1,
            hello: Hello { protocol: 0, daemon: String::new(), role: Role::Viewer, user: String::new() },
            events: VecDeque::new(),
            request_timeout: timeout,
            read_timeout: None,
        };
        let answer = c.request(Op::Hello { version: PROTOCOL_VERSION, client: client_name() }).map_err(
            |e| match e {
                ClientError::Daemon { code: ErrorCode::BadRequest, message } => ClientError::VersionMismatch(
                    format!("fw-daemon refused hello ({message}): it may be an incompatible version"),
                ),
                ClientError::Protocol(m) => ClientError::Protocol(format!(
                    "{m} (in answer to hello: fw-daemon may speak another protocol than {PROTOCOL_VERSION})"
                )),
                e => e,
            },
        )?;
        match answer {
            Answer::Hello { version, daemon, role, user } => {
                if version != PROTOCOL_VERSION {
                    return Err(ClientError::VersionMismatch(format!(
                        "fw-daemon {daemon} speaks protocol {version}, {} speaks {PROTOCOL_VERSION}: use a matching fw-tui",
                        client_name()
                    )));
                }
                c.hello = Hello { protocol: version, daemon, role, user };
                Ok(c)
            }
            other => {
                Err(ClientError::Protocol(format!("expected a hello answer, got {}", answer_kind(&other))))
            }
        }
    }

    /// The socket path this client is connected to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The daemon's answer to `hello`: its version, this connection's role and user.
    pub fn hello(&self) -> &Hello {
        &self.hello
    }

    pub fn role(&self) -> Role {
        self.hello.role
    }

    pub fn user(&self) -> &str {
        &self.hello.user
    }

    pub fn daemon_version(&self) -> &str {
        &self.hello.daemon
    }

    /// How long [`Client::request`] waits for its answer.
    pub fn set_request_timeout(&mut self, timeout: Duration) {
        self.request_timeout = timeout;
    }

    /// Sends `op` and waits for its answer; an error answer becomes [`ClientError::Daemon`]
    /// (or [`ClientError::VersionMismatch`]). Events arriving meanwhile are kept for
    /// [`Client::next_event`]; answers to other ids (a request that timed out) are skipped.
    pub fn request(&mut self, op: Op) -> Result<Answer, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut line = serde_json::to_string(&Request { id, op })
            .map_err(|e| ClientError::Protocol(format!("cannot encode the request: {e}")))?;
        line.push('\n');
        self.set_read_timeout(Some(self.request_timeout))?;
        if let Err(e) = self.writer.write_all(line.as_bytes()).and_then(|()| self.writer.flush()) {
            return Err(self.io_error(e));
        }
        loop {
            match self.read_msg()? {
                ServerMsg::Ok { id: got, answer } if got == id => return Ok(answer),
                ServerMsg::Ok { .. } => {}
                ServerMsg::Error { id: got, code, message } if got.is_none() || got == Some(id) => {
                    return Err(daemon_error(code, message));
                }
                ServerMsg::Error { .. } => {}
                ServerMsg::Event { sub, event } => {
                    if self.events.len() >= MAX_PENDING_EVENTS {
                        self.events.pop_front();
                    }
                    self.events.push_back((sub, event));
                }
            }
        }
    }

    /// Subscribes to flow events; returns the subscription id. The first event is a full view.
    pub fn subscribe(
        &mut self,
        filter: fw_proto::control::FlowFilter,
        interval_ms: Option<u64>,
    ) -> Result<u64, ClientError> {
        match self.request(Op::Subscribe { filter, interval_ms, alerts: false })? {
            Answer::Subscribed { sub } => Ok(sub),
            other => Err(ClientError::Protocol(format!(
                "expected a subscribed answer, got {}",
                answer_kind(&other)
            ))),
        }
    }

    /// Waits (without a timeout) for the next event of any subscription on this connection:
    /// `(subscription id, event)`. Answers to earlier requests are skipped; an error the
    /// daemon sends meanwhile is returned.
    pub fn next_event(&mut self) -> Result<(u64, Event), ClientError> {
        if let Some(e) = self.events.pop_front() {
            return Ok(e);
        }
        self.set_read_timeout(None)?;
        loop {
            match self.read_msg()? {
                ServerMsg::Event { sub, event } => return Ok((sub, event)),
                ServerMsg::Ok { .. } => {}
                ServerMsg::Error { code, message, .. } => return Err(daemon_error(code, message)),
            }
        }
    }

    /// [`Client::next_event`] waiting at most `timeout` (at least 1 ms): `Ok(None)` when no
    /// event arrived in time. A partial line survives for the next call.
    pub fn next_event_timeout(&mut self, timeout: Duration) -> Result<Option<(u64, Event)>, ClientError> {
        if let Some(e) = self.events.pop_front() {
            return Ok(Some(e));
        }
        self.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        loop {
            match self.read_msg() {
                Ok(ServerMsg::Event { sub, event }) => return Ok(Some((sub, event))),
                Ok(ServerMsg::Ok { .. }) => {}
                Ok(ServerMsg::Error { code, message, .. }) => return Err(daemon_error(code, message)),
                Err(ClientError::Timeout { .. }) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }

    fn set_read_timeout(&mut self, t: Option<Duration>) -> Result<(), ClientError> {
        if self.read_timeout != t {
            self.reader.get_ref().set_read_timeout(t).map_err(|e| self.io_error(e))?;
            self.read_timeout = t;
        }
        Ok(())
    }

    fn io_error(&self, source: io::Error) -> ClientError {
        match source.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => {
                ClientError::Timeout { path: self.path.clone(), timeout: self.request_timeout }
            }
            ErrorKind::BrokenPipe | ErrorKind::ConnectionReset | ErrorKind::UnexpectedEof => {
                ClientError::Closed { path: self.path.clone() }
            }
            _ => ClientError::Io { path: self.path.clone(), source },
        }
    }

    /// Reads one newline-terminated message. A partial line survives a timeout.
    fn read_msg(&mut self) -> Result<ServerMsg, ClientError> {
        loop {
            let room = (MAX_MESSAGE_BYTES + 1).saturating_sub(self.line.len()) as u64;
            let n = match (&mut self.reader).take(room).read_until(b'\n', &mut self.line) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io_error(e)),
            };
            if self.line.last() == Some(&b'\n') {
                let line = std::mem::take(&mut self.line);
                let text = &line[..line.len() - 1];
                if text.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return parse_msg(text);
            }
            if self.line.len() > MAX_MESSAGE_BYTES {
                self.line.clear();
                return Err(ClientError::Protocol(format!(
                    "a message from fw-daemon is longer than {MAX_MESSAGE_BYTES} bytes"
                )));
            }
            if n == 0 {
                return Err(ClientError::Closed { path: self.path.clone() });
            }
        }
    }
}

fn daemon_error(code: ErrorCode, message: String) -> ClientError {
    match code {
        ErrorCode::VersionMismatch => ClientError::VersionMismatch(message),
        code => ClientError::Daemon { code, message },
    }
}

fn parse_msg(text: &[u8]) -> Result<ServerMsg, ClientError> {
    serde_json::from_slice(text).map_err(|e| {
        let shown = String::from_utf8_lossy(&text[..text.len().min(120)]).into_owned();
        let more = if text.len() > 120 { "..." } else { "" };
        ClientError::Protocol(format!("cannot read fw-daemon's message ({e}): {shown}{more}"))
    })
}

/// The `kind` of an answer, for messages.
pub fn answer_kind(a: &Answer) -> &'static str {
    match a {
        Answer::Hello { .. } => "hello",
        Answer::Status(_) => "status",
        Answer::Flows(_) => "flows",
        Answer::Subscribed { .. } => "subscribed",
        Answer::Unsubscribed { .. } => "unsubscribed",
        Answer::Blocked { .. } => "blocked",
        Answer::Unblocked { .. } => "unblocked",
        Answer::Blocks { .. } => "blocks",
        Answer::Audit { .. } => "audit",
        Answer::Reloaded { .. } => "reloaded",
        Answer::Alerts { .. } => "alerts",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testserver::{error, event, hello_answer, ok, Out, TempDir, TestServer};
    use fw_proto::control::{BlockInfo, BlockTarget, FlowFilter};

    fn flows_event(n: usize, full: bool) -> Event {
        Event::Flows { changed: Vec::new(), removed: vec![n as u64], total: n, lost_events: 0, full }
    }

    #[test]
    fn hello_handshake_sends_the_protocol_version_and_keeps_the_answer() {
        let srv = TestServer::start(|req| vec![ok(req.id, Answer::Blocks { blocks: Vec::new() })]);
        let mut c = Client::connect(&srv.path).unwrap();
        assert_eq!(
            c.hello(),
            &Hello {
                protocol: PROTOCOL_VERSION,
                daemon: "9.9.9".into(),
                role: Role::Operator,
                user: "alice".into()
            }
        );
        assert_eq!((c.role(), c.user(), c.daemon_version()), (Role::Operator, "alice", "9.9.9"));
        assert_eq!(c.path(), srv.path.as_path());
        assert_eq!(c.request(Op::Blocks).unwrap(), Answer::Blocks { blocks: Vec::new() });
        assert_eq!(c.request(Op::Blocks).unwrap(), Answer::Blocks { blocks: Vec::new() });
        drop(c);
        let got = srv.received();
        assert_eq!(
            got[0],
            Request { id: 1, op: Op::Hello { version: PROTOCOL_VERSION, client: client_name() } }
        );
        assert_eq!(client_name(), format!("fw-tui {}", env!("CARGO_PKG_VERSION")));
        let ids: Vec<u64> = got.iter().map(|r| r.id).collect();
        assert_eq!(ids, [1, 2, 3], "ids increase per request");
    }

    #[test]
    fn a_version_mismatch_error_is_its_own_error() {
        let srv = TestServer::raw(|req| {
            vec![error(
                Some(req.id),
                ErrorCode::VersionMismatch,
                "fw-tui 0.1.0 speaks protocol 1, fw-daemon speaks 2",
            )]
        });
        let e = Client::connect(&srv.path).unwrap_err();
        assert!(matches!(&e, ClientError::VersionMismatch(m) if m.contains("speaks 2")), "{e:?}");
        assert_eq!(e.code(), Some(ErrorCode::VersionMismatch));
        assert_eq!(crate::cli::exit_code(&e), crate::cli::exit::PROTOCOL);
    }

    #[test]
    fn a_hello_answer_with_another_version_is_a_mismatch() {
        let srv = TestServer::raw(|req| {
            vec![ok(
                req.id,
                Answer::Hello { version: 99, daemon: "5.0.0".into(), role: Role::Viewer, user: "bob".into() },
            )]
        });
        let e = Client::connect(&srv.path).unwrap_err();
        let ClientError::VersionMismatch(m) = &e else { panic!("{e:?}") };
        assert!(m.contains("fw-daemon 5.0.0 speaks protocol 99"), "{m}");
    }

    #[test]
    fn a_hello_refused_for_lack_of_role_is_forbidden() {
        let srv = TestServer::raw(|req| {
            vec![error(Some(req.id), ErrorCode::Forbidden, "bob is in none of the groups")]
        });
        let e = Client::connect(&srv.path).unwrap_err();
        assert!(matches!(e, ClientError::Daemon { code: ErrorCode::Forbidden, .. }), "{e:?}");
        assert_eq!(e.to_string(), "forbidden: bob is in none of the groups");
        assert_eq!(crate::cli::exit_code(&e), crate::cli::exit::DENIED);
    }

    #[test]
    fn error_answers_carry_code_and_message() {
        let srv = TestServer::start(|req| match req.op {
            Op::Unblock { block: 7 } => vec![error(Some(req.id), ErrorCode::NotFound, "no block 7")],
            // An error without an id (a line the daemon could not read) answers the request.
            _ => vec![error(None, ErrorCode::BadRequest, "cannot parse")],
        });
        let mut c = Client::connect(&srv.path).unwrap();
        let e = c.request(Op::Unblock { block: 7 }).unwrap_err();
        assert!(
            matches!(&e, ClientError::Daemon { code: ErrorCode::NotFound, message } if message == "no block 7")
        );
        assert_eq!(e.to_string(), "not-found: no block 7");
        assert_eq!(crate::cli::exit_code(&e), crate::cli::exit::FAILED);
        let e = c.request(Op::Blocks).unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::BadRequest));
    }

    #[test]
    fn answers_are_matched_by_id_and_events_are_kept_for_later() {
        let srv = TestServer::start(|req| match req.op {
            Op::Subscribe { .. } => vec![
                // A stale answer to an earlier id, an event of another subscription, then the
                // answer split across writes.
                ok(req.id - 1, Answer::Blocks { blocks: Vec::new() }),
                event(9, flows_event(1, true)),
                error(Some(req.id + 10), ErrorCode::Busy, "not for you"),
                Out::Raw(format!("{{\"type\":\"ok\",\"id\":{},\"ans", req.id)),
                Out::Sleep(Duration::from_millis(50)),
                Out::Raw("wer\":{\"kind\":\"subscribed\",\"sub\":3}}\n\n".into()),
                event(3, flows_event(2, true)),
                Out::Sleep(Duration::from_millis(50)),
                event(3, flows_event(3, false)),
                Out::Close,
            ],
            _ => vec![],
        });
        let mut c = Client::connect(&srv.path).unwrap();
        let sub = c.subscribe(FlowFilter::parse("verdict=denied").unwrap(), Some(500)).unwrap();
        assert_eq!(sub, 3);
        assert_eq!(c.next_event().unwrap(), (9, flows_event(1, true)), "buffered while waiting");
        assert_eq!(c.next_event().unwrap(), (3, flows_event(2, true)));
        assert_eq!(c.next_event().unwrap(), (3, flows_event(3, false)));
        let e = c.next_event().unwrap_err();
        assert!(matches!(e, ClientError::Closed { .. }), "{e:?}");
        assert_eq!(crate::cli::exit_code(&e), crate::cli::exit::UNREACHABLE);
        let got = srv.received();
        assert_eq!(
            got[1].op,
            Op::Subscribe {
                filter: FlowFilter::parse("verdict=denied").unwrap(),
                interval_ms: Some(500),
                alerts: false
            }
        );
    }

    #[test]
    fn next_event_timeout_returns_none_on_silence_and_keeps_partial_lines() {
        let srv = TestServer::start(|req| match req.op {
            Op::Subscribe { .. } => vec![
                ok(req.id, Answer::Subscribed { sub: 5 }),
                Out::Sleep(Duration::from_millis(150)),
                Out::Raw("{\"type\":\"event\",\"sub\":5,".into()),
                Out::Sleep(Duration::from_millis(150)),
                Out::Raw(format!("\"event\":{}}}\n", serde_json::to_string(&flows_event(4, true)).unwrap())),
                Out::Close,
            ],
            _ => vec![],
        });
        let mut c = Client::connect(&srv.path).unwrap();
        assert_eq!(c.subscribe(FlowFilter::default(), None).unwrap(), 5);
        assert_eq!(c.next_event_timeout(Duration::from_millis(50)).unwrap(), None, "nothing yet");
        let mut got = None;
        for _ in 0..100 {
            if let Some(e) = c.next_event_timeout(Duration::from_millis(20)).unwrap() {
                got = Some(e);
                break;
            }
        }
        assert_eq!(got, Some((5, flows_event(4, true))), "a line split across timeouts");
        let e = c.next_event_timeout(Duration::from_secs(5)).unwrap_err();
        assert!(matches!(e, ClientError::Closed { .. }), "{e:?}");
    }

    #[test]
    fn bad_json_from_the_daemon_is_a_protocol_error() {
        let srv = TestServer::start(|_| vec![Out::Raw("{\"type\":\"ok\",\"id\":2,\"answer\":42}\n".into())]);
        let mut c = Client::connect(&srv.path).unwrap();
        let e = c.request(Op::Status).unwrap_err();
        let ClientError::Protocol(m) = &e else { panic!("{e:?}") };
        assert!(m.starts_with("cannot read fw-daemon's message"), "{m}");
        assert_eq!(crate::cli::exit_code(&e), crate::cli::exit::PROTOCOL);

        let srv = TestServer::raw(|_| vec![Out::Raw("HTTP/1.1 400 Bad Request\r\n".into())]);
        let e = Client::connect(&srv.path).unwrap_err();
        let ClientError::Protocol(m) = &e else { panic!("{e:?}") };
        assert!(m.contains("in answer to hello"), "{m}");
    }

    #[test]
    fn unexpected_answers_are_protocol_errors() {
        let srv = TestServer::raw(|req| vec![ok(req.id, Answer::Blocks { blocks: Vec::new() })]);
        let e = Client::connect(&srv.path).unwrap_err();
        assert!(matches!(&e, ClientError::Protocol(m) if m.contains("got blocks")), "{e:?}");
    }

    #[test]
    fn a_daemon_closing_mid_request_is_reported() {
        let srv = TestServer::start(|req| {
            vec![Out::Raw(format!("{{\"type\":\"ok\",\"id\":{}", req.id)), Out::Close]
        });
        let mut c = Client::connect(&srv.path).unwrap();
        let e = c.request(Op::Reload).unwrap_err();
        assert!(matches!(e, ClientError::Closed { .. }), "{e:?}");
        assert!(e.to_string().ends_with("closed the connection"), "{e}");
    }

    #[test]
    fn a_silent_daemon_times_out() {
        let srv = TestServer::start(|_| vec![Out::Sleep(Duration::from_millis(500))]);
        let mut c = Client::connect(&srv.path).unwrap();
        c.set_request_timeout(Duration::from_millis(100));
        let e = c.request(Op::Status).unwrap_err();
        assert!(matches!(e, ClientError::Timeout { .. }), "{e:?}");
        assert_eq!(crate::cli::exit_code(&e), crate::cli::exit::UNREACHABLE);
    }

    #[test]
    fn a_partial_line_survives_a_timeout() {
        let mut first = true;
        let srv = TestServer::start(move |req| {
            let line = serde_json::to_string(&ServerMsg::Ok {
                id: req.id,
                answer: Answer::Blocks { blocks: Vec::new() },
            })
            .unwrap();
            if !std::mem::take(&mut first) {
                return vec![Out::Raw(format!("{line}\n"))];
            }
            let (a, b) = line.split_at(10);
            vec![Out::Raw(a.into()), Out::Sleep(Duration::from_millis(300)), Out::Raw(format!("{b}\n"))]
        });
        let mut c = Client::connect(&srv.path).unwrap();
        c.set_request_timeout(Duration::from_millis(100));
        assert!(matches!(c.request(Op::Blocks), Err(ClientError::Timeout { .. })));
        // The rest of the late answer (id 2) completes the half line read before the
        // timeout and is skipped; the answer to id 3 follows.
        c.set_request_timeout(Duration::from_secs(5));
        assert_eq!(c.request(Op::Blocks).unwrap(), Answer::Blocks { blocks: Vec::new() });
        assert_eq!(srv.received().iter().map(|r| r.id).collect::<Vec<_>>(), [1, 2, 3]);
    }

    #[test]
    fn a_missing_or_dead_socket_is_unreachable() {
        let dir = TempDir::new();
        let missing = dir.path().join("nope.sock");
        let e = Client::connect(&missing).unwrap_err();
        assert!(matches!(e, ClientError::Unreachable { .. }), "{e:?}");
        assert_eq!(e.to_string(), format!("cannot reach fw-daemon at {}: is it running?", missing.display()));

        let dead = dir.path().join("dead.sock");
        drop(std::os::unix::net::UnixListener::bind(&dead).unwrap());
        let e = Client::connect(&dead).unwrap_err();
        assert!(matches!(e, ClientError::Unreachable { .. }), "{e:?}");
        assert_eq!(crate::cli::exit_code(&e), crate::cli::exit::UNREACHABLE);
    }

    #[test]
    fn connect_errors_map_to_their_kind() {
        let p = Path::new("/run/fw/fw.sock");
        let e = ClientError::from_connect(p, io::Error::from(ErrorKind::PermissionDenied));
        assert!(matches!(e, ClientError::PermissionDenied { .. }));
        assert_eq!(
            e.to_string(),
            "/run/fw/fw.sock: permission denied: your user must be in the socket's group (fw-viewer by default)"
        );
        assert_eq!(crate::cli::exit_code(&e), crate::cli::exit::DENIED);
        let e = ClientError::from_connect(p, io::Error::from(ErrorKind::ConnectionRefused));
        assert!(matches!(e, ClientError::Unreachable { .. }));
        let e = ClientError::from_connect(p, io::Error::from(ErrorKind::NotFound));
        assert!(matches!(e, ClientError::Unreachable { .. }));
    }

    #[test]
    fn requests_round_trip_typed_answers() {
        let info = BlockInfo {
            id: 4,
            target: BlockTarget::Quarantine {
                container: "web-1".into(),
                direction: fw_proto::control::BlockDirection::Egress,
            },
            reason: None,
            created_at_ms: 0,
            expires_at_ms: None,
            created_by: "alice (uid 1000)".into(),
            containers: vec!["web-1".into()],
            flows_cut: 0,
            origin: Default::default(),
        };
        let answer = Answer::Blocked { block: info };
        let a = answer.clone();
        let srv = TestServer::start(move |req| vec![ok(req.id, a.clone())]);
        let mut c = Client::connect(&srv.path).unwrap();
        assert_eq!(c.request(Op::Blocks).unwrap(), answer);
        assert_eq!(
            hello_answer(),
            Answer::Hello {
                version: PROTOCOL_VERSION,
                daemon: c.daemon_version().into(),
                role: c.role(),
                user: c.user().into()
            }
        );
    }
}
