//! The master key: configured, and able to open what the database holds sealed. One sealed
//! value per key id is opened (the check value among them), so a wrong or damaged key is named
//! by its id; nothing is written, not even the key file a first `herald serve` creates.

use super::Check;
use crate::config::Config;
use crate::keys::{self, KeySource};
use crate::secrets::{KeyId, SealError};
use crate::store::{self, Store};

const NAME: &str = "master key";

const RESTORE: &str = "set HERALD_MASTER_KEY to the key this database was created with, or restore the key file from the backup taken with the database";

pub(super) async fn check(config: &Config, store: &Store) -> Check {
    match inspect(config, store).await {
        Ok(check) => check,
        Err(e) => Check::fail(
            NAME,
            format!("cannot read the sealed secrets: {e}"),
            "check the database (see the database check above)",
        ),
    }
}

async fn inspect(config: &Config, store: &Store) -> Result<Check, store::StoreError> {
    let mut conn = store.conn().await?;
    let in_use = store::secrets::key_ids_in_use(&mut conn).await?;
    let (ring, source) = match keys::configured_ring(config) {
        Ok(Some(found)) => found,
        Ok(None) if in_use.is_empty() => {
            return Ok(Check::ok(
                NAME,
                format!(
                    "none yet: the first `herald serve` creates the key file {} (back it up with the database)",
                    config.master_key_file().display()
                ),
            ));
        }
        Ok(None) => {
            return Ok(Check::fail(
                NAME,
                format!(
                    "no key: HERALD_MASTER_KEY is not set and there is no key file {}, but the database holds secrets sealed with master key {}",
                    config.master_key_file().display(),
                    in_use.join(", ")
                ),
                RESTORE,
            ));
        }
        Err(e) => {
            return Ok(Check::fail(
                NAME,
                e.to_string(),
                "restore the key file from your backup (one base64 key per line), or set HERALD_MASTER_KEY",
            ));
        }
    };
    let from = match &source {
        KeySource::Environment => "HERALD_MASTER_KEY".to_owned(),
        KeySource::File(path) => path.display().to_string(),
    };
    let active = ring.active().id().to_string();
    for key_id in &in_use {
        let known = KeyId::parse(key_id).is_some_and(|id| ring.contains(&id));
        if !known {
            return Ok(Check::fail(
                NAME,
                format!(
                    "wrong key: the database holds secrets sealed with master key {key_id}, but the configured key ({from}) is {active}"
                ),
                RESTORE,
            ));
        }
        let Some(row) = store::secrets::one_sealed_with(&mut conn, key_id).await? else {
            continue;
        };
        if let Err(e) = ring.open(&row.owner_id, &row.field, &row.sealed) {
            let why = match e {
                SealError::Tampered(_) => "it does not decrypt with that key",
                _ => "it is malformed",
            };
            return Ok(Check::fail(
                NAME,
                format!(
                    "a secret sealed with master key {key_id} ({}/{}) does not open: {why}",
                    row.owner_id, row.field
                ),
                "the key or the database is damaged: restore both from the same backup",
            ));
        }
    }
    let opened = if in_use.is_empty() {
        "no secret stored yet".to_owned()
    } else {
        format!("opens the secrets sealed with {}", in_use.join(", "))
    };
    let detail = format!("{active} from {from}; {opened}");
    if let KeySource::File(path) = &source
        && let Some(mode) = loose_mode(path)
    {
        return Ok(Check::warn(
            NAME,
            format!("{detail}; but the key file is readable by others (mode {mode:o})"),
            format!("chmod 600 {}", path.display()),
        ));
    }
    Ok(Check::ok(NAME, detail))
}

/// The key file's mode, when others than its owner may read or write it.
fn loose_mode(path: &std::path::Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
        (mode & 0o077 != 0).then_some(mode)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}
