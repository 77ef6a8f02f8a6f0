//! After start-up the daemon keeps only the capabilities its work needs:
//!
//! - CAP_NET_ADMIN: nftables and NFLOG over netlink, inside each namespace;
//! - CAP_SYS_ADMIN: `setns` into a container's network namespace (needed for every new
//!   container, not only at start-up);
//! - CAP_SYS_PTRACE: opening `/proc/PID/ns/net` of container processes it does not own.
//!
//! Everything else (CAP_DAC_OVERRIDE, CAP_SYS_MODULE, CAP_NET_RAW, CAP_KILL, ...) is
//! dropped from the effective, permitted, inheritable and bounding sets, so neither this
//! process nor anything it could exec gets them back.

use caps::{CapSet, Capability, CapsHashSet};

pub const KEPT: [Capability; 3] =
    [Capability::CAP_NET_ADMIN, Capability::CAP_SYS_ADMIN, Capability::CAP_SYS_PTRACE];

#[derive(Debug, thiserror::Error)]
#[error("dropping capabilities ({what}): {source}")]
pub struct PrivError {
    what: &'static str,
    #[source]
    source: caps::errors::CapsError,
}

/// Drops every capability but `KEPT`. Not being root is not an error (nothing to drop;
/// netlink calls will fail with their own clear errors).
/// The capabilities enforcing needs, if this process lacks any: their names.
/// `own_namespace` (`--self`): netlink in the daemon's own namespace needs no `setns`.
pub fn require_enforcing(own_namespace: bool) -> Result<(), String> {
    let needed: &[Capability] = if own_namespace {
        &[Capability::CAP_NET_ADMIN]
    } else {
        &[Capability::CAP_NET_ADMIN, Capability::CAP_SYS_ADMIN]
    };
    let missing: Vec<String> = needed
        .iter()
        .copied()
        .filter(|c| !caps::has_cap(None, CapSet::Effective, *c).unwrap_or(false))
        .map(|c| c.to_string())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing.join(", "))
    }
}

pub fn drop_unneeded() -> Result<(), PrivError> {
    let keep: CapsHashSet = KEPT.into_iter().collect();
    let err = |what| move |source| PrivError { what, source };
    let bounding = caps::read(None, CapSet::Bounding).map_err(err("read bounding set"))?;
    for c in bounding.difference(&keep) {
        caps::drop(None, CapSet::Bounding, *c).map_err(err("bounding set"))?;
    }
    let permitted = caps::read(None, CapSet::Permitted).map_err(err("read permitted set"))?;
    let keep: CapsHashSet = keep.intersection(&permitted).copied().collect();
    caps::set(None, CapSet::Inheritable, &CapsHashSet::new()).map_err(err("inheritable set"))?;
    caps::set(None, CapSet::Effective, &keep).map_err(err("effective set"))?;
    caps::set(None, CapSet::Permitted, &keep).map_err(err("permitted set"))?;
    Ok(())
}
