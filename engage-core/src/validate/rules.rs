//! The rules a record must follow, one function per rule. Every path that checks a record
//! asks these: typed updates as they are encoded ([`crate::wire`]), raw JSON records
//! ([`check_record`](crate::validate::check_record), which the emulator uses too). A
//! property test holds the paths to the same verdicts (`tests/one_definition.rs`).

use crate::model::{Endpoint, OpKind, Value};
use crate::validate::problem::{Problem, RecordProblem, WarningKind};

/// Longest property name Mixpanel keeps, in characters (longer ones are truncated).
pub const MAX_NAME_CHARS: usize = 255;
/// Longest string value Mixpanel keeps, in bytes (longer ones are truncated).
pub const MAX_STRING_BYTES: usize = 255;
/// Deepest nesting of lists and objects accepted (Mixpanel keeps 3 levels of objects; this
/// only guards the recursion).
pub const MAX_DEPTH: u32 = 32;
/// First and last second Mixpanel's `YYYY-MM-DDTHH:MM:SS` form can write (years 0–9999).
pub const DATE_RANGE: std::ops::RangeInclusive<i64> = -62_167_219_200..=253_402_300_799;

/// Modifiers an update may carry at its top level.
pub const MODIFIERS: [&str; 6] = [
    "$ip",
    "$latitude",
    "$longitude",
    "$time",
    "$ignore_time",
    "$ignore_alias",
];

/// Warnings found while checking one update: (property, kind).
pub(crate) type Warnings = Vec<(String, WarningKind)>;

/// The problem at `property`.
pub(crate) fn at(property: &str) -> impl FnOnce(Problem) -> RecordProblem + '_ {
    move |problem| RecordProblem::at(property, problem)
}

/// A property name: Mixpanel truncates one over 255 characters.
#[inline]
pub(crate) fn name(name: &str, warnings: &mut Warnings) {
    if name.len() > MAX_NAME_CHARS {
        let chars = name.chars().count();
        if chars > MAX_NAME_CHARS {
            warnings.push((name.to_owned(), WarningKind::NameTooLong { chars }));
        }
    }
}

/// A string value anywhere inside `property`: Mixpanel truncates one over 255 bytes.
#[inline]
pub(crate) fn string(property: &str, s: &str, warnings: &mut Warnings) {
    if s.len() > MAX_STRING_BYTES {
        warnings.push((
            property.to_owned(),
            WarningKind::StringTooLong { bytes: s.len() },
        ));
    }
}

/// Keys repeated in one object of a typed update: only the last value takes effect.
/// `entries` are an operation's properties (with their values, where they may nest
/// objects). Reported per top-level property, once, in the order the parser of a raw
/// record finds them ([`parse_record`](crate::validate::parse_record)): nested repeats
/// when their value ends, a repeated name at its second occurrence.
pub(crate) fn repeated_keys<'a>(
    entries: impl ExactSizeIterator<Item = (&'a str, Option<&'a Value>)> + Clone,
    warnings: &mut Warnings,
) {
    let many = entries.len() > 1;
    for (i, (name, value)) in entries.clone().enumerate() {
        if let Some(v) = value
            && nests_repeats(v, 0)
        {
            note_repeated(name, warnings);
        }
        if many && entries.clone().take(i).any(|(earlier, _)| earlier == name) {
            note_repeated(name, warnings);
        }
    }
}

/// Whether an object inside `v` repeats a key.
fn nests_repeats(v: &Value, depth: u32) -> bool {
    match v {
        Value::Object(entries) => {
            entries
                .iter()
                .enumerate()
                .any(|(i, (name, _))| entries[..i].iter().any(|(n, _)| n == name))
                || (depth < MAX_DEPTH && entries.iter().any(|(_, v)| nests_repeats(v, depth + 1)))
        }
        Value::List(items) => {
            depth < MAX_DEPTH && items.iter().any(|v| nests_repeats(v, depth + 1))
        }
        _ => false,
    }
}

fn note_repeated(property: &str, warnings: &mut Warnings) {
    if !warnings
        .iter()
        .any(|(p, k)| *k == WarningKind::RepeatedKey && p == property)
    {
        warnings.push((property.to_owned(), WarningKind::RepeatedKey));
    }
}

/// A number: NaN and the infinities have no JSON form.
#[inline]
pub(crate) fn float(v: f64) -> Result<(), Problem> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(Problem::NonFiniteNumber)
    }
}

/// A date, as seconds since the Unix epoch.
pub(crate) fn date(unix_seconds: i64) -> Result<(), Problem> {
    if DATE_RANGE.contains(&unix_seconds) {
        Ok(())
    } else {
        Err(Problem::DateOutOfRange)
    }
}

/// A list or object at `depth` levels inside a property's value (0 for the value itself).
#[inline]
pub(crate) fn nesting(depth: u32) -> Result<(), Problem> {
    if depth >= MAX_DEPTH {
        Err(Problem::TooDeep)
    } else {
        Ok(())
    }
}

/// The list of a `$union` property: not empty, strings and numbers only.
pub(crate) fn union_list<T>(
    property: &str,
    items: &[T],
    scalar: impl Fn(&T) -> bool,
) -> Result<(), RecordProblem> {
    if items.is_empty() {
        return Err(RecordProblem::at(property, Problem::EmptyList));
    }
    if !items.iter().all(scalar) {
        return Err(RecordProblem::at(property, Problem::UnionItemNotScalar));
    }
    Ok(())
}

/// The names of an `$unset`: at least one.
pub(crate) fn unset_list(len: usize) -> Result<(), RecordProblem> {
    if len == 0 {
        Err(RecordProblem::at("$unset", Problem::EmptyList))
    } else {
        Ok(())
    }
}

/// Whether an operation may go to `endpoint`.
pub(crate) fn operation_for(
    endpoint: Endpoint,
    kind: OpKind,
    group_operations: GroupOperations,
) -> Result<(), RecordProblem> {
    if endpoint == Endpoint::Groups
        && group_operations == GroupOperations::Documented
        && !kind.on_groups()
    {
        return Err(RecordProblem::at(
            kind.key(),
            Problem::NotForGroups(kind.key().to_owned()),
        ));
    }
    Ok(())
}

/// What JSON type a modifier takes, if `key` is one.
pub(crate) fn modifier_type(key: &str) -> Option<&'static str> {
    match key {
        "$ip" => Some("a string"),
        "$latitude" | "$longitude" | "$time" => Some("a number"),
        "$ignore_time" | "$ignore_alias" => Some("a boolean"),
        _ => None,
    }
}

/// A required id (`$distinct_id`, `$group_key`, `$group_id`): a non-empty string.
pub(crate) fn id(key: &'static str, value: Option<&str>) -> Result<(), RecordProblem> {
    match value {
        None => Err(RecordProblem::at(key, Problem::Missing(key))),
        Some("") => Err(RecordProblem::at(key, Problem::Empty(key))),
        Some(_) => Ok(()),
    }
}

/// How strictly operations on `/groups` are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupOperations {
    /// Only the six operations `/groups` documents (what the emulator enforces, and what
    /// typed group updates offer).
    #[default]
    Documented,
    /// Any of the eight operations (the escape hatch may send `$add`/`$append` to groups).
    Any,
}
