//! Signing in and out. A sign-in is counted against the account and the client's address
//! before its password is checked (here and in the database, for every instance), the password
//! is checked on the bounded hashing pool, and success starts a fresh session.

use std::net::IpAddr;

use askama::Template;
use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::CookieJar;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::extract::{SignedForm, VerifiedForm};
use super::{render, safe_next};
use crate::config::Config;
use crate::crypto;
use crate::domain::{EmailAddress, User, UserId};
use crate::services::sign_in;
use crate::web::AppState;
use crate::web::auth::{self, Attempt, ClientAddr, LoginThrottle, SharedAttempt, Throttled};
use crate::web::error::UiError;

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    csrf_token: String,
    next: String,
    email: String,
    error: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct NextQuery {
    #[serde(default)]
    next: String,
}

/// The sign-in form; a signed-in user goes straight on to `next`.
pub(super) async fn login_page(
    State(state): State<AppState>,
    jar: CookieJar,
    Query(q): Query<NextQuery>,
) -> Response {
    if let Ok(Some(_)) = auth::session_user(&state, &jar).await {
        return Redirect::to(&safe_next(&q.next)).into_response();
    }
    let (cookie, csrf_token) = auth::form_cookie(&state.access.config);
    let page = LoginPage {
        csrf_token,
        next: safe_next(&q.next),
        email: String::new(),
        error: None,
    };
    (jar.add(cookie), render(StatusCode::OK, &page)).into_response()
}

#[derive(Deserialize)]
pub(super) struct LoginForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    next: String,
}

/// The sign-in form shown again, with a fresh form token (every answer but success needs one).
struct Retry {
    jar: CookieJar,
    csrf_token: String,
    next: String,
    email: String,
}

impl Retry {
    fn new(config: &Config, jar: CookieJar, form: &LoginForm) -> Self {
        let (cookie, csrf_token) = auth::form_cookie(config);
        Self {
            jar: jar.add(cookie),
            csrf_token,
            next: safe_next(&form.next),
            email: form.email.clone(),
        }
    }

    /// The form with `error` above it.
    fn answer(self, status: StatusCode, error: String) -> Response {
        let page = LoginPage {
            csrf_token: self.csrf_token,
            next: self.next,
            email: self.email,
            error: Some(error),
        };
        (self.jar, render(status, &page)).into_response()
    }

    /// The form with `error` above it and a `Retry-After`.
    fn answer_later(self, status: StatusCode, error: String, retry_after: HeaderValue) -> Response {
        let mut response = self.answer(status, error);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, retry_after);
        response
    }
}

/// Signs a user in: checks the form, counts the attempt, checks the password, starts a session.
pub(super) async fn login(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
    jar: CookieJar,
    Form(form): Form<LoginForm>,
) -> Result<Response, UiError> {
    let form_ok = auth::form_token_ok(&state.access.config, &jar, &form.csrf_token)
        && auth::origin_ok(&state.access.config, &headers);
    let retry = Retry::new(&state.access.config, jar, &form);
    if !form_ok {
        let error = "This sign-in form has expired. Please try again.";
        return Ok(retry.answer(StatusCode::FORBIDDEN, error.into()));
    }
    let password = SecretString::from(form.password);
    let account = form.email.trim().to_lowercase();
    let now = state.access.now().unix_timestamp();
    let (attempt, shared) = match count_attempt(&state, &account, client, now).await? {
        Ok(counted) => counted,
        Err(limited) => return Ok(too_many_attempts(retry, client, &limited)),
    };
    let found = find_account(&state, &form.email).await?;
    let verified = match check_password(found.as_ref(), &password).await {
        Ok(verified) => verified,
        Err(crypto::HashPoolError::Busy) => {
            return Ok(hashing_busy(&state, retry, attempt, shared, client).await);
        }
        Err(e) => return Err(e.into()),
    };
    let user = match found {
        Some((user, _)) if verified && !password.expose_secret().is_empty() => user,
        _ => {
            // It stays recorded, here and in the database.
            state.login_throttle.failed(attempt);
            drop(shared);
            tracing::info!(%client, "sign-in failed");
            let error = "Wrong email or password.";
            return Ok(retry.answer(StatusCode::UNAUTHORIZED, error.into()));
        }
    };
    state.login_throttle.succeeded(attempt);
    if let Err(e) = LoginThrottle::shared_succeeded(&state.access.store, shared).await {
        tracing::warn!(error = %e, "could not forgive an account's failed sign-ins");
    }
    // A fresh session on every sign-in: a token planted before sign-in is worthless after it.
    auth::end_session(&state, &retry.jar).await?;
    let jar = start_session(&state, retry.jar, user.id, client).await?;
    tracing::info!(user = %user.id, %client, "signed in");
    Ok((jar, Redirect::to(&retry.next)).into_response())
}

/// Counts the attempt on this instance, then in the database where every instance counts; or
/// the limit that refuses it.
async fn count_attempt(
    state: &AppState,
    account: &str,
    client: IpAddr,
    now: i64,
) -> Result<Result<(Attempt, SharedAttempt), Throttled>, UiError> {
    let attempt = match state.login_throttle.attempt(account, client, now) {
        Ok(attempt) => attempt,
        Err(limited) => return Ok(Err(limited)),
    };
    match LoginThrottle::shared_attempt(&state.access.store, account, client, now).await? {
        Ok(shared) => Ok(Ok((attempt, shared))),
        Err(limited) => {
            state.login_throttle.failed(attempt);
            Ok(Err(limited))
        }
    }
}

/// The form again, saying which limit was reached and for how long.
fn too_many_attempts(retry: Retry, client: IpAddr, limited: &Throttled) -> Response {
    let minutes = limited.retry_after_secs.div_ceil(60);
    let whose = if limited.per_account {
        "for this account"
    } else {
        "from your network address"
    };
    tracing::warn!(%client, per_account = limited.per_account, "sign-in rate limit reached");
    let error = format!(
        "Too many failed sign-in attempts {whose}. Wait {minutes} minute(s), then try again."
    );
    match limited.retry_after_secs.to_string().parse() {
        Ok(retry_after) => retry.answer_later(StatusCode::TOO_MANY_REQUESTS, error, retry_after),
        Err(_) => retry.answer(StatusCode::TOO_MANY_REQUESTS, error),
    }
}

/// The user with this address and their password hash; none for an address that does not parse.
async fn find_account(state: &AppState, email: &str) -> Result<Option<(User, String)>, UiError> {
    let Ok(email) = EmailAddress::parse(email) else {
        return Ok(None);
    };
    Ok(sign_in::find_account(&state.access.store, &email).await?)
}

/// Whether the password is the account's. An unknown account is checked against a dummy hash,
/// so that it takes as long. Anyone may ask for a sign-in: when the hashing pool is full they
/// are told to come back, not queued without end.
async fn check_password(
    found: Option<&(User, String)>,
    password: &SecretString,
) -> Result<bool, crypto::HashPoolError> {
    let hash = found
        .map(|(_, h)| h.clone())
        .unwrap_or_else(|| crypto::dummy_password_hash().to_owned());
    let check = password.clone();
    crypto::hash_pool()
        .run(crypto::Wait::Briefly, move || {
            crypto::verify_password(&check, &hash)
        })
        .await
}

/// The form again, saying Herald is busy. Not a guess: the address keeps the attempt (a flood
/// gains no free tries), the account does not (its owner retrying is not locked out).
async fn hashing_busy(
    state: &AppState,
    retry: Retry,
    attempt: Attempt,
    shared: SharedAttempt,
    client: IpAddr,
) -> Response {
    state.login_throttle.busy(attempt);
    if let Err(e) = LoginThrottle::shared_busy(&state.access.store, shared).await {
        tracing::warn!(error = %e, "could not take back a sign-in attempt refused as busy");
    }
    tracing::warn!(%client, "sign-in refused: password hashing is busy");
    let error = "Herald is busy checking other sign-ins. Wait a few seconds, then try again.";
    retry.answer_later(
        StatusCode::SERVICE_UNAVAILABLE,
        error.into(),
        HeaderValue::from_static("2"),
    )
}

/// Starts a session for the user: the session cookie is set and the form cookie dropped.
pub(super) async fn start_session(
    state: &AppState,
    jar: CookieJar,
    user: UserId,
    client: IpAddr,
) -> Result<CookieJar, UiError> {
    let token = auth::start_session(state, user, client).await?;
    Ok(jar
        .add(auth::session_cookie(&state.access.config, token))
        .remove(auth::form_cookie_name(&state.access.config)))
}

#[derive(Deserialize)]
pub(super) struct LogoutForm {
    #[serde(default)]
    csrf_token: String,
}

impl VerifiedForm for LogoutForm {
    const REQUEST: &'static str = "sign-out request";

    fn csrf_token(&self) -> &str {
        &self.csrf_token
    }

    fn back(&self) -> (String, &'static str) {
        ("/".into(), "Back to Herald")
    }
}

/// Ends the session and returns to the sign-in form.
pub(super) async fn logout(
    State(state): State<AppState>,
    jar: CookieJar,
    _: SignedForm<LogoutForm>,
) -> Result<Response, UiError> {
    auth::end_session(&state, &jar).await?;
    Ok((
        jar.add(auth::expired_session_cookie(&state.access.config)),
        Redirect::to("/login"),
    )
        .into_response())
}
