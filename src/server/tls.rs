//! The certificate and key for HTTPS: read once at start into a rustls
//! server config that offers HTTP/2 and HTTP/1.1 by ALPN, or a [`TlsError`]
//! that says in one line what is wrong with which file.
//!
//! rustls with its `ring` provider: nothing to link at build or run time
//! (no OpenSSL, no cmake). Certificates and keys are PEM; the key may be
//! PKCS#8, PKCS#1 (RSA) or SEC1 (EC). Handshakes and the choice of protocol
//! are the connection's business (`server::connection`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};

/// The ALPN protocol id of HTTP/2, which the server prefers.
pub(super) const ALPN_HTTP2: &[u8] = b"h2";
/// The ALPN protocol id of HTTP/1.1.
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Why the certificate and key cannot serve HTTPS.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// One of the two files is named, not the other.
    #[error("--tls-cert and --tls-key go together: give both or neither")]
    Incomplete,
    /// A file could not be read.
    #[error("cannot read the TLS {what} {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file was read but holds no usable PEM item of its kind.
    #[error("the TLS {what} {} {problem}", path.display())]
    Pem {
        what: &'static str,
        path: PathBuf,
        problem: String,
    },
    /// The key is not the certificate's.
    #[error("the TLS private key {} does not match the certificate {}", key.display(), cert.display())]
    Mismatch { cert: PathBuf, key: PathBuf },
    /// rustls refused the pair for another reason (an unsupported key type, say).
    #[error("the TLS certificate {} and private key {} cannot be used: {source}", cert.display(), key.display())]
    Unusable {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
}

/// Reads the certificate chain at `cert` and the private key at `key`, and
/// checks that they belong together.
pub(super) fn load(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = read_pem(cert, "certificate", |text| {
        let chain = CertificateDer::pem_slice_iter(text).collect::<Result<Vec<_>, _>>()?;
        if chain.is_empty() {
            return Err(pem::Error::NoItemsFound);
        }
        Ok(chain)
    })?;
    let private_key = read_pem(key, "private key", PrivateKeyDer::from_pem_slice)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports rustls' default protocol versions")
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(|source| match source {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => TlsError::Mismatch {
                cert: cert.to_owned(),
                key: key.to_owned(),
            },
            source => TlsError::Unusable {
                cert: cert.to_owned(),
                key: key.to_owned(),
                source,
            },
        })?;
    config.alpn_protocols = vec![ALPN_HTTP2.to_vec(), ALPN_HTTP1.to_vec()];
    Ok(Arc::new(config))
}

/// Reads the file at `path` and parses it with `parse`; `what` names it in errors.
fn read_pem<T>(
    path: &Path,
    what: &'static str,
    parse: impl FnOnce(&[u8]) -> Result<T, pem::Error>,
) -> Result<T, TlsError> {
    let text = std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })?;
    parse(&text).map_err(|error| TlsError::Pem {
        what,
        path: path.to_owned(),
        problem: describe(&error, what),
    })
}

/// A PEM error in words; the parser's own text shows markers as byte lists.
fn describe(error: &pem::Error, what: &str) -> String {
    match error {
        pem::Error::NoItemsFound => format!("holds no PEM {what}"),
        pem::Error::MissingSectionEnd { end_marker } => {
            format!(
                "is not valid PEM: no -----END {}----- line",
                String::from_utf8_lossy(end_marker)
            )
        }
        pem::Error::IllegalSectionStart { line } => {
            format!("is not valid PEM: bad line {:?}", String::from_utf8_lossy(line))
        }
        error => format!("is not valid PEM: {error}"),
    }
}
