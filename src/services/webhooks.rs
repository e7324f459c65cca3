//! Delivering alerts to organizations' webhooks, fairly: one organization's alerts go one
//! after another, in the order they were raised; organizations go side by side, a few at a
//! time, and each is left out of the next passes while its deliveries are still under way. A
//! webhook that does not answer (a black-hole address: 20 seconds a request) then delays its
//! own organization's alerts, never another's.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;

use super::alerts::{SIGNATURE_HEADER, WEBHOOK_SECRET_FIELD, payload, signature};
use super::{ServiceError, ServiceResult};
use crate::clock::SharedClock;
use crate::domain::OrgId;
use crate::keys;
use crate::oauth::http::{HttpError, TokenHttp};
use crate::secrets::KeyRing;
use crate::store::Store;
use crate::store::alerts::{self as stored, Alert};

/// Deliveries are tried this many times, further and further apart, then given up.
const WEBHOOK_TRIES: i64 = 8;

/// Organizations whose webhooks are being sent to at once, in this instance.
const PARALLEL: usize = 8;

/// How long a webhook may take to answer.
const ANSWER_WITHIN: StdDuration = StdDuration::from_secs(20);

fn retry_after(attempts: i64) -> time::Duration {
    // 10 s, 40 s, 2.7 min, 11 min, 43 min, 2.8 h, 11 h.
    time::Duration::seconds(10 * 4i64.pow(attempts.clamp(1, 7) as u32 - 1))
}

/// What delivering needs, and the organizations whose deliveries are under way.
#[derive(Clone)]
pub struct Webhooks {
    store: Store,
    keys: Arc<KeyRing>,
    http: TokenHttp,
    clock: SharedClock,
    busy: Arc<Mutex<HashSet<OrgId>>>,
    slots: Arc<tokio::sync::Semaphore>,
}

impl Webhooks {
    pub fn new(store: Store, keys: Arc<KeyRing>, http: TokenHttp, clock: SharedClock) -> Self {
        Self {
            store,
            keys,
            http,
            clock,
            busy: Arc::default(),
            slots: Arc::new(tokio::sync::Semaphore::new(PARALLEL)),
        }
    }

    /// Starts delivering what is due to each organization's webhook, except to the
    /// organizations whose deliveries are still under way; returns without waiting for them.
    /// Answers how many organizations it started.
    pub async fn start_due(&self) -> ServiceResult<usize> {
        let due = {
            let mut conn = self.store.conn().await?;
            // More than can go at once: the busy ones are skipped.
            stored::webhook_orgs_due(&mut conn, self.clock.now(), 4 * PARALLEL as i64).await?
        };
        let mut started = 0;
        for org_id in due {
            if !self
                .busy
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(org_id)
            {
                continue;
            }
            started += 1;
            let this = self.clone();
            tokio::spawn(async move {
                let slot = this.slots.clone().acquire_owned().await;
                if let Err(e) = this.deliver(org_id).await {
                    tracing::warn!(org = %org_id, error = %e, "could not deliver alerts to the webhook");
                }
                drop(slot);
                this.busy
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&org_id);
            });
        }
        Ok(started)
    }

    /// Delivers the organization's due alerts in order, until none is due or one fails: the
    /// rest wait for a later pass rather than for the same webhook to fail them too.
    async fn deliver(&self, org_id: OrgId) -> ServiceResult<()> {
        loop {
            // The time of this delivery: earlier ones may have taken a while.
            let now = self.clock.now();
            let (alert, url, secret) = {
                let mut conn = self.store.conn().await?;
                let Some(alert) = stored::next_webhook_due(&mut conn, org_id, now).await? else {
                    return Ok(());
                };
                // Longer than a delivery can take, so no other instance sends it meanwhile.
                let until = now + time::Duration::minutes(5);
                if !stored::take_webhook(&mut conn, &alert.id, now, until).await? {
                    // Another instance took it first; it sends this organization's alerts.
                    return Ok(());
                }
                let url = stored::webhook_url(&mut conn, org_id).await?;
                let secret = keys::get_secret(
                    &mut conn,
                    &self.keys,
                    &org_id.to_string(),
                    WEBHOOK_SECRET_FIELD,
                )
                .await
                .map_err(ServiceError::internal)?;
                (alert, url, secret)
            };
            let attempts = alert.webhook_attempts + 1;
            let outcome = match (url, secret) {
                (Some(url), Some(secret)) => post(&self.http, &url, &secret, &alert, now).await,
                _ => Err("the organization has no webhook any more".to_owned()),
            };
            let mut conn = self.store.conn().await?;
            match outcome {
                Ok(()) => {
                    stored::webhook_outcome(&mut conn, &alert.id, attempts, Ok(())).await?;
                }
                Err(why) => {
                    tracing::warn!(alert = %alert.id, attempts, error = %why, "an alert's webhook delivery failed");
                    let retry = (attempts < WEBHOOK_TRIES).then(|| now + retry_after(attempts));
                    stored::webhook_outcome(&mut conn, &alert.id, attempts, Err((&why, retry)))
                        .await?;
                    return Ok(());
                }
            }
        }
    }
}

async fn post(
    http: &TokenHttp,
    url: &str,
    secret: &SecretString,
    alert: &Alert,
    now: OffsetDateTime,
) -> Result<(), String> {
    let body = payload(alert);
    let t = now.unix_timestamp();
    use axum::http;
    let request = http::Request::builder()
        .method(http::Method::POST)
        .uri(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(
            http::header::USER_AGENT,
            concat!("Herald/", env!("CARGO_PKG_VERSION")),
        )
        .header(
            SIGNATURE_HEADER,
            signature(secret.expose_secret(), t, &body),
        )
        .body(body)
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(ANSWER_WITHIN, http.execute(request)).await {
        Err(_) => Err(format!(
            "the webhook did not answer within {} seconds",
            ANSWER_WITHIN.as_secs()
        )),
        Ok(Err(e @ (HttpError::Transport(_) | HttpError::TooLarge(_)))) => {
            Err(e.to_string().replace("the token endpoint", "the webhook"))
        }
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(response)) if response.status().is_success() => Ok(()),
        Ok(Ok(response)) => Err(format!("the webhook answered {}", response.status())),
    }
}
