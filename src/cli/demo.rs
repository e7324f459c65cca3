//! `herald demo`: Herald with the sandbox provider (a local stand-in for Microsoft 365) on a
//! fresh data directory, with an organization, an admin and a sandbox mailbox user ready to
//! use, and everything needed to connect the mailbox printed at the start.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use secrecy::{ExposeSecret as _, SecretString};

use crate::app::{self, App};
use crate::config::Config;
use crate::domain::Actor;
use crate::domain::presets::SandboxPreset;
use crate::sandbox::{RunningSandbox, SandboxClient, Switches};
use crate::services::{self, NewUserInput};

pub(super) async fn run(mut config: Config, data_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let data = DataDir::choose(data_dir)?;
    config.keep_data_in(data.path.clone());
    config.dev = true;
    let sandbox = start_sandbox(&config).await?;
    let shutdown = app::shutdown_signal();
    let app = App::build(config)
        .await?
        .with_sandbox(preset(&sandbox), sandbox.state.clone());
    let state = app.state().clone();
    let accounts = seed(&app, &sandbox, &data).await?;
    print_welcome(&state.access.config, &sandbox, &accounts, &data)?;
    let result = app.serve(shutdown).await;
    drop(sandbox);
    result
}

/// Where the demo keeps its data: the directory given, which must be empty or new, or a
/// temporary one deleted on exit (when this is dropped).
struct DataDir {
    path: PathBuf,
    _temporary: Option<tempfile::TempDir>,
}

impl DataDir {
    fn choose(given: Option<PathBuf>) -> anyhow::Result<Self> {
        match given {
            Some(dir) => {
                if dir.exists()
                    && std::fs::read_dir(&dir)
                        .with_context(|| format!("cannot read {}", dir.display()))?
                        .next()
                        .is_some()
                {
                    bail!(
                        "{} is not empty: the demo starts from nothing each time (its sandbox forgets everything on exit), so give it an empty or new directory",
                        dir.display()
                    );
                }
                Ok(Self {
                    path: dir,
                    _temporary: None,
                })
            }
            None => {
                let temporary = tempfile::Builder::new()
                    .prefix("herald-demo-")
                    .tempdir()
                    .context("cannot make a temporary directory")?;
                Ok(Self {
                    path: temporary.path().to_owned(),
                    _temporary: Some(temporary),
                })
            }
        }
    }

    fn kept(&self) -> bool {
        self._temporary.is_none()
    }
}

/// Starts the sandbox on the configured addresses, with the configured switches on.
async fn start_sandbox(config: &Config) -> anyhow::Result<RunningSandbox> {
    let mut settings = config.sandbox.clone();
    let switches: Switches = match settings.switches.clone() {
        Some(value) => serde_json::from_value(value)
            .context("HERALD_SANDBOX_SWITCHES (sandbox_switches) is not valid")?,
        None => Switches::default(),
    };
    let http = bind(settings.listen, "the sandbox", "HERALD_SANDBOX_LISTEN").await?;
    let smtp = bind(
        settings.smtp_listen,
        "the sandbox's SMTP server",
        "HERALD_SANDBOX_SMTP_LISTEN",
    )
    .await?;
    settings.adopt_bound_address(http.local_addr()?);
    let sandbox = RunningSandbox::start_on(http, smtp, settings.public_url.as_str()).await?;
    sandbox.state.set_switches(switches);
    Ok(sandbox)
}

/// What a new sandbox mailbox is filled in with.
fn preset(sandbox: &RunningSandbox) -> SandboxPreset {
    SandboxPreset {
        base_url: sandbox.oauth.base_url.clone(),
        tenant: sandbox.oauth.tenant.clone(),
        smtp_host: sandbox.smtp_addr.ip().to_string(),
        smtp_port: sandbox.smtp_addr.port(),
        ca_pem: sandbox.ca.ca_pem().to_owned(),
    }
}

/// The accounts the demo makes, printed once at the start.
struct Accounts {
    admin_email: &'static str,
    admin_password: String,
    mailbox_user: &'static str,
    mailbox_password: String,
    client: SandboxClient,
    ca_file: PathBuf,
}

/// The sandbox's shared mailbox, which the mailbox user may send as.
const SHARED_MAILBOX: &str = "sales@contoso.com";

/// Makes the organization and its admin in Herald; the mailbox user and Herald's app
/// registration in the sandbox; and the sandbox's CA certificate in the data directory.
async fn seed(app: &App, sandbox: &RunningSandbox, data: &DataDir) -> anyhow::Result<Accounts> {
    let state = app.state();
    let actor = Actor::cli();
    let org =
        services::create_org(&state.access.store, "Contoso", &actor, state.access.now()).await?;
    let admin_email = "admin@contoso.com";
    let admin_password = crate::crypto::random_token()[..20].to_owned();
    services::create_user(
        &state.access.store,
        org.id,
        NewUserInput {
            email: admin_email.into(),
            password: SecretString::from(admin_password.clone()),
            role: "admin".into(),
        },
        &actor,
        state.access.now(),
    )
    .await?;
    let mailbox_user = "support@contoso.com";
    let mailbox_password = crate::crypto::random_token()[..20].to_owned();
    sandbox
        .state
        .add_user(mailbox_user, SecretString::from(mailbox_password.clone()));
    // A shared mailbox the user may send as (Full Access and Send As), as Exchange has them.
    sandbox
        .state
        .grant_mailbox_access(SHARED_MAILBOX, mailbox_user, true);
    let client = sandbox
        .state
        .register_client("Herald", vec![state.access.config.redirect_uri()]);
    let ca_file = data.path.join("sandbox-ca.pem");
    std::fs::write(&ca_file, sandbox.ca.ca_pem())
        .with_context(|| format!("cannot write {}", ca_file.display()))?;
    Ok(Accounts {
        admin_email,
        admin_password,
        mailbox_user,
        mailbox_password,
        client,
        ca_file,
    })
}

fn print_welcome(
    config: &Config,
    sandbox: &RunningSandbox,
    accounts: &Accounts,
    data: &DataDir,
) -> anyhow::Result<()> {
    let Accounts {
        admin_email,
        admin_password,
        mailbox_user,
        mailbox_password,
        client,
        ca_file,
    } = accounts;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "Herald demo is running with the sandbox provider. Press Ctrl-C to stop."
    )?;
    writeln!(out, "Herald URL: {}", config.public_base())?;
    writeln!(out, "Admin sign-in: {admin_email} / {admin_password}")?;
    writeln!(
        out,
        "Sandbox URL: {} (tenant sandbox; stands in for Microsoft 365)",
        sandbox.oauth.base_url
    )?;
    writeln!(
        out,
        "Sandbox user sign-in: {mailbox_user} / {mailbox_password}"
    )?;
    writeln!(
        out,
        "Sandbox shared mailbox: {SHARED_MAILBOX} (Full Access and Send As for {mailbox_user})"
    )?;
    writeln!(out, "Sandbox app client ID: {}", client.client_id)?;
    writeln!(
        out,
        "Sandbox app client secret: {} (secret ID {})",
        client.secret.expose_secret(),
        client.secret_id
    )?;
    writeln!(
        out,
        "Authorization URL: {}",
        sandbox.oauth.authorization_endpoint()
    )?;
    writeln!(out, "Token URL: {}", sandbox.oauth.token_endpoint())?;
    writeln!(out, "Redirect URI: {}", config.redirect_uri())?;
    writeln!(
        out,
        "Sandbox SMTP: {} (STARTTLS; CA certificate {})",
        sandbox.smtp_addr,
        ca_file.display()
    )?;
    writeln!(
        out,
        "Data directory: {}{}",
        data.path.display(),
        if data.kept() {
            ""
        } else {
            " (deleted on exit)"
        }
    )?;
    out.flush()?;
    Ok(())
}

/// Binds `addr` for `what`, or says which setting moves it.
async fn bind(
    addr: std::net::SocketAddr,
    what: &str,
    setting: &str,
) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for {what}; set {setting}"))
}
