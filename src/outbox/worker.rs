//! The outbox's handle: start the dispatcher and the keep-alive, wake them, sweep, and shut
//! down, releasing what this instance still holds.

use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use super::Tuning;
use super::dispatch::*;
use super::state::*;
use crate::access::Access;
use crate::store::StoreResult;

/// The delivering side of the outbox; cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

impl Outbox {
    pub fn new(access: Access, tuning: Tuning, owner: String) -> Self {
        Self {
            inner: Arc::new(Inner {
                access,
                tuning,
                owner,
                wake: Notify::new(),
                lanes: Mutex::default(),
                tasks: tokio::sync::Mutex::new(JoinSet::new()),
                stopping: watch::channel(false).0,
                keepalive_passes: watch::channel(0).0,
                alert_passes: watch::channel(0).0,
            }),
        }
    }

    /// Says that mail was released or that the outbox is stopping: the dispatcher and every
    /// lane look now rather than at the next poll.
    pub fn wake(&self) {
        self.inner.wake.notify_one();
        for lanes in self
            .inner
            .lanes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            lanes.wake.notify_waiters();
        }
    }

    /// Says that a message was accepted for `mailbox`: one of its lanes takes it, and the
    /// dispatcher is woken only when the mailbox may have another lane (or has none here).
    /// Every other lane and mailbox sleeps on.
    pub fn wake_for(&self, mailbox: Option<crate::domain::MailboxId>) {
        let full = mailbox.is_some_and(|id| {
            let lanes = self.inner.lanes.lock().unwrap_or_else(|e| e.into_inner());
            lanes.get(&id).is_some_and(|l| {
                l.wake.notify_one();
                l.running >= l.max
            })
        });
        if !full {
            self.inner.wake.notify_one();
        }
    }

    /// Starts the dispatcher.
    pub fn start(&self) -> tokio::task::JoinHandle<()> {
        let inner = self.inner.clone();
        tokio::spawn(async move { dispatch(inner).await })
    }

    /// Starts the keep-alive, which a serving instance runs beside delivering. It stops with
    /// [`Outbox::shutdown`], which lets the item in hand finish (not the command line's
    /// `--wait`, which only delivers).
    pub async fn start_upkeep(&self) {
        self.spawn(super::keepalive::run(
            self.inner.access.clone(),
            self.inner.tuning.keepalive_check,
            self.stopping(),
            self.inner.keepalive_passes.clone(),
        ))
        .await;
    }

    /// How many passes the keep-alive started by [`Outbox::start_upkeep`] has completed, failed
    /// ones included; it changes after each. Waiting for two more passes than now is waiting
    /// until the keep-alive has looked at least once after what happened before (a changed
    /// clock, a new mailbox).
    pub fn keepalive_passes(&self) -> watch::Receiver<u64> {
        self.inner.keepalive_passes.subscribe()
    }

    /// How many passes the alerts job has completed, failed ones included; it changes after
    /// each, as [`Outbox::keepalive_passes`] does for the keep-alive.
    pub fn alert_passes(&self) -> watch::Receiver<u64> {
        self.inner.alert_passes.subscribe()
    }

    /// Said by the alerts job (which runs beside the workers) after each pass.
    pub(crate) fn alert_pass_done(&self) {
        self.inner.alert_passes.send_modify(|n| *n += 1);
    }

    /// Runs a task beside the workers that stops with them (see [`Outbox::shutdown`]).
    pub async fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.inner.tasks.lock().await.spawn(task);
    }

    /// Turns true when the outbox is told to stop.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.inner.stopping.subscribe()
    }

    /// How the workers pace themselves.
    pub fn tuning(&self) -> &Tuning {
        &self.inner.tuning
    }

    /// What the workers reach mailboxes with.
    pub fn access(&self) -> &Access {
        &self.inner.access
    }

    /// One repair sweep now, as the dispatcher makes every 30 seconds (tests): held mail
    /// released or expired, orphaned mail failed.
    pub async fn sweep_now(&self) -> StoreResult<u64> {
        sweep(&self.inner).await
    }

    /// One keep-alive pass now (the command line, tests); answers how many mailboxes it took.
    pub async fn keep_alive_now(&self) -> StoreResult<usize> {
        super::keepalive::pass(&self.inner.access, &self.stopping()).await
    }

    /// Stops claiming work and lets messages being sent finish within `grace`; what is still
    /// being sent then is released back to the queue (it may have gone out: delivery is
    /// at-least-once).
    pub async fn shutdown(&self, grace: std::time::Duration) {
        self.inner.stopping.send_replace(true);
        self.wake();
        let mut tasks = self.inner.tasks.lock().await;
        let drained =
            tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
        let released = async {
            let mut conn = self.inner.access.store.relaxed_writer().await?;
            release_owned(&mut conn, &self.inner.owner).await
        }
        .await;
        match released {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                released = n,
                "messages still being sent at shutdown were put back in the queue"
            ),
            Err(e) => tracing::warn!(error = %e, "could not release this instance's claims"),
        }
    }
}
