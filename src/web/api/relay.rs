//! `/api/v1/relay-credentials`: usernames and passwords with which devices that only speak SMTP
//! send through the relay. The password is shown once, when created.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::ListParams;
use crate::domain::relay::{FromPolicy, RelayCredential};
use crate::services::relay::{self, NewRelayCredential};
use crate::services::views;
use crate::web::AppState;
use crate::web::auth::Principal;
use crate::web::error::{ApiError, Problem};
use crate::web::extract::{ApiJson, ApiQuery};

/// A relay credential, without its password.
#[derive(Serialize, ToSchema)]
pub struct RelayCredentialOut {
    pub id: String,
    pub name: String,
    /// The SMTP AUTH username.
    pub username: String,
    /// Mailbox ids, the first used unless MAIL FROM names another.
    pub mailboxes: Vec<String>,
    /// Client address ranges it may connect from; empty: anywhere.
    pub allowed_networks: Vec<String>,
    /// `rewrite` (a foreign From is sent as the mailbox) or `refuse` (`550 5.7.1`).
    pub from_policy: FromPolicy,
    /// On a rewrite, the device's From becomes the Reply-To.
    pub keep_reply_to: bool,
    /// A device that cannot log in: its network alone identifies it (no AUTH, no password).
    pub network_only: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
}

impl From<RelayCredential> for RelayCredentialOut {
    fn from(c: RelayCredential) -> Self {
        Self {
            id: c.id,
            name: c.name,
            username: c.username,
            mailboxes: c.mailboxes.iter().map(ToString::to_string).collect(),
            allowed_networks: c.allowed_networks.iter().map(ToString::to_string).collect(),
            from_policy: c.from_policy,
            keep_reply_to: c.keep_reply_to,
            network_only: c.network_only,
            created_at: c.created_at,
            last_used_at: c.last_used_at,
        }
    }
}

/// A credential just created, with its password: store it now, it cannot be shown again.
#[derive(Serialize, ToSchema)]
pub struct CreatedRelayCredential {
    #[serde(flatten)]
    pub credential: RelayCredentialOut,
    /// The SMTP AUTH password, shown this once; absent for a network-only credential.
    pub password: Option<String>,
}

super::list_type!(RelayCredentialList, RelayCredentialOut);

/// A new credential.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Scanner, 2nd floor", "mailbox": "Support"}))]
pub struct CreateRelayCredential {
    /// What the device is, e.g. "Scanner, 2nd floor".
    pub name: String,
    /// One mailbox (id or name) …
    pub mailbox: Option<String>,
    /// … or several, chosen by the MAIL FROM address (the first otherwise).
    #[serde(default)]
    pub mailboxes: Vec<String>,
    /// Addresses or CIDR ranges the device connects from; omitted: anywhere.
    #[serde(default)]
    pub allowed_networks: Vec<String>,
    /// `rewrite` (default) or `refuse`.
    pub from_policy: Option<String>,
    /// Default true.
    pub keep_reply_to: Option<bool>,
    /// For printers and scanners that only speak plain SMTP without AUTH: the device is known
    /// by its address alone. Needs `allowed_networks`, each private or loopback. Default false.
    pub network_only: Option<bool>,
}

/// Issues a credential; the password is in this answer only. Admins only.
#[utoipa::path(post, path = "/api/v1/relay-credentials", tag = "relay", request_body = CreateRelayCredential,
    responses((status = 201, body = CreatedRelayCredential), (status = 403, body = Problem), (status = 422, body = Problem)))]
pub async fn create_relay_credential(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<CreateRelayCredential>,
) -> Result<(StatusCode, Json<CreatedRelayCredential>), ApiError> {
    principal.require_admin()?;
    let mut mailboxes: Vec<String> = body.mailbox.into_iter().collect();
    mailboxes.extend(body.mailboxes);
    let (credential, password) = relay::create(
        &state.access.store,
        principal.org_id,
        NewRelayCredential {
            name: body.name,
            mailboxes,
            allowed_networks: body.allowed_networks,
            from_policy: body.from_policy,
            keep_reply_to: body.keep_reply_to,
            network_only: body.network_only,
        },
        &principal.actor,
        state.access.now(),
    )
    .await?;
    use secrecy::ExposeSecret as _;
    Ok((
        StatusCode::CREATED,
        Json(CreatedRelayCredential {
            credential: credential.into(),
            password: password.map(|p| p.expose_secret().to_owned()),
        }),
    ))
}

/// The organization's relay credentials.
#[utoipa::path(get, path = "/api/v1/relay-credentials", tag = "relay", params(ListParams),
    responses((status = 200, body = RelayCredentialList), (status = 403, body = Problem)))]
pub async fn list_relay_credentials(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<RelayCredentialList>, ApiError> {
    principal.require_reader()?;
    let (limit, after) = (params.limit()?, params.after()?);
    let page = views::relay_credentials(
        &state.access.store,
        principal.org_id,
        after.as_deref(),
        limit,
    )
    .await?;
    Ok(Json(RelayCredentialList::from_page(
        page,
        RelayCredentialOut::from,
    )))
}

/// One relay credential.
#[utoipa::path(get, path = "/api/v1/relay-credentials/{id}", tag = "relay", params(("id" = String, Path)),
    responses((status = 200, body = RelayCredentialOut), (status = 404, body = Problem)))]
pub async fn get_relay_credential(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<RelayCredentialOut>, ApiError> {
    principal.require_reader()?;
    let credential = views::relay_credential(&state.access.store, principal.org_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("relay credential"))?;
    Ok(Json(credential.into()))
}

/// Deletes a credential: the device can no longer log in. Admins only.
#[utoipa::path(delete, path = "/api/v1/relay-credentials/{id}", tag = "relay", params(("id" = String, Path)),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn delete_relay_credential(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    principal.require_admin()?;
    relay::delete(
        &state.access.store,
        principal.org_id,
        &id,
        &principal.actor,
        state.access.now(),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
