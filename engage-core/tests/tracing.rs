//! With the `tracing` feature: a span per batch and an event per attempt. (The workspace's
//! tests build engage-core with the feature on, through engage-conformance.)
#![cfg(feature = "tracing")]

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use engage_core::delivery::Delivery;
use engage_core::driver::{ManualClock, deliver_blocking};
use engage_core::{BatchConfig, Endpoint, RetryPolicy, Target, Token, Update, batches};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

#[derive(Default, Clone)]
struct Recorder(Arc<Mutex<Vec<String>>>);

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={:?} ", field.name(), value));
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let mut f = Fields(format!("span {} ", attrs.metadata().name()));
        attrs.record(&mut f);
        self.0.lock().unwrap().push(f.0);
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut f = Fields(format!("{} ", event.metadata().level()));
        event.record(&mut f);
        self.0.lock().unwrap().push(f.0);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn a_span_per_batch_and_an_event_per_attempt() {
    let recorder = Recorder::default();
    let lines = recorder.0.clone();
    tracing::subscriber::with_default(recorder, || {
        let batch = batches(
            BatchConfig::new(Token::new("SECRET-tok").unwrap(), Endpoint::Engage),
            [Update::user("u").add([("n", 1)])],
        )
        .next()
        .unwrap()
        .unwrap();
        let clock = ManualClock::new();
        let mut answers = vec![(429, "7"), (200, "")].into_iter();
        let report = deliver_blocking(
            Delivery::new(batch, Target::default(), RetryPolicy::default()),
            &clock,
            |_| {
                let (status, retry_after) = answers.next().unwrap();
                let mut r = http::Response::new(Bytes::from_static(b"1"));
                *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
                if !retry_after.is_empty() {
                    r.headers_mut()
                        .insert("retry-after", retry_after.parse().unwrap());
                }
                Ok(r)
            },
            |d| clock.advance(d),
        );
        assert!(report.all_accepted());
    });
    let lines = lines.lock().unwrap().clone();
    let all = lines.join("\n");
    assert!(
        lines[0].starts_with("span engage_batch") && lines[0].contains("records=1"),
        "{all}"
    );
    assert_eq!(
        lines.iter().filter(|l| l.contains("sending")).count(),
        2,
        "{all}"
    );
    assert!(lines.iter().any(|l| l.contains("status=429")), "{all}");
    assert!(
        lines.iter().any(|l| l.contains("retrying")
            && l.contains("wait_ms=7000")
            && l.contains("throttled=true")),
        "{all}"
    );
    assert!(!all.contains("SECRET"), "{all}");
}
