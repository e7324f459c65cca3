//! Who is calling: API keys (`Authorization: Bearer hk_…`), web sessions ([`session`]), CSRF
//! protection for cookie-authenticated requests ([`csrf`]), the client's address, and the
//! sign-in rate limit ([`throttle`]).

mod cookie;
mod csrf;
mod session;
mod throttle;

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{Method, header};
use axum_extra::extract::CookieJar;

pub use csrf::{
    CSRF_HEADER, csrf_token_for, form_cookie, form_cookie_name, form_token_ok, origin_ok,
};
pub use session::{
    SESSION_TTL, SessionUser, end_session, expired_session_cookie, session_cookie,
    session_cookie_name, session_digest, session_user, start_session,
};
pub use throttle::{Attempt, LoginThrottle, SharedAttempt, Throttled};

use super::AppState;
use super::error::ApiError;
use crate::config::Config;
use crate::crypto;
use crate::domain::{Actor, ActorKind, ApiKeyToken, KeyRole, OrgId, UserRole};
use crate::services::sign_in::{self, KeyCaller};

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
        let now = state.access.now();

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
            let admit = |key: &crate::domain::ApiKey| {
                state
                    .api_rate
                    .take(key.id, std::time::Instant::now())
                    .map_err(|retry_after| ApiError {
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
                    })
            };
            let KeyCaller { key, mailboxes } =
                sign_in::api_key_caller(&state.access.store, &token, now, admit)
                    .await?
                    .ok_or_else(|| {
                        ApiError::unauthorized(
                            "invalid_api_key",
                            "The API key is unknown or has been revoked.",
                        )
                    })??;
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
            if !origin_ok(&state.access.config, &parts.headers)
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

#[cfg(test)]
mod tests {
    use super::*;

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
