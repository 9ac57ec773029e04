//! Offline training and evaluation through the same feature code the service uses.
//!
//! events → [`churn_features::rollups_from_events`] → [`build_training_set`] (observations at
//! many dates, labels strictly after each date) → time split → [`registry::model_input`] →
//! [`churn_model::train`] → test-split evaluation next to a naive recency baseline.

use std::collections::BTreeMap;

use churn_events::Event;
use churn_features::registry::{self, FEATURES};
use churn_features::training::{build_training_set, ObservationPlan, TrainingSet};
use churn_features::{day_start, rollups_from_events};
use churn_model::{metrics as m, Bands, Dataset, ModelArtifact, TrainParams, TrainReport};
use ndarray::Array2;
use serde::Serialize;

use crate::Error;

/// Model inputs (transformed, unscaled) of a training set as a matrix.
pub fn design_matrix(set: &TrainingSet) -> Array2<f64> {
    let n = FEATURES.len();
    let mut x = Array2::zeros((set.len(), n));
    let mut buf = Vec::with_capacity(n);
    for (i, mut row) in x.rows_mut().into_iter().enumerate() {
        registry::model_input(set.row(i), &mut buf);
        for (dst, src) in row.iter_mut().zip(&buf) {
            *dst = *src;
        }
    }
    x
}

/// Metrics of scores against labels.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Evaluation {
    pub rows: usize,
    pub churn_rate: f64,
    pub auc: f64,
    pub log_loss: f64,
    pub brier: f64,
    pub lift_top_decile: f64,
    pub precision_at_alert: f64,
    pub recall_at_alert: f64,
    pub baseline_recency_auc: f64,
    pub baseline_recency_lift_top_decile: f64,
}

/// Evaluate a model on a training-set split, with the recency rule as baseline.
pub fn evaluate(model: &ModelArtifact, set: &TrainingSet) -> Evaluation {
    let x = design_matrix(set);
    let p = model.predict_batch(x.view());
    let y = &set.labels;
    let rec = FEATURES
        .iter()
        .position(|d| d.name == "recency_activity_days")
        .unwrap_or(1);
    let recency: Vec<f64> = (0..set.len()).map(|i| set.row(i)[rec]).collect();
    let (precision, recall) = m::precision_recall_at(&p, y, model.alert_threshold);
    Evaluation {
        rows: set.len(),
        churn_rate: y.iter().filter(|&&v| v).count() as f64 / set.len().max(1) as f64,
        auc: m::auc(&p, y),
        log_loss: m::log_loss(&p, y),
        brier: m::brier(&p, y),
        lift_top_decile: m::lift_at(&p, y, 0.1),
        precision_at_alert: precision,
        recall_at_alert: recall,
        baseline_recency_auc: m::auc(&recency, y),
        baseline_recency_lift_top_decile: m::lift_at(&recency, y, 0.1),
    }
}

/// Everything `churnstream train` reports.
#[derive(Debug, Clone, Serialize)]
pub struct TrainSummary {
    pub rows_train: usize,
    pub rows_valid: usize,
    pub rows_test: usize,
    pub chosen_alpha: f64,
    pub converged: bool,
    pub iterations: u64,
    pub gradient_norm: f64,
    pub test: Evaluation,
}

/// Default risk bands on the calibrated churn probability (horizon = the churn definition's).
/// Probability cut-offs, not quantiles: a band means the same risk whatever the population mix,
/// and the number of customers per band is itself a KPI.
pub const DEFAULT_BANDS: Bands = Bands {
    medium: 0.15,
    high: 0.35,
    critical: 0.60,
};

/// Train a model from an event history. Returns the artifact (metrics filled in) and a summary.
/// `bands` replaces the trainer's quantile cut-offs; the alert threshold is `bands.high`.
pub fn train_from_events(
    events: &[Event],
    plan: &ObservationPlan,
    params: &TrainParams,
    bands: Bands,
) -> Result<(ModelArtifact, TrainSummary, TrainingSet), Error> {
    bands.validate()?;
    let customers = rollups_from_events(events);
    let set = build_training_set(&customers, plan)?;
    let (tr, va, te, _, _) = set.time_split(0.6, 0.2);
    let names: Vec<String> = FEATURES.iter().map(|d| d.name.to_string()).collect();
    let bindings: Vec<String> = FEATURES
        .iter()
        .map(|d| d.binding.as_str().to_string())
        .collect();
    let (xtr, xva) = (design_matrix(&tr), design_matrix(&va));
    let (mut model, report): (ModelArtifact, TrainReport) = churn_model::train(
        Dataset::new(xtr.view(), &tr.labels),
        Dataset::new(xva.view(), &va.labels),
        &names,
        &bindings,
        params,
    )?;
    model.thresholds = bands;
    model.alert_threshold = bands.high;
    model.model_version = model.compute_model_version()?;
    let test = evaluate(&model, &te);
    let mut metrics: BTreeMap<String, f64> = model.metrics.clone();
    for (k, v) in [
        ("test_auc", test.auc),
        ("test_log_loss", test.log_loss),
        ("test_brier", test.brier),
        ("test_lift_top_decile", test.lift_top_decile),
        ("test_precision_at_alert", test.precision_at_alert),
        ("test_recall_at_alert", test.recall_at_alert),
        ("baseline_recency_test_auc", test.baseline_recency_auc),
        ("rows_train", tr.len() as f64),
        ("rows_test", te.len() as f64),
    ] {
        if v.is_finite() {
            metrics.insert(k.into(), v);
        }
    }
    model.metrics = metrics;
    let first = set.as_of.iter().min().copied().unwrap_or(0);
    let last = set.as_of.iter().max().copied().unwrap_or(0);
    model.data_window = Some((day_start(first), day_start(last + 1)));
    model.seal()?;
    let summary = TrainSummary {
        rows_train: tr.len(),
        rows_valid: va.len(),
        rows_test: te.len(),
        chosen_alpha: report.chosen_alpha,
        converged: report.converged,
        iterations: report.iterations,
        gradient_norm: report.gradient_norm,
        test,
    };
    Ok((model, summary, te))
}
