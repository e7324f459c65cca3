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

/// An attempt recorded under its keys before its outcome was known (see [`reserve`]): the
/// ids to take back on success.
#[derive(Debug)]
#[must_use = "a reservation is taken back on success, or simply kept as a failure"]
pub struct Reservation {
    pub ids: Vec<String>,
}

/// The key of a refused reservation that reached its limit (its index among the keys given),
/// and the oldest attempt counted against it.
#[derive(Debug, PartialEq, Eq)]
pub struct Exceeded {
    pub key: usize,
    pub oldest: Option<i64>,
}

/// Records an attempt under every key *before* its outcome is known, then counts what every
/// instance recorded since `since`. Counting after recording is what bounds a burst: of any
/// number of parallel attempts, the k-th to be recorded sees at least k, so no more than a
/// key's limit ever pass its count (checking first and recording after lets them all through).
/// A refused attempt is taken back at once, so it does not hold the window open.
pub async fn reserve(
    conn: &mut Conn,
    keys: &[(&str, i64)],
    now: i64,
    since: i64,
) -> StoreResult<Result<Reservation, Exceeded>> {
    let mut ids = Vec::with_capacity(keys.len());
    for (key, _) in keys {
        ids.push(record(conn, key, now).await?);
    }
    for (index, (key, limit)) in keys.iter().enumerate() {
        let (n, oldest) = count(conn, key, since).await?;
        if n > *limit {
            for id in &ids {
                forget(conn, id).await?;
            }
            return Ok(Err(Exceeded { key: index, oldest }));
        }
    }
    Ok(Ok(Reservation { ids }))
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
