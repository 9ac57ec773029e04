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

async fn wait_progress(r: &CommittedReader, total: i64, at: f64, members: &mut Members<'_>) {
    let deadline = Instant::now() + Duration::from_secs(240);
    while tokio::task::block_in_place(|| progress(r, total)) < at {
        assert!(
            Instant::now() < deadline,
            "no progress to {at}; {}",
            tails(&members.logs)
        );
        members.supervise();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The faults of a run (issue #15's fault suite; `Fault::None` is the fault-free run).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    None,
    /// A second member joins at 20 %; SIGKILL + restart of the first at 50 %, of the second at
    /// 80 %.
    JoinAndKills,
    /// SIGTERM + restart of the member at 30 % and at 70 % (clean bounces).
    CleanBounces,
    /// A second (dynamic) member joins at 20 % and leaves for good (SIGTERM) at 60 %.
    JoinAndLeave,
    /// SIGSTOP at 40 % for longer than the session timeout, then SIGCONT: the group moves on
    /// without the stopped member, which comes back as a zombie holding an old generation.
    StopPastSession,
    /// At 50 % a producer whose clock runs 25 h ahead sends events stamped with it.
    SkewedProducer,
}

/// The members of one run, by instance id; a member that exits on its own is started again
/// (as a supervisor would), and counted.
struct Members<'a> {
    config: &'a Path,
    dir: PathBuf,
    sfx: String,
    live: Vec<(String, Member)>,
    logs: Vec<PathBuf>,
    restarts: usize,
}

impl Members<'_> {
    fn spawn(&mut self, instance: &str) {
        self.spawn_as(instance, !dynamic());
    }

    /// `instance` as a static member (`group.instance.id`) or a dynamic one.
    fn spawn_as(&mut self, instance: &str, static_member: bool) {
        let n = self.logs.len();
        let log = self
            .dir
            .join(format!("determinism-{}-{n}-{instance}.log", self.sfx));
        self.logs.push(log.clone());
        let m = Member::spawn(self.config, &log, static_member.then_some(instance));
        self.live.push((instance.to_string(), m));
    }

    fn take(&mut self, instance: &str) -> Option<Member> {
        let i = self.live.iter().position(|(n, _)| n == instance)?;
        Some(self.live.remove(i).1)
    }

    fn pid(&self, instance: &str) -> Option<u32> {
        self.live
            .iter()
            .find(|(n, _)| n == instance)
            .map(|(_, m)| m.0.id())
    }

    /// Start again every member that exited.
    fn supervise(&mut self) {
        let exited: Vec<String> = self
            .live
            .iter_mut()
            .filter_map(|(n, m)| m.0.try_wait().ok().flatten().map(|_| n.clone()))
            .collect();
        for name in exited {
            eprintln!("{}: member {name} exited; starting it again", self.sfx);
            self.take(&name);
            self.restarts += 1;
            self.spawn(&name);
        }
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
}

/// Events of a producer whose clock runs 25 h ahead: stamped 25 h after now, for customers of
/// the backlog.
fn skewed_events(b: &Backlog) -> Vec<churn_events::Event> {
    let at = chrono::Utc::now() + chrono::Duration::hours(25);
    b.events
        .iter()
        .step_by(b.events.len() / 40 + 1)
        .take(40)
        .enumerate()
        .map(|(i, e)| churn_events::Event {
            event_id: format!("skewed-{i}"),
            customer_id: e.customer_id.clone(),
            occurred_at: at,
            payload: churn_events::Payload::Engagement(churn_events::Engagement {
                kind: churn_events::EngagementKind::Login,
                duration_s: Some(60.0),
                feature: None,
            }),
        })
        .collect()
}

/// What one run published and left in its state.
struct Outcome {
    ids: BTreeSet<String>,
    /// Alert records on the topic (more than `ids`: duplicates, each sharing its id).
    records: usize,
    logs: Vec<PathBuf>,
    cfg: Config,
    /// Customers whose state does not hold each of their events exactly once, and how many
    /// events (days' counts) are off in all.
    wrong_customers: Vec<String>,
    events_off: u64,
    /// Dead-lettered messages, and how many of them as `future_timestamp`.
    dlq: usize,
    dlq_future: usize,
    restarts: usize,
}

/// Compare each customer's state with a batch fold of its events: the customers that differ
/// and how many events are off. Day rows older than the rollups' retention are folded into a
/// carry, at a point that depends on the clock (the live state expires by its partition's
/// clock, the batch fold by the last event): so the day rows are compared from the later of the
/// two cutoffs on, and the lifetime purchase count (carry + rows) over the whole history.
fn exactly_once(
    latest: &std::collections::BTreeMap<String, churn_pipeline::engine::Snapshot>,
    events: &[churn_events::Event],
) -> (Vec<String>, u64) {
    let batch = churn_features::rollups_from_events(events);
    let mut wrong = Vec::new();
    let mut off = 0u64;
    let count = |d: &churn_features::rollup::DayRollup| -> i64 {
        i64::from(d.purchases)
            + d.engagement.iter().map(|n| i64::from(*n)).sum::<i64>()
            + i64::from(d.nps_count)
            + i64::from(d.upgrades)
            + i64::from(d.downgrades)
            + i64::from(d.cancels)
    };
    let orders = |r: &churn_features::CustomerRollups| -> i64 {
        i64::from(r.carry().orders) + r.days().map(|d| i64::from(d.purchases)).sum::<i64>()
    };
    for (id, want) in &batch {
        let Some(got) = latest.get(id).map(|s| &s.rollups) else {
            wrong.push(id.clone());
            off += want.days().map(|d| count(&d) as u64).sum::<u64>();
            continue;
        };
        let cutoff = got
            .expired_before
            .max(want.expired_before)
            .unwrap_or(i32::MIN);
        let days = |r: &churn_features::CustomerRollups| -> std::collections::BTreeMap<i32, i64> {
            r.days()
                .filter(|d| d.day >= cutoff)
                .map(|d| (d.day, count(&d)))
                .collect()
        };
        let (g, w) = (days(got), days(want));
        let lifetime = orders(got).abs_diff(orders(want));
        if g != w || lifetime != 0 {
            wrong.push(id.clone());
            off += lifetime;
            for day in g.keys().chain(w.keys()).collect::<BTreeSet<_>>() {
                let a = g.get(day).copied().unwrap_or(0);
                let b = w.get(day).copied().unwrap_or(0);
                off += a.abs_diff(b);
            }
        }
    }
    let known: BTreeSet<&str> = batch.iter().map(|(id, _)| id.as_str()).collect();
    for id in latest.keys().filter(|k| !known.contains(k.as_str())) {
        wrong.push(id.clone());
    }
    (wrong, off)
}

/// The tail of every member's log.
fn tails(logs: &[PathBuf]) -> String {
    logs.iter()
        .map(|l| format!("log tail of {}:\n{}", l.display(), common::log_tail(l)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One run over the backlog with `fault`: its alert ids, the members' logs, the config, and
/// what its state holds.
async fn run(b: &Backlog, sfx: &str, fault: Fault) -> Outcome {
    let (cfg, total, _broker) = published(b, sfx).await;
    let reader = CommittedReader::new(&cfg, &cfg.kafka.group_id, PARTS);
    let config = b.dir.path().join(format!("{sfx}.toml"));
    std::fs::write(&config, toml::to_string(&cfg).expect("toml")).expect("config");
    // CHURN_KEEP_LOGS=DIR keeps the members' logs there (also when the test fails).
    let dir = std::env::var_os("CHURN_KEEP_LOGS")
        .map_or_else(|| b.dir.path().to_path_buf(), PathBuf::from);
    // The SIGSTOPped member is dynamic: a static member stopped past its session stalled the
    // group on tansu 0.6 (it rejoined, restored, was revoked again and never got an assignment
    // back in 3 minutes); a dynamic one rejoins with a new member id.
    let static_first = !dynamic() && fault != Fault::StopPastSession;
    let mut m = Members {
        config: &config,
        dir,
        sfx: sfx.to_string(),
        live: Vec::new(),
        logs: Vec::new(),
        restarts: 0,
    };
    m.spawn_as("first", static_first);
    let at = |r: &CommittedReader| 100.0 * progress(r, total);
    let mut skewed = Vec::new();
    match fault {
        Fault::None => {}
        Fault::JoinAndKills => {
            wait_progress(&reader, total, 0.2, &mut m).await;
            eprintln!("{sfx}: second member joins at {:.0} %", at(&reader));
            m.spawn("second");
            wait_progress(&reader, total, 0.5, &mut m).await;
            eprintln!("{sfx}: SIGKILL the first at {:.0} %", at(&reader));
            if let Some(x) = m.take("first") {
                kill(x);
            }
            m.spawn("first");
            wait_progress(&reader, total, 0.8, &mut m).await;
            eprintln!("{sfx}: SIGKILL the second at {:.0} %", at(&reader));
            if let Some(x) = m.take("second") {
                kill(x);
            }
            m.spawn("second");
        }
        Fault::CleanBounces => {
            for point in [0.3, 0.7] {
                wait_progress(&reader, total, point, &mut m).await;
                eprintln!("{sfx}: SIGTERM + restart at {:.0} %", at(&reader));
                if let Some(x) = m.take("first") {
                    terminate(x);
                }
                m.spawn("first");
            }
        }
        Fault::JoinAndLeave => {
            wait_progress(&reader, total, 0.2, &mut m).await;
            eprintln!("{sfx}: second member joins at {:.0} %", at(&reader));
            // A dynamic member: it sends LeaveGroup when it stops. A static one does not (KIP-345),
            // and tansu 0.6 keeps assigning an expired static member its share of the
            // partitions, so they would never be consumed again (seen here: the first member got
            // only its own partitions back after the second's session ended).
            m.spawn_as("second", false);
            wait_progress(&reader, total, 0.6, &mut m).await;
            eprintln!("{sfx}: the second member leaves at {:.0} %", at(&reader));
            if let Some(x) = m.take("second") {
                terminate(x);
            }
        }
        Fault::StopPastSession => {
            wait_progress(&reader, total, 0.4, &mut m).await;
            let session: u64 = cfg
                .kafka
                .consumer
                .get("session.timeout.ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(30_000);
            eprintln!(
                "{sfx}: SIGSTOP at {:.0} % for {} s",
                at(&reader),
                session / 1000 + 10
            );
            if let Some(pid) = m.pid("first") {
                signal(pid, "-STOP");
                tokio::time::sleep(Duration::from_millis(session + 10_000)).await;
                signal(pid, "-CONT");
            }
        }
        Fault::SkewedProducer => {
            wait_progress(&reader, total, 0.5, &mut m).await;
            skewed = skewed_events(b);
            eprintln!(
                "{sfx}: {} events stamped 25 h ahead at {:.0} %",
                skewed.len(),
                at(&reader)
            );
            common::publish(&cfg, &skewed).await;
        }
    }
    let total = total + skewed.len() as i64;
    wait_progress(&reader, total, 1.0, &mut m).await;
    common::wait_alerts_settled(&cfg).await;
    for (_, member) in std::mem::take(&mut m.live) {
        terminate(member);
    }
    let alerts = tokio::task::block_in_place(|| {
        common::read_topic_to_end(&cfg.kafka.brokers, &cfg.topics.alerts)
    });
    // A decision has one id and an id one decision (duplicates only ever share an id).
    common::alert_ids_by_decision(&cfg).await;
    let ids = alerts
        .iter()
        .map(|r| common::any_alert(&r.payload).id)
        .collect();
    let latest = common::latest_state(&cfg).await;
    let (wrong_customers, events_off) = exactly_once(&latest, &b.events);
    let dlq = tokio::task::block_in_place(|| {
        common::read_topic_to_end(&cfg.kafka.brokers, &cfg.topics.dlq)
    });
    let dlq_future = dlq
        .iter()
        .filter(|r| {
            r.header("error.reason")
                .is_some_and(|x| x.starts_with("future_timestamp"))
        })
        .count();
    Outcome {
        ids,
        records: alerts.len(),
        logs: m.logs,
        cfg,
        wrong_customers,
        events_off,
        dlq: dlq.len(),
        dlq_future,
        restarts: m.restarts,
    }
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
    let solo1 = run(&b, "solo1", Fault::None).await;
    let solo2 = run(&b, "solo2", Fault::None).await;
    let backtest = backtest_ids(&b, &solo1.cfg);
    eprintln!(
        "solo runs: {} and {} alerts; backtest: {}",
        solo1.ids.len(),
        solo2.ids.len(),
        backtest.len()
    );
    assert!(
        solo1.ids.len() >= 20,
        "the backlog raises alerts ({})",
        solo1.ids.len()
    );
    for o in [&solo1, &solo2] {
        assert!(
            o.wrong_customers.is_empty(),
            "every event exactly once: {} customers off ({} events), e.g. {:?}",
            o.wrong_customers.len(),
            o.events_off,
            &o.wrong_customers[..o.wrong_customers.len().min(5)]
        );
    }
    assert_eq!(
        solo1.ids,
        solo2.ids,
        "two solo runs: {}",
        diff(&solo1.ids, &solo2.ids)
    );
    // Live equals backtest (issue #13 item 6): the live run, four partitions consumed at full
    // speed, alerts exactly what `churnstream backtest` alerts on the same history and model.
    assert_eq!(
        backtest,
        solo1.ids,
        "backtest vs live: {}",
        diff(&backtest, &solo1.ids)
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
    let solo = run(&b, "solo", Fault::None).await;
    let faulted = run(&b, "faulted", Fault::JoinAndKills).await;
    let rows = [row(&solo, &faulted, Fault::JoinAndKills)];
    table(&rows);
    check(&rows, &solo, &[&faulted]);
}

/// The rest of the fault suite (issue #15), each scenario against the same fault-free run:
/// clean bounces, a member joining and leaving, a member stopped (SIGSTOP) past its session
/// timeout, and a producer with a clock 25 h ahead. Each must apply every input event to the
/// state exactly once and publish exactly the fault-free alert ids (duplicates sharing their
/// id); the skewed producer's events are dead-lettered as `future_timestamp`, none applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fault_suite_publishes_the_fault_free_alerts() {
    let b = backlog();
    let solo = run(&b, "suite-solo", Fault::None).await;
    let mut outcomes = Vec::new();
    // CHURN_FAULTS=sigstop,skewed-clock runs only those.
    let only = std::env::var("CHURN_FAULTS").ok();
    for (sfx, fault) in [
        ("clean-bounces", Fault::CleanBounces),
        ("join-leave", Fault::JoinAndLeave),
        ("sigstop", Fault::StopPastSession),
        ("skewed-clock", Fault::SkewedProducer),
    ] {
        if only
            .as_ref()
            .is_some_and(|o| !o.split(',').any(|x| x == sfx))
        {
            continue;
        }
        outcomes.push((fault, run(&b, sfx, fault).await));
    }
    let rows: Vec<Row> = outcomes.iter().map(|(f, o)| row(&solo, o, *f)).collect();
    table(&rows);
    let faulted: Vec<&Outcome> = outcomes.iter().map(|(_, o)| o).collect();
    check(&rows, &solo, &faulted);
    for (_, o) in outcomes.iter().filter(|(f, _)| *f == Fault::SkewedProducer) {
        assert_eq!(
            o.dlq_future,
            skewed_events(&b).len(),
            "the skewed producer's events are dead-lettered as future_timestamp"
        );
    }
}

/// One line of the fault table.
struct Row {
    fault: Fault,
    missing: usize,
    extra: usize,
    duplicates: usize,
    wrong_customers: usize,
    events_off: u64,
    dlq: usize,
    restarts: usize,
}

fn row(solo: &Outcome, o: &Outcome, fault: Fault) -> Row {
    Row {
        fault,
        missing: solo.ids.difference(&o.ids).count(),
        extra: o.ids.difference(&solo.ids).count(),
        duplicates: o.records - o.ids.len(),
        wrong_customers: o.wrong_customers.len(),
        events_off: o.events_off,
        dlq: o.dlq,
        restarts: o.restarts,
    }
}

fn table(rows: &[Row]) {
    eprintln!("| scenario | result | events off | alerts missing | alerts extra | duplicate records (same id) | DLQ | member restarts |");
    eprintln!("|---|---|---|---|---|---|---|---|");
    for r in rows {
        let ok = r.missing == 0 && r.extra == 0 && r.events_off == 0;
        eprintln!(
            "| {:?} | {} | {} | {} | {} | {} | {} | {} |",
            r.fault,
            if ok { "pass" } else { "FAIL" },
            r.events_off,
            r.missing,
            r.extra,
            r.duplicates,
            r.dlq,
            r.restarts
        );
    }
}

fn check(rows: &[Row], solo: &Outcome, faulted: &[&Outcome]) {
    assert!(
        solo.wrong_customers.is_empty(),
        "the fault-free run applies every event once: {} customers off ({} events), e.g. {:?}",
        solo.wrong_customers.len(),
        solo.events_off,
        &solo.wrong_customers[..solo.wrong_customers.len().min(5)]
    );
    for (r, o) in rows.iter().zip(faulted) {
        assert!(
            r.events_off == 0 && r.wrong_customers == 0,
            "{:?}: every event exactly once: {} customers off ({} events), e.g. {:?}; {}",
            r.fault,
            r.wrong_customers,
            r.events_off,
            &o.wrong_customers[..o.wrong_customers.len().min(5)],
            tails(&o.logs)
        );
        assert_eq!(
            solo.ids,
            o.ids,
            "{:?}: {}; {}",
            r.fault,
            diff(&solo.ids, &o.ids),
            tails(&o.logs)
        );
    }
}
