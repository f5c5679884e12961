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
}

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
        let mut element = vec![first];
        let mut scan = Scanner::default();
        scan.feed(first);
        let scalar = !matches!(first, b'{' | b'[' | b'"');
        while scan.depth > 0 || scan.in_string || scalar {
            let Some(b) = self.reader.fill_buf()?.first().copied() else {
                if scalar && scan.depth == 0 {
                    break;
                }
                return Ok(self.bad(
                    line,
                    element,
                    "the JSON array ends inside an element".into(),
                ));
            };
            if scalar && (b == b',' || b == b']' || b.is_ascii_whitespace()) {
                break; // end of a scalar element
            }
            self.byte()?;
            if element.len() as u64 >= MAX_LINE_BYTES {
                element.truncate(200);
                return Ok(self.bad(line, element, format!("array element longer than {MAX_LINE_BYTES} bytes; the rest of the file is skipped")));
            }
            element.push(b);
            scan.feed(b);
            if scan.depth < 0 {
                return Ok(self.bad(
                    line,
                    element,
                    "unbalanced brackets in the JSON array".into(),
                ));
            }
        }
        Ok(Some(Record {
            file: self.file,
            line,
            item: parse_update(&element, &self.shape),
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
