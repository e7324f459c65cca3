//! A provider recognised by its endpoints: an admin who picks Custom and pastes Microsoft's v2
//! endpoints, as the seed's guide says to, gets the same mailbox as the Microsoft preset (the
//! tenant and cloud read from the URL: its SMTP server, scopes and Graph); Google's endpoints
//! give the Google preset.

use super::MailboxDraft;
use crate::domain::mailbox::Cloud;

/// The cloud and tenant of a Microsoft v2 endpoint
/// (`https://login.microsoftonline.com/{tenant}/oauth2/v2.0/authorize` or `/token`).
pub(super) fn microsoft_endpoint(url: &str) -> Option<(Cloud, String)> {
    let url = url::Url::parse(url.trim()).ok()?;
    if url.scheme() != "https" {
        return None;
    }
    let cloud = match url.host_str()?.to_ascii_lowercase().as_str() {
        "login.microsoftonline.com" => Cloud::Global,
        // GCC High and DoD sign in at the same host; GCC High is the one more tenants use, and
        // the cloud can be changed afterwards.
        "login.microsoftonline.us" => Cloud::UsGov,
        "login.chinacloudapi.cn" => Cloud::China,
        _ => return None,
    };
    let segments: Vec<&str> = url.path_segments()?.collect();
    match segments.as_slice() {
        [tenant, "oauth2", "v2.0", "authorize" | "token"] if !tenant.is_empty() => {
            Some((cloud, (*tenant).to_owned()))
        }
        _ => None,
    }
}

/// Whether a URL is Google's OAuth 2.0 endpoint.
fn google_endpoint(url: &str) -> bool {
    url::Url::parse(url.trim()).is_ok_and(|u| {
        u.scheme() == "https"
            && matches!(
                u.host_str(),
                Some("accounts.google.com" | "oauth2.googleapis.com")
            )
    })
}

/// Turns a Custom OAuth2 draft whose endpoints are Microsoft's or Google's into that
/// provider's, keeping what the admin typed (the endpoints, the server, the scopes).
pub(super) fn recognize(draft: &mut MailboxDraft) {
    let custom = matches!(
        draft.provider.as_deref().map(str::trim),
        None | Some("" | "custom")
    );
    if !custom || draft.auth.as_deref().map(str::trim) != Some("oauth2") {
        return;
    }
    let urls = [&draft.authorization_url, &draft.token_url];
    if let Some((cloud, tenant)) = urls
        .iter()
        .find_map(|u| u.as_deref().and_then(microsoft_endpoint))
    {
        draft.provider = Some("microsoft".into());
        if draft.tenant.as_deref().is_none_or(|t| t.trim().is_empty()) {
            draft.tenant = Some(tenant);
        }
        if draft.cloud.is_none() {
            draft.cloud = Some(cloud.as_str().into());
        }
    } else if urls
        .iter()
        .any(|u| u.as_deref().is_some_and(google_endpoint))
    {
        draft.provider = Some("google".into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn microsofts_v2_endpoints_name_their_cloud_and_tenant() {
        assert_eq!(
            microsoft_endpoint("https://login.microsoftonline.com/contoso.com/oauth2/v2.0/token"),
            Some((Cloud::Global, "contoso.com".into()))
        );
        assert_eq!(
            microsoft_endpoint(
                "https://login.microsoftonline.us/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/authorize"
            ),
            Some((Cloud::UsGov, "72f988bf-86f1-41af-91ab-2d7cd011db47".into()))
        );
        // v1 endpoints, other hosts and plain http are not recognised.
        assert_eq!(
            microsoft_endpoint("https://login.microsoftonline.com/contoso.com/oauth2/token"),
            None
        );
        assert_eq!(
            microsoft_endpoint("https://login.example.com/contoso.com/oauth2/v2.0/token"),
            None
        );
        assert_eq!(
            microsoft_endpoint("http://login.microsoftonline.com/c/oauth2/v2.0/token"),
            None
        );
    }

    #[test]
    fn a_custom_draft_with_known_endpoints_becomes_that_provider() {
        let mut draft = MailboxDraft {
            auth: Some("oauth2".into()),
            provider: Some("custom".into()),
            authorization_url: Some(
                "https://login.microsoftonline.com/contoso.com/oauth2/v2.0/authorize".into(),
            ),
            ..MailboxDraft::default()
        };
        recognize(&mut draft);
        assert_eq!(draft.provider.as_deref(), Some("microsoft"));
        assert_eq!(draft.tenant.as_deref(), Some("contoso.com"));
        assert_eq!(draft.cloud.as_deref(), Some("global"));

        let mut google = MailboxDraft {
            auth: Some("oauth2".into()),
            token_url: Some("https://oauth2.googleapis.com/token".into()),
            ..MailboxDraft::default()
        };
        recognize(&mut google);
        assert_eq!(google.provider.as_deref(), Some("google"));

        let mut other = MailboxDraft {
            auth: Some("oauth2".into()),
            authorization_url: Some("https://idp.example.org/authorize".into()),
            ..MailboxDraft::default()
        };
        recognize(&mut other);
        assert_eq!(other.provider, None);
    }
}
