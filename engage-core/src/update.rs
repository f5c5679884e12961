//! The update model: one profile update object, typed or raw.

use std::borrow::Cow;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::encode::{EncodedRecord, OpKind};
use crate::ser::{self, SerializeError};
use crate::value::{Number, Value};

/// Which endpoint an update belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `POST /engage`: user profiles, keyed by `$distinct_id`.
    Engage,
    /// `POST /groups`: group profiles, keyed by `$group_key` + `$group_id`.
    Groups,
}

impl Endpoint {
    /// The request path, `/engage` or `/groups`.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Engage => "/engage",
            Endpoint::Groups => "/groups",
        }
    }
}

/// The profile an update is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ProfileId {
    /// A user profile.
    User {
        /// The user's `$distinct_id`.
        distinct_id: String,
    },
    /// A group profile.
    Group {
        /// The group key (`$group_key`), e.g. `"company"`.
        key: String,
        /// The group id (`$group_id`), e.g. `"acme"`.
        id: String,
    },
}

impl ProfileId {
    /// The endpoint updates of this profile go to.
    pub fn endpoint(&self) -> Endpoint {
        match self {
            ProfileId::User { .. } => Endpoint::Engage,
            ProfileId::Group { .. } => Endpoint::Groups,
        }
    }
}

/// A profile's ids, borrowed: all that encoding needs.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ProfileRef<'a> {
    User(&'a str),
    Group { key: &'a str, id: &'a str },
}

impl ProfileId {
    pub(crate) fn as_ref(&self) -> ProfileRef<'_> {
        match self {
            ProfileId::User { distinct_id } => ProfileRef::User(distinct_id),
            ProfileId::Group { key, id } => ProfileRef::Group { key, id },
        }
    }
}

impl fmt::Display for ProfileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProfileId::User { distinct_id } => write!(f, "distinct_id {distinct_id:?}"),
            ProfileId::Group { key, id } => write!(f, "group {key:?}/{id:?}"),
        }
    }
}

/// Named property values, in insertion order: the payload of `$set`, `$set_once`,
/// `$append` and `$remove`.
///
/// ```
/// use engage_core::Properties;
/// #[derive(serde::Serialize)]
/// struct Customer { name: String, plan: &'static str, seats: u32 }
/// let props = Properties::from_serialize(&Customer { name: "Ada".into(), plan: "pro", seats: 3 })?;
/// assert_eq!(props.len(), 3);
/// let same: Properties = [("name", "Ada")].into_iter().collect();
/// assert_eq!(same.len(), 1);
/// # Ok::<(), engage_core::SerializeError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Properties(pub(crate) Vec<(String, Value)>);

impl Properties {
    /// No properties.
    pub fn new() -> Self {
        Properties(Vec::new())
    }

    /// Adds a property (a later one with the same name wins at Mixpanel).
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<Value>) -> &mut Self {
        self.0.push((name.into(), value.into()));
        self
    }

    /// Adds a property, builder style.
    pub fn with(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.insert(name, value);
        self
    }

    /// Properties from any struct or map that implements [`Serialize`]. NaN and infinite
    /// floats are kept, so that validation can report them by name instead of sending
    /// `null` the way `serde_json` would.
    pub fn from_serialize<T: Serialize + ?Sized>(value: &T) -> Result<Properties, SerializeError> {
        match ser::to_value(value)? {
            Value::Object(entries) => Ok(Properties(entries)),
            Value::Null => Err(SerializeError::NotAMap("null")),
            Value::Bool(_) => Err(SerializeError::NotAMap("a boolean")),
            Value::Int(_) | Value::UInt(_) | Value::Float(_) => {
                Err(SerializeError::NotAMap("a number"))
            }
            Value::String(_) | Value::DateTime(_) => Err(SerializeError::NotAMap("a string")),
            Value::List(_) => Err(SerializeError::NotAMap("a list")),
        }
    }

    /// Number of properties.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no properties.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The properties, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }
}

impl<K: Into<String>, V: Into<Value>> FromIterator<(K, V)> for Properties {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Properties(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

impl<K: Into<String>, V: Into<Value>, const N: usize> From<[(K, V); N]> for Properties {
    fn from(items: [(K, V); N]) -> Self {
        items.into_iter().collect()
    }
}

impl<K: Into<String>, V: Into<Value>> From<Vec<(K, V)>> for Properties {
    fn from(items: Vec<(K, V)>) -> Self {
        items.into_iter().collect()
    }
}

/// One operation: what an update does to the profile.
///
/// The typed constructors on [`UserUpdate`] and [`GroupUpdate`] build these; the variants
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

/// Operation keys Mixpanel knows, and whether each is idempotent.
pub(crate) const OPERATIONS: [(&str, bool); 8] = [
    ("$set", true),
    ("$set_once", true),
    ("$add", false),
    ("$union", true),
    ("$append", false),
    ("$remove", true),
    ("$unset", true),
    ("$delete", true),
];

/// Operations `/groups` documents.
pub(crate) const GROUP_OPERATIONS: [&str; 6] = [
    "$set",
    "$set_once",
    "$union",
    "$remove",
    "$unset",
    "$delete",
];

/// What `$ip` says about geolocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Geolocation {
    /// `$ip: "<address>"`: geolocate from this address.
    FromIp(String),
    /// `$ip: "0"`: do not geolocate this update.
    Skip,
}

/// Top-level modifiers of an update (never inside `$set`).
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Modifiers {
    /// `$ip`.
    pub ip: Option<Geolocation>,
    /// `$latitude` and `$longitude`.
    pub location: Option<(f64, f64)>,
    /// `$time`, in milliseconds since the Unix epoch.
    pub time_ms: Option<i64>,
    /// `$ignore_time: true`: leave `$last_seen` alone.
    pub ignore_time: bool,
    /// `$ignore_alias: true`: do not follow aliases (used with `$delete`).
    pub ignore_alias: bool,
}

/// One profile update: a typed one built with [`Update::user`] / [`Update::group`], or a
/// raw JSON object from [`Update::raw`].
///
/// ```
/// use engage_core::Update;
/// let u = Update::user("user-42")
///     .set([("name", "Ada"), ("plan", "pro")])
///     .with_ip("203.0.113.9")
///     .with_time_ms(1_700_000_000_000);
/// let g = Update::group("company", "acme").union([("tags", ["b2b"])]);
/// let r = Update::raw(serde_json::json!({"$distinct_id": "u1", "$add": {"logins": 1}}));
/// assert!(!r.is_idempotent());
/// # let _ = (u, g);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    pub(crate) kind: UpdateKind,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum UpdateKind {
    Typed {
        modifiers: Modifiers,
        /// The update as JSON (ids included), kept in step with `modifiers`.
        record: EncodedRecord,
    },
    Raw(serde_json::Value),
}

/// Builds updates of one user profile. Made by [`Update::user`].
#[derive(Debug, Clone)]
#[must_use = "call an operation method to get an Update"]
pub struct UserUpdate<'a> {
    distinct_id: Cow<'a, str>,
}

/// Builds updates of one group profile (the six operations `/groups` documents). Made by
/// [`Update::group`].
#[derive(Debug, Clone)]
#[must_use = "call an operation method to get an Update"]
pub struct GroupUpdate<'a> {
    key: Cow<'a, str>,
    id: Cow<'a, str>,
}

fn add_entries<K: Into<String>, N: Into<Number>>(
    items: impl IntoIterator<Item = (K, N)>,
) -> Vec<(String, Number)> {
    items
        .into_iter()
        .map(|(k, n)| (k.into(), n.into()))
        .collect()
}

fn union_entries<K, L, V>(items: impl IntoIterator<Item = (K, L)>) -> Vec<(String, Vec<Value>)>
where
    K: Into<String>,
    L: IntoIterator<Item = V>,
    V: Into<Value>,
{
    items
        .into_iter()
        .map(|(k, l)| (k.into(), l.into_iter().map(Into::into).collect()))
        .collect()
}

impl UserUpdate<'_> {
    fn profile(&self) -> ProfileRef<'_> {
        ProfileRef::User(&self.distinct_id)
    }
    /// `$set` from any struct or map that implements [`Serialize`], written straight to
    /// JSON without building [`Properties`]. Same bytes and same validation as
    /// `.set(Properties::from_serialize(value)?)`, faster.
    ///
    /// When the value holds something validation reports (a NaN, a string Mixpanel would
    /// truncate, nesting past 32 levels…), it is serialized a second time through
    /// [`Properties`] to name the property: a `Serialize` implementation that can only run
    /// once should go through [`Properties::from_serialize`] instead.
    ///
    /// ```
    /// use engage_core::Update;
    /// #[derive(serde::Serialize)]
    /// struct Customer { name: &'static str, seats: u32 }
    /// let u = Update::user("u1").set_from(&Customer { name: "Ada", seats: 3 })?;
    /// assert!(u.is_idempotent());
    /// # Ok::<(), engage_core::SerializeError>(())
    /// ```
    pub fn set_from<T: Serialize + ?Sized>(self, value: &T) -> Result<Update, SerializeError> {
        Update::serialized(self.profile(), false, value)
    }
    /// `$set_once` from any struct or map that implements [`Serialize`]; see
    /// [`set_from`](Self::set_from).
    pub fn set_once_from<T: Serialize + ?Sized>(self, value: &T) -> Result<Update, SerializeError> {
        Update::serialized(self.profile(), true, value)
    }
    fn make(self, operation: Operation) -> Update {
        Update::encoded(EncodedRecord::new(self.profile(), operation))
    }
    /// `$set`: overwrite these properties.
    pub fn set(self, props: impl Into<Properties>) -> Update {
        self.make(Operation::Set(props.into()))
    }
    /// `$set_once`: set these properties unless they already have a value.
    pub fn set_once(self, props: impl Into<Properties>) -> Update {
        self.make(Operation::SetOnce(props.into()))
    }
    /// `$add`: add these numbers (negative subtracts).
    #[allow(clippy::should_implement_trait)] // named after Mixpanel's operation
    pub fn add<K: Into<String>, N: Into<Number>>(
        self,
        items: impl IntoIterator<Item = (K, N)>,
    ) -> Update {
        self.make(Operation::Add(add_entries(items)))
    }
    /// `$union`: merge these lists into list properties, without duplicates.
    pub fn union<K, L, V>(self, items: impl IntoIterator<Item = (K, L)>) -> Update
    where
        K: Into<String>,
        L: IntoIterator<Item = V>,
        V: Into<Value>,
    {
        self.make(Operation::Union(union_entries(items)))
    }
    /// `$append`: append each value to its list property.
    pub fn append(self, props: impl Into<Properties>) -> Update {
        self.make(Operation::Append(props.into()))
    }
    /// `$remove`: remove each value from its list property.
    pub fn remove(self, props: impl Into<Properties>) -> Update {
        self.make(Operation::Remove(props.into()))
    }
    /// `$unset`: delete these properties.
    pub fn unset<S: Into<String>>(self, names: impl IntoIterator<Item = S>) -> Update {
        self.make(Operation::Unset(
            names.into_iter().map(Into::into).collect(),
        ))
    }
    /// `$delete`: delete the profile.
    pub fn delete(self) -> Update {
        self.make(Operation::Delete)
    }
}

impl GroupUpdate<'_> {
    fn profile(&self) -> ProfileRef<'_> {
        ProfileRef::Group {
            key: &self.key,
            id: &self.id,
        }
    }
    /// `$set` from any struct or map that implements [`Serialize`], written straight to
    /// JSON without building [`Properties`]. Same bytes and same validation as
    /// `.set(Properties::from_serialize(value)?)`, faster.
    ///
    /// When the value holds something validation reports (a NaN, a string Mixpanel would
    /// truncate, nesting past 32 levels…), it is serialized a second time through
    /// [`Properties`] to name the property: a `Serialize` implementation that can only run
    /// once should go through [`Properties::from_serialize`] instead.
    ///
    /// ```
    /// use engage_core::Update;
    /// #[derive(serde::Serialize)]
    /// struct Customer { name: &'static str, seats: u32 }
    /// let u = Update::group("company", "acme").set_from(&Customer { name: "Acme", seats: 3 })?;
    /// assert!(u.is_idempotent());
    /// # Ok::<(), engage_core::SerializeError>(())
    /// ```
    pub fn set_from<T: Serialize + ?Sized>(self, value: &T) -> Result<Update, SerializeError> {
        Update::serialized(self.profile(), false, value)
    }
    /// `$set_once` from any struct or map that implements [`Serialize`]; see
    /// [`set_from`](Self::set_from).
    pub fn set_once_from<T: Serialize + ?Sized>(self, value: &T) -> Result<Update, SerializeError> {
        Update::serialized(self.profile(), true, value)
    }
    fn make(self, operation: Operation) -> Update {
        Update::encoded(EncodedRecord::new(self.profile(), operation))
    }
    /// `$set`: overwrite these properties.
    pub fn set(self, props: impl Into<Properties>) -> Update {
        self.make(Operation::Set(props.into()))
    }
    /// `$set_once`: set these properties unless they already have a value.
    pub fn set_once(self, props: impl Into<Properties>) -> Update {
        self.make(Operation::SetOnce(props.into()))
    }
    /// `$union`: merge these lists into list properties, without duplicates.
    pub fn union<K, L, V>(self, items: impl IntoIterator<Item = (K, L)>) -> Update
    where
        K: Into<String>,
        L: IntoIterator<Item = V>,
        V: Into<Value>,
    {
        self.make(Operation::Union(union_entries(items)))
    }
    /// `$remove`: remove each value from its list property.
    pub fn remove(self, props: impl Into<Properties>) -> Update {
        self.make(Operation::Remove(props.into()))
    }
    /// `$unset`: delete these properties.
    pub fn unset<S: Into<String>>(self, names: impl IntoIterator<Item = S>) -> Update {
        self.make(Operation::Unset(
            names.into_iter().map(Into::into).collect(),
        ))
    }
    /// `$delete`: delete the group profile.
    pub fn delete(self) -> Update {
        self.make(Operation::Delete)
    }
}

impl Update {
    /// Starts an update of the user profile `distinct_id`.
    ///
    /// The id is borrowed until the operation is chosen, when it is written to JSON: a
    /// `&str` is not copied into a `String` first.
    pub fn user<'a>(distinct_id: impl Into<Cow<'a, str>>) -> UserUpdate<'a> {
        UserUpdate {
            distinct_id: distinct_id.into(),
        }
    }

    /// Starts an update of the group profile `key`/`id` (e.g. `"company"`, `"acme"`).
    pub fn group<'a>(key: impl Into<Cow<'a, str>>, id: impl Into<Cow<'a, str>>) -> GroupUpdate<'a> {
        GroupUpdate {
            key: key.into(),
            id: id.into(),
        }
    }

    /// An update from its parts. Validation still rejects operations `/groups` does not
    /// document when the profile is a group.
    ///
    /// The operation is validated and encoded to JSON here, once (every typed constructor
    /// comes through here): batching, re-batching and retries copy those bytes. A problem
    /// found now (a NaN, say) is reported when the update is given to a
    /// [`Batcher`](crate::Batcher), which knows its index.
    pub fn new(profile: ProfileId, operation: Operation) -> Update {
        Update::encoded(EncodedRecord::new(profile.as_ref(), operation))
    }

    fn encoded(record: EncodedRecord) -> Update {
        Update {
            kind: UpdateKind::Typed {
                modifiers: Modifiers::default(),
                record,
            },
        }
    }

    fn serialized<T: Serialize + ?Sized>(
        profile: ProfileRef<'_>,
        once: bool,
        value: &T,
    ) -> Result<Update, SerializeError> {
        EncodedRecord::from_serialize(profile, once, value).map(Update::encoded)
    }

    /// The escape hatch: an already-formed update object, sent as given except that
    /// `$token` is filled in when missing. Validation still checks that it is an object
    /// with a token that matches, a non-empty id for its endpoint, and exactly one known
    /// operation (see [`check_record`](crate::check_record)).
    pub fn raw(object: serde_json::Value) -> Update {
        Update {
            kind: UpdateKind::Raw(object),
        }
    }

    /// Changes a typed update's modifiers and re-encodes them.
    fn modify(mut self, change: impl FnOnce(&mut Modifiers)) -> Self {
        if let UpdateKind::Typed {
            modifiers, record, ..
        } = &mut self.kind
        {
            change(modifiers);
            record.set_modifiers(modifiers);
        }
        self
    }

    /// `$ip`: geolocate this update from `ip` (Mixpanel otherwise uses the request's
    /// address, or none with `ip=0`). No effect on raw updates.
    pub fn with_ip(self, ip: impl Into<String>) -> Self {
        self.modify(|m| m.ip = Some(Geolocation::FromIp(ip.into())))
    }

    /// `$ip: "0"`: never geolocate this update. No effect on raw updates.
    pub fn without_geolocation(self) -> Self {
        self.modify(|m| m.ip = Some(Geolocation::Skip))
    }

    /// `$latitude` / `$longitude`. No effect on raw updates.
    pub fn with_location(self, latitude: f64, longitude: f64) -> Self {
        self.modify(|m| m.location = Some((latitude, longitude)))
    }

    /// `$time` from a [`SystemTime`], sent as integer milliseconds. No effect on raw updates.
    pub fn with_time(self, time: SystemTime) -> Self {
        let ms = match time.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
        };
        self.with_time_ms(ms)
    }

    /// `$time` in milliseconds since the Unix epoch. No effect on raw updates.
    pub fn with_time_ms(self, ms: i64) -> Self {
        self.modify(|m| m.time_ms = Some(ms))
    }

    /// `$ignore_time: true`: do not touch `$last_seen`. No effect on raw updates.
    pub fn ignore_time(self) -> Self {
        self.modify(|m| m.ignore_time = true)
    }

    /// `$ignore_alias: true`: with `$delete`, delete only this profile, not the one it
    /// aliases to. No effect on raw updates.
    pub fn ignore_alias(self) -> Self {
        self.modify(|m| m.ignore_alias = true)
    }

    /// The profile, for a typed update; for a raw one, the id it carries if well formed.
    pub fn profile(&self) -> Option<ProfileId> {
        match &self.kind {
            UpdateKind::Typed { record, .. } => record.profile(),
            UpdateKind::Raw(v) => crate::check::raw_profile(v),
        }
    }

    /// The operation of a typed update, as it will be sent; `None` for a raw one.
    ///
    /// It is read back from the JSON encoded when the update was built, so dates come
    /// back as their `YYYY-MM-DDTHH:MM:SS` text and integers as [`Value::Int`] when they
    /// fit an `i64`. An operation that failed validation comes back exactly as given.
    ///
    /// ```
    /// use engage_core::{Operation, Update, Value};
    /// let u = Update::user("u1").set([("plan", "pro")]);
    /// let Some(Operation::Set(props)) = u.operation() else { unreachable!() };
    /// assert_eq!(props.iter().collect::<Vec<_>>(), [("plan", &Value::from("pro"))]);
    /// ```
    pub fn operation(&self) -> Option<Operation> {
        match &self.kind {
            UpdateKind::Typed { record, .. } => record.decode(),
            UpdateKind::Raw(_) => None,
        }
    }

    /// The modifiers of a typed update; `None` for a raw one.
    pub fn modifiers(&self) -> Option<&Modifiers> {
        match &self.kind {
            UpdateKind::Typed { modifiers, .. } => Some(modifiers),
            UpdateKind::Raw(_) => None,
        }
    }

    /// The endpoint this update goes to; for a raw update, guessed from its keys
    /// (`$group_key` means `/groups`).
    pub fn endpoint(&self) -> Endpoint {
        match &self.kind {
            UpdateKind::Typed { record, .. } => record.endpoint(),
            UpdateKind::Raw(v) => {
                if v.get("$group_key").is_some() || v.get("$group_id").is_some() {
                    Endpoint::Groups
                } else {
                    Endpoint::Engage
                }
            }
        }
    }

    /// Whether resending it is harmless (`false` for `$add` and `$append`, and for a raw
    /// update carrying either).
    pub fn is_idempotent(&self) -> bool {
        match &self.kind {
            UpdateKind::Typed { record, .. } => record.kind.is_idempotent(),
            UpdateKind::Raw(v) => OPERATIONS
                .iter()
                .filter(|(_, idempotent)| !idempotent)
                .all(|(key, _)| v.get(*key).is_none()),
        }
    }
}
