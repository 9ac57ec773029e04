//! Backtest: replay an event history through the exact streaming engine (same micro-batching and
//! sweep, event-time clock) and collect the alerts it would have sent.

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use churn_events::{AlertData, Event};
use churn_features::registry::Group;

use crate::engine::{AlertOut, Engine, Ingest};
use crate::Error;

/// Counters of a replay, and the alert outcomes it resolved.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ReplayStats {
    pub events: usize,
    pub duplicates: usize,
    pub scores: usize,
    pub sweeps: usize,
    /// Alert outcomes that became known during the replay, in emission order
    /// ([`crate::outcomes`]).
    pub outcomes: Vec<crate::engine::Outcome>,
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
        stats.outcomes.extend(s.outcomes);
        let day = engine.watermark().map(churn_features::day_of);
        if day != last_day {
            last_day = day;
            let s = engine.sweep()?;
            stats.sweeps += 1;
            stats.scores += s.scores.len();
            alerts.extend(s.alerts);
            stats.outcomes.extend(s.outcomes);
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

/// Churners who churned at least this many days after alerting began (the end of the warm-up)
/// form the cohort that lead time is judged on (`backtest --evaluable-after-days`): a churner of
/// the first weeks after the warm-up could not have been warned long before, whatever the model.
pub const EVALUABLE_AFTER_DAYS: i64 = 30;

/// A first alert counts as precise when its customer churns within this many days after it
/// (`backtest --precision-window-days`).
pub const PRECISION_WINDOW_DAYS: i64 = 60;

/// What [`judge`] needs besides the alerts and the labels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JudgeOptions {
    /// When alerting begins: the start of the first event's day plus `pipeline.warmup_days`.
    pub alerting_from: DateTime<Utc>,
    /// See [`EVALUABLE_AFTER_DAYS`].
    pub evaluable_after_days: i64,
    /// See [`PRECISION_WINDOW_DAYS`].
    pub precision_window_days: i64,
    /// The newest event of the history, if known: first alerts of customers who have not churned
    /// and whose precision window reaches past it are counted as `first_alerts_window_open`
    /// (not yet judgeable; they still count as not followed by churn).
    pub history_end: Option<DateTime<Utc>>,
}

impl JudgeOptions {
    /// The default windows ([`EVALUABLE_AFTER_DAYS`], [`PRECISION_WINDOW_DAYS`]).
    pub fn new(alerting_from: DateTime<Utc>) -> Self {
        JudgeOptions {
            alerting_from,
            evaluable_after_days: EVALUABLE_AFTER_DAYS,
            precision_window_days: PRECISION_WINDOW_DAYS,
            history_end: None,
        }
    }

    /// Start of the evaluable cohort: churn at or after this instant.
    pub fn evaluable_from(&self) -> DateTime<Utc> {
        self.alerting_from + Duration::days(self.evaluable_after_days)
    }
}

/// Quantiles of lead time in days (linear interpolation between order statistics, as numpy's
/// default); `None` without a warned churner.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, PartialEq)]
pub struct LeadQuantiles {
    pub p10: Option<f64>,
    pub p25: Option<f64>,
    pub p50: Option<f64>,
    pub p75: Option<f64>,
    pub p90: Option<f64>,
}

impl LeadQuantiles {
    /// Quantiles of `v` (any order; non-finite values are ignored).
    pub fn of(v: &[f64]) -> Self {
        let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        let q = |p: f64| quantile_sorted(&v, p);
        LeadQuantiles {
            p10: q(0.10),
            p25: q(0.25),
            p50: q(0.50),
            p75: q(0.75),
            p90: q(0.90),
        }
    }
}

/// Quantile `p` (0–1) of sorted values, linear between the order statistics at `p · (n − 1)`.
fn quantile_sorted(v: &[f64], p: f64) -> Option<f64> {
    let last = v.len().checked_sub(1)?;
    let pos = p.clamp(0.0, 1.0) * last as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    Some(v[lo] + (v[hi] - v[lo]) * (pos - lo as f64))
}

/// Lead-time figures of one group of customers: all alerted customers (`overall`), or those
/// whose **first** at-risk alert had a given band or recommended action. Every count is of
/// customers grouped by their first at-risk alert, so the groups of `per_band` (and of
/// `per_action`) add up to `overall`.
#[derive(Debug, Clone, Default, serde::Serialize, PartialEq)]
pub struct LeadStats {
    /// Customers whose first at-risk alert is in this group.
    pub customers_alerted: usize,
    /// Evaluable churners whose first at-risk alert is in this group and came strictly before
    /// they churned (`as_of` of the alert < `churn_at`; the alert is computed as of the end of
    /// its day, so: on an earlier day than the churn).
    pub warned: usize,
    /// `warned` / all evaluable churners (the whole cohort in every group, so the groups' shares
    /// add up to the overall share). `None` with an empty cohort.
    pub warned_share: Option<f64>,
    /// Days from the first alert's `as_of` to `churn_at`, over the `warned` churners.
    pub lead_days: LeadQuantiles,
    /// Customers whose first alert came at or after alerting began.
    pub first_alerts: usize,
    /// Of those, customers who churned after their first alert and at most
    /// `precision_window_days` after it.
    pub first_alerts_followed_by_churn: usize,
    /// `first_alerts_followed_by_churn` / `first_alerts`; `None` without first alerts.
    pub first_alert_precision: Option<f64>,
    /// First alerts not followed by churn whose window reaches past the end of the history, so
    /// a churn inside the window could not be seen yet.
    pub first_alerts_window_open: usize,
    /// Customers whose first alert came at or after their churn (post-mortems; any churn date).
    pub late_customers: usize,
    /// Of those, evaluable churners.
    pub late_evaluable: usize,
    /// At-risk alerts (first or not) sent at or after the customer's churn.
    pub alerts_after_churn: usize,
}

/// The lead-time section of a [`Judgement`] (JSON `lead_time`).
#[derive(Debug, Clone, Default, serde::Serialize, PartialEq)]
pub struct LeadTime {
    pub alerting_from: Option<DateTime<Utc>>,
    /// Churn at or after this instant (`alerting_from` + `evaluable_after_days`) makes a churner
    /// evaluable.
    pub evaluable_from: Option<DateTime<Utc>>,
    pub evaluable_after_days: i64,
    pub precision_window_days: i64,
    /// The cohort: churners with `churn_at` ≥ `evaluable_from`.
    pub evaluable_churners: usize,
    /// Evaluable churners who never got an at-risk alert.
    pub evaluable_not_alerted: usize,
    pub overall: LeadStats,
    /// By `risk_band` of the first at-risk alert.
    pub per_band: BTreeMap<String, LeadStats>,
    /// By `recommended_action` of the first at-risk alert.
    pub per_action: BTreeMap<String, LeadStats>,
    /// Days from the first alert to churn of every alerted evaluable churner (negative: the first
    /// alert came after the churn), for the report's histogram.
    #[serde(skip)]
    pub evaluable_lead_days: Vec<f64>,
}

/// How a set of alerts compares with ground truth.
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
pub struct Judgement {
    /// At-risk alerts (CloudEvents type [`churn_events::alert::ALERT_TYPE`]); alerts of other types are
    /// in `other_alerts`.
    pub alerts: usize,
    pub customers_alerted: usize,
    /// Churners whose churn happened at or after alerting began.
    pub churners: usize,
    /// Of `churners`, those whose first at-risk alert came strictly before their churn (the rule
    /// of [`LeadStats::warned`]; before issue 13 an alert up to a day after the churn counted).
    pub true_positives: usize,
    /// Customers first alerted at or after they had already churned (win-back cases, not
    /// predictions), whenever they churned.
    pub late: usize,
    /// Alerted customers who never churned in the period.
    pub false_positives: usize,
    /// true_positives / (true_positives + false_positives).
    pub precision: f64,
    /// true_positives / churners.
    pub recall: f64,
    /// Median days between the first alert and churn, over the `true_positives`.
    pub median_lead_days: Option<f64>,
    /// Alerts of other CloudEvents types (e.g. lapsed customers) by type, and payloads that are
    /// no CloudEvent (`"unreadable"`): not predictions, so not judged.
    pub other_alerts: BTreeMap<String, usize>,
    /// Lead time over the cohort of evaluable churners, overall, per band and per action.
    pub lead_time: LeadTime,
    /// Reasons and actions of first alerts against the labelled churn `cause`, for every
    /// alerted churner (first alert before or after the churn).
    pub reasons: ReasonJudgement,
    /// The same for churners whose first alert came strictly before the churn (warned).
    pub reasons_warned: ReasonJudgement,
}

/// The reason group that names a labelled churn cause of the generator (`None`: `random`,
/// `none`, `dropout` and unknown causes, which no reason can name).
pub fn cause_group(cause: &str) -> Option<Group> {
    match cause {
        "disengaged" => Some(Group::EngagementDecline),
        "detractor" => Some(Group::DetractorFeedback),
        "complaints" => Some(Group::ComplaintsSupport),
        "downgrade" => Some(Group::PlanDowngrade),
        "price" => Some(Group::PriceSensitivity),
        _ => None,
    }
}

/// Reasons of the first alerts of one labelled cause.
#[derive(Debug, Clone, Default, serde::Serialize, PartialEq)]
pub struct CauseReasons {
    /// Churners of this cause in the cohort.
    pub churners: usize,
    /// Their first alert's top reason group is the cause's group.
    pub top_match: usize,
    /// The cause's group is among the first alert's first three reasons.
    pub in_top3: usize,
    /// The first alert's action is in the playbook row of the cause's group.
    pub action_match: usize,
    /// Count of first alerts by top reason group (`none`: no reason).
    pub top_groups: BTreeMap<String, usize>,
}

/// First-alert reasons against labelled causes (`backtest --labels`; issue 18).
#[derive(Debug, Clone, Default, serde::Serialize, PartialEq)]
pub struct ReasonJudgement {
    /// Churners in the cohort whose cause a reason can name (not `random`).
    pub churners: usize,
    pub top_match: usize,
    pub top_match_share: Option<f64>,
    pub in_top3: usize,
    pub in_top3_share: Option<f64>,
    pub action_match: usize,
    pub action_match_share: Option<f64>,
    /// By labelled cause.
    pub per_cause: BTreeMap<String, CauseReasons>,
}

impl ReasonJudgement {
    fn add(&mut self, cause: &str, group: Group, sent: &Sent) {
        let c = self.per_cause.entry(cause.to_string()).or_default();
        let top = sent.groups.first().copied().flatten();
        let top_match = top == Some(group);
        let in_top3 = sent.groups.iter().take(3).any(|g| *g == Some(group));
        let action = crate::policy::playbook(Some(group)).contains(&sent.action.as_str());
        c.churners += 1;
        c.top_match += usize::from(top_match);
        c.in_top3 += usize::from(in_top3);
        c.action_match += usize::from(action);
        *c.top_groups
            .entry(top.map_or("none", Group::as_str).to_string())
            .or_default() += 1;
        self.churners += 1;
        self.top_match += usize::from(top_match);
        self.in_top3 += usize::from(in_top3);
        self.action_match += usize::from(action);
    }

    fn finish(mut self) -> Self {
        self.top_match_share = share(self.top_match, self.churners);
        self.in_top3_share = share(self.in_top3, self.churners);
        self.action_match_share = share(self.action_match, self.churners);
        self
    }

    /// The cause × top reason group confusion table (Markdown), with the matches per cause.
    pub fn table(&self) -> String {
        let mut cols: Vec<&str> = Group::REASONS.iter().map(|g| g.as_str()).collect();
        cols.push("none");
        let pct = |a: usize, b: usize| {
            share(a, b).map_or("–".into(), |v| format!("{:.0} %", v * 100.0))
        };
        let mut out = format!(
            "| cause | churners | {} | top = cause | in top 3 | action = playbook |\n|---|---|{}---|---|---|\n",
            cols.join(" | "),
            "---|".repeat(cols.len())
        );
        for (cause, c) in &self.per_cause {
            let cells: Vec<String> = cols
                .iter()
                .map(|g| c.top_groups.get(*g).copied().unwrap_or(0).to_string())
                .collect();
            out.push_str(&format!(
                "| {cause} | {} | {} | {} | {} | {} |\n",
                c.churners,
                cells.join(" | "),
                pct(c.top_match, c.churners),
                pct(c.in_top3, c.churners),
                pct(c.action_match, c.churners),
            ));
        }
        out.push_str(&format!(
            "| all | {} | {} | {} | {} | {} |\n",
            self.churners,
            vec![""; cols.len()].join(" | "),
            pct(self.top_match, self.churners),
            pct(self.in_top3, self.churners),
            pct(self.action_match, self.churners),
        ));
        out
    }
}

/// The parts of an alert payload [`judge`] reads.
struct Sent {
    as_of: DateTime<Utc>,
    band: String,
    action: String,
    /// Reason groups, in the alert's order (`None`: a reason naming no known group).
    groups: Vec<Option<Group>>,
}

/// Read an alert payload: `Ok` for an at-risk alert, `Err(type)` otherwise.
fn read_alert(payload: &[u8]) -> Result<Sent, String> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        #[serde(rename = "type")]
        ty: String,
        data: serde_json::Value,
    }
    let env: Envelope = serde_json::from_slice(payload).map_err(|_| "unreadable".to_string())?;
    if env.ty != churn_events::alert::ALERT_TYPE {
        return Err(env.ty);
    }
    let d: AlertData = serde_json::from_value(env.data).map_err(|_| "unreadable".to_string())?;
    Ok(Sent {
        as_of: d.as_of,
        band: d.risk_band,
        action: d.recommended_action,
        groups: d.reasons.iter().map(crate::reasons::reason_group).collect(),
    })
}

fn days_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_seconds() as f64 / 86_400.0
}

/// Counters of one group while judging (turned into [`LeadStats`] at the end).
#[derive(Default)]
struct Tally {
    stats: LeadStats,
    leads: Vec<f64>,
}

/// Judge alerts against generator labels (`churned`, `churn_at`).
///
/// Only at-risk alerts (CloudEvents `type` = [`churn_events::alert::ALERT_TYPE`]) are predictions; other
/// types are counted in `other_alerts`. Per customer the first at-risk alert (lowest `as_of`,
/// emission order on ties) decides: warned (strictly before `churn_at`), late (at or after it),
/// or a false positive (never churned). Lead time is judged on the cohort of evaluable churners
/// (`churn_at` ≥ [`JudgeOptions::evaluable_from`]); the older counters count churners from
/// `alerting_from`.
pub fn judge(alerts: &[AlertOut], labels: &[churn_gen::Label], opts: &JudgeOptions) -> Judgement {
    let mut first: BTreeMap<&str, Sent> = BTreeMap::new();
    let mut sent: BTreeMap<&str, Vec<DateTime<Utc>>> = BTreeMap::new();
    let mut other_alerts: BTreeMap<String, usize> = BTreeMap::new();
    let mut n_alerts = 0;
    for a in alerts {
        match read_alert(&a.payload) {
            Ok(s) => {
                n_alerts += 1;
                sent.entry(a.key.as_str()).or_default().push(s.as_of);
                match first.get(a.key.as_str()) {
                    Some(f) if f.as_of <= s.as_of => {}
                    _ => {
                        first.insert(a.key.as_str(), s);
                    }
                }
            }
            Err(ty) => *other_alerts.entry(ty).or_default() += 1,
        }
    }

    let evaluable_from = opts.evaluable_from();
    let window = Duration::days(opts.precision_window_days);
    let (mut tp, mut late, mut fp, mut churners) = (0, 0, 0, 0);
    let mut tp_leads = Vec::new();
    let (mut cohort, mut cohort_not_alerted) = (0, 0);
    let mut overall = Tally::default();
    let mut per_band: BTreeMap<String, Tally> = BTreeMap::new();
    let mut per_action: BTreeMap<String, Tally> = BTreeMap::new();
    let mut evaluable_lead_days = Vec::new();
    let (mut reasons, mut reasons_warned) =
        (ReasonJudgement::default(), ReasonJudgement::default());
    for l in labels {
        let churn_at = if l.churned { l.churn_at } else { None };
        let evaluable = churn_at.is_some_and(|c| c >= evaluable_from);
        if churn_at.is_some_and(|c| c >= opts.alerting_from) {
            churners += 1;
        }
        if evaluable {
            cohort += 1;
        }
        let Some(f) = first.get(l.customer_id.as_str()) else {
            cohort_not_alerted += usize::from(evaluable);
            continue;
        };
        let warned = churn_at.is_some_and(|c| f.as_of < c);
        if let (Some(_), Some(g)) = (churn_at, cause_group(&l.cause)) {
            reasons.add(&l.cause, g, f);
            if warned {
                reasons_warned.add(&l.cause, g, f);
            }
        }
        let is_late = churn_at.is_some_and(|c| f.as_of >= c);
        match churn_at {
            Some(c) if warned => {
                if c >= opts.alerting_from {
                    tp += 1;
                    tp_leads.push(days_between(f.as_of, c));
                }
            }
            Some(_) => late += 1,
            None => fp += 1,
        }
        if let (true, Some(c)) = (evaluable, churn_at) {
            evaluable_lead_days.push(days_between(f.as_of, c));
        }
        let after_churn = churn_at.map_or(0, |c| {
            sent.get(l.customer_id.as_str())
                .map_or(0, |v| v.iter().filter(|&&t| t >= c).count())
        });
        let counted = f.as_of >= opts.alerting_from;
        let followed = churn_at.is_some_and(|c| c > f.as_of && c <= f.as_of + window);
        let open = !followed
            && churn_at.is_none_or(|c| c > f.as_of)
            && opts.history_end.is_some_and(|end| f.as_of + window > end);
        for t in [
            &mut overall,
            per_band.entry(f.band.clone()).or_default(),
            per_action.entry(f.action.clone()).or_default(),
        ] {
            let s = &mut t.stats;
            s.customers_alerted += 1;
            if evaluable && warned {
                s.warned += 1;
                if let Some(c) = churn_at {
                    t.leads.push(days_between(f.as_of, c));
                }
            }
            if counted {
                s.first_alerts += 1;
                s.first_alerts_followed_by_churn += usize::from(followed);
                s.first_alerts_window_open += usize::from(open);
            }
            if is_late {
                s.late_customers += 1;
                s.late_evaluable += usize::from(evaluable);
            }
            s.alerts_after_churn += after_churn;
        }
    }
    let finish = |t: Tally| {
        let mut s = t.stats;
        s.warned_share = share(s.warned, cohort);
        s.first_alert_precision = share(s.first_alerts_followed_by_churn, s.first_alerts);
        s.lead_days = LeadQuantiles::of(&t.leads);
        s
    };
    tp_leads.sort_by(f64::total_cmp);
    let ratio = |a: usize, b: usize| share(a, b).unwrap_or(0.0);
    Judgement {
        alerts: n_alerts,
        customers_alerted: first.len(),
        churners,
        true_positives: tp,
        late,
        false_positives: fp,
        precision: ratio(tp, tp + fp),
        recall: ratio(tp, churners),
        median_lead_days: quantile_sorted(&tp_leads, 0.5),
        other_alerts,
        lead_time: LeadTime {
            alerting_from: Some(opts.alerting_from),
            evaluable_from: Some(evaluable_from),
            evaluable_after_days: opts.evaluable_after_days,
            precision_window_days: opts.precision_window_days,
            evaluable_churners: cohort,
            evaluable_not_alerted: cohort_not_alerted,
            overall: finish(overall),
            per_band: per_band.into_iter().map(|(k, t)| (k, finish(t))).collect(),
            per_action: per_action
                .into_iter()
                .map(|(k, t)| (k, finish(t)))
                .collect(),
            evaluable_lead_days,
        },
        reasons: reasons.finish(),
        reasons_warned: reasons_warned.finish(),
    }
}

fn share(a: usize, b: usize) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

impl Judgement {
    /// Human summary: one line overall, then one per band and per action.
    pub fn summary(&self) -> String {
        let lt = &self.lead_time;
        let mut out = format!(
            "lead time: {} of {} evaluable churners (churned ≥ {} d after alerting began) warned \
             before churn{}; {}; {}; other alert types: {}\n",
            lt.overall.warned,
            lt.evaluable_churners,
            lt.evaluable_after_days,
            opt_pct(lt.overall.warned_share),
            lead_text(&lt.overall.lead_days),
            precision_text(&lt.overall, lt.precision_window_days),
            if self.other_alerts.is_empty() {
                "none".to_string()
            } else {
                self.other_alerts
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        );
        for (what, groups) in [("band", &lt.per_band), ("action", &lt.per_action)] {
            for (name, s) in groups {
                out.push_str(&format!(
                    "  {what} {name}: {} first alerted, {} warned{}; {}; {}\n",
                    s.customers_alerted,
                    s.warned,
                    opt_pct(s.warned_share),
                    lead_text(&s.lead_days),
                    precision_text(s, lt.precision_window_days),
                ));
            }
        }
        for (what, r) in [
            ("every alerted churner", &self.reasons),
            ("churners warned before churn", &self.reasons_warned),
        ] {
            out.push_str(&format!(
                "reasons of first alerts vs labelled cause ({what}, cause random excluded): top \
                 reason group = cause {}{}, cause group in top 3 {}{}, action = playbook row {}{}\n{}",
                r.top_match,
                opt_pct(r.top_match_share),
                r.in_top3,
                opt_pct(r.in_top3_share),
                r.action_match,
                opt_pct(r.action_match_share),
                r.table()
            ));
        }
        out
    }
}

fn opt_pct(v: Option<f64>) -> String {
    v.map_or(String::new(), |v| format!(" ({:.1} %)", v * 100.0))
}

fn lead_text(q: &LeadQuantiles) -> String {
    let f = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.1}"));
    format!(
        "lead days p10/p25/p50/p75/p90 {}/{}/{}/{}/{}",
        f(q.p10),
        f(q.p25),
        f(q.p50),
        f(q.p75),
        f(q.p90)
    )
}

fn precision_text(s: &LeadStats, window: i64) -> String {
    format!(
        "first-alert precision {} ({} of {} churned within {window} d); late: {} customers first \
         alerted after churn, {} alerts after churn",
        s.first_alert_precision
            .map_or("–".to_string(), |p| format!("{p:.3}")),
        s.first_alerts_followed_by_churn,
        s.first_alerts,
        s.late_customers,
        s.alerts_after_churn,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().expect("RFC 3339 instant")
    }

    /// The end of `day` (`YYYY-MM-DD`), where the engine puts an alert's `as_of`.
    fn end(day: &str) -> DateTime<Utc> {
        t(&format!("{day}T23:59:59Z"))
    }

    fn alert(customer: &str, day: &str, band: &str, action: &'static str) -> AlertOut {
        let data = AlertData {
            customer_id: customer.into(),
            risk: 0.7,
            risk_band: band.into(),
            previous_risk: None,
            previous_band: None,
            segment: "loyal".into(),
            reasons: Vec::new(),
            recommended_action: action.into(),
            revenue_at_risk: 10.0,
            model_version: "m".into(),
            as_of: end(day),
            last_event_at: None,
            trigger: "event".into(),
            treatment: churn_events::TREATED.into(),
            experiment: None,
            history_days: None,
            confidence: None,
            score_source: None,
        };
        let ev = churn_events::CloudEvent::alert("urn:test", day, data);
        AlertOut {
            key: customer.into(),
            id: ev.id.clone(),
            payload: serde_json::to_vec(&ev).expect("json"),
            band: churn_model::Band::High,
            action,
            treatment: churn_events::TREATED,
            received: None,
        }
    }

    fn label(customer: &str, churn_at: Option<DateTime<Utc>>) -> churn_gen::Label {
        // Through serde, so that optional fields the generator adds keep their defaults.
        serde_json::from_value(serde_json::json!({
            "customer_id": customer,
            "churned": churn_at.is_some(),
            "churn_at": churn_at,
            "cause": "none",
            "segment_hint": "x",
        }))
        .expect("a label")
    }

    /// Alerting from 2026-03-01, cohort from 2026-03-31, history until 2026-06-30. Customers:
    /// a/b/c/j warned 10/5/30/85 days ahead (evaluable), d alerted on its churn day (late,
    /// evaluable), e warned but churned before the cohort starts, f/g/l never churned (g's
    /// window still open, l alerted before alerting began), h churned unalerted (a lapsed
    /// alert does not count), i churned before alerting began.
    fn fixture() -> (Vec<AlertOut>, Vec<churn_gen::Label>, JudgeOptions) {
        let mut lapsed = alert("h", "2026-05-20", "critical", "win_back");
        let mut ev: serde_json::Value = serde_json::from_slice(&lapsed.payload).expect("json");
        ev["type"] = "com.churnstream.customer.lapsed".into();
        lapsed.payload = serde_json::to_vec(&ev).expect("json");
        let mut unreadable = alert("x", "2026-05-20", "high", "feedback_call");
        unreadable.payload = b"not json".to_vec();
        let alerts = vec![
            alert("l", "2026-02-27", "medium", "engagement_nudge"),
            alert("i", "2026-03-02", "critical", "reactivation_email"),
            alert("e", "2026-03-05", "critical", "loyalty_reward"),
            alert("f", "2026-04-01", "high", "feedback_call"),
            alert("j", "2026-04-01", "high", "feedback_call"),
            alert("d", "2026-04-10", "critical", "reactivation_email"),
            alert("d", "2026-04-20", "critical", "reactivation_email"),
            alert("a", "2026-04-30", "critical", "reactivation_email"),
            alert("c", "2026-05-02", "high", "reactivation_email"),
            alert("a", "2026-05-12", "critical", "reactivation_email"),
            // Emitted first but not the earliest: b's first alert is the high one of 05-15.
            alert("b", "2026-05-18", "critical", "reactivation_email"),
            alert("b", "2026-05-15", "high", "feedback_call"),
            lapsed,
            unreadable,
            alert("g", "2026-06-10", "high", "feedback_call"),
        ];
        let labels = vec![
            label("a", Some(end("2026-05-10"))),
            label("b", Some(end("2026-05-20"))),
            label("c", Some(end("2026-06-01"))),
            label("d", Some(t("2026-04-10T10:00:00Z"))),
            label("e", Some(end("2026-03-10"))),
            label("f", None),
            label("g", None),
            label("h", Some(t("2026-05-05T08:00:00Z"))),
            label("i", Some(t("2026-02-10T12:00:00Z"))),
            label("j", Some(end("2026-06-25"))),
            label("l", None),
            label("z", None),
        ];
        let opts = JudgeOptions {
            history_end: Some(t("2026-06-30T23:00:00Z")),
            ..JudgeOptions::new(t("2026-03-01T00:00:00Z"))
        };
        (alerts, labels, opts)
    }

    fn q(p10: f64, p25: f64, p50: f64, p75: f64, p90: f64) -> LeadQuantiles {
        LeadQuantiles {
            p10: Some(p10),
            p25: Some(p25),
            p50: Some(p50),
            p75: Some(p75),
            p90: Some(p90),
        }
    }

    #[test]
    fn quantiles_interpolate_between_order_statistics() {
        assert_eq!(LeadQuantiles::of(&[]), LeadQuantiles::default());
        assert_eq!(LeadQuantiles::of(&[3.0]), q(3.0, 3.0, 3.0, 3.0, 3.0));
        // numpy.quantile([5, 10, 30, 85], [.1, .25, .5, .75, .9]) = 6.5 8.75 20 43.75 68.5
        assert_eq!(
            LeadQuantiles::of(&[85.0, 5.0, f64::NAN, 30.0, 10.0]),
            q(6.5, 8.75, 20.0, 43.75, 68.5)
        );
    }

    #[test]
    fn judge_counts_warned_late_unalerted_and_false_positives() {
        let (alerts, labels, opts) = fixture();
        let j = judge(&alerts, &labels, &opts);
        // Older counters: churners from alerting start (a b c d e h j), first alert strictly
        // before the churn for a b c e j; d and i were first alerted after churning.
        assert_eq!(j.alerts, 13, "at-risk alerts only");
        assert_eq!(j.customers_alerted, 10);
        assert_eq!(j.churners, 7);
        assert_eq!(j.true_positives, 5);
        assert_eq!(j.late, 2);
        assert_eq!(j.false_positives, 3);
        assert_eq!(j.precision, 5.0 / 8.0);
        assert_eq!(j.recall, 5.0 / 7.0);
        assert_eq!(j.median_lead_days, Some(10.0));
        assert_eq!(
            j.other_alerts,
            BTreeMap::from([
                ("com.churnstream.customer.lapsed".to_string(), 1),
                ("unreadable".to_string(), 1)
            ])
        );

        let lt = &j.lead_time;
        assert_eq!(lt.evaluable_from, Some(t("2026-03-31T00:00:00Z")));
        assert_eq!(lt.evaluable_churners, 6, "a b c d h j");
        assert_eq!(
            lt.evaluable_not_alerted, 1,
            "h: its lapsed alert is no prediction"
        );
        let o = &lt.overall;
        assert_eq!(o.customers_alerted, 10);
        assert_eq!(o.warned, 4, "a b c j");
        assert_eq!(o.warned_share, Some(4.0 / 6.0));
        assert_eq!(o.lead_days, q(6.5, 8.75, 20.0, 43.75, 68.5));
        assert_eq!(
            o.first_alerts, 9,
            "l's first alert came before alerting began"
        );
        assert_eq!(
            o.first_alerts_followed_by_churn, 4,
            "a b c e; j churned 85 d later"
        );
        assert_eq!(o.first_alert_precision, Some(4.0 / 9.0));
        assert_eq!(o.first_alerts_window_open, 1, "g");
        assert_eq!(o.late_customers, 2, "d i");
        assert_eq!(o.late_evaluable, 1, "d");
        assert_eq!(o.alerts_after_churn, 4, "a 1, d 2, i 1");
        let mut sorted = lt.evaluable_lead_days.clone();
        sorted.sort_by(f64::total_cmp);
        let d_late = (t("2026-04-10T10:00:00Z") - end("2026-04-10")).num_seconds() as f64 / 86400.0;
        assert_eq!(sorted, vec![d_late, 5.0, 10.0, 30.0, 85.0]);
    }

    #[test]
    fn judge_splits_by_band_and_action_of_the_first_alert() {
        let (alerts, labels, opts) = fixture();
        let lt = judge(&alerts, &labels, &opts).lead_time;
        assert_eq!(
            lt.per_band.keys().collect::<Vec<_>>(),
            ["critical", "high", "medium"]
        );
        let c = &lt.per_band["critical"];
        assert_eq!(
            (
                c.customers_alerted,
                c.warned,
                c.first_alerts,
                c.first_alerts_followed_by_churn
            ),
            (4, 1, 4, 2),
            "a d e i"
        );
        assert_eq!(c.warned_share, Some(1.0 / 6.0), "of the whole cohort");
        assert_eq!(c.lead_days, q(10.0, 10.0, 10.0, 10.0, 10.0));
        assert_eq!(c.first_alert_precision, Some(0.5));
        assert_eq!(
            (c.late_customers, c.late_evaluable, c.alerts_after_churn),
            (2, 1, 4)
        );
        let h = &lt.per_band["high"];
        assert_eq!((h.customers_alerted, h.warned), (5, 3), "b c f g j");
        assert_eq!(h.lead_days.p10, Some(10.0));
        assert_eq!(h.lead_days.p50, Some(30.0));
        assert_eq!(h.first_alert_precision, Some(0.4));
        assert_eq!(h.first_alerts_window_open, 1);
        assert_eq!((h.late_customers, h.alerts_after_churn), (0, 0));
        let m = &lt.per_band["medium"];
        assert_eq!((m.customers_alerted, m.first_alerts), (1, 0));
        assert_eq!(m.first_alert_precision, None);
        assert_eq!(m.lead_days, LeadQuantiles::default());
        let warned: usize = lt.per_band.values().map(|s| s.warned).sum();
        assert_eq!(warned, lt.overall.warned, "bands add up");

        let r = &lt.per_action["reactivation_email"];
        assert_eq!((r.customers_alerted, r.warned), (4, 2), "a c d i");
        assert_eq!(r.lead_days.p50, Some(20.0));
        assert_eq!(r.first_alert_precision, Some(0.5));
        assert_eq!((r.late_customers, r.alerts_after_churn), (2, 4));
        let f = &lt.per_action["feedback_call"];
        assert_eq!((f.customers_alerted, f.warned), (4, 2), "b f g j");
        assert_eq!(f.lead_days.p50, Some(45.0));
        assert_eq!(f.first_alert_precision, Some(0.25));
        let l = &lt.per_action["loyalty_reward"];
        assert_eq!(
            (l.warned, l.first_alerts_followed_by_churn),
            (0, 1),
            "e: not evaluable"
        );
        assert_eq!(lt.per_action["engagement_nudge"].customers_alerted, 1);
        assert_eq!(lt.per_action.len(), 4);
    }

    #[test]
    fn reasons_are_judged_against_the_labelled_cause() {
        let with_reasons = |customer: &str, day: &str, action: &'static str, groups: &[&str]| {
            let mut a = alert(customer, day, "high", action);
            let mut ev: serde_json::Value = serde_json::from_slice(&a.payload).expect("json");
            ev["data"]["reasons"] = groups
                .iter()
                .map(|g| {
                    serde_json::json!({"feature": "x", "value": 1.0, "contribution": 0.5,
                        "binding": "emotional", "description": "", "group": g})
                })
                .collect();
            a.payload = serde_json::to_vec(&ev).expect("json");
            a
        };
        let alerts = vec![
            with_reasons("a", "2026-04-01", "feedback_call", &["detractor_feedback"]),
            with_reasons(
                "b",
                "2026-04-01",
                "reactivation_email",
                &["engagement_decline", "complaints_support"],
            ),
            with_reasons(
                "c",
                "2026-04-01",
                "engagement_nudge",
                &["engagement_decline"],
            ),
            // d's first alert came after the churn: judged in `reasons`, not in `reasons_warned`.
            with_reasons("d", "2026-05-01", "targeted_offer", &["plan_downgrade"]),
            with_reasons(
                "r",
                "2026-04-01",
                "engagement_nudge",
                &["engagement_decline"],
            ),
            with_reasons(
                "s",
                "2026-04-01",
                "engagement_nudge",
                &["engagement_decline"],
            ),
        ];
        let mut labels = Vec::new();
        for (c, cause, at) in [
            ("a", "detractor", "2026-04-10"),
            ("b", "complaints", "2026-04-10"),
            ("c", "disengaged", "2026-04-10"),
            ("d", "downgrade", "2026-04-20"),
            ("r", "random", "2026-04-10"),
        ] {
            let mut l = label(c, Some(end(at)));
            l.cause = cause.into();
            labels.push(l);
        }
        labels.push(label("s", None));
        let opts = JudgeOptions::new(t("2026-03-01T00:00:00Z"));
        let j = judge(&alerts, &labels, &opts);
        let r = &j.reasons;
        assert_eq!(r.churners, 4, "random and the stayer are not judged");
        assert_eq!((r.top_match, r.in_top3, r.action_match), (3, 4, 3));
        assert_eq!(r.top_match_share, Some(0.75));
        let b = &r.per_cause["complaints"];
        assert_eq!((b.top_match, b.in_top3, b.action_match), (0, 1, 0));
        assert_eq!(b.top_groups["engagement_decline"], 1);
        assert_eq!(j.reasons_warned.churners, 3);
        assert!(!j.reasons_warned.per_cause.contains_key("downgrade"));
        let table = r.table();
        assert!(
            table.contains("| complaints | 1 | 0 | 0 | 0 | 0 | 1 |"),
            "{table}"
        );
        assert!(j.summary().contains("top reason group = cause 3 (75.0 %)"));
        // Alerts of before reason groups: the reason's feature names the group.
        let mut old = alert("a", "2026-04-01", "high", "feedback_call");
        let mut ev: serde_json::Value = serde_json::from_slice(&old.payload).expect("json");
        ev["data"]["reasons"] = serde_json::json!([{"feature": "nps_detractor", "value": 1.0,
            "contribution": 0.5, "binding": "emotional", "description": ""}]);
        old.payload = serde_json::to_vec(&ev).expect("json");
        let j = judge(&[old], &labels, &opts);
        assert_eq!(j.reasons.top_match, 1);
    }

    #[test]
    fn windows_follow_the_options() {
        let (alerts, labels, mut opts) = fixture();
        opts.evaluable_after_days = 0;
        opts.precision_window_days = 90;
        let lt = judge(&alerts, &labels, &opts).lead_time;
        assert_eq!(lt.evaluable_churners, 7, "e joins the cohort");
        assert_eq!(lt.overall.warned, 5);
        assert_eq!(
            lt.overall.first_alerts_followed_by_churn, 5,
            "j churned within 90 d"
        );
        assert_eq!(lt.overall.lead_days.p50, Some(10.0));
        let j = judge(&alerts, &labels, &opts);
        let text = j.summary();
        assert!(
            text.starts_with("lead time: 5 of 7 evaluable churners"),
            "{text}"
        );
        assert!(
            text.contains("  band critical: 4 first alerted, 2 warned"),
            "{text}"
        );
        let json = serde_json::to_value(&j).expect("json");
        assert_eq!(json["lead_time"]["overall"]["warned"], 5);
        assert_eq!(
            json["lead_time"]["per_action"]["feedback_call"]["lead_days"]["p50"],
            45.0
        );
        assert!(json["lead_time"].get("evaluable_lead_days").is_none());
    }

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
