//! What a reload (SIGHUP) cannot apply to a running daemon: the keys whose values changed,
//! compared as typed values. Secrets compare by value and are never printed.

use super::{ApiSettings, DatabaseSettings, HttpSettings, ScheduleSettings, Settings};

impl Settings {
    /// The keys whose change a reload (SIGHUP) cannot apply to a running daemon: everything but
    /// the targets and the tokens, which the next pass takes.
    pub fn restart_needed_for(&self, next: &Settings) -> Vec<&'static str> {
        // Taken apart whole, so that a key added to these sections cannot be left out here.
        let DatabaseSettings {
            url,
            max_connections,
            schema,
            statement_timeout,
            synchronous_commit,
        } = &self.database;
        let db = &next.database;
        let ScheduleSettings { cron } = &self.schedule;
        let HttpSettings {
            listen,
            token: _,
            token_file: _,
        } = &self.http;
        [
            ("database.url", *url != db.url),
            ("database.schema", *schema != db.schema),
            (
                "database.max_connections",
                *max_connections != db.max_connections,
            ),
            (
                "database.statement_timeout",
                *statement_timeout != db.statement_timeout,
            ),
            (
                "database.synchronous_commit",
                *synchronous_commit != db.synchronous_commit,
            ),
            (
                "[api] (other than tokens)",
                without_tokens(&self.api) != without_tokens(&next.api),
            ),
            ("schedule.cron", *cron != next.schedule.cron),
            ("[sync]", self.sync != next.sync),
            ("http.listen", *listen != next.http.listen),
            // The token itself, wherever it is written: `token`, or the file of `token_file`.
            ("http.token", self.http.token() != next.http.token()),
        ]
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect()
    }
}

/// `[api]` without its tokens, which the next pass takes.
fn without_tokens(api: &ApiSettings) -> ApiSettings {
    ApiSettings {
        token: None,
        token_file: None,
        ..api.clone()
    }
}
