//! W3C Trace Context (`traceparent`): the trace a request belongs to, honoured when a caller
//! sends one and started otherwise, and carried on every HTTP request Herald makes on its
//! behalf (token endpoints, Microsoft Graph, webhooks), so that one trace id joins Herald's log
//! lines to the caller's and to the provider's.
//!
//! The context lives in a task-local for the duration of the request ([`scope`]); work the
//! request hands to other tasks (the outbox's delivery) is logged under the message's id.

use std::fmt;
use std::future::Future;

/// A `traceparent`: the trace id, this hop's span id, and the caller's flags (sampled).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    flags: u8,
}

tokio::task_local! {
    static CURRENT: TraceContext;
}

fn hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl TraceContext {
    /// Reads a `traceparent` header as the W3C recommendation says: version `00` has exactly four
    /// fields; a later version may carry more after them; `ff` is invalid, as are all-zero ids
    /// and upper-case hex. `None` for anything else: a new trace is started instead.
    pub fn parse(header: &str) -> Option<Self> {
        let header = header.trim();
        let mut fields = header.split('-');
        let version = hex::<1>(fields.next()?)?[0];
        let trace_id = hex::<16>(fields.next()?)?;
        let span_id = hex::<8>(fields.next()?)?;
        let flags = hex::<1>(fields.next()?)?[0];
        let rest = fields.next();
        if version == 0xff
            || (version == 0 && rest.is_some())
            || trace_id == [0; 16]
            || span_id == [0; 8]
        {
            return None;
        }
        Some(Self {
            trace_id,
            span_id,
            flags,
        })
    }

    /// A new trace, not sampled (Herald records no spans of its own).
    pub fn new_root() -> Self {
        Self {
            trace_id: crate::crypto::random_bytes::<16>(),
            span_id: crate::crypto::random_bytes::<8>(),
            flags: 0,
        }
    }

    /// The next hop in the same trace: a new span id, the same trace id and flags.
    pub fn child(&self) -> Self {
        Self {
            span_id: crate::crypto::random_bytes::<8>(),
            ..*self
        }
    }

    /// The trace id, 32 lower-case hex digits.
    pub fn trace_id(&self) -> String {
        to_hex(&self.trace_id)
    }

    /// The `traceparent` header naming this hop.
    pub fn header(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            to_hex(&self.trace_id),
            to_hex(&self.span_id),
            self.flags
        )
    }
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.header())
    }
}

/// Runs `work` as part of the trace `context`.
pub async fn scope<F: Future>(context: TraceContext, work: F) -> F::Output {
    CURRENT.scope(context, work).await
}

/// The trace the running task is part of, if any.
pub fn current() -> Option<TraceContext> {
    CURRENT.try_with(|c| *c).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_traceparent_is_kept_and_a_child_keeps_its_trace() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = TraceContext::parse(header).unwrap();
        assert_eq!(context.header(), header);
        assert_eq!(context.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let child = context.child();
        assert_eq!(child.trace_id(), context.trace_id());
        assert_ne!(child.header(), header);
        assert!(child.header().ends_with("-01"));
        // A later version may add fields after the four it shares with 00.
        assert!(TraceContext::parse(&format!("cc-{}-extra", &header[3..])).is_some());
    }

    #[test]
    fn an_invalid_traceparent_is_ignored() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn the_context_is_known_inside_its_scope_only() {
        assert!(current().is_none());
        let context = TraceContext::new_root();
        let seen = scope(context, async { current() }).await;
        assert_eq!(seen, Some(context));
        assert!(current().is_none());
    }
}
