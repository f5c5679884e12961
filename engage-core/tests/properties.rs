//! Property tests: batching limits, order and accounting; encoding round trips; the
//! response parser never panics.

use engage_core::delivery::Delivery;
use engage_core::driver::{Clock, ManualClock, deliver_blocking};
use engage_core::exchange::{Answer, ParseOptions, parse_response};
use engage_core::model::{DateTime, Operation};
use engage_core::{
    BatchConfig, Endpoint, Properties, RetryPolicy, Target, Token, Update, Value, batches,
};
use proptest::prelude::*;
use serde_json::json;
use std::time::{Duration, SystemTime};

fn token() -> Token {
    Token::new("t\"ok\\en").unwrap()
}

/// Strings that stress the escaper: quotes, backslashes, control characters, non-BMP.
fn nasty_string() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just('"'),
            Just('\\'),
            Just('\n'),
            Just('\t'),
            Just('\u{0}'),
            Just('\u{1f}'),
            Just('\u{7f}'),
            Just('é'),
            Just('😀'),
            Just('\u{2028}'),
            any::<char>(),
            prop::char::range('a', 'z'),
        ],
        0..12,
    )
    .prop_map(|cs| cs.into_iter().collect())
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        any::<u64>().prop_map(Value::UInt),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::Float),
        nasty_string().prop_map(Value::String),
        (-62_167_219_200i64..=253_402_300_799)
            .prop_map(|s| Value::DateTime(DateTime::from_unix_seconds(s))),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::List),
            prop::collection::vec((nasty_string(), inner), 0..4).prop_map(Value::Object),
        ]
    })
}

/// The JSON the model means, computed independently of the encoder.
fn expected_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Null => json!(null),
        Value::Bool(b) => json!(b),
        Value::Int(i) => json!(i),
        Value::UInt(u) => json!(u),
        Value::Float(f) => json!(f),
        Value::String(s) => json!(s),
        Value::DateTime(d) => json!(d.to_string()),
        Value::List(items) => serde_json::Value::Array(items.iter().map(expected_json).collect()),
        Value::Object(entries) => {
            let mut m = serde_json::Map::new();
            for (k, v) in entries {
                m.insert(k.clone(), expected_json(v));
            }
            serde_json::Value::Object(m)
        }
    }
}

fn props_json(props: &[(String, Value)]) -> serde_json::Value {
    let mut o = serde_json::Map::new();
    for (k, v) in props {
        o.insert(k.clone(), expected_json(v));
    }
    serde_json::Value::Object(o)
}

/// An update, and the record the batch must hold for it, computed from the same inputs
/// without going through the encoder.
fn update() -> impl Strategy<Value = (Update, serde_json::Value)> {
    let id = nasty_string().prop_map(|s| format!("u{s}"));
    let props = prop::collection::vec((nasty_string(), value()), 0..5);
    (id, props, 0..6u8, any::<bool>()).prop_map(|(id, props, op, ip)| {
        let u = Update::user(id.clone());
        let (u, key, val) = match op {
            0 => (
                u.set(Properties::from(props.clone())),
                "$set",
                props_json(&props),
            ),
            1 => (
                u.set_once(Properties::from(props.clone())),
                "$set_once",
                props_json(&props),
            ),
            2 => (
                u.add(props.iter().map(|(k, _)| (k.clone(), 1.5))),
                "$add",
                serde_json::Value::Object(
                    props.iter().map(|(k, _)| (k.clone(), json!(1.5))).collect(),
                ),
            ),
            3 => (
                u.append(Properties::from(props.clone())),
                "$append",
                props_json(&props),
            ),
            4 => {
                let names: Vec<String> = props
                    .iter()
                    .map(|(k, _)| k.clone())
                    .chain(["x".to_owned()])
                    .collect();
                (u.unset(names.clone()), "$unset", json!(names))
            }
            _ => (u.delete(), "$delete", json!("")),
        };
        let mut m = serde_json::Map::new();
        m.insert("$token".into(), json!(token().expose()));
        m.insert("$distinct_id".into(), json!(id));
        m.insert(key.into(), val);
        let u = if ip {
            m.insert("$ip".into(), json!("10.0.0.1"));
            m.insert("$time".into(), json!(1_700_000_000_000i64));
            u.with_ip("10.0.0.1").with_time_ms(1_700_000_000_000)
        } else {
            u
        };
        (u, serde_json::Value::Object(m))
    })
}

/// What reading an operation back gives for a value: dates as their text, integers as
/// `Int` when they fit.
fn as_sent(v: &Value) -> Value {
    match v {
        Value::UInt(u) => i64::try_from(*u).map_or(Value::UInt(*u), Value::Int),
        Value::DateTime(d) => Value::String(d.to_string()),
        Value::List(items) => Value::List(items.iter().map(as_sent).collect()),
        Value::Object(entries) => Value::Object(
            entries
                .iter()
                .map(|(k, v)| (k.clone(), as_sent(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Every body parses with serde_json to exactly the model's content.
    #[test]
    fn encoded_bodies_parse_to_the_model(updates in prop::collection::vec(update(), 1..20)) {
        let config = BatchConfig::new(token(), Endpoint::Engage);
        let mut seen = 0;
        for item in batches(config, updates.iter().map(|(u, _)| u.clone())) {
            let batch = item.unwrap();
            let parsed: serde_json::Value = serde_json::from_slice(batch.body()).unwrap();
            let arr = parsed.as_array().unwrap();
            prop_assert_eq!(arr.len(), batch.len());
            for (rec, json) in batch.records().zip(arr) {
                let (u, expected) = &updates[rec.index() as usize];
                prop_assert_eq!(json, expected);
                // The record's slice and profile match too.
                let alone: serde_json::Value = serde_json::from_slice(rec.json()).unwrap();
                prop_assert_eq!(&alone, json);
                prop_assert_eq!(Some(rec.profile()), u.profile());
                seen += 1;
            }
        }
        prop_assert_eq!(seen, updates.len());
    }

    /// An update's operation reads back as given, in the form it is sent.
    #[test]
    fn operations_read_back_as_sent(props in prop::collection::vec((nasty_string(), value()), 0..5)) {
        let sent: Vec<(String, Value)> =
            props.iter().map(|(k, v)| (k.clone(), as_sent(v))).collect();
        let u = Update::user("u").set_once(Properties::from(props.clone()));
        prop_assert_eq!(u.operation(), Some(Operation::SetOnce(Properties::from(sent))));
        let names: Vec<String> = props.iter().map(|(k, _)| k.clone()).chain(["x".into()]).collect();
        let u = Update::group("company", "acme").unset(names.clone());
        prop_assert_eq!(u.operation(), Some(Operation::Unset(names)));
    }

    /// Batches never exceed either limit, keep input order, and account for every
    /// update exactly once (in a batch or as an error).
    #[test]
    fn batching_keeps_limits_order_and_accounts(
        sizes in prop::collection::vec(0usize..400, 1..300),
        invalid in prop::collection::vec(any::<bool>(), 300),
        max_records in 1usize..50,
        max_bytes in 150usize..3000,
    ) {
        let updates: Vec<Update> = sizes.iter().enumerate().map(|(i, &n)| {
            if invalid[i] && n % 7 == 0 {
                Update::user(format!("u{i}")).set([("bad", f64::NAN)])
            } else {
                Update::user(format!("u{}", i % 13)).set([("pad", "p".repeat(n))])
            }
        }).collect();
        let config = BatchConfig::new(token(), Endpoint::Engage)
            .max_records(max_records)
            .max_body_bytes(max_bytes);
        let mut accounted = vec![0u32; updates.len()];
        // Sent records keep input order across batches; errors are reported in input order
        // as they are found (possibly before the open batch holding earlier updates closes).
        let mut order = Vec::new();
        let mut error_order = Vec::new();
        for item in batches(config, updates.clone()) {
            match item {
                Ok(batch) => {
                    prop_assert!(!batch.is_empty());
                    prop_assert!(batch.len() <= max_records);
                    prop_assert!(batch.body().len() <= max_bytes, "{} > {}", batch.body().len(), max_bytes);
                    let parsed: Vec<serde_json::Value> = serde_json::from_slice(batch.body()).unwrap();
                    prop_assert_eq!(parsed.len(), batch.len());
                    for r in batch.records() {
                        accounted[r.index() as usize] += 1;
                        order.push(r.index());
                    }
                }
                Err(e) => {
                    accounted[e.index as usize] += 1;
                    error_order.push(e.index);
                }
            }
        }
        prop_assert!(accounted.iter().all(|&n| n == 1), "{:?}", accounted);
        prop_assert!(order.windows(2).all(|w| w[0] < w[1]), "order {:?}", order);
        prop_assert!(error_order.windows(2).all(|w| w[0] < w[1]), "errors {:?}", error_order);
    }

    /// Splitting a batch keeps every record, in order, byte for byte.
    #[test]
    fn halves_keep_records(n in 2usize..60) {
        let updates = (0..n).map(|i| Update::user(format!("u{i}")).add([("n", i as i64)]));
        let batch = batches(BatchConfig::new(token(), Endpoint::Engage), updates).next().unwrap().unwrap();
        let (a, b) = batch.split_halves().unwrap();
        let joined: Vec<&[u8]> = a.records().chain(b.records()).map(|r| r.json()).collect();
        let original: Vec<&[u8]> = batch.records().map(|r| r.json()).collect();
        prop_assert_eq!(joined, original);
        for half in [&a, &b] {
            let parsed: Vec<serde_json::Value> = serde_json::from_slice(half.body()).unwrap();
            prop_assert_eq!(parsed.len(), half.len());
        }
    }

    /// No status, header or body makes the parser or the state machine panic.
    #[test]
    fn answers_never_panic(
        status in 100u16..600,
        body in prop::collection::vec(any::<u8>(), 0..64),
        retry_after in prop::collection::vec(any::<u8>(), 0..40),
        date in prop::collection::vec(any::<u8>(), 0..40),
    ) {
        let mut r = http::Response::new(bytes::Bytes::from(body));
        *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
        if let Ok(v) = http::HeaderValue::from_bytes(&retry_after) {
            r.headers_mut().insert("retry-after", v);
        }
        if let Ok(v) = http::HeaderValue::from_bytes(&date) {
            r.headers_mut().insert("date", v);
        }
        let opts = ParseOptions { max_retry_after: Duration::from_secs(60), wall_now: SystemTime::now() };
        let answer = parse_response(&r, opts);
        if let Answer::RetryLater { retry_after: Some(d), .. } = answer {
            prop_assert!(d <= Duration::from_secs(60));
        }
        let batch = batches(BatchConfig::new(token(), Endpoint::Engage), [Update::user("u").set([("a", 1)])])
            .next().unwrap().unwrap();
        let mut d = Delivery::new(batch, Target::default(), RetryPolicy::default().max_attempts(2));
        let clock = ManualClock::new();
        let _ = d.poll(clock.now());
        d.on_response(clock.now(), clock.wall(), &r);
        let report = deliver_blocking(d, &clock, |_| Ok(r.clone()), |t| clock.advance(t));
        prop_assert_eq!(report.records.len(), 1);
    }

    /// Strict answers with arbitrary failed_records never panic and never lose a record.
    #[test]
    fn strict_answers_map_or_keep_unmapped(indices in prop::collection::vec(-3i64..8, 0..6)) {
        let updates = (0..5).map(|i| Update::user(format!("u{i}")).set([("a", i)]));
        let batch = batches(BatchConfig::new(token(), Endpoint::Engage), updates).next().unwrap().unwrap();
        let failed: Vec<_> = indices.iter().map(|i| json!({"index": i, "message": "m"})).collect();
        let body = json!({"code": 400, "status": "Bad Request", "failed_records": failed}).to_string();
        let mut r = http::Response::new(bytes::Bytes::from(body));
        *r.status_mut() = http::StatusCode::BAD_REQUEST;
        let clock = ManualClock::new();
        let report = deliver_blocking(Delivery::new(batch, Target::default(), RetryPolicy::default()), &clock, |_| Ok(r.clone()), |t| clock.advance(t));
        prop_assert_eq!(report.records.len(), 5);
        let valid: std::collections::BTreeSet<i64> = indices.iter().copied().filter(|i| (0..5).contains(i)).collect();
        prop_assert_eq!(report.rejected(), if indices.is_empty() { 0 } else { valid.len() });
        prop_assert_eq!(report.unmapped_failures.len(), indices.iter().filter(|i| !(0..5).contains(*i)).count());
    }
}
