//! Feature values on hand-built histories, leakage, and expiry invariance.

use chrono::{DateTime, Duration, Utc};
use churn_events::{
    Engagement, EngagementKind, Event, Feedback, Payload, Purchase, Subscription,
    SubscriptionAction,
};
use churn_features::registry::FEATURES;
use churn_features::rollup::RETAIN_DAYS;
use churn_features::training::{build_training_set, ChurnDefinition, ObservationPlan};
use churn_features::{
    day_of, feature_frame, rollups_from_events, CustomerRollups, FeatureMatrix, RollupFrames,
};

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-01T12:00:00Z")
        .expect("literal")
        .with_timezone(&Utc)
}

fn ev(n: usize, cust: &str, day: i64, payload: Payload) -> Event {
    Event {
        event_id: format!("e{n}"),
        customer_id: cust.into(),
        occurred_at: t0() + Duration::days(day),
        payload,
    }
}

fn purchase(amount: f64) -> Payload {
    Payload::Purchase(Purchase {
        order_id: "o".into(),
        amount,
        currency: "EUR".into(),
        items: 1,
        discount: Some(amount / 10.0),
    })
}

fn eng(kind: EngagementKind) -> Payload {
    Payload::Engagement(Engagement {
        kind,
        duration_s: Some(120.0),
        feature: None,
    })
}

fn nps(score: u8) -> Payload {
    Payload::Feedback(Feedback {
        nps_score: score,
        comment: None,
        channel: None,
    })
}

fn sub(action: SubscriptionAction, mrr: f64) -> Payload {
    Payload::Subscription(Subscription {
        action,
        plan: "pro".into(),
        mrr,
    })
}

fn features_of(customers: &[&CustomerRollups], as_of: i32) -> FeatureMatrix {
    let frames = RollupFrames::build(customers.iter().copied(), as_of).expect("frames");
    FeatureMatrix::from_frame(&feature_frame(&frames).expect("query")).expect("matrix")
}

fn get(m: &FeatureMatrix, row: usize, name: &str) -> f64 {
    let j = FEATURES
        .iter()
        .position(|d| d.name == name)
        .expect("known feature");
    m.row(row)[j]
}

fn history() -> Vec<Event> {
    let mut v = Vec::new();
    let mut n = 0;
    let mut push = |day: i64, p: Payload| {
        n += 1;
        v.push(ev(n, "a", day, p));
    };
    push(0, sub(SubscriptionAction::Start, 49.0));
    push(0, purchase(100.0));
    push(10, nps(9));
    push(40, purchase(50.0));
    push(45, eng(EngagementKind::Login));
    push(50, eng(EngagementKind::Session));
    push(50, eng(EngagementKind::FeatureUse));
    push(60, nps(4));
    push(61, sub(SubscriptionAction::Downgrade, 19.0));
    push(62, eng(EngagementKind::Complaint));
    v
}

#[test]
fn hand_computed_values() {
    let evs = history();
    let r = rollups_from_events(&evs);
    let c = &r[0].1;
    let as_of = day_of(t0()) + 70;
    let m = features_of(&[c], as_of);
    assert_eq!(m.len(), 1);
    assert_eq!(get(&m, 0, "recency_purchase_days"), 30.0);
    assert_eq!(get(&m, 0, "recency_activity_days"), 8.0);
    assert_eq!(get(&m, 0, "days_since_login"), 25.0);
    assert_eq!(get(&m, 0, "tenure_days"), 71.0);
    assert_eq!(get(&m, 0, "purchases_28d"), 0.0);
    assert_eq!(get(&m, 0, "purchases_90d"), 2.0);
    assert_eq!(get(&m, 0, "revenue_90d"), 150.0);
    assert_eq!(get(&m, 0, "avg_order_value_90d"), 75.0);
    assert!((get(&m, 0, "discount_share_90d") - 15.0 / 165.0).abs() < 1e-12);
    assert_eq!(get(&m, 0, "sessions_28d"), 1.0);
    assert_eq!(get(&m, 0, "complaints_28d"), 1.0);
    assert_eq!(get(&m, 0, "session_minutes_28d"), 2.0);
    assert_eq!(get(&m, 0, "feature_uses_per_session_28d"), 0.5);
    assert_eq!(get(&m, 0, "mrr"), 19.0);
    assert_eq!(get(&m, 0, "subscribed"), 1.0);
    assert_eq!(get(&m, 0, "downgrades_90d"), 1.0);
    assert_eq!(get(&m, 0, "nps_latest"), 4.0);
    assert_eq!(get(&m, 0, "nps_detractor"), 1.0);
    assert_eq!(get(&m, 0, "nps_promoter"), 0.0);
    assert_eq!(get(&m, 0, "nps_missing"), 0.0);
    assert_eq!(get(&m, 0, "nps_trend_90d"), -5.0);
    // last 28 d (days 43..=70): login, session, feature_use, complaint = 4 (NPS answers and
    // subscription changes have their own features); previous 28 d (days 15..=42): purchase = 1.
    // (4-1)/(1+1) = 1.5
    assert_eq!(get(&m, 0, "activity_28d"), 4.0);
    assert_eq!(get(&m, 0, "activity_change_28d"), 1.5);
    // Lifetime: purchases on days 0 and 40; active on days 0, 10, 40, 45, 50, 60, 61, 62.
    let close = |name: &str, want: f64| {
        let v = get(&m, 0, name);
        assert!((v - want).abs() < 1e-12, "{name}: {v} vs {want}");
    };
    close("orders_lifetime", 2.0);
    close("purchase_days_lifetime", 2.0);
    close("revenue_lifetime", 150.0);
    close("avg_order_value_lifetime", 75.0);
    close("active_days_lifetime", 8.0);
    close("active_day_share", 8.0 / 71.0);
    close("one_time_buyer", 0.0);
    close("purchase_age_days", 71.0);
    close("purchase_span_days", 40.0);
    close("purchase_gap_mean_days", 40.0);
    close("purchase_gap_cv", 0.0);
    close("purchase_overdue", 30.0 / 40.0);
    close("visit_overdue", 8.0 / (62.0 / 7.0));
    // No order in the last 28 days (43..=70): (0.5/28) / (2.5/71).
    close("purchase_rate_vs_normal_28d", (0.5 / 28.0) / (2.5 / 71.0));
    close("activity_rate_vs_normal_28d", (5.5 / 28.0) / (8.5 / 71.0));
    close("activity_rate_vs_normal_7d", (0.5 / 7.0) / (8.5 / 71.0));
    // The complaint (day 62), the detractor answer (60) and the downgrade (61) came while the
    // customer was as active as usual: e.g. for the complaint, 1 active day (50) in 48..=61 vs
    // 3 (0, 40, 45) in 0..=47: (1/14 + 0.02) / (3/48 + 0.02) >= 0.7. NPS answers and
    // subscription events are no activity.
    close("complaint_before_decline", 1.0);
    close("detractor_before_decline", 1.0);
    close("downgrade_before_decline", 1.0);
}

/// Lifetime totals and the inter-purchase spread survive expiry exactly, also when the cut
/// falls between two purchases and a late event lands in the carry.
#[test]
fn lifetime_features_survive_expiry() {
    let mut evs = Vec::new();
    for (n, day) in [0i64, 3, 10, 30, 31, 200, 260, 300].into_iter().enumerate() {
        evs.push(ev(n, "a", day, purchase(10.0 + day as f64)));
        evs.push(ev(100 + n, "a", day + 1, eng(EngagementKind::Login)));
    }
    let full = rollups_from_events(&evs);
    let c = &full[0].1;
    let as_of = day_of(t0()) + 305;
    let a = features_of(&[c], as_of);
    // Gaps 3, 7, 20, 1, 169, 60, 40: mean 300/7, Σg² = 9+49+400+1+28561+3600+1600.
    let mean = 300.0 / 7.0;
    let var: f64 = 34_220.0 / 7.0 - mean * mean;
    assert!((get(&a, 0, "purchase_gap_cv") - var.sqrt() / mean).abs() < 1e-12);
    assert_eq!(get(&a, 0, "orders_lifetime"), 8.0);
    // Purchase days and the logins a day later; day 31 has both.
    assert_eq!(get(&a, 0, "active_days_lifetime"), 15.0);
    // Cuts at most as_of - 90 (the engine keeps RETAIN_DAYS > 90 of rows).
    for cut in [5, 31, 32, 150, 201, 215] {
        let mut e = c.clone();
        e.expire(day_of(t0()) + cut);
        assert_eq!(features_of(&[&e], as_of), a, "cut at day {cut}");
        // Through the changelog encoding, too.
        let mut bytes = Vec::new();
        e.encode(&mut bytes);
        let mut r = churn_features::wire::Reader::new(&bytes);
        let back = CustomerRollups::decode(&mut r).expect("decode");
        assert_eq!(features_of(&[&back], as_of), a, "cut at day {cut}, decoded");
    }
    // A late purchase on an expired day (after the carry's last purchase day) counts.
    let mut e = c.clone();
    e.expire(day_of(t0()) + 150);
    e.apply(&ev(999, "a", 100, purchase(5.0)));
    let m = features_of(&[&e], as_of);
    assert_eq!(get(&m, 0, "orders_lifetime"), 9.0);
    assert_eq!(get(&m, 0, "purchase_days_lifetime"), 9.0);
    assert_eq!(
        get(&m, 0, "revenue_lifetime"),
        get(&a, 0, "revenue_lifetime") + 5.0
    );
}

/// Events on both sides of every window edge (28, 56, 90 days back): each lands in exactly the
/// windows it belongs to, and first/last values and recencies come from the right day.
#[test]
fn window_edges() {
    let as_of = 200;
    let mut evs = Vec::new();
    let mut n = 0;
    let mut push = |back: i64, p: Payload| {
        n += 1;
        evs.push(ev(n, "w", as_of - back, p));
    };
    // purchases of 1, 2, 4, … so every window sum names exactly the days it includes
    for (i, back) in [0, 27, 28, 55, 56, 89, 90, 150].into_iter().enumerate() {
        push(back, purchase(f64::from(1u32 << i)));
    }
    push(89, nps(2)); // first answer inside 90 days
    push(90, nps(10)); // just outside
    push(28, nps(6)); // latest answer
    push(95, eng(EngagementKind::Login)); // only login: older than every window
    push(56, sub(SubscriptionAction::Downgrade, 10.0)); // in 90 d, not in either 28 d window
    push(-1, purchase(1000.0)); // after as_of: must not count anywhere
    let r = rollups_from_events(&evs);
    let day0 = i32::try_from(as_of).expect("small") + day_of(t0());
    let m = features_of(&[&r[0].1], day0);
    // 28 d = backs 0, 27 → 1 + 2; previous 28 d = backs 28, 55 → 4 + 8; 90 d = backs 0..=89
    assert_eq!(get(&m, 0, "revenue_28d"), 3.0);
    assert_eq!(get(&m, 0, "purchases_28d"), 2.0);
    assert_eq!(get(&m, 0, "revenue_90d"), 63.0);
    assert_eq!(get(&m, 0, "purchases_90d"), 6.0);
    // (3 - 12) / (12 + 1)
    assert!((get(&m, 0, "revenue_change_28d") - (-9.0 / 13.0)).abs() < 1e-12);
    assert_eq!(get(&m, 0, "recency_purchase_days"), 0.0);
    assert_eq!(get(&m, 0, "days_since_login"), 95.0);
    assert_eq!(get(&m, 0, "logins_28d"), 0.0);
    assert_eq!(get(&m, 0, "nps_latest"), 6.0);
    assert_eq!(get(&m, 0, "nps_trend_90d"), 4.0);
    assert_eq!(get(&m, 0, "downgrades_90d"), 1.0);
    assert_eq!(get(&m, 0, "mrr"), 10.0);
    assert_eq!(get(&m, 0, "tenure_days"), 151.0);
    // One day later every edge moves by one: back 27 → 28 leaves the 28 d window, back 89 → 90
    // leaves the 90 d window (and with it the first NPS answer inside it).
    let m = features_of(&[&r[0].1], day0 + 1);
    assert_eq!(get(&m, 0, "revenue_28d"), 1000.0 + 1.0);
    assert_eq!(get(&m, 0, "revenue_90d"), 1000.0 + 31.0);
    assert_eq!(get(&m, 0, "nps_trend_90d"), 0.0);
    assert_eq!(get(&m, 0, "days_since_login"), 96.0);
}

#[test]
fn activity_is_purchases_plus_engagement() {
    let evs = history();
    let r = rollups_from_events(&evs);
    let m = features_of(&[&r[0].1], day_of(t0()) + 70);
    let kinds = [
        "logins_28d",
        "sessions_28d",
        "page_views_28d",
        "feature_uses_28d",
        "email_opens_28d",
        "email_clicks_28d",
        "support_tickets_28d",
        "complaints_28d",
        "purchases_28d",
    ];
    let sum: f64 = kinds.iter().map(|k| get(&m, 0, k)).sum();
    assert_eq!(get(&m, 0, "activity_28d"), sum);
}

#[test]
fn no_leakage_future_events_do_not_change_past_features() {
    let mut evs = history();
    let r = rollups_from_events(&evs);
    let as_of = day_of(t0()) + 70;
    let before = features_of(&[&r[0].1], as_of);
    // Events on later days that would change almost every feature if they leaked.
    evs.push(ev(100, "a", 71, purchase(1000.0)));
    evs.push(ev(101, "a", 72, nps(10)));
    evs.push(ev(102, "a", 75, sub(SubscriptionAction::Upgrade, 199.0)));
    let r2 = rollups_from_events(&evs);
    let after = features_of(&[&r2[0].1], as_of);
    assert_eq!(before, after);
    // ...while the same events are visible one week later.
    let later = features_of(&[&r2[0].1], as_of + 7);
    assert_eq!(get(&later, 0, "nps_latest"), 10.0);
    assert_eq!(get(&later, 0, "mrr"), 199.0);
}

#[test]
fn training_labels_look_only_forward_and_features_only_back() {
    let pop = churn_gen::generate(&churn_gen::GenConfig {
        customers: 300,
        days: 150,
        ..Default::default()
    });
    let customers = rollups_from_events(&pop.events);
    let plan = ObservationPlan::default();
    let set = build_training_set(&customers, &plan).expect("set");
    assert!(set.len() > 300, "rows: {}", set.len());
    let churn_rate = set.labels.iter().filter(|&&y| y).count() as f64 / set.len() as f64;
    assert!(
        churn_rate > 0.01 && churn_rate < 0.6,
        "churn rate {churn_rate}"
    );
    // Truncating history right after an observation date must not change that row's features.
    let as_of = set.as_of[set.len() / 2];
    let cutoff = churn_features::day_start(as_of + 1);
    let truncated: Vec<Event> = pop
        .events
        .iter()
        .filter(|e| e.occurred_at < cutoff)
        .cloned()
        .collect();
    let tcust = rollups_from_events(&truncated);
    let full = features_of(&customers.iter().map(|(_, c)| c).collect::<Vec<_>>(), as_of);
    let part = features_of(&tcust.iter().map(|(_, c)| c).collect::<Vec<_>>(), as_of);
    // Map by customer id (cids differ between the two layouts).
    let full_ids: Vec<&str> = full
        .cids
        .iter()
        .map(|&i| customers[i as usize].0.as_str())
        .collect();
    let part_ids: Vec<&str> = part
        .cids
        .iter()
        .map(|&i| tcust[i as usize].0.as_str())
        .collect();
    assert_eq!(full_ids, part_ids);
    assert_eq!(full.values, part.values);
    // Every label agrees with the inactivity definition computed straight from the events.
    let def = ChurnDefinition::Inactivity {
        days: 30,
        within_days: 0,
    };
    for i in (0..set.len()).step_by(37) {
        let id = &set.customer_ids[i];
        let a = set.as_of[i];
        let start = churn_features::day_start(a + 1);
        let end = churn_features::day_start(a + 31);
        let any = pop
            .events
            .iter()
            .any(|e| &e.customer_id == id && e.occurred_at >= start && e.occurred_at < end);
        assert_eq!(set.labels[i], !any, "customer {id} at {a} ({def:?})");
    }
}

#[test]
fn expiry_does_not_change_features() {
    let pop = churn_gen::generate(&churn_gen::GenConfig {
        customers: 150,
        days: 240,
        ..Default::default()
    });
    let customers = rollups_from_events(&pop.events);
    let last = customers
        .iter()
        .filter_map(|(_, c)| c.last_day())
        .max()
        .expect("events");
    let mut expired: Vec<CustomerRollups> = customers.iter().map(|(_, c)| c.clone()).collect();
    for c in &mut expired {
        c.expire(last - RETAIN_DAYS);
    }
    assert!(
        expired.iter().map(|c| c.day_count()).sum::<usize>()
            < customers.iter().map(|(_, c)| c.day_count()).sum::<usize>()
    );
    let a = features_of(&customers.iter().map(|(_, c)| c).collect::<Vec<_>>(), last);
    let b = features_of(&expired.iter().collect::<Vec<_>>(), last);
    assert_eq!(a, b);
}

/// "Leaves within W days": a silence of N days starting on the observation day or after one of
/// the customer's active days before as_of + W.
#[test]
fn leaving_within_days_label() {
    let base = day_of(t0());
    let of = |days: &[i64]| {
        let evs: Vec<Event> = days
            .iter()
            .enumerate()
            .map(|(n, d)| ev(n, "a", *d, eng(EngagementKind::Login)))
            .collect();
        rollups_from_events(&evs).remove(0).1
    };
    let def = |n, w| ChurnDefinition::Inactivity {
        days: n,
        within_days: w,
    };
    let a = base + 10;
    // Active on days 0..=10, then days 15 and 40: the 25-day gap after day 15 is a 20-day
    // silence starting on day 15 (5 days after as_of).
    let c = of(&[0, 5, 10, 15, 40]);
    assert!(
        !def(20, 0).label(&c, a),
        "an event 5 days later: not silent from as_of"
    );
    assert!(!def(20, 5).label(&c, a), "day 15 is not before as_of + 5");
    assert!(
        def(20, 6).label(&c, a),
        "the silence after day 15 starts within 6 days"
    );
    assert!(
        !def(30, 10).label(&c, a),
        "the 25-day gap is shorter than 30"
    );
    // No event after as_of: silent from as_of, whatever W.
    let gone = of(&[0, 10]);
    for w in [0, 1, 30] {
        assert!(def(20, w).label(&gone, a), "w {w}");
    }
    // Regular visitor every 3 days: never leaves.
    let regular = of(&(0..40).map(|k| 3 * k).collect::<Vec<_>>());
    assert!(!def(20, 30).label(&regular, a));
    assert_eq!(def(20, 30).horizon(), 50);
}
