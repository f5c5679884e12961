//! Hostile clients and hostile settings: every bad input answered as bad input, the
//! emulator's own cost bounded, its controls doing what they say.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{get, post_json, request};
use engage_emulator::{Emulator, EmulatorConfig};
use serde_json::{Value, json};

fn emulator() -> Emulator {
    Emulator::start(EmulatorConfig::default()).unwrap()
}

fn rec(id: &str, op: &str, payload: Value) -> Value {
    json!({"$token": "t", "$distinct_id": id, op: payload})
}

fn send(e: &Emulator, query: &str, records: &[Value]) -> common::Reply {
    post_json(
        e.addr(),
        &format!("/engage{query}"),
        &serde_json::to_string(records).unwrap(),
    )
}

#[test]
fn fault_settings_out_of_range_or_misspelt_are_refused_and_change_nothing() {
    let e = emulator();
    let set = |body: &str| {
        request(
            e.addr(),
            "POST",
            "/_emulator/faults",
            Some("application/json"),
            body.as_bytes(),
        )
    };
    assert_eq!(set(r#"{"script":["503"],"seed":3}"#).status, 200);
    for bad in [
        r#"{"fail_rate":2}"#,
        r#"{"fail_rate":-1}"#,
        r#"{"slow_ms":18446744073709551615}"#,
        r#"{"slow_ms":600001}"#,
        r#"{"foo":1}"#,
        r#"{"script":["503"],"fail_rat":0.5}"#,
    ] {
        let r = set(bad);
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
    }
    // The script set first is still there.
    let config = get(e.addr(), "/_emulator/faults").json();
    assert_eq!(config["script"], json!(["503"]));
    assert_eq!(config["seed"], 3);
    assert_eq!(e.stats().requests, 0);
}

#[test]
fn boolean_parameters_other_than_0_or_1_are_a_client_error() {
    let e = emulator();
    let one = [rec("u", "$set", json!({"a": 1}))];
    for q in ["?strict=abc", "?verbose=2", "?ip=yes"] {
        let r = send(&e, q, &one);
        assert_eq!(r.status, 400, "{q}: {}", r.text());
        assert!(r.text().contains("must be 0 or 1"), "{}", r.text());
    }
    assert!(e.profile("u").is_none());
    assert_eq!(
        send(&e, "?strict=true&verbose=0&ip=false", &one).status,
        200
    );
}

#[test]
fn an_add_leaving_the_finite_numbers_is_rejected_and_big_integers_stay_exact() {
    let e = emulator();
    send(
        &e,
        "",
        &[rec(
            "u",
            "$set",
            json!({"n": 1.7e308, "big": 9_007_199_254_740_993u64}),
        )],
    );
    let r = send(
        &e,
        "?strict=1",
        &[
            rec("u", "$add", json!({"n": 1e308})),
            rec("u", "$add", json!({"big": 2})),
        ],
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let answer = r.json();
    assert_eq!(answer["num_records_imported"], 1);
    assert_eq!(answer["failed_records"][0]["index"], 0);
    assert_eq!(answer["failed_records"][0]["field"], "n");
    assert_eq!(answer["failed_records"][0]["$distinct_id"], "u");
    let p = e.profile("u").unwrap();
    assert_eq!(p["n"], json!(1.7e308), "unchanged, never null");
    assert_eq!(p["big"], json!(9_007_199_254_740_995u64));
}

#[test]
fn form_data_follows_the_same_utf8_rule_as_json() {
    let e = emulator();
    // %FF%FE is not UTF-8 once decoded: refused, as the same bytes in a JSON body are.
    let form = b"data=%5B%7B%22%24token%22%3A%22t%22%2C%22%24distinct_id%22%3A%22%FF%FE%22%2C%22%24set%22%3A%7B%7D%7D%5D";
    let r = request(
        e.addr(),
        "POST",
        "/engage",
        Some("application/x-www-form-urlencoded"),
        form,
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("UTF-8"), "{}", r.text());
    let json_body = b"[{\"$token\":\"t\",\"$distinct_id\":\"\xff\xfe\",\"$set\":{}}]";
    let r = request(
        e.addr(),
        "POST",
        "/engage",
        Some("application/json"),
        json_body,
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let r = request(e.addr(), "GET", "/engage?data=%FF", None, b"");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(e.profiles().is_empty());
}

#[test]
fn a_body_answered_413_is_drained_so_a_write_first_client_reads_the_answer() {
    let e = Emulator::start(EmulatorConfig::default().max_body_bytes(64 * 1024)).unwrap();
    let body = vec![b' '; 512 * 1024];
    // A plain blocking client: the whole request first, then the answer.
    let mut s = TcpStream::connect(e.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /engage HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(&body)
        .expect("the server reads what it refuses");
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).unwrap();
    let r = common::parse(&answer).unwrap();
    assert_eq!(r.status, 413, "{}", r.text());
}

#[test]
fn a_head_dripped_past_the_timeout_is_answered_408() {
    let e = Emulator::start(EmulatorConfig::default().body_timeout(Duration::from_millis(300)))
        .unwrap();
    let mut s = TcpStream::connect(e.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"POST /engage HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let r = common::parse(&answer).expect("an answer, not a silent close");
    assert_eq!(r.status, 408, "{}", r.text());
    // Keep-alive connections that sit idle between requests are not timed out that way.
    let mut s = TcpStream::connect(e.addr()).unwrap();
    let body = r#"[{"$token":"t","$distinct_id":"u","$set":{"a":1}}]"#;
    let req = format!(
        "POST /engage HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    assert!(status.contains(" 200 "), "{status}");
}

#[test]
fn the_profile_listing_is_streamed_whole() {
    let e = emulator();
    let records: Vec<Value> = (0..2000)
        .map(|i| rec(&format!("user-{i}"), "$set", json!({"n": i})))
        .collect();
    for chunk in records.chunks(500) {
        assert_eq!(send(&e, "", chunk).status, 200);
    }
    let r = get(e.addr(), "/_emulator/profiles");
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    let all = r.json();
    let all = all.as_object().unwrap();
    assert_eq!(all.len(), 2000);
    assert_eq!(all["user-1234"]["n"], 1234);
    e.reset();
    assert_eq!(get(e.addr(), "/_emulator/profiles").json(), json!({}));
}

fn start_binary(
    args: &[&str],
    envs: &[(&str, &str)],
) -> (std::process::Child, std::net::SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_engage-emulator"))
        .args(args)
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim_end()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("first line: {line:?}"))
        .parse()
        .unwrap();
    (child, addr)
}

#[test]
fn sigterm_lets_requests_in_flight_finish() {
    let (mut child, addr) = start_binary(&["--script", "slow", "--slow-ms", "1500"], &[]);
    let body = r#"[{"$token":"t","$distinct_id":"u","$set":{"a":1}}]"#;
    let in_flight = std::thread::spawn(move || post_json(addr, "/engage?verbose=1", body));
    std::thread::sleep(Duration::from_millis(300));
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let answer = in_flight.join().expect("answered, not dropped");
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn the_token_can_come_from_the_environment() {
    let (mut child, addr) = start_binary(&[], &[("ENGAGE_EMULATOR_TOKEN", "from-env")]);
    let wrong = r#"[{"$token":"x","$distinct_id":"u","$set":{"a":1}}]"#;
    assert_eq!(post_json(addr, "/engage", wrong).status, 401);
    let right = r#"[{"$token":"from-env","$distinct_id":"u","$set":{"a":1}}]"#;
    assert_eq!(post_json(addr, "/engage", right).status, 200);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn flags_out_of_range_are_refused() {
    for args in [
        &["--body-timeout-ms", "0"][..],
        &["--slow-ms", "18446744073709551615"],
        &["--max-connections", "0"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_engage-emulator"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The attack of the bounded-load issue, scaled to a test: many connections each
/// declaring a 2 MB body, sending most of it, then stalling. Memory stays within the
/// budget plus a stated base, and a normal request is answered meanwhile.
#[cfg(target_os = "linux")]
#[test]
fn uploads_that_stall_stay_within_the_body_budget() {
    const BUDGET: u64 = 32 << 20;
    const ATTACKERS: usize = 100;
    let (mut child, addr) = start_binary(
        &[
            "--max-buffered-bytes",
            &BUDGET.to_string(),
            "--max-connections",
            "512",
            "--body-timeout-ms",
            "20000",
        ],
        &[],
    );
    let base = rss_bytes(child.id());
    let chunk = vec![b' '; 64 * 1024];
    let mut held = Vec::new();
    for _ in 0..ATTACKERS {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"POST /engage HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2097000\r\n\r\n")
            .unwrap();
        s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        // About 2 MB, then silence: a write that blocks means the server stopped reading.
        for _ in 0..31 {
            if s.write_all(&chunk).is_err() {
                break;
            }
        }
        held.push(s);
    }
    std::thread::sleep(Duration::from_millis(500));
    let peak = rss_bytes(child.id());
    let started = Instant::now();
    let body = r#"[{"$token":"t","$distinct_id":"u","$set":{"a":1}}]"#;
    let r = post_json(addr, "/engage?verbose=1", body);
    let latency = started.elapsed();
    eprintln!(
        "base {} MiB, under attack {} MiB (budget {} MiB), normal request in {latency:?}",
        base >> 20,
        peak >> 20,
        BUDGET >> 20
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // The budget; per connection, the free first 64 KiB of its body and a 64 KiB read
    // buffer; and 32 MiB for the process itself.
    let allowance = BUDGET + ATTACKERS as u64 * 128 * 1024 + (32 << 20);
    assert!(
        peak.saturating_sub(base) < allowance,
        "RSS grew by {} MiB",
        (peak - base) >> 20
    );
    drop(held);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn repeated_keys_are_noted_per_record_and_the_last_value_applied() {
    let e = emulator();
    let body = r#"[{"$token":"t","$distinct_id":"u1","$set":{"a":1},"$set":{"b":2}},
        {"$token":"t","$distinct_id":"u2","$add":{"n":1,"n":5}},
        {"$token":"t","$distinct_id":"u3","$set":{"c":3}}]"#;
    let reply = post_json(e.addr(), "/engage?strict=1", body);
    assert_eq!(reply.status, 200, "{}", reply.text());
    let answer = reply.json();
    assert_eq!(answer["num_records_imported"], 3);
    assert_eq!(
        answer["notes"],
        json!([
            {"index": 0, "field": "$set", "message": "key repeated in one object: only the last value was applied"},
            {"index": 1, "field": "n", "message": "key repeated in one object: only the last value was applied"},
        ])
    );
    let u1 = e.profile("u1").unwrap();
    assert_eq!((u1.get("a"), u1["b"].clone()), (None, json!(2)));
    assert_eq!(e.profile("u2").unwrap()["n"], 5);
    assert_eq!(e.stats().records_with_repeated_keys, 2);
    // Verbose answers carry the notes too; a record without repeats adds none.
    let reply = post_json(e.addr(), "/engage?verbose=1", body);
    assert_eq!(reply.json()["notes"].as_array().map(Vec::len), Some(2));
    let clean = post_json(
        e.addr(),
        "/engage?strict=1",
        r#"[{"$token":"t","$distinct_id":"u4","$set":{"c":3}}]"#,
    );
    assert_eq!(clean.json().get("notes"), None);
}

/// Bodies the one-pass reader takes whole skip the UTF-8 walk; every other body gets the
/// answer it always had: bytes that are not UTF-8 anywhere (a value, a key, between
/// records) refuse the body, and a byte order mark or Unicode spaces around the array are
/// still read.
#[test]
fn bodies_not_utf8_anywhere_are_refused_and_unicode_around_the_array_is_read() {
    let e = emulator();
    let post = |body: &[u8]| {
        request(
            e.addr(),
            "POST",
            "/engage?strict=1",
            Some("application/json"),
            body,
        )
    };
    let valid = br#"{"$token":"t","$distinct_id":"a","$set":{"ok":1}}"#;
    for bad in [
        &b"[{\"$token\":\"t\",\"$distinct_id\":\"a\",\"$set\":{\"city\":\"Malm\xf6\"}}]"[..],
        &b"[{\"$token\":\"t\",\"$distinct_id\":\"a\",\"$set\":{\"\xc3\":1}}]"[..],
        &[&b"["[..], valid, b",\xff]"].concat(),
        &[&b"["[..], valid, b"]\xff"].concat(),
        &[&b"\xef\xbb\xbf["[..], valid, b",\xed\xa0\x80]"].concat(),
    ] {
        let r = post(bad);
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(bad));
        assert!(r.text().contains("not UTF-8"), "{}", r.text());
    }
    assert!(
        e.profiles().is_empty(),
        "nothing applied from a refused body"
    );
    for (n, good) in [
        [&b"\xef\xbb\xbf["[..], valid, b"]"].concat(),
        ["\u{a0} [".as_bytes(), valid, " ]\u{2028}".as_bytes()].concat(),
        [&b"\r\n["[..], valid, b",", valid, b"]\n"].concat(),
    ]
    .iter()
    .enumerate()
    {
        let r = post(good);
        assert_eq!(r.status, 200, "body {n}: {}", r.text());
    }
    assert_eq!(e.profile("a").unwrap()["ok"], json!(1));
}
