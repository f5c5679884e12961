//! Typed updates written to JSON bytes, validated in the same pass: once, when an update is
//! built ([`EncodedRecord`]); batching then copies those bytes behind the batch's token.
//!
//! No `serde_json::Value` tree: strings are escaped straight into the record's buffer,
//! numbers go through `itoa`/`zmij` stack buffers.

use crate::model::{
    Endpoint, Geolocation, Modifiers, Number, OpKind, Operation, ProfileId, ProfileRef, Properties,
    SerializeError, Value,
};
use crate::validate::rules::{self, Warnings, at};
use crate::validate::{Problem, RecordProblem, WarningKind};
use crate::wire::json::{extend_short, write_f64, write_int, write_number, write_str};
use crate::wire::raw::encode_raw;
use crate::wire::ser_json;
use crate::wire::text::TextRecord;
use crate::wire::update::{Update, UpdateKind};

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
            rules::string(property, s, warnings);
            write_str(out, s);
        }
        Value::DateTime(d) => {
            rules::date(d.unix_seconds())?;
            out.push(b'"');
            d.write_to(out);
            out.push(b'"');
        }
        Value::List(_) | Value::Object(_) if rules::nesting(depth).is_err() => {
            return Err(Problem::TooDeep);
        }
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
) -> Result<(), RecordProblem> {
    out.push(b'{');
    for (i, (name, value)) in props.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        rules::name(name, warnings);
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
) -> Result<EncodedIds, RecordProblem> {
    match &update.kind {
        UpdateKind::Typed { record, .. } => {
            let endpoint = record.endpoint();
            if endpoint != ctx.endpoint {
                return Err(RecordProblem::whole(Problem::WrongEndpoint(endpoint)));
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
        UpdateKind::Raw(json, repeated) => {
            let ids = encode_raw(out, json, ctx, warnings)?;
            for property in repeated {
                warnings.push((property.clone(), WarningKind::RepeatedKey));
            }
            Ok(ids)
        }
        UpdateKind::Text(text) => encode_text(out, text, ctx, warnings),
    }
}

/// Appends an update the one-pass reader took: its text behind the batch's token, its own
/// `$token` member cut out. One it cannot send as it is (another endpoint's, a different
/// token) goes through the full path, which names the problem as for any raw record.
pub(crate) fn encode_text<J: AsRef<[u8]>>(
    out: &mut Vec<u8>,
    text: &TextRecord<J>,
    ctx: &Context<'_>,
    warnings: &mut Warnings,
) -> Result<EncodedIds, RecordProblem> {
    let token_ok = text
        .token
        .is_none_or(|t| ctx.override_token || text.span(t.value) == ctx.token.as_bytes());
    if text.endpoint != ctx.endpoint || !token_ok {
        let parsed = crate::validate::parse_record(text.json.as_ref())
            .map_err(|_| RecordProblem::whole(Problem::NotAnObject))?;
        return encode_raw(out, &parsed.value, ctx, warnings);
    }
    let json = text.json.as_ref();
    let last = json.len() - 1;
    let (cut_from, cut_to) = text
        .token
        .map_or((1, 1), |t| (t.member.0 as usize, t.member.1 as usize));
    out.reserve(ctx.token_field.len() + json.len() + 2);
    out.push(b'{');
    out.extend_from_slice(ctx.token_field);
    out.push(b',');
    let base = out.len();
    out.extend_from_slice(&json[1..cut_from]);
    out.extend_from_slice(&json[cut_to..last]);
    out.push(b'}');
    // Where a byte of the record's text lands in `out`.
    let at = |p: u32| {
        let p = p as usize;
        if p >= cut_to {
            base + p - 1 - (cut_to - cut_from)
        } else {
            base + p - 1
        }
    };
    Ok(EncodedIds {
        id: (at(text.id.0), at(text.id.1)),
        key: text.key.map(|(a, b)| (at(a), at(b))),
        idempotent: text.kind.is_idempotent(),
    })
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

/// What encoding found. RecordProblems are reported in this order when the update is pushed: the
/// profile's, the operation's (kept whole so it can still be inspected), the modifiers'.
#[derive(Debug, Clone, Default, PartialEq)]
struct Issues {
    /// What Mixpanel would truncate.
    warnings: Warnings,
    profile_fault: Option<RecordProblem>,
    rejected: Option<Rejected>,
    modifiers_fault: Option<RecordProblem>,
}

/// An operation that cannot be sent, and why.
#[derive(Debug, Clone, PartialEq)]
struct Rejected {
    operation: Operation,
    fault: RecordProblem,
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
    fault: Option<RecordProblem>,
}

/// What is wrong with `profile` as the profile of a `kind` update: an empty id, or an
/// operation `/groups` does not document. The first problem found, as reported.
fn profile_fault(profile: ProfileRef<'_>, kind: OpKind) -> Option<RecordProblem> {
    let problem =
        |property: &'static str, problem: Problem| Some(RecordProblem::at(property, problem));
    match profile {
        ProfileRef::User("") => problem("$distinct_id", Problem::Empty("$distinct_id")),
        ProfileRef::User(_) => None,
        ProfileRef::Group { key: "", .. } => problem("$group_key", Problem::Empty("$group_key")),
        ProfileRef::Group { id: "", .. } => problem("$group_id", Problem::Empty("$group_id")),
        ProfileRef::Group { .. } if !kind.on_groups() => {
            let op = kind.key();
            problem(op, Problem::NotForGroups(op.into()))
        }
        ProfileRef::Group { .. } => None,
    }
}

/// Appends `,"$distinct_id":"…"` or `,"$group_key":"…","$group_id":"…"`; returns the
/// spans in `out` of the id's JSON string and the group key's, quotes included.
fn write_ids(
    out: &mut Vec<u8>,
    profile: ProfileRef<'_>,
) -> ((usize, usize), Option<(usize, usize)>) {
    match profile {
        ProfileRef::User(distinct_id) => {
            out.extend_from_slice(b",\"$distinct_id\":");
            let start = out.len();
            write_str(out, distinct_id);
            ((start, out.len()), None)
        }
        ProfileRef::Group { key, id } => {
            out.extend_from_slice(b",\"$group_key\":");
            let key_start = out.len();
            write_str(out, key);
            let key_span = (key_start, out.len());
            out.extend_from_slice(b",\"$group_id\":");
            let start = out.len();
            write_str(out, id);
            ((start, out.len()), Some(key_span))
        }
    }
}

/// Appends `,"$set":` or `,"$set_once":`, in fixed-size moves rather than a call to
/// `memcpy`.
fn write_operation_key(out: &mut Vec<u8>, kind: OpKind) {
    out.push(b',');
    extend_short(out, kind.field());
}

/// `$set` (or `$set_once`) of a `Serialize` struct or map written straight into a batch
/// body, behind the batch's token: no record buffer, no second copy. `None` when it needs
/// the checked path (a profile fault, another endpoint, anything `ser_json` stops at):
/// the caller truncates `out` and builds the update through [`Properties`]
/// ([`EncodedRecord::from_tree`]), which writes the same bytes or names the problem.
pub(crate) fn encode_serialized<T: serde::Serialize + ?Sized>(
    out: &mut Vec<u8>,
    profile: ProfileRef<'_>,
    once: bool,
    value: &T,
    ctx: &Context<'_>,
) -> Option<EncodedIds> {
    let kind = set_kind(once);
    if profile.endpoint() != ctx.endpoint || profile_fault(profile, kind).is_some() {
        return None;
    }
    out.push(b'{');
    out.extend_from_slice(ctx.token_field);
    let (id, key) = write_ids(out, profile);
    write_operation_key(out, kind);
    ser_json::write_properties(out, value).ok()?;
    out.push(b'}');
    Some(EncodedIds {
        id,
        key,
        idempotent: kind.is_idempotent(),
    })
}

/// `$set_once` if `once`, else `$set`: what a `Serialize` value is written as.
fn set_kind(once: bool) -> OpKind {
    if once { OpKind::SetOnce } else { OpKind::Set }
}

impl Head {
    fn new(profile: ProfileRef<'_>, kind: OpKind) -> Head {
        // Room for a typical record and its modifiers, so that building it does not
        // reallocate (a `$set` of a few properties plus `$ip` and `$time` is ~220 bytes).
        let mut json = scratch::take();
        let fault = profile_fault(profile, kind);
        let (id, key) = write_ids(&mut json, profile);
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
        let kind = set_kind(once);
        let mut head = Head::new(profile, kind);
        let operation_at = head.json.len();
        write_operation_key(&mut head.json, kind);
        if ser_json::write_properties(&mut head.json, value).is_ok() {
            return Ok(head.finish(kind, operation_at, Vec::new(), None));
        }
        scratch::give_back(head.json);
        Self::from_tree(profile, once, value)
    }

    /// The checked path of [`from_serialize`](Self::from_serialize) alone, through
    /// [`Properties`]: it names the property at fault.
    pub(crate) fn from_tree<T: serde::Serialize + ?Sized>(
        profile: ProfileRef<'_>,
        once: bool,
        value: &T,
    ) -> Result<Self, SerializeError> {
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
    pub(crate) fn warnings(&self) -> &[(String, crate::validate::WarningKind)] {
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
    pub(crate) fn fault(&self) -> Option<&RecordProblem> {
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

fn write_modifiers(out: &mut Vec<u8>, modifiers: &Modifiers) -> Result<(), RecordProblem> {
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
            fault.get_or_insert(RecordProblem::at("$latitude", p));
        }
        out.extend_from_slice(b",\"$longitude\":");
        if let Err(p) = write_f64(out, lon) {
            fault.get_or_insert(RecordProblem::at("$longitude", p));
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
) -> Result<(), RecordProblem> {
    out.extend_from_slice(OpKind::of(operation).field());
    match operation {
        Operation::Set(p) | Operation::SetOnce(p) | Operation::Append(p) | Operation::Remove(p) => {
            write_properties(out, &p.0, warnings)?;
        }
        Operation::Add(entries) => {
            out.push(b'{');
            for (i, (name, n)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                rules::name(name, warnings);
                write_str(out, name);
                out.push(b':');
                write_number(out, *n).map_err(at(name))?;
            }
            out.push(b'}');
        }
        Operation::Union(entries) => {
            out.push(b'{');
            for (i, (name, items)) in entries.iter().enumerate() {
                rules::union_list(name, items, |item| {
                    matches!(
                        item,
                        Value::String(_) | Value::Int(_) | Value::UInt(_) | Value::Float(_)
                    )
                })?;
                if i > 0 {
                    out.push(b',');
                }
                rules::name(name, warnings);
                write_str(out, name);
                out.extend_from_slice(b":[");
                for (j, item) in items.iter().enumerate() {
                    if j > 0 {
                        out.push(b',');
                    }
                    write_value(out, item, name, warnings).map_err(at(name))?;
                }
                out.push(b']');
            }
            out.push(b'}');
        }
        Operation::Unset(names) => {
            rules::unset_list(names.len())?;
            out.push(b'[');
            for (i, name) in names.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                rules::name(name, warnings);
                write_str(out, name);
            }
            out.push(b']');
        }
        Operation::Delete => out.extend_from_slice(b"\"\""),
    }
    // Last, as a raw record's parser reports them after the checks.
    match operation {
        Operation::Set(p) | Operation::SetOnce(p) | Operation::Append(p) | Operation::Remove(p) => {
            rules::repeated_keys(p.0.iter().map(|(n, v)| (n.as_str(), Some(v))), warnings);
        }
        Operation::Add(entries) => {
            rules::repeated_keys(entries.iter().map(|(n, _)| (n.as_str(), None)), warnings);
        }
        Operation::Union(entries) => {
            rules::repeated_keys(entries.iter().map(|(n, _)| (n.as_str(), None)), warnings);
        }
        Operation::Unset(_) | Operation::Delete => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize)]
    struct Customer {
        name: &'static str,
        seats: u32,
        tags: Vec<&'static str>,
    }

    fn ctx() -> Context<'static> {
        Context {
            token: "tok",
            token_field: br#""$token":"tok""#,
            endpoint: Endpoint::Engage,
            override_token: false,
        }
    }

    /// The batcher's direct path gives the same bytes as the checked path whatever it
    /// does, so only a test here can tell that it runs at all: a plain struct must be
    /// written by it, and what it cannot judge must be left to the checked path.
    #[test]
    fn the_direct_writer_takes_a_plain_struct_and_leaves_the_rest() {
        let plain = Customer {
            name: "Zoë",
            seats: 3,
            tags: vec!["a", "b"],
        };
        let mut out = b"[".to_vec();
        let ids = encode_serialized(&mut out, ProfileRef::User("u1"), false, &plain, &ctx())
            .expect("a plain struct goes the direct way");
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"[{"$token":"tok","$distinct_id":"u1","$set":{"name":"Zoë","seats":3,"tags":["a","b"]}}"#
        );
        assert_eq!(&out[ids.id.0..ids.id.1], br#""u1""#);
        assert!(ids.idempotent);
        let group = ProfileRef::Group {
            key: "company",
            id: "acme",
        };
        let groups = Context {
            endpoint: Endpoint::Groups,
            ..ctx()
        };
        let mut out = Vec::new();
        let ids = encode_serialized(&mut out, group, true, &plain, &groups).expect("direct");
        assert_eq!(
            &out[ids.key.unwrap().0..ids.key.unwrap().1],
            br#""company""#
        );
        assert!(
            std::str::from_utf8(&out)
                .unwrap()
                .contains(r#","$set_once":{"#)
        );
        // Left to the checked path: a NaN, an empty id, the other endpoint, a long string.
        let nan = [("score", f64::NAN)]
            .into_iter()
            .collect::<std::collections::BTreeMap<_, _>>();
        let long = [("s", "x".repeat(300))]
            .into_iter()
            .collect::<std::collections::BTreeMap<_, _>>();
        for (profile, value, ctx) in [
            (ProfileRef::User("u1"), &nan as &dyn erased::Value, ctx()),
            (ProfileRef::User(""), &plain, ctx()),
            (ProfileRef::User("u1"), &plain, groups),
            (ProfileRef::User("u1"), &long, ctx()),
        ] {
            let mut out = Vec::new();
            assert!(value.direct(&mut out, profile, &ctx).is_none());
        }
    }

    /// A way to hold values of different types in one list for the test above.
    mod erased {
        use super::*;
        pub(super) trait Value {
            fn direct(
                &self,
                out: &mut Vec<u8>,
                p: ProfileRef<'_>,
                ctx: &Context<'_>,
            ) -> Option<EncodedIds>;
        }
        impl<T: serde::Serialize> Value for T {
            fn direct(
                &self,
                out: &mut Vec<u8>,
                p: ProfileRef<'_>,
                ctx: &Context<'_>,
            ) -> Option<EncodedIds> {
                encode_serialized(out, p, false, self, ctx)
            }
        }
    }
}
