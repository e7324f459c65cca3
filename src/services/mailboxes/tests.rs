//! Unit tests of resolving and validating mailboxes.

use super::discovery::discovery_urls;
use super::resolve::resolve;
use super::*;
use crate::domain::mailbox::{
    CredentialKind, GOOGLE_SCOPES, MICROSOFT_SCOPES, MailboxStatus, Provider, Security,
    TransportKind,
};

fn policy() -> Policy<'static> {
    Policy {
        dev: false,
        allow_private_hosts: false,
        sandbox: None,
    }
}

fn microsoft() -> MailboxDraft {
    MailboxDraft {
        name: Some("Support".into()),
        auth: Some("oauth2".into()),
        provider: Some("microsoft".into()),
        tenant: Some("contoso.com".into()),
        username: Some("support@contoso.com".into()),
        client_id: Some("11111111-2222-3333-4444-555555555555".into()),
        client_secret: Some(SecretString::from("abc8Q~secret.value")),
        ..MailboxDraft::default()
    }
}

fn resolve_ok(draft: MailboxDraft, policy: &Policy<'_>) -> Mailbox {
    resolve(
        OrgId::new(),
        MailboxId::new(),
        draft,
        policy,
        (false, false),
        crate::clock::system_now(),
    )
    .map(|r| r.mailbox)
    .unwrap_or_else(|e| panic!("{e}"))
}

fn errors(draft: MailboxDraft, policy: &Policy<'_>) -> Vec<FieldError> {
    match resolve(
        OrgId::new(),
        MailboxId::new(),
        draft,
        policy,
        (false, false),
        crate::clock::system_now(),
    ) {
        Err(ServiceError::Invalid(errors)) => errors,
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("accepted"),
    }
}

#[test]
fn the_microsoft_preset_fills_endpoints_server_and_scopes_from_the_tenant() {
    let m = resolve_ok(microsoft(), &policy());
    assert_eq!(
        m.authorization_url.as_deref(),
        Some("https://login.microsoftonline.com/contoso.com/oauth2/v2.0/authorize")
    );
    assert_eq!(
        m.token_url.as_deref(),
        Some("https://login.microsoftonline.com/contoso.com/oauth2/v2.0/token")
    );
    // Entra's `iss` names the tenant by GUID: a domain gives no issuer, a GUID its own.
    assert_eq!(m.issuer, None);
    let guid = "72F988BF-86F1-41AF-91AB-2D7CD011DB47";
    let by_id = resolve_ok(
        MailboxDraft {
            tenant: Some(guid.into()),
            ..microsoft()
        },
        &policy(),
    );
    assert_eq!(
        by_id.issuer.as_deref(),
        Some("https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0")
    );
    assert_eq!(
        (m.host.as_str(), m.port, m.security),
        ("smtp.office365.com", 587, Security::StartTls)
    );
    assert_eq!(m.scopes, MICROSOFT_SCOPES);
    assert_eq!(m.sign_in_account, "support@contoso.com");
    assert_eq!(m.status, MailboxStatus::NotVerified);
}

#[test]
fn a_custom_issuer_is_looked_up_as_openid_connect_then_rfc_8414_say() {
    let mut m = resolve_ok(microsoft(), &policy());
    assert_eq!(
        discovery_urls(&m, &policy()),
        ["https://login.microsoftonline.com/contoso.com/v2.0/.well-known/openid-configuration"]
    );
    m.provider = Provider::Custom;
    m.issuer = Some("https://idp.example.com/tenant/v2.0/".into());
    assert_eq!(
        discovery_urls(&m, &policy()),
        [
            "https://idp.example.com/tenant/v2.0/.well-known/openid-configuration",
            "https://idp.example.com/.well-known/oauth-authorization-server/tenant/v2.0"
        ]
    );
    m.issuer = None;
    assert!(
        discovery_urls(&m, &policy()).is_empty(),
        "no issuer, no guess"
    );
}

#[test]
fn the_google_preset_fills_its_endpoints() {
    let m = resolve_ok(
        MailboxDraft {
            provider: Some("google".into()),
            tenant: None,
            ..microsoft()
        },
        &policy(),
    );
    assert_eq!(
        m.token_url.as_deref(),
        Some("https://oauth2.googleapis.com/token")
    );
    assert_eq!(m.host, "smtp.gmail.com");
    assert_eq!(m.scopes, GOOGLE_SCOPES);
}

#[test]
fn a_guid_shaped_secret_is_refused_as_the_secret_id() {
    let errors = errors(
        MailboxDraft {
            client_secret: Some(SecretString::from("8c3a4a9e-2f4b-4f1e-9a6e-3b1f0c2d4e5f")),
            ..microsoft()
        },
        &policy(),
    );
    assert_eq!(errors[0].field, "client_secret");
    assert!(errors[0].message.contains("looks like the Secret ID"));
}

#[test]
fn http_and_private_token_urls_are_refused_outside_development() {
    let draft = || MailboxDraft {
        provider: Some("custom".into()),
        host: Some("smtp.example.com".into()),
        authorization_url: Some("https://idp.example.com/authorize".into()),
        scopes: Some(vec!["mail".into()]),
        ..microsoft()
    };
    let e = errors(
        MailboxDraft {
            token_url: Some("http://idp.example.com/token".into()),
            ..draft()
        },
        &policy(),
    );
    assert_eq!(e[0].field, "token_url");
    let e = errors(
        MailboxDraft {
            token_url: Some("https://10.0.0.5/token".into()),
            ..draft()
        },
        &policy(),
    );
    assert!(e[0].message.contains("private"), "{e:?}");
    let e = errors(
        MailboxDraft {
            token_url: Some("https://169.254.169.254/token".into()),
            ..draft()
        },
        &policy(),
    );
    assert_eq!(e[0].field, "token_url");
    let e = errors(
        MailboxDraft {
            token_url: Some("http://127.0.0.1:9/token".into()),
            ..draft()
        },
        &policy(),
    );
    assert_eq!(e[0].field, "token_url");
    // Development mode allows loopback over http; HERALD_ALLOW_PRIVATE_HOSTS allows private.
    let dev = Policy {
        dev: true,
        ..policy()
    };
    resolve_ok(
        MailboxDraft {
            token_url: Some("http://127.0.0.1:9/token".into()),
            ..draft()
        },
        &dev,
    );
    let private = Policy {
        allow_private_hosts: true,
        ..policy()
    };
    resolve_ok(
        MailboxDraft {
            token_url: Some("https://10.0.0.5/token".into()),
            ..draft()
        },
        &private,
    );
}

#[test]
fn line_breaks_are_refused_in_every_header_field() {
    for field in [
        "name",
        "username",
        "from_name",
        "reply_to",
        "host",
        "client_id",
    ] {
        let mut draft = microsoft();
        let bad = Some("a\r\nBcc: x@example.com".to_owned());
        match field {
            "name" => draft.name = bad,
            "username" => draft.username = bad,
            "from_name" => draft.from_name = bad,
            "reply_to" => draft.reply_to = bad,
            "host" => draft.host = bad,
            _ => draft.client_id = bad,
        }
        let e = errors(draft, &policy());
        assert!(e.iter().any(|e| e.field == field), "{field}: {e:?}");
    }
}

#[test]
fn security_none_needs_development_mode() {
    let e = errors(
        MailboxDraft {
            security: Some("none".into()),
            ..microsoft()
        },
        &policy(),
    );
    assert_eq!(e[0].field, "security");
}

#[test]
fn a_microsoft_oauth_mailbox_needs_a_tenant_and_basic_needs_a_password() {
    let e = errors(
        MailboxDraft {
            tenant: None,
            ..microsoft()
        },
        &policy(),
    );
    assert!(e.iter().any(|e| e.field == "tenant"));
    let basic = MailboxDraft {
        auth: Some("basic".into()),
        tenant: None,
        client_secret: None,
        ..microsoft()
    };
    let e = errors(basic, &policy());
    assert_eq!(
        e.iter().map(|e| e.field.as_str()).collect::<Vec<_>>(),
        ["password"]
    );
}

#[test]
fn a_microsoft_mailbox_that_sends_with_graph_asks_for_graphs_scope_and_knows_its_address() {
    let m = resolve_ok(
        MailboxDraft {
            transport: Some("graph".into()),
            ..microsoft()
        },
        &policy(),
    );
    assert_eq!(m.transport, TransportKind::Graph);
    assert_eq!(m.graph_url.as_deref(), Some("https://graph.microsoft.com"));
    assert!(m.save_to_sent_items);
    assert!(
        m.scopes
            .contains(&"https://graph.microsoft.com/Mail.Send".to_owned()),
        "{:?}",
        m.scopes
    );
    assert!(!m.scopes.iter().any(|s| s.contains("SMTP.Send")));
    assert!(!m.scopes.iter().any(|s| s.ends_with("Mail.Send.Shared")));
    // A shared mailbox: the signed-in account sends as it, which Graph calls Mail.Send.Shared.
    let shared = resolve_ok(
        MailboxDraft {
            transport: Some("graph".into()),
            sign_in_account: Some("agent@contoso.com".into()),
            ..microsoft()
        },
        &policy(),
    );
    assert!(
        shared
            .scopes
            .contains(&"https://graph.microsoft.com/Mail.Send.Shared".to_owned())
    );
    // SMTP stays the default, with SMTP's scope and no Graph address.
    let smtp = resolve_ok(microsoft(), &policy());
    assert_eq!(smtp.transport, TransportKind::Smtp);
    assert_eq!(smtp.graph_url, None);
}

#[test]
fn graph_is_refused_for_a_password_or_a_provider_without_graph() {
    let basic = MailboxDraft {
        name: Some("Sales".into()),
        auth: Some("basic".into()),
        provider: Some("microsoft".into()),
        host: Some("smtp.office365.com".into()),
        username: Some("sales@contoso.com".into()),
        password: Some(SecretString::from("pw")),
        transport: Some("graph".into()),
        ..MailboxDraft::default()
    };
    assert!(
        errors(basic, &policy())
            .iter()
            .any(|e| e.field == "transport" && e.message.contains("OAuth2 only"))
    );
    let google = MailboxDraft {
        provider: Some("google".into()),
        tenant: None,
        transport: Some("graph".into()),
        ..microsoft()
    };
    assert!(
        errors(google, &policy())
            .iter()
            .any(|e| e.field == "transport" && e.message.contains("Microsoft 365's"))
    );
    let unknown = MailboxDraft {
        transport: Some("carrier-pigeon".into()),
        ..microsoft()
    };
    assert!(
        errors(unknown, &policy())
            .iter()
            .any(|e| e.field == "transport")
    );
}

#[test]
fn an_app_only_mailbox_asks_for_the_resources_default_scope_and_is_verified_not_authorized() {
    let smtp = resolve_ok(
        MailboxDraft {
            credential: Some("app".into()),
            ..microsoft()
        },
        &policy(),
    );
    assert_eq!(smtp.credential, CredentialKind::App);
    assert_eq!(smtp.scopes, ["https://outlook.office365.com/.default"]);
    let reason = smtp.status_reason.unwrap();
    assert_eq!(reason.code, "verification_required");
    assert!(reason.action.unwrap().contains("Click Verify"));
    let graph = resolve_ok(
        MailboxDraft {
            credential: Some("app".into()),
            transport: Some("graph".into()),
            ..microsoft()
        },
        &policy(),
    );
    assert_eq!(graph.scopes, ["https://graph.microsoft.com/.default"]);
    // OAuth2 defaults to a person's sign-in, basic to its password.
    assert_eq!(
        resolve_ok(microsoft(), &policy()).credential,
        CredentialKind::Delegated
    );
}

#[test]
fn app_only_access_needs_a_tenant_of_its_own_and_oauth2() {
    for tenant in ["common", "organizations"] {
        let draft = MailboxDraft {
            credential: Some("app".into()),
            tenant: Some(tenant.into()),
            ..microsoft()
        };
        assert!(
            errors(draft, &policy())
                .iter()
                .any(|e| e.field == "tenant" && e.message.contains("AADSTS9001023")),
            "{tenant}"
        );
    }
    let basic = MailboxDraft {
        name: Some("Sales".into()),
        auth: Some("basic".into()),
        host: Some("smtp.example.com".into()),
        username: Some("sales@example.com".into()),
        password: Some(SecretString::from("pw")),
        credential: Some("app".into()),
        ..MailboxDraft::default()
    };
    assert!(
        errors(basic, &policy())
            .iter()
            .any(|e| e.field == "credential")
    );
    let password = MailboxDraft {
        credential: Some("password".into()),
        ..microsoft()
    };
    assert!(
        errors(password, &policy())
            .iter()
            .any(|e| e.field == "credential")
    );
}

#[test]
fn graph_takes_four_requests_at_once_per_mailbox_unless_overridden() {
    let graph = MailboxDraft {
        transport: Some("graph".into()),
        ..microsoft()
    };
    assert_eq!(
        resolve_ok(graph, &policy()).effective_limits().connections,
        4
    );
    assert_eq!(
        resolve_ok(microsoft(), &policy())
            .effective_limits()
            .connections,
        3
    );
    let overridden = MailboxDraft {
        transport: Some("graph".into()),
        limits: Some(crate::domain::message::LimitOverrides {
            connections: Some(2),
            ..Default::default()
        }),
        ..microsoft()
    };
    assert_eq!(
        resolve_ok(overridden, &policy())
            .effective_limits()
            .connections,
        2
    );
}

#[test]
fn an_app_only_mailbox_of_another_provider_needs_no_authorization_url() {
    let app = MailboxDraft {
        name: Some("Daemon".into()),
        auth: Some("oauth2".into()),
        credential: Some("app".into()),
        host: Some("smtp.example.com".into()),
        username: Some("daemon@example.com".into()),
        client_id: Some("daemon".into()),
        client_secret: Some(SecretString::from("s3cret")),
        token_url: Some("https://login.example.com/token".into()),
        scopes: Some(vec!["smtp.send".into()]),
        ..MailboxDraft::default()
    };
    let m = resolve_ok(app, &policy());
    assert_eq!(m.authorization_url, None);
    assert_eq!(m.credential, CredentialKind::App);
    // A person's sign-in still needs one.
    let delegated = MailboxDraft {
        name: Some("Person".into()),
        auth: Some("oauth2".into()),
        host: Some("smtp.example.com".into()),
        username: Some("person@example.com".into()),
        client_id: Some("web".into()),
        client_secret: Some(SecretString::from("s3cret")),
        token_url: Some("https://login.example.com/token".into()),
        scopes: Some(vec!["smtp.send".into()]),
        ..MailboxDraft::default()
    };
    assert!(
        errors(delegated, &policy())
            .iter()
            .any(|e| e.field == "authorization_url")
    );
}

#[test]
fn a_national_cloud_sets_the_sign_in_graph_and_smtp_hosts_and_the_scopes_together() {
    let m = resolve_ok(
        MailboxDraft {
            cloud: Some("usgov".into()),
            transport: Some("graph".into()),
            ..microsoft()
        },
        &policy(),
    );
    assert_eq!(
        m.authorization_url.as_deref(),
        Some("https://login.microsoftonline.us/contoso.com/oauth2/v2.0/authorize")
    );
    assert_eq!(
        m.token_url.as_deref(),
        Some("https://login.microsoftonline.us/contoso.com/oauth2/v2.0/token")
    );
    assert_eq!(m.host, "smtp.office365.us");
    assert_eq!(m.graph_url.as_deref(), Some("https://graph.microsoft.us"));
    assert_eq!(m.scopes[0], "https://graph.microsoft.us/Mail.Send");
    let china = resolve_ok(
        MailboxDraft {
            cloud: Some("china".into()),
            credential: Some("app".into()),
            ..microsoft()
        },
        &policy(),
    );
    assert_eq!(china.host, "smtp.partner.outlook.cn");
    assert_eq!(china.scopes, ["https://partner.outlook.cn/.default"]);
    assert!(
        china
            .token_url
            .as_deref()
            .unwrap()
            .starts_with("https://login.chinacloudapi.cn/")
    );
    // A national cloud is Microsoft's alone.
    let found = errors(
        MailboxDraft {
            cloud: Some("usgov".into()),
            provider: Some("google".into()),
            tenant: None,
            ..microsoft()
        },
        &policy(),
    );
    assert!(found.iter().any(|e| e.field == "cloud"), "{found:?}");
    let found = errors(
        MailboxDraft {
            cloud: Some("mars".into()),
            ..microsoft()
        },
        &policy(),
    );
    assert!(found.iter().any(|e| e.field == "cloud"), "{found:?}");
}
