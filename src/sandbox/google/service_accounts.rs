//! Service accounts with domain-wide delegation, as Google Workspace has them: a service
//! account's JSON key (Keys › Add key › Create new key) holds its private key, and the account
//! asks for a user's token with a JWT bearer grant (RFC 7523) signed by it: `iss` the
//! `client_email`, `sub` the user, `scope`, `aud` the token endpoint, at most an hour of life.
//! Google grants it only for the scopes an admin delegated to the account's client ID.

use axum::http::StatusCode;
use axum::response::Response;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::token::{google_error, issue};
use super::{GoogleServer, ServiceAccount};
use crate::crypto;

const UNAUTHORIZED_CLIENT: &str = "Client is unauthorized to retrieve access tokens using this method, or client not authorized for any of the scopes requested.";

impl GoogleServer {
    /// Creates a service account named `name` in the sandbox's project and answers its JSON
    /// key, as Google Cloud downloads it.
    pub fn create_service_account(&self, name: &str) -> String {
        use rsa::pkcs1::EncodeRsaPublicKey as _;
        use rsa::pkcs8::{EncodePrivateKey as _, LineEnding};
        let key = rsa::PrivateKey::new(&mut rand::rng(), 2048).expect("RSA-2048 key generation");
        let private_pem = key
            .to_pkcs8_pem(LineEnding::LF)
            .expect("PKCS#8 encoding of a fresh key");
        let public_key = key
            .to_public_key()
            .to_pkcs1_der()
            .expect("PKCS#1 encoding of a fresh key")
            .as_bytes()
            .to_vec();
        let client_id: String = crypto::random_bytes::<21>()
            .iter()
            .map(|b| char::from(b'0' + b % 10))
            .collect();
        let client_email = format!("{name}@herald-sandbox.iam.gserviceaccount.com");
        let private_key_id: String = crypto::random_bytes::<20>()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.state.google().service_accounts.insert(
            client_email.clone(),
            ServiceAccount {
                client_id: client_id.clone(),
                public_key,
            },
        );
        serde_json::json!({
            "type": "service_account",
            "project_id": "herald-sandbox",
            "private_key_id": private_key_id,
            "private_key": private_pem.as_str(),
            "client_email": client_email,
            "client_id": client_id,
            "auth_uri": format!("{}/google/o/oauth2/auth", self.base_url),
            "token_uri": self.token_endpoint(),
            "auth_provider_x509_cert_url": format!("{}/google/oauth2/v1/certs", self.base_url),
            "universe_domain": "googleapis.com",
        })
        .to_string()
    }
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    iss: String,
    #[serde(default)]
    sub: String,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    iat: i64,
    #[serde(default)]
    exp: i64,
}

/// The JWT bearer grant: a user's token for a service account with domain-wide delegation.
pub(super) fn grant(server: &GoogleServer, assertion: &str) -> Response {
    let bad =
        |error: &str, description: &str| google_error(StatusCode::BAD_REQUEST, error, description);
    let Ok(header) = jsonwebtoken::decode_header(assertion) else {
        return bad("invalid_grant", "Invalid JWT: Malformed.");
    };
    if header.alg != Algorithm::RS256 {
        return bad("invalid_grant", "Invalid JWT Signature.");
    }
    // Read `iss` first to find the key; nothing else is believed before the signature checks.
    let Some(issuer) = unverified_issuer(assertion) else {
        return bad("invalid_grant", "Invalid JWT: Malformed.");
    };
    let account = server.state.google().service_accounts.get(&issuer).cloned();
    let Some(account) = account else {
        return bad("invalid_grant", "Invalid grant: account not found");
    };
    let key = DecodingKey::from_rsa_der(&account.public_key);
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[server.token_endpoint()]);
    validation.validate_exp = false;
    validation.set_required_spec_claims(&["aud"]);
    let claims = match jsonwebtoken::decode::<Claims>(assertion, &key, &validation) {
        Ok(data) => data.claims,
        Err(e) if *e.kind() == jsonwebtoken::errors::ErrorKind::InvalidAudience => {
            return bad(
                "invalid_grant",
                "Invalid JWT: Failed audience check. The expected value is the token endpoint.",
            );
        }
        Err(_) => return bad("invalid_grant", "Invalid JWT Signature."),
    };
    let now = server.state.now().unix_timestamp();
    if claims.exp <= claims.iat
        || claims.exp - claims.iat > 3600
        || claims.iat > now + 300
        || claims.exp < now - 300
    {
        return bad(
            "invalid_grant",
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.",
        );
    }
    let scopes: Vec<String> = claims.scope.split_whitespace().map(str::to_owned).collect();
    if scopes.is_empty() {
        return bad("invalid_scope", "Empty or missing scope not allowed.");
    }
    if claims.sub.is_empty() || !server.state.is_google_user(&claims.sub) {
        return bad("invalid_grant", "Invalid email or User ID");
    }
    let delegated = server
        .state
        .google()
        .delegation
        .get(&account.client_id)
        .cloned()
        .unwrap_or_default();
    if !scopes.iter().all(|s| delegated.contains(s)) {
        return google_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized_client",
            UNAUTHORIZED_CLIENT,
        );
    }
    issue(
        server,
        &account.client_id,
        &claims.sub.to_lowercase(),
        &scopes,
        None,
        None,
    )
}

/// The `iss` of a JWT, read without checking anything.
fn unverified_issuer(jwt: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Claims = serde_json::from_slice(&bytes).ok()?;
    Some(claims.iss)
}
