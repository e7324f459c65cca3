//! Herald: a self-hosted outgoing-mail gateway.
//!
//! Organizations connect sending mailboxes (Microsoft 365, Google, any SMTP server) with OAuth
//! 2.0 or basic auth; their applications send through them over HTTP. The modules, from the
//! inside out:
//!
//! - [`domain`]: types and rules, no I/O;
//! - [`secrets`] and [`crypto`]: sealing, tokens, password hashes;
//! - [`store`]: the database (SQLite or PostgreSQL) and its migrations;
//! - [`keys`]: the master key ring, its start-up check and rotation;
//! - [`services`]: the operations the CLI and the web layer share (create a user, issue a key),
//!   each with its audit event;
//! - [`outbox`]: accepting mail durably and delivering it through mailboxes, within limits;
//! - [`relay`]: the SMTP relay that lets password-only devices send through OAuth2 mailboxes;
//! - [`web`]: the HTTP API, the web UI and sign-in;
//! - [`app`]: the composition root that wires configuration, store and services into a server;
//! - [`cli`]: the `herald` command.

pub mod access;
pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod domain;
pub mod keys;
pub mod metrics;
pub mod net;
pub mod oauth;
pub mod outbox;
pub mod relay;
pub mod sandbox;
pub mod secrets;
pub mod services;
pub mod smtp;
pub mod smtp_server;
pub mod store;
pub mod tls;
pub mod web;
