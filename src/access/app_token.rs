//! App-only access tokens (OAuth 2.0 client credentials): the app asks for a token to
//! `{resource}/.default`, proving itself with its secret or its certificate. No person signs
//! in, and there is no refresh token to expire after 90 idle days or at a password reset. A token serves every mailbox of the same
//! app, resource and credential, so Herald asks once an hour per app rather than per mailbox.

use std::collections::HashMap;
use std::sync::Arc;

use oauth2::{RequestTokenError, Scope, TokenResponse as _};
use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;

use super::client_auth::{
    ClientCredential, client_credentials, credential_refused, promote_successor,
};
use super::tokens::{REFRESH_SKEW, TokenFailure};
use super::{Access, AccessResult};
use crate::domain::mailbox::{Mailbox, StatusReason};
use crate::oauth::http::HttpError;
use crate::oauth::{self, WithProof as _, errors};

/// A held token and when it expires.
pub(super) type Held = Option<(SecretString, OffsetDateTime)>;

/// The app tokens this process holds, by app (token endpoint, client id, scopes and a digest of
/// the credential: a mailbox with a wrong secret never borrows another's token). Each app has a
/// lock of its own, so a token endpoint that stalls holds up only its own app's mailboxes.
#[derive(Default)]
pub struct AppTokens(std::sync::Mutex<HashMap<AppKey, Arc<tokio::sync::Mutex<Held>>>>);

impl AppTokens {
    pub(super) fn slot(&self, key: AppKey) -> Arc<tokio::sync::Mutex<Held>> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default()
            .clone()
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
pub(super) struct AppKey {
    pub token_url: String,
    pub client_id: String,
    pub scopes: String,
    /// A digest of the secret, or the certificate's thumbprint.
    pub credential: String,
}

pub(super) type TokenResult =
    Result<oauth::TokenResponse, RequestTokenError<HttpError, oauth::ProviderError>>;

/// One client-credentials request with one of the app's credentials.
pub(super) async fn request_token(
    access: &Access,
    mailbox: &Mailbox,
    credential: &ClientCredential,
) -> AccessResult<TokenResult> {
    let client = oauth::app_client_for(mailbox, credential.client_secret())?;
    let proof = credential.proof(mailbox, access)?;
    let request = mailbox
        .scopes
        .iter()
        .fold(client.exchange_client_credentials(), |r, s| {
            r.add_scope(Scope::new(s.clone()))
        })
        .with_assertion(&proof);
    crate::metrics::get().token_refresh("app");
    Ok(request.request_async(&access.http).await)
}

/// The app's access token for the mailbox: the one held while it is fresh and not the one
/// just `rejected`, else a new one from the token endpoint. One request at a time per app:
/// callers that wait get the token the first one fetched.
pub async fn app_token(
    access: &Access,
    mailbox: &Mailbox,
    rejected: Option<&SecretString>,
) -> AccessResult<Result<SecretString, TokenFailure>> {
    let credentials = match client_credentials(access, mailbox).await? {
        Ok(found) => found,
        Err(reason) => return Ok(Err(TokenFailure::Refused(reason))),
    };
    if matches!(
        credentials.as_slice(),
        [ClientCredential::Secret { secret: None, .. }]
    ) {
        return Ok(Err(TokenFailure::Refused(StatusReason::new(
            "client_secret_missing",
            "The mailbox has no client secret, which app-only access needs.",
            Some("Edit the mailbox and paste the client secret's Value.".into()),
        ))));
    }
    let key = AppKey {
        token_url: mailbox.token_url.clone().unwrap_or_default(),
        client_id: mailbox.client_id.clone().unwrap_or_default(),
        scopes: mailbox.scopes.join(" "),
        credential: credentials[0].digest(),
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
    let mut outcome = None;
    for (i, credential) in credentials.iter().enumerate() {
        let result = request_token(access, mailbox, credential).await?;
        if let Err(RequestTokenError::ServerResponse(error)) = &result
            && i + 1 < credentials.len()
            && credential_refused(error)
        {
            tracing::info!(mailbox = %mailbox.id, error = %error, "the credential in use was refused; trying its successor");
            continue;
        }
        if result.is_ok() && credential.successor() {
            promote_successor(access, mailbox, credential).await?;
        }
        outcome = Some(result);
        break;
    }
    let Some(outcome) = outcome else {
        unreachable!("at least one credential is tried");
    };
    match outcome {
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
