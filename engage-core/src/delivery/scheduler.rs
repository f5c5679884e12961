//! Importing a stream of updates: a sans-IO scheduler over many [`Delivery`]s, for bulk
//! imports (an input that ends) and applications (an input that never does).
//!
//! Guarantees, whatever the transport:
//! - **Order without serializing.** Batches are formed in *lanes*. A profile is pinned to
//!   one lane while any of its updates is pending there (in an open batch, a closed one, or
//!   a request); a lane sends one batch at a time, in order. So two requests in flight
//!   never share a profile, each profile's updates reach the server in input order, and
//!   profiles of other lanes go out at the same time. Retries and 413 splits stay inside a
//!   batch's [`Delivery`].
//! - **Concurrency.** At most [`Concurrency`]'s limit of batches are being delivered at
//!   once: fixed, or found as the import goes (see [`AutoConcurrency`]).
//! - **Throttling.** A 429 with `Retry-After` pauses every new send for that long (capped by
//!   the retry policy); without one, the adaptive limit is cut (or, with a fixed limit,
//!   every send pauses for the policy's first backoff delay).
//! - **Memory.** Open and closed batches not yet sent hold at most
//!   [`ImportConfig::buffer_bytes`] (plus one update) whatever the input length; requests
//!   in flight hold at most the limit × the body cap. When the buffer is full, the largest
//!   open batch of an idle lane is sent early.
//! - **Time.** With a [`linger`](ImportConfig::linger), an open batch is closed once its
//!   oldest update has waited that long, or, if its lane's previous batch is still out
//!   then, once that one is answered (closing it sooner would not send it sooner, only
//!   split it); [`Importer::flush`] closes them all at once.
//! - **Accounting.** Every update pushed appears in exactly one [`ImportEvent::Invalid`]
//!   or [`ImportEvent::Delivered`]; before the first attempt of a batch,
//!   [`ImportEvent::Sending`] says which updates it carries (a crash-safe journal writes
//!   that down before the request goes out: drivers hand events over before sending).

use std::collections::{BTreeMap, HashMap, VecDeque};

use foldhash::fast::FixedState;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{Request, Response};

use crate::batch::{Batch, BatchConfig, Batcher, Pushed};
use crate::delivery::limiter::{Concurrency, Limiter, Signal};
use crate::delivery::retry::{Action, Delivery, DeliveryError, RecordOutcome, Report, RetryPolicy};
use crate::delivery::transport::{TransportError, TransportErrorKind};
use crate::exchange::Target;
use crate::model::Endpoint;
use crate::validate::ValidationError;
use crate::wire::Update;

/// Updates [`Importer::step`] reads before it hands its events to the feed (and sees to
/// its requests): an [`ImportEvent::Invalid`] comes before more than this many further
/// updates are read. (A feed that wants a refused update's text gets the update itself
/// from [`Feed::on_refused`].)
pub const READ_BURST: usize = 1024;

/// Default bound on the bytes of batches formed and not yet sent (32 MiB).
pub const DEFAULT_BUFFER_BYTES: usize = 32 * 1024 * 1024;

/// Which endpoint each update goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Route {
    /// Every update to the configured batch endpoint; an update for the other one is
    /// invalid (a bulk import of one kind of profile).
    #[default]
    Configured,
    /// Each update to its own endpoint: user profiles to `/engage`, group profiles to
    /// `/groups` (an application sending both).
    ByProfile,
}

/// How to import.
///
/// ```
/// use engage_core::delivery::{AutoConcurrency, Concurrency};
/// use engage_core::{BatchConfig, Endpoint, ImportConfig, Target, Token};
/// use std::time::Duration;
/// let config = ImportConfig::new(
///     BatchConfig::new(Token::new("tok")?, Endpoint::Engage),
///     Target::base_url("http://127.0.0.1:9")?,
/// )
/// .concurrency(Concurrency::Auto(AutoConcurrency::default().bounds(1, 32)))
/// .linger(Duration::from_secs(1));
/// assert_eq!(config.concurrency.most(), 32);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ImportConfig {
    /// Token, endpoint and batch limits.
    pub batch: BatchConfig,
    /// Where to send.
    pub target: Target,
    /// Retries.
    pub policy: RetryPolicy,
    /// Requests in flight at once (default: adaptive, from 10 within 1..=64).
    pub concurrency: Concurrency,
    /// Close an open batch once its oldest update has waited this long (`None`: only when
    /// full, flushed, or the input ends or stalls on the buffer).
    pub linger: Option<Duration>,
    /// Which endpoint each update goes to.
    pub route: Route,
    /// Most bytes of batches formed and not yet sent.
    pub buffer_bytes: usize,
    /// After [`Importer::stop`], how long requests in flight may still finish.
    pub stop_grace: Duration,
}

impl ImportConfig {
    /// An import with `batch` limits to `target`: default retries, adaptive concurrency,
    /// no linger, a 32 MiB buffer.
    pub fn new(batch: BatchConfig, target: Target) -> Self {
        ImportConfig {
            batch,
            target,
            policy: RetryPolicy::default(),
            concurrency: Concurrency::default(),
            linger: None,
            route: Route::Configured,
            buffer_bytes: DEFAULT_BUFFER_BYTES,
            stop_grace: Duration::from_secs(10),
        }
    }

    /// Sets the retry policy.
    pub fn policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Sets the concurrency: `Concurrency::Fixed(n)`, or a number (fixed), or
    /// `Concurrency::Auto(…)`.
    pub fn concurrency(mut self, c: impl Into<Concurrency>) -> Self {
        self.concurrency = c.into();
        self
    }

    /// Closes open batches once their oldest update has waited `linger` (zero: send at
    /// once), or once their lane's previous batch is answered if that comes later.
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = Some(linger);
        self
    }

    /// Sets which endpoint each update goes to.
    pub fn route(mut self, route: Route) -> Self {
        self.route = route;
        self
    }

    /// Bounds the bytes of batches formed and not yet sent (at least one body's worth).
    pub fn buffer_bytes(mut self, bytes: usize) -> Self {
        self.buffer_bytes = bytes;
        self
    }

    /// After a stop, how long requests in flight may still finish (default 10 s).
    pub fn stop_grace(mut self, grace: Duration) -> Self {
        self.stop_grace = grace;
        self
    }
}

impl From<usize> for Concurrency {
    fn from(n: usize) -> Self {
        Concurrency::Fixed(n.max(1))
    }
}

/// A batch about to be sent for the first time: which updates it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Sending {
    /// Its endpoint.
    pub endpoint: Endpoint,
    /// The indices of the updates it carries, in batch order. The first one also names
    /// the batch in its [`Report`] (`report.records[0].index`): an index is in one batch
    /// only.
    pub indices: Vec<u64>,
    /// Its body's size.
    pub bytes: usize,
    /// Every update it carries may be applied twice without harm (no `$add` or
    /// `$append`): a journal need not reach the disk before this batch goes out, since a
    /// resume that finds no trace of it just sends it again.
    pub idempotent: bool,
}

/// Something the caller should know about: each input update appears in exactly one
/// [`Invalid`](ImportEvent::Invalid) or [`Delivered`](ImportEvent::Delivered) event.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ImportEvent {
    /// The update was invalid and was not sent.
    Invalid(ValidationError),
    /// A batch is about to go out for the first time.
    Sending(Sending),
    /// A batch is settled: each of its records accepted, rejected or not delivered.
    Delivered(Report),
    /// One request was answered, or failed: for logs and early warnings.
    Attempt(Attempt),
    /// Every update pushed before this flush is settled (flushes settle in the order they
    /// were asked for).
    Flushed(FlushId),
    /// A 429 paused every send of the import.
    Throttled {
        /// The `Retry-After` the server asked for, uncapped, if it sent one.
        requested: Option<Duration>,
        /// How long sending pauses: the request capped at the policy's
        /// [`retry_after_limit`](RetryPolicy::retry_after_limit), or the policy's
        /// [`backoff_base`](RetryPolicy::backoff_base) without `Retry-After`; zero when
        /// the adaptive concurrency limit was cut instead.
        pause: Duration,
    },
}

/// One request's result, and what follows from it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Attempt {
    /// Its endpoint.
    pub endpoint: Endpoint,
    /// Records it carried.
    pub records: usize,
    /// Its body's size.
    pub bytes: usize,
    /// 1 for a batch's first request, then 2, 3, …
    pub attempt: u32,
    /// The answer's status, or why there was none.
    pub result: Result<http::StatusCode, TransportError>,
    /// From sending to the answer (or the failure).
    pub latency: Duration,
    /// What happens next.
    pub decision: Decision,
}

/// What happens after an [`Attempt`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// The batch is settled (every record accepted, rejected or not delivered).
    Settled,
    /// It will be sent again after this wait (`throttled`: a 429).
    Retry {
        /// How long until then.
        after: Duration,
        /// Because of a 429.
        throttled: bool,
    },
    /// Another part of the batch goes next (after a 413, halves).
    NextPart,
    /// Sending stopped for good (401, 403, TLS).
    Stop,
}

/// Running totals of an import.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct ImportSummary {
    /// Updates pushed.
    pub records: u64,
    /// Accepted by the server (including uncertain ones).
    pub accepted: u64,
    /// Rejected by the server.
    pub rejected: u64,
    /// Invalid before sending.
    pub invalid: u64,
    /// Not delivered.
    pub not_delivered: u64,
    /// Accepted after a resend that may have applied them twice (`$add`/`$append`).
    pub uncertain: u64,
    /// Requests sent.
    pub requests: u64,
    /// Of which resends.
    pub retries: u64,
    /// 429 answers.
    pub throttled: u64,
    /// Batches settled.
    pub batches: u64,
    /// Truncation warnings.
    pub warnings: u64,
    /// Of the not delivered, those an attempt may have applied anyway (see
    /// [`RecordReport::maybe_applied`](crate::delivery::RecordReport::maybe_applied)).
    pub maybe_applied: u64,
    /// Why the import stopped sending (401, 403, TLS), if it did.
    pub fatal: Option<DeliveryError>,
    /// Request bodies sent, in bytes (resends included).
    pub bytes_sent: u64,
    /// Most requests in flight at once.
    pub peak_in_flight: u64,
    /// Requests in flight integrated over time, in request-seconds: divided by the
    /// import's duration, the mean number in flight.
    pub in_flight_seconds: f64,
    /// The concurrency limit at the end.
    pub limit: u64,
}

impl ImportSummary {
    /// Whether every update was accepted.
    pub fn all_accepted(&self) -> bool {
        self.accepted == self.records
    }

    /// Updates settled so far (accepted + rejected + invalid + not delivered).
    pub fn settled(&self) -> u64 {
        self.accepted + self.rejected + self.invalid + self.not_delivered
    }
}

/// Identifies a request the importer handed out, to feed its result back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId(u64);

/// Identifies a [`flush`](Importer::flush), to ask whether it is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlushId(u64);

/// What the caller should do next for an [`Importer`].
// The request is moved straight into the transport: boxing would cost an allocation per send.
#[allow(clippy::large_enum_variant)]
pub enum ImportAction {
    /// Send this request and feed its result back with [`Importer::on_result`].
    Send {
        /// Which request.
        id: RequestId,
        /// The request.
        request: Request<Bytes>,
    },
    /// Nothing to send now: wait for a result of a request in flight, for input, or until
    /// `until` if given (then poll again).
    Wait {
        /// When to poll again at the latest.
        until: Option<Instant>,
    },
    /// Push more input (or call [`Importer::finish_input`]).
    NeedInput,
    /// Input finished and everything settled.
    Done,
}

impl std::fmt::Debug for ImportAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // The body holds the token: show its size only.
            ImportAction::Send { id, request } => f
                .debug_struct("Send")
                .field("id", id)
                .field("uri", request.uri())
                .field("body_bytes", &request.body().len())
                .finish(),
            ImportAction::Wait { until } => f.debug_struct("Wait").field("until", until).finish(),
            ImportAction::NeedInput => f.write_str("NeedInput"),
            ImportAction::Done => f.write_str("Done"),
        }
    }
}

/// An item of input: an [`Update`] (numbered after the previous one) or `(index, Update)`
/// with the caller's own number (e.g. a line number).
pub trait ImportItem {
    /// The index and the update.
    fn into_parts(self, next_index: u64) -> (u64, Update);
}

impl ImportItem for Update {
    fn into_parts(self, next_index: u64) -> (u64, Update) {
        (next_index, self)
    }
}

impl ImportItem for (u64, Update) {
    fn into_parts(self, _: u64) -> (u64, Update) {
        self
    }
}

/// What a [`Source`] has for the importer now.
#[derive(Debug)]
pub enum Next<T> {
    /// An item.
    Item(T),
    /// Nothing now; more may come (an application's queue).
    Idle,
    /// Close every open batch now; [`ImportEvent::Flushed`] says when what came before is
    /// settled.
    Flush,
    /// Nothing ever again.
    End,
}

/// What [`Importer::push_json`] did with a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum JsonPush {
    /// Read in one pass and batched.
    Batched,
    /// Read in one pass and refused as it was batched (another endpoint's update, another
    /// project's token, too large): its [`ImportEvent::Invalid`] is queued.
    Refused,
    /// Not taken by the one-pass reader; nothing was pushed or counted: the full parser
    /// decides (see [`Importer::push_json`]).
    NotTaken,
}

/// Where an import's updates come from: any iterator (which ends), or a queue an
/// application feeds (which may be idle).
pub trait Source {
    /// The items.
    type Item: ImportItem;
    /// The next item, if there is one now.
    fn next_item(&mut self) -> Next<Self::Item>;
}

impl<I> Source for I
where
    I: Iterator,
    I::Item: ImportItem,
{
    type Item = I::Item;
    fn next_item(&mut self) -> Next<I::Item> {
        match self.next() {
            Some(item) => Next::Item(item),
            None => Next::End,
        }
    }
}

/// Where an import's updates come from and where its events go, as one object: a program
/// keeps its whole account of an import (what was read, what became of it) in one place.
/// [`FeedFrom`] makes one of any [`Source`] (an iterator, say) and a closure.
pub trait Feed {
    /// The items.
    type Item: ImportItem;
    /// The next item, if there is one now.
    fn next_item(&mut self) -> Next<Self::Item>;
    /// Something happened (see [`ImportEvent`]).
    fn on_event(&mut self, event: ImportEvent);
    /// The update at `index` was refused as it was batched: its
    /// [`ImportEvent::Invalid`] follows. A feed that reports refused updates by their text
    /// takes it from here, rather than keep a copy of every update it hands over. Does
    /// nothing by default.
    fn on_refused(&mut self, index: u64, update: &Update) {
        let _ = (index, update);
    }
    /// Gives `importer` the next input. By default one item of
    /// [`next_item`](Self::next_item), pushed (an update refused as it is batched goes to
    /// [`on_refused`](Self::on_refused)). A feed holding its input as JSON text overrides
    /// it to give the text to [`Importer::push_json`], which reads it straight into a
    /// request body: no [`Update`] is made, nothing is copied twice. It must push at most
    /// one update per call (the importer bounds what it buffers by calls) and answers as
    /// `next_item` would (`Next::Item(())` for one pushed).
    fn push_next(&mut self, importer: &mut Importer) -> Next<()> {
        match self.next_item() {
            Next::Item(item) => {
                if let Some((index, update)) = importer.push_item(item) {
                    self.on_refused(index, &update);
                }
                Next::Item(())
            }
            Next::Idle => Next::Idle,
            Next::Flush => Next::Flush,
            Next::End => Next::End,
        }
    }
    /// Whether to stop now, at `now` (an interrupt, a shutdown's deadline): asked at every
    /// [`Importer::step`]. Nothing more is read, nothing more is sent, and requests in
    /// flight get the configured [`stop_grace`](ImportConfig::stop_grace) to finish.
    fn stop_requested(&mut self, now: Instant) -> bool {
        let _ = now;
        false
    }
    /// How often a driver should step while it waits, so that a stop is noticed even in a
    /// long wait (`None`: only when there is something to do).
    fn check_every(&self) -> Option<Duration> {
        None
    }
}

/// A [`Feed`] from a [`Source`] and a closure that takes the events.
#[derive(Debug)]
pub struct FeedFrom<S, E> {
    /// Where the updates come from.
    pub source: S,
    /// Where the events go.
    pub on_event: E,
}

impl<S: Source, E: FnMut(ImportEvent)> Feed for FeedFrom<S, E> {
    type Item = S::Item;
    fn next_item(&mut self) -> Next<S::Item> {
        self.source.next_item()
    }
    fn on_event(&mut self, event: ImportEvent) {
        (self.on_event)(event)
    }
}

/// An open batch of one lane and endpoint.
struct Open {
    batcher: Batcher,
    /// When its oldest update was first seen by `poll` (for the linger).
    since: Option<Instant>,
}

/// A delivery in progress.
struct Active {
    id: u64,
    delivery: Delivery,
    in_flight: bool,
    /// When the request in flight went out, its body size, whether the limit was in use.
    sent: Option<(Instant, usize, bool)>,
}

#[derive(Default)]
struct Lane {
    open: [Option<Open>; 2],
    queued: VecDeque<Batch>,
    active: Option<Active>,
}

impl Lane {
    fn open_bytes(&self) -> usize {
        self.open
            .iter()
            .flatten()
            .map(|o| o.batcher.pending_bytes())
            .sum()
    }

    fn load(&self) -> usize {
        self.open_bytes()
            + self.queued.iter().map(|b| b.body().len()).sum::<usize>()
            + self
                .active
                .as_ref()
                .map_or(0, |a| a.delivery.batch().body().len())
    }

    fn idle(&self) -> bool {
        self.active.is_none() && self.queued.is_empty()
    }
}

fn slot_of(endpoint: Endpoint) -> usize {
    match endpoint {
        Endpoint::Engage => 0,
        Endpoint::Groups => 1,
    }
}

/// The import scheduler: push updates in, take requests out, feed results back.
/// Deterministic (the caller passes the time); runs on any transport and runtime.
/// [`step`](Importer::step) is the loop every driver shares;
/// [`import`](crate::driver::import) and [`import_blocking`](crate::driver::import_blocking)
/// run it.
pub struct Importer {
    config: ImportConfig,
    limiter: Limiter,
    lanes: Vec<Lane>,
    /// Lanes with a delivery (`Lane::active`), counted as they change: asked once per
    /// update read.
    active_lanes: usize,
    /// Profile hash → (lane, updates pending there); empty with a single lane.
    /// (Lanes are few: `u32` keeps an entry at 16 bytes, and more of the table in cache.)
    owners: HashMap<u64, (u32, u32), FixedState>,
    /// The lane new profiles go to, per endpoint.
    filling: [Option<usize>; 2],
    /// Lanes with a closed batch waiting and no delivery: first come, first served.
    ready: VecDeque<usize>,
    /// Bytes in open and queued batches.
    buffered: usize,
    events: VecDeque<ImportEvent>,
    summary: ImportSummary,
    paused_until: Option<Instant>,
    input_done: bool,
    next_index: u64,
    next_id: u64,
    fatal: Option<DeliveryError>,
    /// Pushed-but-unsettled updates per flush epoch.
    epochs: BTreeMap<u64, u64>,
    epoch: u64,
    /// The first index pushed in each epoch after the first (indices increase).
    epoch_starts: Vec<u64>,
    /// The last time in-flight accounting was brought up to date.
    last_tick: Option<Instant>,
    /// Stopped: requests in flight are abandoned at this time.
    stop_deadline: Option<Instant>,
    /// Flushes asked for through a feed, not yet reported settled.
    flushes: VecDeque<FlushId>,
}

impl std::fmt::Debug for Importer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Importer")
            .field("lanes", &self.lanes.len())
            .field("buffered", &self.buffered)
            .field("limit", &self.limiter.limit())
            .field("summary", &self.summary)
            .finish()
    }
}

impl Importer {
    /// An importer with `config`.
    pub fn new(config: ImportConfig) -> Self {
        Importer {
            limiter: Limiter::new(config.concurrency),
            config,
            lanes: Vec::new(),
            active_lanes: 0,
            owners: HashMap::default(),
            filling: [None, None],
            ready: VecDeque::new(),
            buffered: 0,
            events: VecDeque::new(),
            summary: ImportSummary::default(),
            paused_until: None,
            input_done: false,
            next_index: 0,
            next_id: 0,
            fatal: None,
            epochs: BTreeMap::new(),
            epoch: 0,
            epoch_starts: Vec::new(),
            last_tick: None,
            stop_deadline: None,
            flushes: VecDeque::new(),
        }
    }

    /// The most lanes: one per request the limit may ever allow.
    fn most_lanes(&self) -> usize {
        self.config.concurrency.most()
    }

    /// Whether updates are told apart by profile (hashed, and their lane kept while they
    /// are pending): not with a single lane, which every update goes to in order.
    fn tracks_profiles(&self) -> bool {
        self.most_lanes() > 1
    }

    fn active(&self) -> usize {
        debug_assert_eq!(
            self.active_lanes,
            self.lanes.iter().filter(|l| l.active.is_some()).count()
        );
        self.active_lanes
    }

    /// Takes `lane`'s delivery, if it has one.
    fn take_active(&mut self, lane: usize) -> Option<Active> {
        let taken = self.lanes[lane].active.take();
        if taken.is_some() {
            self.active_lanes -= 1;
        }
        taken
    }

    /// Whether it has room for more input: the buffer is not full, and no batch is waiting
    /// for a free request slot (so a driver sends before it reads on).
    pub fn wants_input(&self) -> bool {
        let would_send = self.fatal.is_none()
            && !self.ready.is_empty()
            && self.active() < self.limiter.limit()
            && !self.paused();
        !self.input_done && self.buffered < self.config.buffer_bytes && !would_send
    }

    fn paused(&self) -> bool {
        self.paused_until.is_some()
    }

    /// Adds one update.
    pub fn push(&mut self, item: impl ImportItem) {
        self.push_item(item);
    }

    /// Adds one update given as JSON text (a line of an NDJSON export, say) with the
    /// caller's index, when engage-core's one-pass reader takes the text (a valid update
    /// that draws no warning, as most are): it goes straight into a request body,
    /// minified, with no [`Update`] built and nothing allocated per record once warm.
    /// Otherwise nothing is pushed and nothing counted: parse the text
    /// ([`Update::from_json`], or the caller's own handling of text that is no update)
    /// and push that with the same index.
    ///
    /// ```
    /// use engage_core::delivery::{ImportEvent, Importer, JsonPush};
    /// use engage_core::{BatchConfig, Endpoint, ImportConfig, Target, Token};
    /// let batch = BatchConfig::new(Token::new("tok")?, Endpoint::Engage);
    /// let mut importer = Importer::new(ImportConfig::new(batch, Target::base_url("http://127.0.0.1:9")?));
    /// let line = br#"{"$distinct_id": "u1", "$add": {"logins": 1}}"#;
    /// assert_eq!(importer.push_json(7, line), JsonPush::Batched);
    /// // The same text under another token is refused: its event names index 8.
    /// let other = br#"{"$token": "other", "$distinct_id": "u1", "$set": {"a": 1}}"#;
    /// assert_eq!(importer.push_json(8, other), JsonPush::Refused);
    /// assert!(matches!(importer.next_event(), Some(ImportEvent::Invalid(e)) if e.index == 8));
    /// // Not an update object: left to the caller.
    /// let flat = br#"{"distinct_id": "u2", "plan": "pro"}"#;
    /// assert_eq!(importer.push_json(9, flat), JsonPush::NotTaken);
    /// assert_eq!(importer.summary().records, 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn push_json(&mut self, index: u64, json: &[u8]) -> JsonPush {
        crate::wire::text::read_borrowed(json, |record| {
            let endpoint = match self.config.route {
                Route::Configured => self.config.batch.endpoint(),
                Route::ByProfile => record.endpoint,
            };
            let hash = self.tracks_profiles().then(|| record.profile_hash());
            let batched = self.push_with(index, endpoint, hash, |batcher| {
                batcher.push_text(index, record, hash)
            });
            if batched {
                JsonPush::Batched
            } else {
                JsonPush::Refused
            }
        })
        .unwrap_or(JsonPush::NotTaken)
    }

    /// [`push`](Self::push), handing the update back (with its index) if it was refused as
    /// it was batched: its [`ImportEvent::Invalid`] is queued, and a feed that reports
    /// refused updates by their text takes it from here.
    pub fn push_item(&mut self, item: impl ImportItem) -> Option<(u64, Update)> {
        let (index, update) = item.into_parts(self.next_index);
        let endpoint = match self.config.route {
            Route::Configured => self.config.batch.endpoint(),
            Route::ByProfile => update.endpoint(),
        };
        let hash = match self.tracks_profiles() {
            true => update.profile_hash(),
            false => None,
        };
        let batched = self.push_with(index, endpoint, hash, |batcher| {
            batcher.push_hashed(index, &update, hash)
        });
        (!batched).then_some((index, update))
    }

    /// Adds update `index` of profile `hash` with `push`, into the lane that profile's
    /// updates go to. Returns whether it was batched; a refused one's
    /// [`ImportEvent::Invalid`] is queued.
    fn push_with(
        &mut self,
        index: u64,
        endpoint: Endpoint,
        hash: Option<u64>,
        push: impl FnOnce(&mut Batcher) -> Pushed,
    ) -> bool {
        self.next_index = index.saturating_add(1);
        self.summary.records += 1;
        let lane = match hash.and_then(|h| self.owners.get(&h)) {
            Some(&(lane, _)) => lane as usize,
            None => self.filling_lane(endpoint),
        };
        let open = self.open_batch(lane, endpoint);
        let before = open.batcher.pending_bytes();
        let pushed = push(&mut open.batcher);
        let after = open.batcher.pending_bytes();
        self.buffered = self.buffered.saturating_sub(before) + after;
        let batched = match pushed {
            Ok(closed) => {
                if let Some(h) = hash {
                    self.owners.entry(h).or_insert((lane as u32, 0)).1 += 1;
                }
                *self.epochs.entry(self.epoch).or_insert(0) += 1;
                if let Some(batch) = closed {
                    // A closed batch's bytes move from the open batch to the queue.
                    self.buffered += batch.body().len();
                    self.enqueue(lane, *batch);
                    if self.filling[slot_of(endpoint)] == Some(lane) {
                        self.filling[slot_of(endpoint)] = None;
                    }
                }
                true
            }
            Err(e) => {
                self.summary.invalid += 1;
                self.events.push_back(ImportEvent::Invalid(*e));
                false
            }
        };
        if self.input_done {
            // Pushed after finish_input: send it rather than leave it in the open batch.
            self.close_all();
        }
        batched
    }

    /// The lane new profiles of `endpoint` go to: the one being filled, else the least
    /// loaded (idle ones first), opening a new lane while there are fewer than the most.
    fn filling_lane(&mut self, endpoint: Endpoint) -> usize {
        let slot = slot_of(endpoint);
        if let Some(lane) = self.filling[slot] {
            return lane;
        }
        let best = self
            .lanes
            .iter()
            .enumerate()
            .min_by_key(|(_, l)| (!l.idle(), l.load()))
            .map(|(i, l)| (i, l.idle() && l.load() == 0));
        let lane = match best {
            Some((i, true)) => i,
            _ if self.lanes.len() < self.most_lanes() => {
                self.lanes.push(Lane::default());
                self.lanes.len() - 1
            }
            Some((i, false)) => i,
            None => {
                self.lanes.push(Lane::default());
                0
            }
        };
        self.filling[slot] = Some(lane);
        lane
    }

    fn open_batch(&mut self, lane: usize, endpoint: Endpoint) -> &mut Open {
        let batch = &self.config.batch;
        self.lanes[lane].open[slot_of(endpoint)].get_or_insert_with(|| Open {
            batcher: Batcher::new(batch.clone().endpoint_for(endpoint)),
            since: None,
        })
    }

    /// Queues a closed batch in its lane; the lane becomes ready if it was idle.
    fn enqueue(&mut self, lane: usize, batch: Batch) {
        self.summary.warnings += batch.warnings().len() as u64;
        if let Some(fatal) = self.fatal.clone() {
            self.buffered = self.buffered.saturating_sub(batch.body().len());
            let mut d = Delivery::new(batch, self.config.target.clone(), self.config.policy);
            d.abort(fatal);
            self.settle(d.into_report());
            return;
        }
        let l = &mut self.lanes[lane];
        let was_idle = l.idle();
        l.queued.push_back(batch);
        if was_idle {
            self.ready.push_back(lane);
        }
    }

    /// Closes the open batch of `lane` for `endpoint`, if it holds anything.
    fn close(&mut self, lane: usize, slot: usize) {
        let Some(open) = self.lanes[lane].open[slot].as_mut() else {
            return;
        };
        open.since = None;
        let before = open.batcher.pending_bytes();
        if let Some(batch) = open.batcher.finish() {
            self.buffered = self.buffered.saturating_sub(before) + batch.body().len();
            if self.filling[slot] == Some(lane) {
                self.filling[slot] = None;
            }
            self.enqueue(lane, batch);
        }
    }

    fn close_all(&mut self) {
        for lane in 0..self.lanes.len() {
            for slot in 0..2 {
                self.close(lane, slot);
            }
        }
    }

    /// No more input: every open batch is closed and sent.
    pub fn finish_input(&mut self) {
        if !self.input_done {
            self.input_done = true;
            self.close_all();
        }
    }

    /// Closes every open batch now (whatever the linger) and returns an id to ask, with
    /// [`is_flushed`](Self::is_flushed), whether every update pushed before this call is
    /// settled.
    pub fn flush(&mut self) -> FlushId {
        self.close_all();
        let id = FlushId(self.epoch);
        self.epoch += 1;
        self.epoch_starts.push(self.next_index);
        id
    }

    /// Whether every update pushed before [`flush`](Self::flush) returned `id` is settled.
    pub fn is_flushed(&self, id: FlushId) -> bool {
        self.epochs.range(..=id.0).all(|(_, &n)| n == 0)
    }

    /// The next event, if any. Drain them as you go: they are kept until taken.
    pub fn next_event(&mut self) -> Option<ImportEvent> {
        self.events.pop_front()
    }

    /// Totals so far.
    pub fn summary(&self) -> &ImportSummary {
        &self.summary
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        self.lanes
            .iter()
            .filter(|l| l.active.as_ref().is_some_and(|a| a.in_flight))
            .count()
    }

    /// The concurrency limit now.
    pub fn limit(&self) -> usize {
        self.limiter.limit()
    }

    /// The pace in bytes per second set after the server answered 429, if one is in force
    /// at `now`.
    pub fn pace(&self, now: Instant) -> Option<f64> {
        self.limiter.pace(now)
    }

    /// Brings the in-flight integral up to `now`.
    fn tick(&mut self, now: Instant) {
        if let Some(last) = self.last_tick
            && now > last
        {
            self.summary.in_flight_seconds +=
                self.in_flight() as f64 * now.duration_since(last).as_secs_f64();
        }
        if self.last_tick.is_none_or(|last| now > last) {
            self.last_tick = Some(now);
        }
    }

    fn settle(&mut self, report: Report) {
        let s = &mut self.summary;
        s.batches += 1;
        s.requests += u64::from(report.requests);
        s.retries += u64::from(report.retries);
        s.throttled += u64::from(report.throttled);
        for r in &report.records {
            match r.outcome {
                RecordOutcome::Accepted => s.accepted += 1,
                RecordOutcome::Rejected { .. } => s.rejected += 1,
                RecordOutcome::NotDelivered(_) => s.not_delivered += 1,
            }
            if r.maybe_applied {
                s.maybe_applied += 1;
            }
            if r.is_uncertain() {
                s.uncertain += 1;
            }
        }
        // Profiles released, flush epochs counted down (a batch's records are in index
        // order, so by runs of one epoch).
        let mut run: Option<(u64, u64)> = None;
        let endpoint = report.batch.endpoint();
        for r in report.batch.records() {
            // None tracked (a single lane): no hash to look for.
            if !self.owners.is_empty() {
                let h = r.profile_hash(endpoint);
                if let Some(entry) = self.owners.get_mut(&h) {
                    entry.1 = entry.1.saturating_sub(1);
                    if entry.1 == 0 {
                        self.owners.remove(&h);
                    }
                }
            }
            let epoch = self
                .epoch_starts
                .partition_point(|&start| start <= r.index()) as u64;
            match &mut run {
                Some((e, n)) if *e == epoch => *n += 1,
                _ => {
                    if let Some((e, n)) = run.replace((epoch, 1)) {
                        self.count_down(e, n);
                    }
                }
            }
        }
        if let Some((e, n)) = run {
            self.count_down(e, n);
        }
        if let Some(fatal) = &report.fatal {
            self.note_fatal(fatal.clone());
        }
        self.events.push_back(ImportEvent::Delivered(report));
    }

    /// `settled` updates of flush epoch `epoch` are settled.
    fn count_down(&mut self, epoch: u64, settled: u64) {
        if let Some(n) = self.epochs.get_mut(&epoch) {
            *n = n.saturating_sub(settled);
            if *n == 0 && epoch < self.epoch {
                self.epochs.remove(&epoch);
            }
        }
    }

    /// The first fatal refusal stops every further send.
    fn note_fatal(&mut self, fatal: DeliveryError) {
        if self.fatal.is_none() {
            self.summary.fatal = Some(fatal.clone());
            self.fatal = Some(fatal);
            self.abort_queued();
        }
    }

    /// After a fatal refusal nothing more is sent: closed batches are reported not
    /// delivered, and so are deliveries not in flight.
    fn abort_queued(&mut self) {
        let Some(fatal) = self.fatal.clone() else {
            return;
        };
        self.ready.clear();
        for lane in 0..self.lanes.len() {
            let queued: Vec<Batch> = self.lanes[lane].queued.drain(..).collect();
            for batch in queued {
                self.buffered = self.buffered.saturating_sub(batch.body().len());
                let mut d = Delivery::new(batch, self.config.target.clone(), self.config.policy);
                d.abort(fatal.clone());
                self.settle(d.into_report());
            }
            if let Some(a) = self.lanes[lane].active.as_mut()
                && !a.in_flight
            {
                a.delivery.abort(fatal.clone());
            }
        }
    }

    /// Closes what the linger, a flush or a full buffer says to; returns the next linger
    /// deadline.
    fn close_due(&mut self, now: Instant) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        for lane in 0..self.lanes.len() {
            for slot in 0..2 {
                let Some(open) = self.lanes[lane].open[slot].as_mut() else {
                    continue;
                };
                if open.batcher.pending() == 0 {
                    open.since = None;
                    continue;
                }
                let since = *open.since.get_or_insert(now);
                let due = self
                    .config
                    .linger
                    .map(|l| since.checked_add(l).unwrap_or(since));
                if due.is_some_and(|d| now >= d) {
                    // A lane sends one batch at a time: while its previous one is out or
                    // waiting, closing this one would not send it sooner, only split it. It
                    // is closed when the lane is free (an answer brings the importer back).
                    if self.lanes[lane].idle() {
                        self.close(lane, slot);
                    }
                } else if let Some(d) = due {
                    next = Some(next.map_or(d, |n| n.min(d)));
                }
            }
        }
        // A full buffer (or input that ended) with a free request slot and nothing ready:
        // send the largest open batch of an idle lane now rather than wait.
        let stalled = self.input_done || self.buffered >= self.config.buffer_bytes;
        if stalled && self.ready.is_empty() && self.active() < self.limiter.limit() {
            let largest = (0..self.lanes.len())
                .filter(|&l| self.lanes[l].idle())
                .flat_map(|l| (0..2).map(move |s| (l, s)))
                .filter_map(|(l, s)| {
                    let open = self.lanes[l].open[s].as_ref()?;
                    (open.batcher.pending() > 0).then(|| (open.batcher.pending_bytes(), l, s))
                })
                .max();
            if let Some((_, l, s)) = largest {
                self.close(l, s);
            }
        }
        next
    }

    /// Starts deliveries of ready lanes while the limit (and the pace) allows; returns when
    /// the pace lets the next one go, if it holds one back.
    fn start_ready(&mut self, now: Instant) -> Option<Instant> {
        while self.active() < self.limiter.limit() && !self.paused() && !self.ready.is_empty() {
            if let Err(at) = self.limiter.may_send(now) {
                // Paced: the batch waits in its lane, still movable by what comes next.
                return Some(at);
            }
            let Some(lane) = self.ready.pop_front() else {
                break;
            };
            let Some(batch) = self.lanes[lane].queued.pop_front() else {
                continue;
            };
            self.buffered = self.buffered.saturating_sub(batch.body().len());
            self.events.push_back(ImportEvent::Sending(Sending {
                endpoint: batch.endpoint(),
                indices: batch.records().map(|r| r.index()).collect(),
                bytes: batch.body().len(),
                idempotent: batch.records().all(|r| r.is_idempotent()),
            }));
            let delivery = Delivery::new(batch, self.config.target.clone(), self.config.policy);
            self.active_lanes += 1;
            self.lanes[lane].active = Some(Active {
                id: self.next_id,
                delivery,
                in_flight: false,
                sent: None,
            });
            self.next_id += 1;
        }
        None
    }

    /// What to do next, at time `now`.
    pub fn poll(&mut self, now: Instant) -> ImportAction {
        self.tick(now);
        if let Some(deadline) = self.stop_deadline
            && now >= deadline
        {
            for lane in 0..self.lanes.len() {
                if let Some(a) = self.take_active(lane) {
                    let mut d = a.delivery;
                    d.abandon(DeliveryError::Abandoned);
                    self.settle(d.into_report());
                }
            }
        }
        if self.paused_until.is_some_and(|p| now >= p) {
            self.paused_until = None;
        }
        let linger_deadline = self.close_due(now);
        let paced = self.start_ready(now);
        let mut deadline: Option<Instant> = linger_deadline;
        let earliest = |d: &mut Option<Instant>, t: Instant| {
            *d = Some(d.map_or(t, |x| x.min(t)));
        };
        if let Some(p) = paced {
            earliest(&mut deadline, p);
        }
        if let Some(d) = self.stop_deadline {
            earliest(&mut deadline, d);
        }
        if let Some(p) = self.paused_until {
            earliest(&mut deadline, p);
        }
        let mut lane = 0;
        while lane < self.lanes.len() {
            let Some(active) = self.lanes[lane].active.as_mut() else {
                lane += 1;
                continue;
            };
            if active.in_flight {
                lane += 1;
                continue;
            }
            if let Some(p) = self.paused_until
                && !active.delivery.is_done()
            {
                // Throttled: no new send from anyone until the pause is over.
                earliest(&mut deadline, p);
                lane += 1;
                continue;
            }
            if active.delivery.may_send_at(now)
                && let Err(at) = self.limiter.may_send(now)
            {
                // Paced: every send, resends too, waits for the pace.
                earliest(&mut deadline, at);
                lane += 1;
                continue;
            }
            match active.delivery.poll(now) {
                Action::Send(request) => {
                    let saturated = self.active() >= self.limiter.limit();
                    let active = self.lanes[lane].active.as_mut().expect("active lane");
                    active.in_flight = true;
                    active.sent = Some((now, request.body().len(), saturated));
                    self.limiter.on_send(now, request.body().len());
                    let id = RequestId(active.id);
                    self.summary.bytes_sent += request.body().len() as u64;
                    let in_flight = self.in_flight() as u64;
                    self.summary.peak_in_flight = self.summary.peak_in_flight.max(in_flight);
                    return ImportAction::Send { id, request };
                }
                Action::Wait { until, throttled } => {
                    if throttled && self.paused_until.is_some() {
                        self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
                    }
                    earliest(&mut deadline, until);
                    lane += 1;
                }
                Action::AwaitResponse => lane += 1,
                Action::Done => {
                    let active = self.take_active(lane).expect("active lane");
                    self.settle(active.delivery.into_report());
                    // The lane may have more to send, and others may now start.
                    if !self.lanes[lane].queued.is_empty() {
                        self.ready.push_back(lane);
                    }
                    self.close_due(now);
                    if let Some(p) = self.start_ready(now) {
                        earliest(&mut deadline, p);
                    }
                    lane = 0;
                }
            }
        }
        let busy = self.lanes.iter().any(|l| !l.idle())
            || self
                .lanes
                .iter()
                .any(|l| l.open.iter().flatten().any(|o| o.batcher.pending() > 0));
        if !busy {
            return if self.input_done {
                ImportAction::Done
            } else {
                ImportAction::NeedInput
            };
        }
        if deadline.is_none() && self.in_flight() == 0 {
            if !self.input_done {
                return ImportAction::NeedInput;
            }
            // Nothing in flight, nothing to wait for, yet work left: cannot happen.
            // Settle it rather than let a driver spin.
            debug_assert!(false, "importer stuck: {self:?}");
            self.abandon_all();
            return ImportAction::Done;
        }
        ImportAction::Wait { until: deadline }
    }

    fn abandon_all(&mut self) {
        self.close_all();
        self.ready.clear();
        for lane in 0..self.lanes.len() {
            let mut batches: Vec<Batch> = self.lanes[lane].queued.drain(..).collect();
            if let Some(a) = self.take_active(lane) {
                let mut d = a.delivery;
                d.abort(DeliveryError::Abandoned);
                self.settle(d.into_report());
            }
            for batch in batches.drain(..) {
                self.buffered = self.buffered.saturating_sub(batch.body().len());
                let mut d = Delivery::new(batch, self.config.target.clone(), self.config.policy);
                d.abort(DeliveryError::Abandoned);
                self.settle(d.into_report());
            }
        }
    }

    /// Feeds the result of request `id`: its response or transport error. `now` is the
    /// monotonic time, `wall` the wall-clock time.
    pub fn on_result(
        &mut self,
        id: RequestId,
        now: Instant,
        wall: SystemTime,
        result: Result<Response<Bytes>, TransportError>,
    ) {
        self.tick(now);
        let Some(lane) = self.lanes.iter().position(|l| {
            l.active
                .as_ref()
                .is_some_and(|a| a.id == id.0 && a.in_flight)
        }) else {
            return;
        };
        let policy = self.config.policy;
        let adaptive = matches!(self.config.concurrency, Concurrency::Auto(_));
        let signal = match &result {
            Ok(r) if r.status().as_u16() == 429 => Signal::Throttled,
            Ok(r) if r.status().as_u16() == 503 => Signal::Overloaded,
            Ok(_) => Signal::Answered,
            Err(e) if e.kind() == TransportErrorKind::Timeout => Signal::TimedOut,
            Err(_) => Signal::Neutral,
        };
        // A 429 throttles the whole project, even when it was this batch's last attempt.
        let throttle = match &result {
            Ok(r) if r.status() == http::StatusCode::TOO_MANY_REQUESTS => {
                let requested = crate::exchange::requested_retry_after(r.headers(), wall);
                let pause = match requested {
                    Some(d) => d.min(policy.retry_after_limit()),
                    // The adaptive limit's cut is the backoff.
                    None if adaptive => Duration::ZERO,
                    None => policy.backoff_base(),
                };
                self.events
                    .push_back(ImportEvent::Throttled { requested, pause });
                Some(pause)
            }
            _ => None,
        };
        let active = self.lanes[lane].active.as_mut().expect("found above");
        active.in_flight = false;
        let sent = active.sent.take();
        let attempt = active.delivery.attempt();
        let records = active.delivery.current_part().map_or(0, |b| b.len());
        let endpoint = active.delivery.batch().endpoint();
        let observed = match &result {
            Ok(r) => Ok(r.status()),
            Err(e) => Err(e.clone()),
        };
        match result {
            Ok(response) => active.delivery.on_response(now, wall, &response),
            Err(error) => active.delivery.on_transport_error(now, error),
        }
        let waiting = active.delivery.waiting();
        let done = active.delivery.is_done();
        let delivery_fatal = active.delivery.fatal().cloned();
        // Settled once nothing of the batch is left to send, before the next poll marks
        // the delivery done.
        let settled = done || active.delivery.current_part().is_none();
        let decision = if delivery_fatal.is_some() {
            Decision::Stop
        } else if settled {
            Decision::Settled
        } else if let Some((until, throttled)) = waiting {
            Decision::Retry {
                after: until.saturating_duration_since(now),
                throttled,
            }
        } else {
            Decision::NextPart
        };
        self.events.push_back(ImportEvent::Attempt(Attempt {
            endpoint,
            records,
            bytes: sent.map_or(0, |s| s.1),
            attempt,
            result: observed,
            latency: sent.map_or(Duration::ZERO, |s| now.saturating_duration_since(s.0)),
            decision,
        }));
        if let Some((sent, bytes, saturated)) = sent {
            self.limiter.on_sample(sent, now, bytes, signal, saturated);
        }
        self.summary.limit = self.limiter.limit() as u64;
        if let Some(pause) = throttle
            && !pause.is_zero()
            && let Some(until) = now.checked_add(pause)
        {
            self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
        }
        if let Some((until, true)) = waiting
            && throttle.is_some_and(|p| !p.is_zero())
        {
            self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
        }
        if let Some(fatal) = self.fatal.clone() {
            if !done && let Some(a) = self.lanes[lane].active.as_mut() {
                a.delivery.abort(fatal);
            }
        } else if self.stop_deadline.is_some() {
            // Stopping: what did not go through is not tried again.
            if !done && let Some(a) = self.lanes[lane].active.as_mut() {
                a.delivery.abort(DeliveryError::Stopped);
            }
        } else if let Some(fatal) = delivery_fatal {
            // Stop the others now, before any of them sends again.
            self.note_fatal(fatal);
        }
    }

    /// Whether sending stopped for good (401, 403, TLS).
    pub fn fatal(&self) -> Option<&DeliveryError> {
        self.fatal.as_ref()
    }

    /// Stops the import (an interrupt, a shutdown past its deadline): no more input, and
    /// everything not in flight is reported not delivered ([`DeliveryError::Stopped`]) at
    /// once; requests in flight may finish (without retries) until `now` plus the
    /// configured [`stop_grace`](ImportConfig::stop_grace), then are abandoned (reported
    /// not delivered, maybe applied).
    pub fn stop(&mut self, now: Instant) {
        if self.stop_deadline.is_some() {
            return;
        }
        self.stop_deadline = Some(now.checked_add(self.config.stop_grace).unwrap_or(now));
        self.input_done = true;
        self.close_all();
        self.ready.clear();
        for lane in 0..self.lanes.len() {
            let queued: Vec<Batch> = self.lanes[lane].queued.drain(..).collect();
            for batch in queued {
                self.buffered = self.buffered.saturating_sub(batch.body().len());
                let mut d = Delivery::new(batch, self.config.target.clone(), self.config.policy);
                d.abort(DeliveryError::Stopped);
                self.settle(d.into_report());
            }
            if let Some(a) = self.lanes[lane].active.as_mut()
                && !a.in_flight
            {
                a.delivery.abort(DeliveryError::Stopped);
            }
        }
    }

    /// Whether [`stop`](Self::stop) was called.
    pub fn is_stopping(&self) -> bool {
        self.stop_deadline.is_some()
    }

    /// The loop every driver shares: stops if the feed asks, takes input from the feed
    /// while the importer wants it, hands every event to the feed, and says what to do
    /// next. A driver sends what it is told to (events come first: a journal writes
    /// [`ImportEvent::Sending`] down before the request goes out), feeds results back with
    /// [`on_result`](Self::on_result), and on [`ImportAction::Wait`] waits for a result,
    /// the deadline, or (for a feed that was idle) more input.
    pub fn step<F: Feed>(&mut self, now: Instant, feed: &mut F) -> ImportAction {
        if self.stop_deadline.is_none() && feed.stop_requested(now) {
            self.stop(now);
        }
        loop {
            let mut idle = false;
            // In bursts: a driver's loop sees to its requests between two (answers are not
            // left waiting while a large input is read).
            let mut burst = 0;
            let mut more = false;
            while self.wants_input() {
                if burst == READ_BURST {
                    more = true;
                    break;
                }
                burst += 1;
                match feed.push_next(self) {
                    Next::Item(()) => {}
                    Next::Idle => {
                        idle = true;
                        break;
                    }
                    Next::Flush => {
                        let id = self.flush();
                        self.flushes.push_back(id);
                    }
                    Next::End => {
                        self.finish_input();
                        break;
                    }
                }
            }
            let action = self.poll(now);
            while let Some(&id) = self.flushes.front() {
                if !self.is_flushed(id) {
                    break;
                }
                self.flushes.pop_front();
                self.events.push_back(ImportEvent::Flushed(id));
            }
            while let Some(e) = self.next_event() {
                feed.on_event(e);
            }
            let check = |until: Option<Instant>| match feed.check_every() {
                Some(every) => {
                    let at = now.checked_add(every).unwrap_or(now);
                    Some(until.map_or(at, |u| u.min(at)))
                }
                None => until,
            };
            return match action {
                // The feed has more right now: read on.
                ImportAction::NeedInput if !idle && self.wants_input() && !more => continue,
                // A burst was read: back at once, once the driver has seen to its requests.
                ImportAction::NeedInput | ImportAction::Wait { .. } if more => {
                    ImportAction::Wait { until: Some(now) }
                }
                ImportAction::NeedInput => ImportAction::Wait { until: check(None) },
                ImportAction::Wait { until } => ImportAction::Wait {
                    until: check(until),
                },
                other => other,
            };
        }
    }
}
