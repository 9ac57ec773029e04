//! Restore of a large, uncompacted changelog through the local broker (tansu, memory storage
//! whatever `TANSU_STORAGE` says: it never compacts, so every version a member wrote is still in
//! the log). One JSON line,
//! `name = "restore"`.
//!
//! A child process (this binary again, `CHURN_BENCH_RESTORE_PRODUCE` set) produces
//! `CHURN_BENCH_RESTORE_CUSTOMERS` (1 000 000) customers × `CHURN_BENCH_RESTORE_VERSIONS` (10)
//! state records to a fresh changelog topic of `CHURN_BENCH_RESTORE_PARTITIONS` (4) partitions:
//! real state records (customers of a generated history of `CHURN_BENCH_RESTORE_DAYS` (30) days
//! run through the engine, wrapped with a lineage the way the service writes them), each customer rewritten once per version, as a
//! long-running member rewrites its busy customers between two checkpoints of the log. With
//! `CHURN_BENCH_RESTORE_MARKERS=1` a restore marker precedes every version (a restore between
//! each: the reduction then cannot drop anything).
//!
//! This process then restores every partition the way a member's assignment does
//! (`kafka::write_markers`, `kafka::restore_records`, `Engine::restore_in` of each chosen
//! record) and reports the read and apply time, the records read and kept, and the peak RSS
//! growth over the restore (`VmHWM` after clearing it, minus `VmRSS` before; the producer ran in
//! the other process, so none of its memory is counted).

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use churn_pipeline::config::{AlertConfig, PipelineConfig};
use churn_pipeline::lineage::{wrap, Lineage};
use churn_pipeline::{kafka, train, Engine};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use support::{env_or, peak_rss, rss, Broker};

fn model() -> Arc<churn_model::ModelArtifact> {
    let gen = churn_gen::GenConfig {
        customers: 300,
        days: 120,
        seed: 9,
        ..Default::default()
    };
    let (_, model, _) = train::synthetic(&gen, &Default::default()).expect("model");
    Arc::new(model)
}

/// Real state records: a generated history's customers through the engine.
fn payloads(model: &Arc<churn_model::ModelArtifact>) -> Vec<Vec<u8>> {
    // A month of history each: records of a few hundred bytes (a customer with 120 days of
    // history writes about 800).
    let pop = churn_gen::generate(&churn_gen::GenConfig {
        customers: 2000,
        days: env_or("CHURN_BENCH_RESTORE_DAYS", 30) as u32,
        seed: 3,
        ..Default::default()
    });
    let mut e = Engine::new(
        model.clone(),
        PipelineConfig::default(),
        AlertConfig::default(),
    )
    .expect("engine");
    for ev in &pop.events {
        e.ingest_event(ev, 0, Instant::now());
    }
    e.take_changelog()
        .expect("changelog")
        .into_iter()
        .map(|r| r.payload)
        .filter(|p| !p.is_empty())
        .collect()
}

fn produce(brokers: &str, topic: &str) {
    let customers = env_or("CHURN_BENCH_RESTORE_CUSTOMERS", 1_000_000) as usize;
    let versions = env_or("CHURN_BENCH_RESTORE_VERSIONS", 10) as usize;
    let parts = env_or("CHURN_BENCH_RESTORE_PARTITIONS", 4) as i32;
    let markers = env_or("CHURN_BENCH_RESTORE_MARKERS", 0) == 1;
    let model = model();
    let records = payloads(&model);
    let lineage = Lineage {
        token: "bench:1".into(),
        base: None,
    };
    let wrapped: Vec<Vec<u8>> = records.iter().map(|r| wrap(&lineage, r)).collect();
    let bytes: usize = wrapped.iter().map(Vec::len).sum::<usize>() / wrapped.len();
    eprintln!(
        "[bench] producing {customers} customers × {versions} versions ({bytes} B per record)"
    );
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "500000")
        .set("queue.buffering.max.kbytes", "1048576")
        .create()
        .expect("producer");
    let t0 = Instant::now();
    for v in 0..versions {
        if markers {
            let token = format!("bench-marker-{v}");
            for p in 0..parts {
                send(
                    &producer,
                    topic,
                    p,
                    kafka::RESTORE_MARKER_KEY,
                    token.as_bytes(),
                );
            }
        }
        for i in 0..customers {
            let key = format!("c{i:07}");
            let payload = &wrapped[(i * 7 + v) % wrapped.len()];
            send(
                &producer,
                topic,
                (i as i32) % parts,
                key.as_bytes(),
                payload,
            );
        }
    }
    producer.flush(Duration::from_secs(300)).expect("flush");
    eprintln!(
        "[bench] produced {} records in {:.1} s",
        customers * versions,
        t0.elapsed().as_secs_f64()
    );
}

fn send(producer: &BaseProducer, topic: &str, partition: i32, key: &[u8], payload: &[u8]) {
    let mut record = BaseRecord::<[u8], [u8]>::to(topic)
        .partition(partition)
        .key(key)
        .payload(payload);
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                ),
                r,
            )) => {
                record = r;
                producer.poll(Duration::from_millis(50));
            }
            Err((e, _)) => panic!("produce: {e}"),
        }
    }
}

fn main() {
    if let Ok(spec) = std::env::var("CHURN_BENCH_RESTORE_PRODUCE") {
        let (brokers, topic) = spec.split_once(',').expect("brokers,topic");
        produce(brokers, topic);
        return;
    }
    // The memory engine: it never compacts (the log keeps every version, the case measured),
    // and tansu's sqlite engine serves a log of millions of records too slowly for a benchmark.
    let broker = Broker::start_on(Some("memory"));
    let parts = env_or("CHURN_BENCH_RESTORE_PARTITIONS", 4) as i32;
    let customers = env_or("CHURN_BENCH_RESTORE_CUSTOMERS", 1_000_000);
    let versions = env_or("CHURN_BENCH_RESTORE_VERSIONS", 10);
    let topic = format!("__bench_restore_{}", std::process::id());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &broker.addr)
            .create()
            .expect("admin");
        let t = NewTopic::new(&topic, parts, TopicReplication::Fixed(1))
            .set("cleanup.policy", "compact");
        admin
            .create_topics([&t], &AdminOptions::new())
            .await
            .expect("create topic");
    });
    drop(rt);
    let status = std::process::Command::new(std::env::current_exe().expect("exe"))
        .env(
            "CHURN_BENCH_RESTORE_PRODUCE",
            format!("{},{topic}", broker.addr),
        )
        .status()
        .expect("producer process");
    assert!(status.success(), "the producer process failed");

    let model = model();
    let mut engine =
        Engine::new(model, PipelineConfig::default(), AlertConfig::default()).expect("engine");
    let defaults = churn_pipeline::Config::default();
    let mut reader = ClientConfig::new();
    for (k, v) in &defaults.kafka.consumer {
        reader.set(k, v);
    }
    reader
        .set("bootstrap.servers", &broker.addr)
        .set("group.id", "bench-restore")
        // tansu answers a fetch only after fetch.wait.max.ms (librdkafka default 500) even when
        // data is there (README, "The local broker"); Kafka answers at once.
        .set("fetch.wait.max.ms", "10")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    let mut marker = ClientConfig::new();
    marker
        .set("bootstrap.servers", &broker.addr)
        .set("acks", "all")
        .set("linger.ms", "0");
    let all: Vec<i32> = (0..parts).collect();
    let ends = kafka::write_markers(&marker, &topic, &all, "bench-restore").expect("markers");

    // Peak RSS from here on (Linux: writing 5 to clear_refs resets VmHWM to the current RSS).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = rss().unwrap_or_default();
    let (mut read_s, mut apply_s, mut kept) = (0.0, 0.0, 0usize);
    for (p, end) in ends {
        let t0 = Instant::now();
        let resolved = kafka::restore_records(&reader, &topic, p, end, None).expect("restore");
        read_s += t0.elapsed().as_secs_f64();
        kept += resolved.records.len();
        let t1 = Instant::now();
        for (k, v) in &resolved.records {
            engine.restore_in(Some(p), k, v).expect("restore record");
        }
        apply_s += t1.elapsed().as_secs_f64();
    }
    let peak = peak_rss().unwrap_or_default();
    let restored = engine.kpis().customers;
    println!(
        "{}",
        serde_json::json!({
            "name": "restore",
            "customers": customers,
            "versions": versions,
            "partitions": parts,
            "records_in_log": customers * versions,
            "records_chosen": kept,
            "customers_restored": restored,
            "read_s": read_s,
            "apply_s": apply_s,
            "total_s": read_s + apply_s,
            "peak_rss_growth_bytes": peak.saturating_sub(before),
            "peak_rss_growth_bytes_per_customer": peak.saturating_sub(before) / customers.max(1),
        })
    );
    assert_eq!(restored as u64, customers, "every customer restored");
    drop(engine);
    drop(broker);
}
