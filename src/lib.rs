//! Herald: a self-hosted outgoing-mail gateway.
//!
//! Organizations connect sending mailboxes (Microsoft 365, Google, any SMTP server) with OAuth
//! 2.0 or basic auth; their applications send through them over HTTP or an SMTP relay. The
//! modules, from the inside out (each imports only those above it; `tests/architecture.rs`
//! holds the code to this order):
//!
//! - [`domain`]: types and rules, no I/O: mailboxes, providers and their presets, limits,
//!   messages and SMTP replies, users and keys;
//! - [`clock`]: the time, read in one place;
//! - [`crypto`]: random tokens, digests, password hashes;
//! - [`tls`]: a local CA and certificates for Herald's own listeners;
//! - [`net`]: which addresses Herald may connect to (the SSRF guard);
//! - [`metrics`]: the Prometheus metrics;
//! - [`trace`]: the W3C trace a request belongs to (`traceparent`), carried to providers;
//! - [`secrets`]: sealing with the master key ring;
//! - [`store`]: the database (SQLite or PostgreSQL) and its migrations;
//! - [`oauth`]: the OAuth 2.0 client, discovery documents and the providers' error codes;
//! - [`smtp`]: the SMTP client and its reply classification;
//! - [`smtp_server`]: an SMTP server (the sandbox's and the relay's);
//! - [`sandbox`]: a stand-in for Microsoft (sign-in and SMTP), for demos and tests;
//! - [`config`]: the configuration file and `HERALD_*` environment, validated;
//! - [`keys`]: the master key ring, its start-up check and rotation;
//! - [`access`]: a mailbox's live access: credential, tokens, transport, status;
//! - [`outbox`]: the queue's workers: dispatch, delivery, throttle, the message composer;
//! - [`services`]: the use cases (accounts, mailboxes, authorization, sending, alerts, relay
//!   credentials), each with its audit event;
//! - [`relay`]: the SMTP relay that lets password-only devices send through mailboxes;
//! - [`web`]: the HTTP API, the web UI and sign-in;
//! - [`app`]: the composition root that wires them into a server, and its background jobs;
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
pub mod trace;
pub mod web;
