//! Alert reasons at the level of metric groups (issue 18), their texts and the sign check.
//!
//! - **Groups.** Every registry feature belongs to a [`Group`]; a group's contribution is the sum
//!   of its members' `coefficient × standardised value` (on the churn logit). Collinear members
//!   (logins, sessions, page views…) share the weight of what they measure together, so their
//!   individual signs may flip; their sum does not. `Context` features (plan, pay-as-you-go,
//!   lifetime totals, the subscription state that a cancel turns into the churn itself) score
//!   risk but are never a reason.
//! - **Sign sanity.** Every feature declares an expected [`Direction`]. A fitted coefficient of
//!   the other sign is *reported* (`train` summary `sign_check`, the evaluation report) and
//!   *handled* by excluding that member from its group's reason contribution (it still scores
//!   risk): a reason never rests on a sign that contradicts the domain, e.g. a promoter's NPS of
//!   9 can never push the detractor group up.
//! - **Ranking: triggers before symptoms.** Only groups with a positive contribution are reasons.
//!   Every churner's activity falls before they leave, whatever the cause, so the engagement
//!   decline group is large for nearly everyone the model alerts and would drown out what set
//!   the decline off. A *trigger* group (detractor feedback, complaints and support, plan
//!   downgrade, price sensitivity: something that happened to or was said by the customer)
//!   whose contribution is at least [`TRIGGER_MIN_LOGIT`] and whose latest event came *before*
//!   the decline ([`trigger_gate`]: the customer was still active as usual in the two weeks
//!   before it) therefore ranks before the *symptom* groups (engagement decline, spend decline,
//!   tenure/new customer); a complaint, detractor answer or downgrade that came when activity
//!   had already fallen is part of the decline and ranks with the symptoms by its contribution.
//!   Support tickets alone never make `complaints_support` a trigger (the gate needs a
//!   complaint). Within each tier groups rank by contribution. Each reason names its lead member (the largest contribution) and
//!   says in words how the customer differs from their own normal or from the population, from
//!   the templates of a locale file (`locales/en.toml`, `locales/nl.toml`).

use std::collections::BTreeMap;

use churn_events::Reason;
use churn_features::registry::{FeatureDef, Group, FEATURES};
use churn_features::FeatureSet;
use churn_model::ModelArtifact;
use serde::Serialize;

/// Locale files compiled into the binary: (name, TOML text). English first (the default).
const LOCALES: [(&str, &str); 2] = [
    ("en", include_str!("../locales/en.toml")),
    ("nl", include_str!("../locales/nl.toml")),
];

/// A trigger group ranks before the symptom groups when its contribution (churn logit) is at
/// least this (module docs). 0.2 is about what one complaint, one downgrade or a detractor
/// answer adds with the default data's models; a never-answered survey (≈ 0.05) stays below.
pub const TRIGGER_MIN_LOGIT: f64 = 0.2;

/// The registry feature that says whether a trigger group's latest event came before the
/// activity decline (1) or during it (0): a complaint, detractor answer or downgrade that came
/// while the customer was still active as usual may have set the decline off; one that came
/// after activity had already fallen is part of the decline (disengaging customers complain,
/// answer surveys lower and downgrade more), so it does not rank as a trigger. Price sensitivity
/// has no dated event and no gate.
pub fn trigger_gate(g: Group) -> Option<&'static str> {
    match g {
        Group::DetractorFeedback => Some("detractor_before_decline"),
        Group::ComplaintsSupport => Some("complaint_before_decline"),
        Group::PlanDowngrade => Some("downgrade_before_decline"),
        _ => None,
    }
}

/// Whether a group is a trigger (something that happened) rather than a symptom.
pub fn is_trigger(g: Group) -> bool {
    matches!(
        g,
        Group::DetractorFeedback
            | Group::ComplaintsSupport
            | Group::PlanDowngrade
            | Group::PriceSensitivity
    )
}

/// The default locale of reason texts.
pub const DEFAULT_LOCALE: &str = "en";

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReasonError {
    #[error("unknown locale `{0}` (known: en, nl)")]
    UnknownLocale(String),
    #[error("locale `{locale}`: {message}")]
    BadLocale { locale: String, message: String },
}

impl From<ReasonError> for crate::Error {
    fn from(e: ReasonError) -> Self {
        crate::Error::Config {
            path: "alerts.locale".into(),
            message: e.to_string(),
        }
    }
}

/// Reason text templates of one locale.
#[derive(Debug, Clone, PartialEq)]
pub struct Locale {
    pub name: String,
    templates: BTreeMap<String, String>,
}

impl Locale {
    /// A compiled-in locale by name (`en`, `nl`).
    pub fn named(name: &str) -> Result<Locale, crate::Error> {
        let text = LOCALES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| *t)
            .ok_or_else(|| ReasonError::UnknownLocale(name.to_string()))?;
        Ok(Self::parse(name, text)?)
    }

    fn parse(name: &str, text: &str) -> Result<Locale, ReasonError> {
        #[derive(serde::Deserialize)]
        struct File {
            reasons: BTreeMap<String, String>,
        }
        let f: File = toml::from_str(text).map_err(|e| ReasonError::BadLocale {
            locale: name.into(),
            message: e.to_string(),
        })?;
        Ok(Locale {
            name: name.into(),
            templates: f.reasons,
        })
    }

    /// Template `key` with every `{name}` replaced from `args`; the key itself when missing
    /// (cannot happen for the compiled-in locales: a test checks every key).
    fn render(&self, key: &str, args: &[(&str, String)]) -> String {
        let Some(t) = self.templates.get(key) else {
            return key.to_string();
        };
        let mut out = t.clone();
        for (k, v) in args {
            out = out.replace(&format!("{{{k}}}"), v);
        }
        out
    }
}

impl Default for Locale {
    fn default() -> Self {
        // The English file is compiled in and tested; an empty table only if that ever broke.
        Self::parse(LOCALES[0].0, LOCALES[0].1).unwrap_or(Locale {
            name: DEFAULT_LOCALE.into(),
            templates: BTreeMap::new(),
        })
    }
}

/// One coefficient whose sign contradicts its feature's declared direction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SignIssue {
    pub feature: String,
    pub group: &'static str,
    /// The declared direction (`up`: more risk with a higher value).
    pub expected: &'static str,
    pub coefficient: f64,
    /// How it is handled: always `excluded_from_reasons` (see the module docs).
    pub handling: &'static str,
}

/// The sign check of a model: every coefficient that contradicts its registry direction.
/// Features the registry does not know are skipped (the artifact's own feature list decides).
pub fn sign_check(model: &ModelArtifact) -> Vec<SignIssue> {
    let features = crate::train::feature_set_of(model).unwrap_or_default();
    model
        .feature_names
        .iter()
        .zip(&model.coefficients)
        .filter_map(|(name, &c)| {
            let d = features.get(name)?;
            (!d.direction.agrees(c)).then(|| SignIssue {
                feature: name.clone(),
                group: d.group.as_str(),
                expected: d.direction.as_str(),
                coefficient: c,
                handling: "excluded_from_reasons",
            })
        })
        .collect()
}

/// A group's share of one customer's churn logit.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupContribution {
    pub group: Group,
    /// Σ over the members whose coefficient agrees with their direction.
    pub contribution: f64,
    /// Registry index of the member with the largest contribution (the reason's `feature`).
    pub lead: usize,
}

/// Builds the reasons of alerts for one model.
#[derive(Debug, Clone)]
pub struct Explainer {
    /// Every feature of the model (the registry's, then its catalog's).
    defs: Vec<FeatureDef>,
    /// Per feature: its coefficient agrees with its direction (counts in reasons).
    counts: Vec<bool>,
    coefficients: Vec<f64>,
    mean: Vec<f64>,
    std: Vec<f64>,
    locale: Locale,
}

fn col(name: &str) -> usize {
    FEATURES
        .iter()
        .position(|d| d.name == name)
        .unwrap_or(usize::MAX)
}

impl Explainer {
    /// The explainer of `model` (whose features must be the registry's, as the engine checks).
    pub fn new(model: &ModelArtifact, locale: Locale) -> Self {
        Self::with_features(model, &FeatureSet::builtin(), locale)
    }

    /// The explainer of `model` over `features` (the registry plus the model's catalog, as the
    /// engine checks): catalog metrics take part in their declared group's reason and can lead
    /// it.
    pub fn with_features(model: &ModelArtifact, features: &FeatureSet, locale: Locale) -> Self {
        let defs = features.defs().to_vec();
        let counts = defs
            .iter()
            .zip(&model.coefficients)
            .map(|(d, &c)| d.direction.agrees(c))
            .collect();
        Explainer {
            defs,
            counts,
            coefficients: model.coefficients.clone(),
            mean: model.scaler_mean.clone(),
            std: model.scaler_std.clone(),
            locale,
        }
    }

    /// Every reason group with its contribution for one row (`input`: model input in registry
    /// order), in reason order (module docs: triggers over [`TRIGGER_MIN_LOGIT`] whose event
    /// came before the decline ([`trigger_gate`]) first, then by contribution; ties in
    /// [`Group::REASONS`] order).
    pub fn groups(&self, input: &[f64]) -> Vec<GroupContribution> {
        let mut out: Vec<GroupContribution> = Group::REASONS
            .iter()
            .map(|&g| {
                let mut sum = 0.0;
                let mut lead = (usize::MAX, f64::NEG_INFINITY);
                for (j, d) in self.defs.iter().enumerate() {
                    if d.group != g || !self.counts.get(j).copied().unwrap_or(false) {
                        continue;
                    }
                    let (Some(x), Some(c), Some(m), Some(s)) = (
                        input.get(j),
                        self.coefficients.get(j),
                        self.mean.get(j),
                        self.std.get(j),
                    ) else {
                        continue;
                    };
                    let v = c * (x - m) / s;
                    sum += v;
                    if v > lead.1 {
                        lead = (j, v);
                    }
                }
                GroupContribution {
                    group: g,
                    contribution: sum,
                    lead: lead.0,
                }
            })
            .filter(|g| g.lead != usize::MAX)
            .collect();
        // Triggers over the bar whose event came before the decline first, then by
        // contribution; stable: ties keep REASONS order.
        let before_decline = |g: Group| {
            trigger_gate(g).is_none_or(|name| input.get(col(name)).is_some_and(|&v| v > 0.0))
        };
        let tier = |g: &GroupContribution| {
            u8::from(
                !(is_trigger(g.group)
                    && g.contribution >= TRIGGER_MIN_LOGIT
                    && before_decline(g.group)),
            )
        };
        out.sort_by(|a, b| {
            tier(a)
                .cmp(&tier(b))
                .then(b.contribution.total_cmp(&a.contribution))
        });
        out
    }

    /// The top `n` reasons of an alert: groups with a positive contribution, largest first.
    pub fn reasons(&self, input: &[f64], raw: &[f64], n: usize) -> Vec<Reason> {
        self.groups(input)
            .into_iter()
            .filter(|g| g.contribution > 0.0)
            .take(n)
            .map(|g| self.reason(&g, raw))
            .collect()
    }

    /// The reason of a cold-start score ([`crate::train::ServedScore`]): the customer is new
    /// (group `tenure_new_customer`, lead feature `tenure_days`); `contribution` is the
    /// fallback's logit above the base rate.
    pub fn cold_start_reason(&self, raw: &[f64], contribution: f64) -> Reason {
        let g = GroupContribution {
            group: Group::TenureNewCustomer,
            contribution,
            lead: col("tenure_days"),
        };
        self.reason(&g, raw)
    }

    /// Population value of a raw feature (the training mean, back through its transform).
    fn typical(&self, name: &str) -> f64 {
        let j = col(name);
        let (Some(d), Some(&m)) = (self.defs.get(j), self.mean.get(j)) else {
            return 0.0;
        };
        match d.transform {
            churn_features::registry::Transform::Identity => m,
            churn_features::registry::Transform::Log1p => m.exp_m1(),
        }
    }

    fn reason(&self, g: &GroupContribution, raw: &[f64]) -> Reason {
        let v = |name: &str| raw.get(col(name)).copied().unwrap_or(0.0);
        let d = self.defs.get(g.lead);
        let (text_key, args) = self.text_args(g.group, &v);
        Reason {
            feature: d.map_or("", |d| d.name).into(),
            value: raw.get(g.lead).copied().unwrap_or(0.0),
            contribution: g.contribution,
            binding: g.group.binding().as_str().into(),
            description: d.map_or("", |d| d.description).into(),
            group: Some(g.group.as_str().into()),
            text: Some(self.locale.render(text_key, &args)),
        }
    }

    /// Template key and arguments of a group's text.
    fn text_args(
        &self,
        group: Group,
        v: &dyn Fn(&str) -> f64,
    ) -> (&'static str, Vec<(&'static str, String)>) {
        let int = |x: f64| format!("{}", x.round() as i64);
        let pct = |x: f64| format!("{}", (x * 100.0).round() as i64);
        let one = |x: f64| format!("{x:.1}");
        match group {
            Group::EngagementDecline => {
                let ratio = v("activity_rate_vs_normal_28d");
                let recency = v("recency_activity_days");
                if ratio < 1.0 && recency < 14.0 {
                    (
                        "engagement_decline_down",
                        vec![
                            ("down_pct", pct(1.0 - ratio)),
                            ("recency_days", int(recency)),
                        ],
                    )
                } else {
                    (
                        "engagement_decline_silent",
                        vec![
                            ("recency_days", int(recency)),
                            ("overdue", one(v("visit_overdue"))),
                        ],
                    )
                }
            }
            Group::DetractorFeedback => {
                let nps = v("nps_latest");
                let before = nps - v("nps_trend_90d");
                let args = vec![("nps", int(nps)), ("nps_before", int(before))];
                if v("nps_missing") > 0.0 {
                    ("detractor_feedback_missing", args)
                } else if nps <= 6.0 && before > nps {
                    ("detractor_feedback_drop", args)
                } else if nps <= 6.0 {
                    ("detractor_feedback_low", args)
                } else {
                    ("detractor_feedback_passive", args)
                }
            }
            Group::ComplaintsSupport => (
                "complaints_support",
                vec![
                    ("complaints", int(v("complaints_90d"))),
                    ("tickets", int(v("support_tickets_90d"))),
                    (
                        "typical_complaints",
                        format!("{:.2}", self.typical("complaints_90d")),
                    ),
                ],
            ),
            Group::PlanDowngrade => {
                let n = v("downgrades_90d");
                let args = vec![("downgrades", int(n)), ("mrr", int(v("mrr")))];
                if n > 0.0 {
                    ("plan_downgrade", args)
                } else {
                    ("plan_downgrade_no_upgrade", args)
                }
            }
            Group::PriceSensitivity => (
                "price_sensitivity",
                vec![
                    ("discount_pct", pct(v("discount_share_90d"))),
                    (
                        "typical_discount_pct",
                        pct(self.typical("discount_share_90d")),
                    ),
                ],
            ),
            Group::SpendDecline => {
                let ratio = v("purchase_rate_vs_normal_28d");
                let recency = v("recency_purchase_days");
                if ratio < 1.0 && recency < 28.0 {
                    (
                        "spend_decline_down",
                        vec![
                            ("down_pct", pct(1.0 - ratio)),
                            ("recency_days", int(recency)),
                        ],
                    )
                } else {
                    (
                        "spend_decline_silent",
                        vec![
                            ("recency_days", int(recency)),
                            ("overdue", one(v("purchase_overdue"))),
                        ],
                    )
                }
            }
            Group::TenureNewCustomer | Group::Context => (
                "tenure_new_customer",
                vec![
                    ("tenure_days", int(v("tenure_days"))),
                    ("typical_tenure_days", int(self.typical("tenure_days"))),
                ],
            ),
        }
    }
}

/// The group a reason names: its `group` field, or (alerts written before reason groups) its
/// feature's registry group.
pub fn reason_group(r: &Reason) -> Option<Group> {
    match &r.group {
        Some(g) => Group::parse(g),
        None => churn_features::registry::get(&r.feature).map(|d| d.group),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model over the registry: every coefficient 0 except `coefs`, mean 0, std 1.
    fn model(coefs: &[(&str, f64)]) -> ModelArtifact {
        let n = FEATURES.len();
        let mut c = vec![0.0; n];
        for (name, v) in coefs {
            c[col(name)] = *v;
        }
        serde_json::from_value(serde_json::json!({
            "format_version": 1,
            "model_version": "churn-lr-test",
            "created_at": "2026-01-01T00:00:00Z",
            "feature_names": FEATURES.iter().map(|d| d.name).collect::<Vec<_>>(),
            "bindings": FEATURES.iter().map(|d| d.binding.as_str()).collect::<Vec<_>>(),
            "scaler_mean": vec![0.0; n],
            "scaler_std": vec![1.0; n],
            "coefficients": c,
            "intercept": -2.0,
            "thresholds": {"medium": 0.15, "high": 0.35, "critical": 0.6},
            "alert_threshold": 0.35,
            "metrics": {},
            "data_window": null,
            "train_params": {},
            "hash": "",
        }))
        .expect("a model")
    }

    fn row(values: &[(&str, f64)]) -> Vec<f64> {
        let mut r = vec![0.0; FEATURES.len()];
        for (name, v) in values {
            r[col(name)] = *v;
        }
        r
    }

    #[test]
    fn sign_check_reports_every_contradicting_coefficient() {
        let m = model(&[
            ("sessions_28d", 0.4),        // down expected: contradicts
            ("nps_latest", 0.2),          // down expected: contradicts
            ("complaints_28d", 0.5),      // up: agrees
            ("discount_share_90d", -0.1), // up expected: contradicts
            ("logins_28d", -0.3),         // down: agrees
        ]);
        let issues = sign_check(&m);
        let names: Vec<&str> = issues.iter().map(|i| i.feature.as_str()).collect();
        assert_eq!(names, ["sessions_28d", "discount_share_90d", "nps_latest"]);
        assert!(issues.iter().all(|i| i.handling == "excluded_from_reasons"));
        assert_eq!(issues[0].expected, "down");
        assert_eq!(issues[0].group, "engagement_decline");
        assert_eq!(issues[1].coefficient, -0.1);
    }

    #[test]
    fn groups_sum_agreeing_members_and_skip_context_and_contradictions() {
        let m = model(&[
            ("logins_28d", -0.5),
            ("activity_28d", -0.25),
            ("sessions_28d", 0.4), // contradicts: not in the group's sum
            ("subscribed", -3.0),  // context: never a reason
            ("nps_latest", 0.3),   // contradicts: a promoter's 9 must not be a reason
        ]);
        let e = Explainer::new(&m, Locale::default());
        let input = row(&[
            ("logins_28d", -2.0),
            ("activity_28d", -1.0),
            ("sessions_28d", 5.0),
            ("subscribed", -1.0),
            ("nps_latest", 9.0),
        ]);
        let groups = e.groups(&input);
        let eng = groups
            .iter()
            .find(|g| g.group == Group::EngagementDecline)
            .expect("engagement group");
        assert!((eng.contribution - 1.25).abs() < 1e-12, "{eng:?}");
        assert_eq!(FEATURES[eng.lead].name, "logins_28d");
        assert!(groups.iter().all(|g| g.group != Group::Context));
        let reasons = e.reasons(&input, &input, 3);
        assert_eq!(reasons.len(), 1, "only positive groups: {reasons:?}");
        assert_eq!(reasons[0].group.as_deref(), Some("engagement_decline"));
        assert_eq!(reasons[0].feature, "logins_28d");
        assert_eq!(reasons[0].binding, "emotional");
    }

    #[test]
    fn a_trigger_over_the_bar_outranks_a_larger_symptom() {
        let m = model(&[
            ("activity_rate_vs_normal_7d", -1.0),
            ("complaints_28d", 1.0),
            ("nps_detractor", 1.0),
        ]);
        let e = Explainer::new(&m, Locale::default());
        // Engagement 3.0, complaints 0.5 (over the bar, before the decline), detractor 0.1
        // (under it).
        let input = row(&[
            ("activity_rate_vs_normal_7d", -3.0),
            ("complaints_28d", 0.5),
            ("complaint_before_decline", 1.0),
            ("nps_detractor", 0.1),
            ("detractor_before_decline", 1.0),
        ]);
        let order: Vec<Group> = e.groups(&input).iter().map(|g| g.group).collect();
        assert_eq!(
            &order[..3],
            [
                Group::ComplaintsSupport,
                Group::EngagementDecline,
                Group::DetractorFeedback
            ]
        );
        // Without the complaint, the symptom leads.
        let input = row(&[("activity_rate_vs_normal_7d", -3.0), ("nps_detractor", 0.1)]);
        assert_eq!(e.groups(&input)[0].group, Group::EngagementDecline);
    }

    #[test]
    fn a_trigger_that_came_during_the_decline_ranks_with_the_symptoms() {
        let m = model(&[
            ("activity_rate_vs_normal_7d", -1.0),
            ("complaints_28d", 1.0),
            ("support_tickets_28d", 1.0),
            ("nps_detractor", 1.0),
        ]);
        let e = Explainer::new(&m, Locale::default());
        // A complaint (1.0) after activity had fallen; a detractor answer (0.5) before it.
        let mut input = row(&[
            ("activity_rate_vs_normal_7d", -3.0),
            ("complaints_28d", 1.0),
            ("complaint_before_decline", 0.0),
            ("nps_detractor", 0.5),
            ("detractor_before_decline", 1.0),
        ]);
        let order: Vec<Group> = e.groups(&input).iter().map(|g| g.group).collect();
        assert_eq!(
            &order[..3],
            [
                Group::DetractorFeedback,
                Group::EngagementDecline,
                Group::ComplaintsSupport
            ]
        );
        // Neither before the decline: ranked by contribution, the symptom first.
        input[col("detractor_before_decline")] = 0.0;
        let order: Vec<Group> = e.groups(&input).iter().map(|g| g.group).collect();
        assert_eq!(
            &order[..3],
            [
                Group::EngagementDecline,
                Group::ComplaintsSupport,
                Group::DetractorFeedback
            ]
        );
        // Support tickets alone (no complaint, so the gate is 0) are no trigger either.
        let input = row(&[
            ("activity_rate_vs_normal_7d", -3.0),
            ("support_tickets_28d", 2.0),
        ]);
        assert_eq!(e.groups(&input)[0].group, Group::EngagementDecline);
    }

    #[test]
    fn locales_define_the_same_keys_and_texts_fill_every_placeholder() {
        let en = Locale::named("en").expect("en");
        let nl = Locale::named("nl").expect("nl");
        assert_eq!(
            en.templates.keys().collect::<Vec<_>>(),
            nl.templates.keys().collect::<Vec<_>>()
        );
        assert!(Locale::named("fr").is_err());
        let m = model(&[]);
        let raw_rows = [
            row(&[
                ("activity_rate_vs_normal_28d", 0.28),
                ("recency_activity_days", 3.0),
            ]),
            row(&[
                ("activity_rate_vs_normal_28d", 0.1),
                ("recency_activity_days", 20.0),
                ("visit_overdue", 4.0),
            ]),
            row(&[("nps_latest", 4.0), ("nps_trend_90d", -4.0)]),
            row(&[("nps_latest", 5.0)]),
            row(&[("nps_latest", 7.0)]),
            row(&[("nps_latest", 7.0), ("nps_missing", 1.0)]),
            row(&[("downgrades_90d", 1.0), ("mrr", 19.0)]),
            row(&[
                ("purchase_rate_vs_normal_28d", 0.5),
                ("recency_purchase_days", 10.0),
            ]),
            row(&[("recency_purchase_days", 60.0), ("purchase_overdue", 3.0)]),
        ];
        let mut keys = std::collections::BTreeSet::new();
        for locale in [en.clone(), nl] {
            let e = Explainer::new(&m, locale);
            for raw in &raw_rows {
                for g in Group::REASONS {
                    let (key, args) = e.text_args(g, &|n: &str| raw[col(n)]);
                    keys.insert(key);
                    let text = e.locale.render(key, &args);
                    assert!(!text.contains('{') && !text.contains('}'), "{key}: {text}");
                    assert_ne!(text, key, "{key} missing in {}", e.locale.name);
                }
            }
        }
        assert_eq!(
            keys.len(),
            en.templates.len(),
            "every template is reachable: {keys:?}"
        );
        let e = Explainer::new(&m, Locale::default());
        let (k, a) = e.text_args(Group::DetractorFeedback, &|n: &str| raw_rows[2][col(n)]);
        assert_eq!(e.locale.render(k, &a), "NPS 4 (detractor), was 8");
        let (k, a) = e.text_args(Group::EngagementDecline, &|n: &str| raw_rows[0][col(n)]);
        assert_eq!(
            e.locale.render(k, &a),
            "Activity 72 % below their own normal over the last 28 days; last active 3 days ago"
        );
    }

    #[test]
    fn reason_group_reads_old_alerts_by_feature() {
        let mut r = Reason {
            feature: "complaints_28d".into(),
            value: 1.0,
            contribution: 0.4,
            binding: "emotional".into(),
            description: String::new(),
            group: None,
            text: None,
        };
        assert_eq!(reason_group(&r), Some(Group::ComplaintsSupport));
        r.group = Some("price_sensitivity".into());
        assert_eq!(reason_group(&r), Some(Group::PriceSensitivity));
        r.feature = "subscribed".into();
        r.group = None;
        assert_eq!(reason_group(&r), Some(Group::Context));
    }
}
