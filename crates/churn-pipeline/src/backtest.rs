//! Backtest: replay an event history through the exact streaming engine (same micro-batching and
//! sweep, event-time clock) and collect the alerts it would have sent.

use std::time::Instant;

use churn_events::Event;

use crate::engine::{AlertOut, Engine, Ingest};
use crate::Error;

/// Counters of a replay.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ReplayStats {
    pub events: usize,
    pub duplicates: usize,
    pub scores: usize,
    pub sweeps: usize,
}

/// Feed `events` (in order) in micro-batches of at most `batch` events that never span two
/// event-time days, scoring after each (the engine scores each customer when its day closes,
/// so the batch size does not change what is alerted); run the sweep (expiry) whenever the
/// watermark enters a new day. Returns every alert in emission order.
pub fn replay(
    engine: &mut Engine,
    events: &[Event],
    batch: usize,
) -> Result<(Vec<AlertOut>, ReplayStats), Error> {
    let mut alerts = Vec::new();
    let mut stats = ReplayStats::default();
    let mut last_day = None;
    for chunk in day_batches(events, batch.max(1)) {
        let now = Instant::now();
        for ev in chunk {
            stats.events += 1;
            if engine.ingest_event(ev, 0, now) == Ingest::Duplicate {
                stats.duplicates += 1;
            }
        }
        let s = engine.score_dirty()?;
        stats.scores += s.scores.len();
        alerts.extend(s.alerts);
        let day = engine.watermark().map(churn_features::day_of);
        if day != last_day {
            last_day = day;
            let s = engine.sweep()?;
            stats.sweeps += 1;
            stats.scores += s.scores.len();
            alerts.extend(s.alerts);
        }
    }
    Ok((alerts, stats))
}

/// Consecutive slices of at most `max` events, each within one UTC day of `occurred_at`.
fn day_batches(events: &[Event], max: usize) -> impl Iterator<Item = &[Event]> {
    let mut rest = events;
    std::iter::from_fn(move || {
        let first = rest.first()?;
        let day = churn_features::day_of(first.occurred_at);
        let n = rest
            .iter()
            .take(max)
            .position(|e| churn_features::day_of(e.occurred_at) != day)
            .unwrap_or(rest.len().min(max));
        let (head, tail) = rest.split_at(n.max(1));
        rest = tail;
        Some(head)
    })
}

/// How a set of alerts compares with ground truth.
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
pub struct Judgement {
    pub alerts: usize,
    pub customers_alerted: usize,
    /// Churners whose churn happened at or after `evaluable_from`.
    pub churners: usize,
    /// Alerted before churning: churned at or after (first alert − 1 day).
    pub true_positives: usize,
    /// Customers first alerted more than a day after they had already churned (win-back cases,
    /// not predictions; mostly customers who churned before alerting started).
    pub late: usize,
    /// Alerted customers who never churned in the period.
    pub false_positives: usize,
    /// true_positives / (true_positives + false_positives).
    pub precision: f64,
    /// Churners (after `evaluable_from`) alerted before churning / churners.
    pub recall: f64,
    /// Median days between the first alert and churn, for caught churners.
    pub median_lead_days: Option<f64>,
}

/// Judge alerts against generator labels. Only churn at or after `evaluable_from` (the end of
/// the warm-up, when alerting starts) can be predicted, so recall counts only those churners.
pub fn judge(
    alerts: &[AlertOut],
    labels: &[churn_gen::Label],
    evaluable_from: chrono::DateTime<chrono::Utc>,
) -> Judgement {
    use std::collections::BTreeMap;
    let mut first: BTreeMap<&str, chrono::DateTime<chrono::Utc>> = BTreeMap::new();
    for a in alerts {
        let as_of =
            serde_json::from_slice::<churn_events::CloudEvent<churn_events::AlertData>>(&a.payload)
                .map(|e| e.data.as_of)
                .ok();
        if let Some(t) = as_of {
            first.entry(a.key.as_str()).or_insert(t);
        }
    }
    let (mut tp, mut late, mut fp, mut churners) = (0, 0, 0, 0);
    let mut leads = Vec::new();
    for l in labels {
        let alerted = first.get(l.customer_id.as_str());
        match (l.churned, l.churn_at) {
            (true, Some(c)) => {
                if c >= evaluable_from {
                    churners += 1;
                }
                if let Some(t) = alerted {
                    if c >= *t - chrono::Duration::days(1) {
                        if c >= evaluable_from {
                            tp += 1;
                        }
                        leads.push((c - *t).num_hours() as f64 / 24.0);
                    } else {
                        late += 1;
                    }
                }
            }
            _ => {
                if alerted.is_some() {
                    fp += 1;
                }
            }
        }
    }
    leads.sort_by(f64::total_cmp);
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    Judgement {
        alerts: alerts.len(),
        customers_alerted: first.len(),
        churners,
        true_positives: tp,
        late,
        false_positives: fp,
        precision: ratio(tp, tp + fp),
        recall: ratio(tp, churners),
        median_lead_days: leads.get(leads.len() / 2).copied(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_never_span_two_days_nor_exceed_the_size() {
        let pop = churn_gen::generate(&churn_gen::GenConfig {
            customers: 30,
            days: 20,
            seed: 1,
            ..Default::default()
        });
        let mut total = 0;
        let mut batches = 0;
        for b in day_batches(&pop.events, 50) {
            assert!(!b.is_empty() && b.len() <= 50);
            let d = churn_features::day_of(b[0].occurred_at);
            assert!(b.iter().all(|e| churn_features::day_of(e.occurred_at) == d));
            total += b.len();
            batches += 1;
        }
        assert_eq!(total, pop.events.len());
        assert!(batches >= 20, "at least one batch per day");
    }
}
