//! How many requests an import keeps in flight: a fixed number, or one found as the import
//! goes (additive increase, multiplicative decrease, as TCP does), from the answers and
//! their latency; and, once the server answers 429 (a rate limit, not congestion), a pace
//! in bytes per second just under what it accepted, probing upward slowly. Sans-IO: every
//! sample comes with the caller's time.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How many requests to keep in flight.
///
/// ```
/// use engage_core::delivery::{AutoConcurrency, Concurrency};
/// let fixed = Concurrency::Fixed(4);
/// let auto = Concurrency::Auto(AutoConcurrency::default());
/// assert_eq!(fixed.most(), 4);
/// assert_eq!(auto.most(), 64);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Concurrency {
    /// Exactly this many at most (at least 1).
    Fixed(usize),
    /// Found as the import goes, within bounds.
    Auto(AutoConcurrency),
}

impl Default for Concurrency {
    fn default() -> Self {
        Concurrency::Auto(AutoConcurrency::default())
    }
}

impl Concurrency {
    /// The most requests it may ever keep in flight.
    pub fn most(&self) -> usize {
        match self {
            Concurrency::Fixed(n) => (*n).max(1),
            Concurrency::Auto(a) => a.max.max(1),
        }
    }
}

/// The adaptive limit's settings. Defaults: start at 10 (Mixpanel finds 10–20 concurrent
/// clients work best) and double each round trip up to 20 until the first sign of
/// congestion (slow start), then grow by about one per round trip; stay within 1..=64;
/// keep 75% of the limit on a 503, a timeout, or answers slower than twice the fastest
/// seen (per megabyte sent). A 429 sets a pace instead (see the module's docs).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct AutoConcurrency {
    /// The limit to start from.
    pub initial: usize,
    /// The lowest limit.
    pub min: usize,
    /// The highest limit.
    pub max: usize,
    /// What a decrease keeps of the limit (0.5–0.95).
    pub backoff: f64,
    /// How much slower than the fastest answers (per megabyte) counts as congestion.
    pub latency_tolerance: f64,
}

impl Default for AutoConcurrency {
    fn default() -> Self {
        AutoConcurrency {
            initial: 10,
            min: 1,
            max: 64,
            backoff: 0.75,
            latency_tolerance: 2.0,
        }
    }
}

impl AutoConcurrency {
    /// Bounds for the limit (clamped to 1..=1024, `min` ≤ `max`).
    pub fn bounds(mut self, min: usize, max: usize) -> Self {
        self.max = max.clamp(1, 1024);
        self.min = min.clamp(1, self.max);
        self.initial = self.initial.clamp(self.min, self.max);
        self
    }

    /// The limit to start from (held within the bounds).
    pub fn initial(mut self, n: usize) -> Self {
        self.initial = n.clamp(self.min, self.max);
        self
    }
}

/// What one answer says about the path to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    /// An answer that is not a sign of overload.
    Answered,
    /// 429: the project's rate limit.
    Throttled,
    /// 503: the server is overloaded.
    Overloaded,
    /// No answer in time: maybe overload.
    TimedOut,
    /// Anything else (a refused connection): says nothing about load.
    Neutral,
}

/// Latency samples kept for the floor: the fastest of the recent ones.
const FLOOR_WINDOW: usize = 128;

/// How far back the rate the server accepted is measured.
const RATE_WINDOW: Duration = Duration::from_secs(3);
/// A pace set after a 429 keeps this share of the rate the server accepted…
const PACE_KEEP: f64 = 0.9;
/// …and, when a pace was already on, at most this share of it.
const PACE_CUT: f64 = 0.75;
/// A pace grown past this many times the rate where 429s came is dropped: the limit on
/// requests in flight takes over again.
const PACE_DROP: f64 = 4.0;
/// 429s this close together are one episode (measured from its start).
const EPISODE: Duration = Duration::from_secs(10);
/// How far back a 429 measures what the server accepted (when over its rate, that is its
/// rate).
const MEASURE: Duration = Duration::from_secs(2);
/// The pace then grows this much per second near the rate where 429s came (about 10 s
/// back to it)…
const PACE_GROWTH_PER_SEC: f64 = 0.01;
/// …and this much far below it, or when the server accepted nothing to measure it by.
const PACE_FAST_GROWTH_PER_SEC: f64 = 0.10;
/// Most credit a pace lets build up, in seconds of its rate (a small burst).
const PACE_BURST: f64 = 0.5;

/// Sending paced in bytes per second, once a 429 said the project has a rate limit.
#[derive(Debug, Clone)]
struct Pace {
    /// The rate when it was set.
    base: f64,
    /// The rate the server accepted when it answered 429, if it accepted anything.
    ceiling: Option<f64>,
    /// When it was set; it grows from there.
    set: Instant,
    /// Bytes that may go now (negative: a debt paid off at the rate).
    credit: f64,
    /// When the credit was last brought up to date.
    last: Instant,
}

impl Pace {
    fn rate(&self, now: Instant) -> f64 {
        let secs = now
            .saturating_duration_since(self.set)
            .as_secs_f64()
            .min(3600.0);
        // Fast up to 80% of the ceiling, slow from there.
        let near = self.ceiling.map_or(f64::INFINITY, |c| 0.8 * c);
        if self.base >= near {
            return self.base * (1.0 + PACE_GROWTH_PER_SEC).powf(secs);
        }
        let fast_secs = (near / self.base).ln() / (1.0 + PACE_FAST_GROWTH_PER_SEC).ln();
        if secs <= fast_secs {
            self.base * (1.0 + PACE_FAST_GROWTH_PER_SEC).powf(secs)
        } else {
            near * (1.0 + PACE_GROWTH_PER_SEC).powf(secs - fast_secs)
        }
    }

    fn refill(&mut self, now: Instant) {
        let rate = self.rate(now);
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.credit = (self.credit + rate * dt).min(rate * PACE_BURST);
        self.last = now;
    }
}

/// The limit, fixed or adaptive.
#[derive(Debug, Clone)]
pub(crate) struct Limiter {
    auto: Option<AutoConcurrency>,
    limit: f64,
    /// Recent latencies per megabyte-and-a-bit, seconds.
    samples: VecDeque<f64>,
    /// Smoothed latency per megabyte-and-a-bit.
    smoothed: Option<f64>,
    /// Requests sent before this instant do not cut the limit again.
    last_cut: Option<Instant>,
    /// Times the limit was cut.
    pub(crate) cuts: u64,
    /// Bytes of requests the server accepted, recently: (when answered, bytes).
    accepted: VecDeque<(Instant, usize)>,
    /// Bytes sent, recently.
    sent: VecDeque<(Instant, usize)>,
    pace: Option<Pace>,
    /// Requests sent before this instant do not lower the pace again.
    last_pace_cut: Option<Instant>,
    /// The first 429 of the latest episode of them.
    throttled_since: Option<Instant>,
}

impl Limiter {
    pub(crate) fn new(c: Concurrency) -> Self {
        let (auto, limit) = match c {
            Concurrency::Fixed(n) => (None, n.max(1) as f64),
            Concurrency::Auto(a) => {
                let a = a.bounds(a.min, a.max);
                (Some(a), a.initial as f64)
            }
        };
        Limiter {
            auto,
            limit,
            samples: VecDeque::with_capacity(FLOOR_WINDOW),
            smoothed: None,
            last_cut: None,
            cuts: 0,
            accepted: VecDeque::new(),
            sent: VecDeque::new(),
            pace: None,
            last_pace_cut: None,
            throttled_since: None,
        }
    }

    /// Whether a request may start now under the pace; if not, when to ask again. No pace
    /// (no 429 yet, a fixed limit, or a pace grown far past where 429s came): always.
    pub(crate) fn may_send(&mut self, now: Instant) -> Result<(), Instant> {
        if let Some(p) = &self.pace
            && p.ceiling.is_some_and(|c| p.rate(now) > PACE_DROP * c)
        {
            self.pace = None;
        }
        let Some(pace) = self.pace.as_mut() else {
            return Ok(());
        };
        pace.refill(now);
        if pace.credit >= 0.0 {
            return Ok(());
        }
        let wait = Duration::from_secs_f64((-pace.credit / pace.rate(now).max(1.0)).min(60.0));
        // Under a millisecond: not worth a wake-up (and a zero wait would never end).
        if wait < Duration::from_millis(1) {
            return Ok(());
        }
        Err(now + wait)
    }

    /// A request of `bytes` starts now.
    pub(crate) fn on_send(&mut self, now: Instant, bytes: usize) {
        if self.auto.is_none() {
            return;
        }
        remember(&mut self.sent, now, bytes);
        if let Some(pace) = self.pace.as_mut() {
            pace.refill(now);
            pace.credit -= bytes as f64;
        }
    }

    /// The pace now, in bytes per second, if there is one.
    pub(crate) fn pace(&self, now: Instant) -> Option<f64> {
        self.pace.as_ref().map(|p| p.rate(now))
    }

    /// A 429 to a request sent at `sent`: pace sending, once per round trip. The first
    /// 429 of an episode cuts the rate sent over the last round trip; later ones set the
    /// pace just under what the server accepted since the episode began (before it, a burst
    /// allowance may have let more through than the server's rate).
    fn throttled(&mut self, sent: Instant, now: Instant) {
        if self.last_pace_cut.is_some_and(|cut| sent < cut) {
            return;
        }
        let rtt = now
            .saturating_duration_since(sent)
            .max(Duration::from_millis(50));
        let episode = match self.throttled_since {
            Some(since) if now.saturating_duration_since(since) < EPISODE => since,
            _ => now,
        };
        self.throttled_since = Some(episode);
        let sum_since = |q: &VecDeque<(Instant, usize)>, from: Instant| -> usize {
            q.iter().filter(|e| e.0 >= from).map(|e| e.1).sum()
        };
        // The last couple of seconds, but nothing from before the episode.
        let from = now.checked_sub(MEASURE).unwrap_or(now).max(episode);
        let measured = now.saturating_duration_since(from);
        let accepted = sum_since(&self.accepted, from);
        let (mut rate, ceiling) = if measured >= rtt && accepted > 0 {
            let r = accepted as f64 / measured.as_secs_f64();
            (PACE_KEEP * r, Some(r))
        } else {
            let from = now.checked_sub(rtt).unwrap_or(now);
            let r = sum_since(&self.sent, from) as f64 / rtt.as_secs_f64();
            (PACE_CUT * r, None)
        };
        if let Some(p) = &self.pace {
            rate = rate.min(PACE_CUT * p.rate(now));
        }
        self.pace = Some(Pace {
            base: rate.max(1024.0),
            ceiling: ceiling.or(self.pace.as_ref().and_then(|p| p.ceiling)),
            set: now,
            credit: 0.0,
            last: now,
        });
        self.last_pace_cut = Some(now);
    }

    /// Requests allowed in flight now.
    pub(crate) fn limit(&self) -> usize {
        (self.limit.floor() as usize).max(1)
    }

    /// Learns from one answer to a request sent at `sent` with `bytes` of body, answered
    /// (or failed) at `now`. `saturated`: the limit was in use when it was sent (the limit
    /// grows only when it is what holds the import back).
    pub(crate) fn on_sample(
        &mut self,
        sent: Instant,
        now: Instant,
        bytes: usize,
        signal: Signal,
        saturated: bool,
    ) {
        let Some(auto) = self.auto else {
            return;
        };
        let rtt = now.saturating_duration_since(sent);
        let congested = match signal {
            Signal::Throttled => {
                self.throttled(sent, now);
                return;
            }
            Signal::Overloaded | Signal::TimedOut => true,
            Signal::Neutral => return,
            Signal::Answered => {
                remember(&mut self.accepted, now, bytes);
                self.slower_than_usual(rtt, bytes, auto.latency_tolerance)
            }
        };
        if congested {
            // Once per round trip: answers to requests sent before the last cut say
            // nothing new.
            if self.last_cut.is_none_or(|cut| sent >= cut) {
                self.limit = (self.limit * auto.backoff).max(auto.min as f64);
                self.last_cut = Some(now);
                self.cuts += 1;
            }
        } else if saturated && self.pace.is_none() {
            // Slow start, as TCP does: until the first sign of congestion, +1 per answer
            // (the limit doubles each round trip), up to twice where it started; then about
            // +1 per round trip's worth of answers (not while a pace is what holds the
            // import back).
            let step = if self.cuts == 0 && self.limit < 2.0 * auto.initial as f64 {
                1.0
            } else {
                1.0 / self.limit
            };
            self.limit = (self.limit + step).min(auto.max as f64);
        }
    }

    /// Whether this answer, per megabyte, took `tolerance` times longer than the fastest
    /// recent ones (smoothed, so one slow answer is not enough).
    fn slower_than_usual(&mut self, rtt: Duration, bytes: usize, tolerance: f64) -> bool {
        let per = rtt.as_secs_f64() / (1.0 + bytes as f64 / 1_048_576.0);
        if self.samples.len() == FLOOR_WINDOW {
            self.samples.pop_front();
        }
        self.samples.push_back(per);
        let smoothed = match self.smoothed {
            None => per,
            Some(s) => s + (per - s) / 8.0,
        };
        self.smoothed = Some(smoothed);
        let floor = self.samples.iter().copied().fold(f64::INFINITY, f64::min);
        self.samples.len() >= 8 && smoothed > tolerance * floor
    }
}

/// Keeps (time, bytes) for the last [`RATE_WINDOW`].
fn remember(q: &mut VecDeque<(Instant, usize)>, now: Instant, bytes: usize) {
    q.push_back((now, bytes));
    while q
        .front()
        .is_some_and(|f| now.saturating_duration_since(f.0) > RATE_WINDOW)
    {
        q.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auto() -> Limiter {
        Limiter::new(Concurrency::Auto(AutoConcurrency::default()))
    }

    #[test]
    fn grows_about_one_per_round_trip_when_saturated() {
        let mut l = auto();
        let t0 = Instant::now();
        let rtt = Duration::from_millis(100);
        let mut sent = t0;
        for _ in 0..10 {
            let n = l.limit();
            for _ in 0..n {
                l.on_sample(sent, sent + rtt, 300_000, Signal::Answered, true);
            }
            sent += rtt;
        }
        // Slow start to 20 in one round trip, then about +1 per round trip.
        assert!((27..=29).contains(&l.limit()), "{}", l.limit());
        // Not when the import does not use it.
        let before = l.limit;
        l.on_sample(sent, sent + rtt, 300_000, Signal::Answered, false);
        assert_eq!(l.limit, before);
    }

    #[test]
    fn a_burst_of_503s_cuts_once_per_round_trip() {
        let mut l = auto();
        let t0 = Instant::now();
        let rtt = Duration::from_millis(300);
        // Ten requests sent together, all answered 429.
        for i in 0..10 {
            l.on_sample(
                t0,
                t0 + rtt + Duration::from_millis(i),
                1000,
                Signal::Overloaded,
                true,
            );
        }
        assert_eq!(l.limit(), 7, "10 × 0.75, once");
        // One sent after the cut cuts again.
        let later = t0 + rtt + Duration::from_millis(20);
        l.on_sample(later, later + rtt, 1000, Signal::Overloaded, true);
        assert_eq!(l.limit(), 5);
        assert_eq!(l.cuts, 2);
        // Never below the minimum.
        let mut t = later + rtt;
        for _ in 0..50 {
            l.on_sample(t, t + rtt, 1000, Signal::Overloaded, true);
            t += rtt * 2;
        }
        assert_eq!(l.limit(), 1);
    }

    #[test]
    fn latency_growing_past_twice_the_floor_cuts_and_size_does_not_count() {
        let mut l = auto();
        let mut t = Instant::now();
        // Small and large bodies at the same per-megabyte pace: no congestion.
        for i in 0..40 {
            let bytes = if i % 2 == 0 { 10_000 } else { 2_000_000 };
            let rtt = Duration::from_secs_f64(0.1 * (1.0 + bytes as f64 / 1_048_576.0));
            l.on_sample(t, t + rtt, bytes, Signal::Answered, true);
            t += rtt;
        }
        assert_eq!(l.cuts, 0);
        // Queueing: the same bodies now take four times as long.
        for _ in 0..40 {
            let rtt = Duration::from_millis(400);
            l.on_sample(t, t + rtt, 10_000, Signal::Answered, true);
            t += rtt;
        }
        assert!(l.cuts >= 1);
    }

    #[test]
    fn a_fixed_limit_never_moves() {
        let mut l = Limiter::new(Concurrency::Fixed(4));
        let t = Instant::now();
        l.on_sample(t, t, 0, Signal::Overloaded, true);
        for _ in 0..100 {
            l.on_sample(t, t, 0, Signal::Answered, true);
        }
        assert_eq!(l.limit(), 4);
    }
}

#[cfg(test)]
mod pace_tests {
    use super::*;

    #[test]
    fn a_429_paces_under_what_was_sent_then_under_what_was_accepted() {
        let mut l = Limiter::new(Concurrency::Auto(AutoConcurrency::default()));
        let t0 = Instant::now();
        assert_eq!(l.may_send(t0), Ok(()), "no pace before a 429");
        // 100 kB sent and accepted per second for three seconds, then a 429: the first
        // of an episode paces at 75% of what went out over the last round trip.
        let rtt = Duration::from_millis(100);
        let mut t = t0;
        for _ in 0..30 {
            l.on_send(t, 10_000);
            t += rtt;
            l.on_sample(t - rtt, t, 10_000, Signal::Answered, true);
        }
        l.on_send(t, 10_000);
        l.on_sample(t, t + rtt, 10_000, Signal::Throttled, true);
        t += rtt;
        let first = l.pace(t).unwrap();
        assert!((70_000.0..80_000.0).contains(&first), "{first}");
        // 429s to requests sent before the cut do not cut again.
        l.on_sample(t - rtt - rtt, t, 10_000, Signal::Throttled, true);
        assert_eq!(l.pace(t), Some(first));
        // Over the next second the server accepts 40 kB/s; a 429 then sets 90% of that.
        for _ in 0..4 {
            l.on_send(t, 10_000);
            t += Duration::from_millis(250);
            l.on_sample(t - rtt, t, 10_000, Signal::Answered, true);
        }
        l.on_sample(t - rtt, t, 10_000, Signal::Throttled, true);
        let second = l.pace(t).unwrap();
        assert!((34_000.0..38_000.0).contains(&second), "{second}");
        // Sending 20 kB now puts the pace in debt: the next may go ~0.55 s later.
        assert_eq!(l.may_send(t), Ok(()));
        l.on_send(t, 20_000);
        let Err(at) = l.may_send(t) else { panic!() };
        let wait = (at - t).as_secs_f64();
        assert!((0.5..0.6).contains(&wait), "{wait}");
        // Near the rate the server accepted, it probes up ~1% a second.
        let later = l.pace(t + Duration::from_secs(10)).unwrap();
        assert!((later / second - 1.104).abs() < 0.01, "{later}");
    }
}
