//! The conntrack marks of inspected connections: one state per connection, written by the
//! ruleset (on accept) and by the daemon (on its verdict), read by the ruleset before the
//! established shortcut. The high half says the state, the low half which policy flagged the
//! connection (15 bits, a hash of its id, see `compile`) and on which side it was accepted
//! (bit 15: in the ingress chain, so the initiator is remote), so a verdict keeps both.
//!
//! ```text
//! accepted by an inspected policy ──► UNDECIDED_CLOSED / UNDECIDED_OPEN  (payload -> NFQUEUE)
//!     daemon: allowed, or violation with on_violation = "alert" ──► PASSED  (kernel only)
//!     daemon: violation with "cut" / "quarantine"               ──► CUT     (RST passes, rest reset)
//! ```
//! fw owns the conntrack mark in the namespaces it manages.

/// Undecided, fail closed: queued without bypass (no daemon: the packets drop).
pub const UNDECIDED_CLOSED: u32 = 0x6677_0000;
/// Undecided, fail open: queued with bypass (no daemon: the packets pass uninspected).
pub const UNDECIDED_OPEN: u32 = 0x6676_0000;
/// Decided and let through: the flow never leaves the kernel again.
pub const PASSED: u32 = 0x6678_0000;
/// Decided and cut: later packets of the flow are answered with a TCP reset (or dropped).
pub const CUT: u32 = 0x6679_0000;

/// The bits that say which policy flagged a connection.
pub const POLICY_BITS: u32 = 0x0000_7fff;
/// Set when the connection was accepted in the ingress chain: its initiator is remote.
pub const REMOTE_INITIATOR: u32 = 0x0000_8000;
const STATE_BITS: u32 = 0xffff_0000;

/// What a connection mark says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Undecided { fail_open: bool },
    Passed,
    Cut,
}

/// The state a mark holds, if it is one of ours.
pub fn state(mark: u32) -> Option<State> {
    match mark & STATE_BITS {
        UNDECIDED_CLOSED => Some(State::Undecided { fail_open: false }),
        UNDECIDED_OPEN => Some(State::Undecided { fail_open: true }),
        PASSED => Some(State::Passed),
        CUT => Some(State::Cut),
        _ => None,
    }
}

/// `mark` moved to `state`, keeping its policy and side bits.
pub fn with_state(mark: u32, state: State) -> u32 {
    let high = match state {
        State::Undecided { fail_open: false } => UNDECIDED_CLOSED,
        State::Undecided { fail_open: true } => UNDECIDED_OPEN,
        State::Passed => PASSED,
        State::Cut => CUT,
    };
    high | (mark & !STATE_BITS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_keep_the_policy() {
        for s in [
            State::Undecided { fail_open: false },
            State::Undecided { fail_open: true },
            State::Passed,
            State::Cut,
        ] {
            let m = with_state(0x6677_daa4, s);
            assert_eq!(state(m), Some(s));
            assert_eq!(m & POLICY_BITS, 0x5aa4);
            assert_eq!(m & REMOTE_INITIATOR, REMOTE_INITIATOR);
        }
        assert_eq!(state(0), None);
        assert_eq!(state(0x1234_5678), None);
        // The ruleset tests undecided with one prefix: both undecided states share 15 bits.
        assert_eq!(UNDECIDED_CLOSED & 0xfffe_0000, UNDECIDED_OPEN);
    }
}
