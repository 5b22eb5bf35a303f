//! The simulator's own tests: the endpoint's answers, the knobs, and the demo's world.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

use crate::arrivals::{ArrivalPlan, Picker};
use crate::http::iso;
use crate::{Fault, Simulator, SpawnedSimulator, TruthVisit};

const AGENT: i64 = 105_131;
const USER: i64 = 15_460_259;
const TOKEN: &str = "token-105131";

fn sim_with_visits(n: usize) -> Simulator {
    let sim = Simulator::new(7);
    sim.add_agent(AGENT, TOKEN);
    sim.generate_visits(AGENT, USER, n);
    sim
}

fn visits_url(query: &str) -> String {
    format!("/api/v3/agent/{AGENT}/user/{USER}/stats/visits?{query}")
}

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }

    fn header(&self, name: &str) -> &str {
        self.headers[name].to_str().unwrap()
    }
}

async fn get_as(server: &SpawnedSimulator, path: &str, authorization: Option<&str>) -> Reply {
    // reqwest is built without a TLS provider and wants one even for plain http.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut request = reqwest::Client::new().get(format!("{}{path}", server.base_url));
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let response = request.send().await.expect("the simulator answers");
    Reply {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.text().await.expect("a body"),
    }
}

async fn get(server: &SpawnedSimulator, path: &str) -> Reply {
    get_as(server, path, Some(&format!("bearer {TOKEN}"))).await
}

/// `(visitAt, activityId)` of each item of a page.
fn keys(page: &Value) -> Vec<(String, String)> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            let visit_at = i["visitAt"].as_str().unwrap().to_owned();
            (visit_at, i["activityId"].as_str().unwrap().to_owned())
        })
        .collect()
}

fn truth_keys(visits: &[TruthVisit]) -> Vec<(String, String)> {
    visits
        .iter()
        .map(|v| (iso(v.visit_at), v.activity_id.clone()))
        .collect()
}

#[tokio::test]
async fn ascending_pages_partition_the_list_by_offset() {
    let sim = sim_with_visits(25);
    let server = sim.spawn().await.unwrap();

    let mut walked = Vec::new();
    for (page, expected_len) in [(1, 10), (2, 10), (3, 5), (4, 0)] {
        let reply = get(
            &server,
            &visits_url(&format!("page={page}&order=visitAt%20asc")),
        )
        .await;
        assert_eq!(reply.status, 200);
        let body = reply.json();
        assert_eq!(
            body["pager"],
            serde_json::json!({"page": page, "pageSize": 10, "total": 25})
        );
        assert_eq!(body["items"].as_array().unwrap().len(), expected_len);
        walked.extend(keys(&body));
    }

    assert_eq!(walked, truth_keys(&sim.visits(AGENT, USER)));
    assert_eq!(sim.requests_for(AGENT, USER), 4);
}

#[tokio::test]
async fn descending_is_the_default_order_and_reverses_the_list() {
    let sim = sim_with_visits(30);
    sim.add_tie(AGENT, USER, sim.visits(AGENT, USER)[29].visit_at);
    let server = sim.spawn().await.unwrap();

    let default = get(&server, &visits_url("pageSize=1000")).await.json();
    let with_plus = get(&server, &visits_url("pageSize=1000&order=visitAt+desc")).await;
    let with_space = get(&server, &visits_url("pageSize=1000&order=visitAt%20desc")).await;

    let mut expected = sim.visits(AGENT, USER);
    expected.sort_by_key(|v| std::cmp::Reverse(v.visit_at));
    assert_eq!(keys(&default), truth_keys(&expected));
    assert_eq!(keys(&with_plus.json()), keys(&default));
    assert_eq!(keys(&with_space.json()), keys(&default));
}

#[tokio::test]
async fn invalid_query_values_are_rejected_with_a_json_400() {
    let sim = sim_with_visits(3);
    let server = sim.spawn().await.unwrap();

    for query in [
        "pageSize=1001",
        "pageSize=0",
        "pageSize=ten",
        "page=0",
        "page=-1",
        "order=visitAt",
        "order=visitAt%20ASC",
    ] {
        let reply = get(&server, &visits_url(query)).await;
        assert_eq!(reply.status, 400, "{query}");
        assert!(reply.json()["message"].is_string(), "{query}");
        assert_eq!(reply.header("content-type"), "application/json");
        assert!(httpdate::parse_http_date(reply.header("date")).is_ok());
    }
    let largest = get(&server, &visits_url("pageSize=1000")).await;
    assert_eq!(largest.status, 200);
}

#[tokio::test]
async fn the_token_is_checked_per_agent() {
    let sim = sim_with_visits(3);
    sim.add_agent(200_001, "token-200001");
    let server = sim.spawn().await.unwrap();
    let url = visits_url("");

    assert_eq!(get_as(&server, &url, None).await.status, 401);
    assert_eq!(get_as(&server, &url, Some("bearer nope")).await.status, 401);
    let other_agents = get_as(&server, &url, Some("Bearer token-200001")).await;
    assert_eq!(other_agents.status, 401);
    assert!(other_agents.json()["message"].is_string());
    let upper = get_as(&server, &url, Some(&format!("Bearer {TOKEN}"))).await;
    assert_eq!(upper.status, 200);

    let unknown_agent = "/api/v3/agent/1/user/2/stats/visits";
    assert_eq!(get(&server, unknown_agent).await.status, 404);
    sim.set_agent_forbidden(AGENT, true);
    assert_eq!(get(&server, &url).await.status, 403);
}

#[tokio::test]
async fn the_activity_filter_keeps_only_that_activity() {
    let sim = sim_with_visits(60);
    let wanted = sim.visits(AGENT, USER)[0].activity_id.clone();
    let server = sim.spawn().await.unwrap();

    let reply = get(
        &server,
        &visits_url(&format!("activityId={wanted}&pageSize=1000")),
    )
    .await;

    let body = reply.json();
    let expected = sim
        .visits(AGENT, USER)
        .into_iter()
        .filter(|v| v.activity_id == wanted)
        .count();
    assert_eq!(body["pager"]["total"], expected as u64);
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), expected);
    assert!(items.iter().all(|i| i["activityId"] == wanted.as_str()));
}

#[tokio::test]
async fn items_have_the_sample_shape_and_some_activities_say_update_at() {
    let sim = sim_with_visits(200);
    let server = sim.spawn().await.unwrap();

    let body = get(&server, &visits_url("pageSize=1000")).await.json();

    let mut spellings = HashSet::new();
    for item in body["items"].as_array().unwrap() {
        let item_keys: HashSet<&str> = item
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        let expected_keys = [
            "activity",
            "visitAt",
            "lastOnlineAt",
            "duration",
            "userId",
            "activityId",
        ];
        assert_eq!(item_keys, expected_keys.into_iter().collect());
        assert!(item["visitAt"].as_str().unwrap().ends_with(".000Z"));

        let activity = item["activity"].as_object().unwrap();
        let truth = sim.activity(activity["id"].as_str().unwrap()).unwrap();
        let spelling = if truth.spells_update_at {
            "updateAt"
        } else {
            "updatedAt"
        };
        let other = if truth.spells_update_at {
            "updatedAt"
        } else {
            "updateAt"
        };
        assert!(activity.contains_key(spelling) && !activity.contains_key(other));
        assert_eq!(activity.len(), 15);
        spellings.insert(spelling);
    }
    assert_eq!(spellings.len(), 2, "both spellings occur");
}

#[tokio::test]
async fn a_fault_is_consumed_by_exactly_one_request() {
    let sim = sim_with_visits(25);
    sim.push_fault(Fault::Status(503));
    sim.push_fault(Fault::Truncated);
    let server = sim.spawn().await.unwrap();
    let url = visits_url("pageSize=10");

    let failed = get(&server, &url).await;
    let truncated = get(&server, &url).await;
    let normal = get(&server, &url).await;

    assert_eq!(failed.status, 503);
    assert!(failed.json()["message"].is_string());
    assert_eq!(truncated.status, 200);
    assert!(serde_json::from_str::<Value>(&truncated.body).is_err());
    assert_eq!(
        truncated.header("content-length"),
        truncated.body.len().to_string()
    );
    assert_eq!(normal.status, 200);
    assert_eq!(normal.json()["items"].as_array().unwrap().len(), 10);
    assert_eq!(sim.request_count(), 3);
}

#[tokio::test]
async fn body_faults_spoil_the_answer_as_described() {
    let sim = sim_with_visits(25);
    for fault in [
        Fault::TooManyRequests {
            retry_after: "7".into(),
        },
        Fault::NotJson,
        Fault::DeepNesting(300),
        Fault::Huge(1 << 20),
        Fault::BadPager,
        Fault::Slow(std::time::Duration::from_millis(50)),
    ] {
        sim.push_fault(fault);
    }
    let server = sim.spawn().await.unwrap();
    let url = visits_url("");

    let limited = get(&server, &url).await;
    assert_eq!((limited.status, limited.header("retry-after")), (429, "7"));
    let html = get(&server, &url).await;
    assert!(html.body.starts_with("<!DOCTYPE html>"));
    let deep = get(&server, &url).await;
    assert!(deep.body.contains(&"[".repeat(300)));
    let huge = get(&server, &url).await;
    assert!(huge.body.len() >= 1 << 20);
    assert_eq!(huge.json()["items"].as_array().unwrap().len(), 10);
    let bad_pager = get(&server, &url).await.json();
    assert_eq!(bad_pager["pager"]["total"], 0);
    assert_eq!(bad_pager["items"].as_array().unwrap().len(), 10);
    // On a paused clock the answer's delay is the simulator's own sleep (tokio's timer wheel
    // rounds it up to the next millisecond), however loaded the machine.
    tokio::time::pause();
    let started = tokio::time::Instant::now();
    assert_eq!(get(&server, &url).await.status, 200);
    let delay = started.elapsed().as_millis();
    assert!((50..=51).contains(&delay), "answered after {delay} ms");
}

#[test]
fn generated_visits_are_settled_unique_and_sometimes_tied() {
    let sim = sim_with_visits(2000);
    let visits = sim.visits(AGENT, USER);
    let settled_before = sim.now() - Duration::days(2);

    assert_eq!(visits.len(), 2000);
    let pks: HashSet<_> = visits
        .iter()
        .map(|v| (&v.activity_id, v.visit_at))
        .collect();
    assert_eq!(pks.len(), visits.len(), "no primary key repeats");
    let ties = visits
        .windows(2)
        .filter(|w| w[0].visit_at == w[1].visit_at)
        .count();
    assert!(ties > 10, "ties happen now and then ({ties})");
    assert!(visits.windows(2).all(|w| w[0].visit_at <= w[1].visit_at));
    for v in &visits {
        assert!(!v.open && v.last_online_at <= settled_before);
        assert_eq!(v.visit_at.timestamp_subsec_nanos(), 0);
        let minutes = (v.last_online_at - v.visit_at).num_seconds() / 60;
        assert_eq!(i64::from(v.duration_minutes), minutes);
        assert!((0..=180).contains(&v.duration_minutes));
        assert!(v.activity_id.parse::<u64>().is_ok());
    }
    let used: HashSet<_> = visits.iter().map(|v| &v.activity_id).collect();
    assert!((5..=20).contains(&used.len()), "{} activities", used.len());
}

#[test]
fn appended_and_open_visits_come_after_the_existing_ones() {
    let sim = sim_with_visits(10);
    let last_before = sim.visits(AGENT, USER)[9].visit_at;

    sim.append_visits(AGENT, USER, 3);
    let (activity_id, open_at) = sim.open_visit(AGENT, USER);
    sim.extend_open_visits(Duration::minutes(10));

    let visits = sim.visits(AGENT, USER);
    let now = sim.now();
    for v in &visits[10..13] {
        assert!(v.visit_at > last_before && v.visit_at <= now - Duration::hours(3));
        assert!(v.last_online_at <= now - Duration::hours(2) && !v.open);
    }
    let open = &visits[13];
    assert_eq!((&open.activity_id, open.visit_at), (&activity_id, open_at));
    assert!(open.open && open.visit_at > visits[12].visit_at);
    assert_eq!(open.duration_minutes, 10);

    sim.close_open_visits();
    sim.extend_open_visits(Duration::minutes(10));
    assert_eq!(sim.visits(AGENT, USER)[13].duration_minutes, 10);
    assert!(!sim.visits(AGENT, USER)[13].open);
}

#[tokio::test]
async fn ties_keep_insertion_order_unless_shuffled() {
    let sim = sim_with_visits(5);
    let at = sim.visits(AGENT, USER)[2].visit_at;
    let tied: Vec<String> = (0..4).map(|_| sim.add_tie(AGENT, USER, at)).collect();
    let server = sim.spawn().await.unwrap();
    let tie_order = |page: &Value| -> Vec<String> {
        keys(page)
            .into_iter()
            .filter(|(visit_at, _)| *visit_at == iso(at))
            .map(|(_, activity)| activity)
            .collect()
    };

    let asc = get(&server, &visits_url("order=visitAt%20asc"))
        .await
        .json();
    let desc = get(&server, &visits_url("order=visitAt%20desc"))
        .await
        .json();
    assert_eq!(tie_order(&asc)[1..], tied[..]);
    assert_eq!(tie_order(&asc), tie_order(&desc));

    sim.set_shuffle_ties(true);
    let mut orders = HashSet::new();
    for _ in 0..20 {
        orders.insert(tie_order(&get(&server, &visits_url("")).await.json()));
    }
    assert!(orders.len() > 1);
}

#[tokio::test]
async fn deleted_activities_are_null_and_purged_visits_stay_in_the_truth() {
    let sim = sim_with_visits(20);
    let deleted = sim.visits(AGENT, USER)[19].activity_id.clone();
    sim.delete_activity(&deleted);
    sim.purge_oldest(AGENT, USER, 5);
    let server = sim.spawn().await.unwrap();

    let body = get(&server, &visits_url("pageSize=100")).await.json();

    assert_eq!(body["pager"]["total"], 15);
    for item in body["items"].as_array().unwrap() {
        assert_eq!(
            item["activity"].is_null(),
            item["activityId"] == deleted.as_str()
        );
    }
    assert!(sim.activity(&deleted).unwrap().deleted);
    assert_eq!(sim.all_visits_ever(AGENT, USER).len(), 20);
}

#[tokio::test]
async fn the_hook_sees_each_request_and_can_change_the_world_mid_walk() {
    let sim = sim_with_visits(25);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    sim.set_before_request(move |world, info| {
        log.lock().unwrap().push(info.clone());
        if info.request_no == 2 {
            world.purge_oldest(info.agent_id, info.user_id, 5);
        }
    });
    let server = sim.spawn().await.unwrap();

    let first = get(&server, &visits_url("order=visitAt%20asc"))
        .await
        .json();
    let second = get(
        &server,
        &visits_url("order=visitAt%20asc&page=2&pageSize=7"),
    )
    .await
    .json();

    assert_eq!(first["pager"]["total"], 25);
    assert_eq!(second["pager"]["total"], 20);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        (seen[1].page, seen[1].page_size, seen[1].order_desc),
        (2, 7, false)
    );
    assert_eq!((seen[1].agent_id, seen[1].user_id), (AGENT, USER));
}

#[tokio::test]
async fn raw_items_are_served_verbatim_in_place() {
    let sim = sim_with_visits(3);
    let at = sim.visits(AGENT, USER)[0].visit_at - Duration::hours(1);
    let bogus = serde_json::json!({"visitAt": "yesterday", "activityId": 42, "duration": -3});
    sim.insert_raw_item(AGENT, USER, at, bogus.clone());
    let server = sim.spawn().await.unwrap();

    let body = get(&server, &visits_url("order=visitAt%20asc"))
        .await
        .json();

    assert_eq!(body["pager"]["total"], 4);
    assert_eq!(body["items"][0], bogus);
    assert_eq!(sim.visits(AGENT, USER).len(), 3);
}

#[tokio::test]
async fn the_date_header_follows_the_skewed_clock() {
    let sim = sim_with_visits(1);
    sim.set_clock_skew(Duration::hours(-5));
    let server = sim.spawn().await.unwrap();

    let reply = get_as(&server, "/nowhere", None).await;

    assert_eq!(reply.status, 404);
    let date: DateTime<Utc> = httpdate::parse_http_date(reply.header("date"))
        .unwrap()
        .into();
    let expected = Utc::now() - Duration::hours(5);
    assert!((date - expected).num_seconds().abs() <= 2);
}

#[test]
fn the_same_seed_builds_the_same_world() {
    let shape = |sim: &Simulator| -> Vec<(String, i64, i32)> {
        let visits = sim.visits(AGENT, USER);
        let first = visits[0].visit_at;
        visits
            .iter()
            .map(|v| {
                (
                    v.activity_id.clone(),
                    (v.visit_at - first).num_seconds(),
                    v.duration_minutes,
                )
            })
            .collect()
    };
    assert_eq!(shape(&sim_with_visits(300)), shape(&sim_with_visits(300)));
}

#[test]
fn the_demo_world_has_the_documented_pairs() {
    let sim = Simulator::demo();

    assert_eq!(sim.visits(105_131, 15_460_259).len(), 1200);
    let second = sim.visits(105_131, 15_460_260);
    assert_eq!(second.len(), 37);
    assert!(second.last().unwrap().open);
    assert_eq!(sim.visits(200_001, 30_000_001).len(), 5);
    assert!(sim.activities().iter().all(|a| !a.deleted));
}

fn arrival_plan() -> ArrivalPlan {
    ArrivalPlan {
        agent_id: AGENT,
        users: 2_000,
        every: std::time::Duration::from_secs(5),
        per_step: 8,
        hot_users: 100,
        zipf_exponent: 1.0,
        cold_share: 0.1,
        duration: std::time::Duration::from_secs(360),
        seed: 18,
    }
}

#[test]
fn arrivals_pick_hot_users_with_zipf_weights_and_cold_ones_now_and_then() {
    let plan = arrival_plan();
    let mut picker = Picker::new(&plan);
    let hot = picker.hot_users().to_vec();
    let mut counts: HashMap<i64, u64> = HashMap::new();
    let mut cold = 0;
    const PICKS: u64 = 200_000;

    for _ in 0..PICKS {
        let (user, from_hot) = picker.pick();
        assert!((1..=plan.users).contains(&user), "user {user}");
        *counts.entry(user).or_default() += 1;
        cold += u64::from(!from_hot);
    }

    // Weights 1/k over 100 ranks: the hottest is twice the second and ten times the tenth;
    // the ten hottest hold H(10)/H(100) = 56.5% of the hot picks.
    let of = |rank: usize| counts.get(&hot[rank - 1]).copied().unwrap_or(0) as f64;
    let (first, second, tenth) = (of(1), of(2), of(10));
    assert!(
        (1.85..=2.15).contains(&(first / second)),
        "{first} / {second}"
    );
    assert!((9.0..=11.0).contains(&(first / tenth)), "{first} / {tenth}");
    let hot_picks = (PICKS - cold) as f64;
    let top_ten: f64 = (1..=10).map(of).sum();
    assert!(
        (0.55..=0.58).contains(&(top_ten / hot_picks)),
        "{top_ten} of {hot_picks}"
    );
    let cold_share = cold as f64 / PICKS as f64;
    assert!((0.095..=0.105).contains(&cold_share), "{cold_share}");
    // The cold picks spread over all users: most users are picked at least once.
    assert!(counts.len() > 1_800, "{} users picked", counts.len());
    // The same seed picks the same users in the same order; another seed, other hot users.
    let mut again = Picker::new(&plan);
    let mut replay = Picker::new(&plan);
    assert!((0..1_000).all(|_| again.pick() == replay.pick()));
    let other = Picker::new(&ArrivalPlan { seed: 19, ..plan });
    assert_ne!(other.hot_users(), hot.as_slice());
}

#[test]
fn an_arrival_plan_that_cannot_work_is_refused_naming_the_value() {
    let plan = arrival_plan();
    assert!(plan.validate().is_ok());
    let too_hot = ArrivalPlan {
        hot_users: 2_001,
        ..plan.clone()
    };
    let err = too_hot.validate().unwrap_err();
    assert!(err.contains("hot set") && err.contains("2001"), "{err}");
    let share = ArrivalPlan {
        cold_share: 1.5,
        ..plan.clone()
    };
    assert!(share.validate().unwrap_err().contains("cold share"));
    let zipf = ArrivalPlan {
        zipf_exponent: f64::NAN,
        ..plan
    };
    assert!(zipf.validate().unwrap_err().contains("Zipf"));
}

#[tokio::test(start_paused = true)]
async fn arrivals_open_a_visit_per_pick_each_step_until_their_time_is_up() {
    let sim = Simulator::new(1);
    sim.add_agent(AGENT, TOKEN);
    let plan = ArrivalPlan {
        users: 50,
        hot_users: 10,
        per_step: 3,
        duration: std::time::Duration::from_secs(30),
        ..arrival_plan()
    };
    assert!(!sim.open_arrivals_gate(), "no process waits yet");
    let gate = sim.arrivals_gate();
    let mut log = Vec::new();

    assert!(sim.open_arrivals_gate());
    assert!(!sim.open_arrivals_gate(), "a gate opens once");
    gate.await.unwrap();
    let opened = sim.run_arrivals(&plan, |a| log.push(a.clone())).await;

    // Steps at 0, 5, …, 25 s: six of three.
    assert_eq!(opened, 18);
    assert_eq!(log.len(), 18);
    assert_eq!(sim.arrivals_count(), 18);
    for arrival in &log {
        let visits = sim.visits(AGENT, arrival.user);
        assert!(
            visits.iter().any(|v| v.open
                && v.activity_id == arrival.activity_id
                && v.visit_at == arrival.visit_at),
            "{arrival:?} is not a visit of the world"
        );
    }
    let line = serde_json::to_value(&log[0]).unwrap();
    assert_eq!(line["agent"], AGENT);
    assert!(
        line["visit_at"]
            .as_str()
            .unwrap()
            .parse::<DateTime<Utc>>()
            .is_ok()
    );
}
