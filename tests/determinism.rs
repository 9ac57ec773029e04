//! Alerts are a function of the input, not of timing (issue #21). One generated backlog and one
//! model; each run gets the backlog published afresh to a private broker of its own and consumes
//! it with `churnstream run` (the real binary):
//!
//! - two solo runs must publish the same set of alert ids;
//! - a faulted run — a second member joins at 20 % of the backlog, the first member is killed
//!   with SIGKILL at 50 % and restarted, the second at 80 % and restarted — must publish exactly
//!   the fault-free set: no id missing, no id extra.
//!
//! The members are static group members (`kafka.group_instance_id` "first" and "second"; a
//! restarted member keeps its instance id), see the faulted test's doc for why.
//!
//! Every run ends the same way: caught up with the backlog, then idle long enough for every
//! source to go idle (each partition's clock then closes every day but its newest), then SIGTERM.
//!
//! The brokers are tansu on its sqlite engine, whose high watermarks are right: a source that is
//! behind (consumer lag > 0) then holds its partition's clock however long the consumer takes to
//! fetch it. On the memory engine the lag is unknown (README, "The local broker") and a source
//! that delivers nothing for `idle_source_ms` while behind is taken for idle — its later events
//! are late, and which those are depends on timing.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use churn_pipeline::Config;
use common::{Broker, CommittedReader, Storage};

const PARTS: i32 = 4;

/// A running member; killed (SIGKILL) when dropped, so a failed assertion leaves no process
/// behind.
struct Member(Child);

impl Member {
    /// `churnstream run` as the static group member `instance` (None: dynamic membership).
    fn spawn(config: &Path, log: &Path, instance: Option<&str>) -> Member {
        Member(common::spawn_run_as(config, log, instance))
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn terminate(mut m: Member) {
    let _ = Command::new("kill")
        .args(["-TERM", &m.0.id().to_string()])
        .status();
    let _ = m.0.wait();
}

/// SIGKILL.
fn kill(m: Member) {
    drop(m);
}

/// The input every run consumes: one generated population and one model, published afresh to
/// each run's own broker (tansu's sqlite engine slows down as its database grows — README, "The
/// local broker" — and a second run on the first one's broker stalls its group coordinator).
struct Backlog {
    events: Vec<churn_events::Event>,
    model: PathBuf,
    dir: tempfile::TempDir,
}

fn backlog() -> Backlog {
    // The brokers' sqlite files in memory where the machine has /dev/shm: on a disk shared with
    // a busy build, tansu's synced writes make its group coordinator answer heartbeats late.
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .expect("tmp");
    // Larger populations for a manual reproduction: CHURN_DET_CUSTOMERS, _DAYS, _SEED, _BATCH.
    let (pop, model, _) = common::population_and_model(
        env_or("CHURN_DET_CUSTOMERS", 400),
        env_or("CHURN_DET_DAYS", 150),
        env_or("CHURN_DET_SEED", 5),
        28,
    );
    let path = dir.path().join("model.json");
    model.save(&path).expect("save model");
    Backlog {
        events: pop.events,
        model: path,
        dir,
    }
}

/// A private sqlite tansu holding the backlog, and the pipeline's config on it.
async fn published(b: &Backlog, sfx: &str) -> (Config, i64, Broker) {
    let bdir = b.dir.path().join(format!("broker-{sfx}"));
    std::fs::create_dir_all(&bdir).expect("broker dir");
    let broker = Broker::new(&bdir, Storage::Sqlite);
    let mut cfg = common::pipeline_config_on(&broker.brokers(), "determinism", PARTS).await;
    common::quick_member(&mut cfg);
    // tansu's sqlite coordinator answers heartbeats slowly on a busy machine: 6 s sessions time
    // out there and the group rebalances again and again. Static members (see `run`) get 30 s: a
    // restarted one must heartbeat before its old session ends, and on tansu its JoinGroup and
    // its SyncGroup each take 3 s (the coordinator's pause for static members) after a start-up
    // of 1-3 s. CHURN_DET_SESSION_MS overrides.
    let session_ms: u32 = if dynamic() { 10_000 } else { 30_000 };
    cfg.kafka.consumer.insert(
        "session.timeout.ms".into(),
        env_or("CHURN_DET_SESSION_MS", session_ms).to_string(),
    );
    // CHURN_DET_RDKAFKA_DEBUG=cgrp,protocol: librdkafka's debug contexts for the members (their
    // log lines need CHURN_MEMBER_LOG=info,librdkafka=debug).
    if let Ok(d) = std::env::var("CHURN_DET_RDKAFKA_DEBUG") {
        cfg.kafka.consumer.insert("debug".into(), d);
    }
    // Small batches and a short idle rule: the backlog takes long enough to fault it at chosen
    // points, and a run's end (every source idle) comes soon after it caught up.
    cfg.pipeline.batch_max_events = env_or("CHURN_DET_BATCH", 150);
    cfg.pipeline.idle_source_ms = 2_000;
    cfg.model.path = b.model.clone();
    common::publish(&cfg, &b.events).await;
    let parts: Vec<(String, i32)> = cfg
        .topics
        .inputs()
        .iter()
        .flat_map(|t| (0..PARTS).map(move |p| (t.to_string(), p)))
        .collect();
    let total: i64 =
        tokio::task::block_in_place(|| common::log_ends(&cfg.kafka.brokers, &parts).iter().sum());
    assert_eq!(
        total as usize,
        b.events.len(),
        "every event on the input topics"
    );
    (cfg, total, broker)
}

/// CHURN_DET_DYNAMIC=1: the members join with dynamic membership (a new member id at every
/// start) instead of as static members; reproduces tansu 0.6's stall (see
/// `a_join_and_two_sigkills_publish_the_fault_free_alerts`).
fn dynamic() -> bool {
    std::env::var_os("CHURN_DET_DYNAMIC").is_some()
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Progress of `cfg`'s group through the backlog, 0..=1.
fn progress(r: &CommittedReader, total: i64) -> f64 {
    r.sum() as f64 / total as f64
}

async fn wait_progress(r: &CommittedReader, total: i64, at: f64, logs: &[PathBuf]) {
    let deadline = Instant::now() + Duration::from_secs(240);
    while tokio::task::block_in_place(|| progress(r, total)) < at {
        assert!(
            Instant::now() < deadline,
            "no progress to {at}; {}",
            tails(logs)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The tail of every member's log.
fn tails(logs: &[PathBuf]) -> String {
    logs.iter()
        .map(|l| format!("log tail of {}:\n{}", l.display(), common::log_tail(l)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One run over the backlog; returns its alert ids, the members' logs (one per process) and
/// the run's config.
async fn run(b: &Backlog, sfx: &str, faults: bool) -> (BTreeSet<String>, Vec<PathBuf>, Config) {
    let (cfg, total, _broker) = published(b, sfx).await;
    let reader = CommittedReader::new(&cfg, &cfg.kafka.group_id, PARTS);
    let config = b.dir.path().join(format!("{sfx}.toml"));
    std::fs::write(&config, toml::to_string(&cfg).expect("toml")).expect("config");
    // CHURN_KEEP_LOGS=DIR keeps the members' logs there (also when the test fails).
    let dir = std::env::var_os("CHURN_KEEP_LOGS")
        .map_or_else(|| b.dir.path().to_path_buf(), PathBuf::from);
    let mut logs = Vec::new();
    let dynamic = dynamic();
    let spawn = |name: &str, instance: &str, logs: &mut Vec<PathBuf>| {
        let log = dir.join(format!("determinism-{sfx}-{name}.log"));
        logs.push(log.clone());
        Member::spawn(&config, &log, (!dynamic).then_some(instance))
    };
    let mut a = spawn("first", "first", &mut logs);
    let mut second = None;
    if faults {
        wait_progress(&reader, total, 0.2, &logs).await;
        eprintln!(
            "{sfx}: second member joins at {:.0} %",
            100.0 * progress(&reader, total)
        );
        second = Some(spawn("second", "second", &mut logs));
        wait_progress(&reader, total, 0.5, &logs).await;
        eprintln!(
            "{sfx}: SIGKILL the first at {:.0} %",
            100.0 * progress(&reader, total)
        );
        kill(a);
        a = spawn("first-restarted", "first", &mut logs);
        wait_progress(&reader, total, 0.8, &logs).await;
        eprintln!(
            "{sfx}: SIGKILL the second at {:.0} %",
            100.0 * progress(&reader, total)
        );
        if let Some(s) = second.take() {
            kill(s);
        }
        second = Some(spawn("second-restarted", "second", &mut logs));
    }
    wait_progress(&reader, total, 1.0, &logs).await;
    common::wait_alerts_settled(&cfg).await;
    terminate(a);
    if let Some(s) = second {
        terminate(s);
    }
    let ids = tokio::task::block_in_place(|| {
        common::read_topic_to_end(&cfg.kafka.brokers, &cfg.topics.alerts)
    })
    .iter()
    .map(|r| common::any_alert(&r.payload).id)
    .collect();
    (ids, logs, cfg)
}

/// The alert ids `churnstream backtest` gives for the backlog with the run's pipeline and alert
/// settings: the CLI's code path (`backtest::replay` over one engine, the events in file order).
fn backtest_ids(b: &Backlog, cfg: &Config) -> BTreeSet<String> {
    let model = churn_model::ModelArtifact::load(&b.model).expect("model");
    let mut engine = churn_pipeline::Engine::new(
        std::sync::Arc::new(model),
        cfg.pipeline.clone(),
        cfg.alerts.clone(),
    )
    .expect("engine");
    let (alerts, _) =
        churn_pipeline::backtest::replay(&mut engine, &b.events, cfg.pipeline.batch_max_events)
            .expect("backtest");
    alerts.into_iter().map(|a| a.id).collect()
}

fn diff(a: &BTreeSet<String>, b: &BTreeSet<String>) -> String {
    let missing: Vec<&String> = a.difference(b).take(5).collect();
    let extra: Vec<&String> = b.difference(a).take(5).collect();
    format!(
        "{} vs {} ids; missing {} (e.g. {missing:?}), extra {} (e.g. {extra:?})",
        a.len(),
        b.len(),
        a.difference(b).count(),
        b.difference(a).count()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_solo_runs_of_a_backlog_publish_the_same_alerts() {
    let b = backlog();
    let (solo1, _, cfg) = run(&b, "solo1", false).await;
    let (solo2, _, _) = run(&b, "solo2", false).await;
    let backtest = backtest_ids(&b, &cfg);
    eprintln!(
        "solo runs: {} and {} alerts; backtest: {}",
        solo1.len(),
        solo2.len(),
        backtest.len()
    );
    assert!(
        solo1.len() >= 20,
        "the backlog raises alerts ({})",
        solo1.len()
    );
    assert_eq!(solo1, solo2, "two solo runs: {}", diff(&solo1, &solo2));
    // Live equals backtest (issue #13 item 6): the live run, four partitions consumed at full
    // speed, alerts exactly what `churnstream backtest` alerts on the same history and model.
    assert_eq!(
        backtest,
        solo1,
        "backtest vs live: {}",
        diff(&backtest, &solo1)
    );
}

/// A member joining at 20 %, SIGKILL + restart of the first at 50 % and of the second at 80 %:
/// exactly the fault-free alert ids. tansu hands a partition to a joining member before its
/// previous owner revoked it, so both write its changelog for a moment; a restore applies one
/// member's whole state (`churn_pipeline::lineage`), never a mix of the two.
///
/// The members are static (`group.instance.id`): a restarted member takes back its killed
/// incarnation's member id and assignment within the session timeout (30 s), restores those
/// partitions from the changelog the killed one left mid-batch and resumes them; the join at
/// 20 % is the rebalance that moves partitions between two live members. With dynamic members
/// (`CHURN_DET_DYNAMIC=1`) the run stalls on tansu 0.6: once the SIGKILLed leader's session
/// expires, its coordinator accepts a follower's SyncGroup, which carries no assignments, as the
/// leader's — every member is then assigned nothing, heartbeats succeed, and the group never
/// rebalances again ("no progress to 0.8"; ARCHITECTURE.md, "Rebalances on tansu").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_and_two_sigkills_publish_the_fault_free_alerts() {
    let b = backlog();
    let (solo, _, _) = run(&b, "solo", false).await;
    let (faulted, logs, _) = run(&b, "faulted", true).await;
    eprintln!(
        "solo run: {} alerts, faulted run: {} alerts",
        solo.len(),
        faulted.len()
    );
    assert_eq!(
        solo,
        faulted,
        "join at 20 %, SIGKILL at 50 % and 80 %: {}; {}",
        diff(&solo, &faulted),
        tails(&logs)
    );
}
