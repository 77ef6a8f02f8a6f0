//! Inspection engine benchmarks (fw_daemon::inspect), on real captures (fw-daemon's
//! src/inspect/testdata: openssl TLS 1.3 / 1.2 / IDN ClientHellos, a curl request, a dig query
//! and a CNAME + 2 A answer):
//!
//! - `inspect_sni/ours` vs `inspect_sni/tls-parser`: SNI of the same three ClientHellos, by our
//!   extractor and by tls-parser's full parse (records, handshake, then extensions);
//! - `inspect_host/ours`: Host of the curl request; `inspect_dns/ours`: query and answer;
//! - `inspect_flow/tls`: the whole Inspector path for one new TLS flow (SYN, ClientHello
//!   segment, verdict, forget) with a 2-entry allow-list.
//!
//! Before the runs it prints the state bytes per inspected flow (table slot + order entry +
//! heap, measured over 10,000 flows that have sent their SYN and wait for data).
//!
//! Run: cargo bench -p fw-bench --bench inspect [-- FILTER]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use fw_daemon::inspect::{dns, http, tls, Inspector};
use fw_daemon::rules::model::{AppProto, Inspect, OnViolation};
use tls_parser::{parse_tls_extensions, parse_tls_plaintext, TlsExtension, TlsMessage, TlsMessageHandshake};

const HELLOS: [&[u8]; 3] = [
    include_bytes!("../../fw-daemon/src/inspect/testdata/clienthello-tls13-api.example.com.bin"),
    include_bytes!("../../fw-daemon/src/inspect/testdata/clienthello-tls12-api.example.com.bin"),
    include_bytes!("../../fw-daemon/src/inspect/testdata/clienthello-idn.bin"),
];
const HTTP_REQ: &[u8] =
    include_bytes!("../../fw-daemon/src/inspect/testdata/http-request-api.example.com.bin");
const DNS_QUERY: &[u8] = include_bytes!("../../fw-daemon/src/inspect/testdata/dns-query-api.example.com.bin");
const DNS_ANSWER: &[u8] =
    include_bytes!("../../fw-daemon/src/inspect/testdata/dns-answer-api.example.com.bin");

/// tls-parser's way: parse the record and handshake fully, then the extension list.
fn sni_tls_parser(data: &[u8]) -> Option<&[u8]> {
    let (_, rec) = parse_tls_plaintext(data).ok()?;
    for msg in rec.msg {
        if let TlsMessage::Handshake(TlsMessageHandshake::ClientHello(ch)) = msg {
            let (_, exts) = parse_tls_extensions(ch.ext?).ok()?;
            for e in exts {
                if let TlsExtension::SNI(list) = e {
                    return list.first().map(|(_, name)| *name);
                }
            }
        }
    }
    None
}

fn policy() -> Inspect {
    Inspect {
        protocol: Some(AppProto::Tls),
        tls_sni: vec!["*.example.com".into(), "bücher.example".into()],
        http_host: vec![],
        dns_names: vec![],
        on_violation: OnViolation::Alert,
        max_packets: 6,
        timeout_ms: 2000,
        fail: None,
    }
}

fn ipv4_tcp(sport: u16, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 2, 192, 0, 2, 1];
    p[2..4].copy_from_slice(&((40 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&443u16.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    p.extend_from_slice(payload);
    p
}

/// Bytes per inspected flow: 10,000 flows past their SYN, waiting for the ClientHello.
fn report_state() {
    let pol = policy();
    let n = 10_000u32;
    let mut insp = Inspector::new(n as usize);
    for i in 0..n {
        let syn = ipv4_tcp(10_000 + (i % 50_000) as u16, i, 0x02, &[]);
        let mut syn = syn;
        syn[12..16].copy_from_slice(&(0x0a00_0000 + i).to_be_bytes());
        insp.packet(&syn, &pol, 0);
    }
    assert_eq!(insp.flows(), n as usize);
    println!(
        "inspect state: {} bytes per inspected flow ({} flows, {} bytes in all; fixed slot {} bytes; \
         reassembly buffer, only while a message spans segments, at most {} more)",
        insp.memory_bytes() / n as usize,
        n,
        insp.memory_bytes(),
        Inspector::flow_slot_bytes(),
        fw_daemon::inspect::reasm::MAX_BYTES
    );
    for h in HELLOS {
        assert_eq!(tls::sni(h).as_deref(), sni_tls_parser(h), "both parsers agree");
    }
}

fn benches(c: &mut Criterion) {
    let total: u64 = HELLOS.iter().map(|h| h.len() as u64).sum();
    let mut g = c.benchmark_group("inspect_sni");
    g.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Bytes(total));
    g.bench_function("ours", |b| {
        b.iter(|| {
            for h in HELLOS {
                black_box(tls::sni(black_box(h)));
            }
        })
    });
    g.bench_function("tls-parser", |b| {
        b.iter(|| {
            for h in HELLOS {
                black_box(sni_tls_parser(black_box(h)));
            }
        })
    });
    g.finish();

    let mut g = c.benchmark_group("inspect_host");
    g.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Bytes(HTTP_REQ.len() as u64));
    g.bench_function("ours", |b| b.iter(|| black_box(http::parse_request(black_box(HTTP_REQ)))));
    g.finish();

    let mut g = c.benchmark_group("inspect_dns");
    g.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Bytes((DNS_QUERY.len() + DNS_ANSWER.len()) as u64));
    g.bench_function("ours", |b| {
        b.iter(|| {
            black_box(dns::parse_message(black_box(DNS_QUERY)));
            black_box(dns::parse_message(black_box(DNS_ANSWER)));
        })
    });
    g.finish();

    let pol = policy();
    let syn = ipv4_tcp(40000, 99, 0x02, &[]);
    let data = ipv4_tcp(40000, 100, 0x18, HELLOS[0]);
    let key = fw_daemon::inspect::FlowKey {
        proto: 6,
        src: "10.0.0.2".parse().unwrap(),
        sport: 40000,
        dst: "192.0.2.1".parse().unwrap(),
        dport: 443,
    };
    let mut insp = Inspector::new(1024);
    let mut g = c.benchmark_group("inspect_flow");
    g.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(1));
    g.bench_function("tls", |b| {
        b.iter(|| {
            insp.packet(black_box(&syn), &pol, 0);
            let f = insp.packet(black_box(&data), &pol, 0);
            insp.forget(&key);
            black_box(f)
        })
    });
    g.finish();
}

fn main() {
    report_state();
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
}
