//! Every count of the summary comes with its reasons, on screen and in the JSON report;
//! the first systematic failure is said at once.

use assert_cmd::Command;
mod common;
use common::{import_with, write};
use engage_conformance::servers::{Reply, ScriptedServer, TlsServer, refused_port};
use engage_emulator::{Emulator, EmulatorConfig, FaultConfig, FaultKind};
use serde_json::Value;

const TOKEN: &str = "reasons-token-0123456789";

fn import(base_url: &str, args: &[&str]) -> Command {
    import_with(base_url, TOKEN, args)
}

/// Runs twice: text (stdout, stderr) and JSON (the report).
fn both(base_url: &str, args: &[&str], code: i32) -> (String, String, Value) {
    let out = import(base_url, args)
        .assert()
        .code(code)
        .get_output()
        .clone();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let mut json_args = args.to_vec();
    json_args.extend(["--report", "json"]);
    let out = import(base_url, &json_args)
        .assert()
        .code(code)
        .get_output()
        .clone();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    (text, err, report)
}

fn first(report: &Value, category: &str) -> Value {
    report["reasons"][category][0].clone()
}

#[test]
fn invalid_records_are_explained_with_their_lines_and_a_hint() {
    let e = Emulator::start(EmulatorConfig::default().token(TOKEN)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "flat.ndjson",
        b"{\"user_id\":1,\"$set\":{\"a\":1}}\n{\"$set\":{\"a\":2}}\n{\"$distinct_id\":\"x\",\"$add\":{\"plan\":\"pro\"}}\nnot json\n",
    );
    let (text, _, report) = both(&e.base_url(), &[&f], 2);
    assert!(text.contains("Reasons"), "{text}");
    assert!(
        text.contains("invalid 2: unknown key") || text.contains("invalid 2: missing $distinct_id"),
        "{text}"
    );
    assert!(
        text.contains("property \"plan\": $add values must be numbers (line 3)"),
        "{text}"
    );
    assert!(text.contains("malformed JSON (line 4)"), "{text}");
    assert!(
        text.contains("--failed FILE"),
        "a hint to the full list: {text}"
    );
    let reasons = report["reasons"]["invalid"].as_array().unwrap();
    let total: u64 = reasons.iter().map(|r| r["count"].as_u64().unwrap()).sum();
    assert_eq!(total, 4, "{report}");
    let add = reasons
        .iter()
        .find(|r| r["reason"].as_str().unwrap().contains("$add"))
        .unwrap();
    assert_eq!(add["examples"][0]["line"], 3);
    assert!(
        add["examples"][0]["file"]
            .as_str()
            .unwrap()
            .ends_with("flat.ndjson")
    );
    for key in ["rejected", "not_delivered", "uncertain", "warnings"] {
        assert_eq!(report["reasons"][key], serde_json::json!([]), "{key}");
    }
    // With --failed given, no hint.
    let failed = dir.path().join("failed.ndjson");
    let out = import(&e.base_url(), &[&f, "--failed", failed.to_str().unwrap()])
        .assert()
        .code(2)
        .get_output()
        .stdout
        .clone();
    assert!(!String::from_utf8_lossy(&out).contains("--failed FILE"));
}

#[test]
fn nothing_listening_is_said_at_once_and_explained() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "one.ndjson",
        b"{\"$distinct_id\":\"a\",\"$set\":{\"x\":1}}\n",
    );
    let addr = refused_port();
    let url = format!("http://{addr}");
    let (text, err, report) = both(&url, &[&f, "--max-retries", "2"], 2);
    let expected = format!("could not connect to {addr}");
    assert!(
        err.contains(&expected) && err.contains("retrying"),
        "said at once: {err}"
    );
    assert!(
        text.contains(&format!("not delivered 1: {expected}")),
        "{text}"
    );
    let r = first(&report, "not_delivered");
    assert_eq!(r["count"], 1);
    assert!(r["reason"].as_str().unwrap().contains(&expected), "{r}");
}

#[test]
fn rejections_say_what_mixpanel_said() {
    let e = Emulator::start(EmulatorConfig::default().token(TOKEN)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The emulator rejects $add on /groups (the escape hatch lets it through).
    let f = write(
        dir.path(),
        "g.ndjson",
        b"{\"$group_key\":\"c\",\"$group_id\":\"a\",\"$add\":{\"n\":1}}\n{\"$group_key\":\"c\",\"$group_id\":\"b\",\"$add\":{\"n\":1}}\n",
    );
    let (text, _, report) = both(&e.base_url(), &[&f, "--groups"], 2);
    assert!(text.contains("rejected 2: "), "{text}");
    let r = first(&report, "rejected");
    assert_eq!(r["count"], 2);
    assert!(r["reason"].as_str().unwrap().contains("$add"), "{r}");
}

#[test]
fn uncertain_resends_and_warnings_are_explained() {
    let e = Emulator::start(EmulatorConfig::default().token(TOKEN).faults(FaultConfig {
        script: vec![Some(FaultKind::AppliedThen500)],
        ..FaultConfig::default()
    }))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let long = "x".repeat(300);
    let f = write(
        dir.path(),
        "in.ndjson",
        format!(
            "{{\"$distinct_id\":\"a\",\"$add\":{{\"n\":1}}}}\n{{\"$distinct_id\":\"b\",\"$set\":{{\"note\":\"{long}\"}}}}\n"
        )
        .as_bytes(),
    );
    let out = import(&e.base_url(), &[&f, "--report", "json"])
        .assert()
        .code(2)
        .get_output()
        .stdout
        .clone();
    let report: Value = serde_json::from_slice(&out).unwrap();
    let u = first(&report, "uncertain");
    assert_eq!(u["count"], 1, "{report}");
    assert_eq!(u["examples"][0]["line"], 1);
    let w = first(&report, "warnings");
    assert_eq!(w["count"], 1, "{report}");
    assert_eq!(w["examples"][0]["line"], 2);
    assert!(w["reason"].as_str().unwrap().contains("\"note\""), "{w}");
}

#[test]
fn a_refused_token_and_a_failed_handshake_are_said_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "one.ndjson",
        b"{\"$distinct_id\":\"a\",\"$set\":{\"x\":1}}\n",
    );
    let server = ScriptedServer::start(vec![Reply::http(
        401,
        &[],
        r#"{"error":"Invalid token","status":"error"}"#,
    )]);
    let out = import(&server.base_url(), &[&f])
        .assert()
        .code(1)
        .get_output()
        .clone();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refused the project token (HTTP 401"), "{err}");
    // A certificate nobody trusts: TLS fails, and the import stops rather than retry.
    let tls = TlsServer::start();
    let out = import(&tls.base_url(), &[&f])
        .assert()
        .code(1)
        .get_output()
        .clone();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("TLS failed") && err.contains("stopping"),
        "{err}"
    );
}
