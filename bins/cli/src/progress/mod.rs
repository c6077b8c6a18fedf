//! Progress of a run, from the engine's telemetry (and, under `dagr run`, the spans the
//! program exported to this CLI): a live tree on a terminal ([`Mode::Tty`]), one line per step
//! start, end and output line for logs ([`Mode::Plain`]), or nothing ([`Mode::Quiet`]). All of
//! it goes to stderr: stdout stays the program's.

mod model;
mod plain;
mod tty;

use std::io::IsTerminal as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dagr_client::{TelemetryEvent, TelemetryFeed};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use model::{Outcome, Tree};

/// The `--progress` choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressArg {
    /// `tty` when stderr is a terminal, else `plain`.
    Auto,
    /// A live tree of the steps, redrawn in place.
    Tty,
    /// A line per step start and end and per output line (for CI logs).
    Plain,
    /// Nothing but errors.
    Quiet,
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Tty,
    Plain,
    Quiet,
}

impl Mode {
    pub fn resolve(arg: ProgressArg) -> Mode {
        match arg {
            ProgressArg::Auto if std::io::stderr().is_terminal() => Mode::Tty,
            ProgressArg::Auto | ProgressArg::Plain => Mode::Plain,
            ProgressArg::Tty => Mode::Tty,
            ProgressArg::Quiet => Mode::Quiet,
        }
    }
}

/// Set while an interactive process owns the terminal (`dagr terminal`, `Terminal.sync`): the
/// live tree is not drawn then (what it last drew stays above the process's screen).
#[derive(Debug, Clone, Default)]
pub struct TerminalInUse(Arc<AtomicBool>);

impl TerminalInUse {
    pub fn set(&self, in_use: bool) {
        self.0.store(in_use, Ordering::SeqCst);
    }

    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// How often the live tree is redrawn.
const FRAME: Duration = Duration::from_millis(100);

/// A renderer running on its own task until every source it reads has ended.
pub struct Progress {
    sources: mpsc::Sender<TelemetryEvent>,
    task: JoinHandle<Tree>,
    /// Lines printed above the live tree (a program's output under `dagr run`).
    above: mpsc::UnboundedSender<String>,
}

impl Progress {
    /// Starts rendering `feed` (the engine's telemetry for this client) in `mode`; `debug`
    /// shows internal steps too.
    pub fn start(
        mode: Mode,
        debug: bool,
        feed: TelemetryFeed,
        terminal: TerminalInUse,
    ) -> Progress {
        let (sources, events) = mpsc::channel(4096);
        let (above, above_rx) = mpsc::unbounded_channel();
        forward(feed.events, sources.clone());
        let task = tokio::spawn(render(mode, debug, events, above_rx, terminal));
        Progress {
            sources,
            task,
            above,
        }
    }

    /// Another source of telemetry (the spans a program exported to this CLI).
    pub fn add_source(&self, events: mpsc::Receiver<TelemetryEvent>) {
        forward(events, self.sources.clone());
    }

    /// Prints each line `from` yields above the live tree, until it ends.
    pub fn copy_lines_above(
        &self,
        from: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    ) -> JoinHandle<()> {
        use tokio::io::AsyncBufReadExt as _;
        let above = self.above.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(from).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if above.send(line).is_err() {
                    return;
                }
            }
        })
    }

    /// Waits until every source has ended (the engine ends its feed when the session is
    /// closed, after everything it produced), then prints the summary. Returns the steps.
    pub async fn finish(self) -> Tree {
        let Progress {
            sources,
            task,
            above,
        } = self;
        drop(sources);
        drop(above);
        task.await.unwrap_or_default()
    }
}

fn forward(mut from: mpsc::Receiver<TelemetryEvent>, to: mpsc::Sender<TelemetryEvent>) {
    tokio::spawn(async move {
        while let Some(event) = from.recv().await {
            if to.send(event).await.is_err() {
                return;
            }
        }
    });
}

async fn render(
    mode: Mode,
    debug: bool,
    mut events: mpsc::Receiver<TelemetryEvent>,
    mut above: mpsc::UnboundedReceiver<String>,
    terminal: TerminalInUse,
) -> Tree {
    let mut tree = Tree::default();
    let mut plain = plain::Plain::new(debug);
    let mut live = tty::Live::new(debug);
    let mut ticks = tokio::time::interval(FRAME);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut failures = Vec::new();
    let mut above_open = true;
    loop {
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { break };
                let changes = match event {
                    TelemetryEvent::Spans(data) => tree.apply_spans(data),
                    TelemetryEvent::Logs(data) => tree.apply_logs(data),
                    TelemetryEvent::Failed(message) => {
                        failures.push(message);
                        Vec::new()
                    }
                };
                if mode == Mode::Plain {
                    plain.print(&tree, &changes);
                }
            }
            line = above.recv(), if above_open => match line {
                Some(line) if mode == Mode::Tty => live.print_above(&tree, &line),
                Some(line) => eprintln!("{line}"),
                None => above_open = false,
            },
            _ = ticks.tick(), if mode == Mode::Tty => {
                if terminal.get() {
                    live.forget_frame();
                } else {
                    live.draw(&tree);
                }
            }
        }
    }
    while let Ok(line) = above.try_recv() {
        match mode {
            Mode::Tty => live.print_above(&tree, &line),
            _ => eprintln!("{line}"),
        }
    }
    match mode {
        Mode::Tty => live.finish(&tree),
        Mode::Plain => plain.finish(&tree),
        Mode::Quiet => {}
    }
    if mode != Mode::Quiet {
        for message in failures {
            eprintln!("dagr: telemetry subscription failed: {message}");
        }
        if tree.dropped > 0 {
            eprintln!(
                "dagr: {} telemetry records were dropped because this view did not keep up",
                tree.dropped
            );
        }
    }
    tree
}

/// The summary at the end: the finished tree (each step's outcome and duration, nested under
/// the step that caused it), then the failed steps' output.
pub(crate) fn print_summary(tree: &Tree, debug: bool) {
    for line in tty::Live::new(debug).lines(tree, false) {
        eprintln!("{line}");
    }
    print_failures(tree, debug);
}

/// The failed steps: each with its exit code and its whole output (as kept).
fn print_failures(tree: &Tree, debug: bool) {
    for (_, id) in tree.walk(debug) {
        let Some(step) = tree.step(id) else { continue };
        let Outcome::Failed(message) = &step.outcome else {
            continue;
        };
        // A call fails because a step under it failed: the step says it best.
        if step.lines.is_empty() && step.exit_code.is_none() {
            continue;
        }
        match step.exit_code {
            Some(code) => eprintln!("✘ {} failed with exit code {code}", step.name),
            None => eprintln!("✘ {} failed: {message}", step.name),
        }
        if step.lines_dropped > 0 {
            eprintln!("  … {} earlier lines not kept", step.lines_dropped);
        }
        for line in &step.lines {
            eprintln!("  │ {line}");
        }
    }
}
