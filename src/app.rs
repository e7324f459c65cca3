//! The composition root: configuration → store → key ring → services → HTTP server. Every
//! subcommand that needs the application builds it here, so `serve`, the tests and later
//! `demo` run the same wiring.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::config::{Config, LogFormat};
use crate::keys::{self, KeySource};
use crate::store::{self, Store};
use crate::web::{self, AppState};

/// Connects to the configured database and applies pending migrations.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let store = Store::connect(&config.database_url)
        .await
        .with_context(|| format!("cannot open the database {:?}", config.database_url))?;
    store
        .migrate()
        .await
        .context("cannot apply database migrations")?;
    Ok(store)
}

/// A built application, bound to its address but not yet serving.
pub struct App {
    state: AppState,
    listener: TcpListener,
    key_source: KeySource,
}

impl App {
    /// Opens the store, checks the master key against it and binds the listener.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(config.listen).await.with_context(|| {
            format!(
                "cannot listen on {}: is another process using it? Set HERALD_LISTEN to another address",
                config.listen
            )
        })?;
        Self::build_on(config, listener).await
    }

    /// Like [`App::build`], on a listener the caller bound (tests bind port 0 first, to know
    /// the public URL).
    pub async fn build_on(mut config: Config, listener: TcpListener) -> anyhow::Result<Self> {
        config.adopt_bound_address(
            listener
                .local_addr()
                .context("the listener has no address")?,
        );
        if config.dev {
            tracing::warn!(
                "DEVELOPMENT MODE IS ON (HERALD_DEV): safety checks meant for production are relaxed; never run a real installation like this"
            );
        }
        let store = open_store(&config).await?;
        let (ring, key_source) = keys::unlock(&config, &store).await?;
        let state = AppState {
            config: Arc::new(config),
            store,
            keys: Arc::new(ring),
            login_throttle: Arc::default(),
        };
        Ok(Self {
            state,
            listener,
            key_source,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound TCP listener has a local address")
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub fn key_source(&self) -> &KeySource {
        &self.key_source
    }

    /// Serves until `shutdown` completes, then finishes the requests in flight.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let housekeeping = tokio::spawn(housekeeping(self.state.store.clone()));
        let router = web::router(self.state.clone());
        let result = axum::serve(
            self.listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
        .context("the HTTP server failed");
        housekeeping.abort();
        result
    }
}

/// Periodic clean-up: expired sessions.
async fn housekeeping(store: Store) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        tick.tick().await;
        let now = time::OffsetDateTime::now_utc();
        let result = async {
            let mut conn = store.conn().await?;
            store::sessions::delete_expired(&mut conn, now).await
        }
        .await;
        match result {
            Ok(n) if n > 0 => tracing::debug!(removed = n, "expired sessions removed"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not remove expired sessions"),
        }
    }
}

/// Sets up logging to stderr at the configured level and format.
pub fn init_logging(config: &Config) {
    // sqlx reports every statement and notice at info; keep it to warnings unless asked.
    let directives = if config.log.contains("sqlx") {
        config.log.clone()
    } else {
        format!("{},sqlx=warn", config.log)
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match config.log_format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}
