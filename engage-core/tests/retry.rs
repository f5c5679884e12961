//! The retry state machine and the drivers, on simulated time: no real sleeps.

use std::time::Duration;

use bytes::Bytes;
use engage_core::batch::{Batch, Batcher};
use engage_core::delivery::{
    Action, Delivery, DeliveryError, LastFailure, RecordOutcome, Report, TransportErrorKind,
};
use engage_core::driver::{Clock, ManualClock, deliver, deliver_blocking};
use engage_core::exchange::FatalKind;
use engage_core::model::ProfileId;
use engage_core::{
    BatchConfig, Endpoint, RetryPolicy, Target, Token, TransportError, Update, batches,
};

fn token() -> Token {
    Token::new("tok").unwrap()
}

fn batch_of(updates: Vec<Update>) -> Batch {
    let mut it = batches(BatchConfig::new(token(), Endpoint::Engage), updates);
    let b = it.next().unwrap().unwrap();
    assert!(it.next().is_none());
    b
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

type Script = Vec<Result<http::Response<Bytes>, TransportError>>;

/// Runs a delivery against a script of answers on a manual clock; returns the report, the
/// bodies sent, and every wait.
fn run(batch: Batch, policy: RetryPolicy, script: Script) -> (Report, Vec<Bytes>, Vec<Duration>) {
    let clock = ManualClock::new();
    let mut script = script.into_iter();
    let mut sent = Vec::new();
    let mut waits = Vec::new();
    let report = deliver_blocking(
        Delivery::new(
            batch,
            Target::base_url("http://127.0.0.1:1").unwrap(),
            policy,
        ),
        &clock,
        |req| {
            sent.push(req.body().clone());
            script
                .next()
                .expect("the script ran out: unexpected extra request")
        },
        |d| {
            waits.push(d);
            clock.advance(d);
        },
    );
    assert!(
        script.next().is_none(),
        "not every scripted answer was used"
    );
    (report, sent, waits)
}

fn ok() -> Result<http::Response<Bytes>, TransportError> {
    Ok(answer(200, r#"{"status":1,"error":null}"#, &[]))
}

#[test]
fn retry_after_seven_then_ok_waits_exactly_seven_seconds() {
    let batch = batch_of(vec![Update::user("u").set([("a", 1)])]);
    let (report, sent, waits) = run(
        batch.clone(),
        RetryPolicy::default(),
        vec![
            Ok(answer(
                429,
                r#"{"code":429,"error":"Project exceeded rate limits.","status":"Too Many Requests"}"#,
                &[("retry-after", "7")],
            )),
            ok(),
        ],
    );
    assert_eq!(waits, [Duration::from_secs(7)]);
    assert!(report.all_accepted());
    assert_eq!(
        (report.requests, report.retries, report.throttled),
        (2, 1, 1)
    );
    // Every attempt sends exactly the batch's bytes: encoded once, never again.
    assert!(sent.iter().all(|b| b == batch.body()));
    assert!(sent.iter().all(|b| b.as_ptr() == batch.body().as_ptr()));
}

#[test]
fn retry_after_as_http_date() {
    let clock = ManualClock::new();
    let at = httpdate::fmt_http_date(clock.wall() + Duration::from_secs(12));
    let (report, _, waits) = run(
        batch_of(vec![Update::user("u").set([("a", 1)])]),
        RetryPolicy::default(),
        vec![Ok(answer(503, "busy", &[("retry-after", &at)])), ok()],
    );
    assert_eq!(waits, [Duration::from_secs(12)]);
    assert!(report.all_accepted());
}

#[test]
fn retry_after_is_capped() {
    let (_, _, waits) = run(
        batch_of(vec![Update::user("u").set([("a", 1)])]),
        RetryPolicy::default().max_retry_after(Duration::from_secs(30)),
        vec![Ok(answer(429, "{}", &[("retry-after", "86400")])), ok()],
    );
    assert_eq!(waits, [Duration::from_secs(30)]);
}

#[test]
fn five_503_with_limit_five_is_exhausted_after_five_attempts() {
    let script = (0..5)
        .map(|_| Ok(answer(503, "Service Unavailable", &[])))
        .collect();
    let (report, sent, waits) = run(
        batch_of(vec![
            Update::user("u").set([("a", 1)]),
            Update::user("v").set([("a", 2)]),
        ]),
        RetryPolicy::default().max_attempts(5).seed(1),
        script,
    );
    assert_eq!(sent.len(), 5);
    assert_eq!(waits.len(), 4);
    assert_eq!(report.not_delivered(), 2);
    for r in &report.records {
        match &r.outcome {
            RecordOutcome::NotDelivered(DeliveryError::Exhausted {
                attempts: 5,
                last: LastFailure::Status { status, body },
            }) => {
                assert_eq!(status.as_u16(), 503);
                assert_eq!(body.as_ref(), b"Service Unavailable");
            }
            other => panic!("{other:?}"),
        }
    }
    // Backoff doubles from 2 s with jitter in [half, all].
    for (i, w) in waits.iter().enumerate() {
        let full = Duration::from_secs(2 << i);
        assert!(*w >= full / 2 && *w <= full, "wait {i} = {w:?}");
    }
}

#[test]
fn backoff_is_capped_jittered_and_reproducible() {
    let script = || (0..8).map(|_| Ok(answer(502, "", &[]))).collect::<Script>();
    let batch = batch_of(vec![Update::user("u").set([("a", 1)])]);
    let policy = RetryPolicy::default()
        .max_attempts(8)
        .backoff(Duration::from_secs(2), Duration::from_secs(10))
        .time_budget(Duration::from_secs(3600))
        .seed(42);
    let (_, _, a) = run(batch.clone(), policy, script());
    let (_, _, b) = run(batch.clone(), policy, script());
    let (_, _, c) = run(batch, policy.seed(43), script());
    assert_eq!(a, b, "same seed, same schedule");
    assert_ne!(a, c, "another seed, another schedule");
    assert!(a.iter().all(|w| *w <= Duration::from_secs(10)));
    assert!(a[3..].iter().all(|w| *w >= Duration::from_secs(5)));
}

#[test]
fn time_budget_stops_retries() {
    // Attempts at 0 s, 10 s and 20 s; the next would start at 30 s, past the budget.
    let script = (0..3)
        .map(|_| Ok(answer(503, "", &[("retry-after", "10")])))
        .collect();
    let (report, sent, waits) = run(
        batch_of(vec![Update::user("u").set([("a", 1)])]),
        RetryPolicy::default().time_budget(Duration::from_secs(25)),
        script,
    );
    assert_eq!(sent.len(), 3);
    assert_eq!(waits, [Duration::from_secs(10); 2]);
    assert!(matches!(
        report.records[0].outcome,
        RecordOutcome::NotDelivered(DeliveryError::BudgetExceeded { .. })
    ));
}

#[test]
fn a_413_splits_into_halves_sent_in_order() {
    let updates: Vec<Update> = (0..5)
        .map(|i| Update::user(format!("u{i}")).set([("i", i)]))
        .collect();
    let batch = batch_of(updates);
    let (report, sent, waits) = run(
        batch.clone(),
        RetryPolicy::default(),
        vec![Ok(answer(413, r#"{"error":"too large"}"#, &[])), ok(), ok()],
    );
    assert!(waits.is_empty(), "a split is resent at once");
    assert_eq!(sent.len(), 3);
    let ids = |b: &Bytes| -> Vec<String> {
        let v: Vec<serde_json::Value> = serde_json::from_slice(b).unwrap();
        v.iter()
            .map(|r| r["$distinct_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&sent[1]), ["u0", "u1"]);
    assert_eq!(ids(&sent[2]), ["u2", "u3", "u4"]);
    assert!(report.all_accepted());
    assert_eq!(
        report.records.iter().map(|r| r.index).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );
}

#[test]
fn a_413_on_one_record_is_reported_for_that_record() {
    let (report, sent, _) = run(
        batch_of(vec![
            Update::user("u").set([("a", 1)]),
            Update::user("v").set([("a", 1)]),
        ]),
        RetryPolicy::default(),
        vec![
            Ok(answer(413, "", &[])),
            Ok(answer(413, "{\"error\":\"big\"}", &[])),
            ok(),
        ],
    );
    assert_eq!(sent.len(), 3);
    assert!(matches!(
        report.records[0].outcome,
        RecordOutcome::NotDelivered(DeliveryError::TooLarge { .. })
    ));
    assert_eq!(report.records[1].outcome, RecordOutcome::Accepted);
}

fn timeout() -> Result<http::Response<Bytes>, TransportError> {
    Err(TransportError::new(
        TransportErrorKind::Timeout,
        true,
        "no answer in 10 s",
    ))
}

fn mixed_batch() -> Batch {
    batch_of(vec![
        Update::user("a").add([("n", 1)]),
        Update::user("a").set([("x", 1)]),
        Update::user("b").add([("n", 2.5)]),
        Update::user("b").append([("log", "x")]),
    ])
}

#[test]
fn timeout_then_ok_reports_one_uncertain_update_per_add() {
    let (report, sent, _) = run(mixed_batch(), RetryPolicy::default(), vec![timeout(), ok()]);
    assert_eq!(sent.len(), 2);
    assert!(report.all_accepted());
    let uncertain: Vec<u64> = report
        .records
        .iter()
        .filter(|r| r.is_uncertain())
        .map(|r| r.index)
        .collect();
    assert_eq!(uncertain, [0, 2, 3], "$add, $add, $append");
    assert_eq!(report.uncertain(), 3);
    assert_eq!(report.uncertain_resends, 3);
}

#[test]
fn at_most_once_never_resends_add_after_an_ambiguous_failure() {
    let (report, sent, _) = run(
        batch_of(vec![Update::user("a").add([("n", 1)])]),
        RetryPolicy::default().at_most_once(true),
        vec![timeout()],
    );
    assert_eq!(sent.len(), 1, "no resend at all");
    assert!(matches!(
        &report.records[0].outcome,
        RecordOutcome::NotDelivered(DeliveryError::UncertainResendRefused {
            last: LastFailure::Transport(e)
        }) if e.kind() == TransportErrorKind::Timeout
    ));
    assert_eq!(report.uncertain(), 0);
    // In a mixed batch only the idempotent records are resent.
    let (report, sent, _) = run(
        mixed_batch(),
        RetryPolicy::default().at_most_once(true),
        vec![Ok(answer(500, "applied?", &[])), ok()],
    );
    assert_eq!(sent.len(), 2);
    let resent: Vec<serde_json::Value> = serde_json::from_slice(&sent[1]).unwrap();
    assert_eq!(resent.len(), 1);
    assert_eq!(resent[0]["$set"]["x"], 1);
    assert_eq!(report.accepted(), 1);
    assert_eq!(report.not_delivered(), 3);
    assert_eq!(report.uncertain(), 0);
}

#[test]
fn a_connect_error_is_not_ambiguous() {
    let refused = Err(TransportError::new(
        TransportErrorKind::Connect,
        false,
        "refused",
    ));
    let (report, sent, _) = run(
        mixed_batch(),
        RetryPolicy::default().at_most_once(true),
        vec![refused, ok()],
    );
    assert_eq!(sent.len(), 2);
    assert!(report.all_accepted());
    assert_eq!(report.uncertain(), 0);
}

#[test]
fn a_429_is_not_ambiguous() {
    let (report, _, _) = run(
        mixed_batch(),
        RetryPolicy::default(),
        vec![Ok(answer(429, "", &[])), ok()],
    );
    assert_eq!(report.uncertain(), 0);
}

#[test]
fn tls_failures_are_not_retried() {
    let tls = Err(TransportError::new(
        TransportErrorKind::Tls,
        false,
        "unknown issuer",
    ));
    let (report, sent, _) = run(mixed_batch(), RetryPolicy::default(), vec![tls]);
    assert_eq!(sent.len(), 1);
    assert_eq!(report.not_delivered(), 4);
    assert!(matches!(report.fatal, Some(DeliveryError::Transport(_))));
}

#[test]
fn client_errors_are_never_retried() {
    for (status, body) in [
        (400, r#"{"error":"invalid json","status":0}"#),
        (401, r#"{"error":"Invalid token","status":"error"}"#),
        (403, r#"{"error":"forbidden","status":"error"}"#),
    ] {
        let (report, sent, waits) = run(
            mixed_batch(),
            RetryPolicy::default(),
            vec![Ok(answer(status, body, &[]))],
        );
        assert_eq!(sent.len(), 1, "{status}");
        assert!(waits.is_empty());
        for r in &report.records {
            match &r.outcome {
                RecordOutcome::NotDelivered(DeliveryError::Refused {
                    status: s, body: b, ..
                }) => {
                    assert_eq!(s.as_u16(), status);
                    assert_eq!(b.as_ref(), body.as_bytes(), "the raw body is kept");
                }
                other => panic!("{status}: {other:?}"),
            }
        }
        assert_eq!(report.fatal.is_some(), status != 400);
    }
}

#[test]
fn a_401_after_a_split_refuses_every_part() {
    let (report, sent, _) = run(
        mixed_batch(),
        RetryPolicy::default(),
        vec![Ok(answer(413, "", &[])), Ok(answer(401, "{}", &[]))],
    );
    assert_eq!(sent.len(), 2);
    assert_eq!(report.not_delivered(), 4);
}

#[test]
fn zero_is_never_success() {
    for body in ["0", r#"{"status":0,"error":"token missing"}"#] {
        let (report, _, _) = run(
            mixed_batch(),
            RetryPolicy::default(),
            vec![Ok(answer(200, body, &[]))],
        );
        assert_eq!(report.accepted(), 0, "{body}");
        assert_eq!(report.rejected(), 4);
    }
    let (report, _, _) = run(
        mixed_batch(),
        RetryPolicy::default(),
        vec![Ok(answer(200, "<html>", &[]))],
    );
    assert_eq!(report.accepted(), 0);
    assert!(matches!(
        report.records[0].outcome,
        RecordOutcome::NotDelivered(DeliveryError::Refused {
            kind: FatalKind::UnrecognizedBody,
            ..
        })
    ));
}

#[test]
fn strict_rejections_map_to_the_callers_updates() {
    // Push with the caller's own indices (e.g. line numbers).
    let mut b = Batcher::new(BatchConfig::new(token(), Endpoint::Engage));
    b.push_at(10, &Update::user("a").set([("x", 1)])).unwrap();
    b.push_at(20, &Update::user("b").set([("x", 2)])).unwrap();
    b.push_at(30, &Update::user("c").set([("x", 3)])).unwrap();
    let batch = b.finish().unwrap();
    let body = r#"{"code":400,"error":"some failed","status":"Bad Request","num_records_imported":2,
        "failed_records":[{"index":1,"$distinct_id":"b","field":"$set","message":"bad value"}]}"#;
    let (report, _, _) = run(
        batch,
        RetryPolicy::default(),
        vec![Ok(answer(400, body, &[]))],
    );
    assert_eq!(report.accepted(), 2);
    let rejected: Vec<_> = report
        .records
        .iter()
        .filter(|r| matches!(r.outcome, RecordOutcome::Rejected { .. }))
        .collect();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].index, 20);
    assert_eq!(
        rejected[0].outcome,
        RecordOutcome::Rejected {
            field: Some("$set".into()),
            message: "bad value".into()
        }
    );
    assert_eq!(
        report.profile(rejected[0].position),
        Some(ProfileId::User {
            distinct_id: "b".into()
        })
    );
}

#[test]
fn jsonp_answers_are_understood() {
    let (report, _, _) = run(
        mixed_batch(),
        RetryPolicy::default(),
        vec![Ok(answer(200, "cb({\"status\":1,\"error\":null})", &[]))],
    );
    assert!(report.all_accepted());
}

#[test]
fn the_machine_is_driven_by_hand_with_the_callers_time() {
    let mut d = Delivery::new(mixed_batch(), Target::default(), RetryPolicy::default());
    let clock = ManualClock::new();
    let t0 = clock.now();
    assert!(matches!(d.poll(t0), Action::Send(_)));
    // Polling again before answering never sends twice.
    assert!(matches!(d.poll(t0), Action::AwaitResponse));
    d.on_response(t0, clock.wall(), &answer(429, "", &[("retry-after", "3")]));
    // Stray input while nothing is in flight is ignored.
    d.on_response(t0, clock.wall(), &answer(200, "1", &[]));
    let Action::Wait { until, throttled } = d.poll(t0) else {
        panic!()
    };
    assert!(throttled);
    assert_eq!(until - t0, Duration::from_secs(3));
    // Too early: still waiting.
    assert!(matches!(
        d.poll(t0 + Duration::from_secs(2)),
        Action::Wait { .. }
    ));
    assert!(matches!(d.poll(until), Action::Send(_)));
    assert_eq!(d.attempt(), 2);
    d.on_response(until, clock.wall(), &answer(200, "1", &[]));
    assert!(matches!(d.poll(until), Action::Done));
    assert!(d.is_done());
    assert!(d.into_report().all_accepted());
}

#[test]
fn abandoned_deliveries_account_for_every_record() {
    let mut d = Delivery::new(mixed_batch(), Target::default(), RetryPolicy::default());
    let clock = ManualClock::new();
    let _ = d.poll(clock.now());
    let report = d.into_report();
    assert_eq!(report.records.len(), 4);
    assert!(
        report
            .records
            .iter()
            .all(|r| r.outcome == RecordOutcome::NotDelivered(DeliveryError::Abandoned))
    );
}

#[test]
fn the_async_driver_runs_on_simulated_time() {
    let clock = ManualClock::new();
    let mut answers = vec![
        Err(TransportError::new(TransportErrorKind::Io, true, "reset")),
        Ok(answer(503, "", &[("retry-after", "4")])),
        ok(),
    ]
    .into_iter();
    let fut = deliver(
        Delivery::new(mixed_batch(), Target::default(), RetryPolicy::default()),
        &clock,
        |_req| std::future::ready(answers.next().unwrap()),
        |d| {
            clock.advance(d);
            std::future::ready(())
        },
    );
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let report = loop {
        if let std::task::Poll::Ready(r) = fut.as_mut().poll(&mut cx) {
            break r;
        }
    };
    assert!(report.all_accepted());
    assert_eq!(report.requests, 3);
    // $add and $append resent twice after ambiguous failures: two resends each.
    assert_eq!(report.uncertain(), 3);
    assert_eq!(report.records[0].uncertain_resends, 2);
    assert!(clock.elapsed() >= Duration::from_secs(5));
}

#[test]
fn huge_waits_never_overflow_time_arithmetic() {
    let (report, sent, waits) = run(
        batch_of(vec![Update::user("u").set([("a", 1)])]),
        RetryPolicy::default()
            .max_retry_after(Duration::MAX)
            .backoff(Duration::MAX, Duration::MAX)
            .time_budget(Duration::MAX),
        vec![
            Ok(answer(429, "", &[("retry-after", "18446744073709551615")])),
            Ok(answer(503, "", &[])),
            ok(),
        ],
    );
    assert!(report.all_accepted());
    assert_eq!(sent.len(), 3);
    assert!(
        waits.iter().all(|w| *w <= Duration::from_secs(86_400)),
        "{waits:?}"
    );
}

#[test]
fn rejections_naming_no_record_never_count_as_accepted() {
    let b = batch_of(vec![
        Update::user("a").set([("x", 1)]),
        Update::user("b").set([("x", 2)]),
        Update::user("c").set([("x", 3)]),
    ]);
    // No index, but a unique echoed id: mapped by id.
    let by_id = r#"{"code":400,"status":"Bad Request","failed_records":[{"$distinct_id":"b","message":"bad"}]}"#;
    let (report, _, _) = run(
        b.clone(),
        RetryPolicy::default(),
        vec![Ok(answer(400, by_id, &[]))],
    );
    assert_eq!((report.accepted(), report.rejected()), (2, 1));
    assert!(matches!(
        report.records[1].outcome,
        RecordOutcome::Rejected { .. }
    ));
    // Neither index nor id: nobody is reported accepted.
    let anonymous =
        r#"{"code":400,"status":"Bad Request","failed_records":[{"index":99,"message":"bad"}]}"#;
    let (report, _, _) = run(
        b,
        RetryPolicy::default(),
        vec![Ok(answer(400, anonymous, &[]))],
    );
    assert_eq!(report.accepted(), 0);
    assert_eq!(report.not_delivered(), 3);
    assert!(report.records.iter().all(|r| r.maybe_applied));
    assert!(matches!(
        report.records[0].outcome,
        RecordOutcome::NotDelivered(DeliveryError::UnmappedRejections { count: 1 })
    ));
}

#[test]
fn not_delivered_after_an_ambiguous_failure_says_it_may_have_been_applied() {
    let script = (0..2).map(|_| Ok(answer(500, "", &[]))).collect();
    let (report, _, _) = run(
        mixed_batch(),
        RetryPolicy::default().max_attempts(2).seed(1),
        script,
    );
    assert_eq!(report.not_delivered(), 4);
    assert!(report.records.iter().all(|r| r.maybe_applied));
    let refused = Err(TransportError::new(
        TransportErrorKind::Connect,
        false,
        "refused",
    ));
    let (report, _, _) = run(
        mixed_batch(),
        RetryPolicy::default().max_attempts(1),
        vec![refused],
    );
    assert!(report.records.iter().all(|r| !r.maybe_applied));
}

#[test]
fn actions_never_show_the_token() {
    let token = Token::new("SECRET-token-value").unwrap();
    let b = batches(
        BatchConfig::new(token, Endpoint::Engage),
        [Update::user("u").set([("a", 1)])],
    )
    .next()
    .unwrap()
    .unwrap();
    let mut d = Delivery::new(b, Target::default(), RetryPolicy::default());
    let action = d.poll(ManualClock::new().now());
    let text = format!("{action:?}");
    assert!(text.contains("Send") && !text.contains("SECRET"), "{text}");
}

#[test]
fn a_resend_held_past_the_budget_gives_up_instead_of_going_out_late() {
    let mut d = Delivery::new(
        batch_of(vec![Update::user("u").add([("n", 1)])]),
        Target::default(),
        RetryPolicy::default().time_budget(Duration::from_secs(10)),
    );
    let clock = ManualClock::new();
    let t0 = clock.now();
    assert!(matches!(d.poll(t0), Action::Send(_)));
    d.on_response(t0, clock.wall(), &answer(503, "", &[("retry-after", "1")]));
    assert!(matches!(d.poll(t0), Action::Wait { .. }));
    // Polled only at 20 s (say an importer's pause held it): no late send.
    assert!(matches!(d.poll(t0 + Duration::from_secs(20)), Action::Done));
    let report = d.into_report();
    assert!(matches!(
        report.records[0].outcome,
        RecordOutcome::NotDelivered(DeliveryError::BudgetExceeded { .. })
    ));
    assert!(
        report.records[0].maybe_applied,
        "the 503 may have applied it"
    );
}

#[test]
fn a_2xx_is_not_trusted_over_its_own_count() {
    let updates: Vec<Update> = (0..12)
        .map(|i| Update::user(format!("u{i}")).add([("n", 1)]))
        .collect();
    // 200, but the count says one record of twelve went in.
    let (report, _, _) = run(
        batch_of(updates.clone()),
        RetryPolicy::default(),
        vec![Ok(answer(
            200,
            r#"{"code":200,"num_records_imported":1,"status":"OK"}"#,
            &[],
        ))],
    );
    assert_eq!(report.accepted(), 0);
    assert_eq!(report.not_delivered(), 12);
    for r in &report.records {
        assert!(r.maybe_applied, "{r:?}");
        assert_eq!(
            r.outcome,
            RecordOutcome::NotDelivered(DeliveryError::CountMismatch {
                imported: 1,
                expected: 12
            })
        );
    }
    // A strict 400 rejecting record 0 but counting 10 imported of the other 11.
    let (report, _, _) = run(
        batch_of(updates.clone()),
        RetryPolicy::default(),
        vec![Ok(answer(
            400,
            r#"{"code":400,"status":"Bad Request","num_records_imported":10,"failed_records":[{"index":0,"field":"$add","message":"bad"}]}"#,
            &[],
        ))],
    );
    assert_eq!(
        (report.accepted(), report.rejected(), report.not_delivered()),
        (0, 1, 11)
    );
    assert!(report.records[1..].iter().all(|r| r.maybe_applied));
    // The honest answers still count as accepted: equal, or without a count.
    for body in [
        r#"{"code":200,"num_records_imported":12,"status":"OK"}"#,
        r#"{"status":1,"error":null}"#,
    ] {
        let (report, _, _) = run(
            batch_of(updates.clone()),
            RetryPolicy::default(),
            vec![Ok(answer(200, body, &[]))],
        );
        assert!(report.all_accepted(), "{body}");
    }
}

#[test]
fn server_text_in_messages_has_its_control_characters_escaped() {
    let body = "\u{1b}[2J\u{1b}[31mred\u{1b}]0;title\u{7} \u{202e}reversed";
    let (report, _, _) = run(
        batch_of(vec![Update::user("u").set([("a", 1)])]),
        RetryPolicy::default(),
        vec![Ok(answer(401, body, &[]))],
    );
    let RecordOutcome::NotDelivered(e) = &report.records[0].outcome else {
        panic!("{report:?}");
    };
    let shown = e.to_string();
    assert!(
        !shown.chars().any(|c| c.is_control() || c == '\u{202e}'),
        "{shown:?}"
    );
    assert!(shown.contains("\\u{1b}[2J"), "{shown}");
    assert!(shown.contains("\\u{202e}reversed"), "{shown}");
}
