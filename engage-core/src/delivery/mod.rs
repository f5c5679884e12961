//! Delivering batches: the retry state machine for one batch ([`Delivery`]), the import
//! scheduler over many ([`Importer`]), and what a transport reports when it gets no answer.
//! Deterministic: the time is an input, nothing here reads a clock or does I/O.

mod limiter;
mod options;
mod retry;
mod scheduler;
mod transport;

pub use limiter::{AutoConcurrency, Concurrency};
pub use options::{DEFAULT_MAX_RESPONSE_BYTES, Proxy, TransportOptions};
pub use retry::{
    Action, Delivery, DeliveryError, LastFailure, RecordOutcome, RecordReport, Report, RetryPolicy,
};
pub use scheduler::{
    Attempt, DEFAULT_BUFFER_BYTES, Decision, Feed, FeedFrom, FlushId, ImportAction, ImportConfig,
    ImportEvent, ImportItem, ImportSummary, Importer, JsonPush, Next, READ_BURST, RequestId, Route,
    Sending, Source,
};
pub use transport::{TransportError, TransportErrorKind};
