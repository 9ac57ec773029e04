//! In-process throughput of the streaming core, no broker: pre-serialized JSON bytes of generated
//! events → `Engine::ingest` (decode → validate → dedupe → rollup) in micro-batches of 5000, each
//! followed by `Engine::score_dirty` (features → score → alert decision), exactly the work
//! `kafka::run` does per batch minus the Kafka I/O. One thread: polars is limited to one thread
//! (`POLARS_MAX_THREADS=1` unless set).
//!
//! Prints one JSON line (`name = "inprocess"`): events/s over the whole run and p50/p99 of the
//! per-batch latency (ingest of the batch + scoring). `cargo bench -p churn-pipeline --bench
//! inprocess`; `make bench` collects it into `target/bench/inprocess.json`.
//!
//! Environment: `CHURN_BENCH_CUSTOMERS` (default 6000 → ≈ 1.05 M events over 180 days),
//! `CHURN_BENCH_DAYS` (180), `CHURN_BENCH_BATCH` (5000).

mod support;

use std::sync::Arc;
use std::time::Instant;

use chrono::Duration;
use churn_pipeline::config::{AlertConfig, PipelineConfig};
use churn_pipeline::{Engine, Ingest};

fn main() {
    if std::env::var_os("POLARS_MAX_THREADS").is_none() {
        std::env::set_var("POLARS_MAX_THREADS", "1");
    }
    let customers = support::env_or("CHURN_BENCH_CUSTOMERS", 6000) as usize;
    let days = support::env_or("CHURN_BENCH_DAYS", 180) as u32;
    let batch = support::env_or("CHURN_BENCH_BATCH", 5000).max(1) as usize;

    let model = Arc::new(support::quick_model());
    let gen = churn_gen::GenConfig {
        customers,
        days,
        seed: 11,
        ..Default::default()
    };
    let t_gen = Instant::now();
    let pop = churn_gen::generate(&gen);
    // Pre-serialized bytes, as they sit in Kafka; a source per (type, customer hash % 4) like
    // the 4 topics × 4 partitions of the default deployment.
    let inputs: Vec<(Vec<u8>, usize)> = pop
        .events
        .iter()
        .map(|ev| {
            let t = match ev.payload {
                churn_events::Payload::Purchase(_) => 0,
                churn_events::Payload::Engagement(_) => 1,
                churn_events::Payload::Feedback(_) => 2,
                churn_events::Payload::Subscription(_) => 3,
            };
            let h = ev
                .customer_id
                .bytes()
                .fold(0usize, |a, b| a * 31 + b as usize);
            (ev.to_json(), t * 4 + h % 4)
        })
        .collect();
    let bytes: usize = inputs.iter().map(|(b, _)| b.len()).sum();
    drop(pop);
    eprintln!(
        "[bench] {} events ({} MB JSON) for {customers} customers × {days} days generated in {:.1} s",
        inputs.len(),
        bytes / 1_000_000,
        t_gen.elapsed().as_secs_f64()
    );

    let now = gen.end() + Duration::days(1);
    let mut engine =
        Engine::new(model, PipelineConfig::default(), AlertConfig::default()).expect("engine");

    let mut latencies = Vec::with_capacity(inputs.len() / batch + 1);
    let (mut ingest_s, mut score_s) = (0.0f64, 0.0f64);
    let (mut alerts, mut scores, mut rejected, mut duplicates) = (0usize, 0usize, 0usize, 0usize);
    let start = Instant::now();
    for chunk in inputs.chunks(batch) {
        let t0 = Instant::now();
        for (b, source) in chunk {
            match engine.ingest(b, *source, t0, now) {
                Ingest::Accepted => {}
                Ingest::Duplicate => duplicates += 1,
                Ingest::Rejected(_) => rejected += 1,
            }
        }
        let t1 = Instant::now();
        let out = engine.score_dirty().expect("score_dirty");
        let t2 = Instant::now();
        alerts += out.alerts.len();
        scores += out.scores.len();
        ingest_s += (t1 - t0).as_secs_f64();
        score_s += (t2 - t1).as_secs_f64();
        latencies.push((t2 - t0).as_secs_f64() * 1e3);
    }
    let seconds = start.elapsed().as_secs_f64();
    assert_eq!(rejected, 0, "generated events must all decode");
    let kpis = engine.kpis();
    let n = inputs.len();
    let line = serde_json::json!({
        "name": "inprocess",
        "events": n,
        "seconds": seconds,
        "events_per_s": n as f64 / seconds,
        "p50_ms": support::quantile(&mut latencies, 0.50),
        "p99_ms": support::quantile(&mut latencies, 0.99),
        "peak_rss_bytes": support::peak_rss(),
        "bytes_per_customer": kpis.state_bytes.checked_div(kpis.customers),
        "batch": batch,
        "batches": latencies.len(),
        "customers": kpis.customers,
        "ingest_seconds": ingest_s,
        "score_seconds": score_s,
        "scores": scores,
        "alerts": alerts,
        "duplicates": duplicates,
        "json_bytes": bytes,
        "threads": 1,
    });
    println!("{line}");
}
