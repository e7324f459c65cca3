//! A Google mailbox's app-only token: its service account's JSON key (sealed as the mailbox's
//! client secret) signs a JWT bearer grant for the mailbox, and Google answers a token for that
//! user if an admin delegated Gmail's scope to the account domain-wide. Each mailbox is its own
//! subject, so tokens are held per mailbox address (Microsoft's app tokens serve every mailbox).

use oauth2::{RequestTokenError, TokenResponse as _};
use secrecy::{ExposeSecret, SecretString};

use super::app_token::AppKey;
use super::client_auth::{ClientCredential, client_credentials};
use super::tokens::{REFRESH_SKEW, TokenFailure};
use super::{Access, AccessResult};
use crate::crypto;
use crate::domain::mailbox::{Mailbox, StatusReason};
use crate::oauth::http::HttpError;
use crate::oauth::service_account::{ServiceAccountKey, request_token};
use crate::oauth::{self, errors};

fn no_key(why: String) -> TokenFailure {
    TokenFailure::Refused(StatusReason::new(
        "service_account_key_invalid",
        format!("The mailbox's service account key cannot be used: {why}."),
        Some("In Google Cloud, IAM & Admin › Service accounts › the account › Keys › Add key › Create new key › JSON, and upload the file as the mailbox's service account key.".into()),
    ))
}

/// The service account's token for the mailbox: the one held while it is fresh and not the
/// one just `rejected`, else a new one.
pub(super) async fn token(
    access: &Access,
    mailbox: &Mailbox,
    rejected: Option<&SecretString>,
) -> AccessResult<Result<SecretString, TokenFailure>> {
    let json = match client_credentials(access, mailbox).await? {
        Ok(found) => match found.into_iter().next() {
            Some(ClientCredential::Secret {
                secret: Some(json), ..
            }) => json,
            _ => return Ok(Err(no_key("none was uploaded".into()))),
        },
        Err(reason) => return Ok(Err(TokenFailure::Refused(reason))),
    };
    let key = match ServiceAccountKey::parse(&json) {
        Ok(key) => key,
        Err(e) => return Ok(Err(no_key(e.to_string()))),
    };
    let token_url = mailbox
        .token_url
        .clone()
        .unwrap_or_else(|| key.token_uri.clone());
    let slot = access.app_tokens.slot(AppKey {
        token_url: token_url.clone(),
        client_id: key.client_email.clone(),
        scopes: format!("{} sub={}", mailbox.scopes.join(" "), mailbox.username),
        credential: crypto::token_digest(json.expose_secret()),
    });
    let mut held = slot.lock().await;
    let now = access.now();
    if let Some((token, expires)) = held.as_ref()
        && *expires - REFRESH_SKEW > now
        && rejected.is_none_or(|r| r.expose_secret() != token.expose_secret())
    {
        return Ok(Ok(token.clone()));
    }
    let assertion = match key.assertion(&mailbox.username, &mailbox.scopes, &token_url, now) {
        Ok(assertion) => assertion,
        Err(e) => return Ok(Err(no_key(e.to_string()))),
    };
    crate::metrics::get().token_refresh("app");
    match request_token(&access.http, &token_url, &assertion).await {
        Ok(response) => {
            let token = SecretString::from(response.access_token().secret().clone());
            *held = Some((token.clone(), now + oauth::lifetime(&response)));
            Ok(Ok(token))
        }
        Err(RequestTokenError::ServerResponse(error)) => {
            *held = None;
            Ok(Err(TokenFailure::Refused(errors::reason_for(
                &error,
                mailbox,
                &access.config.redirect_uri(),
            ))))
        }
        Err(RequestTokenError::Request(HttpError::TooLarge(limit))) => {
            Ok(Err(TokenFailure::Refused(errors::too_large(limit))))
        }
        Err(other) => {
            tracing::warn!(mailbox = %mailbox.id, error = %other, "token endpoint unavailable for a service account");
            Ok(Err(TokenFailure::Transient(other.to_string())))
        }
    }
}
