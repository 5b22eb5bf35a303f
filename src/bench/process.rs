//! The bench's child processes: the simulator (`szb-sync mock-api`), `szb-sync sync` and
//! `run`, what they print, and their peak memory; and polling for what they leave in the tables.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::workloads::Workload;

/// `exe` as a child of the bench, without the variables that would override the bench's own
/// config (`DATABASE_URL`, every `SZB_…`): an exported `SZB_DATABASE__URL` must not send a
/// million simulated visits into the database it names while the bench reads `szb_bench`.
pub(super) fn child_command(exe: &Path) -> Command {
    let mut command = Command::new(exe);
    for (name, _) in std::env::vars_os() {
        let text = name.to_string_lossy().to_ascii_uppercase();
        if text == "DATABASE_URL" || text.starts_with("SZB_") {
            command.env_remove(&name);
        }
    }
    command
}

/// The simulator of a workload, running with no latency or limit yet, and its base URL.
pub(super) async fn start_sim(exe: &Path, w: &Workload, users: u64) -> Result<(Child, String)> {
    start_sim_with(exe, w, users, &[]).await
}

/// [`start_sim`] with more of `mock-api`'s options (its arrivals).
pub(super) async fn start_sim_with(
    exe: &Path,
    w: &Workload,
    users: u64,
    options: &[String],
) -> Result<(Child, String)> {
    let mut sim = child_command(exe);
    sim.args(["mock-api", "--listen", "127.0.0.1:0", "--users"])
        .arg(users.to_string())
        .arg("--visits-per-user")
        .arg(w.visits_per_user.to_string())
        .args(options)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let mut sim = sim.spawn().context("starting szb-sync mock-api")?;
    let base_url = read_base_url(&mut sim).await?;
    sim_config(&reqwest::Client::new(), &base_url, 0, 0.0).await?;
    Ok((sim, base_url))
}

/// `szb-sync run` on `config`, logging only errors (to the bench's stderr).
pub(super) fn spawn_run(exe: &Path, config: &Path) -> Result<Child> {
    child_command(exe)
        .arg("--config")
        .arg(config)
        .arg("run")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("starting szb-sync run")
}

/// SIGTERM, and up to 30 s for the child to finish its page and exit.
pub(super) async fn terminate(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
    }
    let _ = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait()).await;
}

/// Polls `probe` every 20 ms until it returns `Some`, for at most `limit`.
pub(super) async fn poll<T, F, Fut>(limit: Duration, what: &str, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe().await? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!(
                "gave up after {} waiting for {what}",
                humantime::format_duration(limit)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads `run`'s log until the listener's line, `serving … listen=ADDR`; keeps draining it.
pub(super) async fn read_listen(daemon: &mut Child) -> Result<String> {
    let stderr = daemon.stderr.take().context("run's stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let found = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(at) = line.find("listen=") {
                let addr = line[at + 7..].split_whitespace().next().unwrap_or("");
                return Ok::<_, std::io::Error>(Some(addr.to_owned()));
            }
        }
        Ok(None)
    })
    .await
    .context("run did not report its listener within a minute")??
    .context("run exited before it listened")?;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(found)
}

/// Waits for `mock-api`'s first line, `simulated shangzhibo.tv API on http://ADDR`.
async fn read_base_url(sim: &mut Child) -> Result<String> {
    let stdout = sim.stdout.take().context("mock-api's stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(600), lines.next_line())
        .await
        .context("mock-api did not start within 10 minutes")??
        .context("mock-api exited before it listened")?;
    let url = first
        .rsplit(' ')
        .next()
        .filter(|u| u.starts_with("http://"))
        .with_context(|| format!("unexpected first line from mock-api: {first:?}"))?;
    // Keep reading, so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(url.to_owned())
}

/// The simulator's counts (`/_sim/stats`): visits requests and 429s since the last reset, and
/// visits opened by its arrivals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SimStats {
    pub(super) requests: u64,
    pub(super) rate_limited: u64,
    pub(super) arrivals: u64,
    /// From the first visits request to the latest.
    pub(super) span: Duration,
}

pub(super) async fn sim_stats(http: &reqwest::Client, base_url: &str) -> Result<SimStats> {
    let reply: serde_json::Value = http
        .get(format!("{base_url}/_sim/stats"))
        .send()
        .await?
        .json()
        .await?;
    let count = |k: &str| reply[k].as_u64().unwrap_or(0);
    Ok(SimStats {
        requests: count("requests"),
        rate_limited: count("rateLimited"),
        arrivals: count("arrivals"),
        span: Duration::from_millis(count("spanMs")),
    })
}

/// Sets the simulator's latency and rate limit, resets its counts, and returns the counts it
/// had: (requests, 429s, from the first request to the last).
pub(super) async fn sim_config(
    http: &reqwest::Client,
    base_url: &str,
    latency_ms: u64,
    rate_limit: f64,
) -> Result<(u64, u64, Duration)> {
    let had = sim_stats(http, base_url).await?;
    http.post(format!(
        "{base_url}/_sim/config?latencyMs={latency_ms}&rateLimit={rate_limit}&reset=true"
    ))
    .send()
    .await?
    .error_for_status()?;
    Ok((had.requests, had.rate_limited, had.span))
}

/// Runs `szb-sync sync` on `config`: its exit code, its wall time and its peak RSS in KiB.
pub(super) async fn sync(exe: &Path, config: &Path) -> Result<(i32, Duration, u64)> {
    let started = Instant::now();
    let mut child = child_command(exe)
        .arg("--config")
        .arg(config)
        .arg("sync")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("starting szb-sync sync")?;
    let pid = child.id().context("the sync's pid")?;
    let mut peak = 0;
    let status = loop {
        // The high-water mark only grows, so the last reading before exit is the peak.
        if let Some(hwm) = vm_hwm_kib(pid) {
            peak = peak.max(hwm);
        }
        tokio::select! {
            status = child.wait() => break status?,
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    };
    Ok((status.code().unwrap_or(-1), started.elapsed(), peak))
}

pub(super) fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
