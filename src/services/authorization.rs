//! The seed's flow: Authorize → the provider's sign-in and Accept → the redirect → tokens →
//! an SMTP check → Verified (or Not Verified with the reason). Also the token lifecycle
//! (refresh ahead of expiry, once per mailbox however many wait), verification on demand, and
//! the test message.

use oauth2::{
    AuthorizationCode, CsrfToken, PkceCodeChallenge, PkceCodeVerifier, RequestTokenError, Scope,
    TokenResponse as _,
};
use secrecy::{ExposeSecret, SecretString};
use time::{Duration, OffsetDateTime};

use super::{ServiceError, ServiceResult};
use crate::access::{
    self, Access, Secret, SendFailure, mark_not_verified, set_status, store_tokens,
};
use crate::crypto;
use crate::domain::mailbox::{
    AuthKind, CredentialKind, Mailbox, MailboxStatus, StatusReason, TransportKind,
};
use crate::domain::{Actor, MailboxId, OrgId};
use crate::keys;
use crate::oauth::http::HttpError;
use crate::oauth::{self, ProviderError, WithProof as _, errors};
use crate::store::attempts::{Attempt, AttemptStatus};
use crate::store::{self, StoreError};

/// How long an authorization attempt may take, from Authorize to the redirect.
pub const ATTEMPT_TTL: Duration = Duration::minutes(10);

const PKCE_FIELD: &str = "pkce_verifier";

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
    access: &Access,
    org_id: OrgId,
    mailbox_id: MailboxId,
    session_digest: Option<String>,
    actor: &Actor,
) -> ServiceResult<Started> {
    let mut conn = access.store.conn().await?;
    let mailbox = store::mailboxes::get(&mut conn, org_id, mailbox_id)
        .await?
        .ok_or(ServiceError::NotFound("mailbox"))?;
    drop(conn);
    if mailbox.auth != AuthKind::OAuth2 {
        return Err(ServiceError::Refused(
            "a basic mailbox is verified with its password, not authorized: use verify",
        ));
    }
    if mailbox.credential == CredentialKind::App {
        return Err(ServiceError::Refused(
            "an app-only mailbox needs no sign-in: the app asks for its own token; use verify",
        ));
    }
    // The issuer the redirect's `iss` is held to, if it could not be read when it was saved.
    let mailbox = if mailbox.issuer.is_none() {
        let policy = super::mailboxes::Policy {
            dev: access.config.dev,
            allow_private_hosts: access.config.allow_private_hosts,
            sandbox: access.sandbox.as_deref(),
        };
        super::mailboxes::discover(&access.store, &access.http, &policy, mailbox).await?
    } else {
        mailbox
    };
    let client = oauth::client_for(&mailbox, None, &access.config.redirect_uri())
        .map_err(ServiceError::internal)?;
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
    let now = access.now();
    let expires_at = now + ATTEMPT_TTL;
    let attempt_id = uuid::Uuid::now_v7().to_string();
    let mut tx = access.store.begin().await?;
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
        &access.keys,
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

pub(super) async fn end_attempt(
    access: &Access,
    attempt: &Attempt,
    status: AttemptStatus,
    reason: Option<&StatusReason>,
) -> ServiceResult<bool> {
    let mut tx = access.store.begin().await?;
    let ended = store::attempts::finish(&mut tx, &attempt.id, status, reason, access.now()).await?;
    store::secrets::delete_owner(&mut tx, &attempt.id).await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(ended)
}

/// Ends an attempt whose time ran out before it completed.
async fn expire(access: &Access, attempt: &Attempt) -> ServiceResult<bool> {
    end_attempt(
        access,
        attempt,
        AttemptStatus::Expired,
        Some(&incomplete_reason()),
    )
    .await
}

/// Handles the provider's redirect. Answers the attempt to show, or `None` when the state is
/// missing, unknown or bound to another session: then nothing is stored.
pub async fn complete(
    access: &Access,
    params: RedirectParams,
    session_digest: Option<String>,
) -> ServiceResult<Option<String>> {
    let Some(state) = params.state.as_deref().filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let mut conn = access.store.conn().await?;
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
        || !store::attempts::claim(&mut conn, &attempt.id, access.now()).await?
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
    let now = access.now();
    if attempt.expires_at <= now {
        expire(access, &attempt).await?;
        return Ok(Some(attempt.id));
    }
    if mailbox.iss_required && params.iss.is_none() {
        let reason = StatusReason::new(
            "issuer_missing",
            "The response did not say which server sent it (no `iss`), though this mailbox's provider always does; it was refused.",
            Some("Click Authorize again; if it happens again, something between the browser and Herald is forging the redirect.".into()),
        );
        end_attempt(access, &attempt, AttemptStatus::Failed, Some(&reason)).await?;
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
        end_attempt(access, &attempt, AttemptStatus::Failed, Some(&reason)).await?;
        return Ok(Some(attempt.id));
    }
    if let Some(error) = params.error.as_deref() {
        let provider_error = ProviderError {
            error: error.to_owned(),
            error_description: params.error_description.clone(),
            ..ProviderError::default()
        };
        let reason = errors::reason_for(&provider_error, &mailbox, &access.config.redirect_uri());
        if end_attempt(access, &attempt, AttemptStatus::Failed, Some(&reason)).await?
            && mailbox.status != MailboxStatus::Verified
        {
            set_status(access, &mailbox, MailboxStatus::NotVerified, Some(reason)).await?;
        }
        return Ok(Some(attempt.id));
    }
    let Some(code) = params.code.filter(|c| !c.is_empty()) else {
        let reason = StatusReason::new(
            "invalid_response",
            "The provider's response carried neither a code nor an error.",
            Some("Click Authorize again.".into()),
        );
        end_attempt(access, &attempt, AttemptStatus::Failed, Some(&reason)).await?;
        return Ok(Some(attempt.id));
    };
    let outcome = redeem(access, &attempt, &mailbox, code).await?;
    let (status, reason) = match &outcome {
        Ok(()) => (AttemptStatus::Completed, None),
        Err(reason) => (AttemptStatus::Failed, Some(reason.clone())),
    };
    end_attempt(access, &attempt, status, reason.as_ref()).await?;
    Ok(Some(attempt.id))
}

/// Redeems the code, stores the tokens and verifies the mailbox. `Err` carries the reason the
/// attempt failed.
async fn redeem(
    access: &Access,
    attempt: &Attempt,
    mailbox: &Mailbox,
    code: String,
) -> ServiceResult<Result<(), StatusReason>> {
    let mut conn = access.store.conn().await?;
    let verifier = keys::get_secret(&mut conn, &access.keys, &attempt.id, PKCE_FIELD)
        .await
        .map_err(ServiceError::internal)?;
    drop(conn);
    // A code is redeemed once: with the first credential (the certificate in use, or the
    // renewed one when that has expired).
    let credential = match access::client_credentials(access, mailbox)
        .await
        .map_err(ServiceError::internal)?
    {
        Ok(mut found) => found.remove(0),
        Err(reason) => {
            mark_not_verified(access, mailbox, reason.clone()).await?;
            return Ok(Err(reason));
        }
    };
    let client = oauth::client_for(
        mailbox,
        credential.client_secret(),
        &access.config.redirect_uri(),
    )
    .map_err(ServiceError::internal)?;
    let proof = credential
        .proof(mailbox, access)
        .map_err(ServiceError::internal)?;
    let mut request = client
        .exchange_code(AuthorizationCode::new(code))
        .with_assertion(&proof);
    if let Some(verifier) = verifier {
        request =
            request.set_pkce_verifier(PkceCodeVerifier::new(verifier.expose_secret().to_owned()));
    }
    let response = match request.request_async(&access.http).await {
        Ok(response) => {
            if credential.successor() {
                access::promote_successor(access, mailbox, &credential)
                    .await
                    .map_err(ServiceError::internal)?;
            }
            response
        }
        Err(RequestTokenError::ServerResponse(error)) => {
            return refused(access, mailbox, Refusal::Provider(error))
                .await
                .map(Err);
        }
        Err(RequestTokenError::Request(error)) => {
            return refused(access, mailbox, Refusal::Http(error))
                .await
                .map(Err);
        }
        Err(other) => {
            return refused(access, mailbox, Refusal::Other(other.to_string()))
                .await
                .map(Err);
        }
    };
    accept(access, mailbox, &response).await
}

/// Why a token request brought no tokens.
pub(super) enum Refusal {
    /// The provider's error answer, read whole.
    Provider(ProviderError),
    /// The HTTP exchange failed.
    Http(HttpError),
    /// Anything else (an answer that is not a token response).
    Other(String),
}

/// The reason a token request failed; a refusal by the provider (and an endless answer) makes
/// the mailbox Not Verified, an outage does not.
pub(super) async fn refused(
    access: &Access,
    mailbox: &Mailbox,
    refusal: Refusal,
) -> ServiceResult<StatusReason> {
    let reason = match refusal {
        Refusal::Provider(error) => {
            errors::reason_for(&error, mailbox, &access.config.redirect_uri())
        }
        // An endless answer is no outage: the Token URL is wrong, and saying so is the fix.
        Refusal::Http(HttpError::TooLarge(limit)) => {
            tracing::warn!(mailbox = %mailbox.id, limit, "the token endpoint's answer is too large");
            errors::too_large(limit)
        }
        Refusal::Http(other) => return Ok(unreachable(mailbox, &other.to_string())),
        Refusal::Other(other) => return Ok(unreachable(mailbox, &other)),
    };
    mark_not_verified(access, mailbox, reason.clone()).await?;
    Ok(reason)
}

fn unreachable(mailbox: &Mailbox, error: &str) -> StatusReason {
    tracing::warn!(mailbox = %mailbox.id, %error, "token endpoint unreachable");
    StatusReason::new(
        "provider_unreachable",
        format!("The token endpoint could not be reached: {error}."),
        Some("Check the Token URL and the network, then click Authorize again.".into()),
    )
}

/// Takes the tokens a sign-in brought (a redeemed code, a device code): checks they are the
/// sign-in account's and carry a refresh token, stores them, checks the mailbox's transport
/// with them and sets the status. `Err` carries the reason the authorization failed.
pub(super) async fn accept(
    access: &Access,
    mailbox: &Mailbox,
    response: &oauth::TokenResponse,
) -> ServiceResult<Result<(), StatusReason>> {
    // Nothing is stored until the new authorization is known to be right: a failed
    // re-authorization must not replace a Verified mailbox's working tokens.
    let was_verified = mailbox.status == MailboxStatus::Verified;
    let keep_or_set = |reason: StatusReason| async move {
        if !was_verified {
            mark_not_verified(access, mailbox, reason.clone()).await?;
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
    let outcome = access::transport_for(&mailbox)
        .check(access, &mailbox, &Secret::Bearer(token))
        .await;
    // The tokens are the right account's: keep them whatever SMTP says.
    store_tokens(access, &mut mailbox, response).await?;
    match outcome {
        Ok(()) => {
            let verified = set_status(access, &mailbox, MailboxStatus::Verified, None).await?;
            access::read_secret_expiry(access, &verified)
                .await
                .map_err(ServiceError::internal)?;
            Ok(Ok(()))
        }
        Err(SendFailure::Refused(reason)) => {
            mark_not_verified(access, &mailbox, reason.clone()).await?;
            Ok(Err(reason))
        }
        Err(
            SendFailure::Transient(reply)
            | SendFailure::Rejected(reply)
            | SendFailure::Throttled { reply, .. },
        ) => {
            let text = reply.line();
            // Throttling or an outage says nothing about the configuration: the status stays.
            let reason = StatusReason::new(
                "smtp_check_postponed",
                format!(
                    "Authorized; {} asked to try later ({text}).",
                    match mailbox.transport {
                        TransportKind::Smtp => "the SMTP server",
                        TransportKind::Graph => "Microsoft Graph",
                    }
                ),
                Some("Click Verify in a few minutes.".into()),
            );
            if !was_verified {
                mark_not_verified(access, &mailbox, reason.clone()).await?;
            }
            Ok(Ok(()))
        }
    }
}

/// The latest authorization attempt of a mailbox, ended as expired when its time is up.
pub async fn latest_attempt(
    access: &Access,
    org_id: OrgId,
    id: MailboxId,
) -> ServiceResult<Option<Attempt>> {
    let mut conn = access.store.conn().await?;
    store::mailboxes::get(&mut conn, org_id, id)
        .await?
        .ok_or(ServiceError::NotFound("mailbox"))?;
    let Some(attempt) = store::attempts::latest(&mut conn, org_id, id).await? else {
        return Ok(None);
    };
    drop(conn);
    expire_if_due(access, attempt).await.map(Some)
}

/// One attempt of the organization, ended as expired when its time is up.
pub async fn attempt(
    access: &Access,
    org_id: OrgId,
    attempt_id: &str,
) -> ServiceResult<Option<Attempt>> {
    let mut conn = access.store.conn().await?;
    let Some(attempt) = store::attempts::get(&mut conn, org_id, attempt_id).await? else {
        return Ok(None);
    };
    drop(conn);
    expire_if_due(access, attempt).await.map(Some)
}

async fn expire_if_due(access: &Access, attempt: Attempt) -> ServiceResult<Attempt> {
    // A claimed attempt (finished_at set) is being completed by its redirect right now.
    if attempt.status == AttemptStatus::Pending
        && attempt.finished_at.is_none()
        && attempt.expires_at <= access.now()
    {
        expire(access, &attempt).await?;
        let mut conn = access.store.conn().await?;
        return Ok(store::attempts::get(&mut conn, attempt.org_id, &attempt.id)
            .await?
            .unwrap_or(attempt));
    }
    Ok(attempt)
}

/// Runs connect → EHLO → STARTTLS → AUTH → QUIT and sets the status by the outcome. A
/// transient failure (timeouts, 4xx) leaves the status as it was.
pub async fn verify(access: &Access, org_id: OrgId, id: MailboxId) -> ServiceResult<Mailbox> {
    Ok(access::verify(access, org_id, id).await?)
}
