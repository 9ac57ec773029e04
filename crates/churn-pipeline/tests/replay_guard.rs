//! The replay guard (`Engine::ingest_from`) skips a message only when the customer's state already
//! applied its offset *on the same input (topic, partition)*. Offsets of different partitions are
//! never compared, offsets that go back (a recreated topic) are forgotten rather than turning new
//! events into "duplicates", and a message keyed by another customer is rejected. Each test
//! compares the guarded engine's state with an engine fed the same events without any guard:
//! every event applied exactly once.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Duration, TimeZone, Utc};
use churn_events::{Engagement, EngagementKind, Event, Payload};
use churn_pipeline::config::{AlertConfig, PipelineConfig};
use churn_pipeline::engine::{Ingest, Origin, Snapshot, StateRecord};
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

fn engine(model: &Arc<churn_model::ModelArtifact>) -> Engine {
    Engine::new(
        model.clone(),
        PipelineConfig::default(),
        AlertConfig::default(),
    )
    .expect("engine")
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
        occurred_at: start() + Duration::days(n as i64),
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

/// Feed `ev` as the message at `offset` of the engagement topic's `partition`, keyed by its
/// customer.
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

/// The same events without the guard (`ingest_event`): what the state must hold.
fn reference(model: &Arc<churn_model::ModelArtifact>, events: &[Event]) -> Engine {
    let mut e = engine(model);
    for ev in events {
        assert_eq!(e.ingest_event(ev, 0, Instant::now()), Ingest::Accepted);
    }
    e
}

#[test]
fn events_that_move_to_another_partition_are_all_applied_once() {
    let model = model();
    let events: Vec<Event> = (0..20).map(|n| login(n, "c1")).collect();
    let mut e = engine(&model);
    // Days 0..10 on partition 0 at offsets 0..10, then (partitions were added) days 10..20 on
    // partition 3, whose log is younger: offsets 0..10 again.
    for (i, ev) in events[..10].iter().enumerate() {
        assert_eq!(feed(&mut e, ev, 0, i as i64), Ingest::Accepted);
    }
    for (i, ev) in events[10..].iter().enumerate() {
        assert_eq!(
            feed(&mut e, ev, 3, i as i64),
            Ingest::Accepted,
            "event {} on the new partition at offset {i}",
            i + 10
        );
    }
    assert_eq!(e.partition_moves(), 1);
    let want = reference(&model, &events);
    assert_eq!(
        e.rollups("c1"),
        want.rollups("c1"),
        "every event applied once"
    );

    // Re-deliveries of either partition (a restart before offsets were stored) are replays.
    for (i, ev) in events[..10].iter().enumerate().skip(4) {
        assert_eq!(
            feed(&mut e, ev, 0, i as i64),
            Ingest::Duplicate,
            "old partition"
        );
    }
    for (i, ev) in events[10..].iter().enumerate() {
        assert_eq!(
            feed(&mut e, ev, 3, i as i64),
            Ingest::Duplicate,
            "new partition"
        );
    }
    assert_eq!(
        e.rollups("c1"),
        want.rollups("c1"),
        "replays applied nothing"
    );
}

#[test]
fn a_moved_customer_is_restored_whichever_partition_is_restored_first() {
    let model = model();
    let events: Vec<Event> = (0..12).map(|n| login(n, "c1")).collect();
    let mut e = engine(&model);
    let mut log: Vec<StateRecord> = Vec::new();
    for (i, ev) in events[..6].iter().enumerate() {
        feed(&mut e, ev, 0, 100 + i as i64);
    }
    log.extend(e.take_changelog().expect("changelog"));
    for (i, ev) in events[6..].iter().enumerate() {
        feed(&mut e, ev, 1, i as i64);
    }
    log.extend(e.take_changelog().expect("changelog"));

    // The move left a tombstone on the old partition and the state on the new one, which
    // remembers the old partition's offsets.
    let on = |p: i32| -> Vec<&StateRecord> { log.iter().filter(|r| r.partition == p).collect() };
    assert!(
        on(0).last().is_some_and(|r| r.payload.is_empty()),
        "tombstone on 0"
    );
    let newest = on(1)
        .last()
        .map(|r| Snapshot::decode(&r.payload).expect("decodes"));
    let newest = newest.expect("a record on 1");
    assert_eq!(newest.partition, 1);
    assert_eq!(newest.applied[ENGAGEMENT], 5);
    assert_eq!(newest.foreign.len(), 1);
    assert_eq!(
        (newest.foreign[0].partition, newest.foreign[0].offset),
        (0, 105)
    );

    // A restore applies the newest record per key of a partition (`lineage::resolve`).
    for order in [[0, 1], [1, 0]] {
        let mut r = engine(&model);
        for p in order {
            let rec = on(p).last().copied().expect("a record");
            r.restore_in(Some(p), &rec.key, &rec.payload)
                .expect("restore");
        }
        assert_eq!(
            r.rollups("c1"),
            e.rollups("c1"),
            "restored in order {order:?}"
        );
        // Both partitions' replays are still recognised after the restore.
        assert_eq!(feed(&mut r, &events[5], 0, 105), Ingest::Duplicate);
        assert_eq!(feed(&mut r, &events[11], 1, 5), Ingest::Duplicate);
        assert_eq!(r.rollups("c1"), e.rollups("c1"));
    }
}

#[test]
fn offsets_that_go_back_are_forgotten_instead_of_dropping_new_events() {
    let model = model();
    let events: Vec<Event> = (0..15).map(|n| login(n, "c1")).collect();
    let mut e = engine(&model);
    for (i, ev) in events[..10].iter().enumerate() {
        feed(&mut e, ev, 2, i as i64);
    }
    e.take_changelog().expect("changelog");
    // The topic is deleted and recreated: its offsets start at 0 again. Without the reset, all
    // five new events (offsets 0..5, below the applied 9) would be dropped as replays.
    assert_eq!(e.input_offsets_reset(ENGAGEMENT, 2, 0), 1);
    assert_eq!(
        e.input_offsets_reset(ENGAGEMENT, 7, 0),
        0,
        "other partition"
    );
    let changed = e.take_changelog().expect("changelog");
    assert_eq!(changed.len(), 1, "the forgotten offsets are checkpointed");
    let snap = Snapshot::decode(&changed[0].payload).expect("decodes");
    assert_eq!(snap.applied[ENGAGEMENT], -1);
    for (i, ev) in events[10..].iter().enumerate() {
        assert_eq!(
            feed(&mut e, ev, 2, i as i64),
            Ingest::Accepted,
            "offset {i}"
        );
    }
    assert_eq!(
        e.rollups("c1"),
        reference(&model, &events).rollups("c1"),
        "every event applied once"
    );
    assert_eq!(feed(&mut e, &events[14], 2, 4), Ingest::Duplicate);
}

#[test]
fn a_message_keyed_by_another_customer_is_rejected() {
    let model = model();
    let mut e = engine(&model);
    let ev = login(1, "c1");
    let origin = Origin {
        source: 0,
        topic: ENGAGEMENT,
        partition: 0,
        offset: 0,
    };
    let got = e.ingest_from(&ev.to_json(), Some(b"c2"), origin, Instant::now(), now());
    match got {
        Ingest::Rejected(r) => assert_eq!(r.code(), "key_mismatch"),
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert!(e.rollups("c1").is_none() && e.rollups("c2").is_none());
    let none = e.ingest_from(&ev.to_json(), None, origin, Instant::now(), now());
    assert_eq!(none, Ingest::Accepted, "a message without a key is applied");
}

#[test]
fn equal_event_ids_of_two_customers_are_both_applied() {
    let model = model();
    let mut e = engine(&model);
    let mut a = login(3, "alice");
    let mut b = login(3, "bob");
    a.event_id = "order-1".into();
    b.event_id = "order-1".into();
    assert_eq!(feed(&mut e, &a, 0, 0), Ingest::Accepted);
    assert_eq!(
        feed(&mut e, &b, 0, 1),
        Ingest::Accepted,
        "bob's order-1 is his own"
    );
    assert!(e.rollups("bob").is_some());
    assert_eq!(
        feed(&mut e, &a, 0, 2),
        Ingest::Duplicate,
        "alice's again (dedupe)"
    );
}
