//! The server-rendered web UI: sign-in, sign-out, first-run setup, the landing page and the
//! settings pages (Outgoing Mail with its sending settings, message log and relay credentials,
//! API keys, users, the audit log), each under the banner of the organization's open alerts.

mod alerts;
mod messages;
mod relay;
mod sending;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use axum_extra::extract::CookieJar;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use time::OffsetDateTime;

use super::AppState;
use super::auth::{self, ClientAddr};
use super::error::UiError;
use crate::crypto;
use crate::domain::EmailAddress;
use crate::services::{self, ServiceError, SetupInput};
use crate::store;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/setup", get(setup_page).post(setup))
        .route("/static/app.css", get(stylesheet))
        .route("/static/outgoing-mail.js", get(outgoing_mail_script))
        .route("/static/settings.js", get(settings_script))
        .route("/static/herald.js", get(shared_script))
        .route("/static/relay.js", get(relay_script))
        .route("/settings/api-keys", get(api_keys_page))
        .route("/settings/users", get(users_page))
        .route("/settings/audit", get(audit_page))
        .route("/settings/sandbox/inbox", get(sandbox_inbox_page))
        .route("/web/um/smtp/redirect", get(oauth_redirect))
        .route("/settings/system/outgoing-mail", get(outgoing_mail))
        .route(
            "/settings/system/outgoing-mail/messages",
            get(messages::message_log),
        )
        .route(
            "/settings/system/outgoing-mail/messages/{id}",
            get(messages::message_detail),
        )
        .route(relay::RELAY_PATH, get(relay::relay_credentials))
        .route(alerts::DISMISS_PATH, post(alerts::dismiss_alert))
        .route(messages::CANCEL_PATH, post(messages::cancel_message))
}

fn render(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "template rendering failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "Internal error").into_response()
        }
    }
}

/// A page of a few words and a link onward.
pub(super) fn notice(
    status: StatusCode,
    title: &str,
    message: &str,
    link_href: &str,
    link_text: &str,
) -> Response {
    render(
        status,
        &NoticePage {
            title: title.into(),
            message: message.into(),
            link_href: link_href.into(),
            link_text: link_text.into(),
        },
    )
}

/// Only same-site paths may follow sign-in, so the form cannot bounce a user elsewhere.
fn safe_next(next: &str) -> String {
    if next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && !next.chars().any(char::is_control)
    {
        next.to_owned()
    } else {
        "/".to_owned()
    }
}

/// Any path no route claims.
pub async fn not_found() -> Response {
    not_found_page()
}

/// The page of an address with nothing behind it.
pub(super) fn not_found_page() -> Response {
    notice(
        StatusCode::NOT_FOUND,
        "Page not found",
        "There is no page at this address.",
        "/",
        "Go to Herald",
    )
}

async fn shared_script() -> impl IntoResponse {
    script(include_str!("../../../static/herald.js"))
}

fn script(body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

async fn settings_script() -> impl IntoResponse {
    script(include_str!("../../../static/settings.js"))
}

async fn outgoing_mail_script() -> impl IntoResponse {
    script(include_str!("../../../static/outgoing-mail.js"))
}

async fn relay_script() -> impl IntoResponse {
    script(include_str!("../../../static/relay.js"))
}

async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../../static/app.css"),
    )
}

#[derive(Template)]
#[template(path = "notice.html")]
struct NoticePage {
    title: String,
    message: String,
    link_href: String,
    link_text: String,
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    /// For the alerts banner of the base layout.
    frame: Frame,
    org_name: String,
    email: String,
    role: &'static str,
    csrf_token: String,
    user_count: usize,
    key_count: usize,
}

async fn home(State(state): State<AppState>, jar: CookieJar) -> Result<Response, UiError> {
    let Some(session) = auth::session_user(&state, &jar).await? else {
        return Err(UiError::SignIn { next: None });
    };
    let f = frame_of(&state, &session, "/").await?;
    let mut conn = state.store.conn().await?;
    let user_count = store::users::list(&mut conn, f.org_id, None, 200)
        .await?
        .items
        .len();
    let key_count = store::api_keys::list(&mut conn, f.org_id, None, 200)
        .await?
        .items
        .iter()
        .filter(|k| k.revoked_at.is_none())
        .count();
    Ok(render(
        StatusCode::OK,
        &HomePage {
            org_name: f.org_name.clone(),
            email: f.email.clone(),
            role: session.user.role.as_str(),
            csrf_token: f.csrf_token.clone(),
            user_count,
            key_count,
            frame: f,
        },
    ))
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    csrf_token: String,
    next: String,
    email: String,
    error: Option<String>,
}

#[derive(Deserialize)]
struct NextQuery {
    #[serde(default)]
    next: String,
}

async fn login_page(
    State(state): State<AppState>,
    jar: CookieJar,
    Query(q): Query<NextQuery>,
) -> Response {
    if let Ok(Some(_)) = auth::session_user(&state, &jar).await {
        return Redirect::to(&safe_next(&q.next)).into_response();
    }
    let (cookie, csrf_token) = auth::form_cookie(&state.config);
    let page = LoginPage {
        csrf_token,
        next: safe_next(&q.next),
        email: String::new(),
        error: None,
    };
    (jar.add(cookie), render(StatusCode::OK, &page)).into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    next: String,
}

async fn login(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
    jar: CookieJar,
    Form(form): Form<LoginForm>,
) -> Result<Response, UiError> {
    let password = SecretString::from(form.password);
    let next = safe_next(&form.next);
    // Every answer below re-renders the form, so it needs a fresh form token.
    let (cookie, csrf_token) = auth::form_cookie(&state.config);
    let form_ok =
        auth::form_token_ok(&state.config, &jar, &form.csrf_token) && origin_ok(&state, &headers);
    let jar = jar.add(cookie);
    let retry = |status: StatusCode, error: String| {
        render(
            status,
            &LoginPage {
                csrf_token: csrf_token.clone(),
                next: next.clone(),
                email: form.email.clone(),
                error: Some(error),
            },
        )
    };
    if !form_ok {
        return Ok((
            jar,
            retry(
                StatusCode::FORBIDDEN,
                "This sign-in form has expired. Please try again.".into(),
            ),
        )
            .into_response());
    }

    let account = form.email.trim().to_lowercase();
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let attempt = match state.login_throttle.attempt(&account, client, now) {
        Ok(attempt) => {
            match auth::LoginThrottle::shared_attempt(&state.store, &account, client, now).await? {
                Ok(shared) => Ok((attempt, shared)),
                Err(limited) => {
                    state.login_throttle.failed(attempt);
                    Err(limited)
                }
            }
        }
        Err(limited) => Err(limited),
    };
    let (attempt, shared) = match attempt {
        Ok(attempt) => attempt,
        Err(limited) => {
            let minutes = limited.retry_after_secs.div_ceil(60);
            let whose = if limited.per_account {
                "for this account"
            } else {
                "from your network address"
            };
            tracing::warn!(%client, per_account = limited.per_account, "sign-in rate limit reached");
            let mut response = retry(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "Too many failed sign-in attempts {whose}. Wait {minutes} minute(s), then try again."
                ),
            );
            if let Ok(value) = limited.retry_after_secs.to_string().parse() {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            return Ok((jar, response).into_response());
        }
    };

    let found = match EmailAddress::parse(&form.email) {
        Ok(email) => {
            let mut conn = state.store.conn().await?;
            store::users::find_for_login(&mut conn, &email).await?
        }
        Err(_) => None,
    };
    let hash = found
        .as_ref()
        .map(|(_, h)| h.clone())
        .unwrap_or_else(|| crypto::dummy_password_hash().to_owned());
    let check = password.clone();
    // Anyone may ask for a sign-in: when the hashing pool is full they are told to come back,
    // not queued without end.
    let verified = match crypto::hash_pool()
        .run(crypto::Wait::Briefly, move || {
            crypto::verify_password(&check, &hash)
        })
        .await
    {
        Ok(verified) => verified,
        Err(crypto::HashPoolError::Busy) => {
            // Not a guess: the address keeps the attempt (a flood gains no free tries), the
            // account does not (its owner retrying is not locked out).
            state.login_throttle.busy(attempt);
            if let Err(e) = auth::LoginThrottle::shared_busy(&state.store, shared).await {
                tracing::warn!(error = %e, "could not take back a sign-in attempt refused as busy");
            }
            tracing::warn!(%client, "sign-in refused: password hashing is busy");
            let mut response = retry(
                StatusCode::SERVICE_UNAVAILABLE,
                "Herald is busy checking other sign-ins. Wait a few seconds, then try again."
                    .into(),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("2"));
            return Ok((jar, response).into_response());
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
            return Ok((
                jar,
                retry(StatusCode::UNAUTHORIZED, "Wrong email or password.".into()),
            )
                .into_response());
        }
    };
    state.login_throttle.succeeded(attempt);
    if let Err(e) = auth::LoginThrottle::shared_succeeded(&state.store, shared).await {
        tracing::warn!(error = %e, "could not forgive an account's failed sign-ins");
    }
    // A fresh session on every sign-in: a token planted before sign-in is worthless after it.
    auth::end_session(&state, &jar).await?;
    let token = auth::start_session(&state, user.id, client).await?;
    tracing::info!(user = %user.id, %client, "signed in");
    let jar = jar
        .add(auth::session_cookie(&state.config, token))
        .remove(auth::form_cookie_name(&state.config));
    Ok((jar, Redirect::to(&next)).into_response())
}

fn origin_ok(state: &AppState, headers: &HeaderMap) -> bool {
    match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(origin) => origin == state.config.public_origin(),
    }
}

#[derive(Deserialize)]
struct LogoutForm {
    #[serde(default)]
    csrf_token: String,
}

async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    Form(form): Form<LogoutForm>,
) -> Result<Response, UiError> {
    let Some(session) = auth::session_user(&state, &jar).await? else {
        return Err(UiError::SignIn { next: None });
    };
    if !origin_ok(&state, &headers)
        || !crypto::constant_time_eq(&form.csrf_token, &session.csrf_token())
    {
        return Ok(render(
            StatusCode::FORBIDDEN,
            &NoticePage {
                title: "Request not verified".into(),
                message: "This sign-out request did not come from Herald's own page. Go back, reload, and try again.".into(),
                link_href: "/".into(),
                link_text: "Back to Herald".into(),
            },
        ));
    }
    auth::end_session(&state, &jar).await?;
    Ok((
        jar.add(auth::expired_session_cookie(&state.config)),
        Redirect::to("/login"),
    )
        .into_response())
}

#[derive(Template)]
#[template(path = "setup.html")]
struct SetupPage {
    csrf_token: String,
    token: String,
    org_name: String,
    email: String,
    errors: Vec<String>,
}

#[derive(Deserialize)]
struct SetupQuery {
    #[serde(default)]
    token: String,
}

fn setup_gone() -> Response {
    render(
        StatusCode::GONE,
        &NoticePage {
            title: "Setup link not valid".into(),
            message: "This setup link has expired or was already used. If Herald has no user yet, restart `herald serve` to get a new link; otherwise sign in.".into(),
            link_href: "/login".into(),
            link_text: "Sign in".into(),
        },
    )
}

async fn setup_page(
    State(state): State<AppState>,
    jar: CookieJar,
    Query(q): Query<SetupQuery>,
) -> Result<Response, UiError> {
    if !services::setup_token_is_valid(&state.store, &q.token).await? {
        return Ok(setup_gone());
    }
    let (cookie, csrf_token) = auth::form_cookie(&state.config);
    let page = SetupPage {
        csrf_token,
        token: q.token,
        org_name: String::new(),
        email: String::new(),
        errors: Vec::new(),
    };
    Ok((jar.add(cookie), render(StatusCode::OK, &page)).into_response())
}

#[derive(Deserialize)]
struct SetupForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    token: String,
    #[serde(default)]
    org_name: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    password_confirm: String,
}

async fn setup(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
    jar: CookieJar,
    Form(form): Form<SetupForm>,
) -> Result<Response, UiError> {
    let form_ok =
        auth::form_token_ok(&state.config, &jar, &form.csrf_token) && origin_ok(&state, &headers);
    let (cookie, csrf_token) = auth::form_cookie(&state.config);
    let jar = jar.add(cookie);
    let again = |status: StatusCode, errors: Vec<String>| {
        render(
            status,
            &SetupPage {
                csrf_token: csrf_token.clone(),
                token: form.token.clone(),
                org_name: form.org_name.clone(),
                email: form.email.clone(),
                errors,
            },
        )
    };
    if !form_ok {
        return Ok((
            jar,
            again(
                StatusCode::FORBIDDEN,
                vec!["This form has expired. Please submit it again.".into()],
            ),
        )
            .into_response());
    }
    if form.password != form.password_confirm {
        return Ok((
            jar,
            again(
                StatusCode::UNPROCESSABLE_ENTITY,
                vec!["The two passwords differ.".into()],
            ),
        )
            .into_response());
    }
    let input = SetupInput {
        org_name: form.org_name.clone(),
        email: form.email.clone(),
        password: SecretString::from(form.password.clone()),
    };
    let user = match services::complete_setup(&state.store, &form.token, input, &client.to_string())
        .await
    {
        Ok(user) => user,
        Err(ServiceError::Conflict(error)) => {
            let label = if error.field == "org_name" {
                "Organization name"
            } else {
                "Email"
            };
            return Ok((
                jar,
                again(
                    StatusCode::CONFLICT,
                    vec![format!("{label}: {}.", error.message)],
                ),
            )
                .into_response());
        }
        Err(ServiceError::Invalid(errors)) => {
            let errors = errors
                .into_iter()
                .map(|e| {
                    let label = match e.field.as_str() {
                        "org_name" => "Organization name",
                        "email" => "Email",
                        "password" => "Password",
                        other => other,
                    }
                    .to_owned();
                    format!("{label} {}", e.message)
                })
                .collect();
            return Ok((jar, again(StatusCode::UNPROCESSABLE_ENTITY, errors)).into_response());
        }
        Err(ServiceError::Refused(_)) => return Ok(setup_gone()),
        Err(e) => return Err(e.into()),
    };
    let token = auth::start_session(&state, user.id, client).await?;
    tracing::info!(user = %user.id, "first-run setup complete");
    let jar = jar
        .add(auth::session_cookie(&state.config, token))
        .remove(auth::form_cookie_name(&state.config));
    Ok((jar, Redirect::to("/")).into_response())
}

/// The provider's redirect after sign-in (the seed's exact path). The outcome is kept on the
/// server; the browser is sent on to the mailbox list with only the attempt's id, so neither
/// the code nor error text lands in a URL, a history or a Referer.
async fn oauth_redirect(
    State(state): State<AppState>,
    jar: CookieJar,
    params: Result<
        Query<crate::services::authorization::RedirectParams>,
        axum::extract::rejection::QueryRejection,
    >,
) -> Response {
    // A malformed query (repeated parameters) is answered like an unknown state, never with 400.
    let params = params.map(|Query(p)| p).unwrap_or_default();
    let session = auth::session_digest(&state, &jar);
    let attempt =
        match crate::services::authorization::complete(&state.deps(), params, session).await {
            Ok(attempt) => attempt,
            Err(e) => {
                tracing::error!(error = %e, "authorization redirect failed");
                None
            }
        };
    let target = format!(
        "/settings/system/outgoing-mail?attempt={}",
        attempt.as_deref().unwrap_or("invalid")
    );
    (
        [
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Redirect::to(&target),
    )
        .into_response()
}

struct Notice {
    kind: &'static str,
    title: String,
    message: Option<String>,
    action: Option<String>,
}

struct MailboxRow {
    id: String,
    /// The fields the Edit window fills, as JSON (no secrets).
    json: String,
    secret_warning: Option<String>,
    name: String,
    username: String,
    auth: &'static str,
    provider: &'static str,
    is_default: bool,
    verified: bool,
    reason: Option<String>,
    action: Option<String>,
    verified_at: String,
    token_expires_at: String,
    secret_expiry: String,
}

#[derive(Template)]
#[template(path = "outgoing_mail.html")]
struct OutgoingMailPage {
    frame: Frame,
    redirect_uri: String,
    sandbox_base: String,
    sandbox_tenant: String,
    sandbox_host: String,
    sandbox_port: u16,
    notice: Option<Notice>,
    mailboxes: Vec<MailboxRow>,
    sending: sending::SendingSettings,
    log: sending::LogSummary,
}

#[derive(Deserialize)]
struct OutgoingMailQuery {
    attempt: Option<String>,
}

fn when(t: Option<time::OffsetDateTime>) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]");
    t.and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| "—".into())
}

/// Settings › System › Outgoing Mail: the mailbox list with each status and its reason.
async fn outgoing_mail(
    State(state): State<AppState>,
    jar: CookieJar,
    Query(q): Query<OutgoingMailQuery>,
) -> Result<Response, UiError> {
    use crate::store::attempts::AttemptStatus;
    let f = frame(&state, &jar, "/settings/system/outgoing-mail").await?;
    let org_id = f.org_id;
    let notice = match q.attempt.as_deref() {
        None => None,
        Some("invalid") => Some(Notice {
            kind: "bad",
            title: "This authorization response was not accepted.".into(),
            message: Some("It was missing its state, had been used already, or came from another browser session, so nothing was stored.".into()),
            action: Some("Click Authorize again from this page.".into()),
        }),
        Some(id) => match crate::services::authorization::attempt(&state.deps(), org_id, id).await? {
            Some(attempt) => Some(match attempt.status {
                AttemptStatus::Completed => Notice {
                    kind: "ok",
                    title: "Authorized: the mailbox is Verified.".into(),
                    message: None,
                    action: None,
                },
                AttemptStatus::Pending => Notice {
                    kind: "bad",
                    title: "The authorization is still waiting for the sign-in.".into(),
                    message: None,
                    action: None,
                },
                AttemptStatus::Failed | AttemptStatus::Expired => Notice {
                    kind: "bad",
                    title: "The authorization did not succeed.".into(),
                    message: attempt.reason.as_ref().map(|r| r.message.clone()),
                    action: attempt.reason.and_then(|r| r.action),
                },
            }),
            None => None,
        },
    };
    let (mailboxes, org, counts) = {
        let mut conn = state.store.conn().await?;
        let mailboxes = store::mailboxes::list(&mut conn, org_id, None, 200).await?;
        let org = store::orgs::get(&mut conn, org_id).await?;
        let counts = store::messages::counts(&mut conn, org_id).await?;
        (mailboxes, org, counts)
    };
    let sending = sending::SendingSettings::of(org.as_ref(), &state.config.outbox);
    let today = time::OffsetDateTime::now_utc().date();
    let rows = mailboxes
        .items
        .into_iter()
        .map(|m| MailboxRow {
            id: m.id.to_string(),
            json: serde_json::json!({
                "id": m.id.to_string(), "name": m.name, "status": m.status.as_str(), "auth": m.auth.as_str(), "provider": m.provider.as_str(),
                "tenant": m.tenant, "host": m.host, "port": m.port, "security": m.security.as_str(),
                "username": m.username, "sign_in_account": m.sign_in_account, "reply_to": m.reply_to,
                "signature": m.signature, "authorization_url": m.authorization_url, "token_url": m.token_url,
                "client_id": m.client_id, "client_secret_expires_at": m.client_secret_expires_at.map(|d| d.to_string()),
            })
            .to_string(),
            secret_warning: m.client_secret_expires_at.and_then(|d| {
                let days = (d - today).whole_days();
                if days < 0 {
                    Some("Expired: create a new client secret in Azure and paste its Value here.".to_owned())
                } else if days <= 30 {
                    Some(format!("Expires in {days} day(s): create a new client secret in Azure before then."))
                } else {
                    None
                }
            }),
            verified: m.status == crate::domain::mailbox::MailboxStatus::Verified,
            reason: m.status_reason.as_ref().map(|r| r.message.clone()),
            action: m.status_reason.and_then(|r| r.action),
            name: m.name,
            username: m.username,
            auth: m.auth.as_str(),
            provider: m.provider.as_str(),
            is_default: m.is_default,
            verified_at: when(m.verified_at),
            token_expires_at: when(m.token_expires_at),
            secret_expiry: m
                .client_secret_expires_at
                .map(|d| d.to_string())
                .unwrap_or_else(|| "—".into()),
        })
        .collect();
    Ok(render(
        StatusCode::OK,
        &OutgoingMailPage {
            frame: f,
            redirect_uri: state.config.redirect_uri(),
            sandbox_base: state
                .sandbox
                .as_ref()
                .map(|s| s.base_url.clone())
                .unwrap_or_default(),
            sandbox_tenant: state
                .sandbox
                .as_ref()
                .map(|s| s.tenant.clone())
                .unwrap_or_default(),
            sandbox_host: state
                .sandbox
                .as_ref()
                .map(|s| s.smtp_host.clone())
                .unwrap_or_default(),
            sandbox_port: state
                .sandbox
                .as_ref()
                .map(|s| s.smtp_port)
                .unwrap_or_default(),
            notice,
            mailboxes: rows,
            sending,
            log: sending::LogSummary::of(&counts),
        },
    ))
}

/// What every settings page shows around its content.
struct Frame {
    org_name: String,
    email: String,
    csrf_token: String,
    admin: bool,
    sandbox_on: bool,
    org_id: crate::domain::OrgId,
    /// The organization's open alerts, shown as a banner above the content.
    alerts: Vec<alerts::AlertView>,
    /// The page's own path: where a form on it (Dismiss) returns to.
    path: String,
}

/// The signed-in user's frame; without a session, the way to sign in and come back.
async fn frame(state: &AppState, jar: &CookieJar, path: &str) -> Result<Frame, UiError> {
    let Some(session) = auth::session_user(state, jar).await? else {
        return Err(UiError::SignIn {
            next: Some(path.to_owned()),
        });
    };
    frame_of(state, &session, path).await
}

/// The frame of a page at `path` for a signed-in user.
async fn frame_of(
    state: &AppState,
    session: &auth::SessionUser,
    path: &str,
) -> Result<Frame, UiError> {
    let org_id = session.user.org_id;
    let mut conn = state.store.conn().await?;
    let org = store::orgs::get(&mut conn, org_id).await?;
    let alerts = alerts::banner(&mut conn, org_id).await;
    Ok(Frame {
        org_name: org.map(|o| o.name).unwrap_or_default(),
        email: session.user.email.clone(),
        csrf_token: session.csrf_token(),
        admin: session.user.role == crate::domain::UserRole::Admin,
        sandbox_on: state.sandbox.is_some() && state.sandbox_state.is_some(),
        org_id,
        alerts,
        path: path.to_owned(),
    })
}

struct KeyRow {
    id: String,
    name: String,
    prefix: String,
    role: &'static str,
    created_at: String,
    last_used_at: String,
    revoked: bool,
}

#[derive(Template)]
#[template(path = "api_keys.html")]
struct ApiKeysPage {
    frame: Frame,
    keys: Vec<KeyRow>,
}

async fn api_keys_page(State(state): State<AppState>, jar: CookieJar) -> Result<Response, UiError> {
    let f = frame(&state, &jar, "/settings/api-keys").await?;
    let keys = {
        let mut conn = state.store.conn().await?;
        store::api_keys::list(&mut conn, f.org_id, None, 200)
            .await?
            .items
    };
    Ok(render(
        StatusCode::OK,
        &ApiKeysPage {
            keys: keys
                .into_iter()
                .map(|k| KeyRow {
                    id: k.id.to_string(),
                    name: k.name,
                    prefix: k.prefix,
                    role: k.role.as_str(),
                    created_at: when(Some(k.created_at)),
                    last_used_at: when(k.last_used_at),
                    revoked: k.revoked_at.is_some(),
                })
                .collect(),
            frame: f,
        },
    ))
}

struct UserRow {
    id: String,
    email: String,
    role: &'static str,
    created_at: String,
}

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    frame: Frame,
    users: Vec<UserRow>,
}

async fn users_page(State(state): State<AppState>, jar: CookieJar) -> Result<Response, UiError> {
    let f = frame(&state, &jar, "/settings/users").await?;
    let users = {
        let mut conn = state.store.conn().await?;
        store::users::list(&mut conn, f.org_id, None, 200)
            .await?
            .items
    };
    Ok(render(
        StatusCode::OK,
        &UsersPage {
            users: users
                .into_iter()
                .map(|u| UserRow {
                    id: u.id.to_string(),
                    email: u.email,
                    role: u.role.as_str(),
                    created_at: when(Some(u.created_at)),
                })
                .collect(),
            frame: f,
        },
    ))
}

struct AuditRow {
    at: String,
    actor: String,
    action: String,
    target: String,
    source: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    frame: Frame,
    events: Vec<AuditRow>,
}

async fn audit_page(State(state): State<AppState>, jar: CookieJar) -> Result<Response, UiError> {
    let f = frame(&state, &jar, "/settings/audit").await?;
    if !f.admin {
        return Ok(render(
            StatusCode::FORBIDDEN,
            &NoticePage {
                title: "Admins only".into(),
                message: "The audit log is for the organization's admins.".into(),
                link_href: "/".into(),
                link_text: "Back".into(),
            },
        ));
    }
    let events = {
        let mut conn = state.store.conn().await?;
        store::audit::list(&mut conn, f.org_id, None, 200)
            .await?
            .items
    };
    Ok(render(
        StatusCode::OK,
        &AuditPage {
            events: events
                .into_iter()
                .map(|e| {
                    let name = e
                        .detail
                        .get("name")
                        .or_else(|| e.detail.get("email"))
                        .and_then(|v| v.as_str())
                        .map(|n| format!(" {n}"))
                        .unwrap_or_default();
                    AuditRow {
                        at: when(Some(e.at)),
                        actor: e.actor_label,
                        action: e.action,
                        target: format!("{}{name}", e.target_kind),
                        source: e.source,
                    }
                })
                .collect(),
            frame: f,
        },
    ))
}

struct InboxRow {
    received_at: String,
    user: String,
    mechanism: &'static str,
    to: String,
    subject: String,
    raw: String,
}

#[derive(Template)]
#[template(path = "sandbox_inbox.html")]
struct SandboxInboxPage {
    frame: Frame,
    messages: Vec<InboxRow>,
}

/// The sandbox's received mail, while the sandbox runs (`herald demo`).
async fn sandbox_inbox_page(
    State(state): State<AppState>,
    jar: CookieJar,
) -> Result<Response, UiError> {
    let f = frame(&state, &jar, "/settings/sandbox/inbox").await?;
    let Some(sandbox) = &state.sandbox_state else {
        return Err(UiError::NotFound);
    };
    let mut messages: Vec<InboxRow> = sandbox
        .messages()
        .into_iter()
        .map(|m| {
            let raw = String::from_utf8_lossy(&m.raw).into_owned();
            let subject = raw
                .split("\r\n\r\n")
                .next()
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix("Subject: "))
                .unwrap_or_default()
                .to_owned();
            InboxRow {
                received_at: when(Some(m.received_at)),
                user: m.user,
                mechanism: m.mechanism,
                to: m.rcpt_to.join(", "),
                subject,
                raw,
            }
        })
        .collect();
    messages.reverse();
    Ok(render(
        StatusCode::OK,
        &SandboxInboxPage { messages, frame: f },
    ))
}
