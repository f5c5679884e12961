//! The emulator reads ordinary records with engage-core's one-pass reader and the rest
//! with the full parser. Its answers and its state must not depend on which: the same
//! generated records (valid and not, every operation, users and groups, modifiers) are
//! sent to two emulators, to one as compact JSON (read in one pass) and to the other with
//! every `$` key written as `\u0024` (which the reader leaves to the full parser), and
//! every answer, every profile and every group must come out the same.

mod common;

use common::*;
use engage_core::Update;
use engage_core::model::OpKind;
use engage_emulator::{Emulator, EmulatorConfig};
use serde_json::{Value, json};

/// A small deterministic generator (xorshift).
struct Draw(u64);

impl Draw {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.next(from.len() as u64) as usize]
    }

    fn scalar(&mut self) -> Value {
        match self.next(6) {
            0 => json!(self.next(1000)),
            1 => json!(self.next(1000) as f64 / 8.0),
            2 => json!(self.pick(&["pro", "free", "Malmö", "said \"hi\"", "a\\b", "😀"])),
            3 => json!(self.next(2) == 0),
            4 => Value::Null,
            _ => json!(-(self.next(50) as i64)),
        }
    }

    fn value(&mut self) -> Value {
        match self.next(8) {
            0 => json!([self.scalar(), self.scalar()]),
            1 => json!({"x": self.scalar(), "y": [self.scalar()]}),
            _ => self.scalar(),
        }
    }

    fn payload(&mut self, op: &str) -> Value {
        let names = ["a", "b", "c", "$name", "tags"];
        let mut props = serde_json::Map::new();
        for _ in 0..1 + self.next(3) {
            let name = self.pick(&names).to_owned();
            let v = match op {
                "$add" if self.next(10) > 0 => json!(self.next(100) as i64 - 20),
                "$add" => json!("one"),
                "$union" if self.next(10) > 0 => json!([self.pick(&["x", "y", "z"]), self.next(3)]),
                "$union" => json!([]),
                _ => self.value(),
            };
            props.insert(name, v);
        }
        match op {
            "$unset" => json!([self.pick(&names), self.pick(&names)]),
            "$delete" => json!(""),
            _ => Value::Object(props),
        }
    }

    fn record(&mut self, time: u64, groups: bool) -> Value {
        // Groups: the six operations /groups documents, and $add, which it refuses.
        let ops: Vec<&str> = OpKind::ALL
            .iter()
            .filter(|k| !groups || k.on_groups() || **k == OpKind::Add)
            .map(|k| k.key())
            .collect();
        let op = self.pick(&ops);
        let mut r = serde_json::Map::new();
        if self.next(30) > 0 {
            r.insert("$token".into(), json!("tok"));
        }
        if groups {
            r.insert("$group_key".into(), json!("company"));
            r.insert("$group_id".into(), json!(format!("g{}", self.next(6))));
        } else {
            r.insert("$distinct_id".into(), json!(format!("u{}", self.next(20))));
        }
        r.insert(op.into(), self.payload(op));
        r.insert("$time".into(), json!(time));
        match self.next(6) {
            0 => {
                r.insert("$ip".into(), json!("0"));
            }
            1 => {
                r.insert("$ip".into(), json!("203.0.113.9"));
            }
            2 => {
                r.insert("$ignore_time".into(), json!(true));
            }
            3 if self.next(5) == 0 => {
                r.insert("bogus".into(), json!(1));
            }
            _ => {}
        }
        Value::Object(r)
    }
}

#[test]
fn answers_and_state_do_not_depend_on_how_a_record_was_read() {
    let config = || EmulatorConfig::default().token("tok");
    let (one_pass, full) = (
        Emulator::start(config()).unwrap(),
        Emulator::start(config()).unwrap(),
    );
    let mut draw = Draw(0x9E37_79B9_7F4A_7C15);
    let (mut time, mut taken, mut total) = (1_700_000_000_000u64, 0, 0);
    for batch in 0..40 {
        let groups = batch % 4 == 3;
        let records: Vec<Value> = (0..50)
            .map(|_| {
                time += 1 + draw.next(5000);
                draw.record(time, groups)
            })
            .collect();
        let compact: Vec<String> = records.iter().map(Value::to_string).collect();
        taken += compact
            .iter()
            .filter(|r| Update::from_json_fast(r).is_some())
            .count();
        total += compact.len();
        let body = format!("[{}]", compact.join(","));
        let escaped = body.replace("\"$", "\"\\u0024");
        let raws: Vec<&serde_json::value::RawValue> = serde_json::from_str(&escaped).unwrap();
        assert!(
            raws.iter()
                .all(|r| Update::from_json_fast(r.get()).is_none())
        );
        let path = if groups { "/groups" } else { "/engage" };
        for query in ["?strict=1&ip=0", "?verbose=1", ""] {
            let target = format!("{path}{query}");
            // Each emulator gets each batch once per query form: the state keeps both
            // alike, the answers are compared pairwise.
            let a = post_json(one_pass.addr(), &target, &body);
            let b = post_json(full.addr(), &target, &escaped);
            assert_eq!(a.status, b.status, "{target}: {} / {}", a.text(), b.text());
            assert_eq!(a.text(), b.text(), "{target}");
        }
    }
    assert!(taken * 2 > total, "the reader took {taken} of {total}");
    assert!(!one_pass.profiles().is_empty());
    assert_eq!(one_pass.profiles(), full.profiles());
    assert_eq!(one_pass.groups(), full.groups());
    let (a, b) = (one_pass.stats(), full.stats());
    assert_eq!(a.records_received, b.records_received);
    assert_eq!(a.rejected, b.rejected);
}
