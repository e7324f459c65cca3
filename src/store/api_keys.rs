//! API keys: stored as a SHA-256 digest plus a short display prefix, never the key itself.

use sqlx::Row;
use sqlx::any::AnyRow;
use time::OffsetDateTime;

use super::{
    Conn, Page, StoreError, StoreResult, from_db_opt_time, from_db_time, into_page, parse_id,
    to_db_time,
};
use crate::domain::{ApiKey, ApiKeyId, ApiKeyName, ApiKeyToken, KeyRole, OrgId};

macro_rules! select_keys {
    ($rest:literal) => {
        concat!(
            "SELECT id, org_id, name, role, prefix, created_at, last_used_at, revoked_at FROM api_keys ",
            $rest
        )
    };
}

fn from_row(row: &AnyRow) -> StoreResult<ApiKey> {
    let role: String = row.try_get("role")?;
    Ok(ApiKey {
        id: parse_id(&row.try_get::<String, _>("id")?)?,
        org_id: parse_id(&row.try_get::<String, _>("org_id")?)?,
        name: row.try_get("name")?,
        role: KeyRole::parse(&role).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        prefix: row.try_get("prefix")?,
        created_at: from_db_time(row.try_get("created_at")?)?,
        last_used_at: from_db_opt_time(row.try_get("last_used_at")?)?,
        revoked_at: from_db_opt_time(row.try_get("revoked_at")?)?,
    })
}

/// Stores a new key's digest and prefix.
pub async fn insert(
    conn: &mut Conn,
    org_id: OrgId,
    name: &ApiKeyName,
    role: KeyRole,
    token: &ApiKeyToken,
    now: OffsetDateTime,
) -> StoreResult<ApiKey> {
    super::changes::announce(conn).await?;
    let key = ApiKey {
        id: ApiKeyId::new(),
        org_id,
        name: name.as_str().to_owned(),
        role,
        prefix: token.display_prefix(),
        created_at: now,
        last_used_at: None,
        revoked_at: None,
    };
    sqlx::query(
        "INSERT INTO api_keys (id, org_id, name, role, prefix, digest, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(key.id.to_string())
    .bind(org_id.to_string())
    .bind(&key.name)
    .bind(role.as_str())
    .bind(&key.prefix)
    .bind(crate::crypto::token_digest(token.expose()))
    .bind(to_db_time(now))
    .execute(&mut *conn)
    .await?;
    Ok(key)
}

/// The live (not revoked) key with this token's digest.
pub async fn find_live_by_token(
    conn: &mut Conn,
    token: &ApiKeyToken,
) -> StoreResult<Option<ApiKey>> {
    sqlx::query(select_keys!("WHERE digest = $1 AND revoked_at IS NULL"))
        .bind(crate::crypto::token_digest(token.expose()))
        .fetch_optional(&mut *conn)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

pub async fn get(conn: &mut Conn, org_id: OrgId, id: ApiKeyId) -> StoreResult<Option<ApiKey>> {
    sqlx::query(select_keys!("WHERE id = $1 AND org_id = $2"))
        .bind(id.to_string())
        .bind(org_id.to_string())
        .fetch_optional(&mut *conn)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// Any key by id, whatever the organization: for the operator's CLI.
pub async fn get_any(conn: &mut Conn, id: ApiKeyId) -> StoreResult<Option<ApiKey>> {
    sqlx::query(select_keys!("WHERE id = $1"))
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// One page of an organization's keys, revoked ones included, oldest first.
pub async fn list(
    conn: &mut Conn,
    org_id: OrgId,
    after: Option<&str>,
    limit: usize,
) -> StoreResult<Page<ApiKey>> {
    let rows = sqlx::query(select_keys!(
        "WHERE org_id = $1 AND id > $2 ORDER BY id LIMIT $3"
    ))
    .bind(org_id.to_string())
    .bind(after.unwrap_or(""))
    .bind((limit + 1) as i64)
    .fetch_all(&mut *conn)
    .await?;
    let keys = rows.iter().map(from_row).collect::<StoreResult<Vec<_>>>()?;
    Ok(into_page(keys, limit, |k| k.id.to_string()))
}

/// Revokes a key; answers false when it is not the organization's or already revoked.
pub async fn revoke(
    conn: &mut Conn,
    org_id: OrgId,
    id: ApiKeyId,
    now: OffsetDateTime,
) -> StoreResult<bool> {
    super::changes::announce(conn).await?;
    let done = sqlx::query(
        "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND org_id = $3 AND revoked_at IS NULL",
    )
    .bind(to_db_time(now))
    .bind(id.to_string())
    .bind(org_id.to_string())
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records use, at most once a minute per key so that reads do not turn into writes.
pub async fn touch(conn: &mut Conn, id: ApiKeyId, now: OffsetDateTime) -> StoreResult<()> {
    let now = to_db_time(now);
    sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $3)")
        .bind(now)
        .bind(id.to_string())
        .bind(now - 60)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Limits a key to these mailboxes.
pub async fn limit_to(
    conn: &mut Conn,
    key_id: ApiKeyId,
    mailboxes: &[crate::domain::MailboxId],
) -> StoreResult<()> {
    super::changes::announce(conn).await?;
    sqlx::query("UPDATE api_keys SET mailbox_limited = 1 WHERE id = $1")
        .bind(key_id.to_string())
        .execute(&mut *conn)
        .await?;
    for mailbox in mailboxes {
        sqlx::query("INSERT INTO api_key_mailboxes (api_key_id, mailbox_id) VALUES ($1, $2)")
            .bind(key_id.to_string())
            .bind(mailbox.to_string())
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// The mailboxes a key is limited to, or `None` when it may use all of its organization's. A
/// limited key whose mailboxes were all deleted may use none.
pub async fn mailbox_limits(
    conn: &mut Conn,
    key_id: ApiKeyId,
) -> StoreResult<Option<Vec<crate::domain::MailboxId>>> {
    let limited: Option<i64> =
        sqlx::query_scalar("SELECT mailbox_limited FROM api_keys WHERE id = $1")
            .bind(key_id.to_string())
            .fetch_optional(&mut *conn)
            .await?;
    if limited.unwrap_or(0) == 0 {
        return Ok(None);
    }
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT mailbox_id FROM api_key_mailboxes WHERE api_key_id = $1 ORDER BY mailbox_id",
    )
    .bind(key_id.to_string())
    .fetch_all(&mut *conn)
    .await?;
    ids.iter()
        .map(|id| parse_id(id))
        .collect::<StoreResult<Vec<_>>>()
        .map(Some)
}
