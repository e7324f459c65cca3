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

string_enum!(
    /// Microsoft's cloud: the global one or a national cloud, each with its own sign-in, Graph
    /// and SMTP hosts.
    Cloud {
        /// The global cloud (`login.microsoftonline.com`).
        Global = "global",
        /// US Government GCC High (`login.microsoftonline.us`).
        UsGov = "usgov",
        /// US Government DoD.
        Dod = "dod",
        /// Microsoft 365 operated by 21Vianet in China.
        China = "china",
    }
);

impl Cloud {
    /// The sign-in host (Entra ID).
    pub fn login_host(self) -> &'static str {
        match self {
            Self::Global => "login.microsoftonline.com",
            Self::UsGov | Self::Dod => "login.microsoftonline.us",
            Self::China => "login.chinacloudapi.cn",
        }
    }

    /// Microsoft Graph: where requests go, and the resource its scopes name.
    pub fn graph_url(self) -> &'static str {
        match self {
            Self::Global => MICROSOFT_GRAPH_URL,
            Self::UsGov => "https://graph.microsoft.us",
            Self::Dod => "https://dod-graph.microsoft.us",
            Self::China => "https://microsoftgraph.chinacloudapi.cn",
        }
    }

    /// Exchange Online's SMTP submission host.
    pub fn smtp_host(self) -> &'static str {
        match self {
            Self::Global => "smtp.office365.com",
            Self::UsGov | Self::Dod => "smtp.office365.us",
            Self::China => "smtp.partner.outlook.cn",
        }
    }

    /// Exchange Online's resource: the prefix of its delegated `SMTP.Send` scope and of an
    /// app's `.default`.
    fn exchange_resource(self, delegated: bool) -> &'static str {
        match self {
            // The global cloud's SMTP.Send is documented under outlook.office.com; both names
            // are the one Exchange Online resource.
            Self::Global if delegated => "https://outlook.office.com",
            Self::Global => "https://outlook.office365.com",
            Self::UsGov => "https://outlook.office365.us",
            Self::Dod => "https://outlook-dod.office365.us",
            Self::China => "https://partner.outlook.cn",
        }
    }

    /// The delegated scopes for SMTP (`SMTP.Send`) or Graph (`Mail.Send`).
    pub fn delegated_scopes(self, graph: bool) -> Vec<String> {
        let first = if graph {
            format!("{}/Mail.Send", self.graph_url())
        } else {
            format!("{}/SMTP.Send", self.exchange_resource(true))
        };
        std::iter::once(first)
            .chain(MICROSOFT_SCOPES[1..].iter().map(|s| (*s).to_owned()))
            .collect()
    }

    /// What Graph also asks for when the signed-in account sends as a shared mailbox.
    pub fn graph_shared_scope(self) -> String {
        format!("{}/Mail.Send.Shared", self.graph_url())
    }

    /// An app's scope (client credentials) for Graph or for Exchange's SMTP.
    pub fn app_scope(self, graph: bool) -> String {
        if graph {
            format!("{}/.default", self.graph_url())
        } else {
            format!("{}/.default", self.exchange_resource(false))
        }
    }
}

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

/// The scopes Herald asks Google for: Gmail's (SMTP with XOAUTH2), and `openid email` so that
/// the ID token names the account that signed in and a wrong account is caught.
pub const GOOGLE_SCOPES: &[&str] = &[GOOGLE_MAIL_SCOPE, "openid", "email"];

/// Gmail's scope, the only one that allows SMTP with XOAUTH2; also what a service account's
/// domain-wide delegation must grant.
pub const GOOGLE_MAIL_SCOPE: &str = "https://mail.google.com/";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_global_cloud_asks_for_what_it_always_did() {
        let global = Cloud::Global;
        assert_eq!(global.delegated_scopes(false), MICROSOFT_SCOPES);
        assert_eq!(global.delegated_scopes(true), MICROSOFT_GRAPH_SCOPES);
        assert_eq!(global.graph_shared_scope(), MICROSOFT_GRAPH_SHARED_SCOPE);
        assert_eq!(global.app_scope(true), MICROSOFT_GRAPH_APP_SCOPE);
        assert_eq!(global.app_scope(false), MICROSOFT_SMTP_APP_SCOPE);
    }

    #[test]
    fn google_is_asked_for_the_account_beside_gmail() {
        assert_eq!(
            GOOGLE_SCOPES,
            ["https://mail.google.com/", "openid", "email"],
            "without openid and email Google sends no ID token naming the account"
        );
    }

    #[test]
    fn a_national_cloud_sets_its_hosts_and_resources_together() {
        let gcc_high = Cloud::UsGov;
        assert_eq!(gcc_high.login_host(), "login.microsoftonline.us");
        assert_eq!(gcc_high.smtp_host(), "smtp.office365.us");
        assert_eq!(gcc_high.graph_url(), "https://graph.microsoft.us");
        assert_eq!(
            gcc_high.delegated_scopes(false)[0],
            "https://outlook.office365.us/SMTP.Send"
        );
        assert_eq!(
            gcc_high.app_scope(true),
            "https://graph.microsoft.us/.default"
        );
        assert_eq!(Cloud::Dod.graph_url(), "https://dod-graph.microsoft.us");
        assert_eq!(Cloud::China.login_host(), "login.chinacloudapi.cn");
        assert_eq!(Cloud::China.smtp_host(), "smtp.partner.outlook.cn");
    }
}
