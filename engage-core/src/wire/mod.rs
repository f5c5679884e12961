//! Updates as the bytes that go on the wire: typed updates encoded (and validated) when
//! built, raw JSON records checked and written when batched, and the JSON writer both use.

pub(crate) mod encode;
pub(crate) mod json;
pub(crate) mod raw;
pub(crate) mod ser_json;
mod update;

pub use update::{GroupUpdate, Update, UserUpdate};
