//! `set_from` writes a `Serialize` value straight to JSON; it must give the same record,
//! the same warnings and the same errors as `set(Properties::from_serialize(..))`.

use std::collections::BTreeMap;

use engage_core::*;
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

/// Both paths, for `$set` and `$set_once`, users and groups.
fn assert_same<T: Serialize>(value: &T) -> Result<(String, Vec<Warning>), ValidationError> {
    let tree = Properties::from_serialize(value);
    let direct = Update::user("u1").set_from(value);
    let (tree, direct) = match (tree, direct) {
        (Ok(props), Ok(direct)) => (Update::user("u1").set(props), direct),
        (Err(a), Err(b)) => {
            assert_eq!(a, b);
            return Ok((String::new(), vec![]));
        }
        (a, b) => panic!("the paths disagree: {a:?} / {b:?}"),
    };
    let expected = outcome(&tree);
    assert_eq!(outcome(&direct), expected);
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
    // Group updates cannot $add, whichever way they are built; ids are checked too.
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
