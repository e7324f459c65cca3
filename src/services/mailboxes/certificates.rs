//! A mailbox's certificate credential: checking an uploaded one, making one, and **Renew
//! certificate**, which makes the next one beside the one in use so that the admin can upload
//! it before the old one expires. The private keys are sealed and never leave Herald; only the
//! certificates (public) are shown and downloaded.

use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;

use super::audit_detail;
use crate::access::Access;
use crate::domain::mailbox::{AuthKind, ClientAuth, Mailbox, StatusReason, secret_fields};
use crate::domain::{Actor, FieldError, MailboxId, NewAuditEvent, OrgId};
use crate::keys;
use crate::oauth::certificate::{self, KeyPair};
use crate::services::{Checks, ServiceError, ServiceResult};
use crate::store::{self, StoreError};

/// Checks an uploaded certificate and private key (both or neither), for a mailbox that signs
/// in with a certificate.
pub(super) fn check_upload(
    checks: &mut Checks,
    with_certificate: bool,
    upload: (&Option<String>, &Option<SecretString>),
) -> Option<KeyPair> {
    match upload {
        (None, None) => None,
        _ if !with_certificate => {
            checks.push(FieldError::new(
                "certificate_pem",
                "a certificate is used only with client_auth \"certificate\"",
            ));
            None
        }
        (Some(pem), Some(key)) => checks.take(
            certificate::from_upload(pem, key.expose_secret())
                .map_err(|e| FieldError::new("certificate_pem", e.to_string())),
        ),
        (Some(_), None) => {
            checks.push(FieldError::new(
                "private_key_pem",
                "must be given with the certificate: Herald signs with the certificate's private key",
            ));
            None
        }
        (None, Some(_)) => {
            checks.push(FieldError::new(
                "certificate_pem",
                "must be given with the private key",
            ));
            None
        }
    }
}

/// Makes a key pair and a certificate for the mailbox, off the async threads (RSA key
/// generation takes a moment).
pub(super) async fn generate(
    name: &str,
    address: &str,
    now: OffsetDateTime,
) -> ServiceResult<KeyPair> {
    let subject = format!("Herald {name} <{address}>");
    tokio::task::spawn_blocking(move || certificate::generate(&subject, now))
        .await
        .map_err(ServiceError::internal)?
        .map_err(ServiceError::internal)
}

/// Whether a change to the mailbox needs a certificate made for it: it signs in with one and
/// neither has one nor was given one.
pub(super) fn needs_certificate(mailbox: &Mailbox, uploaded: bool) -> bool {
    mailbox.client_auth == ClientAuth::Certificate && mailbox.certificate.is_none() && !uploaded
}

/// Seals a certificate's private key as `field` of the mailbox.
pub(super) async fn store_key(
    conn: &mut store::Conn,
    access: &Access,
    mailbox: &Mailbox,
    field: &str,
    key: &SecretString,
) -> Result<(), StoreError> {
    keys::put_secret(
        conn,
        &access.keys,
        &mailbox.id.to_string(),
        field,
        key,
        access.now(),
    )
    .await
}

/// The reason a mailbox gives once it signs in with a new certificate, until it is verified.
pub(super) fn upload_reason(mailbox: &Mailbox) -> StatusReason {
    let thumbprint = mailbox
        .certificate
        .as_ref()
        .map(|c| c.thumbprint_sha1.as_str())
        .unwrap_or_default();
    let next = if mailbox.credential == crate::domain::mailbox::CredentialKind::App {
        "click Verify"
    } else {
        "click Authorize (or Verify, if the mailbox is already authorized)"
    };
    StatusReason::new(
        "certificate_not_verified",
        format!(
            "The mailbox now signs in with a certificate (thumbprint {thumbprint}) that Microsoft has not accepted yet."
        ),
        Some(format!(
            "Click Download certificate, upload the .cer file in the Azure portal under the app registration › Certificates & secrets › Certificates › Upload certificate, then {next}."
        )),
    )
}

/// **Renew certificate**: makes the next certificate beside the one in use (replacing an
/// earlier renewal that was never taken up). The one in use keeps working until Microsoft
/// refuses it (removed from the app registration, or expired); then the renewed one takes over.
pub async fn renew_certificate(
    access: &Access,
    org_id: OrgId,
    id: MailboxId,
    actor: &Actor,
) -> ServiceResult<Mailbox> {
    let current = {
        let mut conn = access.store.conn().await?;
        store::mailboxes::get(&mut conn, org_id, id)
            .await?
            .ok_or(ServiceError::NotFound("mailbox"))?
    };
    if current.auth != AuthKind::OAuth2 || current.client_auth != ClientAuth::Certificate {
        return Err(ServiceError::Invalid(vec![FieldError::new(
            "client_auth",
            "the mailbox signs in with a client secret: set its credential to Certificate first",
        )]));
    }
    let pair = generate(&current.name, &current.username, access.now()).await?;
    let mut tx = access.store.begin().await?;
    let mut mailbox = store::mailboxes::get(&mut tx, org_id, id)
        .await?
        .ok_or(ServiceError::NotFound("mailbox"))?;
    let field = if mailbox.certificate.is_some() {
        mailbox.next_certificate = Some(pair.certificate.clone());
        secret_fields::NEXT_CERTIFICATE_KEY
    } else {
        mailbox.certificate = Some(pair.certificate.clone());
        secret_fields::CERTIFICATE_KEY
    };
    mailbox.updated_at = access.now();
    store::mailboxes::set_certificates(&mut tx, &mailbox).await?;
    store_key(&mut tx, access, &mailbox, field, &pair.private_key).await?;
    let mut detail = audit_detail(&mailbox);
    detail["thumbprint"] = serde_json::json!(pair.certificate.thumbprint_sha1);
    detail["expires_at"] = serde_json::json!(pair.certificate.not_after.date().to_string());
    store::audit::record(
        &mut tx,
        &NewAuditEvent {
            org_id,
            actor: actor.clone(),
            action: "mailbox.certificate_renew",
            target_kind: "mailbox",
            target_id: id.to_string(),
            detail,
        },
        access.now(),
    )
    .await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(mailbox)
}
