//! serde_json's syntax check (`IgnoredAny`) of every line of an NDJSON file, read as
//! `engage import` reads it (a 64 KiB buffered reader, each line found with `memchr` and
//! checked where it lies; a line across two fills is copied out): what a scalar
//! validating parser spends only to read the same lines, with no rule checked, nothing
//! written and nothing accounted. A floor to set `engage import --dry-run` against
//! (`benches/README.md`, tenth session):
//!
//! ```text
//! cargo build --release -p engage-benches --example syntax_only
//! perf stat -e task-clock target/release/examples/syntax_only /tmp/engage-cpu-500000.ndjson
//! ```

use std::io::BufRead;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: syntax_only FILE.ndjson")?;
    let mut reader = std::io::BufReader::with_capacity(64 * 1024, std::fs::File::open(path)?);
    let (mut lines, mut invalid) = (0u64, 0u64);
    let mut check = |line: &[u8]| {
        let text = line.trim_ascii();
        if !text.is_empty() {
            lines += 1;
            if serde_json::from_slice::<serde::de::IgnoredAny>(text).is_err() {
                invalid += 1;
            }
        }
    };
    // The start of a line the previous fill ended in.
    let mut carried = Vec::new();
    loop {
        let available = reader.fill_buf()?;
        let filled = available.len();
        if filled == 0 {
            break;
        }
        let mut rest = available;
        while let Some(at) = memchr::memchr(b'\n', rest) {
            if carried.is_empty() {
                check(&rest[..at]);
            } else {
                carried.extend_from_slice(&rest[..at]);
                check(&carried);
                carried.clear();
            }
            rest = &rest[at + 1..];
        }
        carried.extend_from_slice(rest);
        reader.consume(filled);
    }
    check(&carried);
    println!("{lines} lines, {invalid} not JSON");
    Ok(())
}
