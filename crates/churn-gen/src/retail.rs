//! The retail profile ([`Profile::Retail`](crate::Profile::Retail)): a non-contractual
//! buy-till-you-die population (BG/NBD purchasing, Gamma-Gamma spend). The process is described
//! in the crate docs, "Hidden retail process"; the constants below are the ones named there.

use chrono::Duration;
use churn_events::EngagementKind;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Beta, Distribution, Gamma};

use crate::{
    cents, chance, diurnal_second, mix, normal, poisson, Body, GenConfig, Label, DAY, HOUR_WEIGHTS,
    MAX_DAYS,
};

/// Salt of the retail profile's per-customer seeds (a retail customer is not the default
/// profile's customer of the same index with other traits).
const RETAIL_SALT: u64 = 0x5245_5441_494c_0001;

/// BG/NBD: purchase rate λ ~ Gamma(shape `BG_R`, rate `BG_ALPHA`) per day.
pub(crate) const BG_R: f64 = 0.35;
pub(crate) const BG_ALPHA: f64 = 30.0;
/// Upper bound of λ (purchases per day).
const LAMBDA_MAX: f64 = 2.0;
/// BG/NBD: dropout probability after each repeat purchase p ~ Beta(`BG_A`, `BG_B`).
pub(crate) const BG_A: f64 = 0.8;
pub(crate) const BG_B: f64 = 2.6;
/// Gamma-Gamma spend: per-customer ν ~ Gamma(shape `GG_Q`, rate `GG_GAMMA`), each order's gross
/// value z ~ Gamma(shape `GG_P`, rate ν) EUR (mean order value of a customer `GG_P / ν`).
const GG_P: f64 = 6.0;
const GG_Q: f64 = 3.5;
const GG_GAMMA: f64 = 15.0;
/// Gross order values are kept in [1, 5000] EUR.
const ORDER_MIN_EUR: f64 = 1.0;
const ORDER_MAX_EUR: f64 = 5_000.0;
/// Browse-only sessions per day while alive: `BROWSE_PER_PURCHASE` × λ.
const BROWSE_PER_PURCHASE: f64 = 0.5;
/// Page views: Poisson(`PAGE_VIEWS_BUY`) before a purchase, 1 + Poisson(`PAGE_VIEWS_BROWSE`)
/// in a browse-only session.
const PAGE_VIEWS_BUY: f64 = 3.0;
const PAGE_VIEWS_BROWSE: f64 = 1.5;
/// Session length: log-normal, median `RETAIL_SESSION_MEDIAN_S`, σ = 0.7, in [20 s, 2 h].
const RETAIL_SESSION_MEDIAN_S: f64 = 300.0;
/// A `login` at the start of a purchase session with this probability (guest checkout otherwise);
/// browse-only sessions log in with half of it.
const P_LOGIN_AT_CHECKOUT: f64 = 0.6;
/// Share of orders with a discount of U(5 %, 30 %) of the gross value.
const P_DISCOUNT: f64 = 0.12;

/// Fraction of a day's diurnal purchase intensity that lies strictly after second `s` of the day
/// (`HOUR_WEIGHTS`, uniform within an hour).
fn day_mass_after(s: u32) -> f64 {
    let total: u32 = HOUR_WEIGHTS.iter().sum();
    let h = (s / 3600).min(23) as usize;
    let within = f64::from(3600 - (s % 3600)) / 3600.0;
    let after: u32 = HOUR_WEIGHTS[h + 1..].iter().sum();
    (f64::from(after) + f64::from(HOUR_WEIGHTS[h]) * within) / f64::from(total)
}

/// Events of one visit ending at `end` (the purchase instant, or the last page view of a
/// browse-only session): `login` (maybe), `session` at the start, page views inside it.
fn visit(rng: &mut StdRng, out: &mut Vec<(u32, Body)>, end: u32, views: u32, p_login: f64) {
    let dur = (RETAIL_SESSION_MEDIAN_S * (0.7 * normal(rng)).exp()).clamp(20.0, 7_200.0);
    let dur_s = dur.round() as u32;
    let start = end.saturating_sub(dur_s);
    if chance(rng, p_login) {
        out.push((start, Body::engagement(EngagementKind::Login)));
    }
    out.push((
        start,
        Body::Engagement {
            kind: EngagementKind::Session,
            duration_ds: Some(dur_s * 10),
            feature: None,
        },
    ));
    for _ in 0..views {
        let t = rng.gen_range(start..=end);
        out.push((t, Body::engagement(EngagementKind::PageView)));
    }
}

/// Simulates retail customer `idx` (see the crate docs), appending its `(ts, body)` records to
/// `out` (cleared first).
pub(crate) fn simulate_customer(
    cfg: &GenConfig,
    idx: usize,
    id: String,
    out: &mut Vec<(u32, Body)>,
) -> Label {
    out.clear();
    let days = cfg.days.min(MAX_DAYS);
    let mut rng = StdRng::seed_from_u64(mix(cfg.seed ^ mix(idx as u64) ^ RETAIL_SALT));
    // Distribution parameters are constants inside their valid ranges.
    let lambda_d = Gamma::new(BG_R, 1.0 / BG_ALPHA).expect("valid Gamma");
    let p_d = Beta::new(BG_A, BG_B).expect("valid Beta");
    let nu_d = Gamma::new(GG_Q, 1.0 / GG_GAMMA).expect("valid Gamma");
    let lambda = lambda_d.sample(&mut rng).clamp(1e-9, LAMBDA_MAX);
    let p: f64 = p_d.sample(&mut rng).clamp(1e-9, 1.0 - 1e-9);
    let nu = nu_d.sample(&mut rng).max(1e-6);
    let order_d = Gamma::new(GG_P, 1.0 / nu).expect("valid Gamma");
    let per_year = lambda * 365.0;
    let tier = if per_year < 2.0 {
        "light"
    } else if per_year < 8.0 {
        "regular"
    } else {
        "heavy"
    };
    let mut label = Label {
        customer_id: id,
        churned: false,
        churn_at: None,
        cause: "none".to_owned(),
        segment_hint: format!("retail-{tier}"),
        p_alive_end: None,
    };
    if days == 0 {
        return label;
    }

    let mut orders = 0u32;
    let mut purchase = |rng: &mut StdRng, out: &mut Vec<(u32, Body)>, t: u32| {
        let gross = order_d.sample(rng).clamp(ORDER_MIN_EUR, ORDER_MAX_EUR);
        let gross_cents = cents(gross);
        let discount_cents = if chance(rng, P_DISCOUNT) {
            let f: f64 = rng.gen_range(0.05..0.30);
            Some(cents(f * f64::from(gross_cents) / 100.0)).filter(|d| *d > 0)
        } else {
            None
        };
        let items = 1 + poisson(rng, f64::from(gross_cents) / 4_000.0).min(49);
        let amount_cents = gross_cents - discount_cents.unwrap_or(0).min(gross_cents);
        let views = poisson(rng, PAGE_VIEWS_BUY);
        visit(rng, out, t, views, P_LOGIN_AT_CHECKOUT);
        out.push((
            t,
            Body::Purchase {
                order: orders,
                amount_cents,
                discount_cents,
                items: items as u16,
            },
        ));
        orders += 1;
    };

    // Acquisition: the first purchase, on a uniformly random day at a diurnal time.
    let first_day = rng.gen_range(0..days);
    let t0 = first_day * DAY + diurnal_second(&mut rng);
    purchase(&mut rng, out, t0);

    // Repeat purchases from the next day on; a coin with probability p after each one.
    let mut repeats = 0u32;
    let mut last = t0;
    let mut death: Option<u32> = None;
    let mut times: Vec<u32> = Vec::new();
    for day in first_day + 1..days {
        let day_start = day * DAY;
        times.clear();
        for _ in 0..poisson(&mut rng, lambda) {
            times.push(day_start + diurnal_second(&mut rng));
        }
        times.sort_unstable();
        for &t in &times {
            purchase(&mut rng, out, t);
            repeats += 1;
            last = t;
            if chance(&mut rng, p) {
                death = Some(t);
                break;
            }
        }
        for _ in 0..poisson(&mut rng, BROWSE_PER_PURCHASE * lambda) {
            let t = day_start + diurnal_second(&mut rng);
            let views = 1 + poisson(&mut rng, PAGE_VIEWS_BROWSE);
            if death.is_none_or(|d| t < d) {
                visit(&mut rng, out, t, views, P_LOGIN_AT_CHECKOUT / 2.0);
            }
        }
        if death.is_some() {
            break;
        }
    }
    // Posterior P(alive | λ, p, purchases) at the end of the period — what an oracle knowing the
    // hidden λ and p, but not the coins, would say. With x ≥ 1 repeat purchases, the last one at
    // `last`: alive means x survived coins and no purchase in the exposure E after `last`; dead,
    // x − 1 survived coins and the dropout coin. P = 1 / (1 + p / (1 − p) · e^{λ·E}). With no
    // repeat purchase nobody can have dropped out (P = 1).
    label.p_alive_end = Some(if repeats == 0 {
        1.0
    } else {
        let last_day = last / DAY;
        let exposure = day_mass_after(last % DAY) + f64::from(days - last_day - 1);
        1.0 / (1.0 + p / (1.0 - p) * (lambda * exposure).exp())
    });
    if let Some(d) = death {
        label.churned = true;
        label.churn_at = Some(cfg.start + Duration::seconds(i64::from(d)));
        label.cause = "dropout".to_owned();
    }
    label
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_mass_after_runs_from_one_to_zero() {
        assert!((day_mass_after(0) - 1.0).abs() < 1e-12);
        assert!(day_mass_after(DAY - 1) < 1e-3);
        let total: u32 = HOUR_WEIGHTS.iter().sum();
        let noon = f64::from(HOUR_WEIGHTS[12..].iter().sum::<u32>()) / f64::from(total);
        assert!((day_mass_after(12 * 3600) - noon).abs() < 1e-12);
    }
}
