//! The conformance suite on engage-async-std, once on async-std and once on smol.

use bytes::Bytes;
use engage_async_std::{AsyncStdTransport, Runtime};
use engage_conformance::{Harness, Options};
use engage_core::{
    Batch, ImportConfig, ImportEvent, ImportSummary, Report, RetryPolicy, Target, TransportError,
    Update,
};

fn build<R: Runtime>(runtime: R, options: &Options) -> AsyncStdTransport<R> {
    let mut builder = AsyncStdTransport::<R>::builder()
        .request_timeout(options.request_timeout)
        .connect_timeout(options.connect_timeout);
    if let Some(der) = &options.root_der {
        builder = builder.add_root_certificate(der.clone());
    }
    builder.build(runtime).unwrap()
}

mod on_async_std {
    use super::*;
    use engage_async_std::AsyncStd;

    struct OnAsyncStd(AsyncStdTransport<AsyncStd>);

    impl Harness for OnAsyncStd {
        const NAME: &'static str = "engage-async-std on async-std";
        fn build(options: &Options) -> Self {
            OnAsyncStd(build(AsyncStd, options))
        }
        fn send(
            &self,
            request: http::Request<Bytes>,
        ) -> Result<http::Response<Bytes>, TransportError> {
            async_std::task::block_on(self.0.send(request))
        }
        fn deliver(&self, batch: Batch, target: &Target, policy: RetryPolicy) -> Report {
            async_std::task::block_on(self.0.deliver(batch, target, policy))
        }
        fn import(
            &self,
            config: ImportConfig,
            updates: Vec<Update>,
            on_event: &mut dyn FnMut(ImportEvent),
        ) -> ImportSummary {
            async_std::task::block_on(self.0.import(config, updates, on_event))
        }
    }

    engage_conformance::conformance_suite!(OnAsyncStd);
}

mod on_smol {
    use super::*;
    use engage_async_std::Smol;

    struct OnSmol(AsyncStdTransport<Smol>);

    impl Harness for OnSmol {
        const NAME: &'static str = "engage-async-std on smol";
        fn build(options: &Options) -> Self {
            OnSmol(build(Smol, options))
        }
        fn send(
            &self,
            request: http::Request<Bytes>,
        ) -> Result<http::Response<Bytes>, TransportError> {
            smol::block_on(self.0.send(request))
        }
        fn deliver(&self, batch: Batch, target: &Target, policy: RetryPolicy) -> Report {
            smol::block_on(self.0.deliver(batch, target, policy))
        }
        fn import(
            &self,
            config: ImportConfig,
            updates: Vec<Update>,
            on_event: &mut dyn FnMut(ImportEvent),
        ) -> ImportSummary {
            smol::block_on(self.0.import(config, updates, on_event))
        }
    }

    engage_conformance::conformance_suite!(OnSmol);
}
