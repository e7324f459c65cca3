//! Background jobs a serving instance runs beside delivering; they stop with the outbox.

use crate::access::Access;
use crate::outbox::Outbox;
use crate::services::alerts;
use crate::services::webhooks::Webhooks;

/// Raises the client-secret alerts, e-mails alerts and starts their webhook deliveries; each pass
/// done is counted in [`Outbox::alert_passes`].
pub(super) async fn alerts(access: Access, outbox: Outbox) {
    let mut stopping = outbox.stopping();
    let tuning = outbox.tuning().clone();
    let mut scanned: Option<std::time::Instant> = None;
    let webhooks = Webhooks::new(
        access.store.clone(),
        access.keys.clone(),
        access.http.clone(),
        access.clock.clone(),
    );
    loop {
        if *stopping.borrow() {
            return;
        }
        let now = access.now();
        if scanned.is_none_or(|at| at.elapsed() >= tuning.secret_check) {
            scanned = Some(std::time::Instant::now());
            if let Err(e) = alerts::check_secret_expiry(&access.store, now).await {
                tracing::warn!(error = %e, "could not check client secrets' expiry dates");
            }
        }
        match alerts::email_due(
            &access.store,
            &access.config.outbox,
            &access.config.public_url,
            now,
        )
        .await
        {
            Ok(0) => {}
            Ok(_) => outbox.wake(),
            Err(e) => tracing::warn!(error = %e, "could not email alerts"),
        }
        // Deliveries go on in the background, each organization's apart from the others'.
        if let Err(e) = webhooks.start_due().await {
            tracing::warn!(error = %e, "could not deliver alerts");
        }
        outbox.alert_pass_done();
        tokio::select! {
            _ = tokio::time::sleep(tuning.alert_poll) => {}
            _ = stopping.changed() => {}
        }
    }
}
