//! Evaluation metrics for binary churn predictions (`y == true` means churned).
//!
//! All functions take parallel slices of scores/probabilities and labels and panic if their
//! lengths differ (a programming error, not a data condition). Conventions for degenerate
//! inputs are documented per function; none of them returns NaN except [`auc`] (undefined
//! without both classes) and the mean-based metrics on empty input.

use serde::{Deserialize, Serialize};

/// Probabilities are clipped to `[EPS, 1 - EPS]` in [`log_loss`].
const LOG_LOSS_EPS: f64 = 1e-15;

fn check_len(a: usize, b: usize, what: &str) {
    assert_eq!(
        a, b,
        "churn_model::metrics::{what}: {a} scores but {b} labels"
    );
}

/// Area under the ROC curve, computed as the Mann–Whitney rank statistic with average ranks
/// for ties (a tie between a churner and a stayer counts one half).
///
/// 1.0 = every churner scores above every stayer, 0.0 = the reverse, 0.5 = no better than
/// chance (e.g. all scores equal). Returns NaN if `y` lacks churners or stayers.
pub fn auc(scores: &[f64], y: &[bool]) -> f64 {
    check_len(scores.len(), y.len(), "auc");
    let n_pos = y.iter().filter(|&&v| v).count();
    let n_neg = y.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return f64::NAN;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Sum of (1-based, tie-averaged) ranks of the positives.
    let mut rank_sum_pos = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        // Ranks i+1 ..= j+1 share the average rank.
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        let pos_in_group = order[i..=j].iter().filter(|&&k| y[k]).count();
        rank_sum_pos += avg_rank * pos_in_group as f64;
        i = j + 1;
    }
    let n_pos_f = n_pos as f64;
    let u = rank_sum_pos - n_pos_f * (n_pos_f + 1.0) / 2.0;
    u / (n_pos_f * n_neg as f64)
}

/// Mean negative log-likelihood (binary cross-entropy, natural log), with probabilities
/// clipped to `[1e-15, 1 - 1e-15]`. NaN on empty input.
pub fn log_loss(p: &[f64], y: &[bool]) -> f64 {
    check_len(p.len(), y.len(), "log_loss");
    if p.is_empty() {
        return f64::NAN;
    }
    let sum: f64 = p
        .iter()
        .zip(y)
        .map(|(&pi, &yi)| {
            let pi = pi.clamp(LOG_LOSS_EPS, 1.0 - LOG_LOSS_EPS);
            if yi {
                -pi.ln()
            } else {
                -(1.0 - pi).ln()
            }
        })
        .sum();
    sum / p.len() as f64
}

/// Brier score: mean squared difference between probability and outcome (0 is perfect).
/// NaN on empty input.
pub fn brier(p: &[f64], y: &[bool]) -> f64 {
    check_len(p.len(), y.len(), "brier");
    if p.is_empty() {
        return f64::NAN;
    }
    let sum: f64 = p
        .iter()
        .zip(y)
        .map(|(&pi, &yi)| {
            let t = if yi { 1.0 } else { 0.0 };
            (pi - t) * (pi - t)
        })
        .sum();
    sum / p.len() as f64
}

/// Lift in the top `top_fraction` of customers by score: the churn rate among the
/// `ceil(top_fraction · n)` highest-scored rows divided by the overall churn rate.
///
/// Ties at the cut-off are handled in expectation (as if tied rows were ordered at random):
/// the tied group contributes its churn rate times the number of slots it fills. 1.0 means
/// no better than random targeting. Returns 0.0 if there are no churners or no rows;
/// `top_fraction` is clamped to `(0, 1]`.
pub fn lift_at(p: &[f64], y: &[bool], top_fraction: f64) -> f64 {
    check_len(p.len(), y.len(), "lift_at");
    let n = p.len();
    let n_pos = y.iter().filter(|&&v| v).count();
    if n == 0 || n_pos == 0 {
        return 0.0;
    }
    let frac = if top_fraction.is_finite() {
        top_fraction.clamp(f64::MIN_POSITIVE, 1.0)
    } else {
        1.0
    };
    let k = ((frac * n as f64).ceil() as usize).clamp(1, n);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
    let cut = p[order[k - 1]];
    let mut above = 0usize;
    let mut pos_above = 0usize;
    let mut tied = 0usize;
    let mut pos_tied = 0usize;
    for &i in &order {
        if p[i] > cut {
            above += 1;
            pos_above += usize::from(y[i]);
        } else if p[i] == cut {
            tied += 1;
            pos_tied += usize::from(y[i]);
        } else {
            break;
        }
    }
    let slots = (k - above) as f64;
    let churners_top = pos_above as f64 + slots * pos_tied as f64 / tied.max(1) as f64;
    let rate_top = churners_top / k as f64;
    let rate_all = n_pos as f64 / n as f64;
    rate_top / rate_all
}

/// Precision and recall when flagging every row with `p >= threshold` as a churner.
///
/// Conventions: precision is 0.0 when nothing is flagged, recall is 0.0 when there are no
/// churners (so the result is always finite and JSON-safe).
pub fn precision_recall_at(p: &[f64], y: &[bool], threshold: f64) -> (f64, f64) {
    check_len(p.len(), y.len(), "precision_recall_at");
    let mut tp = 0usize;
    let mut fp = 0usize;
    let mut pos = 0usize;
    for (&pi, &yi) in p.iter().zip(y) {
        let flagged = pi >= threshold;
        pos += usize::from(yi);
        if flagged && yi {
            tp += 1;
        } else if flagged {
            fp += 1;
        }
    }
    let precision = if tp + fp == 0 {
        0.0
    } else {
        tp as f64 / (tp + fp) as f64
    };
    let recall = if pos == 0 {
        0.0
    } else {
        tp as f64 / pos as f64
    };
    (precision, recall)
}

/// One row of a reliability (calibration) table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationBin {
    /// Lower edge of the bin (inclusive).
    pub lower: f64,
    /// Upper edge of the bin (exclusive, except the last bin which includes 1.0).
    pub upper: f64,
    /// Rows whose predicted probability falls in the bin.
    pub count: usize,
    /// Mean predicted probability in the bin.
    pub mean_predicted: f64,
    /// Observed churn rate in the bin.
    pub observed_rate: f64,
}

/// Reliability table with `bins` equal-width bins over `[0, 1]` (bin `i` is
/// `[i/bins, (i+1)/bins)`, the last one closed). Probabilities outside `[0, 1]` are clamped;
/// NaN probabilities are skipped. Empty bins are omitted (so every returned bin has
/// `count > 0` and finite means). `bins == 0` is treated as 1.
pub fn calibration_table(p: &[f64], y: &[bool], bins: usize) -> Vec<CalibrationBin> {
    check_len(p.len(), y.len(), "calibration_table");
    let bins = bins.max(1);
    let mut count = vec![0usize; bins];
    let mut sum_p = vec![0.0f64; bins];
    let mut churned = vec![0usize; bins];
    for (&pi, &yi) in p.iter().zip(y) {
        if pi.is_nan() {
            continue;
        }
        let pi = pi.clamp(0.0, 1.0);
        let b = ((pi * bins as f64) as usize).min(bins - 1);
        count[b] += 1;
        sum_p[b] += pi;
        churned[b] += usize::from(yi);
    }
    (0..bins)
        .filter(|&b| count[b] > 0)
        .map(|b| CalibrationBin {
            lower: b as f64 / bins as f64,
            upper: (b + 1) as f64 / bins as f64,
            count: count[b],
            mean_predicted: sum_p[b] / count[b] as f64,
            observed_rate: churned[b] as f64 / count[b] as f64,
        })
        .collect()
}

/// Expected calibration error of a reliability table: `Σ_bins count/n · |mean predicted −
/// observed rate|` (0 = every bin's mean prediction equals its churn rate). 0.0 for an empty
/// table.
pub fn expected_calibration_error(table: &[CalibrationBin]) -> f64 {
    let n: usize = table.iter().map(|b| b.count).sum();
    if n == 0 {
        return 0.0;
    }
    table
        .iter()
        .map(|b| b.count as f64 / n as f64 * (b.mean_predicted - b.observed_rate).abs())
        .sum()
}

/// Reliability table with `bins` equal-count bins (by ascending probability; ties may share a
/// bin boundary only in sort order). `lower` / `upper` are the smallest and largest probability
/// in the bin. At low base rates most predictions fall into the first equal-width bin of
/// [`calibration_table`]; equal-count bins still resolve them. NaN skipped, `bins == 0` → 1.
pub fn calibration_table_equal_count(p: &[f64], y: &[bool], bins: usize) -> Vec<CalibrationBin> {
    check_len(p.len(), y.len(), "calibration_table_equal_count");
    let mut rows: Vec<(f64, bool)> = p
        .iter()
        .zip(y)
        .filter(|(pi, _)| !pi.is_nan())
        .map(|(&pi, &yi)| (pi.clamp(0.0, 1.0), yi))
        .collect();
    rows.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = rows.len();
    let bins = bins.max(1).min(n.max(1));
    (0..bins)
        .filter_map(|b| {
            let (lo, hi) = (b * n / bins, (b + 1) * n / bins);
            let chunk = rows.get(lo..hi).filter(|c| !c.is_empty())?;
            let count = chunk.len();
            Some(CalibrationBin {
                lower: chunk[0].0,
                upper: chunk[count - 1].0,
                count,
                mean_predicted: chunk.iter().map(|r| r.0).sum::<f64>() / count as f64,
                observed_rate: chunk.iter().filter(|r| r.1).count() as f64 / count as f64,
            })
        })
        .collect()
}

/// ROC curve as `(false positive rate, true positive rate)` points, from `(0, 0)` to `(1, 1)`,
/// one point per distinct score (tied scores move both rates at once, i.e. a diagonal
/// segment). The trapezoidal area under these points equals [`auc`]. If a class is missing
/// the corresponding rate is 0 throughout.
pub fn roc_curve(scores: &[f64], y: &[bool]) -> Vec<(f64, f64)> {
    check_len(scores.len(), y.len(), "roc_curve");
    let n_pos = y.iter().filter(|&&v| v).count();
    let n_neg = y.len() - n_pos;
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let rate = |k: usize, n: usize| if n == 0 { 0.0 } else { k as f64 / n as f64 };
    let mut points = vec![(0.0, 0.0)];
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut i = 0;
    while i < order.len() {
        let s = scores[order[i]];
        while i < order.len() && scores[order[i]] == s {
            if y[order[i]] {
                tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        points.push((rate(fp, n_neg), rate(tp, n_pos)));
    }
    if points.last() != Some(&(1.0, 1.0)) && n_pos > 0 && n_neg > 0 {
        points.push((1.0, 1.0));
    }
    points
}

/// Quantile with linear interpolation between order statistics (Hyndman–Fan type 7, the
/// numpy/R default) of an ascending-sorted slice. NaN if empty.
pub(crate) fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let q = q.clamp(0.0, 1.0);
    let h = (sorted.len() - 1) as f64 * q;
    let lo = h.floor() as usize;
    let hi = h.ceil() as usize;
    let frac = h - lo as f64;
    sorted[lo] + (sorted[hi] - sorted[lo]) * frac
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_type7() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert!((quantile_sorted(&v, 0.5) - 3.0).abs() < 1e-12);
        assert!((quantile_sorted(&v, 0.25) - 2.0).abs() < 1e-12);
        assert!((quantile_sorted(&v, 0.9) - 4.6).abs() < 1e-12);
        assert!(quantile_sorted(&[], 0.5).is_nan());
    }

    #[test]
    fn ece_is_zero_when_bins_match_and_measures_the_gap() {
        // Bin [0.1, 0.2): predictions 0.15, half churn → gap 0.35 over 4 of 8 rows.
        // Bin [0.5, 0.6): predictions 0.5, half churn → gap 0 over the other 4.
        let p = [0.15, 0.15, 0.15, 0.15, 0.5, 0.5, 0.5, 0.5];
        let y = [true, false, true, false, true, false, true, false];
        let t = calibration_table(&p, &y, 10);
        assert_eq!(t.len(), 2);
        assert!((expected_calibration_error(&t) - 0.175).abs() < 1e-12);
        let q = calibration_table_equal_count(&p, &y, 2);
        assert_eq!(q.len(), 2);
        assert_eq!(q[0].count, 4);
        assert!((q[0].mean_predicted - 0.15).abs() < 1e-12 && (q[1].lower - 0.5).abs() < 1e-12);
        assert!((expected_calibration_error(&q) - 0.175).abs() < 1e-12);
        let p2 = [0.5; 8];
        assert!(expected_calibration_error(&calibration_table(&p2, &y, 10)).abs() < 1e-12);
        assert_eq!(expected_calibration_error(&[]), 0.0);
        assert!(calibration_table_equal_count(&[], &[], 10).is_empty());
    }

    #[test]
    fn roc_area_equals_auc() {
        let s = [0.1, 0.4, 0.35, 0.8, 0.4, 0.2, 0.9, 0.4];
        let y = [false, false, true, true, true, false, true, false];
        let pts = roc_curve(&s, &y);
        let area: f64 = pts
            .windows(2)
            .map(|w| (w[1].0 - w[0].0) * (w[1].1 + w[0].1) / 2.0)
            .sum();
        assert!(
            (area - auc(&s, &y)).abs() < 1e-12,
            "{area} vs {}",
            auc(&s, &y)
        );
    }
}
