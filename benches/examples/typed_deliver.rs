//! The typed path end to end: user structs → request bodies → sent to the in-process
//! emulator and accepted, by `Batcher::push_set_from` against `Update::user(id).set_from`
//! pushed (the path `build_encode` times only up to the body). Prints wall time and the
//! client's CPU (threads that are not the emulator's) for each, alternating, and the
//! ratio.
//!
//! `cargo run --release -p engage-benches --example typed_deliver -- [STRUCTS] [ROUNDS] [LATENCY_MS]`
//!
//! With `LATENCY_MS` the emulator answers each request that much later: a simulated
//! round trip (the batches go one at a time, as a `Batcher` user sending each with
//! `deliver` does).

use std::time::{Duration, Instant};

use engage_benches::threads::{TICKS_PER_SECOND, split, thread_ticks};
use engage_benches::{Customer, customers};
use engage_core::batch::{Batch, Batcher};
use engage_core::delivery::RecordOutcome;
use engage_core::model::ProfileRef;
use engage_core::{BatchConfig, Endpoint, RetryPolicy, Target, Token, Update};

/// Batches `people` one way or the other, delivering each batch as it is complete;
/// returns the records accepted.
fn run(
    people: &[(String, Customer)],
    direct: bool,
    transport: &engage_curl::CurlTransport,
    target: &Target,
) -> usize {
    let mut batcher = Batcher::new(BatchConfig::new(
        Token::new("tok").expect("a token"),
        Endpoint::Engage,
    ));
    let mut accepted = 0;
    let mut deliver = |batch: Batch| {
        let report = transport.deliver(batch, target, RetryPolicy::default());
        accepted += report
            .records
            .iter()
            .filter(|r| r.outcome == RecordOutcome::Accepted)
            .count();
    };
    for (id, c) in people {
        let pushed = if direct {
            batcher.push_set_from(ProfileRef::User(id), c)
        } else {
            let update = Update::user(id.as_str()).set_from(c).expect("a struct");
            batcher.push(&update)
        };
        if let Some(batch) = pushed.expect("valid") {
            deliver(batch);
        }
    }
    if let Some(batch) = batcher.finish() {
        deliver(batch);
    }
    accepted
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(200_000);
    let rounds: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(3);
    let latency = Duration::from_millis(args.next().and_then(|s| s.parse().ok()).unwrap_or(0));
    let people = customers(n, 13);
    let emulator = engage_emulator::Emulator::start(
        engage_emulator::EmulatorConfig::default().latency(latency, Duration::ZERO),
    )
    .expect("the emulator starts");
    let target = Target::base_url(&emulator.base_url()).expect("the emulator's URL");
    let transport = engage_curl::CurlTransport::new().expect("a curl client");
    println!(
        "{n} structs, latency {} ms per request",
        latency.as_millis()
    );
    let mut cpu = [Vec::new(), Vec::new()];
    for _ in 0..rounds {
        for (i, direct) in [(0, true), (1, false)] {
            emulator.reset();
            let before = thread_ticks();
            let started = Instant::now();
            let accepted = run(&people, direct, &transport, &target);
            let wall = started.elapsed().as_secs_f64();
            let (server, client) = split(&before, &thread_ticks());
            assert_eq!(accepted, n, "every record accepted");
            let client = client as f64 / TICKS_PER_SECOND;
            cpu[i].push(client);
            println!(
                "{:<14} wall {wall:6.2} s   client CPU {client:5.2} s   emulator CPU {:5.2} s",
                if direct {
                    "push_set_from"
                } else {
                    "set_from+push"
                },
                server as f64 / TICKS_PER_SECOND,
            );
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (direct, update) = (median(&mut cpu[0]), median(&mut cpu[1]));
    println!(
        "client CPU, medians: push_set_from {direct:.2} s, set_from+push {update:.2} s: {:.2}x",
        update / direct.max(0.01)
    );
}
