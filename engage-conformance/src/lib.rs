//! The conformance suite every engage transport runs: one set of cases, written once,
//! over the emulator and scripted loopback servers.
//!
//! A transport's test file implements [`Harness`] (blocking wrappers over its API, on its
//! own runtime) and expands [`conformance_suite!`]:
//!
//! ```ignore
//! struct MyHarness(MyTransport);
//! impl engage_conformance::Harness for MyHarness { /* … */ }
//! engage_conformance::conformance_suite!(MyHarness);
//! ```

pub mod cases;
pub mod chaos;
pub mod servers;

use std::time::Duration;

use bytes::Bytes;
use engage_core::batch::Batch;
use engage_core::client::{Client, ClientConfig};
use engage_core::delivery::Report;
use engage_core::{
    ImportConfig, ImportEvent, ImportSummary, RetryPolicy, Target, TransportError, Update,
};
use http::{Request, Response};

/// How the harness should build its transport for a case.
#[derive(Debug, Clone)]
pub struct Options {
    /// Per-request timeout.
    pub request_timeout: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// An extra trusted root certificate (DER), for the HTTPS case.
    pub root_der: Option<Vec<u8>>,
    /// The proxy. Direct by default, so that a proxy in the environment running the
    /// tests changes nothing.
    pub proxy: engage_core::delivery::Proxy,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            root_der: None,
            proxy: engage_core::delivery::Proxy::Direct,
        }
    }
}

/// A transport under test, with blocking entry points over its own runtime.
pub trait Harness: Sized {
    /// The transport's name, for messages.
    const NAME: &'static str;
    /// Builds the transport with these options.
    fn build(options: &Options) -> Self;
    /// Sends one request.
    fn send(&self, request: Request<Bytes>) -> Result<Response<Bytes>, TransportError>;
    /// Delivers one batch with the core's retry machine.
    fn deliver(&self, batch: Batch, target: &Target, policy: RetryPolicy) -> Report;
    /// Imports updates with the transport's concurrent import.
    fn import(
        &self,
        config: ImportConfig,
        updates: Vec<Update>,
        on_event: &mut dyn FnMut(ImportEvent),
    ) -> ImportSummary;
    /// Starts the transport's application client (its worker in the background).
    fn client(&self, config: ClientConfig) -> Client;
}

/// Expands to one `#[test]` per conformance case for the harness type `$h`.
#[macro_export]
macro_rules! conformance_suite {
    ($h:ty) => {
        $crate::conformance_suite!(@cases $h;
            accepted_batch_and_the_exact_request,
            emulator_applies_an_accepted_batch,
            every_header_and_body_of_error_answers,
            strict_partial_rejection_maps_to_inputs,
            retry_after_then_success,
            three_503_then_success,
            too_large_then_split,
            closed_without_answer,
            cut_off_head_is_an_io_error,
            never_answers_times_out,
            refused_port_is_a_connect_error,
            https_self_signed_refused_by_default,
            https_accepted_with_the_root,
            import_keeps_order_and_accounts,
            import_overlaps_requests_and_keeps_order,
            chaos_at_least_once,
            chaos_at_most_once,
            client_many_producers_keep_their_order_under_faults,
            client_shutdown_in_a_429_storm_returns_by_its_deadline,
            client_full_queue_hands_the_update_back,
            https_import_through_a_connect_proxy,
            proxy_credentials_are_sent_and_never_shown,
            a_refusing_proxy_is_a_clear_error,
            http_through_a_proxy_in_absolute_form
        );
    };
    (@cases $h:ty; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::cases::$case::<$h>();
            }
        )*
    };
}
