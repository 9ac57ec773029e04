//! Training: validation of inputs, standardisation, class balancing, the alpha grid over
//! linfa-logistic, orientation, convergence check, prior correction, bands and metrics.

use std::collections::{BTreeMap, BTreeSet};

use chrono::Utc;
use linfa::traits::Fit;
use linfa_logistic::{FittedLogisticRegression, LogisticRegression};
use ndarray::{Array1, Array2, ArrayView2};
use rand::{rngs::StdRng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::artifact::{sigmoid, Bands, ModelArtifact, FORMAT_VERSION};
use crate::{metrics, ModelError};

/// linfa-logistic is run in rounds of at most this many L-BFGS iterations (warm-started from
/// the previous round), because it does not report how many iterations it ran: rounds let us
/// check convergence ourselves and count iterations to within one round.
pub const SOLVER_ROUND: u64 = 25;

/// Quantiles of the validation risk distribution used as default band cut-offs
/// (medium, high, critical).
pub const BAND_QUANTILES: [f64; 3] = [0.70, 0.85, 0.95];

/// Smallest gap kept between band cut-offs, and their distance from 0 and 1.
const BAND_MIN_GAP: f64 = 1e-6;

/// Standard deviations at or below this are treated as 0 (constant feature) and replaced by 1.
const MIN_STD: f64 = 1e-12;

/// How to deal with class imbalance (churners are usually the minority).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Balance {
    /// Fit on the data as is.
    None,
    /// Oversample the minority class to a 50/50 sample, then prior-correct the intercept back
    /// to the true base rate (see the crate docs).
    #[default]
    Reweight,
}

impl Balance {
    /// `"none"` or `"reweight"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Balance::None => "none",
            Balance::Reweight => "reweight",
        }
    }
}

/// Training parameters (missing fields deserialise to their defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainParams {
    /// L2 penalty grid. linfa-logistic minimises `Σ logloss + alpha/2 · ‖w‖²` (a *sum* over
    /// rows, intercept not penalised), so the effective strength shrinks as rows grow.
    pub alphas: Vec<f64>,
    /// L-BFGS iteration budget per alpha.
    pub max_iterations: u64,
    /// Convergence tolerance on the per-row gradient norm `‖∇(Σ logloss + alpha/2‖w‖²)‖ / n`.
    pub gradient_tolerance: f64,
    /// Class-imbalance handling.
    pub balance: Balance,
    /// Seed for the oversampling remainder.
    pub seed: u64,
}

impl Default for TrainParams {
    fn default() -> Self {
        TrainParams {
            alphas: vec![1e-4, 1e-3, 1e-2, 1e-1, 1.0],
            max_iterations: 200,
            gradient_tolerance: 1e-6,
            balance: Balance::Reweight,
            seed: 42,
        }
    }
}

/// A split of the data: raw (unscaled) features and labels (`true` = churned).
#[derive(Debug, Clone, Copy)]
pub struct Dataset<'a> {
    /// Rows × features, raw values, any memory layout.
    pub x: ArrayView2<'a, f64>,
    /// One label per row, `true` = churned.
    pub y: &'a [bool],
}

impl<'a> Dataset<'a> {
    /// Bundle features and labels.
    pub fn new(x: ArrayView2<'a, f64>, y: &'a [bool]) -> Self {
        Dataset { x, y }
    }
}

/// What happened during training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    /// The alpha with the lowest validation log loss.
    pub chosen_alpha: f64,
    /// `(alpha, validation log loss, validation AUC)` for every alpha of the grid, in grid
    /// order (probabilities prior-corrected, i.e. as the artifact would predict).
    pub per_alpha: Vec<(f64, f64, f64)>,
    /// L-BFGS iterations spent on the chosen alpha. Exact when not converged; when converged
    /// it is rounded up to a multiple of [`SOLVER_ROUND`] (or `max_iterations`), because
    /// linfa-logistic does not expose its iteration counter.
    pub iterations: u64,
    /// Whether `gradient_norm <= gradient_tolerance` at the solution of the chosen alpha.
    pub converged: bool,
    /// Per-row norm of the gradient of the penalised objective on the (balanced) training
    /// sample at the solution: `‖∇(Σ logloss + alpha/2‖w‖²)‖ / n_sample`.
    pub gradient_norm: f64,
}

/// Result of fitting one alpha, oriented towards churn.
struct Fit1 {
    coef: Array1<f64>,
    /// Intercept on the training *sample* (before prior correction).
    intercept_sample: f64,
    iterations: u64,
    converged: bool,
    gradient_norm: f64,
}

fn validate_params(p: &TrainParams) -> Result<(), ModelError> {
    if p.alphas.is_empty() {
        return Err(ModelError::InvalidParams("alphas is empty".to_owned()));
    }
    if let Some(a) = p.alphas.iter().find(|a| !a.is_finite() || **a < 0.0) {
        return Err(ModelError::InvalidParams(format!(
            "alpha {a} must be finite and >= 0"
        )));
    }
    if p.max_iterations == 0 {
        return Err(ModelError::InvalidParams(
            "max_iterations must be >= 1".to_owned(),
        ));
    }
    if !p.gradient_tolerance.is_finite() || p.gradient_tolerance <= 0.0 {
        return Err(ModelError::InvalidParams(format!(
            "gradient_tolerance {} must be finite and > 0",
            p.gradient_tolerance
        )));
    }
    Ok(())
}

fn validate_names(
    d: usize,
    feature_names: &[String],
    bindings: &[String],
) -> Result<(), ModelError> {
    if feature_names.len() != d {
        return Err(ModelError::DimensionMismatch(format!(
            "{} feature names for {d} feature columns",
            feature_names.len()
        )));
    }
    if bindings.len() != d {
        return Err(ModelError::DimensionMismatch(format!(
            "{} bindings for {d} feature columns",
            bindings.len()
        )));
    }
    let mut seen = BTreeSet::new();
    for n in feature_names {
        if n.is_empty() {
            return Err(ModelError::InvalidParams("empty feature name".to_owned()));
        }
        if !seen.insert(n.as_str()) {
            return Err(ModelError::InvalidParams(format!(
                "duplicate feature name `{n}`"
            )));
        }
    }
    Ok(())
}

fn validate_split(
    split: &'static str,
    ds: &Dataset,
    d: usize,
    names: &[String],
) -> Result<usize, ModelError> {
    let (rows, cols) = ds.x.dim();
    if rows == 0 || cols == 0 {
        return Err(ModelError::EmptyData { split, rows, cols });
    }
    if cols != d {
        return Err(ModelError::DimensionMismatch(format!(
            "the {split} split has {cols} feature columns, the training split {d}"
        )));
    }
    if ds.y.len() != rows {
        return Err(ModelError::DimensionMismatch(format!(
            "the {split} split has {rows} rows but {} labels",
            ds.y.len()
        )));
    }
    for (i, row) in ds.x.rows().into_iter().enumerate() {
        if let Some(j) = row.iter().position(|v| !v.is_finite()) {
            return Err(ModelError::NonFinite {
                split,
                row: i,
                column: j,
                feature: names.get(j).cloned().unwrap_or_default(),
                value: row[j],
            });
        }
    }
    let churners = ds.y.iter().filter(|&&v| v).count();
    if churners == 0 || churners == rows {
        return Err(ModelError::OneClass {
            split,
            churners,
            rows,
        });
    }
    Ok(churners)
}

/// Per-column mean and population std of the training split (std ≤ 1e-12 → 1).
///
/// Two passes, summing each column sequentially in row order, so the result does not depend
/// on the memory layout of `x` (row- or column-major input gives bit-identical models).
fn scaler(x: &ArrayView2<f64>, names: &[String]) -> Result<(Vec<f64>, Vec<f64>), ModelError> {
    let (n, d) = x.dim();
    let mut mean = vec![0.0f64; d];
    for row in x.rows() {
        for (m, v) in mean.iter_mut().zip(row.iter()) {
            *m += *v;
        }
    }
    for m in &mut mean {
        *m /= n as f64;
    }
    let mut sq = vec![0.0f64; d];
    for row in x.rows() {
        for ((s, v), m) in sq.iter_mut().zip(row.iter()).zip(&mean) {
            *s += (*v - *m) * (*v - *m);
        }
    }
    let mut std = Vec::with_capacity(d);
    for (j, s) in sq.iter().enumerate() {
        let sd = (*s / n as f64).sqrt();
        if !sd.is_finite() || !mean[j].is_finite() {
            return Err(ModelError::InvalidParams(format!(
                "feature `{}` overflows when computing mean/variance; rescale it",
                names[j]
            )));
        }
        std.push(if sd <= MIN_STD { 1.0 } else { sd });
    }
    Ok((mean, std))
}

/// Row indices of the training sample: all rows, plus minority replicas when balancing.
/// Returns `(rows, churners in the sample)`.
fn sample_rows(y: &[bool], balance: Balance, seed: u64) -> (Vec<usize>, usize) {
    let n = y.len();
    let churners = y.iter().filter(|&&v| v).count();
    let mut rows: Vec<usize> = (0..n).collect();
    if balance == Balance::None || churners * 2 == n {
        return (rows, churners);
    }
    let minority_is_churn = churners * 2 < n;
    let minority: Vec<usize> = (0..n).filter(|&i| y[i] == minority_is_churn).collect();
    let n_min = minority.len();
    let n_maj = n - n_min;
    let copies = n_maj / n_min; // each minority row appears `copies` times in total
    let remainder = n_maj - copies * n_min;
    rows.reserve(n_maj - n_min);
    for _ in 1..copies {
        rows.extend_from_slice(&minority);
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut picked = rand::seq::index::sample(&mut rng, n_min, remainder).into_vec();
    picked.sort_unstable();
    rows.extend(picked.into_iter().map(|k| minority[k]));
    let sample_churners = if minority_is_churn { n_maj } else { churners };
    (rows, sample_churners)
}

/// Standardise the given rows of `x` into a new matrix.
fn standardise_rows(x: &ArrayView2<f64>, rows: &[usize], mean: &[f64], std: &[f64]) -> Array2<f64> {
    let d = x.ncols();
    let mut out = Array2::<f64>::zeros((rows.len(), d));
    for (mut dst, &src) in out.rows_mut().into_iter().zip(rows) {
        let row = x.row(src);
        for j in 0..d {
            dst[j] = (row[j] - mean[j]) / std[j];
        }
    }
    out
}

/// `‖∇(Σ logloss + alpha/2‖w‖²)‖ / n` for churn-oriented parameters (intercept unpenalised).
fn gradient_norm_per_row(
    xs: &Array2<f64>,
    y01: &Array1<f64>,
    coef: &Array1<f64>,
    intercept: f64,
    alpha: f64,
) -> f64 {
    let mut r = xs.dot(coef);
    r.zip_mut_with(y01, |z, &t| *z = sigmoid(*z + intercept) - t);
    let gw = xs.t().dot(&r) + coef * alpha;
    let gb = r.sum();
    let norm = (gw.dot(&gw) + gb * gb).sqrt();
    norm / xs.nrows() as f64
}

fn fit_alpha(
    xs: &Array2<f64>,
    ys: &Array1<bool>,
    y01: &Array1<f64>,
    alpha: f64,
    params: &TrainParams,
) -> Result<Fit1, ModelError> {
    let n = xs.nrows() as f64;
    let d = xs.ncols();
    let dataset = linfa::DatasetBase::new(xs.view(), ys.view());
    let mut init: Option<Array1<f64>> = None;
    let mut used = 0u64;
    let mut best = Fit1 {
        coef: Array1::zeros(d),
        intercept_sample: 0.0,
        iterations: 0,
        converged: false,
        gradient_norm: f64::INFINITY,
    };
    while used < params.max_iterations {
        let budget = (params.max_iterations - used).min(SOLVER_ROUND);
        // linfa/argmin stop when the norm of the gradient of the *summed* loss drops below
        // their tolerance: scale ours (per row) by n so both criteria agree.
        let mut lr = LogisticRegression::<f64>::default()
            .alpha(alpha)
            .with_intercept(true)
            .max_iterations(budget)
            .gradient_tolerance(params.gradient_tolerance * n);
        if let Some(w0) = init.take() {
            lr = lr.initial_params(w0);
        }
        let fitted: FittedLogisticRegression<f64, bool> =
            Fit::<_, _, linfa_logistic::error::Error>::fit(&lr, &dataset).map_err(|e| {
                ModelError::Training(format!("linfa-logistic (alpha {alpha}): {e}"))
            })?;
        used += budget;
        // linfa-logistic's "positive" class is the MORE FREQUENT one (on a tie: the class of
        // the first row), so its probabilities may be P(stay): orient towards churn.
        let sign = if fitted.labels().pos.class { 1.0 } else { -1.0 };
        let coef = fitted.params().mapv(|v| sign * v);
        let intercept = sign * fitted.intercept();
        let gradient_norm = gradient_norm_per_row(xs, y01, &coef, intercept, alpha);
        let mut raw = fitted.params().to_vec();
        raw.push(fitted.intercept());
        let raw = Array1::from(raw);
        let stalled = best.iterations > 0
            && best
                .coef
                .iter()
                .zip(coef.iter())
                .all(|(a, b)| a.to_bits() == b.to_bits())
            && best.intercept_sample.to_bits() == intercept.to_bits();
        let converged = gradient_norm.is_finite() && gradient_norm <= params.gradient_tolerance;
        best = Fit1 {
            coef,
            intercept_sample: intercept,
            iterations: used,
            converged,
            gradient_norm,
        };
        if converged || stalled {
            break;
        }
        init = Some(raw);
    }
    Ok(best)
}

fn standardised_probs(xs: &Array2<f64>, coef: &Array1<f64>, intercept: f64) -> Vec<f64> {
    xs.dot(coef)
        .iter()
        .map(|z| sigmoid(z + intercept))
        .collect()
}

/// Band cut-offs from validation predictions: the 70th/85th/95th percentiles, clamped to
/// `(0, 1)` and forced strictly increasing (minimum gap 1e-6).
fn bands_from(valid_probs: &[f64]) -> Bands {
    let mut sorted: Vec<f64> = valid_probs
        .iter()
        .copied()
        .filter(|p| p.is_finite())
        .collect();
    sorted.sort_by(f64::total_cmp);
    let q = |i: usize| metrics::quantile_sorted(&sorted, BAND_QUANTILES[i]);
    let g = BAND_MIN_GAP;
    let medium = q(0).clamp(g, 1.0 - 3.0 * g);
    let high = q(1).max(medium + g).clamp(g, 1.0 - 2.0 * g);
    let critical = q(2).max(high + g).clamp(g, 1.0 - g);
    Bands {
        medium,
        high,
        critical,
    }
}

/// Train a churn model: see the crate docs for the method.
///
/// `feature_names` and `bindings` are parallel to the columns of `train.x`/`valid.x`.
/// Returns the artifact (hash and model_version filled; `data_window` is `None`, set it and
/// save) and the training report. Not converging is reported, not an error.
pub fn train(
    train: Dataset,
    valid: Dataset,
    feature_names: &[String],
    bindings: &[String],
    params: &TrainParams,
) -> Result<(ModelArtifact, TrainReport), ModelError> {
    validate_params(params)?;
    let d = train.x.ncols();
    validate_split("training", &train, d, feature_names)?;
    validate_names(d, feature_names, bindings)?;
    validate_split("validation", &valid, d, feature_names)?;

    let (mean, std) = scaler(&train.x, feature_names)?;
    let n_train = train.y.len();
    let churn_train = train.y.iter().filter(|&&v| v).count();
    let (rows, churn_sample) = sample_rows(train.y, params.balance, params.seed);
    let n_sample = rows.len();
    let xs = standardise_rows(&train.x, &rows, &mean, &std);
    let ys: Array1<bool> = rows.iter().map(|&i| train.y[i]).collect();
    let y01: Array1<f64> = ys.mapv(|v| if v { 1.0 } else { 0.0 });
    drop(rows);

    // King & Zeng prior correction: subtract ln(odds_sample / odds_population).
    let odds = |pos: usize, total: usize| pos as f64 / (total - pos) as f64;
    let prior_correction = (odds(churn_sample, n_sample) / odds(churn_train, n_train)).ln();

    let valid_rows: Vec<usize> = (0..valid.y.len()).collect();
    let xv = standardise_rows(&valid.x, &valid_rows, &mean, &std);
    drop(valid_rows);

    let mut per_alpha = Vec::with_capacity(params.alphas.len());
    let mut chosen: Option<(f64, f64, Fit1)> = None; // (alpha, valid log loss, fit)
    for &alpha in &params.alphas {
        let fit = fit_alpha(&xs, &ys, &y01, alpha, params)?;
        let pv = standardised_probs(&xv, &fit.coef, fit.intercept_sample - prior_correction);
        let ll = metrics::log_loss(&pv, valid.y);
        let auc = metrics::auc(&pv, valid.y);
        per_alpha.push((alpha, ll, auc));
        let better = match &chosen {
            None => true,
            Some((_, best_ll, _)) => ll < *best_ll,
        };
        if better {
            chosen = Some((alpha, ll, fit));
        }
    }
    drop(xs);
    drop(xv);
    let (chosen_alpha, _, fit) =
        chosen.ok_or_else(|| ModelError::InvalidParams("alphas is empty".to_owned()))?;

    let mut artifact = ModelArtifact {
        format_version: FORMAT_VERSION,
        model_version: String::new(),
        created_at: Utc::now(),
        feature_names: feature_names.to_vec(),
        bindings: bindings.to_vec(),
        scaler_mean: mean,
        scaler_std: std,
        coefficients: fit.coef.to_vec(),
        intercept: fit.intercept_sample - prior_correction,
        thresholds: Bands {
            medium: 0.5,
            high: 0.6,
            critical: 0.7,
        },
        alert_threshold: 0.6,
        metrics: BTreeMap::new(),
        data_window: None,
        train_params: serde_json::Value::Null,
        calibration: None,
        score_distribution: None,
        band_spec: None,
        catalog: None,
        drift_reference: None,
        cold_start: None,
        hash: String::new(),
    };

    // Everything below uses the artifact's own arithmetic, so reported numbers are exactly
    // what scoring will produce.
    let p_valid = artifact.predict_batch(valid.x);
    let p_train = artifact.predict_batch(train.x);
    artifact.thresholds = bands_from(&p_valid);
    artifact.alert_threshold = artifact.thresholds.high;

    let churn_valid = valid.y.iter().filter(|&&v| v).count();
    let (prec, rec) = metrics::precision_recall_at(&p_valid, valid.y, artifact.alert_threshold);
    let mean_of = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let mut m = BTreeMap::new();
    m.insert("train_rows".to_owned(), n_train as f64);
    m.insert("train_sample_rows".to_owned(), n_sample as f64);
    m.insert(
        "train_base_rate".to_owned(),
        churn_train as f64 / n_train as f64,
    );
    m.insert("train_mean_predicted".to_owned(), mean_of(&p_train));
    m.insert(
        "train_log_loss".to_owned(),
        metrics::log_loss(&p_train, train.y),
    );
    m.insert("train_auc".to_owned(), metrics::auc(&p_train, train.y));
    m.insert("valid_rows".to_owned(), valid.y.len() as f64);
    m.insert(
        "valid_base_rate".to_owned(),
        churn_valid as f64 / valid.y.len() as f64,
    );
    m.insert("valid_mean_predicted".to_owned(), mean_of(&p_valid));
    m.insert(
        "valid_log_loss".to_owned(),
        metrics::log_loss(&p_valid, valid.y),
    );
    m.insert("valid_auc".to_owned(), metrics::auc(&p_valid, valid.y));
    m.insert("valid_brier".to_owned(), metrics::brier(&p_valid, valid.y));
    m.insert(
        "valid_lift_at_10".to_owned(),
        metrics::lift_at(&p_valid, valid.y, 0.1),
    );
    m.insert("valid_precision_at_alert".to_owned(), prec);
    m.insert("valid_recall_at_alert".to_owned(), rec);
    m.insert("chosen_alpha".to_owned(), chosen_alpha);
    m.insert("prior_correction".to_owned(), prior_correction);
    m.insert("iterations".to_owned(), fit.iterations as f64);
    m.insert("gradient_norm".to_owned(), fit.gradient_norm);
    m.insert(
        "converged".to_owned(),
        if fit.converged { 1.0 } else { 0.0 },
    );
    m.retain(|_, v| v.is_finite());
    artifact.metrics = m;

    artifact.train_params = serde_json::json!({
        "alphas": params.alphas,
        "max_iterations": params.max_iterations,
        "gradient_tolerance": params.gradient_tolerance,
        "balance": params.balance.as_str(),
        "seed": params.seed,
        "chosen_alpha": chosen_alpha,
        "solver": "linfa-logistic 0.8.1 (argmin L-BFGS, objective: sum log loss + alpha/2 |w|^2, intercept unpenalised)",
        "solver_round": SOLVER_ROUND,
        "band_quantiles": BAND_QUANTILES,
        "prior_correction": prior_correction,
        "per_alpha": per_alpha
            .iter()
            .map(|(a, ll, auc)| serde_json::json!({
                "alpha": a,
                "valid_log_loss": if ll.is_finite() { serde_json::json!(ll) } else { serde_json::Value::Null },
                "valid_auc": if auc.is_finite() { serde_json::json!(auc) } else { serde_json::Value::Null },
            }))
            .collect::<Vec<_>>(),
    });
    artifact.model_version = artifact.compute_model_version()?;
    artifact.validate()?;
    artifact.seal()?;

    let report = TrainReport {
        chosen_alpha,
        per_alpha,
        iterations: fit.iterations,
        converged: fit.converged,
        gradient_norm: fit.gradient_norm,
    };
    Ok((artifact, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversampling_balances_exactly_and_is_deterministic() {
        // 3 churners, 10 stayers: each churner appears 3 times, plus 1 seeded extra.
        let mut y = vec![false; 13];
        y[2] = true;
        y[5] = true;
        y[11] = true;
        let (rows, churn) = sample_rows(&y, Balance::Reweight, 7);
        assert_eq!(rows.len(), 20);
        assert_eq!(churn, 10);
        assert_eq!(rows.iter().filter(|&&i| y[i]).count(), 10);
        let (rows2, _) = sample_rows(&y, Balance::Reweight, 7);
        assert_eq!(rows, rows2);
        for i in [2usize, 5, 11] {
            let c = rows.iter().filter(|&&r| r == i).count();
            assert!((3..=4).contains(&c), "row {i} appears {c} times");
        }
        let (rows_none, churn_none) = sample_rows(&y, Balance::None, 7);
        assert_eq!(rows_none, (0..13).collect::<Vec<_>>());
        assert_eq!(churn_none, 3);
    }

    #[test]
    fn train_params_defaults_and_partial_json() {
        let p: TrainParams =
            serde_json::from_str(r#"{"max_iterations": 50, "balance": "none"}"#).expect("json");
        assert_eq!(p.max_iterations, 50);
        assert_eq!(p.balance, Balance::None);
        assert_eq!(p.alphas, vec![1e-4, 1e-3, 1e-2, 1e-1, 1.0]);
        assert_eq!(p.gradient_tolerance, 1e-6);
        assert_eq!(TrainParams::default().balance, Balance::Reweight);
    }

    #[test]
    fn oversampling_handles_churn_majority() {
        let y = [true, true, true, true, false];
        let (rows, churn) = sample_rows(&y, Balance::Reweight, 1);
        assert_eq!(rows.len(), 8);
        assert_eq!(churn, 4);
    }

    #[test]
    fn bands_are_strictly_increasing_even_for_constant_predictions() {
        let b = bands_from(&[0.3; 100]);
        assert!(b.validate().is_ok(), "{b:?}");
        let b = bands_from(&[1.0; 10]);
        assert!(b.validate().is_ok(), "{b:?}");
        let b = bands_from(&[0.0; 10]);
        assert!(b.validate().is_ok(), "{b:?}");
    }
}
