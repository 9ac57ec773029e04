//! Broker outage during consumption (issue #6 item 2): the test starts its own tansu broker on a
//! durable storage engine (`sqlite://` in a temp dir, so topics, records and committed offsets
//! survive a restart), runs the pipeline in-process, publishes half of the events and, once
//! some are consumed, SIGKILLs the broker. While the broker is down (~5 s) the pipeline must keep
//! running and a publisher sending the second half must neither panic nor grow without bound:
//! with a small `queue.buffering.max.messages` its sends wait on back-pressure (or fail with an
//! error). Then the broker restarts on the same port and storage, the publisher finishes, the
//! group catches up and the pipeline stops gracefully. Afterwards every input event is reflected
//! exactly once in the per-customer state (changelog) and no alert id maps to two decisions.
//!
//! The broker is private to this test (not CHURN_TEST_BROKERS): it is stopped and restarted.

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use churn_metrics::{Health, Metrics};

use churn_pipeline::{kafka, Config};
use tokio_util::sync::CancellationToken;

const PARTS: i32 = 2;
/// Producer queue limit of the publisher: what it may buffer while the broker is down.
const PUBLISHER_QUEUE: usize = 2_000;
/// How long the broker stays down.
const OUTAGE: Duration = Duration::from_secs(5);

fn tansu_bin() -> PathBuf {
    std::env::var_os("CHURN_TANSU")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").expect("HOME or CHURN_TANSU must be set");
            Path::new(&home).join(".cache/churnstream/tansu-0.6.0/bin/tansu")
        })
}

/// A tansu broker on a fixed port with sqlite storage in `dir`; killed on drop.
struct Broker {
    dir: PathBuf,
    addr: SocketAddr,
    child: Option<Child>,
}

impl Broker {
    fn new(dir: &Path) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut b = Broker {
            dir: dir.to_path_buf(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child: None,
        };
        b.start();
        b
    }

    fn brokers(&self) -> String {
        self.addr.to_string()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("broker.log")).unwrap_or_default()
    }

    /// Start (or restart) on the same port and the same storage.
    fn start(&mut self) {
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
            .arg(&url)
            .args(["--storage-engine", "sqlite://tansu.db"])
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
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("SIGKILL tansu");
            c.wait().expect("wait tansu");
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_loses_nothing() {
    tokio::time::timeout(Duration::from_secs(115), scenario())
        .await
        .expect("the fault scenario finishes within 115 s");
}

async fn scenario() {
    let t0 = Instant::now();
    let dir = tempfile::tempdir().expect("tmp");
    let mut broker = Broker::new(dir.path());
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
