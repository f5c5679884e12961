//! `engage import`: the pipeline from files to the server, with progress, the failure file
//! and the summary.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::IsTerminal;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use engage_core::batch::Batcher;
use engage_core::delivery::RecordOutcome;
use engage_core::{
    BatchConfig, Endpoint, ImportConfig, ImportEvent, ImportSummary, Region, RetryPolicy, Target,
    Token, Update,
};
use serde_json::{Value as Json, json};

use crate::failures::FailureFile;
use crate::input::{self, CsvMapping, Item, Record};
use crate::term::{self, clean};
use crate::{ImportArgs, RegionChoice, ReportFormat, TransportChoice};

/// A record waiting for its fate: where it came from and its original text.
struct Pending {
    file: usize,
    line: u64,
    original: String,
}

/// What the pipeline shares between the reader, the event handler and the end.
struct State {
    files: Vec<String>,
    pending: HashMap<u64, Pending>,
    next_index: u64,
    read: u64,
    blank: u64,
    bad_input: u64,
    failures: Option<FailureFile>,
    last_flush: Instant,
    progress: Progress,
    warnings_shown: u64,
    /// Whether a long wait asked by the server was said already.
    long_wait_said: bool,
}

impl State {
    fn fail(&mut self, file: usize, line: u64, original: &str, kind: &str, reason: &str) {
        let Some(w) = self.failures.as_mut() else {
            return;
        };
        let name = self.files.get(file).map(String::as_str).unwrap_or_default();
        w.add(name, line, kind, &clean(reason), original);
        // Records found invalid while reading are flushed at least once a second.
        if self.last_flush.elapsed() >= Duration::from_secs(1) {
            self.flush_failures();
        }
    }

    fn flush_failures(&mut self) {
        if let Some(w) = self.failures.as_mut() {
            w.flush();
        }
        self.last_flush = Instant::now();
    }

    fn settle(&mut self, index: u64, kind: &str, reason: &str) {
        if let Some(p) = self.pending.remove(&index) {
            self.fail(p.file, p.line, &p.original, kind, reason);
        }
    }

    fn on_event(&mut self, event: ImportEvent) {
        match event {
            ImportEvent::Invalid(e) => {
                let reason = e.to_string();
                self.settle(e.index, "invalid", &reason);
            }
            ImportEvent::Sending(_) => self.progress.in_flight += 1,
            ImportEvent::Delivered(report) => {
                self.progress.batches += 1;
                self.progress.in_flight = self.progress.in_flight.saturating_sub(1);
                self.progress.retries += u64::from(report.retries);
                for w in report.batch.warnings() {
                    if self.warnings_shown < 20 && !self.progress.quiet {
                        self.progress
                            .println(&format!("warning: {}", clean(&w.to_string())));
                    }
                    self.warnings_shown += 1;
                }
                for r in &report.records {
                    match &r.outcome {
                        RecordOutcome::Accepted if r.is_uncertain() => {
                            self.progress.accepted += 1;
                            let reason = format!(
                                "accepted, but after {} resend(s) of an update that is not idempotent ($add/$append) following a failure that may have applied it: it may have been applied up to {} times",
                                r.uncertain_resends,
                                r.uncertain_resends + 1
                            );
                            self.settle(r.index, "uncertain_resend", &reason);
                        }
                        RecordOutcome::Accepted => {
                            self.pending.remove(&r.index);
                            self.progress.accepted += 1;
                        }
                        RecordOutcome::Rejected { field, message } => {
                            let reason = match field {
                                Some(f) => format!("rejected by Mixpanel: {message} (field {f})"),
                                None => format!("rejected by Mixpanel: {message}"),
                            };
                            self.settle(r.index, "rejected", &reason);
                        }
                        RecordOutcome::NotDelivered(e) => {
                            let caveat = if r.maybe_applied {
                                " (an attempt may have been applied: sending it again may apply it twice)"
                            } else {
                                ""
                            };
                            self.settle(
                                r.index,
                                "not_delivered",
                                &format!("not delivered: {e}{caveat}"),
                            );
                        }
                        _ => {
                            self.settle(r.index, "not_delivered", "unknown outcome");
                        }
                    }
                }
                self.flush_failures();
            }
            ImportEvent::Throttled { requested, pause } => {
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
            _ => {}
        }
        self.progress.tick(self.read);
    }
}

/// Progress on stderr: a bar on a terminal, plain lines with --progress elsewhere.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    plain: bool,
    quiet: bool,
    started: Instant,
    last: Instant,
    bytes: Arc<AtomicU64>,
    total_bytes: Option<u64>,
    batches: u64,
    retries: u64,
    accepted: u64,
    /// Batches being delivered (sent at least once, not settled).
    in_flight: u64,
}

impl Progress {
    fn new(
        show: bool,
        force: bool,
        quiet: bool,
        bytes: Arc<AtomicU64>,
        total_bytes: Option<u64>,
    ) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let bar = (!quiet && show && terminal).then(|| {
            let bar = match total_bytes {
                Some(t) => indicatif::ProgressBar::new(t),
                None => indicatif::ProgressBar::no_length(),
            };
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30} {binary_bytes}/{binary_total_bytes} ({binary_bytes_per_sec}) eta {eta} {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        let now = Instant::now();
        Progress {
            plain: !quiet && force && !terminal,
            bar,
            quiet,
            started: now,
            last: now,
            bytes,
            total_bytes,
            batches: 0,
            retries: 0,
            accepted: 0,
            in_flight: 0,
        }
    }

    fn tick(&mut self, records: u64) {
        self.show(records, false);
    }

    fn show(&mut self, records: u64, force: bool) {
        if self.bar.is_none() && !self.plain {
            return;
        }
        let now = Instant::now();
        if !force && now.duration_since(self.last) < Duration::from_millis(250) {
            return;
        }
        self.last = now;
        let secs = now.duration_since(self.started).as_secs_f64().max(1e-3);
        let bytes = self.bytes.load(Ordering::Relaxed);
        let msg = format!(
            "{records} records ({:.0}/s), {:.1} MB/s, {} batches, {} in flight, {} retries",
            records as f64 / secs,
            bytes as f64 / secs / 1e6,
            self.batches,
            self.in_flight,
            self.retries
        );
        if let Some(bar) = &self.bar {
            bar.set_position(bytes);
            bar.set_message(msg);
        } else {
            let eta = self
                .total_bytes
                .filter(|t| *t > 0 && bytes > 0)
                .map(|t| {
                    format!(
                        ", eta {:.0} s",
                        (t.saturating_sub(bytes)) as f64 / (bytes as f64 / secs)
                    )
                })
                .unwrap_or_default();
            term::err(format_args!("progress: {msg}{eta}"));
        }
    }

    fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => term::err(line),
        }
    }

    fn finish(&mut self, records: u64) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        } else if self.plain {
            // A last line, so even a short run shows where it ended.
            self.show(records, true);
        }
    }
}

/// Runs `engage import`; returns the exit status.
pub fn import(args: ImportArgs) -> i32 {
    match run(args) {
        Ok(code) => code,
        Err(message) => {
            term::err(format_args!("engage import: {}", clean(&message)));
            1
        }
    }
}

fn run(args: ImportArgs) -> Result<i32, String> {
    let started = Instant::now();
    let endpoint = if args.groups {
        Endpoint::Groups
    } else {
        Endpoint::Engage
    };
    let csv = match (&args.distinct_id_column, &args.group_id_column, args.groups) {
        (_, Some(col), true) => Some(CsvMapping {
            id_column: col.clone(),
            group_key: Some(
                args.group_key
                    .clone()
                    .ok_or("--groups with --group-id-column needs --group-key NAME")?,
            ),
            op: args.op,
        }),
        (Some(col), _, false) => Some(CsvMapping {
            id_column: col.clone(),
            group_key: None,
            op: args.op,
        }),
        _ => None,
    };
    let token = match (crate::token::from_args(&args)?, args.emulator) {
        (Some(t), _) => t,
        (None, true) => "emulator-token".to_owned(),
        (None, false) => {
            return Err(
                "no token: pass --token or --token-file, or set MIXPANEL_TOKEN or MIXPANEL_TOKEN_FILE (or use --emulator)"
                    .into(),
            );
        }
    };
    let token = Token::new(&token).map_err(|e| e.to_string())?;
    term::redact_token(&token);

    // Nothing opened for writing may be an input: checked before anything is.
    let failed_path = args.failed.as_deref().map(|p| ("--failed", p));
    crate::guard::outputs_spare_inputs(&args.files, failed_path.as_slice(), args.out.as_deref())?;
    // Open every input first: an unreadable one stops everything before anything is sent.
    let bytes = Arc::new(AtomicU64::new(0));
    let mut inputs = Vec::new();
    for path in &args.files {
        let input = input::open(path, args.format, bytes.clone())
            .map_err(|e| format!("cannot read {path}: {e}"))?;
        inputs.push(input);
    }
    let total_bytes = inputs.iter().map(|i| i.size).sum::<Option<u64>>();
    let files: Vec<String> = inputs.iter().map(|i| i.name.clone()).collect();
    let failures = match &args.failed {
        Some(path) => Some(
            FailureFile::create(path)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?,
        ),
        None => None,
    };
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let state = Rc::new(RefCell::new(State {
        files,
        pending: HashMap::new(),
        next_index: 0,
        read: 0,
        blank: 0,
        bad_input: 0,
        failures,
        last_flush: Instant::now(),
        progress: Progress::new(true, args.progress, args.quiet, bytes.clone(), total_bytes),
        warnings_shown: 0,
        long_wait_said: false,
    }));

    let reader_state = state.clone();
    let updates = inputs
        .into_iter()
        .enumerate()
        .flat_map(move |(i, input)| input::records(input, i, csv.as_ref()))
        .filter_map(move |record: Record| {
            let mut st = reader_state.borrow_mut();
            match record.item {
                Item::Blank => {
                    st.blank += 1;
                    None
                }
                Item::Bad { original, reason } => {
                    st.read += 1;
                    st.bad_input += 1;
                    st.fail(record.file, record.line, &original, "invalid", &reason);
                    None
                }
                Item::Update(update, original) => {
                    st.read += 1;
                    let index = st.next_index;
                    st.next_index += 1;
                    st.pending.insert(
                        index,
                        Pending {
                            file: record.file,
                            line: record.line,
                            original,
                        },
                    );
                    let read = st.read;
                    st.progress.tick(read);
                    Some((index, update))
                }
            }
        });

    let batch = BatchConfig::new(token.clone(), endpoint)
        .max_records(args.batch_size)
        .max_body_bytes(args.max_body_bytes)
        .override_token(args.override_token);

    let (summary, emulator) = if args.dry_run {
        (dry_run(batch, updates, &state, args.out.as_deref())?, None)
    } else {
        let emulator = if args.emulator {
            let e = engage_emulator::Emulator::start(
                engage_emulator::EmulatorConfig::default()
                    .token(token.expose())
                    .max_body_bytes(
                        args.max_body_bytes
                            .max(engage_core::batch::DEFAULT_MAX_BODY_BYTES),
                    ),
            )
            .map_err(|e| format!("cannot start the emulator: {e}"))?;
            Some(e)
        } else {
            None
        };
        let target = match (&args.endpoint, &emulator) {
            (Some(url), _) => Target::base_url(url).map_err(|e| e.to_string())?,
            (None, Some(e)) => Target::base_url(&e.base_url()).map_err(|e| e.to_string())?,
            (None, None) => Target::region(match args.region {
                RegionChoice::Us => Region::Us,
                RegionChoice::Eu => Region::Eu,
                RegionChoice::In => Region::India,
            }),
        }
        .strict(!args.no_strict)
        .geolocate(args.geolocate);
        let policy = RetryPolicy::default()
            .max_attempts(args.max_retries.saturating_add(1))
            .backoff(
                Duration::from_millis(args.backoff_base_ms),
                Duration::from_millis(args.backoff_max_ms),
            )
            .max_retry_after(Duration::from_secs(args.max_retry_after))
            .at_most_once(args.at_most_once);
        let config =
            ImportConfig::new(batch, target)
                .policy(policy)
                .concurrency(match args.concurrency {
                    crate::ConcurrencyArg::Auto => engage_core::delivery::Concurrency::default(),
                    crate::ConcurrencyArg::Fixed(n) => engage_core::delivery::Concurrency::Fixed(n),
                });
        let timeout = Duration::from_secs_f64(args.timeout);
        let events = state.clone();
        let on_event = move |e: ImportEvent| events.borrow_mut().on_event(e);
        let summary = match args.transport {
            TransportChoice::Hyper => {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .map_err(|e| format!("cannot start tokio: {e}"))?;
                let transport = engage_hyper::HyperTransport::builder()
                    .request_timeout(timeout)
                    .connect_timeout(timeout.min(Duration::from_secs(10)))
                    .build()
                    .map_err(|e| e.to_string())?;
                runtime.block_on(transport.import(config, updates, on_event))
            }
            TransportChoice::Curl => engage_curl::CurlTransport::builder()
                .request_timeout(timeout)
                .connect_timeout(timeout.min(Duration::from_secs(10)))
                .build()
                .import(config, updates, on_event),
            TransportChoice::AsyncStd => {
                let transport =
                    engage_async_std::AsyncStdTransport::<engage_async_std::AsyncStd>::builder()
                        .request_timeout(timeout)
                        .connect_timeout(timeout.min(Duration::from_secs(10)))
                        .build(engage_async_std::AsyncStd)
                        .map_err(|e| e.to_string())?;
                async_std::task::block_on(transport.import(config, updates, on_event))
            }
        };
        (summary, emulator)
    };

    let mut st = state.borrow_mut();
    let read = st.read;
    st.progress.finish(read);
    st.flush_failures();
    // Every condition that makes the exit status non-zero is named in the report.
    let mut errors: Vec<String> = Vec::new();
    if let Some(e) = st.failures.as_ref().and_then(FailureFile::error) {
        errors.push(format!(
            "could not write the failure file (it holds whole entries up to the error): {e}"
        ));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let invalid = summary.invalid + st.bad_input;
    let records = st.read;
    let fatal = summary.fatal.as_ref().map(|f| clean(&f.to_string()));
    let report = json!({
        "records": records,
        "accepted": summary.accepted,
        "rejected": summary.rejected,
        "invalid": invalid,
        "not_delivered": summary.not_delivered,
        "not_delivered_maybe_applied": summary.maybe_applied,
        "requests": summary.requests,
        "retries": summary.retries,
        "uncertain": summary.uncertain,
        "elapsed_s": (elapsed * 1000.0).round() / 1000.0,
        "batches": summary.batches,
        "blank_lines": st.blank,
        "warnings": summary.warnings,
        "dry_run": args.dry_run,
        "fatal": fatal,
        "errors": errors,
        "throttled": summary.throttled,
        "peak_in_flight": summary.peak_in_flight,
        "mean_in_flight": (summary.in_flight_seconds / elapsed.max(1e-3) * 10.0).round() / 10.0,
        "concurrency_at_end": summary.limit,
        "mb_sent": (summary.bytes_sent as f64 / 1e4).round() / 100.0,
        "mb_per_s": (summary.bytes_sent as f64 / 1e6 / elapsed.max(1e-3) * 100.0).round() / 100.0,
    });
    match args.report {
        ReportFormat::Json => term::out(&report),
        ReportFormat::Text if !args.quiet => {
            let rate = records as f64 / elapsed.max(1e-3);
            let verb = if args.dry_run {
                "would send"
            } else {
                "accepted"
            };
            let line = |label: &str, value: &dyn std::fmt::Display| {
                term::out(format_args!("{label:<21}{value}"))
            };
            line("records read", &records);
            line(verb, &summary.accepted);
            line("rejected by Mixpanel", &summary.rejected);
            line("invalid (not sent)", &invalid);
            line("not delivered", &summary.not_delivered);
            line(
                "requests",
                &format_args!("{} ({} batches)", summary.requests, summary.batches),
            );
            line("retries", &summary.retries);
            if !args.dry_run {
                line(
                    "in flight",
                    &format_args!(
                        "peak {}, mean {:.1}",
                        summary.peak_in_flight,
                        summary.in_flight_seconds / elapsed.max(1e-3)
                    ),
                );
                line(
                    "sent",
                    &format_args!(
                        "{:.1} MB ({:.1} MB/s)",
                        summary.bytes_sent as f64 / 1e6,
                        summary.bytes_sent as f64 / 1e6 / elapsed.max(1e-3)
                    ),
                );
                line("throttled (429)", &summary.throttled);
            }
            line("uncertain resends", &summary.uncertain);
            if st.blank > 0 {
                line("blank lines skipped", &st.blank);
            }
            if summary.warnings > 0 {
                line("truncation warnings", &summary.warnings);
            }
            line(
                "elapsed",
                &format_args!("{elapsed:.2} s ({rate:.0} records/s)"),
            );
            if let Some(f) = &fatal {
                line("stopped", f);
            }
        }
        ReportFormat::Text => {}
    }
    if let Some(e) = &emulator
        && args.report == ReportFormat::Text
        && !args.quiet
    {
        let profiles = e.profiles();
        let groups = e.groups();
        term::out(format_args!(
            "{:<21}{} user profiles, {} group profiles",
            "emulator holds",
            profiles.len(),
            groups.values().map(|g| g.len()).sum::<usize>()
        ));
        if let Some((id, p)) = profiles.iter().next() {
            term::out(format_args!(
                "{:<21}{}: {}",
                "sample profile",
                clean(id),
                clean(&Json::Object(p.clone()).to_string())
            ));
        } else if let Some((key, g)) = groups.iter().next()
            && let Some((id, p)) = g.iter().next()
        {
            term::out(format_args!(
                "{:<21}{}/{}: {}",
                "sample group",
                clean(key),
                clean(id),
                clean(&Json::Object(p.clone()).to_string())
            ));
        }
    }
    for e in &errors {
        term::err(format_args!("engage import: {e}"));
    }
    if !errors.is_empty() || summary.fatal.is_some() {
        return Ok(1);
    }
    let clean_run = summary.accepted == records
        && records == summary.records + st.bad_input
        && summary.uncertain == 0;
    Ok(if clean_run { 0 } else { 2 })
}

/// Validates and batches without sending; writes the bodies if asked.
fn dry_run(
    config: BatchConfig,
    updates: impl Iterator<Item = (u64, Update)>,
    state: &Rc<RefCell<State>>,
    out: Option<&std::path::Path>,
) -> Result<ImportSummary, String> {
    let mut batcher = Batcher::new(config);
    let mut summary = ImportSummary::default();
    let mut n = 0u64;
    let mut write =
        |batch: engage_core::batch::Batch, summary: &mut ImportSummary| -> Result<(), String> {
            n += 1;
            summary.batches += 1;
            summary.accepted += batch.len() as u64;
            summary.warnings += batch.warnings().len() as u64;
            let mut st = state.borrow_mut();
            for r in batch.records() {
                st.pending.remove(&r.index());
            }
            st.flush_failures();
            if let Some(dir) = out {
                let path = dir.join(format!("batch-{n:06}.json"));
                crate::failures::create_private(&path)
                    .and_then(|mut f| std::io::Write::write_all(&mut f, batch.body()))
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            }
            Ok(())
        };
    for (index, update) in updates {
        summary.records += 1;
        match batcher.push_at(index, &update) {
            Ok(None) => {}
            Ok(Some(batch)) => write(batch, &mut summary)?,
            Err(e) => {
                summary.invalid += 1;
                state.borrow_mut().on_event(ImportEvent::Invalid(e));
            }
        }
    }
    if let Some(batch) = batcher.finish() {
        write(batch, &mut summary)?;
    }
    Ok(summary)
}
