//! Look-ups for the operator at the command line: organizations, mailboxes, messages and API
//! keys found by id or name across every organization, and whether a `herald serve` is running.
//!
//! The web layer never uses these: a web caller is confined to its organization, and looks
//! things up through the services that check it. The operator at the terminal is not.

use time::OffsetDateTime;

use crate::domain::mailbox::Mailbox;
use crate::domain::message::Message;
use crate::domain::{ApiKey, ApiKeyId, MailboxId, Organization};
use crate::services::ServiceResult;
use crate::store::instances::HEARTBEAT_STALE;
use crate::store::{self, Store};

/// Every organization, by id.
pub async fn orgs(store: &Store) -> ServiceResult<Vec<Organization>> {
    let mut conn = store.conn().await?;
    Ok(store::orgs::list(&mut conn).await?)
}

/// The organization with this id, else the one with this name (in any case).
pub async fn org(store: &Store, id_or_name: &str) -> ServiceResult<Option<Organization>> {
    let mut conn = store.conn().await?;
    Ok(store::orgs::find(&mut conn, id_or_name).await?)
}

/// The mailbox with this id, else every mailbox with this name: names repeat across
/// organizations.
pub async fn mailboxes(store: &Store, id_or_name: &str) -> ServiceResult<Vec<Mailbox>> {
    let mut conn = store.conn().await?;
    Ok(store::mailboxes::find_any(&mut conn, id_or_name).await?)
}

/// A mailbox as it is now, in whichever organization.
pub async fn mailbox(store: &Store, id: MailboxId) -> ServiceResult<Option<Mailbox>> {
    let mut conn = store.conn().await?;
    Ok(store::mailboxes::get_any(&mut conn, id).await?)
}

/// A message as it is now, in whichever organization.
pub async fn message(store: &Store, id: &str) -> ServiceResult<Option<Message>> {
    let mut conn = store.conn().await?;
    Ok(store::messages::get_any(&mut conn, id).await?)
}

/// An API key by id, in whichever organization.
pub async fn api_key(store: &Store, id: ApiKeyId) -> ServiceResult<Option<ApiKey>> {
    let mut conn = store.conn().await?;
    Ok(store::api_keys::get_any(&mut conn, id).await?)
}

/// Whether some `herald serve` has reported its heartbeat recently, so that it will deliver
/// what is queued.
pub async fn an_instance_is_serving(store: &Store, now: OffsetDateTime) -> ServiceResult<bool> {
    let mut conn = store.conn().await?;
    let alive = store::instances::alive(&mut conn, now - HEARTBEAT_STALE).await?;
    Ok(!alive.is_empty())
}
