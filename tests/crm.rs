//! CRM delivery on the real local broker: alerts on the alerts topic → `churn_crm::run` → a local
//! HTTP server standing in for the CRM. The server fails some alerts with 503 a few times (one
//! with `Retry-After`), refuses one with 400, answers 503 to one until the forwarder gives up
//! (`crm.max_attempts`) and accepts the rest. Asserted: every good alert is delivered exactly once
//! (retries reuse its `ce-id`), the body is the alert's bytes, every signature verifies, the
//! refused alert, the alert out of retries and a non-alert land in the CRM dead-letter topic with
//! their reason and source headers, the metrics agree, the group's offsets are committed, and a
//! restarted forwarder in the same group sends only the new alert. A second test: a lane that
//! panics makes `run_with` fail by itself, without committing the poisoned alert.

mod common;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{TimeZone, Utc};
use churn_crm::{Deliver, Delivery};
use churn_events::{AlertData, CloudEvent, Reason};
use churn_metrics::{Health, Metrics};
use churn_pipeline::config::Secret;
use churn_pipeline::{kafka, Config};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A Standard Webhooks secret (base64 of `crm-test-secret`).
const SECRET: &str = "whsec_Y3JtLXRlc3Qtc2VjcmV0";

/// One request as the CRM saw it.
#[derive(Debug, Clone)]
struct Hit {
    body: Vec<u8>,
    content_type: String,
    signature_ok: bool,
    status: u16,
}

/// The fake CRM: answers by `ce-id`.
#[derive(Default)]
struct Crm {
    /// ids answered 503 on their first two attempts (the first one with `Retry-After: 1`).
    flaky: Vec<String>,
    /// ids always answered 400.
    refused: Vec<String>,
    /// ids always answered 503 (retried until `crm.max_attempts`, then dead-lettered).
    down: Vec<String>,
    /// ce-id → every request, in order.
    hits: BTreeMap<String, Vec<Hit>>,
}

impl Crm {
    fn answer(&mut self, id: &str, hit: Hit) -> (u16, Option<&'static str>) {
        let n = self.hits.get(id).map_or(0, Vec::len);
        let (status, retry_after) = if self.refused.iter().any(|r| r == id) {
            (400, None)
        } else if self.down.iter().any(|d| d == id) {
            (503, None)
        } else if n < 2 && self.flaky.iter().any(|f| f == id) {
            let first = self.flaky.first().is_some_and(|f| f == id);
            (503, (first && n == 0).then_some("1"))
        } else {
            (200, None)
        };
        self.hits
            .entry(id.to_string())
            .or_default()
            .push(Hit { status, ..hit });
        (status, retry_after)
    }

    fn delivered(&self, id: &str) -> usize {
        self.hits
            .get(id)
            .map_or(0, |h| h.iter().filter(|x| x.status == 200).count())
    }
}

async fn start_crm(crm: Arc<Mutex<Crm>>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let crm = crm.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let crm = crm.clone();
                    async move {
                        let h = req.headers().clone();
                        let get = |k: &str| {
                            h.get(k)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_string()
                        };
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes().to_vec())
                            .unwrap_or_default();
                        let ts: i64 = get("webhook-timestamp").parse().unwrap_or(0);
                        // Standard Webhooks: the id is signed too, and it is the ce-id.
                        let key = churn_crm::signing_key(SECRET).expect("key");
                        let signature_ok = get("webhook-id") == get("ce-id")
                            && churn_crm::verify(
                                &key,
                                &get("webhook-id"),
                                ts,
                                &body,
                                &get("webhook-signature"),
                                Utc::now().timestamp(),
                                300,
                            )
                            .is_ok();
                        let hit = Hit {
                            body,
                            content_type: get("content-type"),
                            signature_ok,
                            status: 0,
                        };
                        let (status, retry_after) =
                            crm.lock().expect("lock").answer(&get("ce-id"), hit);
                        let mut resp = Response::builder().status(status);
                        if let Some(r) = retry_after {
                            resp = resp.header("retry-after", r);
                        }
                        let text = if status == 400 {
                            "{\"error\":\"unknown customer\"}"
                        } else {
                            ""
                        };
                        Ok::<_, Infallible>(
                            resp.body(Full::new(Bytes::from_static(text.as_bytes())))
                                .expect("response"),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// A CloudEvents alert as the pipeline publishes it.
fn alert(customer: &str) -> (String, Vec<u8>) {
    alert_with(customer, churn_events::TREATED)
}

/// [`alert`] with `treatment` (`treated` or `holdout`).
fn alert_with(customer: &str, treatment: &str) -> (String, Vec<u8>) {
    let day = Utc
        .with_ymd_and_hms(2026, 3, 2, 0, 0, 0)
        .single()
        .expect("date");
    let data = AlertData {
        customer_id: customer.to_string(),
        risk: 0.71,
        risk_band: "critical".into(),
        previous_risk: Some(0.3),
        previous_band: Some("medium".into()),
        segment: "loyal".into(),
        reasons: vec![Reason {
            feature: "recency_activity_days".into(),
            value: 9.0,
            contribution: 1.2,
            binding: "emotional".into(),
            description: "days since the last activity".into(),
            group: Some("engagement_decline".into()),
            text: Some("No activity for 9 days".into()),
        }],
        recommended_action: "reactivation_email".into(),
        revenue_at_risk: 35.0,
        model_version: "test-model".into(),
        as_of: day,
        last_event_at: Some(day),
        trigger: "event".into(),
        treatment: treatment.into(),
        experiment: Some(churn_events::Experiment {
            holdout_share: 0.2,
            salt: "crm-test".into(),
        }),
        history_days: None,
        confidence: None,
        score_source: None,
    };
    let ev = CloudEvent::alert("urn:churnstream:score", "2026-03-02", data);
    (ev.id.clone(), serde_json::to_vec(&ev).expect("json"))
}

fn spawn_forwarder(
    cfg: &Config,
    metrics: &Arc<Metrics>,
) -> (CancellationToken, JoinHandle<Result<(), churn_crm::Error>>) {
    let stop = CancellationToken::new();
    let task = tokio::spawn(churn_crm::run(
        cfg.clone(),
        metrics.clone(),
        Health::default(),
        stop.clone(),
    ));
    (stop, task)
}

async fn stop_forwarder(stop: CancellationToken, task: JoinHandle<Result<(), churn_crm::Error>>) {
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .expect("forwarder stops within 15 s")
        .expect("no panic")
        .expect("forwarder returns Ok");
}

async fn wait_until(what: &str, deadline: Instant, mut done: impl FnMut() -> bool) {
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_the_crm_once_signed_failures_are_dead_lettered_and_offsets_committed() {
    tokio::time::timeout(Duration::from_secs(55), scenario())
        .await
        .expect("the CRM scenario finishes within 55 s");
}

async fn scenario() {
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(45);
    let brokers = common::brokers();
    let s = common::unique("crm");
    let mut cfg = Config::default();
    cfg.kafka.brokers = brokers.clone();
    cfg.topics.alerts = format!("{s}_alerts");
    cfg.crm.dlq_topic = format!("{s}_crm_dlq");
    cfg.crm.group_id = format!("{s}_crm_group");
    cfg.crm.secret = Secret(SECRET.into());
    cfg.crm.timeout_ms = 3000;
    cfg.crm.max_attempts = 5;
    cfg.crm.max_elapsed_ms = 20_000;
    cfg.crm.backoff_initial_ms = 50;
    cfg.crm.backoff_max_ms = 200;
    cfg.crm.concurrency = 2;
    common::create_topics(
        &brokers,
        &[
            (cfg.topics.alerts.as_str(), 2),
            (cfg.crm.dlq_topic.as_str(), 1),
        ],
    )
    .await;

    // 10 alerts and one record that is not an alert.
    let alerts: Vec<(String, String, Vec<u8>)> = (0..10)
        .map(|i| {
            let c = format!("cust-{i:03}");
            let (id, body) = alert(&c);
            (c, id, body)
        })
        .collect();
    let crm = Arc::new(Mutex::new(Crm {
        flaky: alerts[..3].iter().map(|a| a.1.clone()).collect(),
        refused: vec![alerts[3].1.clone()],
        down: vec![alerts[4].1.clone()],
        hits: BTreeMap::new(),
    }));
    let refused_id = alerts[3].1.clone();
    let down_id = alerts[4].1.clone();
    let addr = start_crm(crm.clone()).await;
    cfg.crm.webhook_url = format!("http://{addr}/churn-webhook");

    let mut publisher = kafka::Publisher::new(&cfg).expect("publisher");
    for (c, _, body) in &alerts {
        publisher
            .send_raw(&cfg.topics.alerts, Some(c.as_bytes()), body)
            .await
            .expect("send");
    }
    publisher
        .send_raw(&cfg.topics.alerts, Some(b"cust-bad"), b"not an alert")
        .await
        .expect("send");
    // Two alerts of holdout customers: never POSTed, their offsets are done all the same.
    let mut held = Vec::new();
    for c in ["cust-h1", "cust-h2"] {
        let (id, body) = alert_with(c, churn_events::HOLDOUT);
        publisher
            .send_raw(&cfg.topics.alerts, Some(c.as_bytes()), &body)
            .await
            .expect("send");
        held.push(id);
    }
    publisher.flush().await.expect("flush");
    // Where each record landed (for the source.* headers).
    let on_topic =
        common::read_topic(&brokers, &cfg.topics.alerts, 13, Duration::from_secs(10)).await;
    assert_eq!(on_topic.len(), 13);

    // Run until every good alert was accepted and both failures are dead-lettered.
    let metrics = Arc::new(Metrics::new());
    let (stop, task) = spawn_forwarder(&cfg, &metrics);
    let good: Vec<&String> = alerts
        .iter()
        .map(|a| &a.1)
        .filter(|id| **id != refused_id && **id != down_id)
        .collect();
    wait_until("8 deliveries, 3 dead letters, 2 held out", deadline, || {
        let all = {
            let c = crm.lock().expect("lock");
            good.iter().all(|id| c.delivered(id) == 1)
        };
        all && metrics.crm_delivery("dead_lettered").get() == 3
            && metrics.crm_delivery("held_out").get() == 2
    })
    .await;
    let first_run = t0.elapsed();
    stop_forwarder(stop, task).await;

    {
        let c = crm.lock().expect("lock");
        assert_eq!(
            c.hits.len(),
            10,
            "the non-alert and the holdout alerts were never POSTed"
        );
        for id in &held {
            assert!(!c.hits.contains_key(id), "holdout alert {id} was POSTed");
        }
        for (i, (_, id, body)) in alerts.iter().enumerate() {
            let hits = &c.hits[id];
            let want = match i {
                0..=2 => 3, // two 503s, then 200
                4 => 5,     // 503 until crm.max_attempts
                _ => 1,     // accepted, or refused for good (400)
            };
            assert_eq!(hits.len(), want, "attempts of alert {i}: {hits:?}");
            assert!(
                hits.iter().filter(|h| h.status == 200).count() == usize::from(i != 3 && i != 4),
                "alert {i} delivered exactly once (unless refused or the CRM stayed down)"
            );
            for h in hits {
                assert_eq!(&h.body, body, "alert {i}: body is the alert's bytes");
                assert!(h.signature_ok, "alert {i}: signature verifies");
                assert_eq!(h.content_type, "application/cloudevents+json");
            }
        }
    }
    assert_eq!(metrics.crm_delivery("delivered").get(), 8);
    assert_eq!(metrics.crm_delivery("retried").get(), 6 + 4);
    assert_eq!(metrics.crm_delivery("dead_lettered").get(), 3);
    // 8 delivered + the refused one + the one out of retries (the non-alert never reached HTTP).
    assert_eq!(metrics.crm_delivery_duration.get_sample_count(), 10);

    // The dead letters: original key, bytes and headers plus reason and source headers.
    let dlq = common::read_topic(&brokers, &cfg.crm.dlq_topic, 3, Duration::from_secs(10)).await;
    assert_eq!(dlq.len(), 3, "{dlq:?}");
    for r in &dlq {
        let src = on_topic
            .iter()
            .find(|x| x.payload == r.payload)
            .expect("dead letter carries an alert's original bytes");
        assert_eq!(r.key, src.key);
        assert_eq!(r.header("error.stage"), Some("crm"));
        assert_eq!(r.header("source.topic"), Some(cfg.topics.alerts.as_str()));
        assert_eq!(
            r.header("source.partition"),
            Some(src.partition.to_string().as_str())
        );
        assert_eq!(
            r.header("source.offset"),
            Some(src.offset.to_string().as_str())
        );
        let reason = r.header("error.reason").expect("error.reason");
        if r.payload == alerts[3].2 {
            assert!(
                reason.starts_with("rejected: HTTP 400: {\"error\":\"unknown customer\"}"),
                "{reason}"
            );
            assert_eq!(r.header("error.attempts"), Some("1"));
            assert_eq!(r.key.as_deref(), Some(&b"cust-003"[..]));
        } else if r.payload == alerts[4].2 {
            // Giving up dead-letters the alert; it is never dropped.
            assert!(
                reason.starts_with("retries_exhausted: 5 attempts") && reason.contains("HTTP 503"),
                "{reason}"
            );
            assert_eq!(r.header("error.attempts"), Some("5"));
            assert_eq!(r.key.as_deref(), Some(&b"cust-004"[..]));
        } else {
            assert_eq!(r.payload, b"not an alert");
            assert!(reason.starts_with("invalid_alert: "), "{reason}");
        }
    }

    // The group's committed offsets cover every record.
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", &cfg.crm.group_id)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..2 {
        tpl.add_partition(&cfg.topics.alerts, p);
    }
    let committed =
        tokio::task::block_in_place(|| reader.committed_offsets(tpl, Duration::from_secs(10)))
            .expect("committed offsets");
    for p in 0..2 {
        let ends = on_topic
            .iter()
            .filter(|r| r.partition == p)
            .map(|r| r.offset + 1)
            .max();
        let got = committed
            .find_partition(&cfg.topics.alerts, p)
            .map(|e| e.offset());
        match ends {
            Some(end) => assert_eq!(got, Some(Offset::Offset(end)), "partition {p}"),
            None => assert!(!matches!(got, Some(Offset::Offset(o)) if o > 0)),
        }
    }

    // Restart in the same group with one new alert: only the new one is sent.
    let (new_id, new_body) = alert("cust-new");
    publisher
        .send_raw(&cfg.topics.alerts, Some(b"cust-new"), &new_body)
        .await
        .expect("send");
    publisher.flush().await.expect("flush");
    let before: usize = crm.lock().expect("lock").hits.values().map(Vec::len).sum();
    let metrics = Arc::new(Metrics::new());
    let (stop, task) = spawn_forwarder(&cfg, &metrics);
    wait_until("the new alert", deadline, || {
        crm.lock().expect("lock").delivered(&new_id) == 1
    })
    .await;
    // Give a wrongly re-read old alert time to show up.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop_forwarder(stop, task).await;
    let after: usize = crm.lock().expect("lock").hits.values().map(Vec::len).sum();
    assert_eq!(
        after,
        before + 1,
        "only the new alert was sent after the restart"
    );
    assert_eq!(metrics.crm_delivery("delivered").get(), 1);
    assert_eq!(metrics.crm_delivery("dead_lettered").get(), 0);
    eprintln!(
        "crm: first run {:.1} s, whole scenario {:.1} s",
        first_run.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
}

/// Delivers every alert at once, except that delivering `poison` panics (a bug in a lane).
struct PanicOn {
    poison: String,
    delivered: Mutex<Vec<String>>,
}

impl Deliver for PanicOn {
    async fn deliver(&self, id: &str, _body: &[u8], _cancel: &CancellationToken) -> Delivery {
        assert_ne!(id, self.poison, "injected lane panic");
        self.delivered.lock().expect("lock").push(id.to_string());
        Delivery::Delivered { attempts: 1 }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_lane_makes_run_fail_without_committing_its_alert() {
    let brokers = common::brokers();
    let s = common::unique("crm_lane");
    let mut cfg = Config::default();
    cfg.kafka.brokers = brokers.clone();
    cfg.topics.alerts = format!("{s}_alerts");
    cfg.crm.dlq_topic = format!("{s}_crm_dlq");
    cfg.crm.group_id = format!("{s}_crm_group");
    cfg.crm.webhook_url = "http://127.0.0.1:9/unused".into();
    cfg.crm.concurrency = 2;
    common::create_topics(
        &brokers,
        &[
            (cfg.topics.alerts.as_str(), 1),
            (cfg.crm.dlq_topic.as_str(), 1),
        ],
    )
    .await;
    let alerts: Vec<(String, Vec<u8>)> = (0..3).map(|i| alert(&format!("cust-{i}"))).collect();
    let mut publisher = kafka::Publisher::new(&cfg).expect("publisher");
    for (i, (_, body)) in alerts.iter().enumerate() {
        let key = format!("cust-{i}");
        publisher
            .send_raw(&cfg.topics.alerts, Some(key.as_bytes()), body)
            .await
            .expect("send");
    }
    publisher.flush().await.expect("flush");
    let on_topic =
        common::read_topic(&brokers, &cfg.topics.alerts, 3, Duration::from_secs(10)).await;
    let poison_offset = on_topic
        .iter()
        .find(|r| r.payload == alerts[1].1)
        .expect("poison alert on the topic")
        .offset;

    let deliverer = Arc::new(PanicOn {
        poison: alerts[1].0.clone(),
        delivered: Mutex::default(),
    });
    let stop = CancellationToken::new();
    let run = churn_crm::run_with(
        cfg.clone(),
        deliverer.clone(),
        Arc::new(Metrics::new()),
        Health::default(),
        stop.clone(),
    );
    // Nobody cancels `stop`: the run must end by itself, with an error naming the dead lane.
    let result = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("run ends by itself once a lane died");
    let Err(e) = result else {
        panic!("run returned Ok although a lane panicked");
    };
    assert!(matches!(e, churn_crm::Error::Lane(_)), "{e:?}");
    assert!(e.to_string().contains("injected lane panic"), "{e}");
    assert!(!stop.is_cancelled());

    // The poisoned alert's offset was not committed: a restart delivers it again.
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", &cfg.crm.group_id)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&cfg.topics.alerts, 0);
    let committed =
        tokio::task::block_in_place(|| reader.committed_offsets(tpl, Duration::from_secs(10)))
            .expect("committed offsets");
    let got = committed
        .find_partition(&cfg.topics.alerts, 0)
        .map(|e| e.offset());
    assert!(
        !matches!(got, Some(Offset::Offset(o)) if o > poison_offset),
        "committed {got:?} is past the poisoned alert at {poison_offset}"
    );
}
