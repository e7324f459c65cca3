//! The Outgoing Mail page's test message: sent through the mailbox now, over a connection of
//! its own, composed by the outbox's composer like any other message; the outcome sets the
//! mailbox's status.

use super::{ServiceError, ServiceResult};
use crate::access::{self, Access, Credential, SendFailure};
use crate::domain::mailbox::{MailboxStatus, StatusReason};
use crate::domain::{EmailAddress, MailboxId, OrgId};
use crate::outbox::compose::{self, Draft};
use crate::store;

/// The outcome of sending through a mailbox.
pub enum SendOutcome {
    Sent {
        reply: String,
    },
    Failed {
        reason: StatusReason,
        transient: bool,
    },
}

/// Sends the test message to `to`, and sets the mailbox's status by the outcome: a refusal
/// that is a configuration fault makes it Not Verified; throttling and other transient replies
/// change nothing.
pub async fn send_test_message(
    access: &Access,
    org_id: OrgId,
    id: MailboxId,
    to: &str,
) -> ServiceResult<SendOutcome> {
    let to = EmailAddress::parse_field("to", to)?;
    let mailbox = {
        let mut conn = access.store.conn().await?;
        store::mailboxes::get(&mut conn, org_id, id)
            .await?
            .ok_or(ServiceError::NotFound("mailbox"))?
    };
    let domain = mailbox
        .username
        .rsplit_once('@')
        .map_or("herald.localhost", |(_, d)| d);
    let draft = Draft {
        to: vec![to.as_str().to_owned()],
        cc: Vec::new(),
        bcc: Vec::new(),
        subject: "Herald test message".into(),
        text: Some(format!(
            "This is a test message from Herald, sent through the mailbox \"{}\".",
            mailbox.name
        )),
        html: None,
        reply_to: None,
        headers: Vec::new(),
        attachments: Vec::new(),
        message_id: compose::new_message_id(&uuid::Uuid::now_v7().to_string(), domain),
        date: access.now().unix_timestamp(),
        org_reply_to: None,
    };
    let (envelope, bytes) = compose::compose(&mailbox, &draft, false)
        .map_err(|why| ServiceError::internal(format!("cannot build the message: {why}")))?;
    let credential = Credential::load(access, &mailbox).await?;
    match access::attempt(access, &mailbox, &credential, Some((&envelope, &bytes))).await? {
        Ok(reply) => {
            if mailbox.status != MailboxStatus::Verified {
                access::set_status(access, &mailbox, MailboxStatus::Verified, None).await?;
            }
            Ok(SendOutcome::Sent {
                reply: reply.line(),
            })
        }
        Err(SendFailure::Refused(reason)) => {
            access::set_status(
                access,
                &mailbox,
                MailboxStatus::NotVerified,
                Some(reason.clone()),
            )
            .await?;
            Ok(SendOutcome::Failed {
                reason,
                transient: false,
            })
        }
        Err(SendFailure::Transient(reply) | SendFailure::Throttled { reply, .. }) => {
            Ok(SendOutcome::Failed {
                reason: StatusReason::new(
                    "smtp_transient",
                    format!("The server asked to try later: {}", reply.line()),
                    Some("Try again in a few minutes.".into()),
                ),
                transient: true,
            })
        }
        Err(SendFailure::Rejected(reply)) => Ok(SendOutcome::Failed {
            reason: StatusReason::message_rejected(&reply),
            transient: false,
        }),
    }
}
