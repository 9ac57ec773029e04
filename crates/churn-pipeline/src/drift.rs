//! Drift report (`churnstream drift`): the population stability index of every feature and of
//! the score on dates of a history, against the training population stored in the model
//! artifact ([`churn_model::drift::DriftReference`]).
//!
//! The population on a date is the training set's observation rule on that date
//! ([`churn_features::training::observe`]: customers active within the model's
//! `active_within_days`), with the features of the one feature code path and the model's own
//! catalog; scores are the served scores of those rows (`train::ServedScore`: the model, or the
//! cold-start table for short histories), as in the reference.

use chrono::NaiveDate;
use churn_events::Event;
use churn_model::drift::PSI_ALERT;
use churn_model::ModelArtifact;
use serde::Serialize;

use crate::Error;

/// PSI of one feature on one date.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeatureDrift {
    pub feature: String,
    pub psi: f64,
}

/// The drift of the population on one date.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DateDrift {
    pub as_of: NaiveDate,
    /// Customers in the population (active within `active_within_days`).
    pub rows: usize,
    /// PSI of the model's score.
    pub score_psi: Option<f64>,
    /// Every feature's PSI, largest first.
    pub features: Vec<FeatureDrift>,
    /// Features at or above [`PSI_ALERT`].
    pub drifted: Vec<String>,
}

/// What `churnstream drift` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub model_version: String,
    /// Observations the reference summarises (the model's train and validation rows).
    pub reference_rows: usize,
    /// PSI at or above which a distribution counts as drifted.
    pub psi_alert: f64,
    pub dates: Vec<DateDrift>,
}

/// Drift of `events`' population every `every_days` days from the first date with
/// `warmup_days` of history before it, and on the last day.
pub fn report(
    events: &[Event],
    model: &ModelArtifact,
    every_days: i32,
    warmup_days: i32,
) -> Result<Report, Error> {
    let Some(reference) = model.drift_reference.as_ref() else {
        return Err(Error::Config {
            path: "model".into(),
            message: format!(
                "model {} has no drift reference (trained before drift monitoring): retrain it with `churnstream train`",
                model.model_version
            ),
        });
    };
    let features = crate::train::feature_set_of(model)?;
    let active_within = crate::train::recorded_plan(model).map_or(30, |p| p.active_within_days);
    let customers = churn_features::rollups_from_events_with(events, &features);
    let first = customers.iter().filter_map(|(_, c)| c.first_day).min();
    let last = customers.iter().filter_map(|(_, c)| c.last_day()).max();
    let (Some(first), Some(last)) = (first, last) else {
        return Ok(Report {
            model_version: model.model_version.clone(),
            reference_rows: reference.rows,
            psi_alert: PSI_ALERT,
            dates: Vec::new(),
        });
    };
    let mut dates: Vec<i32> = (first + warmup_days..=last)
        .step_by(every_days.max(1) as usize)
        .collect();
    if dates.last() != Some(&last) {
        dates.push(last);
    }
    let names = features.names();
    let mut out = Vec::with_capacity(dates.len());
    let mut input = Vec::with_capacity(features.len());
    // The served rule (the cold-start table for short histories), as the reference was built.
    let served = crate::train::ServedScore::of(model);
    for as_of in dates {
        let mut columns: Vec<Vec<f64>> = vec![Vec::new(); features.len()];
        let mut scores = Vec::new();
        churn_features::training::observe(
            &customers,
            as_of,
            &features,
            active_within,
            |_, row| {
                for (c, v) in columns.iter_mut().zip(row) {
                    c.push(*v);
                }
                features.model_input(row, &mut input);
                scores.push(served.score(model, row, &input).risk);
            },
        )?;
        let mut fd: Vec<FeatureDrift> = columns
            .iter()
            .zip(&reference.features)
            .zip(names.iter())
            .filter_map(|((col, r), name)| {
                r.psi(col).map(|psi| FeatureDrift {
                    feature: name.to_string(),
                    psi,
                })
            })
            .collect();
        fd.sort_by(|a, b| b.psi.total_cmp(&a.psi));
        out.push(DateDrift {
            as_of: churn_features::day_start(as_of).date_naive(),
            rows: scores.len(),
            score_psi: reference.score.psi(&scores),
            drifted: fd
                .iter()
                .filter(|f| f.psi >= PSI_ALERT)
                .map(|f| f.feature.clone())
                .collect(),
            features: fd,
        });
    }
    Ok(Report {
        model_version: model.model_version.clone(),
        reference_rows: reference.rows,
        psi_alert: PSI_ALERT,
        dates: out,
    })
}

impl Report {
    /// One line per date: rows, score PSI, the three largest feature PSIs (stderr of
    /// `churnstream drift`).
    pub fn summary(&self) -> String {
        let mut s = format!(
            "Drift of {} against its training population ({} rows; PSI ≥ {} = drifted)\n",
            self.model_version, self.reference_rows, self.psi_alert
        );
        for d in &self.dates {
            let top: Vec<String> = d
                .features
                .iter()
                .take(3)
                .map(|f| format!("{} {:.3}", f.feature, f.psi))
                .collect();
            s.push_str(&format!(
                "{}  rows {:>6}  score PSI {:>6}  drifted {:>2}  top: {}\n",
                d.as_of,
                d.rows,
                d.score_psi.map_or("–".into(), |p| format!("{p:.3}")),
                d.drifted.len(),
                top.join(", ")
            ));
        }
        s
    }
}
