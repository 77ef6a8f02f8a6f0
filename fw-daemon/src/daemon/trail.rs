//! The daemon's side of the audit trail: a request's change stays only if its record is on
//! disk; the daemon's own actions go on regardless (a lost record is counted and alerted
//! by the log itself).

use std::sync::Arc;

use fw_proto::control::{AuditOp, AuditRecord, AuditResult, ErrorCode};

use crate::clock::Clock;
use crate::control::audit::AuditLog;

/// Whether a change may go on without its audit record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// A request: refused (`audit-unavailable`) unless recorded.
    Required,
    /// The daemon's own action: goes on; a lost record is counted and alerted.
    BestEffort,
}

#[derive(Clone, Default)]
pub struct Trail {
    log: Option<Arc<AuditLog>>,
}

impl Trail {
    pub fn new(log: Option<Arc<AuditLog>>) -> Trail {
        Trail { log }
    }

    pub fn log(&self) -> Option<&Arc<AuditLog>> {
        self.log.as_ref()
    }

    /// A record of the daemon's own doing: the action stands even when it cannot be
    /// written (the trail is then marked broken and the record counted as lost).
    pub fn record(&self, rec: &AuditRecord) {
        if let Some(a) = &self.log {
            a.record(rec);
        }
    }

    /// Writes `rec` as `need` says.
    pub fn write(&self, rec: &AuditRecord, need: Need) -> Result<(), (ErrorCode, String)> {
        let Some(a) = &self.log else { return Ok(()) };
        match need {
            Need::Required => a.append(rec).map_err(|e| {
                (
                    ErrorCode::AuditUnavailable,
                    format!("{e}: {} refused, nothing changed (the change could not be recorded)", rec.op),
                )
            }),
            Need::BestEffort => {
                a.record(rec);
                Ok(())
            }
        }
    }

    /// A record of the daemon's own doing (no peer, no role): `op` on `target`, for `reason`.
    pub fn own_record(
        &self,
        op: AuditOp,
        target: Option<fw_proto::control::BlockTarget>,
        reason: Option<&str>,
        clock: &dyn Clock,
    ) -> AuditRecord {
        AuditRecord {
            time_ms: clock.now_ms(),
            peer: None,
            role: None,
            actor: None,
            op,
            target,
            path: None,
            block: None,
            reason: reason.map(str::to_string),
            ttl_ms: None,
            result: AuditResult::unfinished(),
            policy_hash: None,
            summary: None,
        }
    }
}
