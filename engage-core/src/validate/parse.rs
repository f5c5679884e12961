//! Reading one update object from JSON text while noticing repeated keys, which a plain
//! `serde_json::Value` drops without a trace (the last one wins).

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::map::Entry;
use serde_json::{Map, Number, Value as Json};

/// An update object read from JSON text, with the keys it repeated.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ParsedRecord {
    /// The value; of a repeated key, the last occurrence (what `serde_json` and, as far
    /// as anyone knows, Mixpanel keep).
    pub value: Json,
    /// The top-level properties that held a repeated key, each once, in the order found:
    /// a repeated record key (`"$set"` twice) is named itself; a key repeated inside an
    /// operation or deeper is named by the operation's property it sits in.
    pub repeated: Vec<String>,
}

/// Reads one JSON value (normally an update object), noting repeated keys.
///
/// ```
/// use engage_core::validate::parse_record;
/// let parsed = parse_record(br#"{"$distinct_id":"u1","$set":{"a":1},"$set":{"b":2}}"#)?;
/// assert_eq!(parsed.repeated, ["$set"]);
/// assert_eq!(parsed.value["$set"], serde_json::json!({"b": 2}));
/// let parsed = parse_record(br#"{"$distinct_id":"u1","$add":{"n":1,"n":2}}"#)?;
/// assert_eq!(parsed.repeated, ["n"]);
/// # Ok::<(), serde_json::Error>(())
/// ```
pub fn parse_record(text: &[u8]) -> Result<ParsedRecord, serde_json::Error> {
    let mut repeated = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(text);
    let value = Node {
        depth: 0,
        property: None,
        repeated: &mut repeated,
    }
    .deserialize(&mut de)?;
    de.end()?;
    Ok(ParsedRecord { value, repeated })
}

/// One value at `depth` (0: the record; 1: an operation's value; deeper: inside a
/// property), inside top-level property `property` once past depth 1.
struct Node<'r> {
    depth: u32,
    property: Option<&'r str>,
    repeated: &'r mut Vec<String>,
}

impl Node<'_> {
    fn note(&mut self, key: &str) {
        let name = self.property.unwrap_or(key);
        if !self.repeated.iter().any(|r| r == name) {
            self.repeated.push(name.to_owned());
        }
    }
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = Json;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Json, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
        // The parser never yields a non-finite float (it reports "number out of range").
        Ok(Number::from_f64(v).map_or(Json::Null, Json::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element_seed(Node {
            depth: self.depth + 1,
            property: self.property,
            repeated: &mut *self.repeated,
        })? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Json, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            // Inside an operation's object the key is the property; deeper, the property
            // it belongs to was named one level up.
            let property = match self.depth {
                1 => Some(key.as_str()),
                _ => self.property,
            };
            let value = map.next_value_seed(Node {
                depth: self.depth + 1,
                property,
                repeated: &mut *self.repeated,
            })?;
            match object.entry(key) {
                Entry::Vacant(slot) => {
                    slot.insert(value);
                }
                Entry::Occupied(mut slot) => {
                    self.note(slot.key());
                    slot.insert(value);
                }
            }
        }
        Ok(Json::Object(object))
    }
}
