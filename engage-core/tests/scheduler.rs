//! The import scheduler on simulated time: requests really overlap on realistic input
//! while each profile keeps its order; linger and flush; both endpoints through one
//! importer; the adaptive limit against a simulated rate-limited server.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use engage_core::delivery::{
    AutoConcurrency, Concurrency, Decision, FeedFrom, ImportAction, Importer, RequestId, Route,
    Sending,
};
use engage_core::driver::{Clock, ManualClock};
use engage_core::rng::SplitMix64;
use engage_core::{
    BatchConfig, Endpoint, ImportConfig, ImportEvent, RetryPolicy, Target, Token, Update,
};

fn config(max_records: usize, concurrency: Concurrency) -> ImportConfig {
    ImportConfig::new(
        BatchConfig::new(Token::new("tok").unwrap(), Endpoint::Engage).max_records(max_records),
        Target::base_url("http://127.0.0.1:9").unwrap(),
    )
    .concurrency(concurrency)
    .policy(RetryPolicy::default().seed(3))
}

fn answer(status: u16, body: &str) -> http::Response<Bytes> {
    let mut r = http::Response::new(Bytes::from(body.to_owned()));
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
    r
}

/// (profile, sequence number within the profile) of each record of a request.
fn records(req: &http::Request<Bytes>) -> Vec<(String, i64)> {
    let v: Vec<serde_json::Value> = serde_json::from_slice(req.body()).unwrap();
    v.iter()
        .map(|r| {
            let id = r
                .get("$distinct_id")
                .or_else(|| r.get("$group_id"))
                .and_then(|v| v.as_str())
                .unwrap()
                .to_owned();
            (id, r["$set"]["seq"].as_i64().unwrap_or(-1))
        })
        .collect()
}

/// An export's shape: several updates per profile, spread through the input.
fn realistic(n: usize, profiles: u64, seed: u64) -> Vec<Update> {
    let mut rng = SplitMix64::new(seed);
    let mut seq: HashMap<u64, i64> = HashMap::new();
    (0..n)
        .map(|_| {
            let p = rng.below(profiles);
            let s = seq.entry(p).or_insert(0);
            *s += 1;
            Update::user(format!("user-{p}")).set([("seq", *s)])
        })
        .collect()
}

/// A server on the manual clock that answers `latency` after each request, checking that
/// no two requests in flight share a profile; returns the peak in flight and what arrived
/// per profile, in order.
fn run_with_latency(
    mut imp: Importer,
    input: Vec<Update>,
    latency: Duration,
) -> (usize, BTreeMap<String, Vec<i64>>, Importer) {
    let clock = ManualClock::new();
    let mut source = FeedFrom {
        source: input.into_iter(),
        on_event: |_| {},
    };
    // (when answered, which request, its records)
    type InFlight = (Instant, RequestId, Vec<(String, i64)>);
    let mut in_flight: Vec<InFlight> = Vec::new();
    let mut arrived: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut peak = 0;
    loop {
        match imp.step(clock.now(), &mut source) {
            ImportAction::Send { id, request } => {
                let recs = records(&request);
                let busy: HashSet<&String> = in_flight
                    .iter()
                    .flat_map(|(_, _, r)| r.iter().map(|(p, _)| p))
                    .collect();
                for (p, s) in &recs {
                    assert!(!busy.contains(p), "{p} is in two requests at once");
                    arrived.entry(p.clone()).or_default().push(*s);
                }
                in_flight.push((clock.now() + latency, id, recs));
                peak = peak.max(in_flight.len());
            }
            ImportAction::Done => break,
            ImportAction::NeedInput => unreachable!("an iterator never idles"),
            ImportAction::Wait { until } => {
                in_flight.sort_by_key(|f| f.0);
                let next = in_flight.first().map(|f| f.0);
                let wake = match (next, until) {
                    (Some(a), Some(b)) => a.min(b),
                    (a, b) => a.or(b).expect("something to wait for"),
                };
                clock.advance(wake.saturating_duration_since(clock.now()));
                if next.is_some_and(|n| n <= clock.now()) {
                    let (_, id, _) = in_flight.remove(0);
                    imp.on_result(id, clock.now(), clock.wall(), Ok(answer(200, "1")));
                }
            }
        }
    }
    (peak, arrived, imp)
}

#[test]
fn on_realistic_input_requests_overlap_and_each_profile_keeps_its_order() {
    // 40,000 updates over 5,000 profiles in random order: every batch of 500 shares
    // profiles with the one before it, the shape that once serialized everything.
    let input = realistic(40_000, 5_000, 11);
    let (peak, arrived, imp) = run_with_latency(
        Importer::new(config(500, Concurrency::Fixed(8))),
        input,
        Duration::from_millis(100),
    );
    assert!(peak >= 7, "only {peak} requests overlapped");
    for (profile, seqs) in &arrived {
        let expected: Vec<i64> = (1..=seqs.len() as i64).collect();
        assert_eq!(seqs, &expected, "{profile} out of order");
    }
    let s = imp.summary();
    assert_eq!((s.records, s.accepted), (40_000, 40_000));
    assert!(s.batches <= 90, "batches stay full: {}", s.batches);
    assert_eq!(s.peak_in_flight, peak as u64);
}

#[test]
fn a_batch_whose_lane_is_busy_stays_open_past_its_linger_and_goes_when_the_lane_is_free() {
    let linger = Duration::from_millis(500);
    let mut imp = Importer::new(config(2000, Concurrency::Fixed(4)).linger(linger));
    let clock = ManualClock::new();
    let t0 = clock.now();
    imp.push(Update::user("p").set([("seq", 1)]));
    assert!(matches!(imp.poll(t0), ImportAction::Wait { .. }));
    let ImportAction::Send { id, .. } = imp.poll(t0 + linger) else {
        panic!("the first goes when its linger is over");
    };
    // The profile's lane has a request out: its next updates wait in one open batch, past
    // their linger, rather than leave as a batch of one that could not go sooner anyway.
    let t1 = t0 + linger;
    imp.push(Update::user("p").set([("seq", 2)]));
    assert!(matches!(imp.poll(t1), ImportAction::Wait { .. }));
    let ImportAction::Wait { .. } = imp.poll(t1 + linger) else {
        panic!("nothing to send while the lane is busy");
    };
    imp.push(Update::user("p").set([("seq", 3)]));
    imp.push(Update::user("p").set([("seq", 4)]));
    let t2 = t1 + 3 * linger;
    assert!(matches!(imp.poll(t2), ImportAction::Wait { .. }));
    imp.on_result(id, t2, clock.wall(), Ok(answer(200, "1")));
    let ImportAction::Send { request, .. } = imp.poll(t2) else {
        panic!("sent once the lane is free");
    };
    assert_eq!(
        records(&request),
        [
            ("p".to_owned(), 2),
            ("p".to_owned(), 3),
            ("p".to_owned(), 4)
        ]
    );
}

#[test]
fn a_lone_update_goes_out_when_its_linger_is_over_and_flush_closes_at_once() {
    let mut imp =
        Importer::new(config(2000, Concurrency::Fixed(4)).linger(Duration::from_millis(500)));
    let clock = ManualClock::new();
    let t0 = clock.now();
    imp.push(Update::user("lone").set([("seq", 1)]));
    let ImportAction::Wait { until: Some(until) } = imp.poll(t0) else {
        panic!("waits for the linger");
    };
    assert_eq!(until - t0, Duration::from_millis(500));
    assert!(matches!(
        imp.poll(until - Duration::from_millis(1)),
        ImportAction::Wait { .. }
    ));
    let ImportAction::Send { id, .. } = imp.poll(until) else {
        panic!("sent when the linger is over");
    };
    imp.on_result(id, until, clock.wall(), Ok(answer(200, "1")));
    // A flush sends at once, and says when what came before it is settled.
    let t1 = until + Duration::from_millis(10);
    imp.push(Update::user("a").set([("seq", 1)]));
    imp.push(Update::user("b").set([("seq", 1)]));
    let flushed = imp.flush();
    imp.push(Update::user("c").set([("seq", 1)]));
    assert!(!imp.is_flushed(flushed));
    let ImportAction::Send { id, request } = imp.poll(t1) else {
        panic!("flushed at once");
    };
    assert_eq!(records(&request).len(), 2, "c came after the flush");
    assert!(!imp.is_flushed(flushed));
    imp.on_result(id, t1, clock.wall(), Ok(answer(200, "1")));
    let _ = imp.poll(t1);
    assert!(imp.is_flushed(flushed));
    let mut sent = Vec::new();
    while let ImportAction::Send { request, .. } = imp.poll(t1 + Duration::from_secs(1)) {
        sent.push(records(&request));
    }
    assert_eq!(sent, [vec![("c".to_owned(), 1)]]);
}

#[test]
fn users_and_groups_go_to_their_own_endpoints_through_one_importer() {
    let mut imp = Importer::new(config(2000, Concurrency::Fixed(4)).route(Route::ByProfile));
    for i in 0..6 {
        imp.push(Update::user(format!("u{i}")).set([("seq", 1)]));
        imp.push(Update::group("company", format!("c{i}")).set([("seq", 1)]));
    }
    imp.finish_input();
    let clock = ManualClock::new();
    let mut paths = Vec::new();
    while let ImportAction::Send { request, .. } = imp.poll(clock.now()) {
        paths.push((request.uri().path().to_owned(), records(&request).len()));
    }
    paths.sort();
    assert_eq!(
        paths,
        [("/engage".to_owned(), 6), ("/groups".to_owned(), 6)]
    );
}

#[test]
fn the_sending_event_comes_before_the_request_and_names_its_updates() {
    let mut imp = Importer::new(config(3, Concurrency::Fixed(1)));
    let clock = ManualClock::new();
    let mut events = Vec::new();
    let mut feed = FeedFrom {
        source: (0..5).map(|i| Update::user(format!("u{i}")).set([("seq", 1)])),
        on_event: |e| events.push(e),
    };
    let ImportAction::Send { request, .. } = imp.step(clock.now(), &mut feed) else {
        panic!()
    };
    let sending: Vec<&Sending> = events
        .iter()
        .filter_map(|e| match e {
            ImportEvent::Sending(s) => Some(s),
            _ => None,
        })
        .collect();
    assert_eq!(sending.len(), 1);
    assert_eq!(sending[0].indices, [0, 1, 2]);
    assert_eq!(sending[0].bytes, request.body().len());
    assert!(sending[0].idempotent, "$set only");
}

#[test]
fn a_batch_with_one_add_is_not_idempotent() {
    let mut imp = Importer::new(config(3, Concurrency::Fixed(1)));
    let clock = ManualClock::new();
    let mut events = Vec::new();
    let mut feed = FeedFrom {
        source: [
            Update::user("a").set([("x", 1)]),
            Update::user("b").add([("n", 1)]),
            Update::user("c").set_once([("y", 1)]),
        ]
        .into_iter(),
        on_event: |e| events.push(e),
    };
    let ImportAction::Send { .. } = imp.step(clock.now(), &mut feed) else {
        panic!()
    };
    let idempotent: Vec<bool> = events
        .iter()
        .filter_map(|e| match e {
            ImportEvent::Sending(s) => Some(s.idempotent),
            _ => None,
        })
        .collect();
    assert_eq!(idempotent, [false]);
}

/// A server that admits `rate` bytes per second (a token bucket holding `burst` seconds'
/// worth, full at the start, as the emulator's `--rate-limit-mb-per-min`) and answers 429
/// without `Retry-After` beyond it, `latency` after each request. Returns (bytes accepted, requests, 429s, simulated seconds).
fn against_a_rate_limit(rate: f64, burst: f64, latency: Duration) -> (f64, u64, u64, f64) {
    let input: Vec<Update> = realistic(150_000, 40_000, 5);
    let mut imp = Importer::new(
        config(100, Concurrency::Auto(AutoConcurrency::default()))
            .policy(RetryPolicy::default().seed(9).max_attempts(50)),
    );
    let clock = ManualClock::new();
    let start = clock.now();
    let mut tokens = rate * burst;
    let mut last = start;
    let mut source = FeedFrom {
        source: input.into_iter(),
        on_event: |_| {},
    };
    let mut in_flight: Vec<(Instant, RequestId, bool)> = Vec::new();
    let (mut accepted_bytes, mut requests, mut throttled) = (0.0, 0u64, 0u64);
    let mut accepted_until = start;
    loop {
        match imp.step(clock.now(), &mut source) {
            ImportAction::Send { id, request } => {
                let now = clock.now();
                tokens = (tokens + rate * (now - last).as_secs_f64()).min(rate * burst);
                last = now;
                let size = request.body().len() as f64;
                let ok = tokens >= size;
                if ok {
                    tokens -= size;
                    accepted_bytes += size;
                    accepted_until = now;
                } else {
                    throttled += 1;
                }
                requests += 1;
                in_flight.push((now + latency, id, ok));
            }
            ImportAction::Done => break,
            ImportAction::NeedInput => unreachable!(),
            ImportAction::Wait { until } => {
                in_flight.sort_by_key(|f| f.0);
                let next = in_flight.first().map(|f| f.0);
                let wake = match (next, until) {
                    (Some(a), Some(b)) => a.min(b),
                    (a, b) => a.or(b).expect("something to wait for"),
                };
                clock.advance(wake.saturating_duration_since(clock.now()));
                if next.is_some_and(|n| n <= clock.now()) {
                    let (_, id, ok) = in_flight.remove(0);
                    let r = if ok {
                        answer(200, "1")
                    } else {
                        answer(
                            429,
                            r#"{"code":429,"error":"Project exceeded rate limits.","status":"Too Many Requests"}"#,
                        )
                    };
                    imp.on_result(id, clock.now(), clock.wall(), Ok(r));
                }
            }
        }
    }
    assert!(imp.summary().all_accepted(), "{:?}", imp.summary());
    let secs = (accepted_until - start).as_secs_f64();
    (accepted_bytes, requests, throttled, secs)
}

#[test]
fn the_adaptive_limit_holds_a_rate_limit_with_few_429s() {
    // The rate-limit scenario of the ordered-concurrency issue (300 MB/min, 300 ms per
    // request, ~300 kB bodies, a 1 s burst allowance) scaled down 50× in bytes: 100 kB/s,
    // ~6 kB bodies; ~9 MB in all, so a minute and a half of simulated time. Also with a
    // 5 s burst allowance, which lets the first requests through and misleads.
    let rate = 100_000.0;
    for burst in [1.0, 5.0] {
        let (bytes, requests, throttled, secs) =
            against_a_rate_limit(rate, burst, Duration::from_millis(300));
        let throughput = bytes / secs;
        eprintln!(
            "burst {burst} s: {:.0}% of the cap over {secs:.1} s, {throttled} of {requests} requests answered 429",
            100.0 * throughput / rate
        );
        assert!(secs > 30.0, "long enough to measure: {secs}");
        assert!(throughput >= 0.85 * rate, "{throughput:.0} B/s");
        assert!(
            throttled as f64 <= 0.03 * requests as f64,
            "{throttled} of {requests}"
        );
    }
}

#[test]
fn a_stop_sends_nothing_more_lets_requests_in_flight_finish_then_abandons_them() {
    use engage_core::delivery::{DeliveryError, RecordOutcome};
    let mut imp =
        Importer::new(config(10, Concurrency::Fixed(2)).stop_grace(Duration::from_secs(5)));
    for i in 0..100 {
        imp.push(Update::user(format!("u{i}")).add([("n", 1)]));
    }
    let clock = ManualClock::new();
    let t0 = clock.now();
    let ImportAction::Send { id: first, .. } = imp.poll(t0) else {
        panic!()
    };
    let ImportAction::Send { id: second, .. } = imp.poll(t0) else {
        panic!()
    };
    imp.stop(t0);
    // The first answer comes in time: its batch counts. Nothing new goes out.
    imp.on_result(first, t0, clock.wall(), Ok(answer(200, "1")));
    let ImportAction::Wait { until: Some(until) } = imp.poll(t0) else {
        panic!("waits for the second until the grace is over");
    };
    assert_eq!(until - t0, Duration::from_secs(5));
    // The second never answers: abandoned, maybe applied.
    assert!(matches!(imp.poll(until), ImportAction::Done));
    let _ = second;
    let s = imp.summary();
    assert_eq!((s.records, s.accepted, s.not_delivered), (100, 10, 90));
    assert_eq!(s.maybe_applied, 10, "the batch in flight when abandoned");
    let mut stopped = 0;
    let mut abandoned = 0;
    while let Some(e) = imp.next_event() {
        if let ImportEvent::Delivered(r) = e {
            for rec in &r.records {
                match &rec.outcome {
                    RecordOutcome::NotDelivered(DeliveryError::Stopped) => stopped += 1,
                    RecordOutcome::NotDelivered(DeliveryError::Abandoned) => {
                        assert!(rec.maybe_applied);
                        abandoned += 1
                    }
                    _ => {}
                }
            }
        }
    }
    assert_eq!((stopped, abandoned), (80, 10));
}

/// Runs two updates (one batch) against `answers`, in order; the decisions of its attempts.
fn decisions(answers: Vec<http::Response<Bytes>>) -> Vec<Decision> {
    let mut imp = Importer::new(config(2, Concurrency::Fixed(1)));
    let clock = ManualClock::new();
    let mut events = Vec::new();
    {
        let mut feed = FeedFrom {
            source: (0..2).map(|i| Update::user(format!("u{i}")).set([("seq", 1)])),
            on_event: |e| events.push(e),
        };
        let mut answers = answers.into_iter();
        for _ in 0..100 {
            match imp.step(clock.now(), &mut feed) {
                ImportAction::Send { id, .. } => {
                    let a = answers.next().expect("an answer for every request");
                    clock.advance(Duration::from_millis(10));
                    imp.on_result(id, clock.now(), std::time::SystemTime::now(), Ok(a));
                }
                ImportAction::Wait { until: Some(t) } => {
                    clock.advance(t.saturating_duration_since(clock.now()))
                }
                ImportAction::Done => break,
                _ => {}
            }
        }
    }
    events
        .into_iter()
        .filter_map(|e| match e {
            ImportEvent::Attempt(a) => Some(a.decision),
            _ => None,
        })
        .collect()
}

#[test]
fn each_attempt_says_what_comes_next() {
    let d = decisions(vec![
        answer(503, ""),
        answer(413, ""),
        answer(200, "1"),
        answer(200, "1"),
    ]);
    assert!(
        matches!(
            d[0],
            Decision::Retry {
                throttled: false,
                ..
            }
        ),
        "{d:?}"
    );
    assert_eq!(
        d[1..],
        [Decision::NextPart, Decision::NextPart, Decision::Settled]
    );
    let d = decisions(vec![answer(429, ""), answer(200, "1")]);
    assert!(
        matches!(
            d[0],
            Decision::Retry {
                throttled: true,
                ..
            }
        ),
        "{d:?}"
    );
    assert_eq!(d[1], Decision::Settled);
    assert_eq!(decisions(vec![answer(401, "")]), [Decision::Stop]);
}

/// A feed that keeps what `on_refused` hands back and the events that follow.
struct Refusals {
    updates: std::vec::IntoIter<Update>,
    refused: Vec<(u64, Option<Bytes>)>,
    invalid: Vec<u64>,
}

impl engage_core::delivery::Feed for Refusals {
    type Item = Update;
    fn next_item(&mut self) -> engage_core::delivery::Next<Update> {
        match self.updates.next() {
            Some(u) => engage_core::delivery::Next::Item(u),
            None => engage_core::delivery::Next::End,
        }
    }
    fn on_event(&mut self, event: ImportEvent) {
        if let ImportEvent::Invalid(e) = event {
            // The update was handed back before its refusal is reported.
            assert!(self.refused.iter().any(|(i, _)| *i == e.index));
            self.invalid.push(e.index);
        }
    }
    fn on_refused(&mut self, index: u64, update: &Update) {
        self.refused.push((index, update.json_text().cloned()));
    }
}

#[test]
fn a_feed_gets_back_the_updates_refused_as_they_are_batched() {
    let mut imp = Importer::new(config(100, Concurrency::Fixed(1)));
    let clock = ManualClock::new();
    // Read in one pass (so valid as text), refused as batched: another project's token.
    let foreign = r#"{"$token":"other","$distinct_id":"b","$set":{"x":1}}"#;
    let mut feed = Refusals {
        updates: vec![
            Update::user("a").set([("x", 1)]),
            Update::from_json(foreign).unwrap(),
            Update::user("c").set([("x", 1)]),
        ]
        .into_iter(),
        refused: Vec::new(),
        invalid: Vec::new(),
    };
    let _ = imp.step(clock.now(), &mut feed);
    assert_eq!(feed.invalid, [1]);
    assert_eq!(feed.refused.len(), 1);
    assert_eq!(feed.refused[0].0, 1);
    assert_eq!(feed.refused[0].1.as_deref(), Some(foreign.as_bytes()));
}

/// Every request's body (in order) of an import of `feed`, each answered at once, and the
/// records, accepted and invalid counted.
fn requests_and_counts<F: engage_core::delivery::Feed>(
    config: ImportConfig,
    feed: &mut F,
) -> (Vec<String>, (u64, u64, u64)) {
    let clock = ManualClock::new();
    let mut imp = Importer::new(config);
    let (mut bodies, mut waiting) = (Vec::new(), Vec::new());
    loop {
        match imp.step(clock.now(), feed) {
            ImportAction::Send { id, request } => {
                bodies.push(String::from_utf8(request.body().to_vec()).unwrap());
                waiting.push(id);
            }
            ImportAction::Done => break,
            ImportAction::NeedInput => unreachable!("the feeds never idle"),
            ImportAction::Wait { .. } => {
                assert!(!waiting.is_empty(), "waiting for nothing");
                for id in waiting.drain(..) {
                    imp.on_result(id, clock.now(), clock.wall(), Ok(answer(200, "1")));
                }
            }
        }
    }
    let s = imp.summary();
    (bodies, (s.records, s.accepted, s.invalid))
}

/// A feed of JSON lines given to the importer as text: `Importer::push_json`, and what it
/// does not take parsed and pushed as an update (the way a program reading an export does).
struct TextFeed {
    lines: std::vec::IntoIter<(u64, String)>,
    refused: Vec<(u64, String)>,
    /// What `push_json` answered: batched, refused, not taken.
    answers: [usize; 3],
}

impl engage_core::delivery::Feed for TextFeed {
    type Item = (u64, Update);
    fn next_item(&mut self) -> engage_core::delivery::Next<(u64, Update)> {
        unreachable!("push_next is overridden")
    }
    fn on_event(&mut self, event: ImportEvent) {
        if let ImportEvent::Invalid(e) = event {
            self.refused.push((e.index, e.to_string()));
        }
    }
    fn push_next(&mut self, importer: &mut Importer) -> engage_core::delivery::Next<()> {
        use engage_core::delivery::{JsonPush, Next};
        let Some((index, line)) = self.lines.next() else {
            return Next::End;
        };
        let answer = importer.push_json(index, line.as_bytes());
        self.answers[match answer {
            JsonPush::Batched => 0,
            JsonPush::Refused => 1,
            _ => 2,
        }] += 1;
        if answer == JsonPush::NotTaken {
            importer.push((index, Update::from_json(&line).expect("JSON")));
        }
        Next::Item(())
    }
}

/// Lines as an export has them: repeated profiles, spaces, tokens of their own (the
/// project's and another's), both endpoints, invalid updates and ones drawing warnings.
fn export_lines(n: u64, seed: u64) -> Vec<(u64, String)> {
    let mut rng = SplitMix64::new(seed);
    (0..n)
        .map(|i| {
            let p = rng.below(60);
            let line = match rng.below(12) {
                0 => format!(r#"{{"$token": "other", "$distinct_id": "u{p}", "$set": {{"i": {i}}}}}"#),
                1 => format!(r#"{{"$token":"tok","$group_key":"co","$group_id":"g{p}","$set":{{"i":{i}}}}}"#),
                2 => format!(r#"{{"$distinct_id":"u{p}","$add":{{"n":"not a number"}}}}"#),
                3 => format!(r#"{{"$distinct_id":"u{p}","$set":{{"s":"{}"}}}}"#, "x".repeat(300)),
                4 => format!(r#"{{"distinct_id":"u{p}","plan":"flat"}}"#),
                5 => format!(r#"{{ "$token" : "tok" , "$distinct_id" : "u{p}" , "$add" : {{ "n" : {i} }} , "$ip" : "1.2.3.4" }}"#),
                _ => format!(r#"{{"$token":"tok","$distinct_id":"u{p}","$set":{{"i":{i},"name":"n{p}"}},"$time":{i}}}"#),
            };
            (i * 2 + 1, line)
        })
        .collect()
}

#[test]
fn json_text_pushed_as_it_is_makes_the_requests_its_updates_make() {
    let lines = export_lines(3_000, 5);
    for route in [Route::Configured, Route::ByProfile] {
        let config = || config(50, Concurrency::Fixed(4)).route(route);
        let mut as_text = TextFeed {
            lines: lines.clone().into_iter(),
            refused: Vec::new(),
            answers: [0; 3],
        };
        let mut refused = Vec::new();
        let mut as_updates = FeedFrom {
            source: lines
                .iter()
                .map(|(i, l)| (*i, Update::from_json(l).expect("JSON"))),
            on_event: |e| {
                if let ImportEvent::Invalid(e) = e {
                    refused.push((e.index, e.to_string()));
                }
            },
        };
        let text = requests_and_counts(config(), &mut as_text);
        let updates = requests_and_counts(config(), &mut as_updates);
        assert_eq!(text.0.len(), updates.0.len(), "{route:?}");
        for (a, b) in text.0.iter().zip(&updates.0) {
            assert_eq!(a, b, "{route:?}");
        }
        assert_eq!(text.1, updates.1, "{route:?}");
        assert_eq!(as_text.refused, refused, "{route:?}");
        // The mix holds every case: refused (another token, a non-numeric $add, and for
        // one endpoint the other's updates), and most accepted.
        // The one-pass reader took every line but those it must leave to the full parser
        // (an invalid update, one drawing a warning, a flat record), spaced or not.
        let declined = lines
            .iter()
            .filter(|(_, l)| {
                l.contains("not a number") || l.contains(&"x".repeat(300)) || l.contains("flat")
            })
            .count();
        assert_eq!(as_text.answers[2], declined, "{route:?}");
        assert_eq!(as_text.answers.iter().sum::<usize>(), lines.len());
        assert!(
            as_text.answers[0] > 1_000 && as_text.answers[1] > 100,
            "{route:?} {:?}",
            as_text.answers
        );
        let (records, accepted, invalid) = text.1;
        assert_eq!(records, 3_000);
        assert!(invalid > 500 && accepted > 1_500, "{:?}", text.1);
    }
}
