//! `notebooks-data/` stays in sync with the code: the shipped feature registry, training set and
//! scores are exactly what the current code makes from the shipped events and model. When this
//! fails after a change to features, labels or scoring, run `notebooks-data/regenerate.sh`.

use std::path::PathBuf;

use churn_features::training::ObservationPlan;
use churn_model::ModelArtifact;
use churn_pipeline::train;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../notebooks-data")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(dir().join(name))
        .unwrap_or_else(|e| panic!("notebooks-data/{name}: {e}"))
}

fn same(name: &str, want: Vec<u8>) {
    let want = String::from_utf8(want).expect("CSV is UTF-8");
    let have = read(name);
    if have != want {
        let line = have
            .lines()
            .zip(want.lines())
            .position(|(a, b)| a != b)
            .map_or_else(|| "length".to_string(), |i| format!("line {}", i + 1));
        panic!("notebooks-data/{name} is stale ({line} differs): run notebooks-data/regenerate.sh");
    }
}

#[test]
fn shipped_sample_matches_the_code() {
    let mut registry = Vec::new();
    churn_features::registry::write_csv(&mut registry).expect("memory");
    same("features.csv", registry);

    let r = churn_gen::open_text(&dir().join("events.jsonl.gz")).expect("events.jsonl.gz");
    let events = churn_gen::read_jsonl(r).expect("events.jsonl.gz holds events");
    let set = train::training_set_from_events(&events, &ObservationPlan::default())
        .expect("observations");
    let mut csv = Vec::new();
    set.write_csv(
        &mut csv,
        &set.split_boundaries(train::SPLIT_TRAIN, train::SPLIT_VALID),
    )
    .expect("memory");
    same("training_set.csv", csv);

    let model = ModelArtifact::load(&dir().join("model.json")).expect("model.json loads");
    model
        .check_features(&churn_features::registry::names())
        .expect("model.json has the registry's features");
    let (_, _, test, _) = set.time_split(train::SPLIT_TRAIN, train::SPLIT_VALID);
    let mut scores = Vec::new();
    train::write_scores_csv(&model, &test, &mut scores).expect("memory");
    same("scores.csv", scores);

    let eval: serde_json::Value =
        serde_json::from_str(&read("evaluation.json")).expect("evaluation.json");
    let ev = train::evaluate(&model, &test);
    assert_eq!(
        eval["auc"].as_f64(),
        Some(ev.auc),
        "evaluation.json is stale"
    );
    assert_eq!(model.metrics.get("test_auc"), Some(&ev.auc));
}
