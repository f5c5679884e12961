//! NDJSON: one JSON object per line, an update or a flat record.

use std::io::{BufRead, Read};

use super::{BINARY_LINES_IN_A_ROW, Item, MAX_LINE_BYTES, Record, item_from_text, not_utf8};

pub(super) struct Ndjson {
    pub(super) reader: Box<dyn BufRead + Send>,
    pub(super) file: usize,
    pub(super) line: u64,
    pub(super) done: bool,
    pub(super) binary_run: u32,
    pub(super) shape: std::sync::Arc<super::Shape>,
    /// The line being read, reused from line to line.
    pub(super) buf: Vec<u8>,
}

/// A line buffer grown past this by a long line is given back afterwards.
const KEPT_BUFFER_BYTES: usize = 1 << 20;

impl Iterator for Ndjson {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        if self.done {
            return None;
        }
        if self.buf.capacity() > KEPT_BUFFER_BYTES {
            self.buf = Vec::new();
        }
        self.buf.clear();
        let buf = &mut self.buf;
        match (&mut self.reader)
            .take(MAX_LINE_BYTES)
            .read_until(b'\n', buf)
        {
            Ok(0) => {
                self.done = true;
                None
            }
            Ok(n) if n as u64 == MAX_LINE_BYTES && buf.last() != Some(&b'\n') => {
                // Skip the rest of the over-long line without holding it.
                self.line += 1;
                let mut rest = Vec::new();
                loop {
                    rest.clear();
                    match (&mut self.reader)
                        .take(MAX_LINE_BYTES)
                        .read_until(b'\n', &mut rest)
                    {
                        Ok(0) => break,
                        Ok(_) if rest.last() == Some(&b'\n') => break,
                        Ok(_) => continue,
                        Err(_) => break,
                    }
                }
                buf.truncate(200);
                Some(Record {
                    file: self.file,
                    line: self.line,
                    item: Item::Bad {
                        original: String::from_utf8_lossy(buf).into_owned(),
                        reason: format!(
                            "line longer than {MAX_LINE_BYTES} bytes (an update is at most 1 MB)"
                        ),
                    },
                })
            }
            Ok(_) => {
                self.line += 1;
                // The line, trimmed, is read where it lies: one UTF-8 check, and copied
                // once (by the reader of updates, or as the text to parse).
                let mut start = 0;
                if self.line == 1 && buf.starts_with(b"\xEF\xBB\xBF") {
                    start = 3;
                }
                let kept = buf[start..].trim_ascii();
                let text = std::str::from_utf8(kept);
                let binary = match &text {
                    Ok(t) => t.as_bytes().contains(&0),
                    Err(_) => true,
                };
                if binary {
                    self.binary_run += 1;
                } else {
                    self.binary_run = 0;
                }
                if self.binary_run >= BINARY_LINES_IN_A_ROW {
                    self.done = true;
                    let first = self.line + 1 - u64::from(BINARY_LINES_IN_A_ROW);
                    return Some(Record {
                        file: self.file,
                        line: self.line,
                        item: Item::Bad {
                            original: String::new(),
                            reason: format!(
                                "the input looks binary ({BINARY_LINES_IN_A_ROW} lines in a row, from line {first}, are not UTF-8 text or hold NUL bytes): the rest of the file is skipped"
                            ),
                        },
                    });
                }
                let item = match text {
                    Ok("") => Item::Blank,
                    Ok(t) => item_from_text(t, &self.shape),
                    Err(e) => not_utf8(kept, e),
                };
                Some(Record {
                    file: self.file,
                    line: self.line,
                    item,
                })
            }
            Err(e) => {
                self.done = true;
                Some(Record {
                    file: self.file,
                    line: self.line + 1,
                    item: Item::Bad {
                        original: String::new(),
                        reason: format!("read error, rest of the file skipped: {e}"),
                    },
                })
            }
        }
    }
}
