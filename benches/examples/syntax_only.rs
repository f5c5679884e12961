//! serde_json's syntax check (`IgnoredAny`) of every line of an NDJSON file, read line by
//! line as `engage import` reads it: what a scalar validating parser spends only to read
//! the same lines, with no rule checked, nothing written and nothing accounted. A floor to
//! set `engage import --dry-run` against (`benches/README.md`, tenth session):
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
    let mut reader = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(path)?);
    let mut line = Vec::new();
    let (mut lines, mut invalid) = (0u64, 0u64);
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let text = line.trim_ascii();
        if text.is_empty() {
            continue;
        }
        lines += 1;
        if serde_json::from_slice::<serde::de::IgnoredAny>(text).is_err() {
            invalid += 1;
        }
    }
    println!("{lines} lines, {invalid} not JSON");
    Ok(())
}
