//! Two alert kinds: `at_risk` (a prediction about a customer who is still a customer) and
//! `lapsed` (the churn definition was met: a subscription cancel, or silence for
//! `pipeline.churn_after_days`). Through the streaming engine with a constant model (every
//! customer scores critical, so anything not alerted was suppressed by the lapse rules):
//! a subscriber who cancels gets one lapsed alert and no at-risk alert while cancelled, and is
//! at risk again after a comeback; a silent customer gets one lapsed alert on the day its
//! silence reaches the window; a restore from the changelog neither repeats nor skips a lapsed
//! alert; every emitted payload validates against its JSON Schema.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use churn_events::{
    AlertData, CloudEvent, Engagement, EngagementKind, Event, LapsedData, Payload, Subscription,
    SubscriptionAction, ALERT_TYPE, LAPSED_TYPE,
};
use churn_features::registry::{self, FEATURES};
use churn_model::{Bands, ModelArtifact};
use churn_pipeline::config::{AlertConfig, PipelineConfig};
use churn_pipeline::engine::AlertOut;
use churn_pipeline::Engine;

/// A model that scores every customer `p` (zero coefficients, intercept logit(p)).
fn constant_model(p: f64) -> Arc<ModelArtifact> {
    let n = FEATURES.len();
    Arc::new(ModelArtifact {
        format_version: churn_model::FORMAT_VERSION,
        model_version: "churn-lr-constant".into(),
        created_at: DateTime::from_timestamp(0, 0).expect("epoch"),
        feature_names: registry::names().into_iter().map(String::from).collect(),
        bindings: FEATURES
            .iter()
            .map(|d| d.binding.as_str().to_string())
            .collect(),
        scaler_mean: vec![0.0; n],
        scaler_std: vec![1.0; n],
        coefficients: vec![0.0; n],
        intercept: (p / (1.0 - p)).ln(),
        thresholds: Bands {
            medium: 0.15,
            high: 0.35,
            critical: 0.6,
        },
        alert_threshold: 0.35,
        metrics: Default::default(),
        data_window: None,
        train_params: serde_json::Value::Null,
        hash: String::new(),
        calibration: None,
        score_distribution: None,
        band_spec: None,
        catalog: None,
        drift_reference: None,
        cold_start: None,
    })
}

fn engine() -> Engine {
    let pipeline = PipelineConfig {
        warmup_days: 0,
        ..PipelineConfig::default()
    };
    Engine::new(constant_model(0.9), pipeline, AlertConfig::default()).expect("engine")
}

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-01T10:00:00Z")
        .expect("time")
        .with_timezone(&Utc)
}

fn at(day: i64) -> DateTime<Utc> {
    t0() + Duration::days(day)
}

fn date(day: i64) -> NaiveDate {
    at(day).date_naive()
}

fn login(customer: &str, day: i64) -> Event {
    Event {
        event_id: format!("{customer}-login-{day}"),
        customer_id: customer.into(),
        occurred_at: at(day),
        payload: Payload::Engagement(Engagement {
            kind: EngagementKind::Login,
            duration_s: None,
            feature: None,
        }),
    }
}

fn subscription(customer: &str, day: i64, action: SubscriptionAction, mrr: f64) -> Event {
    Event {
        event_id: format!("{customer}-sub-{day}"),
        customer_id: customer.into(),
        // After the day's login, so that a cancel is the day's latest event.
        occurred_at: at(day) + Duration::hours(2),
        payload: Payload::Subscription(Subscription {
            action,
            plan: "pro".into(),
            mrr,
        }),
    }
}

/// Events of `days`, in time order, with a `clock` customer active every day (it moves the
/// partition's event-time clock, so silent customers' days close).
fn history(own: &[Event], days: std::ops::Range<i64>) -> Vec<Event> {
    let mut evs: Vec<Event> = own
        .iter()
        .filter(|e| days.contains(&(e.occurred_at - t0()).num_days()))
        .cloned()
        .collect();
    evs.extend(days.map(|d| login("clock", d)));
    evs.sort_by_key(|e| e.occurred_at);
    evs
}

/// Feed `events` one day at a time, scoring after each, and return the alerts.
fn feed(e: &mut Engine, events: &[Event]) -> Vec<AlertOut> {
    let mut out = Vec::new();
    let mut by_day: BTreeMap<i64, Vec<&Event>> = BTreeMap::new();
    for ev in events {
        by_day
            .entry((ev.occurred_at - t0()).num_days())
            .or_default()
            .push(ev);
    }
    for evs in by_day.values() {
        for ev in evs {
            e.ingest_event(ev, 0, Instant::now());
        }
        let s = e.score_dirty().expect("score");
        assert_eq!(
            s.lapsed_cancel + s.lapsed_inactivity,
            s.alerts.iter().filter(|a| a.is_lapsed()).count()
        );
        out.extend(s.alerts);
    }
    out
}

/// (as_of date, payload) of the at-risk alerts of `customer`.
fn at_risk(alerts: &[AlertOut], customer: &str) -> Vec<(NaiveDate, CloudEvent<AlertData>)> {
    alerts
        .iter()
        .filter(|a| a.key == customer && !a.is_lapsed())
        .map(|a| {
            let ev: CloudEvent<AlertData> = serde_json::from_slice(&a.payload).expect("at risk");
            assert_eq!(ev.ty, ALERT_TYPE);
            (ev.data.as_of.date_naive(), ev)
        })
        .collect()
}

fn lapsed(alerts: &[AlertOut], customer: &str) -> Vec<CloudEvent<LapsedData>> {
    alerts
        .iter()
        .filter(|a| a.key == customer && a.is_lapsed())
        .map(|a| {
            let ev: CloudEvent<LapsedData> = serde_json::from_slice(&a.payload).expect("lapsed");
            assert_eq!(ev.ty, LAPSED_TYPE);
            assert_eq!(ev.id, a.id);
            ev
        })
        .collect()
}

/// The subscriber: starts day 0, active to day 10, cancels on day 10, still visits on days 12
/// and 15 (cancelled), comes back with a new subscription on day 60, cancels again on day 70.
fn subscriber() -> Vec<Event> {
    let mut v = vec![subscription("sub", 0, SubscriptionAction::Start, 50.0)];
    v.extend((1..=10).map(|d| login("sub", d)));
    v.push(subscription("sub", 10, SubscriptionAction::Cancel, 0.0));
    v.extend([login("sub", 12), login("sub", 15), login("sub", 60)]);
    v.push(subscription("sub", 60, SubscriptionAction::Start, 40.0));
    v.push(login("sub", 70));
    v.push(subscription("sub", 70, SubscriptionAction::Cancel, 0.0));
    v
}

#[test]
fn a_cancelled_subscriber_is_lapsed_once_and_never_at_risk() {
    let mut e = engine();
    let alerts = feed(&mut e, &history(&subscriber(), 0..100));

    let risk = at_risk(&alerts, "sub");
    let days: Vec<NaiveDate> = risk.iter().map(|(d, _)| *d).collect();
    assert_eq!(
        days,
        vec![date(0), date(60)],
        "at risk while a customer, and again after the comeback; never while cancelled"
    );
    let lapses = lapsed(&alerts, "sub");
    let got: Vec<(&str, NaiveDate, NaiveDate, f64)> = lapses
        .iter()
        .map(|l| {
            (
                l.data.reason.as_str(),
                l.data.lapsed_on,
                l.data.as_of.date_naive(),
                l.data.last_mrr,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("cancel", date(10), date(10), 50.0),
            ("cancel", date(70), date(70), 40.0)
        ],
        "one lapsed alert per cancel, on its day; the silence after a cancel is not a new lapse"
    );
    for l in &lapses {
        assert_eq!(l.data.recommended_action, "win_back");
        assert_eq!(l.data.trigger, "event");
        assert_eq!(l.data.inactivity_days, 30);
    }
    assert_ne!(lapses[0].id, lapses[1].id);
}

#[test]
fn a_silent_customer_is_lapsed_once_when_the_window_is_reached() {
    let quiet: Vec<Event> = (0..=5).map(|d| login("quiet", d)).collect();
    let mut e = engine();
    let alerts = feed(&mut e, &history(&quiet, 0..120));
    let lapses = lapsed(&alerts, "quiet");
    assert_eq!(lapses.len(), 1, "exactly once");
    let l = &lapses[0].data;
    assert_eq!(l.reason, "inactivity");
    assert_eq!(l.lapsed_on, date(35), "last active day + churn_after_days");
    assert_eq!(l.as_of.date_naive(), date(35));
    assert_eq!(l.silent_days, 30);
    assert_eq!(l.trigger, "sweep");
    assert_eq!(l.last_event_at, Some(at(5)));
    let risk = at_risk(&alerts, "quiet");
    assert!(
        risk.iter().all(|(d, _)| *d < date(35)),
        "no at-risk alert once silent for the window: {:?}",
        risk.iter().map(|(d, _)| d).collect::<Vec<_>>()
    );
    // The clock customer, active every day, never lapses.
    assert!(lapsed(&alerts, "clock").is_empty());
}

/// Restoring from the changelog at any day gives the same alerts as the uninterrupted run: a
/// lapse already alerted is not alerted again, one not alerted yet is.
#[test]
fn restore_keeps_what_was_already_alerted() {
    let mut own = subscriber();
    own.extend((0..=5).map(|d| login("quiet", d)));
    let all = history(&own, 0..100);
    let mut e = engine();
    let want: Vec<String> = feed(&mut e, &all).into_iter().map(|a| a.id).collect();
    assert!(want.len() > 4);
    for split in [10, 11, 34, 35, 36, 61, 70, 71] {
        let mut first = engine();
        let before: Vec<Event> = all
            .iter()
            .filter(|ev| (ev.occurred_at - t0()).num_days() < split)
            .cloned()
            .collect();
        let mut got: Vec<String> = feed(&mut first, &before)
            .into_iter()
            .map(|a| a.id)
            .collect();
        let mut second = engine();
        for r in first.take_changelog().expect("changelog") {
            // Through the binary record, as the changelog topic holds it.
            second.restore(&r.key, &r.payload).expect("restore");
        }
        let after: Vec<Event> = all
            .iter()
            .filter(|ev| (ev.occurred_at - t0()).num_days() >= split)
            .cloned()
            .collect();
        got.extend(feed(&mut second, &after).into_iter().map(|a| a.id));
        assert_eq!(got, want, "restored at day {split}");
    }
}

fn validator(name: &str) -> jsonschema::Validator {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../churn-events/schemas")
        .join(name);
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("schema")).expect("json");
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&schema)
        .expect("compiles")
}

#[test]
fn emitted_alerts_validate_against_their_schemas() {
    let mut own = subscriber();
    own.extend((0..=5).map(|d| login("quiet", d)));
    let mut e = engine();
    let alerts = feed(&mut e, &history(&own, 0..100));
    let (risk, lapse) = (
        validator("alert.schema.json"),
        validator("lapsed.schema.json"),
    );
    let mut kinds = BTreeMap::new();
    for a in &alerts {
        let v: serde_json::Value = serde_json::from_slice(&a.payload).expect("json");
        let ty = v["type"].as_str().expect("type").to_string();
        let schema = if a.is_lapsed() { &lapse } else { &risk };
        let errors: Vec<String> = schema.iter_errors(&v).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{ty}: {errors:?}\n{v:#}");
        assert!(
            !(if a.is_lapsed() { &risk } else { &lapse }).is_valid(&v),
            "{ty} also passes the other kind's schema"
        );
        *kinds.entry(ty).or_insert(0) += 1;
    }
    assert_eq!(kinds.len(), 2, "both kinds emitted: {kinds:?}");
}
