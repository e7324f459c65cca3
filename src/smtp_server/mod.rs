//! An SMTP submission server, reusable by every Herald listener that receives mail: the
//! sandbox's stand-in for Exchange Online now, the relay for legacy devices later.
//!
//! This module owns the protocol (greeting, EHLO, STARTTLS, AUTH PLAIN/LOGIN/XOAUTH2, MAIL,
//! RCPT, DATA, BDAT) and its limits (line length, message size, recipients, bad commands,
//! failed authentications, RFC 5321 timeouts, sessions per client address). What a session
//! *means* — whether credentials are good, whether a sender may send, what happens to a
//! message — is the [`SmtpHandler`]'s business. Every reply carries an enhanced status code.
//!
//! Commands are parsed by `smtp-proto`; the DATA phase is [`data`]'s own (see there why).

pub mod data;
mod session;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use secrecy::SecretString;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpListener;

pub use session::{run_session, run_tls_session};

/// One SMTP reply: a code, an enhanced status code and text (which may span lines).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub status: String,
    pub text: String,
}

impl Reply {
    pub fn new(code: u16, status: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            code,
            status: status.into(),
            text: text.into(),
        }
    }

    /// Whether the reply accepts (2xx or 3xx).
    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    /// Writes the reply in wire form, `CODE-` on every line but the last.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let lines: Vec<&str> = self
            .text
            .split('\n')
            .map(|l| l.trim_end_matches('\r'))
            .collect();
        for (i, line) in lines.iter().enumerate() {
            let sep = if i + 1 == lines.len() { ' ' } else { '-' };
            if self.status.is_empty() {
                out.extend_from_slice(format!("{}{sep}{line}\r\n", self.code).as_bytes());
            } else {
                out.extend_from_slice(
                    format!("{}{sep}{} {line}\r\n", self.code, self.status).as_bytes(),
                );
            }
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.code, self.status, self.text)
    }
}

/// SASL mechanisms the server can offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Login,
    XOAuth2,
}

impl Mechanism {
    pub fn name(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::Login => "LOGIN",
            Self::XOAuth2 => "XOAUTH2",
        }
    }
}

/// What a client presented in AUTH. Secrets never reach `Debug`.
pub enum Credentials {
    /// PLAIN or LOGIN.
    Password {
        mechanism: Mechanism,
        username: String,
        password: SecretString,
    },
    /// XOAUTH2: `user=…^Aauth=Bearer …^A^A`.
    XOAuth2 { user: String, token: SecretString },
}

impl Credentials {
    pub fn mechanism(&self) -> Mechanism {
        match self {
            Self::Password { mechanism, .. } => *mechanism,
            Self::XOAuth2 { .. } => Mechanism::XOAuth2,
        }
    }

    pub fn username(&self) -> &str {
        match self {
            Self::Password { username, .. } => username,
            Self::XOAuth2 { user, .. } => user,
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("mechanism", &self.mechanism())
            .field("username", &self.username())
            .finish_non_exhaustive()
    }
}

/// A refused AUTH: the final reply, after an optional `334` challenge the client must answer
/// (Gmail answers a bad XOAUTH2 token with `334` and base64 JSON, waits for an empty line, and
/// only then sends its `535`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthRefusal {
    pub challenge: Option<String>,
    pub reply: Reply,
}

impl From<Reply> for AuthRefusal {
    fn from(reply: Reply) -> Self {
        Self {
            challenge: None,
            reply,
        }
    }
}

/// Who authenticated, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthIdentity {
    /// The mailbox the session acts as.
    pub username: String,
    /// How it authenticated; `None` when the handler knew the client by its address alone
    /// ([`SmtpHandler::identify`]).
    pub mechanism: Option<Mechanism>,
    /// The account whose credentials were used, when it is another (a delegate).
    pub delegate: Option<String>,
}

/// What the handler knows of the session when it decides.
#[derive(Clone, Debug)]
pub struct SessionInfo {
    pub peer: SocketAddr,
    pub tls: bool,
    pub helo: Option<String>,
    pub auth: Option<AuthIdentity>,
}

/// A message's envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
}

/// The decisions that give a session its meaning.
pub trait SmtpHandler: Send + Sync + 'static {
    /// A client connected; refuse it with a reply (the session then closes).
    fn on_connect(&self, _peer: SocketAddr) -> impl Future<Output = Result<(), Reply>> + Send {
        async { Ok(()) }
    }

    /// Checks credentials. On failure, the reply is sent as is (e.g. `535 5.7.3`).
    fn authenticate(
        &self,
        session: &SessionInfo,
        credentials: Credentials,
    ) -> impl Future<Output = Result<AuthIdentity, AuthRefusal>> + Send;

    /// A client that did not authenticate gives MAIL FROM where authentication is required:
    /// the handler may know it by its address alone (a device bound to its network). `None`
    /// answers `auth_required_reply`.
    fn identify(
        &self,
        _session: &SessionInfo,
    ) -> impl Future<Output = Option<AuthIdentity>> + Send {
        async { None }
    }

    /// Accepts or refuses the envelope sender.
    fn mail_from(
        &self,
        _session: &SessionInfo,
        _from: &str,
    ) -> impl Future<Output = Result<(), Reply>> + Send {
        async { Ok(()) }
    }

    /// Accepts or refuses one recipient.
    fn rcpt_to(
        &self,
        _session: &SessionInfo,
        _from: &str,
        _to: &str,
    ) -> impl Future<Output = Result<(), Reply>> + Send {
        async { Ok(()) }
    }

    /// Takes a complete message. Answer `250` only once it is safely kept.
    fn deliver(
        &self,
        session: &SessionInfo,
        envelope: Envelope,
        message: Vec<u8>,
    ) -> impl Future<Output = Reply> + Send;

    /// The session ended, however it ended.
    fn on_disconnect(&self, _session: &SessionInfo) {}
}

/// The server's limits and manners.
#[derive(Clone)]
pub struct SmtpConfig {
    /// The host name in the banner and the EHLO reply.
    pub hostname: String,
    /// Text after `220 hostname` in the banner.
    pub banner: String,
    /// Largest message accepted, in bytes (advertised with SIZE).
    pub max_message_size: usize,
    pub max_recipients: usize,
    /// Longest command line, CRLF included.
    pub max_line_length: usize,
    /// Bad or out-of-sequence commands before the session is closed.
    pub max_bad_commands: u32,
    /// Failed AUTH attempts before the session is closed.
    pub max_auth_failures: u32,
    /// How long to wait for a command (RFC 5321 §4.5.3.2: at least 5 minutes).
    pub command_timeout: Duration,
    /// How long to wait for each block of message data.
    pub data_timeout: Duration,
    /// TLS for STARTTLS; `None` when the listener has no certificate.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The mechanisms offered, in the order advertised.
    pub mechanisms: Vec<Mechanism>,
    /// Offer AUTH before STARTTLS (only for listeners reachable from loopback alone).
    pub auth_without_tls: bool,
    /// The reply to AUTH before STARTTLS when that is not allowed.
    pub auth_needs_tls_reply: Reply,
    /// Require AUTH before MAIL.
    pub require_auth: bool,
    /// The reply to MAIL without AUTH when AUTH is required.
    pub auth_required_reply: Reply,
    /// Concurrent sessions from one client address (an IPv6 client by its /64, which one
    /// machine usually holds whole).
    pub max_sessions_per_address: usize,
    /// Concurrent sessions in all, every client together.
    pub max_sessions: usize,
    /// The live sessions, shared by every server given a clone of this configuration (the
    /// relay's STARTTLS and implicit-TLS listeners count together).
    sessions: Arc<SessionCounter>,
}

impl SmtpConfig {
    /// Defaults fit for a submission server: 35 MB messages, 500 recipients, 5-minute timeouts.
    pub fn new(hostname: impl Into<String>) -> Self {
        let hostname = hostname.into();
        Self {
            banner: "ESMTP ready".into(),
            hostname,
            max_message_size: 35 * 1024 * 1024,
            max_recipients: 500,
            max_line_length: 2048,
            max_bad_commands: 10,
            max_auth_failures: 3,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(300),
            tls: None,
            mechanisms: vec![Mechanism::Plain, Mechanism::Login],
            auth_without_tls: false,
            auth_needs_tls_reply: Reply::new(
                538,
                "5.7.11",
                "Encryption required for requested authentication mechanism",
            ),
            require_auth: true,
            auth_required_reply: Reply::new(530, "5.7.0", "Authentication required"),
            max_sessions_per_address: 20,
            max_sessions: 1000,
            sessions: Arc::default(),
        }
    }
}

/// The part of a client's address that identifies the client, for limits counted per client:
/// an IPv4 address as it is (also when written IPv4-mapped), an IPv6 address by its /64,
/// which one machine or household usually holds whole (so hopping through it gains nothing).
pub fn client_prefix(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// Counts live sessions, in all and per client address, and announces the total.
struct SessionCounter(Mutex<Sessions>, tokio::sync::watch::Sender<usize>);

impl Default for SessionCounter {
    fn default() -> Self {
        Self(Mutex::default(), tokio::sync::watch::channel(0).0)
    }
}

#[derive(Default)]
struct Sessions {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// Which limit a new session met.
#[derive(Debug, PartialEq, Eq)]
enum Full {
    Server,
    Address,
}

impl SessionCounter {
    fn try_enter(
        self: &Arc<Self>,
        ip: IpAddr,
        max_total: usize,
        max_per_address: usize,
    ) -> Result<SessionGuard, Full> {
        let ip = client_prefix(ip);
        let mut sessions = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if sessions.total >= max_total {
            return Err(Full::Server);
        }
        let count = sessions.by_address.entry(ip).or_default();
        if *count >= max_per_address {
            return Err(Full::Address);
        }
        *count += 1;
        sessions.total += 1;
        self.1.send_replace(sessions.total);
        Ok(SessionGuard {
            counter: self.clone(),
            ip,
        })
    }
}

struct SessionGuard {
    counter: Arc<SessionCounter>,
    ip: IpAddr,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let mut sessions = self.counter.0.lock().unwrap_or_else(|e| e.into_inner());
        sessions.total -= 1;
        self.counter.1.send_replace(sessions.total);
        if let Some(count) = sessions.by_address.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                sessions.by_address.remove(&self.ip);
            }
        }
    }
}

/// Answers a connection the server has no room for, and closes it, without holding up the
/// accept loop.
fn refuse(mut stream: tokio::net::TcpStream, reply: Reply) {
    tokio::spawn(async move {
        let mut out = Vec::new();
        reply.write_to(&mut out);
        let write = async {
            let _ = stream.write_all(&out).await;
            let _ = stream.shutdown().await;
        };
        // A client that does not read its refusal does not keep a task alive.
        let _ = tokio::time::timeout(Duration::from_secs(10), write).await;
    });
}

/// A listening SMTP server.
pub struct SmtpServer<H> {
    listener: TcpListener,
    config: Arc<SmtpConfig>,
    handler: Arc<H>,
    implicit_tls: bool,
}

impl<H: SmtpHandler> SmtpServer<H> {
    pub async fn bind(
        addr: SocketAddr,
        config: SmtpConfig,
        handler: Arc<H>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Self::on(listener, config, handler))
    }

    pub fn on(listener: TcpListener, config: SmtpConfig, handler: Arc<H>) -> Self {
        Self {
            listener,
            config: Arc::new(config),
            handler,
            implicit_tls: false,
        }
    }

    /// The same listener with another handler.
    pub fn with_handler(self, handler: Arc<H>) -> Self {
        Self { handler, ..self }
    }

    /// Speaks TLS from the first byte (port 465 style) instead of offering STARTTLS.
    pub fn implicit_tls(mut self) -> Self {
        self.implicit_tls = true;
        self
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// How many sessions are open now, on this server and on any other sharing its
    /// [`SmtpConfig`]'s count; changes as a session takes its place (when accepted, before
    /// any TLS handshake) and when it ends.
    pub fn sessions_open(&self) -> tokio::sync::watch::Receiver<usize> {
        self.config.sessions.1.subscribe()
    }

    /// Accepts sessions until `shutdown` completes.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        let counter = self.config.sessions.clone();
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                () = &mut shutdown => return,
                accepted = self.listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(pair) => {
                    // Replies are small and awaited one by one: without this, Nagle and the
                    // client's delayed ACK hold each for up to 40 ms.
                    let _ = pair.0.set_nodelay(true);
                    pair
                }
                Err(e) => {
                    tracing::warn!(error = %e, "SMTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let entered = counter.try_enter(
                peer.ip(),
                self.config.max_sessions,
                self.config.max_sessions_per_address,
            );
            let guard = match entered {
                Ok(guard) => guard,
                Err(full) => {
                    let text = match full {
                        Full::Server => "Too many concurrent connections; try again later",
                        Full::Address => "Too many connections from your address; try again later",
                    };
                    refuse(stream, Reply::new(421, "4.7.0", text));
                    continue;
                }
            };
            let config = self.config.clone();
            let handler = self.handler.clone();
            let implicit_tls = self.implicit_tls;
            tokio::spawn(async move {
                let _guard = guard;
                let result = if implicit_tls {
                    run_tls_session(stream, peer, config, handler).await
                } else {
                    run_session(stream, peer, config, handler).await
                };
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "SMTP session ended with an error");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_client_counts_by_its_64_and_every_client_by_the_server_wide_cap() {
        let counter = Arc::new(SessionCounter::default());
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let first = counter.try_enter(ip("2001:db8:1:2::1"), 3, 1).unwrap();
        // Another address of the same /64 is the same client.
        assert_eq!(
            counter.try_enter(ip("2001:db8:1:2:ffff::9"), 3, 1).err(),
            Some(Full::Address)
        );
        let _other = counter.try_enter(ip("2001:db8:1:3::1"), 3, 1).unwrap();
        let v4 = counter.try_enter(ip("192.0.2.1"), 3, 1).unwrap();
        assert_eq!(
            counter.try_enter(ip("198.51.100.7"), 3, 1).err(),
            Some(Full::Server)
        );
        drop(v4);
        // IPv4-mapped is the IPv4 client.
        let _v4 = counter.try_enter(ip("192.0.2.1"), 3, 1).unwrap();
        drop(_other);
        assert_eq!(
            counter.try_enter(ip("::ffff:192.0.2.1"), 3, 1).err(),
            Some(Full::Address)
        );
        drop(first);
        assert!(counter.try_enter(ip("2001:db8:1:2::2"), 3, 1).is_ok());
    }
}
