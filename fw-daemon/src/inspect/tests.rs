//! Unit and property tests of the inspection engine. Fixtures in testdata/ are real captures:
//! `openssl s_client -servername api.example.com` (TLS 1.3 default and `-tls1_2`), `-noservername`,
//! `-servername xn--bcher-kva.example`, `curl` against a local listener, and `dig` for a
//! query plus a hand-built answer (CNAME + 2 A, compression pointers) that dig decodes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;
use crate::rules::model::OnViolation;

const HELLO13: &[u8] = include_bytes!("testdata/clienthello-tls13-api.example.com.bin");
const HELLO12: &[u8] = include_bytes!("testdata/clienthello-tls12-api.example.com.bin");
const HELLO_NOSNI: &[u8] = include_bytes!("testdata/clienthello-nosni.bin");
const HELLO_IDN: &[u8] = include_bytes!("testdata/clienthello-idn.bin");
const DNS_QUERY: &[u8] = include_bytes!("testdata/dns-query-api.example.com.bin");
const DNS_ANSWER: &[u8] = include_bytes!("testdata/dns-answer-api.example.com.bin");
const HTTP_REQ: &[u8] = include_bytes!("testdata/http-request-api.example.com.bin");

const C4: [u8; 4] = [10, 0, 0, 2];
const S4: [u8; 4] = [192, 0, 2, 1];

fn policy(protocol: Option<AppProto>, names: &[&str]) -> Inspect {
    let list: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let (mut t, mut h, mut d) = (vec![], vec![], vec![]);
    match protocol {
        Some(AppProto::Tls) => t = list,
        Some(AppProto::Http) => h = list,
        Some(AppProto::Dns) => d = list,
        None => {}
    }
    Inspect {
        protocol,
        tls_sni: t,
        http_host: h,
        dns_names: d,
        on_violation: OnViolation::Alert,
        max_packets: 6,
        timeout_ms: 2000,
        fail: None,
    }
}

fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0];
    p[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(l4);
    p
}

fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    p.extend_from_slice(&[proto, 64]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(l4);
    p
}

fn tcp_hdr(sport: u16, dport: u16, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(20 + payload.len());
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(payload);
    t
}

fn udp_hdr(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

const PSH_ACK: u8 = 0x18;
const ISN: u32 = 0xffff_fff0; // wraps inside the ClientHello: sequence arithmetic must cope

/// Client -> server segment at stream offset `off` (ISN + 1 + off).
fn c2s(off: usize, payload: &[u8]) -> Vec<u8> {
    ipv4(C4, S4, 6, &tcp_hdr(40000, 443, ISN.wrapping_add(1).wrapping_add(off as u32), PSH_ACK, payload))
}
fn syn() -> Vec<u8> {
    ipv4(C4, S4, 6, &tcp_hdr(40000, 443, ISN, 0x02, &[]))
}
fn key443() -> FlowKey {
    FlowKey {
        proto: 6,
        src: IpAddr::V4(Ipv4Addr::from(C4)),
        sport: 40000,
        dst: IpAddr::V4(Ipv4Addr::from(S4)),
        dport: 443,
    }
}

/// Feeds packets; returns every finding.
fn run(insp: &mut Inspector, pol: &Inspect, pkts: &[Vec<u8>]) -> Vec<Finding> {
    pkts.iter().flat_map(|p| insp.packet(p, pol, 0)).collect()
}

fn identified(name: &str) -> Finding {
    Finding::Identified { flow: key443(), protocol: AppProto::Tls, name: Some(name.into()), raw: None }
}

// ---- TLS parser ----

#[test]
fn sni_of_real_tls13_and_tls12_hellos() {
    assert_eq!(tls::sni(HELLO13).as_deref(), Some(&b"api.example.com"[..]));
    assert_eq!(tls::sni(HELLO12).as_deref(), Some(&b"api.example.com"[..]));
    assert_eq!(tls::sni(HELLO_IDN).as_deref(), Some(&b"xn--bcher-kva.example"[..]));
    assert_eq!(tls::parse_client_hello(HELLO_NOSNI), Parse::Done(tls::Hello::ClientHello { sni: None }));
}

#[test]
fn hello_spread_over_several_records_is_reassembled() {
    // Re-frame the handshake message of the real hello as records of 50 bytes.
    let hs = &HELLO13[5..];
    let mut framed = Vec::new();
    for chunk in hs.chunks(50) {
        framed.extend_from_slice(&[0x16, 3, 1]);
        framed.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        framed.extend_from_slice(chunk);
    }
    assert_eq!(tls::sni(&framed).as_deref(), Some(&b"api.example.com"[..]));
}

#[test]
fn non_tls_first_bytes_get_clear_reasons() {
    let r = |d: &[u8]| match tls::parse_client_hello(d) {
        Parse::Invalid(r) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(r(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"), "not TLS: SSH-2.0 banner");
    assert_eq!(r(b"GET / HTTP/1.1\r\n"), "not TLS: HTTP request");
    assert_eq!(r(b"\x00\x01\x02"), "not TLS: first bytes 00 01 02");
    // A TLS record that is a ServerHello, not a ClientHello.
    assert!(r(&[0x16, 3, 3, 0, 4, 2, 0, 0, 0]).contains("not a ClientHello"));
    assert_eq!(tls::parse_client_hello(&[0x16, 3]), Parse::NeedMore);
}

// ---- Inspector, TLS ----

#[test]
fn identifies_sni_within_policy_and_frees_state() {
    let pol = policy(Some(AppProto::Tls), &["api.example.com"]);
    let mut insp = Inspector::new(16);
    assert_eq!(run(&mut insp, &pol, &[syn()]), vec![]);
    assert_eq!(insp.flows(), 1);
    assert_eq!(run(&mut insp, &pol, &[c2s(0, HELLO13)]), vec![identified("api.example.com")]);
    assert_eq!(insp.flows(), 0, "state freed after the verdict");
    // Later packets of the flow, either direction, are ignored.
    let back = ipv4(S4, C4, 6, &tcp_hdr(443, 40000, 7, PSH_ACK, b"\x16\x03\x03\x00\x01\x02"));
    assert_eq!(run(&mut insp, &pol, &[c2s(HELLO13.len(), b"more"), back]), vec![]);
    assert_eq!(insp.flows(), 0);
    insp.forget(&key443());
    // After forget, the same 5-tuple is a new flow again.
    assert_eq!(run(&mut insp, &pol, &[syn(), c2s(0, HELLO12)]), vec![identified("api.example.com")]);
}

#[test]
fn sni_outside_the_list_is_a_violation() {
    let pol = policy(Some(AppProto::Tls), &["evil.example"]);
    let mut insp = Inspector::new(16);
    let f = run(&mut insp, &pol, &[syn(), c2s(0, HELLO13)]);
    assert_eq!(
        f,
        vec![Finding::Violation {
            flow: key443(),
            protocol: Some(AppProto::Tls),
            name: Some("api.example.com".into()),
            raw: None,
            reason: "SNI api.example.com not in tls_sni".into()
        }]
    );
}

#[test]
fn no_sni_is_a_violation_only_with_a_list() {
    let mut insp = Inspector::new(16);
    let f = run(&mut insp, &policy(Some(AppProto::Tls), &["api.example.com"]), &[syn(), c2s(0, HELLO_NOSNI)]);
    assert!(matches!(&f[..], [Finding::Violation { reason, name: None, .. }] if reason == "no SNI"), "{f:?}");
    let mut insp = Inspector::new(16);
    let f = run(&mut insp, &policy(Some(AppProto::Tls), &[]), &[syn(), c2s(0, HELLO_NOSNI)]);
    assert_eq!(
        f,
        vec![Finding::Identified { flow: key443(), protocol: AppProto::Tls, name: None, raw: None }]
    );
}

#[test]
fn ssh_on_443_is_a_violation() {
    let mut insp = Inspector::new(16);
    let f = run(
        &mut insp,
        &policy(Some(AppProto::Tls), &[]),
        &[syn(), c2s(0, b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")],
    );
    assert_eq!(
        f,
        vec![Finding::Violation {
            flow: key443(),
            protocol: None,
            name: None,
            raw: None,
            reason: "not TLS: SSH-2.0 banner".into()
        }]
    );
    // The server's banner before any client byte says the same.
    let mut insp = Inspector::new(16);
    let banner = ipv4(S4, C4, 6, &tcp_hdr(443, 40000, 1, PSH_ACK, b"SSH-2.0-OpenSSH_9.2\r\n"));
    let f = run(&mut insp, &policy(Some(AppProto::Tls), &[]), &[syn(), banner]);
    assert!(
        matches!(&f[..], [Finding::Violation { reason, .. }] if reason == "not TLS: server spoke first (SSH-2.0 banner)"),
        "{f:?}"
    );
}

#[test]
fn http_where_tls_is_required_names_http() {
    let mut insp = Inspector::new(16);
    let f = run(&mut insp, &policy(Some(AppProto::Tls), &[]), &[syn(), c2s(0, HTTP_REQ)]);
    assert!(
        matches!(&f[..], [Finding::Violation { protocol: Some(AppProto::Http), reason, .. }] if reason == "not TLS: HTTP request"),
        "{f:?}"
    );
}

#[test]
fn idna_and_wildcards_in_the_allow_list() {
    for (list, ok) in [
        (&["bücher.example"][..], true),
        (&["BÜCHER.example."][..], true),
        (&["*.example"][..], true),
        (&["*.bücher.example"][..], false),
        (&["xn--bcher-kva.example"][..], true),
        (&["bucher.example"][..], false),
    ] {
        let mut insp = Inspector::new(16);
        let pol = policy(Some(AppProto::Tls), list);
        let f = run(&mut insp, &pol, &[syn(), c2s(0, HELLO_IDN)]);
        assert_eq!(matches!(&f[..], [Finding::Identified { .. }]), ok, "{list:?}: {f:?}");
    }
    assert!(names::matches("*.example.org", "a.example.org"));
    assert!(names::matches("*.example.org", "a.b.example.org"));
    assert!(!names::matches("*.example.org", "example.org"));
    assert!(!names::matches("*.example.org", "aexample.org"));
    assert!(names::matches("api.example.com", &names::normalize(b"API.Example.COM.").unwrap()));
    assert_eq!(names::normalize("bücher.example".as_bytes()).unwrap(), "xn--bcher-kva.example");
    assert!(names::normalize(b"a..b").is_err());
    assert!(names::normalize(b"a\0b").is_err());
}

#[test]
fn hello_split_out_of_order_with_duplicates() {
    let pol = policy(Some(AppProto::Tls), &["*.example.com"]);
    let mut insp = Inspector::new(16);
    let (a, b, c) = (&HELLO13[..3], &HELLO13[3..100], &HELLO13[100..]);
    let pkts = [syn(), c2s(100, c), c2s(0, a), c2s(0, a), c2s(100, c), c2s(3, b)];
    let f = run(&mut insp, &pol, &pkts);
    assert_eq!(f, vec![identified("api.example.com")]);
}

#[test]
fn overlapping_retransmit_keeps_first_copy() {
    let pol = policy(Some(AppProto::Tls), &["api.example.com"]);
    let mut insp = Inspector::new(16);
    let f = run(
        &mut insp,
        &pol,
        &[syn(), c2s(0, &HELLO13[..50]), c2s(20, &HELLO13[20..200]), c2s(150, &HELLO13[150..])],
    );
    assert_eq!(f, vec![identified("api.example.com")]);
}

#[test]
fn without_syn_the_first_segment_starts_the_stream_and_the_server_side_orients() {
    let pol = policy(Some(AppProto::Tls), &["api.example.com"]);
    let mut insp = Inspector::new(16);
    // The server's ACK first (port 443 -> 40000): oriented towards the client anyway.
    let ack = ipv4(S4, C4, 6, &tcp_hdr(443, 40000, 5, 0x10, &[]));
    let f = run(&mut insp, &pol, &[ack, c2s(0, &HELLO13[..10]), c2s(10, &HELLO13[10..])]);
    assert_eq!(f, vec![identified("api.example.com")]);
}

#[test]
fn ipv6_flow_from_syn_ack() {
    let (c, s) = ("fd00::2".parse::<Ipv6Addr>().unwrap(), "fd00::1".parse::<Ipv6Addr>().unwrap());
    let pol = policy(Some(AppProto::Tls), &["api.example.com"]);
    let mut insp = Inspector::new(16);
    // Both ports high: the SYN+ACK says who started.
    let synack = ipv6(s, c, 6, &tcp_hdr(8443, 50000, 99, 0x12, &[]));
    let data = ipv6(c, s, 6, &tcp_hdr(50000, 8443, 1000, PSH_ACK, HELLO12));
    let f = run(&mut insp, &pol, &[synack, data]);
    let flow = FlowKey { proto: 6, src: IpAddr::V6(c), sport: 50000, dst: IpAddr::V6(s), dport: 8443 };
    assert_eq!(
        f,
        vec![Finding::Identified {
            flow,
            protocol: AppProto::Tls,
            name: Some("api.example.com".into()),
            raw: None
        }]
    );
}

#[test]
fn undecided_after_max_packets_and_reassembly_bound() {
    let mut pol = policy(Some(AppProto::Tls), &[]);
    pol.max_packets = 3;
    let mut insp = Inspector::new(16);
    let f =
        run(&mut insp, &pol, &[syn(), c2s(0, &HELLO13[..5]), c2s(5, &HELLO13[5..8]), c2s(8, &HELLO13[8..9])]);
    assert!(
        matches!(&f[..], [Finding::Violation { protocol: Some(AppProto::Tls), reason, .. }] if reason == "undecided after 3 packets"),
        "{f:?}"
    );
    assert_eq!(insp.flows(), 0);
    // A record claiming 16 KiB, sent in 1400-byte segments: the 4 KiB bound decides.
    pol.max_packets = 32;
    let mut big = vec![0x16, 3, 1, 0x40, 0x00, 1, 0, 0x3f, 0xfc, 3, 3];
    big.resize(9000, 0);
    let mut insp = Inspector::new(16);
    let pkts: Vec<_> = (0..6).map(|i| c2s(i * 1400, &big[i * 1400..(i + 1) * 1400])).collect();
    let f = run(&mut insp, &pol, &pkts);
    assert!(matches!(&f[..], [Finding::Violation { reason, .. }] if reason.contains("4096-byte")), "{f:?}");
}

#[test]
fn oldest_flow_is_evicted() {
    let pol = policy(Some(AppProto::Tls), &[]);
    let mut insp = Inspector::new(3);
    for port in 0..5u16 {
        let s = ipv4(C4, S4, 6, &tcp_hdr(40000 + port, 443, 1, 0x02, &[]));
        insp.packet(&s, &pol, 0);
    }
    assert_eq!(insp.flows(), 3);
    assert_eq!(insp.evicted(), 2);
    // Flow 0 was evicted: its hello starts a fresh flow (no SYN: stream starts at the segment).
    let d = ipv4(C4, S4, 6, &tcp_hdr(40000, 443, 2, PSH_ACK, HELLO13));
    assert_eq!(insp.packet(&d, &pol, 0).len(), 1);
}

#[test]
fn snap_truncated_hello_still_decides_when_sni_is_in() {
    let pol = policy(Some(AppProto::Tls), &["api.example.com"]);
    let mut insp = Inspector::new(16);
    // The SNI of openssl's hello ends at byte 168 of 321: snap the packet at 40 + 170.
    let full = c2s(0, HELLO13);
    let f = run(&mut insp, &pol, &[syn(), full[..210].to_vec()]);
    assert_eq!(f, vec![identified("api.example.com")]);
}

#[test]
fn per_flow_state_is_under_1kb() {
    let pol = policy(Some(AppProto::Tls), &[]);
    let mut insp = Inspector::new(10_000);
    for i in 0..1000u16 {
        insp.packet(&ipv4(C4, S4, 6, &tcp_hdr(10000 + i, 443, 1, 0x02, &[])), &pol, 0);
    }
    let per_flow = insp.memory_bytes() / 1000;
    assert!(per_flow < 1024, "{per_flow} bytes per flow");
    assert!(Inspector::flow_slot_bytes() < 300, "{}", Inspector::flow_slot_bytes());
}

// ---- HTTP ----

fn http_host(d: &[u8]) -> Parse<Option<Vec<u8>>> {
    http::parse_request(d).map(|r| r.host)
}

#[test]
fn http_host_forms() {
    let some = |s: &str| Parse::Done(Some(s.as_bytes().to_vec()));
    assert_eq!(http_host(HTTP_REQ), some("api.example.com"));
    assert_eq!(http_host(b"GET / HTTP/1.1\r\nhOsT:  [2001:db8::1]:8080 \r\n"), some("2001:db8::1"));
    assert_eq!(http_host(b"GET / HTTP/1.1\nX: y\nHost: a.example\n"), some("a.example"));
    assert_eq!(
        http_host(b"GET http://u:p@b.example:81/x HTTP/1.1\r\nHost: a.example\r\n"),
        some("b.example")
    );
    assert_eq!(http_host(b"CONNECT c.example:443 HTTP/1.1\r\n"), some("c.example"));
    assert_eq!(http_host(b"GET / HTTP/1.0\r\nAccept: */*\r\n\r\n"), Parse::Done(None));
    assert_eq!(http_host(b"GET / HTTP/1.1\r\nHo"), Parse::NeedMore);
    assert_eq!(http_host(b"GE"), Parse::NeedMore);
    assert!(matches!(http_host(b"get / HTTP/1.1\r\n"), Parse::Invalid(_)));
    assert!(matches!(http_host(b"GET / HTTP/2.0\r\n"), Parse::Invalid(_)));
    assert!(matches!(http_host(b"GET / HTTP/1.1\r\n folded\r\n"), Parse::Invalid(_)));
    assert!(matches!(http_host(b"SSH-2.0-x\r\n"), Parse::Invalid(r) if r == "not HTTP: SSH-2.0 banner"));
}

fn c2s80(off: usize, payload: &[u8]) -> Vec<u8> {
    ipv4(C4, S4, 6, &tcp_hdr(40000, 80, 1000 + off as u32, PSH_ACK, payload))
}

#[test]
fn http_host_split_across_segments() {
    let pol = policy(Some(AppProto::Http), &["*.example.com"]);
    let flow = FlowKey { dport: 80, ..key443() };
    // Split inside "Host: api.exa|mple.com:59665", the second half first.
    let cut = HTTP_REQ.windows(3).position(|w| w == b"exa").unwrap() + 3;
    let mut insp = Inspector::new(16);
    let f = run(&mut insp, &pol, &[c2s80(0, &HTTP_REQ[..cut]), c2s80(cut, &HTTP_REQ[cut..])]);
    assert_eq!(
        f,
        vec![Finding::Identified {
            flow,
            protocol: AppProto::Http,
            name: Some("api.example.com".into()),
            raw: None
        }]
    );
    let mut insp = Inspector::new(16);
    let pol = policy(Some(AppProto::Http), &["other.example"]);
    let f = run(&mut insp, &pol, &[c2s80(0, &HTTP_REQ[..cut]), c2s80(cut, &HTTP_REQ[cut..])]);
    assert!(
        matches!(&f[..], [Finding::Violation { reason, .. }] if reason == "Host api.example.com not in http_host")
    );
    let mut insp = Inspector::new(16);
    let f = run(&mut insp, &pol, &[c2s80(0, HELLO13)]);
    assert!(
        matches!(&f[..], [Finding::Violation { reason, protocol: Some(AppProto::Tls), .. }] if reason == "not HTTP: TLS handshake"),
        "{f:?}"
    );
}

// ---- DNS ----

fn udp_q(payload: &[u8]) -> Vec<u8> {
    ipv4(C4, S4, 17, &udp_hdr(53000, 53, payload))
}
fn udp_a(payload: &[u8]) -> Vec<u8> {
    ipv4(S4, C4, 17, &udp_hdr(53, 53000, payload))
}

#[test]
fn dns_query_and_answer_with_pointers() {
    let q = match dns::parse_message(DNS_QUERY) {
        Parse::Done(m) => m,
        o => panic!("{o:?}"),
    };
    assert_eq!((q.qname.as_str(), q.response, q.qtype), ("api.example.com", false, 1));
    let a = match dns::parse_message(DNS_ANSWER) {
        Parse::Done(m) => m,
        o => panic!("{o:?}"),
    };
    assert!(a.response);
    let want: Vec<IpAddr> = vec!["192.0.2.10".parse().unwrap(), "192.0.2.11".parse().unwrap()];
    assert_eq!(a.addrs, want);

    let pol = policy(Some(AppProto::Dns), &["*.example.com"]);
    let flow = FlowKey { proto: 17, sport: 53000, dport: 53, ..key443() };
    let mut insp = Inspector::new(16);
    let f = run(&mut insp, &pol, &[udp_q(DNS_QUERY)]);
    assert_eq!(
        f,
        vec![Finding::Identified {
            flow,
            protocol: AppProto::Dns,
            name: Some("api.example.com".into()),
            raw: None
        }]
    );
    assert_eq!(insp.flows(), 1, "kept for its answer");
    let f = run(&mut insp, &pol, &[udp_a(DNS_ANSWER)]);
    assert_eq!(f, vec![Finding::DnsAnswer { flow, name: "api.example.com".into(), addrs: want }]);
    // A UDP flow is never decided as a whole: every later query on it is judged too (an
    // allowed first query must not open the socket for anything after it).
    let j = insp.judge(&udp_q(DNS_QUERY), None, &pol, 0);
    assert_eq!((j.verdict, j.done, j.findings.len()), (Verdict::Accept, false, 1));
    let strict = policy(Some(AppProto::Dns), &["other.example"]);
    let j = insp.judge(&udp_q(DNS_QUERY), None, &strict, 0);
    assert_eq!((j.verdict, j.done), (Verdict::Violation, false), "{j:?}");
    insp.forget(&flow);
    assert_eq!(insp.flows(), 0, "freed when conntrack forgets the flow");

    let pol = policy(Some(AppProto::Dns), &["other.example"]);
    let mut insp = Inspector::new(16);
    // (Under `alert` a violating query goes on, and its answer is still learnt.)
    let f = run(&mut insp, &pol, &[udp_q(DNS_QUERY), udp_a(DNS_ANSWER)]);
    assert!(
        matches!(&f[..], [Finding::Violation { reason, .. }, Finding::DnsAnswer { .. }] if reason == "DNS name api.example.com not in dns_names"),
        "{f:?}"
    );
}

#[test]
fn dns_over_tcp_with_length_prefix() {
    let mut stream = (DNS_QUERY.len() as u16).to_be_bytes().to_vec();
    stream.extend_from_slice(DNS_QUERY);
    let pol = policy(Some(AppProto::Dns), &["api.example.com"]);
    let mut insp = Inspector::new(16);
    let pk = |off: usize, d: &[u8]| ipv4(C4, S4, 6, &tcp_hdr(40000, 53, 1 + off as u32, PSH_ACK, d));
    let f = run(&mut insp, &pol, &[pk(0, &stream[..1]), pk(1, &stream[1..20]), pk(20, &stream[20..])]);
    assert!(matches!(&f[..], [Finding::Identified { protocol: AppProto::Dns, .. }]), "{f:?}");
}

#[test]
fn dns_pointer_loops_and_forward_pointers_are_refused() {
    let hdr = [0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    // Name at 12 pointing to itself.
    let mut m = hdr.to_vec();
    m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    assert!(matches!(dns::parse_message(&m), Parse::Invalid(r) if r.contains("loop")));
    // Two labels pointing at each other: a at 12 -> 18, b at 18 -> 12.
    let mut m = hdr.to_vec();
    m.extend_from_slice(&[1, b'a', 0xc0, 18, 0, 1, 1, b'b', 0xc0, 12]);
    assert!(matches!(dns::parse_message(&m), Parse::Invalid(_)));
    // A name longer than 255 bytes.
    let mut m = hdr.to_vec();
    for _ in 0..5 {
        m.push(63);
        m.extend_from_slice(&[b'x'; 63]);
    }
    m.extend_from_slice(&[0, 0, 1, 0, 1]);
    assert!(matches!(dns::parse_message(&m), Parse::Invalid(r) if r.contains("255")));
    // Odd bytes in labels are escaped, so a dot inside a label is not a label boundary.
    let mut m = hdr.to_vec();
    m.extend_from_slice(&[3, b'a', b'.', b'B', 7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 0, 0, 1, 0, 1]);
    assert!(matches!(dns::parse_message(&m), Parse::Done(msg) if msg.qname == "a\\046b.example"));
}

#[test]
fn not_dns_on_a_dns_policy() {
    let pol = policy(Some(AppProto::Dns), &[]);
    let mut insp = Inspector::new(16);
    let f = run(&mut insp, &pol, &[udp_q(b"\x00\x01hello there, this is not dns")]);
    assert!(matches!(&f[..], [Finding::Violation { reason, .. }] if reason.starts_with("not DNS")), "{f:?}");
    // A response in the client's direction is not a query.
    let mut insp = Inspector::new(16);
    let f = run(&mut insp, &pol, &[ipv4(C4, S4, 17, &udp_hdr(53000, 5353, DNS_ANSWER))]);
    assert!(matches!(&f[..], [Finding::Violation { reason, .. }] if reason.contains("response")), "{f:?}");
}

// ---- properties ----

fn split_points(len: usize) -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(1..len, 0..6).prop_map(|mut v| {
        v.sort_unstable();
        v.dedup();
        v
    })
}

fn segments(data: &[u8], cuts: &[usize]) -> Vec<(usize, Vec<u8>)> {
    let mut out = Vec::new();
    let mut start = 0;
    for &c in cuts.iter().chain(std::iter::once(&data.len())) {
        out.push((start, data[start..c].to_vec()));
        start = c;
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any split of a real ClientHello into segments gives the same SNI as the whole.
    #[test]
    fn any_split_gives_the_same_sni(cuts in split_points(HELLO13.len()), which in 0..3usize) {
        let hello = [HELLO13, HELLO12, HELLO_IDN][which];
        let want = names::normalize(&tls::sni(hello).unwrap()).unwrap();
        let mut pol = policy(Some(AppProto::Tls), &[]);
        pol.max_packets = 32;
        let mut insp = Inspector::new(4);
        let mut pkts = vec![syn()];
        for (off, seg) in segments(hello, &cuts.iter().copied().filter(|&c| c < hello.len()).collect::<Vec<_>>()) {
            pkts.push(c2s(off, &seg));
        }
        let f = run(&mut insp, &pol, &pkts);
        prop_assert_eq!(f, vec![identified(&want)]);
    }

    /// Segments in any order, some repeated, give the same SNI.
    #[test]
    fn shuffled_and_duplicated_segments(cuts in split_points(HELLO13.len()), perm in any::<u64>(), dups in proptest::collection::vec(any::<prop::sample::Index>(), 0..4)) {
        let segs = segments(HELLO13, &cuts);
        let mut order: Vec<(usize, Vec<u8>)> = segs.clone();
        // A deterministic shuffle from `perm`.
        let mut x = perm | 1;
        for i in (1..order.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            order.swap(i, (x % (i as u64 + 1)) as usize);
        }
        for d in &dups {
            order.push(segs[d.index(segs.len())].clone());
        }
        let mut pol = policy(Some(AppProto::Tls), &["api.example.com"]);
        pol.max_packets = 32;
        let mut insp = Inspector::new(4);
        let mut pkts = vec![syn()];
        pkts.extend(order.iter().map(|(o, s)| c2s(*o, s)));
        let f = run(&mut insp, &pol, &pkts);
        prop_assert_eq!(f, vec![identified("api.example.com")]);
    }

    /// Truncated at every length: no panic, and never a name other than the real one.
    #[test]
    fn truncation_never_yields_a_wrong_name(which in 0..7usize) {
        let data = [HELLO13, HELLO12, HELLO_NOSNI, HELLO_IDN, HTTP_REQ, DNS_QUERY, DNS_ANSWER][which];
        let want = if which == 3 { "xn--bcher-kva.example" } else { "api.example.com" };
        for n in 0..=data.len() {
            let d = &data[..n];
            if let Parse::Done(tls::Hello::ClientHello { sni: Some(s) }) = tls::parse_client_hello(d) {
                prop_assert!(tls::sni(data).as_deref() == Some(&s[..]), "tls at {}", n);
            }
            if let Parse::Done(r) = http::parse_request(d) {
                prop_assert_eq!(r.host.as_deref(), Some(&b"api.example.com"[..]), "http at {}", n);
            }
            for m in [dns::parse_message(d), dns::parse_tcp(d)] {
                if let Parse::Done(m) = m {
                    prop_assert_eq!(m.qname.as_str(), "api.example.com", "dns at {}", n);
                }
            }
            // And as packets cut at every snap length.
            for pol in [policy(Some(AppProto::Tls), &[]), policy(Some(AppProto::Http), &[]), policy(Some(AppProto::Dns), &[])] {
                let mut insp = Inspector::new(4);
                let pkt = c2s(0, data);
                for f in insp.packet(&pkt[..n.min(pkt.len())], &pol, 0) {
                    if let Finding::Identified { name: Some(name), .. } = f {
                        prop_assert_eq!(name.as_str(), want);
                    }
                }
            }
        }
    }

    /// Arbitrary bytes never panic any parser, and arbitrary packet sequences never panic the
    /// Inspector nor grow it past its bounds.
    #[test]
    fn arbitrary_input_never_panics(data in proptest::collection::vec(any::<u8>(), 0..600), seqs in proptest::collection::vec((any::<u16>(), 0usize..64), 1..12)) {
        let _ = tls::parse_client_hello(&data);
        let _ = http::parse_request(&data);
        let _ = dns::parse_message(&data);
        let _ = dns::parse_tcp(&data);
        let _ = packet::parse(&data);
        let mut insp = Inspector::new(8);
        for pol in [policy(Some(AppProto::Tls), &["a.example"]), policy(None, &[]), policy(Some(AppProto::Dns), &["*.example"])] {
            for (off, len) in &seqs {
                let start = (*off as usize) % (data.len() + 1);
                let end = (start + len).min(data.len());
                let _ = insp.packet(&c2s(*off as usize, &data[start..end]), &pol, 0);
                let _ = insp.packet(&udp_q(&data[start..end]), &pol, 0);
                let _ = insp.packet(&data[start..end], &pol, 0);
            }
            prop_assert!(insp.flows() <= 8);
        }
    }
}
