//! Model rollout without restarts: the service re-reads `model.path` (and the shadow candidate
//! `model.shadow_path`) every `model.reload_interval_s`. A changed file is loaded and validated
//! ([`load_text`]); a valid artifact is swapped in between two batches
//! ([`crate::Engine::replace_model`], [`crate::Engine::set_shadow`]), an invalid one is refused
//! and the previous model keeps serving. [`promote`] is the one command that replaces the live
//! artifact: validated first, then written next to it and renamed over it (atomic on POSIX),
//! so a running pipeline never reads half a file.
//!
//! Files are compared by content (SHA-256), not by modification time: a rewrite of the same
//! bytes is no change, and a Kubernetes ConfigMap update (an atomic symlink swap) is one.

use std::path::{Path, PathBuf};

use churn_model::ModelArtifact;
use sha2::{Digest, Sha256};

use crate::config::{AlertConfig, Config};
use crate::Error;

/// The model with `alerts.bands` (when set) in place of its own cut-offs, resolved against the
/// artifact's score distribution (a new `model_version`, since the bands are part of the
/// scoring content): what `run`, a reload and the offline replays serve with.
pub fn with_configured_bands(
    mut model: ModelArtifact,
    alerts: &AlertConfig,
) -> Result<ModelArtifact, Error> {
    if let Some(spec) = alerts.band_spec()? {
        model.set_bands(&spec).map_err(|e| Error::Config {
            path: "alerts.bands".into(),
            message: format!("`{}`: {e}", alerts.bands),
        })?;
        tracing::info!(
            bands = %spec,
            medium = model.thresholds.medium,
            high = model.thresholds.high,
            critical = model.thresholds.critical,
            version = %model.model_version,
            "band cut-offs from alerts.bands"
        );
    }
    Ok(model)
}

/// Parse and validate an artifact's text as `run` would serve it: format version, hash and
/// structure ([`ModelArtifact::from_json_str`]), `alerts.bands` applied, the metric catalog
/// equal to the configuration's, its features those of this build, and finite probabilities
/// in [0, 1] on an all-zero row and on the reference medians.
pub fn load_text(text: &str, origin: &Path, cfg: &Config) -> Result<ModelArtifact, Error> {
    let model = ModelArtifact::from_json_str(text, origin)?;
    let model = with_configured_bands(model, &cfg.alerts)?;
    cfg.check_model_catalog(&model)?;
    let features = crate::train::feature_set_of(&model)?;
    let mut rows = vec![vec![0.0; features.len()]];
    if let Some(d) = &model.drift_reference {
        let medians: Option<Vec<f64>> = d
            .features
            .iter()
            .map(|f| f.edges.get(f.edges.len() / 2).copied())
            .collect();
        rows.extend(medians.filter(|m| m.len() == features.len()));
    }
    let mut input = Vec::new();
    for raw in &rows {
        features.model_input(raw, &mut input);
        let p = model.predict_proba(&input);
        if !(0.0..=1.0).contains(&p) {
            return Err(Error::Config {
                path: "model".into(),
                message: format!(
                    "model {} scores {p} on a test row: not a probability (corrupt coefficients?)",
                    model.model_version
                ),
            });
        }
    }
    Ok(model)
}

/// [`load_text`] of a file.
pub fn load(path: &Path, cfg: &Config) -> Result<ModelArtifact, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
        path: "model.path".into(),
        message: format!("cannot read {}: {e}", path.display()),
    })?;
    load_text(&text, path, cfg)
}

/// What a [`Watched`] file looks like since the last look.
#[derive(Debug, PartialEq)]
pub enum Poll {
    Unchanged,
    /// New content (the file's text).
    Changed(String),
    /// The file was there and is gone (or unreadable).
    Missing(String),
}

/// A model file checked by content.
#[derive(Debug)]
pub struct Watched {
    path: PathBuf,
    /// SHA-256 of the content last seen (None: missing at the last look).
    digest: Option<[u8; 32]>,
}

impl Watched {
    /// Watch `path`, taking its current content as seen (the service loaded it at start-up).
    pub fn new(path: &Path) -> Self {
        let digest = std::fs::read(path).ok().map(|b| digest(&b));
        Watched {
            path: path.to_path_buf(),
            digest,
        }
    }

    /// Watch `path` with nothing seen yet: its current content is the first change.
    pub fn unseen(path: &Path) -> Self {
        Watched {
            path: path.to_path_buf(),
            digest: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Look at the file again.
    pub fn poll(&mut self) -> Poll {
        match std::fs::read(&self.path) {
            Ok(bytes) => {
                let d = digest(&bytes);
                if self.digest == Some(d) {
                    return Poll::Unchanged;
                }
                self.digest = Some(d);
                match String::from_utf8(bytes) {
                    Ok(text) => Poll::Changed(text),
                    // Not UTF-8: hand it over as text anyway so validation says why it fails.
                    Err(e) => Poll::Changed(String::from_utf8_lossy(e.as_bytes()).into_owned()),
                }
            }
            Err(e) => {
                if self.digest.take().is_some() {
                    Poll::Missing(e.to_string())
                } else {
                    Poll::Unchanged
                }
            }
        }
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Replace the live artifact at `live` with `candidate` after validating it against `cfg`
/// ([`load`]): the candidate's bytes are written to a temporary file in `live`'s directory,
/// synced and renamed over `live`. Returns the candidate's model version.
pub fn promote(candidate: &Path, live: &Path, cfg: &Config) -> Result<String, Error> {
    let text = std::fs::read_to_string(candidate).map_err(|e| Error::Config {
        path: "--candidate".into(),
        message: format!("cannot read {}: {e}", candidate.display()),
    })?;
    let model = load_text(&text, candidate, cfg)?;
    let dir = match live.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let name = live
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model.json".into());
    let tmp = dir.join(format!(".{name}.promote-{}", std::process::id()));
    let written = (|| -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, live)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.into());
    }
    Ok(model.model_version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watched_reports_changes_by_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("m.json");
        std::fs::write(&p, "a").expect("write");
        let mut w = Watched::new(&p);
        assert_eq!(w.poll(), Poll::Unchanged);
        std::fs::write(&p, "a").expect("rewrite the same bytes");
        assert_eq!(w.poll(), Poll::Unchanged);
        std::fs::write(&p, "b").expect("write");
        assert_eq!(w.poll(), Poll::Changed("b".into()));
        assert_eq!(w.poll(), Poll::Unchanged);
        std::fs::remove_file(&p).expect("remove");
        assert!(matches!(w.poll(), Poll::Missing(_)));
        assert_eq!(w.poll(), Poll::Unchanged);
        std::fs::write(&p, "b").expect("write back");
        assert_eq!(w.poll(), Poll::Changed("b".into()));
        let mut fresh = Watched::unseen(&p);
        assert_eq!(fresh.poll(), Poll::Changed("b".into()));
    }
}
