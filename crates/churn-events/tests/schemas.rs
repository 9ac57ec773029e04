//! The JSON Schemas in `schemas/` accept and reject the same payloads as [`churn_events::decode`].
//!
//! Every sample of [`agreement_samples`] is run through the Rust decoder (clock fixed at
//! 2026-03-01T00:00:00Z, default limits), through `event.schema.json`, and through each per-topic
//! schema: the decoder's verdict must match `event.schema.json`, and a per-topic schema must accept
//! exactly the decoder-valid events of its own type. The few rules JSON Schema cannot express are
//! pinned in [`known_divergences_are_as_documented`] so a change on either side is noticed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use churn_events::{
    decode, AlertData, CloudEvent, DecodeLimits, LapsedData, Reason, ScoreRecord, LAPSED_TYPE,
};
use jsonschema::{Draft, Resource, Validator};
use serde_json::{json, Map, Value};

const ID_BASE: &str = "https://churnstream.example/schemas/";

/// Input topics' schema files and the single event type each carries.
const TOPIC_SCHEMAS: [(&str, &str); 4] = [
    ("purchases.schema.json", "purchase"),
    ("engagement.schema.json", "engagement"),
    ("feedback.schema.json", "feedback"),
    ("subscriptions.schema.json", "subscription"),
];

const ALL_SCHEMAS: [&str; 9] = [
    "purchases.schema.json",
    "engagement.schema.json",
    "feedback.schema.json",
    "subscriptions.schema.json",
    "event.schema.json",
    "alert.schema.json",
    "lapsed.schema.json",
    "score.schema.json",
    "shadow_score.schema.json",
];

// ---------------------------------------------------------------------------------------------
// Schema loading
// ---------------------------------------------------------------------------------------------

fn schema_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas")
}

fn load(name: &str) -> Value {
    let path = schema_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} is not valid JSON: {e}"))
}

/// A validator for `name` with format assertion on and every sibling schema registered under its
/// `$id`, so the relative `$ref`s of `event.schema.json` resolve without file or network access.
fn validator(name: &str) -> Validator {
    let resources = ALL_SCHEMAS.iter().map(|file| {
        let contents = load(file);
        let resource = Resource::from_contents(contents)
            .unwrap_or_else(|e| panic!("{file} is not a usable resource: {e}"));
        (format!("{ID_BASE}{file}"), resource)
    });
    jsonschema::options()
        .with_draft(Draft::Draft202012)
        .should_validate_formats(true)
        .with_resources(resources)
        .build(&load(name))
        .unwrap_or_else(|e| panic!("{name} does not compile: {e}"))
}

fn errors(v: &Validator, instance: &Value) -> Vec<String> {
    v.iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect()
}

fn now() -> DateTime<Utc> {
    ts("2026-03-01T00:00:00Z")
}

fn ts(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .expect("valid timestamp literal")
}

/// The decoder's verdict: `"ok"` or the rejection code.
fn decoder_verdict(payload: &str) -> &'static str {
    match decode(payload.as_bytes(), now(), &DecodeLimits::default()) {
        Ok(_) => "ok",
        Err(r) => r.code(),
    }
}

// ---------------------------------------------------------------------------------------------
// Sample builders
// ---------------------------------------------------------------------------------------------

const PURCHASE: &str = r#"{"event_id":"e1","customer_id":"c1","occurred_at":"2026-02-01T10:00:00Z","type":"purchase","order_id":"o1","amount":12.5,"currency":"EUR","items":2}"#;
const ENGAGEMENT: &str = r#"{"event_id":"e2","customer_id":"c1","occurred_at":"2026-02-01T10:00:00Z","type":"engagement","kind":"login"}"#;
const FEEDBACK: &str = r#"{"event_id":"e3","customer_id":"c1","occurred_at":"2026-02-01T10:00:00Z","type":"feedback","nps_score":3}"#;
const SUBSCRIPTION: &str = r#"{"event_id":"e4","customer_id":"c1","occurred_at":"2026-02-01T10:00:00Z","type":"subscription","action":"cancel","plan":"pro","mrr":49.0}"#;

/// `base` with `key` set to `value` (a JSON literal), or removed when `value` is `None`.
fn with(base: &str, key: &str, value: Option<&str>) -> String {
    let mut map: Map<String, Value> = serde_json::from_str(base).expect("base sample is an object");
    match value {
        Some(v) => {
            let v: Value = serde_json::from_str(v)
                .unwrap_or_else(|e| panic!("sample value {v} is not JSON: {e}"));
            map.insert(key.to_owned(), v);
        }
        None => {
            map.remove(key);
        }
    }
    Value::Object(map).to_string()
}

/// `base` with `key` set to the JSON string `s` (escaped as needed).
fn with_str(base: &str, key: &str, s: &str) -> String {
    with(base, key, Some(&Value::String(s.to_owned()).to_string()))
}

/// (name, payload, expected decoder verdict). Schemas must agree with the decoder on every one.
fn agreement_samples() -> Vec<(&'static str, String, &'static str)> {
    let long = |n: usize| "x".repeat(n);
    vec![
        // ---- valid, every type ----
        ("purchase", PURCHASE.to_owned(), "ok"),
        ("purchase with discount", with(PURCHASE, "discount", Some("1.25")), "ok"),
        ("purchase discount null", with(PURCHASE, "discount", Some("null")), "ok"),
        ("purchase amount 0", with(PURCHASE, "amount", Some("0")), "ok"),
        ("purchase amount -0.0", with(PURCHASE, "amount", Some("-0.0")), "ok"),
        ("purchase items 0", with(PURCHASE, "items", Some("0")), "ok"),
        ("purchase items 2.0", with(PURCHASE, "items", Some("2.0")), "ok"),
        ("purchase items u32::MAX", with(PURCHASE, "items", Some("4294967295")), "ok"),
        (
            "unknown nested field is ignored",
            with(PURCHASE, "extra", Some(r#"{"a":[1,2,{"b":null}]}"#)),
            "ok",
        ),
        ("engagement login", ENGAGEMENT.to_owned(), "ok"),
        (
            "engagement feature_use with duration and feature",
            r#"{"event_id":"e","customer_id":"c","occurred_at":"2026-02-01T10:00:00Z","type":"engagement","kind":"feature_use","duration_s":12.5,"feature":"export"}"#.to_owned(),
            "ok",
        ),
        ("engagement feature empty", with(ENGAGEMENT, "feature", Some(r#""""#)), "ok"),
        ("engagement duration null", with(ENGAGEMENT, "duration_s", Some("null")), "ok"),
        ("engagement complaint", with_str(ENGAGEMENT, "kind", "complaint"), "ok"),
        ("feedback nps 0", with(FEEDBACK, "nps_score", Some("0")), "ok"),
        (
            "feedback nps 10 with comment and channel",
            r#"{"event_id":"e","customer_id":"c","occurred_at":"2026-02-01T10:00:00Z","type":"feedback","nps_score":10,"comment":"great","channel":"email"}"#.to_owned(),
            "ok",
        ),
        ("feedback nps 7.0", with(FEEDBACK, "nps_score", Some("7.0")), "ok"),
        ("feedback comment 4096 chars", with_str(FEEDBACK, "comment", &long(4096)), "ok"),
        (
            "other types' fields are not checked",
            with(&with(FEEDBACK, "amount", Some(r#""abc""#)), "items", Some("-1")),
            "ok",
        ),
        ("subscription cancel", SUBSCRIPTION.to_owned(), "ok"),
        ("subscription mrr 0", with(SUBSCRIPTION, "mrr", Some("0")), "ok"),
        ("customer_id 256 chars", with_str(PURCHASE, "customer_id", &long(256)), "ok"),
        ("customer_id with inner spaces", with_str(PURCHASE, "customer_id", " c 1 "), "ok"),
        // U+FEFF is not White_Space in Unicode (Rust trim keeps it), though ECMA-262 \s matches it.
        ("customer_id BOM only", with_str(PURCHASE, "customer_id", "\u{feff}"), "ok"),
        (
            "timestamp with offset and fraction",
            with_str(FEEDBACK, "occurred_at", "2026-02-01T10:00:00.123456789+05:30"),
            "ok",
        ),
        ("timestamp lowercase t z", with_str(FEEDBACK, "occurred_at", "2026-02-01t10:00:00z"), "ok"),
        ("timestamp real leap second", with_str(FEEDBACK, "occurred_at", "2016-12-31T23:59:60Z"), "ok"),
        ("timestamp 23 h ahead", with_str(FEEDBACK, "occurred_at", "2026-03-01T23:00:00Z"), "ok"),
        // ---- envelope ----
        ("empty object", "{}".to_owned(), "missing_field"),
        ("missing customer_id", with(PURCHASE, "customer_id", None), "missing_field"),
        ("customer_id null", with(PURCHASE, "customer_id", Some("null")), "missing_field"),
        ("customer_id empty", with_str(PURCHASE, "customer_id", ""), "empty_field"),
        ("customer_id blanks", with_str(PURCHASE, "customer_id", "   "), "empty_field"),
        (
            "customer_id unicode whitespace",
            with_str(PURCHASE, "customer_id", "\u{3000}\u{85}\t\u{2028}"),
            "empty_field",
        ),
        ("customer_id number", with(PURCHASE, "customer_id", Some("7")), "wrong_type"),
        ("customer_id array", with(PURCHASE, "customer_id", Some(r#"["c1"]"#)), "wrong_type"),
        ("missing event_id", with(PURCHASE, "event_id", None), "missing_field"),
        ("event_id 257 chars", with_str(PURCHASE, "event_id", &long(257)), "field_too_long"),
        ("event_id bool", with(PURCHASE, "event_id", Some("true")), "wrong_type"),
        ("missing type", with(PURCHASE, "type", None), "missing_field"),
        ("unknown type", with_str(PURCHASE, "type", "refund"), "unknown_type"),
        ("type wrong case", with_str(PURCHASE, "type", "Purchase"), "unknown_type"),
        ("type number", with(PURCHASE, "type", Some("1")), "wrong_type"),
        ("missing occurred_at", with(FEEDBACK, "occurred_at", None), "missing_field"),
        ("occurred_at not a date", with_str(FEEDBACK, "occurred_at", "yesterday"), "bad_timestamp"),
        ("occurred_at Feb 30", with_str(FEEDBACK, "occurred_at", "2026-02-30T10:00:00Z"), "bad_timestamp"),
        ("occurred_at no offset", with_str(FEEDBACK, "occurred_at", "2026-02-01T10:00:00"), "bad_timestamp"),
        ("occurred_at date only", with_str(FEEDBACK, "occurred_at", "2026-02-01"), "bad_timestamp"),
        ("occurred_at hour 25", with_str(FEEDBACK, "occurred_at", "2026-02-01T25:00:00Z"), "bad_timestamp"),
        ("occurred_at empty fraction", with_str(FEEDBACK, "occurred_at", "2026-02-01T10:00:00.Z"), "bad_timestamp"),
        ("occurred_at offset +24:00", with_str(FEEDBACK, "occurred_at", "2026-02-01T10:00:00+24:00"), "bad_timestamp"),
        ("occurred_at offset without colon", with_str(FEEDBACK, "occurred_at", "2026-02-01T10:00:00+0100"), "bad_timestamp"),
        ("occurred_at epoch number", with(FEEDBACK, "occurred_at", Some("1769940000")), "wrong_type"),
        ("occurred_at blank", with_str(FEEDBACK, "occurred_at", " "), "empty_field"),
        // ---- purchase ----
        ("negative amount", with(PURCHASE, "amount", Some("-1")), "negative_amount"),
        ("slightly negative amount", with(PURCHASE, "amount", Some("-0.01")), "negative_amount"),
        ("amount as string", with(PURCHASE, "amount", Some(r#""12""#)), "not_a_number"),
        ("amount bool", with(PURCHASE, "amount", Some("true")), "not_a_number"),
        ("amount null", with(PURCHASE, "amount", Some("null")), "missing_field"),
        ("missing amount", with(PURCHASE, "amount", None), "missing_field"),
        ("items fractional", with(PURCHASE, "items", Some("1.5")), "wrong_type"),
        ("items negative", with(PURCHASE, "items", Some("-1")), "wrong_type"),
        ("items above u32", with(PURCHASE, "items", Some("4294967296")), "wrong_type"),
        ("items as string", with(PURCHASE, "items", Some(r#""2""#)), "not_a_number"),
        ("negative discount", with(PURCHASE, "discount", Some("-5")), "negative_amount"),
        ("discount as string", with(PURCHASE, "discount", Some(r#""5""#)), "not_a_number"),
        ("missing order_id", with(PURCHASE, "order_id", None), "missing_field"),
        ("empty currency", with_str(PURCHASE, "currency", ""), "empty_field"),
        ("currency object", with(PURCHASE, "currency", Some("{}")), "wrong_type"),
        // ---- engagement ----
        ("unknown kind", with_str(ENGAGEMENT, "kind", "teleport"), "unknown_value"),
        ("kind wrong case", with_str(ENGAGEMENT, "kind", "Login"), "unknown_value"),
        ("missing kind", with(ENGAGEMENT, "kind", None), "missing_field"),
        ("kind number", with(ENGAGEMENT, "kind", Some("3")), "wrong_type"),
        ("negative duration", with(ENGAGEMENT, "duration_s", Some("-3")), "negative_amount"),
        ("duration as string", with(ENGAGEMENT, "duration_s", Some(r#""3""#)), "not_a_number"),
        ("feature number", with(ENGAGEMENT, "feature", Some("42")), "wrong_type"),
        ("feature 4097 chars", with_str(ENGAGEMENT, "feature", &long(4097)), "field_too_long"),
        // ---- feedback ----
        ("nps 11", with(FEEDBACK, "nps_score", Some("11")), "nps_out_of_range"),
        ("nps 7.5", with(FEEDBACK, "nps_score", Some("7.5")), "nps_out_of_range"),
        ("nps -1", with(FEEDBACK, "nps_score", Some("-1")), "nps_out_of_range"),
        ("nps as string", with(FEEDBACK, "nps_score", Some(r#""7""#)), "not_a_number"),
        ("missing nps", with(FEEDBACK, "nps_score", None), "missing_field"),
        ("comment object", with(FEEDBACK, "comment", Some("{}")), "wrong_type"),
        ("channel number", with(FEEDBACK, "channel", Some("1")), "wrong_type"),
        // ---- subscription ----
        ("unknown action", with_str(SUBSCRIPTION, "action", "delete"), "unknown_value"),
        ("empty action", with_str(SUBSCRIPTION, "action", ""), "empty_field"),
        ("missing plan", with(SUBSCRIPTION, "plan", None), "missing_field"),
        ("negative mrr", with(SUBSCRIPTION, "mrr", Some("-10")), "negative_amount"),
        ("mrr null", with(SUBSCRIPTION, "mrr", Some("null")), "missing_field"),
        ("mrr as string", with(SUBSCRIPTION, "mrr", Some(r#""49""#)), "not_a_number"),
        // ---- not an event object ----
        ("top-level array", "[1,2,3]".to_owned(), "malformed_json"),
        ("top-level string", r#""purchase""#.to_owned(), "malformed_json"),
        ("top-level null", "null".to_owned(), "malformed_json"),
        ("top-level number", "42".to_owned(), "malformed_json"),
        ("truncated JSON", PURCHASE[..PURCHASE.len() - 5].to_owned(), "malformed_json"),
        ("trailing garbage", format!("{PURCHASE} x"), "malformed_json"),
        ("number out of f64 range", PURCHASE.replace("12.5", "1e400"), "malformed_json"),
    ]
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn decoder_and_schemas_agree_on_every_sample() {
    let event = validator("event.schema.json");
    let topics: Vec<(&str, Validator)> = TOPIC_SCHEMAS
        .iter()
        .map(|(file, ty)| (*ty, validator(file)))
        .collect();
    let samples = agreement_samples();
    assert!(samples.len() >= 25, "only {} samples", samples.len());

    let mut problems = Vec::new();
    for (name, payload, want) in &samples {
        let got = decoder_verdict(payload);
        if got != *want {
            problems.push(format!(
                "[{name}] decoder says {got}, table says {want}: {payload}"
            ));
        }
        let decoder_ok = got == "ok";
        // A payload that is not JSON at all cannot be valid under any schema.
        let instance: Option<Value> = serde_json::from_str(payload).ok();
        let event_ok = instance.as_ref().is_some_and(|v| event.is_valid(v));
        if event_ok != decoder_ok {
            let why = instance
                .as_ref()
                .map(|v| errors(&event, v))
                .unwrap_or_default();
            problems.push(format!(
                "[{name}] decoder {got} but event.schema.json valid={event_ok} {why:?}: {payload}"
            ));
        }
        let ty = instance
            .as_ref()
            .and_then(|v| v.get("type"))
            .and_then(Value::as_str);
        for (topic_ty, v) in &topics {
            let expect = decoder_ok && ty == Some(*topic_ty);
            let valid = instance.as_ref().is_some_and(|i| v.is_valid(i));
            if valid != expect {
                let why = instance.as_ref().map(|i| errors(v, i)).unwrap_or_default();
                problems.push(format!(
                    "[{name}] decoder {got}, {topic_ty} schema valid={valid} (expected {expect}) {why:?}: {payload}"
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} disagreement(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn samples_cover_every_reason_json_schema_can_express() {
    let covered: BTreeSet<&str> = agreement_samples().into_iter().map(|(_, _, w)| w).collect();
    for code in [
        "ok",
        "malformed_json",
        "missing_field",
        "empty_field",
        "field_too_long",
        "wrong_type",
        "unknown_type",
        "unknown_value",
        "not_a_number",
        "negative_amount",
        "nps_out_of_range",
        "bad_timestamp",
    ] {
        assert!(covered.contains(code), "no sample for {code}");
    }
    // Every type has at least one valid sample.
    let valid_types: BTreeSet<String> = agreement_samples()
        .into_iter()
        .filter(|(_, _, w)| *w == "ok")
        .filter_map(|(_, p, _)| {
            let v: Value = serde_json::from_str(&p).ok()?;
            Some(v.get("type")?.as_str()?.to_owned())
        })
        .collect();
    for (_, ty) in TOPIC_SCHEMAS {
        assert!(valid_types.contains(ty), "no valid {ty} sample");
    }
}

/// Rules JSON Schema cannot express (documented in each schema's `$comment`). If one of these
/// starts agreeing, move it to [`agreement_samples`] and update the `$comment`s.
#[test]
fn known_divergences_are_as_documented() {
    let event = validator("event.schema.json");
    let cases: Vec<(&str, String, &str, bool)> = vec![
        // Decoder rejects, schema accepts.
        (
            "more than 24 h in the future",
            with_str(FEEDBACK, "occurred_at", "2026-03-02T01:00:00Z"),
            "future_timestamp",
            true,
        ),
        (
            "257..=256*4 bytes but at most 256 code points",
            with_str(PURCHASE, "customer_id", &"é".repeat(129)),
            "field_too_long",
            true,
        ),
        (
            "duplicate key",
            PURCHASE.replace(r#""items":2"#, r#""items":2,"items":3"#),
            "malformed_json",
            true,
        ),
        (
            "payload above 64 KiB",
            with_str(PURCHASE, "padding", &"x".repeat(70_000)),
            "oversize",
            true,
        ),
        // Decoder (chrono's RFC 3339 parser) accepts, format date-time rejects.
        (
            "space instead of T",
            with_str(FEEDBACK, "occurred_at", "2026-02-01 10:00:00Z"),
            "ok",
            false,
        ),
        (
            "U+2212 minus sign in the offset",
            with_str(FEEDBACK, "occurred_at", "2026-02-01T10:00:00\u{2212}05:00"),
            "ok",
            false,
        ),
        (
            "leap second at a minute without one",
            with_str(FEEDBACK, "occurred_at", "2026-02-01T10:00:60Z"),
            "ok",
            false,
        ),
    ];
    for (name, payload, want, schema_valid) in cases {
        assert_eq!(decoder_verdict(&payload), want, "[{name}] decoder");
        let v: Value = serde_json::from_str(&payload).expect("divergence samples are JSON");
        assert_eq!(
            event.is_valid(&v),
            schema_valid,
            "[{name}] event.schema.json"
        );
    }
}

fn sample_alert_data() -> AlertData {
    AlertData {
        customer_id: "c-42".into(),
        risk: 0.83,
        risk_band: "critical".into(),
        previous_risk: Some(0.41),
        previous_band: Some("medium".into()),
        segment: "at_risk".into(),
        reasons: vec![
            Reason {
                feature: "days_since_last_login".into(),
                value: 37.0,
                contribution: 1.12,
                binding: "emotional".into(),
                description: "Days since the last login".into(),
                group: Some("engagement_decline".into()),
                text: Some(
                    "No activity for 37 days (about 4.1× their usual gap between visits)".into(),
                ),
            },
            Reason {
                feature: "nps_latest".into(),
                value: 3.0,
                contribution: 0.74,
                binding: "emotional".into(),
                description: "Latest NPS score".into(),
                group: Some("detractor_feedback".into()),
                text: Some("NPS 3 (detractor), was 8".into()),
            },
            Reason {
                feature: "monetary_90d".into(),
                value: 120.0,
                contribution: -0.2,
                binding: "rational".into(),
                description: "Spend over 90 days".into(),
                // An alert of a version before reason groups: no group, no text.
                group: None,
                text: None,
            },
        ],
        recommended_action: "personal_follow_up".into(),
        revenue_at_risk: 398.4,
        model_version: "logit-2026-02-28".into(),
        as_of: ts("2026-03-01T00:00:00Z"),
        last_event_at: Some(ts("2026-01-23T08:15:00Z")),
        trigger: "event".into(),
        treatment: churn_events::HOLDOUT.into(),
        experiment: Some(churn_events::Experiment {
            holdout_share: 0.1,
            salt: "spring-2026".into(),
        }),
        history_days: Some(412),
        confidence: Some(1.0),
        score_source: Some(churn_events::SCORED_BY_MODEL.into()),
    }
}

/// A named edit of a serialized alert that must make it invalid.
type Mutation = (&'static str, fn(&mut Value));

fn alert_json(data: AlertData) -> Value {
    let alert = CloudEvent::alert("/churnstream/scorer", "2026-03-01", data);
    serde_json::to_value(&alert).expect("alert serializes")
}

#[test]
fn real_alerts_validate() {
    let v = validator("alert.schema.json");
    let alert = alert_json(sample_alert_data());
    assert!(v.is_valid(&alert), "{:?}\n{alert:#}", errors(&v, &alert));

    // First alert of a customer, sweep-triggered, no events yet: optional fields are null.
    let mut first = sample_alert_data();
    first.previous_risk = None;
    first.previous_band = None;
    first.last_event_at = None;
    first.reasons.clear();
    first.trigger = "sweep".into();
    let first = alert_json(first);
    assert!(
        first["data"]["previous_risk"].is_null(),
        "serde writes null, not absent"
    );
    assert!(v.is_valid(&first), "{:?}\n{first:#}", errors(&v, &first));
}

#[test]
fn invalid_alerts_fail() {
    let v = validator("alert.schema.json");

    let mut data = sample_alert_data();
    data.risk = 1.5;
    let alert = alert_json(data);
    assert!(!v.is_valid(&alert), "risk 1.5 must be rejected");

    let mut data = sample_alert_data();
    data.risk = f64::NAN; // serde_json writes null
    assert!(!v.is_valid(&alert_json(data)), "NaN risk must be rejected");

    let mut data = sample_alert_data();
    data.reasons[0].binding = "financial".into();
    assert!(
        !v.is_valid(&alert_json(data)),
        "unknown binding must be rejected"
    );

    let mut data = sample_alert_data();
    data.reasons[0].group = Some("bad_luck".into());
    assert!(
        !v.is_valid(&alert_json(data)),
        "unknown reason group must be rejected"
    );

    let mut data = sample_alert_data();
    data.reasons[1].text = Some(String::new());
    assert!(
        !v.is_valid(&alert_json(data)),
        "an empty reason text must be rejected"
    );

    let mut data = sample_alert_data();
    data.trigger = "cron".into();
    assert!(
        !v.is_valid(&alert_json(data)),
        "unknown trigger must be rejected"
    );

    let mut data = sample_alert_data();
    data.customer_id = " ".into();
    assert!(
        !v.is_valid(&alert_json(data)),
        "blank customer_id must be rejected"
    );

    let mutations: [Mutation; 6] = [
        ("missing data.trigger", |a| {
            if let Some(d) = a["data"].as_object_mut() {
                d.remove("trigger");
            }
        }),
        ("missing data.previous_risk", |a| {
            if let Some(d) = a["data"].as_object_mut() {
                d.remove("previous_risk");
            }
        }),
        ("non-hex id", |a| a["id"] = json!("not-a-deterministic-id")),
        ("wrong CloudEvents type", |a| {
            a["type"] = json!("com.example.other")
        }),
        ("wrong specversion", |a| a["specversion"] = json!("0.3")),
        ("bad time", |a| a["time"] = json!("2026-03-01")),
    ];
    for (name, mutate) in mutations {
        let mut alert = alert_json(sample_alert_data());
        mutate(&mut alert);
        assert!(!v.is_valid(&alert), "{name} must be rejected");
    }
}

fn sample_lapsed_data() -> LapsedData {
    LapsedData {
        customer_id: "c-42".into(),
        reason: "cancel".into(),
        lapsed_on: chrono::NaiveDate::from_ymd_opt(2026, 3, 1).expect("date"),
        inactivity_days: 30,
        silent_days: 0,
        last_event_at: Some(ts("2026-03-01T09:30:00Z")),
        last_mrr: 49.0,
        risk: 0.91,
        segment: "loyal".into(),
        recommended_action: "win_back".into(),
        model_version: "logit-2026-02-28".into(),
        as_of: ts("2026-03-01T23:59:59Z"),
        trigger: "event".into(),
    }
}

fn lapsed_json(data: LapsedData) -> Value {
    serde_json::to_value(CloudEvent::lapsed("/churnstream/scorer", data)).expect("serializes")
}

#[test]
fn real_lapsed_alerts_validate_and_are_no_at_risk_alerts() {
    let v = validator("lapsed.schema.json");
    let at_risk = validator("alert.schema.json");
    let ok = lapsed_json(sample_lapsed_data());
    assert_eq!(ok["type"], LAPSED_TYPE);
    assert_eq!(ok["data"]["lapsed_on"], "2026-03-01", "a plain date");
    assert!(v.is_valid(&ok), "{:?}\n{ok:#}", errors(&v, &ok));
    assert!(
        !at_risk.is_valid(&ok),
        "the at-risk schema rejects a lapsed alert"
    );
    assert!(
        !v.is_valid(&alert_json(sample_alert_data())),
        "the lapsed schema rejects an at-risk alert"
    );
    // Inactivity, swept, no event known (null last_event_at).
    let mut quiet = sample_lapsed_data();
    quiet.reason = "inactivity".into();
    quiet.silent_days = 30;
    quiet.last_event_at = None;
    quiet.last_mrr = 0.0;
    quiet.trigger = "sweep".into();
    let quiet = lapsed_json(quiet);
    assert!(quiet["data"]["last_event_at"].is_null());
    assert!(v.is_valid(&quiet), "{:?}\n{quiet:#}", errors(&v, &quiet));

    let mutations: [Mutation; 6] = [
        ("unknown reason", |a| a["data"]["reason"] = json!("moved")),
        ("other action", |a| {
            a["data"]["recommended_action"] = json!("engagement_nudge")
        }),
        ("lapsed_on with a time", |a| {
            a["data"]["lapsed_on"] = json!("2026-03-01T00:00:00Z")
        }),
        ("negative mrr", |a| a["data"]["last_mrr"] = json!(-1.0)),
        ("zero window", |a| a["data"]["inactivity_days"] = json!(0)),
        ("missing last_event_at", |a| {
            if let Some(d) = a["data"].as_object_mut() {
                d.remove("last_event_at");
            }
        }),
    ];
    for (name, mutate) in mutations {
        let mut alert = lapsed_json(sample_lapsed_data());
        mutate(&mut alert);
        assert!(!v.is_valid(&alert), "{name} must be rejected");
    }
}

#[test]
fn score_records_validate() {
    let v = validator("score.schema.json");
    let mut rec = ScoreRecord {
        customer_id: "c-42".into(),
        risk: 0.12,
        risk_band: "low".into(),
        segment: "champions".into(),
        model_version: "logit-2026-02-28".into(),
        as_of: ts("2026-03-01T00:00:00Z"),
    };
    let ok = serde_json::to_value(&rec).expect("score serializes");
    assert!(v.is_valid(&ok), "{:?}", errors(&v, &ok));
    rec.risk = -0.1;
    let bad = serde_json::to_value(&rec).expect("score serializes");
    assert!(!v.is_valid(&bad), "negative risk must be rejected");
}

#[test]
fn shadow_scores_validate() {
    let v = validator("shadow_score.schema.json");
    let rec = churn_events::ShadowScore {
        customer_id: "c-42".into(),
        risk: 0.71,
        risk_band: "critical".into(),
        alert: true,
        model_version: "logit-2026-03-01".into(),
        live_risk: 0.12,
        live_band: "low".into(),
        live_alert: false,
        live_model_version: "logit-2026-02-28".into(),
        as_of: ts("2026-03-01T00:00:00Z"),
    };
    let ok = serde_json::to_value(&rec).expect("shadow score serializes");
    assert!(v.is_valid(&ok), "{:?}", errors(&v, &ok));
    for field in ["live_risk", "alert", "live_model_version"] {
        let mut bad = ok.clone();
        if let Some(o) = bad.as_object_mut() {
            o.remove(field);
        }
        assert!(!v.is_valid(&bad), "missing {field} must be rejected");
    }
    let mut bad = ok.clone();
    bad["live_band"] = "severe".into();
    assert!(!v.is_valid(&bad), "an unknown band must be rejected");
}

#[test]
fn every_schema_file_parses_and_compiles() {
    let mut on_disk: Vec<String> = std::fs::read_dir(schema_dir())
        .expect("schemas/ exists")
        .map(|e| {
            e.expect("readable dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.ends_with(".json"))
        .collect();
    on_disk.sort();
    let mut expected: Vec<String> = ALL_SCHEMAS.iter().map(|s| (*s).to_owned()).collect();
    expected.sort();
    assert_eq!(on_disk, expected, "schema files on disk vs ALL_SCHEMAS");

    for name in ALL_SCHEMAS {
        let schema = load(name);
        assert_eq!(
            schema["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "{name}: draft"
        );
        assert_eq!(schema["$id"], format!("{ID_BASE}{name}"), "{name}: $id");
        if let Err(e) = jsonschema::meta::validate(&schema) {
            panic!("{name} is not a valid draft 2020-12 schema: {e}");
        }
        let _compiled = validator(name);
    }
}

#[test]
fn per_topic_schemas_share_the_envelope() {
    let first = load(TOPIC_SCHEMAS[0].0);
    for (file, ty) in TOPIC_SCHEMAS {
        let s = load(file);
        assert_eq!(
            s["$defs"], first["$defs"],
            "{file}: $defs drifted from {}",
            TOPIC_SCHEMAS[0].0
        );
        assert_eq!(s["$comment"], first["$comment"], "{file}: $comment drifted");
        for f in ["event_id", "customer_id", "occurred_at"] {
            assert_eq!(
                s["properties"][f], first["properties"][f],
                "{file}: {f} drifted"
            );
        }
        assert_eq!(s["properties"]["type"]["const"], ty, "{file}: type const");
    }
}

#[test]
fn dlq_note_lists_the_headers() {
    let note = std::fs::read_to_string(schema_dir().join("dlq.md")).expect("schemas/dlq.md exists");
    for header in [
        "error.reason",
        "error.stage",
        "source.topic",
        "source.partition",
        "source.offset",
    ] {
        assert!(note.contains(header), "dlq.md does not mention {header}");
    }
    for code in churn_events::Rejection::CODES {
        assert!(
            note.contains(code),
            "dlq.md does not list reason code {code}"
        );
    }
}
