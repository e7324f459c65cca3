//! What the web pages and the API's lists read: one organization's users, keys, mailboxes,
//! messages, relay credentials, alerts and audit log, each query naming the organization, so
//! that no caller can read another's. Reads only: changes go through the other services, which
//! audit them.

use crate::domain::mailbox::Mailbox;
use crate::domain::message::{Message, MessageStatus};
use crate::domain::relay::RelayCredential;
use crate::domain::{ApiKey, ApiKeyId, AuditEvent, MailboxId, OrgId, Organization, User, UserId};
use crate::store;

use super::ServiceResult;

pub use crate::store::alerts::Alert;
pub use crate::store::attempts::{Attempt, AttemptStatus};
pub use crate::store::messages::Filter as MessageFilter;
/// The handle every read takes, and the error a failed one carries (inside `ServiceError`).
pub use crate::store::{Page, Store, StoreError};

/// The organization, if it still exists.
pub async fn organization(store: &Store, org_id: OrgId) -> ServiceResult<Option<Organization>> {
    let mut conn = store.conn().await?;
    Ok(store::orgs::get(&mut conn, org_id).await?)
}

/// A page of the organization's users, after the cursor `after`.
pub async fn users(
    store: &Store,
    org_id: OrgId,
    after: Option<&str>,
    limit: usize,
) -> ServiceResult<Page<User>> {
    let mut conn = store.conn().await?;
    Ok(store::users::list(&mut conn, org_id, after, limit).await?)
}

/// One user of the organization.
pub async fn user(store: &Store, org_id: OrgId, id: UserId) -> ServiceResult<Option<User>> {
    let mut conn = store.conn().await?;
    Ok(store::users::get(&mut conn, org_id, id).await?)
}

/// A page of the organization's API keys, revoked ones included.
pub async fn api_keys(
    store: &Store,
    org_id: OrgId,
    after: Option<&str>,
    limit: usize,
) -> ServiceResult<Page<ApiKey>> {
    let mut conn = store.conn().await?;
    Ok(store::api_keys::list(&mut conn, org_id, after, limit).await?)
}

/// One API key of the organization.
pub async fn api_key(store: &Store, org_id: OrgId, id: ApiKeyId) -> ServiceResult<Option<ApiKey>> {
    let mut conn = store.conn().await?;
    Ok(store::api_keys::get(&mut conn, org_id, id).await?)
}

/// A page of the organization's audit log, newest first, before the cursor `before`.
pub async fn audit_events(
    store: &Store,
    org_id: OrgId,
    before: Option<&str>,
    limit: usize,
) -> ServiceResult<Page<AuditEvent>> {
    let mut conn = store.conn().await?;
    Ok(store::audit::list(&mut conn, org_id, before, limit).await?)
}

/// A page of the organization's mailboxes.
pub async fn mailboxes(
    store: &Store,
    org_id: OrgId,
    after: Option<&str>,
    limit: usize,
) -> ServiceResult<Page<Mailbox>> {
    let mut conn = store.conn().await?;
    Ok(store::mailboxes::list(&mut conn, org_id, after, limit).await?)
}

/// One mailbox of the organization.
pub async fn mailbox(
    store: &Store,
    org_id: OrgId,
    id: MailboxId,
) -> ServiceResult<Option<Mailbox>> {
    let mut conn = store.conn().await?;
    Ok(store::mailboxes::get(&mut conn, org_id, id).await?)
}

/// The organization's mailbox with this id or name.
pub async fn find_mailbox(
    store: &Store,
    org_id: OrgId,
    id_or_name: &str,
) -> ServiceResult<Option<Mailbox>> {
    let mut conn = store.conn().await?;
    Ok(store::mailboxes::find(&mut conn, org_id, id_or_name).await?)
}

/// Which of a mailbox's secrets are stored (`client_secret`, `password`), never their values.
pub async fn has_secret(store: &Store, owner: &str, field: &str) -> ServiceResult<bool> {
    let mut conn = store.conn().await?;
    Ok(store::secrets::get(&mut conn, owner, field)
        .await?
        .is_some())
}

/// How many of the organization's messages are in each status.
pub async fn message_counts(
    store: &Store,
    org_id: OrgId,
) -> ServiceResult<Vec<(MessageStatus, i64)>> {
    let mut conn = store.conn().await?;
    Ok(store::messages::counts(&mut conn, org_id).await?)
}

/// How many messages of every organization are in each status (for the metrics).
pub async fn all_message_counts(store: &Store) -> ServiceResult<Vec<(MessageStatus, i64)>> {
    let mut conn = store.conn().await?;
    Ok(store::messages::counts_all(&mut conn).await?)
}

/// A page of the organization's messages, newest first, narrowed by `filter`.
pub async fn messages(
    store: &Store,
    org_id: OrgId,
    filter: &MessageFilter<'_>,
    before: Option<&str>,
    limit: usize,
) -> ServiceResult<Page<Message>> {
    let mut conn = store.conn().await?;
    Ok(store::messages::list(&mut conn, org_id, filter, before, limit).await?)
}

/// One message of the organization.
pub async fn message(store: &Store, org_id: OrgId, id: &str) -> ServiceResult<Option<Message>> {
    let mut conn = store.conn().await?;
    Ok(store::messages::get(&mut conn, org_id, id).await?)
}

/// A page of the organization's relay credentials.
pub async fn relay_credentials(
    store: &Store,
    org_id: OrgId,
    after: Option<&str>,
    limit: usize,
) -> ServiceResult<Page<RelayCredential>> {
    let mut conn = store.conn().await?;
    Ok(store::relay::list(&mut conn, org_id, after, limit).await?)
}

/// One relay credential of the organization.
pub async fn relay_credential(
    store: &Store,
    org_id: OrgId,
    id: &str,
) -> ServiceResult<Option<RelayCredential>> {
    let mut conn = store.conn().await?;
    Ok(store::relay::get(&mut conn, org_id, id).await?)
}

/// The organization's open alerts, newest first.
pub async fn open_alerts(store: &Store, org_id: OrgId) -> ServiceResult<Vec<Alert>> {
    let mut conn = store.conn().await?;
    Ok(store::alerts::open(&mut conn, org_id).await?)
}

/// The organization's last `limit` alerts, resolved and dismissed ones included.
pub async fn recent_alerts(store: &Store, org_id: OrgId, limit: i64) -> ServiceResult<Vec<Alert>> {
    let mut conn = store.conn().await?;
    Ok(store::alerts::recent(&mut conn, org_id, limit).await?)
}

/// Where the organization's alerts are posted, if anywhere.
pub async fn alert_webhook_url(store: &Store, org_id: OrgId) -> ServiceResult<Option<String>> {
    let mut conn = store.conn().await?;
    Ok(store::alerts::webhook_url(&mut conn, org_id).await?)
}
