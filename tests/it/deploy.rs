//! What operators install: the systemd unit verifies, its sandbox scores below 2.0 with
//! `systemd-analyze security`, and the `check --offline` it runs first needs no network.

use std::process::Command;

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
        .expect("systemd-analyze runs (.ci/run installs systemd when it is missing)")
}

#[test]
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
        out.contains("configuration: ok (1 targets, 2 pairs)"),
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
