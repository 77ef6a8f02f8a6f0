//! Wire types shared by `fw-daemon` and `fw-tui`.
//!
//! Serde only, no I/O: everything here must be cheap to build in tests and stable on the wire.

use serde::{Deserialize, Serialize};
use std::fmt;

pub mod audit_chain;
pub mod control;
pub mod filter;
pub mod flow;
pub mod output;

/// Whether a zone's drops are enforced or only reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Denied traffic is dropped (and logged, rate-limited).
    #[default]
    Enforce,
    /// Denied traffic is logged with an `audit` prefix and accepted.
    Audit,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
        })
    }
}

/// The outcome of a policy decision, as shown to operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Allow,
    Deny,
    /// Would have been denied, but the deciding zone is in audit mode: logged and allowed.
    AuditDeny,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::AuditDeny => "audit-deny",
        })
    }
}

/// What kind of rule decided a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RuleKind {
    /// A `[[policy]]` from a rule file.
    Policy,
    /// A `[[failsafe]]` allow from a rule file (evaluated before every policy).
    Failsafe,
    /// `[defaults] action`: nothing else matched.
    Default,
    /// Built into fw (loopback, IPv6 neighbour discovery, established flows).
    Builtin,
    /// A zone cap (max_conns, new_conns_per_sec, egress_bytes_per_sec).
    Cap,
    /// An operator block or quarantine.
    Block,
    /// The host-side floor's own checks (anti-spoofing, unadmitted ports, replies).
    Floor,
}

impl fmt::Display for RuleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RuleKind::Policy => "policy",
            RuleKind::Failsafe => "failsafe",
            RuleKind::Default => "default",
            RuleKind::Builtin => "builtin",
            RuleKind::Cap => "cap",
            RuleKind::Block => "block",
            RuleKind::Floor => "floor",
        })
    }
}

/// The rule that decided a verdict: its stable id and where it was written.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RuleRef {
    pub kind: RuleKind,
    pub id: String,
    /// `path:line` of the rule in its file, when it came from a file.
    pub source: Option<String>,
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            // The default has one id; "default default" reads like a stutter.
            RuleKind::Default => f.write_str("default")?,
            _ => write!(f, "{} {}", self.kind, self.id)?,
        }
        if let Some(src) = &self.source {
            write!(f, " ({src})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_use_kebab_case_on_the_wire() {
        assert_eq!(serde_json::to_string(&Verdict::AuditDeny).unwrap(), "\"audit-deny\"");
        assert_eq!(serde_json::from_str::<Mode>("\"audit\"").unwrap(), Mode::Audit);
    }

    #[test]
    fn rule_ref_displays_with_source() {
        let r = RuleRef {
            kind: RuleKind::Policy,
            id: "web-to-db".into(),
            source: Some("rules/demo/20-policies.toml:12".into()),
        };
        assert_eq!(r.to_string(), "policy web-to-db (rules/demo/20-policies.toml:12)");
        let d = RuleRef { kind: RuleKind::Default, id: "default".into(), source: None };
        assert_eq!(d.to_string(), "default");
    }
}
