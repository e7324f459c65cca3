//! The sandbox provider: a local stand-in for Microsoft 365 that `herald demo` and the tests
//! use, so the whole flow runs without an Azure tenant.
//!
//! It is an independent implementation: it shares no code with Herald's OAuth or SMTP clients,
//! so it cannot agree with them by construction. This module holds its state (directory of
//! users and app registrations, issued tokens, received mail) and the switches that reproduce
//! Microsoft's failures; [`smtp`] is its Exchange Online-shaped SMTP server.
//!
//! State lives in memory: the sandbox is for demos and tests, and starts empty.

pub mod smtp;

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use secrecy::{ExposeSecret, SecretString};
use time::{Duration, OffsetDateTime};

use crate::crypto;

/// The delegated scope that allows SMTP AUTH with XOAUTH2.
pub const SMTP_SEND_SCOPE: &str = "https://outlook.office.com/SMTP.Send";

/// Failures the sandbox can be told to reproduce, worded as Microsoft words them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Switches {
    /// `535 5.7.139`: SMTP AUTH disabled for the tenant.
    pub smtp_auth_disabled: bool,
    /// `550 5.7.30`: Basic authentication retired for client submission.
    pub basic_auth_retired: bool,
    /// Authenticated sessions allowed at once per mailbox before `432 4.3.2` (Exchange: 3).
    pub max_connections_per_mailbox: usize,
    /// Messages per minute per mailbox before the rate-limit reply (Exchange: 30).
    pub messages_per_minute: u32,
    /// Lifetime of new access tokens.
    pub access_token_lifetime: Duration,
}

impl Default for Switches {
    fn default() -> Self {
        Self {
            smtp_auth_disabled: false,
            basic_auth_retired: false,
            max_connections_per_mailbox: 3,
            messages_per_minute: 30,
            access_token_lifetime: Duration::seconds(3599),
        }
    }
}

/// An issued access token.
#[derive(Clone, Debug)]
pub struct AccessToken {
    pub user: String,
    pub client_id: String,
    pub scopes: Vec<String>,
    pub expires_at: OffsetDateTime,
}

/// A message the sandbox's SMTP server accepted.
#[derive(Clone, Debug)]
pub struct ReceivedMessage {
    pub id: String,
    /// The authenticated mailbox.
    pub user: String,
    /// `XOAUTH2`, `PLAIN` or `LOGIN`.
    pub mechanism: &'static str,
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    pub raw: Vec<u8>,
    pub received_at: OffsetDateTime,
}

/// Counters tests read to check how often Herald asked for something.
#[derive(Debug, Default)]
pub struct Counters {
    pub token_requests: AtomicU64,
    pub smtp_auth_attempts: AtomicU64,
}

#[derive(Default)]
struct Inner {
    /// Sandbox users by lower-cased address, with their password.
    users: HashMap<String, SecretString>,
    /// Access tokens by digest.
    access_tokens: HashMap<String, AccessToken>,
    messages: Vec<ReceivedMessage>,
    /// Authenticated SMTP sessions per mailbox.
    connections: HashMap<String, usize>,
    /// Recent submission times per mailbox, for the rate limit.
    submissions: HashMap<String, Vec<OffsetDateTime>>,
}

/// The sandbox's shared state.
#[derive(Default)]
pub struct SandboxState {
    inner: Mutex<Inner>,
    switches: Mutex<Switches>,
    pub counters: Counters,
}

impl SandboxState {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn switches(&self) -> Switches {
        self.switches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_switches(&self, switches: Switches) {
        *self.switches.lock().unwrap_or_else(|e| e.into_inner()) = switches;
    }

    /// Adds (or replaces) a sandbox user who can sign in and own a mailbox.
    pub fn add_user(&self, address: &str, password: SecretString) {
        self.inner().users.insert(address.to_lowercase(), password);
    }

    /// Whether the address and password match a sandbox user (constant-time on the password).
    pub fn check_password(&self, address: &str, password: &SecretString) -> bool {
        self.inner()
            .users
            .get(&address.to_lowercase())
            .is_some_and(|p| crypto::constant_time_eq(p.expose_secret(), password.expose_secret()))
    }

    pub fn user_exists(&self, address: &str) -> bool {
        self.inner().users.contains_key(&address.to_lowercase())
    }

    /// Issues an access token for `user` with `scopes`, valid for the configured lifetime.
    pub fn issue_access_token(
        &self,
        user: &str,
        client_id: &str,
        scopes: Vec<String>,
        now: OffsetDateTime,
    ) -> (SecretString, AccessToken) {
        let token = format!("sbx.{}", crypto::random_token());
        let record = AccessToken {
            user: user.to_lowercase(),
            client_id: client_id.to_owned(),
            scopes,
            expires_at: now + self.switches().access_token_lifetime,
        };
        self.inner()
            .access_tokens
            .insert(crypto::token_digest(&token), record.clone());
        (SecretString::from(token), record)
    }

    /// The live access token with this value.
    pub fn access_token(&self, token: &str, now: OffsetDateTime) -> Option<AccessToken> {
        self.inner()
            .access_tokens
            .get(&crypto::token_digest(token))
            .filter(|t| t.expires_at > now)
            .cloned()
    }

    /// Counts an authenticated session for a mailbox; `false` when the mailbox already has the
    /// maximum.
    fn enter_mailbox(&self, user: &str) -> bool {
        let max = self.switches().max_connections_per_mailbox;
        let mut inner = self.inner();
        let count = inner.connections.entry(user.to_lowercase()).or_default();
        if *count >= max {
            return false;
        }
        *count += 1;
        true
    }

    fn leave_mailbox(&self, user: &str) {
        let mut inner = self.inner();
        if let Some(count) = inner.connections.get_mut(&user.to_lowercase()) {
            *count = count.saturating_sub(1);
        }
    }

    /// Records a submission unless the mailbox is over its per-minute rate.
    fn admit_submission(&self, user: &str, now: OffsetDateTime) -> bool {
        let per_minute = self.switches().messages_per_minute as usize;
        let mut inner = self.inner();
        let times = inner.submissions.entry(user.to_lowercase()).or_default();
        times.retain(|t| *t > now - Duration::minutes(1));
        if times.len() >= per_minute {
            return false;
        }
        times.push(now);
        true
    }

    fn store_message(&self, message: ReceivedMessage) {
        self.inner().messages.push(message);
    }

    /// Every message received so far, oldest first.
    pub fn messages(&self) -> Vec<ReceivedMessage> {
        self.inner().messages.clone()
    }

    pub fn count_token_request(&self) {
        self.counters.token_requests.fetch_add(1, Ordering::Relaxed);
    }

    pub fn token_requests(&self) -> u64 {
        self.counters.token_requests.load(Ordering::Relaxed)
    }

    pub fn smtp_auth_attempts(&self) -> u64 {
        self.counters.smtp_auth_attempts.load(Ordering::Relaxed)
    }
}
