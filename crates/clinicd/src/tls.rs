//! TLS with rustls: certificate and key from PEM files, or in development a self-signed
//! certificate generated once under the data directory and reused.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("`{path}` cannot be read as a PEM certificate chain: {reason}")]
    Certificate { path: PathBuf, reason: String },
    #[error("`{path}` cannot be read as a PEM private key: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("the private key does not match the certificate: {0}")]
    Mismatch(rustls::Error),
    #[error("cannot write the self-signed certificate under `{path}`: {source}")]
    Generate {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot generate a self-signed certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
}

impl TlsError {
    /// The configuration variable a problem is reported against.
    pub fn variable(&self) -> &'static str {
        match self {
            Self::Certificate { .. } => "CLINICD_TLS_CERT_FILE",
            Self::Key { .. } | Self::Mismatch(_) => "CLINICD_TLS_KEY_FILE",
            Self::Generate { .. } | Self::Rcgen(_) => "CLINICD_DATA_DIR",
        }
    }
}

/// A server configuration for the files: TLS 1.2 and 1.3 with rustls' safe defaults, HTTP/1.1
/// by ALPN (HTTP/2 is off, see docs/security.md).
pub fn load_server_config(cert: &Path, key: &Path) -> Result<ServerConfig, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Certificate {
            path: cert.into(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Certificate {
            path: cert.into(),
            reason: "no certificate found".into(),
        });
    }
    // The key's parse error is reported by kind only; it never quotes key material.
    let private_key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.into(),
        reason: pem_error_kind(&e),
    })?;
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(TlsError::Mismatch)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn pem_error_kind(error: &rustls_pki_types::pem::Error) -> String {
    match error {
        rustls_pki_types::pem::Error::Io(io) => io.to_string(),
        rustls_pki_types::pem::Error::NoItemsFound => "no private key found".into(),
        _ => "malformed PEM".into(),
    }
}

/// Paths of the development certificate and key under `dir`, generating them on first use.
/// The key is written with mode 0600.
pub fn ensure_self_signed(dir: &Path) -> Result<(PathBuf, PathBuf), TlsError> {
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    if cert_path.is_file() && key_path.is_file() {
        return Ok((cert_path, key_path));
    }
    let generated = rcgen::generate_simple_self_signed(vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ])?;
    let write_error = |source| TlsError::Generate {
        path: dir.into(),
        source,
    };
    fs::create_dir_all(dir).map_err(write_error)?;
    write_private(&key_path, generated.signing_key.serialize_pem().as_bytes())
        .map_err(write_error)?;
    fs::write(&cert_path, generated.cert.pem()).map_err(write_error)?;
    Ok((cert_path, key_path))
}

fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(contents)
}
