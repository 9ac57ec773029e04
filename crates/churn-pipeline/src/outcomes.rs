//! Measured retention lift (`churnstream outcomes`): how often alerted customers churned within
//! the horizon, treated vs holdout, overall, per band and per recommended action.
//!
//! The outcomes are the engine's own ([`crate::engine::Outcome`], the same ones the live
//! pipeline counts in `churn_business_alert_outcomes_total`): one per customer alert episode, judged
//! by the model's churn definition on the customer's own events. Lift is the holdout's churn
//! rate minus the treated one's (churners saved per alerted customer), with a 95 % Wald
//! interval; relative lift is 1 − treated rate / holdout rate, with a 95 % interval from the
//! log risk ratio (Katz). Episodes whose horizon had not passed when the history ended are not
//! outcomes yet and are counted as `pending`.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::engine::{Engine, Outcome};
use crate::Error;

/// z of a two-sided 95 % interval.
const Z95: f64 = 1.959_963_984_540_054;

/// Churn after alerts in one group.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Arm {
    /// Alerted customers (episodes) with a known outcome.
    pub alerted: usize,
    /// Of those, customers who met the churn definition within the horizon.
    pub churned: usize,
    /// churned / alerted (`None` without alerted customers).
    pub churn_rate: Option<f64>,
}

impl Arm {
    fn add(&mut self, churned: bool) {
        self.alerted += 1;
        self.churned += usize::from(churned);
        self.churn_rate = Some(self.churned as f64 / self.alerted as f64);
    }
}

/// Treated vs holdout over one slice of the alerts.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Comparison {
    pub treated: Arm,
    pub holdout: Arm,
    /// Holdout churn rate − treated churn rate: churners saved per alerted customer.
    pub lift: Option<f64>,
    /// 95 % interval of `lift` (Wald, unpooled).
    pub lift_ci95: Option<(f64, f64)>,
    /// 1 − treated churn rate / holdout churn rate: the share of would-be churners saved.
    pub relative_lift: Option<f64>,
    /// 95 % interval of `relative_lift` (Katz log risk ratio).
    pub relative_lift_ci95: Option<(f64, f64)>,
}

impl Comparison {
    fn add(&mut self, o: &Outcome) {
        if o.holdout {
            self.holdout.add(o.churned);
        } else {
            self.treated.add(o.churned);
        }
    }

    fn finish(&mut self) {
        let (t, h) = (self.treated, self.holdout);
        if t.alerted == 0 || h.alerted == 0 {
            return;
        }
        let (pt, ph) = (
            t.churned as f64 / t.alerted as f64,
            h.churned as f64 / h.alerted as f64,
        );
        let lift = ph - pt;
        let se = (pt * (1.0 - pt) / t.alerted as f64 + ph * (1.0 - ph) / h.alerted as f64).sqrt();
        self.lift = Some(lift);
        self.lift_ci95 = Some((lift - Z95 * se, lift + Z95 * se));
        if h.churned > 0 {
            self.relative_lift = Some(1.0 - pt / ph);
        }
        if t.churned > 0 && h.churned > 0 {
            let log_rr = (pt / ph).ln();
            let se = (1.0 / t.churned as f64 - 1.0 / t.alerted as f64 + 1.0 / h.churned as f64
                - 1.0 / h.alerted as f64)
                .max(0.0)
                .sqrt();
            let (lo, hi) = ((log_rr - Z95 * se).exp(), (log_rr + Z95 * se).exp());
            self.relative_lift_ci95 = Some((1.0 - hi, 1.0 - lo));
        }
    }
}

/// Replay `events` through `engine` ([`crate::backtest::replay`], batches of at most `batch`
/// events) and report the alert outcomes it resolved.
pub fn measure(
    engine: &mut Engine,
    events: &[churn_events::Event],
    batch: usize,
) -> Result<Report, Error> {
    let (_, stats) = crate::backtest::replay(engine, events, batch)?;
    Ok(Report::of(
        &stats.outcomes,
        engine.pending_outcomes(),
        engine.outcome_definition(),
        engine.experiment(),
    ))
}

/// What `churnstream outcomes` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The churn definition outcomes were judged by (the model's).
    pub churn_definition: churn_features::training::ChurnDefinition,
    /// `alerts.holdout_share` and `alerts.holdout_salt` of the replay.
    pub holdout_share: f64,
    pub salt: String,
    pub overall: Comparison,
    pub by_band: BTreeMap<String, Comparison>,
    pub by_action: BTreeMap<String, Comparison>,
    /// Alert episodes whose horizon had not passed when the history ended (no outcome yet).
    pub pending: usize,
}

impl Report {
    /// Aggregate `outcomes` (one per alert episode).
    pub fn of(
        outcomes: &[Outcome],
        pending: usize,
        churn_definition: churn_features::training::ChurnDefinition,
        experiment: &churn_events::Experiment,
    ) -> Self {
        let mut overall = Comparison::default();
        let mut by_band: BTreeMap<String, Comparison> = BTreeMap::new();
        let mut by_action: BTreeMap<String, Comparison> = BTreeMap::new();
        for o in outcomes {
            overall.add(o);
            by_band.entry(o.band.as_str().into()).or_default().add(o);
            by_action.entry(o.action.into()).or_default().add(o);
        }
        overall.finish();
        by_band.values_mut().for_each(Comparison::finish);
        by_action.values_mut().for_each(Comparison::finish);
        Report {
            churn_definition,
            holdout_share: experiment.holdout_share,
            salt: experiment.salt.clone(),
            overall,
            by_band,
            by_action,
            pending,
        }
    }

    /// A plain-text table (stderr of `churnstream outcomes`).
    pub fn summary(&self) -> String {
        let pct = |x: Option<f64>| x.map_or("–".to_string(), |v| format!("{:.1} %", 100.0 * v));
        let ci = |x: Option<(f64, f64)>| {
            x.map_or("–".to_string(), |(a, b)| {
                format!("[{:.1}, {:.1}] %", 100.0 * a, 100.0 * b)
            })
        };
        let row = |name: &str, c: &Comparison| {
            format!(
                "{name:<20} {:>5}/{:<5} {:>8}  {:>5}/{:<5} {:>8}  {:>8} {:>18}  {:>8} {:>18}\n",
                c.treated.churned,
                c.treated.alerted,
                pct(c.treated.churn_rate),
                c.holdout.churned,
                c.holdout.alerted,
                pct(c.holdout.churn_rate),
                pct(c.lift),
                ci(c.lift_ci95),
                pct(c.relative_lift),
                ci(c.relative_lift_ci95),
            )
        };
        let mut s = format!(
            "Outcomes of alerted customers (holdout share {}, salt {:?}; churn within {} days of the first alert of an episode)\n",
            self.holdout_share,
            self.salt,
            self.churn_definition.horizon()
        );
        s.push_str(&format!(
            "{:<20} {:>20}  {:>20}  {:>27}  {:>27}\n",
            "", "treated churned", "holdout churned", "lift (95 % CI)", "relative lift (95 % CI)"
        ));
        s.push_str(&row("overall", &self.overall));
        for (k, c) in &self.by_band {
            s.push_str(&row(&format!("band {k}"), c));
        }
        for (k, c) in &self.by_action {
            s.push_str(&row(k, c));
        }
        if self.holdout_share <= 0.0 {
            s.push_str("No holdout group (alerts.holdout_share = 0): lift cannot be measured.\n");
        }
        s.push_str(&format!(
            "{} alert episodes had no outcome yet at the end of the history.\n",
            self.pending
        ));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use churn_model::Band;

    fn outcome(holdout: bool, churned: bool, band: Band) -> Outcome {
        Outcome {
            customer_id: "c".into(),
            alert_day: 1,
            band,
            action: "feedback_call",
            holdout,
            churned,
        }
    }

    #[test]
    fn lift_and_its_intervals_follow_the_two_arms() {
        let mut v = Vec::new();
        // Treated: 30 of 100 churn; holdout: 50 of 100.
        for i in 0..100 {
            v.push(outcome(false, i < 30, Band::High));
            v.push(outcome(true, i < 50, Band::Critical));
        }
        let e = churn_events::Experiment {
            holdout_share: 0.5,
            salt: "s".into(),
        };
        let def = churn_features::training::ChurnDefinition::default();
        let r = Report::of(&v, 3, def, &e);
        let c = r.overall;
        assert_eq!((c.treated.churned, c.treated.alerted), (30, 100));
        assert_eq!((c.holdout.churned, c.holdout.alerted), (50, 100));
        let lift = c.lift.expect("lift");
        assert!((lift - 0.2).abs() < 1e-12);
        // se = sqrt(.3·.7/100 + .5·.5/100) = 0.0678
        let (lo, hi) = c.lift_ci95.expect("ci");
        assert!((hi - lo - 2.0 * Z95 * 0.067_823).abs() < 1e-4, "{lo} {hi}");
        assert!((c.relative_lift.expect("rel") - 0.4).abs() < 1e-12);
        let (lo, hi) = c.relative_lift_ci95.expect("rel ci");
        assert!(lo < 0.4 && 0.4 < hi && lo > 0.0, "{lo} {hi}");
        // Per band: each band has one arm only, so no lift there.
        assert!(r.by_band["high"].lift.is_none());
        assert_eq!(r.by_band["critical"].holdout.alerted, 100);
        assert_eq!(r.pending, 3);
        assert!(r.summary().contains("overall"));
    }

    #[test]
    fn without_a_holdout_there_is_no_lift() {
        let v = vec![outcome(false, true, Band::High)];
        let e = churn_events::Experiment {
            holdout_share: 0.0,
            salt: "s".into(),
        };
        let r = Report::of(&v, 0, Default::default(), &e);
        assert!(r.overall.lift.is_none());
        assert_eq!(r.overall.treated.churn_rate, Some(1.0));
        assert!(r.summary().contains("cannot be measured"));
    }
}
