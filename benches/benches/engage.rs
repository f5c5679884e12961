//! engage's benchmarks, each beside its baseline in the same group and the same run.
//!
//! cargo bench -p engage-benches --bench engage -- encode   (or build_encode, ingest, parse, batch, import, client)

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use engage_benches::paths::{
    Build, ImportRig, Transport, derive_build, engage_build, engage_encode, engage_ingest,
    engage_ingest_updates, serde_encode, syntax_only, value_build, value_ingest,
};
use engage_benches::{customers, to_derived, to_update, to_value, workload};
use engage_core::batch::Batcher;
use engage_core::delivery::Concurrency;
use engage_core::exchange::{ParseOptions, parse_response};
use engage_core::{BatchConfig, Endpoint, Token, Update};

const TOKEN: &str = "0123456789abcdef0123456789abcdef";
const N: usize = 20_000;

fn config() -> BatchConfig {
    BatchConfig::new(Token::new(TOKEN).unwrap(), Endpoint::Engage)
}

/// Pre-built records into 2000-record bodies. engage's `Update`s hold the JSON encoded
/// when they were built, so this times body assembly; `build_encode` times everything.
fn encode(c: &mut Criterion) {
    let recs = workload(N, 42);
    let updates: Vec<Update> = recs.iter().map(to_update).collect();
    let values: Vec<serde_json::Value> = recs.iter().map(|r| to_value(r, TOKEN)).collect();
    let derived: Vec<_> = recs.iter().map(|r| to_derived(r, TOKEN)).collect();
    let bytes = engage_encode(TOKEN, &updates);
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::ElementsAndBytes {
        elements: N as u64,
        bytes: bytes as u64,
    });
    g.bench_function("engage", |b| {
        b.iter(|| engage_encode(TOKEN, black_box(&updates)))
    });
    g.bench_function("serde_json_value", |b| {
        b.iter(|| serde_encode(black_box(&values)))
    });
    g.bench_function("serde_derive", |b| {
        b.iter(|| serde_encode(black_box(&derived)))
    });
    g.finish();
}

fn build_encode(c: &mut Criterion) {
    let people = customers(N, 7);
    let mut g = c.benchmark_group("build_encode");
    let bytes = engage_build(TOKEN, &people, Build::SetFrom);
    assert_eq!(bytes, engage_build(TOKEN, &people, Build::Properties));
    assert_eq!(bytes, engage_build(TOKEN, &people, Build::PushSetFrom));
    g.throughput(Throughput::ElementsAndBytes {
        elements: N as u64,
        bytes: bytes as u64,
    });
    g.bench_function("engage_set_from", |b| {
        b.iter(|| engage_build(TOKEN, black_box(&people), Build::SetFrom))
    });
    g.bench_function("engage_push_set_from", |b| {
        b.iter(|| engage_build(TOKEN, black_box(&people), Build::PushSetFrom))
    });
    g.bench_function("engage_properties", |b| {
        b.iter(|| engage_build(TOKEN, black_box(&people), Build::Properties))
    });
    g.bench_function("serde_json_value", |b| {
        b.iter(|| value_build(TOKEN, black_box(&people)))
    });
    g.bench_function("serde_derive", |b| {
        b.iter(|| derive_build(TOKEN, black_box(&people)))
    });
    g.finish();
}

/// NDJSON text of update objects into request bodies: the CLI's path (parse, check, write)
/// against parsing each line into a `serde_json::Value` and writing it back.
fn ingest(c: &mut Criterion) {
    let mut ndjson = Vec::new();
    for r in workload(N, 42) {
        serde_json::to_writer(&mut ndjson, &to_value(&r, TOKEN)).unwrap();
        ndjson.push(b'\n');
    }
    let mut g = c.benchmark_group("ingest");
    g.throughput(Throughput::ElementsAndBytes {
        elements: N as u64,
        bytes: ndjson.len() as u64,
    });
    g.bench_function("engage", |b| {
        b.iter(|| engage_ingest(TOKEN, black_box(&ndjson)))
    });
    g.bench_function("engage_update", |b| {
        b.iter(|| engage_ingest_updates(TOKEN, black_box(&ndjson)))
    });
    g.bench_function("serde_json_value", |b| {
        b.iter(|| value_ingest(black_box(&ndjson)))
    });
    g.bench_function("serde_json_syntax_only", |b| {
        b.iter(|| syntax_only(black_box(&ndjson)))
    });
    g.finish();
}

fn parse(c: &mut Criterion) {
    let opts = ParseOptions {
        max_retry_after: Duration::from_secs(60),
        wall_now: SystemTime::now(),
    };
    let strict = {
        let failed: Vec<_> = (0..100)
            .map(|i| serde_json::json!({"index": i * 3, "$distinct_id": format!("user-{i}"), "field": "$add", "message": "'$add' value must be a number"}))
            .collect();
        serde_json::json!({"code": 400, "error": "some data points in the request failed validation", "status": "Bad Request", "num_records_imported": 1900, "failed_records": failed}).to_string()
    };
    let answers = [
        ("plain", 200, "1".to_owned()),
        ("verbose", 200, r#"{"error":null,"status":1}"#.to_owned()),
        ("strict_100_failed", 400, strict),
    ];
    let mut g = c.benchmark_group("parse");
    for (name, status, body) in answers {
        let mut r = http::Response::new(bytes::Bytes::from(body.clone()));
        *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
        g.throughput(Throughput::ElementsAndBytes {
            elements: 1,
            bytes: body.len() as u64,
        });
        g.bench_function(name, |b| b.iter(|| parse_response(black_box(&r), opts)));
    }
    g.finish();
}

fn batch(c: &mut Criterion) {
    let updates: Vec<Update> = workload(100_000, 9).iter().map(to_update).collect();
    let mut g = c.benchmark_group("batch");
    let bytes = engage_encode(TOKEN, &updates);
    g.throughput(Throughput::ElementsAndBytes {
        elements: updates.len() as u64,
        bytes: bytes as u64,
    });
    // 64 KiB bodies: the byte cap bites before the 2000-record limit.
    for (name, max_bytes) in [
        ("records_limit_2000", 2 << 20),
        ("byte_cap_64KiB", 64 << 10),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut batcher = Batcher::new(config().max_body_bytes(max_bytes));
                let mut n = 0;
                for u in black_box(&updates) {
                    if batcher.push(u).unwrap().is_some() {
                        n += 1;
                    }
                }
                n + usize::from(batcher.finish().is_some())
            })
        });
    }
    g.finish();
}

fn import(c: &mut Criterion) {
    let updates: Vec<Update> = workload(100_000, 11).iter().map(to_update).collect();
    let rig = ImportRig::start();
    let mut g = c.benchmark_group("import");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Elements(updates.len() as u64));
    for concurrency in [1, 4] {
        for transport in Transport::ALL {
            g.bench_function(format!("{}_c{concurrency}", transport.name()), |b| {
                b.iter_batched(
                    || {
                        rig.emulator.reset();
                        updates.clone()
                    },
                    |u| {
                        let summary = rig.import(transport, rig.config(TOKEN, concurrency), u);
                        assert_eq!(summary.accepted, 100_000, "{summary:?}");
                    },
                    BatchSize::PerIteration,
                )
            });
        }
    }
    g.finish();
}

/// The application client: 1M updates sent one at a time from 4 threads (batched in the
/// background, then a shutdown) against the bulk import of the same updates, per
/// transport, into the in-process emulator.
fn client(c: &mut Criterion) {
    const N: usize = 1_000_000;
    let updates: Vec<Update> = workload(N, 13).iter().map(to_update).collect();
    let rig = ImportRig::start();
    let mut g = c.benchmark_group("client");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(15));
    g.throughput(Throughput::Elements(N as u64));
    for transport in Transport::ALL {
        g.bench_function(format!("client_{}", transport.name()), |b| {
            b.iter_batched(
                || {
                    rig.emulator.reset();
                    updates.clone()
                },
                |u| {
                    let summary = rig.client_sends(transport, rig.client_config(TOKEN), u, 4);
                    assert_eq!(summary.accepted, N as u64, "{summary:?}");
                },
                BatchSize::PerIteration,
            )
        });
        g.bench_function(format!("bulk_{}", transport.name()), |b| {
            b.iter_batched(
                || {
                    rig.emulator.reset();
                    updates.clone()
                },
                |u| {
                    let config = rig.config(TOKEN, 4).concurrency(Concurrency::default());
                    let summary = rig.import(transport, config, u);
                    assert_eq!(summary.accepted, N as u64, "{summary:?}");
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    encode,
    build_encode,
    ingest,
    parse,
    batch,
    import,
    client
);
criterion_main!(benches);
