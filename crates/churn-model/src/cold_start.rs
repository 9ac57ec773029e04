//! The cold-start fallback: customers with less history than `min_history_days` are scored by
//! an empirical churn-rate table instead of the logistic model. Their 28- and 90-day windows
//! and "versus their own normal" ratios are mostly empty, so the model's score rests on
//! extrapolation; the table only uses what a young history does say: its age (tenure week)
//! and how long it has been silent (recency cell).
//!
//! Each cell's rate is the share of training rows in it that churned, shrunk towards its tenure
//! week's rate, which is shrunk towards the base rate of all training rows (empirical Bayes with
//! [`PSEUDO_ROWS`] pseudo-rows at each level), so sparse cells fall back smoothly.

use serde::{Deserialize, Serialize};

/// Pseudo-rows of the prior at each shrinkage level (cell → week → base rate).
pub const PSEUDO_ROWS: f64 = 10.0;
/// Default `min_history_days` of `churnstream train` (two weeks).
pub const DEFAULT_MIN_HISTORY_DAYS: u32 = 14;
/// Recency cut points (days since the last activity) of the table's columns: [0, 3), [3, 7),
/// [7, ∞).
pub const RECENCY_EDGES: [f64; 2] = [3.0, 7.0];

/// The fallback table (stored in the artifact as `cold_start`; part of the model version).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ColdStart {
    /// Customers with fewer days of history (tenure) are scored by the table.
    pub min_history_days: u32,
    /// Column cut points on days since the last activity.
    pub recency_edges: Vec<f64>,
    /// Smoothed churn rate per tenure week (row) and recency cell (column).
    pub rates: Vec<Vec<f64>>,
    /// Training rows per cell (the evidence behind each rate).
    pub rows: Vec<Vec<u32>>,
    /// Churn rate of all training rows (the prior of every week).
    pub base_rate: f64,
}

impl ColdStart {
    /// Fit on training rows: `tenure` and `recency` in days (raw feature values) and the labels,
    /// parallel. Rows at or above `min_history_days` only contribute to the base rate. `None`
    /// when `min_history_days` is 0 or there are no rows.
    pub fn fit(
        tenure: &[f64],
        recency: &[f64],
        labels: &[bool],
        min_history_days: u32,
    ) -> Option<Self> {
        let n = labels.len().min(tenure.len()).min(recency.len());
        if min_history_days == 0 || n == 0 {
            return None;
        }
        let base_rate = labels[..n].iter().filter(|y| **y).count() as f64 / n as f64;
        let weeks = min_history_days.div_ceil(7) as usize;
        let cols = RECENCY_EDGES.len() + 1;
        let mut count = vec![vec![(0u32, 0u32); cols]; weeks];
        for i in 0..n {
            let Some((w, c)) = cell(tenure[i], recency[i], min_history_days, &RECENCY_EDGES) else {
                continue;
            };
            let (rows, churned) = &mut count[w][c];
            *rows += 1;
            *churned += u32::from(labels[i]);
        }
        let shrink = |churned: u32, rows: u32, prior: f64| {
            (f64::from(churned) + PSEUDO_ROWS * prior) / (f64::from(rows) + PSEUDO_ROWS)
        };
        let rates = count
            .iter()
            .map(|week| {
                let (rows, churned) = week
                    .iter()
                    .fold((0, 0), |(r, c), (rr, cc)| (r + rr, c + cc));
                let week_rate = shrink(churned, rows, base_rate);
                week.iter()
                    .map(|(r, c)| shrink(*c, *r, week_rate))
                    .collect()
            })
            .collect();
        Some(ColdStart {
            min_history_days,
            recency_edges: RECENCY_EDGES.to_vec(),
            rates,
            rows: count
                .iter()
                .map(|w| w.iter().map(|(r, _)| *r).collect())
                .collect(),
            base_rate,
        })
    }

    /// The fallback churn probability of a customer with `tenure_days` of history, silent for
    /// `recency_days`; `None` when the history is long enough for the model.
    pub fn score(&self, tenure_days: f64, recency_days: f64) -> Option<f64> {
        let (w, c) = cell(
            tenure_days,
            recency_days,
            self.min_history_days,
            &self.recency_edges,
        )?;
        self.rates.get(w).and_then(|r| r.get(c)).copied()
    }

    /// Structural checks (the artifact's `validate`).
    pub fn validate(&self) -> Result<(), String> {
        let weeks = self.min_history_days.div_ceil(7) as usize;
        let cols = self.recency_edges.len() + 1;
        if self.rates.len() != weeks || self.rows.len() != weeks {
            return Err(format!(
                "cold_start: {} rate rows for {} tenure weeks",
                self.rates.len(),
                weeks
            ));
        }
        if self.rates.iter().any(|r| r.len() != cols) || self.rows.iter().any(|r| r.len() != cols) {
            return Err(format!("cold_start: every week needs {cols} recency cells"));
        }
        let prob = |p: &f64| p.is_finite() && (0.0..=1.0).contains(p);
        if !self.rates.iter().flatten().all(prob) || !prob(&self.base_rate) {
            return Err("cold_start: rates must be probabilities".into());
        }
        if !self.recency_edges.windows(2).all(|w| w[0] < w[1]) {
            return Err("cold_start: recency edges must increase".into());
        }
        Ok(())
    }
}

/// (tenure week, recency cell) of a row below `min_history_days`.
fn cell(tenure: f64, recency: f64, min_history_days: u32, edges: &[f64]) -> Option<(usize, usize)> {
    if !tenure.is_finite() || tenure < 0.0 || tenure >= f64::from(min_history_days) {
        return None;
    }
    let week = (tenure / 7.0).floor() as usize;
    let col = edges.iter().take_while(|e| recency >= **e).count();
    Some((week, col))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_follow_the_rows_and_sparse_cells_shrink_to_their_week() {
        // Week 0: silent customers (recency ≥ 7) churn, active ones do not; week 1 has no rows.
        let mut tenure = Vec::new();
        let mut recency = Vec::new();
        let mut labels = Vec::new();
        for i in 0..200 {
            tenure.push(f64::from(i % 7));
            let silent = i % 2 == 0;
            recency.push(if silent { 8.0 } else { 1.0 });
            labels.push(silent);
        }
        // Old customers: only in the base rate.
        for _ in 0..800 {
            tenure.push(200.0);
            recency.push(1.0);
            labels.push(false);
        }
        let t = ColdStart::fit(&tenure, &recency, &labels, 14).expect("table");
        t.validate().expect("valid");
        assert!((t.base_rate - 0.1).abs() < 1e-12);
        let silent = t.score(3.0, 10.0).expect("young");
        let active = t.score(3.0, 0.0).expect("young");
        assert!(silent > 0.9 && active < 0.05, "{silent} {active}");
        // [3, 7) has no rows in week 0: its week's rate (0.5 shrunk towards 0.1).
        let middle = t.score(3.0, 4.0).expect("young");
        assert!((middle - (100.0 + 1.0) / 210.0).abs() < 1e-9, "{middle}");
        // Week 1 has no rows at all: the base rate.
        assert!((t.score(10.0, 0.0).expect("young") - 0.1).abs() < 1e-12);
        assert_eq!(t.score(14.0, 0.0), None);
        assert_eq!(t.score(f64::NAN, 0.0), None);
        assert_eq!(ColdStart::fit(&tenure, &recency, &labels, 0), None);
    }
}
