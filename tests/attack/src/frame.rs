//! Hand-built Ethernet frames (IPv4/IPv6 with UDP, a TCP SYN or any protocol; ARP; IPv6
//! neighbour discovery) and a parser that says what a captured frame is. Pure functions:
//! no sockets here, so every builder is checked against the parser in unit tests.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use pnet_datalink::MacAddr;
use pnet_packet::arp::{ArpHardwareTypes, ArpPacket, MutableArpPacket};
pub use pnet_packet::arp::{ArpOperation, ArpOperations};
use pnet_packet::ethernet::{EtherType, EtherTypes, EthernetPacket, MutableEthernetPacket};
use pnet_packet::icmpv6::{self, Icmpv6Packet};
use pnet_packet::ip::{IpNextHeaderProtocol, IpNextHeaderProtocols};
use pnet_packet::ipv4::{self, Ipv4Packet, MutableIpv4Packet};
use pnet_packet::ipv6::{Ipv6Packet, MutableIpv6Packet};
use pnet_packet::tcp::{self, MutableTcpPacket, TcpFlags};
use pnet_packet::udp::{self, MutableUdpPacket};

const ETH_LEN: usize = 14;
const IP4_LEN: usize = 20;
const IP6_LEN: usize = 40;
const UDP_LEN: usize = 8;
const TCP_LEN: usize = 20;
/// Ethernet payloads are at most this long here (no jumbo frames on the lab's veths).
const MTU: usize = 1500;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("source {0} and destination {1} are not of one address family")]
    MixedFamilies(IpAddr, IpAddr),
    #[error("payload of {0} bytes does not fit one {MTU}-byte frame")]
    TooLong(usize),
}

/// The link-layer ends of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Eth {
    pub src: MacAddr,
    pub dst: MacAddr,
}

/// What an IP packet carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4<'a> {
    Udp {
        sport: u16,
        dport: u16,
        payload: &'a [u8],
    },
    /// A SYN (data may ride on it, which carries a token through a reader).
    TcpSyn {
        sport: u16,
        dport: u16,
        seq: u32,
        payload: &'a [u8],
    },
    /// A mid-stream segment (ACK and PSH, no SYN, FIN or RST): what a verdict cache keyed
    /// by a live connection's tuple would let through.
    TcpAck {
        sport: u16,
        dport: u16,
        seq: u32,
        ack: u32,
        payload: &'a [u8],
    },
    /// Any protocol number with an opaque payload (0 bytes is fine).
    Raw {
        proto: u8,
        payload: &'a [u8],
    },
}

impl L4<'_> {
    fn proto(&self) -> u8 {
        match self {
            L4::Udp { .. } => IpNextHeaderProtocols::Udp.0,
            L4::TcpSyn { .. } | L4::TcpAck { .. } => IpNextHeaderProtocols::Tcp.0,
            L4::Raw { proto, .. } => *proto,
        }
    }

    fn len(&self) -> usize {
        match self {
            L4::Udp { payload, .. } => UDP_LEN + payload.len(),
            L4::TcpSyn { payload, .. } | L4::TcpAck { payload, .. } => TCP_LEN + payload.len(),
            L4::Raw { payload, .. } => payload.len(),
        }
    }

    /// The transport segment with its checksum over the pseudo-header of `src` -> `dst`.
    fn segment(&self, src: IpAddr, dst: IpAddr) -> Vec<u8> {
        let mut b = vec![0u8; self.len()];
        match *self {
            L4::Udp { sport, dport, payload } => {
                let mut u = MutableUdpPacket::new(&mut b).expect("sized for a UDP header");
                u.set_source(sport);
                u.set_destination(dport);
                u.set_length((UDP_LEN + payload.len()) as u16);
                u.set_payload(payload);
                let sum = match (src, dst) {
                    (IpAddr::V4(s), IpAddr::V4(d)) => udp::ipv4_checksum(&u.to_immutable(), &s, &d),
                    (IpAddr::V6(s), IpAddr::V6(d)) => udp::ipv6_checksum(&u.to_immutable(), &s, &d),
                    _ => 0,
                };
                u.set_checksum(sum);
            }
            L4::TcpSyn { sport, dport, seq, payload } | L4::TcpAck { sport, dport, seq, payload, .. } => {
                let (ack, flags) = match *self {
                    L4::TcpAck { ack, .. } => (ack, TcpFlags::ACK | TcpFlags::PSH),
                    _ => (0, TcpFlags::SYN),
                };
                let mut t = MutableTcpPacket::new(&mut b).expect("sized for a TCP header");
                t.set_source(sport);
                t.set_destination(dport);
                t.set_sequence(seq);
                t.set_acknowledgement(ack);
                t.set_data_offset(5);
                t.set_flags(flags);
                t.set_window(64240);
                t.set_payload(payload);
                let sum = match (src, dst) {
                    (IpAddr::V4(s), IpAddr::V4(d)) => tcp::ipv4_checksum(&t.to_immutable(), &s, &d),
                    (IpAddr::V6(s), IpAddr::V6(d)) => tcp::ipv6_checksum(&t.to_immutable(), &s, &d),
                    _ => 0,
                };
                t.set_checksum(sum);
            }
            L4::Raw { payload, .. } => b.copy_from_slice(payload),
        }
        b
    }
}

fn eth_header(buf: &mut [u8], eth: &Eth, ethertype: EtherType) {
    let mut e = MutableEthernetPacket::new(buf).expect("sized for an Ethernet header");
    e.set_source(eth.src);
    e.set_destination(eth.dst);
    e.set_ethertype(ethertype);
}

/// An Ethernet frame holding one IPv4 or IPv6 packet from `src` to `dst`. `ip_id` marks
/// IPv4 packets (a reader can match it even when there is no room for a token).
pub fn ip_frame(eth: &Eth, src: IpAddr, dst: IpAddr, l4: &L4<'_>, ip_id: u16) -> Result<Vec<u8>, FrameError> {
    let seg = l4.segment(src, dst);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            if IP4_LEN + seg.len() > MTU {
                return Err(FrameError::TooLong(seg.len()));
            }
            let mut b = vec![0u8; ETH_LEN + IP4_LEN + seg.len()];
            eth_header(&mut b, eth, EtherTypes::Ipv4);
            let mut ip = MutableIpv4Packet::new(&mut b[ETH_LEN..]).expect("sized for an IPv4 header");
            ip.set_version(4);
            ip.set_header_length(5);
            ip.set_total_length((IP4_LEN + seg.len()) as u16);
            ip.set_identification(ip_id);
            ip.set_flags(ipv4::Ipv4Flags::DontFragment);
            ip.set_ttl(64);
            ip.set_next_level_protocol(IpNextHeaderProtocol(l4.proto()));
            ip.set_source(s);
            ip.set_destination(d);
            ip.set_payload(&seg);
            let sum = ipv4::checksum(&ip.to_immutable());
            ip.set_checksum(sum);
            Ok(b)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => Ok(ip6_frame(eth, s, d, l4.proto(), 64, &seg)?),
        _ => Err(FrameError::MixedFamilies(src, dst)),
    }
}

fn ip6_frame(
    eth: &Eth,
    s: Ipv6Addr,
    d: Ipv6Addr,
    next: u8,
    hops: u8,
    seg: &[u8],
) -> Result<Vec<u8>, FrameError> {
    if IP6_LEN + seg.len() > MTU {
        return Err(FrameError::TooLong(seg.len()));
    }
    let mut b = vec![0u8; ETH_LEN + IP6_LEN + seg.len()];
    eth_header(&mut b, eth, EtherTypes::Ipv6);
    let mut ip = MutableIpv6Packet::new(&mut b[ETH_LEN..]).expect("sized for an IPv6 header");
    ip.set_version(6);
    ip.set_payload_length(seg.len() as u16);
    ip.set_next_header(IpNextHeaderProtocol(next));
    ip.set_hop_limit(hops);
    ip.set_source(s);
    ip.set_destination(d);
    ip.set_payload(seg);
    Ok(b)
}

/// An ARP request or reply. A reply whose sender IP is another host's is the spoof; a
/// gratuitous one has the sender IP as target too and goes to broadcast.
pub fn arp(eth: &Eth, op: ArpOperation, sender: (MacAddr, Ipv4Addr), target: (MacAddr, Ipv4Addr)) -> Vec<u8> {
    let mut b = vec![0u8; ETH_LEN + 28];
    eth_header(&mut b, eth, EtherTypes::Arp);
    let mut a = MutableArpPacket::new(&mut b[ETH_LEN..]).expect("sized for ARP");
    a.set_hardware_type(ArpHardwareTypes::Ethernet);
    a.set_protocol_type(EtherTypes::Ipv4);
    a.set_hw_addr_len(6);
    a.set_proto_addr_len(4);
    a.set_operation(op);
    a.set_sender_hw_addr(sender.0);
    a.set_sender_proto_addr(sender.1);
    a.set_target_hw_addr(target.0);
    a.set_target_proto_addr(target.1);
    b
}

pub fn arp_request(src_mac: MacAddr, src_ip: Ipv4Addr, who: Ipv4Addr) -> Vec<u8> {
    arp(
        &Eth { src: src_mac, dst: MacAddr::broadcast() },
        ArpOperations::Request,
        (src_mac, src_ip),
        (MacAddr::zero(), who),
    )
}

/// The solicited-node multicast address of `target` and its Ethernet group address.
pub fn solicited_node(target: Ipv6Addr) -> (Ipv6Addr, MacAddr) {
    let o = target.octets();
    let ip = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00 | o[13] as u16, (o[14] as u16) << 8 | o[15] as u16);
    (ip, MacAddr::new(0x33, 0x33, 0xff, o[13], o[14], o[15]))
}

fn icmp6_frame(eth: &Eth, src: Ipv6Addr, dst: Ipv6Addr, mut msg: Vec<u8>) -> Vec<u8> {
    let sum = icmpv6::checksum(&Icmpv6Packet::new(&msg).expect("an ICMPv6 header"), &src, &dst);
    msg[2..4].copy_from_slice(&sum.to_be_bytes());
    ip6_frame(eth, src, dst, IpNextHeaderProtocols::Icmpv6.0, 255, &msg).expect("ND messages are small")
}

/// A neighbour solicitation for `target` from `src` (with our link-layer address).
pub fn ndp_ns(src_mac: MacAddr, src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let (group, group_mac) = solicited_node(target);
    let mut m = vec![135, 0, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(&target.octets());
    m.extend_from_slice(&[1, 1]);
    m.extend_from_slice(&src_mac.octets());
    icmp6_frame(&Eth { src: src_mac, dst: group_mac }, src, group, m)
}

/// A neighbour advertisement saying `target` is at `target_mac` (override set): the IPv6
/// counterpart of a spoofed ARP reply when `target` is another host's address.
pub fn ndp_na(eth: &Eth, src: Ipv6Addr, dst: Ipv6Addr, target: Ipv6Addr, target_mac: MacAddr) -> Vec<u8> {
    let solicited = if dst.is_multicast() { 0 } else { 0x40 };
    let mut m = vec![136, 0, 0, 0, 0x20 | solicited, 0, 0, 0];
    m.extend_from_slice(&target.octets());
    m.extend_from_slice(&[2, 1]);
    m.extend_from_slice(&target_mac.octets());
    icmp6_frame(eth, src, dst, m)
}

/// What a captured frame is, as far as the reader's filters care.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    pub src_mac: Option<MacAddr>,
    pub dst_mac: Option<MacAddr>,
    pub ethertype: u16,
    pub ip: Option<IpSeen>,
    pub arp: Option<ArpSeen>,
    /// Neighbour advertisement: (target address, target link-layer address option).
    pub na: Option<(Ipv6Addr, Option<MacAddr>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpSeen {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    /// IPv4 identification (0 for IPv6).
    pub id: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpSeen {
    pub op: u16,
    pub sender_mac: MacAddr,
    pub sender_ip: Ipv4Addr,
    pub target_ip: Ipv4Addr,
}

/// Parses what it can; never panics on hostile or truncated input.
pub fn parse(frame: &[u8]) -> Seen {
    let Some(e) = EthernetPacket::new(frame) else { return Seen::default() };
    let mut s = Seen {
        src_mac: Some(e.get_source()),
        dst_mac: Some(e.get_destination()),
        ethertype: e.get_ethertype().0,
        ..Seen::default()
    };
    let body = &frame[ETH_LEN..];
    match e.get_ethertype() {
        EtherTypes::Ipv4 => {
            if let Some(ip) = Ipv4Packet::new(body) {
                s.ip = Some(IpSeen {
                    src: ip.get_source().into(),
                    dst: ip.get_destination().into(),
                    proto: ip.get_next_level_protocol().0,
                    id: ip.get_identification(),
                });
            }
        }
        EtherTypes::Ipv6 => {
            if let Some(ip) = Ipv6Packet::new(body) {
                let proto = ip.get_next_header().0;
                s.ip = Some(IpSeen {
                    src: ip.get_source().into(),
                    dst: ip.get_destination().into(),
                    proto,
                    id: 0,
                });
                let p = &body[IP6_LEN.min(body.len())..];
                if proto == IpNextHeaderProtocols::Icmpv6.0 && p.len() >= 24 && p[0] == 136 {
                    let mut t = [0u8; 16];
                    t.copy_from_slice(&p[8..24]);
                    let mac = (p.len() >= 32 && p[24] == 2 && p[25] == 1)
                        .then(|| MacAddr::new(p[26], p[27], p[28], p[29], p[30], p[31]));
                    s.na = Some((Ipv6Addr::from(t), mac));
                }
            }
        }
        EtherTypes::Arp => {
            if let Some(a) = ArpPacket::new(body) {
                s.arp = Some(ArpSeen {
                    op: a.get_operation().0,
                    sender_mac: a.get_sender_hw_addr(),
                    sender_ip: a.get_sender_proto_addr(),
                    target_ip: a.get_target_proto_addr(),
                });
            }
        }
        _ => {}
    }
    s
}

/// The payload every token-carrying frame holds: `FWATK <token> <seq>`.
pub fn token_payload(token: &str, seq: u64) -> Vec<u8> {
    format!("FWATK {token} {seq:08}").into_bytes()
}

/// Whether `hay` contains `needle` (frames are small: a plain scan is enough).
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

pub fn parse_mac(s: &str) -> Option<MacAddr> {
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pnet_packet::Packet;

    const A: MacAddr = MacAddr(2, 0, 0, 0, 0, 0xa);
    const B: MacAddr = MacAddr(2, 0, 0, 0, 0, 0xb);

    #[test]
    fn udp4_frames_parse_back_with_a_valid_checksum() {
        let p = token_payload("t1", 7);
        let (s, d): (IpAddr, IpAddr) = ("10.77.0.11".parse().unwrap(), "10.77.0.31".parse().unwrap());
        let f =
            ip_frame(&Eth { src: A, dst: B }, s, d, &L4::Udp { sport: 4000, dport: 5432, payload: &p }, 77)
                .unwrap();
        let seen = parse(&f);
        assert_eq!((seen.src_mac, seen.dst_mac), (Some(A), Some(B)));
        assert_eq!(seen.ip, Some(IpSeen { src: s, dst: d, proto: 17, id: 77 }));
        assert!(contains(&f, b"FWATK t1 00000007"));
        let ip = Ipv4Packet::new(&f[ETH_LEN..]).unwrap();
        assert_eq!(ipv4::checksum(&ip), ip.get_checksum());
        let u = udp::UdpPacket::new(ip.payload()).unwrap();
        let (IpAddr::V4(s4), IpAddr::V4(d4)) = (s, d) else { unreachable!() };
        assert_eq!(udp::ipv4_checksum(&u, &s4, &d4), u.get_checksum());
    }

    #[test]
    fn tiny_raw_packets_have_no_transport_header() {
        for n in 0..4 {
            let payload = vec![0xee; n];
            let f = ip_frame(
                &Eth { src: A, dst: B },
                "10.0.0.1".parse().unwrap(),
                "10.0.0.2".parse().unwrap(),
                &L4::Raw { proto: 253, payload: &payload },
                0xf17a,
            )
            .unwrap();
            assert_eq!(f.len(), ETH_LEN + IP4_LEN + n);
            let seen = parse(&f).ip.unwrap();
            assert_eq!((seen.proto, seen.id), (253, 0xf17a));
        }
    }

    #[test]
    fn ipv6_syn_and_mixed_families() {
        let (s, d): (IpAddr, IpAddr) = ("fd77::11".parse().unwrap(), "fd77::21".parse().unwrap());
        let f = ip_frame(
            &Eth { src: A, dst: B },
            s,
            d,
            &L4::TcpSyn { sport: 1, dport: 8080, seq: 9, payload: b"x" },
            0,
        )
        .unwrap();
        assert_eq!(parse(&f).ip.unwrap().proto, 6);
        let err = ip_frame(
            &Eth { src: A, dst: B },
            s,
            "10.0.0.1".parse().unwrap(),
            &L4::Raw { proto: 1, payload: &[] },
            0,
        );
        assert!(matches!(err, Err(FrameError::MixedFamilies(..))));
        let big = vec![0u8; 1600];
        let err = ip_frame(&Eth { src: A, dst: B }, s, d, &L4::Udp { sport: 1, dport: 2, payload: &big }, 0);
        assert!(matches!(err, Err(FrameError::TooLong(_))));
    }

    #[test]
    fn arp_and_nd_round_trip() {
        let f = arp(
            &Eth { src: A, dst: B },
            ArpOperations::Reply,
            (A, "10.77.0.21".parse().unwrap()),
            (B, "10.77.0.31".parse().unwrap()),
        );
        let a = parse(&f).arp.unwrap();
        assert_eq!((a.op, a.sender_mac, a.sender_ip), (2, A, "10.77.0.21".parse().unwrap()));
        let t: Ipv6Addr = "fd77::21".parse().unwrap();
        let f =
            ndp_na(&Eth { src: A, dst: B }, "fd77::11".parse().unwrap(), "fd77::31".parse().unwrap(), t, A);
        assert_eq!(parse(&f).na, Some((t, Some(A))));
        let (g, m) = solicited_node("fd77::1:2:3".parse().unwrap());
        assert_eq!(
            (g.to_string(), m),
            ("ff02::1:ff02:3".to_string(), MacAddr(0x33, 0x33, 0xff, 0x02, 0x00, 0x03))
        );
        let ns = parse(&ndp_ns(A, "fd77::11".parse().unwrap(), t));
        assert_eq!(ns.dst_mac, Some(solicited_node(t).1));
    }

    #[test]
    fn parse_never_panics_on_truncated_frames() {
        let f = ip_frame(
            &Eth { src: A, dst: B },
            "fd77::11".parse().unwrap(),
            "fd77::21".parse().unwrap(),
            &L4::Udp { sport: 1, dport: 2, payload: b"abc" },
            0,
        )
        .unwrap();
        for n in 0..f.len() {
            let _ = parse(&f[..n]);
        }
        let na = ndp_na(
            &Eth { src: A, dst: B },
            "fd77::11".parse().unwrap(),
            "ff02::1".parse().unwrap(),
            "fd77::11".parse().unwrap(),
            A,
        );
        for n in 0..na.len() {
            let _ = parse(&na[..n]);
        }
    }
}
