//! Where the settings come from: the file (given, or found at one of two default paths) and the
//! environment, layered into a figment, then extracted, the token file read, and validated.

use std::path::Path;

use figment::Figment;
use figment::providers::{Format, Toml};

use super::env::{self, with_env};
use super::report::describe_figment_error;
use super::targets::{name_token_sources, read_token_file, token_places};
use super::{Settings, SettingsError};

/// The configuration file used when none is given, relative to the working directory.
pub const DEFAULT_CONFIG_PATH: &str = "config/szb-sync.toml";

/// Read when [`DEFAULT_CONFIG_PATH`] is absent: where the Debian package puts the configuration,
/// so day-two commands (`status`, `rejects`, `resync`) on a packaged host need no `--config`.
pub const SYSTEM_CONFIG_PATH: &str = "/etc/szb-sync/szb-sync.toml";

/// The process environment, as far as it is text.
fn process_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

impl Settings {
    /// Loads defaults, the TOML file and the process environment (see the module doc), then
    /// validates. An explicit `path` must exist; without one, [`DEFAULT_CONFIG_PATH`] or else
    /// [`SYSTEM_CONFIG_PATH`] must, unless the environment sets the targets (`SZB_TARGETS`): a
    /// unit or a container configured by variables alone.
    pub fn load(path: Option<&Path>) -> Result<Self, SettingsError> {
        Self::load_with_env(path, process_env())
    }

    /// Like [`Settings::load`], but without `path` and with neither default file, it takes the
    /// defaults and the environment: for the commands that need no configuration (`demo`,
    /// `bench`).
    pub fn load_optional(path: Option<&Path>) -> Result<Self, SettingsError> {
        Self::load_with_default(
            path,
            Path::new(DEFAULT_CONFIG_PATH),
            Path::new(SYSTEM_CONFIG_PATH),
            false,
            process_env(),
        )
    }

    /// Like [`Settings::load`], but from a TOML string and the given variables instead of a file
    /// and the process environment. For tests.
    pub fn load_from(toml: Option<&str>, env: &[(&str, &str)]) -> Result<Self, SettingsError> {
        let mut figment = Figment::new();
        if let Some(toml) = toml {
            figment = figment.merge(Toml::string(toml));
        }
        let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
        Self::from_figment(with_env(figment, env.collect())?)
    }

    pub(super) fn load_with_env(
        path: Option<&Path>,
        env: Vec<(String, String)>,
    ) -> Result<Self, SettingsError> {
        Self::load_with_default(
            path,
            Path::new(DEFAULT_CONFIG_PATH),
            Path::new(SYSTEM_CONFIG_PATH),
            true,
            env,
        )
    }

    /// The file to read: `path`, else `default`, else `system`. With none of them, `required`
    /// (and no targets from the environment) is the error that names the files expected;
    /// otherwise the defaults and the environment alone.
    pub(super) fn load_with_default(
        path: Option<&Path>,
        default: &Path,
        system: &Path,
        required: bool,
        env: Vec<(String, String)>,
    ) -> Result<Self, SettingsError> {
        let file = match path {
            Some(path) if !path.exists() => return Err(SettingsError::FileNotFound(path.into())),
            Some(path) => Some(path.to_path_buf()),
            None if default.is_file() => Some(default.to_path_buf()),
            None if system.is_file() => Some(system.to_path_buf()),
            None if !required || env::sets_targets(&env) => None,
            None => {
                let cwd = std::env::current_dir().unwrap_or_default();
                return Err(SettingsError::NoConfigFile {
                    expected: cwd.join(default),
                    cwd,
                    system: system.to_path_buf(),
                });
            }
        };
        let mut figment = Figment::new();
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        Self::from_figment(with_env(figment, env)?)
    }

    /// Extracts settings from a fully layered figment (defaults fill whatever it lacks), reads
    /// `api.token_file`, and validates.
    pub fn from_figment(figment: Figment) -> Result<Self, SettingsError> {
        let mut settings: Settings = figment.extract().map_err(describe_figment_error)?;
        // With both set, validation refuses the pair; the file is not even read.
        if let (Some(path), None) = (&settings.api.token_file, &settings.api.token) {
            settings.file_token = Some(read_token_file(path)?);
        }
        settings
            .validate()
            .map_err(|e| name_token_sources(e, &figment))?;
        settings.token_places = token_places(&settings, &figment);
        Ok(settings)
    }
}
