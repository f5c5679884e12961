//! A long-running client for applications: updates sent from any task or thread, one at a
//! time and forever, batched in the background (a batch goes out when full or when its
//! oldest update has waited the linger), flushed on demand, and shut down with an exact
//! account.
//!
//! [`Client::new`] gives the handle (cheap to clone, `Send + Sync`) and the [`Worker`],
//! the background part a transport runs on its runtime (engage-hyper on tokio,
//! engage-async-std on async-std or smol, engage-curl on a thread). Everything that decides
//! (linger, flush, limits, retries) is the [`Importer`]'s; the
//! worker only moves updates from the queue into it, and outcomes back out.
//!
//! # Embedding in a runtime of your own
//!
//! [`Worker::run`] takes a send function and a sleep function, like
//! [`driver::run`](crate::driver::run):
//!
//! ```
//! use engage_core::client::{Client, ClientConfig};
//! use engage_core::driver::SystemClock;
//! use engage_core::{Target, Token, Update};
//! # fn block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     let mut f = std::pin::pin!(f);
//! #     let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
//! #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
//! # }
//! let config = ClientConfig::new(Token::new("tok")?, Target::base_url("http://127.0.0.1:9")?);
//! let (client, worker) = Client::new(config);
//! // Your runtime spawns the worker; here, a tiny executor runs it after the sends.
//! client.try_send(Update::user("u1").set([("plan", "pro")]))?;
//! client.try_send(Update::group("company", "acme").set([("seats", 40)]))?;
//! let closing = client.clone();
//! let worker = worker.run(
//!     &SystemClock,
//!     |_request| async { Ok(http::Response::new(bytes::Bytes::from_static(b"1"))) },
//!     |_wait| async {},
//! );
//! closing.begin_shutdown(std::time::Duration::from_secs(5));
//! let summary = block_on(worker);
//! assert_eq!((summary.sent, summary.accepted), (2, 2));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender};
use bytes::Bytes;
use http::{Request, Response};

use crate::batch::BatchConfig;
use crate::delivery::{
    Concurrency, DeliveryError, Feed, ImportAction, ImportConfig, ImportEvent, ImportSummary,
    Importer, Next, RecordOutcome, RetryPolicy, Route, TransportError,
};
use crate::driver::Clock;
use crate::exchange::Target;
use crate::model::{Endpoint, ProfileId, Token};
use crate::validate::ValidationError;
use crate::wire::Update;

/// Called with each update's outcome.
type OutcomeFn = Box<dyn FnMut(&Delivered) + Send>;

/// How a [`Client`] sends: the import settings (linger, limits, retries, concurrency), the
/// queue's size, and who hears of each update's outcome.
pub struct ClientConfig {
    /// The import settings. Defaults for a client: each update to its own endpoint
    /// (users and groups through one client), a linger of 1 s, nothing in flight after a
    /// shutdown's deadline.
    pub import: ImportConfig,
    /// Updates the queue holds before `send` waits (and `try_send` refuses). Updates the
    /// worker has read keep their places until it gives them back in bulk (once it has
    /// read half the queue's worth, or when it next takes from the queue), so a sender
    /// may wait while fewer than this are still unread.
    pub queue: usize,
    on_outcome: Option<OutcomeFn>,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("import", &self.import)
            .field("queue", &self.queue)
            .field("on_outcome", &self.on_outcome.is_some())
            .finish()
    }
}

impl ClientConfig {
    /// A client for the project of `token`, sending to `target`: a queue of 10,000
    /// updates, a linger of 1 s, adaptive concurrency, default retries.
    pub fn new(token: Token, target: Target) -> Self {
        ClientConfig {
            // The shutdown's deadline bounds everything: no grace after it.
            import: ImportConfig::new(BatchConfig::new(token, Endpoint::Engage), target)
                .route(Route::ByProfile)
                .linger(Duration::from_secs(1))
                .stop_grace(Duration::ZERO),
            queue: 10_000,
            on_outcome: None,
        }
    }

    /// How long an update may wait for its batch to fill (zero: send at once).
    pub fn linger(mut self, linger: Duration) -> Self {
        self.import.linger = Some(linger);
        self
    }

    /// The queue's size (at least 1).
    pub fn queue(mut self, updates: usize) -> Self {
        self.queue = updates.max(1);
        self
    }

    /// Requests in flight at once.
    pub fn concurrency(mut self, c: impl Into<Concurrency>) -> Self {
        self.import.concurrency = c.into();
        self
    }

    /// Retries.
    pub fn policy(mut self, policy: RetryPolicy) -> Self {
        self.import.policy = policy;
        self
    }

    /// Most updates per request (1–2000).
    pub fn max_records(mut self, n: usize) -> Self {
        self.import.batch = self.import.batch.clone().max_records(n);
        self
    }

    /// Calls `f` with each update's outcome, on the worker (keep it quick).
    pub fn on_outcome(mut self, f: impl FnMut(&Delivered) + Send + 'static) -> Self {
        self.on_outcome = Some(Box::new(f));
        self
    }
}

/// What became of one update sent through a [`Client`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Outcome {
    /// Mixpanel accepted it.
    Accepted,
    /// Accepted, but after a resend that may have applied it twice (`$add`/`$append`).
    UncertainResend,
    /// Mixpanel rejected it.
    Rejected {
        /// The field it named, if any.
        field: Option<String>,
        /// Its message.
        message: String,
    },
    /// It was invalid and not sent.
    Invalid(ValidationError),
    /// It was not delivered (retries spent, the token refused, the shutdown deadline
    /// passed, or it was still queued at the end).
    NotDelivered {
        /// Why.
        error: DeliveryError,
        /// A request carrying it may have been applied anyway.
        maybe_applied: bool,
    },
}

/// One update's outcome, for [`ClientConfig::on_outcome`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Delivered {
    /// What [`Client::send`] returned for it.
    pub id: u64,
    /// Its profile.
    pub profile: Option<ProfileId>,
    /// What became of it.
    pub outcome: Outcome,
}

/// Running totals of a [`Client`], and its final account after a shutdown.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct ClientSummary {
    /// Updates taken by `send`/`try_send`.
    pub sent: u64,
    /// Accepted (uncertain ones included).
    pub accepted: u64,
    /// Of the accepted, after a resend that may have applied them twice.
    pub uncertain: u64,
    /// Rejected by Mixpanel.
    pub rejected: u64,
    /// Invalid, not sent.
    pub invalid: u64,
    /// Not delivered, still queued at the end included.
    pub not_delivered: u64,
    /// Of the not delivered, those a request may have applied anyway.
    pub maybe_applied: u64,
    /// Requests sent.
    pub requests: u64,
    /// Of which resends.
    pub retries: u64,
    /// 429 answers.
    pub throttled: u64,
    /// Why sending stopped for good (401, 403, TLS), if it did.
    pub fatal: Option<DeliveryError>,
}

impl ClientSummary {
    /// Updates with an outcome so far.
    pub fn settled(&self) -> u64 {
        self.accepted + self.rejected + self.invalid + self.not_delivered
    }
}

/// Why an update was not taken; it is handed back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrySendError {
    /// The queue is full.
    #[error("the client's queue is full")]
    Full(Box<Update>),
    /// The client is shutting down or its worker is gone.
    #[error("the client is shut down")]
    Closed(Box<Update>),
}

impl TrySendError {
    /// The update, back.
    pub fn into_update(self) -> Update {
        match self {
            TrySendError::Full(u) | TrySendError::Closed(u) => *u,
        }
    }
}

/// The client is shut down (or its worker is gone); the update is handed back.
#[derive(Debug, thiserror::Error)]
#[error("the client is shut down")]
pub struct Closed(pub Box<Update>);

/// What became of an update offered to the queue.
enum Offer {
    /// Queued (its id), or refused for good (the client is closed).
    Done(Result<u64, Closed>),
    /// The queue is full: the update, to offer again once there is room.
    Full(Update),
}

/// What [`Client::offer_or_listen`] did: queued the update (or found the client shut), or
/// found the queue full and listens for room.
enum Offered {
    Done(Result<u64, Closed>),
    Wait(Update, event_listener::EventListener),
}

enum Msg {
    Update(u64, Update),
    Flush(Sender<()>),
    Shutdown(Duration),
}

struct Shared {
    totals: Mutex<ClientSummary>,
    queue: Queue,
    /// The final summary, once the worker is done.
    done: Mutex<Option<ClientSummary>>,
    done_tx: Sender<()>,
    done_rx: Receiver<()>,
    shutdown_asked: AtomicBool,
}

/// The queue between the handles and the worker. A send locks it once; the worker takes
/// everything queued in one go and gives the places of what it used back in bulk, so the
/// worker pays no synchronisation per update and senders one uncontended-in-the-common-
/// case lock (a lock-free channel plus separate counters cost each side several contended
/// atomic operations per update).
struct Queue {
    state: Mutex<QueueState>,
    capacity: usize,
    /// Senders waiting for room: woken when the worker gives places back, which it does
    /// in bulk (once it has read half the queue's worth, or when it next takes from the
    /// queue), not once per update (a wake-up per update would cost the worker a system
    /// call each).
    room: event_listener::Event,
    /// The worker, waiting for a message while it has nothing pending.
    arrived: event_listener::Event,
    /// How to wake a worker that waits in a loop of its own (curl's `Multi::poll`).
    wake: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
}

#[derive(Default)]
struct QueueState {
    msgs: VecDeque<Msg>,
    /// Updates queued here or taken by the worker and not yet given back: the bound
    /// counts both, so memory stays bounded by the queue's size.
    updates: usize,
    /// The next update's id; also how many updates were taken by `send`.
    next_id: u64,
    /// The worker takes nothing more: it saw the shutdown, or it is gone.
    closed: bool,
    /// Every handle is dropped: nothing more will come.
    orphaned: bool,
    /// The worker waits on `arrived`: the next message wakes it.
    worker_waiting: bool,
}

impl Queue {
    fn new(capacity: usize) -> Queue {
        Queue {
            state: Mutex::new(QueueState::default()),
            capacity: capacity.max(1),
            room: event_listener::Event::new(),
            arrived: event_listener::Event::new(),
            wake: std::sync::OnceLock::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        lock(&self.state)
    }

    /// Queues an update if the worker still takes them and there is room.
    fn offer(&self, update: Update) -> Offer {
        let mut st = self.lock();
        if st.closed {
            drop(st);
            return Offer::Done(Err(Closed(Box::new(update))));
        }
        if st.updates >= self.capacity {
            return Offer::Full(update);
        }
        st.updates += 1;
        let id = st.next_id;
        st.next_id += 1;
        st.msgs.push_back(Msg::Update(id, update));
        self.wake_worker(st);
        Offer::Done(Ok(id))
    }

    /// Queues a flush or the shutdown (never held back for room); `false` once closed.
    fn post(&self, msg: Msg) -> bool {
        let mut st = self.lock();
        if st.closed {
            return false;
        }
        st.msgs.push_back(msg);
        self.wake_worker(st);
        true
    }

    /// Wakes the worker if it waits for a message (`st` is unlocked first).
    fn wake_worker(&self, mut st: MutexGuard<'_, QueueState>) {
        let waiting = std::mem::take(&mut st.worker_waiting);
        drop(st);
        if waiting {
            self.arrived.notify(1);
            if let Some(wake) = self.wake.get() {
                wake();
            }
        }
    }

    /// The worker takes nothing more; senders waiting for room give up.
    fn close(&self) {
        self.lock().closed = true;
        self.room.notify(usize::MAX);
    }
}

impl Shared {
    /// The running totals, `sent` included.
    fn snapshot(&self) -> ClientSummary {
        let mut s = lock(&self.totals).clone();
        // Read after the totals: never fewer sent than settled.
        s.sent = self.queue.lock().next_id;
        s
    }
}

/// How long a worker with updates pending lets the queue fill before looking again.
const COALESCE: Duration = Duration::from_millis(1);

/// Drops with the last handle: the worker delivers what is queued, then ends. A client
/// dropped without a shutdown still delivers what is queued (the worker runs on until the
/// queue is empty), but a program that exits right after may lose it, so it says so.
struct LastHandle(Arc<Shared>);

impl Drop for LastHandle {
    fn drop(&mut self) {
        let queue = &self.0.queue;
        let mut st = queue.lock();
        st.orphaned = true;
        queue.wake_worker(st);
        if !self.0.shutdown_asked.load(Ordering::Relaxed) {
            #[cfg(feature = "tracing")]
            tracing::warn!(
                "engage client dropped without shutdown: the worker delivers what is queued, but a program that exits now loses it; call shutdown(deadline)"
            );
        }
    }
}

/// The handle applications send through: cheap to clone, `Send + Sync`.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    _last: Arc<LastHandle>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("queued", &self.queued())
            .finish()
    }
}

impl Client {
    /// A client and its worker, which a transport runs in the background.
    pub fn new(config: ClientConfig) -> (Client, Worker) {
        let (done_tx, done_rx) = async_channel::bounded(1);
        let shared = Arc::new(Shared {
            totals: Mutex::new(ClientSummary::default()),
            queue: Queue::new(config.queue),
            done: Mutex::new(None),
            done_tx,
            done_rx,
            shutdown_asked: AtomicBool::new(false),
        });
        let feed = ChannelFeed {
            inbox: VecDeque::new(),
            taken: 0,
            fed: false,
            was_fed: false,
            finished: false,
            next_index: 0,
            settled: 0,
            ids: HashMap::new(),
            flushes: VecDeque::new(),
            shutdown: None,
            ended: false,
            idle: false,
            on_outcome: config.on_outcome,
            shared: shared.clone(),
            poll_every: None,
        };
        let client = Client {
            _last: Arc::new(LastHandle(shared.clone())),
            shared,
        };
        (
            client,
            Worker {
                config: config.import,
                feed,
            },
        )
    }

    /// Whether a shutdown was asked for: no more updates are taken.
    fn closing(&self) -> bool {
        self.shared.shutdown_asked.load(Ordering::Relaxed)
    }

    /// Queues the update if the client is open and the queue has room; hands it back if
    /// the queue is full.
    fn offer(&self, update: Update) -> Offer {
        if self.closing() {
            return Offer::Done(Err(Closed(Box::new(update))));
        }
        self.shared.queue.offer(update)
    }

    /// Queues an update, waiting while the queue is full (a waiting sender goes on once
    /// the worker gives places back, in bulk). Returns its id (as in [`Delivered::id`]).
    pub async fn send(&self, mut update: Update) -> Result<u64, Closed> {
        loop {
            match self.offer_or_listen(update) {
                Offered::Done(queued) => return queued,
                Offered::Wait(back, freed) => {
                    update = back;
                    freed.await;
                }
            }
        }
    }

    /// Offers `update`; on a full queue, hands it back with a listener for freed room,
    /// taken before a second look so that room freed in between is not missed.
    fn offer_or_listen(&self, update: Update) -> Offered {
        let update = match self.offer(update) {
            Offer::Done(r) => return Offered::Done(r),
            Offer::Full(u) => u,
        };
        let freed = self.shared.queue.room.listen();
        match self.offer(update) {
            Offer::Done(r) => Offered::Done(r),
            Offer::Full(u) => Offered::Wait(u, freed),
        }
    }

    /// Queues an update if there is room now; a full queue hands it back.
    pub fn try_send(&self, update: Update) -> Result<u64, TrySendError> {
        match self.offer(update) {
            Offer::Done(r) => r.map_err(|Closed(u)| TrySendError::Closed(u)),
            Offer::Full(u) => Err(TrySendError::Full(Box::new(u))),
        }
    }

    /// Queues an update, blocking the thread while the queue is full (not from an async
    /// task: use [`send`](Self::send) there).
    pub fn send_blocking(&self, mut update: Update) -> Result<u64, Closed> {
        loop {
            match self.offer_or_listen(update) {
                Offered::Done(queued) => return queued,
                Offered::Wait(back, freed) => {
                    update = back;
                    event_listener::Listener::wait(freed);
                }
            }
        }
    }

    /// Completes when every update sent before it is settled (batches are closed at once,
    /// whatever the linger). `false` if the client was shut down first.
    pub async fn flush(&self) -> bool {
        let (tx, rx) = async_channel::bounded(1);
        if !self.shared.queue.post(Msg::Flush(tx)) {
            return false;
        }
        rx.recv().await.is_ok()
    }

    /// [`flush`](Self::flush), blocking the thread.
    pub fn flush_blocking(&self) -> bool {
        let (tx, rx) = async_channel::bounded(1);
        if !self.shared.queue.post(Msg::Flush(tx)) {
            return false;
        }
        rx.recv_blocking().is_ok()
    }

    /// Stops taking updates and asks the worker to deliver what is queued within
    /// `timeout`, then stop: whatever is not delivered by then is reported (requests in
    /// flight as maybe applied, updates still queued as never sent). Returns at once; see
    /// [`shutdown`](Self::shutdown) to wait for the account.
    pub fn begin_shutdown(&self, timeout: Duration) {
        self.shared.shutdown_asked.store(true, Ordering::Relaxed);
        // Senders waiting for room give up (closing refuses new updates now); the
        // shutdown message goes behind everything queued (it never waits for room).
        self.shared.queue.room.notify(usize::MAX);
        let _ = self.shared.queue.post(Msg::Shutdown(timeout));
    }

    /// Shuts down (see [`begin_shutdown`](Self::begin_shutdown)) and waits for the final
    /// account, which says what was not delivered: nothing is dropped silently.
    pub async fn shutdown(&self, timeout: Duration) -> ClientSummary {
        self.begin_shutdown(timeout);
        let _ = self.shared.done_rx.recv().await;
        self.final_summary()
    }

    /// [`shutdown`](Self::shutdown), blocking the thread.
    pub fn shutdown_blocking(&self, timeout: Duration) -> ClientSummary {
        self.begin_shutdown(timeout);
        let _ = self.shared.done_rx.recv_blocking();
        self.final_summary()
    }

    fn final_summary(&self) -> ClientSummary {
        lock(&self.shared.done)
            .clone()
            .unwrap_or_else(|| self.shared.snapshot())
    }

    /// The running totals.
    pub fn totals(&self) -> ClientSummary {
        self.shared.snapshot()
    }

    /// Updates holding a place in the queue now: those waiting, and those the worker has
    /// read but not yet given their places back (see [`ClientConfig::queue`]).
    pub fn queued(&self) -> usize {
        self.shared.queue.lock().updates
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The client's queue as the importer's [`Feed`]: updates in, outcomes out, flushes and
/// the shutdown deadline passed through. Transports with a loop of their own (curl's
/// `Multi`) drive an [`Importer`] with it; see [`Worker::into_parts`].
pub struct ChannelFeed {
    /// Messages taken from the queue, in order, not yet read.
    inbox: VecDeque<Msg>,
    /// Updates read from the inbox whose places are not yet given back to the queue.
    taken: usize,
    /// Whether the last look at the queue found messages, and the look before it.
    fed: bool,
    was_fed: bool,
    /// `finish` ran.
    finished: bool,
    next_index: u64,
    /// Updates settled so far (delivered or invalid): `next_index - settled` are pending.
    settled: u64,
    /// Importer index → the handle's id.
    ids: HashMap<u64, u64>,
    flushes: VecDeque<Sender<()>>,
    /// The shutdown's timeout, then its deadline once seen with a time.
    shutdown: Option<(Duration, Option<Instant>)>,
    ended: bool,
    idle: bool,
    on_outcome: Option<OutcomeFn>,
    shared: Arc<Shared>,
    poll_every: Option<Duration>,
}

impl std::fmt::Debug for ChannelFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelFeed")
            .field("inbox", &self.inbox.len())
            .field("ended", &self.ended)
            .finish()
    }
}

impl ChannelFeed {
    /// Makes drivers step at least this often (a loop that cannot wait on the queue itself
    /// polls it).
    pub fn poll_every(&mut self, every: Duration) {
        self.poll_every = Some(every);
    }

    fn outcome(&mut self, index: u64, profile: Option<ProfileId>, outcome: Outcome) {
        let id = self.ids.remove(&index).unwrap_or(index);
        if let Some(f) = self.on_outcome.as_mut() {
            f(&Delivered {
                id,
                profile,
                outcome,
            });
        }
    }

    /// Ends the worker's account: what is still queued is reported never sent, the
    /// summary is kept for the handles, and a waiting shutdown returns.
    pub fn finish(mut self, summary: &ImportSummary) -> ClientSummary {
        self.finished = true;
        let queued = {
            let mut st = self.shared.queue.lock();
            st.closed = true;
            st.updates = 0;
            std::mem::take(&mut st.msgs)
        };
        self.shared.queue.room.notify(usize::MAX);
        // Flushes still queued are answered `false` as their senders drop.
        let left: Vec<(u64, Update)> = self
            .inbox
            .drain(..)
            .chain(queued)
            .filter_map(|msg| match msg {
                Msg::Update(id, u) => Some((id, u)),
                _ => None,
            })
            .collect();
        {
            let mut t = lock(&self.shared.totals);
            t.not_delivered += left.len() as u64;
            t.requests = summary.requests;
            t.retries = summary.retries;
            t.throttled = summary.throttled;
            t.fatal = summary.fatal.clone();
        }
        for (id, u) in left {
            if let Some(f) = self.on_outcome.as_mut() {
                f(&Delivered {
                    id,
                    profile: u.profile(),
                    outcome: Outcome::NotDelivered {
                        error: DeliveryError::Stopped,
                        maybe_applied: false,
                    },
                });
            }
        }
        let final_summary = self.shared.snapshot();
        *lock(&self.shared.done) = Some(final_summary.clone());
        let _ = self.shared.done_tx.try_send(());
        self.shared.done_tx.close();
        final_summary
    }
}

impl ChannelFeed {
    /// Whether senders are busy (the look before last at the queue found messages, the
    /// last one none) while updates wait in batches: the worker looks again within
    /// [`COALESCE`] rather than be woken by every message (senders would pay a wake-up
    /// each), and a driver that cannot be woken by the queue at all (curl's loop) does not
    /// sleep its whole poll interval while senders fill it. Once a look finds the queue
    /// still empty, the worker waits to be woken (or curl polls at its own pace): a lone
    /// update lingering does not keep it looking every millisecond.
    fn accumulating(&self) -> bool {
        self.was_fed
            && !self.fed
            && self.idle
            && self.inbox.is_empty()
            && !self.ended
            && self.next_index > self.settled
            && self.shutdown.is_none()
            && self.flushes.is_empty()
    }

    /// Gives the places of the updates read since the last time back to the queue, takes
    /// whatever is queued if the inbox is empty, and wakes senders waiting for room.
    fn exchange(&mut self, take: bool) {
        let queue = &self.shared.queue;
        let mut st = queue.lock();
        st.updates = st.updates.saturating_sub(self.taken);
        let freed = std::mem::take(&mut self.taken) > 0;
        if take && self.inbox.is_empty() {
            std::mem::swap(&mut st.msgs, &mut self.inbox);
            let found = !self.inbox.is_empty();
            self.was_fed = std::mem::replace(&mut self.fed, found);
            self.ended = !found && st.orphaned;
        }
        drop(st);
        if freed {
            queue.room.notify(usize::MAX);
        }
    }

    /// For a driver that waits in a loop of its own and can be woken from another thread
    /// (curl's `Multi::poll` and its waker): `wake` is called when a message arrives
    /// while the driver waits for one, once it has asked with
    /// [`arm_wake`](Self::arm_wake). Set once; later calls are ignored.
    pub fn wake_with(&mut self, wake: impl Fn() + Send + Sync + 'static) {
        let _ = self.shared.queue.wake.set(Box::new(wake));
    }

    /// Asked by such a driver before it waits, while the importer
    /// [wants input](Importer::wants_input) (otherwise a message could not be taken
    /// anyway: wait for the importer's deadline or an answer). `false`: a message came
    /// since the importer last found the queue empty, so step again instead of waiting.
    /// `true`: wait; if the importer is waiting for messages (it found the queue empty and
    /// nothing is pending), the next one calls the function given to
    /// [`wake_with`](Self::wake_with).
    /// While senders are busy it is not armed (they would each pay a wake-up): the
    /// importer's next deadline is then within a millisecond anyway.
    pub fn arm_wake(&mut self) -> bool {
        if !self.idle || !self.inbox.is_empty() || self.ended || self.accumulating() {
            return true;
        }
        self.ask_to_be_woken()
    }

    /// Marks the worker as waiting for a message, so that the next one wakes it; `false`
    /// (and not marked) if one is already queued or none will ever come.
    fn ask_to_be_woken(&self) -> bool {
        let mut st = self.shared.queue.lock();
        if !st.msgs.is_empty() || st.orphaned || st.closed {
            return false;
        }
        st.worker_waiting = true;
        true
    }

    /// A listener the next message wakes, or `None` if one is already queued (or none
    /// will ever come): then the worker steps again at once.
    fn listen(&self) -> Option<event_listener::EventListener> {
        // Listening before asking: a message that comes in between is not missed.
        let listener = self.shared.queue.arrived.listen();
        self.ask_to_be_woken().then_some(listener)
    }
}

impl Drop for ChannelFeed {
    /// A worker gone without finishing (its runtime shut down, its thread could not
    /// start): senders are refused rather than left waiting for room that never comes,
    /// and a shutdown returns the running totals at once rather than waiting for a
    /// final account that never comes (updates sent and not settled are then unknown).
    fn drop(&mut self) {
        if !self.finished {
            self.shared.queue.close();
            self.shared.done_tx.close();
        }
    }
}

impl Feed for ChannelFeed {
    type Item = (u64, Update);

    fn next_item(&mut self) -> Next<(u64, Update)> {
        self.idle = false;
        if self.ended {
            return Next::End;
        }
        if self.inbox.is_empty() {
            self.exchange(true);
        }
        let Some(msg) = self.inbox.pop_front() else {
            if self.ended {
                return Next::End;
            }
            self.idle = true;
            return Next::Idle;
        };
        match msg {
            Msg::Update(id, update) => {
                // Places go back once half the queue's worth is used: senders waiting
                // for room go on while the rest of the inbox is read.
                self.taken += 1;
                if self.taken >= self.shared.queue.capacity.div_ceil(2) {
                    self.exchange(false);
                }
                let index = self.next_index;
                self.next_index += 1;
                // Ids matter only to an outcome callback: without one, no map per update.
                if self.on_outcome.is_some() {
                    self.ids.insert(index, id);
                }
                Next::Item((index, update))
            }
            Msg::Flush(reply) => {
                self.flushes.push_back(reply);
                Next::Flush
            }
            Msg::Shutdown(timeout) => {
                // No more updates: what is queued behind this is reported at the end.
                self.shared.queue.close();
                self.shutdown.get_or_insert((timeout, None));
                self.ended = true;
                Next::End
            }
        }
    }

    fn on_event(&mut self, event: ImportEvent) {
        match event {
            ImportEvent::Invalid(e) => {
                self.settled += 1;
                lock(&self.shared.totals).invalid += 1;
                if self.on_outcome.is_some() {
                    let profile = e.profile.clone();
                    self.outcome(e.index, profile, Outcome::Invalid(e));
                }
            }
            ImportEvent::Delivered(report) => {
                // Counted in one go; outcomes (a profile, an error) built only for a
                // callback that wants them.
                let mut counts = ClientSummary::default();
                self.settled += report.records.len() as u64;
                for r in &report.records {
                    let uncertain = r.is_uncertain();
                    match &r.outcome {
                        RecordOutcome::Accepted => {
                            counts.accepted += 1;
                            counts.uncertain += u64::from(uncertain);
                        }
                        RecordOutcome::Rejected { .. } => counts.rejected += 1,
                        RecordOutcome::NotDelivered(_) => {
                            counts.not_delivered += 1;
                            counts.maybe_applied += u64::from(r.maybe_applied);
                        }
                    }
                    if self.on_outcome.is_none() {
                        continue;
                    }
                    let outcome = match &r.outcome {
                        RecordOutcome::Accepted if uncertain => Outcome::UncertainResend,
                        RecordOutcome::Accepted => Outcome::Accepted,
                        RecordOutcome::Rejected { field, message } => Outcome::Rejected {
                            field: field.clone(),
                            message: message.clone(),
                        },
                        RecordOutcome::NotDelivered(e) => Outcome::NotDelivered {
                            error: e.clone(),
                            maybe_applied: r.maybe_applied,
                        },
                    };
                    let profile = report.profile(r.position);
                    self.outcome(r.index, profile, outcome);
                }
                let mut t = lock(&self.shared.totals);
                t.accepted += counts.accepted;
                t.uncertain += counts.uncertain;
                t.rejected += counts.rejected;
                t.not_delivered += counts.not_delivered;
                t.maybe_applied += counts.maybe_applied;
                t.requests += u64::from(report.requests);
                t.retries += u64::from(report.retries);
                t.throttled += u64::from(report.throttled);
            }
            ImportEvent::Flushed(_) => {
                if let Some(reply) = self.flushes.pop_front() {
                    let _ = reply.try_send(());
                }
            }
            _ => {}
        }
    }

    fn stop_requested(&mut self, now: Instant) -> bool {
        match &mut self.shutdown {
            Some((timeout, deadline)) => {
                let at = *deadline.get_or_insert(now.checked_add(*timeout).unwrap_or(now));
                now >= at
            }
            None => false,
        }
    }

    fn check_every(&self) -> Option<Duration> {
        // Wake for the shutdown's deadline even while requests are in flight.
        let every = match (self.shutdown, self.poll_every) {
            (Some((t, None)), p) => Some(p.map_or(t, |p| p.min(t))),
            (Some((_, Some(_))), p) => Some(p.unwrap_or(Duration::from_millis(50))),
            (None, p) => p,
        };
        if self.accumulating() {
            Some(every.map_or(COALESCE, |e| e.min(COALESCE)))
        } else {
            every
        }
    }
}

/// The background part of a [`Client`]: a transport runs it on its runtime.
pub struct Worker {
    config: ImportConfig,
    feed: ChannelFeed,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("config", &self.config)
            .finish()
    }
}

impl Worker {
    /// The import settings and the feed, for a transport that drives an
    /// [`Importer`] in a loop of its own; call [`ChannelFeed::finish`] with the summary at
    /// the end.
    pub fn into_parts(self) -> (ImportConfig, ChannelFeed) {
        (self.config, self.feed)
    }

    /// Runs the client on any async runtime: `send` performs one HTTP exchange, `sleep`
    /// waits. Waits on the requests in flight, the next deadline and, when nothing is
    /// pending, the queue at once; while senders keep the queue busy and updates wait in
    /// batches, it looks at the queue every millisecond instead of being woken by each
    /// message.
    /// Completes after [`Client::shutdown`], or once every handle is dropped and
    /// everything queued is delivered.
    pub async fn run<C, S, SF, W, WF>(self, clock: &C, mut send: S, mut sleep: W) -> ClientSummary
    where
        C: Clock + ?Sized,
        S: FnMut(Request<Bytes>) -> SF,
        SF: Future<Output = Result<Response<Bytes>, TransportError>>,
        W: FnMut(Duration) -> WF,
        WF: Future<Output = ()>,
    {
        let Worker { config, mut feed } = self;
        let mut importer = Importer::new(config);
        let mut in_flight: Vec<(crate::delivery::RequestId, Pin<Box<SF>>)> = Vec::new();
        loop {
            match importer.step(clock.now(), &mut feed) {
                ImportAction::Send { id, request } => {
                    in_flight.push((id, Box::pin(send(request))));
                }
                ImportAction::NeedInput => {}
                ImportAction::Done => break,
                ImportAction::Wait { until } => {
                    // Updates waiting in a batch: the step's `until` already looks at the
                    // queue again shortly (`ChannelFeed::accumulating`). With nothing
                    // pending, the first message wakes the worker at once.
                    // Only while the importer takes input: otherwise `idle` is from an
                    // earlier look, and a message could not be taken anyway.
                    let queue_empty = feed.idle && feed.inbox.is_empty() && !feed.ended;
                    let listen = importer.wants_input() && queue_empty && !feed.accumulating();
                    // Back at once (a burst was read): no timer, which a runtime may round
                    // up to its tick.
                    let now = clock.now();
                    let mut incoming = if listen { feed.listen() } else { None };
                    // A message came in between: step again at once.
                    let at_once = until.is_some_and(|u| u <= now) || (listen && incoming.is_none());
                    let mut timer = until
                        .filter(|_| !at_once)
                        .map(|u| Box::pin(sleep(u.saturating_duration_since(now))));
                    enum Woke<R> {
                        Answer(crate::delivery::RequestId, R),
                        Message,
                        Timer,
                    }
                    let woke = std::future::poll_fn(|cx| {
                        for i in 0..in_flight.len() {
                            if let Poll::Ready(result) = in_flight[i].1.as_mut().poll(cx) {
                                let (id, _) = in_flight.swap_remove(i);
                                return Poll::Ready(Woke::Answer(id, result));
                            }
                        }
                        if let Some(r) = incoming.as_mut()
                            && Pin::new(r).poll(cx).is_ready()
                        {
                            return Poll::Ready(Woke::Message);
                        }
                        if let Some(t) = timer.as_mut()
                            && t.as_mut().poll(cx).is_ready()
                        {
                            return Poll::Ready(Woke::Timer);
                        }
                        if at_once
                            || (in_flight.is_empty() && timer.is_none() && incoming.is_none())
                        {
                            return Poll::Ready(Woke::Timer);
                        }
                        Poll::Pending
                    })
                    .await;
                    match woke {
                        Woke::Answer(id, result) => {
                            importer.on_result(id, clock.now(), clock.wall(), result);
                        }
                        Woke::Message | Woke::Timer => {}
                    }
                }
            }
        }
        while let Some(e) = importer.next_event() {
            feed.on_event(e);
        }
        feed.finish(importer.summary())
    }
}
