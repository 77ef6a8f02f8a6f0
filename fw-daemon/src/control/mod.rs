//! The control socket: a local Unix socket where consoles and scripts read status, flows,
//! blocks and the audit trail, and operators block and unblock. `server` speaks the
//! protocol (`fw_proto::control`), `auth` decides who may do what, `audit` keeps the trail.
//! Requests that change state are passed to the daemon's event loop as `Command`s, so one
//! thread owns every table; reads are answered from snapshots the daemon publishes.

pub mod audit;
pub mod auth;
pub mod server;
pub mod view;

use fw_proto::control::{
    Answer, BlockInfo, ErrorCode, FlowFilter, FlowRow, FlowSnapshot, Op, Role, StatusInfo,
};

pub use auth::{Credentials, Roles};

/// A state-changing request for the daemon's event loop; the answer goes back on `reply`.
#[derive(Debug)]
pub struct Command {
    pub op: Op,
    pub who: Credentials,
    pub role: Role,
    /// Answered once, from the daemon's loop; the connection's task awaits it.
    pub reply: tokio::sync::oneshot::Sender<Result<Answer, (ErrorCode, String)>>,
}

/// What the flow table offers the server (implemented over the shared table).
pub trait FlowView: Send + Sync {
    fn snapshot(&self, filter: &FlowFilter, limit: Option<usize>) -> FlowSnapshot;
    /// Rows matching `filter` changed since `since` (all of them for `None`), ids of rows
    /// removed since then, and the position to ask from next time.
    fn changes(&self, since: Option<u64>, filter: &FlowFilter) -> FlowChanges;
    /// Open flows per container name, counted now (status reads it fresh, not published).
    fn open_flows(&self) -> std::collections::HashMap<String, usize> {
        Default::default()
    }
    /// Connections each container opened that are still live (egress, not closing): what
    /// `max_conns` caps. `None`: not counted (status then carries no number).
    fn originated_conns(&self) -> Option<std::collections::HashMap<String, usize>> {
        None
    }
    /// Rows of open flows dropped at the table's cap, counted now.
    fn dropped_open(&self) -> u64 {
        0
    }
    /// A receiver that sees the table's change position move: subscriptions wait on it
    /// instead of polling. `None`: the view cannot say, poll at the subscription's interval.
    fn watch(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct FlowChanges {
    pub changed: Vec<FlowRow>,
    pub removed: Vec<u64>,
    pub total: usize,
    pub lost_events: u64,
    pub next: u64,
    /// `changed` is the whole view, not a delta.
    pub full: bool,
}

/// What the daemon publishes for readers: replaced wholesale after each change.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    pub status: StatusInfo,
    pub blocks: Vec<BlockInfo>,
}
