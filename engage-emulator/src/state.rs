//! Profile state with Mixpanel's semantics, and the counters.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};

use serde::Serialize;
use serde_json::{Map, Value as Json};

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
}

/// Where geolocation came from for an update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Geo {
    /// `ip=1` and no `$ip`: the request's address.
    Request(String),
    /// `$ip` in the record.
    Record(String),
    /// `ip=0` or `$ip: "0"`.
    None,
}

/// One update waiting in a profile's log.
#[derive(Debug, Clone)]
struct Entry {
    time_ms: i64,
    seq: u64,
    op: &'static str,
    payload: Json,
    ignore_time: bool,
    geo: Geo,
}

/// A profile's updates, kept in `$time` order (arrival order breaks ties); the state is
/// the replay of the log, so an update with an older `$time` lands where it belongs.
#[derive(Debug, Clone, Default)]
struct Log {
    entries: Vec<Entry>,
}

impl Log {
    fn insert(&mut self, e: Entry) {
        let key = (e.time_ms, e.seq);
        let at = self.entries.partition_point(|x| (x.time_ms, x.seq) <= key);
        self.entries.insert(at, e);
    }

    fn replay(&self) -> Option<Profile> {
        let mut profile: Option<Profile> = None;
        for e in &self.entries {
            apply(&mut profile, e);
        }
        profile
    }
}

fn apply(profile: &mut Option<Profile>, e: &Entry) {
    if e.op == "$delete" {
        *profile = None;
        return;
    }
    let creates = !matches!(e.op, "$remove" | "$unset");
    if profile.is_none() && !creates {
        return;
    }
    let p = profile.get_or_insert_with(Map::new);
    match (e.op, &e.payload) {
        ("$set", Json::Object(props)) => {
            for (k, v) in props {
                p.insert(k.clone(), v.clone());
            }
        }
        ("$set_once", Json::Object(props)) => {
            for (k, v) in props {
                p.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        ("$add", Json::Object(props)) => {
            for (k, v) in props {
                let sum = add(p.get(k), v);
                p.insert(k.clone(), sum);
            }
        }
        ("$union", Json::Object(props)) => {
            for (k, v) in props {
                let items = v.as_array().cloned().unwrap_or_default();
                let list = list_entry(p, k);
                for item in items {
                    if !list.contains(&item) {
                        list.push(item);
                    }
                }
            }
        }
        ("$append", Json::Object(props)) => {
            for (k, v) in props {
                list_entry(p, k).push(v.clone());
            }
        }
        ("$remove", Json::Object(props)) => {
            for (k, v) in props {
                if let Some(Json::Array(list)) = p.get_mut(k) {
                    list.retain(|x| x != v);
                }
            }
        }
        ("$unset", Json::Array(names)) => {
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
                engage_core::DateTime::from_unix_seconds(e.time_ms.div_euclid(1000)).to_string(),
            ),
        );
    }
    let (source, ip) = match &e.geo {
        Geo::Request(ip) => ("request", Some(ip)),
        Geo::Record(ip) => ("$ip", Some(ip)),
        Geo::None => ("none", None),
    };
    p.insert("$geo_source".into(), Json::String(source.into()));
    match ip {
        Some(ip) => p.insert("$geo_ip".into(), Json::String(ip.clone())),
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

/// `$add`: a missing (or non-numeric) property counts as 0; integers stay integers
/// unless they overflow.
fn add(current: Option<&Json>, delta: &Json) -> Json {
    let current = current.filter(|c| c.is_number());
    let current_int = match current {
        None => Some(0),
        Some(c) => c.as_i64(),
    };
    if let (Some(a), Some(b)) = (current_int, delta.as_i64())
        && let Some(sum) = a.checked_add(b)
    {
        return Json::from(sum);
    }
    let a = current.and_then(Json::as_f64).unwrap_or(0.0);
    let b = delta.as_f64().unwrap_or(0.0);
    serde_json::Number::from_f64(a + b).map_or(Json::Null, Json::Number)
}

/// Everything the emulator keeps.
#[derive(Debug, Default)]
pub(crate) struct Store {
    users: HashMap<String, Log>,
    groups: HashMap<(String, String), Log>,
    pub(crate) stats: Stats,
    applied_bodies: HashSet<(u64, u64)>,
    seq: u64,
    last_arrival_ms: i64,
    hash_keys: (std::hash::RandomState, std::hash::RandomState),
}

/// One valid record, ready to apply.
pub(crate) struct Valid {
    pub(crate) distinct_id: Option<String>,
    pub(crate) group: Option<(String, String)>,
    pub(crate) op: &'static str,
    pub(crate) payload: Json,
    pub(crate) time_ms: Option<i64>,
    pub(crate) ignore_time: bool,
    pub(crate) geo: Geo,
}

impl Store {
    pub(crate) fn reset(&mut self) {
        let keys = std::mem::take(&mut self.hash_keys);
        *self = Store {
            hash_keys: keys,
            ..Store::default()
        };
    }

    /// Arrival time for updates without `$time`: the wall clock, never going backwards.
    fn arrival_ms(&mut self) -> i64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        self.last_arrival_ms = self.last_arrival_ms.max(now);
        self.last_arrival_ms
    }

    /// Applies valid records in order; counts a repeated body.
    pub(crate) fn apply(&mut self, body: &[u8], records: Vec<Valid>, non_idempotent: bool) {
        if records.is_empty() {
            return;
        }
        let hash = {
            let mut a = self.hash_keys.0.build_hasher();
            let mut b = self.hash_keys.1.build_hasher();
            a.write(body);
            b.write(body);
            (a.finish(), b.finish())
        };
        if !self.applied_bodies.insert(hash) {
            self.stats.repeated_bodies += 1;
            if non_idempotent {
                self.stats.duplicate_batches += 1;
            }
        }
        let arrival = self.arrival_ms();
        for r in records {
            self.seq += 1;
            let entry = Entry {
                time_ms: r.time_ms.unwrap_or(arrival),
                seq: self.seq,
                op: r.op,
                payload: r.payload,
                ignore_time: r.ignore_time,
                geo: r.geo,
            };
            let log = match (r.group, r.distinct_id) {
                (Some(g), _) => self.groups.entry(g).or_default(),
                (None, Some(d)) => self.users.entry(d).or_default(),
                (None, None) => continue,
            };
            log.insert(entry);
            self.stats.accepted += 1;
        }
    }

    pub(crate) fn profiles(&self) -> BTreeMap<String, Profile> {
        self.users
            .iter()
            .filter_map(|(id, log)| log.replay().map(|p| (id.clone(), p)))
            .collect()
    }

    pub(crate) fn profile(&self, id: &str) -> Option<Profile> {
        self.users.get(id).and_then(Log::replay)
    }

    pub(crate) fn groups(&self) -> BTreeMap<String, BTreeMap<String, Profile>> {
        let mut out: BTreeMap<String, BTreeMap<String, Profile>> = BTreeMap::new();
        for ((key, id), log) in &self.groups {
            if let Some(p) = log.replay() {
                out.entry(key.clone()).or_default().insert(id.clone(), p);
            }
        }
        out
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

    fn entry(seq: u64, time_ms: i64, op: &'static str, payload: Json) -> Entry {
        Entry {
            time_ms,
            seq,
            op,
            payload,
            ignore_time: true,
            geo: Geo::None,
        }
    }

    #[test]
    fn semantics() {
        let mut log = Log::default();
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
        for (i, (op, p)) in ops.into_iter().enumerate() {
            log.insert(entry(i as u64, 0, op, p));
        }
        let p = log.replay().unwrap();
        assert_eq!(
            Json::Object(p),
            json!({"a": 2.5, "n": -3, "tags": ["x", "z"], "log": [1], "$geo_source": "none"})
        );
        log.insert(entry(100, 0, "$delete", json!("")));
        assert_eq!(log.replay(), None);
        // An older $time lands before the delete.
        log.insert(entry(101, -1, "$set", json!({"late": true})));
        assert_eq!(log.replay(), None);
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
