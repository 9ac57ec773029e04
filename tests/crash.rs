//! Crash safety on the real broker: `churnstream run` (the real binary) is killed with SIGKILL at
//! random points while consuming, restarted, and finally stopped with SIGTERM. Afterwards every
//! input event is reflected exactly once in the per-customer state (changelog), every alert the
//! state remembers is on the alerts topic, duplicate alerts only ever share an id, and the set of
//! alert ids is exactly that of a fault-free run over the same input (own group and outputs).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use rand::Rng;

const PARTS: i32 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_loses_nothing() {
    // A private broker on tansu's sqlite engine: its memory engine, asked to fetch from an offset
    // inside a producer batch, serves from the next batch on and skips the rest of that one
    // (README, "The local broker") — and a restarted consumer resumes at exactly such offsets.
    let broker_dir = tempfile::tempdir().expect("tmp");
    let _broker = common::Broker::new(broker_dir.path(), common::Storage::Sqlite);
    let mut cfg = common::pipeline_config_on(&_broker.brokers(), "crash", PARTS).await;
    common::quick_member(&mut cfg);
    // Sources go idle soon after the input ends: both runs then close the same days.
    cfg.pipeline.idle_source_ms = 2_000;
    let dir = tempfile::tempdir().expect("tmp");

    let (pop, model, _) = common::population_and_model(200, 100, 5, 28);
    cfg.model.path = dir.path().join("model.json");
    model.save(&cfg.model.path).expect("save model");
    let config_path = dir.path().join("churnstream.toml");
    std::fs::write(&config_path, toml::to_string(&cfg).expect("toml")).expect("write config");

    common::publish(&cfg, &pop.events).await;

    let log = dir.path().join("pipeline.log");
    let mut rng = rand::thread_rng();
    for round in 0..3 {
        let mut child = common::spawn_run(&config_path, &log);
        tokio::time::sleep(Duration::from_millis(rng.gen_range(2500..6000))).await;
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("wait");
        assert!(
            !status.success(),
            "round {round}: killed process must not report success"
        );
        // Let the dead member's session expire before the next one joins: tansu 0.6's group
        // coordinator can otherwise keep a partition assigned to the dead member (production
        // Kafka evicts it after session.timeout.ms and rebalances on its own).
        tokio::time::sleep(Duration::from_secs(8)).await;
    }
    let mut child = common::spawn_run(&config_path, &log);
    let deadline = Instant::now() + Duration::from_secs(240);
    while !common::caught_up(&cfg, &cfg.kafka.group_id, PARTS) {
        assert!(
            Instant::now() < deadline,
            "pipeline did not catch up; log tail:\n{}",
            common::log_tail(&log)
        );
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "pipeline exited early with {status}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    common::wait_alerts_settled(&cfg).await;
    let term = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("kill -TERM");
    assert!(term.success());
    let status = child.wait().expect("wait");
    assert!(status.success(), "graceful shutdown exits 0, got {status}");

    if let Some(keep) = std::env::var_os("CHURN_KEEP_LOGS") {
        let _ = std::fs::copy(&log, std::path::Path::new(&keep).join("crash.log"));
    }
    // State: the newest changelog record per customer equals the batch fold of all events.
    let latest = common::latest_state(&cfg).await;
    common::assert_exactly_once(&latest, &pop.events);

    // Alerts: none lost (every alert the state remembers is on the topic), duplicates share ids.
    let ids_by_decision = common::alert_ids_by_decision(&cfg).await;
    let mut remembered = 0;
    for (id, snap) in &latest {
        if let (Some(day), Some(band)) = (snap.mem.last_alert_day, snap.mem.last_alert_band) {
            remembered += 1;
            let date = churn_features::day_start(day).format("%F").to_string();
            assert!(
                ids_by_decision.contains_key(&(id.clone(), date.clone(), band.as_str().to_string())),
                "state remembers an alert for {id} on {date} ({band}) that is not on the alerts topic"
            );
        }
    }
    let bands: BTreeMap<String, usize> = latest.values().fold(BTreeMap::new(), |mut m, s| {
        *m.entry(format!("{:?}", s.mem.band)).or_default() += 1;
        m
    });
    assert!(
        remembered > 0,
        "the scenario must produce alerts: {} on the topic, bands {bands:?}, first days {:?}\n{}",
        ids_by_decision.len(),
        latest
            .values()
            .map(|s| s.first_day)
            .collect::<BTreeSet<_>>(),
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.contains("metrics endpoint"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // The same input without faults: exactly the same alert ids.
    let clean = common::with_own_outputs(&cfg, "clean", PARTS).await;
    let clean_path = dir.path().join("clean.toml");
    std::fs::write(&clean_path, toml::to_string(&clean).expect("toml")).expect("write config");
    let clean_log = dir.path().join("clean.log");
    let child = common::spawn_run(&clean_path, &clean_log);
    common::wait_caught_up_logged(&clean, PARTS, &clean_log).await;
    common::wait_alerts_settled(&clean).await;
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let mut child = child;
    let _ = child.wait();
    let (faulted, fault_free) = (alert_ids(&cfg).await, alert_ids(&clean).await);
    eprintln!(
        "alert ids: {} with 3 SIGKILLs, {} fault-free",
        faulted.len(),
        fault_free.len()
    );
    assert_eq!(
        faulted,
        fault_free,
        "crashes must not change the alerts: missing {:?}, extra {:?}",
        fault_free.difference(&faulted).collect::<Vec<_>>(),
        faulted.difference(&fault_free).collect::<Vec<_>>()
    );
}

async fn alert_ids(cfg: &churn_pipeline::Config) -> BTreeSet<String> {
    tokio::task::block_in_place(|| {
        common::read_topic_to_end(&cfg.kafka.brokers, &cfg.topics.alerts)
    })
    .iter()
    .map(|r| common::any_alert(&r.payload).id)
    .collect()
}
