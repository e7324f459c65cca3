//! The authorization server's discovery document: its issuer, and whether it always says so.

use super::*;
use crate::domain::mailbox::{AuthKind, Mailbox, Provider};
use crate::services::ServiceResult;
use crate::store::{self, Store};

/// Where the mailbox's authorization server describes itself: the Microsoft tenant's and the
/// sandbox's discovery documents, and a custom provider's given issuer. Google's issuer is
/// fixed and known.
pub(super) fn discovery_urls(mailbox: &Mailbox, policy: &Policy<'_>) -> Vec<String> {
    if mailbox.auth != AuthKind::OAuth2 {
        return Vec::new();
    }
    let tenant = mailbox.tenant.as_deref();
    match mailbox.provider {
        Provider::Microsoft => tenant
            .map(|t| {
                format!(
                    "https://{}/{t}/v2.0/.well-known/openid-configuration",
                    mailbox.cloud.login_host()
                )
            })
            .into_iter()
            .collect(),
        Provider::Sandbox => policy
            .sandbox
            .zip(tenant)
            .map(|(s, t)| format!("{}/{t}/v2.0/.well-known/openid-configuration", s.base_url))
            .into_iter()
            .collect(),
        // OpenID Connect Discovery (under the issuer), then RFC 8414 (the path after it).
        Provider::Custom => mailbox
            .issuer
            .as_deref()
            .and_then(|i| url::Url::parse(i).ok())
            .map(|i| {
                let path = i.path().trim_end_matches('/');
                let origin = i.origin().ascii_serialization();
                vec![
                    format!("{origin}{path}/.well-known/openid-configuration"),
                    format!("{origin}/.well-known/oauth-authorization-server{path}"),
                ]
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Reads the mailbox's authorization server's discovery document and records its issuer and
/// whether every redirect carries `iss` (then one without it is refused). Called when a mailbox
/// is saved (not for Microsoft 365: see the API's `discover_on_save`) and before an
/// authorization that has no issuer yet: Entra's issuer carries the
/// tenant's GUID, which a domain typed in does not tell. Without an answer the mailbox keeps
/// what it had, and the redirect's `iss` is checked only if an issuer is known.
pub async fn discover(
    store: &Store,
    http: &crate::oauth::http::TokenHttp,
    policy: &Policy<'_>,
    mailbox: Mailbox,
) -> ServiceResult<Mailbox> {
    let mut found = None;
    for url in discovery_urls(&mailbox, policy) {
        let fetched = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            crate::oauth::discovery::fetch(http, &url),
        )
        .await
        .unwrap_or_else(|_| {
            Err(crate::oauth::discovery::DiscoveryError::Invalid(
                "no answer within 5 seconds".into(),
            ))
        });
        match fetched {
            Ok(document) => {
                found = Some(document);
                break;
            }
            Err(e) => {
                tracing::info!(mailbox = %mailbox.id, %url, error = %e, "the authorization server's discovery document was not read here");
            }
        }
    }
    let Some(found) = found else {
        return Ok(mailbox);
    };
    // A custom provider's issuer is the admin's: the document must agree with it.
    if mailbox.provider == Provider::Custom
        && mailbox.issuer.as_deref().map(|i| i.trim_end_matches('/'))
            != Some(found.issuer.trim_end_matches('/'))
    {
        tracing::warn!(mailbox = %mailbox.id, issuer = %found.issuer, "the discovery document names another issuer than the mailbox's; ignored");
        return Ok(mailbox);
    }
    let mut conn = store.conn().await?;
    if store::mailboxes::set_discovery(
        &mut conn,
        &mailbox,
        &found.issuer,
        found.iss_parameter_supported,
    )
    .await?
    {
        return Ok(Mailbox {
            issuer: Some(found.issuer),
            iss_required: found.iss_parameter_supported,
            ..mailbox
        });
    }
    Ok(mailbox)
}

/// A custom provider's device authorization endpoint (RFC 8628), as its discovery document
/// says: read when a device code is asked for, since Herald stores only the issuer. It must
/// be on the issuer's host, as the document itself must.
pub async fn device_endpoint(
    http: &crate::oauth::http::TokenHttp,
    policy: &Policy<'_>,
    mailbox: &Mailbox,
) -> Option<String> {
    if mailbox.provider != Provider::Custom {
        return None;
    }
    for url in discovery_urls(mailbox, policy) {
        let fetched = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            crate::oauth::discovery::fetch(http, &url),
        )
        .await;
        let Ok(Ok(document)) = fetched else {
            continue;
        };
        let endpoint = document.device_authorization_endpoint?;
        let same_host = url::Url::parse(&endpoint)
            .ok()
            .zip(url::Url::parse(&document.issuer).ok())
            .is_some_and(|(e, i)| {
                e.host_str() == i.host_str() && matches!(e.scheme(), "https" | "http")
            });
        return same_host.then_some(endpoint);
    }
    None
}
