//! Screen 4, Rules: the policy in force (hash, when loaded, a rejected reload and its errors
//! at `path:line:col`), its zones with their caps and members, and its policies in evaluation
//! order with their hits: the flows each allows now and the attempts each denied, counted
//! from the flow table's rule attribution. Sources are shown relative to the rules directory.

use fw_proto::control::{PolicyInfo, RuleAction, StatusInfo, ZoneKind};
use fw_proto::filter::Filter;
use fw_proto::RuleKind;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::containers::caps_text;
use super::{empty, kv, Details, DrawCx, Screen, ScreenId};
use crate::console::columns::{lines as table_lines, Col, Text};
use crate::console::list::ListState;
use crate::console::model::Model;
use crate::render::when;

/// One line of the scrolled part of the screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Item {
    Error(usize),
    Heading(Section),
    ZoneHeader,
    Zone(usize),
    PolicyHeader,
    Policy(usize),
    File(usize),
    Note(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Errors,
    Zones,
    Policies,
    Files,
}

#[derive(Debug, Clone, Default)]
pub struct RulesScreen {
    items: Vec<Item>,
    pub list: ListState<usize>,
}

/// Lines above the scrolled list: policy, loaded, rules directory, reload.
fn head(s: &StatusInfo, cx: &DrawCx) -> Vec<Line<'static>> {
    let t = cx.t;
    let now = cx.m.now_ms / 1000;
    let mut lines = vec![
        Line::from(vec![Span::styled("Policy   ", t.header()), Span::raw(s.policy_hash.clone())]),
        Line::from(vec![Span::styled("Loaded   ", t.header()), Span::raw(when(s.loaded_at_ms / 1000, now))]),
        Line::from(vec![
            Span::styled("Rules    ", t.header()),
            Span::raw(s.rules_dir.clone().unwrap_or_else(|| "-".into())),
        ]),
    ];
    match (s.last_reload_at_ms.map(|t| t / 1000), s.last_reload_errors.is_empty()) {
        (_, false) => lines.push(Line::from(vec![
            Span::styled("Reload   ", t.header()),
            Span::styled(
                format!(
                    "REJECTED {} ({} error{}): the policy above stays in force",
                    s.last_reload_at_ms.map_or_else(String::new, |x| crate::render::ago(x / 1000, now)),
                    s.last_reload_errors.len(),
                    if s.last_reload_errors.len() == 1 { "" } else { "s" }
                ),
                t.error(),
            ),
        ])),
        (Some(at), true) => lines.push(Line::from(vec![
            Span::styled("Reload   ", t.header()),
            Span::styled(format!("ok {}", when(at, now)), t.ok()),
        ])),
        (None, true) => {}
    }
    lines
}

const ZONE_COLS: [Col; 6] = [
    Col::text("ZONE", 0, 6),
    Col::text("KIND", 4, 8),
    Col::text("MODE", 3, 5),
    Col::num("MEMBERS", 1),
    Col::text("CAPS / NETWORKS", 2, 10),
    Col::text("SOURCE", 5, 10),
];

const POLICY_COLS: [Col; 9] = [
    Col::num("#", 3),
    Col::text("POLICY", 0, 10),
    Col::text("FROM → TO", 1, 10),
    Col::text("PROTO", 5, 3),
    Col::text("PORTS", 4, 5),
    Col::text("ACTION", 2, 5),
    Col::num("FLOWS", 0),
    Col::num("DENIED", 0),
    Col::text("SOURCE", 6, 10),
];

fn action(p: &PolicyInfo) -> String {
    let mut s = match p.action {
        RuleAction::Allow => "allow",
        RuleAction::Deny => "deny",
        RuleAction::Log => "log",
    }
    .to_string();
    if p.kind == RuleKind::Failsafe {
        s.push_str(" (failsafe)");
    }
    if p.inspect.is_some() {
        s.push_str(" +inspect");
    }
    s
}

/// A source with its line number kept through any cut.
fn source_text(m: &Model, src: Option<&str>) -> Text {
    match src {
        Some(s) => {
            let s = m.source(s);
            let tail = s.find(':').map_or("", |i| &s[i..]).to_string();
            Text::keeping(s.to_string(), &tail)
        }
        None => Text::new("-"),
    }
}

impl RulesScreen {
    fn build(s: &StatusInfo) -> Vec<Item> {
        let mut v = Vec::new();
        if !s.last_reload_errors.is_empty() {
            v.push(Item::Heading(Section::Errors));
            v.extend((0..s.last_reload_errors.len()).map(Item::Error));
        }
        if s.zones.is_empty() && s.policies.is_empty() {
            v.push(Item::Note("This fw-daemon does not report its zones and policies (an older version)."));
        } else {
            v.push(Item::Heading(Section::Zones));
            v.push(Item::ZoneHeader);
            v.extend((0..s.zones.len()).map(Item::Zone));
            v.push(Item::Heading(Section::Policies));
            v.push(Item::PolicyHeader);
            v.extend((0..s.policies.len()).map(Item::Policy));
        }
        v.push(Item::Heading(Section::Files));
        v.extend((0..s.rule_files.len()).map(Item::File));
        v
    }

    fn render_items(&self, s: &StatusInfo, cx: &DrawCx, width: u16) -> Vec<Line<'static>> {
        let t = cx.t;
        let m = cx.m;
        let zone_rows: Vec<(Vec<Text>, Style)> = s
            .zones
            .iter()
            .map(|z| {
                let members = s.containers.iter().filter(|c| c.zone == z.name).count();
                let what = match z.kind {
                    ZoneKind::External => z.nets.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(","),
                    ZoneKind::Containers => caps_text(&z.caps),
                };
                let kind = match z.kind {
                    ZoneKind::Containers => "containers",
                    ZoneKind::External => "external",
                };
                (
                    vec![
                        Text::new(z.name.clone()),
                        Text::new(kind),
                        Text::new(z.mode.to_string()),
                        Text::new(if z.kind == ZoneKind::External {
                            "-".to_string()
                        } else {
                            members.to_string()
                        }),
                        Text::new(what),
                        source_text(m, z.source.as_deref()),
                    ],
                    Style::new(),
                )
            })
            .collect();
        let policy_rows: Vec<(Vec<Text>, Style)> = s
            .policies
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let hits = m.flows.hits.get(&p.id).copied().unwrap_or_default();
                let ports = if p.ports.is_empty() { "any".to_string() } else { p.ports.clone() };
                let deny_style = if hits.attempts > 0 { t.error() } else { Style::new() };
                (
                    vec![
                        Text::new((i + 1).to_string()),
                        Text::new(p.id.clone()),
                        Text::new(format!("{} → {}", p.from, p.to)),
                        Text::new(p.proto.clone()),
                        Text::new(ports),
                        Text::new(action(p)),
                        Text::new(if hits.flows == 0 { "-".into() } else { hits.flows.to_string() }),
                        Text::new(if hits.attempts == 0 { "-".into() } else { hits.attempts.to_string() })
                            .styled(deny_style),
                        source_text(m, p.source.as_deref()),
                    ],
                    Style::new(),
                )
            })
            .collect();
        let (zone_head, zone_lines) = table_lines(&ZONE_COLS, zone_rows, width, 1, t.header());
        let (pol_head, pol_lines) = table_lines(&POLICY_COLS, policy_rows, width, 1, t.header());
        self.items
            .iter()
            .map(|item| match *item {
                Item::Heading(Section::Errors) => Line::styled("Errors (path:line:col)", t.header()),
                Item::Heading(Section::Zones) => {
                    Line::styled(format!("Zones ({})", s.zones.len()), t.header())
                }
                Item::Heading(Section::Policies) => Line::styled(
                    format!(
                        "Policies ({}) in evaluation order: FLOWS allowed now, DENIED attempts",
                        s.policies.len()
                    ),
                    t.header(),
                ),
                Item::Heading(Section::Files) => {
                    Line::styled(format!("Files ({})", s.rule_files.len()), t.header())
                }
                Item::Error(i) => Line::styled(
                    format!("  {}", s.last_reload_errors.get(i).map_or("", String::as_str)),
                    t.error(),
                ),
                Item::ZoneHeader => zone_head.clone(),
                Item::Zone(i) => zone_lines.get(i).cloned().unwrap_or_default(),
                Item::PolicyHeader => pol_head.clone(),
                Item::Policy(i) => pol_lines.get(i).cloned().unwrap_or_default(),
                Item::File(i) => Line::raw(format!("  {}", s.rule_files.get(i).map_or("", String::as_str))),
                Item::Note(n) => Line::styled(n, t.dim()),
            })
            .collect()
    }
}

impl Screen for RulesScreen {
    fn id(&self) -> ScreenId {
        ScreenId::Rules
    }

    fn len(&self, _m: &Model) -> usize {
        self.items.len()
    }

    fn selected(&self) -> usize {
        self.list.index
    }

    fn offset(&self) -> usize {
        self.list.offset
    }

    fn move_by(&mut self, delta: isize, _m: &Model, page: usize) {
        let n = self.items.len();
        self.list.move_by(delta, n, page, |i| (i < n).then_some(i));
    }

    fn refresh(&mut self, m: &Model, _filter: &Filter, _narrower: bool, page: usize) {
        self.items = m.status.as_ref().map(RulesScreen::build).unwrap_or_default();
        let n = self.items.len();
        // Lines have no identity beyond their place: keep the index.
        self.list.key = None;
        self.list.sync(n, page, |_| None, |i| (i < n).then_some(i));
    }

    fn draw(&self, f: &mut Frame, area: Rect, cx: &DrawCx) -> Option<Rect> {
        let Some(s) = &cx.m.status else {
            empty(f, cx, area, "status");
            return None;
        };
        let head = head(s, cx);
        let top = (head.len() as u16).min(area.height);
        f.render_widget(Paragraph::new(head), Rect { height: top, ..area });
        let body = Rect { y: area.y + top, height: area.height - top, ..area };
        let lines = self.render_items(s, cx, area.width);
        let win = self.list.window(lines.len(), usize::from(body.height));
        let shown: Vec<Line> = win
            .clone()
            .filter_map(|i| {
                let l = lines.get(i)?.clone();
                Some(if i == self.list.index { l.patch_style(Modifier::REVERSED) } else { l })
            })
            .collect();
        f.render_widget(Paragraph::new(shown), body);
        Some(body)
    }

    fn details(&self, cx: &DrawCx) -> Option<Details> {
        let s = cx.m.status.as_ref()?;
        let t = cx.t;
        match self.items.get(self.list.index)? {
            Item::Policy(i) => {
                let p = s.policies.get(*i)?;
                let hits = cx.m.flows.hits.get(&p.id).copied().unwrap_or_default();
                let mut lines = vec![
                    kv(t, "policy", format!("{} ({})", p.id, p.kind)),
                    kv(t, "from → to", format!("{} → {}", p.from, p.to)),
                    kv(
                        t,
                        "traffic",
                        format!("{} ports {}", p.proto, if p.ports.is_empty() { "any" } else { &p.ports }),
                    ),
                    kv(t, "action", action(p)),
                    kv(
                        t,
                        "hits",
                        format!("{} flows allowed now, {} denied attempts", hits.flows, hits.attempts),
                    ),
                    kv(t, "source", p.source.as_deref().map_or("-".into(), |x| cx.m.source(x).to_string())),
                ];
                if let Some(i) = &p.inspect {
                    lines.push(kv(t, "inspect", i.clone()));
                }
                if let Some(e) = p.expires {
                    lines.push(kv(t, "expires", when(e, cx.m.now_ms / 1000)));
                }
                if let Some(d) = &p.description {
                    lines.push(kv(t, "about", d.clone()));
                }
                Some(Details { title: "Policy", lines })
            }
            Item::Zone(i) => {
                let z = s.zones.get(*i)?;
                let members: Vec<&str> =
                    s.containers.iter().filter(|c| c.zone == z.name).map(|c| c.name.as_str()).collect();
                let mut lines = vec![
                    kv(t, "zone", format!("{} ({})", z.name, z.mode)),
                    kv(t, "members", if members.is_empty() { "-".into() } else { members.join(", ") }),
                    kv(t, "caps", caps_text(&z.caps)),
                    kv(t, "source", z.source.as_deref().map_or("-".into(), |x| cx.m.source(x).to_string())),
                ];
                if !z.nets.is_empty() {
                    lines.push(kv(
                        t,
                        "networks",
                        z.nets.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", "),
                    ));
                }
                if let Some(d) = &z.description {
                    lines.push(kv(t, "about", d.clone()));
                }
                Some(Details { title: "Zone", lines })
            }
            _ => None,
        }
    }

    fn selected_container(&self, _m: &Model) -> Option<String> {
        None
    }
}
