//! Named property values: the payload of `$set`, `$set_once`, `$append` and `$remove`.

use serde::Serialize;

use crate::model::ser::{self, SerializeError};
use crate::model::value::Value;

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
/// # Ok::<(), engage_core::model::SerializeError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Properties(pub(crate) Vec<(String, Value)>);

impl Properties {
    /// No properties.
    pub fn new() -> Self {
        Properties(Vec::new())
    }

    /// Adds a property. Naming one twice is reported as a
    /// [`WarningKind::RepeatedKey`](crate::validate::WarningKind::RepeatedKey) warning: only
    /// the last value takes effect.
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
