//! The integration tests, one binary: each module drives szb-sync against a real Postgres (a
//! fresh database per test) and the built-in simulator, and asserts on the rows in the tables.
//!
//! - [`analyst`]: column comments, the views against values computed from the visits, the
//!   column lists and SQL examples of docs/tables.md, the read-only role recipe,
//!   `database.schema`;
//! - [`cli`]: the day-two commands: `status` exit codes and `--json`, `sync --only`, `rejects`,
//!   a closed stdout, completions and man pages as committed, each subcommand's `--help`;
//! - [`deploy`]: the systemd unit (verified, its sandbox scored), `check --offline`, the Debian
//!   package, the compose file, the image's build context, the alert rules and the dashboard;
//! - [`docs`]: the README and docs/: every relative link and anchor resolves, every page is
//!   linked from the README, the README stays short;
//! - [`kubernetes`]: the manifests: the ConfigMap through `check --offline`, the sandbox and
//!   probes, `kubernetes-validate`;
//! - [`http`]: the listener: metrics through promtool, health, the status page in Chromium;
//! - [`sync`]: what lands in the tables, quiet resyncs, resumes, resync;
//! - [`upstream_changes`]: open visits, purges, appends, ties, activity changes;
//! - [`faults`]: a misbehaving upstream, a Postgres that goes away, races, hostile items;
//! - [`hostile_bodies`]: huge, trickling and hanging answers, a token echoed, a Date far ahead;
//! - [`hostile_strings`]: strings Postgres cannot store, repaired or rejected, never blocking;
//! - [`process`]: the real binary as a child process: kills, signals, each subcommand;
//! - [`listener`]: the listener's own pool, estimated totals, the `Host` check, `http.token`,
//!   security headers, and error bodies that name nothing of the database;
//! - [`leases`]: replicas in one process: leases held, expired, taken over and renewed;
//! - [`migrations`]: upgrading a database that holds rows the new constraints refuse;
//! - [`partition`]: the database behind a partition or a failover ([`proxy`]): no hang;
//! - [`pace`]: fetching ahead, pairs in parallel, and the controller behind a rate limit;
//! - [`schedule`]: the adaptive schedule: busy viewers checked between ticks, dormant ones once
//!   a tick, replicas sharing the due checks;
//! - [`setup`]: a newcomer's path: config/demo.toml against mock-api, a missing database or
//!   config file, `check` as a quick probe, the demo kept off the configured database.
//!
//! The property test over random upstream histories is its own binary, `tests/property.rs`.

mod analyst;
mod cli;
mod deploy;
mod docs;
mod faults;
mod helpers;
mod hostile_bodies;
mod hostile_strings;
mod http;
mod kubernetes;
mod leases;
mod listener;
mod migrations;
mod pace;
mod partition;
mod process;
mod proxy;
mod schedule;
mod setup;
mod sync;
mod upstream_changes;
