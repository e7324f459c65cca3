//! The seed's flow: Authorize → the provider's sign-in and Accept → the redirect → tokens →
//! an SMTP check → Verified (or Not Verified with the reason). Also the token lifecycle
//! (refresh ahead of expiry, once per mailbox however many wait), verification on demand, and
//! the test message.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use oauth2::{
    AuthorizationCode, ClientSecret, CsrfToken, PkceCodeChallenge, PkceCodeVerifier, RefreshToken,
    RequestTokenError, Scope, TokenResponse as _,
};
use secrecy::{ExposeSecret, SecretString};
use time::{Duration, OffsetDateTime};

use super::mailboxes::SandboxPreset;
use super::{ServiceError, ServiceResult};
use crate::config::Config;
use crate::crypto;
use crate::domain::mailbox::{
    AuthKind, Mailbox, MailboxStatus, Provider, StatusReason, secret_fields,
};
use crate::domain::message::SmtpReply;
use crate::domain::{Actor, MailboxId, NewAuditEvent, OrgId};
use crate::keys;
use crate::net::HostPolicy;
use crate::oauth::http::{HttpError, TokenHttp};
use crate::oauth::{self, ProviderError, TokenResponse, errors};
use crate::secrets::KeyRing;
use crate::smtp::{self, FailureKind, SmtpAuth, SmtpTarget};
use crate::store::attempts::{Attempt, AttemptStatus};
use crate::store::{self, Store, StoreError};

/// How long an authorization attempt may take, from Authorize to the redirect.
pub const ATTEMPT_TTL: Duration = Duration::minutes(10);

/// Access tokens are refreshed this long before they expire.
pub const REFRESH_SKEW: Duration = Duration::minutes(5);

const PKCE_FIELD: &str = "pkce_verifier";
const SMTP_TIMEOUT: StdDuration = StdDuration::from_secs(30);

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

/// What the flow needs from the application.
pub struct Deps<'a> {
    pub store: &'a Store,
    pub keys: &'a KeyRing,
    pub config: &'a Config,
    pub http: &'a TokenHttp,
    pub smtp_roots: &'a [Vec<u8>],
    pub sandbox: Option<&'a SandboxPreset>,
    pub locks: &'a TokenLocks,
}

impl Deps<'_> {
    fn hosts(&self) -> HostPolicy {
        HostPolicy {
            dev: self.config.dev || self.sandbox.is_some(),
            allow_private: self.config.allow_private_hosts,
        }
    }

    fn roots_for(&self, mailbox: &Mailbox) -> Vec<Vec<u8>> {
        let mut roots = self.smtp_roots.to_vec();
        if mailbox.provider == Provider::Sandbox
            && let Some(sandbox) = self.sandbox
        {
            roots.push(sandbox.ca_pem.clone().into_bytes());
        }
        roots
    }
}

fn incomplete_reason() -> StatusReason {
    StatusReason::new(
        "authorization_incomplete",
        "The sign-in was not completed within 10 minutes.",
        Some("Click Authorize again. If Microsoft showed an error page, the app registration may lack Herald's Redirect URI (AADSTS50011) or not exist in this tenant (AADSTS700016): check both, then retry.".into()),
    )
}

/// A started authorization.
pub struct Started {
    pub attempt_id: String,
    pub authorization_url: String,
    pub expires_at: OffsetDateTime,
}

/// Begins an authorization: a single-use state (256 bits) bound to the mailbox and, from a
/// browser, to the session; PKCE S256; `login_hint` = the sign-in account.
pub async fn start(
    deps: &Deps<'_>,
    org_id: OrgId,
    mailbox_id: MailboxId,
    session_digest: Option<String>,
    actor: &Actor,
) -> ServiceResult<Started> {
    let mut conn = deps.store.conn().await?;
    let mailbox = store::mailboxes::get(&mut conn, org_id, mailbox_id)
        .await?
        .ok_or(ServiceError::NotFound("mailbox"))?;
    drop(conn);
    if mailbox.auth != AuthKind::OAuth2 {
        return Err(ServiceError::Refused(
            "a basic mailbox is verified with its password, not authorized: use verify",
        ));
    }
    // The issuer the redirect's `iss` is held to, if it could not be read when it was saved.
    let mailbox = if mailbox.issuer.is_none() {
        let policy = super::mailboxes::Policy {
            dev: deps.config.dev,
            allow_private_hosts: deps.config.allow_private_hosts,
            sandbox: deps.sandbox,
        };
        super::mailboxes::discover(deps.store, deps.http, &policy, mailbox).await?
    } else {
        mailbox
    };
    let client = oauth::client_for(&mailbox, None, &deps.config.redirect_uri())
        .map_err(|e| ServiceError::Internal(e.to_string()))?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let state = crypto::random_token();
    let mut request = client
        .authorize_url(|| CsrfToken::new(state.clone()))
        .add_scopes(mailbox.scopes.iter().map(|s| Scope::new(s.clone())))
        .set_pkce_challenge(challenge)
        .add_extra_param("login_hint", mailbox.sign_in_account.clone());
    for (k, v) in oauth::provider_extra_params(mailbox.provider) {
        request = request.add_extra_param(*k, *v);
    }
    let (url, _) = request.url();
    let now = OffsetDateTime::now_utc();
    let expires_at = now + ATTEMPT_TTL;
    let attempt_id = uuid::Uuid::now_v7().to_string();
    let mut tx = deps.store.begin().await?;
    store::attempts::insert(
        &mut tx,
        &attempt_id,
        org_id,
        mailbox_id,
        &crypto::token_digest(&state),
        session_digest.as_deref(),
        &actor.label,
        now,
        expires_at,
    )
    .await?;
    keys::put_secret(
        &mut tx,
        deps.keys,
        &attempt_id,
        PKCE_FIELD,
        &SecretString::from(verifier.secret().clone()),
        now,
    )
    .await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(Started {
        attempt_id,
        authorization_url: url.to_string(),
        expires_at,
    })
}

/// What the provider sent to the redirect URI.
#[derive(Debug, Default, serde::Deserialize)]
pub struct RedirectParams {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
    pub iss: Option<String>,
}

async fn end_attempt(
    deps: &Deps<'_>,
    attempt: &Attempt,
    status: AttemptStatus,
    reason: Option<&StatusReason>,
) -> ServiceResult<bool> {
    let mut tx = deps.store.begin().await?;
    let ended = store::attempts::finish(
        &mut tx,
        &attempt.id,
        status,
        reason,
        OffsetDateTime::now_utc(),
    )
    .await?;
    store::secrets::delete_owner(&mut tx, &attempt.id).await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(ended)
}

/// Sets a mailbox's status. A failure reason on a Verified mailbox that still works is the
/// caller's to avoid; this writes what it is told.
async fn set_status(
    deps: &Deps<'_>,
    mailbox: &Mailbox,
    status: MailboxStatus,
    reason: Option<StatusReason>,
) -> ServiceResult<Mailbox> {
    let now = OffsetDateTime::now_utc();
    let mut updated = mailbox.clone();
    updated.status = status;
    updated.status_reason = reason;
    if status == MailboxStatus::Verified {
        updated.verified_at = Some(now);
    }
    let mut tx = deps.store.begin().await?;
    if stale(&mut tx, mailbox).await? {
        // The mailbox changed identity while this outcome was being decided: it no longer applies.
        return Ok(mailbox.clone());
    }
    store::mailboxes::set_status(&mut tx, &updated).await?;
    if status == MailboxStatus::Verified {
        // Mail held while the mailbox was Not Verified goes out now.
        let released = store::messages::release_held(
            &mut tx,
            mailbox.org_id,
            mailbox.id,
            &mailbox.username,
            now,
        )
        .await?;
        if released > 0 {
            tracing::info!(mailbox = %mailbox.id, released, "held mail released");
        }
    }
    crate::services::alerts::mailbox_status(&mut tx, mailbox, &updated, now).await?;
    if status != mailbox.status || updated.status_reason != mailbox.status_reason {
        store::audit::record(
            &mut tx,
            &NewAuditEvent {
                org_id: mailbox.org_id,
                actor: Actor {
                    kind: crate::domain::ActorKind::System,
                    id: None,
                    label: "Herald".into(),
                    source: "herald".into(),
                },
                action: "mailbox.status",
                target_kind: "mailbox",
                target_id: mailbox.id.to_string(),
                detail: serde_json::json!({
                    "name": mailbox.name,
                    "status": status.as_str(),
                    "reason": updated.status_reason.as_ref().map(|r| r.code.clone()),
                }),
            },
            now,
        )
        .await?;
    }
    tx.commit().await.map_err(StoreError::from)?;
    Ok(updated)
}

/// Handles the provider's redirect. Answers the attempt to show, or `None` when the state is
/// missing, unknown or bound to another session: then nothing is stored.
pub async fn complete(
    deps: &Deps<'_>,
    params: RedirectParams,
    session_digest: Option<String>,
) -> ServiceResult<Option<String>> {
    let Some(state) = params.state.as_deref().filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let mut conn = deps.store.conn().await?;
    let Some(attempt) =
        store::attempts::find_by_state(&mut conn, &crypto::token_digest(state)).await?
    else {
        return Ok(None);
    };
    if let Some(bound) = &attempt.session_digest
        && session_digest
            .as_deref()
            .is_none_or(|s| !crypto::constant_time_eq(s, bound))
    {
        return Ok(None);
    }
    if attempt.status != AttemptStatus::Pending
        || !store::attempts::claim(&mut conn, &attempt.id, OffsetDateTime::now_utc()).await?
    {
        // Used already, or being used by another request: a replay changes nothing.
        return Ok(Some(attempt.id));
    }
    let Some(mailbox) =
        store::mailboxes::get(&mut conn, attempt.org_id, attempt.mailbox_id).await?
    else {
        return Ok(None);
    };
    drop(conn);
    let now = OffsetDateTime::now_utc();
    if attempt.expires_at <= now {
        end_attempt(
            deps,
            &attempt,
            AttemptStatus::Expired,
            Some(&incomplete_reason()),
        )
        .await?;
        return Ok(Some(attempt.id));
    }
    if mailbox.iss_required && params.iss.is_none() {
        let reason = StatusReason::new(
            "issuer_missing",
            "The response did not say which server sent it (no `iss`), though this mailbox's provider always does; it was refused.",
            Some("Click Authorize again; if it happens again, something between the browser and Herald is forging the redirect.".into()),
        );
        end_attempt(deps, &attempt, AttemptStatus::Failed, Some(&reason)).await?;
        return Ok(Some(attempt.id));
    }
    if let (Some(iss), Some(expected)) = (params.iss.as_deref(), mailbox.issuer.as_deref())
        && iss.trim_end_matches('/') != expected.trim_end_matches('/')
    {
        let reason = StatusReason::new(
            "issuer_mismatch",
            format!(
                "The response came from {iss}, not from this mailbox's provider ({expected}); it was refused."
            ),
            Some("Check the Authorization URL and Token URL, then click Authorize again.".into()),
        );
        end_attempt(deps, &attempt, AttemptStatus::Failed, Some(&reason)).await?;
        return Ok(Some(attempt.id));
    }
    if let Some(error) = params.error.as_deref() {
        let provider_error = ProviderError {
            error: error.to_owned(),
            error_description: params.error_description.clone(),
            ..ProviderError::default()
        };
        let reason = errors::reason_for(&provider_error, &mailbox, &deps.config.redirect_uri());
        if end_attempt(deps, &attempt, AttemptStatus::Failed, Some(&reason)).await?
            && mailbox.status != MailboxStatus::Verified
        {
            set_status(deps, &mailbox, MailboxStatus::NotVerified, Some(reason)).await?;
        }
        return Ok(Some(attempt.id));
    }
    let Some(code) = params.code.filter(|c| !c.is_empty()) else {
        let reason = StatusReason::new(
            "invalid_response",
            "The provider's response carried neither a code nor an error.",
            Some("Click Authorize again.".into()),
        );
        end_attempt(deps, &attempt, AttemptStatus::Failed, Some(&reason)).await?;
        return Ok(Some(attempt.id));
    };
    let outcome = redeem(deps, &attempt, &mailbox, code).await?;
    let (status, reason) = match &outcome {
        Ok(()) => (AttemptStatus::Completed, None),
        Err(reason) => (AttemptStatus::Failed, Some(reason.clone())),
    };
    end_attempt(deps, &attempt, status, reason.as_ref()).await?;
    Ok(Some(attempt.id))
}

/// Redeems the code, stores the tokens and verifies the mailbox. `Err` carries the reason the
/// attempt failed.
async fn redeem(
    deps: &Deps<'_>,
    attempt: &Attempt,
    mailbox: &Mailbox,
    code: String,
) -> ServiceResult<Result<(), StatusReason>> {
    let owner = mailbox.id.to_string();
    let mut conn = deps.store.conn().await?;
    let verifier = keys::get_secret(&mut conn, deps.keys, &attempt.id, PKCE_FIELD)
        .await
        .map_err(|e| ServiceError::Internal(e.to_string()))?;
    let secret = keys::get_secret(&mut conn, deps.keys, &owner, secret_fields::CLIENT_SECRET)
        .await
        .map_err(|e| ServiceError::Internal(e.to_string()))?;
    drop(conn);
    let client = oauth::client_for(
        mailbox,
        secret.map(|s| ClientSecret::new(s.expose_secret().to_owned())),
        &deps.config.redirect_uri(),
    )
    .map_err(|e| ServiceError::Internal(e.to_string()))?;
    let mut request = client.exchange_code(AuthorizationCode::new(code));
    if let Some(verifier) = verifier {
        request =
            request.set_pkce_verifier(PkceCodeVerifier::new(verifier.expose_secret().to_owned()));
    }
    let response = match request.request_async(deps.http).await {
        Ok(response) => response,
        Err(RequestTokenError::ServerResponse(error)) => {
            let reason = errors::reason_for(&error, mailbox, &deps.config.redirect_uri());
            set_status(
                deps,
                mailbox,
                MailboxStatus::NotVerified,
                Some(reason.clone()),
            )
            .await?;
            return Ok(Err(reason));
        }
        // An endless answer is no outage: the Token URL is wrong, and saying so is the fix.
        Err(RequestTokenError::Request(HttpError::TooLarge(limit))) => {
            tracing::warn!(mailbox = %mailbox.id, limit, "the token endpoint's answer is too large");
            let reason = errors::too_large(limit);
            set_status(
                deps,
                mailbox,
                MailboxStatus::NotVerified,
                Some(reason.clone()),
            )
            .await?;
            return Ok(Err(reason));
        }
        Err(other) => {
            tracing::warn!(mailbox = %mailbox.id, error = %other, "token endpoint unreachable");
            return Ok(Err(StatusReason::new(
                "provider_unreachable",
                format!("The token endpoint could not be reached: {other}."),
                Some("Check the Token URL and the network, then click Authorize again.".into()),
            )));
        }
    };
    // Nothing is stored until the new authorization is known to be right: a failed
    // re-authorization must not replace a Verified mailbox's working tokens.
    let was_verified = mailbox.status == MailboxStatus::Verified;
    let keep_or_set = |reason: StatusReason| async move {
        if !was_verified {
            set_status(
                deps,
                mailbox,
                MailboxStatus::NotVerified,
                Some(reason.clone()),
            )
            .await?;
        }
        Ok::<_, ServiceError>(Err(reason))
    };
    if response.refresh_token().is_none() {
        return keep_or_set(StatusReason::new(
            "no_refresh_token",
            "The provider gave no refresh token, so access would stop within the hour.",
            Some("Add the offline_access scope (Google: access_type=offline) and click Authorize again.".into()),
        ))
        .await;
    }
    let claims = response
        .extra_fields()
        .id_token
        .as_deref()
        .map(oauth::id_token_accounts)
        .unwrap_or_default();
    if !claims.is_empty()
        && !claims
            .iter()
            .any(|c| c.eq_ignore_ascii_case(&mailbox.sign_in_account))
    {
        return keep_or_set(StatusReason::new(
            "wrong_account",
            format!("Signed in as {}, but this mailbox's sign-in account is {}.", claims[0], mailbox.sign_in_account),
            Some(format!(
                "Click Authorize again and sign in as {}, or set the sign-in account to the account that signs in (Microsoft: its user principal name).",
                mailbox.sign_in_account
            )),
        ))
        .await;
    }
    // The issuer comes from the preset or the admin, never from a redirect: the first one seen
    // may be a forged one, and pinning it would refuse the real provider from then on.
    let mut mailbox = mailbox.clone();
    let token = SecretString::from(response.access_token().secret().clone());
    let outcome = check_smtp(deps, &mailbox, &token).await;
    // The tokens are the right account's: keep them whatever SMTP says.
    store_tokens(deps, &mut mailbox, &response).await?;
    match outcome {
        SmtpOutcome::Verified => {
            set_status(deps, &mailbox, MailboxStatus::Verified, None).await?;
            Ok(Ok(()))
        }
        SmtpOutcome::Refused(reason) => {
            set_status(
                deps,
                &mailbox,
                MailboxStatus::NotVerified,
                Some(reason.clone()),
            )
            .await?;
            Ok(Err(reason))
        }
        SmtpOutcome::Transient(text) => {
            // Throttling or an outage says nothing about the configuration: the status stays.
            let reason = StatusReason::new(
                "smtp_check_postponed",
                format!("Authorized; the SMTP server asked to try later ({text})."),
                Some("Click Verify in a few minutes.".into()),
            );
            if !was_verified {
                set_status(
                    deps,
                    &mailbox,
                    MailboxStatus::NotVerified,
                    Some(reason.clone()),
                )
                .await?;
            }
            Ok(Ok(()))
        }
    }
}

/// Whether the stored mailbox's identity differs from `mailbox`'s (a PATCH came in between).
async fn stale(conn: &mut store::Conn, mailbox: &Mailbox) -> ServiceResult<bool> {
    let current = store::mailboxes::get(conn, mailbox.org_id, mailbox.id).await?;
    Ok(current.is_none_or(|c| c.identity() != mailbox.identity()))
}

/// Seals and stores new tokens (and the issuer, when pinned); the rotated refresh token is
/// committed before anyone can use it again.
async fn store_tokens(
    deps: &Deps<'_>,
    mailbox: &mut Mailbox,
    response: &TokenResponse,
) -> ServiceResult<()> {
    let now = OffsetDateTime::now_utc();
    let owner = mailbox.id.to_string();
    let lifetime = oauth::lifetime(response);
    // A provider's expires_in is capped at a day, so no answer can overflow the clock.
    let seconds = i64::try_from(lifetime.as_secs())
        .unwrap_or(3600)
        .clamp(0, 86_400);
    mailbox.token_expires_at = Some(now + Duration::seconds(seconds));
    let mut tx = deps.store.begin().await?;
    if stale(&mut tx, mailbox).await? {
        // Changed account, app or endpoints while the tokens were on their way: drop them.
        return Ok(());
    }
    keys::put_secret(
        &mut tx,
        deps.keys,
        &owner,
        secret_fields::ACCESS_TOKEN,
        &SecretString::from(response.access_token().secret().clone()),
        now,
    )
    .await?;
    if let Some(refresh) = response.refresh_token() {
        keys::put_secret(
            &mut tx,
            deps.keys,
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

/// Why an access token could not be had.
pub enum TokenFailure {
    /// The provider refused: the mailbox turns Not Verified with this reason.
    Refused(StatusReason),
    /// Try again later; the status does not change.
    Transient(String),
}

/// A valid access token for the mailbox, refreshed ahead of expiry. Concurrent callers share
/// one refresh. `rejected` is a token the SMTP server just refused: it is replaced unless
/// someone already did.
pub async fn access_token(
    deps: &Deps<'_>,
    org_id: OrgId,
    id: MailboxId,
    rejected: Option<&SecretString>,
) -> ServiceResult<Result<SecretString, TokenFailure>> {
    let lock = deps.locks.lock_for(id);
    let _guard = lock.lock().await;
    let owner = id.to_string();
    let mut instances = None;
    let (mut conn, mut mailbox) = loop {
        let mut conn = deps.store.conn().await?;
        let mailbox = store::mailboxes::get(&mut conn, org_id, id)
            .await?
            .ok_or(ServiceError::NotFound("mailbox"))?;
        let current = keys::get_secret(&mut conn, deps.keys, &owner, secret_fields::ACCESS_TOKEN)
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        let now = OffsetDateTime::now_utc();
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
            instances = deps.store.lock_token_refresh(id).await?;
            if instances.is_some() {
                continue;
            }
            conn = deps.store.conn().await?;
        }
        break (conn, mailbox);
    };
    let _instances = instances;
    let Some(refresh) =
        keys::get_secret(&mut conn, deps.keys, &owner, secret_fields::REFRESH_TOKEN)
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))?
    else {
        return Ok(Err(TokenFailure::Refused(
            StatusReason::reauthorization_required(),
        )));
    };
    let secret = keys::get_secret(&mut conn, deps.keys, &owner, secret_fields::CLIENT_SECRET)
        .await
        .map_err(|e| ServiceError::Internal(e.to_string()))?;
    drop(conn);
    let client = oauth::client_for(
        &mailbox,
        secret.map(|s| ClientSecret::new(s.expose_secret().to_owned())),
        &deps.config.redirect_uri(),
    )
    .map_err(|e| ServiceError::Internal(e.to_string()))?;
    let refresh_token = RefreshToken::new(refresh.expose_secret().to_owned());
    // Outages (network errors, 5xx pages, 429) are retried with backoff and jitter, and never
    // change the mailbox's status; a provider's refusal is final.
    let mut last = String::new();
    for attempt in 0..REFRESH_TRIES {
        if attempt > 0 {
            let base = 250u64 << attempt;
            let jitter = u64::from(crypto::random_bytes::<1>()[0]) % (base / 2 + 1);
            tokio::time::sleep(StdDuration::from_millis(base + jitter)).await;
        }
        match client
            .exchange_refresh_token(&refresh_token)
            .request_async(deps.http)
            .await
        {
            Ok(response) => {
                crate::metrics::get().token_refresh("ok");
                store_tokens(deps, &mut mailbox, &response).await?;
                return Ok(Ok(SecretString::from(
                    response.access_token().secret().clone(),
                )));
            }
            Err(RequestTokenError::ServerResponse(error)) if !is_transient_error(&error) => {
                crate::metrics::get().token_refresh("refused");
                return Ok(Err(TokenFailure::Refused(errors::reason_for(
                    &error,
                    &mailbox,
                    &deps.config.redirect_uri(),
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
    crate::metrics::get().token_refresh("unavailable");
    Ok(Err(TokenFailure::Transient(last)))
}

/// Refreshes the mailbox's token now, whether or not the current one is still fresh (the
/// keep-alive: a refresh token unused for 90 days dies).
pub async fn refresh_now(
    deps: &Deps<'_>,
    org_id: OrgId,
    id: MailboxId,
) -> ServiceResult<Result<SecretString, TokenFailure>> {
    let current = {
        let mut conn = deps.store.conn().await?;
        keys::get_secret(
            &mut conn,
            deps.keys,
            &id.to_string(),
            secret_fields::ACCESS_TOKEN,
        )
        .await
        .map_err(|e| ServiceError::Internal(e.to_string()))?
    };
    access_token(deps, org_id, id, current.as_ref()).await
}

/// How many times a refresh is tried through an outage.
const REFRESH_TRIES: u32 = 3;

/// Provider errors that mean "try later" rather than "no".
fn is_transient_error(error: &ProviderError) -> bool {
    matches!(
        error.error.as_str(),
        "temporarily_unavailable" | "server_error"
    )
}

enum SmtpOutcome {
    Verified,
    Refused(StatusReason),
    Transient(String),
}

async fn check_smtp(deps: &Deps<'_>, mailbox: &Mailbox, token: &SecretString) -> SmtpOutcome {
    let roots = deps.roots_for(mailbox);
    let target = SmtpTarget {
        mailbox,
        policy: deps.hosts(),
        extra_roots: &roots,
        timeout: SMTP_TIMEOUT,
    };
    let auth = SmtpAuth::XOAuth2 {
        user: mailbox.username.clone(),
        token: token.clone(),
    };
    match smtp::verify(&target, &auth).await {
        Ok(()) => SmtpOutcome::Verified,
        Err(failure) => match smtp::reason_for(&failure, mailbox, false) {
            Some(reason) => SmtpOutcome::Refused(reason),
            None => SmtpOutcome::Transient(failure.reply.line()),
        },
    }
}

/// Runs connect → EHLO → STARTTLS → AUTH → QUIT and sets the status by the outcome. A
/// transient failure (timeouts, 4xx) leaves the status as it was.
pub async fn verify(deps: &Deps<'_>, org_id: OrgId, id: MailboxId) -> ServiceResult<Mailbox> {
    let mut conn = deps.store.conn().await?;
    let mailbox = store::mailboxes::get(&mut conn, org_id, id)
        .await?
        .ok_or(ServiceError::NotFound("mailbox"))?;
    let owner = id.to_string();
    let password = keys::get_secret(&mut conn, deps.keys, &owner, secret_fields::PASSWORD)
        .await
        .map_err(|e| ServiceError::Internal(e.to_string()))?;
    drop(conn);
    match attempt_send(deps, &mailbox, password, None).await? {
        Ok(_) => set_status(deps, &mailbox, MailboxStatus::Verified, None).await,
        Err(SendFailure::Refused(reason)) => {
            set_status(deps, &mailbox, MailboxStatus::NotVerified, Some(reason)).await
        }
        Err(SendFailure::Transient(_)) | Err(SendFailure::Rejected(_)) => Ok(mailbox),
    }
}

/// Why a verification or a send did not succeed.
pub enum SendFailure {
    /// A fault of the mailbox: it turns Not Verified with this reason.
    Refused(StatusReason),
    /// Try later; nothing changes.
    Transient(SmtpReply),
    /// This message was refused (a recipient, its size, its content); the mailbox is fine.
    Rejected(SmtpReply),
}

/// The reply as the message log keeps it.
pub fn reply_of(failure: &smtp::SmtpFailure) -> SmtpReply {
    failure.reply.clone()
}

/// Classifies an SMTP failure: a fault of the mailbox, a delay, or a refusal of the message.
/// `sending` says whether a message was being sent (then a 5xx concerns the message).
pub fn classify(failure: &smtp::SmtpFailure, mailbox: &Mailbox, sending: bool) -> SendFailure {
    match smtp::reason_for(failure, mailbox, sending) {
        Some(reason) => SendFailure::Refused(reason),
        None if failure.kind() == FailureKind::Transient => {
            SendFailure::Transient(reply_of(failure))
        }
        None => SendFailure::Rejected(reply_of(failure)),
    }
}

/// Opens an authenticated SMTP session for the mailbox. An OAuth2 mailbox whose token is
/// refused with `535 5.7.3` gets one refresh and one retry.
pub async fn open_session(
    deps: &Deps<'_>,
    mailbox: &Mailbox,
    password: Option<SecretString>,
) -> ServiceResult<Result<smtp::Session, SendFailure>> {
    let roots = deps.roots_for(mailbox);
    let target = SmtpTarget {
        mailbox,
        policy: deps.hosts(),
        extra_roots: &roots,
        timeout: SMTP_TIMEOUT,
    };
    let transient = |text: String| {
        SendFailure::Transient(SmtpReply {
            code: None,
            enhanced: None,
            text,
        })
    };
    match mailbox.auth {
        AuthKind::Basic => {
            let Some(password) = password else {
                return Ok(Err(SendFailure::Refused(StatusReason::not_yet_verified(
                    AuthKind::Basic,
                ))));
            };
            let auth = SmtpAuth::Password {
                user: mailbox.username.clone(),
                password,
            };
            Ok(smtp::Session::open(&target, &auth)
                .await
                .map_err(|f| classify(&f, mailbox, false)))
        }
        AuthKind::OAuth2 => {
            let token = match access_token(deps, mailbox.org_id, mailbox.id, None).await? {
                Ok(token) => token,
                Err(TokenFailure::Refused(reason)) => return Ok(Err(SendFailure::Refused(reason))),
                Err(TokenFailure::Transient(text)) => return Ok(Err(transient(text))),
            };
            let auth = SmtpAuth::XOAuth2 {
                user: mailbox.username.clone(),
                token: token.clone(),
            };
            match smtp::Session::open(&target, &auth).await {
                Ok(session) => Ok(Ok(session)),
                Err(failure)
                    if failure.kind() == FailureKind::Auth
                        && failure.reply.enhanced.as_deref() != Some("5.7.139") =>
                {
                    // The token may have been revoked early: refresh once and retry once.
                    let token =
                        match access_token(deps, mailbox.org_id, mailbox.id, Some(&token)).await? {
                            Ok(token) => token,
                            Err(TokenFailure::Refused(reason)) => {
                                return Ok(Err(SendFailure::Refused(reason)));
                            }
                            Err(TokenFailure::Transient(text)) => {
                                return Ok(Err(transient(text)));
                            }
                        };
                    let auth = SmtpAuth::XOAuth2 {
                        user: mailbox.username.clone(),
                        token,
                    };
                    Ok(smtp::Session::open(&target, &auth)
                        .await
                        .map_err(|f| classify(&f, mailbox, false)))
                }
                Err(failure) => Ok(Err(classify(&failure, mailbox, false))),
            }
        }
    }
}

/// Verifies (`message` None) or sends one message over a session of its own.
async fn attempt_send(
    deps: &Deps<'_>,
    mailbox: &Mailbox,
    password: Option<SecretString>,
    message: Option<lettre::Message>,
) -> ServiceResult<Result<String, SendFailure>> {
    let mut session = match open_session(deps, mailbox, password).await? {
        Ok(session) => session,
        Err(failure) => return Ok(Err(failure)),
    };
    let result = match message {
        Some(message) => session
            .send(message.envelope(), &message.formatted())
            .await
            .map_err(|f| classify(&f, mailbox, true)),
        None => Ok("250 OK".to_owned()),
    };
    session.quit().await;
    Ok(result)
}

/// Turns the mailbox Not Verified with the reason (a send found it broken).
pub async fn mark_not_verified(
    deps: &Deps<'_>,
    mailbox: &Mailbox,
    reason: StatusReason,
) -> ServiceResult<Mailbox> {
    set_status(deps, mailbox, MailboxStatus::NotVerified, Some(reason)).await
}

/// The outcome of sending through a mailbox.
pub enum SendOutcome {
    Sent {
        reply: String,
    },
    Failed {
        reason: StatusReason,
        transient: bool,
    },
}

/// What to send.
pub struct OutgoingMessage {
    pub to: Vec<String>,
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
}

/// Sends one message through the mailbox now (the durable queue comes later), and sets the
/// mailbox's status by the outcome: a refusal that is a configuration fault makes it Not
/// Verified; throttling and other transient replies change nothing.
pub async fn send_now(
    deps: &Deps<'_>,
    org_id: OrgId,
    id: MailboxId,
    message: OutgoingMessage,
) -> ServiceResult<SendOutcome> {
    let mut conn = deps.store.conn().await?;
    let mailbox = store::mailboxes::get(&mut conn, org_id, id)
        .await?
        .ok_or(ServiceError::NotFound("mailbox"))?;
    let password = keys::get_secret(
        &mut conn,
        deps.keys,
        &id.to_string(),
        secret_fields::PASSWORD,
    )
    .await
    .map_err(|e| ServiceError::Internal(e.to_string()))?;
    drop(conn);
    let message = compose(&mailbox, &message)?;
    match attempt_send(deps, &mailbox, password, Some(message)).await? {
        Ok(reply) => {
            if mailbox.status != MailboxStatus::Verified {
                set_status(deps, &mailbox, MailboxStatus::Verified, None).await?;
            }
            Ok(SendOutcome::Sent { reply })
        }
        Err(SendFailure::Refused(reason)) => {
            set_status(
                deps,
                &mailbox,
                MailboxStatus::NotVerified,
                Some(reason.clone()),
            )
            .await?;
            Ok(SendOutcome::Failed {
                reason,
                transient: false,
            })
        }
        Err(SendFailure::Transient(reply)) => Ok(SendOutcome::Failed {
            reason: StatusReason::new(
                "smtp_transient",
                format!("The server asked to try later: {}", reply.line()),
                Some("Try again in a few minutes.".into()),
            ),
            transient: true,
        }),
        Err(SendFailure::Rejected(reply)) => Ok(SendOutcome::Failed {
            reason: StatusReason::new(
                "message_rejected",
                format!("The server refused this message: {}", reply.line()),
                Some("Check the recipients and the message; the mailbox itself works.".into()),
            ),
            transient: false,
        }),
    }
}

/// Sends the test message of the Outgoing Mail page.
pub async fn send_test_message(
    deps: &Deps<'_>,
    org_id: OrgId,
    id: MailboxId,
    to: &str,
) -> ServiceResult<SendOutcome> {
    let to = crate::domain::EmailAddress::parse_field("to", to)?;
    let name = {
        let mut conn = deps.store.conn().await?;
        store::mailboxes::get(&mut conn, org_id, id)
            .await?
            .ok_or(ServiceError::NotFound("mailbox"))?
            .name
    };
    let message = OutgoingMessage {
        to: vec![to.as_str().to_owned()],
        subject: "Herald test message".into(),
        text: Some(format!(
            "This is a test message from Herald, sent through the mailbox \"{name}\"."
        )),
        html: None,
    };
    send_now(deps, org_id, id, message).await
}

/// A message from the mailbox: From = `from_name <username>`, its Reply-To, and its signature
/// appended to the text part and, HTML-escaped, to the HTML part.
pub fn compose(mailbox: &Mailbox, message: &OutgoingMessage) -> ServiceResult<lettre::Message> {
    use lettre::message::{MultiPart, SinglePart, header::ContentType};
    let invalid = |field: &'static str, message: String| {
        ServiceError::Invalid(vec![crate::domain::FieldError::new(field, message)])
    };
    let from = lettre::message::Mailbox::new(
        mailbox.from_name.clone(),
        mailbox
            .username
            .parse()
            .map_err(|_| ServiceError::Internal("the mailbox address does not parse".into()))?,
    );
    if message.subject.chars().any(char::is_control) {
        return Err(invalid(
            "subject",
            "must not contain line breaks or other control characters".into(),
        ));
    }
    let mut builder = lettre::Message::builder()
        .from(from)
        .subject(message.subject.clone());
    if message.to.is_empty() {
        return Err(invalid("to", "needs at least one recipient".into()));
    }
    for to in &message.to {
        let address = crate::domain::EmailAddress::parse_field("to", to)?;
        builder = builder.to(address
            .as_str()
            .parse()
            .map_err(|_| invalid("to", format!("`{to}` is not an email address")))?);
    }
    if let Some(reply_to) = &mailbox.reply_to {
        builder =
            builder.reply_to(reply_to.parse().map_err(|_| {
                ServiceError::Internal("the Reply-To address does not parse".into())
            })?);
    }
    let (text, html) = crate::outbox::compose::with_signature(
        mailbox.signature.as_deref(),
        message.text.as_deref(),
        message.html.as_deref(),
    );
    let built = match (text, html) {
        (Some(text), Some(html)) => {
            builder.multipart(MultiPart::alternative_plain_html(text, html))
        }
        (Some(text), None) => builder.singlepart(
            SinglePart::builder()
                .header(ContentType::TEXT_PLAIN)
                .body(text),
        ),
        (None, Some(html)) => builder.singlepart(
            SinglePart::builder()
                .header(ContentType::TEXT_HTML)
                .body(html),
        ),
        (None, None) => return Err(invalid("text", "give a text or an HTML body".into())),
    };
    built.map_err(|e| ServiceError::Internal(format!("cannot build the message: {e}")))
}

/// The latest authorization attempt of a mailbox, ended as expired when its time is up.
pub async fn latest_attempt(
    deps: &Deps<'_>,
    org_id: OrgId,
    id: MailboxId,
) -> ServiceResult<Option<Attempt>> {
    let mut conn = deps.store.conn().await?;
    store::mailboxes::get(&mut conn, org_id, id)
        .await?
        .ok_or(ServiceError::NotFound("mailbox"))?;
    let Some(attempt) = store::attempts::latest(&mut conn, org_id, id).await? else {
        return Ok(None);
    };
    drop(conn);
    expire_if_due(deps, attempt).await.map(Some)
}

/// One attempt of the organization, ended as expired when its time is up.
pub async fn attempt(
    deps: &Deps<'_>,
    org_id: OrgId,
    attempt_id: &str,
) -> ServiceResult<Option<Attempt>> {
    let mut conn = deps.store.conn().await?;
    let Some(attempt) = store::attempts::get(&mut conn, org_id, attempt_id).await? else {
        return Ok(None);
    };
    drop(conn);
    expire_if_due(deps, attempt).await.map(Some)
}

async fn expire_if_due(deps: &Deps<'_>, attempt: Attempt) -> ServiceResult<Attempt> {
    // A claimed attempt (finished_at set) is being completed by its redirect right now.
    if attempt.status == AttemptStatus::Pending
        && attempt.finished_at.is_none()
        && attempt.expires_at <= OffsetDateTime::now_utc()
    {
        end_attempt(
            deps,
            &attempt,
            AttemptStatus::Expired,
            Some(&incomplete_reason()),
        )
        .await?;
        let mut conn = deps.store.conn().await?;
        return Ok(store::attempts::get(&mut conn, attempt.org_id, &attempt.id)
            .await?
            .unwrap_or(attempt));
    }
    Ok(attempt)
}
