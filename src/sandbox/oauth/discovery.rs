//! OpenID discovery and the JSON Web Key Set that publishes the ID-token signing key.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::OAuthServer;
use super::errors::{tenant_not_found, token_error};

pub(super) async fn discovery(
    State(server): State<OAuthServer>,
    Path(tenant): Path<String>,
) -> Response {
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
        "device_authorization_endpoint": format!("{}/{}/oauth2/v2.0/devicecode", server.base_url, server.tenant),
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

pub(super) async fn keys(State(server): State<OAuthServer>) -> Response {
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
