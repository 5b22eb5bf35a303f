//! szb-sync keeps a Postgres database in step with the visit records of shangzhibo.tv.
//!
//! Data flows one way, coordinated by the engine:
//!
//! ```text
//!   settings ──► engine ──► api (HTTP, wire types) ──► domain (validated Visit/Activity)
//!                  │                                        │
//!                  ├──► mark (pure: where the walk starts, ▼ how far it may commit)
//!                  └──────────────────────────────────► store (SQL, one transaction per page)
//! ```
//!
//! - [`settings`]: layered configuration (defaults, TOML, `SZB_…` environment), validated once.
//! - [`telemetry`]: tracing subscriber setup.
//! - [`secret`]: a string that never prints (tokens, database URLs).
//! - [`api`]: the upstream client: requests, retries, rate budget, wire types, typed errors.
//! - [`domain`]: what a visit and an activity are once validated, and what a list entry is.
//! - [`mark`]: the high-water mark over the offset-paginated list; all of its logic lives here.
//! - [`store`]: Postgres: migrations, batched upserts, marks, runs, rejects, per-pair locks.
//! - [`engine`]: walks each pair's pages, asks the mark what to commit, hands pages to the store.
//! - [`scheduler`]: runs the engine on the cron schedule, never two runs at once.
//! - [`simulator`]: a built-in implementation of the upstream endpoint, for the demo and tests.
//! - [`cli`]: the `szb-sync` subcommands; `main.rs` only parses and calls in here.
//! - [`demo`]: the `demo` subcommand: simulator → sync → sample query.

pub mod api;
pub mod cli;
pub mod demo;
pub mod domain;
pub mod engine;
pub mod mark;
pub mod scheduler;
pub mod secret;
pub mod settings;
pub mod simulator;
pub mod store;
pub mod telemetry;
