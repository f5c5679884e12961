//! Delivering one batch: a deterministic state machine in the style of quinn-proto.
//! Inputs in (responses, transport errors, the current time), actions out (send this,
//! wait until then, done). It never reads a clock, sleeps or does I/O.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{Request, Response, StatusCode};

use crate::batch::Batch;
use crate::delivery::transport::{TransportError, TransportErrorKind};
use crate::exchange::{Answer, FatalKind, ParseOptions, RecordFailure, Target, parse_response};
use crate::model::ProfileId;

/// Emits a tracing event inside the batch's span when the `tracing` feature is on; nothing
/// otherwise.
macro_rules! trace_event {
    ($self:ident, $level:ident, $($rest:tt)*) => {
        #[cfg(feature = "tracing")]
        {
            let _entered = $self.span.enter();
            tracing::$level!($($rest)*);
        }
    };
}

/// No single wait is longer than a day, whatever the settings or the server say: keeps
/// instant arithmetic far from overflow.
const LONGEST_WAIT: Duration = Duration::from_secs(86_400);

/// When and how often to retry. Defaults follow Mixpanel's advice: backoff from about
/// 2 s doubling to 60 s with jitter, 10 attempts, 10 minutes in all.
///
/// ```
/// use engage_core::RetryPolicy;
/// use std::time::Duration;
/// let policy = RetryPolicy::default()
///     .max_attempts(5)
///     .backoff(Duration::from_millis(500), Duration::from_secs(30))
///     .at_most_once(true)
///     .seed(7);
/// assert_eq!(policy.attempts_limit(), 5);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    max_attempts: u32,
    backoff_base: Duration,
    backoff_max: Duration,
    time_budget: Duration,
    max_retry_after: Duration,
    at_most_once: bool,
    seed: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 10,
            backoff_base: Duration::from_secs(2),
            backoff_max: Duration::from_secs(60),
            time_budget: Duration::from_secs(600),
            max_retry_after: Duration::from_secs(300),
            at_most_once: false,
            seed: 0x5eed_e4a6_e000_0001,
        }
    }
}

impl RetryPolicy {
    /// At most `n` attempts per request body (the first included; at least 1).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// Exponential backoff: `base` doubling per attempt up to `max`, with jitter (each
    /// wait is between half and all of that).
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.backoff_base = base.min(LONGEST_WAIT);
        self.backoff_max = max.max(base).min(LONGEST_WAIT);
        self
    }

    /// Give up on a batch whose next attempt would start more than `budget` after its first.
    pub fn time_budget(mut self, budget: Duration) -> Self {
        self.time_budget = budget;
        self
    }

    /// Longest `Retry-After` honoured (longer ones are cut to this).
    pub fn max_retry_after(mut self, max: Duration) -> Self {
        self.max_retry_after = max.min(LONGEST_WAIT);
        self
    }

    /// At-most-once for non-idempotent updates: after an ambiguous failure (a 5xx, or a
    /// transport error after the request may have reached the server), never resend
    /// `$add`/`$append` updates; report them as not delivered instead. Idempotent updates of
    /// the same batch are still resent.
    pub fn at_most_once(mut self, yes: bool) -> Self {
        self.at_most_once = yes;
        self
    }

    /// Seed of the jitter, for reproducible schedules.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The attempt limit.
    pub fn attempts_limit(&self) -> u32 {
        self.max_attempts
    }

    /// Whether at-most-once is on.
    pub fn is_at_most_once(&self) -> bool {
        self.at_most_once
    }

    /// The longest `Retry-After` honoured.
    pub fn retry_after_limit(&self) -> Duration {
        self.max_retry_after
    }

    /// The first backoff delay (also how long a 429 without `Retry-After` pauses an
    /// import).
    pub fn backoff_base(&self) -> Duration {
        self.backoff_base
    }
}

/// The last failure of a request body before giving up.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum LastFailure {
    /// An HTTP answer.
    Status {
        /// Its status.
        status: StatusCode,
        /// Its raw body.
        body: Bytes,
    },
    /// No answer.
    Transport(TransportError),
}

/// Up to 300 characters of a body, for messages, with control characters escaped (see
/// [`escape_controls`](crate::escape_controls)): a server's bytes must not drive the
/// terminal the message is shown on.
pub(crate) fn body_excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut s = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == 300 {
            s.push('…');
            break;
        }
        crate::text::push_escaped(&mut s, c);
    }
    s
}

impl fmt::Display for LastFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LastFailure::Status { status, body } => {
                write!(f, "HTTP {status}: {}", body_excerpt(body))
            }
            LastFailure::Transport(e) => write!(f, "{e}"),
        }
    }
}

/// Why a record was not delivered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryError {
    /// Every allowed attempt failed.
    #[error("gave up after {attempts} attempts; last: {last}")]
    Exhausted {
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: LastFailure,
    },
    /// The next attempt would have started after the time budget.
    #[error("time budget of {budget:?} spent; last: {last}")]
    BudgetExceeded {
        /// The budget.
        budget: Duration,
        /// The last failure.
        last: LastFailure,
    },
    /// Mixpanel refused the request and retrying will not help (400, 401, 403, an
    /// unexpected status, or a success status with a body of no known shape).
    #[error("refused with HTTP {status} ({kind:?}): {}", body_excerpt(body))]
    Refused {
        /// What kind of refusal.
        kind: FatalKind,
        /// The status.
        status: StatusCode,
        /// The raw body.
        body: Bytes,
    },
    /// The record alone was answered 413.
    #[error(
        "the record alone is too large for the server (413): {}",
        body_excerpt(body)
    )]
    TooLarge {
        /// The raw body.
        body: Bytes,
    },
    /// Not resent under at-most-once: an earlier attempt may have been applied, and an
    /// `$add`/`$append` sent twice counts twice.
    #[error("not resent (at-most-once): an earlier attempt may have been applied; last: {last}")]
    UncertainResendRefused {
        /// The ambiguous failure.
        last: LastFailure,
    },
    /// A transport failure that retrying will not heal (TLS).
    #[error("{0}")]
    Transport(TransportError),
    /// The delivery was stopped before this record was settled (a request carrying it may
    /// have been in flight: see [`RecordReport::maybe_applied`]).
    #[error("delivery stopped before the record was settled")]
    Abandoned,
    /// The import stopped (interrupted, or shut down past its deadline) before this record
    /// was sent, or before it was sent again.
    #[error("the import stopped before this record was sent")]
    Stopped,
    /// The answer counted fewer imported records than it left unrejected
    /// (`num_records_imported`): which of them were applied is unknown, so none is
    /// reported accepted and each may have been applied.
    #[error(
        "the server said it imported {imported} record(s) where {expected} were not rejected: this one may or may not have been applied"
    )]
    CountMismatch {
        /// `num_records_imported` in the answer.
        imported: u64,
        /// Records of the request the answer did not reject.
        expected: u64,
    },
    /// Mixpanel rejected records of this request without saying which (no usable index
    /// or id): this record may have been applied or rejected.
    #[error("{count} rejection(s) in the answer name no record; this one's fate is unknown")]
    UnmappedRejections {
        /// Rejections that named no record.
        count: usize,
    },
}

/// What became of one record.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RecordOutcome {
    /// Mixpanel accepted it.
    Accepted,
    /// Mixpanel rejected it.
    Rejected {
        /// The field it named, if any.
        field: Option<String>,
        /// Its message.
        message: String,
    },
    /// It was not delivered.
    NotDelivered(DeliveryError),
}

/// One record's line in a [`Report`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RecordReport {
    /// The update's position in the caller's input.
    pub index: u64,
    /// Its position in the batch.
    pub position: usize,
    /// What became of it.
    pub outcome: RecordOutcome,
    /// How many times it was resent after an attempt that may have applied it. Non-zero
    /// only for `$add`/`$append` records: if accepted, it may have counted more than once.
    pub uncertain_resends: u32,
    /// Not delivered, but an attempt may have been applied anyway (a 5xx, a timeout or a
    /// connection lost after sending, an answer of no known shape): sending it again
    /// later may apply it twice.
    pub maybe_applied: bool,
}

impl RecordReport {
    /// Accepted, but only after a resend that may have applied it twice.
    pub fn is_uncertain(&self) -> bool {
        self.uncertain_resends > 0 && matches!(self.outcome, RecordOutcome::Accepted)
    }
}

/// The result of delivering one batch: every record accounted for once.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Report {
    /// One line per record, in batch order.
    pub records: Vec<RecordReport>,
    /// The batch (for identities: `batch.record(position)`).
    pub batch: Batch,
    /// Requests sent.
    pub requests: u32,
    /// Requests that were resends.
    pub retries: u32,
    /// 429 answers received.
    pub throttled: u32,
    /// Time spent waiting between attempts.
    pub waited: Duration,
    /// Record resends after an ambiguous failure (per record, summed).
    pub uncertain_resends: u32,
    /// Rejections whose `index` did not name a record of the request.
    pub unmapped_failures: Vec<RecordFailure>,
    /// A refusal that ended the whole delivery (401, 403, 407, TLS, a proxy refusing the
    /// tunnel): importers should stop.
    pub fatal: Option<DeliveryError>,
}

impl Report {
    fn count(&self, f: impl Fn(&RecordReport) -> bool) -> usize {
        self.records.iter().filter(|r| f(r)).count()
    }
    /// Records accepted (including uncertain ones).
    pub fn accepted(&self) -> usize {
        self.count(|r| matches!(r.outcome, RecordOutcome::Accepted))
    }
    /// Records Mixpanel rejected.
    pub fn rejected(&self) -> usize {
        self.count(|r| matches!(r.outcome, RecordOutcome::Rejected { .. }))
    }
    /// Records not delivered.
    pub fn not_delivered(&self) -> usize {
        self.count(|r| matches!(r.outcome, RecordOutcome::NotDelivered(_)))
    }
    /// Records accepted after an uncertain resend.
    pub fn uncertain(&self) -> usize {
        self.count(RecordReport::is_uncertain)
    }
    /// Whether every record was accepted.
    pub fn all_accepted(&self) -> bool {
        self.accepted() == self.records.len()
    }
    /// The profile of the record at `position`.
    pub fn profile(&self, position: usize) -> Option<ProfileId> {
        self.batch.record(position).map(|r| r.profile())
    }
}

/// What the caller should do next for a [`Delivery`].
// The request is moved straight into the transport; boxing it would cost an allocation
// per send for nothing.
#[allow(clippy::large_enum_variant)]
pub enum Action {
    /// Send this request, then feed the response or transport error back.
    Send(Request<Bytes>),
    /// Poll again at `until` (not before).
    Wait {
        /// When.
        until: Instant,
        /// Because of a 429: the whole project is throttled, so an importer should hold
        /// back its other sends too.
        throttled: bool,
    },
    /// A request is out: feed its response or error first.
    AwaitResponse,
    /// Finished: take the [`Report`] with [`Delivery::into_report`].
    Done,
}

impl fmt::Debug for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // The body holds the token: show its size only.
            Action::Send(r) => f
                .debug_struct("Send")
                .field("method", r.method())
                .field("uri", r.uri())
                .field("body_bytes", &r.body().len())
                .finish(),
            Action::Wait { until, throttled } => f
                .debug_struct("Wait")
                .field("until", until)
                .field("throttled", throttled)
                .finish(),
            Action::AwaitResponse => f.write_str("AwaitResponse"),
            Action::Done => f.write_str("Done"),
        }
    }
}

#[derive(Debug)]
struct Part {
    /// The records it sends: `None` for the whole original batch (the usual case, which
    /// then needs no copy of its records' list), else a subset or a half of it.
    batch: Option<Batch>,
    /// For each record of its batch, its position in the original batch.
    positions: Vec<usize>,
    attempts: u32,
    maybe_applied: bool,
    last: Option<LastFailure>,
}

impl Part {
    /// The records it sends, `original` being the delivery's batch.
    fn batch<'a>(&'a self, original: &'a Batch) -> &'a Batch {
        self.batch.as_ref().unwrap_or(original)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Ready,
    InFlight,
    Waiting { until: Instant, throttled: bool },
    Done,
}

/// Delivers one [`Batch`]: says what to send and when, reads what came back, retries
/// with backoff, honours `Retry-After`, splits on 413, and accounts for every record.
///
/// Deterministic: the caller passes the time with every call. Drive it with
/// [`deliver_blocking`](crate::driver::deliver_blocking) or [`deliver`](crate::driver::deliver), or by
/// hand:
///
/// ```
/// use engage_core::{BatchConfig, Endpoint, RetryPolicy, Target, Token, Update, batches};
/// use engage_core::delivery::{Action, Delivery};
/// use std::time::{Duration, Instant, SystemTime};
/// let token = Token::new("tok").unwrap();
/// let batch = batches(BatchConfig::new(token, Endpoint::Engage), [Update::user("u1").add([("n", 1)])])
///     .next().unwrap().unwrap();
/// let mut delivery = Delivery::new(batch, Target::base_url("http://127.0.0.1:9").unwrap(), RetryPolicy::default());
/// let t0 = Instant::now();
/// let Action::Send(_request) = delivery.poll(t0) else { panic!() };
/// let mut throttled = http::Response::new(bytes::Bytes::from_static(b"{}"));
/// *throttled.status_mut() = http::StatusCode::TOO_MANY_REQUESTS;
/// throttled.headers_mut().insert("retry-after", "7".parse().unwrap());
/// delivery.on_response(t0, SystemTime::now(), &throttled);
/// let Action::Wait { until, throttled: true } = delivery.poll(t0) else { panic!() };
/// assert_eq!(until - t0, Duration::from_secs(7));
/// let Action::Send(_again) = delivery.poll(until) else { panic!() };
/// delivery.on_response(until, SystemTime::now(), &http::Response::new(bytes::Bytes::from_static(b"1")));
/// assert!(matches!(delivery.poll(until), Action::Done));
/// let report = delivery.into_report();
/// assert!(report.all_accepted());
/// assert_eq!((report.requests, report.retries), (2, 1));
/// ```
#[derive(Debug)]
pub struct Delivery {
    target: Target,
    policy: RetryPolicy,
    rng: crate::rng::SplitMix64,
    original: Batch,
    queue: VecDeque<Part>,
    state: State,
    started: Option<Instant>,
    /// The report's lines, filled in as records settle: an unsettled record's outcome is
    /// [`DeliveryError::Abandoned`] until then. Kept in the report's own form, so that
    /// settling a batch of 2000 writes each line once and the report is handed over
    /// without a second pass.
    records: Vec<RecordReport>,
    requests: u32,
    retries: u32,
    throttled: u32,
    waited: Duration,
    uncertain_resends: u32,
    unmapped: Vec<RecordFailure>,
    fatal: Option<DeliveryError>,
    #[cfg(feature = "tracing")]
    span: tracing::Span,
}

/// A report's lines for `batch` before anything is settled: each record not delivered
/// ([`DeliveryError::Abandoned`], what it stays if the delivery is given up unfinished).
fn unsettled_lines(batch: &Batch) -> Vec<RecordReport> {
    batch
        .records()
        .map(|r| RecordReport {
            index: r.index(),
            position: r.position(),
            outcome: RecordOutcome::NotDelivered(DeliveryError::Abandoned),
            uncertain_resends: 0,
            maybe_applied: false,
        })
        .collect()
}

impl Delivery {
    /// A delivery of `batch` to `target` under `policy`.
    pub fn new(batch: Batch, target: Target, policy: RetryPolicy) -> Self {
        let n = batch.len();
        let first_index = batch.record(0).map(|r| r.index()).unwrap_or(0);
        let records = unsettled_lines(&batch);
        #[cfg(feature = "tracing")]
        let batch_endpoint_path = batch.endpoint().path();
        Delivery {
            target,
            policy,
            rng: crate::rng::SplitMix64::new(
                policy.seed ^ first_index.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            ),
            queue: VecDeque::from([Part {
                batch: None,
                positions: (0..n).collect(),
                attempts: 0,
                maybe_applied: false,
                last: None,
            }]),
            original: batch,
            state: State::Ready,
            started: None,
            records,
            requests: 0,
            retries: 0,
            throttled: 0,
            waited: Duration::ZERO,
            uncertain_resends: 0,
            unmapped: Vec::new(),
            fatal: None,
            #[cfg(feature = "tracing")]
            span: tracing::info_span!(
                "engage_batch",
                endpoint = batch_endpoint_path,
                records = n,
                first_index
            ),
        }
    }

    /// The batch being delivered.
    pub fn batch(&self) -> &Batch {
        &self.original
    }

    /// The request body in flight or next to go (after a 413 split, a part of the batch).
    pub fn current_part(&self) -> Option<&Batch> {
        self.queue.front().map(|p| p.batch(&self.original))
    }

    /// The attempt number of the request in flight or last sent (1 for the first).
    pub fn attempt(&self) -> u32 {
        self.queue.front().map_or(0, |p| p.attempts)
    }

    /// Whether the delivery is finished.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Whether a request is out, awaiting its response or error.
    pub fn is_in_flight(&self) -> bool {
        self.state == State::InFlight
    }

    /// The refusal that ended the whole delivery (401, 403, 407, TLS, a proxy refusing the
    /// tunnel), once there is one.
    pub fn fatal(&self) -> Option<&DeliveryError> {
        self.fatal.as_ref()
    }

    /// Whether polling it at `now` may send a request (it is not done, not waiting for an
    /// answer, and not waiting for a later time).
    pub(crate) fn may_send_at(&self, now: Instant) -> bool {
        match self.state {
            State::Ready => !self.queue.is_empty(),
            State::Waiting { until, .. } => now >= until,
            State::InFlight | State::Done => false,
        }
    }

    /// When it waits to send again, and whether because of a 429.
    pub fn waiting(&self) -> Option<(Instant, bool)> {
        match self.state {
            State::Waiting { until, throttled } => Some((until, throttled)),
            _ => None,
        }
    }

    /// Stops the delivery: every unsettled record is reported not delivered with `error`.
    /// Ignored while a request is in flight (feed its answer first).
    pub fn abort(&mut self, error: DeliveryError) {
        if self.state == State::InFlight {
            return;
        }
        let parts: Vec<Part> = self.queue.drain(..).collect();
        for part in parts {
            // What an earlier attempt may have applied stays said.
            self.settle_maybe_applied(&part.positions, error.clone(), part.maybe_applied);
        }
        self.state = State::Done;
    }

    /// Stops the delivery even while a request is in flight: every unsettled record is
    /// reported not delivered with `error`, and those of the request in flight as maybe
    /// applied (it may have reached the server). Its answer, if it comes, is ignored.
    pub fn abandon(&mut self, error: DeliveryError) {
        let in_flight = self.state == State::InFlight;
        let parts: Vec<Part> = self.queue.drain(..).collect();
        for (i, part) in parts.into_iter().enumerate() {
            let maybe = part.maybe_applied || (in_flight && i == 0);
            self.settle_maybe_applied(&part.positions, error.clone(), maybe);
        }
        self.state = State::Done;
    }

    /// What to do next, at time `now`.
    pub fn poll(&mut self, now: Instant) -> Action {
        self.started.get_or_insert(now);
        loop {
            match self.state {
                State::Done => return Action::Done,
                State::InFlight => return Action::AwaitResponse,
                State::Waiting { until, throttled } if now < until => {
                    return Action::Wait { until, throttled };
                }
                State::Waiting { .. } | State::Ready => {}
            }
            let Some(part) = self.queue.front_mut() else {
                self.state = State::Done;
                trace_event!(
                    self,
                    info,
                    requests = self.requests,
                    retries = self.retries,
                    "batch settled"
                );
                continue;
            };
            if part.maybe_applied && part.batch(&self.original).has_non_idempotent() {
                if self.policy.at_most_once {
                    let last = part.last.clone().unwrap_or(LastFailure::Status {
                        status: StatusCode::INTERNAL_SERVER_ERROR,
                        body: Bytes::new(),
                    });
                    let mut keep = Vec::new();
                    let mut keep_positions = Vec::new();
                    let mut refused = Vec::new();
                    let batch = part.batch(&self.original);
                    for r in batch.records() {
                        if r.is_idempotent() {
                            keep.push(r.position());
                            keep_positions.push(part.positions[r.position()]);
                        } else {
                            refused.push(part.positions[r.position()]);
                        }
                    }
                    part.batch = Some(batch.subset(&keep));
                    part.positions = keep_positions;
                    let empty = part.positions.is_empty();
                    for p in refused {
                        let error = DeliveryError::UncertainResendRefused { last: last.clone() };
                        self.not_delivered(p, error, true);
                    }
                    if empty {
                        self.queue.pop_front();
                        self.state = State::Ready;
                        continue;
                    }
                } else {
                    for r in part.batch(&self.original).records() {
                        if !r.is_idempotent() {
                            self.records[part.positions[r.position()]].uncertain_resends += 1;
                            self.uncertain_resends += 1;
                        }
                    }
                }
            }
            let Some(part) = self.queue.front_mut() else {
                continue;
            };
            // A resend held back past the budget (an importer's 429 pause, a late poll)
            // gives up instead of going out late.
            let started = self.started.unwrap_or(now);
            if part.attempts > 0 && now.saturating_duration_since(started) > self.policy.time_budget
            {
                let part = self.queue.pop_front().expect("front exists");
                let last = part.last.clone().unwrap_or(LastFailure::Status {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    body: Bytes::new(),
                });
                let budget = self.policy.time_budget;
                self.settle_maybe_applied(
                    &part.positions,
                    DeliveryError::BudgetExceeded { budget, last },
                    part.maybe_applied,
                );
                self.state = State::Ready;
                continue;
            }
            part.attempts += 1;
            self.requests += 1;
            if part.attempts > 1 {
                self.retries += 1;
            }
            self.state = State::InFlight;
            trace_event!(
                self,
                debug,
                attempt = part.attempts,
                records = part.batch(&self.original).len(),
                "sending"
            );
            return Action::Send(self.target.request(part.batch(&self.original)));
        }
    }

    /// Feeds the response to the request in flight. `now` is the monotonic time, `wall`
    /// the wall-clock time (to read an HTTP-date `Retry-After` when the answer has no
    /// `Date`). Ignored when no request is in flight.
    pub fn on_response(&mut self, now: Instant, wall: SystemTime, response: &Response<Bytes>) {
        if self.state != State::InFlight {
            return;
        }
        let answer = parse_response(
            response,
            ParseOptions {
                max_retry_after: self.policy.max_retry_after,
                wall_now: wall,
            },
        );
        trace_event!(
            self,
            debug,
            status = response.status().as_u16(),
            attempt = self.attempt(),
            "answer"
        );
        self.on_answer(now, answer);
    }

    /// Feeds an already parsed answer to the request in flight (see
    /// [`parse_response`](crate::exchange::parse_response)). Ignored when no request is in flight.
    pub fn on_answer(&mut self, now: Instant, answer: Answer) {
        if self.state != State::InFlight {
            return;
        }
        self.state = State::Ready;
        let Some(part) = self.queue.front_mut() else {
            return;
        };
        match answer {
            Answer::Accepted { imported } => {
                let part = self.queue.pop_front().expect("front exists");
                for &p in &part.positions {
                    self.records[p].outcome = RecordOutcome::Accepted;
                }
                self.check_count(&part.positions, imported);
            }
            Answer::SomeRejected { failures, imported } => {
                let part = self.queue.pop_front().expect("front exists");
                let mut unmapped = Vec::new();
                for f in failures {
                    let by_index = f.position.and_then(|i| part.positions.get(i).copied());
                    // Without a usable index, the echoed id names the record if it is
                    // unique in this request.
                    let by_id = || {
                        let id = f.echoed_id.as_deref()?;
                        let mut hits = part.batch(&self.original).records().filter(|r| {
                            let key = r.profile_key();
                            serde_json::from_slice::<String>(key.id).ok().as_deref() == Some(id)
                        });
                        let first = hits.next()?;
                        hits.next()
                            .is_none()
                            .then(|| part.positions[first.position()])
                    };
                    match by_index.or_else(by_id) {
                        Some(p) => {
                            self.records[p].outcome = RecordOutcome::Rejected {
                                field: f.field,
                                message: f.message,
                            }
                        }
                        None => unmapped.push(f),
                    }
                }
                let unknown = unmapped.len();
                for &p in &part.positions {
                    // The part's records were all unsettled before this answer: those it
                    // did not reject are settled here.
                    if matches!(self.records[p].outcome, RecordOutcome::Rejected { .. }) {
                        continue;
                    }
                    if unknown == 0 {
                        self.records[p].outcome = RecordOutcome::Accepted;
                    } else {
                        // Some rejection names no record: which ones were applied is
                        // unknown, so none is reported accepted.
                        let error = DeliveryError::UnmappedRejections { count: unknown };
                        self.not_delivered(p, error, true);
                    }
                }
                self.unmapped.extend(unmapped);
                self.check_count(&part.positions, imported);
            }
            Answer::NoneAccepted { error } => {
                let part = self.queue.pop_front().expect("front exists");
                let message = error.unwrap_or_else(|| {
                    "Mixpanel accepted none of the records (answer 0)".to_owned()
                });
                for p in part.positions {
                    self.records[p].outcome = RecordOutcome::Rejected {
                        field: None,
                        message: message.clone(),
                    };
                }
            }
            Answer::TooLarge { body } => {
                if let Some((a, b)) = part.batch(&self.original).split_halves() {
                    let mid = a.len();
                    let second = part.positions.split_off(mid);
                    let first = std::mem::take(&mut part.positions);
                    let (maybe_applied, last) = (part.maybe_applied, part.last.clone());
                    self.queue.pop_front();
                    let half = |batch, positions| Part {
                        batch: Some(batch),
                        positions,
                        attempts: 0,
                        maybe_applied,
                        last: last.clone(),
                    };
                    self.queue.push_front(half(b, second));
                    self.queue.push_front(half(a, first));
                } else {
                    let part = self.queue.pop_front().expect("front exists");
                    self.settle(&part.positions, DeliveryError::TooLarge { body });
                }
            }
            Answer::RetryLater {
                status,
                retry_after,
                throttled,
                ambiguous,
                body,
            } => {
                part.maybe_applied |= ambiguous;
                part.last = Some(LastFailure::Status { status, body });
                if throttled {
                    self.throttled += 1;
                }
                self.schedule_retry(now, retry_after, throttled);
            }
            Answer::Fatal { kind, status, body } => {
                let error = DeliveryError::Refused { kind, status, body };
                if matches!(
                    kind,
                    FatalKind::Unauthorized
                        | FatalKind::Forbidden
                        | FatalKind::ProxyAuthenticationRequired
                ) {
                    // The token (or the proxy's credentials) refused: every part will be
                    // refused too.
                    self.fail_all(error);
                } else {
                    let part = self.queue.pop_front().expect("front exists");
                    // A success status with a body of no known shape may have applied them.
                    let maybe = part.maybe_applied || kind == FatalKind::UnrecognizedBody;
                    self.settle_maybe_applied(&part.positions, error, maybe);
                }
            }
        }
    }

    /// Feeds a transport failure of the request in flight. Ignored when no request is in
    /// flight.
    pub fn on_transport_error(&mut self, now: Instant, error: TransportError) {
        if self.state != State::InFlight {
            return;
        }
        self.state = State::Ready;
        let Some(part) = self.queue.front_mut() else {
            return;
        };
        trace_event!(self, warn, error = %error, attempt = part.attempts, "transport error");
        if matches!(
            error.kind(),
            TransportErrorKind::Tls | TransportErrorKind::Proxy
        ) {
            self.fail_all(DeliveryError::Transport(error));
            return;
        }
        part.maybe_applied |= error.may_have_reached_server();
        part.last = Some(LastFailure::Transport(error));
        self.schedule_retry(now, None, false);
    }

    /// A 2xx (or a strict 400) is not trusted over its own count: when
    /// `num_records_imported` is lower than the records about to be called accepted, none
    /// of them is, and each may have been applied.
    fn check_count(&mut self, positions: &[usize], imported: Option<u64>) {
        let Some(imported) = imported else {
            return;
        };
        let accepted: Vec<usize> = positions
            .iter()
            .copied()
            .filter(|&p| matches!(self.records[p].outcome, RecordOutcome::Accepted))
            .collect();
        let expected = accepted.len() as u64;
        if imported >= expected {
            return;
        }
        trace_event!(
            self,
            warn,
            imported,
            expected,
            "answer counts fewer records than it accepts"
        );
        let error = DeliveryError::CountMismatch { imported, expected };
        for p in accepted {
            self.not_delivered(p, error.clone(), true);
        }
    }

    fn settle(&mut self, positions: &[usize], error: DeliveryError) {
        self.settle_maybe_applied(positions, error, false);
    }

    fn settle_maybe_applied(
        &mut self,
        positions: &[usize],
        error: DeliveryError,
        maybe_applied: bool,
    ) {
        for &p in positions {
            self.not_delivered(p, error.clone(), maybe_applied);
        }
    }

    /// Record `p` is not delivered; whether an attempt may have applied it. (The only way
    /// a line's `maybe_applied` is set: it goes with an outcome of not delivered.)
    fn not_delivered(&mut self, p: usize, error: DeliveryError, maybe_applied: bool) {
        let line = &mut self.records[p];
        line.outcome = RecordOutcome::NotDelivered(error);
        line.maybe_applied |= maybe_applied;
    }

    fn fail_all(&mut self, error: DeliveryError) {
        let parts: Vec<Part> = self.queue.drain(..).collect();
        for part in parts {
            self.settle_maybe_applied(&part.positions, error.clone(), part.maybe_applied);
        }
        self.fatal = Some(error);
    }

    fn schedule_retry(&mut self, now: Instant, retry_after: Option<Duration>, throttled: bool) {
        let Some(part) = self.queue.front() else {
            return;
        };
        let attempts = part.attempts;
        #[cfg(feature = "tracing")]
        let records = part.batch(&self.original).len();
        let last = part.last.clone().unwrap_or(LastFailure::Status {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            body: Bytes::new(),
        });
        if attempts >= self.policy.max_attempts {
            trace_event!(self, error, attempts, last = %last, "giving up");
            let part = self.queue.pop_front().expect("front exists");
            let maybe = part.maybe_applied;
            self.settle_maybe_applied(
                &part.positions,
                DeliveryError::Exhausted { attempts, last },
                maybe,
            );
            return;
        }
        let delay = retry_after
            .unwrap_or_else(|| self.backoff(attempts))
            .min(LONGEST_WAIT);
        let started = self.started.unwrap_or(now);
        let until = now.checked_add(delay);
        if until.is_none_or(|u| u.saturating_duration_since(started) > self.policy.time_budget) {
            let part = self.queue.pop_front().expect("front exists");
            let budget = self.policy.time_budget;
            let maybe = part.maybe_applied;
            self.settle_maybe_applied(
                &part.positions,
                DeliveryError::BudgetExceeded { budget, last },
                maybe,
            );
            return;
        }
        let until = until.expect("checked above");
        self.waited += delay;
        trace_event!(
            self,
            warn,
            attempt = attempts,
            wait_ms = delay.as_millis() as u64,
            throttled,
            records,
            "retrying"
        );
        self.state = State::Waiting { until, throttled };
    }

    /// Backoff before attempt `attempts + 1`: `base · 2^(attempts-1)` capped, with jitter
    /// drawn from [half, all] of it.
    fn backoff(&mut self, attempts: u32) -> Duration {
        let exp = attempts.saturating_sub(1).min(30);
        let full = self
            .policy
            .backoff_base
            .saturating_mul(1u32 << exp)
            .min(self.policy.backoff_max);
        let half = full / 2;
        let nanos = u64::try_from((full - half).as_nanos()).unwrap_or(u64::MAX);
        let jitter = if nanos == 0 {
            0
        } else {
            self.rng.below(nanos.saturating_add(1))
        };
        half + Duration::from_nanos(jitter)
    }

    /// The report. Records not settled yet (when called before [`Action::Done`]) are
    /// reported as [`DeliveryError::Abandoned`].
    pub fn into_report(self) -> Report {
        Report {
            records: self.records,
            batch: self.original,
            requests: self.requests,
            retries: self.retries,
            throttled: self.throttled,
            waited: self.waited,
            uncertain_resends: self.uncertain_resends,
            unmapped_failures: self.unmapped,
            fatal: self.fatal,
        }
    }
}
