//! Settings › System › Outgoing Mail: the organization's mailboxes with each status and its
//! reason, the sending settings and a summary of the message log; and the provider's redirect
//! back from an authorization, which lands here.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::CookieJar;
use serde::Deserialize;

use super::extract::SignedIn;
use super::{Frame, render, sending, when};
use crate::domain::OrgId;
use crate::domain::mailbox::{
    CredentialKind, ExpiryWarning, Mailbox, TransportKind, expiry_warning,
};
use crate::services::views::{self, AttemptStatus};
use crate::web::AppState;
use crate::web::auth;
use crate::web::error::UiError;

/// The provider's redirect after sign-in (the seed's exact path). The outcome is kept on the
/// server; the browser is sent on to the mailbox list with only the attempt's id, so neither
/// the code nor error text lands in a URL, a history or a Referer.
pub(super) async fn oauth_redirect(
    State(state): State<AppState>,
    jar: CookieJar,
    params: Result<
        Query<crate::services::authorization::RedirectParams>,
        axum::extract::rejection::QueryRejection,
    >,
) -> Response {
    // A malformed query (repeated parameters) is answered like an unknown state, never with 400.
    let params = params.map(|Query(p)| p).unwrap_or_default();
    let session = auth::session_digest(&state, &jar);
    let attempt =
        match crate::services::authorization::complete(&state.access, params, session).await {
            Ok(attempt) => attempt,
            Err(e) => {
                tracing::error!(error = %e, "authorization redirect failed");
                None
            }
        };
    let target = format!(
        "/settings/system/outgoing-mail?attempt={}",
        attempt.as_deref().unwrap_or("invalid")
    );
    (
        [
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Redirect::to(&target),
    )
        .into_response()
}

struct Notice {
    kind: &'static str,
    title: String,
    message: Option<String>,
    action: Option<String>,
}

struct MailboxRow {
    id: String,
    /// The fields the Edit window fills, as JSON (no secrets).
    json: String,
    secret_warning: Option<String>,
    name: String,
    username: String,
    auth: &'static str,
    provider: &'static str,
    is_default: bool,
    verified: bool,
    reason: Option<String>,
    action: Option<String>,
    verified_at: String,
    token_expires_at: String,
    secret_expiry: String,
    /// `SMTP` or `Microsoft Graph`.
    transport: &'static str,
    /// SMTP AUTH is off for the mailbox, and Graph could send instead.
    suggest_graph: bool,
    /// A person signs in for it (OAuth2, delegated): it has an Authorize button.
    authorizes: bool,
    /// It signs in with a certificate, which can be downloaded.
    certificate: bool,
}

#[derive(Template)]
#[template(path = "outgoing_mail.html")]
struct OutgoingMailPage {
    frame: Frame,
    redirect_uri: String,
    sandbox_base: String,
    sandbox_tenant: String,
    sandbox_host: String,
    sandbox_port: u16,
    notice: Option<Notice>,
    mailboxes: Vec<MailboxRow>,
    sending: sending::SendingSettings,
    log: sending::LogSummary,
}

#[derive(Deserialize)]
pub(super) struct OutgoingMailQuery {
    attempt: Option<String>,
}

/// Settings › System › Outgoing Mail: the mailbox list with each status and its reason.
pub(super) async fn outgoing_mail(
    State(state): State<AppState>,
    Query(q): Query<OutgoingMailQuery>,
    SignedIn { frame: f, .. }: SignedIn,
) -> Result<Response, UiError> {
    let org_id = f.org_id;
    let notice = attempt_notice(&state, org_id, q.attempt.as_deref()).await?;
    let mailboxes = views::mailboxes(&state.access.store, org_id, None, 200).await?;
    let org = views::organization(&state.access.store, org_id).await?;
    let counts = views::message_counts(&state.access.store, org_id).await?;
    let sending = sending::SendingSettings::of(org.as_ref(), &state.access.config.outbox);
    let today = state.access.now().date();
    let rows = mailboxes
        .items
        .into_iter()
        .map(|m| mailbox_row(m, today))
        .collect();
    Ok(render(
        StatusCode::OK,
        &OutgoingMailPage {
            frame: f,
            redirect_uri: state.access.config.redirect_uri(),
            sandbox_base: state
                .access
                .sandbox
                .as_ref()
                .map(|s| s.base_url.clone())
                .unwrap_or_default(),
            sandbox_tenant: state
                .access
                .sandbox
                .as_ref()
                .map(|s| s.tenant.clone())
                .unwrap_or_default(),
            sandbox_host: state
                .access
                .sandbox
                .as_ref()
                .map(|s| s.smtp_host.clone())
                .unwrap_or_default(),
            sandbox_port: state
                .access
                .sandbox
                .as_ref()
                .map(|s| s.smtp_port)
                .unwrap_or_default(),
            notice,
            mailboxes: rows,
            sending,
            log: sending::LogSummary::of(&counts),
        },
    ))
}

/// What became of the authorization the browser returns from (`?attempt=`), if it names one.
async fn attempt_notice(
    state: &AppState,
    org_id: OrgId,
    attempt: Option<&str>,
) -> Result<Option<Notice>, UiError> {
    Ok(match attempt {
        None => None,
        Some("invalid") => Some(Notice {
            kind: "bad",
            title: "This authorization response was not accepted.".into(),
            message: Some("It was missing its state, had been used already, or came from another browser session, so nothing was stored.".into()),
            action: Some("Click Authorize again from this page.".into()),
        }),
        Some(id) => match crate::services::authorization::attempt(&state.access, org_id, id).await? {
            Some(attempt) => Some(match attempt.status {
                AttemptStatus::Completed => Notice {
                    kind: "ok",
                    title: "Authorized: the mailbox is Verified.".into(),
                    message: None,
                    action: None,
                },
                AttemptStatus::Pending => Notice {
                    kind: "bad",
                    title: "The authorization is still waiting for the sign-in.".into(),
                    message: None,
                    action: None,
                },
                AttemptStatus::Failed | AttemptStatus::Expired => Notice {
                    kind: "bad",
                    title: "The authorization did not succeed.".into(),
                    message: attempt.reason.as_ref().map(|r| r.message.clone()),
                    action: attempt.reason.and_then(|r| r.action),
                },
            }),
            None => None,
        },
    })
}

/// A mailbox as the list shows it, with a warning when its client secret expires soon.
fn mailbox_row(m: Mailbox, today: time::Date) -> MailboxRow {
    let expiry = m.credential_expiry().map(|e| (e.date(), e.what()));
    let date_wanted = secret_date_wanted(&m);
    MailboxRow {
            id: m.id.to_string(),
            json: serde_json::json!({
                "id": m.id.to_string(), "name": m.name, "status": m.status.as_str(), "auth": m.auth.as_str(), "provider": m.provider.as_str(),
                "tenant": m.tenant, "host": m.host, "port": m.port, "security": m.security.as_str(),
                "username": m.username, "sign_in_account": m.sign_in_account, "reply_to": m.reply_to,
                "from_name": m.from_name, "scopes": m.scopes,
                "signature": m.signature, "authorization_url": m.authorization_url, "token_url": m.token_url,
                "client_id": m.client_id, "client_secret_expires_at": m.client_secret_expires_at.map(|d| d.to_string()),
                "client_secret_expiry_source": m.client_secret_expires_at.map(|_| m.client_secret_expiry_source.as_str()),
                "transport": m.transport.as_str(), "credential": m.credential.as_str(),
                "client_auth": m.client_auth.as_str(), "cloud": m.cloud.as_str(),
                "certificate": m.certificate.as_ref().map(|c| serde_json::json!({
                    "thumbprint": c.thumbprint_sha1, "expires_at": c.not_after.date().to_string(),
                })),
                "next_certificate": m.next_certificate.as_ref().map(|c| serde_json::json!({
                    "thumbprint": c.thumbprint_sha1, "expires_at": c.not_after.date().to_string(),
                })),
            })
            .to_string(),
            // The alert's words, from the same date and the same rule.
            secret_warning: expiry.and_then(|(d, what)| {
                let fix = match what {
                    "certificate" => "click Renew certificate in Edit and upload the new certificate to the app registration",
                    _ => "create a new client secret in Azure and paste its Value here",
                };
                match expiry_warning(d, today)? {
                    ExpiryWarning::Expired => Some(format!("Expired: {fix}.")),
                    ExpiryWarning::ExpiresIn(days) => Some(format!(
                        "Expires in {days} day{}: {fix} before then.",
                        if days == 1 { "" } else { "s" }
                    )),
                }
            }),
            verified: m.status == crate::domain::mailbox::MailboxStatus::Verified,
            authorizes: m.credential == CredentialKind::Delegated
                && m.auth == crate::domain::mailbox::AuthKind::OAuth2,
            transport: match m.transport {
                TransportKind::Smtp => "SMTP",
                TransportKind::Graph => "Microsoft Graph",
            },
            suggest_graph: m.transport == TransportKind::Smtp
                && m.graph_capable()
                && m
                    .status_reason
                    .as_ref()
                    .is_some_and(|r| r.code == "smtp_auth_disabled"),
            reason: m.status_reason.as_ref().map(|r| r.message.clone()),
            action: m.status_reason.and_then(|r| r.action),
            name: m.name,
            username: m.username,
            auth: m.auth.as_str(),
            provider: m.provider.as_str(),
            is_default: m.is_default,
            verified_at: when(m.verified_at),
            token_expires_at: when(m.token_expires_at),
            secret_expiry: match expiry {
                Some((d, "certificate")) => format!("Certificate until {d}"),
                Some((d, _)) => d.to_string(),
                None if date_wanted => {
                    "Unknown: record the secret's expiry date (Certificates & secrets › Expires)".into()
                }
                None => "—".into(),
            },
            certificate: m.certificate.is_some()
                && m.client_auth == crate::domain::mailbox::ClientAuth::Certificate,
        }
}

/// Whether the mailbox signs in with a Microsoft client secret whose date is worth knowing.
fn secret_date_wanted(m: &Mailbox) -> bool {
    m.auth == crate::domain::mailbox::AuthKind::OAuth2
        && m.client_auth != crate::domain::mailbox::ClientAuth::Certificate
        && matches!(
            m.provider,
            crate::domain::mailbox::Provider::Microsoft | crate::domain::mailbox::Provider::Sandbox
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The list and the alert read the same date by the same rule: on each day around the
    /// steps, both say "expired", or both say the same number of days, or neither warns.
    #[test]
    fn the_list_and_the_alert_agree_on_the_days_left() {
        let today = time::macros::date!(2027 - 03 - 10);
        for days in [-3, -1, 0, 1, 2, 7, 8, 29, 30, 31, 90] {
            let expires = today + time::Duration::days(days);
            let mut m = crate::domain::mailbox::tests_support::mailbox();
            m.client_secret_expires_at = Some(expires);
            let row = mailbox_row(m, today);
            let alert = crate::services::alerts::expiry_title("client secret", "m", expires, today);
            match (row.secret_warning.as_deref(), alert.as_deref()) {
                (None, None) => assert!(days > 30, "{days}"),
                (Some(list), Some(alert)) if alert.ends_with("has expired") => {
                    assert!(list.starts_with("Expired"), "{days}: {list}");
                    assert!(days <= 0);
                }
                (Some(list), Some(alert)) => {
                    let n = alert.rsplit("expires in ").next().unwrap();
                    assert!(
                        list.starts_with(&format!("Expires in {n}")),
                        "{days}: {list} / {alert}"
                    );
                    assert!(n.starts_with(&days.to_string()));
                }
                other => panic!("{days}: they disagree: {other:?}"),
            }
        }
    }

    #[test]
    fn a_secret_without_a_date_asks_for_it() {
        let m = crate::domain::mailbox::tests_support::mailbox();
        let row = mailbox_row(m, time::macros::date!(2027 - 03 - 10));
        assert!(
            row.secret_expiry.starts_with("Unknown"),
            "{}",
            row.secret_expiry
        );
        assert!(row.secret_warning.is_none());
    }
}
