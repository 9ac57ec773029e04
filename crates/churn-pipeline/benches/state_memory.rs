//! State memory per tracked customer: a synthetic stream touching 1,000,000 distinct customers
//! (3 events each — a purchase, a login, a session or NPS answer — on random days of a 90-day
//! window, in event-time order) through `Engine::ingest_event`, scored every 5000 events with
//! `Engine::score_dirty` (the service's batches reach 50 000 at high rates; 5 000 keeps this
//! comparable with earlier runs). Reports `Engine::kpis().state_bytes / customers`
//! (`bytes_per_customer`, the engine's own estimate) and the process RSS growth per customer
//! (`rss_delta_bytes_per_customer`, includes allocator overhead, the customer-id map and the
//! 200 k-entry dedupe window).
//!
//! Events are built in memory (no JSON decode): this measures state, not decoding. One JSON line,
//! `name = "state_memory_1m"`. Environment: `CHURN_BENCH_CUSTOMERS` (1 000 000),
//! `CHURN_BENCH_EVENTS_PER_CUSTOMER` (3), `CHURN_BENCH_DAYS` (90).

mod support;

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Duration, TimeZone, Utc};
use churn_events::{
    Engagement, EngagementKind, Event, Feedback, Payload, Purchase, Subscription,
    SubscriptionAction,
};
use churn_pipeline::config::{AlertConfig, PipelineConfig};
use churn_pipeline::{Engine, Ingest};

/// splitmix64: a cheap deterministic hash for event placement.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn event(cust: u32, k: u8, at: DateTime<Utc>, h: u64) -> Event {
    let payload = match k {
        0 => Payload::Purchase(Purchase {
            order_id: format!("o-{cust}-{k}"),
            amount: (h % 20_000) as f64 / 100.0,
            currency: "EUR".into(),
            items: 1 + (h % 4) as u32,
            discount: None,
        }),
        1 => Payload::Engagement(Engagement {
            kind: EngagementKind::Login,
            duration_s: None,
            feature: None,
        }),
        _ if h % 35 < 7 => Payload::Feedback(Feedback {
            nps_score: (h % 11) as u8,
            comment: None,
            channel: None,
        }),
        _ if h % 35 < 12 => Payload::Subscription(Subscription {
            action: SubscriptionAction::Renew,
            plan: "basic".into(),
            mrr: 19.0,
        }),
        _ => Payload::Engagement(Engagement {
            kind: EngagementKind::Session,
            duration_s: Some((h % 3600) as f64),
            feature: None,
        }),
    };
    Event {
        event_id: format!("ev-{cust}-{k}"),
        customer_id: format!("cust-{cust:07}"),
        occurred_at: at,
        payload,
    }
}

fn main() {
    if std::env::var_os("POLARS_MAX_THREADS").is_none() {
        std::env::set_var("POLARS_MAX_THREADS", "1");
    }
    let customers = support::env_or("CHURN_BENCH_CUSTOMERS", 1_000_000) as u32;
    let per = support::env_or("CHURN_BENCH_EVENTS_PER_CUSTOMER", 3).clamp(1, 255) as u8;
    let days = support::env_or("CHURN_BENCH_DAYS", 90).max(1);
    let start = Utc
        .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .expect("valid start");

    // (second offset, customer, k) in event-time order: 16 bytes each, built before the
    // baseline RSS is taken.
    let mut plan: Vec<(u64, u32, u8)> = (0..customers)
        .flat_map(|c| {
            (0..per).map(move |k| {
                let h = mix((u64::from(c) << 8) | u64::from(k));
                (h % (days * 86_400), c, k)
            })
        })
        .collect();
    plan.sort_unstable();

    let model = Arc::new(support::quick_model());
    let mut engine =
        Engine::new(model, PipelineConfig::default(), AlertConfig::default()).expect("engine");
    let rss_before = support::current_rss().unwrap_or(0);

    let t0 = Instant::now();
    let mut batch_start = Instant::now();
    let mut n_batch = 0usize;
    let mut accepted = 0usize;
    for &(secs, c, k) in &plan {
        let at = start + Duration::seconds(secs as i64);
        let ev = event(c, k, at, mix(secs ^ u64::from(c)));
        let source = (c % 16) as usize;
        if engine.ingest_event(&ev, source, batch_start) == Ingest::Accepted {
            accepted += 1;
        }
        n_batch += 1;
        if n_batch == 5000 {
            engine.score_dirty().expect("score_dirty");
            n_batch = 0;
            batch_start = Instant::now();
        }
    }
    engine.score_dirty().expect("score_dirty");
    let seconds = t0.elapsed().as_secs_f64();
    let rss_after = support::current_rss().unwrap_or(0);
    let kpis = engine.kpis();
    let n = plan.len();
    let per_customer = |b: u64| b.checked_div(kpis.customers as u64);
    // Restore: the changelog records of every customer (what `kafka::run` writes per batch for
    // the customers it changed), restored into a fresh engine: deserialization + rebuild, the
    // CPU part of a restore (reading the changelog partitions from the broker comes on top).
    let t_snap = Instant::now();
    let records = engine.take_changelog().expect("changelog");
    let snapshot_seconds = t_snap.elapsed().as_secs_f64();
    let changelog_bytes: usize = records.iter().map(|r| r.key.len() + r.payload.len()).sum();
    let mut fresh = Engine::new(
        Arc::new(support::quick_model()),
        PipelineConfig::default(),
        AlertConfig::default(),
    )
    .expect("engine");
    let t_restore = Instant::now();
    for r in &records {
        fresh.restore(&r.key, &r.payload).expect("restore");
    }
    let restore_seconds = t_restore.elapsed().as_secs_f64();
    assert_eq!(fresh.kpis().customers, kpis.customers);
    let line = serde_json::json!({
        "name": "state_memory_1m",
        "snapshot_seconds": snapshot_seconds,
        "restore_seconds": restore_seconds,
        "changelog_records": records.len(),
        "changelog_bytes_per_customer": changelog_bytes.checked_div(records.len()),
        "events": n,
        "seconds": seconds,
        "events_per_s": n as f64 / seconds,
        "p50_ms": null,
        "p99_ms": null,
        "peak_rss_bytes": support::peak_rss(),
        "bytes_per_customer": kpis.state_bytes.checked_div(kpis.customers),
        "rss_delta_bytes_per_customer": per_customer(rss_after.saturating_sub(rss_before)),
        "customers": kpis.customers,
        "accepted": accepted,
        "state_bytes": kpis.state_bytes,
        "rss_before_bytes": rss_before,
        "rss_after_bytes": rss_after,
        "days": days,
        "events_per_customer": per,
    });
    println!("{line}");
}
