//! Evaluation report: one self-contained HTML file with inline SVG charts (plotters, SVG
//! backend only: text is written as SVG `<text>`, so no font files are read at build or run time).
//!
//! Contents: headline metrics of the model next to the naive recency rule, ROC curve, cumulative
//! gains (with a per-decile lift table), calibration plot and table, risk histogram of churners
//! vs stayers, coefficients coloured by binding level, and a backtest over several cut-off dates
//! ([`backtest_cutoffs`]: train only on labels known before the cut-off, evaluate on the window
//! after it).
//!
//! The recency rule ranks customers by days since their last event. It yields a ranking, not a
//! probability, so log loss and Brier are reported for the model only (with the no-skill
//! reference of predicting the base rate for everyone); its precision/recall are taken at the
//! same alert budget as the model (the same number of customers flagged).

use std::fmt::Write as _;

use churn_events::Event;
use churn_features::registry::FEATURES;
use churn_features::training::{build_training_set, ObservationPlan, TrainingSet};
use churn_features::{day_start, rollups_from_events};
use churn_model::{metrics as m, Bands, Dataset, ModelArtifact, TrainParams};
use indicatif::{ProgressDrawTarget, ProgressStyle};
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use serde::Serialize;

pub use indicatif::ProgressBar;

use crate::train::{design_matrix, evaluate, Evaluation};
use crate::Error;

/// Result of one backtest cut-off: a model trained on observations whose labels were fully known
/// at the cut-off, evaluated on the observations of the window that starts at it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CutoffResult {
    /// Cut-off day (days since 1970-01-01) and date.
    pub cutoff_day: i32,
    pub cutoff: String,
    /// Observation dates and rows used for training / validation (L2 strength).
    pub train_dates: usize,
    pub train_rows: usize,
    pub valid_rows: usize,
    /// Last observation date whose label horizon ends on or before the cut-off.
    pub last_train_date: String,
    /// Test window `[test_from, test_to]` (observation dates, inclusive).
    pub test_from: String,
    pub test_to: String,
    pub chosen_alpha: f64,
    pub converged: bool,
    /// Model and recency-rule metrics on the test window.
    pub test: Evaluation,
}

/// A progress bar on stderr; hidden when stderr is not a terminal (CI, pipes, tests).
pub fn progress(len: u64, msg: &str) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    let style =
        ProgressStyle::with_template("{spinner} {msg:<20} [{bar:24}] {pos}/{len} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
    pb.set_style(style);
    pb.set_message(msg.to_string());
    pb.enable_steady_tick(std::time::Duration::from_millis(200));
    pb
}

/// A spinner on stderr for steps without a known length; hidden when stderr is not a terminal.
pub fn spinner(msg: &str) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    pb.set_style(style);
    pb.set_message(msg.to_string());
    pb.enable_steady_tick(std::time::Duration::from_millis(120));
    pb
}

fn date(day: i32) -> String {
    day_start(day).format("%Y-%m-%d").to_string()
}

/// Backtest over `k` cut-off dates: build the observation set from `events`, then for each
/// cut-off train on the observations whose label horizon ended by the cut-off and evaluate on
/// the next window (see [`backtest_on_set`]).
pub fn backtest_cutoffs(
    events: &[Event],
    plan: &ObservationPlan,
    params: &TrainParams,
    bands: Bands,
    calibrate: bool,
    k: usize,
) -> Result<Vec<CutoffResult>, Error> {
    let customers = rollups_from_events(events);
    let set = build_training_set(&customers, plan)?;
    backtest_on_set(&set, plan, params, bands, calibrate, k)
}

/// [`backtest_cutoffs`] on an already built observation set.
///
/// Test windows are consecutive and cover the last ~40 % of observation dates: with `n` dates,
/// each window holds `w = max(1, ⌊0.4·n / k⌋)` dates and cut-off `i` is the first date of window
/// `i`. Training uses observations at dates `A` with `A + horizon <= cut-off` (their labels
/// were known at the cut-off, so nothing from the test window leaks in); the latest quarter of
/// those dates is the validation split that picks the L2 strength. Cut-offs with fewer than two
/// such dates are skipped; if none is left the history is too short (error). With `calibrate`
/// each cut-off's model gets a Platt calibrator fit on its own validation dates (it does not
/// refit on them), as `train --calibration platt` would.
pub fn backtest_on_set(
    set: &TrainingSet,
    plan: &ObservationPlan,
    params: &TrainParams,
    bands: Bands,
    calibrate: bool,
    k: usize,
) -> Result<Vec<CutoffResult>, Error> {
    bands.validate()?;
    let mut dates = set.as_of.clone();
    dates.sort_unstable();
    dates.dedup();
    let n = dates.len();
    let horizon = plan.definition.horizon();
    let too_short = || {
        Error::Features(churn_features::Error::NoObservations {
            days: dates.last().copied().unwrap_or(0) - dates.first().copied().unwrap_or(0) + 1,
            horizon,
        })
    };
    let k = k.max(1);
    let w = ((n * 2 / 5) / k).max(1);
    let names: Vec<String> = set.features.names().iter().map(|n| n.to_string()).collect();
    let bindings: Vec<String> = set
        .features
        .defs()
        .iter()
        .map(|d| d.binding.as_str().to_string())
        .collect();

    let mut plans = Vec::new();
    for i in 0..k {
        let Some(start) = n.checked_sub((k - i) * w) else {
            continue;
        };
        let cutoff = dates[start];
        let end = dates[(start + w).min(n) - 1];
        let matured: Vec<i32> = dates
            .iter()
            .copied()
            .filter(|&a| a + horizon <= cutoff)
            .collect();
        if matured.len() < 2 {
            tracing::warn!(cutoff = %date(cutoff), "backtest: fewer than two matured observation dates before the cut-off; skipped");
            continue;
        }
        plans.push((cutoff, end, matured));
    }
    if plans.is_empty() {
        return Err(too_short());
    }

    let pb = progress(plans.len() as u64, "backtest");
    let mut out = Vec::with_capacity(plans.len());
    for (cutoff, end, matured) in plans {
        pb.set_message(format!("cut-off {}", date(cutoff)));
        let n_valid = (matured.len() / 4).max(1);
        let valid_from = matured[matured.len() - n_valid];
        let last_train = matured[matured.len() - 1];
        let tr = set.between(i32::MIN, valid_from);
        let va = set.between(valid_from, last_train + 1);
        let te = set.between(cutoff, end + 1);
        let (xtr, xva) = (design_matrix(&tr), design_matrix(&va));
        let (mut model, report) = churn_model::train(
            Dataset::new(xtr.view(), &tr.labels),
            Dataset::new(xva.view(), &va.labels),
            &names,
            &bindings,
            params,
        )?;
        if calibrate {
            // Calibrated on its own validation dates (this model did not refit on them).
            let logits: Vec<f64> = (0..va.len())
                .map(|i| model.logit(&xva.row(i).to_vec()))
                .collect();
            match churn_model::fit_platt(&logits, &va.labels) {
                Ok(cal) => model.calibration = Some(cal),
                Err(err) => {
                    tracing::warn!(cutoff = %date(cutoff), %err, "backtest: no calibrator for this cut-off")
                }
            }
        }
        model.thresholds = bands;
        model.alert_threshold = bands.high;
        out.push(CutoffResult {
            cutoff_day: cutoff,
            cutoff: date(cutoff),
            train_dates: matured.len(),
            train_rows: tr.len(),
            valid_rows: va.len(),
            last_train_date: date(last_train),
            test_from: date(cutoff),
            test_to: date(end),
            chosen_alpha: report.chosen_alpha,
            converged: report.converged,
            test: evaluate(&model, &te),
        });
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------------

const MODEL_C: RGBColor = RGBColor(31, 119, 180);
const RECENCY_C: RGBColor = RGBColor(230, 120, 20);
const GREY: RGBColor = RGBColor(150, 150, 150);
const STAYER_C: RGBColor = RGBColor(31, 119, 180);
const CHURNER_C: RGBColor = RGBColor(214, 39, 40);
const BINDINGS: [(&str, RGBColor); 3] = [
    ("rational", RGBColor(31, 119, 180)),
    ("emotional", RGBColor(214, 39, 40)),
    ("structural", RGBColor(44, 160, 44)),
];
const FONT: &str = "sans-serif";
const CHART_W: u32 = 660;
const CHART_H: u32 = 460;

fn binding_color(b: &str) -> RGBColor {
    BINDINGS
        .iter()
        .find(|(name, _)| *name == b)
        .map_or(GREY, |(_, c)| *c)
}

fn plot_err(chart: &str, e: impl std::fmt::Display) -> Error {
    Error::Io(std::io::Error::other(format!("plotting the {chart}: {e}")))
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Fixed-precision number, `n/a` for NaN/inf.
fn num(v: f64, digits: usize) -> String {
    if v.is_finite() {
        format!("{v:.digits$}")
    } else {
        "n/a".to_string()
    }
}

fn pct(v: f64) -> String {
    if v.is_finite() {
        format!("{:.1} %", v * 100.0)
    } else {
        "n/a".to_string()
    }
}

/// At most `max` points of a curve, always keeping the first and the last.
fn thin(points: Vec<(f64, f64)>, max: usize) -> Vec<(f64, f64)> {
    if points.len() <= max || max < 2 {
        return points;
    }
    let step = (points.len() - 1) as f64 / (max - 1) as f64;
    (0..max)
        .map(|i| points[((i as f64 * step).round() as usize).min(points.len() - 1)])
        .collect()
}

/// Cumulative gains: (share of customers targeted, share of churners caught), customers ordered
/// by descending score. Tied scores form one straight segment (the expectation under a random
/// order within the tie).
fn gains_curve(scores: &[f64], y: &[bool]) -> Vec<(f64, f64)> {
    let n = scores.len();
    let n_pos = y.iter().filter(|&&v| v).count();
    let mut pts = vec![(0.0, 0.0)];
    if n == 0 || n_pos == 0 {
        return pts;
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut seen, mut caught, mut i) = (0usize, 0usize, 0usize);
    while i < n {
        let s = scores[order[i]];
        while i < n && scores[order[i]] == s {
            seen += 1;
            caught += usize::from(y[order[i]]);
            i += 1;
        }
        pts.push((seen as f64 / n as f64, caught as f64 / n_pos as f64));
    }
    pts
}

/// Precision and recall when flagging the `budget` highest-scored rows (ties at the boundary in
/// expectation), for the recency rule at the model's alert volume.
fn precision_recall_top(scores: &[f64], y: &[bool], budget: usize) -> (f64, f64) {
    let n_pos = y.iter().filter(|&&v| v).count();
    if budget == 0 || n_pos == 0 || scores.is_empty() {
        return (0.0, 0.0);
    }
    let frac = budget as f64 / scores.len() as f64;
    let base = n_pos as f64 / scores.len() as f64;
    // lift_at handles ties in expectation: churners in the top = lift · base · budget.
    let caught = m::lift_at(scores, y, frac) * base * budget as f64;
    (caught / budget as f64, caught / n_pos as f64)
}

struct Scored {
    p: Vec<f64>,
    recency: Vec<f64>,
    y: Vec<bool>,
}

fn score_set(model: &ModelArtifact, test: &TrainingSet) -> Scored {
    let x = design_matrix(test);
    let p = model.predict_batch(x.view());
    let rec = FEATURES
        .iter()
        .position(|d| d.name == "recency_activity_days")
        .unwrap_or(1);
    let recency = (0..test.len()).map(|i| test.row(i)[rec]).collect();
    Scored {
        p,
        recency,
        y: test.labels.clone(),
    }
}

fn legend_line(
    color: RGBColor,
    width: u32,
) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> + 'static {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(width))
}

/// Tick labels on a probability or share axis.
#[derive(Clone, Copy)]
enum Ticks {
    Fraction,
    Percent,
}

impl Ticks {
    fn label(self, v: &f64) -> String {
        match self {
            Ticks::Fraction => format!("{v:.1}"),
            Ticks::Percent => format!("{:.0} %", v * 100.0),
        }
    }
}

/// The frame shared by the ROC, gains, calibration and histogram charts.
struct Axes<'s> {
    caption: &'s str,
    x: (&'s str, Ticks),
    y: (&'s str, Ticks),
    /// y runs over 0..y_max (x always over 0..1).
    y_max: f64,
    /// Vertical grid lines (off for the histogram, whose bars carry the x positions).
    x_grid: bool,
}

type UnitChart<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// Caption, described axes with tick labels and a light grid, on 0..1 × 0..`y_max`.
fn unit_chart<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
    a: &Axes<'_>,
) -> Result<UnitChart<'a, 'b>, DrawingAreaErrorKind<std::io::Error>> {
    let mut chart = ChartBuilder::on(root)
        .caption(a.caption, (FONT, 22))
        .margin(18)
        .x_label_area_size(52)
        .y_label_area_size(62)
        .build_cartesian_2d(0f64..1f64, 0f64..a.y_max)?;
    let (x, y) = (a.x.1, a.y.1);
    let x_fmt = |v: &f64| x.label(v);
    let y_fmt = |v: &f64| y.label(v);
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(a.x.0)
        .y_desc(a.y.0)
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 16))
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .bold_line_style(RGBColor(222, 222, 222))
        .light_line_style(RGBColor(243, 243, 243))
        .max_light_lines(4);
    if !a.x_grid {
        mesh.disable_x_mesh();
    }
    mesh.draw()?;
    Ok(chart)
}

fn roc_svg(s: &Scored, auc_model: f64, auc_rec: f64) -> Result<String, Error> {
    let e = |err| plot_err("ROC curve", err);
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (CHART_W, CHART_H)).into_drawing_area();
        root.fill(&WHITE).map_err(e)?;
        let mut chart = unit_chart(
            &root,
            &Axes {
                caption: "ROC curve (test split)",
                x: ("False positive rate (stayers flagged)", Ticks::Fraction),
                y: ("True positive rate (churners caught)", Ticks::Fraction),
                y_max: 1.0,
                x_grid: true,
            },
        )
        .map_err(e)?;
        chart
            .draw_series(DashedLineSeries::new(
                vec![(0.0, 0.0), (1.0, 1.0)],
                6,
                5,
                GREY.stroke_width(1),
            ))
            .map_err(e)?
            .label("chance (AUC 0.5)")
            .legend(legend_line(GREY, 1));
        chart
            .draw_series(LineSeries::new(
                thin(m::roc_curve(&s.recency, &s.y), 800),
                RECENCY_C.stroke_width(2),
            ))
            .map_err(e)?
            .label(format!("recency rule (AUC {})", num(auc_rec, 3)))
            .legend(legend_line(RECENCY_C, 2));
        chart
            .draw_series(LineSeries::new(
                thin(m::roc_curve(&s.p, &s.y), 800),
                MODEL_C.stroke_width(3),
            ))
            .map_err(e)?
            .label(format!("model (AUC {})", num(auc_model, 3)))
            .legend(legend_line(MODEL_C, 3));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .margin(12)
            .label_font((FONT, 15))
            .background_style(WHITE.mix(0.9))
            .border_style(GREY)
            .draw()
            .map_err(e)?;
        root.present().map_err(e)?;
    }
    Ok(buf)
}

fn gains_svg(s: &Scored, lift_model: f64, lift_rec: f64) -> Result<String, Error> {
    let e = |err| plot_err("gains chart", err);
    let n_pos = s.y.iter().filter(|&&v| v).count();
    let base = n_pos as f64 / s.y.len().max(1) as f64;
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (CHART_W, CHART_H)).into_drawing_area();
        root.fill(&WHITE).map_err(e)?;
        let mut chart = unit_chart(
            &root,
            &Axes {
                caption: "Cumulative gains (test split)",
                x: (
                    "Share of customers contacted (highest risk first)",
                    Ticks::Percent,
                ),
                y: ("Share of churners reached", Ticks::Percent),
                y_max: 1.02,
                x_grid: true,
            },
        )
        .map_err(e)?;
        chart
            .draw_series(DashedLineSeries::new(
                vec![(0.1, 0.0), (0.1, 1.02)],
                4,
                4,
                RGBColor(120, 120, 120).stroke_width(1),
            ))
            .map_err(e)?;
        chart
            .draw_series(std::iter::once(Text::new(
                "top decile",
                (0.105, 0.04),
                (FONT, 13).into_font().color(&RGBColor(90, 90, 90)),
            )))
            .map_err(e)?;
        if base > 0.0 {
            chart
                .draw_series(LineSeries::new(
                    vec![(0.0, 0.0), (base.min(1.0), 1.0), (1.0, 1.0)],
                    RGBColor(60, 160, 60).stroke_width(1),
                ))
                .map_err(e)?
                .label("perfect ranking")
                .legend(legend_line(RGBColor(60, 160, 60), 1));
        }
        chart
            .draw_series(DashedLineSeries::new(
                vec![(0.0, 0.0), (1.0, 1.0)],
                6,
                5,
                GREY.stroke_width(1),
            ))
            .map_err(e)?
            .label("random contact")
            .legend(legend_line(GREY, 1));
        chart
            .draw_series(LineSeries::new(
                thin(gains_curve(&s.recency, &s.y), 800),
                RECENCY_C.stroke_width(2),
            ))
            .map_err(e)?
            .label(format!(
                "recency rule (top-decile lift {})",
                num(lift_rec, 2)
            ))
            .legend(legend_line(RECENCY_C, 2));
        chart
            .draw_series(LineSeries::new(
                thin(gains_curve(&s.p, &s.y), 800),
                MODEL_C.stroke_width(3),
            ))
            .map_err(e)?
            .label(format!("model (top-decile lift {})", num(lift_model, 2)))
            .legend(legend_line(MODEL_C, 3));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .margin(12)
            .label_font((FONT, 15))
            .background_style(WHITE.mix(0.9))
            .border_style(GREY)
            .draw()
            .map_err(e)?;
        root.present().map_err(e)?;
    }
    Ok(buf)
}

fn calibration_svg(
    series: &[(String, &[churn_model::CalibrationBin], RGBColor)],
) -> Result<String, Error> {
    let e = |err| plot_err("calibration plot", err);
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (CHART_W, CHART_H)).into_drawing_area();
        root.fill(&WHITE).map_err(e)?;
        let mut chart = unit_chart(
            &root,
            &Axes {
                caption: "Calibration (10 equal-width bins)",
                x: ("Mean predicted churn probability", Ticks::Fraction),
                y: ("Observed churn rate", Ticks::Fraction),
                y_max: 1.0,
                x_grid: true,
            },
        )
        .map_err(e)?;
        chart
            .draw_series(DashedLineSeries::new(
                vec![(0.0, 0.0), (1.0, 1.0)],
                6,
                5,
                GREY.stroke_width(1),
            ))
            .map_err(e)?
            .label("perfectly calibrated")
            .legend(legend_line(GREY, 1));
        let max_count = series
            .iter()
            .flat_map(|(_, bins, _)| bins.iter().map(|b| b.count))
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        for (label, bins, colour) in series {
            let pts: Vec<(f64, f64)> = bins
                .iter()
                .map(|b| (b.mean_predicted, b.observed_rate))
                .collect();
            chart
                .draw_series(LineSeries::new(pts, colour.stroke_width(2)))
                .map_err(e)?
                .label(label.as_str())
                .legend(legend_line(*colour, 2));
            chart
                .draw_series(bins.iter().map(|b| {
                    let r = 3.0 + 9.0 * (b.count as f64 / max_count).sqrt();
                    Circle::new(
                        (b.mean_predicted, b.observed_rate),
                        r.round() as i32,
                        colour.mix(0.55).filled(),
                    )
                }))
                .map_err(e)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .margin(12)
            .label_font((FONT, 15))
            .background_style(WHITE.mix(0.9))
            .border_style(GREY)
            .draw()
            .map_err(e)?;
        root.present().map_err(e)?;
    }
    Ok(buf)
}

fn histogram_svg(s: &Scored, bands: &Bands) -> Result<String, Error> {
    let e = |err| plot_err("risk histogram", err);
    const BINS: usize = 20;
    let mut churn = [0usize; BINS];
    let mut stay = [0usize; BINS];
    for (&p, &y) in s.p.iter().zip(&s.y) {
        if !p.is_finite() {
            continue;
        }
        let b = ((p.clamp(0.0, 1.0) * BINS as f64) as usize).min(BINS - 1);
        if y {
            churn[b] += 1;
        } else {
            stay[b] += 1;
        }
    }
    let (nc, ns) = (
        churn.iter().sum::<usize>().max(1) as f64,
        stay.iter().sum::<usize>().max(1) as f64,
    );
    let share_c: Vec<f64> = churn.iter().map(|&c| c as f64 / nc).collect();
    let share_s: Vec<f64> = stay.iter().map(|&c| c as f64 / ns).collect();
    let ymax = share_c
        .iter()
        .chain(&share_s)
        .copied()
        .fold(0.0f64, f64::max)
        .max(0.05)
        * 1.12;
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (CHART_W, CHART_H)).into_drawing_area();
        root.fill(&WHITE).map_err(e)?;
        let mut chart = unit_chart(
            &root,
            &Axes {
                caption: "Risk distribution: churners vs stayers",
                x: ("Predicted churn probability", Ticks::Fraction),
                y: ("Share of the group", Ticks::Percent),
                y_max: ymax,
                x_grid: false,
            },
        )
        .map_err(e)?;
        let w = 1.0 / BINS as f64;
        chart
            .draw_series((0..BINS).map(|b| {
                let x0 = b as f64 * w;
                Rectangle::new(
                    [(x0 + 0.06 * w, 0.0), (x0 + 0.5 * w, share_s[b])],
                    STAYER_C.mix(0.8).filled(),
                )
            }))
            .map_err(e)?
            .label(format!("stayers (n = {})", ns as usize))
            .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], STAYER_C.filled()));
        chart
            .draw_series((0..BINS).map(|b| {
                let x0 = b as f64 * w;
                Rectangle::new(
                    [(x0 + 0.5 * w, 0.0), (x0 + 0.94 * w, share_c[b])],
                    CHURNER_C.mix(0.8).filled(),
                )
            }))
            .map_err(e)?
            .label(format!("churners (n = {})", nc as usize))
            .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], CHURNER_C.filled()));
        for (name, edge) in [
            ("medium", bands.medium),
            ("high", bands.high),
            ("critical", bands.critical),
        ] {
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(edge, 0.0), (edge, ymax)],
                    5,
                    4,
                    RGBColor(80, 80, 80).stroke_width(1),
                ))
                .map_err(e)?;
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("{name} ≥ {edge:.2}"),
                    (edge + 0.008, ymax * 0.6),
                    (FONT, 13).into_font().color(&RGBColor(60, 60, 60)),
                )))
                .map_err(e)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .margin(12)
            .label_font((FONT, 15))
            .background_style(WHITE.mix(0.9))
            .border_style(GREY)
            .draw()
            .map_err(e)?;
        root.present().map_err(e)?;
    }
    Ok(buf)
}

fn coefficients_svg(model: &ModelArtifact) -> Result<String, Error> {
    let e = |err| plot_err("coefficient chart", err);
    // Ascending, so the strongest push towards churn ends up at the top.
    let mut rows: Vec<(String, String, f64)> = model
        .feature_names
        .iter()
        .zip(&model.bindings)
        .zip(&model.coefficients)
        .map(|((n, b), c)| (n.clone(), b.clone(), *c))
        .collect();
    rows.sort_by(|a, b| a.2.total_cmp(&b.2));
    let n = rows.len().max(1);
    let lo = rows.iter().map(|r| r.2).fold(0.0f64, f64::min);
    let hi = rows.iter().map(|r| r.2).fold(0.0f64, f64::max);
    let pad = ((hi - lo) * 0.06).max(0.05);
    let height = (n as u32) * 24 + 150;
    let names: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (1340, height)).into_drawing_area();
        root.fill(&WHITE).map_err(e)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "Coefficients on standardised inputs (+ = more churn risk)",
                (FONT, 22),
            )
            .margin(18)
            .x_label_area_size(52)
            .y_label_area_size(250)
            .build_cartesian_2d((lo - pad)..(hi + pad), (0..n as i32 - 1).into_segmented())
            .map_err(e)?;
        let label = |v: &SegmentValue<i32>| match v {
            SegmentValue::CenterOf(i) => usize::try_from(*i)
                .ok()
                .and_then(|i| names.get(i))
                .cloned()
                .unwrap_or_default(),
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .x_desc("Coefficient (log-odds per standard deviation)")
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 16))
            .y_labels(n + 1)
            .y_label_formatter(&label)
            .x_label_formatter(&|v| format!("{v:.1}"))
            .disable_y_mesh()
            .bold_line_style(RGBColor(222, 222, 222))
            .light_line_style(RGBColor(243, 243, 243))
            .max_light_lines(4)
            .draw()
            .map_err(e)?;
        chart
            .draw_series(rows.iter().enumerate().map(|(i, (_, b, c))| {
                let i = i as i32;
                let mut r = Rectangle::new(
                    [
                        (0.0, SegmentValue::Exact(i)),
                        (*c, SegmentValue::Exact(i + 1)),
                    ],
                    binding_color(b).filled(),
                );
                r.set_margin(3, 3, 0, 0);
                r
            }))
            .map_err(e)?;
        chart
            .draw_series(LineSeries::new(
                vec![
                    (0.0, SegmentValue::Exact(0)),
                    (0.0, SegmentValue::Exact(n as i32)),
                ],
                BLACK.stroke_width(1),
            ))
            .map_err(e)?;
        for (name, color) in BINDINGS {
            chart
                .draw_series(std::iter::empty::<Rectangle<(f64, SegmentValue<i32>)>>())
                .map_err(e)?
                .label(format!("{name} binding"))
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled())
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .margin(12)
            .label_font((FONT, 15))
            .background_style(WHITE.mix(0.9))
            .border_style(GREY)
            .draw()
            .map_err(e)?;
        root.present().map_err(e)?;
    }
    Ok(buf)
}

const CSS: &str = r#"
body { font-family: -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial, sans-serif; margin: 24px 32px; color: #222; background: #fafafa; }
h1 { margin: 0 0 4px 0; font-size: 26px; }
h2 { margin: 28px 0 8px 0; font-size: 20px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.meta { color: #555; font-size: 14px; margin-bottom: 12px; }
.grid { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 16px; }
.card { background: #fff; border: 1px solid #e2e2e2; border-radius: 6px; padding: 8px; }
.card svg { width: 100%; height: auto; display: block; }
table { border-collapse: collapse; background: #fff; font-size: 14px; margin: 6px 0; }
th, td { border: 1px solid #ddd; padding: 4px 9px; text-align: right; white-space: nowrap; }
th { background: #f0f3f7; white-space: normal; vertical-align: bottom; }
td:first-child, th:first-child { text-align: left; }
.note { color: #555; font-size: 13px; max-width: 1100px; }
.better { font-weight: bold; }
.tables { display: flex; gap: 40px; flex-wrap: wrap; align-items: flex-start; }
"#;

/// Render the evaluation report for `model` on the `test` split, with optional `backtest`
/// results, as one self-contained HTML document (inline SVG, inline CSS, no scripts).
pub fn render_report(
    model: &ModelArtifact,
    test: &TrainingSet,
    backtest: &[CutoffResult],
) -> Result<String, Error> {
    if test.is_empty() {
        return Err(Error::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the test split has no rows: nothing to report",
        )));
    }
    let ev = evaluate(model, test);
    let s = score_set(model, test);
    let n_pos = s.y.iter().filter(|&&v| v).count();
    let flagged = s.p.iter().filter(|&&p| p >= model.alert_threshold).count();
    let (rec_prec, rec_recall) = precision_recall_top(&s.recency, &s.y, flagged);
    let base = ev.churn_rate;
    let const_p = vec![base; s.y.len()];
    let (noskill_ll, noskill_brier) = (m::log_loss(&const_p, &s.y), m::brier(&const_p, &s.y));
    let calib = m::calibration_table(&s.p, &s.y, 10);
    let ece = m::expected_calibration_error(&calib);
    // The same model without its calibrator (the prior-corrected logistic), when it has one.
    let uncal = model
        .calibration
        .is_some()
        .then(|| score_set(&model.without_calibration(), test));
    let calib_before = uncal.as_ref().map(|u| m::calibration_table(&u.p, &u.y, 10));
    let ece_before = calib_before.as_deref().map(m::expected_calibration_error);

    let roc = roc_svg(&s, ev.auc, ev.baseline_recency_auc)?;
    let gains = gains_svg(&s, ev.lift_top_decile, ev.baseline_recency_lift_top_decile)?;
    let mut cal_series = Vec::new();
    if let (Some(b), Some(e)) = (calib_before.as_deref(), ece_before) {
        cal_series.push((
            format!("before calibration (ECE {})", num(e, 3)),
            b,
            RECENCY_C,
        ));
    }
    cal_series.push((
        format!(
            "{} (ECE {}; marker area ∝ customers in bin)",
            if model.calibration.is_some() {
                "calibrated"
            } else {
                "model"
            },
            num(ece, 3)
        ),
        &calib[..],
        MODEL_C,
    ));
    let cal = calibration_svg(&cal_series)?;
    let hist = histogram_svg(&s, &model.thresholds)?;
    let coef = coefficients_svg(model)?;

    let from = test.as_of.iter().min().copied().unwrap_or(0);
    let to = test.as_of.iter().max().copied().unwrap_or(0);
    let mut h = String::with_capacity(roc.len() * 6);
    // `write!` into a String cannot fail; the results are ignored on purpose.
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>churnstream evaluation — {ver}</title>\n<style>{CSS}</style>\n</head>\n<body>\n\
         <h1>churnstream evaluation report</h1>\n\
         <div class=\"meta\">model <b>{ver}</b> · trained {created} · test split: {rows} observations \
         at {from} … {to}, {churners} churners (base rate {rate}) · alert threshold risk ≥ {thr}</div>\n",
        ver = esc(&model.model_version),
        created = model.created_at.format("%Y-%m-%d %H:%M UTC"),
        rows = ev.rows,
        from = date(from),
        to = date(to),
        churners = n_pos,
        rate = pct(base),
        thr = num(model.alert_threshold, 2),
    );

    // Metrics table.
    let better = |a: f64, b: f64| if a > b { " class=\"better\"" } else { "" };
    let _ = write!(
        h,
        "<h2>Metrics on the test split</h2>\n<table>\n\
         <tr><th>metric</th><th>model</th><th>recency rule</th></tr>\n\
         <tr><td>AUC</td><td{b1}>{auc}</td><td>{rauc}</td></tr>\n\
         <tr><td>log loss</td><td>{ll}</td><td>— (no-skill {nll})</td></tr>\n\
         <tr><td>Brier score</td><td>{br}</td><td>— (no-skill {nbr})</td></tr>\n\
         <tr><td>top-decile lift</td><td{b2}>{lift}</td><td>{rlift}</td></tr>\n\
         <tr><td>precision at alert threshold</td><td{b3}>{prec}</td><td>{rprec}</td></tr>\n\
         <tr><td>recall at alert threshold</td><td{b4}>{rec}</td><td>{rrec}</td></tr>\n\
         <tr><td>customers flagged</td><td>{flagged}</td><td>{flagged} (same budget)</td></tr>\n\
         </table>\n<p class=\"note\">The recency rule ranks customers by days since their last \
         event; it gives a ranking, not a probability, so log loss and Brier are shown for the \
         model only, next to the no-skill reference (everyone gets the base rate {rate}). \
         Its precision/recall flag the same number of customers as the model does at risk ≥ {thr}.</p>\n",
        auc = num(ev.auc, 3),
        rauc = num(ev.baseline_recency_auc, 3),
        b1 = better(ev.auc, ev.baseline_recency_auc),
        ll = num(ev.log_loss, 3),
        nll = num(noskill_ll, 3),
        br = num(ev.brier, 3),
        nbr = num(noskill_brier, 3),
        lift = num(ev.lift_top_decile, 2),
        rlift = num(ev.baseline_recency_lift_top_decile, 2),
        b2 = better(ev.lift_top_decile, ev.baseline_recency_lift_top_decile),
        prec = num(ev.precision_at_alert, 3),
        rprec = num(rec_prec, 3),
        b3 = better(ev.precision_at_alert, rec_prec),
        rec = num(ev.recall_at_alert, 3),
        rrec = num(rec_recall, 3),
        b4 = better(ev.recall_at_alert, rec_recall),
        rate = pct(base),
        thr = num(model.alert_threshold, 2),
    );

    let _ = write!(
        h,
        "<h2>Ranking and calibration</h2>\n<div class=\"grid\">\n\
         <div class=\"card\" id=\"roc\">{roc}</div>\n\
         <div class=\"card\" id=\"gains\">{gains}</div>\n\
         <div class=\"card\" id=\"calibration\">{cal}</div>\n\
         <div class=\"card\" id=\"histogram\">{hist}</div>\n</div>\n"
    );

    // Lift per decile and calibration table, side by side.
    h.push_str(
        "<div class=\"tables\"><div>\n<h2>Cumulative lift by decile</h2>\n<table>\n<tr><th>customers contacted</th>\
         <th>model lift</th><th>model churners reached</th><th>recency lift</th>\
         <th>recency churners reached</th></tr>\n",
    );
    for q in 1..=10 {
        let f = f64::from(q) / 10.0;
        let (lm, lr) = (m::lift_at(&s.p, &s.y, f), m::lift_at(&s.recency, &s.y, f));
        let _ = writeln!(
            h,
            "<tr><td>top {q}0 %</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            num(lm, 2),
            pct((lm * f).min(1.0)),
            num(lr, 2),
            pct((lr * f).min(1.0)),
        );
    }
    h.push_str("</table>\n");

    // Calibration table.
    let _ = write!(
        h,
        "</div><div>\n<h2>Calibration table</h2>\n<p class=\"note\">Expected calibration error \
         (Σ share of rows × |mean predicted − observed|): {after}{before}. Calibrator: {cal}.</p>\n\
         <table>\n<tr><th>predicted risk bin</th><th>customers</th>\
         <th>mean predicted</th><th>observed churn rate</th><th>difference</th></tr>\n",
        after = num(ece, 4),
        before = ece_before.map_or(String::new(), |e| format!(
            " (before calibration: {})",
            num(e, 4)
        )),
        cal = model.calibration.map_or("none".to_owned(), |c| format!(
            "Platt scaling, σ({} · logit + {}), fit on {} validation rows",
            num(c.slope, 3),
            num(c.offset, 3),
            c.rows
        )),
    );
    for b in &calib {
        let _ = writeln!(
            h,
            "<tr><td>{:.1} – {:.1}</td><td>{}</td><td>{}</td><td>{}</td><td>{:+.3}</td></tr>",
            b.lower,
            b.upper,
            b.count,
            num(b.mean_predicted, 3),
            num(b.observed_rate, 3),
            b.observed_rate - b.mean_predicted,
        );
    }
    h.push_str("</table>\n</div></div>\n");

    // Backtest.
    h.push_str("<h2>Backtest over cut-off dates</h2>\n");
    if backtest.is_empty() {
        h.push_str("<p class=\"note\">No backtest was run (<code>--cutoffs 0</code>).</p>\n");
    } else {
        h.push_str(
            "<p class=\"note\">For each cut-off a fresh model is trained only on observations \
             whose label horizon ended on or before the cut-off (the latest quarter of those \
             dates picks the L2 strength), then evaluated on the observations of the window \
             that starts at the cut-off. Stable numbers across cut-offs mean the model does not \
             depend on one lucky period.</p>\n<table>\n<tr><th>cut-off</th><th>trained on \
             (dates / rows, up to)</th><th>test observation dates</th><th>test rows</th><th>churn rate</th>\
             <th>AUC</th><th>recency AUC</th><th>top-decile lift</th><th>recency lift</th>\
             <th>precision @ alert</th><th>recall @ alert</th><th>log loss</th><th>Brier</th>\
             </tr>\n",
        );
        for c in backtest {
            let t = &c.test;
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{} / {} (≤ {})</td><td>{}{}</td><td>{}</td><td>{}</td>\
                 <td{}>{}</td><td>{}</td><td{}>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td>{}</td></tr>",
                esc(&c.cutoff),
                c.train_dates,
                c.train_rows + c.valid_rows,
                esc(&c.last_train_date),
                esc(&c.test_from),
                if c.test_to == c.test_from {
                    String::new()
                } else {
                    format!(" … {}", esc(&c.test_to))
                },
                t.rows,
                pct(t.churn_rate),
                better(t.auc, t.baseline_recency_auc),
                num(t.auc, 3),
                num(t.baseline_recency_auc, 3),
                better(t.lift_top_decile, t.baseline_recency_lift_top_decile),
                num(t.lift_top_decile, 2),
                num(t.baseline_recency_lift_top_decile, 2),
                num(t.precision_at_alert, 3),
                num(t.recall_at_alert, 3),
                num(t.log_loss, 3),
                num(t.brier, 3),
            );
        }
        let mean = |f: fn(&Evaluation) -> f64| {
            let v: Vec<f64> = backtest
                .iter()
                .map(|c| f(&c.test))
                .filter(|v| v.is_finite())
                .collect();
            v.iter().sum::<f64>() / v.len().max(1) as f64
        };
        let _ = writeln!(
            h,
            "<tr><th>mean</th><th></th><th></th><th></th><th></th><th>{}</th><th>{}</th>\
             <th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr>\n</table>",
            num(mean(|e| e.auc), 3),
            num(mean(|e| e.baseline_recency_auc), 3),
            num(mean(|e| e.lift_top_decile), 2),
            num(mean(|e| e.baseline_recency_lift_top_decile), 2),
            num(mean(|e| e.precision_at_alert), 3),
            num(mean(|e| e.recall_at_alert), 3),
            num(mean(|e| e.log_loss), 3),
            num(mean(|e| e.brier), 3),
        );
    }

    // Coefficients.
    let _ = write!(
        h,
        "<h2>What drives the risk</h2>\n<p class=\"note\">Per-feature contribution to an \
         individual score = coefficient × standardised value; alert reasons sum them per metric \
         group (README \"Alert reasons\"). Colour = binding level: rational (price, spend, plan), \
         emotional (NPS, complaints, engagement), structural (tenure, subscription, feature \
         adoption).</p>\n\
         <div class=\"card\" id=\"coefficients\">{coef}</div>\n"
    );
    h.push_str(&sign_check_html(model));
    h.push_str(
        "<p class=\"note\">Generated by <code>churnstream evaluate --report</code>. Self-contained: \
         no scripts, no external resources.</p>\n</body>\n</html>\n",
    );
    Ok(h)
}

// ---------------------------------------------------------------------------------------------
// Per band on observation rows (`evaluate`) and the backtest's lead-time report.

/// The sign check (issue 18): every coefficient whose sign contradicts its feature's declared
/// direction, and how alerts handle it.
fn sign_check_html(model: &ModelArtifact) -> String {
    let issues = crate::reasons::sign_check(model);
    let mut h = format!(
        "<h2 id=\"sign-check\">Sign check</h2>\n<p class=\"note\">Every feature declares the \
         direction in which it is expected to move the risk (<code>churnstream features</code>, \
         column <code>direction</code>). {} of {} coefficients contradict it (collinear members \
         of a group share its weight, so single signs may flip). Handling: such a feature still \
         scores risk but is excluded from its group's reason contribution, so no alert reason \
         rests on it.</p>\n",
        issues.len(),
        model.coefficients.len()
    );
    if !issues.is_empty() {
        h.push_str(
            "<table>\n<tr><th>feature</th><th>group</th><th>expected</th><th>coefficient</th>\
             <th>handling</th></tr>\n",
        );
        for i in &issues {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&i.feature),
                i.group,
                i.expected,
                num(i.coefficient, 3),
                i.handling
            );
        }
        h.push_str("</table>\n");
    }
    h
}

/// One risk band of the model on labelled observation rows (`evaluate`'s `per_band`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BandRow {
    /// `low`, `medium`, `high` or `critical` (the model's cut-offs).
    pub band: String,
    /// Observations scored into this band, and those labelled churn.
    pub rows: usize,
    pub positives: usize,
    /// positives / rows; `None` for an empty band.
    pub precision: Option<f64>,
    /// positives / all positives: the share of churn observations this band catches.
    pub share_of_positives: Option<f64>,
    /// Whether the band alerts (at or above the model's alert threshold).
    pub alerts: bool,
}

/// Precision and share of the positives caught per risk band of `model` on `set` (every band,
/// lowest first). Observation rows carry a label, not a churn date, so this is what `evaluate`
/// can say about lead time: how much of the churn each alerting band catches ahead of the
/// horizon.
pub fn band_table(model: &ModelArtifact, set: &TrainingSet) -> Vec<BandRow> {
    let s = score_set(model, set);
    let all_pos = s.y.iter().filter(|&&v| v).count();
    churn_model::Band::ALL
        .iter()
        .map(|&b| {
            let (mut rows, mut pos) = (0, 0);
            for (&p, &y) in s.p.iter().zip(&s.y) {
                if model.thresholds.band(p) == b {
                    rows += 1;
                    pos += usize::from(y);
                }
            }
            let share = |a: usize, n: usize| (n > 0).then(|| a as f64 / n as f64);
            let lower = match b {
                churn_model::Band::Low => f64::NEG_INFINITY,
                churn_model::Band::Medium => model.thresholds.medium,
                churn_model::Band::High => model.thresholds.high,
                churn_model::Band::Critical => model.thresholds.critical,
            };
            BandRow {
                band: b.as_str().to_string(),
                rows,
                positives: pos,
                precision: share(pos, rows),
                share_of_positives: share(pos, all_pos),
                alerts: lower >= model.alert_threshold,
            }
        })
        .collect()
}

/// Width of a lead-time histogram bin, days.
const LEAD_BIN_DAYS: i64 = 7;

/// Histogram of days from the first alert to churn of the evaluable churners who were alerted,
/// in bins of [`LEAD_BIN_DAYS`] aligned at 0: right of 0 warned (lead > 0), left of 0 late
/// (lead ≤ 0: the first alert on the churn day or after it).
fn lead_histogram_svg(days: &[f64], not_alerted: usize) -> Result<String, Error> {
    let e = |err| plot_err("lead-time histogram", err);
    let mut bins: std::collections::BTreeMap<i64, usize> = std::collections::BTreeMap::new();
    for &d in days.iter().filter(|d| d.is_finite()) {
        let k = (d / LEAD_BIN_DAYS as f64).floor() as i64;
        *bins.entry(if d > 0.0 { k } else { k.min(-1) }).or_default() += 1;
    }
    let lo = bins.keys().next().copied().unwrap_or(-1).min(-1);
    let hi = bins.keys().next_back().copied().unwrap_or(0).max(0);
    let (x0, x1) = (
        (lo * LEAD_BIN_DAYS) as f64,
        ((hi + 1) * LEAD_BIN_DAYS) as f64,
    );
    let ymax = (bins.values().copied().max().unwrap_or(0).max(1) as f64 * 1.15).ceil();
    let late = days.iter().filter(|&&d| d <= 0.0).count();
    let warned = days.iter().filter(|&&d| d > 0.0).count();
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (CHART_W * 2, CHART_H)).into_drawing_area();
        root.fill(&WHITE).map_err(e)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "Lead time of evaluable churners: first alert → churn",
                (FONT, 22),
            )
            .margin(18)
            .x_label_area_size(52)
            .y_label_area_size(62)
            .build_cartesian_2d(x0..x1, 0f64..ymax)
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc("Days from the first alert to the churn (negative = alerted after the churn)")
            .y_desc("Churners")
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 16))
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .bold_line_style(RGBColor(222, 222, 222))
            .light_line_style(RGBColor(243, 243, 243))
            .max_light_lines(4)
            .disable_x_mesh()
            .draw()
            .map_err(e)?;
        let w = LEAD_BIN_DAYS as f64;
        let bar = |k: i64, n: usize, c: RGBColor| {
            let x = k as f64 * w;
            Rectangle::new(
                [(x + 0.08 * w, 0.0), (x + 0.92 * w, n as f64)],
                c.mix(0.85).filled(),
            )
        };
        chart
            .draw_series(
                bins.iter()
                    .filter(|(k, _)| **k >= 0)
                    .map(|(&k, &n)| bar(k, n, STAYER_C)),
            )
            .map_err(e)?
            .label(format!("warned before the churn (n = {warned})"))
            .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], STAYER_C.filled()));
        chart
            .draw_series(
                bins.iter()
                    .filter(|(k, _)| **k < 0)
                    .map(|(&k, &n)| bar(k, n, CHURNER_C)),
            )
            .map_err(e)?
            .label(format!("first alert after the churn (n = {late})"))
            .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], CHURNER_C.filled()));
        chart
            .draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())
            .map_err(e)?
            .label(format!("never alerted: {not_alerted} (not plotted)"))
            .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], GREY.filled()));
        chart
            .draw_series(LineSeries::new(
                vec![(0.0, 0.0), (0.0, ymax)],
                BLACK.stroke_width(1),
            ))
            .map_err(e)?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .margin(12)
            .label_font((FONT, 15))
            .background_style(WHITE.mix(0.9))
            .border_style(GREY)
            .draw()
            .map_err(e)?;
        root.present().map_err(e)?;
    }
    Ok(buf)
}

fn opt_num(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".to_string(), |v| num(v, digits))
}

fn lead_rows(h: &mut String, groups: &[(String, &crate::backtest::LeadStats)]) {
    h.push_str(
        "<table>\n<tr><th></th><th>first alerted</th><th>warned before churn</th>\
         <th>share of evaluable churners</th><th>lead p10</th><th>p25</th><th>p50</th>\
         <th>p75</th><th>p90 (days)</th><th>first alerts</th><th>followed by churn</th>\
         <th>first-alert precision</th><th>window still open</th><th>first alerted after churn \
         (evaluable)</th><th>alerts after churn</th></tr>\n",
    );
    for (name, s) in groups {
        let q = &s.lead_days;
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} ({})</td>\
             <td>{}</td></tr>",
            esc(name),
            s.customers_alerted,
            s.warned,
            s.warned_share.map_or("–".to_string(), pct),
            opt_num(q.p10, 1),
            opt_num(q.p25, 1),
            opt_num(q.p50, 1),
            opt_num(q.p75, 1),
            opt_num(q.p90, 1),
            s.first_alerts,
            s.first_alerts_followed_by_churn,
            opt_num(s.first_alert_precision, 3),
            s.first_alerts_window_open,
            s.late_customers,
            s.late_evaluable,
            s.alerts_after_churn,
        );
    }
    h.push_str("</table>\n");
}

/// The `backtest --report` page: the lead-time histogram and the lead-time tables (overall, per
/// band, per action of the first alert) of a [`crate::backtest::Judgement`].
pub fn render_lead_time_report(
    j: &crate::backtest::Judgement,
    model_version: &str,
) -> Result<String, Error> {
    let lt = &j.lead_time;
    let hist = lead_histogram_svg(&lt.evaluable_lead_days, lt.evaluable_not_alerted)?;
    let when = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map_or("–".to_string(), |t| t.format("%Y-%m-%d").to_string())
    };
    let mut h = String::with_capacity(hist.len() + 8192);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>churnstream backtest — {ver}</title>\n<style>{CSS}</style>\n</head>\n<body>\n\
         <h1>churnstream backtest: lead time</h1>\n\
         <div class=\"meta\">model <b>{ver}</b> · {alerts} at-risk alerts to {customers} customers · \
         alerting from {from} · evaluable churners: churned on or after {efrom} ({after} days \
         later): <b>{cohort}</b>, of them warned before the churn <b>{warned}</b>{share}, never \
         alerted {never}</div>\n",
        ver = esc(model_version),
        alerts = j.alerts,
        customers = j.customers_alerted,
        from = when(lt.alerting_from),
        efrom = when(lt.evaluable_from),
        after = lt.evaluable_after_days,
        cohort = lt.evaluable_churners,
        warned = lt.overall.warned,
        share = lt.overall.warned_share.map_or(String::new(), |v| format!(" ({})", pct(v))),
        never = lt.evaluable_not_alerted,
    );
    let _ = writeln!(h, "<div class=\"card\" id=\"lead-time\">{hist}</div>");
    h.push_str(
        "<p class=\"note\">Each evaluable churner who was alerted is counted once, at the day \
         of the first at-risk alert (its <code>as_of</code>, the end of the day it was scored \
         for). Right of 0: warned before the churn; left of 0: the first alert came on or after \
         the churn day (a post-mortem). README \"How to read lead time\".</p>\n",
    );
    let overall = [("all".to_string(), &lt.overall)];
    let bands: Vec<_> = lt.per_band.iter().map(|(k, v)| (k.clone(), v)).collect();
    let actions: Vec<_> = lt.per_action.iter().map(|(k, v)| (k.clone(), v)).collect();
    for (title, rows) in [
        ("Overall", &overall[..]),
        ("Per band of the first alert", &bands[..]),
        ("Per recommended action of the first alert", &actions[..]),
    ] {
        let _ = writeln!(h, "<h2>{title}</h2>");
        lead_rows(&mut h, rows);
    }
    let _ = write!(
        h,
        "<p class=\"note\">first-alert precision: share of the customers first alerted at or \
         after alerting began who churned within {w} days after that alert; \"window still \
         open\": of those not (yet) followed by churn, the ones whose {w} days reach past the \
         end of the history. Alerts of other CloudEvents types (not predictions, not judged): \
         {other}.</p>\n<p class=\"note\">Generated by <code>churnstream backtest --labels … \
         --report</code>. Self-contained: no scripts, no external resources.</p>\n\
         </body>\n</html>\n",
        w = lt.precision_window_days,
        other = if j.other_alerts.is_empty() {
            "none".to_string()
        } else {
            j.other_alerts
                .iter()
                .map(|(k, v)| format!("{} {v}", esc(k)))
                .collect::<Vec<_>>()
                .join(", ")
        },
    );
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use churn_features::training::ChurnDefinition;

    /// Svg fragments of the report, in document order.
    fn svgs(html: &str) -> Vec<&str> {
        html.split("<svg")
            .skip(1)
            .map(|s| s.split("</svg>").next().unwrap_or(""))
            .collect()
    }

    fn drawing_elements(svg: &str) -> usize {
        [
            "<path",
            "<line",
            "<polyline",
            "<rect",
            "<circle",
            "<polygon",
        ]
        .iter()
        .map(|t| svg.matches(t).count())
        .sum()
    }

    #[test]
    fn helpers() {
        assert_eq!(num(f64::NAN, 3), "n/a");
        assert_eq!(num(0.98765, 3), "0.988");
        assert_eq!(esc("<a&\"b\">"), "&lt;a&amp;&quot;b&quot;&gt;");
        let t = thin((0..1000).map(|i| (f64::from(i), 0.0)).collect(), 10);
        assert_eq!(t.len(), 10);
        assert_eq!(t[0].0, 0.0);
        assert_eq!(t[9].0, 999.0);
        // Gains: perfect scores catch every churner within the base-rate share.
        let y = [true, false, true, false, false];
        let g = gains_curve(&[0.9, 0.1, 0.8, 0.2, 0.3], &y);
        assert_eq!(g[2], (0.4, 1.0));
        assert_eq!(g.last(), Some(&(1.0, 1.0)));
        // Ties form one segment.
        let g = gains_curve(&[1.0; 5], &y);
        assert_eq!(g, vec![(0.0, 0.0), (1.0, 1.0)]);
        // Budget of 2 with a perfect ranking: precision 1, recall 1.
        let (p, r) = precision_recall_top(&[0.9, 0.1, 0.8, 0.2, 0.3], &y, 2);
        assert!(
            (p - 1.0).abs() < 1e-12 && (r - 1.0).abs() < 1e-12,
            "{p} {r}"
        );
    }

    #[test]
    fn lead_time_report_has_the_histogram_and_the_tables() {
        use crate::backtest::{Judgement, LeadQuantiles, LeadStats, LeadTime};
        let stats = LeadStats {
            customers_alerted: 5,
            warned: 3,
            warned_share: Some(0.5),
            lead_days: LeadQuantiles::of(&[3.0, 10.0, 40.0]),
            first_alerts: 5,
            first_alerts_followed_by_churn: 3,
            first_alert_precision: Some(0.6),
            late_customers: 1,
            late_evaluable: 1,
            alerts_after_churn: 2,
            ..LeadStats::default()
        };
        let j = Judgement {
            alerts: 7,
            customers_alerted: 5,
            churners: 6,
            true_positives: 3,
            late: 1,
            false_positives: 1,
            precision: 0.75,
            recall: 0.5,
            median_lead_days: Some(10.0),
            other_alerts: [("com.churnstream.customer.lapsed".to_string(), 2)].into(),
            lead_time: LeadTime {
                evaluable_churners: 6,
                evaluable_not_alerted: 2,
                overall: stats.clone(),
                per_band: [("high".to_string(), stats.clone())].into(),
                per_action: [("feedback_call".to_string(), stats)].into(),
                evaluable_lead_days: vec![-0.5, -20.0, 3.0, 10.0, 40.0],
                ..LeadTime::default()
            },
            reasons: Default::default(),
            reasons_warned: Default::default(),
        };
        let html = render_lead_time_report(&j, "churn-lr-test").expect("renders");
        let svg = svgs(&html);
        assert_eq!(svg.len(), 1, "one histogram");
        // Bins of a week: [-21,-14) [-7,0) | [0,7) [7,14) [35,42): five bars, plus the frame.
        assert!(drawing_elements(svg[0]) >= 5, "bars drawn");
        for needle in [
            "warned before the churn (n = 3)",
            "first alert after the churn (n = 2)",
            "never alerted: 2",
            "Per band of the first alert",
            "<td>high</td><td>5</td><td>3</td><td>50.0 %</td><td>4.4</td>",
            "Per recommended action of the first alert",
            "<td>feedback_call</td>",
            "com.churnstream.customer.lapsed 2",
        ] {
            assert!(html.contains(needle), "report lacks {needle:?}");
        }
    }

    #[test]
    fn band_table_agrees_with_the_alert_threshold_metrics() {
        let pop = churn_gen::generate(&churn_gen::GenConfig {
            customers: 200,
            days: 150,
            seed: 5,
            ..Default::default()
        });
        let params = TrainParams {
            alphas: vec![1.0],
            ..TrainParams::default()
        };
        let (model, summary, test) = crate::train::train_from_events(
            &pop.events,
            &ObservationPlan::default(),
            &params,
            crate::train::DEFAULT_BANDS,
        )
        .expect("training on generated data");
        let rows = band_table(&model, &test);
        let names: Vec<&str> = rows.iter().map(|r| r.band.as_str()).collect();
        assert_eq!(names, ["low", "medium", "high", "critical"]);
        assert_eq!(rows.iter().map(|r| r.rows).sum::<usize>(), test.len());
        let pos = test.labels.iter().filter(|&&v| v).count();
        assert!(pos > 0);
        assert_eq!(rows.iter().map(|r| r.positives).sum::<usize>(), pos);
        let alerting: Vec<&BandRow> = rows.iter().filter(|r| r.alerts).collect();
        assert_eq!(
            alerting.len(),
            2,
            "high and critical alert at the default threshold"
        );
        let (n, p) = alerting
            .iter()
            .fold((0, 0), |(n, p), r| (n + r.rows, p + r.positives));
        assert!(n > 0);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(p as f64 / n as f64, summary.test.precision_at_alert));
        assert!(close(p as f64 / pos as f64, summary.test.recall_at_alert));
        for r in &rows {
            assert_eq!(r.share_of_positives, Some(r.positives as f64 / pos as f64));
        }
    }

    #[test]
    fn report_has_every_chart_and_the_metrics() {
        let pop = churn_gen::generate(&churn_gen::GenConfig {
            customers: 500,
            days: 180,
            seed: 11,
            ..Default::default()
        });
        let plan = ObservationPlan {
            definition: ChurnDefinition::Inactivity {
                days: 30,
                within_days: 0,
            },
            ..ObservationPlan::default()
        };
        let params = TrainParams {
            alphas: vec![0.1, 10.0],
            ..TrainParams::default()
        };
        let bands = crate::train::DEFAULT_BANDS;
        let (model, _, test) = crate::train::train_from_events(&pop.events, &plan, &params, bands)
            .expect("training on generated data");
        let back =
            backtest_cutoffs(&pop.events, &plan, &params, bands, false, 3).expect("backtest runs");
        assert_eq!(back.len(), 3, "three cut-offs fit in 180 days");
        for w in back.windows(2) {
            assert!(w[0].cutoff_day < w[1].cutoff_day, "cut-offs ascend");
            assert!(w[0].test_to < w[1].test_from, "test windows do not overlap");
        }
        for c in &back {
            assert!(
                c.train_rows > 0 && c.valid_rows > 0 && c.test.rows > 0,
                "{c:?}"
            );
            assert!(
                c.test.auc > 0.75,
                "backtest AUC {} at {}",
                c.test.auc,
                c.cutoff
            );
            // No label of a training observation reaches into the test window.
            let last_train =
                chrono::NaiveDate::parse_from_str(&c.last_train_date, "%Y-%m-%d").expect("date");
            let cutoff = chrono::NaiveDate::parse_from_str(&c.cutoff, "%Y-%m-%d").expect("date");
            assert!((cutoff - last_train).num_days() >= 30, "{c:?}");
        }

        let html = render_report(&model, &test, &back).expect("report renders");
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(!html.contains("<script"), "self-contained, no scripts");
        assert!(!html.contains("href=\"http"), "no external resources");
        assert!(html.contains("<h2 id=\"sign-check\">Sign check</h2>"));
        for issue in crate::reasons::sign_check(&model) {
            assert!(
                html.contains(&format!("<tr><td>{}</td>", issue.feature)),
                "{} listed",
                issue.feature
            );
        }
        for id in ["roc", "gains", "calibration", "histogram", "coefficients"] {
            assert!(
                html.contains(&format!("id=\"{id}\"><svg")),
                "chart {id} missing"
            );
        }
        let charts = svgs(&html);
        assert_eq!(charts.len(), 5, "one <svg> per chart");
        for (i, svg) in charts.iter().enumerate() {
            let n = drawing_elements(svg);
            assert!(n >= 10, "chart {i} has only {n} drawing elements");
            assert!(svg.contains("<text"), "chart {i} has no text (axis labels)");
        }
        // ROC: the model curve has many points.
        assert!(charts[0].matches(',').count() > 100);
        // Coefficient chart: one bar per feature, coloured by binding level.
        for name in ["recency_activity_days", "tenure_days", "nps_latest"] {
            assert!(charts[4].contains(name), "coefficient label {name}");
        }
        for rgb in ["#1F77B4", "#D62728", "#2CA02C"] {
            assert!(
                charts[4].to_uppercase().contains(rgb),
                "binding colour {rgb} in coefficient chart"
            );
        }
        // Metric values appear as computed.
        let ev = evaluate(&model, &test);
        for v in [
            num(ev.auc, 3),
            num(ev.baseline_recency_auc, 3),
            num(ev.log_loss, 3),
            num(ev.brier, 3),
            num(ev.lift_top_decile, 2),
            num(ev.precision_at_alert, 3),
            num(ev.recall_at_alert, 3),
        ] {
            assert!(
                html.contains(&format!(">{v}<")),
                "metric {v} in a table cell"
            );
        }
        for c in &back {
            assert!(html.contains(&c.cutoff), "cut-off {} listed", c.cutoff);
            assert!(html.contains(&num(c.test.auc, 3)));
        }
        assert!(ev.auc > ev.baseline_recency_auc, "model beats recency");
    }
}
