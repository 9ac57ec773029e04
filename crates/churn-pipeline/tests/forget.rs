//! Bounded state: the sweep forgets customers silent for `forget_after_days` and, above
//! `max_customers`, the least recently active ones; each forgotten customer gets a changelog
//! tombstone, so a restore from the changelog ends with exactly the customers (and rollups) the
//! live engine holds.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use churn_events::{Engagement, EngagementKind, Event, Payload};
use churn_pipeline::config::{AlertConfig, PipelineConfig};
use churn_pipeline::engine::StateRecord;
use churn_pipeline::{train, Engine};

fn model() -> Arc<churn_model::ModelArtifact> {
    let gen = churn_gen::GenConfig {
        customers: 300,
        days: 120,
        seed: 5,
        ..Default::default()
    };
    // A 28-day warm-up leaves room for the purged split's gaps in 120 days.
    let plan = churn_features::training::ObservationPlan {
        warmup_days: 28,
        ..Default::default()
    };
    let (_, model, _) = train::synthetic(&gen, &plan).expect("model");
    Arc::new(model)
}

fn login(n: usize, customer: &str, at: DateTime<Utc>) -> Event {
    Event {
        event_id: format!("e{n}"),
        customer_id: customer.into(),
        occurred_at: at,
        payload: Payload::Engagement(Engagement {
            kind: EngagementKind::Login,
            duration_s: None,
            feature: None,
        }),
    }
}

fn restored(model: &Arc<churn_model::ModelArtifact>, log: &[StateRecord]) -> Engine {
    let mut e = Engine::new(
        model.clone(),
        PipelineConfig::default(),
        AlertConfig::default(),
    )
    .expect("engine");
    for r in log {
        e.restore(&r.key, &r.payload).expect("restore");
    }
    e
}

#[test]
fn silent_and_over_cap_customers_are_forgotten_and_tombstoned() {
    let model = model();
    let pop = churn_gen::generate(&churn_gen::GenConfig {
        customers: 400,
        days: 150,
        seed: 8,
        ..Default::default()
    });
    let mut events = pop.events.clone();
    events.sort_by_key(|e| e.occurred_at);
    let pipeline = PipelineConfig {
        forget_after_days: 30,
        max_customers: 320,
        warmup_days: 0,
        ..Default::default()
    };
    let mut engine =
        Engine::new(model.clone(), pipeline.clone(), AlertConfig::default()).expect("engine");
    let (mut silent, mut cap) = (0, 0);
    let mut log = Vec::new();
    for chunk in events.chunks(300) {
        for ev in chunk {
            engine.ingest_event(ev, 0, Instant::now());
        }
        // The day close forgets the silent ones (with every batch), the sweep the ones over the cap.
        silent += engine.score_dirty().expect("score").forgotten_silent;
        let s = engine.sweep().expect("sweep");
        silent += s.forgotten_silent;
        cap += s.forgotten_cap;
        assert!(
            engine.kpis().customers <= pipeline.max_customers,
            "the cap holds after every sweep"
        );
        log.extend(engine.take_changelog().expect("changelog"));
    }
    assert!(silent > 0, "silent customers forgotten");
    assert!(cap > 0, "the cap forgot active customers too");
    let tombstones = log.iter().filter(|r| r.payload.is_empty()).count();
    assert_eq!(
        tombstones,
        silent + cap,
        "one tombstone per forgotten customer"
    );

    // Nobody kept is silent for `forget_after_days` as of the last closed day.
    let today = engine.closed_days()[0].1.expect("days closed");
    for id in engine.customer_ids() {
        let last = engine
            .rollups(&id)
            .and_then(|r| r.last_event)
            .expect("seen");
        let last = churn_features::day_of(DateTime::from_timestamp_micros(last).expect("time"));
        assert!(
            today - last < pipeline.forget_after_days,
            "{id} silent since day {last}, kept at day {today}"
        );
    }

    // A restore from the changelog (oldest first) holds exactly what the live engine holds.
    let back = restored(&model, &log);
    assert_eq!(back.customer_ids(), engine.customer_ids());
    // (Expiry by a sweep does not rewrite the state record, so `expired_before` may lag; the
    // rows and everything features read must agree.)
    for id in engine.customer_ids() {
        let (a, b) = (
            back.rollups(&id).expect("restored"),
            engine.rollups(&id).expect("live"),
        );
        let h = a.expired_before.max(b.expired_before).unwrap_or(i32::MIN);
        let (mut a, mut b) = (a.clone(), b.clone());
        a.expire(h);
        b.expire(h);
        assert_eq!(a, b, "{id}");
    }
}

#[test]
fn the_cap_forgets_the_least_recently_active_and_a_return_starts_fresh() {
    let model = model();
    let pipeline = PipelineConfig {
        forget_after_days: 0,
        max_customers: 2,
        ..Default::default()
    };
    let mut engine = Engine::new(model.clone(), pipeline, AlertConfig::default()).expect("engine");
    let t0 = DateTime::parse_from_rfc3339("2026-03-01T10:00:00Z")
        .expect("literal")
        .with_timezone(&Utc);
    // a: day 0 (least recent), b: day 2, c: day 1
    for (n, (c, d)) in [("a", 0), ("b", 2), ("c", 1)].into_iter().enumerate() {
        engine.ingest_event(&login(n, c, t0 + Duration::days(d)), 0, Instant::now());
    }
    engine.score_dirty().expect("score");
    let s = engine.sweep().expect("sweep");
    assert_eq!((s.forgotten_silent, s.forgotten_cap), (0, 1));
    assert_eq!(engine.customer_ids(), ["b", "c"]);
    let mut log = engine.take_changelog().expect("changelog");
    let kinds: BTreeMap<&str, bool> = log
        .iter()
        .map(|r| (r.key.as_str(), r.payload.is_empty()))
        .collect();
    assert_eq!(kinds.get("a"), Some(&true), "a tombstoned: {kinds:?}");
    // a returns: a new history (first seen now), written after its tombstone.
    engine.ingest_event(&login(9, "a", t0 + Duration::days(3)), 0, Instant::now());
    let s = engine.sweep().expect("sweep");
    assert_eq!(s.forgotten_cap, 1, "now c is the least recently active");
    assert_eq!(engine.customer_ids(), ["a", "b"]);
    log.extend(engine.take_changelog().expect("changelog"));
    let a = engine.rollups("a").expect("a is back");
    assert_eq!(a.day_count(), 1, "a's old history is gone");
    let back = restored(&model, &log);
    assert_eq!(back.customer_ids(), ["a", "b"]);
    assert_eq!(back.rollups("a"), Some(a));
}
