//! The state changelog's record format: every record `take_changelog` writes decodes
//! ([`Snapshot::decode`]) to exactly the live engine's state of that customer; a restore from
//! those records scores exactly like the live engine; records of the earlier JSON format still
//! restore; malformed records are an error, never a panic; and a mutated record that still
//! decodes leaves a state the engine can use (it keeps decoded day rows without re-checking).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::Duration;
use churn_pipeline::config::{AlertConfig, PipelineConfig};
use churn_pipeline::engine::{Origin, Snapshot, StateRecord, STATE_MAGIC};
use churn_pipeline::{train, Engine};

fn engine(model: &Arc<churn_model::ModelArtifact>) -> Engine {
    let pipeline = PipelineConfig {
        warmup_days: 10,
        ..PipelineConfig::default()
    };
    Engine::new(model.clone(), pipeline, AlertConfig::default()).expect("engine")
}

/// The population every test here trains its model on (300 customers × 120 days).
fn population() -> churn_gen::GenConfig {
    churn_gen::GenConfig {
        customers: 300,
        days: 120,
        seed: 21,
        ..Default::default()
    }
}

/// A model trained on [`population`], and the population's events.
fn trained() -> (churn_gen::Population, Arc<churn_model::ModelArtifact>) {
    // A 28-day warm-up leaves room for the purged split's gaps in 120 days.
    let plan = churn_features::training::ObservationPlan {
        warmup_days: 28,
        ..Default::default()
    };
    let (pop, model, _) = train::synthetic(&population(), &plan).expect("model");
    (pop, Arc::new(model))
}

#[test]
fn changelog_records_decode_to_the_live_state_and_restore_it() {
    let gen = population();
    let (pop, model) = trained();
    let now = gen.end() + Duration::days(1);
    let t0 = Instant::now();

    // Events in batches, with offsets per (topic, partition) like the service, scored and
    // checkpointed after every batch; the log keeps every record in order. (No sweep: its day
    // expiry is not checkpointed until the customer changes again — features do not depend on
    // it, see `rollup::RETAIN_DAYS`.)
    let mut live = engine(&model);
    let mut log: Vec<StateRecord> = Vec::new();
    let mut offsets = [[0i64; 4]; 4];
    for chunk in pop.events.chunks(700) {
        for ev in chunk {
            let topic = match ev.payload {
                churn_events::Payload::Purchase(_) => 0,
                churn_events::Payload::Engagement(_) => 1,
                churn_events::Payload::Feedback(_) => 2,
                churn_events::Payload::Subscription(_) => 3,
            };
            let partition = ev
                .customer_id
                .bytes()
                .fold(0usize, |a, b| a.wrapping_mul(31) + b as usize)
                % 4;
            let offset = offsets[topic][partition];
            offsets[topic][partition] += 1;
            let origin = Origin {
                source: topic * 4 + partition,
                topic,
                partition: partition as i32,
                offset,
            };
            live.ingest_from(
                &ev.to_json(),
                Some(ev.customer_id.as_bytes()),
                origin,
                t0,
                now,
            );
        }
        live.score_dirty().expect("score");
        log.extend(live.take_changelog().expect("changelog"));
    }

    // Newest record per customer equals the live state, field by field.
    let mut newest: BTreeMap<&str, Snapshot> = BTreeMap::new();
    for r in &log {
        assert_eq!(r.payload.first(), Some(&STATE_MAGIC), "binary records");
        let snap = Snapshot::decode(&r.payload).expect("decodes");
        assert_eq!(snap.partition, r.partition, "{}: partition", r.key);
        // The restore reads the applied offsets of every record without the rollups.
        assert_eq!(
            Snapshot::applied_of(&r.payload),
            Some(snap.applied),
            "{}: applied offsets read alone",
            r.key
        );
        newest.insert(&r.key, snap);
    }
    assert_eq!(
        newest.keys().map(|k| k.to_string()).collect::<Vec<_>>(),
        live.customer_ids()
    );
    for (k, snap) in &newest {
        assert_eq!(Some(&snap.rollups), live.rollups(k), "{k}: rollups");
        assert!(snap.applied.iter().any(|a| *a >= 0), "{k}: applied offsets");
        // The encoding is exact: encoding the decoded record gives the same bytes.
        let again = Snapshot::decode(&snap.encode()).expect("re-decodes");
        assert_eq!(&again, snap, "{k}: re-encoded");
    }
    let alerted = newest.values().filter(|s| s.mem.band.is_some()).count();
    assert!(alerted > 0, "some alert memory is in the records");
    let pending = newest
        .values()
        .filter(|s| s.mem.outcome.get().is_some())
        .count();
    assert!(
        pending > 0,
        "some pending alert outcomes are in the records"
    );
    assert_eq!(pending, live.pending_outcomes());

    // A restore from the binary log, and one from the same records in the earlier JSON format,
    // hold the live state: same customers, same features, same scores.
    let json_log: Vec<StateRecord> = log
        .iter()
        .map(|r| StateRecord {
            payload: {
                let mut s = Snapshot::decode(&r.payload).expect("decodes");
                s.v = 1;
                serde_json::to_vec(&s).expect("json")
            },
            ..r.clone()
        })
        .collect();
    let day = churn_features::day_of(live.watermark().expect("clock"));
    let (ids, want) = live.features_as_of(day).expect("features");
    for log in [&log, &json_log] {
        let mut e = engine(&model);
        for r in log {
            e.restore(&r.key, &r.payload).expect("restore");
        }
        let (got_ids, got) = e.features_as_of(day).expect("features");
        assert_eq!(got_ids, ids);
        assert_eq!(got.len(), want.len());
        for i in 0..want.len() {
            assert_eq!(
                got.row(i),
                want.row(i),
                "features of {}",
                ids[got.cids[i] as usize]
            );
        }
        for k in &ids {
            assert_eq!(e.rollups(k), live.rollups(k), "{k}");
        }
        assert_eq!(e.pending_outcomes(), live.pending_outcomes());
    }
    let bin: usize = log.iter().map(|r| r.payload.len()).sum();
    let json: usize = json_log.iter().map(|r| r.payload.len()).sum();
    eprintln!(
        "{} records: binary {bin} B, JSON {json} B ({:.1}×)",
        log.len(),
        json as f64 / bin as f64
    );
    assert!(bin * 3 < json, "binary {bin} B vs JSON {json} B");
}

#[test]
fn malformed_state_records_are_errors() {
    let snap = Snapshot {
        v: churn_pipeline::engine::STATE_VERSION,
        partition: 3,
        applied: [5, -1, 0, i64::MAX],
        rollups: churn_features::rollups_from_events(
            &churn_gen::generate(&churn_gen::GenConfig {
                customers: 1,
                days: 60,
                seed: 2,
                ..Default::default()
            })
            .events,
        )
        .pop()
        .map(|(_, r)| r)
        .unwrap_or_default(),
        mem: Default::default(),
        last_scored_day: Some(20_100),
        revenue_at_risk: 12.5,
        first_day: None,
        unscored: true,
        closed_day: Some(20_099),
        watermark: Some(1_736_500_000_000_000),
        newest: Some(1_736_600_000_000_000),
        foreign: vec![churn_pipeline::engine::Applied {
            topic: 1,
            partition: 7,
            offset: 42,
        }],
        recent_ids: vec![7, 0x8000_0001, u32::MAX],
    };
    let bytes = snap.encode();
    assert_eq!(Snapshot::decode(&bytes).expect("decodes"), snap);
    for n in 0..bytes.len() {
        assert!(Snapshot::decode(&bytes[..n]).is_err(), "truncated to {n}");
    }
    let mut v9 = bytes.clone();
    v9[1] = 9;
    let e = Snapshot::decode(&v9).expect_err("unknown version");
    assert!(e.to_string().contains("version"), "{e}");
    let mut engine = engine(&trained().1);
    assert!(engine.restore("c", &bytes[..bytes.len() - 1]).is_err());
    assert!(engine.restore("c", b"\xc5\x02garbage").is_err());
    assert!(engine.restore("c", b"{not json").is_err());
    assert!(
        engine.customer_ids().is_empty(),
        "nothing restored from bad records"
    );
}

/// A changelog record that decodes must leave a state the engine can use: the engine keeps the
/// decoded day rows as they are and later reads them back without checking again (appending,
/// updating an older day, building features, writing the next record). So every mutation of a
/// valid record that `Snapshot::decode` accepts is restored, gets events on older, current and
/// new days, is scored, and its next record must decode again. None of it may panic.
#[test]
fn mutated_records_that_decode_stay_usable() {
    use rand::{Rng, SeedableRng};
    let gen = churn_gen::GenConfig {
        customers: 40,
        days: 90,
        seed: 5,
        ..Default::default()
    };
    let pop = churn_gen::generate(&gen);
    let model = trained().1;
    let mut source = engine(&model);
    let t0 = Instant::now();
    for ev in &pop.events {
        source.ingest_event(ev, 0, t0);
    }
    source.score_dirty().expect("score");
    let valid: Vec<Vec<u8>> = source
        .take_changelog()
        .expect("changelog")
        .into_iter()
        .map(|r| r.payload)
        .collect();
    assert_eq!(valid.len(), 40);

    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut target = engine(&model);
    let mut restored = Vec::new();
    for i in 0..4000 {
        let mut b = valid[i % valid.len()].clone();
        for _ in 0..rng.gen_range(1..=3) {
            let at = rng.gen_range(0..b.len());
            match rng.gen_range(0..4) {
                0 => b[at] ^= 1 << rng.gen_range(0..8),
                1 => b[at] = rng.gen(),
                2 => b.insert(at, rng.gen()),
                _ => {
                    b.remove(at);
                }
            }
            if b.is_empty() {
                break;
            }
        }
        if b.is_empty() || Snapshot::decode(&b).is_err() {
            continue;
        }
        let id = format!("m{i}");
        target
            .restore(&id, &b)
            .expect("a decodable record restores");
        restored.push(id);
    }
    assert!(
        restored.len() > 400,
        "enough mutations decode to mean something: {}",
        restored.len()
    );
    // Events on days before, at and after each customer's rows (a sample of real events
    // re-addressed to the mutants, shifted by up to ±120 days).
    for (n, id) in restored.iter().enumerate() {
        for k in 0..4 {
            let mut ev = pop.events[(n * 7 + k * 131) % pop.events.len()].clone();
            ev.customer_id = id.clone();
            ev.event_id = format!("{id}-{k}");
            ev.occurred_at += Duration::days(rng.gen_range(-120..120));
            target.ingest_event(&ev, 0, t0);
        }
    }
    target.score_dirty().expect("scoring mutated state");
    target.sweep().expect("sweep over mutated state");
    for r in target.take_changelog().expect("changelog") {
        if !r.payload.is_empty() {
            Snapshot::decode(&r.payload)
                .unwrap_or_else(|e| panic!("{}: the next record decodes: {e}", r.key));
        }
    }
}

/// The service writes state records in chunks (`Engine::take_changelog_chunk`): together the
/// chunks are exactly what one `take_changelog` gives — same records, tombstones first, each key
/// once — and no chunk is larger than asked.
#[test]
fn changelog_chunks_add_up_to_the_whole_changelog() {
    let (pop, model) = trained();
    let (mut whole, mut chunked) = (engine(&model), engine(&model));
    for e in [&mut whole, &mut chunked] {
        for ev in &pop.events {
            e.ingest_event(ev, 0, Instant::now());
        }
        // A customer forgotten gives a tombstone; the sweep's forgetting is not needed for it:
        // re-homing one customer to another partition tombstones its old one.
        e.expect_source(1, 1, Instant::now(), false);
        let mut moved = pop.events[pop.events.len() - 1].clone();
        moved.event_id.push_str("-moved");
        e.ingest_event(&moved, 1, Instant::now());
    }
    let all = whole.take_changelog().expect("changelog");
    assert!(all.len() > 250, "{} records", all.len());
    assert!(all.iter().any(|r| r.payload.is_empty()), "a tombstone");
    let mut got = Vec::new();
    loop {
        let chunk = chunked.take_changelog_chunk(37).expect("chunk");
        if chunk.is_empty() {
            break;
        }
        assert!(chunk.len() <= 37);
        got.extend(chunk);
    }
    assert_eq!(got, all);
    assert!(chunked
        .take_changelog_chunk(37)
        .expect("drained")
        .is_empty());
}
