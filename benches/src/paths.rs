//! The measured paths, shared by the criterion groups and the `encode_only` example (which
//! runs them under callgrind). Each returns the body bytes written.

use std::borrow::Borrow;
use std::hint::black_box;

use engage_core::{BatchConfig, Batcher, Endpoint, Properties, Token, Update};
use serde::Serialize;

use crate::{Customer, Envelope};

fn batcher(token: &str) -> Batcher {
    Batcher::new(BatchConfig::new(
        Token::new(token).expect("a token"),
        Endpoint::Engage,
    ))
}

/// Pushes updates into 2000-update bodies.
fn push_all(token: &str, updates: impl IntoIterator<Item = impl Borrow<Update>>) -> usize {
    let mut batcher = batcher(token);
    let mut bytes = 0;
    for u in updates {
        if let Some(batch) = batcher.push(u.borrow()).expect("valid") {
            bytes += batch.body().len();
            black_box(batch);
        }
    }
    if let Some(batch) = batcher.finish() {
        bytes += batch.body().len();
        black_box(batch);
    }
    bytes
}

/// `encode`: engage-core, pre-built updates into bodies.
pub fn engage_encode(token: &str, updates: &[Update]) -> usize {
    push_all(token, updates)
}

/// `encode`: the serde baselines, records already holding their token, into 2000-record
/// bodies.
pub fn serde_encode<T: Serialize>(records: &[T]) -> usize {
    let mut bytes = 0;
    for chunk in records.chunks(2000) {
        let mut body = Vec::with_capacity(chunk.len() * 160);
        serde_json::to_writer(&mut body, chunk).expect("serializable");
        bytes += body.len();
        black_box(body);
    }
    bytes
}

/// How `build_encode` turns a customer into an engage update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Build {
    /// `Update::user(id).set_from(&customer)`: straight to JSON.
    SetFrom,
    /// `Update::user(id).set(Properties::from_serialize(&customer))`: through the tree.
    Properties,
}

/// `build_encode`: from the user's structs to bodies, with engage.
pub fn engage_build(token: &str, people: &[(String, Customer)], how: Build) -> usize {
    push_all(
        token,
        people.iter().map(|(id, c)| match how {
            Build::SetFrom => Update::user(id.as_str()).set_from(c).expect("a struct"),
            Build::Properties => {
                Update::user(id.as_str()).set(Properties::from_serialize(c).expect("a struct"))
            }
        }),
    )
}

/// Serializes one record per customer into 2000-record bodies.
fn serde_build<'p, R: Serialize>(
    people: &'p [(String, Customer)],
    record: impl Fn(&'p str, &'p Customer) -> R,
) -> usize {
    let mut bytes = 0;
    for chunk in people.chunks(2000) {
        let records: Vec<R> = chunk.iter().map(|(id, c)| record(id, c)).collect();
        let mut body = Vec::with_capacity(chunk.len() * 200);
        serde_json::to_writer(&mut body, &records).expect("serializable");
        bytes += body.len();
        black_box(body);
    }
    bytes
}

/// `build_encode`'s serde-derive baseline: an envelope struct around the user's.
pub fn derive_build(token: &str, people: &[(String, Customer)]) -> usize {
    serde_build(people, |distinct_id, set| Envelope {
        token,
        distinct_id,
        set,
    })
}

/// `build_encode`'s `serde_json::Value` baseline: `to_value` and `json!`.
pub fn value_build(token: &str, people: &[(String, Customer)]) -> usize {
    serde_build(people, |id, c| {
        serde_json::json!({
            "$token": token,
            "$distinct_id": id,
            "$set": serde_json::to_value(c).expect("serializable"),
        })
    })
}
