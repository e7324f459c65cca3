//! The JSON API under `/api/v1`. Routes are registered through `utoipa-axum`, so a route
//! cannot be added without joining the OpenAPI document served at `/api/v1/openapi.json`.

mod alerts;
mod api_keys;
mod audit;
mod authorization;
mod certificates;
mod mailboxes;
mod me;
mod messages;
mod organization;
mod relay;
mod test_message;
mod users;

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use base64::Engine as _;
use serde::Deserialize;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, Problem};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Herald API",
        description = "Herald is a self-hosted outgoing-mail gateway. Authenticate with `Authorization: Bearer <API key>`, or with the web session cookie plus the `X-CSRF-Token` header. Every error is `application/problem+json` with a stable `code`; every list answers `{items, next_cursor}`."
    ),
    components(schemas(Problem)),
    modifiers(&SecuritySchemes),
    security(("api_key" = []), ("session" = [])),
    tags(
        (name = "account", description = "Who is calling"),
        (name = "users", description = "People who sign in to the web UI"),
        (name = "api-keys", description = "Keys applications authenticate with"),
        (name = "audit", description = "Who changed what, when and from where"),
        (name = "mailboxes", description = "The accounts an organization sends from"),
        (name = "messages", description = "Mail handed to Herald, and what became of it"),
        (name = "organization", description = "The organization's sending settings"),
        (name = "relay", description = "Credentials of the SMTP relay for devices that only speak SMTP"),
        (name = "alerts", description = "What the organization's admins must hear about, and the webhook it goes to"),
    )
)]
struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("hk_…")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new("herald_session"))),
        );
    }
}

/// Documents on every operation what the shared layers answer, so that the document says what
/// a client really receives (`scripts/schemathesis.sh` checks it): every error body is
/// `application/problem+json`; every operation may answer 401 (no or a bad credential); a state
/// change may answer 403 (a session without its CSRF token); a JSON body may be refused with 400
/// (malformed), 413 (too large), 415 (not JSON) or 422 (a field); query parameters with 422.
/// Applied after the routes are collected: `ApiDoc`'s own modifiers run before any path exists.
struct CommonProblems;

impl Modify for CommonProblems {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{Content, Ref, RefOr, ResponseBuilder};
        const PROBLEM: &str = "application/problem+json";
        let problem_ref = Ref::from_schema_name("Problem");
        let is_problem = |content: &RefOr<Content>| match content {
            RefOr::T(content) => {
                matches!(&content.schema, Some(RefOr::Ref(r)) if r.ref_location == problem_ref.ref_location)
            }
            RefOr::Ref(_) => false,
        };
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                (false, &mut item.get),
                (true, &mut item.put),
                (true, &mut item.post),
                (true, &mut item.delete),
                (true, &mut item.patch),
            ];
            for (changes_state, operation) in operations {
                let Some(operation) = operation.as_mut() else {
                    continue;
                };
                let responses = &mut operation.responses.responses;
                for response in responses.values_mut() {
                    if let RefOr::T(response) = response
                        && response
                            .content
                            .get("application/json")
                            .is_some_and(is_problem)
                        && let Some(content) = response.content.shift_remove("application/json")
                    {
                        response.content.insert(PROBLEM.to_owned(), content);
                    }
                }
                let has_body = operation.request_body.is_some();
                let has_query = operation.parameters.iter().flatten().any(|p| {
                    matches!(p, RefOr::T(p) if matches!(p.parameter_in, utoipa::openapi::path::ParameterIn::Query))
                });
                let mut add = |status: &str, description: &str| {
                    responses.entry(status.to_owned()).or_insert_with(|| {
                        ResponseBuilder::new()
                            .description(description)
                            .content(PROBLEM, Content::new(Some(problem_ref.clone())))
                            .build()
                            .into()
                    });
                };
                add(
                    "401",
                    "No credentials, or an unknown or revoked API key or session",
                );
                if changes_state {
                    add("403", "Not allowed, or a session without its X-CSRF-Token");
                }
                if has_body {
                    add("400", "The body is not valid JSON");
                    add("413", "The body is too large");
                    add("415", "The body is not of a documented content type");
                }
                if has_body || has_query {
                    add("422", "A field or parameter is not valid; see errors");
                }
            }
        }
    }
}

/// The API routes plus the OpenAPI document that describes them. Sending takes bodies up to
/// `max_message_bytes` (base64 attachments in JSON included); every other route 1 MiB.
pub fn router(max_message_bytes: u64) -> Router<AppState> {
    let (router, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(me::whoami))
        .routes(routes!(users::list_users, users::create_user))
        .routes(routes!(
            users::get_user,
            users::update_user,
            users::delete_user
        ))
        .routes(routes!(api_keys::list_api_keys, api_keys::create_api_key))
        .routes(routes!(api_keys::get_api_key, api_keys::revoke_api_key))
        .routes(routes!(audit::list_audit_events))
        .routes(routes!(
            mailboxes::list_mailboxes,
            mailboxes::create_mailbox
        ))
        .routes(routes!(
            mailboxes::get_mailbox,
            mailboxes::update_mailbox,
            mailboxes::delete_mailbox
        ))
        .routes(routes!(authorization::start_authorization))
        .routes(routes!(authorization::latest_authorization))
        .routes(routes!(authorization::start_device_authorization))
        .routes(routes!(mailboxes::verify_mailbox))
        .routes(routes!(certificates::download_certificate))
        .routes(routes!(certificates::renew_certificate))
        .routes(routes!(test_message::send_test_message))
        .routes(routes!(messages::list_messages))
        .routes(routes!(messages::get_message))
        .routes(routes!(messages::cancel_message))
        .routes(routes!(
            organization::get_organization,
            organization::update_organization
        ))
        .routes(routes!(organization::set_default_sender))
        .routes(routes!(alerts::list_alerts))
        .routes(routes!(alerts::dismiss_alert))
        .routes(routes!(
            alerts::get_alert_webhook,
            alerts::set_alert_webhook,
            alerts::delete_alert_webhook
        ))
        .routes(routes!(
            relay::list_relay_credentials,
            relay::create_relay_credential
        ))
        .routes(routes!(
            relay::get_relay_credential,
            relay::delete_relay_credential
        ))
        .split_for_parts();
    let (send, send_doc) = OpenApiRouter::new()
        .routes(routes!(messages::send_message))
        .split_for_parts();
    let mut doc = doc;
    doc.merge(send_doc);
    CommonProblems.modify(&mut doc);
    document_too_many_requests(&mut doc);
    let doc = std::sync::Arc::new(doc);
    let send_limit = usize::try_from(max_message_bytes / 3 * 4 + 256 * 1024).unwrap_or(usize::MAX);
    router
        .layer(axum::extract::DefaultBodyLimit::max(super::MAX_BODY_BYTES))
        .merge(send.layer(axum::extract::DefaultBodyLimit::max(send_limit)))
        .route(
            "/api/v1/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { axum::Json(doc.as_ref().clone()) }
            }),
        )
        .route("/api/{*rest}", axum::routing::any(no_such_route))
}

/// Documents the 429 every operation may answer: any route an API key authenticates when the
/// key passes its rate (`rate_limited`), and sending when the organization's queue is full
/// (`queue_full`) or its default-sender quota spent (`default_sender_quota`).
fn document_too_many_requests(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::header::HeaderBuilder;
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
    let response = ResponseBuilder::new()
        .description(
            "Too many requests: `rate_limited` (this API key's rate), or when sending `queue_full` or `default_sender_quota`. Retry after the seconds `Retry-After` gives.",
        )
        .header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(Some(ObjectBuilder::new().schema_type(Type::Integer)))
                .description(Some("Seconds to wait"))
                .build(),
        )
        .content(
            "application/problem+json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build();
    for item in doc.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            operation
                .responses
                .responses
                .entry("429".into())
                .or_insert_with(|| RefOr::T(response.clone()));
        }
    }
}

async fn no_such_route() -> impl IntoResponse {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_such_route",
        "Not found",
        "There is no such API route; see /api/v1/openapi.json.",
    )
}

/// `?limit=&cursor=` of every list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Items per page, 1–200 (default 50).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl ListParams {
    pub const DEFAULT_LIMIT: u32 = 50;
    pub const MAX_LIMIT: u32 = 200;

    pub fn limit(&self) -> Result<usize, ApiError> {
        match self.limit.unwrap_or(Self::DEFAULT_LIMIT) {
            n @ 1..=Self::MAX_LIMIT => Ok(n as usize),
            _ => Err(ApiError::field(
                "limit",
                format!("must be between 1 and {}", Self::MAX_LIMIT),
            )),
        }
    }

    /// The id the cursor points after, checked to be one of ours.
    pub fn after(&self) -> Result<Option<String>, ApiError> {
        let Some(cursor) = self.cursor.as_deref().filter(|c| !c.is_empty()) else {
            return Ok(None);
        };
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(cursor)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .filter(|id| uuid::Uuid::parse_str(id).is_ok())
            .map(Some)
            .ok_or_else(|| ApiError::field("cursor", "is not a cursor this API returned"))
    }
}

/// Makes the opaque cursor for a page ending at `id`.
pub fn encode_cursor(id: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id)
}

/// Defines `{ items: [T], next_cursor }` for a item type.
macro_rules! list_type {
    ($name:ident, $item:ty) => {
        #[derive(serde::Serialize, utoipa::ToSchema)]
        pub struct $name {
            pub items: Vec<$item>,
            /// Pass as `cursor` for the next page; null on the last page.
            pub next_cursor: Option<String>,
        }

        impl $name {
            pub fn from_page<T>(
                page: crate::services::views::Page<T>,
                map: impl Fn(T) -> $item,
            ) -> Self {
                Self {
                    next_cursor: page.next_cursor.as_deref().map(super::encode_cursor),
                    items: page.items.into_iter().map(map).collect(),
                }
            }
        }
    };
}
pub(crate) use list_type;
