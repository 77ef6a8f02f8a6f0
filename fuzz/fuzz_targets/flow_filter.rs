//! The flow filter language (`fw_proto::filter`: the console's `/`, `fw-tui flows --filter`,
//! the daemon's subscriptions) over arbitrary text: an error or a filter, never a panic; a
//! filter's canonical form parses back to the same filter, and matching never panics.
#![no_main]
use fw_proto::control::{Direction, FlowRow, FlowVerdict, Inspection, Proto};
use fw_proto::filter::Filter;
use libfuzzer_sys::fuzz_target;

fn row(v6: bool) -> FlowRow {
    FlowRow {
        id: 1,
        container: "web-1".into(),
        zone: "web".into(),
        direction: if v6 { Direction::Ingress } else { Direction::Egress },
        proto: if v6 { Proto::Udp } else { Proto::Tcp },
        src: if v6 { "fd00::2".parse().unwrap() } else { "10.1.0.2".parse().unwrap() },
        sport: 40000,
        dst: if v6 { "fd00::9".parse().unwrap() } else { "10.1.0.3".parse().unwrap() },
        dport: 5432,
        peer: Some("Ünïcode-db".into()),
        peer_zone: Some("db".into()),
        state: "ESTABLISHED".into(),
        bytes_out: 0,
        bytes_in: 0,
        packets_out: 0,
        packets_in: 0,
        rate_out: 0,
        rate_in: 0,
        first_seen_ms: 0,
        last_seen_ms: 0,
        verdict: FlowVerdict::Denied,
        rule: None,
        count: 1,
        open: true,
        inspection: Some(Inspection {
            protocol: Some("tls".into()),
            name: Some("api.example.com".into()),
            raw_name: Some("API.Example.COM.".into()),
            violation: None,
        }),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(f) = Filter::parse(text) else { return };
    let again = Filter::parse(&f.to_string());
    assert_eq!(again.as_ref(), Ok(&f), "{text:?} -> {f}");
    for v6 in [false, true] {
        let r = row(v6);
        let hay = fw_proto::filter::haystack(&r);
        assert_eq!(f.matches(&r), f.matches_row(&r, || hay.as_str()), "{text:?}");
    }
    let _ = f.matches_fields(Some("web-1"), None, &["quarantined"]);
});
