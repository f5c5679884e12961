//! The cases. Each is generic over the [`Harness`] and panics with a message naming the
//! transport when the transport does not conform.

use std::time::{Duration, Instant};

use bytes::Bytes;
use engage_core::batch::Batch;
use engage_core::client::ClientConfig;
use engage_core::delivery::{DeliveryError, RecordOutcome, TransportErrorKind};
use engage_core::{
    BatchConfig, Endpoint, ImportConfig, ImportEvent, RetryPolicy, Target, Token, Update, batches,
};
use engage_emulator::{Emulator, EmulatorConfig, FaultConfig, FaultKind};
use serde_json::json;

use crate::chaos::{self, Ledger};
use crate::servers::{ConnectProxy, ProxyMode, Reply, ScriptedServer, TlsServer, refused_port};
use crate::{Harness, Options};

const TOKEN: &str = "conformance-token";

fn token() -> Token {
    Token::new(TOKEN).expect("token")
}

fn batch(updates: Vec<Update>) -> Batch {
    let endpoint = updates[0].endpoint();
    let mut it = batches(BatchConfig::new(token(), endpoint), updates);
    let b = it.next().expect("a batch").expect("valid");
    assert!(it.next().is_none());
    b
}

fn fast_policy() -> RetryPolicy {
    RetryPolicy::default()
        .backoff(Duration::from_millis(5), Duration::from_millis(50))
        .max_attempts(20)
        .seed(17)
}

fn emulator(config: EmulatorConfig) -> Emulator {
    Emulator::start(config.token(TOKEN)).expect("emulator")
}

fn target(base: &str) -> Target {
    Target::base_url(base).expect("base url")
}

/// Realistic input (every profile's updates spread through it, so every batch shares
/// profiles with the ones before it) over a 50 ms round trip: the requests really overlap
/// at the server, and every profile's list comes out in input order.
pub fn import_overlaps_requests_and_keeps_order<H: Harness>() {
    let e = emulator(EmulatorConfig::default().latency(Duration::from_millis(50), Duration::ZERO));
    let h = H::build(&Options::default());
    let profiles = 400u64;
    let mut rng = engage_core::rng::SplitMix64::new(23);
    let picks: Vec<u64> = (0..6000).map(|_| rng.below(profiles)).collect();
    let updates: Vec<Update> = picks
        .iter()
        .enumerate()
        .map(|(i, p)| Update::user(format!("p{p}")).append([("seq", i as i64)]))
        .collect();
    let config = ImportConfig::new(
        BatchConfig::new(token(), Endpoint::Engage).max_records(100),
        target(&e.base_url()),
    )
    .concurrency(8)
    .policy(fast_policy());
    let summary = h.import(config, updates, &mut |_| {});
    assert!(summary.all_accepted(), "{}: {summary:?}", H::NAME);
    let served = e.stats().peak_serving;
    assert!(
        served >= 6,
        "{}: at most {served} requests were served at once",
        H::NAME
    );
    for p in 0..profiles {
        let expected: Vec<i64> = picks
            .iter()
            .enumerate()
            .filter(|(_, q)| **q == p)
            .map(|(i, _)| i as i64)
            .collect();
        if expected.is_empty() {
            continue;
        }
        let got = e.profile(&format!("p{p}")).expect("profile")["seq"].clone();
        assert_eq!(got, json!(expected), "{}: p{p} in input order", H::NAME);
    }
}

/// A 200 answer; the exact request the server received: method, path, query, headers,
/// body.
pub fn accepted_batch_and_the_exact_request<H: Harness>() {
    let server = ScriptedServer::start(vec![Reply::http(
        200,
        &[("Content-Type", "application/json")],
        r#"{"error":null,"status":1}"#,
    )]);
    let h = H::build(&Options::default());
    let b = batch(vec![
        Update::user("u1").set([("name", "Zoë"), ("note", "a \"quote\"")]),
        Update::user("u2").add([("n", 1)]),
    ]);
    let report = h.deliver(b.clone(), &target(&server.base_url()), fast_policy());
    assert!(report.all_accepted(), "{}: {report:?}", H::NAME);
    let got = server.received();
    assert_eq!(got.len(), 1, "{}", H::NAME);
    let r = &got[0];
    assert_eq!(r.method, "POST", "{}", H::NAME);
    assert_eq!(r.target, "/engage?ip=0&verbose=1&strict=1", "{}", H::NAME);
    assert_eq!(
        r.header("content-type"),
        Some("application/json"),
        "{}",
        H::NAME
    );
    assert_eq!(
        r.header("user-agent"),
        Some(engage_core::exchange::USER_AGENT_VALUE),
        "{}",
        H::NAME
    );
    assert!(
        r.header("accept")
            .is_some_and(|a| a.contains("application/json")),
        "{}",
        H::NAME
    );
    assert_eq!(
        r.header("content-length"),
        Some(b.body().len().to_string().as_str()),
        "{}",
        H::NAME
    );
    assert!(
        r.header("content-encoding").is_none(),
        "{}: never compressed",
        H::NAME
    );
    assert_eq!(
        r.body,
        b.body().as_ref(),
        "{}: the body is the batch's bytes",
        H::NAME
    );
}

/// Through the emulator: accepted, and the profile holds what was sent.
pub fn emulator_applies_an_accepted_batch<H: Harness>() {
    let e = emulator(EmulatorConfig::default());
    let h = H::build(&Options::default());
    let report = h.deliver(
        batch(vec![
            Update::user("u1").set([("plan", "pro")]),
            Update::user("u1").union([("tags", ["a", "b"])]),
        ]),
        &target(&e.base_url()),
        fast_policy(),
    );
    assert!(report.all_accepted(), "{}: {report:?}", H::NAME);
    let p = e.profile("u1").expect("profile");
    assert_eq!(p["plan"], "pro");
    assert_eq!(p["tags"], json!(["a", "b"]));
    assert_eq!(p["$geo_source"], "none", "{}: ip=0 by default", H::NAME);
}

/// A 4xx/5xx comes back as a response with every header and the whole body.
pub fn every_header_and_body_of_error_answers<H: Harness>() {
    let body =
        r#"{"code":429,"error":"Project exceeded rate limits.","status":"Too Many Requests"}"#;
    let server = ScriptedServer::start(vec![Reply::http(
        429,
        &[
            ("Retry-After", "7"),
            ("X-Custom", "one"),
            ("X-Custom", "two"),
            ("Content-Type", "application/json"),
        ],
        body,
    )]);
    let h = H::build(&Options::default());
    let b = batch(vec![Update::user("u").set([("a", 1)])]);
    let response = h
        .send(target(&server.base_url()).request(&b))
        .unwrap_or_else(|e| panic!("{}: {e}", H::NAME));
    assert_eq!(response.status(), 429, "{}", H::NAME);
    assert_eq!(response.headers()["retry-after"], "7", "{}", H::NAME);
    let custom: Vec<_> = response.headers().get_all("x-custom").iter().collect();
    assert_eq!(custom, ["one", "two"], "{}: repeated headers kept", H::NAME);
    assert_eq!(response.body().as_ref(), body.as_bytes(), "{}", H::NAME);
}

/// Strict mode: the emulator rejects one record (a group `$add`, allowed through the
/// escape hatch); the report maps it to the caller's update, the others are applied.
pub fn strict_partial_rejection_maps_to_inputs<H: Harness>() {
    let e = emulator(EmulatorConfig::default());
    let h = H::build(&Options::default());
    let b = batch(vec![
        Update::group("company", "acme").set([("plan", "pro")]),
        Update::raw(json!({"$group_key": "company", "$group_id": "acme", "$add": {"seats": 1}})),
        Update::group("company", "initech").set([("plan", "free")]),
    ]);
    let report = h.deliver(b, &target(&e.base_url()), fast_policy());
    assert_eq!(report.accepted(), 2, "{}: {report:?}", H::NAME);
    let rejected: Vec<_> = report
        .records
        .iter()
        .filter(|r| matches!(r.outcome, RecordOutcome::Rejected { .. }))
        .collect();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].index, 1, "{}", H::NAME);
    match &rejected[0].outcome {
        RecordOutcome::Rejected { message, .. } => {
            assert!(message.contains("/groups"), "{message}")
        }
        _ => unreachable!(),
    }
    let groups = e.groups();
    assert_eq!(groups["company"]["acme"]["plan"], "pro");
    assert_eq!(groups["company"]["initech"]["plan"], "free");
}

/// 429 with `Retry-After: 1`, then success: one wait of about a second.
pub fn retry_after_then_success<H: Harness>() {
    let e = emulator(EmulatorConfig::default().faults(FaultConfig {
        script: vec![Some(FaultKind::TooManyRequestsRetryAfter)],
        ..FaultConfig::default()
    }));
    let h = H::build(&Options::default());
    let started = Instant::now();
    let report = h.deliver(
        batch(vec![Update::user("u").set([("a", 1)])]),
        &target(&e.base_url()),
        fast_policy(),
    );
    assert!(report.all_accepted(), "{}: {report:?}", H::NAME);
    assert_eq!((report.requests, report.throttled), (2, 1), "{}", H::NAME);
    assert_eq!(
        report.waited,
        Duration::from_secs(1),
        "{}: Retry-After overrides backoff",
        H::NAME
    );
    assert!(started.elapsed() >= Duration::from_secs(1));
}

/// 503 three times, then success.
pub fn three_503_then_success<H: Harness>() {
    let e = emulator(EmulatorConfig::default().faults(FaultConfig {
        script: vec![Some(FaultKind::Unavailable); 3],
        ..FaultConfig::default()
    }));
    let h = H::build(&Options::default());
    let report = h.deliver(
        batch(vec![Update::user("u").add([("n", 1)])]),
        &target(&e.base_url()),
        fast_policy(),
    );
    assert!(report.all_accepted(), "{}: {report:?}", H::NAME);
    assert_eq!((report.requests, report.retries), (4, 3), "{}", H::NAME);
    // 503 may have been applied: the $add resend is reported uncertain, per update.
    assert_eq!(report.uncertain(), 1, "{}", H::NAME);
    assert_eq!(e.profile("u").expect("profile")["n"], 1);
}

/// A body over the server's cap: 413, then the halves, in order.
pub fn too_large_then_split<H: Harness>() {
    let e = emulator(EmulatorConfig::default().max_body_bytes(700));
    let h = H::build(&Options::default());
    let updates: Vec<Update> = (0..14)
        .map(|i| Update::user("u").append([("seq", i)]))
        .collect();
    let b = batch(updates);
    assert!(
        b.body().len() > 700 && b.body().len() < 1400,
        "{}",
        b.body().len()
    );
    let report = h.deliver(b, &target(&e.base_url()), fast_policy());
    assert!(report.all_accepted(), "{}: {report:?}", H::NAME);
    assert_eq!(report.requests, 3, "{}", H::NAME);
    assert_eq!(
        e.profile("u").expect("profile")["seq"],
        json!((0..14).collect::<Vec<i32>>()),
        "{}: order kept",
        H::NAME
    );
}

/// A connection closed without an answer: an I/O error that may have reached the server.
pub fn closed_without_answer<H: Harness>() {
    let e = emulator(EmulatorConfig::default().faults(FaultConfig {
        script: vec![Some(FaultKind::Close)],
        ..FaultConfig::default()
    }));
    let h = H::build(&Options::default());
    let b = batch(vec![Update::user("u").set([("a", 1)])]);
    let err = h
        .send(target(&e.base_url()).request(&b))
        .expect_err("no answer");
    assert_eq!(err.kind(), TransportErrorKind::Io, "{}: {err}", H::NAME);
    assert!(err.may_have_reached_server(), "{}: {err}", H::NAME);
    // Delivery retries past it.
    e.set_faults(FaultConfig {
        script: vec![Some(FaultKind::Close)],
        ..FaultConfig::default()
    });
    let report = h.deliver(b, &target(&e.base_url()), fast_policy());
    assert!(report.all_accepted(), "{}: {report:?}", H::NAME);
    assert_eq!(report.requests, 2);
}

/// A response head cut off mid-header (`HTTP/1.1 200 OK\r\nContent-Le`, then the
/// connection closes): no answer at all, an I/O error that may have reached the server,
/// never a 200.
pub fn cut_off_head_is_an_io_error<H: Harness>() {
    let cut = Reply::RawThenClose(b"HTTP/1.1 200 OK\r\nContent-Le".to_vec());
    let server = ScriptedServer::start(vec![cut.clone()]);
    let h = H::build(&Options::default());
    let b = batch(vec![Update::user("u").add([("n", 1)])]);
    let err = h
        .send(target(&server.base_url()).request(&b))
        .expect_err("a cut-off head is no answer");
    assert_eq!(err.kind(), TransportErrorKind::Io, "{}: {err}", H::NAME);
    assert!(err.may_have_reached_server(), "{}: {err}", H::NAME);
    // Delivery retries past it, and counts the resend of the $add as uncertain.
    let server = ScriptedServer::start(vec![
        cut,
        Reply::http(200, &[], r#"{"error":null,"status":1}"#),
    ]);
    let report = h.deliver(b, &target(&server.base_url()), fast_policy());
    assert!(report.all_accepted(), "{}: {report:?}", H::NAME);
    assert_eq!(
        report.requests,
        2,
        "{}: {report:?} {:?}",
        H::NAME,
        server.received()
    );
    assert_eq!(report.uncertain(), 1, "{}", H::NAME);
}

/// A server that never answers: a timeout, and the request may have reached it.
pub fn never_answers_times_out<H: Harness>() {
    let server = ScriptedServer::start(vec![Reply::Silent]);
    let h = H::build(&Options {
        request_timeout: Duration::from_millis(300),
        ..Options::default()
    });
    let b = batch(vec![Update::user("u").set([("a", 1)])]);
    let started = Instant::now();
    let err = h
        .send(target(&server.base_url()).request(&b))
        .expect_err("no answer");
    assert_eq!(
        err.kind(),
        TransportErrorKind::Timeout,
        "{}: {err}",
        H::NAME
    );
    assert!(err.may_have_reached_server(), "{}", H::NAME);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{}: the timeout holds",
        H::NAME
    );
}

/// Nothing listening: a connect error that did not reach any server.
pub fn refused_port_is_a_connect_error<H: Harness>() {
    let addr = refused_port();
    let h = H::build(&Options::default());
    let b = batch(vec![Update::user("u").set([("a", 1)])]);
    let err = h
        .send(target(&format!("http://{addr}")).request(&b))
        .expect_err("refused");
    assert_eq!(
        err.kind(),
        TransportErrorKind::Connect,
        "{}: {err}",
        H::NAME
    );
    assert!(!err.may_have_reached_server(), "{}", H::NAME);
    // A delivery retries connect errors and reports the records not delivered at the end.
    let report = h.deliver(
        b,
        &target(&format!("http://{addr}")),
        fast_policy().max_attempts(2),
    );
    assert_eq!(report.not_delivered(), 1, "{}", H::NAME);
    assert!(matches!(
        &report.records[0].outcome,
        RecordOutcome::NotDelivered(DeliveryError::Exhausted { attempts: 2, .. })
    ));
}

/// HTTPS to a self-signed loopback server is refused by default, as a TLS error.
pub fn https_self_signed_refused_by_default<H: Harness>() {
    let server = TlsServer::start();
    let h = H::build(&Options::default());
    let b = batch(vec![Update::user("u").set([("a", 1)])]);
    let err = h
        .send(target(&server.base_url()).request(&b))
        .expect_err("untrusted");
    assert_eq!(err.kind(), TransportErrorKind::Tls, "{}: {err}", H::NAME);
    let report = h.deliver(b, &target(&server.base_url()), fast_policy());
    assert_eq!(
        report.requests,
        1,
        "{}: TLS failures are not retried",
        H::NAME
    );
    assert!(report.fatal.is_some());
}

/// … and accepted when its certificate is supplied as a root.
pub fn https_accepted_with_the_root<H: Harness>() {
    let server = TlsServer::start();
    let h = H::build(&Options {
        root_der: Some(server.cert_der().to_vec()),
        ..Options::default()
    });
    let b = batch(vec![Update::user("u").set([("a", 1)])]);
    let response = h
        .send(target(&server.base_url()).request(&b))
        .unwrap_or_else(|e| panic!("{}: {e}", H::NAME));
    assert_eq!(response.status(), 200);
    assert_eq!(response.body(), &Bytes::from_static(b"1"));
}

/// A small import with concurrency: every update accounted, the profiles in input order.
pub fn import_keeps_order_and_accounts<H: Harness>() {
    let e = emulator(EmulatorConfig::default());
    let h = H::build(&Options::default());
    let updates: Vec<Update> = (0..3000)
        .map(|i| Update::user(format!("p{}", i % 10)).append([("seq", i)]))
        .collect();
    let config = ImportConfig::new(
        BatchConfig::new(token(), Endpoint::Engage).max_records(100),
        target(&e.base_url()),
    )
    .concurrency(4)
    .policy(fast_policy());
    let mut ledger = Ledger::default();
    let summary = h.import(config, updates, &mut |ev| ledger.record(ev));
    assert_eq!(
        (summary.records, summary.accepted),
        (3000, 3000),
        "{}: {summary:?}",
        H::NAME
    );
    assert_eq!(ledger.outcomes.len(), 3000);
    assert!(ledger.duplicates.is_empty());
    for p in 0..10 {
        let seq = e.profile(&format!("p{p}")).expect("profile")["seq"].clone();
        let expected: Vec<i64> = (0..3000).filter(|i| i % 10 == p).collect();
        assert_eq!(seq, json!(expected), "{}: p{p} in input order", H::NAME);
    }
}

fn chaos<H: Harness>(at_most_once: bool) {
    const N: usize = 100_000;
    let faults = FaultConfig {
        fail_rate: 0.2,
        kinds: FaultKind::ALL.to_vec(),
        seed: 2026,
        // Shorter than the client's timeout: a slow answer arrives; timeouts have their own case.
        slow_ms: 100,
        ..FaultConfig::default()
    };
    let e = emulator(EmulatorConfig::default().faults(faults));
    let h = H::build(&Options {
        request_timeout: Duration::from_secs(20),
        ..Options::default()
    });
    // 10 updates per profile on average.
    let updates = chaos::updates(N, 10_000, 7);
    let config = ImportConfig::new(
        BatchConfig::new(token(), Endpoint::Engage).max_records(1000),
        target(&e.base_url()),
    )
    .concurrency(4)
    .policy(fast_policy().at_most_once(at_most_once));
    let mut ledger = Ledger::default();
    let mut invalid = Vec::new();
    let summary = h.import(config, updates.clone(), &mut |ev| {
        if let ImportEvent::Invalid(err) = &ev {
            invalid.push(err.to_string());
        }
        ledger.record(ev);
    });
    assert!(invalid.is_empty(), "{}: {invalid:?}", H::NAME);
    assert!(
        ledger.duplicates.is_empty(),
        "{}: accounted twice: {:?}",
        H::NAME,
        &ledger.duplicates[..ledger.duplicates.len().min(10)]
    );
    assert_eq!(
        ledger.outcomes.len(),
        N,
        "{}: every update accounted for",
        H::NAME
    );
    assert_eq!(summary.records as usize, N);
    assert_eq!(summary.settled() as usize, N, "{}: {summary:?}", H::NAME);
    let stats = e.stats();
    assert!(
        stats.faults_injected > 10,
        "{}: faults were injected: {stats:?}",
        H::NAME
    );
    if at_most_once {
        assert_eq!(stats.duplicate_batches, 0, "{}: {stats:?}", H::NAME);
        assert_eq!(ledger.count("uncertain"), 0);
    } else {
        assert_eq!(ledger.count("not-delivered"), 0, "{}: {summary:?}", H::NAME);
        assert_eq!(ledger.count("accepted") + ledger.count("uncertain"), N);
    }
    let compared = chaos::compare(&updates, &ledger, &e.profiles())
        .unwrap_or_else(|m| panic!("{}: {m}", H::NAME));
    eprintln!(
        "{}: chaos (at-most-once {at_most_once}): {compared} profiles compared, {} uncertain, {} not delivered, {stats:?}",
        H::NAME,
        ledger.count("uncertain"),
        ledger.count("not-delivered")
    );
    assert!(
        compared > 3000,
        "{}: only {compared} profiles could be compared",
        H::NAME
    );
}

/// 100,000 mixed updates at concurrency 4 through 20% faults of every kind: the final
/// profiles equal the input applied in order (except where the report lists uncertain
/// resends), and every update is accounted for exactly once.
pub fn chaos_at_least_once<H: Harness>() {
    chaos::<H>(false);
}

/// The same with at-most-once: no unsafe resend reaches the emulator.
pub fn chaos_at_most_once<H: Harness>() {
    chaos::<H>(true);
}

/// The application client: 8 producer threads × 10,000 updates each (users and groups),
/// 10% of requests failing (none of them applied), a 20 ms linger: every update accepted
/// once, and each profile's list in its producer's order.
pub fn client_many_producers_keep_their_order_under_faults<H: Harness>() {
    const PRODUCERS: u64 = 8;
    const EACH: u64 = 10_000;
    let e = emulator(EmulatorConfig::default().faults(FaultConfig {
        fail_rate: 0.1,
        kinds: vec![
            FaultKind::Unavailable,
            FaultKind::InternalError,
            FaultKind::BadGateway,
            FaultKind::Close,
        ],
        seed: 12,
        ..FaultConfig::default()
    }));
    let h = H::build(&Options::default());
    let client = h.client(
        ClientConfig::new(token(), target(&e.base_url()))
            .linger(Duration::from_millis(20))
            .queue(2_000)
            .policy(fast_policy()),
    );
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let client = client.clone();
            std::thread::spawn(move || {
                for i in 0..EACH {
                    let update = if i % 10 == 9 {
                        Update::group("team", format!("t{p}")).union([("seen", [i as i64])])
                    } else {
                        Update::user(format!("p{p}-{}", i % 25)).append([("seq", i as i64)])
                    };
                    client.send_blocking(update).expect("taken");
                }
            })
        })
        .collect();
    for p in producers {
        p.join().expect("producer");
    }
    let summary = client.shutdown_blocking(Duration::from_secs(60));
    assert_eq!(summary.sent, PRODUCERS * EACH, "{}: {summary:?}", H::NAME);
    // 5xx and closed connections are ambiguous to a client: resent $append updates are
    // counted uncertain, though this emulator applied nothing on those faults (the exact
    // lists below show it).
    assert_eq!(
        (summary.accepted, summary.settled()),
        (PRODUCERS * EACH, PRODUCERS * EACH),
        "{}: {summary:?}",
        H::NAME
    );
    assert!(e.stats().faults_injected > 0, "{}", H::NAME);
    for p in 0..PRODUCERS {
        for k in 0..25 {
            let expected: Vec<i64> = (0..EACH as i64)
                .filter(|i| i % 10 != 9 && i % 25 == k)
                .collect();
            let got = e.profile(&format!("p{p}-{k}")).expect("profile")["seq"].clone();
            assert_eq!(
                got,
                json!(expected),
                "{}: p{p}-{k} in its producer's order",
                H::NAME
            );
        }
        let groups = e.groups();
        let seen = groups["team"][&format!("t{p}")]["seen"].clone();
        let expected: Vec<i64> = (0..EACH as i64).filter(|i| i % 10 == 9).collect();
        assert_eq!(seen, json!(expected), "{}: group t{p}", H::NAME);
    }
}

/// A shutdown while every request is answered 429 returns by its deadline, with every
/// update accounted for.
pub fn client_shutdown_in_a_429_storm_returns_by_its_deadline<H: Harness>() {
    let e = emulator(EmulatorConfig::default().faults(FaultConfig {
        fail_rate: 1.0,
        kinds: vec![FaultKind::TooManyRequests],
        ..FaultConfig::default()
    }));
    let h = H::build(&Options::default());
    let client = h.client(
        ClientConfig::new(token(), target(&e.base_url()))
            .linger(Duration::ZERO)
            .policy(fast_policy().max_attempts(1000)),
    );
    for i in 0..500 {
        client
            .send_blocking(Update::user(format!("u{i}")).add([("n", 1)]))
            .expect("taken");
    }
    let started = Instant::now();
    let summary = client.shutdown_blocking(Duration::from_secs(1));
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "{}: the shutdown took {took:?} for a 1 s deadline",
        H::NAME
    );
    assert_eq!(summary.sent, 500, "{}", H::NAME);
    assert_eq!(summary.settled(), 500, "{}: {summary:?}", H::NAME);
    assert_eq!(summary.accepted, 0, "{}", H::NAME);
    assert!(summary.throttled > 0, "{}", H::NAME);
}

/// With a slow server and a small queue, `try_send` hands the update back when the queue
/// is full; nothing is lost.
pub fn client_full_queue_hands_the_update_back<H: Harness>() {
    let e = emulator(EmulatorConfig::default().latency(Duration::from_millis(300), Duration::ZERO));
    let h = H::build(&Options::default());
    let client = h.client(
        ClientConfig::new(token(), target(&e.base_url()))
            .linger(Duration::ZERO)
            .queue(5)
            .concurrency(1)
            .max_records(1),
    );
    let mut taken = 0;
    let mut full = None;
    for i in 0..100 {
        match client.try_send(Update::user(format!("u{i}")).set([("i", i)])) {
            Ok(_) => taken += 1,
            Err(engage_core::client::TrySendError::Full(u)) => {
                full = Some(u);
                break;
            }
            Err(other) => panic!("{}: {other}", H::NAME),
        }
    }
    let back = full.unwrap_or_else(|| panic!("{}: the queue never filled", H::NAME));
    assert!(back.profile().is_some());
    let summary = client.shutdown_blocking(Duration::from_secs(30));
    assert_eq!(
        (summary.sent, summary.accepted),
        (taken, taken),
        "{}",
        H::NAME
    );
}

fn via(proxy: String, root: Option<&[u8]>) -> Options {
    Options {
        root_der: root.map(<[u8]>::to_vec),
        proxy: engage_core::delivery::Proxy::url(proxy),
        ..Options::default()
    }
}

/// HTTPS through a CONNECT proxy to the emulator behind TLS: an import arrives whole, the
/// proxy saw one tunnel per connection to the right place, and TLS was checked end to
/// end (the test root is needed).
pub fn https_import_through_a_connect_proxy<H: Harness>() {
    let e = emulator(EmulatorConfig::default());
    let front = TlsServer::in_front_of(e.addr());
    let proxy = ConnectProxy::start(ProxyMode::Open);
    let h = H::build(&via(proxy.url(), Some(front.cert_der())));
    let updates: Vec<Update> = (0..300)
        .map(|i| Update::user(format!("u{}", i % 30)).add([("n", 1)]))
        .collect();
    let config = ImportConfig::new(
        BatchConfig::new(token(), Endpoint::Engage).max_records(50),
        target(&front.base_url()),
    )
    .policy(fast_policy())
    .concurrency(3);
    let summary = h.import(config, updates, &mut |_| {});
    assert!(summary.all_accepted(), "{}: {summary:?}", H::NAME);
    assert_eq!(e.profile("u7").expect("profile")["n"], 10, "{}", H::NAME);
    let seen = proxy.seen();
    assert!(
        !seen.is_empty(),
        "{}: nothing went through the proxy",
        H::NAME
    );
    let authority = front.base_url().trim_start_matches("https://").to_owned();
    for r in &seen {
        assert_eq!(
            (r.method.as_str(), r.target.as_str()),
            ("CONNECT", authority.as_str()),
            "{}",
            H::NAME
        );
        assert_eq!(r.authorization, None, "{}", H::NAME);
    }
    // Without the test root, TLS through the tunnel is refused as TLS, not as the proxy.
    let h = H::build(&via(proxy.url(), None));
    let err = h
        .send(target(&front.base_url()).request(&batch(vec![Update::user("u").set([("a", 1)])])))
        .expect_err("untrusted");
    assert_eq!(err.kind(), TransportErrorKind::Tls, "{}: {err}", H::NAME);
}

/// A proxy that wants credentials: refused without them (a proxy error, not retried,
/// nothing delivered, the reason said), accepted with them; the password never appears
/// in an error.
pub fn proxy_credentials_are_sent_and_never_shown<H: Harness>() {
    let e = emulator(EmulatorConfig::default());
    let front = TlsServer::in_front_of(e.addr());
    let proxy = ConnectProxy::start(ProxyMode::RequireBasic("ann".into(), "s3cret-pw".into()));
    let b = || batch(vec![Update::user("u1").set([("plan", "pro")])]);
    let h = H::build(&via(proxy.url(), Some(front.cert_der())));
    let err = h
        .send(target(&front.base_url()).request(&b()))
        .expect_err("407");
    assert_eq!(err.kind(), TransportErrorKind::Proxy, "{}: {err}", H::NAME);
    assert!(err.message().contains("407"), "{}: {err}", H::NAME);
    let report = h.deliver(b(), &target(&front.base_url()), fast_policy());
    assert_eq!(
        report.requests,
        1,
        "{}: a refused tunnel is not retried",
        H::NAME
    );
    assert!(
        matches!(report.fatal, Some(DeliveryError::Transport(ref t)) if t.kind() == TransportErrorKind::Proxy),
        "{}: {:?}",
        H::NAME,
        report.fatal
    );
    assert!(
        matches!(report.records[0].outcome, RecordOutcome::NotDelivered(_)),
        "{}",
        H::NAME
    );
    assert!(e.profile("u1").is_none(), "{}", H::NAME);

    let wrong = H::build(&via(
        proxy.url_with("ann", "wrong-pw"),
        Some(front.cert_der()),
    ));
    let err = wrong
        .send(target(&front.base_url()).request(&b()))
        .expect_err("407");
    assert!(
        err.message().contains("refused the credentials"),
        "{}: {err}",
        H::NAME
    );
    assert!(
        !format!("{err} {err:?}").contains("wrong-pw"),
        "{}: {err:?}",
        H::NAME
    );

    let h = H::build(&via(
        proxy.url_with("ann", "s3cret-pw"),
        Some(front.cert_der()),
    ));
    let report = h.deliver(b(), &target(&front.base_url()), fast_policy());
    assert!(report.all_accepted(), "{}: {report:?}", H::NAME);
    assert_eq!(e.profile("u1").expect("profile")["plan"], "pro");
    let last = proxy.seen().pop().expect("asked");
    assert_eq!(last.answered, 200);
    assert_eq!(
        last.authorization.as_deref(),
        Some("Basic YW5uOnMzY3JldC1wdw==")
    );
}

/// A proxy that refuses by policy: a proxy error naming the proxy and its status, not
/// retried, nothing delivered.
pub fn a_refusing_proxy_is_a_clear_error<H: Harness>() {
    let proxy = ConnectProxy::start(ProxyMode::Refuse(403));
    let h = H::build(&via(proxy.url(), None));
    let t = target("https://127.0.0.1:9");
    let err = h
        .send(t.request(&batch(vec![Update::user("u").set([("a", 1)])])))
        .expect_err("403");
    assert_eq!(err.kind(), TransportErrorKind::Proxy, "{}: {err}", H::NAME);
    assert!(
        err.message().contains(&format!(
            "proxy {} refused the tunnel (HTTP 403",
            proxy.url()
        )),
        "{}: {err}",
        H::NAME
    );
    assert!(!err.may_have_reached_server(), "{}", H::NAME);
    let report = h.deliver(
        batch(vec![Update::user("u").set([("a", 1)])]),
        &t,
        fast_policy(),
    );
    assert_eq!(report.requests, 1, "{}", H::NAME);
    assert!(report.fatal.is_some(), "{}", H::NAME);
}

/// Plain HTTP through a proxy: the request goes to the proxy in absolute form with the
/// credentials, and arrives.
pub fn http_through_a_proxy_in_absolute_form<H: Harness>() {
    let e = emulator(EmulatorConfig::default());
    let proxy = ConnectProxy::start(ProxyMode::RequireBasic("ann".into(), "pw".into()));
    let h = H::build(&via(proxy.url_with("ann", "pw"), None));
    let report = h.deliver(
        batch(vec![Update::user("u1").set([("plan", "pro")])]),
        &target(&e.base_url()),
        fast_policy(),
    );
    assert!(report.all_accepted(), "{}: {report:?}", H::NAME);
    assert_eq!(e.profile("u1").expect("profile")["plan"], "pro");
    let first = &proxy.seen()[0];
    assert_eq!(first.method, "POST", "{}", H::NAME);
    assert!(
        first
            .target
            .starts_with(&format!("{}/engage", e.base_url())),
        "{}: {}",
        H::NAME,
        first.target
    );
    assert_eq!(first.answered, 200, "{}", H::NAME);
}
