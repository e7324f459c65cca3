//! Does the mailbox work? Connect, authenticate, and send a message when there is one, over a
//! connection of its own; the outcome sets the status.

use lettre::address::Envelope;

use super::{
    Access, AccessError, AccessResult, Credential, Refusal, SendFailure, read_secret_expiry,
    set_status, transport_for,
};
use crate::domain::mailbox::{Mailbox, MailboxStatus};
use crate::domain::message::SmtpReply;
use crate::domain::{MailboxId, OrgId};
use crate::store;

/// Verifies (`message` None) or sends one message over a connection of its own.
pub async fn attempt(
    access: &Access,
    mailbox: &Mailbox,
    credential: &Credential,
    message: Option<(&Envelope, &[u8])>,
) -> AccessResult<Result<SmtpReply, SendFailure>> {
    let mut connection = match transport_for(mailbox)
        .open(access, mailbox, credential)
        .await?
    {
        Ok(connection) => connection,
        Err(failure) => return Ok(Err(failure)),
    };
    let result = match message {
        Some((envelope, bytes)) => connection
            .send(envelope, bytes)
            .await
            .map_err(|Refusal { failure, .. }| failure),
        None => Ok(SmtpReply {
            code: Some(250),
            enhanced: None,
            text: "OK".into(),
        }),
    };
    connection.quit().await;
    Ok(result)
}

/// Runs connect → EHLO → STARTTLS → AUTH → QUIT and sets the status by the outcome. A
/// transient failure (timeouts, 4xx) leaves the status as it was. A Verified mailbox then reads
/// its client secret's expiry from the app registration, when the app may.
pub async fn verify(access: &Access, org_id: OrgId, id: MailboxId) -> AccessResult<Mailbox> {
    let mailbox = {
        let mut conn = access.store.conn().await?;
        store::mailboxes::get(&mut conn, org_id, id)
            .await?
            .ok_or(AccessError::MailboxGone)?
    };
    let credential = Credential::load(access, &mailbox).await?;
    match attempt(access, &mailbox, &credential, None).await? {
        Ok(_) => {
            let verified = set_status(access, &mailbox, MailboxStatus::Verified, None).await?;
            read_secret_expiry(access, &verified).await
        }
        Err(SendFailure::Refused(reason)) => {
            set_status(access, &mailbox, MailboxStatus::NotVerified, Some(reason)).await
        }
        Err(
            SendFailure::Transient(_) | SendFailure::Rejected(_) | SendFailure::Throttled { .. },
        ) => Ok(mailbox),
    }
}
