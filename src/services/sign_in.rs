//! Who is calling, as the database knows it: web sessions (stored as the digest of their
//! token), API keys looked up by their token, and the sign-in attempts every instance counts.
//! The HTTP side (cookies, headers, the limits' arithmetic) stays in `web::auth`.

use time::OffsetDateTime;

use crate::domain::{ApiKey, ApiKeyToken, EmailAddress, MailboxId, User, UserId};
use crate::store::{self, Store};

use super::ServiceResult;

pub use crate::store::auth_failures::{Exceeded, Reservation};

/// Records a session whose token has this digest, valid from `now` until `expires_at`.
pub async fn start_session(
    store: &Store,
    digest: &str,
    user_id: UserId,
    now: OffsetDateTime,
    expires_at: OffsetDateTime,
    client_addr: &str,
) -> ServiceResult<()> {
    let mut conn = store.conn().await?;
    Ok(store::sessions::insert(&mut conn, digest, user_id, now, expires_at, client_addr).await?)
}

/// Forgets the session whose token has this digest.
pub async fn end_session(store: &Store, digest: &str) -> ServiceResult<()> {
    let mut conn = store.conn().await?;
    Ok(store::sessions::delete(&mut conn, digest).await?)
}

/// The user of the live session whose token has this digest.
pub async fn session_user(
    store: &Store,
    digest: &str,
    now: OffsetDateTime,
) -> ServiceResult<Option<User>> {
    let mut conn = store.conn().await?;
    let Some(user_id) = store::sessions::find_user(&mut conn, digest, now).await? else {
        return Ok(None);
    };
    Ok(store::users::get_any(&mut conn, user_id).await?)
}

/// The user with this address and their password hash.
pub async fn find_account(
    store: &Store,
    email: &EmailAddress,
) -> ServiceResult<Option<(User, String)>> {
    let mut conn = store.conn().await?;
    Ok(store::users::find_for_login(&mut conn, email).await?)
}

/// The key an API request authenticates with, and the mailboxes it is limited to (if it is).
pub struct KeyCaller {
    pub key: ApiKey,
    pub mailboxes: Option<Vec<MailboxId>>,
}

/// The live (unrevoked) API key with this token and its mailbox limits (see
/// [`Store::api_key`]), once `admit` lets it through (the request rate): its use is then
/// recorded, to the minute. `None` for an unknown or revoked key; `Some(Err(_))` when `admit`
/// refused it.
pub async fn api_key_caller<E>(
    store: &Store,
    token: &ApiKeyToken,
    now: OffsetDateTime,
    admit: impl FnOnce(&ApiKey) -> Result<(), E>,
) -> ServiceResult<Option<Result<KeyCaller, E>>> {
    let Some(store::directory::KeyEntry { key, mailboxes }) = store.api_key(token).await? else {
        return Ok(None);
    };
    if let Err(refused) = admit(&key) {
        return Ok(Some(Err(refused)));
    }
    // "Last used" to the minute, checked here first: an UPDATE that changes nothing still
    // waits for SQLite's write lock, behind every commit of accepted mail.
    if key
        .last_used_at
        .is_none_or(|t| now - t > time::Duration::minutes(1))
    {
        let touched = async {
            let mut conn = store.conn().await?;
            store::api_keys::touch(&mut conn, key.id, now).await
        };
        if let Err(e) = touched.await {
            tracing::warn!(error = %e, "could not record API key use");
        }
    }
    Ok(Some(Ok(KeyCaller { key, mailboxes })))
}

/// Records an attempt under every key (each with its limit) unless one of them already has
/// its limit of attempts since `since`.
pub async fn reserve_attempt(
    store: &Store,
    keys: &[(&str, i64)],
    now: i64,
    since: i64,
) -> ServiceResult<Result<Reservation, Exceeded>> {
    let mut conn = store.conn().await?;
    Ok(store::auth_failures::reserve(&mut conn, keys, now, since).await?)
}

/// Takes back one recorded attempt.
pub async fn forget_attempt(store: &Store, id: &str) -> ServiceResult<()> {
    let mut conn = store.conn().await?;
    Ok(store::auth_failures::forget(&mut conn, id).await?)
}

/// Forgets every attempt recorded under a key (an account that signed in), and then one more
/// attempt by its id.
pub async fn forgive_attempts(store: &Store, key: &str, then_forget: &str) -> ServiceResult<()> {
    let mut conn = store.conn().await?;
    store::auth_failures::forget_key(&mut conn, key).await?;
    Ok(store::auth_failures::forget(&mut conn, then_forget).await?)
}
