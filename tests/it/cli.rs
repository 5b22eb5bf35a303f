//! The day-two commands of the real binary: `status` exit codes and `--json`, `sync --only`,
//! `rejects`, `resync` and its `--all`, output into a closed pipe, completions and man pages kept
//! equal to the committed ones, each subcommand's `--help`, `--config` refused where nothing
//! reads it, and the foot-guns of the configuration refused at load.

use std::path::Path;

use chrono::{DateTime, Utc};
use clap::CommandFactory as _;
use serde_json::{Value, json};
use szb_sync::cli::Cli;
use tempfile::NamedTempFile;

use crate::helpers::{AGENT, TOKEN, TestDb, iso, sim_with, visits_of};
use crate::process::{
    BIN, Finished, Tgt, command, config, finish, run, szb, with_config, write_config,
};

/// The simulator seed of this module's worlds.
const SEED: u64 = 29;

/// A second agent, and the wrong token a config gives it.
const OTHER: i64 = 200_001;
const WRONG: &str = "wrong-token-5d0a7c";

/// `--config FILE` and then `rest`.
fn args<'a>(cfg: &'a NamedTempFile, rest: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--config", cfg.path().to_str().unwrap()];
    args.extend_from_slice(rest);
    args
}

fn json_of(out: &Finished) -> Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {out:?}"))
}

/// The entry of `pairs` in a `status --json` document for this agent and user.
fn pair_in(doc: &Value, agent: i64, user: i64) -> &Value {
    doc["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["agent_id"] == agent && p["user_id"] == user)
        .unwrap_or_else(|| panic!("no pair {agent}:{user} in {doc:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn printing_into_a_closed_pipe_ends_each_command_quietly_not_with_a_panic() {
    let sim = sim_with(SEED, &[(1, 12)]);
    let server = sim.spawn().await.unwrap();
    let db = TestDb::new().await;
    let cfg = config(&server.base_url, &db.url, 100, &[Tgt(AGENT, TOKEN, &[1])]);
    let path = cfg.path().to_str().unwrap();

    let mut outs = Vec::new();
    for args in [
        vec!["--config", path, "check", "--offline"],
        vec!["--config", path, "sync"],
        vec!["--config", path, "status"],
        vec!["--config", path, "status", "--json"],
        vec!["--config", path, "rejects"],
        vec!["completions", "bash"],
        vec!["man"],
    ] {
        // The reader is gone before the command writes its first byte.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let child = szb(&args).stdout(writer).spawn().unwrap();
        outs.push((args, finish(child).await));
    }

    for (args, out) in &outs {
        assert_eq!(out.status.code(), Some(141), "{args:?}: {out:?}");
        assert!(!out.stderr.contains("panicked"), "{args:?}: {out:?}");
        assert!(!out.stderr.contains("Broken pipe"), "{args:?}: {out:?}");
    }
    assert_eq!(
        visits_of(&db.pool, AGENT, 1).await.len(),
        12,
        "the sync's work was committed before it printed"
    );

    // And as a shell runs it: the first line reaches `head`, and szb-sync does not panic.
    for cmd in [
        format!("{BIN:?} --config {path:?} check --offline | head -1"),
        format!("{BIN:?} man | head -1"),
    ] {
        let script = format!("{cmd}; echo \"szb-sync exited ${{PIPESTATUS[0]}}\" >&2");
        let out = finish(command("bash", &["-c", &script]).spawn().unwrap()).await;
        let code = out
            .stderr
            .lines()
            .find_map(|l| l.strip_prefix("szb-sync exited "))
            .unwrap_or_else(|| panic!("{cmd}: {out:?}"));
        assert!(code == "0" || code == "141", "{cmd}: {out:?}");
        assert_eq!(out.stdout.lines().count(), 1, "{cmd}: {out:?}");
        assert!(!out.stderr.contains("panicked"), "{cmd}: {out:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_exits_one_while_a_configured_pair_fails_and_json_says_which() {
    let sim = sim_with(SEED, &[(1, 30)]);
    sim.add_agent(OTHER, "right-token-200001");
    sim.generate_visits(OTHER, 9, 12);
    let server = sim.spawn().await.unwrap();
    let db = TestDb::new().await;
    let both = config(
        &server.base_url,
        &db.url,
        100,
        &[Tgt(AGENT, TOKEN, &[1]), Tgt(OTHER, WRONG, &[9])],
    );
    let sync = run(&with_config(&both, "sync")).await;
    assert!(!sync.status.success(), "{sync:?}");

    let table = run(&with_config(&both, "status")).await;
    let json = run(&args(&both, &["status", "--json"])).await;

    assert_eq!(table.status.code(), Some(1), "{table:?}");
    assert!(
        table.stdout.contains("1 of 2 configured pairs failing"),
        "{table:?}"
    );
    assert_eq!(json.status.code(), Some(1), "{json:?}");
    let doc = json_of(&json);
    assert_eq!(doc["failing"], 1, "{doc:#}");
    assert_eq!(doc["pairs"].as_array().unwrap().len(), 2, "{doc:#}");
    let good = pair_in(&doc, AGENT, 1);
    assert_eq!(good["configured"], true);
    assert_eq!(good["failing"], false);
    assert_eq!(good["last_outcome"], "ok");
    assert_eq!(good["visits"], 30);
    assert_eq!(good["upstream_total"], 30);
    assert_eq!(good["rejects"], 0);
    assert_eq!(good["failures_in_row"], 0);
    assert_eq!(good["last_error"], Value::Null);
    assert!(good["last_ok_at"].as_str().is_some(), "{good:#}");
    assert!(good["settled"].as_i64().is_some_and(|s| s > 0), "{good:#}");
    let bad = pair_in(&doc, OTHER, 9);
    assert_eq!(bad["configured"], true);
    assert_eq!(bad["failing"], true);
    assert_eq!(bad["last_outcome"], "failed");
    assert_eq!(bad["failures_in_row"], 1);
    assert_eq!(bad["visits"], 0);
    assert_eq!(bad["last_ok_at"], Value::Null);
    assert!(
        bad["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("agent 200001")),
        "{bad:#}"
    );
    // A 401 (a token the platform does not know) never backs off: the next configuration may
    // fix it.
    assert_eq!(bad["next_due_at"], Value::Null, "{bad:#}");
    for out in [&sync, &table, &json] {
        assert!(!out.both().contains(WRONG), "{out:?}");
        assert!(!out.both().contains(TOKEN), "{out:?}");
    }

    // The failing pair leaves the config: it is still listed, not configured, and fails nothing.
    let good_only = config(&server.base_url, &db.url, 100, &[Tgt(AGENT, TOKEN, &[1])]);
    let table = run(&with_config(&good_only, "status")).await;
    let json = run(&args(&good_only, &["status", "--json"])).await;

    assert!(table.status.success(), "{table:?}");
    assert!(!table.stdout.contains("failing"), "{table:?}");
    assert!(json.status.success(), "{json:?}");
    let doc = json_of(&json);
    assert_eq!(doc["failing"], 0, "{doc:#}");
    assert_eq!(pair_in(&doc, AGENT, 1)["configured"], true);
    let dropped = pair_in(&doc, OTHER, 9);
    assert_eq!(dropped["configured"], false);
    assert_eq!(dropped["last_outcome"], "failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sync_only_syncs_the_named_pairs_and_refuses_entries_that_are_not_configured() {
    let sim = sim_with(SEED, &[(1, 20), (2, 15), (3, 10)]);
    let server = sim.spawn().await.unwrap();
    let db = TestDb::new().await;
    let cfg = config(
        &server.base_url,
        &db.url,
        100,
        &[Tgt(AGENT, TOKEN, &[1, 2, 3])],
    );
    let only = format!("{AGENT}:1,{AGENT}:3");

    let sync = run(&args(&cfg, &["sync", "--only", &only])).await;

    assert!(sync.status.success(), "{sync:?}");
    assert!(sync.stdout.contains("2 pairs (0 failed)"), "{sync:?}");
    assert_eq!(visits_of(&db.pool, AGENT, 1).await.len(), 20);
    assert_eq!(visits_of(&db.pool, AGENT, 3).await.len(), 10);
    assert!(visits_of(&db.pool, AGENT, 2).await.is_empty());
    assert_eq!(sim.requests_for(AGENT, 2), 0, "user 2 was not asked for");

    // One entry is not configured: the command names it and syncs nothing, not even user 2.
    let not_configured = format!("{AGENT}:2,{AGENT}:99,7:1");
    let refused = run(&args(&cfg, &["sync", "--only", &not_configured])).await;
    let malformed = run(&args(&cfg, &["sync", "--only", "105131-2"])).await;
    let not_an_id = run(&args(&cfg, &["sync", "--only", "105131:abc"])).await;

    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(
        refused.stderr.contains(&format!(
            "--only {AGENT}:99, 7:1: not pairs of the configuration"
        )),
        "{refused:?}"
    );
    assert!(refused.stderr.contains("nothing was synced"), "{refused:?}");
    assert!(!refused.stdout.contains("pairs ("), "{refused:?}");
    assert!(visits_of(&db.pool, AGENT, 2).await.is_empty());
    assert_eq!(sim.requests_for(AGENT, 2), 0);
    for (bad, entry) in [(&malformed, "105131-2"), (&not_an_id, "105131:abc")] {
        assert_eq!(bad.status.code(), Some(2), "a usage error: {bad:?}");
        assert!(bad.stderr.contains(entry), "{bad:?}");
        assert!(bad.stderr.contains("expected AGENT:USER"), "{bad:?}");
    }

    // Repeating the option works as a list does.
    sim.reset_request_counts();
    let sync = run(&args(
        &cfg,
        &["sync", "--only", "105131:2", "--only", "105131:1"],
    ))
    .await;

    assert!(sync.status.success(), "{sync:?}");
    assert!(sync.stdout.contains("2 pairs (0 failed)"), "{sync:?}");
    assert_eq!(visits_of(&db.pool, AGENT, 2).await.len(), 15);
    assert_eq!(sim.requests_for(AGENT, 3), 0, "user 3 was not asked for");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rejects_lists_the_rejected_items_newest_first_with_each_filter() {
    let sim = sim_with(SEED, &[(1, 10), (2, 10)]);
    let item = |user: i64, at: DateTime<Utc>| {
        let activity = sim.visits(AGENT, user)[0].activity_id.clone();
        json!({
            "activity": null,
            "visitAt": iso(at),
            "lastOnlineAt": iso(at + chrono::Duration::minutes(4)),
            "duration": 4,
            "userId": user,
            "activityId": activity,
        })
    };
    let at = |user: i64, i: usize| {
        sim.visits(AGENT, user)[i].visit_at + chrono::Duration::milliseconds(500)
    };
    let mut bad_visit_at = item(1, at(1, 2));
    bad_visit_at["visitAt"] = json!("yesterday");
    let mut no_user = item(1, at(1, 5));
    no_user.as_object_mut().unwrap().remove("userId");
    let mut string_duration = item(2, at(2, 3));
    string_duration["duration"] = json!("4");
    sim.insert_raw_item(AGENT, 1, at(1, 2), bad_visit_at.clone());
    sim.insert_raw_item(AGENT, 1, at(1, 5), no_user.clone());
    sim.insert_raw_item(AGENT, 2, at(2, 3), string_duration.clone());
    let server = sim.spawn().await.unwrap();
    let db = TestDb::new().await;
    let cfg = config(
        &server.base_url,
        &db.url,
        100,
        &[Tgt(AGENT, TOKEN, &[1, 2])],
    );
    let sync = run(&args(&cfg, &["sync"])).await;
    assert!(sync.status.success(), "{sync:?}");
    // One of them was first seen three days ago.
    sqlx::query(
        "UPDATE sync_rejects SET first_seen_at = now() - interval '3 days' WHERE user_id = 2",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let two_days_ago = iso(Utc::now() - chrono::Duration::days(2));

    let all = run(&args(&cfg, &["rejects"])).await;
    let user_2 = run(&args(&cfg, &["rejects", "--user-id", "2", "--json"])).await;
    let limited = run(&args(&cfg, &["rejects", "--limit", "1", "--json"])).await;
    let since_1d = run(&args(&cfg, &["rejects", "--since", "1day", "--json"])).await;
    let since_at = run(&args(&cfg, &["rejects", "--since", &two_days_ago])).await;
    let since_4d = run(&args(&cfg, &["rejects", "--since", "4days", "--json"])).await;
    let other_agent = run(&args(&cfg, &["rejects", "--agent-id", "7"])).await;
    let bad_since = run(&args(&cfg, &["rejects", "--since", "last tuesday"])).await;

    assert!(all.status.success(), "{all:?}");
    let lines: Vec<&str> = all.stdout.lines().collect();
    assert!(lines[0].starts_with("first seen"), "{all:?}");
    let user_lines: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.contains(&format!("agent {AGENT} user ")))
        .collect();
    assert_eq!(user_lines.len(), 3, "{all:?}");
    assert!(
        user_lines[2].contains(&format!("agent {AGENT} user 2 ")),
        "the oldest comes last: {all:?}"
    );
    assert!(user_lines[2].contains("duration"), "{all:?}");
    assert_eq!(all.stdout.matches("\n    raw: {").count(), 3, "{all:?}");
    assert!(all.stdout.contains("3 matching rejects"), "{all:?}");
    // Where to file an issue, with an address.
    assert!(
        all.stdout
            .contains("file an issue at https://github.com/szb-sync/szb-sync/issues"),
        "{all:?}"
    );

    assert!(user_2.status.success(), "{user_2:?}");
    let doc = json_of(&user_2);
    assert_eq!(doc["matching"], 1, "{doc:#}");
    let only = &doc["rejects"][0];
    assert_eq!(only["agent_id"], AGENT);
    assert_eq!(only["user_id"], 2);
    assert_eq!(only["activity_filter"], Value::Null);
    assert_eq!(only["raw"], string_duration, "the item as served");
    assert!(
        only["reason"].as_str().unwrap().contains("duration"),
        "{doc:#}"
    );
    assert!(only["list_position"].as_i64().is_some(), "{doc:#}");

    let doc = json_of(&limited);
    assert_eq!(doc["matching"], 3, "{doc:#}");
    assert_eq!(doc["rejects"].as_array().unwrap().len(), 1, "{doc:#}");
    assert_eq!(doc["rejects"][0]["user_id"], 1, "the newest first: {doc:#}");

    let doc = json_of(&since_1d);
    assert_eq!(doc["matching"], 2, "{doc:#}");
    let raws: Vec<&Value> = doc["rejects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["raw"])
        .collect();
    assert!(
        raws.contains(&&bad_visit_at) && raws.contains(&&no_user),
        "{doc:#}"
    );
    assert!(since_at.status.success(), "{since_at:?}");
    assert!(
        since_at.stdout.contains("2 matching rejects"),
        "{since_at:?}"
    );
    assert_eq!(json_of(&since_4d)["matching"], 3);

    assert!(other_agent.status.success(), "{other_agent:?}");
    assert_eq!(other_agent.stdout.trim(), "no rejects match");
    assert_eq!(bad_since.status.code(), Some(2), "{bad_since:?}");
    assert!(
        bad_since.stderr.contains("last tuesday")
            && bad_since.stderr.contains("neither a duration"),
        "{bad_since:?}"
    );
    for out in [&all, &user_2, &limited, &since_at] {
        assert!(!out.both().contains(TOKEN), "{out:?}");
    }
}

/// A one-character typo in an agent's token: `sync` says the 401 once for the agent (its other
/// pairs point at it), names where the token was configured, and gives no platform feature
/// list, which no typo fixes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mistyped_token_is_said_once_per_agent_naming_where_it_was_configured() {
    let sim = sim_with(SEED, &[(1, 5), (2, 5), (3, 5)]);
    let server = sim.spawn().await.unwrap();
    let db = TestDb::new().await;
    let typo = format!("{}x", &TOKEN[..TOKEN.len() - 1]);
    let cfg = config(
        &server.base_url,
        &db.url,
        100,
        &[Tgt(AGENT, &typo, &[1, 2, 3])],
    );

    let sync = run(&args(&cfg, &["sync"])).await;

    assert_eq!(sync.status.code(), Some(1), "{sync:?}");
    let said = format!(
        "agent {AGENT}: the platform refused the token (HTTP 401): it does not know it; check \
         targets[0].token in the file {}",
        cfg.path().display()
    );
    assert_eq!(sync.stdout.matches(&said).count(), 1, "{sync:?}");
    let first = format!("agent {AGENT} user 1");
    assert_eq!(
        sync.stdout
            .matches(&format!("error: the same as {first} above"))
            .count(),
        2,
        "{sync:?}"
    );
    assert!(!sync.both().contains("用户明细"), "{sync:?}");
    assert!(!sync.both().contains(&typo), "{sync:?}");
}

/// The man page says more than the command line: the configuration, every key of it, the
/// environment, the files, the exit status and where to report a bug.
#[tokio::test]
async fn the_man_page_has_the_configuration_environment_files_and_exit_status() {
    let man = run(&["man"]).await;

    assert!(man.status.success(), "{man:?}");
    // roff writes a dash as `\-`.
    let text = man.stdout.replace("\\-", "-");
    for section in [
        ".SH CONFIGURATION",
        ".SH ENVIRONMENT",
        ".SH FILES",
        ".SH \"EXIT STATUS\"",
        ".SH \"REPORTING BUGS\"",
    ] {
        assert!(text.contains(section), "{section} in {text}");
    }
    let mut named = 0;
    for (section, keys) in szb_sync::settings::config_keys() {
        assert!(!keys.is_empty(), "{section}");
        for key in keys {
            let shown = if section == "targets" {
                (*key).to_owned()
            } else {
                format!("{section}.{key}")
            };
            assert!(text.contains(&shown), "{shown} in the man page");
            if section != "targets" {
                let var = format!("SZB_{section}__{key}").to_ascii_uppercase();
                assert!(text.contains(&var), "{var} in the man page");
            }
            named += 1;
        }
    }
    assert!(named > 30, "every key: {named}");
    for word in [
        "SZB_TARGETS",
        "DATABASE_URL",
        "RUST_LOG",
        "/etc/szb-sync/szb-sync.toml",
        "128+N",
    ] {
        assert!(text.contains(word), "{word}");
    }
    assert!(text.contains(szb_sync::ISSUES_URL));
}

/// The committed completion scripts: the shell, the file, under `deploy/completions/`.
const COMPLETIONS: [(&str, &str); 3] = [
    ("bash", "szb-sync.bash"),
    ("zsh", "_szb-sync"),
    ("fish", "szb-sync.fish"),
];

const REGENERATE: &str = "regenerate them with:\n  \
    cargo run -- completions bash > deploy/completions/szb-sync.bash\n  \
    cargo run -- completions zsh > deploy/completions/_szb-sync\n  \
    cargo run -- completions fish > deploy/completions/szb-sync.fish\n  \
    rm deploy/man/*.1 && cargo run -- man --out-dir deploy/man";

fn committed(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}; {REGENERATE}", path.display()))
}

#[tokio::test]
async fn completions_and_man_pages_equal_the_committed_files() {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let pages = tempfile::tempdir().unwrap();

    let man = run(&["man"]).await;
    let man_dir = run(&["man", "--out-dir", pages.path().to_str().unwrap()]).await;
    let mut scripts = Vec::new();
    for (shell, file) in COMPLETIONS {
        scripts.push((file, run(&["completions", shell]).await));
    }

    for (file, out) in &scripts {
        assert!(out.status.success(), "{out:?}");
        let path = deploy.join("completions").join(file);
        assert!(
            out.stdout == committed(&path),
            "{} is stale; {REGENERATE}",
            path.display()
        );
        assert!(out.stdout.contains("rejects"), "{file}");
    }
    assert!(man.status.success(), "{man:?}");
    assert!(man.stdout.starts_with(".ie \\n(.g .ds Aq"), "roff: {man:?}");
    let main_page = deploy.join("man/szb-sync.1");
    assert!(
        man.stdout == committed(&main_page),
        "{} is stale; {REGENERATE}",
        main_page.display()
    );
    assert!(man_dir.status.success(), "{man_dir:?}");
    let names = |dir: &Path| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    let generated = names(pages.path());
    assert!(generated.contains(&"szb-sync-rejects.1".to_owned()));
    assert_eq!(
        generated,
        names(&deploy.join("man")),
        "the man pages in deploy/man; {REGENERATE}"
    );
    for name in &generated {
        let path = deploy.join("man").join(name);
        assert!(
            std::fs::read_to_string(pages.path().join(name)).unwrap() == committed(&path),
            "{} is stale; {REGENERATE}",
            path.display()
        );
    }
}

/// What bash completes for `words` (the last one is the word under the cursor) with `script`
/// sourced, as bash-completion calls the function `complete -p szb-sync` names, in a directory
/// holding one file, `a-file-here`.
fn bash_completes(script: &Path, words: &[&str]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a-file-here"), "").unwrap();
    let program = r#"
        script="$1"; shift
        compopt() { :; }  # only valid inside a completion bash itself started
        source "$script"
        spec="$(complete -p szb-sync)" || exit 3
        fn="${spec##*-F }"; fn="${fn%% *}"
        COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
        "$fn" szb-sync "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
        printf '%s\n' "${COMPREPLY[@]}"
    "#;
    let out = std::process::Command::new("bash")
        .args(["--norc", "--noprofile", "-c", program, "bash"])
        .arg(script)
        .args(words)
        .current_dir(dir.path())
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "{words:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Bash completes below the top level, in the script `completions bash` prints and in the
/// committed copy the package installs: the options of a subcommand, the shells of
/// `completions`, and no file names for a value that is not a file.
#[tokio::test]
async fn bash_completes_subcommands_their_options_and_values() {
    let generated = run(&["completions", "bash"]).await;
    assert!(generated.status.success(), "{generated:?}");
    let dir = tempfile::tempdir().unwrap();
    let printed = dir.path().join("szb-sync.bash");
    std::fs::write(&printed, &generated.stdout).unwrap();
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/completions/szb-sync.bash");

    for script in [printed.as_path(), committed.as_path()] {
        let complete = |words: &[&str]| bash_completes(script, words);
        let top = complete(&["szb-sync", ""]);
        assert!(
            top.contains(&"sync".to_owned()) && top.contains(&"mock-api".to_owned()),
            "{top:?}"
        );
        let sync = complete(&["szb-sync", "sync", "--"]);
        assert!(
            sync.contains(&"--only".to_owned()) && sync.contains(&"--config".to_owned()),
            "sync --<TAB>: {sync:?}"
        );
        assert!(!sync.contains(&"--listen".to_owned()), "{sync:?}");
        let shells = complete(&["szb-sync", "completions", ""]);
        for shell in ["bash", "elvish", "fish", "powershell", "zsh"] {
            assert!(
                shells.contains(&shell.to_owned()),
                "completions <TAB>: {shells:?}"
            );
        }
        assert_eq!(complete(&["szb-sync", "completions", "f"]), ["fish"]);
        let mock = complete(&["szb-sync", "mock-api", "--"]);
        assert!(
            mock.contains(&"--listen".to_owned()) && !mock.contains(&"--config".to_owned()),
            "{mock:?}"
        );
        // A value that is not a file offers no file names; --config's does.
        for words in [
            &["szb-sync", "sync", "--only", ""][..],
            &["szb-sync", "mock-api", "--listen", ""],
            &["szb-sync", "rejects", "--agent-id", ""],
        ] {
            let values = complete(words);
            assert!(
                !values.contains(&"a-file-here".to_owned()),
                "{words:?}: {values:?}"
            );
        }
        assert_eq!(
            complete(&["szb-sync", "sync", "--config", "a-"]),
            ["a-file-here"]
        );
    }
}

#[tokio::test]
async fn each_subcommand_help_describes_its_own_options() {
    let cli = Cli::command();
    cli.clone().debug_assert();
    let mut undocumented = Vec::new();
    for sub in cli.get_subcommands() {
        assert!(sub.get_about().is_some(), "{} has no about", sub.get_name());
        for arg in sub.get_arguments().filter(|a| !a.is_hide_set()) {
            if arg.get_help().is_none() {
                undocumented.push(format!("{} {}", sub.get_name(), arg.get_id()));
            }
        }
    }
    assert!(
        undocumented.is_empty(),
        "options without help: {undocumented:?}"
    );

    for (sub, option, words) in [
        (
            "sync",
            "--only <AGENT:USER>",
            "Sync only these configured pairs",
        ),
        ("status", "--json", "Print one JSON document"),
        ("rejects", "--since <WHEN>", "first seen since then"),
        ("rejects", "--limit <LIMIT>", "[default: 50]"),
        ("completions", "<SHELL>", "possible values: bash"),
        ("man", "--out-dir <DIR>", "a page per subcommand"),
        ("resync", "--all", "Every configured pair"),
        (
            "resync",
            "--agent-id <AGENT>",
            "Only the pairs of this agent",
        ),
        (
            "run",
            "Options:",
            "the start-up log line names the next tick",
        ),
        ("sync", "Options:", "128 + the signal"),
        ("mock-api", "--listen <ADDR>", "any free port"),
        ("mock-api", "--latency <DURATION>", "over a real network"),
        ("bench", "--only <TEXT>", "--only quiet"),
    ] {
        let help = run(&[sub, "--help"]).await;
        assert!(help.status.success(), "{sub} --help: {help:?}");
        assert!(help.stdout.contains(option), "{sub} --help: {help:?}");
        assert!(help.stdout.contains(words), "{sub} --help: {help:?}");
    }
}

/// Pairs of `agent` whose mark is not at the start of their list.
async fn marked_users(db: &TestDb, agent: i64) -> Vec<i64> {
    sqlx::query_scalar(
        "SELECT user_id FROM sync_state WHERE agent_id = $1 AND settled_count > 0
          ORDER BY user_id",
    )
    .bind(agent)
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

/// `szb-sync ARGS` on a pseudo-terminal (util-linux `script`), typing `typed` into it.
async fn on_a_terminal(args: &[&str], typed: &str) -> Finished {
    let line = std::iter::once(BIN)
        .chain(args.iter().copied())
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = command("script", &["-qec", &line, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("util-linux script (Debian's bsdutils) runs the command on a terminal");
    let mut stdin = child.stdin.take().unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stdin, typed.as_bytes())
        .await
        .unwrap();
    drop(stdin);
    finish(child).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resync_forgets_every_mark_only_with_all_or_a_yes_on_a_terminal() {
    let sim = sim_with(SEED, &[(1, 12), (2, 9)]);
    let server = sim.spawn().await.unwrap();
    let db = TestDb::new().await;
    let cfg = config(
        &server.base_url,
        &db.url,
        100,
        &[Tgt(AGENT, TOKEN, &[1, 2])],
    );
    let path = cfg.path().to_str().unwrap();
    assert!(run(&with_config(&cfg, "sync")).await.status.success());
    assert_eq!(marked_users(&db, AGENT).await, [1, 2]);

    // No filter, no --all, no terminal: refused, and every mark stays.
    let bare = run(&args(&cfg, &["resync"])).await;
    let all_and_filter = run(&args(&cfg, &["resync", "--all", "--user-id", "1"])).await;
    let unmatched = run(&args(&cfg, &["resync", "--agent-id", "999"])).await;
    let declined = on_a_terminal(&["--config", path, "resync"], "\n").await;

    assert_eq!(bare.status.code(), Some(2), "{bare:?}");
    assert!(
        bare.stderr.contains(
            "resync without --agent-id or --user-id forgets the mark of every configured \
             pair (2 pairs); add --all to mean that"
        ),
        "{bare:?}"
    );
    assert_eq!(all_and_filter.status.code(), Some(2), "{all_and_filter:?}");
    assert!(
        all_and_filter
            .stderr
            .contains("'--all' cannot be used with"),
        "{all_and_filter:?}"
    );
    assert_eq!(unmatched.status.code(), Some(1), "{unmatched:?}");
    assert!(
        unmatched
            .stderr
            .contains("no configured pair matches --agent-id 999\n"),
        "only the filters given, as typed: {unmatched:?}"
    );
    assert!(declined.stdout.contains("[y/N]"), "{declined:?}");
    assert!(
        declined.stdout.contains("nothing forgotten"),
        "{declined:?}"
    );
    assert_eq!(declined.status.code(), Some(1), "{declined:?}");
    assert_eq!(
        marked_users(&db, AGENT).await,
        [1, 2],
        "nothing was forgotten"
    );

    // One pair by name; then the rest, by a yes on a terminal; then all, by --all.
    let one = run(&args(
        &cfg,
        &["resync", "--agent-id", &AGENT.to_string(), "--user-id", "2"],
    ))
    .await;
    assert!(one.status.success(), "{one:?}");
    assert!(
        one.stdout.contains("forgot 1 mark of 1 matching pair:"),
        "{one:?}"
    );
    assert_eq!(marked_users(&db, AGENT).await, [1]);

    let yes = on_a_terminal(&["--config", path, "resync"], "y\n").await;
    assert!(yes.status.success(), "{yes:?}");
    assert!(
        yes.stdout
            .contains("Forget the mark of every configured pair (2 pairs)?"),
        "{yes:?}"
    );
    assert!(
        yes.stdout.contains("forgot 2 marks of 2 matching pairs:"),
        "{yes:?}"
    );
    assert!(marked_users(&db, AGENT).await.is_empty());

    assert!(run(&with_config(&cfg, "sync")).await.status.success());
    assert_eq!(marked_users(&db, AGENT).await, [1, 2]);
    let all = run(&args(&cfg, &["resync", "--all"])).await;
    assert!(all.status.success(), "{all:?}");
    assert!(
        all.stdout.contains("forgot 2 marks of 2 matching pairs:"),
        "{all:?}"
    );
    assert!(marked_users(&db, AGENT).await.is_empty());
}

#[tokio::test]
async fn commands_that_read_no_configuration_refuse_config_before_or_after_them() {
    let cfg = write_config("[api]\ntoken = \"t\"\n[[targets]]\nagent_id = 1\nuser_ids = [2]\n");
    let path = cfg.path().to_str().unwrap();

    for (name, rest) in [
        ("mock-api", vec!["mock-api", "--listen", "127.0.0.1:0"]),
        ("completions", vec!["completions", "bash"]),
        ("man", vec!["man"]),
    ] {
        let mut before = vec!["--config", path];
        before.extend(&rest);
        let mut after = rest.clone();
        after.extend(["--config", path]);
        let help = run(&[name, "--help"]).await;

        let (before, after) = (run(&before).await, run(&after).await);

        assert!(
            before.stderr.contains(&format!(
                "error: {name} reads no configuration file, so --config would be ignored"
            )),
            "{name}: {before:?}"
        );
        // After the command too: the same words, not clap's bare "unexpected argument".
        assert!(
            after.stderr.contains(&format!(
                "error: {name} reads no configuration file, so --config would be ignored"
            )),
            "{name}: {after:?}"
        );
        for out in [&before, &after] {
            assert_eq!(out.status.code(), Some(2), "{name}: {out:?}");
            assert!(
                out.stderr.contains(&format!("Usage: szb-sync {name}")),
                "{out:?}"
            );
            assert!(out.stdout.is_empty(), "{name} did not run: {out:?}");
        }
        assert!(help.status.success(), "{help:?}");
        assert!(!help.stdout.contains("--config"), "{name} --help: {help:?}");
    }
    let scripts = run(&["completions", "bash"]).await;
    let mock_api = scripts
        .stdout
        .split("szb__sync__subcmd__mock__subcmd__api)")
        .nth(1)
        .and_then(|rest| rest.lines().find(|l| l.contains("opts=")))
        .unwrap_or_else(|| panic!("mock-api's options in {scripts:?}"));
    assert!(
        mock_api.contains("--listen") && !mock_api.contains("--config"),
        "{mock_api}"
    );

    // The commands that read it take it on either side, once.
    for args in [
        vec!["--config", path, "check", "--offline"],
        vec!["check", "--offline", "--config", path],
        vec!["check", "-c", path, "--offline"],
    ] {
        let out = run(&args).await;
        assert!(out.status.success(), "{args:?}: {out:?}");
    }
    let twice = run(&["-c", path, "check", "-c", path, "--offline"]).await;
    assert_eq!(twice.status.code(), Some(2), "{twice:?}");
    assert!(
        twice.stderr.contains("--config is given twice"),
        "{twice:?}"
    );
}

#[tokio::test]
async fn foot_guns_in_the_configuration_are_refused_naming_the_key() {
    let base = "[database]\nurl = \"postgres://root@127.0.0.1:1/x\"\n[api]\ntoken = \"t\"\n";
    let targets = "[[targets]]\nagent_id = 1\nuser_ids = [2]\n";
    let cases = [
        (
            "[sync]\nsettle_after = \"0s\"\n",
            "sync.settle_after must be at least 5m, got 0s: a visit is settled (final) once",
        ),
        (
            "[schedule]\ncron = \"0 0 0 31 2 *\"\n",
            "schedule.cron \"0 0 0 31 2 *\" never fires",
        ),
        (
            "[api]\nbase_url = \"https://shangzhibo.tv/api/v3\"\n",
            "api.base_url has the path /api/v3; give only the scheme and host (and port)",
        ),
    ];
    for (section, expected) in cases {
        // The [api] of `base` and of the case are one table.
        let toml = if section.starts_with("[api]") {
            base.replace("[api]\n", section) + targets
        } else {
            format!("{base}{section}{targets}")
        };
        let cfg = write_config(&toml);

        let out = run(&with_config(&cfg, "sync")).await;

        assert_eq!(out.status.code(), Some(1), "{toml}: {out:?}");
        assert!(out.stderr.contains(expected), "{toml}: {out:?}");
    }

    let cfg = write_config(&format!("{base}{targets}"));
    for (name, expected) in [
        (
            "SZB_API_TOKEN",
            "SZB_API_TOKEN matches no setting; did you mean SZB_API__TOKEN?",
        ),
        (
            "SZB_API__TOKNE",
            "(`api.tokne` is not a key); did you mean SZB_API__TOKEN?",
        ),
        (
            "SZB_FOO",
            "SZB_FOO matches no setting; a setting is SZB_ and its section and key",
        ),
    ] {
        let out = finish(
            szb(&with_config(&cfg, "sync"))
                .env(name, "x")
                .spawn()
                .unwrap(),
        )
        .await;

        assert_eq!(out.status.code(), Some(1), "{name}: {out:?}");
        assert!(out.stderr.contains(expected), "{name}: {out:?}");
    }
    let compose = finish(
        szb(&[
            "--config",
            cfg.path().to_str().unwrap(),
            "check",
            "--offline",
        ])
        .env("SZB_TOKEN_FILE", "./szb-token")
        .spawn()
        .unwrap(),
    )
    .await;
    assert!(
        compose.status.success(),
        "docker-compose.yml's variable is not ours: {compose:?}"
    );
}
