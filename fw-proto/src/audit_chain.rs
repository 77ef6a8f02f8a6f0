//! The audit trail's hash chain. Each record carries its sequence number (`seq`, from 0)
//! and the SHA-256 of the previous record's line exactly as written (`prev`; the first
//! record's is [`GENESIS`]). Editing a record changes its hash, so the record after it no
//! longer links; deleting records leaves a gap in `seq`; moving them breaks the order. When
//! the daemon starts a new file (rotation) its first record is a checkpoint, linked to the
//! last record of the file before: retention may delete old files, and a trail whose
//! oldest file starts with a checkpoint is whole from there on.
//!
//! What a chain alone cannot show is the loss of its newest records: pass the head the
//! daemon reports (`expect_head`) to check those too.

use sha2::{Digest, Sha256};

/// `prev` of the first record of a trail.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// The op of the record that starts each new file.
pub const CHECKPOINT_OP: &str = "audit-checkpoint";

/// The link to a record: the SHA-256 of its line, without the newline, in hex.
pub fn link(line: &str) -> String {
    let d = Sha256::digest(line.as_bytes());
    let mut s = String::with_capacity(64);
    for b in d {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Where a line is: its file and 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub file: String,
    pub line: usize,
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// A whole trail.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verified {
    /// Chained records.
    pub records: u64,
    /// Records before the first chained one (written by versions without the chain).
    pub unchained: u64,
    pub first_seq: Option<u64>,
    /// The newest record's `seq` and link.
    pub head: Option<(u64, String)>,
    /// Whether the oldest file starts with a checkpoint (older files were deleted).
    pub starts_at_checkpoint: bool,
    /// Lines that are not records (a write torn by a crash): not links of the chain, so
    /// the records around them still show whether anything was removed.
    pub torn: Vec<Place>,
}

/// The first place the chain does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Break {
    #[error("{at}: record {seq} was edited (the record after it, {next}, no longer links to it)")]
    Edited { at: Place, seq: u64, next: Place },
    #[error("{at}: record{} {} missing before record {found} (deleted)", if *found - *expected > 1 { "s" } else { "" }, range(*expected, *found))]
    Deleted { at: Place, expected: u64, found: u64 },
    #[error("{at}: record {found} comes after record {after} (reordered or repeated)")]
    Reordered { at: Place, found: u64, after: u64 },
    #[error("{at}: record {seq} starts the trail, but it is neither the first record nor a checkpoint (the records before it were deleted)")]
    StartsMidChain { at: Place, seq: u64 },
    #[error("{at}: a record without a chain link after the chain began (inserted, or its link removed)")]
    Unlinked { at: Place },
    #[error("the trail ends at record {found}, but the daemon's newest is {expected} (its last records were deleted or edited)")]
    Head { expected: String, found: String },
}

fn range(from: u64, to: u64) -> String {
    if to - from > 1 {
        format!("{from}..{}", to - 1)
    } else {
        from.to_string()
    }
}

/// Checks the chain across `files` (name, text), oldest first.
pub fn verify(files: &[(String, String)], expect_head: Option<(u64, &str)>) -> Result<Verified, Break> {
    let mut vf = Verifier::default();
    for (name, text) in files {
        for (i, line) in text.split('\n').enumerate() {
            vf.line(name, i + 1, line)?;
        }
    }
    vf.finish(expect_head)
}

/// The chain checked one line at a time, so a trail of many large files is read in
/// pieces: feed every line of every file, oldest first, then `finish`.
#[derive(Debug, Default)]
pub struct Verifier {
    v: Verified,
    prev: Option<(u64, String, Place)>,
}

impl Verifier {
    /// Line `n` (1-based) of `file`, without its newline.
    pub fn line(&mut self, file: &str, n: usize, line: &str) -> Result<(), Break> {
        if line.trim().is_empty() {
            return Ok(());
        }
        let at = Place { file: file.to_string(), line: n };
        let Ok(rec) = serde_json::from_str::<serde_json::Value>(line) else {
            self.v.torn.push(at);
            return Ok(());
        };
        let Some(seq) = rec.get("seq").and_then(|s| s.as_u64()) else {
            if self.prev.is_some() {
                return Err(Break::Unlinked { at });
            }
            self.v.unchained += 1;
            return Ok(());
        };
        let linked = rec.get("prev").and_then(|p| p.as_str()).unwrap_or("");
        match &self.prev {
            None => {
                let checkpoint = rec.get("op").and_then(|o| o.as_str()) == Some(CHECKPOINT_OP);
                if !(checkpoint || seq == 0 && linked == GENESIS) {
                    return Err(Break::StartsMidChain { at, seq });
                }
                self.v.starts_at_checkpoint = checkpoint && seq != 0;
                self.v.first_seq = Some(seq);
            }
            Some((pseq, phash, pat)) => {
                // No successor to u64::MAX: anything after it is out of order.
                let next = pseq.checked_add(1);
                if Some(seq) == next && linked != phash {
                    return Err(Break::Edited { at: pat.clone(), seq: *pseq, next: at });
                }
                if next.is_some_and(|n| seq > n) {
                    return Err(Break::Deleted { at, expected: pseq + 1, found: seq });
                }
                if seq <= *pseq {
                    return Err(Break::Reordered { at, found: seq, after: *pseq });
                }
            }
        }
        self.prev = Some((seq, link(line), at));
        self.v.records += 1;
        Ok(())
    }

    /// The result, checked against the daemon's newest record when given.
    pub fn finish(mut self, expect_head: Option<(u64, &str)>) -> Result<Verified, Break> {
        self.v.head = self.prev.map(|(s, h, _)| (s, h));
        if let Some((seq, hash)) = expect_head {
            let found = self.v.head.as_ref().map_or("no record".to_string(), |(s, h)| format!("{s} ({h})"));
            if self.v.head.as_ref().is_none_or(|(s, h)| *s != seq || h != hash) {
                return Err(Break::Head { expected: format!("{seq} ({hash})"), found });
            }
        }
        Ok(self.v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chain of `n` records as the daemon writes them, one line each.
    fn chain(n: u64) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut prev = GENESIS.to_string();
        for seq in 0..n {
            let line =
                format!(r#"{{"time_ms":{seq},"op":"block","result":"ok","seq":{seq},"prev":"{prev}"}}"#);
            prev = link(&line);
            out.push(line);
        }
        out
    }

    fn files(lines: &[String]) -> Vec<(String, String)> {
        vec![("audit.jsonl".into(), lines.join("\n") + "\n")]
    }

    #[test]
    fn a_whole_chain_verifies_and_each_tamper_is_named() {
        let c = chain(5);
        let ok = verify(&files(&c), None).unwrap();
        assert_eq!((ok.records, ok.head.as_ref().map(|h| h.0)), (5, Some(4)));
        let head = ok.head.clone().unwrap();
        assert!(verify(&files(&c), Some((head.0, &head.1))).is_ok());

        let mut edited = c.clone();
        edited[2] = edited[2].replace("\"block\"", "\"unblock\"");
        assert_eq!(
            verify(&files(&edited), None).unwrap_err().to_string(),
            "audit.jsonl:3: record 2 was edited (the record after it, audit.jsonl:4, no longer links to it)"
        );
        let mut deleted = c.clone();
        deleted.remove(1);
        assert_eq!(
            verify(&files(&deleted), None).unwrap_err().to_string(),
            "audit.jsonl:2: record 1 missing before record 2 (deleted)"
        );
        let mut reordered = c.clone();
        reordered.swap(2, 3);
        assert!(matches!(
            verify(&files(&reordered), None),
            Err(Break::Deleted { .. } | Break::Reordered { .. })
        ));
        let head_cut = &c[1..];
        assert!(matches!(verify(&files(head_cut), None), Err(Break::StartsMidChain { seq: 1, .. })));
        // The newest record deleted: only the daemon's head shows it.
        assert!(verify(&files(&c[..4]), None).is_ok());
        assert!(matches!(verify(&files(&c[..4]), Some((head.0, &head.1))), Err(Break::Head { .. })));
        // A torn line is noted, and the chain around it still holds.
        let mut torn = c.clone();
        torn.insert(3, r#"{"time_ms":9,"op""#.into());
        let v = verify(&files(&torn), None).unwrap();
        assert_eq!(v.torn, [Place { file: "audit.jsonl".into(), line: 4 }]);
        // Unchained records of an older version before the chain are counted, not errors.
        let mut old = vec![r#"{"time_ms":1,"op":"block","result":"ok"}"#.to_string()];
        old.extend(c.clone());
        assert_eq!(verify(&files(&old), None).unwrap().unchained, 1);
        // Hostile numbers: no overflow, just an order error.
        let max = format!(r#"{{"op":"audit-checkpoint","seq":{},"prev":"x"}}"#, u64::MAX);
        let after = format!(r#"{{"op":"block","seq":0,"prev":"{}"}}"#, link(&max));
        assert!(matches!(verify(&files(&[max, after]), None), Err(Break::Reordered { .. })));
        let mut inserted = c.clone();
        inserted.insert(2, r#"{"time_ms":1,"op":"unblock","result":"ok"}"#.into());
        assert!(matches!(verify(&files(&inserted), None), Err(Break::Unlinked { .. })));
    }
}
