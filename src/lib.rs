//! szb-sync keeps a Postgres database in step with the visit records of shangzhibo.tv.
//!
//! Imports point one way, down this list of layers; nothing imports a layer above itself:
//!
//! ```text
//!   cli ─► app ─► daemon, http ─► engine ─┬─► api ───┐
//!                                         ├─► mark ──┼─► domain
//!                                         └─► store ─┘
//!   settings (on domain), secret, error, plural, telemetry: read by any layer
//!   bench: `szb-sync bench`, called by cli; on store, settings and the simulator crate
//! ```
//!
//! The simulator of the upstream is a crate of its own in the workspace, `szb-simulator`
//! (`crates/simulator`): `demo` and `mock-api` serve it, the tests drive it. It depends on
//! nothing of this crate.
//!
//! - [`domain`]: the shared vocabulary (pair, window, visit, activity, entry, mark, run outcome)
//!   and the rules of what a valid visit is.
//! - [`api`]: the upstream client: requests, retries, the request budget, wire types (which never
//!   leave it), typed errors.
//! - [`mark`]: the high-water mark over the offset-paginated list; all of its logic, pure.
//! - [`store`]: Postgres: all SQL outside the migrations and [`bench`], one named file per
//!   statement (`src/store/sql/`), and the code that runs it (sessions, pages, runs, status,
//!   the demo's reads).
//! - [`engine`]: walks each pair's pages, asks the mark what to commit, hands pages to the store.
//! - [`daemon`]: the schedule that turns cron ticks into engine passes, and systemd's
//!   notifications.
//! - [`http`]: the operators' listener: `/metrics`, `/livez`, `/readyz`, the status page.
//! - [`app`]: **where the app is assembled**: [`app::App::build`] makes the store, the client and
//!   the engine from [`settings::Settings`]; [`app::App::run_until_stopped`] is the daemon. The
//!   CLI, the demo, the benchmark and the tests all build through it.
//! - [`cli`]: the `szb-sync` subcommands, one file each; `main.rs` only parses and calls in here.
//! - [`settings`]: layered configuration (defaults, TOML, `SZB_…` environment), validated once;
//!   in parts: types, load, env, keys, validate, targets (user-id and token files), reload.
//! - [`secret`]: a string that never prints (tokens, database URLs).
//! - [`error`]: the cause-chain printer.
//! - [`plural`]: counted nouns (`1 pair`, `2 pairs`) for every message people read.
//! - [`telemetry`]: the one feed of events (API, engine) and its surfaces: log lines, metrics,
//!   the live passes; and the tracing subscriber.
//! - [`bench`]: `szb-sync bench`'s workloads, their runs and their report, and the SQL only
//!   the benchmark runs (the one exception to "all SQL in the store").

pub mod api;
pub mod app;
pub mod bench;
pub mod cli;
pub mod daemon;
pub mod domain;
pub mod engine;
pub mod error;
pub mod http;
pub mod mark;
pub mod plural;
pub mod secret;
pub mod settings;
pub mod store;
pub mod telemetry;

/// Where to report a bug of szb-sync: the issues of the repository in Cargo.toml.
pub const ISSUES_URL: &str = concat!(env!("CARGO_PKG_REPOSITORY"), "/issues");
