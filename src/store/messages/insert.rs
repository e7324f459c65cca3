//! Inserting messages, and on SQLite the grouped commit that lets messages arriving together
//! share one `fsync`.

use super::{NewMessage, reason_json};
use crate::store::{Backend, Conn, Store, StoreError, StoreResult, to_db_time};

pub async fn insert(conn: &mut Conn, m: &NewMessage) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO messages (id, org_id, mailbox_id, mailbox_explicit, via_default_sender, api_key_id, source, status, \
         mail_from, recipients, recipient_count, subject, message_id_header, body_kind, body, size, attempts, \
         next_attempt_at, reason, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, 0, $17, $18, $17, $17)",
    )
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
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Inserts a message and returns once it is on disk.
///
/// On SQLite every commit waits for the disk, one at a time. Messages that arrive while a
/// commit is on its way are inserted together and share the next one: twenty sessions
/// sending at once cost one `fsync`, not twenty. (PostgreSQL groups concurrent commits
/// itself.)
pub async fn insert_durably(store: &Store, m: NewMessage) -> StoreResult<()> {
    if store.backend() == Backend::Postgres {
        let mut conn = store.conn().await?;
        return insert(&mut conn, &m).await;
    }
    // In a task of its own from here on: a caller that goes away (a client that hung up) must
    // neither leave its message waiting for whoever commits next nor others without an answer.
    let store = store.clone();
    tokio::spawn(async move {
        let (done, answer) = tokio::sync::oneshot::channel();
        store.queue_insert((m, done));
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

/// A message waiting for the next commit, and where to say how it went.
pub(crate) type PendingInsert = (NewMessage, tokio::sync::oneshot::Sender<StoreResult<()>>);

async fn commit_batch(store: &Store, batch: Vec<PendingInsert>) {
    let together = batch.len() > 1;
    if together {
        let inserted = async {
            let mut tx = store.begin().await?;
            for (m, _) in &batch {
                insert(&mut tx, m).await?;
            }
            tx.commit().await?;
            StoreResult::Ok(())
        }
        .await;
        if inserted.is_ok() {
            for (_, done) in batch {
                let _ = done.send(Ok(()));
            }
            return;
        }
    }
    // One at a time (a batch that failed: each message then gets its own answer).
    for (m, done) in batch {
        let inserted = async {
            let mut conn = store.conn().await?;
            insert(&mut conn, &m).await
        }
        .await;
        let _ = done.send(inserted);
    }
}
