//! The sans-IO core of **engage**: everything about Mixpanel's profile ingestion
//! endpoints (`POST /engage` for users, `POST /groups` for groups) except moving bytes.
//!
//! ```
//! use engage_core::{BatchConfig, Endpoint, Region, Target, Token, Update, batches};
//! use engage_core::exchange::{Answer, ParseOptions, parse_response};
//! use std::time::{Duration, SystemTime};
//!
//! #[derive(serde::Serialize)]
//! struct Customer { name: String, email: String, plan: &'static str, seats: u32 }
//!
//! let token = Token::new("my-project-token").unwrap();
//! let customer = Customer { name: "Ada Lovelace".into(), email: "ada@example.com".into(), plan: "pro", seats: 3 };
//! let updates = vec![
//!     // A user's struct becomes a `$set` payload, written straight to JSON.
//!     Update::user("user-1").set_from(&customer).unwrap(),
//!     Update::user("user-1").add([("logins", 1)]).with_time_ms(1_700_000_000_000),
//!     Update::user("user-2").union([("tags", ["beta", "eu"])]).without_geolocation(),
//!     Update::user("user-3").set([("score", f64::NAN)]), // invalid: NaN has no JSON form
//! ];
//!
//! // Batch (≤ 2000 records, ≤ 2 MiB); each update was validated and encoded when built,
//! // and its problems are reported here, with its index.
//! let config = BatchConfig::new(token, Endpoint::Engage);
//! let mut sent = Vec::new();
//! for item in batches(config, updates) {
//!     match item {
//!         Ok(batch) => sent.push(batch),
//!         Err(invalid) => assert_eq!(invalid.index, 3), // names the update and the property
//!     }
//! }
//! let batch = &sent[0];
//! assert_eq!(batch.len(), 3);
//!
//! // The request any HTTP client can send.
//! let request = Target::region(Region::Us).request(batch);
//! assert_eq!(request.uri(), "https://api.mixpanel.com/engage?ip=0&verbose=1&strict=1");
//! assert_eq!(request.headers()["content-type"], "application/json");
//!
//! // Reading a canned strict-mode answer: record 1 was rejected, the others applied.
//! let answer = http::Response::new(bytes::Bytes::from_static(
//!     br#"{"code":400,"status":"Bad Request","num_records_imported":2,
//!         "failed_records":[{"index":1,"$distinct_id":"user-1","field":"$add","message":"bad"}]}"#,
//! ));
//! let opts = ParseOptions { max_retry_after: Duration::from_secs(60), wall_now: SystemTime::now() };
//! match parse_response(&answer, opts) {
//!     Answer::SomeRejected { failures, .. } => {
//!         let record = batch.record(failures[0].position.unwrap()).unwrap();
//!         assert_eq!(record.index(), 1); // the caller's second update
//!     }
//!     other => panic!("{other:?}"),
//! }
//! ```
//!
//! # Layers
//!
//! Each module uses only the ones before it (`tests/layers.rs` checks it):
//!
//! - [`model`]: profiles and endpoints, the operations ([`model::OpKind`] is the one table
//!   of Mixpanel's vocabulary), [`Properties`], [`Value`], modifiers, the [`Token`].
//! - [`validate`]: the rules a record follows ([`validate::rules`], one function each),
//!   the problems and warnings they report, [`validate::check_record`] for JSON records
//!   (the emulator uses it too).
//! - [`wire`]: [`Update`] (typed: [`Update::user`] with all eight operations,
//!   [`Update::group`] with the six `/groups` documents; raw: [`Update::raw`]), validated
//!   and encoded to JSON once, when built.
//! - [`batch`]: [`batch::Batcher`] / [`batches`] copy each update's bytes into bodies
//!   ([`batch::Batcher::push_set_from`] writes a `Serialize` struct straight into one, no
//!   [`Update`] in between); a [`batch::Batch`] keeps its body for every retry and knows
//!   which caller updates it carries.
//! - [`exchange`]: [`Target`] builds `http::Request<Bytes>`; [`exchange::parse_response`]
//!   reads every answer shape.
//! - [`delivery`]: [`delivery::Delivery`], the retry state machine of one batch (time is an
//!   input), and [`delivery::Importer`], the scheduler of many; [`TransportError`].
//! - [`driver`]: runtime-free loops that run them with your send and sleep functions.
//! - [`client`]: a long-running client for applications (send from anywhere, batched in
//!   the background, flushed, shut down with an exact account), which any runtime can
//!   drive: see its docs for embedding it in a runtime of your own.
//!
//! The root re-exports the names most programs need.
//!
//! # In libraries
//!
//! Depend on `engage-core` alone and take an `http::Request<Bytes>` → `http::Response<Bytes>`
//! function from your caller: this crate has no HTTP client, runtime or clock of its own.
//!
//! # In executables
//!
//! Pick a transport crate (`engage-hyper`, `engage-curl`, `engage-async-std`) which wires
//! these pieces to a real client, or the `engage` command for bulk imports from files.

#![cfg_attr(docsrs, feature(doc_cfg))]

// The layers, each using only the ones above it (checked by `tests/layers.rs`).
pub mod batch;
pub mod client;
pub mod delivery;
pub mod driver;
pub mod exchange;
pub mod model;
#[doc(hidden)]
pub mod rng;
pub mod text;
pub mod validate;
pub mod wire;

// The names most programs need; everything else is in the modules above.
pub use batch::{BatchConfig, batches};
pub use delivery::{ImportConfig, ImportEvent, ImportSummary, RetryPolicy, TransportError};
pub use exchange::{Region, Target};
pub use model::{Endpoint, Properties, Token, Value};
pub use wire::Update;

/// The workspace README's example, compiled and run as a doc test so it stays true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

// Re-exported so users name the same versions.
pub use bytes;
pub use http;
