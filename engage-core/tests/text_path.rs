//! One definition of a valid record, for JSON text: [`Update::from_json`] (the one-pass
//! reader, with the full parser behind it) and the full path alone
//! ([`parse_record`] then [`Update::raw_parsed`]) get the same verdict, the same error
//! (problem and property), the same warnings, and bodies that hold the same JSON, for
//! both endpoints, with and without a token of their own, over generated records that are
//! valid or not, written compactly or not, with escapes, exponents, repeated keys, long
//! strings, deep nesting and corrupted bytes.

use engage_core::batch::Batcher;
use engage_core::validate::{Problem, ValidationError, Warning, parse_record};
use engage_core::{BatchConfig, Endpoint, Token, Update};
use proptest::prelude::*;
use serde_json::Value as Json;

/// A generated JSON value: objects are lists of members, so that keys may repeat.
#[derive(Debug, Clone)]
enum G {
    Scalar(Json),
    List(Vec<G>),
    Object(Vec<(String, G)>),
}

const TOKEN: &str = "tok";

/// What the batcher makes of one update: its error, or its warnings, body and record.
#[derive(Debug)]
struct Outcome {
    warnings: Vec<(String, String)>,
    body: Json,
    profile: String,
    idempotent: bool,
    /// The body of the batch cut down to its one record (copied by the record's spans).
    subset: Json,
}

fn outcome(
    update: &Update,
    endpoint: Endpoint,
    override_token: bool,
) -> Result<Outcome, ValidationError> {
    outcome_of(endpoint, override_token, |batcher| batcher.push(update))
}

/// What the batcher makes of one update pushed by `push`.
fn outcome_of(
    endpoint: Endpoint,
    override_token: bool,
    push: impl FnOnce(&mut Batcher) -> Result<Option<engage_core::batch::Batch>, ValidationError>,
) -> Result<Outcome, ValidationError> {
    let config =
        BatchConfig::new(Token::new(TOKEN).unwrap(), endpoint).override_token(override_token);
    let mut batcher = Batcher::new(config);
    push(&mut batcher)?;
    let batch = batcher.finish().expect("one record");
    let record = batch.record(0).expect("one record");
    Ok(Outcome {
        warnings: batch
            .warnings()
            .iter()
            .map(|w: &Warning| (w.property.clone(), format!("{:?}", w.kind)))
            .collect(),
        body: serde_json::from_slice(batch.body()).expect("the body is JSON"),
        profile: format!("{:?} {:?}", record.profile(), record.profile_key()),
        idempotent: record.is_idempotent(),
        subset: serde_json::from_slice(batch.subset(&[0]).body()).expect("the body is JSON"),
    })
}

/// Both paths over `text`, for every configuration; panics (with the text) where they part.
fn same_verdicts(text: &str) -> Result<(), TestCaseError> {
    let fast = Update::from_json(text);
    let full = parse_record(text.as_bytes()).map(Update::raw_parsed);
    prop_assert_eq!(
        fast.is_ok(),
        full.is_ok(),
        "parse verdicts differ on {}",
        text
    );
    let (Ok(fast), Ok(full)) = (fast, full) else {
        // Text pushed as it is: not JSON, an error naming the update.
        for endpoint in [Endpoint::Engage, Endpoint::Groups] {
            let pushed = outcome_of(endpoint, false, |b| b.push_json(text.as_bytes()));
            prop_assert!(
                matches!(&pushed, Err(e) if matches!(e.problem, Problem::MalformedJson(_)) && e.index == 0),
                "{:?} on {}",
                pushed,
                text
            );
        }
        return Ok(());
    };
    prop_assert_eq!(fast.endpoint(), full.endpoint());
    prop_assert_eq!(fast.is_idempotent(), full.is_idempotent());
    if let Some(parts) = fast.json_parts() {
        prop_assert_eq!(fast.profile(), full.profile());
        // Its parts are what the full parser finds.
        let value = parse_record(text.as_bytes()).unwrap().value;
        let payload: Json = serde_json::from_slice(parts.payload()).unwrap();
        prop_assert_eq!(&payload, &value[parts.operation().key()]);
        for m in engage_core::validate::rules::MODIFIERS {
            let found = parts
                .modifier(m)
                .map(|v| serde_json::from_slice::<Json>(v).unwrap());
            prop_assert_eq!(found.as_ref(), value.get(m));
        }
        prop_assert_eq!(parts.token(), value.get("$token").and_then(Json::as_str));
        prop_assert_eq!(
            parts.distinct_id(),
            value.get("$distinct_id").and_then(Json::as_str)
        );
        let group = value
            .get("$group_key")
            .and_then(Json::as_str)
            .zip(value.get("$group_id").and_then(Json::as_str));
        prop_assert_eq!(parts.group(), group);
        let whole: Json = serde_json::from_slice(parts.json()).unwrap();
        prop_assert_eq!(&whole, &value);
    }
    for endpoint in [Endpoint::Engage, Endpoint::Groups] {
        for override_token in [false, true] {
            let a = outcome(&fast, endpoint, override_token);
            let b = outcome(&full, endpoint, override_token);
            // The text pushed as it is, straight into the body: what its update makes.
            let pushed = outcome_of(endpoint, override_token, |b| b.push_json(text.as_bytes()));
            agree(&a, &pushed, true, text)?;
            agree(&a, &b, false, text)?;
        }
    }
    Ok(())
}

/// Two outcomes of one text hold the same warnings, body and profile, each record's spans
/// copy it whole, or they are the same error (all of it if `whole_error`, else its problem
/// and property).
fn agree(
    a: &Result<Outcome, ValidationError>,
    b: &Result<Outcome, ValidationError>,
    whole_error: bool,
    text: &str,
) -> Result<(), TestCaseError> {
    match (a, b) {
        (Ok(a), Ok(b)) => {
            prop_assert_eq!(&a.warnings, &b.warnings, "warnings differ on {}", text);
            prop_assert_eq!(&a.body, &b.body, "bodies differ on {}", text);
            prop_assert_eq!(&a.profile, &b.profile, "profiles differ on {}", text);
            prop_assert_eq!(a.idempotent, b.idempotent);
            prop_assert_eq!(&a.subset, &a.body, "spans are off on {}", text);
            prop_assert_eq!(&b.subset, &b.body, "spans are off on {}", text);
        }
        (Err(a), Err(b)) if whole_error => prop_assert_eq!(a, b, "errors differ on {}", text),
        (Err(a), Err(b)) => {
            prop_assert_eq!(&a.problem, &b.problem, "errors differ on {}", text);
            prop_assert_eq!(&a.property, &b.property, "errors differ on {}", text);
        }
        _ => prop_assert!(false, "{:?} against {:?} on {}", a, b, text),
    }
    Ok(())
}

/// Strings short or not, with characters to escape, non-ASCII, or past 255 bytes.
fn string() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => "[a-z0-9]{0,8}",
        4 => "[ -~]{0,10}",
        4 => "[\"\\\\/\t\n\u{1}é😀 a]{0,6}",
        1 => Just(String::new()),
        1 => Just("  ".to_owned()),
        1 => (250usize..260).prop_map(|n| "x".repeat(n)),
        1 => (125usize..130).prop_map(|n| "é".repeat(n)),
    ]
}

fn number() -> impl Strategy<Value = Json> {
    prop_oneof![
        any::<i64>().prop_map(Json::from),
        any::<u64>().prop_map(Json::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Json::from),
        Just(Json::from(0)),
    ]
}

fn scalar() -> impl Strategy<Value = Json> {
    prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        number(),
        string().prop_map(Json::String),
    ]
}

/// Keys from a small alphabet (so that they repeat), or any string.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop_oneof![Just("a"), Just("b"), Just("c")].prop_map(str::to_owned),
        1 => string(),
    ]
}

/// Values nested a little, or past the depth limit.
fn value() -> impl Strategy<Value = G> {
    let nested = scalar()
        .prop_map(G::Scalar)
        .prop_recursive(3, 16, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(G::List),
                prop::collection::vec((key(), inner), 0..3).prop_map(G::Object),
            ]
        });
    prop_oneof![
        8 => nested,
        1 => (14usize..40, scalar(), any::<bool>()).prop_map(|(depth, inner, list)| {
            (0..depth).fold(G::Scalar(inner), |v, _| {
                if list {
                    G::List(vec![v])
                } else {
                    G::Object(vec![("k".to_owned(), v)])
                }
            })
        }),
    ]
}

/// An operation's value: the right shape mostly, anything sometimes.
fn payload(op: &'static str) -> BoxedStrategy<G> {
    let object = |v: BoxedStrategy<G>| {
        prop::collection::vec((key(), v), 0..4)
            .prop_map(G::Object)
            .boxed()
    };
    let right = match op {
        "$add" => object(number().prop_map(G::Scalar).boxed()),
        "$union" => object(
            prop_oneof![
                4 => prop::collection::vec(prop_oneof![string().prop_map(Json::String), number()].prop_map(G::Scalar), 1..3)
                    .prop_map(G::List),
                1 => value(),
            ]
            .boxed(),
        ),
        "$unset" => prop::collection::vec(string().prop_map(|s| G::Scalar(Json::String(s))), 0..3)
            .prop_map(G::List)
            .boxed(),
        "$delete" => prop_oneof![Just(G::Scalar(Json::from(""))), value()].boxed(),
        _ => object(value().boxed()),
    };
    prop_oneof![6 => right, 1 => value()].boxed()
}

/// Every operation's key, from engage-core's table.
fn operations() -> Vec<&'static str> {
    engage_core::model::OpKind::ALL
        .iter()
        .map(|k| k.key())
        .collect()
}

/// A top-level member: ids, token, operations, modifiers, or something unknown.
fn member() -> impl Strategy<Value = (String, G)> {
    let id = prop_oneof![
        6 => "[a-z0-9-]{1,8}".prop_map(Json::String),
        1 => string().prop_map(Json::String),
        1 => scalar(),
    ]
    .prop_map(G::Scalar);
    prop_oneof![
        4 => (
            prop_oneof![Just("$distinct_id"), Just("$group_key"), Just("$group_id")],
            id
        )
            .prop_map(|(k, v)| (k.to_owned(), v)),
        1 => prop_oneof![
            4 => Just(Json::from(TOKEN)),
            1 => Just(Json::from("other")),
            1 => Just(Json::from(" \t")),
            1 => scalar(),
        ]
        .prop_map(|v| ("$token".to_owned(), G::Scalar(v))),
        4 => prop::sample::select(operations())
            .prop_flat_map(|op| (Just(op.to_owned()), payload(op))),
        1 => (
            prop::sample::select(&engage_core::validate::rules::MODIFIERS[..]),
            scalar()
        )
            .prop_map(|(k, v)| (k.to_owned(), G::Scalar(v))),
        1 => ("[a-z$]{1,6}", scalar().prop_map(G::Scalar)),
    ]
}

/// Records: mostly one id, one operation and a few more members, in any order.
fn record() -> impl Strategy<Value = Vec<(String, G)>> {
    let user = (
        "[a-z0-9]{1,6}",
        prop::sample::select(operations()).prop_flat_map(|op| (Just(op), payload(op))),
        prop::collection::vec(member(), 0..2),
        any::<bool>(),
    )
        .prop_map(|(id, (op, payload), more, group)| {
            let mut members = if group {
                vec![
                    ("$group_key".to_owned(), G::Scalar(Json::from("company"))),
                    ("$group_id".to_owned(), G::Scalar(Json::from(id))),
                ]
            } else {
                vec![("$distinct_id".to_owned(), G::Scalar(Json::from(id)))]
            };
            members.push((op.to_owned(), payload));
            members.extend(more);
            members
        });
    prop_oneof![
        4 => user.prop_shuffle(),
        1 => prop::collection::vec(member(), 0..5),
    ]
}

/// Writes JSON text with choices drawn from `seed`: whitespace, escapes where none is
/// needed, exponents.
struct Writer {
    seed: u64,
    out: String,
}

impl Writer {
    fn roll(&mut self, sides: u64) -> u64 {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        self.seed % sides
    }

    fn space(&mut self) {
        match self.roll(12) {
            0 => self.out.push(' '),
            1 => self.out.push_str(" \t"),
            2 => self.out.push_str("\n  "),
            _ => {}
        }
    }

    fn string(&mut self, s: &str) {
        // One string in twenty escapes characters that need no escape.
        let gratuitous = self.roll(20) == 0;
        self.out.push('"');
        for c in s.chars() {
            match c {
                '"' => self.out.push_str("\\\""),
                '\\' => self.out.push_str("\\\\"),
                c if (c as u32) < 0x20 => self.out.push_str(&format!("\\u{:04x}", c as u32)),
                '/' if gratuitous && self.roll(2) == 0 => self.out.push_str("\\/"),
                c if gratuitous && self.roll(3) == 0 => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        self.out.push_str(&format!("\\u{unit:04X}"));
                    }
                }
                c => self.out.push(c),
            }
        }
        self.out.push('"');
    }

    fn generated(&mut self, v: &G) {
        match v {
            G::Scalar(json) => self.value(json),
            G::List(items) => {
                self.out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    self.space();
                    self.generated(item);
                    self.space();
                }
                self.out.push(']');
            }
            G::Object(entries) => {
                self.out.push('{');
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    self.space();
                    self.string(k);
                    self.space();
                    self.out.push(':');
                    self.space();
                    self.generated(v);
                    self.space();
                }
                self.out.push('}');
            }
        }
    }

    fn value(&mut self, v: &Json) {
        match v {
            Json::Null => self.out.push_str("null"),
            Json::Bool(b) => self.out.push_str(if *b { "true" } else { "false" }),
            Json::Number(n) => match (n.as_i64(), self.roll(8)) {
                (Some(i), 0) => self.out.push_str(&format!("{i}e0")),
                (Some(i), 1) => self.out.push_str(&format!("{i}.0")),
                // Past f64: the parser refuses it.
                (_, 2) if self.roll(4) == 0 => self.out.push_str("1e999"),
                _ => self.out.push_str(&n.to_string()),
            },
            Json::String(s) => self.string(s),
            // Scalars only are generated as `Json`.
            Json::Array(_) | Json::Object(_) => self.out.push_str(&v.to_string()),
        }
    }
}

fn write(members: &[(String, G)], seed: u64) -> String {
    let mut w = Writer {
        seed: seed | 1,
        out: String::new(),
    };
    w.space();
    w.generated(&G::Object(members.to_vec()));
    w.space();
    w.out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn text_and_full_paths_agree(members in record(), seed in any::<u64>()) {
        same_verdicts(&write(&members, seed))?;
    }

    #[test]
    fn text_and_full_paths_agree_on_corrupted_text(
        members in record(),
        seed in any::<u64>(),
        at in any::<prop::sample::Index>(),
        byte in prop::sample::select(&[b'"', b'\\', b',', b':', b'{', b'}', b'[', b']', b' ', b'1', b'e', b'-', b'.', b'u', 0u8][..]),
        delete in any::<bool>(),
    ) {
        let mut bytes = write(&members, seed).into_bytes();
        let i = at.index(bytes.len());
        if delete {
            bytes.remove(i);
        } else {
            bytes.insert(i, byte);
        }
        // Cutting a character in two leaves no text to give.
        if let Ok(text) = String::from_utf8(bytes) {
            same_verdicts(&text)?;
        }
    }

    #[test]
    fn bytes_not_utf8_are_never_taken(
        members in record(),
        seed in any::<u64>(),
        at in any::<prop::sample::Index>(),
        bad in prop::sample::select(vec![
            &b"\x80"[..], b"\xff", b"\xc3", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
            b"\xe2\x82", b"\xc3\xa9", b"\xf0\x9f\x98\x80",
        ]),
    ) {
        // Bytes inserted anywhere (in a string, in a key, between tokens): the reader
        // given bytes takes them only when they are UTF-8 text, and then exactly as it
        // takes that text.
        let mut bytes = write(&members, seed).into_bytes();
        let i = at.index(bytes.len() + 1);
        bytes.splice(i..i, bad.iter().copied());
        let from_bytes = Update::from_json_fast(&bytes);
        match std::str::from_utf8(&bytes) {
            Ok(text) => {
                prop_assert_eq!(from_bytes, Update::from_json_fast(text));
                same_verdicts(text)?;
            }
            Err(_) => {
                prop_assert!(from_bytes.is_none(), "took bytes that are not UTF-8");
                prop_assert!(Update::from_json(&bytes).is_err(), "not UTF-8, so not JSON");
            }
        }
    }

    #[test]
    fn arrays_split_as_serde_json_splits_them(
        records in prop::collection::vec((record(), any::<u64>()), 0..5),
        extra in prop::option::of(prop::sample::select(&["1", "\"s\"", "[]", "null", "1e999", "01", "{", ""][..])),
        seed in any::<u64>(),
        cut in prop::option::of(any::<prop::sample::Index>()),
        tail in prop::sample::select(&["", "", " ", "x", "]", ",", "{}"][..]),
    ) {
        let mut elements: Vec<String> = records.iter().map(|(m, s)| write(m, *s)).collect();
        if let Some(e) = extra {
            let at = (seed % (elements.len() as u64 + 1)) as usize;
            elements.insert(at, e.to_owned());
        }
        let sep = [",", " , ", ",\n", "\t,"][(seed % 4) as usize];
        let mut text = format!("{}[{}]{}", " ".repeat((seed % 2) as usize), elements.join(sep), "\n".repeat((seed % 3) as usize));
        if let Some(cut) = cut {
            let at = cut.index(text.len());
            if text.is_char_boundary(at) && seed % 3 == 0 {
                text.truncate(at);
            }
        }
        text.push_str(tail);
        same_split(&text)?;
    }
}

/// An array's elements, split by `Update::from_json_array`, are what serde_json's own
/// split finds, each read as `Update::from_json_fast` reads it alone; an array serde_json
/// refuses is refused.
fn same_split(text: &str) -> Result<(), TestCaseError> {
    let ours = Update::from_json_array(text);
    let theirs = serde_json::from_str::<Vec<&serde_json::value::RawValue>>(text);
    let (Some(ours), Ok(theirs)) = (&ours, &theirs) else {
        prop_assert_eq!(
            ours.is_some(),
            theirs.is_ok(),
            "verdicts differ on {}",
            text
        );
        return Ok(());
    };
    prop_assert_eq!(ours.len(), theirs.len());
    for (item, raw) in ours.iter().zip(theirs) {
        let alone = Update::from_json_fast(raw.get());
        match item {
            Ok(update) => {
                prop_assert_eq!(
                    update.json_text(),
                    alone.as_ref().and_then(Update::json_text)
                );
            }
            Err(element) => {
                prop_assert_eq!(*element, raw.get());
                prop_assert!(alone.is_none());
            }
        }
    }
    Ok(())
}

/// The one-pass reader takes the records of a realistic export, written by Python's
/// `json.dumps` (spaces after separators, escapes in values).
#[test]
fn the_reader_takes_ordinary_records() {
    let lines = [
        r#"{"$distinct_id": "user-26905", "$set": {"$name": "User 2", "city": "Malmö", "plan": "enterprise", "seats": 401, "note": "said \"hi\" \\ then\nleft\t😀"}}"#,
        r#"{"$distinct_id": "user-131731", "$add": {"logins": 3, "spent": -12.5}}"#,
        r#"{"$distinct_id": "user-150095", "$union": {"tags": ["churn-risk", "mobile", 3]}}"#,
        r#"{"$distinct_id": "user-196876", "$delete": "", "$ignore_alias": true}"#,
        r#"{"$distinct_id": "user-20006", "$unset": ["city", "plan"]}"#,
        r#"{"$token": "tok", "$distinct_id": "u1", "$set_once": {"first": {"a": [1, {"b": null}]}}, "$time": 1700000000000}"#,
        r#"{"$group_key": "company", "$group_id": "acme", "$set": {"emoji": "\ud83d\ude00 \u00e9"}, "$ip": "203.0.113.9"}"#,
        "{\"$distinct_id\":\"u\",\"$append\":{\"l\":\"x\"},\"$token\":\"tok\"}",
    ];
    for line in lines {
        let update = Update::from_json_fast(line).unwrap_or_else(|| panic!("declined {line}"));
        assert_eq!(
            update.json_text().map(|t| t.len()),
            Some(line.len() - line.matches(": ").count() - line.matches(", ").count()),
            "{line}"
        );
        same_verdicts(line).unwrap();
    }
}

/// What the reader leaves to the full parser: not valid, drawing a warning, or needing
/// decoding to judge.
#[test]
fn the_reader_declines_what_it_cannot_judge_exactly() {
    let long = "x".repeat(256);
    let lines = [
        r#"{"distinct_id": "u1", "plan": "pro"}"#.to_owned(),
        r#"{"$distinct_id": "u1"}"#.to_owned(),
        r#"{"$distinct_id": "", "$set": {}}"#.to_owned(),
        r#"{"$distinct_id": "u\u0031", "$set": {}}"#.to_owned(),
        r#"{"$distinct_id": "u1", "$set": {"a": 1, "a": 2}}"#.to_owned(),
        r#"{"$distinct_id": "u1", "$set": {"a": {"b": 1, "b": 2}}}"#.to_owned(),
        r#"{"$distinct_id": "u1", "$set": {"a": 1}, "$set": {"b": 1}}"#.to_owned(),
        r#"{"$distinct_id": "u1", "$add": {"n": 1e400}}"#.to_owned(),
        r#"{"$distinct_id": "u1", "$add": {"n": "1"}}"#.to_owned(),
        r#"{"$distinct_id": "u1", "$union": {"t": []}}"#.to_owned(),
        r#"{"$distinct_id": "u1", "$unset": []}"#.to_owned(),
        r#"{"$distinct_id": "u1", "$set": {"\u0061": 1}}"#.to_owned(),
        r#"{"$distinct_id": "u1", "$set": {"s": "\ud800"}}"#.to_owned(),
        format!(r#"{{"$distinct_id": "u1", "$set": {{"s": "{long}"}}}}"#),
        format!(r#"{{"$distinct_id": "u1", "$set": {{"{long}": 1}}}}"#),
        r#"{"$distinct_id": "u1", "$set": {}, "$token": " "}"#.to_owned(),
        r#"{"$distinct_id": "u1", "$set": {}, "$group_key": "k"}"#.to_owned(),
        r#"{"$distinct_id": "u1", "$set": {}, "$time": "now"}"#.to_owned(),
        r#"{"$distinct_id": "u1", "$set": {}} x"#.to_owned(),
        r#"{"$distinct_id": "u1", "$set": {"n": 01}}"#.to_owned(),
    ];
    for line in &lines {
        assert!(Update::from_json_fast(line).is_none(), "took {line}");
        same_verdicts(line).unwrap();
    }
}

/// A token of the record's own, equal to the batch's, is cut out of the text, wherever
/// the record carries it; a different one is refused as on the full path, unless the
/// batch overrides tokens.
#[test]
fn a_records_own_token_is_cut_out_or_refused() {
    for line in [
        r#"{"$token":"tok","$distinct_id":"u1","$set":{"a":1}}"#,
        r#"{"$distinct_id":"u1","$token":"tok","$set":{"a":1}}"#,
        r#"{"$distinct_id":"u1","$set":{"a":1},"$token":"tok"}"#,
    ] {
        let update = Update::from_json_fast(line).expect("taken");
        let mut batcher = Batcher::new(BatchConfig::new(
            Token::new(TOKEN).unwrap(),
            Endpoint::Engage,
        ));
        batcher.push(&update).unwrap();
        let batch = batcher.finish().unwrap();
        let body = std::str::from_utf8(batch.body()).unwrap();
        assert_eq!(body.matches("$token").count(), 1, "{body}");
        let record: Json = serde_json::from_slice(batch.record(0).unwrap().json()).unwrap();
        assert_eq!(record["$distinct_id"], "u1");
    }
    let other = Update::from_json(r#"{"$token":"other","$distinct_id":"u1","$set":{}}"#).unwrap();
    let mut batcher = Batcher::new(BatchConfig::new(
        Token::new(TOKEN).unwrap(),
        Endpoint::Engage,
    ));
    let err = batcher.push(&other).unwrap_err();
    assert_eq!(err.property.as_deref(), Some("$token"));
}

/// The generated records exercise the reader: a good share of them it takes, a good
/// share it leaves to the full path (else the agreement above would prove little).
#[test]
fn the_generated_records_exercise_both_paths() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = (record(), any::<u64>());
    let (mut taken, total) = (0, 2000);
    for _ in 0..total {
        let (members, seed) = strategy.new_tree(&mut runner).unwrap().current();
        taken += usize::from(Update::from_json_fast(write(&members, seed)).is_some());
    }
    assert!(taken * 5 > total, "taken {taken} of {total}");
    assert!(taken * 5 < total * 4, "taken {taken} of {total}");
}

/// A record read back for a failure report never holds the token, whatever the kind of
/// update and whatever the token's characters, and holds everything else.
#[test]
fn records_read_back_without_the_token() {
    for secret in ["tok", r#"to"k\n"#, "é\u{1}x"] {
        let token = Token::new(secret).unwrap();
        let mut batcher = Batcher::new(BatchConfig::new(token, Endpoint::Engage));
        let updates = [
            Update::user("u1").add([("n", 1)]),
            Update::raw(serde_json::json!({"$distinct_id": "u2", "$set": {"a": "b"}})),
            Update::from_json(format!(
                r#"{{"$token": {}, "$distinct_id": "u3", "$unset": ["x"]}}"#,
                Json::from(secret)
            ))
            .unwrap(),
        ];
        for u in &updates {
            batcher.push(u).unwrap();
        }
        let batch = batcher.finish().unwrap();
        let expected = [
            serde_json::json!({"$distinct_id": "u1", "$add": {"n": 1}}),
            serde_json::json!({"$distinct_id": "u2", "$set": {"a": "b"}}),
            serde_json::json!({"$distinct_id": "u3", "$unset": ["x"]}),
        ];
        for (i, want) in expected.iter().enumerate() {
            let text = batch.record(i).unwrap().json_without_token();
            let got: Json = serde_json::from_str(&text).unwrap();
            assert_eq!(&got, want, "{secret:?}: {text}");
        }
    }
}

/// An element longer than the room left in the reader's arena chunk (16 KiB at most for
/// a fresh one) grows the chunk as it is written, keeping what came before it, in it and
/// after it: each is read as it is read alone.
#[test]
fn array_elements_longer_than_their_first_room_are_read_whole() {
    let long = |n: usize, tag: &str| {
        let props: Vec<String> = (0..n)
            .map(|i| {
                let inner: Vec<String> = (0..10)
                    .map(|j| format!(r#""q{j}" : "{tag}{}""#, "v".repeat(200)))
                    .collect();
                format!(r#""p{i}" : {{ {} }}"#, inner.join(" , "))
            })
            .collect();
        format!(
            r#"{{ "$distinct_id" : "{tag}", "$set" : {{ {} }} }}"#,
            props.join(" , ")
        )
    };
    let short = r#"{"$distinct_id": "s", "$add": {"n": 1}}"#;
    // 2 KiB a property: from under the first room to several arena chunks.
    for n in [1, 2, 3, 8, 9, 60] {
        let elements = [
            short.to_owned(),
            long(n, "a"),
            short.to_owned(),
            long(n, "b"),
            long(3, "c"),
        ];
        let text = format!("[{}]", elements.join(" , "));
        let split = Update::from_json_array(&text).expect("a well-formed array");
        assert_eq!(split.len(), elements.len());
        for (item, element) in split.iter().zip(&elements) {
            let Ok(update) = item else {
                panic!("the reader declined an element of {n} properties");
            };
            let alone = Update::from_json_fast(element).expect("taken alone");
            assert_eq!(update.json_text(), alone.json_text(), "{n} properties");
            let minified =
                serde_json::to_vec(&serde_json::from_str::<serde_json::Value>(element).unwrap())
                    .unwrap();
            assert_eq!(update.json_text().unwrap().len(), minified.len());
        }
    }
}
