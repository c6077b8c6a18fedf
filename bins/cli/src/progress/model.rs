//! The steps of a run as the telemetry describes them: spans become [`Step`]s in a tree (by
//! their parent span), log records become their output lines.

use std::collections::{HashMap, VecDeque};

use dagr_telemetry::attr;
use dagr_telemetry::proto::common::v1::{KeyValue, any_value::Value};
use dagr_telemetry::proto::logs::v1::LogsData;
use dagr_telemetry::proto::trace::v1::status::StatusCode;
use dagr_telemetry::proto::trace::v1::{Span, TracesData};

/// Output lines kept per step (the end of a long output).
const MAX_LINES: usize = 10_000;

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Running,
    Done,
    Cached,
    Failed(String),
}

/// One span: a call that did work or a step it ran.
#[derive(Debug, Clone)]
pub struct Step {
    pub name: String,
    pub parent: Vec<u8>,
    pub start_nanos: u64,
    pub end_nanos: u64,
    pub outcome: Outcome,
    pub internal: bool,
    pub exit_code: Option<i64>,
    /// Output lines (stdout and stderr interleaved as they arrived), the last [`MAX_LINES`].
    pub lines: VecDeque<String>,
    /// Lines dropped from the front of [`Step::lines`].
    pub lines_dropped: usize,
    /// Whether the span record arrived (logs can come first).
    pub known: bool,
}

impl Step {
    fn new() -> Step {
        Step {
            name: String::new(),
            parent: Vec::new(),
            start_nanos: 0,
            end_nanos: 0,
            outcome: Outcome::Running,
            internal: false,
            exit_code: None,
            lines: VecDeque::new(),
            lines_dropped: 0,
            known: false,
        }
    }

    /// Seconds from start to end (or to `now` while running).
    pub fn seconds(&self, now_nanos: u64) -> f64 {
        let end = if self.end_nanos == 0 {
            now_nanos
        } else {
            self.end_nanos
        };
        end.saturating_sub(self.start_nanos) as f64 / 1e9
    }
}

/// Now, in the nanoseconds since the epoch that span times use.
pub fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// What changed when a record was applied (for renderers that print changes as lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Started(Vec<u8>),
    Ended(Vec<u8>),
    Line(Vec<u8>, String),
}

/// Every step seen, by span id.
#[derive(Debug, Default)]
pub struct Tree {
    steps: HashMap<Vec<u8>, Step>,
    /// Span ids in the order they were first seen.
    order: Vec<Vec<u8>>,
    /// Records the engine could not deliver to this subscriber (it did not keep up).
    pub dropped: i64,
    /// Partial output lines per (span, stream).
    partial: HashMap<(Vec<u8>, i64), String>,
}

fn attribute(attrs: &[KeyValue], key: &str) -> Option<Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.clone())
}

fn dropped_in(attrs: &[KeyValue]) -> i64 {
    match attribute(attrs, dagr_telemetry::DROPPED_ATTR) {
        Some(Value::IntValue(n)) => n,
        _ => 0,
    }
}

impl Tree {
    fn entry(&mut self, id: &[u8]) -> &mut Step {
        if !self.steps.contains_key(id) {
            self.order.push(id.to_vec());
        }
        self.steps.entry(id.to_vec()).or_insert_with(Step::new)
    }

    pub fn step(&self, id: &[u8]) -> Option<&Step> {
        self.steps.get(id)
    }

    /// Applies spans; returns what changed.
    pub fn apply_spans(&mut self, data: TracesData) -> Vec<Change> {
        let mut changes = Vec::new();
        for resource in data.resource_spans {
            if let Some(r) = &resource.resource {
                self.dropped += dropped_in(&r.attributes);
            }
            for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
                changes.extend(self.apply_span(span));
            }
        }
        changes
    }

    fn apply_span(&mut self, span: Span) -> Vec<Change> {
        let id = span.span_id.clone();
        let step = self.entry(&id);
        let was_known = step.known;
        let was_ended = step.end_nanos != 0;
        step.known = true;
        step.name = span.name;
        step.parent = span.parent_span_id;
        step.start_nanos = span.start_time_unix_nano;
        step.end_nanos = span.end_time_unix_nano;
        step.internal = attribute(&span.attributes, attr::INTERNAL) == Some(Value::BoolValue(true));
        if let Some(Value::IntValue(code)) = attribute(&span.attributes, attr::EXIT_CODE) {
            step.exit_code = Some(code);
        }
        let cached = attribute(&span.attributes, attr::CACHED) == Some(Value::BoolValue(true));
        step.outcome = if step.end_nanos == 0 {
            Outcome::Running
        } else if cached {
            Outcome::Cached
        } else {
            match span.status {
                Some(status) if status.code == StatusCode::Error as i32 => {
                    Outcome::Failed(status.message)
                }
                _ => Outcome::Done,
            }
        };
        let mut changes = Vec::new();
        if !was_known {
            changes.push(Change::Started(id.clone()));
        }
        if !was_ended && step.end_nanos != 0 {
            changes.push(Change::Ended(id));
        }
        changes
    }

    /// Applies log records (output lines of steps); returns the complete lines added.
    pub fn apply_logs(&mut self, data: LogsData) -> Vec<Change> {
        let mut changes = Vec::new();
        for resource in data.resource_logs {
            if let Some(r) = &resource.resource {
                self.dropped += dropped_in(&r.attributes);
            }
            for log in resource.scope_logs.into_iter().flat_map(|s| s.log_records) {
                let stream = match attribute(&log.attributes, attr::STDIO_STREAM) {
                    Some(Value::IntValue(n)) => n,
                    _ => 0,
                };
                let eof =
                    attribute(&log.attributes, attr::STDIO_EOF) == Some(Value::BoolValue(true));
                let text = match log.body.and_then(|b| b.value) {
                    Some(Value::StringValue(s)) => s,
                    _ => String::new(),
                };
                let key = (log.span_id.clone(), stream);
                let mut pending = self.partial.remove(&key).unwrap_or_default();
                pending.push_str(&text);
                let mut complete: Vec<String> = Vec::new();
                while let Some(newline) = pending.find('\n') {
                    complete.push(pending[..newline].to_owned());
                    pending.drain(..=newline);
                }
                if eof && !pending.is_empty() {
                    complete.push(std::mem::take(&mut pending));
                }
                if !pending.is_empty() {
                    self.partial.insert(key, pending);
                }
                let step = self.entry(&log.span_id);
                for line in complete {
                    if step.lines.len() >= MAX_LINES {
                        step.lines.pop_front();
                        step.lines_dropped += 1;
                    }
                    step.lines.push_back(line.clone());
                    changes.push(Change::Line(log.span_id.clone(), line));
                }
            }
        }
        changes
    }

    /// The steps without a known parent (the tree's roots), by start time.
    pub fn roots(&self) -> Vec<&[u8]> {
        let mut roots: Vec<&[u8]> = self
            .order
            .iter()
            .filter(|id| {
                let step = &self.steps[*id];
                step.known && !self.steps.get(&step.parent).is_some_and(|p| p.known)
            })
            .map(Vec::as_slice)
            .collect();
        roots.sort_by_key(|id| self.steps[*id].start_nanos);
        roots
    }

    /// The children of `id`, by start time.
    pub fn children(&self, id: &[u8]) -> Vec<&[u8]> {
        let mut children: Vec<&[u8]> = self
            .order
            .iter()
            .filter(|c| {
                let step = &self.steps[*c];
                step.known && step.parent == id
            })
            .map(Vec::as_slice)
            .collect();
        children.sort_by_key(|c| self.steps[*c].start_nanos);
        children
    }

    /// Every known step, depth first from the roots, with its depth.
    pub fn walk(&self, debug: bool) -> Vec<(usize, &[u8])> {
        let mut out = Vec::new();
        let mut stack: Vec<(usize, &[u8])> =
            self.roots().into_iter().rev().map(|r| (0, r)).collect();
        while let Some((depth, id)) = stack.pop() {
            let step = &self.steps[id];
            let shown = debug || !step.internal;
            if shown {
                out.push((depth, id));
            }
            let next = if shown { depth + 1 } else { depth };
            for child in self.children(id).into_iter().rev() {
                stack.push((next, child));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dagr_telemetry::proto::common::v1::AnyValue;
    use dagr_telemetry::proto::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use dagr_telemetry::proto::trace::v1::{ResourceSpans, ScopeSpans, Status};

    fn traces(spans: Vec<Span>) -> TracesData {
        TracesData {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn span(id: u8, parent: u8, name: &str, start: u64, end: u64) -> Span {
        Span {
            span_id: vec![id; 8],
            parent_span_id: if parent == 0 { vec![] } else { vec![parent; 8] },
            name: name.to_owned(),
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            ..Default::default()
        }
    }

    fn line(id: u8, text: &str, eof: bool) -> LogsData {
        let mut attributes = vec![KeyValue {
            key: attr::STDIO_STREAM.to_owned(),
            value: Some(AnyValue {
                value: Some(Value::IntValue(1)),
            }),
            ..Default::default()
        }];
        if eof {
            attributes.push(KeyValue {
                key: attr::STDIO_EOF.to_owned(),
                value: Some(AnyValue {
                    value: Some(Value::BoolValue(true)),
                }),
                ..Default::default()
            });
        }
        LogsData {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord {
                        span_id: vec![id; 8],
                        body: Some(AnyValue {
                            value: Some(Value::StringValue(text.to_owned())),
                        }),
                        attributes,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn spans_form_a_tree_and_their_ends_replace_their_starts() {
        let mut tree = Tree::default();
        let changes = tree.apply_spans(traces(vec![
            span(1, 9, "Container.stdout", 10, 0),
            span(2, 1, "exec echo hi", 20, 0),
        ]));
        assert_eq!(
            changes,
            [Change::Started(vec![1; 8]), Change::Started(vec![2; 8])]
        );
        let mut failed = span(2, 1, "exec echo hi", 20, 30);
        failed.status = Some(Status {
            code: StatusCode::Error as i32,
            message: "exit code: 1".into(),
        });
        assert_eq!(
            tree.apply_spans(traces(vec![failed])),
            [Change::Ended(vec![2; 8])]
        );
        assert_eq!(
            tree.roots(),
            [&[1u8; 8][..]],
            "a parent never seen makes a root"
        );
        assert_eq!(tree.walk(false), [(0, &[1u8; 8][..]), (1, &[2u8; 8][..])]);
        let step = tree.step(&[2; 8]).expect("step");
        assert_eq!(step.outcome, Outcome::Failed("exit code: 1".into()));
    }

    #[test]
    fn output_is_split_into_lines_across_records_and_ended_by_eof() {
        let mut tree = Tree::default();
        tree.apply_logs(line(3, "a\npar", false));
        let changes = tree.apply_logs(line(3, "tial\n", false));
        assert_eq!(changes, [Change::Line(vec![3; 8], "partial".into())]);
        tree.apply_logs(line(3, "no newline", false));
        tree.apply_logs(line(3, "", true));
        let lines: Vec<&str> = tree
            .step(&[3; 8])
            .expect("step")
            .lines
            .iter()
            .map(String::as_str)
            .collect();
        assert_eq!(lines, ["a", "partial", "no newline"]);
        assert!(
            tree.roots().is_empty(),
            "a step is shown once its span is known"
        );
    }
}
