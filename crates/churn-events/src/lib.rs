//! Event and alert contracts for churnstream.
//!
//! Layout:
//! - [`Event`] and its [`Payload`] variants: what producers write to the input topics.
//! - [`decode`]: bytes → validated [`Event`], or a [`Rejection`] whose [`Rejection::code`] is a
//!   stable, low-cardinality reason used for dead-letter headers and metric labels.
//! - [`alert`]: the CloudEvents 1.0 alert published to `churn.alerts` and the score record
//!   published to `churn.scores`.
//!
//! JSON Schemas for every topic live in `crates/churn-events/schemas/` and are tested to accept and
//! reject the same samples as [`decode`].

pub mod alert;
mod decode;

pub use alert::{
    AlertData, CloudEvent, Experiment, LapsedData, Reason, ScoreRecord, ScoreRecordRef,
    ShadowScore, ALERT_TYPE, FULL_HISTORY_DAYS, HOLDOUT, LAPSED_TYPE, SCORED_BY_COLD_START,
    SCORED_BY_MODEL, TREATED, WIN_BACK,
};
pub use decode::{
    check_key, decode, DecodeLimits, Rejection, DEFAULT_MAX_NUMBER, DEFAULT_MAX_PAST_DAYS,
};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One input event. Every topic carries this envelope; `type` selects the payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique id, used for de-duplication.
    pub event_id: String,
    /// Customer key; also the Kafka message key.
    pub customer_id: String,
    /// When it happened (RFC 3339, UTC).
    pub occurred_at: DateTime<Utc>,
    /// Type-specific fields.
    #[serde(flatten)]
    pub payload: Payload,
}

/// The type-specific part of an [`Event`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Payload {
    Purchase(Purchase),
    Engagement(Engagement),
    Feedback(Feedback),
    Subscription(Subscription),
}

impl Payload {
    /// The `type` field value.
    pub fn type_name(&self) -> &'static str {
        match self {
            Payload::Purchase(_) => "purchase",
            Payload::Engagement(_) => "engagement",
            Payload::Feedback(_) => "feedback",
            Payload::Subscription(_) => "subscription",
        }
    }
}

/// A completed order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Purchase {
    pub order_id: String,
    /// Order value, ≥ 0, in `currency`.
    pub amount: f64,
    pub currency: String,
    pub items: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discount: Option<f64>,
}

/// What kind of engagement an [`Engagement`] event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EngagementKind {
    Login,
    Session,
    PageView,
    FeatureUse,
    EmailOpen,
    EmailClick,
    SupportTicket,
    Complaint,
}

impl EngagementKind {
    pub const ALL: [EngagementKind; 8] = [
        EngagementKind::Login,
        EngagementKind::Session,
        EngagementKind::PageView,
        EngagementKind::FeatureUse,
        EngagementKind::EmailOpen,
        EngagementKind::EmailClick,
        EngagementKind::SupportTicket,
        EngagementKind::Complaint,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EngagementKind::Login => "login",
            EngagementKind::Session => "session",
            EngagementKind::PageView => "page_view",
            EngagementKind::FeatureUse => "feature_use",
            EngagementKind::EmailOpen => "email_open",
            EngagementKind::EmailClick => "email_click",
            EngagementKind::SupportTicket => "support_ticket",
            EngagementKind::Complaint => "complaint",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A product or channel interaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Engagement {
    pub kind: EngagementKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature: Option<String>,
}

/// An NPS survey answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Feedback {
    /// 0–10. Promoters 9–10, passives 7–8, detractors 0–6.
    pub nps_score: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

/// NPS category of a 0–10 score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NpsCategory {
    Detractor,
    Passive,
    Promoter,
}

impl NpsCategory {
    pub fn of(score: u8) -> Self {
        match score {
            0..=6 => NpsCategory::Detractor,
            7..=8 => NpsCategory::Passive,
            _ => NpsCategory::Promoter,
        }
    }
}

/// What a [`Subscription`] event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionAction {
    Start,
    Renew,
    Upgrade,
    Downgrade,
    Cancel,
    Pause,
}

impl SubscriptionAction {
    pub const ALL: [SubscriptionAction; 6] = [
        SubscriptionAction::Start,
        SubscriptionAction::Renew,
        SubscriptionAction::Upgrade,
        SubscriptionAction::Downgrade,
        SubscriptionAction::Cancel,
        SubscriptionAction::Pause,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionAction::Start => "start",
            SubscriptionAction::Renew => "renew",
            SubscriptionAction::Upgrade => "upgrade",
            SubscriptionAction::Downgrade => "downgrade",
            SubscriptionAction::Cancel => "cancel",
            SubscriptionAction::Pause => "pause",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A subscription lifecycle change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subscription {
    pub action: SubscriptionAction,
    pub plan: String,
    /// Monthly recurring revenue after the change, ≥ 0.
    pub mrr: f64,
}

/// Default topic names. Configurable in the pipeline config.
pub mod topics {
    pub const PURCHASES: &str = "purchases";
    pub const ENGAGEMENT: &str = "engagement";
    pub const FEEDBACK: &str = "feedback";
    pub const SUBSCRIPTIONS: &str = "subscriptions";
    pub const ALERTS: &str = "churn.alerts";
    pub const SCORES: &str = "churn.scores";
    /// Scores of a candidate model running in shadow mode (`model.shadow_path`).
    pub const SHADOW_SCORES: &str = "churn.scores-shadow";
    pub const DLQ: &str = "churn.dlq";
    pub const INPUTS: [&str; 4] = [PURCHASES, ENGAGEMENT, FEEDBACK, SUBSCRIPTIONS];
}

impl Event {
    /// The default input topic for this event's type.
    pub fn topic(&self) -> &'static str {
        match self.payload {
            Payload::Purchase(_) => topics::PURCHASES,
            Payload::Engagement(_) => topics::ENGAGEMENT,
            Payload::Feedback(_) => topics::FEEDBACK,
            Payload::Subscription(_) => topics::SUBSCRIPTIONS,
        }
    }

    /// Serialize to the wire format (compact JSON).
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing these plain types cannot fail (no maps with non-string keys, no
        // non-finite floats from validated input); fall back to an empty object defensively.
        serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec())
    }
}
