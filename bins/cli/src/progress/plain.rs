//! `--progress=plain`: a line when a step starts, a line when it ends (with its duration, or
//! `CACHED`, or why it failed), and each output line prefixed with its step. For CI logs.

use super::model::{Change, Outcome, Step, Tree, now_nanos};

pub struct Plain {
    debug: bool,
    /// Output lines of steps whose span has not arrived yet (spans and logs come on separate
    /// streams), printed once it has.
    waiting: Vec<(Vec<u8>, String)>,
}

impl Plain {
    pub fn new(debug: bool) -> Plain {
        Plain {
            debug,
            waiting: Vec::new(),
        }
    }

    fn shown<'t>(&self, tree: &'t Tree, id: &[u8]) -> Option<&'t Step> {
        tree.step(id)
            .filter(|s| s.known && (self.debug || !s.internal))
    }

    pub fn print(&mut self, tree: &Tree, changes: &[Change]) {
        for change in changes {
            match change {
                Change::Started(id) => {
                    if let Some(step) = self.shown(tree, id)
                        && step.outcome == Outcome::Running
                    {
                        eprintln!("▶ {}", step.name);
                    }
                    let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting)
                        .into_iter()
                        .partition(|(w, _)| w == id);
                    self.waiting = waiting;
                    for (id, line) in ready {
                        self.line(tree, &id, &line);
                    }
                }
                Change::Ended(id) => {
                    if let Some(step) = self.shown(tree, id) {
                        let secs = step.seconds(now_nanos());
                        match &step.outcome {
                            Outcome::Cached => eprintln!("● {} CACHED", step.name),
                            Outcome::Done => eprintln!("✔ {} {secs:.1}s", step.name),
                            Outcome::Failed(message) => {
                                eprintln!("✘ {} {secs:.1}s: {message}", step.name);
                            }
                            Outcome::Running => {}
                        }
                    }
                }
                Change::Line(id, line) => {
                    if tree.step(id).is_some_and(|s| s.known) {
                        self.line(tree, id, line);
                    } else {
                        self.waiting.push((id.clone(), line.clone()));
                    }
                }
            }
        }
    }

    fn line(&self, tree: &Tree, id: &[u8], line: &str) {
        if let Some(step) = self.shown(tree, id) {
            eprintln!("  {} │ {line}", step.name);
        }
    }

    pub fn finish(&mut self, tree: &Tree) {
        for (_, line) in std::mem::take(&mut self.waiting) {
            eprintln!("  ? │ {line}");
        }
        super::print_summary(tree, self.debug);
    }
}
