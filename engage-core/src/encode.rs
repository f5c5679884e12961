//! Writing updates to JSON bytes, validating in the same pass: once, when an update is
//! built ([`EncodedRecord`]); batching then copies those bytes behind the batch's token.
//!
//! No `serde_json::Value` tree: strings are escaped straight into the record's buffer,
//! numbers go through `itoa`/`zmij` stack buffers. Raw updates (`Update::raw`) are the
//! exception: checked and written when they are batched, since the batch's token decides
//! whether they are valid.

use crate::check::{GroupOperations, check_record};
use crate::error::{Problem, WarningKind};
use crate::ser::SerializeError;
use crate::ser_json;
use crate::update::{
    Endpoint, Geolocation, Modifiers, Operation, ProfileId, ProfileRef, Properties, Update,
    UpdateKind,
};
use crate::value::{Number, Value};

/// Longest property name Mixpanel keeps, in characters.
pub(crate) const MAX_NAME_CHARS: usize = 255;
/// Longest string value Mixpanel keeps, in bytes.
pub(crate) const MAX_STRING_BYTES: usize = 255;

/// 0: copy as is; `u`: `\u00XX`; otherwise the letter after the backslash.
static ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = b'u';
        i += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0c] = b'f';
    t[0x0d] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

static HEX: &[u8; 16] = b"0123456789abcdef";

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Whether any of the 8 bytes in `chunk` needs escaping: below 0x20, `"` or `\\`.
/// Bit tricks on a whole word ("has less than" / "has zero byte"): exact for the
/// existence test, which is all the fast path needs.
#[inline(always)]
fn any_to_escape(chunk: u64) -> bool {
    let control = chunk.wrapping_sub(LO * 0x20) & !chunk & HI;
    let q = chunk ^ (LO * u64::from(b'"'));
    let quote = q.wrapping_sub(LO) & !q & HI;
    let b = chunk ^ (LO * u64::from(b'\\'));
    let backslash = b.wrapping_sub(LO) & !b & HI;
    (control | quote | backslash) != 0
}

/// Escapes `bytes[from..to]` byte by byte, copying runs; `start` is the first byte not
/// yet copied. Returns the new `start`.
fn escape_range(
    out: &mut Vec<u8>,
    bytes: &[u8],
    from: usize,
    to: usize,
    mut start: usize,
) -> usize {
    let mut i = from;
    while i < to {
        let b = bytes[i];
        let esc = ESCAPE[b as usize];
        if esc != 0 {
            out.extend_from_slice(&bytes[start..i]);
            if esc == b'u' {
                out.extend_from_slice(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[(b >> 4) as usize],
                    HEX[(b & 0xf) as usize],
                ]);
            } else {
                out.extend_from_slice(&[b'\\', esc]);
            }
            start = i + 1;
        }
        i += 1;
    }
    start
}

/// Whether any byte of `bytes` needs escaping, a word at a time: 8-byte words, the tail as
/// the last (overlapping) word, short strings as two overlapping 4-byte halves.
#[inline]
fn needs_escape(bytes: &[u8]) -> bool {
    let len = bytes.len();
    if len >= 8 {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            if any_to_escape(u64::from_le_bytes(word.try_into().expect("8 bytes"))) {
                return true;
            }
        }
        !words.remainder().is_empty()
            && any_to_escape(u64::from_le_bytes(
                bytes[len - 8..].try_into().expect("8 bytes"),
            ))
    } else if len >= 4 {
        let low = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes"));
        let high = u32::from_le_bytes(bytes[len - 4..].try_into().expect("4 bytes"));
        any_to_escape(u64::from(low) | (u64::from(high) << 32))
    } else {
        bytes.iter().any(|&b| ESCAPE[b as usize] != 0)
    }
}

/// Writes `s` as a JSON string literal, quotes included. The common string needs no
/// escaping: one word test per 8 bytes, then one copy.
#[inline]
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    if needs_escape(bytes) {
        return write_escaped(out, bytes);
    }
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    out.extend_from_slice(bytes);
    out.push(b'"');
}

/// The slow path of [`write_str`]: only words holding a byte to escape are walked byte by
/// byte; runs between escapes are copied whole.
#[cold]
#[inline(never)]
fn write_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len() + 8);
    out.push(b'"');
    let mut start = 0;
    let len = bytes.len();
    let mut i = 0;
    while i + 8 <= len {
        let word = u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
        if any_to_escape(word) {
            start = escape_range(out, bytes, i, i + 8, start);
        }
        i += 8;
    }
    start = escape_range(out, bytes, i, len, start);
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Writes any integer in decimal.
#[inline]
pub(crate) fn write_int(out: &mut Vec<u8>, v: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// Writes a float in its shortest round-trip form; NaN and infinities have none.
#[inline]
pub(crate) fn write_f64(out: &mut Vec<u8>, v: f64) -> Result<(), Problem> {
    if !v.is_finite() {
        return Err(Problem::NonFiniteNumber);
    }
    out.extend_from_slice(zmij::Buffer::new().format_finite(v).as_bytes());
    Ok(())
}

fn write_number(out: &mut Vec<u8>, n: Number) -> Result<(), Problem> {
    match n {
        Number::Int(i) => write_int(out, i),
        Number::UInt(u) => write_int(out, u),
        Number::Float(f) => write_f64(out, f)?,
    }
    Ok(())
}

/// Where a failure happened: the property, and what.
pub(crate) type Fault = (Option<String>, Problem);

fn at(property: &str) -> impl FnOnce(Problem) -> Fault + '_ {
    move |p| (Some(property.to_owned()), p)
}

/// Warnings found while encoding one update: (property, kind).
pub(crate) type Warnings = Vec<(String, WarningKind)>;

#[inline]
fn check_name(name: &str, warnings: &mut Warnings) {
    if name.len() > MAX_NAME_CHARS {
        let chars = name.chars().count();
        if chars > MAX_NAME_CHARS {
            warnings.push((name.to_owned(), WarningKind::NameTooLong { chars }));
        }
    }
}

#[inline]
fn check_string(property: &str, s: &str, warnings: &mut Warnings) {
    if s.len() > MAX_STRING_BYTES {
        warnings.push((
            property.to_owned(),
            WarningKind::StringTooLong { bytes: s.len() },
        ));
    }
}

/// Deepest nesting of lists and objects accepted (Mixpanel keeps 3 levels of objects; this
/// only guards the recursion).
pub(crate) const MAX_DEPTH: u32 = 32;

/// First and last second Mixpanel's `YYYY-MM-DDTHH:MM:SS` form can write (years 0–9999).
const DATE_RANGE: std::ops::RangeInclusive<i64> = -62_167_219_200..=253_402_300_799;

fn write_value(
    out: &mut Vec<u8>,
    v: &Value,
    property: &str,
    warnings: &mut Warnings,
) -> Result<(), Problem> {
    write_nested(out, v, property, warnings, 0)
}

fn write_nested(
    out: &mut Vec<u8>,
    v: &Value,
    property: &str,
    warnings: &mut Warnings,
    depth: u32,
) -> Result<(), Problem> {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Int(i) => write_int(out, *i),
        Value::UInt(u) => write_int(out, *u),
        Value::Float(f) => write_f64(out, *f)?,
        Value::String(s) => {
            check_string(property, s, warnings);
            write_str(out, s);
        }
        Value::DateTime(d) => {
            if !DATE_RANGE.contains(&d.unix_seconds()) {
                return Err(Problem::DateOutOfRange);
            }
            out.push(b'"');
            d.write_to(out);
            out.push(b'"');
        }
        Value::List(_) | Value::Object(_) if depth >= MAX_DEPTH => return Err(Problem::TooDeep),
        Value::List(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_nested(out, item, property, warnings, depth + 1)?;
            }
            out.push(b']');
        }
        Value::Object(entries) => {
            out.push(b'{');
            for (i, (k, item)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, k);
                out.push(b':');
                write_nested(out, item, property, warnings, depth + 1)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

fn write_properties(
    out: &mut Vec<u8>,
    props: &[(String, Value)],
    warnings: &mut Warnings,
) -> Result<(), Fault> {
    out.push(b'{');
    for (i, (name, value)) in props.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        check_name(name, warnings);
        write_str(out, name);
        out.push(b':');
        write_value(out, value, name, warnings).map_err(at(name))?;
    }
    out.push(b'}');
    Ok(())
}

/// What the batcher keeps about an encoded record: spans are absolute positions in the
/// buffer, of the id strings' JSON forms (quotes included).
#[derive(Debug, Clone, Copy)]
pub(crate) struct EncodedIds {
    pub(crate) id: (usize, usize),
    pub(crate) key: Option<(usize, usize)>,
    pub(crate) idempotent: bool,
}

/// What every record of a batch shares.
pub(crate) struct Context<'a> {
    /// The configured token.
    pub(crate) token: &'a str,
    /// `"$token":"<escaped token>"` ready to copy.
    pub(crate) token_field: &'a [u8],
    pub(crate) endpoint: Endpoint,
    /// Replace a raw update's different token instead of rejecting it.
    pub(crate) override_token: bool,
}

/// Appends one update object to `out`. On error `out` may hold a partial record: the
/// caller truncates it.
pub(crate) fn encode_update(
    out: &mut Vec<u8>,
    update: &Update,
    ctx: &Context<'_>,
    warnings: &mut Warnings,
) -> Result<EncodedIds, Fault> {
    match &update.kind {
        UpdateKind::Typed { record, .. } => {
            let endpoint = record.endpoint();
            if endpoint != ctx.endpoint {
                return Err((None, Problem::WrongEndpoint(endpoint)));
            }
            if let Some(fault) = record.fault() {
                return Err(fault.clone());
            }
            out.push(b'{');
            out.extend_from_slice(ctx.token_field);
            let base = out.len();
            out.extend_from_slice(&record.json);
            out.push(b'}');
            warnings.extend_from_slice(record.warnings());
            let at = |(a, b): (usize, usize)| (base + a, base + b);
            Ok(EncodedIds {
                id: at(record.id),
                key: record.key.map(at),
                idempotent: record.kind.is_idempotent(),
            })
        }
        UpdateKind::Raw(json) => encode_raw(out, json, ctx, warnings),
    }
}

/// Which operation an update carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpKind {
    Set,
    SetOnce,
    Add,
    Union,
    Append,
    Remove,
    Unset,
    Delete,
}

impl OpKind {
    pub(crate) fn of(operation: &Operation) -> OpKind {
        match operation {
            Operation::Set(_) => OpKind::Set,
            Operation::SetOnce(_) => OpKind::SetOnce,
            Operation::Add(_) => OpKind::Add,
            Operation::Union(_) => OpKind::Union,
            Operation::Append(_) => OpKind::Append,
            Operation::Remove(_) => OpKind::Remove,
            Operation::Unset(_) => OpKind::Unset,
            Operation::Delete => OpKind::Delete,
        }
    }

    pub(crate) fn key(self) -> &'static str {
        match self {
            OpKind::Set => "$set",
            OpKind::SetOnce => "$set_once",
            OpKind::Add => "$add",
            OpKind::Union => "$union",
            OpKind::Append => "$append",
            OpKind::Remove => "$remove",
            OpKind::Unset => "$unset",
            OpKind::Delete => "$delete",
        }
    }

    pub(crate) fn is_idempotent(self) -> bool {
        !matches!(self, OpKind::Add | OpKind::Append)
    }

    /// Whether `/groups` documents it.
    fn on_groups(self) -> bool {
        !matches!(self, OpKind::Add | OpKind::Append)
    }
}

/// A typed update as it goes on the wire, minus the batch's token: validated and encoded
/// once, when the update is built. Batching, re-batching after a 413 and every retry
/// copy these bytes; nothing is escaped twice.
#[derive(Clone, PartialEq)]
pub(crate) struct EncodedRecord {
    pub(crate) kind: OpKind,
    /// `,"$distinct_id":"…","$set":{…},"$ip":"…"`: everything after `{"$token":"…"`
    /// but the closing brace.
    pub(crate) json: Vec<u8>,
    /// Spans in `json` of the id's JSON string (and the group key's), quotes included.
    pub(crate) id: (usize, usize),
    pub(crate) key: Option<(usize, usize)>,
    /// Where the operation and the modifiers start in `json`.
    operation_at: usize,
    modifiers_at: usize,
    /// Warnings and faults: rare, so kept out of line.
    issues: Option<Box<Issues>>,
}

/// What encoding found. Faults are reported in this order when the update is pushed: the
/// profile's, the operation's (kept whole so it can still be inspected), the modifiers'.
#[derive(Debug, Clone, Default, PartialEq)]
struct Issues {
    /// What Mixpanel would truncate.
    warnings: Warnings,
    profile_fault: Option<Fault>,
    rejected: Option<Rejected>,
    modifiers_fault: Option<Fault>,
}

/// An operation that cannot be sent, and why.
#[derive(Debug, Clone, PartialEq)]
struct Rejected {
    operation: Operation,
    fault: Fault,
}

/// A per-thread buffer records are written into before being copied out at their size:
/// writing into a roomy buffer never reallocates, and the copy keeps built updates compact
/// (often held by the thousand before they are batched; fewer cache lines to read then).
mod scratch {
    use std::cell::Cell;

    thread_local! {
        static SCRATCH: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
    }

    /// Room kept after a record for the usual modifiers (`$ip` and `$time` take ~45 bytes),
    /// which are added after the update is built.
    const MODIFIERS_ROOM: usize = 48;

    /// An empty buffer: the thread's, or a new one (nested use, thread shutting down).
    pub(super) fn take() -> Vec<u8> {
        let mut buf = SCRATCH.try_with(Cell::take).unwrap_or_default();
        buf.clear();
        buf.reserve(512);
        buf
    }

    /// Returns the buffer for the next record; an unusually large one is dropped.
    pub(super) fn give_back(buf: Vec<u8>) {
        if buf.capacity() <= 64 * 1024 {
            let _ = SCRATCH.try_with(|s| s.set(buf));
        }
    }

    /// The record at its size (plus room for modifiers); the buffer goes back.
    pub(super) fn copy_out(buf: Vec<u8>) -> Vec<u8> {
        let mut json = Vec::with_capacity(buf.len() + MODIFIERS_ROOM);
        json.extend_from_slice(&buf);
        give_back(buf);
        json
    }
}

/// The start of a record: its ids.
struct Head {
    json: Vec<u8>,
    id: (usize, usize),
    key: Option<(usize, usize)>,
    fault: Option<Fault>,
}

impl Head {
    fn new(profile: ProfileRef<'_>, kind: OpKind) -> Head {
        // Room for a typical record and its modifiers, so that building it does not
        // reallocate (a `$set` of a few properties plus `$ip` and `$time` is ~220 bytes).
        let mut json = scratch::take();
        let mut fault = None;
        let mut check = |failed: bool, property: &'static str, problem: Problem| {
            if failed && fault.is_none() {
                fault = Some((Some(property.to_owned()), problem));
            }
        };
        let (id, key) = match profile {
            ProfileRef::User(distinct_id) => {
                check(
                    distinct_id.is_empty(),
                    "$distinct_id",
                    Problem::Empty("$distinct_id"),
                );
                json.extend_from_slice(b",\"$distinct_id\":");
                let start = json.len();
                write_str(&mut json, distinct_id);
                ((start, json.len()), None)
            }
            ProfileRef::Group { key, id } => {
                check(key.is_empty(), "$group_key", Problem::Empty("$group_key"));
                check(id.is_empty(), "$group_id", Problem::Empty("$group_id"));
                let op = kind.key();
                check(!kind.on_groups(), op, Problem::NotForGroups(op.into()));
                json.extend_from_slice(b",\"$group_key\":");
                let key_start = json.len();
                write_str(&mut json, key);
                let key_span = (key_start, json.len());
                json.extend_from_slice(b",\"$group_id\":");
                let start = json.len();
                write_str(&mut json, id);
                ((start, json.len()), Some(key_span))
            }
        };
        Head {
            json,
            id,
            key,
            fault,
        }
    }

    fn finish(
        self,
        kind: OpKind,
        operation_at: usize,
        warnings: Warnings,
        rejected: Option<Rejected>,
    ) -> EncodedRecord {
        let profile_fault = self.fault;
        let issues =
            (!warnings.is_empty() || profile_fault.is_some() || rejected.is_some()).then(|| {
                Box::new(Issues {
                    warnings,
                    profile_fault,
                    rejected,
                    modifiers_fault: None,
                })
            });
        let json = scratch::copy_out(self.json);
        EncodedRecord {
            kind,
            modifiers_at: json.len(),
            json,
            id: self.id,
            key: self.key,
            operation_at,
            issues,
        }
    }
}

impl EncodedRecord {
    pub(crate) fn new(profile: ProfileRef<'_>, operation: Operation) -> Self {
        let kind = OpKind::of(&operation);
        let mut head = Head::new(profile, kind);
        let operation_at = head.json.len();
        head.json.push(b',');
        let mut warnings = Vec::new();
        let rejected = match write_operation(&mut head.json, &operation, &mut warnings) {
            Ok(()) => None,
            Err(fault) => {
                head.json.truncate(operation_at);
                Some(Rejected { operation, fault })
            }
        };
        head.finish(kind, operation_at, warnings, rejected)
    }

    /// `$set` or `$set_once` of a `Serialize` struct or map, written straight to JSON.
    /// On the rare fallback the value is serialized a second time.
    /// Whatever the fast path does not handle (see `ser_json`) goes through
    /// [`Properties::from_serialize`] and [`EncodedRecord::new`], with the same bytes.
    pub(crate) fn from_serialize<T: serde::Serialize + ?Sized>(
        profile: ProfileRef<'_>,
        once: bool,
        value: &T,
    ) -> Result<Self, SerializeError> {
        let kind = if once { OpKind::SetOnce } else { OpKind::Set };
        let mut head = Head::new(profile, kind);
        let operation_at = head.json.len();
        head.json.extend_from_slice(b",\"");
        head.json.extend_from_slice(kind.key().as_bytes());
        head.json.extend_from_slice(b"\":");
        if ser_json::write_properties(&mut head.json, value).is_ok() {
            return Ok(head.finish(kind, operation_at, Vec::new(), None));
        }
        scratch::give_back(head.json);
        let props = Properties::from_serialize(value)?;
        let operation = if once {
            Operation::SetOnce(props)
        } else {
            Operation::Set(props)
        };
        Ok(Self::new(profile, operation))
    }

    /// `/groups` for a record with a group key, else `/engage`.
    pub(crate) fn endpoint(&self) -> Endpoint {
        if self.key.is_some() {
            Endpoint::Groups
        } else {
            Endpoint::Engage
        }
    }

    /// The profile, read back from the record's JSON (the ids are not kept twice).
    pub(crate) fn profile(&self) -> Option<ProfileId> {
        let text = |(a, b): (usize, usize)| -> Option<String> {
            serde_json::from_slice(self.json.get(a..b)?).ok()
        };
        Some(match self.key {
            None => ProfileId::User {
                distinct_id: text(self.id)?,
            },
            Some(key) => ProfileId::Group {
                key: text(key)?,
                id: text(self.id)?,
            },
        })
    }

    /// What Mixpanel would truncate in this update.
    pub(crate) fn warnings(&self) -> &[(String, WarningKind)] {
        self.issues.as_ref().map_or(&[], |i| &i.warnings)
    }

    /// Rewrites the modifiers after one changed.
    pub(crate) fn set_modifiers(&mut self, modifiers: &Modifiers) {
        self.json.truncate(self.modifiers_at);
        let fault = write_modifiers(&mut self.json, modifiers).err();
        match (&mut self.issues, fault) {
            (Some(issues), fault) => {
                issues.modifiers_fault = fault;
                // A fixed modifier leaves nothing behind: equal updates stay `==`.
                if **issues == Issues::default() {
                    self.issues = None;
                }
            }
            (None, None) => {}
            (None, Some(fault)) => {
                self.issues = Some(Box::new(Issues {
                    modifiers_fault: Some(fault),
                    ..Issues::default()
                }))
            }
        }
    }

    /// The first problem that keeps the update from being sent.
    pub(crate) fn fault(&self) -> Option<&Fault> {
        let issues = self.issues.as_deref()?;
        issues
            .profile_fault
            .as_ref()
            .or(issues.rejected.as_ref().map(|r| &r.fault))
            .or(issues.modifiers_fault.as_ref())
    }

    /// The operation back from its JSON (dates come back as their text, integers as
    /// `Int` when they fit). `None` only if the JSON were not ours, which cannot happen.
    pub(crate) fn decode(&self) -> Option<Operation> {
        if let Some(rejected) = self.issues.as_ref().and_then(|i| i.rejected.as_ref()) {
            return Some(rejected.operation.clone());
        }
        // Skip `,"$set":`.
        let value_json = self
            .json
            .get(self.operation_at + self.kind.key().len() + 4..self.modifiers_at)?;
        let value: Value = serde_json::from_slice(value_json).ok()?;
        let entries = |value: Value| match value {
            Value::Object(entries) => Some(entries),
            _ => None,
        };
        Some(match self.kind {
            OpKind::Set => Operation::Set(Properties(entries(value)?)),
            OpKind::SetOnce => Operation::SetOnce(Properties(entries(value)?)),
            OpKind::Append => Operation::Append(Properties(entries(value)?)),
            OpKind::Remove => Operation::Remove(Properties(entries(value)?)),
            OpKind::Add => Operation::Add(
                entries(value)?
                    .into_iter()
                    .map(|(name, v)| {
                        let n = match v {
                            Value::Int(i) => Number::Int(i),
                            Value::UInt(u) => Number::UInt(u),
                            Value::Float(f) => Number::Float(f),
                            _ => return None,
                        };
                        Some((name, n))
                    })
                    .collect::<Option<_>>()?,
            ),
            OpKind::Union => Operation::Union(
                entries(value)?
                    .into_iter()
                    .map(|(name, v)| match v {
                        Value::List(items) => Some((name, items)),
                        _ => None,
                    })
                    .collect::<Option<_>>()?,
            ),
            OpKind::Unset => match value {
                Value::List(names) => Operation::Unset(
                    names
                        .into_iter()
                        .map(|n| match n {
                            Value::String(s) => Some(s),
                            _ => None,
                        })
                        .collect::<Option<_>>()?,
                ),
                _ => return None,
            },
            OpKind::Delete => Operation::Delete,
        })
    }
}

impl std::fmt::Debug for EncodedRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("EncodedRecord");
        d.field("json", &String::from_utf8_lossy(&self.json));
        if !self.warnings().is_empty() {
            d.field("warnings", &self.warnings());
        }
        if let Some(fault) = self.fault() {
            d.field("fault", fault);
        }
        d.finish()
    }
}

fn write_modifiers(out: &mut Vec<u8>, modifiers: &Modifiers) -> Result<(), Fault> {
    if let Some(ip) = &modifiers.ip {
        out.extend_from_slice(b",\"$ip\":");
        match ip {
            Geolocation::FromIp(ip) => write_str(out, ip),
            Geolocation::Skip => out.extend_from_slice(b"\"0\""),
        }
    }
    let mut fault = None;
    if let Some((lat, lon)) = modifiers.location {
        out.extend_from_slice(b",\"$latitude\":");
        if let Err(p) = write_f64(out, lat) {
            fault.get_or_insert((Some("$latitude".to_owned()), p));
        }
        out.extend_from_slice(b",\"$longitude\":");
        if let Err(p) = write_f64(out, lon) {
            fault.get_or_insert((Some("$longitude".to_owned()), p));
        }
    }
    if let Some(ms) = modifiers.time_ms {
        out.extend_from_slice(b",\"$time\":");
        write_int(out, ms);
    }
    if modifiers.ignore_time {
        out.extend_from_slice(b",\"$ignore_time\":true");
    }
    if modifiers.ignore_alias {
        out.extend_from_slice(b",\"$ignore_alias\":true");
    }
    fault.map_or(Ok(()), Err)
}

fn write_operation(
    out: &mut Vec<u8>,
    operation: &Operation,
    warnings: &mut Warnings,
) -> Result<(), Fault> {
    match operation {
        Operation::Set(p) => {
            out.extend_from_slice(b"\"$set\":");
            write_properties(out, &p.0, warnings)?;
        }
        Operation::SetOnce(p) => {
            out.extend_from_slice(b"\"$set_once\":");
            write_properties(out, &p.0, warnings)?;
        }
        Operation::Append(p) => {
            out.extend_from_slice(b"\"$append\":");
            write_properties(out, &p.0, warnings)?;
        }
        Operation::Remove(p) => {
            out.extend_from_slice(b"\"$remove\":");
            write_properties(out, &p.0, warnings)?;
        }
        Operation::Add(entries) => {
            out.extend_from_slice(b"\"$add\":{");
            for (i, (name, n)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                check_name(name, warnings);
                write_str(out, name);
                out.push(b':');
                write_number(out, *n).map_err(at(name))?;
            }
            out.push(b'}');
        }
        Operation::Union(entries) => {
            out.extend_from_slice(b"\"$union\":{");
            for (i, (name, items)) in entries.iter().enumerate() {
                if items.is_empty() {
                    return Err((Some(name.clone()), Problem::EmptyList));
                }
                if i > 0 {
                    out.push(b',');
                }
                check_name(name, warnings);
                write_str(out, name);
                out.extend_from_slice(b":[");
                for (j, item) in items.iter().enumerate() {
                    if j > 0 {
                        out.push(b',');
                    }
                    match item {
                        Value::String(_) | Value::Int(_) | Value::UInt(_) | Value::Float(_) => {
                            write_value(out, item, name, warnings).map_err(at(name))?
                        }
                        _ => return Err((Some(name.clone()), Problem::UnionItemNotScalar)),
                    }
                }
                out.push(b']');
            }
            out.push(b'}');
        }
        Operation::Unset(names) => {
            if names.is_empty() {
                return Err((Some("$unset".into()), Problem::EmptyList));
            }
            out.extend_from_slice(b"\"$unset\":[");
            for (i, name) in names.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                check_name(name, warnings);
                write_str(out, name);
            }
            out.push(b']');
        }
        Operation::Delete => out.extend_from_slice(b"\"$delete\":\"\""),
    }
    Ok(())
}

fn encode_raw(
    out: &mut Vec<u8>,
    json: &serde_json::Value,
    ctx: &Context<'_>,
    warnings: &mut Warnings,
) -> Result<EncodedIds, Fault> {
    let checked = check_record(json, ctx.endpoint, GroupOperations::Any).map_err(|e| {
        // A user record sent to /groups (or the reverse) is named as such.
        let other = match ctx.endpoint {
            Endpoint::Engage => Endpoint::Groups,
            Endpoint::Groups => Endpoint::Engage,
        };
        if matches!(
            e.problem,
            Problem::GroupKeysOnUser | Problem::Missing("$group_key")
        ) && check_record(json, other, GroupOperations::Any).is_ok()
        {
            (None, Problem::WrongEndpoint(other))
        } else {
            (e.property, e.problem)
        }
    })?;
    if let Some(token) = checked.token
        && token != ctx.token
        && !ctx.override_token
    {
        return Err((Some("$token".into()), Problem::TokenMismatch));
    }
    let mut ids = EncodedIds {
        id: (0, 0),
        key: None,
        idempotent: !matches!(checked.operation, "$add" | "$append"),
    };
    out.push(b'{');
    out.extend_from_slice(ctx.token_field);
    for (key, value) in checked.object {
        match key.as_str() {
            "$token" => continue,
            "$distinct_id" | "$group_id" | "$group_key" => {
                out.push(b',');
                write_str(out, key);
                out.push(b':');
                let start = out.len();
                write_json(out, value, None, warnings);
                if key == "$group_key" {
                    ids.key = Some((start, out.len()));
                } else {
                    ids.id = (start, out.len());
                }
            }
            op if op == checked.operation && op != "$unset" && op != "$delete" => {
                out.push(b',');
                write_str(out, key);
                out.push(b':');
                match value {
                    serde_json::Value::Object(props) => {
                        out.push(b'{');
                        for (i, (name, v)) in props.iter().enumerate() {
                            if i > 0 {
                                out.push(b',');
                            }
                            check_name(name, warnings);
                            write_str(out, name);
                            out.push(b':');
                            write_json(out, v, Some(name), warnings);
                        }
                        out.push(b'}');
                    }
                    other => write_json(out, other, None, warnings),
                }
            }
            _ => {
                out.push(b',');
                write_str(out, key);
                out.push(b':');
                write_json(out, value, None, warnings);
            }
        }
    }
    out.push(b'}');
    Ok(ids)
}

/// Writes a `serde_json::Value` (always finite) with our escaper, warning on long strings
/// inside a property.
fn write_json(
    out: &mut Vec<u8>,
    v: &serde_json::Value,
    property: Option<&str>,
    warnings: &mut Warnings,
) {
    use serde_json::Value as J;
    match v {
        J::Null => out.extend_from_slice(b"null"),
        J::Bool(true) => out.extend_from_slice(b"true"),
        J::Bool(false) => out.extend_from_slice(b"false"),
        J::Number(n) => {
            if let Some(i) = n.as_i64() {
                write_int(out, i)
            } else if let Some(u) = n.as_u64() {
                write_int(out, u)
            } else {
                // serde_json numbers are finite; 0 stands in should that ever change.
                let f = n.as_f64().filter(|f| f.is_finite()).unwrap_or(0.0);
                let _ = write_f64(out, f);
            }
        }
        J::String(s) => {
            if let Some(p) = property {
                check_string(p, s, warnings);
            }
            write_str(out, s);
        }
        J::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json(out, item, property, warnings);
            }
            out.push(b']');
        }
        J::Object(entries) => {
            out.push(b'{');
            for (i, (k, item)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, k);
                out.push(b':');
                write_json(out, item, property, warnings);
            }
            out.push(b'}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_word_test_finds_every_byte_to_escape() {
        for b in 0u8..=255 {
            for pos in 0..8 {
                let mut word = [b'a'; 8];
                word[pos] = b;
                let needs = b < 0x20 || b == b'"' || b == b'\\';
                assert_eq!(
                    any_to_escape(u64::from_le_bytes(word)),
                    needs,
                    "byte {b:#x} at {pos}"
                );
            }
        }
        // Neighbouring high bytes never hide one.
        let word = [0xff, 0x1f, 0x80, b'"', 0xc3, 0xa9, b'\\', 0x00];
        assert!(any_to_escape(u64::from_le_bytes(word)));
    }

    #[test]
    fn long_strings_escape_like_json() {
        let s = "plain words then \"quotes\" and \\ and\n\tcontrols\u{1}é😀 over several words";
        let mut out = Vec::new();
        write_str(&mut out, s);
        assert_eq!(out, serde_json::to_vec(s).unwrap());
    }

    #[test]
    fn escapes_like_json() {
        let s = "q\"b\\n\nt\tc\u{1}\u{7f}é😀\u{2028}";
        let mut out = Vec::new();
        write_str(&mut out, s);
        let back: String = serde_json::from_slice(&out).unwrap();
        assert_eq!(back, s);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "\"q\\\"b\\\\n\\nt\\tc\\u0001\u{7f}é😀\u{2028}\""
        );
    }
}
