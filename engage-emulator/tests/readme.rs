//! Replays the README's curl session against a running emulator.

mod common;

use engage_emulator::{Emulator, EmulatorConfig};

fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    let from = text.find(start).expect(start) + start.len();
    let len = text[from..].find(end).expect(end);
    &text[from..from + len]
}

#[test]
fn the_readme_session_works_as_written() {
    let readme = include_str!("../README.md");
    let session = between(readme, "In another terminal", "(`$last_seen`");
    let target = between(session, "curl -s -X POST 'http://127.0.0.1:8480", "'");
    let body = between(session, "-d '", "'");
    let answer = between(session, "```text\n", "\n```");
    let profiles_block = &session[session.find("_emulator/profiles").unwrap()..];
    let expected_profiles = between(profiles_block, "```text\n", "\n```");

    let e = Emulator::start(EmulatorConfig::default()).unwrap();
    let r = common::post_json(e.addr(), target, body);
    assert_eq!(r.text(), answer);
    let mut got = common::get(e.addr(), "/_emulator/profiles").json();
    let mut want: serde_json::Value = serde_json::from_str(expected_profiles).unwrap();
    for v in [&mut got, &mut want] {
        for p in v.as_object_mut().unwrap().values_mut() {
            p.as_object_mut().unwrap().remove("$last_seen");
        }
    }
    assert_eq!(got, want);
}
