//! The built `engage` binary against the emulator.

use std::io::Write;

use assert_cmd::Command;
mod common;
use common::{emulator_for, engage, report, write};
use engage_emulator::{EMULATOR_PROPERTIES, Emulator, EmulatorConfig, FaultConfig, FaultKind};
use serde_json::{Value, json};

const TOKEN: &str = "cli-token";

fn emulator() -> Emulator {
    emulator_for(TOKEN)
}

fn import(e: &Emulator, args: &[&str]) -> Command {
    let mut c = engage();
    c.arg("import").args(args).args([
        "--endpoint",
        &e.base_url(),
        "--token",
        TOKEN,
        "--backoff-base-ms",
        "5",
        "--backoff-max-ms",
        "20",
    ]);
    c
}

fn props(e: &Emulator, id: &str) -> Value {
    let mut p = e.profile(id).unwrap_or_else(|| panic!("no profile {id}"));
    for k in EMULATOR_PROPERTIES {
        p.remove(k);
    }
    Value::Object(p)
}

/// Runs the command, checks its exit status, returns its stdout.
fn stdout_of(cmd: &mut Command, code: i32) -> Vec<u8> {
    cmd.assert().code(code).get_output().stdout.clone()
}

const NDJSON: &str = r#"{"$distinct_id":"a","$set":{"plan":"pro","n":1}}
{"$distinct_id":"a","$add":{"n":2}}
{"$distinct_id":"b","$union":{"tags":["x","y"]}}
"#;

fn expect_ndjson_state(e: &Emulator) {
    assert_eq!(props(e, "a"), json!({"plan": "pro", "n": 3}));
    assert_eq!(props(e, "b"), json!({"tags": ["x", "y"]}));
}

#[test]
fn every_input_format_gives_the_expected_state() {
    let dir = tempfile::tempdir().unwrap();
    // NDJSON.
    let e = emulator();
    let f = write(dir.path(), "in.ndjson", NDJSON.as_bytes());
    import(&e, &[&f]).assert().code(0);
    expect_ndjson_state(&e);
    // The same gzip-compressed.
    let e = emulator();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(NDJSON.as_bytes()).unwrap();
    let f = write(dir.path(), "in.ndjson.gz", gz.finish().unwrap());
    import(&e, &[&f]).assert().code(0);
    expect_ndjson_state(&e);
    // A JSON array, pretty-printed, in a .json file.
    let e = emulator();
    let records: Vec<Value> = NDJSON
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let f = write(
        dir.path(),
        "in.json",
        serde_json::to_string_pretty(&records).unwrap().as_bytes(),
    );
    import(&e, &[&f]).assert().code(0);
    expect_ndjson_state(&e);
    // Standard input, through curl and async-std.
    for transport in ["curl", "async-std"] {
        let e = emulator();
        import(&e, &["-", "--transport", transport])
            .write_stdin(NDJSON)
            .assert()
            .code(0);
        expect_ndjson_state(&e);
    }
    // CSV of user attributes, typed values, empty cells skipped.
    let e = emulator();
    let f = write(
        dir.path(),
        "users.csv",
        b"user_id,name,seats,mrr,active,city\nu1,Ada,3,149.5,true,\nu2,Alan,,0,false,Wilmslow\n",
    );
    import(&e, &[&f, "--distinct-id-column", "user_id"])
        .assert()
        .code(0);
    assert_eq!(
        props(&e, "u1"),
        json!({"name": "Ada", "seats": 3, "mrr": 149.5, "active": true})
    );
    assert_eq!(
        props(&e, "u2"),
        json!({"name": "Alan", "mrr": 0, "active": false, "city": "Wilmslow"})
    );
    // CSV with --op add.
    let f = write(dir.path(), "adds.csv", b"user_id,seats\nu1,2\n");
    import(&e, &[&f, "--distinct-id-column", "user_id", "--op", "add"])
        .assert()
        .code(0);
    assert_eq!(props(&e, "u1")["seats"], 5);
    // CSV of groups.
    let e = emulator();
    let f = write(
        dir.path(),
        "companies.csv",
        b"id,name,employees\nacme,Acme,450\n",
    );
    import(
        &e,
        &[
            &f,
            "--groups",
            "--group-key",
            "company",
            "--group-id-column",
            "id",
        ],
    )
    .assert()
    .code(0);
    let acme = &e.groups()["company"]["acme"];
    assert_eq!(
        (acme["name"].clone(), acme["employees"].clone()),
        (json!("Acme"), json!(450))
    );
    // Group NDJSON.
    let f = write(
        dir.path(),
        "groups.ndjson",
        br#"{"$group_key":"company","$group_id":"initech","$set":{"name":"Initech"}}"#,
    );
    import(&e, &[&f, "--groups"]).assert().code(0);
    assert_eq!(e.groups()["company"]["initech"]["name"], "Initech");
}

#[test]
fn report_json_matches_what_the_emulator_saw() {
    let e = emulator();
    let dir = tempfile::tempdir().unwrap();
    let mut lines = String::new();
    for i in 0..2500 {
        lines.push_str(&format!(
            "{{\"$distinct_id\":\"u{}\",\"$add\":{{\"n\":1}}}}\n",
            i % 300
        ));
    }
    lines.push_str("{\"$distinct_id\":\"bad\",\"$add\":{\"n\":\"one\"}}\n");
    let f = write(dir.path(), "many.ndjson", lines.as_bytes());
    let out = stdout_of(
        &mut import(&e, &[&f, "--report", "json", "--batch-size", "500"]),
        2,
    );
    let r = report(&out);
    let stats = e.stats();
    assert_eq!(r["records"], 2501);
    assert_eq!(r["accepted"], 2500);
    assert_eq!(r["accepted"], stats.accepted);
    assert_eq!(r["invalid"], 1);
    assert_eq!(r["rejected"], stats.rejected);
    assert_eq!(r["requests"], stats.requests);
    assert_eq!(r["not_delivered"], 0);
    for key in ["retries", "uncertain", "elapsed_s"] {
        assert!(r.get(key).is_some(), "{key}");
    }
    assert_eq!(props(&e, "u0")["n"], 9);
}

#[test]
fn the_failure_file_holds_exactly_the_bad_lines() {
    let e = emulator();
    let dir = tempfile::tempdir().unwrap();
    let mut input: Vec<u8> = Vec::new();
    input.extend_from_slice(b"\xEF\xBB\xBF{\"$distinct_id\":\"bom\",\"$set\":{\"a\":1}}\r\n"); // 1: BOM, CRLF
    input.extend_from_slice(b"{\"$distinct_id\":\"x\",\"$set\":{\"a\":\r\n"); // 2: malformed
    input.extend_from_slice(b"\r\n"); // 3: blank
    input.extend_from_slice(b"{\"$distinct_id\":\"y\",\"$add\":{\"n\":\"one\"}}\n"); // 4: wrong type
    input.extend_from_slice(b"{\"$distinct_id\":\"z\",\"$set\":{\"big\":1e999}}\n"); // 5: 1e999
    input.extend_from_slice(b"{\"$distinct_id\":\"\xff\xfe\",\"$set\":{\"a\":1}}\n"); // 6: invalid UTF-8
    input.extend_from_slice(b"{\"$set\":{\"a\":1}}\n"); // 7: missing id
    input.extend_from_slice(b"[1,2]\n"); // 8: not an object
    input.extend_from_slice(b"{\"$distinct_id\":\"good\",\"$set\":{\"a\":2}}\n"); // 9
    input.extend_from_slice(
        b"{\"$distinct_id\":\"other\",\"$token\":\"someone-else\",\"$set\":{\"a\":2}}",
    ); // 10: other token, no newline
    let f = write(dir.path(), "bad.ndjson", &input);
    let failed = dir.path().join("failed.ndjson");
    let out = stdout_of(
        &mut import(
            &e,
            &[&f, "--failed", failed.to_str().unwrap(), "--report", "json"],
        ),
        2,
    );
    let r = report(&out);
    assert_eq!(r["records"], 9);
    assert_eq!(r["accepted"], 2);
    assert_eq!(r["invalid"], 7);
    assert_eq!(r["blank_lines"], 1);
    assert_eq!(props(&e, "bom"), json!({"a": 1}));
    assert_eq!(props(&e, "good"), json!({"a": 2}));
    let entries: Vec<Value> = std::fs::read_to_string(&failed)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Unparseable lines are written when read, invalid updates when validated: sort.
    let mut lines: Vec<u64> = entries
        .iter()
        .map(|e| e["line"].as_u64().unwrap())
        .collect();
    lines.sort();
    assert_eq!(lines, [2, 4, 5, 6, 7, 8, 10]);
    for e in &entries {
        assert!(e["file"].as_str().unwrap().ends_with("bad.ndjson"));
        assert!(!e["reason"].as_str().unwrap().is_empty());
        assert_eq!(e["kind"], "invalid");
    }
    let reason = |line: u64| {
        entries.iter().find(|e| e["line"] == line).unwrap()["reason"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(reason(2).contains("malformed JSON"), "{}", reason(2));
    assert!(reason(4).contains("$add"), "{}", reason(4));
    assert!(reason(5).contains("out of range"), "{}", reason(5));
    assert!(reason(6).contains("UTF-8"), "{}", reason(6));
    assert!(reason(7).contains("$distinct_id"), "{}", reason(7));
    assert!(reason(10).contains("token"), "{}", reason(10));
    // The original record is kept as it was.
    let line4 = entries.iter().find(|e| e["line"] == 4).unwrap();
    assert_eq!(
        line4["record"],
        json!({"$distinct_id": "y", "$add": {"n": "one"}})
    );
    // So is one refused only as it was batched (read in one pass, held as its text).
    let line10 = entries.iter().find(|e| e["line"] == 10).unwrap();
    assert_eq!(
        line10["record"],
        json!({"$distinct_id": "other", "$token": "someone-else", "$set": {"a": 2}})
    );
}

#[test]
fn rejected_and_undelivered_records_are_in_the_failure_file() {
    let dir = tempfile::tempdir().unwrap();
    // The emulator rejects a group $add (allowed through the escape hatch).
    let e = emulator();
    let f = write(
        dir.path(),
        "g.ndjson",
        b"{\"$group_key\":\"c\",\"$group_id\":\"a\",\"$set\":{\"x\":1}}\n{\"$group_key\":\"c\",\"$group_id\":\"a\",\"$add\":{\"n\":1}}\n",
    );
    let failed = dir.path().join("f1.ndjson");
    import(&e, &[&f, "--groups", "--failed", failed.to_str().unwrap()])
        .assert()
        .code(2);
    let text = std::fs::read_to_string(&failed).unwrap();
    let entries: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(entries.len(), 1, "{text}");
    assert_eq!(entries[0]["line"], 2);
    assert_eq!(entries[0]["kind"], "rejected");
    // The record as it was sent, read back from its batch: never the project token.
    assert_eq!(
        entries[0]["record"],
        json!({"$group_key": "c", "$group_id": "a", "$add": {"n": 1}})
    );
    assert!(!text.contains(TOKEN), "{text}");
    // Nothing listening: every record not delivered.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let f = write(dir.path(), "u.ndjson", NDJSON.as_bytes());
    let failed = dir.path().join("f2.ndjson");
    let out = stdout_of(
        engage()
            .args([
                "import",
                &f,
                "--token",
                TOKEN,
                "--endpoint",
                &format!("http://{port}"),
                "--max-retries",
                "1",
                "--backoff-base-ms",
                "1",
            ])
            .args(["--failed", failed.to_str().unwrap(), "--report", "json"]),
        2,
    );
    assert_eq!(report(&out)["not_delivered"], 3);
    let text = std::fs::read_to_string(&failed).unwrap();
    assert_eq!(text.lines().count(), 3);
    assert!(
        text.contains("not_delivered") && text.contains("connect"),
        "{text}"
    );
    assert!(!text.contains(TOKEN), "{text}");
    for entry in text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
    {
        let line = entry["line"].as_u64().unwrap() as usize;
        let input: Value = serde_json::from_str(NDJSON.lines().nth(line - 1).unwrap()).unwrap();
        assert_eq!(entry["record"], input, "line {line}");
    }
}

#[test]
fn exit_codes() {
    let e = emulator();
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "good.ndjson", NDJSON.as_bytes());
    import(&e, &[&good]).assert().code(0);
    let bad = write(dir.path(), "bad.ndjson", b"nope\n");
    import(&e, &[&bad]).assert().code(2);
    // Fatal: bad flags, unreadable input, no token, a refused token (401).
    engage()
        .args(["import", &good, "--batch-size", "5000", "--token", "t"])
        .assert()
        .code(1);
    engage().args(["import", "--no-such-flag"]).assert().code(1);
    import(&e, &["/no/such/file.ndjson"]).assert().code(1);
    engage()
        .args(["import", &good, "--endpoint", &e.base_url()])
        .assert()
        .code(1);
    let out = stdout_of(
        engage().args([
            "import",
            &good,
            "--endpoint",
            &e.base_url(),
            "--token",
            "wrong",
            "--report",
            "json",
        ]),
        1,
    );
    let r = report(&out);
    assert_eq!(r["not_delivered"], 3);
    assert!(r["fatal"].as_str().unwrap().contains("401"));
    // Help is not an error.
    engage().args(["import", "--help"]).assert().code(0);
}

#[test]
fn empty_inputs() {
    let e = emulator();
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "empty.ndjson", b"");
    let out = stdout_of(&mut import(&e, &[&f, "--report", "json"]), 0);
    assert_eq!(report(&out)["records"], 0);
    let f = write(dir.path(), "empty.json", b"[]");
    import(&e, &[&f]).assert().code(0);
}

#[test]
fn at_most_once_leaves_no_duplicate_batch_under_faults() {
    let e = Emulator::start(EmulatorConfig::default().token(TOKEN).faults(FaultConfig {
        fail_rate: 0.3,
        kinds: vec![
            FaultKind::AppliedThen500,
            FaultKind::Close,
            FaultKind::Unavailable,
            FaultKind::InternalError,
        ],
        seed: 11,
        ..FaultConfig::default()
    }))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut lines = String::new();
    for i in 0..3000 {
        match i % 3 {
            0 => lines.push_str(&format!(
                "{{\"$distinct_id\":\"u{}\",\"$add\":{{\"n\":1}}}}\n",
                i % 50
            )),
            1 => lines.push_str(&format!(
                "{{\"$distinct_id\":\"u{}\",\"$append\":{{\"log\":{i}}}}}\n",
                i % 50
            )),
            _ => lines.push_str(&format!(
                "{{\"$distinct_id\":\"u{}\",\"$set\":{{\"last\":{i}}}}}\n",
                i % 50
            )),
        }
    }
    let f = write(dir.path(), "adds.ndjson", lines.as_bytes());
    let out = import(
        &e,
        &[
            &f,
            "--at-most-once",
            "--batch-size",
            "100",
            "--report",
            "json",
        ],
    )
    .assert()
    .get_output()
    .stdout
    .clone();
    let r = report(&out);
    let stats = e.stats();
    assert!(stats.faults_injected > 3, "{stats:?}");
    assert_eq!(stats.duplicate_batches, 0, "{stats:?}");
    assert_eq!(r["uncertain"], 0);
    assert_eq!(r["records"], 3000);
    let settled = ["accepted", "rejected", "invalid", "not_delivered"]
        .iter()
        .map(|k| r[k].as_u64().unwrap())
        .sum::<u64>();
    assert_eq!(settled, 3000, "{r}");
}

#[test]
fn dry_run_writes_bodies_of_at_most_2000_records() {
    let dir = tempfile::tempdir().unwrap();
    let mut lines = String::new();
    for i in 0..4500 {
        lines.push_str(&format!(
            "{{\"$distinct_id\":\"u{i}\",\"$set\":{{\"i\":{i}}}}}\n"
        ));
    }
    lines.push_str("{\"$distinct_id\":\"\",\"$set\":{}}\n");
    let f = write(dir.path(), "dry.ndjson", lines.as_bytes());
    let out_dir = dir.path().join("bodies");
    let out = stdout_of(
        engage().args([
            "import",
            &f,
            "--dry-run",
            "--out",
            out_dir.to_str().unwrap(),
            "--token",
            TOKEN,
            "--report",
            "json",
        ]),
        2,
    );
    let r = report(&out);
    assert_eq!(r["records"], 4501);
    assert_eq!(r["invalid"], 1);
    // The dry run goes through the same pipeline, answered locally: the requests it would send.
    assert_eq!(r["requests"], 3);
    let mut files: Vec<_> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 3);
    let mut total = 0;
    for path in files {
        let body: Vec<Value> = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert!(body.len() <= 2000);
        assert!(body.iter().all(|r| r["$token"] == TOKEN));
        total += body.len();
    }
    assert_eq!(total, 4500);
}

/// A dry run of `file`: its report, its bodies (in order) and its failure entries (the
/// record, kind and reason of each, sorted).
fn dry_run_of(dir: &std::path::Path, file: &str, name: &str) -> (Value, Vec<Value>, Vec<String>) {
    let out_dir = dir.join(format!("{name}-bodies"));
    let failed = dir.join(format!("{name}-failed.ndjson"));
    let out = stdout_of(
        engage().args([
            "import",
            file,
            "--dry-run",
            "--batch-size",
            "300",
            "--out",
            out_dir.to_str().unwrap(),
            "--failed",
            failed.to_str().unwrap(),
            "--token",
            TOKEN,
            "--report",
            "json",
        ]),
        2,
    );
    let mut files: Vec<_> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let bodies = files
        .iter()
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .collect();
    let mut failures: Vec<String> = std::fs::read_to_string(&failed)
        .unwrap()
        .lines()
        .map(|l| {
            let e: Value = serde_json::from_str(l).unwrap();
            format!("{} {} {}", e["record"], e["kind"], e["reason"])
        })
        .collect();
    failures.sort();
    (report(&out), bodies, failures)
}

#[test]
fn ndjson_lines_sent_as_text_make_the_bodies_their_parsed_updates_make() {
    // NDJSON lines of updates go from the reader's buffer straight into bodies; the same
    // records in a JSON array are parsed into updates (on a second core, in a dry run).
    // Both must make the same requests and report the same failures.
    let dir = tempfile::tempdir().unwrap();
    let mut records = Vec::new();
    for i in 0..2_500u32 {
        let p = i % 97;
        records.push(match i % 9 {
            0 => format!(r#"{{"$token": "someone-else", "$distinct_id": "u{p}", "$set": {{"i": {i}}}}}"#),
            1 => format!(r#"{{"$distinct_id": "u{p}", "$add": {{"n": "not a number"}}}}"#),
            2 => format!(r#"{{"$distinct_id": "u{p}", "$set": {{"long": "{}"}}}}"#, "x".repeat(300)),
            3 => format!(r#"{{"$token": "{TOKEN}", "$distinct_id": "u{p}", "$add": {{"n": {i}}}, "$ip": "203.0.113.9"}}"#),
            4 => format!(r#"{{"$distinct_id":"u{p}","$union":{{"tags":["a","b"]}},"$ignore_time":true}}"#),
            5 => format!(r#"{{"$distinct_id": "u{p}", "$set": {{"name": "Zoë \"{i}\"", "x": 1.5e3}}}}"#),
            _ => format!(r#"{{ "$distinct_id" : "u{p}" , "$set" : {{ "i" : {i}, "plan" : "pro" }} }}"#),
        });
    }
    let ndjson = records.join("\n") + "\n";
    let array = format!("[\n{}\n]\n", records.join(",\n"));
    let as_text = dry_run_of(
        dir.path(),
        &write(dir.path(), "in.ndjson", ndjson.as_bytes()),
        "text",
    );
    let as_updates = dry_run_of(
        dir.path(),
        &write(dir.path(), "in.json", array.as_bytes()),
        "array",
    );
    for key in ["records", "accepted", "invalid", "warnings", "requests"] {
        assert_eq!(as_text.0[key], as_updates.0[key], "{key}");
    }
    assert_eq!(as_text.0["records"], 2_500);
    assert!(
        as_text.0["invalid"].as_u64().unwrap() > 500,
        "{}",
        as_text.0
    );
    assert!(
        as_text.0["warnings"].as_u64().unwrap() > 200,
        "{}",
        as_text.0
    );
    assert_eq!(as_text.1.len(), as_updates.1.len());
    for (a, b) in as_text.1.iter().zip(&as_updates.1) {
        assert_eq!(a, b);
    }
    assert_eq!(as_text.2, as_updates.2);
    assert_eq!(
        as_text.2.len() as u64,
        as_text.0["invalid"].as_u64().unwrap()
    );
}

#[test]
fn max_records_counts_every_line_read_across_files() {
    // Lines go to the importer as text; --max-records still counts what is read, blank and
    // bad lines included, and stops in the middle of the second file.
    let dir = tempfile::tempdir().unwrap();
    let a = write(
        dir.path(),
        "a.ndjson",
        b"{\"$distinct_id\":\"a1\",\"$set\":{\"n\":1}}\n\nnot json\n",
    );
    let b = write(
        dir.path(),
        "b.ndjson",
        b"{\"$distinct_id\":\"b1\",\"$set\":{\"n\":1}}\n{\"$distinct_id\":\"b2\",\"$set\":{\"n\":1}}\n",
    );
    let e = emulator();
    let out = stdout_of(
        &mut import(&e, &[&a, &b, "--max-records", "4", "--report", "json"]),
        2,
    );
    let r = report(&out);
    assert_eq!(r["records"], 3, "{r}");
    assert_eq!(r["accepted"], 2, "{r}");
    assert_eq!(r["blank_lines"], 1, "{r}");
    assert!(e.profile("a1").is_some() && e.profile("b1").is_some());
    assert!(e.profile("b2").is_none(), "read past --max-records");
}

#[test]
fn help_reads_like_a_man_page() {
    let out = stdout_of(engage().args(["import", "--help"]), 0);
    let text = String::from_utf8_lossy(&out);
    for needle in [
        "--concurrency",
        "[default: auto]",
        "--batch-size",
        "[default: 2000]",
        "--at-most-once",
        "EXAMPLES",
        "Exit status",
    ] {
        assert!(text.contains(needle), "missing {needle:?}");
    }
    let out = stdout_of(engage().args(["serve", "--help"]), 0);
    let text = String::from_utf8_lossy(&out);
    for needle in [
        "--fail-rate",
        "EXAMPLES",
        "--latency-ms",
        "--rate-limit-mb-per-min",
    ] {
        assert!(text.contains(needle), "serve --help: missing {needle:?}");
    }
}

#[test]
fn serve_prints_its_address_first() {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("engage"))
        .args(["serve", "--token", "t"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("listening on http://127.0.0.1:"), "{line}");
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn csv_rows_that_do_not_fit_the_header_and_look_alike_cells() {
    let e = emulator();
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "odd.csv",
        b"user_id,name,zip,phone,big\nu1,Ada,00501,+15551234567,12345678901234567890\nu2,Smith, John,1,2,3\n",
    );
    let failed = dir.path().join("f.ndjson");
    import(
        &e,
        &[
            &f,
            "--distinct-id-column",
            "user_id",
            "--failed",
            failed.to_str().unwrap(),
        ],
    )
    .assert()
    .code(2);
    assert_eq!(
        props(&e, "u1"),
        json!({"name": "Ada", "zip": "00501", "phone": "+15551234567", "big": "12345678901234567890"})
    );
    assert!(e.profile("u2").is_none());
    let text = std::fs::read_to_string(&failed).unwrap();
    assert!(text.contains("fields where the header has"), "{text}");
}

#[test]
fn content_after_a_json_array_is_reported() {
    let e = emulator();
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "two.json",
        br#"[{"$distinct_id":"a","$set":{"x":1}}][{"$distinct_id":"b","$set":{"x":2}}]"#,
    );
    let out = stdout_of(&mut import(&e, &[&f, "--report", "json"]), 2);
    let r = report(&out);
    assert_eq!(
        (r["accepted"].as_u64(), r["invalid"].as_u64()),
        (Some(1), Some(1))
    );
}

#[test]
fn csv_line_numbers_hold_with_crlf_and_quoted_newlines() {
    let dir = tempfile::tempdir().unwrap();
    for (name, body) in [
        ("crlf.csv", &b"user_id,note,seats\r\nu1,ok,3\r\n,missing id,2\r\nu3,\"two\r\nlines\",1\r\n,again,4\r\n"[..]),
        ("lf.csv", &b"user_id,note,seats\nu1,ok,3\n,missing id,2\nu3,\"two\nlines\",1\n,again,4\n"[..]),
    ] {
        let f = write(dir.path(), name, body);
        let failed = dir.path().join(format!("{name}.failed"));
        engage()
            .args(["import", &f, "--distinct-id-column", "user_id", "--dry-run", "--token", TOKEN])
            .args(["--failed", failed.to_str().unwrap()])
            .assert()
            .code(2);
        let lines: Vec<u64> = std::fs::read_to_string(&failed)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["line"].as_u64().unwrap())
            .collect();
        assert_eq!(lines, [3, 6], "{name}");
    }
}

#[test]
fn progress_only_when_asked_on_a_non_terminal_and_quiet_means_quiet() {
    let e = emulator();
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "p.ndjson", NDJSON.as_bytes());
    let out = import(&e, &[&f]).assert().code(0).get_output().clone();
    assert!(!String::from_utf8_lossy(&out.stderr).contains("progress:"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("records read"));
    let out = import(&e, &[&f, "--progress"])
        .assert()
        .code(0)
        .get_output()
        .clone();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("progress: 3 records") && err.contains("batches"),
        "{err}"
    );
    let out = import(&e, &[&f, "--quiet"])
        .assert()
        .code(0)
        .get_output()
        .clone();
    assert!(out.stdout.is_empty() && out.stderr.is_empty());
}

#[test]
fn completions_for_every_shell_and_man_pages_come_from_the_same_definition() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef engage"),
        ("fish", "complete -c engage"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let out = engage()
            .args(["completions", shell])
            .assert()
            .code(0)
            .get_output()
            .stdout
            .clone();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains(marker), "{shell}: {text}");
        // Flags of the import subcommand are completed too.
        assert!(text.contains("max-retry-after"), "{shell}");
    }
    let page = engage()
        .arg("man")
        .assert()
        .code(0)
        .get_output()
        .stdout
        .clone();
    let page = String::from_utf8(page).unwrap();
    assert!(page.contains(".TH engage 1"), "{page}");
    assert!(page.contains("import"), "{page}");
    let dir = tempfile::tempdir().unwrap();
    engage()
        .args(["man", "--dir"])
        .arg(dir.path())
        .assert()
        .code(0);
    let import = std::fs::read_to_string(dir.path().join("engage-import.1")).unwrap();
    assert!(import.contains("\\-\\-proxy"), "{import}");
    assert!(dir.path().join("engage-serve.1").exists());
    engage().args(["completions", "tcsh"]).assert().code(1);
}

#[test]
fn verbose_logs_one_line_per_request_on_stderr_and_never_the_token_or_properties() {
    let e = Emulator::start(EmulatorConfig::default().token("verbose-secret-token-0042")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.ndjson");
    let lines: String = (0..30)
        .map(|i| {
            format!("{{\"$distinct_id\":\"u{i}\",\"$set\":{{\"note\":\"PRIVATE-VALUE-{i}\"}}}}\n")
        })
        .collect();
    std::fs::write(&path, lines).unwrap();
    let run = |extra: &[&str], rust_log: Option<&str>| {
        let mut c = engage();
        c.arg("import")
            .arg(&path)
            .args([
                "--endpoint",
                &e.base_url(),
                "--token",
                "verbose-secret-token-0042",
            ])
            .args(["--batch-size", "10", "--report", "json"])
            .args(extra)
            .env_remove("RUST_LOG");
        if let Some(l) = rust_log {
            c.env("RUST_LOG", l);
        }
        let out = c.assert().code(0).get_output().clone();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|err| panic!("stdout is the report alone: {err}"));
        (report, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (report, log) = run(&["-v"], None);
    let requests = log
        .lines()
        .filter(|l| l.contains("engage::request: POST /engage"))
        .count();
    assert_eq!(
        requests as u64,
        report["requests"].as_u64().unwrap(),
        "{log}"
    );
    assert_eq!(requests, 3, "{log}");
    assert!(
        log.contains("records=10") && log.contains("HTTP 200 OK") && log.contains("settled"),
        "{log}"
    );
    for (report, log) in [
        run(&["-v"], None),
        run(&["-vv"], None),
        run(&["-vvv"], None),
    ] {
        assert!(!log.contains("verbose-secret-token-0042"), "{log}");
        assert!(!log.contains("PRIVATE-VALUE"), "{log}");
        assert_eq!(report["accepted"], 30);
    }
    let (_, debug) = run(&["-vv"], None);
    assert!(debug.contains("engage_core"), "{debug}");
    // RUST_LOG decides when set, even without -v.
    let (_, from_env) = run(&[], Some("engage::request=info"));
    assert_eq!(
        from_env
            .lines()
            .filter(|l| l.contains("engage::request"))
            .count(),
        3,
        "{from_env}"
    );
    let (_, quiet) = run(&[], None);
    assert!(!quiet.contains("engage::request"), "{quiet}");
}
