//! One HTTP exchange with Mixpanel: the `http::Request<Bytes>` built for a batch, and the
//! answer read back into what it means.

mod request;
mod response;

pub use request::{Region, Target, TargetError, USER_AGENT_VALUE};
pub(crate) use response::requested_retry_after;
pub use response::{Answer, FatalKind, ParseOptions, RecordFailure, parse_response, retry_after};
