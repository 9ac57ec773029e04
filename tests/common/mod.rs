//! Shared fixtures for the integration tests: the real local broker, unique topic names, and
//! small helpers to read topics back.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};

/// Address of the real Kafka-protocol broker the tests run against. `make test` (scripts/test.sh)
/// starts tansu and sets CHURN_TEST_BROKERS; there is no mock fallback.
pub fn brokers() -> String {
    std::env::var("CHURN_TEST_BROKERS").unwrap_or_else(|_| {
        panic!("CHURN_TEST_BROKERS is not set: run the integration tests with `make test` (scripts/test.sh starts the local tansu broker)")
    })
}

/// A short random suffix for topic and group names (`__<test>_<rand>` style).
pub fn unique(prefix: &str) -> String {
    use rand::Rng;
    let n: u32 = rand::thread_rng().gen();
    format!("__{prefix}_{n:08x}")
}

/// Create topics (tansu has no auto-creation).
pub async fn create_topics(brokers: &str, topics: &[(&str, i32)]) {
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|(t, p)| NewTopic::new(t, *p, TopicReplication::Fixed(1)))
        .collect();
    create(brokers, &new).await;
}

/// Create one-partition `topic` with `cleanup.policy` = `policy`.
pub async fn create_with_policy(brokers: &str, topic: &str, policy: &str) {
    let t = NewTopic::new(topic, 1, TopicReplication::Fixed(1)).set("cleanup.policy", policy);
    create(brokers, &[t]).await;
}

fn admin(brokers: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client")
}

async fn create(brokers: &str, new: &[NewTopic<'_>]) {
    let res = admin(brokers)
        .create_topics(
            new,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create_topics request");
    for r in res {
        if let Err((t, e)) = r {
            panic!("creating topic {t}: {e}");
        }
    }
}

/// Delete `topics` (their committed offsets go with them on Kafka and tansu).
pub async fn delete_topics(brokers: &str, topics: &[&str]) {
    let res = admin(brokers)
        .delete_topics(
            topics,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("delete_topics request");
    for r in res {
        if let Err((t, e)) = r {
            panic!("deleting topic {t}: {e}");
        }
    }
}

/// A record read back from a topic.
#[derive(Debug, Clone)]
pub struct Record {
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
    pub partition: i32,
    pub offset: i64,
}

impl Record {
    /// Copy of a consumed message.
    pub fn of<M: Message>(m: &M) -> Record {
        Record {
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().unwrap_or_default().to_vec(),
            headers: m
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
                .unwrap_or_default(),
            partition: m.partition(),
            offset: m.offset(),
        }
    }

    pub fn header(&self, k: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(a, _)| a == k)
            .map(|(_, v)| v.as_str())
    }
}

/// Read a topic from the beginning until `want` records arrived or nothing came for `idle`.
pub async fn read_topic(brokers: &str, topic: &str, want: usize, idle: Duration) -> Vec<Record> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut out = Vec::new();
    while out.len() < want {
        match tokio::time::timeout(idle, consumer.recv()).await {
            Ok(Ok(m)) => out.push(Record::of(&m)),
            Ok(Err(e)) => panic!("consuming {topic}: {e}"),
            Err(_) => break,
        }
    }
    out
}

/// GET a path from a local HTTP server, returning (status, body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Value of a metric sample line (`name{labels} value`) in Prometheus text format.
pub fn metric(body: &str, series: &str) -> Option<f64> {
    body.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.trim().parse().ok())
    })
}

/// A pipeline configuration on fresh, unique topics (created here, `parts` partitions each) and a
/// fresh consumer group, on the shared test broker.
pub async fn pipeline_config(name: &str, parts: i32) -> churn_pipeline::Config {
    pipeline_config_on(&brokers(), name, parts).await
}

/// [`pipeline_config`] on a given broker. The changelog topic is left to the pipeline, which
/// creates it co-partitioned with the inputs.
pub async fn pipeline_config_on(brokers: &str, name: &str, parts: i32) -> churn_pipeline::Config {
    let s = unique(name);
    let mut cfg = churn_pipeline::Config::default();
    cfg.kafka.brokers = brokers.to_string();
    cfg.kafka.group_id = format!("{s}_group");
    let t = &mut cfg.topics;
    t.purchases = format!("{s}_purchases");
    t.engagement = format!("{s}_engagement");
    t.feedback = format!("{s}_feedback");
    t.subscriptions = format!("{s}_subscriptions");
    t.alerts = format!("{s}_alerts");
    t.scores = format!("{s}_scores");
    t.dlq = format!("{s}_dlq");
    t.changelog = format!("{s}_changelog");
    let names = [
        &t.purchases,
        &t.engagement,
        &t.feedback,
        &t.subscriptions,
        &t.alerts,
        &t.scores,
    ];
    let mut topics: Vec<(&str, i32)> = names.iter().map(|n| (n.as_str(), parts)).collect();
    topics.push((t.dlq.as_str(), 1));
    create_topics(brokers, &topics).await;
    cfg.metrics.listen = "127.0.0.1:0".into();
    cfg
}

/// Small batches, a 30-day warm-up, a 1 s sweep, and a short consumer session (6 s, heartbeat
/// 1 s, passed verbatim to librdkafka) so a killed or departed member leaves the group quickly.
pub fn quick_member(cfg: &mut churn_pipeline::Config) {
    cfg.pipeline.batch_max_events = 400;
    cfg.pipeline.batch_max_wait_ms = 50;
    cfg.pipeline.warmup_days = 30;
    cfg.pipeline.sweep_interval_s = 1;
    cfg.kafka
        .consumer
        .insert("session.timeout.ms".into(), "6000".into());
    cfg.kafka
        .consumer
        .insert("heartbeat.interval.ms".into(), "1000".into());
}

/// A generated population and a model trained on it (default bands) with an observation plan
/// whose warm-up is `warmup_days`; also the training summary.
pub fn population_and_model(
    customers: usize,
    days: u32,
    seed: u64,
    warmup_days: i32,
) -> (
    churn_gen::Population,
    churn_model::ModelArtifact,
    churn_pipeline::train::TrainSummary,
) {
    churn_pipeline::train::synthetic(
        &churn_gen::GenConfig {
            customers,
            days,
            seed,
            ..Default::default()
        },
        &churn_features::training::ObservationPlan {
            warmup_days,
            ..Default::default()
        },
    )
    .expect("model")
}

/// The default observation plan's warm-up (what `churnstream train` uses).
pub fn default_warmup() -> i32 {
    churn_features::training::ObservationPlan::default().warmup_days
}

/// The pipeline running in-process with its metrics endpoint on `cfg.metrics.listen`.
pub struct Served {
    pub metrics: std::sync::Arc<churn_metrics::Metrics>,
    pub addr: std::net::SocketAddr,
    shutdown: tokio_util::sync::CancellationToken,
    server: tokio::task::JoinHandle<churn_metrics::Result<()>>,
    pipeline: tokio::task::JoinHandle<Result<(), churn_pipeline::Error>>,
}

/// Start `kafka::run` and the metrics server (`/metrics`, `/healthz`, `/readyz`).
pub async fn serve(cfg: &churn_pipeline::Config, model: churn_model::ModelArtifact) -> Served {
    let metrics = std::sync::Arc::new(churn_metrics::Metrics::new());
    let health = churn_metrics::Health::default();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let listener = churn_metrics::bind(&cfg.metrics.listen)
        .await
        .expect("bind metrics");
    let addr = listener.local_addr().expect("metrics addr");
    let server = tokio::spawn(churn_metrics::serve(
        listener,
        metrics.clone(),
        health.clone(),
        shutdown.child_token(),
    ));
    let pipeline = tokio::spawn(churn_pipeline::kafka::run(
        cfg.clone(),
        std::sync::Arc::new(model),
        metrics.clone(),
        health,
        shutdown.child_token(),
    ));
    Served {
        metrics,
        addr,
        shutdown,
        server,
        pipeline,
    }
}

impl Served {
    /// Graceful stop (as on SIGTERM): the pipeline must exit cleanly.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.pipeline
            .await
            .expect("join pipeline")
            .expect("pipeline exits cleanly");
        let _ = self.server.await;
    }
}

/// The newest changelog record per customer (by partition offset).
pub async fn latest_state(
    cfg: &churn_pipeline::Config,
) -> std::collections::BTreeMap<String, churn_pipeline::engine::Snapshot> {
    latest_state_except(cfg, &[]).await
}

/// [`latest_state`] without the records of the keys in `skip` (records a test planted that are
/// not state records).
pub async fn latest_state_except(
    cfg: &churn_pipeline::Config,
    skip: &[&str],
) -> std::collections::BTreeMap<String, churn_pipeline::engine::Snapshot> {
    let records = tokio::task::block_in_place(|| {
        read_topic_to_end(&cfg.kafka.brokers, &cfg.topics.changelog)
    });
    // In (partition, offset) order, each record once: a reader may see a range twice (tansu's
    // sqlite engine compacts the changelog, and a fetch below the new start is reset to it).
    let ordered: std::collections::BTreeMap<(i32, i64), &Record> = records
        .iter()
        .map(|r| ((r.partition, r.offset), r))
        .collect();
    let mut latest = std::collections::BTreeMap::new();
    for r in ordered.values() {
        if r.key.as_deref() == Some(churn_pipeline::kafka::RESTORE_MARKER_KEY) {
            continue;
        }
        let key = String::from_utf8(r.key.clone().unwrap_or_default()).expect("utf8 key");
        if skip.contains(&key.as_str()) {
            continue;
        }
        if r.payload.is_empty() {
            // tombstone: the customer was forgotten
            latest.remove(&key);
            continue;
        }
        latest.insert(
            key,
            churn_pipeline::engine::Snapshot::decode(
                churn_pipeline::lineage::unwrap(&r.payload)
                    .expect("lineage")
                    .1,
            )
            .expect("snapshot"),
        );
    }
    latest
}

/// Every event is reflected exactly once: the state equals a batch fold of all `events`.
pub fn assert_exactly_once(
    latest: &std::collections::BTreeMap<String, churn_pipeline::engine::Snapshot>,
    events: &[churn_events::Event],
) {
    let batch = churn_features::rollups_from_events(events);
    assert_eq!(latest.len(), batch.len(), "every customer has state");
    for (id, want) in &batch {
        let got = &latest[id].rollups;
        assert_eq!(got.first_day, want.first_day, "{id}");
        assert_eq!(got.last_event, want.last_event, "{id}");
        assert_eq!(got.day_count(), want.day_count(), "{id}: days");
        for (a, b) in got.days().zip(want.days()) {
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
}

/// The alerts on the alerts topic by decision (customer, as-of day, band) → ids, asserting that
/// a decision has one id and an id one decision (duplicates only ever share an id).
pub async fn alert_ids_by_decision(
    cfg: &churn_pipeline::Config,
) -> std::collections::BTreeMap<(String, String, String), String> {
    let alerts = read_topic(
        &cfg.kafka.brokers,
        &cfg.topics.alerts,
        usize::MAX,
        Duration::from_secs(8),
    )
    .await;
    let mut by_decision = std::collections::BTreeMap::new();
    let mut by_id = std::collections::BTreeMap::new();
    for a in &alerts {
        let ev = any_alert(&a.payload);
        let decision = (ev.customer, ev.day, ev.band);
        let id = by_decision.entry(decision.clone()).or_insert(ev.id.clone());
        assert_eq!(*id, ev.id, "one id per (customer, day, band): {decision:?}");
        let d = by_id.entry(ev.id.clone()).or_insert(decision.clone());
        assert_eq!(*d, decision, "alert id {} maps to two decisions", ev.id);
    }
    by_decision
}

/// The end of a partition's log: one past the last offset a consumer can read. Never the broker's
/// reported high watermark alone (tansu's memory engine under-reports it for idempotent or
/// compressed batches): reads on from just below it until nothing comes for a second.
pub fn log_end(brokers: &str, topic: &str, partition: i32) -> i64 {
    log_ends(brokers, &[(topic.to_string(), partition)])[0]
}

/// [`log_end`] of several partitions, with one reader.
pub fn log_ends(brokers: &str, parts: &[(String, i32)]) -> Vec<i64> {
    use rdkafka::consumer::BaseConsumer;
    use rdkafka::{Offset, TopicPartitionList};
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("end"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("end reader");
    let mut tpl = TopicPartitionList::new();
    let mut ends = std::collections::BTreeMap::new();
    for (t, p) in parts {
        let (_, high) = c
            .fetch_watermarks(t, *p, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("watermarks of {t}[{p}]: {e}"));
        ends.insert((t.clone(), *p), high.max(0));
        tpl.add_partition_offset(t, *p, Offset::Offset((high - 1).max(0)))
            .expect("tpl");
    }
    c.assign(&tpl).expect("assign");
    while let Some(m) = c.poll(Duration::from_secs(1)) {
        let m = m.unwrap_or_else(|e| panic!("reading to the end of a log: {e}"));
        if let Some(e) = ends.get_mut(&(m.topic().to_string(), m.partition())) {
            *e = (*e).max(m.offset() + 1);
        }
    }
    parts.iter().map(|k| ends[k]).collect()
}

/// Every record of `topic`, each partition read from its beginning to its true end
/// ([`log_ends`]) — not until a quiet spell, which a loaded broker can fake.
pub fn read_topic_to_end(brokers: &str, topic: &str) -> Vec<Record> {
    use rdkafka::consumer::BaseConsumer;
    use rdkafka::{Offset, TopicPartitionList};
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("to-end"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader");
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let parts: Vec<(String, i32)> = md
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| (topic.to_string(), p.id())))
        .collect();
    let ends = log_ends(brokers, &parts);
    let mut left: std::collections::BTreeMap<i32, i64> = parts
        .iter()
        .zip(&ends)
        .filter(|(_, e)| **e > 0)
        .map(|((_, p), e)| (*p, *e))
        .collect();
    let mut tpl = TopicPartitionList::new();
    for p in left.keys() {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)
            .expect("tpl");
    }
    c.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    while !left.is_empty() {
        assert!(
            Instant::now() < deadline,
            "{topic}: not read to its end: {left:?}"
        );
        let Some(m) = c.poll(Duration::from_secs(1)) else {
            continue;
        };
        let m = m.unwrap_or_else(|e| panic!("reading {topic}: {e}"));
        if left
            .get(&m.partition())
            .is_some_and(|e| m.offset() + 1 >= *e)
        {
            left.remove(&m.partition());
        }
        out.push(Record::of(&m));
    }
    out
}

/// True once `group`'s committed offsets reached the end ([`log_end`]) of every partition `cfg`
/// consumes.
pub fn caught_up(cfg: &churn_pipeline::Config, group: &str, parts: i32) -> bool {
    use rdkafka::Offset;
    let Some(committed) = committed(cfg, group, parts) else {
        return false;
    };
    let parts: Vec<(String, i32)> = committed
        .elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect();
    let ends = log_ends(&cfg.kafka.brokers, &parts);
    committed
        .elements()
        .iter()
        .zip(ends)
        .all(|(e, end)| matches!(e.offset(), Offset::Offset(o) if o >= end) || end == 0)
}

/// Sum of `group`'s committed offsets over the partitions `cfg` consumes (progress through a
/// backlog).
pub fn committed_sum(cfg: &churn_pipeline::Config, group: &str, parts: i32) -> i64 {
    CommittedReader::new(cfg, group, parts).sum()
}

/// `group`'s committed offsets of partitions `0..parts` of every topic `cfg` consumes (None if
/// the coordinator did not answer).
fn committed(
    cfg: &churn_pipeline::Config,
    group: &str,
    parts: i32,
) -> Option<rdkafka::TopicPartitionList> {
    CommittedReader::new(cfg, group, parts).list()
}

/// `group`'s committed offsets, read again and again through one client (a new client per
/// read costs the broker a connection, metadata and a coordinator lookup each time).
pub struct CommittedReader {
    c: rdkafka::consumer::BaseConsumer,
    tpl: rdkafka::TopicPartitionList,
}

impl CommittedReader {
    pub fn new(cfg: &churn_pipeline::Config, group: &str, parts: i32) -> Self {
        let c = ClientConfig::new()
            .set("bootstrap.servers", &cfg.kafka.brokers)
            .set("group.id", group)
            .create()
            .expect("offset reader");
        let mut tpl = rdkafka::TopicPartitionList::new();
        for t in cfg.consumed_topics() {
            for p in 0..parts {
                tpl.add_partition(t, p);
            }
        }
        CommittedReader { c, tpl }
    }

    /// The committed offsets (None if the coordinator did not answer).
    pub fn list(&self) -> Option<rdkafka::TopicPartitionList> {
        self.c
            .committed_offsets(self.tpl.clone(), Duration::from_secs(5))
            .ok()
    }

    /// Sum of the committed offsets (0 where none; 0 in all if the coordinator did not answer).
    pub fn sum(&self) -> i64 {
        self.list()
            .map(|l| {
                l.elements()
                    .iter()
                    .map(|e| match e.offset() {
                        rdkafka::Offset::Offset(o) => o,
                        _ => 0,
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
}

/// Publish `events` to `cfg`'s input topics (every one acknowledged).
pub async fn publish(cfg: &churn_pipeline::Config, events: &[churn_events::Event]) {
    let mut publisher = churn_pipeline::kafka::Publisher::new(cfg).expect("publisher");
    let sent = publisher.send_all(events, None).await.expect("publish");
    assert_eq!(sent, events.len(), "every event published");
}

/// Start `churnstream run --config <config>` (the real binary), its log appended to `log`.
pub fn spawn_run(config: &Path, log: &Path) -> Child {
    spawn_run_as(config, log, None)
}

/// [`spawn_run`] as the static group member `instance` (`kafka.group_instance_id`), if given.
pub fn spawn_run_as(config: &Path, log: &Path, instance: Option<&str>) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_churnstream"));
    if let Some(id) = instance {
        cmd.env("CHURN__KAFKA__GROUP_INSTANCE_ID", id);
    }
    cmd.args(["run", "--config"])
        .arg(config)
        // CHURN_MEMBER_LOG overrides the members' RUST_LOG (e.g. `info,librdkafka=debug` with a
        // librdkafka `debug` context in the config).
        .env(
            "RUST_LOG",
            std::env::var("CHURN_MEMBER_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn churnstream run")
}

/// After a member caught up with its input: wait until its alerts stop coming. Every source goes
/// idle (`idle_source_ms`), a sweep closes the days, a checkpoint stores them; on a starved
/// machine that takes longer than any fixed pause, so: at least 5 s, then until the alerts
/// topic is unchanged for 5 s (at most a minute).
#[allow(dead_code)]
pub async fn wait_alerts_settled(cfg: &churn_pipeline::Config) {
    let count = || {
        tokio::task::block_in_place(|| {
            read_topic_to_end(&cfg.kafka.brokers, &cfg.topics.alerts).len()
        })
    };
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let mut seen = count();
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < give_up {
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        let now = count();
        if now == seen {
            return;
        }
        seen = now;
    }
}

/// The last 40 lines of a log file.
pub fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// [`wait_caught_up`], failing with the tail of the member's log.
pub async fn wait_caught_up_logged(cfg: &churn_pipeline::Config, parts: i32, log: &Path) {
    wait_caught_up_or(cfg, parts, || format!("log tail:\n{}", log_tail(log))).await
}

/// Wait (at most 180 s) until `cfg`'s consumer group ([`churn_pipeline::Config::group_id`]) has
/// committed the end of every partition it consumes.
pub async fn wait_caught_up(cfg: &churn_pipeline::Config, parts: i32) {
    wait_caught_up_or(cfg, parts, || format!("on {:?}", cfg.consumed_topics())).await
}

/// The wait of [`wait_caught_up`]; `context` says more in the failure message.
async fn wait_caught_up_or(cfg: &churn_pipeline::Config, parts: i32, context: impl Fn() -> String) {
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while !caught_up(cfg, &cfg.group_id(), parts) {
        assert!(
            std::time::Instant::now() < deadline,
            "group {} did not catch up {}",
            cfg.group_id(),
            context()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The customers with at least one alert on `cfg`'s alerts topic.
pub async fn alerted(cfg: &churn_pipeline::Config) -> std::collections::BTreeSet<String> {
    read_topic(
        &cfg.kafka.brokers,
        &cfg.topics.alerts,
        usize::MAX,
        Duration::from_secs(8),
    )
    .await
    .iter()
    .map(|r| any_alert(&r.payload).customer)
    .collect()
}

/// An alert of either kind (at risk or lapsed), as the tests compare them.
pub struct AnyAlert {
    /// CloudEvents `type`.
    pub ty: String,
    pub id: String,
    pub customer: String,
    /// `data.as_of` as `YYYY-MM-DD`.
    pub day: String,
    /// `data.risk_band` of an at-risk alert, `lapsed` for a lapsed one.
    pub band: String,
}

/// Read an alert of either kind from the alerts topic (panics on anything else).
pub fn any_alert(payload: &[u8]) -> AnyAlert {
    let ev: churn_events::CloudEvent<serde_json::Value> =
        serde_json::from_slice(payload).expect("alert is a CloudEvent");
    let text = |k: &str| ev.data[k].as_str().unwrap_or_default().to_string();
    let band = if ev.ty == churn_events::LAPSED_TYPE {
        "lapsed".to_string()
    } else {
        assert_eq!(ev.ty, churn_events::ALERT_TYPE, "alert type");
        text("risk_band")
    };
    AnyAlert {
        customer: text("customer_id"),
        day: text("as_of").chars().take(10).collect(),
        ty: ev.ty,
        id: ev.id,
        band,
    }
}

/// `cfg` with its own consumer group and fresh outputs (alerts, scores, DLQ, changelog), named
/// with the suffix `sfx` and created here: the same input through another pipeline.
pub async fn with_own_outputs(
    cfg: &churn_pipeline::Config,
    sfx: &str,
    parts: i32,
) -> churn_pipeline::Config {
    let mut c = cfg.clone();
    c.kafka.group_id = format!("{}_{sfx}", cfg.kafka.group_id);
    c.topics.alerts = format!("{}_{sfx}", cfg.topics.alerts);
    c.topics.scores = format!("{}_{sfx}", cfg.topics.scores);
    c.topics.dlq = format!("{}_{sfx}", cfg.topics.dlq);
    c.topics.changelog = format!("{}_{sfx}", cfg.topics.changelog);
    create_topics(
        &cfg.kafka.brokers,
        &[
            (c.topics.alerts.as_str(), parts),
            (c.topics.scores.as_str(), parts),
            (c.topics.dlq.as_str(), 1),
        ],
    )
    .await;
    c
}

pub fn tansu_bin() -> PathBuf {
    std::env::var_os("CHURN_TANSU")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").expect("HOME or CHURN_TANSU must be set");
            Path::new(&home).join(".cache/churnstream/tansu-0.6.0/bin/tansu")
        })
}

/// Storage engine of a private tansu broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// `memory://`: gone with the process; under-reports the high watermark of idempotent or
    /// compressed batches (README, "The local broker").
    Memory,
    /// `sqlite://` in the broker's directory: survives a restart.
    Sqlite,
}

/// A port on 127.0.0.1 that nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A private tansu broker on a fixed port with its storage in `dir`; killed on drop.
pub struct Broker {
    dir: PathBuf,
    addr: SocketAddr,
    /// The port the broker advertises in metadata (its own unless something fronts it).
    advertised: u16,
    storage: Storage,
    child: Option<Child>,
}

impl Broker {
    pub fn new(dir: &Path, storage: Storage) -> Self {
        let port = free_port();
        Broker::on(dir, storage, port, port)
    }

    /// Listening on `port` and advertising `advertised` (e.g. a TLS terminator in front of it).
    pub fn on(dir: &Path, storage: Storage, port: u16, advertised: u16) -> Self {
        let mut b = Broker {
            dir: dir.to_path_buf(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            advertised,
            storage,
            child: None,
        };
        b.start();
        b
    }

    pub fn brokers(&self) -> String {
        self.addr.to_string()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("broker.log")).unwrap_or_default()
    }

    /// Start (or restart) on the same port and the same storage.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        let url = format!("tcp://{}", self.addr);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("broker.log"))
            .expect("broker log");
        // tansu's libsql engine resolves `sqlite://NAME` relative to its working directory.
        let child = Command::new(tansu_bin())
            .current_dir(&self.dir)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
            ])
            .arg(format!("tcp://127.0.0.1:{}", self.advertised))
            .args([
                "--storage-engine",
                match self.storage {
                    Storage::Memory => "memory://tansu/",
                    Storage::Sqlite => "sqlite://tansu.db",
                },
            ])
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn tansu (set CHURN_TANSU)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("tansu exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "tansu did not listen:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL the broker and wait until it is gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("SIGKILL tansu");
            c.wait().expect("wait tansu");
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
        // CHURN_KEEP_LOGS=DIR keeps the broker's log there too (its directory is usually a
        // temporary one), as `<broker dir name>.log`.
        if let (Some(keep), Some(name)) =
            (std::env::var_os("CHURN_KEEP_LOGS"), self.dir.file_name())
        {
            let _ = std::fs::create_dir_all(&keep);
            let mut to = PathBuf::from(keep).join(name);
            to.set_extension("log");
            let _ = std::fs::copy(self.dir.join("broker.log"), to);
        }
    }
}
