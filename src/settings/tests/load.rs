//! Loading: the defaults, the file, the environment, and the default paths.

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use super::{error, load};
use crate::secret::redact_url;
use crate::settings::{Settings, SettingsError};

#[test]
fn defaults_are_the_documented_values() {
    let s = Settings::load_from(None, &[]).unwrap();

    assert_eq!(
        s.database.url.expose(),
        "postgres://root@127.0.0.1:5432/szb"
    );
    assert_eq!(s.database.max_connections, None);
    assert_eq!(s.pool_size(), 18, "sync.concurrency 16 + 2");
    assert_eq!(s.api.base_url.as_str(), "https://shangzhibo.tv/");
    assert!(s.api.token.is_none() && s.api.token_file.is_none());
    assert_eq!(s.api.page_size, 1000);
    assert_eq!(s.api.timeout, Duration::from_secs(30));
    assert_eq!(s.api.max_retries, 5);
    assert_eq!(s.api.retry_backoff, Duration::from_millis(500));
    assert_eq!(s.api.max_retry_after, Duration::from_secs(300));
    assert_eq!(s.api.max_concurrency, 16);
    assert_eq!(s.api.max_requests_per_second, None);
    assert_eq!(s.api.read_timeout, Duration::from_secs(10));
    assert_eq!(s.api.max_body_bytes, 4_194_304);
    assert_eq!(s.api.max_body_bytes_in_flight, 33_554_432);
    assert!(!s.api.allow_insecure_http);
    assert_eq!(s.schedule.cron, "0 */10 * * * *");
    assert_eq!(s.sync.settle_after, Duration::from_secs(7200));
    assert_eq!(s.sync.concurrency, 16);
    assert_eq!(s.sync.fetch_ahead, 4);
    assert_eq!(s.sync.keep_runs, Duration::from_secs(30 * 86_400));
    assert!(s.targets.is_empty());
    assert!(Settings::default().validate().is_ok());
}

#[test]
fn toml_overrides_the_defaults() {
    let s = load(
        r#"
        [database]
        url = "postgres://app@db/szb"
        [api]
        token = "t"
        page_size = 200
        timeout = "1m 30s"
        max_requests_per_second = 2
        [schedule]
        cron = "30 0 * * * *"
        [sync]
        settle_after = "45m"
        concurrency = 8
        [[targets]]
        agent_id = 105131
        user_ids = [15460259, 15460260]
        [[targets]]
        agent_id = 7
        user_ids = [8]
        token = "own"
        activity_id = "act-1"
        "#,
    )
    .unwrap();

    assert_eq!(s.database.url.expose(), "postgres://app@db/szb");
    assert_eq!(s.database.max_connections, None);
    assert_eq!(s.api.page_size, 200);
    assert_eq!(s.api.timeout, Duration::from_secs(90));
    assert_eq!(s.api.max_requests_per_second, Some(2.0));
    assert_eq!(s.schedule.cron, "30 0 * * * *");
    assert_eq!(s.sync.settle_after, Duration::from_secs(45 * 60));
    assert_eq!(s.sync.concurrency, 8);
    assert_eq!(s.targets.len(), 2);
    assert_eq!(s.targets[1].activity_id.as_deref(), Some("act-1"));
}

#[test]
fn environment_overrides_the_file_with_double_underscore_nesting() {
    let toml = "[api]\npage_size = 10\ntoken = \"from-file\"\n[sync]\nconcurrency = 2\n";
    let env = [
        ("SZB_API__PAGE_SIZE", "20"),
        ("SZB_API__TOKEN", "12345"),
        ("SZB_SYNC__SETTLE_AFTER", "90m"),
        ("SZB_SCHEDULE__CRON", "0 0 * * * *"),
        ("SZB_API__ALLOW_INSECURE_HTTP", "true"),
        ("SZB_TOKEN_FILE", "not ours: docker-compose.yml's"),
        ("UNRELATED", "x"),
    ];

    let s = Settings::load_from(Some(toml), &env).unwrap();

    assert_eq!(s.api.page_size, 20);
    assert_eq!(s.api.token.as_ref().unwrap().expose(), "12345");
    assert_eq!(s.sync.settle_after, Duration::from_secs(90 * 60));
    assert_eq!(s.sync.concurrency, 2);
    assert_eq!(s.schedule.cron, "0 0 * * * *");
    assert!(s.api.allow_insecure_http);
}

#[test]
fn szb_database_url_beats_database_url_beats_the_file() {
    let toml = "[database]\nurl = \"postgres://file/szb\"\n";
    let plain = ("DATABASE_URL", "postgres://plain/szb");
    let szb = ("SZB_DATABASE__URL", "postgres://szb/szb");

    let file_only = Settings::load_from(Some(toml), &[]).unwrap();
    let with_plain = Settings::load_from(Some(toml), &[plain]).unwrap();
    let with_both = Settings::load_from(Some(toml), &[szb, plain]).unwrap();

    assert_eq!(file_only.database.url.expose(), "postgres://file/szb");
    assert_eq!(with_plain.database.url.expose(), "postgres://plain/szb");
    assert_eq!(with_both.database.url.expose(), "postgres://szb/szb");
}

#[test]
fn targets_can_come_from_the_environment() {
    let env = [
        ("SZB_API__TOKEN", "t"),
        ("SZB_TARGETS", "[{agent_id=1, user_ids=[2, 3]}]"),
    ];

    let s = Settings::load_from(None, &env).unwrap();

    assert_eq!(s.targets.len(), 1);
    assert_eq!(s.targets[0].user_ids, vec![2, 3]);
}

#[test]
fn unknown_keys_are_refused_naming_key_and_section() {
    let msg = error("[api]\npagesize = 10\n");
    assert!(msg.contains("unknown key `api.pagesize` in [api]"), "{msg}");
    assert!(msg.contains("page_size"), "{msg}");

    let msg = error("[[targets]]\nagent_id = 1\nuser_ids = [2]\nuser = 3\n");
    assert!(
        msg.contains("unknown key `targets[0].user` in [targets[0]]"),
        "{msg}"
    );

    let msg = error("[databse]\nurl = \"postgres://x/y\"\n");
    assert!(
        msg.contains("unknown key `databse` at the top level"),
        "{msg}"
    );

    let msg = Settings::load_from(None, &[("SZB_API__PAGESIZE", "1")])
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("`api.pagesize`") && msg.contains("SZB_API__PAGESIZE"),
        "{msg}"
    );
}

#[test]
fn a_wrong_type_names_the_key_and_the_variable() {
    let msg = Settings::load_from(None, &[("SZB_API__PAGE_SIZE", "x")])
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("config error at api.page_size: invalid type"),
        "{msg}"
    );
    assert!(msg.contains("SZB_API__PAGE_SIZE"), "{msg}");
}

#[test]
fn a_wrong_type_in_a_file_names_the_key_and_the_file() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(file, "[api]\npage_size = \"x\"").unwrap();

    let msg = Settings::load_with_env(Some(file.path()), vec![])
        .unwrap_err()
        .to_string();

    assert!(
        msg.contains(r#"config error at api.page_size: invalid type: found string "x""#),
        "{msg}"
    );
    assert!(msg.contains(&file.path().display().to_string()), "{msg}");
}

#[test]
fn an_explicit_config_path_must_exist() {
    let msg = Settings::load(Some(Path::new("/nonexistent/szb.toml")))
        .unwrap_err()
        .to_string();
    assert_eq!(msg, "config file /nonexistent/szb.toml not found");
}

#[test]
fn no_targets_loads_but_sync_commands_refuse() {
    let s = Settings::load_from(None, &[]).unwrap();
    assert!(s.pairs().unwrap().is_empty());
    assert!(matches!(s.require_targets(), Err(SettingsError::NoTargets)));
}

#[test]
fn the_shipped_config_files_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    // The example leaves the token to the user: from the environment here.
    let token = vec![("SZB_API__TOKEN".to_owned(), "t0ken".to_owned())];
    let example = Settings::load_with_env(Some(&dir.join("example.toml")), token).unwrap();
    assert_eq!(example.targets.len(), 2);
    let demo = Settings::load_with_env(Some(&dir.join("demo.toml")), vec![]).unwrap();
    assert_eq!(demo.pairs().unwrap().len(), 3);
    assert!(
        demo.database.url.expose().ends_with("/szb_demo"),
        "{}",
        redact_url(demo.database.url.expose())
    );
    // `run` with the demo config serves the status page (docs: the first real sync).
    assert_eq!(
        demo.http.listen,
        Some("127.0.0.1:9187".parse().unwrap()),
        "the demo config has an [http] listener"
    );
}

#[test]
fn the_example_leaves_the_token_to_the_user() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let token_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token_file.path(), "t0ken\n").unwrap();
    let env = vec![(
        "SZB_API__TOKEN_FILE".to_owned(),
        token_file.path().display().to_string(),
    )];

    let example = Settings::load_with_env(Some(&dir.join("example.toml")), env);

    assert!(example.is_ok(), "{}", example.unwrap_err());
}

#[test]
fn a_missing_default_config_file_is_an_error_unless_the_environment_sets_the_targets() {
    let dir = tempfile::tempdir().unwrap();
    let default = dir.path().join("config/szb-sync.toml");
    let system = dir.path().join("etc/szb-sync/szb-sync.toml");
    let cwd = std::env::current_dir().unwrap();

    let msg = Settings::load_with_default(None, &default, &system, true, vec![])
        .unwrap_err()
        .to_string();
    let optional = Settings::load_with_default(None, &default, &system, false, vec![]);
    let from_env = Settings::load_with_default(
        None,
        &default,
        &system,
        true,
        vec![
            ("SZB_API__TOKEN".into(), "t".into()),
            ("SZB_TARGETS".into(), "[{agent_id=1,user_ids=[2]}]".into()),
        ],
    );

    assert_eq!(
        msg,
        format!(
            "no config file: expected {} (the default path, relative to the working \
             directory {}) or {} (the package's). Pass --config FILE, copy \
             config/example.toml there, or set SZB_TARGETS",
            default.display(),
            cwd.display(),
            system.display()
        )
    );
    assert_eq!(from_env.unwrap().targets.len(), 1);
    assert!(
        optional.unwrap().targets.is_empty(),
        "demo and bench need no file"
    );

    // With no file in the working directory, the package's file is read.
    std::fs::create_dir_all(system.parent().unwrap()).unwrap();
    std::fs::write(
        &system,
        "[api]\ntoken = \"t\"\n[[targets]]\nagent_id = 7\nuser_ids = [8]\n",
    )
    .unwrap();
    let packaged = Settings::load_with_default(None, &default, &system, true, vec![]).unwrap();
    assert_eq!(packaged.targets[0].agent_id, 7);
    // And the working directory's file comes first.
    std::fs::create_dir_all(default.parent().unwrap()).unwrap();
    std::fs::write(
        &default,
        "[api]\ntoken = \"t\"\n[[targets]]\nagent_id = 9\nuser_ids = [8]\n",
    )
    .unwrap();
    let local = Settings::load_with_default(None, &default, &system, true, vec![]).unwrap();
    assert_eq!(local.targets[0].agent_id, 9);
}
