//! The floor: fw's second enforcement point, on the host side of each container's link.
//!
//! Everything in a container's own namespace (`table inet fw`) is advisory against a root
//! process in it: frames written to a packet socket skip its `output` hook, and with
//! CAP_NET_ADMIN it can flush the table. The peer of its veth lives in another namespace (the
//! host's for Docker, a hub's for the demo lab) that the container cannot reach; there, one
//! `table bridge fw_floor` per namespace sees every frame each container's port emits or
//! receives, raw or not, and enforces, keyed by port (ifindex, never a MAC or an IP, which a
//! new container can reuse):
//! - not programmed -> nothing in or out (ports named like container ports, e.g. `veth*`);
//! - anti-spoofing: the port's own MAC and addresses only, ARP and ND for them only, no
//!   other EtherType;
//! - quarantine (nothing in or out but responders) and operator blocks;
//! - the zone's egress policy, from the same compiler as the namespace's chains, judged on
//!   every packet (there is no bridge conntrack on this kernel; see `compile`).
//!
//! The namespace's own table stays: flows, attribution, caps, inspection. A packet the
//! namespace's chain drops never reaches the floor; one that reaches the floor but not the
//! namespace's chain (a raw frame, a tampered table) meets the same policy there.

pub mod compile;
pub mod enforcer;
pub mod link;

use std::net::IpAddr;

use ipnet::IpNet;

pub use compile::{compile_floor, FLOOR_TABLE};

/// A container's port on the host side, as discovery found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// The containers behind it: several when they share a namespace.
    pub containers: Vec<String>,
    /// Its ifindex in the floor's namespace: what every rule keys on.
    pub ifindex: u32,
    /// Its name there (for people: plan, status, logs).
    pub ifname: String,
    /// The MAC of the container's end: the only source MAC admitted.
    pub mac: [u8; 6],
    /// The container's addresses (its IPv6 link-local ones too): the only sources admitted.
    pub addrs: Vec<IpAddr>,
}

/// Settings of the floor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FloorOptions {
    /// Ports whose names start like this and that fw has not programmed drop everything
    /// (Docker's `veth`); empty where other bridge ports are the host's own business.
    pub guard_prefixes: Vec<String>,
    /// How long a reply tuple lives without traffic: TCP, UDP (and port-less protocols),
    /// and a TCP connection that saw a FIN or RST.
    pub tcp_idle_ms: u64,
    pub udp_idle_ms: u64,
    pub closing_ms: u64,
    /// Bound of each dynamic reply set.
    pub flow_table_size: u32,
    /// Hosts a quarantined container may still exchange packets with (forensics).
    pub responders: Vec<IpNet>,
}

impl Default for FloorOptions {
    fn default() -> Self {
        FloorOptions {
            guard_prefixes: Vec::new(),
            tcp_idle_ms: 24 * 3600 * 1000,
            udp_idle_ms: 180 * 1000,
            closing_ms: 120 * 1000,
            flow_table_size: 65536,
            responders: Vec::new(),
        }
    }
}
