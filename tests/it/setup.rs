//! The path from a clone to a running sync, as a newcomer walks it: the shipped
//! `config/demo.toml` against `szb-sync mock-api`, a database that does not exist yet, a missing
//! config file, `check` against an unreachable platform, and the demo kept off real data.

use sqlx::{Connection, PgConnection};
use szb_simulator::demo_world;

use crate::helpers::{AGENT, TOKEN, TestDb, repo, sim_with};
use crate::process::{DropDatabase, Tgt, announced_url, config, finish, run, szb, with_config};

/// The simulator seed of this module's worlds.
const SEED: u64 = 41;

/// A database name on the test server that nothing created, dropped when the test ends.
fn missing_database(admin: &TestDb, prefix: &str) -> (String, DropDatabase) {
    let name = format!("{prefix}_{}_{}", std::process::id(), rand::random::<u32>());
    let mut url = url::Url::parse(&admin.url).unwrap();
    url.set_path(&name);
    let cleanup = DropDatabase {
        admin_url: admin.url.clone(),
        name: name.clone(),
    };
    (url.to_string(), cleanup)
}

async fn database_exists(admin: &TestDb, url: &str) -> bool {
    let name = url::Url::parse(url).unwrap().path()[1..].to_owned();
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&admin.pool)
        .await
        .unwrap()
}

async fn count(url: &str, sql: &'static str) -> i64 {
    let mut conn = PgConnection::connect(url).await.unwrap();
    let n = sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    n
}

/// A port nothing listens on, held for as long as the socket lives: bound, never listening,
/// so a connection is refused and no other test can take the port meanwhile.
fn closed_port() -> (tokio::net::TcpSocket, u16) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = socket.local_addr().unwrap().port();
    (socket, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_database_is_named_with_how_to_create_it_and_migrate_creates_it() {
    let sim = sim_with(SEED, &[(1, 12)]);
    let server = sim.spawn().await.unwrap();
    let admin = TestDb::new().await;
    let (url, _cleanup) = missing_database(&admin, "newcomer_szb");
    let name = url::Url::parse(&url).unwrap().path()[1..].to_owned();
    let cfg = config(&server.base_url, &url, 100, &[Tgt(AGENT, TOKEN, &[1])]);

    let check = run(&with_config(&cfg, "check")).await;
    let status = run(&with_config(&cfg, "status")).await;
    let sync = run(&with_config(&cfg, "sync")).await;
    let plain_migrate = run(&with_config(&cfg, "migrate")).await;
    let create = [
        "--config",
        cfg.path().to_str().unwrap(),
        "migrate",
        "--create-database",
    ];
    let migrate = run(&create).await;
    let again = run(&create).await;
    let sync_after = run(&with_config(&cfg, "sync")).await;

    // The hint repeats the --config given: run as printed, it reads the same file.
    let says_how = format!(
        "database \"{name}\" does not exist; create it with `szb-sync --config {} migrate \
         --create-database` or createdb",
        cfg.path().display()
    );
    for (what, out) in [
        ("check", &check),
        ("status", &status),
        ("sync", &sync),
        ("migrate", &plain_migrate),
    ] {
        assert!(!out.status.success(), "{what}: {out:?}");
        assert!(out.both().contains(&says_how), "{what}: {out:?}");
        assert!(!out.both().contains("at line"), "{what}: {out:?}");
        assert!(
            !out.both().contains("error returned from database"),
            "{what}: {out:?}"
        );
    }
    assert!(migrate.status.success(), "{migrate:?}");
    assert!(
        migrate.stdout.contains("created the database") && migrate.stdout.contains(&name),
        "{migrate:?}"
    );
    assert!(again.status.success(), "{again:?}");
    assert!(!again.stdout.contains("created"), "{again:?}");
    assert!(sync_after.status.success(), "{sync_after:?}");
    assert_eq!(count(&url, "SELECT count(*) FROM visits").await, 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_is_one_quick_attempt_per_agent_naming_what_failed() {
    let admin = TestDb::new().await;
    let (_closed, port) = closed_port();
    let base_url = format!("http://127.0.0.1:{port}");
    // Retries that would take minutes if check used them.
    let mut toml = format!(
        "[database]\nurl = {:?}\n[api]\nbase_url = {base_url:?}\nmax_retries = 6\n\
         retry_backoff = \"10s\"\n",
        admin.url
    );
    for agent in [105_131, 200_001] {
        toml.push_str(&format!(
            "[[targets]]\nagent_id = {agent}\nuser_ids = [1, 2]\ntoken = \"t-{agent}\"\n"
        ));
    }
    let cfg = crate::process::write_config(&toml);

    let check = run(&with_config(&cfg, "check")).await;

    assert_eq!(check.status.code(), Some(1), "{check:?}");
    let agent_lines: Vec<&str> = check
        .stdout
        .lines()
        .filter(|l| l.starts_with("agent "))
        .collect();
    assert_eq!(agent_lines.len(), 2, "one line per agent: {check:?}");
    for (line, agent) in agent_lines.iter().zip([105_131, 200_001]) {
        assert!(
            line.starts_with(&format!("agent {agent}: FAILED: connection refused: ")),
            "{line}"
        );
        assert_eq!(line.matches("Connection refused").count(), 1, "{line}");
        assert_eq!(
            line.matches(&agent.to_string()).count(),
            2,
            "the agent and its URL: {line}"
        );
        assert!(!line.contains("gave up after"), "{line}");
    }
    assert!(!check.stderr.contains("retrying"), "{check:?}");
    assert!(
        check
            .stdout
            .contains("configuration: ok (2 targets, 4 pairs)"),
        "{check:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_against_an_api_that_never_answers_gives_up_after_one_timeout() {
    let admin = TestDb::new().await;
    // Accepts connections and never answers: a platform that hangs.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket);
        }
    });
    let toml = format!(
        "[database]\nurl = {:?}\n[api]\nbase_url = {base_url:?}\ntimeout = \"1s\"\n\
         max_retries = 6\nretry_backoff = \"10s\"\n\
         [[targets]]\nagent_id = {AGENT}\nuser_ids = [1]\ntoken = \"t\"\n",
        admin.url
    );
    let cfg = crate::process::write_config(&toml);

    let check = run(&with_config(&cfg, "check")).await;
    held.abort();

    assert_eq!(check.status.code(), Some(1), "{check:?}");
    let lines: Vec<&str> = check
        .stdout
        .lines()
        .filter(|l| l.starts_with("agent "))
        .collect();
    assert_eq!(
        lines,
        [format!(
            "agent {AGENT}: FAILED: timeout: no answer within 1s (check waits at most 10s)"
        )],
        "{check:?}"
    );
    assert!(!check.stderr.contains("retrying"), "{check:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_a_refused_token_and_its_http_status_once() {
    let sim = sim_with(SEED, &[(1, 3)]);
    let server = sim.spawn().await.unwrap();
    let db = TestDb::new().await;
    let cfg = config(&server.base_url, &db.url, 100, &[Tgt(AGENT, "wrong", &[1])]);

    let check = run(&with_config(&cfg, "check")).await;

    assert_eq!(check.status.code(), Some(1), "{check:?}");
    let line = check
        .stdout
        .lines()
        .find(|l| l.starts_with("agent "))
        .unwrap_or_else(|| panic!("{check:?}"));
    assert!(
        line.starts_with(&format!(
            "agent {AGENT}: FAILED: the platform refused the token (HTTP 401)"
        )),
        "{line}"
    );
    assert!(!line.contains(&format!("FAILED: agent {AGENT}")), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_config_file_commands_name_the_file_they_expected() {
    let workdir = tempfile::tempdir().unwrap();
    let cwd = workdir.path().canonicalize().unwrap();
    let expected = cwd.join("config/szb-sync.toml");

    let mut outs = Vec::new();
    for command in ["check", "status", "sync", "migrate"] {
        let out = finish(szb(&[command]).current_dir(workdir.path()).spawn().unwrap()).await;
        outs.push((command, out));
    }
    // The environment may give the targets instead of a file.
    let from_env = finish(
        szb(&["check", "--offline"])
            .current_dir(workdir.path())
            .env("SZB_API__TOKEN", "t0ken")
            .env("SZB_TARGETS", "[{agent_id=105131, user_ids=[15460259]}]")
            .spawn()
            .unwrap(),
    )
    .await;

    for (command, out) in outs {
        assert_eq!(out.status.code(), Some(1), "{command}: {out:?}");
        assert!(
            out.stderr
                .contains(&format!("no config file: expected {}", expected.display())),
            "{command}: {out:?}"
        );
        assert!(
            out.stderr
                .contains(&format!("working directory {}", cwd.display())),
            "{command}: {out:?}"
        );
    }
    assert!(from_env.status.success(), "{from_env:?}");
    assert!(
        from_env
            .stdout
            .contains("configuration: ok (1 target, 1 pair)"),
        "{from_env:?}"
    );
}

/// The README's "Trying the real path against the simulator": `mock-api`, then the shipped
/// config/demo.toml through migrate, check, sync and status. Only the database and the port are
/// overridden (by the environment), so parallel tests do not share them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_demo_config_syncs_the_mock_api_as_the_readme_says() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let admin = TestDb::new().await;
    let (url, _cleanup) = missing_database(&admin, "szb_demo_cfg");
    let mut mock = szb(&["mock-api", "--listen", "127.0.0.1:0"])
        .spawn()
        .unwrap();
    let base_url = announced_url(&mut mock).await;
    let demo_toml = repo("config/demo.toml").display().to_string();
    let step = |command: &'static [&'static str]| {
        let mut args = vec!["--config", demo_toml.as_str()];
        args.extend_from_slice(command);
        let mut cmd = szb(&args);
        cmd.env("SZB_DATABASE__URL", &url)
            .env("SZB_API__BASE_URL", &base_url);
        cmd
    };

    let mut outs = Vec::new();
    for command in [
        &["migrate", "--create-database"][..],
        &["check"],
        &["sync"],
        &["status"],
    ] {
        outs.push((command, finish(step(command).spawn().unwrap()).await));
    }

    for (command, out) in &outs {
        assert!(out.status.success(), "{command:?}: {out:?}");
    }
    let check = &outs[1].1;
    for agent in demo_world::MOCK_API.agents {
        assert!(
            check
                .stdout
                .contains(&format!("agent {}: token accepted", agent.id)),
            "{check:?}"
        );
    }
    assert_eq!(
        count(&url, "SELECT count(*) FROM visits").await,
        demo_world::MOCK_API.total_visits() as i64,
        "every visit the simulator serves landed"
    );
    assert_eq!(
        count(
            &url,
            "SELECT count(DISTINCT (agent_id, user_id)) FROM sync_state"
        )
        .await,
        3
    );
    assert!(database_exists(&admin, &url).await);
}

/// The configured database is real data: the demo writes into `szb_demo` on its server instead,
/// and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_never_writes_into_the_configured_database() {
    let real = TestDb::new().await;
    szb_sync::store::MIGRATOR.run(&real.pool).await.unwrap();
    let workdir = tempfile::tempdir().unwrap();
    // Not `szb_demo` itself, which may be a developer's: a name of this test's own, given the
    // way only tests do, so the demo still derives the URL from the configured one.
    let name = format!(
        "szb_demo_own_{}_{}",
        std::process::id(),
        rand::random::<u32>()
    );
    let _cleanup = DropDatabase {
        admin_url: real.url.clone(),
        name: name.clone(),
    };
    let mut demo_url = url::Url::parse(&real.url).unwrap();
    demo_url.set_path(&format!("/{name}"));

    let demo = finish(
        szb(&["demo", "--database-name", &name])
            .env("SZB_DATABASE__URL", &real.url)
            .current_dir(workdir.path())
            .spawn()
            .unwrap(),
    )
    .await;

    assert!(demo.status.success(), "{demo:?}");
    assert!(
        demo.stdout.starts_with(&format!(
            "szb-sync demo → {demo_url} (the demo's own database)"
        )),
        "{demo:?}"
    );
    for table in ["visits", "activities", "sync_runs", "sync_state"] {
        let n: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(&real.pool)
                .await
                .unwrap();
        assert_eq!(n, 0, "{table} of the configured database");
    }
    assert!(
        demo.stdout.contains(&format!(
            "Try: psql '{demo_url}' -c 'SELECT * FROM sync_runs ORDER BY id DESC LIMIT 5'"
        )),
        "{demo:?}"
    );
}

#[test]
fn config_szb_sync_toml_is_ignored_not_tracked() {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap()
    };
    let tracked = git(&["ls-files", "config"]);
    let ignored = git(&["check-ignore", "-q", "--no-index", "config/szb-sync.toml"]);

    if !tracked.status.success() {
        // Not a git checkout (a source tarball): nothing to check.
        return;
    }
    let tracked = String::from_utf8_lossy(&tracked.stdout);
    assert!(!tracked.contains("config/szb-sync.toml"), "{tracked}");
    assert!(
        tracked.contains("config/example.toml") && tracked.contains("config/demo.toml"),
        "{tracked}"
    );
    assert!(
        ignored.status.success(),
        "config/szb-sync.toml is in .gitignore"
    );
}
