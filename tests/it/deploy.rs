//! What operators install: the systemd unit verifies, its sandbox scores below 2.0 with
//! `systemd-analyze security`, and the `check --offline` it runs first needs no network. The
//! Debian package (built with `cargo deb --no-build` from this run's binary) holds what it
//! should, as `dpkg-deb` lists it. The compose file passes `docker-compose config` (no engine
//! runs here) and its demo settings sync the simulator; the image's build context holds no
//! config or secret. promtool accepts the alert rules and their unit tests, and the Grafana
//! dashboard charts every metric.

use std::process::Command;

use crate::helpers::repo;

const UNIT: &str = include_str!("../../deploy/szb-sync.service");
const BIN: &str = env!("CARGO_BIN_EXE_szb-sync");

/// The unit as installed, with the binary of this build where the package puts it.
fn unit_file(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("szb-sync.service");
    std::fs::write(&path, UNIT.replace("/usr/bin/szb-sync", BIN)).unwrap();
    path
}

fn systemd_analyze(args: &[&str], unit: &std::path::Path) -> std::process::Output {
    Command::new("systemd-analyze")
        .args(args)
        .arg(unit)
        .output()
        .expect("systemd-analyze runs (scripts/install-test-tools installs it)")
}

#[test]
#[ignore = "needs systemd-analyze: see docs/development.md"]
fn the_systemd_unit_verifies_and_its_sandbox_exposure_is_below_two() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_file(dir.path());

    let verify = systemd_analyze(&["verify"], &unit);
    let security = systemd_analyze(&["security", "--offline=yes"], &unit);

    let verify_err = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success(), "{verify_err}");
    assert!(
        verify_err.trim().is_empty(),
        "systemd-analyze verify: {verify_err}"
    );
    let report = String::from_utf8_lossy(&security.stdout);
    let exposure: f64 = report
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for szb-sync.service:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no overall exposure in:\n{report}"));
    assert!(exposure < 2.0, "exposure {exposure}:\n{report}");
    for (key, value) in [
        ("Type", "notify"),
        ("ExecStartPre", "check --offline"),
        ("ExecReload", "kill -HUP $MAINPID"),
        ("LoadCredential", "szb-token:"),
        ("Restart", "on-failure"),
        ("DynamicUser", "yes"),
    ] {
        assert!(
            UNIT.lines()
                .any(|l| l.starts_with(&format!("{key}=")) && l.contains(value)),
            "{key}= with {value:?}"
        );
    }
}

#[test]
fn check_offline_checks_the_configuration_without_touching_the_network() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("szb-sync.toml");
    // Nothing listens on port 1: a check that tried the database or the API would fail.
    std::fs::write(
        &config,
        "[database]\nurl = \"postgres://szb:hunter2@127.0.0.1:1/szb\"\n\n\
         [api]\nbase_url = \"http://127.0.0.1:1\"\ntoken = \"t0ken-secret\"\n\n\
         [[targets]]\nagent_id = 7\nuser_ids = [1, 2]\n",
    )
    .unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[api]\npage_size = 5000\n").unwrap();

    let ok = Command::new(BIN)
        .args(["--config", config.to_str().unwrap(), "check", "--offline"])
        .output()
        .unwrap();
    let refused = Command::new(BIN)
        .args(["--config", bad.to_str().unwrap(), "check", "--offline"])
        .output()
        .unwrap();

    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        out.contains("configuration: ok (1 target, 2 pairs)"),
        "{out}"
    );
    assert!(
        !out.contains("database"),
        "no database check offline: {out}"
    );
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("api.page_size"),
        "the bad key is named"
    );
    for o in [&ok, &refused] {
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            !all.contains("t0ken-secret") && !all.contains("hunter2"),
            "{all}"
        );
    }
}

// ---- the Debian package -----------------------------------------------------------------------

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Runs a command to its end; panics with `hint` when the program is not installed.
fn run(program: &str, args: &[&str], hint: &str) -> std::process::Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} does not run ({e}): {hint}"))
}

fn stdout_of(output: &std::process::Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what}: {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

const CARGO_DEB_HINT: &str = "cargo-deb is missing: install it with `cargo install cargo-deb --locked` (scripts/install-test-tools does)";

/// Builds the package from the binary this test run already built, with no build of its own:
/// cargo-deb's assets name `target/release/szb-sync`, so a target directory of our own holds a
/// copy there and `cargo deb --no-build` packs it (stripped, as a release package is).
fn build_package(dir: &std::path::Path) -> std::path::PathBuf {
    let version = Command::new("cargo").args(["deb", "--version"]).output();
    assert!(
        version.as_ref().is_ok_and(|v| v.status.success()),
        "{CARGO_DEB_HINT}"
    );
    let target = dir.join("target");
    std::fs::create_dir_all(target.join("release")).unwrap();
    std::fs::copy(BIN, target.join("release/szb-sync")).unwrap();
    let out = dir.join("out");
    let manifest = repo("Cargo.toml");
    let built = Command::new("cargo")
        .args(["deb", "--no-build", "--fast", "--quiet", "--manifest-path"])
        .arg(&manifest)
        .arg("--output")
        .arg(&out)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .expect("cargo deb runs");
    stdout_of(&built, "cargo deb --no-build");
    let debs: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "one .deb in {}: {debs:?}", out.display());
    debs.into_iter().next().unwrap()
}

#[test]
#[ignore = "needs cargo-deb and dpkg-deb: see docs/development.md"]
fn the_debian_package_installs_the_binary_the_unit_the_config_the_user_and_the_docs() {
    let dir = tempfile::tempdir().unwrap();
    let deb = build_package(dir.path());
    let deb = deb.to_str().unwrap();
    let dpkg_hint = "dpkg-deb comes with Debian's dpkg";

    // `dpkg-deb -c`: mode, owner, size, date, time, path.
    let listing = stdout_of(&run("dpkg-deb", &["-c", deb], dpkg_hint), "dpkg-deb -c");
    let files: std::collections::BTreeMap<&str, &str> = listing
        .lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            Some((fields.get(5)?.trim_start_matches('.'), *fields.first()?))
        })
        .collect();
    for (path, mode) in [
        ("/usr/bin/szb-sync", "-rwxr-xr-x"),
        ("/usr/lib/systemd/system/szb-sync.service", "-rw-r--r--"),
        // Root and the service's group only: it may hold a database password.
        ("/etc/szb-sync/szb-sync.toml", "-rw-r-----"),
        ("/usr/lib/sysusers.d/szb-sync.conf", "-rw-r--r--"),
        (
            "/usr/share/bash-completion/completions/szb-sync",
            "-rw-r--r--",
        ),
        ("/usr/share/zsh/vendor-completions/_szb-sync", "-rw-r--r--"),
        (
            "/usr/share/fish/vendor_completions.d/szb-sync.fish",
            "-rw-r--r--",
        ),
        ("/usr/share/man/man1/szb-sync.1.gz", "-rw-r--r--"),
        ("/usr/share/man/man1/szb-sync-sync.1.gz", "-rw-r--r--"),
        ("/usr/share/man/man1/szb-sync-rejects.1.gz", "-rw-r--r--"),
        ("/usr/share/szb-sync/grafana/szb-sync.json", "-rw-r--r--"),
        ("/usr/share/szb-sync/prometheus/alerts.yml", "-rw-r--r--"),
    ] {
        assert_eq!(files.get(path), Some(&mode), "{path} in:\n{listing}");
    }
    assert!(
        !files.keys().any(|p| p.ends_with("/token")),
        "no token is packaged:\n{listing}"
    );

    // `dpkg-deb -I`: the conffiles, the dependencies and the maintainer scripts.
    let info = |member: &str| {
        stdout_of(
            &run("dpkg-deb", &["-I", deb, member], dpkg_hint),
            &format!("dpkg-deb -I {member}"),
        )
    };
    let conffiles = info("conffiles");
    assert_eq!(
        conffiles.lines().collect::<Vec<_>>(),
        ["/etc/szb-sync/szb-sync.toml"]
    );
    let control = info("control");
    let depends = control
        .lines()
        .find_map(|l| l.strip_prefix("Depends: "))
        .unwrap_or_else(|| panic!("no Depends in:\n{control}"));
    for dep in ["libc6", "ca-certificates", "systemd-sysusers"] {
        assert!(depends.contains(dep), "{dep} in Depends: {depends}");
    }
    let postinst = info("postinst");
    assert!(
        postinst.contains("systemd-sysusers") && postinst.contains("szb-sync.conf"),
        "postinst creates the user:\n{postinst}"
    );
    assert!(
        postinst.contains("dpkg-statoverride --update --add root szb-sync 0640"),
        "{postinst}"
    );
    // Installing neither enables nor starts the unit (it needs a token and targets first); an
    // upgrade restarts it only when it runs.
    assert!(
        postinst.contains("try-restart szb-sync.service"),
        "{postinst}"
    );
    // (cargo-deb's "don't enable" fragment re-enables only a unit the admin had enabled.)
    assert!(
        postinst.contains("if deb-systemd-helper debian-installed szb-sync.service")
            && !postinst.contains("was-enabled defaults to true")
            && !postinst.contains("deb-systemd-invoke start"),
        "{postinst}"
    );
    // cargo-deb's fragments went in at the token, once, and nowhere else: without them, each
    // script is the repository's, line for line (blank lines aside).
    for (script, text) in [("postinst", &postinst), ("postrm", &info("postrm"))] {
        let mut ours = Vec::new();
        let mut in_fragment = false;
        for line in text.lines() {
            if line == "# Automatically added by cargo-deb" {
                in_fragment = true;
            } else if line == "# End automatically added section" {
                in_fragment = false;
            } else if !in_fragment && !line.is_empty() {
                ours.push(line);
            }
        }
        let source = read(&format!("deploy/debian/{script}"));
        let expected: Vec<&str> = source
            .lines()
            .filter(|l| *l != "#DEBHELPER#" && !l.is_empty())
            .collect();
        assert_eq!(ours, expected, "{script}:\n{text}");
        assert!(
            text.contains("# Automatically added by cargo-deb"),
            "{script}"
        );
    }

    // What lands on disk is the repository's files, and the binary runs.
    let root = dir.path().join("root");
    stdout_of(
        &run("dpkg-deb", &["-x", deb, root.to_str().unwrap()], dpkg_hint),
        "dpkg-deb -x",
    );
    for (installed, source) in [
        (
            "usr/lib/systemd/system/szb-sync.service",
            "deploy/szb-sync.service",
        ),
        ("etc/szb-sync/szb-sync.toml", "deploy/debian/szb-sync.toml"),
        (
            "usr/lib/sysusers.d/szb-sync.conf",
            "deploy/debian/szb-sync.sysusers",
        ),
    ] {
        assert_eq!(
            std::fs::read_to_string(root.join(installed)).unwrap(),
            read(source),
            "{installed}"
        );
    }
    let version = Command::new(root.join("usr/bin/szb-sync"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(
        stdout_of(&version, "szb-sync --version").contains(env!("CARGO_PKG_VERSION")),
        "packaged binary runs"
    );
}

/// The user of the sysusers file is the unit's: with DynamicUser=yes systemd uses a static user
/// of that name when one exists, so the config's group is the service's.
#[test]
fn the_package_user_is_the_unit_user() {
    let sysusers = read("deploy/debian/szb-sync.sysusers");
    let user = sysusers
        .lines()
        .find_map(|l| l.strip_prefix("u "))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("a `u` line");
    assert_eq!(user, "szb-sync");
    assert!(
        UNIT.lines().any(|l| l == format!("User={user}")),
        "User={user}"
    );
    assert!(UNIT.lines().any(|l| l == "DynamicUser=yes"));
    assert!(read("deploy/debian/postinst").contains(&format!("root {user} 0640")));
}

#[test]
#[ignore = "needs systemd-sysusers: see docs/development.md"]
fn systemd_sysusers_accepts_the_package_user() {
    // The file is what systemd-sysusers accepts (a `:` in the GECOS field, say, is refused).
    let dry_run = Command::new("systemd-sysusers")
        .arg("--dry-run")
        .arg(repo("deploy/debian/szb-sync.sysusers"))
        .output()
        .expect("systemd-sysusers runs (Debian's systemd; scripts/install-test-tools installs it)");
    let stderr = String::from_utf8_lossy(&dry_run.stderr);
    assert!(
        dry_run.status.success() && !stderr.contains("not a valid"),
        "{stderr}"
    );
}

/// The packaged /etc/szb-sync/szb-sync.toml is config/example.toml with the token and the
/// targets commented out: every other key and section is there, and the unit's way of giving
/// the token (SZB_API__TOKEN_FILE) is accepted with it.
#[test]
fn the_packaged_config_is_the_example_with_the_token_left_to_the_unit() {
    let example = read("config/example.toml");
    let packaged = read("deploy/debian/szb-sync.toml");
    let active = |text: &str| -> Vec<String> {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_owned)
            .collect()
    };
    let packaged_active = active(&packaged);
    let mut in_targets = false;
    for line in active(&example) {
        in_targets |= line == "[[targets]]";
        let commented = format!("# {line}");
        if in_targets || line.starts_with("token =") {
            assert!(
                !packaged_active.contains(&line) && packaged.lines().any(|l| l == commented),
                "{line:?} is commented out in deploy/debian/szb-sync.toml"
            );
        } else {
            assert!(
                packaged_active.contains(&line),
                "config/example.toml has {line:?}: deploy/debian/szb-sync.toml, made from it, \
                 must too"
            );
        }
    }
    // Sections example.toml only mentions in comments (an optional one) are mentioned too.
    for line in example.lines() {
        let section = line.trim_start_matches("# ");
        if section.starts_with('[') && section.ends_with(']') {
            assert!(
                packaged
                    .lines()
                    .any(|l| l.trim_start_matches("# ") == section),
                "section {section} of config/example.toml"
            );
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("szb-token");
    std::fs::write(&token, "t0ken-secret\n").unwrap();
    let check = |targets: Option<&str>| {
        let mut cmd = Command::new(BIN);
        cmd.args([
            "--config",
            repo("deploy/debian/szb-sync.toml").to_str().unwrap(),
        ])
        .args(["check", "--offline"])
        .env_clear()
        .env("SZB_API__TOKEN_FILE", &token)
        .current_dir(dir.path());
        if let Some(t) = targets {
            cmd.env("SZB_TARGETS", t);
        }
        cmd.output().unwrap()
    };
    // As installed, with no targets listed yet: the unit's ExecStartPre refuses to start.
    let unconfigured = check(None);
    assert!(!unconfigured.status.success());
    assert!(
        String::from_utf8_lossy(&unconfigured.stderr).contains("[[targets]]"),
        "{unconfigured:?}"
    );
    let with_target = stdout_of(
        &check(Some("[{agent_id=105131, user_ids=[15460259]}]")),
        "check --offline with the packaged config",
    );
    assert!(
        with_target.contains("configuration: ok (1 target, 1 pair)"),
        "{with_target}"
    );
    assert!(!with_target.contains("t0ken-secret"));
}

// ---- containers -------------------------------------------------------------------------------

const PYTHON_HINT: &str = "python3 with PyYAML and docker-py comes with Debian's docker-compose: apt-get install -y \
     docker-compose (scripts/install-test-tools does)";

/// `docker-compose [ARGS] config` (Debian's docker-compose 1.29, which needs no engine) on the
/// repository's file, with no variable of ours and no .env file leaking in, as JSON.
fn compose_config(args: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("empty.env");
    std::fs::write(&env_file, "").unwrap();
    let output = Command::new("docker-compose")
        .arg("--file")
        .arg(repo("docker-compose.yml"))
        .arg("--env-file")
        .arg(&env_file)
        .args(args)
        .arg("config")
        .env_remove("SZB_TARGETS")
        .env_remove("SZB_TOKEN_FILE")
        .env_remove("RUST_LOG")
        .env_remove("COMPOSE_PROFILES")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "docker-compose does not run ({e}): apt-get install -y docker-compose (scripts/install-test-tools \
                 does; it needs no Docker engine)"
            )
        });
    let yaml = stdout_of(&output, &format!("docker-compose {args:?} config"));
    yaml_to_json(&yaml)
}

fn yaml_to_json(yaml: &str) -> serde_json::Value {
    use std::io::Write as _;
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("python3 does not run ({e}): {PYTHON_HINT}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    serde_json::from_str(&stdout_of(&out, "yaml to json")).unwrap()
}

fn env_of(service: &serde_json::Value) -> Vec<(String, String)> {
    service["environment"]
        .as_object()
        .expect("an environment map")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("string values").to_owned()))
        .collect()
}

fn env_value<'a>(env: &'a [(String, String)], key: &str) -> &'a str {
    env.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("{key} in {env:?}"))
}

#[test]
#[ignore = "needs docker-compose and python3-yaml: see docs/development.md"]
fn docker_compose_config_has_a_healthy_db_the_token_as_a_secret_and_the_port_published() {
    let config = compose_config(&[]);
    let services = &config["services"];

    let db = &services["db"];
    assert_eq!(db["image"], "postgres:15");
    assert!(db["profiles"].is_null(), "db runs in every profile");
    let check = db["healthcheck"]["test"].to_string();
    assert!(check.contains("pg_isready"), "{check}");
    assert!(
        db["volumes"].as_array().unwrap().iter().any(|v| v
            .as_str()
            .unwrap()
            .starts_with("szb-pgdata:/var/lib/postgresql/data")),
        "{}",
        db["volumes"]
    );
    assert!(config["volumes"]["szb-pgdata"].is_object());

    let app = &services["szb-sync"];
    assert_eq!(app["profiles"], serde_json::json!(["app"]));
    assert_eq!(app["depends_on"]["db"]["condition"], "service_healthy");
    assert_eq!(app["secrets"][0]["source"], "szb-token");
    assert!(
        config["secrets"]["szb-token"]["file"]
            .as_str()
            .unwrap()
            .ends_with("/szb-token")
    );
    let env = env_of(app);
    assert_eq!(
        env_value(&env, "SZB_API__TOKEN_FILE"),
        "/run/secrets/szb-token"
    );
    assert_eq!(env_value(&env, "SZB_HTTP__LISTEN"), "0.0.0.0:9187");
    assert_eq!(
        env_value(&env, "SZB_DATABASE__URL"),
        "postgres://root@db:5432/szb"
    );
    assert_eq!(app["ports"], serde_json::json!(["127.0.0.1:9187:9187/tcp"]));
    // No token in any service's environment: only the secret's file, and the simulator's own
    // demo tokens inside the demo's targets.
    for (name, service) in services.as_object().unwrap() {
        if service["environment"].is_object() {
            for (key, _) in env_of(service) {
                assert!(!key.ends_with("__TOKEN"), "{name} sets {key}");
            }
        }
        assert!(
            !service["volumes"].to_string().contains("config"),
            "{name} mounts no config by default"
        );
    }

    // The app's environment, as szb-sync reads it: accepted, targets empty until set.
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("szb-token");
    std::fs::write(&token, "t0ken-secret\n").unwrap();
    let out = Command::new(BIN)
        .args(["check", "--offline"])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("SZB_API__TOKEN_FILE", &token)
        .env("SZB_TARGETS", "[{agent_id=105131, user_ids=[15460259]}]")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let out = stdout_of(&out, "check --offline with the app's environment");
    assert!(
        out.contains("configuration: ok (1 target, 1 pair)"),
        "{out}"
    );
}

/// The services of the demo profile, their mock-api address, and szb-sync's environment there.
fn demo_profile() -> (serde_json::Value, Vec<(String, String)>) {
    let config = compose_config(&["--profile", "demo"]);
    let services = config["services"].clone();
    let env = env_of(&services["szb-sync-demo"]);
    (services, env)
}

#[test]
#[ignore = "needs docker-compose and python3-yaml: see docs/development.md"]
fn docker_compose_demo_profile_points_szb_sync_at_the_simulator_and_publishes_the_status_page() {
    let (services, env) = demo_profile();
    let mock = &services["mock-api"];
    let demo = &services["szb-sync-demo"];
    assert_eq!(mock["profiles"], serde_json::json!(["demo"]));
    assert_eq!(demo["profiles"], serde_json::json!(["demo"]));
    let command: Vec<&str> = mock["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(command[0], "mock-api");
    let listen = command
        .windows(2)
        .find(|w| w[0] == "--listen")
        .map(|w| w[1])
        .expect("mock-api --listen");
    let port = listen.rsplit(':').next().unwrap();
    assert!(listen.starts_with("0.0.0.0:"), "reachable from the network");
    assert_eq!(
        env_value(&env, "SZB_API__BASE_URL"),
        format!("http://mock-api:{port}")
    );
    assert_eq!(env_value(&env, "SZB_API__ALLOW_INSECURE_HTTP"), "true");
    assert_eq!(env_value(&env, "SZB_HTTP__LISTEN"), "0.0.0.0:9187");
    assert_eq!(
        demo["ports"],
        serde_json::json!(["127.0.0.1:9187:9187/tcp"])
    );
    assert_eq!(demo["depends_on"]["db"]["condition"], "service_healthy");
    assert!(demo["depends_on"]["mock-api"].is_object());
    assert_eq!(mock["image"], demo["image"], "one image for both");
}

/// What `docker compose --profile demo up` would run, without an engine: the demo's own
/// mock-api command and szb-sync's environment from the demo profile, against a fresh database.
/// Every configured pair syncs the simulator's visits to the last one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs docker-compose and python3-yaml: see docs/development.md"]
async fn docker_compose_demo_settings_sync_the_simulator_the_demo_runs() {
    use szb_simulator::demo_world::MOCK_API;
    let (services, env) = demo_profile();
    let mut command: Vec<String> = services["mock-api"]["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    let listen = command.iter().position(|c| c == "--listen").unwrap() + 1;
    command[listen] = "127.0.0.1:0".into();
    let mut mock = tokio::process::Command::new(BIN)
        .args(&command)
        .env_clear()
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base_url = crate::process::announced_url(&mut mock).await;

    let db = crate::helpers::TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let sync = tokio::process::Command::new(BIN)
        .arg("sync")
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("SZB_API__BASE_URL", &base_url)
        .env("SZB_DATABASE__URL", &db.url)
        // `sync` serves no listener; the port is the container's.
        .env_remove("SZB_HTTP__LISTEN")
        .env("RUST_LOG", "warn")
        .current_dir(dir.path())
        .output();
    let sync = tokio::time::timeout(std::time::Duration::from_secs(60), sync)
        .await
        .expect("sync finishes")
        .unwrap();
    mock.kill().await.unwrap();
    stdout_of(&sync, "szb-sync sync with the demo profile's environment");

    let mut pairs = 0;
    for agent in MOCK_API.agents {
        for user in agent.users {
            let stored = crate::helpers::visits_of(&db.pool, agent.id, user.id).await;
            assert_eq!(
                stored.len(),
                user.total_visits(),
                "agent {} user {}",
                agent.id,
                user.id
            );
            pairs += 1;
        }
    }
    let configured: i64 = sqlx::query_scalar("SELECT count(*) FROM sync_state")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        configured, pairs,
        "the demo syncs every pair the simulator serves"
    );
}

#[test]
#[ignore = "needs python3-docker: see docs/development.md"]
fn the_image_build_context_holds_the_sources_and_no_config_or_secret() {
    let dockerfile = read("Dockerfile");
    // What comes before the first FROM is the file's comment.
    let stages: Vec<&str> = dockerfile.split("\nFROM ").skip(1).collect();
    assert_eq!(stages.len(), 2, "two stages: build and runtime");
    let build = stages[0];
    let runtime = stages[1];
    assert!(build.contains("cargo build --release --locked"));
    assert!(runtime.starts_with("gcr.io/distroless/cc-debian12:nonroot"));
    let user = runtime
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER");
    assert!(
        !user.starts_with("root") && !user.starts_with('0'),
        "{user}"
    );
    for line in runtime.lines().filter(|l| l.starts_with("COPY")) {
        assert!(
            line.starts_with("COPY --from=build "),
            "only the binary: {line}"
        );
    }
    assert!(
        !dockerfile.contains("COPY config"),
        "no config in the image"
    );

    // The context as docker-compose sends it (docker-py applies .dockerignore as the engine does).
    let script = "import sys\nfrom docker.utils.build import exclude_paths\n\
                  ps = [l.strip() for l in open('.dockerignore') if l.strip() and not l.startswith('#')]\n\
                  print('\\n'.join(sorted(exclude_paths('.', ps))))";
    let out = Command::new("python3")
        .args(["-c", script])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| panic!("python3 does not run ({e}): {PYTHON_HINT}"));
    let context = stdout_of(&out, "the build context");
    let context: std::collections::BTreeSet<&str> = context.lines().collect();
    for path in ["Cargo.toml", "Cargo.lock", "src/main.rs", "Dockerfile"] {
        assert!(context.contains(path), "{path} is in the build context");
    }
    // Every crate of the workspace, or `cargo build --locked` does not find its members.
    for member in std::fs::read_dir(repo("crates")).unwrap() {
        let name = member.unwrap().file_name();
        let path = format!("crates/{}/Cargo.toml", name.to_str().unwrap());
        assert!(
            context.contains(path.as_str()),
            "{path} is in the build context"
        );
    }
    for migration in std::fs::read_dir(repo("migrations")).unwrap() {
        let name = migration.unwrap().file_name();
        let path = format!("migrations/{}", name.to_str().unwrap());
        assert!(context.contains(path.as_str()), "{path}");
    }
    for path in &context {
        for kept_out in ["config/", "target/", ".git/", "tests/", "deploy/"] {
            assert!(
                !path.starts_with(kept_out),
                "{path} is in the build context"
            );
        }
        assert!(!path.contains("token") && !path.ends_with(".env"), "{path}");
    }
    // Every COPY of the build stage has its source in the context.
    for line in build.lines().filter(|l| l.starts_with("COPY ")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        for source in &words[1..words.len() - 1] {
            assert!(
                context.contains(source.trim_end_matches('/')),
                "{source} of {line:?}"
            );
        }
    }
    // Every file the crates embed (include_str!, include_bytes!) is in the context and copied
    // into the build stage, or the image does not compile.
    let copied: Vec<&str> = build
        .lines()
        .filter(|l| l.starts_with("COPY "))
        .flat_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words[1..words.len() - 1].to_vec()
        })
        .map(|s| s.trim_end_matches('/'))
        .collect();
    for embedded in embedded_files() {
        assert!(
            context.contains(embedded.as_str()),
            "{embedded} (embedded by the build) is in the build context"
        );
        assert!(
            copied
                .iter()
                .any(|c| embedded == *c || embedded.starts_with(&format!("{c}/"))),
            "{embedded} (embedded by the build) is copied into the build stage"
        );
    }
}

/// The files `include_str!`/`include_bytes!` embed in the sources of `src/` and `crates/`, as
/// paths from the repository's root.
fn embedded_files() -> Vec<String> {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let root = repo("");
    let mut sources = Vec::new();
    walk(&repo("src"), &mut sources);
    walk(&repo("crates"), &mut sources);
    let mut found = Vec::new();
    for source in sources {
        let text = std::fs::read_to_string(&source).unwrap();
        for macro_call in ["include_str!(\"", "include_bytes!(\""] {
            for piece in text.split(macro_call).skip(1) {
                let relative = piece.split('"').next().unwrap();
                let mut path = source.parent().unwrap().to_path_buf();
                for part in relative.split('/') {
                    match part {
                        ".." => {
                            path.pop();
                        }
                        "." => {}
                        part => path.push(part),
                    }
                }
                found.push(path.strip_prefix(&root).unwrap().display().to_string());
            }
        }
    }
    assert!(
        found.iter().any(|f| f == "docs/tables.md"),
        "the benchmark embeds docs/tables.md: {found:?}"
    );
    found
}

// ---- Prometheus and Grafana -------------------------------------------------------------------

/// The metrics szb-sync exposes on its [http] listener, as the alerts and the dashboard use them.
const METRICS: &[&str] = &[
    "szb_build_info",
    "szb_requests_total",
    "szb_request_duration_seconds",
    "szb_retries_total",
    "szb_rate_limited_total",
    "szb_request_concurrency_limit",
    "szb_pages_total",
    "szb_visits_written_total",
    "szb_rejects_total",
    "szb_pass_duration_seconds",
    "szb_passes_total",
    "szb_pair_runs_total",
    "szb_pairs",
    "szb_oldest_pair_sync_age_seconds",
    "szb_last_pass_end_timestamp_seconds",
];

/// The `szb_…` metric names in `text`, histogram series (`_bucket`, `_sum`, `_count`) by their
/// metric's name.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("szb_") {
        let start = i + at;
        let boundary = start == 0
            || !(bytes[start - 1].is_ascii_alphanumeric()
                || bytes[start - 1] == b'_'
                || bytes[start - 1] == b'-');
        let end = text[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(text.len(), |e| start + e);
        if boundary {
            let name = &text[start..end];
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|b| METRICS.contains(b))
                .unwrap_or(name);
            names.insert(base.to_owned());
        }
        i = end;
    }
    names
}

const PROMTOOL_HINT: &str = "promtool comes with Debian's prometheus: apt-get install -y prometheus (scripts/install-test-tools does)";

#[test]
#[ignore = "needs promtool: see docs/development.md"]
fn promtool_accepts_the_alert_rules_and_their_unit_tests() {
    let rules = repo("deploy/prometheus/alerts.yml");
    let tests = repo("deploy/prometheus/alerts.test.yml");
    let check = run(
        "promtool",
        &["check", "rules", rules.to_str().unwrap()],
        PROMTOOL_HINT,
    );
    let checked = stdout_of(&check, "promtool check rules");
    assert!(checked.contains("SUCCESS: 4 rules found"), "{checked}");
    let tested = run(
        "promtool",
        &["test", "rules", tests.to_str().unwrap()],
        PROMTOOL_HINT,
    );
    stdout_of(&tested, "promtool test rules");
}

/// Each alert has a case that fires and one that does not in alerts.test.yml, which
/// [`promtool_accepts_the_alert_rules_and_their_unit_tests`] runs.
#[test]
fn each_alert_fires_and_stays_quiet_in_its_unit_tests() {
    let alerts_yml = read("deploy/prometheus/alerts.yml");
    let alerts: Vec<&str> = alerts_yml
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert_eq!(
        alerts,
        [
            "SzbSyncTargetDown",
            "SzbSyncPairsFailing",
            "SzbSyncTooOld",
            "SzbSyncRateLimitStorm"
        ]
    );
    // Each alert has a case where it fires (expected alerts with labels) and one where it does
    // not yet (an empty exp_alerts), so promtool's pass means both.
    let test_yml = read("deploy/prometheus/alerts.test.yml");
    for alert in &alerts {
        let cases: Vec<&str> = test_yml
            .split("- eval_time:")
            .filter(|case| case.contains(&format!("alertname: {alert}\n")))
            .collect();
        assert!(
            cases.iter().any(|c| c.contains("exp_labels:")),
            "{alert} fires in a test"
        );
        assert!(
            cases.iter().any(|c| c.contains("exp_alerts: []")),
            "{alert} is quiet in a test"
        );
    }
    for (alert, expr) in [
        ("SzbSyncPairsFailing", "state=\"failing\"})"),
        ("SzbSyncPairsFailing", "> 0"),
        ("SzbSyncTooOld", "szb_oldest_pair_sync_age_seconds"),
        ("SzbSyncRateLimitStorm", "szb_rate_limited_total"),
        ("SzbSyncRateLimitStorm", "szb_requests_total"),
        ("SzbSyncTargetDown", "up{job=\"szb-sync\"} == 0"),
    ] {
        let rule = alerts_yml
            .split("- alert: ")
            .find(|r| r.starts_with(alert))
            .unwrap();
        assert!(rule.contains(expr), "{alert}: {expr}");
    }
    assert!(
        alerts_yml.contains("for: 30m"),
        "pairs failing for 30 minutes"
    );
    for name in metric_names(&alerts_yml) {
        assert!(METRICS.contains(&name.as_str()), "unknown metric {name}");
    }
}

#[test]
fn the_grafana_dashboard_charts_every_metric_through_a_prometheus_datasource_variable() {
    let text = read("deploy/grafana/szb-sync.json");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let datasource = variables
        .iter()
        .find(|v| v["type"] == "datasource")
        .expect("a datasource variable");
    assert_eq!(datasource["query"], "prometheus");
    let var = format!("${{{}}}", datasource["name"].as_str().unwrap());

    let panels = dashboard["panels"].as_array().unwrap();
    let mut ids = std::collections::BTreeSet::new();
    let mut exprs = Vec::new();
    for panel in panels {
        assert!(
            ids.insert(panel["id"].as_i64().unwrap()),
            "unique panel ids"
        );
        assert!(panel["gridPos"]["w"].as_i64().is_some());
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"],
            var.as_str(),
            "{}",
            panel["title"]
        );
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{}", panel["title"]);
        for target in targets {
            assert_eq!(target["datasource"]["uid"], var.as_str());
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    let used = metric_names(&exprs.join("\n"));
    for name in &used {
        assert!(METRICS.contains(&name.as_str()), "unknown metric {name}");
    }
    for metric in METRICS {
        assert!(used.contains(*metric), "no panel shows {metric}");
    }
}

/// The PromQL of every target of the dashboard.
fn dashboard_exprs() -> Vec<String> {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/szb-sync.json")).expect("valid JSON");
    dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] != "row")
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| t["expr"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
#[ignore = "needs promtool: see docs/development.md"]
fn promtool_parses_every_query_of_the_grafana_dashboard() {
    let exprs = dashboard_exprs();
    assert!(!exprs.is_empty());
    // Every query parses as PromQL: promtool checks them as recording rules, with Grafana's
    // variables given values.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in exprs.iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "5m")
            .replace("$job", ".*")
            .replace("$instance", ".*");
        rules.push_str(&format!(
            "      - record: dashboard:query{i}\n        expr: {}\n",
            serde_json::to_string(&expr).unwrap()
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-rules.yml");
    std::fs::write(&file, rules).unwrap();
    let check = run(
        "promtool",
        &["check", "rules", file.to_str().unwrap()],
        PROMTOOL_HINT,
    );
    stdout_of(&check, "promtool check rules on the dashboard's queries");
}
