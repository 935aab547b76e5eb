//! TLS for the listener: loads the certificate chain and key named by the config into a
//! rustls server config (the pure-Rust RustCrypto provider, the one the client uses).

use std::io;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::ServerConfig;

/// The first byte of a TLS handshake record.
pub(crate) const TLS_HANDSHAKE_BYTE: u8 = 0x16;

/// Builds the acceptor from PEM text: the certificate chain (leaf first) and its key.
pub fn acceptor_from_pem(cert_pem: &[u8], key_pem: &[u8]) -> io::Result<TlsAcceptor> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("tls certificate: {e}")))?;
    if certs.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "tls certificate: no CERTIFICATE in the PEM"));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("tls key: {e}")))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls_rustcrypto::provider()))
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("tls certificate/key: {e}")))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The acceptor the config asks for: `None` when it names no certificate. Errors when only one
/// of cert/key is set, a file cannot be read, or `require_tls` is set without them.
pub(crate) fn acceptor(config: &ServerConfig) -> io::Result<Option<TlsAcceptor>> {
    match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            let read = |p: &std::path::Path| std::fs::read(p).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())));
            acceptor_from_pem(&read(cert)?, &read(key)?).map(Some)
        }
        (None, None) if config.require_tls => Err(io::Error::new(io::ErrorKind::InvalidInput, "require_tls needs tls_cert and tls_key")),
        (None, None) => Ok(None),
        _ => Err(io::Error::new(io::ErrorKind::InvalidInput, "tls_cert and tls_key go together")),
    }
}
