//! `set_from` writes a `Serialize` value straight to JSON; it must give the same record,
//! the same warnings and the same errors as `set(Properties::from_serialize(..))`.

use std::collections::BTreeMap;

use engage_core::batch::Batcher;
use engage_core::model::{Number, Operation, ProfileId, ProfileRef, SerializeError};
use engage_core::validate::{Problem, ValidationError, Warning};
use engage_core::{BatchConfig, Properties, Token, Update};
use proptest::prelude::*;
use serde::Serialize;

fn token() -> Token {
    Token::new("tok").unwrap()
}

/// What pushing an update gives: its record's bytes and warnings, or the error.
fn outcome(update: &Update) -> Result<(String, Vec<Warning>), ValidationError> {
    let mut batcher = Batcher::new(BatchConfig::new(token(), update.endpoint()));
    batcher.push(update)?;
    let batch = batcher.finish().expect("one record");
    let json = String::from_utf8(batch.record(0).unwrap().json().to_vec()).unwrap();
    Ok((json, batch.warnings().to_vec()))
}

/// What [`Batcher::push_set_from`] (or `push_set_once_from`) gives, as [`outcome`]
/// does; the record is the batcher's second, after one pushed as an `Update`.
fn pushed<T: Serialize>(
    profile: ProfileRef<'_>,
    once: bool,
    value: &T,
) -> Result<(String, Vec<Warning>), ValidationError> {
    let mut batcher = Batcher::new(BatchConfig::new(token(), profile.endpoint()));
    let first = match profile {
        ProfileRef::User(id) => Update::user(id).set([("first", 1)]),
        ProfileRef::Group { key, id } => Update::group(key, id).set([("first", 1)]),
    };
    batcher.push(&first).unwrap();
    let result = if once {
        batcher.push_set_once_from(profile, value)
    } else {
        batcher.push_set_from(profile, value)
    };
    let mut pending_after = batcher.pending();
    if let Err(mut e) = result {
        assert_eq!(e.index, 1, "the update's index");
        e.index = 0; // as `outcome` numbers it
        assert_eq!(e.profile, Some(profile.to_id()));
        // Nothing of it stays in the batch.
        assert_eq!(batcher.pending(), 1);
        let batch = batcher.finish().unwrap();
        assert_eq!(batch.body().as_ref(), outcome_body(&first).as_bytes());
        return Err(e);
    }
    assert_eq!(pending_after, 2);
    pending_after -= 1;
    let batch = batcher.finish().expect("two records");
    let record = batch.record(pending_after).unwrap();
    assert_eq!((record.index(), record.profile()), (1, profile.to_id()));
    serde_json::from_slice::<serde_json::Value>(batch.body()).expect("the body is JSON");
    let json = String::from_utf8(record.json().to_vec()).unwrap();
    let mut warnings = batch.warnings().to_vec();
    for w in &mut warnings {
        assert_eq!(w.index, 1);
        w.index = 0;
    }
    Ok((json, warnings))
}

/// The body of a batch of `update` alone.
fn outcome_body(update: &Update) -> String {
    let mut batcher = Batcher::new(BatchConfig::new(token(), update.endpoint()));
    batcher.push(update).unwrap();
    String::from_utf8(batcher.finish().unwrap().body().to_vec()).unwrap()
}

/// Both paths, and the batcher's direct one, for `$set` and `$set_once`, users and groups.
fn assert_same<T: Serialize>(value: &T) -> Result<(String, Vec<Warning>), ValidationError> {
    let tree = Properties::from_serialize(value);
    let direct = Update::user("u1").set_from(value);
    let (tree, direct) = match (tree, direct) {
        (Ok(props), Ok(direct)) => (Update::user("u1").set(props), direct),
        (Err(a), Err(b)) => {
            assert_eq!(a, b);
            for (profile, once) in [
                (ProfileRef::User("u1"), false),
                (
                    ProfileRef::Group {
                        key: "company",
                        id: "acme",
                    },
                    true,
                ),
            ] {
                let err = pushed(profile, once, value).unwrap_err();
                assert_eq!(err.problem, Problem::Unserializable(a.clone()));
                assert_eq!(err.property, None);
            }
            return Ok((String::new(), vec![]));
        }
        (a, b) => panic!("the paths disagree: {a:?} / {b:?}"),
    };
    let expected = outcome(&tree);
    assert_eq!(outcome(&direct), expected);
    assert_eq!(
        pushed(ProfileRef::User("u1"), false, value),
        expected,
        "push_set_from"
    );
    // Debug, not ==: a NaN kept in a rejected operation is never equal to itself.
    assert_eq!(
        format!("{direct:?}"),
        format!("{tree:?}"),
        "the same update"
    );
    let once = Update::group("company", "acme")
        .set_once_from(value)
        .unwrap();
    let once_tree =
        Update::group("company", "acme").set_once(Properties::from_serialize(value).unwrap());
    assert_eq!(outcome(&once), outcome(&once_tree));
    let group = ProfileRef::Group {
        key: "company",
        id: "acme",
    };
    assert_eq!(
        pushed(group, true, value),
        outcome(&once_tree),
        "push_set_once_from"
    );
    expected
}

#[derive(Serialize)]
enum Shape {
    Unit,
    Newtype(u8),
    Tuple(i8, f32),
    Struct { side: f64 },
}

#[derive(Serialize)]
struct Wrapper(BTreeMap<String, i32>);

#[derive(Serialize)]
struct Everything {
    name: &'static str,
    letter: char,
    small: u8,
    big: u64,
    huge: i128,
    huger: u128,
    neg: i64,
    ratio: f32,
    flag: bool,
    nothing: Option<u8>,
    something: Option<&'static str>,
    unit: (),
    tuple: (u8, &'static str),
    bytes: &'static [u8],
    shapes: Vec<Shape>,
    by_number: BTreeMap<u32, &'static str>,
    by_flag: BTreeMap<bool, u8>,
    wrapper: Wrapper,
    note: &'static str,
}

#[test]
fn every_serde_shape_gives_the_same_record() {
    let mut by_number = BTreeMap::new();
    by_number.insert(7, "seven");
    let mut by_flag = BTreeMap::new();
    by_flag.insert(true, 1);
    let value = Everything {
        name: "Zoë \"the\" \\ coder\n\t😀",
        letter: '"',
        small: 255,
        big: u64::MAX,
        huge: i128::MAX,
        huger: 12,
        neg: i64::MIN,
        ratio: 0.1,
        flag: false,
        nothing: None,
        something: Some("x"),
        unit: (),
        tuple: (1, "two"),
        bytes: b"\x00\xff",
        shapes: vec![
            Shape::Unit,
            Shape::Newtype(3),
            Shape::Tuple(-1, 2.5),
            Shape::Struct { side: 1e300 },
        ],
        by_number,
        by_flag,
        wrapper: Wrapper([("a".to_owned(), 1)].into_iter().collect()),
        note: "",
    };
    let (json, warnings) = assert_same(&value).unwrap();
    assert!(warnings.is_empty());
    assert!(
        json.contains(
            r#""shapes":["Unit",{"Newtype":3},{"Tuple":[-1,2.5]},{"Struct":{"side":1e+300}}]"#
        ),
        "{json}"
    );
    assert!(json.contains(r#""huge":1.7014118346046923e+38"#), "{json}");
    assert!(json.contains(r#""by_number":{"7":"seven"}"#), "{json}");
    // A map works as the top level too.
    assert_same(&[("a", 1), ("b", 2)].into_iter().collect::<BTreeMap<_, _>>()).unwrap();
}

#[derive(Serialize)]
struct Scored {
    name: String,
    score: f64,
}

#[test]
fn what_validation_reports_is_reported_the_same_way() {
    // NaN: an error naming the property.
    let err = assert_same(&Scored {
        name: "a".into(),
        score: f64::NAN,
    })
    .unwrap_err();
    assert_eq!(err.property.as_deref(), Some("score"));
    assert_eq!(err.problem, Problem::NonFiniteNumber);
    // Long strings and names: warnings naming the property.
    let (_, warnings) = assert_same(&Scored {
        name: "x".repeat(300),
        score: 1.0,
    })
    .unwrap();
    assert_eq!(warnings.len(), 1);
    assert_eq!(warnings[0].property, "name");
    let long_name: BTreeMap<String, u8> = [("n".repeat(256), 1)].into_iter().collect();
    let (_, warnings) = assert_same(&long_name).unwrap();
    assert_eq!(warnings.len(), 1);
    // A long name of 255 characters but more bytes is not truncated: no warning.
    let wide: BTreeMap<String, u8> = [("é".repeat(255), 1)].into_iter().collect();
    assert!(assert_same(&wide).unwrap().1.is_empty());
    // Too deep.
    let mut deep = serde_json::json!(1);
    for _ in 0..40 {
        deep = serde_json::json!([deep]);
    }
    let err = assert_same(&serde_json::json!({ "deep": deep })).unwrap_err();
    assert_eq!(err.problem, Problem::TooDeep);
    // Not a map, and keys that cannot be names: the same SerializeError.
    assert_same(&[1, 2]).unwrap();
    assert!(Update::user("u").set_from(&[1, 2]).is_err());
    let float_keys: BTreeMap<Vec<u8>, u8> = [(vec![1], 1)].into_iter().collect();
    assert!(Update::user("u").set_from(&float_keys).is_err());
    assert_same(&float_keys).unwrap();
    // A failing Serialize implementation.
    struct Fails;
    impl Serialize for Fails {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("no"))
        }
    }
    assert_eq!(
        Update::user("u").set_from(&Fails).unwrap_err(),
        SerializeError::Custom("no".into())
    );
    // Ids are checked when built from a struct too.
    let err = outcome(
        &Update::user("")
            .set_from(&Scored {
                name: "a".into(),
                score: 1.0,
            })
            .unwrap(),
    )
    .unwrap_err();
    assert_eq!(err.problem, Problem::Empty("$distinct_id"));
}

/// `levels` lists nested in one another around a 1.
fn nested_lists(levels: usize) -> serde_json::Value {
    let mut v = serde_json::json!(1);
    for _ in 0..levels {
        v = serde_json::json!([v]);
    }
    v
}

#[test]
fn the_depth_limit_is_the_same_on_both_paths() {
    // A property's value is at depth 0: 32 nested lists are accepted, 33 are not.
    for (levels, ok) in [(31, true), (32, true), (33, false)] {
        let result = assert_same(&serde_json::json!({ "p": nested_lists(levels) }));
        assert_eq!(result.is_ok(), ok, "{levels} levels");
        if let Err(e) = result {
            assert_eq!(
                (e.property.as_deref(), e.problem),
                (Some("p"), Problem::TooDeep)
            );
        }
    }
    // Variants add a level for their name's object.
    #[derive(Serialize)]
    enum Wrap {
        Tuple(serde_json::Value, u8),
        Struct { inner: serde_json::Value },
        Newtype(serde_json::Value),
    }
    for levels in [29, 30, 31, 32] {
        for value in [
            Wrap::Tuple(nested_lists(levels), 1),
            Wrap::Struct {
                inner: nested_lists(levels),
            },
            Wrap::Newtype(nested_lists(levels)),
        ] {
            let _ = assert_same(&[("p", value)].into_iter().collect::<BTreeMap<_, _>>());
        }
    }
    // Far deeper: a SerializeError rather than a stack overflow.
    let object = serde_json::json!({ "p": nested_lists(1000) });
    assert_eq!(
        Properties::from_serialize(&object).unwrap_err(),
        SerializeError::TooDeep
    );
    assert_eq!(
        Update::user("u").set_from(&object).unwrap_err(),
        SerializeError::TooDeep
    );
}

/// Bytes through `serialize_bytes`, as `serde_bytes` does.
struct RawBytes(&'static [u8]);

impl Serialize for RawBytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// A number the way serde_json writes one under its `arbitrary_precision` feature.
struct PreciseNumber(&'static str);

impl Serialize for PreciseNumber {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("$serde_json::private::Number", 1)?;
        st.serialize_field("$serde_json::private::Number", self.0)?;
        st.end()
    }
}

#[derive(Serialize)]
struct Edges {
    above_i64: i128,
    below_i64: i128,
    above_u64: u128,
    bytes: RawBytes,
    precise: PreciseNumber,
    precise_int: PreciseNumber,
}

#[test]
fn edge_values_give_the_same_record() {
    let (json, _) = assert_same(&Edges {
        above_i64: i128::from(i64::MAX) + 1,
        below_i64: i128::from(i64::MIN) - 1,
        above_u64: u128::from(u64::MAX) + 1,
        bytes: RawBytes(b"\x00\x7f"),
        precise: PreciseNumber("2.5"),
        precise_int: PreciseNumber("-7"),
    })
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let set = &v["$set"];
    assert_eq!(set["above_i64"], 9_223_372_036_854_775_808u64);
    assert_eq!(set["below_i64"], -9.223372036854776e18);
    assert_eq!(set["above_u64"], 1.8446744073709552e19);
    assert_eq!(set["bytes"], serde_json::json!([0, 127]));
    assert_eq!(set["precise"], 2.5);
    assert_eq!(set["precise_int"], -7);
    // A struct in an Option at the top level is still a struct.
    assert_same(&Some(Scored {
        name: "a".into(),
        score: 1.0,
    }))
    .unwrap();
}

#[test]
fn profile_problems_come_first_and_in_order() {
    let nan_add = || Operation::Add(vec![("n".into(), Number::Float(f64::NAN))]);
    let group = |key: &str, id: &str| ProfileId::Group {
        key: key.into(),
        id: id.into(),
    };
    for (profile, problem) in [
        (group("", ""), Problem::Empty("$group_key")),
        (group("k", ""), Problem::Empty("$group_id")),
        (group("k", "i"), Problem::NotForGroups("$add".into())),
    ] {
        let err = outcome(&Update::new(profile, nan_add())).unwrap_err();
        assert_eq!(err.problem, problem);
    }
    let user = ProfileId::User {
        distinct_id: "u".into(),
    };
    let err = outcome(&Update::new(user, nan_add())).unwrap_err();
    assert_eq!(err.problem, Problem::NonFiniteNumber);
}

#[test]
fn a_fixed_modifier_leaves_an_equal_update() {
    let base = || Update::user("u").set([("a", 1)]);
    let fixed = base().with_location(f64::NAN, 0.0).with_location(1.0, 2.0);
    assert_eq!(fixed, base().with_location(1.0, 2.0));
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let string = prop_oneof!["[a-zé\"\\\\\n\t\u{0}\u{1f}😀 ]{0,20}", "[a-z]{250,260}",];
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        string.prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(serde_json::Value::Array),
            prop::collection::btree_map("[a-z\"]{0,6}", inner, 0..5)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn any_json_object_gives_the_same_record(
        props in prop::collection::btree_map("[a-zA-Z_$\"\\\\é]{0,8}", json_value(), 0..8)
    ) {
        let value = serde_json::Value::Object(props.into_iter().collect());
        assert_same(&value).unwrap();
    }
}

#[test]
fn pushing_structs_straight_into_batches_gives_the_same_batches() {
    // Records of varied sizes, some invalid, some drawing warnings, under a body cap that
    // splits batches often: the batches (bodies, records, warnings) and errors must be
    // those of pushing the `Update`s `set_from` builds.
    let config = BatchConfig::new(token(), engage_core::Endpoint::Engage)
        .max_body_bytes(2_000)
        .max_records(7);
    let people: Vec<(String, Scored)> = (0..400)
        .map(|i| {
            let name = match i % 13 {
                0 => "x".repeat(300),   // a warning
                1 => "y".repeat(1_990), // too large for the cap
                _ => "n".repeat(i % 97),
            };
            let score = if i % 17 == 0 {
                f64::NAN
            } else {
                i as f64 / 3.0
            };
            let id = if i % 29 == 0 {
                String::new()
            } else {
                format!("u{i}")
            };
            (id, Scored { name, score })
        })
        .collect();
    let mut by_update = Batcher::new(config.clone());
    let mut direct = Batcher::new(config);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for (i, (id, scored)) in people.iter().enumerate() {
        let once = i % 5 == 0;
        let update = if once {
            Update::user(id.as_str()).set_once_from(scored)
        } else {
            Update::user(id.as_str()).set_from(scored)
        };
        a.push(by_update.push(&update.unwrap()));
        b.push(if once {
            direct.push_set_once_from(ProfileRef::User(id), scored)
        } else {
            direct.push_set_from(ProfileRef::User(id), scored)
        });
    }
    a.push(Ok(by_update.finish()));
    b.push(Ok(direct.finish()));
    assert!(
        a.iter().filter(|r| r.is_err()).count() > 40,
        "errors of each kind"
    );
    let batches = a.iter().filter(|r| matches!(r, Ok(Some(_)))).count();
    assert!(batches > 30, "{batches} batches");
    assert_eq!(a, b);
    // A user's record given to a `/groups` batcher is refused as an `Update` would be.
    let mut groups = Batcher::new(BatchConfig::new(token(), engage_core::Endpoint::Groups));
    let err = groups
        .push_set_from(
            ProfileRef::User("u1"),
            &[("a", 1)].into_iter().collect::<BTreeMap<_, _>>(),
        )
        .unwrap_err();
    assert!(matches!(err.problem, Problem::WrongEndpoint(_)), "{err}");
    assert_eq!(groups.pending(), 0);
}

#[derive(Serialize)]
struct OddNames {
    #[serde(rename = "a_name_of_exactly_28_bytes__")]
    n28: u8,
    #[serde(rename = "a_name_of_exactly_29_bytes___")]
    n29: u8,
    #[serde(rename = "a_name_that_is_thirty-one_byte")]
    n31: u8,
    #[serde(rename = "quote\"and\\backslash")]
    escaped: u8,
    #[serde(rename = "")]
    empty: u8,
    #[serde(rename = "ünïcödé")]
    wide: u8,
    #[serde(
        rename = "a_name_longer_than_Mixpanel_keeps_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    )]
    long: u8,
}

#[test]
fn struct_field_names_of_every_kind_give_the_same_record() {
    let value = OddNames {
        n28: 1,
        n29: 2,
        n31: 3,
        escaped: 4,
        empty: 5,
        wide: 6,
        long: 7,
    };
    let (json, warnings) = assert_same(&value).unwrap();
    assert!(json.contains(r#""quote\"and\\backslash":4"#), "{json}");
    assert!(json.contains(r#""":5,"ünïcödé":6"#), "{json}");
    // The long name draws its warning on every path.
    assert_eq!(warnings.len(), 1);
}

/// A hand-written `Serialize` that breaks the map protocol.
enum BrokenMap {
    ValueWithoutKey,
    TwoKeys,
    KeyLast,
}

impl Serialize for BrokenMap {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("ok", &1)?;
        match self {
            BrokenMap::ValueWithoutKey => map.serialize_value(&2)?,
            BrokenMap::TwoKeys => {
                map.serialize_key("a")?;
                map.serialize_key("b")?;
                map.serialize_value(&3)?;
            }
            BrokenMap::KeyLast => map.serialize_key("dangling")?,
        }
        map.end()
    }
}

#[test]
fn a_serialize_that_breaks_the_map_protocol_never_breaks_the_body() {
    // Whatever the tree path makes of it (an error, or a record), the direct paths agree
    // with it, and `pushed` checks that the whole body is still JSON.
    for broken in [
        BrokenMap::ValueWithoutKey,
        BrokenMap::TwoKeys,
        BrokenMap::KeyLast,
    ] {
        let _ = assert_same(&[("p", &broken)].into_iter().collect::<BTreeMap<_, _>>());
        let _ = assert_same(&broken);
    }
}

#[test]
fn pushing_what_cannot_become_properties_names_the_update() {
    struct Fails;
    impl Serialize for Fails {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("no"))
        }
    }
    let mut batcher = Batcher::new(BatchConfig::new(token(), engage_core::Endpoint::Engage));
    let err = batcher
        .push_set_from(ProfileRef::User("u1"), &Fails)
        .unwrap_err();
    assert_eq!(
        err.problem,
        Problem::Unserializable(SerializeError::Custom("no".into()))
    );
    // As `set_from`, which fails before the ids are looked at: an empty id and a value
    // that cannot become properties is the latter.
    let err = batcher
        .push_set_from(ProfileRef::User(""), &[1, 2])
        .unwrap_err();
    assert_eq!(err.index, 1);
    assert!(matches!(
        err.problem,
        Problem::Unserializable(SerializeError::NotAMap(_))
    ));
    let deep = serde_json::json!({ "p": nested_lists(1000) });
    let err = batcher
        .push_set_from(ProfileRef::User("u1"), &deep)
        .unwrap_err();
    assert_eq!(
        err.problem,
        Problem::Unserializable(SerializeError::TooDeep)
    );
    // The batcher goes on.
    batcher
        .push_set_from(
            ProfileRef::User("u1"),
            &Scored {
                name: "a".into(),
                score: 1.0,
            },
        )
        .unwrap();
    let batch = batcher.finish().unwrap();
    assert_eq!((batch.len(), batch.record(0).unwrap().index()), (1, 3));
}
