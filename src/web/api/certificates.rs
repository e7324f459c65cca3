//! `/api/v1/mailboxes/{id}/certificate`: the certificate a mailbox's app signs in with
//! (`client_auth: "certificate"`). The admin downloads it (`.cer`, DER, as the Azure portal's
//! Upload certificate takes it; or PEM) and uploads it to the app registration; **Renew**
//! makes the next one while the one in use still works. Private keys never leave Herald.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;

use super::mailboxes::{MailboxOut, parse_mailbox_id, render};
use crate::services::{mailboxes, views};
use crate::web::AppState;
use crate::web::auth::Principal;
use crate::web::error::{ApiError, Problem};
use crate::web::extract::ApiQuery;

/// Which certificate, in which form.
#[derive(Deserialize, IntoParams, Default)]
#[serde(deny_unknown_fields)]
pub struct CertificateQuery {
    /// The renewed certificate instead of the one in use.
    pub renewed: Option<bool>,
    /// `cer` (default: DER, for the Azure portal) or `pem`.
    pub format: Option<String>,
}

/// Downloads the mailbox's certificate, to upload to the app registration under Certificates &
/// secrets › Certificates.
#[utoipa::path(get, path = "/api/v1/mailboxes/{id}/certificate", tag = "mailboxes",
    params(("id" = String, Path), CertificateQuery),
    responses((status = 200, description = "The certificate: `application/pkix-cert` (.cer) or `application/x-pem-file`", content_type = "application/pkix-cert"),
        (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn download_certificate(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<CertificateQuery>,
) -> Result<Response, ApiError> {
    principal.require_reader()?;
    let id = parse_mailbox_id(&id)?;
    let mailbox = views::mailbox(&state.access.store, principal.org_id, id)
        .await?
        .filter(|m| principal.may_use(m.id))
        .ok_or_else(|| ApiError::not_found("mailbox"))?;
    let renewed = query.renewed.unwrap_or(false);
    let certificate = if renewed {
        mailbox.next_certificate.as_ref()
    } else {
        mailbox.certificate.as_ref()
    }
    .ok_or_else(|| {
        ApiError::not_found(if renewed {
            "renewed certificate"
        } else {
            "certificate"
        })
    })?;
    let stem: String = format!("herald-{}", mailbox.username)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let stem = if renewed {
        format!("{stem}-renewed")
    } else {
        stem
    };
    match query.format.as_deref().unwrap_or("cer") {
        "pem" => Ok((
            [
                (header::CONTENT_TYPE, "application/x-pem-file".to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{stem}.pem\""),
                ),
            ],
            certificate.pem.clone(),
        )
            .into_response()),
        "cer" => {
            let der = certificate.der().ok_or_else(|| {
                tracing::error!(mailbox = %mailbox.id, "a stored certificate is not valid PEM");
                ApiError::internal()
            })?;
            Ok((
                [
                    (header::CONTENT_TYPE, "application/pkix-cert".to_owned()),
                    (
                        header::CONTENT_DISPOSITION,
                        format!("attachment; filename=\"{stem}.cer\""),
                    ),
                ],
                der,
            )
                .into_response())
        }
        other => Err(ApiError::field(
            "format",
            format!("`{other}` is not a format: give cer or pem"),
        )),
    }
}

/// **Renew certificate**: makes the next certificate beside the one in use. Upload it to the
/// app registration; Herald switches to it when Microsoft stops accepting the one in use (it
/// was deleted from the app registration, or expired). Admins only.
#[utoipa::path(post, path = "/api/v1/mailboxes/{id}/certificate/renew", tag = "mailboxes",
    params(("id" = String, Path)),
    responses((status = 200, body = MailboxOut), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn renew_certificate(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<MailboxOut>, ApiError> {
    principal.require_admin()?;
    let id = parse_mailbox_id(&id)?;
    let mailbox =
        mailboxes::renew_certificate(&state.access, principal.org_id, id, &principal.actor).await?;
    Ok(Json(render(&state, mailbox).await?))
}
