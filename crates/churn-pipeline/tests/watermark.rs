//! Each input partition keeps its own event-time clock, which waits for every topic of the
//! partition: a sparse topic that is fetched first cannot move the clock (and so the warm-up and
//! silence detection) to its end. Customers are scored when their partition closes a day, so what
//! is scored and alerted does not depend on batch boundaries or fetch order.

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

    e.expect_source(0, 0, t0, true);
    e.expect_source(1, 1, t0, true);
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
    e.expect_source(0, 0, t0, true);
    e.expect_source(1, 1, t0, true);
    let late2 = &events[events.len() - 2];
    e.ingest_event(early, 0, t0);
    e.ingest_event(late, 0, t0);
    e.ingest_event(late2, 1, t0);
    e.advance_watermark(Utc::now(), t0);
    assert_eq!(e.watermark(), Some(late2.occurred_at.min(late.occurred_at)));
    let rec = e.take_changelog().expect("changelog");
    // The customer's events came on both partitions, so its state moved to partition 1 and
    // partition 0 got a tombstone (empty payload); the state itself is the other record.
    let state = rec
        .iter()
        .find(|r| !r.payload.is_empty())
        .expect("a customer");
    let snap = churn_pipeline::engine::Snapshot::decode(&state.payload).expect("snapshot");
    assert_eq!(snap.first_day, Some(day_of(early.occurred_at)));

    // A slow partition holds the clock even while the other one keeps delivering; one that never
    // delivers (its backlog vanished) holds it only for HOLD_FACTOR × `idle_source_ms`.
    let (mut e, _) = engine();
    e.expect_source(0, 0, t0, true);
    e.expect_source(1, 1, t0, true);
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
    e.expect_source(0, 0, t0, false);
    e.expect_source(1, 1, t0, false);
    e.ingest_event(late, 0, t0);
    e.advance_watermark(Utc::now(), t0 + idle / 2);
    assert_eq!(e.watermark(), None);
    let later = t0 + idle + Duration::from_millis(1);
    e.ingest_event(late, 0, later);
    e.advance_watermark(Utc::now(), later);
    assert_eq!(e.watermark(), Some(late.occurred_at));

    // A revoked partition neither holds nor sets the clock any more.
    let (mut e, _) = engine();
    e.expect_source(0, 0, t0, true);
    e.expect_source(1, 1, t0, true);
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
    // Two topics of partition 0; only the first delivers.
    first.expect_source(0, 0, t0, true);
    first.expect_source(1, 0, t0, true);
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
    assert_eq!(
        next.pending(),
        records.len(),
        "restored with unscored events"
    );
    // An event of a later day closes every day of the restored history.
    let last_day = day_of(events[499].occurred_at);
    let later = events[500..]
        .iter()
        .find(|e| day_of(e.occurred_at) > last_day)
        .expect("a later day");
    next.ingest_event(later, 0, t0);
    let scored = next.score_dirty().expect("score");
    let keys: std::collections::BTreeSet<&str> =
        scored.scores.iter().map(|s| s.key.as_str()).collect();
    for r in &records {
        assert!(
            keys.contains(r.key.as_str()),
            "{} scored by the next owner",
            r.key
        );
    }
}

/// The same input in two arrival orders — time order in small batches, and per-topic runs
/// interleaved as a consumer fetches them, in large batches — gives the same scores (customer,
/// as-of day, risk) and the same alert ids: scoring is a function of the input, not of timing.
#[test]
fn scores_and_alerts_do_not_depend_on_batching_or_fetch_order() {
    use rand::{Rng, SeedableRng};
    let run = |order: &[&churn_events::Event], batches: &[usize]| {
        let (mut e, _) = engine();
        let t0 = Instant::now();
        for s in 0..4 {
            e.expect_source(s, 0, t0, true);
        }
        let mut scores = std::collections::BTreeSet::new();
        let mut alerts = std::collections::BTreeSet::new();
        let mut keep = |out: churn_pipeline::Scored| {
            for s in out.scores {
                let v: serde_json::Value = serde_json::from_slice(&s.payload).expect("score");
                // Risk to 6 decimals: float sums differ in the last bits with addition order.
                let risk = (v["risk"].as_f64().unwrap_or(-1.0) * 1e6).round() as i64;
                let as_of = v["as_of"].as_str().unwrap_or_default().to_string();
                scores.insert((s.key, as_of, risk));
            }
            alerts.extend(out.alerts.into_iter().map(|a| a.id));
        };
        let mut rest = order;
        let mut i = 0;
        while !rest.is_empty() {
            let n = batches[i % batches.len()].min(rest.len());
            i += 1;
            for ev in &rest[..n] {
                e.ingest_event(ev, topic(ev), t0);
            }
            rest = &rest[n..];
            keep(e.score_dirty().expect("score"));
        }
        // The end of the input: every source goes idle, the clock moves to the newest event.
        e.advance_watermark(Utc::now(), t0 + Duration::from_secs(3600));
        keep(e.score_dirty().expect("score"));
        (scores, alerts)
    };
    fn topic(ev: &churn_events::Event) -> usize {
        match ev.payload {
            churn_events::Payload::Purchase(_) => 0,
            churn_events::Payload::Engagement(_) => 1,
            churn_events::Payload::Feedback(_) => 2,
            _ => 3,
        }
    }
    let (_, events) = engine();
    let in_time: Vec<&churn_events::Event> = events.iter().collect();
    // Fetch order: each topic in its own order, runs of 50-3000 taken from topics at random.
    let mut by_topic: Vec<std::collections::VecDeque<&churn_events::Event>> =
        vec![Default::default(); 4];
    for ev in &events {
        by_topic[topic(ev)].push_back(ev);
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let mut fetched = Vec::with_capacity(events.len());
    while by_topic.iter().any(|q| !q.is_empty()) {
        let t = rng.gen_range(0..4);
        for _ in 0..rng.gen_range(50..3000) {
            match by_topic[t].pop_front() {
                Some(ev) => fetched.push(ev),
                None => break,
            }
        }
    }
    let (s1, a1) = run(&in_time, &[300]);
    let (s2, a2) = run(&fetched, &[7000, 1500, 20000]);
    assert!(a1.len() > 10, "the model alerts ({} alerts)", a1.len());
    assert!(s1.len() > 1000, "scores ({})", s1.len());
    assert_eq!(
        s1, s2,
        "the same customers scored as of the same days, to the same risk"
    );
    assert_eq!(a1, a2, "the same alert ids");
}

/// A restored partition resumes its clock where the checkpoint left it: the days its previous
/// owner had not closed yet close on the new owner exactly as they would have on the old one,
/// even when no event of the partition is left to read.
#[test]
fn a_restored_partition_resumes_its_clock_without_new_events() {
    let scored = |out: churn_pipeline::Scored| -> std::collections::BTreeSet<(String, String)> {
        out.scores
            .into_iter()
            .map(|s| {
                let v: serde_json::Value = serde_json::from_slice(&s.payload).expect("score");
                let risk = (v["risk"].as_f64().unwrap_or(-1.0) * 1e6).round() as i64;
                (s.key, format!("{} {risk}", v["as_of"]))
            })
            .collect()
    };
    let (mut old, events) = engine();
    let t0 = Instant::now();
    old.expect_source(0, 0, t0, true);
    old.expect_source(1, 0, t0, true);
    // One topic delivered everything, the other only the start: the clock is at the start.
    for ev in &events {
        old.ingest_event(ev, 0, t0);
    }
    for ev in &events[..300] {
        old.ingest_event(ev, 1, t0);
    }
    old.score_dirty().expect("score");
    let records = old.take_changelog().expect("changelog");
    let mut new = engine().0;
    for r in &records {
        new.restore(&r.key, &r.payload).expect("restore");
    }
    assert_eq!(new.watermark(), old.watermark(), "the clock is restored");
    assert_eq!(new.closed_days(), old.closed_days(), "and the closed days");
    // Both topics go idle: the old owner's clock moves to the newest event and closes the rest.
    let later = t0 + Duration::from_secs(3600);
    old.advance_watermark(Utc::now(), later);
    let on_old = scored(old.score_dirty().expect("score"));
    new.advance_watermark(Utc::now(), later);
    let on_new = scored(new.score_dirty().expect("score"));
    assert!(on_old.len() > 100, "days left to close ({})", on_old.len());
    assert_eq!(on_new, on_old, "the new owner closes them the same way");
}
