//! The listener's hardening: its own read-only pool, totals that never scan `visits`, the `Host`
//! check on loopback, `http.token`, the security headers, and error bodies that name nothing of
//! the database. Each listener here is bound once (port 0) and served from the app's board.

use std::sync::Arc;

use sqlx::{Connection, PgConnection};
use szb_sync::app::App;
use szb_sync::secret::Secret;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::helpers::{AGENT, Harness, TOKEN, TestDb, get, sim_with, target, test_settings};

/// Serves `app`'s listener on a port of its own; its base URL and its address.
async fn serve(app: &App, stop: &CancellationToken) -> (String, std::net::SocketAddr) {
    let (listener, local) = szb_sync::http::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (_, pairs) = watch::channel(Arc::new(app.pairs().to_vec()));
    app.telemetry().live.set_migrated();
    tokio::spawn(szb_sync::http::serve(
        listener,
        app.listener_state(pairs),
        stop.clone(),
    ));
    (format!("http://{local}"), local)
}

/// The status line and the whole answer of a GET written by hand, with this `Host` and these
/// other headers.
async fn raw_get(local: std::net::SocketAddr, path: &str, host: &str, headers: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(local).await.unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{headers}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}

fn status(answer: &str) -> u16 {
    answer.split(' ').nth(1).unwrap().parse().unwrap()
}

async fn synced(settings_token: Option<&str>) -> Harness {
    let sim = sim_with(3, &[(1, 30), (2, 5)]);
    let db = TestDb::new().await;
    let server = sim.spawn().await.unwrap();
    let mut settings = test_settings(&server.base_url, vec![target(AGENT, TOKEN, &[1, 2])]);
    settings.database.url = Secret::new(db.url.clone());
    settings.http.token = settings_token.map(Secret::new);
    let h = Harness::with_settings(db, sim, server, settings).await;
    h.sync_ok().await;
    h
}

#[tokio::test]
async fn on_loopback_another_host_name_is_refused_and_every_answer_carries_the_security_headers() {
    let h = synced(None).await;
    let stop = CancellationToken::new();
    let (_, local) = serve(&h.app, &stop).await;
    let port = local.port();

    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("LOCALHOST:{port}"),
    ] {
        let answer = raw_get(local, "/api/overview", &host, "").await;
        assert_eq!(status(&answer), 200, "{host}: {answer}");
    }
    for host in [
        format!("rebind.attacker.example:{port}"),
        format!("localhost:{}", port.wrapping_add(1)),
        "localhost".to_owned(),
    ] {
        let answer = raw_get(local, "/api/overview", &host, "").await;
        assert_eq!(status(&answer), 421, "{host}: {answer}");
        assert!(answer.contains("DNS rebinding"), "{answer}");
        let metrics = raw_get(local, "/metrics", &host, "").await;
        assert_eq!(status(&metrics), 421, "{host}: {metrics}");
    }

    for path in ["/", "/api/overview", "/metrics", "/readyz", "/page.js"] {
        let answer = raw_get(local, path, &format!("127.0.0.1:{port}"), "").await;
        let head = answer
            .split("\r\n\r\n")
            .next()
            .unwrap()
            .to_ascii_lowercase();
        assert_eq!(status(&answer), 200, "{path}: {answer}");
        for header in [
            "content-security-policy: default-src 'none'; script-src 'self'",
            "frame-ancestors 'none'",
            "x-content-type-options: nosniff",
            "x-frame-options: deny",
        ] {
            assert!(head.contains(header), "{path} lacks {header}:\n{head}");
        }
    }
    let page = raw_get(local, "/", &format!("127.0.0.1:{port}"), "").await;
    assert!(
        !page.contains("<script>") && !page.contains("<style>") && !page.contains("style=\""),
        "no inline script or style, which the policy would block:\n{page}"
    );
    stop.cancel();
}

#[tokio::test]
async fn http_token_guards_the_page_and_its_json_but_not_metrics_or_the_probes() {
    const PAGE_TOKEN: &str = "page-token-very-secret";
    let h = synced(Some(PAGE_TOKEN)).await;
    let stop = CancellationToken::new();
    let (_, local) = serve(&h.app, &stop).await;
    let host = format!("127.0.0.1:{}", local.port());

    for path in ["/", "/api/overview", "/api/pairs", "/api/rejects"] {
        let refused = raw_get(local, path, &host, "").await;
        assert_eq!(status(&refused), 401, "{path}: {refused}");
        assert!(
            refused.contains("WWW-Authenticate: Basic realm=\"szb-sync\"")
                || refused.contains("www-authenticate: Basic realm=\"szb-sync\""),
            "{refused}"
        );
        assert!(!refused.contains(PAGE_TOKEN));
        let wrong = raw_get(local, path, &host, "Authorization: Bearer nope\r\n").await;
        assert_eq!(status(&wrong), 401, "{path}: {wrong}");
        let bearer = raw_get(
            local,
            path,
            &host,
            &format!("Authorization: Bearer {PAGE_TOKEN}\r\n"),
        )
        .await;
        assert_eq!(status(&bearer), 200, "{path}: {bearer}");
        // What a browser sends after its sign-in: any user, the token as the password.
        let basic = raw_get(
            local,
            path,
            &host,
            // base64("ops:page-token-very-secret")
            "Authorization: Basic b3BzOnBhZ2UtdG9rZW4tdmVyeS1zZWNyZXQ=\r\n",
        )
        .await;
        assert_eq!(status(&basic), 200, "{path}: {basic}");
    }
    for path in ["/metrics", "/livez", "/readyz", "/healthz"] {
        let open = raw_get(local, path, &host, "").await;
        assert_eq!(status(&open), 200, "{path}: {open}");
        assert!(!open.contains(PAGE_TOKEN));
    }
    stop.cancel();
}

#[tokio::test]
async fn readyz_api_and_metrics_never_name_the_databases_user_host_name_or_password() {
    let db = TestDb::new().await;
    let role = format!("szb_secret_role_{}", rand::random::<u32>());
    let password = "db-password-very-secret";
    for sql in [
        format!("CREATE ROLE {role} LOGIN PASSWORD '{password}'"),
        format!("ALTER DATABASE {} OWNER TO {role}", db.name()),
        format!("GRANT ALL ON SCHEMA public TO {role}"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&db.pool)
            .await
            .unwrap();
    }
    let sim = sim_with(5, &[(1, 20)]);
    let server = sim.spawn().await.unwrap();
    let mut settings = test_settings(&server.base_url, vec![target(AGENT, TOKEN, &[1])]);
    let mut url = url::Url::parse(&db.url).unwrap();
    url.set_username(&role).unwrap();
    url.set_password(Some(password)).unwrap();
    let host = url.host_str().unwrap().to_owned();
    settings.database.url = Secret::new(url.to_string());
    let db_name = db.name().to_owned();
    let h = Harness::with_settings(db, sim, server, settings).await;
    h.sync_ok().await;
    let stop = CancellationToken::new();
    let (base, _) = serve(&h.app, &stop).await;
    let (ready, _) = get(&format!("{base}/readyz")).await.unwrap();
    assert_eq!(ready, 200);

    // The database now refuses the role, and its sessions end: every read fails.
    let admin = &h.db.pool;
    sqlx::query(sqlx::AssertSqlSafe(format!("ALTER ROLE {role} NOLOGIN")))
        .execute(admin)
        .await
        .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1")
        .bind(&role)
        .execute(admin)
        .await
        .unwrap();

    let secrets = [role.as_str(), password, db_name.as_str(), host.as_str()];
    let (status, body) = get(&format!("{base}/readyz")).await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("not ready: the database "), "{body}");
    for path in ["/api/overview", "/api/pairs", "/api/rejects"] {
        let (status, error) = get(&format!("{base}{path}")).await.unwrap();
        assert_eq!(status, 503, "{path}: {error}");
        assert!(error.contains(": the database "), "{error}");
        for secret in secrets {
            assert!(!error.contains(secret), "{path} names {secret:?}: {error}");
        }
    }
    let (status, metrics) = get(&format!("{base}/metrics")).await.unwrap();
    assert_eq!(status, 200);
    for secret in secrets {
        assert!(!body.contains(secret), "/readyz names {secret:?}: {body}");
        assert!(!metrics.contains(secret), "/metrics names {secret:?}");
    }
    stop.cancel();
    h.app.close().await;
    let db_url = h.db.url.clone();
    drop(h);
    let mut admin = PgConnection::connect(&db_url.replace(&db_name, "postgres"))
        .await
        .unwrap();
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP ROLE IF EXISTS {role}")))
        .execute(&mut admin)
        .await;
}

#[tokio::test]
async fn pass_and_pair_errors_shown_by_the_listener_name_nothing_of_the_database() {
    let h = synced(None).await;
    let url = url::Url::parse(&h.db.url).unwrap();
    let stored = format!(
        "database error while writing a page: cannot connect to Postgres at {}: role \"{}\" \
         is not permitted to log in",
        h.db.url,
        url.username()
    );
    sqlx::query("UPDATE sync_state SET last_error = $1, last_outcome = 'failed', failures_in_row = 1 WHERE user_id = 1")
        .bind(&stored)
        .execute(&h.db.pool)
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let (base, _) = serve(&h.app, &stop).await;

    let (status, body) = get(&format!("{base}/api/pairs")).await.unwrap();

    assert_eq!(status, 200, "{body}");
    let pairs: serde_json::Value = serde_json::from_str(&body).unwrap();
    let shown = pairs["rows"][0]["last_error"].as_str().unwrap();
    assert_eq!(
        shown,
        "database error while writing a page: cannot connect to Postgres at [database]: role \
         \"[redacted]\" is not permitted to log in"
    );
    assert!(!body.contains(h.db.name()), "{body}");
    stop.cancel();
}

/// Rows of `visits` read by scans and index fetches, and the scans of `activities`, as the
/// statistics views have them.
async fn reads(pool: &sqlx::PgPool) -> (i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0)
                   FROM pg_stat_user_tables WHERE relname = 'visits')
              + (SELECT coalesce(sum(idx_tup_read), 0)::int8
                   FROM pg_stat_user_indexes WHERE relname = 'visits'),
                (SELECT coalesce(seq_scan, 0) + coalesce(idx_scan, 0)
                   FROM pg_stat_user_tables WHERE relname = 'activities')",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn totals_over_a_large_table_are_estimates_that_read_a_sample_not_the_table() {
    const ROWS: i64 = 200_000;
    let h = synced(None).await;
    h.app.close().await;
    let pool = &h.db.pool;
    sqlx::query(
        "INSERT INTO visits (agent_id, user_id, activity_id, visit_at, last_online_at, duration_minutes)
         SELECT 9, g % 50, (SELECT min(id) FROM activities),
                '2026-01-01'::timestamptz + g * interval '1 minute',
                '2026-01-01'::timestamptz + g * interval '1 minute' + interval '7 minutes', 7
           FROM generate_series(1, $1) g",
    )
    .bind(ROWS)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE visits").execute(pool).await.unwrap();
    let exact: (i64, i64) =
        sqlx::query_as("SELECT count(*), sum(duration_minutes)::int8 FROM visits")
            .fetch_one(pool)
            .await
            .unwrap();
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("SELECT 1").execute(pool).await.unwrap();
    let before = reads(pool).await;

    let listener = h.app.store().for_listener();
    let totals = listener.totals().await.unwrap();
    // Its sessions end, and with them their statistics are written.
    listener.close().await;

    assert!(totals.estimated, "{totals:?}");
    let off = |got: i64, want: i64| (got - want).abs() as f64 / want as f64;
    assert!(
        off(totals.visits, exact.0) < 0.05,
        "{totals:?} against {exact:?}"
    );
    assert!(
        off(totals.minutes, exact.1) < 0.25,
        "{totals:?} against {exact:?}"
    );
    let mut after = reads(pool).await;
    for _ in 0..200 {
        if after.1 > before.1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        after = reads(pool).await;
    }
    assert!(after.1 > before.1, "the listener's statistics were written");
    let read = after.0 - before.0;
    assert!(
        read < ROWS / 10,
        "the totals read {read} rows of visits, of {}",
        exact.0
    );
}

/// Scans of `sync_state`, as the statistics views have them.
async fn state_scans(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT coalesce(seq_scan, 0) + coalesce(idx_scan, 0)
           FROM pg_stat_user_tables WHERE relname = 'sync_state'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn two_dozen_clients_loading_the_page_at_once_cost_the_database_one_read_of_each_view() {
    const CLIENTS: usize = 24;
    let h = synced(None).await;
    // The sync's sessions end first, so their statistics are in before the count starts.
    h.app.close().await;
    let pool = &h.db.pool;
    let mut before = state_scans(pool).await;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let now = state_scans(pool).await;
        if now == before {
            break;
        }
        before = now;
    }
    let (listener, local) = szb_sync::http::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (_, pairs) = watch::channel(Arc::new(h.app.pairs().to_vec()));
    h.app.telemetry().live.set_migrated();
    let board = h.app.listener_state(pairs);
    let listener_store = board.store.clone();
    let stop = CancellationToken::new();
    tokio::spawn(szb_sync::http::serve(listener, board, stop.clone()));
    let base = format!("http://{local}");

    // Each client loads the page's three views at once, as the page does.
    let loads = (0..CLIENTS).map(|_| {
        let base = base.clone();
        async move {
            let (overview, pairs, rejects) = (
                format!("{base}/api/overview"),
                format!("{base}/api/pairs?view=all"),
                format!("{base}/api/rejects"),
            );
            let (a, b, c) = tokio::join!(get(&overview), get(&pairs), get(&rejects));
            [a.unwrap(), b.unwrap(), c.unwrap()]
        }
    });
    let answers = futures_util::future::join_all(loads).await;
    // Its sessions end, and with them their statistics are written.
    stop.cancel();
    listener_store.close().await;

    for answer in answers.iter().flatten() {
        assert_eq!(answer.0, 200, "{}", answer.1);
    }
    let pairs_views: std::collections::HashSet<&str> =
        answers.iter().map(|a| a[1].1.as_str()).collect();
    assert_eq!(pairs_views.len(), 1, "every client saw the same pairs");
    let mut scans = state_scans(pool).await - before;
    for _ in 0..200 {
        if scans > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        scans = state_scans(pool).await - before;
    }
    assert!(scans > 0, "the listener's statistics were written");
    // Unshared, the pairs view alone would scan sync_state once per client.
    assert!(
        scans < CLIENTS as i64,
        "{CLIENTS} clients' loads scanned sync_state {scans} times"
    );
}
