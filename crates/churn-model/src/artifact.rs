//! The model artifact: a versioned, hashed JSON document holding everything needed to score.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use chrono::{DateTime, Utc};
use ndarray::ArrayView2;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::calibrate::{BandSpec, Calibration, ScoreDistribution};
use crate::ModelError;

/// The artifact format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Prefix of [`ModelArtifact::model_version`].
pub const MODEL_VERSION_PREFIX: &str = "churn-lr-";

/// Risk band of a calibrated churn probability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Band {
    /// Below `Bands::medium`.
    Low,
    /// In `[medium, high)`.
    Medium,
    /// In `[high, critical)`.
    High,
    /// At or above `Bands::critical`.
    Critical,
}

impl Band {
    /// All bands, lowest first.
    pub const ALL: [Band; 4] = [Band::Low, Band::Medium, Band::High, Band::Critical];

    /// `"low"`, `"medium"`, `"high"` or `"critical"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Band::Low => "low",
            Band::Medium => "medium",
            Band::High => "high",
            Band::Critical => "critical",
        }
    }
}

impl fmt::Display for Band {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Probability cut-offs of the risk bands (`low` is everything below `medium`).
/// Invariant (checked on load): `0 < medium < high < critical < 1`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bands {
    /// Lower edge of [`Band::Medium`].
    pub medium: f64,
    /// Lower edge of [`Band::High`].
    pub high: f64,
    /// Lower edge of [`Band::Critical`].
    pub critical: f64,
}

impl Bands {
    /// The band of probability `p` (cut-offs are inclusive lower edges; NaN is `Low`).
    pub fn band(&self, p: f64) -> Band {
        if p >= self.critical {
            Band::Critical
        } else if p >= self.high {
            Band::High
        } else if p >= self.medium {
            Band::Medium
        } else {
            Band::Low
        }
    }

    /// Lower edge of `band` (0.0 for `Low`).
    pub fn lower_edge(&self, band: Band) -> f64 {
        match band {
            Band::Low => 0.0,
            Band::Medium => self.medium,
            Band::High => self.high,
            Band::Critical => self.critical,
        }
    }

    /// Check `0 < medium < high < critical < 1`.
    pub fn validate(&self) -> Result<(), ModelError> {
        let ok = [self.medium, self.high, self.critical]
            .iter()
            .all(|v| v.is_finite() && *v > 0.0 && *v < 1.0)
            && self.medium < self.high
            && self.high < self.critical;
        if ok {
            Ok(())
        } else {
            Err(ModelError::InvalidArtifact(format!(
                "band cut-offs must satisfy 0 < medium < high < critical < 1, got {self:?}"
            )))
        }
    }
}

/// One feature's share of a customer's churn logit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contribution {
    /// Column index of the feature.
    pub index: usize,
    /// Feature name.
    pub feature: String,
    /// Binding level of the feature (`rational`, `emotional`, `structural`, as given by the
    /// caller at training time).
    pub binding: String,
    /// The raw (unscaled) feature value.
    pub value: f64,
    /// `coefficient × (value − mean) / std`: positive pushes towards churn.
    pub contribution: f64,
}

/// A trained churn model, as stored in `model.json`.
///
/// `hash` is the SHA-256 (hex) of the canonical JSON (object keys sorted, compact) of every
/// field except `hash` and `created_at`; [`ModelArtifact::load`] verifies it.
/// `model_version` is `churn-lr-` + the first 12 hex digits of the SHA-256 of the *scoring
/// content* only (format version, feature names, bindings, scaler, coefficients, intercept,
/// thresholds, alert threshold), so it identifies the scoring function and does not change
/// when the caller adds metrics or the data window.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ModelArtifact {
    /// Artifact format, [`FORMAT_VERSION`].
    pub format_version: u32,
    /// `churn-lr-<12 hex>`, see the type docs.
    pub model_version: String,
    /// When the model was trained (not hashed).
    pub created_at: DateTime<Utc>,
    /// Feature names, in column order.
    pub feature_names: Vec<String>,
    /// Binding level per feature, parallel to `feature_names`.
    pub bindings: Vec<String>,
    /// Per-feature mean of the training split.
    pub scaler_mean: Vec<f64>,
    /// Per-feature standard deviation of the training split (0 replaced by 1).
    pub scaler_std: Vec<f64>,
    /// Coefficients on standardised features; positive means more churn risk.
    pub coefficients: Vec<f64>,
    /// Churn-logit intercept, prior-corrected to the true base rate.
    pub intercept: f64,
    /// Band cut-offs.
    pub thresholds: Bands,
    /// Probability at or above which an alert is raised (default: `thresholds.high`).
    pub alert_threshold: f64,
    /// Training/validation/test metrics (finite values only; JSON has no NaN).
    pub metrics: BTreeMap<String, f64>,
    /// Time window of the training data, if the caller knows it.
    pub data_window: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// Training parameters and solver details.
    pub train_params: serde_json::Value,
    /// Platt scaling applied to the logit by [`predict_proba`](Self::predict_proba), fit on
    /// rows the model it was fit for did not train on. Absent in artifacts written before
    /// calibration existed (they still load and score as before: the prior-corrected logit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
    /// Calibrated scores of the reference population (quantiles, base rate), for bands given
    /// as lift or population share ([`BandSpec`]). Absent in older artifacts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score_distribution: Option<ScoreDistribution>,
    /// How `thresholds` were specified (`0.15,0.35,0.6`, `lift:2,4,8`, `top:20%,5%,1%`);
    /// the thresholds themselves are always probabilities. Absent in older artifacts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub band_spec: Option<String>,
    /// The metric catalog the features after the built-in registry come from (churn-features'
    /// `Catalog`, as JSON); absent for the default (empty) catalog and in older artifacts.
    /// Part of the model version: a catalog metric's definition is part of what the model
    /// scores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<serde_json::Value>,
    /// The training population's feature and score distributions, for drift (PSI) monitoring
    /// (`churnstream drift`, `churn_model_score_psi`). Not part of the model version; absent in
    /// older artifacts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_reference: Option<crate::drift::DriftReference>,
    /// The cold-start fallback: customers with less history than its `min_history_days` are
    /// scored by this churn-rate table, not by the coefficients ([`crate::ColdStart`]). Part of
    /// the model version; absent in older artifacts and with `train --min-history-days 0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cold_start: Option<crate::ColdStart>,
    /// SHA-256 hex, see the type docs.
    pub hash: String,
}

/// Numerically stable logistic function.
pub(crate) fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// Write `v` as compact JSON with object keys sorted (independent of serde_json's
/// `preserve_order` feature), numbers and strings as serde_json prints them.
fn write_canonical(v: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => out.push_str(&Value::String(s.clone()).to_string()),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push(':');
                if let Some(val) = map.get(*k) {
                    write_canonical(val, out);
                }
            }
            out.push('}');
        }
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn canonical_hash(v: &serde_json::Value) -> String {
    let mut s = String::new();
    write_canonical(v, &mut s);
    sha256_hex(s.as_bytes())
}

fn to_value<T: Serialize>(t: &T) -> Result<serde_json::Value, ModelError> {
    serde_json::to_value(t)
        .map_err(|e| ModelError::InvalidArtifact(format!("cannot serialise artifact: {e}")))
}

impl ModelArtifact {
    /// SHA-256 hex over the canonical JSON of every field except `hash` and `created_at`.
    pub fn compute_hash(&self) -> Result<String, ModelError> {
        let mut v = to_value(self)?;
        if let serde_json::Value::Object(map) = &mut v {
            map.remove("hash");
            map.remove("created_at");
        }
        Ok(canonical_hash(&v))
    }

    /// `churn-lr-` + 12 hex digits of the hash of the scoring content (see type docs).
    pub fn compute_model_version(&self) -> Result<String, ModelError> {
        let content = serde_json::json!({
            "format_version": self.format_version,
            "feature_names": self.feature_names,
            "bindings": self.bindings,
            "scaler_mean": self.scaler_mean,
            "scaler_std": self.scaler_std,
            "coefficients": self.coefficients,
            "intercept": self.intercept,
            "thresholds": to_value(&self.thresholds)?,
            "alert_threshold": self.alert_threshold,
        });
        // Only when present, so artifacts without a calibrator keep their version.
        let mut content = content;
        if let (Some(cal), serde_json::Value::Object(map)) = (&self.calibration, &mut content) {
            map.insert("calibration".to_owned(), to_value(cal)?);
        }
        if let (Some(cat), serde_json::Value::Object(map)) = (&self.catalog, &mut content) {
            map.insert("catalog".to_owned(), cat.clone());
        }
        if let (Some(c), serde_json::Value::Object(map)) = (&self.cold_start, &mut content) {
            map.insert("cold_start".to_owned(), to_value(c)?);
        }
        let h = canonical_hash(&content);
        Ok(format!("{MODEL_VERSION_PREFIX}{}", &h[..12]))
    }

    /// Recompute `hash` after modifying fields (e.g. adding test metrics or the data window).
    /// [`save`](Self::save) and [`to_json_pretty`](Self::to_json_pretty) always write a fresh
    /// hash, so calling this is only needed to read `hash` in memory.
    pub fn seal(&mut self) -> Result<(), ModelError> {
        self.hash = self.compute_hash()?;
        Ok(())
    }

    /// Structural checks: parallel lengths, finite numbers, positive std, band order,
    /// alert threshold in `[0, 1]`, unique feature names.
    pub fn validate(&self) -> Result<(), ModelError> {
        let d = self.feature_names.len();
        let err = |m: String| Err(ModelError::InvalidArtifact(m));
        if d == 0 {
            return err("no features".to_owned());
        }
        for (what, len) in [
            ("bindings", self.bindings.len()),
            ("scaler_mean", self.scaler_mean.len()),
            ("scaler_std", self.scaler_std.len()),
            ("coefficients", self.coefficients.len()),
        ] {
            if len != d {
                return err(format!("{what} has {len} entries for {d} features"));
            }
        }
        let mut seen = BTreeSet::new();
        for name in &self.feature_names {
            if !seen.insert(name.as_str()) {
                return err(format!("duplicate feature name `{name}`"));
            }
        }
        if let Some(c) = &self.cold_start {
            c.validate().map_err(ModelError::InvalidArtifact)?;
        }
        for (what, values) in [
            ("scaler_mean", &self.scaler_mean),
            ("scaler_std", &self.scaler_std),
            ("coefficients", &self.coefficients),
        ] {
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                return err(format!(
                    "{what}[{i}] (feature `{}`) is not finite",
                    self.feature_names[i]
                ));
            }
        }
        if let Some(i) = self.scaler_std.iter().position(|s| *s <= 0.0) {
            return err(format!(
                "scaler_std[{i}] (feature `{}`) is not positive",
                self.feature_names[i]
            ));
        }
        if !self.intercept.is_finite() {
            return err("intercept is not finite".to_owned());
        }
        self.thresholds.validate()?;
        if let Some(cal) = &self.calibration {
            cal.validate()?;
        }
        if let Some(d) = &self.score_distribution {
            d.validate()?;
        }
        if !(0.0..=1.0).contains(&self.alert_threshold) {
            return err(format!(
                "alert_threshold {} is outside [0, 1]",
                self.alert_threshold
            ));
        }
        if let Some((k, v)) = self.metrics.iter().find(|(_, v)| !v.is_finite()) {
            return err(format!(
                "metric `{k}` is {v}; JSON cannot store non-finite numbers"
            ));
        }
        Ok(())
    }

    /// Number of features the model expects.
    pub fn n_features(&self) -> usize {
        self.feature_names.len()
    }

    /// The churn logit `intercept + Σ coef·(x − mean)/std` of one raw row, before calibration
    /// (what [`explain`](Self::explain)'s contributions add up to).
    ///
    /// # Panics
    /// If `raw_features.len()` differs from the number of features; use
    /// [`try_predict_proba`](Self::try_predict_proba) for a checked version.
    pub fn logit(&self, raw_features: &[f64]) -> f64 {
        assert_eq!(
            raw_features.len(),
            self.coefficients.len(),
            "model {} expects {} features, got a row of {}",
            self.model_version,
            self.coefficients.len(),
            raw_features.len()
        );
        let mut z = self.intercept;
        for (j, x) in raw_features.iter().enumerate() {
            z += self.coefficients[j] * (x - self.scaler_mean[j]) / self.scaler_std[j];
        }
        z
    }

    /// The cold-start fallback's probability for a customer with `history_days` of history,
    /// silent for `recency_days`; `None` when the model scores them (enough history, or no
    /// fallback in the artifact).
    pub fn cold_start_score(&self, history_days: f64, recency_days: f64) -> Option<f64> {
        self.cold_start
            .as_ref()
            .and_then(|c| c.score(history_days, recency_days))
    }

    /// P(churn) for one row of RAW (unscaled) features, in model column order: σ of the
    /// [`logit`](Self::logit), through the [`calibration`](Self::calibration) when the artifact
    /// has one. The model's one scoring function, in the service and in every offline command
    /// (which serve it through `churn_pipeline::train::ServedScore`, cold start included).
    /// Non-finite inputs give a NaN (or saturated) probability.
    ///
    /// # Panics
    /// If the row length differs from the number of features.
    pub fn predict_proba(&self, raw_features: &[f64]) -> f64 {
        let z = self.logit(raw_features);
        sigmoid(self.calibration.map_or(z, |c| c.apply(z)))
    }

    /// A copy without the calibrator (probabilities as the model alone gives them: the
    /// prior-corrected logistic), for before/after comparisons.
    pub fn without_calibration(&self) -> ModelArtifact {
        let mut m = self.clone();
        m.calibration = None;
        m
    }

    /// Replace the band cut-offs by `spec` resolved against the artifact's score distribution;
    /// the alert threshold becomes the `high` cut-off, the spec is recorded in `band_spec` and
    /// `model_version` is recomputed (thresholds are part of the scoring content).
    pub fn set_bands(&mut self, spec: &BandSpec) -> Result<(), ModelError> {
        let bands = spec.resolve(self.score_distribution.as_ref())?;
        self.thresholds = bands;
        self.alert_threshold = bands.high;
        self.band_spec = Some(spec.to_string());
        self.model_version = self.compute_model_version()?;
        Ok(())
    }

    /// Checked [`predict_proba`](Self::predict_proba): errors on a wrong row length or a
    /// non-finite value instead of panicking / returning NaN.
    pub fn try_predict_proba(&self, raw_features: &[f64]) -> Result<f64, ModelError> {
        self.check_row(raw_features)?;
        Ok(self.predict_proba(raw_features))
    }

    fn check_row(&self, raw: &[f64]) -> Result<(), ModelError> {
        if raw.len() != self.coefficients.len() {
            return Err(ModelError::DimensionMismatch(format!(
                "model {} expects {} features, got a row of {}",
                self.model_version,
                self.coefficients.len(),
                raw.len()
            )));
        }
        if let Some(j) = raw.iter().position(|v| !v.is_finite()) {
            return Err(ModelError::NonFinite {
                split: "input",
                row: 0,
                column: j,
                feature: self.feature_names[j].clone(),
                value: raw[j],
            });
        }
        Ok(())
    }

    /// P(churn) for every row of a raw feature matrix (same arithmetic as `predict_proba`).
    ///
    /// # Panics
    /// If the number of columns differs from the number of features.
    pub fn predict_batch(&self, x: ArrayView2<f64>) -> Vec<f64> {
        assert_eq!(
            x.ncols(),
            self.coefficients.len(),
            "model {} expects {} features, got a matrix with {} columns",
            self.model_version,
            self.coefficients.len(),
            x.ncols()
        );
        let mut row_buf = vec![0.0; x.ncols()];
        x.rows()
            .into_iter()
            .map(|row| {
                for (dst, src) in row_buf.iter_mut().zip(row.iter()) {
                    *dst = *src;
                }
                self.predict_proba(&row_buf)
            })
            .collect()
    }

    /// Per-feature contributions `coefficient × standardised value` for one raw row, sorted by
    /// contribution descending (most risk-increasing first; ties by column index). Together
    /// with `intercept` they sum to [`logit`](Self::logit).
    ///
    /// # Panics
    /// If the row length differs from the number of features.
    pub fn explain(&self, raw_features: &[f64]) -> Vec<Contribution> {
        assert_eq!(
            raw_features.len(),
            self.coefficients.len(),
            "model {} expects {} features, got a row of {}",
            self.model_version,
            self.coefficients.len(),
            raw_features.len()
        );
        let mut out: Vec<Contribution> = (0..raw_features.len())
            .map(|j| Contribution {
                index: j,
                feature: self.feature_names[j].clone(),
                binding: self.bindings[j].clone(),
                value: raw_features[j],
                contribution: self.coefficients[j] * (raw_features[j] - self.scaler_mean[j])
                    / self.scaler_std[j],
            })
            .collect();
        out.sort_by(|a, b| {
            b.contribution
                .total_cmp(&a.contribution)
                .then(a.index.cmp(&b.index))
        });
        out
    }

    /// The risk band of probability `p`.
    pub fn band(&self, p: f64) -> Band {
        self.thresholds.band(p)
    }

    /// Check that the caller's feature list equals the model's, name for name and in order.
    /// The error lists the features the model needs but the caller lacks (`missing`), the
    /// ones the caller has but the model does not use (`extra`, duplicates included), and
    /// positions where the same names come in a different order (`reordered`).
    pub fn check_features(&self, expected: &[&str]) -> Result<(), ModelError> {
        let model: Vec<&str> = self.feature_names.iter().map(String::as_str).collect();
        if model == expected {
            return Ok(());
        }
        let model_set: BTreeSet<&str> = model.iter().copied().collect();
        let caller_set: BTreeSet<&str> = expected.iter().copied().collect();
        let missing: Vec<String> = model
            .iter()
            .filter(|n| !caller_set.contains(**n))
            .map(|n| (*n).to_owned())
            .collect();
        let mut extra: Vec<String> = expected
            .iter()
            .filter(|n| !model_set.contains(**n))
            .map(|n| (*n).to_owned())
            .collect();
        let mut seen = BTreeSet::new();
        for n in expected {
            if !seen.insert(*n) && model_set.contains(*n) {
                extra.push(format!("{n} (duplicate)"));
            }
        }
        let reordered = if missing.is_empty() && extra.is_empty() {
            model
                .iter()
                .zip(expected)
                .enumerate()
                .filter(|(_, (m, c))| m != c)
                .map(|(i, (m, c))| (i, (*m).to_owned(), (*c).to_owned()))
                .collect()
        } else {
            Vec::new()
        };
        Err(ModelError::FeatureMismatch {
            model_version: self.model_version.clone(),
            missing,
            extra,
            reordered,
        })
    }

    /// A copy with a freshly computed `hash` (what gets written to disk).
    fn sealed(&self) -> Result<ModelArtifact, ModelError> {
        let mut copy = self.clone();
        copy.seal()?;
        Ok(copy)
    }

    /// Pretty JSON with a freshly computed `hash` (same text as [`save`](Self::save) writes).
    /// Non-finite numbers would be written as `null`; [`save`](Self::save) refuses them.
    pub fn to_json_pretty(&self) -> String {
        let sealed = self.sealed().unwrap_or_else(|_| self.clone());
        serde_json::to_string_pretty(&sealed).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// Validate, seal (recompute `hash`) and write pretty JSON to `path` (via a temporary
    /// file in the same directory and a rename, so readers never see a half-written model).
    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        self.validate()?;
        let sealed = self.sealed()?;
        let text = serde_json::to_string_pretty(&sealed)
            .map_err(|e| ModelError::InvalidArtifact(format!("cannot serialise artifact: {e}")))?;
        let io_err = |source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut tmp_name = path
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        tmp_name.push(format!(".tmp-{}", std::process::id()));
        let tmp = path.with_file_name(tmp_name);
        std::fs::write(&tmp, text.as_bytes()).map_err(io_err)?;
        std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io_err(e)
        })
    }

    /// Parse an artifact from JSON text, checking `format_version`, structure and `hash`.
    /// `origin` only labels errors.
    pub fn from_json_str(text: &str, origin: &Path) -> Result<Self, ModelError> {
        let parse_err = |source| ModelError::Parse {
            path: origin.to_path_buf(),
            source,
        };
        let value: serde_json::Value = serde_json::from_str(text).map_err(parse_err)?;
        match value
            .get("format_version")
            .and_then(serde_json::Value::as_u64)
        {
            Some(v) if v == u64::from(FORMAT_VERSION) => {}
            Some(found) => {
                return Err(ModelError::UnsupportedFormat {
                    found,
                    expected: FORMAT_VERSION,
                })
            }
            None => {
                return Err(ModelError::InvalidArtifact(format!(
                    "{}: no numeric format_version field",
                    origin.display()
                )))
            }
        }
        let artifact: ModelArtifact = serde_json::from_value(value).map_err(parse_err)?;
        let computed = artifact.compute_hash()?;
        if computed != artifact.hash {
            return Err(ModelError::HashMismatch {
                stored: artifact.hash.clone(),
                computed,
            });
        }
        artifact.validate()?;
        Ok(artifact)
    }

    /// Read and verify an artifact (format version, hash, structure).
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json_str(&text, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_recursively() {
        let v = serde_json::json!({"b": 1, "a": {"d": [1.5, "x"], "c": null}});
        let mut s = String::new();
        write_canonical(&v, &mut s);
        assert_eq!(s, r#"{"a":{"c":null,"d":[1.5,"x"]},"b":1}"#);
    }

    #[test]
    fn sigmoid_is_stable() {
        assert!((sigmoid(0.0) - 0.5).abs() < 1e-15);
        assert!(sigmoid(-1000.0) >= 0.0 && sigmoid(-1000.0) < 1e-300);
        assert!((sigmoid(1000.0) - 1.0).abs() < 1e-15);
        assert!((sigmoid(2.0) + sigmoid(-2.0) - 1.0).abs() < 1e-15);
    }

    #[test]
    fn band_edges_are_inclusive() {
        let b = Bands {
            medium: 0.2,
            high: 0.4,
            critical: 0.6,
        };
        assert_eq!(b.band(0.0), Band::Low);
        assert_eq!(b.band(0.2), Band::Medium);
        assert_eq!(b.band(0.399), Band::Medium);
        assert_eq!(b.band(0.4), Band::High);
        assert_eq!(b.band(0.6), Band::Critical);
        assert_eq!(b.band(f64::NAN), Band::Low);
        assert!(Band::Critical > Band::High && Band::Medium > Band::Low);
        assert_eq!(Band::High.as_str(), "high");
        assert!(b.validate().is_ok());
        let bad = Bands {
            medium: 0.4,
            high: 0.4,
            critical: 0.6,
        };
        assert!(bad.validate().is_err());
    }
}
