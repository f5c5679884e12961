//! A round trip and a rate cap: latency that is not a fault, 429s that are not faults,
//! and the count of requests served at once.

mod common;

use std::time::{Duration, Instant};

use common::post_json;
use engage_emulator::{Emulator, EmulatorConfig};
use serde_json::json;

fn body(token: &str, n: usize) -> String {
    let records: Vec<_> = (0..n)
        .map(|i| json!({"$token": token, "$distinct_id": format!("u{i}"), "$set": {"x": i}}))
        .collect();
    serde_json::to_string(&records).unwrap()
}

#[test]
fn requests_wait_the_latency_and_are_counted_while_served() {
    let e = Emulator::start(
        EmulatorConfig::default().latency(Duration::from_millis(300), Duration::ZERO),
    )
    .unwrap();
    let addr = e.addr();
    let started = Instant::now();
    let clients: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(move || post_json(addr, "/engage", &body("t", 3))))
        .collect();
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(e.stats().serving, 4, "all four are being served at once");
    for c in clients {
        assert_eq!(c.join().unwrap().status, 200);
    }
    assert!(started.elapsed() >= Duration::from_millis(300));
    let s = e.stats();
    assert_eq!((s.serving, s.peak_serving, s.faults_injected), (0, 4, 0));
    assert_eq!(s.accepted, 12);
}

#[test]
fn a_project_over_its_rate_gets_429_without_retry_after_and_nothing_applied() {
    // 0.6 MB a minute: 10 kB a second, and a 64 kB body cap (the bucket holds that much).
    let e = Emulator::start(
        EmulatorConfig::default()
            .rate_limit(600_000)
            .max_body_bytes(64 * 1024),
    )
    .unwrap();
    let big = body("a", 1000); // ~53 kB
    assert_eq!(post_json(e.addr(), "/engage", &big).status, 200);
    let r = post_json(e.addr(), "/engage", &big);
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.header("retry-after"), None);
    assert_eq!(
        r.json(),
        json!({"code": 429, "error": "Project exceeded rate limits. Please retry the request with exponential backoff.", "status": "Too Many Requests"})
    );
    // Another project has its own allowance.
    assert_eq!(post_json(e.addr(), "/engage", &body("b", 1000)).status, 200);
    let s = e.stats();
    assert_eq!((s.rate_limited, s.faults_injected), (1, 0));
    assert_eq!(s.accepted, 2000, "the refused body applied nothing");
}
