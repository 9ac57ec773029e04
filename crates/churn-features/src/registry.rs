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

/// One feature: its column name in the feature frame, what it means, and how it binds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FeatureDef {
    pub name: &'static str,
    pub description: &'static str,
    pub binding: Binding,
    pub transform: Transform,
}

const fn f(
    name: &'static str,
    binding: Binding,
    transform: Transform,
    description: &'static str,
) -> FeatureDef {
    FeatureDef {
        name,
        description,
        binding,
        transform,
    }
}

use Binding::{Emotional as E, Rational as R, Structural as S};
use Transform::{Identity as Id, Log1p as Log};

/// Recency features are capped here (days); "never" counts as the cap.
pub const RECENCY_CAP_DAYS: f64 = 365.0;

/// Every feature, in model-input order.
pub const FEATURES: &[FeatureDef] = &[
    f("recency_purchase_days", R, Id, "Days since the last purchase (capped at 365; never = 365)"),
    f("recency_activity_days", E, Id, "Days since the last event of any kind (capped at 365)"),
    f("days_since_login", E, Id, "Days since the last login (capped at 365; never = 365)"),
    f("tenure_days", S, Log, "Days since the customer's first event"),
    f("purchases_28d", R, Log, "Orders in the last 28 days"),
    f("purchases_90d", R, Log, "Orders in the last 90 days"),
    f("revenue_28d", R, Log, "Order value in the last 28 days"),
    f("revenue_90d", R, Log, "Order value in the last 90 days"),
    f("avg_order_value_90d", R, Log, "Average order value over the last 90 days (0 without orders)"),
    f("logins_28d", E, Log, "Logins in the last 28 days"),
    f("sessions_28d", E, Log, "Sessions in the last 28 days"),
    f("page_views_28d", E, Log, "Page views in the last 28 days"),
    f("feature_uses_28d", S, Log, "Product feature uses in the last 28 days"),
    f("email_opens_28d", E, Log, "Marketing e-mails opened in the last 28 days"),
    f("email_clicks_28d", E, Log, "Marketing e-mail clicks in the last 28 days"),
    f("support_tickets_28d", E, Log, "Support tickets opened in the last 28 days"),
    f("complaints_28d", E, Log, "Complaints in the last 28 days"),
    f("session_minutes_28d", E, Log, "Total session minutes in the last 28 days"),
    f("activity_28d", E, Log, "Purchases plus engagement events of every kind in the last 28 days"),
    f("activity_change_28d", E, Id, "Relative change of activity_28d, last 28 d vs the 28 d before: (cur-prev)/(prev+1), capped at 5"),
    f("revenue_change_28d", R, Id, "Relative change of order value, last 28 d vs the 28 d before: (cur-prev)/(prev+1), capped at 5"),
    f("feature_uses_per_session_28d", S, Id, "Feature uses per session over 28 days: uses/(sessions+1)"),
    f("email_click_rate_28d", E, Id, "E-mail clicks per open over 28 days: clicks/(opens+1)"),
    f("mrr", R, Log, "Current monthly recurring revenue (latest subscription event)"),
    f("subscribed", S, Id, "1 if current MRR > 0"),
    f("downgrades_90d", R, Id, "Plan downgrades in the last 90 days"),
    f("upgrades_90d", R, Id, "Plan upgrades in the last 90 days"),
    f("discount_share_90d", R, Id, "Share of list value given as discount over 90 days"),
    f("nps_latest", E, Id, "Latest NPS answer 0-10 (7 when never answered)"),
    f("nps_missing", E, Id, "1 if the customer never answered an NPS survey"),
    f("nps_detractor", E, Id, "1 if the latest NPS answer is 0-6"),
    f("nps_promoter", E, Id, "1 if the latest NPS answer is 9-10"),
    f("nps_trend_90d", E, Id, "Latest minus earliest NPS answer within 90 days (0 with fewer than two)"),
    // Lifetime history (survives expiry: the carry keeps the totals of expired days).
    f("orders_lifetime", R, Log, "Orders since the first event"),
    f("purchase_days_lifetime", R, Log, "Distinct days with a purchase since the first event (BG/NBD frequency + 1)"),
    f("revenue_lifetime", R, Log, "Order value since the first event"),
    f("avg_order_value_lifetime", R, Log, "Lifetime order value per order (0 without orders)"),
    f("active_days_lifetime", E, Log, "Distinct days with any event since the first event"),
    f("active_day_share", E, Id, "Share of the customer's days (tenure) with any event"),
    f("one_time_buyer", R, Id, "1 if the customer bought on exactly one day"),
    f("purchase_age_days", R, Log, "Days since the first purchase, inclusive (BG/NBD T; 0 without purchases)"),
    f("purchase_span_days", R, Log, "Days from the first to the last purchase (BG/NBD recency t_x)"),
    f("purchase_gap_mean_days", R, Log, "Mean days between consecutive purchase days (0 with fewer than two)"),
    f("purchase_gap_cv", R, Id, "Coefficient of variation of the days between purchase days (0 with fewer than three; capped at 5)"),
    f("purchase_overdue", R, Log, "Days since the last purchase / the customer's mean gap between purchase days (0 with fewer than two; capped at 50)"),
    f("visit_overdue", E, Log, "Days since the last event / the customer's mean gap between active days (0 with fewer than two; capped at 50)"),
    f("purchase_rate_vs_normal_28d", R, Id, "Orders per day over the last 28 d (or the tenure, if shorter) / lifetime orders per day, both +0.5 smoothed; < 1 = buying less than usual (capped at 10)"),
    f("activity_rate_vs_normal_28d", E, Id, "Active days per day over the last 28 d (or the tenure) / lifetime active days per day, +0.5 smoothed; < 1 = less active than usual (capped at 10)"),
    f("activity_rate_vs_normal_7d", E, Id, "As activity_rate_vs_normal_28d over the last 7 days"),
];

/// Feature names in model-input order.
pub fn names() -> Vec<&'static str> {
    FEATURES.iter().map(|d| d.name).collect()
}

/// Look a feature up by name.
pub fn get(name: &str) -> Option<&'static FeatureDef> {
    FEATURES.iter().find(|d| d.name == name)
}

/// Write the registry as CSV: `name,binding,transform,description`, one row per feature in
/// model-input order (what `churnstream features` prints).
pub fn write_csv(mut w: impl std::io::Write) -> std::io::Result<()> {
    writeln!(w, "name,binding,transform,description")?;
    let mut line = String::new();
    for d in FEATURES {
        line.clear();
        for (k, field) in [
            d.name,
            d.binding.as_str(),
            d.transform.as_str(),
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
        assert_eq!(lines[0], "name,binding,transform,description");
        assert_eq!(lines.len(), FEATURES.len() + 1);
        for (line, d) in lines[1..].iter().zip(FEATURES) {
            let prefix = format!(
                "{},{},{},",
                d.name,
                d.binding.as_str(),
                d.transform.as_str()
            );
            assert!(line.starts_with(&prefix), "{line}");
        }
        // Descriptions with commas are quoted.
        let d = get("activity_change_28d").expect("registered");
        assert!(d.description.contains(','));
        assert!(text.contains(&format!(
            "activity_change_28d,emotional,identity,\"{}\"\n",
            d.description
        )));
        assert!(lines
            .iter()
            .any(|l| l.starts_with("tenure_days,structural,log1p,")));
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
