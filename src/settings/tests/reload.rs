//! What a reload can apply and what needs a restart.

use super::{TOKEN, load};
use crate::settings::Settings;

#[test]
fn a_reload_of_other_targets_and_tokens_needs_no_restart() {
    let running = load(
        "[api]\ntoken = \"a\"\n\
         [[targets]]\nagent_id = 1\nuser_ids = [2]\n",
    )
    .unwrap();
    let next = load(&format!(
        "[api]\ntoken = \"{TOKEN}\"\n\
         [[targets]]\nagent_id = 1\nuser_ids = [2, 3]\n\
         [[targets]]\nagent_id = 4\nuser_ids = [5]\ntoken = \"own\"\n"
    ))
    .unwrap();

    assert_eq!(running.restart_needed_for(&next), Vec::<&str>::new());
    assert_eq!(
        running.restart_needed_for(&running.clone()),
        Vec::<&str>::new()
    );
}

#[test]
fn every_key_a_reload_cannot_apply_is_named_once() {
    let running = Settings::default();
    let next = load(
        "[database]\nurl = \"postgres://other@db/szb\"\nschema = \"szb\"\nmax_connections = 4\n\
         statement_timeout = \"2m\"\nsynchronous_commit = \"off\"\n\
         [api]\npage_size = 10\n\
         [schedule]\ncron = \"0 0 * * * *\"\n\
         [sync]\nconcurrency = 2\n\
         [http]\nlisten = \"127.0.0.1:9187\"\ntoken = \"page\"\n",
    )
    .unwrap();

    assert_eq!(
        running.restart_needed_for(&next),
        [
            "database.url",
            "database.schema",
            "database.max_connections",
            "database.statement_timeout",
            "database.synchronous_commit",
            "[api] (other than tokens)",
            "schedule.cron",
            "[sync]",
            "http.listen",
            "http.token",
        ]
    );
}

#[test]
fn each_api_key_but_the_tokens_needs_a_restart() {
    let running = Settings::default();
    for change in [
        "base_url = \"https://example.com\"",
        "max_requests_per_second = 2.5",
        "max_body_bytes_in_flight = 1073741824",
        "allow_insecure_http = true",
    ] {
        let next = load(&format!("[api]\n{change}\n")).unwrap();

        assert_eq!(
            running.restart_needed_for(&next),
            ["[api] (other than tokens)"],
            "{change}"
        );
    }
}

#[test]
fn the_page_token_is_compared_by_value_wherever_it_is_written() {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), format!("{TOKEN}\n")).unwrap();
    let inline = load(&format!("[http]\ntoken = \"{TOKEN}\"\n")).unwrap();
    let in_file = load(&format!("[http]\ntoken_file = {:?}\n", file.path())).unwrap();
    let another = load("[http]\ntoken = \"another\"\n").unwrap();

    assert_eq!(inline.restart_needed_for(&in_file), Vec::<&str>::new());
    assert_eq!(inline.restart_needed_for(&another), ["http.token"]);
}
