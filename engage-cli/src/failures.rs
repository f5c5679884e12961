//! The `--failed` file: one NDJSON entry per record that was not cleanly accepted, written
//! as records settle (a crash loses at most the batch in progress), whole records only.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use serde_json::{Value as Json, json};

/// A record that did not parse is copied up to this many bytes: random bytes must not
/// become a failure file three times their size.
const MAX_UNPARSED_COPY: usize = 1024;

/// The failure file.
pub struct FailureFile {
    file: File,
    /// Entries not yet written.
    buf: Vec<u8>,
    /// Bytes of whole entries on disk.
    committed: u64,
    /// The first write error; nothing more is written after it.
    error: Option<String>,
}

/// Creates `path` for writing, readable by its owner only: entries may hold whatever the
/// records held.
pub fn create_private(path: &Path) -> io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

impl FailureFile {
    /// Creates (or truncates) the file at `path`.
    pub fn create(path: &Path) -> io::Result<FailureFile> {
        Ok(FailureFile {
            file: create_private(path)?,
            buf: Vec::new(),
            committed: 0,
            error: None,
        })
    }

    /// Queues one entry: where the record came from, what became of it, and the record
    /// itself (as JSON when it parses, else as text, cut at 1 KiB).
    pub fn add(&mut self, file: &str, line: u64, kind: &str, reason: &str, original: &str) {
        if self.error.is_some() {
            return;
        }
        let mut entry = json!({
            "file": file,
            "line": line,
            "kind": kind,
            "reason": reason,
        });
        match serde_json::from_str::<Json>(original) {
            Ok(record) => entry["record"] = record,
            Err(_) if original.len() > MAX_UNPARSED_COPY => {
                let mut cut = MAX_UNPARSED_COPY;
                while !original.is_char_boundary(cut) {
                    cut -= 1;
                }
                entry["record"] = Json::String(original[..cut].to_owned());
                entry["record_truncated_from_bytes"] = json!(original.len());
            }
            Err(_) => entry["record"] = Json::String(original.to_owned()),
        }
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.buf, &entry);
        self.buf.push(b'\n');
    }

    /// Writes the queued entries. On a write error (a full disk), the file is cut back to
    /// its last whole entry and the error kept; nothing more is written.
    pub fn flush(&mut self) {
        if self.buf.is_empty() || self.error.is_some() {
            return;
        }
        let mut written = 0;
        let result = loop {
            if written == self.buf.len() {
                break Ok(());
            }
            match self.file.write(&self.buf[written..]) {
                Ok(0) => break Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        match result {
            Ok(()) => self.committed += self.buf.len() as u64,
            Err(e) => {
                // Keep every whole entry that made it; cut the partial one.
                let whole = self.buf[..written]
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |i| i + 1);
                self.committed += whole as u64;
                let cut = self.file.set_len(self.committed);
                let mut message = e.to_string();
                if let Err(c) = cut {
                    message.push_str(&format!(
                        " (and it could not be cut back to its last whole entry: {c})"
                    ));
                }
                self.error = Some(message);
            }
        }
        self.buf.clear();
    }

    /// The write error, if there was one.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }
}
