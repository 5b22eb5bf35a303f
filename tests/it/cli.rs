//! The day-two behaviour of the real binary: output into a closed pipe.

use crate::helpers::{AGENT, TOKEN, TestDb, sim_with, visits_of};
use crate::process::{BIN, Tgt, command, config, finish, szb};

/// The simulator seed of this module's worlds.
const SEED: u64 = 29;

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
    for cmd in [format!(
        "{BIN:?} --config {path:?} check --offline | head -1"
    )] {
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
