//! Training-set builder: observations at many dates, labels under the configured churn
//! definition, and a split by time (never random across time).
//!
//! Features of an observation at day `A` come from [`feature_frame`] as of `A` (rollup days
//! `<= A` only); its label looks strictly after `A`. A customer is observed at `A` only if they
//! had started before `A` and were still active (some event within the inactivity window), so
//! customers who already churned are not counted again.

use std::io::Write;

use serde::{Deserialize, Serialize};

use crate::catalog::FeatureSet;
use crate::features::{feature_frame, FeatureMatrix, RollupFrames};
#[cfg(test)]
use crate::registry::FEATURES;
use crate::rollup::{day_start, CustomerRollups};
use crate::Error;

/// What "churned" means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChurnDefinition {
    /// Non-contractual: a silence of `days` (no event at all) starts within `within_days` after
    /// the observation date: on the observation date itself (`within_days` 0: no event in the
    /// `days` after it), or after one of the customer's next events on the following
    /// `within_days - 1` days. With `within_days` > 0 the label asks "will this customer leave
    /// soon", not only "has this customer already gone quiet".
    Inactivity {
        days: i32,
        #[serde(default)]
        within_days: i32,
    },
    /// Contractual: a subscription `cancel` within `horizon_days` after the observation date.
    Cancel { horizon_days: i32 },
}

impl Default for ChurnDefinition {
    fn default() -> Self {
        ChurnDefinition::Inactivity {
            days: 30,
            within_days: 0,
        }
    }
}

impl ChurnDefinition {
    /// Days after the observation date the label looks at (and the purge gap of the split).
    pub fn horizon(&self) -> i32 {
        match *self {
            ChurnDefinition::Inactivity { days, within_days } => days + within_days.max(0),
            ChurnDefinition::Cancel { horizon_days } => horizon_days,
        }
    }

    /// Label of a customer observed at day `as_of` (looks only at days in `(as_of, as_of+h]`).
    pub fn label(&self, c: &CustomerRollups, as_of: i32) -> bool {
        let h = self.horizon();
        let mut future = c
            .days()
            .skip_while(|r| r.day <= as_of)
            .take_while(|r| r.day <= as_of + h);
        match *self {
            ChurnDefinition::Inactivity { days, within_days } => {
                // Candidate silence starts: the observation day, then each active day before
                // as_of + within_days; a silence starts at t if the next active day is more
                // than `days` after t.
                let mut t = as_of;
                for r in future {
                    if r.day - t > days {
                        return true;
                    }
                    if r.day >= as_of + within_days {
                        return false;
                    }
                    t = r.day;
                }
                // No further active day within the horizon: silent from t (≤ as_of + h - days).
                true
            }
            ChurnDefinition::Cancel { .. } => future.any(|r| r.cancels > 0),
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
    /// Row-major raw features, `len × features.len()`.
    pub values: Vec<f64>,
    /// The features of the columns (the registry plus the catalog the set was built with).
    pub features: FeatureSet,
    pub labels: Vec<bool>,
    /// Days the labels look ahead (the churn definition's horizon): the purge gap of
    /// [`split_boundaries`](Self::split_boundaries).
    pub horizon_days: i32,
}

impl TrainingSet {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn row(&self, i: usize) -> &[f64] {
        let n = self.features.len();
        &self.values[i * n..(i + 1) * n]
    }

    /// Rows whose observation date is in `[from, to)`.
    pub fn between(&self, from: i32, to: i32) -> TrainingSet {
        self.rows_where(|d| d >= from && d < to)
    }

    /// The rows whose observation date passes `keep`, in order.
    fn rows_where(&self, keep: impl Fn(i32) -> bool) -> TrainingSet {
        let mut out = TrainingSet {
            horizon_days: self.horizon_days,
            features: self.features.clone(),
            ..TrainingSet::default()
        };
        for i in 0..self.len() {
            if keep(self.as_of[i]) {
                out.customer_ids.push(self.customer_ids[i].clone());
                out.as_of.push(self.as_of[i]);
                out.values.extend_from_slice(self.row(i));
                out.labels.push(self.labels[i]);
            }
        }
        out
    }

    /// The purged time split of this set's observation dates: the latest `1 - train - valid`
    /// share of the dates is the test part; of the dates at least [`horizon_days`]
    /// (`TrainingSet::horizon_days`) before the first test date, the earliest `train / (train +
    /// valid)` share trains and the rest validates, again with a gap of at least the horizon
    /// between the last training date and the first validation date when that leaves at least
    /// [`MIN_TRAIN_DATES`] training dates (otherwise no inner gap: the summary says so). Dates in
    /// a gap are purged: their labels look into the next part's period.
    ///
    /// [`horizon_days`]: TrainingSet::horizon_days
    pub fn split_boundaries(&self, train: f64, valid: f64) -> SplitPlan {
        let mut dates: Vec<i32> = self.as_of.clone();
        dates.sort_unstable();
        dates.dedup();
        SplitPlan::new(&dates, train, valid, self.horizon_days)
    }

    /// Split by observation date ([`split_boundaries`](Self::split_boundaries)): the train,
    /// validation and test sets and the plan.
    pub fn time_split(
        &self,
        train: f64,
        valid: f64,
    ) -> (TrainingSet, TrainingSet, TrainingSet, SplitPlan) {
        let plan = self.split_boundaries(train, valid);
        let part = |want: Split| self.rows_where(|d| Split::of(d, &plan) == want);
        (
            part(Split::Train),
            part(Split::Valid),
            part(Split::Test),
            plan,
        )
    }
}

/// Fewest training dates the inner (train → validation) purge gap may leave.
pub const MIN_TRAIN_DATES: usize = 3;

/// Where the parts of a purged time split start and end (observation days; see
/// [`TrainingSet::split_boundaries`]). Train: `as_of < train_to`; validation: `valid_from <=
/// as_of < valid_to`; test: `as_of >= test_from`; anything else is purged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitPlan {
    pub train_to: i32,
    pub valid_from: i32,
    pub valid_to: i32,
    pub test_from: i32,
    /// The gap between the last training and the first validation date: at least the horizon
    /// when `true`; `false` when the history was too short for it.
    pub inner_gap: bool,
    /// Whether the test part is at least the horizon after the other parts (`false` only for
    /// histories too short for it: then the evaluation is optimistic).
    pub purged: bool,
}

impl SplitPlan {
    /// The plan for sorted, distinct observation `dates` (see [`TrainingSet::split_boundaries`]).
    pub fn new(dates: &[i32], train: f64, valid: f64, horizon: i32) -> SplitPlan {
        let n = dates.len();
        let at = |i: usize| dates.get(i).copied().unwrap_or(i32::MAX);
        // Test: the latest dates (at least one, leaving at least two).
        let k_test = ((n as f64 * (1.0 - train - valid)).round() as usize)
            .clamp(1, n.saturating_sub(2).max(1));
        let test_from = at(n.saturating_sub(k_test));
        // `d` is before `start` by at least the horizon (its label window ends by `start`).
        let gap_before =
            |d: i32, start: i32| d < start && i64::from(d) + i64::from(horizon) <= i64::from(start);
        // Dates far enough before the test part.
        let before: Vec<i32> = dates
            .iter()
            .copied()
            .filter(|d| gap_before(*d, test_from))
            .collect();
        // Too short for the gap before the test part: the unpurged split, flagged (`purged`
        // false in the plan and the training summary), rather than no model at all.
        let (before, purged) = if before.len() >= 2 {
            (before, true)
        } else {
            (
                dates.iter().copied().filter(|d| *d < test_from).collect(),
                false,
            )
        };
        let m = before.len();
        let share = if train + valid > 0.0 {
            valid / (train + valid)
        } else {
            0.5
        };
        let k_valid = ((m as f64 * share).round() as usize).clamp(1, m.saturating_sub(1).max(1));
        let valid_from = before
            .get(m.saturating_sub(k_valid))
            .copied()
            .unwrap_or(test_from);
        let valid_to = before.last().map_or(valid_from, |d| d + 1);
        let gapped = before
            .iter()
            .filter(|d| gap_before(**d, valid_from))
            .count();
        let (train_to, inner_gap) = if purged && gapped >= MIN_TRAIN_DATES {
            (before[gapped - 1] + 1, true)
        } else {
            (valid_from, horizon <= 0)
        };
        SplitPlan {
            train_to,
            valid_from,
            valid_to,
            test_from,
            inner_gap,
            purged,
        }
    }
}

/// The part of the time split an observation belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    Train,
    Valid,
    Test,
    /// In a purge gap: its label window overlaps the next part's period, so it is used by none.
    Purged,
}

impl Split {
    /// Split of an observation at `as_of` under `plan` ([`TrainingSet::split_boundaries`]).
    pub fn of(as_of: i32, plan: &SplitPlan) -> Split {
        if as_of >= plan.test_from {
            Split::Test
        } else if as_of >= plan.valid_from && as_of < plan.valid_to {
            Split::Valid
        } else if as_of < plan.train_to {
            Split::Train
        } else {
            Split::Purged
        }
    }

    /// `"train"`, `"valid"`, `"test"` or `"purged"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Valid => "valid",
            Split::Test => "test",
            Split::Purged => "purged",
        }
    }
}

/// `YYYY-MM-DD` of a day number.
pub fn date_string(day: i32) -> String {
    day_start(day).format("%Y-%m-%d").to_string()
}

/// Append `s` as one CSV field (RFC 4180: quoted when it holds a comma, quote or line break).
pub fn push_csv_field(out: &mut String, s: &str) {
    if s.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(s);
    }
}

/// Header of [`TrainingSet::write_csv`]: `customer_id`, `as_of`, every registry feature in
/// model-input order, `label`, `split`.
pub fn csv_header(features: &FeatureSet) -> Vec<&'static str> {
    let mut h = vec!["customer_id", "as_of"];
    h.extend(features.defs().iter().map(|d| d.name));
    h.extend(["label", "split"]);
    h
}

impl TrainingSet {
    /// Write the set as CSV, one row per customer × observation date: `customer_id`, `as_of`
    /// (`YYYY-MM-DD`; features use events up to the end of that UTC day, the label looks at
    /// the days after it), the raw features (before the registry's transforms and the model's
    /// scaling; shortest round-trip decimal form, so values are exact), `label` (1 = churned
    /// within the horizon) and `split` (`train`, `valid`, `test` or `purged` per `plan`, see
    /// [`split_boundaries`](Self::split_boundaries)).
    pub fn write_csv(&self, mut w: impl Write, plan: &SplitPlan) -> std::io::Result<()> {
        writeln!(w, "{}", csv_header(&self.features).join(","))?;
        let mut line = String::new();
        for i in 0..self.len() {
            line.clear();
            push_csv_field(&mut line, &self.customer_ids[i]);
            line.push(',');
            line.push_str(&date_string(self.as_of[i]));
            for v in self.row(i) {
                line.push(',');
                line.push_str(&v.to_string());
            }
            line.push_str(if self.labels[i] { ",1," } else { ",0," });
            line.push_str(Split::of(self.as_of[i], plan).as_str());
            line.push('\n');
            w.write_all(line.as_bytes())?;
        }
        w.flush()
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
    build_training_set_with(customers, plan, &FeatureSet::builtin())
}

/// [`build_training_set`] with the features of `features` (the registry plus a catalog; the
/// rollups must have been folded with the same catalog, [`crate::rollups_from_events_with`]).
pub fn build_training_set_with(
    customers: &[(String, CustomerRollups)],
    plan: &ObservationPlan,
    features: &FeatureSet,
) -> Result<TrainingSet, Error> {
    let first = customers
        .iter()
        .filter_map(|(_, c)| c.first_day)
        .min()
        .unwrap_or(0);
    let last = customers
        .iter()
        .filter_map(|(_, c)| c.last_day())
        .max()
        .unwrap_or(0);
    let dates = observation_dates(first, last, plan);
    if dates.is_empty() {
        return Err(Error::NoObservations {
            days: last - first + 1,
            horizon: plan.definition.horizon(),
        });
    }
    let mut set = TrainingSet {
        horizon_days: plan.definition.horizon(),
        features: features.clone(),
        ..TrainingSet::default()
    };
    for &as_of in &dates {
        observe(
            customers,
            as_of,
            features,
            plan.active_within_days,
            |i, row| {
                let (id, c) = &customers[i];
                set.customer_ids.push(id.clone());
                set.as_of.push(as_of);
                set.values.extend_from_slice(row);
                set.labels.push(plan.definition.label(c, as_of));
            },
        )?;
    }
    Ok(set)
}

/// The observation rule of the training set on one date: calls `each(index into customers,
/// raw feature row)` for every customer active within `active_within_days` as of the end of
/// `as_of` (`recency_activity_days` below it). Training rows and drift populations
/// (`churnstream drift`) both come from here.
pub fn observe(
    customers: &[(String, CustomerRollups)],
    as_of: i32,
    features: &FeatureSet,
    active_within_days: i32,
    mut each: impl FnMut(usize, &[f64]),
) -> Result<(), Error> {
    let recency_col = features
        .defs()
        .iter()
        .position(|d| d.name == "recency_activity_days")
        .unwrap_or(1);
    let frames = RollupFrames::build_with(customers.iter().map(|(_, c)| c), as_of, features)?;
    let m = FeatureMatrix::from_frame(&feature_frame(&frames)?)?;
    for i in 0..m.len() {
        let row = m.row(i);
        if row[recency_col] >= f64::from(active_within_days) {
            continue;
        }
        each(m.cids[i] as usize, row);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(rows: &[(&str, i32, bool)]) -> TrainingSet {
        let mut s = TrainingSet::default();
        for (k, &(id, day, label)) in rows.iter().enumerate() {
            s.customer_ids.push(id.to_string());
            s.as_of.push(day);
            s.values
                .extend((0..FEATURES.len()).map(|j| k as f64 + j as f64 / 3.0));
            s.labels.push(label);
        }
        s
    }

    #[test]
    fn split_of_matches_time_split() {
        let s = set(&[
            ("a", 10, false),
            ("a", 17, false),
            ("b", 24, true),
            ("a", 31, false),
            ("b", 38, true),
        ]);
        let b = s.split_boundaries(0.6, 0.2);
        assert_eq!(b.test_from, 38);
        assert_eq!((b.valid_from, b.valid_to), (31, 32));
        let (tr, va, te, b2) = s.time_split(0.6, 0.2);
        assert_eq!(b2, b);
        for (part, want) in [(tr, Split::Train), (va, Split::Valid), (te, Split::Test)] {
            assert!(!part.is_empty());
            assert!(
                part.as_of.iter().all(|&d| Split::of(d, &b) == want),
                "{want:?}"
            );
        }
    }

    /// Weekly dates over a year with a 30-day horizon: every training date is at least 30
    /// days before the first validation date and every validation date at least 30 days before
    /// the first test date; the dates in between are purged, and no part is empty.
    #[test]
    fn purge_gaps_are_at_least_the_horizon() {
        let rows: Vec<(&str, i32, bool)> =
            (0..52).map(|k| ("a", 100 + 7 * k, k % 3 == 0)).collect();
        for horizon in [0, 7, 30, 90] {
            let mut s = set(&rows);
            s.horizon_days = horizon;
            let (tr, va, te, plan) = s.time_split(0.6, 0.2);
            assert!(
                !tr.is_empty() && !va.is_empty() && !te.is_empty(),
                "h {horizon}"
            );
            let max = |p: &TrainingSet| p.as_of.iter().copied().max().expect("rows");
            let min = |p: &TrainingSet| p.as_of.iter().copied().min().expect("rows");
            assert!(min(&te) - max(&va) >= horizon, "valid → test, h {horizon}");
            assert!(min(&te) - max(&tr) >= horizon, "train → test, h {horizon}");
            assert!(
                plan.inner_gap,
                "a year leaves room for the inner gap, h {horizon}"
            );
            assert!(min(&va) - max(&tr) >= horizon, "train → valid, h {horizon}");
            let purged = s.len() - tr.len() - va.len() - te.len();
            // Dates are a week apart: a horizon of up to 7 days needs no purged date.
            let want = if horizon > 7 { 1 } else { 0 };
            assert!(purged >= want, "h {horizon}: {purged} purged");
            // Test is the latest ~20 % of the dates whatever the horizon.
            assert_eq!(te.len(), 10, "h {horizon}");
        }
        // Too short for the inner gap: train and validation touch, the test gap stays.
        let short: Vec<(&str, i32, bool)> = (0..14).map(|k| ("a", 7 * k, false)).collect();
        let mut s = set(&short);
        s.horizon_days = 30;
        let (tr, va, te, plan) = s.time_split(0.6, 0.2);
        assert!(!plan.inner_gap);
        assert!(!tr.is_empty() && !va.is_empty() && !te.is_empty());
        let min_te = te.as_of.iter().min().expect("rows");
        assert!(va.as_of.iter().chain(&tr.as_of).all(|d| min_te - d >= 30));
    }

    #[test]
    fn csv_has_header_quoting_labels_split_and_exact_values() {
        let s = set(&[("cust-1", 20_000, false), ("a,\"b\"", 20_007, true)]);
        let mut out = Vec::new();
        let plan = SplitPlan {
            train_to: 20_001,
            valid_from: 20_007,
            valid_to: 20_008,
            test_from: 20_014,
            inner_gap: true,
            purged: true,
        };
        s.write_csv(&mut out, &plan).expect("write to memory");
        let text = String::from_utf8(out).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], csv_header(&s.features).join(","));
        assert_eq!(csv_header(&s.features).len(), FEATURES.len() + 4);
        assert!(lines[0].starts_with("customer_id,as_of,recency_purchase_days,"));
        assert!(lines[0].ends_with(",downgrade_before_decline,label,split"));
        assert!(lines[1].starts_with("cust-1,2024-10-04,"), "{}", lines[1]);
        assert!(lines[1].ends_with(",0,train"));
        assert!(
            lines[2].starts_with("\"a,\"\"b\"\"\",2024-10-11,"),
            "{}",
            lines[2]
        );
        assert!(lines[2].ends_with(",1,valid"));
        // Raw values round-trip exactly.
        let fields: Vec<&str> = lines[1].split(',').collect();
        assert_eq!(fields.len(), FEATURES.len() + 4);
        for (j, f) in fields[2..2 + FEATURES.len()].iter().enumerate() {
            let v: f64 = f.parse().expect("number");
            assert_eq!(v, s.row(0)[j], "{}", FEATURES[j].name);
        }
    }
}
