//! Per-customer daily rollups: the only state the feature code reads.
//!
//! Both the batch path (training) and the streaming path (serving) fold events into
//! [`CustomerRollups`] with the same [`CustomerRollups::apply`], then hand them to the same
//! polars feature query ([`crate::features`]). Folding is order-independent: counts and sums are
//! commutative and every "latest" value is chosen by `(timestamp, value)`, so a replay in any
//! order — or with late events — gives the same rollups.
//!
//! Days older than the retention horizon are folded into a small [`Carry`] (last purchase, last
//! activity, last login, latest NPS and MRR) so recency and "latest" features stay exact while the
//! per-day rows are bounded.

use chrono::{DateTime, Utc};
use churn_events::{EngagementKind, Event, Payload, SubscriptionAction};
use serde::{Deserialize, Serialize};

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

/// Values folded out of expired days.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Carry {
    pub last_purchase_day: Option<i32>,
    pub last_activity_day: Option<i32>,
    pub last_login_day: Option<i32>,
    pub nps_last: Option<Stamped<u8>>,
    pub mrr_last: Option<Stamped<f64>>,
}

/// All state kept for one customer.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CustomerRollups {
    /// First day any event was seen (tenure start). Never expires.
    pub first_day: Option<i32>,
    /// Event time of the newest event folded in.
    pub last_event: Option<Micros>,
    /// Per-day rows, sorted by day, at most one per day.
    pub days: Vec<DayRollup>,
    /// Everything before `expired_before` lives here.
    pub carry: Carry,
    /// Days `< expired_before` have been folded into `carry`.
    pub expired_before: Option<i32>,
}

/// Index of the login count in [`DayRollup::engagement`] (`kind_index(Login)`, as a constant for
/// the hot loops; a test keeps them equal).
pub(crate) const LOGIN_INDEX: usize = 0;

fn kind_index(kind: EngagementKind) -> usize {
    EngagementKind::ALL
        .iter()
        .position(|k| *k == kind)
        .unwrap_or(0)
}

impl CustomerRollups {
    /// Fold one validated event in. Order-independent (see module docs).
    pub fn apply(&mut self, ev: &Event) {
        let day = day_of(ev.occurred_at);
        let ts = ev.occurred_at.timestamp_micros();
        self.first_day = Some(self.first_day.map_or(day, |d| d.min(day)));
        self.last_event = Some(self.last_event.map_or(ts, |t| t.max(ts)));
        if self.expired_before.is_some_and(|b| day < b) {
            self.apply_to_carry(ev, day, ts);
            return;
        }
        let row = self.day_mut(day);
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

    fn day_mut(&mut self, day: i32) -> &mut DayRollup {
        let idx = match self.days.binary_search_by_key(&day, |r| r.day) {
            Ok(i) => i,
            Err(i) => {
                self.days.insert(
                    i,
                    DayRollup {
                        day,
                        ..DayRollup::default()
                    },
                );
                i
            }
        };
        &mut self.days[idx]
    }

    fn apply_to_carry(&mut self, ev: &Event, day: i32, ts: Micros) {
        let c = &mut self.carry;
        let max = |a: Option<i32>| Some(a.map_or(day, |d| d.max(day)));
        c.last_activity_day = max(c.last_activity_day);
        match &ev.payload {
            Payload::Purchase(_) => c.last_purchase_day = max(c.last_purchase_day),
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
        let keep_from = self.days.partition_point(|r| r.day < before);
        for row in self.days.drain(..keep_from) {
            let c = &mut self.carry;
            let d = Some(row.day);
            c.last_activity_day = c.last_activity_day.max(d);
            if row.purchases > 0 {
                c.last_purchase_day = c.last_purchase_day.max(d);
            }
            if row.engagement[LOGIN_INDEX] > 0 {
                c.last_login_day = c.last_login_day.max(d);
            }
            if let Some(n) = row.nps_last {
                c.nps_last = later(c.nps_last, n);
            }
            if let Some(m) = row.mrr_last {
                c.mrr_last = later(c.mrr_last, m);
            }
        }
    }

    /// Approximate heap + inline bytes held for this customer (for the state-size metric).
    pub fn approx_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.days.capacity() * std::mem::size_of::<DayRollup>()
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
        };
        for row in [quiet, busy, DayRollup::default()] {
            let back: DayRollup =
                serde_json::from_slice(&serde_json::to_vec(&row).expect("json")).expect("read");
            assert_eq!(back, row);
            assert_eq!(back.discount.to_bits(), row.discount.to_bits(), "-0.0 kept");
        }
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
        let day = fwd.days.last().expect("a day");
        assert_eq!(day.nps_last.map(|s| s.value), Some(5));
        assert_eq!(day.nps_first.map(|s| s.value), Some(1));
        assert_eq!(day.nps_count, 4);
        assert_eq!(fwd.days.len(), 2);
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
        assert_eq!(r.days.len(), 1);
        assert_eq!(r.carry.nps_last.map(|s| s.value), Some(2));
        assert_eq!(r.carry.last_login_day, Some(cut - 29));
        // A late event for an expired day lands in the carry, not in a day row.
        r.apply(&ev("4", "2026-01-10T10:00:00Z", nps(8)));
        assert_eq!(r.days.len(), 1);
        assert_eq!(r.carry.nps_last.map(|s| s.value), Some(8));
    }
}
