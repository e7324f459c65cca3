//! The SMTP relay for legacy devices and programs: they log in with AUTH PLAIN or LOGIN and a
//! relay credential's password, and Herald puts their mail in the outbox of one of the
//! credential's mailboxes, which delivers it with OAuth 2.0 like any other mail. `250` is
//! answered only once the message is committed.
//!
//! The protocol and its limits (timeouts, line lengths, bad commands, sessions per address,
//! SMTP smuggling) are [`crate::smtp_server`]'s; this module decides who may send what.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;

use crate::config::{OutboxSettings, RelaySettings};
use crate::domain::Exceeded;
use crate::domain::mailbox::Mailbox;
use crate::domain::message::{MessageSource, MessageStatus};
use crate::domain::relay::{FromPolicy, RelayCredential};
use crate::outbox::Outbox;
use crate::services::ServiceError;
use crate::services::relay::{RelayService, Reservation};
use crate::services::send::{Body, Caller, ForeignFrom, ORIGINATOR, Submission};
use crate::smtp_server::{
    AuthIdentity, AuthRefusal, Credentials, Envelope, Mechanism, Reply, SessionInfo, SmtpConfig,
    SmtpHandler, SmtpServer,
};

/// Failed logins allowed per client address within [`FAILURE_WINDOW`].
pub const MAX_FAILURES_PER_ADDRESS: u32 = 10;
/// The window failed logins are counted in.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);

/// Decides who may relay, and hands their mail to the outbox.
pub struct RelayHandler {
    relay: RelayService,
    outbox_settings: OutboxSettings,
    outbox: Outbox,
    /// Credentials and their mailboxes as read in the last second, by username: a session
    /// asks for them at MAIL FROM and again at DATA, for every message.
    recent: Mutex<HashMap<String, Recent>>,
    /// This instance's logins between their reservation and their outcome, by failure scope.
    in_flight: Arc<Mutex<HashMap<String, u32>>>,
}

/// A reserved login attempt, counted in flight until its outcome is known.
struct Attempt {
    /// Taken when the login succeeds (its record is taken back); kept as a failure otherwise.
    reservation: Option<Reservation>,
    scope: String,
    in_flight: Arc<Mutex<HashMap<String, u32>>>,
}

impl Drop for Attempt {
    fn drop(&mut self) {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = in_flight.get_mut(&self.scope) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                in_flight.remove(&self.scope);
            }
        }
    }
}

/// How long a login waits for a reservation held only by other logins in flight, before it is
/// refused like a login over the limit.
const IN_FLIGHT_PATIENCE: Duration = Duration::from_secs(2);

/// A credential, its mailboxes that still exist, when they were read, and the count of changes
/// then ([`RelayService::changes_seen`]): a change since, here or in another instance, makes
/// it stale at once.
type Recent = (RelayCredential, Vec<Mailbox>, Instant, u64);

/// How long a credential read from the store is used before it is read again.
const CREDENTIAL_TTL: Duration = Duration::from_secs(1);

fn temporary() -> Reply {
    Reply::new(451, "4.3.0", "Temporary local problem; try again later")
}

fn bad_credentials() -> Reply {
    Reply::new(535, "5.7.8", "Authentication credentials invalid")
}

impl RelayHandler {
    pub fn new(relay: RelayService, outbox_settings: OutboxSettings, outbox: Outbox) -> Self {
        Self {
            relay,
            outbox_settings,
            outbox,
            recent: Mutex::default(),
            in_flight: Arc::default(),
        }
    }

    /// The key under which an address's failures count, shared by every instance.
    fn failure_scope(ip: IpAddr) -> String {
        format!("relay:address:{}", crate::smtp_server::client_prefix(ip))
    }

    /// Reserves a login attempt for the address before its password is checked, as the web
    /// sign-in does ([`RelayService::reserve_login`]): the attempt counts as a failure from
    /// now on, in the database every instance checks, so parallel sessions cannot all pass the
    /// limit before any failure is recorded. Refused with `454` once the address has used its
    /// [`MAX_FAILURES_PER_ADDRESS`]; if the database does not answer, `451` rather than let
    /// the login through unchecked.
    ///
    /// A refusal while other logins from the address are still in flight on this instance (a
    /// pool of sessions logging in at once) waits for them for up to [`IN_FLIGHT_PATIENCE`]: at
    /// most [`MAX_FAILURES_PER_ADDRESS`] passwords are ever checked at once, and good logins
    /// beyond that wait their turn instead of being refused.
    async fn reserve(&self, ip: IpAddr) -> Result<Attempt, Reply> {
        let scope = Self::failure_scope(ip);
        let limit = i64::from(MAX_FAILURES_PER_ADDRESS);
        let patience = tokio::time::Instant::now() + IN_FLIGHT_PATIENCE;
        loop {
            let now = self.relay.now().unix_timestamp();
            let since = now - FAILURE_WINDOW.as_secs() as i64;
            match self.relay.reserve_login(&scope, limit, now, since).await {
                Ok(Ok(reservation)) => {
                    *self
                        .in_flight
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(scope.clone())
                        .or_default() += 1;
                    return Ok(Attempt {
                        reservation: Some(reservation),
                        scope,
                        in_flight: self.in_flight.clone(),
                    });
                }
                Ok(Err(_))
                    if self.in_flight_for(&scope) > 0 && tokio::time::Instant::now() < patience =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(Err(_)) => {
                    return Err(Reply::new(
                        454,
                        "4.7.0",
                        "Too many failed logins from your address; try again later",
                    ));
                }
                // Logged by the service when the database was reached.
                Err(_) => return Err(temporary()),
            }
        }
    }

    fn in_flight_for(&self, scope: &str) -> u32 {
        self.in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(scope)
            .copied()
            .unwrap_or(0)
    }

    /// Takes a reserved attempt back: the login succeeded (the address's earlier failures
    /// stay, as the web sign-in keeps an address's), or the password was never checked.
    async fn release(&self, mut attempt: Attempt) {
        let Some(reservation) = attempt.reservation.take() else {
            return;
        };
        if let Err(e) = self.relay.take_back_login(reservation).await {
            tracing::warn!(error = %e, "could not take back a successful relay login's attempt");
        }
    }

    /// The login failed: its reserved attempt stays recorded.
    fn failed(mut attempt: Attempt) {
        crate::metrics::get().relay_auth_failures.inc();
        // The reserved record stays: it is the failure.
        let _kept = attempt.reservation.take();
    }

    /// The session's credential and its mailboxes that still exist, in the credential's order.
    async fn credential(
        &self,
        session: &SessionInfo,
    ) -> Result<(RelayCredential, Vec<Mailbox>), Reply> {
        let Some(auth) = &session.auth else {
            return Err(Reply::new(530, "5.7.0", "Authentication required"));
        };
        let seen = self.relay.changes_seen();
        if let Some((credential, mailboxes, at, then)) = self
            .recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&auth.username)
            && at.elapsed() < CREDENTIAL_TTL
            && *then == seen
        {
            return Ok((credential.clone(), mailboxes.clone()));
        }
        let (credential, mailboxes) = self
            .relay
            .credential_and_mailboxes(&auth.username)
            .await
            .map_err(|_| temporary())?
            .ok_or_else(|| Reply::new(535, "5.7.8", "This relay credential was deleted"))?;
        if mailboxes.is_empty() {
            return Err(Reply::new(
                550,
                "5.7.1",
                "The mailboxes of this relay credential were deleted; ask the admin for a new credential",
            ));
        }
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() > 10_000 {
            recent.retain(|_, (_, _, at, _)| at.elapsed() < CREDENTIAL_TTL);
        }
        recent.insert(
            auth.username.clone(),
            (credential.clone(), mailboxes.clone(), Instant::now(), seen),
        );
        Ok((credential, mailboxes))
    }
}

fn matching<'a>(mailboxes: &'a [Mailbox], from: &str) -> Option<&'a Mailbox> {
    mailboxes
        .iter()
        .find(|m| m.username.eq_ignore_ascii_case(from.trim()))
}

fn not_permitted(from: &str) -> Reply {
    Reply::new(
        550,
        "5.7.1",
        format!("Client does not have permissions to send as this sender ({from})"),
    )
}

impl SmtpHandler for RelayHandler {
    async fn on_connect(&self, _peer: std::net::SocketAddr) -> Result<(), Reply> {
        crate::metrics::get().relay_sessions_open.inc();
        Ok(())
    }

    fn on_disconnect(&self, session: &SessionInfo) {
        let metrics = crate::metrics::get();
        metrics.relay_sessions_open.dec();
        let outcome = if session.auth.is_some() {
            "authenticated"
        } else {
            "anonymous"
        };
        metrics
            .relay_sessions
            .get_or_create(&crate::metrics::OutcomeLabel { outcome })
            .inc();
    }

    async fn authenticate(
        &self,
        session: &SessionInfo,
        credentials: Credentials,
    ) -> Result<AuthIdentity, AuthRefusal> {
        let ip = session.peer.ip();
        let Credentials::Password {
            mechanism,
            username,
            password,
        } = credentials
        else {
            return Err(Reply::new(504, "5.5.4", "Use AUTH PLAIN or LOGIN").into());
        };
        let reservation = self.reserve(ip).await.map_err(AuthRefusal::from)?;
        let found = self
            .relay
            .check_login(username.trim(), password.expose_secret())
            .await;
        let found = match found {
            Ok(found) => found,
            Err(_) => {
                // Not the client's fault: the attempt is not held against it.
                self.release(reservation).await;
                return Err(temporary().into());
            }
        };
        let Some(credential) = found else {
            Self::failed(reservation);
            tracing::info!(peer = %session.peer, "relay login refused");
            return Err(bad_credentials().into());
        };
        if !credential.allows(ip) {
            Self::failed(reservation);
            tracing::info!(peer = %session.peer, credential = %credential.id, "relay login from an address the credential does not allow");
            return Err(bad_credentials().into());
        }
        self.release(reservation).await;
        self.relay.note_use(&credential, self.relay.now()).await;
        Ok(AuthIdentity {
            username: credential.username,
            mechanism: Some(mechanism),
            delegate: None,
        })
    }

    /// A device that did not log in: known by its network when a network-only credential
    /// holds its address.
    async fn identify(&self, session: &SessionInfo) -> Option<AuthIdentity> {
        let found = self.relay.by_network(session.peer.ip()).await;
        match found {
            Ok(Some(credential)) => {
                tracing::info!(peer = %session.peer, credential = %credential.id, "relay client known by its network");
                self.relay.note_use(&credential, self.relay.now()).await;
                Some(AuthIdentity {
                    username: credential.username,
                    mechanism: None,
                    delegate: None,
                })
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "could not look up the relay's network-only credentials");
                None
            }
        }
    }

    async fn mail_from(&self, session: &SessionInfo, from: &str) -> Result<(), Reply> {
        let (credential, mailboxes) = self.credential(session).await?;
        if matching(&mailboxes, from).is_some() || credential.from_policy == FromPolicy::Rewrite {
            return Ok(());
        }
        Err(not_permitted(from))
    }

    async fn deliver(&self, session: &SessionInfo, envelope: Envelope, message: Vec<u8>) -> Reply {
        let (credential, mailboxes) = match self.credential(session).await {
            Ok(found) => found,
            Err(reply) => return reply,
        };
        let mailbox = matching(&mailboxes, &envelope.mail_from).unwrap_or(&mailboxes[0]);
        let foreign_from = match credential.from_policy {
            FromPolicy::Refuse => ForeignFrom::Refuse,
            FromPolicy::Rewrite => ForeignFrom::Rewrite {
                keep_reply_to: credential.keep_reply_to,
            },
        };
        let accepted = self
            .relay
            .accept(
                &self.outbox_settings,
                &Caller {
                    org_id: credential.org_id,
                    api_key_id: None,
                    allowed: None,
                    source: MessageSource::Relay,
                },
                Submission {
                    mailbox: Some(mailbox.id.to_string()),
                    body: Body::Relayed {
                        raw: message,
                        recipients: envelope.rcpt_to,
                        foreign_from,
                    },
                    idempotency_key: None,
                    request_digest: String::new(),
                },
                self.relay.now(),
            )
            .await;
        match accepted {
            Ok(accepted) => {
                crate::metrics::get().relay_messages.inc();
                if accepted.status == MessageStatus::Queued {
                    self.outbox.wake_for(accepted.mailbox_id);
                }
                Reply::new(250, "2.0.0", format!("OK queued as {}", accepted.id))
            }
            Err(ServiceError::Invalid(errors)) => {
                let detail = errors
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                let originator = |f: &str| ORIGINATOR.iter().any(|o| o.eq_ignore_ascii_case(f));
                if errors.iter().any(|e| originator(&e.field)) {
                    Reply::new(550, "5.7.1", format!("Sender not permitted: {detail}"))
                } else if errors
                    .iter()
                    .any(|e| e.exceeded == Some(Exceeded::Recipients))
                {
                    Reply::new(550, "5.5.3", format!("Too many recipients: {detail}"))
                } else if errors.iter().any(|e| e.exceeded == Some(Exceeded::Size)) {
                    Reply::new(552, "5.3.4", format!("Message too big: {detail}"))
                } else {
                    Reply::new(554, "5.6.0", format!("Message refused: {detail}"))
                }
            }
            Err(ServiceError::Rejected {
                code: "duplicate_header",
                error,
            }) => Reply::new(550, "5.6.0", format!("Message refused: {}", error.message)),
            // The organization's queue is full: the device keeps the message and retries later.
            Err(ServiceError::Limited { code, message, .. }) => match code {
                "queue_full" => Reply::new(452, "4.3.1", format!("Queue full: {message}")),
                _ => Reply::new(451, "4.7.1", format!("Try again later: {message}")),
            },
            Err(e) => {
                tracing::warn!(error = %e, "relay could not queue a message");
                temporary()
            }
        }
    }
}

/// The relay's SMTP manners: STARTTLS, AUTH PLAIN and LOGIN only after it (unless allowed on
/// loopback), `530 5.7.0` before, Exchange's 500 recipients, the outbox's size limit.
pub fn smtp_config(
    settings: &RelaySettings,
    tls: Arc<rustls::ServerConfig>,
    max_size: u64,
) -> SmtpConfig {
    let mut config = SmtpConfig::new(settings.hostname.clone());
    config.banner = "ESMTP Herald relay ready".into();
    config.max_message_size = usize::try_from(max_size).unwrap_or(usize::MAX);
    config.max_recipients = 500;
    config.tls = Some(tls);
    config.mechanisms = vec![Mechanism::Plain, Mechanism::Login];
    config.auth_without_tls = settings.auth_without_tls;
    config.auth_needs_tls_reply = Reply::new(530, "5.7.0", "Must issue a STARTTLS command first");
    config.require_auth = true;
    // An application server may keep a pool of sessions; a device needs one or two.
    config.max_sessions_per_address = 50;
    config.max_sessions = settings.max_sessions;
    config
}

/// The relay's TLS: the configured certificate, or one generated now (with a warning, since
/// devices must then be told to trust it or not to check).
pub fn tls_config(settings: &RelaySettings) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    crate::tls::install_crypto_provider();
    match (&settings.cert_file, &settings.key_file) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .with_context(|| format!("cannot read HERALD_RELAY_CERT_FILE {}", cert.display()))?
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| {
                    format!(
                        "HERALD_RELAY_CERT_FILE {} holds no valid certificate",
                        cert.display()
                    )
                })?;
            let key = PrivateKeyDer::from_pem_file(key).with_context(|| {
                format!(
                    "HERALD_RELAY_KEY_FILE {} holds no valid private key",
                    key.display()
                )
            })?;
            let config = rustls::ServerConfig::builder()
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .context("the relay's certificate and key do not match")?;
            Ok(Arc::new(config))
        }
        _ => {
            tracing::warn!(
                hostname = %settings.hostname,
                "the SMTP relay uses a certificate generated at start: set HERALD_RELAY_CERT_FILE and HERALD_RELAY_KEY_FILE so devices can verify it"
            );
            let ca = crate::tls::LocalCa::generate(
                "Herald relay",
                std::slice::from_ref(&settings.hostname),
            )
            .map_err(|e| anyhow::anyhow!("cannot generate the relay's certificate: {e}"))?;
            Ok(ca.server_config())
        }
    }
}

/// The relay's listeners, bound.
pub struct Relay {
    starttls: Option<SmtpServer<RelayHandler>>,
    implicit: Option<SmtpServer<RelayHandler>>,
}

impl Relay {
    /// Binds the configured listeners (STARTTLS, implicit TLS), before anything else starts,
    /// so that a port taken is a clear error and port 0 becomes the port actually bound.
    pub async fn bind_listeners(
        settings: &RelaySettings,
    ) -> anyhow::Result<(Option<TcpListener>, Option<TcpListener>)> {
        let bind = |addr: Option<SocketAddr>| async move {
            match addr {
                Some(addr) => TcpListener::bind(addr).await.map(Some).with_context(|| {
                    format!(
                        "cannot listen for the SMTP relay on {addr}: is another process using it?"
                    )
                }),
                None => Ok(None),
            }
        };
        Ok((
            bind(settings.listen).await?,
            bind(settings.tls_listen).await?,
        ))
    }

    /// The relay on listeners bound by [`Relay::bind_listeners`]; `None` when there are none.
    pub fn on(
        listeners: (Option<TcpListener>, Option<TcpListener>),
        settings: &RelaySettings,
        outbox_settings: &OutboxSettings,
        relay: RelayService,
        outbox: Outbox,
    ) -> anyhow::Result<Option<Self>> {
        if listeners.0.is_none() && listeners.1.is_none() {
            return Ok(None);
        }
        let tls = tls_config(settings)?;
        let config = smtp_config(settings, tls, outbox_settings.max_message_bytes);
        let handler = Arc::new(RelayHandler::new(relay, outbox_settings.clone(), outbox));
        Ok(Some(Self {
            starttls: listeners
                .0
                .map(|l| SmtpServer::on(l, config.clone(), handler.clone())),
            implicit: listeners
                .1
                .map(|l| SmtpServer::on(l, config.clone(), handler.clone()).implicit_tls()),
        }))
    }

    /// The same listeners with another handler (the application was rewired).
    pub fn with_handler(self, handler: RelayHandler) -> Self {
        let handler = Arc::new(handler);
        Self {
            starttls: self.starttls.map(|s| s.with_handler(handler.clone())),
            implicit: self.implicit.map(|s| s.with_handler(handler.clone())),
        }
    }

    /// The STARTTLS listener's address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.starttls.as_ref().and_then(|s| s.local_addr().ok())
    }

    /// The implicit-TLS listener's address.
    pub fn tls_local_addr(&self) -> Option<SocketAddr> {
        self.implicit.as_ref().and_then(|s| s.local_addr().ok())
    }

    /// How many relay sessions are open now, on both listeners (see
    /// [`SmtpServer::sessions_open`]).
    pub fn sessions_open(&self) -> Option<tokio::sync::watch::Receiver<usize>> {
        self.starttls
            .as_ref()
            .or(self.implicit.as_ref())
            .map(|s| s.sessions_open())
    }

    /// Serves until `shutdown` resolves.
    pub async fn run(self, shutdown: tokio::sync::watch::Receiver<bool>) {
        let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let a = self
            .starttls
            .map(|s| tokio::spawn(s.run(wait(shutdown.clone()))));
        let b = self
            .implicit
            .map(|s| tokio::spawn(s.run(wait(shutdown.clone()))));
        if let Some(a) = a {
            let _ = a.await;
        }
        if let Some(b) = b {
            let _ = b.await;
        }
    }
}
