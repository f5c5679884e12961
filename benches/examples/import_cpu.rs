//! Where the CPU goes in an import: client threads versus the in-process emulator's.
//!
//! `cargo run --release -p engage-benches --example import_cpu [UPDATES]`
//!
//! Imports the workload at concurrency 4 through each transport into the in-process
//! emulator over loopback, and reads each thread's CPU time from /proc/self/task (Linux):
//! threads named `engage-emulator` are the server's, all others the client's.

use std::collections::HashMap;
use std::time::Instant;

use engage_benches::paths::{ImportRig, Transport};
use engage_benches::{to_update, workload};
use engage_core::Update;

/// CPU ticks per thread id, with the thread's name.
fn thread_ticks() -> HashMap<u64, (String, u64)> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(tid) = entry.file_name().to_string_lossy().parse::<u64>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_owned();
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        // After "pid (comm) ": state is field 0; utime and stime are fields 11 and 12.
        let ticks = fields
            .get(11)
            .and_then(|u| u.parse::<u64>().ok())
            .unwrap_or(0)
            + fields
                .get(12)
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0);
        out.insert(tid, (name, ticks));
    }
    out
}

fn split(before: &HashMap<u64, (String, u64)>, after: &HashMap<u64, (String, u64)>) -> (u64, u64) {
    let (mut server, mut client) = (0, 0);
    for (tid, (name, ticks)) in after {
        let delta = ticks - before.get(tid).map_or(0, |b| b.1.min(*ticks));
        if name.starts_with("engage-emulator") {
            server += delta;
        } else {
            client += delta;
        }
    }
    (server, client)
}

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
        let hz = 100.0; // USER_HZ on Linux
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
