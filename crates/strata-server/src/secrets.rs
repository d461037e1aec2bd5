//! Reading the files and variables a node's security settings name: TLS
//! certificates and keys, tokens. Checked before the node serves anything.
//!
//! Invariants:
//! - A private key or token file that the group or others may read is
//!   refused, naming the file and its mode (as `ssh` refuses such keys).
//! - A token file holds one token: one trailing newline is dropped, nothing
//!   else is trimmed; the token must be 16 to 4096 printable ASCII
//!   characters. Errors name the file or variable, never the token.

use std::path::Path;
use std::sync::Arc;

use strata_replication::auth::{Auth, PeerGrant, Role, Secret, TokenGrant, check_token};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::config::{
    AccessRole, AuthSection, ClientTlsSection, ReplicaSection, ServerTlsSection, intervals,
};

/// Reads a file that holds a secret (a key or a token): refused if the
/// group or others may read it.
fn read_private(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{what} {}: {e}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "{what} {} is readable by group or others (mode {mode:04o}): chmod 600 it",
                path.display()
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    std::fs::read(path).map_err(|e| format!("{what} {}: {e}", path.display()))
}

fn read_public(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{what} {}: {e}", path.display()))
}

/// The PEM must hold at least one block of `label`.
fn check_pem(bytes: &[u8], label: &str, path: &Path) -> Result<(), String> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| format!("{} is not a PEM file (not UTF-8)", path.display()))?;
    if text.contains("-----BEGIN ") && text.contains(label) {
        Ok(())
    } else {
        Err(format!("{} holds no PEM {label} block", path.display()))
    }
}

/// A token from a file (one trailing newline dropped).
pub(crate) fn token_from_file(path: &Path) -> Result<Vec<u8>, String> {
    let mut bytes = read_private(path, "token file")?;
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    check_token(&bytes).map_err(|e| format!("token file {}: {e}", path.display()))?;
    Ok(bytes)
}

/// A token from an environment variable.
pub(crate) fn token_from_env(name: &str) -> Result<Vec<u8>, String> {
    let value = std::env::var_os(name)
        .ok_or_else(|| format!("environment variable {name} (a token) is not set"))?;
    let bytes = value.into_encoded_bytes();
    check_token(&bytes).map_err(|e| format!("environment variable {name}: {e}"))?;
    Ok(bytes)
}

/// The node's TLS settings for its listeners: its certificate chain and
/// key, and with `client_ca` a client-certificate verifier (optional when
/// tokens are accepted too, so token clients need no certificate) that
/// also refuses certificates `client_crl` revokes. HTTP/2 only (ALPN h2).
pub(crate) fn server_tls(
    section: &ServerTlsSection,
    tokens_too: bool,
) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
    let certs_in = |bytes: &[u8], path: &Path| -> Result<Vec<CertificateDer<'static>>, String> {
        check_pem(bytes, "CERTIFICATE", path)?;
        CertificateDer::pem_slice_iter(bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{}: {e}", path.display()))
    };
    let chain = certs_in(&read_public(&section.cert, "tls.cert")?, &section.cert)?;
    let key_pem = read_private(&section.key, "tls.key")?;
    check_pem(&key_pem, "PRIVATE KEY", &section.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| format!("tls.key {}: {e}", section.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS settings: {e}"))?;
    let builder = match &section.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certs_in(&read_public(ca, "tls.client_ca")?, ca)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("tls.client_ca {}: {e}", ca.display()))?;
            }
            let mut verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                Arc::clone(&provider),
            );
            if let Some(crl) = &section.client_crl {
                let pem = read_public(crl, "tls.client_crl")?;
                check_pem(&pem, "X509 CRL", crl)?;
                let crls = CertificateRevocationListDer::pem_slice_iter(&pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("tls.client_crl {}: {e}", crl.display()))?;
                verifier = verifier.with_crls(crls);
            }
            if tokens_too {
                verifier = verifier.allow_unauthenticated();
            }
            let verifier = verifier
                .build()
                .map_err(|e| format!("tls.client_ca {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("tls.cert and tls.key: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The credentials the node accepts.
pub(crate) fn auth(section: &AuthSection) -> Result<Auth, String> {
    let (tokens, peers) = grants(section)?;
    Ok(Auth::new(tokens, peers))
}

/// The grants an `[auth]` section names, every token read and checked.
pub(crate) fn grants(section: &AuthSection) -> Result<(Vec<TokenGrant>, Vec<PeerGrant>), String> {
    let mut tokens = Vec::new();
    for (i, token) in section.tokens.iter().enumerate() {
        let bytes = match (&token.file, &token.env) {
            (Some(file), _) => token_from_file(file),
            (None, Some(env)) => token_from_env(env),
            (None, None) => Err("no file or env".into()),
        }
        .map_err(|e| format!("auth.tokens[{i}] ({:?}): {e}", token.name))?;
        let role = match token.role {
            AccessRole::Client => Role::Client,
            AccessRole::Admin => Role::Admin,
            AccessRole::Replica => Role::Replica,
        };
        tokens.push(TokenGrant::new(
            token.name.clone(),
            role,
            &bytes,
            intervals(&token.ranges),
        ));
    }
    let peers = section
        .replicas
        .iter()
        .map(|p| PeerGrant {
            identity: p.identity.clone(),
            ranges: intervals(&p.ranges),
        })
        .collect();
    Ok((tokens, peers))
}

/// A client's TLS settings (a replica to its upstream, or the CLI).
pub(crate) fn client_tls(section: &ClientTlsSection) -> Result<ClientTlsConfig, String> {
    let ca = read_public(&section.ca, "ca")?;
    check_pem(&ca, "CERTIFICATE", &section.ca)?;
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    if let Some(name) = &section.server_name {
        tls = tls.domain_name(name.clone());
    }
    match (&section.cert, &section.key) {
        (Some(cert_path), Some(key_path)) => {
            let cert = read_public(cert_path, "cert")?;
            check_pem(&cert, "CERTIFICATE", cert_path)?;
            let key = read_private(key_path, "key")?;
            check_pem(&key, "PRIVATE KEY", key_path)?;
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        (None, None) => {}
        _ => return Err("a client certificate and its key go together".into()),
    }
    Ok(tls)
}

/// A replica's token for its upstream, if configured.
pub(crate) fn replica_token(section: &ReplicaSection) -> Result<Option<Secret>, String> {
    presented_token(section.token_file.as_deref(), section.token_env.as_deref())
}

/// The token a client presents: from `file` if given, else from the
/// environment variable `env` if given (and, for the CLI, set); none
/// otherwise.
pub(crate) fn presented_token(
    file: Option<&Path>,
    env: Option<&str>,
) -> Result<Option<Secret>, String> {
    let bytes = match (file, env) {
        (Some(file), _) => token_from_file(file)?,
        (None, Some(env)) => token_from_env(env)?,
        (None, None) => return Ok(None),
    };
    let text = String::from_utf8(bytes).map_err(|_| "a token must be ASCII".to_string())?;
    Secret::new(&text).map(Some)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn token_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        std::fs::write(&path, "0123456789abcdef0123\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = token_from_file(&path).unwrap_err();
        assert!(
            err.contains("readable by group or others") && err.contains("0644"),
            "{err}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(token_from_file(&path).unwrap(), b"0123456789abcdef0123");
        // Only one newline goes: a space stays, and is refused.
        std::fs::write(&path, "0123456789abcdef0123 \n").unwrap();
        let err = token_from_file(&path).unwrap_err();
        assert!(
            err.contains("printable ASCII") && !err.contains("0123456789"),
            "{err}"
        );
        std::fs::write(&path, "short\n").unwrap();
        assert!(token_from_file(&path).unwrap_err().contains("16 to 4096"));
        assert!(
            token_from_env("STRATA_TEST_SURELY_UNSET")
                .unwrap_err()
                .contains("not set")
        );
    }
}
