//! Peak memory and CPU of the application client against the bulk import, each in its own
//! process, sending to an `engage-emulator` process (so the emulator's profiles do not count):
//!
//! ```sh
//! cargo build --release -p engage-emulator -p engage-benches --examples
//! target/release/examples/client_rss client 1000000
//! target/release/examples/client_rss bulk 1000000
//! target/release/examples/client_rss client 300000 100   # the emulator answers after 100 ms
//! target/release/examples/client_rss client_curl 300000 100   # engage-curl (`bulk_curl` too)
//! ```
//!
//! Updates are built as they are sent (4 producer threads for the client; a lazy iterator
//! for the bulk import), from 10,000 workload records cycled, so that the input is not what
//! is measured. Prints wall seconds, CPU seconds (user+sys, this process) and peak RSS.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use engage_benches::{to_update, workload};
use engage_core::client::ClientConfig;
use engage_core::{BatchConfig, Endpoint, ImportConfig, Target, Token, Update};

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// `VmHWM` (peak resident set) of this process, in MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// User + system CPU seconds of this process.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rfind(')').map_or("", |i| &stat[i + 2..]);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<f64>().ok()))
        .sum();
    ticks / 100.0
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "client".into());
    let n: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    // A simulated round trip: the emulator's `--latency-ms` (loopback hides latency).
    let latency_ms: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(0);
    let exe = std::env::current_exe().expect("own path");
    let emulator_bin = exe
        .parent()
        .and_then(|examples| examples.parent())
        .map(|release| release.join("engage-emulator"))
        .expect("target/release");
    let mut emulator = Command::new(&emulator_bin)
        .args(["--token", TOKEN, "--latency-ms", &latency_ms.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e} (build it first)", emulator_bin.display()));
    let mut line = String::new();
    BufReader::new(emulator.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("first line");
    let base = line.trim().trim_start_matches("listening on ").to_owned();
    let target = Target::base_url(&base).expect("base URL");
    let token = Token::new(TOKEN).expect("token");
    let records = workload(10_000, 13);
    let update = move |i: usize| -> Update { to_update(&records[i % records.len()]) };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    let transport = {
        let _inside = runtime.enter();
        engage_hyper::HyperTransport::new().expect("hyper")
    };
    let started = Instant::now();
    let cpu0 = cpu_seconds();
    let curl = || engage_curl::CurlTransport::new().expect("curl");
    let (accepted, requests) = match mode.as_str() {
        "client" | "client_curl" => {
            let client = if mode == "client_curl" {
                curl().client(ClientConfig::new(token, target))
            } else {
                let _inside = runtime.enter();
                transport.client(ClientConfig::new(token, target))
            };
            let update = std::sync::Arc::new(update);
            let producers: Vec<_> = (0..4)
                .map(|p| {
                    let client = client.clone();
                    let update = update.clone();
                    std::thread::spawn(move || {
                        for i in (p..n).step_by(4) {
                            client.send_blocking(update(i)).expect("running");
                        }
                    })
                })
                .collect();
            for p in producers {
                p.join().expect("producer");
            }
            let summary = client.shutdown_blocking(Duration::from_secs(60));
            (summary.accepted, summary.requests)
        }
        "bulk_curl" => {
            let config = ImportConfig::new(BatchConfig::new(token, Endpoint::Engage), target);
            let summary = curl().import(config, (0..n).map(update), |_event| {});
            (summary.accepted, summary.requests)
        }
        _ => {
            let config = ImportConfig::new(BatchConfig::new(token, Endpoint::Engage), target);
            let summary =
                runtime.block_on(transport.import(config, (0..n).map(update), |_event| {}));
            (summary.accepted, summary.requests)
        }
    };
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let _ = emulator.kill();
    let _ = emulator.wait();
    println!(
        "{mode:6} {n} updates, {latency_ms} ms per request: accepted {accepted} in {requests} requests, wall {wall:.2} s, CPU {cpu:.2} s (user+sys), {:.0} updates/s, peak RSS {:.1} MiB",
        n as f64 / wall,
        peak_rss_mib()
    );
}
