//! AUTH PLAIN, LOGIN and XOAUTH2: the exchange of `334` prompts and responses, and the
//! handler's verdict.

use base64::Engine as _;
use secrecy::SecretString;
use smtp_proto::{AUTH_LOGIN, AUTH_PLAIN, AUTH_XOAUTH2};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Reply, Session, SmtpHandler, State, Step, Stop, Transaction, bad_sequence};
use crate::smtp_server::{Credentials, Mechanism};

/// The response an AUTH exchange awaits.
pub(super) enum AuthStep {
    /// PLAIN's response, after an empty `334`.
    Plain,
    /// XOAUTH2's response, after an empty `334`.
    XOAuth2,
    /// LOGIN's user name, after `334 Username:`.
    LoginUser,
    /// LOGIN's password, after `334 Password:`.
    LoginPassword { user: String },
    /// Any answer to the handler's challenge; then `reply` refuses the credentials.
    Challenged { reply: Reply },
}

/// The prompts of LOGIN, base64 of `Username:` and `Password:`.
const USERNAME: &str = "VXNlcm5hbWU6";
const PASSWORD: &str = "UGFzc3dvcmQ6";

fn decode(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()
}

fn malformed() -> Reply {
    Reply::new(501, "5.5.2", "Cannot decode the authentication response")
}

fn cancelled() -> Reply {
    Reply::new(501, "5.0.0", "Authentication cancelled")
}

impl<S, H> Session<S, H>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    H: SmtpHandler,
{
    pub(super) fn auth_allowed_now(&self) -> bool {
        !self.config.mechanisms.is_empty() && (self.info.tls || self.config.auth_without_tls)
    }

    /// The AUTH command: checks it may start, then takes the initial response or prompts.
    pub(super) async fn auth(
        &mut self,
        transaction: Transaction,
        mechanism: u64,
        initial: String,
    ) -> Step<State> {
        if self.info.helo.is_none() {
            return self.refuse(transaction, bad_sequence("Send EHLO first"));
        }
        if self.info.auth.is_some() {
            return self.refuse(transaction, bad_sequence("Already authenticated"));
        }
        if !matches!(transaction, Transaction::Idle) {
            return self.refuse(
                transaction,
                bad_sequence("AUTH not allowed during a mail transaction"),
            );
        }
        if !self.info.tls && !self.config.auth_without_tls {
            let reply = self.config.auth_needs_tls_reply.clone();
            return self.refuse(transaction, reply);
        }
        let offered = match mechanism {
            AUTH_PLAIN => Some(Mechanism::Plain),
            AUTH_LOGIN => Some(Mechanism::Login),
            AUTH_XOAUTH2 => Some(Mechanism::XOAuth2),
            _ => None,
        }
        .filter(|wanted| self.config.mechanisms.contains(wanted));
        let Some(wanted) = offered else {
            return self.refuse(
                transaction,
                Reply::new(504, "5.7.4", "Unrecognized authentication type"),
            );
        };
        let (step, prompt) = match wanted {
            Mechanism::Plain => (AuthStep::Plain, ""),
            Mechanism::Login => (AuthStep::LoginUser, USERNAME),
            Mechanism::XOAuth2 => (AuthStep::XOAuth2, ""),
        };
        if initial.is_empty() || initial == "=" {
            return Ok(self.prompt(prompt, step));
        }
        self.auth_response(step, initial).await
    }

    /// Sends a `334` with `challenge` and awaits the response `step` expects.
    fn prompt(&mut self, challenge: &str, step: AuthStep) -> State {
        self.reply(&Reply::new(334, "", challenge));
        State::Auth(step)
    }

    /// One response of the client in an AUTH exchange.
    pub(super) async fn auth_response(&mut self, step: AuthStep, response: String) -> Step<State> {
        let credentials = match step {
            AuthStep::Challenged { reply } => return self.auth_refused(reply),
            _ if response == "*" => return self.refuse(Transaction::Idle, cancelled()),
            AuthStep::Plain => {
                let Some(bytes) = decode(&response) else {
                    return self.refuse(Transaction::Idle, malformed());
                };
                let mut parts = bytes.split(|&b| b == 0);
                let (Some(_authzid), Some(user), Some(pass), None) =
                    (parts.next(), parts.next(), parts.next(), parts.next())
                else {
                    return self.refuse(Transaction::Idle, malformed());
                };
                Credentials::Password {
                    mechanism: Mechanism::Plain,
                    username: String::from_utf8_lossy(user).into_owned(),
                    password: SecretString::from(String::from_utf8_lossy(pass).into_owned()),
                }
            }
            AuthStep::LoginUser => {
                return Ok(self.prompt(PASSWORD, AuthStep::LoginPassword { user: response }));
            }
            AuthStep::LoginPassword { user } => {
                let (Some(user), Some(pass)) = (decode(&user), decode(&response)) else {
                    return self.refuse(Transaction::Idle, malformed());
                };
                Credentials::Password {
                    mechanism: Mechanism::Login,
                    username: String::from_utf8_lossy(&user).into_owned(),
                    password: SecretString::from(String::from_utf8_lossy(&pass).into_owned()),
                }
            }
            AuthStep::XOAuth2 => {
                let Some((user, token)) = decode(&response).and_then(|b| parse_xoauth2(&b)) else {
                    return self.refuse(Transaction::Idle, malformed());
                };
                Credentials::XOAuth2 {
                    user,
                    token: SecretString::from(token),
                }
            }
        };
        match self.handler.authenticate(&self.info, credentials).await {
            Ok(identity) => {
                self.info.auth = Some(identity);
                self.reply(&Reply::new(235, "2.7.0", "Authentication successful"));
                Ok(State::Command(Transaction::Idle))
            }
            Err(refusal) => {
                self.auth_failures += 1;
                match refusal.challenge {
                    // The client answers the challenge (an empty line) before the final reply.
                    Some(challenge) => Ok(self.prompt(
                        &challenge,
                        AuthStep::Challenged {
                            reply: refusal.reply,
                        },
                    )),
                    None => self.auth_refused(refusal.reply),
                }
            }
        }
    }

    /// Refuses credentials, and closes the session once too many were refused.
    fn auth_refused(&mut self, reply: Reply) -> Step<State> {
        self.reply(&reply);
        if self.auth_failures >= self.config.max_auth_failures {
            return Err(Stop::Close(Reply::new(
                421,
                "4.7.0",
                "Too many failed authentication attempts; closing connection",
            )));
        }
        Ok(State::Command(Transaction::Idle))
    }
}

/// Splits an XOAUTH2 initial response: `user=U\x01auth=Bearer T\x01\x01`.
pub(crate) fn parse_xoauth2(bytes: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut user = None;
    let mut token = None;
    for part in text.split('\x01').filter(|p| !p.is_empty()) {
        if let Some(u) = part.strip_prefix("user=") {
            user = Some(u.to_owned());
        } else if let Some(auth) = part.strip_prefix("auth=") {
            let (scheme, value) = auth.split_once(' ')?;
            if !scheme.eq_ignore_ascii_case("bearer") {
                return None;
            }
            token = Some(value.trim().to_owned());
        }
    }
    Some((user?, token?))
}
