//! `herald org`: add, list, and the settings only the operator decides.

use super::{Allowance, OrgCommand};
use crate::app;
use crate::config::{Config, DefaultSenderOrgs};
use crate::domain::Actor;
use crate::services;

pub(super) async fn run(config: Config, cmd: OrgCommand) -> anyhow::Result<()> {
    let store = app::open_store(&config).await?;
    match cmd {
        OrgCommand::Add { name } => {
            let org =
                services::create_org(&store, &name, &Actor::cli(), crate::clock::system_now())
                    .await?;
            println!("{}", org.id);
        }
        OrgCommand::List => {
            for org in services::lookup::orgs(&store).await? {
                println!("{}\t{}", org.id, org.name);
            }
        }
        OrgCommand::Set {
            org,
            default_sender,
        } => {
            let org = services::find_org(&store, &org).await?;
            let Some(choice) = default_sender else {
                anyhow::bail!(
                    "nothing to change: give --default-sender allow or --default-sender deny"
                );
            };
            let allowed = choice == Allowance::Allow;
            services::default_sender::set_allowed(
                &store,
                org.id,
                allowed,
                &Actor::cli(),
                crate::clock::system_now(),
            )
            .await?;
            let scope = match config.outbox.default_sender_orgs {
                DefaultSenderOrgs::Listed => "",
                DefaultSenderOrgs::All => {
                    " (HERALD_DEFAULT_SENDER_ORGS=all serves every organization regardless)"
                }
            };
            println!(
                "The default sender {} for {}{scope}.",
                if allowed {
                    "now sends"
                } else {
                    "no longer sends"
                },
                org.name
            );
        }
    }
    store.close().await;
    Ok(())
}
