//! The sandbox's authorization server, shaped like Microsoft Entra ID v2.0:
//! `{base}/{tenant}/oauth2/v2.0/authorize` and `/token`, OpenID discovery and keys, a sign-in
//! form, a consent page with **Accept**, and errors worded and shaped as Entra's.
//!
//! As at Microsoft, a bad `client_id` or `redirect_uri` ends on the provider's own error page
//! and is never sent back to the client; other authorization errors are redirected with
//! `error=`. Token errors carry `error`, `error_description` (`AADSTSnnnn: …`), `error_codes`,
//! `timestamp`, `trace_id` and `correlation_id`. The authorization response carries `iss`
//! (RFC 9207). Refresh tokens rotate on every use and the old one stays valid.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::Engine as _;
use rsa::traits::PublicKeyParts as _;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

use super::{Grant, IssuedCode, Pending, SMTP_SEND_SCOPE, SandboxState, Switches};
use crate::crypto;

/// The tenant's directory id, shown in ID tokens as `tid`.
const TENANT_ID: &str = "5b6a6f2e-7361-4e64-8062-6f7800000001";
const CODE_LIFETIME: Duration = Duration::minutes(10);

/// The scopes the sandbox knows, with what the consent page says of them.
const KNOWN_SCOPES: &[(&str, &str)] = &[
    (
        SMTP_SEND_SCOPE,
        "Send emails from mailboxes using SMTP AUTH.",
    ),
    (
        "offline_access",
        "Maintain access to data you have given it access to",
    ),
    ("openid", "Sign you in"),
    ("profile", "View your basic profile"),
    ("email", "View your email address"),
];

/// The RSA key that signs ID tokens, published at the JWKS endpoint.
pub struct SigningKey {
    kid: String,
    encoding: jsonwebtoken::EncodingKey,
    n: String,
    e: String,
}

impl SigningKey {
    pub(crate) fn generate() -> Self {
        use rsa::pkcs1::EncodeRsaPrivateKey as _;
        let key = rsa::PrivateKey::new(&mut rand::rng(), 2048).expect("RSA-2048 key generation");
        let der = key.to_pkcs1_der().expect("PKCS#1 encoding of a fresh key");
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let n = b64(&key.n_bytes());
        let kid = b64(&Sha256::digest(n.as_bytes())[..12]);
        Self {
            kid,
            encoding: jsonwebtoken::EncodingKey::from_rsa_der(der.as_bytes()),
            n,
            e: b64(&key.e_bytes()),
        }
    }
}

/// The authorization server's configuration and state.
#[derive(Clone)]
pub struct OAuthServer {
    pub state: Arc<SandboxState>,
    /// The sandbox's public base URL, without a trailing slash.
    pub base_url: String,
    pub tenant: String,
}

impl OAuthServer {
    pub fn new(state: Arc<SandboxState>, base_url: &str, tenant: &str) -> Self {
        Self {
            state,
            base_url: base_url.trim_end_matches('/').to_owned(),
            tenant: tenant.to_owned(),
        }
    }

    pub fn issuer(&self) -> String {
        format!("{}/{}/v2.0", self.base_url, self.tenant)
    }

    pub fn authorization_endpoint(&self) -> String {
        format!("{}/{}/oauth2/v2.0/authorize", self.base_url, self.tenant)
    }

    pub fn token_endpoint(&self) -> String {
        format!("{}/{}/oauth2/v2.0/token", self.base_url, self.tenant)
    }
}

/// The sandbox's HTTP routes: the authorization server and the control API.
pub fn router(server: OAuthServer) -> Router {
    Router::new()
        .route("/", get(index))
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(discovery),
        )
        .route("/{tenant}/discovery/v2.0/keys", get(keys))
        .route("/{tenant}/oauth2/v2.0/authorize", get(authorize))
        .route("/{tenant}/login", post(sign_in))
        .route("/{tenant}/consent", post(consent))
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .route("/_sandbox/switches", get(get_switches).put(put_switches))
        .route("/_sandbox/messages", get(messages))
        .route("/_sandbox/counters", get(counters))
        .with_state(server)
}

async fn index(State(server): State<OAuthServer>) -> Html<String> {
    Html(format!(
        "<!doctype html><title>Herald sandbox</title><h1>Herald sandbox</h1><p>A local stand-in for Microsoft Entra ID and Exchange Online.</p><p>Discovery: <a href=\"{0}/.well-known/openid-configuration\">{0}/.well-known/openid-configuration</a></p>",
        server.issuer()
    ))
}

fn timestamp(now: OffsetDateTime) -> String {
    let f = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]Z");
    now.format(&f).unwrap_or_default()
}

#[derive(Template)]
#[template(path = "sandbox/error.html")]
struct ErrorPage {
    tenant: String,
    message: String,
    request_id: String,
    correlation_id: String,
    timestamp: String,
}

/// An error shown on the provider's own page, never sent to the client.
fn error_page(tenant: &str, code: u32, message: &str) -> Response {
    let page = ErrorPage {
        tenant: tenant.to_owned(),
        message: format!("AADSTS{code}: {message}"),
        request_id: uuid::Uuid::new_v4().to_string(),
        correlation_id: uuid::Uuid::new_v4().to_string(),
        timestamp: timestamp(OffsetDateTime::now_utc()),
    };
    match page.render() {
        Ok(html) => (StatusCode::BAD_REQUEST, Html(html)).into_response(),
        Err(_) => (StatusCode::BAD_REQUEST, format!("AADSTS{code}: {message}")).into_response(),
    }
}

/// A token-endpoint error in Entra's shape.
fn token_error(
    server: &OAuthServer,
    status: StatusCode,
    error: &str,
    code: u32,
    message: &str,
) -> Response {
    let now = OffsetDateTime::now_utc();
    let trace = uuid::Uuid::new_v4();
    let correlation = uuid::Uuid::new_v4();
    let ts = timestamp(now);
    let body = json!({
        "error": error,
        "error_description": format!("AADSTS{code}: {message} Trace ID: {trace} Correlation ID: {correlation} Timestamp: {ts}"),
        "error_codes": [code],
        "timestamp": ts,
        "trace_id": trace.to_string(),
        "correlation_id": correlation.to_string(),
        "error_uri": format!("{}/error?code={code}", server.base_url),
    });
    (status, [(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

fn tenant_not_found(tenant: &str) -> String {
    format!(
        "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
    )
}

async fn discovery(State(server): State<OAuthServer>, Path(tenant): Path<String>) -> Response {
    if tenant != server.tenant {
        return token_error(
            &server,
            StatusCode::BAD_REQUEST,
            "invalid_tenant",
            90002,
            &tenant_not_found(&tenant),
        );
    }
    Json(json!({
        "issuer": server.issuer(),
        "authorization_endpoint": server.authorization_endpoint(),
        "token_endpoint": server.token_endpoint(),
        "jwks_uri": format!("{}/{}/discovery/v2.0/keys", server.base_url, server.tenant),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "nonce", "name", "preferred_username", "email", "oid", "tid", "ver"],
        "code_challenge_methods_supported": ["S256", "plain"],
        "authorization_response_iss_parameter_supported": true,
        "request_uri_parameter_supported": false,
        "tenant_region_scope": "WW",
        "cloud_instance_name": "sandbox.herald.localhost",
    }))
    .into_response()
}

async fn keys(State(server): State<OAuthServer>) -> Response {
    let key = server.state.signing_key();
    Json(json!({
        "keys": [{
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": key.kid,
            "n": key.n,
            "e": key.e,
        }]
    }))
    .into_response()
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AuthorizeQuery {
    client_id: String,
    response_type: String,
    redirect_uri: String,
    scope: String,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    login_hint: String,
}

/// Appends query parameters to a redirect URI.
fn redirect_with(redirect_uri: &str, params: &[(&str, &str)]) -> Response {
    let mut url = match url::Url::parse(redirect_uri) {
        Ok(url) => url,
        Err(_) => return (StatusCode::BAD_REQUEST, "invalid redirect URI").into_response(),
    };
    {
        let mut pairs = url.query_pairs_mut();
        for (k, v) in params {
            pairs.append_pair(k, v);
        }
    }
    Redirect::to(url.as_str()).into_response()
}

fn redirect_error(
    server: &OAuthServer,
    redirect_uri: &str,
    state: Option<&str>,
    error: &str,
    code: u32,
    message: &str,
) -> Response {
    let now = OffsetDateTime::now_utc();
    let description = format!(
        "AADSTS{code}: {message} Trace ID: {} Correlation ID: {} Timestamp: {}",
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
        timestamp(now)
    );
    let issuer = server.issuer();
    let mut params = vec![
        ("error", error),
        ("error_description", description.as_str()),
    ];
    if let Some(state) = state {
        params.push(("state", state));
    }
    params.push(("iss", issuer.as_str()));
    redirect_with(redirect_uri, &params)
}

#[derive(Template)]
#[template(path = "sandbox/signin.html")]
struct SignInPage {
    tenant: String,
    app_name: String,
    action: String,
    txn: String,
    login_hint: String,
    error: Option<String>,
}

async fn authorize(
    State(server): State<OAuthServer>,
    Path(tenant): Path<String>,
    Query(q): Query<AuthorizeQuery>,
) -> Response {
    if tenant != server.tenant {
        return error_page(&tenant, 90002, &tenant_not_found(&tenant));
    }
    if q.client_id.is_empty() {
        return error_page(
            &tenant,
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        );
    }
    let Some(client) = server.state.client(&q.client_id) else {
        return error_page(
            &tenant,
            700016,
            &format!(
                "Application with identifier '{}' was not found in the directory '{}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
                q.client_id, server.tenant
            ),
        );
    };
    if !client
        .redirect_uris
        .iter()
        .any(|uri| uri == &q.redirect_uri)
    {
        return error_page(
            &tenant,
            50011,
            &format!(
                "The redirect URI '{}' specified in the request does not match the redirect URIs configured for the application '{}'. Make sure the redirect URI sent in the request matches one added to your application in the Azure portal. Navigate to https://aka.ms/redirectUriMismatchError to learn more about how to fix this.",
                q.redirect_uri, client.client_id
            ),
        );
    }
    let state = q.state.as_deref();
    if q.response_type != "code" {
        return redirect_error(
            &server,
            &q.redirect_uri,
            state,
            "unsupported_response_type",
            700054,
            &format!(
                "response_type '{}' is not enabled for the application.",
                q.response_type
            ),
        );
    }
    let scopes: Vec<String> = q.scope.split_whitespace().map(str::to_owned).collect();
    if scopes.is_empty() {
        return redirect_error(
            &server,
            &q.redirect_uri,
            state,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'scope'.",
        );
    }
    if let Some(unknown) = scopes
        .iter()
        .find(|s| !KNOWN_SCOPES.iter().any(|(k, _)| k == s))
    {
        return redirect_error(
            &server,
            &q.redirect_uri,
            state,
            "invalid_scope",
            70011,
            &format!(
                "The provided value for the input parameter 'scope' is not valid. The scope '{unknown}' does not exist."
            ),
        );
    }
    let code_challenge = match (
        q.code_challenge.as_deref(),
        q.code_challenge_method.as_deref(),
    ) {
        (None, _) => None,
        (Some(c), Some("S256")) if (43..=128).contains(&c.len()) => Some(format!("S256:{c}")),
        (Some(c), None | Some("plain")) if (43..=128).contains(&c.len()) => {
            Some(format!("plain:{c}"))
        }
        _ => {
            return redirect_error(
                &server,
                &q.redirect_uri,
                state,
                "invalid_request",
                501491,
                "Invalid size of Code_Challenge parameter.",
            );
        }
    };
    let txn = crypto::random_token();
    server.state.put_pending(
        txn.clone(),
        Pending {
            tenant: tenant.clone(),
            client_id: client.client_id.clone(),
            redirect_uri: q.redirect_uri.clone(),
            scopes,
            state: q.state.clone(),
            nonce: q.nonce.clone(),
            code_challenge,
            user: None,
            expires_at: OffsetDateTime::now_utc() + CODE_LIFETIME,
        },
    );
    render(&SignInPage {
        tenant: tenant.clone(),
        app_name: client.name,
        action: format!("/{tenant}/login"),
        txn,
        login_hint: q.login_hint,
        error: None,
    })
}

fn render(page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn expired_request(tenant: &str) -> Response {
    error_page(
        tenant,
        50058,
        "A silent sign-in request was sent but no user is signed in. Start again from the application: this sign-in request is unknown or has expired.",
    )
}

#[derive(Deserialize)]
struct SignInForm {
    #[serde(default)]
    txn: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

#[derive(Template)]
#[template(path = "sandbox/consent.html")]
struct ConsentPage {
    tenant: String,
    app_name: String,
    user: String,
    permissions: Vec<&'static str>,
    action: String,
    txn: String,
}

async fn sign_in(
    State(server): State<OAuthServer>,
    Path(tenant): Path<String>,
    Form(form): Form<SignInForm>,
) -> Response {
    let Some(pending) = server
        .state
        .pending(&form.txn)
        .filter(|p| p.tenant == tenant)
    else {
        return expired_request(&tenant);
    };
    let app_name = server
        .state
        .client(&pending.client_id)
        .map(|c| c.name)
        .unwrap_or_default();
    if !server
        .state
        .check_password(&form.username, &SecretString::from(form.password))
    {
        return render(&SignInPage {
            tenant: tenant.clone(),
            app_name,
            action: format!("/{tenant}/login"),
            txn: form.txn,
            login_hint: form.username,
            error: Some("Your account or password is incorrect. If you don't remember your password, reset it now.".into()),
        });
    }
    server.state.sign_in_pending(&form.txn, &form.username);
    let permissions = pending
        .scopes
        .iter()
        .filter_map(|s| KNOWN_SCOPES.iter().find(|(k, _)| k == s).map(|(_, d)| *d))
        .collect();
    render(&ConsentPage {
        tenant: tenant.clone(),
        app_name,
        user: form.username.to_lowercase(),
        permissions,
        action: format!("/{tenant}/consent"),
        txn: form.txn,
    })
}

#[derive(Deserialize)]
struct ConsentForm {
    #[serde(default)]
    txn: String,
    #[serde(default)]
    decision: String,
}

async fn consent(
    State(server): State<OAuthServer>,
    Path(tenant): Path<String>,
    Form(form): Form<ConsentForm>,
) -> Response {
    let Some(pending) = server
        .state
        .take_pending(&form.txn)
        .filter(|p| p.tenant == tenant)
    else {
        return expired_request(&tenant);
    };
    let Some(user) = pending.user.clone() else {
        return expired_request(&tenant);
    };
    if form.decision != "accept" {
        return redirect_error(
            &server,
            &pending.redirect_uri,
            pending.state.as_deref(),
            "access_denied",
            65004,
            "User declined to consent to access the app.",
        );
    }
    let code = format!("0.{}", crypto::random_token());
    server.state.put_code(
        &code,
        IssuedCode {
            client_id: pending.client_id.clone(),
            redirect_uri: pending.redirect_uri.clone(),
            user,
            scopes: pending.scopes.clone(),
            nonce: pending.nonce.clone(),
            code_challenge: pending.code_challenge.clone(),
            expires_at: OffsetDateTime::now_utc() + CODE_LIFETIME,
            redeemed: false,
        },
    );
    let issuer = server.issuer();
    let session_state = uuid::Uuid::new_v4().to_string();
    let mut params = vec![("code", code.as_str())];
    if let Some(state) = pending.state.as_deref() {
        params.push(("state", state));
    }
    params.push(("session_state", session_state.as_str()));
    params.push(("iss", issuer.as_str()));
    redirect_with(&pending.redirect_uri, &params)
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct TokenForm {
    grant_type: String,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    refresh_token: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

/// The client credentials from `Authorization: Basic` (URL-encoded id and secret, RFC 6749
/// §2.3.1) or the form.
fn client_credentials(headers: &HeaderMap, form: &TokenForm) -> (Option<String>, Option<String>) {
    if let Some(basic) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        && let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(basic.trim())
        && let Ok(text) = String::from_utf8(decoded)
        && let Some((id, secret)) = text.split_once(':')
    {
        let unescape = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        return (Some(unescape(id)), Some(unescape(secret)));
    }
    (form.client_id.clone(), form.client_secret.clone())
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

async fn token(
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
    if tenant != server.tenant {
        return bad(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            &tenant_not_found(&tenant),
        );
    }
    let (client_id, secret) = client_credentials(&headers, &form);
    let Some(client_id) = client_id.filter(|c| !c.is_empty()) else {
        return bad(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        );
    };
    let Some(client) = server.state.client(&client_id) else {
        return bad(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory '{}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
                server.tenant
            ),
        );
    };
    let Some(secret) = secret.filter(|s| !s.is_empty()) else {
        return bad(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        );
    };
    let switches = server.state.switches();
    if switches.client_secret_expired {
        return bad(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000222,
            &format!(
                "The provided client secret keys for app '{client_id}' are expired. Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added security: https://aka.ms/certCreds."
            ),
        );
    }
    if switches.client_secret_invalid
        || !crypto::constant_time_eq(&secret, client.secret.expose_secret())
    {
        return bad(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            &format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
            ),
        );
    }
    match form.grant_type.as_str() {
        "authorization_code" => redeem_code(&server, &client_id, &form),
        "refresh_token" => refresh(&server, &client_id, &form, &switches),
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
    if issued.expires_at <= OffsetDateTime::now_utc() {
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
                timestamp(OffsetDateTime::now_utc())
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
    issue_tokens(server, client_id, &grant.user, &grant.scopes, None)
}

fn issue_tokens(
    server: &OAuthServer,
    client_id: &str,
    user: &str,
    scopes: &[String],
    nonce: Option<&str>,
) -> Response {
    let now = OffsetDateTime::now_utc();
    let (access_token, record) =
        server
            .state
            .issue_access_token(user, client_id, scopes.to_vec(), now);
    let expires_in = (record.expires_at - now).whole_seconds().max(0);
    let resource_scopes: Vec<&str> = scopes
        .iter()
        .map(String::as_str)
        .filter(|s| !matches!(*s, "openid" | "profile" | "email" | "offline_access"))
        .collect();
    let mut body = json!({
        "token_type": "Bearer",
        "scope": resource_scopes.join(" "),
        "expires_in": expires_in,
        "ext_expires_in": expires_in,
        "access_token": access_token.expose_secret(),
    });
    if scopes.iter().any(|s| s == "offline_access") {
        let refresh_token = format!("1.{}", crypto::random_token());
        server.state.put_grant(
            &refresh_token,
            Grant {
                client_id: client_id.to_owned(),
                user: user.to_owned(),
                scopes: scopes.to_vec(),
                issued_at: now,
            },
        );
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

fn id_token(
    server: &OAuthServer,
    client_id: &str,
    user: &str,
    nonce: Option<&str>,
    now: OffsetDateTime,
) -> Result<String, jsonwebtoken::errors::Error> {
    let key = server.state.signing_key();
    let digest = Sha256::digest(format!("{user}\0{client_id}").as_bytes());
    let sub = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..]);
    let oid = uuid::Uuid::from_slice(&Sha256::digest(user.as_bytes())[..16]).unwrap_or_default();
    let iat = now.unix_timestamp();
    let mut claims = json!({
        "aud": client_id,
        "iss": server.issuer(),
        "iat": iat,
        "nbf": iat,
        "exp": iat + 3600,
        "sub": sub,
        "oid": oid.to_string(),
        "tid": TENANT_ID,
        "ver": "2.0",
        "preferred_username": user,
        "email": user,
        "name": user.split('@').next().unwrap_or(user),
    });
    if let Some(nonce) = nonce {
        claims["nonce"] = json!(nonce);
    }
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, &claims, &key.encoding)
}

async fn get_switches(State(server): State<OAuthServer>) -> Json<Switches> {
    Json(server.state.switches())
}

async fn put_switches(
    State(server): State<OAuthServer>,
    Json(switches): Json<Switches>,
) -> Json<Switches> {
    server.state.set_switches(switches);
    Json(server.state.switches())
}

async fn messages(State(server): State<OAuthServer>) -> Json<serde_json::Value> {
    let items: Vec<_> = server
        .state
        .messages()
        .into_iter()
        .map(|m| {
            json!({
                "id": m.id,
                "user": m.user,
                "mechanism": m.mechanism,
                "mail_from": m.mail_from,
                "rcpt_to": m.rcpt_to,
                "raw": String::from_utf8_lossy(&m.raw),
                "received_at": m.received_at.unix_timestamp(),
            })
        })
        .collect();
    Json(json!({ "items": items }))
}

async fn counters(State(server): State<OAuthServer>) -> Json<serde_json::Value> {
    Json(json!({
        "token_requests": server.state.token_requests(),
        "smtp_auth_attempts": server.state.smtp_auth_attempts(),
    }))
}
