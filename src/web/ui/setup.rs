//! First-run setup: with the one-time link `herald serve` prints while no user exists, the
//! organization and its first admin are created, and the admin is signed in.

use askama::Template;
use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::CookieJar;
use secrecy::SecretString;
use serde::Deserialize;

use super::login::start_session;
use super::{notice, render};
use crate::services::{self, ServiceError, SetupInput};
use crate::web::AppState;
use crate::web::auth::{self, ClientAddr};
use crate::web::error::UiError;

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
pub(super) struct SetupQuery {
    #[serde(default)]
    token: String,
}

fn setup_gone() -> Response {
    notice(
        StatusCode::GONE,
        "Setup link not valid",
        "This setup link has expired or was already used. If Herald has no user yet, restart `herald serve` to get a new link; otherwise sign in.",
        "/login",
        "Sign in",
    )
}

/// The first-run form, for a setup link that still works.
pub(super) async fn setup_page(
    State(state): State<AppState>,
    jar: CookieJar,
    Query(q): Query<SetupQuery>,
) -> Result<Response, UiError> {
    if !services::setup_token_is_valid(&state.access.store, &q.token, state.access.now()).await? {
        return Ok(setup_gone());
    }
    let (cookie, csrf_token) = auth::form_cookie(&state.access.config);
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
pub(super) struct SetupForm {
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

/// Creates the organization and its first admin, and signs the admin in.
pub(super) async fn setup(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
    jar: CookieJar,
    Form(form): Form<SetupForm>,
) -> Result<Response, UiError> {
    let form_ok = auth::form_token_ok(&state.access.config, &jar, &form.csrf_token)
        && auth::origin_ok(&state.access.config, &headers);
    let (cookie, csrf_token) = auth::form_cookie(&state.access.config);
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
    let user = match services::complete_setup(
        &state.access.store,
        &form.token,
        input,
        &client.to_string(),
        state.access.now(),
    )
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
    let jar = start_session(&state, jar, user.id, client).await?;
    tracing::info!(user = %user.id, "first-run setup complete");
    Ok((jar, Redirect::to("/")).into_response())
}
