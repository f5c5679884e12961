//! Fault injection: a script consumed one per request, then a seeded rate.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A fault the emulator can inject into an answer to `/engage` or `/groups`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FaultKind {
    /// 429 with `Retry-After: 1`; nothing applied.
    #[serde(rename = "429-retry-after")]
    TooManyRequestsRetryAfter,
    /// 429 without `Retry-After`; nothing applied.
    #[serde(rename = "429")]
    TooManyRequests,
    /// 500; nothing applied.
    #[serde(rename = "500")]
    InternalError,
    /// 502; nothing applied.
    #[serde(rename = "502")]
    BadGateway,
    /// 503; nothing applied.
    #[serde(rename = "503")]
    Unavailable,
    /// The connection is closed without an answer; nothing applied.
    #[serde(rename = "close")]
    Close,
    /// The answer (normal, records applied) is delayed by the slow delay.
    #[serde(rename = "slow")]
    Slow,
    /// The records **are applied**, but the answer is a 500: the ambiguous case.
    #[serde(rename = "applied-500")]
    AppliedThen500,
}

impl FaultKind {
    /// Every kind, in the order of their names in the docs.
    pub const ALL: [FaultKind; 8] = [
        FaultKind::TooManyRequestsRetryAfter,
        FaultKind::TooManyRequests,
        FaultKind::InternalError,
        FaultKind::BadGateway,
        FaultKind::Unavailable,
        FaultKind::Close,
        FaultKind::Slow,
        FaultKind::AppliedThen500,
    ];

    /// The kind's name: `429-retry-after`, `429`, `500`, `502`, `503`, `close`, `slow`,
    /// `applied-500`.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::TooManyRequestsRetryAfter => "429-retry-after",
            FaultKind::TooManyRequests => "429",
            FaultKind::InternalError => "500",
            FaultKind::BadGateway => "502",
            FaultKind::Unavailable => "503",
            FaultKind::Close => "close",
            FaultKind::Slow => "slow",
            FaultKind::AppliedThen500 => "applied-500",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A fault name that is not one of the known kinds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown fault {0:?}; known: 429-retry-after, 429, 500, 502, 503, close, slow, applied-500 (and ok in scripts)"
)]
pub struct UnknownFault(pub String);

impl FromStr for FaultKind {
    type Err = UnknownFault;
    fn from_str(s: &str) -> Result<Self, UnknownFault> {
        FaultKind::ALL
            .into_iter()
            .find(|k| k.name() == s.trim())
            .ok_or_else(|| UnknownFault(s.to_owned()))
    }
}

/// One step of a fault script: a fault, or `ok` (a normal answer).
pub type ScriptStep = Option<FaultKind>;

/// Parses `429,503,ok,close` into script steps.
pub fn parse_script(s: &str) -> Result<Vec<ScriptStep>, UnknownFault> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| match p.trim() {
            "ok" => Ok(None),
            other => other.parse().map(Some),
        })
        .collect()
}

/// Which faults to inject. The script is consumed first, one step per request; then each
/// request fails with probability `fail_rate`, the kinds taken in turn from `kinds` so they
/// are spread evenly. Deterministic for a given `seed` and request order.
///
/// As JSON (for `POST /_emulator/faults`):
/// `{"script": ["429", "ok"], "fail_rate": 0.2, "kinds": ["503", "applied-500"], "seed": 7, "slow_ms": 2000}`;
/// every field is optional, an unknown one is refused (a typo must not reset a test's
/// script), and [`validate`](Self::validate) holds the ranges the command line holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultConfig {
    /// Steps consumed one per request before the rate applies.
    #[serde(with = "script_serde")]
    pub script: Vec<ScriptStep>,
    /// Probability that a request (after the script) gets a fault.
    pub fail_rate: f64,
    /// Kinds drawn from for the rate (default: all).
    pub kinds: Vec<FaultKind>,
    /// Seed of the rate's random draws.
    pub seed: u64,
    /// Delay of the `slow` fault, in milliseconds.
    pub slow_ms: u64,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            script: Vec::new(),
            fail_rate: 0.0,
            kinds: FaultKind::ALL.to_vec(),
            seed: 0,
            slow_ms: 2000,
        }
    }
}

/// Longest `slow` delay: 10 minutes (a longer one would never answer within any client's
/// timeout, which `close` already covers).
pub const MAX_SLOW_MS: u64 = 600_000;

impl FaultConfig {
    /// Checks the ranges: `fail_rate` within 0..=1, `slow_ms` at most [`MAX_SLOW_MS`].
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.fail_rate) {
            return Err(format!(
                "fail_rate must be between 0 and 1, not {}",
                self.fail_rate
            ));
        }
        if self.slow_ms > MAX_SLOW_MS {
            return Err(format!(
                "slow_ms must be at most {MAX_SLOW_MS} (10 minutes), not {}",
                self.slow_ms
            ));
        }
        Ok(())
    }
}

mod script_serde {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[ScriptStep], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|step| step.map_or("ok", FaultKind::name)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ScriptStep>, D::Error> {
        let names = Vec::<String>::deserialize(d)?;
        names
            .iter()
            .map(|n| match n.as_str() {
                "ok" => Ok(None),
                other => other.parse().map(Some).map_err(serde::de::Error::custom),
            })
            .collect()
    }
}

/// The running injector.
#[derive(Debug)]
pub(crate) struct Injector {
    config: FaultConfig,
    script_pos: usize,
    rng: engage_core::rng::SplitMix64,
    next_kind: usize,
}

impl Injector {
    pub(crate) fn new(config: FaultConfig) -> Self {
        Injector {
            rng: engage_core::rng::SplitMix64::new(config.seed),
            config,
            script_pos: 0,
            next_kind: 0,
        }
    }

    pub(crate) fn config(&self) -> &FaultConfig {
        &self.config
    }

    pub(crate) fn slow_delay(&self) -> Duration {
        Duration::from_millis(self.config.slow_ms)
    }

    /// The fault for the next request, if any.
    pub(crate) fn next(&mut self) -> Option<FaultKind> {
        if let Some(step) = self.config.script.get(self.script_pos) {
            self.script_pos += 1;
            return *step;
        }
        if self.config.fail_rate <= 0.0 || self.config.kinds.is_empty() {
            return None;
        }
        let draw = self.rng.unit();
        if draw >= self.config.fail_rate {
            return None;
        }
        let kind = self.config.kinds[self.next_kind % self.config.kinds.len()];
        self.next_kind += 1;
        Some(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_then_rate_deterministically() {
        assert_eq!(
            parse_script("429,ok, applied-500").unwrap(),
            [
                Some(FaultKind::TooManyRequests),
                None,
                Some(FaultKind::AppliedThen500)
            ]
        );
        assert!(parse_script("404").is_err());
        let config = FaultConfig {
            script: vec![Some(FaultKind::Close)],
            fail_rate: 0.2,
            seed: 9,
            ..FaultConfig::default()
        };
        let draw = |c: &FaultConfig| {
            let mut i = Injector::new(c.clone());
            (0..10_000).map(|_| i.next()).collect::<Vec<_>>()
        };
        let a = draw(&config);
        assert_eq!(a, draw(&config));
        assert_eq!(a[0], Some(FaultKind::Close));
        let faults = a[1..].iter().flatten().count();
        assert!((1800..2200).contains(&faults), "{faults}");
        for k in FaultKind::ALL {
            let n = a[1..].iter().filter(|f| **f == Some(k)).count();
            assert!((faults / 8).abs_diff(n) <= 1, "{k}: {n}");
        }
        let json: FaultConfig =
            serde_json::from_str(r#"{"script":["503","ok"],"fail_rate":0.5,"kinds":["slow"]}"#)
                .unwrap();
        assert_eq!(json.script, [Some(FaultKind::Unavailable), None]);
        assert_eq!(json.kinds, [FaultKind::Slow]);
        assert_eq!(json.slow_ms, 2000);
    }
}
