//! Reading input files: NDJSON, JSON arrays, CSV, TSV (each optionally gzip-compressed),
//! Parquet and lists of ids, as a stream of records with their file and line (row for
//! Parquet), never the whole file in memory. Records that are already update objects go
//! on as they are; flat records are shaped into updates ([`shape`]).

mod ahead;
mod csv;
mod ids;
mod json_array;
mod ndjson;
mod parquet;
pub mod shape;

pub use ahead::ReadAhead;

use self::csv::CsvRows;
use json_array::JsonArray;
use ndjson::Ndjson;
pub use shape::Shape;

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use engage_core::Update;
use serde_json::Value as Json;
use shape::kind;

/// Input formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line: an update, or a flat record.
    Ndjson,
    /// A JSON array of objects.
    Json,
    /// CSV with a header row.
    Csv,
    /// Tab-separated values with a header row (no quoting: a field holds no tab or newline).
    Tsv,
    /// Apache Parquet (a file, not standard input), read a row group at a time.
    Parquet,
    /// One id per line (engage delete).
    Ids,
}

/// One record read, or why it could not be read.
#[derive(Debug)]
pub enum Item {
    /// An update, with its original text; `None` for an update that holds its text (see
    /// [`Update::json_text`]: minified then), which the ledger copies when it keeps it.
    Update(Update, Option<Bytes>),
    /// A line that could not become an update.
    Bad {
        /// The original text (lossy UTF-8).
        original: String,
        /// Why.
        reason: String,
    },
    /// A blank line (skipped).
    Blank,
    /// A line of update JSON handed as text to the taker given to
    /// [`Records::next_record`], which accounted for it.
    Taken,
}

/// Takes the text of a line that may be an update object, given its input and line,
/// before its reader parses it: `true` when it took the line (and accounted for it),
/// `false` when engage-core's one-pass reader declined it: the reader then parses it as
/// always (so the reader's own one-pass read is not repeated).
pub type TakeText<'a> = dyn FnMut(usize, u64, &[u8]) -> bool + 'a;

/// A stream of records: any iterator of them, or a reader that offers each line of update
/// JSON to a taker as text first (NDJSON: the line goes from the reader's buffer straight
/// into a request body, no update made).
pub trait Records: Send {
    /// The next record. With `take`, a line that may be an update object is offered to it
    /// first: an [`Item::Taken`] record says it took one.
    fn next_record(&mut self, take: Option<&mut TakeText<'_>>) -> Option<Record>;
}

impl<I: Iterator<Item = Record> + Send> Records for I {
    fn next_record(&mut self, _: Option<&mut TakeText<'_>>) -> Option<Record> {
        self.next()
    }
}

/// The records of every input in turn, at most a given number of them (blank and bad
/// lines count).
pub struct Reader {
    inputs: std::iter::Enumerate<std::vec::IntoIter<Input>>,
    current: Option<Box<dyn Records>>,
    shape: Arc<Shape>,
    left: u64,
}

impl Reader {
    /// Reads `inputs` in turn, shaping flat records by `shape`, up to `max` records.
    pub fn new(inputs: Vec<Input>, shape: Arc<Shape>, max: Option<u64>) -> Reader {
        Reader {
            inputs: inputs.into_iter().enumerate(),
            current: None,
            shape,
            left: max.unwrap_or(u64::MAX),
        }
    }
}

impl Records for Reader {
    fn next_record(&mut self, mut take: Option<&mut TakeText<'_>>) -> Option<Record> {
        if self.left == 0 {
            return None;
        }
        loop {
            if let Some(current) = &mut self.current {
                if let Some(record) = current.next_record(take.as_deref_mut()) {
                    self.left -= 1;
                    return Some(record);
                }
                self.current = None;
            }
            let (i, input) = self.inputs.next()?;
            self.current = Some(records(input, i, &self.shape));
        }
    }
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
    reader: Box<dyn BufRead + Send>,
    format: Format,
    /// A Parquet file, read from its end rather than as a stream.
    parquet: Option<(File, Arc<AtomicU64>)>,
}

impl Input {
    /// Its format.
    pub fn format(&self) -> Format {
        self.format
    }
}

/// Opens `path` (`-` for stdin), detecting the format from the extension unless given;
/// `unknown` is the format of a file whose extension says nothing.
pub fn open(
    path: &str,
    format: Option<Format>,
    unknown: Format,
    counter: Arc<AtomicU64>,
) -> io::Result<Input> {
    let lower = path.to_ascii_lowercase();
    if format == Some(Format::Parquet) || (format.is_none() && lower.ends_with(".parquet")) {
        if path == "-" || lower.ends_with(".gz") {
            return Err(io::Error::other(
                "Parquet is read from its end: give a file, not standard input or .gz",
            ));
        }
        let f = File::open(path)?;
        let meta = f.metadata()?;
        if meta.is_dir() {
            return Err(io::Error::other("it is a directory, not a file"));
        }
        return Ok(Input {
            name: path.to_owned(),
            size: Some(meta.len()),
            reader: Box::new(io::empty()),
            format: Format::Parquet,
            parquet: Some((f, counter)),
        });
    }
    let (raw, size): (Box<dyn Read + Send>, Option<u64>) = if path == "-" {
        // Not locked: the reader may run on a thread of its own.
        (Box::new(io::stdin()), None)
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
    let gz = lower.ends_with(".gz");
    let stem = lower.strip_suffix(".gz").unwrap_or(&lower);
    let mut reader: Box<dyn BufRead + Send> = if gz {
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
            Some("tsv" | "tab") => Format::Tsv,
            Some("ndjson" | "jsonl") => Format::Ndjson,
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
            _ => unknown,
        },
    };
    Ok(Input {
        name: path.to_owned(),
        size,
        reader,
        format,
        parquet: None,
    })
}

/// The records of one input, lazily.
pub fn records(input: Input, file: usize, shape: &Arc<Shape>) -> Box<dyn Records> {
    let shape = shape.clone();
    match input.format {
        Format::Ndjson => Box::new(Ndjson::new(input.reader, file, shape)),
        Format::Json => Box::new(JsonArray::new(input.reader, file, shape)),
        Format::Csv => Box::new(CsvRows::new(input.reader, file, b',', shape)),
        Format::Tsv => Box::new(CsvRows::new(input.reader, file, b'\t', shape)),
        Format::Ids => Box::new(ids::Ids::new(input.reader, file, shape)),
        Format::Parquet => match input.parquet {
            Some((f, counter)) => Box::new(parquet::ParquetRows::new(f, file, counter, shape)),
            None => Box::new(std::iter::empty()),
        },
    }
}

/// A flat record (a JSON object without an operation, a row) made into an update.
fn shaped(
    shape: &Shape,
    record: serde_json::Map<String, Json>,
    repeated: Vec<String>,
    original: String,
) -> Item {
    match shape.update(record) {
        Ok(value) => {
            let mut parsed = engage_core::validate::parse_record(b"{}").expect("an empty object");
            parsed.value = value;
            parsed.repeated = repeated;
            Item::Update(Update::raw_parsed(parsed), Some(Bytes::from(original)))
        }
        Err(reason) => Item::Bad { original, reason },
    }
}

/// Parses one JSON object: an update as it is, or a flat record to shape (always, for
/// engage delete: every record names a profile to delete). An update object engage-core's
/// one-pass reader takes (it checks UTF-8 in the strings, where it matters) is copied,
/// minified, into the update; anything else is checked to be UTF-8, copied and parsed.
fn parse_update(bytes: &[u8], shape: &Shape) -> Item {
    if shape.delete.is_none()
        && let Some(update) = Update::from_json_fast(bytes)
    {
        return Item::Update(update, None);
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => parse_text(text.to_owned(), shape),
        Err(e) => not_utf8(bytes, e),
    }
}

/// A record that is not UTF-8: named, with a lossy copy of its text.
fn not_utf8(bytes: &[u8], e: std::str::Utf8Error) -> Item {
    Item::Bad {
        original: String::from_utf8_lossy(bytes).into_owned(),
        reason: format!("invalid UTF-8: {e}"),
    }
}

/// The full parser on one record's text, which becomes its original text as it is.
fn parse_text(original: String, shape: &Shape) -> Item {
    match engage_core::validate::parse_record(original.as_bytes()) {
        Ok(mut parsed) => match &mut parsed.value {
            Json::Object(object) if shape.delete.is_none() && Shape::is_update(object) => {
                Item::Update(Update::raw_parsed(parsed), Some(Bytes::from(original)))
            }
            Json::Object(object) => {
                let record = std::mem::take(object);
                shaped(shape, record, parsed.repeated, original)
            }
            other => Item::Bad {
                original,
                reason: format!("expected an object, found {}", kind(other)),
            },
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

/// Longest line or array element read: Mixpanel takes 1 MB per update, so anything far
/// beyond is an error, not a reason to hold gigabytes.
const MAX_LINE_BYTES: u64 = 8 * 1024 * 1024;

/// Lines in a row that are not UTF-8 or hold a NUL byte after which the rest of a file is
/// taken for binary and skipped (saying so), rather than copied line by line into the
/// failure file.
const BINARY_LINES_IN_A_ROW: u32 = 32;

/// What the readers' tests share.
#[cfg(test)]
pub(crate) mod testing {
    use super::{Item, Record, Shape};

    /// A shape with no option for flat records: update objects go on as they are.
    pub(crate) fn plain_shape() -> Shape {
        Shape {
            groups: false,
            id_field: None,
            group_key: None,
            group_id_field: None,
            op: engage_core::model::OpKind::Set,
            renames: Vec::new(),
            drops: Default::default(),
            tags: Vec::new(),
            remove_nulls: false,
            reserved_names: false,
            delete: None,
        }
    }

    /// A record's line and what it became (its profile, or why it is bad and its text),
    /// for comparing what readers make of the same input.
    pub(crate) fn describe(r: Record) -> (u64, String) {
        let what = match r.item {
            Item::Update(u, _) => format!("update {:?}", u.profile()),
            Item::Bad { original, reason } => format!("bad {reason}: {original}"),
            Item::Blank => "blank".to_owned(),
            Item::Taken => unreachable!("nothing is taken without a taker"),
        };
        (r.line, what)
    }
}
