//! Why: every count of the summary with its reasons, the most frequent first, each with a
//! few example lines. The failure file has every record; this is what a person reads.

use std::collections::HashMap;

use engage_core::delivery::{DeliveryError, LastFailure, TransportError, TransportErrorKind};
use engage_core::validate::{ValidationError, Warning, WarningKind};
use serde_json::{Value as Json, json};

use crate::term::clean;

/// The categories, in the order the summary lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    /// Not sent: the record is not a valid update.
    Invalid,
    /// Mixpanel rejected it.
    Rejected,
    /// Not delivered.
    NotDelivered,
    /// Accepted, maybe twice.
    Uncertain,
    /// Accepted; Mixpanel truncates part of it.
    Warning,
}

impl Category {
    const ALL: [Category; 5] = [
        Category::Invalid,
        Category::Rejected,
        Category::NotDelivered,
        Category::Uncertain,
        Category::Warning,
    ];

    /// The stable key in `--report json`'s `reasons`.
    pub fn key(self) -> &'static str {
        match self {
            Category::Invalid => "invalid",
            Category::Rejected => "rejected",
            Category::NotDelivered => "not_delivered",
            Category::Uncertain => "uncertain",
            Category::Warning => "warnings",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Category::Invalid => "invalid",
            Category::Rejected => "rejected",
            Category::NotDelivered => "not delivered",
            Category::Uncertain => "uncertain",
            Category::Warning => "warnings",
        }
    }
}

/// Reasons listed per category, and example lines per reason.
const TOP: usize = 5;
const EXAMPLES: usize = 3;

#[derive(Debug, Default)]
struct Entry {
    count: u64,
    examples: Vec<(usize, u64)>,
}

/// Reasons counted as records settle.
#[derive(Debug, Default)]
pub struct Reasons {
    entries: HashMap<(Category, String), Entry>,
}

impl Reasons {
    /// Counts one record of `category` for `reason`, from `file`'s `line`.
    pub fn add(&mut self, category: Category, reason: String, file: usize, line: u64) {
        let e = self.entries.entry((category, reason)).or_default();
        e.count += 1;
        if e.examples.len() < EXAMPLES {
            e.examples.push((file, line));
        }
    }

    fn top(&self, category: Category) -> Vec<(&String, &Entry)> {
        let mut v: Vec<(&String, &Entry)> = self
            .entries
            .iter()
            .filter(|((c, _), _)| *c == category)
            .map(|((_, r), e)| (r, e))
            .collect();
        v.sort_by(|a, b| b.1.count.cmp(&a.1.count).then_with(|| a.0.cmp(b.0)));
        v
    }

    /// `{"invalid": [{"reason", "count", "examples": [{"file", "line"}]}], …}`: every
    /// category, most frequent reason first, at most five reasons (the rest summed in one
    /// entry `"other reasons"`).
    pub fn to_json(&self, files: &[String]) -> Json {
        let mut out = serde_json::Map::new();
        for category in Category::ALL {
            let top = self.top(category);
            let mut list: Vec<Json> = top
                .iter()
                .take(TOP)
                .map(|(reason, e)| {
                    json!({
                        "reason": reason,
                        "count": e.count,
                        "examples": e.examples.iter().map(|(f, l)| json!({
                            "file": files.get(*f).cloned().unwrap_or_default(),
                            "line": l,
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            let rest: u64 = top.iter().skip(TOP).map(|(_, e)| e.count).sum();
            if rest > 0 {
                list.push(json!({"reason": "other reasons", "count": rest, "examples": []}));
            }
            out.insert(category.key().to_owned(), Json::Array(list));
        }
        Json::Object(out)
    }

    /// The `Reasons` block of the text summary; empty when there is nothing to explain.
    pub fn lines(&self, files: &[String], failed_given: bool) -> Vec<String> {
        let mut out = Vec::new();
        for category in Category::ALL {
            let top = self.top(category);
            for (reason, e) in top.iter().take(TOP) {
                let where_ = e
                    .examples
                    .iter()
                    .map(|(f, l)| {
                        if files.len() > 1 {
                            format!("{}:{l}", files.get(*f).map(String::as_str).unwrap_or("?"))
                        } else {
                            l.to_string()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                let more = if e.count > e.examples.len() as u64 {
                    ", …"
                } else {
                    ""
                };
                let noun = if e.examples.len() == 1 {
                    "line"
                } else {
                    "lines"
                };
                out.push(format!(
                    "  {} {}: {reason} ({noun} {where_}{more})",
                    category.label(),
                    e.count
                ));
            }
            let rest: u64 = top.iter().skip(TOP).map(|(_, e)| e.count).sum();
            if rest > 0 {
                out.push(format!("  {} {rest}: other reasons", category.label()));
            }
        }
        if !out.is_empty() {
            out.insert(0, "Reasons".to_owned());
            if !failed_given {
                out.push("  (every record and its reason: --failed FILE)".to_owned());
            }
        }
        out
    }
}

/// The part of an error message worth a summary: after the last `": "` (hyper and curl
/// chain their causes), without a trailing position.
fn cause(message: &str) -> String {
    let tail = message.rsplit(": ").next().unwrap_or(message);
    clean(tail.trim())
}

/// A transport failure in a few words, with the server it concerns.
pub fn transport(e: &TransportError, server: &str) -> String {
    let c = cause(e.message());
    match e.kind() {
        TransportErrorKind::Connect => format!("could not connect to {server}: {c}"),
        TransportErrorKind::Timeout => format!("no answer in time from {server}"),
        TransportErrorKind::Tls => format!("TLS failed with {server}: {c}"),
        TransportErrorKind::Io => format!("connection to {server} lost: {c}"),
        TransportErrorKind::Protocol => format!("{server} did not speak HTTP: {c}"),
        // The message names the proxy and its answer: keep it whole.
        TransportErrorKind::Proxy => clean(e.message()),
        _ => format!("{server}: {c}"),
    }
}

fn last(l: &LastFailure, server: &str) -> String {
    match l {
        LastFailure::Status { status, .. } => format!("HTTP {status}"),
        LastFailure::Transport(e) => transport(e, server),
        _ => "failed".to_owned(),
    }
}

/// Why a record was not delivered, in a few words.
pub fn not_delivered(e: &DeliveryError, maybe_applied: bool, server: &str) -> String {
    let why = match e {
        DeliveryError::Exhausted { last: l, .. } => format!("{} (retries spent)", last(l, server)),
        DeliveryError::BudgetExceeded { last: l, .. } => {
            format!("{} (time budget spent)", last(l, server))
        }
        DeliveryError::Refused { status, body, .. } => {
            let excerpt: String = clean(&String::from_utf8_lossy(body))
                .chars()
                .take(80)
                .collect();
            format!("refused with HTTP {status}: {excerpt}")
        }
        DeliveryError::TooLarge { .. } => "too large for the server even alone (413)".to_owned(),
        DeliveryError::UncertainResendRefused { .. } => {
            "not resent (--at-most-once) after a failure that may have applied it".to_owned()
        }
        DeliveryError::Transport(t) => transport(t, server),
        DeliveryError::Stopped => "the import stopped before it was sent".to_owned(),
        DeliveryError::Abandoned => "in flight when the import stopped".to_owned(),
        DeliveryError::CountMismatch { .. } => {
            "the answer counted fewer records than it did not reject".to_owned()
        }
        DeliveryError::UnmappedRejections { .. } => {
            "the answer rejected records without saying which".to_owned()
        }
        other => clean(&other.to_string()),
    };
    if maybe_applied {
        format!("{why}; may have been applied")
    } else {
        why
    }
}

/// Why a record is invalid, without what differs from record to record.
pub fn invalid(e: &ValidationError) -> String {
    let problem = e.problem.to_string();
    match &e.property {
        // "missing $distinct_id" names its key already; a property is always named.
        Some(p) if !(p.starts_with('$') && problem.contains(p.as_str())) => {
            let shown: String = p.chars().take(40).collect();
            clean(&format!("property {shown:?}: {problem}"))
        }
        _ => clean(&problem),
    }
}

/// A reason read from the input (a line that is not an update), without positions.
pub fn unreadable(reason: &str) -> String {
    let head = reason.split(": ").next().unwrap_or(reason);
    clean(head)
}

/// What Mixpanel will truncate, or what the record loses.
pub fn warning(w: &Warning) -> String {
    let shown: String = w.property.chars().take(40).collect();
    match w.kind {
        WarningKind::NameTooLong { .. } => clean(&format!(
            "property name {shown:?} over 255 characters (Mixpanel truncates it)"
        )),
        WarningKind::StringTooLong { .. } => clean(&format!(
            "a string in {shown:?} over 255 bytes (Mixpanel truncates it)"
        )),
        WarningKind::RepeatedKey => clean(&format!(
            "a key repeated in {shown:?}: only the last value is sent, the others are lost"
        )),
        _ => clean(&w.to_string()),
    }
}

/// Why Mixpanel rejected a record.
pub fn rejected(field: Option<&str>, message: &str) -> String {
    match field {
        Some(f) => clean(&format!("{message} (field {f})")),
        None => clean(message),
    }
}
