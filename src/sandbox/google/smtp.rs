//! Gmail's manners on the sandbox's SMTP server, for Google users: an XOAUTH2 token is good
//! only with Gmail's scope and for its own account, and a refused one is answered with the
//! `334` base64 JSON challenge, then `535 5.7.8`; a refused password gets `535 5.7.8` at once;
//! and each user may send `google_messages_per_day` messages in any 24 hours (Workspace:
//! 2,000) before `550 5.4.5 Daily user sending limit exceeded`.

use secrecy::ExposeSecret;
use time::Duration;

use super::super::SandboxState;
use super::GOOGLE_MAIL_SCOPE;
use crate::smtp_server::{AuthRefusal, Credentials, Reply};

/// The account a Google user's credentials open, or Gmail's refusal. `None` when the
/// credentials are not a Google user's (the Exchange-shaped checks apply).
pub(in crate::sandbox) fn authenticate(
    state: &SandboxState,
    credentials: &Credentials,
) -> Option<Result<String, AuthRefusal>> {
    match credentials {
        Credentials::XOAuth2 { user, token } if state.is_google_user(user) => {
            let good = state
                .access_token(token.expose_secret(), state.now())
                .is_some_and(|record| {
                    record.scopes.iter().any(|s| s == GOOGLE_MAIL_SCOPE)
                        && record.user.eq_ignore_ascii_case(user)
                });
            Some(if good {
                Ok(user.to_lowercase())
            } else {
                Err(AuthRefusal {
                    challenge: Some(challenge()),
                    reply: auth_failed(),
                })
            })
        }
        Credentials::Password {
            username, password, ..
        } if state.is_google_user(username) => Some(if state.check_password(username, password) {
            Ok(username.to_lowercase())
        } else {
            Err(auth_failed().into())
        }),
        _ => None,
    }
}

/// Records one message of a Google user, or answers Gmail's daily-limit refusal.
pub(in crate::sandbox) fn admit(state: &SandboxState, user: &str) -> Result<(), Reply> {
    let limit = state.switches().google_messages_per_day as usize;
    let now = state.now();
    let mut google = state.google();
    let sent = google.sent.entry(user.to_lowercase()).or_default();
    sent.retain(|t| *t > now - Duration::days(1));
    if sent.len() >= limit {
        return Err(Reply::new(
            550,
            "5.4.5",
            "Daily user sending limit exceeded. For more information on Gmail sending limits go to https://support.google.com/a/answer/166852 - gsmtp",
        ));
    }
    sent.push(now);
    Ok(())
}

/// Gmail's challenge after a refused XOAUTH2 token: base64 JSON.
pub(in crate::sandbox) fn challenge() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .encode(r#"{"status":"401","schemes":"Bearer","scope":"https://mail.google.com/"}"#)
}

/// Gmail's refusal of a password or, after the challenge, of a token.
pub(in crate::sandbox) fn auth_failed() -> Reply {
    Reply::new(
        535,
        "5.7.8",
        "Username and Password not accepted. For more information, go to https://support.google.com/mail/?p=BadCredentials",
    )
}
