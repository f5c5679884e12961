//! CSV and TSV with a header row: each row is a flat record, shaped into one update.

use std::io::{self, BufRead, Read};

use std::sync::Arc;

use serde_json::Value as Json;

use super::shape::typed_cell;
use super::{BINARY_LINES_IN_A_ROW, Item, Record, Shape, shaped};

/// Remembers where the newlines are in what the csv reader has read ahead, so a record's
/// byte offset gives its line whatever the line ends (the csv crate's own line count is off
/// by one with CRLF). Holds only the newlines of the read-ahead window.
#[derive(Default)]
struct Newlines {
    offsets: std::collections::VecDeque<u64>,
    read: u64,
    passed: u64,
}

impl Newlines {
    /// The 1-based line of the byte at `offset` (offsets must not go backwards).
    fn line_of(&mut self, offset: u64) -> u64 {
        // `<=`: with CRLF the csv crate reports a record as starting on the previous
        // line's `\n`, which still ends the previous line.
        while self.offsets.front().is_some_and(|&n| n <= offset) {
            self.offsets.pop_front();
            self.passed += 1;
        }
        self.passed + 1
    }
}

struct LineTracking<R> {
    inner: R,
    newlines: std::sync::Arc<std::sync::Mutex<Newlines>>,
}

impl<R: Read> Read for LineTracking<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        // Shared with the CSV reader on the same thread: never contended.
        let mut nl = self
            .newlines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let base = nl.read;
        for (i, &b) in buf[..n].iter().enumerate() {
            if b == b'\n' {
                nl.offsets.push_back(base + i as u64);
            }
        }
        nl.read += n as u64;
        Ok(n)
    }
}

pub(super) struct CsvRows {
    reader: csv::Reader<LineTracking<Box<dyn BufRead + Send>>>,
    newlines: std::sync::Arc<std::sync::Mutex<Newlines>>,
    headers: Option<Vec<String>>,
    /// Column names the header repeats: a row keeps the last cell of each, and says so.
    repeated: Vec<String>,
    file: usize,
    shape: Arc<Shape>,
    done: bool,
    /// The line of the last row read, to place an error that comes without a position
    /// (a read error, a truncated `.gz`) just after it.
    last_line: u64,
    binary_run: u32,
}

impl CsvRows {
    pub(super) fn new(
        reader: Box<dyn BufRead + Send>,
        file: usize,
        delimiter: u8,
        shape: Arc<Shape>,
    ) -> Self {
        let newlines = std::sync::Arc::new(std::sync::Mutex::new(Newlines::default()));
        let tracked = LineTracking {
            inner: reader,
            newlines: newlines.clone(),
        };
        CsvRows {
            reader: csv::ReaderBuilder::new()
                .flexible(true)
                .delimiter(delimiter)
                // TSV has no quoting: a quote is an ordinary character.
                .quoting(delimiter != b'\t')
                .from_reader(tracked),
            newlines,
            headers: None,
            repeated: Vec::new(),
            file,
            shape,
            done: false,
            last_line: 1,
            binary_run: 0,
        }
    }
}

impl Iterator for CsvRows {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        if self.done {
            return None;
        }
        if self.headers.is_none() {
            match self.reader.headers() {
                Ok(h) => {
                    let mut names: Vec<String> = h.iter().map(str::to_owned).collect();
                    if let Some(first) = names.first_mut() {
                        *first = first.trim_start_matches('\u{feff}').to_owned();
                    }
                    let id_fields = self.shape.id_fields();
                    if !id_fields.iter().any(|f| names.iter().any(|n| n == f)) {
                        self.done = true;
                        return Some(Record {
                            file: self.file,
                            line: 1,
                            item: Item::Bad {
                                original: names.join(","),
                                reason: format!(
                                    "the header has no id column ({}); name it with {}",
                                    id_fields
                                        .iter()
                                        .map(|f| format!("{f:?}"))
                                        .collect::<Vec<_>>()
                                        .join(" or "),
                                    if self.shape.groups {
                                        "--group-id-field"
                                    } else {
                                        "--id-field"
                                    }
                                ),
                            },
                        });
                    }
                    for (i, n) in names.iter().enumerate() {
                        if names[..i].contains(n) && !self.repeated.contains(n) {
                            self.repeated.push(n.clone());
                        }
                    }
                    self.headers = Some(names);
                }
                Err(e) => {
                    self.done = true;
                    return Some(Record {
                        file: self.file,
                        line: 1,
                        item: Item::Bad {
                            original: String::new(),
                            reason: format!("unreadable CSV header: {e}"),
                        },
                    });
                }
            }
        }
        let headers = self.headers.as_ref()?;
        let mut row = csv::StringRecord::new();
        match self.reader.read_record(&mut row) {
            Ok(false) => {
                self.done = true;
                None
            }
            Ok(true) => {
                self.binary_run = 0;
                let line = row.position().map_or(self.last_line + 1, |p| {
                    self.newlines
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .line_of(p.byte())
                });
                self.last_line = line;
                let mut original = serde_json::Map::new();
                for (h, cell) in headers.iter().zip(row.iter()) {
                    original.insert(h.clone(), Json::String(cell.to_owned()));
                }
                let original = Json::Object(original).to_string();
                if row.iter().all(|c| c.trim().is_empty()) {
                    return Some(Record {
                        file: self.file,
                        line,
                        item: Item::Blank,
                    });
                }
                if row.len() != headers.len() {
                    return Some(Record {
                        file: self.file,
                        line,
                        item: Item::Bad {
                            original,
                            reason: format!(
                                "{} fields where the header has {} (an unquoted comma?)",
                                row.len(),
                                headers.len()
                            ),
                        },
                    });
                }
                // An empty cell is no value (CSV has no null): the property is left as
                // it is, never overwritten with nothing.
                let record = headers
                    .iter()
                    .zip(row.iter())
                    .filter(|(_, cell)| !cell.trim().is_empty())
                    .map(|(h, cell)| (h.clone(), typed_cell(cell.trim())))
                    .collect();
                let item = shaped(&self.shape, record, self.repeated.clone(), original);
                Some(Record {
                    file: self.file,
                    line,
                    item,
                })
            }
            Err(e) => {
                let line = e.position().map_or(self.last_line + 1, |p| {
                    self.newlines
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .line_of(p.byte())
                });
                self.last_line = line;
                if e.is_io_error() {
                    // The stream itself failed (a truncated .gz): nothing more can be read.
                    self.done = true;
                    return Some(Record {
                        file: self.file,
                        line,
                        item: Item::Bad {
                            original: String::new(),
                            reason: format!("read error, rest of the file skipped: {e}"),
                        },
                    });
                }
                self.binary_run += 1;
                if self.binary_run >= BINARY_LINES_IN_A_ROW {
                    self.done = true;
                    return Some(Record {
                        file: self.file,
                        line,
                        item: Item::Bad {
                            original: String::new(),
                            reason: format!(
                                "the input looks binary ({BINARY_LINES_IN_A_ROW} unreadable rows in a row): the rest of the file is skipped"
                            ),
                        },
                    });
                }
                Some(Record {
                    file: self.file,
                    line,
                    item: Item::Bad {
                        original: String::new(),
                        reason: format!("unreadable CSV row: {e}"),
                    },
                })
            }
        }
    }
}
