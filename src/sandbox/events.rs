//! What the sandbox's observers wait on: its request counters and the mail it received, and a
//! signal each time one of them changes, so that a test awaits a change instead of polling.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

use super::{ReceivedMessage, SandboxState};

/// Counters tests read to check how often Herald asked for something. The sandbox bumps them
/// through `SandboxState::count`, which announces each change to [`SandboxState::wait_until`].
#[derive(Debug, Default)]
pub struct Counters {
    pub token_requests: AtomicU64,
    pub smtp_auth_attempts: AtomicU64,
    /// Sessions refused with `432 4.3.2` for exceeding the connections per mailbox.
    pub connections_refused: AtomicU64,
    /// Requests to Graph's `sendMail`, whatever their answer.
    pub graph_requests: AtomicU64,
}

/// Bumped after every change of the counters or the received mail.
pub(super) struct Changes(watch::Sender<u64>);

impl Default for Changes {
    fn default() -> Self {
        Self(watch::channel(0).0)
    }
}

impl SandboxState {
    /// Says that the counters or the received mail changed.
    pub(super) fn changed(&self) {
        self.changes.0.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Adds one to one of [`SandboxState::counters`], and says so.
    pub(super) fn count(&self, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
        self.changed();
    }

    pub(super) fn store_message(&self, message: ReceivedMessage) {
        self.inner().messages.push(message);
        self.changed();
    }

    /// Every message received so far, oldest first.
    pub fn messages(&self) -> Vec<ReceivedMessage> {
        self.inner().messages.clone()
    }

    /// How many messages were received so far, without copying any (a benchmark's sink counts
    /// with it while the next message waits for the same lock).
    pub fn message_count(&self) -> usize {
        self.inner().messages.len()
    }

    /// Forgets the mail received so far: a benchmark's sink starts each side empty, so that
    /// no side pays for the mail another left behind.
    pub fn clear_messages(&self) {
        self.inner().messages = Vec::new();
        self.changed();
    }

    pub fn count_token_request(&self) {
        self.count(&self.counters.token_requests);
    }

    pub fn token_requests(&self) -> u64 {
        self.counters.token_requests.load(Ordering::Relaxed)
    }

    pub fn graph_requests(&self) -> u64 {
        self.counters.graph_requests.load(Ordering::Relaxed)
    }

    pub fn smtp_auth_attempts(&self) -> u64 {
        self.counters.smtp_auth_attempts.load(Ordering::Relaxed)
    }

    /// Waits until `cond` holds, looking again after each change of the counters or the
    /// received mail. It has no deadline of its own: a caller that may wait forever adds one.
    pub async fn wait_until(&self, cond: impl Fn(&SandboxState) -> bool) {
        // Subscribed before the first look: a change after it is not missed.
        let mut changes = self.changes.0.subscribe();
        while !cond(self) {
            if changes.changed().await.is_err() {
                // The sender lives as long as `self`: this cannot happen.
                return std::future::pending().await;
            }
        }
    }
}
