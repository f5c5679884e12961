//! The update model, validation, encoding and requests, through the public API.

use engage_core::batch::Batcher;
use engage_core::delivery::Delivery;
use engage_core::model::{DateTime, EmptyToken, Number, Operation, ProfileId, SerializeError};
use engage_core::validate::{Problem, ValidationError, WarningKind};
use engage_core::{
    BatchConfig, Endpoint, Properties, Region, RetryPolicy, Target, Token, Update, Value,
};
use serde_json::json;

fn token() -> Token {
    Token::new("tok-0123456789").unwrap()
}

fn encode_one(update: Update) -> Result<serde_json::Value, ValidationError> {
    let endpoint = update.endpoint();
    let mut batcher = Batcher::new(BatchConfig::new(token(), endpoint));
    assert!(batcher.push(&update)?.is_none());
    let batch = batcher.finish().unwrap();
    let body: serde_json::Value = serde_json::from_slice(batch.body()).unwrap();
    Ok(body[0].clone())
}

fn push_err(update: Update) -> ValidationError {
    let endpoint = update.endpoint();
    let mut batcher = Batcher::new(BatchConfig::new(token(), endpoint));
    batcher.push(&update).unwrap_err()
}

#[test]
fn all_eight_user_operations() {
    let u = || Update::user("u1");
    let cases = [
        (u().set([("a", 1)]), json!({"$set": {"a": 1}})),
        (u().set_once([("a", "x")]), json!({"$set_once": {"a": "x"}})),
        (
            u().add([("n", Number::Int(-2)), ("f", Number::Float(1.5))]),
            json!({"$add": {"n": -2, "f": 1.5}}),
        ),
        (
            u().union([("tags", vec![Value::from("a"), Value::from(2)])]),
            json!({"$union": {"tags": ["a", 2]}}),
        ),
        (u().append([("log", "x")]), json!({"$append": {"log": "x"}})),
        (
            u().remove([("tags", "a")]),
            json!({"$remove": {"tags": "a"}}),
        ),
        (u().unset(["a", "b"]), json!({"$unset": ["a", "b"]})),
        (u().delete(), json!({"$delete": ""})),
    ];
    for (update, op) in cases {
        let mut expected = json!({"$token": "tok-0123456789", "$distinct_id": "u1"});
        for (k, v) in op.as_object().unwrap() {
            expected[k] = v.clone();
        }
        assert_eq!(encode_one(update).unwrap(), expected);
    }
}

#[test]
fn six_group_operations_and_group_identity() {
    let g = || Update::group("company", "acme");
    let ops = [
        g().set([("a", 1)]),
        g().set_once([("a", 1)]),
        g().union([("t", ["x"])]),
        g().remove([("t", "x")]),
        g().unset(["a"]),
        g().delete(),
    ];
    for update in ops {
        assert_eq!(update.endpoint(), Endpoint::Groups);
        let v = encode_one(update).unwrap();
        assert_eq!(v["$group_key"], "company");
        assert_eq!(v["$group_id"], "acme");
        assert!(v.get("$distinct_id").is_none());
    }
    // $add on a group built from parts is refused, naming the operation.
    let err = push_err(Update::new(
        ProfileId::Group {
            key: "company".into(),
            id: "acme".into(),
        },
        Operation::Add(vec![("n".into(), Number::Int(1))]),
    ));
    assert_eq!(err.problem, Problem::NotForGroups("$add".into()));
}

#[test]
fn modifiers_at_top_level() {
    let v = encode_one(
        Update::user("u1")
            .set([("a", 1)])
            .with_ip("203.0.113.9")
            .with_location(48.85, 2.35)
            .with_time(std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123))
            .ignore_time()
            .ignore_alias(),
    )
    .unwrap();
    assert_eq!(v["$ip"], "203.0.113.9");
    assert_eq!(v["$latitude"], 48.85);
    assert_eq!(v["$longitude"], 2.35);
    assert_eq!(v["$time"], 1_700_000_000_123i64);
    assert!(v["$time"].is_i64(), "$time is integer milliseconds");
    assert_eq!(v["$ignore_time"], true);
    assert_eq!(v["$ignore_alias"], true);
    assert!(v["$set"].get("$ip").is_none());
    let v = encode_one(Update::user("u1").delete().without_geolocation()).unwrap();
    assert_eq!(v["$ip"], "0");
}

/// Updates are encoded when built; a modifier changed later replaces the earlier value
/// instead of adding a second key, and a fixed location clears its error.
#[test]
fn changing_a_modifier_reencodes_it() {
    let u = Update::user("u1")
        .set([("a", 1)])
        .with_ip("203.0.113.9")
        .with_time_ms(1)
        .without_geolocation()
        .with_time_ms(2);
    let mut batcher = Batcher::new(BatchConfig::new(token(), Endpoint::Engage));
    batcher.push(&u).unwrap();
    let batch = batcher.finish().unwrap();
    let json = std::str::from_utf8(batch.record(0).unwrap().json()).unwrap();
    assert_eq!(json.matches("\"$ip\"").count(), 1, "{json}");
    assert_eq!(json.matches("\"$time\"").count(), 1, "{json}");
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(
        (v["$ip"].clone(), v["$time"].clone()),
        ("0".into(), 2.into())
    );

    let fixed = Update::user("u1")
        .set([("a", 1)])
        .with_location(f64::NAN, 0.0)
        .with_location(1.5, 2.5);
    let v = encode_one(fixed).unwrap();
    assert_eq!(
        (v["$latitude"].clone(), v["$longitude"].clone()),
        (1.5.into(), 2.5.into())
    );

    // Several problems: the operation's is reported before the modifiers'.
    let both = Update::user("u1")
        .set([("score", f64::NAN)])
        .with_location(f64::NAN, 0.0);
    let err = push_err(both);
    assert_eq!(err.property.as_deref(), Some("score"));
    // And an invalid update still shows its operation as given.
    let bad = Update::user("u1").add([("n", f64::INFINITY)]);
    assert_eq!(
        bad.operation(),
        Some(Operation::Add(vec![(
            "n".into(),
            Number::Float(f64::INFINITY)
        )]))
    );
}

#[derive(serde::Serialize)]
struct Customer {
    name: String,
    plan: Plan,
    seats: u32,
    score: f64,
    tags: Vec<&'static str>,
    nickname: Option<String>,
    address: Address,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum Plan {
    Pro,
}

#[derive(serde::Serialize)]
struct Address {
    city: &'static str,
}

#[test]
fn serde_structs_become_set_payloads() {
    let c = Customer {
        name: "Zoë \"Z\" O'Neil".into(),
        plan: Plan::Pro,
        seats: 3,
        score: 0.25,
        tags: vec!["a", "b"],
        nickname: None,
        address: Address { city: "Kraków" },
    };
    let props = Properties::from_serialize(&c).unwrap();
    let v = encode_one(Update::user("u1").set(props)).unwrap();
    assert_eq!(
        v["$set"],
        json!({"name": "Zoë \"Z\" O'Neil", "plan": "pro", "seats": 3, "score": 0.25,
               "tags": ["a", "b"], "nickname": null, "address": {"city": "Kraków"}})
    );
    // A map works too; a non-map is a typed error.
    let map: std::collections::BTreeMap<&str, i32> = [("x", 1)].into();
    assert_eq!(Properties::from_serialize(&map).unwrap().len(), 1);
    assert!(matches!(
        Properties::from_serialize(&5),
        Err(SerializeError::NotAMap(_))
    ));
    // NaN inside a serde struct is caught by name instead of turning into null.
    let mut c = c;
    c.score = f64::NAN;
    let err = push_err(Update::user("u9").set(Properties::from_serialize(&c).unwrap()));
    assert_eq!(err.problem, Problem::NonFiniteNumber);
    assert_eq!(err.property.as_deref(), Some("score"));
    assert_eq!(
        err.profile,
        Some(ProfileId::User {
            distinct_id: "u9".into()
        })
    );
}

#[test]
fn dates_render_in_mixpanel_form() {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
    let v = encode_one(
        Update::user("u1").set(
            Properties::new()
                .with("signed_up", t)
                .with("birthday", DateTime::from_unix_seconds(0)),
        ),
    )
    .unwrap();
    assert_eq!(v["$set"]["signed_up"], "2023-11-14T22:13:20");
    assert_eq!(v["$set"]["birthday"], "1970-01-01T00:00:00");
}

#[test]
fn raw_escape_hatch_is_checked_and_token_filled() {
    let v = encode_one(Update::raw(
        json!({"$distinct_id": "u1", "$append": {"log": "x"}, "$ignore_time": true}),
    ))
    .unwrap();
    assert_eq!(
        v,
        json!({"$token": "tok-0123456789", "$distinct_id": "u1", "$append": {"log": "x"}, "$ignore_time": true})
    );
    // Its own matching token is kept once.
    let v = encode_one(Update::raw(
        json!({"$token": "tok-0123456789", "$distinct_id": "u1", "$set": {}}),
    ))
    .unwrap();
    assert_eq!(v["$token"], "tok-0123456789");
    let cases = [
        (json!("just a string"), Problem::NotAnObject),
        (json!({"$set": {"a": 1}}), Problem::Missing("$distinct_id")),
        (
            json!({"$distinct_id": "u1", "$sett": {"a": 1}}),
            Problem::UnknownKey,
        ),
        (json!({"$distinct_id": "u1"}), Problem::NoOperation),
        (
            json!({"$distinct_id": "u1", "$set": {}, "$unset": ["a"]}),
            Problem::SeveralOperations,
        ),
        (
            json!({"$token": "other", "$distinct_id": "u1", "$set": {}}),
            Problem::TokenMismatch,
        ),
        (
            json!({"$token": "", "$distinct_id": "u1", "$set": {}}),
            Problem::EmptyToken,
        ),
        (
            json!({"$distinct_id": "u1", "$add": {"n": "1"}}),
            Problem::NonNumericAdd,
        ),
        (
            json!({"$distinct_id": 5, "$set": {}}),
            Problem::WrongType("a string"),
        ),
        (
            json!({"$distinct_id": "u1", "$time": "yesterday", "$set": {}}),
            Problem::WrongType("a number"),
        ),
    ];
    for (raw, problem) in cases {
        assert_eq!(push_err(Update::raw(raw.clone())).problem, problem, "{raw}");
    }
    // Overriding the token replaces a different one.
    let mut b = Batcher::new(BatchConfig::new(token(), Endpoint::Engage).override_token(true));
    b.push(&Update::raw(
        json!({"$token": "other", "$distinct_id": "u1", "$set": {}}),
    ))
    .unwrap();
    let body: serde_json::Value = serde_json::from_slice(b.finish().unwrap().body()).unwrap();
    assert_eq!(body[0]["$token"], "tok-0123456789");
    // Group records: $distinct_id is refused, $add allowed through the escape hatch.
    let err = push_err(Update::raw(
        json!({"$group_key": "c", "$group_id": "a", "$distinct_id": "u", "$set": {}}),
    ));
    assert_eq!(err.problem, Problem::DistinctIdOnGroup);
    assert!(
        encode_one(Update::raw(
            json!({"$group_key": "c", "$group_id": "a", "$add": {"n": 1}})
        ))
        .is_ok()
    );
}

#[test]
fn every_validation_failure_names_update_and_property() {
    let nan_nested = Update::user("u1").set([(
        "deep",
        Value::Object(vec![(
            "x".into(),
            Value::List(vec![Value::Float(f64::INFINITY)]),
        )]),
    )]);
    let cases: Vec<(Update, Problem, Option<&str>)> = vec![
        (nan_nested, Problem::NonFiniteNumber, Some("deep")),
        (
            Update::user("u1").add([("n", f64::NEG_INFINITY)]),
            Problem::NonFiniteNumber,
            Some("n"),
        ),
        (
            Update::user("u1")
                .set([("a", 1)])
                .with_location(f64::NAN, 0.0),
            Problem::NonFiniteNumber,
            Some("$latitude"),
        ),
        (
            Update::user("").set([("a", 1)]),
            Problem::Empty("$distinct_id"),
            Some("$distinct_id"),
        ),
        (
            Update::group("", "x").set([("a", 1)]),
            Problem::Empty("$group_key"),
            Some("$group_key"),
        ),
        (
            Update::group("k", "").set([("a", 1)]),
            Problem::Empty("$group_id"),
            Some("$group_id"),
        ),
        (
            Update::user("u1").unset(Vec::<String>::new()),
            Problem::EmptyList,
            Some("$unset"),
        ),
        (
            Update::user("u1").union([("tags", Vec::<Value>::new())]),
            Problem::EmptyList,
            Some("tags"),
        ),
        (
            Update::user("u1").union([("tags", vec![Value::Bool(true)])]),
            Problem::UnionItemNotScalar,
            Some("tags"),
        ),
        (
            Update::user("u1").union([("tags", vec![Value::Float(f64::NAN)])]),
            Problem::NonFiniteNumber,
            Some("tags"),
        ),
    ];
    for (i, (update, problem, property)) in cases.into_iter().enumerate() {
        let profile = update.profile();
        let mut batcher = Batcher::new(BatchConfig::new(token(), update.endpoint()));
        let err = batcher.push_at(100 + i as u64, &update).unwrap_err();
        assert_eq!(err.problem, problem, "case {i}");
        assert_eq!(err.property.as_deref(), property, "case {i}");
        assert_eq!(err.index, 100 + i as u64);
        assert_eq!(err.profile, profile);
        let text = err.to_string();
        assert!(text.starts_with(&format!("update #{}", 100 + i)), "{text}");
        if let Some(p) = property {
            assert!(text.contains(&format!("{p:?}")), "{text}");
        }
        // The batcher goes on after an invalid update.
        let ok = match batcher.config().endpoint() {
            Endpoint::Engage => Update::user("ok").set([("a", 1)]),
            Endpoint::Groups => Update::group("k", "ok").set([("a", 1)]),
        };
        assert!(batcher.push(&ok).unwrap().is_none());
        let batch = batcher.finish().unwrap();
        assert_eq!(batch.len(), 1);
        assert_eq!(batch.record(0).unwrap().index(), 101 + i as u64);
    }
}

#[test]
fn wrong_endpoint_is_an_error_for_that_update() {
    let mut b = Batcher::new(BatchConfig::new(token(), Endpoint::Engage));
    let err = b
        .push(&Update::group("k", "i").set([("a", 1)]))
        .unwrap_err();
    assert_eq!(err.problem, Problem::WrongEndpoint(Endpoint::Groups));
    let err = b
        .push(&Update::raw(
            json!({"$group_key": "k", "$group_id": "i", "$set": {}}),
        ))
        .unwrap_err();
    assert_eq!(err.problem, Problem::WrongEndpoint(Endpoint::Groups));
}

#[test]
fn oversized_updates_are_errors_for_themselves_only() {
    let big = "x".repeat(1_000_001);
    let mut b = Batcher::new(BatchConfig::new(token(), Endpoint::Engage).max_body_bytes(4 << 20));
    b.push(&Update::user("a").set([("n", 1)])).unwrap();
    let err = b
        .push(&Update::user("big").set([("blob", big.as_str())]))
        .unwrap_err();
    assert!(matches!(
        err.problem,
        Problem::UpdateTooLarge {
            limit: 1_000_000,
            ..
        }
    ));
    b.push(&Update::user("c").set([("n", 3)])).unwrap();
    let batch = b.finish().unwrap();
    assert_eq!(
        batch.records().map(|r| r.index()).collect::<Vec<_>>(),
        [0, 2]
    );
    // Larger than the body cap but under 1 MB: also an error for that update only.
    let mut b = Batcher::new(BatchConfig::new(token(), Endpoint::Engage).max_body_bytes(1000));
    b.push(&Update::user("a").set([("n", 1)])).unwrap();
    let err = b
        .push(&Update::user("mid").set([("blob", "y".repeat(2000))]))
        .unwrap_err();
    assert!(matches!(
        err.problem,
        Problem::LargerThanBodyCap { cap: 1000, .. }
    ));
    assert_eq!(b.finish().unwrap().len(), 1);
}

#[test]
fn truncation_warnings_are_reported() {
    let long_name = "n".repeat(256);
    let long_value = "é".repeat(128); // 256 bytes
    let mut b = Batcher::new(BatchConfig::new(token(), Endpoint::Engage));
    b.push(&Update::user("u1").set([(long_name.as_str(), "ok")]))
        .unwrap();
    b.push(&Update::user("u2").set([("bio", long_value.as_str())]))
        .unwrap();
    b.push(&Update::user("u3").set([("fine", "x".repeat(255))]))
        .unwrap();
    let batch = b.finish().unwrap();
    // Nothing is dropped: the records are still sent as given.
    assert_eq!(batch.len(), 3);
    let w = batch.warnings();
    assert_eq!(w.len(), 2, "{w:?}");
    assert_eq!(w[0].index, 0);
    assert_eq!(w[0].kind, WarningKind::NameTooLong { chars: 256 });
    assert_eq!(w[1].index, 1);
    assert_eq!(w[1].property, "bio");
    assert_eq!(w[1].kind, WarningKind::StringTooLong { bytes: 256 });
    assert!(w[1].to_string().contains("truncated"));
}

#[test]
fn empty_token_is_refused() {
    assert_eq!(Token::new(""), Err(EmptyToken));
    assert_eq!(Token::new("  "), Err(EmptyToken));
}

#[test]
fn requests_for_every_region_and_base_url() {
    let mut b = Batcher::new(BatchConfig::new(token(), Endpoint::Engage));
    b.push(&Update::user("u1").set([("a", 1)])).unwrap();
    let batch = b.finish().unwrap();
    for (region, host) in [
        (Region::Us, "api.mixpanel.com"),
        (Region::Eu, "api-eu.mixpanel.com"),
        (Region::India, "api-in.mixpanel.com"),
    ] {
        let req = Target::region(region).request(&batch);
        assert_eq!(req.method(), http::Method::POST);
        assert_eq!(req.uri().host(), Some(host));
        assert_eq!(req.uri().path(), "/engage");
        assert_eq!(req.uri().query(), Some("ip=0&verbose=1&strict=1"));
        assert_eq!(req.headers()["content-type"], "application/json");
        assert!(req.headers().contains_key("accept"));
        assert_eq!(
            req.headers()["user-agent"],
            format!("engage/{}", env!("CARGO_PKG_VERSION")).as_str()
        );
        assert_eq!(req.body(), batch.body());
    }
    let t = Target::base_url("http://127.0.0.1:4000/proxy/")
        .unwrap()
        .geolocate(true)
        .verbose(false)
        .strict(false)
        .callback("cb")
        .unwrap();
    assert_eq!(
        t.request(&batch).uri().to_string(),
        "http://127.0.0.1:4000/proxy/engage?ip=1&verbose=0&strict=0&callback=cb"
    );
    assert!(Target::base_url("ftp://x").is_err());
    assert!(Target::base_url("not a url").is_err());
    assert!(Target::base_url("http://h/?q=1").is_err());
    assert!(Target::default().callback("a b").is_err());
    // The same bytes are shared, not copied, by every request.
    let r1 = t.request(&batch);
    let r2 = t.request(&batch);
    assert_eq!(r1.body().as_ptr(), r2.body().as_ptr());
}

#[test]
fn token_never_whole_in_debug_or_errors() {
    let secret = "SECRET-token-value-123";
    let token = Token::new(secret).unwrap();
    let mut b = Batcher::new(BatchConfig::new(token.clone(), Endpoint::Engage));
    let err = b
        .push(&Update::raw(
            json!({"$token": "SECRET-other", "$distinct_id": "u", "$set": {}}),
        ))
        .unwrap_err();
    b.push(&Update::user("u").set([("a", 1)])).unwrap();
    let batch = b.finish().unwrap();
    let delivery = Delivery::new(batch.clone(), Target::default(), RetryPolicy::default());
    for text in [
        format!("{token:?}"),
        format!("{b:?}"),
        format!("{batch:?}"),
        format!("{delivery:?}"),
        format!("{err}"),
        format!("{err:?}"),
    ] {
        assert!(!text.contains(secret), "{text}");
        assert!(!text.contains("SECRET-other"), "{text}");
    }
}

#[test]
fn dates_out_of_range_and_deep_nesting_are_errors() {
    let err = push_err(Update::user("u").set([("d", DateTime::from_unix_seconds(i64::MAX / 2))]));
    assert_eq!(err.problem, Problem::DateOutOfRange);
    let mut deep = Value::Int(1);
    for _ in 0..40 {
        deep = Value::List(vec![deep]);
    }
    let err = push_err(Update::user("u").set([("deep", deep)]));
    assert_eq!(err.problem, Problem::TooDeep);
    assert_eq!(err.property.as_deref(), Some("deep"));
}

#[test]
fn short_tokens_are_not_shown_whole() {
    assert_eq!(Token::new("abcd").unwrap().redacted(), "ab…");
    assert_eq!(Token::new("a").unwrap().redacted(), "…");
}
