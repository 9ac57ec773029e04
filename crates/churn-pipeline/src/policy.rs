//! Alert policy: risk bands with hysteresis and cooldown, RFM segment, recommended action and
//! revenue at risk. Pure functions of a customer's raw features and score history.
//!
//! Recommended action: the retention playbook, keyed by the alert's **top reason group** (so the
//! action cannot disagree with the reason it is sent with):
//!
//! | top reason group | action |
//! |---|---|
//! | `detractor_feedback` | `feedback_call` (personal follow-up) |
//! | `complaints_support` | `service_recovery` |
//! | `price_sensitivity`, `plan_downgrade` | `targeted_offer` |
//! | `engagement_decline`, `spend_decline`, `tenure_new_customer`, none | high-value (expected revenue over the horizon ≥ `alerts.high_value_revenue`) → `loyalty_reward`; dormant (no login for 14+ days or no activity for 7+ days) → `reactivation_email` (explaining unused features); else (passive with falling activity: "satisfied is not loyal") → `engagement_nudge` |

use churn_features::registry::{Group, FEATURES};
use churn_model::{Band, Bands};

use crate::config::AlertConfig;

/// Index of a registry feature (panics only on a typo in this file; covered by tests).
fn idx(name: &str) -> usize {
    FEATURES
        .iter()
        .position(|d| d.name == name)
        .unwrap_or(usize::MAX)
}

/// Feature positions the policy reads.
#[derive(Debug, Clone, Copy)]
pub struct PolicyColumns {
    recency: usize,
    days_since_login: usize,
    purchases_90d: usize,
    revenue_90d: usize,
    tenure: usize,
    mrr: usize,
}

impl Default for PolicyColumns {
    fn default() -> Self {
        PolicyColumns {
            recency: idx("recency_activity_days"),
            days_since_login: idx("days_since_login"),
            purchases_90d: idx("purchases_90d"),
            revenue_90d: idx("revenue_90d"),
            tenure: idx("tenure_days"),
            mrr: idx("mrr"),
        }
    }
}

impl PolicyColumns {
    /// Current MRR (the latest subscription event's) of a raw feature row.
    pub fn mrr(&self, raw: &[f64]) -> f64 {
        raw[self.mrr]
    }
}

/// RFM-style segment from raw features.
pub fn segment(cols: &PolicyColumns, raw: &[f64]) -> &'static str {
    let r = raw[cols.recency];
    let f = raw[cols.purchases_90d];
    let m = raw[cols.revenue_90d] + 3.0 * raw[cols.mrr];
    let tenure = raw[cols.tenure];
    if r <= 7.0 && f >= 4.0 && m >= 300.0 {
        "champions"
    } else if r <= 14.0 && f >= 2.0 {
        "loyal"
    } else if r <= 14.0 && tenure <= 60.0 {
        "promising"
    } else if r <= 30.0 && f >= 1.0 {
        "needs_attention"
    } else if r <= 30.0 {
        "at_risk"
    } else if r <= 90.0 {
        "hibernating"
    } else {
        "lost"
    }
}

/// Expected revenue over `horizon_days` from recent order value and current MRR.
pub fn expected_revenue(cols: &PolicyColumns, raw: &[f64], horizon_days: f64) -> f64 {
    raw[cols.revenue_90d] * horizon_days / 90.0 + raw[cols.mrr] * horizon_days / 30.0
}

/// Recommended action for an alert whose top reason group is `top` (the playbook of the module
/// docs).
pub fn action(
    cols: &PolicyColumns,
    cfg: &AlertConfig,
    raw: &[f64],
    top: Option<Group>,
) -> &'static str {
    match top {
        Some(Group::DetractorFeedback) => "feedback_call",
        Some(Group::ComplaintsSupport) => "service_recovery",
        Some(Group::PriceSensitivity | Group::PlanDowngrade) => "targeted_offer",
        Some(
            Group::EngagementDecline
            | Group::SpendDecline
            | Group::TenureNewCustomer
            | Group::Context,
        )
        | None => {
            if expected_revenue(cols, raw, cfg.horizon_days) >= cfg.high_value_revenue {
                "loyalty_reward"
            } else if raw[cols.days_since_login] >= 14.0 || raw[cols.recency] >= 7.0 {
                "reactivation_email"
            } else {
                "engagement_nudge"
            }
        }
    }
}

/// The playbook's actions for a reason group (what [`action`] may answer when `group` is the
/// top reason), for judging actions against labelled causes.
pub fn playbook(group: Option<Group>) -> &'static [&'static str] {
    match group {
        Some(Group::DetractorFeedback) => &["feedback_call"],
        Some(Group::ComplaintsSupport) => &["service_recovery"],
        Some(Group::PriceSensitivity | Group::PlanDowngrade) => &["targeted_offer"],
        _ => &["loyalty_reward", "reactivation_email", "engagement_nudge"],
    }
}

/// Parse a band name.
pub fn parse_band(s: &str) -> Option<Band> {
    Band::ALL.into_iter().find(|b| b.as_str() == s)
}

/// Sticky band with hysteresis: rises immediately, falls only once `p` is below the current
/// band's lower edge × (1 − `margin`) (a relative margin, so it works at any probability scale).
pub fn next_band(bands: &Bands, current: Band, p: f64, margin: f64) -> Band {
    let raw = bands.band(p);
    if raw >= current || p < bands.lower_edge(current) * (1.0 - margin) {
        raw
    } else {
        current
    }
}

/// Every recommended action of an at-risk alert (the metrics' `action` label values); a
/// [`PendingOutcome`] stores its index.
pub use churn_metrics::ALERT_ACTIONS as ACTIONS;

/// The index of `b` in [`Band::ALL`] (how state records and [`PackedOutcome`] store a band).
pub fn band_index(b: Band) -> u8 {
    Band::ALL.iter().position(|x| *x == b).unwrap_or(0) as u8
}

/// The index of `action` in [`ACTIONS`] (0 for an action not listed, which `action` never
/// returns).
pub fn action_index(action: &str) -> u8 {
    ACTIONS.iter().position(|a| *a == action).unwrap_or(0) as u8
}

/// The first at-risk alert of a customer whose outcome is not known yet: did the customer meet
/// the model's churn definition within its horizon after the alert day? Resolved (and cleared)
/// by the first scoring on or after `day` + the definition's horizon; alerts in between
/// (escalations, re-alerts) do not restart it. Part of the customer's state record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PendingOutcome {
    /// The alert's day.
    pub day: i32,
    /// The alert's band.
    pub band: Band,
    /// Index of the alert's action in [`ACTIONS`].
    pub action: u8,
    /// The customer was in the holdout group (the alert was not delivered).
    pub holdout: bool,
}

/// A [`PendingOutcome`] (or none) in 5 bytes with alignment 1, so that the alert memory — and
/// with it every tracked customer — stays its size (`size_budget` test): the day's bytes, then
/// one byte `1hAAABB` (present, holdout, action index, band index); all zero = none. Serialized
/// as `Option<PendingOutcome>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(from = "Option<PendingOutcome>", into = "Option<PendingOutcome>")]
pub struct PackedOutcome {
    day: [u8; 4],
    meta: u8,
}

impl PackedOutcome {
    const PRESENT: u8 = 0x80;
    const HOLDOUT: u8 = 0x20;

    /// The pending outcome, if any.
    pub fn get(self) -> Option<PendingOutcome> {
        Option::from(self)
    }

    /// Replace the pending outcome.
    pub fn set(&mut self, o: Option<PendingOutcome>) {
        *self = PackedOutcome::from(o);
    }
}

impl From<Option<PendingOutcome>> for PackedOutcome {
    fn from(o: Option<PendingOutcome>) -> Self {
        match o {
            None => PackedOutcome::default(),
            Some(o) => {
                let band = band_index(o.band);
                let holdout = if o.holdout { Self::HOLDOUT } else { 0 };
                PackedOutcome {
                    day: o.day.to_le_bytes(),
                    meta: Self::PRESENT | holdout | ((o.action & 0x07) << 2) | (band & 0x03),
                }
            }
        }
    }
}

impl From<PackedOutcome> for Option<PendingOutcome> {
    fn from(p: PackedOutcome) -> Self {
        if p.meta & PackedOutcome::PRESENT == 0 {
            return None;
        }
        Some(PendingOutcome {
            day: i32::from_le_bytes(p.day),
            band: Band::ALL[usize::from(p.meta & 0x03)],
            action: (p.meta >> 2) & 0x07,
            holdout: p.meta & PackedOutcome::HOLDOUT != 0,
        })
    }
}

/// Per-customer alert memory.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct AlertMemory {
    pub band: Option<Band>,
    pub risk: Option<f64>,
    pub last_alert_day: Option<i32>,
    pub last_alert_band: Option<Band>,
    /// The outcome of the customer's latest alert episode, while not known (state version 6).
    #[serde(default)]
    pub outcome: PackedOutcome,
}

/// Decide whether a new score raises an alert; updates `mem`. Returns the previous (risk, band)
/// when it alerts. With `may_alert` false (warm-up: the pipeline has not yet seen enough history
/// to trust silence-driven features) `mem` is left untouched, so a customer who is still at risk
/// once the warm-up ends is alerted then as if first seen.
pub fn decide(
    mem: &mut AlertMemory,
    bands: &Bands,
    cfg: &AlertConfig,
    min_band: Band,
    p: f64,
    day: i32,
    may_alert: bool,
) -> Option<(Option<f64>, Option<Band>)> {
    if !may_alert {
        return None;
    }
    let prev_band = mem.band;
    let prev_risk = mem.risk;
    let band = next_band(bands, prev_band.unwrap_or(Band::Low), p, cfg.hysteresis);
    mem.band = Some(band);
    mem.risk = Some(p);
    let entered_higher = band > prev_band.unwrap_or(Band::Low);
    if band < min_band || !entered_higher {
        return None;
    }
    let in_cooldown = mem
        .last_alert_day
        .is_some_and(|d| day - d < cfg.cooldown_days)
        && mem.last_alert_band.is_some_and(|b| band <= b);
    if in_cooldown {
        return None;
    }
    mem.last_alert_day = Some(day);
    mem.last_alert_band = Some(band);
    Some((prev_risk, prev_band))
}

#[cfg(test)]
mod packed_outcome {
    use super::*;

    #[test]
    fn every_pending_outcome_packs_and_unpacks() {
        assert_eq!(PackedOutcome::default().get(), None);
        for band in Band::ALL {
            for action in 0..ACTIONS.len() as u8 {
                // (three bits hold the action index)
                for holdout in [false, true] {
                    for day in [i32::MIN, -3, 0, 20_600, i32::MAX] {
                        let o = Some(PendingOutcome {
                            day,
                            band,
                            action,
                            holdout,
                        });
                        assert_eq!(PackedOutcome::from(o).get(), o);
                    }
                }
            }
        }
        assert_eq!(std::mem::size_of::<PackedOutcome>(), 5);
        assert_eq!(std::mem::align_of::<PackedOutcome>(), 1);
        let json = serde_json::to_string(&AlertMemory::default()).expect("json");
        assert!(json.contains("\"outcome\":null"), "{json}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bands() -> Bands {
        Bands {
            medium: 0.2,
            high: 0.4,
            critical: 0.7,
        }
    }

    #[test]
    fn policy_columns_exist() {
        let c = PolicyColumns::default();
        for i in [
            c.recency,
            c.days_since_login,
            c.purchases_90d,
            c.revenue_90d,
            c.tenure,
            c.mrr,
        ] {
            assert!(i < FEATURES.len());
        }
    }

    #[test]
    fn action_follows_the_top_reason_group() {
        let c = PolicyColumns::default();
        let cfg = AlertConfig::default();
        let mut raw = vec![0.0; FEATURES.len()];
        for (g, want) in [
            (Group::DetractorFeedback, "feedback_call"),
            (Group::ComplaintsSupport, "service_recovery"),
            (Group::PriceSensitivity, "targeted_offer"),
            (Group::PlanDowngrade, "targeted_offer"),
            (Group::EngagementDecline, "engagement_nudge"),
        ] {
            assert_eq!(action(&c, &cfg, &raw, Some(g)), want, "{g:?}");
            assert!(playbook(Some(g)).contains(&want));
        }
        raw[c.recency] = 9.0;
        assert_eq!(
            action(&c, &cfg, &raw, Some(Group::EngagementDecline)),
            "reactivation_email",
            "dormant"
        );
        assert_eq!(
            action(&c, &cfg, &raw, Some(Group::DetractorFeedback)),
            "feedback_call",
            "the reason decides, not dormancy"
        );
        raw[c.mrr] = 199.0;
        assert_eq!(
            action(&c, &cfg, &raw, Some(Group::SpendDecline)),
            "loyalty_reward",
            "high value"
        );
        assert_eq!(action(&c, &cfg, &raw, None), "loyalty_reward");
        assert!(!playbook(Some(Group::EngagementDecline)).contains(&"feedback_call"));
    }

    #[test]
    fn hysteresis_holds_band_until_below_edge_minus_margin() {
        let b = bands();
        // high edge 0.4, relative margin 0.1 → leaves high below 0.36
        assert_eq!(next_band(&b, Band::Low, 0.45, 0.1), Band::High);
        assert_eq!(next_band(&b, Band::High, 0.37, 0.1), Band::High);
        assert_eq!(next_band(&b, Band::High, 0.35, 0.1), Band::Medium);
        assert_eq!(next_band(&b, Band::High, 0.8, 0.1), Band::Critical);
    }

    #[test]
    fn alerts_on_entering_a_higher_band_with_cooldown() {
        let b = bands();
        let cfg = AlertConfig::default();
        let mut m = AlertMemory::default();
        assert!(
            decide(&mut m, &b, &cfg, Band::High, 0.3, 0, true).is_none(),
            "medium is below min band"
        );
        assert!(
            decide(&mut m, &b, &cfg, Band::High, 0.5, 1, true).is_some(),
            "enters high"
        );
        assert!(
            decide(&mut m, &b, &cfg, Band::High, 0.45, 2, true).is_none(),
            "stays high: no storm"
        );
        assert!(
            decide(&mut m, &b, &cfg, Band::High, 0.38, 3, true).is_none(),
            "wobble inside margin"
        );
        assert!(
            decide(&mut m, &b, &cfg, Band::High, 0.1, 4, true).is_none(),
            "drops to low"
        );
        assert!(
            decide(&mut m, &b, &cfg, Band::High, 0.5, 5, true).is_none(),
            "re-enters high inside cooldown"
        );
        assert!(
            decide(&mut m, &b, &cfg, Band::High, 0.9, 6, true).is_some(),
            "critical beats cooldown"
        );
        assert!(decide(&mut m, &b, &cfg, Band::High, 0.1, 7, true).is_none());
        assert!(
            decide(&mut m, &b, &cfg, Band::High, 0.5, 20, true).is_some(),
            "after cooldown"
        );
    }

    #[test]
    fn warm_up_leaves_memory_untouched_so_risk_alerts_after_it() {
        let b = bands();
        let cfg = AlertConfig::default();
        let mut m = AlertMemory::default();
        assert!(decide(&mut m, &b, &cfg, Band::High, 0.5, 0, false).is_none());
        assert!(decide(&mut m, &b, &cfg, Band::High, 0.9, 1, false).is_none());
        assert_eq!(m, AlertMemory::default());
        // The first score after the warm-up alerts a customer who is still at risk.
        assert_eq!(
            decide(&mut m, &b, &cfg, Band::High, 0.5, 2, true),
            Some((None, None))
        );
        assert_eq!(m.last_alert_band, Some(Band::High));
    }
}
