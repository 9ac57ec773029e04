//! CRM delivery: the optional webhook forwarder behind `churnstream forward`.
//!
//! Consumes the CloudEvents alerts of `topics.alerts` (consumer group `crm.group_id`) and POSTs
//! each one to `crm.webhook_url`:
//!
//! - body: the alert's bytes exactly as on the topic; `Content-Type: application/cloudevents+json`;
//!   `ce-id: <alert id>` (deterministic, the CRM's idempotency key);
//! - Standard Webhooks headers ([`sign`]): `webhook-id` (= `ce-id`), `webhook-timestamp: <unix s>`
//!   and, with `crm.secret`, `webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`;
//! - retries with exponential backoff and jitter on connect errors, timeouts, 408, 429 and 5xx
//!   (`Retry-After` seconds honoured up to `crm.max_retry_after_ms`), bounded by `crm.max_attempts` and `crm.max_elapsed_ms`
//!   ([`retry`]);
//! - refused (other 4xx, 3xx) or out of retries → `crm.dlq_topic` with the original key, bytes
//!   and headers plus `error.reason`, `error.stage=crm`, `error.attempts`, `source.topic`,
//!   `source.partition`, `source.offset`;
//! - at-least-once: an offset is stored only after its alert was delivered or dead-lettered
//!   ([`forward`]).
//!
//! Layout: [`sign`] (signature scheme), [`retry`] (classification and backoff), [`webhook`]
//! ([`Forwarder`]: one alert over HTTP with retries), [`forward`] ([`run`]: the Kafka loop).

pub mod forward;
pub mod retry;
pub mod sign;
pub mod webhook;

pub use forward::{run, run_with, Deliver, OffsetTracker};
pub use retry::{Backoff, Verdict};
pub use sign::{sign, signing_key, verify};
pub use webhook::{redacted_url, Delivery, Forwarder, WebhookConfig};

/// Errors of the forwarder. `Config` is fatal; `Kafka`, `DeadLetter` and `Lane` (a delivery lane
/// panicked or ended while the forwarder ran) stop the forwarder without storing the offset of
/// the alert concerned, so a restart retries it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("crm config: {0}")]
    Config(String),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Pipeline(#[from] churn_pipeline::Error),
    #[error(
        "dead-letter write to {topic} failed (offset not stored, restart to retry): {message}"
    )]
    DeadLetter { topic: String, message: String },
    #[error("delivery lane died (its alerts' offsets are not stored, restart to retry): {0}")]
    Lane(String),
}
