//! deploy/ is checked against the code it deploys (no Docker engine needed):
//!
//! - every YAML file parses (all documents of multi-document files);
//! - every `churn_*` metric in the Grafana dashboard and in the alert rules is exported by
//!   churn-metrics (histograms only through `_bucket`/`_sum`/`_count`), the dashboard covers the
//!   required panels and uses the provisioned datasource, every alert has severity, summary and
//!   description, and rules_test.yml tests every alert firing and quiet;
//! - every churnstream subcommand and `--flag` in docker-compose.yml and the k8s Deployment is
//!   accepted by the real CLI (`churnstream <sub> --help`), bind-mounted files exist, and the
//!   probes/ports agree with the configured metrics address;
//! - deploy/churnstream.toml and the k8s ConfigMap load with the real config loader
//!   (`deny_unknown_fields`), and the example names every key at its default;
//! - the Dockerfile is multi-stage with a Rust builder new enough for the workspace.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use churn_metrics::{Metrics, METRIC_NAMES};
use churn_pipeline::Config;
use serde::Deserialize;
use serde_yaml::Value as Yaml;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

fn deploy(rel: &str) -> PathBuf {
    root().join("deploy").join(rel)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Every document of a YAML file.
fn yaml_docs(path: &Path) -> Vec<Yaml> {
    let text = read(path);
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            Yaml::deserialize(doc).unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()))
        })
        .collect()
}

/// The single document of a YAML file, with `<<` merge keys applied.
fn yaml(path: &Path) -> Yaml {
    let mut docs = yaml_docs(path);
    assert_eq!(docs.len(), 1, "{}: one document expected", path.display());
    let mut doc = docs.remove(0);
    doc.apply_merge().expect("merge keys");
    doc
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yml" | "yaml")
        ) {
            out.push(path);
        }
    }
}

#[test]
fn every_yaml_file_parses() {
    let mut files = Vec::new();
    yaml_files(&root().join("deploy"), &mut files);
    for want in [
        "docker-compose.yml",
        "prometheus/prometheus.yml",
        "prometheus/rules.yml",
        "prometheus/rules_test.yml",
        "grafana/provisioning/datasources/prometheus.yml",
        "grafana/provisioning/dashboards/churnstream.yml",
        "k8s/configmap.yaml",
        "k8s/deployment.yaml",
        "k8s/service.yaml",
    ] {
        assert!(files.contains(&deploy(want)), "deploy/{want} missing");
    }
    for f in &files {
        let docs = yaml_docs(f);
        assert!(
            !docs.is_empty() && docs.iter().all(|d| d.is_mapping()),
            "{}: every document must be a mapping",
            f.display()
        );
    }
}

/// Names of the histogram families (they only exist as `_bucket`, `_sum`, `_count` series).
fn histograms() -> BTreeSet<String> {
    let text = Metrics::new().render();
    let hist: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" histogram"))
        .map(str::to_owned)
        .collect();
    assert!(!hist.is_empty(), "no histograms rendered:\n{text}");
    hist
}

/// Identifiers (`[A-Za-z0-9_:]+`) of a PromQL expression outside string literals.
fn identifiers(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    for c in expr.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if matches!(c, '"' | '\'' | '`') => {
                quote = Some(c);
                out.push(std::mem::take(&mut cur));
            }
            None if c.is_ascii_alphanumeric() || c == '_' || c == ':' => cur.push(c),
            None => out.push(std::mem::take(&mut cur)),
        }
    }
    out.push(cur);
    out.retain(|s| !s.is_empty());
    out
}

/// The exported family behind a series name, or why it is not one.
fn family<'a>(name: &'a str, hist: &BTreeSet<String>) -> Result<&'a str, String> {
    if METRIC_NAMES.contains(&name) {
        if hist.contains(name) {
            return Err(format!(
                "{name} is a histogram: use {name}_bucket/_sum/_count"
            ));
        }
        return Ok(name);
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if hist.contains(base) {
                return Ok(base);
            }
        }
    }
    Err(format!("{name} is not exported by churn-metrics"))
}

/// Every `churn_*` metric of `expr` (recording rules, containing `:`, are returned separately).
fn metrics_in(expr: &str) -> (Vec<String>, Vec<String>) {
    let ids = identifiers(expr);
    let metrics = ids
        .iter()
        .filter(|i| i.starts_with("churn_") && !i.contains(':'))
        .cloned()
        .collect();
    let recorded = ids.into_iter().filter(|i| i.contains(':')).collect();
    (metrics, recorded)
}

fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(x, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_exprs(x, out)),
        _ => {}
    }
}

#[test]
fn dashboard_uses_only_exported_metrics_and_covers_the_required_panels() {
    let dash: serde_json::Value =
        serde_json::from_str(&read(&deploy("grafana/dashboard.json"))).expect("dashboard JSON");
    let hist = histograms();
    let mut exprs = Vec::new();
    collect_exprs(&dash, &mut exprs);
    assert!(exprs.len() >= 13, "only {} queries", exprs.len());
    let mut used = BTreeSet::new();
    let mut errors = Vec::new();
    for e in &exprs {
        let (metrics, recorded) = metrics_in(e);
        assert!(recorded.is_empty(), "dashboard uses recording rules: {e}");
        for m in metrics {
            match family(&m, &hist) {
                Ok(f) => {
                    used.insert(f.to_owned());
                }
                Err(why) => errors.push(format!("{why} (in `{e}`)")),
            }
        }
    }
    assert!(errors.is_empty(), "{errors:#?}");
    use churn_metrics::metrics::names as n;
    for required in [
        n::INGEST_EVENTS_CONSUMED,
        n::INGEST_EVENTS_REJECTED,
        n::INGEST_DLQ_PUBLISHED,
        n::PIPELINE_BATCH_DURATION,
        n::SCORE_EVENT_TO_ALERT_LATENCY,
        n::SCORE_ALERTS,
        n::BUSINESS_CUSTOMERS_BY_BAND,
        n::BUSINESS_NPS_ROLLING,
        n::BUSINESS_REVENUE_AT_RISK,
        n::BUSINESS_CHURN_RATE,
        n::STATE_BYTES,
        n::INGEST_CONSUMER_LAG,
        n::MODEL_INFO,
    ] {
        assert!(used.contains(required), "no panel shows {required}");
    }

    // Panels: unique ids, and every query on the provisioned datasource.
    let ds = yaml(&deploy("grafana/provisioning/datasources/prometheus.yml"));
    let uid = ds["datasources"][0]["uid"]
        .as_str()
        .expect("provisioned datasource uid");
    let panels = dash["panels"].as_array().expect("panels");
    let ids: BTreeSet<i64> = panels.iter().filter_map(|p| p["id"].as_i64()).collect();
    assert_eq!(ids.len(), panels.len(), "panel ids must be unique");
    for p in panels {
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
        for t in targets {
            assert_eq!(t["datasource"]["uid"].as_str(), Some(uid), "{}", p["title"]);
        }
    }
    // The provider serves the directory the dashboard is mounted into.
    let provider = yaml(&deploy("grafana/provisioning/dashboards/churnstream.yml"));
    let dir = provider["providers"][0]["options"]["path"]
        .as_str()
        .expect("provider path");
    let compose = read(&deploy("docker-compose.yml"));
    assert!(
        compose.contains(&format!("./grafana/dashboard.json:{dir}/")),
        "compose mounts dashboard.json into {dir}"
    );
}

const REQUIRED_ALERTS: &[&str] = &[
    "ChurnstreamConsumerLagGrowing",
    "ChurnstreamDlqRateHigh",
    "ChurnstreamNoEventsConsumed",
    "ChurnstreamCheckpointStale",
    "ChurnstreamRiskDistributionDrift",
    "ChurnstreamNotReady",
    "ChurnstreamProduceErrors",
    "ChurnstreamScoreDrift",
    "ChurnstreamFeatureDrift",
    "ChurnstreamModelRefused",
];

#[test]
fn alert_rules_use_exported_metrics_and_are_documented_and_tested() {
    let doc = yaml(&deploy("prometheus/rules.yml"));
    let hist = histograms();
    let rules: Vec<&Yaml> = doc["groups"]
        .as_sequence()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules"))
        .collect();
    let recorded: BTreeSet<&str> = rules.iter().filter_map(|r| r["record"].as_str()).collect();
    let mut alerts = BTreeSet::new();
    let mut errors = Vec::new();
    for r in &rules {
        let expr = r["expr"].as_str().expect("every rule has an expr");
        let (metrics, uses) = metrics_in(expr);
        if metrics.is_empty() && uses.is_empty() {
            errors.push(format!("no churnstream metric in `{expr}`"));
        }
        for m in metrics {
            if let Err(why) = family(&m, &hist) {
                errors.push(format!("{why} (in `{expr}`)"));
            }
        }
        for u in uses {
            if !recorded.contains(u.as_str()) {
                errors.push(format!("recording rule {u} is not defined"));
            }
        }
        let Some(name) = r["alert"].as_str() else {
            continue;
        };
        alerts.insert(name.to_owned());
        if !matches!(
            r["labels"]["severity"].as_str(),
            Some("warning" | "critical")
        ) {
            errors.push(format!("{name}: severity label warning|critical"));
        }
        for a in ["summary", "description"] {
            if r["annotations"][a]
                .as_str()
                .is_none_or(|s| s.trim().len() < 20)
            {
                errors.push(format!("{name}: annotation {a} missing or too short"));
            }
        }
    }
    assert!(errors.is_empty(), "{errors:#?}");
    for want in REQUIRED_ALERTS {
        assert!(alerts.contains(*want), "rules.yml lacks {want}");
    }

    // rules_test.yml: each alert is tested once firing and once quiet.
    let tests = yaml(&deploy("prometheus/rules_test.yml"));
    let mut firing = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for t in tests["tests"].as_sequence().expect("tests") {
        for case in t["alert_rule_test"].as_sequence().into_iter().flatten() {
            let name = case["alertname"].as_str().expect("alertname").to_owned();
            match case["exp_alerts"].as_sequence() {
                Some(v) if !v.is_empty() => firing.insert(name),
                _ => quiet.insert(name),
            };
        }
    }
    for a in &alerts {
        assert!(firing.contains(a), "rules_test.yml never sees {a} firing");
        assert!(quiet.contains(a), "rules_test.yml never sees {a} quiet");
    }
}

/// Output of the real CLI with `args`.
fn cli(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_churnstream"))
        .args(args)
        .output()
        .expect("run churnstream");
    assert!(
        out.status.success(),
        "churnstream {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether `help` documents `flag` exactly (not just a longer flag starting with it).
fn documents(help: &str, flag: &str) -> bool {
    help.match_indices(flag).any(|(i, _)| {
        !help[i + flag.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    })
}

/// Checks a churnstream argv (with or without the binary name) against the CLI's help texts.
fn check_argv(origin: &str, argv: &[String], commands: &BTreeSet<String>) -> Vec<String> {
    let argv: Vec<&str> = argv
        .iter()
        .map(String::as_str)
        .skip_while(|a| a.ends_with("churnstream"))
        .collect();
    let Some(sub) = argv.first() else {
        return vec![format!("{origin}: no subcommand")];
    };
    if !commands.contains(*sub) {
        return vec![format!("{origin}: unknown subcommand {sub}")];
    }
    let help = cli(&[sub, "--help"]);
    argv.iter()
        .filter(|a| a.starts_with("--"))
        .map(|a| a.split('=').next().unwrap_or(a))
        .filter(|flag| !documents(&help, flag))
        .map(|flag| format!("{origin}: `churnstream {sub}` has no {flag}"))
        .collect()
}

fn strings(v: &Yaml) -> Vec<String> {
    match v {
        Yaml::Sequence(s) => s
            .iter()
            .map(|x| match x {
                Yaml::String(s) => s.clone(),
                other => serde_yaml::to_string(other)
                    .expect("scalar")
                    .trim()
                    .to_owned(),
            })
            .collect(),
        Yaml::String(s) => s.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

/// Subcommands listed by `churnstream --help`.
fn subcommands() -> BTreeSet<String> {
    let help = cli(&["--help"]);
    let commands: BTreeSet<String> = help
        .split("Commands:")
        .nth(1)
        .expect("Commands section")
        .split("Options:")
        .next()
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_owned)
        .collect();
    assert!(commands.contains("run"), "{help}");
    commands
}

/// Port of a `host:port` listen address.
fn port_of(listen: &str) -> u16 {
    listen
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {listen}"))
}

#[test]
fn compose_uses_real_cli_commands_and_existing_files() {
    let commands = subcommands();
    let compose = yaml(&deploy("docker-compose.yml"));
    let services = compose["services"].as_mapping().expect("services");
    let mut errors = Vec::new();
    let mut used = BTreeSet::new();
    let mut metrics_listen = None;
    for (name, svc) in services {
        let name = name.as_str().expect("service name");
        for v in svc["volumes"].as_sequence().into_iter().flatten() {
            let spec = v.as_str().expect("short volume syntax");
            let src = spec.split(':').next().unwrap_or_default();
            if src.starts_with('.') && !deploy(src).exists() {
                errors.push(format!("{name}: mounted {src} does not exist"));
            }
        }
        if let Some(ctx) = svc["build"]["context"].as_str() {
            let file = svc["build"]["dockerfile"].as_str().unwrap_or("Dockerfile");
            if !deploy(ctx).join(file).is_file() {
                errors.push(format!("{name}: build {ctx}/{file} missing"));
            }
        }
        if !svc["image"]
            .as_str()
            .is_some_and(|i| i.starts_with("churnstream"))
        {
            continue;
        }
        let argv = strings(&svc["command"]);
        errors.extend(check_argv(&format!("compose {name}"), &argv, &commands));
        if let Some(sub) = argv.first() {
            used.insert(sub.clone());
        }
        if let Some(i) = argv.iter().position(|a| a == "--metrics-listen") {
            metrics_listen = argv.get(i + 1).cloned();
        }
    }
    assert!(errors.is_empty(), "{errors:#?}");
    for sub in ["generate", "train", "run", "replay"] {
        assert!(used.contains(sub), "no compose service runs `{sub}`");
    }

    // Prometheus scrapes the address `run` listens on.
    let listen = metrics_listen.expect("compose `run` sets --metrics-listen");
    assert!(
        listen.starts_with("0.0.0.0:"),
        "{listen}: unreachable from other containers"
    );
    let prom = yaml(&deploy("prometheus/prometheus.yml"));
    let job = prom["scrape_configs"]
        .as_sequence()
        .expect("scrape_configs")
        .iter()
        .find(|j| j["job_name"].as_str() == Some("churnstream"))
        .expect("job churnstream (rules.yml selects on it)");
    let targets = strings(&job["static_configs"][0]["targets"]);
    assert_eq!(
        targets,
        vec![format!("churnstream:{}", port_of(&listen))],
        "prometheus target vs compose --metrics-listen"
    );
}

#[test]
fn k8s_deployment_uses_real_cli_and_matching_probes() {
    let commands = subcommands();
    let docs = yaml_docs(&deploy("k8s/deployment.yaml"));
    let dep = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("Deployment"))
        .expect("a Deployment");
    let container = dep["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .expect("containers")
        .iter()
        .find(|c| c["name"].as_str() == Some("churnstream"))
        .expect("churnstream container");
    let mut argv = strings(&container["command"]);
    argv.extend(strings(&container["args"]));
    assert_eq!(argv.first().map(String::as_str), Some("run"), "{argv:?}");
    let errors = check_argv("k8s Deployment", &argv, &commands);
    assert!(errors.is_empty(), "{errors:#?}");

    assert_eq!(
        container["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    assert_eq!(
        container["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
    for kind in ["requests", "limits"] {
        for r in ["cpu", "memory"] {
            assert!(
                !container["resources"][kind][r].is_null(),
                "resources.{kind}.{r}"
            );
        }
    }
    let port = container["ports"]
        .as_sequence()
        .expect("ports")
        .iter()
        .find(|p| p["name"].as_str() == Some("metrics"))
        .and_then(|p| p["containerPort"].as_u64())
        .expect("metrics containerPort");
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(
            container[probe]["httpGet"]["port"].as_str(),
            Some("metrics"),
            "{probe} port"
        );
    }

    // The ConfigMap's TOML loads and listens where the probes look.
    let cm_docs = yaml_docs(&deploy("k8s/configmap.yaml"));
    let toml_text = cm_docs
        .iter()
        .find_map(|d| d["data"]["churnstream.toml"].as_str())
        .expect("ConfigMap data churnstream.toml");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("churnstream.toml");
    std::fs::write(&path, toml_text).expect("write toml");
    let cfg = Config::load_with_env(Some(&path), &[]).expect("ConfigMap TOML loads");
    assert!(
        cfg.metrics.listen.starts_with("0.0.0.0:"),
        "probes cannot reach {}",
        cfg.metrics.listen
    );
    assert_eq!(u64::from(port_of(&cfg.metrics.listen)), port);
    // The config and model files are where the container mounts them.
    let config_at = argv
        .iter()
        .position(|a| a == "--config")
        .and_then(|i| argv.get(i + 1))
        .expect("--config in args");
    let mounts: Vec<String> = container["volumeMounts"]
        .as_sequence()
        .expect("volumeMounts")
        .iter()
        .filter_map(|m| m["mountPath"].as_str().map(str::to_owned))
        .collect();
    assert!(mounts.contains(config_at), "{config_at} not mounted");
    assert!(
        mounts.iter().any(|m| cfg.model.path.starts_with(m)),
        "model {} not under a mount {mounts:?}",
        cfg.model.path.display()
    );
    // Scaling note: replicas stay within the default input partitions (4).
    let replicas = dep["spec"]["replicas"].as_u64().expect("replicas");
    assert!(
        (1..=4).contains(&replicas),
        "replicas {replicas} > partitions"
    );
    assert!(read(&deploy("k8s/deployment.yaml")).contains("replicas ≤ partitions"));
}

/// Dotted paths of every leaf (and empty table) of a TOML table.
fn toml_keys(t: &toml::Table, prefix: &str, out: &mut BTreeSet<String>) {
    for (k, v) in t {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(inner) if !inner.is_empty() => toml_keys(inner, &key, out),
            _ => {
                out.insert(key);
            }
        }
    }
}

#[test]
fn example_config_loads_and_documents_every_default() {
    let path = deploy("churnstream.toml");
    Config::load(Some(&path)).expect("deploy/churnstream.toml loads");
    let cfg = Config::load_with_env(Some(&path), &[]).expect("loads without env");
    assert_eq!(
        cfg,
        Config::default(),
        "deploy/churnstream.toml must show the defaults"
    );
    let defaults = toml::Table::try_from(Config::default()).expect("defaults as TOML");
    let example: toml::Table = read(&path).parse().expect("TOML");
    let (mut want, mut have) = (BTreeSet::new(), BTreeSet::new());
    toml_keys(&defaults, "", &mut want);
    toml_keys(&example, "", &mut have);
    let missing: Vec<&String> = want.difference(&have).collect();
    assert!(
        missing.is_empty(),
        "keys missing from the example: {missing:?}"
    );
    // Every key (or run of related keys) has a comment right above it.
    let text = read(&path);
    let lines: Vec<&str> = text.lines().collect();
    let is_key = |l: &str| l.contains(" = ") && !l.starts_with('#');
    for (i, l) in lines.iter().enumerate().filter(|(_, l)| is_key(l)) {
        let above = lines[..i].iter().rev().find(|p| !is_key(p));
        assert!(
            above.is_some_and(|p| p.starts_with('#')),
            "no comment above `{l}`"
        );
    }
}

#[test]
fn dockerfile_is_multi_stage_with_a_new_enough_rust() {
    let text = read(&deploy("Dockerfile"));
    let froms: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("FROM "))
        .collect();
    assert!(froms.len() >= 2, "multi-stage: {froms:?}");
    let builder = froms[0];
    let version = builder
        .strip_prefix("rust:")
        .and_then(|v| v.split(['-', ' ']).next())
        .expect("builder is rust:<version>");
    let cargo: toml::Table = read(&root().join("Cargo.toml"))
        .parse()
        .expect("Cargo.toml");
    let msrv = cargo["workspace"]["package"]["rust-version"]
        .as_str()
        .expect("rust-version");
    let parse = |v: &str| -> Vec<u32> { v.split('.').filter_map(|x| x.parse().ok()).collect() };
    assert!(
        parse(version) >= parse(msrv),
        "builder rust {version} < rust-version {msrv}"
    );
    for needed in [
        "cmake",
        "build-essential",
        "-p churnstream",
        "ENTRYPOINT [\"churnstream\"]",
    ] {
        assert!(text.contains(needed), "Dockerfile lacks {needed}");
    }
    let runtime = froms.last().copied().unwrap_or_default();
    assert!(
        runtime.starts_with("debian:") && runtime.contains("-slim"),
        "runtime {runtime}"
    );
    for l in text.lines().filter_map(|l| l.strip_prefix("COPY deploy/")) {
        let src = l.split_whitespace().next().unwrap_or_default();
        assert!(deploy(src).exists(), "COPY deploy/{src} missing");
    }
}
