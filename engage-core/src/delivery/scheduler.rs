//! Importing a stream of updates with bounded concurrency: a sans-IO scheduler over many
//! [`Delivery`]s.
//!
//! Guarantees, whatever the transport:
//! - updates of one profile are never in two requests at once, and reach the server in
//!   input order (a batch starts only when no earlier unfinished batch shares a profile
//!   with it; retries and 413 splits stay inside the batch's delivery);
//! - a 429 seen by any request pauses every new send until its wait is over;
//! - at most `concurrency` batches are in flight and one more is formed ahead, so memory is
//!   bounded by about `concurrency + 2` batches whatever the input length;
//! - every update pushed is accounted for exactly once, in an [`ImportEvent`].

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{Request, Response};

use crate::batch::{Batch, BatchConfig, Batcher};
use crate::delivery::retry::{Action, Delivery, DeliveryError, RecordOutcome, Report, RetryPolicy};
use crate::delivery::transport::TransportError;
use crate::exchange::Target;
use crate::validate::ValidationError;
use crate::wire::Update;

/// How to import.
#[derive(Debug, Clone)]
pub struct ImportConfig {
    /// Token, endpoint and batch limits.
    pub batch: BatchConfig,
    /// Where to send.
    pub target: Target,
    /// Retries.
    pub policy: RetryPolicy,
    /// Most requests in flight at once (at least 1).
    pub concurrency: usize,
}

impl ImportConfig {
    /// An import with `batch` limits to `target`, default retries, concurrency 4.
    pub fn new(batch: BatchConfig, target: Target) -> Self {
        ImportConfig {
            batch,
            target,
            policy: RetryPolicy::default(),
            concurrency: 4,
        }
    }

    /// Sets the retry policy.
    pub fn policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Sets the concurrency (at least 1).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }
}

/// Something the caller should know about: each input update appears in exactly one
/// event.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ImportEvent {
    /// The update was invalid and was not sent.
    Invalid(ValidationError),
    /// A batch is settled: each of its records accepted, rejected or not delivered.
    Delivered(Report),
    /// A 429 paused every send of the import.
    Throttled {
        /// The `Retry-After` the server asked for, uncapped, if it sent one.
        requested: Option<Duration>,
        /// How long sending pauses: the request capped at the policy's
        /// [`retry_after_limit`](RetryPolicy::retry_after_limit), or the policy's
        /// [`backoff_base`](RetryPolicy::backoff_base) without `Retry-After`.
        pause: Duration,
    },
}

/// Running totals of an import.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
    pub fatal: Option<String>,
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
    /// Nothing to send now: wait for a result of a request in flight, or until `until`
    /// if given (then poll again).
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

struct Slot {
    id: u64,
    delivery: Delivery,
    keys: Vec<u64>,
    in_flight: bool,
}

/// The import scheduler: push updates in, take requests out, feed results back.
/// Deterministic; runs on any transport and runtime. [`import`](crate::driver::import) and [`import_blocking`](crate::driver::import_blocking)
/// drive it; a transport with its own event loop (curl's `Multi`) can drive it by hand.
pub struct Importer {
    config: ImportConfig,
    batcher: Batcher,
    pending: VecDeque<(Batch, Vec<u64>)>,
    active: Vec<Slot>,
    busy: HashMap<u64, u32>,
    events: VecDeque<ImportEvent>,
    summary: ImportSummary,
    paused_until: Option<Instant>,
    input_done: bool,
    next_index: u64,
    next_id: u64,
    fatal: Option<DeliveryError>,
}

impl std::fmt::Debug for Importer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Importer")
            .field("pending", &self.pending.len())
            .field("active", &self.active.len())
            .field("summary", &self.summary)
            .finish()
    }
}

fn key_hash(key: crate::batch::ProfileKey<'_>) -> u64 {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

fn profile_keys(batch: &Batch) -> Vec<u64> {
    let mut keys: Vec<u64> = batch.records().map(|r| key_hash(r.profile_key())).collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

impl Importer {
    /// An importer with `config`.
    pub fn new(mut config: ImportConfig) -> Self {
        // The field is public: hold the invariant here too, or nothing would ever start.
        config.concurrency = config.concurrency.max(1);
        Importer {
            batcher: Batcher::new(config.batch.clone()),
            config,
            pending: VecDeque::new(),
            active: Vec::new(),
            busy: HashMap::new(),
            events: VecDeque::new(),
            summary: ImportSummary::default(),
            paused_until: None,
            input_done: false,
            next_index: 0,
            next_id: 0,
            fatal: None,
        }
    }

    /// Whether it has room for more input (the formed-ahead queue is short).
    pub fn wants_input(&self) -> bool {
        !self.input_done
            && self.pending.len() <= self.config.concurrency.saturating_sub(self.active.len())
    }

    /// Adds one update.
    pub fn push(&mut self, item: impl ImportItem) {
        let (index, update) = item.into_parts(self.next_index);
        self.next_index = index.saturating_add(1);
        self.summary.records += 1;
        match self.batcher.push_at(index, &update) {
            Ok(None) => {}
            Ok(Some(batch)) => self.enqueue(batch),
            Err(e) => {
                self.summary.invalid += 1;
                self.events.push_back(ImportEvent::Invalid(e));
            }
        }
        if self.input_done {
            // Pushed after finish_input: send it rather than leave it in the open batch.
            if let Some(batch) = self.batcher.finish() {
                self.enqueue(batch);
            }
        }
    }

    /// No more input: the open batch is closed and sent.
    pub fn finish_input(&mut self) {
        if !self.input_done {
            self.input_done = true;
            if let Some(batch) = self.batcher.finish() {
                self.enqueue(batch);
            }
        }
    }

    fn enqueue(&mut self, batch: Batch) {
        self.summary.warnings += batch.warnings().len() as u64;
        if let Some(fatal) = self.fatal.clone() {
            let mut d = Delivery::new(batch, self.config.target.clone(), self.config.policy);
            d.abort(fatal);
            self.settle(d.into_report());
            return;
        }
        let keys = profile_keys(&batch);
        self.pending.push_back((batch, keys));
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
        self.active.iter().filter(|s| s.in_flight).count()
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
        if let Some(fatal) = &report.fatal {
            self.note_fatal(fatal.clone());
        }
        self.events.push_back(ImportEvent::Delivered(report));
    }

    /// The first fatal refusal stops every further send.
    fn note_fatal(&mut self, fatal: DeliveryError) {
        if self.fatal.is_none() {
            self.summary.fatal = Some(fatal.to_string());
            self.fatal = Some(fatal);
            self.abort_queued();
        }
    }

    /// After a fatal refusal nothing more is sent: queued batches are reported not
    /// delivered, and so are active ones not in flight.
    fn abort_queued(&mut self) {
        let Some(fatal) = self.fatal.clone() else {
            return;
        };
        let pending: Vec<(Batch, Vec<u64>)> = self.pending.drain(..).collect();
        for (batch, _) in pending {
            let mut d = Delivery::new(batch, self.config.target.clone(), self.config.policy);
            d.abort(fatal.clone());
            self.settle(d.into_report());
        }
        for slot in &mut self.active {
            if !slot.in_flight {
                slot.delivery.abort(fatal.clone());
            }
        }
    }

    fn start_ready_batches(&mut self) {
        let mut blocked: HashSet<u64> = HashSet::new();
        let mut i = 0;
        while i < self.pending.len() && self.active.len() < self.config.concurrency {
            let keys = &self.pending[i].1;
            let free = keys
                .iter()
                .all(|k| !self.busy.contains_key(k) && !blocked.contains(k));
            if free {
                let (batch, keys) = self.pending.remove(i).expect("index in range");
                for k in &keys {
                    *self.busy.entry(*k).or_insert(0) += 1;
                }
                let delivery = Delivery::new(batch, self.config.target.clone(), self.config.policy);
                self.active.push(Slot {
                    id: self.next_id,
                    delivery,
                    keys,
                    in_flight: false,
                });
                self.next_id += 1;
            } else {
                blocked.extend(keys.iter().copied());
                i += 1;
            }
        }
    }

    /// What to do next, at time `now`.
    pub fn poll(&mut self, now: Instant) -> ImportAction {
        if self.paused_until.is_some_and(|p| now >= p) {
            self.paused_until = None;
        }
        self.start_ready_batches();
        let mut deadline: Option<Instant> = self.paused_until;
        let mut i = 0;
        while i < self.active.len() {
            if self.active[i].in_flight {
                i += 1;
                continue;
            }
            if let Some(p) = self.paused_until
                && !self.active[i].delivery.is_done()
            {
                // Throttled: no new send from anyone until the pause is over.
                deadline = Some(deadline.map_or(p, |d| d.min(p)));
                i += 1;
                continue;
            }
            match self.active[i].delivery.poll(now) {
                Action::Send(request) => {
                    self.active[i].in_flight = true;
                    return ImportAction::Send {
                        id: RequestId(self.active[i].id),
                        request,
                    };
                }
                Action::Wait { until, throttled } => {
                    if throttled {
                        self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
                    }
                    deadline = Some(deadline.map_or(until, |d| d.min(until)));
                    i += 1;
                }
                Action::AwaitResponse => i += 1,
                Action::Done => {
                    let slot = self.active.swap_remove(i);
                    for k in &slot.keys {
                        if let Some(n) = self.busy.get_mut(k) {
                            *n -= 1;
                            if *n == 0 {
                                self.busy.remove(k);
                            }
                        }
                    }
                    self.settle(slot.delivery.into_report());
                    // A finished batch may unblock queued ones.
                    self.start_ready_batches();
                    i = 0;
                }
            }
        }
        if self.active.is_empty() && self.pending.is_empty() {
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
            // Nothing in flight, nothing to wait for, yet batches left: cannot happen with
            // concurrency ≥ 1. Settle them rather than let a driver spin.
            debug_assert!(
                false,
                "importer stuck with {} pending batches",
                self.pending.len()
            );
            let pending: Vec<(Batch, Vec<u64>)> = self.pending.drain(..).collect();
            for (batch, _) in pending {
                let mut d = Delivery::new(batch, self.config.target.clone(), self.config.policy);
                d.abort(DeliveryError::Abandoned);
                self.settle(d.into_report());
            }
            return ImportAction::Done;
        }
        ImportAction::Wait { until: deadline }
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
        let Some(at) = self.active.iter().position(|s| s.id == id.0) else {
            return;
        };
        // A 429 throttles the whole project, even when it was this batch's last attempt.
        let policy = self.config.policy;
        let throttle = match &result {
            Ok(r) if r.status() == http::StatusCode::TOO_MANY_REQUESTS => {
                let requested = crate::exchange::requested_retry_after(r.headers(), wall);
                let pause =
                    requested.map_or(policy.backoff_base(), |d| d.min(policy.retry_after_limit()));
                self.events
                    .push_back(ImportEvent::Throttled { requested, pause });
                Some(pause)
            }
            _ => None,
        };
        let slot = &mut self.active[at];
        slot.in_flight = false;
        match result {
            Ok(response) => slot.delivery.on_response(now, wall, &response),
            Err(error) => slot.delivery.on_transport_error(now, error),
        }
        if let Some(pause) = throttle
            && let Some(until) = now.checked_add(pause)
        {
            self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
        }
        if let Some((until, true)) = slot.delivery.waiting() {
            self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
        }
        if let Some(fatal) = self.fatal.clone() {
            if !slot.delivery.is_done() {
                slot.delivery.abort(fatal);
            }
        } else if let Some(fatal) = slot.delivery.fatal().cloned() {
            // Stop the others now, before any of them sends again.
            self.note_fatal(fatal);
        }
    }

    /// Whether sending stopped for good (401, 403, TLS).
    pub fn fatal(&self) -> Option<&DeliveryError> {
        self.fatal.as_ref()
    }
}
