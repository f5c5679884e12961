//! The `client` criterion group's two paths, one after the other in one process, with the
//! process's CPU and each thread's: `client_inproc curl|hyper|async_std [ROUNDS]`.

use std::time::Instant;

use engage_benches::paths::{ImportRig, Transport};
use engage_benches::{to_update, workload};
use engage_core::Update;
use engage_core::delivery::Concurrency;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// CPU seconds (user+sys) of each thread of this process, by name.
fn threads() -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = Vec::new();
    for t in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_string();
        let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let cpu =
            (f[11].parse::<f64>().unwrap_or(0.0) + f[12].parse::<f64>().unwrap_or(0.0)) / 100.0;
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some((_, c)) => *c += cpu,
            None => out.push((name, cpu)),
        }
    }
    out
}

/// CPU seconds (user+sys) of the whole process, threads that ended included.
fn process_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let f: Vec<&str> = stat[stat.rfind(')').map_or(0, |i| i + 2)..]
        .split_whitespace()
        .collect();
    (f[11].parse::<f64>().unwrap_or(0.0) + f[12].parse::<f64>().unwrap_or(0.0)) / 100.0
}

fn main() {
    let transport = match std::env::args().nth(1).as_deref() {
        Some("hyper") => Transport::Hyper,
        Some("async_std") => Transport::AsyncStd,
        _ => Transport::Curl,
    };
    let rounds: usize = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(3);
    const N: usize = 1_000_000;
    let updates: Vec<Update> = workload(N, 13).iter().map(to_update).collect();
    let rig = ImportRig::start();
    for _ in 0..rounds {
        for mode in ["client", "bulk"] {
            rig.emulator.reset();
            let u = updates.clone();
            let before = threads();
            let cpu0 = process_cpu();
            let t = Instant::now();
            let accepted = if mode == "client" {
                rig.client_sends(transport, rig.client_config(TOKEN), u, 4)
                    .accepted
            } else {
                let config = rig.config(TOKEN, 4).concurrency(Concurrency::default());
                rig.import(transport, config, u).accepted
            };
            let wall = t.elapsed().as_secs_f64();
            let after = threads();
            let cpu = process_cpu() - cpu0;
            let mut line = format!("{mode:6} wall {wall:.2} s cpu {cpu:.2} s accepted {accepted}");
            for (name, cpu) in &after {
                let was = before
                    .iter()
                    .find(|(n, _)| n == name)
                    .map_or(0.0, |(_, c)| *c);
                if cpu - was > 0.01 {
                    line += &format!(" | {name} {:.2}", cpu - was);
                }
            }
            println!("{line}");
        }
    }
}
