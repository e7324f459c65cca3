//! `herald apikey`: add (the key printed once), list (never the keys), revoke.

use anyhow::bail;

use super::ApiKeyCommand;
use crate::app;
use crate::config::Config;
use crate::domain::{Actor, ApiKeyId};
use crate::services;

fn parse_key_id(raw: &str) -> anyhow::Result<ApiKeyId> {
    raw.trim().parse().map_err(|_| {
        anyhow::anyhow!("`{raw}` is not an API key id (a UUID, as printed by `herald apikey list`)")
    })
}

pub(super) async fn run(config: Config, cmd: ApiKeyCommand) -> anyhow::Result<()> {
    if let ApiKeyCommand::Revoke { id } = &cmd {
        parse_key_id(id)?;
    }
    let store = app::open_store(&config).await?;
    match cmd {
        ApiKeyCommand::Add {
            org,
            role,
            name,
            mailboxes,
        } => {
            let org = services::find_org(&store, &org).await?;
            let (key, token) = services::create_api_key(
                &store,
                org.id,
                &name,
                &role,
                &mailboxes,
                &Actor::cli(),
                crate::clock::system_now(),
            )
            .await?;
            println!(
                "Created {} API key \"{}\" ({}) for {}.",
                key.role.as_str(),
                key.name,
                key.id,
                org.name
            );
            println!("Store this key now; Herald keeps only its digest and cannot show it again:");
            println!("{}", token.expose());
        }
        ApiKeyCommand::List { org } => {
            let org = services::find_org(&store, &org).await?;
            let mut after = None;
            loop {
                let page = services::views::api_keys(&store, org.id, after.as_deref(), 200).await?;
                for key in &page.items {
                    let state = if key.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "live"
                    };
                    println!(
                        "{}\t{}…\t{}\t{}\t{}",
                        key.id,
                        key.prefix,
                        key.role.as_str(),
                        state,
                        key.name
                    );
                }
                match page.next_cursor {
                    Some(cursor) => after = Some(cursor),
                    None => break,
                }
            }
        }
        ApiKeyCommand::Revoke { id } => {
            let id = parse_key_id(&id)?;
            let Some(key) = services::lookup::api_key(&store, id).await? else {
                bail!("no API key has the id {id}");
            };
            let key = services::revoke_api_key(
                &store,
                key.org_id,
                id,
                &Actor::cli(),
                crate::clock::system_now(),
            )
            .await?;
            println!("Revoked API key \"{}\" ({}…).", key.name, key.prefix);
        }
    }
    store.close().await;
    Ok(())
}
