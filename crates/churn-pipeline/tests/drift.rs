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

    // The live engine: its score PSI is small on the training history and larger after the
    // shock; its feature PSI (the drift metrics' source) flags purchases_28d after the shock
    // only, and agrees with the report's last date on the stable history.
    let model = Arc::new(model);
    type Live = (f64, f64, f64);
    let live_of = |e: &Engine, score: f64, sample: usize| -> Live {
        let features = e.feature_psi(sample).expect("feature psi");
        assert_eq!(features.len(), model.feature_names.len());
        let f = |name: &str| {
            features
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, p)| *p)
                .unwrap_or_else(|| panic!("{name} live"))
        };
        (score, f("purchases_28d"), f("sessions_28d"))
    };
    let live = |events: &[Event]| -> (Live, Live) {
        let pipeline = PipelineConfig {
            warmup_days: 28,
            ..PipelineConfig::default()
        };
        let mut e = Engine::new(model.clone(), pipeline, AlertConfig::default()).expect("engine");
        backtest::replay(&mut e, events, 5_000).expect("replay");
        let score = e.kpis().score_psi.expect("a score PSI");
        (live_of(&e, score, 0), live_of(&e, score, 300))
    };
    let ((calm_live, calm_s), (shock_live, shock_s)) = (live(&pop.events), live(&shocked));
    eprintln!(
        "live (score, purchases_28d, sessions_28d) PSI: training history {calm_live:.3?}, price shock {shock_live:.3?}"
    );
    assert!(
        shock_live.0 > calm_live.0,
        "{shock_live:?} vs {calm_live:?}"
    );
    assert!(calm_live.1 < 0.1 && calm_live.2 < 0.1, "{calm_live:?}");
    assert!(shock_live.1 >= PSI_ALERT, "{shock_live:?}");
    assert!(shock_live.2 < 0.1, "{shock_live:?}");
    // A sample of a few hundred customers still sees the shock, and not the calm history.
    eprintln!("sampled to ~300: {calm_s:.3?} vs {shock_s:.3?}");
    assert!(
        calm_s.1 < 0.1 && shock_s.1 >= PSI_ALERT,
        "{calm_s:?} {shock_s:?}"
    );
}
