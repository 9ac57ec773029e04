//! The metric catalog end to end, offline: a model records its catalog and serving refuses a
//! configuration with another; pure-noise catalog metrics barely move test AUC.

use churn_features::{Catalog, FeatureSet};
use churn_model::TrainParams;
use churn_pipeline::config::Config;
use churn_pipeline::train;
use rand::{Rng, SeedableRng};

fn params() -> TrainParams {
    TrainParams {
        alphas: train::DEFAULT_ALPHAS.to_vec(),
        ..TrainParams::default()
    }
}

const SMALL: &str = r#"
[[counters]]
name = "reports"
feature = "reports"
[[metrics]]
name = "reports_28d"
count = "reports"
[[metrics]]
name = "reports_change_28d"
change = "reports"
"#;

#[test]
fn a_model_records_its_catalog_and_serving_refuses_another() {
    let pop = churn_gen::generate(&churn_gen::GenConfig {
        customers: 200,
        days: 150,
        seed: 3,
        ..Default::default()
    });
    let plan = Default::default();
    let catalog = Catalog::from_toml(SMALL).expect("catalog");
    let features = FeatureSet::new(catalog.clone()).expect("valid");
    let set = train::training_set_with(&pop.events, &plan, &features).expect("set");
    let (model, _, _) = train::train_on_set(&set, &params(), train::DEFAULT_BANDS).expect("model");
    assert_eq!(
        model.feature_names.last().map(String::as_str),
        Some("reports_change_28d")
    );
    // The artifact round-trips the catalog, and the model's features are rebuilt from it.
    let back = churn_model::ModelArtifact::from_json_str(
        &model.to_json_pretty(),
        std::path::Path::new("memory"),
    )
    .expect("loads");
    let rebuilt = train::feature_set_of(&back).expect("catalog of the model");
    assert_eq!(rebuilt.catalog(), &catalog);
    assert_eq!(rebuilt.names(), features.names());

    // Same catalog in the config: accepted. None, or another: refused, naming the difference.
    let mut cfg = Config {
        catalog: catalog.clone(),
        ..Config::default()
    };
    cfg.check_model_catalog(&model).expect("same catalog");
    let e = Config::default()
        .check_model_catalog(&model)
        .expect_err("no catalog in the config")
        .to_string();
    assert!(
        e.contains("metric `reports_28d` only in the model") && e.contains(&model.model_version),
        "{e}"
    );
    cfg.catalog.metrics[1].window = Some(7);
    let e = cfg
        .check_model_catalog(&model)
        .expect_err("another window")
        .to_string();
    assert!(
        e.contains("metric `reports_change_28d` defined differently"),
        "{e}"
    );
    // A default model under a configured catalog is refused too.
    let plain_set = train::training_set_from_events(&pop.events, &plan).expect("set");
    let (plain, _, _) =
        train::train_on_set(&plain_set, &params(), train::DEFAULT_BANDS).expect("model");
    assert!(plain.catalog.is_none());
    let e = cfg
        .check_model_catalog(&plain)
        .expect_err("catalog only in the config");
    assert!(e.to_string().contains("only in the config"), "{e}");
    // The catalog is part of the model version: same data, other catalog, other version.
    assert_ne!(plain.model_version, model.model_version);

    // `compare`: both on the same test rows, each with its own features.
    let test = |s: &churn_features::training::TrainingSet| {
        s.time_split(train::SPLIT_TRAIN, train::SPLIT_VALID).2
    };
    let (tp, tc) = (test(&plain_set), test(&set));
    let c = train::compare(&plain, &tp, &model, &tc, 50, 1).expect("comparable");
    assert_eq!(c.rows, tp.len());
    assert_eq!(c.models[1].catalog_metrics, 2);
    assert_eq!(c.bootstrap_samples, 50);
    let d = c.models[1].test.auc - c.models[0].test.auc;
    assert!((c.auc_difference - d).abs() < 1e-12);
    assert!(c.auc_difference_ci95[0] <= c.auc_difference_ci95[1]);
    // A model against itself: no difference in any sample.
    let same = train::compare(&model, &tc, &model, &tc, 20, 1).expect("comparable");
    assert_eq!(
        (same.auc_difference, same.auc_difference_ci95),
        (0.0, [0.0, 0.0])
    );
    assert_eq!(same.second_better_share, 0.0);
    // The churn definition recorded in the artifact (what `evaluate` and `compare` label by).
    let mut recorded = model.clone();
    assert_eq!(train::recorded_plan(&recorded), None);
    train::record_plan(&mut recorded, &plan).expect("record");
    let back = churn_model::ModelArtifact::from_json_str(
        &recorded.to_json_pretty(),
        std::path::Path::new("memory"),
    )
    .expect("hash still checks");
    assert_eq!(train::recorded_plan(&back), Some(plan));
    assert_eq!(
        back.model_version, model.model_version,
        "not part of the version"
    );
    // Other rows: refused.
    let fewer = tc.between(tc.as_of[0], tc.as_of[0] + 1);
    assert!(train::compare(&plain, &tp, &model, &fewer, 5, 1).is_err());
}

/// 20 catalog metrics over a counter no event matches: the test overwrites their values.
fn noise_catalog() -> Catalog {
    let mut toml = String::from("[[counters]]\nname = \"never\"\nfeature = \"never_emitted\"\n");
    for k in 0..20 {
        toml.push_str(&format!(
            "[[metrics]]\nname = \"noise_{k}\"\ncount = \"never\"\ntransform = \"identity\"\n"
        ));
    }
    Catalog::from_toml(&toml).expect("noise catalog")
}

/// Item 4 of issue 12: 20 pure-noise catalog metrics cost at most 0.01 test AUC. The noise is
/// pure by construction: the 20 columns of the training set are i.i.d. draws (log-normal, a
/// count-like skew, and some exact zeros), independent of everything; the other columns are the
/// built-in features of the same rows. A harder profile than the default (low churn, weaker
/// signals), so there is room to lose.
#[test]
fn twenty_pure_noise_metrics_lower_test_auc_by_at_most_a_hundredth() {
    let pop = churn_gen::generate(&churn_gen::GenConfig {
        customers: 1500,
        days: 300,
        seed: 21,
        profile: churn_gen::Profile::LowChurn,
        ..Default::default()
    });
    let noise = FeatureSet::new(noise_catalog()).expect("valid");
    let mut with_noise =
        train::training_set_with(&pop.events, &Default::default(), &noise).expect("set");
    let n = churn_features::FEATURES.len();
    let width = noise.len();
    assert_eq!(width, n + 20);
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    for row in with_noise.values.chunks_mut(width) {
        for v in &mut row[n..] {
            *v = if rng.gen::<f64>() < 0.2 {
                0.0
            } else {
                (rng.gen::<f64>() * 3.0).exp()
            };
        }
    }
    let builtin = churn_features::training::TrainingSet {
        values: with_noise
            .values
            .chunks(width)
            .flat_map(|r| r[..n].iter().copied())
            .collect(),
        features: FeatureSet::builtin(),
        ..with_noise.clone()
    };
    let auc = |set: &churn_features::training::TrainingSet| {
        let (model, summary, _) =
            train::train_on_set(set, &params(), train::DEFAULT_BANDS).expect("model");
        assert!(summary.converged, "converged");
        (model.metrics["test_auc"], model)
    };
    let (base, _) = auc(&builtin);
    let (noisy, model) = auc(&with_noise);
    eprintln!("test AUC: built-in {base:.4}, with 20 pure-noise metrics {noisy:.4}");
    assert!(
        noisy >= base - 0.01,
        "20 noise metrics: test AUC {noisy:.4} vs {base:.4} without"
    );
    assert_eq!(model.feature_names.len(), n + 20);
    assert!(model.feature_names[n..]
        .iter()
        .all(|f| f.starts_with("noise_")));
}
