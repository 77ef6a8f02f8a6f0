//! The Inspector fed arbitrary packet sequences: the input is cut into chunks by a length byte;
//! each chunk (kind byte, length byte, bytes) is either a raw IP packet (kind odd) or the
//! payload of a TCP segment or UDP datagram (kind bit 6) of one of 16 flows (kind bits 2-5),
//! in either direction (bit 1), at a fuzzer-chosen sequence number and TCP flags, so
//! reassembly (gaps, overlaps, retransmits, wrap-around) is exercised. Also checks: at most
//! one verdict per TCP flow, never more flows than the bound, and no verdict but `Hold`
//! before a flow's decision.
//!
//! With the first byte odd, the input instead splits a real ClientHello: re-framed into TLS
//! records of a fuzzer-chosen size, cut into segments of fuzzer-chosen lengths, maybe sent
//! twice or out of order. Any split within the bounds (at most `max_packets` segments and 4
//! KiB) must be judged, and always the same way: `api.example.com`, identified.
#![no_main]
use fw_daemon::inspect::{Finding, Inspector, Verdict};
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

const HELLO: &[u8] = include_bytes!("../../fw-daemon/src/inspect/testdata/clienthello-tls13-api.example.com.bin");

/// The hello's handshake message in records of `size` bytes (0: as captured).
fn reframe(size: usize) -> Vec<u8> {
    if size == 0 {
        return HELLO.to_vec();
    }
    let mut out = Vec::new();
    for chunk in HELLO[5..].chunks(size) {
        out.extend_from_slice(&[0x16, 3, 1]);
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

fn splits(data: &[u8]) {
    let Some((&rec, rest)) = data.split_first() else { return };
    let Some((&how, lens)) = rest.split_first() else { return };
    let stream = reframe(usize::from(rec));
    // Segment lengths from the input, cycling; a 0 byte ends the list.
    let lens: Vec<usize> = lens.iter().take_while(|&&b| b != 0).map(|&b| usize::from(b)).collect();
    let mut segs: Vec<(usize, usize)> = Vec::new();
    let mut off = 0;
    let mut i = 0;
    while off < stream.len() {
        let n = if lens.is_empty() { stream.len() } else { lens[i % lens.len()] };
        let end = (off + n).min(stream.len());
        segs.push((off, end));
        off = end;
        i += 1;
    }
    // Retransmit one segment, or swap two neighbours (the first one stays first: without
    // the SYN, the first segment seen starts the stream).
    if how & 1 != 0 && segs.len() > 1 {
        let k = usize::from(how >> 1) % segs.len();
        segs.insert(k, segs[k]);
    }
    if how & 0x80 != 0 && segs.len() > 2 {
        let k = 1 + usize::from(how >> 3) % (segs.len() - 2);
        segs.swap(k, k + 1);
    }
    let policy = Inspect {
        protocol: Some(AppProto::Tls),
        tls_sni: vec!["*.example.com".into()],
        http_host: vec![],
        dns_names: vec![],
        on_violation: OnViolation::Cut,
        max_packets: 32,
        timeout_ms: 2000,
        fail: None,
    };
    let mut insp = Inspector::new(4);
    let mut decided = None;
    for (n, &(a, b)) in segs.iter().enumerate() {
        let pkt = segment(0, false, 1000u32.wrapping_add(a as u32), 0x18, &stream[a..b]);
        let j = insp.judge(&pkt, Some(true), &policy, 0);
        if decided.is_some() {
            assert!(j.done && j.findings.is_empty(), "after the verdict: {j:?}");
            continue;
        }
        match j.verdict {
            Verdict::Hold => assert!(!j.done && j.findings.is_empty()),
            Verdict::Accept => {
                assert!(j.done);
                match &j.findings[..] {
                    [Finding::Identified { name: Some(n), .. }] => assert_eq!(n, "api.example.com"),
                    f => panic!("accepted with {f:?}"),
                }
                decided = Some(n);
            }
            v => {
                // Only a split past the bounds may end undecided.
                let over = n + 1 >= 32 || stream.len() > 4096;
                assert!(over, "{v:?} within the bounds ({} segments): {:?}", segs.len(), j.findings);
                assert!(matches!(&j.findings[..], [Finding::Violation { reason, .. }] if reason.starts_with("undecided")), "{:?}", j.findings);
                decided = Some(n);
            }
        }
    }
    if segs.len() <= 32 && stream.len() <= 4096 {
        assert!(decided.is_some(), "a split within the bounds was never judged: {} segments", segs.len());
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, mut rest)) = data.split_first() else { return };
    if sel & 1 == 1 {
        return splits(rest);
    }
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
        timeout_ms: 2000,
        fail: None,
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
        let j = insp.judge(&pkt, None, &policy, 0);
        if j.verdict == Verdict::Hold {
            assert!(!j.done && j.findings.is_empty(), "{j:?}");
        }
        for f in j.findings {
            use fw_daemon::inspect::Finding::*;
            if let Identified { flow, .. } | Violation { flow, .. } = f {
                // At most one verdict per TCP flow (a UDP flow is judged per datagram), as
                // long as no flow had to be dropped to keep within max_flows (an evicted
                // flow's later packets start it afresh).
                if flow.proto == 6 && decided.insert(flow, ()).is_some() {
                    assert!(seen.len() > max_flows, "two verdicts for {flow:?}");
                }
            }
        }
        let _ = insp.expire(i64::MAX);
        let _ = insp.take_dropped();
        assert!(insp.flows() <= max_flows);
    }
});
