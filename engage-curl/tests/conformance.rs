//! The conformance suite on engage-curl: the blocking client, and the Multi importer.

use bytes::Bytes;
use engage_conformance::{Harness, Options};
use engage_core::batch::Batch;
use engage_core::delivery::Report;
use engage_core::{
    ImportConfig, ImportEvent, ImportSummary, RetryPolicy, Target, TransportError, Update,
};
use engage_curl::CurlTransport;

struct Curl(CurlTransport);

impl Harness for Curl {
    const NAME: &'static str = "engage-curl";

    fn build(options: &Options) -> Self {
        let mut opts = engage_curl::TransportOptions::default()
            .request_timeout(options.request_timeout)
            .connect_timeout(options.connect_timeout)
            .proxy(options.proxy.clone());
        if let Some(der) = &options.root_der {
            opts = opts.add_root_certificate(der.clone());
        }
        Curl(CurlTransport::with_options(opts).unwrap())
    }

    fn send(&self, request: http::Request<Bytes>) -> Result<http::Response<Bytes>, TransportError> {
        self.0.send(request)
    }

    fn deliver(&self, batch: Batch, target: &Target, policy: RetryPolicy) -> Report {
        self.0.deliver(batch, target, policy)
    }

    fn import(
        &self,
        config: ImportConfig,
        updates: Vec<Update>,
        on_event: &mut dyn FnMut(ImportEvent),
    ) -> ImportSummary {
        self.0.import(config, updates, on_event)
    }

    fn client(&self, config: engage_core::client::ClientConfig) -> engage_core::client::Client {
        self.0.client(config)
    }
}

engage_conformance::conformance_suite!(Curl);
