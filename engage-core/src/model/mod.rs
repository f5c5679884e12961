//! The update model: profiles and endpoints, the operations (the one table of them),
//! property values, modifiers, the project token, and reading any `Serialize` value.

mod modifiers;
mod operation;
mod profile;
mod properties;
pub(crate) mod ser;
mod token;
mod value;

pub use modifiers::{Geolocation, Modifiers};
pub use operation::{OpKind, Operation};
pub(crate) use profile::profile_hash;
pub use profile::{Endpoint, ProfileId, ProfileRef};
pub use properties::Properties;
pub use ser::SerializeError;
pub use token::{EmptyToken, Token};
pub use value::{DateTime, Number, Value};
