//! Input and changelog topics deleted or recreated under a deployment (issue #15).
//!
//! An input topic deleted and recreated (replay guard): the recreated topics' offsets start at 0 again, below the offsets the restored state has
//! applied. The replay guard compared the new offsets with the old log's and dropped every new
//! event up to the old log's end as a "duplicate" (3,295 of 3,717 here). Kafka and tansu drop a
//! deleted topic's committed offsets, so at the restart the service sees state offsets and no
//! committed ones — which a crash before the first commit also looks like, where skipping is
//! right. It warns; restarted with the topics in `pipeline.recreated_topics`, it forgets the
//! old log's offsets and applies the new events: the state holds every event exactly once.
//! (Offsets that go back while committed offsets exist — a truncated log — are detected without
//! help: see `kafka::Positions`.)
//!
//! The later tests: a missing or non-compacted changelog, and an unreadable changelog record.
//!
//! On a private tansu broker (memory engine): the pipeline (in-process) consumes the first half
//! of a history and stops cleanly; the four input topics are deleted and recreated; the second
//! half is published; the pipeline restarts and consumes it.

mod common;

use std::time::{Duration, Instant};

use common::{Broker, Storage};
use rdkafka::config::ClientConfig;

/// Run the pipeline until it has consumed `want` input messages and committed them, then stop
/// it cleanly; returns its metrics text.
async fn consume(
    cfg: &churn_pipeline::Config,
    model: &churn_model::ModelArtifact,
    want: u64,
) -> String {
    let served = common::serve(cfg, model.clone()).await;
    let topics = cfg.consumed_topics();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let consumed: u64 = topics
            .iter()
            .map(|t| served.metrics.consumed(t).get())
            .sum();
        if consumed >= want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "consumed {consumed} of {want} input messages in 120 s"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // A few batches more for the last checkpoint, then a clean stop (checkpoint + commit).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, body) = common::http_get(served.addr, "/metrics").await;
    served.stop().await;
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_a_recreated_input_topic_are_applied_not_dropped_as_replays() {
    let dir = tempfile::tempdir().expect("tmp");
    let broker = Broker::new(dir.path(), Storage::Memory);
    let mut cfg = common::pipeline_config_on(&broker.brokers(), "recreate", 1).await;
    common::quick_member(&mut cfg);
    let (pop, model, _) = common::population_and_model(120, 90, 17, 28);
    let cut = pop.events[0].occurred_at + chrono::Duration::days(60);
    let (old, new): (Vec<_>, Vec<_>) = pop
        .events
        .iter()
        .cloned()
        .partition(|e| e.occurred_at < cut);
    assert!(
        old.len() > new.len(),
        "the old log is longer than the new one"
    );

    common::publish(&cfg, &old).await;
    let first = consume(&cfg, &model, old.len() as u64).await;
    assert_eq!(
        common::metric(&first, "churn_ingest_duplicates_dropped_total"),
        Some(0.0)
    );

    // Delete and recreate the input topics: their offsets start at 0 again.
    let inputs: Vec<String> = cfg
        .consumed_topics()
        .into_iter()
        .map(str::to_string)
        .collect();
    let names: Vec<&str> = inputs.iter().map(String::as_str).collect();
    common::delete_topics(&broker.brokers(), &names).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let again: Vec<(&str, i32)> = names.iter().map(|t| (*t, 1)).collect();
    common::create_topics(&broker.brokers(), &again).await;
    common::publish(&cfg, &new).await;
    let committed = tokio::task::block_in_place(|| {
        common::CommittedReader::new(&cfg, &cfg.kafka.group_id, 1).list()
    });
    eprintln!("committed after the recreation: {committed:?}");

    // Without being told, the service cannot tell this from a crash before the first commit
    // (Kafka and tansu drop a deleted topic's committed offsets): the operator names the
    // recreated topics for the restart.
    cfg.pipeline.recreated_topics = inputs.clone();
    let second = consume(&cfg, &model, new.len() as u64).await;
    let dropped = common::metric(&second, "churn_ingest_duplicates_dropped_total");
    let resets: f64 = inputs
        .iter()
        .filter_map(|t| {
            common::metric(
                &second,
                &format!("churn_ingest_offset_resets_total{{topic=\"{t}\"}}"),
            )
        })
        .sum();
    eprintln!(
        "old log {} events, new log {} events; second run: duplicates dropped {dropped:?}, offset resets {resets}",
        old.len(),
        new.len()
    );
    assert_eq!(dropped, Some(0.0), "no new event is dropped as a replay");
    assert!(resets >= 1.0, "the offsets going back are reported");
    let latest = common::latest_state(&cfg).await;
    common::assert_exactly_once(&latest, &pop.events);
}

/// Issue #15, item 6: a changelog that disappeared was silently recreated empty although the
/// group had committed offsets, so the whole history before them was lost to the state (the
/// service started, restored nothing, and went on from the committed offsets). Now it refuses
/// to start with an error naming the offsets, unless told to start empty. A changelog whose
/// `cleanup.policy` is not compact (its records would expire) is refused too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_non_compacted_changelog_is_refused_when_the_group_has_state() {
    let dir = tempfile::tempdir().expect("tmp");
    let broker = Broker::new(dir.path(), Storage::Memory);
    let mut cfg = common::pipeline_config_on(&broker.brokers(), "nochangelog", 1).await;
    common::quick_member(&mut cfg);
    let (pop, model, _) = common::population_and_model(60, 90, 3, 28);
    common::publish(&cfg, &pop.events).await;
    consume(&cfg, &model, pop.events.len() as u64).await;

    common::delete_topics(&broker.brokers(), &[&cfg.topics.changelog]).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let e = churn_pipeline::kafka::prepare_topics(&cfg)
        .await
        .expect_err("a missing changelog with committed offsets must not start");
    let msg = e.to_string();
    assert!(
        msg.contains(&cfg.topics.changelog)
            && msg.contains("committed offsets")
            && msg.contains(&cfg.topics.purchases)
            && msg.contains("allow_missing_changelog"),
        "{msg}"
    );

    // Recreated by hand with the wrong policy: refused, naming the fix.
    common::create_with_policy(&broker.brokers(), &cfg.topics.changelog, "delete").await;
    let e = churn_pipeline::kafka::prepare_topics(&cfg)
        .await
        .expect_err("a changelog under cleanup.policy=delete must not start");
    assert!(e.to_string().contains("cleanup.policy=delete"), "{e}");
    common::delete_topics(&broker.brokers(), &[&cfg.topics.changelog]).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Told to start empty: the changelog is created (compacted) and the service starts.
    cfg.pipeline.allow_missing_changelog = true;
    churn_pipeline::kafka::prepare_topics(&cfg)
        .await
        .expect("allowed to start with an empty state");
    churn_pipeline::kafka::prepare_topics(&cfg)
        .await
        .expect("the created changelog is compacted");
}

/// Issue #15, item 7: one changelog record the restore cannot read made `restore` fail, so the
/// service stopped — and every instance assigned the partition after it, in a crash loop. Now
/// the record is skipped, counted and logged with its offset; the service consumes everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_changelog_record_is_skipped_and_counted_not_a_wedge() {
    let dir = tempfile::tempdir().expect("tmp");
    let broker = Broker::new(dir.path(), Storage::Memory);
    let mut cfg = common::pipeline_config_on(&broker.brokers(), "corrupt", 1).await;
    common::quick_member(&mut cfg);
    common::create_with_policy(&broker.brokers(), &cfg.topics.changelog, "compact").await;
    let producer: rdkafka::producer::FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.brokers())
        .create()
        .expect("producer");
    // A binary record whose body is cut short, and bytes that are no record at all.
    for (key, value) in [
        ("cust-corrupt-1", &[0xC5u8, 4, 0xFF, 0xFF, 0xFF][..]),
        ("cust-corrupt-2", &b"{\"not\": \"a state record\""[..]),
    ] {
        producer
            .send(
                rdkafka::producer::FutureRecord::to(&cfg.topics.changelog)
                    .partition(0)
                    .key(key)
                    .payload(value),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("corrupt record produced");
    }
    let (pop, model, _) = common::population_and_model(60, 90, 5, 28);
    common::publish(&cfg, &pop.events).await;
    let metrics = consume(&cfg, &model, pop.events.len() as u64).await;
    assert_eq!(
        common::metric(&metrics, "churn_state_corrupt_records_total"),
        Some(2.0),
        "both unreadable records are counted"
    );
    // The service leaves unreadable records alone (a newer version may read them).
    let latest = common::latest_state_except(&cfg, &["cust-corrupt-1", "cust-corrupt-2"]).await;
    common::assert_exactly_once(&latest, &pop.events);
}
