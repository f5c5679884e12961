//! The import scheduler: ordering per profile, the global 429 pause, bounded memory and
//! accounting. Driven by hand on simulated time, and by the drivers.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use engage_core::delivery::{DeliveryError, ImportAction, Importer, RequestId};
use engage_core::driver::{Clock, ManualClock, import, import_blocking, run_inline};
use engage_core::exchange::FatalKind;
use engage_core::{
    BatchConfig, Endpoint, ImportConfig, ImportEvent, RetryPolicy, Target, Token, TransportError,
    Update,
};

fn token() -> Token {
    Token::new("tok").unwrap()
}

fn config(max_records: usize, concurrency: usize) -> ImportConfig {
    ImportConfig::new(
        BatchConfig::new(token(), Endpoint::Engage).max_records(max_records),
        Target::base_url("http://127.0.0.1:9").unwrap(),
    )
    .concurrency(concurrency)
    .policy(RetryPolicy::default().seed(3))
}

fn answer(status: u16, body: &str, headers: &[(&str, &str)]) -> http::Response<Bytes> {
    let mut r = http::Response::new(Bytes::from(body.to_owned()));
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
    for (k, v) in headers {
        r.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    r
}

fn ids(req: &http::Request<Bytes>) -> Vec<String> {
    let v: Vec<serde_json::Value> = serde_json::from_slice(req.body()).unwrap();
    v.iter()
        .map(|r| r["$distinct_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Three one-record batches; the first two are sent, the first answered 429 with
/// `Retry-After: retry_after`. Returns the importer, the second request and the start time.
fn first_of_two_throttled(
    policy: RetryPolicy,
    retry_after: &str,
) -> (Importer, RequestId, ManualClock, std::time::Instant) {
    let mut imp = Importer::new(config(1, 3).policy(policy));
    for id in ["a", "b", "c"] {
        imp.push(Update::user(id).set([("x", 1)]));
    }
    imp.finish_input();
    let clock = ManualClock::new();
    let t0 = clock.now();
    let ImportAction::Send { id: a, .. } = imp.poll(t0) else {
        panic!()
    };
    let ImportAction::Send { id: b, .. } = imp.poll(t0) else {
        panic!()
    };
    imp.on_result(
        a,
        t0,
        clock.wall(),
        Ok(answer(429, "{}", &[("retry-after", retry_after)])),
    );
    (imp, b, clock, t0)
}

#[test]
fn a_429_pauses_every_new_send() {
    let (mut imp, b, clock, t0) = first_of_two_throttled(RetryPolicy::default().seed(3), "5");
    // c has not been sent yet and must wait for the pause.
    let ImportAction::Wait { until: Some(until) } = imp.poll(t0) else {
        panic!()
    };
    assert_eq!(until - t0, Duration::from_secs(5));
    imp.on_result(b, t0, clock.wall(), Ok(answer(200, "1", &[])));
    assert!(matches!(
        imp.poll(t0 + Duration::from_secs(4)),
        ImportAction::Wait { .. }
    ));
    let t5 = t0 + Duration::from_secs(5);
    let mut sent = Vec::new();
    while let ImportAction::Send { id, request } = imp.poll(t5) {
        sent.push((id, ids(&request)));
    }
    let mut who: Vec<String> = sent.iter().flat_map(|s| s.1.clone()).collect();
    who.sort();
    assert_eq!(who, ["a", "c"]);
    for (id, _) in sent {
        imp.on_result(id, t5, clock.wall(), Ok(answer(200, "1", &[])));
    }
    assert!(matches!(imp.poll(t5), ImportAction::Done));
    let s = imp.summary();
    assert_eq!(
        (s.records, s.accepted, s.throttled, s.requests),
        (3, 3, 1, 4)
    );
}

#[test]
fn a_profile_waits_for_its_own_batch_while_other_lanes_go() {
    let mut imp = Importer::new(config(2, 4));
    // Lanes fill with new profiles two at a time: [a1,b1] [c1,d1] [e1,f1] [g1]; a2
    // follows a1 into a's lane, behind [a1,b1].
    for (id, n) in [
        ("a", 1),
        ("b", 1),
        ("c", 1),
        ("d", 1),
        ("a", 2),
        ("e", 1),
        ("f", 1),
        ("g", 1),
    ] {
        imp.push(Update::user(id).set([("n", n)]));
    }
    imp.finish_input();
    let clock = ManualClock::new();
    let t = clock.now();
    let mut out = Vec::new();
    while let ImportAction::Send { id, request } = imp.poll(t) {
        out.push((id, ids(&request)));
    }
    let sent: Vec<Vec<String>> = out.iter().map(|o| o.1.clone()).collect();
    assert_eq!(
        sent,
        [vec!["a", "b"], vec!["c", "d"], vec!["e", "f"], vec!["g"]]
    );
    imp.on_result(out[0].0, t, clock.wall(), Ok(answer(200, "1", &[])));
    let ImportAction::Send { request, .. } = imp.poll(t) else {
        panic!()
    };
    assert_eq!(ids(&request), ["a"]);
}

#[test]
fn input_is_read_only_as_far_as_the_buffer_allows() {
    let mut imp = Importer::new(config(10, 2).buffer_bytes(4096));
    let clock = ManualClock::new();
    let mut pushed = 0;
    let mut sent = Vec::new();
    // Nothing is ever answered: what is read stays bounded by the buffer and the two
    // requests in flight, not by the 10,000 updates offered.
    for _ in 0..1000 {
        while imp.wants_input() && pushed < 10_000 {
            imp.push(Update::user(format!("u{pushed}")).set([("x", 1)]));
            pushed += 1;
        }
        while let ImportAction::Send { id, .. } = imp.poll(clock.now()) {
            sent.push(id);
        }
    }
    assert_eq!(sent.len(), 2);
    assert!(pushed < 120, "read {pushed} updates");
    assert!(!imp.wants_input());
    // An answer frees a slot: the next batch goes, and reading resumes.
    imp.on_result(
        sent[0],
        clock.now(),
        clock.wall(),
        Ok(answer(200, "1", &[])),
    );
    assert!(matches!(imp.poll(clock.now()), ImportAction::Send { .. }));
    assert!(imp.wants_input());
}

#[test]
fn a_401_stops_sending_and_accounts_for_everything() {
    let cfg = config(5, 2);
    let clock = ManualClock::new();
    let requests = Mutex::new(0);
    let mut invalid = 0;
    let mut delivered = 0;
    let updates = (0..100u64).map(|i| {
        if i == 7 {
            Update::user("").set([("x", 1)])
        } else {
            Update::user(format!("u{i}")).set([("x", 1)])
        }
    });
    let summary = block_on(import(
        cfg,
        updates,
        &clock,
        |_req| {
            *requests.lock().unwrap() += 1;
            std::future::ready(Ok(answer(
                401,
                r#"{"error":"Invalid token","status":"error"}"#,
                &[],
            )))
        },
        |d| {
            clock.advance(d);
            std::future::ready(())
        },
        |e| match e {
            ImportEvent::Invalid(_) => invalid += 1,
            ImportEvent::Delivered(r) => delivered += r.records.len(),
            _ => {}
        },
    ));
    assert!(
        *requests.lock().unwrap() <= 2,
        "stops after the first refusals"
    );
    assert_eq!(invalid, 1);
    assert_eq!(delivered, 99);
    assert_eq!(summary.records, 100);
    assert_eq!(summary.not_delivered, 99);
    assert_eq!(summary.settled(), 100);
    assert!(matches!(
        summary.fatal,
        Some(DeliveryError::Refused {
            kind: FatalKind::Unauthorized,
            ..
        })
    ));
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

/// Real threads, a server stand-in that answers 503 now and then: no two requests in
/// flight share a profile, each profile's updates arrive in input order, every update is
/// accounted for once.
#[test]
fn blocking_import_keeps_per_profile_order_under_retries() {
    let in_flight: Mutex<HashSet<String>> = Mutex::new(HashSet::new());
    let arrived: Mutex<HashMap<String, Vec<i64>>> = Mutex::new(HashMap::new());
    let counter = Mutex::new(0u64);
    let cfg = config(7, 4).policy(
        RetryPolicy::default()
            .backoff(Duration::from_millis(1), Duration::from_millis(2))
            .seed(5),
    );
    let updates =
        (0..600i64).map(|i| Update::user(format!("p{}", (i * 7919) % 23)).set([("seq", i)]));
    let mut events = 0usize;
    let summary = import_blocking(
        cfg,
        updates,
        || {
            |req: http::Request<Bytes>| {
                let records: Vec<serde_json::Value> = serde_json::from_slice(req.body()).unwrap();
                let profiles: HashSet<String> = records
                    .iter()
                    .map(|r| r["$distinct_id"].as_str().unwrap().to_owned())
                    .collect();
                {
                    let mut busy = in_flight.lock().unwrap();
                    for p in &profiles {
                        assert!(busy.insert(p.clone()), "{p} in two requests at once");
                    }
                }
                std::thread::sleep(Duration::from_micros(300));
                let fail = {
                    let mut c = counter.lock().unwrap();
                    *c += 1;
                    (*c).is_multiple_of(5)
                };
                if !fail {
                    let mut a = arrived.lock().unwrap();
                    for r in &records {
                        a.entry(r["$distinct_id"].as_str().unwrap().to_owned())
                            .or_default()
                            .push(r["$set"]["seq"].as_i64().unwrap());
                    }
                }
                let mut busy = in_flight.lock().unwrap();
                for p in &profiles {
                    busy.remove(p);
                }
                Ok(if fail {
                    answer(503, "", &[])
                } else {
                    answer(200, "1", &[])
                })
            }
        },
        |e| {
            if let ImportEvent::Delivered(r) = e {
                events += r.records.len();
            }
        },
    );
    assert_eq!(summary.records, 600);
    assert_eq!(summary.accepted, 600);
    assert_eq!(events, 600);
    assert!(summary.retries > 0);
    for (p, seqs) in arrived.into_inner().unwrap() {
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{p}: {seqs:?}");
    }
}

/// The calling thread alone: every third request answered 503 is sent again after its
/// pause, answers come back before more input is read, and every update is accounted for.
#[test]
fn inline_import_retries_and_accounts_for_every_update() {
    let cfg = config(10, 1).policy(
        RetryPolicy::default()
            .backoff(Duration::from_millis(1), Duration::from_millis(2))
            .seed(9),
    );
    let mut arrived: HashMap<String, Vec<i64>> = HashMap::new();
    let mut sent = 0u64;
    let mut delivered = 0usize;
    let mut feed = engage_core::delivery::FeedFrom {
        source: (0..95i64).map(|i| Update::user(format!("p{}", i % 7)).set([("seq", i)])),
        on_event: |e| {
            if let ImportEvent::Delivered(r) = e {
                delivered += r.records.len();
            }
        },
    };
    let summary = run_inline(cfg, &mut feed, |req| {
        sent += 1;
        if sent.is_multiple_of(3) {
            return Ok(answer(503, "", &[]));
        }
        let records: Vec<serde_json::Value> = serde_json::from_slice(req.body()).unwrap();
        for r in &records {
            arrived
                .entry(r["$distinct_id"].as_str().unwrap().to_owned())
                .or_default()
                .push(r["$set"]["seq"].as_i64().unwrap());
        }
        Ok(answer(200, "1", &[]))
    });
    assert_eq!((summary.records, summary.accepted), (95, 95));
    assert_eq!(delivered, 95);
    assert_eq!(summary.requests, sent);
    assert_eq!(summary.retries, sent - 10, "ten bodies, the rest resends");
    assert!(summary.retries >= 4);
    assert_eq!(arrived.values().map(Vec::len).sum::<usize>(), 95);
    for (p, seqs) in arrived {
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{p}: {seqs:?}");
    }
}

#[test]
fn a_zero_concurrency_field_still_imports() {
    let mut cfg = config(10, 1);
    cfg.concurrency = engage_core::delivery::Concurrency::Fixed(0);
    let clock = ManualClock::new();
    let summary = block_on(import(
        cfg,
        (0..25).map(|i| Update::user(format!("u{i}")).set([("x", 1)])),
        &clock,
        |_req| std::future::ready(Ok(answer(200, "1", &[]))),
        |d| {
            clock.advance(d);
            std::future::ready(())
        },
        |_| {},
    ));
    assert_eq!(summary.accepted, 25);
}

#[test]
fn a_panicking_send_is_a_transport_error_not_a_hang() {
    let cfg = config(5, 2).policy(RetryPolicy::default().max_attempts(1));
    let summary = import_blocking(
        cfg,
        (0..10).map(|i| Update::user(format!("u{i}")).set([("x", 1)])),
        || {
            |_req: http::Request<Bytes>| -> Result<http::Response<Bytes>, TransportError> {
                panic!("boom")
            }
        },
        |_| {},
    );
    assert_eq!(summary.not_delivered, 10);
}

#[test]
fn updates_pushed_after_finish_are_still_sent() {
    let mut imp = Importer::new(config(10, 1));
    imp.push(Update::user("a").set([("x", 1)]));
    imp.finish_input();
    imp.push(Update::user("b").set([("x", 1)]));
    let clock = ManualClock::new();
    let mut sent = 0;
    loop {
        match imp.poll(clock.now()) {
            ImportAction::Send { id, .. } => {
                sent += 1;
                imp.on_result(id, clock.now(), clock.wall(), Ok(answer(200, "1", &[])));
            }
            ImportAction::Done => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(sent, 2);
    assert_eq!(imp.summary().accepted, 2);
}

#[test]
fn a_429_on_a_last_attempt_still_pauses_the_others() {
    let (mut imp, _b, _clock, t0) =
        first_of_two_throttled(RetryPolicy::default().max_attempts(1), "4");
    // a is given up (one attempt), but c must still wait out the pause.
    let ImportAction::Wait { until: Some(until) } = imp.poll(t0) else {
        panic!()
    };
    assert_eq!(until - t0, Duration::from_secs(4));
}

#[test]
fn the_policys_retry_after_limit_caps_the_import_pause_and_the_request_is_reported() {
    let policy = RetryPolicy::default()
        .seed(3)
        .max_retry_after(Duration::from_secs(30));
    let (mut imp, _b, _clock, t0) = first_of_two_throttled(policy, "999999");
    let ImportAction::Wait { until: Some(until) } = imp.poll(t0) else {
        panic!()
    };
    assert_eq!(until - t0, Duration::from_secs(30));
    let throttled: Vec<(Option<Duration>, Duration)> = std::iter::from_fn(|| imp.next_event())
        .filter_map(|e| match e {
            ImportEvent::Throttled { requested, pause } => Some((requested, pause)),
            _ => None,
        })
        .collect();
    assert_eq!(
        throttled,
        [(Some(Duration::from_secs(999_999)), Duration::from_secs(30))]
    );
    // Without Retry-After, the pause is the policy's first backoff delay.
    let policy = RetryPolicy::default()
        .seed(3)
        .backoff(Duration::from_millis(700), Duration::from_secs(5));
    let mut imp = Importer::new(config(1, 3).policy(policy.max_attempts(1)));
    imp.push(Update::user("a").set([("x", 1)]));
    imp.push(Update::user("b").set([("x", 1)]));
    imp.finish_input();
    let clock = ManualClock::new();
    let t0 = clock.now();
    let ImportAction::Send { id, .. } = imp.poll(t0) else {
        panic!()
    };
    imp.on_result(id, t0, clock.wall(), Ok(answer(429, "{}", &[])));
    let ImportAction::Wait { until: Some(until) } = imp.poll(t0) else {
        panic!()
    };
    assert_eq!(until - t0, Duration::from_millis(700));
}
