//! IP (v4, v6) / TCP / UDP headers of an NFLOG payload, through `pnet_packet` views. Offsets
//! are computed and bounds-checked here (pnet's own `payload()` trusts header lengths).

use std::net::IpAddr;

use pnet_packet::ipv4::Ipv4Packet;
use pnet_packet::ipv6::Ipv6Packet;
use pnet_packet::tcp::TcpPacket;
use pnet_packet::udp::UdpPacket;

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;

/// One packet's transport view, oriented as it travelled (src -> dst).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pkt<'a> {
    pub proto: u8,
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
    /// TCP flags (0 for UDP), sequence and acknowledgment numbers.
    pub flags: u8,
    pub seq: u32,
    pub ack: u32,
    /// The transport payload as captured (up to the IP length, and the snap length).
    pub payload: &'a [u8],
    /// The payload was cut short by the snap length.
    pub truncated: bool,
}

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const ACK: u8 = 0x10;

/// Parses a packet starting at its IP header. None: not IPv4/IPv6 carrying TCP/UDP, a
/// non-first fragment, or headers cut short.
pub fn parse(pkt: &[u8]) -> Option<Pkt<'_>> {
    let version = pkt.first()? >> 4;
    let (src, dst, next, off, ip_len) = match version {
        4 => {
            let ip = Ipv4Packet::new(pkt)?;
            let hl = ip.get_header_length() as usize * 4;
            if hl < 20 || hl > pkt.len() {
                return None;
            }
            // Fragments: only the first carries the transport header; parse it, as truncated.
            if ip.get_fragment_offset() != 0 {
                return None;
            }
            let total = ip.get_total_length() as usize;
            if total < hl {
                return None;
            }
            let more_frags = ip.get_flags() & 0b001 != 0;
            let len = if more_frags { usize::MAX } else { total };
            (
                IpAddr::V4(ip.get_source()),
                IpAddr::V4(ip.get_destination()),
                ip.get_next_level_protocol().0,
                hl,
                len,
            )
        }
        6 => {
            let ip = Ipv6Packet::new(pkt)?;
            let total = 40 + ip.get_payload_length() as usize;
            let (mut next, mut off) = (ip.get_next_header().0, 40usize);
            let mut len = total;
            // Extension headers, a few at most.
            for _ in 0..8 {
                match next {
                    // hop-by-hop, routing, destination options: (next, len in 8-byte units - 1)
                    0 | 43 | 60 => {
                        let h = pkt.get(off..off + 2)?;
                        next = h[0];
                        off += (h[1] as usize + 1) * 8;
                    }
                    // fragment: 8 bytes; offset in the upper 13 bits of bytes 2-3, M flag bit 0.
                    44 => {
                        let h = pkt.get(off..off + 8)?;
                        let fo = u16::from_be_bytes([h[2], h[3]]);
                        if fo >> 3 != 0 {
                            return None;
                        }
                        if fo & 1 != 0 {
                            len = usize::MAX;
                        }
                        next = h[0];
                        off += 8;
                    }
                    _ => break,
                }
            }
            (IpAddr::V6(ip.get_source()), IpAddr::V6(ip.get_destination()), next, off, len)
        }
        _ => return None,
    };
    // The IP datagram as captured: cut at the IP length (drops link padding), and note
    // whether the capture ended before it.
    let end = ip_len.min(pkt.len());
    let truncated_ip = ip_len > pkt.len();
    let l4 = pkt.get(off..end)?;
    match next {
        TCP => {
            let t = TcpPacket::new(l4)?;
            let doff = t.get_data_offset() as usize * 4;
            if doff < 20 || doff > l4.len() {
                return None;
            }
            Some(Pkt {
                proto: TCP,
                src,
                sport: t.get_source(),
                dst,
                dport: t.get_destination(),
                flags: t.get_flags(),
                seq: t.get_sequence(),
                ack: t.get_acknowledgement(),
                payload: &l4[doff..],
                truncated: truncated_ip,
            })
        }
        UDP => {
            let u = UdpPacket::new(l4)?;
            let ulen = u.get_length() as usize;
            // UDP length bounds the payload too (0 is allowed for jumbograms: use the IP length).
            let (pay_end, short) =
                if ulen >= 8 { (ulen.min(l4.len()), ulen > l4.len()) } else { (l4.len(), false) };
            Some(Pkt {
                proto: UDP,
                src,
                sport: u.get_source(),
                dst,
                dport: u.get_destination(),
                flags: 0,
                seq: 0,
                ack: 0,
                payload: &l4[8..pay_end],
                truncated: truncated_ip || short,
            })
        }
        _ => None,
    }
}
