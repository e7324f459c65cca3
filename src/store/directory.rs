//! What every accepted message reads, served from memory: the mailboxes an API key is limited
//! to, and each organization with its mailboxes. (Whether the key is live is read every time.)
//!
//! An entry is trusted while nothing it was read from has changed in this process and for at
//! most [`FRESH`]. Every store function that writes an organization, a mailbox or an API key
//! calls [`super::changes::changed`], which makes every entry stale at once: a key revoked, a
//! mailbox deleted or turned Not Verified by this process is seen by its next request. A
//! change made by another process (another instance on PostgreSQL, the command line) is seen
//! within [`FRESH`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::changes::generation;
use super::{Store, StoreResult};
use crate::domain::mailbox::Mailbox;
use crate::domain::{ApiKey, ApiKeyId, ApiKeyToken, MailboxId, OrgId, Organization};

/// How long an entry is trusted without a change seen in this process.
pub const FRESH: Duration = Duration::from_secs(1);

/// Past this many entries, stale ones are dropped as new ones come in.
const PRUNE_ABOVE: usize = 4096;

/// An organization and all of its mailboxes, oldest first.
#[derive(Debug)]
pub struct OrgDirectory {
    pub org: Organization,
    pub mailboxes: Vec<Mailbox>,
}

/// A live API key and the mailboxes it is limited to (`None`: all of its organization's).
#[derive(Clone, Debug)]
pub struct KeyEntry {
    pub key: ApiKey,
    pub mailboxes: Option<Vec<MailboxId>>,
}

struct Entry<T> {
    value: T,
    generation: u64,
    read_at: Instant,
}

impl<T> Entry<T> {
    fn fresh(&self, now: u64) -> bool {
        self.generation == now && self.read_at.elapsed() < FRESH
    }
}

fn remember<K: std::hash::Hash + Eq, T>(
    map: &Mutex<HashMap<K, Entry<T>>>,
    key: K,
    value: T,
    generation: u64,
    read_at: Instant,
) {
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    if map.len() >= PRUNE_ABOVE {
        let now = self::generation();
        map.retain(|_, e| e.fresh(now));
    }
    map.insert(
        key,
        Entry {
            value,
            generation,
            read_at,
        },
    );
}

/// The entries of one store.
#[derive(Default)]
pub(super) struct Directory {
    limits: Mutex<HashMap<ApiKeyId, Entry<Option<Vec<MailboxId>>>>>,
    orgs: Mutex<HashMap<OrgId, Entry<Arc<OrgDirectory>>>>,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Directory")
    }
}

impl Store {
    /// The live API key with this token, and the mailboxes it is limited to. The key itself is
    /// read from the database every time, so that a key revoked anywhere (another instance,
    /// the command line) is refused at its next request; its limits come from memory.
    pub async fn api_key(&self, token: &ApiKeyToken) -> StoreResult<Option<KeyEntry>> {
        let mut conn = self.conn().await?;
        let Some(key) = super::api_keys::find_live_by_token(&mut conn, token).await? else {
            return Ok(None);
        };
        let now = generation();
        if let Some(e) = self
            .directory
            .limits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key.id)
            .filter(|e| e.fresh(now))
        {
            let mailboxes = e.value.clone();
            return Ok(Some(KeyEntry { key, mailboxes }));
        }
        // The generation and the time from before the read: a change during it makes the
        // entry stale.
        let read_at = Instant::now();
        let mailboxes = super::api_keys::mailbox_limits(&mut conn, key.id).await?;
        remember(
            &self.directory.limits,
            key.id,
            mailboxes.clone(),
            now,
            read_at,
        );
        Ok(Some(KeyEntry { key, mailboxes }))
    }

    /// The organization and its mailboxes; `None` when there is no such organization.
    pub async fn org_directory(&self, org_id: OrgId) -> StoreResult<Option<Arc<OrgDirectory>>> {
        let now = generation();
        if let Some(e) = self
            .directory
            .orgs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&org_id)
            .filter(|e| e.fresh(now))
        {
            return Ok(Some(e.value.clone()));
        }
        let read_at = Instant::now();
        let mut conn = self.conn().await?;
        let Some(org) = super::orgs::get(&mut conn, org_id).await? else {
            return Ok(None);
        };
        let mailboxes = super::mailboxes::all_of_org(&mut conn, org_id).await?;
        let entry = Arc::new(OrgDirectory { org, mailboxes });
        remember(&self.directory.orgs, org_id, entry.clone(), now, read_at);
        Ok(Some(entry))
    }
}
