//! The in-process core of the streaming stages: decode → validate → dedupe → rollup → features →
//! score → alert decision. No I/O: the Kafka service, the file backtest and the benchmarks all
//! drive this same type, so what a backtest sees is what production does.
//!
//! Time: the engine keeps an event-time *watermark*. Each source (a topic-partition) tracks the
//! newest `occurred_at` it delivered; the watermark is the minimum over sources that delivered
//! within `idle_source_ms`, so one fast partition cannot drag the clock ahead of customers whose
//! events sit in a slower one (with `clock = "wall"` the wall clock is used instead). Features are computed as of the watermark's UTC day, and the
//! silent-customer sweep compares each customer's last event with it, so a replay of history
//! behaves like the live stream did. Late events (older than the watermark) are folded into the
//! right day; days older than the retention horizon go to the rollup carry (see
//! [`churn_features::rollup`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use churn_events::{
    AlertData, CloudEvent, DecodeLimits, Event, Experiment, LapsedData, Payload, Rejection,
    ScoreRecordRef, FULL_HISTORY_DAYS, HOLDOUT, SCORED_BY_COLD_START, SCORED_BY_MODEL, TREATED,
    WIN_BACK,
};
use churn_features::rollup::RETAIN_DAYS;
use churn_features::training::ChurnDefinition;
use churn_features::FeatureSet;
use churn_features::{
    day_of, day_start, feature_frame, CustomerRollups, FeatureMatrix, RollupFrames,
};
use churn_model::{Band, ModelArtifact};

use crate::config::{AlertConfig, Clock, PipelineConfig};
use crate::policy::{self, band_index, AlertMemory, PackedOutcome, PendingOutcome, PolicyColumns};
use crate::reasons::{self, Explainer, Locale};
use crate::store::{Slot, Table};
use crate::Error;

/// What happened to one input message.
#[derive(Debug, Clone, PartialEq)]
pub enum Ingest {
    Accepted,
    Duplicate,
    Rejected(Rejection),
}

/// An alert ready to publish (key = customer id): an at-risk alert (CloudEvents type
/// [`churn_events::ALERT_TYPE`]) or a lapsed one ([`churn_events::LAPSED_TYPE`], `action` =
/// [`WIN_BACK`], `band` = the band of the day's raw score); see [`AlertOut::is_lapsed`].
#[derive(Debug, Clone, PartialEq)]
pub struct AlertOut {
    pub key: String,
    pub id: String,
    pub payload: Vec<u8>,
    pub band: Band,
    pub action: &'static str,
    /// [`TREATED`] or [`HOLDOUT`] (at-risk alerts of the holdout group; lapsed alerts are
    /// always treated).
    pub treatment: &'static str,
    /// When the oldest event behind this score was received (for latency metrics).
    pub received: Option<Instant>,
}

impl AlertOut {
    /// A lapsed alert (the churn definition was met), not an at-risk prediction.
    pub fn is_lapsed(&self) -> bool {
        self.action == WIN_BACK
    }
}

/// A latest-score record for the compacted scores topic.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreOut {
    pub key: String,
    pub payload: Vec<u8>,
}

/// Outputs of one scoring pass.
#[derive(Debug, Default)]
pub struct Scored {
    pub alerts: Vec<AlertOut>,
    pub scores: Vec<ScoreOut>,
    /// Customers forgotten by this sweep: silent for `forget_after_days`, and over
    /// `max_customers`.
    pub forgotten_silent: usize,
    pub forgotten_cap: usize,
    /// Lapsed alerts among `alerts`, by reason: a subscription cancel, and silence for
    /// `churn_after_days` (each is one customer newly meeting the churn definition).
    pub lapsed_cancel: usize,
    pub lapsed_inactivity: usize,
    /// Alert outcomes that became known in this pass (see [`Outcome`]).
    pub outcomes: Vec<Outcome>,
    /// The shadow model's scores of this pass ([`Engine::set_shadow`]; empty without one).
    pub shadow: Vec<ShadowOut>,
}

/// One shadow score (a serialized [`churn_events::ShadowScore`]) and how it compares.
#[derive(Debug, Clone)]
pub struct ShadowOut {
    pub key: String,
    pub payload: Vec<u8>,
    /// Raw bands of the live and of the shadow model.
    pub live_band: Band,
    pub shadow_band: Band,
    /// Whether each raw band reaches `alerts.min_band`.
    pub live_alert: bool,
    pub shadow_alert: bool,
}

impl ShadowOut {
    /// `agreement` label of `churn_model_shadow_scores_total`.
    pub fn agreement(&self) -> &'static str {
        match self.shadow_band.cmp(&self.live_band) {
            std::cmp::Ordering::Equal => "same_band",
            std::cmp::Ordering::Greater => "shadow_higher",
            std::cmp::Ordering::Less => "shadow_lower",
        }
    }
}

/// The outcome of a customer's first at-risk alert of an episode, known once the model's churn
/// definition can be judged: did the customer churn within the horizon after the alert day?
/// Computed from the customer's own events ([`ChurnDefinition::label`] as of the alert day,
/// the definition the model was trained on), never from outside labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub customer_id: String,
    /// The alert's day.
    pub alert_day: i32,
    pub band: Band,
    pub action: &'static str,
    /// The customer was in the holdout group.
    pub holdout: bool,
    /// The churn definition was met within the horizon after the alert day.
    pub churned: bool,
}

/// Business KPIs over the tracked population.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Kpis {
    pub customers: usize,
    pub state_bytes: usize,
    /// % promoters − % detractors over NPS answers of the last 90 days (None without answers).
    pub nps_90d: Option<f64>,
    pub by_band: [usize; 4],
    pub revenue_at_risk: f64,
    /// Customers silent for `churn_after_days`+ days (churned by the inactivity definition), as
    /// a fraction.
    pub churned_fraction: f64,
    /// PSI of the customers' latest scores (those with a current risk: scored after the
    /// warm-up and not lapsed) against the model's training population (`None`: no reference
    /// in the model, or no current scores).
    pub score_psi: Option<f64>,
}

/// One tracked customer (its id is the table's key). Kept small: a million of these is the
/// engine's memory (see the `state_memory` benchmark).
#[derive(Debug)]
struct Customer {
    rollups: CustomerRollups,
    mem: AlertMemory,
    /// Has events not scored yet (it is in the engine's dirty list).
    dirty: bool,
    /// Changed since the last changelog record.
    changed: bool,
    last_scored_day: Option<i32>,
    revenue_at_risk: f64,
    /// Input partition this customer's events arrive on (all input topics are co-partitioned by
    /// customer id), and the newest offset applied per input topic: replays after a restore skip
    /// what the restored state already contains.
    partition: i32,
    applied: [i64; 4],
    /// Newest offsets applied from other partitions: set when the customer's events moved to
    /// another partition (partitions added, a producer's partitioner changed), so that a replay
    /// of the old partition is still recognised. Offsets are only ever compared within one
    /// (topic, partition).
    // A thin box (8 bytes, not a 16-byte boxed slice): the field is rare, `Customer` is not.
    #[allow(clippy::box_collection)]
    foreign: Option<Box<Vec<Applied>>>,
    /// Fingerprints of the customer's most recent event ids: the durable part of the dedupe
    /// window ([`RecentIds`]).
    recent: RecentIds,
}

/// The most event ids a customer's state remembers (`pipeline.dedupe_per_customer`).
pub const MAX_RECENT_IDS: usize = 4;

/// A customer's most recent event ids as 32-bit fingerprints (xxh3 of the id; 0 is an empty
/// slot), oldest first, newest in the last slot. Part of the customer's state record, so it
/// survives a restart, a rebalance and the revoke of other partitions: a duplicate re-sent at
/// a new offset (the ingest stage re-forwarding what it had forwarded before a crash, a
/// producer retry) is dropped whenever the original is among the customer's last
/// `dedupe_per_customer` events. Inline, 16 bytes: a million customers cost 16 MB (four ids,
/// and the rare foreign offsets behind a thin box, keep `Customer` at 200 bytes and the
/// `state_memory` estimate within its 300-byte budget).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct RecentIds([u32; MAX_RECENT_IDS]);

impl RecentIds {
    /// The fingerprint of an event id (never 0). xxh3 is a fixed algorithm: records written by
    /// one build are read right by the next.
    fn fingerprint(id: &str) -> u32 {
        let h = xxhash_rust::xxh3::xxh3_64(id.as_bytes());
        ((h ^ (h >> 32)) as u32).max(1)
    }

    fn contains(&self, f: u32) -> bool {
        self.0.contains(&f)
    }

    /// Remember `f` as the newest, keeping the newest `window` (older ones are forgotten).
    fn push(&mut self, f: u32, window: usize) {
        if window == 0 {
            return;
        }
        self.0.copy_within(1.., 0);
        self.0[MAX_RECENT_IDS - 1] = f;
        let keep = window.min(MAX_RECENT_IDS);
        self.0[..MAX_RECENT_IDS - keep].fill(0);
    }

    /// The remembered fingerprints, oldest first.
    fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().copied().filter(|f| *f != 0)
    }

    /// From a state record's list (oldest first), keeping the newest `window`.
    fn from_ids(ids: &[u32], window: usize) -> Self {
        let mut r = RecentIds::default();
        for f in ids.iter().filter(|f| **f != 0) {
            r.push(*f, window);
        }
        r
    }
}

/// The newest input offset a customer's state applied from one (topic, partition) other than
/// its home partition ([`Snapshot::foreign`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Applied {
    /// Input topic index (0..4).
    pub topic: u8,
    pub partition: i32,
    pub offset: i64,
}

/// At most this many foreign (topic, partition) offsets are kept per customer (the oldest go
/// first): a customer moves partitions only when co-partitioning changed.
pub const MAX_FOREIGN: usize = 8;

impl Customer {
    /// The newest offset of input `topic` on `partition` this state applied (-1: none).
    fn applied_at(&self, topic: usize, partition: i32) -> i64 {
        if partition == self.partition {
            return self.applied.get(topic).copied().unwrap_or(-1);
        }
        self.foreign
            .iter()
            .flat_map(|f| f.iter())
            .filter(|a| usize::from(a.topic) == topic && a.partition == partition)
            .map(|a| a.offset)
            .max()
            .unwrap_or(-1)
    }

    /// Make `partition` the customer's home: the old home's offsets become foreign ones, and the
    /// new home's foreign ones (if it lived there before) come home.
    fn move_home(&mut self, partition: i32) {
        let mut foreign: Vec<Applied> = self.foreign.take().map(|f| *f).unwrap_or_default();
        for (t, a) in self.applied.iter().enumerate() {
            if *a >= 0 {
                foreign.push(Applied {
                    topic: t as u8,
                    partition: self.partition,
                    offset: *a,
                });
            }
        }
        let mut applied = [-1i64; 4];
        foreign.retain(|f| {
            if f.partition != partition {
                return true;
            }
            if let Some(a) = applied.get_mut(usize::from(f.topic)) {
                *a = (*a).max(f.offset);
            }
            false
        });
        if foreign.len() > MAX_FOREIGN {
            let excess = foreign.len() - MAX_FOREIGN;
            foreign.drain(..excess);
        }
        self.applied = applied;
        self.partition = partition;
        self.foreign = (!foreign.is_empty()).then(|| Box::new(foreign));
    }

    /// Forget the offsets at or above `from` of `topic` on `partition` (its offsets went back:
    /// the topic was recreated or the broker lost its log). True if anything was forgotten.
    fn forget_offsets(&mut self, topic: usize, partition: i32, from: i64) -> bool {
        let mut changed = false;
        if partition == self.partition {
            if let Some(a) = self.applied.get_mut(topic) {
                if *a >= from {
                    *a = from - 1;
                    changed = true;
                }
            }
        }
        if let Some(f) = self.foreign.as_mut() {
            for a in f.iter_mut() {
                if usize::from(a.topic) == topic && a.partition == partition && a.offset >= from {
                    a.offset = from - 1;
                    changed = true;
                }
            }
        }
        changed
    }
}

impl Default for Customer {
    fn default() -> Self {
        Customer {
            rollups: CustomerRollups::default(),
            mem: AlertMemory::default(),
            dirty: false,
            changed: false,
            last_scored_day: None,
            revenue_at_risk: 0.0,
            partition: 0,
            applied: [-1; 4],
            foreign: None,
            recent: RecentIds::default(),
        }
    }
}

/// Where an input message came from (Kafka) — enables the replay guard and state partitioning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// Small index per topic-partition, for the event-time watermark.
    pub source: usize,
    /// Index of the input topic (0..4: purchases, engagement, feedback, subscriptions).
    pub topic: usize,
    pub partition: i32,
    pub offset: i64,
}

/// One customer's state as written to the changelog topic (key = customer id). Written in a
/// compact binary encoding ([`Snapshot::encode`], first byte [`STATE_MAGIC`]); records of earlier
/// versions are JSON (first byte `{`), and [`Snapshot::decode`] reads both.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    pub v: u8,
    pub partition: i32,
    pub applied: [i64; 4],
    pub rollups: CustomerRollups,
    pub mem: AlertMemory,
    pub last_scored_day: Option<i32>,
    pub revenue_at_risk: f64,
    /// The warm-up anchor of the customer's partition: the oldest event day its clock has
    /// seen (keeps the warm-up from restarting after a restore or rebalance).
    pub first_day: Option<i32>,
    /// Events were applied but not scored yet: the next owner scores them.
    #[serde(default)]
    pub unscored: bool,
    /// The last event-time day the partition's clock had closed when this record was written
    /// (see [`Engine`], "Day close").
    #[serde(default)]
    pub closed_day: Option<i32>,
    /// The partition's event-time watermark (µs) when this record was written: a restore
    /// resumes the clock there, so the days it had not closed yet close without new events.
    #[serde(default)]
    pub watermark: Option<i64>,
    /// The newest event time (µs) the partition had seen: where its clock goes once every
    /// source is idle.
    #[serde(default)]
    pub newest: Option<i64>,
    /// Offsets applied from partitions other than `partition` (see [`Applied`]; version 4).
    #[serde(default)]
    pub foreign: Vec<Applied>,
    /// Fingerprints of the customer's most recent event ids, oldest first (the durable dedupe
    /// window, `pipeline.dedupe_per_customer`; version 5).
    #[serde(default)]
    pub recent_ids: Vec<u32>,
}

/// First byte of a binary state record (a JSON one starts with `{`).
pub const STATE_MAGIC: u8 = 0xC5;
/// Version of the binary state record (the second byte; JSON records were version 1).
pub const STATE_VERSION: u8 = 6;

/// State record versions [`Snapshot::decode`] reads (binary; JSON ones are version 1).
const READABLE_VERSIONS: [u8; 5] = [2, 3, 4, 5, 6];

// Presence bits of the binary state record's head.
const S_LAST_SCORED: u8 = 1;
const S_FIRST_DAY: u8 = 1 << 1;
const S_UNSCORED: u8 = 1 << 2;
const S_BAND: u8 = 1 << 3;
const S_RISK: u8 = 1 << 4;
const S_LAST_ALERT_DAY: u8 = 1 << 5;
const S_LAST_ALERT_BAND: u8 = 1 << 6;
const S_CLOSED_DAY: u8 = 1 << 7;

impl Snapshot {
    /// The binary encoding (what [`Engine::take_changelog`] writes), in the record's own version
    /// if that is a readable binary one (so a decoded record re-encodes to the same bytes), else
    /// in [`STATE_VERSION`].
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let v = if READABLE_VERSIONS.contains(&self.v) {
            self.v
        } else {
            STATE_VERSION
        };
        SnapshotRef {
            v,
            partition: self.partition,
            applied: self.applied,
            rollups: &self.rollups,
            mem: &self.mem,
            last_scored_day: self.last_scored_day,
            revenue_at_risk: self.revenue_at_risk,
            first_day: self.first_day,
            unscored: self.unscored,
            closed_day: self.closed_day,
            watermark: self.watermark,
            newest: self.newest,
            foreign: &self.foreign,
            recent_ids: &self.recent_ids,
        }
        .encode(&mut out);
        out
    }

    /// The newest input offsets a changelog record applied, per input topic, without decoding
    /// its rollups (binary records; JSON ones are decoded whole). `None` if malformed.
    pub fn applied_of(payload: &[u8]) -> Option<[i64; 4]> {
        use churn_features::wire::Reader;
        if payload.first() != Some(&STATE_MAGIC) {
            return Snapshot::decode(payload).ok().map(|s| s.applied);
        }
        let mut r = Reader::new(payload);
        let head = (r.u8().ok()?, r.u8().ok()?, r.u8().ok()?);
        if !READABLE_VERSIONS.contains(&head.1) {
            return None;
        }
        r.i32().ok()?;
        let mut applied = [-1; 4];
        for a in applied.iter_mut() {
            *a = r.ivar().ok()?;
        }
        Some(applied)
    }

    /// Read a changelog record: binary (this version) or JSON (earlier versions). Malformed
    /// input is an error, never a panic.
    pub fn decode(payload: &[u8]) -> Result<Snapshot, Error> {
        use churn_features::wire::Reader;
        if payload.first() != Some(&STATE_MAGIC) {
            return Ok(serde_json::from_slice(payload)?);
        }
        let mut r = Reader::new(payload);
        r.u8()?;
        let v = r.u8()?;
        if !READABLE_VERSIONS.contains(&v) {
            return Err(r.invalid("unknown state record version").into());
        }
        let flags = r.u8()?;
        let has = |b: u8| flags & b != 0;
        let band = |r: &mut Reader| -> Result<Band, Error> {
            let i = r.u8()?;
            Band::ALL
                .get(usize::from(i))
                .copied()
                .ok_or_else(|| r.invalid("unknown risk band").into())
        };
        let partition = r.i32()?;
        let mut applied = [-1; 4];
        for a in applied.iter_mut() {
            *a = r.ivar()?;
        }
        let last_scored_day = r.opt(has(S_LAST_SCORED), Reader::i32)?;
        let first_day = r.opt(has(S_FIRST_DAY), Reader::i32)?;
        let closed_day = r.opt(has(S_CLOSED_DAY), Reader::i32)?;
        let revenue_at_risk = r.f64()?;
        // Version 3 adds the partition's watermark and newest event time (0 = none).
        let (watermark, newest) = if v >= 3 {
            (
                Some(r.ivar()?).filter(|w| *w != 0),
                Some(r.ivar()?).filter(|w| *w != 0),
            )
        } else {
            (None, None)
        };
        // Version 4 adds the foreign offsets: a count, then (topic, partition, offset) each.
        let mut foreign = Vec::new();
        if v >= 4 {
            let n = r.ivar()?;
            if !(0..=MAX_FOREIGN as i64).contains(&n) {
                return Err(r.invalid("too many foreign offsets").into());
            }
            for _ in 0..n {
                let topic = r.ivar()?;
                let partition = r.ivar()?;
                let offset = r.ivar()?;
                let (Ok(topic @ 0..=3), Ok(partition)) =
                    (u8::try_from(topic), i32::try_from(partition))
                else {
                    return Err(r.invalid("foreign offset out of range").into());
                };
                foreign.push(Applied {
                    topic,
                    partition,
                    offset,
                });
            }
        }
        // Version 5 adds the recent event-id fingerprints: a count, then each.
        let mut recent_ids = Vec::new();
        if v >= 5 {
            let n = r.uvar()?;
            if n > MAX_RECENT_IDS as u64 {
                return Err(r.invalid("too many recent event ids").into());
            }
            for _ in 0..n {
                recent_ids.push(r.u32()?);
            }
        }
        // Version 6 adds the pending alert outcome: 0, or 1 then day, band, action, holdout.
        let mut outcome = None;
        if v >= 6 && r.u8()? == 1 {
            let day = r.i32()?;
            let b = band(&mut r)?;
            let action = r.u8()?;
            if usize::from(action) >= policy::ACTIONS.len() {
                return Err(r.invalid("unknown alert action").into());
            }
            let holdout = r.u8()? != 0;
            outcome = Some(PendingOutcome {
                day,
                band: b,
                action,
                holdout,
            });
        }
        let outcome = PackedOutcome::from(outcome);
        let mem = AlertMemory {
            band: r.opt(has(S_BAND), band)?,
            risk: r.opt(has(S_RISK), Reader::f64)?,
            last_alert_day: r.opt(has(S_LAST_ALERT_DAY), Reader::i32)?,
            last_alert_band: r.opt(has(S_LAST_ALERT_BAND), band)?,
            outcome,
        };
        let rollups = CustomerRollups::decode(&mut r)?;
        r.finish()?;
        Ok(Snapshot {
            v,
            partition,
            applied,
            rollups,
            mem,
            last_scored_day,
            revenue_at_risk,
            first_day,
            unscored: has(S_UNSCORED),
            closed_day,
            watermark,
            newest,
            foreign,
            recent_ids,
        })
    }
}

/// [`Snapshot`] borrowed from the live state, for writing (no copy of the rollups).
struct SnapshotRef<'a> {
    v: u8,
    partition: i32,
    applied: [i64; 4],
    rollups: &'a CustomerRollups,
    mem: &'a AlertMemory,
    last_scored_day: Option<i32>,
    revenue_at_risk: f64,
    first_day: Option<i32>,
    unscored: bool,
    closed_day: Option<i32>,
    watermark: Option<i64>,
    newest: Option<i64>,
    foreign: &'a [Applied],
    recent_ids: &'a [u32],
}

impl SnapshotRef<'_> {
    /// Magic, version, a presence byte, the head values, then the rollups
    /// ([`CustomerRollups::encode`]).
    fn encode(&self, out: &mut Vec<u8>) {
        use churn_features::wire::{presence, put_f64, put_ivar, put_uvar};
        let m = self.mem;
        let flags = presence(&[
            (self.last_scored_day.is_some(), S_LAST_SCORED),
            (self.first_day.is_some(), S_FIRST_DAY),
            (self.unscored, S_UNSCORED),
            (m.band.is_some(), S_BAND),
            (m.risk.is_some(), S_RISK),
            (m.last_alert_day.is_some(), S_LAST_ALERT_DAY),
            (m.last_alert_band.is_some(), S_LAST_ALERT_BAND),
            (self.closed_day.is_some(), S_CLOSED_DAY),
        ]);
        out.extend_from_slice(&[STATE_MAGIC, self.v, flags]);
        put_ivar(out, i64::from(self.partition));
        for a in self.applied {
            put_ivar(out, a);
        }
        for d in [self.last_scored_day, self.first_day, self.closed_day]
            .into_iter()
            .flatten()
        {
            put_ivar(out, i64::from(d));
        }
        put_f64(out, self.revenue_at_risk);
        if self.v >= 3 {
            put_ivar(out, self.watermark.unwrap_or(0));
            put_ivar(out, self.newest.unwrap_or(0));
        }
        if self.v >= 4 {
            let foreign = &self.foreign[self.foreign.len().saturating_sub(MAX_FOREIGN)..];
            put_ivar(out, foreign.len() as i64);
            for a in foreign {
                put_ivar(out, i64::from(a.topic));
                put_ivar(out, i64::from(a.partition));
                put_ivar(out, a.offset);
            }
        }
        if self.v >= 5 {
            let ids = &self.recent_ids[self.recent_ids.len().saturating_sub(MAX_RECENT_IDS)..];
            put_uvar(out, ids.len() as u64);
            for f in ids {
                put_uvar(out, u64::from(*f));
            }
        }
        if self.v >= 6 {
            match m.outcome.get() {
                None => out.push(0),
                Some(o) => {
                    out.push(1);
                    put_ivar(out, i64::from(o.day));
                    out.extend_from_slice(&[band_index(o.band), o.action, u8::from(o.holdout)]);
                }
            }
        }
        if let Some(b) = m.band {
            out.push(band_index(b));
        }
        if let Some(r) = m.risk {
            put_f64(out, r);
        }
        if let Some(d) = m.last_alert_day {
            put_ivar(out, i64::from(d));
        }
        if let Some(b) = m.last_alert_band {
            out.push(band_index(b));
        }
        self.rollups.encode(out);
    }
}

/// A changelog record to publish: key = customer id, to `partition` of the changelog topic. An
/// empty payload is a tombstone (published with a null value; compaction then drops the key).
#[derive(Debug, Clone, PartialEq)]
pub struct StateRecord {
    pub partition: i32,
    pub key: String,
    pub payload: Vec<u8>,
}

/// A `u64` that already is a good hash, used as its own hash (the dedupe window's keys).
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Not used for u64 keys; fold anything else in.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

type Fingerprints = HashSet<u64, BuildHasherDefault<IdentityHasher>>;

/// Bounded memory of recent event ids (64-bit hashes) in two generations: ids go into the
/// current one; when it holds `cap` ids it becomes the previous one and the one before is
/// dropped. So the last `cap` ids (and up to `2 × cap`) are always remembered, with no
/// per-event eviction. Ids are hashed with foldhash's quality variant, seeded per process (the
/// window lives only in memory), so an input cannot be crafted to collide with another id.
#[derive(Debug, Default)]
pub struct Dedupe {
    hasher: foldhash::quality::RandomState,
    current: Fingerprints,
    previous: Fingerprints,
    cap: usize,
}

impl Dedupe {
    /// Remembers the last `cap` ids (0 disables de-duplication).
    pub fn new(cap: usize) -> Self {
        Dedupe {
            cap,
            ..Dedupe::default()
        }
    }

    /// Forget every id (on a partition revoke: the next owner re-reads what was not committed,
    /// and if it comes back here those re-deliveries are not duplicates).
    pub fn clear(&mut self) {
        self.current.clear();
        self.previous.clear();
    }

    /// True if event `id` of `customer` was seen within the window; remembers it otherwise.
    /// Ids are only unique per customer: two customers' events with equal ids are both kept.
    pub fn check(&mut self, customer: &str, id: &str) -> bool {
        if self.cap == 0 {
            return false;
        }
        let k = self.hasher.hash_one((customer, id));
        if self.previous.contains(&k) || !self.current.insert(k) {
            return true;
        }
        if self.current.len() >= self.cap {
            std::mem::swap(&mut self.current, &mut self.previous);
            self.current.clear();
        }
        false
    }
}

/// An announced source with a backlog holds its partition's clock for at most this many
/// `idle_source_ms` without delivering before it is considered idle (see
/// [`Engine::expect_source`], [`Engine::set_backlog`]).
pub const HOLD_FACTOR: u32 = 12;

/// A silent customer is re-scored every day from `silent_after_days` of silence on, for this
/// many days, then once a week (the days are a function of the silence alone, so every run of
/// the same input re-scores on the same days).
pub const SILENT_DAILY_DAYS: i32 = 28;

/// One event-time source: an input topic-partition.
#[derive(Debug, Clone, Copy)]
struct Source {
    /// The input partition (clock) it belongs to.
    partition: i32,
    /// Newest event time it delivered.
    newest: Option<DateTime<Utc>>,
    /// When it last delivered (or was announced).
    seen: Instant,
    /// Announced at assignment and not delivered yet; `Some(backlog)` while waiting.
    awaiting: Option<bool>,
    /// It had unread records at assignment (until the consumer's statistics know better).
    assigned_backlog: bool,
    /// The consumer's statistics: behind (lag > 0) or caught up; `None` while unknown (no
    /// statistics yet, or a broker whose high watermark is below the position).
    behind: Option<bool>,
}

impl Source {
    /// An announced source that has not delivered yet holds its partition's clock while it is
    /// known to be behind, or for `idle` (up to [`HOLD_FACTOR`] × `idle` if it had a backlog at
    /// assignment) since it was announced.
    fn awaiting_holds(&self, since: std::time::Duration, idle: std::time::Duration) -> bool {
        let hold = match self.awaiting {
            Some(true) => idle * HOLD_FACTOR,
            Some(false) => idle,
            None => return false,
        };
        self.behind == Some(true) || since <= hold
    }
}

/// The event-time clock of one input partition (all topics of a partition are co-partitioned,
/// so a customer's events all feed the same clock).
#[derive(Debug, Clone, Copy, Default)]
struct PartClock {
    watermark: Option<DateTime<Utc>>,
    /// The last day closed (scored): every day up to it is final for this partition.
    closed: Option<i32>,
    /// Warm-up anchor: the oldest event day this partition's state has seen.
    anchor: Option<i32>,
    /// Newest event time the partition has seen (restored with its state): the clock moves
    /// there once every source is idle.
    newest: Option<DateTime<Utc>>,
}

/// The streaming core. See module docs.
///
/// **Day close.** Customers are scored when their partition's event-time clock *closes* a day:
/// once the partition's watermark is past day `d`, every event of `d` has arrived (each source
/// delivers in event-time order), so the customers active on `d` and the silent ones due on `d`
/// are scored as of the end of `d`, in day order. What is scored, as of which day, and what the
/// alert policy decides is then a function of each customer's events alone — not of batch
/// boundaries, fetch order, the number of members or restarts (a restored customer resumes at
/// its last scored day). The newest day of a partition stays open until an event of a later
/// day arrives.
pub struct Engine {
    model: Arc<ModelArtifact>,
    /// The served scoring rule of `model` (model, or cold-start fallback).
    served: crate::train::ServedScore,
    /// A candidate scored next to `model` on the same rows; never alerted ([`Engine::set_shadow`]).
    shadow: Option<Arc<ModelArtifact>>,
    pipeline: PipelineConfig,
    alerts: AlertConfig,
    limits: DecodeLimits,
    min_band: Band,
    cols: PolicyColumns,
    /// Alert reasons (metric groups, texts) of this model.
    explainer: Explainer,
    customers: Table<Customer>,
    /// Customers with events not scored yet, and when the first of those was received.
    dirty: Vec<(Slot, Option<Instant>)>,
    /// Customers changed since the last changelog records.
    changed: Vec<Slot>,
    /// Forgotten customers (key, partition) whose tombstones are not published yet.
    forgotten: Vec<(String, i32)>,
    dedupe: Dedupe,
    /// Sources by index (chosen by the caller: one per topic-partition).
    sources: Vec<Option<Source>>,
    /// Clocks by input partition.
    parts: std::collections::BTreeMap<i32, PartClock>,
    /// Events that arrived for a day their partition had already closed.
    late_events: u64,
    /// The registry plus the model's metric catalog.
    features: FeatureSet,
    /// What the event being folded adds to the catalog's counters (reused buffer).
    catalog_add: Vec<(u8, f64)>,
    /// Engagement events whose `feature` no catalog counter names (counted in `other`).
    catalog_other: u64,
    /// Customers whose events moved to another input partition ([`Engine::partition_moves`]).
    partition_moves: u64,
    /// Processing time of the last clock advance (what "idle" is measured against).
    clock_at: Option<Instant>,
    /// NPS answers per day: (day, promoters, detractors, answers).
    nps_days: VecDeque<(i32, u32, u32, u32)>,
    /// The holdout experiment at-risk alerts are assigned under (`alerts.holdout_share`).
    experiment: Experiment,
    /// The churn definition alert outcomes are judged by: the model's (its recorded
    /// observation plan), else inactivity for `churn_after_days` starting within
    /// `alerts.horizon_days`.
    outcome_definition: ChurnDefinition,
}

/// The churn definition alert outcomes are judged by: the model's recorded one, else inactivity
/// for `churn_after_days` starting within `alerts.horizon_days`.
fn outcome_definition(
    model: &ModelArtifact,
    pipeline: &PipelineConfig,
    alerts: &AlertConfig,
) -> ChurnDefinition {
    crate::train::recorded_plan(model).map_or(
        ChurnDefinition::Inactivity {
            days: pipeline.churn_after_days,
            within_days: alerts.horizon_days.round() as i32,
        },
        |p| p.definition,
    )
}

/// The shadow model's score of one row (raw and model input) next to the live model's `live`
/// risk.
#[allow(clippy::too_many_arguments)]
fn shadow_out(
    live_model: &ModelArtifact,
    shadow: &ModelArtifact,
    min_band: Band,
    key: &str,
    live: f64,
    raw: &[f64],
    input: &[f64],
    as_of: DateTime<Utc>,
) -> Result<ShadowOut, Error> {
    // The shadow's own served rule (its cold-start table, if any).
    let p = crate::train::ServedScore::of(shadow)
        .score(shadow, raw, input)
        .risk;
    let (live_band, shadow_band) = (live_model.thresholds.band(live), shadow.thresholds.band(p));
    let (live_alert, shadow_alert) = (live_band >= min_band, shadow_band >= min_band);
    let record = churn_events::ShadowScore {
        customer_id: key.to_string(),
        risk: p,
        risk_band: shadow_band.as_str().into(),
        alert: shadow_alert,
        model_version: shadow.model_version.clone(),
        live_risk: live,
        live_band: live_band.as_str().into(),
        live_alert,
        live_model_version: live_model.model_version.clone(),
        as_of,
    };
    Ok(ShadowOut {
        key: key.to_string(),
        payload: serde_json::to_vec(&record)?,
        live_band,
        shadow_band,
        live_alert,
        shadow_alert,
    })
}

/// The decoder's limits from the pipeline configuration (shared by every stage that decodes).
pub fn decode_limits(pipeline: &PipelineConfig) -> DecodeLimits {
    DecodeLimits {
        max_bytes: pipeline.max_event_bytes,
        max_future: Duration::hours(pipeline.max_future_hours),
        max_past: (pipeline.max_past_days > 0)
            .then(|| Duration::try_days(pipeline.max_past_days))
            .flatten(),
        max_number: pipeline.max_number,
        ..DecodeLimits::default()
    }
}

/// Last day ≤ `day` with a day row (or, before the rows, the carry's last activity day).
fn last_active_on_or_before(r: &CustomerRollups, day: i32) -> Option<i32> {
    if r.last_day().is_some_and(|d| d <= day) {
        return r.last_day();
    }
    let mut last = r.carry().last_activity_day.filter(|d| *d <= day);
    for row in r.days() {
        if row.day > day {
            break;
        }
        last = Some(row.day);
    }
    last
}

/// The newest event time up to the end of `day`: the rollups' newest event, or, when later days
/// are already folded in, the newest row's `last_at` up to `day` (the start of that day for rows
/// of earlier versions, and for days folded into the carry).
fn last_event_as_of(r: &CustomerRollups, day: i32) -> Option<DateTime<Utc>> {
    if let Some(t) = r.last_event.and_then(DateTime::from_timestamp_micros) {
        if day_of(t) <= day {
            return Some(t);
        }
    }
    let row = r.days().take_while(|row| row.day <= day).last();
    match row {
        Some(row) => row
            .last_at
            .and_then(DateTime::from_timestamp_micros)
            .or(Some(day_start(row.day))),
        None => r
            .carry()
            .last_activity_day
            .filter(|d| *d <= day)
            .map(day_start),
    }
}

/// How a customer met the churn definition (see [`lapse_as_of`]).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Lapse {
    /// A subscription cancel (else: inactivity).
    cancel: bool,
    /// The day the definition was met: the cancel's day, or last active day + the window.
    day: i32,
    /// The last positive MRR before the cancel; the current MRR for inactivity.
    last_mrr: f64,
    /// Days from the last active day to `as_of`.
    silent_days: i32,
}

/// Has the customer churned as of the end of `day`, and since when? Churned = the latest
/// subscription event up to `day` is a cancel (its day row's latest MRR is 0 and it has a
/// cancel; later MRR-0 subscription events keep it cancelled, a positive MRR ends it), or no
/// event for `churn_after` days. `mrr_now` is the row's `mrr` feature (the latest MRR): when it
/// is positive the customer cannot be cancelled and the rows are not read. A cancel folded into
/// the carry (older than [`RETAIN_DAYS`]) is no longer seen; its silence then is.
fn lapse_as_of(r: &CustomerRollups, day: i32, churn_after: i32, mrr_now: f64) -> Option<Lapse> {
    let last = last_active_on_or_before(r, day)?;
    let silent_days = day - last;
    if mrr_now.is_nan() || mrr_now <= 0.0 {
        let mut cancelled_on: Option<i32> = None;
        let mut last_positive = r.carry().mrr_last.map_or(0.0, |m| m.value).max(0.0);
        for row in r.days() {
            if row.day > day {
                break;
            }
            let Some(m) = row.mrr_last else { continue };
            if m.value > 0.0 {
                cancelled_on = None;
                last_positive = m.value;
            } else if row.cancels > 0 && cancelled_on.is_none() {
                cancelled_on = Some(row.day);
            }
        }
        if let Some(c) = cancelled_on {
            return Some(Lapse {
                cancel: true,
                day: c,
                last_mrr: last_positive,
                silent_days,
            });
        }
    }
    (silent_days >= churn_after).then_some(Lapse {
        cancel: false,
        day: last + churn_after,
        last_mrr: mrr_now.max(0.0),
        silent_days,
    })
}

/// What closing days up to `through` means for one customer.
enum Due {
    /// Score as of these days (ascending), each flagged active (true) or silent (false).
    Days,
    /// Silent for `forget_after_days` on some day up to `through`: forget it.
    Forget,
}

/// The days in `(last scored day, through]` on which `c` must be scored: every day it had
/// events, and the silent days of its schedule (daily from `silent` days of silence for
/// [`SILENT_DAILY_DAYS`], then weekly, and the day its silence reaches `churn` days: the day a
/// lapsed alert is due). Pushes them to `out`.
fn due_days(
    c: &Customer,
    through: i32,
    (silent, churn): (i32, i32),
    forget_after: i32,
    out: &mut Vec<(i32, bool)>,
) -> Due {
    let r = &c.rollups;
    let Some(first) = r.first_day else {
        return Due::Days;
    };
    let from = c.last_scored_day.map_or(first, |l| l + 1).max(first);
    if from > through {
        return Due::Days;
    }
    // Fast path: no row from `from` on, silence too short to be due by `through`.
    let newest = r.last_day().or(r.carry().last_activity_day);
    let rows_ahead = r.last_day().is_some_and(|d| d >= from);
    if !rows_ahead {
        let Some(a) = newest else {
            return Due::Days;
        };
        if through - a < silent.min(churn) && (forget_after == 0 || through - a < forget_after) {
            return Due::Days;
        }
    }
    let mut last = last_active_on_or_before(r, from - 1);
    let mut active = Vec::new();
    if rows_ahead {
        active.extend(
            r.days()
                .map(|row| row.day)
                .filter(|d| *d >= from && *d <= through),
        );
    }
    let mut next_active = active.iter().peekable();
    for day in from..=through {
        if next_active.peek().is_some_and(|d| **d == day) {
            next_active.next();
            out.push((day, true));
            last = Some(day);
            continue;
        }
        let Some(a) = last else { continue };
        let gap = day - a;
        if forget_after > 0 && gap >= forget_after {
            return Due::Forget;
        }
        if gap == churn
            || (gap >= silent && (gap - silent <= SILENT_DAILY_DAYS || (gap - silent) % 7 == 0))
        {
            out.push((day, false));
        }
    }
    Due::Days
}

impl Engine {
    /// Build an engine; fails if the model's features do not match this code's registry plus
    /// the model's metric catalog.
    pub fn new(
        model: Arc<ModelArtifact>,
        pipeline: PipelineConfig,
        alerts: AlertConfig,
    ) -> Result<Self, Error> {
        let features = crate::train::feature_set_of(&model)?;
        let min_band = policy::parse_band(&alerts.min_band).unwrap_or(Band::High);
        let explainer = Explainer::with_features(&model, &features, Locale::named(&alerts.locale)?);
        let outcome_definition = outcome_definition(&model, &pipeline, &alerts);
        Ok(Engine {
            experiment: alerts.experiment(),
            outcome_definition,
            explainer,
            limits: decode_limits(&pipeline),
            dedupe: Dedupe::new(pipeline.dedupe_window),
            served: crate::train::ServedScore::of(&model),
            model,
            shadow: None,
            pipeline,
            alerts,
            min_band,
            cols: PolicyColumns::default(),
            customers: Table::default(),
            dirty: Vec::new(),
            changed: Vec::new(),
            forgotten: Vec::new(),
            sources: Vec::new(),
            parts: Default::default(),
            late_events: 0,
            features,
            catalog_add: Vec::new(),
            catalog_other: 0,
            partition_moves: 0,
            clock_at: None,
            nps_days: VecDeque::new(),
        })
    }

    pub fn model(&self) -> &ModelArtifact {
        &self.model
    }

    /// Replace the live model between two batches, keeping every customer's state. The new
    /// model must compute the same features (registry plus an identical metric catalog: the
    /// rollups were folded with the catalog's counters); otherwise it is refused and the old
    /// model stays. Alert outcomes judged from now on use the new model's churn definition.
    pub fn replace_model(&mut self, model: Arc<ModelArtifact>) -> Result<(), Error> {
        self.check_same_features(&model)?;
        let explainer =
            Explainer::with_features(&model, &self.features, Locale::named(&self.alerts.locale)?);
        self.outcome_definition = outcome_definition(&model, &self.pipeline, &self.alerts);
        self.explainer = explainer;
        self.served = crate::train::ServedScore::of(&model);
        self.model = model;
        Ok(())
    }

    /// Run `shadow` next to the live model (None: stop): every scored customer is scored by it
    /// on the same feature row, into [`Scored::shadow`]. Refused like [`Engine::replace_model`]
    /// when its features differ.
    pub fn set_shadow(&mut self, shadow: Option<Arc<ModelArtifact>>) -> Result<(), Error> {
        if let Some(m) = &shadow {
            self.check_same_features(m)?;
        }
        self.shadow = shadow;
        Ok(())
    }

    /// The shadow model, if one runs.
    pub fn shadow(&self) -> Option<&ModelArtifact> {
        self.shadow.as_deref()
    }

    fn check_same_features(&self, model: &ModelArtifact) -> Result<(), Error> {
        let theirs = crate::train::feature_set_of(model)?;
        if theirs.names() != self.features.names() || model.catalog != self.model.catalog {
            return Err(Error::Catalog(format!(
                "model {} computes other features than the running model {} (another metric catalog): \
                 the state was folded with the running model's counters, so it cannot be swapped in \
                 without a restart",
                model.model_version, self.model.model_version
            )));
        }
        Ok(())
    }

    /// The churn definition alert outcomes are judged by.
    pub fn outcome_definition(&self) -> ChurnDefinition {
        self.outcome_definition
    }

    /// The holdout experiment at-risk alerts are assigned under.
    pub fn experiment(&self) -> &Experiment {
        &self.experiment
    }

    /// Customers whose latest alert episode has no outcome yet (its horizon has not passed).
    pub fn pending_outcomes(&self) -> usize {
        self.customers
            .iter()
            .filter(|(_, _, c)| c.mem.outcome.get().is_some())
            .count()
    }

    /// The low watermark over every partition: `None` while a partition that has not started
    /// its clock is still held by an announced source, else the oldest partition watermark.
    pub fn watermark(&self) -> Option<DateTime<Utc>> {
        let mut low: Option<DateTime<Utc>> = None;
        for (p, c) in &self.parts {
            match c.watermark {
                Some(w) => low = Some(low.map_or(w, |l| l.min(w))),
                None if self.held(*p) => return None,
                None => {}
            }
        }
        low
    }

    /// The last day closed by each partition's clock.
    pub fn closed_days(&self) -> Vec<(i32, Option<i32>)> {
        self.parts.iter().map(|(p, c)| (*p, c.closed)).collect()
    }

    /// Events that arrived for a day their partition's clock had already closed (out-of-order
    /// input): folded into the state, but the closed day is not scored again.
    pub fn late_events(&self) -> u64 {
        self.late_events
    }

    /// Engagement events with a `feature` value no counter of the model's metric catalog names:
    /// counted in the catalog's `other` counter (0 without a catalog that filters by feature).
    pub fn catalog_other_events(&self) -> u64 {
        self.catalog_other
    }

    /// The features this engine computes: the registry plus the model's metric catalog.
    pub fn features(&self) -> &FeatureSet {
        &self.features
    }

    /// Decode, validate, de-duplicate and fold one message payload from source `source` (a small
    /// index per topic-partition, chosen by the caller).
    pub fn ingest(
        &mut self,
        bytes: &[u8],
        source: usize,
        received: Instant,
        now: DateTime<Utc>,
    ) -> Ingest {
        match churn_events::decode(bytes, now, &self.limits) {
            Ok(ev) => self.ingest_event(&ev, source, received),
            Err(r) => Ingest::Rejected(r),
        }
    }

    /// [`Engine::ingest`] for a Kafka message: checks its key (the customer id, or none), records
    /// the partition and offset, and skips a message whose offset the customer's (restored)
    /// state already contains on the same (topic, partition) — its event time still moves the
    /// source's clock: it is part of the partition's stream. Offsets of different partitions
    /// are never compared: a customer whose events move to another partition keeps them all.
    pub fn ingest_from(
        &mut self,
        bytes: &[u8],
        key: Option<&[u8]>,
        origin: Origin,
        received: Instant,
        now: DateTime<Utc>,
    ) -> Ingest {
        let ev = match churn_events::decode(bytes, now, &self.limits)
            .and_then(|ev| churn_events::check_key(key, &ev).map(|()| ev))
        {
            Ok(ev) => ev,
            Err(r) => return Ingest::Rejected(r),
        };
        self.register(origin.source, origin.partition, received);
        let t = origin.topic.min(3);
        let known = self.customers.find(&ev.customer_id);
        if let Some((_, c)) = known.and_then(|s| self.customers.get(s)) {
            if c.applied_at(t, origin.partition) >= origin.offset {
                self.note_source(origin.source, ev.occurred_at, received);
                return Ingest::Duplicate;
            }
        }
        let Some(slot) = self.accept(&ev, origin.source, received) else {
            return Ingest::Duplicate;
        };
        if let Some(c) = self.customers.get_mut(slot) {
            if c.partition == origin.partition {
                c.applied[t] = c.applied[t].max(origin.offset);
            }
        }
        Ingest::Accepted
    }

    /// The offsets of input `topic` on `partition` went back to `from` (the topic was deleted
    /// and recreated, or the broker lost its log): offsets at or above `from` that customers'
    /// states applied belong to the old log, so they are forgotten — otherwise every new event
    /// up to the old log's end would be dropped as a replay. The changed states are written with
    /// the next changelog records. Returns how many customers had offsets forgotten.
    pub fn input_offsets_reset(&mut self, topic: usize, partition: i32, from: i64) -> usize {
        let topic = topic.min(3);
        let mut n = 0;
        let mut touched = Vec::new();
        for (slot, _, c) in self.customers.iter_mut() {
            if c.forget_offsets(topic, partition, from) {
                n += 1;
                if !c.changed {
                    c.changed = true;
                    touched.push(slot);
                }
            }
        }
        self.changed.extend(touched);
        n
    }

    /// Customers whose events arrived on another partition than their state's (co-partitioning
    /// changed) since the engine started.
    pub fn partition_moves(&self) -> u64 {
        self.partition_moves
    }

    /// Fold one already-validated event from `source`.
    pub fn ingest_event(&mut self, ev: &Event, source: usize, received: Instant) -> Ingest {
        match self.accept(ev, source, received) {
            Some(_) => Ingest::Accepted,
            None => Ingest::Duplicate,
        }
    }

    /// Make sure `source` exists, on `partition` (a source's partition never changes).
    fn register(&mut self, source: usize, partition: i32, at: Instant) {
        if self.sources.len() <= source {
            self.sources.resize(source + 1, None);
        }
        if self.sources[source].is_none() {
            self.sources[source] = Some(Source {
                partition,
                newest: None,
                seen: at,
                awaiting: None,
                assigned_backlog: false,
                behind: None,
            });
        }
        self.parts.entry(partition).or_default();
    }

    /// A source delivered an event of time `t`.
    fn note_source(&mut self, source: usize, t: DateTime<Utc>, received: Instant) {
        if let Some(Some(s)) = self.sources.get_mut(source) {
            s.seen = received;
            s.awaiting = None;
            if s.newest.is_none_or(|n| t > n) {
                s.newest = Some(t);
            }
            if let Some(c) = self.parts.get_mut(&s.partition) {
                c.newest = Some(c.newest.map_or(t, |n| n.max(t)));
            }
        }
    }

    /// [`Engine::ingest_event`]: the customer's slot, or None for a duplicate.
    fn accept(&mut self, ev: &Event, source: usize, received: Instant) -> Option<Slot> {
        // A source used without announcement belongs to partition 0 (file replays, tests).
        self.register(source, 0, received);
        self.note_source(source, ev.occurred_at, received);
        if self.dedupe.check(&ev.customer_id, &ev.event_id) {
            return None;
        }
        // The customer's own window: it outlives the in-memory one (restarts, rebalances).
        let window = self.pipeline.dedupe_per_customer;
        let fingerprint = RecentIds::fingerprint(&ev.event_id);
        let known = self.customers.find(&ev.customer_id);
        if window > 0
            && known
                .and_then(|s| self.customers.get(s))
                .is_some_and(|(_, c)| c.recent.contains(fingerprint))
        {
            return None;
        }
        let partition = self.sources[source].map_or(0, |s| s.partition);
        let day = day_of(ev.occurred_at);
        if let Some(clock) = self.parts.get_mut(&partition) {
            clock.anchor = Some(clock.anchor.map_or(day, |a| a.min(day)));
            if clock.closed.is_some_and(|c| day <= c) {
                self.late_events += 1;
            }
        }
        if let Payload::Feedback(f) = &ev.payload {
            self.count_nps(day, f.nps_score);
        }
        let slot = match known {
            Some(s) => s,
            None => self
                .customers
                .find_or_insert_with(&ev.customer_id, Customer::default),
        };
        let c = self.customers.get_mut(slot)?;
        if known.is_some() && c.partition != partition {
            // Co-partitioning changed under this customer (partitions added, another
            // partitioner): its state moves with its events, and the old partition's changelog
            // gets a tombstone so a restore of it does not bring the old state back.
            let from = c.partition;
            c.move_home(partition);
            self.partition_moves += 1;
            if self.partition_moves <= 10 || self.partition_moves.is_power_of_two() {
                tracing::warn!(
                    customer = %ev.customer_id,
                    from,
                    to = partition,
                    moves = self.partition_moves,
                    "a customer's events arrive on another input partition than its state: input topics are not co-partitioned by customer_id any more (partitions added? another partitioner?)"
                );
            }
            self.forgotten.push((ev.customer_id.clone(), from));
        } else {
            c.partition = partition;
        }
        if self
            .features
            .compiled()
            .contributions(ev, &mut self.catalog_add)
        {
            self.catalog_other += 1;
        }
        let c = self.customers.get_mut(slot)?;
        c.rollups.apply_with(ev, &self.catalog_add);
        c.recent.push(fingerprint, window);
        if !c.changed {
            c.changed = true;
            self.changed.push(slot);
        }
        if !c.dirty {
            c.dirty = true;
            self.dirty.push((slot, Some(received)));
        }
        Some(slot)
    }

    fn count_nps(&mut self, day: i32, score: u8) {
        let pos = self.nps_days.iter().position(|e| e.0 == day);
        let e = match pos {
            Some(i) => &mut self.nps_days[i],
            None => {
                self.nps_days.push_back((day, 0, 0, 0));
                let last = self.nps_days.len() - 1;
                &mut self.nps_days[last]
            }
        };
        match churn_events::NpsCategory::of(score) {
            churn_events::NpsCategory::Promoter => e.1 += 1,
            churn_events::NpsCategory::Detractor => e.2 += 1,
            churn_events::NpsCategory::Passive => {}
        }
        e.3 += 1;
    }

    /// Announce a source (a topic-partition of input `partition`, just assigned) before it
    /// delivers anything: until it delivers, it holds its partition's clock — for
    /// `idle_source_ms` if it had nothing to read at assignment (it may stay empty), and up to
    /// [`HOLD_FACTOR`] × `idle_source_ms` if it had a `backlog` (in case that backlog vanished
    /// meanwhile). Without this, the topic fetched first (say months of subscription events in
    /// one fetch) would move the partition's clock to its end at once, and its customers'
    /// engagement and purchases not read yet would be late.
    pub fn expect_source(&mut self, source: usize, partition: i32, at: Instant, backlog: bool) {
        self.register(source, partition, at);
        if let Some(Some(s)) = self.sources.get_mut(source) {
            if s.newest.is_none() {
                s.seen = at;
                s.awaiting = Some(backlog);
                s.assigned_backlog = backlog;
            }
        }
    }

    /// The consumer's view of a source: it has unread records (lag > 0, from the consumer's
    /// statistics). A source with a backlog is behind, not idle: it holds its partition's clock
    /// for as long as that lasts, so no partition's clock passes records still waiting to be
    /// fetched. Without lag information (a broker whose watermarks are wrong) sources fall back
    /// to the idle rule.
    pub fn set_backlog(&mut self, source: usize, behind: Option<bool>) {
        if let Some(Some(s)) = self.sources.get_mut(source) {
            s.behind = behind;
        }
    }

    /// Forget a source (its partition was revoked): it no longer holds or sets a clock.
    pub fn forget_source(&mut self, source: usize, _at: Instant) {
        if let Some(s) = self.sources.get_mut(source) {
            *s = None;
        }
    }

    /// Is partition `p`'s clock held by a source that announced itself and has not delivered?
    fn held(&self, p: i32) -> bool {
        let now = self.clock_at.unwrap_or_else(Instant::now);
        let idle = std::time::Duration::from_millis(self.pipeline.idle_source_ms);
        self.sources.iter().flatten().any(|s| {
            s.partition == p
                && s.newest.is_none()
                && s.awaiting_holds(now.saturating_duration_since(s.seen), idle)
        })
    }

    /// Recompute every partition's watermark: the wall clock with `clock = "wall"`, else the
    /// minimum newest event time over the partition's sources that are not idle at `at`
    /// (delivered within `idle_source_ms`, or behind with a backlog; never moves backwards).
    /// While an announced source has not delivered yet (and is not idle), it does not move.
    pub fn advance_watermark(&mut self, now: DateTime<Utc>, at: Instant) {
        self.clock_at = Some(self.clock_at.map_or(at, |c| c.max(at)));
        let idle = std::time::Duration::from_millis(self.pipeline.idle_source_ms);
        for (p, clock) in self.parts.iter_mut() {
            let candidate = match self.pipeline.clock {
                Clock::Wall => Some(now),
                Clock::Event => {
                    let mut waiting = false;
                    let mut active: Option<DateTime<Utc>> = None;
                    let newest = clock.newest;
                    for s in self.sources.iter().flatten().filter(|s| s.partition == *p) {
                        let since = at.saturating_duration_since(s.seen);
                        // Behind (lag > 0): unread records are waiting, whatever the time. While
                        // the lag is unknown, a backlog at assignment holds for at most
                        // HOLD_FACTOR × idle.
                        let assigned =
                            s.behind.is_none() && s.assigned_backlog && since <= idle * HOLD_FACTOR;
                        let holds = match (s.newest, s.awaiting) {
                            (None, Some(_)) => s.awaiting_holds(since, idle),
                            (None, None) => false,
                            (Some(_), _) => since <= idle || s.behind == Some(true) || assigned,
                        };
                        match s.newest {
                            None if holds => waiting = true,
                            Some(t) if holds => active = Some(active.map_or(t, |a| a.min(t))),
                            _ => {}
                        }
                    }
                    if waiting {
                        continue;
                    }
                    // Every source idle: the newest time seen anywhere in the partition.
                    active.or(newest)
                }
            };
            if let Some(c) = candidate {
                if clock.watermark.is_none() {
                    tracing::info!(
                        partition = *p,
                        watermark = %c.format("%F"),
                        warmup_anchor = ?clock.anchor.map(|d| day_start(d).format("%F").to_string()),
                        warmup_days = self.pipeline.warmup_days,
                        "event-time clock started"
                    );
                }
                if clock.watermark.is_none_or(|w| c > w) {
                    clock.watermark = Some(c);
                }
            }
        }
    }

    /// Number of customers with unscored events.
    pub fn pending(&self) -> usize {
        self.dirty.len()
    }

    /// Advance the clocks and score every day they close (see "Day close" on [`Engine`]).
    pub fn score_dirty(&mut self) -> Result<Scored, Error> {
        self.advance_watermark(Utc::now(), Instant::now());
        self.close_days()
    }

    /// The timer's pass: close what the clocks allow (silent customers are scored by the day
    /// close, on the days their silence makes them due, and forgotten after
    /// `forget_after_days`), expire old rollup days, and forget the least recently active
    /// customers over `max_customers`.
    pub fn sweep(&mut self) -> Result<Scored, Error> {
        self.advance_watermark(Utc::now(), Instant::now());
        let mut out = self.close_days()?;
        let parts = &self.parts;
        for (_, _, c) in self.customers.iter_mut() {
            if let Some(d) = parts.get(&c.partition).and_then(|p| p.closed) {
                c.rollups.expire(d - RETAIN_DAYS);
            }
        }
        if let Some(today) = self.parts.values().filter_map(|p| p.closed).max() {
            while self.nps_days.front().is_some_and(|e| e.0 <= today - 90) {
                self.nps_days.pop_front();
            }
        }
        out.forgotten_cap = self.forget_over_cap();
        Ok(out)
    }

    /// Close every day each partition's watermark has passed: score the customers due on each
    /// day (active that day, or silent on their schedule), in day order; forget customers silent
    /// for `forget_after_days`.
    fn close_days(&mut self) -> Result<Scored, Error> {
        let mut out = Scored::default();
        let through: HashMap<i32, i32> = self
            .parts
            .iter()
            .filter_map(|(p, c)| {
                let d = day_of(c.watermark?) - 1;
                c.closed.is_none_or(|closed| d > closed).then_some((*p, d))
            })
            .collect();
        if through.is_empty() {
            return Ok(out);
        }
        let silent = (
            self.pipeline.silent_after_days,
            self.pipeline.churn_after_days,
        );
        let forget_after = self.pipeline.forget_after_days;
        let mut due: std::collections::BTreeMap<i32, Vec<(Slot, bool)>> = Default::default();
        let mut gone = Vec::new();
        let mut days = Vec::new();
        for (s, _, c) in self.customers.iter() {
            let Some(&d) = through.get(&c.partition) else {
                continue;
            };
            days.clear();
            match due_days(c, d, silent, forget_after, &mut days) {
                Due::Forget => gone.push(s),
                Due::Days => {
                    for &(day, active) in &days {
                        due.entry(day).or_default().push((s, active));
                    }
                }
            }
        }
        out.forgotten_silent = gone.len();
        for s in gone {
            if let Some((k, c)) = self.customers.remove(s) {
                self.forgotten.push((k.into(), c.partition));
            }
        }
        self.drop_removed_slots();
        let received: HashMap<Slot, Instant> = self
            .dirty
            .iter()
            .filter_map(|(s, r)| r.map(|r| (*s, r)))
            .collect();
        for (day, mut slots) in due {
            // In id order: the outputs do not depend on slot placement.
            slots.sort_unstable_by(|a, b| {
                let key = |s: Slot| self.customers.get(s).map(|(k, _)| k);
                key(a.0).cmp(&key(b.0))
            });
            let keys = slots
                .into_iter()
                .map(|(s, active)| {
                    let r = if active {
                        received.get(&s).copied()
                    } else {
                        None
                    };
                    (s, r, if active { "event" } else { "sweep" })
                })
                .collect();
            self.score(keys, day, &mut out)?;
        }
        for (p, d) in &through {
            if let Some(c) = self.parts.get_mut(p) {
                c.closed = Some(*d);
            }
        }
        // Still dirty: customers with events on days not closed yet.
        let customers = &mut self.customers;
        self.dirty.retain(|(s, _)| {
            let Some(c) = customers.get_mut(*s) else {
                return false;
            };
            let open = through
                .get(&c.partition)
                .is_none_or(|d| c.rollups.last_day().is_some_and(|l| l > *d));
            c.dirty = open;
            open
        });
        Ok(out)
    }

    /// Above `max_customers`, forget the least recently active customers. Returns how many.
    fn forget_over_cap(&mut self) -> usize {
        let cap = self.pipeline.max_customers;
        let over = match cap {
            0 => 0,
            cap => self.customers.len().saturating_sub(cap),
        };
        if over == 0 {
            return 0;
        }
        let mut rest: Vec<(i64, &str, Slot)> = self
            .customers
            .iter()
            .map(|(s, k, c)| (c.rollups.last_event.unwrap_or(i64::MIN), k, s))
            .collect();
        // Least recently active first (ties by id, for determinism).
        rest.sort_unstable();
        let gone: Vec<Slot> = rest.into_iter().take(over).map(|(_, _, s)| s).collect();
        for s in gone {
            if let Some((k, c)) = self.customers.remove(s) {
                self.forgotten.push((k.into(), c.partition));
            }
        }
        self.drop_removed_slots();
        over
    }

    /// After removals: forget removed slots in the dirty and changed lists (before any insert
    /// can reuse them).
    fn drop_removed_slots(&mut self) {
        let customers = &self.customers;
        self.dirty.retain(|(s, _)| customers.contains(*s));
        self.changed.retain(|s| customers.contains(*s));
    }

    /// Score the customers in `keys` (slot, when its oldest unscored event was received, and
    /// the trigger) as of the end of `today`.
    fn score(
        &mut self,
        keys: Vec<(Slot, Option<Instant>, &'static str)>,
        today: i32,
        out: &mut Scored,
    ) -> Result<(), Error> {
        if keys.is_empty() {
            return Ok(());
        }
        let m = self.feature_rows(keys.iter().map(|(s, _, _)| *s), today)?;
        let mut input = Vec::with_capacity(self.features.len());
        let as_of = day_start(today + 1) - Duration::seconds(1);
        let window = day_start(today).format("%Y-%m-%d").to_string();
        let as_of_text = ScoreRecordRef::as_of_text(as_of);
        for i in 0..m.len() {
            let (slot, received, trigger) = keys[m.cids[i] as usize];
            let raw = m.row(i);
            self.features.model_input(raw, &mut input);
            let served = self.served.score(&self.model, raw, &input);
            let p = served.risk;
            let Some((key, c)) = self.customers.get(slot) else {
                continue;
            };
            if let Some(shadow) = &self.shadow {
                out.shadow.push(shadow_out(
                    &self.model,
                    shadow,
                    self.min_band,
                    key,
                    p,
                    raw,
                    &input,
                    as_of,
                )?);
            }
            let warm = self
                .parts
                .get(&c.partition)
                .and_then(|p| p.anchor)
                .is_some_and(|a| today - a >= self.pipeline.warmup_days);
            let key = key.to_string();
            let Some(c) = self.customers.get_mut(slot) else {
                continue;
            };
            let previous_day = c.last_scored_day;
            c.last_scored_day = Some(today);
            if !c.changed {
                c.changed = true;
                self.changed.push(slot);
            }
            let segment = policy::segment(&self.cols, raw);
            // The pending outcome of the customer's alert episode, once the horizon has passed.
            let horizon = self.outcome_definition.horizon();
            if let Some(o) = c.mem.outcome.get().filter(|o| today >= o.day + horizon) {
                c.mem.outcome.set(None);
                out.outcomes.push(Outcome {
                    customer_id: key.clone(),
                    alert_day: o.day,
                    band: o.band,
                    action: policy::ACTIONS
                        .get(usize::from(o.action))
                        .copied()
                        .unwrap_or(policy::ACTIONS[0]),
                    holdout: o.holdout,
                    churned: self.outcome_definition.label(&c.rollups, o.day),
                });
            }
            // A customer who has churned (cancelled, or silent for `churn_after_days`) is no
            // longer at risk: no at-risk decision, no revenue at risk, and the band memory is
            // cleared so that after a comeback entering a band alerts again.
            let churn_after = self.pipeline.churn_after_days;
            let lapse = lapse_as_of(&c.rollups, today, churn_after, self.cols.mrr(raw));
            let decision = if lapse.is_some() {
                c.revenue_at_risk = 0.0;
                c.mem.band = None;
                c.mem.risk = None;
                None
            } else {
                c.revenue_at_risk =
                    p * policy::expected_revenue(&self.cols, raw, self.alerts.horizon_days);
                policy::decide(
                    &mut c.mem,
                    &self.model.thresholds,
                    &self.alerts,
                    self.min_band,
                    p,
                    today,
                    warm,
                )
            };
            // During the warm-up the memory is untouched: publish the raw band.
            let band = c.mem.band.unwrap_or_else(|| self.model.thresholds.band(p));
            let score = ScoreRecordRef {
                customer_id: &key,
                risk: p,
                risk_band: band.as_str(),
                segment,
                model_version: &self.model.model_version,
                as_of: &as_of_text,
            };
            out.scores.push(ScoreOut {
                key: key.clone(),
                payload: serde_json::to_vec(&score)?,
            });
            // A lapse is alerted on the first scored day on or after the day it happened: the
            // day itself (a cancel's day has its events; the silent schedule includes the day
            // the silence reaches `churn_after_days`). So "already sent" is a function of the
            // last scored day, which the state records carry: a restore neither repeats nor
            // skips it. Lapses of the warm-up are not alerted later.
            if let Some(l) = lapse.filter(|l| warm && previous_day.is_none_or(|d| l.day > d)) {
                let data = LapsedData {
                    customer_id: key.clone(),
                    reason: if l.cancel { "cancel" } else { "inactivity" }.into(),
                    lapsed_on: day_start(l.day).date_naive(),
                    inactivity_days: churn_after,
                    silent_days: l.silent_days,
                    last_event_at: last_event_as_of(&c.rollups, today),
                    last_mrr: l.last_mrr,
                    risk: p,
                    segment: segment.into(),
                    recommended_action: WIN_BACK.into(),
                    model_version: self.model.model_version.clone(),
                    as_of,
                    trigger: trigger.into(),
                };
                let ev = CloudEvent::lapsed(&self.alerts.source, data);
                if l.cancel {
                    out.lapsed_cancel += 1;
                } else {
                    out.lapsed_inactivity += 1;
                }
                out.alerts.push(AlertOut {
                    key: key.clone(),
                    id: ev.id.clone(),
                    payload: serde_json::to_vec(&ev)?,
                    band: self.model.thresholds.band(p),
                    action: WIN_BACK,
                    treatment: TREATED,
                    received,
                });
                continue;
            }
            let Some((previous_risk, previous_band)) = decision.filter(|_| warm) else {
                continue;
            };
            let reasons = if served.cold_start {
                let logit = |q: f64| {
                    let q = q.clamp(1e-6, 1.0 - 1e-6);
                    (q / (1.0 - q)).ln()
                };
                let base = self.model.cold_start.as_ref().map_or(p, |c| c.base_rate);
                vec![self
                    .explainer
                    .cold_start_reason(raw, logit(p) - logit(base))]
            } else {
                self.explainer.reasons(&input, raw, 3)
            };
            let top = reasons.first().and_then(reasons::reason_group);
            let action = policy::action(&self.cols, &self.alerts, raw, top);
            let last_event_at = last_event_as_of(&c.rollups, today);
            let treatment = self.experiment.assign(&key);
            let holdout = treatment == HOLDOUT;
            if c.mem.outcome.get().is_none() {
                c.mem.outcome.set(Some(PendingOutcome {
                    day: today,
                    band,
                    action: policy::action_index(action),
                    holdout,
                }));
            }
            let data = AlertData {
                customer_id: key.clone(),
                risk: p,
                risk_band: band.as_str().into(),
                previous_risk,
                previous_band: previous_band.map(|b| b.as_str().into()),
                segment: segment.into(),
                reasons,
                recommended_action: action.into(),
                revenue_at_risk: c.revenue_at_risk,
                model_version: self.model.model_version.clone(),
                as_of,
                last_event_at,
                trigger: trigger.into(),
                treatment: treatment.into(),
                experiment: Some(self.experiment.clone()),
                history_days: served
                    .history_days
                    .is_finite()
                    .then(|| served.history_days.max(0.0).round() as u32),
                confidence: served
                    .history_days
                    .is_finite()
                    .then(|| (served.history_days.max(0.0) / FULL_HISTORY_DAYS).min(1.0)),
                score_source: Some(
                    if served.cold_start {
                        SCORED_BY_COLD_START
                    } else {
                        SCORED_BY_MODEL
                    }
                    .into(),
                ),
            };
            let ev = CloudEvent::alert(&self.alerts.source, &window, data);
            out.alerts.push(AlertOut {
                key,
                id: ev.id.clone(),
                payload: serde_json::to_vec(&ev)?,
                band,
                action,
                treatment,
                received,
            });
        }
        Ok(())
    }

    /// Raw feature rows (registry order) of `keys` as of the end of `day`; `cids[i]` indexes
    /// `keys`. The one feature computation of the engine: scoring and the parity test use it.
    fn feature_rows(
        &self,
        keys: impl IntoIterator<Item = Slot>,
        day: i32,
    ) -> Result<FeatureMatrix, Error> {
        let empty = CustomerRollups::default();
        let frames = RollupFrames::build_with(
            keys.into_iter()
                .map(|s| self.customers.get(s).map_or(&empty, |(_, c)| &c.rollups)),
            day,
            &self.features,
        )?;
        Ok(FeatureMatrix::from_frame(&feature_frame(&frames)?)?)
    }

    /// Features of every tracked customer as of the end of `day`, as the scorer computes them:
    /// (customer ids sorted, matrix whose `cids` index that list).
    pub fn features_as_of(&self, day: i32) -> Result<(Vec<String>, FeatureMatrix), Error> {
        let mut keys: Vec<(&str, Slot)> = self.customers.iter().map(|(s, k, _)| (k, s)).collect();
        keys.sort_unstable();
        let m = self.feature_rows(keys.iter().map(|(_, s)| *s), day)?;
        Ok((keys.into_iter().map(|(k, _)| k.to_string()).collect(), m))
    }

    /// Changelog records of every customer changed since the last call (state after this batch).
    pub fn take_changelog(&mut self) -> Result<Vec<StateRecord>, Error> {
        self.take_changelog_chunk(usize::MAX)
    }

    /// [`Engine::take_changelog`], at most `max` records at a time (the rest stay queued for
    /// the next call; empty when nothing is left). A day rollover changes every customer of a
    /// partition: the service writes them in chunks instead of building one record per
    /// customer in memory at once. All tombstones come before any state record.
    pub fn take_changelog_chunk(&mut self, max: usize) -> Result<Vec<StateRecord>, Error> {
        let max = max.max(1);
        let tombstones = self.forgotten.len().min(max);
        let states = if tombstones == self.forgotten.len() {
            (max - tombstones).min(self.changed.len())
        } else {
            0
        };
        let keys: Vec<Slot> = self.changed.drain(..states).collect();
        let mut out = Vec::with_capacity(keys.len() + tombstones);
        // Tombstones first: a customer forgotten and seen again since gets its new state after.
        for (key, partition) in self.forgotten.drain(..tombstones) {
            out.push(StateRecord {
                partition,
                key,
                payload: Vec::new(),
            });
        }
        for s in keys {
            let Some(c) = self.customers.get_mut(s) else {
                continue;
            };
            c.changed = false;
            let clock = self.parts.get(&c.partition).copied().unwrap_or_default();
            let recent: Vec<u32> = c.recent.ids().collect();
            let snap = SnapshotRef {
                v: STATE_VERSION,
                partition: c.partition,
                applied: c.applied,
                rollups: &c.rollups,
                mem: &c.mem,
                last_scored_day: c.last_scored_day,
                revenue_at_risk: c.revenue_at_risk,
                first_day: clock.anchor,
                unscored: c.dirty,
                closed_day: clock.closed,
                watermark: clock.watermark.map(|w| w.timestamp_micros()),
                newest: clock.newest.map(|w| w.timestamp_micros()),
                foreign: c.foreign.as_deref().map_or(&[][..], Vec::as_slice),
                recent_ids: &recent,
            };
            let mut payload = Vec::with_capacity(64 + c.rollups.encoded_rows_len());
            snap.encode(&mut payload);
            let partition = c.partition;
            let key = self.customers.get(s).map(|(k, _)| k.to_string());
            out.push(StateRecord {
                partition,
                payload,
                key: key.unwrap_or_default(),
            });
        }
        Ok(out)
    }

    /// Restore one customer from a changelog record (later records replace earlier ones; an
    /// empty payload — a tombstone — forgets the customer). The customer's partition clock
    /// takes the record's warm-up anchor and closed day, and the customer's own first day: a
    /// restart or rebalance resumes the warm-up and the day close where the state left them.
    pub fn restore(&mut self, key: &str, payload: &[u8]) -> Result<(), Error> {
        self.restore_in(None, key, payload)
    }

    /// [`Engine::restore`] of a record read from changelog `partition`: a tombstone there
    /// forgets the customer only if its state is on that partition — a customer whose events
    /// moved to another partition leaves a tombstone behind on the old one, and restoring the old
    /// partition after the new one must not forget it.
    pub fn restore_in(
        &mut self,
        partition: Option<i32>,
        key: &str,
        payload: &[u8],
    ) -> Result<(), Error> {
        if payload.is_empty() {
            let elsewhere = |c: &Customer| partition.is_some_and(|p| c.partition != p);
            if self
                .customers
                .find(key)
                .and_then(|s| self.customers.get(s))
                .is_some_and(|(_, c)| elsewhere(c))
            {
                return Ok(());
            }
            if let Some(s) = self.customers.find(key) {
                self.customers.remove(s);
                self.drop_removed_slots();
            }
            return Ok(());
        }
        let snap = Snapshot::decode(payload)?;
        let clock = self.parts.entry(snap.partition).or_default();
        for d in [snap.first_day, snap.rollups.first_day]
            .into_iter()
            .flatten()
        {
            clock.anchor = Some(clock.anchor.map_or(d, |a| a.min(d)));
        }
        if let Some(d) = snap.closed_day {
            clock.closed = Some(clock.closed.map_or(d, |c| c.max(d)));
        }
        // Every event before the record's watermark had arrived when it was written (sources
        // deliver in event-time order), and what is re-delivered after the restore is newer.
        if let Some(w) = snap.watermark.and_then(DateTime::from_timestamp_micros) {
            if clock.watermark.is_none_or(|c| w > c) {
                clock.watermark = Some(w);
            }
        }
        if let Some(t) = snap.newest.and_then(DateTime::from_timestamp_micros) {
            clock.newest = Some(clock.newest.map_or(t, |n| n.max(t)));
        }
        let slot = self.customers.find_or_insert_with(key, Customer::default);
        let Some(c) = self.customers.get_mut(slot) else {
            return Ok(());
        };
        c.rollups = snap.rollups;
        c.mem = snap.mem;
        c.partition = snap.partition;
        c.applied = snap.applied;
        c.foreign = (!snap.foreign.is_empty()).then(|| Box::new(snap.foreign));
        c.recent = RecentIds::from_ids(&snap.recent_ids, self.pipeline.dedupe_per_customer);
        c.last_scored_day = snap.last_scored_day;
        c.revenue_at_risk = snap.revenue_at_risk;
        let unscored = c
            .rollups
            .last_day()
            .is_some_and(|d| c.last_scored_day.is_none_or(|l| d > l));
        if (snap.unscored || unscored) && !c.dirty {
            c.dirty = true;
            self.dirty.push((slot, None));
        }
        Ok(())
    }

    /// Forget every customer of an input partition (revoked in a rebalance; its new owner restores
    /// it from the changelog). Returns how many were dropped.
    pub fn drop_partition(&mut self, partition: i32) -> usize {
        let before = self.customers.len();
        // The dedupe window may remember events of this partition that were ingested but never
        // made it into the changelog (revoked mid-batch): if the partition comes back, they are
        // re-delivered from the committed offset and must not be dropped as duplicates.
        self.dedupe.clear();
        let gone: Vec<Slot> = self
            .customers
            .iter()
            .filter(|(_, _, c)| c.partition == partition)
            .map(|(s, _, _)| s)
            .collect();
        for s in gone {
            self.customers.remove(s);
        }
        self.drop_removed_slots();
        // Its clock goes with it: the next owner resumes it from the changelog.
        self.parts.remove(&partition);
        before - self.customers.len()
    }

    /// Population KPIs (O(customers); call from the sweep timer, not per event).
    pub fn kpis(&self) -> Kpis {
        let mut k = Kpis {
            customers: self.customers.len(),
            ..Kpis::default()
        };
        let today = self.watermark().map(day_of);
        let mut churned = 0usize;
        k.state_bytes = self.customers.bytes();
        let reference = self.model.drift_reference.as_ref().map(|r| &r.score);
        let mut bins = vec![0usize; reference.map_or(0, |r| r.shares.len())];
        for (_, _, c) in self.customers.iter() {
            if let (Some(r), Some(p)) = (reference, c.mem.risk.filter(|p| p.is_finite())) {
                bins[r.bin(p)] += 1;
            }
            k.state_bytes += c.rollups.heap_bytes();
            k.by_band[usize::from(band_index(c.mem.band.unwrap_or(Band::Low)))] += 1;
            k.revenue_at_risk += c.revenue_at_risk;
            if let (Some(t), Some(last)) = (today, c.rollups.last_event) {
                let d = day_of(DateTime::from_timestamp_micros(last).unwrap_or_default());
                if t - d >= self.pipeline.churn_after_days {
                    churned += 1;
                }
            }
        }
        let (p, d, n) = self.nps_days.iter().fold((0u64, 0u64, 0u64), |a, e| {
            (
                a.0 + u64::from(e.1),
                a.1 + u64::from(e.2),
                a.2 + u64::from(e.3),
            )
        });
        if n > 0 {
            k.nps_90d = Some(100.0 * (p as f64 - d as f64) / n as f64);
        }
        if k.customers > 0 {
            k.churned_fraction = churned as f64 / k.customers as f64;
        }
        k.score_psi = reference.and_then(|r| r.psi_of_counts(&bins));
        k
    }

    /// Live feature drift: the population stability index of every feature (name, PSI; the
    /// model's feature order) against the artifact's training reference, as of the last closed
    /// day (the day before the low watermark's). The population is the training set's
    /// observation rule on that day (customers whose `recency_activity_days` is under the
    /// model's `active_within_days`), so a stable input gives the PSIs of `churnstream drift`.
    /// With more than `max_rows` candidates, a deterministic sample (a hash of the customer id)
    /// of about `max_rows` of them; `max_rows` 0 = all. Empty when the model has no reference,
    /// there is no watermark yet or nobody qualifies. O(customers) plus one feature query over
    /// the sample: call it from a timer, not per batch.
    pub fn feature_psi(&self, max_rows: usize) -> Result<Vec<(String, f64)>, Error> {
        let Some(reference) = self.model.drift_reference.as_ref() else {
            return Ok(Vec::new());
        };
        let Some(as_of) = self.watermark().map(|w| day_of(w) - 1) else {
            return Ok(Vec::new());
        };
        let active_within = crate::train::recorded_plan(&self.model)
            .map_or(self.pipeline.churn_after_days, |p| p.active_within_days);
        // Candidates: seen by `as_of`, an event within the window (the exact rule is applied
        // to the computed rows below).
        let since = day_start(as_of - active_within).timestamp_micros();
        let candidates: Vec<(u64, Slot)> = self
            .customers
            .iter()
            .filter(|(_, _, c)| {
                c.rollups.first_day.is_some_and(|d| d <= as_of)
                    && c.rollups.last_event.is_some_and(|t| t >= since)
            })
            .map(|(s, k, _)| (fnv1a(k.as_bytes()), s))
            .collect();
        let keep = match max_rows {
            0 => u64::MAX,
            m if candidates.len() <= m => u64::MAX,
            m => ((m as f64 / candidates.len() as f64) * u64::MAX as f64) as u64,
        };
        let sample = candidates
            .into_iter()
            .filter(|(h, _)| *h <= keep)
            .map(|(_, s)| s);
        let m = self.feature_rows(sample, as_of)?;
        let names = self.features.names();
        let recency = names.iter().position(|n| *n == "recency_activity_days");
        let mut columns: Vec<Vec<f64>> = vec![Vec::new(); self.features.len()];
        for i in 0..m.len() {
            let row = m.row(i);
            if recency.is_some_and(|c| row.get(c).is_some_and(|r| *r >= f64::from(active_within))) {
                continue;
            }
            for (col, v) in columns.iter_mut().zip(row) {
                col.push(*v);
            }
        }
        Ok(columns
            .iter()
            .zip(&reference.features)
            .zip(names.iter())
            .filter_map(|((col, r), name)| r.psi(col).map(|psi| (name.to_string(), psi)))
            .collect())
    }

    /// Rollups of one customer (for parity tests and inspection).
    pub fn rollups(&self, customer_id: &str) -> Option<&CustomerRollups> {
        let s = self.customers.find(customer_id)?;
        self.customers.get(s).map(|(_, c)| &c.rollups)
    }

    /// Customer ids currently tracked, sorted.
    pub fn customer_ids(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .customers
            .iter()
            .map(|(_, k, _)| k.to_string())
            .collect();
        v.sort_unstable();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::Dedupe;
    use std::hash::BuildHasher;

    #[test]
    fn dedupe_remembers_at_least_the_last_window_and_at_most_twice_it() {
        let cap: usize = 50;
        let mut d = Dedupe::new(cap);
        let remembers = |d: &Dedupe, i: usize| {
            let k = d.hasher.hash_one(("c", format!("e{i}")));
            d.current.contains(&k) || d.previous.contains(&k)
        };
        for i in 0..1000usize {
            assert!(!d.check("c", &format!("e{i}")), "e{i} is new");
            assert!(d.check("c", &format!("e{i}")), "e{i} again is a duplicate");
            for j in (i + 1).saturating_sub(cap)..=i {
                assert!(remembers(&d, j), "e{j} within the window at e{i}");
            }
            if i >= 2 * cap {
                assert!(
                    !remembers(&d, i - 2 * cap),
                    "e{} forgotten at e{i}",
                    i - 2 * cap
                );
            }
        }
        d.clear();
        assert!(!d.check("c", "e999"), "forgotten after clear");
        let mut off = Dedupe::new(0);
        assert!(
            !off.check("c", "x") && !off.check("c", "x"),
            "0 disables de-duplication"
        );
    }

    #[test]
    fn equal_event_ids_of_two_customers_are_both_kept() {
        let mut d = Dedupe::new(100);
        assert!(!d.check("alice", "order-1"));
        assert!(!d.check("bob", "order-1"), "another customer's id");
        assert!(d.check("alice", "order-1"), "the same customer's id again");
        // The pair is hashed as a pair: moving bytes between the parts is another key.
        assert!(!d.check("alic", "eorder-1"));
    }
}
#[cfg(test)]
mod size_budget {
    /// A million customers are the engine's memory (`state_memory` benchmark, ≤ 300 B per
    /// customer): a field added to `Customer` must pay for itself.
    #[test]
    fn a_customer_stays_within_its_budget() {
        assert!(
            std::mem::size_of::<super::Customer>() <= 200,
            "Customer is {} bytes",
            std::mem::size_of::<super::Customer>()
        );
        assert_eq!(std::mem::size_of::<super::RecentIds>(), 16);
    }
}

/// 64-bit FNV-1a: a stable hash (the same on every build and run) for deterministic samples.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}
