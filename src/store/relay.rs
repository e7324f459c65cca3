//! Relay credentials. Passwords are kept as a SHA-256 digest: they are 190-bit random strings,
//! so a fast digest is as safe as a slow hash, and AUTH costs microseconds.

use sqlx::Row;
use sqlx::any::AnyRow;
use time::OffsetDateTime;

use super::{
    Conn, Page, StoreError, StoreResult, from_db_opt_time, from_db_time, into_page, parse_id,
    to_db_time,
};
use crate::domain::OrgId;
use crate::domain::relay::RelayCredential;

const COLUMNS: &str = "id, org_id, name, username, mailboxes, allowed_networks, from_policy, keep_reply_to, created_at, last_used_at, network_only";

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("relay credential {what}: {e}"))
}

fn from_row(row: &AnyRow) -> StoreResult<RelayCredential> {
    let mailboxes: String = row.try_get("mailboxes")?;
    let networks: String = row.try_get("allowed_networks")?;
    Ok(RelayCredential {
        id: row.try_get("id")?,
        org_id: parse_id(&row.try_get::<String, _>("org_id")?)?,
        name: row.try_get("name")?,
        username: row.try_get("username")?,
        mailboxes: serde_json::from_str(&mailboxes).map_err(|e| corrupt("mailboxes", e))?,
        allowed_networks: serde_json::from_str::<Vec<String>>(&networks)
            .map_err(|e| corrupt("allowed_networks", e))?
            .iter()
            .map(|n| n.parse().map_err(|e| corrupt("allowed_networks", e)))
            .collect::<StoreResult<_>>()?,
        from_policy: row
            .try_get::<String, _>("from_policy")?
            .parse()
            .map_err(|e| corrupt("from_policy", e))?,
        keep_reply_to: row.try_get::<i64, _>("keep_reply_to")? != 0,
        network_only: row.try_get::<i64, _>("network_only")? != 0,
        created_at: from_db_time(row.try_get("created_at")?)?,
        last_used_at: from_db_opt_time(row.try_get("last_used_at")?)?,
    })
}

pub async fn insert(conn: &mut Conn, c: &RelayCredential, digest: &str) -> StoreResult<()> {
    super::changes::announce(conn).await?;
    sqlx::query(
        "INSERT INTO relay_credentials (id, org_id, name, username, digest, mailboxes, allowed_networks, from_policy, \
         keep_reply_to, created_at, network_only) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&c.id)
    .bind(c.org_id.to_string())
    .bind(&c.name)
    .bind(&c.username)
    .bind(digest)
    .bind(serde_json::to_string(&c.mailboxes).unwrap_or_else(|_| "[]".into()))
    .bind(
        serde_json::to_string(
            &c.allowed_networks
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
        )
        .unwrap_or_else(|_| "[]".into()),
    )
    .bind(c.from_policy.as_str())
    .bind(i64::from(c.keep_reply_to))
    .bind(to_db_time(c.created_at))
    .bind(i64::from(c.network_only))
    .execute(&mut *conn)
    .await
    .map_err(|e| StoreError::unique(e, "username"))?;
    Ok(())
}

pub async fn get(conn: &mut Conn, org_id: OrgId, id: &str) -> StoreResult<Option<RelayCredential>> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM relay_credentials WHERE id = $1 AND org_id = $2"
    )))
    .bind(id)
    .bind(org_id.to_string())
    .fetch_optional(&mut *conn)
    .await?
    .as_ref()
    .map(from_row)
    .transpose()
}

/// One page of the organization's credentials, oldest first.
pub async fn list(
    conn: &mut Conn,
    org_id: OrgId,
    after: Option<&str>,
    limit: usize,
) -> StoreResult<Page<RelayCredential>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM relay_credentials WHERE org_id = $1 AND id > $2 ORDER BY id LIMIT $3"
    )))
    .bind(org_id.to_string())
    .bind(after.unwrap_or(""))
    .bind((limit + 1) as i64)
    .fetch_all(&mut *conn)
    .await?;
    let items = rows.iter().map(from_row).collect::<StoreResult<Vec<_>>>()?;
    Ok(into_page(items, limit, |c| c.id.clone()))
}

/// The credential with this username, with its password digest.
pub async fn find_by_username(
    conn: &mut Conn,
    username: &str,
) -> StoreResult<Option<(RelayCredential, String)>> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS}, digest FROM relay_credentials WHERE username = $1"
    )))
    .bind(username)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|row| Ok((from_row(&row)?, row.try_get::<String, _>("digest")?)))
        .transpose()
}

/// Every credential bound to networks alone (no password), of every organization: the relay
/// picks the one whose network holds a client that did not log in.
pub async fn network_only(conn: &mut Conn) -> StoreResult<Vec<RelayCredential>> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM relay_credentials WHERE network_only = 1 ORDER BY id"
    )))
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(from_row)
    .collect()
}

pub async fn delete(conn: &mut Conn, org_id: OrgId, id: &str) -> StoreResult<bool> {
    super::changes::announce(conn).await?;
    let done = sqlx::query("DELETE FROM relay_credentials WHERE id = $1 AND org_id = $2")
        .bind(id)
        .bind(org_id.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn touch(conn: &mut Conn, id: &str, now: OffsetDateTime) -> StoreResult<()> {
    sqlx::query("UPDATE relay_credentials SET last_used_at = $1 WHERE id = $2")
        .bind(to_db_time(now))
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
