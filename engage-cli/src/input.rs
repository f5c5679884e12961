//! Reading input files: NDJSON, JSON arrays and CSV, each optionally gzip-compressed, as a
//! stream of records with their file and line, never the whole file in memory.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use engage_core::{Properties, Update, Value};
use serde_json::Value as Json;

/// Input formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One update object per line.
    Ndjson,
    /// A JSON array of update objects.
    Json,
    /// CSV with a header row (needs --distinct-id-column, or --groups with --group-id-column).
    Csv,
}

/// Operations a CSV row can become.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CsvOp {
    /// `$set`
    Set,
    /// `$set_once`
    SetOnce,
    /// `$add` (numbers only)
    Add,
    /// `$union` (each cell a one-item list)
    Union,
    /// `$append`
    Append,
    /// `$remove`
    Remove,
    /// `$unset` (the columns whose cell is not empty)
    Unset,
}

/// How CSV rows become updates.
#[derive(Debug, Clone)]
pub struct CsvMapping {
    /// Column holding the distinct_id (users) or the group id (groups).
    pub id_column: String,
    /// The group key, for `/groups`.
    pub group_key: Option<String>,
    /// The operation.
    pub op: CsvOp,
}

/// One record read, or why it could not be read.
#[derive(Debug)]
pub enum Item {
    /// An update, with its original text.
    Update(Update, String),
    /// A line that could not become an update.
    Bad {
        /// The original text (lossy UTF-8).
        original: String,
        /// Why.
        reason: String,
    },
    /// A blank line (skipped).
    Blank,
}

/// A record and where it came from.
#[derive(Debug)]
pub struct Record {
    /// Index of the input in the list of inputs.
    pub file: usize,
    /// 1-based line (CSV: the row's line).
    pub line: u64,
    /// What was read.
    pub item: Item,
}

/// Counts the bytes read from the underlying file (compressed bytes for `.gz`), for
/// progress and ETA.
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// An opened input.
pub struct Input {
    /// Name for messages and the failure file.
    pub name: String,
    /// Its size on disk, if known.
    pub size: Option<u64>,
    reader: Box<dyn BufRead>,
    format: Format,
}

/// Opens `path` (`-` for stdin), detecting the format from the extension unless given.
pub fn open(path: &str, format: Option<Format>, counter: Arc<AtomicU64>) -> io::Result<Input> {
    let (raw, size): (Box<dyn Read>, Option<u64>) = if path == "-" {
        (Box::new(io::stdin().lock()), None)
    } else {
        let f = File::open(path)?;
        let meta = f.metadata()?;
        if meta.is_dir() {
            return Err(io::Error::other("it is a directory, not a file"));
        }
        (Box::new(f), Some(meta.len()).filter(|_| meta.is_file()))
    };
    let counted = Counting {
        inner: raw,
        count: counter,
    };
    let lower = path.to_ascii_lowercase();
    let gz = lower.ends_with(".gz");
    let stem = lower.strip_suffix(".gz").unwrap_or(&lower);
    let mut reader: Box<dyn BufRead> = if gz {
        Box::new(BufReader::with_capacity(
            64 * 1024,
            flate2::read::MultiGzDecoder::new(BufReader::new(counted)),
        ))
    } else {
        Box::new(BufReader::with_capacity(64 * 1024, counted))
    };
    let format = match format {
        Some(f) => f,
        None => match Path::new(stem).extension().and_then(|e| e.to_str()) {
            Some("csv") => Format::Csv,
            Some("json") => {
                // `.json` holds an array, or NDJSON: look at the first byte that matters.
                let buf = reader.fill_buf()?;
                let first = buf
                    .iter()
                    .find(|b| !(b.is_ascii_whitespace() || matches!(b, 0xEF | 0xBB | 0xBF)));
                if first == Some(&b'[') {
                    Format::Json
                } else {
                    Format::Ndjson
                }
            }
            _ => Format::Ndjson,
        },
    };
    Ok(Input {
        name: path.to_owned(),
        size,
        reader,
        format,
    })
}

/// The records of one input, lazily.
pub fn records(
    input: Input,
    file: usize,
    csv: Option<&CsvMapping>,
) -> Box<dyn Iterator<Item = Record>> {
    match input.format {
        Format::Ndjson => Box::new(Ndjson {
            reader: input.reader,
            file,
            line: 0,
            done: false,
            binary_run: 0,
        }),
        Format::Json => Box::new(JsonArray::new(input.reader, file)),
        Format::Csv => match csv {
            Some(mapping) => Box::new(CsvRows::new(input.reader, file, mapping.clone())),
            None => Box::new(std::iter::once(Record {
                file,
                line: 1,
                item: Item::Bad {
                    original: String::new(),
                    reason: "CSV input needs --distinct-id-column (or --groups with --group-key and --group-id-column)".into(),
                },
            })),
        },
    }
}

/// Parses one JSON update object.
fn parse_update(bytes: &[u8]) -> Item {
    let original = String::from_utf8_lossy(bytes).into_owned();
    if let Err(e) = std::str::from_utf8(bytes) {
        return Item::Bad {
            original,
            reason: format!("invalid UTF-8: {e}"),
        };
    }
    match serde_json::from_slice::<Json>(bytes) {
        Ok(v @ Json::Object(_)) => Item::Update(Update::raw(v), original),
        Ok(other) => Item::Bad {
            original,
            reason: format!("expected an update object, found {}", kind(&other)),
        },
        Err(e) => {
            let reason = if e.to_string().contains("number out of range") {
                format!("number out of range (NaN and Infinity have no JSON form): {e}")
            } else {
                format!("malformed JSON: {e}")
            };
            Item::Bad { original, reason }
        }
    }
}

fn kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// Longest line or array element read: Mixpanel takes 1 MB per update, so anything far
/// beyond is an error, not a reason to hold gigabytes.
const MAX_LINE_BYTES: u64 = 8 * 1024 * 1024;

/// Lines in a row that are not UTF-8 or hold a NUL byte after which the rest of a file is
/// taken for binary and skipped (saying so), rather than copied line by line into the
/// failure file.
const BINARY_LINES_IN_A_ROW: u32 = 32;

/// Whether a line looks like binary data rather than text.
fn looks_binary(bytes: &[u8]) -> bool {
    bytes.contains(&0) || std::str::from_utf8(bytes).is_err()
}

struct Ndjson {
    reader: Box<dyn BufRead>,
    file: usize,
    line: u64,
    done: bool,
    binary_run: u32,
}

impl Iterator for Ndjson {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        if self.done {
            return None;
        }
        let mut buf = Vec::new();
        match (&mut self.reader)
            .take(MAX_LINE_BYTES)
            .read_until(b'\n', &mut buf)
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
                        original: String::from_utf8_lossy(&buf).into_owned(),
                        reason: format!(
                            "line longer than {MAX_LINE_BYTES} bytes (an update is at most 1 MB)"
                        ),
                    },
                })
            }
            Ok(_) => {
                self.line += 1;
                let mut bytes: &[u8] = &buf;
                if self.line == 1 {
                    bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
                }
                let bytes = bytes.trim_ascii();
                if looks_binary(bytes) {
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
                let item = if bytes.is_empty() {
                    Item::Blank
                } else {
                    parse_update(bytes)
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

/// Splits a top-level JSON array into its elements as bytes, tracking strings and depth,
/// so a huge array streams and one bad element fails alone.
struct JsonArray {
    reader: Box<dyn BufRead>,
    file: usize,
    line: u64,
    started: bool,
    done: bool,
}

impl JsonArray {
    fn new(reader: Box<dyn BufRead>, file: usize) -> Self {
        JsonArray {
            reader,
            file,
            line: 1,
            started: false,
            done: false,
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
            item: parse_update(&element),
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

struct CsvRows {
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
    fn new(reader: Box<dyn BufRead>, file: usize, mapping: CsvMapping) -> Self {
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
