//! Encodes the workload repeatedly with one method, for `perf stat` / callgrind:
//! `encode_only engage|value|derive|none ITERATIONS`. Workload construction is the same
//! for every method, so differences in counts are the encoders'.
//!
//! `build_set_from` and `build_derive` run the `build_encode` group's whole path instead,
//! from a user's struct to bodies, on 20,000 customers.

use std::hint::black_box;

use engage_benches::{Envelope, customers, to_derived, to_update, to_value, workload};
use engage_core::{BatchConfig, Batcher, Endpoint, Token, Update};

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
    let mut total = 0usize;
    for _ in 0..iterations {
        match method.as_str() {
            "engage" => {
                let mut batcher = Batcher::new(BatchConfig::new(
                    Token::new(TOKEN).unwrap(),
                    Endpoint::Engage,
                ));
                for u in &updates {
                    if let Some(b) = batcher.push(u).unwrap() {
                        total += b.body().len();
                    }
                }
                total += batcher.finish().map_or(0, |b| b.body().len());
            }
            "value" => {
                for chunk in values.chunks(2000) {
                    let mut body = Vec::with_capacity(chunk.len() * 160);
                    serde_json::to_writer(&mut body, chunk).unwrap();
                    total += body.len();
                }
            }
            "derive" => {
                for chunk in derived.chunks(2000) {
                    let mut body = Vec::with_capacity(chunk.len() * 160);
                    serde_json::to_writer(&mut body, chunk).unwrap();
                    total += body.len();
                }
            }
            "build_set_from" => {
                let mut batcher = Batcher::new(BatchConfig::new(
                    Token::new(TOKEN).unwrap(),
                    Endpoint::Engage,
                ));
                for (id, c) in &people {
                    let u = Update::user(id.as_str()).set_from(c).unwrap();
                    if let Some(b) = batcher.push(&u).unwrap() {
                        total += b.body().len();
                    }
                }
                total += batcher.finish().map_or(0, |b| b.body().len());
            }
            "build_derive" => {
                for chunk in people.chunks(2000) {
                    let records: Vec<Envelope<'_>> = chunk
                        .iter()
                        .map(|(id, c)| Envelope {
                            token: TOKEN,
                            distinct_id: id,
                            set: c,
                        })
                        .collect();
                    let mut body = Vec::with_capacity(chunk.len() * 200);
                    serde_json::to_writer(&mut body, &records).unwrap();
                    total += body.len();
                }
            }
            "none" => {}
            other => panic!("unknown method {other}"),
        }
    }
    black_box(total);
    println!("{method}: {total} bytes");
}
