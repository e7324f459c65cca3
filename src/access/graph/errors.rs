//! What Microsoft Graph's errors mean: decided by status and `error.code`, never by the
//! text. A fault of the mailbox (permission, licence, send-as) makes it Not Verified with the
//! fix in words; a fault of one message fails that message; `429` and `5xx` wait.

use std::time::Duration;

use super::DEFAULT_RETRY_AFTER;
use crate::access::transport::{Refusal, SendFailure};
use crate::domain::mailbox::{CredentialKind, Mailbox, StatusReason};
use crate::domain::message::SmtpReply;
use crate::oauth::http::HttpError;

/// What a Graph error means for the mailbox and the message, decided by status and code.
pub(super) fn classify(
    status: u16,
    code: &str,
    message: &str,
    retry_after: Option<Duration>,
    mailbox: &Mailbox,
    id: &str,
) -> Refusal {
    let said = if code.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("{code}: {message}")
    };
    let reply = |smtp: u16, enhanced: &str| {
        SmtpReply::new(
            Some(smtp),
            format!("{enhanced} Microsoft Graph: {said}{id}"),
        )
    };
    let refused = |reason: StatusReason| Refusal {
        failure: SendFailure::Refused(reason),
        reply: reply(535, "5.7.8"),
    };
    let address = &mailbox.username;
    match (status, code) {
        (429, _) | (_, "ApplicationThrottled" | "MailboxConcurrency" | "TooManyRequests") => {
            let reply = reply(451, "4.7.0");
            Refusal {
                failure: SendFailure::Throttled {
                    reply: reply.clone(),
                    retry_after: retry_after.unwrap_or(DEFAULT_RETRY_AFTER),
                },
                reply,
            }
        }
        (500..=599, _) => {
            let reply = reply(451, "4.3.2");
            Refusal {
                failure: SendFailure::Transient(reply.clone()),
                reply,
            }
        }
        (401, _) => refused(StatusReason::new(
            "graph_token_refused",
            "Microsoft Graph refused the mailbox's access token.",
            Some("Click Authorize again and sign in as the mailbox's account.".into()),
        )),
        (_, "ErrorSendAsDenied") => refused(StatusReason::new(
            "send_as_denied",
            format!(
                "The signed-in account ({}) may not send as {address}.",
                mailbox.sign_in_account
            ),
            Some(format!(
                "In the Exchange admin center, give {} Send As permission on {address}, or sign in as {address}.",
                mailbox.sign_in_account
            )),
        )),
        (_, "ErrorInvalidUser") | (404, "ResourceNotFound" | "Request_ResourceNotFound") => {
            refused(StatusReason::new(
                "graph_mailbox_not_found",
                format!("Microsoft Graph knows no mailbox {address} in this tenant."),
                Some(format!(
                    "Check the username: it must be the mailbox's address (user principal name or primary SMTP address) in the tenant {}.",
                    mailbox.tenant.as_deref().unwrap_or("of the app registration")
                )),
            ))
        }
        (_, "MailboxNotEnabledForRESTAPI" | "MailboxNotSupportedForRESTAPI") => {
            refused(StatusReason::new(
                "graph_mailbox_not_enabled",
                format!(
                    "{address} has no Exchange Online mailbox Microsoft Graph can send from: it has no licence, is inactive, or is hosted on-premises."
                ),
                Some(
                    "Give the account an Exchange Online licence in the Microsoft 365 admin center (or send with SMTP for an on-premises mailbox).".into(),
                ),
            ))
        }
        (403, _) | (_, "ErrorAccessDenied" | "Authorization_RequestDenied" | "AccessDenied")
            if mailbox.credential == CredentialKind::App =>
        {
            refused(StatusReason::new(
                "graph_access_denied",
                format!(
                    "Microsoft Graph refused to let the app send as {address}: the application permission Mail.Send is not granted, or an RBAC for Applications scope or application access policy leaves this mailbox out."
                ),
                Some(format!(
                    "In the app registration, add the Microsoft Graph application permission Mail.Send and grant admin consent. If the app is limited to some mailboxes (New-ManagementScope with New-ManagementRoleAssignment, or New-ApplicationAccessPolicy), add {address} to them. Then click Verify."
                )),
            ))
        }
        (403, _) | (_, "ErrorAccessDenied" | "Authorization_RequestDenied" | "AccessDenied") => {
            refused(StatusReason::new(
                "graph_access_denied",
                format!(
                    "Microsoft Graph refused to let the app send as {address}: the Mail.Send permission is not granted, or an application access policy or RBAC for Applications scope leaves this mailbox out."
                ),
                Some(
                    "In the app registration, add the Microsoft Graph permission Mail.Send and grant admin consent; then click Authorize again.".into(),
                ),
            ))
        }
        (413, _) | (_, "ErrorMessageSizeExceeded" | "RequestEntityTooLarge") => {
            message_refused(reply(552, "5.3.4"))
        }
        (_, "ErrorQuotaExceeded") => message_refused(reply(552, "5.2.2")),
        _ => message_refused(reply(550, "5.6.0")),
    }
}

pub(super) fn message_refused(reply: SmtpReply) -> Refusal {
    Refusal {
        failure: SendFailure::Rejected(reply.clone()),
        reply,
    }
}

pub(super) fn refusal(failure: SendFailure) -> Refusal {
    let reply = match &failure {
        SendFailure::Refused(reason) => SmtpReply::no_reply(reason.message.clone()),
        SendFailure::Transient(reply)
        | SendFailure::Rejected(reply)
        | SendFailure::Throttled { reply, .. } => reply.clone(),
    };
    Refusal { failure, reply }
}

/// `552 5.3.4`: over the 150 MB Graph takes even through upload sessions; refused before any
/// request is made.
pub(super) fn too_large(size: usize, limit: usize) -> Refusal {
    message_refused(SmtpReply::new(
        Some(552),
        format!(
            "5.3.4 The message is {size} bytes: over the {} MB Microsoft Graph takes. Make it smaller.",
            limit / (1024 * 1024)
        ),
    ))
}

/// `550 5.7.1`: Graph refused to create the draft a large message needs. Sending small mail
/// takes Mail.Send only, but a draft takes Mail.ReadWrite: the mailbox stays Verified and only
/// this message fails, saying what to grant.
pub(super) fn draft_refused(answer_said: &str, mailbox: &Mailbox) -> Refusal {
    let permission = match mailbox.credential {
        CredentialKind::App => {
            "the application permission Mail.ReadWrite (with admin consent; an RBAC for Applications scope can limit it to this mailbox)"
        }
        _ => {
            "the delegated permission https://graph.microsoft.com/Mail.ReadWrite (then Authorize again)"
        }
    };
    message_refused(SmtpReply::new(
        Some(550),
        format!(
            "5.7.1 Microsoft Graph refused to create the draft that a message over 4 MB is sent from ({answer_said}). Messages over 4 MB need {permission}."
        ),
    ))
}

pub(super) fn needs_oauth2() -> StatusReason {
    StatusReason::new(
        "graph_needs_oauth2",
        "Microsoft Graph takes only OAuth 2.0 access tokens, not a password.",
        Some("Set the mailbox to OAuth2, or send with SMTP.".into()),
    )
}

/// A draft's creation without an answer Herald can read. An answer too large to read means
/// Graph made the draft (its answer echoes the message's body): trying again would make
/// another, so the message fails, saying so.
pub(super) fn draft_unanswered(error: &HttpError) -> SendFailure {
    match error {
        HttpError::TooLarge(limit) => SendFailure::Rejected(SmtpReply::new(
            Some(554),
            format!(
                "5.3.4 Microsoft Graph answered the new draft with more than {} KiB (the answer repeats the message's body): the body is too large to send through Graph. The draft may be left in the mailbox's Drafts folder.",
                limit / 1024
            ),
        )),
        other => unreachable(other),
    }
}

pub(super) fn unreachable(error: &HttpError) -> SendFailure {
    match error {
        HttpError::Refused(why) => SendFailure::Refused(StatusReason::new(
            "graph_url_refused",
            format!("Herald may not connect to Microsoft Graph's address: {why}."),
            Some("Check the mailbox's provider; Graph is Microsoft's.".into()),
        )),
        other => SendFailure::Transient(SmtpReply::no_reply(format!(
            "Microsoft Graph could not be reached: {other}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::errors::tests_support::mailbox;

    fn failure(status: u16, code: &str) -> SendFailure {
        classify(status, code, "words", None, &mailbox(), "").failure
    }

    fn reason(status: u16, code: &str) -> String {
        match failure(status, code) {
            SendFailure::Refused(reason) => reason.code,
            _ => panic!("{status} {code} is not a fault of the mailbox"),
        }
    }

    #[test]
    fn graph_errors_are_decided_by_their_code() {
        assert_eq!(reason(403, "ErrorAccessDenied"), "graph_access_denied");
        assert_eq!(
            reason(403, "Authorization_RequestDenied"),
            "graph_access_denied"
        );
        assert_eq!(reason(403, "ErrorSendAsDenied"), "send_as_denied");
        assert_eq!(reason(404, "ErrorInvalidUser"), "graph_mailbox_not_found");
        assert_eq!(
            reason(404, "MailboxNotEnabledForRESTAPI"),
            "graph_mailbox_not_enabled"
        );
        assert_eq!(
            reason(401, "InvalidAuthenticationToken"),
            "graph_token_refused"
        );
        assert!(matches!(
            failure(413, "ErrorMessageSizeExceeded"),
            SendFailure::Rejected(r) if r.enhanced.as_deref() == Some("5.3.4")
        ));
        assert!(matches!(
            failure(400, "ErrorQuotaExceeded"),
            SendFailure::Rejected(_)
        ));
        assert!(matches!(
            failure(503, "ServiceNotAvailable"),
            SendFailure::Transient(_)
        ));
        assert!(matches!(failure(504, ""), SendFailure::Transient(_)));
        assert!(matches!(
            failure(400, "ErrorInvalidRecipients"),
            SendFailure::Rejected(_)
        ));
    }

    #[test]
    fn over_150_mb_and_an_unreadable_draft_answer_fail_the_message_alone() {
        let refused = too_large(151 * 1024 * 1024, 150 * 1024 * 1024);
        assert!(matches!(
            refused.failure,
            SendFailure::Rejected(r) if r.code == Some(552) && r.enhanced.as_deref() == Some("5.3.4")
        ));
        assert!(matches!(
            draft_unanswered(&HttpError::TooLarge(256 * 1024)),
            SendFailure::Rejected(r) if r.text.contains("Drafts folder")
        ));
        assert!(matches!(
            draft_unanswered(&HttpError::Transport("reset".into())),
            SendFailure::Transient(_)
        ));
    }

    #[test]
    fn throttling_waits_as_long_as_graph_says() {
        let told = classify(
            429,
            "ApplicationThrottled",
            "slow down",
            Some(Duration::from_secs(7)),
            &mailbox(),
            "",
        );
        assert!(matches!(
            told.failure,
            SendFailure::Throttled { retry_after, .. } if retry_after == Duration::from_secs(7)
        ));
        assert!(matches!(
            failure(429, "MailboxConcurrency"),
            SendFailure::Throttled { retry_after, .. } if retry_after == DEFAULT_RETRY_AFTER
        ));
    }
}
