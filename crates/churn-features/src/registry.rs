//! The feature registry: one list that training, serving, alert reasons and docs all read.

use serde::Serialize;

/// Why a customer stays, in the retention literature's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Binding {
    /// Price, spend, discounts, plan.
    Rational,
    /// NPS, complaints, feedback, engagement.
    Emotional,
    /// Tenure, subscription, integrations / feature adoption.
    Structural,
}

impl Binding {
    pub fn as_str(self) -> &'static str {
        match self {
            Binding::Rational => "rational",
            Binding::Emotional => "emotional",
            Binding::Structural => "structural",
        }
    }
}

/// How a raw feature value is turned into a model input (before standardisation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transform {
    Identity,
    /// `ln(1 + x)` for fat-tailed, non-negative counts and amounts.
    Log1p,
}

impl Transform {
    /// `"identity"` or `"log1p"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transform::Identity => "identity",
            Transform::Log1p => "log1p",
        }
    }
}

/// The reason group of a feature: alert reasons name groups of related metrics, not single
/// features (collinear members of a group share its weight, so their signs may flip; the
/// group's sum does not). `Context` features (static traits such as plan, pay-as-you-go and
/// lifetime totals, and the subscription state, which a cancel turns into the churn itself)
/// still score risk but are never a reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    /// Less activity than the customer's own normal: logins, sessions, silence, overdue visits.
    EngagementDecline,
    /// A low or falling NPS answer.
    DetractorFeedback,
    /// Complaints and support tickets.
    ComplaintsSupport,
    /// Plan downgrades (and the lack of upgrades).
    PlanDowngrade,
    /// Buying on discount more than the population does.
    PriceSensitivity,
    /// Fewer or smaller orders than before / than the customer's own normal.
    SpendDecline,
    /// A new customer (short tenure).
    TenureNewCustomer,
    /// Traits and states: scored, never a reason.
    Context,
}

impl Group {
    /// Every group that can be a reason, in a fixed order (ties in the ranking go to the first).
    pub const REASONS: [Group; 7] = [
        Group::DetractorFeedback,
        Group::ComplaintsSupport,
        Group::PlanDowngrade,
        Group::PriceSensitivity,
        Group::EngagementDecline,
        Group::SpendDecline,
        Group::TenureNewCustomer,
    ];

    /// The snake_case name used in alerts, reports and locale files.
    pub fn as_str(self) -> &'static str {
        match self {
            Group::EngagementDecline => "engagement_decline",
            Group::DetractorFeedback => "detractor_feedback",
            Group::ComplaintsSupport => "complaints_support",
            Group::PlanDowngrade => "plan_downgrade",
            Group::PriceSensitivity => "price_sensitivity",
            Group::SpendDecline => "spend_decline",
            Group::TenureNewCustomer => "tenure_new_customer",
            Group::Context => "context",
        }
    }

    /// Parse [`as_str`](Self::as_str).
    pub fn parse(s: &str) -> Option<Group> {
        Group::REASONS
            .into_iter()
            .chain([Group::Context])
            .find(|g| g.as_str() == s)
    }

    /// Binding level of the group (rational, emotional or structural).
    pub fn binding(self) -> Binding {
        match self {
            Group::EngagementDecline | Group::DetractorFeedback | Group::ComplaintsSupport => {
                Binding::Emotional
            }
            Group::PlanDowngrade | Group::PriceSensitivity | Group::SpendDecline => {
                Binding::Rational
            }
            Group::TenureNewCustomer | Group::Context => Binding::Structural,
        }
    }
}

/// Which way a feature is expected to move churn risk (the sign sanity check of `train`:
/// a fitted coefficient of the other sign contradicts it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// A higher value means more risk (coefficient expected > 0).
    Up,
    /// A higher value means less risk (coefficient expected < 0).
    Down,
}

impl Direction {
    /// `"up"` or `"down"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
        }
    }

    /// Whether a coefficient (on the churn logit) agrees with this direction; 0 agrees.
    pub fn agrees(self, coefficient: f64) -> bool {
        match self {
            Direction::Up => coefficient >= 0.0,
            Direction::Down => coefficient <= 0.0,
        }
    }
}

/// One feature: its column name in the feature frame, what it means, how it binds, its reason
/// group and its expected direction.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FeatureDef {
    pub name: &'static str,
    pub description: &'static str,
    pub binding: Binding,
    pub transform: Transform,
    pub group: Group,
    pub direction: Direction,
}

const fn f(
    name: &'static str,
    binding: Binding,
    transform: Transform,
    group: Group,
    direction: Direction,
    description: &'static str,
) -> FeatureDef {
    FeatureDef {
        name,
        description,
        binding,
        transform,
        group,
        direction,
    }
}

use Binding::{Emotional as E, Rational as R, Structural as S};
use Direction::{Down as Dn, Up};
use Group::{
    ComplaintsSupport as Comp, Context as Ctx, DetractorFeedback as Det, EngagementDecline as Eng,
    PlanDowngrade as Down, PriceSensitivity as Price, SpendDecline as Spend,
    TenureNewCustomer as Tenure,
};
use Transform::{Identity as Id, Log1p as Log};

/// Recency features are capped here (days); "never" counts as the cap.
pub const RECENCY_CAP_DAYS: f64 = 365.0;

/// Every feature, in model-input order.
pub const FEATURES: &[FeatureDef] = &[
    f("recency_purchase_days", R, Id, Spend, Up, "Days since the last purchase (capped at 365; never = 365)"),
    f("recency_activity_days", E, Id, Eng, Up, "Days since the last event of any kind (capped at 365)"),
    f("days_since_login", E, Id, Eng, Up, "Days since the last login (capped at 365; never = 365)"),
    f("tenure_days", S, Log, Tenure, Dn, "Days since the customer's first event"),
    f("purchases_28d", R, Log, Spend, Dn, "Orders in the last 28 days"),
    f("purchases_90d", R, Log, Spend, Dn, "Orders in the last 90 days"),
    f("revenue_28d", R, Log, Spend, Dn, "Order value in the last 28 days"),
    f("revenue_90d", R, Log, Spend, Dn, "Order value in the last 90 days"),
    f("avg_order_value_90d", R, Log, Spend, Dn, "Average order value over the last 90 days (0 without orders)"),
    f("logins_28d", E, Log, Eng, Dn, "Logins in the last 28 days"),
    f("sessions_28d", E, Log, Eng, Dn, "Sessions in the last 28 days"),
    f("page_views_28d", E, Log, Eng, Dn, "Page views in the last 28 days"),
    f("feature_uses_28d", S, Log, Eng, Dn, "Product feature uses in the last 28 days"),
    f("email_opens_28d", E, Log, Eng, Dn, "Marketing e-mails opened in the last 28 days"),
    f("email_clicks_28d", E, Log, Eng, Dn, "Marketing e-mail clicks in the last 28 days"),
    f("support_tickets_28d", E, Log, Comp, Up, "Support tickets opened in the last 28 days"),
    f("complaints_28d", E, Log, Comp, Up, "Complaints in the last 28 days"),
    f("support_tickets_90d", E, Log, Comp, Up, "Support tickets opened in the last 90 days"),
    f("complaints_90d", E, Log, Comp, Up, "Complaints in the last 90 days"),
    f("session_minutes_28d", E, Log, Eng, Dn, "Total session minutes in the last 28 days"),
    f("activity_28d", E, Log, Eng, Dn, "Purchases plus engagement events of every kind in the last 28 days"),
    f("activity_change_28d", E, Id, Eng, Dn, "Relative change of activity_28d, last 28 d vs the 28 d before: (cur-prev)/(prev+1), capped at 5"),
    f("revenue_change_28d", R, Id, Spend, Dn, "Relative change of order value, last 28 d vs the 28 d before: (cur-prev)/(prev+1), capped at 5"),
    f("feature_uses_per_session_28d", S, Id, Eng, Dn, "Feature uses per session over 28 days: uses/(sessions+1)"),
    f("email_click_rate_28d", E, Id, Eng, Dn, "E-mail clicks per open over 28 days: clicks/(opens+1)"),
    f("mrr", R, Log, Ctx, Dn, "Current monthly recurring revenue (latest subscription event)"),
    f("subscribed", S, Id, Ctx, Dn, "1 if current MRR > 0"),
    f("downgrades_90d", R, Id, Down, Up, "Plan downgrades in the last 90 days"),
    f("upgrades_90d", R, Id, Down, Dn, "Plan upgrades in the last 90 days"),
    f("discount_share_90d", R, Id, Price, Up, "Share of list value given as discount over 90 days"),
    f("nps_latest", E, Id, Det, Dn, "Latest NPS answer 0-10 (7 when never answered)"),
    f("nps_missing", E, Id, Det, Up, "1 if the customer never answered an NPS survey"),
    f("nps_detractor", E, Id, Det, Up, "1 if the latest NPS answer is 0-6"),
    f("nps_detractor_90d", E, Id, Det, Up, "1 if the latest NPS answer of the last 90 days is 0-6 (0 without an answer in 90 days)"),
    f("nps_promoter", E, Id, Det, Dn, "1 if the latest NPS answer is 9-10"),
    f("nps_trend_90d", E, Id, Det, Dn, "Latest minus earliest NPS answer within 90 days (0 with fewer than two)"),
    // Lifetime history (survives expiry: the carry keeps the totals of expired days).
    f("orders_lifetime", R, Log, Ctx, Dn, "Orders since the first event"),
    f("purchase_days_lifetime", R, Log, Ctx, Dn, "Distinct days with a purchase since the first event (BG/NBD frequency + 1)"),
    f("revenue_lifetime", R, Log, Ctx, Dn, "Order value since the first event"),
    f("avg_order_value_lifetime", R, Log, Ctx, Dn, "Lifetime order value per order (0 without orders)"),
    f("active_days_lifetime", E, Log, Ctx, Dn, "Distinct days with any event since the first event"),
    f("active_day_share", E, Id, Ctx, Dn, "Share of the customer's days (tenure) with any event"),
    f("one_time_buyer", R, Id, Ctx, Up, "1 if the customer bought on exactly one day"),
    f("purchase_age_days", R, Log, Ctx, Dn, "Days since the first purchase, inclusive (BG/NBD T; 0 without purchases)"),
    f("purchase_span_days", R, Log, Ctx, Dn, "Days from the first to the last purchase (BG/NBD recency t_x)"),
    f("purchase_gap_mean_days", R, Log, Ctx, Up, "Mean days between consecutive purchase days (0 with fewer than two)"),
    f("purchase_gap_cv", R, Id, Ctx, Up, "Coefficient of variation of the days between purchase days (0 with fewer than three; capped at 5)"),
    f("purchase_overdue", R, Log, Spend, Up, "Days since the last purchase / the customer's mean gap between purchase days (0 with fewer than two; capped at 50)"),
    f("visit_overdue", E, Log, Eng, Up, "Days since the last event / the customer's mean gap between active days (0 with fewer than two; capped at 50)"),
    f("purchase_rate_vs_normal_28d", R, Id, Spend, Dn, "Orders per day over the last 28 d (or the tenure, if shorter) / lifetime orders per day, both +0.5 smoothed; < 1 = buying less than usual (capped at 10)"),
    f("activity_rate_vs_normal_28d", E, Id, Eng, Dn, "Active days per day over the last 28 d (or the tenure) / lifetime active days per day, +0.5 smoothed; < 1 = less active than usual (capped at 10)"),
    f("activity_rate_vs_normal_7d", E, Id, Eng, Dn, "As activity_rate_vs_normal_28d over the last 7 days"),
    // Trigger timing (the day rows of the last 90 days): did the trigger come before the decline?
    f("complaint_before_decline", E, Id, Comp, Up, "1 if the latest complaint of the last 90 days came while the customer was still active as usual (active days in the 14 days before it at least 0.7x their rate before that, within the 90 days; 1 with too little history to tell); 0 without one"),
    f("detractor_before_decline", E, Id, Det, Up, "As complaint_before_decline for the latest NPS answer of the last 90 days, if it is a detractor (0-6)"),
    f("downgrade_before_decline", R, Id, Down, Up, "As complaint_before_decline for the latest plan downgrade of the last 90 days"),
];

/// Feature names in model-input order.
pub fn names() -> Vec<&'static str> {
    FEATURES.iter().map(|d| d.name).collect()
}

/// Look a feature up by name.
pub fn get(name: &str) -> Option<&'static FeatureDef> {
    FEATURES.iter().find(|d| d.name == name)
}

/// Write the registry as CSV: `name,binding,transform,group,direction,description`, one row per
/// feature in model-input order (what `churnstream features` prints).
pub fn write_csv(w: impl std::io::Write) -> std::io::Result<()> {
    write_csv_of(w, FEATURES)
}

/// [`write_csv`] of any feature list (the registry plus a metric catalog:
/// [`crate::FeatureSet::defs`]).
pub fn write_csv_of(mut w: impl std::io::Write, defs: &[FeatureDef]) -> std::io::Result<()> {
    writeln!(w, "name,binding,transform,group,direction,description")?;
    let mut line = String::new();
    for d in defs {
        line.clear();
        for (k, field) in [
            d.name,
            d.binding.as_str(),
            d.transform.as_str(),
            d.group.as_str(),
            d.direction.as_str(),
            d.description,
        ]
        .iter()
        .enumerate()
        {
            if k > 0 {
                line.push(',');
            }
            crate::training::push_csv_field(&mut line, field);
        }
        writeln!(w, "{line}")?;
    }
    w.flush()
}

/// Raw feature row → model input row (applies each feature's [`Transform`]).
pub fn model_input(raw: &[f64], out: &mut Vec<f64>) {
    out.clear();
    out.extend(raw.iter().zip(FEATURES).map(|(&v, d)| match d.transform {
        Transform::Identity => v,
        Transform::Log1p => v.max(0.0).ln_1p(),
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_described() {
        let mut n = names();
        let len = n.len();
        n.sort_unstable();
        n.dedup();
        assert_eq!(n.len(), len, "duplicate feature names");
        assert!(FEATURES.iter().all(|d| !d.description.is_empty()));
        assert!(len >= 30);
    }

    #[test]
    fn csv_lists_every_feature_in_order() {
        let mut out = Vec::new();
        write_csv(&mut out).expect("write to memory");
        let text = String::from_utf8(out).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "name,binding,transform,group,direction,description"
        );
        assert_eq!(lines.len(), FEATURES.len() + 1);
        for (line, d) in lines[1..].iter().zip(FEATURES) {
            let prefix = format!(
                "{},{},{},{},{},",
                d.name,
                d.binding.as_str(),
                d.transform.as_str(),
                d.group.as_str(),
                d.direction.as_str()
            );
            assert!(line.starts_with(&prefix), "{line}");
        }
        // Descriptions with commas are quoted.
        let d = get("activity_change_28d").expect("registered");
        assert!(d.description.contains(','));
        assert!(text.contains(&format!(
            "activity_change_28d,emotional,identity,engagement_decline,down,\"{}\"\n",
            d.description
        )));
        assert!(lines
            .iter()
            .any(|l| l.starts_with("tenure_days,structural,log1p,tenure_new_customer,down,")));
    }

    #[test]
    fn every_reason_group_has_members_and_traits_are_context() {
        for g in Group::REASONS {
            assert!(FEATURES.iter().any(|d| d.group == g), "{g:?} has no member");
            assert_eq!(Group::parse(g.as_str()), Some(g));
        }
        // Static traits and the subscription state (a cancel is the churn itself) are no reason.
        for n in ["subscribed", "mrr", "orders_lifetime", "one_time_buyer"] {
            assert_eq!(get(n).map(|d| d.group), Some(Group::Context), "{n}");
        }
        assert_eq!(
            get("nps_detractor").map(|d| d.direction),
            Some(Direction::Up)
        );
        assert_eq!(
            get("sessions_28d").map(|d| d.direction),
            Some(Direction::Down)
        );
        assert!(Direction::Up.agrees(0.3) && !Direction::Up.agrees(-0.3));
        assert!(Direction::Down.agrees(-0.3) && !Direction::Down.agrees(0.3));
    }

    #[test]
    fn model_input_applies_log1p_only_where_declared() {
        let raw: Vec<f64> = FEATURES.iter().map(|_| 3.0).collect();
        let mut out = Vec::new();
        model_input(&raw, &mut out);
        for (d, v) in FEATURES.iter().zip(&out) {
            let want = if d.transform == Transform::Log1p {
                4f64.ln()
            } else {
                3.0
            };
            assert!((v - want).abs() < 1e-12, "{}", d.name);
        }
    }
}
