//! `herald backup`, `herald restore` and `herald migrate-to-postgres`: keeping the data, and
//! moving it from SQLite to PostgreSQL.

use std::path::Path;

use crate::app;
use crate::config::Config;

pub(super) async fn backup(
    config: Config,
    dir: &Path,
    include_key: bool,
    force: bool,
) -> anyhow::Result<()> {
    let made = app::backup(&config, dir, include_key, force, crate::clock::system_now()).await?;
    let m = &made.manifest;
    let rows: i64 = m.tables.values().sum();
    println!(
        "Backed up the database to {} ({} rows in {} tables, schema {}).",
        made.dir.display(),
        rows,
        m.tables.len(),
        m.schema_version
    );
    if m.key_ids.is_empty() {
        println!("It holds no sealed secret.");
    } else if m.includes_master_key {
        eprintln!(
            "WARNING: this backup holds the master key ({}): whoever reads it can open every stored client secret, password and token. Keep it as safe as the key itself.",
            m.key_ids.join(", ")
        );
    } else {
        println!(
            "Its secrets are sealed with master key {}: keep that key (HERALD_MASTER_KEY or {}) with the backup, or they cannot be opened.",
            m.key_ids.join(", "),
            config.master_key_file().display()
        );
    }
    Ok(())
}

pub(super) async fn restore(config: Config, dir: &Path, force: bool) -> anyhow::Result<()> {
    let done = app::restore(&config, dir, force, crate::clock::system_now()).await?;
    println!(
        "Restored the backup of {} (Herald {}, schema {}) to {}.",
        done.manifest.created_at,
        done.manifest.herald_version,
        done.manifest.schema_version,
        done.database.display()
    );
    if let Some(aside) = &done.kept_aside {
        println!("The database it replaced is kept at {}.", aside.display());
    }
    if let Some(key) = &done.key_installed {
        println!(
            "The backup's master key is now the key file {}.",
            key.display()
        );
    }
    println!("Start `herald serve`: it applies any newer migrations.");
    Ok(())
}

pub(super) async fn migrate_to_postgres(
    config: Config,
    to: &str,
    force: bool,
) -> anyhow::Result<()> {
    let done = app::migrate_to_postgres(&config, to, force, crate::clock::system_now()).await?;
    println!(
        "Copied the SQLite database to {} in one transaction:",
        done.target
    );
    for (table, rows) in &done.tables {
        println!("  {table:<28} {rows:>9}");
    }
    println!(
        "Checked before committing: the rows of every table, all {} sealed values and a sample of {} message bodies are identical.",
        done.secrets_compared, done.bodies_compared
    );
    if !done.key_ids.is_empty() {
        println!(
            "Give every instance the master key {} (HERALD_MASTER_KEY) and HERALD_DATABASE_URL={}.",
            done.key_ids.join(", "),
            done.target
        );
    }
    println!("The SQLite database is unchanged; keep it until the instances on PostgreSQL serve.");
    Ok(())
}
