//! Offline training and evaluation through the same feature code the service uses.
//!
//! events → [`churn_features::rollups_from_events`] → [`build_training_set`] (observations at
//! many dates, labels strictly after each date) → time split → [`FeatureSet::model_input`] →
//! [`churn_model::train`] → test-split evaluation next to a naive recency baseline.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use churn_events::Event;
use churn_features::registry::FEATURES;
use churn_features::training::{
    build_training_set_with, date_string, push_csv_field, ObservationPlan, Split, SplitPlan,
    TrainingSet,
};
use churn_features::{day_start, rollups_from_events_with, Catalog, FeatureSet};
use churn_model::drift::{DriftReference, Reference};
use churn_model::{
    metrics as m, BandSpec, Bands, CalibrationBin, Dataset, ModelArtifact, ScoreDistribution,
    TrainParams, TrainReport,
};
use ndarray::Array2;
use serde::Serialize;

use crate::Error;

/// Model inputs (transformed, unscaled) of a training set as a matrix.
pub fn design_matrix(set: &TrainingSet) -> Array2<f64> {
    let n = set.features.len();
    let mut x = Array2::zeros((set.len(), n));
    let mut buf = Vec::with_capacity(n);
    for (i, mut row) in x.rows_mut().into_iter().enumerate() {
        set.features.model_input(set.row(i), &mut buf);
        for (dst, src) in row.iter_mut().zip(&buf) {
            *dst = *src;
        }
    }
    x
}

/// The L2 grid of `churnstream train` (linfa's alpha: the penalty on a *sum* of log losses, so
/// larger training sets need larger values for the same per-row strength; 1000 on 20 000 rows is
/// scikit-learn's C = 0.001).
pub const DEFAULT_ALPHAS: [f64; 5] = [0.1, 1.0, 10.0, 100.0, 1000.0];

/// Share of observation dates in the training part of the time split (earliest first).
pub const SPLIT_TRAIN: f64 = 0.6;
/// Share of observation dates in the validation part (L2 strength); the rest is the test part.
pub const SPLIT_VALID: f64 = 0.2;

/// Column of the naive recency baseline's score (days since the last event of any kind).
fn recency_column() -> usize {
    FEATURES
        .iter()
        .position(|d| d.name == "recency_activity_days")
        .unwrap_or(1)
}

/// Model churn probabilities and recency-baseline scores of every row of a training set.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    /// Calibrated churn probability from the model.
    pub risk: Vec<f64>,
    /// `recency_activity_days`: the naive baseline's score (higher = more likely to churn).
    pub recency: Vec<f64>,
}

/// Score every row of `set` as the service does ([`ServedScore`]: the model, or the cold-start
/// fallback for short histories) next to the recency baseline.
pub fn score(model: &ModelArtifact, set: &TrainingSet) -> Scores {
    let rec = recency_column();
    Scores {
        risk: served_batch(model, set),
        recency: (0..set.len()).map(|i| set.row(i)[rec]).collect(),
    }
}

/// One served score: the churn probability, whether the cold-start fallback made it, and the
/// customer's days of history (`tenure_days`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Served {
    pub risk: f64,
    pub cold_start: bool,
    pub history_days: f64,
}

/// The scoring rule of the service, offline and online alike: the model's probability, except
/// for customers with less history than the artifact's cold-start `min_history_days`, who get
/// the fallback table's rate for their tenure week and recency ([`churn_model::ColdStart`]).
#[derive(Debug, Clone, Copy)]
pub struct ServedScore {
    tenure: Option<usize>,
    recency: Option<usize>,
}

impl ServedScore {
    /// The raw-row columns the rule reads, from the model's feature names.
    pub fn of(model: &ModelArtifact) -> Self {
        let col = |n: &str| model.feature_names.iter().position(|f| f == n);
        ServedScore {
            tenure: col("tenure_days"),
            recency: col("recency_activity_days"),
        }
    }

    /// Score a raw feature row (`raw`, registry order) whose model input (transformed) is
    /// `input`.
    pub fn score(&self, model: &ModelArtifact, raw: &[f64], input: &[f64]) -> Served {
        let history_days = self
            .tenure
            .and_then(|c| raw.get(c))
            .copied()
            .unwrap_or(f64::NAN);
        let recency = self.recency.and_then(|c| raw.get(c)).copied();
        match recency.and_then(|r| model.cold_start_score(history_days, r)) {
            Some(risk) => Served {
                risk,
                cold_start: true,
                history_days,
            },
            None => Served {
                risk: model.predict_proba(input),
                cold_start: false,
                history_days,
            },
        }
    }
}

/// [`ServedScore::score`] of every row of `set`.
pub fn served_batch(model: &ModelArtifact, set: &TrainingSet) -> Vec<f64> {
    let rule = ServedScore::of(model);
    let mut input = Vec::with_capacity(set.features.len());
    (0..set.len())
        .map(|i| {
            let raw = set.row(i);
            set.features.model_input(raw, &mut input);
            rule.score(model, raw, &input).risk
        })
        .collect()
}

/// Fit the cold-start table on `rows` (the train and validation rows) and measure it on the
/// young rows of `test` against the model alone: `cold_start_test_*` metrics.
fn fit_cold_start(
    model: &mut ModelArtifact,
    rows: &TrainingSet,
    test: &TrainingSet,
    min_history_days: u32,
) -> Result<(), Error> {
    let rule = ServedScore::of(model);
    let (Some(t), Some(r)) = (rule.tenure, rule.recency) else {
        return Ok(());
    };
    let column = |set: &TrainingSet, j: usize| -> Vec<f64> {
        (0..set.len()).map(|i| set.row(i)[j]).collect()
    };
    model.cold_start = churn_model::ColdStart::fit(
        &column(rows, t),
        &column(rows, r),
        &rows.labels,
        min_history_days,
    );
    if model.cold_start.is_none() {
        return Ok(());
    }
    model.model_version = model.compute_model_version()?;
    // The young test rows are those the served rule gives to the table.
    let (mut fallback, mut model_only, mut y) = (Vec::new(), Vec::new(), Vec::new());
    let mut input = Vec::with_capacity(test.features.len());
    for i in 0..test.len() {
        let raw = test.row(i);
        test.features.model_input(raw, &mut input);
        let served = rule.score(model, raw, &input);
        if served.cold_start {
            fallback.push(served.risk);
            model_only.push(model.predict_proba(&input));
            y.push(test.labels[i]);
        }
    }
    for (k, v) in [
        ("cold_start_test_rows", y.len() as f64),
        (
            "cold_start_test_churn_rate",
            y.iter().filter(|v| **v).count() as f64 / y.len().max(1) as f64,
        ),
        ("cold_start_test_auc", m::auc(&fallback, &y)),
        ("cold_start_model_test_auc", m::auc(&model_only, &y)),
        ("cold_start_test_log_loss", m::log_loss(&fallback, &y)),
        (
            "cold_start_model_test_log_loss",
            m::log_loss(&model_only, &y),
        ),
    ] {
        if v.is_finite() {
            model.metrics.insert(k.into(), v);
        }
    }
    Ok(())
}

/// Header of [`write_scores_csv`].
pub const SCORES_CSV_HEADER: &str = "customer_id,as_of,label,risk,band,baseline_recency_days";

/// Write one CSV row per observation of `set`: `customer_id`, `as_of` (`YYYY-MM-DD`), `label`
/// (1 = churned within the horizon), `risk` (model probability), `band` (the model's risk band
/// of `risk`) and `baseline_recency_days` (the recency baseline's score).
pub fn write_scores_csv(
    model: &ModelArtifact,
    set: &TrainingSet,
    mut w: impl Write,
) -> std::io::Result<()> {
    let s = score(model, set);
    writeln!(w, "{SCORES_CSV_HEADER}")?;
    let mut line = String::new();
    for i in 0..set.len() {
        line.clear();
        push_csv_field(&mut line, &set.customer_ids[i]);
        line.push(',');
        line.push_str(&date_string(set.as_of[i]));
        line.push_str(if set.labels[i] { ",1," } else { ",0," });
        line.push_str(&s.risk[i].to_string());
        line.push(',');
        line.push_str(model.thresholds.band(s.risk[i]).as_str());
        line.push(',');
        line.push_str(&s.recency[i].to_string());
        line.push('\n');
        w.write_all(line.as_bytes())?;
    }
    w.flush()
}

/// Create `path` (and its directory) for a CSV export; only `.csv` is supported.
fn create_csv(path: &Path) -> Result<BufWriter<File>, Error> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    if ext.as_deref() != Some("csv") {
        return Err(Error::Export {
            path: path.display().to_string(),
            message: "only CSV is supported: use a .csv file name (polars, pandas and \
                      spreadsheets read it; `pl.read_csv(...).write_parquet(...)` converts)"
                .into(),
        });
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    Ok(BufWriter::new(File::create(path)?))
}

/// Write the whole training set (every split, tagged) to a `.csv` file: see
/// [`TrainingSet::write_csv`]. Split boundaries are those of [`train_on_set`].
pub fn export_training_set(set: &TrainingSet, path: &Path) -> Result<(), Error> {
    let w = create_csv(path)?;
    set.write_csv(w, &set.split_boundaries(SPLIT_TRAIN, SPLIT_VALID))?;
    Ok(())
}

/// Write the scores of `set` to a `.csv` file: see [`write_scores_csv`].
pub fn export_scores(model: &ModelArtifact, set: &TrainingSet, path: &Path) -> Result<(), Error> {
    write_scores_csv(model, set, create_csv(path)?)?;
    Ok(())
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
    /// Expected calibration error of `risk` over 10 equal-width bins (see [`Reliability`]).
    pub ece: f64,
}

/// Evaluate a model on a training-set split, with the recency rule as baseline.
pub fn evaluate(model: &ModelArtifact, set: &TrainingSet) -> Evaluation {
    let Scores { risk: p, recency } = score(model, set);
    let y = &set.labels;
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
        ece: m::expected_calibration_error(&m::calibration_table(&p, y, RELIABILITY_BINS)),
    }
}

/// Bins of the reliability tables.
pub const RELIABILITY_BINS: usize = 10;

/// Reliability of one set of probabilities: the equal-width table (mean predicted, observed
/// rate, count per bin of width 0.1) and its expected calibration error, and the same over 10
/// equal-count bins (at low base rates almost every row falls into the first equal-width bin).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Reliability {
    /// Mean predicted probability over all rows.
    pub mean_predicted: f64,
    /// Observed churn rate over all rows.
    pub observed_rate: f64,
    /// `Σ count/n · |mean predicted − observed rate|` over `bins`.
    pub ece: f64,
    /// The same over `bins_equal_count`.
    pub ece_equal_count: f64,
    /// Log loss of these probabilities.
    pub log_loss: f64,
    /// Brier score of these probabilities.
    pub brier: f64,
    pub bins: Vec<CalibrationBin>,
    pub bins_equal_count: Vec<CalibrationBin>,
}

impl Reliability {
    pub fn of(p: &[f64], y: &[bool]) -> Self {
        let bins = m::calibration_table(p, y, RELIABILITY_BINS);
        let bins_equal_count = m::calibration_table_equal_count(p, y, RELIABILITY_BINS);
        let n = p.len().max(1) as f64;
        Reliability {
            mean_predicted: p.iter().sum::<f64>() / n,
            observed_rate: y.iter().filter(|&&v| v).count() as f64 / n,
            ece: m::expected_calibration_error(&bins),
            ece_equal_count: m::expected_calibration_error(&bins_equal_count),
            log_loss: m::log_loss(p, y),
            brier: m::brier(p, y),
            bins,
            bins_equal_count,
        }
    }
}

/// Calibration of a model on a split: its probabilities without the calibrator (`before`: the
/// prior-corrected logistic) and as it scores (`after`; equal to `before` for an artifact
/// without a calibrator).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CalibrationReport {
    /// `platt` (with its slope, offset and rows) or `none`.
    pub calibrator: serde_json::Value,
    pub before: Reliability,
    pub after: Reliability,
}

/// [`CalibrationReport`] of `model` on `set`.
pub fn calibration_report(model: &ModelArtifact, set: &TrainingSet) -> CalibrationReport {
    let after = score(model, set).risk;
    let before = score(&model.without_calibration(), set).risk;
    CalibrationReport {
        calibrator: match &model.calibration {
            Some(c) => {
                serde_json::json!({"method": "platt", "slope": c.slope, "offset": c.offset, "rows": c.rows})
            }
            None => serde_json::json!({"method": "none"}),
        },
        before: Reliability::of(&before, &set.labels),
        after: Reliability::of(&after, &set.labels),
    }
}

/// How `train` calibrates probabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CalibrationMethod {
    /// No calibrator: the logistic with its oversampling prior corrected analytically (King &
    /// Zeng, in `churn_model::train`). The default: on the generated profiles its test ECE is
    /// 0.003–0.008 and Platt scaling did not lower it (README, "The model").
    #[default]
    None,
    /// Platt scaling fit on the validation split, scored by the model fit on the training split
    /// only (the final model refits on train + validation), applied to the final model.
    Platt,
}

impl std::str::FromStr for CalibrationMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "platt" => Ok(CalibrationMethod::Platt),
            "none" => Ok(CalibrationMethod::None),
            other => Err(format!(
                "unknown calibration `{other}` (expected platt or none)"
            )),
        }
    }
}

/// Options of [`train_with`].
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOptions {
    pub params: TrainParams,
    /// Band cut-offs; lift and top forms are resolved against the final model's score
    /// distribution on the validation split.
    pub bands: BandSpec,
    pub calibration: CalibrationMethod,
    /// Customers with fewer days of history get the cold-start fallback
    /// ([`churn_model::ColdStart`]); 0: the model scores everyone.
    pub min_history_days: u32,
}

/// Fit a Platt calibrator for `fit_model`'s logits on `valid` (raw design matrix `x`).
fn platt_on(
    fit_model: &ModelArtifact,
    x: &Array2<f64>,
    labels: &[bool],
) -> Result<churn_model::Calibration, Error> {
    let mut row = Vec::with_capacity(x.ncols());
    let logits: Vec<f64> = x
        .rows()
        .into_iter()
        .map(|r| {
            row.clear();
            row.extend(r.iter().copied());
            fit_model.logit(&row)
        })
        .collect();
    Ok(churn_model::fit_platt(&logits, labels)?)
}

/// Everything `churnstream train` reports.
#[derive(Debug, Clone, Serialize)]
pub struct TrainSummary {
    pub rows_train: usize,
    pub rows_valid: usize,
    pub rows_test: usize,
    /// Rows in the purge gaps (used by no part).
    pub rows_purged: usize,
    /// The purged time split, as dates.
    pub split: SplitSummary,
    /// L2 strength with the lowest validation log loss (fit on train).
    pub chosen_alpha: f64,
    /// The strength of the final fit on train + validation (chosen_alpha × rows ratio).
    pub refit_alpha: f64,
    pub converged: bool,
    pub iterations: u64,
    pub gradient_norm: f64,
    pub test: Evaluation,
}

/// A JSON number, or null when not finite.
fn finite(v: f64) -> serde_json::Value {
    if v.is_finite() {
        serde_json::json!(v)
    } else {
        serde_json::Value::Null
    }
}

/// The rows of `a` then those of `b`.
fn concat(a: &TrainingSet, b: &TrainingSet) -> TrainingSet {
    let mut out = a.clone();
    out.customer_ids.extend(b.customer_ids.iter().cloned());
    out.as_of.extend(&b.as_of);
    out.values.extend(&b.values);
    out.labels.extend(&b.labels);
    out
}

/// A [`SplitPlan`] as dates (`YYYY-MM-DD`, observation days) for summaries.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SplitSummary {
    /// Training observations are before this date.
    pub train_before: String,
    pub valid_from: String,
    pub valid_to: String,
    pub test_from: String,
    /// Days of the purge gap (the churn definition's horizon).
    pub purge_days: i32,
    /// Whether training also ends at least `purge_days` before validation starts (false when
    /// the history is too short for both gaps; the gap before the test part is always there).
    pub inner_gap: bool,
    /// Whether the test part is at least `purge_days` after the others (false: the history was
    /// too short, the test metrics are optimistic).
    pub purged: bool,
}

impl SplitSummary {
    pub fn of(plan: &SplitPlan, purge_days: i32) -> Self {
        SplitSummary {
            train_before: date_string(plan.train_to),
            valid_from: date_string(plan.valid_from),
            valid_to: date_string(plan.valid_to - 1),
            test_from: date_string(plan.test_from),
            purge_days,
            inner_gap: plan.inner_gap,
            purged: plan.purged,
        }
    }
}

/// Default risk bands on the calibrated churn probability (horizon = the churn definition's).
/// Probability cut-offs, not quantiles: a band means the same risk whatever the population mix,
/// and the number of customers per band is itself a KPI.
pub const DEFAULT_BANDS: Bands = Bands {
    medium: 0.15,
    high: 0.35,
    critical: 0.60,
};

/// The training set of an event history: rollups (the batch path) → observations under `plan`.
pub fn training_set_from_events(
    events: &[Event],
    plan: &ObservationPlan,
) -> Result<TrainingSet, Error> {
    training_set_with(events, plan, &FeatureSet::builtin())
}

/// [`training_set_from_events`] with the registry plus a metric catalog.
pub fn training_set_with(
    events: &[Event],
    plan: &ObservationPlan,
    features: &FeatureSet,
) -> Result<TrainingSet, Error> {
    let customers = rollups_from_events_with(events, features);
    Ok(build_training_set_with(&customers, plan, features)?)
}

/// One feature's weight in a model: what `evaluate` prints.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FeatureWeight {
    pub feature: String,
    /// Reason group (`context`: scored, never a reason).
    pub group: &'static str,
    /// Coefficient on the standardised model input (positive: more risk).
    pub coefficient: f64,
    /// `|coefficient|` over the sum of all `|coefficient|`s: the feature's share of the
    /// model's weight on standardised inputs.
    pub importance: f64,
    /// Whether the sign agrees with the feature's declared direction.
    pub sign_agrees: bool,
}

/// Every feature's coefficient and standardised importance, largest importance first.
pub fn feature_weights(model: &ModelArtifact, features: &FeatureSet) -> Vec<FeatureWeight> {
    let total: f64 = model.coefficients.iter().map(|c| c.abs()).sum();
    let mut out: Vec<FeatureWeight> = model
        .feature_names
        .iter()
        .zip(&model.coefficients)
        .map(|(name, &c)| {
            let d = features.get(name);
            FeatureWeight {
                feature: name.clone(),
                group: d.map_or("", |d| d.group.as_str()),
                coefficient: c,
                importance: if total > 0.0 { c.abs() / total } else { 0.0 },
                sign_agrees: d.is_none_or(|d| d.direction.agrees(c)),
            }
        })
        .collect();
    out.sort_by(|a, b| b.importance.total_cmp(&a.importance));
    out
}

/// One model of a [`Comparison`].
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ComparedModel {
    pub model_version: String,
    /// Model inputs (the registry's plus its catalog's).
    pub features: usize,
    /// Metrics of its metric catalog (0: the registry alone).
    pub catalog_metrics: usize,
    /// The time window of its training data.
    pub data_window: Option<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)>,
    /// Its test AUC as recorded at training time (on its own history's test split).
    pub recorded_test_auc: Option<f64>,
    /// Its evaluation on the shared test rows.
    pub test: Evaluation,
}

/// Two models evaluated on the same test rows (same customers, dates and labels): metrics side
/// by side and a paired bootstrap (customers resampled with replacement) of the AUC difference.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Comparison {
    pub rows: usize,
    pub models: [ComparedModel; 2],
    /// AUC of the second model minus the first's, on the shared rows.
    pub auc_difference: f64,
    /// 2.5 % and 97.5 % quantiles of the bootstrap AUC differences.
    pub auc_difference_ci95: [f64; 2],
    /// Share of bootstrap samples in which the second model's AUC is higher.
    pub second_better_share: f64,
    pub bootstrap_samples: usize,
}

/// Compare `a` (scored on `ta`) with `b` (on `tb`): both sets must hold the same rows in the same
/// order (the same events and observation plan; the features may differ, e.g. another catalog).
pub fn compare(
    a: &ModelArtifact,
    ta: &TrainingSet,
    b: &ModelArtifact,
    tb: &TrainingSet,
    samples: usize,
    seed: u64,
) -> Result<Comparison, Error> {
    use rand::{Rng, SeedableRng};
    if ta.customer_ids != tb.customer_ids || ta.as_of != tb.as_of || ta.labels != tb.labels {
        return Err(Error::Catalog(
            "compare: the two models' test rows differ (same events and churn definition needed)"
                .into(),
        ));
    }
    let (pa, pb) = (score(a, ta).risk, score(b, tb).risk);
    let y = &ta.labels;
    // Rows by customer: the bootstrap resamples customers, whose rows are correlated.
    let mut by_customer: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, c) in ta.customer_ids.iter().enumerate() {
        by_customer.entry(c.as_str()).or_default().push(i);
    }
    let groups: Vec<Vec<usize>> = by_customer.into_values().collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (mut diffs, mut better) = (Vec::with_capacity(samples), 0usize);
    let (mut sa, mut sb, mut sy) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..samples {
        sa.clear();
        sb.clear();
        sy.clear();
        for _ in 0..groups.len() {
            for &i in &groups[rng.gen_range(0..groups.len())] {
                sa.push(pa[i]);
                sb.push(pb[i]);
                sy.push(y[i]);
            }
        }
        let d = m::auc(&sb, &sy) - m::auc(&sa, &sy);
        if d.is_finite() {
            better += usize::from(d > 0.0);
            diffs.push(d);
        }
    }
    diffs.sort_by(f64::total_cmp);
    let q = |p: f64| {
        diffs
            .get(((diffs.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    let compared = |model: &ModelArtifact, set: &TrainingSet| ComparedModel {
        model_version: model.model_version.clone(),
        features: model.feature_names.len(),
        catalog_metrics: set.features.catalog_defs().len(),
        data_window: model.data_window,
        recorded_test_auc: model.metrics.get("test_auc").copied(),
        test: evaluate(model, set),
    };
    Ok(Comparison {
        rows: ta.len(),
        models: [compared(a, ta), compared(b, tb)],
        auc_difference: m::auc(&pb, y) - m::auc(&pa, y),
        auc_difference_ci95: [q(0.025), q(0.975)],
        second_better_share: better as f64 / diffs.len().max(1) as f64,
        bootstrap_samples: diffs.len(),
    })
}

/// Record the churn definition and observation rule of a model's labels in its artifact
/// (`train_params.observation_plan`; not part of the model version), so `evaluate` labels the
/// same way by default.
pub fn record_plan(model: &mut ModelArtifact, plan: &ObservationPlan) -> Result<(), Error> {
    if let serde_json::Value::Object(m) = &mut model.train_params {
        m.insert("observation_plan".into(), serde_json::to_value(plan)?);
    }
    model.seal()?;
    Ok(())
}

/// The observation plan recorded by [`record_plan`] (`None` for artifacts without one).
pub fn recorded_plan(model: &ModelArtifact) -> Option<ObservationPlan> {
    model
        .train_params
        .get("observation_plan")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
}

/// The features a model scores: the registry plus the catalog stored in the artifact (none:
/// the registry alone), checked against the model's feature names.
pub fn feature_set_of(model: &ModelArtifact) -> Result<FeatureSet, Error> {
    let catalog: Catalog = match &model.catalog {
        None => Catalog::default(),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| {
            Error::Catalog(format!(
                "model {}: its metric catalog does not parse: {e}",
                model.model_version
            ))
        })?,
    };
    let set = FeatureSet::new(catalog)
        .map_err(|e| Error::Catalog(format!("model {}: {e}", model.model_version)))?;
    model.check_features(&set.names())?;
    Ok(set)
}

/// Train a model from an event history. Returns the artifact (metrics filled in), a summary and
/// the test split. `bands` replaces the trainer's quantile cut-offs; the alert threshold is
/// `bands.high`.
pub fn train_from_events(
    events: &[Event],
    plan: &ObservationPlan,
    params: &TrainParams,
    bands: Bands,
) -> Result<(ModelArtifact, TrainSummary, TrainingSet), Error> {
    bands.validate()?;
    let set = training_set_from_events(events, plan)?;
    train_on_set(&set, params, bands)
}

/// A generated population ([`churn_gen::generate`]) and a model trained on its events with
/// default parameters and [`DEFAULT_BANDS`]: the fixture of tests, benchmarks and demos.
pub fn synthetic(
    gen: &churn_gen::GenConfig,
    plan: &ObservationPlan,
) -> Result<(churn_gen::Population, ModelArtifact, TrainSummary), Error> {
    let pop = churn_gen::generate(gen);
    let (model, summary, _) =
        train_from_events(&pop.events, plan, &TrainParams::default(), DEFAULT_BANDS)?;
    Ok((pop, model, summary))
}

/// Train on a prepared training set ([`training_set_from_events`]) with probability `bands`
/// and the default calibration ([`CalibrationMethod::None`]): [`train_with`].
pub fn train_on_set(
    set: &TrainingSet,
    params: &TrainParams,
    bands: Bands,
) -> Result<(ModelArtifact, TrainSummary, TrainingSet), Error> {
    bands.validate()?;
    train_with(
        set,
        &TrainOptions {
            params: params.clone(),
            bands: BandSpec::Probability([bands.medium, bands.high, bands.critical]),
            calibration: CalibrationMethod::default(),
            min_history_days: churn_model::cold_start::DEFAULT_MIN_HISTORY_DAYS,
        },
    )
}

/// The distributions of `set`'s raw features and of `scores` (one per row).
fn drift_reference(set: &TrainingSet, scores: &[f64]) -> Option<DriftReference> {
    let features = (0..set.features.len())
        .map(|j| Reference::of((0..set.len()).map(|i| set.row(i)[j])))
        .collect::<Option<Vec<_>>>()?;
    Some(DriftReference {
        rows: set.len(),
        features,
        score: Reference::of(scores.iter().copied())?,
    })
}

/// The fewest distinct churning and staying customers the training rows (train + validation
/// splits) must hold for `churnstream train` to ship a model: below it, coefficients and the
/// chosen regularisation are noise ([`check_examples`]).
pub const MIN_CLASS_CUSTOMERS: usize = 20;

/// [`Error::TooFewExamples`] unless the rows a model is fit on (the train and validation splits
/// of `set`) hold at least [`MIN_CLASS_CUSTOMERS`] distinct churning and staying customers.
/// `churnstream train` calls it before training; the library functions do not, so small test
/// fixtures still train.
pub fn check_examples(set: &TrainingSet) -> Result<(), Error> {
    // The split's plan, not its copies of the rows.
    let plan = set.split_boundaries(SPLIT_TRAIN, SPLIT_VALID);
    let (mut churners, mut stayers) = (HashSet::new(), HashSet::new());
    let rows = set.customer_ids.iter().zip(&set.labels).zip(&set.as_of);
    for ((id, y), d) in rows {
        if !matches!(Split::of(*d, &plan), Split::Train | Split::Valid) {
            continue;
        }
        if *y {
            churners.insert(id.as_str());
        } else {
            stayers.insert(id.as_str());
        }
    }
    if churners.len() < MIN_CLASS_CUSTOMERS || stayers.len() < MIN_CLASS_CUSTOMERS {
        return Err(Error::TooFewExamples {
            churners: churners.len(),
            stayers: stayers.len(),
            min: MIN_CLASS_CUSTOMERS,
        });
    }
    Ok(())
}

/// Train on a prepared training set: split by time ([`SPLIT_TRAIN`], [`SPLIT_VALID`]), choose
/// the L2 strength on validation (fit on train), calibrate on validation (Platt, on the logits
/// of that train-only model), refit on train + validation, attach the calibrator, summarise the
/// calibrated scores of the validation split (the score distribution that `lift:` and `top:`
/// bands resolve against), set the bands, evaluate on the test split. Returns the artifact, a
/// summary and the test split.
pub fn train_with(
    set: &TrainingSet,
    opts: &TrainOptions,
) -> Result<(ModelArtifact, TrainSummary, TrainingSet), Error> {
    let params = &opts.params;
    let (tr, va, te, split) = set.time_split(SPLIT_TRAIN, SPLIT_VALID);
    if tr.is_empty() || va.is_empty() || te.is_empty() {
        let mut dates = set.as_of.clone();
        dates.sort_unstable();
        dates.dedup();
        return Err(churn_features::Error::ShortHistory {
            dates: dates.len(),
            horizon: set.horizon_days,
        }
        .into());
    }
    let names: Vec<String> = set.features.names().iter().map(|n| n.to_string()).collect();
    let bindings: Vec<String> = set
        .features
        .defs()
        .iter()
        .map(|d| d.binding.as_str().to_string())
        .collect();
    let (xtr, xva) = (design_matrix(&tr), design_matrix(&va));
    // 1. Choose the L2 strength on the validation part (fit on train, score valid).
    let (selection_model, selection): (ModelArtifact, TrainReport) = churn_model::train(
        Dataset::new(xtr.view(), &tr.labels),
        Dataset::new(xva.view(), &va.labels),
        &names,
        &bindings,
        params,
    )?;
    // 2. Refit on train + validation with that strength, scaled to the rows (linfa penalises
    //    a sum of log losses, so the same per-row strength on more rows is a larger alpha):
    //    the latest labelled dates before the purge gap carry the most recent behaviour.
    let tv = concat(&tr, &va);
    let xtv = design_matrix(&tv);
    let refit_alpha = selection.chosen_alpha * tv.len() as f64 / tr.len().max(1) as f64;
    let refit_params = TrainParams {
        alphas: vec![refit_alpha],
        ..params.clone()
    };
    let (mut model, report): (ModelArtifact, TrainReport) = churn_model::train(
        Dataset::new(xtv.view(), &tv.labels),
        Dataset::new(xva.view(), &va.labels),
        &names,
        &bindings,
        &refit_params,
    )?;
    if !set.features.catalog().is_empty() {
        model.catalog = Some(
            serde_json::to_value(set.features.catalog())
                .map_err(|e| Error::Catalog(format!("catalog: {e}")))?,
        );
        model.model_version = model.compute_model_version()?;
    }
    if let serde_json::Value::Object(m) = &mut model.train_params {
        m.insert(
            "selection".into(),
            serde_json::json!({
                "fit_on": "train",
                "scored_on": "valid",
                "chosen_alpha": selection.chosen_alpha,
                "per_alpha": selection.per_alpha.iter()
                    .map(|(a, ll, auc)| serde_json::json!({"alpha": a, "valid_log_loss": finite(*ll), "valid_auc": finite(*auc)}))
                    .collect::<Vec<_>>(),
            }),
        );
        m.insert("refit_on".into(), serde_json::json!("train+valid"));
    }
    // 3. Calibrate: Platt on the validation rows, scored by the model fit on train only (the
    //    final model has trained on them). Applied to the final model's logits: the refit uses
    //    the same per-row L2 strength, so its logits are on the scale the calibrator saw.
    if opts.calibration == CalibrationMethod::Platt {
        let cal = platt_on(&selection_model, &xva, &va.labels)?;
        model.calibration = Some(cal);
        if let serde_json::Value::Object(m) = &mut model.train_params {
            m.insert(
                "calibration".into(),
                serde_json::json!({"method": "platt", "fit_on": "valid", "scored_by": "the model fit on train (chosen alpha)"}),
            );
        }
    }
    // 4. The cold-start fallback for short histories (fit on the rows the model was fit on,
    //    measured on the test split's young rows), then the score distribution of the
    //    reference population (validation rows, served scores) and the bands.
    fit_cold_start(&mut model, &tv, &te, opts.min_history_days)?;
    let p_valid = served_batch(&model, &va);
    model.score_distribution = Some(ScoreDistribution::from_scores(&p_valid, &va.labels)?);
    model.set_bands(&opts.bands)?;
    // 5. Drift references (`churnstream drift`, `churn_model_score_psi`): the raw features and
    //    the final model's scores of the rows it was fit on.
    let p_tv = served_batch(&model, &tv);
    model.drift_reference = drift_reference(&tv, &p_tv);
    let test = evaluate(&model, &te);
    let mut metrics: BTreeMap<String, f64> = model.metrics.clone();
    for (k, v) in [
        ("test_auc", test.auc),
        ("test_log_loss", test.log_loss),
        ("test_brier", test.brier),
        ("test_lift_top_decile", test.lift_top_decile),
        ("test_precision_at_alert", test.precision_at_alert),
        ("test_recall_at_alert", test.recall_at_alert),
        ("test_ece", test.ece),
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
        rows_purged: set.len() - tr.len() - va.len() - te.len(),
        split: SplitSummary::of(&split, set.horizon_days),
        chosen_alpha: selection.chosen_alpha,
        refit_alpha: report.chosen_alpha,
        converged: report.converged,
        iterations: report.iterations,
        gradient_norm: report.gradient_norm,
        test,
    };
    Ok((model, summary, te))
}

#[cfg(test)]
mod tests {
    use super::*;
    use churn_features::training::{csv_header, Split};

    fn trained() -> (TrainingSet, ModelArtifact, TrainSummary, TrainingSet) {
        let pop = churn_gen::generate(&churn_gen::GenConfig {
            customers: 200,
            days: 150,
            seed: 5,
            ..Default::default()
        });
        let set = training_set_from_events(&pop.events, &ObservationPlan::default())
            .expect("observations in 150 days");
        let params = TrainParams {
            alphas: vec![1.0],
            ..TrainParams::default()
        };
        let (model, summary, test) =
            train_on_set(&set, &params, DEFAULT_BANDS).expect("training on generated data");
        (set, model, summary, test)
    }

    /// A tenant too small for a model gets a clear refusal naming the counts, not a model fit
    /// on a handful of churners.
    #[test]
    fn too_few_churners_or_stayers_are_refused() {
        let pop = churn_gen::generate(&churn_gen::GenConfig {
            customers: 40,
            days: 150,
            seed: 5,
            ..Default::default()
        });
        let set = training_set_from_events(&pop.events, &ObservationPlan::default())
            .expect("observations in 150 days");
        let e = check_examples(&set).expect_err("40 customers are too few");
        match e {
            Error::TooFewExamples {
                churners,
                stayers,
                min,
            } => {
                assert_eq!(min, MIN_CLASS_CUSTOMERS);
                assert!(churners < min || stayers < min, "{churners} / {stayers}");
                assert!(churners + stayers > 0);
            }
            other => panic!("expected TooFewExamples, got {other}"),
        }
        assert!(e_text_names_the_minimum());
        // 400 customers are enough.
        let pop = churn_gen::generate(&churn_gen::GenConfig {
            customers: 400,
            days: 150,
            seed: 5,
            ..Default::default()
        });
        let set = training_set_from_events(&pop.events, &ObservationPlan::default())
            .expect("observations in 150 days");
        check_examples(&set).expect("400 customers are enough");
    }

    fn e_text_names_the_minimum() -> bool {
        Error::TooFewExamples {
            churners: 3,
            stayers: 40,
            min: 20,
        }
        .to_string()
        .contains("3 churning and 40 staying customers; a model needs at least 20")
    }

    /// The calibrator is fit on the validation rows scored by the train-only model (Platt's MLE
    /// makes that model's mean calibrated prediction there match the smoothed base rate), the
    /// reference distribution is the validation split, and `top:` bands alert about the asked
    /// share of validation rows.
    #[test]
    fn training_calibrates_on_validation_and_resolves_population_bands() {
        let (set, model, summary, _) = trained();
        assert!(
            model.calibration.is_none(),
            "the default: prior correction only"
        );
        let dist = model.score_distribution.as_ref().expect("distribution");
        assert_eq!(dist.rows, summary.rows_valid);
        assert_eq!(model.band_spec.as_deref(), Some("0.15,0.35,0.6"));
        assert_eq!(model.thresholds, DEFAULT_BANDS);

        let (_, va, _, _) = set.time_split(SPLIT_TRAIN, SPLIT_VALID);
        let base = va.labels.iter().filter(|&&v| v).count() as f64 / va.len() as f64;
        assert!((dist.base_rate - base).abs() < 1e-12);
        let opts = |bands: &str, calibration| TrainOptions {
            params: TrainParams {
                alphas: vec![1.0],
                ..TrainParams::default()
            },
            bands: bands.parse().expect("spec"),
            calibration,
            min_history_days: churn_model::cold_start::DEFAULT_MIN_HISTORY_DAYS,
        };
        let (top, s, _) =
            train_with(&set, &opts("top:30%,10%,3%", CalibrationMethod::Platt)).expect("top");
        let cal = top.calibration.expect("a calibrator");
        assert_eq!(cal.rows, s.rows_valid);
        assert!(cal.slope > 0.0);
        // Platt's MLE on the validation rows scored by the train-only model, refit at the
        // chosen alpha: its mean calibrated prediction there is the (smoothed) base rate.
        let (tr, _, _, _) = set.time_split(SPLIT_TRAIN, SPLIT_VALID);
        let (train_only, _) = churn_model::train(
            Dataset::new(design_matrix(&tr).view(), &tr.labels),
            Dataset::new(design_matrix(&va).view(), &va.labels),
            &FEATURES
                .iter()
                .map(|d| d.name.to_string())
                .collect::<Vec<_>>(),
            &FEATURES
                .iter()
                .map(|d| d.binding.as_str().to_string())
                .collect::<Vec<_>>(),
            &TrainParams {
                alphas: vec![1.0],
                ..TrainParams::default()
            },
        )
        .expect("train-only model");
        let calibrated = ModelArtifact {
            calibration: Some(cal),
            ..train_only
        };
        let mean = score(&calibrated, &va).risk.iter().sum::<f64>() / va.len() as f64;
        assert!(
            (mean - base).abs() < 0.01,
            "mean {mean} vs base rate {base}"
        );
        let p = score(&top, &va).risk;
        let share = p.iter().filter(|&&r| r >= top.alert_threshold).count() as f64 / p.len() as f64;
        assert!(
            (share - 0.10).abs() < 0.01,
            "share at or above high: {share}"
        );
        let (lift, _, _) =
            train_with(&set, &opts("lift:1,2,3", CalibrationMethod::None)).expect("lift");
        assert!(lift.calibration.is_none());
        let b = lift.score_distribution.as_ref().expect("dist").base_rate;
        assert!((lift.thresholds.high - 2.0 * b).abs() < 1e-12);
        // Without a calibrator, before = after.
        let r = calibration_report(&lift, &va);
        assert_eq!(r.before, r.after);
    }

    /// A horizon too long for the history: the unpurged split, flagged in the summary.
    #[test]
    fn too_short_for_the_purge_gap_falls_back_flagged() {
        let pop = churn_gen::generate(&churn_gen::GenConfig {
            customers: 60,
            days: 150,
            seed: 5,
            ..Default::default()
        });
        let plan = ObservationPlan {
            definition: churn_features::training::ChurnDefinition::Inactivity {
                days: 30,
                within_days: 40,
            },
            ..ObservationPlan::default()
        };
        let set = training_set_from_events(&pop.events, &plan).expect("some dates");
        // Too short for the gap before the test part: the unpurged split, flagged.
        let (_, summary, _) = train_on_set(&set, &TrainParams::default(), DEFAULT_BANDS)
            .expect("the unpurged fallback trains");
        assert!(!summary.split.purged);
    }

    #[test]
    fn exports_match_the_split_and_the_scores() {
        let (set, model, summary, test) = trained();
        let dir = tempfile::tempdir().expect("temp dir");

        // Training set: every row, tagged with the split train_on_set used.
        let path = dir.path().join("sub/training_set.csv");
        export_training_set(&set, &path).expect("export");
        let text = std::fs::read_to_string(&path).expect("written");
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some(csv_header(&set.features).join(",").as_str())
        );
        let mut per_split = BTreeMap::new();
        for l in lines {
            let split = l.rsplit(',').next().unwrap_or_default().to_string();
            *per_split.entry(split).or_insert(0usize) += 1;
        }
        assert_eq!(
            per_split.get(Split::Train.as_str()),
            Some(&summary.rows_train)
        );
        assert_eq!(
            per_split.get(Split::Valid.as_str()),
            Some(&summary.rows_valid)
        );
        assert_eq!(
            per_split.get(Split::Test.as_str()),
            Some(&summary.rows_test)
        );

        // Scores: one row per test observation, the model's probability, band and baseline.
        let path = dir.path().join("scores.csv");
        export_scores(&model, &test, &path).expect("export");
        let text = std::fs::read_to_string(&path).expect("written");
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some(SCORES_CSV_HEADER));
        let s = score(&model, &test);
        let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
        assert_eq!(rows.len(), test.len());
        for (i, r) in rows.iter().enumerate() {
            assert_eq!(r.len(), 6);
            assert_eq!(r[0], test.customer_ids[i]);
            assert_eq!(r[2], if test.labels[i] { "1" } else { "0" });
            let risk: f64 = r[3].parse().expect("risk");
            assert_eq!(risk, s.risk[i], "exact round trip");
            assert_eq!(r[4], model.thresholds.band(risk).as_str());
            let rec: f64 = r[5].parse().expect("recency");
            assert_eq!(rec, s.recency[i]);
        }
        // The evaluation is computed from the same scores.
        let y = &test.labels;
        assert_eq!(summary.test.auc, m::auc(&s.risk, y));
        assert_eq!(summary.test.baseline_recency_auc, m::auc(&s.recency, y));
    }

    #[test]
    fn export_rejects_formats_other_than_csv() {
        let set = TrainingSet::default();
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("training_set.parquet");
        let err = export_training_set(&set, &path).expect_err("parquet is not supported");
        assert!(matches!(err, Error::Export { .. }), "{err}");
        assert!(!path.exists());
        export_training_set(&set, &dir.path().join("UPPER.CSV")).expect("case-insensitive");
    }
}
