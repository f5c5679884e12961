//! Validation of update objects in JSON form: the one definition of a valid record, used
//! for raw updates here and by the emulator for what it receives.

use serde_json::{Map, Value as Json};

use crate::error::Problem;
use crate::update::{Endpoint, GROUP_OPERATIONS, OPERATIONS, ProfileId};

/// How strictly [`check_record`] treats operations on `/groups`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupOperations {
    /// Only the six operations `/groups` documents (what the emulator enforces).
    #[default]
    Documented,
    /// Any of the eight operations (the escape hatch may send `$add`/`$append` to groups).
    Any,
}

/// A record that passed [`check_record`], borrowed from the JSON it came from.
#[derive(Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct CheckedRecord<'a> {
    /// `$token`, if the record carries one (never empty).
    pub token: Option<&'a str>,
    /// `$distinct_id` for `/engage`.
    pub distinct_id: Option<&'a str>,
    /// `$group_key` and `$group_id` for `/groups`.
    pub group: Option<(&'a str, &'a str)>,
    /// The operation key, e.g. `"$set"`.
    pub operation: &'static str,
    /// The operation's value.
    pub payload: &'a Json,
    /// The whole object.
    pub object: &'a Map<String, Json>,
}

impl std::fmt::Debug for CheckedRecord<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The object holds the token: show the parts that identify the record only.
        f.debug_struct("CheckedRecord")
            .field("token", &self.token.map(|_| "…"))
            .field("distinct_id", &self.distinct_id)
            .field("group", &self.group)
            .field("operation", &self.operation)
            .finish()
    }
}

impl CheckedRecord<'_> {
    /// The profile the record updates.
    pub fn profile(&self) -> ProfileId {
        match (self.distinct_id, self.group) {
            (_, Some((key, id))) => ProfileId::Group {
                key: key.to_owned(),
                id: id.to_owned(),
            },
            (Some(d), None) => ProfileId::User {
                distinct_id: d.to_owned(),
            },
            (None, None) => ProfileId::User {
                distinct_id: String::new(),
            },
        }
    }
}

/// A record that failed [`check_record`]: the key or property at fault, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{problem}", property.as_ref().map(|p| format!("{p}: ")).unwrap_or_default())]
#[non_exhaustive]
pub struct RecordProblem {
    /// The key (`"$distinct_id"`) or property (`"score"`) at fault, if any.
    pub property: Option<String>,
    /// What is wrong.
    pub problem: Problem,
}

fn problem(property: impl Into<String>, problem: Problem) -> RecordProblem {
    RecordProblem {
        property: Some(property.into()),
        problem,
    }
}

const MODIFIERS: [&str; 6] = [
    "$ip",
    "$latitude",
    "$longitude",
    "$time",
    "$ignore_time",
    "$ignore_alias",
];

fn required_str<'a>(
    obj: &'a Map<String, Json>,
    key: &'static str,
) -> Result<&'a str, RecordProblem> {
    match obj.get(key) {
        None | Some(Json::Null) => Err(problem(key, Problem::Missing(key))),
        Some(Json::String(s)) if s.is_empty() => Err(problem(key, Problem::Empty(key))),
        Some(Json::String(s)) => Ok(s),
        Some(_) => Err(problem(key, Problem::WrongType("a string"))),
    }
}

/// Checks one update object in Mixpanel's JSON shape for `endpoint`: an object; `$token`
/// a non-empty string when present; `$distinct_id` (users) or `$group_key` + `$group_id`
/// (groups, without `$distinct_id`) non-empty strings; exactly one known operation, with
/// a value of the right shape (`$add` numbers, non-empty `$union` lists of strings or
/// numbers, a non-empty `$unset` list of names, objects for the others); modifiers of the
/// right type; no unknown keys.
///
/// ```
/// use engage_core::{check_record, Endpoint, GroupOperations, Problem};
/// let ok = serde_json::json!({"$token": "t", "$distinct_id": "u1", "$add": {"n": 1}});
/// let rec = check_record(&ok, Endpoint::Engage, GroupOperations::Documented).unwrap();
/// assert_eq!(rec.operation, "$add");
/// let bad = serde_json::json!({"$token": "t", "$distinct_id": "u1", "$add": {"n": "one"}});
/// let err = check_record(&bad, Endpoint::Engage, GroupOperations::Documented).unwrap_err();
/// assert_eq!(err.problem, Problem::NonNumericAdd);
/// assert_eq!(err.property.as_deref(), Some("n"));
/// ```
pub fn check_record(
    record: &Json,
    endpoint: Endpoint,
    group_operations: GroupOperations,
) -> Result<CheckedRecord<'_>, RecordProblem> {
    let Json::Object(obj) = record else {
        return Err(RecordProblem {
            property: None,
            problem: Problem::NotAnObject,
        });
    };
    let token = match obj.get("$token") {
        None => None,
        Some(Json::String(s)) if s.trim().is_empty() => {
            return Err(problem("$token", Problem::EmptyToken));
        }
        Some(Json::String(s)) => Some(s.as_str()),
        Some(_) => return Err(problem("$token", Problem::WrongType("a string"))),
    };
    let (distinct_id, group) = match endpoint {
        Endpoint::Engage => {
            if obj.contains_key("$group_key") || obj.contains_key("$group_id") {
                return Err(problem("$group_key", Problem::GroupKeysOnUser));
            }
            (Some(required_str(obj, "$distinct_id")?), None)
        }
        Endpoint::Groups => {
            let key = required_str(obj, "$group_key")?;
            let id = required_str(obj, "$group_id")?;
            if obj.contains_key("$distinct_id") {
                return Err(problem("$distinct_id", Problem::DistinctIdOnGroup));
            }
            (None, Some((key, id)))
        }
    };
    let mut operation: Option<(&'static str, &Json)> = None;
    for (key, value) in obj {
        if let Some((op, _)) = OPERATIONS.iter().find(|(op, _)| op == key) {
            if operation.is_some() {
                return Err(problem(key.as_str(), Problem::SeveralOperations));
            }
            operation = Some((op, value));
        } else if MODIFIERS.contains(&key.as_str()) {
            check_modifier(key, value)?;
        } else if !matches!(
            key.as_str(),
            "$token" | "$distinct_id" | "$group_key" | "$group_id"
        ) {
            return Err(problem(key.as_str(), Problem::UnknownKey));
        }
    }
    let Some((op, payload)) = operation else {
        return Err(RecordProblem {
            property: None,
            problem: Problem::NoOperation,
        });
    };
    if endpoint == Endpoint::Groups
        && group_operations == GroupOperations::Documented
        && !GROUP_OPERATIONS.contains(&op)
    {
        return Err(problem(op, Problem::NotForGroups(op.to_owned())));
    }
    check_payload(op, payload)?;
    Ok(CheckedRecord {
        token,
        distinct_id,
        group,
        operation: op,
        payload,
        object: obj,
    })
}

fn check_modifier(key: &str, value: &Json) -> Result<(), RecordProblem> {
    let ok = match key {
        "$ip" => value.is_string(),
        "$latitude" | "$longitude" | "$time" => value.is_number(),
        _ => value.is_boolean(),
    };
    if ok {
        Ok(())
    } else {
        let expected = match key {
            "$ip" => "a string",
            "$latitude" | "$longitude" | "$time" => "a number",
            _ => "a boolean",
        };
        Err(problem(key, Problem::WrongType(expected)))
    }
}

fn check_payload(op: &'static str, payload: &Json) -> Result<(), RecordProblem> {
    match op {
        "$delete" => Ok(()),
        "$unset" => {
            let Json::Array(names) = payload else {
                return Err(problem(op, Problem::WrongType("a list of property names")));
            };
            if names.is_empty() {
                return Err(problem(op, Problem::EmptyList));
            }
            if names.iter().any(|n| !n.is_string()) {
                return Err(problem(op, Problem::WrongType("a list of property names")));
            }
            Ok(())
        }
        _ => {
            let Json::Object(props) = payload else {
                return Err(problem(op, Problem::WrongType("an object")));
            };
            for (name, value) in props {
                match op {
                    "$add" if !value.is_number() => {
                        return Err(problem(name.as_str(), Problem::NonNumericAdd));
                    }
                    "$union" => {
                        let Json::Array(items) = value else {
                            return Err(problem(name.as_str(), Problem::WrongType("a list")));
                        };
                        if items.is_empty() {
                            return Err(problem(name.as_str(), Problem::EmptyList));
                        }
                        if items.iter().any(|i| !(i.is_string() || i.is_number())) {
                            return Err(problem(name.as_str(), Problem::UnionItemNotScalar));
                        }
                    }
                    _ => {}
                }
            }
            Ok(())
        }
    }
}

/// The profile a raw update names, if it names one as a string.
pub(crate) fn raw_profile(v: &Json) -> Option<ProfileId> {
    let s = |k: &str| v.get(k).and_then(Json::as_str).map(str::to_owned);
    match (s("$group_key"), s("$group_id")) {
        (Some(key), Some(id)) => Some(ProfileId::Group { key, id }),
        _ => s("$distinct_id").map(|distinct_id| ProfileId::User { distinct_id }),
    }
}
