//! The operations: what an update does to a profile. [`OpKind`] is the one table of the
//! vocabulary (keys, idempotence, what `/groups` documents); everything else asks it.

use crate::model::properties::Properties;
use crate::model::value::{Number, Value};

/// One operation: what an update does to the profile.
///
/// The typed constructors on [`UserUpdate`](crate::wire::UserUpdate) and [`GroupUpdate`](crate::wire::GroupUpdate) build these; the variants
/// are public so callers can inspect an update.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Operation {
    /// `$set`: overwrite properties, creating the profile if needed.
    Set(Properties),
    /// `$set_once`: set properties that have no value yet.
    SetOnce(Properties),
    /// `$add`: add to numeric properties (not idempotent).
    Add(Vec<(String, Number)>),
    /// `$union`: merge values into list properties without duplicates.
    Union(Vec<(String, Vec<Value>)>),
    /// `$append`: append a value to list properties (not idempotent).
    Append(Properties),
    /// `$remove`: remove a value from list properties.
    Remove(Properties),
    /// `$unset`: delete the named properties.
    Unset(Vec<String>),
    /// `$delete`: delete the whole profile.
    Delete,
}

impl Operation {
    /// The operation's JSON key, e.g. `"$set"`.
    pub fn key(&self) -> &'static str {
        OpKind::of(self).key()
    }

    /// Whether sending it twice has the same effect as once. `$add` and `$append` are not.
    pub fn is_idempotent(&self) -> bool {
        OpKind::of(self).is_idempotent()
    }
}

/// Which operation an update carries: the one table of Mixpanel's vocabulary. Keys,
/// idempotence and what `/groups` documents are answered here and nowhere else.
///
/// ```
/// use engage_core::model::OpKind;
/// assert_eq!(OpKind::from_key("$append"), Some(OpKind::Append));
/// assert!(!OpKind::Append.is_idempotent());
/// assert!(!OpKind::Add.on_groups());
/// assert_eq!(OpKind::ALL.len(), 8);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// `$set`
    Set,
    /// `$set_once`
    SetOnce,
    /// `$add`
    Add,
    /// `$union`
    Union,
    /// `$append`
    Append,
    /// `$remove`
    Remove,
    /// `$unset`
    Unset,
    /// `$delete`
    Delete,
}

/// One row of the table: key, `"key":` ready to copy, idempotent, documented on `/groups`.
struct Row {
    key: &'static str,
    field: &'static [u8],
    idempotent: bool,
    on_groups: bool,
}

const fn row(key: &'static str, field: &'static [u8], idempotent: bool, on_groups: bool) -> Row {
    Row {
        key,
        field,
        idempotent,
        on_groups,
    }
}

/// In the order of [`OpKind::ALL`].
const TABLE: [Row; 8] = [
    row("$set", b"\"$set\":", true, true),
    row("$set_once", b"\"$set_once\":", true, true),
    row("$add", b"\"$add\":", false, false),
    row("$union", b"\"$union\":", true, true),
    row("$append", b"\"$append\":", false, false),
    row("$remove", b"\"$remove\":", true, true),
    row("$unset", b"\"$unset\":", true, true),
    row("$delete", b"\"$delete\":", true, true),
];

impl OpKind {
    /// Every operation, in the order Mixpanel's documentation lists them.
    pub const ALL: [OpKind; 8] = [
        OpKind::Set,
        OpKind::SetOnce,
        OpKind::Add,
        OpKind::Union,
        OpKind::Append,
        OpKind::Remove,
        OpKind::Unset,
        OpKind::Delete,
    ];

    fn row(self) -> &'static Row {
        &TABLE[self as usize]
    }

    /// The kind of `operation`.
    pub fn of(operation: &Operation) -> OpKind {
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

    /// The operation a JSON key names, if it names one.
    pub fn from_key(key: &str) -> Option<OpKind> {
        OpKind::from_key_bytes(key.as_bytes())
    }

    /// [`from_key`](Self::from_key) on a key's bytes (the one-pass reader's keys are not
    /// yet known to be UTF-8; the keys looked for are ASCII).
    pub(crate) fn from_key_bytes(key: &[u8]) -> Option<OpKind> {
        OpKind::ALL.into_iter().find(|k| k.key().as_bytes() == key)
    }

    /// The JSON key, e.g. `"$set"`.
    pub fn key(self) -> &'static str {
        self.row().key
    }

    /// `"$set":`, the key as written in a record (needs no escaping).
    pub(crate) fn field(self) -> &'static [u8] {
        self.row().field
    }

    /// Whether sending it twice has the same effect as once (`$add` and `$append` do not).
    pub fn is_idempotent(self) -> bool {
        self.row().idempotent
    }

    /// Whether `/groups` documents it (all but `$add` and `$append`).
    pub fn on_groups(self) -> bool {
        self.row().on_groups
    }

    /// Whether its value is an object of properties (all but `$unset` and `$delete`).
    pub fn takes_properties(self) -> bool {
        !matches!(self, OpKind::Unset | OpKind::Delete)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_in_the_order_of_all() {
        for (i, k) in OpKind::ALL.into_iter().enumerate() {
            assert_eq!(k as usize, i);
            assert_eq!(OpKind::from_key(k.key()), Some(k));
            assert_eq!(k.field(), format!("\"{}\":", k.key()).as_bytes());
        }
        assert_eq!(OpKind::from_key("$nope"), None);
    }
}
