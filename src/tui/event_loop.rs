//! The terminal session: raw mode and alternate screen behind a guard that restores them on every
//! exit path, an input thread, and a loop that drains all engine events each frame before drawing
//! at most ~30 times a second (a flood of events never stalls the screen).

use std::io::{self, Stdout};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use crossterm::cursor::{Hide, Show};
use crossterm::event::{self, Event, KeyCode, KeyModifiers};
use crossterm::execute;
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::engine::events::{EngineEvent, LogLevel};
use crate::record::results::TrialResult;

use super::app::{Action, App, Catalog, ExportRequest, LogLine, Report, Screen};
use super::{draw, Backend, CancelToken};

/// ~30 frames per second.
const FRAME: Duration = Duration::from_millis(33);
/// Longest a frame spends applying events: an engine producing faster than the UI can apply must
/// not keep the screen from being drawn; what is left waits for the next frame.
const DRAIN_BUDGET: Duration = Duration::from_millis(25);
/// Longest an idle screen goes undrawn (see `drive`).
const HEARTBEAT: Duration = Duration::from_secs(1);
/// How often the results view looks at the folders of runs submitted to Slurm.
const SLURM_POLL: Duration = Duration::from_secs(2);
/// After quitting with a run going, how long to wait for the engines to save partial results.
const QUIT_GRACE: Duration = Duration::from_secs(5);

/// True while raw mode / the alternate screen are on, so restoring happens exactly once.
static TERMINAL_ACTIVE: AtomicBool = AtomicBool::new(false);
/// Set by the panic hook: the loop then stops instead of drawing over a restored terminal.
static PANICKED: AtomicBool = AtomicBool::new(false);
static PANIC_HOOK: Once = Once::new();

fn restore_terminal() {
    if TERMINAL_ACTIVE.swap(false, Ordering::SeqCst) {
        let _ = disable_raw_mode();
        let _ = execute!(io::stdout(), LeaveAlternateScreen, Show);
    }
}

/// Owns the terminal modes; dropping it (normal return, `?`, unwinding) puts the terminal back.
struct TerminalGuard;

impl TerminalGuard {
    fn enter() -> io::Result<TerminalGuard> {
        PANIC_HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                PANICKED.store(true, Ordering::SeqCst);
                // Restore first, or the panic message lands in the alternate screen and is lost.
                restore_terminal();
                previous(info);
            }));
        });
        PANICKED.store(false, Ordering::SeqCst);
        enable_raw_mode()?;
        TERMINAL_ACTIVE.store(true, Ordering::SeqCst);
        let guard = TerminalGuard;
        execute!(io::stdout(), EnterAlternateScreen, Hide)?;
        Ok(guard)
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

/// Whether the loop goes on after an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Quit,
}

/// Carries out what a key asked for. Engine events come back on `events`; what background
/// exports report comes back through the app's reports (see [`drain_events`]).
pub fn perform(
    app: &mut App,
    backend: &Arc<dyn Backend>,
    action: Action,
    events: &UnboundedSender<EngineEvent>,
) -> Flow {
    match action {
        Action::None => {}
        Action::Quit => return Flow::Quit,
        Action::StartRun(choice) => {
            let cancel = CancelToken::new();
            app.begin_run(choice.clone(), cancel.clone());
            if let Err(error) = backend.start(choice, events.clone(), cancel) {
                app.run_start_failed(&error);
            }
        }
        Action::RefreshPastRuns => app.set_past_runs(backend.past_runs()),
        Action::RefreshMatrix => {
            if let Some(root) = backend.matrix_root() {
                app.matrix.refresh(&root);
            }
        }
        Action::LoadTrial { slot, path } => {
            app.trial_loaded(slot, load_viewable(backend.as_ref(), &path))
        }
        Action::Export(request) => {
            app.reply(LogLevel::Info, "exporting PNGs…");
            let backend = Arc::clone(backend);
            let reports = app.report_sender();
            let job = move || export(backend.as_ref(), request, &reports);
            // Plotting takes a while: keep it off the drawing thread when there is a runtime.
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn_blocking(job)),
                Err(_) => job(),
            }
        }
    }
    Flow::Continue
}

/// A saved trial, refused with its path named when it is inconsistent or too large to show
/// (a damaged or hostile file must not abort the console on an allocation).
fn load_viewable(backend: &dyn Backend, path: &std::path::Path) -> anyhow::Result<TrialResult> {
    let trial = backend.load_trial(path)?;
    super::trial_view::check_viewable(&trial)
        .map_err(|e| e.context(format!("{}", path.display())))?;
    Ok(trial)
}

/// Writes the PNGs: each written path (or error) goes to the log, and one reply says how the
/// whole export went, so it is seen on whatever screen the person is on.
fn export(backend: &dyn Backend, request: ExportRequest, reports: &UnboundedSender<Report>) {
    let send = |report: fn(LogLine) -> Report, level, text: String| {
        let _ = reports.send(report(LogLine { level, text }));
    };
    let trials: Vec<anyhow::Result<_>> = match request {
        ExportRequest::Trials(trials) => trials.into_iter().map(Ok).collect(),
        ExportRequest::Run(summary) => {
            let (level, reply) = match backend.export_run(&summary) {
                Ok(paths) => {
                    for path in &paths {
                        let line = format!("  wrote {}", path.display());
                        send(Report::Detail, LogLevel::Info, line);
                    }
                    let place = common_dir(&paths)
                        .map(|dir| format!(" in {}", dir.display()))
                        .unwrap_or_default();
                    let reply = format!("exported {} PNGs of the run{place}", paths.len());
                    (LogLevel::Info, reply)
                }
                Err(error) => (LogLevel::Error, format!("export failed: {error:#}")),
            };
            send(Report::Reply, level, reply);
            return;
        }
    };
    let trial_count = trials.len();
    let mut written_paths = Vec::new();
    let mut first_error = None;
    let mut failed = 0;
    for trial in trials {
        let written = trial.and_then(|trial| {
            let paths = backend.export_pngs(&trial)?;
            Ok((trial.experiment, trial.trial, paths))
        });
        match written {
            Ok((experiment, trial, paths)) => {
                let note = format!("exported {experiment} trial {trial}: {} PNGs", paths.len());
                send(Report::Detail, LogLevel::Info, note);
                for path in &paths {
                    send(
                        Report::Detail,
                        LogLevel::Info,
                        format!("  wrote {}", path.display()),
                    );
                }
                written_paths.extend(paths);
            }
            Err(error) => {
                let message = format!("export failed: {error:#}");
                send(Report::Detail, LogLevel::Error, message.clone());
                first_error.get_or_insert(message);
                failed += 1;
            }
        }
    }
    let trials_word = if trial_count == 1 { "trial" } else { "trials" };
    let place = common_dir(&written_paths)
        .map(|dir| format!(" in {}", dir.display()))
        .unwrap_or_default();
    match first_error {
        None => {
            let summary = format!(
                "exported {} PNGs of {trial_count} {trials_word}{place}",
                written_paths.len()
            );
            send(Report::Reply, LogLevel::Info, summary);
        }
        Some(error) => {
            let summary = format!("{failed} of {trial_count} {trials_word} not exported: {error}");
            send(Report::Reply, LogLevel::Error, summary);
        }
    }
}

/// The deepest folder holding every path, so one reply can say where an export went.
fn common_dir(paths: &[PathBuf]) -> Option<PathBuf> {
    let mut dir = paths.first()?.parent()?.to_path_buf();
    while !paths.iter().all(|path| path.starts_with(&dir)) {
        dir = dir.parent()?.to_path_buf();
    }
    Some(dir)
}

/// Reads terminal input on its own thread (crossterm's reads block). Dropping it stops and joins
/// the thread on every exit path, so no key is swallowed after the console is gone.
struct InputReader {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl InputReader {
    fn spawn(input: UnboundedSender<io::Result<Event>>) -> io::Result<InputReader> {
        let stop = Arc::new(AtomicBool::new(false));
        let stop_seen = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("tui-input".into())
            .spawn(move || {
                while !stop_seen.load(Ordering::SeqCst) {
                    match event::poll(Duration::from_millis(50)) {
                        Ok(false) => {}
                        Ok(true) => {
                            let read = event::read();
                            let failed = read.is_err();
                            if input.send(read).is_err() || failed {
                                break;
                            }
                        }
                        Err(error) => {
                            let _ = input.send(Err(error));
                            break;
                        }
                    }
                }
            })?;
        Ok(InputReader {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for InputReader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            // Normally the thread ends within one poll interval (50 ms). When the terminal has
            // gone away (hang-up), crossterm's poll can spin on end-of-file and never return:
            // then the thread is left behind rather than keeping the process alive.
            let deadline = Instant::now() + Duration::from_millis(300);
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
    }
}

/// SIGTERM, SIGHUP, SIGINT and SIGQUIT end the session like a quit (the guard restores the
/// terminal). Ctrl-C typed in the console arrives as a key in raw mode; SIGINT comes from
/// elsewhere (`kill -INT`, a supervising script) and must not leave the screen taken over.
struct Termination {
    #[cfg(unix)]
    signals: [tokio::signal::unix::Signal; 4],
}

impl Termination {
    fn new() -> io::Result<Termination> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Termination {
                signals: [
                    signal(SignalKind::terminate())?,
                    signal(SignalKind::hangup())?,
                    signal(SignalKind::interrupt())?,
                    signal(SignalKind::quit())?,
                ],
            })
        }
        #[cfg(not(unix))]
        Ok(Termination {})
    }

    /// The number of the signal that arrived (SIGTERM 15, SIGHUP 1, SIGINT 2, SIGQUIT 3).
    async fn wait(&mut self) -> i32 {
        #[cfg(unix)]
        {
            let [term, hup, int, quit] = &mut self.signals;
            tokio::select! {
                _ = term.recv() => 15,
                _ = hup.recv() => 1,
                _ = int.recv() => 2,
                _ = quit.recv() => 3,
            }
        }
        #[cfg(not(unix))]
        std::future::pending::<i32>().await
    }
}

/// How the console ended when nothing failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The person quit.
    Quit,
    /// A termination signal (its number) ended it; the shell convention is exit status 128 + n.
    Signal(i32),
}

/// Runs the console until the person quits, a signal arrives, or something fails. The terminal
/// is restored in every case, and a run still going is cancelled (given the same grace to save
/// its partial results on a signal as on a quit).
pub async fn run_tui(backend: Arc<dyn Backend>) -> anyhow::Result<Ending> {
    let mut app = App::new(Catalog::from_backend(backend.as_ref()));
    app.set_past_runs(backend.past_runs());
    if let Some(problem) = backend.startup_problem() {
        app.log_line(crate::engine::events::LogLevel::Error, problem);
    }
    let mut termination = Termination::new()?;
    let guard = TerminalGuard::enter()?;
    let mut terminal = Terminal::new(CrosstermBackend::new(io::stdout()))?;
    let (input_tx, mut input_rx) = unbounded_channel();
    let reader = InputReader::spawn(input_tx)?;

    let outcome = drive(
        &mut terminal,
        &mut app,
        &backend,
        &mut input_rx,
        &mut termination,
    )
    .await;

    // Whatever ended the loop, nobody watches the engines any more.
    app.cancel_live_run();
    drop(reader);
    // ratatui's Terminal shows the cursor when dropped and reports a failure with eprintln!,
    // which panics when stderr is the same vanished terminal: where the cursor cannot be shown,
    // the terminal is gone and is let go without that attempt.
    if terminal.show_cursor().is_err() {
        std::mem::forget(terminal);
    } else {
        drop(terminal);
    }
    drop(guard);
    outcome
}

/// Applies every waiting engine event (within [`DRAIN_BUDGET`]) and every report of background
/// work; true if there was any.
pub fn drain_events(app: &mut App, events: &mut UnboundedReceiver<EngineEvent>) -> bool {
    let reported = app.apply_reports();
    let deadline = Instant::now() + DRAIN_BUDGET;
    let mut applied = 0usize;
    while let Ok(event) = events.try_recv() {
        app.handle_event(event);
        applied += 1;
        if applied.is_multiple_of(1024) && Instant::now() >= deadline {
            break;
        }
    }
    reported || applied > 0
}

/// The terminal is gone without a signal reaching us (its window closed while a shell ignored
/// SIGHUP, or its input ended): treated as a hang-up. A live run gets the quit's grace to save
/// its partial results; with none, the console ends at once (returned).
fn hang_up(
    app: &mut App,
    ending: &mut Ending,
    quit_deadline: &mut Option<Instant>,
) -> Option<Ending> {
    const SIGHUP: i32 = 1;
    if app.live().is_none() {
        return Some(Ending::Signal(SIGHUP));
    }
    *ending = Ending::Signal(SIGHUP);
    if quit_deadline.is_some() {
        // Already saving after a quit: let that grace run out.
        return None;
    }
    *quit_deadline = Some(start_grace(
        app,
        "the terminal went away: saving the run's partial results before leaving…",
    ));
    None
}

/// Cancels the live run and says why; returns when to leave even if its engines have not
/// finished saving (a quit, a signal and a vanished terminal all wait the same).
fn start_grace(app: &mut App, why: &str) -> Instant {
    app.cancel_live_run();
    app.log_line(LogLevel::Warn, why);
    Instant::now() + QUIT_GRACE
}

async fn drive(
    terminal: &mut Terminal<CrosstermBackend<Stdout>>,
    app: &mut App,
    backend: &Arc<dyn Backend>,
    input: &mut UnboundedReceiver<io::Result<Event>>,
    termination: &mut Termination,
) -> anyhow::Result<Ending> {
    let (engine_tx, mut engine_rx) = unbounded_channel();
    let mut ticker = tokio::time::interval(FRAME);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut dirty = true;
    let mut quit_deadline: Option<Instant> = None;
    let mut ending = Ending::Quit;
    // After a signal the terminal may be gone (SIGHUP: the window closed): drawing and reading
    // may fail, and must not cut the grace that lets a cancelled run save its results short.
    let mut input_open = true;
    // Once a frame fails to draw, the terminal is taken for gone and not drawn on again.
    let mut terminal_lost = false;
    // An idle screen is still drawn now and then: a failed draw is the only sign that a
    // terminal vanished while no signal reached us (its input just reads end-of-file).
    let mut last_drawn = Instant::now();
    // Submitted Slurm runs are polled off the drawing thread while the results view is open.
    let (slurm_tx, mut slurm_rx) = unbounded_channel();
    let mut slurm_polled: Option<Instant> = None;
    let mut slurm_polling = false;
    loop {
        let signalled = matches!(ending, Ending::Signal(_));
        tokio::select! {
            _ = ticker.tick() => {
                dirty |= drain_events(app, &mut engine_rx);
                // The matrix view follows its folder while a matrix fills it.
                if app.screen == Screen::Matrix && app.matrix.due() {
                    if let Some(root) = backend.matrix_root() {
                        dirty |= app.matrix.refresh(&root);
                    }
                }
                if PANICKED.load(Ordering::SeqCst) {
                    anyhow::bail!("a task panicked; the console stopped (details above and in the log file)");
                }
                if app.screen == Screen::Results
                    && !slurm_polling
                    && slurm_polled.is_none_or(|at| at.elapsed() >= SLURM_POLL)
                {
                    slurm_polling = true;
                    slurm_polled = Some(Instant::now());
                    let (backend, sender) = (Arc::clone(backend), slurm_tx.clone());
                    tokio::task::spawn_blocking(move || {
                        let _ = sender.send(backend.slurm_runs());
                    });
                }
                let heartbeat = last_drawn.elapsed() >= HEARTBEAT;
                if !terminal_lost && (dirty || heartbeat || app.live().is_some()) {
                    let drawn = terminal.draw(|frame| draw(frame, app));
                    dirty = false;
                    last_drawn = Instant::now();
                    if drawn.is_err() {
                        terminal_lost = true;
                        input_open = false;
                        if !signalled {
                            if let Some(left) = hang_up(app, &mut ending, &mut quit_deadline) {
                                return Ok(left);
                            }
                        }
                    }
                }
                if quit_deadline.is_some_and(|deadline| app.live().is_none() || Instant::now() >= deadline) {
                    return Ok(ending);
                }
            }
            Some(runs) = slurm_rx.recv() => {
                slurm_polling = false;
                if runs != app.slurm_runs {
                    app.slurm_runs = runs;
                    dirty = true;
                }
            }
            read = input.recv(), if input_open => {
                dirty = true;
                match read {
                    Some(Ok(Event::Key(key))) => {
                        let insists = matches!(key.code, KeyCode::Char('q') | KeyCode::Esc)
                            || (key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c'));
                        if quit_deadline.is_some() {
                            if insists {
                                return Ok(ending);
                            }
                            continue;
                        }
                        let action = app.handle_key(key);
                        if perform(app, backend, action, &engine_tx) == Flow::Quit {
                            if app.live().is_none() {
                                return Ok(ending);
                            }
                            quit_deadline = Some(start_grace(app, "waiting for the engines to save partial results (q to leave now)…"));
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => {
                        input_open = false;
                        if !signalled {
                            if let Some(left) = hang_up(app, &mut ending, &mut quit_deadline) {
                                return Ok(left);
                            }
                        }
                    }
                }
            }
            signal = termination.wait() => {
                // A second signal, or one with nothing to save, ends the console at once.
                if signalled || quit_deadline.is_some() || app.live().is_none() {
                    return Ok(Ending::Signal(signal));
                }
                ending = Ending::Signal(signal);
                quit_deadline = Some(start_grace(
                    app,
                    "signal received: saving the run's partial results before leaving (send it again to leave now)…",
                ));
                dirty = true;
            }
        }
    }
}
