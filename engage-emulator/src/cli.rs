//! The command line shared by `engage-emulator` and `engage serve`.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::faults::{FaultConfig, FaultKind, ScriptStep, UnknownFault, parse_script};
use crate::server::{Settings, Shared};

/// A parsed `--script` value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScriptArg(pub Vec<ScriptStep>);

/// A parsed `--fault-kinds` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindsArg(pub Vec<FaultKind>);

fn script(s: &str) -> Result<ScriptArg, UnknownFault> {
    parse_script(s).map(ScriptArg)
}

fn kinds(s: &str) -> Result<KindsArg, UnknownFault> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map(KindsArg)
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let r: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if r.is_finite() && r > 0.0 && r <= 1e6 {
        Ok(r)
    } else {
        Err("the rate limit must be a number of megabytes per minute above 0".into())
    }
}

fn rate(s: &str) -> Result<f64, String> {
    let r: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&r) {
        Ok(r)
    } else {
        Err("the rate must be between 0 and 1".into())
    }
}

/// Options of the emulator's command line.
#[derive(Clone, clap::Args)]
#[command(after_help = "EXAMPLES:\n  \
    engage-emulator --addr 127.0.0.1:8480\n  \
    engage-emulator --token my-token --script 429-retry-after,503,ok --fail-rate 0.1 --seed 7\n\n\
    Inspection: GET /_emulator/profiles, /_emulator/profiles/ID, /_emulator/groups, /_emulator/stats;\n\
    POST /_emulator/reset; GET or POST /_emulator/faults (JSON: script, fail_rate, kinds, seed, slow_ms).")]
pub struct EmulatorArgs {
    /// Address to listen on. Port 0 picks a free port. Anything but loopback must be asked
    /// for explicitly.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub addr: SocketAddr,
    /// Project token every record must carry (a different one is answered 401). Without
    /// it, any non-empty token is accepted. Default: $ENGAGE_EMULATOR_TOKEN (which keeps it
    /// out of `ps`).
    #[arg(long, env = "ENGAGE_EMULATOR_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Request bodies larger than this are answered 413.
    #[arg(long, default_value_t = engage_core::batch::DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// Seed of the fault rate's random draws.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Faults for the next requests, one per request, then normal answers: a comma list
    /// of 429-retry-after, 429, 500, 502, 503, close, slow, applied-500 and ok.
    #[arg(long, value_parser = script, default_value = "")]
    pub script: ScriptArg,
    /// Probability (0 to 1) that a request after the script gets a fault.
    #[arg(long, value_parser = rate, default_value_t = 0.0)]
    pub fail_rate: f64,
    /// Kinds the rate draws from, in turn (default: all eight).
    #[arg(long, value_parser = kinds)]
    pub fault_kinds: Option<KindsArg>,
    /// Delay of the `slow` fault, in milliseconds (at most 600000).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(0..=crate::faults::MAX_SLOW_MS))]
    pub slow_ms: u64,
    /// Requests whose head or body take longer than this (ms, at least 1) are answered
    /// 408 and the connection closed.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub body_timeout_ms: u64,
    /// Most connections served at once; more wait in the listen queue until one closes.
    #[arg(long, default_value_t = crate::DEFAULT_MAX_CONNECTIONS, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,
    /// Every /engage and /groups answer waits this long (ms): a round trip, not a fault.
    #[arg(long, default_value_t = 0, value_name = "MS", value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub latency_ms: u64,
    /// And this much more per megabyte of body (ms).
    #[arg(long, default_value_t = 0, value_name = "MS", value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub latency_per_mb_ms: u64,
    /// Megabytes (10^6 bytes) of bodies per minute each project token may send (a token
    /// bucket holding one second's worth); over it, 429 with Mixpanel's body and no
    /// Retry-After, as Mixpanel documents.
    #[arg(long, value_name = "MB", value_parser = parse_rate)]
    pub rate_limit_mb_per_min: Option<f64>,
    /// Most bytes of request bodies held at once, all connections together; a request
    /// that would go over is answered 503 with Retry-After: 1.
    #[arg(long, default_value_t = crate::DEFAULT_BODY_BUDGET, value_parser = clap::value_parser!(u64).range(1024..))]
    pub max_buffered_bytes: u64,
    /// Logs on stderr: -v one access line per request (method, path, status, records,
    /// ms, the fault injected), -vv debug, -vvv trace. RUST_LOG, when set, decides instead.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

impl std::fmt::Debug for EmulatorArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatorArgs")
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "…"))
            .field("max_body_bytes", &self.max_body_bytes)
            .field("fail_rate", &self.fail_rate)
            .finish_non_exhaustive()
    }
}

impl EmulatorArgs {
    fn faults(&self) -> FaultConfig {
        FaultConfig {
            script: self.script.0.clone(),
            fail_rate: self.fail_rate,
            kinds: self
                .fault_kinds
                .as_ref()
                .map_or_else(|| FaultKind::ALL.to_vec(), |k| k.0.clone()),
            seed: self.seed,
            slow_ms: self.slow_ms,
        }
    }
}

/// Runs the emulator in the foreground: prints `listening on http://HOST:PORT` as the
/// first line of stdout, serves until SIGINT or SIGTERM, then returns.
pub fn run_cli(args: &EmulatorArgs) -> io::Result<()> {
    if let Err(e) = crate::logs::init(args.verbose, io::stderr) {
        eprintln!("note: {e}; no logs");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        // Handlers first: a signal that arrives right after the first line must find them.
        let stop = shutdown_signal()?;
        let listener = tokio::net::TcpListener::bind(args.addr).await?;
        let addr = listener.local_addr()?;
        {
            let mut out = io::stdout().lock();
            writeln!(out, "listening on http://{addr}")?;
            out.flush()?;
        }
        if !addr.ip().is_loopback() {
            eprintln!("warning: serving on {addr}, which is not a loopback address");
        }
        let shared = Arc::new(Shared::new(
            Settings {
                token: args.token.clone(),
                max_body_bytes: args.max_body_bytes,
                body_timeout: Duration::from_millis(args.body_timeout_ms),
                max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
                body_budget: usize::try_from(args.max_buffered_bytes).unwrap_or(usize::MAX),
                latency: crate::server::Latency {
                    base: Duration::from_millis(args.latency_ms),
                    per_mb: Duration::from_millis(args.latency_per_mb_ms),
                },
                rate_limit: args.rate_limit_mb_per_min.map(|mb| (mb * 1e6) as u64),
            },
            args.faults(),
        ));
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            stop.await;
            let _ = tx.send(true);
        });
        crate::serve(listener, shared, rx).await;
        Ok(())
    })
}

/// Registers SIGINT and SIGTERM now; the future completes on the first of them.
#[cfg(unix)]
fn shutdown_signal() -> io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

/// Ctrl-C where there are no Unix signals.
#[cfg(not(unix))]
fn shutdown_signal() -> io::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
