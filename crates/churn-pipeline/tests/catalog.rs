//! The metric catalog end to end, offline: a model records its catalog and serving refuses a
//! configuration with another; pure-noise catalog metrics barely move test AUC.

use churn_events::Payload;
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
    let (plain, _, _) = train::train_on_set(
        &train::training_set_from_events(&pop.events, &plan).expect("set"),
        &params(),
        train::DEFAULT_BANDS,
    )
    .expect("model");
    assert!(plain.catalog.is_none());
    let e = cfg
        .check_model_catalog(&plain)
        .expect_err("catalog only in the config");
    assert!(e.to_string().contains("only in the config"), "{e}");
    // The catalog is part of the model version: same data, other catalog, other version.
    assert_ne!(plain.model_version, model.model_version);
}

/// Counters per product feature of the default generator: its uses, and the sum of their
/// `duration_s`, which the test draws i.i.d. (the built-in features ignore the duration of a
/// feature use, and the generator's churn process never sees it).
fn noise_catalog() -> Catalog {
    let features = [
        "dashboard",
        "reports",
        "export",
        "collaboration",
        "integrations",
        "automation",
        "api",
    ];
    let mut toml = String::new();
    for f in features {
        toml.push_str(&format!(
            "[[counters]]\nname = \"n_{f}\"\nfeature = \"{f}\"\n\
             [[counters]]\nname = \"d_{f}\"\nfeature = \"{f}\"\nsum = \"duration_s\"\n"
        ));
    }
    // Mean duration per use: pure noise (0 without a use in the window).
    let mut k = 0;
    'outer: for w in [7, 28, 90] {
        for f in features {
            if k == 20 {
                break 'outer;
            }
            toml.push_str(&format!(
                "[[metrics]]\nname = \"mean_duration_{f}_{w}d\"\nratio = [\"d_{f}\", \"n_{f}\"]\nwindow = {w}\n"
            ));
            k += 1;
        }
    }
    let c = Catalog::from_toml(&toml).expect("noise catalog");
    assert_eq!(c.metrics.len(), 20);
    c
}

/// README "Robust to noisy metrics": 20 pure-noise catalog metrics cost at most 0.01 test AUC.
#[test]
fn twenty_pure_noise_metrics_lower_test_auc_by_at_most_a_hundredth() {
    let mut pop = churn_gen::generate(&churn_gen::GenConfig {
        customers: 900,
        days: 240,
        seed: 21,
        ..Default::default()
    });
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let mut noisy = 0;
    for ev in &mut pop.events {
        if let Payload::Engagement(e) = &mut ev.payload {
            if e.feature.is_some() {
                e.duration_s = Some((rng.gen::<f64>() * 600.0).round());
                noisy += 1;
            }
        }
    }
    assert!(noisy > 10_000, "{noisy} feature uses");
    let plan = Default::default();
    let auc = |features: &FeatureSet| {
        let set = train::training_set_with(&pop.events, &plan, features).expect("set");
        let (model, summary, _) =
            train::train_on_set(&set, &params(), train::DEFAULT_BANDS).expect("model");
        assert!(summary.converged, "converged");
        (model.metrics["test_auc"], model)
    };
    let (base, _) = auc(&FeatureSet::builtin());
    let noise = FeatureSet::new(noise_catalog()).expect("valid");
    let (with_noise, model) = auc(&noise);
    eprintln!("test AUC: built-in {base:.4}, with 20 noise metrics {with_noise:.4}");
    assert!(
        with_noise >= base - 0.01,
        "20 noise metrics: test AUC {with_noise:.4} vs {base:.4} without"
    );
    // The noise metrics are real inputs with non-zero spread (not constant columns).
    let n = churn_features::FEATURES.len();
    assert_eq!(model.feature_names.len(), n + 20);
    assert!(
        model.scaler_std[n..].iter().all(|s| *s > 1.0),
        "{:?}",
        &model.scaler_std[n..]
    );
}
