//! The conformance suite on engage-hyper, on a tokio runtime.

use bytes::Bytes;
use engage_conformance::{Harness, Options};
use engage_core::batch::Batch;
use engage_core::delivery::Report;
use engage_core::{
    ImportConfig, ImportEvent, ImportSummary, RetryPolicy, Target, TransportError, Update,
};
use engage_hyper::HyperTransport;

struct Hyper {
    runtime: tokio::runtime::Runtime,
    transport: HyperTransport,
}

impl Harness for Hyper {
    const NAME: &'static str = "engage-hyper";

    fn build(options: &Options) -> Self {
        let mut opts = engage_hyper::TransportOptions::default()
            .request_timeout(options.request_timeout)
            .connect_timeout(options.connect_timeout)
            .proxy(options.proxy.clone());
        if let Some(der) = &options.root_der {
            opts = opts.add_root_certificate(der.clone());
        }
        Hyper {
            runtime: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap(),
            transport: HyperTransport::with_options(opts).unwrap(),
        }
    }

    fn send(&self, request: http::Request<Bytes>) -> Result<http::Response<Bytes>, TransportError> {
        self.runtime.block_on(self.transport.send(request))
    }

    fn deliver(&self, batch: Batch, target: &Target, policy: RetryPolicy) -> Report {
        self.runtime
            .block_on(self.transport.deliver(batch, target, policy))
    }

    fn import(
        &self,
        config: ImportConfig,
        updates: Vec<Update>,
        on_event: &mut dyn FnMut(ImportEvent),
    ) -> ImportSummary {
        self.runtime
            .block_on(self.transport.import(config, updates, on_event))
    }

    fn client(&self, config: engage_core::client::ClientConfig) -> engage_core::client::Client {
        let _inside = self.runtime.enter();
        self.transport.client(config)
    }
}

engage_conformance::conformance_suite!(Hyper);
