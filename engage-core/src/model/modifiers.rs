//! Top-level modifiers of an update: `$ip`, `$latitude`/`$longitude`, `$time`,
//! `$ignore_time`, `$ignore_alias`.

/// What `$ip` says about geolocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Geolocation {
    /// `$ip: "<address>"`: geolocate from this address.
    FromIp(String),
    /// `$ip: "0"`: do not geolocate this update.
    Skip,
}

/// Top-level modifiers of an update (never inside `$set`).
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Modifiers {
    /// `$ip`.
    pub ip: Option<Geolocation>,
    /// `$latitude` and `$longitude`.
    pub location: Option<(f64, f64)>,
    /// `$time`, in milliseconds since the Unix epoch.
    pub time_ms: Option<i64>,
    /// `$ignore_time: true`: leave `$last_seen` alone.
    pub ignore_time: bool,
    /// `$ignore_alias: true`: do not follow aliases (used with `$delete`).
    pub ignore_alias: bool,
}
