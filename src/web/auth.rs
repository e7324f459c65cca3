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
    let mut conn = state.access.store.conn().await?;
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
    if let Some(cookie) = jar.get(session_cookie_name(&state.access.config)) {
        let mut conn = state.access.store.conn().await?;
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

/// The digest of the request's session cookie, if it carries one.
pub fn session_digest(state: &AppState, jar: &CookieJar) -> Option<String> {
    jar.get(session_cookie_name(&state.access.config))
        .map(|c| c.value())
        .filter(|v| !v.is_empty())
        .map(crypto::token_digest)
}

/// Resolves the session cookie to its user; `None` when absent, unknown or expired.
pub async fn session_user(
    state: &AppState,
    jar: &CookieJar,
) -> Result<Option<SessionUser>, StoreError> {
    let Some(cookie) = jar.get(session_cookie_name(&state.access.config)) else {
        return Ok(None);
    };
    let token = cookie.value().to_owned();
    if token.is_empty() {
        return Ok(None);
    }
    let mut conn = state.access.store.conn().await?;
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
        Ok(Self(client_addr(&state.access.config, peer, parts)))
    }
}

fn client_addr(config: &Config, peer: IpAddr, parts: &Parts) -> IpAddr {
    // A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d; treat them as the IPv4
    // addresses they are, for proxy matching and for rate-limit keys.
    let peer = peer.to_canonical();
    let trusted = |ip: &IpAddr| config.trusted_proxies.iter().any(|net| net.contains(ip));
    if !trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    // Walk from the nearest hop outwards: each trusted proxy vouches for the hop before it.
    // The first hop that is not a trusted proxy is the client. A hop that does not parse was
    // written by someone we cannot vouch for, so the last trusted hop is the client we know.
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.parse::<IpAddr>().map(|ip| ip.to_canonical()) else {
            return client;
        };
        client = ip;
        if !trusted(&ip) {
            return ip;
        }
    }
    client
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
    /// The digest of the browser session, when the caller is one (binds OAuth states to it).
    pub session_digest: Option<String>,
    /// The API key, when the caller is an application.
    pub api_key: Option<crate::domain::ApiKeyId>,
    /// The mailboxes the API key is limited to, when it is.
    pub mailboxes: Option<Vec<crate::domain::MailboxId>>,
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

    /// Whether the caller may use this mailbox (an API key may be limited to some).
    pub fn may_use(&self, mailbox: crate::domain::MailboxId) -> bool {
        self.mailboxes.as_ref().is_none_or(|m| m.contains(&mailbox))
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
            let mut conn = state.access.store.conn().await?;
            let key = store::api_keys::find_live_by_token(&mut conn, &token)
                .await?
                .ok_or_else(|| {
                    ApiError::unauthorized(
                        "invalid_api_key",
                        "The API key is unknown or has been revoked.",
                    )
                })?;
            if let Err(retry_after) = state.api_rate.take(key.id, std::time::Instant::now()) {
                return Err(ApiError {
                    retry_after: Some(retry_after),
                    ..ApiError::new(
                        axum::http::StatusCode::TOO_MANY_REQUESTS,
                        "rate_limited",
                        "Too many requests",
                        format!(
                            "This API key made more than {} requests in a minute (HERALD_API_RATE_PER_MINUTE); retry after {retry_after} s.",
                            state.access.config.api_rate_per_minute
                        ),
                    )
                });
            }
            // "Last used" to the minute, checked here first: an UPDATE that changes nothing
            // still waits for SQLite's write lock, behind every commit of accepted mail.
            if key
                .last_used_at
                .is_none_or(|t| now - t > time::Duration::minutes(1))
                && let Err(e) = store::api_keys::touch(&mut conn, key.id, now).await
            {
                tracing::warn!(error = %e, "could not record API key use");
            }
            let mailboxes = store::api_keys::mailbox_limits(&mut conn, key.id).await?;
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
                session_digest: None,
                api_key: Some(key.id),
                mailboxes,
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
            if !origin_ok(&state.access.config, parts)
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
        let session_digest = Some(crypto::token_digest(&session.token));
        let user = session.user;
        Ok(Self {
            api_key: None,
            mailboxes: None,
            session_digest,
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

/// An attempt counted against both limits until it proves to be a success.
#[derive(Debug)]
#[must_use = "a reservation must be released on success or kept as a failure"]
pub struct Attempt {
    account_key: String,
    address_key: String,
    at: i64,
}

/// Counts sign-in attempts per account and per client address over a sliding window.
///
/// An attempt is counted *before* the password is checked, under one lock, so a burst of
/// parallel guesses cannot all pass the check before any is recorded; a successful sign-in then
/// takes its attempt back. This instance's count is kept in memory; failures are also recorded
/// in the database, where every instance checks them (see [`LoginThrottle::shared_check`]).
#[derive(Default)]
pub struct LoginThrottle {
    inner: Mutex<ThrottleState>,
}

#[derive(Default)]
struct ThrottleState {
    attempts: HashMap<String, VecDeque<i64>>,
    last_prune: i64,
}

impl LoginThrottle {
    pub const WINDOW_SECS: i64 = 15 * 60;
    pub const PER_ACCOUNT: usize = 5;
    pub const PER_ADDRESS: usize = 20;
    const MAX_TRACKED: usize = 100_000;

    fn keys(account: &str, addr: IpAddr) -> (String, String) {
        let addr = match addr.to_canonical() {
            IpAddr::V4(v4) => v4.to_string(),
            // One IPv6 client usually holds a whole /64.
            IpAddr::V6(v6) => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        };
        (format!("account:{account}"), format!("address:{addr}"))
    }

    /// Counts an attempt, or refuses it when either limit is reached.
    pub fn attempt(&self, account: &str, addr: IpAddr, now: i64) -> Result<Attempt, Throttled> {
        let (account_key, address_key) = Self::keys(account, addr);
        let mut state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        state.prune(now);
        for (key, limit, per_account) in [
            (&account_key, Self::PER_ACCOUNT, true),
            (&address_key, Self::PER_ADDRESS, false),
        ] {
            if let Some(times) = state.attempts.get_mut(key) {
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
        for key in [&account_key, &address_key] {
            state
                .attempts
                .entry(key.clone())
                .or_default()
                .push_back(now);
        }
        Ok(Attempt {
            account_key,
            address_key,
            at: now,
        })
    }

    /// The attempt succeeded: it no longer counts, and the account's earlier failures are
    /// forgiven (the address's are not).
    pub fn succeeded(&self, attempt: Attempt) {
        let mut state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        state.attempts.remove(&attempt.account_key);
        if let Some(times) = state.attempts.get_mut(&attempt.address_key)
            && let Some(pos) = times.iter().rposition(|t| *t == attempt.at)
        {
            times.remove(pos);
        }
    }

    /// The attempt failed: it keeps counting.
    pub fn failed(&self, attempt: Attempt) {
        drop(attempt);
    }

    /// The password was not checked (Herald was busy): the attempt no longer counts against
    /// the account, so someone retrying during a flood is not locked out of it, but still
    /// counts against the address.
    pub fn busy(&self, attempt: Attempt) {
        let mut state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(times) = state.attempts.get_mut(&attempt.account_key)
            && let Some(pos) = times.iter().rposition(|t| *t == attempt.at)
        {
            times.remove(pos);
        }
    }

    /// [`LoginThrottle::busy`] for the attempt recorded in the database.
    pub async fn shared_busy(
        store: &crate::store::Store,
        attempt: SharedAttempt,
    ) -> crate::store::StoreResult<()> {
        let mut conn = store.conn().await?;
        crate::store::auth_failures::forget(&mut conn, &attempt.account_id).await
    }

    /// Records the attempt in the database before its password is checked, then counts what
    /// every instance recorded: parallel guesses spread over several instances meet the same
    /// limits. A refused attempt is taken back.
    pub async fn shared_attempt(
        store: &crate::store::Store,
        account: &str,
        addr: IpAddr,
        now: i64,
    ) -> crate::store::StoreResult<Result<SharedAttempt, Throttled>> {
        use crate::store::auth_failures;
        let (account_key, address_key) = Self::keys(account, addr);
        let (account_key, address_key) = (
            format!("signin:{account_key}"),
            format!("signin:{address_key}"),
        );
        let mut conn = store.conn().await?;
        let reserved = auth_failures::reserve(
            &mut conn,
            &[
                (&account_key, Self::PER_ACCOUNT as i64),
                (&address_key, Self::PER_ADDRESS as i64),
            ],
            now,
            now - Self::WINDOW_SECS,
        )
        .await?;
        let ids = match reserved {
            Ok(reservation) => reservation.ids,
            Err(exceeded) => {
                return Ok(Err(Throttled {
                    per_account: exceeded.key == 0,
                    retry_after_secs: (exceeded.oldest.unwrap_or(now) + Self::WINDOW_SECS - now)
                        .max(1) as u64,
                }));
            }
        };
        let attempt = SharedAttempt {
            account_key,
            // The keys' ids in their order: the account's, then the address's.
            account_id: ids.first().cloned().unwrap_or_default(),
            address_id: ids.get(1).cloned().unwrap_or_default(),
        };
        Ok(Ok(attempt))
    }

    /// The attempt succeeded: it no longer counts, and the account's recorded failures are
    /// forgiven (the address's are not). A failed attempt simply stays recorded.
    pub async fn shared_succeeded(
        store: &crate::store::Store,
        attempt: SharedAttempt,
    ) -> crate::store::StoreResult<()> {
        let mut conn = store.conn().await?;
        crate::store::auth_failures::forget_key(&mut conn, &attempt.account_key).await?;
        crate::store::auth_failures::forget(&mut conn, &attempt.address_id).await
    }
}

/// A sign-in attempt recorded in the database (see [`LoginThrottle::shared_attempt`]).
#[derive(Debug)]
pub struct SharedAttempt {
    account_key: String,
    account_id: String,
    address_id: String,
}

impl ThrottleState {
    /// Bounds memory: at most every ten seconds, forget windows that have passed; if the map is
    /// still too big, keep only the keys that are currently blocked.
    fn prune(&mut self, now: i64) {
        if self.attempts.len() < LoginThrottle::MAX_TRACKED || now - self.last_prune < 10 {
            return;
        }
        self.last_prune = now;
        let cutoff = now - LoginThrottle::WINDOW_SECS;
        self.attempts
            .retain(|_, times| times.back().is_some_and(|t| *t > cutoff));
        if self.attempts.len() >= LoginThrottle::MAX_TRACKED {
            self.attempts.retain(|key, times| {
                let limit = if key.starts_with("account:") {
                    LoginThrottle::PER_ACCOUNT
                } else {
                    LoginThrottle::PER_ADDRESS
                };
                times.len() >= limit
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail(
        throttle: &LoginThrottle,
        account: &str,
        addr: IpAddr,
        now: i64,
    ) -> Result<(), Throttled> {
        throttle
            .attempt(account, addr, now)
            .map(|a| throttle.failed(a))
    }

    #[test]
    fn account_limit_applies_after_five_failures_and_lifts_after_the_window() {
        let throttle = LoginThrottle::default();
        let addr = IpAddr::from([192, 0, 2, 1]);
        for i in 0..LoginThrottle::PER_ACCOUNT {
            assert!(fail(&throttle, "ann@example.com", addr, 1000 + i as i64).is_ok());
        }
        let limited = throttle.attempt("ann@example.com", addr, 1010).unwrap_err();
        assert!(limited.per_account);
        assert_eq!(
            limited.retry_after_secs,
            (1000 + LoginThrottle::WINDOW_SECS - 1010) as u64
        );
        // Another account from the same address is still allowed.
        assert!(throttle.attempt("bob@example.com", addr, 1010).is_ok());
        // After the window, the account may try again.
        assert!(
            throttle
                .attempt("ann@example.com", addr, 1005 + LoginThrottle::WINDOW_SECS)
                .is_ok()
        );
    }

    #[test]
    fn attempts_count_before_their_outcome_is_known() {
        // Parallel guesses: each is counted as it starts, so the sixth is refused even though
        // none of the first five has finished.
        let throttle = LoginThrottle::default();
        let addr = IpAddr::from([192, 0, 2, 9]);
        let in_flight: Vec<_> = (0..LoginThrottle::PER_ACCOUNT)
            .map(|_| throttle.attempt("ann@example.com", addr, 10).unwrap())
            .collect();
        assert!(throttle.attempt("ann@example.com", addr, 10).is_err());
        drop(in_flight);
    }

    #[test]
    fn address_limit_spans_accounts_and_ipv4_mapped_addresses_are_ipv4() {
        let throttle = LoginThrottle::default();
        let addr = IpAddr::from([192, 0, 2, 2]);
        for i in 0..LoginThrottle::PER_ADDRESS {
            fail(&throttle, &format!("user{i}@example.com"), addr, 50).unwrap();
        }
        let limited = throttle.attempt("fresh@example.com", addr, 60).unwrap_err();
        assert!(!limited.per_account);
        let mapped: IpAddr = "::ffff:192.0.2.2".parse().unwrap();
        assert!(throttle.attempt("fresh@example.com", mapped, 60).is_err());
        let other_v4: IpAddr = "::ffff:192.0.2.3".parse().unwrap();
        assert!(throttle.attempt("fresh@example.com", other_v4, 60).is_ok());
    }

    #[test]
    fn success_takes_its_attempt_back_and_clears_the_account() {
        let throttle = LoginThrottle::default();
        let addr = IpAddr::from([192, 0, 2, 4]);
        for _ in 0..LoginThrottle::PER_ACCOUNT - 1 {
            fail(&throttle, "ann@example.com", addr, 10).unwrap();
        }
        let ok = throttle.attempt("ann@example.com", addr, 11).unwrap();
        throttle.succeeded(ok);
        for _ in 0..LoginThrottle::PER_ACCOUNT - 1 {
            fail(&throttle, "ann@example.com", addr, 12).unwrap();
        }
        assert!(throttle.attempt("ann@example.com", addr, 12).is_ok());
        // Many people signing in from one office address do not lock it.
        let office = IpAddr::from([198, 51, 100, 1]);
        for i in 0..LoginThrottle::PER_ADDRESS * 2 {
            let attempt = throttle
                .attempt(&format!("u{i}@example.com"), office, 20)
                .unwrap();
            throttle.succeeded(attempt);
        }
    }

    #[test]
    fn csrf_tokens_differ_per_session() {
        assert_ne!(csrf_token_for("a"), csrf_token_for("b"));
        assert_eq!(csrf_token_for("a"), csrf_token_for("a"));
    }

    fn parts(forwarded: &[&str]) -> Parts {
        let mut builder = axum::http::Request::builder();
        for value in forwarded {
            builder = builder.header("x-forwarded-for", *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    fn config_with_proxies(proxies: &str) -> Config {
        let env = std::collections::BTreeMap::from([(
            "HERALD_TRUSTED_PROXIES".to_owned(),
            proxies.to_owned(),
        )]);
        Config::load(None, &env).unwrap()
    }

    #[test]
    fn the_client_is_the_nearest_hop_no_trusted_proxy_vouches_for() {
        let config = config_with_proxies("10.0.0.0/8");
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            client_addr(&config, peer, &parts(&["203.0.113.5"])),
            ip("203.0.113.5")
        );
        // A forged leftmost entry is ignored: the proxy appended the real client.
        assert_eq!(
            client_addr(&config, peer, &parts(&["1.2.3.4, 198.51.100.7"])),
            ip("198.51.100.7")
        );
        // Garbage injected by the client stops the walk at the last hop we can vouch for.
        assert_eq!(
            client_addr(&config, peer, &parts(&["1.2.3.4, x, 198.51.100.7"])),
            ip("198.51.100.7")
        );
        assert_eq!(client_addr(&config, peer, &parts(&["1.2.3.4, x"])), peer);
        assert_eq!(
            client_addr(&config, peer, &parts(&["1.2.3.4", "10.0.0.2"])),
            ip("1.2.3.4")
        );
        // An untrusted peer's header is not read at all.
        assert_eq!(
            client_addr(&config, ip("192.0.2.1"), &parts(&["1.2.3.4"])),
            ip("192.0.2.1")
        );
        // A dual-stack listener's IPv4-mapped peer matches IPv4 ranges.
        assert_eq!(
            client_addr(&config, ip("::ffff:10.0.0.1"), &parts(&["203.0.113.5"])),
            ip("203.0.113.5")
        );
    }
}
