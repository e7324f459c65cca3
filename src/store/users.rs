//! Users and their password hashes.

use sqlx::Row;
use sqlx::any::AnyRow;
use time::OffsetDateTime;

use super::{Conn, Page, StoreError, StoreResult, from_db_time, into_page, parse_id, to_db_time};
use crate::domain::{EmailAddress, OrgId, User, UserId, UserRole};

/// `SELECT <user columns> FROM users <rest>` as one static string.
macro_rules! select_users {
    ($rest:literal) => {
        concat!(
            "SELECT id, org_id, email, role, created_at, updated_at FROM users ",
            $rest
        )
    };
}

fn from_row(row: &AnyRow) -> StoreResult<User> {
    let role: String = row.try_get("role")?;
    Ok(User {
        id: parse_id(&row.try_get::<String, _>("id")?)?,
        org_id: parse_id(&row.try_get::<String, _>("org_id")?)?,
        email: row.try_get("email")?,
        role: UserRole::parse(&role).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        created_at: from_db_time(row.try_get("created_at")?)?,
        updated_at: from_db_time(row.try_get("updated_at")?)?,
    })
}

/// Creates a user. Emails are unique across the installation (sign-in asks for no
/// organization), regardless of case.
pub async fn insert(
    conn: &mut Conn,
    org_id: OrgId,
    email: &EmailAddress,
    password_hash: &str,
    role: UserRole,
    now: OffsetDateTime,
) -> StoreResult<User> {
    let user = User {
        id: UserId::new(),
        org_id,
        email: email.as_str().to_owned(),
        role,
        created_at: now,
        updated_at: now,
    };
    sqlx::query(
        "INSERT INTO users (id, org_id, email, email_key, password_hash, role, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
    )
    .bind(user.id.to_string())
    .bind(org_id.to_string())
    .bind(&user.email)
    .bind(email.login_key())
    .bind(password_hash)
    .bind(role.as_str())
    .bind(to_db_time(now))
    .execute(&mut *conn)
    .await
    .map_err(|e| StoreError::unique(e, "email"))?;
    Ok(user)
}

/// A user of the given organization; another organization's user is not found.
pub async fn get(conn: &mut Conn, org_id: OrgId, id: UserId) -> StoreResult<Option<User>> {
    sqlx::query(select_users!("WHERE id = $1 AND org_id = $2"))
        .bind(id.to_string())
        .bind(org_id.to_string())
        .fetch_optional(&mut *conn)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// The user signing in with `email`, with their password hash.
pub async fn find_for_login(
    conn: &mut Conn,
    email: &EmailAddress,
) -> StoreResult<Option<(User, String)>> {
    let row = sqlx::query(concat!(
        "SELECT id, org_id, email, role, created_at, updated_at, password_hash FROM users ",
        "WHERE email_key = $1"
    ))
    .bind(email.login_key())
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        Some(row) => Ok(Some((from_row(&row)?, row.try_get("password_hash")?))),
        None => Ok(None),
    }
}

/// Any user by id, whatever the organization: for resolving a session.
pub async fn get_any(conn: &mut Conn, id: UserId) -> StoreResult<Option<User>> {
    sqlx::query(select_users!("WHERE id = $1"))
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// One page of an organization's users, oldest first.
pub async fn list(
    conn: &mut Conn,
    org_id: OrgId,
    after: Option<&str>,
    limit: usize,
) -> StoreResult<Page<User>> {
    let rows = sqlx::query(select_users!(
        "WHERE org_id = $1 AND id > $2 ORDER BY id LIMIT $3"
    ))
    .bind(org_id.to_string())
    .bind(after.unwrap_or(""))
    .bind((limit + 1) as i64)
    .fetch_all(&mut *conn)
    .await?;
    let users = rows.iter().map(from_row).collect::<StoreResult<Vec<_>>>()?;
    Ok(into_page(users, limit, |u| u.id.to_string()))
}

pub async fn count_all(conn: &mut Conn) -> StoreResult<i64> {
    Ok(sqlx::query("SELECT COUNT(*) AS n FROM users")
        .fetch_one(&mut *conn)
        .await?
        .try_get("n")?)
}

pub async fn count_admins(conn: &mut Conn, org_id: OrgId) -> StoreResult<i64> {
    Ok(
        sqlx::query("SELECT COUNT(*) AS n FROM users WHERE org_id = $1 AND role = 'admin'")
            .bind(org_id.to_string())
            .fetch_one(&mut *conn)
            .await?
            .try_get("n")?,
    )
}

pub async fn set_role(
    conn: &mut Conn,
    org_id: OrgId,
    id: UserId,
    role: UserRole,
    now: OffsetDateTime,
) -> StoreResult<bool> {
    let done =
        sqlx::query("UPDATE users SET role = $1, updated_at = $2 WHERE id = $3 AND org_id = $4")
            .bind(role.as_str())
            .bind(to_db_time(now))
            .bind(id.to_string())
            .bind(org_id.to_string())
            .execute(&mut *conn)
            .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn set_password_hash(
    conn: &mut Conn,
    org_id: OrgId,
    id: UserId,
    hash: &str,
    now: OffsetDateTime,
) -> StoreResult<bool> {
    let done = sqlx::query(
        "UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3 AND org_id = $4",
    )
    .bind(hash)
    .bind(to_db_time(now))
    .bind(id.to_string())
    .bind(org_id.to_string())
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Deletes a user and, through the foreign key, their sessions.
pub async fn delete(conn: &mut Conn, org_id: OrgId, id: UserId) -> StoreResult<bool> {
    let done = sqlx::query("DELETE FROM users WHERE id = $1 AND org_id = $2")
        .bind(id.to_string())
        .bind(org_id.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() == 1)
}
