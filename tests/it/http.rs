//! The operators' listener: `/metrics` (checked by promtool), `/livez`, `/readyz`, `/healthz`,
//! the status page's views, and the page itself in headless Chromium, against a daemon that
//! synced the simulator into a real database.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;
use szb_simulator::SpawnedSimulator;
use szb_sync::app::App;
use szb_sync::secret::Secret;
use szb_sync::settings::Settings;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::helpers::{
    AGENT, TOKEN, TestDb, far_year, get, only_at_start, sim_with, target, test_settings,
};

const GOOD_USERS: [i64; 2] = [1, 2];
/// Synced with a token the simulator refuses: a failing pair.
const REFUSED_USER: i64 = 3;
const WRONG_TOKEN: &str = "tok-wrong-very-secret";

/// A daemon (`App::run`, as `szb-sync run` runs it) with its listener, over two good pairs with
/// visits and a reject, and one pair whose token is refused.
struct Daemon {
    db: TestDb,
    _server: SpawnedSimulator,
    base: String,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Daemon {
    async fn start() -> Daemon {
        let sim = sim_with(7, &[(GOOD_USERS[0], 250), (GOOD_USERS[1], 40)]);
        let at = sim.visits(AGENT, GOOD_USERS[1])[10].visit_at;
        sim.insert_raw_item(
            AGENT,
            GOOD_USERS[1],
            at,
            json!({"visitAt": "yesterday", "lastOnlineAt": "today", "duration": 1,
                   "userId": GOOD_USERS[1], "activityId": "x"}),
        );
        let server = sim.spawn().await.unwrap();
        let db = TestDb::new().await;
        let mut settings = test_settings(
            &server.base_url,
            vec![
                target(AGENT, TOKEN, &GOOD_USERS),
                target(AGENT, WRONG_TOKEN, &[REFUSED_USER]),
            ],
        );
        settings.api.page_size = 100;
        settings.database.url = Secret::new(db.url.clone());
        // Only the start-up pass runs.
        settings.schedule.cron = only_at_start();
        let (base, stop, task) = listening(settings).await;
        let d = Daemon {
            db,
            _server: server,
            base,
            stop,
            task: Some(task),
        };
        d.wait_for_last_pass().await;
        d
    }

    async fn wait_for_last_pass(&self) {
        for _ in 0..600 {
            if let Ok((200, body)) = get(&format!("{}/api/overview", self.base)).await
                && serde_json::from_str::<Value>(&body).unwrap()["last"].is_object()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no pass finished within 60 s");
    }

    async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("the daemon stops")
                .unwrap();
        }
    }
}

/// A daemon over `settings` (`App::run`, as `szb-sync run` runs it) with its listener on a
/// port bound here once and handed over; its base URL, and how to stop it.
async fn listening(settings: Settings) -> (String, CancellationToken, JoinHandle<()>) {
    settings.validate().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = App::build(&settings).unwrap().with_http_listener(listener);
    let stop = CancellationToken::new();
    let daemon = stop.clone();
    let task = tokio::spawn(async move { app.run(daemon, None).await.unwrap() });
    (format!("http://{addr}"), stop, task)
}

async fn stop_daemon(stop: CancellationToken, task: JoinHandle<()>) {
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("the daemon stops")
        .unwrap();
}

/// Polls `path` until `until` accepts its answer.
async fn answer_when(base: &str, path: &str, until: impl Fn(&str) -> bool) -> (u16, String) {
    for _ in 0..600 {
        if let Ok((status, body)) = get(&format!("{base}{path}")).await
            && until(&body)
        {
            return (status, body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{path} did not answer as expected within 60 s");
}

/// The JSON of a GET that must answer 200.
async fn get_json(url: &str) -> Value {
    let (status, body) = get(url).await.unwrap();
    assert_eq!(status, 200, "{url}: {body}");
    serde_json::from_str(&body).unwrap()
}

async fn scalar(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// The value of the one series of `metrics` that starts with `series` (its name and labels).
fn sample(metrics: &str, series: &str) -> f64 {
    let line = metrics
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .unwrap_or_else(|| panic!("no series {series} in:\n{metrics}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Runs `program` with `input` on stdin; fails the test, naming the Debian package, when it is
/// not installed (`scripts/install-test-tools` installs it).
fn pipe(program: &str, args: &[&str], package: &str, input: &str) -> std::process::Output {
    use std::io::Write as _;
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{program} is needed by this test ({e}): apt-get install -y {package}")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test]
async fn metrics_count_what_landed_with_no_user_label_or_token() {
    let d = Daemon::start().await;
    let pool = &d.db.pool;

    let (status, metrics) = get(&format!("{}/metrics", d.base)).await.unwrap();

    assert_eq!(status, 200);
    let agent = format!("agent=\"{AGENT}\"");
    let visits = scalar(pool, "SELECT count(*) FROM visits").await;
    assert_eq!(visits, 290);
    assert_eq!(
        sample(
            &metrics,
            &format!("szb_visits_written_total{{{agent},kind=\"inserted\"}}")
        ),
        visits as f64
    );
    assert_eq!(
        sample(&metrics, &format!("szb_rejects_total{{{agent}}}")),
        scalar(pool, "SELECT count(*) FROM sync_rejects").await as f64
    );
    let requests = scalar(pool, "SELECT sum(requests)::int8 FROM sync_passes").await;
    let ok = sample(
        &metrics,
        &format!("szb_requests_total{{{agent},status=\"200\"}}"),
    );
    let refused = sample(
        &metrics,
        &format!("szb_requests_total{{{agent},status=\"401\"}}"),
    );
    assert_eq!(ok + refused, requests as f64, "every request counted once");
    assert_eq!(refused, 1.0, "a refused token is not retried");
    assert_eq!(
        sample(
            &metrics,
            &format!("szb_request_duration_seconds_count{{{agent}}}")
        ),
        requests as f64
    );
    assert_eq!(sample(&metrics, "szb_pairs{state=\"ok\"}"), 2.0);
    assert_eq!(sample(&metrics, "szb_pairs{state=\"failing\"}"), 1.0);
    assert_eq!(sample(&metrics, "szb_pairs{state=\"never_synced\"}"), 0.0);
    assert_eq!(
        sample(&metrics, "szb_pair_runs_total{outcome=\"failed\"}"),
        1.0
    );
    assert_eq!(
        sample(&metrics, "szb_passes_total{outcome=\"failed\"}"),
        1.0
    );
    assert_eq!(sample(&metrics, "szb_pass_duration_seconds_count"), 1.0);
    let age = sample(&metrics, "szb_oldest_pair_sync_age_seconds");
    assert!((0.0..60.0).contains(&age), "{age}");
    assert!(sample(&metrics, "szb_request_concurrency_limit") >= 1.0);
    assert!(metrics.contains(&format!(
        "szb_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    )));
    assert!(!metrics.contains("user"), "no per-user label:\n{metrics}");
    assert!(!metrics.contains(TOKEN) && !metrics.contains(WRONG_TOKEN));
    // The dashboard and the alert rules chart only series that exist.
    let served: std::collections::HashSet<&str> = metrics
        .lines()
        .filter_map(|l| match l.strip_prefix("# TYPE ") {
            Some(family) => family.split(' ').next(),
            None => l.split(['{', ' ']).next(),
        })
        .collect();
    assert_eq!(
        sample(&metrics, &format!("szb_retries_total{{{agent}}}")),
        0.0,
        "per-agent counters start at zero"
    );
    for file in [
        "deploy/grafana/szb-sync.json",
        "deploy/prometheus/alerts.yml",
    ] {
        let text = std::fs::read_to_string(file).unwrap();
        let used: std::collections::BTreeSet<&str> = text
            .match_indices("szb_")
            .map(|(at, _)| {
                let rest = &text[at..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                &rest[..end]
            })
            .collect();
        assert!(used.len() >= 4, "{file} uses {used:?}");
        for name in used {
            assert!(
                served.contains(name),
                "{file} uses {name}, which /metrics does not serve"
            );
        }
    }
    d.stop().await;
}

#[tokio::test]
#[ignore = "needs promtool: see docs/development.md"]
async fn metrics_pass_promtool_check_metrics() {
    let d = Daemon::start().await;
    let (status, metrics) = get(&format!("{}/metrics", d.base)).await.unwrap();
    assert_eq!(status, 200);
    let checked = pipe("promtool", &["check", "metrics"], "prometheus", &metrics);
    assert!(
        checked.status.success(),
        "promtool check metrics:\n{}{}\n{metrics}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    d.stop().await;
}

#[tokio::test]
async fn health_answers_200_with_a_reason_and_the_views_list_failing_pairs_first() {
    let d = Daemon::start().await;

    let (live, live_body) = get(&format!("{}/livez", d.base)).await.unwrap();
    let (ready, ready_body) = get(&format!("{}/readyz", d.base)).await.unwrap();
    let (healthz, healthz_body) = get(&format!("{}/healthz", d.base)).await.unwrap();

    assert_eq!((live, ready, healthz), (200, 200, 200));
    assert!(
        live_body.starts_with("ok: the schedule loop ran"),
        "{live_body}"
    );
    assert_eq!(
        ready_body, "ok: the last pass ran 3 pairs, 1 failed\n",
        "one failed pair of three is not a wholesale failure"
    );
    assert!(healthz_body.starts_with("ok:"), "{healthz_body}");

    let attention = get_json(&format!("{}/api/pairs", d.base)).await;
    assert_eq!(attention["matching"], 1, "{attention}");
    let row = &attention["rows"][0];
    assert_eq!(row["user_id"], REFUSED_USER);
    assert_eq!(row["state"], "failing");
    let error = row["last_error"].as_str().unwrap();
    assert!(
        error.contains("401") || error.contains("refused"),
        "{error}"
    );
    assert!(!attention.to_string().contains(WRONG_TOKEN));

    let all = get_json(&format!("{}/api/pairs?view=all&per=2", d.base)).await;
    assert_eq!(all["matching"], 3);
    assert_eq!(all["rows"].as_array().unwrap().len(), 2, "paged");
    assert_eq!(all["rows"][0]["state"], "failing", "failing first");
    let second = get_json(&format!("{}/api/pairs?view=all&per=2&page=1", d.base)).await;
    assert_eq!(second["rows"].as_array().unwrap().len(), 1);
    let past = get_json(&format!("{}/api/pairs?view=all&per=2&page=5", d.base)).await;
    assert_eq!(
        (
            past["matching"].as_i64(),
            past["rows"].as_array().unwrap().len()
        ),
        (Some(3), 0),
        "a page past the end still counts the pairs"
    );

    let found = get_json(&format!("{}/api/pairs?q={AGENT}:{}", d.base, GOOD_USERS[1])).await;
    assert_eq!(found["matching"], 1);
    assert_eq!(found["rows"][0]["state"], "ok");
    assert_eq!(found["rows"][0]["settled"], 40);
    let (bad, why) = get(&format!("{}/api/pairs?q={AGENT}:x", d.base))
        .await
        .unwrap();
    assert_eq!(bad, 400);
    assert!(why.contains("user id \"x\" is not a number"), "{why}");

    let rejects = get_json(&format!("{}/api/rejects", d.base)).await;
    assert_eq!(rejects["matching"], 1);
    let past = get_json(&format!("{}/api/rejects?page=3", d.base)).await;
    assert_eq!(
        (
            past["matching"].as_i64(),
            past["rows"].as_array().unwrap().len()
        ),
        (Some(1), 0),
        "a page past the end still counts the rejects"
    );
    assert_eq!(rejects["rows"][0]["user_id"], GOOD_USERS[1]);
    assert!(
        rejects["rows"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("visitAt")
    );

    let overview = get_json(&format!("{}/api/overview", d.base)).await;
    assert_eq!(overview["pairs"]["configured"], 3);
    assert_eq!(overview["pairs"]["failing"], 1);
    assert_eq!(overview["totals"]["visits"], 290);
    assert_eq!(overview["totals"]["rejects"], 1);
    assert_eq!(overview["last"]["failed"], 1);
    assert_eq!(overview["last"]["inserted"], 290);
    assert!(overview["current"].is_null());
    assert_eq!(overview["passes"][0]["outcome"], "failed");
    d.stop().await;
}

#[tokio::test]
async fn readyz_is_503_until_the_database_is_there_while_livez_says_starting() {
    let db = TestDb::new().await;
    let mut settings = test_settings("http://127.0.0.1:9", vec![target(AGENT, TOKEN, &[1])]);
    // Nothing listens on port 1: migrations cannot run.
    settings.database.url = Secret::new("postgres://root:db-password-secret@127.0.0.1:1/nothing");
    let (base, stop, task) = listening(settings).await;

    let (status, body) = answer_when(&base, "/readyz", |_| true).await;
    assert_eq!(status, 503);
    assert_eq!(
        body,
        "not ready: the migrations have not run yet (is the database reachable?)\n"
    );
    let (live, body) = get(&format!("{base}/livez")).await.unwrap();
    assert_eq!(live, 200);
    assert!(body.starts_with("ok: starting"), "{body}");
    let (metrics, text) = get(&format!("{base}/metrics")).await.unwrap();
    assert_eq!(metrics, 200, "counters are served without the database");
    assert!(text.contains("szb_build_info"));
    assert!(!text.contains("db-password-secret"));
    stop_daemon(stop, task).await;
    drop(db);
}

#[tokio::test]
async fn readyz_is_503_when_every_pair_of_the_last_pass_failed() {
    let sim = sim_with(7, &[(1, 10)]);
    let server = sim.spawn().await.unwrap();
    let db = TestDb::new().await;
    let mut settings = test_settings(&server.base_url, vec![target(AGENT, WRONG_TOKEN, &[1, 2])]);
    settings.database.url = Secret::new(db.url.clone());
    settings.schedule.cron = only_at_start();
    let (base, stop, task) = listening(settings).await;

    let (status, body) = answer_when(&base, "/readyz", |b| b.contains("last pass")).await;
    assert_eq!(status, 503);
    assert_eq!(
        body,
        "not ready: the last pass failed for all 2 of its pairs (see the status page)\n"
    );
    assert!(!body.contains(WRONG_TOKEN));
    stop_daemon(stop, task).await;
}

/// Chromium, headless, with a throwaway profile; `args` after the common ones.
fn chromium(args: &[&str]) -> std::process::Output {
    let profile = tempfile::tempdir().unwrap();
    let binary = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            std::process::Command::new(b)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .expect("chromium is needed by this test: apt-get install -y chromium");
    std::process::Command::new(binary)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-dev-shm-usage",
            &format!("--user-data-dir={}", profile.path().display()),
            "--virtual-time-budget=5000",
        ])
        .args(args)
        .output()
        .unwrap()
}

/// The page at `url` as its script left it (`--dump-dom` after Chromium's virtual time ran out).
async fn page_as_the_script_left_it(url: String) -> String {
    let dom = tokio::task::spawn_blocking(move || chromium(&["--dump-dom", &url]))
        .await
        .unwrap();
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    String::from_utf8_lossy(&dom.stdout).into_owned()
}

/// A listener whose database never answers (nothing listens on port 1): the page itself is
/// served, its views are not.
async fn listening_without_a_database() -> (String, CancellationToken, JoinHandle<()>) {
    let mut settings = test_settings("http://127.0.0.1:9", vec![target(AGENT, TOKEN, &[1])]);
    settings.database.url = Secret::new("postgres://root:db-password-secret@127.0.0.1:1/nothing");
    listening(settings).await
}

#[tokio::test]
async fn the_status_page_says_loading_in_every_view_until_its_script_has_data() {
    let (base, stop, task) = listening_without_a_database().await;

    let (status, html) = get(&format!("{base}/")).await.unwrap();

    assert_eq!(status, 200);
    assert!(html.contains("<body data-state=\"loading\">"), "{html}");
    for place in ["passes", "totals", "pairs", "rejects"] {
        let at = html
            .find(&format!("id=\"{place}\""))
            .unwrap_or_else(|| panic!("#{place} on the page"));
        let next = &html[at..at + 160.min(html.len() - at)];
        assert!(next.contains("loading…"), "#{place} says loading: {next}");
    }
    assert!(html.contains("<span id=\"refreshed\">loading…</span>"));
    stop_daemon(stop, task).await;
}

#[tokio::test]
#[ignore = "needs chromium: see docs/development.md"]
async fn the_status_page_shows_an_error_in_place_of_views_it_could_not_load() {
    let (base, stop, task) = listening_without_a_database().await;

    let html = page_as_the_script_left_it(format!("{base}/")).await;

    assert!(html.contains("data-state=\"error\""), "{html}");
    assert!(
        html.contains("<strong>could not load</strong>") && html.contains("/api/overview: 503"),
        "the banner names the view and its answer:\n{html}"
    );
    assert!(
        !html.contains("loading…"),
        "every place that was loading now says it could not:\n{html}"
    );
    assert_eq!(
        html.matches("could not load (retrying every 5 s)").count(),
        4,
        "passes, totals, pairs and rejects:\n{html}"
    );
    assert!(html.contains("refresh failed at"), "{html}");
    assert!(!html.contains("db-password-secret"));
    stop_daemon(stop, task).await;
}

#[tokio::test]
#[ignore = "needs chromium: see docs/development.md"]
async fn the_status_page_shows_passes_failing_pairs_rejects_and_totals_in_a_real_browser() {
    let d = Daemon::start().await;
    let url = format!("{}/?q=", d.base);

    let html = page_as_the_script_left_it(format!("{}/", d.base)).await;

    assert!(
        html.contains("data-loaded=\"yes\"") && html.contains("data-state=\"ready\""),
        "the script ran and every view answered:\n{html}"
    );
    assert!(
        !html.contains("loading…") && !html.contains("could not load"),
        "no view is left loading:\n{html}"
    );
    // The next pass is decades away (the test's cron): a date, not "in 26328 d".
    assert!(
        html.contains(&format!("on {}-01-01 00:00 UTC", far_year())),
        "the next due pass as a date:\n{html}"
    );
    for shown in [
        // Passes: the last one, failed, with its pairs.
        "<th>last</th><td><span class=\"failed\">failed</span></td>",
        "3 / 3 pairs",
        // The failing pair first, with its error.
        &format!("{AGENT}:{REFUSED_USER}</td><td class=\"failing\">failing (1×)"),
        // The reject.
        "visitAt",
        // Totals.
        "<div class=\"n \">290</div><div class=\"l\">visits</div>",
        "<div class=\"n failing\">1</div><div class=\"l\">pairs failing</div>",
        "<div class=\"n \">3</div><div class=\"l\">pairs configured</div>",
    ] {
        assert!(html.contains(shown), "{shown:?} not on the page:\n{html}");
    }
    assert!(!html.contains(WRONG_TOKEN) && !html.contains(TOKEN));

    // The search box, through the address: one pair, and it is ok.
    let html = page_as_the_script_left_it(format!("{url}{AGENT}:{}", GOOD_USERS[0])).await;
    assert!(
        html.contains("1–1 of 1")
            && html.contains(&format!(
                "{AGENT}:{}</td><td class=\"ok\">ok",
                GOOD_USERS[0]
            )),
        "{html}"
    );

    // A screenshot for the README, when asked: STATUS_PAGE_SCREENSHOT=docs/status-page.png. Not
    // an SZB_ name: szb-sync refuses those it does not know, and children of tests inherit it.
    if let Ok(path) = std::env::var("STATUS_PAGE_SCREENSHOT") {
        let base = d.base.clone();
        let shot = tokio::task::spawn_blocking(move || {
            chromium(&[
                &format!("--screenshot={path}"),
                "--window-size=1280,1100",
                &format!("{base}/"),
            ])
        })
        .await
        .unwrap();
        assert!(shot.status.success());
    }
    d.stop().await;
}
