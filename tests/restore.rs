//! Restore must not depend on the broker's reported high watermark (issue #20). tansu's memory
//! engine reports a partition's high watermark as the last batch's base offset + 1 for
//! idempotent or compressed batches, so a restore that reads "up to the high watermark" stops
//! after the first record of a checkpoint written in one batch. The restore now appends a marker
//! to each changelog partition it restores and reads up to the offset the broker gave that
//! marker.
//!
//! On a private tansu broker of each storage engine: `churnstream run` (the real binary)
//! consumes a backlog in one batch, so its checkpoint is one idempotent producer batch; it is
//! killed with SIGKILL once the group committed everything, and restarted. The restarted member
//! must restore every record of the changelog, and the state restored through the same code
//! path equals, customer by customer, the newest record of each customer before the kill.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use churn_pipeline::engine::Snapshot;
use churn_pipeline::{kafka, Config, Engine};
use common::{Broker, Storage};

/// `records=N` of every "state restored from changelog" line of `log`, in order.
fn restored_counts(log: &std::path::Path) -> Vec<usize> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(strip_ansi)
        .filter(|l| l.contains("state restored from changelog"))
        .filter_map(|l| {
            let at = l.find("records=")? + "records=".len();
            l[at..]
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

/// `line` without its terminal colour codes (`ESC [ … m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Every changelog record but the restore markers, in offset order (read to the true end).
async fn changelog(cfg: &Config) -> Vec<common::Record> {
    let mut all = common::read_topic(
        &cfg.kafka.brokers,
        &cfg.topics.changelog,
        usize::MAX,
        Duration::from_secs(4),
    )
    .await;
    all.sort_by_key(|r| r.offset);
    all.dedup_by_key(|r| r.offset);
    all.retain(|r| r.key.as_deref() != Some(kafka::RESTORE_MARKER_KEY));
    all
}

async fn scenario(storage: Storage) {
    let dir = tempfile::tempdir().expect("tmp");
    let broker = Broker::new(dir.path(), storage);
    let mut cfg = common::pipeline_config_on(&broker.brokers(), "restore", 1).await;
    common::quick_member(&mut cfg);
    // The whole backlog in one batch: one checkpoint, written as one producer batch.
    cfg.pipeline.batch_max_events = 1_000_000;
    cfg.pipeline.batch_max_wait_ms = 3_000;
    cfg.kafka.producer.insert("linger.ms".into(), "200".into());
    let (pop, model, _) = common::population_and_model(300, 100, 3, 28);
    cfg.model.path = dir.path().join("model.json");
    model.save(&cfg.model.path).expect("save model");
    let config_path = dir.path().join("churnstream.toml");
    std::fs::write(&config_path, toml::to_string(&cfg).expect("toml")).expect("config");
    common::publish(&cfg, &pop.events).await;

    let log = dir.path().join("pipeline.log");
    let mut first = common::spawn_run(&config_path, &log);
    let customers: std::collections::BTreeSet<&str> =
        pop.events.iter().map(|e| e.customer_id.as_str()).collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let caught_up =
            tokio::task::block_in_place(|| common::caught_up(&cfg, &cfg.kafka.group_id, 1));
        if caught_up && common::latest_state(&cfg).await.len() == customers.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{storage:?}: the pipeline did not checkpoint the backlog; log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    first.kill().expect("SIGKILL");
    first.wait().expect("wait");

    let before = changelog(&cfg).await;
    let latest: BTreeMap<String, Snapshot> = common::latest_state(&cfg).await.into_iter().collect();
    assert_eq!(latest.len(), customers.len(), "every customer checkpointed");
    let reported = tokio::task::block_in_place(|| {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let c: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", broker.brokers())
            .create()
            .expect("client");
        c.fetch_watermarks(&cfg.topics.changelog, 0, Duration::from_secs(5))
            .expect("watermarks")
            .1
    });
    let end = tokio::task::block_in_place(|| {
        common::log_end(&broker.brokers(), &cfg.topics.changelog, 0)
    });
    eprintln!(
        "{storage:?}: changelog holds {} state records (log end {end}); the broker reports a high \
         watermark of {reported}",
        before.len()
    );

    // Restart: the new member restores the partition up to its marker.
    tokio::time::sleep(Duration::from_secs(7)).await; // the dead member's session expires
    let mut second = common::spawn_run(&config_path, &log);
    let deadline = Instant::now() + Duration::from_secs(60);
    let counts = loop {
        let c = restored_counts(&log);
        if c.len() >= 2 {
            break c;
        }
        assert!(
            Instant::now() < deadline,
            "{storage:?}: no restore after the restart; log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let _ = Command::new("kill")
        .args(["-TERM", &second.id().to_string()])
        .status();
    let _ = second.wait();
    eprintln!(
        "{storage:?}: restored {} records after the restart (old restore would stop at offset {})",
        counts[1],
        reported - 1
    );
    assert_eq!(
        counts[1],
        before.len(),
        "{storage:?}: the restarted member restores every changelog record"
    );

    // The same restore path in-process: customer by customer, the state equals the newest
    // record of each customer before the kill.
    let mut reader = rdkafka::ClientConfig::new();
    reader
        .set("bootstrap.servers", broker.brokers())
        .set("group.id", common::unique("restore"))
        .set("enable.auto.commit", "false");
    let ends = tokio::task::block_in_place(|| {
        kafka::write_markers(&reader, &cfg.topics.changelog, &[0], "restore-test").expect("marker")
    });
    let records = tokio::task::block_in_place(|| {
        kafka::restore_records(&reader, &cfg.topics.changelog, 0, ends[0].1, None)
            .expect("read")
            .records
    });
    let mut engine = Engine::new(
        std::sync::Arc::new(model),
        cfg.pipeline.clone(),
        cfg.alerts.clone(),
    )
    .expect("engine");
    for (k, v) in &records {
        engine.restore(k, v).expect("restore");
    }
    assert_eq!(
        engine.customer_ids(),
        latest.keys().cloned().collect::<Vec<_>>(),
        "{storage:?}: every customer restored"
    );
    for (id, snap) in &latest {
        assert_eq!(
            engine.rollups(id),
            Some(&snap.rollups),
            "{storage:?}: {id} restored as checkpointed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_batch_checkpoint_is_restored_whole_on_the_memory_engine() {
    scenario(Storage::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_batch_checkpoint_is_restored_whole_on_the_sqlite_engine() {
    scenario(Storage::Sqlite).await;
}
