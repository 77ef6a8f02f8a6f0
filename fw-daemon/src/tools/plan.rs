//! `fw-daemon plan DIR --inventory FILE [--container NAME]`: the nft script each container's
//! `table inet fw` would hold, with a comment header saying whose it is.

use std::fmt::Write;

use crate::compile::{compile_container, CompileOptions, Membership};
use crate::inventory::Inventory;
use crate::rules::Policy;
use crate::ruleset::render::render;
use crate::tools::Failed;

/// One container's plan.
pub struct ContainerPlan {
    pub container: String,
    /// Comment header plus the nft script.
    pub text: String,
    /// The nft script alone (what `nft -f` takes).
    pub script: String,
}

pub fn plan(
    policy: &Policy,
    inv: &Inventory,
    only: Option<&str>,
    opts: &CompileOptions,
) -> Result<Vec<ContainerPlan>, Failed> {
    if let Some(name) = only {
        if inv.get(name).is_none() {
            let known: Vec<&str> = inv.containers.iter().map(|c| c.name.as_str()).collect();
            return Err(Failed::message(format!(
                "no container `{name}` in the inventory (known: {})",
                known.join(", ")
            )));
        }
    }
    let m = Membership::new(policy, inv);
    let mut out = Vec::new();
    for c in inv.containers.iter().filter(|c| only.is_none_or(|n| n == c.name)) {
        let rs = compile_container(policy, &m, c, opts);
        let script = render(&rs);
        let mut text = String::new();
        let _ = writeln!(text, "# container {}: zone {} ({})", c.name, rs.zone, rs.mode);
        if let Some(ns) = &c.netns {
            let _ = writeln!(text, "# netns {}", ns.display());
        }
        let addrs: Vec<String> = c.addresses.iter().map(|a| a.to_string()).collect();
        let _ = writeln!(
            text,
            "# addresses {}",
            if addrs.is_empty() { "(none)".into() } else { addrs.join(" ") }
        );
        let _ = writeln!(text, "# policy {}", policy.hash);
        text.push_str(&script);
        out.push(ContainerPlan { container: c.name.clone(), text, script });
    }
    Ok(out)
}

/// The host-side floor for the containers shown (all, or `only`): the `table bridge
/// fw_floor` the daemon programs where their veth peers are. Ports are found at run time;
/// here port N stands for the host side of the N-th container, as the header lists.
pub fn plan_floor(
    policy: &Policy,
    inv: &Inventory,
    only: Option<&str>,
    opts: &CompileOptions,
) -> ContainerPlan {
    use crate::floor::{compile_floor, FloorOptions, Port};
    let m = Membership::new(policy, inv);
    let mut text = String::new();
    let _ = writeln!(text, "# host-side floor: in the namespace holding the containers' veth peers");
    let _ = writeln!(text, "# (the host's with Docker); ports are found at run time, numbered here:");
    let mut ports = Vec::new();
    for (i, c) in inv.containers.iter().filter(|c| only.is_none_or(|n| n == c.name)).enumerate() {
        let index = i as u32 + 1;
        let _ = writeln!(text, "#   port {index}: the host side of {}", c.name);
        ports.push(Port {
            containers: vec![c.name.clone()],
            ifindex: index,
            ifname: format!("port{index}"),
            // Read from the container's interface at run time.
            mac: [0x02, 0, 0, 0, 0, index as u8],
            addrs: c.addresses.clone(),
        });
    }
    let _ = writeln!(text, "# policy {}", policy.hash);
    let rs = compile_floor(policy, &m, &ports, &Default::default(), opts, &FloorOptions::default());
    let script = render(&rs);
    text.push_str(&script);
    ContainerPlan { container: "floor".into(), text, script }
}
