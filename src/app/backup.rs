//! Keeping the data: `herald backup` (a consistent copy of the SQLite database while Herald
//! serves, with a manifest naming the master keys it needs) and `herald restore` (a backup put
//! back in place of the configured database, never under a running Herald).
//!
//! A backup is a directory of its own: `herald.db` (the copy, made by `VACUUM INTO`),
//! `manifest.json` (Herald's version, the schema level, the time, rows per table, the ids of
//! the master keys that sealed its secrets) and, only with `--include-key`, `master.key` (the
//! key ring, in the key file's format). It is written under a temporary name beside its final
//! place and renamed when complete, so a failed backup never looks like a good one. Every file
//! is mode 0600 and the directory 0700.
//!
//! PostgreSQL installations back up with `pg_dump` (see the README); these commands refuse them.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::config::Config;
use crate::keys::{self, KeySource};
use crate::secrets::KeyRing;
use crate::store::{self, Backend, DatabaseUrl, Store};

/// The backup's database file, in its directory.
pub const BACKUP_DATABASE: &str = "herald.db";
/// The backup's description.
pub const BACKUP_MANIFEST: &str = "manifest.json";
/// The master key ring, with `--include-key` only.
pub const BACKUP_KEY: &str = "master.key";
/// What `manifest.json`'s `format` says.
const FORMAT: &str = "herald-backup-1";

/// What `manifest.json` holds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// `herald-backup-1`.
    pub format: String,
    /// The version of Herald that made the backup.
    pub herald_version: String,
    /// The last database migration applied in the copy.
    pub schema_version: i64,
    /// When the copy was taken (RFC 3339, UTC).
    pub created_at: String,
    /// Rows per table in the copy.
    pub tables: BTreeMap<String, i64>,
    /// The ids of the master keys that sealed the copy's secrets: the key (or keys) needed to
    /// use it.
    pub key_ids: Vec<String>,
    /// Whether `master.key` is in the backup: then the backup alone opens every secret.
    pub includes_master_key: bool,
}

/// A backup written.
#[derive(Debug)]
pub struct Backup {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

/// A backup put in place.
#[derive(Debug)]
pub struct Restore {
    pub database: PathBuf,
    /// Where the database it replaced was kept, if there was one.
    pub kept_aside: Option<PathBuf>,
    pub manifest: Manifest,
    /// Where the backup's master key was installed, if it was.
    pub key_installed: Option<PathBuf>,
}

fn sqlite_path(config: &Config, what: &str) -> anyhow::Result<PathBuf> {
    match &config.database_url {
        DatabaseUrl::Sqlite(path) => Ok(path.clone()),
        DatabaseUrl::Postgres(_) => bail!(
            "Herald's database is PostgreSQL: {what} with PostgreSQL's own tools instead (pg_dump, pg_restore; see \"Back up and restore\" in the README), and keep the master key with the dump"
        ),
    }
}

/// The running instances, described for a refusal; empty when none is heard from.
pub(super) async fn running_instances(
    conn: &mut store::Conn,
    now: OffsetDateTime,
) -> anyhow::Result<Vec<String>> {
    let since = now - store::instances::HEARTBEAT_STALE;
    Ok(store::instances::alive(conn, since)
        .await?
        .iter()
        .map(|i| format!("pid {} on {}", i.pid, i.hostname))
        .collect())
}

/// Copies the configured SQLite database, consistently even while Herald serves, into a new
/// backup directory `dir`. `force` replaces an existing `dir`; `include_key` adds the master key.
pub async fn backup(
    config: &Config,
    dir: &Path,
    include_key: bool,
    force: bool,
    now: OffsetDateTime,
) -> anyhow::Result<Backup> {
    let database = sqlite_path(config, "back it up")?;
    if !database.is_file() {
        bail!("there is no database at {} to back up", database.display());
    }
    if dir.exists() && !force {
        bail!(
            "{} already exists: name a new backup, or pass --force to replace it",
            dir.display()
        );
    }
    let ring = if include_key {
        Some(
            keys::configured_ring(config)?
                .map(|(ring, _)| ring)
                .ok_or_else(|| anyhow!("--include-key: no master key is configured (neither HERALD_MASTER_KEY nor the key file {})", config.master_key_file().display()))?,
        )
    } else {
        None
    };
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = dir
        .file_name()
        .ok_or_else(|| anyhow!("{} names no directory", dir.display()))?
        .to_string_lossy()
        .into_owned();
    let tmp = parent.join(format!(".{name}.partial-{}", uuid::Uuid::new_v4().simple()));
    let written = write_backup(&database, &tmp, ring.as_ref(), now).await;
    let manifest = match written {
        Ok(manifest) => manifest,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    if dir.exists() {
        let old = parent.join(format!(
            ".{name}.replaced-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::rename(dir, &old)
            .with_context(|| format!("cannot move {} aside", dir.display()))?;
        std::fs::rename(&tmp, dir)
            .with_context(|| format!("cannot rename the backup to {}", dir.display()))?;
        std::fs::remove_dir_all(&old)
            .with_context(|| format!("cannot remove the replaced backup {}", old.display()))?;
    } else {
        std::fs::rename(&tmp, dir)
            .with_context(|| format!("cannot rename the backup to {}", dir.display()))?;
    }
    sync_dir(&parent);
    Ok(Backup {
        dir: dir.to_owned(),
        manifest,
    })
}

async fn write_backup(
    database: &Path,
    tmp: &Path,
    ring: Option<&KeyRing>,
    now: OffsetDateTime,
) -> anyhow::Result<Manifest> {
    store::create_private_dir(tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let copy = tmp.join(BACKUP_DATABASE);
    let source = Store::connect(&DatabaseUrl::Sqlite(database.to_owned())).await?;
    let copied = store::backup::vacuum_into(&source, &copy).await;
    source.close().await;
    copied.with_context(|| format!("cannot copy the database {}", database.display()))?;
    restrict(&copy)?;
    let mut conn = store::backup::open_read_only(&copy).await?;
    let description = store::backup::describe(&mut conn).await?;
    drop(conn);
    if let Some(ring) = ring {
        let missing = missing_keys(&description.key_ids, ring);
        if !missing.is_empty() {
            bail!(
                "--include-key: the configured master key ({}) does not open this database's secrets, sealed with {}",
                ring.active().id(),
                missing.join(", ")
            );
        }
        keys::write_key_file(&tmp.join(BACKUP_KEY), ring)?;
    }
    let manifest = Manifest {
        format: FORMAT.into(),
        herald_version: env!("CARGO_PKG_VERSION").into(),
        schema_version: description.schema_version,
        created_at: now
            .format(&time::format_description::well_known::Rfc3339)
            .context("cannot format the time")?,
        tables: description.tables,
        key_ids: description.key_ids,
        includes_master_key: ring.is_some(),
    };
    write_private(
        &tmp.join(BACKUP_MANIFEST),
        (serde_json::to_string_pretty(&manifest)? + "\n").as_bytes(),
    )?;
    sync_dir(tmp);
    Ok(manifest)
}

/// Puts the backup in `dir` in place of the configured SQLite database. Refuses while a
/// `herald serve` is heard from (`force` overrides that, for one that crashed) and whenever
/// another process has the database open; keeps the replaced database aside; refuses a backup
/// whose secrets no available master key opens, and one from a newer schema than this Herald's.
pub async fn restore(
    config: &Config,
    dir: &Path,
    force: bool,
    now: OffsetDateTime,
) -> anyhow::Result<Restore> {
    let database = sqlite_path(config, "restore it")?;
    let manifest_path = dir.join(BACKUP_MANIFEST);
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(&manifest_path).with_context(|| {
            format!(
                "{} is not a Herald backup: cannot read {}",
                dir.display(),
                manifest_path.display()
            )
        })?)
        .with_context(|| {
            format!(
                "{} is not a Herald backup manifest",
                manifest_path.display()
            )
        })?;
    if manifest.format != FORMAT {
        bail!(
            "{} is a backup of an unknown format {:?}",
            dir.display(),
            manifest.format
        );
    }
    let copy = dir.join(BACKUP_DATABASE);
    if !copy.is_file() {
        bail!("the backup {} has no {BACKUP_DATABASE}", dir.display());
    }

    // The copy is whole and is what the manifest says.
    let mut conn = store::backup::open_read_only(&copy).await?;
    if let Some(problem) = store::backup::quick_check(&mut conn).await? {
        bail!("the backup's database is damaged: {problem}");
    }
    let description = store::backup::describe(&mut conn).await?;
    drop(conn);
    if description.tables != manifest.tables || description.key_ids != manifest.key_ids {
        bail!(
            "the backup's database does not match its manifest: the backup is damaged or was changed"
        );
    }
    let latest = store::backup::latest_schema_version(Backend::Sqlite);
    if description.schema_version > latest {
        bail!(
            "the backup comes from a newer Herald (schema {}, made by Herald {}); this Herald knows schema {latest}: restore it with Herald {} or later",
            description.schema_version,
            manifest.herald_version,
            manifest.herald_version
        );
    }

    // The key that opens its secrets is at hand, or comes with the backup.
    let install_key = key_plan(config, dir, &description.key_ids)?;

    // Nothing runs on the database it replaces.
    let stamp = now
        .format(&time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .context("cannot format the time")?;
    let kept_aside = if database.exists() {
        let mut conn = store::backup::open_existing(&database).await?;
        if store::backup::has_table(&mut conn, "instances").await? {
            let running = running_instances(&mut conn, now).await?;
            if !running.is_empty() && !force {
                bail!(
                    "Herald is running on {} ({}): stop every `herald serve` before restoring; pass --force only if it is not running (it crashed less than {} seconds ago)",
                    database.display(),
                    running.join(", "),
                    store::instances::HEARTBEAT_STALE.whole_seconds()
                );
            }
        }
        if !store::backup::take_offline(conn).await? {
            bail!(
                "the database {} is open in another process (a running `herald serve` or another command): stop it first",
                database.display()
            );
        }
        let aside = with_suffix(&database, &format!(".before-restore-{stamp}"));
        std::fs::rename(&database, &aside)
            .with_context(|| format!("cannot move {} aside", database.display()))?;
        for ext in ["-wal", "-shm"] {
            let side = with_suffix(&database, ext);
            if side.exists() {
                let _ = std::fs::rename(&side, with_suffix(&aside, ext));
            }
        }
        Some(aside)
    } else {
        None
    };

    if let Some(parent) = database.parent().filter(|p| !p.as_os_str().is_empty()) {
        store::create_private_dir(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let tmp = with_suffix(
        &database,
        &format!(".restoring-{}", uuid::Uuid::new_v4().simple()),
    );
    let placed = (|| -> anyhow::Result<()> {
        // Copied, not read into memory: a database may be large.
        std::fs::copy(&copy, &tmp).with_context(|| format!("cannot copy {}", copy.display()))?;
        restrict(&tmp)?;
        std::fs::rename(&tmp, &database)
            .with_context(|| format!("cannot put the backup at {}", database.display()))?;
        Ok(())
    })();
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }

    let key_installed = match install_key {
        Some(ring) => {
            let path = config.master_key_file();
            if path.exists() {
                std::fs::rename(
                    &path,
                    with_suffix(&path, &format!(".before-restore-{stamp}")),
                )
                .with_context(|| format!("cannot move {} aside", path.display()))?;
            }
            keys::write_key_file(&path, &ring)?;
            Some(path)
        }
        None => None,
    };
    if let Some(parent) = database.parent() {
        sync_dir(parent);
    }
    Ok(Restore {
        database,
        kept_aside,
        manifest,
        key_installed,
    })
}

/// Whether the master key the backup needs is configured (`None`), or must be installed from
/// the backup's own `master.key`; an error with the fix when neither holds it.
fn key_plan(config: &Config, dir: &Path, needed: &[String]) -> anyhow::Result<Option<KeyRing>> {
    if needed.is_empty() {
        return Ok(None);
    }
    let configured = keys::configured_ring(config)?;
    if let Some((ring, _)) = &configured
        && missing_keys(needed, ring).is_empty()
    {
        return Ok(None);
    }
    let bundled = keys::read_key_file(&dir.join(BACKUP_KEY))?;
    let bundled_opens = bundled
        .as_ref()
        .is_some_and(|ring| missing_keys(needed, ring).is_empty());
    match (&configured, bundled) {
        (Some((_, KeySource::Environment)), _) => bail!(
            "the backup's secrets were sealed with master key {}, but HERALD_MASTER_KEY holds another key: set HERALD_MASTER_KEY to the key with id {}{}, then restore again",
            needed.join(", "),
            needed.join(", "),
            if bundled_opens {
                " (the backup's master.key holds it)"
            } else {
                ""
            }
        ),
        (_, Some(ring)) if bundled_opens => Ok(Some(ring)),
        (Some((ring, KeySource::File(path))), _) => bail!(
            "the backup's secrets were sealed with master key {}, but the key file {} holds {}: put the key with id {} in that file (from your key backup), or set HERALD_MASTER_KEY to it, then restore again",
            needed.join(", "),
            path.display(),
            ring.active().id(),
            needed.join(", ")
        ),
        (None, _) => bail!(
            "the backup's secrets were sealed with master key {}, and no master key is configured: copy the key file you kept with this backup to {} (or set HERALD_MASTER_KEY to that key), then restore again",
            needed.join(", "),
            config.master_key_file().display()
        ),
    }
}

fn missing_keys(needed: &[String], ring: &KeyRing) -> Vec<String> {
    needed
        .iter()
        .filter(|id| crate::secrets::KeyId::parse(id).is_none_or(|id| !ring.contains(&id)))
        .cloned()
        .collect()
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Writes a new file readable by its owner only, and flushes it to disk.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Makes a file readable by its owner only, and flushes it to disk.
fn restrict(path: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot restrict {}", path.display()))?;
    }
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot flush {}", path.display()))
}

fn sync_dir(dir: &Path) {
    if let Ok(dir) = std::fs::File::open(dir) {
        let _ = dir.sync_all();
    }
}
