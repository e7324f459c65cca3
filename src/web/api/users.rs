//! `/api/v1/users`: the people who sign in to the web UI.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::{ListParams, list_type};
use crate::domain::{User, UserId, UserRole};
use crate::services::views;
use crate::services::{self, NewUserInput, UserChange};
use crate::web::AppState;
use crate::web::auth::Principal;
use crate::web::error::{ApiError, Problem};
use crate::web::extract::{ApiJson, ApiQuery};

/// A user as the API shows it; the password hash never leaves the store.
#[derive(Serialize, ToSchema)]
pub struct UserOut {
    pub id: String,
    pub email: String,
    pub role: UserRole,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl From<User> for UserOut {
    fn from(u: User) -> Self {
        Self {
            id: u.id.to_string(),
            email: u.email,
            role: u.role,
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

list_type!(UserList, UserOut);

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"email": "new.user@example.com", "password": "a long enough password", "role": "member"}))]
pub struct CreateUser {
    pub email: String,
    /// 12 to 1024 characters.
    #[schema(value_type = String, format = Password)]
    pub password: SecretString,
    /// `admin` or `member`.
    pub role: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    pub role: Option<String>,
    /// A new password; signs the user out of every session.
    #[schema(value_type = Option<String>, format = Password)]
    pub password: Option<SecretString>,
}

fn parse_user_id(raw: &str) -> Result<UserId, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found("user"))
}

/// The organization's users.
#[utoipa::path(get, path = "/api/v1/users", tag = "users", params(ListParams),
    responses((status = 200, body = UserList), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn list_users(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<UserList>, ApiError> {
    principal.require_reader()?;
    let (limit, after) = (params.limit()?, params.after()?);
    let page = views::users(
        &state.access.store,
        principal.org_id,
        after.as_deref(),
        limit,
    )
    .await?;
    Ok(Json(UserList::from_page(page, UserOut::from)))
}

/// Adds a user to the caller's organization. Admins only.
#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = CreateUser,
    responses((status = 201, body = UserOut), (status = 409, body = Problem, description = "The email is taken"),
        (status = 422, body = Problem), (status = 403, body = Problem)))]
pub async fn create_user(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<CreateUser>,
) -> Result<(StatusCode, Json<UserOut>), ApiError> {
    principal.require_admin()?;
    let user = services::create_user(
        &state.access.store,
        principal.org_id,
        NewUserInput {
            email: body.email,
            password: body.password,
            role: body.role,
        },
        &principal.actor,
        state.access.now(),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(user.into())))
}

/// One user of the caller's organization.
#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users", params(("id" = String, Path)),
    responses((status = 200, body = UserOut), (status = 404, body = Problem)))]
pub async fn get_user(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<UserOut>, ApiError> {
    principal.require_reader()?;
    let id = parse_user_id(&id)?;
    let user = views::user(&state.access.store, principal.org_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    Ok(Json(user.into()))
}

/// Changes a user's role or password. Admins only; the last admin cannot be demoted.
#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "users", params(("id" = String, Path)), request_body = UpdateUser,
    responses((status = 200, body = UserOut), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn update_user(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateUser>,
) -> Result<Json<UserOut>, ApiError> {
    principal.require_admin()?;
    let id = parse_user_id(&id)?;
    let user = services::update_user(
        &state.access.store,
        principal.org_id,
        id,
        UserChange {
            role: body.role,
            password: body.password,
        },
        &principal.actor,
        state.access.now(),
    )
    .await?;
    Ok(Json(user.into()))
}

/// Removes a user and ends their sessions. Admins only; the last admin cannot be removed.
#[utoipa::path(delete, path = "/api/v1/users/{id}", tag = "users", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn delete_user(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    principal.require_admin()?;
    let id = parse_user_id(&id)?;
    services::delete_user(
        &state.access.store,
        principal.org_id,
        id,
        &principal.actor,
        state.access.now(),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
