//! A process-wide count of changes to organizations, mailboxes, API keys and relay
//! credentials, which tells what is remembered from the database (the store's directory, the
//! relay's credentials) that it may be out of date.
//!
//! Process-wide, as the changes are: one process may open several stores (the tests do), and
//! a change in one then only costs the others a read. On PostgreSQL, instances tell each other:
//! each change also sends `NOTIFY herald_changes` in its own transaction (delivered when it
//! commits), and every instance listens ([`listen`]) and counts what it hears as a change.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{Conn, StoreResult};

static GENERATION: AtomicU64 = AtomicU64::new(0);

/// The PostgreSQL channel the instances tell each other of changes on.
const CHANNEL: &str = "herald_changes";

/// Says that an organization, a mailbox or an API key changed: everything the directory
/// remembers is read again. Called as the change is written, and again after its commit
/// where a read in between would matter.
pub fn changed() {
    GENERATION.fetch_add(1, Ordering::SeqCst);
}

/// [`changed`], and on PostgreSQL the same to every other instance once `conn`'s transaction
/// commits (or at once, outside a transaction).
pub async fn announce(conn: &mut Conn) -> StoreResult<()> {
    changed();
    if super::is_postgres(conn) {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(CHANNEL)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// The count now; something read under an earlier count may be out of date.
pub fn generation() -> u64 {
    GENERATION.load(Ordering::SeqCst)
}

/// Counts the other instances' changes as this one's, until `stopping`. When the connection
/// drops, notifications may have been missed: everything counts as changed, and it connects
/// again.
pub async fn listen(url: String, mut stopping: tokio::sync::watch::Receiver<bool>) {
    loop {
        let heard = async {
            let mut listener = sqlx::postgres::PgListener::connect(&url).await?;
            listener.listen(CHANNEL).await?;
            // Whatever changed while this instance was not listening.
            changed();
            loop {
                // `None`: the connection dropped and was made again; notifications sent
                // meanwhile are lost.
                listener.try_recv().await?;
                changed();
            }
            #[allow(unreachable_code)]
            Ok::<(), sqlx::Error>(())
        };
        tokio::select! {
            result = heard => {
                if let Err(e) = result {
                    tracing::warn!(error = %e, "cannot listen for other instances' changes; trying again");
                }
                changed();
            }
            _ = stopping.wait_for(|stop| *stop) => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stopping.wait_for(|stop| *stop) => return,
        }
    }
}
