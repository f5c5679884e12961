//! Apache Parquet, read a row group at a time (the memory of one batch of rows), each row a
//! flat record. Column types map to JSON: integers, floats and decimals to numbers, text to
//! strings, dates and timestamps to Mixpanel's date text (`YYYY-MM-DDTHH:MM:SS`, UTC),
//! lists to lists, structs to objects, nulls to null (or dropped with --remove-nulls).

use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Date64Type, Decimal128Type, Float16Type, Float32Type, Float64Type, Int8Type,
    Int16Type, Int32Type, Int64Type, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use serde_json::{Map, Value as Json};

use super::{Item, Record, Shape, shaped};

/// Rows converted at a time.
const BATCH_ROWS: usize = 1024;

pub(super) struct ParquetRows {
    reader: Option<ParquetRecordBatchReader>,
    /// Why the file cannot be read, said once.
    failure: Option<String>,
    batch: Option<RecordBatch>,
    at: usize,
    row: u64,
    total_rows: u64,
    size: u64,
    counted: u64,
    counter: Arc<AtomicU64>,
    file: usize,
    shape: Arc<Shape>,
}

impl ParquetRows {
    pub(super) fn new(f: File, file: usize, counter: Arc<AtomicU64>, shape: Arc<Shape>) -> Self {
        let size = f.metadata().map(|m| m.len()).unwrap_or(0);
        let opened = ParquetRecordBatchReaderBuilder::try_new(f).and_then(|b| {
            let rows = b.metadata().file_metadata().num_rows().max(0) as u64;
            b.with_batch_size(BATCH_ROWS).build().map(|r| (r, rows))
        });
        let (reader, total_rows, failure) = match opened {
            Ok((r, rows)) => (Some(r), rows, None),
            Err(e) => (None, 0, Some(format!("not a readable Parquet file: {e}"))),
        };
        ParquetRows {
            reader,
            failure,
            batch: None,
            at: 0,
            row: 0,
            total_rows,
            size,
            counted: 0,
            counter,
            file,
            shape,
        }
    }

    fn bad(&self, line: u64, reason: String) -> Record {
        Record {
            file: self.file,
            line,
            item: Item::Bad {
                original: String::new(),
                reason,
            },
        }
    }

    /// Progress in bytes, in proportion to the rows read.
    fn count(&mut self) {
        if let Some(now) = self
            .size
            .saturating_mul(self.row)
            .checked_div(self.total_rows)
        {
            self.counter
                .fetch_add(now.saturating_sub(self.counted), Ordering::Relaxed);
            self.counted = now;
        }
    }
}

impl Iterator for ParquetRows {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        if let Some(reason) = self.failure.take() {
            return Some(self.bad(1, reason));
        }
        loop {
            if let Some(batch) = &self.batch
                && self.at < batch.num_rows()
            {
                let at = self.at;
                self.at += 1;
                self.row += 1;
                let (record, problem) = row(batch, at, &self.shape);
                let original = Json::Object(record.clone()).to_string();
                let item = match problem {
                    Some(reason) => Item::Bad { original, reason },
                    None => shaped(&self.shape, record, Vec::new(), original),
                };
                return Some(Record {
                    file: self.file,
                    line: self.row,
                    item,
                });
            }
            self.count();
            match self.reader.as_mut()?.next() {
                None => {
                    self.reader = None;
                    return None;
                }
                Some(Ok(batch)) => {
                    self.batch = Some(batch);
                    self.at = 0;
                }
                Some(Err(e)) => {
                    self.reader = None;
                    return Some(self.bad(
                        self.row + 1,
                        format!("unreadable Parquet data, rest of the file skipped: {e}"),
                    ));
                }
            }
        }
    }
}

/// Row `i` of `batch` as a flat record, and the first cell that has no JSON form.
fn row(batch: &RecordBatch, i: usize, shape: &Shape) -> (Map<String, Json>, Option<String>) {
    let mut record = Map::new();
    let mut problem = None;
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if shape.drops.contains(field.name()) {
            continue;
        }
        match cell(column.as_ref(), i) {
            Ok(v) => {
                record.insert(field.name().clone(), v);
            }
            Err(e) => {
                problem.get_or_insert_with(|| format!("column {:?} holds {e}", field.name()));
            }
        }
    }
    (record, problem)
}

/// Mixpanel's date text.
fn date_text(dt: Option<chrono::NaiveDateTime>) -> Result<Json, String> {
    dt.map(|d| Json::String(d.format("%Y-%m-%dT%H:%M:%S").to_string()))
        .ok_or_else(|| "a date out of range".to_owned())
}

fn float(f: f64) -> Result<Json, String> {
    serde_json::Number::from_f64(f)
        .map(Json::Number)
        .ok_or_else(|| format!("{f}, which has no JSON form"))
}

/// One cell as JSON.
fn cell(a: &dyn Array, i: usize) -> Result<Json, String> {
    use arrow_array::temporal_conversions as t;
    if a.is_null(i) {
        return Ok(Json::Null);
    }
    Ok(match a.data_type() {
        DataType::Null => Json::Null,
        DataType::Boolean => Json::Bool(a.as_boolean().value(i)),
        DataType::Int8 => Json::from(a.as_primitive::<Int8Type>().value(i)),
        DataType::Int16 => Json::from(a.as_primitive::<Int16Type>().value(i)),
        DataType::Int32 => Json::from(a.as_primitive::<Int32Type>().value(i)),
        DataType::Int64 => Json::from(a.as_primitive::<Int64Type>().value(i)),
        DataType::UInt8 => Json::from(a.as_primitive::<UInt8Type>().value(i)),
        DataType::UInt16 => Json::from(a.as_primitive::<UInt16Type>().value(i)),
        DataType::UInt32 => Json::from(a.as_primitive::<UInt32Type>().value(i)),
        DataType::UInt64 => Json::from(a.as_primitive::<UInt64Type>().value(i)),
        DataType::Float16 => float(a.as_primitive::<Float16Type>().value(i).to_f64())?,
        DataType::Float32 => float(f64::from(a.as_primitive::<Float32Type>().value(i)))?,
        DataType::Float64 => float(a.as_primitive::<Float64Type>().value(i))?,
        DataType::Decimal128(_, scale) => {
            let v = a.as_primitive::<Decimal128Type>().value(i);
            float(v as f64 / 10f64.powi(i32::from(*scale)))?
        }
        DataType::Utf8 => Json::String(a.as_string::<i32>().value(i).to_owned()),
        DataType::LargeUtf8 => Json::String(a.as_string::<i64>().value(i).to_owned()),
        DataType::Utf8View => Json::String(a.as_string_view().value(i).to_owned()),
        DataType::Binary => text(a.as_binary::<i32>().value(i))?,
        DataType::LargeBinary => text(a.as_binary::<i64>().value(i))?,
        DataType::Date32 => date_text(t::date32_to_datetime(
            a.as_primitive::<Date32Type>().value(i),
        ))?,
        DataType::Date64 => date_text(t::date64_to_datetime(
            a.as_primitive::<Date64Type>().value(i),
        ))?,
        // Arrow keeps timestamps in UTC whatever zone they are shown in.
        DataType::Timestamp(unit, _) => date_text(match unit {
            TimeUnit::Second => {
                t::timestamp_s_to_datetime(a.as_primitive::<TimestampSecondType>().value(i))
            }
            TimeUnit::Millisecond => {
                t::timestamp_ms_to_datetime(a.as_primitive::<TimestampMillisecondType>().value(i))
            }
            TimeUnit::Microsecond => {
                t::timestamp_us_to_datetime(a.as_primitive::<TimestampMicrosecondType>().value(i))
            }
            TimeUnit::Nanosecond => {
                t::timestamp_ns_to_datetime(a.as_primitive::<TimestampNanosecondType>().value(i))
            }
        })?,
        DataType::List(_) => list(a.as_list::<i32>().value(i).as_ref())?,
        DataType::LargeList(_) => list(a.as_list::<i64>().value(i).as_ref())?,
        DataType::FixedSizeList(_, _) => list(a.as_fixed_size_list().value(i).as_ref())?,
        DataType::Struct(fields) => {
            let s = a.as_struct();
            let mut object = Map::new();
            for (f, column) in fields.iter().zip(s.columns()) {
                object.insert(f.name().clone(), cell(column.as_ref(), i)?);
            }
            Json::Object(object)
        }
        DataType::Dictionary(_, _) => {
            let d = a.as_any_dictionary();
            let key = d.normalized_keys()[i];
            cell(d.values().as_ref(), key)?
        }
        other => {
            return Err(format!(
                "type {other}, which has no JSON form here (leave the column out with --drop)"
            ));
        }
    })
}

fn list(items: &dyn Array) -> Result<Json, String> {
    (0..items.len())
        .map(|j| cell(items, j))
        .collect::<Result<Vec<_>, _>>()
        .map(Json::Array)
}

/// Bytes that are UTF-8 text, as a string.
fn text(bytes: &[u8]) -> Result<Json, String> {
    std::str::from_utf8(bytes)
        .map(|s| Json::String(s.to_owned()))
        .map_err(|_| "binary data that is not UTF-8 text, which has no JSON form".to_owned())
}
