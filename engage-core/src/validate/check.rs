//! Validation of update objects in JSON form, by the rules of [`rules`]: raw updates are
//! checked here, and the emulator checks what it receives with the same function.

use serde_json::{Map, Value as Json};

use crate::model::{Endpoint, OpKind, ProfileId};
use crate::validate::problem::{Problem, RecordProblem};
use crate::validate::rules::{self, GroupOperations, MODIFIERS, Warnings};

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
    /// The operation.
    pub operation: OpKind,
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

fn required_str<'a>(
    obj: &'a Map<String, Json>,
    key: &'static str,
) -> Result<&'a str, RecordProblem> {
    match obj.get(key) {
        None | Some(Json::Null) => rules::id(key, None).map(|()| ""),
        Some(Json::String(s)) => rules::id(key, Some(s)).map(|()| s.as_str()),
        Some(_) => Err(RecordProblem::at(key, Problem::WrongType("a string"))),
    }
}

/// Checks one update object in Mixpanel's JSON shape for `endpoint`: an object; `$token`
/// a non-empty string when present; `$distinct_id` (users) or `$group_key` + `$group_id`
/// (groups, without `$distinct_id`) non-empty strings; exactly one known operation, with
/// a value of the right shape (`$add` numbers, non-empty `$union` lists of strings or
/// numbers, a non-empty `$unset` list of names, objects for the others, nothing nested
/// deeper than [`MAX_DEPTH`](rules::MAX_DEPTH)); modifiers of the right type; no unknown
/// keys.
///
/// ```
/// use engage_core::model::{Endpoint, OpKind};
/// use engage_core::validate::{check_record, GroupOperations, Problem};
/// let ok = serde_json::json!({"$token": "t", "$distinct_id": "u1", "$add": {"n": 1}});
/// let rec = check_record(&ok, Endpoint::Engage, GroupOperations::Documented).unwrap();
/// assert_eq!(rec.operation, OpKind::Add);
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
    check_record_warning(record, endpoint, group_operations, &mut Vec::new())
}

/// [`check_record`], also collecting what Mixpanel would truncate.
pub(crate) fn check_record_warning<'a>(
    record: &'a Json,
    endpoint: Endpoint,
    group_operations: GroupOperations,
    warnings: &mut Warnings,
) -> Result<CheckedRecord<'a>, RecordProblem> {
    let Json::Object(obj) = record else {
        return Err(RecordProblem::whole(Problem::NotAnObject));
    };
    let token = match obj.get("$token") {
        None => None,
        Some(Json::String(s)) if s.trim().is_empty() => {
            return Err(RecordProblem::at("$token", Problem::EmptyToken));
        }
        Some(Json::String(s)) => Some(s.as_str()),
        Some(_) => return Err(RecordProblem::at("$token", Problem::WrongType("a string"))),
    };
    let (distinct_id, group) = match endpoint {
        Endpoint::Engage => {
            if obj.contains_key("$group_key") || obj.contains_key("$group_id") {
                return Err(RecordProblem::at("$group_key", Problem::GroupKeysOnUser));
            }
            (Some(required_str(obj, "$distinct_id")?), None)
        }
        Endpoint::Groups => {
            let key = required_str(obj, "$group_key")?;
            let id = required_str(obj, "$group_id")?;
            if obj.contains_key("$distinct_id") {
                return Err(RecordProblem::at(
                    "$distinct_id",
                    Problem::DistinctIdOnGroup,
                ));
            }
            (None, Some((key, id)))
        }
    };
    let mut operation: Option<(OpKind, &Json)> = None;
    for (key, value) in obj {
        if let Some(op) = OpKind::from_key(key) {
            if operation.is_some() {
                return Err(RecordProblem::at(key.as_str(), Problem::SeveralOperations));
            }
            operation = Some((op, value));
        } else if MODIFIERS.contains(&key.as_str()) {
            check_modifier(key, value)?;
        } else if !matches!(
            key.as_str(),
            "$token" | "$distinct_id" | "$group_key" | "$group_id"
        ) {
            return Err(RecordProblem::at(key.as_str(), Problem::UnknownKey));
        }
    }
    let Some((op, payload)) = operation else {
        return Err(RecordProblem::whole(Problem::NoOperation));
    };
    rules::operation_for(endpoint, op, group_operations)?;
    check_payload(op, payload, warnings)?;
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
        let expected = rules::modifier_type(key).unwrap_or("a known modifier");
        Err(RecordProblem::at(key, Problem::WrongType(expected)))
    }
}

fn check_payload(op: OpKind, payload: &Json, warnings: &mut Warnings) -> Result<(), RecordProblem> {
    match op {
        OpKind::Delete => Ok(()),
        OpKind::Unset => {
            let Json::Array(names) = payload else {
                return Err(RecordProblem::at(
                    op.key(),
                    Problem::WrongType("a list of property names"),
                ));
            };
            rules::unset_list(names.len())?;
            for n in names {
                let Json::String(name) = n else {
                    return Err(RecordProblem::at(
                        op.key(),
                        Problem::WrongType("a list of property names"),
                    ));
                };
                rules::name(name, warnings);
            }
            Ok(())
        }
        _ => {
            let Json::Object(props) = payload else {
                return Err(RecordProblem::at(op.key(), Problem::WrongType("an object")));
            };
            for (name, value) in props {
                rules::name(name, warnings);
                match op {
                    OpKind::Add if !value.is_number() => {
                        return Err(RecordProblem::at(name.as_str(), Problem::NonNumericAdd));
                    }
                    OpKind::Union => {
                        let Json::Array(items) = value else {
                            return Err(RecordProblem::at(
                                name.as_str(),
                                Problem::WrongType("a list"),
                            ));
                        };
                        rules::union_list(name, items, |i| i.is_string() || i.is_number())?;
                    }
                    _ => {}
                }
                check_value(name, value, warnings, 0).map_err(rules::at(name))?;
            }
            Ok(())
        }
    }
}

/// A property's value: strings Mixpanel would truncate, nesting.
fn check_value(
    property: &str,
    v: &Json,
    warnings: &mut Warnings,
    depth: u32,
) -> Result<(), Problem> {
    match v {
        Json::String(s) => rules::string(property, s, warnings),
        Json::Array(items) => {
            rules::nesting(depth)?;
            for item in items {
                check_value(property, item, warnings, depth + 1)?;
            }
        }
        Json::Object(entries) => {
            rules::nesting(depth)?;
            for item in entries.values() {
                check_value(property, item, warnings, depth + 1)?;
            }
        }
        Json::Null | Json::Bool(_) | Json::Number(_) => {}
    }
    Ok(())
}

/// The profile a raw update names, if it names one as a string.
pub(crate) fn raw_profile(v: &Json) -> Option<ProfileId> {
    let s = |k: &str| v.get(k).and_then(Json::as_str).map(str::to_owned);
    match (s("$group_key"), s("$group_id")) {
        (Some(key), Some(id)) => Some(ProfileId::Group { key, id }),
        _ => s("$distinct_id").map(|distinct_id| ProfileId::User { distinct_id }),
    }
}
