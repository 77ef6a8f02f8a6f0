//! Screen 3, Containers: each container's zone, mode, addresses, the connections it opened
//! against its zone's `max_conns`, its caps as the rule file wrote them, its flows, denied
//! attempts, blocks and a throughput sparkline.

use fw_proto::control::{CapsInfo, ContainerInfo, FlowVerdict};
use fw_proto::filter::Filter;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::widgets::Table;
use ratatui::Frame;

use super::{body_rows, empty, kv, rate, Details, DrawCx, Screen, ScreenId};
use crate::console::columns::{lay_out, Col, Text};
use crate::console::list::ListState;
use crate::console::model::Model;
use crate::render::bytes;

#[derive(Debug, Clone, Default)]
pub struct ContainersScreen {
    /// Indexes into `status.containers` that pass the filter, by name.
    pub view: Vec<usize>,
    pub list: ListState<String>,
}

/// A sparkline of `values` in `width` characters (the newest on the right).
pub fn spark(values: &[u64], width: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let vals = &values[values.len().saturating_sub(width)..];
    let max = vals.iter().copied().max().unwrap_or(0);
    vals.iter()
        .map(|&v| if max == 0 { BARS[0] } else { BARS[((v as u128 * 7) / max as u128) as usize] })
        .collect()
}

/// The egress cap as the rule file wrote it (`80mbit`), else in bytes per second.
pub fn egress_cap(c: &CapsInfo) -> Option<String> {
    match (&c.egress_written, c.egress_bytes_per_sec) {
        (Some(w), _) => Some(w.clone()),
        (None, Some(n)) => Some(format!("{}/s", bytes(n))),
        (None, None) => None,
    }
}

/// `200 conns 20 new/s 80mbit out`: a zone's caps, as written.
pub fn caps_text(c: &CapsInfo) -> String {
    let caps = [
        c.max_conns.map(|n| format!("{n} conns")),
        c.new_conns_per_sec.map(|n| format!("{n} new/s")),
        egress_cap(c).map(|e| format!("{e} out")),
    ];
    let caps: Vec<String> = caps.into_iter().flatten().collect();
    if caps.is_empty() {
        "-".into()
    } else {
        caps.join(" ")
    }
}

/// `3/200` (connections it opened / its cap), and whether that is at the cap. Without the
/// daemon's count of opened connections (an older daemon) the cap is not compared: the
/// tracked entries include inbound ones and TIME_WAIT, which the cap does not count.
pub fn conns(c: &ContainerInfo) -> (String, bool) {
    match (c.originated_conns, c.caps.max_conns) {
        (Some(n), Some(m)) => (format!("{n}/{m}"), n as u64 >= u64::from(m)),
        (Some(n), None) => (n.to_string(), false),
        (None, _) => (format!("{} tracked", c.open_flows), false),
    }
}

const COLS: [Col; 11] = [
    Col::text("NAME", 0, 8),
    Col::text("ZONE", 1, 4),
    Col::text("MODE", 5, 5),
    Col::text("ADDRESSES", 6, 9),
    Col::num("CONNS", 1),
    Col::num("RATE", 2),
    Col::text("CAPS", 7, 8),
    Col::num("FLOWS", 3),
    Col::num("DENIED", 3),
    Col::num("BLOCKS", 2),
    Col::text("THROUGHPUT", 4, 10),
];

impl ContainersScreen {
    fn key_at(&self, m: &Model, i: usize) -> Option<String> {
        let s = m.status.as_ref()?;
        s.containers.get(*self.view.get(i)?).map(|c| c.name.clone())
    }

    pub fn selected_info<'m>(&self, m: &'m Model) -> Option<&'m ContainerInfo> {
        m.status.as_ref()?.containers.get(*self.view.get(self.list.index)?)
    }
}

impl Screen for ContainersScreen {
    fn id(&self) -> ScreenId {
        ScreenId::Containers
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
        let keys: Vec<Option<String>> = (0..self.view.len()).map(|i| self.key_at(m, i)).collect();
        self.list.move_by(delta, keys.len(), page, |i| keys.get(i).cloned().flatten());
    }

    fn refresh(&mut self, m: &Model, filter: &Filter, _narrower: bool, page: usize) {
        self.view = match &m.status {
            Some(s) => {
                let mut v: Vec<usize> = (0..s.containers.len())
                    .filter(|&i| {
                        let c = &s.containers[i];
                        let addrs: Vec<String> = c.addresses.iter().map(|a| a.to_string()).collect();
                        let mut text: Vec<&str> = addrs.iter().map(String::as_str).collect();
                        text.push(if c.quarantined { "quarantined" } else { "" });
                        filter.matches_fields(Some(&c.name), Some(&c.zone), &text)
                    })
                    .collect();
                v.sort_by(|&a, &b| s.containers[a].name.cmp(&s.containers[b].name));
                v
            }
            None => Vec::new(),
        };
        let names: Vec<Option<String>> = (0..self.view.len()).map(|i| self.key_at(m, i)).collect();
        self.list.sync(
            names.len(),
            page,
            |k| names.iter().position(|n| n.as_ref() == Some(k)),
            |i| names.get(i).cloned().flatten(),
        );
    }

    fn draw(&self, f: &mut Frame, area: Rect, cx: &DrawCx) -> Option<Rect> {
        let Some(s) = &cx.m.status else {
            empty(f, cx, body_rows(area), "containers");
            return None;
        };
        if self.view.is_empty() {
            empty(f, cx, area, "containers");
            return None;
        }
        let t = cx.t;
        let body = body_rows(area);
        let spark_w = if area.width >= 150 { 24 } else { 10 };
        let rows = self
            .list
            .window(self.view.len(), usize::from(body.height))
            .filter_map(|i| {
                let c = s.containers.get(*self.view.get(i)?)?;
                let u = cx.m.flows.usage.get(&c.name).copied().unwrap_or_default();
                let (conns_text, over) = conns(c);
                let blocks = if c.quarantined {
                    format!("QUAR {}", c.blocks.len())
                } else if c.blocks.is_empty() {
                    "-".into()
                } else {
                    c.blocks.len().to_string()
                };
                let hist: Vec<u64> =
                    cx.m.history.get(&c.name).map(|h| h.iter().copied().collect()).unwrap_or_default();
                let mut style = if c.quarantined { t.verdict(FlowVerdict::Blocked) } else { Style::new() };
                if !c.programmed {
                    style = style.add_modifier(Modifier::DIM);
                }
                if i == self.list.index {
                    style = style.add_modifier(Modifier::REVERSED);
                }
                let addrs: Vec<String> = c.addresses.iter().map(|a| a.to_string()).collect();
                Some((
                    vec![
                        Text::new(c.name.clone()),
                        Text::new(c.zone.clone()),
                        Text::new(c.mode.to_string()),
                        Text::new(if addrs.is_empty() { "-".into() } else { addrs.join(",") }),
                        Text::new(conns_text).styled(if over {
                            t.verdict(FlowVerdict::CapHit)
                        } else {
                            Style::new()
                        }),
                        Text::new(rate(u.rate)),
                        Text::new(caps_text(&c.caps)),
                        Text::new(u.flows.to_string()),
                        Text::new(if u.denied == 0 { "-".into() } else { u.denied.to_string() }),
                        Text::new(blocks),
                        Text::new(spark(&hist, spark_w)).styled(t.fg(Color::Cyan)),
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
        let c = self.selected_info(cx.m)?;
        let t = cx.t;
        let now = cx.m.now_ms / 1000;
        let u = cx.m.flows.usage.get(&c.name).copied().unwrap_or_default();
        let addrs: Vec<String> = c.addresses.iter().map(|a| a.to_string()).collect();
        let mut lines = vec![
            kv(t, "name", c.name.clone()),
            kv(t, "zone", format!("{} ({})", c.zone, c.mode)),
            kv(t, "addresses", addrs.join(", ")),
            kv(
                t,
                "programmed",
                if c.programmed { "yes".into() } else { "NO: its table is not in place".into() },
            ),
        ];
        let cap = |x: Option<String>| x.unwrap_or_else(|| "no cap".into());
        let opened = c.originated_conns.map_or_else(|| "?".into(), |n| n.to_string());
        lines.push(kv(
            t,
            "conns",
            format!(
                "{opened} opened by it, max {}; {} tracked in all (inbound and closing included)",
                cap(c.caps.max_conns.map(|m| m.to_string())),
                c.open_flows
            ),
        ));
        lines.push(kv(t, "new conns", cap(c.caps.new_conns_per_sec.map(|m| format!("max {m}/s")))));
        lines.push(kv(
            t,
            "egress",
            format!("{} now, {}", rate(u.rate), cap(egress_cap(&c.caps).map(|e| format!("max {e}")))),
        ));
        lines.push(kv(
            t,
            "flows",
            format!("{} rows, {} open, {} denied attempts", u.flows, u.open, u.denied),
        ));
        lines.push(kv(t, "quarantined", if c.quarantined { "YES".into() } else { "no".into() }));
        if let Some(n) = &c.note {
            lines.push(kv(t, "note", n.clone()));
        }
        for b in cx.m.blocks_of(&c.name) {
            lines.push(kv(t, &format!("block #{}", b.id), crate::console::dialog::block_line(&b, now)));
        }
        Some(Details { title: "Container details", lines })
    }

    fn selected_container(&self, m: &Model) -> Option<String> {
        self.selected_info(m).map(|c| c.name.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::testdata;

    /// `max_conns` is compared with what the container opened, not with every tracked entry
    /// (inbound connections and TIME_WAIT made `438/200` in alert colour).
    #[test]
    fn conns_compare_what_it_opened_with_its_cap() {
        let mut c = testdata::container("api-1", "10.1.0.5");
        c.caps.max_conns = Some(200);
        c.open_flows = 438;
        c.originated_conns = Some(3);
        assert_eq!(conns(&c), ("3/200".into(), false));
        c.originated_conns = Some(200);
        assert_eq!(conns(&c), ("200/200".into(), true));
        c.originated_conns = None;
        assert_eq!(conns(&c), ("438 tracked".into(), false), "an older daemon: no comparison");
    }

    #[test]
    fn caps_show_as_written() {
        let c = CapsInfo {
            max_conns: Some(200),
            new_conns_per_sec: None,
            egress_bytes_per_sec: Some(10_000_000),
            egress_written: Some("80mbit".into()),
        };
        assert_eq!(caps_text(&c), "200 conns 80mbit out");
        let c = CapsInfo { egress_written: None, ..c };
        assert_eq!(caps_text(&c), "200 conns 9.5 MiB/s out");
        assert_eq!(caps_text(&CapsInfo::default()), "-");
    }
}
