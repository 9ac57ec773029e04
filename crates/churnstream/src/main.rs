//! `churnstream`: the command line. Thin: parses flags, loads config, calls library code.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use churn_features::training::{ChurnDefinition, ObservationPlan};
use churn_metrics::{Health, Metrics};
use churn_model::{ModelArtifact, TrainParams};
use churn_pipeline::{backtest, kafka, train, validate, Config, Engine};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing::info;

#[derive(Parser)]
#[command(
    name = "churnstream",
    version,
    about = "Event-driven customer churn prediction on Kafka"
)]
struct Cli {
    /// Configuration file (TOML; example: deploy/churnstream.toml). Without it, the built-in
    /// defaults. Every key can be overridden by CHURN__SECTION__KEY env vars.
    #[arg(long, short, global = true, env = "CHURN_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the streaming pipeline: consume the input topics, keep per-customer features, score,
    /// publish alerts to churn.alerts and scores to churn.scores, serve /metrics, /healthz, /readyz.
    Run {
        /// Stages to run (overrides pipeline.stage): "all" in one process; or "ingest" (decode,
        /// validate, dedupe, DLQ → topics.events) and "score" (state, features, scoring, alerts,
        /// consuming topics.events) as separate processes, each scaled by adding instances.
        /// "features" runs inside "score" (they share the per-customer state). Default: the
        /// config's pipeline.stage, itself "all" by default.
        #[arg(long)]
        stage: Option<churn_pipeline::Stage>,
        /// Kafka bootstrap servers, host:port[,host:port…] (overrides kafka.brokers; default
        /// 127.0.0.1:9092).
        #[arg(long, env = "CHURN_BROKERS")]
        brokers: Option<String>,
        /// Model artifact, JSON from `train` (overrides model.path; default model/model.json).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Address of the /metrics, /healthz and /readyz HTTP server, host:port (overrides
        /// metrics.listen; default 127.0.0.1:9464; port 0 picks a free port).
        #[arg(long)]
        metrics_listen: Option<String>,
    },
    /// Forward the alerts of churn.alerts to the CRM webhook (crm.webhook_url): one signed POST
    /// per alert (ce-id = alert id), retries with backoff, refused alerts to crm.dlq_topic. Serves
    /// /metrics, /healthz, /readyz. Exits at once when crm.webhook_url is empty (disabled).
    Forward {
        /// Kafka bootstrap servers, host:port[,host:port…] (overrides kafka.brokers; default
        /// 127.0.0.1:9092).
        #[arg(long, env = "CHURN_BROKERS")]
        brokers: Option<String>,
        /// CRM webhook URL, http://… or https://… with the crm-tls build feature (overrides
        /// crm.webhook_url; default empty: forwarding disabled, the command exits at once).
        #[arg(long)]
        webhook_url: Option<String>,
        /// Address of the /metrics, /healthz and /readyz HTTP server, host:port (overrides
        /// metrics.listen; default 127.0.0.1:9464, so give another one, e.g. 127.0.0.1:9465,
        /// next to `run`; port 0 picks a free port).
        #[arg(long)]
        metrics_listen: Option<String>,
    },
    /// Train the logistic model on an event history (JSONL from `generate` or your own export).
    Train {
        /// Event history, one JSON event per line (gzip-compressed files are read too).
        #[arg(long)]
        events: PathBuf,
        /// Where to write the model artifact.
        #[arg(long, default_value = "model/model.json")]
        out: PathBuf,
        /// Churn definition: "inactivity" (no event for --churn-days) or "cancel" (subscription
        /// cancel within --churn-days).
        #[arg(long, default_value = "inactivity", value_parser = ["inactivity", "cancel"])]
        churn: String,
        /// Days of the churn definition / label horizon.
        #[arg(long, default_value_t = 30)]
        churn_days: i32,
        /// Days between observation dates.
        #[arg(long, default_value_t = 7)]
        every_days: i32,
        /// Inactivity churn: label a customer as leaving when a silence of --churn-days starts
        /// within this many days after the observation date (0: the silence starts at it, i.e.
        /// the customer may already have gone quiet). > 0 asks "who will leave soon".
        #[arg(long, default_value_t = 0)]
        within_days: i32,
        /// Observe a customer at a date only if their last event is fewer than this many days
        /// old ("still a customer"). Absent: --churn-days.
        #[arg(long)]
        active_within_days: Option<i32>,
        /// Random seed (oversampling).
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Risk band cut-offs (lower edges of medium,high,critical; alerts start at high), one
        /// of: calibrated probabilities "0.15,0.35,0.6"; multiples of the base rate
        /// "lift:2,4,8"; or the share of observed customers at or above each cut,
        /// "top:20%,5%,1%" (an alert budget: about 5 % of customers at or above high on a day).
        /// Lift and top forms resolve at training time against the validation split's scores
        /// and are stored as probabilities in the artifact.
        #[arg(long, default_value = "0.15,0.35,0.6")]
        bands: String,
        /// Probability calibration: "none" (the logistic with its oversampling prior corrected
        /// analytically; measured calibrated on test, README "The model") or "platt" (Platt
        /// scaling fit on the validation split, scored by the model fit on the training split
        /// only, applied to the final model).
        #[arg(long, default_value = "none", value_parser = ["none", "platt"])]
        calibration: String,
        /// Cold start: customers with fewer days of history are scored by a churn-rate table of
        /// their tenure week and recency (fit on the training rows, stored in the artifact;
        /// README "Cold start") instead of the model. 0: the model scores everyone.
        #[arg(long, default_value_t = churn_model::cold_start::DEFAULT_MIN_HISTORY_DAYS)]
        min_history_days: u32,
        /// Also write the training set (.csv): one row per customer × observation date with
        /// customer_id, as_of, every raw feature, label and split (train/valid/test).
        #[arg(long, value_name = "FILE.csv")]
        export_training_set: Option<PathBuf>,
    },
    /// Evaluate a model on the test split of an event history; prints JSON metrics (AUC, log loss,
    /// Brier, top-decile lift, precision/recall at the alert threshold, recency baseline, and
    /// per risk band the precision and share of the churn observations caught).
    Evaluate {
        /// Event history, one JSON event per line (gzip-compressed files are read too).
        #[arg(long)]
        events: PathBuf,
        /// The model artifact to evaluate.
        #[arg(long, default_value = "model/model.json")]
        model: PathBuf,
        /// Churn definition. Absent: the one the model was trained with (recorded in the
        /// artifact; `inactivity` for artifacts that do not record it). A definition other than
        /// the model's is allowed (a warning says so, and the JSON's `observation_plan` shows
        /// what was used).
        #[arg(long, value_parser = ["inactivity", "cancel"])]
        churn: Option<String>,
        /// Days of the churn definition / label horizon. Absent: the model's (else 30).
        #[arg(long)]
        churn_days: Option<i32>,
        /// Days between observation dates. Absent: the model's (else 7).
        #[arg(long)]
        every_days: Option<i32>,
        /// See `train --help`. Absent: the model's (else 0).
        #[arg(long)]
        within_days: Option<i32>,
        /// See `train --help`. Absent: the model's (else --churn-days).
        #[arg(long)]
        active_within_days: Option<i32>,
        /// Also write the test split's scores (.csv): customer_id, as_of, label, risk, band,
        /// baseline_recency_days.
        #[arg(long, value_name = "FILE.csv")]
        scores_out: Option<PathBuf>,
        /// Also write the training set (.csv), every split tagged (as `train
        /// --export-training-set`).
        #[arg(long, value_name = "FILE.csv")]
        export_training_set: Option<PathBuf>,
        /// Also write an HTML report (inline SVG charts: ROC, gains, calibration, risk
        /// histogram, coefficients; metric, calibration and backtest tables).
        #[arg(long)]
        report: Option<PathBuf>,
        /// Backtest cut-off dates in the report: retrain before each, evaluate on the next window
        /// (0 = no backtest).
        #[arg(long, default_value_t = 4, requires = "report")]
        cutoffs: usize,
    },
    /// Generate a synthetic population: events (JSONL) and ground-truth labels (CSV).
    Generate {
        /// Number of customers (cust-000000 …).
        #[arg(long, default_value_t = 2000)]
        customers: usize,
        /// Length of the simulated history in days (capped at 40000): from 2026-01-01 for
        /// --profile default; for --profile retail it ends at 2026-01-01 (a past history, which
        /// the validator's future-timestamp check accepts). Absent: 180 for default, 730 for
        /// retail (a 90-day churn definition needs a long history), 365 for low_churn (few
        /// churners a month).
        #[arg(long)]
        days: Option<u32>,
        /// Random seed of every draw: the same seed gives the same files.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Output directory (events.jsonl, labels.csv).
        #[arg(long, default_value = "data")]
        out: PathBuf,
        /// Hidden process: "default" (subscriptions, engagement, NPS, churn after a
        /// disengagement phase) or "retail" (non-contractual shop: BG/NBD purchasing with
        /// unobserved dropout, Gamma-Gamma spend, browsing; labels.csv gains p_alive_end).
        /// "low_churn": the default process at a low base rate and with weaker signals (≈ 2 % of
        /// customers a month, a third of them without warning; milder disengagement; 365 days
        /// unless --days).
        /// All are documented in the churn-gen crate docs.
        #[arg(long, default_value = "default", value_parser = ["default", "retail", "low_churn", "social"])]
        profile: String,
        /// Also publish the events to Kafka (as `replay` does; topic by type, key = customer_id).
        #[arg(long)]
        publish: bool,
        /// With --publish: target publish rate in events/s over all topics (an average, paced
        /// every 256 events). Absent or 0 (or negative): unlimited, as fast as the broker takes
        /// them.
        #[arg(long, value_name = "EVENTS_PER_S")]
        rate: Option<f64>,
        /// With --publish: Kafka bootstrap servers, host:port[,host:port…] (overrides
        /// kafka.brokers; default 127.0.0.1:9092).
        #[arg(long, env = "CHURN_BROKERS")]
        brokers: Option<String>,
        /// Simulate a retention campaign (profiles default and low_churn): a treated customer
        /// (outside the holdout group of alerts.holdout_share / alerts.holdout_salt, or of
        /// --holdout-share / --holdout-salt) whose decline would end in churn recovers instead
        /// with this probability, late in the decline. `churnstream outcomes` measures it.
        #[arg(long, value_name = "PROBABILITY")]
        treatment_effect: Option<f64>,
        /// With --treatment-effect: the holdout share (default: the config's
        /// alerts.holdout_share).
        #[arg(long, requires = "treatment_effect")]
        holdout_share: Option<f64>,
        /// With --treatment-effect: the holdout salt (default: the config's alerts.holdout_salt).
        #[arg(long, requires = "treatment_effect")]
        holdout_salt: Option<String>,
    },
    /// Replay a history through the streaming engine with its holdout group and print the
    /// measured retention lift: churn within the horizon after an alert, treated vs holdout,
    /// overall, per band and per action (JSON on stdout, a table on stderr; README "Holdout and
    /// measured lift").
    Outcomes {
        /// Event history, one JSON event per line (gzip-compressed files are read too).
        #[arg(long)]
        events: PathBuf,
        /// The model artifact to score with (its churn definition judges the outcomes).
        #[arg(long, default_value = "model/model.json")]
        model: PathBuf,
        /// Holdout share (overrides alerts.holdout_share).
        #[arg(long)]
        holdout_share: Option<f64>,
        /// Holdout salt (overrides alerts.holdout_salt).
        #[arg(long)]
        holdout_salt: Option<String>,
    },
    /// Population stability index (PSI) of every feature and of the score against the model's
    /// training population, every --every-days over a history (JSON on stdout, one line per date
    /// on stderr; README "Drift").
    Drift {
        /// Event history, one JSON event per line (gzip-compressed files are read too).
        #[arg(long)]
        events: PathBuf,
        /// The model artifact (trained by this version: it stores the reference distributions).
        #[arg(long, default_value = "model/model.json")]
        model: PathBuf,
        /// Days between the dates reported (the last day of the history is always one).
        #[arg(long, default_value_t = 14)]
        every_days: i32,
        /// Days of history before the first date reported.
        #[arg(long, default_value_t = 56)]
        warmup_days: i32,
    },
    /// Publish an event file to the input topics (topic by type, key = customer_id).
    Replay {
        /// Event file to publish, one JSON event per line, in file order (gzip-compressed files
        /// are read too), e.g. events.jsonl from `generate`. Required.
        #[arg(long)]
        events: PathBuf,
        /// Target publish rate in events/s over all topics (an average, paced every 256 events).
        /// Absent or 0 (or negative): unlimited, as fast as the broker takes them.
        #[arg(long, value_name = "EVENTS_PER_S")]
        rate: Option<f64>,
        /// Kafka bootstrap servers, host:port[,host:port…] (overrides kafka.brokers; default
        /// 127.0.0.1:9092).
        #[arg(long, env = "CHURN_BROKERS")]
        brokers: Option<String>,
    },
    /// Print the records of a topic (alerts are summarised one per line; --json for raw JSON).
    Tail {
        /// Topic to print, read from its beginning until Ctrl-C.
        #[arg(long, default_value = "churn.alerts")]
        topic: String,
        /// Print every record's value as received (raw JSON) instead of one summary line per
        /// alert (records that are not alerts are printed as received either way).
        #[arg(long)]
        json: bool,
        /// Kafka bootstrap servers, host:port[,host:port…] (overrides kafka.brokers; default
        /// 127.0.0.1:9092).
        #[arg(long, env = "CHURN_BROKERS")]
        brokers: Option<String>,
    },
    /// Replay a history through the streaming engine offline and write the alerts it would send.
    Backtest {
        /// Event history, one JSON event per line (gzip-compressed files are read too).
        #[arg(long)]
        events: PathBuf,
        /// The model artifact to score with.
        #[arg(long, default_value = "model/model.json")]
        model: PathBuf,
        /// Output file for alerts (JSONL).
        #[arg(long, default_value = "backtest-alerts.jsonl")]
        out: PathBuf,
        /// Ground-truth labels (CSV from `generate`: customer_id, churned, churn_at) to judge
        /// the alerts against; prints a JSON judgement with a `lead_time` section (README "How
        /// to read lead time") and a summary on stderr.
        #[arg(long)]
        labels: Option<PathBuf>,
        /// With --labels: churners count as evaluable (the lead-time cohort) when they churned at
        /// least this many days after alerting began (the first event's day +
        /// pipeline.warmup_days).
        #[arg(long, default_value_t = backtest::EVALUABLE_AFTER_DAYS, requires = "labels")]
        evaluable_after_days: i64,
        /// With --labels: a first alert is precise when its customer churns within this many
        /// days after it.
        #[arg(long, default_value_t = backtest::PRECISION_WINDOW_DAYS, requires = "labels")]
        precision_window_days: i64,
        /// With --labels: also write an HTML report (lead-time histogram, first alert → churn in
        /// days, negative = after the churn; the tables overall, per band and per action).
        #[arg(long, value_name = "FILE.html", requires = "labels")]
        report: Option<PathBuf>,
    },
    /// Check an event file line by line with the ingest's validator (the DLQ reasons of
    /// `churnstream run`, limits from the config); prints a JSON summary and exits 1 if any line
    /// would be dead-lettered.
    Validate {
        /// Event file, one JSON event per line (gzip-compressed files are read too).
        #[arg(long)]
        events: PathBuf,
        /// Write every rejected line as JSONL: {"line", "reason", "detail", "raw"}.
        #[arg(long, value_name = "FILE.jsonl")]
        rejects: Option<PathBuf>,
    },
    /// Compare two models on the same test rows of an event history (same customers, dates and
    /// labels; each model computes its own features, catalog included): AUC, log loss, Brier,
    /// lift, precision/recall side by side, and a paired bootstrap over customers of the AUC
    /// difference (candidate − baseline) with its 95 % interval. JSON on stdout.
    Compare {
        /// Event history (JSONL, plain or gzip).
        #[arg(long)]
        events: PathBuf,
        /// The first model (e.g. the one deployed).
        #[arg(long)]
        baseline: PathBuf,
        /// The second model (e.g. a retrained candidate).
        #[arg(long)]
        candidate: PathBuf,
        /// Bootstrap samples of the AUC difference.
        #[arg(long, default_value_t = 200)]
        bootstrap: usize,
    },
    /// Replace the live model artifact (model.path, or --model) with a candidate, after
    /// validating it as `run` would (format, hash, the configuration's metric catalog and
    /// bands): written next to it and renamed over it, so a running pipeline swaps it in
    /// between two batches within model.reload_interval_s, with no restart.
    Promote {
        /// The candidate artifact (e.g. the one running as model.shadow_path).
        #[arg(long)]
        candidate: PathBuf,
        /// The live artifact to replace (overrides model.path).
        #[arg(long)]
        model: Option<PathBuf>,
    },
    /// Print the feature registry as CSV: name, binding (rational/emotional/structural),
    /// transform (identity/log1p, applied before standardisation), group, direction,
    /// description; then the metrics of the configuration's catalog (`--config`, `[catalog]`).
    Features {
        /// Write to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// `cfg` with the `--holdout-share` / `--holdout-salt` flags given, validated again.
fn with_holdout(mut cfg: Config, share: Option<f64>, salt: Option<String>) -> Result<Config> {
    if let Some(s) = share {
        cfg.alerts.holdout_share = s;
    }
    if let Some(s) = salt {
        cfg.alerts.holdout_salt = s;
    }
    cfg.validate().context("holdout settings")?;
    Ok(cfg)
}

/// The model at `model` with `cfg`'s band override, and an engine on it for an offline replay
/// (`backtest`, `outcomes`).
fn replay_engine(cfg: &Config, model: &Path) -> Result<(Arc<ModelArtifact>, Engine)> {
    let model = Arc::new(churn_pipeline::rollout::with_configured_bands(
        ModelArtifact::load(model)?,
        &cfg.alerts,
    )?);
    let engine = Engine::new(model.clone(), cfg.pipeline.clone(), cfg.alerts.clone())?;
    Ok((model, engine))
}

fn read_events(path: &Path) -> Result<Vec<churn_events::Event>> {
    let r = churn_gen::open_text(path).with_context(|| format!("opening {}", path.display()))?;
    churn_gen::read_jsonl(r).with_context(|| format!("reading {}", path.display()))
}

/// `SOURCE_DATE_EPOCH` (the reproducible-builds convention, seconds since the epoch): when set,
/// `train` writes it as the artifact's `created_at` so reruns give byte-identical files.
fn source_date_epoch() -> Result<Option<chrono::DateTime<chrono::Utc>>> {
    let Ok(v) = std::env::var("SOURCE_DATE_EPOCH") else {
        return Ok(None);
    };
    let secs: i64 = v
        .trim()
        .parse()
        .with_context(|| format!("SOURCE_DATE_EPOCH={v}: expected seconds since 1970"))?;
    chrono::DateTime::from_timestamp(secs, 0)
        .map(Some)
        .with_context(|| format!("SOURCE_DATE_EPOCH={v}: out of range"))
}

/// Observation plan of `train` / `evaluate` from their flags.
fn observation_plan(
    churn: &str,
    churn_days: i32,
    every_days: i32,
    within_days: i32,
    active_within_days: Option<i32>,
) -> ObservationPlan {
    let definition = if churn == "cancel" {
        ChurnDefinition::Cancel {
            horizon_days: churn_days,
        }
    } else {
        ChurnDefinition::Inactivity {
            days: churn_days,
            within_days: within_days.max(0),
        }
    };
    ObservationPlan {
        definition,
        every_days,
        active_within_days: active_within_days.unwrap_or(churn_days),
        ..ObservationPlan::default()
    }
}

fn load_config(path: Option<&Path>, brokers: Option<String>) -> Result<Config> {
    let mut cfg = Config::load(path)?;
    if let Some(b) = brokers {
        cfg.kafka.brokers = b;
    }
    Ok(cfg)
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.cmd {
        Cmd::Run {
            stage,
            brokers,
            model,
            metrics_listen,
        } => {
            let mut cfg = load_config(cli.config.as_deref(), brokers)?;
            if let Some(s) = stage {
                cfg.pipeline.stage = s;
            }
            if let Some(m) = model {
                cfg.model.path = m;
            }
            if let Some(l) = metrics_listen {
                cfg.metrics.listen = l;
            }
            rt.block_on(run(cfg))
        }
        Cmd::Forward {
            brokers,
            webhook_url,
            metrics_listen,
        } => {
            let mut cfg = load_config(cli.config.as_deref(), brokers)?;
            if let Some(u) = webhook_url {
                cfg.crm.webhook_url = u;
            }
            if let Some(l) = metrics_listen {
                cfg.metrics.listen = l;
            }
            cfg.validate()?;
            if cfg.crm.webhook_url.trim().is_empty() {
                info!("crm.webhook_url is empty: the CRM forwarder is disabled, nothing to do");
                return Ok(());
            }
            let listen = cfg.metrics.listen.clone();
            rt.block_on(serve(&listen, |metrics, health, shutdown| {
                churn_crm::run(cfg, metrics, health, shutdown)
            }))
        }
        Cmd::Train {
            events,
            out,
            churn,
            churn_days,
            every_days,
            within_days,
            active_within_days,
            seed,
            bands,
            calibration,
            min_history_days,
            export_training_set,
        } => {
            let bands: churn_model::BandSpec = bands
                .parse()
                .map_err(|e: String| anyhow::anyhow!("--bands: {e}"))?;
            let calibration: train::CalibrationMethod =
                calibration.parse().map_err(anyhow::Error::msg)?;
            // The metric catalog comes from the configuration (`--config`, `[catalog]`); the
            // model records it, and `run` refuses a configuration with another one.
            let features = load_config(cli.config.as_deref(), None)?.feature_set()?;
            let events = read_events(&events)?;
            let plan = observation_plan(
                &churn,
                churn_days,
                every_days,
                within_days,
                active_within_days,
            );
            let params = TrainParams {
                seed,
                alphas: train::DEFAULT_ALPHAS.to_vec(),
                ..TrainParams::default()
            };
            let t0 = std::time::Instant::now();
            let set = train::training_set_with(&events, &plan, &features)?;
            train::check_examples(&set)?;
            if let Some(path) = &export_training_set {
                train::export_training_set(&set, path)?;
                info!(path = %path.display(), rows = set.len(), "training set written");
            }
            let opts = train::TrainOptions {
                params,
                bands,
                calibration,
                min_history_days,
            };
            let (mut model, summary, _) = train::train_with(&set, &opts)?;
            // The churn definition and observation rule, so `evaluate` uses the same labels.
            train::record_plan(&mut model, &plan)?;
            if let Some(t) = source_date_epoch()? {
                // Not part of the hash or the model version: only for byte-identical files.
                model.created_at = t;
            }
            if !summary.converged {
                tracing::warn!(
                    iterations = summary.iterations,
                    gradient_norm = summary.gradient_norm,
                    "training did not converge; the model is saved but check the data/params"
                );
            }
            if let Some(dir) = out.parent() {
                std::fs::create_dir_all(dir)?;
            }
            model.save(&out)?;
            info!(path = %out.display(), version = %model.model_version, seconds = t0.elapsed().as_secs_f64(), "model saved");
            // Sign sanity (issue 18): coefficients that contradict their feature's declared
            // direction are reported here and excluded from alert reasons.
            let sign_check = churn_pipeline::reasons::sign_check(&model);
            if !sign_check.is_empty() {
                let names: Vec<&str> = sign_check.iter().map(|s| s.feature.as_str()).collect();
                tracing::warn!(
                    count = sign_check.len(),
                    features = %names.join(","),
                    "coefficients contradict their declared direction: excluded from alert reasons (summary sign_check)"
                );
            }
            let mut printed = serde_json::to_value(&summary)?;
            if let serde_json::Value::Object(m) = &mut printed {
                m.insert("sign_check".into(), serde_json::to_value(&sign_check)?);
            }
            println!("{}", serde_json::to_string_pretty(&printed)?);
            Ok(())
        }
        Cmd::Evaluate {
            events,
            model,
            churn,
            churn_days,
            every_days,
            within_days,
            active_within_days,
            scores_out,
            export_training_set,
            report,
            cutoffs,
        } => {
            let model = ModelArtifact::load(&model)?;
            // The registry plus the model's own metric catalog; a model of another feature set
            // would not fit the design matrix: say which.
            let features = train::feature_set_of(&model)?;
            let events = read_events(&events)?;
            let recorded = train::recorded_plan(&model);
            let given = churn.is_some()
                || churn_days.is_some()
                || every_days.is_some()
                || within_days.is_some()
                || active_within_days.is_some();
            let plan = match recorded {
                Some(r) if !given => r,
                _ => {
                    // Each flag not given takes the model's value (or train's default).
                    let base =
                        recorded.unwrap_or_else(|| observation_plan("inactivity", 30, 7, 0, None));
                    let (kind, days, within) = match base.definition {
                        ChurnDefinition::Inactivity { days, within_days } => {
                            ("inactivity", days, within_days)
                        }
                        ChurnDefinition::Cancel { horizon_days } => ("cancel", horizon_days, 0),
                    };
                    let churn_days = churn_days.unwrap_or(days);
                    observation_plan(
                        churn.as_deref().unwrap_or(kind),
                        churn_days,
                        every_days.unwrap_or(base.every_days),
                        within_days.unwrap_or(within),
                        active_within_days.or(if churn_days == days {
                            Some(base.active_within_days)
                        } else {
                            None
                        }),
                    )
                }
            };
            if let Some(r) = recorded.filter(|r| *r != plan) {
                tracing::warn!(
                    model = %serde_json::to_string(&r)?,
                    used = %serde_json::to_string(&plan)?,
                    "evaluating with another churn definition / observation rule than the model was trained with: labels differ from training's"
                );
            }
            let spin = churn_pipeline::report::spinner("building features");
            let set = train::training_set_with(&events, &plan, &features)?;
            spin.finish_and_clear();
            let (_, _, test, _) = set.time_split(train::SPLIT_TRAIN, train::SPLIT_VALID);
            let ev = train::evaluate(&model, &test);
            /// The evaluation plus, per risk band, precision and the share of churn caught.
            #[derive(serde::Serialize)]
            struct Printed<'a> {
                #[serde(flatten)]
                ev: &'a train::Evaluation,
                /// The churn definition and observation rule of the labels.
                observation_plan: &'a ObservationPlan,
                /// Whether that differs from the one the model was trained with (absent in
                /// artifacts that do not record it).
                plan_differs_from_training: Option<bool>,
                per_band: Vec<churn_pipeline::report::BandRow>,
                /// Reliability tables and ECE without and with the artifact's calibrator.
                calibration: train::CalibrationReport,
                /// Every feature's coefficient and standardised importance, largest first.
                coefficients: Vec<train::FeatureWeight>,
            }
            let per_band = churn_pipeline::report::band_table(&model, &test);
            let calibration = train::calibration_report(&model, &test);
            let coefficients = train::feature_weights(&model, &features);
            eprintln!("coefficients (on standardised inputs; importance = |coefficient| / Σ|coefficient|):");
            eprintln!(
                "  {:<32} {:>11} {:>10}  {:<20} sign",
                "feature", "coefficient", "importance", "group"
            );
            for w in &coefficients {
                eprintln!(
                    "  {:<32} {:>11.4} {:>10.4}  {:<20} {}",
                    w.feature,
                    w.coefficient,
                    w.importance,
                    w.group,
                    if w.sign_agrees {
                        "ok"
                    } else {
                        "contradicts direction"
                    }
                );
            }
            eprintln!(
                "calibration ({}): ECE before {:.4} after {:.4} (equal-count bins: {:.4} -> {:.4}); \
                 mean predicted {:.4} -> {:.4}, observed {:.4}",
                calibration.calibrator["method"].as_str().unwrap_or("none"),
                calibration.before.ece,
                calibration.after.ece,
                calibration.before.ece_equal_count,
                calibration.after.ece_equal_count,
                calibration.before.mean_predicted,
                calibration.after.mean_predicted,
                calibration.after.observed_rate,
            );
            eprintln!("reliability (10 equal-width bins): bin  count  mean_predicted  observed  | after calibration: count  mean_predicted  observed");
            for i in 0..train::RELIABILITY_BINS {
                let lo = i as f64 / train::RELIABILITY_BINS as f64;
                let find = |bins: &[churn_model::CalibrationBin]| {
                    bins.iter().find(|b| (b.lower - lo).abs() < 1e-9).map_or(
                        "      0        -         -".to_owned(),
                        |b| {
                            format!(
                                "{:7} {:9.4} {:9.4}",
                                b.count, b.mean_predicted, b.observed_rate
                            )
                        },
                    )
                };
                eprintln!(
                    "  [{lo:.1}, {:.1})  {}  |  {}",
                    lo + 0.1,
                    find(&calibration.before.bins),
                    find(&calibration.after.bins)
                );
            }
            println!(
                "{}",
                serde_json::to_string_pretty(&Printed {
                    ev: &ev,
                    observation_plan: &plan,
                    plan_differs_from_training: recorded.map(|r| r != plan),
                    per_band,
                    calibration,
                    coefficients,
                })?
            );
            if let Some(path) = &scores_out {
                train::export_scores(&model, &test, path)?;
                info!(path = %path.display(), rows = test.len(), "test scores written");
            }
            if let Some(path) = &export_training_set {
                train::export_training_set(&set, path)?;
                info!(path = %path.display(), rows = set.len(), "training set written");
            }
            if let Some(path) = report {
                let params = TrainParams {
                    alphas: train::DEFAULT_ALPHAS.to_vec(),
                    ..TrainParams::default()
                };
                let back = if cutoffs == 0 {
                    Vec::new()
                } else {
                    churn_pipeline::report::backtest_on_set(
                        &set,
                        &plan,
                        &params,
                        model.thresholds,
                        model.calibration.is_some(),
                        cutoffs,
                    )?
                };
                let html = churn_pipeline::report::render_report(&model, &test, &back)?;
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                std::fs::write(&path, html)
                    .with_context(|| format!("writing {}", path.display()))?;
                info!(path = %path.display(), cutoffs = back.len(), "report written");
            }
            Ok(())
        }
        Cmd::Generate {
            customers,
            days,
            seed,
            out,
            profile,
            publish,
            rate,
            brokers,
            treatment_effect,
            holdout_share,
            holdout_salt,
        } => {
            let profile: churn_gen::Profile = profile.parse().map_err(anyhow::Error::msg)?;
            let treatment = match treatment_effect {
                None => None,
                Some(p) => {
                    if !matches!(
                        profile,
                        churn_gen::Profile::Default | churn_gen::Profile::LowChurn
                    ) {
                        bail!("--treatment-effect: only the default and low_churn profiles simulate it");
                    }
                    if !(0.0..=1.0).contains(&p) {
                        bail!("--treatment-effect {p}: expected a probability in [0, 1]");
                    }
                    let alerts = with_holdout(
                        load_config(cli.config.as_deref(), None)?,
                        holdout_share,
                        holdout_salt,
                    )?
                    .alerts;
                    if alerts.holdout_share <= 0.0 {
                        bail!(
                            "--treatment-effect needs a holdout group: holdout share {} (set --holdout-share or alerts.holdout_share in (0, 1))",
                            alerts.holdout_share
                        );
                    }
                    Some(churn_gen::TreatmentEffect {
                        recover_probability: p,
                        experiment: alerts.experiment(),
                    })
                }
            };
            let days = days.unwrap_or(match profile {
                churn_gen::Profile::Default => 180,
                churn_gen::Profile::Retail => 730,
                churn_gen::Profile::LowChurn => 365,
                churn_gen::Profile::Social => 365,
            });
            let mut cfg = churn_gen::GenConfig {
                customers,
                days,
                seed,
                profile,
                treatment,
                ..Default::default()
            };
            if profile == churn_gen::Profile::Retail {
                // The history ends where the default one starts.
                cfg.start -= chrono::Duration::days(i64::from(days.min(40_000)));
            }
            let pop = churn_gen::generate(&cfg);
            std::fs::create_dir_all(&out)?;
            let mut w = BufWriter::new(File::create(out.join("events.jsonl"))?);
            churn_gen::write_jsonl(&pop.events, &mut w)?;
            w.flush()?;
            let mut w = BufWriter::new(File::create(out.join("labels.csv"))?);
            churn_gen::write_labels_csv(&pop.labels, &mut w)?;
            w.flush()?;
            let churned = pop.labels.iter().filter(|l| l.churned).count();
            info!(events = pop.events.len(), customers, churned, days, profile = profile.as_str(), dir = %out.display(), "generated");
            if publish {
                let cfg = load_config(cli.config.as_deref(), brokers)?;
                let n = rt.block_on(async {
                    kafka::Publisher::new(&cfg)?
                        .send_all(&pop.events, rate)
                        .await
                })?;
                info!(published = n, brokers = %cfg.kafka.brokers, "published");
            }
            Ok(())
        }
        Cmd::Replay {
            events,
            rate,
            brokers,
        } => {
            let cfg = load_config(cli.config.as_deref(), brokers)?;
            let events = read_events(&events)?;
            let t0 = std::time::Instant::now();
            let n =
                rt.block_on(async { kafka::Publisher::new(&cfg)?.send_all(&events, rate).await })?;
            let s = t0.elapsed().as_secs_f64();
            info!(published = n, seconds = s, rate = n as f64 / s, "replayed");
            Ok(())
        }
        Cmd::Tail {
            topic,
            json,
            brokers,
        } => {
            let cfg = load_config(cli.config.as_deref(), brokers)?;
            let shutdown = CancellationToken::new();
            let stop = shutdown.clone();
            rt.block_on(async move {
                tokio::spawn(async move {
                    wait_for_signal().await;
                    stop.cancel();
                });
                kafka::tail(&cfg, &topic, shutdown, |_, payload, _| {
                    println!("{}", summarize(payload, json));
                    true
                })
                .await
            })?;
            Ok(())
        }
        Cmd::Backtest {
            events,
            model,
            out,
            labels,
            evaluable_after_days,
            precision_window_days,
            report,
        } => {
            let cfg = load_config(cli.config.as_deref(), None)?;
            let (model, mut engine) = replay_engine(&cfg, &model)?;
            let events = read_events(&events)?;
            let (alerts, stats) =
                backtest::replay(&mut engine, &events, cfg.pipeline.batch_max_events)?;
            let mut w = BufWriter::new(File::create(&out)?);
            for a in &alerts {
                w.write_all(&a.payload)?;
                w.write_all(b"\n")?;
            }
            w.flush()?;
            info!(alerts = alerts.len(), events = stats.events, out = %out.display(), "backtest done");
            if let Some(l) = labels {
                let labels = churn_gen::read_labels_csv(BufReader::new(File::open(&l)?))?;
                let start = events
                    .iter()
                    .map(|e| e.occurred_at)
                    .min()
                    .unwrap_or_default();
                // The engine's warm-up counts days from the oldest event's day.
                let from = churn_features::day_start(
                    churn_features::day_of(start) + cfg.pipeline.warmup_days,
                );
                let opts = backtest::JudgeOptions {
                    evaluable_after_days,
                    precision_window_days,
                    history_end: events.iter().map(|e| e.occurred_at).max(),
                    ..backtest::JudgeOptions::new(from)
                };
                let judgement = backtest::judge(&alerts, &labels, &opts);
                println!("{}", serde_json::to_string_pretty(&judgement)?);
                eprint!("{}", judgement.summary());
                if let Some(path) = report {
                    let html = churn_pipeline::report::render_lead_time_report(
                        &judgement,
                        &model.model_version,
                    )?;
                    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                        std::fs::create_dir_all(dir)?;
                    }
                    std::fs::write(&path, html)
                        .with_context(|| format!("writing {}", path.display()))?;
                    info!(path = %path.display(), "lead-time report written");
                }
            }
            Ok(())
        }
        Cmd::Outcomes {
            events,
            model,
            holdout_share,
            holdout_salt,
        } => {
            let cfg = with_holdout(
                load_config(cli.config.as_deref(), None)?,
                holdout_share,
                holdout_salt,
            )?;
            let (_, mut engine) = replay_engine(&cfg, &model)?;
            let events = read_events(&events)?;
            let report = churn_pipeline::outcomes::measure(
                &mut engine,
                &events,
                cfg.pipeline.batch_max_events,
            )?;
            let o = &report.overall;
            info!(
                episodes = o.treated.alerted + o.holdout.alerted,
                pending = report.pending,
                "outcomes replayed"
            );
            println!("{}", serde_json::to_string_pretty(&report)?);
            eprint!("{}", report.summary());
            Ok(())
        }
        Cmd::Drift {
            events,
            model,
            every_days,
            warmup_days,
        } => {
            let model = ModelArtifact::load(&model)?;
            let events = read_events(&events)?;
            let report = churn_pipeline::drift::report(&events, &model, every_days, warmup_days)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            eprint!("{}", report.summary());
            Ok(())
        }
        Cmd::Validate { events, rejects } => {
            let cfg = load_config(cli.config.as_deref(), None)?;
            let input = churn_gen::open_text(&events)
                .with_context(|| format!("opening {}", events.display()))?;
            let mut out = match &rejects {
                Some(p) => Some(BufWriter::new(
                    File::create(p).with_context(|| format!("creating {}", p.display()))?,
                )),
                None => None,
            };
            let report = validate::validate_lines(
                input,
                &validate::limits(&cfg.pipeline),
                chrono::Utc::now(),
                |line, rej, bytes| match out.as_mut() {
                    Some(w) => {
                        serde_json::to_writer(&mut *w, &validate::reject_record(line, rej, bytes))?;
                        w.write_all(b"\n")
                    }
                    None => Ok(()),
                },
            )
            .with_context(|| format!("reading {}", events.display()))?;
            if let Some(mut w) = out {
                w.flush()?;
            }
            println!("{}", serde_json::to_string_pretty(&report)?);
            if report.rejected > 0 {
                std::process::exit(1);
            }
            Ok(())
        }
        Cmd::Compare {
            events,
            baseline,
            candidate,
            bootstrap,
        } => {
            let a = ModelArtifact::load(&baseline)?;
            let b = ModelArtifact::load(&candidate)?;
            // The labels of both: the churn definition the models were trained with.
            let plan = match (train::recorded_plan(&a), train::recorded_plan(&b)) {
                (Some(x), Some(y)) if x != y => anyhow::bail!(
                    "the models were trained with different churn definitions / observation rules \
                     ({} vs {}): their scores answer different questions",
                    serde_json::to_string(&x)?,
                    serde_json::to_string(&y)?
                ),
                (Some(x), _) | (None, Some(x)) => x,
                (None, None) => observation_plan("inactivity", 30, 7, 0, None),
            };
            let events = read_events(&events)?;
            let part = |model: &ModelArtifact| -> Result<churn_features::training::TrainingSet> {
                let features = train::feature_set_of(model)?;
                let set = train::training_set_with(&events, &plan, &features)?;
                Ok(set.time_split(train::SPLIT_TRAIN, train::SPLIT_VALID).2)
            };
            let (ta, tb) = (part(&a)?, part(&b)?);
            let c = train::compare(&a, &ta, &b, &tb, bootstrap, 42)?;
            eprintln!(
                "{} rows: AUC {:.4} ({}) vs {:.4} ({}): difference {:+.4}, 95 % CI [{:+.4}, {:+.4}], \
                 candidate better in {:.0} % of {} bootstrap samples",
                c.rows,
                c.models[0].test.auc,
                c.models[0].model_version,
                c.models[1].test.auc,
                c.models[1].model_version,
                c.auc_difference,
                c.auc_difference_ci95[0],
                c.auc_difference_ci95[1],
                c.second_better_share * 100.0,
                c.bootstrap_samples
            );
            println!("{}", serde_json::to_string_pretty(&c)?);
            Ok(())
        }
        Cmd::Promote { candidate, model } => {
            let cfg = load_config(cli.config.as_deref(), None)?;
            let live = model.unwrap_or_else(|| cfg.model.path.clone());
            let before = ModelArtifact::load(&live).ok().map(|m| m.model_version);
            let version = churn_pipeline::rollout::promote(&candidate, &live, &cfg)
                .with_context(|| format!("promoting {}", candidate.display()))?;
            println!(
                "promoted {version} to {} (was {}); running pipelines swap it in within {} s",
                live.display(),
                before.as_deref().unwrap_or("none"),
                cfg.model.reload_interval_s
            );
            Ok(())
        }
        Cmd::Features { out } => {
            // The registry, then the configuration's metric catalog (`--config`, `[catalog]`).
            let features = load_config(cli.config.as_deref(), None)?.feature_set()?;
            let defs = features.defs();
            match out {
                Some(p) => {
                    let f =
                        File::create(&p).with_context(|| format!("creating {}", p.display()))?;
                    churn_features::registry::write_csv_of(BufWriter::new(f), defs)?;
                }
                None => {
                    match churn_features::registry::write_csv_of(std::io::stdout().lock(), defs) {
                        // `churnstream features | head` is fine.
                        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                        other => other?,
                    }
                }
            }
            Ok(())
        }
    }
}

/// One line per alert for humans; anything else as received.
fn summarize(payload: &[u8], raw: bool) -> String {
    let text = String::from_utf8_lossy(payload).into_owned();
    if raw {
        return text;
    }
    match serde_json::from_slice::<churn_events::CloudEvent<churn_events::AlertData>>(payload) {
        Ok(ev) => {
            let d = ev.data;
            let reasons: Vec<String> = d
                .reasons
                .iter()
                .map(|r| match (&r.group, &r.text) {
                    (Some(g), Some(t)) => format!("{g}: {t} ({})", r.binding),
                    _ => format!("{}={:.1} ({})", r.feature, r.value, r.binding),
                })
                .collect();
            format!(
                "ALERT {} risk={:.2} {} segment={} action={} revenue_at_risk={:.0} as_of={} [{}] via {}",
                d.customer_id,
                d.risk,
                d.risk_band,
                d.segment,
                d.recommended_action,
                d.revenue_at_risk,
                d.as_of.format("%Y-%m-%d"),
                reasons.join(", "),
                d.trigger
            )
        }
        Err(_) => text,
    }
}

async fn run(cfg: Config) -> Result<()> {
    if cfg.pipeline.stage == churn_pipeline::Stage::Ingest {
        let listen = cfg.metrics.listen.clone();
        return serve(&listen, |metrics, health, shutdown| {
            kafka::run_ingest(cfg, metrics, health, shutdown)
        })
        .await;
    }
    let model = churn_pipeline::rollout::load(&cfg.model.path, &cfg).with_context(|| {
        format!(
            "loading model {} (train one with `churnstream train`)",
            cfg.model.path.display()
        )
    })?;
    let model = Arc::new(model);
    let listen = cfg.metrics.listen.clone();
    serve(&listen, |metrics, health, shutdown| {
        kafka::run(cfg, model, metrics, health, shutdown)
    })
    .await
}

/// Runs `service` next to the metrics endpoint on `listen` until it returns or a signal arrives.
async fn serve<F, Fut, E>(listen: &str, service: F) -> Result<()>
where
    F: FnOnce(Arc<Metrics>, Health, CancellationToken) -> Fut,
    Fut: std::future::Future<Output = std::result::Result<(), E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    let metrics = Arc::new(Metrics::new());
    let health = Health::default();
    let shutdown = CancellationToken::new();
    let listener = churn_metrics::bind(listen).await?;
    let addr = listener.local_addr()?;
    info!(url = %format!("http://{addr}/metrics"), "metrics endpoint");
    println!("metrics: http://{addr}/metrics");
    let server = tokio::spawn(churn_metrics::serve(
        listener,
        metrics.clone(),
        health.clone(),
        shutdown.child_token(),
    ));
    let signals = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            info!("signal received: finishing the current batch");
            shutdown.cancel();
        })
    };
    let result = service(metrics, health, shutdown.child_token()).await;
    shutdown.cancel();
    signals.abort();
    let _ = server.await;
    if let Err(e) = result {
        bail!(e);
    }
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    /// Walks `churnstream --help` and `churnstream <command> --help` for every command: each
    /// argument has a description, each command an about line, and each default is shown.
    fn check(cmd: &mut clap::Command, path: &str, missing: &mut Vec<String>) {
        cmd.build();
        let help = cmd.render_long_help().to_string();
        if cmd.get_about().is_none() && path.contains(' ') {
            missing.push(format!("`{path}`: no about line"));
        }
        for a in cmd.get_arguments() {
            let name = a
                .get_long()
                .map(|l| format!("--{l}"))
                .unwrap_or_else(|| a.get_id().to_string());
            let text = a.get_long_help().or_else(|| a.get_help());
            if text.is_none_or(|t| t.to_string().trim().is_empty()) {
                missing.push(format!("`{path} {name}`: no description"));
            }
            // Flags (no value) have an implicit `false` that clap rightly does not show.
            for d in a.get_default_values() {
                let shown = format!("[default: {}]", d.to_string_lossy());
                let flag = !a.get_action().takes_values();
                if !flag && !a.is_hide_default_value_set() && !help.contains(&shown) {
                    missing.push(format!("`{path} {name}`: {shown} not in --help"));
                }
            }
        }
        for sub in cmd.get_subcommands_mut() {
            // clap's own `help` command documents itself.
            if sub.get_name() == "help" {
                continue;
            }
            let sub_path = format!("{path} {}", sub.get_name());
            check(sub, &sub_path, missing);
        }
    }

    #[test]
    fn every_flag_of_every_command_has_a_help_line() {
        let mut missing = Vec::new();
        check(&mut Cli::command(), "churnstream", &mut missing);
        assert!(
            missing.is_empty(),
            "--help gaps:\n  {}",
            missing.join("\n  ")
        );
    }

    #[test]
    fn replay_help_says_what_rate_means() {
        let mut cmd = Cli::command();
        let replay = cmd.find_subcommand_mut("replay").expect("replay command");
        let help = replay.render_long_help().to_string();
        for needle in ["--events", "--rate", "events/s", "Absent or 0", "unlimited"] {
            assert!(
                help.contains(needle),
                "`replay --help` lacks {needle:?}:\n{help}"
            );
        }
    }
}
