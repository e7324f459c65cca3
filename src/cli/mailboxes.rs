//! `herald mailbox authorize MAILBOX --device`: authorizing a mailbox from a shell with a
//! device code. Prints the code and the page to enter it at, polls (in this process) until the
//! provider answers, and ends as the web UI's Authorize does.

use anyhow::bail;

use crate::app;
use crate::config::Config;
use crate::domain::Actor;
use crate::domain::mailbox::{MailboxStatus, StatusReason};
use crate::services::views::AttemptStatus;
use crate::services::{device, lookup};

pub(super) async fn authorize(
    config: Config,
    mailbox: &str,
    org: Option<&str>,
) -> anyhow::Result<()> {
    let services = app::open(config).await?;
    let result = run(&services, mailbox, org).await;
    services.store.close().await;
    result
}

async fn run(
    services: &crate::access::Access,
    mailbox: &str,
    org: Option<&str>,
) -> anyhow::Result<()> {
    let mailbox = super::send::find_mailbox(services, mailbox, org).await?;
    let started = device::start(services, mailbox.org_id, mailbox.id, &Actor::cli()).await?;
    let (started, poll) = match started {
        Ok(started) => started,
        Err(reason) => bail!("no device code ({}): {}", reason.code, why(&reason)),
    };
    println!("{}", started.message);
    println!("Code: {}", started.user_code);
    println!("Page: {}", started.verification_uri);
    println!(
        "Waiting for the sign-in (the code expires at {}) …",
        started
            .expires_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    );
    let attempt = poll.run().await?;
    let current = lookup::mailbox(&services.store, mailbox.id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the mailbox was deleted meanwhile"))?;
    match (attempt.status, current.status) {
        (AttemptStatus::Completed, MailboxStatus::Verified) => {
            println!(
                "Verified: {} ({}) is authorized.",
                current.name, current.username
            );
            Ok(())
        }
        (AttemptStatus::Completed, _) => {
            let reason = current.status_reason.unwrap_or_else(|| {
                StatusReason::new("verification_required", "Authorized, not verified.", None)
            });
            bail!(
                "authorized, but not verified ({}): {}",
                reason.code,
                why(&reason)
            )
        }
        (status, _) => {
            let reason = attempt.reason.unwrap_or_else(|| {
                StatusReason::new(
                    "authorization_incomplete",
                    "The sign-in did not complete.",
                    None,
                )
            });
            bail!(
                "not authorized, {} ({}): {}",
                status.as_str(),
                reason.code,
                why(&reason)
            )
        }
    }
}

/// A reason's message, and on the next line what to do about it.
fn why(reason: &StatusReason) -> String {
    match &reason.action {
        Some(action) => format!("{}\n{action}", reason.message),
        None => reason.message.clone(),
    }
}
