//! Profile semantics, `$time` ordering, `$last_seen` and geolocation, over real HTTP.

mod common;

use common::*;
use engage_emulator::{EMULATOR_PROPERTIES, Emulator, EmulatorConfig};
use serde_json::{Value, json};

fn emulator() -> Emulator {
    Emulator::start(EmulatorConfig::default()).unwrap()
}

fn send(e: &Emulator, records: &[Value]) {
    let body = serde_json::to_string(records).unwrap();
    let r = post_json(e.addr(), "/engage?strict=1&ip=0", &body);
    assert_eq!(r.status, 200, "{}", r.text());
}

fn props(e: &Emulator, id: &str) -> Value {
    let mut p = e.profile(id).unwrap_or_default();
    for k in EMULATOR_PROPERTIES {
        p.remove(k);
    }
    Value::Object(p)
}

fn rec(id: &str, op: &str, payload: Value) -> Value {
    json!({"$token": "t", "$distinct_id": id, op: payload})
}

#[test]
fn every_operation_has_mixpanels_semantics() {
    let e = emulator();
    send(
        &e,
        &[rec("u", "$set", json!({"name": "Ada", "tags": ["a"]}))],
    );
    send(&e, &[rec("u", "$set", json!({"name": "Ada L."}))]);
    assert_eq!(props(&e, "u")["name"], "Ada L.", "$set overwrites");
    send(
        &e,
        &[rec(
            "u",
            "$set_once",
            json!({"name": "nope", "first": "yes"}),
        )],
    );
    assert_eq!(
        props(&e, "u")["name"],
        "Ada L.",
        "$set_once never overwrites"
    );
    assert_eq!(props(&e, "u")["first"], "yes");
    send(
        &e,
        &[
            rec("u", "$add", json!({"n": 2})),
            rec("u", "$add", json!({"n": -5, "f": 0.5})),
        ],
    );
    assert_eq!(props(&e, "u")["n"], -3, "$add starts from 0");
    assert_eq!(props(&e, "u")["f"], 0.5);
    send(&e, &[rec("u", "$union", json!({"tags": ["a", "b", "b"]}))]);
    assert_eq!(
        props(&e, "u")["tags"],
        json!(["a", "b"]),
        "$union de-duplicates"
    );
    send(
        &e,
        &[
            rec("u", "$append", json!({"tags": "a", "log": 1})),
            rec("u", "$append", json!({"log": 1})),
        ],
    );
    assert_eq!(
        props(&e, "u")["tags"],
        json!(["a", "b", "a"]),
        "$append does not"
    );
    assert_eq!(props(&e, "u")["log"], json!([1, 1]));
    send(
        &e,
        &[rec("u", "$remove", json!({"tags": "a", "absent": "x"}))],
    );
    assert_eq!(props(&e, "u")["tags"], json!(["b"]));
    assert!(
        props(&e, "u").get("absent").is_none(),
        "$remove is a no-op when absent"
    );
    send(&e, &[rec("u", "$unset", json!(["first", "f"]))]);
    assert_eq!(
        props(&e, "u"),
        json!({"name": "Ada L.", "tags": ["b"], "n": -3, "log": [1, 1]})
    );
    send(&e, &[rec("u", "$delete", json!(""))]);
    assert!(e.profile("u").is_none(), "$delete removes the profile");
    // $remove or $unset on a missing profile does not create it.
    send(
        &e,
        &[
            rec("ghost", "$unset", json!(["x"])),
            rec("ghost", "$remove", json!({"x": 1})),
        ],
    );
    assert!(e.profile("ghost").is_none());
}

#[test]
fn updates_apply_in_time_order_seconds_or_milliseconds() {
    let e = emulator();
    // Arrives first but happened last (ms).
    let mut late = rec("u", "$set", json!({"plan": "enterprise"}));
    late["$time"] = json!(1_700_000_002_000i64);
    // Arrives second but happened first (seconds).
    let mut early = rec("u", "$set", json!({"plan": "free"}));
    early["$time"] = json!(1_700_000_001);
    let mut middle = rec("u", "$set_once", json!({"first_plan": "free"}));
    middle["$time"] = json!(1_700_000_001_500i64);
    send(&e, &[late]);
    send(&e, &[early, middle]);
    assert_eq!(props(&e, "u")["plan"], "enterprise");
    assert_eq!(props(&e, "u")["first_plan"], "free");
    // Without $time: arrival order.
    send(
        &e,
        &[
            rec("v", "$set", json!({"x": 1})),
            rec("v", "$set", json!({"x": 2})),
        ],
    );
    assert_eq!(props(&e, "v")["x"], 2);
}

#[test]
fn last_seen_is_kept_unless_ignore_time() {
    let e = emulator();
    let mut a = rec("u", "$set", json!({"x": 1}));
    a["$time"] = json!(1_700_000_000_000i64);
    send(&e, &[a]);
    assert_eq!(e.profile("u").unwrap()["$last_seen"], "2023-11-14T22:13:20");
    let mut b = rec("u", "$set", json!({"x": 2}));
    b["$time"] = json!(1_700_000_100_000i64);
    b["$ignore_time"] = json!(true);
    send(&e, &[b]);
    let p = e.profile("u").unwrap();
    assert_eq!(p["x"], 2);
    assert_eq!(p["$last_seen"], "2023-11-14T22:13:20");
}

#[test]
fn geolocation_source_is_recorded_without_inventing_a_location() {
    let e = emulator();
    let body = |id: &str, ip: Option<&str>| {
        let mut r = rec(id, "$set", json!({"x": 1}));
        if let Some(ip) = ip {
            r["$ip"] = json!(ip);
        }
        serde_json::to_string(&[r]).unwrap()
    };
    post_json(e.addr(), "/engage", &body("default", None));
    post_json(e.addr(), "/engage?ip=1", &body("request", None));
    post_json(e.addr(), "/engage?ip=0", &body("off", None));
    post_json(e.addr(), "/engage?ip=0", &body("own", Some("203.0.113.9")));
    post_json(e.addr(), "/engage?ip=1", &body("skip", Some("0")));
    let geo = |id: &str| {
        let p = e.profile(id).unwrap();
        (p["$geo_source"].clone(), p.get("$geo_ip").cloned())
    };
    assert_eq!(geo("default"), (json!("request"), Some(json!("127.0.0.1"))));
    assert_eq!(geo("request"), (json!("request"), Some(json!("127.0.0.1"))));
    assert_eq!(geo("off"), (json!("none"), None));
    assert_eq!(geo("own"), (json!("$ip"), Some(json!("203.0.113.9"))));
    assert_eq!(geo("skip"), (json!("none"), None));
    for id in ["default", "own"] {
        let p = e.profile(id).unwrap();
        assert!(p.get("$city").is_none() && p.get("$region").is_none());
    }
}

#[test]
fn core_encoded_batches_land_as_built() {
    use engage_core::{BatchConfig, Endpoint, Target, Token, Update, batches};
    let e = emulator();
    let token = Token::new("t").unwrap();
    let updates = vec![
        Update::user("u1").set([
            ("name", "Ada"),
            ("note", "quote \" backslash \\ nl \n emoji 😀"),
        ]),
        Update::user("u1").add([("logins", 1)]),
        Update::user("u1").union([("tags", ["x"])]),
        Update::user("u1").append([("events", "signup")]),
        Update::user("u1")
            .set_once([("first", true)])
            .with_time_ms(1_700_000_000_000),
        Update::user("u2").delete(),
    ];
    let batch = batches(BatchConfig::new(token, Endpoint::Engage), updates)
        .next()
        .unwrap()
        .unwrap();
    let target = Target::base_url(&e.base_url()).unwrap();
    let req = target.request(&batch);
    let r = request(
        e.addr(),
        "POST",
        &req.uri().to_string().replace(&e.base_url(), ""),
        Some("application/json"),
        req.body(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        props(&e, "u1"),
        json!({"name": "Ada", "note": "quote \" backslash \\ nl \n emoji 😀", "logins": 1, "tags": ["x"], "events": ["signup"], "first": true})
    );
}

#[test]
fn one_request_keeps_each_profiles_order_and_reports_refusals_in_order() {
    let e = emulator();
    // Ids short and long (kept inline and on the heap by the store), 60 profiles spread
    // over the store's shards, each updated many times in one request.
    let ids: Vec<String> = (0..60)
        .map(|i| match i % 4 {
            0 => format!("u{i}"),
            1 => format!("{i:0>22}"),
            2 => format!("{i:0>23}"),
            _ => format!("a-rather-long-distinct-id-{i:0>30}"),
        })
        .collect();
    let huge = json!({"n": 1.7e308});
    send(
        &e,
        &ids.iter()
            .map(|id| rec(id, "$set", huge.clone()))
            .collect::<Vec<_>>(),
    );
    let mut records = Vec::new();
    let mut refused = Vec::new();
    for round in 0..8 {
        for (i, id) in ids.iter().enumerate() {
            if (i + round) % 7 == 0 {
                refused.push(records.len());
                records.push(rec(id, "$add", json!({"n": 1e308})));
            }
            records.push(rec(id, "$append", json!({"seen": round})));
        }
    }
    let body = serde_json::to_string(&records).unwrap();
    let r = post_json(e.addr(), "/engage?strict=1&ip=0", &body);
    assert_eq!(r.status, 400, "{}", r.text());
    let answer: Value = serde_json::from_str(&r.text()).unwrap();
    let indices: Vec<usize> = answer["failed_records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["index"].as_u64().unwrap() as usize)
        .collect();
    assert_eq!(indices, refused, "refusals named in request order");
    for id in &ids {
        assert_eq!(
            props(&e, id),
            json!({"n": 1.7e308, "seen": [0, 1, 2, 3, 4, 5, 6, 7]}),
            "{id}"
        );
    }
}
