//! The sandbox's authorization server, shaped like Microsoft Entra ID v2.0:
//! `{base}/{tenant}/oauth2/v2.0/authorize` and `/token`, OpenID discovery and keys, a sign-in
//! form, a consent page with **Accept**, and errors worded and shaped as Entra's.
//!
//! As at Microsoft, a bad `client_id` or `redirect_uri` ends on the provider's own error page
//! and is never sent back to the client; other authorization errors are redirected with
//! `error=`. Token errors carry `error`, `error_description` (`AADSTSnnnn: …`), `error_codes`,
//! `timestamp`, `trace_id` and `correlation_id`. The authorization response carries `iss`
//! (RFC 9207). Refresh tokens rotate on every use and the old one stays valid.
//!
//! `authorize` holds the authorize endpoint with its sign-in and consent pages (`pages` what
//! they share with device codes), `token` the token endpoint (client authentication, codes,
//! refresh), `issue` the tokens it issues, `app` its client credentials grant,
//! `assertion` certificate credentials (`private_key_jwt`), `discovery` the OpenID metadata and keys, `control` the `/_sandbox`
//! control API, `device` the device authorization grant (RFC 8628) with its `/devicelogin`
//! page, and `errors` the shapes Entra's errors take.

mod app;
mod assertion;
mod authorize;
mod control;
mod device;
mod discovery;
mod errors;
mod issue;
mod pages;
mod token;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::Html;
use axum::routing::{get, post, put};
use base64::Engine as _;
use rsa::traits::PublicKeyParts as _;
use sha2::{Digest, Sha256};

pub use assertion::AppCertificate;
pub(crate) use authorize::{ConsentForm, SignInForm, consent_form, sign_in_form};
pub(crate) use errors::redirect_with;
pub(crate) use token::basic_credentials;

use super::SandboxState;

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

impl SigningKey {
    /// The public key as a JSON Web Key.
    pub(crate) fn jwk(&self) -> serde_json::Value {
        serde_json::json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid, "n": self.n, "e": self.e})
    }

    /// Signs `claims` with RS256, naming the key by `kid`.
    pub(crate) fn sign(
        &self,
        claims: &serde_json::Value,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
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
            get(discovery::discovery),
        )
        .route("/{tenant}/discovery/v2.0/keys", get(discovery::keys))
        .route("/{tenant}/oauth2/v2.0/authorize", get(authorize::authorize))
        .route("/{tenant}/login", post(authorize::sign_in))
        .route("/{tenant}/consent", post(authorize::consent))
        .route("/{tenant}/oauth2/v2.0/token", post(token::token))
        .route(
            "/{tenant}/oauth2/v2.0/devicecode",
            post(device::device_code),
        )
        .route(
            "/devicelogin",
            get(device::device_login).post(device::enter_code),
        )
        .route(
            "/_sandbox/switches",
            get(control::get_switches).put(control::put_switches),
        )
        .route("/_sandbox/messages", get(control::messages))
        .route("/_sandbox/counters", get(control::counters))
        .route("/_sandbox/apps/{client_id}", get(control::get_app))
        .route(
            "/_sandbox/apps/{client_id}/permissions",
            put(control::put_permissions),
        )
        .route(
            "/_sandbox/apps/{client_id}/disabled",
            put(control::put_disabled),
        )
        .route(
            "/_sandbox/apps/{client_id}/mailboxes",
            put(control::put_mailboxes),
        )
        .route(
            "/_sandbox/apps/{client_id}/limited_to",
            put(control::put_limited_to),
        )
        .route(
            "/_sandbox/apps/{client_id}/certificates",
            post(control::upload_certificate),
        )
        .route(
            "/_sandbox/apps/{client_id}/secrets",
            post(control::add_secret),
        )
        .route(
            "/_sandbox/apps/{client_id}/secrets/{which}/expire",
            post(control::expire_secret),
        )
        .route(
            "/_sandbox/apps/{client_id}/certificates/{thumbprint}",
            axum::routing::delete(control::remove_certificate),
        )
        .with_state(server)
}

async fn index(State(server): State<OAuthServer>) -> Html<String> {
    Html(format!(
        "<!doctype html><title>Herald sandbox</title><h1>Herald sandbox</h1><p>A local stand-in for Microsoft Entra ID and Exchange Online.</p><p>Discovery: <a href=\"{0}/.well-known/openid-configuration\">{0}/.well-known/openid-configuration</a></p>",
        server.issuer()
    ))
}
