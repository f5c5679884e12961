//! Logs on stderr, for the `engage-emulator` and `engage` binaries: `-v` for one line per
//! request, `-vv` for the engage crates' debug events, `-vvv` for everything at trace;
//! `RUST_LOG` (tracing's `target=level,…` syntax) instead when it is set.

use std::str::FromStr as _;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Layer as _, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;

/// What `verbose` (the count of `-v`) or `RUST_LOG` asks to see; `Ok(None)` for nothing.
///
/// ```
/// let one = engage_emulator::logs::filter(1, None).unwrap().unwrap();
/// assert!(one.would_enable("engage::request", &tracing::Level::INFO));
/// assert!(!one.would_enable("engage_core::delivery", &tracing::Level::INFO));
/// let env = engage_emulator::logs::filter(0, Some("engage_core=debug")).unwrap().unwrap();
/// assert!(env.would_enable("engage_core::delivery", &tracing::Level::DEBUG));
/// assert!(engage_emulator::logs::filter(0, None).unwrap().is_none());
/// ```
pub fn filter(verbose: u8, rust_log: Option<&str>) -> Result<Option<Targets>, String> {
    if let Some(directives) = rust_log.filter(|d| !d.trim().is_empty()) {
        return Targets::from_str(directives)
            .map(Some)
            .map_err(|e| format!("RUST_LOG={directives:?} is not understood: {e}"));
    }
    let targets = match verbose {
        0 => return Ok(None),
        // One line per request: the client's and the emulator's, nothing else.
        1 => Targets::new()
            .with_target("engage::request", tracing::Level::INFO)
            .with_target("engage_emulator::access", tracing::Level::INFO),
        // A target matches by prefix: "engage" is every engage crate.
        2 => Targets::new().with_target("engage", tracing::Level::DEBUG),
        _ => Targets::new()
            .with_target("engage", tracing::Level::TRACE)
            .with_target("hyper", tracing::Level::DEBUG),
    };
    Ok(Some(targets))
}

/// Installs a subscriber writing plain lines (no colours) to `writer` for `verbose` or
/// `RUST_LOG`, unless neither asks for logs or a subscriber is already installed. An
/// unreadable `RUST_LOG` is an error (the caller says so and goes on without logs).
pub fn init<W>(verbose: u8, writer: W) -> Result<(), String>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let rust_log = std::env::var("RUST_LOG").ok();
    let Some(targets) = filter(verbose, rust_log.as_deref())? else {
        return Ok(());
    };
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(false)
        .with_target(true);
    // Another subscriber already installed (a host program's) wins.
    let _ = tracing_subscriber::registry()
        .with(layer.with_filter(targets))
        .try_init();
    Ok(())
}
