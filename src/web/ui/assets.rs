//! The stylesheet and scripts, compiled into the binary.

use axum::http::header;
use axum::response::IntoResponse;

pub(super) async fn shared_script() -> impl IntoResponse {
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

pub(super) async fn settings_script() -> impl IntoResponse {
    script(include_str!("../../../static/settings.js"))
}

pub(super) async fn outgoing_mail_script() -> impl IntoResponse {
    script(include_str!("../../../static/outgoing-mail.js"))
}

pub(super) async fn relay_script() -> impl IntoResponse {
    script(include_str!("../../../static/relay.js"))
}

pub(super) async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../../static/app.css"),
    )
}
