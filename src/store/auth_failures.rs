//! Failed logins, counted by key (`signin:account:…`, `signin:address:…`,
//! `relay:address:…`) over a sliding window, shared by every instance on the database.

use sqlx::Row;

use super::{Conn, StoreResult};

/// Records a failure; answers its id (to take it back).
pub async fn record(conn: &mut Conn, key: &str, at: i64) -> StoreResult<String> {
    let id = uuid::Uuid::now_v7().to_string();
    sqlx::query("INSERT INTO auth_failures (id, scope_key, at) VALUES ($1, $2, $3)")
        .bind(&id)
        .bind(key)
        .bind(at)
        .execute(&mut *conn)
        .await?;
    Ok(id)
}

/// How many failures the key has since `since`, and the oldest of them.
pub async fn count(conn: &mut Conn, key: &str, since: i64) -> StoreResult<(i64, Option<i64>)> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS n, MIN(at) AS oldest FROM auth_failures WHERE scope_key = $1 AND at > $2",
    )
    .bind(key)
    .bind(since)
    .fetch_one(&mut *conn)
    .await?;
    Ok((row.try_get("n")?, row.try_get("oldest")?))
}

/// Takes one failure back.
pub async fn forget(conn: &mut Conn, id: &str) -> StoreResult<()> {
    sqlx::query("DELETE FROM auth_failures WHERE id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Forgets every failure of the key (a successful sign-in forgives its account's).
pub async fn forget_key(conn: &mut Conn, key: &str) -> StoreResult<()> {
    sqlx::query("DELETE FROM auth_failures WHERE scope_key = $1")
        .bind(key)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Forgets failures older than `before` (housekeeping).
pub async fn purge(conn: &mut Conn, before: i64) -> StoreResult<u64> {
    Ok(sqlx::query("DELETE FROM auth_failures WHERE at <= $1")
        .bind(before)
        .execute(&mut *conn)
        .await?
        .rows_affected())
}
