//! A list's selection that sticks to its row: the selected row's key is kept, and after the
//! list changes (rows arrive above it, it is re-sorted or filtered) the selection moves to
//! wherever that row went. Only when the row is gone does the index decide. The row also
//! keeps its place on screen: the scroll offset moves with it.

/// Selection and scroll of one list, keyed by `K` (a flow id, a container name, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListState<K> {
    /// The selected row's key; `None` while the list is empty.
    pub key: Option<K>,
    pub index: usize,
    /// The first row shown.
    pub offset: usize,
}

impl<K> Default for ListState<K> {
    fn default() -> Self {
        ListState { key: None, index: 0, offset: 0 }
    }
}

impl<K: PartialEq + Clone> ListState<K> {
    /// After the list changed: `find` gives the new position of a key, `key_at` the key of a
    /// position; `len` rows; `page` rows visible.
    pub fn sync(
        &mut self,
        len: usize,
        page: usize,
        find: impl Fn(&K) -> Option<usize>,
        key_at: impl Fn(usize) -> Option<K>,
    ) {
        if len == 0 {
            *self = ListState { key: None, index: 0, offset: 0 };
            return;
        }
        match self.key.as_ref().and_then(&find) {
            Some(p) => {
                // Keep the row where it was on screen.
                let delta = p as isize - self.index as isize;
                self.offset = (self.offset as isize + delta).max(0) as usize;
                self.index = p;
            }
            None => {
                self.index = self.index.min(len - 1);
                self.key = key_at(self.index);
            }
        }
        self.clamp(len, page);
    }

    /// Selects position `index` (clamped).
    pub fn select(&mut self, index: usize, len: usize, page: usize, key_at: impl Fn(usize) -> Option<K>) {
        if len == 0 {
            *self = ListState { key: None, index: 0, offset: 0 };
            return;
        }
        self.index = index.min(len - 1);
        self.key = key_at(self.index);
        self.clamp(len, page);
    }

    /// Moves the selection by `delta` rows.
    pub fn move_by(&mut self, delta: isize, len: usize, page: usize, key_at: impl Fn(usize) -> Option<K>) {
        let i = (self.index as isize).saturating_add(delta).clamp(0, len.saturating_sub(1) as isize) as usize;
        self.select(i, len, page, key_at);
    }

    /// Keeps the selected row visible and the offset within the list.
    pub fn clamp(&mut self, len: usize, page: usize) {
        let page = page.max(1);
        if len == 0 {
            self.index = 0;
            self.offset = 0;
            return;
        }
        self.index = self.index.min(len - 1);
        if self.index < self.offset {
            self.offset = self.index;
        } else if self.index >= self.offset + page {
            self.offset = self.index + 1 - page;
        }
        self.offset = self.offset.min(len.saturating_sub(page));
    }

    /// The visible rows: `offset..offset + height`, within `len`.
    pub fn window(&self, len: usize, height: usize) -> std::ops::Range<usize> {
        let off = self.offset.min(len);
        off..(off + height).min(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sync(s: &mut ListState<u32>, rows: &[u32], page: usize) {
        s.sync(rows.len(), page, |k| rows.iter().position(|x| x == k), |i| rows.get(i).copied());
    }

    #[test]
    fn the_selection_follows_its_row_and_keeps_its_screen_place() {
        let mut s = ListState::default();
        let rows = [10, 20, 30, 40];
        sync(&mut s, &rows, 3);
        assert_eq!((s.key, s.index), (Some(10), 0), "the first row when nothing was selected");
        s.move_by(2, rows.len(), 3, |i| rows.get(i).copied());
        assert_eq!(s.key, Some(30));
        // Two rows arrive above it: it is still selected, two lower, at the same screen row.
        let rows = [1, 2, 10, 20, 30, 40];
        sync(&mut s, &rows, 3);
        assert_eq!((s.key, s.index, s.offset), (Some(30), 4, 2));
        // It goes: the row now at its place is selected.
        let rows = [1, 2, 10, 20, 40];
        sync(&mut s, &rows, 3);
        assert_eq!((s.key, s.index), (Some(40), 4));
        sync(&mut s, &[], 3);
        assert_eq!(s, ListState::default());
    }
}
