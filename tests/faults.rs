//! Broker faults. Each test starts its own tansu broker on a durable storage engine (`sqlite://`
//! in a temp dir, so topics, records and committed offsets survive a restart) and runs the
//! pipeline in-process.
//!
//! Broker outage during consumption (issue #6 item 2): the test publishes half of the events
//! and, once some are consumed, SIGKILLs the broker. While the broker is down (~5 s) the pipeline
//! must keep running and a publisher sending the second half must neither panic nor grow without
//! bound: with a small `queue.buffering.max.messages` its sends wait on back-pressure (or fail
//! with an error). Then the broker restarts on the same port and storage, the publisher finishes,
//! the group catches up and the pipeline stops gracefully. Afterwards every input event is
//! reflected exactly once in the per-customer state (changelog) and no alert id maps to two
//! decisions.
//!
//! The state checkpoint cannot be written: the checkpoint is the compacted changelog topic
//! (per-customer state + applied input offsets), written after a batch's outputs and before its
//! offsets are stored. The pipeline runs with a short producer `message.timeout.ms`
//! ([`DELIVERY_TIMEOUT`], passed verbatim to librdkafka through `[kafka.producer]`) and consumes
//! the first half of the events until the group has committed them all; the changelog read then
//! is the previous checkpoint. A quarter more is published and, as soon as the pipeline starts on
//! it (a batch in flight, neither its outputs nor its state acknowledged; sometimes one batch of
//! it is already checkpointed but its offsets not yet committed), the broker is SIGKILLed
//! and kept down until `kafka::run` gives up: it must return an error (no hang, no panic) that
//! says a delivery timed out and offsets were not stored, within [`GIVE_UP_WITHIN`] (the delivery
//! timeout, then the consumer's close, which waits out its session timeout while the broker is
//! gone). With the whole broker down the batch's outputs are flushed first, so it is usually
//! their delivery that times out and the state write is never attempted; the error does not say
//! which topic or step failed. Either way the batch is neither checkpointed nor committed. The
//! broker restarts on the same port and storage: the previous checkpoint must read back intact
//! (no record changed, every customer's newest record kept; the broker may compact superseded
//! ones) and decode; a new pipeline restores from it and re-reads the uncommitted batch, the last
//! quarter is published, the group catches up and stops gracefully, and every input event is
//! reflected exactly once in the state and no alert id maps to two decisions.
//!
//! The brokers are private to these tests (not CHURN_TEST_BROKERS): they are stopped and
//! restarted.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use churn_metrics::{Health, Metrics};

use churn_pipeline::{kafka, Config};
use common::{Broker, Storage};
use tokio_util::sync::CancellationToken;

const PARTS: i32 = 2;
/// Producer queue limit of the publisher: what it may buffer while the broker is down.
const PUBLISHER_QUEUE: usize = 2_000;
/// How long the broker stays down.
const OUTAGE: Duration = Duration::from_secs(5);

/// Pipeline configuration on `brokers` (unique topic and group names, topics created here; the
/// changelog is created by the pipeline itself).
async fn pipeline_config(brokers: &str) -> Config {
    let mut cfg = common::pipeline_config_on(brokers, "faults", PARTS).await;
    cfg.metrics.listen = "127.0.0.1:0".into();
    common::quick_member(&mut cfg);
    // Reconnect quickly once the broker is back (librdkafka's default backoff grows to 10 s).
    cfg.kafka
        .client
        .insert("reconnect.backoff.max.ms".into(), "1000".into());
    cfg
}

fn consumed(metrics: &Metrics, cfg: &Config) -> u64 {
    cfg.topics
        .inputs()
        .iter()
        .map(|t| metrics.consumed(t).get())
        .sum()
}

/// The fault tests run one at a time (two brokers and two pipelines at once on a 2-core machine
/// starved one of them past its deadlines): this lock under `cargo test`, the `faults` test group
/// of `.config/nextest.toml` under nextest (a process per test).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_loses_nothing() {
    let _one_at_a_time = SERIAL.lock().await;
    tokio::time::timeout(Duration::from_secs(115), scenario())
        .await
        .expect("the fault scenario finishes within 115 s");
}

async fn scenario() {
    let t0 = Instant::now();
    let dir = tempfile::tempdir().expect("tmp");
    let mut broker = Broker::new(dir.path(), Storage::Sqlite);
    let cfg = pipeline_config(&broker.brokers()).await;

    let (pop, model, _) = common::population_and_model(200, 100, 11, 28);
    let model = Arc::new(model);

    let metrics = Arc::new(Metrics::new());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(kafka::run(
        cfg.clone(),
        model,
        metrics.clone(),
        Health::default(),
        shutdown.clone(),
    ));

    // First half, with the broker up.
    let half = pop.events.len() / 2;
    let (first, second) = pop.events.split_at(half);
    let mut publisher = kafka::Publisher::new(&cfg).expect("publisher");
    let sent = publisher.send_all(first, None).await.expect("publish");
    assert_eq!(sent, half);
    // Kill mid-stream, once some batches are through (state persisted, offsets committed), so
    // the restart has durable progress to keep.
    let deadline = Instant::now() + Duration::from_secs(40);
    while consumed(&metrics, &cfg) < (half / 5) as u64 {
        assert!(!task.is_finished(), "pipeline exited before consuming");
        assert!(Instant::now() < deadline, "pipeline consumes nothing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = consumed(&metrics, &cfg);

    // Outage: the broker dies; a publisher with a bounded queue sends the second half meanwhile.
    broker.kill();
    let t_kill = Instant::now();
    eprintln!(
        "[faults] broker killed at {:.1}s, {before}/{} events consumed",
        t0.elapsed().as_secs_f64(),
        half
    );
    let mut pub_cfg = cfg.clone();
    pub_cfg.kafka.producer.insert(
        "queue.buffering.max.messages".into(),
        PUBLISHER_QUEUE.to_string(),
    );
    let accepted = Arc::new(AtomicUsize::new(0));
    let publishing = {
        let accepted = accepted.clone();
        let events = second.to_vec();
        tokio::spawn(async move {
            let mut p = kafka::Publisher::new(&pub_cfg)?;
            for ev in &events {
                p.send_event(ev).await?;
                accepted.fetch_add(1, Ordering::SeqCst);
            }
            p.flush().await
        })
    };
    let mut max_accepted = 0;
    while t_kill.elapsed() < OUTAGE {
        tokio::time::sleep(Duration::from_millis(250)).await;
        max_accepted = max_accepted.max(accepted.load(Ordering::SeqCst));
        assert!(
            !task.is_finished(),
            "pipeline exited while the broker was down: {:?}",
            task.await
        );
        if publishing.is_finished() {
            let r = publishing.await.expect("publisher task must not panic");
            panic!("publisher finished while the broker was down: {r:?}");
        }
    }
    eprintln!(
        "[faults] broker down {:.1}s: pipeline running, consumed {} (+{}), publisher accepted \
         {max_accepted}/{} into its queue and waits (queue limit {PUBLISHER_QUEUE}), \
         produce errors {}",
        t_kill.elapsed().as_secs_f64(),
        consumed(&metrics, &cfg),
        consumed(&metrics, &cfg) - before,
        second.len(),
        metrics.produce_errors.get()
    );
    assert!(
        max_accepted <= PUBLISHER_QUEUE,
        "the publisher's queue is bounded: {max_accepted} accepted while the broker was down"
    );

    // Recovery: same port, same storage.
    broker.start();
    eprintln!(
        "[faults] broker restarted at {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    let sent = publishing
        .await
        .expect("publisher task must not panic")
        .expect("the publisher delivers the second half once the broker is back");
    assert_eq!(sent, second.len());
    let deadline = Instant::now() + Duration::from_secs(60);
    while !common::caught_up(&cfg, &cfg.kafka.group_id, PARTS) {
        assert!(
            !task.is_finished(),
            "pipeline exited after the outage: {:?}",
            task.await
        );
        assert!(
            Instant::now() < deadline,
            "group did not catch up after the outage; broker log:\n{}",
            broker.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "[faults] caught up at {:.1}s (consumed {}, events {})",
        t0.elapsed().as_secs_f64(),
        consumed(&metrics, &cfg),
        pop.events.len()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    shutdown.cancel();
    task.await
        .expect("pipeline task must not panic")
        .expect("pipeline stops cleanly after the outage");

    // State: the newest changelog record per customer equals the batch fold of all events;
    // an alert id never stands for two different decisions.
    let latest = common::latest_state(&cfg).await;
    common::assert_exactly_once(&latest, &pop.events);
    let decisions = common::alert_ids_by_decision(&cfg).await;
    eprintln!(
        "[faults] done in {:.1}s: {} alert decisions, {} customers",
        t0.elapsed().as_secs_f64(),
        decisions.len(),
        latest.len()
    );
}

// ---- The state checkpoint cannot be written -------------------------------------------------

/// The pipeline producer's `message.timeout.ms` in the checkpoint test: how long a delivery
/// (outputs or state) may wait for the broker before it fails.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(4);
/// How long `kafka::run` may take, after the broker died, to return its error: the delivery
/// timeout, then closing its consumer, which with the broker gone waits out the consumer's
/// `session.timeout.ms` (6 s, [`common::quick_member`]; measured: the error surfaces ~4-5 s
/// after the kill, `run` returns ~6 s later, 12 s later with a 12 s session), plus slack.
const GIVE_UP_WITHIN: Duration = Duration::from_secs(25);

/// One changelog partition: its high watermark and its records by offset (a compacted topic may
/// have gaps).
struct ChangelogPartition {
    high: i64,
    records: BTreeMap<i64, (String, Vec<u8>)>,
}

impl ChangelogPartition {
    /// The newest record's offset per customer: the checkpoint this partition holds.
    fn latest(&self) -> BTreeMap<&str, i64> {
        self.records
            .iter()
            .map(|(o, (k, _))| (k.as_str(), *o))
            .collect()
    }
}

/// (records, customers, sum of high watermarks) of a changelog read.
fn summary(c: &[ChangelogPartition]) -> (usize, usize, i64) {
    (
        c.iter().map(|p| p.records.len()).sum(),
        c.iter().map(|p| p.latest().len()).sum(),
        c.iter().map(|p| p.high).sum(),
    )
}

/// Every changelog partition from its beginning to its current end (what the restore reads).
fn read_changelog(cfg: &Config) -> Vec<ChangelogPartition> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::Message;
    let topic = &cfg.topics.changelog;
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &cfg.kafka.brokers)
        .set("group.id", common::unique("checkpoint"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .expect("changelog reader");
    tokio::task::block_in_place(|| {
        (0..PARTS)
            .map(|p| {
                // The true end, not the reported watermark (README, "The local broker").
                let (low, high) = (0, common::log_end(&cfg.kafka.brokers, topic, p));
                let mut part = ChangelogPartition {
                    high,
                    records: BTreeMap::new(),
                };
                if high <= low {
                    return part;
                }
                let mut tpl = rdkafka::TopicPartitionList::new();
                tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning)
                    .expect("tpl");
                c.assign(&tpl).expect("assign");
                loop {
                    let m = match c.poll(Duration::from_secs(15)) {
                        Some(Ok(m)) => m,
                        Some(Err(e)) => panic!("reading changelog partition {p}: {e}"),
                        None => panic!("changelog partition {p}: nothing read up to {high}"),
                    };
                    if m.key() != Some(kafka::RESTORE_MARKER_KEY) {
                        let key = String::from_utf8_lossy(m.key().unwrap_or_default());
                        let payload = m.payload().unwrap_or_default().to_vec();
                        part.records.insert(m.offset(), (key.into_owned(), payload));
                    }
                    if m.offset() >= high - 1 {
                        return part;
                    }
                }
            })
            .collect()
    })
}

/// The group's committed input offsets, summed over every input partition.
fn committed_total(cfg: &Config) -> i64 {
    tokio::task::block_in_place(|| common::committed_sum(cfg, &cfg.kafka.group_id, PARTS))
}

/// Poll until the group committed every input record (the pipeline task must stay alive).
async fn wait_caught_up<T: std::fmt::Debug>(
    cfg: &Config,
    task: &mut tokio::task::JoinHandle<T>,
    within: Duration,
    what: &str,
    broker: &Broker,
) {
    let deadline = Instant::now() + within;
    while !tokio::task::block_in_place(|| common::caught_up(cfg, &cfg.kafka.group_id, PARTS)) {
        assert!(
            !task.is_finished(),
            "pipeline exited {what}: {:?}",
            task.await
        );
        assert!(
            Instant::now() < deadline,
            "group did not catch up {what}; broker log:\n{}",
            broker.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_write_failure_stops_and_resumes_exactly_once() {
    let _one_at_a_time = SERIAL.lock().await;
    tokio::time::timeout(Duration::from_secs(90), checkpoint_scenario())
        .await
        .expect("the checkpoint fault scenario finishes within 90 s");
}

async fn checkpoint_scenario() {
    let t0 = Instant::now();
    let dir = tempfile::tempdir().expect("tmp");
    let mut broker = Broker::new(dir.path(), Storage::Sqlite);
    // Publishers keep librdkafka's default timeout; the pipeline gets the short one.
    let cfg = pipeline_config(&broker.brokers()).await;
    let mut run_cfg = cfg.clone();
    run_cfg.kafka.producer.insert(
        "message.timeout.ms".into(),
        DELIVERY_TIMEOUT.as_millis().to_string(),
    );

    let (pop, model, _) = common::population_and_model(200, 100, 11, 28);
    let model = Arc::new(model);
    let n = pop.events.len();
    let (first, rest) = pop.events.split_at(n / 2);
    let (in_flight, last) = rest.split_at(rest.len() / 2);

    // 1. The previous checkpoint: the first half consumed, state written, offsets committed.
    let metrics = Arc::new(Metrics::new());
    let mut task = tokio::spawn(kafka::run(
        run_cfg.clone(),
        model.clone(),
        metrics.clone(),
        Health::default(),
        CancellationToken::new(),
    ));
    let mut publisher = kafka::Publisher::new(&cfg).expect("publisher");
    let sent = publisher.send_all(first, None).await.expect("publish");
    assert_eq!(sent, first.len());
    wait_caught_up(
        &cfg,
        &mut task,
        Duration::from_secs(40),
        "before the fault",
        &broker,
    )
    .await;
    let checkpoint = read_changelog(&cfg);
    let (records, customers, _) = summary(&checkpoint);
    assert!(customers > 0, "the changelog holds the previous checkpoint");
    let committed_before = committed_total(&cfg);
    eprintln!(
        "[checkpoint] first half ({}) consumed and committed at {:.1}s: {records} changelog \
         records of {customers} customers, committed offsets {committed_before}",
        first.len(),
        t0.elapsed().as_secs_f64()
    );

    // 2. A batch in flight when the broker dies: neither its outputs nor its state can be
    //    delivered; the broker stays down until the pipeline gives up.
    let sent = publisher.send_all(in_flight, None).await.expect("publish");
    assert_eq!(
        sent,
        first.len() + in_flight.len(),
        "publisher counts in total"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while consumed(&metrics, &cfg) <= first.len() as u64 {
        assert!(!task.is_finished(), "pipeline exited: {:?}", task.await);
        assert!(Instant::now() < deadline, "pipeline consumes nothing more");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    broker.kill();
    let t_kill = Instant::now();
    let at_kill = consumed(&metrics, &cfg);
    eprintln!(
        "[checkpoint] broker killed at {:.1}s with {} of {} further events consumed",
        t0.elapsed().as_secs_f64(),
        at_kill - first.len() as u64,
        in_flight.len()
    );
    // Poll (rather than just await) to see when the failed deliveries were counted: the rest
    // until `run` returns is its shutdown with the broker still down.
    let mut failed_at = None;
    while !task.is_finished() {
        if failed_at.is_none() && metrics.produce_errors.get() > 0 {
            failed_at = Some(t_kill.elapsed());
        }
        assert!(
            t_kill.elapsed() < GIVE_UP_WITHIN,
            "kafka::run still running {GIVE_UP_WITHIN:?} after the broker died \
             (message.timeout.ms = {DELIVERY_TIMEOUT:?}); consumed {}, produce errors {}",
            consumed(&metrics, &cfg),
            metrics.produce_errors.get()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let gave_up = t_kill.elapsed();
    let err = match task.await {
        Err(join) => panic!("kafka::run panicked when its delivery failed: {join}"),
        Ok(Ok(())) => panic!("kafka::run returned Ok although its outputs were undeliverable"),
        Ok(Err(e)) => e.to_string(),
    };
    eprintln!(
        "[checkpoint] deliveries failed {:.1}s after the kill, kafka::run returned after {:.1}s \
         (broker down, message.timeout.ms {DELIVERY_TIMEOUT:?}): Err({err}); consumed {} (+{} \
         after the kill), produce errors {}",
        failed_at.unwrap_or(gave_up).as_secs_f64(),
        gave_up.as_secs_f64(),
        consumed(&metrics, &cfg),
        consumed(&metrics, &cfg) - at_kill,
        metrics.produce_errors.get()
    );
    assert!(
        err.contains("producing to Kafka failed") && err.contains("offsets not stored"),
        "the error says a delivery failed and the batch was not committed: {err}"
    );
    assert!(
        err.contains("MessageTimedOut") || err.contains("timed out"),
        "the error names the delivery timeout: {err}"
    );
    assert!(
        metrics.produce_errors.get() > 0,
        "failed deliveries are counted"
    );

    // 3. Restart on the same port and storage: the previous checkpoint is intact.
    broker.start();
    eprintln!(
        "[checkpoint] broker restarted at {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    // The broker may compact the changelog meanwhile (tansu's sqlite engine does: the records of
    // the previous checkpoint come back as one per customer): superseded records may go, but no
    // record may change and every customer's newest record must stay.
    let after = read_changelog(&cfg);
    for (p, (before, now)) in checkpoint.iter().zip(&after).enumerate() {
        assert!(now.high >= before.high, "changelog partition {p} shrank");
        for (o, rec) in now.records.range(..before.high) {
            assert_eq!(
                before.records.get(o),
                Some(rec),
                "changelog partition {p} offset {o}: the record read back is the one written"
            );
        }
        let now_latest = now.latest();
        for (key, o) in before.latest() {
            if before.records[&o].1.is_empty() {
                continue; // a tombstone (customer forgotten): compaction may drop it
            }
            let kept = now_latest.get(key).copied();
            assert!(
                kept.is_some_and(|k| k >= o),
                "changelog partition {p}: {key}'s checkpoint (offset {o}) is gone (newest now \
                 {kept:?})"
            );
        }
        for (o, (key, payload)) in now.records.iter().filter(|(_, (_, v))| !v.is_empty()) {
            let (_, payload) = churn_pipeline::lineage::unwrap(payload).expect("lineage");
            let snap = churn_pipeline::engine::Snapshot::decode(payload)
                .unwrap_or_else(|e| panic!("changelog {p}@{o} ({key}) does not decode: {e}"));
            assert_eq!(snap.partition, p as i32, "{key} in its partition");
        }
    }
    let committed_after = committed_total(&cfg);
    eprintln!(
        "[checkpoint] after restart the checkpoint is intact: changelog {:?} (records, \
         customers, high watermarks), before the fault {:?}; committed offsets \
         {committed_after} ({committed_before} before the fault)",
        summary(&after),
        summary(&checkpoint)
    );

    // The pipeline resumes from the checkpoint and re-reads the batch that was not committed.
    let metrics = Arc::new(Metrics::new());
    let shutdown = CancellationToken::new();
    let mut task = tokio::spawn(kafka::run(
        run_cfg.clone(),
        model,
        metrics.clone(),
        Health::default(),
        shutdown.clone(),
    ));
    let mut publisher = kafka::Publisher::new(&cfg).expect("publisher after restart");
    let sent = publisher.send_all(last, None).await.expect("publish");
    assert_eq!(sent, last.len());
    wait_caught_up(
        &cfg,
        &mut task,
        Duration::from_secs(60),
        "after the restart",
        &broker,
    )
    .await;
    eprintln!(
        "[checkpoint] caught up at {:.1}s (the second run consumed {} of {} events)",
        t0.elapsed().as_secs_f64(),
        consumed(&metrics, &cfg),
        n
    );
    shutdown.cancel();
    task.await
        .expect("pipeline task must not panic")
        .expect("pipeline stops cleanly after the restart");

    let latest = common::latest_state(&cfg).await;
    common::assert_exactly_once(&latest, &pop.events);
    let decisions = common::alert_ids_by_decision(&cfg).await;
    eprintln!(
        "[checkpoint] done in {:.1}s: {} alert decisions, {} customers",
        t0.elapsed().as_secs_f64(),
        decisions.len(),
        latest.len()
    );
}
