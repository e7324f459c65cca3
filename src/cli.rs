//! The `herald` command line. Each subcommand loads the configuration, builds what it needs
//! through [`crate::app`], and calls the same services the web layer uses.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use secrecy::{ExposeSecret, SecretString};

use crate::app::{self, App};
use crate::config::Config;
use crate::domain::{Actor, ApiKeyId};
use crate::keys::{self, KeySource};
use crate::secrets::MasterKey;
use crate::services::{self, NewUserInput};
use crate::store;

/// Herald: a self-hosted outgoing-mail gateway. Connect Microsoft 365, Google and SMTP mailboxes
/// with OAuth 2.0 or basic auth, and let applications send through them.
#[derive(Debug, Parser)]
#[command(name = "herald", version, propagate_version = true)]
pub struct Cli {
    /// Configuration file (TOML). Environment variables (HERALD_*) override it.
    #[arg(long, global = true, env = "HERALD_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service: migrate the database, then serve the web UI and the API.
    Serve,
    /// Run Herald with the sandbox provider (a local stand-in for Microsoft 365) on a fresh data
    /// directory, with an organization, an admin and a sandbox mailbox user ready to use.
    Demo {
        /// Keep the demo's data here (an empty or new directory) instead of a temporary one
        /// deleted on exit. The demo always uses SQLite.
        #[arg(long, value_name = "PATH")]
        data_dir: Option<PathBuf>,
    },
    /// Apply pending database migrations and exit.
    Migrate,
    /// Manage organizations.
    #[command(subcommand)]
    Org(OrgCommand),
    /// Manage users who sign in to the web UI.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage API keys for applications.
    #[command(subcommand)]
    Apikey(ApiKeyCommand),
    /// Manage the master key that seals stored secrets.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Queue one message for a mailbox; `--wait` waits for the outcome.
    Send(SendArgs),
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// The mailbox, by id or name.
    #[arg(long)]
    pub mailbox: String,
    /// The organization, by id or name, when mailbox names repeat across organizations.
    #[arg(long)]
    pub org: Option<String>,
    /// A recipient; repeat for several.
    #[arg(long, required = true)]
    pub to: Vec<String>,
    #[arg(long)]
    pub subject: String,
    /// The plain-text body.
    #[arg(long, required_unless_present = "html")]
    pub text: Option<String>,
    /// The HTML body.
    #[arg(long)]
    pub html: Option<String>,
    /// Wait for the outcome and print it (without a running `herald serve`, this command
    /// delivers the message itself).
    #[arg(long)]
    pub wait: bool,
    /// How long `--wait` waits, in seconds.
    #[arg(long, default_value_t = 60)]
    pub wait_secs: u64,
}

#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Create an organization and print its id.
    Add {
        /// The organization's name (unique).
        name: String,
    },
    /// List organizations: id and name, one per line.
    List,
    /// Change an organization's settings that only the operator decides.
    Set {
        /// The organization, by id or name.
        org: String,
        /// Whether the installation's default sender (HERALD_DEFAULT_SENDER) sends for it while
        /// it has no Verified mailbox, when HERALD_DEFAULT_SENDER_ORGS is `listed` (the default).
        #[arg(long, value_name = "allow|deny")]
        default_sender: Option<Allowance>,
    },
}

/// `allow` or `deny`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Allowance {
    Allow,
    Deny,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user. The password is asked for at the terminal, or read from stdin.
    Add(UserAdd),
}

#[derive(Debug, Args)]
pub struct UserAdd {
    /// The organization, by id or name.
    #[arg(long)]
    pub org: String,
    /// The user's email, used to sign in.
    #[arg(long)]
    pub email: String,
    /// `admin` (manages everything in the organization) or `member` (reads only).
    #[arg(long)]
    pub role: String,
    /// Read the password from the first line of standard input instead of prompting.
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Create an API key. The key is printed once, alone on the last line.
    Add {
        /// The organization, by id or name.
        #[arg(long)]
        org: String,
        /// `admin` (manages everything) or `sender` (sends mail only).
        #[arg(long)]
        role: String,
        /// A label telling what the key is for.
        #[arg(long)]
        name: String,
        /// Limit the key to this mailbox (id or name); repeat for several. Default: all.
        #[arg(long = "mailbox")]
        mailboxes: Vec<String>,
    },
    /// List an organization's API keys (never the keys themselves).
    List {
        /// The organization, by id or name.
        #[arg(long)]
        org: String,
    },
    /// Revoke an API key at once.
    Revoke {
        /// The key's id, as printed by `herald apikey add` or `list`.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Replace the master key: re-seal every stored secret under a new key in one transaction,
    /// then retire the old key.
    Rotate {
        /// Read the new key (base64 of 32 bytes) from standard input. Required when the key comes
        /// from HERALD_MASTER_KEY; with a key file, Herald makes the new key itself.
        #[arg(long)]
        new_key_stdin: bool,
        /// Rotate even though a `herald serve` seems to be running (its heartbeat is recent).
        /// A running instance keeps sealing with the old key: stop them all first.
        #[arg(long)]
        force: bool,
    },
    /// Print a new random master key, for HERALD_MASTER_KEY.
    Generate,
}

/// Runs the command line and turns any error into a message and a non-zero exit.
pub fn main(cli: Cli) -> ExitCode {
    if let Command::Keys(KeysCommand::Generate) = cli.command {
        println!("{}", MasterKey::generate().to_base64().as_str());
        return ExitCode::SUCCESS;
    }
    let config = match Config::from_env(cli.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    app::init_logging(&config);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config, cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve => serve(config).await,
        Command::Demo { data_dir } => demo(config, data_dir).await,
        Command::Migrate => {
            let store = app::open_store(&config).await?;
            println!(
                "The {} database is up to date.",
                config.database_url.backend_name()
            );
            store.close().await;
            Ok(())
        }
        Command::Org(cmd) => org(config, cmd).await,
        Command::Send(args) => send(config, args).await,
        Command::User(UserCommand::Add(args)) => user_add(config, args).await,
        Command::Apikey(cmd) => apikey(config, cmd).await,
        Command::Keys(KeysCommand::Rotate {
            new_key_stdin,
            force,
        }) => keys_rotate(config, new_key_stdin, force).await,
        Command::Keys(KeysCommand::Generate) => {
            unreachable!("handled before loading the configuration")
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
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
    if let Some(token) = services::issue_setup_token(&state.access.store).await? {
        writeln!(
            out,
            "No user exists yet. Open this link within 1 hour to create the first organization and its admin:\n  {public}/setup?token={token}"
        )?;
    }
    out.flush()?;
    drop(out);
    app.serve(shutdown).await
}

async fn demo(mut config: Config, data_dir: Option<PathBuf>) -> anyhow::Result<()> {
    use crate::config::DatabaseUrl;
    use crate::sandbox::RunningSandbox;

    let temporary;
    let (dir, kept) = match data_dir {
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
            (dir, true)
        }
        None => {
            temporary = tempfile::Builder::new()
                .prefix("herald-demo-")
                .tempdir()
                .context("cannot make a temporary directory")?;
            (temporary.path().to_owned(), false)
        }
    };
    config.data_dir = dir.clone();
    config.database_url = DatabaseUrl::Sqlite(dir.join("herald.db"));
    config.dev = true;

    let mut sandbox_settings = config.sandbox.clone();
    let switches: crate::sandbox::Switches = match sandbox_settings.switches.clone() {
        Some(value) => serde_json::from_value(value)
            .context("HERALD_SANDBOX_SWITCHES (sandbox_switches) is not valid")?,
        None => crate::sandbox::Switches::default(),
    };
    let sandbox_http = tokio::net::TcpListener::bind(sandbox_settings.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} for the sandbox; set HERALD_SANDBOX_LISTEN",
                sandbox_settings.listen
            )
        })?;
    let sandbox_smtp = tokio::net::TcpListener::bind(sandbox_settings.smtp_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} for the sandbox's SMTP server; set HERALD_SANDBOX_SMTP_LISTEN",
                sandbox_settings.smtp_listen
            )
        })?;
    sandbox_settings.adopt_bound_address(sandbox_http.local_addr()?);
    let sandbox = RunningSandbox::start_on(
        sandbox_http,
        sandbox_smtp,
        sandbox_settings.public_url.as_str(),
    )
    .await?;
    sandbox.state.set_switches(switches);

    let shutdown = app::shutdown_signal();
    let app = App::build(config).await?.with_sandbox(
        crate::domain::presets::SandboxPreset {
            base_url: sandbox.oauth.base_url.clone(),
            tenant: sandbox.oauth.tenant.clone(),
            smtp_host: sandbox.smtp_addr.ip().to_string(),
            smtp_port: sandbox.smtp_addr.port(),
            ca_pem: sandbox.ca.ca_pem().to_owned(),
        },
        sandbox.state.clone(),
    );
    let state = app.state().clone();
    let actor = Actor::cli();
    let org = services::create_org(&state.access.store, "Contoso", &actor).await?;
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
    )
    .await?;
    let mailbox_user = "support@contoso.com";
    let mailbox_password = crate::crypto::random_token()[..20].to_owned();
    sandbox
        .state
        .add_user(mailbox_user, SecretString::from(mailbox_password.clone()));
    let client = sandbox
        .state
        .register_client("Herald", vec![state.access.config.redirect_uri()]);
    let ca_file = dir.join("sandbox-ca.pem");
    std::fs::write(&ca_file, sandbox.ca.ca_pem())
        .with_context(|| format!("cannot write {}", ca_file.display()))?;

    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "Herald demo is running with the sandbox provider. Press Ctrl-C to stop."
    )?;
    writeln!(out, "Herald URL: {}", state.access.config.public_base())?;
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
    writeln!(out, "Redirect URI: {}", state.access.config.redirect_uri())?;
    writeln!(
        out,
        "Sandbox SMTP: {} (STARTTLS; CA certificate {})",
        sandbox.smtp_addr,
        ca_file.display()
    )?;
    writeln!(
        out,
        "Data directory: {}{}",
        dir.display(),
        if kept { "" } else { " (deleted on exit)" }
    )?;
    out.flush()?;
    drop(out);
    let result = app.serve(shutdown).await;
    drop(sandbox);
    result
}

async fn send(config: Config, args: SendArgs) -> anyhow::Result<()> {
    use crate::domain::message::{MessageSource, MessageStatus};
    use crate::services::send::{self, Body, Caller, SendRequest, Submission};
    let services = app::open(config).await?;
    let mut conn = services.store.conn().await?;
    let mut found = store::mailboxes::find_any(&mut conn, &args.mailbox).await?;
    if let Some(org) = &args.org {
        let org = store::orgs::find(&mut conn, org)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no organization is called or has the id `{org}`"))?;
        found.retain(|m| m.org_id == org.id);
    }
    drop(conn);
    let mailbox = match found.len() {
        0 => bail!("no mailbox is called or has the id `{}`", args.mailbox),
        1 => found.remove(0),
        _ => bail!(
            "several organizations have a mailbox called `{}`: add --org",
            args.mailbox
        ),
    };
    let caller = Caller {
        org_id: mailbox.org_id,
        api_key_id: None,
        allowed: None,
        source: MessageSource::Cli,
    };
    let request = SendRequest {
        mailbox: Some(mailbox.id.to_string()),
        to: args.to,
        subject: Some(args.subject),
        text: args.text,
        html: args.html,
        ..SendRequest::default()
    };
    let accepted = send::accept(
        &services.store,
        &services.config.outbox,
        &caller,
        Submission {
            mailbox: request.mailbox.clone(),
            body: Body::Json(Box::new(request)),
            idempotency_key: None,
            request_digest: String::new(),
        },
        time::OffsetDateTime::now_utc(),
    )
    .await?;
    if !args.wait {
        println!(
            "Accepted as {} ({}); `herald serve` delivers it. Follow it with GET /api/v1/messages/{}.",
            accepted.id, accepted.status, accepted.id
        );
        services.store.close().await;
        return Ok(());
    }
    // A serving instance delivers it; without one, this process does.
    let serving = {
        let mut conn = services.store.conn().await?;
        let since = time::OffsetDateTime::now_utc() - app::HEARTBEAT_STALE;
        !store::instances::alive(&mut conn, since).await?.is_empty()
    };
    let local = (!serving).then(|| {
        let outbox = crate::outbox::Outbox::new(
            services.clone(),
            crate::outbox::Tuning {
                linger: std::time::Duration::ZERO,
                ..Default::default()
            },
            format!("cli-{}", uuid::Uuid::now_v7()),
        );
        let dispatcher = outbox.start();
        (outbox, dispatcher)
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(args.wait_secs);
    let message = loop {
        let message = {
            let mut conn = services.store.conn().await?;
            store::messages::get_any(&mut conn, &accepted.id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("the message disappeared from the outbox"))?
        };
        let retrying = message.status == MessageStatus::Queued && message.attempts > 0;
        if message.status.is_final()
            || message.status == MessageStatus::Held
            || retrying
            || std::time::Instant::now() >= deadline
        {
            break message;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    if let Some((outbox, dispatcher)) = local {
        outbox.shutdown(std::time::Duration::from_secs(5)).await;
        dispatcher.abort();
    }
    let reply = message
        .last_reply
        .as_ref()
        .map(|r| r.line())
        .unwrap_or_default();
    let why = |reason: Option<crate::domain::mailbox::StatusReason>| {
        reason
            .map(|r| {
                format!(
                    "{}{}",
                    r.message,
                    r.action.map(|a| format!("\n{a}")).unwrap_or_default()
                )
            })
            .unwrap_or_default()
    };
    let result = match message.status {
        MessageStatus::Sent => {
            println!(
                "Sent through {} ({}): {reply}",
                mailbox.name, mailbox.username
            );
            Ok(())
        }
        MessageStatus::Held => {
            let current = {
                let mut conn = services.store.conn().await?;
                store::mailboxes::get_any(&mut conn, mailbox.id).await?
            };
            let code = current
                .and_then(|m| m.status_reason)
                .map(|r| r.code)
                .unwrap_or_else(|| "mailbox_not_verified".into());
            Err(anyhow::anyhow!(
                "not sent yet, held ({code}): {}\nMessage {} is sent once the mailbox is verified.",
                why(message.reason),
                message.id
            ))
        }
        MessageStatus::Failed | MessageStatus::Cancelled => Err(anyhow::anyhow!(
            "not sent ({}): {}",
            message
                .reason
                .as_ref()
                .map(|r| r.code.as_str())
                .unwrap_or("failed"),
            why(message.reason.clone())
        )),
        _ if message.attempts > 0 => Err(anyhow::anyhow!(
            "not sent yet, will retry ({reply}): message {} stays queued and `herald serve` keeps trying",
            message.id
        )),
        _ => Err(anyhow::anyhow!(
            "still {} after {} s: message {} stays queued",
            message.status,
            args.wait_secs,
            message.id
        )),
    };
    services.store.close().await;
    result
}

async fn org(config: Config, cmd: OrgCommand) -> anyhow::Result<()> {
    let store = app::open_store(&config).await?;
    match cmd {
        OrgCommand::Add { name } => {
            let org = services::create_org(&store, &name, &Actor::cli()).await?;
            println!("{}", org.id);
        }
        OrgCommand::List => {
            let mut conn = store.conn().await?;
            for org in store::orgs::list(&mut conn).await? {
                println!("{}\t{}", org.id, org.name);
            }
        }
        OrgCommand::Set {
            org,
            default_sender,
        } => {
            let org = services::find_org(&store, &org).await?;
            let Some(choice) = default_sender else {
                anyhow::bail!(
                    "nothing to change: give --default-sender allow or --default-sender deny"
                );
            };
            let allowed = choice == Allowance::Allow;
            services::default_sender::set_allowed(&store, org.id, allowed, &Actor::cli()).await?;
            let scope = match config.outbox.default_sender_orgs {
                crate::config::DefaultSenderOrgs::Listed => "",
                crate::config::DefaultSenderOrgs::All => {
                    " (HERALD_DEFAULT_SENDER_ORGS=all serves every organization regardless)"
                }
            };
            println!(
                "The default sender {} for {}{scope}.",
                if allowed {
                    "now sends"
                } else {
                    "no longer sends"
                },
                org.name
            );
        }
    }
    store.close().await;
    Ok(())
}

async fn user_add(config: Config, args: UserAdd) -> anyhow::Result<()> {
    let password = if args.password_stdin {
        read_stdin_line().context("cannot read the password from standard input")?
    } else {
        prompt_new_password()?
    };
    let store = app::open_store(&config).await?;
    let org = services::find_org(&store, &args.org).await?;
    let user = services::create_user(
        &store,
        org.id,
        NewUserInput {
            email: args.email,
            password,
            role: args.role,
        },
        &Actor::cli(),
    )
    .await?;
    println!(
        "Created {} user {} in {} ({}).",
        user.role.as_str(),
        user.email,
        org.name,
        user.id
    );
    store.close().await;
    Ok(())
}

fn parse_key_id(raw: &str) -> anyhow::Result<ApiKeyId> {
    raw.trim().parse().map_err(|_| {
        anyhow::anyhow!("`{raw}` is not an API key id (a UUID, as printed by `herald apikey list`)")
    })
}

async fn apikey(config: Config, cmd: ApiKeyCommand) -> anyhow::Result<()> {
    if let ApiKeyCommand::Revoke { id } = &cmd {
        parse_key_id(id)?;
    }
    let store = app::open_store(&config).await?;
    match cmd {
        ApiKeyCommand::Add {
            org,
            role,
            name,
            mailboxes,
        } => {
            let org = services::find_org(&store, &org).await?;
            let (key, token) =
                services::create_api_key(&store, org.id, &name, &role, &mailboxes, &Actor::cli())
                    .await?;
            println!(
                "Created {} API key \"{}\" ({}) for {}.",
                key.role.as_str(),
                key.name,
                key.id,
                org.name
            );
            println!("Store this key now; Herald keeps only its digest and cannot show it again:");
            println!("{}", token.expose());
        }
        ApiKeyCommand::List { org } => {
            let org = services::find_org(&store, &org).await?;
            let mut conn = store.conn().await?;
            let mut after = None;
            loop {
                let page = store::api_keys::list(&mut conn, org.id, after.as_deref(), 200).await?;
                for key in &page.items {
                    let state = if key.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "live"
                    };
                    println!(
                        "{}\t{}…\t{}\t{}\t{}",
                        key.id,
                        key.prefix,
                        key.role.as_str(),
                        state,
                        key.name
                    );
                }
                match page.next_cursor {
                    Some(cursor) => after = Some(cursor),
                    None => break,
                }
            }
        }
        ApiKeyCommand::Revoke { id } => {
            let id = parse_key_id(&id)?;
            let mut conn = store.conn().await?;
            let Some(key) = store::api_keys::get_any(&mut conn, id).await? else {
                bail!("no API key has the id {id}");
            };
            drop(conn);
            let key = services::revoke_api_key(&store, key.org_id, id, &Actor::cli()).await?;
            println!("Revoked API key \"{}\" ({}…).", key.name, key.prefix);
        }
    }
    store.close().await;
    Ok(())
}

async fn keys_rotate(config: Config, new_key_stdin: bool, force: bool) -> anyhow::Result<()> {
    let new_key = if new_key_stdin {
        let raw = read_stdin_line().context("cannot read the new key from standard input")?;
        Some(keys::parse_key(raw.expose_secret()).map_err(|e| anyhow::anyhow!("the new key {e}"))?)
    } else {
        None
    };
    let store = app::open_store(&config).await?;
    let rotation = keys::rotate(&config, &store, new_key, force).await?;
    let old: Vec<String> = rotation
        .old_key_ids
        .iter()
        .map(ToString::to_string)
        .collect();
    println!(
        "Re-sealed {} secret(s) under master key {}; retired {}.",
        rotation.resealed,
        rotation.new_key.id(),
        old.join(", ")
    );
    match rotation.source {
        KeySource::File(path) => println!(
            "The key file {} now holds only the new key.",
            path.display()
        ),
        KeySource::Environment => println!(
            "Set HERALD_MASTER_KEY to the new key and restart every Herald instance: the old key no longer opens anything."
        ),
    }
    store.close().await;
    Ok(())
}

fn read_stdin_line() -> anyhow::Result<SecretString> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let trimmed = line.trim_end_matches(['\r', '\n']).to_owned();
    zeroize::Zeroize::zeroize(&mut line);
    Ok(SecretString::from(trimmed))
}

fn prompt_new_password() -> anyhow::Result<SecretString> {
    if !std::io::stdin().is_terminal() {
        bail!(
            "no terminal to ask for the password: pass --password-stdin and write the password to standard input"
        );
    }
    let first = rpassword::prompt_password("Password: ").context("cannot read the password")?;
    let second =
        rpassword::prompt_password("Repeat the password: ").context("cannot read the password")?;
    if first != second {
        bail!("the two passwords differ");
    }
    Ok(SecretString::from(first))
}
