//! Alerts are a function of the input, not of timing (issue #21). One backlog is published once;
//! each run consumes it with its own consumer group and its own alerts, scores and changelog
//! topics, with `churnstream run` (the real binary):
//!
//! - two solo runs must publish the same set of alert ids;
//! - a faulted run — a second member joins at 20 % of the backlog, the first member is killed
//!   with SIGKILL at 50 % and restarted, the second at 80 % and restarted — must publish exactly
//!   the fault-free set: no id missing, no id extra (ignored in `make test`, see its doc).
//!
//! Every run ends the same way: caught up with the backlog, then idle long enough for every
//! source to go idle (each partition's clock then closes every day but its newest), then SIGTERM.
//!
//! The broker is a private tansu on its sqlite engine, whose high watermarks are right: a source
//! that is behind (consumer lag > 0) then holds its partition's clock however long the consumer
//! takes to fetch it. On the memory engine the lag is unknown (README, "The local broker") and
//! a source that delivers nothing for `idle_source_ms` while behind is taken for idle — its
//! later events are late, and which those are depends on timing.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use churn_events::{AlertData, CloudEvent};
use churn_pipeline::Config;
use common::{Broker, Storage};

const PARTS: i32 = 4;

fn terminate(mut c: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &c.id().to_string()])
        .status();
    let _ = c.wait();
}

fn kill(mut c: Child) {
    c.kill().expect("SIGKILL");
    let _ = c.wait();
}

struct Backlog {
    cfg: Config,
    dir: tempfile::TempDir,
    total: i64,
    _broker: Broker,
}

async fn backlog() -> Backlog {
    let dir = tempfile::tempdir().expect("tmp");
    let broker = Broker::new(dir.path(), Storage::Sqlite);
    let mut cfg = common::pipeline_config_on(&broker.brokers(), "determinism", PARTS).await;
    common::quick_member(&mut cfg);
    // Small batches and a short idle rule: the backlog takes long enough to fault it at chosen
    // points, and a run's end (every source idle) comes soon after it caught up.
    cfg.pipeline.batch_max_events = env_or("CHURN_DET_BATCH", 150);
    cfg.pipeline.idle_source_ms = 2_000;
    // Larger populations for a manual reproduction: CHURN_DET_CUSTOMERS, _DAYS, _SEED, _BATCH.
    let (pop, model, _) = common::population_and_model(
        env_or("CHURN_DET_CUSTOMERS", 400),
        env_or("CHURN_DET_DAYS", 150),
        env_or("CHURN_DET_SEED", 5),
        28,
    );
    cfg.model.path = dir.path().join("model.json");
    model.save(&cfg.model.path).expect("save model");
    common::publish(&cfg, &pop.events).await;
    let parts: Vec<(String, i32)> = cfg
        .topics
        .inputs()
        .iter()
        .flat_map(|t| (0..PARTS).map(move |p| (t.to_string(), p)))
        .collect();
    let total: i64 =
        tokio::task::block_in_place(|| common::log_ends(&cfg.kafka.brokers, &parts).iter().sum());
    assert_eq!(
        total as usize,
        pop.events.len(),
        "every event on the input topics"
    );
    Backlog {
        cfg,
        dir,
        total,
        _broker: broker,
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Progress of `cfg`'s group through the backlog, 0..=1.
fn progress(cfg: &Config, total: i64) -> f64 {
    common::committed_sum(cfg, &cfg.kafka.group_id, PARTS) as f64 / total as f64
}

async fn wait_progress(cfg: &Config, total: i64, at: f64, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(240);
    while tokio::task::block_in_place(|| progress(cfg, total)) < at {
        assert!(
            Instant::now() < deadline,
            "no progress to {at}; log tail:\n{}",
            common::log_tail(log)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One run over the backlog; returns its alert ids and the log path.
async fn run(b: &Backlog, sfx: &str, faults: bool) -> (BTreeSet<String>, PathBuf) {
    let cfg = common::with_own_outputs(&b.cfg, sfx, PARTS).await;
    let config = b.dir.path().join(format!("{sfx}.toml"));
    std::fs::write(&config, toml::to_string(&cfg).expect("toml")).expect("config");
    let log = b.dir.path().join(format!("{sfx}.log"));
    let mut a = common::spawn_run(&config, &log);
    let mut second = None;
    if faults {
        wait_progress(&cfg, b.total, 0.2, &log).await;
        eprintln!(
            "{sfx}: second member joins at {:.0} %",
            100.0 * progress(&cfg, b.total)
        );
        second = Some(common::spawn_run(&config, &log));
        wait_progress(&cfg, b.total, 0.5, &log).await;
        eprintln!(
            "{sfx}: SIGKILL the first at {:.0} %",
            100.0 * progress(&cfg, b.total)
        );
        kill(a);
        // Restarted at once: tansu keeps the dead member's partitions until its session times
        // out (6 s), then hands them on.
        a = common::spawn_run(&config, &log);
        wait_progress(&cfg, b.total, 0.8, &log).await;
        eprintln!(
            "{sfx}: SIGKILL the second at {:.0} %",
            100.0 * progress(&cfg, b.total)
        );
        if let Some(s) = second.take() {
            kill(s);
        }
        second = Some(common::spawn_run(&config, &log));
    }
    wait_progress(&cfg, b.total, 1.0, &log).await;
    // Every source idle (2 s), a sweep (1 s) closes the days, the checkpoint stores them.
    tokio::time::sleep(Duration::from_secs(6)).await;
    terminate(a);
    if let Some(s) = second {
        terminate(s);
    }
    let ids = tokio::task::block_in_place(|| {
        common::read_topic_to_end(&cfg.kafka.brokers, &cfg.topics.alerts)
    })
    .iter()
    .map(|r| {
        let ev: CloudEvent<AlertData> = serde_json::from_slice(&r.payload).expect("alert");
        ev.id
    })
    .collect();
    (ids, log)
}

fn diff(a: &BTreeSet<String>, b: &BTreeSet<String>) -> String {
    let missing: Vec<&String> = a.difference(b).take(5).collect();
    let extra: Vec<&String> = b.difference(a).take(5).collect();
    format!(
        "{} vs {} ids; missing {} (e.g. {missing:?}), extra {} (e.g. {extra:?})",
        a.len(),
        b.len(),
        a.difference(b).count(),
        b.difference(a).count()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_solo_runs_of_a_backlog_publish_the_same_alerts() {
    let b = backlog().await;
    let (solo1, _) = run(&b, "solo1", false).await;
    let (solo2, _) = run(&b, "solo2", false).await;
    eprintln!("solo runs: {} and {} alerts", solo1.len(), solo2.len());
    assert!(
        solo1.len() >= 20,
        "the backlog raises alerts ({})",
        solo1.len()
    );
    assert_eq!(solo1, solo2, "two solo runs: {}", diff(&solo1, &solo2));
}

/// Not in `make test` (run it with `cargo nextest run -p churnstream --test determinism
/// --run-ignored all`): on tansu it does not pass every time. The suspect (not proven): its
/// coordinator hands a partition to a joining member before the previous owner has revoked it,
/// and the old owner's state records written during that overlap can end up as a customer's
/// newest record (ARCHITECTURE.md, "Rebalances on tansu"). The closing note of issue #21 gives
/// its pass rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "flaky on tansu's coordinator; see the doc comment"]
async fn a_join_and_two_sigkills_publish_the_fault_free_alerts() {
    let b = backlog().await;
    let (solo, _) = run(&b, "solo", false).await;
    let (faulted, log) = run(&b, "faulted", true).await;
    if let Some(keep) = std::env::var_os("CHURN_KEEP_LOGS") {
        let _ = std::fs::copy(&log, Path::new(&keep).join("determinism-faulted.log"));
    }
    eprintln!(
        "solo run: {} alerts, faulted run: {} alerts",
        solo.len(),
        faulted.len()
    );
    assert_eq!(
        solo,
        faulted,
        "join at 20 %, SIGKILL at 50 % and 80 %: {}; log tail:\n{}",
        diff(&solo, &faulted),
        common::log_tail(&log)
    );
}
