//! Duplicate events (same customer, same `event_id`) arriving at *new* offsets — the ingest stage
//! re-forwarding after a crash, a producer retrying, a source re-sent by its owner — are dropped
//! by the customer's own window of recent event ids, which is part of the customer's state:
//! it survives a restart (restore from the changelog) and the revoke of other partitions. The
//! offset replay guard cannot catch these: their offsets are new. Each test compares the state
//! with an engine fed every event exactly once.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Duration, TimeZone, Utc};
use churn_events::{Engagement, EngagementKind, Event, Payload};
use churn_pipeline::config::{AlertConfig, PipelineConfig};
use churn_pipeline::engine::{Ingest, Origin, Snapshot};
use churn_pipeline::{train, Engine};

const ENGAGEMENT: usize = 1;

fn model() -> Arc<churn_model::ModelArtifact> {
    let gen = churn_gen::GenConfig {
        customers: 300,
        days: 120,
        seed: 9,
        ..Default::default()
    };
    let plan = churn_features::training::ObservationPlan {
        warmup_days: 28,
        ..Default::default()
    };
    let (_, model, _) = train::synthetic(&gen, &plan).expect("model");
    Arc::new(model)
}

fn engine_with(model: &Arc<churn_model::ModelArtifact>, pipeline: PipelineConfig) -> Engine {
    Engine::new(model.clone(), pipeline, AlertConfig::default()).expect("engine")
}

fn engine(model: &Arc<churn_model::ModelArtifact>) -> Engine {
    engine_with(model, PipelineConfig::default())
}

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0)
        .single()
        .expect("date")
}

fn login(n: usize, customer: &str) -> Event {
    Event {
        event_id: format!("{customer}-e{n}"),
        customer_id: customer.into(),
        occurred_at: start() + Duration::days(n as i64) + Duration::minutes(n as i64),
        payload: Payload::Engagement(Engagement {
            kind: EngagementKind::Login,
            duration_s: Some(n as f64),
            feature: None,
        }),
    }
}

fn now() -> DateTime<Utc> {
    start() + Duration::days(400)
}

/// Feed `ev` as the message at `offset` of the engagement topic's `partition`.
fn feed(e: &mut Engine, ev: &Event, partition: i32, offset: i64) -> Ingest {
    let origin = Origin {
        source: ENGAGEMENT * 100 + partition as usize,
        topic: ENGAGEMENT,
        partition,
        offset,
    };
    e.ingest_from(
        &ev.to_json(),
        Some(ev.customer_id.as_bytes()),
        origin,
        Instant::now(),
        now(),
    )
}

/// Every event once, without any guard: what the state must hold.
fn reference(model: &Arc<churn_model::ModelArtifact>, events: &[Event]) -> Engine {
    let mut e = engine(model);
    for ev in events {
        assert_eq!(e.ingest_event(ev, 0, Instant::now()), Ingest::Accepted);
    }
    e
}

/// A restarted process: a new engine restored from the newest changelog record of each key.
fn restart(
    model: &Arc<churn_model::ModelArtifact>,
    log: &[churn_pipeline::engine::StateRecord],
) -> Engine {
    let mut newest = std::collections::BTreeMap::new();
    for r in log {
        newest.insert((r.partition, r.key.clone()), r.payload.clone());
    }
    let mut e = engine(model);
    for ((p, k), payload) in newest {
        e.restore_in(Some(p), &k, &payload).expect("restore");
    }
    e
}

#[test]
fn re_forwarded_events_are_not_applied_twice_after_a_restart() {
    let model = model();
    let events: Vec<Event> = (0..12).map(|n| login(n, "c1")).collect();
    let mut e = engine(&model);
    for (i, ev) in events.iter().enumerate() {
        assert_eq!(feed(&mut e, ev, 0, i as i64), Ingest::Accepted);
    }
    let log = e.take_changelog().expect("changelog");
    // The scorer restarts, and the ingest stage (which crashed after forwarding the last few
    // but before storing its offsets) forwards them again: same events, new offsets.
    let mut r = restart(&model, &log);
    let from = events.len() - PipelineConfig::default().dedupe_per_customer;
    for (i, ev) in events[from..].iter().enumerate() {
        assert_eq!(
            feed(&mut r, ev, 0, 100 + i as i64),
            Ingest::Duplicate,
            "re-forwarded event {}",
            i + from
        );
    }
    assert_eq!(
        r.rollups("c1"),
        reference(&model, &events).rollups("c1"),
        "every event applied once"
    );
    // A new event is still applied.
    assert_eq!(feed(&mut r, &login(12, "c1"), 0, 108), Ingest::Accepted);
}

#[test]
fn the_revoke_of_another_partition_keeps_a_customers_window() {
    let model = model();
    let n = PipelineConfig::default().dedupe_per_customer;
    let a: Vec<Event> = (0..n).map(|n| login(n, "alice")).collect();
    let b: Vec<Event> = (0..n).map(|n| login(n, "bob")).collect();
    let mut e = engine(&model);
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(feed(&mut e, x, 0, i as i64), Ingest::Accepted);
        assert_eq!(feed(&mut e, y, 1, i as i64), Ingest::Accepted);
    }
    // Partition 1 is revoked; alice's partition 0 stays. Her events re-sent at new offsets are
    // still duplicates.
    e.drop_partition(1);
    for (i, x) in a.iter().enumerate() {
        assert_eq!(
            feed(&mut e, x, 0, 50 + i as i64),
            Ingest::Duplicate,
            "alice {i}"
        );
    }
    assert_eq!(e.rollups("alice"), reference(&model, &a).rollups("alice"));
    assert!(e.rollups("bob").is_none(), "bob went with his partition");
}

#[test]
fn the_window_is_the_customers_last_n_events_and_is_configurable() {
    let model = model();
    let events: Vec<Event> = (0..20).map(|n| login(n, "c1")).collect();
    let window = PipelineConfig::default().dedupe_per_customer;
    assert!(window >= 4, "default window {window}");
    let mut e = engine(&model);
    for (i, ev) in events.iter().enumerate() {
        feed(&mut e, ev, 0, i as i64);
    }
    let log = e.take_changelog().expect("changelog");
    let snap = Snapshot::decode(&log[log.len() - 1].payload).expect("decodes");
    assert_eq!(snap.recent_ids.len(), window.min(events.len()), "ids kept");
    let r = restart(&model, &log);
    // The last `window` events are remembered after the restart, older ones are not (the
    // in-memory window of the process before did not survive it).
    let mut r = r;
    let newest = &events[events.len() - window..];
    for (i, ev) in newest.iter().enumerate() {
        assert_eq!(
            feed(&mut r, ev, 0, 1000 + i as i64),
            Ingest::Duplicate,
            "recent {i}"
        );
    }
    let older = &events[events.len() - window - 1];
    assert_eq!(
        feed(&mut r, older, 0, 2000),
        Ingest::Accepted,
        "older than the window"
    );

    // 0 turns the customer's window off: only offsets and the in-memory window are left.
    let off = PipelineConfig {
        dedupe_per_customer: 0,
        ..PipelineConfig::default()
    };
    let mut e = engine_with(&model, off.clone());
    for (i, ev) in events[..3].iter().enumerate() {
        feed(&mut e, ev, 0, i as i64);
    }
    let log = e.take_changelog().expect("changelog");
    let snap = Snapshot::decode(&log[0].payload).expect("decodes");
    assert!(snap.recent_ids.is_empty());
}

#[test]
fn records_of_the_previous_version_restore_with_an_empty_window() {
    let model = model();
    let mut e = engine(&model);
    for (i, ev) in (0..5).map(|n| login(n, "c1")).enumerate() {
        feed(&mut e, &ev, 0, i as i64);
    }
    let log = e.take_changelog().expect("changelog");
    let mut snap = Snapshot::decode(&log[0].payload).expect("decodes");
    assert_eq!(snap.v, churn_pipeline::engine::STATE_VERSION);
    snap.v = 4;
    snap.recent_ids.clear();
    let v4 = snap.encode();
    let back = Snapshot::decode(&v4).expect("a version-4 record decodes");
    assert_eq!(back.v, 4);
    assert!(back.recent_ids.is_empty());
    assert_eq!(back.rollups, snap.rollups);
}
