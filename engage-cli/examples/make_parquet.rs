//! Writes a small Parquet file of flat user records (ids, text with nulls, a timestamp, a
//! list, a decimal, a struct), to try `engage import FILE.parquet`:
//!
//! ```sh
//! cargo run -p engage-cli --example make_parquet -- /tmp/users.parquet
//! engage import /tmp/users.parquet --id-field id --reserved-names --remove-nulls --emulator
//! ```

use std::sync::Arc;

use arrow_array::builder::{ListBuilder, StringBuilder};
use arrow_array::{
    ArrayRef, Decimal128Array, Int64Array, RecordBatch, StringArray, StructArray,
    TimestampMillisecondArray,
};
use arrow_schema::{DataType, Field};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "users.parquet".to_owned());
    let n = 1000;
    let ids = Int64Array::from_iter_values(1..=n);
    let names = StringArray::from_iter((1..=n).map(|i| (i % 7 != 0).then(|| format!("User {i}"))));
    let emails = StringArray::from_iter_values((1..=n).map(|i| format!("user{i}@example.com")));
    // 2024-01-01T00:00:00Z plus an hour per user.
    let signed_up = TimestampMillisecondArray::from_iter_values(
        (0..n).map(|i| 1_704_067_200_000 + i * 3_600_000),
    )
    .with_timezone("UTC");
    let mut tags = ListBuilder::new(StringBuilder::new());
    for i in 0..n {
        if i % 2 == 0 {
            tags.values().append_value("even");
        }
        if i % 3 == 0 {
            tags.values().append_value("third");
        }
        tags.append(true);
    }
    let mrr = Decimal128Array::from_iter_values((0..n).map(|i| i128::from(i % 50) * 1000 + 99))
        .with_precision_and_scale(10, 2)?;
    let country =
        StringArray::from_iter_values((0..n).map(|i| ["GB", "FR", "US", "IN"][i as usize % 4]));
    let address = StructArray::from(vec![(
        Arc::new(Field::new("country", DataType::Utf8, false)),
        Arc::new(country) as ArrayRef,
    )]);
    let batch = RecordBatch::try_from_iter(vec![
        ("id", Arc::new(ids) as ArrayRef),
        ("name", Arc::new(names) as ArrayRef),
        ("email", Arc::new(emails) as ArrayRef),
        ("signed_up", Arc::new(signed_up) as ArrayRef),
        ("tags", Arc::new(tags.finish()) as ArrayRef),
        ("mrr", Arc::new(mrr) as ArrayRef),
        ("address", Arc::new(address) as ArrayRef),
    ])?;
    let file = std::fs::File::create(&path)?;
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(250))
        .build();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), Some(props))?;
    writer.write(&batch)?;
    writer.close()?;
    eprintln!("wrote {n} rows to {path}");
    Ok(())
}
