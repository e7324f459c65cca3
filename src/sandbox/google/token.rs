//! Google's token endpoint: client authentication (`client_secret_post` or `_basic`), codes
//! with PKCE, refreshes that never rotate the refresh token, the switches' failures, and the
//! JWT bearer grant of service accounts (in `service_accounts`, reached through the parent).
//! Errors are Google's `{"error", "error_description"}`.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use base64::Engine as _;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

use super::super::Grant;
use super::super::oauth::basic_credentials;
use super::{GoogleServer, service_account_grant};
use crate::crypto;

/// How long an app in "Testing" status keeps a refresh token.
const TESTING_REFRESH_TOKEN_LIFETIME: Duration = Duration::days(7);

/// RFC 7523's grant type.
pub(super) const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

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
    assertion: Option<String>,
}

/// A Google token-endpoint error.
pub(super) fn google_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

fn bad_request(error: &str, description: &str) -> Response {
    google_error(StatusCode::BAD_REQUEST, error, description)
}

const ADMIN_POLICY: &str = "Access to your account data is restricted by policies within your organization. Please contact the administrator of your organization for more information.";

pub(super) async fn token(
    State(server): State<GoogleServer>,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Response {
    server.state.count_token_request();
    if form.grant_type == JWT_BEARER {
        return service_account_grant(&server, form.assertion.as_deref().unwrap_or_default());
    }
    let (client_id, secret) = client_credentials(&headers, &form);
    let Some(client) = server.state.client(&client_id) else {
        return google_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "The OAuth client was not found.",
        );
    };
    if !crypto::constant_time_eq(&secret, client.secret.expose_secret()) {
        return google_error(StatusCode::UNAUTHORIZED, "invalid_client", "Unauthorized");
    }
    match form.grant_type.as_str() {
        "authorization_code" => redeem_code(&server, &client_id, &form),
        "refresh_token" => refresh(&server, &client_id, &form),
        other => bad_request(
            "unsupported_grant_type",
            &format!("Invalid grant_type: {other}"),
        ),
    }
}

/// The client's id and secret, from `Authorization: Basic` or the form.
fn client_credentials(headers: &HeaderMap, form: &TokenForm) -> (String, String) {
    basic_credentials(headers).unwrap_or_else(|| {
        (
            form.client_id.clone().unwrap_or_default(),
            form.client_secret.clone().unwrap_or_default(),
        )
    })
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

fn redeem_code(server: &GoogleServer, client_id: &str, form: &TokenForm) -> Response {
    let code = form.code.as_deref().unwrap_or_default();
    let found = {
        let mut google = server.state.google();
        google.codes.get_mut(&crypto::token_digest(code)).map(|c| {
            let before = c.clone();
            c.issued.redeemed = true;
            before
        })
    };
    let Some(found) = found else {
        return bad_request("invalid_grant", "Malformed auth code.");
    };
    let issued = found.issued;
    if issued.redeemed || issued.expires_at <= server.state.now() {
        return bad_request("invalid_grant", "Bad Request");
    }
    if issued.client_id != client_id {
        return google_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized_client",
            "Unauthorized",
        );
    }
    if form.redirect_uri.as_deref() != Some(issued.redirect_uri.as_str()) {
        return bad_request("redirect_uri_mismatch", "Bad Request");
    }
    if let Some(challenge) = &issued.code_challenge {
        match form.code_verifier.as_deref() {
            None | Some("") => return bad_request("invalid_grant", "Missing code verifier."),
            Some(verifier) if !verify_pkce(challenge, verifier) => {
                return bad_request("invalid_grant", "Invalid code verifier.");
            }
            Some(_) => {}
        }
    }
    if server.state.switches().google_admin_policy_enforced {
        return bad_request("admin_policy_enforced", ADMIN_POLICY);
    }
    let now = server.state.now();
    let first_consent = server
        .state
        .google()
        .consented
        .insert((issued.user.clone(), client_id.to_owned()));
    // Google issues a refresh token offline only, and again only when consent was asked.
    let refresh_token = (found.request.offline && (first_consent || found.request.prompt_consent))
        .then(|| {
            let token = format!("1//0{}", crypto::random_token());
            let mut google = server.state.google();
            google.refresh_tokens_issued += 1;
            google.grants.insert(
                crypto::token_digest(&token),
                Grant {
                    client_id: client_id.to_owned(),
                    user: issued.user.clone(),
                    scopes: issued.scopes.clone(),
                    issued_at: now,
                },
            );
            token
        });
    issue(
        server,
        client_id,
        &issued.user,
        &issued.scopes,
        issued.nonce.as_deref(),
        refresh_token,
    )
}

fn refresh(server: &GoogleServer, client_id: &str, form: &TokenForm) -> Response {
    let token = form.refresh_token.as_deref().unwrap_or_default();
    let grant = server
        .state
        .google()
        .grants
        .get(&crypto::token_digest(token))
        .cloned();
    let Some(grant) = grant else {
        return bad_request("invalid_grant", "Bad Request");
    };
    if grant.client_id != client_id {
        return google_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized_client",
            "Unauthorized",
        );
    }
    let switches = server.state.switches();
    if switches.google_admin_policy_enforced {
        return bad_request("admin_policy_enforced", ADMIN_POLICY);
    }
    let now = server.state.now();
    if switches.google_testing_status && grant.issued_at + TESTING_REFRESH_TOKEN_LIFETIME <= now {
        return bad_request("invalid_grant", "Token has been expired or revoked.");
    }
    server.state.google().refreshes += 1;
    // No new refresh token: Google's do not rotate.
    issue(server, client_id, &grant.user, &grant.scopes, None, None)
}

/// Issues an access token (and an ID token when `openid` was granted) for `user`.
pub(super) fn issue(
    server: &GoogleServer,
    client_id: &str,
    user: &str,
    scopes: &[String],
    nonce: Option<&str>,
    refresh_token: Option<String>,
) -> Response {
    let now = server.state.now();
    let (access_token, record) =
        server
            .state
            .issue_access_token(user, client_id, scopes.to_vec(), now);
    let mut body = json!({
        "access_token": access_token.expose_secret(),
        "expires_in": (record.expires_at - now).whole_seconds().max(0),
        "scope": scopes.join(" "),
        "token_type": "Bearer",
    });
    if let Some(refresh_token) = refresh_token {
        body["refresh_token"] = json!(refresh_token);
    }
    if scopes.iter().any(|s| s == "openid") {
        match id_token(server, client_id, user, nonce, now) {
            Ok(token) => body["id_token"] = json!(token),
            Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        }
    }
    (
        StatusCode::OK,
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        Json(body),
    )
        .into_response()
}

/// Google's ID token: `sub` a number, `email`, `email_verified`, `hd` the Workspace domain.
fn id_token(
    server: &GoogleServer,
    client_id: &str,
    user: &str,
    nonce: Option<&str>,
    now: OffsetDateTime,
) -> Result<String, jsonwebtoken::errors::Error> {
    let digest = Sha256::digest(user.as_bytes());
    let sub: String = digest[..10]
        .iter()
        .map(|b| char::from(b'0' + b % 10))
        .collect();
    let iat = now.unix_timestamp();
    let mut claims = json!({
        "iss": server.issuer(),
        "azp": client_id,
        "aud": client_id,
        "sub": format!("1{sub}"),
        "email": user,
        "email_verified": true,
        "hd": user.rsplit('@').next().unwrap_or_default(),
        "iat": iat,
        "exp": iat + 3600,
    });
    if let Some(nonce) = nonce {
        claims["nonce"] = json!(nonce);
    }
    server.state.signing_key().sign(&claims)
}
