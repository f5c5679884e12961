//! Property values: what a profile property can hold.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A property value, as Mixpanel stores it.
///
/// Built from plain Rust values with `From` (`"text".into()`, `42.into()`, `true.into()`,
/// `vec!["a", "b"].into()`, a [`SystemTime`] or [`DateTime`] for dates), from a
/// [`serde_json::Value`], or from any [`serde::Serialize`] with
/// [`Properties::from_serialize`](crate::Properties::from_serialize).
///
/// Floats that are NaN or infinite can be held here but are rejected when the update is
/// validated: JSON has no form for them.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// JSON `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// An unsigned integer too large for `i64`, or any `u64`.
    UInt(u64),
    /// A float; must be finite to be sent.
    Float(f64),
    /// A string.
    String(String),
    /// A date-time, sent as Mixpanel's `YYYY-MM-DDTHH:MM:SS` (UTC) string.
    DateTime(DateTime),
    /// A list of values.
    List(Vec<Value>),
    /// An object; keys keep their insertion order.
    Object(Vec<(String, Value)>),
}

/// A number, as `$add` takes it: an integer or a float.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    /// A signed integer.
    Int(i64),
    /// An unsigned integer.
    UInt(u64),
    /// A float; must be finite to be sent.
    Float(f64),
}

impl Number {
    /// Whether the number can be written as JSON (not NaN, not infinite).
    pub fn is_finite(self) -> bool {
        match self {
            Number::Float(f) => f.is_finite(),
            _ => true,
        }
    }
}

macro_rules! number_from {
    ($variant:ident: $($t:ty),*) => {$(
        impl From<$t> for Number {
            fn from(v: $t) -> Self { Number::$variant(v.into()) }
        }
        impl From<$t> for Value {
            fn from(v: $t) -> Self { Value::$variant(v.into()) }
        }
    )*};
}
number_from!(Int: i8, i16, i32, i64, u8, u16, u32);
number_from!(UInt: u64);
number_from!(Float: f32, f64);

impl From<usize> for Value {
    fn from(v: usize) -> Self {
        Value::UInt(v as u64)
    }
}

impl From<usize> for Number {
    fn from(v: usize) -> Self {
        Number::UInt(v as u64)
    }
}

impl From<Number> for Value {
    fn from(n: Number) -> Self {
        match n {
            Number::Int(i) => Value::Int(i),
            Number::UInt(u) => Value::UInt(u),
            Number::Float(f) => Value::Float(f),
        }
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::String(v.to_owned())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::String(v)
    }
}

impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::String(v.clone())
    }
}

impl From<DateTime> for Value {
    fn from(v: DateTime) -> Self {
        Value::DateTime(v)
    }
}

impl From<SystemTime> for Value {
    fn from(v: SystemTime) -> Self {
        Value::DateTime(DateTime::from(v))
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

impl<T: Into<Value>> From<Vec<T>> for Value {
    fn from(v: Vec<T>) -> Self {
        Value::List(v.into_iter().map(Into::into).collect())
    }
}

impl<T: Clone + Into<Value>> From<&[T]> for Value {
    fn from(v: &[T]) -> Self {
        Value::List(v.iter().cloned().map(Into::into).collect())
    }
}

impl<T: Into<Value>, const N: usize> From<[T; N]> for Value {
    fn from(v: [T; N]) -> Self {
        Value::List(v.into_iter().map(Into::into).collect())
    }
}

impl From<serde_json::Value> for Value {
    fn from(v: serde_json::Value) -> Self {
        match v {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(b),
            serde_json::Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Value::Int(i)
                } else if let Some(u) = n.as_u64() {
                    Value::UInt(u)
                } else {
                    // serde_json numbers are always finite.
                    Value::Float(n.as_f64().unwrap_or(0.0))
                }
            }
            serde_json::Value::String(s) => Value::String(s),
            serde_json::Value::Array(a) => Value::List(a.into_iter().map(Value::from).collect()),
            serde_json::Value::Object(o) => {
                Value::Object(o.into_iter().map(|(k, v)| (k, Value::from(v))).collect())
            }
        }
    }
}

impl<'de> serde::Deserialize<'de> for Value {
    /// Reads any JSON value. Objects keep their keys' order; integers become
    /// [`Value::Int`] when they fit an `i64`, [`Value::UInt`] otherwise; strings stay
    /// strings (a date comes back as its `YYYY-MM-DDTHH:MM:SS` text).
    ///
    /// ```
    /// use engage_core::Value;
    /// let v: Value = serde_json::from_str(r#"{"b": 1, "a": [true, 2.5, null]}"#).unwrap();
    /// assert_eq!(
    ///     v,
    ///     Value::Object(vec![
    ///         ("b".into(), Value::Int(1)),
    ///         ("a".into(), Value::List(vec![true.into(), 2.5.into(), Value::Null])),
    ///     ])
    /// );
    /// ```
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

use crate::model::ser::ARBITRARY_PRECISION_NUMBER;

/// A JSON number's text as an `Int`, a `UInt` or a finite `Float`.
pub(crate) fn number_from_text(text: &str) -> Option<Value> {
    if let Ok(i) = text.parse::<i64>() {
        Some(Value::Int(i))
    } else if let Ok(u) = text.parse::<u64>() {
        Some(Value::UInt(u))
    } else {
        text.parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Value::Float)
    }
}

impl<'de> serde::de::Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        serde::Deserialize::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(i64::try_from(v).map_or(Value::UInt(v), Value::Int))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::List(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
        while let Some(key) = map.next_key::<String>()? {
            // serde_json with `arbitrary_precision` (which any crate in a build can turn
            // on) hands each number over as this one-entry map.
            if entries.is_empty() && key == ARBITRARY_PRECISION_NUMBER {
                let digits: String = map.next_value()?;
                return number_from_text(&digits).ok_or_else(|| {
                    serde::de::Error::invalid_value(serde::de::Unexpected::Str(&digits), &self)
                });
            }
            entries.push((key, map.next_value()?));
        }
        Ok(Value::Object(entries))
    }
}

/// A UTC date-time with one-second precision, rendered as `YYYY-MM-DDTHH:MM:SS`.
///
/// ```
/// use engage_core::model::DateTime;
/// let d = DateTime::from_unix_seconds(1_700_000_000);
/// assert_eq!(d.to_string(), "2023-11-14T22:13:20");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DateTime {
    unix_seconds: i64,
}

impl DateTime {
    /// The date-time `secs` seconds after 1970-01-01T00:00:00 UTC (negative: before).
    pub fn from_unix_seconds(secs: i64) -> Self {
        DateTime { unix_seconds: secs }
    }

    /// Seconds since the Unix epoch.
    pub fn unix_seconds(self) -> i64 {
        self.unix_seconds
    }

    /// Writes the `YYYY-MM-DDTHH:MM:SS` form into `out` (19 bytes for years 0..=9999).
    pub(crate) fn write_to(self, out: &mut Vec<u8>) {
        let days = self.unix_seconds.div_euclid(86_400);
        let secs_of_day = self.unix_seconds.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        let (hh, mm, ss) = (secs_of_day / 3600, secs_of_day / 60 % 60, secs_of_day % 60);
        if (0..=9999).contains(&y) {
            let y = y as u32;
            out.extend_from_slice(&[
                b'0' + (y / 1000) as u8,
                b'0' + (y / 100 % 10) as u8,
                b'0' + (y / 10 % 10) as u8,
                b'0' + (y % 10) as u8,
            ]);
        } else {
            let mut b = itoa::Buffer::new();
            out.extend_from_slice(b.format(y).as_bytes());
        }
        let two = |out: &mut Vec<u8>, sep: u8, v: i64| {
            out.extend_from_slice(&[sep, b'0' + (v / 10) as u8, b'0' + (v % 10) as u8]);
        };
        two(out, b'-', m);
        two(out, b'-', d);
        two(out, b'T', hh);
        two(out, b':', mm);
        two(out, b':', ss);
    }
}

impl From<SystemTime> for DateTime {
    fn from(t: SystemTime) -> Self {
        let secs = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_secs() as i64,
            Err(e) => {
                let d: Duration = e.duration();
                // Round towards the past so 0.5 s before the epoch is 1969-12-31T23:59:59.
                -(d.as_secs() as i64) - i64::from(d.subsec_nanos() > 0)
            }
        };
        DateTime::from_unix_seconds(secs)
    }
}

impl fmt::Display for DateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = Vec::with_capacity(19);
        self.write_to(&mut buf);
        f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to (year, month, day).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_wrapped_by_arbitrary_precision_are_numbers() {
        use serde::Deserialize;
        use serde::de::value::{Error, MapDeserializer};
        let number = |text: &'static str| {
            let map =
                MapDeserializer::<_, Error>::new([(ARBITRARY_PRECISION_NUMBER, text)].into_iter());
            Value::deserialize(map)
        };
        assert_eq!(number("-3").unwrap(), Value::Int(-3));
        assert_eq!(
            number("18446744073709551615").unwrap(),
            Value::UInt(u64::MAX)
        );
        assert_eq!(number("1.5e3").unwrap(), Value::Float(1500.0));
        assert!(number("1e999").is_err());
        // An ordinary map with that key later on stays a map.
        let map = MapDeserializer::<_, Error>::new(
            [("a", "x"), (ARBITRARY_PRECISION_NUMBER, "1")].into_iter(),
        );
        assert_eq!(
            Value::deserialize(map).unwrap(),
            Value::Object(vec![
                ("a".into(), "x".into()),
                (ARBITRARY_PRECISION_NUMBER.into(), "1".into())
            ])
        );
    }

    #[test]
    fn dates_render_in_mixpanel_form() {
        assert_eq!(
            DateTime::from_unix_seconds(0).to_string(),
            "1970-01-01T00:00:00"
        );
        assert_eq!(
            DateTime::from_unix_seconds(951_782_400).to_string(),
            "2000-02-29T00:00:00"
        );
        assert_eq!(
            DateTime::from_unix_seconds(-1).to_string(),
            "1969-12-31T23:59:59"
        );
        assert_eq!(
            DateTime::from_unix_seconds(253_402_300_799).to_string(),
            "9999-12-31T23:59:59"
        );
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_999);
        assert_eq!(DateTime::from(t).to_string(), "2023-11-14T22:13:20");
        let before = UNIX_EPOCH - Duration::from_millis(500);
        assert_eq!(DateTime::from(before).to_string(), "1969-12-31T23:59:59");
    }
}
