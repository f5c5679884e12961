//! CPU time per thread of this process, from `/proc/self/task` (Linux): to tell the
//! in-process emulator's threads from the client's.

use std::collections::HashMap;

/// CPU ticks (user + sys, `USER_HZ`) per thread id, with the thread's name.
pub fn thread_ticks() -> HashMap<u64, (String, u64)> {
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

/// The ticks spent between two readings: (the emulator's threads, all others).
pub fn split(
    before: &HashMap<u64, (String, u64)>,
    after: &HashMap<u64, (String, u64)>,
) -> (u64, u64) {
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

/// Ticks per second of `/proc`'s counts (`USER_HZ`, 100 on Linux).
pub const TICKS_PER_SECOND: f64 = 100.0;
