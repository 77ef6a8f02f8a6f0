//! Styles that honour `NO_COLOR`: colours only when the console has them.

use fw_proto::control::FlowVerdict;
use ratatui::style::{Color, Modifier, Style};

#[derive(Debug, Clone, Copy)]
pub struct Theme {
    pub color: bool,
}

impl Theme {
    pub fn fg(&self, c: Color) -> Style {
        if self.color {
            Style::new().fg(c)
        } else {
            Style::new()
        }
    }

    pub fn verdict(&self, v: FlowVerdict) -> Style {
        match v {
            FlowVerdict::Allowed => self.fg(Color::Green),
            FlowVerdict::Denied => self.fg(Color::Red).add_modifier(Modifier::BOLD),
            FlowVerdict::AuditDenied => self.fg(Color::Yellow),
            FlowVerdict::CapHit => self.fg(Color::Magenta).add_modifier(Modifier::BOLD),
            FlowVerdict::Blocked => self.fg(Color::LightRed).add_modifier(Modifier::BOLD | Modifier::ITALIC),
        }
    }

    pub fn header(&self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }

    pub fn selected(&self) -> Style {
        Style::new().add_modifier(Modifier::REVERSED)
    }

    pub fn error(&self) -> Style {
        self.fg(Color::Red).add_modifier(Modifier::BOLD)
    }

    pub fn warn(&self) -> Style {
        self.fg(Color::Yellow)
    }

    pub fn ok(&self) -> Style {
        self.fg(Color::Green)
    }

    pub fn dim(&self) -> Style {
        Style::new().add_modifier(Modifier::DIM)
    }
}
