//! First-run setup tokens: while no user exists, one link lets the first visitor create the
//! first organization and its admin.

use sqlx::Row;
use time::OffsetDateTime;

use super::{Conn, StoreResult, to_db_time};

/// Replaces any unused token with a new one.
pub async fn replace(
    conn: &mut Conn,
    digest: &str,
    now: OffsetDateTime,
    expires_at: OffsetDateTime,
) -> StoreResult<()> {
    sqlx::query("DELETE FROM setup_tokens WHERE used_at IS NULL")
        .execute(&mut *conn)
        .await?;
    sqlx::query("INSERT INTO setup_tokens (digest, created_at, expires_at) VALUES ($1, $2, $3)")
        .bind(digest)
        .bind(to_db_time(now))
        .bind(to_db_time(expires_at))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Whether the token is unused and unexpired.
pub async fn is_valid(conn: &mut Conn, digest: &str, now: OffsetDateTime) -> StoreResult<bool> {
    let row = sqlx::query("SELECT COUNT(*) AS n FROM setup_tokens WHERE digest = $1 AND used_at IS NULL AND expires_at > $2")
        .bind(digest)
        .bind(to_db_time(now))
        .fetch_one(&mut *conn)
        .await?;
    Ok(row.try_get::<i64, _>("n")? == 1)
}

/// Marks the token used; answers false if it was not valid, so two visitors racing with the
/// same link cannot both succeed.
pub async fn consume(conn: &mut Conn, digest: &str, now: OffsetDateTime) -> StoreResult<bool> {
    let done = sqlx::query("UPDATE setup_tokens SET used_at = $1 WHERE digest = $2 AND used_at IS NULL AND expires_at > $1")
        .bind(to_db_time(now))
        .bind(digest)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() == 1)
}
