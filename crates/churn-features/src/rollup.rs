//! Per-customer daily rollups: the only state the feature code reads.
//!
//! Both the batch path (training) and the streaming path (serving) fold events into
//! [`CustomerRollups`] with the same [`CustomerRollups::apply`], then hand them to the same
//! polars feature query ([`crate::features`]). Folding is order-independent: counts are
//! commutative and every "latest" value is chosen by `(timestamp, value)`, so a replay in any
//! order — or with late events — gives the same rollups. (Float sums — revenue, discount,
//! session seconds — are the exception in the last bits: addition order changes the rounding.)
//!
//! Days older than the retention horizon are folded into a small [`Carry`] (last purchase, last
//! activity, last login, latest NPS and MRR) so recency and "latest" features stay exact while the
//! per-day rows are bounded.

use chrono::{DateTime, Utc};
use churn_events::{EngagementKind, Event, Payload, SubscriptionAction};
use serde::{Deserialize, Serialize};

use crate::wire::{presence, put_f64, put_ivar, put_uvar, Out, Reader, Scratch, WireError};

/// Days kept as per-day rows; older days are folded into [`Carry`]. Must exceed the longest
/// window a feature reads (90 days) so features are identical with or without expiry.
pub const RETAIN_DAYS: i32 = 120;

/// Microseconds since the Unix epoch.
pub type Micros = i64;

/// Day number (days since 1970-01-01, UTC) of a timestamp.
pub fn day_of(ts: DateTime<Utc>) -> i32 {
    ts.timestamp().div_euclid(86_400) as i32
}

/// Start of a day number as a UTC timestamp.
pub fn day_start(day: i32) -> DateTime<Utc> {
    DateTime::from_timestamp(i64::from(day) * 86_400, 0).unwrap_or_default()
}

/// A timestamped value where the later `(ts, value)` wins; ties broken by value so the choice
/// does not depend on arrival order.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Stamped<T> {
    pub ts: Micros,
    pub value: T,
}

fn later<T: PartialOrd + Copy>(a: Option<Stamped<T>>, b: Stamped<T>) -> Option<Stamped<T>> {
    match a {
        Some(a) if (a.ts, a.value) >= (b.ts, b.value) => Some(a),
        _ => Some(b),
    }
}

fn earlier<T: PartialOrd + Copy>(a: Option<Stamped<T>>, b: Stamped<T>) -> Option<Stamped<T>> {
    match a {
        Some(a) if (a.ts, a.value) <= (b.ts, b.value) => Some(a),
        _ => Some(b),
    }
}

/// One customer's activity on one UTC day. Serialized sparsely (zero counts and absent values
/// are left out, and read back as their defaults): most days hold one or two kinds of activity,
/// and the state changelog carries every day row of a changed customer.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DayRollup {
    pub day: i32,
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub purchases: u32,
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub items: u32,
    #[serde(skip_serializing_if = "is_zero_f64")]
    pub revenue: f64,
    #[serde(skip_serializing_if = "is_zero_f64")]
    pub discount: f64,
    /// Engagement counts indexed like [`EngagementKind::ALL`].
    #[serde(skip_serializing_if = "all_zero")]
    pub engagement: [u32; 8],
    #[serde(skip_serializing_if = "is_zero_f64")]
    pub session_seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nps_first: Option<Stamped<u8>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nps_last: Option<Stamped<u8>>,
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub nps_count: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mrr_last: Option<Stamped<f64>>,
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub upgrades: u32,
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub downgrades: u32,
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub cancels: u32,
    /// Event time of the day's newest event (absent in rows of earlier versions): what an alert
    /// as of this day reports as the customer's last event, whatever later days hold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_at: Option<Micros>,
    /// The day's values of the metric catalog's counters ([`crate::catalog`]), as
    /// `(counter index, value)` in index order, non-zero values only; empty without a catalog.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub catalog: Vec<(u8, f64)>,
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

// Exactly 0.0 only: -0.0 and every other value are written.
fn is_zero_f64(v: &f64) -> bool {
    v.to_bits() == 0
}

fn all_zero(v: &[u32; 8]) -> bool {
    v.iter().all(|x| *x == 0)
}

/// Values folded out of expired days: the latest values (recency, NPS, MRR) and the lifetime
/// totals of those days, so lifetime frequency and monetary value survive expiry.
///
/// The totals are exact for days folded by [`CustomerRollups::expire`]. An event that arrives
/// for a day already folded (more than [`RETAIN_DAYS`] late) adds to `orders` and `revenue`
/// exactly; it counts as a new purchase or active day only if its day is after the carry's
/// last one (an earlier day may already be counted), and adds no gap.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Carry {
    pub last_purchase_day: Option<i32>,
    pub last_activity_day: Option<i32>,
    pub last_login_day: Option<i32>,
    pub nps_last: Option<Stamped<u8>>,
    pub mrr_last: Option<Stamped<f64>>,
    /// First day with a purchase among the folded days.
    #[serde(default)]
    pub first_purchase_day: Option<i32>,
    /// Orders on the folded days.
    #[serde(default)]
    pub orders: u32,
    /// Distinct days with a purchase among the folded days.
    #[serde(default)]
    pub purchase_days: u32,
    /// Distinct days with any event among the folded days.
    #[serde(default)]
    pub active_days: u32,
    /// Order value of the folded days.
    #[serde(default)]
    pub revenue: f64,
    /// Σ (days between consecutive purchase days)² over the folded days (the spread of the
    /// inter-purchase time; the sum of the gaps is `last_purchase_day - first_purchase_day`).
    #[serde(default)]
    pub purchase_gap_sq: u64,
}

static NO_CARRY: Carry = Carry {
    last_purchase_day: None,
    last_activity_day: None,
    last_login_day: None,
    nps_last: None,
    mrr_last: None,
    first_purchase_day: None,
    orders: 0,
    purchase_days: 0,
    active_days: 0,
    revenue: 0.0,
    purchase_gap_sq: 0,
};

impl Carry {
    /// Fold one day row in (rows come in increasing day order, after the days already folded):
    /// what expiry does, and how the feature query adds the kept rows to the lifetime totals.
    pub(crate) fn fold(&mut self, row: &DayRollup) {
        let d = Some(row.day);
        if self.last_activity_day.is_none_or(|l| row.day > l) {
            self.active_days += 1;
        }
        self.last_activity_day = self.last_activity_day.max(d);
        if row.purchases > 0 {
            match self.last_purchase_day {
                Some(l) if row.day > l => {
                    let gap = u64::from((row.day - l).unsigned_abs());
                    self.purchase_gap_sq = self.purchase_gap_sq.saturating_add(gap * gap);
                    self.purchase_days += 1;
                }
                Some(_) => {}
                None => self.purchase_days += 1,
            }
            self.first_purchase_day =
                Some(self.first_purchase_day.map_or(row.day, |f| f.min(row.day)));
            self.last_purchase_day = self.last_purchase_day.max(d);
            self.orders = self.orders.saturating_add(row.purchases);
            self.revenue += row.revenue;
        }
        if row.engagement[LOGIN_INDEX] > 0 {
            self.last_login_day = self.last_login_day.max(d);
        }
        if let Some(n) = row.nps_last {
            self.nps_last = later(self.nps_last, n);
        }
        if let Some(m) = row.mrr_last {
            self.mrr_last = later(self.mrr_last, m);
        }
    }

    /// Whether any lifetime total is set (the optional tail of the binary encoding).
    fn has_totals(&self) -> bool {
        self.first_purchase_day.is_some()
            || self.orders != 0
            || self.purchase_days != 0
            || self.active_days != 0
            || self.revenue.to_bits() != 0
            || self.purchase_gap_sq != 0
    }
}

/// All state kept for one customer.
///
/// The day rows are held in their wire encoding ([`DayRollup`] rows, each day relative to the
/// previous row's, sparse presence masks): a row of one or two kinds of activity takes 3–20
/// bytes instead of the 160 of a [`DayRollup`]. [`CustomerRollups::apply`] decodes the one row
/// an event touches, updates it and writes it back; [`CustomerRollups::days`] decodes rows in
/// day order for the feature query. The carry is allocated only once a day expires.
///
/// Serialized (JSON) as [`PlainRollups`], the decoded form.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(try_from = "PlainRollups", into = "PlainRollups")]
pub struct CustomerRollups {
    /// First day any event was seen (tenure start). Never expires.
    pub first_day: Option<i32>,
    /// Event time of the newest event folded in.
    pub last_event: Option<Micros>,
    /// Days `< expired_before` have been folded into the carry.
    pub expired_before: Option<i32>,
    carry: Option<Box<Carry>>,
    rows: Rows,
}

/// [`CustomerRollups`] with its day rows decoded: the JSON form, and a way to build rollups
/// field by field (tests, tools).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PlainRollups {
    pub first_day: Option<i32>,
    pub last_event: Option<Micros>,
    /// Per-day rows, sorted by day, at most one per day.
    pub days: Vec<DayRollup>,
    /// Everything before `expired_before` lives here.
    pub carry: Carry,
    pub expired_before: Option<i32>,
}

impl TryFrom<PlainRollups> for CustomerRollups {
    type Error = String;

    /// Fails if the day rows are not in strictly increasing day order.
    fn try_from(p: PlainRollups) -> Result<Self, String> {
        let mut rows = Rows::default();
        for row in &p.days {
            if rows.len > 0 && row.day <= rows.last_day {
                return Err(format!(
                    "day rows out of order: {} after {}",
                    row.day, rows.last_day
                ));
            }
            rows.update(row.day, |r| *r = row.clone());
        }
        let carry = (p.carry != NO_CARRY).then(|| Box::new(p.carry));
        Ok(CustomerRollups {
            first_day: p.first_day,
            last_event: p.last_event,
            expired_before: p.expired_before,
            carry,
            rows,
        })
    }
}

impl From<CustomerRollups> for PlainRollups {
    fn from(c: CustomerRollups) -> Self {
        c.to_plain()
    }
}

impl PartialEq for CustomerRollups {
    fn eq(&self, other: &Self) -> bool {
        // The row encoding is canonical: equal rows, equal bytes.
        self.first_day == other.first_day
            && self.last_event == other.last_event
            && self.expired_before == other.expired_before
            && self.carry() == other.carry()
            && self.rows.len == other.rows.len
            && self.rows.bytes == other.rows.bytes
    }
}

/// Day rows in their wire encoding, in increasing day order, plus where the last one starts
/// (events mostly land on the newest day: updating it needs no scan) and where the last older
/// day was updated (a row's day is relative to the previous row's, so finding a day means
/// scanning from the start or from a known row; late events come in runs of increasing days —
/// one topic-partition's fetch replaying days another has already delivered — and the next one
/// continues from there).
#[derive(Debug, Clone, Default)]
struct Rows {
    bytes: Vec<u8>,
    len: u32,
    /// Day of the last row (meaningless while `len == 0`).
    last_day: i32,
    /// Offset of the last row in `bytes`.
    last_at: u32,
    /// Offset of a row, and the day of the row before it (0 for the first): where a scan for
    /// a day after `hint_prev` may start. (0, 0) is the start.
    hint_at: u32,
    hint_prev: i32,
}

/// The rows are written by [`DayRollup::encode`] or validated by [`CustomerRollups::decode`]
/// before they are kept, so reading them back cannot fail.
const ROWS_VALID: &str = "kept day rows are valid: written by encode or validated by decode";

/// The day of the kept row at `r`, whose previous row is of day `prev` (reads its day only).
fn next_day(r: &mut Reader, prev: i32) -> i32 {
    (i64::from(prev) + r.ivar().expect(ROWS_VALID)) as i32
}

impl Rows {
    /// Replace `range` of the encoding with `with`, growing the buffer by a quarter (at least
    /// what is needed) instead of doubling: most customers hold a few short rows.
    fn splice(&mut self, range: std::ops::Range<usize>, with: &[u8]) {
        let grow = with.len().saturating_sub(range.len());
        if self.bytes.capacity() - self.bytes.len() < grow {
            self.bytes.reserve_exact(grow.max(self.bytes.len() / 4));
        }
        if range.end == self.bytes.len() {
            self.bytes.truncate(range.start);
            self.bytes.extend_from_slice(with);
        } else {
            self.bytes.splice(range, with.iter().copied());
        }
    }

    /// Apply `f` to the row of `day`, creating it if needed.
    fn update(&mut self, day: i32, f: impl FnOnce(&mut DayRollup)) {
        let mut out = Scratch::new();
        if self.len == 0 || day > self.last_day {
            // A new newest day: append.
            let prev = if self.len == 0 { 0 } else { self.last_day };
            let mut row = DayRollup {
                day,
                ..DayRollup::default()
            };
            f(&mut row);
            row.encode(prev, &mut out);
            let at = self.bytes.len();
            self.splice(at..at, out.as_slice());
            self.last_at = at as u32;
            self.last_day = day;
            self.len += 1;
        } else if day == self.last_day {
            // The newest day: rewrite the tail.
            let at = self.last_at as usize;
            let mut r = Reader::new(&self.bytes[at..]);
            let delta = r.ivar().expect(ROWS_VALID);
            let prev = (i64::from(day) - delta) as i32;
            let mut row = DayRollup::decode_body(day, &mut r).expect(ROWS_VALID);
            f(&mut row);
            row.encode(prev, &mut out);
            self.splice(at..self.bytes.len(), out.as_slice());
        } else {
            self.update_older(day, f, out);
        }
    }

    /// [`Rows::update`] of a day before the newest: scan for its place.
    fn update_older(&mut self, day: i32, f: impl FnOnce(&mut DayRollup), mut out: Scratch) {
        let (mut r, mut prev) = if day > self.hint_prev {
            let mut r = Reader::new(&self.bytes);
            r.skip(self.hint_at as usize);
            (r, self.hint_prev)
        } else {
            (Reader::new(&self.bytes), 0)
        };
        // `day` is before the last row's, so the scan reaches a row of that day or later and
        // returns there.
        while r.remaining() > 0 {
            let at = r.pos();
            let d = next_day(&mut r, prev);
            if d < day {
                DayRollup::decode_body(d, &mut r).expect(ROWS_VALID);
                prev = d;
                continue;
            }
            let is_last = at == self.last_at as usize;
            let (region, row_len) = if d == day {
                let mut row = DayRollup::decode_body(d, &mut r).expect(ROWS_VALID);
                f(&mut row);
                row.encode(prev, &mut out);
                (at..r.pos(), out.as_slice().len())
            } else {
                // Insert before row `i`, whose day is now written relative to the new row.
                let mut row = DayRollup {
                    day,
                    ..DayRollup::default()
                };
                f(&mut row);
                row.encode(prev, &mut out);
                let row_len = out.as_slice().len();
                put_ivar(&mut out, i64::from(d) - i64::from(day));
                self.len += 1;
                (at..r.pos(), row_len)
            };
            let old_len = region.len();
            self.splice(region, out.as_slice());
            self.last_at = if is_last && d != day {
                // The old last row now starts after the inserted one.
                (at + row_len) as u32
            } else {
                (self.last_at as usize + out.as_slice().len() - old_len) as u32
            };
            (self.hint_at, self.hint_prev) = (at as u32, prev);
            return;
        }
    }

    /// Drop the rows of days `< before`, handing each to `fold` in day order.
    fn expire(&mut self, before: i32, mut fold: impl FnMut(&DayRollup)) {
        let mut r = Reader::new(&self.bytes);
        let mut prev = 0;
        let mut dropped = 0;
        let mut keep_at = 0;
        while dropped < self.len {
            let d = next_day(&mut r, prev);
            if d >= before {
                break;
            }
            fold(&DayRollup::decode_body(d, &mut r).expect(ROWS_VALID));
            prev = d;
            dropped += 1;
            keep_at = r.pos();
        }
        if dropped == 0 {
            return;
        }
        if dropped == self.len {
            *self = Rows::default();
            return;
        }
        // The first kept row's day becomes absolute (relative to 0).
        let mut r = Reader::new(&self.bytes[keep_at..]);
        let first = next_day(&mut r, prev);
        let delta_len = r.pos();
        let mut out = Scratch::new();
        put_ivar(&mut out, i64::from(first));
        let was_last = dropped + 1 == self.len;
        let old_last_at = self.last_at as usize;
        (self.hint_at, self.hint_prev) = (0, 0);
        self.splice(0..keep_at + delta_len, out.as_slice());
        self.len -= dropped;
        self.last_at = if was_last {
            0
        } else {
            (old_last_at + out.as_slice().len() - keep_at - delta_len) as u32
        };
        if self.bytes.capacity() > 2 * self.bytes.len() + 64 {
            self.bytes
                .shrink_to(self.bytes.len() + self.bytes.len() / 4);
        }
    }
}

#[cfg(test)]
impl Rows {
    /// Panics unless the encoding holds `len` rows in increasing day order and `last_at` /
    /// `last_day` describe the last one.
    fn check(&self) {
        let mut r = Reader::new(&self.bytes);
        let (mut prev, mut last_at) = (0, 0);
        for i in 0..self.len {
            last_at = r.pos();
            let row = DayRollup::decode(prev, &mut r).expect("row");
            assert!(i == 0 || row.day > prev, "row {i} out of order");
            prev = row.day;
        }
        assert_eq!(r.finish(), Ok(()), "no bytes after the last row");
        if self.len > 0 {
            assert_eq!(self.last_at as usize, last_at, "last_at");
            assert_eq!(self.last_day, prev, "last_day");
        }
        // The hint is a row start, with the day of the row before it.
        let mut r = Reader::new(&self.bytes);
        let mut prev = 0;
        while r.pos() < self.hint_at as usize {
            prev = DayRollup::decode(prev, &mut r).expect("row").day;
        }
        assert_eq!(r.pos(), self.hint_at as usize, "hint_at is a row start");
        assert_eq!(self.hint_prev, prev, "hint_prev");
    }
}

/// The day rows of a [`CustomerRollups`], decoded one by one in day order.
pub struct Days<'a> {
    r: Reader<'a>,
    prev: i32,
    left: u32,
}

impl Iterator for Days<'_> {
    type Item = DayRollup;

    fn next(&mut self) -> Option<DayRollup> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let row = DayRollup::decode(self.prev, &mut self.r).expect(ROWS_VALID);
        self.prev = row.day;
        Some(row)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left as usize, Some(self.left as usize))
    }
}

impl ExactSizeIterator for Days<'_> {}

// Presence bits of a day row in the binary encoding (same rules as the sparse JSON).
const D_PURCHASES: u32 = 1;
const D_ITEMS: u32 = 1 << 1;
const D_REVENUE: u32 = 1 << 2;
const D_DISCOUNT: u32 = 1 << 3;
const D_ENGAGEMENT: u32 = 1 << 4;
const D_SESSION: u32 = 1 << 5;
const D_NPS_FIRST: u32 = 1 << 6;
const D_NPS_LAST: u32 = 1 << 7;
const D_NPS_COUNT: u32 = 1 << 8;
const D_MRR: u32 = 1 << 9;
const D_UPGRADES: u32 = 1 << 10;
const D_DOWNGRADES: u32 = 1 << 11;
const D_CANCELS: u32 = 1 << 12;
const D_LAST_AT: u32 = 1 << 13;
const D_CATALOG: u32 = 1 << 14;
const D_ALL: u32 = (1 << 15) - 1;

/// Microseconds per day (a row's `last_at` is written relative to its day's start).
const DAY_MICROS: i64 = 86_400_000_000;

fn put_stamped_u8(out: &mut impl Out, s: Stamped<u8>) {
    put_ivar(out, s.ts);
    out.put(s.value);
}

fn put_stamped_f64(out: &mut impl Out, s: Stamped<f64>) {
    put_ivar(out, s.ts);
    put_f64(out, s.value);
}

fn stamped_u8(r: &mut Reader) -> Result<Stamped<u8>, WireError> {
    Ok(Stamped {
        ts: r.ivar()?,
        value: r.u8()?,
    })
}

fn stamped_f64(r: &mut Reader) -> Result<Stamped<f64>, WireError> {
    Ok(Stamped {
        ts: r.ivar()?,
        value: r.f64()?,
    })
}

impl DayRollup {
    /// Append this row in the binary encoding; `day` is written relative to `prev_day` (the
    /// previous row's day, or 0 for the first). At most [`Scratch::CAP`] bytes.
    fn encode(&self, prev_day: i32, out: &mut impl Out) {
        let mask = presence(&[
            (self.purchases != 0, D_PURCHASES),
            (self.items != 0, D_ITEMS),
            (self.revenue.to_bits() != 0, D_REVENUE),
            (self.discount.to_bits() != 0, D_DISCOUNT),
            (!all_zero(&self.engagement), D_ENGAGEMENT),
            (self.session_seconds.to_bits() != 0, D_SESSION),
            (self.nps_first.is_some(), D_NPS_FIRST),
            (self.nps_last.is_some(), D_NPS_LAST),
            (self.nps_count != 0, D_NPS_COUNT),
            (self.mrr_last.is_some(), D_MRR),
            (self.upgrades != 0, D_UPGRADES),
            (self.downgrades != 0, D_DOWNGRADES),
            (self.cancels != 0, D_CANCELS),
            (self.last_at.is_some(), D_LAST_AT),
            (!self.catalog.is_empty(), D_CATALOG),
        ]);
        put_ivar(out, i64::from(self.day) - i64::from(prev_day));
        put_uvar(out, u64::from(mask));
        if mask & D_PURCHASES != 0 {
            put_uvar(out, u64::from(self.purchases));
        }
        if mask & D_ITEMS != 0 {
            put_uvar(out, u64::from(self.items));
        }
        if mask & D_REVENUE != 0 {
            put_f64(out, self.revenue);
        }
        if mask & D_DISCOUNT != 0 {
            put_f64(out, self.discount);
        }
        if mask & D_ENGAGEMENT != 0 {
            let kinds = self
                .engagement
                .iter()
                .enumerate()
                .filter(|(_, n)| **n != 0)
                .fold(0u8, |m, (i, _)| m | (1 << i));
            out.put(kinds);
            for n in self.engagement.iter().filter(|n| **n != 0) {
                put_uvar(out, u64::from(*n));
            }
        }
        if mask & D_SESSION != 0 {
            put_f64(out, self.session_seconds);
        }
        if let Some(s) = self.nps_first {
            put_stamped_u8(out, s);
        }
        if let Some(s) = self.nps_last {
            put_stamped_u8(out, s);
        }
        if mask & D_NPS_COUNT != 0 {
            put_uvar(out, u64::from(self.nps_count));
        }
        if let Some(s) = self.mrr_last {
            put_stamped_f64(out, s);
        }
        for (b, v) in [
            (D_UPGRADES, self.upgrades),
            (D_DOWNGRADES, self.downgrades),
            (D_CANCELS, self.cancels),
        ] {
            if mask & b != 0 {
                put_uvar(out, u64::from(v));
            }
        }
        if let Some(t) = self.last_at {
            put_ivar(
                out,
                t.wrapping_sub(i64::from(self.day).wrapping_mul(DAY_MICROS)),
            );
        }
        if !self.catalog.is_empty() {
            // At most MAX_COUNTERS + 1 entries of at most 11 bytes: within Scratch::CAP.
            put_uvar(out, self.catalog.len() as u64);
            for &(i, v) in &self.catalog {
                out.put(i);
                // Whole non-negative values (counts) as a varint of 2v; others as 1 + f64.
                if v >= 0.0 && v.fract() == 0.0 && v < (1u64 << 52) as f64 {
                    put_uvar(out, (v as u64) << 1);
                } else {
                    put_uvar(out, 1);
                    put_f64(out, v);
                }
            }
        }
    }

    /// Read a row written by [`DayRollup::encode`] after a row of day `prev_day`.
    fn decode(prev_day: i32, r: &mut Reader) -> Result<Self, WireError> {
        let at = r.pos();
        let day =
            i32::try_from(i64::from(prev_day) + r.ivar()?).map_err(|_| WireError::Invalid {
                what: "day out of range",
                at,
            })?;
        Self::decode_body(day, r)
    }

    /// The rest of a row of day `day`, after its day.
    fn decode_body(day: i32, r: &mut Reader) -> Result<Self, WireError> {
        let mask = u32::try_from(r.uvar()?).unwrap_or(u32::MAX);
        if mask & !D_ALL != 0 {
            return Err(r.invalid("unknown day-row field"));
        }
        let mut row = DayRollup {
            day,
            ..DayRollup::default()
        };
        let has = |b: u32| mask & b != 0;
        if has(D_PURCHASES) {
            row.purchases = r.u32()?;
        }
        if has(D_ITEMS) {
            row.items = r.u32()?;
        }
        if has(D_REVENUE) {
            row.revenue = r.f64()?;
        }
        if has(D_DISCOUNT) {
            row.discount = r.f64()?;
        }
        if has(D_ENGAGEMENT) {
            let kinds = r.u8()?;
            for (i, n) in row.engagement.iter_mut().enumerate() {
                if kinds & (1 << i) != 0 {
                    *n = r.u32()?;
                }
            }
        }
        if has(D_SESSION) {
            row.session_seconds = r.f64()?;
        }
        if has(D_NPS_FIRST) {
            row.nps_first = Some(stamped_u8(r)?);
        }
        if has(D_NPS_LAST) {
            row.nps_last = Some(stamped_u8(r)?);
        }
        if has(D_NPS_COUNT) {
            row.nps_count = r.u32()?;
        }
        if has(D_MRR) {
            row.mrr_last = Some(stamped_f64(r)?);
        }
        if has(D_UPGRADES) {
            row.upgrades = r.u32()?;
        }
        if has(D_DOWNGRADES) {
            row.downgrades = r.u32()?;
        }
        if has(D_CANCELS) {
            row.cancels = r.u32()?;
        }
        if has(D_LAST_AT) {
            let at = r.pos();
            let off = r.ivar()?;
            row.last_at = Some(
                i64::from(day)
                    .checked_mul(DAY_MICROS)
                    .and_then(|start| start.checked_add(off))
                    .ok_or(WireError::Invalid {
                        what: "last_at out of range",
                        at,
                    })?,
            );
        }
        if has(D_CATALOG) {
            let n = r.uvar()?;
            if n == 0 || n > (crate::catalog::MAX_COUNTERS + 1) as u64 {
                return Err(r.invalid("bad catalog value count"));
            }
            let mut prev: Option<u8> = None;
            for _ in 0..n {
                let i = r.u8()?;
                if prev.is_some_and(|p| i <= p) || usize::from(i) > crate::catalog::MAX_COUNTERS {
                    return Err(r.invalid("catalog values out of order"));
                }
                prev = Some(i);
                let tag = r.uvar()?;
                let v = if tag == 1 {
                    r.f64()?
                } else if tag & 1 == 0 {
                    (tag >> 1) as f64
                } else {
                    return Err(r.invalid("bad catalog value"));
                };
                row.catalog.push((i, v));
            }
        }
        Ok(row)
    }
}

// Presence bits of the customer-level values.
const C_FIRST_DAY: u8 = 1;
const C_LAST_EVENT: u8 = 1 << 1;
const C_EXPIRED_BEFORE: u8 = 1 << 2;
const C_LAST_PURCHASE: u8 = 1 << 3;
const C_LAST_ACTIVITY: u8 = 1 << 4;
const C_LAST_LOGIN: u8 = 1 << 5;
const C_NPS_LAST: u8 = 1 << 6;
const C_MRR_LAST: u8 = 1 << 7;

/// First byte of the optional tail of [`CustomerRollups::encode`] holding the carry's lifetime
/// totals, then a presence byte of the `L_*` bits.
const LIFETIME_TAG: u8 = 0x4C;
const L_FIRST_PURCHASE: u8 = 1;
const L_ORDERS: u8 = 1 << 1;
const L_PURCHASE_DAYS: u8 = 1 << 2;
const L_ACTIVE_DAYS: u8 = 1 << 3;
const L_REVENUE: u8 = 1 << 4;
const L_GAP_SQ: u8 = 1 << 5;
const L_ALL: u8 = (1 << 6) - 1;

impl CustomerRollups {
    /// Append the binary encoding (read back by [`CustomerRollups::decode`]): a presence byte,
    /// the present values, the number of day rows, then each row with its day relative to the
    /// previous one and a presence mask — the rows exactly as held in memory. A day row of one
    /// or two kinds of activity takes 3–20 bytes (its sparse JSON takes 40–90).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let c = self.carry();
        let flags = presence(&[
            (self.first_day.is_some(), C_FIRST_DAY),
            (self.last_event.is_some(), C_LAST_EVENT),
            (self.expired_before.is_some(), C_EXPIRED_BEFORE),
            (c.last_purchase_day.is_some(), C_LAST_PURCHASE),
            (c.last_activity_day.is_some(), C_LAST_ACTIVITY),
            (c.last_login_day.is_some(), C_LAST_LOGIN),
            (c.nps_last.is_some(), C_NPS_LAST),
            (c.mrr_last.is_some(), C_MRR_LAST),
        ]);
        out.push(flags);
        if let Some(d) = self.first_day {
            put_ivar(out, i64::from(d));
        }
        if let Some(t) = self.last_event {
            put_ivar(out, t);
        }
        let days = [
            self.expired_before,
            c.last_purchase_day,
            c.last_activity_day,
            c.last_login_day,
        ];
        for d in days.into_iter().flatten() {
            put_ivar(out, i64::from(d));
        }
        if let Some(s) = c.nps_last {
            put_stamped_u8(out, s);
        }
        if let Some(s) = c.mrr_last {
            put_stamped_f64(out, s);
        }
        put_uvar(out, u64::from(self.rows.len));
        out.extend_from_slice(&self.rows.bytes);
        // Optional tail (absent in records of earlier versions, and while nothing expired): the
        // carry's lifetime totals.
        if c.has_totals() {
            out.push(LIFETIME_TAG);
            let mask = presence(&[
                (c.first_purchase_day.is_some(), L_FIRST_PURCHASE),
                (c.orders != 0, L_ORDERS),
                (c.purchase_days != 0, L_PURCHASE_DAYS),
                (c.active_days != 0, L_ACTIVE_DAYS),
                (c.revenue.to_bits() != 0, L_REVENUE),
                (c.purchase_gap_sq != 0, L_GAP_SQ),
            ]);
            out.push(mask);
            if let Some(d) = c.first_purchase_day {
                put_ivar(out, i64::from(d));
            }
            for (b, v) in [
                (L_ORDERS, c.orders),
                (L_PURCHASE_DAYS, c.purchase_days),
                (L_ACTIVE_DAYS, c.active_days),
            ] {
                if mask & b != 0 {
                    put_uvar(out, u64::from(v));
                }
            }
            if mask & L_REVENUE != 0 {
                put_f64(out, c.revenue);
            }
            if mask & L_GAP_SQ != 0 {
                put_uvar(out, c.purchase_gap_sq);
            }
        }
    }

    /// Read rollups written by [`CustomerRollups::encode`]. Every day row is checked, and they
    /// must be in strictly increasing day order (the invariant [`CustomerRollups::apply`]
    /// relies on); the checked rows are then kept as they are.
    pub fn decode(r: &mut Reader) -> Result<Self, WireError> {
        let flags = r.u8()?;
        let has = |b: u8| flags & b != 0;
        let first_day = r.opt(has(C_FIRST_DAY), Reader::i32)?;
        let last_event = r.opt(has(C_LAST_EVENT), Reader::ivar)?;
        let expired_before = r.opt(has(C_EXPIRED_BEFORE), Reader::i32)?;
        let mut carry = Carry {
            last_purchase_day: r.opt(has(C_LAST_PURCHASE), Reader::i32)?,
            last_activity_day: r.opt(has(C_LAST_ACTIVITY), Reader::i32)?,
            last_login_day: r.opt(has(C_LAST_LOGIN), Reader::i32)?,
            nps_last: r.opt(has(C_NPS_LAST), stamped_u8)?,
            mrr_last: r.opt(has(C_MRR_LAST), stamped_f64)?,
            ..Carry::default()
        };
        let n = r.uvar()?;
        // Every row takes at least two bytes: no more rows than the input could hold.
        if n > (r.remaining() / 2) as u64 {
            return Err(r.invalid("more day rows than bytes"));
        }
        let start = r.pos();
        let mut rows = Rows::default();
        let mut prev = 0;
        for i in 0..n {
            let at = r.pos();
            let row = DayRollup::decode(prev, r)?;
            if i > 0 && row.day <= prev {
                return Err(WireError::Invalid {
                    what: "day rows out of order",
                    at,
                });
            }
            prev = row.day;
            rows.last_at = (at - start) as u32;
        }
        rows.bytes = r.since(start).to_vec();
        rows.len = n as u32;
        rows.last_day = prev;
        if r.remaining() > 0 {
            if r.u8()? != LIFETIME_TAG {
                return Err(r.invalid("unknown rollups tail"));
            }
            let mask = r.u8()?;
            if mask & !L_ALL != 0 || mask == 0 {
                return Err(r.invalid("bad lifetime totals mask"));
            }
            let has = |b: u8| mask & b != 0;
            carry.first_purchase_day = r.opt(has(L_FIRST_PURCHASE), Reader::i32)?;
            carry.orders = r.opt(has(L_ORDERS), Reader::u32)?.unwrap_or(0);
            carry.purchase_days = r.opt(has(L_PURCHASE_DAYS), Reader::u32)?.unwrap_or(0);
            carry.active_days = r.opt(has(L_ACTIVE_DAYS), Reader::u32)?.unwrap_or(0);
            carry.revenue = r.opt(has(L_REVENUE), Reader::f64)?.unwrap_or(0.0);
            carry.purchase_gap_sq = r.opt(has(L_GAP_SQ), Reader::uvar)?.unwrap_or(0);
        }
        Ok(CustomerRollups {
            first_day,
            last_event,
            expired_before,
            carry: (carry != NO_CARRY).then(|| Box::new(carry)),
            rows,
        })
    }

    /// Values folded out of expired days.
    pub fn carry(&self) -> &Carry {
        self.carry.as_deref().unwrap_or(&NO_CARRY)
    }

    fn carry_mut(&mut self) -> &mut Carry {
        self.carry.get_or_insert_with(Box::default)
    }

    /// The day rows, decoded one by one in increasing day order.
    pub fn days(&self) -> Days<'_> {
        Days {
            r: Reader::new(&self.rows.bytes),
            prev: 0,
            left: self.rows.len,
        }
    }

    /// Bytes of the encoded day rows (what [`CustomerRollups::encode`] copies).
    pub fn encoded_rows_len(&self) -> usize {
        self.rows.bytes.len()
    }

    /// Number of day rows.
    pub fn day_count(&self) -> usize {
        self.rows.len as usize
    }

    /// Day of the newest day row.
    pub fn last_day(&self) -> Option<i32> {
        (self.rows.len > 0).then_some(self.rows.last_day)
    }

    /// The decoded form (JSON, tests).
    pub fn to_plain(&self) -> PlainRollups {
        PlainRollups {
            first_day: self.first_day,
            last_event: self.last_event,
            days: self.days().collect(),
            carry: self.carry().clone(),
            expired_before: self.expired_before,
        }
    }
}

/// Index of the login count in [`DayRollup::engagement`] (`kind_index(Login)`, as a constant for
/// the hot loops; a test keeps them equal).
pub(crate) const LOGIN_INDEX: usize = 0;

/// Index of the complaint count in [`DayRollup::engagement`] (`kind_index(Complaint)`; a test
/// keeps them equal).
pub(crate) const COMPLAINT_INDEX: usize = 7;

fn kind_index(kind: EngagementKind) -> usize {
    EngagementKind::ALL
        .iter()
        .position(|k| *k == kind)
        .unwrap_or(0)
}

impl CustomerRollups {
    /// Fold one validated event in, without a metric catalog. Order-independent (see module
    /// docs).
    pub fn apply(&mut self, ev: &Event) {
        self.apply_with(ev, &[]);
    }

    /// Fold one validated event in, with what it adds to the metric catalog's counters
    /// ([`crate::catalog::Compiled::contributions`]). Order-independent (see module docs).
    pub fn apply_with(&mut self, ev: &Event, catalog: &[(u8, f64)]) {
        let day = day_of(ev.occurred_at);
        let ts = ev.occurred_at.timestamp_micros();
        self.first_day = Some(self.first_day.map_or(day, |d| d.min(day)));
        self.last_event = Some(self.last_event.map_or(ts, |t| t.max(ts)));
        if self.expired_before.is_some_and(|b| day < b) {
            self.apply_to_carry(ev, day, ts);
            return;
        }
        self.rows.update(day, |row| {
            row.last_at = Some(row.last_at.map_or(ts, |t| t.max(ts)));
            row_apply(row, ev, ts);
            add_catalog(&mut row.catalog, catalog);
        });
    }
}

/// Add catalog values (index order) into a day row's (index order, non-zero only).
fn add_catalog(row: &mut Vec<(u8, f64)>, add: &[(u8, f64)]) {
    for &(i, v) in add {
        if v == 0.0 {
            continue;
        }
        match row.binary_search_by_key(&i, |e| e.0) {
            Ok(k) => {
                row[k].1 += v;
                if row[k].1 == 0.0 {
                    row.remove(k);
                }
            }
            Err(k) => row.insert(k, (i, v)),
        }
    }
}

/// Fold `ev` (of time `ts`) into its day's row (not `last_at`).
fn row_apply(row: &mut DayRollup, ev: &Event, ts: Micros) {
    match &ev.payload {
        Payload::Purchase(p) => {
            row.purchases += 1;
            row.items = row.items.saturating_add(p.items);
            row.revenue += p.amount;
            row.discount += p.discount.unwrap_or(0.0);
        }
        Payload::Engagement(e) => {
            row.engagement[kind_index(e.kind)] += 1;
            if e.kind == EngagementKind::Session {
                row.session_seconds += e.duration_s.unwrap_or(0.0);
            }
        }
        Payload::Feedback(f) => {
            let s = Stamped {
                ts,
                value: f.nps_score,
            };
            row.nps_first = earlier(row.nps_first, s);
            row.nps_last = later(row.nps_last, s);
            row.nps_count += 1;
        }
        Payload::Subscription(s) => {
            row.mrr_last = later(row.mrr_last, Stamped { ts, value: s.mrr });
            match s.action {
                SubscriptionAction::Upgrade => row.upgrades += 1,
                SubscriptionAction::Downgrade => row.downgrades += 1,
                SubscriptionAction::Cancel => row.cancels += 1,
                _ => {}
            }
        }
    }
}

impl CustomerRollups {
    fn apply_to_carry(&mut self, ev: &Event, day: i32, ts: Micros) {
        let c = self.carry_mut();
        let max = |a: Option<i32>| Some(a.map_or(day, |d| d.max(day)));
        if c.last_activity_day.is_none_or(|l| day > l) {
            c.active_days += 1;
        }
        c.last_activity_day = max(c.last_activity_day);
        match &ev.payload {
            Payload::Purchase(p) => {
                if c.last_purchase_day.is_none_or(|l| day > l) {
                    c.purchase_days += 1;
                }
                c.first_purchase_day = Some(c.first_purchase_day.map_or(day, |f| f.min(day)));
                c.orders = c.orders.saturating_add(1);
                c.revenue += p.amount;
                c.last_purchase_day = max(c.last_purchase_day)
            }
            Payload::Engagement(e) if e.kind == EngagementKind::Login => {
                c.last_login_day = max(c.last_login_day)
            }
            Payload::Feedback(f) => {
                c.nps_last = later(
                    c.nps_last,
                    Stamped {
                        ts,
                        value: f.nps_score,
                    },
                )
            }
            Payload::Subscription(s) => {
                c.mrr_last = later(c.mrr_last, Stamped { ts, value: s.mrr })
            }
            _ => {}
        }
    }

    /// Fold every day older than `before` into the carry and drop its row.
    pub fn expire(&mut self, before: i32) {
        if self.expired_before.is_some_and(|b| b >= before) {
            return;
        }
        self.expired_before = Some(before);
        // The carry is allocated only if a row is folded into it.
        let carry = &mut self.carry;
        self.rows.expire(before, |row| {
            carry.get_or_insert_with(Box::default).fold(row);
        });
    }

    /// Heap bytes held by these rollups (for the state-size metric; the struct itself is
    /// counted by whoever holds it).
    pub fn heap_bytes(&self) -> usize {
        self.rows.bytes.capacity()
            + self
                .carry
                .as_ref()
                .map_or(0, |_| std::mem::size_of::<Carry>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use churn_events::{Engagement, Feedback};

    fn ev(id: &str, ts: &str, payload: Payload) -> Event {
        Event {
            event_id: id.into(),
            customer_id: "c".into(),
            occurred_at: DateTime::parse_from_rfc3339(ts)
                .expect("literal")
                .with_timezone(&Utc),
            payload,
        }
    }

    fn nps(score: u8) -> Payload {
        Payload::Feedback(Feedback {
            nps_score: score,
            comment: None,
            channel: None,
        })
    }

    fn login() -> Payload {
        Payload::Engagement(Engagement {
            kind: EngagementKind::Login,
            duration_s: None,
            feature: None,
        })
    }

    #[test]
    fn login_index_is_the_login_kind() {
        assert_eq!(kind_index(EngagementKind::Login), LOGIN_INDEX);
        assert_eq!(kind_index(EngagementKind::Complaint), COMPLAINT_INDEX);
    }

    #[test]
    fn day_rows_serialize_sparsely_and_round_trip() {
        let quiet = DayRollup {
            day: 20_000,
            engagement: [1, 0, 2, 0, 0, 0, 0, 0],
            ..DayRollup::default()
        };
        let json = serde_json::to_string(&quiet).expect("json");
        assert_eq!(json, r#"{"day":20000,"engagement":[1,0,2,0,0,0,0,0]}"#);
        let busy = DayRollup {
            day: -3,
            purchases: 2,
            items: 5,
            revenue: 12.5,
            discount: -0.0,
            engagement: [0, 0, 0, 0, 0, 0, 0, 9],
            session_seconds: 0.25,
            nps_first: Some(Stamped { ts: 1, value: 0 }),
            nps_last: Some(Stamped { ts: 2, value: 10 }),
            nps_count: 2,
            mrr_last: Some(Stamped { ts: 3, value: 0.0 }),
            upgrades: 1,
            downgrades: 1,
            cancels: 1,
            last_at: Some(-3 * 86_400_000_000 + 5),
            catalog: vec![(0, 3.0), (4, 0.25), (31, 1e300)],
        };
        for row in [quiet, busy, DayRollup::default()] {
            let back: DayRollup =
                serde_json::from_slice(&serde_json::to_vec(&row).expect("json")).expect("read");
            assert_eq!(back, row);
            assert_eq!(back.discount.to_bits(), row.discount.to_bits(), "-0.0 kept");
        }
    }

    fn encoded(r: &CustomerRollups) -> Vec<u8> {
        let mut out = Vec::new();
        r.encode(&mut out);
        out
    }

    fn decoded(bytes: &[u8]) -> Result<CustomerRollups, WireError> {
        let mut rd = Reader::new(bytes);
        let r = CustomerRollups::decode(&mut rd)?;
        rd.finish()?;
        Ok(r)
    }

    /// Every field at an edge: negative days, -0.0, zero values inside `Some`, large counts.
    fn edgy() -> CustomerRollups {
        let busy = DayRollup {
            day: -3,
            purchases: u32::MAX,
            items: 5,
            revenue: 12.5,
            discount: -0.0,
            engagement: [0, 0, 0, 0, 0, 0, 0, 9],
            session_seconds: 0.25,
            nps_first: Some(Stamped { ts: -1, value: 0 }),
            nps_last: Some(Stamped {
                ts: i64::MAX,
                value: 10,
            }),
            nps_count: 2,
            mrr_last: Some(Stamped { ts: 3, value: 0.0 }),
            upgrades: 1,
            downgrades: 1,
            cancels: 1,
            last_at: Some(-2 * 86_400_000_000 - 1),
            catalog: vec![(0, 0.5), (2, 7.0), (31, f64::MAX)],
        };
        let quiet = DayRollup {
            day: 20_000,
            engagement: [1, 0, 2, 0, 0, 0, 0, 0],
            ..DayRollup::default()
        };
        PlainRollups {
            first_day: Some(i32::MIN),
            last_event: Some(i64::MIN),
            days: vec![
                busy,
                quiet,
                DayRollup {
                    day: 20_001,
                    ..DayRollup::default()
                },
            ],
            carry: Carry {
                last_purchase_day: Some(-7),
                last_activity_day: Some(0),
                last_login_day: None,
                nps_last: Some(Stamped { ts: 5, value: 7 }),
                mrr_last: Some(Stamped {
                    ts: 6,
                    value: f64::MAX,
                }),
                first_purchase_day: Some(i32::MIN),
                orders: u32::MAX,
                purchase_days: 0,
                active_days: 7,
                revenue: -0.0,
                purchase_gap_sq: u64::MAX,
            },
            expired_before: Some(i32::MAX),
        }
        .try_into()
        .expect("rows in order")
    }

    #[test]
    fn binary_encoding_round_trips_exactly() {
        let pop = churn_gen::generate(&churn_gen::GenConfig {
            customers: 200,
            days: 150,
            seed: 3,
            ..Default::default()
        });
        let mut all = crate::rollups_from_events(&pop.events);
        // Some with expired days, so the carry is exercised too.
        for (_, r) in all.iter_mut().step_by(3) {
            r.expire(r.first_day.unwrap_or(0) + 40);
        }
        all.push(("edgy".into(), edgy()));
        all.push(("empty".into(), CustomerRollups::default()));
        let (mut bin, mut json) = (0, 0);
        for (id, r) in &all {
            let bytes = encoded(r);
            let back = decoded(&bytes).unwrap_or_else(|e| panic!("{id}: {e}"));
            assert_eq!(&back, r, "{id}");
            for (a, b) in back.days().zip(r.days()) {
                assert_eq!(
                    a.discount.to_bits(),
                    b.discount.to_bits(),
                    "{id}: -0.0 kept"
                );
            }
            bin += bytes.len();
            json += serde_json::to_vec(r).expect("json").len();
        }
        // The point of the encoding: a fraction of the sparse JSON.
        assert!(bin * 4 < json, "binary {bin} B vs JSON {json} B");
    }

    #[test]
    fn malformed_binary_is_an_error_never_a_panic() {
        let bytes = encoded(&edgy());
        // Every truncation fails cleanly, except the one that cuts off exactly the optional
        // lifetime tail (a record of an earlier version).
        let mut no_tail = edgy();
        *no_tail.carry_mut() = Carry {
            first_purchase_day: None,
            orders: 0,
            purchase_days: 0,
            active_days: 0,
            revenue: 0.0,
            purchase_gap_sq: 0,
            ..no_tail.carry().clone()
        };
        let boundary = encoded(&no_tail).len();
        for n in 0..bytes.len() {
            if n == boundary {
                assert_eq!(decoded(&bytes[..n]).as_ref(), Ok(&no_tail));
                continue;
            }
            assert!(decoded(&bytes[..n]).is_err(), "truncated to {n} bytes");
        }
        // Trailing garbage is refused.
        let mut long = bytes.clone();
        long.push(0);
        assert!(decoded(&long).is_err());
        // A record without the lifetime tail (earlier versions) still reads, with zero totals.
        let mut old = edgy();
        old.carry_mut().orders = 0;
        let mut plain = old.carry().clone();
        (plain.first_purchase_day, plain.active_days) = (None, 0);
        (plain.revenue, plain.purchase_gap_sq) = (0.0, 0);
        *old.carry_mut() = plain;
        let short = encoded(&old);
        assert!(short.len() < bytes.len());
        assert_eq!(decoded(&short).as_ref(), Ok(&old));
        assert!(!old.carry().has_totals());
        // Flipped bytes: an error or some value, never a panic or a huge allocation.
        for i in 0..bytes.len() {
            for x in [0x01, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[i] ^= x;
                let _ = decoded(&b);
            }
        }
        // Rows out of order are refused (apply relies on sorted days): day 5, then day 3.
        let mut unsorted = vec![0, 2];
        DayRollup::default().encode(-5, &mut unsorted);
        DayRollup::default().encode(2, &mut unsorted);
        assert!(matches!(
            decoded(&unsorted),
            Err(WireError::Invalid {
                what: "day rows out of order",
                ..
            })
        ));
        // A row count larger than the input could hold.
        assert!(decoded(&[0, 0xff, 0xff, 0xff, 0x0f]).is_err());
    }

    /// Events of a generated population, per customer, in event-time order.
    fn per_customer(days: u32) -> Vec<Vec<Event>> {
        let pop = churn_gen::generate(&churn_gen::GenConfig {
            customers: 120,
            days,
            seed: 11,
            ..Default::default()
        });
        let mut by: std::collections::BTreeMap<String, Vec<Event>> = Default::default();
        for e in pop.events {
            by.entry(e.customer_id.clone()).or_default().push(e);
        }
        by.into_values()
            .map(|mut v| {
                v.sort_by_key(|e| e.occurred_at);
                v
            })
            .collect()
    }

    /// The float sums rounded to 1e-6 (amounts are in cents, durations in seconds).
    fn cents(mut p: PlainRollups) -> PlainRollups {
        let r = |x: &mut f64| *x = (*x * 1e6).round() / 1e6;
        for d in &mut p.days {
            r(&mut d.revenue);
            r(&mut d.discount);
            r(&mut d.session_seconds);
        }
        p
    }

    #[test]
    fn rows_stay_consistent_under_any_arrival_order_and_expiry() {
        let mut seen_older = 0;
        for (n, evs) in per_customer(150).into_iter().enumerate() {
            let mut sorted = CustomerRollups::default();
            for e in &evs {
                sorted.apply(e);
                sorted.rows.check();
            }
            // A deterministic shuffle: late events land before, between and on existing rows.
            let mut order: Vec<usize> = (0..evs.len()).collect();
            order.sort_by_key(|i| (*i as u64 ^ n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let mut shuffled = CustomerRollups::default();
            for &i in &order {
                if shuffled
                    .last_day()
                    .is_some_and(|d| day_of(evs[i].occurred_at) < d)
                {
                    seen_older += 1;
                }
                shuffled.apply(&evs[i]);
                shuffled.rows.check();
            }
            // Same rows; float sums may differ in the last bits (addition order).
            assert_eq!(
                cents(shuffled.to_plain()),
                cents(sorted.to_plain()),
                "customer {n}: arrival order changed the rollups"
            );
            assert_eq!(decoded(&encoded(&shuffled)).as_ref(), Ok(&shuffled));
            // As consumed from Kafka: one topic's events after another's, each in time order
            // (runs of late events on increasing days).
            let topic = |e: &Event| match e.payload {
                Payload::Subscription(_) => 0,
                Payload::Feedback(_) => 1,
                Payload::Purchase(_) => 2,
                Payload::Engagement(_) => 3,
            };
            let mut by_topic = evs.clone();
            by_topic.sort_by_key(|e| (topic(e), e.occurred_at));
            let mut topics = CustomerRollups::default();
            for e in &by_topic {
                topics.apply(e);
                topics.rows.check();
            }
            assert_eq!(
                cents(topics.to_plain()),
                cents(sorted.to_plain()),
                "customer {n}"
            );

            // Expiry keeps exactly the rows from the cut on and folds the rest into the carry.
            let Some(first) = sorted.first_day else {
                continue;
            };
            for cut in [first, first + 1, first + 20, first + 75, first + 400] {
                let mut e = sorted.clone();
                e.expire(cut);
                e.rows.check();
                let kept: Vec<DayRollup> = sorted.days().filter(|r| r.day >= cut).collect();
                assert_eq!(e.days().collect::<Vec<_>>(), kept, "customer {n} cut {cut}");
                let last_dropped = sorted.days().filter(|r| r.day < cut).map(|r| r.day).max();
                assert_eq!(e.carry().last_activity_day, last_dropped);
                assert_eq!(decoded(&encoded(&e)).as_ref(), Ok(&e));
                // Events after expiry: late ones go to the carry, the others to rows.
                for ev in evs.iter().rev().take(5) {
                    e.apply(ev);
                    e.rows.check();
                }
            }
        }
        assert!(
            seen_older > 1000,
            "the shuffle exercised older days {seen_older} times"
        );
    }

    #[test]
    fn a_day_row_fits_the_scratch_buffer() {
        let max = Stamped {
            ts: i64::MIN,
            value: u8::MAX,
        };
        let row = DayRollup {
            day: i32::MAX,
            purchases: u32::MAX,
            items: u32::MAX,
            revenue: -1.0,
            discount: -1.0,
            engagement: [u32::MAX; 8],
            session_seconds: -1.0,
            nps_first: Some(max),
            nps_last: Some(max),
            nps_count: u32::MAX,
            mrr_last: Some(Stamped {
                ts: i64::MIN,
                value: -1.0,
            }),
            upgrades: u32::MAX,
            downgrades: u32::MAX,
            cancels: u32::MAX,
            last_at: Some(i64::MIN),
            catalog: (0..=crate::catalog::MAX_COUNTERS as u8)
                .map(|i| (i, -1.5))
                .collect(),
        };
        let mut out = Vec::new();
        row.encode(i32::MIN, &mut out);
        assert!(out.len() <= Scratch::CAP, "{} bytes", out.len());
        let mut s = Scratch::new();
        row.encode(i32::MIN, &mut s);
        assert_eq!(s.as_slice(), &out[..]);
    }

    #[test]
    fn json_form_is_the_plain_rollups() {
        let r = edgy();
        let json = serde_json::to_string(&r).expect("json");
        assert_eq!(json, serde_json::to_string(&r.to_plain()).expect("json"));
        let back: CustomerRollups = serde_json::from_str(&json).expect("read");
        assert_eq!(back, r);
        let mut plain = r.to_plain();
        plain.days.swap(0, 1);
        let unsorted = serde_json::to_string(&plain).expect("json");
        assert!(serde_json::from_str::<CustomerRollups>(&unsorted).is_err());
    }

    #[test]
    fn fold_is_order_independent() {
        let evs = [
            ev("1", "2026-01-05T10:00:00Z", nps(3)),
            ev("2", "2026-01-05T10:00:00Z", nps(9)),
            ev("3", "2026-01-02T08:00:00Z", login()),
            ev("4", "2026-01-05T11:00:00Z", nps(5)),
            ev("5", "2026-01-05T09:00:00Z", nps(1)),
        ];
        let mut fwd = CustomerRollups::default();
        evs.iter().for_each(|e| fwd.apply(e));
        let mut rev = CustomerRollups::default();
        evs.iter().rev().for_each(|e| rev.apply(e));
        assert_eq!(fwd, rev);
        let day = fwd.days().last().expect("a day");
        assert_eq!(day.nps_last.map(|s| s.value), Some(5));
        assert_eq!(day.nps_first.map(|s| s.value), Some(1));
        assert_eq!(day.nps_count, 4);
        assert_eq!(fwd.day_count(), 2);
    }

    #[test]
    fn expiry_keeps_recency_and_latest_values() {
        let mut r = CustomerRollups::default();
        r.apply(&ev("1", "2026-01-01T10:00:00Z", nps(2)));
        r.apply(&ev("2", "2026-01-03T10:00:00Z", login()));
        r.apply(&ev("3", "2026-03-01T10:00:00Z", login()));
        let cut = day_of(
            DateTime::parse_from_rfc3339("2026-02-01T00:00:00Z")
                .expect("literal")
                .with_timezone(&Utc),
        );
        r.expire(cut);
        assert_eq!(r.day_count(), 1);
        assert_eq!(r.carry().nps_last.map(|s| s.value), Some(2));
        assert_eq!(r.carry().last_login_day, Some(cut - 29));
        // A late event for an expired day lands in the carry, not in a day row.
        r.apply(&ev("4", "2026-01-10T10:00:00Z", nps(8)));
        assert_eq!(r.day_count(), 1);
        assert_eq!(r.carry().nps_last.map(|s| s.value), Some(8));
    }
}
