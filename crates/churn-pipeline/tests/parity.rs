//! One feature code path: replaying a history through the streaming engine (micro-batches,
//! shuffled arrival order inside each batch, sweeps with rollup expiry) gives exactly the feature
//! vectors the batch path computes from the same events, at several as-of days.

use std::sync::Arc;
use std::time::Instant;

use churn_events::Event;
use churn_features::{
    day_of, day_start, feature_frame, rollups_from_events_with, Catalog, FeatureMatrix, FeatureSet,
    RollupFrames,
};
use churn_pipeline::config::{AlertConfig, PipelineConfig};
use churn_pipeline::{train, Engine};
use rand::seq::SliceRandom;
use rand::SeedableRng;

fn batch_features(
    events: &[Event],
    as_of: i32,
    features: &FeatureSet,
) -> (Vec<String>, FeatureMatrix) {
    let cutoff = day_start(as_of + 1);
    let past: Vec<&Event> = events.iter().filter(|e| e.occurred_at < cutoff).collect();
    let customers = rollups_from_events_with(past.iter().copied(), features);
    let frames = RollupFrames::build_with(customers.iter().map(|(_, c)| c), as_of, features)
        .expect("frames");
    let m = FeatureMatrix::from_frame(&feature_frame(&frames).expect("query")).expect("matrix");
    (customers.into_iter().map(|(k, _)| k).collect(), m)
}

/// A catalog over the default generator's vocabulary: counts per feature value (the rest in
/// `other`), a purchase sum, a session-duration sum, a ratio and changes.
const CATALOG: &str = r#"
[[counters]]
name = "dashboard"
feature = "dashboard"
[[counters]]
name = "reports"
kind = "feature_use"
feature = "reports"
[[counters]]
name = "spend"
event = "purchase"
sum = "amount"
[[counters]]
name = "session_s"
kind = "session"
sum = "duration_s"
[[metrics]]
name = "dashboard_28d"
count = "dashboard"
[[metrics]]
name = "reports_90d"
count = "reports"
window = 90
[[metrics]]
name = "reports_per_dashboard"
ratio = ["reports_90d", "dashboard_28d"]
[[metrics]]
name = "spend_change_28d"
change = "spend"
group = "spend_decline"
[[metrics]]
name = "session_s_change_7d"
change = "session_s"
window = 7
[[metrics]]
name = "other_7d"
count = "other"
window = 7
"#;

#[test]
fn streaming_features_equal_batch_features() {
    parity(Catalog::default());
}

#[test]
fn streaming_features_equal_batch_features_with_a_metric_catalog() {
    parity(Catalog::from_toml(CATALOG).expect("catalog"));
}

fn parity(catalog: Catalog) {
    let gen = churn_gen::GenConfig {
        customers: 250,
        days: 200,
        seed: 11,
        ..Default::default()
    };
    let features = FeatureSet::new(catalog).expect("valid catalog");
    let pop = churn_gen::generate(&gen);
    let set = train::training_set_with(&pop.events, &Default::default(), &features)
        .expect("training set");
    let (model, _, _) =
        train::train_on_set(&set, &Default::default(), train::DEFAULT_BANDS).expect("model");
    assert_eq!(model.feature_names.len(), features.len());
    let mut engine = Engine::new(
        Arc::new(model),
        PipelineConfig::default(),
        AlertConfig::default(),
    )
    .expect("engine");

    let first = day_of(pop.events[0].occurred_at);
    let checkpoints = [first + 40, first + 95, first + 150, first + 199];
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut compared = 0;
    let mut next_check = 0;
    let mut i = 0;
    while i < pop.events.len() && next_check < checkpoints.len() {
        let as_of = checkpoints[next_check];
        // Feed everything up to the end of `as_of` in batches of 700, shuffled inside a batch.
        let end = pop
            .events
            .partition_point(|e| e.occurred_at < day_start(as_of + 1));
        while i < end {
            let j = (i + 700).min(end);
            let mut batch: Vec<&Event> = pop.events[i..j].iter().collect();
            batch.shuffle(&mut rng);
            for ev in batch {
                engine.ingest_event(ev, 0, Instant::now());
            }
            engine.score_dirty().expect("score");
            engine.sweep().expect("sweep (expires old rollup days)");
            i = j;
        }
        let (skeys, smat) = engine.features_as_of(as_of).expect("streaming features");
        let (bkeys, bmat) = batch_features(&pop.events, as_of, &features);
        assert_eq!(smat.n_features(), features.len());
        let sids: Vec<&str> = smat
            .cids
            .iter()
            .map(|&c| skeys[c as usize].as_str())
            .collect();
        let bids: Vec<&str> = bmat
            .cids
            .iter()
            .map(|&c| bkeys[c as usize].as_str())
            .collect();
        assert_eq!(sids, bids, "same customers observed at day {as_of}");
        assert!(!sids.is_empty());
        for (r, sid) in sids.iter().enumerate() {
            for (k, (a, b)) in smat.row(r).iter().zip(bmat.row(r)).enumerate() {
                let tol = 1e-9 * a.abs().max(b.abs()).max(1.0);
                assert!(
                    (a - b).abs() <= tol,
                    "customer {} feature {} at day {as_of}: streaming {a} vs batch {b}",
                    sid,
                    features.defs()[k].name
                );
            }
            compared += 1;
        }
        next_check += 1;
    }
    assert_eq!(next_check, checkpoints.len(), "all checkpoints reached");
    // The last checkpoint is past the retention horizon, so expiry was exercised.
    assert!(checkpoints[3] - first > churn_features::rollup::RETAIN_DAYS);
    assert!(compared > 500, "compared {compared} vectors");
    // The catalog's metrics are not all zero (they read real counters).
    for k in churn_features::FEATURES.len()..features.len() {
        let (_, m) = engine.features_as_of(checkpoints[2]).expect("features");
        let nonzero = (0..m.len()).filter(|&r| m.row(r)[k] != 0.0).count();
        assert!(
            nonzero > 10,
            "{}: {nonzero} non-zero rows",
            features.defs()[k].name
        );
    }
}
