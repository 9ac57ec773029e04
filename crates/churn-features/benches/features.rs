//! Feature-stage benchmark (plain `main`, not a test): times
//! (a) folding events into per-customer rollups (`rollups_from_events`),
//! (b) `RollupFrames::build` + `feature_frame` over every customer for one as-of date,
//! (c) the training-set builder over weekly observation dates.
//!
//! Input: a `churn_gen` population, by default 60,000 customers × 180 days (≈ 10 M events).
//! Prints one JSON line per measurement and writes each to `<target>/bench/<name>.json`
//! (`<target>` = `$CARGO_TARGET_DIR`, else the workspace's `target/`).
//!
//! `cargo bench -p churn-features --bench features`
//! Quick runs: `CHURN_BENCH_CUSTOMERS=5000 CHURN_BENCH_DAYS=120 cargo bench …`.

use std::path::PathBuf;
use std::time::Instant;

use churn_features::training::{build_training_set, observation_dates, ObservationPlan};
use churn_features::{feature_frame, rollups_from_events, RollupFrames};
use serde_json::{json, Value};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn out_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => PathBuf::from(d).join("bench"),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/bench"),
    }
}

/// Print the measurement as one JSON line and write it to `<target>/bench/<name>.json`.
fn emit(name: &str, mut fields: Value) {
    if let Value::Object(map) = &mut fields {
        map.insert("name".into(), json!(name));
    }
    let line = fields.to_string();
    println!("{line}");
    let dir = out_dir();
    let written = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join(format!("{name}.json")), format!("{line}\n")));
    if let Err(e) = written {
        eprintln!("warning: could not write {}: {e}", dir.display());
    }
}

fn fail(what: &str, e: impl std::fmt::Display) -> ! {
    eprintln!("{what} failed: {e}");
    std::process::exit(1);
}

fn main() {
    let customers = env_or("CHURN_BENCH_CUSTOMERS", 60_000) as usize;
    let days = env_or("CHURN_BENCH_DAYS", 180) as u32;
    let cfg = churn_gen::GenConfig {
        customers,
        days,
        seed: 7,
        ..Default::default()
    };

    let t = Instant::now();
    let pop = churn_gen::generate(&cfg);
    let gen_s = t.elapsed().as_secs_f64();
    let events = pop.events.len();
    eprintln!("generated {events} events for {customers} customers × {days} days in {gen_s:.1} s");
    drop(pop.labels);

    // (a) rollups
    let t = Instant::now();
    let rollups = rollups_from_events(&pop.events);
    let s = t.elapsed().as_secs_f64();
    let label = if events >= 9_500_000 {
        "rollups_10m_events".to_string()
    } else {
        format!("rollups_{}k_events", events / 1000)
    };
    emit(
        &label,
        json!({
            "events": events,
            "customers": rollups.len(),
            "days": days,
            "seconds": s,
            "events_per_s": events as f64 / s,
            "generate_seconds": gen_s,
        }),
    );
    drop(pop.events);

    // (b) feature_frame for one as-of date over every customer (frame build timed separately:
    // the streaming engine does both per micro-batch).
    let last_day = rollups
        .iter()
        .filter_map(|(_, c)| c.last_day())
        .max()
        .unwrap_or(0);
    let t = Instant::now();
    let frames = RollupFrames::build(rollups.iter().map(|(_, c)| c), last_day)
        .unwrap_or_else(|e| fail("RollupFrames::build", e));
    let build_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let df = feature_frame(&frames).unwrap_or_else(|e| fail("feature_frame", e));
    let ff_s = t.elapsed().as_secs_f64();
    emit(
        "feature_frame_all_customers",
        json!({
            "customers": df.height(),
            "rollup_rows": frames.days.height(),
            "features": df.width() - 1,
            "seconds": ff_s,
            "customers_per_s": df.height() as f64 / ff_s,
            "frames_build_seconds": build_s,
            "as_of_day": last_day,
        }),
    );
    drop(df);
    drop(frames);

    // (c) training set over weekly observation dates.
    let plan = ObservationPlan::default();
    let first_day = rollups
        .iter()
        .filter_map(|(_, c)| c.first_day)
        .min()
        .unwrap_or(0);
    let dates = observation_dates(first_day, last_day, &plan).len();
    let t = Instant::now();
    let set = build_training_set(&rollups, &plan).unwrap_or_else(|e| fail("training set", e));
    let s = t.elapsed().as_secs_f64();
    let churn = set.labels.iter().filter(|&&v| v).count() as f64 / set.len().max(1) as f64;
    emit(
        "training_set_weekly",
        json!({
            "customers": rollups.len(),
            "observation_dates": dates,
            "rows": set.len(),
            "churn_rate": churn,
            "seconds": s,
            "rows_per_s": set.len() as f64 / s,
        }),
    );
}
