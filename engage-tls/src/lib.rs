//! The rustls client configuration shared by engage's rustls transports: ring provider,
//! safe default protocol versions, webpki roots (plus the system's with `native-roots`),
//! and extra roots for private proxies and tests.
//!
//! ```
//! let mut roots = engage_tls::Roots::default();
//! assert!(roots.is_default());
//! roots.only_added(true);
//! let config = engage_tls::client_config(&roots).unwrap();
//! assert!(config.alpn_protocols.is_empty());
//! ```

use std::sync::Arc;

/// The TLS setup could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A root certificate could not be added.
    #[error("invalid root certificate: {0}")]
    InvalidRoot(#[source] rustls::Error),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[source] rustls::Error),
}

/// Which certificates to trust.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Roots {
    extra: Vec<Vec<u8>>,
    only_added: bool,
}

impl Roots {
    /// Also trusts this root certificate (DER).
    pub fn add(&mut self, der: impl Into<Vec<u8>>) -> &mut Self {
        self.extra.push(der.into());
        self
    }

    /// Trusts only the added roots, not the webpki (or system) ones.
    pub fn only_added(&mut self, yes: bool) -> &mut Self {
        self.only_added = yes;
        self
    }

    /// Whether nothing was changed from the defaults.
    pub fn is_default(&self) -> bool {
        self.extra.is_empty() && !self.only_added
    }
}

/// A client configuration trusting `roots`.
pub fn client_config(roots: &Roots) -> Result<rustls::ClientConfig, BuildError> {
    let mut store = rustls::RootCertStore::empty();
    if !roots.only_added {
        store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        #[cfg(feature = "native-roots")]
        for cert in rustls_native_certs::load_native_certs().certs {
            // A system certificate rustls cannot use is skipped, as browsers do.
            let _ = store.add(cert);
        }
    }
    for der in &roots.extra {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_roots_are_refused() {
        let mut roots = Roots::default();
        roots.add(vec![1, 2, 3]);
        assert!(matches!(
            client_config(&roots),
            Err(BuildError::InvalidRoot(_))
        ));
    }
}
