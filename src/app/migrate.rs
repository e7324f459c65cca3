//! `herald migrate-to-postgres`: the configured SQLite database copied into an empty
//! PostgreSQL database, for an installation that grows to several instances. The copy itself
//! (one transaction, checked before it commits) is [`crate::store::copy`]'s; this module opens
//! both ends, refuses while Herald serves on the source, and reports.

use anyhow::{Context as _, anyhow, bail};
use time::OffsetDateTime;

use crate::config::Config;
use crate::store::{self, DatabaseUrl, Store};

/// What the move did.
#[derive(Debug)]
pub struct Migration {
    /// Rows per table, the same in both databases.
    pub tables: Vec<(String, i64)>,
    pub secrets_compared: usize,
    pub bodies_compared: usize,
    /// The ids of the master keys the copied secrets need: every instance on PostgreSQL must
    /// be given that key.
    pub key_ids: Vec<String>,
    /// The target, its password redacted, for messages.
    pub target: String,
}

/// Copies the configured SQLite database into the empty PostgreSQL database at `to`. Refuses
/// while a `herald serve` is heard from on the source (`force` overrides).
pub async fn migrate_to_postgres(
    config: &Config,
    to: &str,
    force: bool,
    now: OffsetDateTime,
) -> anyhow::Result<Migration> {
    let DatabaseUrl::Sqlite(path) = &config.database_url else {
        bail!(
            "Herald's database is already PostgreSQL: migrate-to-postgres copies from the SQLite database (HERALD_DATABASE_URL=sqlite://…)"
        );
    };
    if !path.is_file() {
        bail!("there is no SQLite database at {} to copy", path.display());
    }
    let target_url = DatabaseUrl::parse(to).map_err(|e| anyhow!("--to: {e}"))?;
    if !matches!(target_url, DatabaseUrl::Postgres(_)) {
        bail!("--to must be a PostgreSQL URL (postgres://USER@HOST/DATABASE)");
    }
    // The source is brought to this Herald's schema first, as `herald migrate` would.
    let source = super::open_store(config).await?;
    {
        let mut conn = source.conn().await?;
        let running = super::backup::running_instances(&mut conn, now).await?;
        if !running.is_empty() && !force {
            bail!(
                "Herald is running on {} ({}): stop every `herald serve` first, so that no mail is accepted or sent during the copy; pass --force only if it is not running (it crashed less than {} seconds ago)",
                path.display(),
                running.join(", "),
                store::instances::HEARTBEAT_STALE.whole_seconds()
            );
        }
    }
    let shown = format!("{target_url:?}");
    let target = Store::connect(&target_url)
        .await
        .with_context(|| format!("cannot open the PostgreSQL database {shown}"))?;
    let result = async {
        target
            .migrate()
            .await
            .context("cannot apply Herald's migrations to the PostgreSQL database")?;
        let report = store::copy::sqlite_to_postgres(&source, &target).await?;
        let mut conn = source.conn().await?;
        let key_ids = store::secrets::key_ids_in_use(&mut conn).await?;
        Ok::<_, anyhow::Error>(Migration {
            tables: report.tables,
            secrets_compared: report.secrets_compared,
            bodies_compared: report.bodies_compared,
            key_ids,
            target: shown.clone(),
        })
    }
    .await;
    target.close().await;
    source.close().await;
    result
}
