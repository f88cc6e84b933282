//! TLS client settings for the connections roomcast opens to its backing services (the
//! CQL cluster; Redis in cluster mode): which CA to trust and, for mutual TLS, the
//! client certificate. Owns reading the PEM files and building one rustls
//! `ClientConfig` for the CQL driver, and the one place a `redis::Client` is made
//! ([`redis_client`]: the cluster, the bus and presence connect the same way).
//!
//! The crypto provider is named explicitly (aws-lc-rs) instead of relying on a
//! process-wide default, so no other crate's choice can make the builder panic. redis-rs
//! builds its own rustls config from PEM bytes with the process default, so before it
//! does, [`redis_client`] installs aws-lc-rs as that default (if nothing else has).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The PEM files of a TLS client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA certificates (PEM, one or more) the server's chain must end in.
    pub ca: PathBuf,
    /// Client certificate chain and private key (PEM), for servers that require
    /// client authentication.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// Why a TLS client could not be built; names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{path} holds no {what}")]
    Empty { path: String, what: &'static str },
    #[error("TLS settings rejected: {0}")]
    Rustls(#[from] rustls::Error),
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read = |source| TlsError::Read {
        path: path.display().to_string(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(read)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read)?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            path: path.display().to_string(),
            what: "certificate",
        });
    }
    Ok(certs)
}

impl TlsFiles {
    /// The rustls client configuration: trust exactly the CA file's certificates
    /// (not the system store: a backing service's CA is the operator's own).
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in certs(&self.ca)? {
            roots.add(cert)?;
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let config = match &self.client {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Read {
                    path: key.display().to_string(),
                    source,
                })?;
                builder.with_client_auth_cert(certs(cert)?, key)?
            }
        };
        Ok(Arc::new(config))
    }
}

/// A Redis client for `url`: `redis://` in the clear, `rediss://` over TLS. With `tls`
/// the server's chain must end in its CA file (else the system's roots), and its client
/// certificate is presented for servers that require one. A file that cannot be read
/// fails here, named.
pub fn redis_client(url: &str, tls: Option<&TlsFiles>) -> Result<redis::Client, redis::RedisError> {
    if !url.starts_with("rediss://") {
        return redis::Client::open(url);
    }
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let read = |path: &Path| {
        std::fs::read(path).map_err(|e| {
            redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "cannot read a TLS file",
                format!("{}: {e}", path.display()),
            ))
        })
    };
    let certificates = match tls {
        None => redis::TlsCertificates {
            client_tls: None,
            root_cert: None,
        },
        Some(t) => redis::TlsCertificates {
            client_tls: match &t.client {
                None => None,
                Some((cert, key)) => Some(redis::ClientTlsConfig {
                    client_cert: read(cert)?,
                    client_key: read(key)?,
                }),
            },
            root_cert: Some(read(&t.ca)?),
        },
    };
    redis::Client::build_with_tls(url, certificates)
}

/// `url` with any password replaced by `***`, for logs and errors.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(redacted("redis://:pw@h:1/0"), "redis://:***@h:1/0");
        assert_eq!(redacted("rediss://u:p@ss@h:1"), "rediss://u:***@h:1");
        assert_eq!(redacted("redis://h:1/"), "redis://h:1/");
        assert_eq!(redacted("redis://user@h:1/"), "redis://user@h:1/");
    }

    #[test]
    fn a_redis_tls_file_that_cannot_be_read_is_named() {
        let t = TlsFiles {
            ca: "/nonexistent/ca.pem".into(),
            client: None,
        };
        let e = redis_client("rediss://127.0.0.1:1/", Some(&t)).expect_err("no file");
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
        // The clear scheme ignores nothing silently: it just needs no files.
        assert!(redis_client("redis://127.0.0.1:1/", None).is_ok());
    }

    #[test]
    fn a_missing_or_empty_ca_file_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = TlsFiles {
            ca: dir.path().join("nope.pem"),
            client: None,
        };
        let e = missing.client_config().expect_err("missing file");
        assert!(e.to_string().contains("nope.pem"), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let e = TlsFiles {
            ca: empty,
            client: None,
        }
        .client_config()
        .expect_err("empty file");
        assert!(
            e.to_string().contains("empty.pem holds no certificate"),
            "{e}"
        );
    }
}
