//! What the emulator accepts and how it answers, over real HTTP on loopback.

mod common;

use base64::Engine as _;
use common::*;
use engage_emulator::{EMULATOR_PROPERTIES, Emulator, EmulatorConfig};
use serde_json::{Value, json};

fn emulator() -> Emulator {
    Emulator::start(EmulatorConfig::default()).unwrap()
}

fn without_emulator_props(mut p: serde_json::Map<String, Value>) -> Value {
    for k in EMULATOR_PROPERTIES {
        p.remove(k);
    }
    Value::Object(p)
}

const BATCH: &str = r#"[{"$token":"t","$distinct_id":"u1","$set":{"name":"Zoë","plan":"pro+"}},{"$token":"t","$distinct_id":"u1","$add":{"n":2}},{"$token":"t","$distinct_id":"u2","$union":{"tags":["a","b?"]}}]"#;

#[test]
fn four_body_encodings_give_the_same_state() {
    let b64 = base64::engine::general_purpose::STANDARD.encode(BATCH);
    assert!(
        b64.contains('+') || b64.contains('/'),
        "exercise the alphabet: {b64}"
    );
    let unpadded = b64.trim_end_matches('=').to_owned();
    assert_ne!(unpadded, b64, "the padding case is exercised");
    let escaped: String = form_urlencoded::byte_serialize(unpadded.as_bytes()).collect();
    let mut states = Vec::new();
    type Send<'a> = Box<dyn Fn(&Emulator) -> Reply + 'a>;
    let sends: Vec<Send<'_>> = vec![
        Box::new(|e| post_json(e.addr(), "/engage?verbose=1", BATCH)),
        // Python SDK: form data=<json>, verbose and ip as form fields.
        Box::new(|e| {
            let form: String = form_urlencoded::Serializer::new(String::new())
                .append_pair("data", BATCH)
                .append_pair("verbose", "1")
                .append_pair("ip", "0")
                .finish();
            request(
                e.addr(),
                "POST",
                "/engage",
                Some("application/x-www-form-urlencoded"),
                form.as_bytes(),
            )
        }),
        // Node SDK: form data=<base64> with '+' not escaped (it arrives as a space).
        Box::new(|e| {
            let body = format!("data={b64}&verbose=1");
            request(
                e.addr(),
                "POST",
                "/engage",
                Some("application/x-www-form-urlencoded"),
                body.as_bytes(),
            )
        }),
        // GET ?data=<base64>, unpadded and percent-escaped.
        Box::new(|e| {
            get(
                e.addr(),
                &format!("/engage?data={escaped}&verbose=1&test=1&api_key=x"),
            )
        }),
    ];
    for send in sends {
        let e = emulator();
        let reply = send(&e);
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.json(), json!({"status": 1, "error": null}));
        let state: Vec<(String, Value)> = e
            .profiles()
            .into_iter()
            .map(|(k, v)| (k, without_emulator_props(v)))
            .collect();
        states.push(state);
    }
    assert_eq!(
        states[0],
        vec![
            (
                "u1".to_owned(),
                json!({"name": "Zoë", "plan": "pro+", "n": 2})
            ),
            ("u2".to_owned(), json!({"tags": ["a", "b?"]})),
        ]
    );
    assert!(states.iter().all(|s| *s == states[0]), "{states:#?}");
}

#[test]
fn a_single_object_stands_for_a_batch_of_one() {
    let e = emulator();
    let reply = post_json(
        e.addr(),
        "/engage",
        r#"{"$token":"t","$distinct_id":"solo","$set":{"a":1}}"#,
    );
    assert_eq!(reply.text(), "1");
    assert_eq!(e.profile("solo").unwrap()["a"], 1);
}

#[test]
fn answer_forms() {
    let e = emulator();
    let bad = r#"[{"$token":"t","$distinct_id":"","$set":{"a":1}}]"#;
    let good = r#"[{"$token":"t","$distinct_id":"ok","$set":{"a":1}}]"#;
    // Plain.
    assert_eq!(post_json(e.addr(), "/engage", good).text(), "1");
    assert_eq!(post_json(e.addr(), "/engage", bad).text(), "0");
    // Verbose.
    assert_eq!(
        post_json(e.addr(), "/engage?verbose=1", good).json(),
        json!({"status": 1, "error": null})
    );
    let v = post_json(e.addr(), "/engage?verbose=1", bad).json();
    assert_eq!(v["status"], 0);
    assert!(v["error"].as_str().unwrap().contains("$distinct_id"), "{v}");
    // JSONP.
    let r = post_json(e.addr(), "/engage?callback=cb", good);
    assert_eq!(r.text(), "cb(1)");
    assert_eq!(
        post_json(e.addr(), "/engage?verbose=1&callback=my.cb", good).text(),
        r#"my.cb({"error":null,"status":1})"#
    );
    // Strict, all valid.
    let r = post_json(e.addr(), "/engage?strict=1", good);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["num_records_imported"], 1);
}

#[test]
fn strict_partial_rejection_applies_the_valid_records() {
    let e = emulator();
    let body = r#"[
        {"$token":"t","$distinct_id":"a","$set":{"x":1}},
        {"$token":"t","$distinct_id":"b","$add":{"n":"one"}},
        {"$token":"t","$distinct_id":"c","$union":{"tags":[]}},
        {"$token":"t","$distinct_id":"d","$add":{"n":1e999}},
        {"$token":"t","$distinct_id":"e","$set":{"x":2},"$unset":["y"]},
        {"$distinct_id":"f","$set":{"x":3}},
        {"$token":"t","$distinct_id":"g","$set":{"x":4}}
    ]"#;
    let r = post_json(e.addr(), "/engage?strict=1&verbose=1", body);
    assert_eq!(r.status, 400);
    let v = r.json();
    assert_eq!(v["num_records_imported"], 2);
    let failed = v["failed_records"].as_array().unwrap();
    let indices: Vec<u64> = failed
        .iter()
        .map(|f| f["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indices, [1, 2, 3, 4, 5]);
    assert_eq!(failed[0]["$distinct_id"], "b");
    assert_eq!(failed[0]["field"], "n");
    assert!(failed[0]["message"].as_str().unwrap().contains("$add"));
    assert!(failed[2]["message"].as_str().unwrap().contains("NaN"));
    assert_eq!(failed[4]["field"], "$token");
    let profiles = e.profiles();
    assert_eq!(profiles.keys().collect::<Vec<_>>(), ["a", "g"]);
    // engage-core reads the answer and maps it back to the right updates.
    let opts = engage_core::exchange::ParseOptions {
        max_retry_after: std::time::Duration::from_secs(60),
        wall_now: std::time::SystemTime::now(),
    };
    let mut resp = http::Response::new(bytes::Bytes::from(r.body.clone()));
    *resp.status_mut() = http::StatusCode::BAD_REQUEST;
    match engage_core::exchange::parse_response(&resp, opts) {
        engage_core::exchange::Answer::SomeRejected { failures, imported } => {
            assert_eq!(imported, Some(2));
            assert_eq!(failures.len(), 5);
            assert_eq!(failures[0].position, Some(1));
        }
        other => panic!("{other:?}"),
    }
    let stats = e.stats();
    assert_eq!(
        (stats.records_received, stats.accepted, stats.rejected),
        (7, 2, 5)
    );
}

#[test]
fn groups_endpoint_rules() {
    let e = emulator();
    let body = r#"[
        {"$token":"t","$group_key":"company","$group_id":"acme","$set":{"plan":"pro"}},
        {"$token":"t","$group_key":"company","$group_id":"acme","$union":{"tags":["b2b"]}},
        {"$token":"t","$group_key":"company","$group_id":"acme","$add":{"n":1}},
        {"$token":"t","$group_key":"company","$group_id":"acme","$distinct_id":"u","$set":{"x":1}},
        {"$token":"t","$group_key":"company","$set":{"x":1}}
    ]"#;
    let v = post_json(e.addr(), "/groups?strict=1", body).json();
    let failed: Vec<(u64, String)> = v["failed_records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["index"].as_u64().unwrap(),
                f["message"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(failed.iter().map(|f| f.0).collect::<Vec<_>>(), [2, 3, 4]);
    assert!(failed[0].1.contains("/groups"), "{failed:?}");
    assert!(failed[1].1.contains("$distinct_id"));
    let groups = e.groups();
    let acme = without_emulator_props(groups["company"]["acme"].clone());
    assert_eq!(acme, json!({"plan": "pro", "tags": ["b2b"]}));
    assert_eq!(
        get(e.addr(), "/_emulator/groups").json()["company"]["acme"]["plan"],
        "pro"
    );
}

#[test]
fn token_check() {
    let e = Emulator::start(EmulatorConfig::default().token("right")).unwrap();
    let r = post_json(
        e.addr(),
        "/engage",
        r#"[{"$token":"right","$distinct_id":"a","$set":{"x":1}},{"$token":"wrong","$distinct_id":"b","$set":{"x":1}}]"#,
    );
    assert_eq!(r.status, 401);
    let v = r.json();
    assert_eq!(v["status"], "error");
    assert!(v["error"].as_str().unwrap().contains("token"));
    assert!(e.profiles().is_empty(), "a refused request applies nothing");
    let r = post_json(
        e.addr(),
        "/engage",
        r#"[{"$token":"right","$distinct_id":"a","$set":{"x":1}}]"#,
    );
    assert_eq!(r.text(), "1");
}

#[test]
fn body_cap_and_record_limit() {
    let e = Emulator::start(EmulatorConfig::default().max_body_bytes(1000)).unwrap();
    let record = r#"{"$token":"t","$distinct_id":"a","$set":{"x":1}}"#;
    let fits = format!("[{}]", vec![record; 19].join(","));
    assert!(fits.len() <= 1000);
    assert_eq!(post_json(e.addr(), "/engage", &fits).status, 200);
    let over = format!("[{}]", vec![record; 21].join(","));
    assert!(over.len() > 1000 && over.len() < 1100, "just over the cap");
    let r = post_json(e.addr(), "/engage", &over);
    assert_eq!(r.status, 413);
    assert!(r.json()["error"].as_str().unwrap().contains("1000"));
    // Without Content-Length (chunked), the cap still holds.
    let mut req = b"POST /engage HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    req.extend_from_slice(format!("{:x}\r\n{over}\r\n0\r\n\r\n", over.len()).as_bytes());
    assert_eq!(raw(e.addr(), &req).unwrap().status, 413);

    let e = emulator();
    let many = format!("[{}]", vec![record; 2001].join(","));
    let r = post_json(e.addr(), "/engage", &many);
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().contains("2000"));
    assert!(e.profiles().is_empty());
    let max = format!("[{}]", vec![record; 2000].join(","));
    assert_eq!(post_json(e.addr(), "/engage", &max).status, 200);
}

/// A body that arrives in many pieces is read whole, in order, and applied as one.
#[test]
fn a_body_sent_in_small_chunks_is_read_whole() {
    let e = emulator();
    let records: Vec<String> = (0..300)
        .map(|i| format!(r#"{{"$token":"t","$distinct_id":"u{i}","$set":{{"n":{i},"s":"é{i}"}}}}"#))
        .collect();
    let body = format!("[{}]", records.join(","));
    let mut req = b"POST /engage HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    // Chunks of 7 bytes cut characters of more than one byte in two.
    for piece in body.as_bytes().chunks(7) {
        req.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        req.extend_from_slice(piece);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let r = raw(e.addr(), &req).unwrap();
    assert_eq!((r.status, r.text()), (200, "1".to_owned()));
    let profiles = e.profiles();
    assert_eq!(profiles.len(), 300);
    for i in [0, 150, 299] {
        let p = &profiles[&format!("u{i}")];
        assert_eq!(
            (&p["n"], &p["s"]),
            (&serde_json::json!(i), &serde_json::json!(format!("é{i}")))
        );
    }
}

#[test]
fn malformed_input_gets_clear_errors_and_the_server_keeps_serving() {
    let e = emulator();
    let nested = format!("{}1{}", "[".repeat(100), "]".repeat(100));
    let deep = format!(r#"[{{"$token":"t","$distinct_id":"deep","$set":{{"x":{nested}}}}}]"#);
    let many_keys: String = {
        let props: Vec<String> = (0..100_000).map(|i| format!("\"k{i}\":{i}")).collect();
        format!(
            r#"[{{"$token":"t","$distinct_id":"wide","$set":{{{}}}}}]"#,
            props.join(",")
        )
    };
    let cases: Vec<(&str, Option<&str>, Vec<u8>, u16)> = vec![
        (
            "truncated JSON",
            Some("application/json"),
            br#"[{"$token":"t","$distinct_id":"#.to_vec(),
            400,
        ),
        (
            "invalid UTF-8",
            Some("application/json"),
            b"[{\"$token\":\"t\",\"$distinct_id\":\"\xff\xfe\",\"$set\":{}}]".to_vec(),
            400,
        ),
        ("not JSON", Some("application/json"), b"hello".to_vec(), 400),
        (
            "wrong content type",
            Some("application/xml"),
            b"<a/>".to_vec(),
            415,
        ),
        (
            "multipart",
            Some("multipart/form-data; boundary=x"),
            b"--x--".to_vec(),
            415,
        ),
        (
            "100-level nesting",
            Some("application/json"),
            deep.into_bytes(),
            200,
        ),
        (
            "100,000 keys",
            Some("application/json"),
            many_keys.into_bytes(),
            200,
        ),
    ];
    for (what, ct, body, status) in cases {
        let r = request(e.addr(), "POST", "/engage?verbose=1", ct, &body);
        assert_eq!(r.status, status, "{what}: {}", r.text());
        let v = r.json();
        if status != 200 {
            assert!(!v["error"].as_str().unwrap_or("").is_empty(), "{what}: {v}");
        } else if what == "100-level nesting" {
            // engage-core's one definition of a valid record: nesting past 32 levels is
            // refused, for typed updates, raw ones and what the emulator receives alike.
            assert_eq!(v["status"], 0, "{what}: {v}");
            assert!(
                v["error"].as_str().unwrap().contains("nested deeper"),
                "{v}"
            );
        } else {
            assert_eq!(v["status"], 1, "{what}: {v}");
        }
    }
    // 100,000 properties plus $last_seen, $geo_source and $geo_ip.
    assert_eq!(e.profile("wide").unwrap().len(), 100_000 + 3);
    // A GET without data.
    let r = get(e.addr(), "/engage?verbose=1");
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().contains("data"));
    // 1e999 fails its record only; -0 is a number.
    let r = post_json(
        e.addr(),
        "/engage?strict=1",
        r#"[{"$token":"t","$distinct_id":"z","$add":{"n":-0}},{"$token":"t","$distinct_id":"z","$set":{"big":1e999}}]"#,
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["failed_records"][0]["index"], 1);
    assert_eq!(e.profile("z").unwrap()["n"].as_f64(), Some(0.0));
    // gzip is refused.
    let r = raw(
        e.addr(),
        b"POST /engage HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: 2\r\n\r\n[]",
    )
    .unwrap();
    assert_eq!(r.status, 415);
    assert!(r.json()["error"].as_str().unwrap().contains("gzip"));
    // Still serving.
    assert_eq!(
        post_json(
            e.addr(),
            "/engage",
            r#"[{"$token":"t","$distinct_id":"after","$set":{"a":1}}]"#
        )
        .text(),
        "1"
    );
    assert!(e.profile("after").is_some());
    // Unknown routes.
    assert_eq!(get(e.addr(), "/track").status, 404);
}

#[test]
fn a_half_sent_body_times_out_without_hurting_other_clients() {
    use std::io::{Read, Write};
    let e = Emulator::start(
        EmulatorConfig::default().body_timeout(std::time::Duration::from_millis(500)),
    )
    .unwrap();
    let mut hanging = std::net::TcpStream::connect(e.addr()).unwrap();
    hanging
        .write_all(b"POST /engage HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n[{\"$tok")
        .unwrap();
    // Another client is served meanwhile.
    let r = post_json(
        e.addr(),
        "/engage",
        r#"[{"$token":"t","$distinct_id":"other","$set":{"a":1}}]"#,
    );
    assert_eq!(r.text(), "1");
    // The hanging request is answered 408 after the timeout.
    hanging
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut buf = Vec::new();
    let _ = hanging.read_to_end(&mut buf);
    let reply = parse(&buf).unwrap();
    assert_eq!(reply.status, 408);
    assert!(e.profile("other").is_some());
}

#[test]
fn dropping_the_handle_shuts_the_server_down() {
    let e = emulator();
    let addr = e.addr();
    assert!(std::net::TcpStream::connect(addr).is_ok());
    drop(e);
    assert!(std::net::TcpStream::connect(addr).is_err());
}

#[test]
fn inspection_api_over_http() {
    let e = emulator();
    post_json(
        e.addr(),
        "/engage",
        r#"[{"$token":"t","$distinct_id":"a b+c","$set":{"x":1}}]"#,
    );
    assert_eq!(get(e.addr(), "/_emulator/profiles").json()["a b+c"]["x"], 1);
    assert_eq!(get(e.addr(), "/_emulator/profiles/a%20b+c").json()["x"], 1);
    assert_eq!(get(e.addr(), "/_emulator/profiles/nobody").status, 404);
    let stats = get(e.addr(), "/_emulator/stats").json();
    assert_eq!(stats["requests"], 1);
    assert_eq!(stats["accepted"], 1);
    assert_eq!(
        request(e.addr(), "POST", "/_emulator/reset", None, b"").status,
        200
    );
    assert_eq!(get(e.addr(), "/_emulator/profiles").json(), json!({}));
    assert_eq!(get(e.addr(), "/_emulator/stats").json()["requests"], 0);
}
