//! Synthetic customer population and event generator with a documented hidden churn process.
//!
//! [`generate`] simulates a population of customers day by day and returns every event they
//! produce (purchases, engagement, NPS feedback, subscription changes — the four input topics of
//! [`churn_events`]) together with the ground-truth [`Label`] of each customer. The labels come
//! from the simulation itself, never from the events, so a model trained on the events can be
//! scored against the truth.
//!
//! Four hidden processes exist, chosen by [`GenConfig::profile`]: [`Profile::Default`] (below,
//! "Hidden churn process": subscriptions, engagement, NPS, churn after a visible disengagement
//! phase), [`Profile::LowChurn`] (the same process at a low base rate and with weaker signals:
//! every warned cause's hazard × [`LOW_CHURN_HAZARD_SCALE`], churn without warning ×
//! [`LOW_CHURN_RANDOM_SCALE`], activity in a disengagement phase decaying only to
//! [`LOW_CHURN_M_END`] of normal; about 2 % of the customers leave per month, a third of them
//! without any phase),
//! [`Profile::Retail`] ("Hidden retail process": a non-contractual shop where customers drop out
//! unobserved, the textbook BG/NBD setting) and [`Profile::Social`] ("Hidden social process": a
//! subscription social network whose cancel hazard reads ratios of the customer's recent actions).
//!
//! The output is deterministic: the same [`GenConfig`] gives byte-identical events and labels.
//! Every customer draws from its own `StdRng` seeded from `(seed, customer index)`, so adding
//! customers does not change the existing ones.
//!
//! # Hidden churn process
//!
//! The numbers below are the exact constants of `crates/churn-gen/src/lib.rs` (`H_*`, `P_*`, …).
//! Day `d` means `[start + d days, start + d + 1 days)`.
//!
//! 1. **Population.** Customer `i` is `cust-{i:06}`. 65 % exist when the period starts (their
//!    tenure at the start is 7 + Exp(mean 320) days, capped at 1800); the other 35 % sign up at a
//!    uniformly random moment of the period. 70 % hold a subscription — plan basic / pro /
//!    enterprise with probability 55 / 35 / 10 % and MRR 19 / 49 / 199 EUR — the other 30 % are
//!    pay-as-you-go (no subscription events ever).
//! 2. **Latent traits** (drawn once, never emitted): visit rate (log-normal, median 0.3 visits
//!    per day, σ = 0.75, floored at `1.5 / churn_inactivity_days` so a healthy customer is rarely
//!    silent for a whole churn window); purchase rate (log-normal, median 0.035 per day, σ = 0.8,
//!    ×1.6 for pay-as-you-go); spend level (log-normal order value, median 40 EUR, σ = 0.6, ×2 for
//!    enterprise); price sensitivity `p` ~ Beta(2, 5); feature adoption `a` ~ U(0, 1) (enterprise:
//!    max of two draws); e-mail affinity ~ U(0.1, 0.5); base satisfaction `s₀` ~ N(0, 1).
//! 3. **Satisfaction** `s` starts at `s₀`, mean-reverts to `s₀` (3 % per day) with daily noise
//!    N(0, 0.08²), drops by 0.25 with each complaint, sinks by 0.02 per day while disengaging and
//!    jumps by 0.6 when a disengaging customer recovers.
//! 4. **Activity multiplier** `m`: 1 normally. When a customer starts *disengaging* (step 7), `m`
//!    decays exponentially to `m_end` ~ U(0.04, 0.15) over the disengagement phase; a recovering
//!    customer ramps back linearly to 1 over 10 days. Every behaviour below is scaled by `m`.
//! 5. **Events per day** (times follow a European diurnal profile, UTC, whole seconds):
//!    - visits ~ Poisson(visit rate × m). Each visit: `login` (p = 0.9), a `session` (p = 0.8)
//!      with `duration_s` (log-normal, median 240 s, shrinking with `m`), Poisson(0.7)
//!      `page_view`s during the session and, with probability 0.15 + 0.6·a, 1 + Poisson(0.6·a)
//!      `feature_use`s naming a feature the plan includes (`dashboard`, `reports`, `export`,
//!      `collaboration`, `integrations`, `automation`, `api`; broader use with higher adoption).
//!      A new customer visits right after signing up.
//!    - one marketing e-mail a week: `email_open` with probability affinity × (0.4 + 0.6·m), then
//!      `email_click` with probability 0.3.
//!    - purchases ~ Poisson(purchase rate × m): `order_id` `ord-…`, EUR amount with 2 decimals,
//!      `items` = 1 + Poisson(gross / 50); with probability 0.05 + 0.45·p a discount of 5–30 % of
//!      the gross value (`amount` is what was paid, `discount` what was taken off).
//!    - `support_ticket` with probability 0.004·e^(−0.5·s) per day (doubled for enterprise);
//!      `complaint` with probability 0.0012·e^(−1.1·s) per day (×1.5 while disengaging).
//!    - NPS: a survey every U(30, 60) days (the first 7–60 days after signup), answered with
//!      probability 0.55 × (0.5 + 0.5·m); score = round(7.3 + 1.7·s + N(0, 0.8²)) clamped to
//!      0–10, channel `email`/`in_app`/`sms`, a comment 25 % of the time.
//!    - subscriptions: `start` at signup (new subscribers only; existing customers started before
//!      the period), `renew` every 30 days at the signup time of day (existing customers: a random
//!      phase and time of day), `upgrade` with probability 0.0008 per day when `s > 0.3` and the
//!      visit rate is at least median (× visit rate / median, at most ×3), `downgrade` with
//!      probability 0.0005·(1 + 3p)·(1 + max(0, −s)) per day, ×6 while disengaging. `mrr` is the
//!      plan's MRR after the change.
//! 6. **Hazard.** From the day after signup, a customer in the normal state starts disengaging with
//!    a daily probability that is the sum of competing causes; the cause that fires becomes the
//!    label's `cause` (chosen proportionally to the components):
//!    - `disengaged`: 0.0014 × (1 + 1.5·e^(−tenure/60)) × clamp(√(0.3 / visit rate), 0.5, 3) ×
//!      (1.3 − 0.6·a) — new, light and low-adoption customers drift away;
//!    - `detractor`: 0.003 + 0.0013·(6 − score) while the latest NPS answer (≤ 120 days old) is
//!      a detractor score 0–6;
//!    - `downgrade`: 0.012 × e^(−days since the last downgrade / 45);
//!    - `complaints`: 0.01 × complaint load (each complaint adds 1, decaying with a 30-day time
//!      constant);
//!    - `price`: 0.0008·p² per day, 0.08·p² on a renewal day (subscribers) or 0.003·p² per day
//!      (pay-as-you-go).
//!
//!    Every component is multiplied by a structural binding factor of the *current* plan:
//!    pay-as-you-go 1.15, basic 1.0, pro 0.85, enterprise 0.6.
//!
//!    Separately, with probability 0.00008 per day a customer in the normal state churns *at
//!    random*, on the spot and without any warning sign (`cause` = `random`, a few % of
//!    churners).
//! 7. **Disengagement and churn.** A disengagement phase lasts U(7/15·N, 7/5·N) days with
//!    N = `churn_inactivity_days` (2–6 weeks for N = 30) while activity decays (step 4). 20 % of
//!    disengaging customers recover between 35 % and 75 % into the phase (warning signs, no churn);
//!    the others churn at a random second of the phase's last day: that moment is `churn_at`. A
//!    subscriber emits `cancel` (`mrr` 0) exactly at `churn_at`; nobody emits anything after
//!    `churn_at`. Customers also show warning signs without churning (detractor scores,
//!    complaints, downgrades that do not trigger the hazard, and recoveries).
//! 8. **Labels.** `churned` is true and `churn_at` set iff the customer churned inside the period;
//!    a phase still running at the end of the period is *not* a churn. `segment_hint` is the
//!    latent persona `{plan at signup or payg}-{light|regular|power}` (visit rate < 0.15, < 0.5,
//!    ≥ 0.5 per day).
//!
//! With the default config (2000 customers, 180 days, seed 42) 25.8 % of the customers churn
//! (≈ 350 000 events); with 20 000 customers 26.7 % (≈ 3.5 M events), about 3.5 % of the churners
//! at random.
//!
//! # Hidden retail process
//!
//! [`Profile::Retail`] is the BG/NBD model (Fader, Hardie & Lee 2005, "Counting your customers the
//! easy way") with Gamma-Gamma spend, simulated per day. The constants are those of
//! `crates/churn-gen/src/retail.rs`. `churn_inactivity_days` plays no part; use a long period
//! (`churnstream generate --profile retail` defaults to 730 days instead of 180).
//!
//! 1. **Population, cohorts.** Every customer is acquired inside the period, by a first purchase
//!    on a uniformly random day (so cohorts of every age; customers acquired late have little
//!    history), at a diurnal time of day (the default profile's `HOUR_WEIGHTS`). Nobody has a
//!    subscription; there is no NPS, no e-mail, no support traffic.
//! 2. **Latent traits** (never emitted): purchase rate λ ~ Gamma(shape `BG_R` = 0.35, rate
//!    `BG_ALPHA` = 30 days) per day, capped at `LAMBDA_MAX` = 2 (mean 0.0117 per day ≈ 4.3 per
//!    year, median ≈ 1.3 per year: many customers never come back); dropout probability p ~
//!    Beta(`BG_A` = 0.8, `BG_B` = 2.6) (mean 0.24); spend ν ~ Gamma(shape `GG_Q` = 3.5, rate
//!    `GG_GAMMA` = 15).
//! 3. **Purchases.** From the day after acquisition, while alive, Poisson(λ) purchases a day at
//!    diurnal times. After each *repeat* purchase (not after the first one, as in BG/NBD) the
//!    customer drops out for good with probability p. Each order's gross value is Gamma(shape
//!    `GG_P` = 6, rate ν) EUR clamped to [1, 5000] (`ORDER_MIN_EUR`, `ORDER_MAX_EUR`; a
//!    customer's mean order value is 6/ν, median over orders ≈ 26 EUR, 99th percentile ≈ 170 EUR);
//!    `P_DISCOUNT` = 12 % of orders get a discount of U(5, 30) % (`amount` is what was paid);
//!    `items` = 1 + Poisson(gross / 40 EUR). Order ids as in the default profile.
//! 4. **Browsing.** Every purchase ends a visit: a `session` (log-normal duration, median
//!    `RETAIL_SESSION_MEDIAN_S` = 300 s, σ = 0.7, 20 s – 2 h) that starts that long before the
//!    purchase, Poisson(`PAGE_VIEWS_BUY` = 3) `page_view`s inside it and, with probability
//!    `P_LOGIN_AT_CHECKOUT` = 0.6, a `login` at its start. While alive, a customer also makes
//!    Poisson(`BROWSE_PER_PURCHASE` · λ = 0.5 λ) browse-only visits a day (1 +
//!    Poisson(`PAGE_VIEWS_BROWSE` = 1.5) page views, login with probability 0.3). Browsing is
//!    proportional to the purchase rate and stops at dropout: it tells nothing the purchases do
//!    not, except by adding activity.
//! 5. **Dropout.** The dropout moment is the instant of the purchase after which the coin fell:
//!    nothing at all is emitted after it. Nobody emits anything that reveals it (no cancel, no
//!    warning phase): it can only be inferred from the silence.
//! 6. **Labels.** `churned` is true and `churn_at` = the dropout instant iff the customer dropped
//!    out inside the period; `cause` is `dropout` (else `none`); `segment_hint` is
//!    `retail-light|regular|heavy` (λ below 2, below 8, at least 8 purchases a year).
//!    `p_alive_end` is the true probability of being alive at the end of the period given the
//!    customer's hidden λ and p and its purchases — what an oracle that knows the parameters but
//!    not the coins would say: 1 with no repeat purchase, else 1 / (1 + p/(1 − p) · e^{λ·E}) with
//!    E the exposure (in days, the last day weighted by its remaining diurnal share) from the last
//!    purchase to the end. Its mean matches the share of customers alive (a test checks it).
//!    Note that an "inactivity" churn label (no event for N days) also counts the customers who
//!    are alive but buy rarely, which no model can tell apart from the dead.
//!
//! With 5000 customers over 730 days (seeds 1 and 2) 28 % of the customers drop out inside the
//! period and 44–46 % never buy a second time: ≈ 14 900 purchases and ≈ 102 000 events in all
//! (sessions, page views, logins, purchases). A BG/NBD fit (`lifetimes`) on these purchases
//! recovers r ≈ 0.37, α ≈ 33, a ≈ 0.73, b ≈ 2.3.
//!
//! # Hidden social process
//!
//! [`Profile::Social`] is a subscription social network with contractual churn, in the spirit of
//! the simulation in C. Gold, "Fighting Churn With Data" (2020): eight user actions with
//! correlated, heterogeneous rates, and a churn probability that depends on the customer's own
//! behaviour. Here the hazard reads *ratios* of recent actions, so the total activity says little
//! and the per-action counts less than the counts and their ratios. The constants are those of
//! `crates/churn-gen/src/social.rs`. `churn_inactivity_days` plays no part; `churnstream generate
//! --profile social` defaults to 365 days.
//!
//! 1. **Population.** 60 % of the customers (`P_EXISTING`) exist when the period starts: they
//!    signed up 7 + Exp(mean 240) days before it, and that history (at most 365 days) is
//!    simulated without output; a customer who churns in it is replaced by a fresh draw (at most
//!    50 times), so the customers at the start are survivors, not fresh sign-ups with the
//!    population's worst habits. They emit no `start`. The other 40 % sign up at a uniformly
//!    random second of the period with a `subscription` `start` (plan `social`, MRR 9.99 EUR) and
//!    are active on their signup day. Every subscriber renews every 30 days at the signup time of
//!    day (`renew`, MRR 9.99; existing customers in the phase of their signup).
//! 2. **Rates** (never emitted). Per active day, the eight actions `post`, `like`, `message`,
//!    `reply`, `new_friend`, `unfriend`, `dislike`, `ad_view` have log-normal rates with medians
//!    0.7, 2.0, 1.0, 0.7, 0.5, 0.15, 0.6, 1.2 and log-σ 0.8, 0.8, 0.9, 0.9, 0.6, 0.6, 0.7, 0.5.
//!    The log-rates are correlated through factors: z_k = a_k·g + b_k·f_group + rest·e_k (general
//!    activity g with loadings 0.6, 0.6, 0.6, 0.6, 0.5, 0.4, 0.5, 0.4; a content factor for post,
//!    like, dislike and a conversation-and-network factor for message, reply, new_friend,
//!    unfriend with loadings 0.5, 0.5, 0.5, 0.5, 0.4, 0.3, 0.4; ad_view has none), so people
//!    who post a lot also like and dislike a lot. A day is *active* with probability
//!    logistic(0.6 + 0.6·g + 0.8·N(0, 1)) (mean ≈ 0.62).
//! 3. **Events.** On an active day: one `login` (`engagement`) at a diurnal time, then
//!    Poisson(rate × multiplier) `feature_use` events per action with `feature` = the action's
//!    name, uniformly in the 3 hours after the login (same day). Nothing else (no sessions,
//!    purchases, NPS, e-mail). About 12 events per active customer-day.
//! 4. **Drift.** A mood μ (Ornstein-Uhlenbeck: μ ← 0.95·μ + 0.1·N(0, 1) a day, σ ≈ 0.32)
//!    multiplies like, reply, new_friend by e^(0.5·μ) and dislike, unfriend by e^(−0.5·μ).
//!    *Souring episodes* start with probability 0.004 a day (when none runs): their intensity π
//!    ramps linearly from 0 to 1 over U(14, 42) days, stays at 1 for U(7, 35) days and falls back
//!    to 0 over 14 days; with peak factor F ~ U(1.5, 4) and f = 1 + (F − 1)·π, one of three kinds
//!    (equally likely): *ad fatigue* (ad_view × f), *conflict* (dislike and unfriend × f) or
//!    *fading* (like, reply, new_friend ÷ f). Active days also become rarer (× (1 − 0.25·π)).
//!    The bad ratios thus rise for weeks before the hazard peaks: lead time.
//! 5. **Satisfaction** s ≤ 0 is read daily from the customer's recent behaviour: exponentially
//!    weighted sums E of the daily action counts (time constant 14 days), as ratios
//!    r = (E_x + ref) / (E_y + 1) / ref of their reference ref (the ratio of the median rates,
//!    so r = 1 with no data):
//!    s = −2·(1 − r_like/post)⁺ − 2·(1 − r_reply/message)⁺ − 1.2·c(r_unfriend/new_friend)
//!    − 2·c(r_dislike/like) − 2·c(r_ad_view/post), with c(r) = min((r − 2)⁺, 3). Likes per post
//!    (a proxy of likes received) and replies per message help up to their reference and not
//!    beyond; unfriends per new friend, dislikes per like and ad views per post are tolerated up
//!    to twice their reference, then hurt linearly. s does not change when all actions scale
//!    together, is not a function of any single count (three times the dislikes is bad, unless
//!    the likes tripled too), and is piecewise linear in the ratios, not in log counts.
//! 6. **Churn.** From the day after signup, a daily cancel hazard 0.00005·e^(−s) (at most 0.5;
//!    cause `dissatisfied`), plus 0.00015 a day at random (cause `random`, no warning). The
//!    cancel happens at a uniformly random second of that day: a `subscription` `cancel` with
//!    MRR 0 exactly at `churn_at`, after which the customer emits nothing (that day's events
//!    after it are dropped).
//! 7. **Labels.** `churned`, `churn_at` (the cancel instant) and `cause` (`dissatisfied`,
//!    `random` or `none`); `segment_hint` is `social-light|regular|heavy` by the expected events
//!    per day, p_active·(1 + Σ rates): below 4, below 10, at least 10.
//!
//! With 2000 customers over 365 days (seeds 42, 1, 2) 36.8–37.3 % of the customers churn, about
//! 10–12 % of them at random, evenly over the year (≈ 3.3–3.4 M events, 12.1–12.2 per active
//! customer-day). In 28-day snapshots (6000 customers, churn in the next 28 days, logistic
//! regression, held-out customers) the total of feature uses and logins reaches a test AUC of
//! ≈ 0.61, the eight log counts ≈ 0.77 and the counts plus the five ratios (x / (y + 1)) ≈ 0.80
//! (the ignored test `social_ratios_beat_counts_beat_totals`).

use std::io::{BufRead, Write};

use chrono::{DateTime, Duration, SecondsFormat, TimeZone, Utc};
use churn_events::{
    Engagement, EngagementKind, Event, Feedback, Payload, Purchase, Subscription,
    SubscriptionAction,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Exp1, StandardNormal};
use serde::{Deserialize, Serialize};

/// What to generate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GenConfig {
    /// Number of customers (`cust-000000` …).
    pub customers: usize,
    /// Length of the simulated period in days (capped at 40 000).
    pub days: u32,
    /// Seed of every random draw.
    pub seed: u64,
    /// First instant of the period; every event lies in `[start, start + days)`.
    pub start: DateTime<Utc>,
    /// N of the non-contractual churn definition ("no activity for N days"). Scales the
    /// disengagement phase (7/15·N to 7/5·N days) and the floor of the visit rate (default
    /// profile only).
    pub churn_inactivity_days: u32,
    /// The hidden process: [`Profile::Default`] (absent in older configs), [`Profile::Retail`],
    /// [`Profile::LowChurn`] or [`Profile::Social`].
    pub profile: Profile,
    /// Opt-in treatment effect (default and low_churn profiles): `None` simulates nobody being
    /// treated, as before.
    pub treatment: Option<TreatmentEffect>,
}

/// A simulated retention campaign, so that holdout measurement can be tested end to end
/// (`churnstream outcomes`): every customer outside the experiment's holdout group (the
/// pipeline's own assignment, [`churn_events::Experiment::is_holdout`]) is "treated", and a
/// treated customer whose disengagement phase would end in churn recovers instead with
/// probability `recover_probability`, between 80 % and 95 % into the phase — late, so that an
/// at-risk alert during the decline comes first, as a real campaign acts after its alert. The
/// draw uses its own random stream: holdout customers, and everything before a recovery, are
/// exactly what the same seed gives without the effect. The simulated lift is therefore
/// `recover_probability` of the would-be churners among the alerted; what `outcomes` measures
/// is lower by the alerts that come after the churn (a late alert is not treatable).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TreatmentEffect {
    /// Probability (0–1) that a treated would-be churner recovers.
    pub recover_probability: f64,
    /// The holdout experiment (`alerts.holdout_share`, `alerts.holdout_salt`).
    pub experiment: churn_events::Experiment,
}

/// Which hidden process [`generate`] simulates (crate docs: "Hidden churn process", "Hidden
/// retail process" and "Hidden social process").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// Subscriptions and pay-as-you-go, engagement, NPS; churn through a disengagement phase.
    #[default]
    Default,
    /// Non-contractual shop (BG/NBD purchasing, Gamma-Gamma spend, browsing sessions): customers
    /// drop out unobserved right after a purchase.
    Retail,
    /// The default process at a low base rate (≈ 2 % of customers per month) with weaker
    /// signals: the hazards of the five warned causes × [`LOW_CHURN_HAZARD_SCALE`], random churn
    /// without warning × [`LOW_CHURN_RANDOM_SCALE`] (about a third of the churners), and a
    /// disengagement phase whose activity decays only to [`LOW_CHURN_M_END`] of normal. Harder
    /// than the default.
    LowChurn,
    /// Subscription social network (crate docs, "Hidden social process"), after the simulation
    /// in Gold's "Fighting Churn With Data": a `social` plan at 9.99 EUR that renews every 30
    /// days; on active days a `login` and Poisson counts of eight actions emitted as
    /// `feature_use` with `feature` = `post`, `like`, `message`, `reply`, `new_friend`,
    /// `unfriend`, `dislike` or `ad_view` (heterogeneous, correlated log-normal rates). The daily
    /// cancel hazard 0.00005·e^(−s) reads a satisfaction s ≤ 0 of the last weeks' *ratios*
    /// (likes per post and replies per message below their reference; unfriends per new friend,
    /// dislikes per like, ad views per post above twice theirs), which drift in souring episodes
    /// that build up over weeks; plus 0.00015 a day at random. A `cancel` (MRR 0) ends the
    /// customer's events; `cause` is `dissatisfied` or `random`. About 37 % churn in 365 days.
    Social,
}

/// [`Profile::LowChurn`]: factor on the daily hazard of every cause that starts a
/// disengagement phase (disengagement, detractor, downgrade, complaints, price).
pub const LOW_CHURN_HAZARD_SCALE: f64 = 0.2;
/// [`Profile::LowChurn`]: factor on the daily hazard of random churn without warning
/// (`H_RANDOM`).
pub const LOW_CHURN_RANDOM_SCALE: f64 = 4.0;
/// [`Profile::LowChurn`]: range of `m_end`, the activity multiplier reached at the end of a
/// disengagement phase (default profile: 0.04–0.15).
pub const LOW_CHURN_M_END: (f64, f64) = (0.25, 0.6);

impl Profile {
    /// Every profile, in CLI order.
    pub const ALL: [Profile; 4] = [
        Profile::Default,
        Profile::Retail,
        Profile::LowChurn,
        Profile::Social,
    ];

    /// The CLI / config name: `default`, `retail`, `low_churn` or `social`.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Default => "default",
            Profile::Retail => "retail",
            Profile::LowChurn => "low_churn",
            Profile::Social => "social",
        }
    }
}

impl std::str::FromStr for Profile {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Profile::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                format!("unknown profile `{s}` (expected default, retail, low_churn or social)")
            })
    }
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            customers: 2000,
            days: 180,
            seed: 42,
            start: Utc
                .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
                .single()
                .unwrap_or_default(),
            churn_inactivity_days: 30,
            profile: Profile::Default,
            treatment: None,
        }
    }
}

impl GenConfig {
    /// First instant after the period.
    pub fn end(&self) -> DateTime<Utc> {
        self.start + Duration::days(i64::from(self.days.min(MAX_DAYS)))
    }
}

/// Ground truth of one customer, straight from the simulation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Label {
    pub customer_id: String,
    /// Churned inside the simulated period.
    pub churned: bool,
    /// When (the `cancel` instant for subscribers; the customer is silent afterwards).
    pub churn_at: Option<DateTime<Utc>>,
    /// `none`, `disengaged`, `detractor`, `downgrade`, `complaints`, `price` or `random`
    /// (retail profile: `none` or `dropout`; social profile: `none`, `dissatisfied` or
    /// `random`).
    pub cause: String,
    /// Latent persona, e.g. `pro-regular` or `payg-light` (retail: `retail-light|regular|heavy`,
    /// social: `social-light|regular|heavy`).
    pub segment_hint: String,
    /// Retail profile: the true probability that the customer is alive at the end of the period,
    /// given its hidden λ and p and its purchases (crate docs, retail step 6). `None` for the
    /// default profile; the labels CSV has the column only when some label has a value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_alive_end: Option<f64>,
}

/// Events of the whole population (sorted by `occurred_at`, ties by `event_id`) and one label
/// per customer (in customer order).
#[derive(Debug, Clone, PartialEq)]
pub struct Population {
    pub events: Vec<Event>,
    pub labels: Vec<Label>,
}

/// Errors of the readers; every variant names the 1-based line.
#[derive(Debug, thiserror::Error)]
pub enum GenError {
    #[error("line {line}: read failed: {source}")]
    Io {
        line: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("line {line}: invalid event JSON: {source}")]
    Json {
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("line {line}: invalid labels CSV: {message}")]
    Csv { line: usize, message: String },
}

// ---------------------------------------------------------------------------------------------
// Process constants (see the crate docs).

const DAY: u32 = 86_400;
const MAX_DAYS: u32 = 40_000;

const P_EXISTING: f64 = 0.65;
const TENURE_MEAN_DAYS: f64 = 320.0;
const P_SUBSCRIBED: f64 = 0.70;
const PLAN_WEIGHTS: [f64; 3] = [0.55, 0.35, 0.10];
const PLANS: [&str; 3] = ["basic", "pro", "enterprise"];
const PLAN_MRR_CENTS: [u32; 3] = [1_900, 4_900, 19_900];

const VISIT_MEDIAN: f64 = 0.3;
const VISIT_SIGMA: f64 = 0.75;
const PURCHASE_MEDIAN: f64 = 0.035;
const PURCHASE_SIGMA: f64 = 0.8;
const SPEND_MEDIAN: f64 = 40.0;
const SPEND_SIGMA: f64 = 0.6;

const P_LOGIN: f64 = 0.9;
const P_SESSION: f64 = 0.8;
const SESSION_MEDIAN_S: f64 = 240.0;
const PAGE_VIEWS_PER_VISIT: f64 = 0.7;
const P_EMAIL_CLICK: f64 = 0.3;

const H_DISENGAGED: f64 = 0.0014;
const H_DETRACTOR_BASE: f64 = 0.003;
const H_DETRACTOR_STEP: f64 = 0.0013;
const H_DOWNGRADE: f64 = 0.012;
const H_COMPLAINTS: f64 = 0.01;
const H_PRICE_DAILY: f64 = 0.0008;
const H_PRICE_RENEWAL: f64 = 0.08;
const H_PRICE_PAYG: f64 = 0.003;
const H_RANDOM: f64 = 0.00008;
/// Structural binding: hazard multiplier for pay-as-you-go, basic, pro, enterprise.
const STRUCTURAL: [f64; 4] = [1.15, 1.0, 0.85, 0.6];
const P_RECOVER: f64 = 0.20;
const RECOVERY_RAMP_DAYS: u32 = 10;

const FEATURES: [&str; 7] = [
    "dashboard",
    "reports",
    "export",
    "collaboration",
    "integrations",
    "automation",
    "api",
];
/// Features available to pay-as-you-go, basic, pro, enterprise.
const FEATURES_BY_TIER: [usize; 4] = [2, 3, 6, 7];
const CHANNELS: [&str; 3] = ["email", "in_app", "sms"];
const COMMENTS: [&str; 10] = [
    // detractor 0..4
    "too expensive for what it does",
    "support took days to answer",
    "missing features we need",
    "hard to use",
    // passive 4..7
    "does the job",
    "fine, but pricey",
    "ok, some rough edges",
    // promoter 7..10
    "love it",
    "great support team",
    "saves us hours every week",
];
/// Relative weight of each UTC hour (European customers).
const HOUR_WEIGHTS: [u32; 24] = [
    1, 1, 1, 1, 1, 2, 4, 7, 9, 10, 10, 9, 9, 9, 9, 9, 9, 9, 10, 11, 10, 8, 5, 2,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    Disengaged,
    Detractor,
    Downgrade,
    Complaints,
    Price,
    Random,
}

impl Cause {
    fn as_str(self) -> &'static str {
        match self {
            Cause::Disengaged => "disengaged",
            Cause::Detractor => "detractor",
            Cause::Downgrade => "downgrade",
            Cause::Complaints => "complaints",
            Cause::Price => "price",
            Cause::Random => "random",
        }
    }
}

/// Compact event record; turned into an [`Event`] only after the global sort.
#[derive(Debug, Clone, Copy)]
struct Rec {
    /// Seconds since `start`.
    ts: u32,
    cust: u32,
    /// Per-customer sequence number, chronological.
    seq: u32,
    body: Body,
}

#[derive(Debug, Clone, Copy)]
enum Body {
    Purchase {
        order: u32,
        amount_cents: u32,
        discount_cents: Option<u32>,
        items: u16,
    },
    Engagement {
        kind: EngagementKind,
        duration_ds: Option<u32>,
        feature: Option<u8>,
    },
    Feedback {
        score: u8,
        comment: Option<u8>,
        channel: u8,
    },
    Subscription {
        action: SubscriptionAction,
        plan: u8,
        mrr_cents: u32,
    },
}

impl Body {
    fn engagement(kind: EngagementKind) -> Body {
        Body::Engagement {
            kind,
            duration_ds: None,
            feature: None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Normal,
    Disengaging {
        since: u32,
        churn_day: u32,
        decay: f64,
        recover_day: Option<u32>,
        cause: Cause,
    },
    Recovering {
        since: u32,
        from: f64,
    },
}

/// SplitMix64 finaliser: decorrelates per-customer seeds.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn chance(rng: &mut StdRng, p: f64) -> bool {
    rng.gen::<f64>() < p
}

fn normal(rng: &mut StdRng) -> f64 {
    rng.sample(StandardNormal)
}

/// Poisson draw (Knuth for small means, normal approximation above 30).
fn poisson(rng: &mut StdRng, lambda: f64) -> u32 {
    if lambda <= 0.0 || !lambda.is_finite() {
        return 0;
    }
    if lambda > 30.0 {
        let x = lambda + lambda.sqrt() * normal(rng);
        return x.round().clamp(0.0, f64::from(u32::MAX)) as u32;
    }
    let limit = (-lambda).exp();
    let mut k = 0u32;
    let mut p = rng.gen::<f64>();
    while p > limit {
        k += 1;
        p *= rng.gen::<f64>();
    }
    k
}

/// A random second of a day (0..86 400), following the diurnal profile `HOUR_WEIGHTS` (the hour
/// by weight, then a uniform second in it).
fn diurnal_second(rng: &mut StdRng) -> u32 {
    let total: u32 = HOUR_WEIGHTS.iter().sum();
    let mut x = rng.gen_range(0..total);
    let mut hour = 0u32;
    for (h, w) in HOUR_WEIGHTS.iter().enumerate() {
        if x < *w {
            hour = h as u32;
            break;
        }
        x -= w;
    }
    hour * 3600 + rng.gen_range(0..3600)
}

fn cents(x: f64) -> u32 {
    (x * 100.0).round().clamp(0.0, f64::from(u32::MAX)) as u32
}

fn digits(mut n: u64) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

/// Id width shared by customer ids, event ids and order ids, so ids sort like their numbers.
fn customer_width(customers: usize) -> usize {
    digits(customers.saturating_sub(1) as u64).max(6)
}

/// Appends `n` in decimal, zero-padded to `width` (no formatting machinery: this runs per event).
fn push_padded(out: &mut String, mut n: u64, width: usize) {
    let mut buf = [b'0'; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for _ in (buf.len() - i)..width {
        out.push('0');
    }
    for &b in &buf[i..] {
        out.push(char::from(b));
    }
}

fn customer_id(i: usize, width: usize) -> String {
    format!("cust-{i:0width$}")
}

/// One customer's simulation state.
struct Sim<'b> {
    rng: StdRng,
    out: &'b mut Vec<(u32, Body)>,
    /// Emission window of the current day.
    lo: u32,
    hi: u32,
    // Latent traits.
    visit_rate: f64,
    purchase_rate: f64,
    spend_median: f64,
    price_sens: f64,
    adoption: f64,
    email_affinity: f64,
    base_sat: f64,
    /// Index into `PLANS`; `None` = pay-as-you-go.
    plan: Option<u8>,
    // State.
    sat: f64,
    orders: u32,
    complaint_load: f64,
    last_nps: Option<(u8, u32)>,
    last_downgrade: Option<u32>,
    next_renew: u32,
    renew_second: u32,
    next_survey: u32,
    email_weekday: u32,
    phase: Phase,
    /// Factor on the warned causes' hazards: 1 for the default profile (exactly: `x · 1.0`
    /// is `x`, so the default output is unchanged), [`LOW_CHURN_HAZARD_SCALE`] for low_churn.
    hazard_scale: f64,
    /// Daily hazard of random churn: `H_RANDOM` (default), × [`LOW_CHURN_RANDOM_SCALE`].
    h_random: f64,
    /// Range of `m_end` (default: 0.04–0.15; [`LOW_CHURN_M_END`]).
    m_end: (f64, f64),
    /// [`TreatmentEffect`] of a treated customer: the recovery probability and the seed of its
    /// own random stream (`None`: untreated, or no effect simulated).
    treated: Option<(f64, u64)>,
}

impl Sim<'_> {
    /// A treated would-be churner's recovery day ([`TreatmentEffect`]), for a disengagement
    /// phase of `len` days starting on `day`.
    fn treated_recovery(&self, day: u32, len: u32) -> Option<u32> {
        let (p, seed) = self.treated?;
        let mut rng = StdRng::seed_from_u64(mix(seed ^ mix(u64::from(day))));
        if rng.gen::<f64>() >= p {
            return None;
        }
        let f: f64 = rng.gen_range(0.8..0.95);
        Some(day + ((f * f64::from(len)).round() as u32).clamp(1, len.saturating_sub(1).max(1)))
    }

    fn emit(&mut self, ts: u32, body: Body) {
        if ts >= self.lo && ts < self.hi {
            self.out.push((ts, body));
        }
    }

    /// A random second of day `day_start`, following the diurnal profile.
    fn time_of_day(&mut self, day_start: u32) -> u32 {
        day_start + diurnal_second(&mut self.rng)
    }

    fn activity(&self, day: u32) -> f64 {
        match self.phase {
            Phase::Normal => 1.0,
            Phase::Disengaging { since, decay, .. } => (-decay * f64::from(day - since)).exp(),
            Phase::Recovering { since, from } => {
                let f = f64::from(day - since) / f64::from(RECOVERY_RAMP_DAYS);
                (from + (1.0 - from) * f).min(1.0)
            }
        }
    }

    fn disengaging(&self) -> bool {
        matches!(self.phase, Phase::Disengaging { .. })
    }

    fn tier(&self) -> usize {
        self.plan.map_or(0, |p| usize::from(p) + 1)
    }

    fn visit(&mut self, t: u32, m: f64) {
        if chance(&mut self.rng, P_LOGIN) {
            self.emit(t, Body::engagement(EngagementKind::Login));
        }
        let dur = (SESSION_MEDIAN_S * (0.8 * normal(&mut self.rng)).exp() * (0.4 + 0.6 * m))
            .clamp(5.0, 14_400.0);
        let duration_ds = (dur * 10.0).round() as u32;
        if chance(&mut self.rng, P_SESSION) {
            self.emit(
                t,
                Body::Engagement {
                    kind: EngagementKind::Session,
                    duration_ds: Some(duration_ds),
                    feature: None,
                },
            );
        }
        let span = (duration_ds / 10).max(1);
        for _ in 0..poisson(&mut self.rng, PAGE_VIEWS_PER_VISIT) {
            let off = self.rng.gen_range(0..span);
            self.emit(t + off, Body::engagement(EngagementKind::PageView));
        }
        if chance(&mut self.rng, 0.15 + 0.6 * self.adoption) {
            let n = 1 + poisson(&mut self.rng, 0.6 * self.adoption);
            let avail = FEATURES_BY_TIER[self.tier()];
            // Higher adoption spreads use over more of the available features.
            let shape = 2.0 - 1.5 * self.adoption;
            for _ in 0..n {
                let u: f64 = self.rng.gen::<f64>().powf(shape);
                let f = ((u * avail as f64) as usize).min(avail - 1);
                let off = self.rng.gen_range(0..span);
                self.emit(
                    t + off,
                    Body::Engagement {
                        kind: EngagementKind::FeatureUse,
                        duration_ds: None,
                        feature: Some(f as u8),
                    },
                );
            }
        }
    }

    fn subscription(&mut self, t: u32, action: SubscriptionAction) {
        if let Some(p) = self.plan {
            let mrr_cents = if action == SubscriptionAction::Cancel {
                0
            } else {
                PLAN_MRR_CENTS[usize::from(p)]
            };
            let body = Body::Subscription {
                action,
                plan: p,
                mrr_cents,
            };
            if action == SubscriptionAction::Cancel {
                // Exactly at churn_at, which is the (exclusive) end of today's window.
                self.out.push((t, body));
            } else {
                self.emit(t, body);
            }
        }
    }

    /// Hazard components of a customer in the normal state on `day`.
    fn hazards(&self, day: u32, tenure: f64, renewal_today: bool) -> [(Cause, f64); 5] {
        let tenure_f = 1.0 + 1.5 * (-tenure / 60.0).exp();
        let act_f = (VISIT_MEDIAN / self.visit_rate).sqrt().clamp(0.5, 3.0);
        let adopt_f = 1.3 - 0.6 * self.adoption;
        let dis = H_DISENGAGED * tenure_f * act_f * adopt_f;
        let det = match self.last_nps {
            Some((score, at)) if score <= 6 && day - at <= 120 => {
                H_DETRACTOR_BASE + H_DETRACTOR_STEP * f64::from(6 - score)
            }
            _ => 0.0,
        };
        let down = self
            .last_downgrade
            .map_or(0.0, |at| H_DOWNGRADE * (-f64::from(day - at) / 45.0).exp());
        let comp = H_COMPLAINTS * self.complaint_load;
        let p2 = self.price_sens * self.price_sens;
        let price = match self.plan {
            None => H_PRICE_PAYG * p2,
            Some(_) if renewal_today => H_PRICE_RENEWAL * p2,
            Some(_) => H_PRICE_DAILY * p2,
        };
        let s = STRUCTURAL[self.tier()] * self.hazard_scale;
        [
            (Cause::Disengaged, s * dis),
            (Cause::Detractor, s * det),
            (Cause::Downgrade, s * down),
            (Cause::Complaints, s * comp),
            (Cause::Price, s * price),
        ]
    }

    /// Runs the customer from signup to churn or the end of the period. Returns the churn second
    /// and cause.
    fn run(
        &mut self,
        signup_day: u32,
        signup_ts: u32,
        new_customer: bool,
        tenure0: f64,
        days: u32,
        phase_days: (u32, u32),
    ) -> Option<(u32, Cause)> {
        for day in signup_day..days {
            let day_start = day * DAY;
            self.lo = day_start.max(signup_ts);
            self.hi = day_start + DAY;
            let tenure = tenure0 + f64::from(day - signup_day);

            // 1. Slow state dynamics.
            self.complaint_load *= (-1.0f64 / 30.0).exp();
            self.sat += 0.03 * (self.base_sat - self.sat) + 0.08 * normal(&mut self.rng);
            if self.disengaging() {
                self.sat -= 0.02;
            }
            let renewal_today = self.plan.is_some()
                && day == self.next_renew
                && (day > signup_day || !new_customer);

            // 2. Phase transitions and the hazard draw.
            let mut churn: Option<Cause> = None;
            if day > signup_day {
                match self.phase {
                    Phase::Disengaging {
                        churn_day, cause, ..
                    } if day >= churn_day => churn = Some(cause),
                    Phase::Disengaging {
                        recover_day: Some(r),
                        ..
                    } if day >= r => {
                        let from = self.activity(day);
                        self.phase = Phase::Recovering { since: day, from };
                        self.sat += 0.6;
                    }
                    Phase::Disengaging { .. } => {}
                    Phase::Recovering { since, .. } => {
                        if day - since >= RECOVERY_RAMP_DAYS {
                            self.phase = Phase::Normal;
                        }
                    }
                    Phase::Normal => {
                        let comps = self.hazards(day, tenure, renewal_today);
                        let total: f64 = comps.iter().map(|c| c.1).sum();
                        let u: f64 = self.rng.gen();
                        if u < self.h_random {
                            churn = Some(Cause::Random);
                        } else if u < self.h_random + total {
                            let mut x = u - self.h_random;
                            let mut cause = Cause::Disengaged;
                            for (c, h) in comps {
                                if x < h {
                                    cause = c;
                                    break;
                                }
                                x -= h;
                            }
                            let (lo, hi) = phase_days;
                            let len = self.rng.gen_range(lo..=hi);
                            let m_end: f64 = self.rng.gen_range(self.m_end.0..self.m_end.1);
                            let recover_day = if chance(&mut self.rng, P_RECOVER) {
                                let f: f64 = self.rng.gen_range(0.35..0.75);
                                Some(day + ((f * f64::from(len)).round() as u32).max(1))
                            } else {
                                self.treated_recovery(day, len)
                            };
                            self.phase = Phase::Disengaging {
                                since: day,
                                churn_day: day + len,
                                decay: -m_end.ln() / f64::from(len),
                                recover_day,
                                cause,
                            };
                        }
                    }
                }
            }
            let m = self.activity(day);
            let churn_at = churn.map(|c| (self.rng.gen_range(self.lo..self.hi), c));
            if let Some((tc, _)) = churn_at {
                self.hi = tc;
            }

            // 3. Today's events.
            if day == signup_day && new_customer {
                self.subscription(signup_ts, SubscriptionAction::Start);
                let t = signup_ts + self.rng.gen_range(0..600);
                self.visit(t, m);
            }
            if self.plan.is_some() {
                if renewal_today {
                    self.subscription(day_start + self.renew_second, SubscriptionAction::Renew);
                }
                if day >= self.next_renew {
                    self.next_renew = day + 30;
                }
                self.plan_change(day, day_start);
            }
            for _ in 0..poisson(&mut self.rng, self.visit_rate * m) {
                let t = self.time_of_day(day_start);
                self.visit(t, m);
            }
            if day % 7 == self.email_weekday
                && chance(&mut self.rng, self.email_affinity * (0.4 + 0.6 * m))
            {
                let t = self.time_of_day(day_start);
                self.emit(t, Body::engagement(EngagementKind::EmailOpen));
                if chance(&mut self.rng, P_EMAIL_CLICK) {
                    let t2 = t + self.rng.gen_range(5..300);
                    self.emit(t2, Body::engagement(EngagementKind::EmailClick));
                }
            }
            for _ in 0..poisson(&mut self.rng, self.purchase_rate * m) {
                self.purchase(day_start);
            }
            self.support(day_start);
            if day == self.next_survey {
                self.survey(day, day_start, m);
            }

            if let Some((tc, cause)) = churn_at {
                self.subscription(tc, SubscriptionAction::Cancel);
                return Some((tc, cause));
            }
        }
        None
    }

    fn plan_change(&mut self, day: u32, day_start: u32) {
        let Some(p) = self.plan else { return };
        let up = if p < 2 && self.sat > 0.3 && self.visit_rate >= VISIT_MEDIAN {
            0.0008 * (self.visit_rate / VISIT_MEDIAN).min(3.0)
        } else {
            0.0
        };
        let mut down = if p > 0 {
            0.0005 * (1.0 + 3.0 * self.price_sens) * (1.0 + (-self.sat).max(0.0))
        } else {
            0.0
        };
        if self.disengaging() {
            down *= 6.0;
        }
        let u: f64 = self.rng.gen();
        if u < up {
            self.plan = Some(p + 1);
            let t = self.time_of_day(day_start);
            self.subscription(t, SubscriptionAction::Upgrade);
        } else if u < up + down {
            self.plan = Some(p - 1);
            self.last_downgrade = Some(day);
            let t = self.time_of_day(day_start);
            self.subscription(t, SubscriptionAction::Downgrade);
        }
    }

    fn purchase(&mut self, day_start: u32) {
        let t = self.time_of_day(day_start);
        let gross = self.spend_median * (0.45 * normal(&mut self.rng)).exp();
        let gross_cents = cents(gross).max(100);
        let discount_cents = if chance(&mut self.rng, 0.05 + 0.45 * self.price_sens) {
            let f: f64 = self.rng.gen_range(0.05..0.30);
            Some(cents(f * f64::from(gross_cents) / 100.0))
        } else {
            None
        };
        let items = 1 + poisson(&mut self.rng, f64::from(gross_cents) / 5_000.0).min(49);
        let amount_cents = gross_cents - discount_cents.unwrap_or(0).min(gross_cents);
        let order = self.orders;
        self.orders += 1;
        self.emit(
            t,
            Body::Purchase {
                order,
                amount_cents,
                discount_cents,
                items: items as u16,
            },
        );
    }

    fn support(&mut self, day_start: u32) {
        let enterprise = if self.plan == Some(2) { 2.0 } else { 1.0 };
        if chance(&mut self.rng, 0.004 * (-0.5 * self.sat).exp() * enterprise) {
            let t = self.time_of_day(day_start);
            self.emit(t, Body::engagement(EngagementKind::SupportTicket));
        }
        let phase_f = if self.disengaging() { 1.5 } else { 1.0 };
        if chance(&mut self.rng, 0.0012 * (-1.1 * self.sat).exp() * phase_f) {
            let t = self.time_of_day(day_start);
            // Only complaints the customer actually voices (inside the window) count.
            if t >= self.lo && t < self.hi {
                self.sat -= 0.25;
                self.complaint_load += 1.0;
            }
            self.emit(t, Body::engagement(EngagementKind::Complaint));
        }
    }

    fn survey(&mut self, day: u32, day_start: u32, m: f64) {
        self.next_survey = day + self.rng.gen_range(30..=60);
        if !chance(&mut self.rng, 0.55 * (0.5 + 0.5 * m)) {
            return;
        }
        let raw = 7.3 + 1.7 * self.sat + 0.8 * normal(&mut self.rng);
        let score = raw.round().clamp(0.0, 10.0) as u8;
        let comment = if chance(&mut self.rng, 0.25) {
            let (lo, hi) = match score {
                0..=6 => (0u8, 4u8),
                7..=8 => (4, 7),
                _ => (7, 10),
            };
            Some(self.rng.gen_range(lo..hi))
        } else {
            None
        };
        let channel = self.rng.gen_range(0..CHANNELS.len()) as u8;
        let t = self.time_of_day(day_start);
        if t >= self.lo && t < self.hi {
            self.last_nps = Some((score, day));
        }
        self.emit(
            t,
            Body::Feedback {
                score,
                comment,
                channel,
            },
        );
    }
}

/// Simulates customer `idx`, appending its `(ts, body)` records to `out` (cleared first).
fn simulate_customer(cfg: &GenConfig, idx: usize, id: String, out: &mut Vec<(u32, Body)>) -> Label {
    out.clear();
    let days = cfg.days.min(MAX_DAYS);
    let mut rng = StdRng::seed_from_u64(mix(cfg.seed ^ mix(idx as u64)));
    let n = f64::from(cfg.churn_inactivity_days.max(1));
    let phase_days = (
        ((n * 7.0 / 15.0).round() as u32).max(1),
        ((n * 7.0 / 5.0).round() as u32).max(2),
    );

    // Traits.
    let new_customer = !chance(&mut rng, P_EXISTING);
    let signup_ts = if new_customer && days > 0 {
        rng.gen_range(0..days * DAY)
    } else {
        0
    };
    let signup_day = signup_ts / DAY;
    let tenure0 = if new_customer {
        0.0
    } else {
        let e: f64 = rng.sample(Exp1);
        (7.0 + TENURE_MEAN_DAYS * e).min(1800.0)
    };
    let plan = if chance(&mut rng, P_SUBSCRIBED) {
        let u: f64 = rng.gen();
        Some(if u < PLAN_WEIGHTS[0] {
            0u8
        } else if u < PLAN_WEIGHTS[0] + PLAN_WEIGHTS[1] {
            1
        } else {
            2
        })
    } else {
        None
    };
    let visit_rate = (VISIT_MEDIAN * (VISIT_SIGMA * normal(&mut rng)).exp()).clamp(1.5 / n, 6.0);
    let payg_f = if plan.is_none() { 1.6 } else { 1.0 };
    let purchase_rate = PURCHASE_MEDIAN * (PURCHASE_SIGMA * normal(&mut rng)).exp() * payg_f;
    let ent_f = if plan == Some(2) { 2.0 } else { 1.0 };
    let spend_median = SPEND_MEDIAN * (SPEND_SIGMA * normal(&mut rng)).exp() * ent_f;
    // Beta(2, 5) is the 2nd smallest of 6 uniforms.
    let mut us = [0f64; 6];
    for u in &mut us {
        *u = rng.gen();
    }
    us.sort_by(f64::total_cmp);
    let price_sens = us[1];
    let mut adoption: f64 = rng.gen();
    if plan == Some(2) {
        adoption = adoption.max(rng.gen());
    }
    let email_affinity = rng.gen_range(0.1..0.5);
    let base_sat = normal(&mut rng);
    let renew_second = if new_customer {
        signup_ts % DAY
    } else {
        rng.gen_range(0..DAY)
    };
    let next_renew = if new_customer {
        signup_day + 30
    } else {
        rng.gen_range(0..30)
    };
    let next_survey = signup_day + rng.gen_range(7..=60);
    let email_weekday = rng.gen_range(0..7);

    let plan_name = plan.map_or("payg", |p| PLANS[usize::from(p)]);
    let tier = if visit_rate < 0.15 {
        "light"
    } else if visit_rate < 0.5 {
        "regular"
    } else {
        "power"
    };
    let segment_hint = format!("{plan_name}-{tier}");

    let mut sim = Sim {
        rng,
        out,
        lo: 0,
        hi: 0,
        visit_rate,
        purchase_rate,
        spend_median,
        price_sens,
        adoption,
        email_affinity,
        base_sat,
        plan,
        sat: base_sat,
        orders: 0,
        complaint_load: 0.0,
        last_nps: None,
        last_downgrade: None,
        next_renew,
        renew_second,
        next_survey,
        email_weekday,
        phase: Phase::Normal,
        hazard_scale: match cfg.profile {
            Profile::LowChurn => LOW_CHURN_HAZARD_SCALE,
            Profile::Default | Profile::Retail | Profile::Social => 1.0,
        },
        h_random: match cfg.profile {
            Profile::LowChurn => H_RANDOM * LOW_CHURN_RANDOM_SCALE,
            Profile::Default | Profile::Retail | Profile::Social => H_RANDOM,
        },
        m_end: match cfg.profile {
            Profile::LowChurn => LOW_CHURN_M_END,
            Profile::Default | Profile::Retail | Profile::Social => (0.04, 0.15),
        },
        treated: cfg
            .treatment
            .as_ref()
            .filter(|t| !t.experiment.is_holdout(&id))
            .map(|t| {
                (
                    t.recover_probability,
                    mix(cfg.seed ^ mix(idx as u64) ^ 0x7EA7_3E47),
                )
            }),
    };
    let churn = if days > 0 {
        sim.run(
            signup_day,
            signup_ts,
            new_customer,
            tenure0,
            days,
            phase_days,
        )
    } else {
        None
    };
    Label {
        customer_id: id,
        churned: churn.is_some(),
        churn_at: churn.map(|(tc, _)| cfg.start + Duration::seconds(i64::from(tc))),
        cause: churn.map_or("none", |(_, c)| c.as_str()).to_owned(),
        segment_hint,
        p_alive_end: None,
    }
}

/// Name of engagement feature `f`: the default profile's `FEATURES`, then the social profile's
/// actions.
fn feature_name(f: u8) -> &'static str {
    let f = usize::from(f);
    FEATURES
        .get(f)
        .copied()
        .unwrap_or_else(|| social::ACTIONS[f - social::FEATURE_BASE])
}

/// Name of plan `p`: the default profile's `PLANS`, then the social profile's plan.
fn plan_name(p: u8) -> &'static str {
    PLANS
        .get(usize::from(p))
        .copied()
        .unwrap_or(social::PLAN_NAME)
}

fn materialize(rec: &Rec, cfg: &GenConfig, ids: &[String], cw: usize, sw: usize) -> Event {
    let cust = rec.cust as usize;
    let payload = match rec.body {
        Body::Purchase {
            order,
            amount_cents,
            discount_cents,
            items,
        } => Payload::Purchase(Purchase {
            order_id: format!("ord-{cust:0cw$}-{order:05}"),
            amount: f64::from(amount_cents) / 100.0,
            currency: "EUR".to_owned(),
            items: u32::from(items),
            discount: discount_cents.map(|d| f64::from(d) / 100.0),
        }),
        Body::Engagement {
            kind,
            duration_ds,
            feature,
        } => Payload::Engagement(Engagement {
            kind,
            duration_s: duration_ds.map(|d| f64::from(d) / 10.0),
            feature: feature.map(|f| feature_name(f).to_owned()),
        }),
        Body::Feedback {
            score,
            comment,
            channel,
        } => Payload::Feedback(Feedback {
            nps_score: score,
            comment: comment.map(|c| COMMENTS[usize::from(c)].to_owned()),
            channel: Some(CHANNELS[usize::from(channel)].to_owned()),
        }),
        Body::Subscription {
            action,
            plan,
            mrr_cents,
        } => Payload::Subscription(Subscription {
            action,
            plan: plan_name(plan).to_owned(),
            mrr: f64::from(mrr_cents) / 100.0,
        }),
    };
    let mut event_id = String::with_capacity(4 + cw + sw);
    event_id.push_str("ev-");
    push_padded(&mut event_id, cust as u64, cw);
    event_id.push('-');
    push_padded(&mut event_id, u64::from(rec.seq), sw);
    Event {
        event_id,
        customer_id: ids[cust].clone(),
        occurred_at: cfg.start + Duration::seconds(i64::from(rec.ts)),
        payload,
    }
}

/// Simulates the population described by `cfg` (see the crate docs for the process).
///
/// Uses up to `available_parallelism` threads; the output does not depend on the thread count.
pub fn generate(cfg: &GenConfig) -> Population {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    generate_with_threads(cfg, threads)
}

/// Output of one thread's contiguous range of customers.
struct Part {
    labels: Vec<Label>,
    ids: Vec<String>,
    recs: Vec<Rec>,
    max_seq: u64,
}

fn simulate_range(cfg: &GenConfig, range: std::ops::Range<usize>, cw: usize) -> Part {
    let mut part = Part {
        labels: Vec::with_capacity(range.len()),
        ids: Vec::with_capacity(range.len()),
        recs: Vec::new(),
        max_seq: 0,
    };
    let mut buf: Vec<(u32, Body)> = Vec::new();
    for idx in range {
        let id = customer_id(idx, cw);
        part.ids.push(id.clone());
        part.labels.push(match cfg.profile {
            Profile::Default | Profile::LowChurn => simulate_customer(cfg, idx, id, &mut buf),
            Profile::Retail => retail::simulate_customer(cfg, idx, id, &mut buf),
            Profile::Social => social::simulate_customer(cfg, idx, id, &mut buf),
        });
        // Stable: same-second events keep their generation order (start before its visit,
        // cancel last).
        buf.sort_by_key(|r| r.0);
        part.max_seq = part.max_seq.max(buf.len() as u64);
        part.recs
            .extend(buf.iter().enumerate().map(|(seq, &(ts, body))| Rec {
                ts,
                cust: idx as u32,
                seq: seq as u32,
                body,
            }));
    }
    part
}

/// Runs `f` over `n` contiguous chunks of `0..len` on scoped threads, results in chunk order.
fn par_chunks<T: Send>(
    len: usize,
    n: usize,
    f: impl Fn(std::ops::Range<usize>) -> T + Sync,
) -> Vec<T> {
    let n = n.clamp(1, len.max(1));
    let size = len.div_ceil(n);
    let ranges: Vec<_> = (0..n)
        .map(|i| (i * size).min(len)..((i + 1) * size).min(len))
        .collect();
    if n == 1 {
        return ranges.into_iter().map(&f).collect();
    }
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = ranges.into_iter().map(|r| s.spawn(move || f(r))).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

fn generate_with_threads(cfg: &GenConfig, threads: usize) -> Population {
    let cw = customer_width(cfg.customers);
    // Small populations are not worth a thread.
    let threads = if cfg.customers < 500 { 1 } else { threads };
    let parts = par_chunks(cfg.customers, threads, |r| simulate_range(cfg, r, cw));
    let total: usize = parts.iter().map(|p| p.recs.len()).sum();
    let mut recs: Vec<Rec> = Vec::with_capacity(total);
    let mut labels = Vec::with_capacity(cfg.customers);
    let mut ids = Vec::with_capacity(cfg.customers);
    let mut max_seq = 0;
    for p in parts {
        recs.extend_from_slice(&p.recs);
        labels.extend(p.labels);
        ids.extend(p.ids);
        max_seq = max_seq.max(p.max_seq);
    }
    // Ids are zero-padded to fixed widths, so (ts, cust, seq) order is (occurred_at, event_id)
    // order.
    let sw = digits(max_seq.saturating_sub(1)).max(6);
    recs.sort_unstable_by_key(|r| (r.ts, r.cust, r.seq));
    let chunks = par_chunks(recs.len(), threads, |r| {
        recs[r]
            .iter()
            .map(|rec| materialize(rec, cfg, &ids, cw, sw))
            .collect::<Vec<Event>>()
    });
    let mut chunks = chunks.into_iter();
    let mut events = chunks.next().unwrap_or_default();
    events.reserve_exact(total - events.len());
    for c in chunks {
        events.extend(c);
    }
    Population { events, labels }
}

/// Writes one compact JSON event per line ([`Event::to_json`]).
pub fn write_jsonl(events: &[Event], mut w: impl Write) -> std::io::Result<()> {
    for ev in events {
        w.write_all(&ev.to_json())?;
        w.write_all(b"\n")?;
    }
    w.flush()
}

/// Wraps `r` in a gzip decoder if its first bytes are the gzip magic (`1f 8b`), whatever the
/// file is called; otherwise returns it unchanged. Concatenated gzip members are read in full.
pub fn maybe_gunzip<'a>(mut r: impl BufRead + 'a) -> std::io::Result<Box<dyn BufRead + 'a>> {
    let gz = r.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    Ok(if gz {
        Box::new(std::io::BufReader::new(
            flate2::bufread::MultiGzDecoder::new(r),
        ))
    } else {
        Box::new(r)
    })
}

/// Opens a text file for reading line by line, decompressing it if it is gzip
/// ([`maybe_gunzip`]): `events.jsonl` and `events.jsonl.gz` read the same.
pub fn open_text(path: &std::path::Path) -> std::io::Result<Box<dyn BufRead>> {
    maybe_gunzip(std::io::BufReader::new(std::fs::File::open(path)?))
}

/// Reads what [`write_jsonl`] wrote. Blank lines are skipped; errors name the 1-based line.
pub fn read_jsonl(mut r: impl BufRead) -> Result<Vec<Event>, GenError> {
    let mut events = Vec::new();
    let mut line = String::new();
    let mut n = 0usize;
    loop {
        line.clear();
        n += 1;
        let read = r
            .read_line(&mut line)
            .map_err(|source| GenError::Io { line: n, source })?;
        if read == 0 {
            return Ok(events);
        }
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        let ev = serde_json::from_str(text).map_err(|source| GenError::Json { line: n, source })?;
        events.push(ev);
    }
}

const LABEL_COLUMNS: [&str; 5] = [
    "customer_id",
    "churned",
    "churn_at",
    "cause",
    "segment_hint",
];

/// Optional last column of the labels CSV (retail profile).
const P_ALIVE_COLUMN: &str = "p_alive_end";

fn csv_field(out: &mut String, s: &str) {
    if s.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(s);
    }
}

/// Writes the labels as CSV with the header `customer_id,churned,churn_at,cause,segment_hint`
/// (`churn_at` RFC 3339 UTC, empty when not churned), followed by a `p_alive_end` column only if
/// some label has one (the retail profile; empty where a label has none). Default-profile files
/// are therefore exactly what they were before the column existed.
pub fn write_labels_csv(labels: &[Label], mut w: impl Write) -> std::io::Result<()> {
    let with_p_alive = labels.iter().any(|l| l.p_alive_end.is_some());
    write!(w, "{}", LABEL_COLUMNS.join(","))?;
    if with_p_alive {
        write!(w, ",{P_ALIVE_COLUMN}")?;
    }
    writeln!(w)?;
    let mut row = String::new();
    for l in labels {
        row.clear();
        csv_field(&mut row, &l.customer_id);
        row.push(',');
        row.push_str(if l.churned { "true" } else { "false" });
        row.push(',');
        if let Some(t) = l.churn_at {
            row.push_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true));
        }
        row.push(',');
        csv_field(&mut row, &l.cause);
        row.push(',');
        csv_field(&mut row, &l.segment_hint);
        if with_p_alive {
            row.push(',');
            if let Some(p) = l.p_alive_end {
                // Shortest representation that reads back to the same f64.
                row.push_str(&p.to_string());
            }
        }
        row.push('\n');
        w.write_all(row.as_bytes())?;
    }
    w.flush()
}

/// Splits one CSV record (RFC 4180 quoting, no embedded newlines).
fn split_csv(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        if quoted {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    cur.push('"');
                    chars.next();
                } else {
                    quoted = false;
                }
            } else {
                cur.push(c);
            }
        } else if c == '"' && at_start {
            quoted = true;
            at_start = false;
        } else if c == ',' {
            fields.push(std::mem::take(&mut cur));
            at_start = true;
        } else {
            cur.push(c);
            at_start = false;
        }
    }
    if quoted {
        return Err("unterminated quoted field".into());
    }
    fields.push(cur);
    Ok(fields)
}

/// Reads labels CSV. Columns are found by header name; `customer_id`, `churned`, `churn_at` and
/// `cause` are required, `segment_hint` is optional (empty when absent), `p_alive_end` is
/// optional (a probability in [0, 1]; `None` when the column is absent or the field empty).
pub fn read_labels_csv(mut r: impl BufRead) -> Result<Vec<Label>, GenError> {
    let mut line = String::new();
    let mut n = 0usize;
    let mut next = |line: &mut String, n: &mut usize| -> Result<bool, GenError> {
        line.clear();
        *n += 1;
        let read = r
            .read_line(line)
            .map_err(|source| GenError::Io { line: *n, source })?;
        Ok(read > 0)
    };
    let csv_err = |line: usize, message: String| GenError::Csv { line, message };
    if !next(&mut line, &mut n)? {
        return Err(csv_err(1, "missing header".into()));
    }
    let header = split_csv(line.trim_end_matches(['\r', '\n'])).map_err(|m| csv_err(n, m))?;
    let col = |name: &str| header.iter().position(|h| h.trim() == name);
    let required = |name: &'static str| {
        col(name).ok_or_else(|| csv_err(1, format!("header lacks column `{name}`")))
    };
    let (c_id, c_churned, c_at, c_cause) = (
        required("customer_id")?,
        required("churned")?,
        required("churn_at")?,
        required("cause")?,
    );
    let c_seg = col("segment_hint");
    let c_alive = col(P_ALIVE_COLUMN);
    let mut labels = Vec::new();
    while next(&mut line, &mut n)? {
        let text = line.trim_end_matches(['\r', '\n']);
        if text.trim().is_empty() {
            continue;
        }
        let f = split_csv(text).map_err(|m| csv_err(n, m))?;
        if f.len() != header.len() {
            return Err(csv_err(
                n,
                format!("{} fields, header has {}", f.len(), header.len()),
            ));
        }
        let churned = match f[c_churned].trim() {
            "true" | "1" => true,
            "false" | "0" => false,
            other => return Err(csv_err(n, format!("churned `{other}` is not true/false"))),
        };
        let at = f[c_at].trim();
        let churn_at = if at.is_empty() {
            None
        } else {
            Some(
                DateTime::parse_from_rfc3339(at)
                    .map_err(|e| csv_err(n, format!("churn_at `{at}`: {e}")))?
                    .with_timezone(&Utc),
            )
        };
        if churned != churn_at.is_some() {
            return Err(csv_err(
                n,
                "churn_at must be set exactly when churned is true".into(),
            ));
        }
        let p_alive_end = match c_alive.map(|c| f[c].trim()) {
            None | Some("") => None,
            Some(v) => match v.parse::<f64>() {
                Ok(p) if (0.0..=1.0).contains(&p) => Some(p),
                _ => return Err(csv_err(n, format!("p_alive_end `{v}` is not in [0, 1]"))),
            },
        };
        labels.push(Label {
            customer_id: f[c_id].clone(),
            churned,
            churn_at,
            cause: f[c_cause].clone(),
            segment_hint: c_seg.map(|c| f[c].clone()).unwrap_or_default(),
            p_alive_end,
        });
    }
    Ok(labels)
}

mod retail;
mod social;

#[cfg(test)]
mod tests;
