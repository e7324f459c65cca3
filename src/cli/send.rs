//! `herald send`: queue one message for a mailbox found by id or name; with `--wait`, wait for
//! its outcome and print it, delivering it from this process when no `herald serve` runs.

use anyhow::bail;

use super::SendArgs;
use crate::access::Access;
use crate::app;
use crate::config::Config;
use crate::domain::mailbox::{Mailbox, StatusReason};
use crate::domain::message::{Message, MessageSource, MessageStatus};
use crate::services::lookup;
use crate::services::send::{self, Body, Caller, SendRequest, Submission};

pub(super) async fn run(config: Config, args: SendArgs) -> anyhow::Result<()> {
    let services = app::open(config).await?;
    let mailbox = find_mailbox(&services, &args.mailbox, args.org.as_deref()).await?;
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
        services.now(),
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
    let serving = lookup::an_instance_is_serving(&services.store, services.now()).await?;
    let local = (!serving).then(|| app::local_outbox(&services));
    let message = wait_for_outcome(&services, &accepted.id, args.wait_secs).await?;
    if let Some((outbox, dispatcher)) = local {
        outbox.shutdown(std::time::Duration::from_secs(5)).await;
        dispatcher.abort();
    }
    let result = report(&services, &mailbox, message, args.wait_secs).await;
    services.store.close().await;
    result
}

/// The one mailbox a name or id (and `--org`) name.
pub(super) async fn find_mailbox(
    services: &Access,
    mailbox: &str,
    org: Option<&str>,
) -> anyhow::Result<Mailbox> {
    let mut found = lookup::mailboxes(&services.store, mailbox).await?;
    if let Some(org) = org {
        let org = lookup::org(&services.store, org)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no organization is called or has the id `{org}`"))?;
        found.retain(|m| m.org_id == org.id);
    }
    Ok(match found.len() {
        0 => bail!("no mailbox is called or has the id `{mailbox}`"),
        1 => found.remove(0),
        _ => bail!("several organizations have a mailbox called `{mailbox}`: add --org"),
    })
}

/// The message once it is sent, failed, held or waiting to be retried, or as it is when
/// `wait_secs` have passed.
async fn wait_for_outcome(services: &Access, id: &str, wait_secs: u64) -> anyhow::Result<Message> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(wait_secs);
    loop {
        let message = lookup::message(&services.store, id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("the message disappeared from the outbox"))?;
        let retrying = message.status == MessageStatus::Queued && message.attempts > 0;
        if message.status.is_final()
            || message.status == MessageStatus::Held
            || retrying
            || std::time::Instant::now() >= deadline
        {
            return Ok(message);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Prints a sent message's reply; anything else becomes the error the command ends with.
async fn report(
    services: &Access,
    mailbox: &Mailbox,
    message: Message,
    wait_secs: u64,
) -> anyhow::Result<()> {
    let reply = message
        .last_reply
        .as_ref()
        .map(|r| r.line())
        .unwrap_or_default();
    match message.status {
        MessageStatus::Sent => {
            println!(
                "Sent through {} ({}): {reply}",
                mailbox.name, mailbox.username
            );
            Ok(())
        }
        MessageStatus::Held => {
            let current = lookup::mailbox(&services.store, mailbox.id).await?;
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
            wait_secs,
            message.id
        )),
    }
}

/// A reason's message, and on the next line what to do about it.
fn why(reason: Option<StatusReason>) -> String {
    reason
        .map(|r| {
            format!(
                "{}{}",
                r.message,
                r.action.map(|a| format!("\n{a}")).unwrap_or_default()
            )
        })
        .unwrap_or_default()
}
