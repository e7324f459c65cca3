//! What the command line asks of the installation outside serving: deliver from this process
//! while no instance serves, and the master key's commands.

use crate::access::Access;
use crate::config::Config;
use crate::keys;
pub use crate::keys::{KeySource, Rotation};
use crate::outbox::{Outbox, Tuning};
use crate::secrets::MasterKey;

/// An outbox delivering from this process (`herald send --wait` when no instance serves), its
/// dispatcher started; it keeps no connection open between messages.
pub fn local_outbox(access: &Access) -> (Outbox, tokio::task::JoinHandle<()>) {
    let outbox = Outbox::new(
        access.clone(),
        Tuning {
            linger: std::time::Duration::ZERO,
            ..Default::default()
        },
        format!("cli-{}", uuid::Uuid::now_v7()),
    );
    let dispatcher = outbox.start();
    (outbox, dispatcher)
}

/// A new random master key, base64, for `HERALD_MASTER_KEY`.
pub fn new_master_key() -> String {
    MasterKey::generate().to_base64().as_str().to_owned()
}

/// Re-seals every secret under a new master key (`new_key`, base64, or a generated one).
pub async fn rotate_master_key(
    config: &Config,
    new_key: Option<&str>,
    force: bool,
) -> anyhow::Result<Rotation> {
    let new_key = new_key
        .map(|raw| keys::parse_key(raw).map_err(|e| anyhow::anyhow!("the new key {e}")))
        .transpose()?;
    let store = super::open_store(config).await?;
    let rotation = keys::rotate(config, &store, new_key, force, crate::clock::system_now()).await;
    store.close().await;
    Ok(rotation?)
}
