//! One id per line (engage delete): each non-blank line names a profile.

use std::io::BufRead;
use std::sync::Arc;

use serde_json::{Map, Value as Json};

use super::{Item, MAX_LINE_BYTES, Record, Shape, shaped};

pub(super) struct Ids {
    reader: Box<dyn BufRead + Send>,
    file: usize,
    line: u64,
    done: bool,
    shape: Arc<Shape>,
}

impl Ids {
    pub(super) fn new(reader: Box<dyn BufRead + Send>, file: usize, shape: Arc<Shape>) -> Self {
        Ids {
            reader,
            file,
            line: 0,
            done: false,
            shape,
        }
    }
}

impl Iterator for Ids {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        if self.done {
            return None;
        }
        let mut buf = Vec::new();
        let read =
            std::io::Read::take(&mut self.reader, MAX_LINE_BYTES).read_until(b'\n', &mut buf);
        self.line += 1;
        let item = match read {
            Ok(0) => {
                self.done = true;
                return None;
            }
            Err(e) => {
                self.done = true;
                Item::Bad {
                    original: String::new(),
                    reason: format!("read error, rest of the file skipped: {e}"),
                }
            }
            Ok(_) => match std::str::from_utf8(&buf) {
                Err(e) => Item::Bad {
                    original: String::from_utf8_lossy(&buf).into_owned(),
                    reason: format!("invalid UTF-8: {e}"),
                },
                Ok(text) => {
                    let id = text.trim_start_matches('\u{feff}').trim();
                    if id.is_empty() {
                        Item::Blank
                    } else {
                        let field = self.shape.id_fields()[0].to_owned();
                        let mut record = Map::new();
                        record.insert(field, Json::String(id.to_owned()));
                        shaped(&self.shape, record, Vec::new(), id.to_owned())
                    }
                }
            },
        };
        Some(Record {
            file: self.file,
            line: self.line,
            item,
        })
    }
}
