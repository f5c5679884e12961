//! `engage import`: opening the inputs and outputs, running the import with its ledger
//! (one owner of the account: what was read, what became of it), and the summary.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use engage_core::bytes::Bytes;
use engage_core::delivery::{Concurrency, ImportSummary, Proxy};
use engage_core::exchange::Region;
use engage_core::http;
use engage_core::model::Endpoint;
use engage_core::{BatchConfig, ImportConfig, RetryPolicy, Target, Token};

/// Request bodies an import holds closed and waiting (besides those in flight: up to the
/// concurrency limit's, 64, of about 250 KB each). Each record held also keeps its text for
/// the failure file and its place in the ledger, about 300 bytes in all: 8 MiB keeps a
/// long import under 100 MiB of memory and is still more than the requests in flight.
const IMPORT_BUFFER_BYTES: usize = 8 * 1024 * 1024;
/// The same for a dry run, whose answers come at once.
const DRY_RUN_BUFFER_BYTES: usize = 4 * 1024 * 1024;
use serde_json::{Value as Json, json};

use crate::failures::FailureFile;
use crate::input::{self, Format, Shape};
use crate::journal::{self, Journal};
use crate::ledger::{Ledger, Resuming};
use crate::progress::Progress;
use crate::term::{self, clean};
use crate::{ConcurrencyArg, ImportArgs, RegionChoice, ReportFormat, TransportChoice};

/// Runs `engage import`; returns the exit status.
pub fn import(args: ImportArgs) -> i32 {
    start("engage import", args, None)
}

/// `engage delete`: every record names a profile to delete (`$ignore_alias` on users
/// unless `follow_aliases`), after a confirmation on a terminal unless `yes`.
pub fn delete(args: ImportArgs, yes: bool, follow_aliases: bool) -> i32 {
    if !args.dry_run
        && !yes
        && let Err(message) = confirm_delete(&args)
    {
        term::err(format_args!("engage delete: {}", clean(&message)));
        return 1;
    }
    start("engage delete", args, Some(!follow_aliases))
}

/// Asks on the terminal before deleting; refuses without one.
fn confirm_delete(args: &ImportArgs) -> Result<(), String> {
    use std::io::{BufRead as _, IsTerminal as _, Write as _};
    if !std::io::stdin().is_terminal() || args.files.iter().any(|f| f == "-") {
        return Err(
            "deleting needs a confirmation: run it on a terminal, or pass --yes (or --dry-run to look first)"
                .into(),
        );
    }
    let what = if args.groups {
        "group profiles"
    } else {
        "user profiles"
    };
    let target = match (&args.endpoint, args.emulator) {
        (Some(url), _) => engage_core::text::hide_userinfo(url).into_owned(),
        (None, true) => "the embedded emulator".to_owned(),
        (None, false) => format!("Mixpanel ({:?} region)", args.region),
    };
    eprint!(
        "This deletes the {what} named in {} from {target}, for good. Type \"delete\" to go on: ",
        args.files.join(", ")
    );
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| format!("cannot read the answer: {e}"))?;
    if answer.trim() == "delete" {
        Ok(())
    } else {
        Err("not confirmed: nothing was deleted".into())
    }
}

fn start(name: &str, args: ImportArgs, delete: Option<bool>) -> i32 {
    if let Err(e) = engage_emulator::logs::init(args.verbose, term::CleanStderr::default) {
        term::err(format_args!("{name}: note: {}; no logs", clean(&e)));
    }
    match run(args, delete) {
        Ok(code) => code,
        Err(message) => {
            term::err(format_args!("{name}: {}", clean(&message)));
            1
        }
    }
}

/// Which signal interrupted the import, if one did: the first SIGINT or SIGTERM stops it
/// cleanly; a second one exits at once (the journal is on disk before every send).
struct Signals {
    interrupt: Arc<AtomicBool>,
    by_term: Arc<AtomicBool>,
}

impl Signals {
    fn register() -> Result<Signals, String> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let interrupt = Arc::new(AtomicBool::new(false));
        let by_term = Arc::new(AtomicBool::new(false));
        let register = || -> std::io::Result<()> {
            // Order matters: the exit is armed first, so it fires only on a second signal.
            signal_hook::flag::register_conditional_shutdown(SIGINT, 130, interrupt.clone())?;
            signal_hook::flag::register_conditional_shutdown(SIGTERM, 143, interrupt.clone())?;
            signal_hook::flag::register(SIGINT, interrupt.clone())?;
            signal_hook::flag::register(SIGTERM, interrupt.clone())?;
            signal_hook::flag::register(SIGTERM, by_term.clone())?;
            Ok(())
        };
        register().map_err(|e| format!("cannot handle signals: {e}"))?;
        Ok(Signals { interrupt, by_term })
    }

    /// The exit status of an interrupted import: 128 + the signal.
    fn status(&self) -> i32 {
        if self.by_term.load(Ordering::Relaxed) {
            143
        } else {
            130
        }
    }
}

/// The options that decide how records are numbered and where they go: a journal only
/// resumes under the same ones.
fn journal_options(args: &ImportArgs, shape: &Shape, token: &Token) -> String {
    format!(
        "format={:?};shape={:?};max_records={:?};token={:08x}",
        args.format,
        shape,
        args.max_records,
        crc32fast::hash(token.expose().as_bytes())
    )
}

/// How flat records become updates, from the flags.
pub fn shape_of(args: &ImportArgs, delete: Option<bool>) -> Result<Shape, String> {
    if args.groups && args.id_field.is_some() {
        return Err("--id-field names a user's id; with --groups use --group-id-field".into());
    }
    if !args.groups && (args.group_key.is_some() || args.group_id_field.is_some()) {
        return Err("--group-key and --group-id-field need --groups".into());
    }
    Ok(Shape {
        groups: args.groups,
        id_field: args.id_field.clone(),
        group_key: args.group_key.clone(),
        group_id_field: args.group_id_field.clone(),
        op: args.op,
        renames: args.rename.clone(),
        drops: args.drop.iter().cloned().collect(),
        tags: args
            .tag
            .iter()
            .map(|(k, v)| (k.clone(), input::shape::typed_cell(v)))
            .collect(),
        remove_nulls: args.remove_nulls,
        reserved_names: args.reserved_names,
        delete,
    })
}

fn journal_path(args: &ImportArgs) -> Option<PathBuf> {
    match (&args.journal, &args.resume) {
        (_, Some(resume)) => Some(resume.clone()),
        (Some(p), None) if p.as_os_str() == "auto" => {
            let first = args.files.first()?;
            Some(PathBuf::from(format!("{first}.engage-journal")))
        }
        (Some(p), None) => Some(p.clone()),
        (None, None) => None,
    }
}

fn run(args: ImportArgs, delete: Option<bool>) -> Result<i32, String> {
    let started = Instant::now();
    let endpoint = if args.groups {
        Endpoint::Groups
    } else {
        Endpoint::Engage
    };
    let shape = Arc::new(shape_of(&args, delete)?);
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
    // An unusable proxy setting stops everything before anything is opened or sent.
    let proxy = match (&args.proxy, args.no_proxy) {
        (Some(url), _) => Proxy::url(url.clone()),
        (None, true) => Proxy::Direct,
        (None, false) => Proxy::FromEnvironment,
    };
    if !args.dry_run {
        engage_proxy::Proxies::new(&proxy).map_err(|e| term::clean(&e.to_string()))?;
    }
    let journal_file = journal_path(&args);
    if journal_file.is_some() && args.dry_run {
        return Err("a journal has no use with --dry-run: nothing is sent".into());
    }

    // Nothing opened for writing may be an input: checked before anything is.
    let mut outputs: Vec<(&str, &Path)> = Vec::new();
    if let Some(p) = args.failed.as_deref() {
        outputs.push(("--failed", p));
    }
    if let Some(p) = journal_file.as_deref() {
        outputs.push(("the journal", p));
    }
    crate::guard::outputs_spare_inputs(&args.files, &outputs, args.out.as_deref())?;
    // Open every input first: an unreadable one stops everything before anything is sent.
    let bytes = Arc::new(AtomicU64::new(0));
    let mut inputs = Vec::new();
    for path in &args.files {
        let unknown =
            if delete.is_some() && args.id_field.is_none() && args.group_id_field.is_none() {
                Format::Ids
            } else {
                Format::Ndjson
            };
        let input = input::open(path, args.format, unknown, bytes.clone())
            .map_err(|e| format!("cannot read {path}: {e}"))?;
        inputs.push(input);
    }
    let total_bytes = inputs.iter().map(|i| i.size).sum::<Option<u64>>();
    let files: Vec<String> = inputs.iter().map(|i| i.name.clone()).collect();
    // The journal, before anything else is written or sent.
    let journal = match &journal_file {
        None => None,
        Some(path) => {
            let id = journal::identity(&args.files, &journal_options(&args, &shape, &token))?;
            Some(if args.resume.is_some() {
                let (j, resume) = Journal::resume(path, &id)?;
                if resume.torn && !args.quiet {
                    term::err(
                        "note: the journal ended in a torn entry (a crash while writing it); it is read up to the last whole one",
                    );
                }
                (j, Some(resume))
            } else {
                (Journal::create(path, &id)?, None)
            })
        }
    };
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
    let signals = Signals::register()?;
    // NDJSON lines of updates go from the reader's buffer straight into request bodies,
    // here: a dry run of 500k realistic updates so took x0.78 the CPU of reading them into
    // updates on a second core (wall x1.4: 0.18 s against 0.13 s). Other inputs (CSV,
    // Parquet, JSON arrays, flat records, ids to delete) are parsed into updates, which a
    // dry run does on a second core (wall x0.69, CPU x1.1): checking a file is bound by
    // this process alone. An import is bound by the server and the network; there the
    // thread cost CPU and gained no time, so it always reads here. Standard input is always
    // read here: a record may be all a slow producer has written for a while, and must not
    // wait for a chunk to fill.
    let as_text = shape.delete.is_none() && inputs.iter().all(|i| i.format() == Format::Ndjson);
    let read_ahead = args.dry_run && !as_text && !args.files.iter().any(|f| f == "-");
    let reader = input::Reader::new(inputs, shape, args.max_records);
    let reader: Box<dyn input::Records> = if read_ahead {
        Box::new(
            input::ReadAhead::spawn(reader)
                .map_err(|e| format!("cannot start reading the input: {e}"))?,
        )
    } else {
        Box::new(reader)
    };
    // Log lines and a redrawn bar do not mix: with -v, progress goes by lines.
    let progress = Progress::new(
        args.verbose == 0,
        args.progress,
        args.quiet,
        bytes.clone(),
        total_bytes,
    );
    let server = match (&args.endpoint, args.emulator, args.dry_run) {
        (_, _, true) => "the dry run".to_owned(),
        (Some(url), _, _) => url
            .parse::<http::Uri>()
            .ok()
            .and_then(|u| {
                u.authority().map(|a| {
                    a.host().to_owned() + &a.port().map(|p| format!(":{p}")).unwrap_or_default()
                })
            })
            .unwrap_or_else(|| engage_core::text::hide_userinfo(url).into_owned()),
        (None, true, _) => "the emulator".to_owned(),
        (None, false, _) => match args.region {
            RegionChoice::Us => "api.mixpanel.com".to_owned(),
            RegionChoice::Eu => "api-eu.mixpanel.com".to_owned(),
            RegionChoice::In => "api-in.mixpanel.com".to_owned(),
        },
    };
    let mut ledger =
        Ledger::new(reader, files, failures, progress, signals.interrupt.clone()).server(server);
    if let Some((journal, resume)) = journal {
        ledger = ledger.with_journal(
            journal,
            resume.map(|journal| Resuming {
                journal,
                at_most_once: args.at_most_once,
            }),
        );
    }

    let batch = BatchConfig::new(token.clone(), endpoint)
        .max_records(args.batch_size)
        .max_body_bytes(args.max_body_bytes)
        .override_token(args.override_token);
    let policy = RetryPolicy::default()
        .max_attempts(args.max_retries.saturating_add(1))
        .backoff(
            Duration::from_millis(args.backoff_base_ms),
            Duration::from_millis(args.backoff_max_ms),
        )
        .max_retry_after(Duration::from_secs(args.max_retry_after))
        .at_most_once(args.at_most_once);
    let concurrency = match args.concurrency {
        ConcurrencyArg::Auto => Concurrency::default(),
        ConcurrencyArg::Fixed(n) => Concurrency::Fixed(n),
    };

    let (summary, emulator) = if args.dry_run {
        // The same pipeline, answered here, on this thread: one request at a time, so
        // bodies are written in order, and no hand-off to a sending thread per body
        // (futex wake-ups and context switches were 5% of a dry run's CPU).
        let config = ImportConfig::new(
            batch,
            Target::base_url("http://dry-run.invalid").map_err(|e| e.to_string())?,
        )
        .concurrency(Concurrency::Fixed(1))
        // Nothing to gain from reading far ahead of answers given here at once; a
        // buffer of two bodies' worth keeps a dry run's memory flat.
        .buffer_bytes(DRY_RUN_BUFFER_BYTES)
        .policy(policy);
        let out = args.out.clone();
        let mut written = 0u64;
        let mut failed_write: Option<String> = None;
        let summary = engage_core::driver::run_inline(config, &mut ledger, |request| {
            if let Some(dir) = &out {
                written += 1;
                let path = dir.join(format!("batch-{written:06}.json"));
                let wrote = crate::failures::create_private(&path)
                    .and_then(|mut f| std::io::Write::write_all(&mut f, request.body()));
                if let Err(e) = wrote {
                    failed_write.get_or_insert(format!("cannot write {}: {e}", path.display()));
                }
            }
            Ok(http::Response::new(Bytes::from_static(b"1")))
        });
        if let Some(e) = failed_write {
            ledger.errors.push(e);
        }
        (summary, None)
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
        let config = ImportConfig::new(batch, target)
            .policy(policy)
            .concurrency(concurrency)
            .buffer_bytes(IMPORT_BUFFER_BYTES)
            .stop_grace(Duration::from_secs(5));
        let timeout = Duration::from_secs_f64(args.timeout);
        let options = engage_core::delivery::TransportOptions::default()
            .request_timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .proxy(proxy);
        let summary = match args.transport {
            TransportChoice::Hyper => {
                // One thread: the importer and the connections it drives take turns on
                // it. Requests go out and answers are read when the importer waits, on
                // any runtime (the driver polls them then), so worker threads only added
                // wake-ups between threads: CPU x0.89 on loopback, the same wall time
                // over a simulated 300 ms round trip (benches/wan.py B).
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("cannot start tokio: {e}"))?;
                let transport = engage_hyper::HyperTransport::with_options(options)
                    .map_err(|e| e.to_string())?;
                runtime.block_on(transport.run(config, &mut ledger))
            }
            TransportChoice::Curl => engage_curl::CurlTransport::with_options(options)
                .map_err(|e| term::clean(&e.to_string()))?
                .run(config, &mut ledger),
            TransportChoice::AsyncStd => {
                let transport = engage_async_std::AsyncStdTransport::with_options(
                    engage_async_std::AsyncStd,
                    options,
                )
                .map_err(|e| e.to_string())?;
                async_std::task::block_on(transport.run(config, &mut ledger))
            }
        };
        (summary, emulator)
    };
    report(
        &args,
        started,
        &summary,
        &mut ledger,
        emulator.as_ref(),
        &signals,
    )
}

/// Prints the summary (text or JSON) and returns the exit status.
fn report(
    args: &ImportArgs,
    started: Instant,
    summary: &ImportSummary,
    ledger: &mut Ledger,
    emulator: Option<&engage_emulator::Emulator>,
    signals: &Signals,
) -> Result<i32, String> {
    let read = ledger.counts.read;
    ledger.progress.finish(read);
    ledger.flush();
    let interrupted = ledger.interrupted() && ledger.errors.is_empty();
    // Every condition that makes the exit status non-zero is named in the report.
    let mut errors = std::mem::take(&mut ledger.errors);
    if let Some(e) = ledger.failure_file_error() {
        errors.push(format!(
            "could not write the failure file (it holds whole entries up to the error): {e}"
        ));
    }
    let c = &ledger.counts;
    let elapsed = started.elapsed().as_secs_f64();
    let invalid = summary.invalid + c.bad_input;
    let records = c.read;
    let not_delivered = summary.not_delivered + c.withheld;
    let uncertain = summary.uncertain + c.uncertain_after_crash;
    let fatal = summary.fatal.as_ref().map(|f| clean(&f.to_string()));
    let report = json!({
        "records": records,
        "accepted": summary.accepted,
        "rejected": summary.rejected,
        "invalid": invalid,
        "not_delivered": not_delivered,
        "not_delivered_maybe_applied": summary.maybe_applied + c.withheld,
        "requests": summary.requests,
        "retries": summary.retries,
        "uncertain": uncertain,
        "elapsed_s": (elapsed * 1000.0).round() / 1000.0,
        "batches": summary.batches,
        "blank_lines": c.blank,
        "warnings": summary.warnings,
        "dry_run": args.dry_run,
        "fatal": fatal,
        "errors": errors,
        "interrupted": interrupted,
        "skipped_already_settled": c.skipped_settled,
        "resent_after_crash_in_doubt": c.resent_in_doubt,
        "withheld_maybe_applied_before_crash": c.withheld,
        "throttled": summary.throttled,
        "peak_in_flight": summary.peak_in_flight,
        "mean_in_flight": (summary.in_flight_seconds / elapsed.max(1e-3) * 10.0).round() / 10.0,
        "concurrency_at_end": summary.limit,
        "mb_sent": (summary.bytes_sent as f64 / 1e4).round() / 100.0,
        "mb_per_s": (summary.bytes_sent as f64 / 1e6 / elapsed.max(1e-3) * 100.0).round() / 100.0,
        "reasons": ledger.reasons.to_json(ledger.files()),
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
            if c.skipped_settled > 0 {
                line(
                    "already settled",
                    &format_args!("{} (skipped: the journal says so)", c.skipped_settled),
                );
            }
            line(verb, &summary.accepted);
            line("rejected by Mixpanel", &summary.rejected);
            line("invalid (not sent)", &invalid);
            line("not delivered", &not_delivered);
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
            line("uncertain resends", &uncertain);
            if c.withheld > 0 {
                line(
                    "withheld",
                    &format_args!(
                        "{} $add/$append that may have been applied before the crash (--at-most-once)",
                        c.withheld
                    ),
                );
            }
            if c.blank > 0 {
                line("blank lines skipped", &c.blank);
            }
            if summary.warnings > 0 {
                line("truncation warnings", &summary.warnings);
            }
            line(
                "elapsed",
                &format_args!("{elapsed:.2} s ({rate:.0} records/s)"),
            );
            if interrupted {
                line(
                    "interrupted",
                    &"what was not sent is counted not delivered; resume with --resume JOURNAL",
                );
            }
            if let Some(f) = &fatal {
                line("stopped", f);
            }
            for l in ledger.reasons.lines(ledger.files(), args.failed.is_some()) {
                term::out(l);
            }
        }
        ReportFormat::Text => {}
    }
    if let Some(e) = emulator
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
    if interrupted {
        return Ok(signals.status());
    }
    // Clean: every record read was accepted now or settled in the run the journal recorded
    // (nothing invalid, rejected, undelivered or withheld), and none maybe twice.
    let clean_run = summary.accepted + c.skipped_settled == records && uncertain == 0;
    Ok(if clean_run { 0 } else { 2 })
}
