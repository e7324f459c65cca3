//! `herald doctor`: checks an installation without changing it (the configuration, the
//! database and its migrations, the master key, the public URL, the clock against the
//! providers', and the servers each mailbox reaches) and says of each what is wrong and what
//! to do about it. Every network check has a deadline ([`DEADLINE`]), so the doctor never
//! hangs on a host that does not answer.

mod database;
mod sealing;
mod servers;
mod skew;
mod urls;

use std::time::Duration;

use crate::clock::SharedClock;
use crate::config::{Config, ConfigError};
use crate::domain::mailbox::Mailbox;
use crate::store::{self, Store};

/// The longest any one network check may take.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    /// Works, but deserves attention.
    Warn,
    /// Broken: Herald will not work (or not safely) until it is fixed.
    Fail,
    /// Not run, because a check it depends on failed.
    Skip,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::Warn => "WARN",
            Self::Fail => "FAIL",
            Self::Skip => "SKIP",
        }
    }
}

/// One check's result: what was checked, how it came out, what was found, and what to do.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Check {
    pub name: String,
    pub outcome: Outcome,
    pub detail: String,
    /// What an admin should do, when something is to be done.
    pub fix: Option<String>,
}

impl Check {
    fn new(name: &str, outcome: Outcome, detail: impl Into<String>) -> Self {
        Self {
            name: name.to_owned(),
            outcome,
            detail: detail.into(),
            fix: None,
        }
    }

    fn ok(name: &str, detail: impl Into<String>) -> Self {
        Self::new(name, Outcome::Ok, detail)
    }

    fn warn(name: &str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(name, Outcome::Warn, detail).with_fix(fix)
    }

    fn fail(name: &str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(name, Outcome::Fail, detail).with_fix(fix)
    }

    fn skip(name: &str, why: &str) -> Self {
        Self::new(name, Outcome::Skip, why)
    }

    fn with_fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

/// Every check's result, in the order they ran.
#[derive(Debug, serde::Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    /// Whether any check failed.
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.outcome == Outcome::Fail)
    }
}

/// The configuration's check when it cannot be loaded: the error names the setting at fault.
pub fn configuration_failed(error: &ConfigError) -> Check {
    Check::fail(
        "configuration",
        error.to_string(),
        "correct the setting named here, in the environment (HERALD_*) or the configuration file, and run `herald doctor` again",
    )
}

/// Runs every check on a loaded configuration. Changes nothing: no migration, no key file,
/// no sign-in at any server.
pub async fn run(config: &Config, clock: &SharedClock) -> Report {
    crate::tls::install_crypto_provider();
    let mut checks = vec![configuration(config)];
    checks.extend(urls::check(config));
    let (database, store) = database::check(config).await;
    checks.push(database);
    match store {
        Some(store) => {
            checks.extend(with_store(config, &store, clock).await);
            store.close().await;
        }
        None => {
            let why = "needs the database at this binary's schema";
            for name in ["master key", "herald serve", "clock", "mailboxes"] {
                checks.push(Check::skip(name, why));
            }
        }
    }
    Report { checks }
}

/// The checks that read the database.
async fn with_store(config: &Config, store: &Store, clock: &SharedClock) -> Vec<Check> {
    let mut checks = vec![
        sealing::check(config, store).await,
        database::instances(store, clock.now()).await,
    ];
    let mailboxes = match mailboxes(store).await {
        Ok(mailboxes) => mailboxes,
        Err(e) => {
            checks.push(Check::fail(
                "mailboxes",
                format!("cannot read the mailboxes: {e}"),
                "check the database (see the database check above)",
            ));
            return checks;
        }
    };
    checks.extend(skew::check(config, &mailboxes, clock).await);
    checks.extend(servers::check(config, &mailboxes, clock.now()).await);
    checks
}

/// The configuration loaded; development mode deserves a word.
fn configuration(config: &Config) -> Check {
    let detail = format!(
        "loaded; listening on {}, data in {}",
        config.listen,
        config.data_dir.display()
    );
    if config.dev {
        Check::warn(
            "configuration",
            format!("{detail}; development mode is on (HERALD_DEV)"),
            "turn HERALD_DEV off for a real installation: it allows plain http:// and loopback servers",
        )
    } else {
        Check::ok("configuration", detail)
    }
}

/// Every mailbox of every organization.
async fn mailboxes(store: &Store) -> Result<Vec<Mailbox>, store::StoreError> {
    let mut conn = store.conn().await?;
    let mut all = Vec::new();
    for org in store::orgs::list(&mut conn).await? {
        all.extend(store::mailboxes::all_of_org(&mut conn, org.id).await?);
    }
    Ok(all)
}
