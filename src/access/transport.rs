//! How a message reaches the provider. Each mailbox has a [`Transport`] (today: SMTP
//! submission) that opens [`Connection`]s authenticated with the mailbox's [`Credential`]; the
//! workers and the services see only these two traits, so a new transport (Microsoft Graph) is
//! a new implementation, not a new branch in the worker.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use lettre::address::Envelope;

use super::{Access, AccessResult, Credential, Secret};
use crate::domain::mailbox::{Mailbox, StatusReason};
use crate::domain::message::SmtpReply;
use crate::smtp::{self, FailureKind, SmtpAuth, SmtpFailure, SmtpTarget};

/// A future a transport answers, boxed so that transports can be chosen at run time.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a verification or a send did not succeed.
pub enum SendFailure {
    /// A fault of the mailbox: it turns Not Verified with this reason.
    Refused(StatusReason),
    /// Try later; nothing changes.
    Transient(SmtpReply),
    /// This message was refused (a recipient, its size, its content); the mailbox is fine.
    Rejected(SmtpReply),
    /// The provider said to slow down and for how long (Graph's `429` with `Retry-After`):
    /// the mailbox waits that long, nothing is lost and nothing faults.
    Throttled {
        reply: SmtpReply,
        retry_after: Duration,
    },
}

/// A send that failed: how it is classified, and the server's reply as the log keeps it.
pub struct Refusal {
    pub failure: SendFailure,
    pub reply: SmtpReply,
}

/// A way to hand messages to the provider.
pub trait Transport: Send + Sync {
    /// Opens a connection authenticated with the credential. A refused secret that the
    /// credential can renew gets one renewal and one retry.
    fn open<'a>(
        &'a self,
        access: &'a Access,
        mailbox: &'a Mailbox,
        credential: &'a Credential,
    ) -> BoxFuture<'a, AccessResult<Result<Box<dyn Connection>, SendFailure>>>;

    /// Connects, authenticates with `secret` and leaves: does the mailbox work with it?
    fn check<'a>(
        &'a self,
        access: &'a Access,
        mailbox: &'a Mailbox,
        secret: &'a Secret,
    ) -> BoxFuture<'a, Result<(), SendFailure>>;
}

/// An open, authenticated connection that sends one message after another.
pub trait Connection: Send {
    /// Whether another message may be sent over it.
    fn is_usable(&self) -> bool;
    /// How long it has been open.
    fn age(&self) -> Duration;
    /// Sends one message; answers the provider's final reply.
    fn send<'a>(
        &'a mut self,
        envelope: &'a Envelope,
        message: &'a [u8],
    ) -> BoxFuture<'a, Result<SmtpReply, Refusal>>;
    /// Says goodbye and closes.
    fn quit(self: Box<Self>) -> BoxFuture<'static, ()>;
}

/// The reply as the message log keeps it.
pub fn reply_of(failure: &SmtpFailure) -> SmtpReply {
    failure.reply.clone()
}

/// Classifies an SMTP failure: a fault of the mailbox, a delay, or a refusal of the message.
/// `sending` says whether a message was being sent (then a 5xx concerns the message).
pub fn classify(failure: &SmtpFailure, mailbox: &Mailbox, sending: bool) -> SendFailure {
    match smtp::reason_for(failure, mailbox, sending) {
        Some(reason) => SendFailure::Refused(reason),
        None if failure.kind() == FailureKind::Transient => {
            SendFailure::Transient(reply_of(failure))
        }
        None => SendFailure::Rejected(reply_of(failure)),
    }
}

/// SMTP submission (RFC 6409) with STARTTLS or implicit TLS, authenticated with XOAUTH2 or a
/// password.
pub(super) struct SmtpSubmission;

fn auth_of(mailbox: &Mailbox, secret: &Secret) -> SmtpAuth {
    match secret {
        Secret::Bearer(token) => SmtpAuth::XOAuth2 {
            user: mailbox.username.clone(),
            token: token.clone(),
        },
        Secret::Password(password) => SmtpAuth::Password {
            user: mailbox.username.clone(),
            password: password.clone(),
        },
    }
}

/// Where and how to reach the mailbox's SMTP server; `roots` are [`Access::roots_for`] it.
fn smtp_target<'a>(access: &Access, mailbox: &'a Mailbox, roots: &'a [Vec<u8>]) -> SmtpTarget<'a> {
    SmtpTarget {
        mailbox,
        policy: access.hosts(),
        extra_roots: roots,
        timeout: SMTP_TIMEOUT,
    }
}

impl Transport for SmtpSubmission {
    fn open<'a>(
        &'a self,
        access: &'a Access,
        mailbox: &'a Mailbox,
        credential: &'a Credential,
    ) -> BoxFuture<'a, AccessResult<Result<Box<dyn Connection>, SendFailure>>> {
        Box::pin(async move {
            let roots = access.roots_for(mailbox);
            let target = smtp_target(access, mailbox, &roots);
            let secret = match credential.secret(access, mailbox, None).await? {
                Ok(secret) => secret,
                Err(failure) => return Ok(Err(failure)),
            };
            let opened = match smtp::Session::open(&target, &auth_of(mailbox, &secret)).await {
                Err(failure)
                    if credential.renews()
                        && failure.kind() == FailureKind::Auth
                        && failure.reply.enhanced.as_deref() != Some("5.7.139") =>
                {
                    // The token may have been revoked early: renew once and retry once.
                    let secret = match credential.secret(access, mailbox, Some(&secret)).await? {
                        Ok(secret) => secret,
                        Err(failure) => return Ok(Err(failure)),
                    };
                    smtp::Session::open(&target, &auth_of(mailbox, &secret)).await
                }
                opened => opened,
            };
            Ok(match opened {
                Ok(session) => Ok(Box::new(SmtpConnection {
                    session,
                    mailbox: mailbox.clone(),
                }) as Box<dyn Connection>),
                Err(failure) => Err(classify(&failure, mailbox, false)),
            })
        })
    }

    fn check<'a>(
        &'a self,
        access: &'a Access,
        mailbox: &'a Mailbox,
        secret: &'a Secret,
    ) -> BoxFuture<'a, Result<(), SendFailure>> {
        Box::pin(async move {
            let roots = access.roots_for(mailbox);
            let target = smtp_target(access, mailbox, &roots);
            smtp::verify(&target, &auth_of(mailbox, secret))
                .await
                .map_err(|failure| classify(&failure, mailbox, false))
        })
    }
}

struct SmtpConnection {
    session: smtp::Session,
    /// The mailbox the session is for: its replies are classified in its light.
    mailbox: Mailbox,
}

impl Connection for SmtpConnection {
    fn is_usable(&self) -> bool {
        self.session.is_usable()
    }

    fn age(&self) -> Duration {
        self.session.age()
    }

    fn send<'a>(
        &'a mut self,
        envelope: &'a Envelope,
        message: &'a [u8],
    ) -> BoxFuture<'a, Result<SmtpReply, Refusal>> {
        Box::pin(async move {
            match self.session.send(envelope, message).await {
                Ok(line) => Ok(parse_reply(&line)),
                Err(failure) => Err(Refusal {
                    failure: classify(&failure, &self.mailbox, true),
                    reply: reply_of(&failure),
                }),
            }
        })
    }

    fn quit(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(self.session.quit())
    }
}

/// `250 2.0.0 OK <id>` as code, enhanced code and text.
fn parse_reply(line: &str) -> SmtpReply {
    SmtpReply::parse(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_250_reply_is_split_into_its_parts() {
        let reply = parse_reply("250 2.0.0 OK <id@x> [Hostname=y]");
        assert_eq!(reply.code, Some(250));
        assert_eq!(reply.enhanced.as_deref(), Some("2.0.0"));
        assert_eq!(reply.text, "2.0.0 OK <id@x> [Hostname=y]");
    }
}
