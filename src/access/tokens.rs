//! Access tokens: read while fresh, refreshed ahead of expiry, once per mailbox however many
//! wait (and once per database, however many instances wait), and stored sealed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use oauth2::{RefreshToken, RequestTokenError, Scope, TokenResponse as _};
use secrecy::{ExposeSecret, SecretString};
use time::Duration;

use super::client_auth::{
    ClientCredential, client_credentials, credential_refused, promote_successor,
};
use super::{Access, AccessError, AccessResult, stale};
use crate::crypto;
use crate::domain::mailbox::{Mailbox, StatusReason, secret_fields};
use crate::domain::{MailboxId, OrgId};
use crate::keys;
use crate::oauth::http::HttpError;
use crate::oauth::{self, ProviderError, TokenResponse, WithProof as _, errors};
use crate::store::{self, StoreError};

/// Access tokens are refreshed this long before they expire.
pub const REFRESH_SKEW: Duration = Duration::minutes(5);

/// How many times a refresh is tried through an outage.
const REFRESH_TRIES: u32 = 3;

/// The longest a refresh may take, its tries and their pauses together. The mailbox's lock, and
/// on PostgreSQL one of the few refresh slots with its connection, are held meanwhile: a token
/// endpoint that accepts connections and never answers must not hold them for three tries of
/// 30 seconds each.
pub const REFRESH_DEADLINE: StdDuration = StdDuration::from_secs(40);

/// One lock per mailbox: concurrent users of a mailbox wait for one refresh instead of each
/// asking the provider.
#[derive(Default)]
pub struct TokenLocks(Mutex<HashMap<MailboxId, Arc<tokio::sync::Mutex<()>>>>);

impl TokenLocks {
    fn lock_for(&self, id: MailboxId) -> Arc<tokio::sync::Mutex<()>> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id)
            .or_default()
            .clone()
    }
}

/// Why an access token could not be had.
pub enum TokenFailure {
    /// The provider refused: the mailbox turns Not Verified with this reason.
    Refused(StatusReason),
    /// Try again later; the status does not change.
    Transient(String),
}

/// Seals and stores new tokens (and the issuer, when pinned); the rotated refresh token is
/// committed before anyone can use it again.
pub async fn store_tokens(
    access: &Access,
    mailbox: &mut Mailbox,
    response: &TokenResponse,
) -> AccessResult<()> {
    let now = access.now();
    let owner = mailbox.id.to_string();
    let lifetime = oauth::lifetime(response);
    // A provider's expires_in is capped at a day, so no answer can overflow the clock.
    let seconds = i64::try_from(lifetime.as_secs())
        .unwrap_or(3600)
        .clamp(0, 86_400);
    mailbox.token_expires_at = Some(now + Duration::seconds(seconds));
    let mut tx = access.store.begin().await?;
    if stale(&mut tx, mailbox).await? {
        // Changed account, app or endpoints while the tokens were on their way: drop them.
        return Ok(());
    }
    keys::put_secret(
        &mut tx,
        &access.keys,
        &owner,
        secret_fields::ACCESS_TOKEN,
        &SecretString::from(response.access_token().secret().clone()),
        now,
    )
    .await?;
    if let Some(refresh) = response.refresh_token() {
        keys::put_secret(
            &mut tx,
            &access.keys,
            &owner,
            secret_fields::REFRESH_TOKEN,
            &SecretString::from(refresh.secret().clone()),
            now,
        )
        .await?;
    }
    store::mailboxes::set_tokens(&mut tx, mailbox).await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(())
}

/// A valid access token for the mailbox, refreshed ahead of expiry. Concurrent callers share
/// one refresh. `rejected` is a token the SMTP server just refused: it is replaced unless
/// someone already did.
pub async fn access_token(
    access: &Access,
    org_id: OrgId,
    id: MailboxId,
    rejected: Option<&SecretString>,
) -> AccessResult<Result<SecretString, TokenFailure>> {
    let lock = access.locks.lock_for(id);
    let _guard = lock.lock().await;
    let owner = id.to_string();
    let mut instances = None;
    let (mut conn, mut mailbox) = loop {
        let mut conn = access.store.conn().await?;
        let mailbox = store::mailboxes::get(&mut conn, org_id, id)
            .await?
            .ok_or(AccessError::MailboxGone)?;
        let current =
            keys::get_secret(&mut conn, &access.keys, &owner, secret_fields::ACCESS_TOKEN).await?;
        let now = access.now();
        let fresh = mailbox
            .token_expires_at
            .is_some_and(|t| t - REFRESH_SKEW > now);
        if let Some(token) = &current
            && fresh
            && rejected.is_none_or(|r| r.expose_secret() != token.expose_secret())
        {
            return Ok(Ok(token.clone()));
        }
        // A refresh is needed. Other instances on the same database wait for it here;
        // whoever comes second reads again the token the first one stored and asks the
        // provider nothing. A fresh token never waits for this lock.
        if instances.is_none() {
            drop(conn);
            instances = access.store.lock_token_refresh(id).await?;
            if instances.is_some() {
                continue;
            }
            conn = access.store.conn().await?;
        }
        break (conn, mailbox);
    };
    let _instances = instances;
    let Some(refresh) = keys::get_secret(
        &mut conn,
        &access.keys,
        &owner,
        secret_fields::REFRESH_TOKEN,
    )
    .await?
    else {
        return Ok(Err(TokenFailure::Refused(
            StatusReason::reauthorization_required(),
        )));
    };
    drop(conn);
    let credentials = match client_credentials(access, &mailbox).await? {
        Ok(found) => found,
        Err(reason) => return Ok(Err(TokenFailure::Refused(reason))),
    };
    let refresh_token = RefreshToken::new(refresh.expose_secret().to_owned());
    // Outages (network errors, 5xx pages, 429) are retried with backoff and jitter, and never
    // change the mailbox's status; a provider's refusal is final, unless it refused the
    // certificate in use and a renewed one waits.
    let mut last = String::new();
    let deadline = tokio::time::Instant::now() + REFRESH_DEADLINE;
    let out_of_time = || {
        format!(
            "the token endpoint did not answer within {} seconds",
            REFRESH_DEADLINE.as_secs()
        )
    };
    'credentials: for (i, credential) in credentials.iter().enumerate() {
        for attempt in 0..REFRESH_TRIES {
            if attempt > 0 {
                let base = 250u64 << attempt;
                let jitter = u64::from(crypto::random_bytes::<1>()[0]) % (base / 2 + 1);
                let pause = StdDuration::from_millis(base + jitter);
                if tokio::time::Instant::now() + pause >= deadline {
                    break 'credentials;
                }
                tokio::time::sleep(pause).await;
            }
            let request = refresh_request(
                access,
                &mailbox,
                credential,
                &refresh_token,
                &mailbox.scopes,
            );
            let Ok(answer) = tokio::time::timeout_at(deadline, request).await else {
                last = out_of_time();
                break 'credentials;
            };
            match answer? {
                Ok(response) => {
                    crate::metrics::get().token_refresh("ok");
                    if credential.successor() {
                        promote_successor(access, &mailbox, credential).await?;
                    }
                    store_tokens(access, &mut mailbox, &response).await?;
                    return Ok(Ok(SecretString::from(
                        response.access_token().secret().clone(),
                    )));
                }
                Err(RequestTokenError::ServerResponse(error))
                    if !is_transient_error(&error)
                        && i + 1 < credentials.len()
                        && credential_refused(&error) =>
                {
                    tracing::info!(mailbox = %mailbox.id, error = %error, "the credential in use was refused; trying its successor");
                    continue 'credentials;
                }
                Err(RequestTokenError::ServerResponse(error)) if !is_transient_error(&error) => {
                    crate::metrics::get().token_refresh("refused");
                    return Ok(Err(TokenFailure::Refused(errors::reason_for(
                        &error,
                        &mailbox,
                        &access.config.redirect_uri(),
                    ))));
                }
                Err(RequestTokenError::Request(HttpError::TooLarge(limit))) => {
                    crate::metrics::get().token_refresh("refused");
                    tracing::warn!(mailbox = %mailbox.id, limit, "the token endpoint's answer is too large");
                    return Ok(Err(TokenFailure::Refused(errors::too_large(limit))));
                }
                Err(other) => {
                    tracing::warn!(mailbox = %mailbox.id, attempt, error = %other, "token endpoint unavailable; retrying");
                    last = other.to_string();
                }
            }
        }
        break;
    }
    crate::metrics::get().token_refresh("unavailable");
    Ok(Err(TokenFailure::Transient(last)))
}

/// What one refresh request came to.
pub(super) type RefreshResult = Result<TokenResponse, RequestTokenError<HttpError, ProviderError>>;

/// One refresh request with one credential. It sends `scopes`: the mailbox's, which the grant
/// holds (Microsoft asks clients not to rely on leaving them out), or another resource's.
async fn refresh_request(
    access: &Access,
    mailbox: &Mailbox,
    credential: &ClientCredential,
    refresh_token: &RefreshToken,
    scopes: &[String],
) -> AccessResult<RefreshResult> {
    let client = oauth::client_for(
        mailbox,
        credential.client_secret(),
        &access.config.redirect_uri(),
    )?;
    let proof = credential.proof(mailbox, access)?;
    Ok(client
        .exchange_refresh_token(refresh_token)
        .add_scopes(scopes.iter().map(|s| Scope::new(s.clone())))
        .with_assertion(&proof)
        .request_async(&access.http)
        .await)
}

/// The stored refresh token, if the mailbox has one.
async fn stored_refresh_token(
    access: &Access,
    mailbox: &Mailbox,
) -> AccessResult<Option<RefreshToken>> {
    let mut conn = access.store.conn().await?;
    let refresh = keys::get_secret(
        &mut conn,
        &access.keys,
        &mailbox.id.to_string(),
        secret_fields::REFRESH_TOKEN,
    )
    .await?;
    Ok(refresh.map(|r| RefreshToken::new(r.expose_secret().to_owned())))
}

/// One refresh with `credential` alone (a new client secret, before it is kept), under the
/// mailbox's lock; the tokens are stored when it works. `None`: no refresh token yet.
pub(super) async fn refresh_with(
    access: &Access,
    mailbox: &Mailbox,
    credential: &ClientCredential,
) -> AccessResult<Option<RefreshResult>> {
    let lock = access.locks.lock_for(mailbox.id);
    let _guard = lock.lock().await;
    let Some(refresh_token) = stored_refresh_token(access, mailbox).await? else {
        return Ok(None);
    };
    let result =
        refresh_request(access, mailbox, credential, &refresh_token, &mailbox.scopes).await?;
    if let Ok(response) = &result {
        store_tokens(access, &mut mailbox.clone(), response).await?;
    }
    Ok(Some(result))
}

/// An access token for other scopes of the grant (another resource's, such as Graph's
/// Application.Read.All), with the credential in use. It is not kept, nor is the refresh
/// token it comes with: Microsoft leaves the one used valid.
pub(super) async fn token_for_scopes(
    access: &Access,
    mailbox: &Mailbox,
    scopes: &[String],
) -> AccessResult<Option<SecretString>> {
    let Some(refresh_token) = stored_refresh_token(access, mailbox).await? else {
        return Ok(None);
    };
    let Ok(credentials) = client_credentials(access, mailbox).await? else {
        return Ok(None);
    };
    let Some(credential) = credentials.first() else {
        return Ok(None);
    };
    Ok(
        refresh_request(access, mailbox, credential, &refresh_token, scopes)
            .await?
            .ok()
            .map(|r| SecretString::from(r.access_token().secret().clone())),
    )
}

/// Refreshes the mailbox's token now, whether or not the current one is still fresh (the
/// keep-alive: a refresh token unused for 90 days dies).
pub async fn refresh_now(
    access: &Access,
    org_id: OrgId,
    id: MailboxId,
) -> AccessResult<Result<SecretString, TokenFailure>> {
    let current = {
        let mut conn = access.store.conn().await?;
        keys::get_secret(
            &mut conn,
            &access.keys,
            &id.to_string(),
            secret_fields::ACCESS_TOKEN,
        )
        .await?
    };
    access_token(access, org_id, id, current.as_ref()).await
}

/// Provider errors that mean "try later" rather than "no".
fn is_transient_error(error: &ProviderError) -> bool {
    matches!(
        error.error.as_str(),
        "temporarily_unavailable" | "server_error"
    )
}
