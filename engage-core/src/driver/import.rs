//! Drivers of the [`Importer`]: on any async runtime, on threads with blocking I/O, and on
//! the calling thread alone for sends that answer at once.

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{Request, Response};

use crate::delivery::{
    Feed, FeedFrom, ImportAction, ImportConfig, ImportEvent, ImportItem, ImportSummary, Importer,
    RequestId, TransportError, TransportErrorKind,
};

/// Hands every event left to the feed.
fn drain<F: Feed>(importer: &mut Importer, feed: &mut F) {
    while let Some(e) = importer.next_event() {
        feed.on_event(e);
    }
}

/// Imports `updates` on any async runtime: `send` performs one HTTP exchange, `sleep`
/// returns a future completing after a duration. Up to the concurrency limit's requests
/// are in flight at once (polled together on the calling task, no spawning). `on_event` sees
/// every event as it happens. Returns the totals.
///
/// ```
/// use engage_core::{BatchConfig, Endpoint, ImportConfig, Target, Token, Update};
/// use engage_core::driver::{ManualClock, import};
/// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     let mut f = std::pin::pin!(f);
/// #     let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
/// #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
/// # }
/// let config = ImportConfig::new(
///     BatchConfig::new(Token::new("tok").unwrap(), Endpoint::Engage).max_records(10),
///     Target::base_url("http://127.0.0.1:9").unwrap(),
/// );
/// let updates = (0..95).map(|i| Update::user(format!("u{}", i % 7)).add([("n", 1)]));
/// let clock = ManualClock::new();
/// let summary = block_on(import(
///     config, updates, &clock,
///     |_request| async { Ok(http::Response::new(bytes::Bytes::from_static(b"1"))) },
///     |d| { clock.advance(d); std::future::ready(()) },
///     |_event| {},
/// ));
/// assert_eq!((summary.records, summary.accepted, summary.batches), (95, 95, 10));
/// ```
pub async fn import<C, U, T, S, SF, W, WF, E>(
    config: ImportConfig,
    updates: U,
    clock: &C,
    send: S,
    sleep: W,
    on_event: E,
) -> ImportSummary
where
    C: crate::driver::Clock + ?Sized,
    U: IntoIterator<Item = T>,
    T: ImportItem,
    S: FnMut(Request<Bytes>) -> SF,
    SF: Future<Output = Result<Response<Bytes>, TransportError>>,
    W: FnMut(Duration) -> WF,
    WF: Future<Output = ()>,
    E: FnMut(ImportEvent),
{
    let mut feed = FeedFrom {
        source: updates.into_iter(),
        on_event,
    };
    run(config, &mut feed, clock, send, sleep).await
}

/// [`import`] with a [`Feed`]: the updates come from it and the events go to it (one
/// object keeps the whole account; it may also ask to stop). Returns the totals.
pub async fn run<C, F, S, SF, W, WF>(
    config: ImportConfig,
    feed: &mut F,
    clock: &C,
    mut send: S,
    mut sleep: W,
) -> ImportSummary
where
    C: crate::driver::Clock + ?Sized,
    F: Feed,
    S: FnMut(Request<Bytes>) -> SF,
    SF: Future<Output = Result<Response<Bytes>, TransportError>>,
    W: FnMut(Duration) -> WF,
    WF: Future<Output = ()>,
{
    use std::pin::Pin;
    use std::task::Poll;

    let mut importer = Importer::new(config);
    let mut in_flight: Vec<(RequestId, Pin<Box<SF>>)> = Vec::new();
    loop {
        match importer.step(clock.now(), feed) {
            ImportAction::Send { id, request } => in_flight.push((id, Box::pin(send(request)))),
            ImportAction::NeedInput => {}
            ImportAction::Done => break,
            ImportAction::Wait { until } => {
                // Back at once (a burst of input was read): look at the answers, no timer
                // (a runtime's timer may round a zero wait up to its tick).
                let now = clock.now();
                let at_once = until.is_some_and(|u| u <= now);
                let mut timer = until
                    .filter(|_| !at_once)
                    .map(|u| Box::pin(sleep(u.saturating_duration_since(now))));
                let done = std::future::poll_fn(|cx| {
                    for i in 0..in_flight.len() {
                        if let Poll::Ready(result) = in_flight[i].1.as_mut().poll(cx) {
                            let (id, _) = in_flight.swap_remove(i);
                            return Poll::Ready(Some((id, result)));
                        }
                    }
                    if at_once {
                        return Poll::Ready(None);
                    }
                    if let Some(t) = timer.as_mut()
                        && t.as_mut().poll(cx).is_ready()
                    {
                        return Poll::Ready(None);
                    }
                    if in_flight.is_empty() && timer.is_none() {
                        // Nothing can make progress: should not happen; poll again.
                        return Poll::Ready(None);
                    }
                    Poll::Pending
                })
                .await;
                if let Some((id, result)) = done {
                    importer.on_result(id, clock.now(), clock.wall(), result);
                }
            }
        }
    }
    drain(&mut importer, feed);
    importer.summary().clone()
}

/// Imports `updates` with blocking I/O on as many threads as the concurrency limit may
/// ever allow: each thread gets its own `send` function from `make_send`.
/// Waits use the real clock. Returns the totals.
pub fn import_blocking<U, T, M, S, E>(
    config: ImportConfig,
    updates: U,
    make_send: M,
    on_event: E,
) -> ImportSummary
where
    U: IntoIterator<Item = T>,
    T: ImportItem,
    M: Fn() -> S + Sync,
    S: FnMut(Request<Bytes>) -> Result<Response<Bytes>, TransportError>,
    E: FnMut(ImportEvent),
{
    let mut feed = FeedFrom {
        source: updates.into_iter(),
        on_event,
    };
    run_blocking(config, &mut feed, make_send)
}

/// [`import_blocking`] with a [`Feed`].
pub fn run_blocking<F, M, S>(config: ImportConfig, feed: &mut F, make_send: M) -> ImportSummary
where
    F: Feed,
    M: Fn() -> S + Sync,
    S: FnMut(Request<Bytes>) -> Result<Response<Bytes>, TransportError>,
{
    use std::sync::mpsc;
    use std::sync::{Arc, Mutex};

    let workers = config.concurrency.most();
    let mut importer = Importer::new(config);
    type Job = (RequestId, Request<Bytes>);
    type Done = (RequestId, Result<Response<Bytes>, TransportError>);
    let (job_tx, job_rx) = mpsc::channel::<Job>();
    let (done_tx, done_rx) = mpsc::channel::<Done>();
    let job_rx = Arc::new(Mutex::new(job_rx));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let job_rx = job_rx.clone();
            let done_tx = done_tx.clone();
            let make_send = &make_send;
            scope.spawn(move || {
                let mut send = make_send();
                loop {
                    let job = job_rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok((id, request)) = job else { return };
                    // A panicking send must not leave the importer waiting forever.
                    let result =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| send(request)))
                            .unwrap_or_else(|_| {
                                Err(TransportError::new(
                                    TransportErrorKind::Protocol,
                                    true,
                                    "the send function panicked",
                                ))
                            });
                    if done_tx.send((id, result)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(done_tx);
        loop {
            match importer.step(Instant::now(), feed) {
                ImportAction::Send { id, request } => {
                    if job_tx.send((id, request)).is_err() {
                        break;
                    }
                }
                ImportAction::NeedInput => {}
                ImportAction::Done => break,
                ImportAction::Wait { until } => {
                    let got = match until {
                        Some(u) => done_rx
                            .recv_timeout(u.saturating_duration_since(Instant::now()))
                            .ok(),
                        None if importer.in_flight() > 0 => done_rx.recv().ok(),
                        None => None,
                    };
                    if let Some((id, result)) = got {
                        importer.on_result(id, Instant::now(), SystemTime::now(), result);
                    }
                }
            }
        }
        drop(job_tx);
    });
    drain(&mut importer, feed);
    importer.summary().clone()
}

/// Runs an import with a [`Feed`] on the calling thread alone, one request at a time: each
/// request is sent with `send` as soon as the importer asks, and its answer is handed back
/// before any more input is read. For a `send` that answers at once (checking a file
/// without sending it, writing bodies to disk, an in-process sink): it spares the thread
/// hand-offs [`run_blocking`] makes so that input is read while a request is out. Waits
/// (a retry's pause) sleep on the real clock, in steps of the feed's
/// [`check_every`](Feed::check_every) so that a stop is noticed. A feed whose input is
/// not ready ([`Next::Idle`](crate::delivery::Next::Idle)) is asked again at once: give
/// this driver a feed that blocks for its input, or use [`run`]. Returns the totals.
///
/// ```
/// use bytes::Bytes;
/// use engage_core::{BatchConfig, Endpoint, ImportConfig, Target, Token, Update};
/// use engage_core::delivery::FeedFrom;
/// use engage_core::driver::run_inline;
/// let config = ImportConfig::new(
///     BatchConfig::new(Token::new("tok").unwrap(), Endpoint::Engage).max_records(10),
///     Target::base_url("http://127.0.0.1:9").unwrap(),
/// );
/// let mut feed = FeedFrom {
///     source: (0..95).map(|i| Update::user(format!("u{}", i % 7)).add([("n", 1)])),
///     on_event: |_event| {},
/// };
/// let mut bodies = 0;
/// let summary = run_inline(config, &mut feed, |_request| {
///     bodies += 1;
///     Ok(http::Response::new(Bytes::from_static(b"1")))
/// });
/// assert_eq!((summary.accepted, bodies), (95, 10));
/// ```
pub fn run_inline<F, S>(config: ImportConfig, feed: &mut F, mut send: S) -> ImportSummary
where
    F: Feed,
    S: FnMut(Request<Bytes>) -> Result<Response<Bytes>, TransportError>,
{
    let mut importer = Importer::new(config);
    loop {
        match importer.step(Instant::now(), feed) {
            ImportAction::Send { id, request } => {
                let result = send(request);
                importer.on_result(id, Instant::now(), SystemTime::now(), result);
            }
            ImportAction::NeedInput => {}
            ImportAction::Done => break,
            // Nothing is ever in flight here: a wait is a pause before a retry (slept in
            // steps of the feed's `check_every`, so that a stop is noticed), or for more
            // input, which the next step asks the feed for.
            ImportAction::Wait { until } => {
                if let Some(until) = until {
                    let mut pause = until.saturating_duration_since(Instant::now());
                    if let Some(every) = feed.check_every() {
                        pause = pause.min(every);
                    }
                    std::thread::sleep(pause);
                }
            }
        }
    }
    drain(&mut importer, feed);
    importer.summary().clone()
}
