//! The streaming stages of churnstream.
//!
//! Layout:
//! - [`config`]: the one configuration struct (TOML + `CHURN__…` env overrides).
//! - [`engine`]: the I/O-free core (decode → validate → dedupe → rollups → features → score →
//!   alert decision), driven by Kafka, by files (backtest) and by benchmarks alike.
//! - [`store`]: the engine's customer table (slots + an id index; compact per customer).
//! - [`policy`]: bands, hysteresis, cooldown, segments, recommended actions, revenue at risk.
//! - [`reasons`]: alert reasons by metric group, their texts (locales) and the sign check.
//! - [`kafka`]: rdkafka source/sink and the service loop with at-least-once offset handling.
//! - [`lineage`]: which changelog records a restore applies when members overlapped.
//! - [`train`]: offline training/evaluation through the same feature code.
//! - [`backtest`]: replay a history file through the same engine and evaluate the alerts.
//! - [`validate`]: check an event file line by line with the ingest's decoder (DLQ reasons).

pub mod backtest;
pub mod config;
pub mod dlq;
pub mod drift;
pub mod engine;
pub mod kafka;
pub mod lineage;
pub mod outcomes;
pub mod policy;
pub mod reasons;
pub mod report;
pub mod rollout;
pub mod store;
pub mod train;
pub mod validate;

pub use config::{Config, Stage};
pub use engine::{Engine, Ingest, Scored};

/// Errors of the pipeline. `Produce` and `Kafka` are retryable by restarting the service
/// (offsets of undelivered work are not stored); `Config` and `Model` are fatal.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("config {path}: {message}")]
    Config { path: String, message: String },
    #[error("model: {0}")]
    Model(#[from] churn_model::ModelError),
    #[error("features: {0}")]
    Features(#[from] churn_features::Error),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("producing to Kafka failed (offsets not stored, restart to retry): {0}")]
    Produce(String),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("changelog: {0}")]
    State(#[from] churn_features::wire::WireError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("export {path}: {message}")]
    Export { path: String, message: String },
    /// A metric catalog that cannot be used, or a model whose catalog differs from the
    /// configuration's (fatal: fix the configuration or retrain).
    #[error("metric catalog: {0}")]
    Catalog(String),
    /// Too few churning or staying customers to ship a model (fatal for `train`: a longer
    /// history, more customers or another churn definition is needed).
    #[error(
        "too few examples: the training rows hold {churners} churning and {stayers} staying \
         customers; a model needs at least {min} of each (train::MIN_CLASS_CUSTOMERS). \
         Use a longer history or more customers; until then new customers get no model score"
    )]
    TooFewExamples {
        churners: usize,
        stayers: usize,
        min: usize,
    },
}
