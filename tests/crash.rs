//! Crash safety on the real broker: `churnstream run` (the real binary) is killed with SIGKILL at
//! random points while consuming, restarted, and finally stopped with SIGTERM. Afterwards every
//! input event is reflected exactly once in the per-customer state (changelog), every alert the
//! state remembers is on the alerts topic, and duplicate alerts only ever share an id.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use churn_events::{AlertData, CloudEvent};
use churn_features::rollups_from_events;
use churn_model::TrainParams;
use churn_pipeline::engine::Snapshot;
use churn_pipeline::{kafka, train};
use rand::Rng;

const PARTS: i32 = 2;

fn spawn(bin: &str, config: &std::path::Path, log: &std::path::Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    Command::new(bin)
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn churnstream run")
}

fn tail(log: &std::path::Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_loses_nothing() {
    let mut cfg = common::pipeline_config("crash", PARTS).await;
    cfg.pipeline.batch_max_events = 400;
    cfg.pipeline.batch_max_wait_ms = 50;
    cfg.pipeline.warmup_days = 30;
    cfg.pipeline.sweep_interval_s = 1;
    // A SIGKILLed member stays in the group until its session times out; keep that short so the
    // restarted instance gets its partitions back quickly (passed verbatim to librdkafka).
    cfg.kafka
        .consumer
        .insert("session.timeout.ms".into(), "6000".into());
    cfg.kafka
        .consumer
        .insert("heartbeat.interval.ms".into(), "1000".into());
    let dir = tempfile::tempdir().expect("tmp");

    let pop = churn_gen::generate(&churn_gen::GenConfig {
        customers: 200,
        days: 100,
        seed: 5,
        ..Default::default()
    });
    let plan = churn_features::training::ObservationPlan {
        warmup_days: 28,
        ..Default::default()
    };
    let (model, _, _) = train::train_from_events(
        &pop.events,
        &plan,
        &TrainParams::default(),
        train::DEFAULT_BANDS,
    )
    .expect("model");
    cfg.model.path = dir.path().join("model.json");
    model.save(&cfg.model.path).expect("save model");
    let config_path = dir.path().join("churnstream.toml");
    std::fs::write(&config_path, toml::to_string(&cfg).expect("toml")).expect("write config");

    let mut publisher = kafka::Publisher::new(&cfg).expect("publisher");
    let sent = publisher
        .send_all(&pop.events, None)
        .await
        .expect("publish");
    assert_eq!(sent, pop.events.len());

    let bin = env!("CARGO_BIN_EXE_churnstream");
    let log = dir.path().join("pipeline.log");
    let mut rng = rand::thread_rng();
    for round in 0..3 {
        let mut child = spawn(bin, &config_path, &log);
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
    let mut child = spawn(bin, &config_path, &log);
    let deadline = Instant::now() + Duration::from_secs(240);
    while !common::caught_up(&cfg, &cfg.kafka.group_id, PARTS) {
        assert!(
            Instant::now() < deadline,
            "pipeline did not catch up; log tail:\n{}",
            tail(&log)
        );
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "pipeline exited early with {status}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let term = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("kill -TERM");
    assert!(term.success());
    let status = child.wait().expect("wait");
    assert!(status.success(), "graceful shutdown exits 0, got {status}");

    // State: the newest changelog record per customer equals the batch fold of all events.
    let records = common::read_topic(
        &cfg.kafka.brokers,
        &cfg.topics.changelog,
        usize::MAX,
        Duration::from_secs(8),
    )
    .await;
    let mut latest: BTreeMap<String, Snapshot> = BTreeMap::new();
    let mut by_partition: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for r in &records {
        let key = String::from_utf8(r.key.clone().unwrap_or_default()).expect("utf8 key");
        // Per partition, records are in offset order: later ones win.
        let last = by_partition.entry((key.clone(), r.partition)).or_insert(-1);
        assert!(r.offset > *last);
        *last = r.offset;
        latest.insert(key, serde_json::from_slice(&r.payload).expect("snapshot"));
    }
    let batch = rollups_from_events(&pop.events);
    assert_eq!(latest.len(), batch.len(), "every customer has state");
    for (id, want) in &batch {
        let got = &latest[id].rollups;
        assert_eq!(got.first_day, want.first_day, "{id}");
        assert_eq!(got.last_event, want.last_event, "{id}");
        assert_eq!(got.days.len(), want.days.len(), "{id}: days");
        for (a, b) in got.days.iter().zip(&want.days) {
            assert_eq!(
                (a.day, a.purchases, a.items, a.engagement, a.nps_count),
                (b.day, b.purchases, b.items, b.engagement, b.nps_count),
                "{id}: every event exactly once"
            );
            assert_eq!(
                (a.nps_first, a.nps_last, a.upgrades, a.downgrades, a.cancels),
                (b.nps_first, b.nps_last, b.upgrades, b.downgrades, b.cancels),
                "{id}"
            );
            assert!(
                (a.revenue - b.revenue).abs() < 1e-6
                    && (a.session_seconds - b.session_seconds).abs() < 1e-6,
                "{id}"
            );
        }
    }

    // Alerts: none lost (every alert the state remembers is on the topic), duplicates share ids.
    let alerts = common::read_topic(
        &cfg.kafka.brokers,
        &cfg.topics.alerts,
        usize::MAX,
        Duration::from_secs(8),
    )
    .await;
    let mut ids_by_decision: BTreeMap<(String, String, String), BTreeSet<String>> = BTreeMap::new();
    for a in &alerts {
        let ev: CloudEvent<AlertData> = serde_json::from_slice(&a.payload).expect("alert");
        ids_by_decision
            .entry((
                ev.data.customer_id.clone(),
                ev.data.as_of.format("%F").to_string(),
                ev.data.risk_band.clone(),
            ))
            .or_default()
            .insert(ev.id);
    }
    for (k, ids) in &ids_by_decision {
        assert_eq!(ids.len(), 1, "one id per (customer, day, band): {k:?}");
    }
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
        alerts.len(),
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
}
