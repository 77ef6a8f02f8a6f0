//! Which screen: a leaf every part of the console names (tabs, keys, the layout), so none
//! of them depends on the screens themselves.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScreenId {
    Flows,
    Drops,
    Containers,
    Rules,
    Audit,
}

impl ScreenId {
    pub const ALL: [ScreenId; 5] =
        [ScreenId::Flows, ScreenId::Drops, ScreenId::Containers, ScreenId::Rules, ScreenId::Audit];

    pub fn index(self) -> usize {
        match self {
            ScreenId::Flows => 0,
            ScreenId::Drops => 1,
            ScreenId::Containers => 2,
            ScreenId::Rules => 3,
            ScreenId::Audit => 4,
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            ScreenId::Flows => "Flows",
            ScreenId::Drops => "Drops & alerts",
            ScreenId::Containers => "Containers",
            ScreenId::Rules => "Rules",
            ScreenId::Audit => "Audit",
        }
    }

    pub fn next(self) -> ScreenId {
        ScreenId::ALL[(self.index() + 1) % ScreenId::ALL.len()]
    }

    pub fn prev(self) -> ScreenId {
        ScreenId::ALL[(self.index() + ScreenId::ALL.len() - 1) % ScreenId::ALL.len()]
    }
}
