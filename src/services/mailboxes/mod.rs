//! Creating, changing and deleting mailboxes: provider presets (and providers recognised by
//! their endpoints), validation (including the
//! guards against SSRF and header injection), sealed secrets, and the rule that a changed
//! identity drops the stored tokens. `service_account` reads a Google service account's
//! JSON key, the app-only credential of a Google mailbox.

use secrecy::SecretString;
use time::OffsetDateTime;

mod certificates;
mod discovery;
mod recognize;
mod resolve;
mod service_account;
#[cfg(test)]
mod tests;
mod update;

pub use certificates::renew_certificate;
pub use discovery::{device_endpoint, discover};
pub use resolve::Resolved;
pub(crate) use resolve::check_url;
pub use update::update;

use super::{ServiceError, ServiceResult};
use crate::access::Access;
use crate::domain::mailbox::{Mailbox, StatusReason, secret_fields};
use crate::domain::message::LimitOverrides;
use crate::domain::presets::SandboxPreset;
use crate::domain::{Actor, FieldError, MailboxId, NewAuditEvent, OrgId};
use crate::keys;
use crate::net::HostPolicy;
use crate::secrets::KeyRing;
use crate::store::{self, StoreError};

/// What the installation allows.
#[derive(Clone, Copy, Debug)]
pub struct Policy<'a> {
    /// Development mode: `http://` and SMTP without TLS on loopback.
    pub dev: bool,
    /// Token URLs and SMTP hosts may be on private networks (on-premises servers).
    pub allow_private_hosts: bool,
    pub sandbox: Option<&'a SandboxPreset>,
}

impl Policy<'_> {
    /// The rule for outbound connections.
    pub fn hosts(&self) -> HostPolicy {
        HostPolicy {
            dev: self.dev,
            allow_private: self.allow_private_hosts,
        }
    }
}

/// A mailbox as given by a caller: everything optional, presets fill the rest.
#[derive(Default)]
pub struct MailboxDraft {
    pub name: Option<String>,
    pub auth: Option<String>,
    pub provider: Option<String>,
    pub tenant: Option<String>,
    pub host: Option<String>,
    pub port: Option<i64>,
    pub security: Option<String>,
    pub username: Option<String>,
    pub from_name: Option<String>,
    pub sign_in_account: Option<String>,
    pub reply_to: Option<String>,
    pub signature: Option<String>,
    pub default: Option<bool>,
    pub authorization_url: Option<String>,
    pub token_url: Option<String>,
    pub client_id: Option<String>,
    pub client_auth: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub issuer: Option<String>,
    pub client_secret_expires_at: Option<String>,
    pub client_secret: Option<SecretString>,
    /// A second client secret, to take over when the current one is refused.
    pub next_client_secret: Option<SecretString>,
    pub password: Option<SecretString>,
    pub limits: Option<LimitOverrides>,
    /// `smtp` (default) or `graph`.
    pub transport: Option<String>,
    /// Graph keeps a copy in Sent Items (default true).
    pub save_to_sent_items: Option<bool>,
    /// `delegated` (OAuth2's default), `app` or `password` (basic's).
    pub credential: Option<String>,
    /// An uploaded certificate (PEM), with `private_key_pem`, instead of one Herald makes.
    pub certificate_pem: Option<String>,
    /// The uploaded certificate's private key (unencrypted PKCS#8 PEM).
    pub private_key_pem: Option<SecretString>,
    /// Microsoft's cloud: `global` (default), `usgov`, `dod` or `china`.
    pub cloud: Option<String>,
}

/// A change to a mailbox. `Some(None)` clears an optional field; `None` keeps it.
#[derive(Default)]
pub struct MailboxPatch {
    pub name: Option<String>,
    pub tenant: Option<Option<String>>,
    pub host: Option<String>,
    pub port: Option<i64>,
    pub security: Option<String>,
    pub username: Option<String>,
    pub from_name: Option<Option<String>>,
    pub sign_in_account: Option<Option<String>>,
    pub reply_to: Option<Option<String>>,
    pub signature: Option<Option<String>>,
    pub default: Option<bool>,
    pub authorization_url: Option<String>,
    pub token_url: Option<String>,
    pub client_id: Option<String>,
    pub client_auth: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub issuer: Option<Option<String>>,
    pub client_secret_expires_at: Option<Option<String>>,
    pub client_secret: Option<SecretString>,
    /// A second client secret, to take over when the current one is refused.
    pub next_client_secret: Option<SecretString>,
    pub password: Option<SecretString>,
    /// Replaces every override at once.
    pub limits: Option<LimitOverrides>,
    pub transport: Option<String>,
    pub save_to_sent_items: Option<bool>,
    pub credential: Option<String>,
    pub certificate_pem: Option<String>,
    pub private_key_pem: Option<SecretString>,
    pub cloud: Option<String>,
}

/// Seals and stores the secrets a create or update was given (client secret, next client
/// secret, password); absent ones stay as they are.
async fn store_secrets(
    conn: &mut store::Conn,
    keys: &KeyRing,
    (client_secret, next_client_secret, password): (
        &Option<SecretString>,
        &Option<SecretString>,
        &Option<SecretString>,
    ),
    owner: &str,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    for (field, secret) in [
        (secret_fields::CLIENT_SECRET, client_secret),
        (secret_fields::NEXT_CLIENT_SECRET, next_client_secret),
        (secret_fields::PASSWORD, password),
    ] {
        if let Some(secret) = secret {
            keys::put_secret(conn, keys, owner, field, secret, now).await?;
        }
    }
    Ok(())
}

/// A pasted client secret: one line, and its Value rather than its Secret ID.
fn check_secret(checks: &mut crate::services::Checks, field: &'static str, secret: &SecretString) {
    let text = secrecy::ExposeSecret::expose_secret(secret);
    if text.trim().is_empty() {
        checks.push(FieldError::new(
            field,
            "must not be empty: copy the client secret's Value",
        ));
    } else if crate::domain::mailbox::looks_like_secret_id(text) {
        checks.push(FieldError::new(
            field,
            "this looks like the Secret ID; paste the secret's Value (the other column in Certificates & secrets)",
        ));
    } else {
        resolve::single_line(checks, field, text, 1000);
    }
}

fn conflict_on_name(e: StoreError, name: &str) -> ServiceError {
    match e {
        StoreError::Conflict(_) => ServiceError::Conflict(FieldError::new(
            "name",
            format!("a mailbox named \"{name}\" already exists in this organization"),
        )),
        other => ServiceError::Store(other),
    }
}

fn audit_detail(mailbox: &Mailbox) -> serde_json::Value {
    serde_json::json!({
        "name": mailbox.name,
        "auth": mailbox.auth.as_str(),
        "provider": mailbox.provider.as_str(),
        "username": mailbox.username,
        "host": mailbox.host,
    })
}

/// Creates a mailbox, Not Verified until it is authorized or verified.
pub async fn create(
    access: &Access,
    policy: &Policy<'_>,
    org_id: OrgId,
    draft: MailboxDraft,
    actor: &Actor,
) -> ServiceResult<Mailbox> {
    let (store, keys, now) = (&access.store, &*access.keys, access.now());
    let mut draft = draft;
    recognize::recognize(&mut draft);
    let resolved = resolve::resolve(org_id, MailboxId::new(), draft, policy, (false, false), now)?;
    let mut mailbox = resolved.mailbox;
    let certificate = match resolved.new_certificate {
        Some(uploaded) => Some(uploaded),
        None if certificates::needs_certificate(&mailbox, false) => {
            Some(certificates::generate(&mailbox.name, &mailbox.username, now).await?)
        }
        None => None,
    };
    if let Some(pair) = &certificate {
        mailbox.certificate = Some(pair.certificate.clone());
        mailbox.status_reason = Some(certificates::upload_reason(&mailbox));
    }
    let mut tx = store.begin().await?;
    if mailbox.is_default {
        store::mailboxes::clear_default(&mut tx, org_id).await?;
    }
    store::mailboxes::insert(&mut tx, &mailbox)
        .await
        .map_err(|e| conflict_on_name(e, &mailbox.name))?;
    let owner = mailbox.id.to_string();
    let secrets = (
        &resolved.client_secret,
        &resolved.next_client_secret,
        &resolved.password,
    );
    store_secrets(&mut tx, keys, secrets, &owner, now).await?;
    if let Some(pair) = &certificate {
        certificates::store_key(
            &mut tx,
            access,
            &mailbox,
            secret_fields::CERTIFICATE_KEY,
            &pair.private_key,
        )
        .await?;
    }
    store::audit::record(
        &mut tx,
        &NewAuditEvent {
            org_id,
            actor: actor.clone(),
            action: "mailbox.create",
            target_kind: "mailbox",
            target_id: owner,
            detail: audit_detail(&mailbox),
        },
        now,
    )
    .await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(mailbox)
}

/// Deletes a mailbox and its sealed secrets.
pub async fn delete(
    access: &Access,
    org_id: OrgId,
    id: MailboxId,
    actor: &Actor,
) -> ServiceResult<()> {
    let (store, now) = (&access.store, access.now());
    let mut tx = store.begin().await?;
    let mailbox = store::mailboxes::get(&mut tx, org_id, id)
        .await?
        .ok_or(ServiceError::NotFound("mailbox"))?;
    let reason = StatusReason::new(
        "mailbox_deleted",
        format!(
            "The mailbox \"{}\" was deleted before this message was sent.",
            mailbox.name
        ),
        Some("Send the message again through another mailbox.".into()),
    );
    store::messages::fail_mailbox(&mut tx, id, &reason, now).await?;
    store::mailboxes::delete(&mut tx, org_id, id).await?;
    store::secrets::delete_owner(&mut tx, &id.to_string()).await?;
    // Its alerts have nothing left to act on.
    store::alerts::resolve_mailbox(&mut tx, id, now).await?;
    store::audit::record(
        &mut tx,
        &NewAuditEvent {
            org_id,
            actor: actor.clone(),
            action: "mailbox.delete",
            target_kind: "mailbox",
            target_id: id.to_string(),
            detail: audit_detail(&mailbox),
        },
        now,
    )
    .await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(())
}
