//! The update model: one profile update object, typed or raw.

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::model::{
    Endpoint, Geolocation, Modifiers, Number, OpKind, Operation, ProfileId, ProfileRef, Properties,
    SerializeError, Value,
};
use crate::wire::encode::EncodedRecord;
use crate::wire::text::{JsonParts, TextRecord};

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
    /// The object, and the top-level properties where its text repeated a key.
    Raw(serde_json::Value, Box<[String]>),
    /// JSON text the one-pass reader took: valid, without warnings, minified.
    Text(TextRecord),
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
    /// To batch many structs, [`Batcher::push_set_from`](crate::batch::Batcher::push_set_from)
    /// writes each straight into a request body, without building the `Update`.
    ///
    /// ```
    /// use engage_core::Update;
    /// #[derive(serde::Serialize)]
    /// struct Customer { name: &'static str, seats: u32 }
    /// let u = Update::user("u1").set_from(&Customer { name: "Ada", seats: 3 })?;
    /// assert!(u.is_idempotent());
    /// # Ok::<(), engage_core::model::SerializeError>(())
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
    /// # Ok::<(), engage_core::model::SerializeError>(())
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
    /// [`Batcher`](crate::batch::Batcher), which knows its index.
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

    /// [`serialized`](Self::serialized) through [`Properties`] only, for a value the
    /// direct writer (`encode::encode_serialized`) stopped at.
    pub(crate) fn serialized_checked<T: Serialize + ?Sized>(
        profile: ProfileRef<'_>,
        once: bool,
        value: &T,
    ) -> Result<Update, SerializeError> {
        EncodedRecord::from_tree(profile, once, value).map(Update::encoded)
    }

    /// The escape hatch: an already-formed update object, sent as given except that
    /// `$token` is filled in when missing. Validation still checks that it is an object
    /// with a token that matches, a non-empty id for its endpoint, and exactly one known
    /// operation (see [`check_record`](crate::validate::check_record)).
    pub fn raw(object: serde_json::Value) -> Update {
        Update {
            kind: UpdateKind::Raw(object, Box::default()),
        }
    }

    /// A raw update read from JSON text by [`parse_record`](crate::validate::parse_record):
    /// the keys its text repeated (of which only the last is sent) are reported as
    /// [`WarningKind::RepeatedKey`](crate::validate::WarningKind::RepeatedKey) warnings.
    ///
    /// ```
    /// use engage_core::batch::Batcher;
    /// use engage_core::validate::{parse_record, WarningKind};
    /// use engage_core::{BatchConfig, Endpoint, Token, Update};
    /// let text = br#"{"$distinct_id":"u1","$set":{"plan":"pro"},"$set":{"seats":3}}"#;
    /// let update = Update::raw_parsed(parse_record(text)?);
    /// let mut batcher = Batcher::new(BatchConfig::new(Token::new("tok")?, Endpoint::Engage));
    /// assert!(batcher.push(&update)?.is_none());
    /// let batch = batcher.finish().expect("one record");
    /// assert_eq!(batch.warnings()[0].kind, WarningKind::RepeatedKey);
    /// assert_eq!(batch.warnings()[0].property, "$set");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn raw_parsed(parsed: crate::validate::ParsedRecord) -> Update {
        Update {
            kind: UpdateKind::Raw(parsed.value, parsed.repeated.into_boxed_slice()),
        }
    }

    /// An update object given as JSON text (a line of an export, a message from a queue):
    /// read in one pass that checks it and keeps it as it came, minified, without building
    /// a `serde_json::Value`, when it is a valid record that draws no warning (the common
    /// case). Anything else goes through [`parse_record`](crate::validate::parse_record)
    /// and is then treated like [`Update::raw_parsed`]: the same checks, errors and
    /// warnings either way, reported when the update is batched.
    ///
    /// The error is for text that is not JSON at all (or not UTF-8).
    ///
    /// `text` is a `&str`, or bytes not yet checked to be UTF-8 (a line as read from a
    /// file): the one-pass reader checks the strings that hold other bytes than ASCII, so
    /// the common record is not walked twice.
    ///
    /// ```
    /// use engage_core::batch::Batcher;
    /// use engage_core::{BatchConfig, Endpoint, Token, Update};
    /// let update = Update::from_json(r#"{"$distinct_id": "u1", "$add": {"logins": 1}}"#)?;
    /// assert!(!update.is_idempotent());
    /// let mut batcher = Batcher::new(BatchConfig::new(Token::new("tok")?, Endpoint::Engage));
    /// batcher.push(&update)?;
    /// let batch = batcher.finish().expect("one record");
    /// assert_eq!(
    ///     batch.body().as_ref(),
    ///     br#"[{"$token":"tok","$distinct_id":"u1","$add":{"logins":1}}]"#
    /// );
    /// // Not JSON: an error now. JSON but not a valid update: an error when batched.
    /// assert!(Update::from_json("{").is_err());
    /// assert!(batcher.push(&Update::from_json(r#"{"$distinct_id": "u1"}"#)?).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_json(text: impl AsRef<[u8]>) -> Result<Update, serde_json::Error> {
        let text = text.as_ref();
        match Update::from_json_fast(text) {
            Some(update) => Ok(update),
            None => crate::validate::parse_record(text).map(Update::raw_parsed),
        }
    }

    /// The one-pass reader of [`Update::from_json`] alone: `Some` when it takes the text
    /// (a valid update object that draws no warning), `None` when the text needs the full
    /// parser: not JSON, not an update object (no operation: a flat record a caller may
    /// want to shape), invalid, or unusual (repeated keys, escapes in keys or ids,
    /// exponents, strings Mixpanel would truncate, deep nesting), or not UTF-8.
    ///
    /// ```
    /// use engage_core::Update;
    /// assert!(Update::from_json_fast(r#"{"$distinct_id":"u1","$set":{"plan":"pro"}}"#).is_some());
    /// assert!(Update::from_json_fast(r#"{"distinct_id":"u1","plan":"pro"}"#).is_none());
    /// // Bytes as read: UTF-8 is checked where it matters, in the strings.
    /// assert!(Update::from_json_fast(b"{\"$distinct_id\":\"u1\",\"$set\":{\"c\":\"Z\xc3\xbcrich\"}}").is_some());
    /// assert!(Update::from_json_fast(b"{\"$distinct_id\":\"u1\",\"$set\":{\"c\":\"Z\xfcrich\"}}").is_none());
    /// ```
    pub fn from_json_fast(text: impl AsRef<[u8]>) -> Option<Update> {
        crate::wire::text::read(text.as_ref()).map(|record| Update {
            kind: UpdateKind::Text(record),
        })
    }

    /// Reads a JSON array of update objects (a request body, an export written as one
    /// array) in one pass: each element is an update [`Update::from_json_fast`] would
    /// take (`Ok`), or, for anything else, the element's text (`Err`) for the full parser
    /// ([`Update::from_json`], or a caller's own handling). `None` when `text` is not a
    /// well-formed JSON array, or not UTF-8.
    ///
    /// The text may be given as bytes as they were read (a request body): they are not
    /// walked once more to check they are UTF-8. The reader checks the strings of the
    /// objects it takes, the full parser the elements it leaves; nothing else may be other
    /// than ASCII.
    ///
    /// ```
    /// use engage_core::Update;
    /// let body = r#"[{"$distinct_id":"u1","$set":{"a":1}}, {"distinct_id":"u2"}]"#;
    /// let items = Update::from_json_array(body).expect("an array");
    /// assert!(items[0].is_ok());
    /// assert_eq!(items[1].as_ref().err(), Some(&r#"{"distinct_id":"u2"}"#));
    /// assert!(Update::from_json_array("[1,").is_none());
    /// assert!(Update::from_json_array(&b"[{\"d\":\"\xff\"}]"[..]).is_none());
    /// ```
    pub fn from_json_array<T: AsRef<[u8]> + ?Sized>(text: &T) -> Option<Vec<Result<Update, &str>>> {
        let items = crate::wire::text::read_array(text.as_ref())?;
        Some(
            items
                .into_iter()
                .map(|item| {
                    item.map(|record| Update {
                        kind: UpdateKind::Text(record),
                    })
                })
                .collect(),
        )
    }

    /// The JSON text of an update [`Update::from_json`] read in one pass: the object as it
    /// came, minified. A cheap clone (the bytes are shared); `None` for other updates.
    pub fn json_text(&self) -> Option<&bytes::Bytes> {
        match &self.kind {
            UpdateKind::Text(record) => Some(&record.json),
            _ => None,
        }
    }

    /// The parts of an update [`Update::from_json`] read in one pass (see [`JsonParts`]);
    /// `None` for other updates.
    pub fn json_parts(&self) -> Option<JsonParts<'_>> {
        match &self.kind {
            UpdateKind::Text(record) => Some(JsonParts { record }),
            _ => None,
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
            UpdateKind::Raw(v, _) => crate::validate::raw_profile(v),
            UpdateKind::Text(t) => Some(t.profile()),
        }
    }

    /// The operation of a typed update, as it will be sent; `None` for a raw one.
    ///
    /// It is read back from the JSON encoded when the update was built, so dates come
    /// back as their `YYYY-MM-DDTHH:MM:SS` text and integers as [`Value::Int`] when they
    /// fit an `i64`. An operation that failed validation comes back exactly as given.
    ///
    /// ```
    /// use engage_core::{Update, Value};
    /// use engage_core::model::Operation;
    /// let u = Update::user("u1").set([("plan", "pro")]);
    /// let Some(Operation::Set(props)) = u.operation() else { unreachable!() };
    /// assert_eq!(props.iter().collect::<Vec<_>>(), [("plan", &Value::from("pro"))]);
    /// ```
    pub fn operation(&self) -> Option<Operation> {
        match &self.kind {
            UpdateKind::Typed { record, .. } => record.decode(),
            UpdateKind::Raw(_, _) | UpdateKind::Text(_) => None,
        }
    }

    /// The modifiers of a typed update; `None` for a raw one.
    pub fn modifiers(&self) -> Option<&Modifiers> {
        match &self.kind {
            UpdateKind::Typed { modifiers, .. } => Some(modifiers),
            UpdateKind::Raw(_, _) | UpdateKind::Text(_) => None,
        }
    }

    /// The endpoint this update goes to; for a raw update, guessed from its keys
    /// (`$group_key` means `/groups`).
    pub fn endpoint(&self) -> Endpoint {
        match &self.kind {
            UpdateKind::Typed { record, .. } => record.endpoint(),
            UpdateKind::Raw(v, _) => {
                if v.get("$group_key").is_some() || v.get("$group_id").is_some() {
                    Endpoint::Groups
                } else {
                    Endpoint::Engage
                }
            }
            UpdateKind::Text(t) => t.endpoint,
        }
    }

    /// A hash of the profile it updates (see `model::profile_hash`): equal for updates of
    /// the same profile, typed or raw. `None` for a raw update naming no profile.
    pub(crate) fn profile_hash(&self) -> Option<u64> {
        match &self.kind {
            UpdateKind::Typed { record, .. } => {
                let span = |(a, b): (usize, usize)| &record.json[a..b];
                Some(crate::model::profile_hash(
                    record.endpoint(),
                    record.key.map(span).unwrap_or(&[]),
                    span(record.id),
                ))
            }
            UpdateKind::Raw(v, _) => {
                let s = |k: &str| v.get(k).and_then(serde_json::Value::as_str);
                let json = |text: &str| {
                    let mut out = Vec::with_capacity(text.len() + 2);
                    crate::wire::json::write_str(&mut out, text);
                    out
                };
                let hash = match (s("$group_key"), s("$group_id"), s("$distinct_id")) {
                    (Some(k), Some(i), _) => {
                        crate::model::profile_hash(Endpoint::Groups, &json(k), &json(i))
                    }
                    (_, _, Some(d)) => crate::model::profile_hash(Endpoint::Engage, &[], &json(d)),
                    _ => return None,
                };
                Some(hash)
            }
            UpdateKind::Text(t) => Some(t.profile_hash()),
        }
    }

    /// Whether resending it is harmless (`false` for `$add` and `$append`, and for a raw
    /// update carrying either).
    pub fn is_idempotent(&self) -> bool {
        match &self.kind {
            UpdateKind::Typed { record, .. } => record.kind.is_idempotent(),
            UpdateKind::Raw(v, _) => OpKind::ALL
                .into_iter()
                .filter(|k| !k.is_idempotent())
                .all(|k| v.get(k.key()).is_none()),
            UpdateKind::Text(t) => t.kind.is_idempotent(),
        }
    }
}
