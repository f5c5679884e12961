//! The fast path from a user's `Serialize` struct or map straight to the JSON of a
//! `$set`/`$set_once` payload, with no [`Value`](crate::Value) tree in between.
//!
//! It handles the common case only: anything validation would have to report (a NaN, a
//! string or top-level name Mixpanel would truncate, nesting past the depth limit, a
//! non-string map key, a top level that is not a struct or map) stops it, and the caller
//! redoes the value through the tree path, which reports it by property name. Both paths
//! write the same bytes (tested).

use serde::ser::{self, Serialize};

use crate::model::ser::ARBITRARY_PRECISION_NUMBER;
use crate::validate::rules::{MAX_DEPTH, MAX_NAME_CHARS, MAX_STRING_BYTES};
use crate::wire::json::{write_f64, write_int, write_key, write_str};

/// The fast path stopped: the value holds something the tree path must handle (and may
/// report), or its own `Serialize` implementation failed (the tree path reports that
/// too, so the message is not kept). A unit, so that every `Result` here fits a register.
#[derive(Debug)]
pub(crate) struct Stop;

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("needs the checked path")
    }
}

impl std::error::Error for Stop {}

impl ser::Error for Stop {
    fn custom<T: std::fmt::Display>(_msg: T) -> Self {
        Stop
    }
}

type R = Result<(), Stop>;

/// The integer methods of a serializer with an `integer` method (`i128`/`u128` differ).
macro_rules! integers {
    () => {
        integers!(serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_i64: i64);
        integers!(serialize_u8: u8, serialize_u16: u16, serialize_u32: u32, serialize_u64: u64);
    };
    ($($method:ident: $t:ty),*) => {$(
        fn $method(self, v: $t) -> R {
            self.integer(v)
        }
    )*};
}

/// Appends `value` as a JSON object to `out`. On `Err`, `out` holds a partial write.
pub(crate) fn write_properties<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> R {
    value.serialize(TopLevel { out })
}

/// Any value below a property, at `depth` (the property's own value is at depth 0).
struct Json<'a> {
    out: &'a mut Vec<u8>,
    depth: u32,
}

#[inline(always)]
fn string(out: &mut Vec<u8>, s: &str) -> R {
    if s.len() > MAX_STRING_BYTES {
        return Err(Stop);
    }
    write_str(out, s);
    Ok(())
}

#[inline]
fn float(out: &mut Vec<u8>, v: f64) -> R {
    write_f64(out, v).map_err(|_| Stop)
}

#[inline]
fn integer(out: &mut Vec<u8>, v: impl itoa::Integer) -> R {
    write_int(out, v);
    Ok(())
}

impl<'a> Json<'a> {
    fn integer(self, v: impl itoa::Integer) -> R {
        integer(self.out, v)
    }

    fn open(self, bracket: u8) -> Result<Compound<'a>, Stop> {
        if self.depth >= MAX_DEPTH {
            return Err(Stop);
        }
        self.out.push(bracket);
        Ok(Compound {
            out: self.out,
            depth: self.depth + 1,
            first: true,
            wrapped: false,
            top_level: false,
            key_pending: false,
        })
    }

    /// `{"variant":` then a container one level further down, closed by `Compound::end`.
    fn open_variant(self, variant: &str, bracket: u8) -> Result<Compound<'a>, Stop> {
        if self.depth + 1 >= MAX_DEPTH {
            return Err(Stop);
        }
        self.out.push(b'{');
        write_str(self.out, variant);
        self.out.push(b':');
        self.out.push(bracket);
        Ok(Compound {
            out: self.out,
            depth: self.depth + 2,
            first: true,
            wrapped: true,
            top_level: false,
            key_pending: false,
        })
    }
}

impl<'a> ser::Serializer for Json<'a> {
    type Ok = ();
    type Error = Stop;
    type SerializeSeq = Compound<'a>;
    type SerializeTuple = Compound<'a>;
    type SerializeTupleStruct = Compound<'a>;
    type SerializeTupleVariant = Compound<'a>;
    type SerializeMap = Compound<'a>;
    type SerializeStruct = Compound<'a>;
    type SerializeStructVariant = Compound<'a>;

    fn serialize_bool(self, v: bool) -> R {
        self.out
            .extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }
    integers!();
    fn serialize_i128(self, v: i128) -> R {
        // As the tree path: an integer if it fits 64 bits, else a float.
        if i64::try_from(v).is_ok() || u64::try_from(v).is_ok() {
            integer(self.out, v)
        } else {
            float(self.out, v as f64)
        }
    }
    fn serialize_u128(self, v: u128) -> R {
        if u64::try_from(v).is_ok() {
            integer(self.out, v)
        } else {
            float(self.out, v as f64)
        }
    }
    fn serialize_f32(self, v: f32) -> R {
        float(self.out, v.into())
    }
    fn serialize_f64(self, v: f64) -> R {
        float(self.out, v)
    }
    fn serialize_char(self, v: char) -> R {
        string(self.out, v.encode_utf8(&mut [0; 4]))
    }
    fn serialize_str(self, v: &str) -> R {
        string(self.out, v)
    }
    fn serialize_bytes(self, v: &[u8]) -> R {
        let mut list = self.open(b'[')?;
        for b in v {
            ser::SerializeSeq::serialize_element(&mut list, b)?;
        }
        ser::SerializeSeq::end(list)
    }
    fn serialize_none(self) -> R {
        self.out.extend_from_slice(b"null");
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> R {
        value.serialize(self)
    }
    fn serialize_unit(self) -> R {
        self.serialize_none()
    }
    fn serialize_unit_struct(self, _name: &'static str) -> R {
        self.serialize_none()
    }
    fn serialize_unit_variant(self, _n: &'static str, _i: u32, variant: &'static str) -> R {
        string(self.out, variant)
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
        if self.depth >= MAX_DEPTH {
            return Err(Stop);
        }
        self.out.push(b'{');
        write_str(self.out, variant);
        self.out.push(b':');
        value.serialize(Json {
            out: &mut *self.out,
            depth: self.depth + 1,
        })?;
        self.out.push(b'}');
        Ok(())
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Compound<'a>, Stop> {
        self.open(b'[')
    }
    fn serialize_tuple(self, _len: usize) -> Result<Compound<'a>, Stop> {
        self.open(b'[')
    }
    fn serialize_tuple_struct(self, _n: &'static str, _len: usize) -> Result<Compound<'a>, Stop> {
        self.open(b'[')
    }
    fn serialize_tuple_variant(
        self,
        _n: &'static str,
        _i: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'a>, Stop> {
        self.open_variant(variant, b'[')
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Compound<'a>, Stop> {
        self.open(b'{')
    }
    fn serialize_struct(self, name: &'static str, _len: usize) -> Result<Compound<'a>, Stop> {
        // serde_json's `arbitrary_precision` numbers are structs: the tree path reads them.
        if name == ARBITRARY_PRECISION_NUMBER {
            return Err(Stop);
        }
        self.open(b'{')
    }
    fn serialize_struct_variant(
        self,
        _n: &'static str,
        _i: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'a>, Stop> {
        self.open_variant(variant, b'{')
    }
}

/// An open list or object; `depth` is that of its items.
#[doc(hidden)]
pub(crate) struct Compound<'a> {
    out: &'a mut Vec<u8>,
    depth: u32,
    first: bool,
    /// Inside `{"variant": …}`: one more brace to close.
    wrapped: bool,
    /// The payload itself: its keys are property names.
    top_level: bool,
    /// A map's key is written and its value not yet. A `Serialize` that gives a value
    /// without a key, two keys in a row or a key last would write JSON that is not
    /// well formed into a body other records share: the tree path takes it instead.
    key_pending: bool,
}

impl Compound<'_> {
    #[inline]
    fn comma(&mut self) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
    }
    #[inline]
    fn item<T: Serialize + ?Sized>(&mut self, v: &T) -> R {
        v.serialize(Json {
            out: &mut *self.out,
            depth: self.depth,
        })
    }
    #[inline(always)]
    fn field<T: Serialize + ?Sized>(&mut self, key: &str, v: &T) -> R {
        check_name(key, self.top_level)?;
        write_key(self.out, self.first, key);
        self.first = false;
        self.item(v)
    }
    fn close(self, bracket: u8) -> R {
        self.out.push(bracket);
        if self.wrapped {
            self.out.push(b'}');
        }
        Ok(())
    }
}

/// Lists: items separated by commas, closed by `]`.
macro_rules! list {
    ($($trait:ident::$method:ident),*) => {$(
        impl ser::$trait for Compound<'_> {
            type Ok = ();
            type Error = Stop;
            fn $method<T: Serialize + ?Sized>(&mut self, v: &T) -> R {
                self.comma();
                self.item(v)
            }
            fn end(self) -> R {
                self.close(b']')
            }
        }
    )*};
}

list!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

impl ser::SerializeMap for Compound<'_> {
    type Ok = ();
    type Error = Stop;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> R {
        if self.key_pending {
            return Err(Stop);
        }
        self.key_pending = true;
        self.comma();
        key.serialize(Key {
            out: &mut *self.out,
            top_level: self.top_level,
        })?;
        self.out.push(b':');
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> R {
        if !self.key_pending {
            return Err(Stop);
        }
        self.key_pending = false;
        self.item(v)
    }
    fn end(self) -> R {
        if self.key_pending {
            return Err(Stop);
        }
        self.close(b'}')
    }
}

/// Structs: named fields, closed by `}`.
macro_rules! fields {
    ($($trait:ident),*) => {$(
        impl ser::$trait for Compound<'_> {
            type Ok = ();
            type Error = Stop;
            // Inlined into the caller's derived `serialize`, where `key` is a constant: its
            // checks fold away and writing it is a few fixed stores.
            #[inline(always)]
            fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, v: &T) -> R {
                self.field(key, v)
            }
            fn end(self) -> R {
                self.close(b'}')
            }
        }
    )*};
}

fields!(SerializeStruct, SerializeStructVariant);

/// The payload itself: a struct or a map whose keys are property names.
struct TopLevel<'a> {
    out: &'a mut Vec<u8>,
}

/// Wrappers, for the top level and map keys: a newtype is its content; an option or an
/// enum's newtype variant goes to the tree path.
macro_rules! wrappers {
    () => {
        fn serialize_some<T: Serialize + ?Sized>(self, _value: &T) -> R {
            Err(Stop)
        }
        fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _n: &'static str, value: &T) -> R {
            value.serialize(self)
        }
        fn serialize_newtype_variant<T: Serialize + ?Sized>(
            self,
            _n: &'static str,
            _i: u32,
            _variant: &'static str,
            _value: &T,
        ) -> R {
            Err(Stop)
        }
    };
}

/// Top-level shapes other than a struct or a map go to the tree path, which either
/// accepts them with its own rules or reports them.
macro_rules! fallback {
    ($($name:ident($($arg:ty),*) -> $ok:ty;)*) => {$(
        fn $name(self, $(_: $arg),*) -> Result<$ok, Stop> {
            Err(Stop)
        }
    )*};
}

impl<'a> ser::Serializer for TopLevel<'a> {
    type Ok = ();
    type Error = Stop;
    type SerializeSeq = ser::Impossible<(), Stop>;
    type SerializeTuple = ser::Impossible<(), Stop>;
    type SerializeTupleStruct = ser::Impossible<(), Stop>;
    type SerializeTupleVariant = ser::Impossible<(), Stop>;
    type SerializeMap = Compound<'a>;
    type SerializeStruct = Compound<'a>;
    type SerializeStructVariant = ser::Impossible<(), Stop>;

    fallback! {
        serialize_bool(bool) -> ();
        serialize_i8(i8) -> ();
        serialize_i16(i16) -> ();
        serialize_i32(i32) -> ();
        serialize_i64(i64) -> ();
        serialize_u8(u8) -> ();
        serialize_u16(u16) -> ();
        serialize_u32(u32) -> ();
        serialize_u64(u64) -> ();
        serialize_f32(f32) -> ();
        serialize_f64(f64) -> ();
        serialize_char(char) -> ();
        serialize_str(&str) -> ();
        serialize_bytes(&[u8]) -> ();
        serialize_none() -> ();
        serialize_unit() -> ();
        serialize_unit_struct(&'static str) -> ();
        serialize_unit_variant(&'static str, u32, &'static str) -> ();
        serialize_seq(Option<usize>) -> Self::SerializeSeq;
        serialize_tuple(usize) -> Self::SerializeTuple;
        serialize_tuple_struct(&'static str, usize) -> Self::SerializeTupleStruct;
        serialize_tuple_variant(&'static str, u32, &'static str, usize) -> Self::SerializeTupleVariant;
        serialize_struct_variant(&'static str, u32, &'static str, usize) -> Self::SerializeStructVariant;
    }

    wrappers!();
    fn serialize_map(self, _len: Option<usize>) -> Result<Compound<'a>, Stop> {
        self.out.push(b'{');
        Ok(Compound {
            out: self.out,
            depth: 0,
            first: true,
            wrapped: false,
            top_level: true,
            key_pending: false,
        })
    }
    fn serialize_struct(self, _n: &'static str, len: usize) -> Result<Compound<'a>, Stop> {
        self.serialize_map(Some(len))
    }
}

/// A property name Mixpanel might truncate goes to the tree path, which warns about it
/// (bytes, not characters: the tree path judges the rare long name exactly).
#[inline(always)]
fn check_name(key: &str, top_level: bool) -> R {
    if top_level && key.len() > MAX_NAME_CHARS {
        return Err(Stop);
    }
    Ok(())
}

/// Writes a map's key (its comma and colon are the caller's).
#[inline]
fn name(out: &mut Vec<u8>, key: &str, top_level: bool) -> R {
    check_name(key, top_level)?;
    write_str(out, key);
    Ok(())
}

/// A map key: strings, chars, integers and booleans become strings, as on the tree path.
struct Key<'a> {
    out: &'a mut Vec<u8>,
    top_level: bool,
}

impl Key<'_> {
    fn integer(self, v: impl itoa::Integer) -> R {
        name(self.out, itoa::Buffer::new().format(v), self.top_level)
    }
}

impl ser::Serializer for Key<'_> {
    type Ok = ();
    type Error = Stop;
    type SerializeSeq = ser::Impossible<(), Stop>;
    type SerializeTuple = ser::Impossible<(), Stop>;
    type SerializeTupleStruct = ser::Impossible<(), Stop>;
    type SerializeTupleVariant = ser::Impossible<(), Stop>;
    type SerializeMap = ser::Impossible<(), Stop>;
    type SerializeStruct = ser::Impossible<(), Stop>;
    type SerializeStructVariant = ser::Impossible<(), Stop>;

    fallback! {
        serialize_f32(f32) -> ();
        serialize_f64(f64) -> ();
        serialize_i128(i128) -> ();
        serialize_u128(u128) -> ();
        serialize_bytes(&[u8]) -> ();
        serialize_none() -> ();
        serialize_unit() -> ();
        serialize_unit_struct(&'static str) -> ();
        serialize_seq(Option<usize>) -> Self::SerializeSeq;
        serialize_tuple(usize) -> Self::SerializeTuple;
        serialize_tuple_struct(&'static str, usize) -> Self::SerializeTupleStruct;
        serialize_tuple_variant(&'static str, u32, &'static str, usize) -> Self::SerializeTupleVariant;
        serialize_map(Option<usize>) -> Self::SerializeMap;
        serialize_struct(&'static str, usize) -> Self::SerializeStruct;
        serialize_struct_variant(&'static str, u32, &'static str, usize) -> Self::SerializeStructVariant;
    }

    fn serialize_bool(self, v: bool) -> R {
        name(self.out, if v { "true" } else { "false" }, self.top_level)
    }
    integers!();
    fn serialize_char(self, v: char) -> R {
        name(self.out, v.encode_utf8(&mut [0; 4]), self.top_level)
    }
    fn serialize_str(self, v: &str) -> R {
        name(self.out, v, self.top_level)
    }
    fn serialize_unit_variant(self, _n: &'static str, _i: u32, variant: &'static str) -> R {
        name(self.out, variant, self.top_level)
    }
    wrappers!();
}
