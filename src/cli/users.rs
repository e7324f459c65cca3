//! `herald user add`: a user who signs in to the web UI, with a password typed twice at the
//! terminal or read from standard input.

use anyhow::Context as _;

use super::{UserAdd, input};
use crate::app;
use crate::config::Config;
use crate::domain::Actor;
use crate::services::{self, NewUserInput};

pub(super) async fn add(config: Config, args: UserAdd) -> anyhow::Result<()> {
    let password = if args.password_stdin {
        input::read_stdin_line().context("cannot read the password from standard input")?
    } else {
        input::prompt_new_password()?
    };
    let store = app::open_store(&config).await?;
    let org = services::find_org(&store, &args.org).await?;
    let user = services::create_user(
        &store,
        org.id,
        NewUserInput {
            email: args.email,
            password,
            role: args.role,
        },
        &Actor::cli(),
        crate::clock::system_now(),
    )
    .await?;
    println!(
        "Created {} user {} in {} ({}).",
        user.role.as_str(),
        user.email,
        org.name,
        user.id
    );
    store.close().await;
    Ok(())
}
