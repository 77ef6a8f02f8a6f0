//! Screen 5, Audit: who did what (blocks, unblocks, reloads, the daemon's own actions), newest
//! first.

use fw_proto::control::AuditRecord;
use fw_proto::filter::Filter;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::widgets::Table;
use ratatui::Frame;

use super::{body_rows, clock, empty, kv, Details, DrawCx, Screen, ScreenId};
use crate::console::columns::{lay_out, Col, Text};
use crate::console::list::ListState;
use crate::console::model::Model;
use crate::render::{duration, utc};

/// An audit record's identity in the list: its time, operation and target.
type Key = (i64, String, Option<String>);

#[derive(Debug, Clone, Default)]
pub struct AuditScreen {
    /// Indexes into the model's audit records (newest first) that pass the filter.
    pub view: Vec<usize>,
    pub list: ListState<Key>,
}

fn key(r: &AuditRecord) -> Key {
    (r.time_ms, r.op.to_string(), r.subject())
}

fn who(r: &AuditRecord, with_role: bool) -> String {
    match (&r.peer, &r.actor) {
        (Some(p), _) => match r.role {
            Some(role) if with_role => format!("{} ({role})", p.user),
            _ => p.user.clone(),
        },
        (None, Some(a)) => a.clone(),
        (None, None) => "fw-daemon".into(),
    }
}

const COLS: [Col; 5] = [
    Col::num("TIME", 0),
    Col::text("WHO", 1, 8),
    Col::text("OP", 0, 6),
    Col::text("TARGET", 0, 12),
    Col::text("RESULT", 0, 6),
];

impl AuditScreen {
    pub fn selected_record<'m>(&self, m: &'m Model) -> Option<&'m AuditRecord> {
        m.audit.get(*self.view.get(self.list.index)?)
    }

    fn keys(&self, m: &Model) -> Vec<Option<Key>> {
        self.view.iter().map(|&i| m.audit.get(i).map(key)).collect()
    }
}

impl Screen for AuditScreen {
    fn id(&self) -> ScreenId {
        ScreenId::Audit
    }

    fn len(&self, _m: &Model) -> usize {
        self.view.len()
    }

    fn selected(&self) -> usize {
        self.list.index
    }

    fn offset(&self) -> usize {
        self.list.offset
    }

    fn move_by(&mut self, delta: isize, m: &Model, page: usize) {
        let keys = self.keys(m);
        self.list.move_by(delta, keys.len(), page, |i| keys.get(i).cloned().flatten());
    }

    fn refresh(&mut self, m: &Model, filter: &Filter, _narrower: bool, page: usize) {
        self.view = (0..m.audit.len())
            .filter(|&i| {
                let r = &m.audit[i];
                let user = who(r, false);
                let subject = r.subject().unwrap_or_default();
                let result = r.result.to_string();
                let fields = [
                    user.as_str(),
                    r.op.as_str(),
                    subject.as_str(),
                    &result,
                    r.reason.as_deref().unwrap_or(""),
                ];
                filter.matches_fields(None, None, &fields)
            })
            .collect();
        let keys = self.keys(m);
        self.list.sync(
            keys.len(),
            page,
            |k| keys.iter().position(|x| x.as_ref() == Some(k)),
            |i| keys.get(i).cloned().flatten(),
        );
    }

    fn draw(&self, f: &mut Frame, area: Rect, cx: &DrawCx) -> Option<Rect> {
        if self.view.is_empty() {
            empty(f, cx, body_rows(area), "audit records");
            return None;
        }
        let t = cx.t;
        let wide = area.width >= 150;
        let body = body_rows(area);
        let rows = self
            .list
            .window(self.view.len(), usize::from(body.height))
            .filter_map(|i| {
                let r = cx.m.audit.get(*self.view.get(i)?)?;
                let mut what = r.subject().unwrap_or_default();
                if let Some(b) = r.block {
                    what = format!("#{b} {what}");
                }
                if let Some(reason) = &r.reason {
                    what.push_str(&format!(" \"{reason}\""));
                }
                if let Some(s) = &r.summary {
                    what.push_str(&format!(" {s}"));
                }
                let ok = r.result.is_ok();
                let style = if i == self.list.index {
                    Style::new().add_modifier(Modifier::REVERSED)
                } else {
                    Style::new()
                };
                let time = if wide { utc(r.time_ms / 1000) } else { clock(r.time_ms) };
                Some((
                    vec![
                        Text::new(time),
                        Text::new(who(r, wide)),
                        Text::new(r.op.to_string()),
                        Text::new(what.trim().to_string()),
                        Text::new(r.result.to_string()).styled(if ok { t.ok() } else { t.error() }),
                    ],
                    style,
                ))
            })
            .collect();
        let laid = lay_out(&COLS, rows, area.width, 1, t.header(), None);
        f.render_widget(Table::new(laid.rows, laid.widths).header(laid.header).column_spacing(1), area);
        Some(body)
    }

    fn details(&self, cx: &DrawCx) -> Option<Details> {
        let r = self.selected_record(cx.m)?;
        let t = cx.t;
        let mut lines = vec![
            kv(t, "time", utc(r.time_ms / 1000)),
            kv(
                t,
                "who",
                match &r.peer {
                    Some(p) => format!(
                        "{} (uid {}, pid {}{}){}",
                        p.user,
                        p.uid,
                        p.pid,
                        p.process.as_ref().map_or_else(String::new, |x| format!(", {x}")),
                        r.role.map_or_else(String::new, |x| format!(" as {x}"))
                    ),
                    None => r.actor.clone().unwrap_or_else(|| "fw-daemon".into()),
                },
            ),
            kv(t, "op", r.op.to_string()),
        ];
        for (k, v) in [
            ("target", r.subject()),
            ("block", r.block.map(|b| format!("#{b}"))),
            ("reason", r.reason.clone()),
            ("ttl", r.ttl_ms.map(|m| duration(m.div_ceil(1000)))),
            ("policy", r.policy_hash.clone()),
            ("summary", r.summary.clone()),
        ] {
            if let Some(v) = v {
                lines.push(kv(t, k, v));
            }
        }
        lines.push(kv(t, "result", r.result.to_string()));
        Some(Details { title: "Audit record", lines })
    }

    fn selected_container(&self, _m: &Model) -> Option<String> {
        None
    }
}
