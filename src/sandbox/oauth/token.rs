//! The token endpoint: client authentication, redeeming a code (with PKCE), refreshing a
//! grant under the switches' faults, and issuing access, refresh and ID tokens (also for the
//! device code grant of `device`).

use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::super::Switches;
use super::super::credentials::SecretCheck;
use super::errors::{tenant_not_found, timestamp, token_error};
use super::issue::{issue_tokens, issue_tokens_for};
use super::{OAuthServer, app, assertion, device};
use crate::crypto;

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct TokenForm {
    grant_type: String,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    refresh_token: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    client_assertion: Option<String>,
    client_assertion_type: Option<String>,
    scope: Option<String>,
    device_code: Option<String>,
}

/// RFC 8628's grant type.
const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// RFC 7523's client assertion type.
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How a client proves who it is: its secret, or an assertion signed with a certificate's key
/// (`private_key_jwt`).
enum ClientProof {
    Secret(String),
    Assertion(String),
}

/// The client's id and secret from `Authorization: Basic`, URL-encoded as RFC 6749 §2.3.1 says.
pub(crate) fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let basic = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(basic.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    let unescape = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Some((unescape(id), unescape(secret)))
}

/// The client credentials from `Authorization: Basic` or the form.
fn client_credentials(headers: &HeaderMap, form: &TokenForm) -> (Option<String>, Option<String>) {
    match basic_credentials(headers) {
        Some((id, secret)) => (Some(id), Some(secret)),
        None => (form.client_id.clone(), form.client_secret.clone()),
    }
}

fn verify_pkce(challenge: &str, verifier: &str) -> bool {
    match challenge.split_once(':') {
        Some(("S256", expected)) => {
            let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(Sha256::digest(verifier.as_bytes()));
            crypto::constant_time_eq(&computed, expected)
        }
        Some(("plain", expected)) => crypto::constant_time_eq(verifier, expected),
        _ => false,
    }
}

pub(super) async fn token(
    State(server): State<OAuthServer>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Response {
    server.state.count_token_request();
    let latency = server.state.switches().token_latency_ms;
    if latency > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(latency)).await;
    }
    if server.state.take_outage() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            Html("<html><body>Service Unavailable</body></html>"),
        )
            .into_response();
    }
    let bad =
        |status, error, code, message: &str| token_error(&server, status, error, code, message);
    // Microsoft refuses client credentials at /common and /consumers with AADSTS9001023. It
    // refuses them at /organizations too (an app-only token needs a tenant-specific endpoint),
    // although this message names /organizations as an alternative: the sandbox answers
    // /organizations with the same error and words.
    if form.grant_type == "client_credentials"
        && matches!(
            tenant.to_ascii_lowercase().as_str(),
            "common" | "organizations" | "consumers"
        )
    {
        return bad(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            9001023,
            "The grant type isn't supported over the /common or /consumers endpoints. Please use the /organizations or tenant-specific endpoint.",
        );
    }
    if tenant != server.tenant {
        return bad(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            &tenant_not_found(&tenant),
        );
    }
    let client_id = match authenticate_client(&server, &headers, &form) {
        Ok(client_id) => client_id,
        Err(response) => return *response,
    };
    let switches = server.state.switches();
    match form.grant_type.as_str() {
        "authorization_code" => redeem_code(&server, &client_id, &form),
        "refresh_token" => refresh(&server, &client_id, &form, &switches),
        "client_credentials" => app::client_credentials(&server, &client_id, form.scope.as_deref()),
        DEVICE_CODE_GRANT => {
            device::redeem_device_code(&server, &client_id, form.device_code.as_deref())
        }
        "" => bad(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'grant_type'.",
        ),
        other => bad(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            &format!("The app requested an unsupported grant type '{other}'."),
        ),
    }
}

/// Identifies the client and checks its proof (a secret, or a certificate's signed assertion),
/// answering Entra's error when it fails.
fn authenticate_client(
    server: &OAuthServer,
    headers: &HeaderMap,
    form: &TokenForm,
) -> Result<String, Box<Response>> {
    let bad = |status, error, code, message: &str| {
        Box::new(token_error(server, status, error, code, message))
    };
    let (client_id, secret) = client_credentials(headers, form);
    let Some(client_id) = client_id.filter(|c| !c.is_empty()) else {
        return Err(bad(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        ));
    };
    let Some(client) = server.state.client(&client_id) else {
        return Err(bad(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory '{}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
                server.tenant
            ),
        ));
    };
    if server.state.app_access(&client_id).disabled {
        return Err(bad(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            7000112,
            &format!("Application '{client_id}'({}) is disabled.", client.name),
        ));
    }
    let proof = match (secret.filter(|s| !s.is_empty()), &form.client_assertion) {
        (Some(secret), _) => ClientProof::Secret(secret),
        (None, Some(assertion)) if !assertion.is_empty() => {
            if form.client_assertion_type.as_deref() != Some(ASSERTION_TYPE) {
                return Err(bad(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    900144,
                    &format!(
                        "The request body must contain the following parameter: 'client_assertion_type' with the value '{ASSERTION_TYPE}'."
                    ),
                ));
            }
            ClientProof::Assertion(assertion.clone())
        }
        _ => {
            return Err(bad(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            ));
        }
    };
    let switches = server.state.switches();
    match proof {
        ClientProof::Assertion(assertion) => {
            let now = server.state.now();
            if let Err(assertion::Refused(code, message)) = assertion::check(
                &server.state,
                &client_id,
                &server.token_endpoint(),
                &assertion,
                now,
            ) {
                return Err(bad(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    code,
                    &message,
                ));
            }
        }
        ClientProof::Secret(_) if switches.client_secret_expired => {
            return Err(bad(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000222,
                &format!(
                    "The provided client secret keys for app '{client_id}' are expired. Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added security: https://aka.ms/certCreds."
                ),
            ));
        }
        ClientProof::Secret(secret) => {
            let check = if switches.client_secret_invalid {
                SecretCheck::Unknown
            } else {
                server.state.check_client_secret(&client_id, &secret)
            };
            match check {
                SecretCheck::Accepted => {}
                SecretCheck::Expired => {
                    return Err(bad(
                        StatusCode::UNAUTHORIZED,
                        "invalid_client",
                        7000222,
                        &format!(
                            "The provided client secret keys for app '{client_id}' are expired. Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added security: https://aka.ms/certCreds."
                        ),
                    ));
                }
                SecretCheck::Unknown => {
                    return Err(bad(
                        StatusCode::UNAUTHORIZED,
                        "invalid_client",
                        7000215,
                        &format!(
                            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
                        ),
                    ));
                }
            }
        }
    }
    Ok(client_id)
}

fn redeem_code(server: &OAuthServer, client_id: &str, form: &TokenForm) -> Response {
    let bad =
        |status, error, code, message: &str| token_error(server, status, error, code, message);
    let Some(code) = form.code.as_deref().filter(|c| !c.is_empty()) else {
        return bad(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'code'.",
        );
    };
    let Some(issued) = server.state.redeem_code(code) else {
        return bad(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            9002313,
            "Invalid request. Request is malformed or invalid.",
        );
    };
    if issued.redeemed {
        return bad(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            54005,
            "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.",
        );
    }
    if issued.expires_at <= server.state.now() {
        return bad(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            70008,
            "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.",
        );
    }
    if issued.client_id != client_id {
        return bad(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            9002313,
            "Invalid request. Request is malformed or invalid.",
        );
    }
    let redirect_uri = form.redirect_uri.as_deref().unwrap_or_default();
    if redirect_uri != issued.redirect_uri {
        return bad(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            500112,
            &format!(
                "The reply address '{redirect_uri}' does not match the reply address '{}' provided when requesting Authorization code.",
                issued.redirect_uri
            ),
        );
    }
    if let Some(challenge) = &issued.code_challenge {
        let verifier = form.code_verifier.as_deref().unwrap_or_default();
        if !verify_pkce(challenge, verifier) {
            return bad(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                501481,
                "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
            );
        }
    }
    issue_tokens(
        server,
        client_id,
        &issued.user,
        &issued.scopes,
        issued.nonce.as_deref(),
    )
}

fn refresh(
    server: &OAuthServer,
    client_id: &str,
    form: &TokenForm,
    switches: &Switches,
) -> Response {
    let bad =
        |status, error, code, message: &str| token_error(server, status, error, code, message);
    server.state.record_refresh_scope(form.scope.as_deref());
    let Some(refresh_token) = form.refresh_token.as_deref().filter(|t| !t.is_empty()) else {
        return bad(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'refresh_token'.",
        );
    };
    let Some(grant) = server
        .state
        .grant(refresh_token)
        .filter(|g| g.client_id == client_id)
    else {
        return bad(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            9002313,
            "Invalid request. Request is malformed or invalid.",
        );
    };
    let issued = timestamp(grant.issued_at);
    if switches.refresh_token_expired {
        return bad(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            700082,
            &format!(
                "The refresh token has expired due to inactivity. The token was issued on {issued} and was inactive for 90.00:00:00."
            ),
        );
    }
    if switches.grant_revoked {
        return bad(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            50173,
            &format!(
                "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user might have changed or reset their password. The grant was issued on '{issued}' and the TokensValidFrom date (before which tokens are not valid) for this user is '{}'.",
                timestamp(server.state.now())
            ),
        );
    }
    if switches.consent_required {
        let name = server
            .state
            .client(client_id)
            .map(|c| c.name)
            .unwrap_or_default();
        return bad(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            65001,
            &format!(
                "The user or administrator has not consented to use the application with ID '{client_id}' named '{name}'. Send an interactive authorization request for this user and resource."
            ),
        );
    }
    if switches.mfa_required {
        return bad(
            StatusCode::BAD_REQUEST,
            "interaction_required",
            50076,
            "Due to a configuration change made by your administrator, or because you moved to a new location, you must use multi-factor authentication to access 'https://outlook.office.com'.",
        );
    }
    // A refresh may ask for some of the granted scopes (another resource's, say): the access
    // token carries those, and the new refresh token the whole grant.
    let asked: Vec<String> = form
        .scope
        .as_deref()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if let Some(missing) = asked.iter().find(|s| !grant.scopes.contains(s)) {
        let name = server
            .state
            .client(client_id)
            .map(|c| c.name)
            .unwrap_or_default();
        return bad(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            65001,
            &format!(
                "The user or administrator has not consented to use the application with ID '{client_id}' named '{name}' for the scope '{missing}'. Send an interactive authorization request for this user and resource."
            ),
        );
    }
    let scopes = if asked.is_empty() {
        grant.scopes.clone()
    } else {
        asked
    };
    issue_tokens_for(
        server,
        client_id,
        &grant.user,
        (&scopes, &grant.scopes),
        None,
    )
}
