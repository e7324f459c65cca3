//! The sandbox's SMTP server, shaped like Exchange Online's `smtp.office365.com:587`: AUTH only
//! after STARTTLS, XOAUTH2 checked against the sandbox's own access tokens (scope SMTP.Send and
//! `user=` matching the token's user; or an app-only Exchange token with SMTP.SendAsApp and
//! Full Access to the `user=` mailbox), PLAIN/LOGIN for basic-auth mailboxes, and Exchange's
//! replies for the failures the switches turn on. Google users meet Gmail's manners instead
//! ([`super::google::smtp`]).

use std::sync::Arc;

use secrecy::ExposeSecret;

use super::{
    APP_SMTP_SEND_AS_APP, EXCHANGE_RESOURCE, ReceivedMessage, SMTP_SEND_SCOPE, SandboxState,
};
use crate::smtp_server::{
    AuthIdentity, AuthRefusal, Credentials, Envelope, Mechanism, Reply, SessionInfo, SmtpConfig,
    SmtpHandler,
};

/// Exchange's replies, word for word.
pub mod replies {
    use crate::smtp_server::Reply;

    pub fn auth_failed() -> Reply {
        Reply::new(535, "5.7.3", "Authentication unsuccessful")
    }

    pub fn smtp_auth_disabled() -> Reply {
        Reply::new(
            535,
            "5.7.139",
            "Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information.",
        )
    }

    pub fn basic_auth_retired() -> Reply {
        Reply::new(
            550,
            "5.7.30",
            "Basic authentication is not supported for Client Submission.",
        )
    }

    pub fn send_as_denied() -> Reply {
        Reply::new(
            554,
            "5.2.0",
            "STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied; Failed to process message due to a permanent exception with message Cannot submit message.",
        )
    }

    pub fn too_many_connections() -> Reply {
        Reply::new(
            432,
            "4.3.2",
            "STOREDRV.ClientSubmit; sender thread limit exceeded",
        )
    }

    pub fn rate_limited() -> Reply {
        Reply::new(
            432,
            "4.3.2",
            "STOREDRV.ClientSubmit; sender submission rate limit exceeded",
        )
    }

    pub fn not_authenticated() -> Reply {
        Reply::new(530, "5.7.57", "Client not authenticated to send mail.")
    }

    pub fn auth_before_tls() -> Reply {
        Reply::new(504, "5.7.4", "Unrecognized authentication type")
    }
}

/// The SMTP configuration of the sandbox: Exchange's manners on top of the defaults.
pub fn config(tls: Arc<rustls::ServerConfig>) -> SmtpConfig {
    let mut config = SmtpConfig::new("smtp.sandbox.herald.localhost");
    config.banner = "Microsoft ESMTP MAIL Service ready (Herald sandbox)".into();
    config.max_message_size = 35 * 1024 * 1024;
    config.max_recipients = 500;
    config.tls = Some(tls);
    config.mechanisms = vec![Mechanism::Login, Mechanism::XOAuth2, Mechanism::Plain];
    config.auth_needs_tls_reply = replies::auth_before_tls();
    config.require_auth = true;
    config.auth_required_reply = replies::not_authenticated();
    // Exchange limits connections per mailbox (the switches), not per client address.
    config.max_sessions_per_address = 1_000;
    config
}

/// Decides AUTH, Send-As and limits for the sandbox's SMTP server.
pub struct SandboxSmtp {
    state: Arc<SandboxState>,
}

impl SandboxSmtp {
    pub fn new(state: Arc<SandboxState>) -> Self {
        Self { state }
    }

    fn check_credentials(
        &self,
        _session: &SessionInfo,
        credentials: Credentials,
    ) -> Result<AuthIdentity, Reply> {
        self.state.count(&self.state.counters.smtp_auth_attempts);
        let switches = self.state.switches();
        let mechanism = credentials.mechanism();
        let mut delegate = None;
        let user = match credentials {
            Credentials::XOAuth2 { user, token } => {
                if switches.smtp_auth_disabled {
                    return Err(replies::smtp_auth_disabled());
                }
                let Some(record) = self
                    .state
                    .access_token(token.expose_secret(), self.state.now())
                else {
                    return Err(replies::auth_failed());
                };
                if record.app_only {
                    // An app opens only the mailboxes its service principal has Full Access to,
                    // with an Exchange token carrying SMTP.SendAsApp.
                    if record.audience != EXCHANGE_RESOURCE
                        || !record.roles.iter().any(|r| r == APP_SMTP_SEND_AS_APP)
                        || !self.state.app_opens_mailbox(&record.client_id, &user)
                    {
                        return Err(replies::auth_failed());
                    }
                } else if !record.scopes.iter().any(|s| s == SMTP_SEND_SCOPE) {
                    return Err(replies::auth_failed());
                } else if !record.user.eq_ignore_ascii_case(&user) {
                    // A delegate's token opens a shared mailbox it has Full Access to.
                    if !self.state.has_full_access(&user, &record.user) {
                        return Err(replies::auth_failed());
                    }
                    delegate = Some(record.user.clone());
                }
                user
            }
            Credentials::Password {
                username, password, ..
            } => {
                if switches.basic_auth_retired {
                    return Err(replies::basic_auth_retired());
                }
                if switches.smtp_auth_disabled {
                    return Err(replies::smtp_auth_disabled());
                }
                if !self.state.check_password(&username, &password) {
                    return Err(replies::auth_failed());
                }
                username
            }
        };
        if !self.state.enter_mailbox(&user) {
            self.state.count(&self.state.counters.connections_refused);
            return Err(replies::too_many_connections());
        }
        Ok(AuthIdentity {
            username: user.to_lowercase(),
            mechanism: Some(mechanism),
            delegate,
        })
    }
}

impl SmtpHandler for SandboxSmtp {
    async fn authenticate(
        &self,
        session: &SessionInfo,
        credentials: Credentials,
    ) -> Result<AuthIdentity, AuthRefusal> {
        let xoauth2 = credentials.mechanism() == Mechanism::XOAuth2;
        // A Google user meets Gmail, not Exchange.
        if let Some(google) = super::google::smtp::authenticate(&self.state, &credentials) {
            self.state.count(&self.state.counters.smtp_auth_attempts);
            let mechanism = credentials.mechanism();
            let username = google?;
            if !self.state.enter_mailbox(&username) {
                self.state.count(&self.state.counters.connections_refused);
                return Err(replies::too_many_connections().into());
            }
            return Ok(AuthIdentity {
                username,
                mechanism: Some(mechanism),
                delegate: None,
            });
        }
        match self.check_credentials(session, credentials) {
            Ok(identity) => Ok(identity),
            // Gmail's way: a 334 with base64 JSON, an empty line from the client, then 535 5.7.8.
            Err(reply)
                if xoauth2
                    && reply.code == 535
                    && self.state.switches().google_style_auth_failure =>
            {
                Err(AuthRefusal {
                    challenge: Some(super::google::smtp::challenge()),
                    reply: super::google::smtp::auth_failed(),
                })
            }
            Err(reply) => Err(reply.into()),
        }
    }

    async fn deliver(&self, session: &SessionInfo, envelope: Envelope, message: Vec<u8>) -> Reply {
        let Some(auth) = &session.auth else {
            return replies::not_authenticated();
        };
        let header_from = header_from_address(&message);
        let sends_as_self = envelope.mail_from.eq_ignore_ascii_case(&auth.username)
            && header_from
                .as_deref()
                .is_some_and(|f| f.eq_ignore_ascii_case(&auth.username));
        let may_send_as = auth
            .delegate
            .as_deref()
            .is_none_or(|d| self.state.has_send_as(&auth.username, d));
        if !sends_as_self || !may_send_as {
            return replies::send_as_denied();
        }
        let unknown = self.state.switches().unknown_recipients;
        if let Some(nobody) = envelope
            .rcpt_to
            .iter()
            .find(|r| unknown.iter().any(|u| u.eq_ignore_ascii_case(r)))
        {
            return Reply::new(
                550,
                "5.1.10",
                format!(
                    "RESOLVER.ADR.RecipientNotFound; Recipient {nobody} not found by SMTP address lookup"
                ),
            );
        }
        if self.state.take_submission_outage() {
            return Reply::new(
                451,
                "4.3.2",
                "Temporary server error. Please try again later. PRX2",
            );
        }
        let now = self.state.now();
        if self.state.is_google_user(&auth.username) {
            if let Err(refusal) = super::google::smtp::admit(&self.state, &auth.username) {
                return refusal;
            }
        } else if !self.state.admit_submission(&auth.username, now) {
            return replies::rate_limited();
        }
        let id = format!(
            "<{}@sandbox.herald.localhost>",
            uuid::Uuid::new_v4().simple()
        );
        self.state.store_message(ReceivedMessage {
            id: id.clone(),
            user: auth.username.clone(),
            mechanism: auth.mechanism.map_or("NONE", Mechanism::name),
            mail_from: envelope.mail_from,
            rcpt_to: envelope.rcpt_to,
            raw: message,
            received_at: now,
        });
        Reply::new(
            250,
            "2.0.0",
            format!("OK {id} [Hostname=smtp.sandbox.herald.localhost]"),
        )
    }

    fn on_disconnect(&self, session: &SessionInfo) {
        if let Some(auth) = &session.auth {
            self.state.leave_mailbox(&auth.username);
        }
    }
}

/// The address in the message's `From:` header (unfolded; `Name <addr>` or a bare address).
fn header_from_address(message: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(message);
    let headers = text
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .replace("\r\n ", " ")
        .replace("\r\n\t", " ");
    let value = headers.split("\r\n").find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("from")
            .then(|| value.trim().to_owned())
    })?;
    let address = match (value.rfind('<'), value.rfind('>')) {
        (Some(start), Some(end)) if start < end => &value[start + 1..end],
        _ => value.as_str(),
    };
    Some(address.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_from_header_address_is_found() {
        assert_eq!(
            header_from_address(b"Subject: x\r\nFrom: Ann <ann@contoso.com>\r\n\r\nbody")
                .as_deref(),
            Some("ann@contoso.com")
        );
        assert_eq!(
            header_from_address(b"from:\r\n bob@contoso.com\r\n\r\n").as_deref(),
            Some("bob@contoso.com")
        );
        assert_eq!(
            header_from_address(b"Subject: none\r\n\r\nFrom: x@y.z"),
            None
        );
    }
}
