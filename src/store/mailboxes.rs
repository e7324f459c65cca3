//! Mailboxes. Secrets are not here: they are sealed in `secrets` under the mailbox's id.

use sqlx::Row;
use sqlx::any::AnyRow;
use time::OffsetDateTime;

use super::{
    Conn, Page, StoreError, StoreResult, from_db_opt_time, from_db_time, into_page, parse_id,
    to_db_time,
};
use crate::domain::mailbox::{CertificateInfo, ClientAuth, Mailbox, StatusReason};
use crate::domain::{MailboxId, OrgId};

macro_rules! select_mailboxes {
    ($rest:literal) => {
        concat!(
            "SELECT id, org_id, name, auth, provider, tenant, host, port, security, username, from_name, sign_in_account, \
             reply_to, signature, is_default, authorization_url, token_url, client_id, client_auth, scopes, issuer, \
             client_secret_expires_at, status, status_reason, verified_at, token_expires_at, created_at, updated_at, limits, \
             iss_required, transport, graph_url, save_to_sent_items, credential, certificate, next_certificate, cloud, client_secret_expiry_source FROM mailboxes ",
            $rest
        )
    };
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("mailbox {what}: {e}"))
}

fn from_row(row: &AnyRow) -> StoreResult<Mailbox> {
    let text = |name: &str| row.try_get::<String, _>(name);
    let parse = |name: &str| -> StoreResult<String> { Ok(text(name)?) };
    let date_format = time::macros::format_description!("[year]-[month]-[day]");
    let reason: Option<String> = row.try_get("status_reason")?;
    let scopes: String = row.try_get("scopes")?;
    let port: i64 = row.try_get("port")?;
    Ok(Mailbox {
        id: parse_id(&parse("id")?)?,
        org_id: parse_id(&parse("org_id")?)?,
        name: parse("name")?,
        auth: parse("auth")?.parse().map_err(|e| corrupt("auth", e))?,
        provider: parse("provider")?
            .parse()
            .map_err(|e| corrupt("provider", e))?,
        tenant: row.try_get("tenant")?,
        host: parse("host")?,
        port: u16::try_from(port).map_err(|e| corrupt("port", e))?,
        security: parse("security")?
            .parse()
            .map_err(|e| corrupt("security", e))?,
        username: parse("username")?,
        from_name: row.try_get("from_name")?,
        sign_in_account: parse("sign_in_account")?,
        reply_to: row.try_get("reply_to")?,
        signature: row.try_get("signature")?,
        is_default: row.try_get::<i64, _>("is_default")? != 0,
        authorization_url: row.try_get("authorization_url")?,
        token_url: row.try_get("token_url")?,
        client_id: row.try_get("client_id")?,
        client_auth: ClientAuth::parse_field(&parse("client_auth")?)
            .map_err(|e| corrupt("client_auth", e))?,
        scopes: scopes.split_whitespace().map(str::to_owned).collect(),
        issuer: row.try_get("issuer")?,
        iss_required: row.try_get::<i64, _>("iss_required")? != 0,
        client_secret_expires_at: row
            .try_get::<Option<String>, _>("client_secret_expires_at")?
            .map(|d| {
                time::Date::parse(&d, &date_format)
                    .map_err(|e| corrupt("client_secret_expires_at", e))
            })
            .transpose()?,
        status: parse("status")?.parse().map_err(|e| corrupt("status", e))?,
        status_reason: reason
            .map(|r| {
                serde_json::from_str::<StatusReason>(&r).map_err(|e| corrupt("status_reason", e))
            })
            .transpose()?,
        verified_at: from_db_opt_time(row.try_get("verified_at")?)?,
        token_expires_at: from_db_opt_time(row.try_get("token_expires_at")?)?,
        created_at: from_db_time(row.try_get("created_at")?)?,
        updated_at: from_db_time(row.try_get("updated_at")?)?,
        limits: serde_json::from_str(&parse("limits")?).map_err(|e| corrupt("limits", e))?,
        transport: parse("transport")?
            .parse()
            .map_err(|e| corrupt("transport", e))?,
        graph_url: row.try_get("graph_url")?,
        save_to_sent_items: row.try_get::<i64, _>("save_to_sent_items")? != 0,
        credential: parse("credential")?
            .parse()
            .map_err(|e| corrupt("credential", e))?,
        certificate: certificate_of(row, "certificate")?,
        next_certificate: certificate_of(row, "next_certificate")?,
        cloud: parse("cloud")?.parse().map_err(|e| corrupt("cloud", e))?,
        client_secret_expiry_source: parse("client_secret_expiry_source")?
            .parse()
            .map_err(|e| corrupt("client_secret_expiry_source", e))?,
    })
}

fn certificate_of(row: &AnyRow, column: &str) -> StoreResult<Option<CertificateInfo>> {
    row.try_get::<Option<String>, _>(column)?
        .map(|json| serde_json::from_str(&json).map_err(|e| corrupt(column, e)))
        .transpose()
}

fn certificate_json(certificate: &Option<CertificateInfo>) -> Option<String> {
    certificate
        .as_ref()
        .map(|c| serde_json::to_string(c).unwrap_or_default())
}

fn reason_json(mailbox: &Mailbox) -> Option<String> {
    mailbox
        .status_reason
        .as_ref()
        .map(|r| serde_json::to_string(r).unwrap_or_default())
}

fn limits_json(mailbox: &Mailbox) -> String {
    serde_json::to_string(&mailbox.limits).unwrap_or_else(|_| "{}".into())
}

pub async fn insert(conn: &mut Conn, m: &Mailbox) -> StoreResult<()> {
    super::changes::announce(conn).await?;
    sqlx::query(
        "INSERT INTO mailboxes (id, org_id, name, name_key, auth, provider, tenant, host, port, security, username, from_name, \
         sign_in_account, reply_to, signature, is_default, authorization_url, token_url, client_id, client_auth, scopes, issuer, \
         client_secret_expires_at, status, status_reason, verified_at, token_expires_at, created_at, updated_at, limits, \
         transport, graph_url, save_to_sent_items, credential, certificate, next_certificate, cloud, client_secret_expiry_source) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, \
         $31, $32, $33, $34, $35, $36, $37, $38)",
    )
    .bind(m.id.to_string())
    .bind(m.org_id.to_string())
    .bind(&m.name)
    .bind(m.name.to_lowercase())
    .bind(m.auth.as_str())
    .bind(m.provider.as_str())
    .bind(m.tenant.clone())
    .bind(&m.host)
    .bind(i64::from(m.port))
    .bind(m.security.as_str())
    .bind(&m.username)
    .bind(m.from_name.clone())
    .bind(&m.sign_in_account)
    .bind(m.reply_to.clone())
    .bind(m.signature.clone())
    .bind(i64::from(m.is_default))
    .bind(m.authorization_url.clone())
    .bind(m.token_url.clone())
    .bind(m.client_id.clone())
    .bind(m.client_auth.as_str())
    .bind(m.scopes.join(" "))
    .bind(m.issuer.clone())
    .bind(m.client_secret_expires_at.map(|d| d.to_string()))
    .bind(m.status.as_str())
    .bind(reason_json(m))
    .bind(m.verified_at.map(to_db_time))
    .bind(m.token_expires_at.map(to_db_time))
    .bind(to_db_time(m.created_at))
    .bind(to_db_time(m.updated_at))
    .bind(limits_json(m))
    .bind(m.transport.as_str())
    .bind(m.graph_url.clone())
    .bind(i64::from(m.save_to_sent_items))
    .bind(m.credential.as_str())
    .bind(certificate_json(&m.certificate))
    .bind(certificate_json(&m.next_certificate))
    .bind(m.cloud.as_str())
    .bind(m.client_secret_expiry_source.as_str())
    .execute(&mut *conn)
    .await
    .map_err(|e| StoreError::unique(e, "name"))?;
    Ok(())
}

/// Rewrites every column of a mailbox (of its organization).
pub async fn update(conn: &mut Conn, m: &Mailbox) -> StoreResult<()> {
    super::changes::announce(conn).await?;
    sqlx::query(
        "UPDATE mailboxes SET name = $3, name_key = $4, auth = $5, provider = $6, tenant = $7, host = $8, port = $9, security = $10, \
         username = $11, from_name = $12, sign_in_account = $13, reply_to = $14, signature = $15, is_default = $16, \
         authorization_url = $17, token_url = $18, client_id = $19, client_auth = $20, scopes = $21, issuer = $22, \
         client_secret_expires_at = $23, status = $24, status_reason = $25, verified_at = $26, token_expires_at = $27, updated_at = $28, limits = $29, \
         iss_required = $30, transport = $31, graph_url = $32, save_to_sent_items = $33, credential = $34, \
         certificate = $35, next_certificate = $36, cloud = $37, client_secret_expiry_source = $38 \
         WHERE id = $1 AND org_id = $2",
    )
    .bind(m.id.to_string())
    .bind(m.org_id.to_string())
    .bind(&m.name)
    .bind(m.name.to_lowercase())
    .bind(m.auth.as_str())
    .bind(m.provider.as_str())
    .bind(m.tenant.clone())
    .bind(&m.host)
    .bind(i64::from(m.port))
    .bind(m.security.as_str())
    .bind(&m.username)
    .bind(m.from_name.clone())
    .bind(&m.sign_in_account)
    .bind(m.reply_to.clone())
    .bind(m.signature.clone())
    .bind(i64::from(m.is_default))
    .bind(m.authorization_url.clone())
    .bind(m.token_url.clone())
    .bind(m.client_id.clone())
    .bind(m.client_auth.as_str())
    .bind(m.scopes.join(" "))
    .bind(m.issuer.clone())
    .bind(m.client_secret_expires_at.map(|d| d.to_string()))
    .bind(m.status.as_str())
    .bind(reason_json(m))
    .bind(m.verified_at.map(to_db_time))
    .bind(m.token_expires_at.map(to_db_time))
    .bind(to_db_time(m.updated_at))
    .bind(limits_json(m))
    .bind(i64::from(m.iss_required))
    .bind(m.transport.as_str())
    .bind(m.graph_url.clone())
    .bind(i64::from(m.save_to_sent_items))
    .bind(m.credential.as_str())
    .bind(certificate_json(&m.certificate))
    .bind(certificate_json(&m.next_certificate))
    .bind(m.cloud.as_str())
    .bind(m.client_secret_expiry_source.as_str())
    .execute(&mut *conn)
    .await
    .map_err(|e| StoreError::unique(e, "name"))?;
    Ok(())
}

/// A mailbox of the organization; another organization's is not found.
pub async fn get(conn: &mut Conn, org_id: OrgId, id: MailboxId) -> StoreResult<Option<Mailbox>> {
    sqlx::query(select_mailboxes!("WHERE id = $1 AND org_id = $2"))
        .bind(id.to_string())
        .bind(org_id.to_string())
        .fetch_optional(&mut *conn)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// A mailbox of the organization by id or (case-insensitive) name.
pub async fn find(
    conn: &mut Conn,
    org_id: OrgId,
    id_or_name: &str,
) -> StoreResult<Option<Mailbox>> {
    if let Ok(id) = id_or_name.trim().parse::<MailboxId>()
        && let Some(m) = get(conn, org_id, id).await?
    {
        return Ok(Some(m));
    }
    sqlx::query(select_mailboxes!("WHERE org_id = $1 AND name_key = $2"))
        .bind(org_id.to_string())
        .bind(id_or_name.trim().to_lowercase())
        .fetch_optional(&mut *conn)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// One page of an organization's mailboxes, oldest first.
pub async fn list(
    conn: &mut Conn,
    org_id: OrgId,
    after: Option<&str>,
    limit: usize,
) -> StoreResult<Page<Mailbox>> {
    let rows = sqlx::query(select_mailboxes!(
        "WHERE org_id = $1 AND id > $2 ORDER BY id LIMIT $3"
    ))
    .bind(org_id.to_string())
    .bind(after.unwrap_or(""))
    .bind((limit + 1) as i64)
    .fetch_all(&mut *conn)
    .await?;
    let items = rows.iter().map(from_row).collect::<StoreResult<Vec<_>>>()?;
    Ok(into_page(items, limit, |m| m.id.to_string()))
}

/// Makes no mailbox of the organization its default.
pub async fn clear_default(conn: &mut Conn, org_id: OrgId) -> StoreResult<()> {
    super::changes::announce(conn).await?;
    sqlx::query("UPDATE mailboxes SET is_default = 0 WHERE org_id = $1 AND is_default = 1")
        .bind(org_id.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub async fn delete(conn: &mut Conn, org_id: OrgId, id: MailboxId) -> StoreResult<bool> {
    super::changes::announce(conn).await?;
    let done = sqlx::query("DELETE FROM mailboxes WHERE id = $1 AND org_id = $2")
        .bind(id.to_string())
        .bind(org_id.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Writes a mailbox's status, reason and verification time.
pub async fn set_status(conn: &mut Conn, m: &Mailbox, now: OffsetDateTime) -> StoreResult<()> {
    super::changes::announce(conn).await?;
    sqlx::query("UPDATE mailboxes SET status = $1, status_reason = $2, verified_at = $3, updated_at = $4 WHERE id = $5 AND org_id = $6")
        .bind(m.status.as_str())
        .bind(reason_json(m))
        .bind(m.verified_at.map(to_db_time))
        .bind(to_db_time(now))
        .bind(m.id.to_string())
        .bind(m.org_id.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Writes the access token's expiry.
pub async fn set_tokens(conn: &mut Conn, m: &Mailbox) -> StoreResult<()> {
    super::changes::announce(conn).await?;
    sqlx::query("UPDATE mailboxes SET token_expires_at = $1 WHERE id = $2 AND org_id = $3")
        .bind(m.token_expires_at.map(to_db_time))
        .bind(m.id.to_string())
        .bind(m.org_id.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Records what the authorization server's discovery document says, if the mailbox still has
/// the authorization URL and issuer it was read for (a PATCH may have come in between).
/// Answers whether it did.
pub async fn set_discovery(
    conn: &mut Conn,
    m: &Mailbox,
    issuer: &str,
    iss_required: bool,
) -> StoreResult<bool> {
    super::changes::announce(conn).await?;
    let done = sqlx::query(
        "UPDATE mailboxes SET issuer = $1, iss_required = $2 \
         WHERE id = $3 AND org_id = $4 AND authorization_url = $5 AND COALESCE(issuer, '') = $6",
    )
    .bind(issuer)
    .bind(i64::from(iss_required))
    .bind(m.id.to_string())
    .bind(m.org_id.to_string())
    .bind(m.authorization_url.clone().unwrap_or_default())
    .bind(m.issuer.clone().unwrap_or_default())
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Mailboxes of any organization with this id or (case-insensitive) name: for the operator's
/// command line, which names no organization.
pub async fn find_any(conn: &mut Conn, id_or_name: &str) -> StoreResult<Vec<Mailbox>> {
    if let Ok(id) = id_or_name.trim().parse::<MailboxId>() {
        let found = sqlx::query(select_mailboxes!("WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(&mut *conn)
            .await?;
        if let Some(row) = found {
            return Ok(vec![from_row(&row)?]);
        }
    }
    sqlx::query(select_mailboxes!("WHERE name_key = $1 ORDER BY id"))
        .bind(id_or_name.trim().to_lowercase())
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(from_row)
        .collect()
}

/// A mailbox of any organization by id (the workers, the default sender).
pub async fn get_any(conn: &mut Conn, id: MailboxId) -> StoreResult<Option<Mailbox>> {
    sqlx::query(select_mailboxes!("WHERE id = $1"))
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// Every mailbox of the organization, oldest first.
pub async fn all_of_org(conn: &mut Conn, org_id: OrgId) -> StoreResult<Vec<Mailbox>> {
    sqlx::query(select_mailboxes!("WHERE org_id = $1 ORDER BY id"))
        .bind(org_id.to_string())
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(from_row)
        .collect()
}

/// OAuth2 mailboxes that have been authorized and whose last keep-alive (or, before the
/// first, their verification) is at or before `due_before`: their tokens need refreshing.
pub async fn keepalive_due(
    conn: &mut Conn,
    due_before: OffsetDateTime,
    limit: i64,
) -> StoreResult<Vec<(OrgId, MailboxId)>> {
    let rows = sqlx::query(
        "SELECT org_id, id FROM mailboxes \
         WHERE auth = 'oauth2' AND token_expires_at IS NOT NULL \
           AND COALESCE(keepalive_at, verified_at, created_at) <= $1 \
         ORDER BY COALESCE(keepalive_at, verified_at, created_at) LIMIT $2",
    )
    .bind(to_db_time(due_before))
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|row| {
            Ok((
                parse_id(&row.try_get::<String, _>("org_id")?)?,
                parse_id(&row.try_get::<String, _>("id")?)?,
            ))
        })
        .collect()
}

/// Takes the mailbox's keep-alive for this instance: true unless another took it since it
/// was found due. `next_after` is the time recorded, from which the next one is counted.
pub async fn take_keepalive(
    conn: &mut Conn,
    id: MailboxId,
    due_before: OffsetDateTime,
    next_after: OffsetDateTime,
) -> StoreResult<bool> {
    let done = sqlx::query(
        "UPDATE mailboxes SET keepalive_at = $1 \
         WHERE id = $2 AND COALESCE(keepalive_at, verified_at, created_at) <= $3",
    )
    .bind(to_db_time(next_after))
    .bind(id.to_string())
    .bind(to_db_time(due_before))
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Sets when the mailbox's next keep-alive is counted from (a failed one is tried again
/// sooner).
pub async fn set_keepalive(conn: &mut Conn, id: MailboxId, at: OffsetDateTime) -> StoreResult<()> {
    sqlx::query("UPDATE mailboxes SET keepalive_at = $1 WHERE id = $2")
        .bind(to_db_time(at))
        .bind(id.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Replaces a mailbox's certificates (the one in use and the renewed one), and nothing else.
pub async fn set_certificates(conn: &mut Conn, m: &Mailbox) -> StoreResult<()> {
    super::changes::announce(conn).await?;
    sqlx::query(
        "UPDATE mailboxes SET certificate = $3, next_certificate = $4, client_auth = $5, updated_at = $6 \
         WHERE id = $1 AND org_id = $2",
    )
    .bind(m.id.to_string())
    .bind(m.org_id.to_string())
    .bind(certificate_json(&m.certificate))
    .bind(certificate_json(&m.next_certificate))
    .bind(m.client_auth.as_str())
    .bind(to_db_time(m.updated_at))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Holds the mailbox's row until the transaction ends: writers of the mailbox wait, and what
/// is read next is what they committed.
pub async fn lock(conn: &mut Conn, id: MailboxId) -> StoreResult<()> {
    sqlx::query("UPDATE mailboxes SET updated_at = updated_at WHERE id = $1")
        .bind(id.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Records a client secret's expiry date and where it came from, and nothing else.
pub async fn set_secret_expiry(conn: &mut Conn, m: &Mailbox) -> StoreResult<()> {
    super::changes::announce(conn).await?;
    sqlx::query(
        "UPDATE mailboxes SET client_secret_expires_at = $3, client_secret_expiry_source = $4 \
         WHERE id = $1 AND org_id = $2",
    )
    .bind(m.id.to_string())
    .bind(m.org_id.to_string())
    .bind(m.client_secret_expires_at.map(|d| d.to_string()))
    .bind(m.client_secret_expiry_source.as_str())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Every mailbox whose credential has a known expiry: a recorded client-secret date or a
/// certificate (the expiry alerts).
pub async fn with_secret_expiry(conn: &mut Conn) -> StoreResult<Vec<Mailbox>> {
    sqlx::query(select_mailboxes!(
        "WHERE client_secret_expires_at IS NOT NULL OR certificate IS NOT NULL ORDER BY id"
    ))
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(from_row)
    .collect()
}
