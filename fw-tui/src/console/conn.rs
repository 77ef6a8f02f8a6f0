//! The connection thread: owns a [`Client`], says hello, subscribes to flows and alerts,
//! polls status and blocks, sends what the UI asks, and reconnects with backoff when the
//! daemon goes away. Everything it learns goes to the UI as a [`Msg`].

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fw_proto::control::{Answer, Event, FlowFilter, Op};

use super::app::{Command, Msg};
use crate::cli::{exit, exit_code};
use crate::client::{answer_kind, Client, ClientError};

#[derive(Debug, Clone)]
pub struct ConnOptions {
    pub socket: PathBuf,
    /// Flow update interval asked of the daemon.
    pub interval_ms: u64,
    /// How often status and blocks are polled.
    pub poll: Duration,
    /// Request timeout (and connect timeout).
    pub timeout: Duration,
}

/// Starts the connection thread; commands go in through the returned sender.
pub fn spawn(opts: ConnOptions, tx: Sender<Msg>) -> (Sender<Command>, JoinHandle<()>) {
    let (ctx, crx) = std::sync::mpsc::channel();
    let h = std::thread::Builder::new()
        .name("fw-tui-conn".into())
        .spawn(move || run(&opts, &tx, &crx))
        .unwrap_or_else(|e| panic!("cannot start the connection thread: {e}"));
    (ctx, h)
}

/// Why a session ended.
enum End {
    /// The UI asked to quit, or went away.
    Quit,
    Lost(ClientError),
}

/// Backoff after the n-th failed attempt: 250 ms doubling to 5 s.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((250u64 << attempt.saturating_sub(1).min(5)).min(5000))
}

pub fn run(opts: &ConnOptions, tx: &Sender<Msg>, rx: &Receiver<Command>) {
    let mut attempt = 0u32;
    loop {
        let error = match Client::connect_with_timeout(&opts.socket, opts.timeout) {
            Ok(mut c) => {
                attempt = 0;
                match session(&mut c, opts, tx, rx) {
                    End::Quit => return,
                    End::Lost(e) => e,
                }
            }
            Err(e) => e,
        };
        attempt += 1;
        if tx.send(Msg::Connecting { attempt, error: error.to_string() }).is_err() {
            return;
        }
        // Wait, still answering the UI: a quit ends the thread, requests are refused.
        let until = Instant::now() + backoff(attempt);
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match rx.recv_timeout(left) {
                Ok(Command::Quit) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(Command::Request(op)) => {
                    if is_action(&op) {
                        let _ = tx.send(Msg::Done {
                            op: op.name(),
                            result: Err("not connected to fw-daemon".into()),
                        });
                    }
                }
                Err(RecvTimeoutError::Timeout) => break,
            }
        }
    }
}

fn is_action(op: &Op) -> bool {
    matches!(op, Op::Block { .. } | Op::Unblock { .. } | Op::Reload)
}

fn lost(e: &ClientError) -> bool {
    exit_code(e) == exit::UNREACHABLE
}

fn session(c: &mut Client, opts: &ConnOptions, tx: &Sender<Msg>, rx: &Receiver<Command>) -> End {
    macro_rules! send {
        ($m:expr) => {
            if tx.send($m).is_err() {
                return End::Quit;
            }
        };
    }
    send!(Msg::Connected(c.hello().clone()));
    let sub = match c.request(Op::Subscribe {
        filter: FlowFilter::default(),
        interval_ms: Some(opts.interval_ms),
        alerts: true,
    }) {
        Ok(Answer::Subscribed { sub }) => sub,
        Ok(other) => {
            return End::Lost(ClientError::Protocol(format!(
                "expected a subscribed answer, got {}",
                answer_kind(&other)
            )))
        }
        Err(e) => return End::Lost(e),
    };
    // Recent alerts; a daemon without them is not fatal.
    match c.request(Op::Alerts { since_ms: None, limit: Some(200) }) {
        Ok(Answer::Alerts { alerts }) => send!(Msg::Alerts(alerts)),
        Err(e) if lost(&e) => return End::Lost(e),
        _ => {}
    }
    let mut last_poll: Option<Instant> = None;
    loop {
        loop {
            match rx.try_recv() {
                Ok(Command::Quit) | Err(TryRecvError::Disconnected) => return End::Quit,
                Ok(Command::Request(op)) => {
                    let action = is_action(&op);
                    let name = op.name();
                    match c.request(op) {
                        Ok(a) => {
                            if action {
                                send!(Msg::Done { op: name, result: Ok(a) });
                                last_poll = None;
                            } else if let Some(m) = answer_msg(a) {
                                send!(m);
                            }
                        }
                        Err(e) if lost(&e) => return End::Lost(e),
                        Err(e) => send!(Msg::Done { op: name, result: Err(e.to_string()) }),
                    }
                }
                Err(TryRecvError::Empty) => break,
            }
        }
        if last_poll.is_none_or(|t| t.elapsed() >= opts.poll) {
            for op in [Op::Status, Op::Blocks] {
                match c.request(op) {
                    Ok(a) => {
                        if let Some(m) = answer_msg(a) {
                            send!(m);
                        }
                    }
                    Err(e) if lost(&e) => return End::Lost(e),
                    Err(_) => {}
                }
            }
            last_poll = Some(Instant::now());
        }
        match c.next_event_timeout(Duration::from_millis(50)) {
            Ok(Some((s, event))) if s == sub => match event {
                Event::Flows { changed, removed, total, lost_events, full } => {
                    send!(Msg::Flows { changed, removed, total, lost_events, full })
                }
                Event::Alert(a) => send!(Msg::Alert(a)),
            },
            Ok(_) => {}
            Err(e) => return End::Lost(e),
        }
    }
}

fn answer_msg(a: Answer) -> Option<Msg> {
    Some(match a {
        Answer::Status(s) => Msg::Status(s),
        Answer::Blocks { blocks } => Msg::Blocks(blocks),
        Answer::Audit { records } => Msg::Audit(records),
        Answer::Alerts { alerts } => Msg::Alerts(alerts),
        _ => return None,
    })
}
