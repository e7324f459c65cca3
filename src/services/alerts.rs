//! Alerts: what an organization's admins must hear about, raised once, shown as a banner and
//! POSTed to the organization's webhook, signed.
//!
//! Triggers: a mailbox turning Not Verified (once per reason, until it is verified again); a
//! client secret expiring within 30, 7 or 1 days, or expired (once per step and date); messages
//! failing permanently (once per mailbox, reason and hour); a keep-alive failing (once, until
//! one succeeds).
//!
//! A webhook request carries `Herald-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
//! "<t>.<body>")>`. A receiver recomputes it over the raw body, compares in constant time, and
//! rejects a `t` more than 5 minutes from its clock, so a captured request cannot be replayed
//! later.

use hmac::{KeyInit, Mac};
use secrecy::SecretString;
use serde::Serialize;
use time::{Date, OffsetDateTime};

use super::{ServiceError, ServiceResult};
use crate::domain::mailbox::{CredentialExpiry, ExpiryWarning, Mailbox, expiry_warning};
use crate::domain::{FieldError, OrgId};
use crate::keys;
use crate::secrets::KeyRing;
use crate::store::alerts::{self as stored, Alert, NewAlert};
use crate::store::{self, Store, StoreResult};

/// The sealed field holding an organization's webhook secret.
pub const WEBHOOK_SECRET_FIELD: &str = "alert_webhook_secret";

/// The header a webhook request is signed in.
pub const SIGNATURE_HEADER: &str = "Herald-Signature";

pub use crate::access::alerts::kind;

/// `t=<t>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn signature(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

/// Which warning a client secret's expiry date calls for today: days left at 30, 7 and 1, or
/// expired.
fn expiry_step(expires: Date, today: Date) -> Option<(i64, &'static str)> {
    match expiry_warning(expires, today)? {
        ExpiryWarning::Expired => Some((0, kind::SECRET_EXPIRED)),
        ExpiryWarning::ExpiresIn(1) => Some((1, kind::SECRET_EXPIRING)),
        ExpiryWarning::ExpiresIn(2..=7) => Some((7, kind::SECRET_EXPIRING)),
        ExpiryWarning::ExpiresIn(_) => Some((30, kind::SECRET_EXPIRING)),
    }
}

/// The title of the alert a credential's end calls for on `today`, by the same rule as the
/// mailbox list's warning ([`expiry_warning`]).
pub fn expiry_title(what: &str, name: &str, expires: Date, today: Date) -> Option<String> {
    Some(match expiry_warning(expires, today)? {
        ExpiryWarning::Expired => format!("The {what} of \"{name}\" has expired"),
        ExpiryWarning::ExpiresIn(left) => format!(
            "The {what} of \"{name}\" expires in {left} day{}",
            if left == 1 { "" } else { "s" }
        ),
    })
}

/// The alert's detail and action for a credential that expires.
fn expiry_words(expiring: &CredentialExpiry<'_>, mailbox: &Mailbox) -> (String, String) {
    let expires = expiring.date();
    match expiring {
        CredentialExpiry::Secret(_) => (
            format!("The expiry date recorded for its client secret is {expires}. The mailbox stops sending when the secret expires (AADSTS7000222)."),
                "In the Azure portal, open the app registration › Certificates & secrets › New client secret; paste its Value into the mailbox's Client Secret and record the new expiry date.".into(),
            ),
            CredentialExpiry::Certificate(c) => (
                format!(
                    "Its certificate (thumbprint {}) is valid until {expires}. The mailbox stops sending when Microsoft no longer accepts it.",
                    c.thumbprint_sha1
                ),
                if mailbox.next_certificate.is_some() {
                    "A renewed certificate is ready: download it from the mailbox (Download certificate), upload it to the app registration › Certificates & secrets › Certificates, and Herald switches to it when the old one stops working.".into()
                } else {
                    "Edit the mailbox and click Renew certificate, download the new certificate and upload it to the app registration › Certificates & secrets › Certificates. The old one keeps working meanwhile.".into()
                },
            ),
    }
}

/// Raises the client-secret and certificate alerts due today. Answers how many were new.
pub async fn check_secret_expiry(store: &Store, now: OffsetDateTime) -> StoreResult<usize> {
    let mut conn = store.conn().await?;
    let mut raised = 0;
    for mailbox in store::mailboxes::with_secret_expiry(&mut conn).await? {
        let Some(expiring) = mailbox.credential_expiry() else {
            continue;
        };
        let expires = expiring.date();
        let Some((step, kind)) = expiry_step(expires, now.date()) else {
            // Renewed, or the date moved: the earlier warnings no longer hold.
            stored::resolve_others(
                &mut conn,
                mailbox.id,
                &[kind::SECRET_EXPIRING, kind::SECRET_EXPIRED],
                "",
                now,
            )
            .await?;
            continue;
        };
        let Some(title) = expiry_title(expiring.what(), &mailbox.name, expires, now.date()) else {
            continue;
        };
        let key = match &expiring {
            CredentialExpiry::Secret(_) => format!("client_secret:{}:{expires}:{step}", mailbox.id),
            CredentialExpiry::Certificate(c) => {
                format!("certificate:{}:{}:{step}", mailbox.id, c.thumbprint_sha256)
            }
        };
        let (detail, action) = expiry_words(&expiring, &mailbox);
        // Raised while holding the mailbox's row, and only for the date it still has: a PATCH
        // that replaces the secret (and resolves these alerts) has either committed and is seen
        // here, or waits; a date read before it never comes back as a stale warning.
        let mut tx = store.begin().await?;
        store::mailboxes::lock(&mut tx, mailbox.id).await?;
        let current = store::mailboxes::get(&mut tx, mailbox.org_id, mailbox.id).await?;
        if current
            .as_ref()
            .and_then(Mailbox::credential_expiry)
            .map(|e| e.date())
            != Some(expires)
        {
            continue;
        }
        let new = stored::raise(
            &mut tx,
            &NewAlert {
                org_id: mailbox.org_id,
                kind,
                dedup_key: key.clone(),
                mailbox_id: Some(mailbox.id),
                message_id: None,
                title,
                detail,
                action: Some(action),
            },
            now,
        )
        .await?;
        if new {
            // The previous step (or an earlier date's) gives way to this one.
            stored::resolve_others(
                &mut tx,
                mailbox.id,
                &[kind::SECRET_EXPIRING, kind::SECRET_EXPIRED],
                &key,
                now,
            )
            .await?;
        }
        tx.commit().await?;
        raised += usize::from(new);
    }
    Ok(raised)
}

/// Hides an alert from the banner, and records who did. Answers whether the organization
/// has it.
pub async fn dismiss(
    store: &Store,
    org_id: OrgId,
    id: &str,
    actor: &crate::domain::Actor,
    now: OffsetDateTime,
) -> StoreResult<bool> {
    let mut tx = store.begin().await?;
    if !stored::dismiss(&mut tx, org_id, id, now).await? {
        return Ok(false);
    }
    store::audit::record(
        &mut tx,
        &crate::domain::NewAuditEvent {
            org_id,
            actor: actor.clone(),
            action: "alert.dismiss",
            target_kind: "alert",
            target_id: id.to_owned(),
            detail: serde_json::json!({}),
        },
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// Sets the organization's webhook and answers its new signing secret (shown once). The URL
/// follows the rules of token URLs.
pub async fn set_webhook(
    store: &Store,
    keys: &KeyRing,
    policy: &super::mailboxes::Policy<'_>,
    org_id: OrgId,
    raw_url: &str,
    now: OffsetDateTime,
) -> ServiceResult<(String, SecretString)> {
    let mut checks = super::Checks::default();
    let url = super::mailboxes::check_url(&mut checks, policy, "url", raw_url);
    checks.finish()?;
    let Some(url) = url else {
        return Err(ServiceError::Invalid(vec![FieldError::new(
            "url",
            "is not a URL",
        )]));
    };
    let secret = SecretString::from(format!("hwh_{}", crate::crypto::random_token()));
    let mut tx = store.begin().await?;
    stored::set_webhook_url(&mut tx, org_id, Some(&url)).await?;
    keys::put_secret(
        &mut tx,
        keys,
        &org_id.to_string(),
        WEBHOOK_SECRET_FIELD,
        &secret,
        now,
    )
    .await?;
    tx.commit().await.map_err(store::StoreError::from)?;
    Ok((url, secret))
}

/// What a webhook receives.
#[derive(Serialize)]
struct Payload<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    organization_id: String,
    mailbox_id: Option<String>,
    message_id: Option<&'a str>,
    title: &'a str,
    detail: &'a str,
    action: Option<&'a str>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
}

/// The body a webhook receives for the alert.
pub fn payload(alert: &Alert) -> Vec<u8> {
    serde_json::to_vec(&Payload {
        id: &alert.id,
        kind: &alert.kind,
        organization_id: alert.org_id.to_string(),
        mailbox_id: alert.mailbox_id.map(|m| m.to_string()),
        message_id: alert.message_id.as_deref(),
        title: &alert.title,
        detail: &alert.detail,
        action: alert.action.as_deref(),
        created_at: alert.created_at,
    })
    .unwrap_or_default()
}

/// Writes the pending alerts' emails to the organizations' admins into the outbox, which
/// sends them like any mail. Answers how many were queued.
pub async fn email_due(
    store: &Store,
    settings: &crate::config::OutboxSettings,
    public_url: &url::Url,
    now: OffsetDateTime,
) -> StoreResult<usize> {
    use crate::services::send::{self, Body, Caller, SendRequest, Submission};
    let due = {
        let mut conn = store.conn().await?;
        stored::emails_due(&mut conn, now, 50).await?
    };
    let mut queued = 0;
    for alert in due {
        let admins = {
            let mut conn = store.conn().await?;
            if !stored::take_email(&mut conn, &alert.id, now).await? {
                continue;
            }
            stored::admin_emails(&mut conn, alert.org_id).await?
        };
        let outcome = if admins.is_empty() {
            Err("the organization has no admin to write to".to_owned())
        } else {
            let link = public_url
                .join("/settings/system/outgoing-mail")
                .map(|u| u.to_string())
                .unwrap_or_default();
            let text = format!(
                "{}\n\n{}\n{}\nOutgoing Mail: {link}\n\nHerald tells you once; this alert stays on the Outgoing Mail pages until its cause goes away or an admin dismisses it.\n",
                alert.title,
                alert.detail,
                alert
                    .action
                    .as_deref()
                    .map(|a| format!("\nWhat to do: {a}\n"))
                    .unwrap_or_default(),
            );
            let request = SendRequest {
                mailbox: None,
                to: admins,
                cc: Vec::new(),
                bcc: Vec::new(),
                subject: Some(format!("[Herald] {}", alert.title)),
                text: Some(text),
                html: None,
                reply_to: None,
                headers: [("X-Herald-Alert".to_owned(), alert.kind.clone())].into(),
                attachments: Vec::new(),
            };
            send::accept(
                store,
                settings,
                &Caller {
                    org_id: alert.org_id,
                    api_key_id: None,
                    allowed: None,
                    source: crate::domain::message::MessageSource::Alert,
                },
                Submission {
                    mailbox: None,
                    body: Body::Json(Box::new(request)),
                    idempotency_key: None,
                    request_digest: String::new(),
                },
                now,
            )
            .await
            .map(|accepted| accepted.id)
            .map_err(|e| e.to_string())
        };
        let mut conn = store.conn().await?;
        match &outcome {
            Ok(id) => {
                stored::email_outcome(&mut conn, &alert.id, Ok(id)).await?;
                queued += 1;
            }
            Err(why) => {
                tracing::warn!(alert = %alert.id, error = %why, "an alert could not be emailed");
                stored::email_outcome(&mut conn, &alert.id, Err(why)).await?;
            }
        }
    }
    Ok(queued)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_steps_are_30_7_1_days_and_expired() {
        let today = time::macros::date!(2026 - 11 - 29);
        let step = |days: i64| expiry_step(today + time::Duration::days(days), today).map(|s| s.0);
        assert_eq!(step(31), None);
        assert_eq!(step(30), Some(30));
        assert_eq!(step(8), Some(30));
        assert_eq!(step(7), Some(7));
        assert_eq!(step(2), Some(7));
        assert_eq!(step(1), Some(1));
        assert_eq!(step(0), Some(0));
        assert_eq!(step(-5), Some(0));
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_the_time_a_dot_and_the_body() {
        // RFC 4231 test case 2's key and a known body, computed independently.
        let sig = signature("Jefe", 1_700_000_000, b"{}");
        assert!(sig.starts_with("t=1700000000,v1="));
        assert_eq!(sig.len(), "t=1700000000,v1=".len() + 64);
        assert_ne!(sig, signature("Jefe", 1_700_000_001, b"{}"));
        assert_ne!(sig, signature("jefe", 1_700_000_000, b"{}"));
    }
}
