//! The measured paths, shared by the criterion groups and the `encode_only` example (which
//! runs them under callgrind). Each returns the body bytes written.

use std::borrow::Borrow;
use std::hint::black_box;

use engage_core::batch::{Batch, Batcher};
use engage_core::model::ProfileRef;
use engage_core::validate::ValidationError;
use engage_core::{
    BatchConfig, Endpoint, ImportConfig, ImportSummary, Properties, RetryPolicy, Target, Token,
    Update,
};
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
    push_each(token, updates, |batcher, u| batcher.push(u.borrow()))
}

/// Gives each item to `push`, which batches it into 2000-update bodies.
fn push_each<T>(
    token: &str,
    items: impl IntoIterator<Item = T>,
    mut push: impl FnMut(&mut Batcher, T) -> Result<Option<Batch>, ValidationError>,
) -> usize {
    let mut batcher = batcher(token);
    let mut bytes = 0;
    for item in items {
        if let Some(batch) = push(&mut batcher, item).expect("valid") {
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

/// The lines of an NDJSON text, blank ones skipped: found with `memchr`, as the CLI's
/// buffered reader (`read_until`) finds them.
fn lines(ndjson: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = ndjson;
    std::iter::from_fn(move || {
        loop {
            if rest.is_empty() {
                return None;
            }
            let end = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
            let line = rest[..end].trim_ascii();
            rest = rest.get(end + 1..).unwrap_or_default();
            if !line.is_empty() {
                return Some(line);
            }
        }
    })
}

/// `ingest`: engage's path for update objects read from NDJSON (the CLI's): each line
/// given as it is to `Batcher::push_json` (the one-pass reader straight into the body;
/// the full parser for what it declines), checked by the rules, into 2000-update bodies.
pub fn engage_ingest(token: &str, ndjson: &[u8]) -> usize {
    push_each(token, lines(ndjson), |batcher, line| {
        batcher.push_json(line)
    })
}

/// `ingest/engage_update`: each line made an `Update` first (`Update::from_json`: the
/// one-pass reader into a shared arena), then pushed: the path before `push_json`.
pub fn engage_ingest_updates(token: &str, ndjson: &[u8]) -> usize {
    push_all(
        token,
        lines(ndjson).map(|line| Update::from_json(line).expect("valid JSON")),
    )
}

/// `ingest`'s baseline: each line parsed into a `serde_json::Value` and written back with
/// `serde_json::to_writer` into 2000-record bodies (no checks).
pub fn value_ingest(ndjson: &[u8]) -> usize {
    let mut bytes = 0;
    let mut body = Vec::new();
    let mut records = 0;
    let close = |body: &mut Vec<u8>, bytes: &mut usize| {
        body.push(b']');
        *bytes += body.len();
        black_box(std::mem::take(body));
    };
    for line in lines(ndjson) {
        let value: serde_json::Value = serde_json::from_slice(line).expect("valid JSON");
        body.push(if records == 0 { b'[' } else { b',' });
        serde_json::to_writer(&mut body, &value).expect("serializable");
        records += 1;
        if records == 2000 {
            close(&mut body, &mut bytes);
            records = 0;
        }
    }
    if records > 0 {
        close(&mut body, &mut bytes);
    }
    bytes
}

/// `ingest`'s reference point, not a path anyone would ship: serde_json checking each
/// line's syntax alone (`IgnoredAny`: no tree, nothing written, no rule checked). What a
/// scalar parser spends only to read the text, to set `engage`'s whole path against.
pub fn syntax_only(ndjson: &[u8]) -> usize {
    lines(ndjson)
        .map(|line| {
            let _: serde::de::IgnoredAny = serde_json::from_slice(line).expect("valid JSON");
            line.len()
        })
        .sum()
}

/// How `build_encode` turns a customer into an engage update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Build {
    /// `Update::user(id).set_from(&customer)`: straight to JSON.
    SetFrom,
    /// `Update::user(id).set(Properties::from_serialize(&customer))`: through the tree.
    Properties,
    /// `batcher.push_set_from(ProfileRef::User(id), &customer)`: straight into the body,
    /// no `Update` built.
    PushSetFrom,
}

/// `build_encode`: from the user's structs to bodies, with engage.
pub fn engage_build(token: &str, people: &[(String, Customer)], how: Build) -> usize {
    if how == Build::PushSetFrom {
        return push_each(token, people, |batcher, (id, c)| {
            batcher.push_set_from(ProfileRef::User(id), c)
        });
    }
    push_all(
        token,
        people.iter().map(|(id, c)| match how {
            Build::SetFrom => Update::user(id.as_str()).set_from(c).expect("a struct"),
            Build::Properties => {
                Update::user(id.as_str()).set(Properties::from_serialize(c).expect("a struct"))
            }
            Build::PushSetFrom => unreachable!("pushed above"),
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

/// A transport the `import` group and the `import_cpu` example run through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// engage-hyper, on a tokio runtime.
    Hyper,
    /// engage-curl, blocking on a Multi handle.
    Curl,
    /// engage-async-std, on async-std.
    AsyncStd,
}

impl Transport {
    /// All three.
    pub const ALL: [Transport; 3] = [Transport::Hyper, Transport::Curl, Transport::AsyncStd];

    /// Its name in benchmark ids and reports.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Hyper => "hyper",
            Transport::Curl => "curl",
            Transport::AsyncStd => "async_std",
        }
    }
}

/// An in-process emulator and one client per transport, for end-to-end imports over
/// loopback.
pub struct ImportRig {
    /// The emulator the imports go to.
    pub emulator: engage_emulator::Emulator,
    runtime: tokio::runtime::Runtime,
    hyper: engage_hyper::HyperTransport,
    curl: engage_curl::CurlTransport,
    async_std: engage_async_std::AsyncStdTransport<engage_async_std::AsyncStd>,
}

impl ImportRig {
    /// Starts the emulator and builds the clients.
    pub fn start() -> ImportRig {
        let emulator = engage_emulator::Emulator::start(engage_emulator::EmulatorConfig::default())
            .expect("the emulator starts");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        ImportRig {
            emulator,
            runtime,
            hyper: engage_hyper::HyperTransport::new().expect("a hyper client"),
            curl: engage_curl::CurlTransport::new().expect("a curl client"),
            async_std: engage_async_std::AsyncStdTransport::new(engage_async_std::AsyncStd)
                .expect("an async-std client"),
        }
    }

    /// An import to the emulator at `concurrency`.
    pub fn config(&self, token: &str, concurrency: usize) -> ImportConfig {
        ImportConfig::new(
            BatchConfig::new(Token::new(token).expect("a token"), Endpoint::Engage),
            Target::base_url(&self.emulator.base_url()).expect("the emulator's URL"),
        )
        .concurrency(concurrency)
        .policy(RetryPolicy::default())
    }

    /// Sends `updates` through `transport`'s application client from `producers` threads
    /// (each a contiguous share), then shuts it down; returns its account.
    pub fn client_sends(
        &self,
        transport: Transport,
        config: engage_core::client::ClientConfig,
        updates: Vec<Update>,
        producers: usize,
    ) -> engage_core::client::ClientSummary {
        let client = match transport {
            Transport::Hyper => {
                let _inside = self.runtime.enter();
                self.hyper.client(config)
            }
            Transport::Curl => self.curl.client(config),
            Transport::AsyncStd => self.async_std.client(config),
        };
        let share = updates.len().div_ceil(producers.max(1));
        let mut updates = updates;
        let mut threads = Vec::new();
        while !updates.is_empty() {
            let rest = updates.split_off(share.min(updates.len()));
            let mine = std::mem::replace(&mut updates, rest);
            let client = client.clone();
            threads.push(std::thread::spawn(move || {
                for u in mine {
                    client.send_blocking(u).expect("the client is running");
                }
            }));
        }
        for t in threads {
            t.join().expect("a producer");
        }
        client.shutdown_blocking(std::time::Duration::from_secs(600))
    }

    /// A client configuration to the emulator.
    pub fn client_config(&self, token: &str) -> engage_core::client::ClientConfig {
        engage_core::client::ClientConfig::new(
            Token::new(token).expect("a token"),
            Target::base_url(&self.emulator.base_url()).expect("the emulator's URL"),
        )
    }

    /// Imports `updates` through `transport`, to the end.
    pub fn import(
        &self,
        transport: Transport,
        config: ImportConfig,
        updates: Vec<Update>,
    ) -> ImportSummary {
        match transport {
            Transport::Hyper => self
                .runtime
                .block_on(self.hyper.import(config, updates, |_| {})),
            Transport::Curl => self.curl.import(config, updates, |_| {}),
            Transport::AsyncStd => {
                async_std::task::block_on(self.async_std.import(config, updates, |_| {}))
            }
        }
    }
}
