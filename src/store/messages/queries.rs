//! Reading messages: one by id, its body, a page of the organization's list under a
//! [`Filter`](super::Filter), and the counts by status.

use sqlx::Row;

use super::{BodyKind, COLUMNS, Filter, body_from_row, corrupt, from_row};
use crate::domain::OrgId;
use crate::domain::message::{Message, MessageStatus};
use crate::store::{Conn, Page, StoreResult, into_page};

/// A message of the organization.
pub async fn get(conn: &mut Conn, org_id: OrgId, id: &str) -> StoreResult<Option<Message>> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM messages WHERE id = $1 AND org_id = $2"
    )))
    .bind(id)
    .bind(org_id.to_string())
    .fetch_optional(&mut *conn)
    .await?
    .as_ref()
    .map(from_row)
    .transpose()
}

/// A message of any organization (for the operator's command line and the workers).
pub async fn get_any(conn: &mut Conn, id: &str) -> StoreResult<Option<Message>> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM messages WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .as_ref()
    .map(from_row)
    .transpose()
}

/// A message's body and how it is kept; `None` once purged.
pub async fn body(conn: &mut Conn, id: &str) -> StoreResult<Option<(BodyKind, Vec<u8>)>> {
    let row = sqlx::query("SELECT body_kind, body FROM messages WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref()
        .map(body_from_row)
        .transpose()
        .map(Option::flatten)
}

/// One page of the organization's messages, newest first.
pub async fn list(
    conn: &mut Conn,
    org_id: OrgId,
    filter: &Filter<'_>,
    before: Option<&str>,
    limit: usize,
) -> StoreResult<Page<Message>> {
    let mut sql = format!(
        "SELECT {COLUMNS} FROM messages WHERE org_id = $1 AND ($2 = '' OR id < $2) \
         AND ($3 = '' OR status = $3) AND ($4 = '' OR mailbox_id = $4) AND ($5 = '' OR api_key_id = $5)"
    );
    if let Some(allowed) = filter.mailboxes {
        // Ids are UUIDs: parsed, so safe to inline.
        let ids: Vec<String> = allowed.iter().map(|id| format!("'{id}'")).collect();
        if ids.is_empty() {
            sql.push_str(" AND 1 = 0");
        } else {
            sql.push_str(&format!(" AND mailbox_id IN ({})", ids.join(", ")));
        }
    }
    sql.push_str(" ORDER BY id DESC LIMIT $6");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(org_id.to_string())
        .bind(before.unwrap_or(""))
        .bind(filter.status.map(|s| s.as_str()).unwrap_or(""))
        .bind(filter.mailbox_id.map(|m| m.to_string()).unwrap_or_default())
        .bind(filter.api_key_id.unwrap_or(""))
        .bind((limit + 1) as i64)
        .fetch_all(&mut *conn)
        .await?;
    let items = rows.iter().map(from_row).collect::<StoreResult<Vec<_>>>()?;
    Ok(into_page(items, limit, |m| m.id.clone()))
}

/// Counts of the organization's messages by status (for the message log).
pub async fn counts(conn: &mut Conn, org_id: OrgId) -> StoreResult<Vec<(MessageStatus, i64)>> {
    let rows =
        sqlx::query("SELECT status, COUNT(*) AS n FROM messages WHERE org_id = $1 GROUP BY status")
            .bind(org_id.to_string())
            .fetch_all(&mut *conn)
            .await?;
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get::<String, _>("status")?
                    .parse()
                    .map_err(|e| corrupt("status", e))?,
                row.try_get::<i64, _>("n")?,
            ))
        })
        .collect()
}

/// The queue's depth: every organization's messages still to send, by status. Sent and
/// failed mail is not counted here (it only grows; the send counters tell it), so a scrape
/// reads the `messages_due` index, not the whole history.
pub async fn counts_all(conn: &mut Conn) -> StoreResult<Vec<(MessageStatus, i64)>> {
    let rows = sqlx::query(
        "SELECT status, COUNT(*) AS n FROM messages WHERE status IN ('queued', 'sending', 'held') GROUP BY status",
    )
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get::<String, _>("status")?
                    .parse()
                    .map_err(|e| corrupt("status", e))?,
                row.try_get::<i64, _>("n")?,
            ))
        })
        .collect()
}
