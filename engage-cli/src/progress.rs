//! Progress on stderr while an import runs.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::term;

/// Progress on stderr: a bar on a terminal, plain lines with --progress elsewhere.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    plain: bool,
    /// No progress and no notes.
    pub quiet: bool,
    started: Instant,
    last: Instant,
    bytes: Arc<AtomicU64>,
    total_bytes: Option<u64>,
    /// Batches settled.
    pub batches: u64,
    /// Resends.
    pub retries: u64,
    /// Records accepted.
    pub accepted: u64,
    /// Batches being delivered (sent at least once, not settled).
    pub in_flight: u64,
    /// Set once the import is stopping (Ctrl-C): the line says so.
    pub stopping: bool,
}

impl Progress {
    pub fn new(
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
            stopping: false,
        }
    }

    pub fn tick(&mut self, records: u64) {
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
        let stopping = if self.stopping {
            "stopping (interrupted; Ctrl-C again aborts at once): "
        } else {
            ""
        };
        let msg = format!(
            "{stopping}{records} records ({:.0}/s), {:.1} MB/s, {} batches, {} in flight, {} retries",
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

    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => term::err(line),
        }
    }

    pub fn finish(&mut self, records: u64) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        } else if self.plain {
            // A last line, so even a short run shows where it ended.
            self.show(records, true);
        }
    }
}
