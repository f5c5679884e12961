//! The sans-IO core of **engage**: everything about Mixpanel's profile ingestion
//! endpoints (`POST /engage` for users, `POST /groups` for groups) except moving bytes.
//!
//! ```
//! use engage_core::*;
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
//! # Pieces
//!
//! - **Model**: [`Update`] (typed: [`Update::user`] with all eight operations,
//!   [`Update::group`] with the six `/groups` documents; raw: [`Update::raw`]),
//!   [`Properties`], [`Value`], [`DateTime`], modifiers (`$ip`, `$time`, …).
//! - **Validation**: before anything is sent; [`ValidationError`] names the update (its
//!   index and profile) and the property; [`Warning`]s report what Mixpanel would
//!   truncate. [`check_record`] validates JSON records (the emulator uses it too).
//! - **Encoding once**: an [`Update`] is validated and written to JSON when it is built
//!   ([`UserUpdate::set_from`] serializes a user's struct with no intermediate tree), and
//!   re-encoded only if a modifier changes.
//! - **Batching**: [`Batcher`] / [`batches`] copy each update's bytes into bodies; a
//!   [`Batch`] keeps its body as [`bytes::Bytes`] for every retry and knows which caller
//!   updates it carries.
//! - **Requests and answers**: [`Target`] builds `http::Request<Bytes>`;
//!   [`parse_response`] reads every answer shape into an [`Answer`].
//! - **Retries**: [`Delivery`] is a deterministic state machine (time is an input), with
//!   backoff and jitter, `Retry-After`, 413 splitting, and accounting of uncertain resends
//!   of `$add`/`$append`; [`deliver_blocking`] and [`deliver`] drive it with any
//!   transport.
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

mod batch;
mod check;
mod driver;
mod encode;
mod error;
mod import;
mod request;
mod response;
mod retry;
mod rng;
mod ser;
mod ser_json;
mod text;
mod token;
mod transport;
mod update;
mod value;

pub use batch::{
    Batch, BatchConfig, BatchItem, Batcher, Batches, DEFAULT_MAX_BODY_BYTES,
    MAX_RECORDS_PER_REQUEST, MAX_UPDATE_BYTES, ProfileKey, RecordRef, batches,
};
pub use check::{CheckedRecord, GroupOperations, RecordProblem, check_record};
pub use driver::{Clock, ManualClock, SystemClock, deliver, deliver_blocking};
pub use error::{Problem, ValidationError, Warning, WarningKind};
pub use import::{
    ImportAction, ImportConfig, ImportEvent, ImportItem, ImportSummary, Importer, RequestId,
    import, import_blocking,
};
pub use request::{Region, Target, TargetError, USER_AGENT_VALUE};
pub use response::{Answer, FatalKind, ParseOptions, RecordFailure, parse_response, retry_after};
pub use retry::{
    Action, Delivery, DeliveryError, LastFailure, RecordOutcome, RecordReport, Report, RetryPolicy,
};
pub use rng::SplitMix64;
pub use ser::SerializeError;
pub use text::escape_controls;
pub use token::{EmptyToken, Token};
pub use transport::{TransportError, TransportErrorKind};
pub use update::{
    Endpoint, Geolocation, GroupUpdate, Modifiers, Operation, ProfileId, Properties, Update,
    UserUpdate,
};
pub use value::{DateTime, Number, Value};

/// The workspace README's example, compiled and run as a doc test so it stays true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

// Re-exported so users name the same versions.
pub use bytes;
pub use http;
