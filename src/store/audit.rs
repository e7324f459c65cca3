//! The audit log, written in the same transaction as the change it records.

use sqlx::Row;
use sqlx::any::AnyRow;
use time::OffsetDateTime;

use super::{Conn, Page, StoreError, StoreResult, from_db_time, into_page, parse_id, to_db_time};
use crate::domain::{ActorKind, AuditEvent, AuditEventId, NewAuditEvent, OrgId};

pub async fn record(
    conn: &mut Conn,
    event: &NewAuditEvent,
    now: OffsetDateTime,
) -> StoreResult<AuditEventId> {
    let id = AuditEventId::new();
    sqlx::query(
        "INSERT INTO audit_events (id, org_id, actor_kind, actor_id, actor_label, source, action, target_kind, target_id, detail, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(id.to_string())
    .bind(event.org_id.to_string())
    .bind(event.actor.kind.as_str())
    .bind(event.actor.id.clone())
    .bind(&event.actor.label)
    .bind(&event.actor.source)
    .bind(event.action)
    .bind(event.target_kind)
    .bind(&event.target_id)
    .bind(event.detail.to_string())
    .bind(to_db_time(now))
    .execute(&mut *conn)
    .await?;
    Ok(id)
}

fn from_row(row: &AnyRow) -> StoreResult<AuditEvent> {
    let detail: String = row.try_get("detail")?;
    Ok(AuditEvent {
        id: parse_id(&row.try_get::<String, _>("id")?)?,
        org_id: parse_id(&row.try_get::<String, _>("org_id")?)?,
        actor_kind: ActorKind::parse(&row.try_get::<String, _>("actor_kind")?),
        actor_id: row.try_get("actor_id")?,
        actor_label: row.try_get("actor_label")?,
        source: row.try_get("source")?,
        action: row.try_get("action")?,
        target_kind: row.try_get("target_kind")?,
        target_id: row.try_get("target_id")?,
        detail: serde_json::from_str(&detail).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        at: from_db_time(row.try_get("created_at")?)?,
    })
}

/// One page of an organization's audit log, newest first.
pub async fn list(
    conn: &mut Conn,
    org_id: OrgId,
    before: Option<&str>,
    limit: usize,
) -> StoreResult<Page<AuditEvent>> {
    let rows = sqlx::query(
        "SELECT id, org_id, actor_kind, actor_id, actor_label, source, action, target_kind, target_id, detail, created_at \
         FROM audit_events WHERE org_id = $1 AND ($2 = '' OR id < $2) ORDER BY id DESC LIMIT $3",
    )
    .bind(org_id.to_string())
    .bind(before.unwrap_or(""))
    .bind((limit + 1) as i64)
    .fetch_all(&mut *conn)
    .await?;
    let events = rows.iter().map(from_row).collect::<StoreResult<Vec<_>>>()?;
    Ok(into_page(events, limit, |e| e.id.to_string()))
}
