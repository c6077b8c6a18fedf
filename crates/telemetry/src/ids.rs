//! Trace and span ids (OpenTelemetry's types) and the W3C `traceparent` that carries them across
//! processes: in request headers and in the `TRACEPARENT` variable of execs.

use std::fmt;
use std::str::FromStr;

pub use opentelemetry::trace::{SpanId, TraceId};

/// A new random trace id (never the invalid all-zero id).
pub fn new_trace_id() -> TraceId {
    loop {
        let bytes: [u8; 16] = rand::random();
        if bytes != [0; 16] {
            return TraceId::from_bytes(bytes);
        }
    }
}

/// A new random span id (never the invalid all-zero id).
pub fn new_span_id() -> SpanId {
    loop {
        let bytes: [u8; 8] = rand::random();
        if bytes != [0; 8] {
            return SpanId::from_bytes(bytes);
        }
    }
}

/// A W3C trace context `traceparent` (version `00`): the trace, the span new work hangs under,
/// and whether it is sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub sampled: bool,
}

/// Text that is not a version-00 `traceparent`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid traceparent {0:?}: want 00-<32 hex trace id>-<16 hex span id>-<2 hex flags>")]
pub struct TraceParentError(pub String);

impl TraceParent {
    /// The name of the HTTP header and (upper-cased) of the environment variable.
    pub const HEADER: &'static str = "traceparent";
    pub const ENV: &'static str = "TRACEPARENT";

    /// A new span in a new trace.
    pub fn new_root() -> TraceParent {
        TraceParent {
            trace_id: new_trace_id(),
            span_id: new_span_id(),
            sampled: true,
        }
    }
}

fn lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl FromStr for TraceParent {
    type Err = TraceParentError;

    fn from_str(text: &str) -> Result<TraceParent, TraceParentError> {
        let bad = || TraceParentError(text.to_owned());
        let mut parts = text.trim().split('-');
        let (Some(version), Some(trace), Some(span), Some(flags), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(bad());
        };
        if version != "00" || !lower_hex(trace, 32) || !lower_hex(span, 16) || !lower_hex(flags, 2)
        {
            return Err(bad());
        }
        let trace_id = TraceId::from_hex(trace).map_err(|_| bad())?;
        let span_id = SpanId::from_hex(span).map_err(|_| bad())?;
        if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
            return Err(bad());
        }
        let flags = u8::from_str_radix(flags, 16).map_err(|_| bad())?;
        Ok(TraceParent {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            self.trace_id,
            self.span_id,
            u8::from(self.sampled)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips() {
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed: TraceParent = text.parse().expect("parses");
        assert_eq!(
            parsed.trace_id,
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("hex")
        );
        assert!(parsed.sampled);
        assert_eq!(parsed.to_string(), text);
        let fresh = TraceParent::new_root();
        assert_eq!(fresh.to_string().parse::<TraceParent>(), Ok(fresh));
    }

    #[test]
    fn malformed_traceparents_are_refused() {
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(
                bad.parse::<TraceParent>(),
                Err(TraceParentError(bad.to_owned())),
                "{bad}"
            );
        }
    }
}
