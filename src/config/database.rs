//! The database part: the data directory and the URL of the database the store opens (the
//! store's [`DatabaseUrl`], which parses it).

use std::path::{Path, PathBuf};

use super::ConfigError;
use super::source::Source;
use crate::store::DatabaseUrl;

/// `HERALD_DATA_DIR` (`data_dir`): where the SQLite file and the master key file live.
pub(super) fn data_dir(src: &Source) -> PathBuf {
    PathBuf::from(
        src.text("HERALD_DATA_DIR", &src.file.data_dir)
            .unwrap_or_else(|| "./herald-data".into()),
    )
}

/// `HERALD_DATABASE_URL` (`database_url`); by default an SQLite file in the data directory.
pub(super) fn database_url(src: &Source, data_dir: &Path) -> Result<DatabaseUrl, ConfigError> {
    Ok(
        match src.text("HERALD_DATABASE_URL", &src.file.database_url) {
            Some(raw) => DatabaseUrl::parse(&raw).map_err(|message| ConfigError::Invalid {
                setting: "HERALD_DATABASE_URL (database_url)",
                message,
            })?,
            None => sqlite_in(data_dir),
        },
    )
}

/// The SQLite database file in the data directory.
pub(super) fn sqlite_in(data_dir: &Path) -> DatabaseUrl {
    DatabaseUrl::Sqlite(data_dir.join("herald.db"))
}
