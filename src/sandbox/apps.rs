//! App-only access, as Microsoft has it: an app registration gets **application permissions**
//! by admin consent (`Mail.Send` on Microsoft Graph, `SMTP.SendAsApp` on Exchange Online),
//! asks for a token with the client credentials grant (`scope={resource}/.default`), and gets
//! one whose roles are the permissions granted on that resource, even none.
//!
//! Exchange then scopes what the app may do: over SMTP it opens only the mailboxes its service
//! principal was given Full Access to (`Add-MailboxPermission`); over Graph it may send as any
//! mailbox of the tenant unless RBAC for Applications (or an application access policy)
//! limits it to some.

use secrecy::SecretString;
use time::{Duration, OffsetDateTime};

pub use super::oauth::AppCertificate;
use super::{AccessToken, SandboxState};

/// Microsoft Graph's resource (App ID URI).
pub const GRAPH_RESOURCE: &str = "https://graph.microsoft.com";
/// Exchange Online's resource (App ID URI), the audience of app-only SMTP tokens.
pub const EXCHANGE_RESOURCE: &str = "https://outlook.office365.com";
/// Graph's application permission to send mail as any mailbox.
pub const APP_MAIL_SEND: &str = "Mail.Send";
/// Exchange's application permission for SMTP AUTH as an app.
pub const APP_SMTP_SEND_AS_APP: &str = "SMTP.SendAsApp";

/// The application permissions the sandbox knows, with the resource that defines each.
const APP_PERMISSIONS: &[(&str, &str)] = &[
    (APP_MAIL_SEND, GRAPH_RESOURCE),
    // Drafts and upload sessions (messages over 4 MB).
    (super::APP_MAIL_READWRITE, GRAPH_RESOURCE),
    (APP_SMTP_SEND_AS_APP, EXCHANGE_RESOURCE),
    // Reading app registrations: a client secret's end date.
    (super::APP_APPLICATION_READ_ALL, GRAPH_RESOURCE),
];

/// The resource a `.default` scope names, by App ID URI or application id.
pub(super) fn resource_named(identifier: &str) -> Option<&'static str> {
    match identifier
        .trim_end_matches('/')
        .to_ascii_lowercase()
        .as_str()
    {
        "https://graph.microsoft.com" | "00000003-0000-0000-c000-000000000000" => {
            Some(GRAPH_RESOURCE)
        }
        "https://outlook.office365.com" | "00000002-0000-0ff1-ce00-000000000000" => {
            Some(EXCHANGE_RESOURCE)
        }
        _ => None,
    }
}

/// The resource of delegated scopes (`https://host/Scope`): that of the first one naming one.
pub(super) fn audience_of(scopes: &[String]) -> String {
    scopes
        .iter()
        .find_map(|s| {
            let rest = s.strip_prefix("https://")?;
            let host = rest.split('/').next()?;
            Some(format!("https://{host}"))
        })
        .unwrap_or_default()
}

/// What the directory and Exchange hold about one app registration's app-only access.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct AppAccess {
    /// Application permissions granted by admin consent (`Mail.Send`, `SMTP.SendAsApp`).
    pub permissions: Vec<String>,
    /// The enterprise application is disabled: Entra refuses it tokens (AADSTS7000112).
    pub disabled: bool,
    /// Mailboxes its service principal has Full Access to (SMTP AUTH as the app).
    pub mailboxes: Vec<String>,
    /// Graph: the mailboxes RBAC for Applications limits it to; `None` is the whole tenant.
    pub limited_to: Option<Vec<String>>,
    /// Certificates uploaded to the app registration (`private_key_jwt`).
    pub certificates: Vec<AppCertificate>,
}

impl SandboxState {
    /// Grants an application permission (admin consent); `false` when the client or the
    /// permission is unknown.
    pub fn grant_app_permission(&self, client_id: &str, permission: &str) -> bool {
        let Some((name, _)) = APP_PERMISSIONS.iter().find(|(p, _)| *p == permission) else {
            return false;
        };
        if self.client(client_id).is_none() {
            return false;
        }
        let mut inner = self.inner();
        let app = inner.apps.entry(client_id.to_owned()).or_default();
        if !app.permissions.iter().any(|p| p == name) {
            app.permissions.push((*name).to_owned());
        }
        true
    }

    /// Revokes an application permission. Tokens already issued keep their roles until they
    /// expire, as at Microsoft.
    pub fn revoke_app_permission(&self, client_id: &str, permission: &str) {
        if let Some(app) = self.inner().apps.get_mut(client_id) {
            app.permissions.retain(|p| p != permission);
        }
    }

    /// Disables (or enables again) the app: a disabled app gets no tokens.
    pub fn disable_app(&self, client_id: &str, disabled: bool) {
        self.inner()
            .apps
            .entry(client_id.to_owned())
            .or_default()
            .disabled = disabled;
    }

    /// Gives the app's service principal Full Access to a mailbox (`Add-MailboxPermission`),
    /// so that its SMTP.SendAsApp tokens authenticate as it.
    pub fn grant_app_mailbox(&self, client_id: &str, mailbox: &str) {
        let mut inner = self.inner();
        let app = inner.apps.entry(client_id.to_owned()).or_default();
        let mailbox = mailbox.to_lowercase();
        if !app.mailboxes.contains(&mailbox) {
            app.mailboxes.push(mailbox);
        }
    }

    /// Takes a mailbox's Full Access away from the app's service principal.
    pub fn revoke_app_mailbox(&self, client_id: &str, mailbox: &str) {
        if let Some(app) = self.inner().apps.get_mut(client_id) {
            app.mailboxes.retain(|m| !m.eq_ignore_ascii_case(mailbox));
        }
    }

    /// Limits the app's Graph access to these mailboxes (RBAC for Applications or an
    /// application access policy); `None` gives it the whole tenant again.
    pub fn limit_app_to_mailboxes(&self, client_id: &str, mailboxes: Option<Vec<String>>) {
        self.inner()
            .apps
            .entry(client_id.to_owned())
            .or_default()
            .limited_to = mailboxes.map(|m| m.iter().map(|a| a.to_lowercase()).collect());
    }

    /// Uploads a certificate (PEM or DER) to the app registration, as Certificates & secrets ›
    /// Upload certificate does; `Err` for what is not a certificate.
    pub fn upload_app_certificate(
        &self,
        client_id: &str,
        certificate: &[u8],
    ) -> Result<AppCertificate, String> {
        let certificate = AppCertificate::parse(certificate)?;
        let mut inner = self.inner();
        let app = inner.apps.entry(client_id.to_owned()).or_default();
        if !app.certificates.contains(&certificate) {
            app.certificates.push(certificate.clone());
        }
        Ok(certificate)
    }

    /// Deletes a certificate from the app registration, by its (SHA-1 hex) thumbprint.
    pub fn remove_app_certificate(&self, client_id: &str, thumbprint: &str) {
        if let Some(app) = self.inner().apps.get_mut(client_id) {
            app.certificates
                .retain(|c| !c.thumbprint.eq_ignore_ascii_case(thumbprint));
        }
    }

    /// Records an assertion's `jti` until it expires: `false` if it was seen already.
    pub(super) fn use_assertion_id(&self, client_id: &str, jti: &str, exp: i64) -> bool {
        let now = self.now().unix_timestamp();
        let mut inner = self.inner();
        inner.assertion_ids.retain(|_, until| *until + 600 >= now);
        inner
            .assertion_ids
            .insert(format!("{client_id} {jti}"), exp)
            .is_none()
    }

    /// The app's permissions, state and mailbox scoping.
    pub fn app_access(&self, client_id: &str) -> AppAccess {
        self.inner()
            .apps
            .get(client_id)
            .cloned()
            .unwrap_or_default()
    }

    /// Issues an app-only token for `resource` (one of [`GRAPH_RESOURCE`],
    /// [`EXCHANGE_RESOURCE`]) whose roles are the app's permissions on it, perhaps none.
    pub fn issue_app_token(
        &self,
        client_id: &str,
        resource: &str,
        now: OffsetDateTime,
    ) -> (SecretString, AccessToken) {
        let granted = self.app_access(client_id).permissions;
        let roles = APP_PERMISSIONS
            .iter()
            .filter(|(p, r)| *r == resource && granted.iter().any(|g| g == p))
            .map(|(p, _)| (*p).to_owned())
            .collect();
        let record = AccessToken {
            user: String::new(),
            client_id: client_id.to_owned(),
            scopes: vec![format!("{resource}/.default")],
            expires_at: now + Duration::seconds(self.switches().access_token_lifetime_secs),
            audience: resource.to_owned(),
            app_only: true,
            roles,
        };
        (self.store_access_token(&record), record)
    }

    /// Whether the app's service principal has Full Access to the mailbox.
    pub(super) fn app_opens_mailbox(&self, client_id: &str, mailbox: &str) -> bool {
        self.app_access(client_id)
            .mailboxes
            .iter()
            .any(|m| m.eq_ignore_ascii_case(mailbox))
    }

    /// Whether RBAC for Applications leaves the mailbox in the app's Graph scope.
    pub(super) fn app_reaches_mailbox(&self, client_id: &str, mailbox: &str) -> bool {
        self.app_access(client_id)
            .limited_to
            .is_none_or(|list| list.iter().any(|m| m.eq_ignore_ascii_case(mailbox)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_and_audiences_are_recognised() {
        assert_eq!(
            resource_named("https://graph.microsoft.com"),
            Some(GRAPH_RESOURCE)
        );
        assert_eq!(
            resource_named("00000002-0000-0ff1-ce00-000000000000"),
            Some(EXCHANGE_RESOURCE)
        );
        assert_eq!(resource_named("https://contoso.com"), None);
        assert_eq!(
            audience_of(&[
                "offline_access".into(),
                super::super::SMTP_SEND_SCOPE.into()
            ]),
            "https://outlook.office.com"
        );
    }
}
