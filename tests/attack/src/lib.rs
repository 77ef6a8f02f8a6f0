//! fw-attack: the attacker's side of fw's containment tests, as a library the integration
//! tests call in-process (inside a namespace, through `fw_daemon::netns::run_in`) and as a
//! static binary (`fw-attack`) copied into a Docker image.
//!
//! - [`link`]: AF_PACKET frames, written past the namespace's `output` hook and read before
//!   its `input` hook; a counting [`link::Reader`] ("frames arrive" = counted here);
//! - [`frame`]: Ethernet/IPv4/IPv6 with UDP, TCP SYN or any protocol, ARP, ND;
//! - [`net`]: plain sockets for comparison, raw IP sockets, bind-before-connect;
//! - [`tamper`]: deleting fw's state over NETLINK_NETFILTER.
//!
//! Everything is bounded (counts, durations) and sends only where it is told to.

pub mod frame;
pub mod link;
pub mod net;
pub mod tamper;

pub use frame::MacAddr;
