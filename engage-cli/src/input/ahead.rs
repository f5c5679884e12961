//! Reading on a thread of its own: the records of regular files are read, checked and
//! made into updates on a second core while the importer batches and sends, handed over
//! a few hundred at a time (a record at a time would cost more than it saves).

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use super::{Item, Record, Records};

/// Records per hand-over.
const CHUNK: usize = 256;
/// Hand-overs read ahead of the importer: a bound on what reading ahead holds.
const CHUNKS_AHEAD: usize = 8;

/// The records of an iterator, read on a thread of its own, in order.
pub struct ReadAhead {
    chunks: Receiver<Vec<Record>>,
    chunk: std::vec::IntoIter<Record>,
    thread: Option<JoinHandle<()>>,
    /// Where the last record handed over came from: a failure is placed after it.
    last: (usize, u64),
}

impl ReadAhead {
    /// Starts reading `records` on a new thread.
    pub fn spawn(records: impl Records + 'static) -> std::io::Result<ReadAhead> {
        let (tx, rx) = sync_channel(CHUNKS_AHEAD);
        let thread = std::thread::Builder::new()
            .name("engage-read".into())
            .spawn(move || read(records, &tx))?;
        Ok(ReadAhead {
            chunks: rx,
            chunk: Vec::new().into_iter(),
            thread: Some(thread),
            last: (0, 0),
        })
    }
}

fn read(mut records: impl Records, to: &SyncSender<Vec<Record>>) {
    loop {
        let mut chunk = Vec::with_capacity(CHUNK);
        chunk.extend(std::iter::from_fn(|| records.next_record(None)).take(CHUNK));
        // Stops when the input ends, or when the importer is gone (it stopped reading).
        if chunk.is_empty() || to.send(chunk).is_err() {
            return;
        }
    }
}

impl Iterator for ReadAhead {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        loop {
            if let Some(record) = self.chunk.next() {
                self.last = (record.file, record.line);
                return Some(record);
            }
            match self.chunks.recv() {
                Ok(chunk) => self.chunk = chunk.into_iter(),
                Err(_) => {
                    // The reader is done; if it failed, say so rather than end quietly.
                    let thread = self.thread.take()?;
                    let panic = thread.join().err()?;
                    let why = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    // Records read since the last hand-over went down with the reader:
                    // everything after the last record handed over is named as not read.
                    let (file, line) = self.last;
                    return Some(Record {
                        file,
                        line,
                        item: Item::Bad {
                            original: String::new(),
                            reason: format!(
                                "reading the input failed after this line ({why}): nothing after it was read"
                            ),
                        },
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(line: u64) -> Record {
        Record {
            file: 0,
            line,
            item: Item::Blank,
        }
    }

    #[test]
    fn records_come_in_order_all_of_them() {
        let lines: Vec<u64> = ReadAhead::spawn((1..=10_000).map(record))
            .unwrap()
            .map(|r| r.line)
            .collect();
        assert_eq!(lines, (1..=10_000).collect::<Vec<_>>());
    }

    #[test]
    fn a_reader_that_fails_is_reported_not_taken_for_the_end() {
        let records = (1..=300).map(|i| {
            assert!(i < 300, "the disk went away");
            record(i)
        });
        let got: Vec<Record> = ReadAhead::spawn(records).unwrap().collect();
        assert_eq!(got.len(), 257, "the first chunk, then the failure");
        let Item::Bad { reason, .. } = &got[256].item else {
            panic!("no failure reported");
        };
        assert!(reason.contains("the disk went away"), "{reason}");
        // Placed after the last record handed over, so a rerun knows where to start.
        assert_eq!(got[256].line, got[255].line);
        assert_eq!(got[255].line, 256);
    }
}
