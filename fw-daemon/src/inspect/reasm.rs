//! Bounded in-order reassembly of the start of one TCP byte stream.
//!
//! Holds the stream from its first byte (`base`, the client's ISN + 1 when the SYN was seen,
//! else the sequence number of the first payload segment) as one contiguous buffer, plus
//! out-of-order segments waiting for the gap before them. Retransmits and overlaps are
//! trimmed (the first copy of a byte wins). Everything together stays within `MAX_BYTES`;
//! beyond that the stream is marked `overflow` and takes no more data.

/// Bytes of stream start kept per inspected flow (in order plus waiting).
pub const MAX_BYTES: usize = 4096;

#[derive(Debug, Default)]
pub struct Stream {
    /// Sequence number of the stream's first byte, once known.
    pub base: Option<u32>,
    /// Contiguous bytes from `base`.
    pub buf: Vec<u8>,
    /// Segments after a gap: (offset from base, bytes). Few and small; kept unsorted.
    pending: Vec<(u32, Vec<u8>)>,
    pending_bytes: usize,
    /// More than MAX_BYTES were needed.
    pub overflow: bool,
}

/// What adding a segment did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// `buf` grew: parse it again.
    Grew,
    /// Nothing new in order (duplicate, or held after a gap).
    Nothing,
}

impl Stream {
    /// Sets the stream start from the initiator's SYN (sequence number `isn`).
    pub fn syn(&mut self, isn: u32) {
        if self.base.is_none() {
            self.base = Some(isn.wrapping_add(1));
        }
    }

    /// Offset of `seq` from the stream start, as a signed distance (the start is set from the
    /// first segment when no SYN was seen).
    pub fn offset(&mut self, seq: u32) -> i64 {
        let base = *self.base.get_or_insert(seq);
        i64::from(seq.wrapping_sub(base) as i32)
    }

    /// Whether the stream is still empty and `seq` is its first byte: the caller may parse the
    /// segment in place and only copy it when more is needed.
    pub fn at_start(&mut self, seq: u32) -> bool {
        self.buf.is_empty() && self.pending.is_empty() && self.offset(seq) == 0
    }

    pub fn add(&mut self, seq: u32, data: &[u8]) -> Added {
        if data.is_empty() || self.overflow {
            return Added::Nothing;
        }
        let mut off = self.offset(seq);
        let mut data = data;
        if off < 0 {
            // Starts before the stream start (a retransmit reaching back): keep the new part.
            let skip = off.unsigned_abs() as usize;
            if skip >= data.len() {
                return Added::Nothing;
            }
            data = &data[skip..];
            off = 0;
        }
        let off = off as usize;
        if off.saturating_add(data.len()) > MAX_BYTES {
            // Only the part within the bound matters; if nothing new fits, we are over.
            if off >= MAX_BYTES {
                self.overflow = true;
                return Added::Nothing;
            }
            data = &data[..MAX_BYTES - off];
            self.overflow = true;
        }
        if off > self.buf.len() {
            if self.buf.len() + self.pending_bytes + data.len() > MAX_BYTES {
                self.overflow = true;
                return Added::Nothing;
            }
            self.pending.push((off as u32, data.to_vec()));
            self.pending_bytes += data.len();
            return Added::Nothing;
        }
        let before = self.buf.len();
        self.append(off, data);
        // Segments that the gap closing made contiguous.
        while let Some(i) = self.pending.iter().position(|(o, _)| *o as usize <= self.buf.len()) {
            let (o, seg) = self.pending.swap_remove(i);
            self.pending_bytes -= seg.len();
            self.append(o as usize, &seg);
        }
        if self.buf.len() + self.pending_bytes > MAX_BYTES {
            self.overflow = true;
        }
        if self.buf.len() > before {
            Added::Grew
        } else {
            Added::Nothing
        }
    }

    /// Appends the part of `data` (at `off`, which is <= buf.len()) past the buffer's end.
    fn append(&mut self, off: usize, data: &[u8]) {
        let have = self.buf.len() - off;
        if data.len() > have {
            let room = MAX_BYTES - self.buf.len().min(MAX_BYTES);
            let new = &data[have..];
            self.buf.extend_from_slice(&new[..new.len().min(room)]);
        }
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.buf.capacity()
            + self.pending.capacity() * std::mem::size_of::<(u32, Vec<u8>)>()
            + self.pending.iter().map(|(_, v)| v.capacity()).sum::<usize>()
    }
}
