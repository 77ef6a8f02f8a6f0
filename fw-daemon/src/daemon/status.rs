//! What the control socket's readers see, built from the daemon's parts (pure: no I/O).

use fw_proto::control::{BlockInfo, BlockTarget, ContainerInfo, StatusInfo};

use super::enforcer::Enforcer;
use super::sources::Sources;
use super::trail::Trail;

pub fn block_infos(enf: &Enforcer) -> Vec<BlockInfo> {
    let zones = enf.rec.zones();
    enf.rec
        .blocks()
        .active()
        .iter()
        .map(|b| b.info(zones.iter().filter(|(c, z)| b.applies_to(c, z)).map(|(c, _)| c.clone()).collect()))
        .collect()
}

pub fn status_info(enf: &Enforcer, src: &Sources, trail: &Trail, uptime: std::time::Duration) -> StatusInfo {
    let rec = &enf.rec;
    let policy = rec.policy();
    let containers = rec
        .inventory()
        .containers
        .iter()
        // Pods on other nodes are peers (their addresses are in their zones' sets), not
        // containers of this node: a cluster's worth of them is not status.
        .filter(|c| !(c.netns.is_none() && c.kube.is_some()))
        .map(|c| {
            let programmed = rec.ruleset(&c.name);
            let zone = policy.zone_of(&c.identity());
            let blocks: Vec<&crate::blocks::Block> =
                rec.blocks().active().iter().filter(|b| b.applies_to(&c.name, &zone.name)).collect();
            ContainerInfo {
                name: c.name.clone(),
                zone: programmed.map_or_else(|| zone.name.clone(), |r| r.zone.clone()),
                mode: programmed.map_or(zone.mode, |r| r.mode),
                addresses: c.addresses.clone(),
                programmed: programmed.is_some(),
                caps: crate::control::view::caps(&zone.caps),
                // Counted when status is asked (the server fills them from the flow table).
                open_flows: 0,
                originated_conns: None,
                quarantined: blocks.iter().any(|b| matches!(b.target, BlockTarget::Quarantine { .. })),
                blocks: blocks.iter().map(|b| b.id).collect(),
                floor: enf.contain.floor_of(rec, &c.name).unwrap_or_default(),
                note: enf.unenforced(&c.name).cloned(),
                skipped: rec.skipped().get(&c.name).map(|why| why.to_string()),
            }
        })
        .collect();
    let (flows, lost_events) = enf.flows.stats();
    StatusInfo {
        daemon_version: env!("CARGO_PKG_VERSION").into(),
        pid: std::process::id(),
        uptime_ms: u64::try_from(uptime.as_millis()).unwrap_or(u64::MAX),
        policy_hash: src.status.policy_hash.clone(),
        loaded_at_ms: src.status.loaded_at.saturating_mul(1000),
        last_reload_errors: src.status.rejected.clone(),
        containers,
        flows,
        lost_events,
        active_blocks: rec.blocks().active().len(),
        rules_dir: Some(src.rules_dir().display().to_string()),
        rule_files: src.rule_files.clone(),
        last_reload_at_ms: src.last_reload_at.map(|t| t.saturating_mul(1000)),
        audit: trail.log().map(|a| a.status()),
        flows_dropped_open: enf.flows.dropped_open(),
        inventory: src.inventory_path().map(|p| p.display().to_string()),
        inventory_errors: src.inventory_errors.clone(),
        inventory_last_good: src.inventory_last_good,
        zones: crate::control::view::zones(policy),
        policies: crate::control::view::policies(policy),
    }
}
