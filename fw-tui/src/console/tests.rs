//! Console tests: the state machine driven by keys and daemon messages with a fixed clock,
//! and every screen rendered into ratatui's `TestBackend` (text snapshots, colour-free).

use fw_proto::control::{
    Answer, BlockDirection, BlockTarget, ErrorCode, Event, FlowVerdict, Op, Proto, Role, Scope,
};
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEvent, MouseEventKind};
use ratatui::style::Color;
use ratatui::Terminal;

use super::app::{App, Command, Msg, Overlay};
use super::dialog::DialogKind;
use super::model::Conn;
use super::screens::flows::Sort;
use super::screens::ScreenId as Screen;
use super::testdata::{self, NOW_MS};
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

/// Re-filters and re-sorts the Flows screen from scratch.
fn rebuild(a: &mut App) {
    let page = a.page();
    a.flows.rebuild(&a.model.flows, &a.filter.filter, page);
}

fn draw(app: &mut App, w: u16, h: u16) -> Terminal<TestBackend> {
    app.update(Msg::Resize(w, h));
    let mut t = Terminal::new(TestBackend::new(w, h)).expect("test terminal");
    t.draw(|f| app.set_layout(super::ui::draw(f, app))).expect("draw");
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

/// Snapshots `app` at 80x24, 120x30 and 160x45.
fn snap(name: &str, app: &mut App) {
    for (w, h) in [(80, 24), (120, 30), (160, 45)] {
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
        ..Default::default()
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
    assert_eq!(a.overlay, Overlay::Details);
    snap("details_flow", &mut a);
    a.press(KeyCode::Esc);
    assert_eq!(a.overlay, Overlay::None);

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
    assert!(matches!(a.model.conn, Conn::Connecting { attempt: 1, .. }));
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
    assert_eq!(a.flows.view.len(), 9);
    a.press(KeyCode::Char('/'));
    a.type_str("verdict:deny");
    assert_eq!(a.flows.view.len(), 2, "applies while typing");
    a.type_str(" !web-2");
    assert_eq!(a.flows.view.len(), 1);
    a.press(KeyCode::Enter);
    assert!(a.filter.editing.is_none());
    assert_eq!(a.filter.text, "verdict:deny !web-2");
    let t = text(&draw(&mut a, 80, 24));
    assert!(t.contains("filter: verdict:deny !web-2"), "{t}");
    // Persistent across screens: Drops groups use it too, containers by name.
    a.press(KeyCode::Char('2'));
    assert_eq!(a.drops.groups.len(), 1);
    assert_eq!(a.model.flows.rows[&a.drops.groups[0].flow].container, "web-1");
    a.press(KeyCode::Char('3'));
    assert_eq!(a.containers.view.len(), 3, "web-2 is filtered out");
    // A bad word keeps the last good filter and shows why.
    a.press(KeyCode::Char('/'));
    a.type_str(" port:http");
    assert!(a.filter.error.as_deref().is_some_and(|e| e.contains("a port is a number")));
    let t = text(&draw(&mut a, 80, 24));
    assert!(t.contains("a port is a number"), "{t}");
    // Esc while editing restores the filter from before `/`.
    a.press(KeyCode::Esc);
    assert_eq!(a.filter.text, "verdict:deny !web-2");
    assert!(a.filter.error.is_none());
    assert_eq!(a.containers.view.len(), 3);
    // Esc outside editing clears it.
    a.press(KeyCode::Char('1'));
    a.press(KeyCode::Esc);
    assert_eq!(a.flows.view.len(), 9);
    // Ctrl-U clears while editing.
    a.press(KeyCode::Char('/'));
    a.type_str("zone:db");
    assert_eq!(a.flows.view.len(), 3, "the peer's zone matches too");
    a.update(ctrl('u'));
    assert_eq!(a.flows.view.len(), 9);
}

#[test]
fn sort_cycles_columns_and_reverses() {
    let mut a = app();
    assert_eq!(a.flows.sort, Sort::Seen);
    let first = |a: &App| a.model.flows.rows[&a.flows.view[0]].clone();
    // Newest first by default.
    assert!(a
        .flows
        .view
        .windows(2)
        .all(|w| a.model.flows.rows[&w[0]].last_seen_ms >= a.model.flows.rows[&w[1]].last_seen_ms));
    a.press(KeyCode::Char('s'));
    assert_eq!(a.flows.sort, Sort::Container);
    assert_eq!(first(&a).container, "api-1");
    a.press(KeyCode::Char('S'));
    assert!(a.flows.reverse);
    assert_eq!(first(&a).container, "web-2");
    for _ in 0..9 {
        a.press(KeyCode::Char('s'));
    }
    assert_eq!(a.flows.sort, Sort::Rate);
    a.press(KeyCode::Char('S'));
    assert_eq!(first(&a).id, 7, "the biggest rate first");
    let t = text(&draw(&mut a, 80, 24));
    assert!(t.contains("sort rate↓") && t.contains("RATE↓"), "{t}");
}

#[test]
fn deltas_patch_the_sorted_view_like_a_rebuild() {
    let mut a = app();
    for col in [Sort::Seen, Sort::Container, Sort::Rate, Sort::Dst] {
        a.flows.sort = col;
        rebuild(&mut a);
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
        let patched = a.flows.view.clone();
        rebuild(&mut a);
        assert_eq!(patched, a.flows.view, "{col:?}");
        assert!(!a.model.flows.rows.contains_key(&1));
        assert_eq!(a.model.flows.lost_events, 2);
        a.update(full(testdata::flows()));
    }
}

#[test]
fn pause_holds_updates_and_resume_applies_them() {
    let mut a = app();
    a.press(KeyCode::Char('p'));
    assert!(a.paused);
    a.update(Msg::Flows { changed: vec![], removed: vec![1, 2], total: 7, lost_events: 0, full: false });
    assert_eq!(a.flows.view.len(), 9, "frozen");
    assert_eq!(a.model.flows.total, 7, "counts still move");
    let t = text(&draw(&mut a, 80, 24));
    assert!(t.contains("PAUSED (2 held)"), "{t}");
    // Held deltas fold: a row removed then seen again is a change, not a removal.
    let back = a.model.flows.rows[&1].clone();
    a.update(Msg::Flows { changed: vec![back], removed: vec![], total: 8, lost_events: 0, full: false });
    assert_eq!(a.held.len(), 2);
    a.press(KeyCode::Char('p'));
    assert!(!a.paused);
    assert_eq!(a.flows.view.len(), 8);
    assert!(a.model.flows.rows.contains_key(&1) && !a.model.flows.rows.contains_key(&2));
    // A full view while paused replaces everything on resume.
    a.press(KeyCode::Char('p'));
    a.update(Msg::Flows { changed: vec![], removed: vec![3], total: 7, lost_events: 0, full: false });
    a.update(full(testdata::flows()[..2].to_vec()));
    a.press(KeyCode::Char('p'));
    assert_eq!(a.flows.view.len(), 2);
}

#[test]
fn selection_follows_the_row_unless_following() {
    let mut a = app();
    a.press(KeyCode::Down);
    a.press(KeyCode::Down);
    assert!(!a.flows.follow);
    let id = a.flows.view[a.selected()];
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
    assert_eq!(a.flows.view[a.selected()], id);
    a.press(KeyCode::Char('f'));
    assert!(a.flows.follow);
    r.last_seen_ms += 1000;
    r.id = 51;
    a.update(Msg::Flows { changed: vec![r], removed: vec![], total: 11, lost_events: 0, full: false });
    assert_eq!((a.selected(), a.flows.view[0]), (0, 51));
    a.press(KeyCode::End);
    assert_eq!(a.selected(), 10);
}

#[test]
fn block_confirm_sends_the_destination_of_the_selected_flow() {
    let mut a = app();
    a.press(KeyCode::Char('/'));
    a.type_str("api.example");
    a.press(KeyCode::Enter);
    assert_eq!(a.flows.view, [2]);
    assert!(a.press(KeyCode::Char('b')).is_empty());
    let Some(d) = a.dialog() else { panic!("no dialog") };
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
    assert!(a.dialog().is_none());
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
    let mut r = a.model.flows.rows[&2].clone();
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
    let Some(DialogKind::Quarantine { direction, .. }) = a.dialog().map(|d| d.kind.clone()) else {
        panic!("{:?}", a.dialog())
    };
    assert_eq!(direction, BlockDirection::Both, "Right moves the direction only when it has focus");
    a.press(KeyCode::BackTab); // to direction
    a.press(KeyCode::Right);
    a.press(KeyCode::Tab); // to ttl
    a.update(ctrl('u'));
    a.type_str("soon");
    assert!(a.press(KeyCode::Enter).is_empty());
    let err = a.dialog().and_then(|d| d.error.clone()).unwrap_or_default();
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
    let Some(DialogKind::Unblock { candidates, index: 0 }) = a.dialog().map(|d| d.kind.clone()) else {
        panic!("{:?}", a.dialog())
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
    assert!(a.dialog().is_none());
    assert!(a.note.as_ref().is_some_and(|n| n.text.contains("no active block applies to web-1")));
}

#[test]
fn a_viewer_sees_blocking_disabled_with_the_reason() {
    let mut a = app_as(Role::Viewer);
    for k in ['b', 'B', 'u'] {
        assert!(a.press(KeyCode::Char(k)).is_empty());
        assert!(a.dialog().is_none(), "{k}");
        let note = a.note.clone().unwrap_or_else(|| panic!("{k}: no note"));
        assert!(note.error && note.text.contains("needs the operator role (you are a viewer)"), "{note:?}");
    }
    let t = text(&draw(&mut a, 80, 24));
    assert!(t.contains("viewer (read-only)"), "{t}");
    a.press(KeyCode::Char('?'));
    let t = text(&draw(&mut a, 80, 24));
    assert!(t.contains("disabled: needs the operator role (you are a viewer)"), "first: {t}");
    // The help scrolls on a small terminal: further down, each blocking key says it is off.
    for _ in 0..5 {
        a.press(KeyCode::Down);
    }
    let t = text(&draw(&mut a, 80, 24));
    assert!(t.contains("quarantine the selected container (off)"), "{t}");
    assert!(t.contains("Keys 6-27 of"), "{t}");
    a.press(KeyCode::Char('x'));
    assert_eq!(a.overlay, Overlay::None, "any other key closes the help");
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
    // Clicks resolve against what the last frame drew.
    draw(&mut a, 80, 24);
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
    // The selection stayed on flow 5 (it was selected before the new view): start at the top.
    assert_eq!(a.model.flows.rows[&a.flows.view[a.selected()]].id, 5);
    a.press(KeyCode::Home);
    a.press(KeyCode::PageDown);
    a.press(KeyCode::PageDown);
    assert_eq!(a.selected(), 40);
    let t = text(&draw(&mut a, 80, 24));
    let sel = a.model.flows.rows[&a.flows.view[40]].clone();
    assert!(t.contains(&format!("{}:{}", sel.dst, sel.dport)), "{t}");
    assert!(a.flows.list.offset <= 40 && 40 < a.flows.list.offset + page);
}

#[test]
fn alerts_merge_newest_first_and_containers_sample_throughput() {
    let mut a = app();
    let mut al = testdata::alerts()[1].clone();
    al.id = 10;
    al.message = "later".into();
    a.update(Msg::Alert(al));
    a.update(Msg::Alerts(testdata::alerts()));
    assert_eq!(a.model.alerts.iter().map(|x| x.id).collect::<Vec<_>>(), [10, 3, 2, 1]);
    let h = a.model.history.get("web-1").cloned().unwrap_or_default();
    assert_eq!(h.len(), 1);
    assert_eq!(h[0], a.model.flows.usage["web-1"].rate);
    assert_eq!(super::screens::containers::spark(&[0, 1, 2, 4, 8], 4), "▁▂▄█");
    assert_eq!(super::screens::containers::spark(&[0, 0], 8), "▁▁");
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
            a.overlay = Overlay::None;
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
    assert!(
        a.model.connected()
            && a.model.status.is_some()
            && a.model.alerts.len() == 3
            && a.flows.view.len() == 9
    );
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
        a.flows.sort = Sort::ALL[sort];
        a.flows.reverse = reverse;
        a.press(KeyCode::Char('/'));
        a.type_str(filter);
        a.press(KeyCode::Enter);
        rebuild(&mut a);
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
            let patched = a.flows.view.clone();
            rebuild(&mut a);
            proptest::prop_assert_eq!(&patched, &a.flows.view);
            let usage: usize = a.model.flows.usage.values().map(|u| u.flows).sum();
            proptest::prop_assert_eq!(usage, a.model.flows.rows.len());
            // The incremental drop groups equal a regroup from scratch.
            a.rebuild_drops();
            let groups = a.drops.groups.clone();
            a.update(full(a.model.flows.rows.values().cloned().collect()));
            a.rebuild_drops();
            proptest::prop_assert_eq!(&groups, &a.drops.groups);
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
        a.flows.sort = Sort::ALL[sort];
        a.flows.reverse = reverse;
        rebuild(&mut a);
        a.press(KeyCode::Char('/'));
        for k in keys {
            let before = a.flows.view.clone();
            let old = a.filter.filter.clone();
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
            if a.filter.filter.refines(&old) {
                proptest::prop_assert!(a.flows.view.iter().all(|id| before.contains(id)));
            }
            let mut fresh = App::new("/run/fw/fw.sock", NOW_MS, true);
            fresh.update(full(rows.clone()));
            fresh.flows.sort = a.flows.sort;
            fresh.flows.reverse = a.flows.reverse;
            fresh.filter.filter = a.filter.filter.clone();
            rebuild(&mut fresh);
            proptest::prop_assert_eq!(&a.flows.view, &fresh.flows.view, "filter {:?}", a.filter.text);
            // The per-row haystack matches like the original field-by-field search.
            for r in &rows {
                proptest::prop_assert_eq!(
                    a.filter.filter.matches(r),
                    fresh.flows.view.contains(&r.id)
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
    assert_eq!(a.filter.text, "db");
    assert_eq!(a.flows.view.len(), LIVE_FILTER_ROWS, "not applied while typing");
    assert!(!a.apply_due_filter(std::time::Instant::now()), "not due before the pause");
    assert!(a.apply_due_filter(std::time::Instant::now() + FILTER_IDLE));
    assert_eq!(a.flows.view.len(), LIVE_FILTER_ROWS / 2);
    a.type_str(" port:x");
    assert!(a.filter.error.as_deref().is_some_and(|e| e.contains("a port is a number")));
    assert!(a.filter.due.is_none());
    for _ in 0..7 {
        a.press(KeyCode::Backspace);
    }
    a.type_str("-");
    a.press(KeyCode::Enter);
    assert_eq!(
        (a.filter.due, a.filter.editing.as_deref(), a.flows.view.len()),
        (None, None, LIVE_FILTER_ROWS / 2)
    );
    a.press(KeyCode::Esc);
    assert_eq!((a.filter.text.as_str(), a.flows.view.len()), ("", LIVE_FILTER_ROWS));
}

/// Screen 2 regroups only when a denied row comes, goes or changes, and what it shows always
/// equals a regroup from scratch.
#[test]
fn drops_regroup_only_when_denied_rows_change() {
    let mut a = app();
    a.press(KeyCode::Char('2'));
    let check = |a: &mut App| {
        let shown = a.drops.groups.clone();
        a.rebuild_drops();
        assert_eq!(shown, a.drops.groups);
    };
    let delta = |changed, removed| Msg::Flows { changed, removed, total: 0, lost_events: 0, full: false };
    // An allowed row changes: nothing to regroup.
    let mut r = testdata::flow(900, "web-1", "10.1.0.9", 443, FlowVerdict::Allowed);
    a.update(delta(vec![r.clone()], vec![]));
    check(&mut a);
    // It turns denied, its count grows, it turns allowed again, a denied row goes.
    r.verdict = FlowVerdict::Denied;
    a.update(delta(vec![r.clone()], vec![]));
    assert!(a.drops.groups.iter().any(|g| g.flow == 900));
    check(&mut a);
    r.count += 5;
    a.update(delta(vec![r.clone()], vec![]));
    check(&mut a);
    r.verdict = FlowVerdict::Allowed;
    a.update(delta(vec![r], vec![]));
    assert!(!a.drops.groups.iter().any(|g| g.flow == 900));
    check(&mut a);
    let gone = a.drops.groups[0].flow;
    a.update(delta(vec![], vec![gone]));
    assert!(!a.drops.groups.iter().any(|g| g.flow == gone));
    check(&mut a);
}

fn delta(changed: Vec<fw_proto::control::FlowRow>) -> Msg {
    Msg::Flows { changed, removed: vec![], total: 0, lost_events: 0, full: false }
}

/// The bug: follow mode kept the selection on the first row, so when a newer row arrived
/// just before `B`, the quarantine dialog named that row's container instead of the one the
/// operator was looking at. The selection now stays on its flow (by id) and follow is opt-in.
#[test]
fn b_targets_the_row_looked_at_when_a_newer_row_arrives() {
    let mut a = app();
    assert!(!a.flows.follow, "follow is opt-in");
    let looked_at = a.flows.view[a.selected()];
    assert_eq!(a.model.flows.rows[&looked_at].container, "api-1");
    // A newer row of another container lands on top.
    let mut newer = testdata::flow(60, "web-2", "198.51.100.77", 443, FlowVerdict::Denied);
    newer.last_seen_ms = NOW_MS + 500;
    a.update(delta(vec![newer]));
    assert_eq!(a.flows.view[0], 60, "it is first now");
    assert_eq!(a.flows.view[a.selected()], looked_at, "the selection stayed on its flow");
    a.press(KeyCode::Char('B'));
    let Some(DialogKind::Quarantine { container, .. }) = a.dialog().map(|d| d.kind.clone()) else {
        panic!("{:?}", a.dialog())
    };
    assert_eq!(container, "api-1");
    // While the dialog is open, rows keep moving: what it targets does not.
    let mut newest = testdata::flow(61, "db-1", "10.1.0.9", 22, FlowVerdict::Denied);
    newest.last_seen_ms = NOW_MS + 900;
    a.update(delta(vec![newest]));
    let cmds = a.press(KeyCode::Enter);
    assert!(
        matches!(&cmds[..], [Command::Request(Op::Block { target: BlockTarget::Quarantine { container, .. }, .. })] if container == "api-1"),
        "{cmds:?}"
    );
}

/// `f` follows the first row; a dialog, `/` or a pause stop following (k9s, htop).
#[test]
fn follow_is_opt_in_and_looking_closer_ends_it() {
    let mut a = app();
    let newer = |a: &mut App, id: u64| {
        let mut r = testdata::flow(id, "web-2", "198.51.100.77", 443, FlowVerdict::Allowed);
        r.last_seen_ms = NOW_MS + id as i64;
        a.update(delta(vec![r]));
    };
    a.press(KeyCode::Char('f'));
    assert!(a.flows.follow);
    newer(&mut a, 70);
    assert_eq!((a.selected(), a.flows.view[0]), (0, 70), "following: the newest row is selected");
    let t = text(&draw(&mut a, 80, 24));
    assert!(t.contains("FOLLOW"), "{t}");
    for (stop, keys) in [("b opens a dialog", "b"), ("/ filters", "/"), ("p pauses", "p")] {
        a.overlay = Overlay::None;
        a.filter.editing = None;
        a.paused = false;
        a.flows.follow = false;
        a.press(KeyCode::Char('f'));
        assert!(a.flows.follow, "{stop}");
        a.type_str(keys);
        assert!(!a.flows.follow, "{stop} stops following");
    }
    a.filter.editing = None;
    a.paused = false;
    a.press(KeyCode::Char('f'));
    a.press(KeyCode::Down);
    assert!(!a.flows.follow, "choosing a row stops following");
    a.press(KeyCode::Home);
    assert!(!a.flows.follow, "and going back up does not resume it");
}

/// Rows whose values are longer than any column at 80 columns: a long container name, a
/// peer with a long name on port 8080.
fn long_rows() -> Vec<fw_proto::control::FlowRow> {
    let mut r = testdata::flow(80, "api-to-partners", "10.77.0.21", 8080, FlowVerdict::Allowed);
    r.peer = Some("partner-gateway-eu-west-1".into());
    r.peer_zone = Some("partners".into());
    r.rule = Some(fw_proto::RuleRef {
        kind: fw_proto::RuleKind::Policy,
        id: "api-to-partners-gateway".into(),
        source: Some("/etc/fw/rules/20-policies.toml:31".into()),
    });
    r.last_seen_ms = NOW_MS + 10;
    let mut d = testdata::flow(81, "api-to-partners", "10.77.0.21", 8080, FlowVerdict::Denied);
    d.peer = r.peer.clone();
    d.rule = r.rule.clone();
    d.last_seen_ms = NOW_MS + 5;
    vec![r, d]
}

/// Every word of `t` containing `what`: either whole (`whole`) or marked as cut with `…`; and
/// no word is a silently cut start of a whole value (`api-to-par`).
fn words_whole_or_marked(t: &str, what: &str, whole: &[&str]) {
    for w in t.split_whitespace() {
        if w.contains(what) {
            assert!(whole.contains(&w) || w.contains('…'), "{w:?} is cut without an ellipsis:\n{t}");
        }
        for full in whole {
            assert!(
                !(w.len() >= 4 && full.starts_with(w) && !whole.contains(&w)),
                "{w:?} cut silently:\n{t}"
            );
        }
    }
}

/// Never a value cut without an ellipsis (`10.77.0.21:808` for port 8080, `api-to-partner`
/// for `api-to-partners`); ports and numbers are never cut; sources keep their line number.
#[test]
fn cut_values_end_in_an_ellipsis_and_ports_survive() {
    let mut a = app();
    let mut rows = testdata::flows();
    rows.extend(long_rows());
    a.update(full(rows));
    for (w, h) in [(80, 24), (100, 30), (120, 30), (160, 45)] {
        for screen in ['1', '2'] {
            a.press(KeyCode::Char(screen));
            let t = text(&draw(&mut a, w, h));
            words_whole_or_marked(&t, "api-to-part", &["api-to-partners", "api-to-partners-gateway"]);
            words_whole_or_marked(&t, "partner-gat", &["partner-gateway-eu-west-1"]);
            words_whole_or_marked(&t, "10.77.0.", &["10.77.0.21:8080", "10.77.0.21"]);
            // An address with a port keeps the whole port.
            for word in t.split_whitespace().filter(|w| w.contains("10.77.0.") || w.ends_with(":808")) {
                let ok = word == "10.77.0.21" || word.ends_with(":8080") || word.ends_with('…');
                assert!(ok, "{w}x{h} screen {screen}: {word:?}\n{t}");
            }
            assert!(!t.contains(":808 ") && !t.contains(":80…"), "{t}");
            // A cut rule source keeps its line number.
            for word in t.split_whitespace().filter(|w| w.contains("policies.toml") || w.contains("…:31")) {
                assert!(word.contains(":31") || word.contains(":12") || word.contains(":8"), "{word:?}\n{t}");
            }
        }
    }
}

/// At 120 columns the Flows table shows ZONE (it used to hide it while REMOTE kept 60 empty
/// columns): widths follow what the rows hold.
#[test]
fn at_120_columns_flows_give_the_space_to_what_is_there() {
    let mut a = app();
    let t = text(&draw(&mut a, 120, 30));
    let header = t.lines().nth(1).unwrap_or_default();
    for col in ["CONTAINER", "ZONE", "REMOTE", "STATE", "BYTES", "RATE", "VERDICT", "RULE", "SNI/HOST"] {
        assert!(header.contains(col), "{col} missing at 120 columns: {header}");
    }
    let remote = header.find("REMOTE").unwrap_or(0);
    let next = header.find("STATE").unwrap_or(0);
    let widest = a
        .model
        .flows
        .rows
        .values()
        .map(|r| match r.direction {
            fw_proto::control::Direction::Egress => {
                format!("→ {}", super::screens::labelled(r.peer.as_deref(), r.proto, r.dst, r.dport))
            }
            fw_proto::control::Direction::Ingress => {
                format!("← {}", super::screens::labelled(r.peer.as_deref(), r.proto, r.src, r.sport))
            }
        })
        .map(|s| s.chars().count())
        .max()
        .unwrap_or(0);
    assert_eq!(next - remote, widest + 1, "REMOTE is as wide as its widest value:\n{t}");
}

/// `?` on a small terminal: the overlay says which rows it shows and scrolls to the end.
#[test]
fn help_scrolls_on_small_terminals() {
    let mut a = app();
    a.press(KeyCode::Char('?'));
    let t = text(&draw(&mut a, 80, 24));
    assert!(t.contains("Keys 1-22 of"), "{t}");
    let last_key = "name:";
    assert!(!t.contains(last_key), "the filter keys are further down:\n{t}");
    a.press(KeyCode::End);
    let t = text(&draw(&mut a, 80, 24));
    assert!(t.contains(last_key) && t.contains("sni: host:"), "{t}");
    a.press(KeyCode::Up);
    assert!(matches!(a.overlay, Overlay::Help(_)), "scrolling keys keep it open");
    a.press(KeyCode::Esc);
    assert_eq!(a.overlay, Overlay::None);
    // Where everything fits, it does not scroll.
    a.press(KeyCode::Char('?'));
    let t = text(&draw(&mut a, 160, 60));
    assert!(t.contains(last_key) && !t.contains("Keys 1-"), "{t}");
}

/// A scan of 100 ports is one row with the port count and range.
#[test]
fn a_port_scan_is_one_row() {
    let mut a = app();
    let scan: Vec<_> = (1..=100u16)
        .map(|p| {
            let mut r = testdata::flow(1000 + u64::from(p), "web-1", "198.51.100.20", p, FlowVerdict::Denied);
            r.last_seen_ms = NOW_MS;
            r
        })
        .collect();
    a.update(delta(scan));
    a.press(KeyCode::Char('2'));
    let rows: Vec<_> =
        a.drops.groups.iter().filter(|g| g.key.remote.to_string() == "198.51.100.20").collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!((rows[0].count, rows[0].ports_text()), (300, "100 ports 1-100".to_string()));
    let t = text(&draw(&mut a, 120, 30));
    assert!(t.contains("198.51.100.20") && t.contains("100 ports 1-100"), "{t}");
    // Blocking the group blocks the address, not one of its ports.
    a.press(KeyCode::Home);
    let Some(BlockTarget::Destination { port, net, .. }) = a.block_target() else { panic!() };
    assert_eq!((port, net.to_string()), (None, "198.51.100.20/32".into()));
}

/// An ingress drop names the remote end by its own address (the name fw knows for the
/// source, next to the source's address: it was shown next to the container's own address);
/// a dropped reply shows the service port it came from, never the container's ephemeral port
/// as a destination; LAST SEEN is never in the future.
#[test]
fn drops_pair_names_with_their_addresses_and_replies_with_their_service() {
    use fw_proto::control::Direction;
    let mut a = app();
    // web-1 (10.1.0.2) knocks on db-1's ssh port, denied at db-1.
    let mut knock = testdata::flow(90, "db-1", "10.1.0.3", 22, FlowVerdict::Denied);
    knock.direction = Direction::Ingress;
    (knock.src, knock.sport) = ("10.1.0.2".parse().unwrap(), 51_000);
    knock.peer = Some("web-1".into());
    // A reply from 198.51.100.9:443 to web-2's ephemeral port, dropped on its way in, stamped
    // by the daemon a moment after the console's clock last ticked.
    let mut reply = testdata::flow(91, "web-2", "10.1.0.4", 40_123, FlowVerdict::Blocked);
    reply.direction = Direction::Ingress;
    (reply.src, reply.sport) = ("198.51.100.9".parse().unwrap(), 443);
    reply.last_seen_ms = NOW_MS + 3_000;
    a.update(delta(vec![knock, reply]));
    a.press(KeyCode::Char('2'));
    for (w, h) in [(80, 24), (160, 45)] {
        let t = text(&draw(&mut a, w, h));
        let line = |needle: &str| t.lines().find(|l| l.contains(needle)).unwrap_or_default().to_string();
        let k = line("db-1 ");
        assert!(k.contains("web-1 10.1.0.2") && k.contains(" 22 ") && !k.contains("10.1.0.3"), "{k}\n{t}");
        let r = line("198.51.100.9   443");
        let r = if r.is_empty() { line("reply") } else { r };
        assert!(r.contains("reply") && r.contains(" 443 ") && !r.contains("40123"), "{r}\n{t}");
        assert!(r.contains("now") && !t.contains("in 3s"), "never in the future: {r}");
    }
}

/// The Containers screen compares `max_conns` with the connections the container opened
/// (web-1 tracks 438 entries, inbound and TIME_WAIT included, and opened 3), and shows caps
/// as the rule file wrote them.
#[test]
fn containers_compare_opened_connections_with_the_cap_and_show_caps_as_written() {
    let mut a = app();
    a.press(KeyCode::Char('3'));
    let t = draw(&mut a, 160, 45);
    let s = text(&t);
    let web = s.lines().find(|l| l.starts_with("web-1")).unwrap_or_default();
    assert!(web.contains("3/100") && !web.contains("438"), "{web}");
    let api = s.lines().find(|l| l.starts_with("api-1")).unwrap_or_default();
    assert!(api.contains("2/2") && api.contains("80mbit out") && !api.contains("MiB"), "{api}");
    // At the cap: the alert colour; below it: none.
    let b = t.backend().buffer();
    let style_at = |line: &str, needle: &str| {
        let y = s.lines().position(|l| l.starts_with(line)).unwrap_or(0) as u16;
        let row: String = (0..b.area.width).map(|x| b[(x, y)].symbol()).collect();
        let x = row[..row.find(needle).unwrap_or(0)].chars().count() as u16;
        b[(x, y)].style().fg
    };
    assert_eq!(style_at("api-1", "2/2"), Some(ratatui::style::Color::Magenta));
    assert_ne!(style_at("web-1", "3/100"), Some(ratatui::style::Color::Magenta));
}

/// The Rules screen lists zones and policies in evaluation order with their hits from the
/// flow table, sources relative to the rules directory.
#[test]
fn rules_list_zones_and_policies_with_their_hits() {
    let mut a = app();
    a.press(KeyCode::Char('4'));
    let t = text(&draw(&mut a, 160, 45));
    let line = |needle: &str| t.lines().find(|l| l.contains(needle)).unwrap_or_default().to_string();
    let web = line("web-egress");
    assert!(
        web.contains("web → world") && web.contains(" 2 ") && web.contains("20-policies.toml:12"),
        "{web}"
    );
    let default = line("any → any");
    assert!(default.contains("deny") && default.contains(" 23 "), "the default's denied attempts: {default}");
    assert!(line("api ").contains("80mbit out"), "{t}");
    assert!(!t.contains("/etc/fw/rules/20-policies"), "sources relative to the rules directory: {t}");
    // New attempts against a policy count at once.
    let mut r = testdata::flow(95, "web-1", "10.1.0.3", 5432, FlowVerdict::Denied);
    r.rule = Some(fw_proto::RuleRef {
        kind: fw_proto::RuleKind::Policy,
        id: "no-web-to-db".into(),
        source: Some("/etc/fw/rules/20-policies.toml:24".into()),
    });
    r.count = 4;
    a.update(delta(vec![r]));
    let t = text(&draw(&mut a, 160, 45));
    let line = t.lines().find(|l| l.contains("no-web-to-db")).unwrap_or_default();
    assert!(line.contains(" 4 "), "{line}");
    // An older daemon without zones and policies: said so, files still listed.
    let mut s = testdata::status();
    s.zones.clear();
    s.policies.clear();
    a.update(Msg::Status(s));
    let t = text(&draw(&mut a, 120, 30));
    assert!(t.contains("does not report its zones and policies") && t.contains("20-policies.toml"), "{t}");
}

/// Mouse clicks land on what the last frame drew: the Rules screen's list starts below its
/// summary lines, not on row 2.
#[test]
fn clicks_resolve_against_the_drawn_layout() {
    use super::screens::Screen as _;
    let mut a = app();
    a.press(KeyCode::Char('4'));
    let t = text(&draw(&mut a, 160, 45));
    let y = t.lines().position(|l| l.contains("web-egress")).unwrap_or(0) as u16;
    a.update(Msg::Mouse(MouseEvent {
        kind: MouseEventKind::Down(MouseButton::Left),
        column: 3,
        row: y,
        modifiers: KeyModifiers::NONE,
    }));
    a.press(KeyCode::Enter);
    let t = text(&draw(&mut a, 160, 45));
    assert!(t.contains("Policy") && t.contains("web → world") && t.contains("hits"), "{t}");
    assert_eq!(a.overlay, Overlay::Details);
    assert!(a.rules.selected() > 0);
}

/// The console reads the CLI's language: `key=value` is the same word, unknown keys error.
#[test]
fn the_console_filter_is_the_cli_language() {
    let mut a = app();
    a.press(KeyCode::Char('/'));
    a.type_str("verdict=denied port=443");
    assert_eq!(a.flows.view.len(), 2, "{:?}", a.filter.error);
    a.type_str(" colour:red");
    assert!(
        a.filter.error.as_deref().is_some_and(|e| e.contains("unknown key \"colour\"")),
        "{:?}",
        a.filter.error
    );
    assert_eq!(a.filter.filter.to_string(), "verdict:denied port:443 colour", "the last good filter stays");
    a.press(KeyCode::Esc);
    a.press(KeyCode::Char('/'));
    a.type_str("5432");
    assert_eq!(a.flows.view.len(), 3, "a bare port number finds the flows on it");
}
