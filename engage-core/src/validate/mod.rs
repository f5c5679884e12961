//! What a valid record is: the rules (one function each, in [`rules`]), the problems and
//! warnings they report, and [`check_record`] for records in JSON form.

pub(crate) mod check;
mod parse;
mod problem;
pub mod rules;

pub(crate) use check::raw_profile;
pub use check::{CheckedRecord, check_record};
pub use parse::{ParsedRecord, parse_record};
pub use problem::{Problem, RecordProblem, ValidationError, Warning, WarningKind};
pub use rules::GroupOperations;
