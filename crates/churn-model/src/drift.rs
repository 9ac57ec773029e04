//! Population stability index (PSI): how far a population's distribution of a feature or of
//! the score has moved from the training population's.
//!
//! A [`Reference`] holds up to [`BINS`] quantile bins of the reference values (cut points at
//! the deciles, merged where values tie, so a feature with few distinct values gets fewer bins)
//! and the reference share of each bin. PSI = Σ (actual − expected) · ln(actual / expected)
//! over the bins, shares floored at [`SHARE_FLOOR`]. Reading: below 0.1 stable, 0.1–0.25 a
//! moderate shift, above [`PSI_ALERT`] (0.25) a shift worth acting on (retrain, or find the
//! broken input).

use serde::{Deserialize, Serialize};

/// Quantile bins of a reference (at most).
pub const BINS: usize = 10;
/// Shares below this count as this (an empty bin would make PSI infinite).
pub const SHARE_FLOOR: f64 = 1e-4;
/// PSI at or above which a distribution is reported as drifted.
pub const PSI_ALERT: f64 = 0.25;

/// Bins of a reference population and the share of it in each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    /// Ascending cut points; bin `i` holds values in `(edges[i-1], edges[i]]` (the first bin
    /// everything up to `edges[0]`, the last everything above the last edge).
    pub edges: Vec<f64>,
    /// Reference share per bin (`edges.len() + 1` values summing to 1).
    pub shares: Vec<f64>,
}

impl Reference {
    /// The reference of `values` (non-finite ones skipped); `None` without finite values.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Self> {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        // Lower nearest-rank quantiles: every cut is a value of the reference, so a discrete
        // feature's bins are its values (no empty bins between two values).
        let last = (v.len() - 1) as f64;
        let mut edges: Vec<f64> = (1..BINS)
            .map(|i| v[(last * i as f64 / BINS as f64).floor() as usize])
            .collect();
        edges.dedup();
        // A cut at the maximum leaves an empty last bin: drop it.
        if edges.last().is_some_and(|e| *e >= v[v.len() - 1]) {
            edges.pop();
        }
        let mut r = Reference {
            shares: vec![0.0; edges.len() + 1],
            edges,
        };
        r.shares = r.shares_of(&v).unwrap_or_default();
        Some(r)
    }

    /// The bin of `x`.
    pub fn bin(&self, x: f64) -> usize {
        self.edges.partition_point(|e| *e < x)
    }

    /// How many of `values` (non-finite skipped) fall in each bin.
    pub fn counts_of<'a>(&self, values: impl IntoIterator<Item = &'a f64>) -> Vec<usize> {
        let mut counts = vec![0usize; self.edges.len() + 1];
        for x in values.into_iter().filter(|x| x.is_finite()) {
            counts[self.bin(*x)] += 1;
        }
        counts
    }

    /// The share of `values` (non-finite skipped) in each bin; `None` without finite values.
    pub fn shares_of<'a>(&self, values: impl IntoIterator<Item = &'a f64>) -> Option<Vec<f64>> {
        shares(&self.counts_of(values))
    }

    /// PSI of `values` against this reference; `None` without finite values.
    pub fn psi<'a>(&self, values: impl IntoIterator<Item = &'a f64>) -> Option<f64> {
        self.psi_of_counts(&self.counts_of(values))
    }

    /// PSI of a population given as counts per bin of this reference (what a caller that bins
    /// as it goes, without collecting the values, has); `None` when every count is 0.
    pub fn psi_of_counts(&self, counts: &[usize]) -> Option<f64> {
        shares(counts).map(|a| psi(&self.shares, &a))
    }
}

/// Counts as shares of their sum; `None` when it is 0.
fn shares(counts: &[usize]) -> Option<Vec<f64>> {
    let n: usize = counts.iter().sum();
    (n > 0).then(|| counts.iter().map(|c| *c as f64 / n as f64).collect())
}

/// PSI between two share vectors of the same bins.
pub fn psi(expected: &[f64], actual: &[f64]) -> f64 {
    expected
        .iter()
        .zip(actual)
        .map(|(e, a)| {
            let (e, a) = (e.max(SHARE_FLOOR), a.max(SHARE_FLOOR));
            (a - e) * (a / e).ln()
        })
        .sum()
}

/// The training population's references, stored in the model artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftReference {
    /// Observations (customer × date) they summarise: the train and validation rows.
    pub rows: usize,
    /// One per feature, parallel to the artifact's `feature_names` (raw feature values).
    pub features: Vec<Reference>,
    /// The model's (calibrated) churn probability on those rows.
    pub score: Reference,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_population_is_stable_and_a_shifted_one_is_not() {
        let base: Vec<f64> = (0..10_000).map(|i| f64::from(i % 1000)).collect();
        let r = Reference::of(base.iter().copied()).expect("reference");
        assert_eq!(r.shares.len(), BINS);
        assert!((r.shares.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!(r.psi(&base).expect("psi") < 1e-9);
        // Halving every value moves half the population into the lower bins.
        let halved: Vec<f64> = base.iter().map(|x| x / 2.0).collect();
        let p = r.psi(&halved).expect("psi");
        assert!(p > PSI_ALERT, "{p}");
        // A small shift is small.
        let nudged: Vec<f64> = base.iter().map(|x| x + 5.0).collect();
        assert!(r.psi(&nudged).expect("psi") < 0.05);
    }

    #[test]
    fn discrete_features_get_fewer_bins_and_nothing_is_infinite() {
        // 90 % zeros, 10 % ones.
        let v: Vec<f64> = (0..1000)
            .map(|i| f64::from(u8::from(i % 10 == 0)))
            .collect();
        let r = Reference::of(v.iter().copied()).expect("reference");
        assert_eq!(r.edges, vec![0.0]);
        assert!((r.shares[0] - 0.9).abs() < 1e-12);
        let all_ones = vec![1.0; 50];
        let p = r.psi(&all_ones).expect("psi");
        assert!(p.is_finite() && p > 1.0, "{p}");
        assert!(Reference::of([f64::NAN]).is_none());
        assert!(r.psi(&[f64::NAN]).is_none());
    }
}
