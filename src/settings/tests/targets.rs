//! The targets, their user-id files, the pairs they expand to, and the token files.

use std::io::Write as _;

use super::{TOKEN, error, load};
use crate::domain::PairKey;
use crate::settings::Settings;

#[test]
fn targets_are_checked() {
    let msg = error("[[targets]]\nagent_id = 1\nuser_ids = []\ntoken = \"t\"\n");
    assert!(
        msg.contains("targets[0].user_ids must not be empty"),
        "{msg}"
    );

    let msg = error(
        "[[targets]]\nagent_id = 1\nuser_ids = [2]\ntoken = \"t\"\n\
         [[targets]]\nagent_id = 1\nuser_ids = [3]\n",
    );
    assert!(
        msg.contains("targets[1]: no token: set targets[1].token, api.token or api.token_file"),
        "{msg}"
    );

    let msg = error("[api]\ntoken = \"t\"\n[[targets]]\nagent_id = 0\nuser_ids = [-2]\n");
    assert!(
        msg.contains("targets[0].agent_id must be a positive id, got 0"),
        "{msg}"
    );
    assert!(
        msg.contains("targets[0].user_ids must hold positive ids, got -2"),
        "{msg}"
    );

    let msg = error("[[targets]]\nuser_ids = [2]\n");
    assert!(msg.contains("missing field `agent_id`"), "{msg}");
}

#[test]
fn a_pair_listed_twice_is_refused() {
    let msg = error(
        "[api]\ntoken = \"t\"\n\
         [[targets]]\nagent_id = 1\nuser_ids = [2, 3]\n\
         [[targets]]\nagent_id = 1\nuser_ids = [3]\n",
    );
    assert!(
        msg.contains("targets[1]: agent 1 user 3 is already in targets[0]"),
        "{msg}"
    );

    // Another activity filter is another list upstream: allowed.
    assert!(
        load(
            "[api]\ntoken = \"t\"\n\
             [[targets]]\nagent_id = 1\nuser_ids = [3]\n\
             [[targets]]\nagent_id = 1\nuser_ids = [3]\nactivity_id = \"a\"\n",
        )
        .is_ok()
    );
}

#[test]
fn tokens_never_show_in_debug_output_or_errors() {
    let s = load(&format!(
        "[database]\nurl = \"postgres://u:{TOKEN}@db/szb\"\n\
         [api]\ntoken = \"{TOKEN}\"\n\
         [[targets]]\nagent_id = 1\nuser_ids = [2]\ntoken = \"{TOKEN}\"\n"
    ))
    .unwrap();
    let pairs = s.pairs().unwrap();

    assert!(!format!("{s:?} {pairs:?}").contains(TOKEN));

    let msg = error(&format!("[api]\ntoken = {{ x = \"{TOKEN}\" }}\n"));
    assert!(!msg.contains(TOKEN), "{msg}");
    let msg = error(&format!("[api]\ntoken = \"{TOKEN}\n"));
    assert!(!msg.contains(TOKEN), "{msg}");
    let msg = error(&format!("[database]\nurl = \"mysql://u:{TOKEN}@db/x\"\n"));
    assert!(
        msg.contains("database.url must be a postgres:// URL"),
        "{msg}"
    );
    assert!(!msg.contains(TOKEN), "{msg}");
}

#[test]
fn token_file_is_read_trimmed_and_used() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(file, "  {TOKEN}  ").unwrap();
    let toml = format!(
        "[api]\ntoken_file = {:?}\n\
         [[targets]]\nagent_id = 1\nuser_ids = [2]\n\
         [[targets]]\nagent_id = 3\nuser_ids = [4]\ntoken = \"own\"\n",
        file.path()
    );

    let s = load(&toml).unwrap();
    std::fs::remove_file(file.path()).unwrap();
    let pairs = s.pairs().unwrap();

    assert_eq!(pairs.len(), 2);
    assert_eq!(pairs[0].key, PairKey::new(1, 2, None));
    assert_eq!(pairs[0].token.expose(), TOKEN);
    assert_eq!(pairs[1].token.expose(), "own");
    assert!(!format!("{s:?}").contains(TOKEN));
}

#[test]
fn token_file_problems_name_the_path_not_the_content() {
    let msg = error("[api]\ntoken_file = \"/nonexistent/token\"\n");
    assert!(
        msg.starts_with("api.token_file /nonexistent/token: "),
        "{msg}"
    );

    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(file, "{TOKEN}").unwrap();
    let msg = error(&format!(
        "[api]\ntoken = \"t\"\ntoken_file = {:?}\n",
        file.path()
    ));
    assert!(
        msg.contains("api.token and api.token_file are both set"),
        "{msg}"
    );
    assert!(!msg.contains(TOKEN), "{msg}");

    let empty = tempfile::NamedTempFile::new().unwrap();
    let msg = error(&format!("[api]\ntoken_file = {:?}\n", empty.path()));
    assert!(msg.contains("is empty"), "{msg}");
}

#[test]
fn pairs_expand_each_user_and_prefer_the_target_token() {
    let s = load(
        "[api]\ntoken = \"shared\"\n\
         [[targets]]\nagent_id = 1\nuser_ids = [2, 3]\n\
         [[targets]]\nagent_id = 4\nuser_ids = [5]\ntoken = \"own\"\nactivity_id = \"a\"\n",
    )
    .unwrap();

    let pairs = s.pairs().unwrap();

    let got: Vec<_> = pairs
        .iter()
        .map(|p| (p.key.clone(), p.token.expose()))
        .collect();
    assert_eq!(
        got,
        vec![
            (PairKey::new(1, 2, None), "shared"),
            (PairKey::new(1, 3, None), "shared"),
            (PairKey::new(4, 5, Some("a".into())), "own"),
        ]
    );
}

fn ids_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    write!(file, "{text}").unwrap();
    file
}

#[test]
fn user_ids_can_come_from_a_file_beside_the_list() {
    // A byte-order mark, Windows line ends, comments and blank lines are all fine.
    let file = ids_file("\u{feff}# viewers of 105131\r\n3\r\n\n  4  # the boss\n5\n");
    let toml = format!(
        "[api]\ntoken = \"t\"\n[[targets]]\nagent_id = 1\nuser_ids = [2]\nuser_ids_file = {:?}\n\
         [[targets]]\nagent_id = 9\nuser_ids_file = {:?}\n",
        file.path(),
        file.path()
    );

    let pairs = load(&toml).unwrap().pairs().unwrap();

    let keys: Vec<(i64, i64)> = pairs
        .iter()
        .map(|p| (p.key.agent_id, p.key.user_id))
        .collect();
    assert_eq!(
        keys,
        [(1, 2), (1, 3), (1, 4), (1, 5), (9, 3), (9, 4), (9, 5)]
    );
}

#[test]
fn a_bad_line_in_a_user_ids_file_names_the_file_and_the_line() {
    let file = ids_file("3\n4x\n");
    let path = file.path().display().to_string();
    let toml =
        format!("[api]\ntoken = \"t\"\n[[targets]]\nagent_id = 1\nuser_ids_file = {path:?}\n");
    let msg = error(&toml);
    assert!(
        msg.contains(&format!(
            "targets[0].user_ids_file {path} line 2: \"4x\" is not a user id"
        )),
        "{msg}"
    );

    let negative = ids_file("3\n-4\n");
    let path = negative.path().display().to_string();
    let msg = error(&format!(
        "[api]\ntoken = \"t\"\n[[targets]]\nagent_id = 1\nuser_ids_file = {path:?}\n"
    ));
    assert!(
        msg.contains(&format!("{path} line 2: user ids must be positive, got -4")),
        "{msg}"
    );

    let msg = error(
        "[api]\ntoken = \"t\"\n[[targets]]\nagent_id = 1\nuser_ids_file = \"/nonexistent/ids\"\n",
    );
    assert!(
        msg.contains("targets[0].user_ids_file /nonexistent/ids: "),
        "{msg}"
    );

    let empty = ids_file("# nobody yet\n");
    let msg = error(&format!(
        "[api]\ntoken = \"t\"\n[[targets]]\nagent_id = 1\nuser_ids_file = {:?}\n",
        empty.path()
    ));
    assert!(msg.contains("holds no user ids"), "{msg}");
}

#[test]
fn a_pair_in_a_file_and_elsewhere_names_both_places() {
    let file = ids_file("7\n8\n3\n");
    let path = file.path().display().to_string();
    let msg = error(&format!(
        "[api]\ntoken = \"t\"\n\
         [[targets]]\nagent_id = 1\nuser_ids = [3]\n\
         [[targets]]\nagent_id = 1\nuser_ids_file = {path:?}\n"
    ));
    assert!(
        msg.contains(&format!(
            "targets[1]: agent 1 user 3 is listed at targets[1].user_ids_file {path} line 3 \
             and already at targets[0].user_ids"
        )),
        "{msg}"
    );
}

#[test]
fn a_token_set_twice_names_where_each_came_from() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(file, "[api]\ntoken = \"t0ken-secret\"").unwrap();
    let env = vec![(
        "SZB_API__TOKEN_FILE".to_owned(),
        "/run/credentials/szb-sync/token".to_owned(),
    )];

    let msg = Settings::load_with_env(Some(file.path()), env)
        .unwrap_err()
        .to_string();

    assert_eq!(
        msg,
        format!(
            "api.token (in the file {}) and api.token_file (in the environment variable \
             SZB_API__TOKEN_FILE) are both set; keep one",
            file.path().display()
        )
    );
    assert!(!msg.contains("t0ken-secret"));
}

/// Where each agent's token was configured, for the message of a refused token: its target's
/// own key in the file, `api.token` from the environment, `api.token_file` with its path.
#[test]
fn each_agents_token_origin_names_the_key_and_the_file_or_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("szb-sync.toml");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "from-a-file\n").unwrap();
    std::fs::write(
        &config,
        format!(
            "[api]\ntoken_file = {:?}\n\n[[targets]]\nagent_id = 1\nuser_ids = [1]\ntoken = \"own\"\n\n\
             [[targets]]\nagent_id = 2\nuser_ids = [1]\n",
            token_file.display().to_string()
        ),
    )
    .unwrap();
    let no_default = dir.path().join("no-default-token.toml");
    std::fs::write(&no_default, "[[targets]]\nagent_id = 3\nuser_ids = [1]\n").unwrap();

    let from_file = Settings::load_with_env(Some(&config), vec![])
        .unwrap()
        .token_origins();
    let from_env = Settings::load_with_env(
        Some(&no_default),
        vec![("SZB_API__TOKEN".into(), "t".into())],
    )
    .unwrap()
    .token_origins();

    let file = config.display();
    assert_eq!(
        from_file.get(&1).map(String::as_str),
        Some(format!("targets[0].token in the file {file}").as_str())
    );
    assert_eq!(
        from_file.get(&2).map(String::as_str),
        Some(
            format!(
                "the file {} (api.token_file) in the file {file}",
                token_file.display()
            )
            .as_str()
        )
    );
    assert_eq!(
        from_env.get(&3).map(String::as_str),
        Some("the environment variable SZB_API__TOKEN")
    );
}
