//! Running instances and their heartbeats.

use sqlx::Row;
use time::OffsetDateTime;

use super::{Conn, StoreResult, from_db_time, to_db_time};

/// How often a serving instance reports that it is alive.
pub const HEARTBEAT_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// An instance not heard from for this long is taken to be gone.
pub const HEARTBEAT_STALE: time::Duration = time::Duration::seconds(90);

/// A running `herald serve` as it last reported.
#[derive(Clone, Debug)]
pub struct Instance {
    pub id: String,
    pub hostname: String,
    pub pid: i64,
    pub heartbeat_at: OffsetDateTime,
}

/// Announces an instance. `scope` names where its `pid` is meaningful (boot id and pid
/// namespace); empty when unknown.
pub async fn register(
    conn: &mut Conn,
    id: &str,
    hostname: &str,
    pid: i64,
    scope: &str,
    now: OffsetDateTime,
) -> StoreResult<()> {
    sqlx::query("INSERT INTO instances (id, hostname, pid, started_at, heartbeat_at, scope) VALUES ($1, $2, $3, $4, $4, $5)")
        .bind(id)
        .bind(hostname)
        .bind(pid)
        .bind(to_db_time(now))
        .bind(scope)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub async fn heartbeat(conn: &mut Conn, id: &str, now: OffsetDateTime) -> StoreResult<()> {
    sqlx::query("UPDATE instances SET heartbeat_at = $1 WHERE id = $2")
        .bind(to_db_time(now))
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub async fn deregister(conn: &mut Conn, id: &str) -> StoreResult<()> {
    sqlx::query("DELETE FROM instances WHERE id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

fn from_row(r: &sqlx::any::AnyRow) -> StoreResult<Instance> {
    Ok(Instance {
        id: r.try_get("id")?,
        hostname: r.try_get("hostname")?,
        pid: r.try_get("pid")?,
        heartbeat_at: from_db_time(r.try_get("heartbeat_at")?)?,
    })
}

/// Instances heard from since `since`; older rows are forgotten.
pub async fn alive(conn: &mut Conn, since: OffsetDateTime) -> StoreResult<Vec<Instance>> {
    sqlx::query("DELETE FROM instances WHERE heartbeat_at < $1")
        .bind(to_db_time(since))
        .execute(&mut *conn)
        .await?;
    let rows =
        sqlx::query("SELECT id, hostname, pid, heartbeat_at FROM instances ORDER BY started_at")
            .fetch_all(&mut *conn)
            .await?;
    rows.iter().map(from_row).collect()
}

/// Every instance as it last reported, the latest heartbeat first; changes nothing (unlike
/// [`alive`], which forgets the silent ones).
pub async fn reported(conn: &mut Conn) -> StoreResult<Vec<Instance>> {
    let rows = sqlx::query(
        "SELECT id, hostname, pid, heartbeat_at FROM instances ORDER BY heartbeat_at DESC",
    )
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(from_row).collect()
}
