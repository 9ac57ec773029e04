//! Logistic churn model: training with linfa-logistic, scaling, evaluation, explanations, and
//! the versioned model artifact (`model.json`).
//!
//! The crate is generic over features: it takes a dense matrix of raw feature values, the
//! feature names and each feature's binding level (`rational` / `emotional` / `structural`);
//! it knows nothing about the feature registry. Labels are `bool`, `true` = churned.
//!
//! # Layout
//! - [`mod@train`]: [`train()`], [`TrainParams`], [`Balance`], [`Dataset`],
//!   [`TrainReport`].
//! - [`ModelArtifact`] (module `artifact`): scoring ([`ModelArtifact::predict_proba`],
//!   [`ModelArtifact::predict_batch`]), reasons ([`ModelArtifact::explain`]), risk bands
//!   ([`Band`], [`Bands`]), feature check, save/load with hash verification.
//! - [`metrics`]: AUC, log loss, Brier, lift, precision/recall, calibration table, ROC curve.
//! - [`ModelError`] / [`ErrorCategory`]: data vs parameters vs model file vs solver.
//!
//! # Method
//! 1. **Checks.** Both splits must be non-empty, finite, of matching width, and contain both
//!    churners and stayers; names/bindings must match the columns, names must be unique.
//! 2. **Standardisation.** Per-feature mean and population std from the *training* split
//!    (std ≤ 1e-12 → 1); stored in the artifact and applied when predicting.
//! 3. **Class balance** ([`Balance::Reweight`], the default). linfa-logistic has no class
//!    weights, so the minority class (usually churners) is oversampled deterministically:
//!    with `n_maj` majority rows and `n_min` minority rows, every minority row is replicated
//!    `⌊n_maj / n_min⌋` times and the remaining `n_maj mod n_min` replicas are drawn without
//!    replacement with a `StdRng` seeded by [`TrainParams::seed`], giving an exact 50/50
//!    sample. Fitting on that sample inflates the intercept, so it is *prior-corrected*
//!    (King & Zeng 2001, "Logistic Regression in Rare Events Data"):
//!    `intercept -= ln(odds_sample / odds_population)` with `odds = churners / stayers`.
//!    The artifact's probabilities are therefore calibrated to the true base rate (the
//!    slopes are unchanged). With [`Balance::None`] the data is used as is (correction 0).
//! 4. **Fit.** For each alpha of the grid, linfa-logistic (argmin L-BFGS) minimises
//!    `Σ logloss + alpha/2·‖w‖²` on the standardised sample. Two traits of linfa-logistic
//!    0.8.1 are handled here:
//!    - *orientation*: its "positive" class is the **more frequent** label (on an exact tie,
//!      the label of the first row), so for churn data `predict_probabilities` is P(stay).
//!      We read `labels().pos.class` and negate coefficients and intercept when it is
//!      `false`, so artifact coefficients always point towards churn;
//!    - *silent stop*: it stops at `max_iterations` without saying so, and does not report
//!      its iteration count. We run it in warm-started rounds of [`SOLVER_ROUND`] iterations
//!      and after each round compute the per-row gradient norm of the penalised objective
//!      ourselves; `converged = norm ≤ gradient_tolerance` (the tolerance handed to linfa is
//!      scaled by the row count so both criteria agree). Non-convergence is reported in
//!      [`TrainReport`], never an error.
//! 5. **Alpha selection.** The alpha with the lowest validation log loss (prior-corrected
//!    probabilities) wins; ties go to the earlier grid entry.
//! 6. **Bands.** Default cut-offs come from the validation risk distribution: `medium` = 70th,
//!    `high` = 85th, `critical` = 95th percentile (linear interpolation), clamped into
//!    `(0, 1)` and forced strictly increasing (gap ≥ 1e-6). So roughly 30 % / 15 % / 5 % of
//!    validation customers are medium-or-above / high-or-above / critical. The
//!    `alert_threshold` defaults to the `high` cut-off.
//! 7. **Metrics** on training and validation splits are stored in the artifact
//!    (`train_auc`, `valid_log_loss`, `valid_lift_at_10`, …); callers add test metrics.
//!
//! # Artifact integrity
//! `hash` = SHA-256 over the canonical JSON (sorted keys, compact) of everything except
//! `hash` and `created_at`. [`ModelArtifact::save`] always writes a fresh hash (so adding
//! metrics or a data window before saving is fine); [`ModelArtifact::load`] verifies
//! `format_version`, the hash and the structure. `model_version` = `churn-lr-` + 12 hex of a
//! hash of the scoring content only, so it is stable under metric edits.

mod artifact;
pub mod calibrate;
pub mod cold_start;
pub mod drift;
mod error;
pub mod metrics;
pub mod train;

pub use artifact::{
    Band, Bands, Contribution, ModelArtifact, FORMAT_VERSION, MODEL_VERSION_PREFIX,
};
pub use calibrate::{fit_platt, BandSpec, Calibration, ScoreDistribution};
pub use cold_start::ColdStart;
pub use error::{ErrorCategory, ModelError};
pub use metrics::CalibrationBin;
pub use train::{train, Balance, Dataset, TrainParams, TrainReport, BAND_QUANTILES, SOLVER_ROUND};
