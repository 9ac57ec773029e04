//! Output contracts: the CloudEvents 1.0 alert on `churn.alerts` and the latest-score record on
//! the compacted `churn.scores` topic.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// CloudEvents `type` of an at-risk alert: a prediction about a customer who is still a
/// customer (payload [`AlertData`]).
pub const ALERT_TYPE: &str = "com.churnstream.customer.at_risk";

/// CloudEvents `type` of a lapsed alert: the churn definition was met — a subscription
/// `cancel`, or silence for the engine's churn window (payload [`LapsedData`]). Not a
/// prediction: the customer has gone, and the action is a win-back.
pub const LAPSED_TYPE: &str = "com.churnstream.customer.lapsed";

/// `recommended_action` of every lapsed alert (never used by at-risk alerts).
pub const WIN_BACK: &str = "win_back";

/// A CloudEvents 1.0 structured-mode JSON envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudEvent<T> {
    pub specversion: String,
    /// Deterministic: the same customer, model and alert window always give the same id, so a
    /// replay after a crash re-emits identical ids and consumers can de-duplicate.
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub time: DateTime<Utc>,
    pub subject: String,
    pub datacontenttype: String,
    pub data: T,
}

/// One reason of an alert: a metric group's contribution to the risk logit (issue 18).
///
/// `group` names the reason (engagement_decline, detractor_feedback, complaints_support,
/// plan_downgrade, price_sensitivity, spend_decline, tenure_new_customer); `contribution` is the
/// sum over the group's members; `feature`/`value`/`description` are its lead member (the one
/// with the largest contribution); `text` says it in words for a CRM agent. Alerts written
/// before reason groups had one feature per reason and no `group`/`text` (both optional).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reason {
    /// The lead feature of the group.
    pub feature: String,
    /// Raw (unscaled) value of the lead feature.
    pub value: f64,
    /// Σ over the group's members of coefficient × standardised value, on the churn logit scale.
    pub contribution: f64,
    /// rational, emotional or structural (the group's binding level).
    pub binding: String,
    /// Human description of the lead feature, from the feature registry.
    pub description: String,
    /// The reason group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// A short human-readable sentence (alerts.locale: en or nl).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// Payload of an at-risk alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertData {
    pub customer_id: String,
    /// Churn probability, 0–1.
    pub risk: f64,
    pub risk_band: String,
    pub previous_risk: Option<f64>,
    pub previous_band: Option<String>,
    pub segment: String,
    pub reasons: Vec<Reason>,
    pub recommended_action: String,
    /// risk × expected revenue over the horizon.
    pub revenue_at_risk: f64,
    pub model_version: String,
    /// Day (UTC) the features were computed as of.
    pub as_of: DateTime<Utc>,
    /// Event time of the newest event reflected in this score.
    pub last_event_at: Option<DateTime<Utc>>,
    /// "event" when triggered by an incoming event, "sweep" when by the silent-customer timer.
    pub trigger: String,
    /// [`TREATED`] (the CRM forwarder delivers it) or [`HOLDOUT`] (kept on the alerts topic for
    /// analysis, never delivered): see [`Experiment::assign`]. Alerts written before holdout
    /// groups existed read as treated.
    #[serde(default = "treated")]
    pub treatment: String,
    /// The holdout experiment the treatment was assigned under (absent in alerts written
    /// before holdout groups existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<Experiment>,
    /// Days of the customer's own history (since their first event) the score rests on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_days: Option<u32>,
    /// How much history backs the score: `min(1, history_days / 90)`, the share of the longest
    /// feature window (90 days) the customer's history covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    /// [`SCORED_BY_MODEL`] or [`SCORED_BY_COLD_START`] (the fallback for a history shorter than
    /// the model's `cold_start.min_history_days`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score_source: Option<String>,
}

/// `score_source` of a score made by the logistic model.
pub const SCORED_BY_MODEL: &str = "model";
/// `score_source` of a score made by the cold-start fallback (a churn-rate table by tenure
/// week and recency, for customers with too little history for the model).
pub const SCORED_BY_COLD_START: &str = "cold_start";
/// Days of history at which `confidence` reaches 1 (the longest feature window).
pub const FULL_HISTORY_DAYS: f64 = 90.0;

/// `treatment` of an alert the CRM acts on.
pub const TREATED: &str = "treated";
/// `treatment` of an alert held out: no CRM action, so its outcome measures what acting is worth.
pub const HOLDOUT: &str = "holdout";

fn treated() -> String {
    TREATED.into()
}

/// A holdout experiment: a deterministic share of customers whose at-risk alerts are not acted
/// on (`alerts.holdout_share`, `alerts.holdout_salt`). Comparing how often treated and holdout
/// customers churn after an alert measures the retention lift of acting on alerts
/// (`churnstream outcomes`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Experiment {
    /// Share of customers in the holdout group, 0–1 (0: no holdout, every alert is treated).
    pub holdout_share: f64,
    /// Salt of the assignment hash: a new salt draws a new holdout group.
    pub salt: String,
}

impl Experiment {
    /// Whether `customer_id` is in the holdout group: the first 8 bytes of
    /// SHA-256(`salt` NUL `customer_id` NUL), as a fraction of 2^64, below `holdout_share`.
    /// A pure function of the id and the experiment: the same customer is always in the same
    /// group, in every process, in backtests and in the generator's treatment effect.
    pub fn is_holdout(&self, customer_id: &str) -> bool {
        if self.holdout_share <= 0.0 {
            return false;
        }
        let digest = nul_joined_sha256(&[self.salt.as_str(), customer_id]);
        let mut head = [0u8; 8];
        head.copy_from_slice(&digest[..8]);
        // 53 bits: exact in an f64.
        let u = (u64::from_be_bytes(head) >> 11) as f64 / (1u64 << 53) as f64;
        u < self.holdout_share
    }

    /// [`HOLDOUT`] or [`TREATED`] for `customer_id`.
    pub fn assign(&self, customer_id: &str) -> &'static str {
        if self.is_holdout(customer_id) {
            HOLDOUT
        } else {
            TREATED
        }
    }
}

impl CloudEvent<AlertData> {
    /// Build an alert envelope with a deterministic id derived from customer, model and window.
    pub fn alert(source: &str, window: &str, data: AlertData) -> Self {
        CloudEvent {
            specversion: "1.0".into(),
            id: alert_id(
                &data.customer_id,
                &data.model_version,
                window,
                &data.risk_band,
            ),
            source: source.into(),
            ty: ALERT_TYPE.into(),
            time: data.as_of,
            subject: data.customer_id.clone(),
            datacontenttype: "application/json".into(),
            data,
        }
    }
}

/// Payload of a lapsed alert (CloudEvents type [`LAPSED_TYPE`]): sent once per lapse, on the
/// day the engine closes with the churn definition met.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LapsedData {
    pub customer_id: String,
    /// `cancel` (the latest subscription event is a cancel: MRR 0 after a cancel) or
    /// `inactivity` (no event for `inactivity_days`).
    pub reason: String,
    /// The day (UTC) the churn definition was met: the cancel's day, or the last active day +
    /// `inactivity_days`. With the customer id it makes the alert id.
    pub lapsed_on: NaiveDate,
    /// The engine's inactivity churn window (`pipeline.churn_after_days`).
    pub inactivity_days: i32,
    /// Days from the customer's last active day to the day of `as_of`.
    pub silent_days: i32,
    /// Event time of the customer's newest event up to `as_of`.
    pub last_event_at: Option<DateTime<Utc>>,
    /// MRR the customer paid before the lapse: the last positive MRR before the cancel, or the
    /// current MRR for an inactivity lapse (0 without a subscription).
    pub last_mrr: f64,
    /// The model's churn probability as of `as_of` (context, not the trigger).
    pub risk: f64,
    /// RFM-style segment as of `as_of`.
    pub segment: String,
    /// Always [`WIN_BACK`].
    pub recommended_action: String,
    pub model_version: String,
    /// End of the day (UTC) the engine closed when it found the lapse.
    pub as_of: DateTime<Utc>,
    /// "event" when the day was closed with events of this customer (a cancel), "sweep" when
    /// the silent-customer schedule scored it.
    pub trigger: String,
}

impl CloudEvent<LapsedData> {
    /// Build a lapsed-alert envelope; its id is a function of customer and lapse day only.
    pub fn lapsed(source: &str, data: LapsedData) -> Self {
        CloudEvent {
            specversion: "1.0".into(),
            id: lapsed_id(&data.customer_id, data.lapsed_on),
            source: source.into(),
            ty: LAPSED_TYPE.into(),
            time: data.as_of,
            subject: data.customer_id.clone(),
            datacontenttype: "application/json".into(),
            data,
        }
    }
}

/// Deterministic lapsed-alert id: hex SHA-256 of `LAPSED_TYPE \0 customer \0 YYYY-MM-DD \0`, 32
/// hex chars (the type in the hash keeps it apart from every at-risk id).
pub fn lapsed_id(customer_id: &str, lapsed_on: NaiveDate) -> String {
    let day = lapsed_on.format("%Y-%m-%d").to_string();
    hex16(&nul_joined_sha256(&[
        LAPSED_TYPE,
        customer_id,
        day.as_str(),
    ]))
}

/// Deterministic alert id: hex SHA-256 of `customer \0 model \0 window \0 band`, 32 hex chars.
pub fn alert_id(customer_id: &str, model_version: &str, window: &str, band: &str) -> String {
    hex16(&nul_joined_sha256(&[
        customer_id,
        model_version,
        window,
        band,
    ]))
}

/// SHA-256 of `parts`, each followed by a NUL byte (so ("ab", "c") and ("a", "bc") differ).
fn nul_joined_sha256(parts: &[&str]) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in parts {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    h.finalize().into()
}

/// The first 16 bytes of `digest` as 32 lowercase hex chars.
fn hex16(digest: &[u8; 32]) -> String {
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// Latest score of one customer (compacted topic `churn.scores`, key = customer_id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreRecord {
    pub customer_id: String,
    pub risk: f64,
    pub risk_band: String,
    pub segment: String,
    pub model_version: String,
    pub as_of: DateTime<Utc>,
}

/// A candidate model's score of one customer next to the live model's, on the same feature row
/// (topic `churn.scores-shadow`, key = customer_id). Bands are each model's raw band of its own
/// risk (its thresholds, without the live alert memory's hysteresis); `alert`/`live_alert` say
/// whether that band reaches `alerts.min_band`. Nothing is alerted or delivered from a shadow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowScore {
    pub customer_id: String,
    /// The shadow model's risk, band, alert decision and version.
    pub risk: f64,
    pub risk_band: String,
    pub alert: bool,
    pub model_version: String,
    /// The live model's risk, band, alert decision and version for the same row.
    pub live_risk: f64,
    pub live_band: String,
    pub live_alert: bool,
    pub live_model_version: String,
    pub as_of: DateTime<Utc>,
}

/// [`ScoreRecord`] borrowed from the scorer, for writing many records: the same JSON, with
/// `as_of` formatted once per scoring pass ([`ScoreRecordRef::as_of_text`]) instead of once per
/// record.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ScoreRecordRef<'a> {
    pub customer_id: &'a str,
    pub risk: f64,
    pub risk_band: &'a str,
    pub segment: &'a str,
    pub model_version: &'a str,
    pub as_of: &'a str,
}

impl ScoreRecordRef<'_> {
    /// `as_of` as [`ScoreRecord`] serializes it.
    pub fn as_of_text(as_of: DateTime<Utc>) -> String {
        match serde_json::to_value(as_of) {
            Ok(serde_json::Value::String(s)) => s,
            _ => as_of.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borrowed_score_records_write_the_same_json() {
        for (secs, nanos) in [(1_780_000_000, 0), (1_780_012_345, 999_000_000), (0, 1)] {
            let owned = ScoreRecord {
                customer_id: "cust-\"quoted\"-é".into(),
                risk: 0.123_456_789,
                risk_band: "high".into(),
                segment: "at_risk".into(),
                model_version: "m-1".into(),
                as_of: DateTime::from_timestamp(secs, nanos).expect("valid"),
            };
            let as_of = ScoreRecordRef::as_of_text(owned.as_of);
            let borrowed = ScoreRecordRef {
                customer_id: &owned.customer_id,
                risk: owned.risk,
                risk_band: &owned.risk_band,
                segment: &owned.segment,
                model_version: &owned.model_version,
                as_of: &as_of,
            };
            assert_eq!(
                serde_json::to_string(&borrowed).expect("json"),
                serde_json::to_string(&owned).expect("json")
            );
        }
    }

    #[test]
    fn alert_ids_are_deterministic_and_distinguish_inputs() {
        let a = alert_id("c1", "m1", "2026-02-01", "high");
        assert_eq!(a, alert_id("c1", "m1", "2026-02-01", "high"));
        assert_eq!(a.len(), 32);
        assert_ne!(a, alert_id("c2", "m1", "2026-02-01", "high"));
        assert_ne!(a, alert_id("c1", "m2", "2026-02-01", "high"));
        assert_ne!(a, alert_id("c1", "m1", "2026-02-02", "high"));
        assert_ne!(a, alert_id("c1", "m1", "2026-02-01", "critical"));
        // Separator prevents ambiguity between ("ab","c") and ("a","bc").
        assert_ne!(alert_id("ab", "c", "w", "b"), alert_id("a", "bc", "w", "b"));
    }

    #[test]
    fn holdout_assignment_is_deterministic_and_has_the_configured_share() {
        let e = Experiment {
            holdout_share: 0.2,
            salt: "s1".into(),
        };
        let ids: Vec<String> = (0..20_000).map(|i| format!("cust-{i}")).collect();
        let held = ids.iter().filter(|id| e.is_holdout(id)).count();
        let share = held as f64 / ids.len() as f64;
        assert!((share - 0.2).abs() < 0.015, "holdout share {share}");
        for id in &ids[..200] {
            assert_eq!(e.assign(id), e.assign(id));
        }
        // Another salt draws another group; share 0 holds nobody out, share 1 everybody.
        let other = Experiment {
            salt: "s2".into(),
            ..e.clone()
        };
        let differ = ids
            .iter()
            .filter(|id| e.is_holdout(id) != other.is_holdout(id))
            .count();
        assert!(
            differ > 4_000,
            "{differ} customers change group with the salt"
        );
        let none = Experiment {
            holdout_share: 0.0,
            ..e.clone()
        };
        let all = Experiment {
            holdout_share: 1.0,
            ..e
        };
        assert!(ids.iter().all(|id| none.assign(id) == TREATED));
        assert!(ids.iter().all(|id| all.assign(id) == HOLDOUT));
    }

    #[test]
    fn alerts_written_before_holdout_groups_read_as_treated() {
        let json = r#"{"customer_id":"c1","risk":0.5,"risk_band":"high","previous_risk":null,
            "previous_band":null,"segment":"loyal","reasons":[],"recommended_action":"nurture",
            "revenue_at_risk":1.0,"model_version":"m","as_of":"2026-02-01T23:59:59Z",
            "last_event_at":null,"trigger":"event"}"#;
        let d: AlertData = serde_json::from_str(json).expect("old alert");
        assert_eq!(d.treatment, TREATED);
        assert!(d.experiment.is_none());
    }

    #[test]
    fn lapsed_ids_are_per_customer_and_lapse_day() {
        let d = NaiveDate::from_ymd_opt(2026, 2, 1).expect("date");
        let a = lapsed_id("c1", d);
        assert_eq!(a, lapsed_id("c1", d));
        assert_eq!(a.len(), 32);
        assert_ne!(a, lapsed_id("c2", d));
        assert_ne!(a, lapsed_id("c1", d.succ_opt().expect("date")));
        assert_ne!(a, alert_id("c1", LAPSED_TYPE, "2026-02-01", ""));
    }
}
