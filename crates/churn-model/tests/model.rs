//! End-to-end tests of training, scoring, the artifact and the metrics.

use churn_model::metrics::{
    auc, brier, calibration_table, lift_at, log_loss, precision_recall_at, roc_curve,
};
use churn_model::{
    train, Balance, Band, Dataset, ErrorCategory, ModelArtifact, ModelError, TrainParams,
};
use ndarray::Array2;
use rand::{rngs::StdRng, Rng, SeedableRng};

fn normal(rng: &mut StdRng) -> f64 {
    // Box–Muller.
    let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
    let u2: f64 = rng.gen::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// Synthetic churn data from a known logistic model.
/// Column 0 ("inactivity_days"): scale 30, offset 10, strong positive effect on churn.
/// Column 1 ("spend"): scale 200, offset 500, negative effect. Column 2 ("noise"): no effect.
/// Column 3 ("constant"): always 7 (std 0 → 1).
struct Synth {
    x: Array2<f64>,
    y: Vec<bool>,
}

const BETA: [f64; 4] = [1.5, -0.8, 0.0, 0.0];

fn synth(n: usize, intercept: f64, seed: u64) -> Synth {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut x = Array2::<f64>::zeros((n, 4));
    let mut y = Vec::with_capacity(n);
    for i in 0..n {
        let z: [f64; 3] = [normal(&mut rng), normal(&mut rng), normal(&mut rng)];
        x[[i, 0]] = 10.0 + 30.0 * z[0];
        x[[i, 1]] = 500.0 + 200.0 * z[1];
        x[[i, 2]] = z[2];
        x[[i, 3]] = 7.0;
        let logit = intercept + BETA[0] * z[0] + BETA[1] * z[1];
        y.push(rng.gen::<f64>() < sigmoid(logit));
    }
    Synth { x, y }
}

fn names() -> Vec<String> {
    ["inactivity_days", "spend", "noise", "constant"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}

fn bindings() -> Vec<String> {
    ["emotional", "rational", "structural", "structural"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}

fn base_rate(y: &[bool]) -> f64 {
    y.iter().filter(|&&v| v).count() as f64 / y.len() as f64
}

fn fit(tr: &Synth, va: &Synth, params: &TrainParams) -> (ModelArtifact, churn_model::TrainReport) {
    train(
        Dataset::new(tr.x.view(), &tr.y),
        Dataset::new(va.x.view(), &va.y),
        &names(),
        &bindings(),
        params,
    )
    .expect("training succeeds")
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    s / n as f64
}

fn temp_path(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("churn-model-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir.join(name)
}

// ---------------------------------------------------------------------------------------------
// Trap 1: orientation.

#[test]
fn linfa_positive_class_is_the_majority_class() {
    // Documents the trap this crate corrects: with churners in the minority, linfa-logistic
    // calls `false` (stay) the positive class, so its probabilities are P(stay).
    use linfa::traits::Fit;
    let d = synth(2_000, -1.5, 1);
    assert!(base_rate(&d.y) < 0.5);
    let ds = linfa::DatasetBase::new(d.x.view(), ndarray::Array1::from(d.y.clone()));
    let fitted = linfa_logistic::LogisticRegression::<f64>::default()
        .max_iterations(50)
        .fit(&ds)
        .expect("linfa fit");
    assert!(
        !fitted.labels().pos.class,
        "linfa's positive class is `stay`"
    );
    // Its coefficient on inactivity is negative (it predicts staying).
    assert!(fitted.params()[0] < 0.0);
}

fn assert_oriented(art: &ModelArtifact, tr: &Synth) {
    assert!(
        art.coefficients[0] > 0.5,
        "inactivity must raise risk: {:?}",
        art.coefficients
    );
    assert!(
        art.coefficients[1] < -0.2,
        "spend lowers risk: {:?}",
        art.coefficients
    );
    // predict_proba rises with feature 0, other features at their means.
    let mut row = art.scaler_mean.clone();
    let mut last = -1.0;
    for k in -3..=3 {
        row[0] = art.scaler_mean[0] + f64::from(k) * art.scaler_std[0];
        let p = art.predict_proba(&row);
        assert!(
            p > last,
            "risk must increase with inactivity ({p} <= {last})"
        );
        last = p;
    }
    let p = art.predict_batch(tr.x.view());
    let churn_mean = mean(p.iter().zip(&tr.y).filter(|(_, &y)| y).map(|(p, _)| *p));
    let stay_mean = mean(p.iter().zip(&tr.y).filter(|(_, &y)| !y).map(|(p, _)| *p));
    assert!(
        churn_mean > stay_mean + 0.1,
        "churners' mean risk {churn_mean} must exceed stayers' {stay_mean}"
    );
    assert!(art.metrics["valid_auc"] > 0.75, "{:?}", art.metrics);
}

#[test]
fn orientation_churn_minority_without_balancing() {
    // Churn minority: linfa's positive class is `false`, coefficients must be negated.
    let tr = synth(5_000, -1.5, 2);
    let va = synth(2_000, -1.5, 3);
    assert!(base_rate(&tr.y) < 0.4);
    let params = TrainParams {
        balance: Balance::None,
        ..TrainParams::default()
    };
    let (art, _) = fit(&tr, &va, &params);
    assert_oriented(&art, &tr);
}

#[test]
fn orientation_churn_majority_without_balancing() {
    // Churn majority: linfa's positive class is `true`, no negation needed.
    let tr = synth(5_000, 1.5, 4);
    let va = synth(2_000, 1.5, 5);
    assert!(base_rate(&tr.y) > 0.6);
    let params = TrainParams {
        balance: Balance::None,
        ..TrainParams::default()
    };
    let (art, _) = fit(&tr, &va, &params);
    assert_oriented(&art, &tr);
}

#[test]
fn orientation_with_balanced_sample_whatever_the_first_row() {
    // After oversampling the classes tie exactly, and linfa picks the first row's label as
    // positive: check both a churner and a stayer in row 0.
    let va = synth(2_000, -1.0, 7);
    for want_first in [true, false] {
        let mut tr = synth(4_000, -1.0, 6);
        let idx =
            tr.y.iter()
                .position(|&v| v == want_first)
                .expect("both classes present");
        let row0 = tr.x.row(0).to_owned();
        let rowi = tr.x.row(idx).to_owned();
        tr.x.row_mut(0).assign(&rowi);
        tr.x.row_mut(idx).assign(&row0);
        tr.y.swap(0, idx);
        assert_eq!(tr.y[0], want_first);
        let (art, _) = fit(&tr, &va, &TrainParams::default());
        assert_oriented(&art, &tr);
    }
}

// ---------------------------------------------------------------------------------------------
// Trap 3: imbalance + prior correction.

#[test]
fn reweight_is_calibrated_to_the_true_base_rate() {
    let tr = synth(20_000, -2.8, 8);
    let va = synth(5_000, -2.8, 9);
    let rate = base_rate(&tr.y);
    assert!(rate > 0.05 && rate < 0.2, "base rate {rate}");
    let (art, report) = fit(&tr, &va, &TrainParams::default());
    assert!(report.converged, "{report:?}");
    // The sample was 50/50, so the correction is large and positive.
    assert!(art.metrics["prior_correction"] > 1.0, "{:?}", art.metrics);
    assert!(art.metrics["train_sample_rows"] > 20_000.0);
    let p = art.predict_batch(tr.x.view());
    let mean_p = mean(p.iter().copied());
    assert!(
        (mean_p - rate).abs() < 0.03,
        "mean predicted {mean_p} vs base rate {rate}"
    );
    // Without the correction the mean prediction would be far above the base rate.
    let uncorrected = mean(p.iter().map(|&q| {
        let logit = (q / (1.0 - q)).ln() + art.metrics["prior_correction"];
        sigmoid(logit)
    }));
    assert!(uncorrected > rate + 0.15, "uncorrected {uncorrected}");
    // Slopes are close to the truth (features are scaled by their std, which is ~30/~200/1).
    assert!(
        (art.coefficients[0] - BETA[0]).abs() < 0.25,
        "{:?}",
        art.coefficients
    );
    assert!(
        (art.coefficients[1] - BETA[1]).abs() < 0.25,
        "{:?}",
        art.coefficients
    );
    // Validation calibration: mean prediction near validation base rate.
    let vrate = base_rate(&va.y);
    assert!((art.metrics["valid_mean_predicted"] - vrate).abs() < 0.03);
}

// ---------------------------------------------------------------------------------------------
// Trap 2: convergence.

#[test]
fn convergence_flag() {
    let tr = synth(3_000, -1.0, 10);
    let va = synth(1_000, -1.0, 11);
    let one = TrainParams {
        max_iterations: 1,
        alphas: vec![1e-3],
        ..TrainParams::default()
    };
    let (_, report) = fit(&tr, &va, &one);
    assert!(!report.converged, "{report:?}");
    assert_eq!(report.iterations, 1);
    assert!(report.gradient_norm > one.gradient_tolerance);

    let (art, report) = fit(&tr, &va, &TrainParams::default());
    assert!(report.converged, "{report:?}");
    assert!(report.gradient_norm <= 1e-6);
    assert!(report.iterations >= 1 && report.iterations <= 200);
    assert_eq!(art.metrics["converged"], 1.0);
}

// ---------------------------------------------------------------------------------------------
// Trap 5 / 6: alpha grid and bands.

#[test]
fn alpha_is_chosen_by_validation_log_loss_and_bands_follow_validation_quantiles() {
    let tr = synth(3_000, -1.5, 12);
    let va = synth(4_000, -1.5, 13);
    let params = TrainParams {
        alphas: vec![1e-4, 1.0, 100.0, 3_000.0],
        ..TrainParams::default()
    };
    let (art, report) = fit(&tr, &va, &params);
    assert_eq!(report.per_alpha.len(), 4);
    let best = report
        .per_alpha
        .iter()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .expect("non-empty");
    assert_eq!(report.chosen_alpha, best.0);
    // A huge penalty shrinks the slopes and hurts validation loss.
    assert!(report.per_alpha[3].1 > report.per_alpha[0].1, "{report:?}");
    assert!(report.per_alpha.iter().all(|(_, _, a)| *a > 0.7));

    let b = art.thresholds;
    assert!(0.0 < b.medium && b.medium < b.high && b.high < b.critical && b.critical < 1.0);
    assert_eq!(art.alert_threshold, b.high);
    let p = art.predict_batch(va.x.view());
    let frac = |t: f64| p.iter().filter(|&&q| q >= t).count() as f64 / p.len() as f64;
    assert!((frac(b.medium) - 0.30).abs() < 0.01, "{}", frac(b.medium));
    assert!((frac(b.high) - 0.15).abs() < 0.01, "{}", frac(b.high));
    assert!(
        (frac(b.critical) - 0.05).abs() < 0.01,
        "{}",
        frac(b.critical)
    );
    assert_eq!(art.band(b.critical), Band::Critical);
    assert_eq!(art.band(b.high), Band::High);
    assert_eq!(art.band(b.medium), Band::Medium);
    assert_eq!(art.band(b.medium / 2.0), Band::Low);
}

// ---------------------------------------------------------------------------------------------
// Trap 4: standardisation; predict / explain arithmetic.

#[test]
fn predict_proba_matches_the_manual_formula_and_explain_adds_up() {
    let tr = synth(2_000, -1.0, 14);
    let va = synth(1_000, -1.0, 15);
    let (art, _) = fit(&tr, &va, &TrainParams::default());
    // Scaler from the training split; constant feature has std 1.
    let m0 = mean(tr.x.column(0).iter().copied());
    assert!((art.scaler_mean[0] - m0).abs() < 1e-9);
    assert!(
        (art.scaler_std[0] - 30.0).abs() < 2.0,
        "{}",
        art.scaler_std[0]
    );
    assert_eq!(art.scaler_std[3], 1.0);
    assert_eq!(art.scaler_mean[3], 7.0);

    let batch = art.predict_batch(va.x.view());
    for (i, batch_p) in batch.iter().enumerate().take(20) {
        let row: Vec<f64> = va.x.row(i).to_vec();
        let mut z = art.intercept;
        for (j, x) in row.iter().enumerate() {
            z += art.coefficients[j] * (x - art.scaler_mean[j]) / art.scaler_std[j];
        }
        let manual = 1.0 / (1.0 + (-z).exp());
        let p = art.predict_proba(&row);
        assert!((p - manual).abs() < 1e-12, "{p} vs {manual}");
        assert_eq!(p, *batch_p);
        assert_eq!(art.try_predict_proba(&row).expect("valid row"), p);

        let contribs = art.explain(&row);
        assert_eq!(contribs.len(), 4);
        assert!(contribs
            .windows(2)
            .all(|w| w[0].contribution >= w[1].contribution));
        let total: f64 = art.intercept + contribs.iter().map(|c| c.contribution).sum::<f64>();
        assert!((total - z).abs() < 1e-9);
        for c in &contribs {
            assert_eq!(c.feature, names()[c.index]);
            assert_eq!(c.binding, bindings()[c.index]);
            assert_eq!(c.value, row[c.index]);
        }
    }
    // A very inactive, low-spend customer: inactivity is the top reason.
    let row = [200.0, 100.0, 0.0, 7.0];
    let top = &art.explain(&row)[0];
    assert_eq!(top.feature, "inactivity_days");
    assert_eq!(top.binding, "emotional");
    assert!(top.contribution > 0.0);

    assert!(matches!(
        art.try_predict_proba(&[1.0, 2.0]),
        Err(ModelError::DimensionMismatch(_))
    ));
    assert!(matches!(
        art.try_predict_proba(&[1.0, f64::NAN, 0.0, 7.0]),
        Err(ModelError::NonFinite { column: 1, .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Artifact: save / load / hash / features.

#[test]
fn save_load_round_trip_and_tamper_detection() {
    let tr = synth(2_000, -1.0, 16);
    let va = synth(1_000, -1.0, 17);
    let (mut art, _) = fit(&tr, &va, &TrainParams::default());
    assert_eq!(art.format_version, 1);
    assert!(art.model_version.starts_with("churn-lr-"));
    assert_eq!(art.model_version.len(), "churn-lr-".len() + 12);
    assert_eq!(art.hash.len(), 64);
    assert_eq!(art.compute_hash().expect("hash"), art.hash);

    let path = temp_path("model.json");
    art.save(&path).expect("save");
    let loaded = ModelArtifact::load(&path).expect("load");
    assert_eq!(loaded, art);
    assert_eq!(loaded.to_json_pretty(), art.to_json_pretty());

    // Caller adds test metrics and the data window after training: save re-seals.
    let version_before = art.model_version.clone();
    art.metrics.insert("test_auc".to_owned(), 0.81);
    let t0 = chrono::DateTime::parse_from_rfc3339("2024-01-01T00:00:00Z")
        .expect("date")
        .with_timezone(&chrono::Utc);
    let t1 = chrono::DateTime::parse_from_rfc3339("2024-06-30T00:00:00Z")
        .expect("date")
        .with_timezone(&chrono::Utc);
    art.data_window = Some((t0, t1));
    art.save(&path).expect("save again");
    let loaded = ModelArtifact::load(&path).expect("load again");
    assert_eq!(loaded.metrics["test_auc"], 0.81);
    assert_eq!(loaded.data_window, Some((t0, t1)));
    assert_eq!(
        loaded.model_version, version_before,
        "scoring content unchanged"
    );
    art.seal().expect("seal");
    assert_eq!(loaded, art);

    // created_at is not hashed: changing it keeps the file valid.
    let text = std::fs::read_to_string(&path).expect("read");
    let mut v: serde_json::Value = serde_json::from_str(&text).expect("json");
    v["created_at"] = serde_json::json!("2030-01-01T00:00:00Z");
    std::fs::write(&path, serde_json::to_string(&v).expect("ser")).expect("write");
    assert!(ModelArtifact::load(&path).is_ok());

    // Tampering with a coefficient breaks the hash.
    let mut v: serde_json::Value = serde_json::from_str(&text).expect("json");
    v["coefficients"][0] = serde_json::json!(9.0);
    std::fs::write(&path, serde_json::to_string(&v).expect("ser")).expect("write");
    let err = ModelArtifact::load(&path).expect_err("tampered file must fail");
    assert!(matches!(err, ModelError::HashMismatch { .. }), "{err}");
    assert_eq!(err.category(), ErrorCategory::Model);
    assert!(err.to_string().contains("hash mismatch"));

    // Future format version.
    let mut v: serde_json::Value = serde_json::from_str(&text).expect("json");
    v["format_version"] = serde_json::json!(2);
    std::fs::write(&path, serde_json::to_string(&v).expect("ser")).expect("write");
    assert!(matches!(
        ModelArtifact::load(&path),
        Err(ModelError::UnsupportedFormat {
            found: 2,
            expected: 1
        })
    ));

    // Not JSON / missing file.
    std::fs::write(&path, "{ not json").expect("write");
    assert!(matches!(
        ModelArtifact::load(&path),
        Err(ModelError::Parse { .. })
    ));
    let missing = temp_path("does-not-exist.json");
    assert!(matches!(
        ModelArtifact::load(&missing),
        Err(ModelError::Io { .. })
    ));

    // Non-finite metrics are refused at save time (JSON has no NaN).
    art.metrics.insert("bad".to_owned(), f64::NAN);
    assert!(matches!(
        art.save(&path),
        Err(ModelError::InvalidArtifact(_))
    ));
    let _ = std::fs::remove_file(&path);
    if let Some(dir) = path.parent() {
        let _ = std::fs::remove_dir(dir);
    }
}

#[test]
fn training_is_deterministic() {
    let tr = synth(2_000, -1.5, 18);
    let va = synth(1_000, -1.5, 19);
    let (a, ra) = fit(&tr, &va, &TrainParams::default());
    let (b, rb) = fit(&tr, &va, &TrainParams::default());
    assert_eq!(a.model_version, b.model_version);
    assert_eq!(a.hash, b.hash);
    assert_eq!(ra, rb);
    let other_seed = TrainParams {
        seed: 99,
        ..TrainParams::default()
    };
    let (c, _) = fit(&tr, &va, &other_seed);
    assert_ne!(
        a.hash, c.hash,
        "seed is part of train_params and the sample"
    );
}

#[test]
fn check_features_names_the_offenders() {
    let tr = synth(1_000, -1.0, 20);
    let va = synth(500, -1.0, 21);
    let (art, _) = fit(&tr, &va, &TrainParams::default());
    assert!(art
        .check_features(&["inactivity_days", "spend", "noise", "constant"])
        .is_ok());

    let err = art
        .check_features(&["inactivity_days", "spend", "noise", "nps_latest"])
        .expect_err("mismatch");
    let msg = err.to_string();
    assert!(
        msg.contains("constant") && msg.contains("nps_latest"),
        "{msg}"
    );
    assert!(msg.contains(&art.model_version), "{msg}");
    match err {
        ModelError::FeatureMismatch { missing, extra, .. } => {
            assert_eq!(missing, vec!["constant".to_owned()]);
            assert_eq!(extra, vec!["nps_latest".to_owned()]);
        }
        other => panic!("unexpected error {other}"),
    }

    let err = art
        .check_features(&["spend", "inactivity_days", "noise", "constant"])
        .expect_err("reordered");
    let msg = err.to_string();
    assert!(msg.contains("order differs"), "{msg}");
    assert!(
        msg.contains("position 0: model has `inactivity_days`, caller has `spend`"),
        "{msg}"
    );
    match err {
        ModelError::FeatureMismatch {
            missing,
            extra,
            reordered,
            ..
        } => {
            assert!(missing.is_empty() && extra.is_empty());
            assert_eq!(reordered.len(), 2);
        }
        other => panic!("unexpected error {other}"),
    }

    let err = art
        .check_features(&["inactivity_days", "spend", "noise"])
        .expect_err("missing one");
    assert!(err
        .to_string()
        .contains("missing (model needs, caller lacks): [constant]"));
}

// ---------------------------------------------------------------------------------------------
// Data errors.

#[test]
fn data_errors_are_reported_as_data_errors() {
    let tr = synth(500, -1.0, 22);
    let va = synth(200, -1.0, 23);
    let p = TrainParams::default();
    let run = |x: &Array2<f64>, y: &[bool], names: &[String], binds: &[String]| {
        train(
            Dataset::new(x.view(), y),
            Dataset::new(va.x.view(), &va.y),
            names,
            binds,
            &p,
        )
    };

    let empty = Array2::<f64>::zeros((0, 4));
    let e = run(&empty, &[], &names(), &bindings()).expect_err("empty");
    assert!(
        matches!(
            e,
            ModelError::EmptyData {
                split: "training",
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(e.category(), ErrorCategory::Data);

    let all_stay = vec![false; 500];
    let e = run(&tr.x, &all_stay, &names(), &bindings()).expect_err("one class");
    assert!(matches!(e, ModelError::OneClass { churners: 0, .. }), "{e}");
    assert_eq!(e.category(), ErrorCategory::Data);

    let mut nan = tr.x.clone();
    nan[[17, 2]] = f64::NAN;
    let e = run(&nan, &tr.y, &names(), &bindings()).expect_err("nan");
    assert!(
        matches!(
            e,
            ModelError::NonFinite {
                row: 17,
                column: 2,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("noise"), "{e}");
    let mut inf = tr.x.clone();
    inf[[3, 0]] = f64::INFINITY;
    assert!(matches!(
        run(&inf, &tr.y, &names(), &bindings()),
        Err(ModelError::NonFinite {
            row: 3,
            column: 0,
            ..
        })
    ));

    let e = run(&tr.x, &tr.y[..499], &names(), &bindings()).expect_err("labels");
    assert!(matches!(e, ModelError::DimensionMismatch(_)), "{e}");
    let e = run(&tr.x, &tr.y, &names()[..3], &bindings()).expect_err("names");
    assert!(matches!(e, ModelError::DimensionMismatch(_)), "{e}");
    let narrow = tr.x.select(ndarray::Axis(1), &[0, 1, 2]);
    let e = run(&narrow, &tr.y, &names()[..3], &bindings()[..3]).expect_err("valid width");
    assert!(matches!(e, ModelError::DimensionMismatch(_)), "{e}");

    let mut dup = names();
    dup[1] = "inactivity_days".to_owned();
    let e = run(&tr.x, &tr.y, &dup, &bindings()).expect_err("duplicate names");
    assert_eq!(e.category(), ErrorCategory::Params);

    let bad = TrainParams {
        alphas: vec![],
        ..TrainParams::default()
    };
    let e = train(
        Dataset::new(tr.x.view(), &tr.y),
        Dataset::new(va.x.view(), &va.y),
        &names(),
        &bindings(),
        &bad,
    )
    .expect_err("empty grid");
    assert!(matches!(e, ModelError::InvalidParams(_)));

    // Validation split without churners.
    let no_churn = vec![false; va.y.len()];
    let e = train(
        Dataset::new(tr.x.view(), &tr.y),
        Dataset::new(va.x.view(), &no_churn),
        &names(),
        &bindings(),
        &p,
    )
    .expect_err("one-class validation");
    assert!(
        matches!(
            e,
            ModelError::OneClass {
                split: "validation",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn column_major_input_gives_the_same_model() {
    let tr = synth(1_500, -1.0, 24);
    let va = synth(500, -1.0, 25);
    let (a, _) = fit(&tr, &va, &TrainParams::default());
    let mut tr_f = Array2::<f64>::zeros(ndarray::ShapeBuilder::f(tr.x.raw_dim()));
    tr_f.assign(&tr.x);
    let tr2 = Synth {
        x: tr_f,
        y: tr.y.clone(),
    };
    let (b, _) = fit(&tr2, &va, &TrainParams::default());
    assert_eq!(a.coefficients, b.coefficients);
    assert_eq!(a.hash, b.hash);
}

// ---------------------------------------------------------------------------------------------
// Metrics on hand-checked examples.

#[test]
fn auc_hand_checked() {
    let y = [false, false, true, true];
    assert_eq!(auc(&[0.1, 0.2, 0.8, 0.9], &y), 1.0);
    assert_eq!(auc(&[0.9, 0.8, 0.2, 0.1], &y), 0.0);
    assert_eq!(auc(&[0.5, 0.5, 0.5, 0.5], &y), 0.5);
    // One discordant pair out of four.
    assert!((auc(&[0.1, 0.4, 0.35, 0.8], &y) - 0.75).abs() < 1e-12);
    // Ties between classes count one half: pairs (0.5,0.5)=½, (0.5,0.2)=1, (0.9,·)=1+1.
    assert!((auc(&[0.5, 0.5, 0.2, 0.9], &[true, false, false, true]) - 0.875).abs() < 1e-12);
    assert!(auc(&[0.1, 0.2], &[true, true]).is_nan());
}

#[test]
fn other_metrics_hand_checked() {
    let p = [0.9, 0.1];
    let y = [true, false];
    assert!((log_loss(&p, &y) - (-(0.9f64).ln())).abs() < 1e-12);
    assert!((brier(&p, &y) - 0.01).abs() < 1e-12);
    assert!(log_loss(&[0.0], &[true]).is_finite(), "clipped");

    // 10 customers, 2 churners; the top 10 % (1 row) is a churner: lift = 1 / 0.2 = 5.
    let p10 = [0.95, 0.9, 0.1, 0.2, 0.3, 0.15, 0.05, 0.12, 0.4, 0.33];
    let mut y10 = [false; 10];
    y10[0] = true;
    y10[3] = true;
    assert!((lift_at(&p10, &y10, 0.1) - 5.0).abs() < 1e-12);
    // Top 20 %: rows 0 and 1, one churner: lift 0.5 / 0.2 = 2.5.
    assert!((lift_at(&p10, &y10, 0.2) - 2.5).abs() < 1e-12);
    assert!((lift_at(&p10, &y10, 1.0) - 1.0).abs() < 1e-12);
    // All tied: expected lift is 1.
    assert!((lift_at(&[0.5; 10], &y10, 0.1) - 1.0).abs() < 1e-12);

    // Threshold 0.35: flagged rows 0, 1, 8 (p >= 0.35): TP = 1 → precision 1/3, recall 1/2.
    let (prec, rec) = precision_recall_at(&p10, &y10, 0.35);
    assert!((prec - 1.0 / 3.0).abs() < 1e-12 && (rec - 0.5).abs() < 1e-12);
    assert_eq!(precision_recall_at(&p10, &y10, 0.99), (0.0, 0.0));

    let table = calibration_table(
        &[0.05, 0.15, 0.12, 0.95, 1.0],
        &[false, true, false, true, true],
        10,
    );
    assert_eq!(table.len(), 3, "empty bins omitted: {table:?}");
    assert_eq!(table[0].count, 1);
    assert_eq!((table[1].lower, table[1].upper), (0.1, 0.2));
    assert_eq!(table[1].count, 2);
    assert!((table[1].mean_predicted - 0.135).abs() < 1e-12);
    assert!((table[1].observed_rate - 0.5).abs() < 1e-12);
    assert_eq!(table[2].count, 2, "1.0 falls in the last bin");
    assert_eq!(table[2].observed_rate, 1.0);

    let roc = roc_curve(&[0.1, 0.2, 0.8, 0.9], &[false, false, true, true]);
    assert_eq!(roc.first(), Some(&(0.0, 0.0)));
    assert_eq!(roc.last(), Some(&(1.0, 1.0)));
    assert!(
        roc.contains(&(0.0, 1.0)),
        "perfect ranking passes through (0,1): {roc:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Calibration and band specs in the artifact.

/// An artifact written before calibration existed (`fixtures/model_before_calibration.json`:
/// notebooks-data/model.json as of 91a716e, no `calibration` / `score_distribution` /
/// `band_spec` keys) still loads, verifies its hash, keeps its model version and scores with the
/// plain logistic.
#[test]
fn artifacts_without_a_calibrator_still_load_and_keep_their_version() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/model_before_calibration.json");
    let text = std::fs::read_to_string(&path).expect("fixture model");
    let raw: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert!(
        raw.get("calibration").is_none(),
        "fixture must be an old artifact"
    );
    let art = ModelArtifact::load(&path).expect("old artifact loads");
    assert!(art.calibration.is_none() && art.score_distribution.is_none());
    assert_eq!(
        art.compute_model_version().expect("version"),
        art.model_version,
        "no calibrator: the version is computed as before"
    );
    assert_eq!(art.compute_hash().expect("hash"), art.hash);
    let row = art.scaler_mean.clone();
    assert_eq!(art.predict_proba(&row), sigmoid(art.logit(&row)));
    // Lift / top bands need the distribution such artifacts lack.
    let mut a = art.clone();
    let spec: churn_model::BandSpec = "top:20%,5%,1%".parse().expect("spec");
    assert!(a.set_bands(&spec).is_err());
}

#[test]
fn a_calibrated_artifact_scores_through_its_calibrator_and_round_trips() {
    let tr = synth(2_000, -1.0, 31);
    let va = synth(1_000, -1.0, 32);
    let (mut art, _) = fit(&tr, &va, &TrainParams::default());
    let plain_version = art.model_version.clone();
    let plain = art.predict_batch(va.x.view());
    art.calibration = Some(churn_model::Calibration {
        slope: 0.5,
        offset: -0.25,
        rows: 1_000,
    });
    art.model_version = art.compute_model_version().expect("version");
    assert_ne!(
        art.model_version, plain_version,
        "the calibrator is scoring content"
    );
    let row: Vec<f64> = va.x.row(3).to_vec();
    let z = art.logit(&row);
    assert!((art.predict_proba(&row) - sigmoid(0.5 * z - 0.25)).abs() < 1e-15);
    assert_eq!(art.without_calibration().predict_proba(&row), plain[3]);
    // Monotone: the ranking (AUC) is unchanged.
    let cal = art.predict_batch(va.x.view());
    assert!((auc(&cal, &va.y) - auc(&plain, &va.y)).abs() < 1e-12);

    let scores = art.predict_batch(va.x.view());
    art.score_distribution =
        Some(churn_model::ScoreDistribution::from_scores(&scores, &va.y).expect("dist"));
    art.set_bands(&"top:30%,10%,2%".parse().expect("spec"))
        .expect("top bands");
    let share = |t: f64| scores.iter().filter(|&&p| p >= t).count() as f64 / scores.len() as f64;
    assert!(
        (share(art.alert_threshold) - 0.10).abs() < 0.01,
        "{:?}",
        art.thresholds
    );
    assert_eq!(art.band_spec.as_deref(), Some("top:30%,10%,2%"));

    let path = temp_path("calibrated.json");
    art.save(&path).expect("save");
    art.seal().expect("seal");
    let loaded = ModelArtifact::load(&path).expect("load");
    assert_eq!(loaded, art);
    // The calibrator is hashed: editing it breaks the file.
    let text = std::fs::read_to_string(&path).expect("read");
    let mut v: serde_json::Value = serde_json::from_str(&text).expect("json");
    v["calibration"]["slope"] = serde_json::json!(2.0);
    std::fs::write(&path, serde_json::to_string(&v).expect("ser")).expect("write");
    assert!(matches!(
        ModelArtifact::load(&path),
        Err(ModelError::HashMismatch { .. })
    ));
}
