//! CSV with a header row: each row becomes one update of the mapped operation.

use std::io::{self, BufRead, Read};

use engage_core::Update;
use engage_core::model::{Properties, Value};
use serde_json::Value as Json;

use super::{BINARY_LINES_IN_A_ROW, CsvMapping, CsvOp, Item, Record};

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
    newlines: std::rc::Rc<std::cell::RefCell<Newlines>>,
}

impl<R: Read> Read for LineTracking<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut nl = self.newlines.borrow_mut();
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
    reader: csv::Reader<LineTracking<Box<dyn BufRead>>>,
    newlines: std::rc::Rc<std::cell::RefCell<Newlines>>,
    headers: Option<Vec<String>>,
    file: usize,
    mapping: CsvMapping,
    done: bool,
    /// The line of the last row read, to place an error that comes without a position
    /// (a read error, a truncated `.gz`) just after it.
    last_line: u64,
    binary_run: u32,
}

impl CsvRows {
    pub(super) fn new(reader: Box<dyn BufRead>, file: usize, mapping: CsvMapping) -> Self {
        let newlines = std::rc::Rc::new(std::cell::RefCell::new(Newlines::default()));
        let tracked = LineTracking {
            inner: reader,
            newlines: newlines.clone(),
        };
        CsvRows {
            reader: csv::ReaderBuilder::new()
                .flexible(true)
                .from_reader(tracked),
            newlines,
            headers: None,
            file,
            mapping,
            done: false,
            last_line: 1,
            binary_run: 0,
        }
    }
}

/// A CSV cell typed: integer, float, boolean or string. Cells that only look numeric are
/// kept as text: leading zeros (`00501`), a sign (`+1555…`), an exponent (`1e3`) or more
/// digits than a float holds exactly (long ids).
fn typed(cell: &str) -> Value {
    let digits = cell.bytes().filter(u8::is_ascii_digit).count();
    let unsigned = cell.strip_prefix('-').unwrap_or(cell);
    let leading_zero =
        unsigned.len() > 1 && unsigned.starts_with('0') && !unsigned.starts_with("0.");
    let has_exponent = cell.bytes().any(|b| b == b'e' || b == b'E');
    let numeric_looking = !cell.starts_with('+') && !has_exponent && !leading_zero && digits <= 15;
    if numeric_looking {
        if let Ok(i) = cell.parse::<i64>() {
            return Value::Int(i);
        }
        if let Ok(f) = cell.parse::<f64>()
            && f.is_finite()
            && digits > 0
        {
            return Value::Float(f);
        }
    }
    match cell {
        "true" | "TRUE" | "True" => Value::Bool(true),
        "false" | "FALSE" | "False" => Value::Bool(false),
        _ => Value::String(cell.to_owned()),
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
                    if !names.contains(&self.mapping.id_column) {
                        self.done = true;
                        return Some(Record {
                            file: self.file,
                            line: 1,
                            item: Item::Bad {
                                original: names.join(","),
                                reason: format!(
                                    "the header has no column {:?}",
                                    self.mapping.id_column
                                ),
                            },
                        });
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
                    self.newlines.borrow_mut().line_of(p.byte())
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
                let item = row_update(headers, &row, &self.mapping, original);
                Some(Record {
                    file: self.file,
                    line,
                    item,
                })
            }
            Err(e) => {
                let line = e.position().map_or(self.last_line + 1, |p| {
                    self.newlines.borrow_mut().line_of(p.byte())
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

fn row_update(
    headers: &[String],
    row: &csv::StringRecord,
    m: &CsvMapping,
    original: String,
) -> Item {
    let mut id = None;
    let mut cells: Vec<(String, &str)> = Vec::new();
    for (h, cell) in headers.iter().zip(row.iter()) {
        if *h == m.id_column {
            id = Some(cell.trim().to_owned());
        } else if !cell.trim().is_empty() {
            cells.push((h.clone(), cell.trim()));
        }
    }
    let id = id.unwrap_or_default();
    if id.is_empty() {
        return Item::Bad {
            original,
            reason: format!(
                "empty {} in column {:?}",
                if m.group_key.is_some() {
                    "group id"
                } else {
                    "distinct_id"
                },
                m.id_column
            ),
        };
    }
    let props = || -> Properties { cells.iter().map(|(k, v)| (k.clone(), typed(v))).collect() };
    let op = match m.op {
        CsvOp::Set => engage_core::model::Operation::Set(props()),
        CsvOp::SetOnce => engage_core::model::Operation::SetOnce(props()),
        CsvOp::Append => engage_core::model::Operation::Append(props()),
        CsvOp::Remove => engage_core::model::Operation::Remove(props()),
        CsvOp::Union => engage_core::model::Operation::Union(
            cells
                .iter()
                .map(|(k, v)| (k.clone(), vec![typed(v)]))
                .collect(),
        ),
        CsvOp::Unset => {
            engage_core::model::Operation::Unset(cells.iter().map(|(k, _)| k.clone()).collect())
        }
        CsvOp::Add => {
            let mut numbers = Vec::new();
            for (k, v) in &cells {
                match typed(v) {
                    Value::Int(i) => numbers.push((k.clone(), engage_core::model::Number::Int(i))),
                    Value::Float(f) => {
                        numbers.push((k.clone(), engage_core::model::Number::Float(f)))
                    }
                    _ => {
                        return Item::Bad {
                            original,
                            reason: format!("column {k:?}: $add needs a number, found {v:?}"),
                        };
                    }
                }
            }
            engage_core::model::Operation::Add(numbers)
        }
    };
    let profile = match &m.group_key {
        Some(key) => engage_core::model::ProfileId::Group {
            key: key.clone(),
            id,
        },
        None => engage_core::model::ProfileId::User { distinct_id: id },
    };
    Item::Update(Update::new(profile, op), original)
}
