//! The social profile ([`Profile::Social`](crate::Profile::Social)): a subscription social
//! network with contractual churn whose hazard depends on *ratios* of the customer's own recent
//! actions. The process is described in the crate docs, "Hidden social process"; the constants
//! below are the ones named there.

use chrono::Duration;
use churn_events::{EngagementKind, SubscriptionAction};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::Exp1;

use crate::{
    chance, diurnal_second, mix, normal, poisson, Body, GenConfig, Label, DAY, FEATURES, MAX_DAYS,
    PLANS,
};

/// Salt of the social profile's per-customer seeds.
const SOCIAL_SALT: u64 = 0x534f_4349_414c_0001;

/// The eight user actions, emitted as `feature_use` engagement with `feature` set to the name.
pub(crate) const ACTIONS: [&str; 8] = [
    "post",
    "like",
    "message",
    "reply",
    "new_friend",
    "unfriend",
    "dislike",
    "ad_view",
];
const POST: usize = 0;
const LIKE: usize = 1;
const MESSAGE: usize = 2;
const REPLY: usize = 3;
const NEW_FRIEND: usize = 4;
const UNFRIEND: usize = 5;
const DISLIKE: usize = 6;
const AD_VIEW: usize = 7;

/// Index of the first action in the engagement feature table (after the default profile's
/// `FEATURES`), so the default output does not change.
pub(crate) const FEATURE_BASE: usize = FEATURES.len();
/// Plan index of the `social` plan (after the default profile's `PLANS`).
pub(crate) const PLAN_INDEX: u8 = PLANS.len() as u8;
pub(crate) const PLAN_NAME: &str = "social";
/// MRR of the only plan: 9.99 EUR.
pub(crate) const MRR_CENTS: u32 = 999;
/// Subscriptions renew every `RENEW_DAYS` days at the signup time of day.
const RENEW_DAYS: u32 = 30;

/// Share of the customers that exist when the period starts; the others sign up at a uniformly
/// random second of the period.
const P_EXISTING: f64 = 0.6;
/// Existing customers signed up 7 + Exp(mean `TENURE_MEAN_DAYS`) days before the period; that
/// history (at most `BURN_IN_MAX_DAYS` of it) is simulated without output, and a customer who
/// churns in it is replaced by a fresh draw, so the population at the start is one of survivors.
const TENURE_MEAN_DAYS: f64 = 240.0;
const BURN_IN_MAX_DAYS: u32 = 365;
const MAX_REDRAWS: u32 = 50;

/// Action rates per active day: log-normal, median `RATE_MEDIAN`, log-σ `RATE_SIGMA`.
const RATE_MEDIAN: [f64; 8] = [0.7, 2.0, 1.0, 0.7, 0.5, 0.15, 0.6, 1.2];
const RATE_SIGMA: [f64; 8] = [0.8, 0.8, 0.9, 0.9, 0.6, 0.6, 0.7, 0.5];
/// The standard-normal z of each log-rate is `LOAD_GENERAL·g + LOAD_GROUP·f_group + rest·e`
/// (g: general activity; groups 0 = content: post, like, dislike; 1 = conversation and network:
/// message, reply, new_friend, unfriend; ad_view has no group), clamped to ±3.
const LOAD_GENERAL: [f64; 8] = [0.6, 0.6, 0.6, 0.6, 0.5, 0.4, 0.5, 0.4];
const GROUP: [usize; 8] = [0, 0, 1, 1, 1, 1, 0, 0];
const LOAD_GROUP: [f64; 8] = [0.5, 0.5, 0.5, 0.5, 0.4, 0.3, 0.4, 0.0];
/// A day is active (a `login`, then the day's actions) with probability
/// logistic(`ACTIVE_LOGIT` + `ACTIVE_SIGMA`·(0.6·g + 0.8·e)).
const ACTIVE_LOGIT: f64 = 0.6;
const ACTIVE_SIGMA: f64 = 1.0;
/// The day's actions follow the login within `SPAN_S` seconds (uniformly, same day).
const SPAN_S: u32 = 3 * 3600;

/// Mood μ: Ornstein-Uhlenbeck, μ ← μ − `MOOD_REVERT`·μ + `MOOD_NOISE`·N(0, 1) a day (stationary
/// σ ≈ 0.32). like, reply, new_friend × e^(`MOOD_GOOD`·μ); dislike, unfriend × e^(−`MOOD_BAD`·μ).
const MOOD_REVERT: f64 = 0.05;
const MOOD_NOISE: f64 = 0.1;
const MOOD_GOOD: f64 = 0.5;
const MOOD_BAD: f64 = 0.5;

/// Souring episodes start with probability `H_SOUR` a day (none running). Intensity π ramps
/// linearly 0 → 1 over `SOUR_RAMP` days, stays 1 for `SOUR_PLATEAU` days, then falls back to 0
/// over `SOUR_RECOVERY_DAYS`. Peak factor F ~ U(`SOUR_PEAK`).
const H_SOUR: f64 = 0.004;
const SOUR_RAMP: (u32, u32) = (14, 42);
const SOUR_PLATEAU: (u32, u32) = (7, 35);
const SOUR_RECOVERY_DAYS: u32 = 14;
const SOUR_PEAK: (f64, f64) = (1.5, 4.0);
/// While souring, the active-day probability × (1 − `SOUR_ACTIVITY`·π).
const SOUR_ACTIVITY: f64 = 0.25;

/// Recent behaviour: exponentially weighted sums of the daily action counts, time constant
/// `EW_DAYS` (E ← e^(−1/EW_DAYS)·E + today's count).
const EW_DAYS: f64 = 14.0;
/// Ratios are (E_x + `PRIOR`·ref) / (E_y + `PRIOR`): a reference value with no data.
const PRIOR: f64 = 1.0;
/// Reference ratios: the ratio of the median rates.
const REF_LIKE_POST: f64 = RATE_MEDIAN[LIKE] / RATE_MEDIAN[POST];
const REF_REPLY_MESSAGE: f64 = RATE_MEDIAN[REPLY] / RATE_MEDIAN[MESSAGE];
const REF_UNFRIEND_FRIEND: f64 = RATE_MEDIAN[UNFRIEND] / RATE_MEDIAN[NEW_FRIEND];
const REF_DISLIKE_LIKE: f64 = RATE_MEDIAN[DISLIKE] / RATE_MEDIAN[LIKE];
const REF_AD_POST: f64 = RATE_MEDIAN[AD_VIEW] / RATE_MEDIAN[POST];
/// Weights of the satisfaction terms. A "good" ratio (likes per post, replies per message)
/// costs `W·(1 − r/ref)` when below its reference and nothing above it (diminishing returns); a
/// "bad" ratio (unfriends per new friend, dislikes per like, ad views per post) costs
/// `W·min(r/ref − BAD_FROM, BAD_CAP)` when above `BAD_FROM` times its reference and nothing
/// below it (tolerated up to a point).
const W_LIKE_POST: f64 = 2.0;
const W_REPLY_MESSAGE: f64 = 2.0;
const W_UNFRIEND_FRIEND: f64 = 1.2;
const W_DISLIKE_LIKE: f64 = 2.0;
const W_AD_POST: f64 = 2.0;
const BAD_FROM: f64 = 2.0;
const BAD_CAP: f64 = 3.0;
/// Daily cancel hazard `H_DISSATISFIED`·e^(−s) (at most `H_MAX`), plus `H_RANDOM`.
const H_DISSATISFIED: f64 = 0.00005;
const H_MAX: f64 = 0.5;
const H_RANDOM: f64 = 0.00015;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Souring {
    /// ad_view × (1 + (F − 1)·π): the feed fills with ads.
    AdFatigue,
    /// dislike and unfriend × (1 + (F − 1)·π): fights, disagreeable content.
    Conflict,
    /// like, reply, new_friend ÷ (1 + (F − 1)·π): the network goes quiet.
    Fading,
}

#[derive(Debug, Clone, Copy)]
struct Episode {
    kind: Souring,
    age: u32,
    ramp: u32,
    plateau: u32,
    peak: f64,
}

impl Episode {
    fn intensity(&self) -> f64 {
        let a = f64::from(self.age);
        if self.age < self.ramp {
            a / f64::from(self.ramp)
        } else if self.age < self.ramp + self.plateau {
            1.0
        } else {
            let r = f64::from(self.age - self.ramp - self.plateau);
            (1.0 - r / f64::from(SOUR_RECOVERY_DAYS)).max(0.0)
        }
    }

    fn over(&self) -> bool {
        self.age >= self.ramp + self.plateau + SOUR_RECOVERY_DAYS
    }
}

/// Satisfaction (≤ 0) from the recent (exponentially weighted) action counts `e`: rises with
/// likes per post and replies per message up to their references, falls with unfriends per new
/// friend, dislikes per like and ad views per post beyond `BAD_FROM` times theirs. Every term
/// reads a ratio, so the score does not depend on the activity level, nor on any single count;
/// and the terms are piecewise linear in the ratios, not in the logarithms of the counts.
pub(crate) fn satisfaction(e: &[f64; 8]) -> f64 {
    let ratio = |x: usize, y: usize, reference: f64| {
        (e[x] + PRIOR * reference) / (e[y] + PRIOR) / reference
    };
    let good = |w: f64, r: f64| -w * (1.0 - r).max(0.0);
    let bad = |w: f64, r: f64| -w * (r - BAD_FROM).clamp(0.0, BAD_CAP);
    good(W_LIKE_POST, ratio(LIKE, POST, REF_LIKE_POST))
        + good(W_REPLY_MESSAGE, ratio(REPLY, MESSAGE, REF_REPLY_MESSAGE))
        + bad(
            W_UNFRIEND_FRIEND,
            ratio(UNFRIEND, NEW_FRIEND, REF_UNFRIEND_FRIEND),
        )
        + bad(W_DISLIKE_LIKE, ratio(DISLIKE, LIKE, REF_DISLIKE_LIKE))
        + bad(W_AD_POST, ratio(AD_VIEW, POST, REF_AD_POST))
}

/// Daily hazard of a dissatisfied cancel given the recent counts.
pub(crate) fn hazard(e: &[f64; 8]) -> f64 {
    (H_DISSATISFIED * (-satisfaction(e)).exp()).min(H_MAX)
}

/// Why a customer left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    Dissatisfied,
    Random,
}

impl Cause {
    fn as_str(self) -> &'static str {
        match self {
            Cause::Dissatisfied => "dissatisfied",
            Cause::Random => "random",
        }
    }
}

/// One customer's simulation state.
struct Social<'b> {
    rng: StdRng,
    out: &'b mut Vec<(u32, Body)>,
    rate: [f64; 8],
    p_active: f64,
    ew: [f64; 8],
    mood: f64,
    episode: Option<Episode>,
}

impl Social<'_> {
    /// Today's rate multipliers and activity factor (mood and souring).
    fn multipliers(&self) -> ([f64; 8], f64) {
        let mut m = [1.0; 8];
        let good = (MOOD_GOOD * self.mood).exp();
        let bad = (-MOOD_BAD * self.mood).exp();
        for k in [LIKE, REPLY, NEW_FRIEND] {
            m[k] = good;
        }
        for k in [DISLIKE, UNFRIEND] {
            m[k] = bad;
        }
        let mut act = 1.0;
        if let Some(ep) = self.episode {
            let pi = ep.intensity();
            let f = 1.0 + (ep.peak - 1.0) * pi;
            match ep.kind {
                Souring::AdFatigue => m[AD_VIEW] *= f,
                Souring::Conflict => {
                    m[DISLIKE] *= f;
                    m[UNFRIEND] *= f;
                }
                Souring::Fading => {
                    for k in [LIKE, REPLY, NEW_FRIEND] {
                        m[k] /= f;
                    }
                }
            }
            act = 1.0 - SOUR_ACTIVITY * pi;
        }
        (m, act)
    }

    /// One day of behaviour. `window` = `(day_start, lo, hi)` emits the events inside
    /// `[lo, hi)`; `None` (history before the period) only counts them. The signup day is
    /// always active, with the login right after signing up (at `lo`). Updates the recent
    /// counts with what was done (emitted, inside the period).
    fn live(&mut self, window: Option<(u32, u32, u32)>, signup: bool) {
        let (mult, act) = self.multipliers();
        let mut counts = [0u32; 8];
        if signup || chance(&mut self.rng, self.p_active * act) {
            let (day_start, lo, hi) = window.unwrap_or((0, 0, DAY));
            let t0 = if signup {
                lo + self.rng.gen_range(0..600)
            } else {
                day_start + diurnal_second(&mut self.rng)
            };
            let in_window = |t: u32| t >= lo && t < hi;
            let emit = window.is_some();
            if emit && in_window(t0) {
                self.out.push((t0, Body::engagement(EngagementKind::Login)));
            }
            let span = (day_start + DAY - 1).saturating_sub(t0).min(SPAN_S);
            for (k, count) in counts.iter_mut().enumerate() {
                for _ in 0..poisson(&mut self.rng, self.rate[k] * mult[k]) {
                    let t = t0 + self.rng.gen_range(0..=span);
                    if !in_window(t) {
                        continue;
                    }
                    *count += 1;
                    if emit {
                        self.out.push((
                            t,
                            Body::Engagement {
                                kind: EngagementKind::FeatureUse,
                                duration_ds: None,
                                feature: Some((FEATURE_BASE + k) as u8),
                            },
                        ));
                    }
                }
            }
        }
        let decay = (-1.0 / EW_DAYS).exp();
        for (e, c) in self.ew.iter_mut().zip(counts) {
            *e = decay * *e + f64::from(c);
        }
    }

    /// Slow dynamics at the end of a day: mood, souring episodes.
    fn evolve(&mut self) {
        self.mood += -MOOD_REVERT * self.mood + MOOD_NOISE * normal(&mut self.rng);
        match &mut self.episode {
            Some(ep) => {
                ep.age += 1;
                if ep.over() {
                    self.episode = None;
                }
            }
            None => {
                if chance(&mut self.rng, H_SOUR) {
                    let kind = match self.rng.gen_range(0..3) {
                        0 => Souring::AdFatigue,
                        1 => Souring::Conflict,
                        _ => Souring::Fading,
                    };
                    self.episode = Some(Episode {
                        kind,
                        age: 0,
                        ramp: self.rng.gen_range(SOUR_RAMP.0..=SOUR_RAMP.1),
                        plateau: self.rng.gen_range(SOUR_PLATEAU.0..=SOUR_PLATEAU.1),
                        peak: self.rng.gen_range(SOUR_PEAK.0..SOUR_PEAK.1),
                    });
                }
            }
        }
    }

    /// The churn draw of a day (not the signup day).
    fn churn_today(&mut self) -> Option<Cause> {
        let u: f64 = self.rng.gen();
        if u < H_RANDOM {
            Some(Cause::Random)
        } else if u < H_RANDOM + hazard(&self.ew) {
            Some(Cause::Dissatisfied)
        } else {
            None
        }
    }

    fn subscription(&mut self, t: u32, action: SubscriptionAction) {
        let mrr_cents = if action == SubscriptionAction::Cancel {
            0
        } else {
            MRR_CENTS
        };
        self.out.push((
            t,
            Body::Subscription {
                action,
                plan: PLAN_INDEX,
                mrr_cents,
            },
        ));
    }
}

/// Draws the action rates (per active day) and the active-day probability.
fn draw_traits(rng: &mut StdRng) -> ([f64; 8], f64) {
    let g = normal(rng);
    let groups = [normal(rng), normal(rng)];
    let mut rate = [0.0; 8];
    for k in 0..8 {
        let rest = (1.0 - LOAD_GENERAL[k].powi(2) - LOAD_GROUP[k].powi(2)).sqrt();
        let z = (LOAD_GENERAL[k] * g + LOAD_GROUP[k] * groups[GROUP[k]] + rest * normal(rng))
            .clamp(-3.0, 3.0);
        rate[k] = RATE_MEDIAN[k] * (RATE_SIGMA[k] * z).exp();
    }
    let x = ACTIVE_LOGIT + ACTIVE_SIGMA * (0.6 * g + 0.8 * normal(rng));
    (rate, 1.0 / (1.0 + (-x).exp()))
}

/// Simulates social customer `idx` (see the crate docs), appending its `(ts, body)` records to
/// `out` (cleared first).
pub(crate) fn simulate_customer(
    cfg: &GenConfig,
    idx: usize,
    id: String,
    out: &mut Vec<(u32, Body)>,
) -> Label {
    out.clear();
    let days = cfg.days.min(MAX_DAYS);
    let mut rng = StdRng::seed_from_u64(mix(cfg.seed ^ mix(idx as u64) ^ SOCIAL_SALT));
    let existing = chance(&mut rng, P_EXISTING);
    let (signup_ts, burn_in) = if existing {
        let e: f64 = rng.sample(Exp1);
        let tenure = (7.0 + TENURE_MEAN_DAYS * e).min(f64::from(BURN_IN_MAX_DAYS));
        (0, tenure as u32)
    } else {
        (rng.gen_range(0..days.max(1) * DAY), 0)
    };
    let signup_day = signup_ts / DAY;
    let renew_second = if existing {
        rng.gen_range(0..DAY)
    } else {
        signup_ts % DAY
    };

    // Traits; an existing customer lives its history before the period first and is replaced
    // by a fresh draw if it churned there (survivor population).
    let mut sim = Social {
        rng,
        out,
        rate: [0.0; 8],
        p_active: 0.0,
        ew: [0.0; 8],
        mood: 0.0,
        episode: None,
    };
    for attempt in 0..MAX_REDRAWS {
        let (rate, p_active) = draw_traits(&mut sim.rng);
        sim.rate = rate;
        sim.p_active = p_active;
        sim.ew = [0.0; 8];
        sim.mood = 0.0;
        sim.episode = None;
        let mut survived = true;
        for d in 0..burn_in {
            if d > 0 && sim.churn_today().is_some() {
                survived = false;
                break;
            }
            sim.live(None, d == 0);
            sim.evolve();
        }
        if survived || attempt + 1 == MAX_REDRAWS {
            break;
        }
    }
    let per_day = sim.p_active * (1.0 + sim.rate.iter().sum::<f64>());
    let tier = if per_day < 4.0 {
        "light"
    } else if per_day < 10.0 {
        "regular"
    } else {
        "heavy"
    };
    let mut label = Label {
        customer_id: id,
        churned: false,
        churn_at: None,
        cause: "none".to_owned(),
        segment_hint: format!("social-{tier}"),
        p_alive_end: None,
    };
    if days == 0 {
        return label;
    }

    // Next renewal: every RENEW_DAYS after signup (existing customers signed up `burn_in`
    // days before the period).
    let mut next_renew = if existing {
        (RENEW_DAYS - burn_in % RENEW_DAYS) % RENEW_DAYS
    } else {
        signup_day + RENEW_DAYS
    };
    for day in signup_day..days {
        let day_start = day * DAY;
        let signup = !existing && day == signup_day;
        let lo = if signup { signup_ts } else { day_start };
        let mut hi = day_start + DAY;
        let churn = if signup { None } else { sim.churn_today() };
        let churn_at = churn.map(|c| (sim.rng.gen_range(lo..hi), c));
        if let Some((tc, _)) = churn_at {
            hi = tc;
        }
        if signup {
            sim.subscription(signup_ts, SubscriptionAction::Start);
        }
        sim.live(Some((day_start, lo, hi)), signup);
        if day == next_renew {
            let t = day_start + renew_second;
            if t < hi {
                sim.subscription(t, SubscriptionAction::Renew);
            }
            next_renew += RENEW_DAYS;
        }
        if let Some((tc, cause)) = churn_at {
            // Exactly at churn_at, the (exclusive) end of today's window: nothing follows.
            sim.subscription(tc, SubscriptionAction::Cancel);
            label.churned = true;
            label.churn_at = Some(cfg.start + Duration::seconds(i64::from(tc)));
            label.cause = cause.as_str().to_owned();
            break;
        }
        sim.evolve();
    }
    label
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Equilibrium recent counts of a customer with the given per-day rates.
    fn steady(rate: [f64; 8]) -> [f64; 8] {
        let k = 1.0 / (1.0 - (-1.0 / EW_DAYS).exp());
        rate.map(|r| r * k)
    }

    #[test]
    fn satisfaction_is_scale_free_and_moves_with_the_ratios() {
        let base = steady(RATE_MEDIAN);
        let h0 = hazard(&base);
        // At the reference ratios nothing is wrong: the base hazard.
        assert!(satisfaction(&base).abs() < 0.05, "{}", satisfaction(&base));
        // More activity with the same ratios changes nothing.
        let busy = steady(RATE_MEDIAN.map(|r| 2.0 * r));
        assert!((satisfaction(&busy) - satisfaction(&base)).abs() < 0.05);
        let with = |changes: &[(usize, f64)]| {
            let mut e = base;
            for &(k, f) in changes {
                e[k] *= f;
            }
            hazard(&e)
        };
        // Three times the dislikes is bad, unless the likes tripled too: the same dislike
        // count, a different ratio.
        assert!(with(&[(DISLIKE, 3.0)]) > 5.0 * h0);
        assert!(with(&[(DISLIKE, 3.0), (LIKE, 3.0)]) < 1.1 * h0);
        // A bad ratio is tolerated up to BAD_FROM times its reference.
        assert!(with(&[(DISLIKE, 1.5), (UNFRIEND, 1.5), (AD_VIEW, 1.5)]) < 1.1 * h0);
        // Fewer likes per post (and so more dislikes per like) is bad; more is no bonus.
        assert!(with(&[(LIKE, 1.0 / 3.0)]) > 5.0 * h0);
        assert!(with(&[(LIKE, 2.0), (DISLIKE, 2.0)]) < 1.1 * h0);
        assert!(with(&[(REPLY, 0.5)]) > 2.0 * h0);
        // Ad load per post, unfriends per new friend.
        assert!(with(&[(AD_VIEW, 3.0)]) > 5.0 * h0);
        assert!(with(&[(AD_VIEW, 3.0), (POST, 3.0), (LIKE, 3.0), (DISLIKE, 3.0)]) < 1.1 * h0);
        assert!(with(&[(UNFRIEND, 3.0)]) > 2.0 * h0);
        assert!(with(&[(UNFRIEND, 3.0), (NEW_FRIEND, 3.0)]) < 1.1 * h0);
        assert!(with(&[(DISLIKE, 100.0), (AD_VIEW, 100.0)]) <= H_MAX);
    }

    #[test]
    fn episodes_ramp_hold_and_recover() {
        let mut ep = Episode {
            kind: Souring::Conflict,
            age: 0,
            ramp: 10,
            plateau: 5,
            peak: 3.0,
        };
        assert_eq!(ep.intensity(), 0.0);
        ep.age = 5;
        assert!((ep.intensity() - 0.5).abs() < 1e-12);
        ep.age = 12;
        assert_eq!(ep.intensity(), 1.0);
        ep.age = 15 + SOUR_RECOVERY_DAYS / 2;
        assert!((ep.intensity() - 0.5).abs() < 1e-12);
        assert!(!ep.over());
        ep.age = 15 + SOUR_RECOVERY_DAYS;
        assert!(ep.over());
    }
}
