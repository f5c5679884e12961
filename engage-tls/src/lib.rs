//! The rustls side shared by engage's rustls transports (engage-hyper, engage-async-std):
//! the client configuration (ring provider, safe default protocol versions, webpki roots,
//! plus the system's with `native-roots`, plus the roots of the
//! [`TransportOptions`]), and the one test of
//! whether an error is a TLS failure.
//!
//! ```
//! use engage_core::delivery::TransportOptions;
//! let config = engage_tls::client_config(&TransportOptions::default().only_added_roots(true)).unwrap();
//! assert!(config.alpn_protocols.is_empty());
//! let refused = std::io::Error::other(rustls::Error::General("bad certificate".into()));
//! assert!(engage_tls::is_tls_error(&refused));
//! assert!(!engage_tls::is_tls_error(&std::io::Error::from(std::io::ErrorKind::ConnectionRefused)));
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

use std::sync::Arc;

use engage_core::delivery::TransportOptions;

/// A transport could not be set up: its TLS configuration or its proxy.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A root certificate could not be added.
    #[error("invalid root certificate: {0}")]
    InvalidRoot(#[source] rustls::Error),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[source] rustls::Error),
    /// The proxy setting cannot be used.
    #[error(transparent)]
    Proxy(#[from] engage_proxy::ProxyError),
}

/// A client configuration trusting the webpki roots (and the system's, with the
/// `native-roots` feature) and `options.extra_roots`, or only those with
/// `options.only_added_roots`.
pub fn client_config(options: &TransportOptions) -> Result<rustls::ClientConfig, BuildError> {
    let mut store = rustls::RootCertStore::empty();
    if !options.only_added_roots {
        store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        #[cfg(feature = "native-roots")]
        for cert in rustls_native_certs::load_native_certs().certs {
            // A system certificate rustls cannot use is skipped, as browsers do.
            let _ = store.add(cert);
        }
    }
    for der in &options.extra_roots {
        store
            .add(rustls::pki_types::CertificateDer::from(der.clone()))
            .map_err(BuildError::InvalidRoot)?;
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(BuildError::Tls)?
    .with_root_certificates(store)
    .with_no_client_auth())
}

/// Whether `e`, or anything in its chain of sources, is a rustls error: a TLS failure that
/// retrying will not heal (an untrusted certificate, a handshake refused). rustls errors
/// often arrive wrapped in `std::io::Error`; both the chain and the wrapped error are read.
pub fn is_tls_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(err) = next {
        if err.is::<rustls::Error>() {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && is_tls_error(inner)
        {
            return true;
        }
        next = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_roots_are_refused() {
        let options = TransportOptions::default().add_root_certificate(vec![1, 2, 3]);
        assert!(matches!(
            client_config(&options),
            Err(BuildError::InvalidRoot(_))
        ));
    }

    #[test]
    fn tls_errors_are_found_anywhere_in_the_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("connect failed")]
        struct Outer(#[source] std::io::Error);
        let deep = Outer(std::io::Error::other(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        )));
        assert!(is_tls_error(&deep));
        let other = Outer(std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert!(!is_tls_error(&other));
    }
}
