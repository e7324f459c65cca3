//! Google's OAuth errors in plain words. Google sends no AADSTS codes, only RFC 6749's `error`
//! (and its own values such as `admin_policy_enforced` and `org_internal`) with an English
//! `error_description`: the decision is made on `error`, never on the description.

use super::ProviderError;
use crate::domain::mailbox::{CredentialKind, GOOGLE_MAIL_SCOPE, Mailbox, StatusReason};

/// The reason a Google mailbox is Not Verified after Google refused, or `None` for an error
/// that is not Google's own (the generic wording then applies).
pub fn reason_for(
    error: &ProviderError,
    mailbox: &Mailbox,
    redirect_uri: &str,
) -> Option<StatusReason> {
    let client_id = mailbox.client_id.as_deref().unwrap_or_default();
    let service_account = mailbox.credential == CredentialKind::App;
    let reason = |code: &str, message: String, action: String| {
        Some(StatusReason::new(code, message, Some(action)))
    };
    match error.error.as_str() {
        "invalid_grant" if service_account => reason(
            "service_account_refused",
            "Google refused the service account's signed grant (invalid_grant): the key was deleted or disabled, the mailbox is not a user of the Workspace domain, or this server's clock is wrong.".into(),
            "Check that the mailbox is a user of the Google Workspace domain, upload a current JSON key of the service account (IAM & Admin › Service accounts › Keys), and set this server's clock right (NTP); then click Verify.".into(),
        ),
        "invalid_grant" => reason(
            "refresh_token_expired",
            "Google refused the authorization (invalid_grant): it expired or was revoked. Apps left in \"Testing\" status get refresh tokens that expire after 7 days.".into(),
            "Click Authorize and sign in again; publish the app in Google Cloud (OAuth consent screen › Publish app) to stop the 7-day expiry.".into(),
        ),
        "admin_policy_enforced" => reason(
            "admin_policy_enforced",
            "The Google Workspace administrator's policy blocks this app (admin_policy_enforced).".into(),
            format!(
                "In the Google Admin console, open Security › Access and data control › API controls › Manage Third-Party App Access, add the app by its client ID {client_id} and set it to Trusted (or allow it to access Gmail); then click Authorize again."
            ),
        ),
        "invalid_client" => reason(
            "client_secret_invalid",
            "Google refused the OAuth client (invalid_client): the client ID or secret is wrong, or the OAuth client was deleted.".into(),
            "In Google Cloud, open APIs & Services › Credentials, check that the OAuth 2.0 Client ID (type Web application) still exists, copy its Client ID and Client secret here again (or add a new secret), then click Authorize again.".into(),
        ),
        "unauthorized_client" if service_account => reason(
            "delegation_not_granted",
            format!(
                "Google does not let the service account act for {} (unauthorized_client): domain-wide delegation is not granted for {GOOGLE_MAIL_SCOPE}.",
                mailbox.username
            ),
            format!(
                "In the Google Admin console, open Security › Access and data control › API controls › Manage Domain Wide Delegation, click Add new, give the service account's client ID (the client_id of its JSON key) and the OAuth scope {GOOGLE_MAIL_SCOPE}, then click Verify."
            ),
        ),
        "unauthorized_client" => reason(
            "client_not_authorized",
            "Google does not allow this OAuth client this request (unauthorized_client): the authorization was given to another client ID, or the client is not of type Web application.".into(),
            format!(
                "Use a Client ID of type Web application whose Authorized redirect URIs list {redirect_uri}, then click Authorize again."
            ),
        ),
        "org_internal" => reason(
            "org_internal",
            format!(
                "The app is Internal to its Google Workspace organization, and {} is outside it (org_internal).",
                mailbox.sign_in_account
            ),
            "Sign in with an account of the organization that owns the Google Cloud project, or in Google Cloud set the OAuth consent screen's User type to External; then click Authorize again.".into(),
        ),
        "access_denied" => reason(
            "consent_declined",
            "The sign-in was cancelled or access to Gmail was not allowed (access_denied).".into(),
            "Click Authorize again and click Allow (or Continue) on Google's consent screen, with the Gmail permission ticked.".into(),
        ),
        "redirect_uri_mismatch" => reason(
            "redirect_uri_mismatch",
            "The OAuth client does not list Herald's Redirect URI (redirect_uri_mismatch).".into(),
            format!(
                "In Google Cloud, APIs & Services › Credentials, open the OAuth client and add {redirect_uri} under Authorized redirect URIs, exactly as shown."
            ),
        ),
        _ => None,
    }
}
