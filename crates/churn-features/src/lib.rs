//! Features for churnstream: one code path for training and serving.
//!
//! Layout:
//! - [`rollup`]: per-customer daily rollups ([`CustomerRollups`]), folded from events by both
//!   the batch and the streaming path.
//! - [`registry`]: every built-in feature's name, description, binding level and transform.
//! - [`catalog`]: behavioural metrics declared in configuration over the user's own event
//!   vocabulary; [`FeatureSet`] = the registry plus one catalog.
//! - [`features`]: the polars query computing all features "as of" a day from rollups.
//! - [`training`]: observation dates, labels under the configured churn definition, and the
//!   time-based split.
//! - [`wire`]: the compact binary encoding of state records (varints, presence masks).

pub mod catalog;
pub mod features;
pub mod registry;
pub mod rollup;
pub mod training;
pub mod wire;

pub use catalog::{Catalog, CatalogError, FeatureSet};
pub use features::{feature_frame, FeatureMatrix, RollupFrames};
pub use registry::{Binding, FeatureDef, FEATURES};
pub use rollup::{day_of, day_start, CustomerRollups};

/// Errors of the feature stage.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("polars: {0}")]
    Polars(#[from] polars::prelude::PolarsError),
    #[error("feature `{0}` is null in the feature frame (bug in the feature query)")]
    NullFeature(String),
    #[error("no observation dates: history spans {days} days but horizon is {horizon} days")]
    NoObservations { days: i32, horizon: i32 },
    #[error(
        "history too short for a purged time split: {dates} observation dates, but training and \
         validation need dates at least {horizon} days (the label horizon) before the first test \
         date; use a longer history, a shorter --churn-days / --within-days, or a smaller \
         --every-days"
    )]
    ShortHistory { dates: usize, horizon: i32 },
}

/// Build per-customer rollups from events (the batch path). Customers come back sorted by id so
/// results are deterministic.
pub fn rollups_from_events<'a>(
    events: impl IntoIterator<Item = &'a churn_events::Event>,
) -> Vec<(String, CustomerRollups)> {
    rollups_from_events_with(events, &FeatureSet::builtin())
}

/// [`rollups_from_events`], folding the counters of `features`' metric catalog too.
pub fn rollups_from_events_with<'a>(
    events: impl IntoIterator<Item = &'a churn_events::Event>,
    features: &FeatureSet,
) -> Vec<(String, CustomerRollups)> {
    let mut map: std::collections::HashMap<&'a str, CustomerRollups> = Default::default();
    let compiled = features.compiled();
    let mut add = Vec::new();
    for ev in events {
        compiled.contributions(ev, &mut add);
        map.entry(ev.customer_id.as_str())
            .or_default()
            .apply_with(ev, &add);
    }
    let mut out: Vec<(String, CustomerRollups)> =
        map.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}
