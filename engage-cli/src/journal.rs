//! The import journal: an append-only log of batches, written so that after a crash (a
//! `kill -9`, an OOM kill, a lost laptop lid) a resumed import knows what was settled,
//! what may have been applied, and what never went out.
//!
//! One line per entry, `CRC32 JSON\n`: a line whose checksum does not match, or that does
//! not end in a newline (a torn write), ends the journal there.
//!
//! - `header`: the input's identity (each file's name, size and a checksum of its first
//!   64 KiB) and a digest of the options that decide how records are numbered; a resume
//!   with other inputs or options is refused.
//! - `send`: a batch's record numbers (as runs of consecutive numbers: a few bytes per
//!   batch), written *before* its first attempt, and `fsync`ed first when the batch holds
//!   `$add` or `$append`.
//! - `done`: the batch is settled; the numbers listed as `unsent` never reached the server
//!   (the import stopped first) and those listed as `unknown` may or may not have.
//!
//! One small write per batch, one `fsync` per batch sent that holds `$add` or `$append`.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::Path;

use serde_json::{Value as Json, json};

/// The journal format this build writes and reads (2: record numbers sorted, as
/// distances and runs).
const VERSION: u64 = 2;

/// What a journal says of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Never sent (or sent in no batch the journal knows of).
    Unsent,
    /// In a batch sent but not settled: it may or may not have been applied.
    Unknown,
    /// Settled: accepted, rejected or not delivered.
    Settled,
}

/// Per record number, what the journal says.
#[derive(Debug, Default)]
pub struct Resume {
    status: Vec<u8>,
    /// Entries read.
    pub entries: u64,
    /// Whether the journal ended in a torn or corrupt line (ignored from there).
    pub torn: bool,
}

impl Resume {
    /// The status of record `index`.
    pub fn status(&self, index: u64) -> Status {
        match self.status.get(index as usize) {
            Some(1) => Status::Unknown,
            Some(2) => Status::Settled,
            _ => Status::Unsent,
        }
    }

    fn set(&mut self, index: u64, status: Status) {
        let i = index as usize;
        if i >= self.status.len() {
            // Record numbers are dense (0, 1, 2, …): growing to the largest is fine.
            if i > 1 << 34 {
                return;
            }
            self.status.resize(i + 1, 0);
        }
        self.status[i] = match status {
            Status::Unsent => 0,
            Status::Unknown => 1,
            Status::Settled => 2,
        };
    }
}

/// An open journal, written as the import goes.
pub struct Journal {
    file: File,
    /// Where the entries end.
    written: u64,
    /// How far the file is written with zeros ahead of the entries, and synced.
    allocated: u64,
}

/// The zeros written ahead of the entries at a time. An `fdatasync` after an append that
/// grows the file must also write its inode; one after a write into space already on disk
/// writes the data only. Reading stops at the zeros as at a torn line; a journal closed
/// normally is cut to its entries.
const PREALLOCATE: u64 = 1 << 20;

/// The identity a journal is tied to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    inputs: Json,
    options: String,
}

/// Reads the identity of the inputs: name, size, checksum of the first 64 KiB of each.
/// Standard input has none (it cannot be read twice), so a journal refuses it.
pub fn identity(paths: &[String], options: &str) -> Result<Identity, String> {
    let mut inputs = Vec::new();
    for path in paths {
        if path == "-" {
            return Err(
                "a journal needs input files it can read again: standard input cannot be resumed"
                    .into(),
            );
        }
        let mut f = File::open(path).map_err(|e| format!("cannot read {path}: {e}"))?;
        let size = f.metadata().map(|m| m.len()).unwrap_or(0);
        let mut head = vec![0u8; 64 * 1024];
        let mut n = 0;
        while n < head.len() {
            match f.read(&mut head[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("cannot read {path}: {e}")),
            }
        }
        inputs.push(json!({
            "name": path,
            "size": size,
            "head_crc32": format!("{:08x}", crc32fast::hash(&head[..n])),
        }));
    }
    Ok(Identity {
        inputs: Json::Array(inputs),
        options: options.to_owned(),
    })
}

fn line(entry: &Json) -> Vec<u8> {
    line_text(&entry.to_string())
}

/// `crc32 text\n`: a torn or corrupt line is seen as such.
fn line_text(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 10);
    out.extend_from_slice(format!("{:08x} ", crc32fast::hash(text.as_bytes())).as_bytes());
    out.extend_from_slice(text.as_bytes());
    out.push(b'\n');
    out
}

/// Reads one entry; `None` at the end or at a torn or corrupt line.
fn parse(raw: &[u8]) -> Option<Json> {
    let raw = raw.strip_suffix(b"\n")?;
    let (crc, text) = raw.split_at_checked(9)?;
    let crc = std::str::from_utf8(&crc[..8]).ok()?;
    if u32::from_str_radix(crc, 16).ok()? != crc32fast::hash(text) {
        return None;
    }
    serde_json::from_slice(text).ok()
}

/// Record numbers as JSON text, a set (their order in the batch does not matter): sorted,
/// the first, then for each next number its distance from the one before (a positive
/// number), a run of `k` consecutive numbers written once as `-k`. A batch of records
/// read in order is two numbers, whatever its size; one of records held back for a busy
/// profile is about one small number per record. Written straight as text, twice per batch.
fn runs_text(indices: &[u64]) -> String {
    let mut sorted = indices.to_vec();
    sorted.sort_unstable();
    let mut out = String::with_capacity(16 + sorted.len().min(64) * 4);
    let mut buf = itoa::Buffer::new();
    out.push('[');
    let mut i = 0;
    while i < sorted.len() {
        if i == 0 {
            out.push_str(buf.format(sorted[0]));
            i = 1;
            continue;
        }
        out.push(',');
        let mut run = 0;
        while sorted
            .get(i + run)
            .is_some_and(|&x| x == sorted[i + run - 1] + 1)
        {
            run += 1;
        }
        if run > 0 {
            out.push('-');
            out.push_str(buf.format(run));
            i += run;
        } else {
            out.push_str(buf.format(sorted[i] - sorted[i - 1]));
            i += 1;
        }
    }
    out.push(']');
    out
}

/// The record numbers of a [`runs_text`] list.
fn unruns(v: &Json) -> Vec<u64> {
    let mut out = Vec::new();
    let mut cur: u64 = 0;
    for (i, n) in v.as_array().into_iter().flatten().enumerate() {
        let n = n.as_i64().unwrap_or(0);
        if i == 0 {
            cur = n.max(0) as u64;
            out.push(cur);
        } else if n >= 0 {
            cur = cur.saturating_add(n as u64);
            out.push(cur);
        } else {
            // A run is within one batch: a longer one (a corrupt number that passed the
            // checksum) is cut short rather than filling memory.
            let most = engage_core::batch::MAX_RECORDS_PER_REQUEST as u64;
            for _ in 0..n.unsigned_abs().min(most) {
                cur = cur.saturating_add(1);
                out.push(cur);
            }
        }
    }
    out
}

impl Journal {
    /// Starts a new journal at `path` (refusing to replace one that exists: resume it, or
    /// remove it).
    pub fn create(path: &Path, id: &Identity) -> Result<Journal, String> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(path).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                format!(
                    "the journal {} exists: resume it with --resume {}, or remove it to start over",
                    path.display(),
                    path.display()
                )
            } else {
                format!("cannot create the journal {}: {e}", path.display())
            }
        })?;
        let header =
            json!({"t": "header", "v": VERSION, "inputs": id.inputs, "options": id.options});
        let mut journal = Journal {
            file,
            written: 0,
            allocated: 0,
        };
        journal
            .append(&line(&header))
            .and_then(|()| journal.file.sync_all())
            .map_err(|e| {
                // No header, no journal: leave nothing a rerun would take for one to resume.
                drop(std::fs::remove_file(path));
                format!("cannot write the journal {}: {e}", path.display())
            })?;
        Ok(journal)
    }

    /// Opens a journal to resume: checks it belongs to these inputs and options, and reads
    /// what it says of each record. A torn tail is cut off, so new entries follow the
    /// last whole one.
    pub fn resume(path: &Path, id: &Identity) -> Result<(Journal, Resume), String> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| format!("cannot open the journal {}: {e}", path.display()))?;
        let mut reader = BufReader::new(&file);
        let mut raw = Vec::new();
        let mut resume = Resume::default();
        let mut good = 0u64;
        let mut header: Option<Json> = None;
        loop {
            raw.clear();
            let n = reader
                .read_until(b'\n', &mut raw)
                .map_err(|e| format!("cannot read the journal {}: {e}", path.display()))?;
            if n == 0 {
                break;
            }
            let Some(entry) = parse(&raw) else {
                resume.torn = true;
                break;
            };
            good += n as u64;
            resume.entries += 1;
            match entry["t"].as_str() {
                Some("header") if header.is_none() => header = Some(entry),
                Some("send") => {
                    for i in unruns(&entry["r"]) {
                        resume.set(i, Status::Unknown);
                    }
                }
                Some("done") => {
                    for i in unruns(&entry["r"]) {
                        resume.set(i, Status::Settled);
                    }
                    for i in unruns(&entry["unsent"]) {
                        resume.set(i, Status::Unsent);
                    }
                    for i in unruns(&entry["unknown"]) {
                        resume.set(i, Status::Unknown);
                    }
                }
                _ => {}
            }
        }
        drop(reader);
        let Some(header) = header else {
            return Err(format!(
                "{} is not a journal of engage import (no header)",
                path.display()
            ));
        };
        if header["v"].as_u64() != Some(VERSION) {
            return Err(format!(
                "the journal {} was written by another version of engage (journal format {}, this one reads {VERSION}); finish that import with the engage that began it",
                path.display(),
                header["v"]
            ));
        }
        if header["inputs"] != id.inputs {
            return Err(format!(
                "the journal {} was written for other input ({}); resume with the same files, unchanged",
                path.display(),
                header["inputs"]
            ));
        }
        if header["options"].as_str() != Some(id.options.as_str()) {
            return Err(format!(
                "the journal {} was written with other options that decide how records are numbered or where they go (format, CSV columns, --groups, the token): resume with the same ones",
                path.display()
            ));
        }
        if resume.torn {
            file.set_len(good)
                .map_err(|e| format!("cannot cut the journal's torn tail: {e}"))?;
        }
        let mut file = file;
        use std::io::Seek;
        file.seek(io::SeekFrom::Start(good))
            .map_err(|e| format!("cannot append to the journal: {e}"))?;
        Ok((
            Journal {
                file,
                written: good,
                allocated: good,
            },
            resume,
        ))
    }

    /// A batch is about to go out: its record numbers, written before the request, and
    /// with `durable` on disk before it (a batch with `$add` or `$append`, which a resume
    /// must not apply twice; a batch of idempotent updates that a power cut loses from the
    /// journal is only sent again: an fsync per batch is the journal's main cost).
    pub fn send(&mut self, indices: &[u64], durable: bool) -> io::Result<()> {
        let text = format!(r#"{{"t":"send","r":{}}}"#, runs_text(indices));
        self.append(&line_text(&text))?;
        if durable {
            self.file.sync_data()?;
        }
        Ok(())
    }

    /// A batch is settled, but for `unsent` (never reached the server) and `unknown`
    /// (may have). Not synced: losing it only makes a resume more careful.
    pub fn done(&mut self, settled: &[u64], unsent: &[u64], unknown: &[u64]) -> io::Result<()> {
        let mut text = format!(r#"{{"t":"done","r":{}"#, runs_text(settled));
        if !unsent.is_empty() {
            text.push_str(&format!(r#","unsent":{}"#, runs_text(unsent)));
        }
        if !unknown.is_empty() {
            text.push_str(&format!(r#","unknown":{}"#, runs_text(unknown)));
        }
        text.push('}');
        self.append(&line_text(&text))
    }

    /// Writes an entry after the last, first writing zeros ahead (and syncing them) when
    /// the file has no room written for it.
    fn append(&mut self, entry: &[u8]) -> io::Result<()> {
        use std::io::{Seek, SeekFrom};
        let end = self.written + entry.len() as u64;
        if end > self.allocated {
            let target = end + PREALLOCATE;
            self.file.seek(SeekFrom::Start(self.allocated))?;
            let zeros = [0u8; 64 * 1024];
            let mut at = self.allocated;
            while at < target {
                let n = (target - at).min(zeros.len() as u64) as usize;
                self.file.write_all(&zeros[..n])?;
                at += n as u64;
            }
            self.file.sync_data()?;
            self.allocated = target;
            self.file.seek(SeekFrom::Start(self.written))?;
        }
        self.file.write_all(entry)?;
        self.written = end;
        Ok(())
    }

    /// Syncs what was written.
    pub fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
}

impl Drop for Journal {
    /// Cuts the zeros written ahead: a journal closed normally ends at its last entry.
    fn drop(&mut self) {
        if self.allocated > self.written {
            let _ = self.file.set_len(self.written);
            let _ = self.file.sync_data();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(indices: &[u64]) -> Json {
        serde_json::from_str(&runs_text(indices)).unwrap()
    }

    #[test]
    fn record_numbers_round_trip_through_runs() {
        let v = [5u64, 6, 9, 7, 8, 1000, 3];
        let mut sorted = v.to_vec();
        sorted.sort_unstable();
        assert_eq!(unruns(&runs(&v)), sorted);
        assert!(unruns(&runs(&[])).is_empty());
        assert_eq!(runs_text(&v), "[3,2,-4,991]");
        // A batch read in order is two numbers, whatever its size.
        let batch: Vec<u64> = (4000..6000).collect();
        assert_eq!(runs_text(&batch), "[4000,-1999]");
        assert_eq!(unruns(&runs(&batch)), batch);
        assert_eq!(unruns(&runs(&[7])), [7]);
    }

    #[test]
    fn zeros_written_ahead_are_read_as_the_end_and_cut_when_closed() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.ndjson");
        std::fs::write(&input, "{}\n").unwrap();
        let id = identity(&[input.display().to_string()], "o").unwrap();
        let path = dir.path().join("j");
        let mut journal = Journal::create(&path, &id).unwrap();
        journal.send(&[0, 1, 2], true).unwrap();
        journal.done(&[0, 1], &[], &[2]).unwrap();
        let open_len = std::fs::metadata(&path).unwrap().len();
        assert!(open_len > PREALLOCATE, "zeros are written ahead");
        // As after a kill: the zeros are still there.
        let copy = dir.path().join("copy");
        std::fs::copy(&path, &copy).unwrap();
        drop(journal);
        let entries_len = std::fs::metadata(&path).unwrap().len();
        assert!(
            entries_len < 1000,
            "cut to its entries when closed: {entries_len}"
        );
        let (mut resumed, resume) = Journal::resume(&copy, &id).unwrap();
        assert!(resume.torn);
        assert_eq!(resume.entries, 3);
        assert_eq!(resume.status(0), Status::Settled);
        assert_eq!(resume.status(2), Status::Unknown);
        assert_eq!(resume.status(3), Status::Unsent);
        resumed.send(&[3], true).unwrap();
        drop(resumed);
        let (_, again) = Journal::resume(&copy, &id).unwrap();
        assert!(!again.torn);
        assert_eq!(again.entries, 4);
        assert_eq!(again.status(3), Status::Unknown);
    }

    #[test]
    fn a_torn_or_corrupt_line_ends_the_journal() {
        let good = line(&json!({"t": "send", "i": [1, 1]}));
        assert!(parse(&good).is_some());
        assert!(parse(&good[..good.len() - 1]).is_none(), "no newline: torn");
        let mut bad = good.clone();
        let at = bad.len() - 3;
        bad[at] ^= 1;
        assert!(parse(&bad).is_none(), "checksum");
    }
}
