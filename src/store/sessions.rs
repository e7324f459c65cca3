//! Web sessions: the cookie holds a random token, the table holds its digest.

use sqlx::Row;
use time::OffsetDateTime;

use super::{Conn, StoreResult, parse_id, to_db_time};
use crate::domain::UserId;

pub async fn insert(
    conn: &mut Conn,
    digest: &str,
    user_id: UserId,
    now: OffsetDateTime,
    expires_at: OffsetDateTime,
    client_addr: &str,
) -> StoreResult<()> {
    sqlx::query("INSERT INTO sessions (digest, user_id, created_at, expires_at, client_addr) VALUES ($1, $2, $3, $4, $5)")
        .bind(digest)
        .bind(user_id.to_string())
        .bind(to_db_time(now))
        .bind(to_db_time(expires_at))
        .bind(client_addr)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The user of an unexpired session.
pub async fn find_user(
    conn: &mut Conn,
    digest: &str,
    now: OffsetDateTime,
) -> StoreResult<Option<UserId>> {
    let row = sqlx::query("SELECT user_id FROM sessions WHERE digest = $1 AND expires_at > $2")
        .bind(digest)
        .bind(to_db_time(now))
        .fetch_optional(&mut *conn)
        .await?;
    row.map(|r| parse_id(&r.try_get::<String, _>("user_id")?))
        .transpose()
}

pub async fn delete(conn: &mut Conn, digest: &str) -> StoreResult<()> {
    sqlx::query("DELETE FROM sessions WHERE digest = $1")
        .bind(digest)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Signs a user out everywhere, e.g. after a password change.
pub async fn delete_for_user(conn: &mut Conn, user_id: UserId) -> StoreResult<()> {
    sqlx::query("DELETE FROM sessions WHERE user_id = $1")
        .bind(user_id.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub async fn delete_expired(conn: &mut Conn, now: OffsetDateTime) -> StoreResult<u64> {
    Ok(sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
        .bind(to_db_time(now))
        .execute(&mut *conn)
        .await?
        .rows_affected())
}
