//! TLS for the client's connection (rustls with the pure-Rust RustCrypto provider, which
//! cross-compiles for the ohos targets without a C compiler).
//!
//! The connection thread and the command callers share one [`Conn`]: the reader reads raw bytes
//! from its own clone of the socket without a lock and hands them to [`Conn::absorb`]; writers
//! encrypt through [`Conn::send`]. Both hold the connection's mutex only for that step.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::{ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// How the client secures its connection.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Security {
    /// TLS on every host but a loopback one (127.0.0.0/8, ::1, `localhost`), where plaintext
    /// is used unless TLS settings are given. The default.
    #[default]
    Auto,
    /// TLS, verified as the settings say.
    Tls(TlsSettings),
    /// Plaintext, even to a remote host: only when the app explicitly allows it.
    Plaintext,
}

/// What the client trusts. With neither `ca_pem` nor `pinned_cert_pem`: the Mozilla root set
/// (webpki-roots) compiled into the library.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsSettings {
    /// PEM CA certificates to trust instead of the built-in roots (a private deployment's CA,
    /// or the roots the app read from the device's CA store).
    pub ca_pem: Option<String>,
    /// PEM certificate the server must present exactly (certificate pinning); its name and
    /// expiry are not checked, the handshake signature is.
    pub pinned_cert_pem: Option<String>,
    /// Name the certificate must carry; default: the host the client connects to.
    pub server_name: Option<String>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls_rustcrypto::provider())
}

fn invalid(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what.to_string())
}

fn pem_certs(pem: &str, what: &str) -> io::Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<_> =
        CertificateDer::pem_slice_iter(pem.as_bytes()).collect::<Result<_, _>>().map_err(|e| invalid(format!("{what}: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(format!("{what}: no CERTIFICATE in the PEM")));
    }
    Ok(certs)
}

/// Accepts exactly one certificate (the pin); checks the handshake's signatures with it.
#[derive(Debug)]
struct PinnedCert {
    pinned: CertificateDer<'static>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.pinned.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A ready rustls client config and the name to verify.
#[derive(Clone)]
pub(crate) struct TlsClient {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

impl TlsClient {
    /// What `security` means for a connection to `host`: `None` for plaintext.
    pub(crate) fn for_host(security: &Security, host: &str) -> io::Result<Option<TlsClient>> {
        let settings = match security {
            Security::Plaintext => return Ok(None),
            Security::Auto if is_loopback(host) => return Ok(None),
            Security::Auto => TlsSettings::default(),
            Security::Tls(settings) => settings.clone(),
        };
        let provider = provider();
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?;
        let config = if let Some(pin) = &settings.pinned_cert_pem {
            let pinned = pem_certs(pin, "pinned certificate")?.remove(0);
            let verifier = PinnedCert { pinned, algorithms: provider.signature_verification_algorithms };
            builder.dangerous().with_custom_certificate_verifier(Arc::new(verifier)).with_no_client_auth()
        } else {
            let mut roots = RootCertStore::empty();
            match &settings.ca_pem {
                Some(pem) => {
                    for cert in pem_certs(pem, "CA certificates")? {
                        roots.add(cert).map_err(|e| invalid(format!("CA certificate: {e}")))?;
                    }
                }
                None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        let name_text = settings.server_name.as_deref().unwrap_or(host);
        let name = ServerName::try_from(name_text.to_string()).map_err(|e| invalid(format!("server name {name_text:?}: {e}")))?;
        Ok(Some(TlsClient { config: Arc::new(config), name }))
    }
}

/// Loopback hosts, where plaintext is the default.
pub(crate) fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The write side of a live connection: the socket, and the TLS session when there is one.
pub(crate) struct Conn {
    sock: TcpStream,
    tls: Option<ClientConnection>,
}

impl Conn {
    pub(crate) fn plain(sock: TcpStream) -> Conn {
        Conn { sock, tls: None }
    }

    /// Runs the TLS handshake on `sock` (blocking, at most `timeout`).
    pub(crate) fn handshake(mut sock: TcpStream, tls: &TlsClient, timeout: Duration) -> io::Result<Conn> {
        let mut session = ClientConnection::new(tls.config.clone(), tls.name.clone()).map_err(io::Error::other)?;
        let old_timeout = sock.read_timeout()?;
        sock.set_read_timeout(Some(timeout))?;
        let deadline = std::time::Instant::now() + timeout;
        while session.is_handshaking() {
            if std::time::Instant::now() >= deadline {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"));
            }
            session.complete_io(&mut sock)?;
        }
        sock.set_read_timeout(old_timeout)?;
        Ok(Conn { sock, tls: Some(session) })
    }

    /// Another handle on the socket, for the reader (it reads raw bytes without the lock).
    pub(crate) fn try_clone_socket(&self) -> io::Result<TcpStream> {
        self.sock.try_clone()
    }

    pub(crate) fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Writes plaintext bytes (encrypted when TLS).
    pub(crate) fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        match &mut self.tls {
            None => self.sock.write_all(bytes),
            Some(tls) => {
                tls.writer().write_all(bytes)?;
                self.flush_tls()
            }
        }
    }

    fn flush_tls(&mut self) -> io::Result<()> {
        if let Some(tls) = &mut self.tls {
            while tls.wants_write() {
                tls.write_tls(&mut self.sock)?;
            }
        }
        Ok(())
    }

    /// Takes raw bytes read from the socket; appends the plaintext they carry to `out`. Returns
    /// false once the peer closed the TLS session.
    pub(crate) fn absorb(&mut self, raw: &[u8], out: &mut Vec<u8>) -> io::Result<bool> {
        let Some(tls) = &mut self.tls else {
            out.extend_from_slice(raw);
            return Ok(true);
        };
        let mut rest = raw;
        let mut open = true;
        while !rest.is_empty() {
            // Each pass takes some bytes (its plaintext is drained below), so this ends; a pass
            // that takes none would spin: treat it as a broken session.
            if tls.read_tls(&mut rest)? == 0 {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "TLS buffer full"));
            }
            let state = tls.process_new_packets().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            let n = state.plaintext_bytes_to_read();
            if n > 0 {
                let start = out.len();
                out.resize(start + n, 0);
                tls.reader().read_exact(&mut out[start..])?;
            }
            if state.peer_has_closed() {
                open = false;
            }
        }
        self.flush_tls()?;
        Ok(open)
    }

    pub(crate) fn shutdown(&self) {
        let _ = self.sock.shutdown(Shutdown::Both);
    }
}
