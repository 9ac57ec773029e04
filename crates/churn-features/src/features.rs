//! Rollups → feature frame "as of" a day, as one polars query.
//!
//! [`RollupFrames::build`] turns any set of [`CustomerRollups`] into two frames as of the end of
//! a UTC day (window-bucket rows and per-customer rows); [`feature_frame`] evaluates every feature
//! of the registry over them. The batch path calls both once per observation date over full
//! history; the streaming path calls them per micro-batch over the customers it touched. Same
//! functions, same numbers.

use polars::prelude::*;

use crate::catalog::{FeatureSet, Windows};
use crate::registry::RECENCY_CAP_DAYS;
use crate::rollup::{Carry, CustomerRollups, DayRollup, COMPLAINT_INDEX, LOGIN_INDEX};
use crate::Error;

/// Rollups laid out for polars, as of the end of one UTC day. `cid` is the position of the
/// customer in the slice given to [`RollupFrames::build`].
///
/// `days` holds at most four rows per customer: its day rows up to `as_of`, summed per feature
/// window — `(as_of-28, as_of]`, `(as_of-56, as_of-28]`, `(as_of-90, as_of-56]` and everything
/// older. Every window a feature reads is a union of these buckets, so the query sees the same
/// sums, maxima and first/last values as over the raw day rows, with ~15× fewer rows (a
/// customer keeps up to [`crate::RETAIN_DAYS`] day rows). A bucket row's `day` is its latest day;
/// `last_purchase_day` / `last_login_day` are its latest day with a purchase / login.
pub struct RollupFrames {
    pub as_of: i32,
    pub days: DataFrame,
    pub customers: DataFrame,
    /// The metric catalog's feature columns of `customers`, in model-input order (after the
    /// registry's): what [`feature_frame`] appends.
    pub catalog: Vec<&'static str>,
}

const KIND_COLS: [&str; 8] = [
    "login",
    "session",
    "page_view",
    "feature_use",
    "email_open",
    "email_click",
    "support_ticket",
    "complaint",
];

/// Window bucket of `day` as of `as_of` (0 = the latest 28 days … 3 = 90 days ago or older).
fn bucket(as_of: i32, day: i32) -> u8 {
    match as_of - day {
        ..28 => 0,
        28..56 => 1,
        56..90 => 2,
        _ => 3,
    }
}

/// One bucket of day rows, summed.
#[derive(Default)]
struct Bucket {
    day: i32,
    last_purchase_day: Option<i32>,
    last_login_day: Option<i32>,
    purchases: f64,
    revenue: f64,
    discount: f64,
    kinds: [f64; 8],
    session_seconds: f64,
    nps_first: Option<f64>,
    nps_last: Option<f64>,
    mrr_last: Option<f64>,
    upgrades: f64,
    downgrades: f64,
}

impl Bucket {
    fn add(&mut self, r: &DayRollup) {
        self.day = r.day;
        if r.purchases > 0 {
            self.last_purchase_day = Some(r.day);
        }
        if r.engagement[LOGIN_INDEX] > 0 {
            self.last_login_day = Some(r.day);
        }
        self.purchases += f64::from(r.purchases);
        self.revenue += r.revenue;
        self.discount += r.discount;
        for (k, v) in self.kinds.iter_mut().zip(r.engagement) {
            *k += f64::from(v);
        }
        self.session_seconds += r.session_seconds;
        if self.nps_first.is_none() {
            self.nps_first = r.nps_first.map(|s| f64::from(s.value));
        }
        if let Some(s) = r.nps_last {
            self.nps_last = Some(f64::from(s.value));
        }
        if let Some(s) = r.mrr_last {
            self.mrr_last = Some(s.value);
        }
        self.upgrades += f64::from(r.upgrades);
        self.downgrades += f64::from(r.downgrades);
    }
}

/// Column buffers of the `days` frame.
struct DayCols {
    cid: Vec<u32>,
    day: Vec<i32>,
    last_purchase_day: Vec<Option<i32>>,
    last_login_day: Vec<Option<i32>>,
    purchases: Vec<f64>,
    revenue: Vec<f64>,
    discount: Vec<f64>,
    kinds: [Vec<f64>; 8],
    session_seconds: Vec<f64>,
    nps_first: Vec<Option<f64>>,
    nps_last: Vec<Option<f64>>,
    mrr_last: Vec<Option<f64>>,
    upgrades: Vec<f64>,
    downgrades: Vec<f64>,
}

impl DayCols {
    fn with_capacity(n: usize) -> Self {
        DayCols {
            cid: Vec::with_capacity(n),
            day: Vec::with_capacity(n),
            last_purchase_day: Vec::with_capacity(n),
            last_login_day: Vec::with_capacity(n),
            purchases: Vec::with_capacity(n),
            revenue: Vec::with_capacity(n),
            discount: Vec::with_capacity(n),
            kinds: std::array::from_fn(|_| Vec::with_capacity(n)),
            session_seconds: Vec::with_capacity(n),
            nps_first: Vec::with_capacity(n),
            nps_last: Vec::with_capacity(n),
            mrr_last: Vec::with_capacity(n),
            upgrades: Vec::with_capacity(n),
            downgrades: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, cid: u32, b: Bucket) {
        self.cid.push(cid);
        self.day.push(b.day);
        self.last_purchase_day.push(b.last_purchase_day);
        self.last_login_day.push(b.last_login_day);
        self.purchases.push(b.purchases);
        self.revenue.push(b.revenue);
        self.discount.push(b.discount);
        for (k, v) in self.kinds.iter_mut().zip(b.kinds) {
            k.push(v);
        }
        self.session_seconds.push(b.session_seconds);
        self.nps_first.push(b.nps_first);
        self.nps_last.push(b.nps_last);
        self.mrr_last.push(b.mrr_last);
        self.upgrades.push(b.upgrades);
        self.downgrades.push(b.downgrades);
    }

    fn into_frame(self) -> Result<DataFrame, Error> {
        let mut cols = vec![
            Column::new("cid".into(), self.cid),
            Column::new("day".into(), self.day),
            Column::new("last_purchase_day".into(), self.last_purchase_day),
            Column::new("last_login_day".into(), self.last_login_day),
            Column::new("purchases".into(), self.purchases),
            Column::new("revenue".into(), self.revenue),
            Column::new("discount".into(), self.discount),
        ];
        for (name, v) in KIND_COLS.iter().zip(self.kinds) {
            cols.push(Column::new((*name).into(), v));
        }
        cols.extend([
            Column::new("session_seconds".into(), self.session_seconds),
            Column::new("nps_first".into(), self.nps_first),
            Column::new("nps_last".into(), self.nps_last),
            Column::new("mrr_last".into(), self.mrr_last),
            Column::new("upgrades".into(), self.upgrades),
            Column::new("downgrades".into(), self.downgrades),
        ]);
        Ok(DataFrame::new_infer_height(cols)?)
    }
}

/// Lifetime totals of one customer as of a day: the carry (expired days) with the day rows up
/// to that day folded in exactly as expiry would fold them, and the activity of the latest 7
/// and 28 days.
#[derive(Default)]
struct Lifetime {
    totals: Carry,
    active_days_7d: u32,
    active_days_28d: u32,
    purchases_28d: f64,
}

/// Caps of the ratio features (a customer 40× overdue is as gone as one 50× overdue).
const OVERDUE_CAP: f64 = 50.0;
const RATE_RATIO_CAP: f64 = 10.0;
const CV_CAP: f64 = 5.0;

impl Lifetime {
    fn start(c: &Carry) -> Self {
        Lifetime {
            totals: c.clone(),
            ..Lifetime::default()
        }
    }

    /// Add a day row (in increasing day order, after the carry's days, `<= as_of`).
    fn add(&mut self, r: &DayRollup, as_of: i32) {
        self.totals.fold(r);
        if as_of - r.day < 7 {
            self.active_days_7d += 1;
        }
        if as_of - r.day < 28 {
            self.active_days_28d += 1;
            self.purchases_28d += f64::from(r.purchases);
        }
    }

    /// The lifetime features, in [`LIFETIME_FEATURES`] order, of a customer whose first event
    /// is on `first_day`, as of the end of day `as_of`.
    fn features(&self, first_day: i32, as_of: i32) -> [f64; LIFETIME_FEATURES.len()] {
        let t = &self.totals;
        let tenure = f64::from((as_of - first_day + 1).max(1));
        let orders = f64::from(t.orders);
        let pd = f64::from(t.purchase_days);
        let ad = f64::from(t.active_days);
        let rec_p = t.last_purchase_day.map(|l| f64::from(as_of - l));
        let rec_a = t.last_activity_day.map(|l| f64::from(as_of - l));
        let span = match (t.first_purchase_day, t.last_purchase_day) {
            (Some(f), Some(l)) => f64::from(l - f),
            _ => 0.0,
        };
        let gap_mean = if pd >= 2.0 { span / (pd - 1.0) } else { 0.0 };
        let gap_cv = if pd >= 3.0 && gap_mean > 0.0 {
            let var = (t.purchase_gap_sq as f64 / (pd - 1.0) - gap_mean * gap_mean).max(0.0);
            (var.sqrt() / gap_mean).min(CV_CAP)
        } else {
            0.0
        };
        let overdue = match rec_p {
            Some(r) if gap_mean > 0.0 => (r / gap_mean).min(OVERDUE_CAP),
            _ => 0.0,
        };
        let visit_gap = match t.last_activity_day {
            Some(l) if ad >= 2.0 && l > first_day => f64::from(l - first_day) / (ad - 1.0),
            _ => 0.0,
        };
        let visit_overdue = match rec_a {
            Some(r) if visit_gap > 0.0 => (r / visit_gap).min(OVERDUE_CAP),
            _ => 0.0,
        };
        // Recent rate over a window (shorter for new customers) against the lifetime rate,
        // both smoothed by half an event: 1 = as usual, < 1 = slowing down.
        let vs_normal = |recent: f64, window: f64, total: f64| {
            let w = window.min(tenure);
            (((recent + 0.5) / w) / ((total + 0.5) / tenure)).min(RATE_RATIO_CAP)
        };
        [
            orders,
            pd,
            t.revenue,
            if orders > 0.0 {
                t.revenue / orders
            } else {
                0.0
            },
            ad,
            ad / tenure,
            if t.purchase_days == 1 { 1.0 } else { 0.0 },
            t.first_purchase_day
                .map_or(0.0, |f| f64::from(as_of - f + 1)),
            span,
            gap_mean,
            gap_cv,
            overdue,
            visit_overdue,
            vs_normal(self.purchases_28d, 28.0, orders),
            vs_normal(f64::from(self.active_days_28d), 28.0, ad),
            vs_normal(f64::from(self.active_days_7d), 7.0, ad),
        ]
    }
}

/// Names of the features [`Lifetime::features`] computes (columns of the `customers` frame,
/// selected as they are by [`feature_frame`]).
pub(crate) const LIFETIME_FEATURES: [&str; 16] = [
    "orders_lifetime",
    "purchase_days_lifetime",
    "revenue_lifetime",
    "avg_order_value_lifetime",
    "active_days_lifetime",
    "active_day_share",
    "one_time_buyer",
    "purchase_age_days",
    "purchase_span_days",
    "purchase_gap_mean_days",
    "purchase_gap_cv",
    "purchase_overdue",
    "visit_overdue",
    "purchase_rate_vs_normal_28d",
    "activity_rate_vs_normal_28d",
    "activity_rate_vs_normal_7d",
];

/// Days a trigger's timing looks back (the latest complaint, detractor answer or downgrade of
/// this many days, and the activity before it): the longest feature window, so the timing
/// features are the same with or without expiry.
const TIMING_DAYS: i32 = 90;
/// Days before a trigger whose activity is compared with the customer's normal.
const TIMING_PRE_DAYS: i32 = 14;
/// Active-day rate in the days before a trigger, over the customer's normal before that, at or
/// above which the trigger came "before the decline" (the customer was still about as active as
/// usual when it happened).
const TIMING_AS_USUAL: f64 = 0.7;

/// When the latest triggers of one customer happened, relative to their activity (one pass over
/// the day rows of the last [`TIMING_DAYS`], no state of its own): a complaint, a detractor
/// answer or a downgrade that came while the customer was still active as usual may have set a
/// decline off; one that came when activity had already fallen is part of the decline.
#[derive(Default)]
struct Timing {
    /// Bit `k`: the customer was active (a purchase or any engagement) on day `as_of - k`.
    active: u128,
    last_complaint: Option<i32>,
    /// Day and score of the latest NPS answer.
    last_nps: Option<(i32, u8)>,
    last_downgrade: Option<i32>,
}

impl Timing {
    /// Add a day row (increasing day order, `<= as_of`).
    fn add(&mut self, r: &DayRollup, as_of: i32) {
        let age = as_of - r.day;
        if !(0..TIMING_DAYS).contains(&age) {
            return;
        }
        if r.purchases > 0 || r.engagement.iter().any(|&n| n > 0) {
            self.active |= 1u128 << age;
        }
        if r.engagement[COMPLAINT_INDEX] > 0 {
            self.last_complaint = Some(r.day);
        }
        if let Some(n) = r.nps_last {
            self.last_nps = Some((r.day, n.value));
        }
        if r.downgrades > 0 {
            self.last_downgrade = Some(r.day);
        }
    }

    /// Active days among days `from..=to` (as of `as_of`).
    fn active_days(&self, as_of: i32, from: i32, to: i32) -> u32 {
        let (lo, hi) = (as_of - to, as_of - from);
        if hi < lo {
            return 0;
        }
        let width = (hi - lo + 1) as u32;
        let mask = if width >= 128 {
            u128::MAX
        } else {
            (1u128 << width) - 1
        };
        ((self.active >> lo) & mask).count_ones()
    }

    /// 1 if a trigger on `day` came while the customer was still active as usual: active days
    /// in the [`TIMING_PRE_DAYS`] before it at least [`TIMING_AS_USUAL`] × their rate from the
    /// start of the window (the first day, or [`TIMING_DAYS`] ago) up to then, both smoothed by
    /// 0.02. With fewer than 14 days of normal to compare with it cannot tell: 1.
    fn before_decline(&self, day: i32, first_day: i32, as_of: i32) -> f64 {
        let lo = first_day.max(as_of - TIMING_DAYS + 1);
        let normal_to = day - TIMING_PRE_DAYS - 1;
        if normal_to - lo + 1 < 14 {
            return 1.0;
        }
        let normal =
            f64::from(self.active_days(as_of, lo, normal_to)) / f64::from(normal_to - lo + 1);
        let pre = f64::from(self.active_days(as_of, day - TIMING_PRE_DAYS, day - 1))
            / f64::from(TIMING_PRE_DAYS);
        if (pre + 0.02) / (normal + 0.02) >= TIMING_AS_USUAL {
            1.0
        } else {
            0.0
        }
    }

    /// The timing features, in [`TIMING_FEATURES`] order.
    fn features(&self, first_day: i32, as_of: i32) -> [f64; TIMING_FEATURES.len()] {
        let at = |d: Option<i32>| d.map_or(0.0, |d| self.before_decline(d, first_day, as_of));
        let detractor = self.last_nps.filter(|(_, v)| *v <= 6).map(|(d, _)| d);
        [
            at(self.last_complaint),
            at(detractor),
            at(self.last_downgrade),
        ]
    }
}

/// Names of the features [`Timing::features`] computes (columns of the `customers` frame).
pub(crate) const TIMING_FEATURES: [&str; 3] = [
    "complaint_before_decline",
    "detractor_before_decline",
    "downgrade_before_decline",
];

impl RollupFrames {
    /// Lay out the given customers' rollups as of the end of day `as_of` (cid = index in
    /// `customers`). Day rows after `as_of` are left out, so no later event can leak in.
    pub fn build<'a>(
        customers: impl IntoIterator<Item = &'a CustomerRollups>,
        as_of: i32,
    ) -> Result<Self, Error> {
        Self::build_with(customers, as_of, &FeatureSet::builtin())
    }

    /// [`build`](Self::build) with the metrics of `set`'s catalog as extra customer columns.
    pub fn build_with<'a>(
        customers: impl IntoIterator<Item = &'a CustomerRollups>,
        as_of: i32,
        set: &FeatureSet,
    ) -> Result<Self, Error> {
        let customers: Vec<&CustomerRollups> = customers.into_iter().collect();
        let cat_defs = set.catalog_defs();
        let mut windows = Windows::new(set.compiled());
        let mut cat_cols: Vec<Vec<f64>> = cat_defs
            .iter()
            .map(|_| Vec::with_capacity(customers.len()))
            .collect();
        let mut cat_row = Vec::with_capacity(cat_defs.len());
        let n = customers.len();
        let mut days = DayCols::with_capacity(n * 4);
        let mut c_cid = Vec::with_capacity(n);
        let mut c_first = Vec::with_capacity(n);
        let mut c_lp = Vec::with_capacity(n);
        let mut c_la = Vec::with_capacity(n);
        let mut c_ll = Vec::with_capacity(n);
        let mut c_nps = Vec::with_capacity(n);
        let mut c_mrr = Vec::with_capacity(n);
        let mut life: [Vec<f64>; LIFETIME_FEATURES.len()] =
            std::array::from_fn(|_| Vec::with_capacity(n));
        let mut timing: [Vec<f64>; TIMING_FEATURES.len()] =
            std::array::from_fn(|_| Vec::with_capacity(n));

        for (i, c) in customers.into_iter().enumerate() {
            let i = i as u32;
            c_cid.push(i);
            c_first.push(c.first_day);
            c_lp.push(c.carry().last_purchase_day);
            c_la.push(c.carry().last_activity_day);
            c_ll.push(c.carry().last_login_day);
            c_nps.push(c.carry().nps_last.map(|s| f64::from(s.value)));
            c_mrr.push(c.carry().mrr_last.map(|s| s.value));
            let mut current: Option<(u8, Bucket)> = None;
            let mut lt = Lifetime::start(c.carry());
            let mut tm = Timing::default();
            windows.reset();
            for r in c.days().take_while(|r| r.day <= as_of) {
                lt.add(&r, as_of);
                tm.add(&r, as_of);
                if !r.catalog.is_empty() {
                    windows.add(&r.catalog, as_of - r.day);
                }
                let b = bucket(as_of, r.day);
                match &mut current {
                    Some((cb, acc)) if *cb == b => acc.add(&r),
                    _ => {
                        if let Some((_, done)) = current.take() {
                            days.push(i, done);
                        }
                        let mut acc = Bucket::default();
                        acc.add(&r);
                        current = Some((b, acc));
                    }
                }
            }
            if let Some((_, done)) = current {
                days.push(i, done);
            }
            let f = lt.features(c.first_day.unwrap_or(as_of), as_of);
            for (col, v) in life.iter_mut().zip(f) {
                col.push(v);
            }
            let f = tm.features(c.first_day.unwrap_or(as_of), as_of);
            for (col, v) in timing.iter_mut().zip(f) {
                col.push(v);
            }
            if !cat_defs.is_empty() {
                windows.values(&mut cat_row);
                for (col, v) in cat_cols.iter_mut().zip(&cat_row) {
                    col.push(*v);
                }
            }
        }
        let days = days.into_frame()?;
        let mut cols = vec![
            Column::new("cid".into(), c_cid),
            Column::new("first_day".into(), c_first),
            Column::new("carry_last_purchase_day".into(), c_lp),
            Column::new("carry_last_activity_day".into(), c_la),
            Column::new("carry_last_login_day".into(), c_ll),
            Column::new("carry_nps".into(), c_nps),
            Column::new("carry_mrr".into(), c_mrr),
        ];
        cols.extend(
            LIFETIME_FEATURES
                .iter()
                .zip(life)
                .map(|(name, v)| Column::new((*name).into(), v)),
        );
        cols.extend(
            TIMING_FEATURES
                .iter()
                .zip(timing)
                .map(|(name, v)| Column::new((*name).into(), v)),
        );
        cols.extend(
            cat_defs
                .iter()
                .zip(cat_cols)
                .map(|(d, v)| Column::new(d.name.into(), v)),
        );
        let customers = DataFrame::new_infer_height(cols)?;
        Ok(RollupFrames {
            as_of,
            days,
            customers,
            catalog: cat_defs.iter().map(|d| d.name).collect(),
        })
    }
}

fn sum_where(c: &str, w: Expr) -> Expr {
    when(w).then(col(c)).otherwise(lit(0.0)).sum()
}

fn recency(as_of: i32, last: Expr) -> Expr {
    when(last.clone().is_null())
        .then(lit(RECENCY_CAP_DAYS))
        .otherwise(
            (lit(as_of) - last)
                .cast(DataType::Float64)
                .clip_max_expr(RECENCY_CAP_DAYS),
        )
}

trait ClipMax {
    fn clip_max_expr(self, max: f64) -> Expr;
}

impl ClipMax for Expr {
    fn clip_max_expr(self, max: f64) -> Expr {
        when(self.clone().gt(lit(max)))
            .then(lit(max))
            .otherwise(self)
    }
}

fn rel_change(cur: &str, prev: &str) -> Expr {
    ((col(cur) - col(prev)) / (col(prev) + lit(1.0))).clip_max_expr(5.0)
}

/// Every registry feature (raw, before transforms) as of the end of UTC day `frames.as_of`, one
/// row per customer whose first event is on or before that day, sorted by `cid`. Columns: `cid`
/// then the registry names in order. Only rollup days `<= as_of` are read, so no later event can
/// leak in.
pub fn feature_frame(frames: &RollupFrames) -> Result<DataFrame, Error> {
    let as_of = frames.as_of;
    let d = col("day");
    let w28 = d.clone().gt(lit(as_of - 28));
    let p28 = d
        .clone()
        .gt(lit(as_of - 56))
        .and(d.clone().lt_eq(lit(as_of - 28)));
    let w90 = d.clone().gt(lit(as_of - 90));
    let activity = KIND_COLS
        .iter()
        .fold(col("purchases"), |acc, k| acc + col(*k));

    let mut aggs = vec![
        col("last_purchase_day").max(),
        d.clone().max().alias("last_activity_day"),
        col("last_login_day").max(),
        sum_where("purchases", w28.clone()).alias("purchases_28d"),
        sum_where("purchases", w90.clone()).alias("purchases_90d"),
        sum_where("revenue", w28.clone()).alias("revenue_28d"),
        sum_where("revenue", p28.clone()).alias("revenue_prev_28d"),
        sum_where("revenue", w90.clone()).alias("revenue_90d"),
        sum_where("discount", w90.clone()).alias("discount_90d"),
        sum_where("session_seconds", w28.clone()).alias("session_seconds_28d"),
        when(w28.clone())
            .then(activity.clone())
            .otherwise(lit(0.0))
            .sum()
            .alias("activity_28d"),
        when(p28.clone())
            .then(activity)
            .otherwise(lit(0.0))
            .sum()
            .alias("activity_prev_28d"),
        sum_where("upgrades", w90.clone()).alias("upgrades_90d"),
        sum_where("downgrades", w90.clone()).alias("downgrades_90d"),
        col("nps_last")
            .filter(col("nps_last").is_not_null())
            .last()
            .alias("nps_last_all"),
        col("nps_first")
            .filter(col("nps_first").is_not_null().and(w90.clone()))
            .first()
            .alias("nps_first_90"),
        col("nps_last")
            .filter(col("nps_last").is_not_null().and(w90.clone()))
            .last()
            .alias("nps_last_90"),
        col("mrr_last")
            .filter(col("mrr_last").is_not_null())
            .last()
            .alias("mrr_last_all"),
    ];
    for k in KIND_COLS {
        aggs.push(sum_where(k, w28.clone()).alias(format!("{k}_28d")));
    }
    for k in ["support_ticket", "complaint"] {
        aggs.push(sum_where(k, w90.clone()).alias(format!("{k}_90d")));
    }

    let agg = frames
        .days
        .clone()
        .lazy()
        .filter(d.clone().lt_eq(lit(as_of)))
        .group_by([col("cid")])
        .agg(aggs);

    let nps = col("nps_last_all").fill_null(col("carry_nps"));
    let mrr = col("mrr_last_all")
        .fill_null(col("carry_mrr"))
        .fill_null(lit(0.0));
    let out = frames
        .customers
        .clone()
        .lazy()
        .filter(col("first_day").lt_eq(lit(as_of)))
        .left_join(agg, col("cid"), col("cid"))
        // Customers with no rollup day in range get zero counts.
        .with_columns(zero_filled())
        .select(
            [
                col("cid"),
                recency(
                    as_of,
                    col("last_purchase_day").fill_null(col("carry_last_purchase_day")),
                )
                .alias("recency_purchase_days"),
                recency(
                    as_of,
                    col("last_activity_day").fill_null(col("carry_last_activity_day")),
                )
                .alias("recency_activity_days"),
                recency(
                    as_of,
                    col("last_login_day").fill_null(col("carry_last_login_day")),
                )
                .alias("days_since_login"),
                (lit(as_of) - col("first_day") + lit(1))
                    .cast(DataType::Float64)
                    .alias("tenure_days"),
                col("purchases_28d"),
                col("purchases_90d"),
                col("revenue_28d"),
                col("revenue_90d"),
                when(col("purchases_90d").gt(lit(0.0)))
                    .then(col("revenue_90d") / col("purchases_90d"))
                    .otherwise(lit(0.0))
                    .alias("avg_order_value_90d"),
                col("login_28d").alias("logins_28d"),
                col("session_28d").alias("sessions_28d"),
                col("page_view_28d").alias("page_views_28d"),
                col("feature_use_28d").alias("feature_uses_28d"),
                col("email_open_28d").alias("email_opens_28d"),
                col("email_click_28d").alias("email_clicks_28d"),
                col("support_ticket_28d").alias("support_tickets_28d"),
                col("complaint_28d").alias("complaints_28d"),
                col("support_ticket_90d").alias("support_tickets_90d"),
                col("complaint_90d").alias("complaints_90d"),
                (col("session_seconds_28d") / lit(60.0)).alias("session_minutes_28d"),
                col("activity_28d"),
                rel_change("activity_28d", "activity_prev_28d").alias("activity_change_28d"),
                rel_change("revenue_28d", "revenue_prev_28d").alias("revenue_change_28d"),
                (col("feature_use_28d") / (col("session_28d") + lit(1.0)))
                    .alias("feature_uses_per_session_28d"),
                (col("email_click_28d") / (col("email_open_28d") + lit(1.0)))
                    .alias("email_click_rate_28d"),
                mrr.clone().alias("mrr"),
                when(mrr.gt(lit(0.0)))
                    .then(lit(1.0))
                    .otherwise(lit(0.0))
                    .alias("subscribed"),
                col("downgrades_90d"),
                col("upgrades_90d"),
                when((col("revenue_90d") + col("discount_90d")).gt(lit(0.0)))
                    .then(col("discount_90d") / (col("revenue_90d") + col("discount_90d")))
                    .otherwise(lit(0.0))
                    .alias("discount_share_90d"),
                nps.clone().fill_null(lit(7.0)).alias("nps_latest"),
                when(nps.clone().is_null())
                    .then(lit(1.0))
                    .otherwise(lit(0.0))
                    .alias("nps_missing"),
                when(nps.clone().lt_eq(lit(6.0)))
                    .then(lit(1.0))
                    .otherwise(lit(0.0))
                    .alias("nps_detractor"),
                when(col("nps_last_90").lt_eq(lit(6.0)))
                    .then(lit(1.0))
                    .otherwise(lit(0.0))
                    .alias("nps_detractor_90d"),
                when(nps.gt_eq(lit(9.0)))
                    .then(lit(1.0))
                    .otherwise(lit(0.0))
                    .alias("nps_promoter"),
                (col("nps_last_90") - col("nps_first_90"))
                    .fill_null(lit(0.0))
                    .alias("nps_trend_90d"),
            ]
            .into_iter()
            .chain(LIFETIME_FEATURES.iter().map(|n| col(*n)))
            .chain(TIMING_FEATURES.iter().map(|n| col(*n)))
            .chain(frames.catalog.iter().map(|n| col(*n)))
            .collect::<Vec<_>>(),
        )
        .sort(["cid"], SortMultipleOptions::default())
        .collect()?;
    Ok(out)
}

/// After the left join, count columns of customers without rows in range are null: make them 0.
fn zero_filled() -> Vec<Expr> {
    let mut names: Vec<String> = [
        "purchases_28d",
        "purchases_90d",
        "revenue_28d",
        "revenue_prev_28d",
        "revenue_90d",
        "discount_90d",
        "session_seconds_28d",
        "activity_28d",
        "activity_prev_28d",
        "upgrades_90d",
        "downgrades_90d",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    names.extend(KIND_COLS.iter().map(|k| format!("{k}_28d")));
    names.extend([
        "support_ticket_90d".to_string(),
        "complaint_90d".to_string(),
    ]);
    names
        .into_iter()
        .map(|n| col(n.as_str()).fill_null(lit(0.0)))
        .collect()
}

/// A feature frame as a dense row-major matrix of RAW values in model-input order (the
/// registry's, then the catalog's).
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureMatrix {
    /// `cid` of each row.
    pub cids: Vec<u32>,
    /// Row-major, `cids.len() × n_features`.
    pub values: Vec<f64>,
    n: usize,
}

impl FeatureMatrix {
    pub fn n_features(&self) -> usize {
        self.n
    }

    pub fn len(&self) -> usize {
        self.cids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cids.is_empty()
    }

    pub fn row(&self, i: usize) -> &[f64] {
        let n = self.n;
        &self.values[i * n..(i + 1) * n]
    }

    /// Extract from a [`feature_frame`] result: every column after `cid`, in order.
    pub fn from_frame(df: &DataFrame) -> Result<Self, Error> {
        let cids: Vec<u32> = df
            .column("cid")?
            .u32()?
            .iter()
            .map(|v| v.unwrap_or(u32::MAX))
            .collect();
        let cols: Vec<&Column> = df
            .columns()
            .iter()
            .filter(|c| c.name().as_str() != "cid")
            .collect();
        let n = cols.len();
        let mut values = vec![0.0; cids.len() * n];
        for (j, column) in cols.into_iter().enumerate() {
            let c = column.f64()?;
            for (i, v) in c.iter().enumerate() {
                let v = v.ok_or_else(|| Error::NullFeature(column.name().to_string()))?;
                values[i * n + j] = v;
            }
        }
        Ok(FeatureMatrix { cids, values, n })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An edit of one day row.
    type Edit = (i32, fn(&mut DayRollup));

    /// Day rows of the given days (activity: one session each), as of `as_of`.
    fn timing(as_of: i32, active: impl IntoIterator<Item = i32>, edit: &[Edit]) -> Timing {
        let mut rows: std::collections::BTreeMap<i32, DayRollup> = active
            .into_iter()
            .map(|d| {
                let mut r = DayRollup {
                    day: d,
                    ..DayRollup::default()
                };
                r.engagement[1] = 1;
                (d, r)
            })
            .collect();
        for (d, f) in edit {
            f(rows.entry(*d).or_insert_with(|| DayRollup {
                day: *d,
                ..DayRollup::default()
            }));
        }
        let mut t = Timing::default();
        for r in rows.values() {
            t.add(r, as_of);
        }
        t
    }

    #[test]
    fn a_trigger_is_before_the_decline_when_activity_was_as_usual_before_it() {
        let as_of = 1000;
        let complaint: fn(&mut DayRollup) = |r| r.engagement[COMPLAINT_INDEX] += 1;
        // Active every other day for 60 days, then silent for the last 30.
        let active = (as_of - 89..=as_of - 30).filter(|d| d % 2 == 0);
        // A complaint on the last active stretch: as usual before it.
        let t = timing(as_of, active.clone(), &[(as_of - 32, complaint)]);
        assert_eq!(t.features(as_of - 200, as_of)[0], 1.0);
        // A complaint after 20 silent days: the decline had started.
        let t = timing(as_of, active.clone(), &[(as_of - 10, complaint)]);
        assert_eq!(t.features(as_of - 200, as_of)[0], 0.0);
        // Too little history before it to tell (a new customer): counts as before.
        let t = timing(as_of, active, &[(as_of - 10, complaint)]);
        assert_eq!(t.features(as_of - 30, as_of)[0], 1.0);
        // No complaint, no detractor answer, no downgrade.
        assert_eq!(t.features(as_of - 30, as_of)[1..], [0.0, 0.0]);
        // A detractor answer counts; a passive one does not.
        let detractor: fn(&mut DayRollup) =
            |r| r.nps_last = Some(crate::rollup::Stamped { ts: 0, value: 4 });
        let passive: fn(&mut DayRollup) =
            |r| r.nps_last = Some(crate::rollup::Stamped { ts: 0, value: 7 });
        let active = (as_of - 89..=as_of).filter(|d| d % 2 == 0);
        let t = timing(as_of, active.clone(), &[(as_of - 20, detractor)]);
        assert_eq!(t.features(as_of - 200, as_of)[1], 1.0);
        let t = timing(
            as_of,
            active.clone(),
            &[(as_of - 30, detractor), (as_of - 20, passive)],
        );
        assert_eq!(t.features(as_of - 200, as_of)[1], 0.0);
        // Older than the window: ignored (same with or without expiry).
        let t = timing(as_of, active, &[(as_of - 95, complaint)]);
        assert_eq!(t.features(as_of - 200, as_of)[0], 0.0);
    }
}
