//! Batching: updates in, encoded request bodies out, order kept, both limits held.

use std::fmt;

use bytes::Bytes;

use serde::Serialize;

use crate::model::{Endpoint, ProfileId, ProfileRef, Token};
use crate::validate::rules::Warnings;
use crate::validate::{Problem, RecordProblem, ValidationError, Warning};
use crate::wire::Update;
use crate::wire::encode::{self, Context, EncodedIds};
use crate::wire::json::write_str;
use crate::wire::text::TextRecord;

/// Most updates Mixpanel takes in one request.
pub const MAX_RECORDS_PER_REQUEST: usize = 2000;
/// Largest encoded update Mixpanel takes (1 MB).
pub const MAX_UPDATE_BYTES: usize = 1_000_000;
/// Default cap on a request body (2 MiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// How to batch: token, endpoint and limits.
///
/// ```
/// use engage_core::{BatchConfig, Endpoint, Token};
/// let config = BatchConfig::new(Token::new("tok").unwrap(), Endpoint::Engage)
///     .max_records(500)
///     .max_body_bytes(1 << 20);
/// assert_eq!(config.records_limit(), 500);
/// ```
#[derive(Debug, Clone)]
pub struct BatchConfig {
    token: Token,
    endpoint: Endpoint,
    max_records: usize,
    max_body_bytes: usize,
    override_token: bool,
}

impl BatchConfig {
    /// Batches for `endpoint`, each record carrying `token`; 2000 records and 2 MiB at most.
    pub fn new(token: Token, endpoint: Endpoint) -> Self {
        BatchConfig {
            token,
            endpoint,
            max_records: MAX_RECORDS_PER_REQUEST,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            override_token: false,
        }
    }

    /// At most `n` records per batch, clamped to 1..=2000.
    pub fn max_records(mut self, n: usize) -> Self {
        self.max_records = n.clamp(1, MAX_RECORDS_PER_REQUEST);
        self
    }

    /// At most `n` bytes per request body (at least 64 bytes; at most what 2000 updates of
    /// 1 MB can fill, which also keeps body offsets within `u32`).
    pub fn max_body_bytes(mut self, n: usize) -> Self {
        self.max_body_bytes = n.clamp(64, MAX_RECORDS_PER_REQUEST * (MAX_UPDATE_BYTES + 1) + 2);
        self
    }

    /// Raw updates carrying a different `$token` get the configured one instead of being
    /// rejected with [`Problem::TokenMismatch`].
    pub fn override_token(mut self, yes: bool) -> Self {
        self.override_token = yes;
        self
    }

    /// The same limits and token for `endpoint`.
    pub fn endpoint_for(mut self, endpoint: Endpoint) -> Self {
        self.endpoint = endpoint;
        self
    }

    /// The record limit in force.
    pub fn records_limit(&self) -> usize {
        self.max_records
    }

    /// The body byte cap in force.
    pub fn body_bytes_limit(&self) -> usize {
        self.max_body_bytes
    }

    /// The endpoint.
    pub fn endpoint(&self) -> Endpoint {
        self.endpoint
    }

    /// The token.
    pub fn token(&self) -> &Token {
        &self.token
    }
}

/// Per-record bookkeeping; spans are byte offsets into the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordMeta {
    pub(crate) index: u64,
    pub(crate) start: u32,
    pub(crate) end: u32,
    pub(crate) id: (u32, u32),
    pub(crate) key: Option<(u32, u32)>,
    pub(crate) idempotent: bool,
    /// Its profile's hash (`model::profile_hash`) when the importer gave it, kept so that
    /// settling a batch does not read the ids back out of a body long gone cold. `None`
    /// for a batcher used on its own: nothing there asks for it.
    pub(crate) hash: Option<u64>,
}

impl RecordMeta {
    fn shifted(mut self, delta: i64) -> Self {
        let s = |v: u32| (v as i64 + delta) as u32;
        self.start = s(self.start);
        self.end = s(self.end);
        self.id = (s(self.id.0), s(self.id.1));
        self.key = self.key.map(|(a, b)| (s(a), s(b)));
        self
    }
}

/// An encoded request body and the caller's updates it carries.
///
/// The body is encoded once; every retry sends these same bytes (cloning [`Bytes`] only
/// bumps a reference count).
#[derive(Clone, PartialEq, Eq)]
pub struct Batch {
    endpoint: Endpoint,
    body: Bytes,
    records: Vec<RecordMeta>,
    warnings: Vec<Warning>,
}

impl fmt::Debug for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The body holds the token: show its size only.
        f.debug_struct("Batch")
            .field("endpoint", &self.endpoint)
            .field("records", &self.records.len())
            .field("body_bytes", &self.body.len())
            .field(
                "first_index",
                &self.records.first().map(|r| r.index).unwrap_or(0),
            )
            .field("warnings", &self.warnings.len())
            .finish()
    }
}

/// One record of a [`Batch`]: which caller update it is and which profile.
#[derive(Clone, Copy)]
pub struct RecordRef<'a> {
    body: &'a [u8],
    meta: &'a RecordMeta,
    position: usize,
}

impl fmt::Debug for RecordRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordRef")
            .field("index", &self.index())
            .field("position", &self.position)
            .field("profile", &self.profile())
            .finish()
    }
}

/// A cheap, hashable key of the profile a record updates (the id strings' JSON forms,
/// which the encoder writes deterministically, so equal ids give equal keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProfileKey<'a> {
    /// `$group_key`'s JSON form, empty for a user profile.
    pub group_key: &'a [u8],
    /// `$distinct_id`'s or `$group_id`'s JSON form.
    pub id: &'a [u8],
}

impl<'a> RecordRef<'a> {
    /// The update's position in the caller's input.
    pub fn index(&self) -> u64 {
        self.meta.index
    }

    /// The record's position in this batch (what Mixpanel's `failed_records[].index` means).
    pub fn position(&self) -> usize {
        self.position
    }

    /// Whether resending it is harmless.
    pub fn is_idempotent(&self) -> bool {
        self.meta.idempotent
    }

    /// The encoded record.
    pub fn json(&self) -> &'a [u8] {
        &self.body[self.meta.start as usize..self.meta.end as usize]
    }

    /// The record's JSON less the `$token` the batcher writes first: what a report of
    /// failed records may show (the token is the project's secret). Keys in the order the
    /// record was sent (every encoder writes the token first; a record that did not
    /// would be re-read, its keys then sorted).
    ///
    /// ```
    /// use engage_core::batch::Batcher;
    /// use engage_core::{BatchConfig, Endpoint, Token, Update};
    /// let mut batcher = Batcher::new(BatchConfig::new(Token::new("secret")?, Endpoint::Engage));
    /// batcher.push(&Update::from_json(r#"{"$distinct_id": "u1", "$add": {"n": 1}}"#)?)?;
    /// let batch = batcher.finish().expect("one record");
    /// let record = batch.record(0).expect("one record");
    /// assert_eq!(record.json_without_token(), r#"{"$distinct_id":"u1","$add":{"n":1}}"#);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn json_without_token(&self) -> String {
        let text = std::str::from_utf8(self.json()).unwrap_or_default();
        if let Some(rest) = text.strip_prefix(r#"{"$token":""#) {
            // The token is a JSON string: it ends at the first quote not escaped.
            let mut escaped = false;
            for (i, c) in rest.char_indices() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '"' => {
                        if let Some(members) = rest[i + 1..].strip_prefix(',') {
                            return format!("{{{members}");
                        }
                        break;
                    }
                    _ => {}
                }
            }
        }
        // Every encoder writes the token first; were that ever not so, drop it by parsing.
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::Object(mut object)) => {
                object.remove("$token");
                serde_json::Value::Object(object).to_string()
            }
            _ => String::new(),
        }
    }

    /// A hashable key of its profile.
    pub fn profile_key(&self) -> ProfileKey<'a> {
        let span = |(a, b): (u32, u32)| &self.body[a as usize..b as usize];
        ProfileKey {
            group_key: self.meta.key.map(span).unwrap_or(&[]),
            id: span(self.meta.id),
        }
    }

    /// A hash of its profile, equal to that of the update it came from.
    pub(crate) fn profile_hash(&self, endpoint: Endpoint) -> u64 {
        self.meta.hash.unwrap_or_else(|| {
            let key = self.profile_key();
            crate::model::profile_hash(endpoint, key.group_key, key.id)
        })
    }

    /// The profile it updates.
    pub fn profile(&self) -> ProfileId {
        let text = |(a, b): (u32, u32)| -> String {
            serde_json::from_slice(&self.body[a as usize..b as usize]).unwrap_or_default()
        };
        match self.meta.key {
            Some(key) => ProfileId::Group {
                key: text(key),
                id: text(self.meta.id),
            },
            None => ProfileId::User {
                distinct_id: text(self.meta.id),
            },
        }
    }
}

impl Batch {
    /// The endpoint it goes to.
    pub fn endpoint(&self) -> Endpoint {
        self.endpoint
    }

    /// The JSON array to send.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether it holds no record (never true for a batch the batcher made).
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The records, in order.
    pub fn records(&self) -> impl ExactSizeIterator<Item = RecordRef<'_>> + '_ {
        self.records
            .iter()
            .enumerate()
            .map(|(position, meta)| RecordRef {
                body: &self.body,
                meta,
                position,
            })
    }

    /// The record at `position` in this batch.
    pub fn record(&self, position: usize) -> Option<RecordRef<'_>> {
        self.records.get(position).map(|meta| RecordRef {
            body: &self.body,
            meta,
            position,
        })
    }

    /// Whether any record is `$add` or `$append` (resending may count twice).
    pub fn has_non_idempotent(&self) -> bool {
        self.records.iter().any(|r| !r.idempotent)
    }

    /// What Mixpanel would silently truncate in these records.
    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }

    /// A new batch of the records at `positions` (in the order given), re-using their
    /// encoded bytes. Used to split a batch after a 413.
    pub fn subset(&self, positions: &[usize]) -> Batch {
        let mut body = Vec::with_capacity(
            2 + positions
                .iter()
                .filter_map(|&p| self.records.get(p))
                .map(|r| (r.end - r.start) as usize + 1)
                .sum::<usize>(),
        );
        body.push(b'[');
        let mut records = Vec::with_capacity(positions.len());
        for &p in positions {
            let Some(meta) = self.records.get(p) else {
                continue;
            };
            if !records.is_empty() {
                body.push(b',');
            }
            let delta = body.len() as i64 - meta.start as i64;
            body.extend_from_slice(&self.body[meta.start as usize..meta.end as usize]);
            records.push(meta.shifted(delta));
        }
        body.push(b']');
        let kept: Vec<u64> = records.iter().map(|r| r.index).collect();
        Batch {
            endpoint: self.endpoint,
            body: Bytes::from(body),
            warnings: self
                .warnings
                .iter()
                .filter(|w| kept.contains(&w.index))
                .cloned()
                .collect(),
            records,
        }
    }

    /// The two halves of this batch, in order; `None` for fewer than two records.
    pub fn split_halves(&self) -> Option<(Batch, Batch)> {
        if self.records.len() < 2 {
            return None;
        }
        let mid = self.records.len() / 2;
        let first: Vec<usize> = (0..mid).collect();
        let second: Vec<usize> = (mid..self.records.len()).collect();
        Some((self.subset(&first), self.subset(&second)))
    }
}

/// Turns updates into [`Batch`]es incrementally, keeping their order, at most
/// `max_records` records and `max_body_bytes` bytes each. A typed update was validated
/// and encoded when it was built: pushing it copies its bytes behind the token, or reports
/// the problem found then with the update's index. A raw update is checked and written
/// here.
///
/// ```
/// use engage_core::{BatchConfig, Endpoint, Token, Update};
/// use engage_core::batch::Batcher;
/// let mut batcher = Batcher::new(
///     BatchConfig::new(Token::new("tok").unwrap(), Endpoint::Engage).max_records(2),
/// );
/// let mut batches = Vec::new();
/// for i in 0..5 {
///     if let Some(batch) = batcher.push(&Update::user(format!("u{i}")).set([("n", i)]))? {
///         batches.push(batch);
///     }
/// }
/// batches.extend(batcher.finish());
/// assert_eq!(batches.iter().map(|b| b.len()).collect::<Vec<_>>(), [2, 2, 1]);
/// assert_eq!(batches[2].record(0).unwrap().index(), 4);
/// # Ok::<(), engage_core::validate::ValidationError>(())
/// ```
pub struct Batcher {
    config: BatchConfig,
    token_field: Vec<u8>,
    body: Vec<u8>,
    records: Vec<RecordMeta>,
    warnings: Vec<Warning>,
    scratch_warnings: Warnings,
    next_index: u64,
    /// Size of the last finished body, to size the next buffer without regrowth.
    last_body_len: usize,
    /// Records in the last finished batch, likewise.
    last_records: usize,
}

impl fmt::Debug for Batcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The buffers hold the token: show sizes only.
        f.debug_struct("Batcher")
            .field("config", &self.config)
            .field("pending", &self.records.len())
            .field("pending_bytes", &self.body.len())
            .field("next_index", &self.next_index)
            .finish()
    }
}

impl Batcher {
    /// A batcher with `config`.
    pub fn new(config: BatchConfig) -> Self {
        let mut token_field = b"\"$token\":".to_vec();
        write_str(&mut token_field, config.token.expose());
        Batcher {
            config,
            token_field,
            body: Vec::new(),
            records: Vec::new(),
            warnings: Vec::new(),
            scratch_warnings: Vec::new(),
            next_index: 0,
            last_body_len: 0,
            last_records: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &BatchConfig {
        &self.config
    }

    /// Number of records waiting in the open batch.
    pub fn pending(&self) -> usize {
        self.records.len()
    }

    /// Bytes of the open batch so far.
    pub fn pending_bytes(&self) -> usize {
        self.body.len()
    }

    /// Adds the next update; its index is one more than the previous update's (0 first).
    /// Returns a batch when one is complete. An invalid update is an error for that update
    /// only: the batcher stays usable and the update's index is used up.
    pub fn push(&mut self, update: &Update) -> Result<Option<Batch>, ValidationError> {
        self.push_at(self.next_index, update)
    }

    /// Adds an update with the caller's own index (e.g. a line number); later
    /// [`push`](Self::push) calls continue from `index + 1`.
    pub fn push_at(
        &mut self,
        index: u64,
        update: &Update,
    ) -> Result<Option<Batch>, ValidationError> {
        unbox(self.push_hashed(index, update, None))
    }

    /// `$set` of `value` (any struct or map that implements [`Serialize`]) for `profile`,
    /// written straight into the open batch: the same record, validation, index and
    /// errors as pushing `Update::user(id).set_from(value)?` (or `Update::group(key,
    /// id)…`), without building the [`Update`] (no allocation and one copy fewer per
    /// record: the way to batch many structs).
    ///
    /// A value validation reports (a NaN, a string Mixpanel would truncate…) is serialized
    /// a second time, through [`Properties`](crate::Properties), to name the property: a
    /// `Serialize` implementation that can only run once should go through
    /// [`Properties::from_serialize`](crate::Properties::from_serialize) and
    /// [`push`](Self::push) instead. A value that cannot become properties (the
    /// [`SerializeError`](crate::model::SerializeError) `set_from` returns) is reported as
    /// [`Problem::Unserializable`]. Modifiers (`$time`, `$ip`) need an [`Update`].
    ///
    /// ```
    /// use engage_core::batch::Batcher;
    /// use engage_core::model::ProfileRef;
    /// use engage_core::{BatchConfig, Endpoint, Token};
    /// #[derive(serde::Serialize)]
    /// struct Customer { name: &'static str, seats: u32 }
    /// let mut batcher = Batcher::new(BatchConfig::new(Token::new("tok")?, Endpoint::Engage));
    /// batcher.push_set_from(ProfileRef::User("u1"), &Customer { name: "Ada", seats: 3 })?;
    /// let nan = std::collections::BTreeMap::from([("score", f64::NAN)]);
    /// let invalid = batcher.push_set_from(ProfileRef::User("u2"), &nan).unwrap_err();
    /// assert_eq!((invalid.index, invalid.property.as_deref()), (1, Some("score")));
    /// let batch = batcher.finish().expect("one record");
    /// assert_eq!(
    ///     batch.body().as_ref(),
    ///     br#"[{"$token":"tok","$distinct_id":"u1","$set":{"name":"Ada","seats":3}}]"#
    /// );
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn push_set_from<T: Serialize + ?Sized>(
        &mut self,
        profile: ProfileRef<'_>,
        value: &T,
    ) -> Result<Option<Batch>, ValidationError> {
        unbox(self.push_serialized(self.next_index, profile, false, value))
    }

    /// `$set_once` of `value` for `profile`, written straight into the open batch; see
    /// [`push_set_from`](Self::push_set_from).
    pub fn push_set_once_from<T: Serialize + ?Sized>(
        &mut self,
        profile: ProfileRef<'_>,
        value: &T,
    ) -> Result<Option<Batch>, ValidationError> {
        unbox(self.push_serialized(self.next_index, profile, true, value))
    }

    fn push_serialized<T: Serialize + ?Sized>(
        &mut self,
        index: u64,
        profile: ProfileRef<'_>,
        once: bool,
        value: &T,
    ) -> Pushed {
        let (before, start) = self.open_record(index);
        let ctx = context(&self.config, &self.token_field);
        if let Some(ids) = encode::encode_serialized(&mut self.body, profile, once, value, &ctx) {
            return self.close_record(index, before, start, ids, None, &|| Some(profile.to_id()));
        }
        // The checked path names what stopped the direct one.
        self.body.truncate(before);
        match Update::serialized_checked(profile, once, value) {
            Ok(update) => self.push_hashed(index, &update, None),
            Err(e) => Err(Box::new(ValidationError {
                index,
                profile: Some(profile.to_id()),
                property: None,
                problem: Problem::Unserializable(e),
            })),
        }
    }

    /// Adds the next update given as JSON text (a line of an NDJSON export, say): the
    /// same record, checks, warnings and errors as `push(&Update::from_json(json)?)`, with
    /// the same index rules as [`push`](Self::push). Text engage-core's one-pass reader
    /// takes (a valid update that draws no warning, as most are) goes straight into the
    /// open batch, minified: no [`Update`] is built, nothing is allocated per record once
    /// warm. Text that is not JSON is a [`Problem::MalformedJson`] error for this update
    /// (its index is used up, as for any invalid update).
    ///
    /// ```
    /// use engage_core::batch::Batcher;
    /// use engage_core::validate::Problem;
    /// use engage_core::{BatchConfig, Endpoint, Token};
    /// let mut batcher = Batcher::new(BatchConfig::new(Token::new("tok")?, Endpoint::Engage));
    /// batcher.push_json(br#"{"$distinct_id": "u1", "$add": {"logins": 1}}"#)?;
    /// let err = batcher.push_json(b"{\"$distinct_id\": ").unwrap_err();
    /// assert_eq!(err.index, 1);
    /// assert!(matches!(err.problem, Problem::MalformedJson(_)));
    /// assert!(batcher.push_json(br#"{"$distinct_id": "u2"}"#).is_err()); // no operation
    /// let batch = batcher.finish().expect("one record");
    /// assert_eq!(
    ///     batch.body().as_ref(),
    ///     br#"[{"$token":"tok","$distinct_id":"u1","$add":{"logins":1}}]"#
    /// );
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn push_json(&mut self, json: &[u8]) -> Result<Option<Batch>, ValidationError> {
        self.push_json_at(self.next_index, json)
    }

    /// [`push_json`](Self::push_json) with the caller's own index (e.g. a line number);
    /// later pushes continue from `index + 1`.
    pub fn push_json_at(
        &mut self,
        index: u64,
        json: &[u8],
    ) -> Result<Option<Batch>, ValidationError> {
        let taken =
            crate::wire::text::read_borrowed(json, |record| self.push_text(index, record, None));
        if let Some(pushed) = taken {
            return unbox(pushed);
        }
        // Declined by the one-pass reader: the full parser (not `Update::from_json`, which
        // would try the same pass again).
        match crate::validate::parse_record(json).map(Update::raw_parsed) {
            Ok(update) => unbox(self.push_hashed(index, &update, None)),
            Err(e) => {
                self.next_index = index.saturating_add(1);
                Err(ValidationError {
                    index,
                    profile: None,
                    property: None,
                    problem: Problem::MalformedJson(e.to_string()),
                })
            }
        }
    }

    /// [`push_at`](Self::push_at), keeping the update's profile hash
    /// (`Update::profile_hash`) with the record when the caller has it.
    pub(crate) fn push_hashed(&mut self, index: u64, update: &Update, hash: Option<u64>) -> Pushed {
        self.push_encoded(index, hash, &|| update.profile(), |out, ctx, warnings| {
            encode::encode_update(out, update, ctx, warnings)
        })
    }

    /// A record the one-pass reader took, with its profile hash when the caller has it.
    pub(crate) fn push_text<J: AsRef<[u8]>>(
        &mut self,
        index: u64,
        record: &TextRecord<J>,
        hash: Option<u64>,
    ) -> Pushed {
        self.push_encoded(
            index,
            hash,
            &|| Some(record.profile()),
            |out, ctx, warnings| encode::encode_text(out, record, ctx, warnings),
        )
    }

    /// Writes record `index` with `encode` (which names `profile` on error) and keeps it.
    fn push_encoded(
        &mut self,
        index: u64,
        hash: Option<u64>,
        profile: &dyn Fn() -> Option<ProfileId>,
        encode: impl FnOnce(
            &mut Vec<u8>,
            &Context<'_>,
            &mut Warnings,
        ) -> Result<EncodedIds, RecordProblem>,
    ) -> Pushed {
        let (before, start) = self.open_record(index);
        let ctx = context(&self.config, &self.token_field);
        match encode(&mut self.body, &ctx, &mut self.scratch_warnings) {
            Ok(ids) => self.close_record(index, before, start, ids, hash, profile),
            Err(RecordProblem {
                property, problem, ..
            }) => {
                self.body.truncate(before);
                Err(Box::new(ValidationError {
                    index,
                    profile: profile(),
                    property,
                    problem,
                }))
            }
        }
    }

    /// Makes room for the record `index`: opens a batch when none is, and writes the
    /// comma before it. Returns where the body stood before and where the record starts.
    fn open_record(&mut self, index: u64) -> (usize, usize) {
        self.next_index = index.saturating_add(1);
        self.scratch_warnings.clear();
        if self.body.is_empty() {
            let capacity = if self.last_body_len > 0 {
                self.last_body_len + self.last_body_len / 8
            } else {
                16 * 1024
            };
            self.body
                .reserve(capacity.min(self.config.max_body_bytes.saturating_add(1024)));
            self.body.push(b'[');
            self.records
                .reserve(self.last_records.max(16).min(self.config.max_records));
        }
        let before = self.body.len();
        if !self.records.is_empty() {
            self.body.push(b',');
        }
        (before, self.body.len())
    }

    /// Keeps the record just written at `start..` (with the warnings in
    /// `scratch_warnings`), or takes it back out when it breaks a limit; returns a batch
    /// when one is complete.
    fn close_record(
        &mut self,
        index: u64,
        before: usize,
        start: usize,
        ids: EncodedIds,
        hash: Option<u64>,
        profile: &dyn Fn() -> Option<ProfileId>,
    ) -> Pushed {
        let fail = |body: &mut Vec<u8>, problem: Problem| {
            body.truncate(before);
            Box::new(ValidationError {
                index,
                profile: profile(),
                property: None,
                problem,
            })
        };
        let len = self.body.len() - start;
        if len > MAX_UPDATE_BYTES {
            let problem = Problem::UpdateTooLarge {
                bytes: len,
                limit: MAX_UPDATE_BYTES,
            };
            return Err(fail(&mut self.body, problem));
        }
        if len + 2 > self.config.max_body_bytes {
            let problem = Problem::LargerThanBodyCap {
                bytes: len,
                cap: self.config.max_body_bytes,
            };
            return Err(fail(&mut self.body, problem));
        }
        let warnings_before = self.warnings.len();
        for (property, kind) in self.scratch_warnings.drain(..) {
            self.warnings.push(Warning {
                index,
                profile: profile(),
                property,
                kind,
            });
        }
        let to32 = |v: usize| v as u32;
        debug_assert!(
            hash.is_none_or(|h| {
                let span = |(a, b): (usize, usize)| &self.body[a..b];
                h == crate::model::profile_hash(
                    self.config.endpoint,
                    ids.key.map(span).unwrap_or(&[]),
                    span(ids.id),
                )
            }),
            "an update's profile hash is that of the ids it is written with"
        );
        let meta = RecordMeta {
            index,
            start: to32(start),
            end: to32(self.body.len()),
            id: (to32(ids.id.0), to32(ids.id.1)),
            key: ids.key.map(|(a, b)| (to32(a), to32(b))),
            idempotent: ids.idempotent,
            hash,
        };
        // Closing bracket included: does the open batch still fit?
        if self.body.len() + 1 > self.config.max_body_bytes {
            // It does not: close the batch before this record, which opens the next one.
            let mut next = Vec::with_capacity(self.body.capacity());
            next.push(b'[');
            next.extend_from_slice(&self.body[start..]);
            self.body.truncate(before);
            let moved_warnings = self.warnings.split_off(warnings_before);
            let done = self.take_batch();
            self.body = next;
            self.warnings = moved_warnings;
            // The open batch had room for one more record before this push, so the new
            // one (holding one record) is below the record limit.
            self.records.push(meta.shifted(1 - start as i64));
            return Ok(Some(Box::new(done)));
        }
        self.records.push(meta);
        if self.records.len() >= self.config.max_records {
            return Ok(Some(Box::new(self.take_batch())));
        }
        Ok(None)
    }

    /// Closes and returns the open batch, if it holds any record.
    pub fn finish(&mut self) -> Option<Batch> {
        if self.records.is_empty() {
            self.body.clear();
            return None;
        }
        Some(self.take_batch())
    }

    fn take_batch(&mut self) -> Batch {
        self.body.push(b']');
        self.last_body_len = self.body.len();
        self.last_records = self.records.len();
        let body = std::mem::take(&mut self.body);
        Batch {
            endpoint: self.config.endpoint,
            body: Bytes::from(body),
            records: std::mem::take(&mut self.records),
            warnings: std::mem::take(&mut self.warnings),
        }
    }
}

/// What every record of a batch shares, from its configuration.
fn context<'a>(config: &'a BatchConfig, token_field: &'a [u8]) -> Context<'a> {
    Context {
        token: config.token.expose(),
        token_field,
        endpoint: config.endpoint,
        override_token: config.override_token,
    }
}

/// A push's answer inside the crate: the closed batch and the refusal boxed, so that the
/// common answer (`Ok(None)`: every record but one in 2000) comes back in two registers.
/// As the public `Result<Option<Batch>, ValidationError>` it went through memory at each
/// return and was copied right after being written; the copies stalled on those stores
/// (`perf`: ~6% of the `ingest` benchmark's time). Boxing costs an allocation per batch
/// and per refused update.
pub(crate) type Pushed = Result<Option<Box<Batch>>, Box<ValidationError>>;

/// [`Pushed`] as the public API answers it.
fn unbox(pushed: Pushed) -> Result<Option<Batch>, ValidationError> {
    match pushed {
        Ok(batch) => Ok(batch.map(|batch| *batch)),
        Err(e) => Err(*e),
    }
}

/// The outcome of one input update in [`batches`]: part of a batch, or invalid.
pub type BatchItem = Result<Batch, ValidationError>;

/// Batches an iterator of updates lazily: yields each finished [`Batch`] and each
/// invalid update's [`ValidationError`] in input order, never holding more than one open
/// batch.
///
/// ```
/// use engage_core::{batches, BatchConfig, Endpoint, Token, Update};
/// let config = BatchConfig::new(Token::new("tok").unwrap(), Endpoint::Engage);
/// let updates = (0..4500).map(|i| Update::user(format!("u{i}")).add([("n", 1)]));
/// let sizes: Vec<usize> = batches(config, updates).map(|b| b.unwrap().len()).collect();
/// assert_eq!(sizes, [2000, 2000, 500]);
/// ```
pub fn batches<I>(config: BatchConfig, updates: I) -> Batches<I::IntoIter>
where
    I: IntoIterator<Item = Update>,
{
    Batches {
        batcher: Batcher::new(config),
        updates: updates.into_iter(),
        done: false,
    }
}

/// Iterator returned by [`batches`].
#[derive(Debug)]
pub struct Batches<I> {
    batcher: Batcher,
    updates: I,
    done: bool,
}

impl<I: Iterator<Item = Update>> Iterator for Batches<I> {
    type Item = BatchItem;

    fn next(&mut self) -> Option<BatchItem> {
        if self.done {
            return None;
        }
        for update in self.updates.by_ref() {
            match self.batcher.push(&update) {
                Ok(None) => continue,
                Ok(Some(batch)) => return Some(Ok(batch)),
                Err(e) => return Some(Err(e)),
            }
        }
        self.done = true;
        self.batcher.finish().map(Ok)
    }
}
