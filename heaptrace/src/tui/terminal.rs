//! The terminal side: raw mode and the alternate screen behind a guard,
//! stderr captured while the screen is ours, the live loop (records and
//! stats from a channel, keys, redraws at most four times a second) and
//! the browse loop over a finished recording.
//!
//! The terminal is restored on every way out: the guard's drop (the normal
//! end, `q`, an error), and a panic hook for panics on any thread (it also
//! puts fd 2 back first, so the panic message is seen). ratatui's own
//! `init`/`restore` are not used: their panic hook stays installed after
//! the view closes and knows nothing of the captured stderr.

use std::{
    fs::File,
    io::{self, Read, Stdout, Write},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        Arc, Once,
        atomic::{AtomicBool, AtomicI32, Ordering},
        mpsc::{Receiver, TryRecvError},
    },
    time::{Duration, Instant},
};

use ratatui::{
    Terminal,
    backend::{Backend, CrosstermBackend},
    crossterm::{
        cursor,
        event::{self, Event},
        execute,
        terminal::{EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode},
    },
};

use super::{
    state::ViewState,
    timeline::Timeline,
    ui::{Command, UiState},
    view::{self, ChartData, Mode},
};
use crate::{core::Record, output::CollectorStats};

/// At most this many redraws a second for new data (keys redraw at once).
pub const REDRAW_EVERY: Duration = Duration::from_millis(250);
/// The longest the loop sleeps waiting for a key: how late a close is seen.
const KEY_WAIT: Duration = Duration::from_millis(250);
/// Captured stderr lines kept to print after the view closes.
const MESSAGES_KEPT: usize = 1000;

/// True while the screen is in raw mode and the alternate screen.
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// The real stderr while fd 2 is captured, else -1.
static SAVED_STDERR: AtomicI32 = AtomicI32::new(-1);

/// What the collector sends the view.
pub enum Msg {
    Record(Box<Record>),
    Stats(CollectorStats),
    /// Tracing ended: restore the terminal and return.
    Close,
}

/// Puts the terminal back (idempotent: only the first call acts).
fn restore_terminal() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let _ = disable_raw_mode();
        let _ = execute!(io::stdout(), LeaveAlternateScreen, cursor::Show);
    }
}

/// Puts the real stderr back on fd 2 (idempotent).
fn restore_stderr() {
    let saved = SAVED_STDERR.swap(-1, Ordering::SeqCst);
    if saved >= 0 {
        // SAFETY: `saved` is the duplicate of the original fd 2 made by
        // `StderrCapture::start`, still open (only this swap hands it out);
        // dup2 atomically replaces fd 2 (the pipe's write end) with it, and
        // close releases the duplicate, which nothing else uses.
        unsafe {
            libc::dup2(saved, libc::STDERR_FILENO);
            libc::close(saved);
        }
    }
}

/// Once per process: on a panic on any thread, stderr and the terminal
/// come back before the message is printed. Inert when the view is closed.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_stderr();
            restore_terminal();
            previous(info);
        }));
    });
}

/// fd 2 redirected into a pipe while the view is up, so that the
/// collector's messages do not garble the screen; the view shows the last
/// one, and all are printed again once the terminal is restored.
struct StderrCapture {
    read: File,
    partial: Vec<u8>,
    lines: Vec<String>,
    /// Lines received, including any let go beyond [`MESSAGES_KEPT`].
    count: usize,
}

impl StderrCapture {
    fn start() -> io::Result<Self> {
        let mut fds = [-1; 2];
        // SAFETY: pipe2 writes two new descriptors into the two-element
        // array on success and touches nothing else.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created and are owned here.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // The writers (eprintln! on any thread) block rather than fail when
        // the pipe is full; only the reader polls.
        // SAFETY: fcntl on a descriptor owned here, with integer arguments.
        unsafe {
            let flags = libc::fcntl(write.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(write.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
        // SAFETY: duplicates fd 2 (open for the life of the process) into a
        // new close-on-exec descriptor; the result is checked.
        let saved = unsafe { libc::fcntl(libc::STDERR_FILENO, libc::F_DUPFD_CLOEXEC, 3) };
        if saved < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: dup2 replaces fd 2 with the pipe's write end; both are
        // open. `write` is then dropped: fd 2 holds the only write end, so
        // the reader sees the end once fd 2 is restored.
        if unsafe { libc::dup2(write.as_raw_fd(), libc::STDERR_FILENO) } < 0 {
            let e = io::Error::last_os_error();
            // SAFETY: `saved` was just made here and is not shared.
            unsafe { libc::close(saved) };
            return Err(e);
        }
        SAVED_STDERR.store(saved, Ordering::SeqCst);
        Ok(Self { read: File::from(read), partial: Vec::new(), lines: Vec::new(), count: 0 })
    }

    /// Reads what was written so far; true if a line came.
    fn poll(&mut self) -> bool {
        let before = self.count;
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = self.read.read(&mut buf) {
            self.partial.extend_from_slice(&buf[..n]);
            while let Some(i) = self.partial.iter().position(|&b| b == b'\n') {
                let line = String::from_utf8_lossy(&self.partial[..i]).into_owned();
                self.partial.drain(..=i);
                if self.lines.len() == MESSAGES_KEPT {
                    self.lines.remove(0);
                }
                self.lines.push(line);
                self.count += 1;
            }
        }
        self.count > before
    }

    fn last(&self) -> Option<&str> {
        self.lines.last().map(String::as_str)
    }

    /// fd 2 back, and every line captured.
    fn finish(mut self) -> Vec<String> {
        restore_stderr();
        self.poll();
        if !self.partial.is_empty() {
            self.lines.push(String::from_utf8_lossy(&self.partial).into_owned());
        }
        std::mem::take(&mut self.lines)
    }
}

/// The screen while the view is up: restored when dropped, captured
/// stderr printed again then.
pub struct Screen {
    pub terminal: Terminal<CrosstermBackend<Stdout>>,
    capture: Option<StderrCapture>,
}

impl Screen {
    /// Raw mode, the alternate screen, no cursor; with `capture_stderr`,
    /// fd 2 into a pipe.
    pub fn enter(capture_stderr: bool) -> io::Result<Self> {
        install_panic_hook();
        let capture = if capture_stderr { Some(StderrCapture::start()?) } else { None };
        let mut screen = Self { terminal: Terminal::new(CrosstermBackend::new(io::stdout()))?, capture };
        ACTIVE.store(true, Ordering::SeqCst);
        enable_raw_mode()?;
        execute!(io::stdout(), EnterAlternateScreen, cursor::Hide)?;
        screen.terminal.clear()?;
        Ok(screen)
    }

    /// Restores the terminal and stderr, and prints what was captured.
    pub fn close(mut self) {
        self.restore();
    }

    fn restore(&mut self) {
        restore_terminal();
        if let Some(capture) = self.capture.take() {
            let mut stderr = io::stderr().lock();
            for line in capture.finish() {
                let _ = writeln!(stderr, "{line}");
            }
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        self.restore();
    }
}

/// The live view's thread: until `Close` (or the collector going away),
/// applies what comes, draws, and handles keys; `q` or Ctrl-C set `quit`
/// for the collector to see.
pub fn run_live(rx: Receiver<Msg>, quit: Arc<AtomicBool>) -> io::Result<()> {
    let mut screen = Screen::enter(true)?;
    let result = live_loop(&mut screen, &rx, &quit);
    // On an error the collector is asked to stop too.
    quit.store(true, Ordering::SeqCst);
    screen.close();
    result
}

fn live_loop(screen: &mut Screen, rx: &Receiver<Msg>, quit: &AtomicBool) -> io::Result<()> {
    let mut state = ViewState::default();
    let mut ui = UiState::default();
    let mut spare = Vec::new();
    let mut chart = ChartData::default();
    let mut dirty = true;
    let mut last_draw: Option<Instant> = None;
    loop {
        loop {
            match rx.try_recv() {
                Ok(Msg::Record(r)) => state.apply(&r),
                Ok(Msg::Stats(s)) => state.apply_stats(&s),
                Ok(Msg::Close) | Err(TryRecvError::Disconnected) => return Ok(()),
                Err(TryRecvError::Empty) => break,
            }
            dirty = true;
        }
        if let Some(c) = &mut screen.capture {
            dirty |= c.poll();
        }
        let due = last_draw.is_none_or(|t| t.elapsed() >= REDRAW_EVERY);
        if dirty && due {
            let (message, messages) = screen.capture.as_ref().map_or((None, 0), |c| (c.last(), c.count));
            let mode = Mode::Live { message, messages };
            let mut rows = view::recycle(std::mem::take(&mut spare));
            screen.terminal.draw(|f| view::draw(f, &state, &ui, mode, &mut rows, &mut chart))?;
            spare = view::recycle(rows);
            dirty = false;
            last_draw = Some(Instant::now());
        }
        let wait = match (dirty, last_draw) {
            (true, Some(t)) => REDRAW_EVERY.saturating_sub(t.elapsed()),
            _ => KEY_WAIT,
        };
        if event::poll(wait)? {
            match event::read()? {
                Event::Key(key) => {
                    let mut rows = view::recycle(std::mem::take(&mut spare));
                    ui.visible(&state, &mut rows);
                    let command = ui.on_key(key, &rows);
                    spare = view::recycle(rows);
                    match command {
                        Command::Quit => quit.store(true, Ordering::SeqCst),
                        Command::None => continue,
                        _ => {}
                    }
                    // A key redraws at once.
                    last_draw = None;
                    dirty = true;
                }
                Event::Resize(..) => {
                    screen.terminal.autoresize()?;
                    last_draw = None;
                    dirty = true;
                }
                _ => {}
            }
        }
    }
}

/// `heaptrace report FILE --tui`: the view over a finished list of
/// records, with a time cursor (left/right, `[`/`]`, Home/End).
pub fn browse(records: Vec<Record>) -> anyhow::Result<()> {
    let mut timeline = Timeline::new(records);
    let mut screen = Screen::enter(false)?;
    let result = browse_loop(&mut screen.terminal, &mut timeline, |_| event::read());
    screen.close();
    Ok(result?)
}

/// The browse loop, over any backend and any source of events (a test
/// scripts them).
pub fn browse_loop<B: Backend>(
    terminal: &mut Terminal<B>,
    timeline: &mut Timeline,
    mut next_event: impl FnMut(&Terminal<B>) -> io::Result<Event>,
) -> io::Result<()>
where
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let mut ui = UiState { browsing: true, ..Default::default() };
    let mut spare = Vec::new();
    let mut chart = ChartData::default();
    loop {
        let mode = Mode::Browse { cursor: timeline.cursor() };
        let mut rows = view::recycle(std::mem::take(&mut spare));
        let state = timeline.state();
        terminal
            .draw(|f| view::draw(f, state, &ui, mode, &mut rows, &mut chart))
            .map_err(io::Error::other)?;
        loop {
            match next_event(terminal)? {
                Event::Key(key) => match ui.on_key(key, &rows) {
                    Command::Quit => return Ok(()),
                    Command::None => continue,
                    Command::Redraw => {}
                    Command::Step(s) => {
                        spare = view::recycle(rows);
                        timeline.step(s);
                        break;
                    }
                    Command::Home => {
                        spare = view::recycle(rows);
                        timeline.home();
                        break;
                    }
                    Command::End => {
                        spare = view::recycle(rows);
                        timeline.end();
                        break;
                    }
                },
                Event::Resize(..) => terminal.autoresize().map_err(io::Error::other)?,
                _ => continue,
            }
            spare = view::recycle(rows);
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use ratatui::{
        backend::TestBackend,
        crossterm::event::{KeyCode, KeyEvent, KeyModifiers},
    };

    use super::*;
    use crate::tui::fixtures::*;

    fn screen_text(t: &Terminal<TestBackend>) -> String {
        let b = t.backend().buffer();
        (0..b.area.height)
            .map(|y| (0..b.area.width).map(|x| b[(x, y)].symbol()).collect::<String>())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Runs the browse loop over scripted keys, and returns the screen
    /// after each (the loop draws before it reads the next key).
    fn browse_keys(records: Vec<Record>, keys: &[KeyCode]) -> (Vec<String>, Timeline) {
        let mut timeline = Timeline::new(records);
        let mut terminal = Terminal::new(TestBackend::new(160, 45)).unwrap();
        let mut screens = Vec::new();
        let mut script = keys.iter().copied().chain([KeyCode::Char('q')]);
        browse_loop(&mut terminal, &mut timeline, |t| {
            screens.push(screen_text(t));
            Ok(Event::Key(KeyEvent::new(script.next().unwrap(), KeyModifiers::NONE)))
        })
        .unwrap();
        (screens, timeline)
    }

    #[test]
    fn browsing_moves_the_cursor_through_time() {
        let (screens, timeline) = browse_keys(
            leaking_run(42, 120),
            &[KeyCode::Home, KeyCode::Right, KeyCode::Char(']'), KeyCode::Left, KeyCode::End],
        );
        assert!(screens[0].contains("replay 00:18:40 (+120 s)"), "starts at the end:\n{}", screens[0]);
        assert!(screens[0].contains("220.0 MiB"));
        assert!(screens[1].contains("replay 00:16:40 (+0 s)"), "{}", screens[1]);
        assert!(screens[2].contains("replay 00:16:41 (+1 s)"), "{}", screens[2]);
        assert!(screens[2].contains("101.0 MiB"), "the state at the cursor:\n{}", screens[2]);
        assert!(screens[3].contains("(+31 s)") && screens[3].contains("131.0 MiB"), "{}", screens[3]);
        assert!(screens[4].contains("(+30 s)") && screens[4].contains("130.0 MiB"), "{}", screens[4]);
        assert!(screens[5].contains("(+120 s)"), "{}", screens[5]);
        assert_eq!(timeline.cursor(), 1120.0);
    }

    #[test]
    fn browsing_keeps_sorting_and_selection() {
        let mut records = leaking_run(42, 10);
        records.push(snapshot(1010.5, 7, "small", MIB, 0, crate::core::record::Verdict::unknown("")));
        let (screens, _) = browse_keys(records, &[KeyCode::Char('j'), KeyCode::Char('9')]);
        assert!(screens[0].contains("pid 42 node"), "{}", screens[0]);
        assert!(screens[1].contains("pid 7 small"), "{}", screens[1]);
        assert!(screens[2].contains("sort pid"), "{}", screens[2]);
        assert!(screens[2].contains("pid 7 small"), "the selection stays: {}", screens[2]);
    }
}
