//! Runtime-free drivers: run a [`Delivery`] or an
//! [`Importer`](crate::delivery::Importer) with the caller's send and sleep functions, on
//! the caller's clock.

mod import;

pub use import::{import, import_blocking, run, run_blocking, run_inline};

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{Request, Response};

use crate::delivery::{Action, Delivery, Report, TransportError};

/// Where drivers read the time. [`SystemClock`] reads the real clocks; [`ManualClock`]
/// is moved by hand (or by a simulated sleep) in tests.
pub trait Clock {
    /// Monotonic now.
    fn now(&self) -> Instant;
    /// Wall-clock now (only used for HTTP-date `Retry-After` without a `Date` header).
    fn wall(&self) -> SystemTime;
}

/// The process's real clocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that only moves when told to: simulated time for tests of retry schedules.
///
/// ```
/// use engage_core::driver::{Clock, ManualClock};
/// use std::time::Duration;
/// let clock = ManualClock::new();
/// let t0 = clock.now();
/// clock.advance(Duration::from_secs(7));
/// assert_eq!(clock.now() - t0, Duration::from_secs(7));
/// ```
#[derive(Debug)]
pub struct ManualClock {
    base: Instant,
    wall_base: SystemTime,
    offset: Mutex<Duration>,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl ManualClock {
    /// A clock standing at an arbitrary instant and at 2023-11-14T22:13:20 UTC.
    pub fn new() -> Self {
        ManualClock {
            base: Instant::now(),
            wall_base: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            offset: Mutex::new(Duration::ZERO),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let mut offset = self.offset.lock().unwrap_or_else(|e| e.into_inner());
        *offset += by;
    }

    /// Time elapsed since the clock was made.
    pub fn elapsed(&self) -> Duration {
        *self.offset.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.base + self.elapsed()
    }
    fn wall(&self) -> SystemTime {
        self.wall_base + self.elapsed()
    }
}

/// Delivers one batch on the current thread: `send` performs one HTTP exchange, `sleep`
/// waits. Returns when every record is settled.
///
/// ```
/// use engage_core::{BatchConfig, Endpoint, RetryPolicy, Target, Token, Update, batches};
/// use engage_core::delivery::{Delivery};
/// use engage_core::driver::{ManualClock, deliver_blocking};
/// let token = Token::new("tok").unwrap();
/// let batch = batches(BatchConfig::new(token, Endpoint::Engage), [Update::user("u1").set([("a", 1)])])
///     .next().unwrap().unwrap();
/// let delivery = Delivery::new(batch, Target::default(), RetryPolicy::default());
/// let clock = ManualClock::new();
/// let mut answers = vec![(503, "busy"), (200, "{\"status\":1,\"error\":null}")].into_iter();
/// let report = deliver_blocking(delivery, &clock, |_request| {
///     let (status, body) = answers.next().unwrap();
///     let mut r = http::Response::new(bytes::Bytes::from(body));
///     *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
///     Ok(r)
/// }, |d| clock.advance(d));
/// assert!(report.all_accepted());
/// assert_eq!(report.retries, 1);
/// ```
pub fn deliver_blocking<C, S, W>(
    mut delivery: Delivery,
    clock: &C,
    mut send: S,
    mut sleep: W,
) -> Report
where
    C: Clock + ?Sized,
    S: FnMut(Request<Bytes>) -> Result<Response<Bytes>, TransportError>,
    W: FnMut(Duration),
{
    loop {
        match delivery.poll(clock.now()) {
            Action::Send(request) => match send(request) {
                Ok(response) => delivery.on_response(clock.now(), clock.wall(), &response),
                Err(error) => delivery.on_transport_error(clock.now(), error),
            },
            Action::Wait { until, .. } => sleep(until.saturating_duration_since(clock.now())),
            // Every Send above is answered before polling again, so this cannot happen;
            // stop rather than spin.
            Action::AwaitResponse | Action::Done => return delivery.into_report(),
        }
    }
}

/// Delivers one batch asynchronously, on any runtime: `send` performs one HTTP exchange,
/// `sleep` returns a future that completes after the given duration.
///
/// ```
/// use engage_core::{BatchConfig, Endpoint, RetryPolicy, Target, Token, Update, batches};
/// use engage_core::delivery::{Delivery};
/// use engage_core::driver::{ManualClock, deliver};
/// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     let mut f = std::pin::pin!(f);
/// #     let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
/// #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
/// # }
/// let token = Token::new("tok").unwrap();
/// let batch = batches(BatchConfig::new(token, Endpoint::Engage), [Update::user("u1").set([("a", 1)])])
///     .next().unwrap().unwrap();
/// let delivery = Delivery::new(batch, Target::default(), RetryPolicy::default());
/// let clock = ManualClock::new();
/// let report = block_on(deliver(delivery, &clock,
///     |_req| async { Ok(http::Response::new(bytes::Bytes::from_static(b"1"))) },
///     |d| { clock.advance(d); std::future::ready(()) }));
/// assert!(report.all_accepted());
/// ```
pub async fn deliver<C, S, SF, W, WF>(
    mut delivery: Delivery,
    clock: &C,
    mut send: S,
    mut sleep: W,
) -> Report
where
    C: Clock + ?Sized,
    S: FnMut(Request<Bytes>) -> SF,
    SF: Future<Output = Result<Response<Bytes>, TransportError>>,
    W: FnMut(Duration) -> WF,
    WF: Future<Output = ()>,
{
    loop {
        match delivery.poll(clock.now()) {
            Action::Send(request) => match send(request).await {
                Ok(response) => delivery.on_response(clock.now(), clock.wall(), &response),
                Err(error) => delivery.on_transport_error(clock.now(), error),
            },
            Action::Wait { until, .. } => sleep(until.saturating_duration_since(clock.now())).await,
            Action::AwaitResponse | Action::Done => return delivery.into_report(),
        }
    }
}
