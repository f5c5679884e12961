//! Updates as the bytes that go on the wire: typed updates encoded (and validated) when
//! built, JSON text read and checked in one pass ([`Update::from_json`]), raw JSON records
//! checked and written when batched, and the JSON writer they use.

pub(crate) mod encode;
pub(crate) mod json;
pub(crate) mod raw;
pub(crate) mod ser_json;
pub(crate) mod text;
mod update;

pub use text::JsonParts;
pub use update::{GroupUpdate, Update, UserUpdate};
