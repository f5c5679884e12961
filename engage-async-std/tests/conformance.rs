//! The conformance suite on engage-async-std, once on async-std and once on smol.

use std::future::Future;

use bytes::Bytes;
use engage_async_std::{AsyncStd, AsyncStdTransport, Runtime, Smol};
use engage_conformance::{Harness, Options};
use engage_core::batch::Batch;
use engage_core::delivery::Report;
use engage_core::{
    ImportConfig, ImportEvent, ImportSummary, RetryPolicy, Target, TransportError, Update,
};

/// A runtime the tests can block on.
trait Exec: Runtime {
    const NAME: &'static str;
    fn block_on<F: Future>(future: F) -> F::Output;
}

impl Exec for AsyncStd {
    const NAME: &'static str = "engage-async-std on async-std";
    fn block_on<F: Future>(future: F) -> F::Output {
        async_std::task::block_on(future)
    }
}

impl Exec for Smol {
    const NAME: &'static str = "engage-async-std on smol";
    fn block_on<F: Future>(future: F) -> F::Output {
        smol::block_on(future)
    }
}

struct On<R: Exec>(AsyncStdTransport<R>);

impl<R: Exec + Default> Harness for On<R> {
    const NAME: &'static str = R::NAME;

    fn build(options: &Options) -> Self {
        let mut opts = engage_async_std::TransportOptions::default()
            .request_timeout(options.request_timeout)
            .connect_timeout(options.connect_timeout)
            .proxy(options.proxy.clone());
        if let Some(der) = &options.root_der {
            opts = opts.add_root_certificate(der.clone());
        }
        On(AsyncStdTransport::with_options(R::default(), opts).unwrap())
    }

    fn send(&self, request: http::Request<Bytes>) -> Result<http::Response<Bytes>, TransportError> {
        R::block_on(self.0.send(request))
    }

    fn deliver(&self, batch: Batch, target: &Target, policy: RetryPolicy) -> Report {
        R::block_on(self.0.deliver(batch, target, policy))
    }

    fn import(
        &self,
        config: ImportConfig,
        updates: Vec<Update>,
        on_event: &mut dyn FnMut(ImportEvent),
    ) -> ImportSummary {
        R::block_on(self.0.import(config, updates, on_event))
    }

    fn client(&self, config: engage_core::client::ClientConfig) -> engage_core::client::Client {
        self.0.client(config)
    }
}

mod on_async_std {
    use super::*;
    engage_conformance::conformance_suite!(On<AsyncStd>);
}

mod on_smol {
    use super::*;
    engage_conformance::conformance_suite!(On<Smol>);
}
