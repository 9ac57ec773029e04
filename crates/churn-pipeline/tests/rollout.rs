//! Model rollout without restarts, in the engine and on files (the service loop that calls these
//! is tested on the broker in tests/rollout.rs at the workspace root):
//! - a shadow model scores exactly the rows the live model scores, on the same feature row: the
//!   live model as its own shadow agrees on every customer, another model does not everywhere;
//! - `replace_model` swaps the model between two batches and keeps every customer's state: the
//!   scores after the swap equal those of an engine that ran the second model from the start;
//! - a model of another metric catalog, a corrupt file or a tampered artifact are refused, and
//!   `promote` leaves the live file untouched when it refuses.

use std::sync::Arc;
use std::time::Instant;

use churn_events::{Event, ShadowScore};
use churn_model::ModelArtifact;
use churn_pipeline::config::{AlertConfig, PipelineConfig};
use churn_pipeline::{rollout, train, Config, Engine, Scored};

fn trained(seed: u64) -> (Vec<Event>, ModelArtifact) {
    let (pop, model, _) = train::synthetic(
        &churn_gen::GenConfig {
            customers: 700,
            days: 150,
            seed,
            ..Default::default()
        },
        &churn_features::training::ObservationPlan {
            warmup_days: 28,
            ..Default::default()
        },
    )
    .expect("model");
    (pop.events, model)
}

fn engine(model: &Arc<ModelArtifact>) -> Engine {
    let pipeline = PipelineConfig {
        warmup_days: 28,
        ..PipelineConfig::default()
    };
    Engine::new(model.clone(), pipeline, AlertConfig::default()).expect("engine")
}

/// Feed `events` in batches of 2 000 (scoring and sweeping after each); `between` runs before
/// batch `at`. Returns every pass's outputs.
fn run(
    e: &mut Engine,
    events: &[Event],
    at: usize,
    mut between: impl FnMut(&mut Engine),
) -> Vec<Scored> {
    let mut out = Vec::new();
    for (i, chunk) in events.chunks(2_000).enumerate() {
        if i == at {
            between(e);
        }
        let now = Instant::now();
        for ev in chunk {
            e.ingest_event(ev, 0, now);
        }
        out.push(e.score_dirty().expect("score"));
        out.push(e.sweep().expect("sweep"));
    }
    out
}

fn scores(passes: &[Scored]) -> Vec<churn_events::ScoreRecord> {
    passes
        .iter()
        .flat_map(|s| &s.scores)
        .map(|s| serde_json::from_slice(&s.payload).expect("score record"))
        .collect()
}

fn shadows(passes: &[Scored]) -> Vec<ShadowScore> {
    passes
        .iter()
        .flat_map(|s| &s.shadow)
        .map(|s| serde_json::from_slice(&s.payload).expect("shadow record"))
        .collect()
}

#[test]
fn a_shadow_scores_the_live_rows_and_agreement_is_counted() {
    let (events, a) = trained(3);
    let (_, b) = trained(4);
    assert_ne!(a.model_version, b.model_version);
    let (a, b) = (Arc::new(a), Arc::new(b));

    // The live model as its own shadow: every scored customer, the same risk, full agreement.
    let mut e = engine(&a);
    e.set_shadow(Some(a.clone())).expect("same features");
    let passes = run(&mut e, &events, usize::MAX, |_| {});
    let (live, shadow) = (scores(&passes), shadows(&passes));
    assert!(live.len() > 1_000, "{} scores", live.len());
    assert_eq!(shadow.len(), live.len());
    for (l, s) in live.iter().zip(&shadow) {
        assert_eq!(l.customer_id, s.customer_id);
        assert_eq!(l.as_of, s.as_of);
        assert_eq!(l.risk, s.live_risk);
        assert_eq!(s.risk, s.live_risk);
        assert_eq!((s.alert, &s.risk_band), (s.live_alert, &s.live_band));
    }
    let outs: Vec<_> = passes.iter().flat_map(|s| &s.shadow).collect();
    assert!(outs.iter().all(|o| o.agreement() == "same_band"));

    // Another model: the same rows, the live side unchanged, and not everywhere the same band.
    let mut e = engine(&a);
    e.set_shadow(Some(b.clone())).expect("same features");
    let passes = run(&mut e, &events, usize::MAX, |_| {});
    let (live2, shadow) = (scores(&passes), shadows(&passes));
    assert_eq!(live2, live, "a shadow never changes the live scores");
    assert_eq!(shadow.len(), live.len());
    assert!(shadow
        .iter()
        .all(|s| s.model_version == b.model_version && s.live_model_version == a.model_version));
    let outs: Vec<_> = passes.iter().flat_map(|s| &s.shadow).collect();
    let differ = outs.iter().filter(|o| o.agreement() != "same_band").count();
    assert!(
        differ > 0,
        "two models trained on other data agree on every band"
    );
    assert!(differ < outs.len() / 2, "{differ} of {} differ", outs.len());
    for o in &outs {
        let record = shadow
            .iter()
            .find(|s| s.customer_id == o.key)
            .expect("record");
        assert_eq!(o.key, record.customer_id);
    }

    // Stopping the shadow stops its output.
    e.set_shadow(None).expect("stop");
    assert!(e.shadow().is_none());
}

#[test]
fn replace_model_keeps_the_state_and_serves_the_new_model_from_the_next_batch() {
    let (events, a) = trained(3);
    let (_, b) = trained(4);
    let (a, b) = (Arc::new(a), Arc::new(b));
    let swap_at = events.len() / 2_000 / 2;
    let mut swapped = engine(&a);
    let passes = run(&mut swapped, &events, swap_at, |e| {
        e.replace_model(b.clone()).expect("same catalog");
    });
    let mut only_b = engine(&b);
    let reference = run(&mut only_b, &events, usize::MAX, |_| {});
    let after: Vec<_> = scores(&passes[swap_at * 2..]);
    let want: Vec<_> = scores(&reference[swap_at * 2..]);
    assert!(!after.is_empty());
    assert!(after.iter().all(|s| s.model_version == b.model_version));
    assert!(scores(&passes[..swap_at * 2])
        .iter()
        .all(|s| s.model_version == a.model_version));
    // The rollups do not depend on the model: the new model scores what it would have scored
    // had it served from the start.
    let risks = |v: &[churn_events::ScoreRecord]| -> Vec<(String, String, f64)> {
        v.iter()
            .map(|s| (s.customer_id.clone(), s.as_of.to_rfc3339(), s.risk))
            .collect()
    };
    assert_eq!(risks(&after), risks(&want));
    assert_eq!(swapped.kpis().customers, only_b.kpis().customers);
}

/// A model trained with a metric catalog the (default) configuration does not have.
fn with_other_catalog() -> ModelArtifact {
    let catalog = churn_features::Catalog::from_toml(
        r#"
[[counters]]
name = "reports"
feature = "reports"
[[metrics]]
name = "reports_28d"
count = "reports"
"#,
    )
    .expect("catalog");
    let pop = churn_gen::generate(&churn_gen::GenConfig {
        customers: 300,
        days: 150,
        seed: 5,
        ..Default::default()
    });
    let features = churn_features::FeatureSet::new(catalog).expect("valid");
    let set = train::training_set_with(&pop.events, &Default::default(), &features).expect("set");
    let params = churn_model::TrainParams {
        alphas: train::DEFAULT_ALPHAS.to_vec(),
        ..Default::default()
    };
    train::train_on_set(&set, &params, train::DEFAULT_BANDS)
        .expect("model")
        .0
}

#[test]
fn invalid_models_are_refused_and_promote_keeps_the_live_file() {
    let (_, a) = trained(3);
    let (_, b) = trained(4);
    let cfg = Config::default();
    let a = Arc::new(a);
    let mut e = engine(&a);

    // Another feature set cannot be swapped into a running engine.
    let other = with_other_catalog();
    assert!(e.replace_model(Arc::new(other.clone())).is_err());
    assert!(e.set_shadow(Some(Arc::new(other))).is_err());
    assert_eq!(e.model().model_version, a.model_version);
    assert!(e.shadow().is_none());

    let dir = tempfile::tempdir().expect("tempdir");
    let live = dir.path().join("model.json");
    let good = dir.path().join("candidate.json");
    a.save(&live).expect("save live");
    b.save(&good).expect("save candidate");
    let live_bytes = std::fs::read(&live).expect("read");

    // A half-written file, a tampered coefficient, garbage.
    let text = std::fs::read_to_string(&good).expect("read");
    let half = &text[..text.len() / 2];
    let tampered = text.replacen("\"intercept\":", "\"intercept\":1e3+", 1);
    let mut value: serde_json::Value = serde_json::from_str(&text).expect("json");
    value["intercept"] = serde_json::json!(12.5);
    let edited = serde_json::to_string(&value).expect("json");
    for (what, bad) in [
        ("half a file", half),
        ("not JSON", tampered.as_str()),
        ("an edited coefficient (hash mismatch)", edited.as_str()),
        ("garbage", "\u{0}\u{1}binary"),
    ] {
        let err = rollout::load_text(bad, &good, &cfg);
        assert!(err.is_err(), "{what} must be refused");
        let p = dir.path().join("bad.json");
        std::fs::write(&p, bad).expect("write");
        assert!(rollout::promote(&p, &live, &cfg).is_err(), "{what}");
        assert_eq!(std::fs::read(&live).expect("read"), live_bytes, "{what}");
    }
    // A catalog the configuration does not have.
    let p = dir.path().join("other.json");
    with_other_catalog().save(&p).expect("save");
    assert!(rollout::promote(&p, &live, &cfg).is_err());
    assert_eq!(std::fs::read(&live).expect("read"), live_bytes);

    // A valid candidate replaces the file whole; no temporary file is left behind.
    let version = rollout::promote(&good, &live, &cfg).expect("promote");
    assert_eq!(version, b.model_version);
    assert_eq!(
        std::fs::read(&live).expect("read"),
        std::fs::read(&good).expect("read")
    );
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(
        rollout::load(&live, &cfg).expect("load").model_version,
        b.model_version
    );
}
