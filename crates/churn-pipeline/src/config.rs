//! The one configuration struct: embedded defaults → TOML file → `CHURN__SECTION__KEY` env vars.
//!
//! Unknown keys are errors (`deny_unknown_fields`). Every key is documented in README.md
//! ("Configuration") with its default; `deploy/churnstream.toml` is a complete example.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Error;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub topics: TopicsConfig,
    pub pipeline: PipelineConfig,
    pub alerts: AlertConfig,
    pub model: ModelConfig,
    pub metrics: MetricsConfig,
    pub crm: CrmConfig,
    /// The metric catalog (`[[catalog.counters]]`, `[[catalog.metrics]]`; empty = the built-in
    /// registry alone): what `train` adds to the features, and what `run` requires the model's
    /// catalog to equal ([`Config::check_model_catalog`]).
    pub catalog: churn_features::Catalog,
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Consumer group id; instances with the same id split the partitions.
    pub group_id: String,
    /// Static group membership (`group.instance.id`, KIP-345) of the group member consumer;
    /// empty = dynamic membership. Unique per instance and stable across its restarts (a
    /// StatefulSet pod name): an instance restarted within `session.timeout.ms` takes its old
    /// member's place and assignment instead of waiting for that member's session to expire and
    /// a rebalance (ARCHITECTURE.md, "Rebalances on tansu"). A static member does not leave the
    /// group on shutdown, so its partitions wait for the session timeout unless it comes back.
    pub group_instance_id: String,
    /// Extra librdkafka properties passed verbatim to consumer and producer
    /// (e.g. `security.protocol`, `sasl.mechanism`, `ssl.ca.location`).
    pub client: BTreeMap<String, String>,
    /// Extra librdkafka properties for the consumer only.
    pub consumer: BTreeMap<String, String>,
    /// Extra librdkafka properties for the producer only.
    pub producer: BTreeMap<String, String>,
}

/// librdkafka properties whose values are secrets: never printed (`Debug`, errors, logs).
fn is_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "jaas",
        "token",
        "ssl.key.pem",
        "ssl.keystore.key",
    ]
    .iter()
    .any(|s| k.contains(s))
}

/// The properties with secret values replaced by `***`.
fn redacted(m: &BTreeMap<String, String>) -> BTreeMap<&str, &str> {
    m.iter()
        .map(|(k, v)| (k.as_str(), if is_secret(k) { "***" } else { v.as_str() }))
        .collect()
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("group_id", &self.group_id)
            .field("group_instance_id", &self.group_instance_id)
            .field("client", &redacted(&self.client))
            .field("consumer", &redacted(&self.consumer))
            .field("producer", &redacted(&self.producer))
            .finish()
    }
}

impl KafkaConfig {
    /// How the clients authenticate, for error messages: `security.protocol`, `sasl.mechanism`
    /// and `sasl.username` as configured (librdkafka's defaults when absent), never a secret.
    pub fn security(&self) -> String {
        let get = |k: &str| {
            self.client
                .get(k)
                .or_else(|| self.consumer.get(k))
                .or_else(|| self.producer.get(k))
                .map(String::as_str)
        };
        let protocol = get("security.protocol").unwrap_or("plaintext");
        let mut out = format!("security.protocol={protocol}");
        if protocol.to_ascii_lowercase().starts_with("sasl") {
            let mechanism = get("sasl.mechanism")
                .or_else(|| get("sasl.mechanisms"))
                .unwrap_or("GSSAPI");
            out.push_str(&format!(", sasl.mechanism={mechanism}"));
            if let Some(u) = get("sasl.username") {
                out.push_str(&format!(", sasl.username={u}"));
            }
        }
        out
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            group_id: "churnstream".into(),
            group_instance_id: String::new(),
            client: BTreeMap::new(),
            consumer: BTreeMap::new(),
            producer: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicsConfig {
    pub purchases: String,
    pub engagement: String,
    pub feedback: String,
    pub subscriptions: String,
    pub alerts: String,
    pub scores: String,
    pub dlq: String,
    /// Compacted changelog of per-customer state, co-partitioned with the inputs (same partition
    /// count). Created at start-up if missing, like Kafka Streams' internal changelog topics.
    pub changelog: String,
    /// Replication factor used when the changelog topic is created (use 3 in production).
    pub changelog_replication: i32,
    /// Validated events between `--stage ingest` and `--stage score` (key = customer id; the
    /// original bytes and headers plus `source.topic`/`source.partition`/`source.offset`).
    /// Unused when one process runs every stage.
    pub events: String,
    /// Scores of the shadow model (`model.shadow_path`) next to the live model's (key =
    /// customer id; churn_events::ShadowScore). Needed only when a shadow model is configured.
    pub shadow_scores: String,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        use churn_events::topics as t;
        TopicsConfig {
            purchases: t::PURCHASES.into(),
            engagement: t::ENGAGEMENT.into(),
            feedback: t::FEEDBACK.into(),
            subscriptions: t::SUBSCRIPTIONS.into(),
            alerts: t::ALERTS.into(),
            scores: t::SCORES.into(),
            dlq: t::DLQ.into(),
            changelog: "churn.state-changelog".into(),
            changelog_replication: 1,
            events: "churn.events".into(),
            shadow_scores: t::SHADOW_SCORES.into(),
        }
    }
}

impl TopicsConfig {
    /// The raw input topics, in the order of the engine's topic index.
    pub fn inputs(&self) -> [&str; 4] {
        [
            &self.purchases,
            &self.engagement,
            &self.feedback,
            &self.subscriptions,
        ]
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Stages this process runs: `all` (one process consumes the input topics and scores),
    /// `ingest` (decode · validate · dedupe · DLQ, forwarding valid events to `topics.events`)
    /// or `score` (per-customer state, features, scoring and alerts, consuming `topics.events`).
    pub stage: Stage,
    /// Largest micro-batch (messages) before scoring and storing offsets. A batch closes at this
    /// size or after `batch_max_wait_ms`, whichever comes first: at low rates the wait bounds the
    /// latency, at high rates batches grow and each touched customer is scored (and
    /// checkpointed) once per batch instead of once per few thousand events.
    pub batch_max_events: usize,
    /// Longest a micro-batch waits to fill, in milliseconds (counted from its first message).
    pub batch_max_wait_ms: u64,
    /// How many recent `event_id`s are at least remembered for duplicate dropping (up to twice
    /// as many are: the window is two generations of this size).
    pub dedupe_window: usize,
    /// How many of each customer's most recent `event_id`s its state remembers (0..=4, 0 = off):
    /// a duplicate re-sent at a new offset (the ingest stage re-forwarding after a crash, a
    /// producer retrying) is dropped even after a restart, a rebalance or the revoke of other
    /// partitions, because this window is part of the customer's changelog record. 32-bit
    /// fingerprints: a new event is taken for a duplicate with probability below 1e-9.
    pub dedupe_per_customer: usize,
    /// Input topics whose offsets the restored state applied must be forgotten at the next
    /// assignment when the group has no committed offset for them: set this (once) after
    /// deleting and recreating an input topic, whose new log starts again at offset 0 — Kafka
    /// and tansu drop a deleted topic's committed offsets, so this cannot be told apart from a
    /// crash before the first commit, where the state's offsets are right. Without it, the
    /// new log's events up to the old log's end are skipped as replays (the service warns).
    #[serde(default)]
    pub recreated_topics: Vec<String>,
    /// Start even when the changelog topic is missing although the group has committed
    /// offsets (the state starts empty; the history before those offsets is lost to it).
    /// Without it the service refuses to start.
    #[serde(default)]
    pub allow_missing_changelog: bool,
    /// Largest accepted message in bytes (larger ones go to the DLQ).
    pub max_event_bytes: usize,
    /// How far in the future an `occurred_at` may be, in hours.
    pub max_future_hours: i64,
    /// How far in the past an `occurred_at` may be, in days (0: no bound). Default ten years:
    /// an ancient timestamp skips the warm-up and makes the engine's day scans long.
    pub max_past_days: i64,
    /// Largest accepted value of a numeric field (`amount`, `discount`, `duration_s`, `mrr`).
    pub max_number: f64,
    /// Silent-customer sweep interval, in seconds (processing time).
    pub sweep_interval_s: u64,
    /// `/healthz` answers 503 once the service loop made no round (a batch or a sweep tick)
    /// for this many seconds: a wedged loop gets the process restarted. Keep it above the
    /// longest state restore. 0 = liveness does not watch the loop.
    pub liveness_timeout_s: u64,
    /// A customer whose last event is at least this many days older than the event-time
    /// watermark is re-scored by the sweep (once per watermark day).
    pub silent_after_days: i32,
    /// The engine's inactivity churn definition: a customer with no event for this many days
    /// (event time) has churned. On the day it is met the engine sends one lapsed alert
    /// (`com.churnstream.customer.lapsed`, action `win_back`), counts the customer in
    /// `churn_business_churned_customers_total`, and sends no at-risk alert while the silence
    /// lasts. Keep it equal to the `--churn-days` the model was trained with (default 30; the
    /// model artifact does not record it). A subscription `cancel` is churn as well, whatever
    /// this value.
    pub churn_after_days: i32,
    /// Event-time watermark source: "event" (newest event time seen, for replays and backtests)
    /// or "wall" (the clock, for live traffic).
    pub clock: Clock,
    /// A source (topic-partition) that delivered nothing for this long no longer holds the
    /// event-time watermark back, in milliseconds.
    pub idle_source_ms: u64,
    /// No alerts until this many days of event time have been observed (scores are still
    /// published): customers first seen during warm-up have no history yet and would look silent.
    /// Set to 0 when the state is restored or backfilled.
    pub warmup_days: i32,
    /// A customer with no event for this many days of event time is forgotten by the sweep
    /// (state dropped, a tombstone written to the changelog); a later event starts a new history.
    /// 0 keeps customers forever.
    pub forget_after_days: i32,
    /// Hard cap on customers held in memory per instance. Above it the sweep forgets the least
    /// recently active customers (tombstoned like `forget_after_days`). 0 = no cap. Size it as
    /// memory budget ÷ `churn_state_bytes` per `churn_state_customers_tracked`.
    pub max_customers: usize,
    /// Live feature drift (`churn_model_feature_psi{feature}`): the PSI of every feature is
    /// recomputed once per closed day over a deterministic sample (a hash of the customer id)
    /// of about this many of the customers the training observation rule observes. 0 = off.
    pub drift_sample: usize,
}

/// See [`PipelineConfig::stage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    #[default]
    All,
    Ingest,
    Score,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::All => "all",
            Stage::Ingest => "ingest",
            Stage::Score => "score",
        }
    }
}

impl std::str::FromStr for Stage {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "all" => Ok(Stage::All),
            "ingest" => Ok(Stage::Ingest),
            "score" => Ok(Stage::Score),
            "features" => Err(
                "`features` runs inside `score`: features and scoring share the \
                 per-customer state and its changelog, so they scale together (see \
                 ARCHITECTURE.md, \"Stages\")"
                    .into(),
            ),
            other => Err(format!("unknown stage `{other}` (all, ingest, score)")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Clock {
    Event,
    Wall,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            stage: Stage::All,
            batch_max_events: 50_000,
            batch_max_wait_ms: 100,
            dedupe_window: 200_000,
            dedupe_per_customer: crate::engine::MAX_RECENT_IDS,
            recreated_topics: Vec::new(),
            allow_missing_changelog: false,
            max_event_bytes: 64 * 1024,
            max_future_hours: 24,
            max_past_days: churn_events::DEFAULT_MAX_PAST_DAYS,
            max_number: churn_events::DEFAULT_MAX_NUMBER,
            sweep_interval_s: 5,
            liveness_timeout_s: 600,
            silent_after_days: 7,
            churn_after_days: 30,
            clock: Clock::Event,
            idle_source_ms: 5000,
            warmup_days: 56,
            forget_after_days: 365,
            max_customers: 5_000_000,
            drift_sample: 5_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertConfig {
    /// Lowest band that raises an alert: "medium", "high" or "critical".
    pub min_band: String,
    /// Language of the reason texts (`reasons[].text`): "en" (default) or "nl".
    pub locale: String,
    /// Relative hysteresis: a customer leaves a band only when risk falls below the band's lower
    /// edge × (1 − hysteresis).
    pub hysteresis: f64,
    /// Days after an alert during which the same customer is not alerted again at the same or a
    /// lower band (a higher band still alerts).
    pub cooldown_days: i32,
    /// Horizon for "revenue at risk", in days.
    pub horizon_days: f64,
    /// Expected horizon revenue at or above which an at-risk customer counts as high-value.
    pub high_value_revenue: f64,
    /// CloudEvents `source` of alerts.
    pub source: String,
    /// Band cut-offs that replace the model's at start-up (`run`, `backtest`): `0.15,0.35,0.6`
    /// (probabilities), `lift:2,4,8` (multiples of the model's base rate) or `top:20%,5%,1%`
    /// (shares of the model's reference population at or above each cut; `high` is the alert
    /// budget). Resolved once against the artifact's stored score distribution, so alerts stay a
    /// function of input, model and configuration. Empty: the model's own bands.
    pub bands: String,
    /// Share of customers held out (0 ≤ share < 1): their at-risk alerts carry
    /// `treatment: holdout`, stay on the alerts topic and are never delivered to the CRM, so
    /// their outcomes measure the retention lift of acting on alerts. 0 = no holdout.
    pub holdout_share: f64,
    /// Salt of the holdout assignment (a hash of salt and customer id): change it to draw a new
    /// holdout group.
    pub holdout_salt: String,
}

impl AlertConfig {
    /// The `bands` override, parsed; `None` when empty.
    pub fn band_spec(&self) -> Result<Option<churn_model::BandSpec>, Error> {
        if self.bands.trim().is_empty() {
            return Ok(None);
        }
        self.bands.parse().map(Some).map_err(|m| Error::Config {
            path: "config".into(),
            message: format!("alerts.bands: {m}"),
        })
    }
}

impl Default for AlertConfig {
    fn default() -> Self {
        AlertConfig {
            min_band: "high".into(),
            locale: "en".into(),
            hysteresis: 0.1,
            cooldown_days: 7,
            horizon_days: 30.0,
            high_value_revenue: 150.0,
            source: "urn:churnstream:score".into(),
            bands: String::new(),
            holdout_share: 0.0,
            holdout_salt: "churnstream-holdout-1".into(),
        }
    }
}

impl AlertConfig {
    /// The holdout experiment alerts are assigned under.
    pub fn experiment(&self) -> churn_events::Experiment {
        churn_events::Experiment {
            holdout_share: self.holdout_share,
            salt: self.holdout_salt.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Path of the model artifact written by `churnstream train`. `run` re-reads it every
    /// `reload_interval_s`: a changed, valid artifact replaces the live model between two
    /// batches; one that fails validation is refused and the old model keeps serving
    /// (`churnstream promote` replaces it atomically).
    pub path: PathBuf,
    /// A candidate artifact to run in shadow mode: it scores the same feature rows as the live
    /// model, its scores go to `topics.shadow_scores` with agreement metrics, and nothing of it
    /// is alerted. Re-read like `path`; absent (or the file missing): no shadow.
    pub shadow_path: Option<PathBuf>,
    /// Seconds between checks of `path` and `shadow_path` for a new artifact (0: never re-read).
    pub reload_interval_s: u64,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            path: "model/model.json".into(),
            shadow_path: None,
            reload_interval_s: 10,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address of /metrics, /healthz and /readyz.
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: "127.0.0.1:9464".into(),
        }
    }
}

/// CRM delivery: the optional webhook forwarder (`churnstream forward`), which consumes
/// `topics.alerts` and POSTs each alert to `webhook_url` (crate `churn-crm`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CrmConfig {
    /// CRM endpoint every alert is POSTed to (`http://` or `https://`). Empty = forwarder disabled.
    pub webhook_url: String,
    /// Signing secret of the Standard Webhooks signature (`webhook-signature`): `whsec_<base64>`
    /// (the key is the decoded bytes) or any other string (its bytes); empty = unsigned. Set it
    /// with the environment variable `CHURN__CRM__SECRET` rather than in the file.
    pub secret: Secret,
    /// PEM file of certificate authorities trusted for an `https://` webhook besides the
    /// system's roots (a private CA); empty = the system's roots only.
    pub ca_location: String,
    /// Timeout of one HTTP attempt (connect, request and response), in milliseconds.
    pub timeout_ms: u64,
    /// Attempts per alert, the first included, before it is dead-lettered. 0 = no limit.
    pub max_attempts: u32,
    /// No new attempt starts later than this after the first one, in milliseconds. 0 = no limit.
    /// With both limits 0, retriable failures (connect errors, timeouts, 408, 429, 5xx) are
    /// retried until delivered: the alert's partition stops committing meanwhile, nothing is
    /// dead-lettered for being out of retries.
    pub max_elapsed_ms: u64,
    /// Backoff before the first retry, in milliseconds (doubles per retry, with jitter).
    pub backoff_initial_ms: u64,
    /// Upper bound of the backoff between two attempts, in milliseconds.
    pub backoff_max_ms: u64,
    /// Longest wait a `Retry-After` answer can impose before the next attempt, in milliseconds;
    /// longer (or absurd, e.g. `18446744073709551615`) values are cut to this. 0 = `Retry-After`
    /// is ignored and the backoff alone applies.
    pub max_retry_after_ms: u64,
    /// Alerts delivered concurrently (lanes by customer key: one customer's alerts stay in order).
    pub concurrency: usize,
    /// Dead-letter topic for alerts the CRM rejected or that ran out of retries.
    pub dlq_topic: String,
    /// Consumer group of the forwarder on `topics.alerts` (separate from `kafka.group_id`).
    pub group_id: String,
}

impl Default for CrmConfig {
    fn default() -> Self {
        CrmConfig {
            webhook_url: String::new(),
            secret: Secret::default(),
            ca_location: String::new(),
            timeout_ms: 10_000,
            max_attempts: 8,
            max_elapsed_ms: 300_000,
            backoff_initial_ms: 500,
            backoff_max_ms: 30_000,
            max_retry_after_ms: 600_000,
            concurrency: 4,
            dlq_topic: "churn.crm-dlq".into(),
            group_id: "churnstream-crm".into(),
        }
    }
}

impl CrmConfig {
    /// Semantic checks of the `[crm]` section.
    pub fn validate(&self) -> Result<(), String> {
        let url = self.webhook_url.trim();
        let http = url.starts_with("http://") || url.starts_with("https://");
        if !url.is_empty() && !http {
            // The URL itself is not shown: webhook URLs often carry a token.
            return Err(
                "crm.webhook_url: expected an http:// or https:// URL (or empty to disable)".into(),
            );
        }
        if self.timeout_ms == 0 {
            return Err("crm.timeout_ms must be > 0".into());
        }
        if self.concurrency == 0 {
            return Err("crm.concurrency must be >= 1".into());
        }
        if self.backoff_initial_ms == 0 || self.backoff_initial_ms > self.backoff_max_ms {
            return Err(format!(
                "crm.backoff_initial_ms = {} must be > 0 and <= crm.backoff_max_ms = {}",
                self.backoff_initial_ms, self.backoff_max_ms
            ));
        }
        if self.dlq_topic.trim().is_empty() || self.group_id.trim().is_empty() {
            return Err("crm.dlq_topic and crm.group_id must not be empty".into());
        }
        Ok(())
    }
}

/// A secret string: serialised as is, never shown by `Debug`.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl Secret {
    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() {
            "Secret(<empty>)"
        } else {
            "Secret(<redacted>)"
        })
    }
}

impl Config {
    /// Topics this process consumes: the raw inputs (stages `all` and `ingest`) or the validated
    /// events topic (`score`).
    pub fn consumed_topics(&self) -> Vec<&str> {
        match self.pipeline.stage {
            Stage::All | Stage::Ingest => self.topics.inputs().to_vec(),
            Stage::Score => vec![self.topics.events.as_str()],
        }
    }

    /// Consumer group of this process: `kafka.group_id`, with `-ingest` appended for the ingest
    /// stage (it consumes other topics than the scorers, so it is its own group).
    pub fn group_id(&self) -> String {
        match self.pipeline.stage {
            Stage::Ingest => format!("{}-ingest", self.kafka.group_id),
            Stage::All | Stage::Score => self.kafka.group_id.clone(),
        }
    }

    /// Defaults, then the TOML file (if given), then `CHURN__SECTION__KEY` environment variables
    /// (`CHURN__KAFKA__CLIENT__SECURITY_PROTOCOL` style keys under `kafka.client` map `_` to `.`).
    pub fn load(path: Option<&Path>) -> Result<Config, Error> {
        let vars: Vec<(String, String)> = std::env::vars().collect();
        Self::load_with_env(path, &vars)
    }

    /// [`Config::load`] with an explicit environment (for tests).
    pub fn load_with_env(path: Option<&Path>, env: &[(String, String)]) -> Result<Config, Error> {
        let mut doc: toml::Table = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| Error::Config {
                    path: p.display().to_string(),
                    message: e.to_string(),
                })?;
                text.parse().map_err(|e: toml::de::Error| Error::Config {
                    path: p.display().to_string(),
                    message: e.to_string(),
                })?
            }
            None => toml::Table::new(),
        };
        for (k, v) in env {
            let Some(rest) = k.strip_prefix("CHURN__") else {
                continue;
            };
            let parts: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
            if parts.len() < 2 || parts.iter().any(|p| p.is_empty()) {
                return Err(Error::Config {
                    path: format!("env {k}"),
                    message: "expected CHURN__SECTION__KEY".into(),
                });
            }
            let mut table = &mut doc;
            for p in &parts[..parts.len() - 1] {
                let entry = table
                    .entry(p.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                table = entry.as_table_mut().ok_or_else(|| Error::Config {
                    path: format!("env {k}"),
                    message: format!("`{p}` is not a section"),
                })?;
            }
            let mut key = parts[parts.len() - 1].clone();
            let passthrough = parts.len() == 3
                && parts[0] == "kafka"
                && matches!(parts[1].as_str(), "client" | "consumer" | "producer");
            if passthrough {
                key = key.replace('_', ".");
            }
            // A secret such as `0123` or `1e5`, or an instance id such as `7`, must not become a
            // number.
            let string_key = parts == ["crm", "secret"] || parts == ["kafka", "group_instance_id"];
            table.insert(key, env_value(v, passthrough || string_key));
        }
        let cfg: Config = toml::Value::Table(doc)
            .try_into()
            .map_err(|e: toml::de::Error| Error::Config {
                path: path.map_or("<defaults+env>".into(), |p| p.display().to_string()),
                message: e.to_string(),
            })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The registry plus this configuration's metric catalog (checked).
    pub fn feature_set(&self) -> Result<churn_features::FeatureSet, Error> {
        churn_features::FeatureSet::new(self.catalog.clone())
            .map_err(|e| Error::Catalog(format!("config [catalog]: {}", e.0)))
    }

    /// Refuse a model whose metric catalog differs from this configuration's, naming the
    /// difference (serving would compute other features than the model was trained on).
    pub fn check_model_catalog(&self, model: &churn_model::ModelArtifact) -> Result<(), Error> {
        let theirs = crate::train::feature_set_of(model)?;
        if let Some(d) = theirs.catalog().diff(&self.catalog) {
            return Err(Error::Catalog(format!(
                "model {} was trained with another metric catalog than the configuration's: {d}. \
                 Retrain with this configuration, or configure the model's catalog",
                model.model_version
            )));
        }
        Ok(())
    }

    /// Semantic checks serde cannot express.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |m: String| {
            Err(Error::Config {
                path: "config".into(),
                message: m,
            })
        };
        if self.kafka.brokers.trim().is_empty() {
            return bad("kafka.brokers must not be empty".into());
        }
        if !matches!(
            self.alerts.min_band.as_str(),
            "medium" | "high" | "critical"
        ) {
            return bad(format!(
                "alerts.min_band = `{}`: expected medium, high or critical",
                self.alerts.min_band
            ));
        }
        if crate::reasons::Locale::named(&self.alerts.locale).is_err() {
            return bad(format!(
                "alerts.locale = `{}`: expected en or nl",
                self.alerts.locale
            ));
        }
        self.alerts.band_spec()?;
        if !(0.0..1.0).contains(&self.alerts.hysteresis) {
            return bad(format!(
                "alerts.hysteresis = {}: expected a fraction in [0, 1)",
                self.alerts.hysteresis
            ));
        }
        if !(0.0..1.0).contains(&self.alerts.holdout_share) {
            return bad(format!(
                "alerts.holdout_share = {}: expected a share in [0, 1) (0 = no holdout)",
                self.alerts.holdout_share
            ));
        }
        if self.alerts.holdout_salt.trim().is_empty() {
            return bad("alerts.holdout_salt must not be empty".into());
        }
        if self.pipeline.batch_max_events == 0 {
            return bad("pipeline.batch_max_events must be > 0".into());
        }
        if self.pipeline.silent_after_days < 1 {
            return bad("pipeline.silent_after_days must be >= 1".into());
        }
        if self.pipeline.churn_after_days < 1 {
            return bad("pipeline.churn_after_days must be >= 1".into());
        }
        if self.pipeline.dedupe_per_customer > crate::engine::MAX_RECENT_IDS {
            return bad(format!(
                "pipeline.dedupe_per_customer = {}: at most {} (0 = off)",
                self.pipeline.dedupe_per_customer,
                crate::engine::MAX_RECENT_IDS
            ));
        }
        if self.pipeline.max_past_days < 0 {
            return bad("pipeline.max_past_days must be >= 0 (0 = no bound)".into());
        }
        if !(self.pipeline.max_number.is_finite() && self.pipeline.max_number > 0.0) {
            return bad(format!(
                "pipeline.max_number = {}: expected a finite number > 0",
                self.pipeline.max_number
            ));
        }
        for t in &self.pipeline.recreated_topics {
            let consumed = self.topics.inputs().contains(&t.as_str()) || *t == self.topics.events;
            if !consumed {
                return bad(format!(
                    "pipeline.recreated_topics: `{t}` is not an input topic ({}) nor topics.events",
                    self.topics.inputs().join(", ")
                ));
            }
        }
        self.kafka.check_co_partitioning().or_else(bad)?;
        self.crm.validate().or_else(bad)?;
        self.feature_set()?;
        Ok(())
    }
}

impl KafkaConfig {
    /// The consumer must assign partition `p` of every input topic (and of the changelog) to the
    /// same member: the state of a customer lives with its partition. librdkafka's `range`
    /// assignor does that for co-partitioned topics; `roundrobin` and `cooperative-sticky` do
    /// not, and neither does the broker-side `uniform` assignor of the new consumer protocol
    /// (`group.protocol=consumer`, KIP-848), so those settings are refused.
    pub fn check_co_partitioning(&self) -> Result<(), String> {
        let get = |k: &str| {
            self.consumer
                .get(k)
                .or_else(|| self.client.get(k))
                .map(|v| v.trim().to_ascii_lowercase())
        };
        if let Some(s) = get("partition.assignment.strategy") {
            if s != "range" {
                return Err(format!(
                    "partition.assignment.strategy = `{s}` breaks co-partitioning (partition p of every input topic must go to the same member); remove it or set `range`"
                ));
            }
        }
        if get("group.protocol").as_deref() == Some("consumer") {
            let assignor = get("group.remote.assignor");
            if assignor.as_deref() != Some("range") {
                return Err(format!(
                    "group.protocol = `consumer` with group.remote.assignor = `{}` breaks co-partitioning; set group.remote.assignor = `range` or remove group.protocol",
                    assignor.as_deref().unwrap_or("(broker default: uniform)")
                ));
            }
        }
        Ok(())
    }
}

/// Env values are strings; numbers and booleans are recognised for typed keys, but librdkafka
/// passthrough keys always stay strings.
fn env_value(v: &str, keep_string: bool) -> toml::Value {
    if !keep_string {
        if let Ok(i) = v.parse::<i64>() {
            return toml::Value::Integer(i);
        }
        if let Ok(f) = v.parse::<f64>() {
            return toml::Value::Float(f);
        }
        if let Ok(b) = v.parse::<bool>() {
            return toml::Value::Boolean(b);
        }
    }
    toml::Value::String(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn group_instance_id_from_env_stays_a_string() {
        let cfg = Config::load_with_env(None, &env(&[("CHURN__KAFKA__GROUP_INSTANCE_ID", "7")]))
            .expect("load");
        assert_eq!(cfg.kafka.group_instance_id, "7");
        assert!(
            Config::default().kafka.group_instance_id.is_empty(),
            "dynamic by default"
        );
    }

    #[test]
    fn file_then_env_overrides() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "[kafka]\nbrokers = \"a:1\"\n[kafka.client]\n\"security.protocol\" = \"SASL_SSL\"\n[pipeline]\nbatch_max_events = 10\n",
        )
        .expect("write");
        let cfg = Config::load_with_env(
            Some(&p),
            &env(&[
                ("CHURN__KAFKA__BROKERS", "b:2"),
                ("CHURN__PIPELINE__SILENT_AFTER_DAYS", "3"),
                ("CHURN__KAFKA__CLIENT__SASL_MECHANISM", "PLAIN"),
                ("UNRELATED", "x"),
            ]),
        )
        .expect("load");
        assert_eq!(cfg.kafka.brokers, "b:2");
        assert_eq!(cfg.pipeline.batch_max_events, 10);
        assert_eq!(cfg.pipeline.silent_after_days, 3);
        assert_eq!(
            cfg.kafka
                .client
                .get("security.protocol")
                .map(String::as_str),
            Some("SASL_SSL")
        );
        assert_eq!(
            cfg.kafka.client.get("sasl.mechanism").map(String::as_str),
            Some("PLAIN")
        );
    }

    #[test]
    fn crm_section_from_env_keeps_the_secret_a_string_and_hides_it() {
        let cfg = Config::load_with_env(
            None,
            &env(&[
                ("CHURN__CRM__WEBHOOK_URL", "http://crm.local/hook"),
                ("CHURN__CRM__SECRET", "0123"),
                ("CHURN__CRM__MAX_ATTEMPTS", "3"),
            ]),
        )
        .expect("load");
        assert_eq!(cfg.crm.webhook_url, "http://crm.local/hook");
        assert_eq!(cfg.crm.secret.expose(), "0123");
        assert_eq!(cfg.crm.max_attempts, 3);
        assert!(!format!("{cfg:?}").contains("0123"));
        let e = Config::load_with_env(None, &env(&[("CHURN__CRM__WEBHOOK_URL", "crm.local")]))
            .expect_err("no scheme");
        assert!(e.to_string().contains("crm.webhook_url"), "{e}");
        let e = Config::load_with_env(None, &env(&[("CHURN__CRM__BACKOFF_INITIAL_MS", "60000")]))
            .expect_err("initial > max");
        assert!(e.to_string().contains("backoff_initial_ms"), "{e}");
    }

    #[test]
    fn kafka_secrets_never_print_and_the_security_summary_names_no_secret() {
        let cfg = Config::load_with_env(
            None,
            &env(&[
                ("CHURN__KAFKA__CLIENT__SECURITY_PROTOCOL", "SASL_SSL"),
                ("CHURN__KAFKA__CLIENT__SASL_MECHANISM", "SCRAM-SHA-512"),
                ("CHURN__KAFKA__CLIENT__SASL_USERNAME", "svc"),
                ("CHURN__KAFKA__CLIENT__SASL_PASSWORD", "hunter2-secret"),
                ("CHURN__KAFKA__PRODUCER__SSL_KEY_PASSWORD", "keypass-9"),
            ]),
        )
        .expect("load");
        assert_eq!(
            cfg.kafka.client.get("sasl.password").map(String::as_str),
            Some("hunter2-secret")
        );
        let debug = format!("{cfg:?}");
        assert!(
            !debug.contains("hunter2-secret") && !debug.contains("keypass-9"),
            "{debug}"
        );
        assert!(
            debug.contains("sasl.username") && debug.contains("svc"),
            "{debug}"
        );
        assert_eq!(
            cfg.kafka.security(),
            "security.protocol=SASL_SSL, sasl.mechanism=SCRAM-SHA-512, sasl.username=svc"
        );
        assert_eq!(
            Config::default().kafka.security(),
            "security.protocol=plaintext"
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_clear_errors() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[pipeline]\nbatch_size = 10\n").expect("write");
        let e = Config::load_with_env(Some(&p), &[]).expect_err("unknown key");
        assert!(e.to_string().contains("batch_size"), "{e}");
        let e = Config::load_with_env(None, &env(&[("CHURN__ALERTS__MIN_BAND", "extreme")]))
            .expect_err("bad band");
        assert!(e.to_string().contains("extreme"), "{e}");
    }

    #[test]
    fn assignors_that_break_co_partitioning_are_refused() {
        for (vars, refused) in [
            (vec![], false),
            (
                vec![(
                    "CHURN__KAFKA__CONSUMER__PARTITION_ASSIGNMENT_STRATEGY",
                    "range",
                )],
                false,
            ),
            (
                vec![(
                    "CHURN__KAFKA__CONSUMER__PARTITION_ASSIGNMENT_STRATEGY",
                    "roundrobin",
                )],
                true,
            ),
            (
                vec![(
                    "CHURN__KAFKA__CLIENT__PARTITION_ASSIGNMENT_STRATEGY",
                    "cooperative-sticky",
                )],
                true,
            ),
            (
                vec![("CHURN__KAFKA__CONSUMER__GROUP_PROTOCOL", "consumer")],
                true,
            ),
            (
                vec![
                    ("CHURN__KAFKA__CONSUMER__GROUP_PROTOCOL", "consumer"),
                    ("CHURN__KAFKA__CONSUMER__GROUP_REMOTE_ASSIGNOR", "range"),
                ],
                false,
            ),
        ] {
            let r = Config::load_with_env(None, &env(&vars));
            assert_eq!(r.is_err(), refused, "{vars:?}: {r:?}");
            if let Err(e) = r {
                assert!(e.to_string().contains("co-partitioning"), "{e}");
            }
        }
    }

    #[test]
    fn input_bounds_and_recreated_topics_are_checked() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("c.toml");
        let load = |body: &str| {
            std::fs::write(&p, body).expect("write");
            Config::load_with_env(Some(&p), &[])
        };
        let ok = load("[pipeline]\nmax_past_days = 0\nmax_number = 1e6\nrecreated_topics = [\"purchases\", \"churn.events\"]\n")
            .expect("valid");
        assert_eq!(ok.pipeline.recreated_topics, ["purchases", "churn.events"]);
        for (body, word) in [
            ("[pipeline]\nmax_past_days = -1\n", "max_past_days"),
            (
                "[pipeline]\ndedupe_per_customer = 9\n",
                "dedupe_per_customer",
            ),
            ("[pipeline]\nmax_number = 0\n", "max_number"),
            ("[pipeline]\nmax_number = inf\n", "max_number"),
            (
                "[pipeline]\nrecreated_topics = [\"purchase\"]\n",
                "purchase",
            ),
        ] {
            let e = load(body).expect_err(body);
            assert!(e.to_string().contains(word), "{body}: {e}");
        }
    }
}
