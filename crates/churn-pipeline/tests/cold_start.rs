//! Cold start: a model trained with `min_history_days` carries the fallback table; the engine
//! scores short histories with it (alerts say `score_source: cold_start`, with `history_days`,
//! `confidence` and a `tenure_new_customer` reason) and everyone else with the model; without
//! the table every score is the model's. The served rule is the one `evaluate` measures.

use std::sync::Arc;

use churn_events::{AlertData, CloudEvent, SCORED_BY_COLD_START, SCORED_BY_MODEL};
use churn_pipeline::config::{AlertConfig, PipelineConfig};
use churn_pipeline::{backtest, train, Engine};

/// Alerts of a replay with a medium cut-off below the table's larger cells: under inactivity
/// labels young customers rarely churn in this generator (the table's rates stay under the
/// default 0.15 and the default alert band is high), so the defaults would never alert on one.
fn alerts(model: churn_model::ModelArtifact, events: &[churn_events::Event]) -> Vec<AlertData> {
    let pipeline = PipelineConfig {
        warmup_days: 28,
        ..PipelineConfig::default()
    };
    let cfg = AlertConfig {
        bands: "0.004,0.35,0.6".into(),
        min_band: "medium".into(),
        ..AlertConfig::default()
    };
    let model = churn_pipeline::rollout::with_configured_bands(model, &cfg).expect("bands");
    let mut e = Engine::new(Arc::new(model), pipeline, cfg).expect("engine");
    let (out, _) = backtest::replay(&mut e, events, 5_000).expect("replay");
    out.iter()
        .filter(|a| !a.is_lapsed())
        .map(|a| {
            serde_json::from_slice::<CloudEvent<AlertData>>(&a.payload)
                .expect("alert")
                .data
        })
        .collect()
}

#[test]
fn short_histories_get_the_fallback_and_their_alerts_say_so() {
    let gen = churn_gen::GenConfig {
        customers: 1_500,
        days: 180,
        seed: 21,
        ..Default::default()
    };
    let plan = churn_features::training::ObservationPlan {
        warmup_days: 28,
        ..Default::default()
    };
    let (pop, model, _) = train::synthetic(&gen, &plan).expect("model");
    let table = model.cold_start.clone().expect("a cold-start table");
    assert_eq!(table.min_history_days, 14);
    eprintln!("table {table:?}");
    let metric = |k: &str| model.metrics.get(k).copied();
    eprintln!(
        "young test rows {:?} (churn rate {:?}): AUC fallback {:?} vs model {:?}, log loss {:?} vs {:?}",
        metric("cold_start_test_rows"),
        metric("cold_start_test_churn_rate"),
        metric("cold_start_test_auc"),
        metric("cold_start_model_test_auc"),
        metric("cold_start_test_log_loss"),
        metric("cold_start_model_test_log_loss"),
    );
    assert!(metric("cold_start_test_rows").unwrap_or(0.0) > 50.0);

    let with = alerts(model.clone(), &pop.events);
    let young: Vec<&AlertData> = with
        .iter()
        .filter(|a| a.history_days.is_some_and(|h| h < 14))
        .collect();
    assert!(
        !young.is_empty(),
        "no alert for a customer younger than 14 days"
    );
    for a in &with {
        let h = a.history_days.expect("history_days");
        let c = a.confidence.expect("confidence");
        assert!(
            (c - (f64::from(h) / 90.0).min(1.0)).abs() < 0.006,
            "{h} {c}"
        );
        if h < 14 {
            assert_eq!(a.score_source.as_deref(), Some(SCORED_BY_COLD_START));
            assert_eq!(a.reasons.len(), 1);
            assert_eq!(a.reasons[0].group.as_deref(), Some("tenure_new_customer"));
            // The contribution is the cell's logit against the base rate (negative for a cell
            // below it: the alert then comes from the bands, not from being new).
            let logit = |q: f64| (q / (1.0 - q)).ln();
            let want = logit(a.risk) - logit(table.base_rate);
            assert!((a.reasons[0].contribution - want).abs() < 1e-9, "{a:?}");
            // The risk is a cell of the table.
            assert!(table.rates.iter().flatten().any(|r| *r == a.risk));
        } else {
            assert_eq!(a.score_source.as_deref(), Some(SCORED_BY_MODEL));
        }
    }

    // Without the table the model scores everyone (the model itself is the same fit: only the
    // served rule and so the version differ).
    let mut plain = model.clone();
    plain.cold_start = None;
    plain.model_version = plain.compute_model_version().expect("version");
    assert_ne!(plain.model_version, model.model_version);
    let without = alerts(plain, &pop.events);
    assert!(without
        .iter()
        .all(|a| a.score_source.as_deref() == Some(SCORED_BY_MODEL)));
    eprintln!(
        "alerts: {} with the fallback ({} young), {} without ({} young)",
        with.len(),
        young.len(),
        without.len(),
        without
            .iter()
            .filter(|a| a.history_days.is_some_and(|h| h < 14))
            .count()
    );
}
