//! `--progress=tty`: the live tree, redrawn in place on stderr: each step with a spinner while
//! it runs, its duration, `CACHED` for cache hits, the last lines of a running step's output;
//! at the end the finished tree stays, followed by the failed steps' whole output.

use std::io::Write as _;

use crossterm::{QueueableCommand as _, cursor, terminal};

use super::model::{Outcome, Tree, now_nanos};

const SPINNER: [&str; 10] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

/// Output lines shown under a running step.
const TAIL_LINES: usize = 3;

pub struct Live {
    debug: bool,
    /// Lines of the frame on screen (to move back over).
    drawn: u16,
    frame: usize,
}

/// `text` cut to `width` columns (counted as chars), so no line wraps.
fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

impl Live {
    pub fn new(debug: bool) -> Live {
        Live {
            debug,
            drawn: 0,
            frame: 0,
        }
    }

    /// The tree's lines: while `live`, spinners and the last output lines of running steps;
    /// else each step's final state.
    pub(super) fn lines(&self, tree: &Tree, live: bool) -> Vec<String> {
        let now = now_nanos();
        let spinner = SPINNER[self.frame % SPINNER.len()];
        let mut lines = Vec::new();
        for (depth, id) in tree.walk(self.debug) {
            let Some(step) = tree.step(id) else { continue };
            let indent = "  ".repeat(depth);
            let secs = step.seconds(now);
            let line = match &step.outcome {
                Outcome::Running if live => format!("{indent}{spinner} {} {secs:.1}s", step.name),
                Outcome::Running => format!("{indent}? {} (did not end)", step.name),
                Outcome::Done => format!("{indent}✔ {} {secs:.1}s", step.name),
                Outcome::Cached => format!("{indent}● {} CACHED", step.name),
                Outcome::Failed(_) => format!("{indent}✘ {} {secs:.1}s", step.name),
            };
            lines.push(line);
            if live && step.outcome == Outcome::Running {
                let skip = step.lines.len().saturating_sub(TAIL_LINES);
                for out in step.lines.iter().skip(skip) {
                    lines.push(format!("{indent}  │ {out}"));
                }
            }
        }
        lines
    }

    fn clear(&mut self, err: &mut impl std::io::Write) {
        if self.drawn > 0 {
            let _ = err.queue(cursor::MoveUp(self.drawn));
            let _ = err.queue(cursor::MoveToColumn(0));
            let _ = err.queue(terminal::Clear(terminal::ClearType::FromCursorDown));
            self.drawn = 0;
        }
    }

    fn paint(&mut self, err: &mut impl std::io::Write, lines: &[String]) {
        let (width, height) = terminal::size().unwrap_or((80, 24));
        let room = usize::from(height.saturating_sub(2)).max(1);
        let skip = lines.len().saturating_sub(room);
        for line in &lines[skip..] {
            let _ = writeln!(err, "{}", fit(line, usize::from(width.max(10)) - 1));
        }
        self.drawn = u16::try_from(lines.len() - skip).unwrap_or(u16::MAX);
    }

    /// Leaves what is on screen alone: the next frame is drawn below it (an interactive
    /// process took the terminal, and moving the cursor back would overwrite its screen).
    pub fn forget_frame(&mut self) {
        self.drawn = 0;
    }

    /// Redraws the tree in place.
    pub fn draw(&mut self, tree: &Tree) {
        self.frame += 1;
        let lines = self.lines(tree, true);
        let mut err = std::io::stderr().lock();
        self.clear(&mut err);
        self.paint(&mut err, &lines);
        let _ = err.flush();
    }

    /// Prints `line` above the tree (which is redrawn under it).
    pub fn print_above(&mut self, tree: &Tree, line: &str) {
        let lines = self.lines(tree, true);
        let mut err = std::io::stderr().lock();
        self.clear(&mut err);
        let _ = writeln!(err, "{line}");
        self.paint(&mut err, &lines);
        let _ = err.flush();
    }

    /// Replaces the live tree by the finished one, then the failed steps' output.
    pub fn finish(&mut self, tree: &Tree) {
        {
            let mut err = std::io::stderr().lock();
            self.clear(&mut err);
            let _ = err.flush();
        }
        super::print_summary(tree, self.debug);
    }
}
