//! TLS to Redis (`rediss://`): rustls with the ring provider, trusting the system's roots
//! or only the CA in `tls_ca_file`, with an optional client certificate for servers that
//! require one (`tls-auth-clients yes`).
//!
//! The provider is passed explicitly rather than taken from the process default, so a
//! second rustls provider pulled in by some other dependency can never make this panic.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The `[redis]` TLS files, as given in the policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificates of the CAs to trust instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain, with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate.
    pub key_file: Option<PathBuf>,
}

impl TlsFiles {
    pub fn is_empty(&self) -> bool {
        self.ca_file.is_none() && self.cert_file.is_none() && self.key_file.is_none()
    }

    /// Reads the files into a client configuration; the error names the file and the field.
    pub fn client_config(&self) -> Result<ClientConfig, String> {
        let builder = verifying_builder(self.ca_file.as_deref(), "[redis]")?;
        match (&self.cert_file, &self.key_file) {
            (None, None) => Ok(builder.with_no_client_auth()),
            (Some(cert), Some(key)) => {
                let chain = certificates(cert, "tls_cert_file")?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                    format!(
                        "tls_key_file {}: no PEM private key could be read ({e})",
                        key.display()
                    )
                })?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    format!("tls_cert_file and tls_key_file do not make a client certificate: {e}")
                })
            }
            (Some(_), None) => {
                Err("tls_cert_file needs tls_key_file (the certificate's private key)".into())
            }
            (None, Some(_)) => {
                Err("tls_key_file needs tls_cert_file (the certificate it belongs to)".into())
            }
        }
    }
}

/// A ring-provider client configuration that verifies the server against the CAs in
/// `ca_file`, or the system roots without one; shared by Redis and HTTPS origins so both
/// trust certificates the same way. `section` names the policy section in errors.
pub(crate) fn verifying_builder(
    ca_file: Option<&Path>,
    section: &str,
) -> Result<rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>, String> {
    let roots = match ca_file {
        Some(path) => ca_roots(path)?,
        None => system_roots(section)?,
    };
    Ok(
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup failed: {e}"))?
            .with_root_certificates(roots),
    )
}

fn ca_roots(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path, "tls_ca_file")? {
        roots.add(cert).map_err(|e| {
            format!(
                "tls_ca_file {}: not a usable CA certificate: {e}",
                path.display()
            )
        })?;
    }
    Ok(roots)
}

/// The operating system's trusted roots. Unreadable entries are skipped as long as some
/// roots load (one bad file in /etc/ssl/certs must not make every managed Redis or HTTPS
/// origin unreachable).
fn system_roots(section: &str) -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or(String::new(), |e| format!(" ({e})"));
        return Err(format!(
            "no system root certificates could be loaded{why}: install the ca-certificates package, or set {section} tls_ca_file"
        ));
    }
    Ok(roots)
}

fn certificates(path: &Path, field: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            format!(
                "{field} {}: cannot read PEM certificates ({e})",
                path.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!(
            "{field} {}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}
