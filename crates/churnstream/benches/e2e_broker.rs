//! End to end through the local Kafka-protocol broker (tansu, memory storage): two JSON lines.
//!
//! - `e2e_broker_throughput`: generated events are produced to fresh topics first (Publisher,
//!   idempotent, acks=all); then `kafka::run` starts in-process with a fresh consumer group and we
//!   measure the time until every offset is processed (the `batch_events` histogram's sum reaches
//!   the number produced — it is observed after the batch's outputs were acknowledged and its
//!   offsets stored). Includes the group join; `first_event_s` says how long that took. Before
//!   the pipeline, a raw rdkafka `BaseConsumer` (fresh group, no processing) reads the same
//!   topics: `raw_consumer_events_per_s` (after its group join) and `ratio_to_raw_consumer`
//!   (`events_per_s_after_first_batch` over it) put the result against the broker's own limit
//!   in the same run.
//! - `e2e_broker_fixed_rate`: the pipeline runs first; events are offered at a fixed rate
//!   (default 50 000 events/s for 10 s, the target rate) with `Publisher::send_all(.., Some(rate))`; p50/p99 are of
//!   `churn_score_event_to_alert_latency_seconds` (message receipt → alert acknowledged), computed
//!   from the histogram buckets with linear interpolation like PromQL's `histogram_quantile`.
//!
//! The broker: `scripts/broker.sh start <tmpdir>` (stopped at the end, also on panic), unless
//! `CHURN_TEST_BROKERS` is set, in which case that broker is used and left running.
//!
//! Environment: `CHURN_BENCH_E2E_CUSTOMERS` (6000 → ≈ 1 M events over 180 days),
//! `CHURN_BENCH_RATE` (50000), `CHURN_BENCH_RATE_SECONDS` (10), `CHURN_BENCH_E2E_BATCH`
//! (`pipeline.batch_max_events`, default 50000), `CHURN_BENCH_E2E_CONSUMER` (librdkafka consumer keys,
//! `fetch.wait.max.ms=10`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use churn_events::Event;
use churn_features::training::ObservationPlan;
mod support;

use churn_metrics::prometheus::core::Metric;
use churn_metrics::{Health, Metrics};
use churn_model::ModelArtifact;
use churn_pipeline::{kafka, train, Config};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use support::{env_or, peak_rss, Broker};
use tokio_util::sync::CancellationToken;

/// librdkafka keys from `name` ("k=v,k=v"; `default` when unset).
fn env_pairs(name: &str, default: &str) -> Vec<(String, String)> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .unwrap_or_else(|| panic!("{name} holds k=v pairs, got `{kv}`"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// Fresh topics (inputs 4 partitions like the default deployment) and a fresh group.
async fn fresh_config(brokers: &str, name: &str) -> Config {
    let s = format!(
        "__bench_{name}_{}_{}",
        std::process::id(),
        rand::random::<u32>()
    );
    let mut cfg = Config::default();
    cfg.kafka.brokers = brokers.to_string();
    cfg.kafka.group_id = format!("{s}_group");
    // tansu answers a fetch only after `fetch.wait.max.ms` (librdkafka default 500), even when
    // records are waiting; Kafka answers as soon as `fetch.min.bytes` are there. So against
    // tansu the consumer asks to wait at most 10 ms (measured: 85 k → 150 k events/s, README
    // "Benchmarks"). CHURN_BENCH_E2E_CONSUMER="k=v,…" replaces these librdkafka keys.
    cfg.kafka.consumer.extend(env_pairs(
        "CHURN_BENCH_E2E_CONSUMER",
        "fetch.wait.max.ms=10",
    ));
    if let Ok(b) = std::env::var("CHURN_BENCH_E2E_BATCH") {
        cfg.pipeline.batch_max_events = b.parse().expect("CHURN_BENCH_E2E_BATCH is a number");
    }
    let t = &mut cfg.topics;
    t.purchases = format!("{s}_purchases");
    t.engagement = format!("{s}_engagement");
    t.feedback = format!("{s}_feedback");
    t.subscriptions = format!("{s}_subscriptions");
    t.alerts = format!("{s}_alerts");
    t.scores = format!("{s}_scores");
    t.dlq = format!("{s}_dlq");
    t.changelog = format!("{s}_changelog");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let topics: Vec<(&str, i32)> = vec![
        (&t.purchases, 4),
        (&t.engagement, 4),
        (&t.feedback, 4),
        (&t.subscriptions, 4),
        (&t.alerts, 4),
        (&t.scores, 4),
        (&t.dlq, 1),
    ];
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|(t, p)| NewTopic::new(t, *p, TopicReplication::Fixed(1)))
        .collect();
    let res = admin
        .create_topics(
            &new,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create_topics request");
    for r in res {
        if let Err((t, e)) = r {
            panic!("creating topic {t}: {e}");
        }
    }
    cfg
}

fn quick_model() -> ModelArtifact {
    let gen = churn_gen::GenConfig {
        customers: 400,
        days: 150,
        seed: 7,
        ..Default::default()
    };
    let (_, model, summary) =
        train::synthetic(&gen, &ObservationPlan::default()).expect("training the benchmark model");
    eprintln!("[bench] model test AUC {:.3}", summary.test.auc);
    model
}

fn events(customers: usize, seed: u64) -> Vec<Event> {
    churn_gen::generate(&churn_gen::GenConfig {
        customers,
        days: 180,
        seed,
        ..Default::default()
    })
    .events
}

/// Messages whose batch finished (outputs acknowledged, offsets stored).
fn processed(m: &Metrics) -> u64 {
    m.batch_events.get_sample_sum() as u64
}

/// Wait until `want` messages were processed, the pipeline stopped, or `limit` passed. Returns
/// the time of the first processed batch.
async fn wait_processed(
    m: &Metrics,
    want: u64,
    limit: Duration,
    pipeline: &tokio::task::JoinHandle<Result<(), churn_pipeline::Error>>,
) -> Option<Duration> {
    let t0 = Instant::now();
    let mut first = None;
    loop {
        let n = processed(m);
        if n > 0 && first.is_none() {
            first = Some(t0.elapsed());
        }
        if n >= want || pipeline.is_finished() || t0.elapsed() > limit {
            return first;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `histogram_quantile` over a prometheus histogram's cumulative buckets.
fn hist_quantile(h: &churn_metrics::prometheus::Histogram, q: f64) -> Option<f64> {
    let proto = h.metric();
    let hist = proto.get_histogram();
    let total = hist.get_sample_count();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let (mut prev_bound, mut prev_count) = (0.0f64, 0u64);
    for b in hist.get_bucket() {
        let (bound, count) = (b.upper_bound(), b.cumulative_count());
        if count as f64 >= rank {
            if !bound.is_finite() {
                return Some(prev_bound);
            }
            let in_bucket = (count - prev_count) as f64;
            let frac = if in_bucket > 0.0 {
                (rank - prev_count as f64) / in_bucket
            } else {
                1.0
            };
            return Some(prev_bound + (bound - prev_bound) * frac);
        }
        (prev_bound, prev_count) = (bound, count);
    }
    Some(prev_bound)
}

async fn stop(
    shutdown: CancellationToken,
    pipeline: tokio::task::JoinHandle<Result<(), churn_pipeline::Error>>,
) {
    shutdown.cancel();
    pipeline
        .await
        .expect("pipeline task")
        .expect("pipeline exits cleanly");
}

/// The broker's own rate for the same topics: a raw rdkafka `BaseConsumer` in a fresh group,
/// with the pipeline's librdkafka client and consumer keys, reading until it holds `want`
/// messages (counted, never a reported high watermark: tansu's memory engine misreports it for
/// idempotent batches). No decoding, no processing. Returns (seconds in all, seconds until the
/// first message — the group join —, messages).
fn raw_consume(cfg: &Config, want: u64) -> (f64, f64, u64) {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let mut c = ClientConfig::new();
    for (k, v) in cfg.kafka.client.iter().chain(&cfg.kafka.consumer) {
        c.set(k, v);
    }
    c.set("bootstrap.servers", &cfg.kafka.brokers)
        .set("group.id", format!("{}_raw", cfg.kafka.group_id))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer = c.create().expect("raw consumer");
    consumer
        .subscribe(&cfg.topics.inputs())
        .expect("raw subscribe");
    let t = Instant::now();
    let mut first = None;
    let mut n = 0u64;
    while n < want && t.elapsed() < Duration::from_secs(240) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(_)) => {
                n += 1;
                first.get_or_insert_with(|| t.elapsed().as_secs_f64());
            }
            Some(Err(e)) => panic!("raw consumer: {e}"),
            None => {}
        }
    }
    (t.elapsed().as_secs_f64(), first.unwrap_or(0.0), n)
}

async fn throughput(brokers: &str, model: Arc<ModelArtifact>) -> serde_json::Value {
    let customers = env_or("CHURN_BENCH_E2E_CUSTOMERS", 6000) as usize;
    let evs = events(customers, 21);
    let cfg = fresh_config(brokers, "thr").await;
    // The prepared topic's producer (the event sources, not the pipeline):
    // CHURN_BENCH_E2E_PRODUCER="k=v,…" adds librdkafka keys (e.g. linger.ms for larger batches).
    let mut source_cfg = cfg.clone();
    source_cfg
        .kafka
        .producer
        .extend(env_pairs("CHURN_BENCH_E2E_PRODUCER", ""));
    let mut publisher = kafka::Publisher::new(&source_cfg).expect("publisher");
    let t = Instant::now();
    let sent = publisher.send_all(&evs, None).await.expect("produce") as u64;
    let produce_s = t.elapsed().as_secs_f64();
    eprintln!(
        "[bench] produced {sent} events in {produce_s:.1} s ({:.0}/s)",
        sent as f64 / produce_s
    );
    drop(evs);

    // The baseline of the same run: what a consumer that does nothing reaches on these topics.
    let (raw_s, raw_join_s, raw_n) = tokio::task::block_in_place(|| raw_consume(&cfg, sent));
    assert_eq!(
        raw_n, sent,
        "the raw consumer read every event within the limit"
    );
    let raw_rate = raw_n as f64 / (raw_s - raw_join_s);
    eprintln!(
        "[bench] raw consumer: {raw_n} events in {raw_s:.1} s, {:.1} s of it the group join ({raw_rate:.0}/s after it)",
        raw_join_s
    );

    let metrics = Arc::new(Metrics::new());
    let shutdown = CancellationToken::new();
    let t0 = Instant::now();
    let pipeline = tokio::spawn(kafka::run(
        cfg.clone(),
        model,
        metrics.clone(),
        Health::default(),
        shutdown.child_token(),
    ));
    let first = wait_processed(&metrics, sent, Duration::from_secs(240), &pipeline).await;
    let seconds = t0.elapsed().as_secs_f64();
    let done = processed(&metrics);
    stop(shutdown, pipeline).await;
    assert_eq!(done, sent, "pipeline processed everything within the limit");
    let first_s = first.map(|d| d.as_secs_f64());
    serde_json::json!({
        "name": "e2e_broker_throughput",
        "events": sent,
        "seconds": seconds,
        "events_per_s": sent as f64 / seconds,
        "events_per_s_after_first_batch": first_s.map(|f| sent as f64 / (seconds - f)),
        // The target is a ratio, not an absolute rate (machines differ): churnstream's rate over
        // the raw consumer's, both measured here on the same topics and broker, each after its
        // group join (tansu's join takes seconds, which would dominate a small run).
        "raw_consumer_events_per_s": raw_rate,
        "raw_consumer_join_s": raw_join_s,
        "ratio_to_raw_consumer": first_s.map(|f| (sent as f64 / (seconds - f)) / raw_rate),
        "first_event_s": first_s,
        "p50_ms": null,
        "p99_ms": null,
        "peak_rss_bytes": peak_rss(),
        "bytes_per_customer": null,
        "produce_seconds": produce_s,
        "produce_events_per_s": sent as f64 / produce_s,
        "customers": customers,
        "scores": metrics.scores.get(),
        // Where a batch's time goes: collecting (up to `batch_max_wait_ms`), scoring, and the
        // checkpoint's round trips (outputs, then state, acknowledged).
        "batches": metrics.batch_events.get_sample_count(),
        "batch_mean_events": metrics.batch_events.get_sample_sum()
            / metrics.batch_events.get_sample_count().max(1) as f64,
        "batch_mean_ms": 1e3 * metrics.batch_duration.get_sample_sum()
            / metrics.batch_duration.get_sample_count().max(1) as f64,
        "scoring_mean_ms": 1e3 * metrics.scoring_duration.get_sample_sum()
            / metrics.scoring_duration.get_sample_count().max(1) as f64,
    })
}

async fn fixed_rate(brokers: &str, model: Arc<ModelArtifact>) -> serde_json::Value {
    let rate = env_or("CHURN_BENCH_RATE", 50_000) as f64;
    let secs = env_or("CHURN_BENCH_RATE_SECONDS", 10) as f64;
    let want = (rate * secs) as usize;
    // ≈ 175 events per customer over 180 days: enough customers for `want` events that span the
    // whole period (alerts need the 56-day warm-up to pass).
    let evs = events((want / 170).max(50), 23);
    let cfg = fresh_config(brokers, "rate").await;

    let metrics = Arc::new(Metrics::new());
    let health = Health::default();
    let shutdown = CancellationToken::new();
    let pipeline = tokio::spawn(kafka::run(
        cfg.clone(),
        model,
        metrics.clone(),
        health.clone(),
        shutdown.child_token(),
    ));
    while !health.is_ready() && !pipeline.is_finished() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the consumer join its group before offering load.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut publisher = kafka::Publisher::new(&cfg).expect("publisher");
    let take = want.min(evs.len());
    let t = Instant::now();
    let sent = publisher
        .send_all(&evs[..take], Some(rate))
        .await
        .expect("produce") as u64;
    let offer_s = t.elapsed().as_secs_f64();
    wait_processed(&metrics, sent, Duration::from_secs(120), &pipeline).await;
    let seconds = t.elapsed().as_secs_f64();
    let done = processed(&metrics);
    stop(shutdown, pipeline).await;
    assert_eq!(done, sent, "pipeline processed everything within the limit");
    let lat = &metrics.event_to_alert_latency;
    let ms = |q| hist_quantile(lat, q).map(|s| s * 1e3);
    let batch_ms = |q| hist_quantile(&metrics.batch_duration, q).map(|s| s * 1e3);
    serde_json::json!({
        "name": "e2e_broker_fixed_rate",
        "events": sent,
        "seconds": seconds,
        "events_per_s": sent as f64 / seconds,
        "offered_events_per_s": rate,
        "achieved_offer_events_per_s": sent as f64 / offer_s,
        "drain_after_offer_s": seconds - offer_s,
        "p50_ms": ms(0.5),
        "p99_ms": ms(0.99),
        "alerts": lat.get_sample_count(),
        "batch_p99_ms": batch_ms(0.99),
        "peak_rss_bytes": peak_rss(),
        "bytes_per_customer": null,
    })
}

fn main() {
    let broker = Broker::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let model = Arc::new(quick_model());
    rt.block_on(async {
        let a = throughput(&broker.addr, model.clone()).await;
        println!("{a}");
        let b = fixed_rate(&broker.addr, model).await;
        println!("{b}");
    });
    drop(rt);
    drop(broker);
}
