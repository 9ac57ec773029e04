//! The crate's error type.

use std::path::PathBuf;

/// Which side a [`ModelError`] is on: the caller's data, the training parameters, the model
/// file (or artifact), or the solver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCategory {
    /// The input data: empty, one class only, non-finite values, dimension mismatch.
    Data,
    /// The training parameters or the feature names/bindings passed by the caller.
    Params,
    /// The model file or artifact: io, parse, hash, format version, feature mismatch.
    Model,
    /// The solver itself failed (not "did not converge", which is reported in `TrainReport`).
    Training,
}

/// Everything that can go wrong in this crate.
///
/// Variants are grouped by [`ErrorCategory`] (see [`ModelError::category`]). Not converging is
/// not an error: it is reported in [`crate::TrainReport::converged`] and the caller decides.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A data split has no rows (or no columns).
    #[error("data error: the {split} split is empty ({rows} rows x {cols} features)")]
    EmptyData {
        /// `"training"` or `"validation"`.
        split: &'static str,
        /// Number of rows.
        rows: usize,
        /// Number of columns.
        cols: usize,
    },
    /// A data split holds only churners or only stayers.
    #[error(
        "data error: the {split} split has only one class ({churners} churners out of {rows} rows); \
         need both churners and stayers"
    )]
    OneClass {
        /// `"training"` or `"validation"`.
        split: &'static str,
        /// Number of churners (`y == true`).
        churners: usize,
        /// Number of rows.
        rows: usize,
    },
    /// A feature value is NaN or infinite.
    #[error("data error: non-finite value {value} in the {split} split at row {row}, feature {column} `{feature}`")]
    NonFinite {
        /// Where the value was found (`"training"`, `"validation"`, `"input"`).
        split: &'static str,
        /// Row index.
        row: usize,
        /// Column index.
        column: usize,
        /// Feature name (empty if unknown).
        feature: String,
        /// The offending value.
        value: f64,
    },
    /// Shapes do not agree (rows vs labels, columns vs feature names, row length vs model).
    #[error("data error: dimension mismatch: {0}")]
    DimensionMismatch(String),
    /// Invalid training parameters, feature names or bindings.
    #[error("invalid parameters: {0}")]
    InvalidParams(String),
    /// Reading or writing the model file failed.
    #[error("model file error: io error on {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The model file is not valid JSON or does not match the artifact schema.
    #[error("model file error: cannot parse {}: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// The model file's `format_version` is not supported by this build.
    #[error("model file error: unsupported format_version {found} (this build reads {expected})")]
    UnsupportedFormat {
        /// Version found in the file.
        found: u64,
        /// Version this build reads.
        expected: u32,
    },
    /// The stored hash does not match the content: the file was edited or corrupted.
    #[error("model file error: hash mismatch (file says {stored}, content hashes to {computed}); the file was modified or corrupted")]
    HashMismatch {
        /// Hash stored in the file.
        stored: String,
        /// Hash computed over the content.
        computed: String,
    },
    /// The artifact is structurally inconsistent (lengths, non-finite numbers, bands).
    #[error("model file error: invalid artifact: {0}")]
    InvalidArtifact(String),
    /// The model's feature list differs from the caller's.
    #[error(
        "model file error: feature mismatch for model {model_version}: {}",
        describe_mismatch(missing, extra, reordered)
    )]
    FeatureMismatch {
        /// The model's version string.
        model_version: String,
        /// Features the model needs that the caller does not provide.
        missing: Vec<String>,
        /// Features the caller provides that the model does not use.
        extra: Vec<String>,
        /// `(position, model feature, caller feature)` where both lists hold the same names
        /// but in a different order.
        reordered: Vec<(usize, String, String)>,
    },
    /// The solver failed (an error from linfa-logistic / argmin).
    #[error("training error: {0}")]
    Training(String),
}

impl ModelError {
    /// Which side the problem is on.
    pub fn category(&self) -> ErrorCategory {
        match self {
            ModelError::EmptyData { .. }
            | ModelError::OneClass { .. }
            | ModelError::NonFinite { .. }
            | ModelError::DimensionMismatch(_) => ErrorCategory::Data,
            ModelError::InvalidParams(_) => ErrorCategory::Params,
            ModelError::Io { .. }
            | ModelError::Parse { .. }
            | ModelError::UnsupportedFormat { .. }
            | ModelError::HashMismatch { .. }
            | ModelError::InvalidArtifact(_)
            | ModelError::FeatureMismatch { .. } => ErrorCategory::Model,
            ModelError::Training(_) => ErrorCategory::Training,
        }
    }
}

fn describe_mismatch(
    missing: &[String],
    extra: &[String],
    reordered: &[(usize, String, String)],
) -> String {
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!(
            "missing (model needs, caller lacks): [{}]",
            missing.join(", ")
        ));
    }
    if !extra.is_empty() {
        parts.push(format!(
            "unexpected (caller has, model lacks): [{}]",
            extra.join(", ")
        ));
    }
    if !reordered.is_empty() {
        let shown: Vec<String> = reordered
            .iter()
            .take(5)
            .map(|(i, m, c)| format!("position {i}: model has `{m}`, caller has `{c}`"))
            .collect();
        let more = if reordered.len() > 5 {
            format!(" and {} more", reordered.len() - 5)
        } else {
            String::new()
        };
        parts.push(format!("order differs: {}{more}", shown.join("; ")));
    }
    if parts.is_empty() {
        parts.push("lists differ".to_owned());
    }
    parts.join("; ")
}
