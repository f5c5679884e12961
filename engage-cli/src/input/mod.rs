//! Reading input files: NDJSON, JSON arrays and CSV, each optionally gzip-compressed, as a
//! stream of records with their file and line, never the whole file in memory.

mod csv;
mod json_array;
mod ndjson;

use self::csv::CsvRows;
use json_array::JsonArray;
use ndjson::Ndjson;

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use engage_core::Update;
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
    match engage_core::validate::parse_record(bytes) {
        Ok(parsed) if parsed.value.is_object() => {
            Item::Update(Update::raw_parsed(parsed), original)
        }
        Ok(other) => Item::Bad {
            original,
            reason: format!("expected an update object, found {}", kind(&other.value)),
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
