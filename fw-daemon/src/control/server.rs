//! The socket server, on the daemon's runtime: one task accepts, one task per connection
//! reads newline-delimited JSON requests and pushes its subscriptions' events. A
//! subscription costs no task and no polling: the connection wakes when the flow table's
//! change position or the last alert id moves (watch channels), and sends a flow delta at
//! most once per the subscription's interval. Every input bound is explicit: line length,
//! requests per second, subscriptions per connection, a write timeout so a client that stops
//! reading cannot stall the daemon, and read deadlines (a hello within [`HELLO_TIMEOUT`],
//! every request line whole within [`LINE_TIMEOUT`] of its first byte) so one that trickles
//! bytes cannot hold a connection.
//!
//! Connections are counted after authentication, per role and per uid (see [`Slots`]): a
//! viewer can use up the viewers' share and no more; operators and admins have shares of
//! their own, so no number of viewer connections keeps a responder out. A connection over
//! its limit gets `busy` at once and costs no task.

use crate::clock::now_ms;
use std::collections::HashMap;
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use fw_proto::control::{
    Answer, AuditOp, AuditRecord, AuditResult, ErrorCode, Event, FlowFilter, Op, Request, Role, ServerMsg,
    ALERTS_KEPT, MAX_REQUEST_BYTES, PROTOCOL_VERSION,
};
use tracing::{debug, info, warn};

use super::audit::AuditLog;
use super::auth::{self, Credentials, Roles};
use super::{Command, FlowView, Published};

/// Connections per uid, whatever its role.
pub const MAX_PER_UID: usize = 16;
/// Connections of viewers (and of peers with no role, refused at hello) all together.
pub const VIEWER_SLOTS: usize = 64;
/// Slots only operators can take, and only admins: a responder always gets in.
pub const OPERATOR_SLOTS: usize = 32;
pub const ADMIN_SLOTS: usize = 32;
/// From connect to a complete hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// From a request line's first byte to its newline.
pub const LINE_TIMEOUT: Duration = Duration::from_secs(5);
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

/// Where commands go: `false` once the daemon's loop is gone.
pub type CommandSink = Box<dyn Fn(Command) -> bool + Send + Sync>;

/// Everything the connection threads share.
pub struct Server {
    pub roles: Roles,
    pub published: RwLock<Arc<Published>>,
    pub flows: Arc<dyn FlowView>,
    pub audit: Option<Arc<AuditLog>>,
    /// Hands a command to the daemon's loop (an unbounded channel send: never blocks).
    pub commands: CommandSink,
    pub alerts: Arc<crate::alerts::Alerts>,
    slots: Arc<Slots>,
    next_sub: AtomicUsize,
}

impl Server {
    pub fn new(
        roles: Roles,
        published: Published,
        flows: Arc<dyn FlowView>,
        audit: Option<Arc<AuditLog>>,
        commands: CommandSink,
        alerts: Arc<crate::alerts::Alerts>,
    ) -> Arc<Server> {
        Arc::new(Server {
            roles,
            published: RwLock::new(Arc::new(published)),
            flows,
            audit,
            commands,
            alerts,
            slots: Arc::new(Slots::default()),
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

/// Which share of the connections a peer draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Pool {
    Viewer,
    Operator,
    Admin,
}

impl Pool {
    fn of(role: Option<Role>) -> Pool {
        match role {
            None | Some(Role::Viewer) => Pool::Viewer,
            Some(Role::Operator) => Pool::Operator,
            Some(Role::Admin) => Pool::Admin,
        }
    }

    fn size(self) -> usize {
        match self {
            Pool::Viewer => VIEWER_SLOTS,
            Pool::Operator => OPERATOR_SLOTS,
            Pool::Admin => ADMIN_SLOTS,
        }
    }
}

/// Open connections per pool and per uid.
#[derive(Debug, Default)]
pub struct Slots {
    inner: Mutex<(HashMap<Pool, usize>, HashMap<u32, usize>)>,
}

/// A taken slot; given back when dropped (the connection's thread ends).
pub struct Slot {
    slots: Arc<Slots>,
    pool: Pool,
    uid: u32,
}

impl Slots {
    fn take(self: &Arc<Self>, uid: u32, role: Option<Role>) -> Result<Slot, String> {
        let pool = Pool::of(role);
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (pools, uids) = &mut *g;
        let in_uid = uids.get(&uid).copied().unwrap_or(0);
        if in_uid >= MAX_PER_UID {
            return Err(format!("uid {uid} has {MAX_PER_UID} connections open already"));
        }
        let in_pool = pools.get(&pool).copied().unwrap_or(0);
        if in_pool >= pool.size() {
            let who = match role {
                Some(r) => r.to_string() + "s",
                None => "peers without a role".into(),
            };
            return Err(format!("{in_pool} connections of {who} open already"));
        }
        *pools.entry(pool).or_default() += 1;
        *uids.entry(uid).or_default() += 1;
        Ok(Slot { slots: self.clone(), pool, uid })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut g = self.slots.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (pools, uids) = &mut *g;
        if let Some(n) = pools.get_mut(&self.pool) {
            *n = n.saturating_sub(1);
        }
        if let Some(n) = uids.get_mut(&self.uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                uids.remove(&self.uid);
            }
        }
    }
}

/// Accepts connections forever, as a task on the daemon's runtime. Identity is read here,
/// once, and the slot taken before any task is spent on the connection.
pub fn spawn(listener: UnixListener, server: Arc<Server>) -> std::io::Result<()> {
    let rt = crate::runtime::handle()?;
    listener.set_nonblocking(true)?;
    let listener = {
        let _in_runtime = rt.enter();
        tokio::net::UnixListener::from_std(listener)?
    };
    rt.spawn(accept(listener, server));
    Ok(())
}

async fn accept(listener: tokio::net::UnixListener, server: Arc<Server>) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of descriptors, most likely: wait rather than spin.
                debug!(error = %e, "control: accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let who = match auth::credentials(&stream) {
            Ok(c) => c,
            Err(e) => {
                debug!(error = %e, "control: no peer credentials");
                continue;
            }
        };
        let role = server.roles.role_of(&who, auth::system_gid);
        let slot = match server.slots.take(who.peer.uid, role) {
            Ok(s) => s,
            Err(why) => {
                debug!(uid = who.peer.uid, "control: refused a connection: {why}");
                // A fresh socket has room for one line: never wait on a refused peer.
                let _ = stream.try_write(&line(&err(
                    None,
                    ErrorCode::Busy,
                    format!("too many connections: {why}"),
                )));
                continue;
            }
        };
        let srv = server.clone();
        tokio::spawn(async move {
            serve(&srv, stream, who, role).await;
            drop(slot);
        });
    }
}

fn err(id: Option<u64>, code: ErrorCode, message: impl Into<String>) -> ServerMsg {
    ServerMsg::Error { id, code, message: message.into() }
}

fn line(msg: &ServerMsg) -> Vec<u8> {
    let mut line = serde_json::to_vec(msg).unwrap_or_else(|e| {
        // Our own messages always serialize; say so rather than send nothing.
        serde_json::to_vec(&err(None, ErrorCode::Internal, format!("unencodable answer: {e}")))
            .unwrap_or_default()
    });
    line.push(b'\n');
    line
}

/// Writes one message within [`WRITE_TIMEOUT`]; false when the peer is gone or not reading.
async fn send(w: &mut (impl AsyncWrite + Unpin), msg: &ServerMsg) -> bool {
    matches!(tokio::time::timeout(WRITE_TIMEOUT, w.write_all(&line(msg))).await, Ok(Ok(())))
}

/// Why a connection stops reading.
#[derive(Debug, PartialEq, Eq)]
enum ReadEnd {
    /// The peer closed it.
    Eof,
    TooLong,
    /// The deadline passed: no hello in time, or a line that trickled in too slowly.
    Slow(&'static str),
    Failed,
}

/// Newline-delimited lines with deadlines: before the hello, the whole conversation must
/// reach its first newline by `hello_by`; after it, a line has [`LINE_TIMEOUT`] from its
/// first byte. An idle connection (no partial line) waits as long as it likes.
///
/// `next_line` is cancel-safe (the connection's loop drops it when an event is due): what
/// was read is kept in `pending`, and a dropped read consumed nothing.
struct LineReader<R> {
    stream: R,
    pending: Vec<u8>,
    /// When the first byte of the partial line in `pending` arrived.
    partial_since: Option<Instant>,
    line_timeout: Duration,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    fn new(stream: R, line_timeout: Duration) -> LineReader<R> {
        LineReader { stream, pending: Vec::new(), partial_since: None, line_timeout }
    }

    /// The next line (without its newline); `hello_by` bounds the wait while set.
    async fn next_line(&mut self, hello_by: Option<Instant>) -> Result<Vec<u8>, ReadEnd> {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(i) = self.pending.iter().position(|&b| b == b'\n') {
                if i > MAX_REQUEST_BYTES {
                    return Err(ReadEnd::TooLong);
                }
                let line: Vec<u8> = self.pending.drain(..=i).take(i).collect();
                self.partial_since = (!self.pending.is_empty()).then(Instant::now);
                return Ok(line);
            }
            if self.pending.len() > MAX_REQUEST_BYTES {
                return Err(ReadEnd::TooLong);
            }
            let line_by = self.partial_since.map(|t| t + self.line_timeout);
            let deadline = match (hello_by, line_by) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if let Some(d) = deadline {
                if d <= Instant::now() {
                    return Err(ReadEnd::Slow(if hello_by.is_some_and(|h| Some(h) == deadline) {
                        "no hello"
                    } else {
                        "a request line not finished"
                    }));
                }
            }
            let read = self.stream.read(&mut chunk);
            let got = match deadline {
                Some(d) => match tokio::time::timeout_at(d, read).await {
                    Ok(r) => r,
                    // The deadline passed: the loop says which one.
                    Err(_) => continue,
                },
                None => read.await,
            };
            match got {
                Ok(0) => return Err(ReadEnd::Eof),
                Ok(n) => {
                    if self.pending.is_empty() {
                        self.partial_since = Some(Instant::now());
                    }
                    self.pending.extend_from_slice(&chunk[..n]);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => return Err(ReadEnd::Failed),
            }
        }
    }
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

/// One subscription of a connection: what it watches and where its reader is.
struct Sub {
    id: u64,
    filter: FlowFilter,
    interval: Duration,
    /// The flow table position sent last (`None`: nothing sent yet, the first is full).
    since: Option<u64>,
    /// The table changed since the last delta was sent.
    dirty: bool,
    /// No delta before this (the subscription's interval).
    next_at: Instant,
    /// With alerts: the id of the last alert sent.
    alerts: Option<u64>,
}

struct Conn {
    subs: Vec<Sub>,
    window: (Instant, u32),
    bad: u32,
}

/// A command waiting for the daemon's answer; events keep flowing meanwhile, and the next
/// request is read only after it (requests are answered in order).
type Pending = std::pin::Pin<Box<dyn std::future::Future<Output = ServerMsg> + Send>>;

async fn serve(srv: &Arc<Server>, stream: tokio::net::UnixStream, who: Credentials, role: Option<Role>) {
    let (rd, mut w) = stream.into_split();
    let mut r = LineReader::new(rd, LINE_TIMEOUT);
    let hello_by = Instant::now() + HELLO_TIMEOUT;
    let mut hello = false;
    let mut conn = Conn { subs: Vec::new(), window: (Instant::now(), 0), bad: 0 };
    let mut flows_changed = srv.flows.watch();
    let polled = flows_changed.is_none();
    let mut alerts_raised = srv.alerts.watch();
    let mut pending: Option<Pending> = None;
    loop {
        let flow_due = conn.subs.iter().filter(|s| s.dirty || polled).map(|s| s.next_at).min();
        let want_alerts = conn.subs.iter().any(|s| s.alerts.is_some());
        tokio::select! {
            biased;
            answer = async {
                match pending.as_mut() {
                    Some(p) => p.await,
                    None => std::future::pending().await,
                }
            }, if pending.is_some() => {
                pending = None;
                if !send(&mut w, &answer).await {
                    break;
                }
            }
            changed = async { alerts_raised.changed().await }, if want_alerts => {
                if changed.is_err() || !push_alerts(srv, &mut w, &mut conn).await {
                    break;
                }
            }
            _ = tokio::time::sleep_until(flow_due.unwrap_or_else(Instant::now)), if flow_due.is_some() => {
                if !push_flows(srv, &mut w, &mut conn, polled).await {
                    break;
                }
            }
            changed = async {
                match flows_changed.as_mut() {
                    Some(rx) => rx.changed().await,
                    None => std::future::pending().await,
                }
            }, if !conn.subs.is_empty() => {
                if changed.is_err() {
                    break;
                }
                conn.subs.iter_mut().for_each(|s| s.dirty = true);
            }
            got = r.next_line((!hello).then_some(hello_by)), if pending.is_none() => {
                let buf = match got {
                    Ok(line) => line,
                    Err(ReadEnd::Eof | ReadEnd::Failed) => break,
                    Err(ReadEnd::TooLong) => {
                        let msg = format!("request line over {MAX_REQUEST_BYTES} bytes: closing");
                        send(&mut w, &err(None, ErrorCode::BadRequest, msg)).await;
                        break;
                    }
                    Err(ReadEnd::Slow(what)) => {
                        let limit = if hello { LINE_TIMEOUT } else { HELLO_TIMEOUT };
                        info!(uid = who.peer.uid, user = %who.peer.user, "control: {what} within {limit:?}: closing");
                        send(&mut w, &err(None, ErrorCode::BadRequest, format!("{what} within {limit:?}: closing"))).await;
                        break;
                    }
                };
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
                        if !send(&mut w, &err(id, ErrorCode::BadRequest, msg)).await || conn.bad >= MAX_BAD {
                            break;
                        }
                        continue;
                    }
                };
                if conn.window.1 > MAX_RATE {
                    let busy = err(Some(req.id), ErrorCode::Busy, format!("over {MAX_RATE} requests per second"));
                    if !send(&mut w, &busy).await {
                        break;
                    }
                    continue;
                }
                // The identity of the connection, fixed when it was accepted: a pid that
                // changes hands meanwhile lends it nothing.
                let answer = match handle(srv, &mut conn, &mut hello, req.id, req.op, &who, role).await {
                    Handled::Now(a) => a,
                    Handled::Later(p) => {
                        pending = Some(p);
                        continue;
                    }
                };
                // Before a successful hello, an error ends the conversation.
                let keep_open = hello || !matches!(answer, ServerMsg::Error { .. });
                if !send(&mut w, &answer).await || !keep_open {
                    break;
                }
            }
        }
    }
    if !conn.subs.is_empty() {
        info!(subs = conn.subs.len(), "control: subscriptions ended");
    }
}

/// Sends the flow deltas that are due; false when the peer is gone.
async fn push_flows(srv: &Server, w: &mut (impl AsyncWrite + Unpin), conn: &mut Conn, polled: bool) -> bool {
    let now = Instant::now();
    for s in conn.subs.iter_mut().filter(|s| (s.dirty || polled) && s.next_at <= now) {
        let c = srv.flows.changes(s.since, &s.filter);
        s.since = Some(c.next);
        s.dirty = false;
        s.next_at = now + s.interval;
        if c.full || !c.changed.is_empty() || !c.removed.is_empty() {
            let event = Event::Flows {
                changed: c.changed,
                removed: c.removed,
                total: c.total,
                lost_events: c.lost_events,
                full: c.full,
            };
            if !send(w, &ServerMsg::Event { sub: s.id, event }).await {
                return false;
            }
        }
    }
    true
}

/// Sends every alert raised since each alert subscription's last one, as they are raised.
async fn push_alerts(srv: &Server, w: &mut (impl AsyncWrite + Unpin), conn: &mut Conn) -> bool {
    for s in &mut conn.subs {
        let Some(last) = s.alerts else { continue };
        for a in srv.alerts.after(last) {
            s.alerts = Some(a.id);
            if !send(w, &ServerMsg::Event { sub: s.id, event: Event::Alert(a) }).await {
                return false;
            }
        }
    }
    true
}

/// An answer now, or one the daemon will give (a command). Lives for one request, on the
/// stack: the size of the first variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
enum Handled {
    Now(ServerMsg),
    Later(Pending),
}

async fn handle(
    srv: &Arc<Server>,
    conn: &mut Conn,
    hello: &mut bool,
    id: u64,
    op: Op,
    who: &Credentials,
    role: Option<Role>,
) -> Handled {
    let ok = |answer| ServerMsg::Ok { id, answer };
    if !*hello {
        let Op::Hello { version, client } = &op else {
            return Handled::Now(err(
                Some(id),
                ErrorCode::VersionMismatch,
                "the first request must be hello",
            ));
        };
        if *version != PROTOCOL_VERSION {
            return Handled::Now(err(
                Some(id),
                ErrorCode::VersionMismatch,
                format!(
                    "{client} speaks protocol {version}, fw-daemon {} speaks {PROTOCOL_VERSION}: use a matching fw-tui",
                    env!("CARGO_PKG_VERSION")
                ),
            ));
        }
    }
    let Some(role) = role else {
        warn!(uid = who.peer.uid, pid = who.peer.pid, op = op.name(), "control: refused a peer with no role");
        return Handled::Now(err(
            Some(id),
            ErrorCode::Forbidden,
            format!(
                "{} is in none of the groups {}, {}: ask an admin for access",
                who.peer.user, srv.roles.viewer_group, srv.roles.operator_group
            ),
        ));
    };
    if role < op.required_role() {
        if op.required_role() >= Role::Operator {
            audit_refusal(srv, &op, who, role);
        }
        return Handled::Now(err(
            Some(id),
            ErrorCode::Forbidden,
            format!("{} is {role}; {} needs {}", who.peer.user, op.name(), op.required_role()),
        ));
    }
    // A filter the language refuses is the client's mistake, never an empty result.
    if let Op::Flows { filter, .. } | Op::Subscribe { filter, .. } = &op {
        if let Err(e) = filter.compile() {
            return Handled::Now(err(Some(id), ErrorCode::BadRequest, format!("bad filter: {e}")));
        }
    }
    Handled::Now(match op {
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
            status.audit = srv.audit.as_ref().map(|a| a.status());
            status.flows_dropped_open = srv.flows.dropped_open();
            let open = srv.flows.open_flows();
            let originated = srv.flows.originated_conns();
            for c in &mut status.containers {
                c.open_flows = open.get(&c.name).copied().unwrap_or(0);
                c.originated_conns = originated.as_ref().map(|o| o.get(&c.name).copied().unwrap_or(0));
            }
            ok(Answer::Status(status))
        }
        Op::Blocks => ok(Answer::Blocks { blocks: srv.snapshot().blocks.clone() }),
        Op::Flows { filter, limit } => ok(Answer::Flows(srv.flows.snapshot(&filter, limit))),
        Op::Audit { since, since_ms, limit } => match &srv.audit {
            None => err(Some(id), ErrorCode::NotFound, "the audit log is disabled (--audit-log none)"),
            Some(a) => {
                // A read of the trail is file I/O: off the runtime's workers.
                let a = a.clone();
                let since_ms = since_ms.or(since.map(|s| s.saturating_mul(1000)));
                let limit = limit.unwrap_or(1000).min(100_000);
                match tokio::task::spawn_blocking(move || a.read(since_ms, limit)).await {
                    Ok(Ok(records)) => ok(Answer::Audit { records }),
                    Ok(Err(e)) => err(Some(id), ErrorCode::Internal, e.to_string()),
                    Err(e) => err(Some(id), ErrorCode::Internal, format!("audit read failed: {e}")),
                }
            }
        },
        Op::Subscribe { filter, interval_ms, alerts } => {
            if conn.subs.len() >= MAX_SUBSCRIPTIONS {
                return Handled::Now(err(
                    Some(id),
                    ErrorCode::Busy,
                    format!("at most {MAX_SUBSCRIPTIONS} subscriptions per connection"),
                ));
            }
            let sub = srv.next_sub.fetch_add(1, Ordering::SeqCst) as u64;
            let interval = Duration::from_millis(interval_ms.unwrap_or(1000).clamp(100, 60_000));
            // The answer goes out first; the first (full) delta follows at once. Alerts
            // raised from now on go out as they are raised.
            conn.subs.push(Sub {
                id: sub,
                filter,
                interval,
                since: None,
                dirty: true,
                next_at: Instant::now(),
                alerts: alerts.then(|| srv.alerts.last_id()),
            });
            ok(Answer::Subscribed { sub })
        }
        Op::Unsubscribe { sub } => match conn.subs.iter().position(|s| s.id == sub) {
            Some(i) => {
                conn.subs.remove(i);
                info!(sub, "control: subscription ended");
                ok(Answer::Unsubscribed { sub })
            }
            None => err(Some(id), ErrorCode::NotFound, format!("no subscription {sub} on this connection")),
        },
        op @ (Op::Block { .. } | Op::Unblock { .. } | Op::Reload) => {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let name = op.name();
            if !(srv.commands)(Command { op, who: who.clone(), role, reply: tx }) {
                return Handled::Now(err(Some(id), ErrorCode::Internal, "the daemon is stopping"));
            }
            return Handled::Later(Box::pin(async move {
                match tokio::time::timeout(COMMAND_TIMEOUT, rx).await {
                    Ok(Ok(Ok(answer))) => ServerMsg::Ok { id, answer },
                    Ok(Ok(Err((code, message)))) => err(Some(id), code, message),
                    Ok(Err(_)) => err(Some(id), ErrorCode::Internal, "the daemon is stopping"),
                    Err(_) => {
                        warn!(op = name, "control: no answer from the daemon");
                        err(
                            Some(id),
                            ErrorCode::Internal,
                            format!("no answer from the daemon within {COMMAND_TIMEOUT:?}"),
                        )
                    }
                }
            }));
        }
    })
}

/// A request refused for its role, recorded with what it asked for and why (the reason
/// and TTL it gave included). It changed nothing, so a trail that cannot take it costs only
/// the record (counted, and the trail shown broken).
fn audit_refusal(srv: &Server, op: &Op, who: &Credentials, role: Role) {
    let Some(a) = &srv.audit else { return };
    let (mut reason, mut ttl_secs, mut ttl_ms) = (None, None, None);
    if let Op::Block { reason: r, ttl_secs: s, ttl_ms: m, .. } = op {
        (reason, ttl_secs, ttl_ms) = (r.clone(), *s, *m);
    }
    let rec = AuditRecord {
        time_ms: now_ms(),
        peer: Some(who.peer.clone()),
        role: Some(role),
        actor: None,
        op: AuditOp::of(op),
        target: match op {
            Op::Block { target, .. } => Some(target.clone()),
            _ => None,
        },
        path: None,
        block: match op {
            Op::Unblock { block } => Some(*block),
            _ => None,
        },
        reason,
        ttl_ms: ttl_ms.or(ttl_secs.map(|s| s.saturating_mul(1000))),
        result: AuditResult::failed(ErrorCode::Forbidden, format!("{role} may not {}", op.name())),
        policy_hash: None,
        summary: None,
    };
    a.record(&rec);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Many viewers together fill the viewers' share and no more; operators and admins
    /// still get in; a slot comes back when its connection ends.
    #[test]
    fn roles_have_shares_of_their_own() {
        let slots = Arc::new(Slots::default());
        let mut held = Vec::new();
        for uid in 1000..1000 + VIEWER_SLOTS as u32 {
            held.push(slots.take(uid, Some(Role::Viewer)).unwrap());
        }
        assert!(slots.take(2000, Some(Role::Viewer)).is_err(), "viewers' share is full");
        assert!(slots.take(2001, None).is_err(), "peers without a role draw from it too");
        let ops: Vec<Slot> = (0..OPERATOR_SLOTS)
            .map(|i| slots.take(3000 + (i / MAX_PER_UID) as u32, Some(Role::Operator)).unwrap())
            .collect();
        assert!(slots.take(3999, Some(Role::Operator)).is_err());
        assert!(slots.take(0, Some(Role::Admin)).is_ok(), "root always has room");
        held.pop();
        assert!(slots.take(2000, Some(Role::Viewer)).is_ok(), "a slot comes back on drop");
        drop(ops);
        let one_uid: Vec<Slot> =
            (0..MAX_PER_UID).map(|_| slots.take(4000, Some(Role::Operator)).unwrap()).collect();
        assert!(slots.take(4000, Some(Role::Operator)).is_err(), "one uid has at most its share");
        drop(one_uid);
    }

    /// Deadlines of the line reader: hello in time, a trickled line cut off, an idle
    /// connection (nothing pending) left alone, pipelined lines split.
    #[tokio::test]
    async fn lines_have_deadlines_idle_connections_do_not() {
        use tokio::net::UnixStream;
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut r = LineReader::new(a, Duration::from_millis(200));
        b.write_all(b"{\"id\":1}\n{\"id\":2}\n{\"id").await.unwrap();
        let by = Instant::now() + Duration::from_secs(5);
        assert_eq!(r.next_line(Some(by)).await.unwrap(), b"{\"id\":1}");
        assert_eq!(r.next_line(None).await.unwrap(), b"{\"id\":2}");
        // One byte at a time, never the newline: cut off 200 ms after the line began.
        let t = Instant::now();
        let trickle = tokio::spawn(async move {
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if b.write_all(b"x").await.is_err() {
                    break;
                }
            }
            b
        });
        assert_eq!(r.next_line(None).await, Err(ReadEnd::Slow("a request line not finished")));
        assert!(t.elapsed() < Duration::from_millis(400), "{:?}", t.elapsed());
        drop(trickle.await.unwrap());
        // No hello in time.
        let (a, _b) = UnixStream::pair().unwrap();
        let mut r = LineReader::new(a, Duration::from_secs(60));
        let t = Instant::now();
        assert_eq!(r.next_line(Some(t + Duration::from_millis(150))).await, Err(ReadEnd::Slow("no hello")));
        // Idle after hello: waits (here until the peer hangs up).
        let (a, b) = UnixStream::pair().unwrap();
        let mut r = LineReader::new(a, Duration::from_millis(50));
        let closer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            drop(b);
        });
        assert_eq!(r.next_line(None).await, Err(ReadEnd::Eof));
        closer.await.unwrap();
        // Too long, with or without its newline.
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut r = LineReader::new(a, Duration::from_secs(5));
        let w = tokio::spawn(async move {
            let _ = b.write_all(&vec![b'x'; MAX_REQUEST_BYTES + 10]).await;
            b
        });
        assert_eq!(r.next_line(None).await, Err(ReadEnd::TooLong));
        drop(w.await.unwrap());
    }

    /// A cancelled read loses nothing: the connection's loop drops `next_line` whenever an
    /// event is due, and the bytes read so far must still make the next line.
    #[tokio::test]
    async fn a_dropped_read_keeps_what_it_read() {
        use tokio::net::UnixStream;
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut r = LineReader::new(a, Duration::from_secs(5));
        b.write_all(b"{\"id\"").await.unwrap();
        for _ in 0..3 {
            let cut = tokio::time::timeout(Duration::from_millis(30), r.next_line(None)).await;
            assert!(cut.is_err(), "no newline yet");
        }
        b.write_all(b":7}\n").await.unwrap();
        assert_eq!(r.next_line(None).await.unwrap(), b"{\"id\":7}");
    }

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
