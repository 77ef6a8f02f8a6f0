//! The live console (`fw-tui` without a subcommand): flows, drops and alerts, containers,
//! rules and the audit trail, with one-key blocking.
//!
//! - [`app`]: the router: how keys and daemon messages reach the model, the filter line, the
//!   overlay and the current screen (no I/O);
//! - [`model`]: what the daemon told us, with per-row indexes kept up to date per delta;
//! - [`screens`]: one module per screen, each owning its list, selection, keys and drawing;
//! - [`dialog`], [`help`]: the overlays; [`filterbar`]: the `/` line (the language itself is
//!   `fw_proto::filter`, shared with the CLI and the daemon);
//! - [`keys`]: key bindings as data, read by dispatch and by `?`;
//! - [`columns`]: honest table columns (ellipsis, numbers never cut);
//! - [`ui`]: the frame, returning the [`layout`] it drew for the mouse;
//! - [`conn`]: the thread that talks to the daemon and reconnects;
//! - this module: the terminal (raw mode, alternate screen, mouse, restored on exit and on
//!   panic) and the event loop.

pub mod app;
pub mod columns;
pub mod conn;
pub mod dialog;
pub mod filterbar;
pub mod help;
pub mod keys;
pub mod layout;
pub mod list;
pub mod model;
pub mod screen_id;
pub mod screens;
#[doc(hidden)]
pub mod testdata;
pub mod theme;
pub mod ui;
pub mod widgets;

#[cfg(test)]
mod tests;

use std::io::{self, Stdout};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{self, DisableMouseCapture, EnableMouseCapture, Event as TermEvent};
use ratatui::crossterm::execute;
use ratatui::crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::Terminal;

use app::{App, Command, Msg};

/// Console settings from the command line.
#[derive(Debug, Clone)]
pub struct Options {
    pub socket: PathBuf,
    /// How often the daemon sends flow updates.
    pub interval_ms: u64,
    /// Colours (false when `NO_COLOR` is set).
    pub color: bool,
    /// The screen and filter it opens with.
    pub screen: screens::ScreenId,
    pub filter: Option<String>,
}

/// Whether `NO_COLOR` asks for no colour (set and not empty, per no-color.org).
pub fn no_color() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn restore_terminal() {
    let _ = disable_raw_mode();
    let _ =
        execute!(io::stdout(), DisableMouseCapture, LeaveAlternateScreen, ratatui::crossterm::cursor::Show);
}

/// Runs the console until `q` / Ctrl-C (or SIGTERM, SIGHUP, SIGINT). The terminal is
/// restored on return and on panic.
pub fn run(opts: Options) -> io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let stop = Arc::new(AtomicBool::new(false));
    let handle = |sig, r: io::Result<signal_hook::SigId>| {
        r.map_err(|e| io::Error::new(e.kind(), format!("cannot handle signal {sig}: {e}")))
    };
    for sig in [SIGTERM, SIGINT] {
        handle(sig, signal_hook::flag::register(sig, stop.clone()))?;
    }
    // A hangup means the terminal is gone (nothing to restore), and crossterm then spins
    // reading EOF without returning to the loop: exit at once (128 + SIGHUP).
    handle(
        SIGHUP,
        signal_hook::flag::register_conditional_shutdown(SIGHUP, 129, Arc::new(AtomicBool::new(true))),
    )?;
    enable_raw_mode().map_err(|e| io::Error::new(e.kind(), format!("cannot set up the terminal: {e}")))?;
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore_terminal();
        prev(info);
    }));
    let res = (|| {
        execute!(io::stdout(), EnterAlternateScreen, EnableMouseCapture)?;
        let mut terminal = Terminal::new(CrosstermBackend::new(io::stdout()))?;
        terminal.clear()?;
        event_loop(&mut terminal, &opts, &stop)
    })();
    restore_terminal();
    let _ = std::panic::take_hook();
    res
}

fn event_loop(
    terminal: &mut Terminal<CrosstermBackend<Stdout>>,
    opts: &Options,
    stop: &AtomicBool,
) -> io::Result<()> {
    let (tx, rx) = mpsc::channel();
    let (cmd, _conn) = conn::spawn(
        conn::ConnOptions {
            socket: opts.socket.clone(),
            interval_ms: opts.interval_ms,
            poll: Duration::from_secs(2),
            timeout: Duration::from_secs(10),
        },
        tx,
    );
    let mut app = App::new(&opts.socket.display().to_string(), now_ms(), opts.color);
    app.open_on(opts.screen, opts.filter.as_deref());
    let size = terminal.size()?;
    app.size = (size.width, size.height);
    let mut dirty = true;
    let mut last_tick = Instant::now();
    let frame_every = Duration::from_millis(33);
    let mut last_draw = Instant::now() - frame_every;
    loop {
        if stop.load(Ordering::Relaxed) {
            let _ = cmd.send(Command::Quit);
            return Ok(());
        }
        if dirty && last_draw.elapsed() >= frame_every {
            terminal.draw(|f| app.set_layout(ui::draw(f, &app)))?;
            last_draw = Instant::now();
            dirty = false;
        }
        let wait =
            if dirty { frame_every.saturating_sub(last_draw.elapsed()) } else { Duration::from_millis(100) };
        // A typed filter waits for a pause in typing: wake for it.
        let wait = match app.filter.due {
            Some(due) => wait.min(due.saturating_duration_since(Instant::now())),
            None => wait,
        };
        let mut msgs = Vec::new();
        if event::poll(wait)? {
            // Drain pending input before drawing, a bounded batch so that signals and the
            // daemon's messages are still seen.
            for _ in 0..256 {
                match event::read()? {
                    TermEvent::Key(k) => msgs.push(Msg::Key(k)),
                    TermEvent::Mouse(m) => msgs.push(Msg::Mouse(m)),
                    TermEvent::Resize(w, h) => msgs.push(Msg::Resize(w, h)),
                    _ => {}
                }
                if !event::poll(Duration::ZERO)? {
                    break;
                }
            }
        }
        loop {
            match rx.try_recv() {
                Ok(m) => msgs.push(m),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    return Err(io::Error::other("the connection thread stopped"));
                }
            }
        }
        if last_tick.elapsed() >= Duration::from_secs(1) {
            msgs.push(Msg::Tick(now_ms()));
            last_tick = Instant::now();
        }
        for m in msgs {
            dirty = true;
            for c in app.update(m) {
                match c {
                    Command::Quit => {
                        let _ = cmd.send(Command::Quit);
                        return Ok(());
                    }
                    c => {
                        let _ = cmd.send(c);
                    }
                }
            }
        }
        // Heavy filtering only once the keys typed so far are handled and none is waiting.
        if app.filter.due.is_some() && !event::poll(Duration::ZERO)? && app.apply_due_filter(Instant::now()) {
            dirty = true;
        }
    }
}
