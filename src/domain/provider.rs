//! Who runs a mailbox, and what Herald knows of each provider's scopes.

string_enum!(
    /// Who runs the mailbox; fills defaults and words errors.
    Provider {
        /// Microsoft 365 / Exchange Online.
        Microsoft = "microsoft",
        /// Google Workspace / Gmail.
        Google = "google",
        /// Any other SMTP server.
        Custom = "custom",
        /// Herald's own stand-in for Microsoft, only while the sandbox runs.
        Sandbox = "sandbox",
    }
);

/// The scopes Herald asks Microsoft for.
pub const MICROSOFT_SCOPES: &[&str] = &[
    "https://outlook.office.com/SMTP.Send",
    "offline_access",
    "openid",
    "profile",
    "email",
];

/// The scopes Herald asks Microsoft for when it sends through Microsoft Graph (delegated).
pub const MICROSOFT_GRAPH_SCOPES: &[&str] = &[
    "https://graph.microsoft.com/Mail.Send",
    "offline_access",
    "openid",
    "profile",
    "email",
];

/// What Graph also asks for when the account that signs in sends as another mailbox (a
/// shared mailbox with Send As).
pub const MICROSOFT_GRAPH_SHARED_SCOPE: &str = "https://graph.microsoft.com/Mail.Send.Shared";

/// What an app (client credentials) asks for to send with Graph: the application permissions
/// an admin granted (Mail.Send).
pub const MICROSOFT_GRAPH_APP_SCOPE: &str = "https://graph.microsoft.com/.default";

/// What an app asks for to send over Exchange's SMTP (SMTP.SendAsApp).
pub const MICROSOFT_SMTP_APP_SCOPE: &str = "https://outlook.office365.com/.default";

/// Microsoft Graph's host in the global cloud.
pub const MICROSOFT_GRAPH_URL: &str = "https://graph.microsoft.com";

/// The scope Herald asks Google for.
pub const GOOGLE_SCOPES: &[&str] = &["https://mail.google.com/"];
