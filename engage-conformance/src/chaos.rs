//! The chaos case: realistic updates, a reference model of Mixpanel's semantics, and the
//! comparison with what the emulator ended up holding.

use std::collections::{BTreeMap, HashMap, HashSet};

use engage_core::delivery::RecordOutcome;
use engage_core::model::{Operation, ProfileId};
use engage_core::{ImportEvent, Update, Value};
use serde_json::{Map, Value as Json};

/// The seeded generator of the workload.
pub type Rng = engage_core::rng::SplitMix64;

const CITIES: [&str; 5] = ["Kraków", "São Paulo", "Zürich", "Reykjavík", "Paris"];
const TAGS: [&str; 6] = ["beta", "vip", "eu", "mobile", "trial", "churn-risk"];

/// `n` mixed updates over `profiles` profiles, several per profile.
pub fn updates(n: usize, profiles: u64, seed: u64) -> Vec<Update> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|i| {
            let user = Update::user(format!("user-{}", rng.below(profiles)));
            match rng.below(100) {
                0..35 => user.set([
                    (
                        "plan",
                        Value::from(["free", "pro", "team"][rng.below(3) as usize]),
                    ),
                    ("city", Value::from(CITIES[rng.below(5) as usize])),
                    ("seq", Value::from(i as u64)),
                    ("note", Value::from(format!("said \"hi\"\\n #{i}\n\t😀"))),
                ]),
                35..45 => user.set_once([
                    ("first_seen", Value::from(i as u64)),
                    ("source", Value::from("ads")),
                ]),
                45..65 => {
                    if rng.below(4) == 0 {
                        user.add([("balance", 0.5)])
                    } else {
                        user.add([("visits", rng.below(5) as i64 + 1)])
                    }
                }
                65..75 => user.union([(
                    "tags",
                    vec![TAGS[rng.below(6) as usize], TAGS[rng.below(6) as usize]],
                )]),
                75..85 => user.append([("events", format!("e{}", rng.below(10)))]),
                85..90 => user.remove([("tags", TAGS[rng.below(6) as usize])]),
                90..95 => user.unset(["city"]),
                _ => user.delete(),
            }
        })
        .collect()
}

fn to_json(v: &Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::UInt(u) => Json::from(*u),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Value::String(s) => Json::String(s.clone()),
        Value::DateTime(d) => Json::String(d.to_string()),
        Value::List(l) => Json::Array(l.iter().map(to_json).collect()),
        Value::Object(o) => Json::Object(o.iter().map(|(k, v)| (k.clone(), to_json(v))).collect()),
    }
}

fn add(current: Option<&Json>, delta: &engage_core::model::Number) -> Json {
    let cur = current.filter(|c| c.is_number());
    match (cur.map_or(Some(0), Json::as_i64), delta) {
        (Some(a), engage_core::model::Number::Int(b)) => Json::from(a + b),
        _ => {
            let a = cur.and_then(Json::as_f64).unwrap_or(0.0);
            let b = match delta {
                engage_core::model::Number::Int(i) => *i as f64,
                engage_core::model::Number::UInt(u) => *u as f64,
                engage_core::model::Number::Float(f) => *f,
            };
            serde_json::Number::from_f64(a + b).map_or(Json::Null, Json::Number)
        }
    }
}

fn list<'a>(p: &'a mut Map<String, Json>, k: &str) -> &'a mut Vec<Json> {
    let slot = p.entry(k.to_owned()).or_insert_with(|| Json::Array(vec![]));
    if !slot.is_array() {
        *slot = Json::Array(vec![]);
    }
    slot.as_array_mut().expect("a list")
}

/// The list property the workload changes with `$union` and `$remove` only.
const UNION_LIST: &str = "tags";

/// Applies one update to the model, with Mixpanel's semantics.
pub fn apply(model: &mut BTreeMap<String, Map<String, Json>>, update: &Update) {
    let Some(ProfileId::User { distinct_id }) = update.profile() else {
        return;
    };
    let Some(op) = update.operation() else { return };
    if matches!(op, Operation::Delete) {
        model.remove(&distinct_id);
        return;
    }
    if matches!(op, Operation::Remove(_) | Operation::Unset(_)) && !model.contains_key(&distinct_id)
    {
        return;
    }
    let p = model.entry(distinct_id).or_default();
    match &op {
        Operation::Set(props) => {
            for (k, v) in props.iter() {
                p.insert(k.to_owned(), to_json(v));
            }
        }
        Operation::SetOnce(props) => {
            for (k, v) in props.iter() {
                p.entry(k.to_owned()).or_insert_with(|| to_json(v));
            }
        }
        Operation::Add(items) => {
            for (k, n) in items {
                let sum = add(p.get(k), n);
                p.insert(k.clone(), sum);
            }
        }
        Operation::Union(items) => {
            for (k, values) in items {
                let l = list(p, k);
                for v in values.iter().map(to_json) {
                    if !l.contains(&v) {
                        l.push(v);
                    }
                }
            }
        }
        Operation::Append(props) => {
            for (k, v) in props.iter() {
                list(p, k).push(to_json(v));
            }
        }
        Operation::Remove(props) => {
            for (k, v) in props.iter() {
                if let Some(Json::Array(l)) = p.get_mut(k) {
                    let v = to_json(v);
                    l.retain(|x| *x != v);
                }
            }
        }
        Operation::Unset(names) => {
            for n in names {
                p.remove(n);
            }
        }
        _ => {}
    }
}

/// What became of each input update, collected from import events.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Outcome per input index: `"accepted"`, `"uncertain"`, `"rejected"`,
    /// `"not-delivered"`, `"invalid"`.
    pub outcomes: HashMap<u64, &'static str>,
    /// Indices seen more than once (must stay empty).
    pub duplicates: Vec<u64>,
}

impl Ledger {
    /// Records an event.
    pub fn record(&mut self, event: ImportEvent) {
        let mut put = |index: u64, what: &'static str| {
            if self.outcomes.insert(index, what).is_some() {
                self.duplicates.push(index);
            }
        };
        match event {
            ImportEvent::Invalid(e) => put(e.index, "invalid"),
            ImportEvent::Delivered(report) => {
                for r in &report.records {
                    let what = match &r.outcome {
                        RecordOutcome::Accepted if r.is_uncertain() => "uncertain",
                        RecordOutcome::Accepted => "accepted",
                        RecordOutcome::Rejected { .. } => "rejected",
                        RecordOutcome::NotDelivered(_) => "not-delivered",
                        _ => "other",
                    };
                    put(r.index, what);
                }
            }
            _ => {}
        }
    }

    /// How many updates had this outcome.
    pub fn count(&self, what: &str) -> usize {
        self.outcomes.values().filter(|v| **v == what).count()
    }
}

/// Compares the emulator's profiles with the model built from the accepted updates, in
/// input order, leaving out profiles touched by an uncertain or undelivered update (whose
/// true state is unknowable). Returns how many profiles were compared.
pub fn compare(
    updates: &[Update],
    ledger: &Ledger,
    emulator: &BTreeMap<String, Map<String, Json>>,
) -> Result<usize, String> {
    let mut model = BTreeMap::new();
    let mut unknowable: HashSet<String> = HashSet::new();
    for (i, u) in updates.iter().enumerate() {
        let id = match u.profile() {
            Some(ProfileId::User { distinct_id }) => distinct_id,
            _ => continue,
        };
        match ledger.outcomes.get(&(i as u64)).copied() {
            Some("accepted") => apply(&mut model, u),
            Some("uncertain") | Some("not-delivered") => {
                unknowable.insert(id);
            }
            Some(_) => {}
            None => return Err(format!("update {i} is not accounted for")),
        }
    }
    let mut compared = 0;
    let mut ids: HashSet<&String> = model.keys().collect();
    ids.extend(emulator.keys());
    for id in ids {
        if unknowable.contains(id) {
            continue;
        }
        let mut got = emulator.get(id).cloned();
        if let Some(g) = got.as_mut() {
            for k in engage_emulator::EMULATOR_PROPERTIES {
                g.remove(k);
            }
        }
        // A batch resent after an ambiguous failure (a 500 after it was applied) applies
        // its idempotent updates a second time, as a sequence: `$remove` then `$union` of
        // the same item leaves the same items but moves that one to the end. So lists built
        // by `$union`/`$remove` are compared by content; `$append` lists (order matters,
        // and resends are uncertain) stay exact.
        let as_set = |p: &mut Map<String, Json>| {
            if let Some(Json::Array(items)) = p.get_mut(UNION_LIST) {
                items.sort_by_key(|v| v.to_string());
            }
        };
        if let Some(g) = got.as_mut() {
            as_set(g);
        }
        let mut want = model.get(id).cloned();
        if let Some(w) = want.as_mut() {
            as_set(w);
        }
        let want = want.as_ref();
        if got.as_ref() != want {
            // The profile's history, to tell a scheduling fault from a model one.
            let history: Vec<String> = updates
                .iter()
                .enumerate()
                .filter(|(_, u)| matches!(u.profile(), Some(ProfileId::User { distinct_id }) if distinct_id == *id))
                .map(|(i, u)| {
                    format!(
                        "#{i} {:?} -> {}",
                        u.operation(),
                        ledger.outcomes.get(&(i as u64)).copied().unwrap_or("?")
                    )
                })
                .collect();
            return Err(format!(
                "profile {id}: emulator {got:?}, expected {want:?}; its updates:\n{}",
                history.join("\n")
            ));
        }
        compared += 1;
    }
    Ok(compared)
}
