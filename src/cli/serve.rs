//! `herald serve` and `herald migrate`.

use std::io::Write as _;

use crate::app::KeySource;
use crate::app::{self, App};
use crate::config::Config;
use crate::services;

pub(super) async fn serve(config: Config) -> anyhow::Result<()> {
    let shutdown = app::shutdown_signal();
    let app = App::build(config).await?;
    let state = app.state().clone();
    let addr = app.local_addr();
    let public = state.access.config.public_base();
    tracing::info!(%addr, public_url = %public, database = ?state.access.config.database_url, "Herald is starting");
    if let KeySource::File(path) = app.key_source() {
        tracing::info!(file = %path.display(), "master key from the key file");
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "Herald is listening on http://{addr} (public URL {public})"
    )?;
    if let Some(token) =
        services::issue_setup_token(&state.access.store, state.access.now()).await?
    {
        writeln!(
            out,
            "No user exists yet. Open this link within 1 hour to create the first organization and its admin:\n  {public}/setup?token={token}"
        )?;
    }
    out.flush()?;
    drop(out);
    app.serve(shutdown).await
}

/// Applies pending migrations, and says so.
pub(super) async fn migrate(config: Config) -> anyhow::Result<()> {
    let store = app::open_store(&config).await?;
    println!(
        "The {} database is up to date.",
        config.database_url.backend_name()
    );
    store.close().await;
    Ok(())
}
