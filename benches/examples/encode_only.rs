//! Encodes the workload repeatedly with one method, for `perf stat` / callgrind:
//! `encode_only engage|value|derive|none ITERATIONS`. Workload construction is the same
//! for every method, so differences in counts are the encoders'.
//!
//! `build_set_from`, `build_properties`, `build_derive` and `build_value` run the
//! `build_encode` group's whole paths instead, from a user's struct to bodies, on 20,000
//! customers; `ingest`, `ingest_value` and `ingest_syntax_only` the `ingest` group's, on the workload as NDJSON.

use std::hint::black_box;

use engage_benches::paths::{
    Build, derive_build, engage_build, engage_encode, engage_ingest, serde_encode, syntax_only,
    value_build, value_ingest,
};
use engage_benches::{customers, to_derived, to_update, to_value, workload};
use engage_core::Update;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

fn main() {
    let mut args = std::env::args().skip(1);
    let method = args.next().unwrap_or_else(|| "engage".into());
    let iterations: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(50);
    let recs = workload(20_000, 42);
    let updates: Vec<Update> = recs.iter().map(to_update).collect();
    let values: Vec<serde_json::Value> = recs.iter().map(|r| to_value(r, TOKEN)).collect();
    let derived: Vec<_> = recs.iter().map(|r| to_derived(r, TOKEN)).collect();
    let people = customers(20_000, 7);
    let mut ndjson = Vec::new();
    for r in &recs {
        serde_json::to_writer(&mut ndjson, &to_value(r, TOKEN)).expect("serializable");
        ndjson.push(b'\n');
    }
    let mut total = 0usize;
    for _ in 0..iterations {
        total += match method.as_str() {
            "engage" => engage_encode(TOKEN, &updates),
            "value" => serde_encode(&values),
            "derive" => serde_encode(&derived),
            "build_set_from" => engage_build(TOKEN, &people, Build::SetFrom),
            "build_properties" => engage_build(TOKEN, &people, Build::Properties),
            "build_push_set_from" => engage_build(TOKEN, &people, Build::PushSetFrom),
            "build_derive" => derive_build(TOKEN, &people),
            "build_value" => value_build(TOKEN, &people),
            "ingest" => engage_ingest(TOKEN, &ndjson),
            "ingest_value" => value_ingest(&ndjson),
            "ingest_syntax_only" => syntax_only(&ndjson),
            "none" => 0,
            other => panic!("unknown method {other}"),
        };
    }
    black_box(total);
    println!("{method}: {total} bytes");
}
