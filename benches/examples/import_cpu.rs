//! Where the CPU goes in an import: client threads versus the in-process emulator's.
//!
//! `cargo run --release -p engage-benches --example import_cpu [UPDATES]`
//!
//! Imports the workload at concurrency 4 through each transport into the in-process
//! emulator over loopback, and reads each thread's CPU time from /proc/self/task (Linux):
//! threads named `engage-emulator` are the server's, all others the client's.

use std::time::Instant;

use engage_benches::paths::{ImportRig, Transport};
use engage_benches::threads::{TICKS_PER_SECOND, split, thread_ticks};
use engage_benches::{to_update, workload};
use engage_core::Update;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let updates: Vec<Update> = workload(n, 11).iter().map(to_update).collect();
    let rig = ImportRig::start();
    println!("transport   updates/s   client CPU   emulator CPU   client share");
    for transport in Transport::ALL {
        rig.emulator.reset();
        let u = updates.clone();
        let config = rig.config("tok", 4);
        let before = thread_ticks();
        let t = Instant::now();
        let summary = rig.import(transport, config, u);
        let elapsed = t.elapsed().as_secs_f64();
        let (server, client) = split(&before, &thread_ticks());
        assert_eq!(summary.accepted as usize, n, "{summary:?}");
        let hz = TICKS_PER_SECOND;
        println!(
            "{:<10} {:>10.0}   {:>8.2} s   {:>10.2} s   {:>10.0} %",
            transport.name(),
            n as f64 / elapsed,
            client as f64 / hz,
            server as f64 / hz,
            100.0 * client as f64 / (client + server).max(1) as f64
        );
    }
}
