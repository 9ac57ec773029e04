//! Kafka source and sink (rdkafka), and the streaming service loop.
//!
//! At-least-once by construction: a micro-batch's source offsets are stored only after every
//! output it caused (DLQ records, alerts, scores) was acknowledged by the broker. librdkafka's
//! auto-commit then commits the *stored* offsets (`enable.auto.offset.store=false`). If an output
//! cannot be delivered the service stops with an error instead of storing the offset, so a
//! restart re-reads the batch; alert ids are deterministic, so consumers can de-duplicate.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use churn_metrics::{Health, Metrics};
use churn_model::ModelArtifact;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::config::{Config, Stage};
use crate::engine::{Engine, Ingest, Origin, Scored};
use crate::lineage::{Lineage, Logged, Resolved, BASE_HEADER, WRITER_HEADER};
use crate::rollout;
use crate::Error;

/// Client properties every churnstream client gets, then the user's passthrough keys.
fn client_config(cfg: &Config, role: &BTreeMap<String, String>) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.kafka.brokers);
    for (k, v) in cfg.kafka.client.iter().chain(role) {
        c.set(k, v);
    }
    c
}

/// A change of the partitions this instance owns, prepared inside the rebalance callback.
#[derive(Debug)]
pub enum StateChange {
    /// Partition assigned: its changelog records, oldest first (later records win).
    Restore {
        partition: i32,
        records: Vec<(String, Vec<u8>)>,
        /// The changelog offset of each of `records` (for the log of a corrupt one).
        offsets: Vec<i64>,
        /// The lineage the restored state continues as (see [`crate::lineage`]).
        lineage: Lineage,
        seconds: f64,
        /// Every input topic of this partition, and whether it had unread records at
        /// assignment (committed offset, or the beginning, below the high watermark).
        backlog: Vec<(String, bool)>,
        /// Where consuming starts, per input topic index with a committed offset: a first
        /// message below it means the topic's offsets went back (see [`Positions`]);
        /// [`RECREATED`] for a topic of `pipeline.recreated_topics` without one.
        starts: Vec<(usize, i64)>,
    },
    /// Partition revoked: forget its customers.
    Revoke(i32),
    /// Restoring failed: the service must stop (and be restarted) rather than run without state.
    Failed(String),
}

/// Consumer context: on assignment, reads the changelog partitions of the newly assigned input
/// partitions *inside* the rebalance callback, so no message of a partition is delivered before
/// its state is ready; the service loop applies the queued changes before processing messages.
pub struct ServiceContext {
    /// Topics this process consumes (see [`Config::consumed_topics`]).
    inputs: Vec<String>,
    /// `pipeline.recreated_topics`.
    recreated: Vec<String>,
    /// The raw input topics: the event-time clock has one source per (raw topic, partition),
    /// also in the score stage, which learns an event's raw topic from its `source.topic` header.
    clock_topics: Vec<String>,
    /// Restore state from the changelog on assignment (every stage but `ingest`).
    restore: bool,
    changelog: String,
    reader: ClientConfig,
    group_reader: ClientConfig,
    /// Writes the restore markers (see [`restore_partitions`]).
    marker: ClientConfig,
    /// Records waiting per consumed (topic, partition) from the latest statistics: the consumer
    /// lag, or before the first delivery since the assignment [`unread_before_first`]; absent
    /// where unknown or where the broker's watermark was below the position.
    lag: Mutex<BTreeMap<(String, i32), i64>>,
    /// The lineage of each partition whose state this instance holds (set when the service
    /// loop applies a restore, dropped on revoke): its state records are written under it, and
    /// a partition assigned again without a revoke resumes it.
    lineages: Mutex<BTreeMap<i32, Lineage>>,
    pending: Mutex<Vec<StateChange>>,
    has_pending: AtomicBool,
    metrics: Arc<Metrics>,
}

impl ServiceContext {
    fn new(cfg: &Config, metrics: Arc<Metrics>) -> Self {
        let mut reader = client_config(cfg, &cfg.kafka.consumer);
        reader
            .set("group.id", format!("{}-restore", cfg.group_id()))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false");
        // Reads the group's committed offsets (never joins the group: no subscribe).
        let mut group_reader = client_config(cfg, &cfg.kafka.consumer);
        group_reader
            .set("group.id", cfg.group_id())
            .set("enable.auto.commit", "false");
        let mut marker = client_config(cfg, &cfg.kafka.producer);
        marker
            .set("acks", "all")
            .set("linger.ms", "0")
            .set("message.timeout.ms", "15000");
        ServiceContext {
            group_reader,
            marker,
            lag: Mutex::new(BTreeMap::new()),
            lineages: Mutex::new(BTreeMap::new()),
            inputs: cfg
                .consumed_topics()
                .iter()
                .map(|t| t.to_string())
                .collect(),
            clock_topics: cfg.topics.inputs().iter().map(|t| t.to_string()).collect(),
            recreated: cfg.pipeline.recreated_topics.clone(),
            restore: cfg.pipeline.stage != Stage::Ingest,
            changelog: cfg.topics.changelog.clone(),
            reader,
            pending: Mutex::new(Vec::new()),
            has_pending: AtomicBool::new(false),
            metrics,
        }
    }

    fn partitions(&self, tpl: &TopicPartitionList) -> Vec<i32> {
        let mut ps: Vec<i32> = tpl
            .elements()
            .iter()
            .filter(|e| self.inputs.iter().any(|t| t == e.topic()))
            .map(|e| e.partition())
            .collect();
        ps.sort_unstable();
        ps.dedup();
        ps
    }

    fn push(&self, c: StateChange) {
        if let Ok(mut p) = self.pending.lock() {
            p.push(c);
            self.has_pending.store(true, Ordering::Release);
        }
    }

    /// For each input topic: does its partition `p` hold records the group has not consumed
    /// yet? Errors count as a backlog: the source then holds the clock until it delivers, for as
    /// long as the consumer's statistics show records waiting and at least for the assignment
    /// hold (holding too long delays alerts; too briefly makes events late).
    fn backlog(&self, p: i32) -> Vec<(String, bool)> {
        let Ok(c) = self.group_reader.create::<BaseConsumer>() else {
            return self.inputs.iter().map(|t| (t.clone(), true)).collect();
        };
        let mut tpl = TopicPartitionList::new();
        for t in &self.inputs {
            tpl.add_partition(t, p);
        }
        let committed = c.committed_offsets(tpl, Duration::from_secs(10)).ok();
        self.inputs
            .iter()
            .map(|t| {
                let Ok((low, high)) = c.fetch_watermarks(t, p, Duration::from_secs(10)) else {
                    return (t.clone(), true);
                };
                let from = committed
                    .as_ref()
                    .and_then(|l| l.find_partition(t, p))
                    .and_then(|e| match e.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    })
                    .unwrap_or(low);
                (t.clone(), high > from)
            })
            .collect()
    }

    /// [`ServiceContext::backlog`] per clock source: in the score stage every raw topic of the
    /// partition inherits the events topic's backlog.
    fn clock_backlog(&self, p: i32) -> Vec<(String, bool)> {
        let b = self.backlog(p);
        if self.inputs == self.clock_topics {
            return b;
        }
        let any = b.iter().any(|(_, has)| *has);
        self.clock_topics.iter().map(|t| (t.clone(), any)).collect()
    }

    /// Take the queued changes (cheap when there are none).
    pub fn take(&self) -> Vec<StateChange> {
        if !self.has_pending.swap(false, Ordering::AcqRel) {
            return Vec::new();
        }
        self.pending
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default()
    }
}

/// Are records of a partition waiting for the application although it delivered none since the
/// partition was assigned (librdkafka resets the application position at every fetch start)?
/// From the fetcher's position `next` and the high watermark `hi`: records the fetcher has not
/// reached yet are waiting (`hi - next`); once it has reached the end, whatever it fetched sits
/// in the consumer queue, whose length `queued` is librdkafka's `fetchq_cnt` (a partition's
/// fetch queue forwards to the consumer's one queue, and its length is that queue's). A
/// non-empty queue may hold this partition's records: waiting, conservatively (it only delays
/// the clock). An empty queue with the fetcher at the end: nothing waiting. `None` before
/// fetching starts (the backlog seen at assignment decides).
///
/// Without this, a source whose records sat in the queue behind other partitions' records for
/// longer than the assignment hold (a slow member, a large backlog) was taken for idle, and
/// its partition's clock passed its events: which events came late depended on timing.
pub(crate) fn unread_before_first(next: i64, hi: i64, queued: i64) -> Option<i64> {
    if next < 0 || hi < 0 {
        None
    } else if next < hi {
        Some(hi - next)
    } else {
        Some(queued.max(0))
    }
}

impl ClientContext for ServiceContext {
    /// librdkafka statistics (every `statistics.interval.ms`): consumer lag per input partition.
    fn stats(&self, stats: rdkafka::Statistics) {
        for (topic, t) in &stats.topics {
            if !self.inputs.iter().any(|i| i == topic) {
                continue;
            }
            for (p, part) in &t.partitions {
                if *p < 0 {
                    continue;
                }
                let labels = [topic.as_str(), &p.to_string()];
                // The application's own position (what it was delivered), not the committed
                // offset: after a takeover the committed offset may be ahead of where this
                // member resumed (see `on_assign`).
                let position = part.app_offset;
                let lag = if part.hi_offset >= 0 && position > part.hi_offset {
                    // The broker reports a high watermark below what this consumer has already
                    // read (tansu's memory engine does, for idempotent or compressed batches):
                    // no lag is known. Count it, and drop the series rather than freeze it.
                    self.metrics
                        .watermark_anomalies
                        .with_label_values(&labels)
                        .inc();
                    None
                } else if part.hi_offset >= 0 && position >= 0 {
                    Some(part.hi_offset - position)
                } else {
                    None
                };
                match lag {
                    Some(l) => self.metrics.consumer_lag.with_label_values(&labels).set(l),
                    None => {
                        let _ = self.metrics.consumer_lag.remove_label_values(&labels);
                    }
                }
                // Nothing delivered since the assignment: whether records are waiting comes
                // from the fetcher's position and the consumer queue (see `unread_before_first`).
                let waiting = if position < 0 {
                    unread_before_first(part.next_offset, part.hi_offset, part.fetchq_cnt)
                } else {
                    lag
                };
                if let Ok(mut m) = self.lag.lock() {
                    match waiting {
                        Some(l) => m.insert((topic.clone(), *p), l),
                        None => m.remove(&(topic.clone(), *p)),
                    };
                }
            }
        }
    }
}

impl ConsumerContext for ServiceContext {
    /// The rebalance: on assignment the changelog partitions of the new input partitions are
    /// restored *before* the assignment takes effect, and each input partition starts at the
    /// lower of its committed offset and the position the restored state itself reached (one
    /// past the newest offset any of its customers applied). A committed offset beyond the
    /// restored state — a previous owner still running after the partition was handed on, as
    /// tansu's coordinator allows, commits progress whose state was written after this restore's
    /// marker — would otherwise skip events the state never saw.
    fn rebalance(
        &self,
        c: &BaseConsumer<Self>,
        err: rdkafka::types::RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        use rdkafka::consumer::RebalanceProtocol;
        use rdkafka::types::RDKafkaRespErr;
        let cooperative = matches!(c.rebalance_protocol(), RebalanceProtocol::Cooperative);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.forget_lag(tpl);
                // The restore blocks this thread (the consumer's poll, in a tokio task) for as
                // long as it reads: hand the worker's other tasks (metrics, health, the
                // heartbeat) to the rest of the runtime meanwhile.
                let multi = tokio::runtime::Handle::try_current().is_ok_and(|h| {
                    h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
                });
                if multi {
                    tokio::task::block_in_place(|| self.on_assign(c, tpl));
                } else {
                    self.on_assign(c, tpl);
                }
                let r = if cooperative {
                    c.incremental_assign(tpl)
                } else {
                    c.assign(tpl)
                };
                if let Err(e) = r {
                    self.push(StateChange::Failed(format!("assigning partitions: {e}")));
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.forget_lag(tpl);
                for p in self.partitions(tpl) {
                    self.push(StateChange::Revoke(p));
                }
                let r = if cooperative {
                    c.incremental_unassign(tpl)
                } else {
                    c.unassign()
                };
                if let Err(e) = r {
                    warn!(error = %e, "unassigning partitions");
                }
            }
            other => {
                warn!(error = ?other, "rebalance error: partitions released");
                for p in self.partitions(tpl) {
                    self.push(StateChange::Revoke(p));
                }
                let _ = c.unassign();
            }
        }
    }
}

impl ServiceContext {
    fn forget_lineage(&self, p: i32) {
        if let Ok(mut m) = self.lineages.lock() {
            m.remove(&p);
        }
    }

    /// The lineage this instance writes partition `p`'s state records under.
    fn lineage(&self, p: i32) -> Option<Lineage> {
        self.lineages.lock().ok().and_then(|m| m.get(&p).cloned())
    }

    /// Drop the lag known for the partitions of `tpl` (assigned or revoked: an old sample must
    /// not say "caught up" for a new assignment).
    fn forget_lag(&self, tpl: &TopicPartitionList) {
        if let Ok(mut m) = self.lag.lock() {
            for e in tpl.elements() {
                m.remove(&(e.topic().to_string(), e.partition()));
            }
        }
    }

    /// Restore the state of the assigned partitions (queued for the service loop) and set
    /// each input partition's start offset in `tpl` (see [`ServiceContext::rebalance`]).
    fn on_assign(&self, c: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        let assigned: Vec<String> = tpl
            .elements()
            .iter()
            .map(|e| format!("{}[{}]", e.topic(), e.partition()))
            .collect();
        info!(?assigned, "partitions assigned");
        let parts = self.partitions(tpl);
        if !self.restore {
            for p in parts {
                self.push(StateChange::Restore {
                    partition: p,
                    records: Vec::new(),
                    offsets: Vec::new(),
                    lineage: Lineage {
                        token: String::new(),
                        base: None,
                    },
                    seconds: 0.0,
                    backlog: Vec::new(),
                    starts: Vec::new(),
                });
            }
            return;
        }
        let t0 = Instant::now();
        let token = format!(
            "{}:{}",
            std::process::id(),
            Utc::now().timestamp_nanos_opt().unwrap_or_default()
        );
        let ends = match write_markers(&self.marker, &self.changelog, &parts, &token) {
            Ok(ends) => ends,
            Err(e) => {
                self.push(StateChange::Failed(format!(
                    "restoring state from {}: writing the restore markers: {e}",
                    self.changelog
                )));
                return;
            }
        };
        let committed = c
            .committed_offsets(tpl.clone(), Duration::from_secs(15))
            .ok();
        for (p, end) in ends {
            let held = self.lineage(p).map(|l| l.token);
            match restore_records(&self.reader, &self.changelog, p, end, held.as_deref()) {
                Ok(resolved) => {
                    if resolved.leaves > 1 || resolved.fallback > 0 {
                        warn!(
                            partition = p,
                            lineages = resolved.leaves,
                            chosen = %resolved.view,
                            fallback = resolved.fallback,
                            "more than one member wrote this partition's state: restoring one member's whole state"
                        );
                    }
                    // One past the newest offset the restored state applied, per input topic.
                    let mut reached = [-1i64; 4];
                    for (_, v) in &resolved.records {
                        if let Some(applied) = crate::engine::Snapshot::applied_of(v) {
                            for (r, a) in reached.iter_mut().zip(applied) {
                                *r = (*r).max(a);
                            }
                        }
                    }
                    let mut starts = Vec::new();
                    for (i, topic) in self.inputs.iter().enumerate().take(4) {
                        let stored = committed
                            .as_ref()
                            .and_then(|l| l.find_partition(topic, p))
                            .and_then(|e| match e.offset() {
                                Offset::Offset(o) => Some(o),
                                _ => None,
                            });
                        if let Some(o) = stored {
                            starts.push((i, o));
                        } else if reached[i] >= 0 {
                            if self.recreated.iter().any(|t| t == topic) {
                                // Declared recreated: the state's offsets are of the old log.
                                warn!(
                                    topic = %topic,
                                    partition = p,
                                    applied = reached[i],
                                    "pipeline.recreated_topics: the state's offsets of the old log are forgotten; remove the setting once this has run"
                                );
                                starts.push((i, RECREATED));
                                continue;
                            }
                            warn!(
                                topic = %topic,
                                partition = p,
                                applied = reached[i],
                                "the restored state applied offsets of this partition but the group has no committed offset: a crash before the first commit (the replays are skipped), or the topic was deleted and recreated — then its events up to this offset are skipped as replays; restart once with the topic in pipeline.recreated_topics"
                            );
                        }
                        if reached[i] < 0 && resolved.reread_from[i].is_none() {
                            continue;
                        }
                        let mut from = reached[i] + 1;
                        if let Some(r) = resolved.reread_from[i] {
                            from = from.min(r);
                        }
                        if stored.is_some_and(|o| o > from) {
                            if let Some(s) = starts.last_mut() {
                                s.1 = from;
                            }
                            warn!(
                                topic = %topic,
                                partition = p,
                                committed = stored,
                                from,
                                "committed offset is beyond the restored state: starting where the state ends"
                            );
                            let _ = tpl.set_partition_offset(topic, p, Offset::Offset(from));
                        }
                    }
                    self.push(StateChange::Restore {
                        partition: p,
                        records: resolved.records,
                        offsets: resolved.offsets,
                        lineage: Lineage {
                            token: token.clone(),
                            base: Some((resolved.view, end)),
                        },
                        seconds: t0.elapsed().as_secs_f64(),
                        backlog: self.clock_backlog(p),
                        starts,
                    })
                }
                Err(e) => self.push(StateChange::Failed(format!(
                    "restoring state from {} partition {p} (up to its marker at offset {end}): {e}",
                    self.changelog
                ))),
            }
        }
    }
}

/// Key of the restore markers in the changelog (never a customer id: ids are validated
/// non-empty text, and this one starts with a NUL byte). Compaction keeps the newest per
/// partition; restore skips them.
pub const RESTORE_MARKER_KEY: &[u8] = b"\0churnstream.restore-marker";

/// Records the delivery offset of each restore marker.
#[derive(Default)]
struct MarkerContext {
    offsets: Mutex<BTreeMap<i32, Result<i64, String>>>,
}

impl ClientContext for MarkerContext {}

impl rdkafka::producer::ProducerContext for MarkerContext {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &rdkafka::producer::DeliveryResult<'_>, _: ()) {
        let (p, res) = match r {
            Ok(m) => (m.partition(), Ok(m.offset())),
            Err((e, m)) => (m.partition(), Err(e.to_string())),
        };
        if let Ok(mut o) = self.offsets.lock() {
            o.insert(p, res);
        }
    }
}

/// Append a restore marker to each changelog partition in `parts` and return the offset the
/// broker gave it: the exact end of what a restore must read. Everything acknowledged to any
/// writer before the marker sits below that offset, whatever high watermark the broker reports
/// (tansu's memory engine under-reports it for idempotent or compressed batches), so a restore
/// that reads up to its own marker can neither stop early nor wait for an end that is not there.
pub fn write_markers(
    cfg: &ClientConfig,
    topic: &str,
    parts: &[i32],
    token: &str,
) -> Result<Vec<(i32, i64)>, KafkaError> {
    use rdkafka::producer::{BaseProducer, BaseRecord};
    if parts.is_empty() {
        return Ok(Vec::new());
    }
    let producer: BaseProducer<MarkerContext> = cfg.create_with_context(MarkerContext::default())?;
    for &p in parts {
        let headers = OwnedHeaders::new().insert(Header {
            key: "churn.marker",
            value: Some("restore"),
        });
        producer
            .send(
                BaseRecord::<[u8], str>::to(topic)
                    .partition(p)
                    .key(RESTORE_MARKER_KEY)
                    .payload(token)
                    .headers(headers),
            )
            .map_err(|(e, _)| e)?;
    }
    producer.flush(Duration::from_secs(20))?;
    let offsets = producer
        .context()
        .offsets
        .lock()
        .map(|o| o.clone())
        .unwrap_or_default();
    parts
        .iter()
        .map(|p| match offsets.get(p) {
            Some(Ok(o)) if *o >= 0 => Ok((*p, *o)),
            Some(Err(e)) => Err(KafkaError::MessageProduction(
                rdkafka::types::RDKafkaErrorCode::Fail,
            ))
            .inspect_err(|_| warn!(partition = p, error = %e, "restore marker not delivered")),
            _ => Err(KafkaError::MessageProduction(
                rdkafka::types::RDKafkaErrorCode::MessageTimedOut,
            )),
        })
        .collect()
}

/// Read one partition from the beginning up to offset `end` (a restore marker, see
/// [`write_markers`]; excluded), in offset order, each offset once (a broker that compacts
/// while we read may serve a range twice — tansu's sqlite engine does — and a stale record
/// applied after a newer one would roll state back), with their lineage headers. Restore markers
/// are not returned. Only the records a restore can still choose are kept
/// ([`crate::lineage::Reducer`]): peak memory is about the partition's live state, however many
/// superseded versions its uncompacted log holds.
pub fn read_partition(
    reader: &ClientConfig,
    topic: &str,
    partition: i32,
    end: i64,
) -> Result<Vec<Logged>, KafkaError> {
    let c: BaseConsumer = reader.create()?;
    if end <= 0 {
        return Ok(Vec::new());
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)?;
    c.assign(&tpl)?;
    // Reduced while read (lineage::Reducer): memory is the partition's state, not its log.
    let mut log = crate::lineage::Reducer::default();
    // A busy broker may answer a fetch late: give up only after RESTORE_PATIENCE without a
    // record (the marker at `end` is there, so the read always has something left to get).
    let mut last = Instant::now();
    loop {
        match c.poll(Duration::from_secs(5)) {
            Some(Ok(m)) => {
                last = Instant::now();
                if m.offset() >= end {
                    return Ok(log.finish());
                }
                if m.key() == Some(RESTORE_MARKER_KEY) {
                    log.marker(m.offset());
                    if m.offset() >= end - 1 {
                        return Ok(log.finish());
                    }
                    continue;
                }
                let key = m
                    .key()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .unwrap_or_default();
                let raw = m.payload().unwrap_or_default();
                let (lineage, value) = crate::lineage::unwrap(raw).unwrap_or((None, raw));
                let (writer, base) = match lineage {
                    Some(l) => (Some(l.token), l.base),
                    None => (
                        header(&m, WRITER_HEADER).map(str::to_string),
                        header(&m, BASE_HEADER).and_then(Lineage::parse_base),
                    ),
                };
                log.push(Logged {
                    offset: m.offset(),
                    key,
                    value: value.to_vec(),
                    writer,
                    base,
                });
                if m.offset() >= end - 1 {
                    return Ok(log.finish());
                }
            }
            Some(Err(e)) => return Err(e),
            None if last.elapsed() < RESTORE_PATIENCE => {
                warn!(
                    topic,
                    partition,
                    read = log.read(),
                    end,
                    "restore: no record from the broker for 5 s, still waiting"
                );
            }
            None => {
                return Err(KafkaError::MessageConsumption(
                    RDKafkaErrorCode::OperationTimedOut,
                ))
            }
        }
    }
}

/// How long a restore waits for the next changelog record before it fails the service.
const RESTORE_PATIENCE: Duration = Duration::from_secs(60);

/// Read one changelog partition up to `end` ([`read_partition`]) and choose the state a
/// restore applies ([`crate::lineage::resolve`]; `held`: the lineage this instance holds).
pub fn restore_records(
    reader: &ClientConfig,
    topic: &str,
    partition: i32,
    end: i64,
    held: Option<&str>,
) -> Result<Resolved, KafkaError> {
    let log = read_partition(reader, topic, partition, end)?;
    Ok(crate::lineage::resolve_into(
        log,
        &crate::engine::Snapshot::applied_of,
        held,
    ))
}

/// Client context of the start-up metadata probe ([`startup_metadata`]): logs librdkafka's
/// global errors as the default context does, and keeps the latest one, so that a start-up
/// failure names its cause (an SSL handshake or a SASL authentication error) instead of only
/// "transport failure".
#[derive(Default)]
struct StartupContext {
    last_error: Mutex<Option<String>>,
}

impl ClientContext for StartupContext {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::error!("librdkafka: {error}: {reason}");
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(format!("{error}: {reason}"));
        }
    }
}

/// The probe produces nothing: no deliveries to handle.
impl rdkafka::producer::ProducerContext for StartupContext {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::producer::DeliveryResult<'_>, _: ()) {}
}

/// The cluster's metadata at start-up, through a client whose main queue is served here (an
/// admin client's is not, so its errors and log lines would never surface): when the brokers
/// cannot be reached, the error names the brokers, how the client authenticates
/// ([`crate::config::KafkaConfig::security`], never a secret) and librdkafka's own cause.
fn startup_metadata(cfg: &Config) -> Result<rdkafka::metadata::Metadata, Error> {
    let probe: rdkafka::producer::BaseProducer<StartupContext> =
        client_config(cfg, &BTreeMap::new()).create_with_context(StartupContext::default())?;
    probe
        .client()
        .fetch_metadata(None, Duration::from_secs(15))
        .map_err(|e| {
            // Serve the queued error and log events (the handshake or authentication failure).
            for _ in 0..5 {
                probe.poll(Duration::from_millis(50));
            }
            let security = cfg.kafka.security();
            let cause = probe
                .context()
                .last_error
                .lock()
                .ok()
                .and_then(|e| e.clone())
                .map(|e| format!("; the client's last error: {e}"))
                .unwrap_or_default();
            let hint = if security == "security.protocol=plaintext" {
                cause
            } else {
                format!("{cause} (check the credentials and the CA / certificate settings)")
            };
            Error::Config {
                path: "kafka.brokers".into(),
                message: format!(
                    "cannot reach brokers `{}` with {security}: {e}{hint}",
                    cfg.kafka.brokers
                ),
            }
        })
}

/// Check that the topics this stage reads and writes exist (clear error naming the brokers tried)
/// and, for the stages that keep state, create the changelog topic, co-partitioned with the
/// consumed topics, if it is missing.
pub async fn prepare_topics(cfg: &Config) -> Result<(), Error> {
    let md = startup_metadata(cfg)?;
    let admin: AdminClient<DefaultClientContext> = client_config(cfg, &BTreeMap::new()).create()?;
    let parts = |name: &str| {
        md.topics()
            .iter()
            .find(|t| t.name() == name && t.error().is_none())
            .map(|t| t.partitions().len() as i32)
    };
    let t = &cfg.topics;
    let consumed = cfg.consumed_topics();
    let outputs = match cfg.pipeline.stage {
        Stage::Ingest => vec![t.events.as_str(), t.dlq.as_str()],
        Stage::All | Stage::Score => {
            let mut o = vec![t.alerts.as_str(), t.scores.as_str(), t.dlq.as_str()];
            if cfg.model.shadow_path.is_some() {
                o.push(t.shadow_scores.as_str());
            }
            o
        }
    };
    let mut input_parts = Vec::new();
    for name in consumed.iter().copied().chain(outputs) {
        let Some(n) = parts(name) else {
            return Err(Error::Config {
                path: "topics".into(),
                message: format!(
                    "topic `{name}` does not exist on `{}`; create it first (scripts/broker.sh topics for the local broker)",
                    cfg.kafka.brokers
                ),
            });
        };
        if consumed.contains(&name) {
            input_parts.push(n);
        }
    }
    if cfg.pipeline.stage == Stage::Ingest {
        return Ok(());
    }
    let n = input_parts.iter().copied().max().unwrap_or(1);
    if input_parts.iter().any(|p| *p != n) {
        return Err(Error::Config {
            path: "topics".into(),
            message: format!(
                "input topics must be co-partitioned (same partition count), found {input_parts:?}"
            ),
        });
    }
    match parts(&t.changelog) {
        Some(m) if m == n => check_changelog_policy(cfg, &admin).await,
        Some(m) => Err(Error::Config {
            path: "topics.changelog".into(),
            message: format!(
                "`{}` has {m} partitions but the inputs have {n}",
                t.changelog
            ),
        }),
        None => {
            // A group that committed offsets has state: created empty now, the changelog would
            // restore nothing and every event before those offsets would be lost to the state.
            let committed = committed_inputs(cfg, &md, &consumed)?;
            if !committed.is_empty() {
                if !cfg.pipeline.allow_missing_changelog {
                    return Err(Error::Config {
                        path: "topics.changelog".into(),
                        message: format!(
                            "the state changelog `{}` does not exist, but group `{}` has committed offsets ({}): starting would restore an empty state and lose the history before them. Restore the changelog topic (or fix topics.changelog); to rebuild the state from the inputs, reset the group's offsets to the earliest (kafka-consumer-groups --reset-offsets --to-earliest); to start with an empty state anyway, set pipeline.allow_missing_changelog = true",
                            t.changelog,
                            cfg.group_id(),
                            committed.join(", ")
                        ),
                    });
                }
                warn!(
                    topic = %t.changelog,
                    committed = %committed.join(", "),
                    "pipeline.allow_missing_changelog: the changelog is missing although the group committed offsets; starting with an empty state"
                );
            }
            let topic = NewTopic::new(
                &t.changelog,
                n,
                TopicReplication::Fixed(t.changelog_replication),
            )
            .set("cleanup.policy", "compact");
            let res = admin
                .create_topics(
                    &[topic],
                    &AdminOptions::new().operation_timeout(Some(Duration::from_secs(15))),
                )
                .await?;
            for r in res {
                match r {
                    Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((name, e)) => return Err(Error::Produce(format!("creating {name}: {e}"))),
                }
            }
            info!(topic = %t.changelog, partitions = n, "created state changelog topic");
            Ok(())
        }
    }
}

/// Committed offsets of the group on the consumed topics, as `topic[partition]@offset` (at most
/// 8, then `…`); empty when the group has none.
fn committed_inputs(
    cfg: &Config,
    md: &rdkafka::metadata::Metadata,
    consumed: &[&str],
) -> Result<Vec<String>, Error> {
    let mut tpl = TopicPartitionList::new();
    for t in md.topics().iter().filter(|t| consumed.contains(&t.name())) {
        for p in t.partitions() {
            tpl.add_partition(t.name(), p.id());
        }
    }
    let mut c = client_config(cfg, &cfg.kafka.consumer);
    c.set("group.id", cfg.group_id())
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer = c.create()?;
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(15))?;
    let mut out: Vec<String> = committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) if o > 0 => Some(format!("{}[{}]@{o}", e.topic(), e.partition())),
            _ => None,
        })
        .collect();
    if out.len() > 8 {
        out.truncate(8);
        out.push("…".into());
    }
    Ok(out)
}

/// The changelog must be compacted: under `cleanup.policy=delete` its records expire with the
/// retention and a restore silently loses every customer whose record is older. A policy
/// without `compact` is refused; one the broker does not report (tansu reports only the
/// settings a topic was created with) is logged.
async fn check_changelog_policy(
    cfg: &Config,
    admin: &AdminClient<DefaultClientContext>,
) -> Result<(), Error> {
    use rdkafka::admin::ResourceSpecifier;
    let name = cfg.topics.changelog.as_str();
    let res = admin
        .describe_configs(
            &[ResourceSpecifier::Topic(name)],
            &AdminOptions::new().request_timeout(Some(Duration::from_secs(15))),
        )
        .await;
    let policy = match res.as_deref() {
        Ok([Ok(r)]) => r.get("cleanup.policy").and_then(|e| e.value.clone()),
        other => {
            warn!(topic = name, result = ?other.map(|r| r.len()), "could not read the changelog's cleanup.policy; make sure it is compact");
            return Ok(());
        }
    };
    match policy {
        Some(p) if p.split(',').any(|x| x.trim() == "compact") => Ok(()),
        Some(p) => Err(Error::Config {
            path: "topics.changelog".into(),
            message: format!(
                "the state changelog `{name}` has cleanup.policy={p}: its records would expire and a restore would lose those customers' state; set cleanup.policy=compact (kafka-configs --alter --entity-type topics --entity-name {name} --add-config cleanup.policy=compact)"
            ),
        }),
        None => {
            warn!(
                topic = name,
                "the broker does not report the changelog's cleanup.policy; make sure it is compact"
            );
            Ok(())
        }
    }
}

/// The consumer: group member with manual offset store and librdkafka auto-commit. The range
/// assignor keeps partition `p` of every input topic on the same member (co-partitioning), which
/// the per-customer state relies on.
///
/// Prefetch is bounded by `queued.max.messages.kbytes` (32 MB). When that queue is full,
/// librdkafka postpones the next fetch by `fetch.queue.backoff.ms`, 1000 ms by default: a
/// consumer that drains the queue in a fraction of that then idles. At 10 ms, end to end through
/// the local broker went from 140 k to 344 k events/s (README, "Benchmarks").
pub fn consumer(
    cfg: &Config,
    metrics: Arc<Metrics>,
) -> Result<StreamConsumer<ServiceContext>, Error> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.kafka.brokers)
        .set("group.id", cfg.group_id())
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("queued.max.messages.kbytes", "32768")
        .set("fetch.queue.backoff.ms", "10")
        .set("enable.partition.eof", "false")
        .set("partition.assignment.strategy", "range")
        .set("statistics.interval.ms", "1000");
    if !cfg.kafka.group_instance_id.is_empty() {
        c.set("group.instance.id", &cfg.kafka.group_instance_id);
    }
    for (k, v) in cfg.kafka.client.iter().chain(&cfg.kafka.consumer) {
        c.set(k, v);
    }
    Ok(c.create_with_context(ServiceContext::new(cfg, metrics))?)
}

/// The producer: idempotent, acks=all. Passthrough keys may override (e.g. for brokers without
/// idempotence support).
pub fn producer(cfg: &Config) -> Result<FutureProducer, Error> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.kafka.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "60000");
    let extra = client_config(cfg, &cfg.kafka.producer);
    for (k, v) in extra.config_map() {
        c.set(k, v);
    }
    Ok(c.create()?)
}

/// What an output is, for accounting after acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// An input event (published, or forwarded by the ingest stage).
    Event,
    Dlq,
    Alert,
    Score,
    /// A shadow model's score (`topics.shadow_scores`).
    Shadow,
    /// A state changelog record (the checkpoint).
    State,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Event => "event",
            Kind::Dlq => "dead letter",
            Kind::Alert => "alert",
            Kind::Score => "score",
            Kind::Shadow => "shadow score",
            Kind::State => "state checkpoint",
        }
    }
}

/// Producer wrapper that keeps delivery futures until [`Sink::flush`].
pub struct Sink {
    producer: FutureProducer,
    /// In-flight deliveries: (future, what, topic, when its event was received).
    pending: Vec<(DeliveryFuture, Kind, String, Option<Instant>)>,
}

impl Sink {
    pub fn new(producer: FutureProducer) -> Self {
        Sink {
            producer,
            pending: Vec::new(),
        }
    }

    async fn send(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
        kind: Kind,
        received: Option<Instant>,
    ) -> Result<(), Error> {
        self.send_to(topic, None, key, Some(payload), headers, kind, received)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn send_to(
        &mut self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: Option<OwnedHeaders>,
        kind: Kind,
        received: Option<Instant>,
    ) -> Result<(), Error> {
        let mut record = FutureRecord::<[u8], [u8]>::to(topic);
        if let Some(p) = payload {
            record = record.payload(p);
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(h) = headers {
            record = record.headers(h);
        }
        loop {
            match self.producer.send_result(record) {
                Ok(f) => {
                    self.pending.push((f, kind, topic.to_string(), received));
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), rec)) => {
                    // Back-pressure: wait for what is in flight before queueing more.
                    record = rec;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err((e, _)) => return Err(Error::Produce(e.to_string())),
            }
        }
    }

    /// Wait for every pending delivery; error on the first failure.
    async fn flush(&mut self, metrics: &Metrics) -> Result<(), Error> {
        let mut first_err = None;
        for (f, kind, topic, received) in self.pending.drain(..) {
            match f.await {
                Ok(Ok(_)) => match kind {
                    Kind::Dlq => metrics.dlq_published.inc(),
                    Kind::Alert => {
                        if let Some(r) = received {
                            metrics
                                .event_to_alert_latency
                                .observe(r.elapsed().as_secs_f64());
                        }
                    }
                    Kind::Score | Kind::Shadow | Kind::Event | Kind::State => {}
                },
                Ok(Err((e, _))) => {
                    metrics.produce_errors.inc();
                    first_err.get_or_insert(Error::Produce(format!(
                        "{} to `{topic}`: {e}",
                        kind.as_str()
                    )));
                }
                Err(_) => {
                    metrics.produce_errors.inc();
                    first_err.get_or_insert(Error::Produce(format!(
                        "{} to `{topic}`: delivery future cancelled",
                        kind.as_str()
                    )));
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// Publish a scoring pass's alerts and scores.
async fn publish(
    sink: &mut Sink,
    cfg: &Config,
    metrics: &Metrics,
    scored: &Scored,
) -> Result<(), Error> {
    for a in &scored.alerts {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "ce_id",
                value: Some(a.id.as_str()),
            })
            .insert(Header {
                key: "content-type",
                value: Some("application/cloudevents+json"),
            });
        sink.send(
            &cfg.topics.alerts,
            Some(a.key.as_bytes()),
            &a.payload,
            Some(headers),
            Kind::Alert,
            a.received,
        )
        .await?;
        if !a.is_lapsed() {
            metrics.alert(a.band.as_str(), a.action).inc();
            if a.treatment == churn_events::HOLDOUT {
                metrics.holdout_alerts.inc();
            }
        }
    }
    for o in &scored.outcomes {
        metrics
            .outcome(o.holdout, o.band.as_str(), o.action, o.churned)
            .inc();
    }
    // Lapsed alerts: each one is a customer newly meeting the churn definition.
    metrics.lapsed_cancel.inc_by(scored.lapsed_cancel as u64);
    metrics
        .lapsed_inactivity
        .inc_by(scored.lapsed_inactivity as u64);
    metrics
        .churned_customers
        .inc_by((scored.lapsed_cancel + scored.lapsed_inactivity) as u64);
    for s in &scored.scores {
        sink.send(
            &cfg.topics.scores,
            Some(s.key.as_bytes()),
            &s.payload,
            None,
            Kind::Score,
            None,
        )
        .await?;
    }
    metrics.scores.inc_by(scored.scores.len() as u64);
    // Shadow scores, and how they agree with the live ones (counted per pass, 7 handles).
    let (mut agreement, mut decisions) = ([0u64; 3], [0u64; 4]);
    for s in &scored.shadow {
        sink.send(
            &cfg.topics.shadow_scores,
            Some(s.key.as_bytes()),
            &s.payload,
            None,
            Kind::Shadow,
            None,
        )
        .await?;
        let a = churn_metrics::SHADOW_AGREEMENTS
            .iter()
            .position(|x| *x == s.agreement())
            .unwrap_or(0);
        agreement[a] += 1;
        decisions[usize::from(s.live_alert) * 2 + usize::from(s.shadow_alert)] += 1;
    }
    if !scored.shadow.is_empty() {
        for (a, n) in churn_metrics::SHADOW_AGREEMENTS.iter().zip(agreement) {
            metrics.shadow_score(a).inc_by(n);
        }
        for (i, n) in decisions.into_iter().enumerate() {
            metrics.shadow_decision(i >= 2, i % 2 == 1).inc_by(n);
        }
    }
    Ok(())
}

/// Publish the changelog records of every customer changed since the last call.
/// Each record carries its partition's lineage headers ([`crate::lineage`]).
async fn persist_state(
    sink: &mut Sink,
    cfg: &Config,
    engine: &mut Engine,
    ctx: &ServiceContext,
) -> Result<(), Error> {
    let lineages = ctx.lineages.lock().map(|m| m.clone()).unwrap_or_default();
    loop {
        let chunk = engine.take_changelog_chunk(STATE_CHUNK)?;
        if chunk.is_empty() {
            return Ok(());
        }
        persist_chunk(sink, cfg, &lineages, chunk).await?;
    }
}

/// State records built and handed to the producer at a time ([`persist_state`]).
const STATE_CHUNK: usize = 10_000;

async fn persist_chunk(
    sink: &mut Sink,
    cfg: &Config,
    lineages: &BTreeMap<i32, Lineage>,
    chunk: Vec<crate::engine::StateRecord>,
) -> Result<(), Error> {
    for r in chunk {
        let lineage = lineages.get(&r.partition);
        // An empty state record is a tombstone: a null value, so compaction drops the key; its
        // lineage goes in headers. A state record carries it in its value (lineage::wrap).
        let (value, headers) = match lineage {
            Some(l) if !r.payload.is_empty() => (Some(crate::lineage::wrap(l, &r.payload)), None),
            Some(l) => {
                let h = OwnedHeaders::new().insert(Header {
                    key: WRITER_HEADER,
                    value: Some(l.token.as_str()),
                });
                let h = match l.base_header() {
                    Some(b) => h.insert(Header {
                        key: BASE_HEADER,
                        value: Some(b.as_str()),
                    }),
                    None => h,
                };
                (None, Some(h))
            }
            None => ((!r.payload.is_empty()).then(|| r.payload.clone()), None),
        };
        sink.send_to(
            &cfg.topics.changelog,
            Some(r.partition),
            Some(r.key.as_bytes()),
            value.as_deref(),
            headers,
            Kind::State,
            None,
        )
        .await?;
    }
    Ok(())
}

/// Apply queued rebalance changes to the engine. Returns true if any were applied.
/// What the service loop tracks besides the engine: source ids, the offsets of the current
/// batch, and readiness (`/readyz` turns true after the first restore).
struct Track {
    sources: SourceIds,
    offsets: BTreeMap<(String, i32), i64>,
    /// The next offset expected per consumed (topic, partition).
    positions: Positions,
    /// Partitions whose state this instance holds (restored and not revoked since).
    owned: std::collections::BTreeSet<i32>,
    restored: bool,
    health: Health,
    /// Late events already counted in the metric.
    late_events: u64,
    /// Partition moves already counted in the metric.
    partition_moves: u64,
    /// Catalog `other` events already counted in the metric.
    catalog_other: u64,
}

/// A start offset of [`StateChange::Restore`]: the topic is in `pipeline.recreated_topics`
/// and has no committed offset, so the restored state's offsets of it are forgotten.
pub(crate) const RECREATED: i64 = i64::MIN;

/// The next offset expected on each consumed (input topic index, partition), to notice offsets
/// that go back: a topic deleted and recreated, or a broker that lost its log, starts again
/// below offsets the state has applied, and the replay guard would drop every new event up to
/// the old log's end as a replay. Set from the committed offset at assignment and advanced by
/// every message; forgotten on revoke.
#[derive(Debug, Default)]
pub(crate) struct Positions {
    next: std::collections::HashMap<(usize, i32), i64>,
}

impl Positions {
    /// Consuming `partition` of input `topic` starts at `offset` (its committed offset).
    pub(crate) fn start(&mut self, topic: usize, partition: i32, offset: i64) {
        self.next.insert((topic, partition), offset);
    }

    /// Forget every position on `partition` (revoked; or assigned without a known start).
    pub(crate) fn forget(&mut self, partition: i32) {
        self.next.retain(|(_, p), _| *p != partition);
    }

    /// A message at `offset` arrived: `Some(expected)` if it is below the offset expected next
    /// (the offsets went back), `None` otherwise. A gap forward (compaction, transactions'
    /// markers) is normal.
    pub(crate) fn arrived(&mut self, topic: usize, partition: i32, offset: i64) -> Option<i64> {
        let next = self
            .next
            .insert((topic, partition), offset.saturating_add(1));
        next.filter(|n| offset < *n)
    }
}

/// Input topic-partitions → the engine's source indices (for the event-time watermark).
struct SourceIds {
    ids: BTreeMap<(String, i32), usize>,
}

impl SourceIds {
    fn id(&mut self, topic: &str, partition: i32) -> usize {
        let next = self.ids.len();
        *self
            .ids
            .entry((topic.to_string(), partition))
            .or_insert(next)
    }
}

/// Tell the engine which sources are behind (consumer lag > 0 in the latest statistics): those
/// keep holding their partition's clock instead of going idle. Behind the ingest stage every raw
/// source of a partition shares the events topic's lag. Also exports the late-event count.
fn update_backlog(ctx: &ServiceContext, engine: &mut Engine, track: &mut Track, metrics: &Metrics) {
    if let Ok(lag) = ctx.lag.lock() {
        for ((t, p), id) in &track.sources.ids {
            let topic = if ctx.inputs.iter().any(|i| i == t) {
                t.as_str()
            } else {
                ctx.inputs.first().map_or(t.as_str(), |s| s.as_str())
            };
            let behind = lag.get(&(topic.to_string(), *p)).map(|l| *l > 0);
            engine.set_backlog(*id, behind);
        }
    }
    let late = engine.late_events();
    if late > track.late_events {
        metrics.late_events.inc_by(late - track.late_events);
        track.late_events = late;
    }
    let other = engine.catalog_other_events();
    if other > track.catalog_other {
        metrics.catalog_other.inc_by(other - track.catalog_other);
        track.catalog_other = other;
    }
    let moves = engine.partition_moves();
    if moves > track.partition_moves {
        metrics
            .partition_moves
            .inc_by(moves - track.partition_moves);
        track.partition_moves = moves;
    }
}

fn apply_state_changes(
    ctx: &ServiceContext,
    engine: &mut Engine,
    metrics: &Metrics,
    track: &mut Track,
) -> Result<(), Error> {
    let Track {
        sources,
        offsets,
        positions,
        owned,
        restored,
        health,
        ..
    } = track;
    let changes = ctx.take();
    let any = !changes.is_empty();
    for c in changes {
        match c {
            StateChange::Revoke(p) => {
                // Events of this partition ingested in the current batch are dropped with its
                // state: their offsets must not be stored (the next owner re-reads them).
                offsets.retain(|(_, q), _| *q != p);
                positions.forget(p);
                owned.remove(&p);
                ctx.forget_lineage(p);
                let now = Instant::now();
                for t in ctx.clock_topics.clone() {
                    let id = sources.id(&t, p);
                    engine.forget_source(id, now);
                }
                let n = engine.drop_partition(p);
                info!(
                    partition = p,
                    customers = n,
                    "partition revoked: state released"
                );
            }
            StateChange::Restore {
                partition,
                records,
                offsets,
                lineage,
                seconds,
                backlog,
                starts,
            } => {
                let n = records.len();
                // Consuming restarts at the committed offsets (or below, where the state is
                // behind them): messages from there on are expected.
                positions.forget(partition);
                let mut recreated = Vec::new();
                for (t, o) in starts {
                    if o == RECREATED {
                        recreated.push(t);
                    } else {
                        positions.start(t, partition, o);
                    }
                }
                // The partition's input sources hold the event-time clock until they deliver
                // (see Engine::expect_source), so the first one fetched cannot set it alone.
                let now = Instant::now();
                for (t, has_backlog) in &backlog {
                    let id = sources.id(t, partition);
                    engine.expect_source(id, partition, now, *has_backlog);
                }
                // Oldest first: a later record (or tombstone) replaces an earlier one.
                if !owned.insert(partition) {
                    // Assigned again without a revoke in between (tansu's coordinator does
                    // that): the state held here is newer than the last checkpoint; restoring
                    // would roll it back under offsets already ingested past it.
                    info!(
                        partition,
                        "partition assigned again: state held in memory kept"
                    );
                    continue;
                }
                for (i, (k, v)) in records.iter().enumerate() {
                    // A record this version cannot read (corrupt, or written by a newer one)
                    // is skipped, not a wedge: failing here would crash-loop every instance
                    // that is assigned the partition. The customer restarts from its events.
                    if let Err(e) = engine.restore_in(Some(partition), k, v) {
                        metrics.state_corrupt_records.inc();
                        error!(
                            partition,
                            offset = offsets.get(i).copied().unwrap_or(-1),
                            key = %k.chars().take(64).collect::<String>(),
                            bytes = v.len(),
                            error = %e,
                            "unreadable state record skipped: this customer's state restarts from the events consumed from now on"
                        );
                    }
                }
                for t in recreated {
                    let n = engine.input_offsets_reset(t, partition, 0);
                    let topic = ctx.inputs.get(t).map_or("", String::as_str);
                    metrics.offset_resets.with_label_values(&[topic]).inc();
                    info!(
                        topic,
                        partition,
                        customers = n,
                        "offsets of a recreated topic forgotten"
                    );
                }
                if let Ok(mut m) = ctx.lineages.lock() {
                    m.insert(partition, lineage);
                }
                metrics
                    .checkpoint_last_success
                    .set(Utc::now().timestamp() as f64);
                info!(
                    partition,
                    records = n,
                    seconds,
                    "partition assigned: state restored from changelog"
                );
            }
            StateChange::Failed(m) => return Err(Error::Produce(m)),
        }
    }
    if any && !*restored {
        *restored = true;
        set_ready(health, metrics, true);
    }
    Ok(())
}

/// The producer's `message.max.bytes` (librdkafka's default 1,000,000): what a dead letter must
/// fit (see [`crate::dlq`]).
pub fn dlq_record_limit(cfg: &Config) -> usize {
    cfg.kafka
        .producer
        .get("message.max.bytes")
        .or(cfg.kafka.client.get("message.max.bytes"))
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1_000_000)
}

/// Send a rejected message to the DLQ: its original key, bytes and headers plus `error.reason`,
/// `error.stage` and `source.*`, each part cut to fit `limit` (the producer's
/// `message.max.bytes`; [`crate::dlq::bound`]): a dead letter that could not be sent would stop
/// the pipeline on every restart.
async fn dead_letter(
    sink: &mut Sink,
    cfg: &Config,
    msg: &BorrowedMessage<'_>,
    reason: &str,
    stage: &str,
    limit: usize,
) -> Result<(), Error> {
    let (topic, partition, offset) = (msg.topic(), msg.partition(), msg.offset());
    warn!(
        topic,
        partition, offset, reason, stage, "rejected event → DLQ"
    );
    let original = msg
        .headers()
        .into_iter()
        .flat_map(|h| h.iter().map(|x| (x.key, x.value)));
    let b = crate::dlq::bound(msg.key(), original, msg.payload().unwrap_or(&[]), limit);
    let mut headers = OwnedHeaders::new();
    for (key, value) in &b.headers {
        headers = headers.insert(Header { key, value: *value });
    }
    for (key, value) in &b.notes {
        headers = headers.insert(Header {
            key,
            value: Some(value.as_str()),
        });
    }
    let headers = dlq_headers(headers, reason, stage, topic, partition, offset);
    sink.send(
        &cfg.topics.dlq,
        b.key,
        b.payload,
        Some(headers),
        Kind::Dlq,
        None,
    )
    .await
}

/// The original headers plus `source.topic`/`source.partition`/`source.offset` (lineage of a
/// record forwarded between stages).
fn lineage_headers(
    orig: Option<&rdkafka::message::BorrowedHeaders>,
    topic: &str,
    partition: i32,
    offset: i64,
) -> OwnedHeaders {
    with_source(copy_headers(orig), topic, partition, offset)
}

/// Bytes of a message's headers (names and values).
fn header_bytes(msg: &BorrowedMessage<'_>) -> usize {
    msg.headers().map_or(0, |h| {
        h.iter()
            .map(|x| x.key.len() + x.value.map_or(0, <[u8]>::len))
            .sum()
    })
}

/// The headers of a consumed message, as headers to produce.
fn copy_headers(orig: Option<&rdkafka::message::BorrowedHeaders>) -> OwnedHeaders {
    let mut h = OwnedHeaders::new();
    if let Some(orig) = orig {
        for x in orig.iter() {
            h = h.insert(Header {
                key: x.key,
                value: x.value,
            });
        }
    }
    h
}

/// `h` plus `source.topic`/`source.partition`/`source.offset`.
fn with_source(h: OwnedHeaders, topic: &str, partition: i32, offset: i64) -> OwnedHeaders {
    let partition = partition.to_string();
    let offset = offset.to_string();
    h.insert(Header {
        key: "source.topic",
        value: Some(topic),
    })
    .insert(Header {
        key: "source.partition",
        value: Some(partition.as_str()),
    })
    .insert(Header {
        key: "source.offset",
        value: Some(offset.as_str()),
    })
}

/// The original headers plus `error.reason`, `error.stage` and `source.*`.
fn dlq_headers(
    h: OwnedHeaders,
    reason: &str,
    stage: &str,
    topic: &str,
    partition: i32,
    offset: i64,
) -> OwnedHeaders {
    let h = h
        .insert(Header {
            key: "error.reason",
            value: Some(reason),
        })
        .insert(Header {
            key: "error.stage",
            value: Some(stage),
        });
    with_source(h, topic, partition, offset)
}

/// Update gauges from the engine's population KPIs.
fn export_kpis(engine: &Engine, metrics: &Metrics) {
    let k = engine.kpis();
    metrics.customers_tracked.set(k.customers as i64);
    metrics.state_bytes.set(k.state_bytes as i64);
    if let Some(n) = k.nps_90d {
        metrics.nps_rolling.set(n);
    }
    for (b, n) in churn_model::Band::ALL.iter().zip(k.by_band) {
        metrics
            .customers_by_band
            .with_label_values(&[b.as_str()])
            .set(n as i64);
    }
    metrics.revenue_at_risk.set(k.revenue_at_risk);
    let last = metrics.checkpoint_last_success.get();
    if last > 0.0 {
        metrics
            .checkpoint_age
            .set((Utc::now().timestamp() as f64 - last).max(0.0));
    }
    metrics.churn_rate.set(k.churned_fraction);
    if let Some(psi) = k.score_psi {
        metrics.score_psi.set(psi);
    }
}

/// `churn_model_feature_psi{feature}`, recomputed once per closed day ([`Engine::feature_psi`]
/// over a sample of `pipeline.drift_sample` customers; 0 = off). A feature's series appears
/// with its first value (never a placeholder 0); its handle is cached from then on.
struct LiveDrift {
    gauges: HashMap<String, prometheus::Gauge>,
    sample: usize,
    day: Option<i32>,
}

impl LiveDrift {
    fn new(sample: usize) -> Self {
        LiveDrift {
            gauges: HashMap::new(),
            sample,
            day: None,
        }
    }

    /// Recompute when the low watermark's day moved (the model in use at that time: a swapped-in
    /// model keeps the feature names).
    fn update(&mut self, engine: &Engine, metrics: &Metrics) -> Result<(), Error> {
        let day = engine.watermark().map(churn_features::day_of);
        if self.sample == 0 || day.is_none() || day == self.day {
            return Ok(());
        }
        self.day = day;
        let started = Instant::now();
        let psi = engine.feature_psi(self.sample)?;
        for (name, v) in &psi {
            let g = match self.gauges.get(name) {
                Some(g) => g,
                None => self
                    .gauges
                    .entry(name.clone())
                    .or_insert_with(|| metrics.feature_psi_vec.with_label_values(&[name.as_str()])),
            };
            g.set(*v);
        }
        debug!(
            features = psi.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "live feature drift"
        );
        Ok(())
    }
}

/// The model files a running service watches ([`rollout`]).
struct ModelFiles {
    /// `model.path` (None: `model.reload_interval_s` = 0).
    live: Option<rollout::Watched>,
    /// `model.shadow_path`.
    shadow: Option<rollout::Watched>,
}

impl ModelFiles {
    /// Look at both files; swap in what changed and validates, refuse the rest (the previous
    /// model keeps serving), and record the models in `churn_model_info`.
    fn reload(&mut self, cfg: &Config, engine: &mut Engine, metrics: &Metrics) {
        if let Some(w) = self.live.as_mut() {
            match w.poll() {
                rollout::Poll::Unchanged => {}
                rollout::Poll::Missing(e) => warn!(
                    path = %w.path().display(),
                    error = %e,
                    version = %engine.model().model_version,
                    "model file gone: the loaded model keeps serving"
                ),
                rollout::Poll::Changed(text) => {
                    let previous = engine.model().model_version.clone();
                    let swapped = rollout::load_text(&text, w.path(), cfg)
                        .and_then(|m| engine.replace_model(Arc::new(m)));
                    match swapped {
                        Ok(()) => {
                            metrics.model_reload("live", "loaded").inc();
                            info!(path = %w.path().display(), version = %engine.model().model_version, previous = %previous, "new model swapped in");
                        }
                        Err(e) => {
                            metrics.model_reload("live", "refused").inc();
                            error!(path = %w.path().display(), error = %e, version = %previous, "new model refused: the previous model keeps serving");
                        }
                    }
                }
            }
        }
        if let Some(w) = self.shadow.as_mut() {
            match w.poll() {
                rollout::Poll::Unchanged => {}
                rollout::Poll::Missing(e) => {
                    if let Some(old) = engine.shadow().map(|m| m.model_version.clone()) {
                        info!(path = %w.path().display(), error = %e, version = %old, "shadow model file gone: shadow scoring stopped");
                    }
                    // Never fails: no model to check.
                    let _ = engine.set_shadow(None);
                }
                rollout::Poll::Changed(text) => {
                    let loaded = rollout::load_text(&text, w.path(), cfg)
                        .and_then(|m| engine.set_shadow(Some(Arc::new(m))));
                    match loaded {
                        Ok(()) => {
                            metrics.model_reload("shadow", "loaded").inc();
                            info!(path = %w.path().display(), version = ?engine.shadow().map(|m| &m.model_version), topic = %cfg.topics.shadow_scores, "shadow model scoring");
                        }
                        Err(e) => {
                            metrics.model_reload("shadow", "refused").inc();
                            error!(path = %w.path().display(), error = %e, "shadow model refused");
                        }
                    }
                }
            }
        }
        let live = engine.model();
        let auc = live
            .metrics
            .get("test_auc")
            .or(live.metrics.get("valid_auc"))
            .copied();
        metrics.set_models(
            &live.model_version,
            auc,
            engine.shadow().map(|m| m.model_version.as_str()),
        );
    }
}

/// Run the streaming service until `shutdown` is cancelled. See module docs for the semantics.
pub async fn run(
    cfg: Config,
    model: Arc<ModelArtifact>,
    metrics: Arc<Metrics>,
    health: Health,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    cfg.check_model_catalog(&model)?;
    let mut engine = Engine::new(model.clone(), cfg.pipeline.clone(), cfg.alerts.clone())?;
    // Model files re-read every `model.reload_interval_s` (the live one as loaded at start-up;
    // a shadow candidate from its first look).
    let reloading = cfg.model.reload_interval_s > 0;
    let mut models = ModelFiles {
        live: reloading.then(|| rollout::Watched::new(&cfg.model.path)),
        shadow: cfg
            .model
            .shadow_path
            .as_deref()
            .map(rollout::Watched::unseen),
    };
    models.reload(&cfg, &mut engine, &metrics);
    let mut reload = tokio::time::interval(Duration::from_secs(cfg.model.reload_interval_s.max(1)));
    reload.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    metrics.set_experiment(&cfg.alerts.holdout_salt, cfg.alerts.holdout_share);
    let mut drift = LiveDrift::new(cfg.pipeline.drift_sample);
    let stage = match cfg.pipeline.stage {
        Stage::Ingest => {
            return Err(Error::Config {
                path: "pipeline.stage".into(),
                message: "the ingest stage runs with kafka::run_ingest (it needs no model)".into(),
            })
        }
        Stage::All => "ingest",
        Stage::Score => "score",
    };
    prepare_topics(&cfg).await?;
    let consumer = consumer(&cfg, metrics.clone())?;
    let mut sink = Sink::new(producer(&cfg)?);
    let inputs = cfg.consumed_topics();
    let raw = cfg.topics.inputs();
    consumer.subscribe(&inputs)?;
    info!(brokers = %cfg.kafka.brokers, topics = ?inputs, group = %cfg.group_id(), stage = cfg.pipeline.stage.as_str(), "consuming");
    let counters = IngestCounters::new(&metrics, &inputs);

    let max = cfg.pipeline.batch_max_events;
    let dlq_limit = dlq_record_limit(&cfg);
    let wait = Duration::from_millis(cfg.pipeline.batch_max_wait_ms);
    let mut sweep =
        tokio::time::interval(Duration::from_secs(cfg.pipeline.sweep_interval_s.max(1)));
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut track = Track {
        sources: SourceIds {
            ids: BTreeMap::new(),
        },
        offsets: BTreeMap::new(),
        positions: Positions::default(),
        owned: Default::default(),
        restored: false,
        health: health.clone(),
        late_events: 0,
        partition_moves: 0,
        catalog_other: 0,
    };
    // (the service loop's three checkpoints: after every batch, on a sweep, at shutdown)
    macro_rules! checkpoint {
        () => {
            checkpoint(
                &mut sink,
                &cfg,
                &mut engine,
                &consumer,
                &mut track,
                &metrics,
            )
            .await?
        };
    }

    health.watch(Duration::from_secs(cfg.pipeline.liveness_timeout_s));
    'outer: loop {
        // A round of the loop (a batch or a sweep tick) is progress: /healthz stays 200.
        health.beat();
        // Wait for the first message of a batch, a sweep tick, or shutdown.
        let first = tokio::select! {
            _ = shutdown.cancelled() => break 'outer,
            _ = sweep.tick() => {
                apply_state_changes(consumer.context(), &mut engine, &metrics, &mut track)?;
                update_backlog(consumer.context(), &mut engine, &mut track, &metrics);
                // Idle sources release their partitions' clocks here: the days they close are
                // scored (silent customers included) although no message came to trigger it.
                let scored = tokio::task::block_in_place(|| engine.sweep())?;
                metrics.sweeps.inc();
                metrics.sweep_rescored.inc_by(scored.scores.len() as u64);
                metrics.forgotten_silent.inc_by(scored.forgotten_silent as u64);
                metrics.forgotten_cap.inc_by(scored.forgotten_cap as u64);
                if scored.forgotten_cap > 0 {
                    warn!(
                        forgotten = scored.forgotten_cap,
                        max_customers = cfg.pipeline.max_customers,
                        "customer cap reached: least recently active customers forgotten"
                    );
                }
                publish(&mut sink, &cfg, &metrics, &scored).await?;
                checkpoint!();
                export_kpis(&engine, &metrics);
                tokio::task::block_in_place(|| drift.update(&engine, &metrics))?;
                continue;
            }
            _ = reload.tick(), if reloading || models.shadow.is_some() => {
                // Between two batches: the swap is atomic for every score that follows.
                tokio::task::block_in_place(|| models.reload(&cfg, &mut engine, &metrics));
                continue;
            }
            m = consumer.recv() => m,
        };
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + wait;
        let mut n = 0usize;
        let mut next = Some(first);
        let now = Utc::now();
        while let Some(m) = next.take() {
            // State for newly assigned partitions is in place before their first message.
            apply_state_changes(consumer.context(), &mut engine, &metrics, &mut track)?;
            match m {
                Ok(msg) => {
                    n += 1;
                    let topic = msg.topic();
                    let (partition, offset) = (msg.partition(), msg.offset());
                    let payload = msg.payload().unwrap_or(&[]);
                    counters.consumed(topic);
                    // Event-time sources are raw topic-partitions in every stage: behind the
                    // ingest stage the raw topic is the `source.topic` header.
                    let clock_topic = if cfg.pipeline.stage == Stage::Score {
                        header(&msg, "source.topic")
                            .filter(|t| raw.contains(t))
                            .unwrap_or(topic)
                    } else {
                        topic
                    };
                    let source = track.sources.id(clock_topic, partition);
                    let origin = Origin {
                        source,
                        topic: inputs.iter().position(|t| *t == topic).unwrap_or(0),
                        partition,
                        offset,
                    };
                    if let Some(expected) = track.positions.arrived(origin.topic, partition, offset)
                    {
                        // Not a replay: the log itself starts again below what was consumed.
                        let customers = engine.input_offsets_reset(origin.topic, partition, offset);
                        metrics.offset_resets.with_label_values(&[topic]).inc();
                        error!(
                            topic,
                            partition,
                            offset,
                            expected,
                            customers,
                            "offsets went back (topic deleted and recreated, or the broker lost its log): the state's offsets of the old log are forgotten and these events are applied"
                        );
                    }
                    match engine.ingest_from(payload, msg.key(), origin, started, now) {
                        Ingest::Accepted => {}
                        Ingest::Duplicate => metrics.duplicates_dropped.inc(),
                        Ingest::Rejected(r) => {
                            counters.rejected(r.code());
                            dead_letter(&mut sink, &cfg, &msg, &r.to_string(), stage, dlq_limit)
                                .await?;
                        }
                    }
                    note_offset(&mut track.offsets, topic, partition, offset);
                }
                Err(e) => warn!(error = %e, "consumer error"),
            }
            if n >= max {
                break;
            }
            next = tokio::select! {
                _ = tokio::time::sleep_until(deadline) => None,
                m = consumer.recv() => Some(m),
            };
        }
        // A rebalance may have fired during the last `recv` even if the deadline won the race:
        // apply it now, so nothing of a revoked partition is scored, persisted (a zombie
        // changelog write after its new owner restored) or committed.
        apply_state_changes(consumer.context(), &mut engine, &metrics, &mut track)?;
        update_backlog(consumer.context(), &mut engine, &mut track, &metrics);
        let t_score = Instant::now();
        let scored = tokio::task::block_in_place(|| engine.score_dirty())?;
        metrics
            .scoring_duration
            .observe(t_score.elapsed().as_secs_f64());
        publish(&mut sink, &cfg, &metrics, &scored).await?;
        checkpoint!();
        metrics.batch_events.observe(n as f64);
        metrics
            .batch_duration
            .observe(started.elapsed().as_secs_f64());
    }

    info!("shutting down: checkpointing state, flushing producer and committing offsets");
    set_ready(&health, &metrics, false);
    checkpoint!();
    sink.producer.flush(Duration::from_secs(10))?;
    commit_sync(&consumer)
}

/// A checkpoint, after every batch: every output sent so far acknowledged, then the state of every
/// customer changed since the last checkpoint written and acknowledged, then the offsets of
/// everything ingested since stored. Outputs before the state that remembers them: a crash in between re-emits the
/// outputs (same ids) instead of losing them. State before offsets: a crash in between re-reads
/// events the restored state already holds, and the replay guard skips them.
async fn checkpoint(
    sink: &mut Sink,
    cfg: &Config,
    engine: &mut Engine,
    consumer: &StreamConsumer<ServiceContext>,
    track: &mut Track,
    metrics: &Metrics,
) -> Result<(), Error> {
    sink.flush(metrics).await?;
    persist_state(sink, cfg, engine, consumer.context()).await?;
    sink.flush(metrics).await?;
    metrics
        .checkpoint_last_success
        .set(Utc::now().timestamp() as f64);
    store_offsets(consumer, &mut track.offsets, metrics)
}

/// A header of `msg` as UTF-8 (the last one if the key repeats).
fn header<'a>(msg: &'a BorrowedMessage<'_>, key: &str) -> Option<&'a str> {
    msg.headers()?
        .iter()
        .filter(|h| h.key == key)
        .filter_map(|h| h.value.and_then(|v| std::str::from_utf8(v).ok()))
        .last()
}

/// The ingest stage alone (`--stage ingest`): consume the raw input topics (group
/// `<kafka.group_id>-ingest`), decode and validate every message, drop duplicate event ids,
/// dead-letter the bad ones, and forward the good ones — original bytes and headers, plus
/// `source.*` lineage — to `topics.events`, keyed by customer id, for `--stage score`. Stateless
/// apart from the dedupe window; offsets are stored only after every forwarded and dead-lettered
/// record of the batch is acknowledged, exactly as in [`run`].
pub async fn run_ingest(
    cfg: Config,
    metrics: Arc<Metrics>,
    health: Health,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    if cfg.pipeline.stage != Stage::Ingest {
        return Err(Error::Config {
            path: "pipeline.stage".into(),
            message: format!(
                "run_ingest runs the ingest stage, not `{}`",
                cfg.pipeline.stage.as_str()
            ),
        });
    }
    prepare_topics(&cfg).await?;
    let consumer = consumer(&cfg, metrics.clone())?;
    let mut sink = Sink::new(producer(&cfg)?);
    let inputs = cfg.consumed_topics();
    consumer.subscribe(&inputs)?;
    info!(brokers = %cfg.kafka.brokers, topics = ?inputs, group = %cfg.group_id(), to = %cfg.topics.events, "ingest stage consuming");
    let counters = IngestCounters::new(&metrics, &inputs);
    let limits = crate::engine::decode_limits(&cfg.pipeline);
    let mut dedupe = crate::engine::Dedupe::new(cfg.pipeline.dedupe_window);
    let max = cfg.pipeline.batch_max_events;
    let dlq_limit = dlq_record_limit(&cfg);
    let wait = Duration::from_millis(cfg.pipeline.batch_max_wait_ms);
    let mut offsets: BTreeMap<(String, i32), i64> = BTreeMap::new();
    let mut ready = false;
    // Revocations: drop the partition's pending offsets (the next owner re-reads them) and the
    // dedupe window (so re-deliveries are not taken for duplicates if it comes back).
    let mut apply = |offsets: &mut BTreeMap<(String, i32), i64>,
                     dedupe: &mut crate::engine::Dedupe|
     -> Result<(), Error> {
        for c in consumer.context().take() {
            match c {
                StateChange::Revoke(p) => {
                    offsets.retain(|(_, q), _| *q != p);
                    dedupe.clear();
                    info!(partition = p, "partition revoked");
                }
                StateChange::Restore { .. } if !ready => {
                    ready = true;
                    set_ready(&health, &metrics, true);
                }
                StateChange::Restore { .. } => {}
                StateChange::Failed(m) => return Err(Error::Produce(m)),
            }
        }
        Ok(())
    };

    // Liveness: a round of the loop (a batch, or the heartbeat tick while idle) is progress.
    health.watch(Duration::from_secs(cfg.pipeline.liveness_timeout_s));
    let mut heartbeat = tokio::time::interval(Duration::from_secs(5));
    'outer: loop {
        health.beat();
        let first = tokio::select! {
            _ = shutdown.cancelled() => break 'outer,
            _ = heartbeat.tick() => continue,
            m = consumer.recv() => m,
        };
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + wait;
        let mut n = 0usize;
        let mut next = Some(first);
        let now = Utc::now();
        while let Some(m) = next.take() {
            apply(&mut offsets, &mut dedupe)?;
            match m {
                Ok(msg) => {
                    n += 1;
                    let (topic, partition, offset) = (msg.topic(), msg.partition(), msg.offset());
                    counters.consumed(topic);
                    let payload = msg.payload().unwrap_or(&[]);
                    let decoded = churn_events::decode(payload, now, &limits)
                        .and_then(|ev| churn_events::check_key(msg.key(), &ev).map(|()| ev));
                    let headers_len = header_bytes(&msg);
                    match decoded {
                        Ok(ev) if dedupe.check(&ev.customer_id, &ev.event_id) => {
                            metrics.duplicates_dropped.inc()
                        }
                        Ok(_) if headers_len > crate::dlq::MAX_HEADER_BYTES => {
                            // Forwarded whole, it could exceed the producer's limit and stop
                            // the stage on every restart: dead-lettered (headers cut) instead.
                            counters.rejected("oversize");
                            let reason = format!(
                                "oversize: headers of {headers_len} bytes (more than {})",
                                crate::dlq::MAX_HEADER_BYTES
                            );
                            dead_letter(&mut sink, &cfg, &msg, &reason, "ingest", dlq_limit)
                                .await?;
                        }
                        Ok(ev) => {
                            let headers = lineage_headers(msg.headers(), topic, partition, offset);
                            sink.send(
                                &cfg.topics.events,
                                Some(ev.customer_id.as_bytes()),
                                payload,
                                Some(headers),
                                Kind::Event,
                                None,
                            )
                            .await?;
                        }
                        Err(r) => {
                            counters.rejected(r.code());
                            dead_letter(&mut sink, &cfg, &msg, &r.to_string(), "ingest", dlq_limit)
                                .await?;
                        }
                    }
                    note_offset(&mut offsets, topic, partition, offset);
                }
                Err(e) => warn!(error = %e, "consumer error"),
            }
            if n >= max {
                break;
            }
            next = tokio::select! {
                _ = tokio::time::sleep_until(deadline) => None,
                m = consumer.recv() => Some(m),
            };
        }
        apply(&mut offsets, &mut dedupe)?;
        sink.flush(&metrics).await?;
        store_offsets(&consumer, &mut offsets, &metrics)?;
        metrics.batch_events.observe(n as f64);
        metrics
            .batch_duration
            .observe(started.elapsed().as_secs_f64());
    }

    info!("ingest stage shutting down: flushing producer and committing offsets");
    set_ready(&health, &metrics, false);
    sink.flush(&metrics).await?;
    sink.producer.flush(Duration::from_secs(10))?;
    store_offsets(&consumer, &mut offsets, &metrics)?;
    commit_sync(&consumer)
}

/// Cached handles for what both consuming loops count per message: consumed messages by topic
/// and rejections by reason.
struct IngestCounters {
    consumed: Vec<(String, prometheus::IntCounter)>,
    rejected: BTreeMap<&'static str, prometheus::IntCounter>,
}

impl IngestCounters {
    fn new(metrics: &Metrics, topics: &[&str]) -> Self {
        IngestCounters {
            consumed: topics
                .iter()
                .map(|t| (t.to_string(), metrics.consumed(t)))
                .collect(),
            rejected: churn_events::Rejection::CODES
                .iter()
                .map(|c| (*c, metrics.events_rejected.with_label_values(&[c])))
                .collect(),
        }
    }

    fn consumed(&self, topic: &str) {
        if let Some((_, c)) = self.consumed.iter().find(|(t, _)| t == topic) {
            c.inc();
        }
    }

    fn rejected(&self, code: &str) {
        if let Some(c) = self.rejected.get(code) {
            c.inc();
        }
    }
}

/// Remember the newest consumed offset of a topic-partition (stored at the next checkpoint).
fn note_offset(
    offsets: &mut BTreeMap<(String, i32), i64>,
    topic: &str,
    partition: i32,
    offset: i64,
) {
    let e = offsets
        .entry((topic.to_string(), partition))
        .or_insert(offset);
    *e = (*e).max(offset);
}

/// `/readyz` and `churn_pipeline_ready` together.
fn set_ready(health: &Health, metrics: &Metrics, ready: bool) {
    health.set_ready(ready);
    metrics.ready.set(i64::from(ready));
}

/// The final synchronous commit of the stored offsets (none stored is fine).
fn commit_sync(consumer: &StreamConsumer<ServiceContext>) -> Result<(), Error> {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn store_offsets(
    consumer: &StreamConsumer<ServiceContext>,
    offsets: &mut BTreeMap<(String, i32), i64>,
    metrics: &Metrics,
) -> Result<(), Error> {
    if offsets.is_empty() {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    for ((t, p), o) in offsets.iter() {
        tpl.add_partition_offset(t, *p, Offset::Offset(o + 1))?;
    }
    match consumer.store_offsets(&tpl) {
        Ok(()) => metrics.offsets_stored.inc_by(offsets.len() as u64),
        // A partition revoked by a rebalance cannot be stored; its new owner re-reads it.
        Err(e) => warn!(error = %e, "storing offsets failed for some partitions"),
    }
    offsets.clear();
    Ok(())
}

/// Publishes input events (file → Kafka): topic by event type, key = customer_id, optional
/// target rate. Used by `churnstream replay`, `generate --publish` and the tests.
pub struct Publisher {
    topics: crate::config::TopicsConfig,
    sink: Sink,
    metrics: Metrics,
    sent: usize,
}

impl Publisher {
    pub fn new(cfg: &Config) -> Result<Self, Error> {
        Ok(Publisher {
            topics: cfg.topics.clone(),
            sink: Sink::new(producer(cfg)?),
            metrics: Metrics::new(),
            sent: 0,
        })
    }

    /// Topic of an event under this configuration.
    pub fn topic_of(&self, ev: &churn_events::Event) -> &str {
        use churn_events::Payload as P;
        match ev.payload {
            P::Purchase(_) => &self.topics.purchases,
            P::Engagement(_) => &self.topics.engagement,
            P::Feedback(_) => &self.topics.feedback,
            P::Subscription(_) => &self.topics.subscriptions,
        }
    }

    pub async fn send_event(&mut self, ev: &churn_events::Event) -> Result<(), Error> {
        let topic = self.topic_of(ev).to_string();
        self.send_raw(&topic, Some(ev.customer_id.as_bytes()), &ev.to_json())
            .await
    }

    /// Send arbitrary bytes (e.g. malformed input in tests).
    pub async fn send_raw(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
    ) -> Result<(), Error> {
        self.sink
            .send(topic, key, payload, None, Kind::Event, None)
            .await?;
        self.sent += 1;
        if self.sink.pending.len() >= 20_000 {
            self.sink.flush(&self.metrics).await?;
        }
        Ok(())
    }

    /// Wait until everything sent is acknowledged. Returns how many messages were sent.
    pub async fn flush(&mut self) -> Result<usize, Error> {
        self.sink.flush(&self.metrics).await?;
        Ok(self.sent)
    }

    /// Send all events, paced at `rate` events/s when given.
    pub async fn send_all(
        &mut self,
        events: &[churn_events::Event],
        rate: Option<f64>,
    ) -> Result<usize, Error> {
        let t0 = Instant::now();
        for (i, ev) in events.iter().enumerate() {
            self.send_event(ev).await?;
            if let Some(r) = rate.filter(|r| *r > 0.0) {
                if i % 256 == 255 {
                    let due = Duration::from_secs_f64((i + 1) as f64 / r);
                    if let Some(wait) = due.checked_sub(t0.elapsed()) {
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        }
        self.flush().await
    }
}

/// Consume `topic` from the beginning with a throw-away group and hand each record (key,
/// payload, headers as pairs) to `f` until `shutdown` is cancelled or `f` returns false.
pub async fn tail(
    cfg: &Config,
    topic: &str,
    shutdown: CancellationToken,
    mut f: impl FnMut(Option<&[u8]>, &[u8], Vec<(String, String)>) -> bool,
) -> Result<(), Error> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.kafka.brokers)
        .set(
            "group.id",
            format!("churnstream-tail-{}", std::process::id()),
        )
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    for (k, v) in cfg.kafka.client.iter().chain(&cfg.kafka.consumer) {
        c.set(k, v);
    }
    let consumer: StreamConsumer = c.create()?;
    consumer.subscribe(&[topic])?;
    loop {
        let m = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            m = consumer.recv() => m?,
        };
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|x| {
                        (
                            x.key.to_string(),
                            String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        if !f(m.key(), m.payload().unwrap_or_default(), headers) {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{unread_before_first, Positions};

    #[test]
    fn positions_report_offsets_that_go_back_and_nothing_else() {
        let mut p = Positions::default();
        assert_eq!(
            p.arrived(0, 3, 10),
            None,
            "no start known: nothing to compare"
        );
        assert_eq!(p.arrived(0, 3, 11), None);
        assert_eq!(
            p.arrived(0, 3, 15),
            None,
            "a gap forward (compaction) is normal"
        );
        assert_eq!(p.arrived(0, 3, 2), Some(16), "went back");
        assert_eq!(p.arrived(0, 3, 3), None, "the new log goes on");
        assert_eq!(
            p.arrived(1, 3, 0),
            None,
            "another topic has its own position"
        );
        p.start(2, 4, 100);
        assert_eq!(
            p.arrived(2, 4, 0),
            Some(100),
            "first message below the committed offset"
        );
        p.start(2, 4, 100);
        assert_eq!(
            p.arrived(2, 4, 100),
            None,
            "resumed at the committed offset"
        );
        p.forget(4);
        assert_eq!(p.arrived(2, 4, 0), None, "forgotten on revoke");
        assert_eq!(p.arrived(0, 3, 1), Some(4), "other partitions kept");
    }

    #[test]
    fn records_the_fetcher_has_not_reached_are_waiting() {
        assert_eq!(unread_before_first(10, 250, 0), Some(240));
        assert_eq!(unread_before_first(0, 1, 0), Some(1));
    }

    #[test]
    fn fetched_records_still_queued_are_waiting_and_an_empty_queue_at_the_end_is_not() {
        // The fetcher is at the end, the queue holds records (maybe of this partition).
        assert_eq!(unread_before_first(250, 250, 3000), Some(3000));
        // Fetched to the end, queue drained, nothing delivered: nothing is waiting.
        assert_eq!(unread_before_first(250, 250, 0), Some(0));
        // A watermark below the fetch position (tansu's memory engine): the queue decides.
        assert_eq!(unread_before_first(300, 250, 0), Some(0));
        assert_eq!(unread_before_first(300, 250, 5), Some(5));
    }

    #[test]
    fn before_fetching_starts_nothing_is_known() {
        assert_eq!(unread_before_first(-1001, 250, 9), None);
        assert_eq!(unread_before_first(10, -1, 9), None);
    }
}
