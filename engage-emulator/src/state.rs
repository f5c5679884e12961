//! Profile state with Mixpanel's semantics, and the counters.
//!
//! Each profile keeps its updates in a compact log (the operation's JSON bytes and ~40
//! bytes more), ordered by `$time` then arrival, so that an update with an older `$time`
//! lands exactly where it belongs whenever it arrives; a `$delete` drops everything before
//! it. The properties are computed from the log when read. The store is split in shards,
//! each behind its own lock, so that reading it (which copies one shard's logs at a time
//! and computes the profiles outside the lock) never holds up ingestion for long.

use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use serde::Serialize;
use serde_json::{Map, Value as Json};

use crate::server::lock;

/// Properties of one profile.
pub type Profile = Map<String, Json>;

/// Properties the emulator maintains itself, which tests usually leave out of comparisons.
pub const EMULATOR_PROPERTIES: [&str; 3] = ["$last_seen", "$geo_source", "$geo_ip"];

/// Counters since start (or the last reset).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct Stats {
    /// Requests to `/engage` and `/groups`.
    pub requests: u64,
    /// Records in the requests the emulator processed (a fault answer that skips
    /// processing, such as a 503, does not count them).
    pub records_received: u64,
    /// Records applied.
    pub accepted: u64,
    /// Records rejected as invalid.
    pub rejected: u64,
    /// Faults injected.
    pub faults_injected: u64,
    /// Bodies whose exact bytes had already been applied once and which carry `$add` or
    /// `$append`: the signature of an unsafe resend, which counts those twice.
    pub duplicate_batches: u64,
    /// Bodies whose exact bytes had already been applied once, whatever they carry
    /// (resending `$set`-only bodies is harmless).
    pub repeated_bodies: u64,
    /// Requests answered 429 by the rate limit (`--rate-limit-mb-per-min`), not counted in
    /// `faults_injected`.
    pub rate_limited: u64,
    /// Bytes of request data processed (after the rate limit): what a project was
    /// allowed to send.
    pub bytes_received: u64,
    /// Requests to `/engage` and `/groups` being served right now.
    pub serving: u64,
    /// Most requests to `/engage` and `/groups` served at once.
    pub peak_serving: u64,
    /// Records whose text repeated a key (only the last value of each was applied; the
    /// answer's `notes` say which).
    pub records_with_repeated_keys: u64,
}

/// Where geolocation came from for an update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Geo {
    /// `ip=1` and no `$ip`: the request's address.
    Request(IpAddr),
    /// `$ip` in the record.
    Record(Box<str>),
    /// `ip=0` or `$ip: "0"`.
    None,
}

/// The operations, from engage-core's one table of them.
pub(crate) use engage_core::model::OpKind as Op;

/// Whether an operation creates a missing profile (`$remove`, `$unset` do not).
fn creates(op: Op) -> bool {
    !matches!(op, Op::Remove | Op::Unset)
}

/// Where an update goes in a profile's log: `$time` in ms, then arrival.
type Key = (i64, u64);

/// One update in a profile's log.
#[derive(Debug, Clone)]
struct Entry {
    key: Key,
    op: Op,
    ignore_time: bool,
    geo: Geo,
    /// The operation's value, as compact JSON.
    payload: Box<[u8]>,
}

/// Logs longer than this move from a sorted vector to a tree, so that updates arriving in
/// any `$time` order are inserted in logarithmic time.
const SORTED_VEC_MAX: usize = 64;

/// A profile's updates in key order.
#[derive(Debug, Clone)]
enum Log {
    One(Entry),
    Sorted(Vec<Entry>),
    Tree(BTreeMap<Key, Entry>),
}

impl Log {
    fn len(&self) -> usize {
        match self {
            Log::One(_) => 1,
            Log::Sorted(v) => v.len(),
            Log::Tree(t) => t.len(),
        }
    }

    fn entries(&self) -> Box<dyn Iterator<Item = &Entry> + '_> {
        match self {
            Log::One(e) => Box::new(std::iter::once(e)),
            Log::Sorted(v) => Box::new(v.iter()),
            Log::Tree(t) => Box::new(t.values()),
        }
    }

    fn insert(&mut self, e: Entry) {
        if e.op == Op::Delete {
            // Nothing before a $delete matters any more.
            self.retain_from(e.key);
        }
        // Taken out and put back, so that the entries move rather than being copied.
        *self = match std::mem::replace(self, Log::Sorted(Vec::new())) {
            Log::One(first) => {
                // Room for the next two: most profiles that get a second update get more.
                let mut v = Vec::with_capacity(4);
                if first.key <= e.key {
                    v.extend([first, e]);
                } else {
                    v.extend([e, first]);
                }
                Log::Sorted(v)
            }
            Log::Sorted(mut v) => {
                if v.last().is_none_or(|last| last.key <= e.key) {
                    v.push(e);
                    Log::Sorted(v)
                } else if v.len() < SORTED_VEC_MAX {
                    let at = v.partition_point(|x| x.key <= e.key);
                    v.insert(at, e);
                    Log::Sorted(v)
                } else {
                    let mut tree: BTreeMap<Key, Entry> =
                        v.into_iter().map(|x| (x.key, x)).collect();
                    tree.insert(e.key, e);
                    Log::Tree(tree)
                }
            }
            Log::Tree(mut t) => {
                t.insert(e.key, e);
                Log::Tree(t)
            }
        };
    }

    /// Drops every entry before `key`.
    fn retain_from(&mut self, key: Key) {
        match self {
            Log::One(_) => {}
            Log::Sorted(v) => v.retain(|x| x.key >= key),
            Log::Tree(t) => *t = t.split_off(&key),
        }
    }

    fn replay(&self) -> Option<Profile> {
        let mut profile: Option<Profile> = None;
        for e in self.entries() {
            apply(&mut profile, e);
        }
        profile
    }
}

fn apply(profile: &mut Option<Profile>, e: &Entry) {
    if e.op == Op::Delete {
        *profile = None;
        return;
    }
    if profile.is_none() && !creates(e.op) {
        return;
    }
    let payload: Json = serde_json::from_slice(&e.payload).unwrap_or(Json::Null);
    let p = profile.get_or_insert_with(Map::new);
    match (e.op, payload) {
        (Op::Set, Json::Object(props)) => {
            for (k, v) in props {
                p.insert(k, v);
            }
        }
        (Op::SetOnce, Json::Object(props)) => {
            for (k, v) in props {
                p.entry(k).or_insert(v);
            }
        }
        (Op::Add, Json::Object(props)) => {
            for (k, v) in props {
                // An overflowing sum was refused when it arrived in order; one that only
                // overflows once a late update lands before it keeps the earlier value.
                if let Some(sum) = add(p.get(&k), &v) {
                    p.insert(k, sum);
                }
            }
        }
        (Op::Union, Json::Object(props)) => {
            for (k, v) in props {
                let items = match v {
                    Json::Array(items) => items,
                    _ => Vec::new(),
                };
                let list = list_entry(p, &k);
                for item in items {
                    if !list.contains(&item) {
                        list.push(item);
                    }
                }
            }
        }
        (Op::Append, Json::Object(props)) => {
            for (k, v) in props {
                list_entry(p, &k).push(v);
            }
        }
        (Op::Remove, Json::Object(props)) => {
            for (k, v) in props {
                if let Some(Json::Array(list)) = p.get_mut(&k) {
                    list.retain(|x| *x != v);
                }
            }
        }
        (Op::Unset, Json::Array(names)) => {
            for n in names.iter().filter_map(Json::as_str) {
                p.remove(n);
            }
        }
        _ => {}
    }
    if !e.ignore_time {
        p.insert(
            "$last_seen".into(),
            Json::String(
                engage_core::model::DateTime::from_unix_seconds(e.key.0.div_euclid(1000))
                    .to_string(),
            ),
        );
    }
    let (source, ip) = match &e.geo {
        Geo::Request(ip) => ("request", Some(ip.to_string())),
        Geo::Record(ip) => ("$ip", Some(ip.to_string())),
        Geo::None => ("none", None),
    };
    p.insert("$geo_source".into(), Json::String(source.into()));
    match ip {
        Some(ip) => p.insert("$geo_ip".into(), Json::String(ip)),
        None => p.remove("$geo_ip"),
    };
}

/// The list at `k`, made a list if missing or not one (a scalar is replaced).
fn list_entry<'a>(p: &'a mut Profile, k: &str) -> &'a mut Vec<Json> {
    let slot = p
        .entry(k.to_owned())
        .or_insert_with(|| Json::Array(Vec::new()));
    if !slot.is_array() {
        *slot = Json::Array(Vec::new());
    }
    match slot {
        Json::Array(list) => list,
        _ => unreachable!("made a list above"),
    }
}

/// `$add`: a missing (or non-numeric) property counts as 0. Integers stay exact integers
/// while the sum fits 64 bits (signed or unsigned); otherwise floats. `None` when the sum
/// is not a finite number.
fn add(current: Option<&Json>, delta: &Json) -> Option<Json> {
    let current = current.filter(|c| c.is_number());
    let int = |v: &Json| -> Option<i128> {
        v.as_i64()
            .map(i128::from)
            .or_else(|| v.as_u64().map(i128::from))
    };
    let current_int = match current {
        None => Some(0),
        Some(c) => int(c),
    };
    if let (Some(a), Some(b)) = (current_int, int(delta)) {
        let sum = a + b;
        if let Ok(i) = i64::try_from(sum) {
            return Some(Json::from(i));
        }
        if let Ok(u) = u64::try_from(sum) {
            return Some(Json::from(u));
        }
    }
    let a = current.and_then(Json::as_f64).unwrap_or(0.0);
    let b = delta.as_f64()?;
    serde_json::Number::from_f64(a + b).map(Json::Number)
}

/// The profile an update is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Target<'a> {
    User(&'a str),
    Group(&'a str, &'a str),
}

/// One valid record, ready to apply.
pub(crate) struct Valid<'a> {
    /// Its position in the request.
    pub(crate) index: usize,
    pub(crate) target: Target<'a>,
    pub(crate) op: Op,
    /// The operation's value as compact JSON.
    pub(crate) payload: Vec<u8>,
    pub(crate) time_ms: Option<i64>,
    pub(crate) ignore_time: bool,
    pub(crate) geo: Geo,
}

/// A record refused while applying it: (its position, the property, why).
pub(crate) type Refused = (usize, String, String);

type FastMap<K, V> = hashbrown::HashMap<K, V, foldhash::fast::RandomState>;

/// A profile id (or group key) as a map key: up to 22 bytes (`user-123456`) held in the
/// map's own slot, longer ones on the heap. With a `Box<str>` key every lookup also read
/// the key's heap block to compare it: a second cache miss per update once the store
/// holds a few hundred thousand profiles.
#[derive(Debug, Clone)]
enum Id {
    Inline { len: u8, bytes: [u8; Id::INLINE] },
    Heap(Box<str>),
}

impl Id {
    const INLINE: usize = 22;

    fn new(text: &str) -> Id {
        match text.len() {
            len @ 0..=Id::INLINE => {
                let mut bytes = [0; Id::INLINE];
                bytes[..len].copy_from_slice(text.as_bytes());
                Id::Inline {
                    len: len as u8,
                    bytes,
                }
            }
            _ => Id::Heap(text.into()),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            Id::Inline { len, bytes } => &bytes[..*len as usize],
            Id::Heap(text) => text.as_bytes(),
        }
    }

    /// The id as text, for reading the store (not per update). The bytes came from a
    /// `str`; they are checked again because the inline ones are not held as one.
    fn to_text(&self) -> Box<str> {
        String::from_utf8_lossy(self.as_bytes()).into()
    }
}

// Hashed and compared as their bytes, the same as the `IdRef` lookups are made with.
impl Hash for Id {
    fn hash<H: Hasher>(&self, state: &mut H) {
        IdRef(self.as_bytes()).hash(state)
    }
}

impl PartialEq for Id {
    fn eq(&self, other: &Id) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Id {}

/// A lookup of an [`Id`] by its text, without making one.
#[derive(Hash)]
struct IdRef<'a>(&'a [u8]);

impl hashbrown::Equivalent<Id> for IdRef<'_> {
    fn equivalent(&self, key: &Id) -> bool {
        self.0 == key.as_bytes()
    }
}

#[derive(Debug, Default)]
struct Shard {
    users: FastMap<Id, Log>,
    /// By group key, then group id: looked up without allocating.
    groups: FastMap<Id, FastMap<Id, Log>>,
}

impl Shard {
    /// Adds `entry` to `target`'s log; refused (the property named) when it is an `$add`
    /// whose sum would not be a finite number.
    fn apply(&mut self, target: Target<'_>, entry: Entry) -> Result<(), String> {
        let log = match target {
            Target::User(id) => self.users.get_mut(&IdRef(id.as_bytes())),
            Target::Group(k, i) => self
                .groups
                .get_mut(&IdRef(k.as_bytes()))
                .and_then(|g| g.get_mut(&IdRef(i.as_bytes()))),
        };
        if entry.op == Op::Add
            && let Some(property) =
                overflowing_add(log.as_deref().unwrap_or(&Log::Sorted(Vec::new())), &entry)
        {
            return Err(property);
        }
        match (log, target) {
            (Some(log), _) => log.insert(entry),
            (None, Target::User(id)) => {
                self.users.insert(Id::new(id), Log::One(entry));
            }
            (None, Target::Group(k, i)) => {
                self.groups
                    .entry(Id::new(k))
                    .or_default()
                    .insert(Id::new(i), Log::One(entry));
            }
        }
        Ok(())
    }
}

/// The positions of records in each shard, shard by shard, given each record's shard (a
/// counting sort: positions stay in request order within a shard).
fn by_shard(shards: impl ExactSizeIterator<Item = usize>) -> Vec<(usize, Vec<usize>)> {
    let mut groups: Vec<Vec<usize>> = vec![Vec::new(); SHARDS];
    for (position, shard) in shards.enumerate() {
        groups[shard].push(position);
    }
    groups
        .into_iter()
        .enumerate()
        .filter(|(_, positions)| !positions.is_empty())
        .collect()
}

/// Shards of the store: enough that copying one is quick and that two ingesting threads
/// rarely wait for each other.
const SHARDS: usize = 64;

/// Logs of up to this many entries are replayed to check that an `$add` stays finite
/// before it is accepted; longer ones are checked when read (the sum then keeps its
/// previous value).
const ADD_CHECK_MAX_ENTRIES: usize = 256;

/// Everything the emulator keeps.
#[derive(Debug)]
pub(crate) struct Store {
    shards: Box<[Mutex<Shard>]>,
    hasher: foldhash::fast::RandomState,
    seq: AtomicU64,
    last_arrival_ms: AtomicI64,
    pub(crate) stats: Mutex<Stats>,
    applied_bodies: Mutex<HashSet<(u64, u64)>>,
    /// Two independent keys: the pair of hashes tells bodies apart as well as 128 bits do.
    /// foldhash, not SipHash: it hashes every body received (SipHash took 3.5% of the
    /// emulator's CPU per import).
    body_keys: (
        foldhash::quality::RandomState,
        foldhash::quality::RandomState,
    ),
}

impl Default for Store {
    fn default() -> Self {
        Store {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: foldhash::fast::RandomState::default(),
            seq: AtomicU64::new(0),
            last_arrival_ms: AtomicI64::new(0),
            stats: Mutex::default(),
            applied_bodies: Mutex::default(),
            body_keys: Default::default(),
        }
    }
}

/// A group profile's key and id.
type GroupId = (Box<str>, Box<str>);

/// One shard's profiles, copied out of the lock.
pub(crate) struct ShardCopy {
    users: Vec<(Box<str>, Log)>,
    groups: Vec<(GroupId, Log)>,
}

impl ShardCopy {
    /// The user profiles that exist, computed from their logs.
    pub(crate) fn profiles(&self) -> impl Iterator<Item = (&str, Profile)> + '_ {
        self.users
            .iter()
            .filter_map(|(id, log)| log.replay().map(|p| (&**id, p)))
    }

    /// The group profiles that exist.
    pub(crate) fn groups(&self) -> impl Iterator<Item = (&str, &str, Profile)> + '_ {
        self.groups
            .iter()
            .filter_map(|((k, i), log)| log.replay().map(|p| (&**k, &**i, p)))
    }
}

impl Store {
    fn shard_index(&self, target: Target<'_>) -> usize {
        (self.hasher.hash_one(target) % SHARDS as u64) as usize
    }

    fn shard_of(&self, target: Target<'_>) -> &Mutex<Shard> {
        &self.shards[self.shard_index(target)]
    }

    /// Forgets every profile and zeroes the counters; the memory goes back to the
    /// allocator.
    pub(crate) fn reset(&self) {
        for shard in self.shards.iter() {
            let old = std::mem::take(&mut *lock(shard));
            drop(old);
        }
        let mut stats = lock(&self.stats);
        // Requests being served now still are.
        *stats = Stats {
            serving: stats.serving,
            peak_serving: stats.serving,
            ..Stats::default()
        };
        drop(stats);
        *lock(&self.applied_bodies) = HashSet::new();
    }

    /// The counters.
    pub(crate) fn stats(&self) -> Stats {
        *lock(&self.stats)
    }

    /// Arrival time for updates without `$time`: the wall clock, never going backwards.
    fn arrival_ms(&self) -> i64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let before = self.last_arrival_ms.fetch_max(now, Ordering::Relaxed);
        before.max(now)
    }

    /// Applies valid records in order; counts a repeated body. Returns the records refused
    /// while applying (an `$add` whose sum is not a finite number).
    pub(crate) fn apply(
        &self,
        body: &[u8],
        records: Vec<Valid<'_>>,
        non_idempotent: bool,
    ) -> Vec<Refused> {
        if records.is_empty() {
            return Vec::new();
        }
        let hash = {
            let mut a = self.body_keys.0.build_hasher();
            let mut b = self.body_keys.1.build_hasher();
            a.write(body);
            b.write(body);
            (a.finish(), b.finish())
        };
        if !lock(&self.applied_bodies).insert(hash) {
            let mut stats = lock(&self.stats);
            stats.repeated_bodies += 1;
            if non_idempotent {
                stats.duplicate_batches += 1;
            }
        }
        let arrival = self.arrival_ms();
        // Arrival order: the records' positions in the request, after every record taken
        // before this request.
        let first_seq = self.seq.fetch_add(records.len() as u64, Ordering::Relaxed);
        let mut refused = Vec::new();
        let mut accepted = 0u64;
        // Each shard is locked once per request rather than once per record (taking and
        // releasing a lock per record cost more than applying it). A profile lives in one
        // shard, its records keep their request order there, and each entry's key holds
        // its position in the request: a log is in the same order as before.
        let shards = by_shard(records.iter().map(|r| self.shard_index(r.target)));
        let mut records = records;
        for (shard, positions) in shards {
            let mut shard = lock(&self.shards[shard]);
            for position in positions {
                // Its parts moved out where they are (each record is visited once).
                let r = &mut records[position];
                let entry = Entry {
                    key: (r.time_ms.unwrap_or(arrival), first_seq + position as u64),
                    op: r.op,
                    ignore_time: r.ignore_time,
                    geo: std::mem::replace(&mut r.geo, Geo::None),
                    payload: std::mem::take(&mut r.payload).into_boxed_slice(),
                };
                match shard.apply(r.target, entry) {
                    Ok(()) => accepted += 1,
                    Err(property) => refused.push((
                        r.index,
                        property,
                        "$add would make the value out of range (not a finite number)".into(),
                    )),
                }
            }
        }
        let mut stats = lock(&self.stats);
        stats.accepted += accepted;
        stats.rejected += refused.len() as u64;
        refused
    }

    /// One user profile.
    pub(crate) fn profile(&self, id: &str) -> Option<Profile> {
        let shard = lock(self.shard_of(Target::User(id)));
        shard.users.get(&IdRef(id.as_bytes())).and_then(Log::replay)
    }

    /// The number of shards, for [`copy_shard`](Self::copy_shard).
    pub(crate) fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Copies shard `i`'s logs (quick: the lock is held for a copy, not for computing
    /// profiles or writing JSON).
    pub(crate) fn copy_shard(&self, i: usize) -> ShardCopy {
        let shard = lock(&self.shards[i]);
        ShardCopy {
            users: shard
                .users
                .iter()
                .map(|(k, v)| (k.to_text(), v.clone()))
                .collect(),
            groups: shard
                .groups
                .iter()
                .flat_map(|(k, g)| {
                    g.iter()
                        .map(|(i, v)| ((k.to_text(), i.to_text()), v.clone()))
                })
                .collect(),
        }
    }

    pub(crate) fn profiles(&self) -> BTreeMap<String, Profile> {
        let mut out = BTreeMap::new();
        for i in 0..self.shard_count() {
            let copy = self.copy_shard(i);
            out.extend(copy.profiles().map(|(id, p)| (id.to_owned(), p)));
        }
        out
    }

    pub(crate) fn groups(&self) -> BTreeMap<String, BTreeMap<String, Profile>> {
        let mut out: BTreeMap<String, BTreeMap<String, Profile>> = BTreeMap::new();
        for i in 0..self.shard_count() {
            let copy = self.copy_shard(i);
            for (key, id, p) in copy.groups() {
                out.entry(key.to_owned())
                    .or_default()
                    .insert(id.to_owned(), p);
            }
        }
        out
    }
}

/// The property an `$add` would push out of the finite numbers, given the profile's log
/// (short logs only: see [`ADD_CHECK_MAX_ENTRIES`]).
fn overflowing_add(log: &Log, entry: &Entry) -> Option<String> {
    if log.len() > ADD_CHECK_MAX_ENTRIES {
        return None;
    }
    // Sums of at most a few hundred numbers below 1e21 stay finite: replay (a copy of the
    // log, every payload parsed) only when some number may be huge.
    if !may_hold_huge_number(&entry.payload)
        && !log.entries().any(|e| may_hold_huge_number(&e.payload))
    {
        return None;
    }
    let Ok(Json::Object(deltas)) = serde_json::from_slice::<Json>(&entry.payload) else {
        return None;
    };
    let mut with = log.clone();
    // The state just before this update, in key order.
    with.retain_before(entry.key);
    let before = with.replay();
    deltas
        .iter()
        .find(|(k, v)| add(before.as_ref().and_then(|p| p.get(*k)), v).is_none())
        .map(|(k, _)| k.clone())
}

/// Whether JSON text may hold a number of magnitude 1e21 or more: one written with an
/// exponent (a digit then `e`/`E`) or with more than 20 digits in a row. Digits in strings
/// count too: a false alarm only costs the full check.
fn may_hold_huge_number(json: &[u8]) -> bool {
    let mut run = 0;
    for &b in json {
        if b.is_ascii_digit() {
            run += 1;
            if run > 20 {
                return true;
            }
        } else {
            if run > 0 && (b == b'e' || b == b'E') {
                return true;
            }
            run = 0;
        }
    }
    false
}

impl Log {
    /// Keeps only the entries before `key`.
    fn retain_before(&mut self, key: Key) {
        match self {
            Log::One(e) => {
                if e.key >= key {
                    *self = Log::Sorted(Vec::new());
                }
            }
            Log::Sorted(v) => v.retain(|x| x.key < key),
            Log::Tree(t) => {
                t.split_off(&key);
            }
        }
    }
}

/// `$time` in ms: values ≥ 1e11 are milliseconds, smaller ones seconds.
pub(crate) fn time_ms(v: &Json) -> Option<i64> {
    let f = v.as_f64()?;
    if !f.is_finite() {
        return None;
    }
    Some(if f.abs() >= 1e11 {
        f as i64
    } else {
        (f * 1000.0) as i64
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(seq: u64, time_ms: i64, op: &str, payload: Json) -> Entry {
        Entry {
            key: (time_ms, seq),
            op: Op::from_key(op).unwrap(),
            ignore_time: true,
            geo: Geo::None,
            payload: serde_json::to_vec(&payload).unwrap().into_boxed_slice(),
        }
    }

    /// Soundness of the shortcut: any number of magnitude 1e21 or more, as JSON writes it,
    /// is flagged, so the full check runs for it; ordinary values are not.
    #[test]
    fn huge_numbers_are_always_flagged() {
        let mut x = 1e21f64;
        while x.is_finite() {
            for v in [x, -x, x * 1.37, x + 12345.0] {
                let text = serde_json::to_vec(&json!({ "n": v })).unwrap();
                assert!(
                    may_hold_huge_number(&text),
                    "{}",
                    String::from_utf8_lossy(&text)
                );
            }
            x *= 7.3;
        }
        for v in [
            json!(u64::MAX),
            json!(i64::MIN),
            json!(f64::MAX),
            json!(1e21),
        ] {
            let text = serde_json::to_vec(&json!({ "n": v })).unwrap();
            let huge = v.as_f64().unwrap().abs() >= 1e21;
            assert_eq!(may_hold_huge_number(&text), huge, "{v}");
        }
        let long = br#"{"n":1000000000000000000000000000000}"#;
        assert!(may_hold_huge_number(long));
        let ordinary =
            json!({"n": 3, "m": -2.5, "big": 9_007_199_254_740_993u64, "s": "plan 2024"});
        assert!(!may_hold_huge_number(
            &serde_json::to_vec(&ordinary).unwrap()
        ));
    }

    fn log_of(entries: Vec<Entry>) -> Log {
        let mut it = entries.into_iter();
        let mut log = Log::One(it.next().unwrap());
        for e in it {
            log.insert(e);
        }
        log
    }

    #[test]
    fn semantics() {
        let ops = [
            ("$remove", json!({"tags": "x"})),
            ("$set", json!({"a": 1, "tags": ["x", "y"]})),
            ("$set_once", json!({"a": 2, "b": 3})),
            ("$add", json!({"n": 2, "a": 1.5})),
            ("$add", json!({"n": -5})),
            ("$union", json!({"tags": ["y", "z", "z"]})),
            ("$append", json!({"tags": "y", "log": 1})),
            ("$remove", json!({"tags": "y", "missing": 1})),
            ("$unset", json!(["b"])),
        ];
        let mut log = log_of(
            ops.into_iter()
                .enumerate()
                .map(|(i, (op, p))| entry(i as u64, 0, op, p))
                .collect(),
        );
        let p = log.replay().unwrap();
        assert_eq!(
            Json::Object(p),
            json!({"a": 2.5, "n": -3, "tags": ["x", "z"], "log": [1], "$geo_source": "none"})
        );
        log.insert(entry(100, 0, "$delete", json!("")));
        assert_eq!(log.replay(), None);
        assert_eq!(log.len(), 1, "a $delete drops what came before it");
        // An older $time lands before the delete.
        log.insert(entry(101, -1, "$set", json!({"late": true})));
        assert_eq!(log.replay(), None);
    }

    #[test]
    fn any_arrival_order_gives_the_time_order_result() {
        // Decreasing, increasing and shuffled arrivals past the vector/tree boundary.
        let n = 3 * SORTED_VEC_MAX as i64;
        let make = |t: i64| entry(t as u64, t, "$append", json!({"l": t}));
        let expected: Vec<i64> = (0..n).collect();
        let mut rng = engage_core::rng::SplitMix64::new(5);
        let mut shuffled: Vec<i64> = (0..n).collect();
        for i in (1..shuffled.len()).rev() {
            shuffled.swap(i, rng.below(i as u64 + 1) as usize);
        }
        for order in [(0..n).rev().collect::<Vec<_>>(), (0..n).collect(), shuffled] {
            let log = log_of(order.into_iter().map(make).collect());
            assert_eq!(log.replay().unwrap()["l"], json!(expected));
        }
    }

    #[test]
    fn adds_stay_exact_integers_or_refuse_to_overflow() {
        let big = 9_007_199_254_740_993u64; // 2^53 + 1: no f64 holds it
        assert_eq!(add(Some(&json!(big)), &json!(2)), Some(json!(big + 2)));
        assert_eq!(
            add(Some(&json!(u64::MAX - 1)), &json!(1)),
            Some(json!(u64::MAX))
        );
        assert_eq!(
            add(Some(&json!(i64::MIN)), &json!(-1)),
            Some(json!(i64::MIN as f64 - 1.0))
        );
        assert_eq!(add(Some(&json!(1.7e308)), &json!(1.7e308)), None);
        let log = log_of(vec![entry(0, 0, "$set", json!({"n": 1.7e308}))]);
        assert_eq!(
            overflowing_add(&log, &entry(1, 1, "$add", json!({"n": 1e308}))),
            Some("n".into())
        );
        assert_eq!(
            overflowing_add(&log, &entry(1, 1, "$add", json!({"n": 1}))),
            None
        );
    }

    #[test]
    fn time_units() {
        assert_eq!(time_ms(&json!(1_700_000_000)), Some(1_700_000_000_000));
        assert_eq!(
            time_ms(&json!(1_700_000_000_123i64)),
            Some(1_700_000_000_123)
        );
        assert_eq!(time_ms(&json!(1.5)), Some(1500));
    }
}
