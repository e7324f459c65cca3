//! What every cookie Herald sets has in common.

use axum_extra::extract::cookie::{Cookie, SameSite};

use crate::config::Config;

/// A cookie for the whole site, hidden from scripts, sent only over HTTPS when Herald is
/// served over HTTPS, and not on cross-site requests.
pub(super) fn base_cookie(config: &Config, name: &'static str, value: String) -> Cookie<'static> {
    Cookie::build((name, value))
        .path("/")
        .http_only(true)
        .secure(config.is_https())
        .same_site(SameSite::Lax)
        .build()
}
