//! Silence alone raises alerts: replaying a generated history through the streaming engine
//! (`backtest::replay`, the same `Engine::sweep` the service runs on its timer), some customers
//! are alerted by the sweep, and every one of those sent nothing in the `silent_after_days`
//! before the alert — no event caused it.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use churn_events::{AlertData, CloudEvent};
use churn_pipeline::config::{AlertConfig, PipelineConfig};
use churn_pipeline::{backtest, train, Engine};

#[test]
fn silent_customers_are_alerted_by_the_sweep_alone() {
    let gen = churn_gen::GenConfig {
        customers: 400,
        days: 150,
        seed: 7,
        ..Default::default()
    };
    let (pop, model, _) = train::synthetic(&gen, &Default::default()).expect("model");
    let pipeline = PipelineConfig::default();
    let silent = Duration::days(i64::from(pipeline.silent_after_days));
    let mut engine =
        Engine::new(Arc::new(model), pipeline, AlertConfig::default()).expect("engine");
    let (alerts, stats) = backtest::replay(&mut engine, &pop.events, 500).expect("replay");
    assert!(stats.sweeps > 100, "a sweep per event-time day");

    let mut times: BTreeMap<&str, Vec<DateTime<Utc>>> = BTreeMap::new();
    for e in &pop.events {
        times
            .entry(e.customer_id.as_str())
            .or_default()
            .push(e.occurred_at);
    }
    let mut by_sweep = 0;
    for a in alerts.iter().filter(|a| !a.is_lapsed()) {
        let ev: CloudEvent<AlertData> = serde_json::from_slice(&a.payload).expect("alert");
        if ev.data.trigger != "sweep" {
            continue;
        }
        by_sweep += 1;
        let as_of = ev.data.as_of;
        let own = &times[ev.data.customer_id.as_str()];
        assert!(
            !own.iter().any(|t| *t > as_of - silent && *t <= as_of),
            "sweep alert for {} at {as_of} although it had events in the last {} days",
            ev.data.customer_id,
            silent.num_days()
        );
        let last = own.iter().filter(|t| **t <= as_of).max().copied();
        assert_eq!(ev.data.last_event_at, last, "{}", ev.data.customer_id);
    }
    assert!(
        by_sweep > 0,
        "silent customers are alerted by the sweep alone ({} alerts in all)",
        alerts.len()
    );
}
