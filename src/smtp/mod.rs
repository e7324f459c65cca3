//! Herald's SMTP client, on lettre: connect (to an address the [`HostPolicy`] allows), EHLO,
//! STARTTLS or implicit TLS with certificate verification, AUTH XOAUTH2 or PLAIN/LOGIN, and
//! the classification of replies by code and enhanced status code into the mailbox's
//! status reasons ([`gmail`] words Gmail's own).

pub mod gmail;
mod implicit_tls;

use std::time::Duration;

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, AsyncTokioStream, Certificate, TlsParameters,
};
use lettre::transport::smtp::extension::ClientId;
use secrecy::{ExposeSecret, SecretString};

use crate::domain::mailbox::{AuthKind, CredentialKind, Mailbox, Provider, Security, StatusReason};
use crate::domain::smtp::SmtpReply;
use crate::net::HostPolicy;
use implicit_tls::ImplicitTls;

/// How to authenticate.
pub enum SmtpAuth {
    XOAuth2 {
        user: String,
        token: SecretString,
    },
    Password {
        user: String,
        password: SecretString,
    },
}

/// What the server (or the network) answered, when it was not success.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmtpFailure {
    /// The server's reply; without a code when none answered, its text then says what went
    /// wrong.
    pub reply: SmtpReply,
    /// Whose fault it is, when the reply's code is not the one to say.
    pub fault: Fault,
}

/// Whose fault a failure is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The reply decides: its code, or a timeout or network error when there is none.
    Reply,
    /// A fault of the settings with no reply to show: TLS verification, a server without
    /// STARTTLS or a usable mechanism, an address Herald refuses to reach.
    Config,
    /// The message itself cannot be sent this way (Herald's client refused it): permanent.
    Message,
}

/// The kind of a failure, from its code and enhanced status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// Try again later: 4xx, timeouts, network errors.
    Transient,
    /// Authentication was refused (535, 530).
    Auth,
    /// Any other 5xx.
    Permanent,
    /// The settings cannot work (see [`Fault::Config`]).
    Config,
}

impl SmtpFailure {
    pub fn kind(&self) -> FailureKind {
        match self.fault {
            Fault::Config => FailureKind::Config,
            Fault::Message => FailureKind::Permanent,
            Fault::Reply if self.reply.is_transient() => FailureKind::Transient,
            Fault::Reply if self.reply.is_auth_refusal() => FailureKind::Auth,
            Fault::Reply => FailureKind::Permanent,
        }
    }

    fn from_lettre(error: &lettre::transport::smtp::Error) -> Self {
        let code = error
            .status()
            .and_then(|c| c.to_string().parse::<u16>().ok());
        let full = error.to_string();
        // lettre shows "permanent error (535): 5.7.3 Authentication unsuccessful".
        let text = full
            .split_once("): ")
            .map(|(_, t)| t.to_owned())
            .unwrap_or(full);
        let config = code.is_none() && (error.is_tls() || error.is_client() || tls_failure(error));
        Self {
            reply: SmtpReply::new(code, text),
            fault: if config { Fault::Config } else { Fault::Reply },
        }
    }

    /// No reply in time.
    fn timeout(stage: &str) -> Self {
        Self {
            reply: SmtpReply::no_reply(format!("the server did not answer in time ({stage})")),
            fault: Fault::Reply,
        }
    }

    /// Herald refuses to go on with these settings.
    fn refused(text: String) -> Self {
        Self {
            reply: SmtpReply::no_reply(text),
            fault: Fault::Config,
        }
    }
}

/// A refusal of the server's certificate or protocol during the implicit-TLS handshake: a
/// fault of the settings, as lettre's own TLS failures are.
fn tls_refusal(error: &std::io::Error) -> Option<SmtpFailure> {
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .map(|e| SmtpFailure::refused(format!("TLS: {e}")))
}

/// Whether a TLS failure (certificate verification, handshake) lies behind a lettre error,
/// which reports STARTTLS handshake failures as connection errors.
fn tls_failure(error: &lettre::transport::smtp::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    while let Some(e) = source {
        if e.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// The status reason a failure gives the mailbox, or `None` when it must not change the status:
/// throttling and other transient replies, and, when `sending`, refusals of that one message.
pub fn reason_for(failure: &SmtpFailure, mailbox: &Mailbox, sending: bool) -> Option<StatusReason> {
    if let Some(reason) = gmail::reason_for(failure, mailbox) {
        return Some(reason);
    }
    let enhanced = failure.reply.enhanced.as_deref().unwrap_or_default();
    let text = &failure.reply.text;
    let reply = failure.reply.line();
    let reason = |code: &str, message: String, action: &str| {
        Some(StatusReason::new(code, message, Some(action.to_owned())))
    };
    match (failure.reply.code, enhanced) {
        (Some(535), "5.7.139") => reason(
            "smtp_auth_disabled",
            format!("SMTP AUTH is disabled for this mailbox or tenant ({reply})."),
            &format!(
                "In Exchange Online PowerShell run: Set-CASMailbox -Identity {} -SmtpClientAuthenticationDisabled $false — or enable it tenant-wide with Set-TransportConfig -SmtpClientAuthenticationDisabled $false. Security defaults also disable it.",
                mailbox.username
            ),
        ),
        (Some(550), "5.7.30") => reason(
            "basic_auth_retired",
            format!("The server no longer accepts passwords for SMTP ({reply})."),
            "Microsoft is retiring Basic authentication for SMTP AUTH: add this mailbox again with OAuth2.",
        ),
        (Some(554), e)
            if e == "5.2.252"
                || (e.starts_with("5.2.0") && text.contains("SendAsDenied"))
                || text.contains("SendAsDenied") =>
        {
            reason(
                "send_as_denied",
                format!(
                    "The server refused to send as {} ({reply}).",
                    mailbox.username
                ),
                "The account that signed in may not send as this address: sign in as the mailbox itself, or grant the signing-in account Send As permission on it.",
            )
        }
        (Some(535), _) | (Some(530), _) | (Some(534), _) => match mailbox.auth {
            AuthKind::OAuth2 if mailbox.credential == CredentialKind::App => reason(
                "app_not_permitted",
                format!(
                    "The SMTP server refused the app's token for {} ({reply}).",
                    mailbox.username
                ),
                &format!(
                    "Give the app the application permission SMTP.SendAsApp (Office 365 Exchange Online) with admin consent, then in Exchange Online PowerShell register it and give it the mailbox: New-ServicePrincipal -AppId <Application (client) ID> -ObjectId <the Enterprise Application's Object ID>; Add-MailboxPermission -Identity {} -User <the service principal> -AccessRights FullAccess. Then click Verify.",
                    mailbox.username
                ),
            ),
            AuthKind::OAuth2 => reason(
                "token_rejected",
                format!("The SMTP server refused the access token ({reply})."),
                &match mailbox.provider {
                    Provider::Microsoft => format!(
                        "Check that the app has the delegated permission SMTP.Send, that SMTP AUTH is enabled for the mailbox, and that {} may send as {}; then click Authorize again.",
                        mailbox.sign_in_account, mailbox.username
                    ),
                    _ => "Click Authorize again and sign in as the mailbox's account.".to_owned(),
                },
            ),
            AuthKind::Basic => reason(
                "basic_auth_rejected",
                format!("The SMTP server refused the username or password ({reply})."),
                "Check the Username and Password, and that the server allows password logins (Microsoft 365: see the note on Basic auth).",
            ),
        },
        _ => match failure.kind() {
            FailureKind::Config => reason(
                "smtp_connection_failed",
                format!("Herald could not set up a secure SMTP session: {text}."),
                "Check the Host Name, port and security. The server's certificate must be valid for the Host Name (HERALD_SMTP_CA_FILE adds a private CA).",
            ),
            // Other refusals concern one message (a recipient, its size, its content), not the
            // mailbox; during a verification nothing but the session is at stake.
            FailureKind::Permanent if !sending => reason(
                "smtp_error",
                format!("The SMTP server refused ({reply})."),
                "Check the Host Name, port and security settings.",
            ),
            _ => None,
        },
    }
}

/// Where and how to reach a mailbox's SMTP server.
pub struct SmtpTarget<'a> {
    pub mailbox: &'a Mailbox,
    pub policy: HostPolicy,
    /// Extra trusted CAs (PEM): `HERALD_SMTP_CA_FILE`, the sandbox's CA.
    pub extra_roots: &'a [Vec<u8>],
    pub timeout: Duration,
}

fn tls_parameters(target: &SmtpTarget<'_>) -> Result<TlsParameters, SmtpFailure> {
    let mut builder = TlsParameters::builder(target.mailbox.host.clone());
    for pem in target.extra_roots {
        let cert = Certificate::from_pem(pem).map_err(|e| {
            SmtpFailure::refused(format!("an extra CA certificate is not valid: {e}"))
        })?;
        builder = builder.add_root_certificate(cert);
    }
    builder
        .build_rustls()
        .map_err(|e| SmtpFailure::refused(format!("cannot set up TLS: {e}")))
}

fn credentials(auth: &SmtpAuth) -> (Credentials, Vec<Mechanism>) {
    match auth {
        SmtpAuth::XOAuth2 { user, token } => (
            Credentials::new(user.clone(), token.expose_secret().to_owned()),
            vec![Mechanism::Xoauth2],
        ),
        SmtpAuth::Password { user, password } => (
            Credentials::new(user.clone(), password.expose_secret().to_owned()),
            vec![Mechanism::Plain, Mechanism::Login],
        ),
    }
}

/// The longest a message's MAIL … DATA exchange may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// An open, authenticated SMTP session, kept to send several messages over one connection.
pub struct Session {
    conn: AsyncSmtpConnection,
    opened: std::time::Instant,
}

impl Session {
    /// Connects (to an address the policy allows), upgrades to TLS (STARTTLS is required when
    /// configured: a server that does not offer it is refused, never downgraded) and
    /// authenticates.
    pub async fn open(target: &SmtpTarget<'_>, auth: &SmtpAuth) -> Result<Self, SmtpFailure> {
        let mailbox = target.mailbox;
        if mailbox.security == Security::None && !target.policy.dev {
            return Err(SmtpFailure::refused(
                "SMTP without TLS is only allowed in development mode".into(),
            ));
        }
        let addrs = target
            .policy
            .resolve(&mailbox.host, mailbox.port)
            .await
            .map_err(SmtpFailure::refused)?;
        let hello = ClientId::default();
        let implicit = match mailbox.security {
            Security::Tls => Some(
                ImplicitTls::prepare(&mailbox.host, target.extra_roots)
                    .map_err(SmtpFailure::refused)?,
            ),
            _ => None,
        };
        // Connect to the address the policy approved; TLS still verifies the host name.
        let addr = std::net::SocketAddr::new(addrs[0].ip(), mailbox.port);
        let cannot_connect = |e: &dyn std::fmt::Display| SmtpFailure {
            reply: SmtpReply::no_reply(format!("cannot connect to {addr}: {e}")),
            fault: Fault::Reply,
        };
        let connect = async {
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| cannot_connect(&e))?;
            // Commands and replies are small and awaited one by one: without this, Nagle's
            // algorithm and the server's delayed ACK cost up to 40 ms a message.
            let _ = tcp.set_nodelay(true);
            let stream: Box<dyn AsyncTokioStream> = match implicit {
                Some(handshake) => Box::new(
                    ImplicitTls::connect(handshake, tcp)
                        .await
                        .map_err(|e| tls_refusal(&e).unwrap_or_else(|| cannot_connect(&e)))?,
                ),
                None => Box::new(tcp),
            };
            AsyncSmtpConnection::connect_with_transport(stream, &hello)
                .await
                .map_err(|e| failure(&e, auth))
        };
        let mut conn = match tokio::time::timeout(target.timeout, connect).await {
            Ok(result) => result?,
            Err(_) => return Err(SmtpFailure::timeout("connecting")),
        };
        if mailbox.security == Security::StartTls {
            if !conn.can_starttls() {
                conn.abort().await;
                return Err(SmtpFailure::refused(
                    "the server does not offer STARTTLS, which this mailbox requires".into(),
                ));
            }
            match tokio::time::timeout(
                target.timeout,
                conn.starttls(tls_parameters(target)?, &hello),
            )
            .await
            {
                Ok(result) => result.map_err(|e| failure(&e, auth))?,
                Err(_) => return Err(SmtpFailure::timeout("STARTTLS")),
            }
        }
        let (credentials, mechanisms) = credentials(auth);
        match tokio::time::timeout(target.timeout, conn.auth(&mechanisms, &credentials)).await {
            Ok(result) => result.map_err(|e| failure(&e, auth))?,
            Err(_) => return Err(SmtpFailure::timeout("AUTH")),
        };
        Ok(Self {
            conn,
            opened: std::time::Instant::now(),
        })
    }

    /// Sends one message; answers the server's final reply. Any failure closes the session.
    pub async fn send(
        &mut self,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<String, SmtpFailure> {
        // RFC 5321 §4.5.3.2 gives the server up to 10 minutes after the final dot.
        let sent = tokio::time::timeout(SEND_TIMEOUT, self.conn.send(envelope, message)).await;
        let Ok(sent) = sent else {
            self.conn.abort().await;
            return Err(SmtpFailure::timeout("sending the message"));
        };
        match sent {
            Ok(response) => Ok(format!(
                "{} {}",
                response.code(),
                response.message().collect::<Vec<_>>().join(" ")
            )),
            // Before anything reached the server, lettre refused this message (non-ASCII
            // addresses without SMTPUTF8, 8-bit content without 8BITMIME): a fault of the
            // message, not of the settings.
            Err(e) if e.is_client() => Err(SmtpFailure {
                reply: SmtpReply::no_reply(e.to_string()),
                fault: Fault::Message,
            }),
            Err(e) => Err(SmtpFailure {
                fault: Fault::Reply,
                ..SmtpFailure::from_lettre(&e)
            }),
        }
    }

    /// Whether another message may be sent over this session.
    pub fn is_usable(&self) -> bool {
        !self.conn.has_broken()
    }

    /// How long the session has been open.
    pub fn age(&self) -> std::time::Duration {
        self.opened.elapsed()
    }

    /// Says QUIT and closes.
    pub async fn quit(mut self) {
        if !self.conn.has_broken() {
            let _ = self.conn.quit().await;
        }
        self.conn.abort().await;
    }
}

/// lettre's failure, read in the light of the mechanism used. Gmail refuses a bad XOAUTH2
/// token with a `334` challenge (base64 JSON) before its `535`; lettre stops at the challenge
/// ("does not expect a challenge"). A challenge after an XOAUTH2 initial response can only mean
/// the token was refused, so it is classified as the `535` it stands for.
fn failure(error: &lettre::transport::smtp::Error, auth: &SmtpAuth) -> SmtpFailure {
    let failure = SmtpFailure::from_lettre(error);
    if matches!(auth, SmtpAuth::XOAuth2 { .. })
        && failure.reply.code.is_none()
        && error.to_string().contains("does not expect a challenge")
    {
        return SmtpFailure {
            reply: SmtpReply::new(
                Some(535),
                "5.7.8 the server refused the access token (it answered XOAUTH2 with a 334 challenge, as Gmail does)",
            ),
            fault: Fault::Reply,
        };
    }
    failure
}

/// Connects, upgrades to TLS, authenticates and quits: does the mailbox work?
pub async fn verify(target: &SmtpTarget<'_>, auth: &SmtpAuth) -> Result<(), SmtpFailure> {
    Session::open(target, auth).await?.quit().await;
    Ok(())
}

/// Sends one message over a session of its own; answers the server's final reply.
pub async fn send(
    target: &SmtpTarget<'_>,
    auth: &SmtpAuth,
    message: lettre::Message,
) -> Result<String, SmtpFailure> {
    let mut session = Session::open(target, auth).await?;
    let result = session.send(message.envelope(), &message.formatted()).await;
    session.quit().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(code: u16, text: &str) -> SmtpFailure {
        SmtpFailure {
            reply: SmtpReply::new(Some(code), text),
            fault: Fault::Reply,
        }
    }

    #[test]
    fn a_refused_message_is_not_a_mailbox_fault_but_the_same_reply_at_verification_is() {
        let mailbox = crate::oauth::errors::tests_support::mailbox();
        let unknown_recipient = failure(550, "5.1.1 RESOLVER.ADR.RecipNotFound");
        assert_eq!(reason_for(&unknown_recipient, &mailbox, true), None);
        assert_eq!(
            reason_for(&unknown_recipient, &mailbox, false)
                .unwrap()
                .code,
            "smtp_error"
        );
        let quota = failure(
            554,
            "5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException",
        );
        assert_eq!(
            reason_for(&quota, &mailbox, true),
            None,
            "a quota is not SendAs"
        );
        let send_as = failure(
            554,
            "5.2.0 STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied",
        );
        assert_eq!(
            reason_for(&send_as, &mailbox, true).unwrap().code,
            "send_as_denied"
        );
    }

    #[test]
    fn throttling_never_changes_the_status() {
        assert_eq!(
            failure(
                432,
                "4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded"
            )
            .kind(),
            FailureKind::Transient
        );
        assert_eq!(
            failure(451, "4.7.500 Server busy").kind(),
            FailureKind::Transient
        );
        assert_eq!(
            failure(535, "5.7.3 Authentication unsuccessful").kind(),
            FailureKind::Auth
        );
    }
}
