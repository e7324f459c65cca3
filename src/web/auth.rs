//! Who is calling: API keys (`Authorization: Bearer hk_…`), web sessions (an HttpOnly cookie
//! holding a random token whose digest is stored), CSRF protection for cookie-authenticated
//! requests, the client's address, and the sign-in rate limit.
//!
//! CSRF: a form or script acting with the session cookie must also present a token derived
//! from the session token (`csrf_token` field or `X-CSRF-Token` header); a page of another site
//! can send the cookie but cannot read the token. Before sign-in, a separate random cookie plays
//! the same role for the sign-in and setup forms. An `Origin` header naming another site is
//! refused outright.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{Method, header};
use axum_extra::extract::CookieJar;
use axum_extra::extract::cookie::{Cookie, SameSite};
use base64::Engine as _;
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

use super::AppState;
use super::error::ApiError;
use crate::config::Config;
use crate::crypto;
use crate::domain::{Actor, ActorKind, ApiKeyToken, KeyRole, OrgId, User, UserId, UserRole};
use crate::store::{self, StoreError};

/// How long a web session lasts after sign-in.
pub const SESSION_TTL: Duration = Duration::hours(12);

/// The header scripts send the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The session cookie's name. Over https the `__Host-` prefix pins it to this host and path.
pub fn session_cookie_name(config: &Config) -> &'static str {
    if config.is_https() {
        "__Host-herald_session"
    } else {
        "herald_session"
    }
}

/// The pre-sign-in CSRF cookie's name.
pub fn form_cookie_name(config: &Config) -> &'static str {
    if config.is_https() {
        "__Host-herald_form"
    } else {
        "herald_form"
    }
}

fn base_cookie(config: &Config, name: &'static str, value: String) -> Cookie<'static> {
    Cookie::build((name, value))
        .path("/")
        .http_only(true)
        .secure(config.is_https())
        .same_site(SameSite::Lax)
        .build()
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
pub fn origin_ok(config: &Config, parts: &Parts) -> bool {
    match parts
        .headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
    {
        None => true,
        Some(origin) => origin == config.public_origin(),
    }
}

/// Starts a session for a user and returns the token for the cookie.
pub async fn start_session(
    state: &AppState,
    user_id: UserId,
    client: IpAddr,
) -> Result<String, StoreError> {
    let token = crypto::random_token();
    let now = OffsetDateTime::now_utc();
    let mut conn = state.store.conn().await?;
    store::sessions::insert(
        &mut conn,
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
pub async fn end_session(state: &AppState, jar: &CookieJar) -> Result<(), StoreError> {
    if let Some(cookie) = jar.get(session_cookie_name(&state.config)) {
        let mut conn = state.store.conn().await?;
        store::sessions::delete(&mut conn, &crypto::token_digest(cookie.value())).await?;
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

/// Resolves the session cookie to its user; `None` when absent, unknown or expired.
pub async fn session_user(
    state: &AppState,
    jar: &CookieJar,
) -> Result<Option<SessionUser>, StoreError> {
    let Some(cookie) = jar.get(session_cookie_name(&state.config)) else {
        return Ok(None);
    };
    let token = cookie.value().to_owned();
    if token.is_empty() {
        return Ok(None);
    }
    let mut conn = state.store.conn().await?;
    let Some(user_id) = store::sessions::find_user(
        &mut conn,
        &crypto::token_digest(&token),
        OffsetDateTime::now_utc(),
    )
    .await?
    else {
        return Ok(None);
    };
    Ok(store::users::get_any(&mut conn, user_id)
        .await?
        .map(|user| SessionUser { user, token }))
}

/// The client's address: the socket's peer, or the nearest untrusted hop of
/// `X-Forwarded-For` when the peer is a trusted proxy.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub IpAddr);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ci| ci.0.ip())
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        Ok(Self(client_addr(&state.config, peer, parts)))
    }
}

fn client_addr(config: &Config, peer: IpAddr, parts: &Parts) -> IpAddr {
    let trusted = |ip: &IpAddr| config.trusted_proxies.iter().any(|net| net.contains(ip));
    if !trusted(&peer) {
        return peer;
    }
    let hops: Vec<IpAddr> = parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map_while(|hop| hop.trim().parse().ok())
        .collect();
    hops.iter()
        .rev()
        .find(|ip| !trusted(ip))
        .or(hops.first())
        .copied()
        .unwrap_or(peer)
}

/// What the caller may do in its organization.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Admin,
    Member,
    Sender,
}

/// An authenticated API caller: a user with a session, or an application with a key.
#[derive(Clone, Debug)]
pub struct Principal {
    pub org_id: OrgId,
    pub access: Access,
    pub actor: Actor,
}

impl Principal {
    /// Changing settings: admins only.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self.access {
            Access::Admin => Ok(()),
            Access::Member => Err(ApiError::forbidden(
                "Only an admin of the organization can change this.",
            )),
            Access::Sender => Err(ApiError::forbidden(
                "A sender key can send mail but not change settings; use an admin key.",
            )),
        }
    }

    /// Reading settings: admins and members; sender keys see only what they send.
    pub fn require_reader(&self) -> Result<(), ApiError> {
        match self.access {
            Access::Admin | Access::Member => Ok(()),
            Access::Sender => Err(ApiError::forbidden(
                "A sender key cannot read this; use an admin key.",
            )),
        }
    }
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let ClientAddr(client) = ClientAddr::from_request_parts(parts, state)
            .await
            .unwrap_or(ClientAddr(IpAddr::from([0, 0, 0, 0])));
        let now = OffsetDateTime::now_utc();

        if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
            let value = value.to_str().unwrap_or_default();
            let Some(raw) = value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
            else {
                return Err(ApiError::unauthorized(
                    "invalid_authorization",
                    "Use `Authorization: Bearer <API key>`.",
                ));
            };
            let token = ApiKeyToken::parse(raw.trim()).map_err(|why| {
                ApiError::unauthorized(
                    "malformed_api_key",
                    format!("The API key is malformed: {why}."),
                )
            })?;
            let mut conn = state.store.conn().await?;
            let key = store::api_keys::find_live_by_token(&mut conn, &token)
                .await?
                .ok_or_else(|| {
                    ApiError::unauthorized(
                        "invalid_api_key",
                        "The API key is unknown or has been revoked.",
                    )
                })?;
            if let Err(e) = store::api_keys::touch(&mut conn, key.id, now).await {
                tracing::warn!(error = %e, "could not record API key use");
            }
            return Ok(Self {
                org_id: key.org_id,
                access: match key.role {
                    KeyRole::Admin => Access::Admin,
                    KeyRole::Sender => Access::Sender,
                },
                actor: Actor {
                    kind: ActorKind::ApiKey,
                    id: Some(key.id.to_string()),
                    label: format!("{} ({})", key.name, key.prefix),
                    source: client.to_string(),
                },
            });
        }

        let jar = CookieJar::from_headers(&parts.headers);
        let Some(session) = session_user(state, &jar).await? else {
            return Err(ApiError::unauthorized(
                "unauthenticated",
                "Sign in, or send an API key as `Authorization: Bearer <key>`.",
            ));
        };
        if !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
            let sent = parts
                .headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if !origin_ok(&state.config, parts)
                || !crypto::constant_time_eq(sent, &session.csrf_token())
            {
                return Err(ApiError::new(
                    axum::http::StatusCode::FORBIDDEN,
                    "csrf_failed",
                    "Request not verified",
                    "This request carries the session cookie but not its X-CSRF-Token; reload the page and try again.",
                ));
            }
        }
        let user = session.user;
        Ok(Self {
            org_id: user.org_id,
            access: match user.role {
                UserRole::Admin => Access::Admin,
                UserRole::Member => Access::Member,
            },
            actor: Actor {
                kind: ActorKind::User,
                id: Some(user.id.to_string()),
                label: user.email,
                source: client.to_string(),
            },
        })
    }
}

/// Which limit stopped a sign-in attempt, and for how long.
#[derive(Debug, PartialEq, Eq)]
pub struct Throttled {
    pub per_account: bool,
    pub retry_after_secs: u64,
}

/// Counts failed sign-ins per account and per client address over a sliding window.
///
/// Kept in memory: the limits protect against guessing, and a restart that forgets them costs
/// an attacker a restart per few guesses. Several instances each keep their own counts.
#[derive(Default)]
pub struct LoginThrottle {
    failures: Mutex<HashMap<String, VecDeque<i64>>>,
}

impl LoginThrottle {
    pub const WINDOW_SECS: i64 = 15 * 60;
    pub const PER_ACCOUNT: usize = 5;
    pub const PER_ADDRESS: usize = 20;
    const MAX_TRACKED: usize = 100_000;

    fn keys(account: &str, addr: IpAddr) -> (String, String) {
        let addr = match addr {
            IpAddr::V4(v4) => v4.to_string(),
            // One IPv6 client usually holds a whole /64.
            IpAddr::V6(v6) => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        };
        (format!("account:{account}"), format!("address:{addr}"))
    }

    /// Refuses the attempt when either limit is reached.
    pub fn check(&self, account: &str, addr: IpAddr, now: i64) -> Result<(), Throttled> {
        let (account_key, addr_key) = Self::keys(account, addr);
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        for (key, limit, per_account) in [
            (account_key, Self::PER_ACCOUNT, true),
            (addr_key, Self::PER_ADDRESS, false),
        ] {
            if let Some(times) = map.get_mut(&key) {
                while times.front().is_some_and(|t| *t <= now - Self::WINDOW_SECS) {
                    times.pop_front();
                }
                if times.len() >= limit {
                    let oldest = times.front().copied().unwrap_or(now);
                    return Err(Throttled {
                        per_account,
                        retry_after_secs: (oldest + Self::WINDOW_SECS - now).max(1) as u64,
                    });
                }
            }
        }
        Ok(())
    }

    pub fn record_failure(&self, account: &str, addr: IpAddr, now: i64) {
        let (account_key, addr_key) = Self::keys(account, addr);
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= Self::MAX_TRACKED {
            map.retain(|_, times| times.back().is_some_and(|t| *t > now - Self::WINDOW_SECS));
        }
        for key in [account_key, addr_key] {
            map.entry(key).or_default().push_back(now);
        }
    }

    /// A successful sign-in clears the account's count (not the address's).
    pub fn record_success(&self, account: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&format!("account:{account}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_limit_applies_after_five_failures_and_lifts_after_the_window() {
        let throttle = LoginThrottle::default();
        let addr = IpAddr::from([192, 0, 2, 1]);
        for i in 0..LoginThrottle::PER_ACCOUNT {
            assert!(
                throttle
                    .check("ann@example.com", addr, 1000 + i as i64)
                    .is_ok()
            );
            throttle.record_failure("ann@example.com", addr, 1000 + i as i64);
        }
        let limited = throttle.check("ann@example.com", addr, 1010).unwrap_err();
        assert!(limited.per_account);
        assert_eq!(
            limited.retry_after_secs,
            (1000 + LoginThrottle::WINDOW_SECS - 1010) as u64
        );
        // Another account from the same address is still allowed.
        assert!(throttle.check("bob@example.com", addr, 1010).is_ok());
        // After the window, the account may try again.
        assert!(
            throttle
                .check("ann@example.com", addr, 1005 + LoginThrottle::WINDOW_SECS)
                .is_ok()
        );
    }

    #[test]
    fn address_limit_spans_accounts() {
        let throttle = LoginThrottle::default();
        let addr = IpAddr::from([192, 0, 2, 2]);
        for i in 0..LoginThrottle::PER_ADDRESS {
            throttle.record_failure(&format!("user{i}@example.com"), addr, 50);
        }
        let limited = throttle.check("fresh@example.com", addr, 60).unwrap_err();
        assert!(!limited.per_account);
        assert!(
            throttle
                .check("fresh@example.com", IpAddr::from([192, 0, 2, 3]), 60)
                .is_ok()
        );
    }

    #[test]
    fn success_clears_the_account_count() {
        let throttle = LoginThrottle::default();
        let addr = IpAddr::from([192, 0, 2, 4]);
        for _ in 0..LoginThrottle::PER_ACCOUNT {
            throttle.record_failure("ann@example.com", addr, 10);
        }
        throttle.record_success("ann@example.com");
        assert!(throttle.check("ann@example.com", addr, 11).is_ok());
    }

    #[test]
    fn csrf_tokens_differ_per_session() {
        assert_ne!(csrf_token_for("a"), csrf_token_for("b"));
        assert_eq!(csrf_token_for("a"), csrf_token_for("a"));
    }
}
