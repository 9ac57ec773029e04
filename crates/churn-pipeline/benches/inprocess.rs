//! In-process throughput of the streaming core, no broker: pre-serialized JSON bytes of generated
//! events → `Engine::ingest` (decode → validate → dedupe → rollup) in micro-batches of `pipeline.batch_max_events` (50 000; the size a batch reaches at high rates), each
//! followed by `Engine::score_dirty` (features → score → alert decision) and the batch's state
//! records (`Engine::take_changelog`, the checkpoint): the work `kafka::run` does per batch minus
//! the Kafka I/O. `score_seconds` includes `state_seconds`. One thread: polars is limited to one thread
//! (`POLARS_MAX_THREADS=1` unless set).
//!
//! Prints one JSON line (`name = "inprocess"`): events/s over the whole run and p50/p99 of the
//! per-batch latency (ingest of the batch + scoring). `cargo bench -p churn-pipeline --bench
//! inprocess`; `make bench` collects it into `target/bench/inprocess.json`.
//!
//! `inprocess_fetch_order` runs the clean stream in the order a Kafka consumer delivers it
//! (per topic-partition fetches of `CHURN_BENCH_FETCH` = 7 000 messages, round robin): late
//! events on older days are then the rule.
//!
//! A last line, `inprocess_wide`, runs the clean pass over a wide population (many customers,
//! few events each: `CHURN_BENCH_WIDE_CUSTOMERS` 100 000 × `CHURN_BENCH_WIDE_DAYS` 10; 0
//! customers skips it), where a batch touches about one customer per event.
//!
//! Environment: `CHURN_BENCH_CUSTOMERS` (default 6000 → ≈ 1.05 M events over 180 days),
//! `CHURN_BENCH_DAYS` (180), `CHURN_BENCH_BATCH` (`pipeline.batch_max_events`).

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
    let batch = support::env_or(
        "CHURN_BENCH_BATCH",
        PipelineConfig::default().batch_max_events as u64,
    )
    .max(1) as usize;

    let model = Arc::new(support::quick_model());
    let (inputs, bytes, now) = prepared(customers, days, 11);
    let clean = pass(&model, &inputs, batch, now);
    assert_eq!(clean.rejected, 0, "generated events must all decode");
    let n = inputs.len();
    let clean_seconds = clean.seconds;
    let mut line = clean.json("inprocess", n);
    line["json_bytes"] = serde_json::json!(bytes);
    println!("{line}");

    // The same stream with 10 % hostile messages mixed in (one after every 9 good ones): every
    // one must be rejected, and the pace (messages/s) is compared with the clean pass.
    let hostile = hostile_samples();
    let mut mixed: Vec<(Vec<u8>, usize)> = Vec::with_capacity(n + n / 9 + 1);
    for (i, input) in inputs.iter().enumerate() {
        mixed.push(input.clone());
        if i % 9 == 8 {
            mixed.push((hostile[(i / 9) % hostile.len()].clone(), input.1));
        }
    }
    let bad = mixed.len() - n;
    let dirty = pass(&model, &mixed, batch, now);
    assert_eq!(dirty.rejected, bad, "every hostile message is rejected");
    let (dirty_seconds, rejected) = (dirty.seconds, dirty.rejected);
    let mut line = dirty.json("inprocess_with_10pct_dlq", mixed.len());
    line["rejected"] = serde_json::json!(rejected);
    line["pace_vs_clean"] =
        serde_json::json!((mixed.len() as f64 / dirty_seconds) / (n as f64 / clean_seconds));
    println!("{line}");

    drop(mixed);

    // The clean stream in the order a consumer delivers it: each source (topic-partition) in
    // fetches of `CHURN_BENCH_FETCH` messages (7 000 ≈ librdkafka's 1 MiB
    // `max.partition.fetch.bytes` of these events), round robin over the sources. A customer's
    // events then arrive days to weeks out of order across its topics (most land on an older day
    // than its newest row), which the time-ordered pass above never does.
    let fetch = support::env_or("CHURN_BENCH_FETCH", 7000).max(1) as usize;
    let skewed = fetch_order(&inputs, fetch);
    let pass_skewed = pass(&model, &skewed, batch, now);
    assert_eq!(pass_skewed.rejected, 0, "generated events must all decode");
    let mut line = pass_skewed.json("inprocess_fetch_order", n);
    line["fetch_messages"] = serde_json::json!(fetch);
    println!("{line}");
    drop(skewed);
    drop(inputs);

    // The other shape: many customers with few events each (default 100 000 customers × 10
    // days ≈ 1 M events). A batch then touches about as many customers as it has events, so
    // scoring and state records cost per event what they cost per customer.
    let wide_customers = support::env_or("CHURN_BENCH_WIDE_CUSTOMERS", 100_000) as usize;
    let wide_days = support::env_or("CHURN_BENCH_WIDE_DAYS", 10) as u32;
    if wide_customers > 0 {
        let (inputs, bytes, now) = prepared(wide_customers, wide_days, 12);
        let wide = pass(&model, &inputs, batch, now);
        assert_eq!(wide.rejected, 0, "generated events must all decode");
        let mut line = wide.json("inprocess_wide", inputs.len());
        line["json_bytes"] = serde_json::json!(bytes);
        println!("{line}");
    }
}

/// Messages as (JSON bytes, source index).
type Inputs = Vec<(Vec<u8>, usize)>;

/// `inputs` reordered as fetched: per source in arrival order, `fetch` messages at a time,
/// round robin over the sources.
fn fetch_order(inputs: &[(Vec<u8>, usize)], fetch: usize) -> Inputs {
    let sources = inputs.iter().map(|(_, s)| s + 1).max().unwrap_or(0);
    let mut queues: Vec<std::collections::VecDeque<&(Vec<u8>, usize)>> =
        vec![Default::default(); sources];
    for m in inputs {
        queues[m.1].push_back(m);
    }
    let mut out = Vec::with_capacity(inputs.len());
    while out.len() < inputs.len() {
        for q in queues.iter_mut() {
            let k = fetch.min(q.len());
            out.extend(q.drain(..k).cloned());
        }
    }
    out
}

/// Generated events for `customers` × `days` as pre-serialized JSON bytes (as they sit in Kafka),
/// each with a source per (type, customer hash % 4) like the 4 topics × 4 partitions of the
/// default deployment; their total size; and "now" (the day after the last event).
fn prepared(
    customers: usize,
    days: u32,
    seed: u64,
) -> (Inputs, usize, chrono::DateTime<chrono::Utc>) {
    let gen = churn_gen::GenConfig {
        customers,
        days,
        seed,
        ..Default::default()
    };
    let t_gen = Instant::now();
    let pop = churn_gen::generate(&gen);
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
    eprintln!(
        "[bench] {} events ({} MB JSON) for {customers} customers × {days} days generated in {:.1} s",
        inputs.len(),
        bytes / 1_000_000,
        t_gen.elapsed().as_secs_f64()
    );
    (inputs, bytes, gen.end() + Duration::days(1))
}

/// Hostile payloads of the kinds the DLQ sees (see tests/hostile/).
fn hostile_samples() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = vec![
        br#"{"event_id":"x","customer_id":"c","occurred_at":"2026-02-01T00:00:00Z","type":"purch"#.to_vec(),
        vec![0xff, 0xfe, 0x00, 0x7b, 0x22],
        br#"{"event_id":"x","customer_id":"c","occurred_at":"2026-02-01T00:00:00Z","type":"purchase","order_id":"o","amount":NaN,"currency":"EUR","items":1}"#.to_vec(),
        br#"{"event_id":"x","customer_id":"c","occurred_at":"9999-01-01T00:00:00Z","type":"feedback","nps_score":5}"#.to_vec(),
        br#"{"event_id":"x","customer_id":"c","occurred_at":"2026-02-01T00:00:00Z","type":"refund"}"#.to_vec(),
        br#"{"event_id":"x","customer_id":"c","occurred_at":"2026-02-01T00:00:00Z","type":"feedback","nps_score":4000000000}"#.to_vec(),
        br#"{"event_id":"x","customer_id":"","occurred_at":"2026-02-01T00:00:00Z","type":"feedback","nps_score":5}"#.to_vec(),
    ];
    let mut deep = Vec::new();
    deep.extend(std::iter::repeat_n(b'[', 5000));
    v.push(deep);
    v.push(vec![b'x'; 100_000]);
    v
}

struct Pass {
    seconds: f64,
    latencies: Vec<f64>,
    ingest_s: f64,
    score_s: f64,
    alerts: usize,
    scores: usize,
    rejected: usize,
    duplicates: usize,
    customers: usize,
    state_bytes: usize,
    changelog_records: usize,
    changelog_bytes: usize,
    state_s: f64,
}

impl Pass {
    fn json(mut self, name: &str, n: usize) -> serde_json::Value {
        serde_json::json!({
            "name": name,
            "events": n,
            "seconds": self.seconds,
            "events_per_s": n as f64 / self.seconds,
            "p50_ms": support::quantile(&mut self.latencies, 0.50),
            "p99_ms": support::quantile(&mut self.latencies, 0.99),
            "peak_rss_bytes": support::peak_rss(),
            "bytes_per_customer": self.state_bytes.checked_div(self.customers),
            "batches": self.latencies.len(),
            "customers": self.customers,
            "ingest_seconds": self.ingest_s,
            "score_seconds": self.score_s,
            "scores": self.scores,
            "alerts": self.alerts,
            "duplicates": self.duplicates,
            "changelog_records": self.changelog_records,
            "state_seconds": self.state_s,
            "changelog_bytes": self.changelog_bytes,
            "threads": 1,
        })
    }
}

/// One pass of `inputs` through a fresh engine in batches of `batch` (ingest, then score).
fn pass(
    model: &Arc<churn_model::ModelArtifact>,
    inputs: &[(Vec<u8>, usize)],
    batch: usize,
    now: chrono::DateTime<chrono::Utc>,
) -> Pass {
    let mut engine = Engine::new(
        model.clone(),
        PipelineConfig::default(),
        AlertConfig::default(),
    )
    .expect("engine");
    let mut p = Pass {
        seconds: 0.0,
        latencies: Vec::with_capacity(inputs.len() / batch + 1),
        ingest_s: 0.0,
        score_s: 0.0,
        alerts: 0,
        scores: 0,
        rejected: 0,
        duplicates: 0,
        customers: 0,
        state_bytes: 0,
        changelog_records: 0,
        changelog_bytes: 0,
        state_s: 0.0,
    };
    let start = Instant::now();
    for chunk in inputs.chunks(batch) {
        let t0 = Instant::now();
        for (b, source) in chunk {
            match engine.ingest(b, *source, t0, now) {
                Ingest::Accepted => {}
                Ingest::Duplicate => p.duplicates += 1,
                Ingest::Rejected(_) => p.rejected += 1,
            }
        }
        let t1 = Instant::now();
        let out = engine.score_dirty().expect("score_dirty");
        // The batch's state records (the checkpoint `kafka::run` then produces).
        let t_state = Instant::now();
        let state = engine.take_changelog().expect("take_changelog");
        let t2 = Instant::now();
        p.state_s += (t2 - t_state).as_secs_f64();
        p.changelog_records += state.len();
        p.changelog_bytes += state.iter().map(|r| r.payload.len()).sum::<usize>();
        p.alerts += out.alerts.len();
        p.scores += out.scores.len();
        p.ingest_s += (t1 - t0).as_secs_f64();
        p.score_s += (t2 - t1).as_secs_f64();
        p.latencies.push((t2 - t0).as_secs_f64() * 1e3);
    }
    p.seconds = start.elapsed().as_secs_f64();
    let kpis = engine.kpis();
    p.customers = kpis.customers;
    p.state_bytes = kpis.state_bytes;
    p
}
