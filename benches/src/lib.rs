//! A deterministic, realistic workload for engage's benchmarks, in three forms holding the
//! same data: engage-core [`Update`]s, `serde_json::Value` objects, and serde-derived
//! structs.
//!
//! Mix: 40% `$set` with 3–7 properties (names, e-mails, cities with non-ASCII letters, plan,
//! integers, floats, booleans, a date, a note with quotes, backslashes, a newline, a tab and
//! an emoji, a short list), 15% `$set_once`, 15% `$add` (integers and floats), 10% `$union`,
//! 5% `$append`, 5% `$remove`, 5% `$unset`, 5% `$delete`; 20% carry `$ip`, 10%
//! `$ignore_time`; about four updates per profile.

pub mod paths;
pub mod threads;

use engage_core::model::{DateTime, Number, Operation, ProfileId};
use engage_core::{Properties, Update, Value};
use serde::{Serialize, Serializer};
use serde_json::{Value as Json, json};

/// The seeded generator of the workload, with a helper to pick from a slice.
#[derive(Debug, Clone)]
pub struct Rng(engage_core::rng::SplitMix64);

impl Rng {
    /// From a seed.
    pub fn new(seed: u64) -> Self {
        Rng(engage_core::rng::SplitMix64::new(seed))
    }
    /// Below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0.below(n)
    }
    /// One of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// A property value of the workload.
#[derive(Debug, Clone, PartialEq)]
pub enum Pv {
    /// A string.
    Str(String),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A date (seconds since the epoch).
    Date(i64),
    /// A short list of strings.
    List(Vec<String>),
}

/// A number for `$add`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Num {
    /// Integer.
    Int(i64),
    /// Float.
    Float(f64),
}

/// An operation of the workload.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// `$set`
    Set(Vec<(String, Pv)>),
    /// `$set_once`
    SetOnce(Vec<(String, Pv)>),
    /// `$add`
    Add(Vec<(String, Num)>),
    /// `$union`
    Union(Vec<(String, Vec<String>)>),
    /// `$append`
    Append(Vec<(String, Pv)>),
    /// `$remove`
    Remove(Vec<(String, Pv)>),
    /// `$unset`
    Unset(Vec<String>),
    /// `$delete`
    Delete,
}

/// One update of the workload, independent of any encoder.
#[derive(Debug, Clone, PartialEq)]
pub struct Rec {
    /// distinct_id
    pub id: String,
    /// The operation.
    pub op: Op,
    /// `$ip`
    pub ip: Option<String>,
    /// `$ignore_time`
    pub ignore_time: bool,
}

const FIRST: [&str; 8] = [
    "Ada",
    "Grace",
    "Alan",
    "Katherine",
    "Edsger",
    "Barbara",
    "Linus",
    "Zoë",
];
const LAST: [&str; 6] = [
    "Lovelace", "Hopper", "Turing", "Johnson", "Dijkstra", "Liskov",
];
const CITIES: [&str; 6] = [
    "Kraków",
    "São Paulo",
    "Zürich",
    "Reykjavík",
    "Malmö",
    "Paris",
];
const PLANS: [&str; 4] = ["free", "pro", "team", "enterprise"];
const TAGS: [&str; 6] = ["beta", "vip", "eu", "mobile", "trial", "churn-risk"];

fn property(rng: &mut Rng, i: u64) -> (String, Pv) {
    match i {
        0 => (
            "$name".into(),
            Pv::Str(format!("{} {}", rng.pick(&FIRST), rng.pick(&LAST))),
        ),
        1 => (
            "$email".into(),
            Pv::Str(format!("user{}@example.com", rng.below(100_000))),
        ),
        2 => ("city".into(), Pv::Str((*rng.pick(&CITIES)).into())),
        3 => ("plan".into(), Pv::Str((*rng.pick(&PLANS)).into())),
        4 => ("seats".into(), Pv::Int(rng.below(500) as i64)),
        5 => ("score".into(), Pv::Float(rng.below(10_000) as f64 / 7.0)),
        6 => ("active".into(), Pv::Bool(rng.below(2) == 0)),
        7 => (
            "signed_up".into(),
            Pv::Date(1_600_000_000 + rng.below(100_000_000) as i64),
        ),
        8 => (
            "note".into(),
            Pv::Str("said \"hi\" \\ then\nleft\t😀".into()),
        ),
        _ => (
            "tags".into(),
            Pv::List(vec![(*rng.pick(&TAGS)).into(), (*rng.pick(&TAGS)).into()]),
        ),
    }
}

fn properties(rng: &mut Rng, min: u64, max: u64) -> Vec<(String, Pv)> {
    let n = min + rng.below(max - min + 1);
    let start = rng.below(10);
    (0..n).map(|k| property(rng, (start + k) % 10)).collect()
}

/// `n` updates from `seed`.
pub fn workload(n: usize, seed: u64) -> Vec<Rec> {
    let mut rng = Rng::new(seed);
    let profiles = (n as u64 / 4).max(1);
    (0..n)
        .map(|_| {
            let id = format!("user-{}", rng.below(profiles));
            let op = match rng.below(100) {
                0..40 => Op::Set(properties(&mut rng, 3, 7)),
                40..55 => Op::SetOnce(properties(&mut rng, 1, 3)),
                55..70 => {
                    if rng.below(2) == 0 {
                        Op::Add(vec![("logins".into(), Num::Int(1 + rng.below(3) as i64))])
                    } else {
                        Op::Add(vec![(
                            "credits".into(),
                            Num::Float(rng.below(1000) as f64 / 4.0),
                        )])
                    }
                }
                70..80 => Op::Union(vec![(
                    "tags".into(),
                    vec![(*rng.pick(&TAGS)).into(), (*rng.pick(&TAGS)).into()],
                )]),
                80..85 => Op::Append(vec![(
                    "events".into(),
                    Pv::Str(format!("event-{}", rng.below(50))),
                )]),
                85..90 => Op::Remove(vec![("tags".into(), Pv::Str((*rng.pick(&TAGS)).into()))]),
                90..95 => Op::Unset(vec!["city".into(), "score".into()]),
                _ => Op::Delete,
            };
            let ip = (rng.below(100) < 20).then(|| format!("203.0.113.{}", rng.below(255)));
            let ignore_time = rng.below(100) < 10;
            Rec {
                id,
                op,
                ip,
                ignore_time,
            }
        })
        .collect()
}

fn pv_value(v: &Pv) -> Value {
    match v {
        Pv::Str(s) => Value::String(s.clone()),
        Pv::Int(i) => Value::Int(*i),
        Pv::Float(f) => Value::Float(*f),
        Pv::Bool(b) => Value::Bool(*b),
        Pv::Date(d) => Value::DateTime(DateTime::from_unix_seconds(*d)),
        Pv::List(l) => Value::List(l.iter().map(|s| Value::String(s.clone())).collect()),
    }
}

fn props(p: &[(String, Pv)]) -> Properties {
    p.iter().map(|(k, v)| (k.clone(), pv_value(v))).collect()
}

/// The engage-core form.
pub fn to_update(r: &Rec) -> Update {
    let op = match &r.op {
        Op::Set(p) => Operation::Set(props(p)),
        Op::SetOnce(p) => Operation::SetOnce(props(p)),
        Op::Append(p) => Operation::Append(props(p)),
        Op::Remove(p) => Operation::Remove(props(p)),
        Op::Add(items) => Operation::Add(
            items
                .iter()
                .map(|(k, n)| {
                    let n = match n {
                        Num::Int(i) => Number::Int(*i),
                        Num::Float(f) => Number::Float(*f),
                    };
                    (k.clone(), n)
                })
                .collect(),
        ),
        Op::Union(items) => Operation::Union(
            items
                .iter()
                .map(|(k, l)| {
                    (
                        k.clone(),
                        l.iter().map(|s| Value::String(s.clone())).collect(),
                    )
                })
                .collect(),
        ),
        Op::Unset(names) => Operation::Unset(names.clone()),
        Op::Delete => Operation::Delete,
    };
    let mut u = Update::new(
        ProfileId::User {
            distinct_id: r.id.clone(),
        },
        op,
    );
    if let Some(ip) = &r.ip {
        u = u.with_ip(ip.clone());
    }
    if r.ignore_time {
        u = u.ignore_time();
    }
    u
}

fn pv_json(v: &Pv) -> Json {
    match v {
        Pv::Str(s) => Json::String(s.clone()),
        Pv::Int(i) => json!(i),
        Pv::Float(f) => json!(f),
        Pv::Bool(b) => json!(b),
        Pv::Date(d) => Json::String(DateTime::from_unix_seconds(*d).to_string()),
        Pv::List(l) => json!(l),
    }
}

fn props_json(p: &[(String, Pv)]) -> Json {
    Json::Object(p.iter().map(|(k, v)| (k.clone(), pv_json(v))).collect())
}

/// The `serde_json::Value` form (token included), as a typical SDK builds it.
pub fn to_value(r: &Rec, token: &str) -> Json {
    let mut m = serde_json::Map::new();
    m.insert("$token".into(), json!(token));
    m.insert("$distinct_id".into(), json!(r.id));
    let (key, val) = match &r.op {
        Op::Set(p) => ("$set", props_json(p)),
        Op::SetOnce(p) => ("$set_once", props_json(p)),
        Op::Append(p) => ("$append", props_json(p)),
        Op::Remove(p) => ("$remove", props_json(p)),
        Op::Add(items) => (
            "$add",
            Json::Object(
                items
                    .iter()
                    .map(|(k, n)| {
                        let v = match n {
                            Num::Int(i) => json!(i),
                            Num::Float(f) => json!(f),
                        };
                        (k.clone(), v)
                    })
                    .collect(),
            ),
        ),
        Op::Union(items) => (
            "$union",
            Json::Object(items.iter().map(|(k, l)| (k.clone(), json!(l))).collect()),
        ),
        Op::Unset(names) => ("$unset", json!(names)),
        Op::Delete => ("$delete", json!("")),
    };
    m.insert(key.into(), val);
    if let Some(ip) = &r.ip {
        m.insert("$ip".into(), json!(ip));
    }
    if r.ignore_time {
        m.insert("$ignore_time".into(), json!(true));
    }
    Json::Object(m)
}

/// A property value, serde-derived.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum DerivedValue {
    /// A string (dates pre-rendered).
    Str(String),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A list.
    List(Vec<String>),
}

fn as_map<S: Serializer, T: Serialize>(
    v: &Option<Vec<(String, T)>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(items) => s.collect_map(items.iter().map(|(k, v)| (k, v))),
        None => s.serialize_none(),
    }
}

/// The serde-derived form, as a user who writes structs would build it.
#[derive(Debug, Clone, Serialize)]
pub struct Derived {
    /// `$token`
    #[serde(rename = "$token")]
    pub token: String,
    /// `$distinct_id`
    #[serde(rename = "$distinct_id")]
    pub distinct_id: String,
    /// `$set`
    #[serde(
        rename = "$set",
        skip_serializing_if = "Option::is_none",
        serialize_with = "as_map"
    )]
    pub set: Option<Vec<(String, DerivedValue)>>,
    /// `$set_once`
    #[serde(
        rename = "$set_once",
        skip_serializing_if = "Option::is_none",
        serialize_with = "as_map"
    )]
    pub set_once: Option<Vec<(String, DerivedValue)>>,
    /// `$add`
    #[serde(
        rename = "$add",
        skip_serializing_if = "Option::is_none",
        serialize_with = "as_map"
    )]
    pub add: Option<Vec<(String, DerivedValue)>>,
    /// `$union`
    #[serde(
        rename = "$union",
        skip_serializing_if = "Option::is_none",
        serialize_with = "as_map"
    )]
    pub union: Option<Vec<(String, Vec<String>)>>,
    /// `$append`
    #[serde(
        rename = "$append",
        skip_serializing_if = "Option::is_none",
        serialize_with = "as_map"
    )]
    pub append: Option<Vec<(String, DerivedValue)>>,
    /// `$remove`
    #[serde(
        rename = "$remove",
        skip_serializing_if = "Option::is_none",
        serialize_with = "as_map"
    )]
    pub remove: Option<Vec<(String, DerivedValue)>>,
    /// `$unset`
    #[serde(rename = "$unset", skip_serializing_if = "Option::is_none")]
    pub unset: Option<Vec<String>>,
    /// `$delete`
    #[serde(rename = "$delete", skip_serializing_if = "Option::is_none")]
    pub delete: Option<&'static str>,
    /// `$ip`
    #[serde(rename = "$ip", skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// `$ignore_time`
    #[serde(rename = "$ignore_time", skip_serializing_if = "std::ops::Not::not")]
    pub ignore_time: bool,
}

fn dv(v: &Pv) -> DerivedValue {
    match v {
        Pv::Str(s) => DerivedValue::Str(s.clone()),
        Pv::Int(i) => DerivedValue::Int(*i),
        Pv::Float(f) => DerivedValue::Float(*f),
        Pv::Bool(b) => DerivedValue::Bool(*b),
        Pv::Date(d) => DerivedValue::Str(DateTime::from_unix_seconds(*d).to_string()),
        Pv::List(l) => DerivedValue::List(l.clone()),
    }
}

fn dprops(p: &[(String, Pv)]) -> Option<Vec<(String, DerivedValue)>> {
    Some(p.iter().map(|(k, v)| (k.clone(), dv(v))).collect())
}

/// The serde-derived form.
pub fn to_derived(r: &Rec, token: &str) -> Derived {
    let mut d = Derived {
        token: token.to_owned(),
        distinct_id: r.id.clone(),
        set: None,
        set_once: None,
        add: None,
        union: None,
        append: None,
        remove: None,
        unset: None,
        delete: None,
        ip: r.ip.clone(),
        ignore_time: r.ignore_time,
    };
    match &r.op {
        Op::Set(p) => d.set = dprops(p),
        Op::SetOnce(p) => d.set_once = dprops(p),
        Op::Append(p) => d.append = dprops(p),
        Op::Remove(p) => d.remove = dprops(p),
        Op::Add(items) => {
            d.add = Some(
                items
                    .iter()
                    .map(|(k, n)| {
                        let v = match n {
                            Num::Int(i) => DerivedValue::Int(*i),
                            Num::Float(f) => DerivedValue::Float(*f),
                        };
                        (k.clone(), v)
                    })
                    .collect(),
            )
        }
        Op::Union(items) => d.union = Some(items.clone()),
        Op::Unset(names) => d.unset = Some(names.clone()),
        Op::Delete => d.delete = Some(""),
    }
    d
}

/// A user's own struct, for the `build_encode` group.
#[derive(Debug, Clone, Serialize)]
pub struct Customer {
    /// Name.
    pub name: String,
    /// E-mail.
    pub email: String,
    /// City.
    pub city: &'static str,
    /// Plan.
    pub plan: &'static str,
    /// Seats.
    pub seats: u32,
    /// Score.
    pub score: f64,
    /// Active.
    pub active: bool,
    /// Tags.
    pub tags: Vec<&'static str>,
}

/// What a serde user writes by hand to send a [`Customer`]: an envelope struct around
/// it, the `build_encode` group's serde-derive baseline.
#[derive(Debug, Serialize)]
pub struct Envelope<'a> {
    /// The project token.
    #[serde(rename = "$token")]
    pub token: &'a str,
    /// The profile.
    #[serde(rename = "$distinct_id")]
    pub distinct_id: &'a str,
    /// The user's struct.
    #[serde(rename = "$set")]
    pub set: &'a Customer,
}

/// `n` customers from `seed`.
pub fn customers(n: usize, seed: u64) -> Vec<(String, Customer)> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|i| {
            let c = Customer {
                name: format!("{} {}", rng.pick(&FIRST), rng.pick(&LAST)),
                email: format!("user{i}@example.com"),
                city: CITIES[rng.below(CITIES.len() as u64) as usize],
                plan: PLANS[rng.below(PLANS.len() as u64) as usize],
                seats: rng.below(500) as u32,
                score: rng.below(10_000) as f64 / 7.0,
                active: rng.below(2) == 0,
                tags: vec![*rng.pick(&TAGS), *rng.pick(&TAGS)],
            };
            (format!("user-{i}"), c)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_forms_encode_the_same_data() {
        let token = "tok";
        let recs = workload(2000, 1);
        let config = engage_core::BatchConfig::new(
            engage_core::Token::new(token).unwrap(),
            engage_core::Endpoint::Engage,
        );
        let batch = engage_core::batches(config, recs.iter().map(to_update))
            .next()
            .unwrap()
            .unwrap();
        let ours: Json = serde_json::from_slice(batch.body()).unwrap();
        let values: Vec<Json> = recs.iter().map(|r| to_value(r, token)).collect();
        let derived: Json = serde_json::from_slice(
            &serde_json::to_vec(
                &recs
                    .iter()
                    .map(|r| to_derived(r, token))
                    .collect::<Vec<_>>(),
            )
            .unwrap(),
        )
        .unwrap();
        for (i, v) in values.iter().enumerate() {
            assert_eq!(&ours[i], v, "engage, record {i}");
            assert_eq!(&derived[i], v, "serde-derive, record {i}");
        }
        let per_update = batch.body().len() / recs.len();
        assert!(
            (110..200).contains(&per_update),
            "{per_update} bytes per update"
        );
    }

    #[test]
    fn the_build_encode_paths_send_the_same_records() {
        let token = "tok";
        let people = customers(500, 3);
        let config = engage_core::BatchConfig::new(
            engage_core::Token::new(token).unwrap(),
            engage_core::Endpoint::Engage,
        );
        let body = |updates: Vec<Update>| -> Json {
            let batch = engage_core::batches(config.clone(), updates)
                .next()
                .unwrap()
                .unwrap();
            serde_json::from_slice(batch.body()).unwrap()
        };
        let from_struct = body(
            people
                .iter()
                .map(|(id, c)| Update::user(id.as_str()).set_from(c).unwrap())
                .collect(),
        );
        let from_properties = body(
            people
                .iter()
                .map(|(id, c)| {
                    Update::user(id.as_str()).set(Properties::from_serialize(c).unwrap())
                })
                .collect(),
        );
        let envelopes: Vec<Envelope<'_>> = people
            .iter()
            .map(|(id, c)| Envelope {
                token,
                distinct_id: id,
                set: c,
            })
            .collect();
        let derived: Json =
            serde_json::from_slice(&serde_json::to_vec(&envelopes).unwrap()).unwrap();
        assert_eq!(from_struct, derived);
        assert_eq!(from_properties, derived);
    }

    #[test]
    fn the_mix_is_as_specified() {
        let recs = workload(20_000, 2);
        let share = |f: &dyn Fn(&Rec) -> bool| {
            recs.iter().filter(|r| f(r)).count() as f64 / recs.len() as f64
        };
        assert!((share(&|r| matches!(r.op, Op::Set(_))) - 0.40).abs() < 0.02);
        assert!((share(&|r| matches!(r.op, Op::Add(_))) - 0.15).abs() < 0.02);
        assert!((share(&|r| r.ip.is_some()) - 0.20).abs() < 0.02);
        assert!((share(&|r| r.ignore_time) - 0.10).abs() < 0.02);
        let profiles: std::collections::HashSet<&str> =
            recs.iter().map(|r| r.id.as_str()).collect();
        assert!(
            profiles.len() < recs.len() / 3,
            "several updates per profile"
        );
    }
}
