//! Provider errors in plain words: each AADSTS code (or OAuth error) becomes a stable
//! `status_reason.code` with what happened and what to do. Decisions use `error_codes` and the
//! AADSTS number, never the free text alone; Google's errors, which carry no code, are decided
//! by their `error` in [`super::google_errors`].

use super::ProviderError;
use crate::domain::mailbox::{Mailbox, Provider, StatusReason};

/// The AADSTS number of an error: from `error_codes`, or the `AADSTSnnnn:` that starts
/// Microsoft's description (the redirect carries no `error_codes`).
pub fn aadsts(error: &ProviderError) -> Option<u64> {
    error.error_codes.first().copied().or_else(|| {
        let description = error.error_description.as_deref()?;
        let digits: String = description
            .strip_prefix("AADSTS")?
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    })
}

fn first_sentence(text: &str) -> &str {
    let text = text.split(" Trace ID:").next().unwrap_or(text);
    text.split("\r\n").next().unwrap_or(text).trim()
}

/// The reason a mailbox is Not Verified after the provider refused.
pub fn reason_for(error: &ProviderError, mailbox: &Mailbox, redirect_uri: &str) -> StatusReason {
    let code = aadsts(error);
    let tenant = mailbox.tenant.as_deref().unwrap_or("organizations");
    let client_id = mailbox.client_id.as_deref().unwrap_or_default();
    let reason = |code: &str, message: String, action: &str| {
        StatusReason::new(code, message, Some(action.to_owned()))
    };
    if code.is_none()
        && mailbox.provider == Provider::Google
        && let Some(google) = super::google_errors::reason_for(error, mailbox, redirect_uri)
    {
        return google;
    }
    match code {
        Some(7000222) => reason(
            "client_secret_expired",
            "The client secret has expired (AADSTS7000222).".into(),
            "In the Azure portal, open the app registration, go to Certificates & secrets, click New client secret, then paste its Value into Client Secret here and record its expiry.",
        ),
        Some(7000215) | Some(7000218) => reason(
            "client_secret_invalid",
            format!("The client secret was refused (AADSTS{}).", code.unwrap_or_default()),
            "Paste the client secret's Value (not its Secret ID) from Certificates & secrets into Client Secret, or create a new secret.",
        ),
        Some(700027) => {
            let thumbprint = mailbox
                .certificate
                .as_ref()
                .map(|c| format!(" (thumbprint {})", c.thumbprint_sha1))
                .unwrap_or_default();
            let expired = error
                .error_description
                .as_deref()
                .is_some_and(|d| d.contains("expired"));
            StatusReason::new(
                "certificate_not_accepted",
                if expired {
                    format!("Microsoft no longer accepts the mailbox's certificate{thumbprint}: it has expired (AADSTS700027).")
                } else {
                    format!("Microsoft does not accept the mailbox's certificate{thumbprint}: the app registration does not hold it (AADSTS700027).")
                },
                Some("Click Download certificate and upload the .cer file in the Azure portal under the app registration › Certificates & secrets › Certificates › Upload certificate, then click Verify. If it has expired, click Renew certificate first.".into()),
            )
        }
        Some(700024) => reason(
            "clock_skew",
            "Microsoft refused the certificate's signed assertion as outside its valid time (AADSTS700024): this server's clock is probably wrong.".into(),
            "Set this server's clock right (NTP), then click Verify.",
        ),
        Some(700021) | Some(700023) => reason(
            "certificate_assertion_invalid",
            format!("Microsoft refused the certificate's signed assertion (AADSTS{}): its client ID or token endpoint does not match.", code.unwrap_or_default()),
            "Check the Client ID and the tenant (the Token URL), then click Verify.",
        ),
        Some(700082) | Some(70008) | Some(50173) => reason(
            "refresh_token_expired",
            format!("The authorization expired or was revoked (AADSTS{}).", code.unwrap_or_default()),
            "Click Authorize and sign in again. Herald refreshes idle mailboxes to keep this from happening.",
        ),
        Some(65001) => StatusReason::new(
            "consent_required",
            "The app has not been granted consent in this tenant (AADSTS65001).",
            Some(format!(
                "Sign in again and click Accept, or have an administrator grant consent for the organization: https://{}/{tenant}/adminconsent?client_id={client_id}",
                mailbox.cloud.login_host()
            )),
        ),
        Some(65004) => reason(
            "consent_declined",
            "The permissions were declined at sign-in (AADSTS65004).".into(),
            "Click Authorize again and click Accept on the permissions page.",
        ),
        Some(50011) | Some(500112) => StatusReason::new(
            "redirect_uri_mismatch",
            format!("The app registration does not list Herald's Redirect URI (AADSTS{}).", code.unwrap_or_default()),
            Some(format!(
                "In the app registration, under Authentication, add {redirect_uri} as a Web redirect URI, exactly as shown."
            )),
        ),
        Some(700016) => reason(
            "app_not_found",
            "The app registration was not found in this tenant (AADSTS700016).".into(),
            "Check the Client ID (the Application (client) ID of the app registration) and that the tenant is the one the app was registered in.",
        ),
        Some(50076) | Some(50079) | Some(53003) | Some(70043) => reason(
            "mfa_or_conditional_access",
            format!("A Conditional Access or multi-factor policy blocks the sign-in (AADSTS{}).", code.unwrap_or_default()),
            "Click Authorize and complete multi-factor sign-in, or ask your Entra administrator to let this app sign in.",
        ),
        Some(70011) => reason(
            "invalid_scope",
            "The provider refused the requested scopes (AADSTS70011).".into(),
            "Use the scopes https://outlook.office.com/SMTP.Send offline_access, and make sure SMTP.Send is a delegated permission of the app.",
        ),
        _ if error.error == "interaction_required" => reason(
            "mfa_or_conditional_access",
            "The provider asks for an interactive sign-in (interaction_required).".into(),
            "Click Authorize and sign in again.",
        ),
        _ if error.error == "access_denied" => reason(
            "consent_declined",
            "The sign-in was cancelled or the permissions were declined (access_denied).".into(),
            "Click Authorize again and click Accept on the permissions page.",
        ),
        _ => {
            let text = error.error_description.as_deref().map(first_sentence).unwrap_or(error.error.as_str());
            let correlation = error.correlation_id.as_deref().map(|c| format!(" (correlation ID {c})")).unwrap_or_default();
            StatusReason::new(
                "provider_error",
                format!("The provider refused: {text}{correlation}"),
                Some("Check the app registration and the values copied from it, then click Authorize again.".into()),
            )
        }
    }
}

/// The reason a mailbox is Not Verified after its token endpoint answered more than Herald
/// reads: no real token endpoint does, so the Token URL is wrong (or hostile).
pub fn too_large(limit: usize) -> StatusReason {
    StatusReason::new(
        "provider_error",
        format!(
            "The provider refused: the token endpoint answered more than {} KiB, far more than a token response; Herald stopped reading.",
            limit / 1024
        ),
        Some("Check that the Token URL is the provider's token endpoint, then click Authorize again.".into()),
    )
}

#[cfg(test)]
pub(crate) mod tests_support {
    pub(crate) use crate::domain::mailbox::tests_support::mailbox;
}

#[cfg(test)]
mod tests {
    use super::tests_support::mailbox;
    use super::*;

    fn error(error: &str, codes: &[u64], description: &str) -> ProviderError {
        ProviderError {
            error: error.into(),
            error_description: Some(description.into()),
            error_codes: codes.to_vec(),
            ..ProviderError::default()
        }
    }

    #[test]
    fn codes_decide_not_text() {
        let m = mailbox();
        let redirect = "https://h/web/um/smtp/redirect";
        for (codes, expected) in [
            (&[7000222][..], "client_secret_expired"),
            (&[7000215], "client_secret_invalid"),
            (&[700082], "refresh_token_expired"),
            (&[70008], "refresh_token_expired"),
            (&[50173], "refresh_token_expired"),
            (&[65001], "consent_required"),
            (&[65004], "consent_declined"),
            (&[50011], "redirect_uri_mismatch"),
            (&[700016], "app_not_found"),
            (&[50076], "mfa_or_conditional_access"),
            (&[53003], "mfa_or_conditional_access"),
            (&[70011], "invalid_scope"),
            (&[12345], "provider_error"),
        ] {
            // The description says something else entirely: only the code counts.
            let r = reason_for(
                &error("invalid_grant", codes, "AADSTS7000222: misleading text"),
                &m,
                redirect,
            );
            assert_eq!(r.code, expected, "{codes:?}");
        }
        let consent = reason_for(&error("invalid_grant", &[65001], ""), &m, redirect);
        assert!(
            consent.action.unwrap().contains(
                "https://login.microsoftonline.com/contoso.com/adminconsent?client_id=cid"
            )
        );
        let redirect_reason = reason_for(&error("invalid_request", &[50011], ""), &m, redirect);
        assert!(redirect_reason.action.unwrap().contains(redirect));
    }

    #[test]
    fn the_redirect_s_description_carries_the_code_when_error_codes_are_absent() {
        let r = reason_for(
            &error(
                "access_denied",
                &[],
                "AADSTS65004: User declined to consent to access the app.",
            ),
            &mailbox(),
            "x",
        );
        assert_eq!(r.code, "consent_declined");
        let unknown = reason_for(
            &error(
                "server_error",
                &[],
                "AADSTS90099: Something odd. Trace ID: abc",
            ),
            &mailbox(),
            "x",
        );
        assert_eq!(unknown.code, "provider_error");
        assert!(
            unknown.message.contains("AADSTS90099: Something odd.")
                && !unknown.message.contains("Trace ID")
        );
    }
}

#[cfg(test)]
mod google_tests {
    use super::tests_support::mailbox;
    use crate::domain::mailbox::{CredentialKind, GOOGLE_MAIL_SCOPE, Mailbox, Provider};
    use crate::oauth::ProviderError;

    fn google() -> Mailbox {
        Mailbox {
            provider: Provider::Google,
            tenant: None,
            host: "smtp.gmail.com".into(),
            ..mailbox()
        }
    }

    fn refused(error: &str) -> ProviderError {
        ProviderError {
            error: error.into(),
            // Google's descriptions are free text: they must not decide anything.
            error_description: Some("Token has been expired or revoked.".into()),
            ..ProviderError::default()
        }
    }

    #[test]
    fn google_s_errors_are_decided_by_their_error_not_their_text() {
        let m = google();
        for (error, expected) in [
            ("invalid_grant", "refresh_token_expired"),
            ("admin_policy_enforced", "admin_policy_enforced"),
            ("invalid_client", "client_secret_invalid"),
            ("unauthorized_client", "client_not_authorized"),
            ("org_internal", "org_internal"),
            ("access_denied", "consent_declined"),
            ("redirect_uri_mismatch", "redirect_uri_mismatch"),
            ("temporarily_unavailable", "provider_error"),
        ] {
            let r = super::reason_for(&refused(error), &m, "https://h/web/um/smtp/redirect");
            assert_eq!(r.code, expected, "{error}");
        }
    }

    #[test]
    fn each_google_reason_says_what_to_do() {
        let m = google();
        let action = |error: &str| {
            super::reason_for(&refused(error), &m, "https://h/r")
                .action
                .unwrap_or_default()
        };
        assert!(action("invalid_grant").contains("Publish app"));
        assert!(action("admin_policy_enforced").contains("API controls"));
        assert!(action("admin_policy_enforced").contains("cid"));
        assert!(action("invalid_client").contains("Credentials"));
        assert!(action("org_internal").contains("External"));
        assert!(action("redirect_uri_mismatch").contains("https://h/r"));
    }

    #[test]
    fn a_service_account_s_refusals_name_domain_wide_delegation() {
        let m = Mailbox {
            credential: CredentialKind::App,
            ..google()
        };
        let r = super::reason_for(&refused("unauthorized_client"), &m, "x");
        assert_eq!(r.code, "delegation_not_granted");
        let action = r.action.unwrap();
        assert!(
            action.contains("Manage Domain Wide Delegation") && action.contains(GOOGLE_MAIL_SCOPE)
        );
        let r = super::reason_for(&refused("invalid_grant"), &m, "x");
        assert_eq!(r.code, "service_account_refused");
    }

    #[test]
    fn a_microsoft_mailbox_is_not_read_as_google() {
        let r = super::reason_for(&refused("admin_policy_enforced"), &mailbox(), "x");
        assert_eq!(r.code, "provider_error");
    }
}
