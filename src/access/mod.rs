//! A mailbox's live access: its [`Credential`] and tokens (one refresh at a time, however many
//! wait), opening a [`Transport`] session with them, classifying what goes wrong into reasons a
//! person can act on, and setting the mailbox's status by the outcome. A client secret's life:
//! a new one tried before it is kept (`secret_check`), its expiry read from the app
//! registration (`secret_expiry`), a next one taking over (`client_auth`). The services (Authorize,
//! Verify, the test message) and the outbox's workers both reach a mailbox through here.
//! `service_account` gets a Google mailbox's token from its service account (domain-wide
//! delegation), where Microsoft's apps use client credentials (`app_token`).

pub mod alerts;
mod app_token;
mod client_auth;
mod credential;
mod graph;
mod secret_check;
mod secret_expiry;
mod service_account;
mod status;
mod tokens;
mod transport;
mod transports;
mod verify;

use std::sync::Arc;

use time::OffsetDateTime;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::domain::mailbox::{Mailbox, Provider};
use crate::domain::presets::SandboxPreset;
use crate::keys::KeyError;
use crate::net::HostPolicy;
use crate::oauth::ClientConfigError;
use crate::oauth::http::TokenHttp;
use crate::secrets::KeyRing;
use crate::store::{Store, StoreError};

pub use client_auth::{
    ClientCredential, client_credentials, credential_refused, promote_successor,
};
pub use credential::{Credential, Secret};
pub use secret_check::{SecretCheck, check_new_secret, refusal_message};
pub use secret_expiry::read_secret_expiry;
pub use status::{mark_not_verified, set_status, stale};
pub use tokens::{
    REFRESH_DEADLINE, REFRESH_SKEW, TokenFailure, TokenLocks, access_token, refresh_now,
    store_tokens,
};
pub use transport::{Connection, Refusal, SendFailure, Transport, classify, reply_of};
pub use transports::transport_for;
pub use verify::{attempt, verify};

/// What reaching a mailbox needs: the one bundle of dependencies the services, the outbox and
/// the web layer share. Cheap to clone.
#[derive(Clone)]
pub struct Access {
    pub store: Store,
    pub keys: Arc<KeyRing>,
    pub config: Arc<Config>,
    /// The guarded HTTP client for token endpoints.
    pub http: TokenHttp,
    /// Extra CAs trusted for SMTP servers (`HERALD_SMTP_CA_FILE`).
    pub smtp_roots: Arc<Vec<Vec<u8>>>,
    /// The sandbox provider's preset, while the sandbox runs (`herald demo`, tests).
    pub sandbox: Option<Arc<SandboxPreset>>,
    /// One lock per mailbox, so that concurrent users cause one token refresh.
    pub locks: Arc<TokenLocks>,
    /// The app-only tokens held, shared by the mailboxes of each app.
    pub app_tokens: Arc<app_token::AppTokens>,
    pub clock: SharedClock,
}

impl Access {
    /// The time, as this application's clock tells it.
    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    /// Which hosts a mailbox may name.
    pub fn hosts(&self) -> HostPolicy {
        HostPolicy {
            dev: self.config.dev || self.sandbox.is_some(),
            allow_private: self.config.allow_private_hosts,
        }
    }

    /// The CAs trusted for the mailbox's server: the configured ones, and the sandbox's own
    /// for a sandbox mailbox.
    pub fn roots_for(&self, mailbox: &Mailbox) -> Vec<Vec<u8>> {
        let mut roots = self.smtp_roots.to_vec();
        if mailbox.provider == Provider::Sandbox
            && let Some(sandbox) = &self.sandbox
        {
            roots.push(sandbox.ca_pem.clone().into_bytes());
        }
        roots
    }
}

/// Why a mailbox could not be reached for a reason that is Herald's, not the provider's.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A sealed secret (a token, a password) could not be opened.
    #[error(transparent)]
    Secret(#[from] KeyError),
    #[error(transparent)]
    Client(#[from] ClientConfigError),
    /// The mailbox's certificate or private key could not be used.
    #[error(transparent)]
    Certificate(#[from] crate::oauth::certificate::CertificateError),
    /// The mailbox was deleted meanwhile.
    #[error("the mailbox is gone")]
    MailboxGone,
}

pub type AccessResult<T> = Result<T, AccessError>;
