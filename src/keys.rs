//! Where the master key comes from, checking it against the database at start-up, rotating it,
//! and storing sealed secrets.
//!
//! The key comes from `HERALD_MASTER_KEY` or, when that is unset, from the key file
//! `master.key` in the data directory (created on first start, mode 0600). The file is a key
//! ring: one base64 key per line, the first sealing, any others only opening. A rotation
//! (1) writes the file with the new key first and the old after it, (2) re-seals every value
//! under the new key in one transaction, (3) rewrites the file with the new key alone. Stopped
//! anywhere, every value still opens: before (2) commits both keys are in the file, after it the
//! new key alone is needed.
//!
//! The database keeps a sealed check value, so a start with a missing or wrong key fails at
//! once with a clear message instead of failing later on the first secret it meets.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::config::{Config, MasterKeyMaterial};
use crate::secrets::{KeyId, KeyRing, MasterKey, SealError};
use crate::store::{self, Conn, Store, StoreError};

const CHECK_OWNER: &str = "herald";
const CHECK_FIELD: &str = "key_check";
const CHECK_PLAINTEXT: &[u8] = b"herald master key check";

/// Why the master key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "no master key: this database holds secrets sealed with master key {key_ids}, but HERALD_MASTER_KEY is not set and there is no key file at {file}. Set HERALD_MASTER_KEY to the key this database was created with, or restore the key file from your backup"
    )]
    Missing { key_ids: String, file: PathBuf },
    #[error(
        "wrong master key: this database's secrets were sealed with master key {in_use}, but the configured key is {configured} ({source_name}). Set HERALD_MASTER_KEY to the key this database was created with, or restore its key file"
    )]
    Wrong {
        in_use: String,
        configured: String,
        source_name: String,
    },
    #[error(
        "the master key does not open this database's check value ({0}); the database or the key file is damaged"
    )]
    CheckFailed(SealError),
    #[error("the key file {path} cannot be used: {message}")]
    File { path: PathBuf, message: String },
    #[error(
        "the master key comes from HERALD_MASTER_KEY, so Herald cannot replace it by itself: generate a key with `herald keys generate` and pass it to `herald keys rotate --new-key-stdin`"
    )]
    EnvKeyNeedsNewKey,
    #[error("the new key is the key already in use")]
    SameKey,
    #[error(
        "Herald is running ({0}): stop every `herald serve` before rotating the master key, since a running instance keeps sealing with the old key; pass --force only if you are sure none runs"
    )]
    InstancesRunning(String),
    #[error("a stored secret ({owner_id}/{field}) does not open: {cause}")]
    Unreadable {
        owner_id: String,
        field: String,
        cause: SealError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where the key ring was read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    Environment,
    File(PathBuf),
}

impl KeySource {
    fn describe(&self) -> String {
        match self {
            Self::Environment => "from HERALD_MASTER_KEY".into(),
            Self::File(path) => format!("from {}", path.display()),
        }
    }
}

/// Reads the configured key ring, if any: the environment wins over the key file.
pub fn configured_ring(config: &Config) -> Result<Option<(KeyRing, KeySource)>, KeyError> {
    if let Some(MasterKeyMaterial(bytes)) = &config.master_key {
        let ring = KeyRing::new(MasterKey::from_bytes(bytes.clone()));
        return Ok(Some((ring, KeySource::Environment)));
    }
    let path = config.master_key_file();
    match read_key_file(&path)? {
        Some(ring) => Ok(Some((ring, KeySource::File(path)))),
        None => Ok(None),
    }
}

/// Opens the key ring for this database, creating the key file on a first start. Fails when
/// the database holds secrets the configured key cannot open.
pub async fn unlock(
    config: &Config,
    store: &Store,
    now: OffsetDateTime,
) -> Result<(KeyRing, KeySource), KeyError> {
    let mut conn = store.conn().await?;
    let in_use = store::secrets::key_ids_in_use(&mut conn).await?;
    let (ring, source) = match configured_ring(config)? {
        Some(found) => found,
        None if in_use.is_empty() => {
            let path = config.master_key_file();
            let ring = KeyRing::new(MasterKey::generate());
            write_key_file(&path, &ring)?;
            tracing::info!(file = %path.display(), key_id = %ring.active().id(), "created a new master key file; back it up with the database");
            (ring, KeySource::File(path))
        }
        None => {
            return Err(KeyError::Missing {
                key_ids: in_use.join(", "),
                file: config.master_key_file(),
            });
        }
    };

    let unknown: Vec<_> = in_use
        .iter()
        .filter(|id| KeyId::parse(id).is_none_or(|id| !ring.contains(&id)))
        .cloned()
        .collect();
    if !unknown.is_empty() {
        return Err(KeyError::Wrong {
            in_use: unknown.join(", "),
            configured: ring.active().id().to_string(),
            source_name: source.describe(),
        });
    }

    // Two instances starting at once on an empty database must not both win: the first check
    // value stored stays, and every instance must open it.
    if store::secrets::get(&mut conn, CHECK_OWNER, CHECK_FIELD)
        .await?
        .is_none()
    {
        let sealed = ring.seal(CHECK_OWNER, CHECK_FIELD, CHECK_PLAINTEXT);
        store::secrets::insert_if_absent(&mut conn, CHECK_OWNER, CHECK_FIELD, &sealed, now).await?;
    }
    let sealed = store::secrets::get(&mut conn, CHECK_OWNER, CHECK_FIELD)
        .await?
        .ok_or(KeyError::CheckFailed(SealError::Malformed))?;
    match ring.open(CHECK_OWNER, CHECK_FIELD, &sealed) {
        Ok(_) => {}
        Err(SealError::UnknownKey(id)) => {
            return Err(KeyError::Wrong {
                in_use: id.to_string(),
                configured: ring.active().id().to_string(),
                source_name: source.describe(),
            });
        }
        Err(e) => return Err(KeyError::CheckFailed(e)),
    }

    // A rotation stopped after its transaction leaves the old key in the file; once nothing is
    // sealed under it, finish the job.
    if let KeySource::File(path) = &source
        && !ring.older().is_empty()
    {
        let in_use = store::secrets::key_ids_in_use(&mut conn).await?;
        if in_use.iter().all(|id| id == ring.active().id().as_str()) {
            let ring = KeyRing::new(ring.active().clone());
            write_key_file(path, &ring)?;
            return Ok((ring, source));
        }
    }
    Ok((ring, source))
}

/// What a rotation did.
#[derive(Debug)]
pub struct Rotation {
    pub old_key_ids: Vec<KeyId>,
    pub new_key: MasterKey,
    pub resealed: usize,
    pub source: KeySource,
}

/// Replaces the master key: re-seals every stored value under a new key in one transaction and
/// only then retires the old key. `new_key` is required when the key comes from the
/// environment, since Herald cannot change an environment variable; with a key file Herald
/// makes the new key itself when none is given.
pub async fn rotate(
    config: &Config,
    store: &Store,
    new_key: Option<MasterKey>,
    force: bool,
    now: OffsetDateTime,
) -> Result<Rotation, KeyError> {
    if !force {
        let mut conn = store.conn().await?;
        let since = now - store::instances::HEARTBEAT_STALE;
        let alive = store::instances::alive(&mut conn, since).await?;
        if !alive.is_empty() {
            let who: Vec<String> = alive
                .iter()
                .map(|i| format!("pid {} on {}", i.pid, i.hostname))
                .collect();
            return Err(KeyError::InstancesRunning(who.join(", ")));
        }
    }
    let (ring, source) = unlock(config, store, now).await?;
    let new_key = match (&source, new_key) {
        (_, Some(key)) => key,
        (KeySource::File(_), None) => MasterKey::generate(),
        (KeySource::Environment, None) => return Err(KeyError::EnvKeyNeedsNewKey),
    };
    if ring.contains(new_key.id()) {
        return Err(KeyError::SameKey);
    }
    let old: Vec<MasterKey> = std::iter::once(ring.active().clone())
        .chain(ring.older().iter().cloned())
        .collect();
    let transition = KeyRing::with_older(new_key.clone(), old.clone());

    // (1) Both keys on disk before any value moves.
    if let KeySource::File(path) = &source {
        write_key_file(path, &transition)?;
    }

    // (2) Every value, in one transaction that keeps other writers out.
    let mut tx = store.begin().await?;
    store::secrets::lock_all(&mut tx, store.backend()).await?;
    let rows = store::secrets::all(&mut tx).await?;
    for row in &rows {
        let plaintext = transition
            .open(&row.owner_id, &row.field, &row.sealed)
            .map_err(|cause| KeyError::Unreadable {
                owner_id: row.owner_id.clone(),
                field: row.field.clone(),
                cause,
            })?;
        let sealed = transition.seal(&row.owner_id, &row.field, &plaintext);
        store::secrets::put(&mut tx, &row.owner_id, &row.field, &sealed, now).await?;
    }
    tx.commit().await.map_err(StoreError::from)?;

    // (3) Retire the old keys, unless something sealed under one appeared meanwhile.
    if let KeySource::File(path) = &source {
        let mut conn = store.conn().await?;
        let in_use = store::secrets::key_ids_in_use(&mut conn).await?;
        let still_needed: Vec<MasterKey> = old
            .iter()
            .filter(|k| in_use.iter().any(|id| id == k.id().as_str()))
            .cloned()
            .collect();
        write_key_file(path, &KeyRing::with_older(new_key.clone(), still_needed))?;
    }
    Ok(Rotation {
        old_key_ids: old.iter().map(|k| k.id().clone()).collect(),
        new_key,
        resealed: rows.len(),
        source,
    })
}

/// Seals a secret and stores it as `field` of the record `owner_id`.
pub async fn put_secret(
    conn: &mut Conn,
    ring: &KeyRing,
    owner_id: &str,
    field: &str,
    secret: &SecretString,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    let sealed = ring.seal(owner_id, field, secret.expose_secret().as_bytes());
    store::secrets::put(conn, owner_id, field, &sealed, now).await
}

/// Loads and opens the secret `field` of the record `owner_id`.
pub async fn get_secret(
    conn: &mut Conn,
    ring: &KeyRing,
    owner_id: &str,
    field: &str,
) -> Result<Option<SecretString>, KeyError> {
    let Some(sealed) = store::secrets::get(conn, owner_id, field).await? else {
        return Ok(None);
    };
    let plaintext = ring
        .open(owner_id, field, &sealed)
        .map_err(|cause| KeyError::Unreadable {
            owner_id: owner_id.to_owned(),
            field: field.to_owned(),
            cause,
        })?;
    let text = String::from_utf8(plaintext.to_vec()).map_err(|_| KeyError::Unreadable {
        owner_id: owner_id.to_owned(),
        field: field.to_owned(),
        cause: SealError::Malformed,
    })?;
    Ok(Some(SecretString::from(text)))
}

/// Parses a base64 key given by an operator.
pub fn parse_key(raw: &str) -> Result<MasterKey, String> {
    MasterKeyMaterial::from_base64(raw).map(|m| MasterKey::from_bytes(m.0))
}

/// Reads a key file (one base64 key per line, the first sealing); `None` when there is none.
pub fn read_key_file(path: &Path) -> Result<Option<KeyRing>, KeyError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => Zeroizing::new(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(KeyError::File {
                path: path.to_owned(),
                message: e.to_string(),
            });
        }
    };
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        keys.push(parse_key(line).map_err(|message| KeyError::File {
            path: path.to_owned(),
            message: format!("line {}: {message}", n + 1),
        })?);
    }
    let mut keys = keys.into_iter();
    let Some(active) = keys.next() else {
        return Err(KeyError::File {
            path: path.to_owned(),
            message: "it holds no key".into(),
        });
    };
    Ok(Some(KeyRing::with_older(active, keys.collect())))
}

/// Writes the key file atomically (temporary file, fsync, rename) with mode 0600.
pub fn write_key_file(path: &Path, ring: &KeyRing) -> Result<(), KeyError> {
    let file_err = |e: std::io::Error| KeyError::File {
        path: path.to_owned(),
        message: e.to_string(),
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        store::create_private_dir(dir).map_err(file_err)?;
    }
    let mut text = Zeroizing::new(String::from(
        "# Herald master key ring. The first key seals; any others only open values during a rotation.\n\
         # Keep this file secret and back it up with the database: without it, stored secrets are lost.\n",
    ));
    for key in std::iter::once(ring.active()).chain(ring.older()) {
        text.push_str(&key.to_base64());
        text.push('\n');
    }
    let tmp = path.with_extension("key.tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp).map_err(file_err)?;
    file.write_all(text.as_bytes()).map_err(file_err)?;
    file.sync_all().map_err(file_err)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(file_err)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(dir) = std::fs::File::open(dir)
    {
        let _ = dir.sync_all();
    }
    Ok(())
}
