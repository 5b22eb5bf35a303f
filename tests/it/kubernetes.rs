//! The Kubernetes manifests in `deploy/kubernetes/`: the ConfigMap's config passes the daemon's
//! own `check --offline` with the environment the Deployment gives it; the Deployment carries the
//! systemd unit's sandbox and the probes, and its paths and port agree with the ConfigMap and the
//! Service; `kubernetes-validate --strict` checks every manifest against the API's schemas.

use std::process::Command;

use crate::helpers::repo;

const BIN: &str = env!("CARGO_BIN_EXE_szb-sync");
const CONFIG_MAP: &str = include_str!("../../deploy/kubernetes/configmap.yaml");
const DEPLOYMENT: &str = include_str!("../../deploy/kubernetes/deployment.yaml");
const SERVICE: &str = include_str!("../../deploy/kubernetes/service.yaml");
/// The resources core Kubernetes knows (the ServiceMonitor is the Prometheus Operator's).
const CORE: [&str; 3] = ["configmap.yaml", "deployment.yaml", "service.yaml"];

/// The lines of a manifest without comments, trimmed.
fn lines(yaml: &str) -> Vec<&str> {
    yaml.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// Every value of `key:` in `yaml`, in order (a list item's `- key:` too), quotes kept.
fn values<'a>(yaml: &'a str, key: &str) -> Vec<&'a str> {
    lines(yaml)
        .into_iter()
        .filter_map(|l| l.trim_start_matches("- ").strip_prefix(&format!("{key}:")))
        .map(str::trim)
        .collect()
}

/// The one value of `key:` in `yaml`.
fn value<'a>(yaml: &'a str, key: &str) -> &'a str {
    let found = values(yaml, key);
    assert_eq!(
        found.len(),
        1,
        "one {key}: in the manifest, found {found:?}"
    );
    found[0]
}

/// The value of the `env` entry `name` of the Deployment (`- name: X` then `value: …`).
fn env_value<'a>(name: &str) -> &'a str {
    let lines = lines(DEPLOYMENT);
    let at = lines
        .iter()
        .position(|l| *l == format!("- name: {name}"))
        .unwrap_or_else(|| panic!("{name} in the Deployment's env"));
    lines[at + 1]
        .strip_prefix("value: ")
        .unwrap_or_else(|| panic!("{name} has a plain value: {}", lines[at + 1]))
}

/// The file the ConfigMap holds (`data: FILE: |`), its block's indentation removed.
fn config_file() -> (String, String) {
    let mut lines = CONFIG_MAP
        .lines()
        .skip_while(|l| l.trim() != "data:")
        .skip(1);
    let head = lines.next().expect("an entry under data:");
    let name = head
        .trim()
        .strip_suffix(": |")
        .unwrap_or_else(|| panic!("a literal block: {head}"));
    let indent = |l: &str| l.len() - l.trim_start().len();
    let body: Vec<&str> = lines
        .take_while(|l| l.trim().is_empty() || indent(l) > indent(head))
        .collect();
    let cut = body
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| indent(l))
        .min()
        .unwrap();
    let text = body
        .iter()
        .map(|l| if l.len() >= cut { &l[cut..] } else { "" })
        .collect::<Vec<_>>()
        .join("\n");
    (name.to_owned(), text + "\n")
}

#[test]
fn the_config_map_passes_check_offline_with_the_environment_the_deployment_gives() {
    let (name, text) = config_file();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join(&name);
    std::fs::write(&config, &text).unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t0ken-from-the-secret\n").unwrap();

    // The Deployment's variables: the token file where the Secret is mounted (here a file of the
    // test's), the database URL from the Secret (here any URL: nothing is reached offline).
    let token_path = env_value("SZB_API__TOKEN_FILE");
    let out = Command::new(BIN)
        .args(["--config", config.to_str().unwrap(), "check", "--offline"])
        .env("SZB_API__TOKEN_FILE", &token)
        .env(
            "SZB_DATABASE__URL",
            "postgres://szb:hunter2@postgres:5432/szb",
        )
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();

    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("configuration: ok (1 target, 2 pairs)"),
        "{stdout}"
    );
    assert!(!stdout.contains("hunter2") && !stdout.contains("t0ken"));

    // The paths and the port agree between the manifests.
    let args = value(DEPLOYMENT, "args");
    assert!(
        args.contains(&format!("\"--config\", \"/etc/szb-sync/{name}\""))
            && args.contains("\"run\""),
        "{args}"
    );
    let mounts = values(DEPLOYMENT, "mountPath");
    assert!(mounts.contains(&"/etc/szb-sync"), "{mounts:?}");
    let (dir_of_token, file_of_token) = token_path.rsplit_once('/').unwrap();
    assert!(
        mounts.contains(&dir_of_token),
        "{token_path} under {mounts:?}"
    );
    assert!(values(DEPLOYMENT, "path").contains(&file_of_token));
    assert!(text.contains("listen = \"0.0.0.0:9187\""), "{text}");
    assert_eq!(value(DEPLOYMENT, "containerPort"), "9187");
    assert_eq!(value(SERVICE, "targetPort"), "http");
    assert!(values(DEPLOYMENT, "name").contains(&"http"));
}

#[test]
fn the_deployment_runs_replicas_with_the_units_sandbox_and_both_probes() {
    let replicas: u32 = value(DEPLOYMENT, "replicas").parse().unwrap();
    assert!(replicas > 1, "several replicas: {replicas}");
    for (key, expected) in [
        ("runAsNonRoot", "true"),
        ("readOnlyRootFilesystem", "true"),
        ("allowPrivilegeEscalation", "false"),
        ("privileged", "false"),
        ("drop", "[\"ALL\"]"),
        ("type", "RuntimeDefault"),
        ("automountServiceAccountToken", "false"),
        ("terminationGracePeriodSeconds", "30"),
    ] {
        assert!(
            values(DEPLOYMENT, key).contains(&expected),
            "{key}: {expected} in the Deployment"
        );
    }
    let paths = values(DEPLOYMENT, "path");
    assert!(
        paths.contains(&"/livez") && paths.contains(&"/readyz"),
        "{paths:?}"
    );
    // The token and the database URL come from the Secret, never from the ConfigMap.
    assert_eq!(value(DEPLOYMENT, "secretName"), "szb-sync");
    let keys = values(DEPLOYMENT, "key");
    assert!(
        keys.contains(&"database-url") && keys.contains(&"token"),
        "{keys:?}"
    );
    let (_, text) = config_file();
    let settings: Vec<&str> = lines(&text);
    for secret in ["token", "[database]", "postgres://"] {
        assert!(
            !settings.iter().any(|l| l.contains(secret)),
            "{secret:?} in the ConfigMap: {settings:?}"
        );
    }
}

#[test]
#[ignore = "needs kubernetes-validate: see docs/development.md"]
fn the_kubernetes_manifests_validate_against_the_api_schemas() {
    let dir = repo("deploy/kubernetes");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "configmap.yaml",
            "deployment.yaml",
            "service.yaml",
            "servicemonitor.yaml"
        ]
    );

    let out = Command::new("kubernetes-validate")
        .arg("--strict")
        .args(&files)
        .current_dir(&dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "kubernetes-validate does not run ({e}): pip install kubernetes-validate \
                 (see docs/development.md)"
            )
        });
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{report}");
    for file in CORE {
        assert!(
            report
                .lines()
                .any(|l| l.starts_with(&format!("INFO {file} passed"))),
            "{file} validated:\n{report}"
        );
    }
    assert!(!report.contains("ERROR"), "{report}");

    // The ServiceMonitor's schema is the operator's, not bundled: its links to the Service are
    // checked here instead (the YAML parsed by PyYAML, which kubernetes-validate runs on).
    let script = "import json, sys, yaml\n\
                  print(json.dumps([yaml.safe_load(open(f)) for f in sys.argv[1:]]))";
    let parsed = Command::new("python3")
        .args(["-c", script, "servicemonitor.yaml", "service.yaml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        parsed.status.success(),
        "{}",
        String::from_utf8_lossy(&parsed.stderr)
    );
    let docs: serde_json::Value = serde_json::from_slice(&parsed.stdout).unwrap();
    let (monitor, service) = (&docs[0], &docs[1]);
    let labels = &service["metadata"]["labels"];
    for (k, v) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(
            &labels[k], v,
            "the ServiceMonitor selects the Service by {k}"
        );
    }
    let job_label = monitor["spec"]["jobLabel"].as_str().unwrap();
    assert_eq!(
        labels[job_label], "szb-sync",
        "the job is named szb-sync, as the alert rules expect"
    );
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["port"], service["spec"]["ports"][0]["name"]);
    assert_eq!(endpoint["path"], "/metrics");
}
