//! The sandbox provider: a local stand-in for Microsoft 365 that `herald demo` and the tests
//! use, so the whole flow runs without an Azure tenant.
//!
//! It is an independent implementation: it shares no code with Herald's OAuth or SMTP clients,
//! so it cannot agree with them by construction. This module holds its state (directory of
//! users and app registrations, issued tokens, received mail) and the switches that reproduce
//! Microsoft's failures; [`smtp`] is its Exchange Online-shaped SMTP server, [`graph`] its
//! Microsoft Graph `sendMail`.
//!
//! State lives in memory: the sandbox is for demos and tests, and starts empty.
//! [`oauth`] is its Entra ID-shaped authorization server; `apps` holds app-only access
//! (client credentials): application permissions and Exchange's scoping of apps; `devices`
//! the device codes (RFC 8628) people enter at `/devicelogin`; `credentials` an app
//! registration's client secrets, with their end dates.
//! [`google`] is its second personality, Google's, under `{base}/google`: Google's OAuth
//! endpoints and errors, non-rotating refresh tokens, service accounts with domain-wide
//! delegation, and Gmail's manners on the same SMTP server for Google users.

mod apps;
mod credentials;
mod devices;
mod events;
pub mod google;
pub mod graph;
pub mod oauth;
mod settings;
pub mod smtp;
mod switches;

use std::collections::HashMap;
use std::sync::Mutex;

use secrecy::{ExposeSecret, SecretString};
use time::{Duration, OffsetDateTime};

use crate::clock::SharedClock;
use crate::crypto;

pub use apps::{
    APP_MAIL_SEND, APP_SMTP_SEND_AS_APP, AppAccess, AppCertificate, EXCHANGE_RESOURCE,
    GRAPH_RESOURCE,
};
pub use credentials::{
    APP_APPLICATION_READ_ALL, DEFAULT_SECRET_LIFETIME, GRAPH_APPLICATION_READ_ALL_SCOPE,
    PasswordCredential,
};
pub use events::Counters;
pub use graph::{
    APP_MAIL_READWRITE, GRAPH_MAIL_READWRITE_SCOPE, GRAPH_MAIL_READWRITE_SHARED_SCOPE,
    GRAPH_MAIL_SEND_SCOPE, GRAPH_MAIL_SEND_SHARED_SCOPE,
};
pub use settings::Settings;
pub use switches::Switches;

/// The delegated scope that allows SMTP AUTH with XOAUTH2.
pub const SMTP_SEND_SCOPE: &str = "https://outlook.office.com/SMTP.Send";

/// An issued access token.
#[derive(Clone, Debug)]
pub struct AccessToken {
    pub user: String,
    pub client_id: String,
    pub scopes: Vec<String>,
    pub expires_at: OffsetDateTime,
    /// The resource the token is for (its `aud`): `https://graph.microsoft.com`, …
    pub audience: String,
    /// App-only (client credentials): no user, and [`AccessToken::roles`] instead of scopes.
    pub app_only: bool,
    /// The application permissions granted to the app for the audience, at issue time.
    pub roles: Vec<String>,
}

/// A message the sandbox's SMTP server (or Graph's `sendMail`) accepted.
#[derive(Clone, Debug)]
pub struct ReceivedMessage {
    pub id: String,
    /// The authenticated mailbox.
    pub user: String,
    /// `XOAUTH2`, `PLAIN` or `LOGIN`; `graph` for Graph's `sendMail`.
    pub mechanism: &'static str,
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    pub raw: Vec<u8>,
    pub received_at: OffsetDateTime,
}

/// A secret Value shaped like Entra's: 40 characters with `~` after the fourth.
fn entra_like_secret() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-";
    let bytes = crypto::random_bytes::<36>();
    let body: String = bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect();
    format!("{}8Q~{}.{}", &body[..3], &body[3..35], &body[35..])
}

/// An app registration, as Entra shows it after "New registration" and "New client secret".
#[derive(Clone)]
pub struct SandboxClient {
    pub name: String,
    /// Application (client) ID: a GUID.
    pub client_id: String,
    /// The client secret's Secret ID: a GUID, which is *not* the secret.
    pub secret_id: String,
    /// The first client secret's Value, shaped like Entra's (with `~` and `.`); more are made
    /// with [`SandboxState::add_client_secret`].
    pub secret: SecretString,
    pub redirect_uris: Vec<String>,
}

impl std::fmt::Debug for SandboxClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxClient")
            .field("name", &self.name)
            .field("client_id", &self.client_id)
            .field("secret_id", &self.secret_id)
            .field("redirect_uris", &self.redirect_uris)
            .finish_non_exhaustive()
    }
}

/// An authorization request waiting for sign-in and consent.
#[derive(Clone, Debug)]
pub(crate) struct Pending {
    pub tenant: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub scopes: Vec<String>,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    /// Set once the user has signed in.
    pub user: Option<String>,
    pub expires_at: OffsetDateTime,
    /// A sign-in for a device code (by digest), which ends on a page instead of a redirect.
    pub device: Option<String>,
}

/// An authorization code, single-use.
#[derive(Clone, Debug)]
pub(crate) struct IssuedCode {
    pub client_id: String,
    pub redirect_uri: String,
    pub user: String,
    pub scopes: Vec<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub expires_at: OffsetDateTime,
    pub redeemed: bool,
}

/// What a refresh token stands for.
#[derive(Clone, Debug)]
pub(crate) struct Grant {
    pub client_id: String,
    pub user: String,
    pub scopes: Vec<String>,
    pub issued_at: OffsetDateTime,
}

#[derive(Default)]
struct Inner {
    clients: HashMap<String, SandboxClient>,
    pending: HashMap<String, Pending>,
    /// Codes by digest.
    codes: HashMap<String, IssuedCode>,
    /// Refresh tokens by digest. Rotation adds a new one and keeps the old, as Entra does.
    grants: HashMap<String, Grant>,
    /// Sandbox users by lower-cased address, with their password.
    users: HashMap<String, SecretString>,
    /// Access tokens by digest.
    access_tokens: HashMap<String, AccessToken>,
    messages: Vec<ReceivedMessage>,
    /// Authenticated SMTP sessions per mailbox.
    connections: HashMap<String, usize>,
    /// Recent submission times per mailbox, for the rate limit.
    submissions: HashMap<String, std::collections::VecDeque<OffsetDateTime>>,
    /// Mailbox → accounts with Full Access to it (may authenticate as it).
    full_access: HashMap<String, Vec<String>>,
    /// Mailbox → accounts with Send As permission on it.
    send_as: HashMap<String, Vec<String>>,
    graph: graph::GraphInner,
    /// App registrations' application permissions and Exchange's scoping, by client id.
    apps: HashMap<String, AppAccess>,
    /// Client assertions' `jti`s seen, until they expire (each is single-use).
    assertion_ids: HashMap<String, i64>,
    devices: devices::Devices,
    /// App registrations' client secrets; refresh requests' scopes.
    credentials: credentials::CredentialsInner,
}

/// The sandbox's shared state.
#[derive(Default)]
pub struct SandboxState {
    inner: Mutex<Inner>,
    switches: Mutex<Switches>,
    pub counters: Counters,
    signing_key: std::sync::OnceLock<oauth::SigningKey>,
    clock: SandboxClock,
    changes: events::Changes,
    google: google::GoogleState,
}

/// The sandbox's clock: the system clock unless a test gives it another.
struct SandboxClock(SharedClock);

impl Default for SandboxClock {
    fn default() -> Self {
        Self(crate::clock::system())
    }
}

impl SandboxState {
    /// A sandbox whose tokens, codes and rate limits go by `clock`.
    pub fn with_clock(clock: SharedClock) -> Self {
        Self {
            clock: SandboxClock(clock),
            ..Self::default()
        }
    }

    /// The time, as the sandbox's clock tells it.
    pub fn now(&self) -> OffsetDateTime {
        self.clock.0.now()
    }

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

    /// Registers a confidential client with exact redirect URIs, returning its id and secret.
    pub fn register_client(&self, name: &str, redirect_uris: Vec<String>) -> SandboxClient {
        let client = SandboxClient {
            name: name.to_owned(),
            client_id: uuid::Uuid::new_v4().to_string(),
            secret_id: uuid::Uuid::new_v4().to_string(),
            secret: SecretString::from(entra_like_secret()),
            redirect_uris,
        };
        self.inner()
            .clients
            .insert(client.client_id.clone(), client.clone());
        self.record_first_secret(&client);
        client
    }

    pub fn client(&self, client_id: &str) -> Option<SandboxClient> {
        self.inner().clients.get(client_id).cloned()
    }

    pub(crate) fn put_pending(&self, id: String, pending: Pending) {
        let mut inner = self.inner();
        let now = self.now();
        inner.pending.retain(|_, p| p.expires_at > now);
        inner.pending.insert(id, pending);
    }

    pub(crate) fn pending(&self, id: &str) -> Option<Pending> {
        let now = self.now();
        self.inner()
            .pending
            .get(id)
            .filter(|p| p.expires_at > now)
            .cloned()
    }

    pub(crate) fn sign_in_pending(&self, id: &str, user: &str) {
        if let Some(p) = self.inner().pending.get_mut(id) {
            p.user = Some(user.to_lowercase());
        }
    }

    pub(crate) fn take_pending(&self, id: &str) -> Option<Pending> {
        let now = self.now();
        self.inner()
            .pending
            .remove(id)
            .filter(|p| p.expires_at > now)
    }

    pub(crate) fn put_code(&self, code: &str, issued: IssuedCode) {
        self.inner()
            .codes
            .insert(crypto::token_digest(code), issued);
    }

    /// Marks a code redeemed and returns it as it was (so a second redemption is seen).
    pub(crate) fn redeem_code(&self, code: &str) -> Option<IssuedCode> {
        let mut inner = self.inner();
        let issued = inner.codes.get_mut(&crypto::token_digest(code))?;
        let before = issued.clone();
        issued.redeemed = true;
        Some(before)
    }

    pub(crate) fn put_grant(&self, refresh_token: &str, grant: Grant) {
        self.inner()
            .grants
            .insert(crypto::token_digest(refresh_token), grant);
    }

    pub(crate) fn grant(&self, refresh_token: &str) -> Option<Grant> {
        self.inner()
            .grants
            .get(&crypto::token_digest(refresh_token))
            .cloned()
    }

    pub(crate) fn signing_key(&self) -> &oauth::SigningKey {
        self.signing_key.get_or_init(oauth::SigningKey::generate)
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

    /// Lets `delegate` authenticate as `mailbox` (Exchange's Full Access), and with
    /// `send_as` also send as it. Without Send As, its messages get SendAsDenied.
    pub fn grant_mailbox_access(&self, mailbox: &str, delegate: &str, send_as: bool) {
        let mut inner = self.inner();
        inner
            .full_access
            .entry(mailbox.to_lowercase())
            .or_default()
            .push(delegate.to_lowercase());
        if send_as {
            inner
                .send_as
                .entry(mailbox.to_lowercase())
                .or_default()
                .push(delegate.to_lowercase());
        }
    }

    fn has_full_access(&self, mailbox: &str, delegate: &str) -> bool {
        self.inner()
            .full_access
            .get(&mailbox.to_lowercase())
            .is_some_and(|d| d.iter().any(|x| x.eq_ignore_ascii_case(delegate)))
    }

    fn has_send_as(&self, mailbox: &str, delegate: &str) -> bool {
        self.inner()
            .send_as
            .get(&mailbox.to_lowercase())
            .is_some_and(|d| d.iter().any(|x| x.eq_ignore_ascii_case(delegate)))
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
        let record = AccessToken {
            user: user.to_lowercase(),
            client_id: client_id.to_owned(),
            audience: apps::audience_of(&scopes),
            scopes,
            expires_at: now + Duration::seconds(self.switches().access_token_lifetime_secs),
            app_only: false,
            roles: Vec::new(),
        };
        (self.store_access_token(&record), record)
    }

    fn store_access_token(&self, record: &AccessToken) -> SecretString {
        let token = format!("sbx.{}", crypto::random_token());
        self.inner()
            .access_tokens
            .insert(crypto::token_digest(&token), record.clone());
        SecretString::from(token)
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
        // Oldest first: what left the minute is dropped from the front, so a submission costs
        // the same however many came in the last minute (a benchmark's thousands).
        while times
            .front()
            .is_some_and(|t| *t <= now - Duration::minutes(1))
        {
            times.pop_front();
        }
        if times.len() >= per_minute {
            return false;
        }
        times.push_back(now);
        true
    }

    /// Uses up one configured token-endpoint outage, if any is left.
    pub(crate) fn take_outage(&self) -> bool {
        let mut switches = self.switches.lock().unwrap_or_else(|e| e.into_inner());
        if switches.token_outages > 0 {
            switches.token_outages -= 1;
            return true;
        }
        false
    }

    /// Uses up one configured submission outage, if any is left.
    pub(crate) fn take_submission_outage(&self) -> bool {
        let mut switches = self.switches.lock().unwrap_or_else(|e| e.into_inner());
        if switches.submission_outages > 0 {
            switches.submission_outages -= 1;
            return true;
        }
        false
    }
}

/// A running sandbox: the authorization server and the SMTP server, with their shared state.
pub struct RunningSandbox {
    pub state: std::sync::Arc<SandboxState>,
    pub oauth: oauth::OAuthServer,
    pub http_addr: std::net::SocketAddr,
    pub smtp_addr: std::net::SocketAddr,
    pub ca: std::sync::Arc<crate::tls::LocalCa>,
    shutdown: Option<tokio::sync::watch::Sender<bool>>,
}

/// The sandbox's default tenant.
pub const DEFAULT_TENANT: &str = "sandbox";

impl RunningSandbox {
    /// Binds the configured addresses and starts both servers.
    pub async fn start(settings: &Settings) -> std::io::Result<Self> {
        let http = tokio::net::TcpListener::bind(settings.listen).await?;
        let smtp = tokio::net::TcpListener::bind(settings.smtp_listen).await?;
        Self::start_on(http, smtp, settings.public_url.as_str()).await
    }

    /// Starts both servers on listeners the caller bound (tests bind port 0 first).
    pub async fn start_on(
        http: tokio::net::TcpListener,
        smtp: tokio::net::TcpListener,
        public_url: &str,
    ) -> std::io::Result<Self> {
        Self::start_with_clock(http, smtp, public_url, crate::clock::system()).await
    }

    /// Like [`RunningSandbox::start_on`], with tokens, codes and limits going by `clock`.
    pub async fn start_with_clock(
        http: tokio::net::TcpListener,
        smtp: tokio::net::TcpListener,
        public_url: &str,
        clock: SharedClock,
    ) -> std::io::Result<Self> {
        use std::sync::Arc;

        let http_addr = http.local_addr()?;
        let smtp_addr = smtp.local_addr()?;
        let state = Arc::new(SandboxState::with_clock(clock));
        let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let smtp_ip = smtp_addr.ip().to_string();
        if !names.contains(&smtp_ip) && !smtp_addr.ip().is_unspecified() {
            names.push(smtp_ip);
        }
        let ca = Arc::new(
            crate::tls::LocalCa::generate("Herald sandbox", &names)
                .map_err(|e| std::io::Error::other(e.to_string()))?,
        );
        let oauth = oauth::OAuthServer::new(state.clone(), public_url, DEFAULT_TENANT);
        let ca_pem = ca.ca_pem().to_owned();
        let graph = graph::router(state.clone(), public_url);
        let google = google::router(state.clone(), public_url);
        let app = oauth::router(oauth.clone())
            .merge(graph)
            .merge(google)
            .route(
                "/_sandbox/ca.pem",
                axum::routing::get(move || {
                    let pem = ca_pem.clone();
                    async move {
                        (
                            [(axum::http::header::CONTENT_TYPE, "application/x-pem-file")],
                            pem,
                        )
                    }
                }),
            );
        let (tx, rx) = tokio::sync::watch::channel(false);
        let mut http_stop = rx.clone();
        tokio::spawn(async move {
            let _ = axum::serve(http, app)
                .with_graceful_shutdown(async move {
                    let _ = http_stop.wait_for(|stop| *stop).await;
                })
                .await;
        });
        let smtp_server = crate::smtp_server::SmtpServer::on(
            smtp,
            smtp::config(ca.server_config()),
            Arc::new(smtp::SandboxSmtp::new(state.clone())),
        );
        let mut smtp_stop = rx;
        tokio::spawn(smtp_server.run(async move {
            let _ = smtp_stop.wait_for(|stop| *stop).await;
        }));
        Ok(Self {
            state,
            oauth,
            http_addr,
            smtp_addr,
            ca,
            shutdown: Some(tx),
        })
    }

    /// Stops both servers.
    pub fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
    }
}

impl Drop for RunningSandbox {
    fn drop(&mut self) {
        self.stop();
    }
}
