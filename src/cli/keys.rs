//! `herald keys`: generate a master key, or rotate to a new one.

use anyhow::Context as _;
use secrecy::ExposeSecret as _;

use super::input;
use crate::app::{self, KeySource};
use crate::config::Config;

/// Prints a new random master key, for `HERALD_MASTER_KEY`.
pub(super) fn generate() {
    println!("{}", app::new_master_key());
}

pub(super) async fn rotate(config: Config, new_key_stdin: bool, force: bool) -> anyhow::Result<()> {
    let new_key = if new_key_stdin {
        let raw =
            input::read_stdin_line().context("cannot read the new key from standard input")?;
        Some(raw)
    } else {
        None
    };
    let rotation = app::rotate_master_key(
        &config,
        new_key.as_ref().map(|raw| raw.expose_secret()),
        force,
    )
    .await?;
    let old: Vec<String> = rotation
        .old_key_ids
        .iter()
        .map(ToString::to_string)
        .collect();
    println!(
        "Re-sealed {} secret(s) under master key {}; retired {}.",
        rotation.resealed,
        rotation.new_key.id(),
        old.join(", ")
    );
    match rotation.source {
        KeySource::File(path) => println!(
            "The key file {} now holds only the new key.",
            path.display()
        ),
        KeySource::Environment => println!(
            "Set HERALD_MASTER_KEY to the new key and restart every Herald instance: the old key no longer opens anything."
        ),
    }
    Ok(())
}
