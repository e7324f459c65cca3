//! Web sessions: an HttpOnly cookie holding a random token, of which only the digest is stored,
//! so a copy of the database signs nobody in.

use std::net::IpAddr;

use axum_extra::extract::CookieJar;
use axum_extra::extract::cookie::Cookie;
use time::Duration;

use super::cookie::base_cookie;
use super::csrf::csrf_token_for;
use crate::config::Config;
use crate::crypto;
use crate::domain::{User, UserId};
use crate::services::{ServiceResult, sign_in};
use crate::web::AppState;

/// How long a web session lasts after sign-in.
pub const SESSION_TTL: Duration = Duration::hours(12);

/// The session cookie's name. Over https the `__Host-` prefix pins it to this host and path.
pub fn session_cookie_name(config: &Config) -> &'static str {
    if config.is_https() {
        "__Host-herald_session"
    } else {
        "herald_session"
    }
}

/// The cookie that carries a new session.
pub fn session_cookie(config: &Config, token: String) -> Cookie<'static> {
    let mut cookie = base_cookie(config, session_cookie_name(config), token);
    cookie.set_max_age(Some(SESSION_TTL));
    cookie
}

/// A cookie that tells the browser to forget the session.
pub fn expired_session_cookie(config: &Config) -> Cookie<'static> {
    let mut cookie = base_cookie(config, session_cookie_name(config), String::new());
    cookie.make_removal();
    cookie
}

/// Starts a session for a user and returns the token for the cookie.
pub async fn start_session(
    state: &AppState,
    user_id: UserId,
    client: IpAddr,
) -> ServiceResult<String> {
    let token = crypto::random_token();
    let now = state.access.now();
    sign_in::start_session(
        &state.access.store,
        &crypto::token_digest(&token),
        user_id,
        now,
        now + SESSION_TTL,
        &client.to_string(),
    )
    .await?;
    Ok(token)
}

/// Ends the session named by the cookie, if any.
pub async fn end_session(state: &AppState, jar: &CookieJar) -> ServiceResult<()> {
    if let Some(cookie) = jar.get(session_cookie_name(&state.access.config)) {
        sign_in::end_session(&state.access.store, &crypto::token_digest(cookie.value())).await?;
    }
    Ok(())
}

/// The signed-in user of a request and their session token.
pub struct SessionUser {
    pub user: User,
    pub token: String,
}

impl SessionUser {
    pub fn csrf_token(&self) -> String {
        csrf_token_for(&self.token)
    }
}

/// The digest of the request's session cookie, if it carries one.
pub fn session_digest(state: &AppState, jar: &CookieJar) -> Option<String> {
    jar.get(session_cookie_name(&state.access.config))
        .map(|c| c.value())
        .filter(|v| !v.is_empty())
        .map(crypto::token_digest)
}

/// Resolves the session cookie to its user; `None` when absent, unknown or expired.
pub async fn session_user(state: &AppState, jar: &CookieJar) -> ServiceResult<Option<SessionUser>> {
    let Some(cookie) = jar.get(session_cookie_name(&state.access.config)) else {
        return Ok(None);
    };
    let token = cookie.value().to_owned();
    if token.is_empty() {
        return Ok(None);
    }
    let digest = crypto::token_digest(&token);
    let user = sign_in::session_user(&state.access.store, &digest, state.access.now()).await?;
    Ok(user.map(|user| SessionUser { user, token }))
}
