//! App-only access tokens (OAuth 2.0 client credentials): the app asks with its own secret for
//! a token to `{resource}/.default`. No person signs in, and there is no refresh token to
//! expire after 90 idle days or at a password reset. A token serves every mailbox of the same
//! app, resource and secret, so Herald asks once an hour per app rather than per mailbox.

use std::collections::HashMap;
use std::sync::Arc;

use oauth2::{ClientSecret, RequestTokenError, Scope, TokenResponse as _};
use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;

use super::tokens::{REFRESH_SKEW, TokenFailure};
use super::{Access, AccessResult};
use crate::crypto;
use crate::domain::mailbox::{Mailbox, StatusReason, secret_fields};
use crate::keys;
use crate::oauth::http::HttpError;
use crate::oauth::{self, errors};

/// A held token and when it expires.
type Held = Option<(SecretString, OffsetDateTime)>;

/// The app tokens this process holds, by app (token endpoint, client id, scopes and a digest of
/// the secret: a mailbox with a wrong secret never borrows another's token). Each app has a
/// lock of its own, so a token endpoint that stalls holds up only its own app's mailboxes.
#[derive(Default)]
pub struct AppTokens(std::sync::Mutex<HashMap<AppKey, Arc<tokio::sync::Mutex<Held>>>>);

impl AppTokens {
    fn slot(&self, key: AppKey) -> Arc<tokio::sync::Mutex<Held>> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default()
            .clone()
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct AppKey {
    token_url: String,
    client_id: String,
    scopes: String,
    secret: String,
}

/// The app's access token for the mailbox: the one held while it is fresh and not the one
/// just `rejected`, else a new one from the token endpoint. One request at a time per app:
/// callers that wait get the token the first one fetched.
pub async fn app_token(
    access: &Access,
    mailbox: &Mailbox,
    rejected: Option<&SecretString>,
) -> AccessResult<Result<SecretString, TokenFailure>> {
    let secret = {
        let mut conn = access.store.conn().await?;
        keys::get_secret(
            &mut conn,
            &access.keys,
            &mailbox.id.to_string(),
            secret_fields::CLIENT_SECRET,
        )
        .await?
    };
    let Some(secret) = secret else {
        return Ok(Err(TokenFailure::Refused(StatusReason::new(
            "client_secret_missing",
            "The mailbox has no client secret, which app-only access needs.",
            Some("Edit the mailbox and paste the client secret's Value.".into()),
        ))));
    };
    let key = AppKey {
        token_url: mailbox.token_url.clone().unwrap_or_default(),
        client_id: mailbox.client_id.clone().unwrap_or_default(),
        scopes: mailbox.scopes.join(" "),
        secret: crypto::token_digest(secret.expose_secret()),
    };
    let slot = access.app_tokens.slot(key);
    let mut held = slot.lock().await;
    let now = access.now();
    if let Some((token, expires)) = held.as_ref()
        && *expires - REFRESH_SKEW > now
        && rejected.is_none_or(|r| r.expose_secret() != token.expose_secret())
    {
        return Ok(Ok(token.clone()));
    }
    let client = oauth::app_client_for(mailbox, ClientSecret::new(secret.expose_secret().into()))?;
    let request = mailbox
        .scopes
        .iter()
        .fold(client.exchange_client_credentials(), |r, s| {
            r.add_scope(Scope::new(s.clone()))
        });
    crate::metrics::get().token_refresh("app");
    match request.request_async(&access.http).await {
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
            tracing::warn!(mailbox = %mailbox.id, error = %other, "token endpoint unavailable for an app token");
            Ok(Err(TokenFailure::Transient(other.to_string())))
        }
    }
}
