//! CSRF protection for requests that act with the session cookie. A form or script must also
//! present a token derived from the session token (`csrf_token` field or `X-CSRF-Token` header);
//! a page of another site can send the cookie but cannot read the token. Before sign-in, a
//! separate random cookie plays the same role for the sign-in and setup forms. An `Origin`
//! header naming another site is refused outright.

use axum::http::{HeaderMap, header};
use axum_extra::extract::CookieJar;
use axum_extra::extract::cookie::Cookie;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use time::Duration;

use super::cookie::base_cookie;
use crate::config::Config;
use crate::crypto;

/// The header scripts send the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The pre-sign-in CSRF cookie's name.
pub fn form_cookie_name(config: &Config) -> &'static str {
    if config.is_https() {
        "__Host-herald_form"
    } else {
        "herald_form"
    }
}

/// A fresh pre-sign-in CSRF cookie and the value forms must echo.
pub fn form_cookie(config: &Config) -> (Cookie<'static>, String) {
    let value = crypto::random_token();
    let mut cookie = base_cookie(config, form_cookie_name(config), value.clone());
    cookie.set_max_age(Some(Duration::hours(2)));
    (cookie, value)
}

/// Whether a submitted pre-sign-in form token matches its cookie.
pub fn form_token_ok(config: &Config, jar: &CookieJar, submitted: &str) -> bool {
    jar.get(form_cookie_name(config))
        .is_some_and(|c| !submitted.is_empty() && crypto::constant_time_eq(c.value(), submitted))
}

/// The CSRF token of a session: derived from the session token, so it needs no storage and
/// changes with every sign-in.
pub fn csrf_token_for(session_token: &str) -> String {
    let digest = Sha256::new()
        .chain_update(b"herald csrf v1\0")
        .chain_update(session_token.as_bytes())
        .finalize();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
}

/// Whether the request's `Origin`, when present, is Herald's own public origin.
pub fn origin_ok(config: &Config, headers: &HeaderMap) -> bool {
    match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(origin) => origin == config.public_origin(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_tokens_differ_per_session() {
        assert_ne!(csrf_token_for("a"), csrf_token_for("b"));
        assert_eq!(csrf_token_for("a"), csrf_token_for("a"));
    }
}
