//! The `herald` command line: its clap definitions and the dispatch of each subcommand to the
//! module that runs it. Each subcommand loads the configuration, builds what it needs through
//! [`crate::app`], and calls the same services the web layer uses; none reads or writes the
//! store itself.

mod api_keys;
mod backup;
mod demo;
mod doctor;
mod input;
mod keys;
mod mailboxes;
mod orgs;
mod send;
mod serve;
mod users;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::app;
use crate::config::Config;

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
    /// Check the installation without changing it: the configuration, the database and its
    /// migrations, the master key, the public URL, the clock against the providers', and each
    /// mailbox's servers (DNS, connection, TLS). Prints each check with the fix; exits 1 when
    /// one fails, 2 when the configuration cannot be loaded.
    Doctor {
        /// Print the checks as JSON.
        #[arg(long)]
        json: bool,
    },
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
    /// Work with sending mailboxes.
    #[command(subcommand)]
    Mailbox(MailboxCommand),
    /// Copy the SQLite database, consistently even while Herald serves, into a new backup
    /// directory: `herald.db`, `manifest.json` (version, schema, time, rows per table, the ids
    /// of the master keys its secrets need) and, with --include-key, `master.key`.
    /// PostgreSQL: use pg_dump.
    Backup {
        /// The backup directory to create (it must not exist, unless --force).
        path: PathBuf,
        /// Put the master key in the backup too. The backup then opens every stored secret on
        /// its own: keep it as safe as the key.
        #[arg(long)]
        include_key: bool,
        /// Replace an existing backup at PATH.
        #[arg(long)]
        force: bool,
    },
    /// Put a backup made by `herald backup` in place of the configured SQLite database, keeping
    /// the database it replaces aside. Refuses while Herald runs, when the master key that
    /// sealed the backup's secrets is missing, and a backup from a newer Herald.
    Restore {
        /// The backup directory.
        path: PathBuf,
        /// Restore although an instance's heartbeat is recent (one that crashed); never while
        /// another process has the database open.
        #[arg(long)]
        force: bool,
    },
    /// Copy every table of the SQLite database into an empty PostgreSQL database, in one
    /// transaction, secrets still sealed, queued and held mail included; then check it.
    MigrateToPostgres {
        /// The PostgreSQL database to fill (postgres://USER@HOST/DATABASE); it must be empty.
        #[arg(long, value_name = "URL")]
        to: String,
        /// Copy although an instance's heartbeat is recent (one that crashed).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum MailboxCommand {
    /// Authorize an OAuth2 mailbox with a device code (RFC 8628): prints a code and a page
    /// where a person enters it on any device, signs in as the mailbox's account and accepts;
    /// then waits for the outcome. Exits 0 when the mailbox is Verified.
    Authorize {
        /// The mailbox, by id or name.
        mailbox: String,
        /// The organization, by id or name, when mailbox names repeat across organizations.
        #[arg(long)]
        org: Option<String>,
        /// Use a device code (the only way from a shell: Authorize in the web UI otherwise).
        #[arg(long, required = true)]
        device: bool,
    },
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
        keys::generate();
        return ExitCode::SUCCESS;
    }
    if let Command::Doctor { json } = cli.command {
        return doctor::main(cli.config.as_deref(), json);
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
        Command::Serve => serve::serve(config).await,
        Command::Demo { data_dir } => demo::run(config, data_dir).await,
        Command::Migrate => serve::migrate(config).await,
        Command::Org(cmd) => orgs::run(config, cmd).await,
        Command::Send(args) => send::run(config, args).await,
        Command::Mailbox(MailboxCommand::Authorize { mailbox, org, .. }) => {
            mailboxes::authorize(config, &mailbox, org.as_deref()).await
        }
        Command::User(UserCommand::Add(args)) => users::add(config, args).await,
        Command::Apikey(cmd) => api_keys::run(config, cmd).await,
        Command::Keys(KeysCommand::Rotate {
            new_key_stdin,
            force,
        }) => keys::rotate(config, new_key_stdin, force).await,
        Command::Backup {
            path,
            include_key,
            force,
        } => backup::backup(config, &path, include_key, force).await,
        Command::Restore { path, force } => backup::restore(config, &path, force).await,
        Command::MigrateToPostgres { to, force } => {
            backup::migrate_to_postgres(config, &to, force).await
        }
        Command::Keys(KeysCommand::Generate) | Command::Doctor { .. } => {
            unreachable!("handled before loading the configuration")
        }
    }
}
