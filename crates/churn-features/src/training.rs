//! Training-set builder: observations at many dates, labels under the configured churn
//! definition, and a split by time (never random across time).
//!
//! Features of an observation at day `A` come from [`feature_frame`] as of `A` (rollup days
//! `<= A` only); its label looks strictly after `A`. A customer is observed at `A` only if they
//! had started before `A` and were still active (some event within the inactivity window), so
//! customers who already churned are not counted again.

use serde::{Deserialize, Serialize};

use crate::features::{feature_frame, FeatureMatrix, RollupFrames};
use crate::registry::FEATURES;
use crate::rollup::CustomerRollups;
use crate::Error;

/// What "churned" means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChurnDefinition {
    /// Non-contractual: no event at all in the `days` after the observation date.
    Inactivity { days: i32 },
    /// Contractual: a subscription `cancel` within `horizon_days` after the observation date.
    Cancel { horizon_days: i32 },
}

impl Default for ChurnDefinition {
    fn default() -> Self {
        ChurnDefinition::Inactivity { days: 30 }
    }
}

impl ChurnDefinition {
    /// Days after the observation date the label looks at.
    pub fn horizon(&self) -> i32 {
        match *self {
            ChurnDefinition::Inactivity { days } => days,
            ChurnDefinition::Cancel { horizon_days } => horizon_days,
        }
    }

    /// Label of a customer observed at day `as_of` (looks only at days in `(as_of, as_of+h]`).
    pub fn label(&self, c: &CustomerRollups, as_of: i32) -> bool {
        let h = self.horizon();
        let from = c.days.partition_point(|r| r.day <= as_of);
        let future = c.days[from..].iter().take_while(|r| r.day <= as_of + h);
        match self {
            ChurnDefinition::Inactivity { .. } => future.count() == 0,
            ChurnDefinition::Cancel { .. } => future.into_iter().any(|r| r.cancels > 0),
        }
    }
}

/// How observations are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ObservationPlan {
    pub definition: ChurnDefinition,
    /// Days between observation dates.
    pub every_days: i32,
    /// Days of history required before the first observation date.
    pub warmup_days: i32,
    /// A customer is observed only if their last event is fewer than this many days old.
    pub active_within_days: i32,
}

impl Default for ObservationPlan {
    fn default() -> Self {
        ObservationPlan {
            definition: ChurnDefinition::default(),
            every_days: 7,
            warmup_days: 56,
            active_within_days: 30,
        }
    }
}

/// Observation rows: raw features, labels, and who/when.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrainingSet {
    pub customer_ids: Vec<String>,
    pub as_of: Vec<i32>,
    /// Row-major raw features, `len × FEATURES.len()`.
    pub values: Vec<f64>,
    pub labels: Vec<bool>,
}

impl TrainingSet {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn row(&self, i: usize) -> &[f64] {
        let n = FEATURES.len();
        &self.values[i * n..(i + 1) * n]
    }

    /// Rows whose observation date is in `[from, to)`.
    pub fn between(&self, from: i32, to: i32) -> TrainingSet {
        let mut out = TrainingSet::default();
        for i in 0..self.len() {
            if self.as_of[i] >= from && self.as_of[i] < to {
                out.customer_ids.push(self.customer_ids[i].clone());
                out.as_of.push(self.as_of[i]);
                out.values.extend_from_slice(self.row(i));
                out.labels.push(self.labels[i]);
            }
        }
        out
    }

    /// Split by observation date: the earliest `train` fraction of dates, then `valid`, the rest
    /// test. Returns the three sets and the two boundary days.
    pub fn time_split(
        &self,
        train: f64,
        valid: f64,
    ) -> (TrainingSet, TrainingSet, TrainingSet, i32, i32) {
        let mut dates: Vec<i32> = self.as_of.clone();
        dates.sort_unstable();
        dates.dedup();
        let n = dates.len();
        let cut = |f: f64| ((n as f64 * f).round() as usize).clamp(1, n.saturating_sub(1).max(1));
        let b1 = dates.get(cut(train)).copied().unwrap_or(i32::MAX);
        let b2 = dates
            .get(
                cut(train + valid)
                    .max(cut(train) + 1)
                    .min(n.saturating_sub(1)),
            )
            .copied()
            .unwrap_or(i32::MAX);
        (
            self.between(i32::MIN, b1),
            self.between(b1, b2),
            self.between(b2, i32::MAX),
            b1,
            b2,
        )
    }
}

/// Observation dates for history spanning days `[first, last]`.
pub fn observation_dates(first: i32, last: i32, plan: &ObservationPlan) -> Vec<i32> {
    let start = first + plan.warmup_days;
    let end = last - plan.definition.horizon();
    (0..)
        .map(|k| start + k * plan.every_days)
        .take_while(|d| *d <= end)
        .collect()
}

/// Build the training set over all observation dates. `customers` is the batch path's output
/// ([`crate::rollups_from_events`]).
pub fn build_training_set(
    customers: &[(String, CustomerRollups)],
    plan: &ObservationPlan,
) -> Result<TrainingSet, Error> {
    let first = customers
        .iter()
        .filter_map(|(_, c)| c.first_day)
        .min()
        .unwrap_or(0);
    let last = customers
        .iter()
        .filter_map(|(_, c)| c.days.last().map(|r| r.day))
        .max()
        .unwrap_or(0);
    let dates = observation_dates(first, last, plan);
    if dates.is_empty() {
        return Err(Error::NoObservations {
            days: last - first + 1,
            horizon: plan.definition.horizon(),
        });
    }
    let frames = RollupFrames::build(customers.iter().map(|(_, c)| c))?;
    let recency_col = FEATURES
        .iter()
        .position(|d| d.name == "recency_activity_days")
        .unwrap_or(1);
    let mut set = TrainingSet::default();
    for &as_of in &dates {
        let m = FeatureMatrix::from_frame(&feature_frame(&frames, as_of)?)?;
        for i in 0..m.len() {
            let row = m.row(i);
            if row[recency_col] >= f64::from(plan.active_within_days) {
                continue;
            }
            let (id, c) = &customers[m.cids[i] as usize];
            set.customer_ids.push(id.clone());
            set.as_of.push(as_of);
            set.values.extend_from_slice(row);
            set.labels.push(plan.definition.label(c, as_of));
        }
    }
    Ok(set)
}
