//! Benchmark (any user): the console with 100,000 flows.
//!
//! Fills the console's `App` with 100,000 flow rows (2,000 containers, every verdict) and
//! measures, in this process, with ratatui's `TestBackend`:
//! - one frame of the Flows screen at 200x50 and 80x24 (and the other screens at 200x50),
//!   scrolling through the table between frames;
//! - applying a delta of 1,000 changed and 100 removed rows to the sorted, filtered view
//!   (the work done per daemon update, 1/s by default), sorted by last seen and by rate;
//! - a full re-sort (`s`), and filter edits: each key typed after `/` (a bare word, then
//!   key:value words), and each Backspace deleting them again;
//! - the Drops screen's regrouping.
//!
//! Prints p50 / p99 / max per measurement. The budget is 16 ms per frame.
//!
//! Run: cargo run --release -p fw-bench --bin console_frame [ITERATIONS]

use std::time::{Duration, Instant};

use fw_proto::control::{Direction, FlowRow, FlowVerdict, Proto};
use fw_tui::console::app::{App, Msg};
use fw_tui::console::testdata::{self, NOW_MS};
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::KeyCode;
use ratatui::Terminal;

const FLOWS: u64 = 100_000;
const CONTAINERS: u64 = 2_000;

fn row(id: u64, t: i64) -> FlowRow {
    let c = id % CONTAINERS;
    let zone = ["web", "api", "db", "cache", "batch"][(c % 5) as usize];
    let verdict = match id % 50 {
        0..=39 => FlowVerdict::Allowed,
        40..=45 => FlowVerdict::Denied,
        46 | 47 => FlowVerdict::AuditDenied,
        48 => FlowVerdict::CapHit,
        _ => FlowVerdict::Blocked,
    };
    let dst = format!("10.{}.{}.{}", 100 + id % 50, (id / 256) % 256, id % 256);
    let mut r = testdata::flow(
        id,
        &format!("{zone}-{c}"),
        &dst,
        [443, 5432, 53, 80, 6379][(id % 5) as usize],
        verdict,
    );
    r.zone = zone.into();
    r.proto = if id % 7 == 0 { Proto::Udp } else { Proto::Tcp };
    r.direction = if id % 9 == 0 { Direction::Ingress } else { Direction::Egress };
    r.peer = (id % 3 == 0).then(|| format!("db-{}", id % 97));
    r.peer_zone = r.peer.as_ref().map(|_| "db".to_string());
    r.last_seen_ms = t - (id as i64 * 7919) % 120_000;
    r.rate_in = (id * 2654435761) % 1_000_000;
    r
}

fn stats(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let pick = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "{name:<44} p50 {:>9.3} ms   p99 {:>9.3} ms   max {:>9.3} ms   (n={})",
        pick(0.5).as_secs_f64() * 1e3,
        pick(0.99).as_secs_f64() * 1e3,
        v[v.len() - 1].as_secs_f64() * 1e3,
        v.len()
    );
}

fn frames(app: &mut App, w: u16, h: u16, n: usize) -> Vec<Duration> {
    app.update(Msg::Resize(w, h));
    let mut term = Terminal::new(TestBackend::new(w, h)).expect("test terminal");
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        // Scroll between frames: a page down every tenth frame, else one row.
        app.press(if i % 10 == 0 { KeyCode::PageDown } else { KeyCode::Down });
        let t = Instant::now();
        term.draw(|f| app.set_layout(fw_tui::console::ui::draw(f, app))).expect("draw");
        out.push(t.elapsed());
    }
    out
}

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(300);
    let mut app = App::new("/run/fw/fw.sock", NOW_MS, true);
    app.update(Msg::Connected(fw_tui::client::Hello {
        protocol: 1,
        daemon: "bench".into(),
        role: fw_proto::control::Role::Operator,
        user: "bench".into(),
    }));
    let rows: Vec<FlowRow> = (1..=FLOWS).map(|id| row(id, NOW_MS)).collect();
    let t = Instant::now();
    app.update(Msg::Flows {
        changed: rows,
        removed: vec![],
        total: FLOWS as usize,
        lost_events: 0,
        full: true,
    });
    println!("console with {FLOWS} flows, {CONTAINERS} containers; {n} iterations per measurement");
    println!("{:<44} {:>9.3} ms", "full snapshot (index + sort)", t.elapsed().as_secs_f64() * 1e3);

    stats("frame Flows 200x50", frames(&mut app, 200, 50, n));
    stats("frame Flows 80x24", frames(&mut app, 80, 24, n));
    for (key, name) in [('2', "Drops & alerts"), ('3', "Containers"), ('5', "Audit")] {
        app.press(KeyCode::Char(key));
        stats(&format!("frame {name} 200x50"), frames(&mut app, 200, 50, n));
    }
    app.press(KeyCode::Char('1'));

    for (sort_presses, name) in [(0, "last seen"), (10, "rate")] {
        for _ in 0..sort_presses {
            app.press(KeyCode::Char('s'));
        }
        let mut v = Vec::with_capacity(n);
        for i in 0..n as u64 {
            let base = (i * 7919) % (FLOWS - 1_100);
            let changed: Vec<FlowRow> =
                (base..base + 1_000).map(|id| row(id + 1, NOW_MS + 1000 * (i as i64 + 1))).collect();
            let removed: Vec<u64> = (base + 1_000..base + 1_100).map(|id| id + 1).collect();
            let re_add: Vec<FlowRow> = removed.iter().map(|&id| row(id, NOW_MS)).collect();
            let t = Instant::now();
            app.update(Msg::Flows { changed, removed, total: FLOWS as usize, lost_events: 0, full: false });
            v.push(t.elapsed());
            app.update(Msg::Flows {
                changed: re_add,
                removed: vec![],
                total: FLOWS as usize,
                lost_events: 0,
                full: false,
            });
        }
        stats(&format!("delta 1000 changed + 100 removed, by {name}"), v);
    }

    let mut v = Vec::new();
    for _ in 0..n.min(50) {
        let t = Instant::now();
        app.press(KeyCode::Char('S'));
        v.push(t.elapsed());
    }
    stats("re-sort 100k rows (S)", v);

    // Typing a filter: each key after `/` (a bare word, then key:value words: each typed
    // character narrows the filter, except where a word's text turns into a key); then
    // deleting it again with Backspace (every key widens the filter: a full re-filter).
    // At 100,000 rows a key only records the text; the filter applies once typing pauses
    // (`apply_due_filter`, FILTER_IDLE after the last key): both are timed, the second as
    // if the typist paused after every key.
    let later = || Instant::now() + fw_tui::console::app::FILTER_IDLE;
    let mut keys = Vec::new();
    for (text, name) in [("web-1", "bare word"), ("zone:web verdict:deny 10.1", "key:value words")] {
        let (mut typed, mut erased) = (Vec::new(), Vec::new());
        for _ in 0..n.min(20) {
            app.press(KeyCode::Char('/'));
            for c in text.chars() {
                let t = Instant::now();
                app.press(KeyCode::Char(c));
                keys.push(t.elapsed());
                let t = Instant::now();
                app.apply_due_filter(later());
                typed.push(t.elapsed());
            }
            for _ in text.chars() {
                let t = Instant::now();
                app.press(KeyCode::Backspace);
                keys.push(t.elapsed());
                let t = Instant::now();
                app.apply_due_filter(later());
                erased.push(t.elapsed());
            }
            app.press(KeyCode::Esc);
        }
        stats(&format!("filter applied, typing {text:?} ({name}, narrowing)"), typed);
        stats(&format!("filter applied, Backspace over {text:?} (full re-filter)"), erased);
    }
    stats("filter key itself (applies on a pause)", keys);
    app.press(KeyCode::Char('2'));
    let mut v = Vec::new();
    for _ in 0..n.min(50) {
        let t = Instant::now();
        app.rebuild_drops();
        v.push(t.elapsed());
    }
    stats("drops regroup 100k (20k denied rows)", v);
    // A daemon update while screen 2 shows: when it touches no denied row there is nothing
    // to regroup; else the delta plus a regroup.
    for (allowed_only, name) in [(true, "allowed rows only"), (false, "mixed verdicts")] {
        let mut v = Vec::with_capacity(n);
        for i in 0..n.min(50) as u64 {
            let base = (i * 7919) % (FLOWS - 1_100);
            let changed: Vec<FlowRow> = (base..base + 1_000)
                .map(|id| row(id + 1, NOW_MS + 1000 * (i as i64 + 1)))
                .filter(|r| !allowed_only || r.verdict == FlowVerdict::Allowed)
                .collect();
            let t = Instant::now();
            app.update(Msg::Flows {
                changed,
                removed: vec![],
                total: FLOWS as usize,
                lost_events: 0,
                full: false,
            });
            v.push(t.elapsed());
        }
        stats(&format!("update on screen 2, 1000 changed, {name}"), v);
    }
}
