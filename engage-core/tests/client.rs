//! The application client's worker on simulated time: linger, a full queue, flush, and a
//! shutdown that accounts for everything, including what never left the queue.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use engage_core::client::{Client, ClientConfig, Delivered, Outcome, TrySendError};
use engage_core::delivery::Concurrency;
use engage_core::driver::{Clock, ManualClock};
use engage_core::{Target, Token, Update};

fn config() -> ClientConfig {
    ClientConfig::new(
        Token::new("tok").unwrap(),
        Target::base_url("http://127.0.0.1:9").unwrap(),
    )
    .concurrency(Concurrency::Fixed(2))
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::yield_now();
    }
}

fn ok() -> http::Response<Bytes> {
    http::Response::new(Bytes::from_static(b"1"))
}

#[test]
fn a_lone_update_goes_out_when_its_linger_is_over() {
    let (client, worker) = Client::new(config().linger(Duration::from_millis(750)));
    let clock = Arc::new(ManualClock::new());
    let t0 = clock.now();
    let sent_at = Arc::new(Mutex::new(Vec::new()));
    let (c, s) = (clock.clone(), sent_at.clone());
    let running = std::thread::spawn(move || {
        block_on(worker.run(
            &*c,
            |_req| {
                s.lock().unwrap().push(c.now());
                std::future::ready(Ok(ok()))
            },
            |d| {
                c.advance(d);
                std::future::ready(())
            },
        ))
    });
    client
        .try_send(Update::user("lone").set([("x", 1)]))
        .unwrap();
    while sent_at.lock().unwrap().is_empty() {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(sent_at.lock().unwrap()[0] - t0, Duration::from_millis(750));
    let summary = client.shutdown_blocking(Duration::from_secs(5));
    let _ = running.join().unwrap();
    assert_eq!(
        (summary.sent, summary.accepted, summary.requests),
        (1, 1, 1)
    );
}

#[test]
fn a_full_queue_hands_the_update_back() {
    let (client, _worker) = Client::new(config().queue(2));
    client.try_send(Update::user("a").set([("x", 1)])).unwrap();
    client.try_send(Update::user("b").set([("x", 1)])).unwrap();
    let Err(TrySendError::Full(back)) = client.try_send(Update::user("c").set([("x", 1)])) else {
        panic!("the third does not fit");
    };
    assert_eq!(back.profile().unwrap().to_string(), "distinct_id \"c\"");
    assert_eq!(client.totals().sent, 2);
}

#[test]
fn a_sender_waiting_on_a_full_queue_goes_on_once_the_worker_drains_it() {
    let (client, worker) = Client::new(config().queue(4).linger(Duration::ZERO));
    for i in 0..4 {
        client
            .try_send(Update::user(format!("u{i}")).set([("x", 1)]))
            .unwrap();
    }
    // The fifth waits for room: the worker is not running yet.
    let waiting = {
        let client = client.clone();
        std::thread::spawn(move || client.send_blocking(Update::user("u4").set([("x", 1)])))
    };
    std::thread::sleep(Duration::from_millis(20));
    assert!(!waiting.is_finished(), "a full queue makes the sender wait");
    assert_eq!(client.totals().sent, 4);
    let clock = Arc::new(ManualClock::new());
    let c = clock.clone();
    let running = std::thread::spawn(move || {
        block_on(worker.run(
            &*c,
            |_req| std::future::ready(Ok(ok())),
            |d| {
                c.advance(d);
                std::future::ready(())
            },
        ))
    });
    assert_eq!(
        waiting.join().unwrap().unwrap(),
        4,
        "the fifth gets the next id"
    );
    let summary = client.shutdown_blocking(Duration::from_secs(5));
    let _ = running.join().unwrap();
    assert_eq!((summary.sent, summary.accepted), (5, 5));
}

#[test]
fn a_sender_waiting_on_a_full_queue_gets_its_update_back_at_shutdown() {
    let (client, _worker) = Client::new(config().queue(2));
    client.try_send(Update::user("a").set([("x", 1)])).unwrap();
    client.try_send(Update::user("b").set([("x", 1)])).unwrap();
    let waiting = {
        let client = client.clone();
        std::thread::spawn(move || client.send_blocking(Update::user("c").set([("x", 1)])))
    };
    std::thread::sleep(Duration::from_millis(20));
    assert!(!waiting.is_finished(), "a full queue makes the sender wait");
    // The worker never runs: the shutdown wakes the sender, which gets its update back.
    client.begin_shutdown(Duration::from_secs(1));
    let Err(closed) = waiting.join().unwrap() else {
        panic!("a closing client takes nothing more");
    };
    assert_eq!(closed.0.profile().unwrap().to_string(), "distinct_id \"c\"");
    assert_eq!(client.totals().sent, 2);
}

#[test]
fn flush_waits_for_what_came_before_and_shutdown_accounts_for_everything() {
    let outcomes = Arc::new(Mutex::new(Vec::<Delivered>::new()));
    let seen = outcomes.clone();
    let (client, worker) = Client::new(
        config()
            .linger(Duration::from_secs(3600))
            .queue(100)
            .on_outcome(move |d| seen.lock().unwrap().push(d.clone())),
    );
    let clock = Arc::new(ManualClock::new());
    // The server answers the first request, then never again.
    let answered = Arc::new(Mutex::new(0));
    let (c, a) = (clock.clone(), answered.clone());
    let running = std::thread::spawn(move || {
        block_on(worker.run(
            &*c,
            |_req| {
                let first = {
                    let mut n = a.lock().unwrap();
                    *n += 1;
                    *n == 1
                };
                async move {
                    if first {
                        Ok(ok())
                    } else {
                        std::future::pending().await
                    }
                }
            },
            |d| {
                c.advance(d);
                std::future::ready(())
            },
        ))
    });
    for i in 0..3 {
        client
            .send_blocking(Update::user(format!("u{i}")).add([("n", 1)]))
            .unwrap();
    }
    // Without the flush these would wait an hour: the flush sends them and returns once
    // they are settled.
    assert!(client.flush_blocking());
    assert_eq!(client.totals().accepted, 3);
    // Two more: the request carrying them never answers; the shutdown's deadline ends it.
    for i in 0..2 {
        client
            .send_blocking(Update::user(format!("v{i}")).add([("n", 1)]))
            .unwrap();
    }
    let summary = client.shutdown_blocking(Duration::from_secs(2));
    let _ = running.join().unwrap();
    assert_eq!(summary.sent, 5);
    assert_eq!(summary.accepted, 3);
    assert_eq!(summary.not_delivered, 2);
    assert_eq!(summary.maybe_applied, 2, "in flight at the deadline");
    assert_eq!(summary.settled(), 5);
    // Each update's outcome was told once, by its id.
    let mut ids: Vec<u64> = outcomes.lock().unwrap().iter().map(|d| d.id).collect();
    ids.sort();
    assert_eq!(ids, [0, 1, 2, 3, 4]);
    assert!(
        outcomes
            .lock()
            .unwrap()
            .iter()
            .filter(|d| matches!(
                d.outcome,
                Outcome::NotDelivered {
                    maybe_applied: true,
                    ..
                }
            ))
            .count()
            == 2
    );
    // After the shutdown nothing is taken.
    assert!(
        client
            .try_send(Update::user("late").set([("x", 1)]))
            .is_err()
    );
}

#[test]
fn dropping_every_handle_delivers_what_is_queued_then_ends_the_worker() {
    let (client, worker) = Client::new(config().queue(100).linger(Duration::from_secs(3600)));
    for i in 0..10 {
        client
            .try_send(Update::user(format!("u{i}")).set([("x", i)]))
            .unwrap();
    }
    let other = client.clone();
    drop(client);
    other
        .try_send(Update::user("last").set([("x", 1)]))
        .unwrap();
    drop(other);
    // No shutdown: the worker ends by itself once the queue is empty, nothing left out,
    // even with an hour's linger.
    let clock = Arc::new(ManualClock::new());
    let c = clock.clone();
    let summary = block_on(worker.run(
        &*c,
        |_req| std::future::ready(Ok(ok())),
        |d| {
            c.advance(d);
            std::future::ready(())
        },
    ));
    assert_eq!((summary.sent, summary.accepted), (11, 11), "{summary:?}");
}

#[test]
fn a_worker_dropped_without_running_refuses_senders_instead_of_leaving_them_waiting() {
    let (client, worker) = Client::new(config().queue(1));
    client.try_send(Update::user("a").set([("x", 1)])).unwrap();
    let waiting = {
        let client = client.clone();
        std::thread::spawn(move || client.send_blocking(Update::user("b").set([("x", 1)])))
    };
    std::thread::sleep(Duration::from_millis(20));
    assert!(!waiting.is_finished(), "a full queue makes the sender wait");
    // Its runtime went away: the update comes back, the sender does not hang.
    drop(worker);
    let Err(closed) = waiting.join().unwrap() else {
        panic!("no worker takes it");
    };
    assert_eq!(closed.0.profile().unwrap().to_string(), "distinct_id \"b\"");
    assert!(client.try_send(Update::user("c").set([("x", 1)])).is_err());
    // A shutdown returns the running totals instead of waiting for a final account.
    let shutting = std::thread::spawn(move || client.shutdown_blocking(Duration::from_secs(1)));
    for _ in 0..500 {
        if shutting.is_finished() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        shutting.is_finished(),
        "shutdown waits for a worker that is gone"
    );
    assert_eq!(shutting.join().unwrap().sent, 1);
}

#[test]
fn a_lone_update_lingering_does_not_keep_the_worker_looking_every_millisecond() {
    let (client, worker) = Client::new(config().linger(Duration::from_secs(10)));
    let clock = Arc::new(ManualClock::new());
    let sleeps = Arc::new(Mutex::new(Vec::<Duration>::new()));
    let sent = Arc::new(Mutex::new(0));
    let (c, z, n) = (clock.clone(), sleeps.clone(), sent.clone());
    let running = std::thread::spawn(move || {
        block_on(worker.run(
            &*c,
            |_req| {
                *n.lock().unwrap() += 1;
                std::future::ready(Ok(ok()))
            },
            |d| {
                z.lock().unwrap().push(d);
                c.advance(d);
                std::future::ready(())
            },
        ))
    });
    client
        .try_send(Update::user("lone").set([("x", 1)]))
        .unwrap();
    while *sent.lock().unwrap() == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let waits = sleeps.lock().unwrap().clone();
    // One short look after the update came (more may be on the way), then the linger.
    assert!(
        waits.len() <= 4,
        "{} waits: {:?}",
        waits.len(),
        &waits[..waits.len().min(8)]
    );
    let summary = client.shutdown_blocking(Duration::from_secs(5));
    let _ = running.join().unwrap();
    assert_eq!((summary.sent, summary.accepted), (1, 1));
}

#[test]
fn a_driver_of_its_own_is_woken_once_by_the_first_message_after_the_queue_ran_empty() {
    use engage_core::delivery::{ImportAction, Importer};
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    let (client, worker) = Client::new(config());
    let (import, mut feed) = worker.into_parts();
    let woken = Arc::new(AtomicUsize::new(0));
    let w = woken.clone();
    feed.wake_with(move || {
        w.fetch_add(1, SeqCst);
    });
    let clock = ManualClock::new();
    let mut importer = Importer::new(import);
    let send = |id: &str| client.try_send(Update::user(id).set([("x", 1)])).unwrap();
    // Nothing queued: the importer waits for input; the driver may wait, armed.
    assert!(matches!(
        importer.step(clock.now(), &mut feed),
        ImportAction::Wait { .. }
    ));
    assert!(feed.arm_wake());
    send("a");
    assert_eq!(woken.load(SeqCst), 1, "the first message wakes the driver");
    send("b");
    assert_eq!(woken.load(SeqCst), 1, "one wake-up, not one per message");
    // Messages came since the importer looked: step again rather than wait.
    assert!(!feed.arm_wake());
    assert!(matches!(
        importer.step(clock.now(), &mut feed),
        ImportAction::Wait { .. }
    ));
    // Senders are busy (the last look found messages): a short look again, not armed.
    assert!(feed.arm_wake());
    send("c");
    assert_eq!(woken.load(SeqCst), 1, "busy senders pay no wake-up");
    clock.advance(Duration::from_millis(1));
    let _ = importer.step(clock.now(), &mut feed);
    let _ = importer.step(clock.now(), &mut feed);
    // The queue stayed empty on the next look: armed again.
    assert!(feed.arm_wake());
    send("d");
    assert_eq!(woken.load(SeqCst), 2);
}
