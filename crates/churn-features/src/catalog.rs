//! The metric catalog: behavioural metrics a data team declares over its own event vocabulary,
//! with no code change, after the metric types of "Fighting Churn With Data" (Gold, 2020).
//!
//! A catalog has two parts:
//! - **counters**: what each event adds to a per-day count or sum kept in the customer's day
//!   rows ([`crate::rollup::DayRollup::catalog`]): engagement events of a `kind` and/or with a
//!   `feature` value, or purchases; a count (1 per event) or the sum of a numeric field
//!   (`duration_s`, `amount`, `items`, `discount`). Engagement events with a `feature` that no
//!   counter matches are counted in the implicit [`OTHER`] counter, never dropped silently.
//! - **metrics**: model inputs computed from the counters as of a day, appended to the built-in
//!   registry in declaration order: `count` (a counter over the last 7, 28 or 90 days), `change`
//!   (the relative change of a counter, last 7 or 28 days against the window before it:
//!   `(cur-prev)/(prev+1)`, capped at 5) and `ratio` (one value over another, 0 when the
//!   denominator is 0, capped at `cap`, default 100; each operand is an earlier metric of the
//!   catalog or, if no metric has that name, a counter over the ratio's `window`).
//!
//! The built-in registry ([`crate::registry::FEATURES`]) is the default catalog: an empty
//! catalog adds nothing, so state and features are exactly the built-in ones. Bounds (so state
//! stays bounded): at most [`MAX_COUNTERS`] counters (plus [`OTHER`]) and [`MAX_METRICS`]
//! metrics; a day row holds at most one value per counter.
//!
//! A [`FeatureSet`] is the built-in registry plus one catalog: what training, serving, reasons
//! and the model artifact read. The catalog is stored in the model artifact; serving refuses a
//! model whose catalog differs from its configuration ([`Catalog::diff`]).

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, LazyLock, Mutex};

use churn_events::{EngagementKind, Event, Payload};
use serde::{Deserialize, Serialize};

use crate::registry::{Binding, Direction, FeatureDef, Group, Transform, FEATURES};

/// Most counters a catalog may declare (the implicit [`OTHER`] counter comes on top).
pub const MAX_COUNTERS: usize = 31;
/// Most metrics a catalog may declare.
pub const MAX_METRICS: usize = 64;
/// Name of the implicit counter of engagement events whose `feature` no counter matched.
pub const OTHER: &str = "other";
/// Windows (days) a `count` metric may read; a `change` metric reads 7 or 28 (its previous
/// window must lie inside the 120 days of day rows kept).
pub const WINDOWS: [u32; 3] = [7, 28, 90];
/// Cap of a `change` metric (as the built-in `activity_change_28d`).
pub const CHANGE_CAP: f64 = 5.0;
/// Default cap of a `ratio` metric.
pub const RATIO_CAP: f64 = 100.0;

/// A metric catalog as written in the configuration (`[catalog]`) and stored in the model
/// artifact. See the module docs.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub counters: Vec<CounterDef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<MetricDef>,
}

/// Which events a counter sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CounterEvent {
    #[default]
    Engagement,
    Purchase,
}

/// A numeric field a counter may sum instead of counting events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SumField {
    /// Engagement `duration_s`.
    DurationS,
    /// Purchase `amount`.
    Amount,
    /// Purchase `items`.
    Items,
    /// Purchase `discount`.
    Discount,
}

/// One counter: which events it counts (or sums) per day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CounterDef {
    pub name: String,
    /// `engagement` (default) or `purchase`.
    #[serde(default)]
    pub event: CounterEvent,
    /// Engagement kind (`login`, `session`, `feature_use`, …); absent = any kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Engagement `feature` value; absent = any (or none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature: Option<String>,
    /// Sum this field instead of counting events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sum: Option<SumField>,
}

/// One metric (a model input). Exactly one of `count`, `change` and `ratio` is set.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricDef {
    pub name: String,
    /// A counter's total over the last `window` days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<String>,
    /// A counter's relative change, last `window` days against the `window` days before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<String>,
    /// `[numerator, denominator]`: each an earlier metric of this catalog or, if no metric has
    /// that name, a counter over `window` days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio: Option<[String; 2]>,
    /// Days (`count` and a ratio's counters: 7, 28 or 90; `change`: 7 or 28). Default 28.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<u32>,
    /// Cap of a `ratio` (default [`RATIO_CAP`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap: Option<f64>,
    /// `log1p` or `identity`; default `log1p` for `count`, `identity` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<String>,
    /// Reason group (default `engagement_decline`; `context` = scored, never a reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// `down` (default: a higher value means less risk) or `up`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
    /// `emotional` (default), `rational` or `structural`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A catalog that cannot be used, with what is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("catalog: {0}")]
pub struct CatalogError(pub String);

/// How a compiled metric is computed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Kind {
    Count {
        counter: u8,
        window: i32,
    },
    Change {
        counter: u8,
        window: i32,
    },
    Ratio {
        num: Operand,
        den: Operand,
        cap: f64,
    },
}

/// One side of a ratio.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Operand {
    /// An earlier metric (its index in the catalog).
    Metric(usize),
    /// A counter over a window.
    Counter(u8, i32),
}

/// A counter, compiled for matching.
#[derive(Debug, Clone, PartialEq)]
struct Matcher {
    event: CounterEvent,
    kind: Option<EngagementKind>,
    feature: Option<String>,
    sum: Option<SumField>,
}

/// A validated catalog, ready to match events and compute metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct Compiled {
    counters: Vec<Matcher>,
    /// Index of [`OTHER`] (after the declared counters), when some counter filters by feature.
    other: Option<u8>,
    pub(crate) metrics: Vec<Kind>,
}

impl Compiled {
    /// Whether the catalog keeps any per-day value.
    pub fn is_empty(&self) -> bool {
        self.counters.is_empty() && self.other.is_none()
    }

    /// What `ev` adds to the catalog's counters, as `(counter index, value)` pairs in index
    /// order, into `out` (cleared first). Returns whether the event fell into [`OTHER`].
    pub fn contributions(&self, ev: &Event, out: &mut Vec<(u8, f64)>) -> bool {
        out.clear();
        if self.is_empty() {
            return false;
        }
        let mut feature_matched = false;
        for (i, m) in self.counters.iter().enumerate() {
            let v = match (&ev.payload, m.event) {
                (Payload::Engagement(e), CounterEvent::Engagement) => {
                    if m.kind.is_some_and(|k| k != e.kind) {
                        continue;
                    }
                    if let Some(f) = &m.feature {
                        if e.feature.as_deref() != Some(f.as_str()) {
                            continue;
                        }
                        feature_matched = true;
                    }
                    match m.sum {
                        Some(SumField::DurationS) => e.duration_s.unwrap_or(0.0),
                        _ => 1.0,
                    }
                }
                (Payload::Purchase(p), CounterEvent::Purchase) => match m.sum {
                    Some(SumField::Amount) => p.amount,
                    Some(SumField::Items) => f64::from(p.items),
                    Some(SumField::Discount) => p.discount.unwrap_or(0.0),
                    _ => 1.0,
                },
                _ => continue,
            };
            out.push((i as u8, v));
        }
        match (&ev.payload, self.other) {
            (Payload::Engagement(e), Some(o)) if e.feature.is_some() && !feature_matched => {
                out.push((o, 1.0));
                true
            }
            _ => false,
        }
    }

    /// Number of counters, [`OTHER`] included.
    pub fn counter_count(&self) -> usize {
        self.counters.len() + usize::from(self.other.is_some())
    }
}

fn parse_transform(s: &str) -> Option<Transform> {
    match s {
        "log1p" => Some(Transform::Log1p),
        "identity" => Some(Transform::Identity),
        _ => None,
    }
}

fn parse_direction(s: &str) -> Option<Direction> {
    match s {
        "up" => Some(Direction::Up),
        "down" => Some(Direction::Down),
        _ => None,
    }
}

fn parse_binding(s: &str) -> Option<Binding> {
    match s {
        "emotional" => Some(Binding::Emotional),
        "rational" => Some(Binding::Rational),
        "structural" => Some(Binding::Structural),
        _ => None,
    }
}

/// Names and descriptions of catalog features live as long as the process (feature
/// definitions are `&'static`); each distinct string is stored once, however often a catalog
/// is loaded.
fn intern(s: &str) -> &'static str {
    static STRINGS: LazyLock<Mutex<HashSet<&'static str>>> = LazyLock::new(Default::default);
    let mut set = STRINGS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(k) = set.get(s) {
        return k;
    }
    let k: &'static str = Box::leak(s.to_owned().into_boxed_str());
    set.insert(k);
    k
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl Catalog {
    /// Parse a catalog from TOML (the `[catalog]` table's contents).
    pub fn from_toml(s: &str) -> Result<Catalog, CatalogError> {
        toml::from_str(s).map_err(|e| CatalogError(e.to_string()))
    }

    pub fn is_empty(&self) -> bool {
        self.counters.is_empty() && self.metrics.is_empty()
    }

    /// Check the catalog and compile it, with the feature definitions of its metrics.
    pub fn compile(&self) -> Result<(Compiled, Vec<FeatureDef>), CatalogError> {
        let err = |m: String| Err(CatalogError(m));
        if self.counters.len() > MAX_COUNTERS {
            return err(format!(
                "{} counters, at most {MAX_COUNTERS} allowed",
                self.counters.len()
            ));
        }
        if self.metrics.len() > MAX_METRICS {
            return err(format!(
                "{} metrics, at most {MAX_METRICS} allowed",
                self.metrics.len()
            ));
        }
        let mut counters = Vec::new();
        let mut counter_names: Vec<&str> = Vec::new();
        for c in &self.counters {
            if !valid_name(&c.name) || c.name == OTHER {
                return err(format!(
                    "counter name `{}`: use 1-64 of a-z, 0-9 and _ (and not `{OTHER}`)",
                    c.name
                ));
            }
            if counter_names.contains(&c.name.as_str()) {
                return err(format!("counter `{}` is declared twice", c.name));
            }
            counter_names.push(&c.name);
            let kind = match (&c.kind, c.event) {
                (None, _) => None,
                (Some(k), CounterEvent::Engagement) => match EngagementKind::parse(k) {
                    Some(k) => Some(k),
                    None => {
                        return err(format!(
                            "counter `{}`: unknown engagement kind `{k}` (one of {}); put your own \
                             action names in `feature`",
                            c.name,
                            EngagementKind::ALL.map(|k| k.as_str()).join(", ")
                        ))
                    }
                },
                (Some(_), CounterEvent::Purchase) => {
                    return err(format!(
                        "counter `{}`: `kind` is for engagement events",
                        c.name
                    ))
                }
            };
            if c.event == CounterEvent::Purchase && c.feature.is_some() {
                return err(format!(
                    "counter `{}`: `feature` is for engagement events",
                    c.name
                ));
            }
            let sum_ok = match (c.sum, c.event) {
                (None, _) => true,
                (Some(SumField::DurationS), e) => e == CounterEvent::Engagement,
                (Some(_), e) => e == CounterEvent::Purchase,
            };
            if !sum_ok {
                return err(format!(
                    "counter `{}`: `sum` must be duration_s for engagement, amount/items/discount \
                     for purchase",
                    c.name
                ));
            }
            counters.push(Matcher {
                event: c.event,
                kind,
                feature: c.feature.clone(),
                sum: c.sum,
            });
        }
        let other = counters
            .iter()
            .any(|m| m.feature.is_some())
            .then_some(counters.len() as u8);
        let counter = |name: &str| -> Option<u8> {
            if name == OTHER {
                return other;
            }
            counter_names
                .iter()
                .position(|n| *n == name)
                .map(|i| i as u8)
        };
        let mut names: BTreeSet<&str> = FEATURES.iter().map(|d| d.name).collect();
        let mut metric_names: Vec<&str> = Vec::new();
        let mut kinds = Vec::new();
        let mut defs = Vec::new();
        for m in &self.metrics {
            let at = format!("metric `{}`", m.name);
            if !valid_name(&m.name) {
                return err(format!("{at}: use 1-64 of a-z, 0-9 and _"));
            }
            if !names.insert(&m.name) {
                return err(format!(
                    "{at}: the name is taken (a built-in feature or an earlier metric)"
                ));
            }
            let set = [m.count.is_some(), m.change.is_some(), m.ratio.is_some()];
            if set.iter().filter(|s| **s).count() != 1 {
                return err(format!("{at}: set exactly one of count, change, ratio"));
            }
            let window = m.window.unwrap_or(28) as i32;
            let find = |c: &str| {
                counter(c).ok_or_else(|| {
                    CatalogError(format!(
                        "{at}: no counter `{c}` (declared: {})",
                        if counter_names.is_empty() {
                            "none".to_owned()
                        } else {
                            counter_names.join(", ")
                        }
                    ))
                })
            };
            let kind = if let Some(c) = &m.count {
                if !WINDOWS.contains(&(window as u32)) {
                    return err(format!("{at}: window {window}, one of 7, 28, 90"));
                }
                Kind::Count {
                    counter: find(c)?,
                    window,
                }
            } else if let Some(c) = &m.change {
                if ![7, 28].contains(&window) {
                    return err(format!(
                        "{at}: change window {window}, one of 7, 28 (the previous window must lie \
                         within the 120 days of day rows kept)"
                    ));
                }
                Kind::Change {
                    counter: find(c)?,
                    window,
                }
            } else {
                let [num, den] = m
                    .ratio
                    .as_ref()
                    .map_or([""; 2], |[a, b]| [a.as_str(), b.as_str()]);
                if !WINDOWS.contains(&(window as u32)) {
                    return err(format!("{at}: window {window}, one of 7, 28, 90"));
                }
                let pos = |n: &str| match metric_names.iter().position(|x| *x == n) {
                    Some(i) => Ok(Operand::Metric(i)),
                    None => counter(n)
                        .map(|c| Operand::Counter(c, window))
                        .ok_or_else(|| {
                            CatalogError(format!(
                                "{at}: ratio of `{n}`, which is neither an earlier metric nor a \
                                 counter of the catalog"
                            ))
                        }),
                };
                let cap = m.cap.unwrap_or(RATIO_CAP);
                if !(cap.is_finite() && cap > 0.0) {
                    return err(format!("{at}: cap must be a positive number"));
                }
                Kind::Ratio {
                    num: pos(num)?,
                    den: pos(den)?,
                    cap,
                }
            };
            let transform = match &m.transform {
                None if matches!(kind, Kind::Count { .. }) => Transform::Log1p,
                None => Transform::Identity,
                Some(t) => parse_transform(t).ok_or_else(|| {
                    CatalogError(format!("{at}: transform `{t}`, log1p or identity"))
                })?,
            };
            let group = match &m.group {
                None => Group::EngagementDecline,
                Some(g) => Group::parse(g).ok_or_else(|| {
                    CatalogError(format!(
                        "{at}: group `{g}`, one of {}",
                        Group::REASONS
                            .iter()
                            .chain([Group::Context].iter())
                            .map(|g| g.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?,
            };
            let direction = match &m.direction {
                None => Direction::Down,
                Some(d) => parse_direction(d)
                    .ok_or_else(|| CatalogError(format!("{at}: direction `{d}`, up or down")))?,
            };
            let binding = match &m.binding {
                None => Binding::Emotional,
                Some(b) => parse_binding(b).ok_or_else(|| {
                    CatalogError(format!(
                        "{at}: binding `{b}`, emotional, rational or structural"
                    ))
                })?,
            };
            let description = m.description.clone().unwrap_or_else(|| match &kind {
                Kind::Count { window, .. } => format!(
                    "{} over the last {window} days (catalog)",
                    m.count.as_deref().unwrap_or_default()
                ),
                Kind::Change { window, .. } => format!(
                    "Relative change of {}, last {window} d vs the {window} d before: \
                     (cur-prev)/(prev+1), capped at 5 (catalog)",
                    m.change.as_deref().unwrap_or_default()
                ),
                Kind::Ratio { cap, .. } => {
                    let [a, b] = m.ratio.clone().unwrap_or_default();
                    format!("{a} / {b} (0 when the denominator is 0; capped at {cap}) (catalog)")
                }
            });
            metric_names.push(&m.name);
            kinds.push(kind);
            defs.push(FeatureDef {
                name: intern(&m.name),
                description: intern(&description),
                binding,
                transform,
                group,
                direction,
            });
        }
        Ok((
            Compiled {
                counters,
                other,
                metrics: kinds,
            },
            defs,
        ))
    }

    /// What differs between `self` (e.g. a model's) and `other` (e.g. the configuration's), in
    /// words; `None` when equal.
    pub fn diff(&self, other: &Catalog) -> Option<String> {
        if self == other {
            return None;
        }
        let mut out = Vec::new();
        diff_named(
            "counter",
            &self.counters,
            &other.counters,
            |c| &c.name,
            &mut out,
        );
        diff_named(
            "metric",
            &self.metrics,
            &other.metrics,
            |m| &m.name,
            &mut out,
        );
        if out.is_empty() {
            out.push("same definitions in a different order".to_owned());
        }
        Some(out.join("; "))
    }
}

/// What differs between two lists of named definitions (`ours` the model's, `theirs` the
/// configuration's), in words, into `out`.
fn diff_named<T: PartialEq>(
    what: &str,
    ours: &[T],
    theirs: &[T],
    name: impl Fn(&T) -> &String,
    out: &mut Vec<String>,
) {
    let find = |list: &'_ [T], n: &String| list.iter().find(|x| name(x) == n).map(|_| ());
    for x in ours.iter().filter(|x| find(theirs, name(x)).is_none()) {
        out.push(format!("{what} `{}` only in the model", name(x)));
    }
    for x in theirs.iter().filter(|x| find(ours, name(x)).is_none()) {
        out.push(format!("{what} `{}` only in the config", name(x)));
    }
    for x in ours {
        if theirs.iter().any(|o| name(o) == name(x) && o != x) {
            out.push(format!("{what} `{}` defined differently", name(x)));
        }
    }
}

/// The built-in registry plus one catalog: every feature, in model-input order, and how to
/// compute the catalog's part. Cheap to clone (shared).
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureSet {
    inner: Arc<Inner>,
}

#[derive(Debug, PartialEq)]
struct Inner {
    catalog: Catalog,
    compiled: Compiled,
    defs: Vec<FeatureDef>,
}

impl Default for FeatureSet {
    fn default() -> Self {
        FeatureSet::builtin()
    }
}

impl FeatureSet {
    /// The built-in registry alone (the default, empty catalog).
    pub fn builtin() -> FeatureSet {
        static BUILTIN: LazyLock<FeatureSet> = LazyLock::new(|| {
            FeatureSet::new(Catalog::default()).unwrap_or_else(|e| unreachable!("{e}"))
        });
        BUILTIN.clone()
    }

    /// The registry plus `catalog` (checked).
    pub fn new(catalog: Catalog) -> Result<FeatureSet, CatalogError> {
        let (compiled, extra) = catalog.compile()?;
        let mut defs = FEATURES.to_vec();
        defs.extend(extra);
        Ok(FeatureSet {
            inner: Arc::new(Inner {
                catalog,
                compiled,
                defs,
            }),
        })
    }

    /// Every feature, in model-input order (the registry's, then the catalog's metrics).
    pub fn defs(&self) -> &[FeatureDef] {
        &self.inner.defs
    }

    pub fn len(&self) -> usize {
        self.inner.defs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.defs.is_empty()
    }

    /// The catalog's metric definitions (after the registry's in [`defs`](Self::defs)).
    pub fn catalog_defs(&self) -> &[FeatureDef] {
        &self.inner.defs[FEATURES.len()..]
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.inner.defs.iter().map(|d| d.name).collect()
    }

    pub fn get(&self, name: &str) -> Option<&FeatureDef> {
        self.inner.defs.iter().find(|d| d.name == name)
    }

    pub fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    pub fn compiled(&self) -> &Compiled {
        &self.inner.compiled
    }

    /// Raw feature row → model input row (applies each feature's [`Transform`]).
    pub fn model_input(&self, raw: &[f64], out: &mut Vec<f64>) {
        out.clear();
        out.extend(
            raw.iter()
                .zip(self.defs())
                .map(|(&v, d)| match d.transform {
                    Transform::Identity => v,
                    Transform::Log1p => v.max(0.0).ln_1p(),
                }),
        );
    }
}

/// Per-customer accumulation of the catalog's windows as of a day (the feature query's part
/// for the catalog; see [`crate::features`]).
pub(crate) struct Windows<'a> {
    compiled: &'a Compiled,
    /// Per counter: sums over the last 7, 28, 90 days and the 7 / 28 days before the last 7 / 28.
    sums: Vec<[f64; 5]>,
}

impl<'a> Windows<'a> {
    pub(crate) fn new(compiled: &'a Compiled) -> Self {
        Windows {
            compiled,
            sums: vec![[0.0; 5]; compiled.counter_count()],
        }
    }

    pub(crate) fn reset(&mut self) {
        for s in &mut self.sums {
            *s = [0.0; 5];
        }
    }

    /// Add a day row's catalog values (`age` = as_of - day, ≥ 0).
    pub(crate) fn add(&mut self, values: &[(u8, f64)], age: i32) {
        for &(i, v) in values {
            let Some(s) = self.sums.get_mut(usize::from(i)) else {
                continue;
            };
            if age < 7 {
                s[0] += v;
            } else if age < 14 {
                s[3] += v;
            }
            if age < 28 {
                s[1] += v;
            } else if age < 56 {
                s[4] += v;
            }
            if age < 90 {
                s[2] += v;
            }
        }
    }

    /// A counter's sums (zeros for an index out of range).
    fn sums_of(&self, counter: u8) -> [f64; 5] {
        self.sums
            .get(usize::from(counter))
            .copied()
            .unwrap_or_default()
    }

    /// A counter's total over the last `window` days (7, 28 or 90).
    fn sum(&self, counter: u8, window: i32) -> f64 {
        let s = self.sums_of(counter);
        match window {
            7 => s[0],
            28 => s[1],
            _ => s[2],
        }
    }

    /// The metric values, in catalog order, into `out` (cleared first).
    pub(crate) fn values(&self, out: &mut Vec<f64>) {
        out.clear();
        for k in &self.compiled.metrics {
            let v = match *k {
                Kind::Count { counter, window } => self.sum(counter, window),
                Kind::Change { counter, window } => {
                    let s = self.sums_of(counter);
                    let (cur, prev) = if window == 7 {
                        (s[0], s[3])
                    } else {
                        (s[1], s[4])
                    };
                    ((cur - prev) / (prev + 1.0)).min(CHANGE_CAP)
                }
                Kind::Ratio { num, den, cap } => {
                    let value = |o: Operand, out: &Vec<f64>| match o {
                        Operand::Metric(i) => out.get(i).copied().unwrap_or(0.0),
                        Operand::Counter(c, w) => self.sum(c, w),
                    };
                    let (n, d) = (value(num, out), value(den, out));
                    if d > 0.0 {
                        (n / d).min(cap)
                    } else {
                        0.0
                    }
                }
            };
            out.push(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const SOCIAL: &str = r#"
        [[counters]]
        name = "post"
        feature = "post"
        [[counters]]
        name = "like"
        kind = "feature_use"
        feature = "like"
        [[counters]]
        name = "session_seconds"
        kind = "session"
        sum = "duration_s"
        [[counters]]
        name = "spend"
        event = "purchase"
        sum = "amount"
        [[metrics]]
        name = "posts_28d"
        count = "post"
        [[metrics]]
        name = "likes_28d"
        count = "like"
        [[metrics]]
        name = "likes_per_post_28d"
        ratio = ["likes_28d", "posts_28d"]
        direction = "down"
        [[metrics]]
        name = "posts_change_7d"
        change = "post"
        window = 7
        [[metrics]]
        name = "other_28d"
        count = "other"
        group = "context"
        [[metrics]]
        name = "likes_per_post_7d"
        ratio = ["like", "post"]
        window = 7
    "#;

    fn ev(payload: Payload) -> Event {
        Event {
            event_id: "e".into(),
            customer_id: "c".into(),
            occurred_at: chrono::DateTime::from_timestamp(0, 0).unwrap_or_default(),
            payload,
        }
    }

    fn eng(kind: EngagementKind, feature: Option<&str>, d: Option<f64>) -> Event {
        ev(Payload::Engagement(churn_events::Engagement {
            kind,
            duration_s: d,
            feature: feature.map(String::from),
        }))
    }

    #[test]
    fn counters_match_kind_feature_and_sum_fields_and_the_rest_is_other() {
        let cat = Catalog::from_toml(SOCIAL).expect("parses");
        let set = FeatureSet::new(cat).expect("valid");
        let c = set.compiled();
        let mut out = Vec::new();
        assert!(!c.contributions(
            &eng(EngagementKind::FeatureUse, Some("post"), None),
            &mut out
        ));
        assert_eq!(out, [(0, 1.0)]);
        // `like` requires kind feature_use.
        assert!(c.contributions(&eng(EngagementKind::Login, Some("like"), None), &mut out));
        assert_eq!(out, [(4, 1.0)], "a like that is not a feature use is other");
        c.contributions(
            &eng(EngagementKind::FeatureUse, Some("like"), None),
            &mut out,
        );
        assert_eq!(out, [(1, 1.0)]);
        // An action no counter names: other, counted.
        assert!(c.contributions(
            &eng(EngagementKind::FeatureUse, Some("unfriend"), None),
            &mut out
        ));
        assert_eq!(out, [(4, 1.0)]);
        // No feature at all: not other.
        assert!(!c.contributions(&eng(EngagementKind::Session, None, Some(30.0)), &mut out));
        assert_eq!(out, [(2, 30.0)]);
        c.contributions(
            &ev(Payload::Purchase(churn_events::Purchase {
                order_id: "o".into(),
                amount: 12.5,
                currency: "EUR".into(),
                items: 1,
                discount: None,
            })),
            &mut out,
        );
        assert_eq!(out, [(3, 12.5)]);
        assert_eq!(set.len(), FEATURES.len() + 6);
        assert_eq!(set.catalog_defs()[0].name, "posts_28d");
        assert_eq!(set.catalog_defs()[0].transform, Transform::Log1p);
        assert_eq!(set.catalog_defs()[2].transform, Transform::Identity);
        assert_eq!(set.catalog_defs()[4].group, Group::Context);
    }

    #[test]
    fn windows_ratios_and_changes() {
        let set = FeatureSet::new(Catalog::from_toml(SOCIAL).expect("parses")).expect("valid");
        let mut w = Windows::new(set.compiled());
        // 4 posts and 10 likes this week, 2 posts the week before, 1 post 40 days ago.
        w.add(&[(0, 4.0), (1, 10.0)], 2);
        w.add(&[(0, 2.0)], 9);
        w.add(&[(0, 1.0)], 40);
        let mut out = Vec::new();
        w.values(&mut out);
        assert_eq!(out[0], 6.0, "posts_28d");
        assert_eq!(out[1], 10.0, "likes_28d");
        assert!((out[2] - 10.0 / 6.0).abs() < 1e-12, "likes_per_post_28d");
        assert!(
            (out[3] - (4.0 - 2.0) / 3.0).abs() < 1e-12,
            "posts_change_7d"
        );
        assert_eq!(out[4], 0.0);
        assert!(
            (out[5] - 10.0 / 4.0).abs() < 1e-12,
            "likes_per_post_7d from counters"
        );
        w.reset();
        w.values(&mut out);
        assert_eq!(out, [0.0; 6], "no posts: the ratio is 0, not NaN");
    }

    #[test]
    fn bad_catalogs_say_what_is_wrong() {
        for (toml, want) in [
            ("[[metrics]]\nname = \"x\"\ncount = \"nope\"", "no counter `nope`"),
            ("[[metrics]]\nname = \"recency_purchase_days\"\ncount = \"other\"", "taken"),
            ("[[counters]]\nname = \"a\"\nkind = \"teleport\"", "unknown engagement kind"),
            ("[[counters]]\nname = \"a\"\nevent = \"purchase\"\nsum = \"duration_s\"", "sum"),
            ("[[counters]]\nname = \"a\"\n[[metrics]]\nname = \"m\"\ncount = \"a\"\nwindow = 30", "window 30"),
            ("[[counters]]\nname = \"a\"\n[[metrics]]\nname = \"m\"\nchange = \"a\"\nwindow = 90", "change window"),
            ("[[counters]]\nname = \"a\"\n[[metrics]]\nname = \"m\"\ncount = \"a\"\nchange = \"a\"", "exactly one"),
            ("[[metrics]]\nname = \"m\"\nratio = [\"a\", \"b\"]", "neither an earlier metric nor a counter"),
            ("[[counters]]\nname = \"Bad Name\"", "counter name"),
        ] {
            let e = Catalog::from_toml(toml)
                .and_then(|c| FeatureSet::new(c).map(|_| ()))
                .expect_err(toml);
            assert!(e.0.contains(want), "{toml}: {e}");
        }
        let e = Catalog::from_toml("[[counter]]\nname = \"a\"").expect_err("typo");
        assert!(e.0.contains("unknown field"), "{e}");
        let many = (0..=MAX_COUNTERS)
            .map(|i| format!("[[counters]]\nname = \"c{i}\"\n"))
            .collect::<String>();
        let e = FeatureSet::new(Catalog::from_toml(&many).expect("parses")).expect_err("too many");
        assert!(e.0.contains("at most"), "{e}");
    }

    #[test]
    fn diff_names_the_difference() {
        let a = Catalog::from_toml(SOCIAL).expect("parses");
        assert_eq!(a.diff(&a.clone()), None);
        let mut b = a.clone();
        b.metrics.pop();
        b.metrics[0].window = Some(7);
        let d = a.diff(&b).expect("differs");
        assert!(
            d.contains("metric `likes_per_post_7d` only in the model"),
            "{d}"
        );
        assert!(d.contains("metric `posts_28d` defined differently"), "{d}");
        assert!(Catalog::default()
            .diff(&a)
            .expect("differs")
            .contains("only in the config"));
    }
}
