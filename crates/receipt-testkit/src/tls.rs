//! A throwaway certificate authority made at test time (rcgen): a CA, and a server
//! certificate it signed for `localhost` and `127.0.0.1`, as PEM text and files.

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use receipt_client::TlsSettings;
use receipt_server::ServerConfig;

/// A CA and the server certificate it signed. The PEM files live in a temp dir removed on drop.
pub struct TestCa {
    /// The CA certificate: what a client trusts.
    pub ca_pem: String,
    /// The server's certificate (signed by the CA) and its private key.
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestCa {
    /// Makes a new CA and a server certificate for `localhost` and `127.0.0.1`.
    pub fn new() -> TestCa {
        TestCa::try_new().unwrap_or_else(|e| panic!("making a test CA: {e}"))
    }

    pub fn try_new() -> Result<TestCa, String> {
        let err = |e: rcgen::Error| e.to_string();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "receipt throwaway test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let ca_key = KeyPair::generate().map_err(err)?;
        let ca = ca_params.self_signed(&ca_key).map_err(err)?;
        let mut leaf_params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).map_err(err)?;
        leaf_params.distinguished_name.push(DnType::CommonName, "receipt test server");
        let leaf_key = KeyPair::generate().map_err(err)?;
        let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).map_err(err)?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let (cert_path, key_path) = (dir.path().join("server.crt"), dir.path().join("server.key"));
        let (cert_pem, key_pem) = (leaf.pem(), leaf_key.serialize_pem());
        std::fs::write(&cert_path, &cert_pem).map_err(|e| e.to_string())?;
        std::fs::write(&key_path, &key_pem).map_err(|e| e.to_string())?;
        Ok(TestCa { ca_pem: ca.pem(), cert_pem, key_pem, cert_path, key_path, _dir: dir })
    }

    /// Points a server config at the certificate; `require` refuses plaintext.
    pub fn configure(&self, config: &mut ServerConfig, require: bool) {
        config.tls_cert = Some(self.cert_path.clone());
        config.tls_key = Some(self.key_path.clone());
        config.require_tls = require;
    }

    /// Client settings that trust this CA.
    pub fn client_settings(&self) -> TlsSettings {
        TlsSettings { ca_pem: Some(self.ca_pem.clone()), ..TlsSettings::default() }
    }

    /// Client settings that pin the server certificate.
    pub fn pinned_settings(&self) -> TlsSettings {
        TlsSettings { pinned_cert_pem: Some(self.cert_pem.clone()), ..TlsSettings::default() }
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}
