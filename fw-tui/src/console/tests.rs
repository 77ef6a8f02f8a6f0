//! Console tests: the state machine driven by keys and daemon messages with a fixed clock,
//! and every screen rendered into ratatui's `TestBackend` (text snapshots, colour-free).

use fw_proto::control::{
    Answer, BlockDirection, BlockTarget, ErrorCode, Event, FlowVerdict, Op, Proto, Role, Scope,
};
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEvent, MouseEventKind};
use ratatui::style::Color;
use ratatui::Terminal;

use super::app::{App, Col, Command, Conn, DialogKind, Msg, Screen};
use super::testdata::{self, NOW_MS};
use super::ui;
use crate::client::Hello;

fn hello(role: Role) -> Hello {
    Hello { protocol: 1, daemon: "0.1.0".into(), role, user: "alice".into() }
}

fn full(rows: Vec<fw_proto::control::FlowRow>) -> Msg {
    let total = rows.len();
    Msg::Flows { changed: rows, removed: vec![], total, lost_events: 0, full: true }
}

/// A connected operator console with the test data loaded.
fn app_as(role: Role) -> App {
    let mut a = App::new("/run/fw/fw.sock", NOW_MS, true);
    a.update(Msg::Connected(hello(role)));
    a.update(Msg::Status(testdata::status()));
    a.update(Msg::Blocks(testdata::blocks()));
    a.update(Msg::Alerts(testdata::alerts()));
    a.update(Msg::Audit(testdata::audit()));
    a.update(full(testdata::flows()));
    a
}

fn app() -> App {
    app_as(Role::Operator)
}

fn draw(app: &mut App, w: u16, h: u16) -> Terminal<TestBackend> {
    app.update(Msg::Resize(w, h));
    let mut t = Terminal::new(TestBackend::new(w, h)).expect("test terminal");
    t.draw(|f| ui::draw(f, app)).expect("draw");
    t
}

fn text(t: &Terminal<TestBackend>) -> String {
    let b = t.backend().buffer();
    let mut s = String::new();
    for y in 0..b.area.height {
        for x in 0..b.area.width {
            s.push_str(b[(x, y)].symbol());
        }
        s.push('\n');
    }
    s
}

/// Snapshots `app` at 80x24 and 160x40.
fn snap(name: &str, app: &mut App) {
    for (w, h) in [(80, 24), (160, 40)] {
        let t = draw(app, w, h);
        insta::assert_snapshot!(format!("{name}_{w}x{h}"), text(&t));
    }
}

fn ctrl(c: char) -> Msg {
    Msg::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL))
}

#[test]
fn every_screen_renders() {
    let mut a = app();
    snap("flows", &mut a);
    a.press(KeyCode::Char('2'));
    snap("drops", &mut a);
    a.press(KeyCode::Char('3'));
    snap("containers", &mut a);
    a.press(KeyCode::Char('4'));
    snap("rules", &mut a);
    a.press(KeyCode::Char('5'));
    snap("audit", &mut a);
}

#[test]
fn rules_show_a_rejected_reload_with_positions() {
    let mut a = app();
    let mut s = testdata::status();
    s.last_reload_errors = vec![
        "/etc/fw/rules/20-policies.toml:14:9: error: unknown zone \"dbb\"".into(),
        "/etc/fw/rules/10-zones.toml:3:1: error: duplicate zone \"web\"".into(),
    ];
    s.last_reload_at_ms = Some(NOW_MS - 30_000);
    a.update(Msg::Status(s));
    a.press(KeyCode::Char('4'));
    let t = text(&draw(&mut a, 80, 24));
    assert!(t.contains("20-policies.toml:14:9: error: unknown zone"), "{t}");
    assert!(t.contains("REJECTED 30s ago (2 errors)"), "{t}");
    assert!(t.contains("RELOAD REJECTED"), "status bar says so too:\n{t}");
    snap("rules_rejected", &mut a);
}

/// The status bar says when open flows were dropped at the table's cap, and when the audit
/// trail or the inventory is broken.
#[test]
fn the_status_bar_shows_dropped_flows_and_a_broken_trail() {
    let mut a = app();
    let t = text(&draw(&mut a, 200, 24));
    assert!(!t.contains("open dropped") && !t.contains("AUDIT"), "{t}");
    let mut s = testdata::status();
    s.flows_dropped_open = 306_000;
    s.audit = Some(fw_proto::control::AuditStatus {
        path: "/var/log/fw/audit.jsonl".into(),
        broken_since_ms: Some(NOW_MS - 5_000),
        error: Some("Read-only file system (os error 30)".into()),
        lost: 0,
    });
    s.inventory_errors = vec!["/etc/fw/inventory.toml:1:13: error: unclosed array table".into()];
    a.update(Msg::Status(s));
    let t = text(&draw(&mut a, 200, 24));
    assert!(t.contains("306000 open dropped (table full)"), "{t}");
    assert!(t.contains("AUDIT BROKEN") && t.contains("INVENTORY REJECTED"), "{t}");
}

#[test]
fn details_dialogs_and_help_render() {
    let mut a = app();
    a.press(KeyCode::Enter);
    assert!(a.details);
    snap("details_flow", &mut a);
    a.press(KeyCode::Esc);
    assert!(!a.details);

    a.press(KeyCode::Char('b'));
    snap("dialog_block", &mut a);
    a.press(KeyCode::Esc);

    a.press(KeyCode::Char('B'));
    snap("dialog_quarantine", &mut a);
    a.press(KeyCode::Esc);

    a.press(KeyCode::Char('3'));
    a.press(KeyCode::Home);
    // api-1 is first by name and quarantined (block 3).
    a.press(KeyCode::Char('u'));
    snap("dialog_unblock", &mut a);
    a.press(KeyCode::Esc);
    a.press(KeyCode::Enter);
    snap("details_container", &mut a);
    a.press(KeyCode::Esc);

    a.press(KeyCode::Char('?'));
    snap("help", &mut a);
}

#[test]
fn empty_and_disconnected_states() {
    let mut a = App::new("/run/fw/fw.sock", NOW_MS, true);
    a.update(Msg::Connected(hello(Role::Operator)));
    a.update(full(vec![]));
    snap("empty", &mut a);

    let mut a = App::new("/run/fw/fw.sock", NOW_MS, true);
    a.update(Msg::Connecting {
        attempt: 3,
        error: "cannot reach fw-daemon at /run/fw/fw.sock: is it running?".into(),
    });
    snap("disconnected", &mut a);
}

#[test]
fn losing_the_daemon_and_reconnecting_is_said() {
    let mut a = app();
    a.update(Msg::Connecting {
        attempt: 1,
        error: "fw-daemon at /run/fw/fw.sock closed the connection".into(),
    });
    assert!(matches!(a.conn, Conn::Connecting { attempt: 1, .. }));
    let t = text(&draw(&mut a, 80, 24));
    assert!(t.contains("disconnected, retry 1"), "{t}");
    assert!(t.contains("lost fw-daemon"), "{t}");
    assert!(t.contains("web-1"), "old rows stay visible while reconnecting:\n{t}");
    let cmds = a.update(Msg::Connected(hello(Role::Operator)));
    assert!(cmds.contains(&Command::Request(Op::Audit { since: None, since_ms: None, limit: Some(500) })));
    let t = text(&draw(&mut a, 80, 24));
    assert!(t.contains("reconnected to fw-daemon 0.1.0 as alice"), "{t}");
    assert!(t.contains("● connected"), "{t}");
}

#[test]
fn filter_entry_is_live_persistent_and_reports_errors() {
    let mut a = app();
    assert_eq!(a.view.len(), 9);
    a.press(KeyCode::Char('/'));
    a.type_str("verdict:deny");
    assert_eq!(a.view.len(), 2, "applies while typing");
    a.type_str(" !web-2");
    assert_eq!(a.view.len(), 1);
    a.press(KeyCode::Enter);
    assert!(a.editing.is_none());
    assert_eq!(a.filter_text, "verdict:deny !web-2");
    let t = text(&draw(&mut a, 80, 24));
    assert!(t.contains("filter: verdict:deny !web-2"), "{t}");
    // Persistent across screens: Drops groups use it too, containers by name.
    a.press(KeyCode::Char('2'));
    assert_eq!(a.drops.len(), 1);
    assert_eq!(a.flows[&a.drops[0].flow].container, "web-1");
    a.press(KeyCode::Char('3'));
    assert_eq!(a.containers_view.len(), 3, "web-2 is filtered out");
    // A bad word keeps the last good filter and shows why.
    a.press(KeyCode::Char('/'));
    a.type_str(" port:http");
    assert!(a.filter_error.as_deref().is_some_and(|e| e.contains("a port is a number")));
    let t = text(&draw(&mut a, 80, 24));
    assert!(t.contains("a port is a number"), "{t}");
    // Esc while editing restores the filter from before `/`.
    a.press(KeyCode::Esc);
    assert_eq!(a.filter_text, "verdict:deny !web-2");
    assert!(a.filter_error.is_none());
    assert_eq!(a.containers_view.len(), 3);
    // Esc outside editing clears it.
    a.press(KeyCode::Char('1'));
    a.press(KeyCode::Esc);
    assert_eq!(a.view.len(), 9);
    // Ctrl-U clears while editing.
    a.press(KeyCode::Char('/'));
    a.type_str("zone:db");
    assert_eq!(a.view.len(), 3, "the peer's zone matches too");
    a.update(ctrl('u'));
    assert_eq!(a.view.len(), 9);
}

#[test]
fn sort_cycles_columns_and_reverses() {
    let mut a = app();
    assert_eq!(a.sort, Col::Seen);
    let first = |a: &App| a.flows[&a.view[0]].clone();
    // Newest first by default.
    assert!(a.view.windows(2).all(|w| a.flows[&w[0]].last_seen_ms >= a.flows[&w[1]].last_seen_ms));
    a.press(KeyCode::Char('s'));
    assert_eq!(a.sort, Col::Container);
    assert_eq!(first(&a).container, "api-1");
    a.press(KeyCode::Char('S'));
    assert!(a.reverse);
    assert_eq!(first(&a).container, "web-2");
    for _ in 0..9 {
        a.press(KeyCode::Char('s'));
    }
    assert_eq!(a.sort, Col::Rate);
    a.press(KeyCode::Char('S'));
    assert_eq!(first(&a).id, 7, "the biggest rate first");
    let t = text(&draw(&mut a, 80, 24));
    assert!(t.contains("sort rate↓") && t.contains("RATE↓"), "{t}");
}

#[test]
fn deltas_patch_the_sorted_view_like_a_rebuild() {
    let mut a = app();
    for col in [Col::Seen, Col::Container, Col::Rate, Col::Dst] {
        a.sort = col;
        a.rebuild_view();
        let mut changed = testdata::flow(3, "web-1", "198.51.100.9", 443, FlowVerdict::Denied);
        changed.last_seen_ms = NOW_MS + 5000;
        changed.count = 40;
        let new = testdata::flow(42, "zz-9", "10.1.0.9", 22, FlowVerdict::Allowed);
        a.update(Msg::Flows {
            changed: vec![changed, new],
            removed: vec![1, 999],
            total: 9,
            lost_events: 2,
            full: false,
        });
        let patched = a.view.clone();
        a.rebuild_view();
        assert_eq!(patched, a.view, "{col:?}");
        assert!(!a.flows.contains_key(&1));
        assert_eq!(a.lost_events, 2);
        a.update(full(testdata::flows()));
    }
}

#[test]
fn pause_holds_updates_and_resume_applies_them() {
    let mut a = app();
    a.press(KeyCode::Char('p'));
    assert!(a.paused);
    a.update(Msg::Flows { changed: vec![], removed: vec![1, 2], total: 7, lost_events: 0, full: false });
    assert_eq!(a.view.len(), 9, "frozen");
    assert_eq!(a.total, 7, "counts still move");
    let t = text(&draw(&mut a, 80, 24));
    assert!(t.contains("PAUSED (2 held)"), "{t}");
    // Held deltas fold: a row removed then seen again is a change, not a removal.
    let back = a.flows[&1].clone();
    a.update(Msg::Flows { changed: vec![back], removed: vec![], total: 8, lost_events: 0, full: false });
    assert_eq!(a.held.len(), 2);
    a.press(KeyCode::Char('p'));
    assert!(!a.paused);
    assert_eq!(a.view.len(), 8);
    assert!(a.flows.contains_key(&1) && !a.flows.contains_key(&2));
    // A full view while paused replaces everything on resume.
    a.press(KeyCode::Char('p'));
    a.update(Msg::Flows { changed: vec![], removed: vec![3], total: 7, lost_events: 0, full: false });
    a.update(full(testdata::flows()[..2].to_vec()));
    a.press(KeyCode::Char('p'));
    assert_eq!(a.view.len(), 2);
}

#[test]
fn selection_follows_the_row_unless_following() {
    let mut a = app();
    a.press(KeyCode::Down);
    a.press(KeyCode::Down);
    assert!(!a.follow);
    let id = a.view[a.selected()];
    // A newer row arrives at the top: the selection stays on the same flow.
    let mut r = testdata::flow(50, "web-1", "10.1.0.50", 80, FlowVerdict::Allowed);
    r.last_seen_ms = NOW_MS + 1000;
    a.update(Msg::Flows {
        changed: vec![r.clone()],
        removed: vec![],
        total: 10,
        lost_events: 0,
        full: false,
    });
    assert_eq!(a.view[a.selected()], id);
    a.press(KeyCode::Char('f'));
    assert!(a.follow);
    r.last_seen_ms += 1000;
    r.id = 51;
    a.update(Msg::Flows { changed: vec![r], removed: vec![], total: 11, lost_events: 0, full: false });
    assert_eq!((a.selected(), a.view[0]), (0, 51));
    a.press(KeyCode::End);
    assert_eq!(a.selected(), 10);
}

#[test]
fn block_confirm_sends_the_destination_of_the_selected_flow() {
    let mut a = app();
    a.press(KeyCode::Char('/'));
    a.type_str("api.example");
    a.press(KeyCode::Enter);
    assert_eq!(a.view, [2]);
    assert!(a.press(KeyCode::Char('b')).is_empty());
    let Some(d) = &a.dialog else { panic!("no dialog") };
    assert!(matches!(d.kind, DialogKind::Block { .. }));
    assert_eq!(d.ttl, "", "the CLI's default: until unblocked");
    // TTL: clear and type 2h; Tab to the reason.
    a.update(ctrl('u'));
    a.type_str("2h");
    a.press(KeyCode::Tab);
    a.type_str("exfil to api");
    let cmds = a.press(KeyCode::Enter);
    assert_eq!(
        cmds,
        [Command::Request(Op::Block {
            target: BlockTarget::Destination {
                scope: Scope::Container("web-1".into()),
                net: "203.0.113.7/32".parse().unwrap(),
                proto: Some(Proto::Tcp),
                port: Some(443),
            },
            ttl_secs: Some(7200),
            ttl_ms: None,
            reason: Some("exfil to api".into()),
        })]
    );
    assert!(a.dialog.is_none());
    assert!(a.pending.is_some());
    // The daemon's answer is shown, and the row turns blocked with the next delta.
    let block = testdata::destination_block(9, "web-1");
    a.update(Msg::Done { op: "block", result: Ok(Answer::Blocked { block }) });
    assert!(a.pending.is_none());
    let t = text(&draw(&mut a, 160, 40));
    assert!(
        t.contains("block 9 placed: destination 198.51.100.9/32 tcp port 443 for container web-1"),
        "{t}"
    );
    let mut r = a.flows[&2].clone();
    r.verdict = FlowVerdict::Blocked;
    a.update(Msg::Flows { changed: vec![r], removed: vec![], total: 9, lost_events: 0, full: false });
    let t = text(&draw(&mut a, 80, 24));
    assert!(t.contains("blocked"), "{t}");
}

#[test]
fn a_bad_ttl_keeps_the_dialog_open_and_errors_are_shown() {
    let mut a = app();
    a.press(KeyCode::Char('B'));
    a.press(KeyCode::Right);
    let Some(DialogKind::Quarantine { direction, .. }) = a.dialog.as_ref().map(|d| d.kind.clone()) else {
        panic!("{:?}", a.dialog)
    };
    assert_eq!(direction, BlockDirection::Both, "Right moves the direction only when it has focus");
    a.press(KeyCode::BackTab); // to direction
    a.press(KeyCode::Right);
    a.press(KeyCode::Tab); // to ttl
    a.update(ctrl('u'));
    a.type_str("soon");
    assert!(a.press(KeyCode::Enter).is_empty());
    let err = a.dialog.as_ref().and_then(|d| d.error.clone()).unwrap_or_default();
    assert!(err.contains("invalid duration"), "{err}");
    a.update(ctrl('u'));
    let cmds = a.press(KeyCode::Enter);
    assert_eq!(
        cmds,
        [Command::Request(Op::Block {
            target: BlockTarget::Quarantine { container: "api-1".into(), direction: BlockDirection::Egress },
            ttl_secs: None,
            ttl_ms: None,
            reason: None,
        })]
    );
    a.update(Msg::Done {
        op: "block",
        result: Err(format!("{}: web-1 is already quarantined", ErrorCode::Conflict)),
    });
    let t = text(&draw(&mut a, 80, 24));
    assert!(t.contains("block failed: conflict: web-1 is already quarantined"), "{t}");
}

#[test]
fn unblock_lifts_a_block_of_the_selected_container() {
    let mut a = app();
    a.update(Msg::Blocks(vec![testdata::blocks()[0].clone(), testdata::destination_block(9, "api-1")]));
    a.press(KeyCode::Char('/'));
    a.type_str("c:api-1 verdict:cap");
    a.press(KeyCode::Enter);
    a.press(KeyCode::Char('u'));
    let Some(DialogKind::Unblock { candidates, index: 0 }) = a.dialog.as_ref().map(|d| d.kind.clone()) else {
        panic!("{:?}", a.dialog)
    };
    assert_eq!(candidates.iter().map(|b| b.id).collect::<Vec<_>>(), [9, 3], "newest first");
    a.press(KeyCode::Right);
    assert_eq!(a.press(KeyCode::Enter), [Command::Request(Op::Unblock { block: 3 })]);
    // Nothing to lift on web-1.
    a.press(KeyCode::Esc);
    a.press(KeyCode::Char('/'));
    a.type_str("c:web-1");
    a.press(KeyCode::Enter);
    a.press(KeyCode::Char('u'));
    assert!(a.dialog.is_none());
    assert!(a.note.as_ref().is_some_and(|n| n.text.contains("no active block applies to web-1")));
}

#[test]
fn a_viewer_sees_blocking_disabled_with_the_reason() {
    let mut a = app_as(Role::Viewer);
    for k in ['b', 'B', 'u'] {
        assert!(a.press(KeyCode::Char(k)).is_empty());
        assert!(a.dialog.is_none(), "{k}");
        let note = a.note.clone().unwrap_or_else(|| panic!("{k}: no note"));
        assert!(note.error && note.text.contains("needs the operator role (you are a viewer)"), "{note:?}");
    }
    a.press(KeyCode::Char('?'));
    let t = text(&draw(&mut a, 80, 24));
    assert!(t.contains("disabled: needs the operator role (you are a viewer)"), "{t}");
    assert!(t.contains("quarantine the selected container (off)"), "{t}");
    assert!(t.contains("viewer (read-only)"), "{t}");
    a.press(KeyCode::Char('x'));
    assert!(!a.help, "any key closes the help");
    snap("viewer_help", &mut {
        let mut b = app_as(Role::Viewer);
        b.press(KeyCode::Char('?'));
        b
    });
}

#[test]
fn screens_switch_with_tab_numbers_and_clicks() {
    let mut a = app();
    a.press(KeyCode::Tab);
    assert_eq!(a.screen, Screen::Drops);
    a.press(KeyCode::BackTab);
    a.press(KeyCode::BackTab);
    assert_eq!(a.screen, Screen::Audit);
    assert_eq!(
        a.press(KeyCode::Char('5')),
        [Command::Request(Op::Audit { since: None, since_ms: None, limit: Some(500) })],
        "the audit screen fetches the trail"
    );
    a.press(KeyCode::Char('1'));
    let click = |column, row| {
        Msg::Mouse(MouseEvent {
            kind: MouseEventKind::Down(MouseButton::Left),
            column,
            row,
            modifiers: KeyModifiers::NONE,
        })
    };
    a.update(click(14, 0));
    assert_eq!(a.screen, Screen::Drops);
    a.update(click(2, 0));
    assert_eq!(a.screen, Screen::Drops, "the fw label is no tab");
    a.press(KeyCode::Char('1'));
    a.update(Msg::Resize(80, 24));
    a.update(click(10, 5));
    assert_eq!(a.selected(), 3, "row 2 is the first data row");
    a.update(Msg::Mouse(MouseEvent {
        kind: MouseEventKind::ScrollDown,
        column: 0,
        row: 5,
        modifiers: KeyModifiers::NONE,
    }));
    assert_eq!(a.selected(), 6);
    assert_eq!(a.press(KeyCode::Char('q')), [Command::Quit]);
    assert_eq!(a.update(ctrl('c')), [Command::Quit]);
}

#[test]
fn scrolling_keeps_the_selection_visible() {
    let mut a = app();
    let rows: Vec<_> =
        (1..=200).map(|i| testdata::flow(i, "web-1", "10.1.0.9", 80, FlowVerdict::Allowed)).collect();
    a.update(full(rows));
    a.update(Msg::Resize(80, 24));
    let page = a.page();
    assert_eq!(page, 20);
    a.press(KeyCode::PageDown);
    a.press(KeyCode::PageDown);
    assert_eq!(a.selected(), 40);
    let t = text(&draw(&mut a, 80, 24));
    let sel = a.flows[&a.view[40]].clone();
    assert!(t.contains(&format!("{}:{}", sel.dst, sel.dport)), "{t}");
    assert!(a.offset[0] <= 40 && 40 < a.offset[0] + page);
}

#[test]
fn alerts_merge_newest_first_and_containers_sample_throughput() {
    let mut a = app();
    let mut al = testdata::alerts()[1].clone();
    al.id = 10;
    al.message = "later".into();
    a.update(Msg::Alert(al));
    a.update(Msg::Alerts(testdata::alerts()));
    assert_eq!(a.alerts.iter().map(|x| x.id).collect::<Vec<_>>(), [10, 3, 2, 1]);
    let h = a.history.get("web-1").cloned().unwrap_or_default();
    assert_eq!(h.len(), 1);
    assert_eq!(h[0], a.usage["web-1"].rate);
    assert_eq!(ui::spark(&[0, 1, 2, 4, 8], 4), "▁▂▄█");
    assert_eq!(ui::spark(&[0, 0], 8), "▁▁");
}

#[test]
fn verdicts_have_their_own_styles_and_no_color_removes_colour() {
    let mut a = app();
    a.press(KeyCode::Char('/'));
    a.type_str("c:web-1");
    a.press(KeyCode::Enter);
    let t = draw(&mut a, 160, 40);
    let b = t.backend().buffer().clone();
    let style_of = |needle: &str| {
        for y in 0..b.area.height {
            let line: String = (0..b.area.width).map(|x| b[(x, y)].symbol()).collect();
            if let Some(col) = line.find(needle) {
                let x = line[..col].chars().count() as u16;
                return b[(x, y)].style();
            }
        }
        panic!("{needle} not drawn")
    };
    let allowed = style_of("allowed");
    let denied = style_of("denied");
    assert_eq!(allowed.fg, Some(Color::Green));
    assert_eq!(denied.fg, Some(Color::Red));
    assert_ne!(allowed, denied);

    let mut a = app();
    a.color = false;
    a.press(KeyCode::Char('?'));
    for (w, h) in [(80, 24), (160, 40)] {
        for s in ['1', '2', '3', '4', '5'] {
            a.help = false;
            a.press(KeyCode::Char(s));
            let t = draw(&mut a, w, h);
            for cell in t.backend().buffer().content() {
                assert!(
                    matches!(cell.fg, Color::Reset) && matches!(cell.bg, Color::Reset),
                    "screen {s}: coloured cell {cell:?}"
                );
            }
        }
    }
}

#[test]
fn stale_rows_are_dimmed() {
    let mut a = app();
    let t = draw(&mut a, 160, 40);
    let b = t.backend().buffer();
    let row_of = |needle: &str| {
        (0..b.area.height)
            .find(|&y| (0..b.area.width).map(|x| b[(x, y)].symbol()).collect::<String>().contains(needle))
            .unwrap_or_else(|| panic!("{needle}"))
    };
    use ratatui::style::Modifier;
    let closed = row_of("fd00::9");
    assert!(b[(0, closed)].style().add_modifier.contains(Modifier::DIM));
    let fresh = row_of("api.example.com");
    assert!(!b[(0, fresh)].style().add_modifier.contains(Modifier::DIM));
}

#[test]
fn connection_thread_subscribes_polls_and_sends_blocks() {
    use crate::testserver::{event, ok, Out, TestServer};
    use std::time::Duration;
    let srv = TestServer::start(|req| match &req.op {
        Op::Subscribe { alerts: true, .. } => vec![
            ok(req.id, Answer::Subscribed { sub: 4 }),
            event(
                4,
                Event::Flows {
                    changed: testdata::flows(),
                    removed: vec![],
                    total: 9,
                    lost_events: 0,
                    full: true,
                },
            ),
        ],
        Op::Alerts { .. } => vec![ok(req.id, Answer::Alerts { alerts: testdata::alerts() })],
        Op::Status => vec![ok(req.id, Answer::Status(testdata::status()))],
        Op::Blocks => vec![ok(req.id, Answer::Blocks { blocks: testdata::blocks() })],
        Op::Block { .. } => {
            vec![ok(req.id, Answer::Blocked { block: testdata::destination_block(9, "web-1") })]
        }
        Op::Unblock { .. } => {
            vec![
                crate::testserver::error(Some(req.id), ErrorCode::NotFound, "no block 77"),
                Out::Sleep(Duration::ZERO),
            ]
        }
        _ => vec![],
    });
    let (tx, rx) = std::sync::mpsc::channel();
    let (cmd, handle) = super::conn::spawn(
        super::conn::ConnOptions {
            socket: srv.path.clone(),
            interval_ms: 500,
            poll: Duration::from_secs(60),
            timeout: Duration::from_secs(5),
        },
        tx,
    );
    let mut a = App::new("test", NOW_MS, false);
    let recv = |a: &mut App, want: &dyn Fn(&Msg) -> bool| loop {
        let m = rx.recv_timeout(Duration::from_secs(10)).expect("a message from the connection thread");
        let hit = want(&m);
        a.update(m);
        if hit {
            return;
        }
    };
    // Status and blocks are polled before the buffered first event is read.
    recv(&mut a, &|m| matches!(m, Msg::Flows { full: true, .. }));
    assert!(a.connected() && a.status.is_some() && a.alerts.len() == 3 && a.view.len() == 9);
    let target = BlockTarget::Quarantine { container: "web-1".into(), direction: BlockDirection::Both };
    cmd.send(Command::Request(Op::Block { target, ttl_secs: Some(60), ttl_ms: None, reason: None })).unwrap();
    recv(&mut a, &|m| matches!(m, Msg::Done { op: "block", result: Ok(_) }));
    assert!(a.note.as_ref().is_some_and(|n| n.text.starts_with("block 9 placed")), "{:?}", a.note);
    // After an action, status and blocks are fetched again.
    recv(&mut a, &|m| matches!(m, Msg::Blocks(_)));
    cmd.send(Command::Request(Op::Unblock { block: 77 })).unwrap();
    recv(&mut a, &|m| matches!(m, Msg::Done { op: "unblock", .. }));
    assert!(a.note.as_ref().is_some_and(|n| n.error && n.text == "unblock failed: not-found: no block 77"));
    cmd.send(Command::Quit).unwrap();
    handle.join().unwrap();
    let ops: Vec<&'static str> = srv.received().iter().map(|r| r.op.name()).collect();
    assert_eq!(&ops[..5], ["hello", "subscribe", "alerts", "status", "blocks"]);
    assert!(ops.contains(&"block") && ops.contains(&"unblock"));
}

#[test]
fn connection_thread_retries_with_backoff() {
    use std::time::Duration;
    assert_eq!(super::conn::backoff(1), Duration::from_millis(250));
    assert_eq!(super::conn::backoff(3), Duration::from_millis(1000));
    assert_eq!(super::conn::backoff(30), Duration::from_millis(5000));
    let dir = crate::testserver::TempDir::new();
    let (tx, rx) = std::sync::mpsc::channel();
    let (cmd, handle) = super::conn::spawn(
        super::conn::ConnOptions {
            socket: dir.path().join("none.sock"),
            interval_ms: 500,
            poll: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
        },
        tx,
    );
    for want in 1..=2 {
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Msg::Connecting { attempt, error }) => {
                assert_eq!(attempt, want);
                assert!(error.contains("is it running?"), "{error}");
            }
            other => panic!("{other:?}"),
        }
    }
    cmd.send(Command::Request(Op::Unblock { block: 1 })).unwrap();
    match rx.recv_timeout(Duration::from_secs(5)) {
        Ok(Msg::Done { op: "unblock", result: Err(e) }) => assert_eq!(e, "not connected to fw-daemon"),
        other => panic!("{other:?}"),
    }
    cmd.send(Command::Quit).unwrap();
    handle.join().unwrap();
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    /// Whatever deltas arrive, under any sort and filter, the patched view equals a rebuild.
    #[test]
    fn random_deltas_keep_the_view_equal_to_a_rebuild(
        sort in 0usize..14,
        reverse in proptest::bool::ANY,
        filter in proptest::sample::select(vec!["", "verdict:deny", "!web-1", "port:443", "zone:db 10.1."]),
        deltas in proptest::collection::vec(
            (proptest::collection::vec((1u64..60, 0i64..100_000, 0u64..5000, 0usize..5), 0..20),
             proptest::collection::vec(1u64..60, 0..10)),
            1..8),
    ) {
        let mut a = app();
        a.sort = Col::ALL[sort];
        a.reverse = reverse;
        a.press(KeyCode::Char('/'));
        a.type_str(filter);
        a.press(KeyCode::Enter);
        a.rebuild_view();
        let verdicts = FlowVerdict::ALL;
        for (changed, removed) in deltas {
            let changed = changed
                .into_iter()
                .map(|(id, seen, rate, v)| {
                    let c = ["web-1", "web-2", "db-1"][(id % 3) as usize];
                    let mut r = testdata::flow(id, c, "10.1.0.9", [443, 53, 5432][(id % 3) as usize], verdicts[v]);
                    r.last_seen_ms = NOW_MS - seen;
                    r.rate_in = rate;
                    r
                })
                .collect();
            a.update(Msg::Flows { changed, removed, total: 0, lost_events: 0, full: false });
            let patched = a.view.clone();
            a.rebuild_view();
            proptest::prop_assert_eq!(&patched, &a.view);
            let usage: usize = a.usage.values().map(|u| u.flows).sum();
            proptest::prop_assert_eq!(usage, a.flows.len());
            // The incremental drop groups equal a regroup from scratch.
            a.rebuild_drops();
            let groups = a.drops.clone();
            a.update(full(a.flows.values().cloned().collect()));
            a.rebuild_drops();
            proptest::prop_assert_eq!(&groups, &a.drops);
        }
    }
}

/// Random flow rows for the filter properties: a few containers, zones, states, ports,
/// addresses, peers, rules and inspected names, so short typed words hit some rows.
fn random_rows(spec: &[(u8, u8, u8, u8, i64)]) -> Vec<fw_proto::control::FlowRow> {
    spec.iter()
        .enumerate()
        .map(|(i, &(c, z, p, v, seen))| {
            let id = i as u64 + 1;
            let container = ["web-1", "web-2", "db-1", "Cache-10", "api"][c as usize % 5];
            let dst = ["10.1.0.9", "10.2.3.4", "fd00::1", "192.168.1.10"][p as usize % 4];
            let port = [443, 53, 5432, 8080, 22][p as usize % 5];
            let mut r = testdata::flow(id, container, dst, port, FlowVerdict::ALL[v as usize % 5]);
            r.zone = ["web", "db", "cache"][z as usize % 3].into();
            r.state = ["established", "syn_sent", "close"][(c ^ z) as usize % 3].into();
            r.peer = (p % 3 == 0).then(|| format!("db-{}", z % 4));
            r.peer_zone = r.peer.as_ref().map(|_| "db".to_string());
            r.proto = [Proto::Tcp, Proto::Udp, Proto::Icmp, Proto::Other(132)][(p / 4) as usize % 4];
            r.sport = 40_000 + u16::from(p);
            r.last_seen_ms = NOW_MS - seen;
            r.rate_in = (id * 2_654_435_761) % 1000;
            if v % 4 == 0 {
                r.inspection = Some(fw_proto::control::Inspection {
                    protocol: Some("tls".into()),
                    name: Some(["API.example.com", "db.internal"][c as usize % 2].into()),
                    raw_name: None,
                    violation: None,
                });
            }
            r
        })
        .collect()
}

proptest::proptest! {
    /// Narrowing the view on a refined filter (one more character, one more word) gives
    /// exactly the view a full re-filter and re-sort gives, key after key, Backspace and
    /// Ctrl-U (never refinements) included; and a refinement's rows are among the old ones.
    #[test]
    fn narrowed_filter_view_equals_full_refilter(
        rows in proptest::collection::vec((0u8..5, 0u8..3, 0u8..16, 0u8..5, 0i64..100_000), 0..80),
        sort in 0usize..14,
        reverse in proptest::bool::ANY,
        keys in proptest::collection::vec(
            proptest::sample::select(vec![
                "w", "e", "b", "-", "1", "0", ".", ":", " ", "!", "d", "z", "o", "n", "c", "a", "t",
                "s", "p", "r", "v", "4", "3", "x", "zone:", "container:", "port:", "proto:", "state:",
                "name:", "rule:", "peer:", "verdict:", "BS", "BS", "BS", "CU",
            ]),
            0..30),
    ) {
        let rows = random_rows(&rows);
        let mut a = App::new("/run/fw/fw.sock", NOW_MS, true);
        a.update(full(rows.clone()));
        a.sort = Col::ALL[sort];
        a.reverse = reverse;
        a.rebuild_view();
        a.press(KeyCode::Char('/'));
        for k in keys {
            let before = a.view.clone();
            let old = a.filter.clone();
            match k {
                "BS" => {
                    a.press(KeyCode::Backspace);
                }
                "CU" => {
                    a.update(Msg::Key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL)));
                }
                s => {
                    a.type_str(s);
                }
            }
            if a.filter.refines(&old) {
                proptest::prop_assert!(a.view.iter().all(|id| before.contains(id)));
            }
            let mut fresh = App::new("/run/fw/fw.sock", NOW_MS, true);
            fresh.update(full(rows.clone()));
            fresh.sort = a.sort;
            fresh.reverse = a.reverse;
            fresh.filter = a.filter.clone();
            fresh.rebuild_view();
            proptest::prop_assert_eq!(&a.view, &fresh.view, "filter {:?}", a.filter_text);
            // The per-row haystack matches like the original field-by-field search.
            for r in &rows {
                proptest::prop_assert_eq!(
                    a.filter.matches_flow(r, &mut String::new()),
                    fresh.view.contains(&r.id)
                );
            }
        }
    }
}

/// From [`super::app::LIVE_FILTER_ROWS`] rows a typed filter waits for a pause in typing or
/// Enter; a parse error still shows at once.
#[test]
fn big_tables_apply_the_typed_filter_on_a_pause_or_enter() {
    use super::app::{FILTER_IDLE, LIVE_FILTER_ROWS};
    let rows: Vec<_> = (1..=LIVE_FILTER_ROWS as u64)
        .map(|id| {
            testdata::flow(id, ["web-1", "db-1"][id as usize % 2], "10.1.0.9", 443, FlowVerdict::Allowed)
        })
        .collect();
    let mut a = App::new("/run/fw/fw.sock", NOW_MS, true);
    a.update(full(rows));
    a.press(KeyCode::Char('/'));
    a.type_str("db");
    assert_eq!(a.filter_text, "db");
    assert_eq!(a.view.len(), LIVE_FILTER_ROWS, "not applied while typing");
    assert!(!a.apply_due_filter(std::time::Instant::now()), "not due before the pause");
    assert!(a.apply_due_filter(std::time::Instant::now() + FILTER_IDLE));
    assert_eq!(a.view.len(), LIVE_FILTER_ROWS / 2);
    a.type_str(" port:x");
    assert!(a.filter_error.as_deref().is_some_and(|e| e.contains("a port is a number")));
    assert!(a.filter_due.is_none());
    for _ in 0..7 {
        a.press(KeyCode::Backspace);
    }
    a.type_str("-");
    a.press(KeyCode::Enter);
    assert_eq!((a.filter_due, a.editing.as_deref(), a.view.len()), (None, None, LIVE_FILTER_ROWS / 2));
    a.press(KeyCode::Esc);
    assert_eq!((a.filter_text.as_str(), a.view.len()), ("", LIVE_FILTER_ROWS));
}

/// Screen 2 regroups only when a denied row comes, goes or changes, and what it shows always
/// equals a regroup from scratch.
#[test]
fn drops_regroup_only_when_denied_rows_change() {
    let mut a = app();
    a.press(KeyCode::Char('2'));
    let check = |a: &mut App| {
        let shown = a.drops.clone();
        a.rebuild_drops();
        assert_eq!(shown, a.drops);
    };
    let delta = |changed, removed| Msg::Flows { changed, removed, total: 0, lost_events: 0, full: false };
    // An allowed row changes: nothing to regroup.
    let mut r = testdata::flow(900, "web-1", "10.1.0.9", 443, FlowVerdict::Allowed);
    a.update(delta(vec![r.clone()], vec![]));
    check(&mut a);
    // It turns denied, its count grows, it turns allowed again, a denied row goes.
    r.verdict = FlowVerdict::Denied;
    a.update(delta(vec![r.clone()], vec![]));
    assert!(a.drops.iter().any(|g| g.flow == 900));
    check(&mut a);
    r.count += 5;
    a.update(delta(vec![r.clone()], vec![]));
    check(&mut a);
    r.verdict = FlowVerdict::Allowed;
    a.update(delta(vec![r], vec![]));
    assert!(!a.drops.iter().any(|g| g.flow == 900));
    check(&mut a);
    let gone = a.drops[0].flow;
    a.update(delta(vec![], vec![gone]));
    assert!(!a.drops.iter().any(|g| g.flow == gone));
    check(&mut a);
}
