//! Gmail's SMTP replies in plain words: `535 5.7.8 Username and Password not accepted` (also
//! what Herald makes of the `334` JSON challenge that refuses an XOAUTH2 token) says something
//! else for a password, a user's token and a service account's token. Gmail's daily limit
//! (`550 5.4.5 Daily user sending limit exceeded`) is no fault of the mailbox: the outbox
//! keeps the mail and tries again in an hour ([`crate::domain::smtp::SmtpReply::is_quota`]).

use super::SmtpFailure;
use crate::domain::limits::limits_provider;
use crate::domain::mailbox::{
    AuthKind, CredentialKind, GOOGLE_MAIL_SCOPE, Mailbox, Provider, StatusReason,
};

/// The reason Gmail's refusal gives a Google mailbox (or a password mailbox on
/// `smtp.gmail.com`), or `None` when the generic reading applies.
pub fn reason_for(failure: &SmtpFailure, mailbox: &Mailbox) -> Option<StatusReason> {
    if limits_provider(mailbox.provider, &mailbox.host) != Provider::Google
        || failure.reply.code != Some(535)
    {
        return None;
    }
    let reply = failure.reply.line();
    let user = &mailbox.username;
    let (code, message, action) = match (mailbox.auth, mailbox.credential) {
        (AuthKind::Basic, _) => (
            "basic_auth_rejected",
            format!("Gmail refused the username or password ({reply})."),
            format!(
                "Gmail takes no account password over SMTP: turn on 2-Step Verification for {user}, create an App password (Google Account › Security › App passwords) and paste it as the Password, or add the mailbox with OAuth2."
            ),
        ),
        (AuthKind::OAuth2, CredentialKind::App) => (
            "delegation_not_granted",
            format!("Gmail refused the service account's token for {user} ({reply})."),
            format!(
                "In the Google Admin console, Security › Access and data control › API controls › Manage Domain Wide Delegation, grant the service account's client ID the scope {GOOGLE_MAIL_SCOPE}, and check that {user} is a user of the domain with Gmail; then click Verify."
            ),
        ),
        (AuthKind::OAuth2, _) => (
            "token_rejected",
            format!("Gmail refused the access token ({reply})."),
            format!(
                "Click Authorize again and sign in as {user}, allowing access to Gmail ({GOOGLE_MAIL_SCOPE}); Gmail sends only as the account that signed in."
            ),
        ),
    };
    Some(StatusReason::new(code, message, Some(action)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::smtp::SmtpReply;
    use crate::oauth::errors::tests_support::mailbox;
    use crate::smtp::Fault;

    fn failure(code: u16, text: &str) -> SmtpFailure {
        SmtpFailure {
            reply: SmtpReply::new(Some(code), text),
            fault: Fault::Reply,
        }
    }

    fn gmail(auth: AuthKind, credential: CredentialKind, provider: Provider) -> Mailbox {
        Mailbox {
            auth,
            credential,
            provider,
            host: "smtp.gmail.com".into(),
            ..mailbox()
        }
    }

    #[test]
    fn gmail_s_535_5_7_8_says_what_to_do_for_each_credential() {
        let refused = failure(
            535,
            "5.7.8 Username and Password not accepted. For more information, go to https://support.google.com/mail/?p=BadCredentials",
        );
        let basic = gmail(AuthKind::Basic, CredentialKind::Password, Provider::Custom);
        let r = crate::smtp::reason_for(&refused, &basic, false).unwrap();
        assert_eq!(r.code, "basic_auth_rejected");
        assert!(r.action.unwrap().contains("App password"));
        let user = gmail(
            AuthKind::OAuth2,
            CredentialKind::Delegated,
            Provider::Google,
        );
        let r = crate::smtp::reason_for(&refused, &user, false).unwrap();
        assert_eq!(r.code, "token_rejected");
        assert!(r.action.unwrap().contains(GOOGLE_MAIL_SCOPE));
        let app = gmail(AuthKind::OAuth2, CredentialKind::App, Provider::Google);
        let r = crate::smtp::reason_for(&refused, &app, false).unwrap();
        assert_eq!(r.code, "delegation_not_granted");
    }

    #[test]
    fn gmail_s_daily_limit_keeps_the_mail_and_the_mailbox() {
        let limit = failure(
            550,
            "5.4.5 Daily user sending limit exceeded. For more information on Gmail sending limits go to https://support.google.com/a/answer/166852",
        );
        let user = gmail(
            AuthKind::OAuth2,
            CredentialKind::Delegated,
            Provider::Google,
        );
        assert_eq!(crate::smtp::reason_for(&limit, &user, true), None);
        assert!(
            limit.reply.is_quota(),
            "the outbox waits an hour instead of failing the message"
        );
    }
}
