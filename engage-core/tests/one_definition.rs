//! One definition of a valid record: the same update given typed (built with the model)
//! and raw (as a JSON object) gets the same verdict, the same error (problem and property)
//! and the same warnings. Generated over every operation, ids empty or not, names and
//! strings either side of Mixpanel's limits, nesting either side of the depth limit, and
//! `$union`/`$unset` lists empty, fine or holding what they must not.

use engage_core::batch::Batcher;
use engage_core::model::{Modifiers, Number, Operation, ProfileId};
use engage_core::validate::{ValidationError, Warning};
use engage_core::{BatchConfig, Endpoint, Properties, Token, Update, Value};
use proptest::prelude::*;
use serde_json::{Value as Json, json};

fn token() -> Token {
    Token::new("tok").unwrap()
}

/// Names short or past 255 characters.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z]{1,6}",
        1 => "[a-z]{1,3}".prop_map(|s| format!("{s}{}", "é".repeat(255))),
    ]
}

/// Strings short, or past 255 bytes.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[ -~]{0,12}",
        1 => Just("x".repeat(256)),
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::Float),
        text().prop_map(Value::String),
    ]
}

/// A value nested `depth` levels deep around a scalar.
fn nested(depth: usize, inner: Value, as_list: bool) -> Value {
    (0..depth).fold(inner, |v, _| {
        if as_list {
            Value::List(vec![v])
        } else {
            Value::Object(vec![("k".into(), v)])
        }
    })
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => scalar(),
        2 => prop::collection::vec(scalar(), 0..3).prop_map(Value::List),
        1 => (prop_oneof![Just(31usize), Just(32), Just(33)], scalar(), any::<bool>())
            .prop_map(|(d, v, l)| nested(d, v, l)),
    ]
}

/// Properties with distinct names, sorted as a JSON object (serde_json's map) holds them,
/// so both forms are visited in the same order.
fn properties() -> impl Strategy<Value = Vec<(String, Value)>> {
    prop::collection::btree_map(name(), value(), 0..4).prop_map(|m| m.into_iter().collect())
}

fn union_list() -> impl Strategy<Value = Vec<Value>> {
    prop_oneof![
        4 => prop::collection::vec(
            prop_oneof![text().prop_map(Value::String), any::<i64>().prop_map(Value::Int)],
            1..3,
        ),
        1 => Just(Vec::new()),
        1 => Just(vec![Value::Bool(true)]),
        1 => Just(vec![Value::List(vec![])]),
    ]
}

fn operation(groups: bool) -> impl Strategy<Value = Operation> {
    let common = prop_oneof![
        properties().prop_map(|p| Operation::Set(Properties::from(p))),
        properties().prop_map(|p| Operation::SetOnce(Properties::from(p))),
        properties().prop_map(|p| Operation::Remove(Properties::from(p))),
        prop::collection::btree_map(name(), union_list(), 0..3)
            .prop_map(|m| Operation::Union(m.into_iter().collect())),
        prop::collection::btree_set(name(), 0..3)
            .prop_map(|s| Operation::Unset(s.into_iter().collect())),
        Just(Operation::Delete),
    ];
    let users_only = prop_oneof![
        prop::collection::btree_map(name(), any::<i64>(), 0..3).prop_map(|m| Operation::Add(
            m.into_iter().map(|(k, v)| (k, Number::Int(v))).collect()
        )),
        properties().prop_map(|p| Operation::Append(Properties::from(p))),
    ];
    if groups {
        common.boxed()
    } else {
        prop_oneof![3 => common, 1 => users_only].boxed()
    }
}

fn id() -> impl Strategy<Value = String> {
    prop_oneof![5 => "[a-z0-9]{1,8}", 1 => Just(String::new())]
}

fn profile() -> impl Strategy<Value = ProfileId> {
    prop_oneof![
        id().prop_map(|distinct_id| ProfileId::User { distinct_id }),
        (id(), id()).prop_map(|(key, id)| ProfileId::Group { key, id }),
    ]
}

fn json_of(v: &Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Bool(b) => json!(b),
        Value::Int(i) => json!(i),
        Value::UInt(u) => json!(u),
        Value::Float(f) => json!(f),
        Value::String(s) => json!(s),
        Value::List(items) => Json::Array(items.iter().map(json_of).collect()),
        Value::Object(entries) => Json::Object(
            entries
                .iter()
                .map(|(k, v)| (k.clone(), json_of(v)))
                .collect(),
        ),
        other => panic!("not generated: {other:?}"),
    }
}

fn props_json(props: &Properties) -> Json {
    Json::Object(
        props
            .iter()
            .map(|(k, v)| (k.to_owned(), json_of(v)))
            .collect(),
    )
}

/// The raw form of a typed update.
fn raw_of(profile: &ProfileId, operation: &Operation, modifiers: &Modifiers) -> Json {
    let mut o = serde_json::Map::new();
    match profile {
        ProfileId::User { distinct_id } => {
            o.insert("$distinct_id".into(), json!(distinct_id));
        }
        ProfileId::Group { key, id } => {
            o.insert("$group_key".into(), json!(key));
            o.insert("$group_id".into(), json!(id));
        }
    }
    let payload = match operation {
        Operation::Set(p) | Operation::SetOnce(p) | Operation::Append(p) | Operation::Remove(p) => {
            props_json(p)
        }
        Operation::Add(entries) => Json::Object(
            entries
                .iter()
                .map(|(k, n)| {
                    let Number::Int(i) = n else { panic!() };
                    (k.clone(), json!(i))
                })
                .collect(),
        ),
        Operation::Union(entries) => Json::Object(
            entries
                .iter()
                .map(|(k, l)| (k.clone(), Json::Array(l.iter().map(json_of).collect())))
                .collect(),
        ),
        Operation::Unset(names) => json!(names),
        Operation::Delete => json!(""),
        other => panic!("{other:?}"),
    };
    o.insert(operation.key().into(), payload);
    if let Some(ms) = modifiers.time_ms {
        o.insert("$time".into(), json!(ms));
    }
    if modifiers.ignore_time {
        o.insert("$ignore_time".into(), json!(true));
    }
    Json::Object(o)
}

/// What the batcher says of one update: its error, or its warnings.
fn verdict(update: &Update, endpoint: Endpoint) -> Result<Vec<Warning>, ValidationError> {
    let mut batcher = Batcher::new(BatchConfig::new(token(), endpoint));
    batcher.push(update)?;
    Ok(batcher
        .finish()
        .map(|b| b.warnings().to_vec())
        .unwrap_or_default())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn typed_and_raw_forms_get_the_same_verdict(
        (profile, operation) in profile().prop_flat_map(|p| {
            let groups = matches!(p, ProfileId::Group { .. });
            (Just(p), operation(groups))
        }),
        time in proptest::option::of(0i64..2_000_000_000_000),
        ignore_time in any::<bool>(),
    ) {
        let endpoint = profile.endpoint();
        let mut typed = Update::new(profile.clone(), operation.clone());
        if let Some(ms) = time {
            typed = typed.with_time_ms(ms);
        }
        if ignore_time {
            typed = typed.ignore_time();
        }
        let modifiers = typed.modifiers().unwrap().clone();
        let raw = Update::raw(raw_of(&profile, &operation, &modifiers));
        let (t, r) = (verdict(&typed, endpoint), verdict(&raw, endpoint));
        match (&t, &r) {
            (Ok(tw), Ok(rw)) => {
                let key = |w: &Warning| (w.property.clone(), format!("{:?}", w.kind));
                prop_assert_eq!(
                    tw.iter().map(key).collect::<Vec<_>>(),
                    rw.iter().map(key).collect::<Vec<_>>()
                );
            }
            (Err(te), Err(re)) => {
                prop_assert_eq!(&te.problem, &re.problem);
                prop_assert_eq!(&te.property, &re.property);
            }
            _ => prop_assert!(false, "typed {:?} but raw {:?}", t, r),
        }
    }
}

/// Names from a small alphabet, so that they repeat.
fn short_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_owned()),
        Just("b".to_owned()),
        Just("c".to_owned())
    ]
}

/// Values that may hold objects repeating a key, at any depth.
fn repeating_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![Just(Value::Int(1)), Just(Value::String("x".into()))];
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::List),
            prop::collection::vec((short_name(), inner), 0..3).prop_map(Value::Object),
        ]
    })
}

fn repeating_operation() -> impl Strategy<Value = Operation> {
    let props = || prop::collection::vec((short_name(), repeating_value()), 0..5);
    prop_oneof![
        props().prop_map(|p| Operation::Set(Properties::from(p))),
        props().prop_map(|p| Operation::Append(Properties::from(p))),
        prop::collection::vec((short_name(), any::<i32>()), 0..5).prop_map(|p| Operation::Add(
            p.into_iter()
                .map(|(k, v)| (k, Number::Int(v.into())))
                .collect()
        )),
        prop::collection::vec(short_name(), 0..4).prop_map(|names| Operation::Union(
            names
                .into_iter()
                .map(|n| (n, vec![Value::Int(1)]))
                .collect()
        )),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// A typed update naming a key twice, and the same record read back from its JSON
    /// text, get the same repeated-key warnings (the raw form keeps only the last value).
    #[test]
    fn repeated_keys_are_reported_alike_typed_and_raw(operation in repeating_operation()) {
        let typed = Update::new(ProfileId::User { distinct_id: "u1".into() }, operation);
        let mut batcher = Batcher::new(BatchConfig::new(token(), Endpoint::Engage));
        prop_assume!(batcher.push(&typed).is_ok());
        let batch = batcher.finish().expect("one record");
        let text = batch.record(0).unwrap().json().to_vec();
        let parsed = engage_core::validate::parse_record(&text).unwrap();
        let raw = Update::raw_parsed(parsed);
        let key = |w: &Warning| (w.property.clone(), format!("{:?}", w.kind));
        let tw: Vec<_> = batch.warnings().iter().map(key).collect();
        let rw: Vec<_> = verdict(&raw, Endpoint::Engage).unwrap().iter().map(key).collect();
        prop_assert_eq!(&tw, &rw);
    }
}

#[test]
fn a_repeated_operation_and_a_repeated_property_are_warnings_not_silent() {
    let text = br#"{"$distinct_id":"u1","$set":{"a":1},"$set":{"b":2,"b":3,"c":{"d":1,"d":2}}}"#;
    let parsed = engage_core::validate::parse_record(text).unwrap();
    assert_eq!(parsed.repeated, ["b", "c", "$set"]);
    let warnings = verdict(&Update::raw_parsed(parsed), Endpoint::Engage).unwrap();
    let names: Vec<_> = warnings.iter().map(|w| w.property.as_str()).collect();
    assert_eq!(names, ["b", "c", "$set"]);
    assert!(
        warnings
            .iter()
            .all(|w| w.kind == engage_core::validate::WarningKind::RepeatedKey)
    );
    let typed = Update::user("u1").add([("n", 1), ("n", 2)]);
    let warnings = verdict(&typed, Endpoint::Engage).unwrap();
    assert_eq!(warnings.len(), 1);
    assert_eq!(warnings[0].property, "n");
}
