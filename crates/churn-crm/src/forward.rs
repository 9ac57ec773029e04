//! The forwarder service: `topics.alerts` → CRM webhook, failures → `crm.dlq_topic`.
//!
//! At-least-once: the consumer (group `crm.group_id`, `enable.auto.offset.store=false`) stores an
//! alert's offset only once the alert was delivered (2xx) or its dead-letter record was
//! acknowledged, and only when every earlier alert of the same partition is done too
//! ([`OffsetTracker`]); librdkafka's auto-commit commits the stored offsets. A crash or a
//! rebalance re-sends the alerts after the committed offset with the same `ce-id`.
//!
//! Concurrency: `crm.concurrency` lanes, each delivering one alert at a time; an alert goes to the
//! lane of its key (customer id), so one customer's alerts reach the CRM in topic order. When
//! `concurrency × LANE_DEPTH` alerts are in flight the assigned partitions are paused (the
//! consumer keeps polling, so the group membership survives a long CRM outage) and resumed once
//! half of them are done.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use churn_metrics::prometheus::IntCounter;
use churn_metrics::{Health, Metrics};
use churn_pipeline::config::Config;
use churn_pipeline::kafka::{self, ServiceContext};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::task::{JoinError, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::webhook::{Delivery, Forwarder, WebhookConfig};
use crate::Error;

/// Alerts queued per lane before the consumer pauses.
pub const LANE_DEPTH: usize = 16;

/// One alert read from the topic.
struct Job {
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    partition: i32,
    offset: i64,
}

/// What a lane reports back to the consumer loop.
enum Done {
    /// Delivered or dead-lettered (acknowledged): the offset may be stored.
    Finished { partition: i32, offset: i64 },
    /// The dead-letter write failed: stop without storing this offset.
    Fatal(Error),
}

/// Per-partition progress: the next offset that may be stored is the lowest offset still in
/// flight, or one past the newest offset seen when nothing is in flight.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    parts: BTreeMap<i32, PartitionProgress>,
}

#[derive(Debug)]
struct PartitionProgress {
    in_flight: BTreeSet<i64>,
    next: i64,
    stored: Option<i64>,
}

impl OffsetTracker {
    /// `offset` of `partition` was handed to a lane. An offset below the newest seen means the
    /// partition was re-assigned and re-read from its committed offset: start over.
    pub fn begin(&mut self, partition: i32, offset: i64) {
        let p = self
            .parts
            .entry(partition)
            .or_insert_with(|| PartitionProgress {
                in_flight: BTreeSet::new(),
                next: offset,
                stored: Some(offset),
            });
        if offset < p.next {
            p.in_flight.clear();
            p.stored = Some(offset);
        }
        p.in_flight.insert(offset);
        p.next = offset + 1;
    }

    /// `offset` is done. Returns the offset to store (the next one to read) if it moved.
    pub fn finish(&mut self, partition: i32, offset: i64) -> Option<i64> {
        let p = self.parts.get_mut(&partition)?;
        if !p.in_flight.remove(&offset) {
            return None;
        }
        let committable = p.in_flight.first().copied().unwrap_or(p.next);
        if p.stored.is_some_and(|s| s >= committable) {
            return None;
        }
        p.stored = Some(committable);
        Some(committable)
    }

    /// Alerts handed out and not finished.
    pub fn in_flight(&self) -> usize {
        self.parts.values().map(|p| p.in_flight.len()).sum()
    }
}

/// The CloudEvents `id` of an alert, or why it has none.
pub fn alert_id(payload: &[u8]) -> Result<String, String> {
    alert_head(payload).map(|h| h.id)
}

/// What the forwarder reads of an alert before delivering it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertHead {
    /// The CloudEvents `id` (the webhook's `ce-id`).
    pub id: String,
    /// `data.treatment` is `holdout`: the customer is in the holdout group and the alert is not
    /// delivered (alerts without the field, lapsed alerts among them, are delivered).
    pub holdout: bool,
}

/// The [`AlertHead`] of an alert, or why it has none.
pub fn alert_head(payload: &[u8]) -> Result<AlertHead, String> {
    #[derive(Deserialize)]
    struct Data {
        #[serde(default)]
        treatment: Option<String>,
    }
    #[derive(Deserialize)]
    struct Envelope {
        id: String,
        #[serde(default)]
        data: Option<Data>,
    }
    match serde_json::from_slice::<Envelope>(payload) {
        Ok(e) if !e.id.trim().is_empty() => Ok(AlertHead {
            id: e.id,
            holdout: e
                .data
                .and_then(|d| d.treatment)
                .is_some_and(|t| t == churn_events::HOLDOUT),
        }),
        Ok(_) => Err("invalid_alert: empty `id`".into()),
        Err(e) => Err(format!(
            "invalid_alert: not a CloudEvents JSON object with a string `id`: {e}"
        )),
    }
}

/// Delivers one alert for a lane: [`Forwarder`] (HTTP with retries) in [`run`]; [`run_with`]
/// takes any implementation (tests, another transport).
pub trait Deliver: Send + Sync + 'static {
    /// Deliver `body` (the alert's bytes) with CloudEvents id `id` until delivered, failed for
    /// good (dead-lettered by the caller) or `cancel`led.
    fn deliver(
        &self,
        id: &str,
        body: &[u8],
        cancel: &CancellationToken,
    ) -> impl Future<Output = Delivery> + Send;
}

impl Deliver for Forwarder {
    fn deliver(
        &self,
        id: &str,
        body: &[u8],
        cancel: &CancellationToken,
    ) -> impl Future<Output = Delivery> + Send {
        Forwarder::deliver(self, id, body, cancel)
    }
}

/// Run the forwarder until `shutdown` is cancelled: finishes the HTTP attempts in progress (an
/// alert in backoff is left for the next run), stores and synchronously commits the offsets.
pub async fn run(
    cfg: Config,
    metrics: Arc<Metrics>,
    health: Health,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let Some(webhook) = WebhookConfig::from_config(&cfg.crm) else {
        return Err(Error::Config(
            "crm.webhook_url is empty: the forwarder is disabled".into(),
        ));
    };
    let forwarder = Forwarder::new(webhook, &metrics)?;
    info!(
        url = %crate::webhook::redacted_url(&forwarder.config().url),
        signed = forwarder.config().secret.is_some(),
        "CRM webhook"
    );
    run_with(cfg, Arc::new(forwarder), metrics, health, shutdown).await
}

/// [`run`] with `deliverer` in place of the HTTP [`Forwarder`] built from `cfg.crm`.
pub async fn run_with<D: Deliver>(
    cfg: Config,
    forwarder: Arc<D>,
    metrics: Arc<Metrics>,
    health: Health,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    // The pipeline's consumer settings (manual offset store, auto-commit, passthrough keys) under
    // the forwarder's own group.
    let mut consumer_cfg = cfg.clone();
    consumer_cfg.kafka.group_id = cfg.crm.group_id.clone();
    let consumer = kafka::consumer(&consumer_cfg, metrics.clone())?;
    let producer = kafka::producer(&cfg)?;
    let alerts = cfg.topics.alerts.as_str();
    let dlq = cfg.crm.dlq_topic.as_str();
    tokio::task::block_in_place(|| check_topics(&consumer, &cfg.kafka.brokers, &[alerts, dlq]))?;
    consumer.subscribe(&[alerts])?;
    info!(
        topic = alerts,
        group = %cfg.crm.group_id,
        lanes = cfg.crm.concurrency,
        dlq,
        "forwarding alerts to the CRM"
    );
    health.set_ready(true);
    metrics.ready.set(1);

    let stop = shutdown.child_token();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let dead = metrics.crm_delivery("dead_lettered");
    let held_out = metrics.crm_delivery("held_out");
    let mut lanes = Vec::new();
    // A lane only ends when `stop` is cancelled or its queue is closed, so one that ends while
    // the loop below runs has died (panicked, or returned after a fatal dead-letter failure):
    // the forwarder stops with an error instead of carrying on without it.
    let mut workers: JoinSet<()> = JoinSet::new();
    for _ in 0..cfg.crm.concurrency.max(1) {
        let (tx, rx) = mpsc::unbounded_channel();
        lanes.push(tx);
        workers.spawn(lane(
            rx,
            done_tx.clone(),
            Lane {
                forwarder: forwarder.clone(),
                producer: producer.clone(),
                source_topic: alerts.to_string(),
                dlq: dlq.to_string(),
                dlq_limit: churn_pipeline::kafka::dlq_record_limit(&cfg),
                dead: dead.clone(),
                held_out: held_out.clone(),
                stop: stop.clone(),
            },
        ));
    }
    drop(done_tx);

    let high = lanes.len() * LANE_DEPTH;
    let mut tracker = OffsetTracker::default();
    let mut paused = false;
    let mut fatal = None;
    // Liveness (/healthz): the loop turns at least every heartbeat tick unless it is wedged.
    // An alert retried without end is not a wedge: its lane waits, this loop keeps turning.
    health.watch(Duration::from_secs(cfg.pipeline.liveness_timeout_s));
    let mut heartbeat = tokio::time::interval(Duration::from_secs(5));
    loop {
        health.beat();
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = heartbeat.tick() => continue,
            Some(d) = done_rx.recv() => {
                match d {
                    Done::Finished { partition, offset } => {
                        if let Some(next) = tracker.finish(partition, offset) {
                            store(&consumer, alerts, partition, next);
                        }
                    }
                    Done::Fatal(e) => {
                        fatal = Some(e);
                        break;
                    }
                }
                if paused && tracker.in_flight() <= high / 2 {
                    set_paused(&consumer, false, true);
                    paused = false;
                }
            }
            // After `done_rx`: a lane that sent `Fatal` and returned reports the `Fatal`.
            Some(joined) = workers.join_next() => {
                fatal = Some(lane_died(joined));
                break;
            }
            m = consumer.recv() => match m {
                Ok(msg) => {
                    let job = Job {
                        key: msg.key().map(<[u8]>::to_vec),
                        payload: msg.payload().unwrap_or_default().to_vec(),
                        headers: msg
                            .headers()
                            .map(|h| {
                                h.iter()
                                    .map(|x| (x.key.to_string(), x.value.map(<[u8]>::to_vec)))
                                    .collect()
                            })
                            .unwrap_or_default(),
                        partition: msg.partition(),
                        offset: msg.offset(),
                    };
                    tracker.begin(job.partition, job.offset);
                    let i = lane_of(job.key.as_deref(), job.partition, lanes.len());
                    if lanes[i].send(job).is_err() {
                        fatal = Some(Error::Lane(format!("lane {i} is gone")));
                        break;
                    }
                    // Also re-pauses partitions a rebalance assigned while paused.
                    if tracker.in_flight() >= high {
                        set_paused(&consumer, true, !paused);
                        paused = true;
                    }
                }
                Err(e) => warn!(error = %e, "consumer error"),
            },
        }
    }

    info!("forwarder stopping: finishing HTTP attempts in progress, committing offsets");
    health.set_ready(false);
    metrics.ready.set(0);
    stop.cancel();
    drop(lanes);
    while let Some(joined) = workers.join_next().await {
        if let Err(e) = joined {
            let e = lane_died(Err(e));
            warn!(error = %e, "forwarder lane failed while stopping");
            fatal.get_or_insert(e);
        }
    }
    while let Ok(d) = done_rx.try_recv() {
        match d {
            Done::Finished { partition, offset } => {
                if let Some(next) = tracker.finish(partition, offset) {
                    store(&consumer, alerts, partition, next);
                }
            }
            Done::Fatal(e) => {
                fatal.get_or_insert(e);
            }
        }
    }
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => {
            warn!(error = %e, "final offset commit failed (alerts after the last auto-commit are re-sent)")
        }
    }
    fatal.map_or(Ok(()), Err)
}

/// The error for a lane that ended while the forwarder was running: its panic message, or that
/// it stopped by itself.
fn lane_died(joined: Result<(), JoinError>) -> Error {
    let why = match joined {
        Ok(()) => "it stopped unexpectedly".to_string(),
        Err(e) if e.is_panic() => {
            let payload = e.into_panic();
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".into());
            format!("panicked: {msg}")
        }
        Err(e) => e.to_string(),
    };
    Error::Lane(why)
}

/// Everything a lane needs besides its queue.
struct Lane<D> {
    forwarder: Arc<D>,
    producer: FutureProducer,
    source_topic: String,
    dlq: String,
    /// What a dead letter must fit: the producer's `message.max.bytes`.
    dlq_limit: usize,
    dead: IntCounter,
    /// `churn_crm_deliveries_total{outcome="held_out"}`.
    held_out: IntCounter,
    stop: CancellationToken,
}

/// Deliver the lane's alerts one at a time; dead-letter failures and wait for the ack.
async fn lane<D: Deliver>(
    mut rx: mpsc::UnboundedReceiver<Job>,
    done: mpsc::UnboundedSender<Done>,
    l: Lane<D>,
) {
    loop {
        let job = tokio::select! {
            biased;
            _ = l.stop.cancelled() => return,
            j = rx.recv() => match j {
                Some(j) => j,
                None => return,
            },
        };
        let outcome = match alert_head(&job.payload) {
            // A holdout alert: nothing to deliver, its offset is done.
            Ok(h) if h.holdout => {
                l.held_out.inc();
                None
            }
            Ok(h) => Some(l.forwarder.deliver(&h.id, &job.payload, &l.stop).await),
            Err(reason) => Some(Delivery::Failed {
                reason,
                attempts: 0,
            }),
        };
        match outcome {
            None => {}
            Some(Delivery::Delivered { .. }) => {}
            Some(Delivery::Cancelled { .. }) => return,
            Some(Delivery::Failed { reason, attempts }) => {
                warn!(
                    partition = job.partition,
                    offset = job.offset,
                    attempts,
                    reason = %reason,
                    dlq = %l.dlq,
                    "alert not delivered to the CRM → dead-letter topic"
                );
                if let Err(e) = dead_letter(&l, &job, &reason, attempts).await {
                    let _ = done.send(Done::Fatal(e));
                    return;
                }
                l.dead.inc();
            }
        }
        let finished = Done::Finished {
            partition: job.partition,
            offset: job.offset,
        };
        if done.send(finished).is_err() {
            return;
        }
    }
}

/// Write the alert's original key, bytes and headers plus `error.*` / `source.*` headers to the
/// CRM dead-letter topic and wait for the broker's acknowledgement. Each part is cut to fit the
/// producer's limit ([`churn_pipeline::dlq::bound`]): a dead letter that cannot be sent stops
/// the forwarder, and the restart would meet the same alert again.
async fn dead_letter<D>(l: &Lane<D>, job: &Job, reason: &str, attempts: u32) -> Result<(), Error> {
    let original = job.headers.iter().map(|(k, v)| (k.as_str(), v.as_deref()));
    let b = churn_pipeline::dlq::bound(job.key.as_deref(), original, &job.payload, l.dlq_limit);
    let mut h = OwnedHeaders::new();
    for (key, value) in &b.headers {
        h = h.insert(Header { key, value: *value });
    }
    for (key, value) in &b.notes {
        h = h.insert(Header {
            key,
            value: Some(value.as_str()),
        });
    }
    let partition = job.partition.to_string();
    let offset = job.offset.to_string();
    let attempts = attempts.to_string();
    for (key, value) in [
        ("error.reason", reason),
        ("error.stage", "crm"),
        ("error.attempts", attempts.as_str()),
        ("source.topic", l.source_topic.as_str()),
        ("source.partition", partition.as_str()),
        ("source.offset", offset.as_str()),
    ] {
        h = h.insert(Header {
            key,
            value: Some(value),
        });
    }
    let mut record = FutureRecord::<[u8], [u8]>::to(&l.dlq)
        .payload(b.payload)
        .headers(h);
    if let Some(k) = b.key {
        record = record.key(k);
    }
    l.producer
        .send(record, Duration::from_secs(30))
        .await
        .map(|_| ())
        .map_err(|(e, _)| Error::DeadLetter {
            topic: l.dlq.clone(),
            message: e.to_string(),
        })
}

/// Lane of an alert: by key (customer id), so one customer's alerts stay in order.
fn lane_of(key: Option<&[u8]>, partition: i32, lanes: usize) -> usize {
    let mut h = DefaultHasher::new();
    match key {
        Some(k) => k.hash(&mut h),
        None => partition.hash(&mut h),
    }
    (h.finish() % lanes.max(1) as u64) as usize
}

fn store(consumer: &StreamConsumer<ServiceContext>, topic: &str, partition: i32, next: i64) {
    let mut tpl = TopicPartitionList::new();
    let stored = tpl
        .add_partition_offset(topic, partition, Offset::Offset(next))
        .and_then(|()| consumer.store_offsets(&tpl));
    // A partition revoked by a rebalance cannot be stored; its new owner re-sends from the
    // committed offset (same ce-id).
    if let Err(e) = stored {
        warn!(partition, offset = next, error = %e, "storing offset failed");
    }
}

fn set_paused(consumer: &StreamConsumer<ServiceContext>, pause: bool, log: bool) {
    let r = consumer.assignment().and_then(|tpl| {
        if pause {
            consumer.pause(&tpl)
        } else {
            consumer.resume(&tpl)
        }
    });
    match r {
        Ok(()) if !log => {}
        Ok(()) if pause => info!("CRM deliveries saturated: pausing the alert partitions"),
        Ok(()) => info!("resuming the alert partitions"),
        Err(e) => warn!(error = %e, pause, "pausing/resuming partitions failed"),
    }
}

/// The topics exist (tansu and production clusters do not auto-create them).
fn check_topics(
    consumer: &StreamConsumer<ServiceContext>,
    brokers: &str,
    topics: &[&str],
) -> Result<(), Error> {
    for t in topics {
        let md = consumer
            .fetch_metadata(Some(t), Duration::from_secs(15))
            .map_err(|e| Error::Config(format!("cannot reach brokers `{brokers}`: {e}")))?;
        let ok = md
            .topics()
            .iter()
            .any(|x| x.name() == *t && x.error().is_none() && !x.partitions().is_empty());
        if !ok {
            return Err(Error::Config(format!(
                "topic `{t}` does not exist on `{brokers}`; create it first (scripts/broker.sh topics for the local broker)"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_advance_only_past_contiguous_finished_alerts() {
        let mut t = OffsetTracker::default();
        for o in 10..14 {
            t.begin(0, o);
        }
        t.begin(1, 5);
        assert_eq!(t.in_flight(), 5);
        assert_eq!(t.finish(0, 12), None, "10 and 11 still in flight");
        assert_eq!(t.finish(0, 10), Some(11));
        assert_eq!(t.finish(0, 11), Some(13), "12 was already done");
        assert_eq!(t.finish(0, 13), Some(14));
        assert_eq!(t.finish(0, 13), None, "twice");
        assert_eq!(t.finish(1, 5), Some(6));
        assert_eq!(t.finish(2, 0), None, "unknown partition");
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn re_reading_a_partition_starts_over() {
        let mut t = OffsetTracker::default();
        t.begin(0, 20);
        t.begin(0, 21);
        assert_eq!(t.finish(0, 21), None);
        // Re-assigned: the group's committed offset was 20.
        t.begin(0, 20);
        assert_eq!(t.in_flight(), 1);
        assert_eq!(t.finish(0, 20), Some(21));
    }

    #[test]
    fn holdout_alerts_are_recognised_by_their_treatment() {
        let head = |p: &str| alert_head(p.as_bytes()).expect("valid");
        assert!(head(r#"{"id":"a","data":{"treatment":"holdout"}}"#).holdout);
        assert!(!head(r#"{"id":"a","data":{"treatment":"treated"}}"#).holdout);
        // Lapsed alerts and alerts written before holdout groups have no treatment.
        assert!(!head(r#"{"id":"a","data":{"reason":"cancel"}}"#).holdout);
        assert!(!head(r#"{"id":"a"}"#).holdout);
    }

    #[test]
    fn alert_ids_come_from_the_cloudevent() {
        assert_eq!(
            alert_id(br#"{"specversion":"1.0","id":"abc","data":{}}"#),
            Ok("abc".into())
        );
        for bad in [
            &b"not json"[..],
            br#"{"id":7}"#,
            br#"{"id":" "}"#,
            b"[]",
            b"",
        ] {
            let e = alert_id(bad).expect_err("invalid");
            assert!(e.starts_with("invalid_alert: "), "{e}");
        }
    }

    #[tokio::test]
    async fn dead_lanes_are_errors_with_their_panic_message() {
        let mut set = JoinSet::new();
        set.spawn(async { panic!("boom {}", 7) });
        let joined = set.join_next().await.expect("one task");
        let e = lane_died(joined);
        assert!(
            matches!(&e, Error::Lane(m) if m == "panicked: boom 7"),
            "{e:?}"
        );
        let e = lane_died(Ok(()));
        assert!(
            matches!(&e, Error::Lane(m) if m.contains("stopped unexpectedly")),
            "{e:?}"
        );
    }

    #[test]
    fn lanes_are_stable_per_key_and_in_range() {
        for n in 1..6 {
            for k in ["cust-1", "cust-2", "cust-3"] {
                let a = lane_of(Some(k.as_bytes()), 0, n);
                assert_eq!(a, lane_of(Some(k.as_bytes()), 3, n));
                assert!(a < n);
            }
            assert!(lane_of(None, 7, n) < n);
        }
    }
}
