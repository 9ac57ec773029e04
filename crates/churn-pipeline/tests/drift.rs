//! Drift (PSI) against the training population stored in the artifact: the history a model was
//! trained on is stable; a history whose second half loses half of its purchases (a price change)
//! drifts on the purchase features, in `drift::report` and in the live engine's score PSI.

use std::sync::Arc;

use churn_events::{Event, Payload};
use churn_model::drift::PSI_ALERT;
use churn_pipeline::config::{AlertConfig, PipelineConfig};
use churn_pipeline::{backtest, drift, train, Engine};

fn population() -> churn_gen::GenConfig {
    churn_gen::GenConfig {
        customers: 1_500,
        days: 180,
        seed: 17,
        ..Default::default()
    }
}

/// The events, with every second purchase of each customer after day 90 of the history dropped
/// (a price change that halves purchases).
fn price_shock(events: &[Event]) -> Vec<Event> {
    let start = events.first().map(|e| e.occurred_at).unwrap_or_default();
    let mut seen: std::collections::HashMap<&str, u32> = Default::default();
    events
        .iter()
        .filter(|e| {
            if e.occurred_at <= start + chrono::Duration::days(90)
                || !matches!(e.payload, Payload::Purchase(_))
            {
                return true;
            }
            let n = seen.entry(e.customer_id.as_str()).or_default();
            *n += 1;
            *n % 2 == 1
        })
        .cloned()
        .collect()
}

#[test]
fn a_price_shock_drifts_the_purchase_features_and_the_training_history_does_not() {
    let plan = churn_features::training::ObservationPlan {
        warmup_days: 28,
        ..Default::default()
    };
    let (pop, model, _) = train::synthetic(&population(), &plan).expect("model");
    let reference = model
        .drift_reference
        .as_ref()
        .expect("train stores a drift reference");
    assert_eq!(reference.features.len(), model.feature_names.len());

    let stable = drift::report(&pop.events, &model, 30, 56).expect("report");
    eprint!("{}", stable.summary());
    let shocked = price_shock(&pop.events);
    let report = drift::report(&shocked, &model, 30, 56).expect("report");
    eprint!("{}", report.summary());
    let psi = |d: &drift::DateDrift, name: &str| {
        d.features
            .iter()
            .find(|f| f.feature == name)
            .map(|f| f.psi)
            .unwrap_or_else(|| panic!("{name} in the report"))
    };
    assert_eq!(stable.dates.len(), report.dates.len());
    // Tenure and lifetime features grow with the history itself (a young synthetic history
    // ages past its training window), and 90-day windows were not full on the first training
    // dates: those drift in both. 28-day rates do not, until the shock halves the purchases.
    for (calm, shock) in stable.dates.iter().zip(&report.dates) {
        assert!(calm.rows > 300, "{}: {} rows", calm.as_of, calm.rows);
        for f in ["purchases_28d", "sessions_28d"] {
            assert!(
                psi(calm, f) < 0.1,
                "{} {f} {} without the shock",
                calm.as_of,
                psi(calm, f)
            );
        }
        assert!(
            psi(shock, "sessions_28d") < 0.1,
            "engagement was not touched"
        );
    }
    let (calm, shock) = (
        stable.dates.last().expect("the last day"),
        report.dates.last().expect("the last day"),
    );
    assert!(
        psi(shock, "purchases_28d") >= PSI_ALERT,
        "purchases_28d {}",
        psi(shock, "purchases_28d")
    );
    assert!(
        shock.drifted.iter().any(|f| f == "purchases_28d"),
        "{:?}",
        shock.drifted
    );
    assert!(!calm.drifted.iter().any(|f| f == "purchases_28d"));
    assert!(
        shock.score_psi > calm.score_psi,
        "score PSI {:?} after the shock vs {:?}",
        shock.score_psi,
        calm.score_psi
    );

    // The live engine's score PSI: small on the training history, larger after the shock.
    let model = Arc::new(model);
    let live_psi = |events: &[Event]| {
        let pipeline = PipelineConfig {
            warmup_days: 28,
            ..PipelineConfig::default()
        };
        let mut e = Engine::new(model.clone(), pipeline, AlertConfig::default()).expect("engine");
        backtest::replay(&mut e, events, 5_000).expect("replay");
        e.kpis().score_psi.expect("a score PSI")
    };
    let (calm, shock) = (live_psi(&pop.events), live_psi(&shocked));
    eprintln!("live score PSI: training history {calm:.3}, price shock {shock:.3}");
    assert!(shock > calm, "{shock} vs {calm}");
}
