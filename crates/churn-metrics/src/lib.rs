//! Prometheus registry and the `/metrics`, `/healthz`, `/readyz` HTTP endpoint.
//!
//! Every churnstream service builds one [`Metrics`] at start-up, shares it as
//! `Arc<Metrics>` with its stages, and runs [`serve`] next to the pipeline:
//!
//! ```no_run
//! # async fn demo() -> Result<(), churn_metrics::Error> {
//! use std::sync::Arc;
//! use tokio_util::sync::CancellationToken;
//!
//! let metrics = Arc::new(churn_metrics::Metrics::new());
//! let health = churn_metrics::Health::default();
//! let shutdown = CancellationToken::new();
//! let listener = churn_metrics::bind("0.0.0.0:9464").await?;
//! tokio::spawn(churn_metrics::serve(listener, metrics.clone(), health.clone(), shutdown.child_token()));
//! // ... restore state, then:
//! health.set_ready(true);
//! metrics.ready.set(1);
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - [`metrics`] — [`Metrics`]: the custom [`prometheus::Registry`] and cached handles for every
//!   metric; [`names`] holds every family name (the only place names are spelled) and
//!   [`METRIC_NAMES`] lists them for dashboard consistency checks.
//! - [`health`] — [`Health`]: shared liveness/readiness flags.
//! - `http` — [`bind`] and [`serve`]: a small hand-written HTTP/1.1 server on tokio
//!   (`GET`/`HEAD`, one request per connection, `Connection: close`).
//!
//! # Conventions
//!
//! Names follow `churn_<stage>_<name>_<unit>`, counters end in `_total`; stages are
//! `ingest`, `pipeline`, `score`, `state`, `sink`, `model`, `business` and `crm` (the webhook
//! forwarder). Labels are few and
//! bounded — never a customer id. Record per batch, not per event, where possible; hot paths
//! cache the child handle returned by [`Metrics::consumed`] / [`Metrics::alert`].
//!
//! # Metrics
//!
//! | Field | Family | Type | Labels |
//! |---|---|---|---|
//! | `events_consumed` | `churn_ingest_events_consumed_total` | counter | `topic` |
//! | `events_rejected` | `churn_ingest_events_rejected_total` | counter | `reason` |
//! | `duplicates_dropped` | `churn_ingest_duplicates_dropped_total` | counter | |
//! | `dlq_published` | `churn_ingest_dlq_published_total` | counter | |
//! | `consumer_lag` | `churn_ingest_consumer_lag_messages` | gauge | `topic`, `partition` |
//! | `offsets_stored` | `churn_ingest_offsets_stored_total` | counter | |
//! | `batch_duration` | `churn_pipeline_batch_duration_seconds` | histogram (0.0005–10 s) | |
//! | `batch_events` | `churn_pipeline_batch_events` | histogram (1–100 000) | |
//! | `ready` | `churn_pipeline_ready` | gauge (0/1) | |
//! | `up_since` | `churn_pipeline_start_time_seconds` | gauge (unix s) | |
//! | `scoring_duration` | `churn_score_scoring_duration_seconds` | histogram (50 µs–5 s) | |
//! | `event_to_alert_latency` | `churn_score_event_to_alert_latency_seconds` | histogram (0.001–60 s) | |
//! | `scores` | `churn_score_scores_total` | counter | |
//! | `alerts` | `churn_score_alerts_total` (at-risk alerts) | counter | `band`, `action` |
//! | `lapsed_cancel`, `lapsed_inactivity` | `churn_score_lapsed_alerts_total` | counter | `reason` |
//! | `holdout_alerts` | `churn_score_holdout_alerts_total` (at-risk alerts held out) | counter | |
//! | `holdout_share` | `churn_score_holdout_share` | gauge (0..1) | `salt` |
//! | `outcomes` | `churn_business_alert_outcomes_total` | counter | `treatment`, `band`, `action`, `outcome` |
//! | `sweeps` | `churn_score_sweep_runs_total` | counter | |
//! | `sweep_rescored` | `churn_score_sweep_rescored_total` | counter | |
//! | `customers_tracked` | `churn_state_customers_tracked` | gauge | |
//! | `state_bytes` | `churn_state_bytes` | gauge | |
//! | `checkpoint_age` | `churn_state_checkpoint_age_seconds` | gauge | |
//! | `checkpoint_last_success` | `churn_state_checkpoint_last_success_timestamp_seconds` | gauge | |
//! | `produce_errors` | `churn_sink_produce_errors_total` | counter | |
//! | `model_info` | `churn_model_info` | gauge (1 = loaded) | `role`, `version` |
//! | `model_reloads` | `churn_model_reloads_total` | counter | `role`, `outcome` |
//! | `shadow_scores` | `churn_model_shadow_scores_total` | counter | `agreement` |
//! | `shadow_decisions` | `churn_model_shadow_decisions_total` | counter | `live`, `shadow` |
//! | `model_training_auc` | `churn_model_training_auc` | gauge | |
//! | `score_psi` | `churn_model_score_psi` | gauge (PSI) | |
//! | `nps_rolling` | `churn_business_nps_rolling_90d` | gauge (−100..100) | |
//! | `customers_by_band` | `churn_business_customers_by_risk_band` | gauge | `band` |
//! | `revenue_at_risk` | `churn_business_revenue_at_risk` | gauge | |
//! | `churned_customers` | `churn_business_churned_customers_total` (one per lapsed alert) | counter | |
//! | `churn_rate` | `churn_business_churn_rate_30d` | gauge (fraction) | |
//! | `crm_deliveries` | `churn_crm_deliveries_total` | counter | `outcome` |
//! | `crm_delivery_duration` | `churn_crm_delivery_duration_seconds` | histogram (0.005–300 s) | |
//!
//! `alerts` is pre-created for every [`ALERT_BANDS`] × [`ALERT_ACTIONS`] pair, `outcomes` for
//! every [`TREATMENTS`] × band × action × [`OUTCOMES`] combination (144 series), and
//! `customers_by_band` for every [`RISK_BANDS`] value, `crm_deliveries` for every
//! [`CRM_OUTCOMES`] value, `model_reloads` for every [`MODEL_ROLES`] × [`RELOAD_OUTCOMES`] pair,
//! `shadow_scores` for every [`SHADOW_AGREEMENTS`] value, `shadow_decisions` for its 4 pairs and `churn_score_lapsed_alerts_total` for every [`LAPSE_REASONS`]
//! value, so those series exist (at 0) from start-up.
//! Topics, reject reasons, partitions and model versions are configuration/data dependent and
//! appear when first used.

pub mod health;
mod http;
pub mod metrics;

pub use health::Health;
pub use http::{bind, serve};
pub use metrics::{
    names, Metrics, ALERT_ACTIONS, ALERT_BANDS, CRM_OUTCOMES, LAPSE_REASONS, METRIC_NAMES,
    MODEL_ROLES, OUTCOMES, RELOAD_OUTCOMES, RISK_BANDS, SHADOW_AGREEMENTS, TREATMENTS,
};
/// Re-exported so callers use the same prometheus version as the registry.
pub use prometheus;

/// Errors of the metrics endpoint. All are fatal for the endpoint, not for the pipeline: a
/// service may decide to keep consuming without `/metrics`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listen address could not be resolved or bound (in use, permission, bad syntax).
    #[error("cannot bind metrics endpoint on {addr:?}: {source}")]
    Bind {
        /// The address as configured.
        addr: String,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Accepting connections kept failing (e.g. out of file descriptors) after backing off.
    #[error("metrics endpoint on {addr} stopped accepting connections: {source}")]
    Accept {
        /// The bound address, or `"unknown"`.
        addr: String,
        /// The last accept error.
        #[source]
        source: std::io::Error,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
