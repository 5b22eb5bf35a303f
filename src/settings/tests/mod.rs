//! The settings' tests, one file per part, with one copy of their helpers here.

use super::{Settings, SettingsError};

mod keys;
mod load;
mod reload;
mod targets;
mod validate;

/// Settings from a TOML string and no environment.
fn load(toml: &str) -> Result<Settings, SettingsError> {
    Settings::load_from(Some(toml), &[])
}

/// The message of settings that must be refused.
fn error(toml: &str) -> String {
    load(toml)
        .expect_err("settings should be refused")
        .to_string()
}

/// A token that must never be printed.
const TOKEN: &str = "tok-SECRET-4711";
