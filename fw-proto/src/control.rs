//! The control socket protocol: newline-delimited JSON. A client sends [`Request`]s, each with
//! an id; the daemon answers each with a [`ServerMsg::Ok`] or [`ServerMsg::Error`] carrying
//! the same id, and pushes [`ServerMsg::Event`]s for subscriptions. The first request on a
//! connection must be `hello` with the client's [`PROTOCOL_VERSION`]: a mismatch gets a
//! `version-mismatch` error naming both versions, so an old console fails clearly.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::filter::{Filter, FilterError};
pub use crate::flow::{Direction, FlowRow, FlowVerdict, Inspection, Proto};
use crate::{Mode, RuleRef};

/// Bumped on any incompatible change to the types in this module. 2: every time in an
/// answer is unix milliseconds (`*_ms`), and an audit record's `target` has the shape of a
/// block's.
pub const PROTOCOL_VERSION: u32 = 2;

/// The longest request line the daemon reads; a longer one closes the connection.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Default control socket path.
pub const DEFAULT_SOCKET: &str = "/run/fw/fw.sock";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Request {
    pub id: u64,
    #[serde(flatten)]
    pub op: Op,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Op {
    /// Must come first on every connection.
    Hello {
        version: u32,
        client: String,
    },
    Status,
    /// One snapshot of the flow table, filtered, newest first, at most `limit` rows.
    Flows {
        #[serde(default)]
        filter: FlowFilter,
        #[serde(default)]
        limit: Option<usize>,
    },
    /// Streams [`Event::Flows`] every `interval_ms` (the first one is a full snapshot, then
    /// only rows that changed) until the connection closes or `unsubscribe`.
    Subscribe {
        #[serde(default)]
        filter: FlowFilter,
        #[serde(default)]
        interval_ms: Option<u64>,
        /// Also stream [`Event::Alert`] as alerts are raised.
        #[serde(default)]
        alerts: bool,
    },
    Unsubscribe {
        sub: u64,
    },
    Block {
        target: BlockTarget,
        /// Seconds; none (and no `ttl_ms`) = until unblocked.
        #[serde(default)]
        ttl_secs: Option<u64>,
        /// Milliseconds, instead of `ttl_secs`. Either way the TTL counts from the moment
        /// the daemon places the block: it never ends early.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ttl_ms: Option<u64>,
        #[serde(default)]
        reason: Option<String>,
    },
    Unblock {
        block: u64,
    },
    Blocks,
    /// Audit records at or after `since_ms` (unix milliseconds; or `since`, unix seconds),
    /// oldest first, the last `limit`.
    Audit {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since_ms: Option<i64>,
        #[serde(default)]
        limit: Option<usize>,
    },
    /// Re-read rule files and inventory now (same as SIGHUP).
    Reload,
    /// Recent alerts (the daemon keeps the last [`ALERTS_KEPT`]), oldest first, at or after
    /// `since_ms` (unix milliseconds), the last `limit`.
    Alerts {
        #[serde(default)]
        since_ms: Option<i64>,
        #[serde(default)]
        limit: Option<usize>,
    },
}

/// How many recent alerts the daemon keeps for [`Op::Alerts`].
pub const ALERTS_KEPT: usize = 1000;

impl Op {
    /// The name on the wire, for logs and the audit trail.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Hello { .. } => "hello",
            Op::Status => "status",
            Op::Flows { .. } => "flows",
            Op::Subscribe { .. } => "subscribe",
            Op::Unsubscribe { .. } => "unsubscribe",
            Op::Block { .. } => "block",
            Op::Unblock { .. } => "unblock",
            Op::Blocks => "blocks",
            Op::Audit { .. } => "audit",
            Op::Reload => "reload",
            Op::Alerts { .. } => "alerts",
        }
    }

    /// The least role allowed to send this request.
    pub fn required_role(&self) -> Role {
        match self {
            Op::Block { .. } | Op::Unblock { .. } | Op::Reload => Role::Operator,
            _ => Role::Viewer,
        }
    }
}

/// Who a peer is, from its credentials. Ordered: each role can do what the ones below can.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        })
    }
}

// A message is built once per answer and written out at once: boxing the big answers (status
// with its zones and policies) would buy nothing and change every match on them.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ServerMsg {
    Ok {
        id: u64,
        answer: Answer,
    },
    Error {
        /// `None` when the request could not be read far enough to know its id.
        id: Option<u64>,
        code: ErrorCode,
        message: String,
    },
    Event {
        sub: u64,
        event: Event,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    /// Not JSON, or not a request this protocol knows.
    BadRequest,
    /// The first request was not `hello`, or versions differ.
    VersionMismatch,
    /// The peer's role may not do this.
    Forbidden,
    NotFound,
    /// The request contradicts current state (overlapping block, unknown container...).
    Conflict,
    /// Too many requests in flight or subscriptions open.
    Busy,
    Internal,
    /// The audit trail cannot be written (and fsync'd): the mutation was refused and
    /// nothing changed.
    AuditUnavailable,
    /// A code this client does not know (a newer daemon): the message still says what.
    #[serde(other)]
    Unknown,
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorCode::BadRequest => "bad-request",
            ErrorCode::VersionMismatch => "version-mismatch",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not-found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::Busy => "busy",
            ErrorCode::Internal => "internal",
            ErrorCode::AuditUnavailable => "audit-unavailable",
            ErrorCode::Unknown => "unknown",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Answer {
    Hello {
        version: u32,
        daemon: String,
        role: Role,
        user: String,
    },
    Status(StatusInfo),
    Flows(FlowSnapshot),
    Subscribed {
        sub: u64,
    },
    Unsubscribed {
        sub: u64,
    },
    Blocked {
        block: BlockInfo,
    },
    Unblocked {
        block: BlockInfo,
        /// The blocks that still apply to the containers the lifted one covered.
        #[serde(default)]
        remaining: Vec<BlockInfo>,
    },
    Blocks {
        blocks: Vec<BlockInfo>,
    },
    Audit {
        records: Vec<AuditRecord>,
    },
    Reloaded {
        policy_hash: String,
        rejected: Vec<String>,
    },
    Alerts {
        alerts: Vec<Alert>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Event {
    /// Rows that changed since the previous event of this subscription (all rows, the first
    /// time), and ids of rows that left the table.
    Flows {
        changed: Vec<FlowRow>,
        removed: Vec<u64>,
        /// Rows in the table that match the filter.
        total: usize,
        lost_events: u64,
        /// `changed` is every matching row: replace the view (first event, or the client
        /// fell too far behind for a delta).
        #[serde(default)]
        full: bool,
    },
    /// An alert was raised (only on subscriptions opened with `alerts: true`).
    Alert(Alert),
}

/// Something an operator should notice: a reload (good or refused), tampering with a table,
/// a cap hit, an inspection violation, a block placed or lifted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Alert {
    /// Increases by one per alert for the daemon's life.
    pub id: u64,
    /// Unix milliseconds.
    pub time_ms: i64,
    /// `alert` on the wire: `kind` is the tag of [`Event`] and [`Answer`], and an
    /// `Event::Alert` carries these fields beside that tag.
    #[serde(rename = "alert")]
    pub kind: AlertKind,
    /// The container it concerns, if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The rule that decided it, if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<RuleRef>,
    /// The flow row it concerns, if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<u64>,
    /// One line for people.
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AlertKind {
    /// New rule files were loaded.
    Reload,
    /// Rule files were refused; the last good policy stays.
    ReloadFailed,
    /// Someone else changed a table fw owns; fw put it back.
    Tamper,
    /// A container hit a cap (connections, new-connection rate, bandwidth).
    CapHit,
    /// Inspection found a flow breaking its policy (wrong protocol, name not allowed).
    Violation,
    /// Flagged flows' packets could not wait for inspection (the kernel's queue was full, or
    /// the daemon's socket overran): dropped, or for fail-open policies passed uninspected.
    InspectionOverflow,
    Blocked,
    Unblocked,
    /// A container fw cannot enforce (its namespace is the host's, or it has no host-side
    /// floor): what is not enforced is reported, never silently allowed.
    Unenforced,
    /// A container kept changing its own table: quarantined at the host-side floor.
    Escalated,
    /// The audit trail could not be written (mutations are refused until it can), or
    /// works again.
    Audit,
    /// The inventory file was refused; the containers stay as they were.
    InventoryFailed,
    /// A kind this client does not know (a newer daemon): the message still says what.
    #[serde(other)]
    Unknown,
}

impl fmt::Display for AlertKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AlertKind::Reload => "reload",
            AlertKind::ReloadFailed => "reload-failed",
            AlertKind::Tamper => "tamper",
            AlertKind::CapHit => "cap-hit",
            AlertKind::Violation => "violation",
            AlertKind::InspectionOverflow => "inspection-overflow",
            AlertKind::Blocked => "blocked",
            AlertKind::Unblocked => "unblocked",
            AlertKind::Unenforced => "unenforced",
            AlertKind::Escalated => "escalated",
            AlertKind::Audit => "audit",
            AlertKind::InventoryFailed => "inventory-failed",
            AlertKind::Unknown => "unknown",
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StatusInfo {
    pub daemon_version: String,
    pub pid: u32,
    /// Milliseconds since the daemon started.
    pub uptime_ms: u64,
    pub policy_hash: String,
    /// Unix milliseconds the policy in force was loaded.
    pub loaded_at_ms: i64,
    /// `path:line:col: error: ...` lines of the last rejected reload; empty when the last
    /// reload succeeded.
    pub last_reload_errors: Vec<String>,
    pub containers: Vec<ContainerInfo>,
    pub flows: usize,
    /// Conntrack / NFLOG events the kernel dropped before the daemon read them.
    pub lost_events: u64,
    pub active_blocks: usize,
    /// The rule directory and the files loaded from it.
    #[serde(default)]
    pub rules_dir: Option<String>,
    #[serde(default)]
    pub rule_files: Vec<String>,
    /// Unix milliseconds of the last reload attempt, good or refused.
    #[serde(default)]
    pub last_reload_at_ms: Option<i64>,
    /// The audit trail; `None` when it is turned off.
    #[serde(default)]
    pub audit: Option<AuditStatus>,
    /// Rows of still-open flows dropped because the flow table was full (`max_flows`):
    /// those flows go on, unseen.
    #[serde(default)]
    pub flows_dropped_open: u64,
    /// The inventory file, and the errors of its last reading (empty when it loaded).
    #[serde(default)]
    pub inventory: Option<String>,
    #[serde(default)]
    pub inventory_errors: Vec<String>,
    /// The containers enforced come from the last good inventory in the state directory,
    /// because the file was invalid when the daemon started.
    #[serde(default)]
    pub inventory_last_good: bool,
    /// The zones of the policy in force, in precedence order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<ZoneInfo>,
    /// Its failsafes, policies and default, in evaluation order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<PolicyInfo>,
}

/// Whether a zone holds containers or addresses outside fw's control.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ZoneKind {
    Containers,
    External,
}

/// A zone of the policy in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ZoneInfo {
    pub name: String,
    pub kind: ZoneKind,
    pub mode: Mode,
    #[serde(default)]
    pub caps: CapsInfo,
    /// External zones: their networks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<String>")]
    pub nets: Vec<IpNet>,
    /// `path:line` where it is declared (none for the implicit `default` zone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// What a policy does with the traffic it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RuleAction {
    Allow,
    Deny,
    /// Allow, and log every new connection.
    Log,
}

/// A failsafe, policy or the default, as the policy in force has it. Flow rows name it by
/// `id` (their `rule`), so readers count its hits from the flow table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PolicyInfo {
    pub id: String,
    /// `policy`, `failsafe` or `default`.
    pub kind: crate::RuleKind,
    pub from: String,
    pub to: String,
    /// `tcp`, `udp`, `tcp+udp`, `any`.
    pub proto: String,
    /// `443`, `8000-8100,9000`; empty for any port.
    #[serde(default)]
    pub ports: String,
    pub action: RuleAction,
    /// What inspection it applies, in a line (`tls sni api.example.com; on violation cut`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inspect: Option<String>,
    /// `path:line` where it is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Unix seconds after which it no longer applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Whether the audit trail is being written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AuditStatus {
    pub path: String,
    /// Unix ms of the first failed write since the last good one; `None` while it works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broken_since_ms: Option<i64>,
    /// Why the last write failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Records of the daemon's own actions (reloads, expiries, inspection cuts) that could
    /// not be written while broken. Requests are refused instead, so none of theirs is lost.
    #[serde(default)]
    pub lost: u64,
    /// The newest record (`fw-tui audit verify --daemon` checks the file ends there: a
    /// chain alone cannot show its newest records deleted). Boxed: status stays small.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<Box<AuditHead>>,
}

/// The newest record of the audit trail: its `seq` and chain link.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AuditHead {
    pub seq: u64,
    pub link: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ContainerInfo {
    pub name: String,
    pub zone: String,
    pub mode: Mode,
    pub addresses: Vec<IpAddr>,
    /// Its table is in place.
    pub programmed: bool,
    /// Its zone's caps.
    #[serde(default)]
    pub caps: CapsInfo,
    /// Flows of it the kernel tracks now, both directions, closing ones included.
    #[serde(default)]
    pub open_flows: usize,
    /// Connections it opened that are still live (egress, not closing): what `max_conns`
    /// caps. `None` from a daemon that does not count them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub originated_conns: Option<usize>,
    /// Active blocks that apply to it.
    #[serde(default)]
    pub blocks: Vec<u64>,
    /// A quarantine block applies to it.
    #[serde(default)]
    pub quarantined: bool,
    /// Its ports on the host side (`veth12ab in net:[4026531840]`): where the floor
    /// enforces what its own table cannot guarantee.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub floor: Vec<String>,
    /// Why something about it is not enforced (no table: host namespace; no floor: ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Why fw gives it no table at all (its namespace is the host's or the daemon's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

/// A zone's caps; `None` is no cap.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CapsInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_conns: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_conns_per_sec: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_bytes_per_sec: Option<u64>,
    /// `egress_bytes_per_sec` as the rule file wrote it (`"80mbit"`), when it was a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_written: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FlowSnapshot {
    pub flows: Vec<FlowRow>,
    /// Rows matching the filter (may exceed `flows.len()` when a limit applied).
    pub total: usize,
    pub lost_events: u64,
}

/// Server-side flow filter: `expr` in the [filter language](crate::filter) (what
/// `fw-tui flows --filter` sends), and the structured fields older clients send; every part
/// must match. The daemon refuses an `expr` that does not parse (`bad-request`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FlowFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<FlowVerdict>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<Proto>,
    /// Bare words (older clients): each is a bare word of the filter language.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// A filter expression, e.g. `zone:db verdict:deny !port:53 10.1.`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expr: Option<String>,
}

impl FlowFilter {
    /// A filter of one expression, checked here: the error names the word at fault.
    pub fn parse(expr: &str) -> Result<FlowFilter, FilterError> {
        let f = Filter::parse(expr)?;
        Ok(FlowFilter { expr: (!f.is_empty()).then(|| expr.trim().to_string()), ..FlowFilter::default() })
    }

    /// The filter every part of this one compiles to.
    pub fn compile(&self) -> Result<Filter, FilterError> {
        let mut f = Filter::default();
        if let Some(c) = &self.container {
            f.push_container(c);
        }
        if let Some(z) = &self.zone {
            f.push_zone(z);
        }
        if let Some(v) = self.verdict {
            f.push_verdict(v);
        }
        if let Some(p) = self.port {
            f.push_port(p);
        }
        if let Some(p) = self.proto {
            f.push_proto(p);
        }
        if let Some(t) = &self.text {
            // Bare words only: a `:` in old free text was never a key.
            for w in t.split_whitespace() {
                f.extend(Filter::parse_text_word(w));
            }
        }
        if let Some(e) = &self.expr {
            f.extend(Filter::parse(e)?);
        }
        Ok(f)
    }

    /// Whether a row matches; a filter that does not compile matches nothing.
    pub fn matches(&self, r: &FlowRow) -> bool {
        self.compile().is_ok_and(|f| f.matches(r))
    }
}

/// Which connections of a quarantined container are cut, by who opened them (as conntrack
/// records it). Each cut connection is cut both ways, established ones included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BlockDirection {
    /// Connections the container opens: it cannot start anything, and still answers
    /// connections peers open to it.
    Egress,
    /// Connections peers open to it: nobody reaches it, and it still gets the replies of
    /// connections it opens.
    Ingress,
    /// Everything.
    Both,
}

impl BlockDirection {
    /// What it cuts, for people (help texts, dialogs).
    pub fn describe(self) -> &'static str {
        match self {
            BlockDirection::Egress => "connections it opens (it still answers connections opened to it)",
            BlockDirection::Ingress => "connections opened to it (it still gets replies to its own)",
            BlockDirection::Both => "all its traffic, established connections included",
        }
    }
}

/// The direction a quarantine cuts unless the operator says otherwise, in the CLI and the
/// console alike: a responder isolating a container means all of it.
pub const DEFAULT_QUARANTINE_DIRECTION: BlockDirection = BlockDirection::Both;
/// How long a block lasts unless the operator says otherwise (CLI and console alike): until
/// it is lifted. A block that lapses unattended would reopen a compromised container.
pub const DEFAULT_BLOCK_TTL_SECS: Option<u64> = None;

/// Who placed a block.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BlockOrigin {
    /// An operator, over the control socket (CLI, console, scripts).
    #[default]
    Operator,
    /// Inspection: a policy with `on_violation = "quarantine"` saw a violation.
    Inspection,
    /// Tamper escalation: the container kept changing its own table.
    Tamper,
    /// An origin this client does not know (a newer daemon).
    #[serde(other)]
    Unknown,
}

impl BlockOrigin {
    /// Placed by the daemon itself, not by an operator.
    pub fn is_automatic(self) -> bool {
        self != BlockOrigin::Operator
    }
}

impl fmt::Display for BlockOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BlockOrigin::Operator => "operator",
            BlockOrigin::Inspection => "inspection",
            BlockOrigin::Tamper => "tamper",
            BlockOrigin::Unknown => "unknown",
        })
    }
}

impl fmt::Display for BlockDirection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BlockDirection::Egress => "egress",
            BlockDirection::Ingress => "ingress",
            BlockDirection::Both => "both",
        })
    }
}

/// Where a destination block applies.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "scope", content = "name", rename_all = "kebab-case")]
pub enum Scope {
    Container(String),
    Zone(String),
    All,
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Container(c) => write!(f, "container {c}"),
            Scope::Zone(z) => write!(f, "zone {z}"),
            Scope::All => f.write_str("all containers"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum BlockTarget {
    /// Cut a container's traffic in one or both directions, established flows included.
    Quarantine { container: String, direction: BlockDirection },
    /// Cut traffic to (and replies from) a destination, optionally one protocol and port.
    Destination {
        scope: Scope,
        /// A network in CIDR notation (`10.0.0.0/8`, `203.0.113.7/32`).
        #[schemars(with = "String")]
        net: IpNet,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        proto: Option<Proto>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        port: Option<u16>,
    },
    /// Cut one flow, given as `container` sees it (either direction matches).
    Flow { container: String, proto: Proto, src: IpAddr, sport: u16, dst: IpAddr, dport: u16 },
}

impl fmt::Display for BlockTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockTarget::Quarantine { container, direction } => {
                write!(f, "quarantine {container} ({direction})")
            }
            BlockTarget::Destination { scope, net, proto, port } => {
                write!(f, "destination {net}")?;
                if let Some(p) = proto {
                    write!(f, " {p}")?;
                }
                if let Some(p) = port {
                    write!(f, " port {p}")?;
                }
                write!(f, " for {scope}")
            }
            BlockTarget::Flow { container, proto, src, sport, dst, dport } => {
                write!(f, "flow {proto} {} -> {} in {container}", sock(*src, *sport), sock(*dst, *dport))
            }
        }
    }
}

fn sock(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BlockInfo {
    pub id: u64,
    pub target: BlockTarget,
    pub reason: Option<String>,
    /// Unix milliseconds it was placed.
    pub created_at_ms: i64,
    /// Unix milliseconds it lapses; none = until unblocked.
    pub expires_at_ms: Option<i64>,
    /// `user (uid N)` of whoever asked.
    pub created_by: String,
    /// Containers whose tables carry it now.
    pub containers: Vec<String>,
    /// Conntrack entries deleted when it was applied.
    pub flows_cut: u64,
    /// Who placed it: an operator, or the daemon itself (inspection, tamper escalation).
    #[serde(default)]
    pub origin: BlockOrigin,
}

impl BlockTarget {
    /// The kind, as `fw-tui block` names it (`quarantine`, `dst`, `flow`).
    pub fn kind(&self) -> &'static str {
        match self {
            BlockTarget::Quarantine { .. } => "quarantine",
            BlockTarget::Destination { .. } => "dst",
            BlockTarget::Flow { .. } => "flow",
        }
    }
}

impl AuditRecord {
    /// What the record is about, for people: a block's target, or what a reload read.
    pub fn subject(&self) -> Option<String> {
        self.target.as_ref().map(|t| t.to_string()).or_else(|| self.path.clone())
    }
}

/// What an audit record is about. Written as its name (`block`, `audit-resumed`, ...), as
/// the log always had it; a name this version does not know (a newer daemon's) is kept.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum AuditOp {
    /// An operator's block, or a quarantine the daemon placed (inspection, tamper).
    Block,
    Unblock,
    /// Rule files read, on a change or a `reload` request.
    Reload,
    /// A block whose TTL ran out.
    Expire,
    /// A flow cut by inspection.
    Cut,
    /// The trail could be written again after a gap.
    AuditResumed,
    /// The first record of a new file of the trail (after rotation), linking it to the last
    /// record of the file before.
    AuditCheckpoint,
    /// Any other name (a request refused for its role is recorded under its op's name).
    Other(String),
}

impl AuditOp {
    const NAMES: [(AuditOp, &'static str); 7] = [
        (AuditOp::Block, "block"),
        (AuditOp::Unblock, "unblock"),
        (AuditOp::Reload, "reload"),
        (AuditOp::Expire, "expire"),
        (AuditOp::Cut, "cut"),
        (AuditOp::AuditResumed, "audit-resumed"),
        (AuditOp::AuditCheckpoint, crate::audit_chain::CHECKPOINT_OP),
    ];

    pub fn as_str(&self) -> &str {
        match self {
            AuditOp::Other(name) => name,
            op => AuditOp::NAMES.iter().find(|(o, _)| o == op).map_or("", |(_, n)| n),
        }
    }

    /// The record of request `op` (a command's own op, or one refused for its role).
    pub fn of(op: &Op) -> AuditOp {
        match op {
            Op::Block { .. } => AuditOp::Block,
            Op::Unblock { .. } => AuditOp::Unblock,
            Op::Reload => AuditOp::Reload,
            other => AuditOp::Other(other.name().to_string()),
        }
    }
}

impl From<String> for AuditOp {
    fn from(s: String) -> AuditOp {
        AuditOp::NAMES.iter().find(|(_, n)| *n == s).map_or(AuditOp::Other(s), |(o, _)| o.clone())
    }
}

impl From<&str> for AuditOp {
    fn from(s: &str) -> AuditOp {
        AuditOp::from(s.to_string())
    }
}

impl From<AuditOp> for String {
    fn from(op: AuditOp) -> String {
        op.as_str().to_string()
    }
}

impl fmt::Display for AuditOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an audited action ended. Written `ok` or `error: <message>`, as the log always had
/// it; any other text (an older or newer writer's) is kept as it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum AuditResult {
    Ok,
    /// What went wrong, usually `<code>: <message>`.
    Error(String),
    Other(String),
}

impl AuditResult {
    /// A request's refusal or failure: `error: <code>: <message>`.
    pub fn failed(code: ErrorCode, message: impl fmt::Display) -> AuditResult {
        AuditResult::Error(format!("{code}: {message}"))
    }

    /// Until the action's outcome is known: a record written by mistake before then says
    /// it failed, never that it succeeded.
    pub fn unfinished() -> AuditResult {
        AuditResult::Error("not finished".into())
    }

    pub fn is_ok(&self) -> bool {
        *self == AuditResult::Ok
    }
}

impl From<String> for AuditResult {
    fn from(s: String) -> AuditResult {
        if s == "ok" {
            return AuditResult::Ok;
        }
        match s.strip_prefix("error: ") {
            Some(m) => AuditResult::Error(m.to_string()),
            None => AuditResult::Other(s),
        }
    }
}

impl From<&str> for AuditResult {
    fn from(s: &str) -> AuditResult {
        AuditResult::from(s.to_string())
    }
}

impl From<AuditResult> for String {
    fn from(r: AuditResult) -> String {
        r.to_string()
    }
}

impl fmt::Display for AuditResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuditResult::Ok => f.write_str("ok"),
            AuditResult::Error(m) => write!(f, "error: {m}"),
            AuditResult::Other(s) => f.write_str(s),
        }
    }
}

/// Who sent a request: taken once, when the connection was made (SO_PEERCRED, and the
/// groups of that very process).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: i32,
    pub user: String,
    /// The process name (`/proc/PID/comm`), read when it connected, if it could be.
    pub process: Option<String>,
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AuditRecord {
    /// Unix milliseconds.
    pub time_ms: i64,
    /// `None` for the daemon's own actions (reloads from files, expiries, inspection).
    pub peer: Option<Peer>,
    pub role: Option<Role>,
    /// Who acted when no socket peer did: the part of the daemon, e.g. `fw-daemon inspection
    /// (policy api-tls)` for a flow cut or container quarantined by inspection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[schemars(with = "String")]
    pub op: AuditOp,
    /// What a block, unblock, expiry or cut was about: the same shape as a block's target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<BlockTarget>,
    /// What a reload read: the rules directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The TTL a block was asked for, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    /// `ok`, or `error: <message>`.
    #[schemars(with = "String")]
    pub result: AuditResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_hash: Option<String>,
    /// For reloads: what changed (containers replaced / updated, zones and rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_events_round_trip_beside_the_event_tag() {
        let a = Alert {
            id: 3,
            time_ms: 1_700_000_000_000,
            kind: AlertKind::CapHit,
            container: Some("web-1".into()),
            rule: Some(RuleRef { kind: crate::RuleKind::Cap, id: "web:max_conns".into(), source: None }),
            flow: Some(9),
            message: "web-1 hit its max_conns cap".into(),
        };
        let msg = ServerMsg::Event { sub: 1, event: Event::Alert(a.clone()) };
        let line = serde_json::to_string(&msg).unwrap();
        assert!(line.contains(r#""kind":"alert""#) && line.contains(r#""alert":"cap-hit""#), "{line}");
        assert_eq!(serde_json::from_str::<ServerMsg>(&line).unwrap(), msg);
        let ans = ServerMsg::Ok { id: 2, answer: Answer::Alerts { alerts: vec![a] } };
        let line = serde_json::to_string(&ans).unwrap();
        assert_eq!(serde_json::from_str::<ServerMsg>(&line).unwrap(), ans);
        // A kind from a newer daemon still parses.
        let e: Event = serde_json::from_str(
            r#"{"kind":"alert","id":1,"time_ms":0,"alert":"meteor-strike","message":"m"}"#,
        )
        .unwrap();
        assert!(matches!(e, Event::Alert(Alert { kind: AlertKind::Unknown, .. })));
    }

    #[test]
    fn requests_are_flat_json_with_an_op_tag() {
        let r: Request = serde_json::from_str(r#"{"id":7,"op":"hello","version":1,"client":"t"}"#).unwrap();
        assert_eq!(r, Request { id: 7, op: Op::Hello { version: 1, client: "t".into() } });
        let r: Request = serde_json::from_str(
            r#"{"id":8,"op":"block","target":{"kind":"destination","scope":{"scope":"zone","name":"db"},"net":"10.0.0.0/8","proto":"tcp","port":443},"ttl_secs":60}"#,
        )
        .unwrap();
        let Op::Block { target: BlockTarget::Destination { scope, net, proto, port }, ttl_secs, .. } = r.op
        else {
            panic!("{r:?}")
        };
        assert_eq!(
            (scope, net.to_string(), proto, port, ttl_secs),
            (Scope::Zone("db".into()), "10.0.0.0/8".into(), Some(Proto::Tcp), Some(443), Some(60))
        );
        let back: Request =
            serde_json::from_str(&serde_json::to_string(&Request { id: 1, op: Op::Blocks }).unwrap())
                .unwrap();
        assert_eq!(back.op, Op::Blocks);
    }

    #[test]
    fn unknown_ops_and_fields_are_rejected() {
        assert!(serde_json::from_str::<Request>(r#"{"id":1,"op":"format-disk"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"id":1,"op":"unblock","block":1,"x":2}"#).is_err());
    }

    #[test]
    fn protocols_accept_names_and_numbers() {
        assert_eq!(serde_json::from_str::<Proto>("\"tcp\"").unwrap(), Proto::Tcp);
        assert_eq!(serde_json::from_str::<Proto>("47").unwrap(), Proto::Other(47));
        assert_eq!("UDP".parse::<Proto>().unwrap(), Proto::Udp);
        assert!("tcpx".parse::<Proto>().is_err());
    }

    fn row() -> FlowRow {
        FlowRow {
            id: 1,
            container: "web-1".into(),
            zone: "web".into(),
            direction: Direction::Egress,
            proto: Proto::Tcp,
            src: "10.0.0.2".parse().unwrap(),
            sport: 40000,
            dst: "10.0.0.3".parse().unwrap(),
            dport: 5432,
            peer: Some("db-1".into()),
            peer_zone: Some("db".into()),
            state: "ESTABLISHED".into(),
            bytes_out: 0,
            bytes_in: 0,
            packets_out: 0,
            packets_in: 0,
            rate_out: 0,
            rate_in: 0,
            first_seen_ms: 0,
            last_seen_ms: 0,
            verdict: FlowVerdict::Allowed,
            rule: None,
            count: 1,
            open: true,
            inspection: None,
        }
    }

    #[test]
    fn filters_parse_and_match() {
        let f = FlowFilter::parse("container=web-1 port=5432 DB").unwrap();
        assert!(f.matches(&row()));
        assert!(!FlowFilter::parse("verdict=denied").unwrap().matches(&row()));
        assert!(FlowFilter::parse("zone=db").unwrap().matches(&row()), "peer zone matches too");
        assert!(FlowFilter::parse("10.0.0.3").unwrap().matches(&row()));
        assert!(FlowFilter::parse("colour=red").is_err());
        assert!(FlowFilter::parse("port=99999").is_err());
        assert!(FlowFilter::parse("port:5432 !verdict:deny").unwrap().matches(&row()));
        assert!(FlowFilter::parse("5432").unwrap().matches(&row()), "a bare port number");
        assert_eq!(FlowFilter::parse("  ").unwrap(), FlowFilter::default());
    }

    /// Older clients' structured fields and an expression combine; a bad expression sent by a
    /// client that skipped the check compiles to an error and matches nothing.
    #[test]
    fn structured_fields_and_expressions_combine() {
        let f =
            FlowFilter { zone: Some("db".into()), text: Some("WEB 10.0.0.3".into()), ..Default::default() };
        assert!(f.matches(&row()));
        let f = FlowFilter { proto: Some(Proto::Udp), ..Default::default() };
        assert!(!f.matches(&row()));
        let f = FlowFilter { port: Some(5432), expr: Some("!dir:in".into()), ..Default::default() };
        assert!(f.matches(&row()));
        let bad = FlowFilter { expr: Some("colour:red".into()), ..Default::default() };
        assert!(bad.compile().is_err() && !bad.matches(&row()));
        // The expression travels as a field of its own.
        let line = serde_json::to_string(&FlowFilter::parse("port:443").unwrap()).unwrap();
        assert_eq!(line, r#"{"expr":"port:443"}"#);
    }

    /// The typed op and result are written exactly as the log always had them, and what
    /// this version does not know is kept verbatim: old logs and newer daemons' read back.
    #[test]
    fn audit_op_and_result_keep_the_logs_wording() {
        for name in ["block", "unblock", "reload", "expire", "cut", "audit-resumed", "subscribe", "later-op"]
        {
            let op = AuditOp::from(name);
            assert_eq!(op.as_str(), name);
            assert_eq!(serde_json::to_string(&op).unwrap(), format!("{name:?}"));
        }
        assert_eq!(AuditOp::from("cut"), AuditOp::Cut);
        assert_eq!(AuditOp::of(&Op::Reload), AuditOp::Reload);
        for text in ["ok", "error: forbidden: viewer may not block", "", "partly"] {
            let r: AuditResult = serde_json::from_str(&format!("{text:?}")).unwrap();
            assert_eq!(r.to_string(), text);
        }
        assert!(AuditResult::from("ok").is_ok());
        assert_eq!(AuditResult::failed(ErrorCode::Internal, "x").to_string(), "error: internal: x");
        assert!(!AuditResult::unfinished().is_ok());
        let line =
            r#"{"time_ms":5,"peer":null,"role":null,"op":"reload","path":"/etc/fw/rules","result":"ok"}"#;
        let rec: AuditRecord = serde_json::from_str(line).unwrap();
        assert_eq!((rec.op.clone(), rec.result.clone()), (AuditOp::Reload, AuditResult::Ok));
        assert_eq!(serde_json::to_string(&rec).unwrap(), line);
    }
}
