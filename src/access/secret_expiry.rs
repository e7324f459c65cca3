//! A client secret's expiry, read from the app registration instead of typed: when the app may
//! read itself (Application.Read.All, as an application permission or a delegated scope the
//! mailbox asks for), Herald asks Microsoft Graph for its `passwordCredentials`
//! (`GET /v1.0/applications?$filter=appId eq '{id}'`), finds the secret in use by its hint
//! (its first three characters) and records its `endDateTime`. Without the permission (`403`)
//! the typed date stays, and nothing is said beyond a debug line.

use secrecy::{ExposeSecret, SecretString};
use time::Date;

use super::tokens::token_for_scopes;
use super::{Access, AccessResult, access_token, app_token, stale};
use crate::domain::mailbox::{
    AuthKind, ClientAuth, CredentialKind, ExpirySource, MICROSOFT_GRAPH_URL, Mailbox, Provider,
    TransportKind, secret_fields,
};
use crate::{keys, store};

/// The largest answer read: an app registration's credentials are a few kilobytes.
const MAX_ANSWER: usize = 256 * 1024;

/// Graph's address and the resource its tokens name, for a mailbox whose provider has Graph.
fn graph_of(access: &Access, mailbox: &Mailbox) -> Option<(String, String)> {
    match mailbox.provider {
        Provider::Microsoft => Some((
            mailbox
                .graph_url
                .clone()
                .unwrap_or_else(|| mailbox.cloud.graph_url().to_owned()),
            mailbox.cloud.graph_url().to_owned(),
        )),
        Provider::Sandbox => Some((
            mailbox
                .graph_url
                .clone()
                .or_else(|| access.sandbox.as_ref().map(|s| s.base_url.clone()))?,
            MICROSOFT_GRAPH_URL.to_owned(),
        )),
        _ => None,
    }
}

/// The end date of the secret whose hint matches `secret`, from Graph's answer. Two secrets
/// with the same hint are told apart by nothing Graph shows: then the date is not guessed.
pub fn expiry_for(answer: &serde_json::Value, client_id: &str, secret: &str) -> Option<Date> {
    let hint: String = secret.chars().take(3).collect();
    let app = answer
        .get("value")?
        .as_array()?
        .iter()
        .find(|a| a.get("appId").and_then(|v| v.as_str()) == Some(client_id))?;
    let matching: Vec<&str> = app
        .get("passwordCredentials")?
        .as_array()?
        .iter()
        .filter(|c| c.get("hint").and_then(|h| h.as_str()) == Some(hint.as_str()))
        .filter_map(|c| c.get("endDateTime")?.as_str())
        .collect();
    match matching.as_slice() {
        [one] => time::OffsetDateTime::parse(one, &time::format_description::well_known::Rfc3339)
            .ok()
            .map(|t| t.date()),
        _ => None,
    }
}

/// A Graph token that may carry Application.Read.All, or `None` when the mailbox has no way
/// to one.
async fn graph_token(
    access: &Access,
    mailbox: &Mailbox,
    resource: &str,
) -> AccessResult<Option<SecretString>> {
    if mailbox.credential == CredentialKind::App {
        // The app's token for Graph: the one it sends with, or one for Graph's `.default`.
        let mut for_graph = mailbox.clone();
        if mailbox.transport != TransportKind::Graph {
            for_graph.scopes = vec![format!("{resource}/.default")];
        }
        return Ok(app_token::app_token(access, &for_graph, None).await?.ok());
    }
    // Delegated tokens carry it only when the mailbox asked for the scope.
    let Some(scope) = mailbox
        .scopes
        .iter()
        .find(|s| s.ends_with("/Application.Read.All"))
    else {
        tracing::debug!(mailbox = %mailbox.id, "no Application.Read.All scope: the secret's expiry is not read");
        return Ok(None);
    };
    if mailbox.transport == TransportKind::Graph {
        return Ok(access_token(access, mailbox.org_id, mailbox.id, None)
            .await?
            .ok());
    }
    token_for_scopes(access, mailbox, std::slice::from_ref(scope)).await
}

/// Reads the expiry of the client secret in use from the app registration and records it.
/// Answers the mailbox as it stands afterwards.
pub async fn read_secret_expiry(access: &Access, mailbox: &Mailbox) -> AccessResult<Mailbox> {
    // As stored now: a successor may have taken over (and the old date gone) on the way here.
    let stored = {
        let mut conn = access.store.conn().await?;
        store::mailboxes::get(&mut conn, mailbox.org_id, mailbox.id).await?
    };
    let Some(mailbox) = stored else {
        return Ok(mailbox.clone());
    };
    let mailbox = &mailbox;
    let unchanged = Ok(mailbox.clone());
    if mailbox.auth != AuthKind::OAuth2 || mailbox.client_auth == ClientAuth::Certificate {
        return unchanged;
    }
    let (Some((graph, resource)), Some(client_id)) =
        (graph_of(access, mailbox), mailbox.client_id.as_deref())
    else {
        return unchanged;
    };
    let owner = mailbox.id.to_string();
    let secret = {
        let mut conn = access.store.conn().await?;
        keys::get_secret(
            &mut conn,
            &access.keys,
            &owner,
            secret_fields::CLIENT_SECRET,
        )
        .await?
    };
    let Some(secret) = secret else {
        return unchanged;
    };
    let Some(token) = graph_token(access, mailbox, &resource).await? else {
        return unchanged;
    };
    let Ok(mut url) = url::Url::parse(&format!(
        "{}/v1.0/applications",
        graph.trim_end_matches('/')
    )) else {
        return unchanged;
    };
    url.query_pairs_mut()
        .append_pair("$filter", &format!("appId eq '{client_id}'"))
        .append_pair("$select", "appId,passwordCredentials");
    let Ok(request) = axum::http::Request::builder()
        .method(axum::http::Method::GET)
        .uri(url.as_str())
        .header(
            axum::http::header::AUTHORIZATION,
            format!("Bearer {}", token.expose_secret()),
        )
        .body(Vec::new())
    else {
        return unchanged;
    };
    let answer = match access.http.execute_api(request, MAX_ANSWER).await {
        Ok(answer) => answer,
        Err(e) => {
            tracing::debug!(mailbox = %mailbox.id, error = %e, "Graph unreachable: the secret's expiry is not read");
            return unchanged;
        }
    };
    if !answer.status().is_success() {
        // 403 Authorization_RequestDenied: the app may not read itself. The typed date stays.
        tracing::debug!(mailbox = %mailbox.id, status = %answer.status(), "Graph did not list the app registration: the secret's expiry is not read");
        return unchanged;
    }
    let body: serde_json::Value = serde_json::from_slice(answer.body()).unwrap_or_default();
    let Some(date) = expiry_for(&body, client_id, secret.expose_secret()) else {
        tracing::debug!(mailbox = %mailbox.id, "no one secret of the app registration has the hint of the one in use");
        return unchanged;
    };
    let mut tx = access.store.begin().await?;
    let Some(mut current) = store::mailboxes::get(&mut tx, mailbox.org_id, mailbox.id).await?
    else {
        return unchanged;
    };
    if stale(&mut tx, mailbox).await? {
        return unchanged;
    }
    // The secret may have been replaced while Graph answered: the date is the old one's.
    let still = keys::get_secret(&mut tx, &access.keys, &owner, secret_fields::CLIENT_SECRET)
        .await?
        .is_some_and(|s| s.expose_secret() == secret.expose_secret());
    if !still {
        return unchanged;
    }
    current.client_secret_expires_at = Some(date);
    current.client_secret_expiry_source = ExpirySource::Microsoft;
    store::mailboxes::set_secret_expiry(&mut tx, &current).await?;
    tx.commit().await.map_err(store::StoreError::from)?;
    tracing::info!(mailbox = %mailbox.id, expires = %date, "the client secret's expiry was read from the app registration");
    Ok(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_in_use_is_found_by_its_hint() {
        let answer = serde_json::json!({"value": [{"appId": "app-1", "passwordCredentials": [
            {"hint": "abc", "endDateTime": "2027-06-30T10:00:00Z", "keyId": "k1", "displayName": "old"},
            {"hint": "xyz", "endDateTime": "2028-01-15T00:00:00Z", "keyId": "k2", "displayName": "new"},
        ]}]});
        assert_eq!(
            expiry_for(&answer, "app-1", "xyz8Q~rest"),
            Some(time::macros::date!(2028 - 01 - 15))
        );
        assert_eq!(expiry_for(&answer, "app-2", "xyz8Q~rest"), None);
        assert_eq!(expiry_for(&answer, "app-1", "qqq8Q~rest"), None);
        let twins = serde_json::json!({"value": [{"appId": "app-1", "passwordCredentials": [
            {"hint": "abc", "endDateTime": "2027-06-30T10:00:00Z"},
            {"hint": "abc", "endDateTime": "2028-06-30T10:00:00Z"},
        ]}]});
        assert_eq!(
            expiry_for(&twins, "app-1", "abc8Q~"),
            None,
            "two with one hint: no guess"
        );
    }
}
