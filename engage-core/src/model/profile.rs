//! Which profile an update is about, and which endpoint it goes to.

use std::fmt;

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

/// A profile's ids, borrowed: all that encoding needs, without copying them into a
/// [`ProfileId`]'s strings.
///
/// ```
/// use engage_core::model::{Endpoint, ProfileId, ProfileRef};
/// let user = ProfileRef::User("user-42");
/// assert_eq!(user.endpoint(), Endpoint::Engage);
/// let acme = ProfileId::Group { key: "company".into(), id: "acme".into() };
/// assert_eq!(acme.as_ref().to_id(), acme);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProfileRef<'a> {
    /// A user profile, by its `$distinct_id`.
    User(&'a str),
    /// A group profile, by its `$group_key` (e.g. `"company"`) and `$group_id`.
    Group {
        /// The group key.
        key: &'a str,
        /// The group id.
        id: &'a str,
    },
}

impl ProfileRef<'_> {
    /// The endpoint updates of this profile go to.
    pub fn endpoint(self) -> Endpoint {
        match self {
            ProfileRef::User(_) => Endpoint::Engage,
            ProfileRef::Group { .. } => Endpoint::Groups,
        }
    }

    /// The same ids, owned.
    pub fn to_id(self) -> ProfileId {
        match self {
            ProfileRef::User(distinct_id) => ProfileId::User {
                distinct_id: distinct_id.to_owned(),
            },
            ProfileRef::Group { key, id } => ProfileId::Group {
                key: key.to_owned(),
                id: id.to_owned(),
            },
        }
    }
}

impl ProfileId {
    /// The ids, borrowed.
    pub fn as_ref(&self) -> ProfileRef<'_> {
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

/// A hash of a profile from its ids' JSON string forms (the bytes this crate's JSON writer
/// gives, quotes included; `group_key` empty for a user): the same for a typed update, a
/// raw one and a record in a batch. foldhash with a fixed seed: a few words per id rather
/// than a multiply per byte, no allocation, deterministic (it is never stored).
pub(crate) fn profile_hash(endpoint: Endpoint, group_key: &[u8], id: &[u8]) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = foldhash::fast::FixedState::with_seed(0x656e_6761_6765).build_hasher();
    h.write_u8(endpoint as u8);
    h.write(group_key);
    // Each `write` mixes in its slice's length, which keeps (key, id) pairs apart; a
    // collision would only put two profiles in one lane.
    h.write_u8(0xff);
    h.write(id);
    h.finish()
}
