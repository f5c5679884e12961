//! NDJSON: one JSON object per line, an update or a flat record.

use std::io::{BufRead, Read};

use engage_core::Update;

use super::{
    BINARY_LINES_IN_A_ROW, Item, MAX_LINE_BYTES, Record, Records, TakeText, not_utf8, parse_text,
};

pub(super) struct Ndjson {
    reader: Box<dyn BufRead + Send>,
    file: usize,
    line: u64,
    done: bool,
    binary_run: u32,
    shape: std::sync::Arc<super::Shape>,
    /// The line being read, reused from line to line.
    buf: Vec<u8>,
    /// Bytes of the reader's buffer read but not consumed yet: the line last handed out
    /// from where it lay, consumed on the next call. A record is then built where it is
    /// returned, rather than moved there (a copy of a large record per line, read back
    /// before its stores were done).
    unconsumed: usize,
}

impl Ndjson {
    /// The records of NDJSON text read from `reader`, input `file` of the import.
    pub(super) fn new(
        reader: Box<dyn BufRead + Send>,
        file: usize,
        shape: std::sync::Arc<super::Shape>,
    ) -> Ndjson {
        Ndjson {
            reader,
            file,
            line: 0,
            done: false,
            binary_run: 0,
            shape,
            buf: Vec::new(),
            unconsumed: 0,
        }
    }
}

/// A line buffer grown past this by a long line is given back afterwards.
const KEPT_BUFFER_BYTES: usize = 1 << 20;

impl Records for Ndjson {
    fn next_record(&mut self, mut take: Option<&mut TakeText<'_>>) -> Option<Record> {
        if self.done {
            return None;
        }
        self.reader.consume(std::mem::take(&mut self.unconsumed));
        // A line that lies whole in the reader's buffer is read where it lies: no copy.
        let Ndjson {
            reader,
            file,
            line,
            done,
            binary_run,
            shape,
            unconsumed,
            ..
        } = self;
        match reader.fill_buf() {
            Ok(available) => {
                // The buffer is 64 KiB, far under MAX_LINE_BYTES: a line found whole in it
                // needs no length check.
                if let Some(at) = memchr::memchr(b'\n', available) {
                    *unconsumed = at + 1;
                    return Some(line_record(
                        *file,
                        line,
                        binary_run,
                        done,
                        shape,
                        &available[..at],
                        take.as_deref_mut(),
                    ));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // Reported here: some readers (a gzip decoder) say an error once, then end.
            Err(e) => {
                *done = true;
                return Some(read_error(*file, *line + 1, &e));
            }
        }
        self.next_copied(take)
    }
}

impl Ndjson {
    /// The next line copied into the line buffer: one that runs past the reader's buffer,
    /// the last one (without a newline), or a read error.
    fn next_copied(&mut self, take: Option<&mut TakeText<'_>>) -> Option<Record> {
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
            Ok(_) => Some(line_record(
                self.file,
                &mut self.line,
                &mut self.binary_run,
                &mut self.done,
                &self.shape,
                buf,
                take,
            )),
            Err(e) => {
                self.done = true;
                Some(read_error(self.file, self.line + 1, &e))
            }
        }
    }
}

/// A read error at `line`: the rest of the file is skipped, and said to be.
fn read_error(file: usize, line: u64, e: &std::io::Error) -> Record {
    Record {
        file,
        line,
        item: Item::Bad {
            original: String::new(),
            reason: format!("read error, rest of the file skipped: {e}"),
        },
    }
}

/// The record of one line read (its newline, if any, included or not), borrowed: one UTF-8
/// check (by the one-pass reader, in the strings, for the lines it takes; of the whole line
/// for the others), and copied once (by the reader of updates, or as the text to parse).
/// With `take`, a line that may be an update goes to it as text first.
fn line_record(
    file: usize,
    line: &mut u64,
    binary_run: &mut u32,
    done: &mut bool,
    shape: &super::Shape,
    raw: &[u8],
    take: Option<&mut TakeText<'_>>,
) -> Record {
    *line += 1;
    let mut start = 0;
    if *line == 1 && raw.starts_with(b"\xEF\xBB\xBF") {
        start = 3;
    }
    let kept = raw[start..].trim_ascii();
    // The one-pass reader takes only UTF-8 text, and checks it where bytes other than
    // ASCII can be (in strings): the lines it takes are not walked again. An update it
    // takes holds no NUL byte either (JSON has none outside strings, and refuses control
    // characters in them): only other lines are searched.
    let offer = shape.delete.is_none() && !kept.is_empty();
    let item = match take {
        Some(take) if offer => take(file, *line, kept).then_some(Item::Taken),
        _ if offer => Update::from_json_fast(kept).map(|update| Item::Update(update, None)),
        _ => None,
    };
    if let Some(item) = item {
        *binary_run = 0;
        return Record {
            file,
            line: *line,
            item,
        };
    }
    let text = std::str::from_utf8(kept);
    let binary = match &text {
        Ok(t) => memchr::memchr(0, t.as_bytes()).is_some(),
        Err(_) => true,
    };
    if binary {
        *binary_run += 1;
    } else {
        *binary_run = 0;
    }
    if *binary_run >= BINARY_LINES_IN_A_ROW {
        *done = true;
        let first = *line + 1 - u64::from(BINARY_LINES_IN_A_ROW);
        return Record {
            file,
            line: *line,
            item: Item::Bad {
                original: String::new(),
                reason: format!(
                    "the input looks binary ({BINARY_LINES_IN_A_ROW} lines in a row, from line {first}, are not UTF-8 text or hold NUL bytes): the rest of the file is skipped"
                ),
            },
        };
    }
    let item = match text {
        Ok("") => Item::Blank,
        Ok(t) => parse_text(t.to_owned(), shape),
        Err(e) => not_utf8(kept, e),
    };
    Record {
        file,
        line: *line,
        item,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;

    /// The lines' numbers and what each became, read through a reader buffer of `capacity`.
    fn read(input: &[u8], capacity: usize) -> Vec<(u64, String)> {
        let reader = BufReader::with_capacity(capacity, std::io::Cursor::new(input.to_vec()));
        let mut ndjson = Ndjson::new(
            Box::new(reader),
            0,
            std::sync::Arc::new(super::super::testing::plain_shape()),
        );
        std::iter::from_fn(|| ndjson.next_record(None))
            .map(super::super::testing::describe)
            .collect()
    }

    /// A reader that fails once, then says it has ended (as a gzip decoder does after a
    /// bad header or checksum).
    struct FailsOnceThenEnds(bool);

    impl std::io::Read for FailsOnceThenEnds {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            if std::mem::replace(&mut self.0, true) {
                Ok(0)
            } else {
                Err(std::io::Error::other("corrupt deflate stream"))
            }
        }
    }

    #[test]
    fn a_read_error_is_reported_even_if_the_reader_then_ends() {
        let mut ndjson = Ndjson::new(
            Box::new(BufReader::new(FailsOnceThenEnds(false))),
            0,
            std::sync::Arc::new(super::super::testing::plain_shape()),
        );
        let first = ndjson.next_record(None).expect("the error, not the end");
        assert!(
            matches!(&first.item, Item::Bad { reason, .. } if reason.contains("corrupt deflate")),
            "{:?}",
            first.item
        );
        assert!(ndjson.next_record(None).is_none());
    }

    #[test]
    fn lines_read_in_place_or_copied_come_out_the_same() {
        // Lines of every length up to past the buffer, CRLF, blank and bad lines, a BOM,
        // and a last line without a newline.
        let mut input = b"\xEF\xBB\xBF".to_vec();
        for i in 0..200 {
            let pad = "x".repeat(i * 7);
            input.extend_from_slice(
                format!(r#"{{"$distinct_id": "u{i}", "$set": {{"p": "{pad}"}}}}"#).as_bytes(),
            );
            input.extend_from_slice(match i % 4 {
                0 => b"\r\n".as_slice(),
                1 => b"\n\n",
                2 => b"\nnot json\n",
                _ => b"\n",
            });
        }
        input.extend_from_slice(br#"{"$distinct_id": "last", "$add": {"n": 1}}"#);
        let expected = read(&input, 1 << 20);
        assert_eq!(expected.len(), 200 + 50 + 50 + 1);
        assert_eq!(expected.last().map(|(line, _)| *line), Some(301));
        assert!(expected[0].1.starts_with("update"), "{:?}", expected[0]);
        for capacity in [1, 7, 64, 100, 1000] {
            assert_eq!(
                read(&input, capacity),
                expected,
                "buffer of {capacity} bytes"
            );
        }
    }
}
