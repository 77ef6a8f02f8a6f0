//! Inline inspection in one container's namespace: the kernel holds the payload packets of
//! flagged, undecided connections on NFQUEUE (`compile`: `inspect_queue`); each is judged by
//! the container's [`Inspector`] and answered here:
//! - `Hold`: kept in the kernel (no verdict yet) until the flow is decided;
//! - within policy (or a violation under `on_violation = "alert"`): the connection's mark
//!   becomes PASSED, then every held packet is accepted in order; the rest of the flow never
//!   leaves the kernel;
//! - a violation under `"cut"` / `"quarantine"`: the mark becomes CUT, the held packets are
//!   dropped (none of the offending bytes reach the other end) except that one leaving this
//!   namespace is replaced by a reset for its destination, and the local socket is aborted:
//!   both ends see the connection fail at once (`flows/reset.rs`).
//!
//! Undecided flows time out (`Inspector::expire`): the loop wakes for the next deadline even
//! when no packet arrives, so held packets never wait longer than the policy's `timeout`.
//!
//! `Inline` is the decision logic (pure: queued packets and engine results in, kernel actions
//! out); `Kernel` carries the actions out on sockets opened inside the namespace.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek};
use std::net::IpAddr;
use std::path::Path;

use fw_proto::RuleRef;

use super::conntrack::CtControl;
use super::inspection::{tuple_of, Policies, TapStats};
use super::nfqueue::{self, Hook, NfQueue, Queued};
use super::reset::{self, SockDiag};
use crate::inspect::{mark, packet, Finding, FlowKey, Inspector, Verdict};
use crate::rules::model::OnViolation;

/// Packets each queue holds at most (then the kernel drops, or for fail-open accepts, more).
pub const QUEUE_MAXLEN: u32 = 4096;
const RCVBUF: usize = 8 << 20;

/// Something the kernel side must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Set the mark of the connection whose original tuple is `flow`.
    Mark {
        flow: FlowKey,
        mark: u32,
    },
    Verdict {
        queue: u16,
        id: u32,
        verdict: nfqueue::Verdict,
    },
    /// Abort the local TCP socket of the connection (`local` is in this namespace).
    Abort {
        local: IpAddr,
        lport: u16,
        remote: IpAddr,
        rport: u16,
    },
}

/// A finding with the policy it was judged under.
pub type Found = (Finding, RuleRef, OnViolation);

/// What one round produced: kernel actions, findings, and for cut flows what was done.
#[derive(Debug, Default)]
pub struct Step {
    pub actions: Vec<Action>,
    pub findings: Vec<Found>,
    pub cut: HashMap<FlowKey, &'static str>,
}

/// The TCP header fields a reset is made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seg {
    src: IpAddr,
    sport: u16,
    dst: IpAddr,
    dport: u16,
    seq: u32,
    ack: u32,
}

#[derive(Debug, Clone, Copy)]
struct Held {
    queue: u16,
    id: u32,
    hook: Hook,
    tcp: Option<Seg>,
}

/// An undecided flow's held packets and what decides their fate.
struct Waiting {
    pkts: Vec<Held>,
    mark: u32,
    rule: RuleRef,
    on: OnViolation,
}

/// Held packets per flow, for one container.
#[derive(Default)]
pub struct Inline {
    waiting: HashMap<FlowKey, Waiting>,
    held: usize,
    pub stats: TapStats,
}

fn held_of(q: &Queued) -> Held {
    let tcp = packet::parse(&q.payload).filter(|p| p.proto == packet::TCP).map(|p| Seg {
        src: p.src,
        sport: p.sport,
        dst: p.dst,
        dport: p.dport,
        seq: p.seq,
        ack: p.ack,
    });
    Held { queue: q.queue, id: q.id, hook: q.hook, tcp }
}

impl Inline {
    /// Packets held now.
    pub fn held(&self) -> usize {
        self.held
    }

    /// One queued packet of `container`.
    pub fn packet(
        &mut self,
        q: &Queued,
        container: &str,
        policies: &Policies,
        inspector: &mut Inspector,
        now_ms: i64,
        out: &mut Step,
    ) {
        self.stats.packets += 1;
        let this = held_of(q);
        let accept = |out: &mut Step| {
            out.actions.push(Action::Verdict { queue: q.queue, id: q.id, verdict: nfqueue::Verdict::Accept })
        };
        if !matches!(mark::state(q.mark), Some(mark::State::Undecided { .. })) {
            // Not queued by our rules (they always carry the undecided mark): not ours to judge.
            return accept(out);
        }
        // Who started the connection: the side that accepted it (mark) and where the packet is.
        let from_initiator = (q.hook == Hook::Output) == (q.mark & mark::REMOTE_INITIATOR == 0);
        let Some((insp, rule)) = policies.flagged(container, q.mark) else {
            // Flagged by a policy this daemon no longer knows (renamed or removed by a reload
            // while the flow was undecided): it cannot be judged, so it fails closed.
            self.stats.unknown_rule += 1;
            let Some(p) = packet::parse(&q.payload) else { return accept(out) };
            let fwd = FlowKey { proto: p.proto, src: p.src, sport: p.sport, dst: p.dst, dport: p.dport };
            let key = if from_initiator { fwd } else { fwd.reversed() };
            let rule = RuleRef { kind: fw_proto::RuleKind::Policy, id: "(unknown)".into(), source: None };
            let reason = "undecided: flagged by a policy that is no longer loaded".to_string();
            let f = Finding::Violation { flow: key, protocol: None, name: None, raw: None, reason };
            out.findings.push((f, rule, OnViolation::Cut));
            return self.cut(key, vec![this], q.mark, out);
        };
        let j = inspector.judge(&q.payload, Some(from_initiator), insp, now_ms);
        let Some(key) = j.flow else { return accept(out) };
        let first = !j.findings.is_empty();
        let on = insp.on_violation;
        out.findings.extend(j.findings.into_iter().map(|f| (f, rule.clone(), on)));
        match j.verdict {
            Verdict::Hold => {
                let w = self.waiting.entry(key).or_insert_with(|| Waiting {
                    pkts: Vec::new(),
                    mark: q.mark,
                    rule: rule.clone(),
                    on,
                });
                w.pkts.push(this);
                self.held += 1;
                self.stats.held_peak = self.stats.held_peak.max(self.held as u64);
            }
            Verdict::Pass => {
                if j.done {
                    out.actions.push(Action::Mark {
                        flow: key,
                        mark: mark::with_state(q.mark, mark::State::Passed),
                    });
                }
                accept(out);
            }
            Verdict::Accept => self.release(key, Some(this), j.done, q.mark, out),
            Verdict::Violation => match on {
                OnViolation::Alert => self.release(key, Some(this), j.done, q.mark, out),
                OnViolation::Cut | OnViolation::Quarantine if first => {
                    let mut pkts = self.take(&key);
                    pkts.push(this);
                    self.cut(key, pkts, q.mark, out);
                }
                // A packet of a flow cut already (on its way before the mark changed).
                OnViolation::Cut | OnViolation::Quarantine => {
                    for h in self.take(&key).into_iter().chain([this]) {
                        out.actions.push(Action::Verdict {
                            queue: h.queue,
                            id: h.id,
                            verdict: nfqueue::Verdict::Drop,
                        });
                    }
                }
            },
        }
    }

    /// A flow the engine decided without a packet (timed out, or dropped to stay within its
    /// bound): always a violation.
    pub fn decided(&mut self, key: FlowKey, finding: Finding, out: &mut Step) {
        let Some(w) = self.waiting.remove(&key) else { return };
        self.held -= w.pkts.len().min(self.held);
        let (mark, on) = (w.mark, w.on);
        out.findings.push((finding, w.rule, on));
        match on {
            OnViolation::Alert => release(key, w.pkts, true, mark, out),
            OnViolation::Cut | OnViolation::Quarantine => self.cut(key, w.pkts, mark, out),
        }
    }

    fn take(&mut self, key: &FlowKey) -> Vec<Held> {
        let pkts = self.waiting.remove(key).map(|w| w.pkts).unwrap_or_default();
        self.held -= pkts.len().min(self.held);
        pkts
    }

    /// Lets `key`'s held packets and `this` through (see [`release`]).
    fn release(&mut self, key: FlowKey, this: Option<Held>, done: bool, m: u32, out: &mut Step) {
        let mut pkts = self.take(&key);
        pkts.extend(this);
        release(key, pkts, done, m, out);
    }

    /// Cuts `key`: mark CUT, held packets dropped, except that the first one leaving this
    /// namespace becomes a reset for its destination (with the sequence number it expects:
    /// the lowest held, as nothing held reached it), and the local socket aborted.
    fn cut(&mut self, key: FlowKey, mut pkts: Vec<Held>, m: u32, out: &mut Step) {
        out.actions.push(Action::Mark { flow: key, mark: mark::with_state(m, mark::State::Cut) });
        pkts.sort_by_key(|h| (h.queue, h.id));
        let leaving: Vec<Seg> =
            pkts.iter().filter(|h| h.hook == Hook::Output).filter_map(|h| h.tcp).collect();
        let reset = leaving.first().map(|first| {
            let seq = leaving.iter().map(|s| s.seq).fold(first.seq, |lo, s| {
                if (s.wrapping_sub(lo) as i32) < 0 {
                    s
                } else {
                    lo
                }
            });
            (first.seq, reset::tcp_rst(first.src, first.sport, first.dst, first.dport, seq, first.ack))
        });
        let mut replaced = false;
        let mut abort = None;
        for h in &pkts {
            let v = match (&reset, h.tcp) {
                (Some((seq, rst)), Some(s)) if !replaced && h.hook == Hook::Output && s.seq == *seq => {
                    replaced = true;
                    nfqueue::Verdict::AcceptAs(rst.clone())
                }
                _ => nfqueue::Verdict::Drop,
            };
            out.actions.push(Action::Verdict { queue: h.queue, id: h.id, verdict: v });
            if let (None, Some(s)) = (&abort, h.tcp) {
                abort = Some(match h.hook {
                    Hook::Output => {
                        Action::Abort { local: s.src, lport: s.sport, remote: s.dst, rport: s.dport }
                    }
                    _ => Action::Abort { local: s.dst, lport: s.dport, remote: s.src, rport: s.sport },
                });
            }
        }
        let tcp = abort.is_some();
        out.actions.extend(abort);
        out.cut.insert(key, if tcp { "reset both ends" } else { "dropped" });
    }
}

/// Accepts `pkts` in the order the kernel queued them; `done`: the flow leaves inspection,
/// its mark set first so that nothing more of it queues.
fn release(key: FlowKey, mut pkts: Vec<Held>, done: bool, m: u32, out: &mut Step) {
    if done {
        out.actions.push(Action::Mark { flow: key, mark: mark::with_state(m, mark::State::Passed) });
    }
    pkts.sort_by_key(|h| (h.queue, h.id));
    for h in pkts {
        out.actions.push(Action::Verdict { queue: h.queue, id: h.id, verdict: nfqueue::Verdict::Accept });
    }
}

/// The queues and conntrack speak through the one netlink layer: its error.
pub type InlineError = crate::nl::Error;

/// The namespace's sockets: the queues, conntrack (marks), sock_diag (aborts), and the
/// kernel's queue counters (`/proc/net/netfilter/nfnetlink_queue` as seen inside it).
pub struct Kernel {
    pub queue: NfQueue,
    ct: CtControl,
    diag: Option<SockDiag>,
    counters: Option<File>,
    queues: [u16; 2],
}

impl Kernel {
    /// Binds `queue` (fail closed) and `queue + 1` (fail open: a full queue accepts).
    pub fn open(netns: &Path, queue: u16) -> Result<Kernel, InlineError> {
        let open = queue.wrapping_add(1);
        let q =
            NfQueue::open(netns, &[(queue, 0), (open, nfqueue::NFQA_CFG_F_FAIL_OPEN)], RCVBUF, QUEUE_MAXLEN)?;
        let ct = CtControl::open(netns)?;
        let diag = match SockDiag::open(netns) {
            Ok(d) => Some(d),
            Err(e) => {
                tracing::warn!(error = %e, "inspection: cannot abort local sockets of cut flows");
                None
            }
        };
        let counters =
            crate::netns::run_in(netns, || File::open("/proc/thread-self/net/netfilter/nfnetlink_queue"))
                .ok()
                .and_then(Result::ok);
        Ok(Kernel { queue: q, ct, diag, counters, queues: [queue, open] })
    }

    /// Carries `actions` out in order; verdicts go out in batches, each before the next
    /// mark or abort. Failures are logged: a verdict lost leaves its packet to the socket's
    /// end (dropped), never let through.
    pub fn execute(&mut self, actions: &[Action]) {
        for a in actions {
            match a {
                Action::Verdict { queue, id, verdict } => self.queue.verdict(*queue, *id, verdict, None),
                Action::Mark { flow, mark } => {
                    self.flush();
                    // No entry that way round: the flow was oriented by a guess (its policy
                    // gone); the reply tuple names the same entry.
                    let r = self.ct.set_mark(&tuple_of(flow), *mark).and_then(|found| {
                        if found {
                            Ok(true)
                        } else {
                            self.ct.set_mark(&tuple_of(&flow.reversed()), *mark)
                        }
                    });
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "inspection: cannot mark a decided flow");
                    }
                }
                Action::Abort { local, lport, remote, rport } => {
                    self.flush();
                    if let Some(d) = &mut self.diag {
                        if let Err(e) = d.destroy(*local, *lport, *remote, *rport) {
                            tracing::debug!(error = %e, "inspection: abort of a cut flow's socket");
                        }
                    }
                }
            }
        }
        self.flush();
    }

    fn flush(&mut self) {
        if let Err(e) = self.queue.flush() {
            tracing::warn!(error = %e, "inspection: verdicts not sent (their packets are dropped)");
        }
    }

    /// Packets the kernel could not queue so far (queue full, or our socket overrun), from
    /// its counters for our two queues plus the overruns this socket saw.
    pub fn overflow(&mut self) -> u64 {
        let mut n = self.queue.overruns;
        if let Some(f) = &mut self.counters {
            let mut text = String::new();
            if f.rewind().is_ok() && f.read_to_string(&mut text).is_ok() {
                n += queue_drops(&text, &self.queues);
            }
        }
        n
    }
}

/// Sum of `queue_dropped` and `queue_user_dropped` of `queues` in the kernel's table
/// (`queue portid total copy_mode copy_range dropped user_dropped id 1` per line).
pub fn queue_drops(text: &str, queues: &[u16]) -> u64 {
    text.lines()
        .filter_map(|l| {
            let f: Vec<u64> = l.split_whitespace().filter_map(|w| w.parse().ok()).collect();
            let q = u16::try_from(*f.first()?).ok()?;
            queues.contains(&q).then(|| f.get(5).copied().unwrap_or(0) + f.get(6).copied().unwrap_or(0))
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::model::{AppProto, Inspect};

    const HELLO: &[u8] = include_bytes!("../inspect/testdata/clienthello-tls13-api.example.com.bin");
    const C: [u8; 4] = [10, 0, 0, 2];
    const S: [u8; 4] = [10, 0, 0, 1];

    fn seg(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut t = Vec::new();
        t.extend_from_slice(&sport.to_be_bytes());
        t.extend_from_slice(&dport.to_be_bytes());
        t.extend_from_slice(&seq.to_be_bytes());
        t.extend_from_slice(&77u32.to_be_bytes());
        t.extend_from_slice(&[0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
        t.extend_from_slice(payload);
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 6, 0, 0];
        p[2..4].copy_from_slice(&((20 + t.len()) as u16).to_be_bytes());
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(&t);
        p
    }

    fn queued(id: u32, hook: Hook, mark: u32, payload: Vec<u8>) -> Queued {
        Queued { queue: 101, id, hook, mark, indev: None, outdev: None, payload, cap_len: None }
    }

    fn setup(names: &[&str], on: OnViolation) -> Policies {
        let mut p = Policies::default();
        let insp = Inspect {
            protocol: Some(AppProto::Tls),
            tls_sni: names.iter().map(|s| s.to_string()).collect(),
            http_host: vec![],
            dns_names: vec![],
            on_violation: on,
            max_packets: 6,
            timeout_ms: 2000,
            fail: None,
        };
        let rule = RuleRef { kind: fw_proto::RuleKind::Policy, id: "tls".into(), source: None };
        p.by_id.insert("tls".into(), (insp, rule));
        p.by_mark.entry("c".into()).or_default().insert(0x1234, "tls".into());
        p
    }

    const MARK: u32 = 0x6677_1234;

    fn verdicts(s: &Step) -> Vec<(u32, nfqueue::Verdict)> {
        s.actions
            .iter()
            .filter_map(|a| match a {
                Action::Verdict { id, verdict, .. } => Some((*id, verdict.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_split_hello_is_held_then_released_after_the_mark() {
        let p = setup(&["api.example.com"], OnViolation::Cut);
        let (mut inl, mut insp, mut step) = (Inline::default(), Inspector::new(16), Step::default());
        let a = queued(1, Hook::Output, MARK, seg(C, S, 40000, 443, 1000, &HELLO[..3]));
        let b = queued(2, Hook::Output, MARK, seg(C, S, 40000, 443, 1003, &HELLO[3..]));
        inl.packet(&a, "c", &p, &mut insp, 0, &mut step);
        assert!(step.actions.is_empty(), "held: no verdict yet");
        assert_eq!(inl.held(), 1);
        inl.packet(&b, "c", &p, &mut insp, 0, &mut step);
        assert!(matches!(step.actions[0], Action::Mark { mark: 0x6678_1234, .. }), "{:?}", step.actions);
        assert_eq!(verdicts(&step), vec![(1, nfqueue::Verdict::Accept), (2, nfqueue::Verdict::Accept)]);
        assert_eq!(inl.held(), 0);
        assert!(matches!(&step.findings[..], [(Finding::Identified { .. }, _, _)]));
    }

    #[test]
    fn a_cut_drops_every_held_byte_resets_the_server_and_aborts_the_client() {
        let p = setup(&["ok.example"], OnViolation::Cut);
        let (mut inl, mut insp, mut step) = (Inline::default(), Inspector::new(16), Step::default());
        for (id, (off, part)) in
            [(0usize, &HELLO[..1]), (1, &HELLO[1..2]), (2, &HELLO[2..])].into_iter().enumerate()
        {
            let q = queued(id as u32 + 1, Hook::Output, MARK, seg(C, S, 40000, 443, 1000 + off as u32, part));
            inl.packet(&q, "c", &p, &mut insp, 0, &mut step);
        }
        assert!(matches!(step.actions[0], Action::Mark { mark: 0x6679_1234, .. }), "{:?}", step.actions);
        let v = verdicts(&step);
        // The first segment becomes a reset carrying the first held sequence number.
        let nfqueue::Verdict::AcceptAs(rst) = &v[0].1 else { panic!("{v:?}") };
        let r = packet::parse(rst).unwrap();
        assert_eq!((r.seq, r.ack, r.flags & 0x04 != 0, r.payload.len()), (1000, 77, true, 0));
        assert_eq!((r.sport, r.dport), (40000, 443));
        assert_eq!(&v[1..], &[(2, nfqueue::Verdict::Drop), (3, nfqueue::Verdict::Drop)]);
        assert!(matches!(step.actions.last(), Some(Action::Abort { lport: 40000, rport: 443, .. })));
        assert_eq!(step.cut.values().next(), Some(&"reset both ends"));
        // A straggler of the cut flow is dropped, nothing else.
        let mut later = Step::default();
        let s = queued(9, Hook::Output, MARK, seg(C, S, 40000, 443, 1000, HELLO));
        inl.packet(&s, "c", &p, &mut insp, 0, &mut later);
        assert_eq!(
            later.actions,
            vec![Action::Verdict { queue: 101, id: 9, verdict: nfqueue::Verdict::Drop }]
        );
    }

    #[test]
    fn a_timeout_cuts_what_is_held_and_alert_mode_lets_it_go() {
        for (on, dropped) in [(OnViolation::Cut, true), (OnViolation::Alert, false)] {
            let p = setup(&["api.example.com"], on);
            let (mut inl, mut insp, mut step) = (Inline::default(), Inspector::new(16), Step::default());
            let a =
                queued(1, Hook::Input, MARK | mark::REMOTE_INITIATOR, seg(C, S, 40000, 443, 5, &HELLO[..10]));
            inl.packet(&a, "c", &p, &mut insp, 1_000, &mut step);
            assert!(insp.expire(2_999).is_empty());
            let exp = insp.expire(3_000);
            assert_eq!(exp.len(), 1);
            for (k, f) in exp {
                inl.decided(k, f, &mut step);
            }
            let v = verdicts(&step);
            let want = if dropped { nfqueue::Verdict::Drop } else { nfqueue::Verdict::Accept };
            assert_eq!(v, vec![(1, want)], "{on:?}");
            assert!(
                matches!(&step.findings[..], [(Finding::Violation { reason, .. }, _, _)] if reason == "undecided after 2000 ms"),
                "{:?}",
                step.findings
            );
            if dropped {
                // Arrived from outside: the local server's socket is the one aborted.
                assert!(
                    matches!(step.actions.last(), Some(Action::Abort { lport: 443, .. })),
                    "{:?}",
                    step.actions
                );
            }
        }
    }

    #[test]
    fn unknown_marks_fail_closed_and_foreign_ones_pass() {
        let p = setup(&[], OnViolation::Alert);
        let (mut inl, mut insp, mut step) = (Inline::default(), Inspector::new(16), Step::default());
        let q = queued(1, Hook::Output, 0x6677_0001, seg(C, S, 40000, 443, 5, HELLO));
        inl.packet(&q, "c", &p, &mut insp, 0, &mut step);
        assert_eq!(
            verdicts(&step)[0].1,
            nfqueue::Verdict::AcceptAs(reset::tcp_rst(IpAddr::from(C), 40000, IpAddr::from(S), 443, 5, 77))
        );
        let mut step = Step::default();
        inl.packet(&queued(2, Hook::Output, 0, seg(C, S, 1, 2, 3, b"x")), "c", &p, &mut insp, 0, &mut step);
        assert_eq!(verdicts(&step), vec![(2, nfqueue::Verdict::Accept)]);
    }

    #[test]
    fn kernel_queue_counters_parse() {
        let t = "  101  12345     0 2 65535     3     4        9  1\n  102      0     0 2 65535     1     0        0  1\n  7 1 0 2 0 100 100 0 1\n";
        assert_eq!(queue_drops(t, &[101, 102]), 8);
        assert_eq!(queue_drops("garbage\n\n", &[101]), 0);
    }
}
