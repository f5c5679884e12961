//! The emulator's capacity, as its README states it: memory per profile at 200k and 1M
//! profiles, memory after a reset and after filling again, the profile listing at that
//! size (time, memory, and how long an `/engage` request waits meanwhile), 200k updates to
//! one profile in decreasing `$time`, and the stalled-upload attack at default settings.
//!
//! Runs the release `engage-emulator` binary as its own process, so that its memory
//! (VmRSS from `/proc`) is the emulator's alone:
//!
//! ```sh
//! cargo build --release -p engage-emulator
//! cargo run --release -p engage-benches --example emulator_capacity [-- 200000 1000000]
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn binary() -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let path = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("release/engage-emulator");
    assert!(
        path.exists(),
        "build it first: cargo build --release -p engage-emulator ({})",
        path.display()
    );
    path
}

fn start(args: &[&str]) -> (Child, SocketAddr) {
    let mut child = Command::new(binary())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the emulator");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .expect("first line")
        .parse()
        .unwrap();
    (child, addr)
}

fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// One keep-alive connection speaking just enough HTTP/1.1.
struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    fn open(addr: SocketAddr) -> Conn {
        let s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        Conn {
            writer: s.try_clone().unwrap(),
            reader: BufReader::with_capacity(1 << 20, s),
        }
    }

    /// Sends a request; returns the status and the body's length, reading the body in
    /// pieces (never holding it whole).
    fn call(&mut self, method: &str, path: &str, body: &[u8]) -> (u16, u64) {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        self.writer.write_all(head.as_bytes()).unwrap();
        self.writer.write_all(body).unwrap();
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let (mut length, mut chunked) = (0u64, false);
        loop {
            line.clear();
            self.reader.read_line(&mut line).unwrap();
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let lower = l.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
            if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            }
        }
        let mut total = 0u64;
        let mut sink = vec![0u8; 1 << 16];
        let mut skip = |reader: &mut BufReader<TcpStream>, mut n: u64| {
            while n > 0 {
                let take = n.min(sink.len() as u64) as usize;
                reader.read_exact(&mut sink[..take]).unwrap();
                n -= take as u64;
            }
        };
        if chunked {
            loop {
                line.clear();
                self.reader.read_line(&mut line).unwrap();
                let size = u64::from_str_radix(line.trim(), 16).unwrap();
                skip(&mut self.reader, size + 2);
                total += size;
                if size == 0 {
                    break;
                }
            }
        } else {
            skip(&mut self.reader, length);
            total = length;
        }
        (status, total)
    }
}

fn set_batch(from: u64, n: u64) -> Vec<u8> {
    let mut body = String::from("[");
    for i in from..from + n {
        if i > from {
            body.push(',');
        }
        body.push_str(&format!(
            r#"{{"$token":"t","$distinct_id":"user-{i:08}","$set":{{"name":"User {i}","plan":"pro","seats":{}}}}}"#,
            i % 50
        ));
    }
    body.push(']');
    body.into_bytes()
}

/// Loads `n` three-property profiles over two connections.
fn fill(addr: SocketAddr, n: u64) -> Duration {
    let started = Instant::now();
    let workers: Vec<_> = (0..2u64)
        .map(|w| {
            std::thread::spawn(move || {
                let mut conn = Conn::open(addr);
                let mut from = w * 2000;
                while from < n {
                    let k = 2000.min(n - from);
                    let (status, _) = conn.call("POST", "/engage?ip=0", &set_batch(from, k));
                    assert_eq!(status, 200);
                    from += 4000;
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    started.elapsed()
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

fn capacity(n: u64) {
    let (mut child, addr) = start(&[]);
    let pid = child.id();
    std::thread::sleep(Duration::from_millis(200));
    let base = rss(pid);
    let took = fill(addr, n);
    let full = rss(pid);
    println!(
        "{n} profiles: RSS {:.0} MiB over a base of {:.1} MiB = {:.0} B per profile (loaded in {:.2} s)",
        mib(full - base),
        mib(base),
        (full - base) as f64 / n as f64,
        took.as_secs_f64()
    );

    // The listing, with an /engage request every 20 ms meanwhile.
    let stop = Arc::new(AtomicBool::new(false));
    let worst = Arc::new(AtomicU64::new(0));
    let peak = Arc::new(AtomicU64::new(full));
    let prober = {
        let (stop, worst) = (stop.clone(), worst.clone());
        std::thread::spawn(move || {
            let mut conn = Conn::open(addr);
            let body = br#"[{"$token":"t","$distinct_id":"probe","$set":{"x":1}}]"#;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                conn.call("POST", "/engage", body);
                worst.fetch_max(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    let (status, bytes) = Conn::open(addr).call("GET", "/_emulator/profiles", b"");
    let listing = t.elapsed();
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    prober.join().unwrap();
    sampler.join().unwrap();
    assert_eq!(status, 200);
    println!(
        "  GET /_emulator/profiles: {:.0} MB in {:.2} s, RSS peak +{:.0} MiB over the loaded store; slowest concurrent /engage {:.1} ms",
        bytes as f64 / 1e6,
        listing.as_secs_f64(),
        mib(peak.load(Ordering::Relaxed).saturating_sub(full)),
        worst.load(Ordering::Relaxed) as f64 / 1000.0
    );

    let mut conn = Conn::open(addr);
    conn.call("POST", "/_emulator/reset", b"");
    std::thread::sleep(Duration::from_millis(300));
    let after_reset = rss(pid);
    fill(addr, n);
    let refilled = rss(pid);
    println!(
        "  after /_emulator/reset: RSS {:.0} MiB over base; filled again: {:.0} MiB over base",
        mib(after_reset.saturating_sub(base)),
        mib(refilled.saturating_sub(base))
    );
    let _ = child.kill();
    let _ = child.wait();
}

fn out_of_order() {
    let (mut child, addr) = start(&[]);
    let mut conn = Conn::open(addr);
    let n = 200_000u64;
    let started = Instant::now();
    let mut worst = Duration::ZERO;
    let mut i = 0u64;
    while i < n {
        let mut body = String::from("[");
        for j in i..i + 2000 {
            if j > i {
                body.push(',');
            }
            // Each update happened a second before the previous one.
            body.push_str(&format!(
                r#"{{"$token":"t","$distinct_id":"one","$time":{},"$set":{{"seen":{j}}},"$ignore_time":true}}"#,
                1_800_000_000_000i64 - j as i64 * 1000
            ));
        }
        body.push(']');
        let t = Instant::now();
        let (status, _) = conn.call("POST", "/engage", body.as_bytes());
        worst = worst.max(t.elapsed());
        assert_eq!(status, 200);
        i += 2000;
    }
    let took = started.elapsed();
    let t = Instant::now();
    let (_, bytes) = conn.call("GET", "/_emulator/profiles/one", b"");
    println!(
        "200000 updates to one profile in decreasing $time: {:.2} s ({:.0} ms for the slowest request of 2000); reading it back {:.0} ms ({bytes} B)",
        took.as_secs_f64(),
        worst.as_secs_f64() * 1000.0,
        t.elapsed().as_secs_f64() * 1000.0
    );
    let _ = child.kill();
    let _ = child.wait();
}

fn attack() {
    let (mut child, addr) = start(&[]);
    let pid = child.id();
    std::thread::sleep(Duration::from_millis(200));
    let base = rss(pid);
    let chunk = vec![b' '; 64 * 1024];
    let mut held = Vec::new();
    for _ in 0..300 {
        let Ok(mut s) = TcpStream::connect(addr) else {
            break;
        };
        let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
        let _ = s.write_all(b"POST /engage HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2097000\r\n\r\n");
        for _ in 0..31 {
            if s.write_all(&chunk).is_err() {
                break;
            }
        }
        held.push(s);
    }
    std::thread::sleep(Duration::from_millis(500));
    let peak = rss(pid);
    let t = Instant::now();
    let (status, _) = Conn::open(addr).call(
        "POST",
        "/engage",
        br#"[{"$token":"t","$distinct_id":"u","$set":{"a":1}}]"#,
    );
    let latency = t.elapsed();
    drop(held);
    std::thread::sleep(Duration::from_millis(1500));
    let after = rss(pid);
    println!(
        "300 connections each sending ~2 MB of a 2,097,000-byte body, then stalling: RSS {:.0} MiB under attack (base {:.0} MiB, budget 256 MiB), {:.0} MiB after they closed; a normal request meanwhile: HTTP {status} in {:.1} ms",
        mib(peak),
        mib(base),
        mib(after),
        latency.as_secs_f64() * 1000.0
    );
    let _ = child.kill();
    let _ = child.wait();
}

fn main() {
    let sizes: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![200_000, 1_000_000]
    } else {
        sizes
    };
    for n in sizes {
        capacity(n);
    }
    out_of_order();
    attack();
}
