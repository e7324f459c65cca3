//! `/api/v1/organization`: the caller's organization and its sending settings.

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Deserializer, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::config::DefaultSenderOrgs;
use crate::domain::message::NoMailboxPolicy;
use crate::domain::{EmailAddress, OrgId, Organization};
use crate::services::{settings, views};
use crate::web::AppState;
use crate::web::auth::Principal;
use crate::web::error::{ApiError, Problem};
use crate::web::extract::ApiJson;

/// The organization and its sending settings.
#[derive(Serialize, ToSchema)]
pub struct OrganizationOut {
    pub id: String,
    pub name: String,
    /// While the organization has no Verified mailbox: `fallback` sends from the
    /// installation's default sender, `hold` keeps the mail until a mailbox is verified.
    pub no_mailbox_policy: NoMailboxPolicy,
    /// The Reply-To of its mail sent by the default sender.
    pub reply_to: Option<String>,
    /// Whether the installation has a default sender at all (`HERALD_DEFAULT_SENDER`).
    pub default_sender_configured: bool,
    /// Whether the default sender sends for this organization while it has no Verified
    /// mailbox: it is configured, and serves every organization or the operator allowed this
    /// one (`HERALD_DEFAULT_SENDER_ORGS`).
    pub default_sender_allowed: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

fn render(state: &AppState, org: Organization) -> OrganizationOut {
    let allowed = crate::services::default_sender::serves(&state.access.config.outbox, &org);
    OrganizationOut {
        id: org.id.to_string(),
        name: org.name,
        no_mailbox_policy: org.no_mailbox_policy,
        reply_to: org.reply_to,
        default_sender_configured: state.access.config.outbox.default_sender.is_some(),
        default_sender_allowed: allowed,
        created_at: org.created_at,
    }
}

/// A change to the sending settings; absent fields stay, `reply_to: null` clears it.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchOrganization {
    /// `fallback` or `hold`.
    pub no_mailbox_policy: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub reply_to: Option<Option<String>>,
}

fn nullable<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// The caller's organization.
#[utoipa::path(get, path = "/api/v1/organization", tag = "organization",
    responses((status = 200, body = OrganizationOut), (status = 403, body = Problem)))]
pub async fn get_organization(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<OrganizationOut>, ApiError> {
    principal.require_reader()?;
    let org = views::organization(&state.access.store, principal.org_id)
        .await?
        .ok_or_else(|| ApiError::not_found("organization"))?;
    Ok(Json(render(&state, org)))
}

/// Changes the sending settings. Admins only.
#[utoipa::path(patch, path = "/api/v1/organization", tag = "organization", request_body = PatchOrganization,
    responses((status = 200, body = OrganizationOut), (status = 403, body = Problem), (status = 422, body = Problem)))]
pub async fn update_organization(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<PatchOrganization>,
) -> Result<Json<OrganizationOut>, ApiError> {
    principal.require_admin()?;
    let policy = body
        .no_mailbox_policy
        .as_deref()
        .map(|p| {
            p.parse::<NoMailboxPolicy>()
                .map_err(|e| ApiError::field("no_mailbox_policy", e))
        })
        .transpose()?;
    let reply_to = match body.reply_to {
        Some(Some(r)) if !r.trim().is_empty() => Some(Some(
            EmailAddress::parse_field("reply_to", &r)
                .map_err(|e| ApiError::validation(vec![e]))?
                .as_str()
                .to_owned(),
        )),
        Some(_) => Some(None),
        None => None,
    };
    let now = state.access.now();
    let org = settings::update_sending_settings(
        &state.access.store,
        principal.org_id,
        &principal.actor,
        policy,
        reply_to,
        now,
    )
    .await?
    .ok_or_else(|| ApiError::not_found("organization"))?;
    Ok(Json(render(&state, org)))
}

/// Whether the installation's default sender serves an organization.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DefaultSenderAllowance {
    /// `true` lets the default sender send for the organization while it has no Verified
    /// mailbox (with `HERALD_DEFAULT_SENDER_ORGS=listed`); `false` holds its mail instead.
    pub allowed: bool,
}

/// The organization's answer to an allowance.
#[derive(Serialize, ToSchema)]
pub struct DefaultSenderAllowanceOut {
    pub organization_id: String,
    pub name: String,
    /// As set by the operator.
    pub allowed: bool,
    /// `listed` or `all`: with `all` the default sender serves every organization anyway.
    pub default_sender_orgs: String,
}

/// Allows or denies the installation's default sender for an organization. Installation admins
/// only: admins of the operator's own organization, the one holding the default sender
/// (`HERALD_DEFAULT_SENDER`). The command line does the same: `herald org set ORG
/// --default-sender allow|deny`.
#[utoipa::path(put, path = "/api/v1/organizations/{id}/default-sender", tag = "organization",
    params(("id" = String, Path, description = "The organization's id")),
    request_body = DefaultSenderAllowance,
    responses((status = 200, body = DefaultSenderAllowanceOut), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn set_default_sender(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<DefaultSenderAllowance>,
) -> Result<Json<DefaultSenderAllowanceOut>, ApiError> {
    // Decided before the id is looked at, so that no one else learns which ids exist.
    if principal.require_admin().is_err()
        || !crate::services::default_sender::is_operator_org(
            &state.access.store,
            &state.access.config.outbox,
            principal.org_id,
        )
        .await?
    {
        return Err(ApiError::forbidden(
            "Only an installation admin (an admin of the organization holding the default sender, HERALD_DEFAULT_SENDER) decides which organizations it serves; or run `herald org set ORG --default-sender allow` on the server.",
        ));
    }
    let org_id: OrgId = id
        .parse()
        .map_err(|_| ApiError::not_found("organization"))?;
    let org = crate::services::default_sender::set_allowed(
        &state.access.store,
        org_id,
        body.allowed,
        &principal.actor,
        state.access.now(),
    )
    .await?;
    Ok(Json(DefaultSenderAllowanceOut {
        organization_id: org.id.to_string(),
        name: org.name,
        allowed: org.default_sender_allowed,
        default_sender_orgs: match state.access.config.outbox.default_sender_orgs {
            DefaultSenderOrgs::All => "all",
            DefaultSenderOrgs::Listed => "listed",
        }
        .into(),
    }))
}
