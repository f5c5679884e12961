//! Flat records (exports' rows) in every format, the shaping options, Parquet written by
//! the test itself, and engage delete; each imported into the emulator and checked
//! profile by profile, bad records reported with their line (row) and the rest imported.

use std::path::Path;
use std::sync::Arc;

mod common;
use common::{emulator_for, engage, write};
use engage_emulator::Emulator;
use serde_json::{Value, json};

const TOKEN: &str = "flat-records-token-01";

fn emulator() -> Emulator {
    emulator_for(TOKEN)
}

fn run(cmd: &str, e: &Emulator, files: &[&str], args: &[&str], code: i32) -> Value {
    let out = engage()
        .arg(cmd)
        .args(files)
        .args([
            "--endpoint",
            &e.base_url(),
            "--token",
            TOKEN,
            "--report",
            "json",
        ])
        .args(args)
        .assert()
        .code(code)
        .get_output()
        .stdout
        .clone();
    serde_json::from_slice(&out)
        .unwrap_or_else(|err| panic!("{err}: {}", String::from_utf8_lossy(&out)))
}

/// (line, reason) of every invalid record, from a failure file.
fn invalid(path: &Path) -> Vec<(u64, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["kind"] == "invalid")
        .map(|v| {
            (
                v["line"].as_u64().unwrap(),
                v["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn profile(e: &Emulator, id: &str) -> serde_json::Map<String, Value> {
    let mut p = e.profile(id).unwrap_or_else(|| panic!("no profile {id}"));
    p.retain(|k, _| !matches!(k.as_str(), "$last_seen" | "$geo_source"));
    p
}

#[test]
fn a_crm_csv_export_is_shaped_and_imported_profile_by_profile() {
    let e = emulator();
    let dir = tempfile::tempdir().unwrap();
    let csv = write(
        dir.path(),
        "crm.csv",
        "Contact ID,First_Name,Email,Company,Country,Lifetime Value,Internal Notes,Opted In\n\
         1001,Ada,ada@example.com,\"Analytical Engines, Ltd\",GB,1250.50,vip,true\n\
         1002,Grace,,Navy,US,,,false\n\
         ,Nobody,no@example.com,X,FR,1,,true\n\
         1003,Édith,edith@example.fr,,FR,00750,,\n",
    );
    let failed = dir.path().join("failed.ndjson");
    let r = run(
        "import",
        &e,
        &[&csv],
        &[
            "--id-field",
            "Contact ID",
            "--reserved-names",
            "--remove-nulls",
            "--drop",
            "Internal Notes",
            "--rename",
            "Lifetime Value=ltv",
            "--rename",
            "Opted In=opted_in",
            "--tag",
            "source=crm-2026",
            "--tag",
            "batch=7",
            "--failed",
            failed.to_str().unwrap(),
        ],
        2,
    );
    assert_eq!(
        (r["accepted"].as_u64(), r["invalid"].as_u64()),
        (Some(3), Some(1)),
        "{r}"
    );
    assert_eq!(
        profile(&e, "1001"),
        json!({"$first_name": "Ada", "$email": "ada@example.com", "Company": "Analytical Engines, Ltd",
            "$country_code": "GB", "ltv": 1250.5, "opted_in": true, "source": "crm-2026", "batch": 7})
            .as_object().unwrap().clone()
    );
    assert_eq!(
        profile(&e, "1002"),
        json!({"$first_name": "Grace", "Company": "Navy", "$country_code": "US", "opted_in": false,
            "source": "crm-2026", "batch": 7})
        .as_object()
        .unwrap()
        .clone()
    );
    // A leading zero keeps a cell text.
    assert_eq!(profile(&e, "1003")["ltv"], "00750");
    assert_eq!(profile(&e, "1003")["$first_name"], "Édith");
    let bad = invalid(&failed);
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].0, 4, "{bad:?}");
    assert!(bad[0].1.contains("Contact ID"), "{bad:?}");
}

#[test]
fn flat_and_update_records_mix_in_json_and_bad_ones_are_reported_by_line() {
    let e = emulator();
    let dir = tempfile::tempdir().unwrap();
    let ndjson = write(
        dir.path(),
        "export.ndjson",
        "{\"distinct_id\": 7, \"plan\": \"pro\", \"seats\": 3}\n\
         {\"$distinct_id\": \"u8\", \"$add\": {\"logins\": 2}}\n\
         {\"distinct_id\": 9.5, \"plan\": \"x\"}\n\
         {\"distinct_id\": \"u10\", \"plan\": null, \"$ip\": \"0\"}\n\
         {\"id\": \"nobody\", \"plan\": \"y\"}\n\
         {\"distinct_id\": \"u11\", \"plan\": \"team\"}\n",
    );
    let failed = dir.path().join("failed.ndjson");
    let r = run(
        "import",
        &e,
        &[&ndjson],
        &["--failed", failed.to_str().unwrap()],
        2,
    );
    assert_eq!(r["accepted"], 4, "{r}");
    assert_eq!(profile(&e, "7")["plan"], "pro");
    assert_eq!(profile(&e, "7")["seats"], 3);
    assert_eq!(profile(&e, "u8")["logins"], 2);
    // Without --remove-nulls a null is set as null.
    assert_eq!(profile(&e, "u10")["plan"], Value::Null);
    let bad = invalid(&failed);
    assert_eq!(
        bad.iter().map(|b| b.0).collect::<Vec<_>>(),
        [3, 5],
        "{bad:?}"
    );
    assert!(bad[0].1.contains("cannot be an id"), "{bad:?}");
    assert!(bad[1].1.contains("--id-field"), "{bad:?}");

    // The same as a JSON array, only the first three records, and as $set_once.
    let e = emulator();
    let array = write(
        dir.path(),
        "export.json",
        "[{\"distinct_id\": \"a\", \"n\": 1}, {\"distinct_id\": \"b\", \"n\": 2},\n {\"distinct_id\": \"c\", \"n\": 3}, {\"distinct_id\": \"d\", \"n\": 4}]",
    );
    let r = run(
        "import",
        &e,
        &[&array],
        &["--max-records", "3", "--op", "set-once"],
        0,
    );
    assert_eq!(r["records"], 3, "{r}");
    assert!(e.profile("d").is_none());
    run(
        "import",
        &e,
        &[&array],
        &["--op", "set-once", "--tag", "n=99"],
        0,
    );
    assert_eq!(profile(&e, "a")["n"], 1, "set_once keeps the first");
    assert_eq!(profile(&e, "d")["n"], 99);
}

#[test]
fn tsv_and_the_operations_for_flat_records() {
    let e = emulator();
    let dir = tempfile::tempdir().unwrap();
    let tsv = write(
        dir.path(),
        "scores.tsv",
        "user\tpoints\tbadge\n\"u1\"\t10\tgold\nu2\tlots\tsilver\nu3\t2.5\t\n",
    );
    let failed = dir.path().join("failed.ndjson");
    let r = run(
        "import",
        &e,
        &[&tsv],
        &[
            "--id-field",
            "user",
            "--op",
            "add",
            "--drop",
            "badge",
            "--failed",
            failed.to_str().unwrap(),
        ],
        2,
    );
    assert_eq!(r["accepted"], 2, "{r}");
    // TSV has no quoting: the quotes are part of the id.
    assert_eq!(profile(&e, "\"u1\"")["points"], 10);
    assert_eq!(profile(&e, "u3")["points"], 2.5);
    let bad = invalid(&failed);
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].0, 3);
    assert!(
        bad[0]
            .1
            .contains("$add needs a number in property \"points\""),
        "{bad:?}"
    );

    let r = run(
        "import",
        &e,
        &[&tsv],
        &[
            "--id-field",
            "user",
            "--op",
            "union",
            "--drop",
            "points",
            "--remove-nulls",
        ],
        2,
    );
    assert_eq!(r["accepted"], 2, "{r}");
    assert_eq!(profile(&e, "u2")["badge"], json!(["silver"]));

    // Group profiles from flat records.
    let groups = write(dir.path(), "companies.csv", "id,name,size\n17,Acme,250\n");
    run(
        "import",
        &e,
        &[&groups],
        &[
            "--groups",
            "--group-key",
            "company",
            "--group-id-field",
            "id",
        ],
        0,
    );
    assert_eq!(e.groups()["company"]["17"]["size"], 250);
}

fn write_parquet(path: &Path) {
    use arrow_array::builder::{ListBuilder, StringBuilder};
    use arrow_array::{
        ArrayRef, Decimal128Array, Float64Array, Int64Array, RecordBatch, StringArray, StructArray,
        TimestampMillisecondArray,
    };
    use arrow_schema::{DataType, Field};
    let ids = Int64Array::from(vec![1, 2, 3, 4]);
    let names = StringArray::from(vec![Some("Ada"), None, Some("Grace"), Some("Linus")]);
    // 2024-03-01T12:30:00Z, and null.
    let signup = TimestampMillisecondArray::from(vec![
        Some(1_709_296_200_000),
        None,
        Some(0),
        Some(1_709_296_200_000),
    ])
    .with_timezone("UTC");
    let mut tags = ListBuilder::new(StringBuilder::new());
    tags.values().append_value("beta");
    tags.values().append_value("paid");
    tags.append(true);
    tags.append(false);
    tags.append(true);
    tags.values().append_value("x");
    tags.append(true);
    let score = Float64Array::from(vec![1.5, 2.0, f64::NAN, 4.25]);
    let amount = Decimal128Array::from(vec![12345, 100, 0, 1])
        .with_precision_and_scale(10, 2)
        .unwrap();
    let city = StringArray::from(vec!["London", "Paris", "Berlin", "Oslo"]);
    let address = StructArray::from(vec![(
        Arc::new(Field::new("city", DataType::Utf8, false)),
        Arc::new(city) as ArrayRef,
    )]);
    let batch = RecordBatch::try_from_iter(vec![
        ("id", Arc::new(ids) as ArrayRef),
        ("name", Arc::new(names) as ArrayRef),
        ("signup", Arc::new(signup) as ArrayRef),
        ("tags", Arc::new(tags.finish()) as ArrayRef),
        ("score", Arc::new(score) as ArrayRef),
        ("amount", Arc::new(amount) as ArrayRef),
        ("address", Arc::new(address) as ArrayRef),
    ])
    .unwrap();
    let file = std::fs::File::create(path).unwrap();
    // Two rows per row group: the reader streams across groups.
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(2))
        .build();
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(file, batch.schema(), Some(props)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

#[test]
fn parquet_with_nulls_timestamps_lists_and_structs_round_trips() {
    let e = emulator();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.parquet");
    write_parquet(&path);
    let failed = dir.path().join("failed.ndjson");
    let r = run(
        "import",
        &e,
        &[path.to_str().unwrap()],
        &[
            "--id-field",
            "id",
            "--remove-nulls",
            "--failed",
            failed.to_str().unwrap(),
        ],
        2,
    );
    assert_eq!(
        (r["accepted"].as_u64(), r["invalid"].as_u64()),
        (Some(3), Some(1)),
        "{r}"
    );
    assert_eq!(
        profile(&e, "1"),
        json!({"name": "Ada", "signup": "2024-03-01T12:30:00", "tags": ["beta", "paid"],
            "score": 1.5, "amount": 123.45, "address": {"city": "London"}})
        .as_object()
        .unwrap()
        .clone()
    );
    // Nulls left out: no name, no signup, no tags.
    assert_eq!(
        profile(&e, "2"),
        json!({"score": 2.0, "amount": 1.0, "address": {"city": "Paris"}})
            .as_object()
            .unwrap()
            .clone()
    );
    assert_eq!(profile(&e, "4")["tags"], json!(["x"]));
    // Row 3 holds NaN: reported with its row, the rest imported.
    let bad = invalid(&failed);
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].0, 3, "{bad:?}");
    assert!(bad[0].1.contains("column \"score\""), "{bad:?}");

    // Dropping the column lets row 3 through; `engage import` reads nothing else.
    let r = run(
        "import",
        &e,
        &[path.to_str().unwrap()],
        &["--id-field", "id", "--drop", "score"],
        0,
    );
    assert_eq!(r["accepted"], 4, "{r}");
    assert_eq!(profile(&e, "3")["signup"], "1970-01-01T00:00:00");
    // Not a Parquet file: one clear error.
    let fake = write(dir.path(), "fake.parquet", "not parquet at all");
    let failed2 = dir.path().join("failed2.ndjson");
    run(
        "import",
        &e,
        &[&fake],
        &["--failed", failed2.to_str().unwrap()],
        2,
    );
    assert!(
        invalid(&failed2)[0]
            .1
            .contains("not a readable Parquet file")
    );
}

#[test]
fn delete_removes_the_listed_profiles_with_ignore_alias() {
    let e = emulator();
    let dir = tempfile::tempdir().unwrap();
    let seed = write(
        dir.path(),
        "seed.ndjson",
        (1..=5)
            .map(|i| format!("{{\"distinct_id\": \"u{i}\", \"plan\": \"x\"}}\n"))
            .collect::<String>(),
    );
    run("import", &e, &[&seed], &[], 0);
    let ids = write(dir.path(), "churned.txt", "u1\n\n  u2  \nu9\n");
    // Off a terminal, no --yes: nothing is deleted.
    engage()
        .args([
            "delete",
            &ids,
            "--endpoint",
            &e.base_url(),
            "--token",
            TOKEN,
        ])
        .assert()
        .code(1);
    assert!(e.profile("u1").is_some());
    // The dry run shows what would go out: $delete with $ignore_alias.
    let out = dir.path().join("bodies");
    let r = run(
        "delete",
        &e,
        &[&ids],
        &["--dry-run", "--out", out.to_str().unwrap()],
        0,
    );
    assert_eq!(r["records"], 3, "{r}");
    let body: Value = serde_json::from_slice(
        &std::fs::read(
            std::fs::read_dir(&out)
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .path(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        body[0],
        json!({"$token": TOKEN, "$distinct_id": "u1", "$delete": "", "$ignore_alias": true})
    );
    let r = run("delete", &e, &[&ids], &["--yes"], 0);
    assert_eq!(r["accepted"], 3, "{r}");
    assert!(e.profile("u1").is_none() && e.profile("u2").is_none());
    assert!(e.profile("u3").is_some());
    // Ids from a CSV column; --follow-aliases leaves $ignore_alias out.
    let csv = write(dir.path(), "accounts.csv", "user_id,plan\nu3,x\nu4,y\n");
    let out2 = dir.path().join("bodies2");
    run(
        "delete",
        &e,
        &[&csv],
        &[
            "--id-field",
            "user_id",
            "--follow-aliases",
            "--dry-run",
            "--out",
            out2.to_str().unwrap(),
        ],
        0,
    );
    let body: Value = serde_json::from_slice(
        &std::fs::read(
            std::fs::read_dir(&out2)
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .path(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        body[0],
        json!({"$token": TOKEN, "$distinct_id": "u3", "$delete": ""})
    );
    run(
        "delete",
        &e,
        &[&csv],
        &["--id-field", "user_id", "--yes"],
        0,
    );
    assert!(e.profile("u3").is_none() && e.profile("u4").is_none() && e.profile("u5").is_some());
    // Shaping flags have no meaning here.
    engage()
        .args([
            "delete",
            &ids,
            "--yes",
            "--tag",
            "a=b",
            "--endpoint",
            &e.base_url(),
            "--token",
            TOKEN,
        ])
        .assert()
        .code(1);
}

/// On a terminal (util-linux `script` gives one), delete asks first: "delete" goes on,
/// anything else deletes nothing. Skipped where `script` is missing.
#[test]
fn delete_asks_on_a_terminal() {
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("no `script` here: the terminal prompt is not tested");
        return;
    }
    let e = emulator();
    let dir = tempfile::tempdir().unwrap();
    let seed = write(
        dir.path(),
        "seed.ndjson",
        "{\"distinct_id\": \"u1\", \"a\": 1}\n",
    );
    run("import", &e, &[&seed], &[], 0);
    let ids = write(dir.path(), "ids.txt", "u1\n");
    let bin = assert_cmd::cargo::cargo_bin("engage");
    let attempt = |answer: &str| {
        let cmd = format!(
            "{} delete {ids} --endpoint {} --token {TOKEN} --quiet",
            bin.display(),
            e.base_url()
        );
        let out = std::process::Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write as _;
                child.stdin.take().unwrap().write_all(answer.as_bytes())?;
                child.wait_with_output()
            })
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, text) = attempt("no\n");
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("Type \"delete\" to go on"), "{text}");
    assert!(e.profile("u1").is_some());
    let (code, text) = attempt("delete\n");
    assert_eq!(code, Some(0), "{text}");
    assert!(e.profile("u1").is_none());
}
