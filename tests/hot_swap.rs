//! Model rollout without a restart, on the real local broker: the pipeline serves model A from
//! `model.path` with candidate B in shadow mode (`model.shadow_path`), both re-read every second.
//! Asserted:
//! - B's scores reach the shadow topic (B next to A, for the live scoring's rows) and the
//!   agreement counters add up to the records; `churn_model_info` shows both models;
//! - a corrupt file written over `model.path` is refused (`churn_model_reloads_total{role="live",
//!   outcome="refused"}`) and A keeps serving;
//! - `rollout::promote` (what `churnstream promote` runs) puts B live between two batches: the
//!   scores of every partition switch once from A to B and never back, and the events after the
//!   swap are scored by B with the state built under A (no restart, no re-read of the inputs).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use churn_events::{ScoreRecord, ShadowScore};
use churn_pipeline::rollout;

/// Poll /metrics until `series` reaches at least `want` (at most 30 s); its last value.
async fn wait_metric(addr: std::net::SocketAddr, series: &str, want: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = common::http_get(addr, "/metrics").await;
        let v = common::metric(&body, series).unwrap_or(0.0);
        if v >= want || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn sum(body: &str, prefix: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_model_is_compared_then_promoted_without_a_restart() {
    let mut cfg = common::pipeline_config("hotswap", 2).await;
    common::quick_member(&mut cfg);
    cfg.topics.shadow_scores = format!("{}_shadow", cfg.topics.scores);
    common::create_topics(
        &cfg.kafka.brokers,
        &[(cfg.topics.shadow_scores.as_str(), 2)],
    )
    .await;
    let (pop, a, _) = common::population_and_model(400, 150, 7, 30);
    let (_, b, _) = common::population_and_model(400, 150, 8, 30);
    assert_ne!(a.model_version, b.model_version);
    let dir = tempfile::tempdir().expect("tempdir");
    let live = dir.path().join("model.json");
    let candidate = dir.path().join("candidate.json");
    a.save(&live).expect("save A");
    b.save(&candidate).expect("save B");
    cfg.model.path = live.clone();
    cfg.model.shadow_path = Some(candidate.clone());
    cfg.model.reload_interval_s = 1;

    let served = common::serve(&cfg, a.clone()).await;
    let addr = served.addr;
    let (va, vb) = (a.model_version.as_str(), b.model_version.as_str());
    let shadow_info = format!("churn_model_info{{role=\"shadow\",version=\"{vb}\"}}");
    assert_eq!(
        wait_metric(addr, &shadow_info, 1.0).await,
        1.0,
        "shadow B loaded"
    );
    let live_a = format!("churn_model_info{{role=\"live\",version=\"{va}\"}}");
    assert_eq!(wait_metric(addr, &live_a, 1.0).await, 1.0);

    // First half of the history: A live, B in the shadow.
    let split = pop.events.len() * 2 / 3;
    let (first, second) = pop.events.split_at(split);
    common::publish(&cfg, first).await;
    common::wait_caught_up(&cfg, 2).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let shadows = tokio::task::block_in_place(|| {
        common::read_topic_to_end(&cfg.kafka.brokers, &cfg.topics.shadow_scores)
    });
    assert!(shadows.len() > 500, "{} shadow scores", shadows.len());
    let mut by_agreement: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &shadows {
        let s: ShadowScore = serde_json::from_slice(&r.payload).expect("shadow score");
        assert_eq!(
            (s.model_version.as_str(), s.live_model_version.as_str()),
            (vb, va)
        );
        assert_eq!(r.key.as_deref(), Some(s.customer_id.as_bytes()));
        let agreement = if s.risk_band == s.live_band {
            "same_band"
        } else {
            "differ"
        };
        *by_agreement.entry(agreement).or_default() += 1;
    }
    let (_, body) = common::http_get(addr, "/metrics").await;
    let counted = sum(&body, "churn_model_shadow_scores_total{");
    assert!(
        counted >= shadows.len() as f64,
        "{counted} counted, {} on the topic",
        shadows.len()
    );
    assert_eq!(counted, sum(&body, "churn_model_shadow_decisions_total{"));
    eprintln!("shadow bands: {by_agreement:?}, metrics: {counted}");

    // A corrupt artifact over the live file: refused, A keeps serving.
    std::fs::write(&live, b"{\"format_version\": 2, \"truncated").expect("corrupt");
    let refused = "churn_model_reloads_total{outcome=\"refused\",role=\"live\"}";
    assert_eq!(
        wait_metric(addr, refused, 1.0).await,
        1.0,
        "corrupt file refused"
    );
    let (_, body) = common::http_get(addr, "/metrics").await;
    assert_eq!(common::metric(&body, &live_a), Some(1.0), "A still serving");

    // Promote B: validated, renamed over the live file, swapped in between two batches.
    let promoted = rollout::promote(&candidate, &live, &cfg).expect("promote");
    assert_eq!(promoted, vb);
    let loaded = "churn_model_reloads_total{outcome=\"loaded\",role=\"live\"}";
    assert_eq!(wait_metric(addr, loaded, 1.0).await, 1.0, "B swapped in");
    let live_b = format!("churn_model_info{{role=\"live\",version=\"{vb}\"}}");
    assert_eq!(wait_metric(addr, &live_b, 1.0).await, 1.0);

    // The rest of the history is scored by B, on the state A's run built.
    common::publish(&cfg, second).await;
    common::wait_caught_up(&cfg, 2).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, body) = common::http_get(addr, "/metrics").await;
    assert_eq!(common::metric(&body, refused), Some(1.0));
    served.stop().await;

    let scores = tokio::task::block_in_place(|| {
        common::read_topic_to_end(&cfg.kafka.brokers, &cfg.topics.scores)
    });
    let mut per_partition: BTreeMap<i32, Vec<(i64, String)>> = BTreeMap::new();
    for r in &scores {
        let s: ScoreRecord = serde_json::from_slice(&r.payload).expect("score");
        per_partition
            .entry(r.partition)
            .or_default()
            .push((r.offset, s.model_version));
    }
    let mut scored_by_b = 0;
    for (p, mut v) in per_partition {
        v.sort();
        let first_b = v.iter().position(|(_, m)| m == vb).unwrap_or(v.len());
        assert!(first_b > 0, "partition {p}: A scored first");
        assert!(
            v[..first_b].iter().all(|(_, m)| m == va),
            "partition {p}: only A before the swap"
        );
        assert!(
            v[first_b..].iter().all(|(_, m)| m == vb),
            "partition {p}: never A again after the swap"
        );
        scored_by_b += v.len() - first_b;
    }
    assert!(scored_by_b > 300, "{scored_by_b} scores by B");
    // The customers of the first part were not forgotten: B scored customers A had tracked
    // without their early events being read again.
    let consumed = sum(&body, "churn_ingest_events_consumed_total{");
    assert_eq!(consumed as usize, pop.events.len(), "every event read once");
}
