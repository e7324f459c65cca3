//! Organizations.

use sqlx::Row;
use sqlx::any::AnyRow;
use time::OffsetDateTime;

use super::{Conn, StoreError, StoreResult, from_db_time, parse_id, to_db_time};
use crate::domain::{OrgId, OrgName, Organization};

fn from_row(row: &AnyRow) -> StoreResult<Organization> {
    Ok(Organization {
        id: parse_id(&row.try_get::<String, _>("id")?)?,
        name: row.try_get("name")?,
        created_at: from_db_time(row.try_get("created_at")?)?,
        no_mailbox_policy: row
            .try_get::<String, _>("no_mailbox_policy")?
            .parse()
            .map_err(StoreError::Corrupt)?,
        reply_to: row.try_get("reply_to")?,
        default_sender_allowed: row.try_get::<i64, _>("default_sender_allowed")? != 0,
    })
}

/// Creates an organization; names are unique regardless of case.
pub async fn insert(
    conn: &mut Conn,
    name: &OrgName,
    now: OffsetDateTime,
) -> StoreResult<Organization> {
    super::changes::announce(conn).await?;
    let org = Organization {
        id: OrgId::new(),
        name: name.as_str().to_owned(),
        created_at: now,
        no_mailbox_policy: crate::domain::message::NoMailboxPolicy::Fallback,
        reply_to: None,
        default_sender_allowed: false,
    };
    sqlx::query(
        "INSERT INTO organizations (id, name, name_key, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(org.id.to_string())
    .bind(&org.name)
    .bind(name.as_str().to_lowercase())
    .bind(to_db_time(now))
    .execute(&mut *conn)
    .await
    .map_err(|e| StoreError::unique(e, "name"))?;
    Ok(org)
}

pub async fn get(conn: &mut Conn, id: OrgId) -> StoreResult<Option<Organization>> {
    sqlx::query(
        "SELECT id, name, created_at, no_mailbox_policy, reply_to, default_sender_allowed FROM organizations WHERE id = $1",
    )
    .bind(id.to_string())
    .fetch_optional(&mut *conn)
    .await?
    .as_ref()
    .map(from_row)
    .transpose()
}

/// Finds an organization by id or, failing that, by name (case-insensitive).
pub async fn find(conn: &mut Conn, id_or_name: &str) -> StoreResult<Option<Organization>> {
    if let Ok(id) = id_or_name.trim().parse::<OrgId>()
        && let Some(org) = get(conn, id).await?
    {
        return Ok(Some(org));
    }
    sqlx::query("SELECT id, name, created_at, no_mailbox_policy, reply_to, default_sender_allowed FROM organizations WHERE name_key = $1")
        .bind(id_or_name.trim().to_lowercase())
        .fetch_optional(&mut *conn)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

pub async fn list(conn: &mut Conn) -> StoreResult<Vec<Organization>> {
    sqlx::query(
        "SELECT id, name, created_at, no_mailbox_policy, reply_to, default_sender_allowed FROM organizations ORDER BY id",
    )
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(from_row)
    .collect()
}

/// Serializes changes to one organization's users until the transaction ends: on PostgreSQL it
/// locks the organization's row; SQLite's write transactions are serial already.
pub async fn lock(conn: &mut Conn, backend: super::Backend, id: OrgId) -> StoreResult<()> {
    if backend == super::Backend::Postgres {
        sqlx::query("SELECT id FROM organizations WHERE id = $1 FOR UPDATE")
            .bind(id.to_string())
            .fetch_optional(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Writes the organization's sending settings.
pub async fn set_settings(conn: &mut Conn, org: &Organization) -> StoreResult<()> {
    super::changes::announce(conn).await?;
    sqlx::query("UPDATE organizations SET no_mailbox_policy = $1, reply_to = $2 WHERE id = $3")
        .bind(org.no_mailbox_policy.as_str())
        .bind(org.reply_to.clone())
        .bind(org.id.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Allows or denies the installation's default sender for one organization.
pub async fn set_default_sender_allowed(
    conn: &mut Conn,
    id: OrgId,
    allowed: bool,
) -> StoreResult<()> {
    super::changes::announce(conn).await?;
    sqlx::query("UPDATE organizations SET default_sender_allowed = $1 WHERE id = $2")
        .bind(i64::from(allowed))
        .bind(id.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(())
}
