//! Fault injection and duplicate-batch counting, over real HTTP.

mod common;

use std::time::{Duration, Instant};

use common::*;
use engage_emulator::{Emulator, EmulatorConfig, FaultConfig, FaultKind};
use serde_json::json;

const ADD: &str = r#"[{"$token":"t","$distinct_id":"u","$add":{"n":1}}]"#;
const SET: &str = r#"[{"$token":"t","$distinct_id":"u","$set":{"s":1}}]"#;

fn scripted(steps: &str) -> Emulator {
    let faults = FaultConfig {
        script: engage_emulator::parse_script(steps).unwrap(),
        slow_ms: 300,
        ..FaultConfig::default()
    };
    Emulator::start(EmulatorConfig::default().faults(faults)).unwrap()
}

fn n(e: &Emulator) -> Option<serde_json::Value> {
    e.profile("u").and_then(|p| p.get("n").cloned())
}

#[test]
fn each_fault_kind() {
    let e = scripted("429-retry-after,429,500,502,503,close,slow,applied-500,ok");
    let r = post_json(e.addr(), "/engage", ADD);
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(r.json()["error"].as_str().unwrap().contains("rate limits"));
    let r = post_json(e.addr(), "/engage", ADD);
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), None);
    for status in [500, 502, 503] {
        assert_eq!(post_json(e.addr(), "/engage", ADD).status, status);
    }
    assert_eq!(n(&e), None, "nothing applied so far");
    // close: no answer at all.
    let mut req = format!("POST /engage HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", ADD.len()).into_bytes();
    req.extend_from_slice(ADD.as_bytes());
    assert!(raw(e.addr(), &req).is_err(), "closed without an answer");
    assert_eq!(n(&e), None);
    // slow: the normal answer, late.
    let t = Instant::now();
    assert_eq!(post_json(e.addr(), "/engage", ADD).text(), "1");
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert_eq!(n(&e), Some(json!(1)));
    // applied-500: applied, answered 500.
    assert_eq!(post_json(e.addr(), "/engage", ADD).status, 500);
    assert_eq!(n(&e), Some(json!(2)));
    // Then normal.
    assert_eq!(post_json(e.addr(), "/engage", ADD).text(), "1");
    assert_eq!(n(&e), Some(json!(3)));
    let stats = e.stats();
    assert_eq!(stats.faults_injected, 8);
    assert_eq!(stats.requests, 9);
}

#[test]
fn a_rate_is_deterministic_under_a_seed_and_spread_over_kinds() {
    let run = |seed: u64| {
        let faults = FaultConfig {
            fail_rate: 0.5,
            kinds: vec![FaultKind::Unavailable, FaultKind::TooManyRequests],
            seed,
            ..FaultConfig::default()
        };
        let e = Emulator::start(EmulatorConfig::default().faults(faults)).unwrap();
        (0..40)
            .map(|_| post_json(e.addr(), "/engage", SET).status)
            .collect::<Vec<u16>>()
    };
    let a = run(11);
    assert_eq!(a, run(11));
    assert_ne!(a, run(12));
    let (n503, n429) = (
        a.iter().filter(|s| **s == 503).count(),
        a.iter().filter(|s| **s == 429).count(),
    );
    assert!(n503 > 5 && n429 > 5 && n503.abs_diff(n429) <= 1, "{a:?}");
}

#[test]
fn faults_change_at_run_time() {
    let e = Emulator::start(EmulatorConfig::default()).unwrap();
    assert_eq!(post_json(e.addr(), "/engage", SET).status, 200);
    let r = post_json(
        e.addr(),
        "/_emulator/faults",
        r#"{"script":["503","ok","502"]}"#,
    );
    assert_eq!(r.status, 200);
    let statuses: Vec<u16> = (0..4)
        .map(|_| post_json(e.addr(), "/engage", SET).status)
        .collect();
    assert_eq!(statuses, [503, 200, 502, 200]);
    let r = post_json(e.addr(), "/_emulator/faults", r#"{"script":["teapot"]}"#);
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().contains("teapot"));
    // The library handle does the same.
    e.set_faults(FaultConfig {
        script: vec![Some(FaultKind::InternalError)],
        ..FaultConfig::default()
    });
    assert_eq!(post_json(e.addr(), "/engage", SET).status, 500);
    assert_eq!(
        get(e.addr(), "/_emulator/faults").json()["script"],
        json!(["500"])
    );
}

#[test]
fn duplicate_batches_are_counted() {
    let e = scripted("applied-500");
    // An unsafe resend: the same $add body after it was applied.
    assert_eq!(post_json(e.addr(), "/engage", ADD).status, 500);
    assert_eq!(post_json(e.addr(), "/engage", ADD).status, 200);
    assert_eq!(n(&e), Some(json!(2)), "counted twice, as Mixpanel would");
    // A harmless resend: the same $set body twice.
    post_json(e.addr(), "/engage", SET);
    post_json(e.addr(), "/engage", SET);
    // Different bytes are not duplicates.
    post_json(e.addr(), "/engage", &ADD.replace("\"n\":1", "\"n\":5"));
    let stats = e.stats();
    assert_eq!(stats.duplicate_batches, 1);
    assert_eq!(stats.repeated_bodies, 2);
    assert_eq!(
        get(e.addr(), "/_emulator/stats").json()["duplicate_batches"],
        1
    );
    // Bodies that applied nothing are not remembered.
    let invalid = r#"[{"$token":"t","$distinct_id":"","$add":{"n":1}}]"#;
    post_json(e.addr(), "/engage", invalid);
    post_json(e.addr(), "/engage", invalid);
    assert_eq!(e.stats().duplicate_batches, 1);
}

#[test]
fn get_requests_are_told_apart_by_their_data() {
    use base64::Engine as _;
    let e = Emulator::start(EmulatorConfig::default()).unwrap();
    for n in 1..=3 {
        let body = format!(r#"[{{"$token":"t","$distinct_id":"u","$add":{{"n":{n}}}}}]"#);
        let data = base64::engine::general_purpose::STANDARD.encode(body);
        let escaped: String = form_urlencoded::byte_serialize(data.as_bytes()).collect();
        assert_eq!(
            get(e.addr(), &format!("/engage?data={escaped}")).status,
            200
        );
    }
    assert_eq!(n(&e), Some(json!(6)));
    assert_eq!(e.stats().repeated_bodies, 0);
    assert_eq!(e.stats().duplicate_batches, 0);
}
