//! The metric registry: one [`Metrics`] per process, names in [`names`].

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric family name. This module is the only place names are spelled.
pub mod names {
    /// Events read from an input topic, by `topic`.
    pub const INGEST_EVENTS_CONSUMED: &str = "churn_ingest_events_consumed_total";
    /// Events that failed validation and went to the DLQ, by `reason`.
    pub const INGEST_EVENTS_REJECTED: &str = "churn_ingest_events_rejected_total";
    /// Events dropped because their `event_id` was already seen.
    pub const INGEST_DUPLICATES_DROPPED: &str = "churn_ingest_duplicates_dropped_total";
    /// Messages acknowledged by the broker on the dead-letter topic.
    pub const INGEST_DLQ_PUBLISHED: &str = "churn_ingest_dlq_published_total";
    /// Consumer lag from librdkafka statistics, by `topic` and `partition`.
    pub const INGEST_CONSUMER_LAG: &str = "churn_ingest_consumer_lag_messages";
    /// Statistics samples where the broker's high watermark was below the consumer's position
    /// (the lag sample is dropped and the gauge removed, not frozen), by `topic`, `partition`.
    pub const INGEST_WATERMARK_ANOMALIES: &str = "churn_ingest_watermark_anomalies_total";
    /// Events that arrived for an event-time day their partition had already closed.
    pub const INGEST_LATE_EVENTS: &str = "churn_ingest_late_events_total";
    /// A consumed partition's offsets went back below the next expected offset (topic deleted
    /// and recreated, or the broker lost its log), by `topic`.
    pub const INGEST_OFFSET_RESETS: &str = "churn_ingest_offset_resets_total";
    /// Customers whose events arrived on another input partition than their state's.
    pub const INGEST_PARTITION_MOVES: &str = "churn_ingest_partition_moves_total";
    /// Engagement events whose `feature` no counter of the metric catalog names (counted in
    /// the catalog's `other` counter).
    pub const INGEST_CATALOG_OTHER: &str = "churn_ingest_catalog_other_events_total";
    /// Source offsets stored after all their outputs were acknowledged.
    pub const INGEST_OFFSETS_STORED: &str = "churn_ingest_offsets_stored_total";
    /// Wall time to process one micro-batch.
    pub const PIPELINE_BATCH_DURATION: &str = "churn_pipeline_batch_duration_seconds";
    /// Events per micro-batch.
    pub const PIPELINE_BATCH_EVENTS: &str = "churn_pipeline_batch_events";
    /// 1 once state is restored and the pipeline is consuming, else 0.
    pub const PIPELINE_READY: &str = "churn_pipeline_ready";
    /// Process start time, unix seconds.
    pub const PIPELINE_START_TIME: &str = "churn_pipeline_start_time_seconds";
    /// Wall time of one scoring call (features → model → policy).
    pub const SCORE_SCORING_DURATION: &str = "churn_score_scoring_duration_seconds";
    /// Processing time from message receipt to the alert's broker acknowledgement.
    pub const SCORE_EVENT_TO_ALERT_LATENCY: &str = "churn_score_event_to_alert_latency_seconds";
    /// Customers scored.
    pub const SCORE_SCORES: &str = "churn_score_scores_total";
    /// At-risk alerts published (CloudEvents type `com.churnstream.customer.at_risk`), by risk
    /// `band` and recommended `action`.
    pub const SCORE_ALERTS: &str = "churn_score_alerts_total";
    /// Lapsed alerts published (CloudEvents type `com.churnstream.customer.lapsed`, action
    /// `win_back`), by `reason` (`cancel`, `inactivity`).
    pub const SCORE_LAPSED_ALERTS: &str = "churn_score_lapsed_alerts_total";
    /// At-risk alerts of the holdout group (`treatment: holdout`, also counted in
    /// `churn_score_alerts_total`; the CRM forwarder does not deliver them).
    pub const SCORE_HOLDOUT_ALERTS: &str = "churn_score_holdout_alerts_total";
    /// Share of customers in the holdout group (`alerts.holdout_share`), labelled with the
    /// experiment's `salt`.
    pub const SCORE_HOLDOUT_SHARE: &str = "churn_score_holdout_share";
    /// Alerted customers whose outcome became known (the churn definition judged over its
    /// horizon after the first alert of the episode), by `treatment`, `band`, `action` and
    /// `outcome` (`churned`, `retained`).
    pub const BUSINESS_ALERT_OUTCOMES: &str = "churn_business_alert_outcomes_total";
    /// Timer sweeps run.
    pub const SCORE_SWEEP_RUNS: &str = "churn_score_sweep_runs_total";
    /// Customers re-scored by timer sweeps.
    pub const SCORE_SWEEP_RESCORED: &str = "churn_score_sweep_rescored_total";
    /// Customers with state held in memory.
    pub const STATE_CUSTOMERS_TRACKED: &str = "churn_state_customers_tracked";
    /// Approximate size of the in-memory state.
    pub const STATE_BYTES: &str = "churn_state_bytes";
    /// Customers forgotten by the sweep, by reason (`silent`, `cap`).
    pub const STATE_CUSTOMERS_FORGOTTEN: &str = "churn_state_customers_forgotten_total";
    /// Changelog records a restore could not read and skipped.
    pub const STATE_CORRUPT_RECORDS: &str = "churn_state_corrupt_records_total";
    /// Seconds since the last successful checkpoint.
    pub const STATE_CHECKPOINT_AGE: &str = "churn_state_checkpoint_age_seconds";
    /// Unix time of the last successful checkpoint.
    pub const STATE_CHECKPOINT_LAST_SUCCESS: &str =
        "churn_state_checkpoint_last_success_timestamp_seconds";
    /// Produce requests that failed (alerts, scores, DLQ).
    pub const SINK_PRODUCE_ERRORS: &str = "churn_sink_produce_errors_total";
    /// 1 for each loaded model: `role` live (serving) or shadow (candidate), and its `version`.
    pub const MODEL_INFO: &str = "churn_model_info";
    /// Model artifacts the pipeline re-read at run time, by `role` (live, shadow) and `outcome`
    /// (loaded, refused: it failed validation and the previous model keeps serving).
    pub const MODEL_RELOADS: &str = "churn_model_reloads_total";
    /// Customers the shadow model scored next to the live one, by `agreement` of their raw risk
    /// bands (same_band, shadow_higher, shadow_lower).
    pub const MODEL_SHADOW_SCORES: &str = "churn_model_shadow_scores_total";
    /// Shadow comparisons by the alert decision of each model's raw band (`live`, `shadow`:
    /// alert when the band is at least alerts.min_band, else no_alert).
    pub const MODEL_SHADOW_DECISIONS: &str = "churn_model_shadow_decisions_total";
    /// Test-set ROC AUC recorded in the loaded model artifact.
    pub const MODEL_TRAINING_AUC: &str = "churn_model_training_auc";
    /// Population stability index of the tracked customers' latest scores against the model's
    /// training population (0 until the first KPI update with a reference).
    pub const MODEL_SCORE_PSI: &str = "churn_model_score_psi";
    /// Population stability index of each `feature` (label: the feature name only) over the
    /// customers the training observation rule would observe on the last closed day (a
    /// deterministic sample of at most `pipeline.drift_sample` customers), against the model's
    /// training population.
    pub const MODEL_FEATURE_PSI: &str = "churn_model_feature_psi";
    /// Net promoter score over the last 90 days, −100..100.
    pub const BUSINESS_NPS_ROLLING: &str = "churn_business_nps_rolling_90d";
    /// Customers currently in each risk `band`.
    pub const BUSINESS_CUSTOMERS_BY_BAND: &str = "churn_business_customers_by_risk_band";
    /// Sum over customers of risk × expected revenue over the horizon.
    pub const BUSINESS_REVENUE_AT_RISK: &str = "churn_business_revenue_at_risk";
    /// Customers newly meeting the churn definition (a subscription cancel, or silence for
    /// `pipeline.churn_after_days`): one per lapsed alert published.
    pub const BUSINESS_CHURNED_CUSTOMERS: &str = "churn_business_churned_customers_total";
    /// Fraction of active customers that churned over the last 30 days.
    pub const BUSINESS_CHURN_RATE: &str = "churn_business_churn_rate_30d";
    /// CRM webhook deliveries by `outcome`: `delivered` (2xx), `retried` (one per retry),
    /// `dead_lettered` (acknowledged on the CRM dead-letter topic).
    pub const CRM_DELIVERIES: &str = "churn_crm_deliveries_total";
    /// Time from an alert's first webhook attempt to its final outcome (retries included).
    pub const CRM_DELIVERY_DURATION: &str = "churn_crm_delivery_duration_seconds";
}

/// Every metric family name registered by [`Metrics::new`].
pub const METRIC_NAMES: &[&str] = &[
    names::INGEST_EVENTS_CONSUMED,
    names::INGEST_EVENTS_REJECTED,
    names::INGEST_DUPLICATES_DROPPED,
    names::INGEST_OFFSET_RESETS,
    names::INGEST_PARTITION_MOVES,
    names::INGEST_CATALOG_OTHER,
    names::INGEST_DLQ_PUBLISHED,
    names::INGEST_CONSUMER_LAG,
    names::INGEST_WATERMARK_ANOMALIES,
    names::INGEST_LATE_EVENTS,
    names::INGEST_OFFSETS_STORED,
    names::PIPELINE_BATCH_DURATION,
    names::PIPELINE_BATCH_EVENTS,
    names::PIPELINE_READY,
    names::PIPELINE_START_TIME,
    names::SCORE_SCORING_DURATION,
    names::SCORE_EVENT_TO_ALERT_LATENCY,
    names::SCORE_SCORES,
    names::SCORE_ALERTS,
    names::SCORE_LAPSED_ALERTS,
    names::SCORE_HOLDOUT_ALERTS,
    names::SCORE_HOLDOUT_SHARE,
    names::BUSINESS_ALERT_OUTCOMES,
    names::SCORE_SWEEP_RUNS,
    names::SCORE_SWEEP_RESCORED,
    names::STATE_CUSTOMERS_TRACKED,
    names::STATE_BYTES,
    names::STATE_CUSTOMERS_FORGOTTEN,
    names::STATE_CORRUPT_RECORDS,
    names::STATE_CHECKPOINT_AGE,
    names::STATE_CHECKPOINT_LAST_SUCCESS,
    names::SINK_PRODUCE_ERRORS,
    names::MODEL_INFO,
    names::MODEL_TRAINING_AUC,
    names::MODEL_SCORE_PSI,
    names::MODEL_FEATURE_PSI,
    names::MODEL_RELOADS,
    names::MODEL_SHADOW_SCORES,
    names::MODEL_SHADOW_DECISIONS,
    names::BUSINESS_NPS_ROLLING,
    names::BUSINESS_CUSTOMERS_BY_BAND,
    names::BUSINESS_REVENUE_AT_RISK,
    names::BUSINESS_CHURNED_CUSTOMERS,
    names::BUSINESS_CHURN_RATE,
    names::CRM_DELIVERIES,
    names::CRM_DELIVERY_DURATION,
];

/// Outcomes of CRM webhook deliveries (`outcome` label of `churn_crm_deliveries_total`).
pub const CRM_OUTCOMES: &[&str] = &["delivered", "retried", "dead_lettered", "held_out"];

/// Treatments of at-risk alerts (`treatment` label of `churn_business_alert_outcomes_total`).
pub const TREATMENTS: &[&str] = &["treated", "holdout"];
/// Alert outcomes (`outcome` label of `churn_business_alert_outcomes_total`).
pub const OUTCOMES: &[&str] = &["churned", "retained"];

/// Roles of a loaded model (`role` label of `churn_model_info` and `churn_model_reloads_total`).
pub const MODEL_ROLES: &[&str] = &["live", "shadow"];
/// Outcomes of a model reload (`outcome` label of `churn_model_reloads_total`).
pub const RELOAD_OUTCOMES: &[&str] = &["loaded", "refused"];
/// Band agreement of a shadow score with the live one (`agreement` label of
/// `churn_model_shadow_scores_total`).
pub const SHADOW_AGREEMENTS: &[&str] = &["same_band", "shadow_higher", "shadow_lower"];

/// Reasons of lapsed alerts (`reason` label of `churn_score_lapsed_alerts_total`).
pub const LAPSE_REASONS: &[&str] = &["cancel", "inactivity"];

/// Risk bands that raise alerts (`band` label of `churn_score_alerts_total`).
pub const ALERT_BANDS: &[&str] = &["medium", "high", "critical"];
/// Recommended actions (`action` label of `churn_score_alerts_total` and
/// `churn_business_alert_outcomes_total`).
pub const ALERT_ACTIONS: &[&str] = &[
    "reactivation_email",
    "feedback_call",
    "loyalty_reward",
    "engagement_nudge",
    "service_recovery",
    "targeted_offer",
];
/// All risk bands (`band` label of `churn_business_customers_by_risk_band`).
pub const RISK_BANDS: &[&str] = &["low", "medium", "high", "critical"];

/// Batch wall time: 0.5 ms .. 10 s, log-spaced (1–2.5–5 per decade).
const BATCH_DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Events per batch: 1 .. 100 000, log-spaced (1–2–5 per decade).
const BATCH_EVENTS_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1_000.0, 2_000.0, 5_000.0, 10_000.0,
    20_000.0, 50_000.0, 100_000.0,
];
/// Scoring call: 50 µs .. 5 s, log-spaced.
const SCORING_DURATION_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0,
];
/// CRM delivery, first attempt → outcome: 5 ms .. 300 s, log-spaced (retries take minutes).
const CRM_DELIVERY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];
/// Receipt → alert ack: 1 ms .. 60 s, log-spaced, with 25 ms steps from 100 to 250 ms (a
/// batch waits up to `batch_max_wait_ms`, 100 ms by default, and the latency target is a
/// 250 ms p99: the quantile must be resolvable there).
const EVENT_TO_ALERT_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.175, 0.2, 0.225, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The process-wide registry and cached handles for every churnstream metric.
///
/// Fields are public handles: `metrics.scores.inc_by(n)`, `metrics.batch_duration.observe(s)`.
/// Labelled families are `*Vec`s; resolve children once and cache them (see
/// [`Metrics::consumed`], [`Metrics::alert`]).
pub struct Metrics {
    registry: Registry,
    /// `churn_ingest_events_consumed_total{topic}`.
    pub events_consumed: IntCounterVec,
    /// `churn_ingest_events_rejected_total{reason}`.
    pub events_rejected: IntCounterVec,
    /// `churn_ingest_duplicates_dropped_total`.
    pub duplicates_dropped: IntCounter,
    /// `churn_ingest_dlq_published_total`.
    pub dlq_published: IntCounter,
    /// `churn_pipeline_batch_duration_seconds`.
    pub batch_duration: Histogram,
    /// `churn_pipeline_batch_events`.
    pub batch_events: Histogram,
    /// `churn_score_scoring_duration_seconds`.
    pub scoring_duration: Histogram,
    /// `churn_score_event_to_alert_latency_seconds` (message receipt → alert acknowledged).
    pub event_to_alert_latency: Histogram,
    /// `churn_score_scores_total`.
    pub scores: IntCounter,
    /// `churn_score_alerts_total{band,action}` (at-risk alerts only).
    pub alerts: IntCounterVec,
    /// `churn_score_holdout_alerts_total`.
    pub holdout_alerts: IntCounter,
    /// `churn_score_holdout_share{salt}`; see [`Metrics::set_experiment`].
    pub holdout_share: GaugeVec,
    /// `churn_business_alert_outcomes_total{treatment,band,action,outcome}`; see [`Metrics::outcome`].
    pub outcomes: IntCounterVec,
    /// `churn_score_lapsed_alerts_total{reason="cancel"}`.
    pub lapsed_cancel: IntCounter,
    /// `churn_score_lapsed_alerts_total{reason="inactivity"}`.
    pub lapsed_inactivity: IntCounter,
    /// `churn_score_sweep_runs_total`.
    pub sweeps: IntCounter,
    /// `churn_score_sweep_rescored_total`.
    pub sweep_rescored: IntCounter,
    /// `churn_state_customers_tracked`.
    pub customers_tracked: IntGauge,
    /// `churn_state_bytes`.
    pub state_bytes: IntGauge,
    /// `churn_state_customers_forgotten_total{reason="silent"}`.
    pub forgotten_silent: IntCounter,
    /// `churn_state_customers_forgotten_total{reason="cap"}`.
    pub forgotten_cap: IntCounter,
    /// `churn_state_corrupt_records_total`.
    pub state_corrupt_records: IntCounter,
    /// `churn_state_checkpoint_age_seconds`.
    pub checkpoint_age: Gauge,
    /// `churn_state_checkpoint_last_success_timestamp_seconds`.
    pub checkpoint_last_success: Gauge,
    /// `churn_ingest_consumer_lag_messages{topic,partition}`.
    pub consumer_lag: IntGaugeVec,
    /// `churn_ingest_watermark_anomalies_total{topic,partition}`.
    pub watermark_anomalies: IntCounterVec,
    /// `churn_ingest_late_events_total`.
    pub late_events: IntCounter,
    /// `churn_ingest_offsets_stored_total`.
    pub offsets_stored: IntCounter,
    /// `churn_ingest_offset_resets_total{topic}`.
    pub offset_resets: IntCounterVec,
    /// `churn_ingest_partition_moves_total`.
    pub partition_moves: IntCounter,
    /// `churn_ingest_catalog_other_events_total`.
    pub catalog_other: IntCounter,
    /// `churn_sink_produce_errors_total`.
    pub produce_errors: IntCounter,
    /// `churn_model_info{version}`; see [`Metrics::set_model`].
    pub model_info: IntGaugeVec,
    /// `churn_model_training_auc`.
    pub model_training_auc: Gauge,
    /// `churn_model_score_psi`.
    pub score_psi: Gauge,
    /// `churn_model_feature_psi{feature}`: a series per feature, created with its first value
    /// (cache the handle).
    pub feature_psi_vec: GaugeVec,
    /// `churn_model_reloads_total{role,outcome}`; see [`Metrics::model_reload`].
    pub model_reloads: IntCounterVec,
    /// `churn_model_shadow_scores_total{agreement}`; see [`Metrics::shadow_score`].
    pub shadow_scores: IntCounterVec,
    /// `churn_model_shadow_decisions_total{live,shadow}`; see [`Metrics::shadow_decision`].
    pub shadow_decisions: IntCounterVec,
    /// `churn_business_nps_rolling_90d` (−100..100).
    pub nps_rolling: Gauge,
    /// `churn_business_customers_by_risk_band{band}`.
    pub customers_by_band: IntGaugeVec,
    /// `churn_business_revenue_at_risk`.
    pub revenue_at_risk: Gauge,
    /// `churn_business_churned_customers_total`.
    pub churned_customers: IntCounter,
    /// `churn_business_churn_rate_30d` (fraction 0..1).
    pub churn_rate: Gauge,
    /// `churn_pipeline_ready` (0/1).
    pub ready: IntGauge,
    /// `churn_pipeline_start_time_seconds`, set by [`Metrics::new`].
    pub up_since: Gauge,
    /// `churn_crm_deliveries_total{outcome}`; see [`Metrics::crm_delivery`].
    pub crm_deliveries: IntCounterVec,
    /// `churn_crm_delivery_duration_seconds`.
    pub crm_delivery_duration: Histogram,
}

impl Metrics {
    /// Builds a fresh registry with every metric registered and known label values pre-created.
    pub fn new() -> Self {
        let registry = Registry::new();
        let r = &registry;
        let forgotten = register(
            r,
            IntCounterVec::new(
                Opts::new(
                    names::STATE_CUSTOMERS_FORGOTTEN,
                    "Customers forgotten by the sweep (state dropped, changelog tombstone), by reason.",
                ),
                &["reason"],
            ),
        );
        let lapsed = register(
            r,
            IntCounterVec::new(
                Opts::new(
                    names::SCORE_LAPSED_ALERTS,
                    "Lapsed alerts published (type com.churnstream.customer.lapsed, action win_back), by reason (cancel, inactivity).",
                ),
                &["reason"],
            ),
        );
        let m = Self {
            events_consumed: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        names::INGEST_EVENTS_CONSUMED,
                        "Events read, by input topic.",
                    ),
                    &["topic"],
                ),
            ),
            events_rejected: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        names::INGEST_EVENTS_REJECTED,
                        "Events rejected by validation and dead-lettered, by reason.",
                    ),
                    &["reason"],
                ),
            ),
            duplicates_dropped: register(
                r,
                IntCounter::new(
                    names::INGEST_DUPLICATES_DROPPED,
                    "Events dropped as duplicates of an already seen event_id.",
                ),
            ),
            dlq_published: register(
                r,
                IntCounter::new(
                    names::INGEST_DLQ_PUBLISHED,
                    "Messages acknowledged on the dead-letter topic.",
                ),
            ),
            batch_duration: register(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        names::PIPELINE_BATCH_DURATION,
                        "Wall time to process one micro-batch.",
                    )
                    .buckets(BATCH_DURATION_BUCKETS.to_vec()),
                ),
            ),
            batch_events: register(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(names::PIPELINE_BATCH_EVENTS, "Events per micro-batch.")
                        .buckets(BATCH_EVENTS_BUCKETS.to_vec()),
                ),
            ),
            scoring_duration: register(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        names::SCORE_SCORING_DURATION,
                        "Wall time of one scoring call.",
                    )
                    .buckets(SCORING_DURATION_BUCKETS.to_vec()),
                ),
            ),
            event_to_alert_latency: register(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        names::SCORE_EVENT_TO_ALERT_LATENCY,
                        "Processing time from message receipt to alert acknowledgement.",
                    )
                    .buckets(EVENT_TO_ALERT_BUCKETS.to_vec()),
                ),
            ),
            scores: register(r, IntCounter::new(names::SCORE_SCORES, "Customers scored.")),
            alerts: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        names::SCORE_ALERTS,
                        "At-risk alerts published (type com.churnstream.customer.at_risk), by risk band and recommended action.",
                    ),
                    &["band", "action"],
                ),
            ),
            holdout_alerts: register(
                r,
                IntCounter::new(
                    names::SCORE_HOLDOUT_ALERTS,
                    "At-risk alerts of the holdout group (treatment holdout; not delivered to the CRM).",
                ),
            ),
            holdout_share: register(
                r,
                GaugeVec::new(
                    Opts::new(
                        names::SCORE_HOLDOUT_SHARE,
                        "Share of customers in the holdout group (alerts.holdout_share), by experiment salt.",
                    ),
                    &["salt"],
                ),
            ),
            outcomes: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        names::BUSINESS_ALERT_OUTCOMES,
                        "Alerted customers whose outcome is known (churn definition judged over its horizon after the episode's first alert), by treatment, band, action and outcome.",
                    ),
                    &["treatment", "band", "action", "outcome"],
                ),
            ),
            lapsed_cancel: lapsed.with_label_values(&["cancel"]),
            lapsed_inactivity: lapsed.with_label_values(&["inactivity"]),
            sweeps: register(
                r,
                IntCounter::new(names::SCORE_SWEEP_RUNS, "Timer sweeps run."),
            ),
            sweep_rescored: register(
                r,
                IntCounter::new(
                    names::SCORE_SWEEP_RESCORED,
                    "Silent customers re-scored by timer sweeps.",
                ),
            ),
            customers_tracked: register(
                r,
                IntGauge::new(
                    names::STATE_CUSTOMERS_TRACKED,
                    "Customers with state held in memory.",
                ),
            ),
            state_bytes: register(
                r,
                IntGauge::new(
                    names::STATE_BYTES,
                    "Approximate size of the in-memory state.",
                ),
            ),
            forgotten_silent: forgotten.with_label_values(&["silent"]),
            forgotten_cap: forgotten.with_label_values(&["cap"]),
            checkpoint_age: register(
                r,
                Gauge::new(
                    names::STATE_CHECKPOINT_AGE,
                    "Seconds since the last successful checkpoint.",
                ),
            ),
            checkpoint_last_success: register(
                r,
                Gauge::new(
                    names::STATE_CHECKPOINT_LAST_SUCCESS,
                    "Unix time of the last successful checkpoint.",
                ),
            ),
            consumer_lag: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        names::INGEST_CONSUMER_LAG,
                        "Consumer lag in messages, from librdkafka statistics.",
                    ),
                    &["topic", "partition"],
                ),
            ),
            watermark_anomalies: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        names::INGEST_WATERMARK_ANOMALIES,
                        "Lag samples dropped because the broker's high watermark was below the consumer position.",
                    ),
                    &["topic", "partition"],
                ),
            ),
            late_events: register(
                r,
                IntCounter::new(
                    names::INGEST_LATE_EVENTS,
                    "Events for an event-time day their partition's clock had already closed.",
                ),
            ),
            offset_resets: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        names::INGEST_OFFSET_RESETS,
                        "Times a consumed partition's offsets went back (topic recreated, broker log lost): the state's offsets of the old log were forgotten.",
                    ),
                    &["topic"],
                ),
            ),
            partition_moves: register(
                r,
                IntCounter::new(
                    names::INGEST_PARTITION_MOVES,
                    "Customers whose events arrived on another input partition than their state's (co-partitioning changed).",
                ),
            ),
            catalog_other: register(
                r,
                IntCounter::new(
                    names::INGEST_CATALOG_OTHER,
                    "Engagement events whose feature value no metric-catalog counter names (counted in the catalog's `other` counter).",
                ),
            ),
            state_corrupt_records: register(
                r,
                IntCounter::new(
                    names::STATE_CORRUPT_RECORDS,
                    "Changelog records a restore could not read (corrupt, or from a newer version) and skipped.",
                ),
            ),
            offsets_stored: register(
                r,
                IntCounter::new(
                    names::INGEST_OFFSETS_STORED,
                    "Source offsets stored after their outputs were acknowledged.",
                ),
            ),
            produce_errors: register(
                r,
                IntCounter::new(names::SINK_PRODUCE_ERRORS, "Failed produce requests."),
            ),
            model_info: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        names::MODEL_INFO,
                        "1 for each loaded model: role live (serving) or shadow (candidate) and its version.",
                    ),
                    &["role", "version"],
                ),
            ),
            model_training_auc: register(
                r,
                Gauge::new(
                    names::MODEL_TRAINING_AUC,
                    "Test-set ROC AUC recorded in the loaded model artifact.",
                ),
            ),
            score_psi: register(
                r,
                Gauge::new(
                    names::MODEL_SCORE_PSI,
                    "Population stability index of the tracked customers' latest scores against the model's training population.",
                ),
            ),
            feature_psi_vec: register(
                r,
                GaugeVec::new(
                    Opts::new(
                        names::MODEL_FEATURE_PSI,
                        "Population stability index of each feature over the customers the training observation rule observes on the last closed day, against the model's training population.",
                    ),
                    &["feature"],
                ),
            ),
            model_reloads: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        names::MODEL_RELOADS,
                        "Model artifacts re-read at run time, by role and outcome (refused: failed validation, the previous model keeps serving).",
                    ),
                    &["role", "outcome"],
                ),
            ),
            shadow_scores: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        names::MODEL_SHADOW_SCORES,
                        "Customers scored by the shadow model next to the live one, by agreement of their raw risk bands.",
                    ),
                    &["agreement"],
                ),
            ),
            shadow_decisions: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        names::MODEL_SHADOW_DECISIONS,
                        "Shadow comparisons by each model's alert decision on its raw band (alert: at least alerts.min_band).",
                    ),
                    &["live", "shadow"],
                ),
            ),
            nps_rolling: register(
                r,
                Gauge::new(
                    names::BUSINESS_NPS_ROLLING,
                    "Net promoter score over the last 90 days (-100..100).",
                ),
            ),
            customers_by_band: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        names::BUSINESS_CUSTOMERS_BY_BAND,
                        "Customers currently in each risk band.",
                    ),
                    &["band"],
                ),
            ),
            revenue_at_risk: register(
                r,
                Gauge::new(
                    names::BUSINESS_REVENUE_AT_RISK,
                    "Sum of risk times expected revenue over the horizon.",
                ),
            ),
            churned_customers: register(
                r,
                IntCounter::new(
                    names::BUSINESS_CHURNED_CUSTOMERS,
                    "Customers newly meeting the churn definition (subscription cancelled, or silent for pipeline.churn_after_days): one per lapsed alert published.",
                ),
            ),
            churn_rate: register(
                r,
                Gauge::new(
                    names::BUSINESS_CHURN_RATE,
                    "Fraction of active customers that churned over the last 30 days.",
                ),
            ),
            ready: register(
                r,
                IntGauge::new(
                    names::PIPELINE_READY,
                    "1 once state is restored and the pipeline is consuming.",
                ),
            ),
            up_since: register(
                r,
                Gauge::new(
                    names::PIPELINE_START_TIME,
                    "Process start time, unix seconds.",
                ),
            ),
            crm_deliveries: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        names::CRM_DELIVERIES,
                        "CRM webhook deliveries by outcome (delivered, retried, dead_lettered).",
                    ),
                    &["outcome"],
                ),
            ),
            crm_delivery_duration: register(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        names::CRM_DELIVERY_DURATION,
                        "Time from an alert's first webhook attempt to its final outcome.",
                    )
                    .buckets(CRM_DELIVERY_BUCKETS.to_vec()),
                ),
            ),
            registry,
        };

        for band in ALERT_BANDS {
            for action in ALERT_ACTIONS {
                m.alerts.with_label_values(&[*band, *action]);
                for treatment in TREATMENTS {
                    for outcome in OUTCOMES {
                        m.outcomes
                            .with_label_values(&[*treatment, *band, *action, *outcome]);
                    }
                }
            }
        }
        for band in RISK_BANDS {
            m.customers_by_band.with_label_values(&[*band]);
        }
        for outcome in CRM_OUTCOMES {
            m.crm_deliveries.with_label_values(&[*outcome]);
        }
        for role in MODEL_ROLES {
            for outcome in RELOAD_OUTCOMES {
                m.model_reload(role, outcome);
            }
        }
        for agreement in SHADOW_AGREEMENTS {
            m.shadow_score(agreement);
        }
        for (live, shadow) in [(false, false), (false, true), (true, false), (true, true)] {
            m.shadow_decision(live, shadow);
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        m.up_since.set(now);
        m
    }

    /// The registry holding every metric (for extra collectors or custom encoders).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Cached handle for `churn_ingest_events_consumed_total{topic}`; resolve once per topic.
    pub fn consumed(&self, topic: &str) -> IntCounter {
        self.events_consumed.with_label_values(&[topic])
    }

    /// Handle for `churn_score_alerts_total{band,action}`; resolve once per pair and cache.
    ///
    /// Use values from [`ALERT_BANDS`] and [`ALERT_ACTIONS`] to keep the label set bounded.
    pub fn alert(&self, band: &str, action: &str) -> IntCounter {
        self.alerts.with_label_values(&[band, action])
    }

    /// Handle for `churn_business_alert_outcomes_total{treatment,band,action,outcome}`: `treatment`
    /// from [`TREATMENTS`], `band` from [`ALERT_BANDS`], `action` from [`ALERT_ACTIONS`].
    pub fn outcome(&self, holdout: bool, band: &str, action: &str, churned: bool) -> IntCounter {
        let treatment = if holdout { "holdout" } else { "treated" };
        let outcome = if churned { "churned" } else { "retained" };
        self.outcomes
            .with_label_values(&[treatment, band, action, outcome])
    }

    /// Records the holdout experiment: `churn_score_holdout_share{salt}` = `share` (any
    /// previous salt is removed).
    pub fn set_experiment(&self, salt: &str, share: f64) {
        self.holdout_share.reset();
        self.holdout_share.with_label_values(&[salt]).set(share);
    }

    /// Handle for `churn_crm_deliveries_total{outcome}`; resolve once per outcome and cache.
    ///
    /// Use values from [`CRM_OUTCOMES`].
    pub fn crm_delivery(&self, outcome: &str) -> IntCounter {
        self.crm_deliveries.with_label_values(&[outcome])
    }

    /// Handle for `churn_ingest_events_rejected_total{reason}`; `reason` must come from a
    /// fixed set (the validation error kind), never from event content.
    pub fn rejected(&self, reason: &str) -> IntCounter {
        self.events_rejected.with_label_values(&[reason])
    }

    /// Records the loaded models: `churn_model_info{role="live",version}` = 1, and
    /// `{role="shadow",version}` = 1 when a shadow model runs (any previous series is removed),
    /// and `churn_model_training_auc` = the live model's `auc` when known.
    pub fn set_models(&self, live: &str, auc: Option<f64>, shadow: Option<&str>) {
        self.model_info.reset();
        self.model_info.with_label_values(&["live", live]).set(1);
        if let Some(s) = shadow {
            self.model_info.with_label_values(&["shadow", s]).set(1);
        }
        if let Some(a) = auc {
            self.model_training_auc.set(a);
        }
    }

    /// Handle for `churn_model_reloads_total{role,outcome}`: `role` from [`MODEL_ROLES`],
    /// `outcome` from [`RELOAD_OUTCOMES`].
    pub fn model_reload(&self, role: &str, outcome: &str) -> IntCounter {
        self.model_reloads.with_label_values(&[role, outcome])
    }

    /// Handle for `churn_model_shadow_scores_total{agreement}`: a value of
    /// [`SHADOW_AGREEMENTS`].
    pub fn shadow_score(&self, agreement: &str) -> IntCounter {
        self.shadow_scores.with_label_values(&[agreement])
    }

    /// Handle for `churn_model_shadow_decisions_total{live,shadow}`: whether each model's raw
    /// band would alert.
    pub fn shadow_decision(&self, live_alerts: bool, shadow_alerts: bool) -> IntCounter {
        let d = |a: bool| if a { "alert" } else { "no_alert" };
        self.shadow_decisions
            .with_label_values(&[d(live_alerts), d(shadow_alerts)])
    }

    /// Text exposition format (`text/plain; version=0.0.4`) of every registered metric.
    ///
    /// Encoding failures (not expected for these metrics) are logged and yield an empty string.
    pub fn render(&self) -> String {
        self.try_render().unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot encode metrics");
            String::new()
        })
    }

    pub(crate) fn try_render(&self) -> prometheus::Result<String> {
        let mut buf = Vec::with_capacity(16 * 1024);
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("families", &METRIC_NAMES.len())
            .finish_non_exhaustive()
    }
}

/// Registers a freshly constructed metric and returns its handle.
///
/// Panics only on programmer error: every definition in [`Metrics::new`] uses a constant valid
/// name, constant label names and strictly increasing buckets, registered once into a fresh
/// registry — all checked by the unit tests — so construction and registration cannot fail at
/// run time. This is the single place where this crate uses `expect`.
fn register<C>(registry: &Registry, metric: prometheus::Result<C>) -> C
where
    C: prometheus::core::Collector + Clone + 'static,
{
    let metric = metric.expect("static metric definition is valid");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique in a fresh registry");
    metric
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAGES: &[&str] = &[
        "ingest", "pipeline", "score", "state", "sink", "model", "business", "crm",
    ];

    fn touch_all(m: &Metrics) {
        m.consumed("purchases").inc();
        m.rejected("missing_field").inc();
        m.duplicates_dropped.inc();
        m.dlq_published.inc();
        m.batch_duration.observe(0.01);
        m.batch_events.observe(100.0);
        m.scoring_duration.observe(0.001);
        m.event_to_alert_latency.observe(0.2);
        m.scores.inc();
        m.alert("high", "feedback_call").inc();
        m.holdout_alerts.inc();
        m.set_experiment("salt-1", 0.1);
        m.outcome(true, "high", "feedback_call", false).inc();
        m.lapsed_cancel.inc();
        m.lapsed_inactivity.inc();
        m.sweeps.inc();
        m.sweep_rescored.inc();
        m.forgotten_silent.inc();
        m.forgotten_cap.inc();
        m.customers_tracked.set(3);
        m.state_bytes.set(1024);
        m.checkpoint_age.set(1.5);
        m.checkpoint_last_success.set(1.7e9);
        m.consumer_lag.with_label_values(&["purchases", "0"]).set(7);
        m.watermark_anomalies
            .with_label_values(&["purchases", "0"])
            .inc();
        m.late_events.inc();
        m.offsets_stored.inc();
        m.offset_resets.with_label_values(&["purchases"]).inc();
        m.partition_moves.inc();
        m.catalog_other.inc();
        m.state_corrupt_records.inc();
        m.produce_errors.inc();
        m.set_models("2024-06-01-abc", Some(0.81), None);
        m.feature_psi_vec
            .with_label_values(&["purchases_28d"])
            .set(0.3);
        m.nps_rolling.set(12.5);
        m.customers_by_band.with_label_values(&["low"]).set(10);
        m.revenue_at_risk.set(1234.5);
        m.churned_customers.inc();
        m.churn_rate.set(0.04);
        m.ready.set(1);
        m.crm_delivery("delivered").inc();
        m.crm_delivery_duration.observe(0.3);
    }

    /// `# TYPE <name> <type>` lines of an exposition.
    fn families(text: &str) -> Vec<(String, String)> {
        text.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                Some((it.next()?.to_owned(), it.next()?.to_owned()))
            })
            .collect()
    }

    #[test]
    fn every_name_is_rendered_after_touching() {
        let m = Metrics::new();
        touch_all(&m);
        let text = m.render();
        let rendered = families(&text);
        for name in METRIC_NAMES {
            assert!(
                rendered.iter().any(|(n, _)| n == name),
                "{name} missing from render():\n{text}"
            );
        }
        // And nothing is registered that METRIC_NAMES does not list.
        for (name, _) in &rendered {
            assert!(
                METRIC_NAMES.contains(&name.as_str()),
                "{name} not in METRIC_NAMES"
            );
        }
        assert_eq!(rendered.len(), METRIC_NAMES.len());
    }

    #[test]
    fn names_follow_convention() {
        let m = Metrics::new();
        touch_all(&m);
        let text = m.render();
        let mut seen = std::collections::HashSet::new();
        for name in METRIC_NAMES {
            assert!(seen.insert(*name), "duplicate name {name}");
            let rest = name
                .strip_prefix("churn_")
                .unwrap_or_else(|| panic!("{name} lacks churn_ prefix"));
            let stage = rest.split('_').next().unwrap_or_default();
            assert!(STAGES.contains(&stage), "{name}: unknown stage {stage:?}");
            assert!(
                rest.len() > stage.len() + 1,
                "{name}: no metric name after stage"
            );
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{name}: not snake_case"
            );
        }
        for (name, kind) in families(&text) {
            if kind == "counter" {
                assert!(
                    name.ends_with("_total"),
                    "counter {name} must end in _total"
                );
            } else {
                assert!(
                    !name.ends_with("_total"),
                    "{kind} {name} must not end in _total"
                );
            }
        }
    }

    #[test]
    fn known_label_values_are_precreated() {
        let text = Metrics::new().render();
        for band in ALERT_BANDS {
            for action in ALERT_ACTIONS {
                let series =
                    format!("churn_score_alerts_total{{action=\"{action}\",band=\"{band}\"}} 0");
                assert!(text.contains(&series), "missing {series}");
            }
        }
        for reason in LAPSE_REASONS {
            let series = format!("churn_score_lapsed_alerts_total{{reason=\"{reason}\"}} 0");
            assert!(text.contains(&series), "missing {series}");
        }
        let outcomes = text
            .lines()
            .filter(|l| l.starts_with("churn_business_alert_outcomes_total{") && l.ends_with(" 0"))
            .count();
        assert_eq!(
            outcomes,
            TREATMENTS.len() * ALERT_BANDS.len() * ALERT_ACTIONS.len() * OUTCOMES.len()
        );
        for band in RISK_BANDS {
            let series = format!("churn_business_customers_by_risk_band{{band=\"{band}\"}} 0");
            assert!(text.contains(&series), "missing {series}");
        }
        for outcome in CRM_OUTCOMES {
            let series = format!("churn_crm_deliveries_total{{outcome=\"{outcome}\"}} 0");
            assert!(text.contains(&series), "missing {series}");
        }
        for role in MODEL_ROLES {
            for outcome in RELOAD_OUTCOMES {
                let series =
                    format!("churn_model_reloads_total{{outcome=\"{outcome}\",role=\"{role}\"}} 0");
                assert!(text.contains(&series), "missing {series}");
            }
        }
        for agreement in SHADOW_AGREEMENTS {
            let series = format!("churn_model_shadow_scores_total{{agreement=\"{agreement}\"}} 0");
            assert!(text.contains(&series), "missing {series}");
        }
        let decisions = text
            .lines()
            .filter(|l| l.starts_with("churn_model_shadow_decisions_total{") && l.ends_with(" 0"))
            .count();
        assert_eq!(decisions, 4);
    }

    #[test]
    fn buckets_are_strictly_increasing_and_cover_spec() {
        for (b, lo, hi) in [
            (BATCH_DURATION_BUCKETS, 0.0005, 10.0),
            (BATCH_EVENTS_BUCKETS, 1.0, 100_000.0),
            (EVENT_TO_ALERT_BUCKETS, 0.001, 60.0),
            (SCORING_DURATION_BUCKETS, 0.00005, 5.0),
            (CRM_DELIVERY_BUCKETS, 0.005, 300.0),
        ] {
            assert!(b.windows(2).all(|w| w[0] < w[1]), "{b:?}");
            assert_eq!(b.first().copied(), Some(lo));
            assert_eq!(b.last().copied(), Some(hi));
        }
    }

    #[test]
    fn set_models_keeps_the_current_versions_and_start_time_is_set() {
        let m = Metrics::new();
        m.set_models("v1", Some(0.7), Some("s1"));
        m.set_models("v2", Some(0.8), None);
        let text = m.render();
        assert!(text.contains("churn_model_info{role=\"live\",version=\"v2\"} 1"));
        assert!(!text.contains("version=\"v1\""));
        assert!(!text.contains("churn_model_info{role=\"shadow\""));
        m.set_models("v2", None, Some("s2"));
        let text = m.render();
        assert!(text.contains("churn_model_info{role=\"shadow\",version=\"s2\"} 1"));
        assert!(text.contains("churn_model_training_auc 0.8"));
        assert!(m.up_since.get() > 1.0e9);
    }

    #[test]
    fn cached_handles_share_state() {
        let m = Metrics::new();
        let c = m.consumed("engagement");
        c.inc_by(5);
        assert_eq!(m.consumed("engagement").get(), 5);
        let a = m.alert("critical", "loyalty_reward");
        a.inc();
        assert_eq!(m.alert("critical", "loyalty_reward").get(), 1);
    }
}
