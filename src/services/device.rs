//! Device code (RFC 8628): authorizing a mailbox from where no browser can come back to
//! Herald (a headless server, a shell). Herald asks the provider for a code, a person enters it
//! at the provider's verification page on any device, signs in and accepts; meanwhile Herald
//! polls the token endpoint at the provider's pace (`interval`, five seconds more after each
//! `slow_down`) and ends as the code flow does: the same checks, stored tokens and status.
//!
//! The attempt is recorded like an Authorize click, so `GET …/authorization` follows it. The
//! device code itself lives only in the polling task.

use std::time::Duration as StdDuration;

use oauth2::{RequestTokenError, Scope};
use time::{Duration, OffsetDateTime};

use super::authorization::{Refusal, accept, end_attempt, refused};
use super::{ServiceError, ServiceResult};
use crate::access::{self, Access, ClientCredential, mark_not_verified, set_status};
use crate::crypto;
use crate::domain::mailbox::{AuthKind, CredentialKind, Mailbox, MailboxStatus, StatusReason};
use crate::domain::{Actor, FieldError, MailboxId, OrgId};
use crate::oauth::device::{
    self, DeviceAuthorization, DeviceClient, PollHttp, Signer, device_client_for,
};
use crate::oauth::{ProviderError, WithProof as _};
use crate::store::attempts::{Attempt, AttemptStatus};
use crate::store::{self, StoreError};

/// How long Herald keeps polling past the code's `expires_in`, waiting for the provider to say
/// `expired_token` itself.
const POLL_GRACE: Duration = Duration::minutes(1);

/// A device code to show, and the attempt that waits for it.
pub struct DeviceStarted {
    pub attempt_id: String,
    /// What the person types at the verification page.
    pub user_code: String,
    pub verification_uri: String,
    pub expires_at: OffsetDateTime,
    /// Seconds between polls, as the provider asked.
    pub interval: u64,
    /// What to tell the person, in the provider's words when it has some.
    pub message: String,
}

/// The polling of one device code, until the provider answers with tokens or a refusal.
pub struct DevicePoll {
    access: Access,
    attempt: Attempt,
    mailbox: Mailbox,
    client: DeviceClient,
    credential: ClientCredential,
    authorization: DeviceAuthorization,
}

/// Begins a device authorization. `Ok(Err(reason))`: the provider refused to give a code
/// (the app registration, the scopes); nothing was recorded.
pub async fn start(
    access: &Access,
    org_id: OrgId,
    mailbox_id: MailboxId,
    actor: &Actor,
) -> ServiceResult<Result<(DeviceStarted, DevicePoll), StatusReason>> {
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
    let endpoint = match device::known_device_endpoint(&mailbox) {
        Some(endpoint) => Some(endpoint),
        None => {
            let policy = super::mailboxes::Policy {
                dev: access.config.dev,
                allow_private_hosts: access.config.allow_private_hosts,
                sandbox: access.sandbox.as_deref(),
            };
            super::mailboxes::device_endpoint(&access.http, &policy, &mailbox).await
        }
    };
    let Some(endpoint) = endpoint else {
        return Err(ServiceError::Rejected {
            code: "device_code_unsupported",
            error: FieldError::new(
                "provider",
                "this mailbox's provider offers no device code (its discovery document names no device_authorization_endpoint): click Authorize and sign in in a browser",
            ),
        });
    };
    let credential = match access::client_credentials(access, &mailbox)
        .await
        .map_err(ServiceError::internal)?
    {
        Ok(mut found) => found.remove(0),
        Err(reason) => {
            mark_not_verified(access, &mailbox, reason.clone()).await?;
            return Ok(Err(reason));
        }
    };
    let client = device_client_for(&mailbox, credential.client_secret(), &endpoint)
        .map_err(ServiceError::internal)?;
    let proof = credential
        .proof(&mailbox, access)
        .map_err(ServiceError::internal)?;
    let asked = client
        .exchange_device_code()
        .add_scopes(mailbox.scopes.iter().map(|s| Scope::new(s.clone())))
        .with_assertion(&proof)
        .request_async::<_, device::DeviceFields>(&access.http)
        .await;
    let authorization: DeviceAuthorization = match asked {
        Ok(authorization) => authorization,
        Err(RequestTokenError::ServerResponse(error)) => {
            return refused(access, &mailbox, Refusal::Provider(error))
                .await
                .map(Err);
        }
        Err(RequestTokenError::Request(error)) => {
            return refused(access, &mailbox, Refusal::Http(error))
                .await
                .map(Err);
        }
        Err(other) => {
            return refused(access, &mailbox, Refusal::Other(other.to_string()))
                .await
                .map(Err);
        }
    };
    let now = access.now();
    let lifetime = Duration::try_from(authorization.expires_in()).unwrap_or(Duration::minutes(15));
    let expires_at = now + lifetime;
    let attempt_id = uuid::Uuid::now_v7().to_string();
    // The attempt outlives the code by the poller's grace, so that the provider's own
    // `expired_token` ends it with its reason rather than a reader of the attempt racing it.
    let attempt_expires_at = expires_at + POLL_GRACE;
    let mut tx = access.store.begin().await?;
    // The attempt has no redirect to come back with a state: a random one nobody holds.
    store::attempts::insert(
        &mut tx,
        &attempt_id,
        org_id,
        mailbox_id,
        &crypto::token_digest(&crypto::random_token()),
        None,
        &actor.label,
        now,
        attempt_expires_at,
    )
    .await?;
    tx.commit().await.map_err(StoreError::from)?;
    let mut conn = access.store.conn().await?;
    let attempt = store::attempts::get(&mut conn, org_id, &attempt_id)
        .await?
        .ok_or(ServiceError::NotFound("authorization attempt"))?;
    drop(conn);
    let user_code = authorization.user_code().secret().clone();
    let verification_uri = authorization.verification_uri().to_string();
    let message = authorization.extra_fields().message.clone().unwrap_or_else(|| {
        format!("To sign in, use a web browser to open the page {verification_uri} and enter the code {user_code} to authenticate.")
    });
    let started = DeviceStarted {
        attempt_id,
        user_code,
        verification_uri,
        expires_at,
        interval: authorization.interval().as_secs(),
        message,
    };
    Ok(Ok((
        started,
        DevicePoll {
            access: access.clone(),
            attempt,
            mailbox,
            client,
            credential,
            authorization,
        },
    )))
}

/// The reasons a device code ends without tokens, in plain words.
fn device_reason(error: &str, expires_in: StdDuration) -> Option<StatusReason> {
    let minutes = expires_in.as_secs().div_ceil(60);
    Some(match error {
        // Entra says `authorization_declined`; RFC 8628 says `access_denied`.
        "authorization_declined" | "access_denied" => StatusReason::new(
            "device_code_declined",
            "The person who entered the code declined: Herald may not send as this mailbox.",
            Some("Start again (Use a code instead, or herald mailbox authorize --device), sign in as the mailbox's account and click Accept.".into()),
        ),
        "expired_token" => StatusReason::new(
            "device_code_expired",
            format!("Nobody entered the code and accepted within {minutes} minutes, so it expired."),
            Some("Start again and enter the new code at the page shown before it expires.".into()),
        ),
        "bad_verification_code" => StatusReason::new(
            "device_code_not_recognized",
            "The provider did not recognize the device code Herald polled with.",
            Some("Start again for a new code.".into()),
        ),
        _ => return None,
    })
}

impl DevicePoll {
    /// The attempt being polled for.
    pub fn attempt_id(&self) -> &str {
        &self.attempt.id
    }

    /// Polls until the provider answers, then ends the attempt: completed (the mailbox checked
    /// and its status set) or failed with its reason. Answers the attempt as it ended.
    pub async fn run(self) -> ServiceResult<Attempt> {
        let Self {
            access,
            attempt,
            mailbox,
            client,
            credential,
            authorization,
        } = self;
        let signer: Signer = match &credential {
            ClientCredential::Secret { .. } => Box::new(|| Ok(None)),
            ClientCredential::Certificate { .. } => {
                let (credential, mailbox, access) =
                    (credential.clone(), mailbox.clone(), access.clone());
                Box::new(move || {
                    credential
                        .proof(&mailbox, &access)
                        .map(|p| p.assertion)
                        .map_err(|e| e.to_string())
                })
            }
        };
        let http = PollHttp::new(&access.http, signer);
        let clock = access.clock.clone();
        let sleep = move |wait: StdDuration| {
            let clock = clock.clone();
            async move {
                let until = clock.now() + wait;
                clock.sleep_until(until).await;
            }
        };
        let expires_in = authorization.expires_in();
        // The provider says when its code expires; this only stops a provider that never does.
        let patience = expires_in + StdDuration::try_from(POLL_GRACE).unwrap_or_default();
        let polled = tokio::time::timeout(
            patience,
            client
                .exchange_device_access_token(&authorization)
                .request_async(&http, sleep, Some(patience)),
        )
        .await;
        let outcome = match polled {
            Err(_) => Err(device_reason("expired_token", expires_in)),
            Ok(Ok(response)) => Ok(response),
            Ok(Err(RequestTokenError::ServerResponse(error))) => {
                let code = error.error().as_ref().to_owned();
                let error = http
                    .last_error()
                    .filter(|e| e.error == code)
                    .unwrap_or_else(|| ProviderError {
                        error: code,
                        error_description: error.error_description().cloned(),
                        ..ProviderError::default()
                    });
                match device_reason(&error.error, expires_in) {
                    Some(reason) => Err(Some(reason)),
                    None => Err(Some(
                        refused(&access, &mailbox, Refusal::Provider(error)).await?,
                    )),
                }
            }
            Ok(Err(RequestTokenError::Request(error))) => Err(Some(
                refused(&access, &mailbox, Refusal::Http(error)).await?,
            )),
            Ok(Err(other)) => Err(Some(
                refused(&access, &mailbox, Refusal::Other(other.to_string())).await?,
            )),
        };
        tracing::info!(mailbox = %mailbox.id, polls = http.polls(), "device code polling ended");
        match outcome {
            Err(reason) => {
                let reason = reason.unwrap_or_else(|| {
                    StatusReason::new("device_code_expired", "The code expired.", None)
                });
                let device_refusal = reason.code.starts_with("device_code_");
                if end_attempt(&access, &attempt, AttemptStatus::Failed, Some(&reason)).await?
                    && device_refusal
                    && mailbox.status != MailboxStatus::Verified
                {
                    set_status(&access, &mailbox, MailboxStatus::NotVerified, Some(reason)).await?;
                }
            }
            Ok(response) => {
                // Claimed before anything is stored: an attempt that ended meanwhile (the
                // mailbox's settings changed, its time ran out) cannot complete.
                let mut conn = access.store.conn().await?;
                let claimed = store::attempts::claim(&mut conn, &attempt.id, access.now()).await?;
                let current =
                    store::mailboxes::get(&mut conn, attempt.org_id, attempt.mailbox_id).await?;
                drop(conn);
                if let (true, Some(current)) = (claimed, current) {
                    if credential.successor() {
                        access::promote_successor(&access, &current, &credential)
                            .await
                            .map_err(ServiceError::internal)?;
                    }
                    let (status, reason) = match accept(&access, &current, &response).await? {
                        Ok(()) => (AttemptStatus::Completed, None),
                        Err(reason) => (AttemptStatus::Failed, Some(reason)),
                    };
                    end_attempt(&access, &attempt, status, reason.as_ref()).await?;
                }
            }
        }
        let mut conn = access.store.conn().await?;
        Ok(store::attempts::get(&mut conn, attempt.org_id, &attempt.id)
            .await?
            .unwrap_or(attempt))
    }

    /// Polls in the background, logging what Herald itself fails at (the outcome is in the
    /// attempt).
    pub fn spawn(self) {
        tokio::spawn(async move {
            let id = self.attempt.id.clone();
            if let Err(e) = self.run().await {
                tracing::error!(attempt = %id, error = %e, "device code polling failed");
            }
        });
    }
}
