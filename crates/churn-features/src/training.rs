//! Training-set builder: observations at many dates, labels under the configured churn
//! definition, and a split by time (never random across time).
//!
//! Features of an observation at day `A` come from [`feature_frame`] as of `A` (rollup days
//! `<= A` only); its label looks strictly after `A`. A customer is observed at `A` only if they
//! had started before `A` and were still active (some event within the inactivity window), so
//! customers who already churned are not counted again.

use std::io::Write;

use serde::{Deserialize, Serialize};

use crate::features::{feature_frame, FeatureMatrix, RollupFrames};
use crate::registry::FEATURES;
use crate::rollup::{day_start, CustomerRollups};
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
        let mut future = c
            .days()
            .skip_while(|r| r.day <= as_of)
            .take_while(|r| r.day <= as_of + h);
        match self {
            ChurnDefinition::Inactivity { .. } => future.next().is_none(),
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

    /// First observation day of the validation and of the test part of
    /// [`time_split`](Self::time_split)`(train, valid)`.
    pub fn split_boundaries(&self, train: f64, valid: f64) -> (i32, i32) {
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
        (b1, b2)
    }

    /// Split by observation date: the earliest `train` fraction of dates, then `valid`, the rest
    /// test. Returns the three sets and the two boundary days.
    pub fn time_split(
        &self,
        train: f64,
        valid: f64,
    ) -> (TrainingSet, TrainingSet, TrainingSet, i32, i32) {
        let (b1, b2) = self.split_boundaries(train, valid);
        (
            self.between(i32::MIN, b1),
            self.between(b1, b2),
            self.between(b2, i32::MAX),
            b1,
            b2,
        )
    }
}

/// The part of the time split an observation belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    Train,
    Valid,
    Test,
}

impl Split {
    /// Split of an observation at `as_of`, given the boundaries from
    /// [`TrainingSet::split_boundaries`].
    pub fn of(as_of: i32, (valid_from, test_from): (i32, i32)) -> Split {
        if as_of >= test_from {
            Split::Test
        } else if as_of >= valid_from {
            Split::Valid
        } else {
            Split::Train
        }
    }

    /// `"train"`, `"valid"` or `"test"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Valid => "valid",
            Split::Test => "test",
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
pub fn csv_header() -> Vec<&'static str> {
    let mut h = vec!["customer_id", "as_of"];
    h.extend(FEATURES.iter().map(|d| d.name));
    h.extend(["label", "split"]);
    h
}

impl TrainingSet {
    /// Write the set as CSV, one row per customer × observation date: `customer_id`, `as_of`
    /// (`YYYY-MM-DD`; features use events up to the end of that UTC day, the label looks at
    /// the days after it), the raw features (before the registry's transforms and the model's
    /// scaling; shortest round-trip decimal form, so values are exact), `label` (1 = churned
    /// within the horizon) and `split` (`train`, `valid`, `test` per `boundaries`, see
    /// [`split_boundaries`](Self::split_boundaries)).
    pub fn write_csv(&self, mut w: impl Write, boundaries: (i32, i32)) -> std::io::Result<()> {
        writeln!(w, "{}", csv_header().join(","))?;
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
            line.push_str(Split::of(self.as_of[i], boundaries).as_str());
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
    let recency_col = FEATURES
        .iter()
        .position(|d| d.name == "recency_activity_days")
        .unwrap_or(1);
    let mut set = TrainingSet::default();
    for &as_of in &dates {
        let frames = RollupFrames::build(customers.iter().map(|(_, c)| c), as_of)?;
        let m = FeatureMatrix::from_frame(&feature_frame(&frames)?)?;
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
        assert_eq!(b, (31, 38));
        let (tr, va, te, b1, b2) = s.time_split(0.6, 0.2);
        assert_eq!((b1, b2), b);
        for (part, want) in [(tr, Split::Train), (va, Split::Valid), (te, Split::Test)] {
            assert!(!part.is_empty());
            assert!(
                part.as_of.iter().all(|&d| Split::of(d, b) == want),
                "{want:?}"
            );
        }
    }

    #[test]
    fn csv_has_header_quoting_labels_split_and_exact_values() {
        let s = set(&[("cust-1", 20_000, false), ("a,\"b\"", 20_007, true)]);
        let mut out = Vec::new();
        s.write_csv(&mut out, (20_007, 20_014))
            .expect("write to memory");
        let text = String::from_utf8(out).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], csv_header().join(","));
        assert_eq!(csv_header().len(), FEATURES.len() + 4);
        assert!(lines[0].starts_with("customer_id,as_of,recency_purchase_days,"));
        assert!(lines[0].ends_with(",nps_trend_90d,label,split"));
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
