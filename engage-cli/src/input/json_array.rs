//! A JSON array of objects (updates or flat records), streamed element by element.

use std::io::{self, BufRead};

use super::{Item, MAX_LINE_BYTES, Record, parse_update};

/// Splits a top-level JSON array into its elements as bytes, tracking strings and depth,
/// so a huge array streams and one bad element fails alone.
pub(super) struct JsonArray {
    reader: Box<dyn BufRead + Send>,
    file: usize,
    line: u64,
    started: bool,
    done: bool,
    shape: std::sync::Arc<super::Shape>,
    /// The element being read, reused from element to element.
    element: Vec<u8>,
}

/// An element buffer grown past this by a long element is given back afterwards.
const KEPT_BUFFER_BYTES: usize = 1 << 20;

impl JsonArray {
    pub(super) fn new(
        reader: Box<dyn BufRead + Send>,
        file: usize,
        shape: std::sync::Arc<super::Shape>,
    ) -> Self {
        JsonArray {
            reader,
            file,
            line: 1,
            started: false,
            done: false,
            shape,
            element: Vec::new(),
        }
    }

    fn byte(&mut self) -> io::Result<Option<u8>> {
        let buf = self.reader.fill_buf()?;
        let Some(&b) = buf.first() else {
            return Ok(None);
        };
        self.reader.consume(1);
        if b == b'\n' {
            self.line += 1;
        }
        Ok(Some(b))
    }

    fn bad(&mut self, line: u64, original: Vec<u8>, reason: String) -> Option<Record> {
        self.done = true;
        Some(Record {
            file: self.file,
            line,
            item: Item::Bad {
                original: String::from_utf8_lossy(&original).into_owned(),
                reason,
            },
        })
    }

    fn next_element(&mut self) -> io::Result<Option<Record>> {
        if !self.started {
            // Skip a BOM and whitespace up to '['.
            loop {
                match self.byte()? {
                    None => return Ok(None), // empty file
                    Some(b) if b.is_ascii_whitespace() || matches!(b, 0xEF | 0xBB | 0xBF) => {}
                    Some(b'[') => break,
                    Some(_) => {
                        let line = self.line;
                        return Ok(self.bad(
                            line,
                            Vec::new(),
                            "a JSON array input must start with '['".into(),
                        ));
                    }
                }
            }
            self.started = true;
        }
        // Skip separators up to the next element or the closing bracket.
        let first = loop {
            match self.byte()? {
                None => {
                    let line = self.line;
                    return Ok(self.bad(line, Vec::new(), "the JSON array is not closed".into()));
                }
                Some(b) if b.is_ascii_whitespace() || b == b',' => {}
                Some(b']') => {
                    // Nothing but whitespace may follow the array.
                    loop {
                        match self.byte()? {
                            None => break,
                            Some(b) if b.is_ascii_whitespace() => {}
                            Some(_) => {
                                let line = self.line;
                                return Ok(self.bad(
                                    line,
                                    Vec::new(),
                                    "content after the closing ']' of the JSON array is not read"
                                        .into(),
                                ));
                            }
                        }
                    }
                    self.done = true;
                    return Ok(None);
                }
                Some(b) => break b,
            }
        };
        let line = self.line;
        if self.element.capacity() > KEPT_BUFFER_BYTES {
            self.element = Vec::new();
        }
        self.element.clear();
        self.element.push(first);
        let mut scan = Scanner::default();
        scan.feed(first);
        let scalar = !matches!(first, b'{' | b'[' | b'"');
        // The element's bytes are scanned where they lie in the reader's buffer and
        // copied a run at a time (a call through the reader per byte cost most of a
        // JSON array's reading).
        while scan.depth > 0 || scan.in_string || scalar {
            let JsonArray {
                reader,
                element,
                line: lines,
                ..
            } = self;
            let buf = reader.fill_buf()?;
            if buf.is_empty() {
                if scalar && scan.depth == 0 {
                    break;
                }
                let element = std::mem::take(&mut self.element);
                return Ok(self.bad(
                    line,
                    element,
                    "the JSON array ends inside an element".into(),
                ));
            }
            let mut taken = 0;
            let (mut ended, mut unbalanced) = (false, false);
            for &b in buf {
                if scalar && (b == b',' || b == b']' || b.is_ascii_whitespace()) {
                    ended = true; // end of a scalar element
                    break;
                }
                taken += 1;
                scan.feed(b);
                // Judged on the bytes after the first, as when they were read one by one.
                unbalanced = scan.depth < 0;
                if unbalanced || (!scalar && scan.depth == 0 && !scan.in_string) {
                    ended = true;
                    break;
                }
            }
            *lines += memchr::memchr_iter(b'\n', &buf[..taken]).count() as u64;
            element.extend_from_slice(&buf[..taken]);
            reader.consume(taken);
            if element.len() as u64 > MAX_LINE_BYTES {
                let mut element = std::mem::take(&mut self.element);
                element.truncate(200);
                return Ok(self.bad(line, element, format!("array element longer than {MAX_LINE_BYTES} bytes; the rest of the file is skipped")));
            }
            if unbalanced {
                let element = std::mem::take(&mut self.element);
                return Ok(self.bad(
                    line,
                    element,
                    "unbalanced brackets in the JSON array".into(),
                ));
            }
            if ended {
                break;
            }
        }
        Ok(Some(Record {
            file: self.file,
            line,
            item: parse_update(&self.element, &self.shape),
        }))
    }
}

/// Tracks strings and nesting depth over JSON bytes.
#[derive(Default)]
struct Scanner {
    depth: i64,
    in_string: bool,
    escaped: bool,
}

impl Scanner {
    fn feed(&mut self, b: u8) {
        if self.in_string {
            if self.escaped {
                self.escaped = false;
            } else if b == b'\\' {
                self.escaped = true;
            } else if b == b'"' {
                self.in_string = false;
            }
        } else {
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => self.depth -= 1,
                _ => {}
            }
        }
    }
}

impl Iterator for JsonArray {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        if self.done {
            return None;
        }
        match self.next_element() {
            Ok(r) => {
                if r.is_none() {
                    self.done = true;
                }
                r
            }
            Err(e) => {
                let line = self.line;
                self.bad(
                    line,
                    Vec::new(),
                    format!("read error, rest of the file skipped: {e}"),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;

    /// Each element's line and what it became, read through a reader buffer of `capacity`.
    fn read(input: &[u8], capacity: usize) -> Vec<(u64, String)> {
        let reader = BufReader::with_capacity(capacity, std::io::Cursor::new(input.to_vec()));
        JsonArray::new(
            Box::new(reader),
            0,
            std::sync::Arc::new(super::super::testing::plain_shape()),
        )
        .map(super::super::testing::describe)
        .collect()
    }

    #[test]
    fn elements_split_across_reads_come_out_as_read_whole() {
        // Elements of every length up to past the buffer, spread over lines, with strings
        // holding brackets, quotes and escapes, and elements that are not objects.
        let mut input = b"\xEF\xBB\xBF [\n".to_vec();
        for i in 0..150 {
            let pad = "x".repeat(i * 5);
            let element = match i % 5 {
                0 => format!(r#"{{"$distinct_id": "u{i}", "$set": {{"p": "{pad}"}}}}"#),
                1 => {
                    format!("{{\"$distinct_id\":\"u{i}\",\n  \"$set\":{{\"s\":\"]}} \\\" {{[\"}}}}")
                }
                2 => format!(r#"{{"$distinct_id": "u{i}", "$union": {{"t": ["a", "{pad}"]}}}}"#),
                3 => format!("{i}"),
                _ => format!(r#""text {pad} ]""#),
            };
            input.extend_from_slice(element.as_bytes());
            input.extend_from_slice(if i % 2 == 0 { b",\n" } else { b" , " });
        }
        let last_line = 1 + input.iter().filter(|&&b| b == b'\n').count() as u64;
        input.extend_from_slice(b"[1, {\"a\": [2]}]\n]\n");
        let expected = read(&input, 1 << 20);
        // Lines are counted inside elements too.
        assert_eq!(expected.last().map(|(line, _)| *line), Some(last_line));
        assert_eq!(expected.len(), 151);
        assert!(expected[0].1.starts_with("update"), "{:?}", expected[0]);
        assert!(expected[1].1.starts_with("update"), "{:?}", expected[1]);
        assert!(expected[3].1.starts_with("bad"), "{:?}", expected[3]);
        assert_eq!(expected[0].0, 2);
        for capacity in [1, 7, 64, 100, 1000] {
            assert_eq!(
                read(&input, capacity),
                expected,
                "buffer of {capacity} bytes"
            );
        }
    }

    #[test]
    fn a_stray_closing_bracket_is_one_bad_element_and_reading_goes_on() {
        for capacity in [1, 3, 1 << 20] {
            let got = read(
                b"[{\"a\": 1}}, {\"$distinct_id\": \"u\", \"$set\": {}}]",
                capacity,
            );
            assert_eq!(got.len(), 3, "{capacity}: {got:?}");
            assert!(got[1].1.starts_with("bad malformed JSON"), "{got:?}");
            assert!(got[2].1.starts_with("update"), "{got:?}");
        }
    }

    #[test]
    fn a_broken_array_is_named_whatever_the_buffer() {
        for (input, reason) in [
            (&b"[{\"a\": 1}}}, {\"b\": 2}]"[..], "unbalanced brackets"),
            (b"[{\"a\": \"open", "ends inside an element"),
            (b"[{\"a\": 1}", "not closed"),
            (b"[1] x", "content after the closing"),
        ] {
            for capacity in [1, 3, 1 << 20] {
                let got = read(input, capacity);
                assert!(
                    got.last().is_some_and(|(_, what)| what.contains(reason)),
                    "{capacity}: {got:?}"
                );
            }
        }
    }
}
