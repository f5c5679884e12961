//! Flat records (an export's rows: `{"user_id": 42, "email": …}`) made into updates: the
//! id taken out, then `--drop`, `--rename`, `--reserved-names`, `--remove-nulls`, `--tag`,
//! in that order, and the properties put under `--op`. A record that already carries an
//! operation is an update as it is and never comes here.

use std::collections::HashSet;

use engage_core::model::OpKind;
use serde_json::{Map, Value as Json};

/// `--op NAME`: an operation of engage-core's table, named without its `$` (`set`,
/// `set-once` or `set_once`, `add`, …), for a flat record's properties; not `delete`, which
/// is `engage delete`'s.
pub fn parse_op(name: &str) -> Result<OpKind, String> {
    let key = format!("${}", name.trim().to_ascii_lowercase().replace('-', "_"));
    match OpKind::from_key(&key) {
        Some(OpKind::Delete) => {
            Err("delete is not for --op: `engage delete` deletes profiles".to_owned())
        }
        Some(op) => Ok(op),
        None => Err(format!(
            "not an operation; one of {}",
            op_names().join(", ")
        )),
    }
}

/// The names `--op` takes, from engage-core's table.
pub fn op_names() -> Vec<String> {
    OpKind::ALL
        .iter()
        .filter(|&&k| k != OpKind::Delete)
        .map(|k| k.key().trim_start_matches('$').replace('_', "-"))
        .collect()
}

/// Plain names `--reserved-names` maps to Mixpanel's reserved profile properties (matched
/// without regard to case).
pub const RESERVED_NAMES: [(&str, &str); 10] = [
    ("name", "$name"),
    ("first_name", "$first_name"),
    ("last_name", "$last_name"),
    ("email", "$email"),
    ("phone", "$phone"),
    ("avatar", "$avatar"),
    ("created", "$created"),
    ("city", "$city"),
    ("region", "$region"),
    ("country", "$country_code"),
];

/// How flat records become updates.
#[derive(Debug, Clone)]
pub struct Shape {
    /// Group profiles (`/groups`).
    pub groups: bool,
    /// The field holding a user's distinct_id (default `$distinct_id`, then `distinct_id`).
    pub id_field: Option<String>,
    /// The group key every record belongs to (default: the record's `$group_key`).
    pub group_key: Option<String>,
    /// The field holding the group id (default `$group_id`, then `group_id`).
    pub group_id_field: Option<String>,
    /// The operation.
    pub op: OpKind,
    /// `--rename OLD=NEW`, in order.
    pub renames: Vec<(String, String)>,
    /// `--drop NAME`.
    pub drops: HashSet<String>,
    /// `--tag NAME=VALUE`.
    pub tags: Vec<(String, Json)>,
    /// `--remove-nulls`.
    pub remove_nulls: bool,
    /// `--reserved-names`.
    pub reserved_names: bool,
    /// `engage delete`: every record is a profile to delete; `Some(true)` sets
    /// `$ignore_alias` (users).
    pub delete: Option<bool>,
}

impl Shape {
    /// Whether a JSON object is already an update: it carries an operation.
    pub fn is_update(object: &Map<String, Json>) -> bool {
        OpKind::ALL.iter().any(|k| object.contains_key(k.key()))
    }

    /// The fields that may hold the id, in the order they are looked for.
    pub fn id_fields(&self) -> Vec<&str> {
        let (given, defaults) = if self.groups {
            (&self.group_id_field, ["$group_id", "group_id"])
        } else {
            (&self.id_field, ["$distinct_id", "distinct_id"])
        };
        match given {
            Some(f) => vec![f.as_str()],
            None => defaults.to_vec(),
        }
    }

    /// The update a flat record becomes, or why it cannot.
    pub fn update(&self, mut record: Map<String, Json>) -> Result<Json, String> {
        let fields = self.id_fields();
        let found = fields
            .iter()
            .find(|f| record.get(**f).is_some_and(|v| !v.is_null()))
            .copied();
        let Some(field) = found else {
            return Err(match fields.as_slice() {
                [one] => format!("no id (field {one:?} is missing or null)"),
                _ => format!(
                    "no id (the record has none of {}; name the id field with {})",
                    fields
                        .iter()
                        .map(|f| format!("{f:?}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    if self.groups {
                        "--group-id-field"
                    } else {
                        "--id-field"
                    }
                ),
            });
        };
        let id = id_text(field, record.remove(field).unwrap_or_default())?;
        let mut out = Map::new();
        if self.groups {
            let key = match (&self.group_key, record.remove("$group_key")) {
                (Some(k), _) => k.clone(),
                (None, Some(Json::String(k))) if !k.trim().is_empty() => k,
                _ => return Err("no group key (pass --group-key NAME)".into()),
            };
            record.remove("$group_id");
            out.insert("$group_key".into(), Json::String(key));
            out.insert("$group_id".into(), Json::String(id));
        } else {
            record.remove("$distinct_id");
            out.insert("$distinct_id".into(), Json::String(id));
        }
        // Top-level keys that are not properties: the token and the modifiers.
        for m in std::iter::once("$token").chain(engage_core::validate::rules::MODIFIERS) {
            if let Some(v) = record.remove(m) {
                out.insert(m.into(), v);
            }
        }
        if let Some(ignore_alias) = self.delete {
            out.insert("$delete".into(), Json::String(String::new()));
            if ignore_alias && !self.groups {
                out.insert("$ignore_alias".into(), Json::Bool(true));
            }
            return Ok(Json::Object(out));
        }
        for name in &self.drops {
            record.remove(name);
        }
        for (old, new) in &self.renames {
            if let Some(v) = record.remove(old) {
                record.insert(new.clone(), v);
            }
        }
        if self.reserved_names {
            let plain: Vec<(String, &str)> = record
                .keys()
                .filter_map(|k| {
                    RESERVED_NAMES
                        .iter()
                        .find(|(p, _)| k.eq_ignore_ascii_case(p))
                        .map(|(_, r)| (k.clone(), *r))
                })
                .collect();
            for (k, reserved) in plain {
                if let Some(v) = record.remove(&k) {
                    record.insert(reserved.to_owned(), v);
                }
            }
        }
        if self.remove_nulls {
            record.retain(|_, v| !v.is_null());
        }
        for (name, value) in &self.tags {
            record.insert(name.clone(), value.clone());
        }
        if record.is_empty() {
            return Err(format!(
                "nothing to {} (the record holds only its id)",
                self.op.key().trim_start_matches('$')
            ));
        }
        let payload = match self.op {
            OpKind::Set | OpKind::SetOnce | OpKind::Append | OpKind::Remove => Json::Object(record),
            OpKind::Add => {
                if let Some((k, v)) = record.iter().find(|(_, v)| !v.is_number()) {
                    return Err(format!(
                        "$add needs a number in property {k:?}, found {}",
                        kind(v)
                    ));
                }
                Json::Object(record)
            }
            OpKind::Union => Json::Object(
                record
                    .into_iter()
                    .map(|(k, v)| match v {
                        Json::Array(_) => (k, v),
                        other => (k, Json::Array(vec![other])),
                    })
                    .collect(),
            ),
            OpKind::Unset => Json::Array(
                record
                    .into_iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, _)| Json::String(k))
                    .collect(),
            ),
            // `parse_op` refuses it; `$delete` takes an empty string.
            OpKind::Delete => Json::String(String::new()),
        };
        out.insert(self.op.key().into(), payload);
        Ok(Json::Object(out))
    }
}

/// An id as Mixpanel takes it: text, or an integer written as text.
fn id_text(field: &str, v: Json) -> Result<String, String> {
    match v {
        Json::String(s) if !s.trim().is_empty() => Ok(s),
        Json::String(_) => Err(format!("empty id in field {field:?}")),
        Json::Number(n) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        other => Err(format!(
            "field {field:?} holds {}, which cannot be an id (a string or an integer)",
            kind(&other)
        )),
    }
}

/// What a JSON value is, for messages.
pub fn kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "a list",
        Json::Object(_) => "an object",
    }
}

/// A text cell (CSV, TSV, a `--tag` value) typed: integer, float, boolean or string; an
/// empty cell is null. Cells that only look numeric stay text: leading zeros (`00501`), a
/// sign (`+1555…`), an exponent (`1e3`) or more digits than a float holds exactly.
pub fn typed_cell(cell: &str) -> Json {
    if cell.is_empty() {
        return Json::Null;
    }
    let digits = cell.bytes().filter(u8::is_ascii_digit).count();
    let unsigned = cell.strip_prefix('-').unwrap_or(cell);
    let leading_zero =
        unsigned.len() > 1 && unsigned.starts_with('0') && !unsigned.starts_with("0.");
    let has_exponent = cell.bytes().any(|b| b == b'e' || b == b'E');
    let numeric_looking = !cell.starts_with('+') && !has_exponent && !leading_zero && digits <= 15;
    if numeric_looking {
        if let Ok(i) = cell.parse::<i64>() {
            return Json::from(i);
        }
        if let Ok(f) = cell.parse::<f64>()
            && f.is_finite()
            && digits > 0
            && let Some(n) = serde_json::Number::from_f64(f)
        {
            return Json::Number(n);
        }
    }
    match cell {
        "true" | "TRUE" | "True" => Json::Bool(true),
        "false" | "FALSE" | "False" => Json::Bool(false),
        _ => Json::String(cell.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shape() -> Shape {
        Shape {
            groups: false,
            id_field: None,
            group_key: None,
            group_id_field: None,
            op: OpKind::Set,
            renames: Vec::new(),
            drops: HashSet::new(),
            tags: Vec::new(),
            remove_nulls: false,
            reserved_names: false,
            delete: None,
        }
    }

    fn obj(v: Json) -> Map<String, Json> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn options_apply_in_their_documented_order() {
        let s = Shape {
            id_field: Some("user_id".into()),
            renames: vec![
                ("Plan".into(), "plan".into()),
                ("mail".into(), "email".into()),
            ],
            drops: ["internal".to_owned()].into(),
            tags: vec![("source".into(), json!("crm"))],
            remove_nulls: true,
            reserved_names: true,
            ..shape()
        };
        let record = obj(
            json!({"user_id": 42, "Plan": "pro", "mail": "a@b.c", "internal": 1,
            "phone": null, "Country": "FR", "$ip": "1.2.3.4"}),
        );
        assert_eq!(
            s.update(record).unwrap(),
            json!({"$distinct_id": "42", "$ip": "1.2.3.4",
                "$set": {"plan": "pro", "$email": "a@b.c", "$country_code": "FR", "source": "crm"}})
        );
    }

    #[test]
    fn ids_come_from_the_usual_fields_and_must_be_text_or_integers() {
        let s = shape();
        assert_eq!(
            s.update(obj(json!({"distinct_id": "u1", "a": 1}))).unwrap()["$distinct_id"],
            "u1"
        );
        let e = s.update(obj(json!({"id": "u1", "a": 1}))).unwrap_err();
        assert!(e.contains("--id-field"), "{e}");
        let e = Shape {
            id_field: Some("id".into()),
            ..shape()
        }
        .update(obj(json!({"id": 1.5, "a": 1})))
        .unwrap_err();
        assert!(e.contains("holds a number, which cannot be an id"), "{e}");
        let e = s.update(obj(json!({"$distinct_id": "u1"}))).unwrap_err();
        assert!(e.contains("only its id"), "{e}");
    }

    #[test]
    fn op_names_come_from_the_operation_table() {
        assert_eq!(
            op_names(),
            [
                "set", "set-once", "add", "union", "append", "remove", "unset"
            ]
        );
        assert_eq!(parse_op("set-once"), Ok(OpKind::SetOnce));
        assert_eq!(parse_op("SET_ONCE"), Ok(OpKind::SetOnce));
        assert!(parse_op("delete").unwrap_err().contains("engage delete"));
        assert!(
            parse_op("increment")
                .unwrap_err()
                .contains("one of set, set-once")
        );
    }

    #[test]
    fn each_operation_gets_the_shape_it_needs() {
        let r = || obj(json!({"$distinct_id": "u", "n": 2, "tags": ["a"], "x": null}));
        let with = |op| Shape { op, ..shape() }.update(r());
        assert_eq!(
            with(OpKind::Union).unwrap()["$union"],
            json!({"n": [2], "tags": ["a"], "x": [null]})
        );
        assert_eq!(with(OpKind::Unset).unwrap()["$unset"], json!(["n", "tags"]));
        assert!(
            with(OpKind::Add)
                .unwrap_err()
                .contains("$add needs a number in property \"tags\"")
        );
        let groups = Shape {
            groups: true,
            group_key: Some("company".into()),
            ..shape()
        };
        assert_eq!(
            groups
                .update(obj(json!({"group_id": 7, "size": 10})))
                .unwrap(),
            json!({"$group_key": "company", "$group_id": "7", "$set": {"size": 10}})
        );
        let delete = Shape {
            delete: Some(true),
            ..shape()
        };
        assert_eq!(
            delete
                .update(obj(json!({"$distinct_id": "u", "plan": "x"})))
                .unwrap(),
            json!({"$distinct_id": "u", "$delete": "", "$ignore_alias": true})
        );
    }
}
