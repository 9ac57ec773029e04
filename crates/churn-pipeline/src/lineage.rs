//! Which changelog records a restore applies when more than one member wrote a partition.
//!
//! Every state record carries its writer's *lineage* ([`wrap`]; tombstones in the headers
//! [`WRITER_HEADER`] and [`BASE_HEADER`]): the state it belongs to (the token of the restore that
//! began it) and the state that restore started from and where (`<token>@<marker offset>`). A lineage is one member's
//! in-memory state of the partition, consistent by construction: the records it restored below
//! its marker, then everything it wrote itself.
//!
//! With one writer at a time (Apache Kafka's eager protocol, or no rebalance) the lineages form
//! a chain and the restore is "the last record of each key wins", as it always was. tansu's
//! coordinator hands a partition on *before* its previous owner has revoked it, so for a moment
//! two members process it and both write its changelog: the old owner's records then land after
//! the new owner's restore marker. "Last record wins" mixes the two members' states customer by
//! customer — a customer the new owner had not rewritten since comes back as the old owner left
//! it, at another position of the input than the rest of the partition — and alerts differ from
//! a run without faults. [`resolve`] instead restores exactly one lineage: of the lineages no
//! later one started from, the one that applied the most input.
//!
//! Records without lineage headers (written before this change) form one legacy lineage, as
//! does a lineage whose base is not in the log (compacted away): both resolve "last record
//! wins" below their cutoff. A key the chosen lineage does not hold but the log does (the
//! compacting broker kept only another lineage's newer record) comes back from that newest
//! record, counted in [`Resolved::fallback`]; the input is then re-read from that customer's own
//! position ([`Resolved::reread_from`]), so none of its events is skipped.

use std::collections::{BTreeMap, HashMap};

/// Header naming the lineage a tombstone belongs to (state records carry it in their value,
/// see [`wrap`]).
pub const WRITER_HEADER: &str = "churn.writer";
/// Header naming the lineage (and the marker offset) a tombstone's lineage started from.
pub const BASE_HEADER: &str = "churn.base";

/// First byte of a state record wrapped with its lineage ([`wrap`]). The lineage goes in the
/// value, not in record headers: tansu's sqlite engine keeps headers in a table without an
/// index and scans it for every record it serves, so a header on every state record makes
/// every fetch of every topic slower as the changelog grows (the broker stops answering within
/// minutes). Tombstones, which have no value and are rare, carry it in headers.
pub const LINEAGE_MAGIC: u8 = 0xC6;

/// A state record's value: [`LINEAGE_MAGIC`], the lineage, then the state record itself.
pub fn wrap(l: &Lineage, record: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(record.len() + l.token.len() + 32);
    out.push(LINEAGE_MAGIC);
    put_str(&mut out, &l.token);
    match &l.base {
        Some((t, o)) => {
            out.push(1);
            put_str(&mut out, t);
            out.extend_from_slice(&o.to_le_bytes());
        }
        None => out.push(0),
    }
    out.extend_from_slice(record);
    out
}

/// The lineage of a wrapped value and the state record inside it; a value that is not wrapped
/// (earlier versions) comes back whole with no lineage. `None` if a wrapped value is malformed.
pub fn unwrap(value: &[u8]) -> Option<(Option<Lineage>, &[u8])> {
    if value.first() != Some(&LINEAGE_MAGIC) {
        return Some((None, value));
    }
    let mut rest = &value[1..];
    let token = take_str(&mut rest)?;
    let (&flag, tail) = rest.split_first()?;
    rest = tail;
    let base = match flag {
        0 => None,
        1 => {
            let t = take_str(&mut rest)?;
            let (o, tail) = rest.split_first_chunk::<8>()?;
            rest = tail;
            Some((t, i64::from_le_bytes(*o)))
        }
        _ => return None,
    };
    Some((Some(Lineage { token, base }), rest))
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let n = u32::try_from(s.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(&s.as_bytes()[..n as usize]);
}

fn take_str(rest: &mut &[u8]) -> Option<String> {
    let (n, tail) = rest.split_first_chunk::<4>()?;
    let n = u32::from_le_bytes(*n) as usize;
    if tail.len() < n {
        return None;
    }
    let (s, tail) = tail.split_at(n);
    *rest = tail;
    String::from_utf8(s.to_vec()).ok()
}

/// The lineage a member's state records are written under (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lineage {
    /// Token of the restore that began this state (its restore markers' payload).
    pub token: String,
    /// The lineage the restore resumed and the offset of its marker; `None` when the log held
    /// nothing to resume.
    pub base: Option<(String, i64)>,
}

impl Lineage {
    /// The [`BASE_HEADER`] value: `<token>@<offset>` (an empty token: the legacy lineage).
    pub fn base_header(&self) -> Option<String> {
        self.base.as_ref().map(|(t, o)| format!("{t}@{o}"))
    }

    /// Parse a [`BASE_HEADER`] value.
    pub fn parse_base(v: &str) -> Option<(String, i64)> {
        let (t, o) = v.rsplit_once('@')?;
        Some((t.to_string(), o.parse().ok()?))
    }
}

/// One changelog record as read by a restore.
#[derive(Debug, Clone)]
pub struct Logged {
    pub offset: i64,
    pub key: String,
    /// Empty: a tombstone (the customer was forgotten).
    pub value: Vec<u8>,
    /// [`WRITER_HEADER`]; `None` for records written before lineages.
    pub writer: Option<String>,
    /// [`BASE_HEADER`], parsed.
    pub base: Option<(String, i64)>,
}

/// A changelog partition as a restore reads it, reduced while it is read to the records
/// [`resolve`] can still choose: of each key's records written by one lineage, only the newest
/// since the last restore marker (a lineage's cutoff is always a marker's offset, so a record
/// followed by a newer one of the same key and lineage with no marker between them can never
/// be chosen). Memory is bounded by keys × lineages × restores in the uncompacted log, not by
/// the number of records: a million customers rewritten ten times between two restores are a
/// million records, not ten million (a record a tombstone superseded stays: it holds offsets the
/// tombstone does not). [`resolve`] of the reduced log chooses the same records as of the whole
/// one (tested below); the one difference can be the tie-break between overlapping lineages,
/// which compares the newest applied offsets of the records kept, and those are the newest a
/// lineage applied unless its offsets went back (a recreated input topic).
#[derive(Debug, Default)]
pub struct Reducer {
    log: BTreeMap<i64, Logged>,
    /// Per key, per writer: the offset of its newest record kept, and the marker epoch it was
    /// read in.
    newest: HashMap<String, Vec<(Option<String>, i64, u32)>>,
    epoch: u32,
    last: Option<i64>,
    read: usize,
}

impl Reducer {
    /// True if `offset` is beyond everything read (a broker compacting while it is read may
    /// serve a range twice: each offset counts once, and a stale record applied after a newer
    /// one would roll state back).
    fn fresh(&mut self, offset: i64) -> bool {
        if self.last.is_some_and(|l| offset <= l) {
            return false;
        }
        self.last = Some(offset);
        true
    }

    /// A restore marker at `offset`: a cutoff may fall here.
    pub fn marker(&mut self, offset: i64) {
        if self.fresh(offset) {
            self.epoch += 1;
        }
    }

    /// The next record of the partition.
    pub fn push(&mut self, r: Logged) {
        if !self.fresh(r.offset) {
            return;
        }
        self.read += 1;
        let epoch = self.epoch;
        let entries = match self.newest.get_mut(r.key.as_str()) {
            Some(e) => e,
            None => self.newest.entry(r.key.clone()).or_default(),
        };
        match entries.iter_mut().find(|e| e.0 == r.writer) {
            Some(e) => {
                // A tombstone carries no applied offsets: the record it supersedes stays, as
                // the newest offsets its lineage applied (the tie-break between lineages).
                if e.2 == epoch && !r.value.is_empty() {
                    self.log.remove(&e.1);
                }
                e.1 = r.offset;
                e.2 = epoch;
            }
            None => entries.push((r.writer.clone(), r.offset, epoch)),
        }
        self.log.insert(r.offset, r);
    }

    /// Records read (each offset once), markers not counted.
    pub fn read(&self) -> usize {
        self.read
    }

    /// Records kept.
    pub fn kept(&self) -> usize {
        self.log.len()
    }

    /// The kept records in offset order.
    pub fn finish(self) -> Vec<Logged> {
        self.log.into_values().collect()
    }
}

/// What a restore applies.
#[derive(Debug, Default)]
pub struct Resolved {
    /// The chosen state: one record per key, tombstoned keys left out, in offset order.
    pub records: Vec<(String, Vec<u8>)>,
    /// The changelog offset of each of `records`.
    pub offsets: Vec<i64>,
    /// The chosen lineage (empty: the legacy one); the restoring member's base.
    pub view: String,
    /// How many lineages no later lineage started from (more than one: members overlapped).
    pub leaves: usize,
    /// Keys restored from another lineage's newer record (see the module doc).
    pub fallback: usize,
    /// Per input topic, the lowest offset the input must be re-read from for the fallback
    /// keys (one past their newest applied offset; 0 where they never had one). `None`:
    /// no constraint.
    pub reread_from: [Option<i64>; 4],
}

/// The newest input offset applied per input topic, as recorded in a state record.
pub type AppliedOf<'a> = &'a dyn Fn(&[u8]) -> Option<[i64; 4]>;

struct View {
    /// Indices into the log of this lineage's own records, in offset order.
    own: Vec<usize>,
    base: Option<(String, i64)>,
}

/// Choose the lineage a restore applies (see the module doc). `log` is in offset order;
/// `applied` reads a record's applied offsets (decoded only when lineages overlap). `prefer`:
/// the lineage the restoring member already holds in memory (a partition assigned to it again
/// without a revoke), chosen whenever the log has it.
pub fn resolve(log: &[Logged], applied: AppliedOf<'_>, prefer: Option<&str>) -> Resolved {
    let (mut out, idx) = choose(log, applied, prefer);
    out.records = idx
        .into_iter()
        .map(|i| (log[i].key.clone(), log[i].value.clone()))
        .collect();
    out
}

/// [`resolve`], moving the chosen records' keys and values out of `log` instead of copying them.
pub fn resolve_into(
    mut log: Vec<Logged>,
    applied: AppliedOf<'_>,
    prefer: Option<&str>,
) -> Resolved {
    let (mut out, idx) = choose(&log, applied, prefer);
    out.records = idx
        .into_iter()
        .map(|i| {
            let r = &mut log[i];
            (std::mem::take(&mut r.key), std::mem::take(&mut r.value))
        })
        .collect();
    out
}

/// [`resolve`] without the records: the indices into `log` of the chosen ones, in offset order.
fn choose(log: &[Logged], applied: AppliedOf<'_>, prefer: Option<&str>) -> (Resolved, Vec<usize>) {
    let mut views: BTreeMap<String, View> = BTreeMap::new();
    for (i, r) in log.iter().enumerate() {
        let token = r.writer.clone().unwrap_or_default();
        let v = views.entry(token).or_insert_with(|| View {
            own: Vec::new(),
            base: r.base.clone(),
        });
        v.own.push(i);
    }
    if views.is_empty() {
        return (Resolved::default(), Vec::new());
    }
    // A lineage is superseded when a later one started from it after its last record.
    let last_offset = |t: &str| {
        views
            .get(t)
            .and_then(|v| v.own.last())
            .map(|&i| log[i].offset)
    };
    let mut superseded: Vec<&str> = Vec::new();
    for v in views.values() {
        if let Some((b, cut)) = &v.base {
            if last_offset(b).is_none_or(|o| o < *cut) {
                superseded.push(b.as_str());
            }
        }
    }
    let leaves: Vec<&String> = views
        .keys()
        .filter(|t| !superseded.contains(&t.as_str()))
        .collect();
    let held = prefer.filter(|p| views.contains_key(*p));
    let chosen: String = match leaves.as_slice() {
        _ if held.is_some() => held.unwrap_or_default().to_string(),
        [] => views.keys().next_back().cloned().unwrap_or_default(),
        [one] => (*one).clone(),
        many => {
            // Overlap: the lineage that applied the most input (ties: the newest record).
            let mut best: Option<(i64, i64, &String)> = None;
            for t in many {
                let pos = position(log, &views, t, i64::MAX, applied, 0);
                let score: i64 = pos.iter().map(|p| (*p).max(-1) + 1).sum();
                let newest = last_offset(t).unwrap_or(-1);
                if best.is_none_or(|(s, n, _)| (score, newest) > (s, n)) {
                    best = Some((score, newest, t));
                }
            }
            best.map(|(_, _, t)| t.clone()).unwrap_or_default()
        }
    };
    let n_leaves = leaves.len().max(1);
    // Materialise the chosen lineage: its own records, then its base's below the cutoff, and so
    // on; a missing or legacy base resolves "last record wins" below the cutoff.
    let mut picked: HashMap<&str, usize> = HashMap::new();
    let mut token = chosen.as_str();
    let mut upto = i64::MAX;
    for _ in 0..=views.len() {
        let Some(v) = views.get(token) else {
            last_wins(log, upto, &mut picked);
            break;
        };
        for &i in v.own.iter().rev() {
            if log[i].offset < upto {
                picked.entry(log[i].key.as_str()).or_insert(i);
            }
        }
        match &v.base {
            Some((b, cut)) if b != token => {
                upto = upto.min(*cut);
                token = b.as_str();
            }
            // The legacy lineage, one that resumed nothing, or a corrupt self-reference.
            _ => break,
        }
    }
    // Keys the chosen lineage lacks but the log holds: their newest record.
    let mut out = Resolved {
        view: chosen.clone(),
        leaves: n_leaves,
        ..Resolved::default()
    };
    let mut newest: HashMap<&str, usize> = HashMap::new();
    for (i, r) in log.iter().enumerate() {
        newest.insert(r.key.as_str(), i);
    }
    for (k, i) in newest {
        if picked.contains_key(k) {
            continue;
        }
        picked.insert(k, i);
        if log[i].value.is_empty() {
            continue;
        }
        out.fallback += 1;
        let a = applied(&log[i].value).unwrap_or([-1; 4]);
        for (r, a) in out.reread_from.iter_mut().zip(a) {
            let from = a.max(-1) + 1;
            *r = Some(r.map_or(from, |x| x.min(from)));
        }
    }
    let mut idx: Vec<usize> = picked
        .into_values()
        .filter(|&i| !log[i].value.is_empty())
        .collect();
    idx.sort_unstable();
    out.offsets = idx.iter().map(|&i| log[i].offset).collect();
    (out, idx)
}

/// "Last record wins" for every key below `upto` not picked yet.
fn last_wins<'a>(log: &'a [Logged], upto: i64, picked: &mut HashMap<&'a str, usize>) {
    for (i, r) in log.iter().enumerate().rev() {
        if r.offset < upto {
            picked.entry(r.key.as_str()).or_insert(i);
        }
    }
}

/// Newest applied offsets of lineage `token` below `upto`: its own records' and its base's.
fn position(
    log: &[Logged],
    views: &BTreeMap<String, View>,
    token: &str,
    upto: i64,
    applied: AppliedOf<'_>,
    depth: usize,
) -> [i64; 4] {
    let mut pos = [-1i64; 4];
    let Some(v) = views.get(token) else {
        for r in log.iter().filter(|r| r.offset < upto) {
            merge(&mut pos, applied(&r.value));
        }
        return pos;
    };
    for &i in &v.own {
        if log[i].offset < upto {
            merge(&mut pos, applied(&log[i].value));
        }
    }
    if let Some((b, cut)) = &v.base {
        if b != token && depth < views.len() {
            let base = position(log, views, b, upto.min(*cut), applied, depth + 1);
            merge(&mut pos, Some(base));
        }
    }
    pos
}

fn merge(pos: &mut [i64; 4], a: Option<[i64; 4]>) {
    if let Some(a) = a {
        for (p, a) in pos.iter_mut().zip(a) {
            *p = (*p).max(a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Test records: the value is the applied offset of topic 0 as text ("" = tombstone).
    fn rec(
        offset: i64,
        key: &str,
        value: &str,
        writer: Option<&str>,
        base: Option<(&str, i64)>,
    ) -> Logged {
        Logged {
            offset,
            key: key.into(),
            value: value.as_bytes().to_vec(),
            writer: writer.map(str::to_string),
            base: base.map(|(t, o)| (t.to_string(), o)),
        }
    }

    fn applied(v: &[u8]) -> Option<[i64; 4]> {
        let a: i64 = std::str::from_utf8(v).ok()?.parse().ok()?;
        Some([a, -1, -1, -1])
    }

    fn run(log: &[Logged]) -> (Vec<(String, String)>, Resolved) {
        let r = resolve(log, &applied, None);
        let recs = r
            .records
            .iter()
            .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
            .collect();
        (recs, r)
    }

    fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn legacy_records_resolve_last_record_wins() {
        let log = [
            rec(0, "a", "1", None, None),
            rec(1, "b", "2", None, None),
            rec(2, "a", "3", None, None),
            rec(3, "c", "4", None, None),
            rec(4, "c", "", None, None),
        ];
        let (recs, r) = run(&log);
        assert_eq!(recs, kv(&[("b", "2"), ("a", "3")]));
        assert_eq!((r.view.as_str(), r.leaves, r.fallback), ("", 1, 0));
    }

    #[test]
    fn a_chain_of_owners_is_last_record_wins() {
        // A writes, B restores at marker 3 and writes, C restores B's at marker 6 and writes.
        let log = [
            rec(0, "a", "10", Some("A"), None),
            rec(1, "b", "11", Some("A"), None),
            rec(2, "a", "12", Some("A"), None),
            rec(4, "b", "13", Some("B"), Some(("A", 3))),
            rec(5, "c", "14", Some("B"), Some(("A", 3))),
            rec(7, "a", "15", Some("C"), Some(("B", 6))),
        ];
        let (recs, r) = run(&log);
        assert_eq!(recs, kv(&[("b", "13"), ("c", "14"), ("a", "15")]));
        assert_eq!((r.view.as_str(), r.leaves, r.fallback), ("C", 1, 0));
    }

    #[test]
    fn an_old_owner_writing_after_the_handover_does_not_mix_into_the_new_owners_state() {
        // B takes the partition over at marker 3 while A keeps going; A's record of `b` lands
        // after B's restore. B got further than A (offset 40 vs 25): B's state is restored
        // whole, with `b` as B last wrote it (B never rewrote it, so from its base: 11).
        let log = [
            rec(0, "a", "10", Some("A"), None),
            rec(1, "b", "11", Some("A"), None),
            rec(2, "c", "12", Some("A"), None),
            rec(4, "a", "20", Some("B"), Some(("A", 3))),
            rec(5, "b", "25", Some("A"), None),
            rec(6, "c", "40", Some("B"), Some(("A", 3))),
        ];
        let (recs, r) = run(&log);
        assert_eq!(recs, kv(&[("b", "11"), ("a", "20"), ("c", "40")]));
        assert_eq!((r.view.as_str(), r.leaves, r.fallback), ("B", 2, 0));
        // Last record wins would have mixed A's `b` (25) into B's state.
    }

    #[test]
    fn the_old_owner_wins_when_it_applied_more() {
        let log = [
            rec(0, "a", "10", Some("A"), None),
            rec(1, "b", "11", Some("A"), None),
            rec(3, "a", "20", Some("B"), Some(("A", 2))),
            rec(4, "b", "50", Some("A"), None),
            rec(5, "a", "49", Some("A"), None),
        ];
        let (recs, r) = run(&log);
        assert_eq!(recs, kv(&[("b", "50"), ("a", "49")]));
        assert_eq!((r.view.as_str(), r.leaves), ("A", 2));
    }

    #[test]
    fn a_key_compacted_out_of_the_chosen_lineage_comes_back_from_its_newest_record() {
        // B's own `b` (and A's before the cutoff) were compacted away by A's later `b`.
        let log = [
            rec(0, "a", "10", Some("A"), None),
            rec(4, "a", "30", Some("B"), Some(("A", 3))),
            rec(5, "b", "7", Some("A"), None),
            rec(6, "c", "40", Some("B"), Some(("A", 3))),
        ];
        let (recs, r) = run(&log);
        assert_eq!(recs, kv(&[("a", "30"), ("b", "7"), ("c", "40")]));
        assert_eq!((r.view.as_str(), r.fallback), ("B", 1));
        assert_eq!(r.reread_from[0], Some(8));
        assert_eq!(r.reread_from[1], Some(0));
    }

    #[test]
    fn a_tombstone_in_the_chosen_lineage_forgets_the_key() {
        let log = [
            rec(0, "a", "10", Some("A"), None),
            rec(1, "b", "11", Some("A"), None),
            rec(3, "b", "", Some("B"), Some(("A", 2))),
            rec(4, "a", "30", Some("B"), Some(("A", 2))),
        ];
        let (recs, r) = run(&log);
        assert_eq!(recs, kv(&[("a", "30")]));
        assert_eq!(r.fallback, 0);
    }

    #[test]
    fn a_base_missing_from_the_log_resolves_last_record_wins_below_its_cutoff() {
        let log = [
            rec(0, "a", "10", None, None),
            rec(1, "b", "11", Some("X"), None),
            rec(3, "a", "30", Some("B"), Some(("gone", 2))),
        ];
        let (recs, _) = run(&log);
        assert_eq!(recs, kv(&[("b", "11"), ("a", "30")]));
    }

    #[test]
    fn the_lineage_held_in_memory_is_preferred() {
        let log = [
            rec(0, "a", "10", Some("A"), None),
            rec(3, "a", "20", Some("B"), Some(("A", 2))),
            rec(4, "a", "50", Some("A"), None),
        ];
        let r = resolve(&log, &applied, Some("B"));
        assert_eq!(r.view, "B");
        assert_eq!(r.records, vec![("a".to_string(), b"20".to_vec())]);
        // Absent from the log: the usual choice.
        assert_eq!(resolve(&log, &applied, Some("Z")).view, "A");
    }

    #[test]
    fn wrapped_records_round_trip() {
        for base in [None, Some(("7:8".to_string(), 42))] {
            let l = Lineage {
                token: "12:34".into(),
                base,
            };
            let v = wrap(&l, b"state");
            assert_eq!(unwrap(&v), Some((Some(l.clone()), &b"state"[..])));
            // Truncated anywhere inside the lineage: malformed, never a panic.
            let head = v.len() - b"state".len();
            for cut in 1..head {
                assert_eq!(unwrap(&v[..cut]), None, "cut at {cut}");
            }
        }
        assert_eq!(unwrap(b"{\"v\":1}"), Some((None, &b"{\"v\":1}"[..])));
    }

    #[test]
    fn base_headers_round_trip() {
        let l = Lineage {
            token: "12:34".into(),
            base: Some(("7:8@x".into(), 42)),
        };
        let h = l.base_header().expect("base");
        assert_eq!(Lineage::parse_base(&h), Some(("7:8@x".into(), 42)));
        assert_eq!(Lineage::parse_base("nope"), None);
    }
}

#[cfg(test)]
mod reducer_tests {
    use super::*;

    fn applied(v: &[u8]) -> Option<[i64; 4]> {
        let a: i64 = std::str::from_utf8(v).ok()?.parse().ok()?;
        Some([a, -1, -1, -1])
    }

    /// splitmix64, for reproducible random logs.
    fn mix(mut x: u64) -> u64 {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^ (x >> 31)
    }

    /// A changelog as members write it: a chain of restores (each a marker, then a new lineage
    /// based on a previous one at that marker), the previous owner sometimes still writing after
    /// the handover (overlap), tombstones, a legacy prefix without lineage. Returns the records
    /// and the marker offsets.
    fn random_log(seed: u64) -> (Vec<Logged>, Vec<i64>) {
        let mut h = seed;
        let mut next = || {
            h = mix(h);
            h
        };
        let keys = 1 + next() % 12;
        let mut log = Vec::new();
        let mut markers = Vec::new();
        // (writer token, base) of each lineage; the first is the legacy one.
        type Writer = (Option<String>, Option<(String, i64)>);
        let mut lineages: Vec<Writer> = vec![(None, None)];
        let mut applied_by: Vec<i64> = vec![0];
        let mut offset = 0i64;
        for _ in 0..(20 + next() % 200) {
            let r = next() % 100;
            if r < 8 {
                // A restore: a marker, then a new lineage based on one of the existing ones.
                markers.push(offset);
                let base = (next() as usize) % lineages.len();
                let token = format!("t{}", lineages.len());
                let b = lineages[base].0.clone().map(|t| (t, offset));
                lineages.push((Some(token), b));
                applied_by.push(applied_by[base]);
                offset += 1;
                continue;
            }
            // Mostly the newest lineage writes; sometimes an older one (a zombie owner).
            let w = if next() % 5 == 0 {
                (next() as usize) % lineages.len()
            } else {
                lineages.len() - 1
            };
            applied_by[w] += 1 + (next() % 3) as i64;
            let key = format!("k{}", next() % keys);
            let value = if next() % 17 == 0 {
                Vec::new()
            } else {
                applied_by[w].to_string().into_bytes()
            };
            log.push(Logged {
                offset,
                key,
                value,
                writer: lineages[w].0.clone(),
                base: lineages[w].1.clone(),
            });
            offset += 1;
        }
        (log, markers)
    }

    #[test]
    fn the_reduced_log_resolves_like_the_whole_log() {
        let mut reduced_somewhere = false;
        for seed in 0..3000u64 {
            let (log, markers) = random_log(seed);
            let mut red = Reducer::default();
            let mut m = markers.iter().peekable();
            for r in &log {
                while let Some(&&o) = m.peek().filter(|o| ***o < r.offset) {
                    red.marker(o);
                    m.next();
                }
                red.push(r.clone());
                // A range served twice changes nothing.
                if seed % 7 == 0 {
                    red.push(r.clone());
                }
            }
            assert_eq!(red.read(), log.len());
            reduced_somewhere |= red.kept() < log.len();
            let kept = red.finish();
            for prefer in [None, Some("t1"), Some("t2")] {
                let whole = resolve(&log, &applied, prefer);
                let part = resolve_into(kept.clone(), &applied, prefer);
                // With overlapping lineages the tie-break reads the newest applied offsets,
                // which the reduced log keeps (offsets only grow in these logs).
                assert_eq!(
                    whole.records, part.records,
                    "seed {seed} {prefer:?}: records"
                );
                assert_eq!(whole.offsets, part.offsets, "seed {seed}: offsets");
                assert_eq!(whole.view, part.view, "seed {seed}: view");
                assert_eq!(whole.fallback, part.fallback, "seed {seed}: fallback");
                assert_eq!(whole.reread_from, part.reread_from, "seed {seed}: reread");
            }
        }
        assert!(reduced_somewhere, "the logs had superseded records");
    }

    #[test]
    fn ten_versions_between_restores_keep_one_record_per_key() {
        let mut red = Reducer::default();
        let mut offset = 0;
        for version in 0..10 {
            for k in 0..1000 {
                red.push(Logged {
                    offset,
                    key: format!("c{k}"),
                    value: format!("{version}").into_bytes(),
                    writer: Some("t1".into()),
                    base: None,
                });
                offset += 1;
            }
        }
        assert_eq!((red.read(), red.kept()), (10_000, 1000));
        // After a marker the next versions are kept beside the ones before it (a cutoff may
        // fall there), and only those.
        red.marker(offset);
        offset += 1;
        for version in 0..3 {
            for k in 0..1000 {
                red.push(Logged {
                    offset,
                    key: format!("c{k}"),
                    value: format!("{version}").into_bytes(),
                    writer: Some("t1".into()),
                    base: None,
                });
                offset += 1;
            }
        }
        assert_eq!(red.kept(), 2000);
    }
}
