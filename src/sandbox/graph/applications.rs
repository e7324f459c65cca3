//! `GET {base}/v1.0/applications?$filter=appId eq '{id}'&$select=passwordCredentials`: an app
//! registration as Graph lists it, with its client secrets' hint, end date, Secret ID and
//! description (never a Value). It takes a token with Application.Read.All, the application
//! permission (app-only) or the delegated scope; any other is refused with `403
//! Authorization_RequestDenied`, as Graph refuses it.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::super::{APP_APPLICATION_READ_ALL, GRAPH_APPLICATION_READ_ALL_SCOPE, GRAPH_RESOURCE};
use super::{Ctx, Graph, authenticate};

pub(super) fn routes() -> Router<Graph> {
    Router::new().route("/v1.0/applications", get(list_applications))
}

/// The application id of `appId eq '{id}'`, the one filter the sandbox understands.
fn app_id_of(filter: &str) -> Option<&str> {
    let rest = filter.trim().strip_prefix("appId")?.trim_start();
    let rest = rest.strip_prefix("eq")?.trim();
    rest.strip_prefix('\'')?.strip_suffix('\'')
}

async fn list_applications(
    State(graph): State<Graph>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let ctx = Ctx::new(&graph, &headers);
    let state = &graph.state;
    let record = match authenticate(state, &headers) {
        Ok(record) => record,
        Err(message) => {
            return ctx.error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                message,
            );
        }
    };
    if record.audience != GRAPH_RESOURCE {
        return ctx.error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "Access token validation failure. Invalid audience.",
        );
    }
    let allowed = if record.app_only {
        record.roles.iter().any(|r| r == APP_APPLICATION_READ_ALL)
    } else {
        record
            .scopes
            .iter()
            .any(|s| s == GRAPH_APPLICATION_READ_ALL_SCOPE)
    };
    if !allowed {
        return ctx.error(
            StatusCode::FORBIDDEN,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
        );
    }
    let Some(app_id) = query.get("$filter").and_then(|f| app_id_of(f)) else {
        return ctx.error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Invalid filter clause: the sandbox understands appId eq '{id}' only.",
        );
    };
    let value: Vec<_> = state
        .client(app_id)
        .map(|client| {
            let secrets: Vec<_> = state
                .client_secrets(&client.client_id)
                .iter()
                .map(|p| {
                    json!({
                        "hint": p.hint,
                        "endDateTime": p.end.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
                        "keyId": p.key_id,
                        "displayName": p.display_name,
                        "secretText": null,
                    })
                })
                .collect();
            json!({"appId": client.client_id, "passwordCredentials": secrets})
        })
        .into_iter()
        .collect();
    (
        StatusCode::OK,
        ctx.headers(),
        axum::Json(json!({
            "@odata.context": format!("{}/v1.0/$metadata#applications(passwordCredentials)", ctx.base_url),
            "value": value,
        })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::app_id_of;

    #[test]
    fn the_app_id_filter_is_read() {
        assert_eq!(app_id_of("appId eq 'abc-1'"), Some("abc-1"));
        assert_eq!(app_id_of("displayName eq 'x'"), None);
        assert_eq!(app_id_of("appId eq abc"), None);
    }
}
