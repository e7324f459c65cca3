//! Herald's integration tests, compiled into one binary. Each test runs the real application
//! over real HTTP on a random port with a database of its own: SQLite by default, PostgreSQL
//! when `TEST_POSTGRES_URL` is set (the README's test command runs the suite both ways).

mod alerts;
mod api;
mod app_only;
mod authorization;
pub(crate) mod backup;
mod cancel;
mod certificates;
mod changes;
mod cli;
mod correlation;
pub(crate) mod crash;
mod device_code;
mod doctor;
mod floods;
mod from_rule;
mod google;
mod graph;
mod graph_large;
mod helpers;
mod http_limits;
mod instances;
mod isolation;
mod keepalive;
mod mailboxes;
mod metrics;
mod migrate_to_postgres;
mod org_limits;
mod outbox;
mod relay;
mod repointing;
mod sandbox_app;
mod sandbox_graph;
mod sandbox_oauth;
mod sandbox_smtp;
mod secret_life;
mod secrets;
mod smtp_server;
mod ui_alerts;
mod ui_messages;
mod ui_relay;
mod web_auth;
