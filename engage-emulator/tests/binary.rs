//! The `engage-emulator` binary: first line, serving, clean exit on SIGTERM and SIGINT.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn start(args: &[&str]) -> (std::process::Child, std::net::SocketAddr, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_engage-emulator"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim_end()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("first line: {line:?}"));
    (child, url.parse().unwrap(), line)
}

fn signal(child: &std::process::Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

#[test]
fn prints_its_address_serves_and_exits_zero_on_sigterm() {
    let (mut child, addr, line) = start(&["--token", "t", "--script", "503"]);
    assert!(addr.ip().is_loopback());
    assert_ne!(addr.port(), 0, "the real port is printed: {line}");
    let body = r#"[{"$token":"t","$distinct_id":"u1","$set":{"a":1}}]"#;
    assert_eq!(common::post_json(addr, "/engage", body).status, 503);
    assert_eq!(common::post_json(addr, "/engage", body).text(), "1");
    let wrong = r#"[{"$token":"x","$distinct_id":"u1","$set":{"a":1}}]"#;
    assert_eq!(common::post_json(addr, "/engage", wrong).status, 401);
    assert_eq!(common::get(addr, "/_emulator/profiles/u1").json()["a"], 1);
    signal(&child, "-TERM");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn exits_zero_on_sigint() {
    let (mut child, _, _) = start(&[]);
    signal(&child, "-INT");
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn bad_flags_are_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_engage-emulator"))
        .args(["--script", "teapot"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("teapot"));
    let out = Command::new(env!("CARGO_BIN_EXE_engage-emulator"))
        .args(["--fail-rate", "2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn verbose_writes_one_access_line_per_request_without_the_query() {
    let (child, addr, _) = start(&["--token", "t", "--script", "ok,503", "-v"]);
    let body = r#"[{"$token":"t","$distinct_id":"u1","$set":{"secret":"x"}},{"$token":"t","$distinct_id":"u2","$set":{"a":1}}]"#;
    assert_eq!(
        common::post_json(addr, "/engage?strict=1", body).status,
        200
    );
    assert_eq!(
        common::post_json(addr, "/engage?strict=1", body).status,
        503
    );
    common::get(addr, "/_emulator/stats");
    signal(&child, "-TERM");
    let output = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("engage_emulator::access"))
        .collect();
    assert_eq!(lines.len(), 3, "{log}");
    assert!(
        lines[0].contains("method=POST") && lines[0].contains("\"/engage\""),
        "{log}"
    );
    assert!(
        lines[0].contains("status=200") && lines[0].contains("records=2"),
        "{log}"
    );
    assert!(
        lines[1].contains("status=503") && lines[1].contains("fault=Unavailable"),
        "{log}"
    );
    assert!(lines[2].contains("/_emulator/stats"), "{log}");
    assert!(
        !log.contains("strict=1") && !log.contains("secret"),
        "{log}"
    );
}
