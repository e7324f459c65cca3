//! The composition root: configuration → store → key ring → services → HTTP server. Every
//! subcommand that needs the application builds it here, so `serve`, the tests and later
//! `demo` run the same wiring.

mod backup;
pub mod doctor;
mod http;
mod jobs;
mod migrate;
mod operator;

pub use backup::{
    BACKUP_DATABASE, BACKUP_KEY, BACKUP_MANIFEST, Backup, Manifest, Restore, backup, restore,
};
pub use migrate::{Migration, migrate_to_postgres};
pub use operator::{KeySource, Rotation, local_outbox, new_master_key, rotate_master_key};

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::access::Access;
use crate::clock::SharedClock;
use crate::config::{Config, LogFormat};
use crate::keys;
use crate::store::instances::{HEARTBEAT_EVERY, HEARTBEAT_STALE};
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

/// Opens what a command that sends mail needs, without the HTTP server: the store, the key
/// ring, the token client and the SMTP trust anchors, on the system clock.
pub async fn open(config: Config) -> anyhow::Result<Access> {
    let store = open_store(&config).await?;
    crate::crypto::configure_hash_pool(config.hashing_threads);
    let clock = crate::clock::system();
    let (keys, _) = keys::unlock(&config, &store, clock.now()).await?;
    access(config, store, keys, clock)
}

/// Wires the core's dependencies together.
fn access(
    config: Config,
    store: Store,
    keys: crate::secrets::KeyRing,
    clock: SharedClock,
) -> anyhow::Result<Access> {
    let hosts = crate::net::HostPolicy {
        dev: config.dev,
        allow_private: config.allow_private_hosts,
    };
    let http = crate::oauth::http::TokenHttp::new(hosts, config.http_ca_file.as_deref())
        .map_err(|e| anyhow::anyhow!("HERALD_HTTP_CA_FILE: {e}"))?;
    let smtp_roots = match &config.smtp_ca_file {
        Some(path) => vec![
            std::fs::read(path)
                .with_context(|| format!("cannot read HERALD_SMTP_CA_FILE {}", path.display()))?,
        ],
        None => Vec::new(),
    };
    Ok(Access {
        config: Arc::new(config),
        store,
        keys: Arc::new(keys),
        http,
        smtp_roots: Arc::new(smtp_roots),
        sandbox: None,
        locks: Arc::default(),
        app_tokens: Arc::default(),
        clock,
    })
}

/// A built application, bound to its address but not yet serving.
pub struct App {
    state: AppState,
    listener: TcpListener,
    /// The SMTP relay's listeners, when configured.
    relay: Option<crate::relay::Relay>,
    key_source: KeySource,
    /// This process's row in `instances`.
    instance: String,
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
        // The relay's ports too are taken before anything starts, and port 0 becomes the port
        // bound, which the UI shows.
        let relay_listeners = crate::relay::Relay::bind_listeners(&config.relay).await?;
        if let Some(l) = &relay_listeners.0 {
            config.relay.listen = Some(l.local_addr()?);
        }
        if let Some(l) = &relay_listeners.1 {
            config.relay.tls_listen = Some(l.local_addr()?);
        }
        let store = open_store(&config).await?;
        crate::crypto::configure_hash_pool(config.hashing_threads);
        // The system clock until a test gives the outbox another ([`App::with_outbox`]).
        let clock = crate::clock::system();
        let (ring, key_source) = keys::unlock(&config, &store, clock.now()).await?;
        // Announced before serving, so that a key rotation started now already sees it.
        let instance = uuid::Uuid::now_v7().to_string();
        {
            let mut conn = store.conn().await?;
            let (pid, now) = (i64::from(std::process::id()), clock.now());
            store::instances::register(
                &mut conn,
                &instance,
                &hostname(),
                pid,
                &process_scope(),
                now,
            )
            .await?;
        }
        // Mail a crashed instance was sending goes back to the queue now, not when its
        // leases run out.
        recover_claims(&store, &instance, clock.now()).await?;
        if let Some(sender) = config.outbox.default_sender {
            let mut conn = store.conn().await?;
            match store::mailboxes::get_any(&mut conn, sender).await? {
                Some(m) => tracing::info!(mailbox = %m.id, address = %m.username, "default sender"),
                None => tracing::warn!(
                    mailbox = %sender,
                    "HERALD_DEFAULT_SENDER names no mailbox: organizations with the fallback policy will have their mail held"
                ),
            }
        }
        let access = access(config, store, ring, clock)?;
        let outbox = crate::outbox::Outbox::new(
            access.clone(),
            crate::outbox::Tuning::default(),
            instance.clone(),
        );
        let api_rate = Arc::new(crate::web::rate::ApiRate::new(
            access.config.api_rate_per_minute,
        ));
        let state = AppState {
            access,
            outbox,
            login_throttle: Arc::default(),
            api_rate,
            sandbox_state: None,
        };
        let relay = crate::relay::Relay::on(
            relay_listeners,
            &state.access.config.relay,
            &state.access.config.outbox,
            crate::services::relay::RelayService::new(
                state.access.store.clone(),
                state.access.clock.clone(),
            ),
            state.outbox.clone(),
        )?;
        Ok(Self {
            state,
            listener,
            relay,
            key_source,
            instance,
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

    /// The SMTP relay's STARTTLS address, when it listens.
    pub fn relay_addr(&self) -> Option<SocketAddr> {
        self.relay.as_ref().and_then(|r| r.local_addr())
    }

    /// How many SMTP relay sessions are open now, when the relay listens; changes as they
    /// start and end.
    pub fn relay_sessions(&self) -> Option<tokio::sync::watch::Receiver<usize>> {
        self.relay.as_ref().and_then(|r| r.sessions_open())
    }

    /// The SMTP relay's implicit-TLS address, when it listens.
    pub fn relay_tls_addr(&self) -> Option<SocketAddr> {
        self.relay.as_ref().and_then(|r| r.tls_local_addr())
    }

    /// Offers the `sandbox` provider, pointing at a running sandbox.
    pub fn with_sandbox(
        mut self,
        preset: crate::domain::presets::SandboxPreset,
        state: Arc<crate::sandbox::SandboxState>,
    ) -> Self {
        self.state.access.sandbox = Some(Arc::new(preset));
        self.state.sandbox_state = Some(state);
        self.with_outbox(crate::clock::system(), crate::outbox::Tuning::default())
    }

    /// Runs the outbox on another clock or pace (tests: a simulated clock, short retries).
    pub fn with_outbox(
        mut self,
        clock: Arc<dyn crate::clock::Clock>,
        tuning: crate::outbox::Tuning,
    ) -> Self {
        self.state.access.clock = clock;
        self.state.outbox =
            crate::outbox::Outbox::new(self.state.access.clone(), tuning, self.instance.clone());
        let (store, clock, settings, outbox) = (
            self.state.access.store.clone(),
            self.state.access.clock.clone(),
            self.state.access.config.outbox.clone(),
            self.state.outbox.clone(),
        );
        self.relay = self.relay.map(|relay| {
            relay.with_handler(crate::relay::RelayHandler::new(
                crate::services::relay::RelayService::new(store, clock),
                settings,
                outbox,
            ))
        });
        self
    }

    pub fn key_source(&self) -> &KeySource {
        &self.key_source
    }

    /// Serves until `shutdown` completes, then finishes the requests in flight.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let store = self.state.access.store.clone();
        let instance = self.instance.clone();
        let housekeeping = tokio::spawn(housekeeping(
            store.clone(),
            self.state.access.clock.clone(),
            instance.clone(),
            self.state.access.config.outbox.retention,
        ));
        let outbox = self.state.outbox.clone();
        let dispatcher = outbox.start();
        outbox.start_upkeep().await;
        outbox
            .spawn(jobs::alerts(self.state.access.clone(), outbox.clone()))
            .await;
        // Other instances' changes to what this one remembers (PostgreSQL).
        let (stop_listening, listening) = tokio::sync::watch::channel(false);
        let listener = match &self.state.access.config.database_url {
            store::DatabaseUrl::Postgres(url) => {
                Some(tokio::spawn(store::changes::listen(url.clone(), listening)))
            }
            store::DatabaseUrl::Sqlite(_) => None,
        };
        let (stop_relay, relay_stopping) = tokio::sync::watch::channel(false);
        let relay = self
            .relay
            .map(|relay| tokio::spawn(relay.run(relay_stopping)));
        let router = web::router(self.state.clone());
        http::serve(
            self.listener,
            router,
            &self.state.access.config.http,
            shutdown,
        )
        .await;
        // No new mail comes in now: let what is being sent finish, then release the rest.
        stop_relay.send_replace(true);
        if let Some(relay) = relay {
            let _ = relay.await;
        }
        outbox
            .shutdown(self.state.access.config.outbox.shutdown_grace)
            .await;
        dispatcher.abort();
        housekeeping.abort();
        stop_listening.send_replace(true);
        if let Some(listener) = listener {
            let _ = listener.await;
        }
        if let Ok(mut conn) = store.conn().await
            && let Err(e) = store::instances::deregister(&mut conn, &instance).await
        {
            tracing::warn!(error = %e, "could not deregister this instance");
        }
        Ok(())
    }
}

/// Where this process's pid is meaningful: the boot id and the pid namespace (Linux). Two
/// instances with the same scope see the same processes; empty elsewhere.
fn process_scope() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok();
    let namespace = std::fs::read_link("/proc/self/ns/pid").ok();
    match (boot, namespace) {
        (Some(boot), Some(ns)) => format!("{}/{}", boot.trim(), ns.display()),
        _ => String::new(),
    }
}

/// Releases the claims of instances that are gone: silent for longer than
/// [`HEARTBEAT_STALE`], or, in this process's scope (same boot, same pid namespace), whose
/// process no longer exists (killed, crashed).
async fn recover_claims(
    store: &Store,
    own: &str,
    now: time::OffsetDateTime,
) -> Result<(), store::StoreError> {
    use sqlx::Row as _;
    let mut conn = store.conn().await?;
    let scope = process_scope();
    let own_pid = i64::from(std::process::id());
    let rows = sqlx::query("SELECT id, scope, pid, heartbeat_at FROM instances WHERE id <> $1")
        .bind(own)
        .fetch_all(&mut *conn)
        .await?;
    for row in rows {
        let id: String = row.try_get("id")?;
        let pid: i64 = row.try_get("pid")?;
        let stale =
            row.try_get::<i64, _>("heartbeat_at")? < (now - HEARTBEAT_STALE).unix_timestamp();
        let vanished = !scope.is_empty()
            && row.try_get::<String, _>("scope")? == scope
            && pid != own_pid
            && !std::path::Path::new(&format!("/proc/{pid}")).exists();
        if stale || vanished {
            let released = crate::outbox::release_owned(&mut conn, &id).await?;
            store::instances::deregister(&mut conn, &id).await?;
            if released > 0 {
                tracing::warn!(instance = %id, released, "an instance stopped while sending: its messages are back in the queue");
            }
        }
    }
    Ok(())
}

/// This machine's name, for telling instances apart.
fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// Periodic work: the instance heartbeat; every hour, clean-up of expired sessions and
/// idempotency keys, and the purge of message bodies past their retention.
async fn housekeeping(
    store: Store,
    clock: SharedClock,
    instance: String,
    retention: time::Duration,
) {
    let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
    let mut ticks: u64 = 0;
    loop {
        tick.tick().await;
        let now = clock.now();
        let result = async {
            let mut conn = store.conn().await?;
            store::instances::heartbeat(&mut conn, &instance, now).await?;
            drop(conn);
            recover_claims(&store, &instance, now).await?;
            let mut conn = store.conn().await?;
            if ticks.is_multiple_of(120) {
                let removed = store::sessions::delete_expired(&mut conn, now).await?;
                if removed > 0 {
                    tracing::debug!(removed, "expired sessions removed");
                }
                store::messages::idempotency_purge(&mut conn, now).await?;
                // Failed logins count for 15 minutes; an hour's margin.
                store::auth_failures::purge(&mut conn, now.unix_timestamp() - 3600).await?;
                // Alerts resolved or dismissed 90 days ago, their deliveries over.
                store::alerts::purge(&mut conn, now - time::Duration::days(90)).await?;
                let purged = store::messages::purge_bodies(&mut conn, now - retention, now).await?;
                if purged > 0 {
                    tracing::info!(purged, "message bodies past their retention purged");
                }
            }
            Ok::<_, store::StoreError>(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "housekeeping failed");
        }
        ticks += 1;
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

/// Completes on Ctrl-C or SIGTERM. The handlers are installed at once, when this is called,
/// so a signal that arrives before the future is first polled is not lost.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let ctrl_c = tokio::signal::ctrl_c();
    async move {
        #[cfg(unix)]
        let term = async move {
            match term {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => {},
            () = term => {},
        }
        tracing::info!("shutting down");
    }
}
