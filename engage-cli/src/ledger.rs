//! The import's account, in one place, owned by the loop that runs the import: it reads
//! the input (it is the importer's [`Feed`]), and every event comes back to it. It keeps
//! each record's origin until the record is settled, writes the failure file and the
//! journal, and counts what the summary says.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use engage_core::delivery::{
    Decision, DeliveryError, Feed, Importer, JsonPush, Next, RecordOutcome, Sending,
    TransportErrorKind,
};
use engage_core::{ImportEvent, Update};

use std::borrow::Cow;

use bytes::Bytes;
use engage_core::batch::RecordRef;
use foldhash::fast::FixedState;

use crate::failures::FailureFile;
use crate::input::{Item, Records};
use crate::journal::{Journal, Resume, Status};
use crate::progress::Progress;
use crate::reasons::{self, Category, Reasons};
use crate::term::clean;

/// A record waiting for its fate: where it came from and its original text (UTF-8), or
/// `None` for an update that held its text: that is read back from its batch's body
/// (`RecordRef::json_without_token`) or, for one refused as it was batched, from
/// [`Ledger::refused`].
struct Pending {
    file: usize,
    line: u64,
    original: Option<Bytes>,
}

/// The records read and not yet settled, by index. Indices are handed out in increasing
/// order and records mostly settle in it, so they are kept in a deque in index order
/// (settled ones emptied in place and trimmed from the front): no tree to rebalance and no
/// node to allocate per record. Slots emptied behind a record that stays pending long (a
/// lane whose open batch fills slowly, a lane retrying) are compacted away once they
/// outnumber the pending ones, so memory follows the records pending, not the records
/// read meanwhile.
///
/// A slot is 24 bytes: a record's original text, which most records do not keep (an
/// update read as text is read back from its batch), is kept beside the deque, by index.
/// (Slots holding the text were 56 bytes: with a buffer's worth of records pending and as
/// many emptied slots, the deque alone made most of an import's memory, and its first
/// touches most of its page faults.)
///
/// A record is found at its slot while no compaction left gaps, else by a search that
/// gallops from where the last one was settled: a batch settles records close together,
/// in increasing order, so that is a few steps rather than a binary search through a whole
/// buffer's records (cold memory, with many requests in flight).
#[derive(Default)]
struct PendingRecords {
    slots: VecDeque<Slot>,
    /// The original texts of the pending records that keep one.
    originals: HashMap<u64, Bytes, FixedState>,
    /// Slots holding a record.
    live: usize,
    /// Where the last record was removed.
    finger: usize,
}

/// A record's slot in [`PendingRecords`].
#[derive(Clone, Copy)]
struct Slot {
    index: u64,
    line: u64,
    /// Its input; `EMPTY` once settled.
    file: u32,
    /// Whether its original text is in `originals`.
    original: bool,
}

impl Slot {
    /// The `file` of a settled record's slot.
    const EMPTY: u32 = u32::MAX;

    fn is_live(&self) -> bool {
        self.file != Self::EMPTY
    }
}

/// Where a pending record came from, and whether it keeps its original text.
#[derive(Clone, Copy)]
struct Origin {
    file: usize,
    line: u64,
    original: bool,
}

impl PendingRecords {
    /// Adds record `index`, read after every record already here.
    #[inline]
    fn insert(&mut self, index: u64, pending: Pending) {
        debug_assert!(self.slots.back().is_none_or(|s| s.index < index));
        // Inputs are the files named on the command line: far fewer than `u32::MAX`.
        let file = u32::try_from(pending.file)
            .unwrap_or(Slot::EMPTY - 1)
            .min(Slot::EMPTY - 1);
        let original = pending.original.is_some();
        if let Some(text) = pending.original {
            self.keep_original(index, text);
        }
        self.slots.push_back(Slot {
            index,
            line: pending.line,
            file,
            original,
        });
        self.live += 1;
    }

    /// Out of line: most records keep no text.
    #[cold]
    #[inline(never)]
    fn keep_original(&mut self, index: u64, text: Bytes) {
        self.originals.insert(index, text);
    }

    fn position(&self, index: u64) -> Option<usize> {
        let front = self.slots.front()?.index;
        let guess = usize::try_from(index.checked_sub(front)?).ok()?;
        if self.slots.get(guess).is_some_and(|s| s.index == index) {
            return Some(guess);
        }
        let key = |k: usize| self.slots[k].index;
        let n = self.slots.len();
        let from = self.finger.min(n - 1);
        // Bounds with key(lo) <= index < key(hi) (hi == n: past the end), found by steps
        // doubling away from the finger.
        let (mut lo, mut hi) = (from, n);
        let mut step = 1;
        if key(from) <= index {
            while from + step < n {
                if key(from + step) > index {
                    hi = from + step;
                    break;
                }
                lo = from + step;
                step *= 2;
            }
        } else {
            hi = from;
            lo = 0;
            while step <= from {
                if key(from - step) <= index {
                    lo = from - step;
                    break;
                }
                hi = from - step;
                step *= 2;
            }
        }
        while lo + 1 < hi {
            let mid = lo + (hi - lo) / 2;
            if key(mid) <= index {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        (key(lo) == index).then_some(lo)
    }

    /// Where record `index` came from, if it is pending.
    fn get(&self, index: u64) -> Option<Origin> {
        let slot = self.slots[self.position(index)?];
        slot.is_live().then_some(Origin {
            file: slot.file as usize,
            line: slot.line,
            original: slot.original,
        })
    }

    /// Takes record `index` out, if it is pending.
    fn remove(&mut self, index: u64) -> Option<Pending> {
        let at = self.position(index)?;
        let slot = &mut self.slots[at];
        if !slot.is_live() {
            return None;
        }
        let file = std::mem::replace(&mut slot.file, Slot::EMPTY) as usize;
        let pending = Pending {
            file,
            line: slot.line,
            original: match slot.original {
                true => self.originals.remove(&index),
                false => None,
            },
        };
        self.live -= 1;
        self.finger = at;
        while self.slots.front().is_some_and(|s| !s.is_live()) {
            self.slots.pop_front();
            self.finger = self.finger.saturating_sub(1);
        }
        // Compacted when emptied slots are the most: each compaction at least halves the
        // deque, so its cost is a few steps per record settled.
        if self.slots.len() > 1024 && self.slots.len() > 2 * self.live {
            self.slots.retain(Slot::is_live);
            self.finger = 0;
            if self.slots.capacity() > 8 * self.slots.len().max(1024) {
                self.slots.shrink_to(2 * self.slots.len());
            }
        }
        Some(pending)
    }
}

/// What a resumed import does with records a crash left in doubt.
pub struct Resuming {
    /// What the journal says of each record.
    pub journal: Resume,
    /// `$add`/`$append` records that may have been applied are withheld (listed in the
    /// failure file) instead of resent and counted uncertain.
    pub at_most_once: bool,
}

/// Counts for the summary, besides the importer's own.
#[derive(Debug, Default)]
pub struct Counts {
    /// Records read (updates and lines that are not).
    pub read: u64,
    /// Blank lines skipped.
    pub blank: u64,
    /// Lines that could not become an update.
    pub bad_input: u64,
    /// Skipped on resume: settled in the run the journal recorded.
    pub skipped_settled: u64,
    /// On resume, `$add`/`$append` records that may have been applied before the crash,
    /// resent; of them, accepted (so maybe applied twice).
    pub resent_in_doubt: u64,
    /// Of those, accepted: uncertain.
    pub uncertain_after_crash: u64,
    /// On resume with at-most-once, withheld and listed instead.
    pub withheld: u64,
}

/// The import's account.
pub struct Ledger {
    reader: Box<dyn Records>,
    files: Vec<String>,
    /// By index (a hash map's table, spread over megabytes, missed the cache on every
    /// insert and remove; a B-tree cost a node walk and rebalancing each).
    pending: PendingRecords,
    next_index: u64,
    /// The counts.
    pub counts: Counts,
    failures: Option<FailureFile>,
    last_flush: Instant,
    /// The progress display.
    pub progress: Progress,
    warnings_shown: u64,
    long_wait_said: bool,
    journal: Option<Journal>,
    resume: Option<Resuming>,
    /// Records resent after a crash left them in doubt (non-idempotent ones).
    in_doubt: HashSet<u64, FixedState>,
    /// The texts of updates the importer refused as it batched them
    /// ([`Feed::on_refused`]), until their [`ImportEvent::Invalid`] reports them.
    refused: Vec<(u64, Bytes)>,
    /// Set by the first SIGINT or SIGTERM.
    interrupt: Arc<AtomicBool>,
    /// Problems that make the exit status 1, named in the report.
    pub errors: Vec<String>,
    /// Why, per category.
    pub reasons: Reasons,
    /// The server's host and port, for messages.
    server: String,
    /// Whether any request got an HTTP answer yet.
    answered: bool,
    /// Early notices already given.
    said: HashSet<String>,
}

impl Ledger {
    /// A ledger reading `reader` (records of the inputs named `files`).
    pub fn new(
        reader: Box<dyn Records>,
        files: Vec<String>,
        failures: Option<FailureFile>,
        progress: Progress,
        interrupt: Arc<AtomicBool>,
    ) -> Self {
        Ledger {
            reader,
            files,
            pending: PendingRecords::default(),
            next_index: 0,
            counts: Counts::default(),
            failures,
            last_flush: Instant::now(),
            progress,
            warnings_shown: 0,
            long_wait_said: false,
            journal: None,
            resume: None,
            in_doubt: HashSet::default(),
            refused: Vec::new(),
            interrupt,
            errors: Vec::new(),
            reasons: Reasons::default(),
            server: String::new(),
            answered: false,
            said: HashSet::new(),
        }
    }

    /// The server requests go to (host and port), for messages.
    pub fn server(mut self, server: String) -> Self {
        self.server = server;
        self
    }

    /// The input files' names, for the summary.
    pub fn files(&self) -> &[String] {
        &self.files
    }

    /// Writes a journal as the import goes.
    pub fn with_journal(mut self, journal: Journal, resume: Option<Resuming>) -> Self {
        self.journal = Some(journal);
        self.resume = resume;
        self
    }

    /// Whether the import was interrupted.
    pub fn interrupted(&self) -> bool {
        self.interrupt.load(Ordering::Relaxed)
    }

    fn fail(&mut self, file: usize, line: u64, original: &str, kind: &str, reason: &str) {
        let Some(w) = self.failures.as_mut() else {
            return;
        };
        let name = self.files.get(file).map(String::as_str).unwrap_or_default();
        w.add(name, line, kind, &clean(reason), original);
        // Records found invalid while reading are flushed at least once a second.
        if self.last_flush.elapsed() >= Duration::from_secs(1) {
            self.flush();
        }
    }

    /// Writes what is queued for the failure file and the journal.
    pub fn flush(&mut self) {
        if let Some(w) = self.failures.as_mut() {
            w.flush();
        }
        if let Some(j) = self.journal.as_mut()
            && let Err(e) = j.sync()
        {
            self.journal_failed(e);
        }
        self.last_flush = Instant::now();
    }

    fn journal_failed(&mut self, e: std::io::Error) {
        self.errors.push(format!(
            "could not write the journal: {e}; the import stopped (a resume may resend what it had no record of)"
        ));
        self.journal = None;
        // Without its journal the import cannot promise a safe resume: stop sending.
        self.interrupt.store(true, Ordering::Relaxed);
    }

    /// The failure file's write error, if any.
    pub fn failure_file_error(&self) -> Option<&str> {
        self.failures.as_ref().and_then(FailureFile::error)
    }

    /// A record's fate: the failure file's entry (`kind`, `reason`) and the summary's
    /// reason (`category`, `short`).
    fn settle(
        &mut self,
        index: u64,
        batched: Option<RecordRef<'_>>,
        kind: &str,
        reason: &str,
        category: Category,
        short: String,
    ) {
        if let Some(p) = self.pending.remove(index) {
            self.reasons.add(category, short, p.file, p.line);
            let original = match (&p.original, batched) {
                (Some(text), _) => Cow::Borrowed(std::str::from_utf8(text).unwrap_or_default()),
                (None, Some(record)) => Cow::Owned(record.json_without_token()),
                (None, None) => match self.refused.iter().position(|(i, _)| *i == index) {
                    Some(at) => {
                        let (_, text) = self.refused.swap_remove(at);
                        Cow::Owned(String::from_utf8_lossy(&text).into_owned())
                    }
                    None => Cow::Borrowed(""),
                },
            };
            self.fail(p.file, p.line, &original, kind, reason);
        }
    }

    /// Where record `index` came from, while it is pending.
    fn origin(&self, index: u64) -> Option<(usize, u64)> {
        self.pending.get(index).map(|p| (p.file, p.line))
    }

    /// Says the first systematic failure at once instead of burning retries in silence:
    /// no connection, no TLS, no answer in time, or the token refused.
    fn on_attempt(&mut self, a: &engage_core::delivery::Attempt) {
        log_attempt(a);
        let note = match &a.result {
            Ok(status) if matches!(status.as_u16(), 401 | 403) => Some(format!(
                "the server refused the project token (HTTP {status}): stopping; nothing more is sent"
            )),
            Ok(status) if status.as_u16() == 407 => Some(format!(
                "a proxy wants credentials (HTTP {status}): give them as --proxy http://user:password@host:port; stopping, nothing more is sent"
            )),
            Ok(_) => {
                self.answered = true;
                None
            }
            Err(e)
                if !self.answered
                    && matches!(
                        e.kind(),
                        TransportErrorKind::Connect
                            | TransportErrorKind::Tls
                            | TransportErrorKind::Timeout
                            | TransportErrorKind::Proxy
                    ) =>
            {
                let why = reasons::transport(e, &self.server);
                Some(if matches!(a.decision, Decision::Stop) {
                    format!("{why}: stopping; nothing more is sent")
                } else {
                    format!("{why}: retrying with backoff (Ctrl-C stops)")
                })
            }
            Err(_) => None,
        };
        if let Some(note) = note
            && self.said.insert(note.clone())
            && !self.progress.quiet
        {
            self.progress.println(&format!("engage import: {note}"));
        }
    }

    fn on_sending(&mut self, s: &Sending) {
        self.progress.in_flight += 1;
        if let Some(j) = self.journal.as_mut()
            && let Err(e) = j.send(&s.indices, !s.idempotent)
        {
            self.journal_failed(e);
        }
    }

    fn on_delivered(&mut self, report: engage_core::delivery::Report) {
        self.progress.batches += 1;
        self.progress.in_flight = self.progress.in_flight.saturating_sub(1);
        self.progress.retries += u64::from(report.retries);
        for w in report.batch.warnings() {
            let origin = self.origin(w.index);
            if self.warnings_shown < 20 && !self.progress.quiet {
                let at = match &origin {
                    Some((file, line)) => {
                        let name = self
                            .files
                            .get(*file)
                            .map(String::as_str)
                            .unwrap_or_default();
                        format!("{}:{line}: ", clean(name))
                    }
                    None => String::new(),
                };
                self.progress
                    .println(&format!("warning: {at}{}", clean(&w.to_string())));
            }
            self.warnings_shown += 1;
            if let Some((file, line)) = origin {
                self.reasons
                    .add(Category::Warning, reasons::warning(w), file, line);
            }
        }
        let (mut settled, mut unsent, mut unknown) = (Vec::new(), Vec::new(), Vec::new());
        let journaled = self.journal.is_some();
        for r in &report.records {
            if journaled {
                match &r.outcome {
                    RecordOutcome::NotDelivered(
                        DeliveryError::Stopped | DeliveryError::Abandoned,
                    ) if r.maybe_applied => unknown.push(r.index),
                    RecordOutcome::NotDelivered(DeliveryError::Stopped) => unsent.push(r.index),
                    _ => settled.push(r.index),
                }
            }
            let doubted = !self.in_doubt.is_empty() && self.in_doubt.remove(&r.index);
            match &r.outcome {
                RecordOutcome::Accepted if doubted => {
                    self.progress.accepted += 1;
                    self.counts.uncertain_after_crash += 1;
                    self.settle(
                        r.index,
                        report.batch.record(r.position),
                        "uncertain_resend",
                        "accepted, but resent after a crash left its first send in doubt: an $add/$append may have been applied twice",
                        Category::Uncertain,
                        "resent after a crash left its first send in doubt".to_owned(),
                    );
                }
                RecordOutcome::Accepted if r.is_uncertain() => {
                    self.progress.accepted += 1;
                    let reason = format!(
                        "accepted, but after {} resend(s) of an update that is not idempotent ($add/$append) following a failure that may have applied it: it may have been applied up to {} times",
                        r.uncertain_resends,
                        r.uncertain_resends + 1
                    );
                    self.settle(
                        r.index,
                        report.batch.record(r.position),
                        "uncertain_resend",
                        &reason,
                        Category::Uncertain,
                        "$add/$append resent after a failure that may have applied it".to_owned(),
                    );
                }
                RecordOutcome::Accepted => {
                    self.pending.remove(r.index);
                    self.progress.accepted += 1;
                }
                RecordOutcome::Rejected { field, message } => {
                    let reason = match field {
                        Some(f) => format!("rejected by Mixpanel: {message} (field {f})"),
                        None => format!("rejected by Mixpanel: {message}"),
                    };
                    let short = reasons::rejected(field.as_deref(), message);
                    self.settle(
                        r.index,
                        report.batch.record(r.position),
                        "rejected",
                        &reason,
                        Category::Rejected,
                        short,
                    );
                }
                RecordOutcome::NotDelivered(e) => {
                    let caveat = if r.maybe_applied {
                        " (an attempt may have been applied: sending it again may apply it twice)"
                    } else {
                        ""
                    };
                    let short = reasons::not_delivered(e, r.maybe_applied, &self.server);
                    self.settle(
                        r.index,
                        report.batch.record(r.position),
                        "not_delivered",
                        &format!("not delivered: {e}{caveat}"),
                        Category::NotDelivered,
                        short,
                    );
                }
                _ => self.settle(
                    r.index,
                    report.batch.record(r.position),
                    "not_delivered",
                    "unknown outcome",
                    Category::NotDelivered,
                    "unknown outcome".to_owned(),
                ),
            }
        }
        if let Some(j) = self.journal.as_mut()
            && let Err(e) = j.done(&settled, &unsent, &unknown)
        {
            self.journal_failed(e);
        }
        self.flush();
    }

    fn on_throttled(&mut self, requested: Option<Duration>, pause: Duration) {
        let long = Duration::from_secs(10);
        if !self.long_wait_said && (pause >= long || requested.is_some_and(|r| r > pause)) {
            self.long_wait_said = true;
            let asked = requested.map_or_else(
                || "a pause".to_owned(),
                |r| format!("a wait of {} s", r.as_secs()),
            );
            self.progress.println(&format!(
                "note: the server is throttling (429) and asked for {asked}; sending pauses for {} s (--max-retry-after caps it)",
                pause.as_secs_f64().round()
            ));
        }
    }
}

/// What the ledger read next.
enum Read {
    /// An update to push, with its index.
    Update(u64, Update),
    /// A line given to the importer as text, pushed and accounted for.
    Taken,
    /// Nothing more.
    End,
}

impl Ledger {
    /// Reads up to the next update, accounting for what comes before it. Given an
    /// importer, lines of update JSON go to it as text ([`Importer::push_json`]): read
    /// from the reader's buffer straight into a request body. Not on resume, which must
    /// see each update's operation before it is pushed.
    fn read(&mut self, mut importer: Option<&mut Importer>) -> Read {
        loop {
            if self.interrupted() {
                return Read::End;
            }
            let record = match importer.as_deref_mut() {
                Some(importer) if self.resume.is_none() => {
                    let Ledger {
                        reader,
                        pending,
                        next_index,
                        counts,
                        refused,
                        ..
                    } = self;
                    let mut take = |file: usize, line: u64, text: &[u8]| {
                        let index = *next_index;
                        let pushed = importer.push_json(index, text);
                        if pushed == JsonPush::NotTaken {
                            return false;
                        }
                        *next_index += 1;
                        counts.read += 1;
                        pending.insert(
                            index,
                            Pending {
                                file,
                                line,
                                original: None,
                            },
                        );
                        if pushed == JsonPush::Refused {
                            // Its refusal is reported as the importer hands over events.
                            refused.push((index, Bytes::copy_from_slice(text)));
                        }
                        true
                    };
                    reader.next_record(Some(&mut take))
                }
                _ => self.reader.next_record(None),
            };
            let Some(record) = record else {
                return Read::End;
            };
            match record.item {
                Item::Taken => {
                    let read = self.counts.read;
                    self.progress.tick(read);
                    return Read::Taken;
                }
                Item::Blank => self.counts.blank += 1,
                Item::Bad { original, reason } => {
                    self.counts.read += 1;
                    self.counts.bad_input += 1;
                    self.reasons.add(
                        Category::Invalid,
                        reasons::unreadable(&reason),
                        record.file,
                        record.line,
                    );
                    self.fail(record.file, record.line, &original, "invalid", &reason);
                }
                Item::Update(update, original) => {
                    self.counts.read += 1;
                    let index = self.next_index;
                    self.next_index += 1;
                    if let Some(resume) = &self.resume {
                        match resume.journal.status(index) {
                            Status::Settled => {
                                self.counts.skipped_settled += 1;
                                continue;
                            }
                            Status::Unknown if !update.is_idempotent() => {
                                if resume.at_most_once {
                                    self.counts.withheld += 1;
                                    self.reasons.add(
                                        Category::NotDelivered,
                                        "withheld (--at-most-once): may have been applied before the crash".to_owned(),
                                        record.file,
                                        record.line,
                                    );
                                    let text = original.as_ref().or(update.json_text());
                                    self.fail(
                                        record.file,
                                        record.line,
                                        std::str::from_utf8(text.map_or(&[][..], |t| t))
                                            .unwrap_or_default(),
                                        "maybe_applied_before_crash",
                                        "withheld (--at-most-once): a send before the crash may have applied this $add/$append; check the profile before sending it again",
                                    );
                                    continue;
                                }
                                self.counts.resent_in_doubt += 1;
                                self.in_doubt.insert(index);
                            }
                            Status::Unknown | Status::Unsent => {}
                        }
                    }
                    // An update holding its text is not copied (nor kept: a share would
                    // keep the reader's whole arena chunk alive while it waits): its text
                    // is read back from its batch, or handed back if refused.
                    self.pending.insert(
                        index,
                        Pending {
                            file: record.file,
                            line: record.line,
                            original,
                        },
                    );
                    let read = self.counts.read;
                    self.progress.tick(read);
                    return Read::Update(index, update);
                }
            }
        }
    }
}

impl Feed for Ledger {
    type Item = (u64, Update);

    fn next_item(&mut self) -> Next<(u64, Update)> {
        match self.read(None) {
            Read::Update(index, update) => Next::Item((index, update)),
            Read::Taken => unreachable!("nothing is taken without an importer"),
            Read::End => Next::End,
        }
    }

    fn push_next(&mut self, importer: &mut Importer) -> Next<()> {
        match self.read(Some(importer)) {
            Read::Update(index, update) => {
                if let Some((index, update)) = importer.push_item((index, update)) {
                    self.on_refused(index, &update);
                }
                Next::Item(())
            }
            Read::Taken => Next::Item(()),
            Read::End => Next::End,
        }
    }

    fn on_refused(&mut self, index: u64, update: &Update) {
        // Only for a record whose text is kept nowhere else: taken from here when its
        // refusal is reported, as the importer hands over its events.
        let kept_elsewhere = self.pending.get(index).is_none_or(|p| p.original);
        if !kept_elsewhere && let Some(text) = update.json_text() {
            self.refused.push((index, text.clone()));
        }
    }

    fn on_event(&mut self, event: ImportEvent) {
        match event {
            ImportEvent::Invalid(e) => {
                let reason = e.to_string();
                let short = reasons::invalid(&e);
                self.settle(e.index, None, "invalid", &reason, Category::Invalid, short);
            }
            ImportEvent::Attempt(a) => self.on_attempt(&a),
            ImportEvent::Sending(s) => self.on_sending(&s),
            ImportEvent::Delivered(report) => self.on_delivered(report),
            ImportEvent::Throttled { requested, pause } => self.on_throttled(requested, pause),
            _ => {}
        }
        if self.interrupted() && !self.progress.stopping {
            self.progress.stopping = true;
        }
        let read = self.counts.read;
        self.progress.tick(read);
    }

    fn stop_requested(&mut self, _now: std::time::Instant) -> bool {
        let stop = self.interrupted();
        if stop && !self.progress.stopping {
            self.progress.stopping = true;
            if !self.progress.quiet {
                self.progress.println(
                    "stopping: nothing more is read or sent; requests in flight may finish (Ctrl-C again aborts at once)",
                );
            }
        }
        stop
    }

    fn check_every(&self) -> Option<Duration> {
        Some(Duration::from_millis(200))
    }
}

/// `-v`: one line per request, what it carried and what came of it; never the token or a
/// record's properties (the line is cleaned on its way out besides).
fn log_attempt(a: &engage_core::delivery::Attempt) {
    if !tracing::enabled!(target: "engage::request", tracing::Level::INFO) {
        return;
    }
    let answer = match &a.result {
        Ok(status) => format!("HTTP {status}"),
        Err(e) => format!("{} error: {}", e.kind(), e.message()),
    };
    let next = match a.decision {
        Decision::Settled => "settled".to_owned(),
        Decision::Retry { after, throttled } => format!(
            "retry in {:.1} s{}",
            after.as_secs_f64(),
            if throttled {
                " (429: the project is throttled)"
            } else {
                ""
            }
        ),
        Decision::NextPart => "next part of the split batch".to_owned(),
        Decision::Stop => "stop: this will not heal".to_owned(),
        _ => "other".to_owned(),
    };
    tracing::info!(
        target: "engage::request",
        "POST {} records={} bytes={} attempt={} -> {answer} in {} ms; {next}",
        a.endpoint.path(),
        a.records,
        a.bytes,
        a.attempt,
        a.latency.as_millis(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at_line(line: u64) -> Pending {
        Pending {
            file: 0,
            line,
            original: None,
        }
    }

    #[test]
    fn pending_records_are_found_and_removed_in_any_order() {
        let mut p = PendingRecords::default();
        // Index gaps, as records skipped on resume leave.
        for i in [0, 1, 2, 5, 6, 9] {
            p.insert(i, at_line(i + 100));
        }
        assert_eq!(p.get(5).map(|r| r.line), Some(105));
        assert!(p.get(3).is_none() && p.get(10).is_none());
        assert_eq!(p.remove(6).map(|r| r.line), Some(106));
        assert!(p.remove(6).is_none(), "removed once");
        assert_eq!(p.remove(0).map(|r| r.line), Some(100));
        assert_eq!(p.get(1).map(|r| r.line), Some(101));
        for i in [9, 2, 1, 5] {
            assert_eq!(p.remove(i).map(|r| r.line), Some(i + 100));
        }
        assert_eq!((p.live, p.slots.len()), (0, 0));
    }

    #[test]
    fn slots_behind_a_record_pending_long_are_compacted() {
        let mut p = PendingRecords::default();
        p.insert(0, at_line(1));
        for i in 1..100_000 {
            p.insert(i, at_line(i + 1));
            assert!(p.remove(i).is_some());
        }
        // Record 0 is still pending: the 99,999 settled behind it are not all kept.
        assert_eq!(p.live, 1);
        assert!(p.slots.len() <= 1025, "{} slots kept", p.slots.len());
        assert_eq!(p.get(0).map(|r| r.line), Some(1));
        assert!(p.remove(0).is_some());
        assert!(p.slots.is_empty());
    }

    /// Original texts are kept beside the slots, for the records that have one, and come
    /// back with them whatever compactions happened in between.
    #[test]
    fn original_texts_come_back_with_their_records() {
        let mut p = PendingRecords::default();
        let text = |i: u64| Bytes::from(format!("line {i}"));
        for i in 0..10_000u64 {
            let original = (i % 3 == 0).then(|| text(i));
            p.insert(
                i,
                Pending {
                    file: (i % 5) as usize,
                    line: i + 1,
                    original,
                },
            );
        }
        // Settle all but every 100th, out of order, so that compactions move the rest.
        for i in (0..10_000u64).rev().filter(|i| i % 100 != 0) {
            let r = p.remove(i).expect("pending");
            assert_eq!((r.file, r.line), ((i % 5) as usize, i + 1));
            assert_eq!(r.original, (i % 3 == 0).then(|| text(i)), "record {i}");
        }
        assert_eq!(
            p.originals.len(),
            (0..10_000).step_by(100).filter(|i| i % 3 == 0).count()
        );
        for i in (0..10_000u64).step_by(100) {
            let origin = p.get(i).expect("still pending");
            assert_eq!(
                (origin.file, origin.line, origin.original),
                ((i % 5) as usize, i + 1, i % 3 == 0)
            );
            assert_eq!(
                p.remove(i).and_then(|r| r.original),
                (i % 3 == 0).then(|| text(i))
            );
        }
        assert!(p.originals.is_empty() && p.slots.is_empty() && p.live == 0);
    }

    /// Records read with index gaps, settled by interleaved "lanes" with one lane stuck for
    /// a while (so compactions leave gaps), checked against a map after every step.
    #[test]
    fn pending_records_agree_with_a_map_under_compaction() {
        let mut p = PendingRecords::default();
        let mut model = std::collections::BTreeMap::new();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut index = 0u64;
        let lanes = 7u64;
        for round in 0..1_000u64 {
            for _ in 0..40 {
                index += 1 + next() % 3;
                p.insert(index, at_line(index));
                model.insert(index, index);
            }
            // Each lane settles its oldest records in increasing order; lane 0 is stuck
            // for the first 700 rounds.
            for lane in 0..lanes {
                if lane == 0 && round < 700 {
                    continue;
                }
                let mine: Vec<u64> = model
                    .keys()
                    .copied()
                    .filter(|i| i % lanes == lane)
                    .take(1 + (next() % 16) as usize)
                    .collect();
                for i in mine {
                    assert_eq!(p.remove(i).map(|r| r.line), model.remove(&i), "record {i}");
                }
            }
            let probe = next() % (index + 2);
            assert_eq!(
                p.get(probe).map(|r| r.line),
                model.get(&probe).copied(),
                "record {probe}"
            );
            assert_eq!(p.live, model.len());
            // Emptied slots never outnumber pending ones by much: memory follows the
            // records pending.
            assert!(
                p.slots.len() <= 2 * p.live + 1024,
                "{} slots for {} pending",
                p.slots.len(),
                p.live
            );
            if round == 699 {
                // 28,000 records read behind lane 0's first: compacted, not all kept.
                assert!(
                    p.slots.len() < 20_000,
                    "{} slots: no compaction",
                    p.slots.len()
                );
            }
        }
        assert!(p.slots.len() <= 4 * p.live.max(1024));
    }
}
