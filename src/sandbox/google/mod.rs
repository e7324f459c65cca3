//! The sandbox's Google personality, served beside the Entra-shaped one under
//! `{base}/google`: OpenID discovery with issuer `{base}/google`, the authorize endpoint
//! `/google/o/oauth2/v2/auth`, the token endpoint `/google/token` and the keys
//! `/google/oauth2/v3/certs`.
//!
//! It behaves as Google does where Herald meets it: errors are `{"error",
//! "error_description"}` without codes; a refresh token is issued only with
//! `access_type=offline`, and then only at the first consent or with `prompt=consent`; refresh
//! tokens never rotate (a refresh answers no new one); an app in "Testing" status sees its
//! refresh tokens expire after 7 days. Google users (added with
//! [`SandboxState::add_google_user`]) meet Gmail's manners on the sandbox's SMTP server
//! ([`smtp`]). `authorize` holds the sign-in and consent pages (the Entra personality's,
//! reused), `token` the token endpoint, `service_accounts` service accounts with domain-wide
//! delegation (the JWT bearer grant, RFC 7523).

mod authorize;
mod service_accounts;
pub(super) mod smtp;
mod token;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use secrecy::SecretString;
use time::OffsetDateTime;

use super::{Grant, IssuedCode, SandboxClient, SandboxState};
use crate::crypto;

/// Gmail's scope: SMTP with XOAUTH2.
pub const GOOGLE_MAIL_SCOPE: &str = "https://mail.google.com/";

/// What an authorization request asked beyond the Entra-shaped pending request.
#[derive(Clone, Copy, Debug, Default)]
struct Request {
    /// `access_type=offline`: a refresh token is wanted.
    offline: bool,
    /// `prompt=consent`: consent is asked again, so a refresh token is issued again.
    prompt_consent: bool,
}

#[derive(Clone, Debug)]
struct Code {
    issued: IssuedCode,
    request: Request,
}

/// A service account and its key (the public half).
#[derive(Clone)]
struct ServiceAccount {
    client_id: String,
    /// The RSA public key (PKCS#1 DER).
    public_key: Vec<u8>,
}

/// The Google personality's state, beside the sandbox's.
#[derive(Default)]
pub(super) struct GoogleState {
    inner: Mutex<GoogleInner>,
}

#[derive(Default)]
struct GoogleInner {
    /// Google accounts, lower-cased (their passwords are the sandbox's).
    users: HashSet<String>,
    /// Pending requests' extras, by transaction.
    requests: HashMap<String, Request>,
    /// Codes by digest.
    codes: HashMap<String, Code>,
    /// Refresh tokens by digest; never rotated.
    grants: HashMap<String, Grant>,
    /// (user, client) pairs that consented once.
    consented: HashSet<(String, String)>,
    /// Service accounts by `client_email`.
    service_accounts: HashMap<String, ServiceAccount>,
    /// Domain-wide delegation: a service account's client id → the scopes granted.
    delegation: HashMap<String, Vec<String>>,
    /// Messages each user sent, for the daily limit.
    sent: HashMap<String, Vec<OffsetDateTime>>,
    refresh_tokens_issued: u64,
    refreshes: u64,
}

impl SandboxState {
    fn google(&self) -> std::sync::MutexGuard<'_, GoogleInner> {
        self.google.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a Google account: it signs in at the Google personality, and the SMTP server
    /// treats it as Gmail does.
    pub fn add_google_user(&self, address: &str, password: SecretString) {
        self.add_user(address, password);
        self.google().users.insert(address.to_lowercase());
    }

    /// Whether `address` is a Google account.
    pub fn is_google_user(&self, address: &str) -> bool {
        self.google().users.contains(&address.to_lowercase())
    }

    /// Creates an OAuth client ("Web application") as Google Cloud's Credentials page does:
    /// a `….apps.googleusercontent.com` client ID and a `GOCSPX-` secret.
    pub fn register_google_client(&self, name: &str, redirect_uris: Vec<String>) -> SandboxClient {
        let digits: String = crypto::random_bytes::<12>()
            .iter()
            .map(|b| char::from(b'0' + b % 10))
            .collect();
        let client = SandboxClient {
            name: name.to_owned(),
            client_id: format!(
                "{digits}-{}.apps.googleusercontent.com",
                &crypto::random_token()[..24].to_ascii_lowercase()
            ),
            secret_id: String::new(),
            secret: SecretString::from(format!("GOCSPX-{}", &crypto::random_token()[..28])),
            redirect_uris,
        };
        self.inner()
            .clients
            .insert(client.client_id.clone(), client.clone());
        client
    }

    /// Grants a service account (by its client id) domain-wide delegation for `scopes`, as
    /// the Admin console's Manage Domain Wide Delegation does. An empty list revokes it.
    pub fn grant_domain_wide_delegation(&self, client_id: &str, scopes: &[&str]) {
        self.google().delegation.insert(
            client_id.to_owned(),
            scopes.iter().map(|s| (*s).to_owned()).collect(),
        );
    }

    /// Refresh tokens the Google personality issued.
    pub fn google_refresh_tokens_issued(&self) -> u64 {
        self.google().refresh_tokens_issued
    }

    /// Refreshes the Google personality answered with an access token.
    pub fn google_refreshes(&self) -> u64 {
        self.google().refreshes
    }
}

/// The Google personality's configuration.
#[derive(Clone)]
pub struct GoogleServer {
    pub state: Arc<SandboxState>,
    /// The sandbox's public base URL, without a trailing slash.
    pub base_url: String,
}

impl GoogleServer {
    pub fn issuer(&self) -> String {
        format!("{}/google", self.base_url)
    }

    pub fn authorization_endpoint(&self) -> String {
        format!("{}/google/o/oauth2/v2/auth", self.base_url)
    }

    pub fn token_endpoint(&self) -> String {
        format!("{}/google/token", self.base_url)
    }
}

impl super::RunningSandbox {
    /// The Google personality of this sandbox.
    pub fn google(&self) -> GoogleServer {
        GoogleServer {
            state: self.state.clone(),
            base_url: self.oauth.base_url.clone(),
        }
    }
}

/// The JWT bearer grant, for the token endpoint (which `service_accounts` builds on).
fn service_account_grant(server: &GoogleServer, assertion: &str) -> Response {
    service_accounts::grant(server, assertion)
}

/// The Google personality's routes.
pub fn router(state: Arc<SandboxState>, base_url: &str) -> Router {
    let server = GoogleServer {
        state,
        base_url: base_url.trim_end_matches('/').to_owned(),
    };
    Router::new()
        .route("/google/.well-known/openid-configuration", get(discovery))
        .route("/google/oauth2/v3/certs", get(keys))
        .route("/google/o/oauth2/v2/auth", get(authorize::authorize))
        .route("/google/login", post(authorize::sign_in))
        .route("/google/consent", post(authorize::consent))
        .route("/google/token", post(token::token))
        .with_state(server)
}

async fn discovery(State(server): State<GoogleServer>) -> Response {
    axum::Json(serde_json::json!({
        "issuer": server.issuer(),
        "authorization_endpoint": server.authorization_endpoint(),
        "token_endpoint": server.token_endpoint(),
        "jwks_uri": format!("{}/google/oauth2/v3/certs", server.base_url),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "email", "profile"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "claims_supported": ["aud", "email", "email_verified", "exp", "iat", "iss", "sub", "hd", "azp", "nonce"],
        "code_challenge_methods_supported": ["plain", "S256"],
        "grant_types_supported": ["authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:jwt-bearer"],
        "authorization_response_iss_parameter_supported": true,
    }))
    .into_response()
}

async fn keys(State(server): State<GoogleServer>) -> Response {
    axum::Json(serde_json::json!({"keys": [server.state.signing_key().jwk()]})).into_response()
}

/// Google's own error page ("Access blocked", `Error 400: redirect_uri_mismatch`), shown to
/// the person and never sent to the client.
fn error_page(status: axum::http::StatusCode, error: &str, description: &str) -> Response {
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    (
        status,
        Html(format!(
            "<!doctype html><title>Error {0}: {1}</title><h1>Access blocked: authorization error</h1><p>{2}</p><p>Error {0}: {1}</p>",
            status.as_u16(),
            escape(error),
            escape(description)
        )),
    )
        .into_response()
}
