//! Raw updates: JSON objects given as they are, checked by the rules of
//! [`check_record`](crate::validate::check_record) against the batch's endpoint and token,
//! then written with this crate's escaper.

use crate::model::Endpoint;
use crate::validate::check::check_record_warning;
use crate::validate::rules::{GroupOperations, Warnings};
use crate::validate::{Problem, RecordProblem};
use crate::wire::encode::{Context, EncodedIds};
use crate::wire::json::{write_f64, write_int, write_str};

/// Checks a raw update and appends it to `out`. On error `out` is untouched.
pub(crate) fn encode_raw(
    out: &mut Vec<u8>,
    json: &serde_json::Value,
    ctx: &Context<'_>,
    warnings: &mut Warnings,
) -> Result<EncodedIds, RecordProblem> {
    let checked = check_record_warning(json, ctx.endpoint, GroupOperations::Any, warnings)
        .map_err(|e| {
            // A user record sent to /groups (or the reverse) is named as such.
            let other = match ctx.endpoint {
                Endpoint::Engage => Endpoint::Groups,
                Endpoint::Groups => Endpoint::Engage,
            };
            if matches!(
                e.problem,
                Problem::GroupKeysOnUser | Problem::Missing("$group_key")
            ) && check_record_warning(json, other, GroupOperations::Any, &mut Vec::new()).is_ok()
            {
                RecordProblem::whole(Problem::WrongEndpoint(other))
            } else {
                e
            }
        })?;
    if let Some(token) = checked.token
        && token != ctx.token
        && !ctx.override_token
    {
        return Err(RecordProblem::at("$token", Problem::TokenMismatch));
    }
    let mut ids = EncodedIds {
        id: (0, 0),
        key: None,
        idempotent: checked.operation.is_idempotent(),
    };
    out.push(b'{');
    out.extend_from_slice(ctx.token_field);
    for (key, value) in checked.object {
        if key == "$token" {
            continue;
        }
        out.push(b',');
        write_str(out, key);
        out.push(b':');
        let start = out.len();
        write_json(out, value);
        match key.as_str() {
            "$group_key" => ids.key = Some((start, out.len())),
            "$distinct_id" | "$group_id" => ids.id = (start, out.len()),
            _ => {}
        }
    }
    out.push(b'}');
    Ok(ids)
}

/// Writes a checked `serde_json::Value` (always finite) with this crate's escaper.
fn write_json(out: &mut Vec<u8>, v: &serde_json::Value) {
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
        J::String(s) => write_str(out, s),
        J::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json(out, item);
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
                write_json(out, item);
            }
            out.push(b'}');
        }
    }
}
