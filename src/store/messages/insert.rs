//! Inserting messages, and on SQLite the grouped commit that lets messages arriving together
//! share one `fsync`.

use time::OffsetDateTime;

use super::{IdempotencyRecord, NewMessage, idempotency_put, reason_json};
use crate::store::{Backend, Conn, Store, StoreError, StoreResult, to_db_time};

const INSERT_MESSAGE: &str = "INSERT INTO messages (id, org_id, mailbox_id, mailbox_explicit, via_default_sender, \
     api_key_id, source, status, mail_from, recipients, recipient_count, subject, message_id_header, body_kind, \
     body, size, attempts, next_attempt_at, reason, created_at, updated_at) ";

/// The message's values, `$1` to `$18` of [`INSERT_MESSAGE`] (the creation time is `$17`).
const MESSAGE_VALUES: &str =
    "$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, 0, $17, $18, $17, $17";

type Query<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

fn bind_message<'q>(query: Query<'q>, m: &'q NewMessage) -> Query<'q> {
    query
        .bind(m.id.as_str())
        .bind(m.org_id.to_string())
        .bind(m.mailbox_id.map(|id| id.to_string()))
        .bind(i64::from(m.mailbox_explicit))
        .bind(i64::from(m.via_default_sender))
        .bind(m.api_key_id.as_deref())
        .bind(m.source.as_str())
        .bind(m.status.as_str())
        .bind(m.mail_from.as_str())
        .bind(serde_json::to_string(&m.recipients).unwrap_or_else(|_| "[]".into()))
        .bind(m.recipients.len() as i64)
        .bind(m.subject.as_str())
        .bind(m.message_id_header.as_str())
        .bind(m.body_kind.as_str())
        .bind(m.body.clone())
        .bind(m.body.len() as i64)
        .bind(to_db_time(m.now))
        .bind(reason_json(m.reason.as_ref()))
}

pub async fn insert(conn: &mut Conn, m: &NewMessage) -> StoreResult<()> {
    let sql = format!("{INSERT_MESSAGE}VALUES ({MESSAGE_VALUES})");
    bind_message(sqlx::query(sqlx::AssertSqlSafe(sql)), m)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// PostgreSQL: the message and its key (when there is one) in one statement, committed on its
/// own — one round trip instead of BEGIN, the inserts and COMMIT. `false`, with nothing
/// inserted, when the key is live (this waits for a transaction that holds it).
async fn insert_alone(conn: &mut Conn, m: &NewMessage, key: Option<&NewKey>) -> StoreResult<bool> {
    let Some(key) = key else {
        insert(conn, m).await?;
        return Ok(true);
    };
    // The key's record is the message's own id ($1), organization ($2), status ($8) and
    // time ($17), as `idempotency_put` writes it.
    let sql = format!(
        "WITH taken AS (\
           INSERT INTO idempotency_keys (org_id, idem_key, request_digest, message_id, first_status, created_at, expires_at) \
           VALUES ($2, $19, $20, $1, $8, $17, $21) \
           ON CONFLICT (org_id, idem_key) DO UPDATE SET request_digest = excluded.request_digest, \
             message_id = excluded.message_id, first_status = excluded.first_status, \
             created_at = excluded.created_at, expires_at = excluded.expires_at \
           WHERE idempotency_keys.expires_at <= excluded.created_at \
           RETURNING 1) \
         {INSERT_MESSAGE}SELECT {MESSAGE_VALUES} WHERE EXISTS (SELECT 1 FROM taken)"
    );
    let done = bind_message(sqlx::query(sqlx::AssertSqlSafe(sql)), m)
        .bind(key.key.as_str())
        .bind(key.request_digest.as_str())
        .bind(to_db_time(key.expires_at))
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// The idempotency key a message is accepted under, committed with it.
pub struct NewKey {
    pub key: String,
    /// A digest of the request, to tell a retry from another request with the same key.
    pub request_digest: String,
    pub expires_at: OffsetDateTime,
}

/// Inserts a message (and its idempotency key) and returns once it is on disk. A key already
/// in use is [`StoreError::Conflict`], and the message is not inserted.
///
/// On SQLite every commit waits for the disk, one at a time. Messages that arrive while a
/// commit is on its way are inserted together and share the next one, keyed or not: twenty
/// clients sending at once cost one `fsync`, not twenty. (PostgreSQL groups concurrent
/// commits itself.)
pub async fn insert_durably(store: &Store, m: NewMessage, key: Option<NewKey>) -> StoreResult<()> {
    if store.backend() == Backend::Postgres {
        let mut conn = store.conn().await?;
        if !insert_alone(&mut conn, &m, key.as_ref()).await? {
            return Err(key_taken());
        }
        return Ok(());
    }
    // In a task of its own from here on: a caller that goes away (a client that hung up) must
    // neither leave its message waiting for whoever commits next nor others without an answer.
    let store = store.clone();
    tokio::spawn(async move {
        let (done, answer) = tokio::sync::oneshot::channel();
        store.queue_insert(PendingInsert {
            message: m,
            key,
            done,
        });
        let turn = store.write_permit().await;
        let batch = store.take_inserts();
        if !batch.is_empty() {
            let _turn = turn;
            commit_batch(&store, batch).await;
        }
        answer.await.unwrap_or_else(|_| stopped())
    })
    .await
    .unwrap_or_else(|_| stopped())
}

fn stopped() -> StoreResult<()> {
    Err(StoreError::Corrupt(
        "the commit of a message stopped".into(),
    ))
}

fn key_taken() -> StoreError {
    StoreError::Conflict("idempotency key")
}

/// Inserts the key (when there is one) and then the message; `false`, with nothing inserted,
/// when the key is in use.
async fn insert_keyed(conn: &mut Conn, m: &NewMessage, key: Option<&NewKey>) -> StoreResult<bool> {
    if let Some(key) = key {
        let record = IdempotencyRecord {
            request_digest: key.request_digest.clone(),
            message_id: m.id.clone(),
            first_status: m.status,
        };
        if !idempotency_put(conn, m.org_id, &key.key, &record, m.now, key.expires_at).await? {
            return Ok(false);
        }
    }
    insert(conn, m).await?;
    Ok(true)
}

/// A message waiting for the next commit, and where to say how it went.
pub(crate) struct PendingInsert {
    message: NewMessage,
    key: Option<NewKey>,
    done: tokio::sync::oneshot::Sender<StoreResult<()>>,
}

async fn commit_batch(store: &Store, batch: Vec<PendingInsert>) {
    if batch.len() > 1 {
        let inserted = async {
            let mut tx = store.begin().await?;
            let mut kept = Vec::with_capacity(batch.len());
            for p in &batch {
                kept.push(insert_keyed(&mut tx, &p.message, p.key.as_ref()).await?);
            }
            tx.commit().await?;
            StoreResult::Ok(kept)
        }
        .await;
        if let Ok(kept) = inserted {
            // Answered only now, after the commit: a request whose key an earlier one in the
            // batch took then finds that one's answer.
            for (p, kept) in batch.into_iter().zip(kept) {
                let _ = p.done.send(if kept { Ok(()) } else { Err(key_taken()) });
            }
            return;
        }
    }
    // One at a time (a batch that failed: each message then gets its own answer).
    for p in batch {
        let inserted = async {
            let mut tx = store.begin().await?;
            if !insert_keyed(&mut tx, &p.message, p.key.as_ref()).await? {
                return Err(key_taken());
            }
            Ok(tx.commit().await?)
        }
        .await;
        let _ = p.done.send(inserted);
    }
}
