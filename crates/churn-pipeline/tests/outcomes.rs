//! Holdout groups and alert outcomes, offline (the engine the pipeline and `churnstream
//! outcomes` run): at-risk alerts carry the treatment the experiment assigns; every alert
//! episode gets one outcome, which is the model's churn definition judged on the customer's own
//! events (batch rollups agree); pending outcomes survive the state changelog; and with the
//! generator's treatment effect the measured lift is positive and holds the simulated one.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use churn_events::{AlertData, CloudEvent, Experiment, HOLDOUT, TREATED};
use churn_pipeline::config::{AlertConfig, PipelineConfig};
use churn_pipeline::outcomes::{self, Report};
use churn_pipeline::{backtest, train, Engine};

fn experiment() -> Experiment {
    Experiment {
        holdout_share: 0.5,
        salt: "outcomes-test".into(),
    }
}

fn alerts_config() -> AlertConfig {
    let e = experiment();
    AlertConfig {
        holdout_share: e.holdout_share,
        holdout_salt: e.salt,
        ..AlertConfig::default()
    }
}

fn pipeline() -> PipelineConfig {
    PipelineConfig {
        warmup_days: 28,
        ..PipelineConfig::default()
    }
}

/// 2 500 customers × 200 days with the treatment effect `effect`.
fn population(effect: f64) -> churn_gen::GenConfig {
    churn_gen::GenConfig {
        customers: 2_500,
        days: 200,
        seed: 5,
        treatment: Some(churn_gen::TreatmentEffect {
            recover_probability: effect,
            experiment: experiment(),
        }),
        ..Default::default()
    }
}

/// [`population`] and a model trained on it.
fn trained(effect: f64) -> (churn_gen::Population, Arc<churn_model::ModelArtifact>) {
    let gen = population(effect);
    let plan = churn_features::training::ObservationPlan {
        warmup_days: 28,
        ..Default::default()
    };
    let (pop, model, _) = train::synthetic(&gen, &plan).expect("model");
    (pop, Arc::new(model))
}

#[test]
fn alerts_carry_the_assigned_treatment_and_each_episode_gets_its_own_outcome() {
    let (pop, model) = trained(0.6);
    let mut engine = Engine::new(model, pipeline(), alerts_config()).expect("engine");
    let (alerts, stats) = backtest::replay(&mut engine, &pop.events, 5_000).expect("replay");
    let e = experiment();
    let mut first_alert: HashMap<String, i32> = HashMap::new();
    let mut at_risk = 0;
    for a in alerts.iter().filter(|a| !a.is_lapsed()) {
        at_risk += 1;
        let ev: CloudEvent<AlertData> = serde_json::from_slice(&a.payload).expect("alert");
        assert_eq!(ev.data.treatment, e.assign(&a.key), "{}", a.key);
        assert_eq!(a.treatment, ev.data.treatment.as_str());
        assert_eq!(ev.data.experiment.as_ref(), Some(&e));
        first_alert
            .entry(a.key.clone())
            .or_insert(churn_features::day_of(ev.data.as_of));
    }
    let held = alerts.iter().filter(|a| a.treatment == HOLDOUT).count();
    assert!(
        held * 4 > at_risk && held * 4 < at_risk * 3,
        "{held} of {at_risk} held out"
    );
    assert!(alerts
        .iter()
        .filter(|a| a.is_lapsed())
        .all(|a| a.treatment == TREATED));

    // One outcome per episode: a customer's first outcome is of its first alert's day; the
    // outcome is the churn definition on the customer's events, as batch rollups judge it.
    let def = engine.outcome_definition();
    let batch: BTreeMap<String, churn_features::CustomerRollups> =
        churn_features::rollups_from_events(&pop.events)
            .into_iter()
            .collect();
    let mut seen: HashMap<&str, i32> = HashMap::new();
    for o in &stats.outcomes {
        let prev = seen.insert(&o.customer_id, o.alert_day);
        match prev {
            None => assert_eq!(first_alert.get(&o.customer_id), Some(&o.alert_day)),
            Some(d) => assert!(o.alert_day >= d + def.horizon(), "{}", o.customer_id),
        }
        assert_eq!(o.holdout, e.is_holdout(&o.customer_id));
        let r = &batch[&o.customer_id];
        assert_eq!(o.churned, def.label(r, o.alert_day), "{}", o.customer_id);
    }
    assert!(
        stats.outcomes.len() > 100,
        "{} outcomes",
        stats.outcomes.len()
    );
    assert!(stats.outcomes.iter().any(|o| o.churned));
    assert!(stats.outcomes.iter().any(|o| !o.churned));
    // Every alerted customer has an outcome or a pending one.
    let with_outcome = seen.len();
    assert!(with_outcome + engine.pending_outcomes() >= first_alert.len());
}

/// `outcomes::measure` of `events` with `model` under [`experiment`].
fn measure(model: &Arc<churn_model::ModelArtifact>, events: &[churn_events::Event]) -> Report {
    let mut engine = Engine::new(model.clone(), pipeline(), alerts_config()).expect("engine");
    outcomes::measure(&mut engine, events, 5_000).expect("replay")
}

#[test]
fn the_measured_lift_holds_the_simulated_treatment_effect() {
    let effect = 0.6;
    let (pop, model) = trained(effect);
    let r = measure(&model, &pop.events);
    eprint!("{}", r.summary());
    let c = r.overall;
    let (lo, hi) = c.relative_lift_ci95.expect("an interval");
    assert!(lo > 0.0, "treatment measurably lowers churn: {lo}..{hi}");
    assert!(
        lo <= effect && effect <= hi + 0.1,
        "relative lift {:?} [{lo}, {hi}] vs simulated {effect}",
        c.relative_lift
    );

    // Without the effect the same experiment (same model) measures no lift.
    let pop = churn_gen::generate(&population(0.0));
    let r = measure(&model, &pop.events);
    eprint!("{}", r.summary());
    let (lo, hi) = r.overall.relative_lift_ci95.expect("an interval");
    assert!(lo < 0.0 && hi > 0.0, "no effect, no lift: [{lo}, {hi}]");
}
