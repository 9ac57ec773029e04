//! Probability calibration and band specifications.
//!
//! - [`Calibration`]: Platt scaling of the model logit, `P = σ(slope · z + offset)`, fit by
//!   maximum likelihood ([`fit_platt`]) on predictions of a model that did not train on the
//!   rows (the pipeline uses the validation split scored by the train-only model).
//! - [`ScoreDistribution`]: quantiles and base rate of the (calibrated) scores of a reference
//!   population, stored in the artifact so that bands can be expressed as population shares.
//! - [`BandSpec`]: band cut-offs as probabilities, as lift over the base rate, or as the share
//!   of the population at or above each cut; [`BandSpec::resolve`] turns any of them into
//!   probability [`Bands`], which is all scoring ever reads.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::artifact::{sigmoid, Bands};
use crate::ModelError;

/// Platt scaling of the churn logit: `P = σ(slope · logit + offset)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Multiplies the model logit (> 0: the ranking is unchanged).
    pub slope: f64,
    /// Added after the slope.
    pub offset: f64,
    /// Rows the calibrator was fit on.
    pub rows: usize,
}

impl Calibration {
    /// The calibrated logit of a model logit.
    pub fn apply(&self, logit: f64) -> f64 {
        self.slope * logit + self.offset
    }

    /// Check that both parameters are finite and the slope is positive.
    pub fn validate(&self) -> Result<(), ModelError> {
        if self.slope.is_finite() && self.slope > 0.0 && self.offset.is_finite() {
            Ok(())
        } else {
            Err(ModelError::InvalidArtifact(format!(
                "calibration needs a finite positive slope and a finite offset, got {self:?}"
            )))
        }
    }
}

/// Newton iterations of [`fit_platt`] at most.
const PLATT_MAX_ITER: usize = 100;

/// Fit Platt scaling by maximum likelihood on `(logit, label)` pairs, with Platt's (1999)
/// smoothed targets (`(N₊ + 1) / (N₊ + 2)` for churners, `1 / (N₋ + 2)` for stayers) so that a
/// separable sample cannot drive the slope to infinity. Newton's method with step halving,
/// from the identity (`slope 1, offset 0`). Deterministic.
///
/// Errors: fewer than two rows, a single class, non-finite logits, or a fit whose slope is not
/// positive (the scores rank the sample backwards: calibrating would invert the ranking).
pub fn fit_platt(logits: &[f64], y: &[bool]) -> Result<Calibration, ModelError> {
    if logits.len() != y.len() {
        return Err(ModelError::DimensionMismatch(format!(
            "{} logits for {} labels",
            logits.len(),
            y.len()
        )));
    }
    let n = y.len();
    let pos = y.iter().filter(|&&v| v).count();
    if n < 2 || pos == 0 || pos == n {
        return Err(ModelError::OneClass {
            split: "calibration",
            churners: pos,
            rows: n,
        });
    }
    if let Some(i) = logits.iter().position(|z| !z.is_finite()) {
        return Err(ModelError::InvalidParams(format!(
            "calibration: logit of row {i} is {}",
            logits[i]
        )));
    }
    let t_pos = (pos as f64 + 1.0) / (pos as f64 + 2.0);
    let t_neg = 1.0 / ((n - pos) as f64 + 2.0);
    let target: Vec<f64> = y.iter().map(|&v| if v { t_pos } else { t_neg }).collect();
    let loss = |a: f64, b: f64| -> f64 {
        let mut s = 0.0;
        for (z, t) in logits.iter().zip(&target) {
            let u = a * z + b;
            // −[t ln σ(u) + (1 − t) ln(1 − σ(u))] = ln(1 + e^u) − t·u, computed stably.
            let softplus = if u > 0.0 {
                u + (-u).exp().ln_1p()
            } else {
                u.exp().ln_1p()
            };
            s += softplus - t * u;
        }
        s / n as f64
    };
    let (mut a, mut b) = (1.0f64, 0.0f64);
    let mut current = loss(a, b);
    for _ in 0..PLATT_MAX_ITER {
        let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for (z, t) in logits.iter().zip(&target) {
            let p = sigmoid(a * z + b);
            let r = p - t;
            let w = (p * (1.0 - p)).max(1e-12);
            ga += r * z;
            gb += r;
            haa += w * z * z;
            hab += w * z;
            hbb += w;
        }
        let nf = n as f64;
        let (ga, gb, haa, hab, hbb) = (ga / nf, gb / nf, haa / nf, hab / nf, hbb / nf);
        if (ga * ga + gb * gb).sqrt() < 1e-10 {
            break;
        }
        // Solve H·d = g (2×2), with a tiny ridge so a constant logit column stays solvable.
        let (haa, hbb) = (haa + 1e-12, hbb + 1e-12);
        let det = haa * hbb - hab * hab;
        if !det.is_finite() || det <= 0.0 {
            break;
        }
        let da = (hbb * ga - hab * gb) / det;
        let db = (haa * gb - hab * ga) / det;
        let mut step = 1.0;
        let mut moved = false;
        while step > 1e-8 {
            let (na, nb) = (a - step * da, b - step * db);
            let l = loss(na, nb);
            if l.is_finite() && l <= current {
                a = na;
                b = nb;
                moved = (current - l) > 0.0;
                current = l;
                break;
            }
            step /= 2.0;
        }
        if !moved {
            break;
        }
    }
    let cal = Calibration {
        slope: a,
        offset: b,
        rows: n,
    };
    if !(a.is_finite() && a > 0.0 && b.is_finite()) {
        return Err(ModelError::Training(format!(
            "Platt scaling gave slope {a}, offset {b}: the scores do not rank the calibration \
             rows (a slope ≤ 0 would invert the ranking)"
        )));
    }
    Ok(cal)
}

/// Number of quantiles kept by [`ScoreDistribution`]: levels `0, 0.001, …, 1`.
pub const DISTRIBUTION_LEVELS: usize = 1001;

/// The scores of a reference population (the artifact's: the validation observations, scored
/// by the final, calibrated model), kept as quantiles at levels `i / 1000`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreDistribution {
    /// Observations (customer × date) summarised.
    pub rows: usize,
    /// Share of those observations labelled churn.
    pub base_rate: f64,
    /// Score quantiles at levels `i / (len − 1)`, ascending ([`DISTRIBUTION_LEVELS`] values).
    pub quantiles: Vec<f64>,
}

impl ScoreDistribution {
    /// Summarise `scores` (NaN skipped) with their labels.
    pub fn from_scores(scores: &[f64], y: &[bool]) -> Result<Self, ModelError> {
        let mut sorted: Vec<f64> = scores.iter().copied().filter(|p| !p.is_nan()).collect();
        if sorted.is_empty() || scores.len() != y.len() {
            return Err(ModelError::EmptyData {
                split: "score distribution",
                rows: sorted.len(),
                cols: 1,
            });
        }
        sorted.sort_by(f64::total_cmp);
        let last = (DISTRIBUTION_LEVELS - 1) as f64;
        let quantiles = (0..DISTRIBUTION_LEVELS)
            .map(|i| crate::metrics::quantile_sorted(&sorted, i as f64 / last))
            .collect();
        Ok(ScoreDistribution {
            rows: scores.len(),
            base_rate: y.iter().filter(|&&v| v).count() as f64 / y.len() as f64,
            quantiles,
        })
    }

    /// The score below which a share `q` of the population lies (linear between the stored
    /// levels; `q` clamped to `[0, 1]`).
    pub fn quantile(&self, q: f64) -> f64 {
        let n = self.quantiles.len();
        if n == 0 {
            return f64::NAN;
        }
        let h = q.clamp(0.0, 1.0) * (n - 1) as f64;
        let lo = h.floor() as usize;
        let hi = (h.ceil() as usize).min(n - 1);
        self.quantiles[lo] + (self.quantiles[hi] - self.quantiles[lo]) * (h - lo as f64)
    }

    /// Share of the population scoring at or above `p` (from the stored quantiles; the
    /// inverse of [`quantile`](Self::quantile), to within one level).
    pub fn share_at_or_above(&self, p: f64) -> f64 {
        let n = self.quantiles.len();
        if n < 2 {
            return f64::NAN;
        }
        let below = self.quantiles.iter().filter(|&&v| v < p).count();
        if below == 0 {
            return 1.0;
        }
        if below == n {
            return 0.0;
        }
        // Interpolate between level below−1 (< p) and level below (≥ p).
        let (a, b) = (self.quantiles[below - 1], self.quantiles[below]);
        let frac = if b > a { (p - a) / (b - a) } else { 1.0 };
        let level = ((below - 1) as f64 + frac) / (n - 1) as f64;
        (1.0 - level).clamp(0.0, 1.0)
    }

    /// Checks: finite, ascending quantiles in `[0, 1]`, a base rate in `[0, 1]`.
    pub fn validate(&self) -> Result<(), ModelError> {
        let ok = self.quantiles.len() >= 2
            && self
                .quantiles
                .iter()
                .all(|v| v.is_finite() && (0.0..=1.0).contains(v))
            && self.quantiles.windows(2).all(|w| w[0] <= w[1])
            && (0.0..=1.0).contains(&self.base_rate);
        if ok {
            Ok(())
        } else {
            Err(ModelError::InvalidArtifact(
                "score_distribution: quantiles must be finite, ascending and in [0, 1], \
                 base_rate in [0, 1]"
                    .to_owned(),
            ))
        }
    }
}

/// How band cut-offs are given (`--bands`, `alerts.bands`). Each form has three values, for
/// the lower edges of `medium`, `high` and `critical`; the alert threshold is `high`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BandSpec {
    /// Calibrated churn probabilities: `0.15,0.35,0.6`.
    Probability([f64; 3]),
    /// Multiples of the base rate of the artifact's reference population: `lift:2,4,8` (at a
    /// 2 % base rate: 0.04 / 0.08 / 0.16).
    Lift([f64; 3]),
    /// Share of the reference population at or above each cut: `top:20%,5%,1%` (or fractions,
    /// `top:0.2,0.05,0.01`). `high` at `top:…,5%,…` is an alert budget: about 5 % of the
    /// observed customers sit at or above the alert threshold on a given day.
    Top([f64; 3]),
}

/// Smallest gap kept between resolved cut-offs (and from 0 and 1).
const MIN_GAP: f64 = 1e-6;

impl BandSpec {
    /// Probability cut-offs of this spec for a model whose reference population is `dist`.
    /// `Lift` and `Top` need it; ties in the score distribution (several cut-offs on the same
    /// score) are pushed apart by 1e-6 so the bands stay strictly increasing.
    pub fn resolve(&self, dist: Option<&ScoreDistribution>) -> Result<Bands, ModelError> {
        let need = |what: &str| {
            dist.ok_or_else(|| {
                ModelError::InvalidParams(format!(
                    "{what} bands need the artifact's score distribution (models trained before \
                     it existed have none: retrain, or give probability bands)"
                ))
            })
        };
        let bands = match *self {
            BandSpec::Probability([m, h, c]) => Bands {
                medium: m,
                high: h,
                critical: c,
            },
            BandSpec::Lift(l) => {
                let base = need("lift")?.base_rate;
                let [m, h, c] = l.map(|x| x * base);
                if c >= 1.0 {
                    return Err(ModelError::InvalidParams(format!(
                        "lift:{},{},{} × base rate {base:.4} reaches probability {c:.4} ≥ 1",
                        l[0], l[1], l[2]
                    )));
                }
                Bands {
                    medium: m,
                    high: h,
                    critical: c,
                }
            }
            BandSpec::Top(s) => {
                let d = need("top")?;
                let g = MIN_GAP;
                let medium = d.quantile(1.0 - s[0]).clamp(g, 1.0 - 3.0 * g);
                let high = d
                    .quantile(1.0 - s[1])
                    .max(medium + g)
                    .clamp(g, 1.0 - 2.0 * g);
                let critical = d.quantile(1.0 - s[2]).max(high + g).clamp(g, 1.0 - g);
                Bands {
                    medium,
                    high,
                    critical,
                }
            }
        };
        bands.validate()?;
        Ok(bands)
    }

    fn values(&self) -> [f64; 3] {
        match *self {
            BandSpec::Probability(v) | BandSpec::Lift(v) | BandSpec::Top(v) => v,
        }
    }
}

impl fmt::Display for BandSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c] = self.values();
        match self {
            BandSpec::Probability(_) => write!(f, "{a},{b},{c}"),
            BandSpec::Lift(_) => write!(f, "lift:{a},{b},{c}"),
            BandSpec::Top(_) => write!(
                f,
                "top:{}%,{}%,{}%",
                round6(a * 100.0),
                round6(b * 100.0),
                round6(c * 100.0)
            ),
        }
    }
}

fn round6(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

impl FromStr for BandSpec {
    type Err = String;

    /// `0.15,0.35,0.6` · `lift:2,4,8` · `top:20%,5%,1%` (or `top:0.2,0.05,0.01`).
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (kind, rest) = match s.split_once(':') {
            Some((k, r)) => (k.trim(), r),
            None => ("probability", s),
        };
        let usage = "expected three cut-offs: `0.15,0.35,0.6` (probabilities), `lift:2,4,8` \
                     (multiples of the base rate) or `top:20%,5%,1%` (population shares)";
        let mut vals = Vec::with_capacity(3);
        for part in rest.split(',') {
            let part = part.trim();
            let (num, pct) = match part.strip_suffix('%') {
                Some(n) => (n.trim(), true),
                None => (part, false),
            };
            let v: f64 = num
                .parse()
                .map_err(|_| format!("bands `{s}`: `{part}` is not a number; {usage}"))?;
            if !v.is_finite() {
                return Err(format!("bands `{s}`: `{part}` is not finite"));
            }
            vals.push(if pct { v / 100.0 } else { v });
        }
        let [a, b, c] = vals[..] else {
            return Err(format!("bands `{s}`: {usage}"));
        };
        match kind {
            "probability" | "p" => {
                if !(0.0 < a && a < b && b < c && c < 1.0) {
                    return Err(format!(
                        "bands `{s}`: probabilities must satisfy 0 < medium < high < critical < 1"
                    ));
                }
                Ok(BandSpec::Probability([a, b, c]))
            }
            "lift" => {
                if !(0.0 < a && a < b && b < c) {
                    return Err(format!(
                        "bands `{s}`: lifts must satisfy 0 < medium < high < critical"
                    ));
                }
                Ok(BandSpec::Lift([a, b, c]))
            }
            "top" => {
                if !(1.0 > a && a > b && b > c && c > 0.0) {
                    return Err(format!(
                        "bands `{s}`: shares must satisfy 100% > medium > high > critical > 0"
                    ));
                }
                Ok(BandSpec::Top([a, b, c]))
            }
            other => Err(format!("bands `{s}`: unknown kind `{other}`; {usage}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Labels drawn from a known calibrated model: P = σ(2·z − 1) — Platt on z must recover
    /// slope ≈ 2 and offset ≈ −1.
    #[test]
    fn platt_recovers_a_known_distortion() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let n = 40_000;
        let z: Vec<f64> = (0..n).map(|_| rng.gen_range(-3.0..3.0)).collect();
        let y: Vec<bool> = z
            .iter()
            .map(|&zi| rng.gen::<f64>() < sigmoid(2.0 * zi - 1.0))
            .collect();
        let cal = fit_platt(&z, &y).expect("fit");
        assert!((cal.slope - 2.0).abs() < 0.08, "{cal:?}");
        assert!((cal.offset + 1.0).abs() < 0.06, "{cal:?}");
        assert_eq!(cal.rows, n);
        // Already calibrated scores: close to the identity.
        let y2: Vec<bool> = z.iter().map(|&zi| rng.gen::<f64>() < sigmoid(zi)).collect();
        let id = fit_platt(&z, &y2).expect("fit");
        assert!(
            (id.slope - 1.0).abs() < 0.05 && id.offset.abs() < 0.05,
            "{id:?}"
        );
    }

    #[test]
    fn platt_refuses_one_class_and_backward_rankings() {
        assert!(fit_platt(&[0.1, 0.2], &[true, true]).is_err());
        assert!(fit_platt(&[0.1], &[true]).is_err());
        assert!(fit_platt(&[0.1, f64::NAN], &[true, false]).is_err());
        // Higher logits churn less: a positive slope cannot fit.
        let z: Vec<f64> = (0..200).map(|i| f64::from(i) / 50.0).collect();
        let y: Vec<bool> = (0..200).map(|i| i < 100).collect();
        assert!(fit_platt(&z, &y).is_err());
    }

    #[test]
    fn distribution_quantiles_and_shares_invert() {
        let scores: Vec<f64> = (0..10_000).map(|i| f64::from(i) / 10_000.0).collect();
        let y: Vec<bool> = (0..10_000).map(|i| i % 50 == 0).collect();
        let d = ScoreDistribution::from_scores(&scores, &y).expect("dist");
        assert!(d.validate().is_ok());
        assert!((d.base_rate - 0.02).abs() < 1e-12);
        assert!((d.quantile(0.95) - 0.95).abs() < 1e-3);
        assert!((d.share_at_or_above(0.95) - 0.05).abs() < 2e-3);
        assert_eq!(d.share_at_or_above(-1.0), 1.0);
        assert_eq!(d.share_at_or_above(2.0), 0.0);
    }

    #[test]
    fn band_specs_parse_print_and_resolve() {
        let p: BandSpec = "0.15,0.35,0.6".parse().expect("probability");
        assert_eq!(p, BandSpec::Probability([0.15, 0.35, 0.6]));
        assert_eq!(p.to_string(), "0.15,0.35,0.6");
        let l: BandSpec = "lift:2,4,8".parse().expect("lift");
        let t: BandSpec = "top: 20%, 5%, 1%".parse().expect("top");
        assert_eq!(t, BandSpec::Top([0.2, 0.05, 0.01]));
        assert_eq!(t.to_string().parse::<BandSpec>(), Ok(t));
        assert_eq!("top:0.2,0.05,0.01".parse::<BandSpec>(), Ok(t));
        for bad in [
            "0.3,0.2,0.6",
            "0.1,0.2",
            "lift:4,2,8",
            "top:5%,20%,1%",
            "top:1,0.5,0.1",
            "quantile:1,2,3",
            "x,y,z",
        ] {
            assert!(bad.parse::<BandSpec>().is_err(), "{bad}");
        }
        // A 2 % base-rate population spread uniformly over [0, 0.2).
        let scores: Vec<f64> = (0..1000).map(|i| f64::from(i) / 5000.0).collect();
        let y: Vec<bool> = (0..1000).map(|i| i % 50 == 0).collect();
        let d = ScoreDistribution::from_scores(&scores, &y).expect("dist");
        let b = l.resolve(Some(&d)).expect("lift bands");
        assert!((b.medium - 0.04).abs() < 1e-12 && (b.critical - 0.16).abs() < 1e-12);
        let b = t.resolve(Some(&d)).expect("top bands");
        let share = |p: f64| scores.iter().filter(|&&s| s >= p).count() as f64 / 1000.0;
        assert!((share(b.high) - 0.05).abs() < 0.002, "{b:?}");
        assert!((share(b.medium) - 0.20).abs() < 0.002, "{b:?}");
        assert!(l.resolve(None).is_err() && t.resolve(None).is_err());
        assert!(p.resolve(None).is_ok());
        assert!("lift:10,30,60"
            .parse::<BandSpec>()
            .expect("lift")
            .resolve(Some(&d))
            .is_err());
        // Constant scores: still strictly increasing cut-offs.
        let flat = ScoreDistribution::from_scores(&[0.01; 50], &[false; 50]).expect("flat");
        assert!(t.resolve(Some(&flat)).is_ok());
    }
}
