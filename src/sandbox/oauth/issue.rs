//! Issuing tokens once a grant is proven (a code, a refresh token, a device code): the access
//! token, a rotating refresh token for `offline_access`, and an ID token for `openid`.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use secrecy::ExposeSecret;
use serde_json::json;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::super::Grant;
use super::OAuthServer;
use crate::crypto;

/// The tenant's directory id, shown in ID tokens as `tid`.
const TENANT_ID: &str = "5b6a6f2e-7361-4e64-8062-6f7800000001";

pub(super) fn issue_tokens(
    server: &OAuthServer,
    client_id: &str,
    user: &str,
    scopes: &[String],
    nonce: Option<&str>,
) -> Response {
    issue_tokens_for(server, client_id, user, (scopes, scopes), nonce)
}

/// Issues tokens for `scopes`; the refresh token stands for `granted` (the same, or more: a
/// refresh that asked for some of its scopes).
pub(super) fn issue_tokens_for(
    server: &OAuthServer,
    client_id: &str,
    user: &str,
    (scopes, granted): (&[String], &[String]),
    nonce: Option<&str>,
) -> Response {
    let now = server.state.now();
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
    if granted.iter().any(|s| s == "offline_access") {
        let refresh_token = format!("1.{}", crypto::random_token());
        server.state.put_grant(
            &refresh_token,
            Grant {
                client_id: client_id.to_owned(),
                user: user.to_owned(),
                scopes: granted.to_vec(),
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
