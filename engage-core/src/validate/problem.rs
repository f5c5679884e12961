//! Validation errors and warnings, each naming the update and the property.

use std::fmt;

use crate::model::{Endpoint, ProfileId, SerializeError};

/// What is wrong with an update. Carried by [`ValidationError`], which adds which update
/// and which property.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// A float is NaN or infinite: JSON has no form for it.
    #[error("NaN or infinite number has no JSON form")]
    NonFiniteNumber,
    /// A date outside the years 0–9999 `YYYY-MM-DDTHH:MM:SS` can write.
    #[error("date outside the years 0 to 9999")]
    DateOutOfRange,
    /// Lists and objects nested deeper than 32 levels.
    #[error("nested deeper than 32 levels")]
    TooDeep,
    /// A required key is missing.
    #[error("missing {0}")]
    Missing(&'static str),
    /// A required string is empty.
    #[error("{0} is empty")]
    Empty(&'static str),
    /// A value has the wrong JSON type.
    #[error("must be {0}")]
    WrongType(&'static str),
    /// A group update carries `$distinct_id`, which Mixpanel rejects.
    #[error("a group update must not carry $distinct_id")]
    DistinctIdOnGroup,
    /// A user update carries `$group_key` or `$group_id`.
    #[error("a user update must not carry $group_key or $group_id")]
    GroupKeysOnUser,
    /// `$unset` or a `$union` list is empty.
    #[error("the list is empty")]
    EmptyList,
    /// A `$union` item is neither a string nor a number.
    #[error("$union items must be strings or numbers")]
    UnionItemNotScalar,
    /// An `$add` value is not a number.
    #[error("$add values must be numbers")]
    NonNumericAdd,
    /// The update has no operation.
    #[error("no operation ($set, $set_once, $add, $union, $append, $remove, $unset or $delete)")]
    NoOperation,
    /// The update has more than one operation.
    #[error("more than one operation in one update")]
    SeveralOperations,
    /// The key is neither an id, an operation nor a modifier.
    #[error("unknown key")]
    UnknownKey,
    /// `/groups` does not document this operation.
    #[error("{0} is not an operation /groups supports")]
    NotForGroups(String),
    /// The update is not a JSON object.
    #[error("an update must be a JSON object")]
    NotAnObject,
    /// The text given as an update ([`Batcher::push_json`](crate::batch::Batcher::push_json))
    /// is not well-formed JSON: the parser's message.
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// The update belongs to the other endpoint than the batch it was given to.
    #[error("the update belongs to {}, not this batch's endpoint", .0.path())]
    WrongEndpoint(Endpoint),
    /// The update carries a different project token than the one configured.
    #[error("the update carries a different project token")]
    TokenMismatch,
    /// The update's token is empty.
    #[error("the update's $token is empty")]
    EmptyToken,
    /// The value given to
    /// [`Batcher::push_set_from`](crate::batch::Batcher::push_set_from) could not become
    /// properties: the [`SerializeError`] `set_from` would have returned (its `Serialize`
    /// implementation failed, it gave no struct or map, a map key that cannot be a name,
    /// or nesting past 128 levels).
    #[error("the properties could not be serialized: {0}")]
    Unserializable(SerializeError),
    /// The encoded update is larger than Mixpanel's 1 MB limit for one update.
    #[error("the update is {bytes} bytes encoded; Mixpanel's limit is {limit}")]
    UpdateTooLarge {
        /// Encoded size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// The update alone does not fit in a request body under the byte cap.
    #[error("the update is {bytes} bytes encoded and cannot fit in a {cap}-byte request body")]
    LargerThanBodyCap {
        /// Encoded size.
        bytes: usize,
        /// The configured cap on the request body.
        cap: usize,
    },
}

/// What is wrong with a record and where: the key (`"$distinct_id"`) or property
/// (`"score"`) at fault, if any, and the problem. [`ValidationError`] adds which update.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{problem}", property.as_ref().map(|p| format!("{p}: ")).unwrap_or_default())]
#[non_exhaustive]
pub struct RecordProblem {
    /// The key or property at fault, if any.
    pub property: Option<String>,
    /// What is wrong.
    pub problem: Problem,
}

impl RecordProblem {
    /// A problem of the record as a whole.
    pub fn whole(problem: Problem) -> Self {
        RecordProblem {
            property: None,
            problem,
        }
    }

    /// A problem at `property`.
    pub fn at(property: impl Into<String>, problem: Problem) -> Self {
        RecordProblem {
            property: Some(property.into()),
            problem,
        }
    }
}

/// An update that cannot be sent, and why. It names the update by its position in the
/// caller's input and its profile, and the property at fault when there is one.
///
/// ```
/// use engage_core::{BatchConfig, Endpoint, Token, Update};
/// use engage_core::batch::Batcher;
/// use engage_core::validate::Problem;
/// let mut batcher = Batcher::new(BatchConfig::new(Token::new("tok").unwrap(), Endpoint::Engage));
/// let err = batcher.push(&Update::user("u1").set([("score", f64::NAN)])).unwrap_err();
/// assert_eq!(err.index, 0);
/// assert_eq!(err.property.as_deref(), Some("score"));
/// assert_eq!(err.problem, Problem::NonFiniteNumber);
/// assert_eq!(
///     err.to_string(),
///     "update #0 (distinct_id \"u1\"), property \"score\": NaN or infinite number has no JSON form"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub struct ValidationError {
    /// The update's position in the caller's input (as given to the batcher).
    pub index: u64,
    /// The profile, when the update names one well enough to tell.
    pub profile: Option<ProfileId>,
    /// The property or key at fault, if any.
    pub property: Option<String>,
    /// What is wrong.
    pub problem: Problem,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "update #{}", self.index)?;
        if let Some(p) = &self.profile {
            write!(f, " ({p})")?;
        }
        if let Some(prop) = &self.property {
            write!(f, ", property {prop:?}")?;
        }
        write!(f, ": {}", self.problem)
    }
}

/// Something Mixpanel would silently change, reported so it is not lost silently.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Warning {
    /// The update's position in the caller's input.
    pub index: u64,
    /// The profile.
    pub profile: Option<ProfileId>,
    /// The top-level property concerned.
    pub property: String,
    /// What Mixpanel will do.
    pub kind: WarningKind,
}

/// What Mixpanel will silently change or drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WarningKind {
    /// A property name over 255 characters.
    NameTooLong {
        /// Its length in characters.
        chars: usize,
    },
    /// A string value over 255 bytes.
    StringTooLong {
        /// Its length in bytes.
        bytes: usize,
    },
    /// A key repeated in one object (the property named, or a key inside it): only the
    /// last value takes effect, the others are lost.
    RepeatedKey,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "update #{}", self.index)?;
        if let Some(p) = &self.profile {
            write!(f, " ({p})")?;
        }
        let shown: String = self.property.chars().take(40).collect();
        write!(f, ", property {shown:?}: ")?;
        match self.kind {
            WarningKind::NameTooLong { chars } => write!(
                f,
                "name of {chars} characters will be truncated by Mixpanel to 255"
            ),
            WarningKind::StringTooLong { bytes } => write!(
                f,
                "string value of {bytes} bytes will be truncated by Mixpanel to 255"
            ),
            WarningKind::RepeatedKey => write!(
                f,
                "key repeated in one object: only the last value takes effect, the others are lost"
            ),
        }
    }
}
