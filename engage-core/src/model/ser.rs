//! A serde `Serializer` that turns any `Serialize` into a [`Value`], keeping NaN and
//! infinities visible (serde_json silently turns them into `null`) so validation can
//! name them.

use serde::ser::{self, Serialize};

use crate::model::value::Value;

/// Why a Rust value could not become properties.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SerializeError {
    /// Properties must come from a struct or a map; this was something else.
    #[error("properties must serialize as a map or struct, not {0}")]
    NotAMap(&'static str),
    /// A map key was not a string (or a value that can be written as one).
    #[error("map keys must be strings, numbers, booleans or chars")]
    KeyNotAString,
    /// The value's own `Serialize` implementation failed.
    #[error("{0}")]
    Custom(String),
    /// Lists and maps nested deeper than 128 levels (the encoder accepts 32; this only
    /// keeps a runaway `Serialize` from exhausting the stack).
    #[error("nested deeper than 128 levels")]
    TooDeep,
}

impl ser::Error for SerializeError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        SerializeError::Custom(msg.to_string())
    }
}

/// Serializes `value` into a [`Value`].
pub fn to_value<T: Serialize + ?Sized>(value: &T) -> Result<Value, SerializeError> {
    value.serialize(ValueSerializer { depth: 0 })
}

/// Deepest nesting `to_value` builds.
const MAX_TREE_DEPTH: u32 = 128;

/// The struct name serde_json's `arbitrary_precision` feature gives its numbers.
pub(crate) const ARBITRARY_PRECISION_NUMBER: &str = "$serde_json::private::Number";

/// Serializes a value nested `depth` levels down.
fn nested<T: Serialize + ?Sized>(value: &T, depth: u32) -> R {
    value.serialize(ValueSerializer { depth })
}

struct ValueSerializer {
    depth: u32,
}

impl ValueSerializer {
    /// The depth of a new container's items, or an error past the limit.
    fn enter(&self) -> Result<u32, SerializeError> {
        if self.depth >= MAX_TREE_DEPTH {
            return Err(SerializeError::TooDeep);
        }
        Ok(self.depth + 1)
    }
}

type R = Result<Value, SerializeError>;

impl ser::Serializer for ValueSerializer {
    type Ok = Value;
    type Error = SerializeError;
    type SerializeSeq = SeqSer;
    type SerializeTuple = SeqSer;
    type SerializeTupleStruct = SeqSer;
    type SerializeTupleVariant = VariantSeqSer;
    type SerializeMap = MapSer;
    type SerializeStruct = MapSer;
    type SerializeStructVariant = VariantMapSer;

    fn serialize_bool(self, v: bool) -> R {
        Ok(Value::Bool(v))
    }
    fn serialize_i8(self, v: i8) -> R {
        Ok(Value::Int(v.into()))
    }
    fn serialize_i16(self, v: i16) -> R {
        Ok(Value::Int(v.into()))
    }
    fn serialize_i32(self, v: i32) -> R {
        Ok(Value::Int(v.into()))
    }
    fn serialize_i64(self, v: i64) -> R {
        Ok(Value::Int(v))
    }
    fn serialize_i128(self, v: i128) -> R {
        if let Ok(i) = i64::try_from(v) {
            Ok(Value::Int(i))
        } else if let Ok(u) = u64::try_from(v) {
            Ok(Value::UInt(u))
        } else {
            Ok(Value::Float(v as f64))
        }
    }
    fn serialize_u8(self, v: u8) -> R {
        Ok(Value::Int(v.into()))
    }
    fn serialize_u16(self, v: u16) -> R {
        Ok(Value::Int(v.into()))
    }
    fn serialize_u32(self, v: u32) -> R {
        Ok(Value::Int(v.into()))
    }
    fn serialize_u64(self, v: u64) -> R {
        Ok(Value::UInt(v))
    }
    fn serialize_u128(self, v: u128) -> R {
        match u64::try_from(v) {
            Ok(u) => Ok(Value::UInt(u)),
            Err(_) => Ok(Value::Float(v as f64)),
        }
    }
    fn serialize_f32(self, v: f32) -> R {
        Ok(Value::Float(v.into()))
    }
    fn serialize_f64(self, v: f64) -> R {
        Ok(Value::Float(v))
    }
    fn serialize_char(self, v: char) -> R {
        Ok(Value::String(v.to_string()))
    }
    fn serialize_str(self, v: &str) -> R {
        Ok(Value::String(v.to_owned()))
    }
    fn serialize_bytes(self, v: &[u8]) -> R {
        Ok(Value::List(
            v.iter().map(|b| Value::Int((*b).into())).collect(),
        ))
    }
    fn serialize_none(self) -> R {
        Ok(Value::Null)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> R {
        value.serialize(self)
    }
    fn serialize_unit(self) -> R {
        Ok(Value::Null)
    }
    fn serialize_unit_struct(self, _name: &'static str) -> R {
        Ok(Value::Null)
    }
    fn serialize_unit_variant(self, _n: &'static str, _i: u32, variant: &'static str) -> R {
        Ok(Value::String(variant.to_owned()))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _n: &'static str, value: &T) -> R {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _n: &'static str,
        _i: u32,
        variant: &'static str,
        value: &T,
    ) -> R {
        Ok(Value::Object(vec![(
            variant.to_owned(),
            nested(value, self.enter()?)?,
        )]))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<SeqSer, SerializeError> {
        Ok(SeqSer {
            items: Vec::with_capacity(len.unwrap_or(0).min(4096)),
            depth: self.enter()?,
        })
    }
    fn serialize_tuple(self, len: usize) -> Result<SeqSer, SerializeError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(
        self,
        _n: &'static str,
        len: usize,
    ) -> Result<SeqSer, SerializeError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _n: &'static str,
        _i: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<VariantSeqSer, SerializeError> {
        Ok(VariantSeqSer(variant, self.serialize_seq(Some(len))?))
    }
    fn serialize_map(self, len: Option<usize>) -> Result<MapSer, SerializeError> {
        Ok(MapSer {
            entries: Vec::with_capacity(len.unwrap_or(0).min(4096)),
            key: None,
            depth: self.enter()?,
            number: false,
        })
    }
    fn serialize_struct(self, name: &'static str, len: usize) -> Result<MapSer, SerializeError> {
        let mut map = self.serialize_map(Some(len))?;
        // A serde_json number under `arbitrary_precision`: its digits, as a number.
        map.number = name == ARBITRARY_PRECISION_NUMBER;
        Ok(map)
    }
    fn serialize_struct_variant(
        self,
        _n: &'static str,
        _i: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<VariantMapSer, SerializeError> {
        Ok(VariantMapSer(variant, self.serialize_map(Some(len))?))
    }
}

#[doc(hidden)]
pub struct SeqSer {
    items: Vec<Value>,
    /// The depth of the items.
    depth: u32,
}

impl ser::SerializeSeq for SeqSer {
    type Ok = Value;
    type Error = SerializeError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), SerializeError> {
        self.items.push(nested(v, self.depth)?);
        Ok(())
    }
    fn end(self) -> R {
        Ok(Value::List(self.items))
    }
}

impl ser::SerializeTuple for SeqSer {
    type Ok = Value;
    type Error = SerializeError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), SerializeError> {
        ser::SerializeSeq::serialize_element(self, v)
    }
    fn end(self) -> R {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleStruct for SeqSer {
    type Ok = Value;
    type Error = SerializeError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), SerializeError> {
        ser::SerializeSeq::serialize_element(self, v)
    }
    fn end(self) -> R {
        ser::SerializeSeq::end(self)
    }
}

#[doc(hidden)]
pub struct VariantSeqSer(&'static str, SeqSer);

impl ser::SerializeTupleVariant for VariantSeqSer {
    type Ok = Value;
    type Error = SerializeError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), SerializeError> {
        ser::SerializeSeq::serialize_element(&mut self.1, v)
    }
    fn end(self) -> R {
        Ok(Value::Object(vec![(
            self.0.to_owned(),
            Value::List(self.1.items),
        )]))
    }
}

#[doc(hidden)]
pub struct MapSer {
    entries: Vec<(String, Value)>,
    key: Option<String>,
    /// The depth of the values.
    depth: u32,
    /// serde_json's `arbitrary_precision` number: one field holding its digits.
    number: bool,
}

impl MapSer {
    fn finish(self) -> R {
        if self.number
            && let [(_, Value::String(digits))] = self.entries.as_slice()
        {
            return crate::model::value::number_from_text(digits)
                .ok_or_else(|| SerializeError::Custom(format!("not a JSON number: {digits}")));
        }
        Ok(Value::Object(self.entries))
    }
}

impl ser::SerializeMap for MapSer {
    type Ok = Value;
    type Error = SerializeError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), SerializeError> {
        let key = match nested(key, self.depth)? {
            Value::String(s) => s,
            Value::Int(i) => i.to_string(),
            Value::UInt(u) => u.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => return Err(SerializeError::KeyNotAString),
        };
        self.key = Some(key);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), SerializeError> {
        let key = self
            .key
            .take()
            .ok_or_else(|| SerializeError::Custom("map value without a key".into()))?;
        self.entries.push((key, nested(v, self.depth)?));
        Ok(())
    }
    fn end(self) -> R {
        self.finish()
    }
}

impl ser::SerializeStruct for MapSer {
    type Ok = Value;
    type Error = SerializeError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> Result<(), SerializeError> {
        self.entries.push((key.to_owned(), nested(v, self.depth)?));
        Ok(())
    }
    fn end(self) -> R {
        self.finish()
    }
}

#[doc(hidden)]
pub struct VariantMapSer(&'static str, MapSer);

impl ser::SerializeStructVariant for VariantMapSer {
    type Ok = Value;
    type Error = SerializeError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> Result<(), SerializeError> {
        ser::SerializeStruct::serialize_field(&mut self.1, key, v)
    }
    fn end(self) -> R {
        Ok(Value::Object(vec![(
            self.0.to_owned(),
            Value::Object(self.1.entries),
        )]))
    }
}
