//! The event-time watermark waits for every assigned input partition: a sparse partition that is
//! fetched first cannot move the clock (and so the warm-up and silence detection) to its end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use churn_features::day_of;
use churn_pipeline::config::{AlertConfig, PipelineConfig};
use churn_pipeline::{train, Engine};

fn engine() -> (Engine, Vec<churn_events::Event>) {
    let gen = churn_gen::GenConfig {
        customers: 120,
        days: 120,
        seed: 2,
        ..Default::default()
    };
    let plan = churn_features::training::ObservationPlan {
        warmup_days: 28,
        ..Default::default()
    };
    let (pop, model, _) = train::synthetic(&gen, &plan).expect("model");
    let e = Engine::new(
        Arc::new(model),
        PipelineConfig::default(),
        AlertConfig::default(),
    )
    .expect("engine");
    (e, pop.events)
}

#[test]
fn announced_sources_hold_the_watermark_until_they_deliver_or_go_idle() {
    let (mut e, events) = engine();
    let early = &events[10];
    let late = events.last().expect("events");
    assert!(day_of(late.occurred_at) - day_of(early.occurred_at) > 100);
    let idle = Duration::from_millis(PipelineConfig::default().idle_source_ms);
    let t0 = Instant::now();

    e.expect_source(0, t0, true);
    e.expect_source(1, t0, true);
    // Partition 0 delivers months of history first; partition 1 has not answered yet.
    e.ingest_event(late, 0, t0);
    e.advance_watermark(Utc::now(), t0);
    assert_eq!(e.watermark(), None, "held while partition 1 is pending");
    // Partition 1 delivers the start of its backlog: the clock starts there, not at the end.
    e.ingest_event(early, 1, t0);
    e.advance_watermark(Utc::now(), t0);
    assert_eq!(e.watermark(), Some(early.occurred_at));

    // However long the clock was held, the history it counts (for the warm-up) starts at the
    // oldest event ingested meanwhile, not at the first watermark.
    let (mut e, _) = engine();
    e.expect_source(0, t0, true);
    e.expect_source(1, t0, true);
    let late2 = &events[events.len() - 2];
    e.ingest_event(early, 0, t0);
    e.ingest_event(late, 0, t0);
    e.ingest_event(late2, 1, t0);
    e.advance_watermark(Utc::now(), t0);
    assert_eq!(e.watermark(), Some(late2.occurred_at.min(late.occurred_at)));
    let rec = e.take_changelog().expect("changelog");
    let snap = churn_pipeline::engine::Snapshot::decode(&rec.first().expect("a customer").payload)
        .expect("snapshot");
    assert_eq!(snap.first_day, Some(day_of(early.occurred_at)));

    // A slow partition holds the clock even while the other one keeps delivering; one that never
    // delivers (its backlog vanished) holds it only for HOLD_FACTOR × `idle_source_ms`.
    let (mut e, _) = engine();
    e.expect_source(0, t0, true);
    e.expect_source(1, t0, true);
    let busy = t0 + idle * 3;
    e.ingest_event(late, 0, busy);
    e.advance_watermark(Utc::now(), busy);
    assert_eq!(
        e.watermark(),
        None,
        "partition 1 has a backlog: wait for it"
    );
    let give_up = t0 + idle * churn_pipeline::engine::HOLD_FACTOR + Duration::from_millis(1);
    e.ingest_event(late, 0, give_up);
    e.advance_watermark(Utc::now(), give_up);
    assert_eq!(e.watermark(), Some(late.occurred_at));

    // A partition that was empty at assignment holds the clock only for `idle_source_ms`.
    let (mut e, _) = engine();
    e.expect_source(0, t0, false);
    e.expect_source(1, t0, false);
    e.ingest_event(late, 0, t0);
    e.advance_watermark(Utc::now(), t0 + idle / 2);
    assert_eq!(e.watermark(), None);
    let later = t0 + idle + Duration::from_millis(1);
    e.ingest_event(late, 0, later);
    e.advance_watermark(Utc::now(), later);
    assert_eq!(e.watermark(), Some(late.occurred_at));

    // A revoked partition neither holds nor sets the clock any more.
    let (mut e, _) = engine();
    e.expect_source(0, t0, true);
    e.expect_source(1, t0, true);
    e.ingest_event(early, 0, t0);
    e.advance_watermark(Utc::now(), t0);
    assert_eq!(e.watermark(), None);
    e.forget_source(1, t0);
    e.advance_watermark(Utc::now(), t0);
    assert_eq!(e.watermark(), Some(early.occurred_at));
}

#[test]
fn events_applied_while_the_clock_was_held_are_scored_by_the_next_owner() {
    let (mut first, events) = engine();
    let t0 = Instant::now();
    first.expect_source(0, t0, true);
    first.expect_source(1, t0, true);
    for ev in &events[..500] {
        first.ingest_event(ev, 0, t0);
    }
    let scored = first.score_dirty().expect("score");
    assert!(scored.scores.is_empty(), "clock held: nothing scored yet");
    // The partition moves to another instance, which restores the changelog.
    let records = first.take_changelog().expect("changelog");
    assert!(!records.is_empty());
    let (mut next, _) = engine();
    for r in &records {
        next.restore(&r.key, &r.payload).expect("restore");
    }
    next.ingest_event(&events[500], 0, t0);
    let scored = next.score_dirty().expect("score");
    assert_eq!(
        scored.scores.len(),
        records.len() + usize::from(!records.iter().any(|r| r.key == events[500].customer_id)),
        "every restored customer with unscored events is scored"
    );
}

/// A customer whose every event is ahead of the watermark (its partition runs ahead) has no
/// history as of the watermark's day: it is not scored yet, stays pending, and is scored by the
/// first pass after the watermark reaches it — without needing another event of its own.
#[test]
fn a_customer_ahead_of_the_watermark_is_scored_once_the_clock_reaches_it() {
    let (mut e, events) = engine();
    let t0 = Instant::now();
    let early = &events[10];
    let ahead = events
        .iter()
        .rev()
        .find(|ev| ev.customer_id != early.customer_id)
        .expect("another customer");
    let (ahead_day, early_day) = (day_of(ahead.occurred_at), day_of(early.occurred_at));
    assert!(ahead_day > early_day + 30);
    let mut ahead = ahead.clone();
    ahead.customer_id = "newcomer".into();
    e.ingest_event(&ahead, 1, t0);
    e.ingest_event(early, 0, t0);
    let out = e.score_dirty().expect("score");
    assert_eq!(
        e.watermark().map(day_of),
        Some(early_day),
        "clock at the slow partition"
    );
    let scored = |out: &churn_pipeline::Scored, k: &str| out.scores.iter().any(|s| s.key == k);
    assert!(scored(&out, &early.customer_id));
    assert!(
        !scored(&out, "newcomer"),
        "no history as of the watermark yet"
    );
    let rec = e.take_changelog().expect("changelog");
    let snap = rec
        .iter()
        .find(|r| r.key == "newcomer")
        .map(|r| churn_pipeline::engine::Snapshot::decode(&r.payload).expect("snapshot"))
        .expect("newcomer checkpointed");
    assert!(snap.unscored, "checkpointed as not scored yet");
    // The slow partition catches up (an event of another customer): the newcomer is scored.
    let mut catch_up = early.clone();
    catch_up.event_id.push_str("-later");
    catch_up.occurred_at = ahead.occurred_at;
    e.ingest_event(&catch_up, 0, t0);
    let out = e.score_dirty().expect("score");
    assert!(
        scored(&out, "newcomer"),
        "scored once the watermark reached it"
    );
}
