//! Helpers shared by the churn-pipeline benchmarks (included with `mod support;`).
#![allow(dead_code)]

use churn_features::training::ObservationPlan;
use churn_model::ModelArtifact;
use churn_pipeline::train;

/// A `/proc/self/status` field in bytes (`VmHWM` = peak RSS, `VmRSS` = current RSS).
pub fn proc_status_bytes(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kb * 1024)
    })
}

pub fn peak_rss() -> Option<u64> {
    proc_status_bytes("VmHWM")
}

pub fn current_rss() -> Option<u64> {
    proc_status_bytes("VmRSS")
}

/// An integer environment override (for quick runs).
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `q`-quantile (0..=1) of a sample by nearest rank; None when empty.
pub fn quantile(v: &mut [f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

/// Train a model quickly on a small generated population with the code the CLI uses.
/// `CHURN_BENCH_MODEL=path` loads an artifact instead (e.g. for profiling runs, where training
/// under valgrind would dominate); `CHURN_BENCH_SAVE_MODEL=path` saves the trained one.
pub fn quick_model() -> ModelArtifact {
    if let Some(path) = std::env::var_os("CHURN_BENCH_MODEL") {
        return ModelArtifact::load(std::path::Path::new(&path))
            .expect("loading CHURN_BENCH_MODEL");
    }
    let gen = churn_gen::GenConfig {
        customers: 400,
        days: 150,
        seed: 7,
        ..Default::default()
    };
    let (pop, model, summary) =
        train::synthetic(&gen, &ObservationPlan::default()).expect("training the benchmark model");
    eprintln!(
        "[bench] model trained on {} events: test AUC {:.3}",
        pop.events.len(),
        summary.test.auc
    );
    if let Some(path) = std::env::var_os("CHURN_BENCH_SAVE_MODEL") {
        model
            .save(std::path::Path::new(&path))
            .expect("saving CHURN_BENCH_SAVE_MODEL");
    }
    model
}
