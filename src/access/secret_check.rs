//! A new client secret, tried before it is kept: a delegated mailbox refreshes its grant with
//! it, an app-only one asks for its own token with it. Microsoft authenticates the client before
//! it looks at the grant, so a refusal of the secret (AADSTS7000222 expired, AADSTS7000215
//! invalid) says the secret is wrong, and the old one stays.

use super::client_auth::ClientCredential;
use super::tokens::refresh_with;
use super::{Access, AccessResult, app_token};
use crate::domain::mailbox::{CredentialKind, Mailbox, StatusReason};
use crate::oauth::errors;
use secrecy::SecretString;

/// What trying a new client secret showed.
#[derive(Debug)]
pub enum SecretCheck {
    /// The token endpoint took it (a delegated mailbox's new tokens are stored).
    Accepted,
    /// Microsoft refused the secret itself: `client_secret_expired` or `client_secret_invalid`.
    Refused(StatusReason),
    /// It could not be tried (no refresh token yet, the token endpoint unreachable, or a
    /// refusal about the grant rather than the secret): it is kept as it is.
    Unchecked,
}

/// Tries `secret` at the mailbox's token endpoint, as the mailbox stands (its app, its grant).
pub async fn check_new_secret(
    access: &Access,
    mailbox: &Mailbox,
    secret: &SecretString,
) -> AccessResult<SecretCheck> {
    let credential = ClientCredential::Secret {
        secret: Some(secret.clone()),
        next: false,
    };
    let result = if mailbox.credential == CredentialKind::App {
        app_token::request_token(access, mailbox, &credential).await?
    } else {
        match refresh_with(access, mailbox, &credential).await? {
            Some(result) => result,
            None => return Ok(SecretCheck::Unchecked),
        }
    };
    Ok(match result {
        Ok(_) => SecretCheck::Accepted,
        Err(oauth2::RequestTokenError::ServerResponse(error)) => {
            let reason = errors::reason_for(&error, mailbox, &access.config.redirect_uri());
            if reason.code.starts_with("client_secret_") {
                SecretCheck::Refused(reason)
            } else {
                tracing::info!(mailbox = %mailbox.id, error = %error, "a new client secret was taken, but the grant was refused");
                SecretCheck::Unchecked
            }
        }
        Err(other) => {
            tracing::warn!(mailbox = %mailbox.id, error = %other, "a new client secret could not be tried: the token endpoint is unavailable");
            SecretCheck::Unchecked
        }
    })
}

/// What the `client_secret` field says when Microsoft refused a new secret.
pub fn refusal_message(reason: &StatusReason) -> String {
    match reason.code.as_str() {
        "client_secret_expired" => "Microsoft says this client secret has expired (AADSTS7000222): create a new one under Certificates & secrets and paste its Value. The secret in use stays.".into(),
        _ => format!(
            "Microsoft refused this client secret ({}): paste the Value (not the Secret ID) of a secret of this app registration. The secret in use stays.",
            reason
                .message
                .split('(')
                .nth(1)
                .and_then(|s| s.split(')').next())
                .unwrap_or("AADSTS7000215")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_code_microsoft_gave() {
        let expired = StatusReason::new(
            "client_secret_expired",
            "The client secret has expired (AADSTS7000222).",
            None,
        );
        assert!(refusal_message(&expired).contains("has expired (AADSTS7000222)"));
        let invalid = StatusReason::new(
            "client_secret_invalid",
            "The client secret was refused (AADSTS7000215).",
            None,
        );
        let text = refusal_message(&invalid);
        assert!(text.contains("(AADSTS7000215)"), "{text}");
        assert!(text.contains("not the Secret ID"));
    }
}
