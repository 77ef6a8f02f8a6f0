//! The Inspector fed arbitrary packet sequences: the input is cut into chunks by a length byte;
//! each chunk (kind byte, length byte, bytes) is either a raw IP packet (kind odd) or the
//! payload of a TCP segment or UDP datagram (kind bit 6) of one of 16 flows (kind bits 2-5),
//! in either direction (bit 1), at a fuzzer-chosen sequence number and TCP flags, so
//! reassembly (gaps, overlaps, retransmits, wrap-around) is exercised. Also checks: at most
//! one verdict per flow, and never more flows than the bound.
#![no_main]
use fw_daemon::inspect::Inspector;
use fw_daemon::rules::model::{AppProto, Inspect, OnViolation};
use libfuzzer_sys::fuzz_target;

fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0];
    p[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(l4);
    p
}

fn segment(flow: u8, back: bool, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let (c, s) = ([10, 0, 0, 2], [10, 0, 0, 1]);
    let (cp, sp) = (40000 + u16::from(flow & 3), [443u16, 80, 53, 8443][usize::from(flow >> 2 & 3)]);
    let (src, dst, spt, dpt) = if back { (s, c, sp, cp) } else { (c, s, cp, sp) };
    let mut t = Vec::with_capacity(20 + payload.len());
    t.extend_from_slice(&spt.to_be_bytes());
    t.extend_from_slice(&dpt.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(payload);
    let proto = if flow & 0x10 != 0 { 17 } else { 6 };
    if proto == 17 {
        let mut u = Vec::new();
        u.extend_from_slice(&spt.to_be_bytes());
        u.extend_from_slice(&dpt.to_be_bytes());
        u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        u.extend_from_slice(&[0, 0]);
        u.extend_from_slice(payload);
        return ipv4(src, dst, 17, &u);
    }
    ipv4(src, dst, 6, &t)
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, mut rest)) = data.split_first() else { return };
    let protocol =
        [None, Some(AppProto::Tls), Some(AppProto::Http), Some(AppProto::Dns)][usize::from(sel & 3)];
    let names = vec!["*.example.com".to_string(), "bücher.example".to_string()];
    let policy = Inspect {
        protocol,
        tls_sni: if protocol == Some(AppProto::Tls) { names.clone() } else { vec![] },
        http_host: if protocol == Some(AppProto::Http) { names.clone() } else { vec![] },
        dns_names: if protocol == Some(AppProto::Dns) { names } else { vec![] },
        on_violation: OnViolation::Alert,
        max_packets: 1 + (sel >> 2) % 32,
    };
    let max_flows = 1 + usize::from(sel >> 6);
    let mut insp = Inspector::new(max_flows);
    let mut decided = std::collections::HashMap::new();
    let mut seen = std::collections::HashSet::new();
    while rest.len() >= 2 {
        let (kind, n) = (rest[0], usize::from(rest[1]));
        rest = &rest[2..];
        let (chunk, r) = rest.split_at(n.min(rest.len()));
        rest = r;
        let pkt = if kind & 1 == 0 && chunk.len() >= 3 {
            let seq = u32::from(u16::from_be_bytes([chunk[0], chunk[1]])).wrapping_sub(8);
            segment(kind >> 2, kind & 2 != 0, seq, chunk[2], &chunk[3..])
        } else {
            chunk.to_vec()
        };
        if let Some(p) = fw_daemon::inspect::packet::parse(&pkt) {
            let a = (p.proto, p.src, p.sport, p.dst, p.dport);
            let b = (p.proto, p.dst, p.dport, p.src, p.sport);
            seen.insert(a.min(b));
        }
        for f in insp.packet(&pkt, &policy, 0) {
            use fw_daemon::inspect::Finding::*;
            if let Identified { flow, .. } | Violation { flow, .. } = f {
                // At most one verdict per flow, as long as no flow had to be dropped to keep
                // within max_flows (an evicted flow's later packets start it afresh).
                if decided.insert(flow, ()).is_some() {
                    assert!(seen.len() > max_flows, "two verdicts for {flow:?}");
                }
            }
        }
        assert!(insp.flows() <= max_flows);
    }
});
