//! `/api/v1/api-keys`: keys applications authenticate with. A key is shown once, when created.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::{ListParams, list_type};
use crate::domain::{ApiKey, ApiKeyId, KeyRole};
use crate::services;
use crate::services::views;
use crate::web::AppState;
use crate::web::auth::Principal;
use crate::web::error::{ApiError, Problem};
use crate::web::extract::{ApiJson, ApiQuery};

/// An API key as listed: its prefix tells keys apart; the key itself is never shown again.
#[derive(Serialize, ToSchema)]
pub struct ApiKeyOut {
    pub id: String,
    pub name: String,
    pub role: KeyRole,
    /// The key's first characters, e.g. `hk_AbCdEfGh`.
    pub prefix: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

impl From<ApiKey> for ApiKeyOut {
    fn from(k: ApiKey) -> Self {
        Self {
            id: k.id.to_string(),
            name: k.name,
            role: k.role,
            prefix: k.prefix,
            created_at: k.created_at,
            last_used_at: k.last_used_at,
            revoked_at: k.revoked_at,
        }
    }
}

/// A key just created, with the key itself: store it now, it cannot be shown again.
#[derive(Serialize, ToSchema)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    pub api_key: ApiKeyOut,
    /// The secret key, shown this once.
    pub key: String,
}

list_type!(ApiKeyList, ApiKeyOut);

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Billing app", "role": "sender"}))]
pub struct CreateApiKey {
    pub name: String,
    /// `admin` or `sender`.
    pub role: String,
    /// Limit the key to these mailboxes (ids or names); omitted, it may use all of them.
    #[serde(default)]
    pub mailboxes: Vec<String>,
}

fn parse_key_id(raw: &str) -> Result<ApiKeyId, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found("API key"))
}

/// The organization's API keys, revoked ones included.
#[utoipa::path(get, path = "/api/v1/api-keys", tag = "api-keys", params(ListParams),
    responses((status = 200, body = ApiKeyList), (status = 403, body = Problem)))]
pub async fn list_api_keys(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<ApiKeyList>, ApiError> {
    principal.require_reader()?;
    let (limit, after) = (params.limit()?, params.after()?);
    let page = views::api_keys(
        &state.access.store,
        principal.org_id,
        after.as_deref(),
        limit,
    )
    .await?;
    Ok(Json(ApiKeyList::from_page(page, ApiKeyOut::from)))
}

/// Creates an API key and shows it once. Admins only.
#[utoipa::path(post, path = "/api/v1/api-keys", tag = "api-keys", request_body = CreateApiKey,
    responses((status = 201, body = CreatedApiKey), (status = 403, body = Problem), (status = 422, body = Problem)))]
pub async fn create_api_key(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<CreateApiKey>,
) -> Result<(StatusCode, Json<CreatedApiKey>), ApiError> {
    principal.require_admin()?;
    let (key, token) = services::create_api_key(
        &state.access.store,
        principal.org_id,
        &body.name,
        &body.role,
        &body.mailboxes,
        &principal.actor,
        state.access.now(),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedApiKey {
            api_key: key.into(),
            key: token.expose().to_owned(),
        }),
    ))
}

/// One API key of the organization.
#[utoipa::path(get, path = "/api/v1/api-keys/{id}", tag = "api-keys", params(("id" = String, Path)),
    responses((status = 200, body = ApiKeyOut), (status = 404, body = Problem)))]
pub async fn get_api_key(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<ApiKeyOut>, ApiError> {
    principal.require_reader()?;
    let id = parse_key_id(&id)?;
    let key = views::api_key(&state.access.store, principal.org_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("API key"))?;
    Ok(Json(key.into()))
}

/// Revokes an API key at once. Admins only. The record stays, marked revoked.
#[utoipa::path(delete, path = "/api/v1/api-keys/{id}", tag = "api-keys", params(("id" = String, Path)),
    responses((status = 200, body = ApiKeyOut), (status = 404, body = Problem)))]
pub async fn revoke_api_key(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<ApiKeyOut>, ApiError> {
    principal.require_admin()?;
    let id = parse_key_id(&id)?;
    let key = services::revoke_api_key(
        &state.access.store,
        principal.org_id,
        id,
        &principal.actor,
        state.access.now(),
    )
    .await?;
    Ok(Json(key.into()))
}
