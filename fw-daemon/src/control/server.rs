//! The socket server: one thread accepts, one thread per connection reads newline-delimited
//! JSON requests, and one thread per subscription pushes flow deltas. Every input bound is
//! explicit: line length, connections, requests per second, subscriptions per connection,
//! and a write timeout so a client that stops reading cannot stall the daemon.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fw_proto::control::{
    Answer, AuditRecord, ErrorCode, Event, FlowFilter, Op, Request, Role, ServerMsg, ALERTS_KEPT,
    MAX_REQUEST_BYTES, PROTOCOL_VERSION,
};
use tracing::{debug, info, warn};

use super::audit::AuditLog;
use super::auth::{self, Credentials, Roles};
use super::{Command, FlowView, Published};

const MAX_CONNECTIONS: usize = 64;
const MAX_SUBSCRIPTIONS: usize = 4;
/// Requests per second per connection before `busy` answers.
const MAX_RATE: u32 = 200;
/// Malformed requests on one connection before it is closed.
const MAX_BAD: u32 = 20;
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a state-changing request may wait for the daemon.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("control socket {path}: {what}: {source}")]
    Io { path: PathBuf, what: &'static str, source: std::io::Error },
}

/// Everything the connection threads share.
pub struct Server {
    pub roles: Roles,
    pub published: RwLock<Arc<Published>>,
    pub flows: Arc<dyn FlowView>,
    pub audit: Option<Arc<AuditLog>>,
    pub commands: Sender<Command>,
    pub alerts: Arc<crate::alerts::Alerts>,
    connections: AtomicUsize,
    next_sub: AtomicUsize,
}

impl Server {
    pub fn new(
        roles: Roles,
        published: Published,
        flows: Arc<dyn FlowView>,
        audit: Option<Arc<AuditLog>>,
        commands: Sender<Command>,
        alerts: Arc<crate::alerts::Alerts>,
    ) -> Arc<Server> {
        Arc::new(Server {
            roles,
            published: RwLock::new(Arc::new(published)),
            flows,
            audit,
            commands,
            alerts,
            connections: AtomicUsize::new(0),
            next_sub: AtomicUsize::new(1),
        })
    }

    pub fn publish(&self, p: Published) {
        *self.published.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(p);
    }

    fn snapshot(&self) -> Arc<Published> {
        self.published.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Creates the socket: its directory without world access, the socket itself 0660 owned by
/// root and `group` (when that group exists; else 0600), replacing a stale socket file.
pub fn bind(path: &Path, group: Option<&str>) -> Result<UnixListener, ServerError> {
    let io = |what: &'static str| move |source| ServerError::Io { path: path.to_path_buf(), what, source };
    let gid = group.and_then(auth::system_gid);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(io("create directory"))?;
            let mode = if gid.is_some() { 0o750 } else { 0o700 };
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
                .map_err(io("chmod directory"))?;
            chown(dir, Some(0), gid).map_err(io("chown directory"))?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) => {
            // A live daemon answers; a stale socket from a crash refuses.
            if UnixStream::connect(path).is_ok() {
                return Err(io("bind")(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "another fw-daemon is serving this socket",
                )));
            }
            std::fs::remove_file(path).map_err(io("remove stale socket"))?;
        }
        Ok(_) => {
            return Err(io("bind")(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists and is not a socket",
            )))
        }
        Err(_) => {}
    }
    // Created 0600 under a tight umask, then opened up to the group: never world-reachable.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let listener = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = listener.map_err(io("bind"))?;
    if let Some(g) = gid {
        chown(path, Some(0), Some(g)).map_err(io("chown"))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(io("chmod"))?;
    }
    Ok(listener)
}

/// Accepts connections forever on a thread of its own.
pub fn spawn(listener: UnixListener, server: Arc<Server>) -> std::io::Result<()> {
    std::thread::Builder::new().name("control".into()).spawn(move || {
        for conn in listener.incoming() {
            let Ok(stream) = conn else { continue };
            if server.connections.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                server.connections.fetch_sub(1, Ordering::SeqCst);
                let mut s = stream;
                let _ = s.set_write_timeout(Some(WRITE_TIMEOUT));
                let _ = send(&mut s, &err(None, ErrorCode::Busy, "too many connections"));
                continue;
            }
            let srv = server.clone();
            let spawned = std::thread::Builder::new().name("control-conn".into()).spawn(move || {
                serve(&srv, stream);
                srv.connections.fetch_sub(1, Ordering::SeqCst);
            });
            if spawned.is_err() {
                server.connections.fetch_sub(1, Ordering::SeqCst);
            }
        }
    })?;
    Ok(())
}

fn err(id: Option<u64>, code: ErrorCode, message: impl Into<String>) -> ServerMsg {
    ServerMsg::Error { id, code, message: message.into() }
}

fn send(w: &mut impl Write, msg: &ServerMsg) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line)
}

type Writer = Arc<Mutex<UnixStream>>;

fn reply(w: &Writer, msg: &ServerMsg) -> bool {
    let mut s = w.lock().unwrap_or_else(|e| e.into_inner());
    send(&mut *s, msg).is_ok()
}

/// Reads one line of at most `MAX_REQUEST_BYTES`; `Ok(None)` at end of stream.
fn read_line(r: &mut impl BufRead, buf: &mut Vec<u8>) -> Result<Option<()>, ()> {
    buf.clear();
    let n = r.take(MAX_REQUEST_BYTES as u64 + 1).read_until(b'\n', buf).map_err(|_| ())?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        // Too long (or cut off at end of stream): either way not a request.
        return Err(());
    }
    Ok(Some(()))
}

/// Decodes one request line. Public for the fuzz target: it must never panic.
pub fn decode(line: &[u8]) -> Result<Request, (Option<u64>, String)> {
    match serde_json::from_slice::<Request>(line) {
        Ok(r) => Ok(r),
        Err(e) => {
            // Answer with the id when the line had one, so the client can match the error.
            let id = serde_json::from_slice::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v.get("id").and_then(|i| i.as_u64()));
            Err((id, format!("not a valid request: {e}")))
        }
    }
}

struct Conn {
    subs: Vec<(u64, Arc<AtomicBool>)>,
    window: (Instant, u32),
    bad: u32,
}

fn serve(srv: &Arc<Server>, stream: UnixStream) {
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let who = match auth::credentials(&stream) {
        Ok(c) => c,
        Err(e) => {
            debug!(error = %e, "control: no peer credentials");
            return;
        }
    };
    let Ok(write_half) = stream.try_clone() else { return };
    let w: Writer = Arc::new(Mutex::new(write_half));
    let mut r = BufReader::new(stream);
    let mut buf = Vec::new();
    let mut hello = false;
    let mut conn = Conn { subs: Vec::new(), window: (Instant::now(), 0), bad: 0 };
    loop {
        match read_line(&mut r, &mut buf) {
            Ok(Some(())) => {}
            Ok(None) => break,
            Err(()) => {
                reply(
                    &w,
                    &err(
                        None,
                        ErrorCode::BadRequest,
                        format!("request line over {MAX_REQUEST_BYTES} bytes: closing"),
                    ),
                );
                break;
            }
        }
        let line = buf.trim_ascii();
        if line.is_empty() {
            continue;
        }
        // Rate limit per connection: a flood gets `busy`, not more work.
        if conn.window.0.elapsed() >= Duration::from_secs(1) {
            conn.window = (Instant::now(), 0);
        }
        conn.window.1 += 1;
        let req = match decode(line) {
            Ok(r) => r,
            Err((id, msg)) => {
                conn.bad += 1;
                if !reply(&w, &err(id, ErrorCode::BadRequest, msg)) || conn.bad >= MAX_BAD {
                    break;
                }
                continue;
            }
        };
        if conn.window.1 > MAX_RATE {
            if !reply(&w, &err(Some(req.id), ErrorCode::Busy, format!("over {MAX_RATE} requests per second")))
            {
                break;
            }
            continue;
        }
        // Roles are re-derived for every request: group changes take effect at once.
        let creds = auth::credentials(r.get_ref()).unwrap_or_else(|_| who.clone());
        let role = srv.roles.role_of(&creds, auth::system_gid);
        let Some(answer) = handle(srv, &w, &mut conn, &mut hello, req.id, req.op, &creds, role) else {
            continue;
        };
        // Before a successful hello, an error ends the conversation.
        let keep_open = hello || !matches!(answer, ServerMsg::Error { .. });
        if !reply(&w, &answer) || !keep_open {
            break;
        }
    }
    for (_, stop) in conn.subs {
        stop.store(true, Ordering::SeqCst);
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[allow(clippy::too_many_arguments)]
fn handle(
    srv: &Arc<Server>,
    w: &Writer,
    conn: &mut Conn,
    hello: &mut bool,
    id: u64,
    op: Op,
    who: &Credentials,
    role: Option<Role>,
) -> Option<ServerMsg> {
    match handle_one(srv, w, conn, hello, id, op, who, role) {
        // Sent by the subscribe arm itself, ahead of the subscription's first event.
        ServerMsg::Ok { answer: Answer::Subscribed { .. }, .. } => None,
        m => Some(m),
    }
}

#[allow(clippy::too_many_arguments)]
fn handle_one(
    srv: &Arc<Server>,
    w: &Writer,
    conn: &mut Conn,
    hello: &mut bool,
    id: u64,
    op: Op,
    who: &Credentials,
    role: Option<Role>,
) -> ServerMsg {
    let ok = |answer| ServerMsg::Ok { id, answer };
    if !*hello {
        let Op::Hello { version, client } = &op else {
            return err(Some(id), ErrorCode::VersionMismatch, "the first request must be hello");
        };
        if *version != PROTOCOL_VERSION {
            return err(
                Some(id),
                ErrorCode::VersionMismatch,
                format!(
                    "{client} speaks protocol {version}, fw-daemon {} speaks {PROTOCOL_VERSION}: use a matching fw-tui",
                    env!("CARGO_PKG_VERSION")
                ),
            );
        }
    }
    let Some(role) = role else {
        warn!(uid = who.peer.uid, pid = who.peer.pid, op = op.name(), "control: refused a peer with no role");
        return err(
            Some(id),
            ErrorCode::Forbidden,
            format!(
                "{} is in none of the groups {}, {}: ask an admin for access",
                who.peer.user, srv.roles.viewer_group, srv.roles.operator_group
            ),
        );
    };
    if role < op.required_role() {
        if op.required_role() >= Role::Operator {
            audit_refusal(srv, &op, who, role);
        }
        return err(
            Some(id),
            ErrorCode::Forbidden,
            format!("{} is {role}; {} needs {}", who.peer.user, op.name(), op.required_role()),
        );
    }
    match op {
        Op::Hello { .. } => {
            *hello = true;
            debug!(user = %who.peer.user, %role, "control: client connected");
            ok(Answer::Hello {
                version: PROTOCOL_VERSION,
                daemon: env!("CARGO_PKG_VERSION").into(),
                role,
                user: who.peer.user.clone(),
            })
        }
        Op::Alerts { since_ms, limit } => {
            ok(Answer::Alerts { alerts: srv.alerts.recent(since_ms, Some(limit.unwrap_or(ALERTS_KEPT))) })
        }
        Op::Status => {
            let mut status = srv.snapshot().status.clone();
            // Usage moves between publications: counted at the time of asking.
            let open = srv.flows.open_flows();
            for c in &mut status.containers {
                c.open_flows = open.get(&c.name).copied().unwrap_or(0);
            }
            ok(Answer::Status(status))
        }
        Op::Blocks => ok(Answer::Blocks { blocks: srv.snapshot().blocks.clone() }),
        Op::Flows { filter, limit } => ok(Answer::Flows(srv.flows.snapshot(&filter, limit))),
        Op::Audit { since, limit } => match &srv.audit {
            None => err(Some(id), ErrorCode::NotFound, "the audit log is disabled (--audit-log none)"),
            Some(a) => {
                match a.read(since.map(|s| s.saturating_mul(1000)), limit.unwrap_or(1000).min(100_000)) {
                    Ok(records) => ok(Answer::Audit { records }),
                    Err(e) => err(Some(id), ErrorCode::Internal, e.to_string()),
                }
            }
        },
        Op::Subscribe { filter, interval_ms, alerts } => {
            conn.subs.retain(|(_, stop)| !stop.load(Ordering::SeqCst));
            if conn.subs.len() >= MAX_SUBSCRIPTIONS {
                return err(
                    Some(id),
                    ErrorCode::Busy,
                    format!("at most {MAX_SUBSCRIPTIONS} subscriptions per connection"),
                );
            }
            let sub = srv.next_sub.fetch_add(1, Ordering::SeqCst) as u64;
            let stop = Arc::new(AtomicBool::new(false));
            let interval = Duration::from_millis(interval_ms.unwrap_or(1000).clamp(100, 60_000));
            // The answer goes out before the first event: the pusher waits for this lock.
            let guard = w.lock().unwrap_or_else(|e| e.into_inner());
            // Alerts raised from now on, on their own thread so they go out at once.
            let alerts_from = srv.alerts.last_id();
            if let Err(e) = push_events(srv.flows.clone(), w.clone(), sub, filter, interval, stop.clone()) {
                return err(Some(id), ErrorCode::Internal, format!("cannot start the subscription: {e}"));
            }
            if alerts {
                if let Err(e) = push_alerts(srv.alerts.clone(), w.clone(), sub, alerts_from, stop.clone()) {
                    stop.store(true, Ordering::SeqCst);
                    return err(Some(id), ErrorCode::Internal, format!("cannot start the subscription: {e}"));
                }
            }
            conn.subs.push((sub, stop));
            let mut s = guard;
            if send(&mut *s, &ok(Answer::Subscribed { sub })).is_err() {
                conn.subs.iter().for_each(|(_, stop)| stop.store(true, Ordering::SeqCst));
            }
            // Sent under the lock, before any event of the subscription.
            ok(Answer::Subscribed { sub })
        }
        Op::Unsubscribe { sub } => match conn.subs.iter().position(|(s, _)| *s == sub) {
            Some(i) => {
                conn.subs.remove(i).1.store(true, Ordering::SeqCst);
                ok(Answer::Unsubscribed { sub })
            }
            None => err(Some(id), ErrorCode::NotFound, format!("no subscription {sub} on this connection")),
        },
        op @ (Op::Block { .. } | Op::Unblock { .. } | Op::Reload) => {
            let (tx, rx) = mpsc::channel();
            let name = op.name();
            if srv.commands.send(Command { op, who: who.clone(), role, reply: tx }).is_err() {
                return err(Some(id), ErrorCode::Internal, "the daemon is stopping");
            }
            match rx.recv_timeout(COMMAND_TIMEOUT) {
                Ok(Ok(answer)) => ok(answer),
                Ok(Err((code, message))) => err(Some(id), code, message),
                Err(_) => {
                    warn!(op = name, "control: no answer from the daemon");
                    err(
                        Some(id),
                        ErrorCode::Internal,
                        format!("no answer from the daemon within {COMMAND_TIMEOUT:?}"),
                    )
                }
            }
        }
    }
}

fn audit_refusal(srv: &Server, op: &Op, who: &Credentials, role: Role) {
    let Some(a) = &srv.audit else { return };
    let rec = AuditRecord {
        time_ms: now_ms(),
        peer: Some(who.peer.clone()),
        role: Some(role),
        actor: None,
        op: op.name().into(),
        target: match op {
            Op::Block { target, .. } => Some(target.to_string()),
            Op::Unblock { block } => Some(format!("block {block}")),
            _ => None,
        },
        block: None,
        reason: None,
        ttl_secs: None,
        result: format!("error: forbidden ({role})"),
        policy_hash: None,
        summary: None,
    };
    if let Err(e) = a.append(&rec) {
        warn!(error = %e, "audit log");
    }
}

/// Pushes flow deltas every `interval` until `stop` or the client goes away.
fn push_events(
    flows: Arc<dyn FlowView>,
    w: Writer,
    sub: u64,
    filter: FlowFilter,
    interval: Duration,
    stop: Arc<AtomicBool>,
) -> std::io::Result<()> {
    std::thread::Builder::new().name("control-sub".into()).spawn(move || {
        let mut since = None;
        while !stop.load(Ordering::SeqCst) {
            let c = flows.changes(since, &filter);
            if c.full || !c.changed.is_empty() || !c.removed.is_empty() {
                let ev = Event::Flows {
                    changed: c.changed,
                    removed: c.removed,
                    total: c.total,
                    lost_events: c.lost_events,
                    full: c.full,
                };
                if !reply(&w, &ServerMsg::Event { sub, event: ev }) {
                    stop.store(true, Ordering::SeqCst);
                    break;
                }
            }
            since = Some(c.next);
            std::thread::sleep(interval);
        }
        info!(sub, "control: subscription ended");
    })?;
    Ok(())
}

/// Pushes every alert raised after `from`, as it is raised, until `stop` or the client goes.
fn push_alerts(
    alerts: Arc<crate::alerts::Alerts>,
    w: Writer,
    sub: u64,
    from: u64,
    stop: Arc<AtomicBool>,
) -> std::io::Result<()> {
    std::thread::Builder::new().name("control-alerts".into()).spawn(move || {
        let mut last = from;
        while !stop.load(Ordering::SeqCst) {
            // A short wait: a stopped subscription's thread ends soon after.
            for a in alerts.wait_after(last, Duration::from_millis(250)) {
                last = a.id;
                if stop.load(Ordering::SeqCst)
                    || !reply(&w, &ServerMsg::Event { sub, event: Event::Alert(a) })
                {
                    stop.store(true, Ordering::SeqCst);
                    return;
                }
            }
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fuzz target's seeds are real requests: the fuzzer starts from inputs that reach
    /// every op's decoding, the new ones (alerts, subscribe with alerts) included.
    #[test]
    fn fuzz_seeds_decode() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/control_request");
        let mut ops = Vec::new();
        for e in std::fs::read_dir(&dir).expect("seed corpus").flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if !name.starts_with("seed-") {
                continue;
            }
            let line = std::fs::read(e.path()).unwrap();
            let r = decode(line.trim_ascii()).unwrap_or_else(|e| panic!("{name}: {e:?}"));
            if let Op::Subscribe { alerts, .. } = &r.op {
                ops.push(format!("subscribe alerts={alerts}"));
            }
            ops.push(r.op.name().to_string());
        }
        for want in ["alerts", "subscribe alerts=true", "block", "hello"] {
            assert!(ops.iter().any(|o| o == want), "no seed for {want}: {ops:?}");
        }
    }
}
