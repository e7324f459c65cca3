//! The pages every other page falls back on: render a template, a notice of a few words with
//! a link onward, and the page for an address that has none.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

pub(in crate::web) fn render(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "template rendering failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "Internal error").into_response()
        }
    }
}

/// A page of a few words and a link onward.
pub(in crate::web) fn notice(
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

/// The page of an address with nothing behind it.
pub(in crate::web) fn not_found_page() -> Response {
    notice(
        StatusCode::NOT_FOUND,
        "Page not found",
        "There is no page at this address.",
        "/",
        "Go to Herald",
    )
}

/// A page of a few words and a link onward.
#[derive(Template)]
#[template(path = "notice.html")]
struct NoticePage {
    title: String,
    message: String,
    link_href: String,
    link_text: String,
}
