//! Hostile input and hostile peers, through the real binary: nothing destroyed, nothing
//! misreported, nothing from a server reaching the terminal raw.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use assert_cmd::Command;
mod common;
use common::{emulator_for, engage, import_with, report, write};
use engage_conformance::servers::{Reply, ScriptedServer};
use engage_emulator::{EMULATOR_PROPERTIES, Emulator, EmulatorConfig, FaultConfig, FaultKind};
use serde_json::{Value, json};

const TOKEN: &str = "hostile-token-0123456789";

fn import_to(base_url: &str, args: &[&str]) -> Command {
    import_with(base_url, TOKEN, args)
}

fn entries(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn emulator() -> Emulator {
    emulator_for(TOKEN)
}

const ONE: &str = "{\"$distinct_id\":\"a\",\"$set\":{\"x\":1}}\n";

#[test]
fn an_output_naming_an_input_is_refused_before_anything_is_written() {
    let e = emulator();
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "same.ndjson", ONE.as_bytes());
    let out = import_to(&e.base_url(), &[&input, "--failed", &input])
        .assert()
        .code(1)
        .get_output()
        .clone();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refusing to overwrite"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&input).unwrap(), ONE);
    // A hard link is the same file under another name.
    let link = dir.path().join("link.ndjson");
    std::fs::hard_link(&input, &link).unwrap();
    import_to(&e.base_url(), &[&input, "--failed", link.to_str().unwrap()])
        .assert()
        .code(1);
    assert_eq!(std::fs::read_to_string(&input).unwrap(), ONE);
    // A folder of batch files holding an input.
    engage()
        .args(["import", &input, "--dry-run", "--token", TOKEN, "--out"])
        .arg(dir.path())
        .assert()
        .code(1);
    assert_eq!(std::fs::read_to_string(&input).unwrap(), ONE);
    assert_eq!(e.stats().requests, 0, "nothing was sent");
}

fn twelve_records(with_adds: usize) -> String {
    (0..12)
        .map(|i| {
            if i < with_adds {
                format!("{{\"$distinct_id\":\"u{i}\",\"$add\":{{\"logins\":1}}}}\n")
            } else {
                format!("{{\"$distinct_id\":\"u{i}\",\"$set\":{{\"x\":{i}}}}}\n")
            }
        })
        .collect()
}

#[test]
fn a_2xx_counting_fewer_records_than_sent_is_uncertain_not_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "twelve.ndjson", twelve_records(0).as_bytes());
    let server = ScriptedServer::start(vec![Reply::http(
        200,
        &[],
        r#"{"code":200,"num_records_imported":1,"status":"OK"}"#,
    )]);
    let failed = dir.path().join("failed.ndjson");
    let out = import_to(
        &server.base_url(),
        &[
            &input,
            "--report",
            "json",
            "--failed",
            failed.to_str().unwrap(),
        ],
    )
    .assert()
    .code(2)
    .get_output()
    .stdout
    .clone();
    let r = report(&out);
    assert_eq!(r["accepted"], 0, "{r}");
    assert_eq!(r["not_delivered"], 12, "{r}");
    assert_eq!(r["not_delivered_maybe_applied"], 12, "{r}");
    let e = entries(&failed);
    assert_eq!(e.len(), 12);
    assert!(
        e[0]["reason"]
            .as_str()
            .unwrap()
            .contains("imported 1 record"),
        "{}",
        e[0]
    );
    // A strict 400 naming record 0 and counting 10 of the other 11.
    let server = ScriptedServer::start(vec![Reply::http(
        400,
        &[],
        r#"{"code":400,"status":"Bad Request","num_records_imported":10,"failed_records":[{"index":0,"field":"x","message":"bad"}]}"#,
    )]);
    let out = import_to(&server.base_url(), &[&input, "--report", "json"])
        .assert()
        .code(2)
        .get_output()
        .stdout
        .clone();
    let r = report(&out);
    assert_eq!(
        (r["accepted"].as_u64(), r["rejected"].as_u64()),
        (Some(0), Some(1))
    );
    assert_eq!(r["not_delivered_maybe_applied"], 11);
}

#[test]
fn uncertain_resends_exit_non_zero_and_are_listed() {
    let e = Emulator::start(EmulatorConfig::default().token(TOKEN).faults(FaultConfig {
        script: vec![Some(FaultKind::AppliedThen500)],
        ..FaultConfig::default()
    }))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "twelve.ndjson", twelve_records(3).as_bytes());
    let failed = dir.path().join("failed.ndjson");
    let out = import_to(
        &e.base_url(),
        &[
            &input,
            "--report",
            "json",
            "--failed",
            failed.to_str().unwrap(),
        ],
    )
    .assert()
    .code(2)
    .get_output()
    .stdout
    .clone();
    let r = report(&out);
    assert_eq!(
        (r["accepted"].as_u64(), r["uncertain"].as_u64()),
        (Some(12), Some(3))
    );
    assert_eq!(e.profile("u0").unwrap()["logins"], 2, "applied twice");
    let listed = entries(&failed);
    assert_eq!(listed.len(), 3);
    let mut lines: Vec<u64> = listed.iter().map(|x| x["line"].as_u64().unwrap()).collect();
    lines.sort();
    assert_eq!(lines, [1, 2, 3]);
    for x in &listed {
        assert_eq!(x["kind"], "uncertain_resend", "{x}");
    }
}

#[test]
fn a_closed_stdout_neither_panics_nor_changes_the_exit_status() {
    let e = emulator();
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "one.ndjson", ONE.as_bytes());
    for format in ["json", "text"] {
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("engage"))
            .args([
                "import",
                &input,
                "--report",
                format,
                "--endpoint",
                &e.base_url(),
            ])
            .args(["--token", TOKEN])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take()); // `| true`: nobody reads
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert_eq!(out.status.code(), Some(0), "{format}: {stderr}");
    }
}

#[test]
fn a_directory_as_input_stops_everything_before_anything_is_sent() {
    let e = emulator();
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "one.ndjson", ONE.as_bytes());
    let out = import_to(&e.base_url(), &[&input, dir.path().to_str().unwrap()])
        .assert()
        .code(1)
        .get_output()
        .clone();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("directory"),
        "{out:?}"
    );
    assert_eq!(e.stats().requests, 0);
}

#[test]
fn the_failure_file_is_written_as_records_settle_not_at_exit() {
    // Request 1 is answered, request 2 hangs: by then, the invalid line 1 is on disk.
    let e = Emulator::start(EmulatorConfig::default().token(TOKEN).faults(FaultConfig {
        script: vec![None, Some(FaultKind::Slow)],
        slow_ms: 60_000,
        ..FaultConfig::default()
    }))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = write(
        dir.path(),
        "in.ndjson",
        b"{\"$distinct_id\":\"a\",\"$add\":{\"n\":\"x\"}}\n{\"$distinct_id\":\"a\",\"$set\":{\"x\":1}}\n{\"$distinct_id\":\"b\",\"$set\":{\"x\":1}}\n",
    );
    let failed = dir.path().join("failed.ndjson");
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("engage"))
        .args(["import", &input, "--batch-size", "1", "--concurrency", "1"])
        .args(["--endpoint", &e.base_url(), "--token", TOKEN, "--failed"])
        .arg(&failed)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let written = loop {
        let text = std::fs::read_to_string(&failed).unwrap_or_default();
        if !text.is_empty() || std::time::Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = child.kill();
    let _ = child.wait();
    let entry: Value = serde_json::from_str(written.lines().next().unwrap_or("null")).unwrap();
    assert_eq!(entry["line"], 1, "{written:?}");
    assert_eq!(entry["kind"], "invalid");
}

#[test]
fn server_bytes_never_reach_the_terminal_raw_and_secrets_never_show() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "one.ndjson", ONE.as_bytes());
    let body = format!(
        "\u{1b}[2J\u{1b}[31mgone\u{1b}]0;title\u{7} you sent: [{{\"$token\":\"{TOKEN}\"}}]"
    );
    let server = ScriptedServer::start(vec![Reply::http(401, &[], &body)]);
    let failed = dir.path().join("failed.ndjson");
    let url = format!("http://user:hunter2@{}", server.addr());
    for report_format in ["text", "json"] {
        let out = import_to(
            &url,
            &[
                &input,
                "--report",
                report_format,
                "--failed",
                failed.to_str().unwrap(),
            ],
        )
        .assert()
        .code(1)
        .get_output()
        .clone();
        for (what, bytes) in [
            ("stdout", out.stdout.clone()),
            ("stderr", out.stderr.clone()),
            ("failure file", std::fs::read(&failed).unwrap()),
        ] {
            let text = String::from_utf8_lossy(&bytes);
            assert!(
                !bytes.contains(&0x1b) && !bytes.contains(&0x07),
                "{what}: {text:?}"
            );
            assert!(!text.contains(TOKEN), "{what} shows the token: {text}");
            assert!(
                !text.contains("hunter2"),
                "{what} shows the password: {text}"
            );
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("\\u{1b}[2J"),
            "the escape is shown escaped: {stdout}"
        );
    }
    // A base URL that does not parse is named without its password.
    let out = engage()
        .args([
            "import",
            &input,
            "--token",
            TOKEN,
            "--endpoint",
            "http://user:hunter2@[::1",
        ])
        .assert()
        .code(1)
        .get_output()
        .clone();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid base URL") && !stderr.contains("hunter2"),
        "{stderr}"
    );
}

#[test]
fn a_huge_retry_after_is_capped_and_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "one.ndjson", ONE.as_bytes());
    let server = ScriptedServer::start(vec![
        Reply::http(429, &[("Retry-After", "999999")], "{}"),
        Reply::http(429, &[("Retry-After", "999999")], "{}"),
        Reply::http(200, &[], r#"{"error":null,"status":1}"#),
    ]);
    let out = import_to(&server.base_url(), &[&input, "--max-retry-after", "1"])
        .assert()
        .code(0)
        .get_output()
        .clone();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("999999").count(), 1, "{stderr}");
    assert!(stderr.contains("--max-retry-after"), "{stderr}");
    assert_eq!(server.received().len(), 3);
}

#[test]
fn flags_that_cannot_work_are_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "one.ndjson", ONE.as_bytes());
    for cap in ["0", "10", "1023"] {
        let out = engage()
            .args([
                "import",
                &input,
                "--dry-run",
                "--token",
                TOKEN,
                "--max-body-bytes",
                cap,
            ])
            .assert()
            .code(1)
            .get_output()
            .clone();
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("between 1024"),
            "{out:?}"
        );
    }
}

#[test]
fn tokens_are_cleaned_read_from_files_and_never_sent_as_pasted() {
    let e = emulator();
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "one.ndjson", ONE.as_bytes());
    // A trailing carriage return is trimmed, with a notice.
    let out = engage()
        .args(["import", &input, "--endpoint", &e.base_url()])
        .env("MIXPANEL_TOKEN", format!("{TOKEN}\r"))
        .assert()
        .code(0)
        .get_output()
        .clone();
    assert!(String::from_utf8_lossy(&out.stderr).contains("trimmed"));
    // Inner whitespace is refused.
    engage()
        .args(["import", &input, "--endpoint", &e.base_url()])
        .env("MIXPANEL_TOKEN", "abc def")
        .assert()
        .code(1);
    // From a file, by flag or variable; the token never shows in `ps`.
    let file = write(dir.path(), "token", format!("{TOKEN}\n").as_bytes());
    engage()
        .args([
            "import",
            &input,
            "--endpoint",
            &e.base_url(),
            "--token-file",
            &file,
        ])
        .assert()
        .code(0);
    engage()
        .args(["import", &input, "--endpoint", &e.base_url()])
        .env("MIXPANEL_TOKEN_FILE", &file)
        .assert()
        .code(0);
    assert_eq!(e.stats().accepted, 3);
    engage()
        .args([
            "import",
            &input,
            "--endpoint",
            &e.base_url(),
            "--token-file",
        ])
        .arg(dir.path().join("missing"))
        .assert()
        .code(1);
}

#[test]
fn binary_input_stops_early_and_the_failure_file_stays_small() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = engage_core::rng::SplitMix64::new(7);
    let mut bytes = ONE.as_bytes().to_vec();
    while bytes.len() < 4 << 20 {
        bytes.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    let input = write(dir.path(), "random.ndjson", &bytes);
    let failed = dir.path().join("failed.ndjson");
    let out = engage()
        .args([
            "import",
            &input,
            "--dry-run",
            "--token",
            TOKEN,
            "--report",
            "json",
        ])
        .arg("--failed")
        .arg(&failed)
        .assert()
        .code(2)
        .get_output()
        .stdout
        .clone();
    let r = report(&out);
    assert_eq!(r["accepted"], 1, "{r}");
    let size = std::fs::metadata(&failed).unwrap().len();
    assert!(size < 128 * 1024, "failure file of {size} bytes");
    let listed = entries(&failed);
    assert!(
        listed.last().unwrap()["reason"]
            .as_str()
            .unwrap()
            .contains("looks binary"),
        "{:?}",
        listed.last()
    );
}

#[cfg(unix)]
#[test]
fn output_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let input = write(
        dir.path(),
        "in.ndjson",
        b"{\"$set\":{}}\n{\"$distinct_id\":\"a\",\"$set\":{\"x\":1}}\n",
    );
    let out_dir = dir.path().join("bodies");
    let failed = dir.path().join("failed.ndjson");
    engage()
        .args(["import", &input, "--dry-run", "--token", TOKEN, "--out"])
        .arg(&out_dir)
        .arg("--failed")
        .arg(&failed)
        .assert()
        .code(2);
    let body = std::fs::read_dir(&out_dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    for f in [failed, body] {
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", f.display());
    }
}

#[test]
fn a_truncated_gzip_is_reported_after_its_last_good_line() {
    let e = emulator();
    let dir = tempfile::tempdir().unwrap();
    let mut csv = b"id,n\n".to_vec();
    for i in 0..2000 {
        csv.extend_from_slice(format!("user-{i},{i}\n").as_bytes());
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&csv).unwrap();
    let whole = gz.finish().unwrap();
    let input = write(dir.path(), "cut.csv.gz", &whole[..whole.len() / 2]);
    let failed = dir.path().join("failed.ndjson");
    let out = import_to(
        &e.base_url(),
        &[
            &input,
            "--distinct-id-column",
            "id",
            "--report",
            "json",
            "--failed",
            failed.to_str().unwrap(),
        ],
    )
    .assert()
    .code(2)
    .get_output()
    .stdout
    .clone();
    let r = report(&out);
    let accepted = r["accepted"].as_u64().unwrap();
    assert!(accepted > 0, "{r}");
    let listed = entries(&failed);
    assert_eq!(listed.len(), 1, "{listed:?}");
    // Header on line 1, rows from line 2: the first unread line follows the last good one.
    assert_eq!(listed[0]["line"].as_u64(), Some(accepted + 2), "{listed:?}");
    let mut p = e.profile(&format!("user-{}", accepted - 1)).unwrap();
    for k in EMULATOR_PROPERTIES {
        p.remove(k);
    }
    assert_eq!(Value::Object(p), json!({"n": accepted - 1}));
}

#[test]
fn a_full_disk_is_named_in_the_report_and_the_exit_status() {
    if !Path::new("/dev/full").exists() {
        return;
    }
    let e = emulator();
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "in.ndjson", b"{\"$set\":{}}\n");
    let out = import_to(
        &e.base_url(),
        &[&input, "--report", "json", "--failed", "/dev/full"],
    )
    .assert()
    .code(1)
    .get_output()
    .stdout
    .clone();
    let r = report(&out);
    let errors = r["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{r}");
    assert!(errors[0].as_str().unwrap().contains("failure file"), "{r}");
}

#[cfg(target_os = "linux")]
#[test]
fn a_failure_file_cut_short_ends_on_a_whole_entry() {
    // A file size limit (ulimit -f, in 512-byte blocks), with SIGXFSZ ignored so the
    // write fails instead of killing the process: the same path as a full disk.
    let dir = tempfile::tempdir().unwrap();
    let mut input = String::new();
    for i in 0..200 {
        input.push_str(&format!(
            "{{\"$distinct_id\":\"u{i}\",\"$add\":{{\"n\":\"not a number {i}\"}}}}\n"
        ));
    }
    let input = write(dir.path(), "in.ndjson", input.as_bytes());
    let failed = dir.path().join("failed.ndjson");
    let bin = assert_cmd::cargo::cargo_bin("engage");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f 8; exec '{}' import '{}' --dry-run --token t --report json --failed '{}'",
            bin.display(),
            input,
            failed.display()
        ))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let r = report(&out.stdout);
    assert!(
        r["errors"][0].as_str().unwrap().contains("failure file"),
        "{r}"
    );
    let text = std::fs::read_to_string(&failed).unwrap();
    assert!(
        !text.is_empty() && text.len() <= 4096,
        "{} bytes",
        text.len()
    );
    assert!(
        text.ends_with('\n'),
        "ends mid-entry: {:?}",
        &text[text.len().saturating_sub(80)..]
    );
    for line in text.lines() {
        serde_json::from_str::<Value>(line).unwrap();
    }
}

#[test]
fn a_repeated_key_is_a_warning_with_its_line_and_only_the_last_value_is_sent() {
    let e = emulator();
    let dir = tempfile::tempdir().unwrap();
    let input = write(
        dir.path(),
        "repeats.ndjson",
        b"{\"$distinct_id\":\"a\",\"$set\":{\"x\":1}}\n\
          {\"$distinct_id\":\"b\",\"$set\":{\"plan\":\"pro\"},\"$set\":{\"seats\":3}}\n\
          {\"$distinct_id\":\"c\",\"$add\":{\"n\":1,\"n\":2}}\n",
    );
    let out = import_to(&e.base_url(), &[&input, "--report", "json"])
        .assert()
        .code(0)
        .get_output()
        .clone();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("repeats.ndjson:2: ") && stderr.contains("property \"$set\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("repeats.ndjson:3: ") && stderr.contains("property \"n\""),
        "{stderr}"
    );
    let r = report(&out.stdout);
    assert_eq!(r["accepted"], 3, "{r}");
    let warnings = r["reasons"]["warnings"].as_array().unwrap();
    let lines: Vec<u64> = warnings
        .iter()
        .flat_map(|w| w["examples"].as_array().unwrap())
        .map(|x| x["line"].as_u64().unwrap())
        .collect();
    assert_eq!(
        {
            let mut l = lines.clone();
            l.sort();
            l
        },
        [2, 3],
        "{r}"
    );
    // The emulator got the last value of each: the same thing it applies itself.
    let b = e.profile("b").unwrap();
    assert_eq!((b.get("plan"), b["seats"].clone()), (None, json!(3)));
    assert_eq!(e.profile("c").unwrap()["n"], 2);
    assert_eq!(
        e.stats().records_with_repeated_keys,
        0,
        "nothing repeated on the wire"
    );
}
