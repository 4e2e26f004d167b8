//! Transport security for every gRPC connection: the coordinator's server identity, the
//! agents' optional client certificates (mutual TLS, which also binds an agent id to its
//! certificate), how agents and the CLI reach a coordinator ([`CoordinatorLink`]), and a
//! throwaway certificate authority for labs and for the embedded default ([`LabCa`]).
//!
//! Certificates and keys are PEM files. Plaintext is never a fallback: it is used only when the
//! operator passes `--plaintext`, and then a warning says so.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

/// The largest PEM file read (a certificate chain is a few KiB).
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// How long a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads a PEM file given by `flag`, refusing anything that holds no PEM block. Errors are one
/// line naming the flag and the file.
fn read_pem(flag: &str, path: &Path) -> Result<Vec<u8>, String> {
    let bytes = crate::input::read_file_limited(path, MAX_PEM_BYTES)
        .map_err(|e| format!("{flag} {}: {e}", path.display()))?;
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(format!("{flag} {}: not a PEM file", path.display()));
    }
    Ok(bytes)
}

fn read_certs(flag: &str, path: &Path) -> Result<Vec<u8>, String> {
    let pem = read_pem(flag, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{flag} {}: unreadable certificate: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{flag} {}: holds no certificate", path.display()));
    }
    Ok(pem)
}

fn read_key(flag: &str, path: &Path) -> Result<Vec<u8>, String> {
    let pem = read_pem(flag, path)?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| format!("{flag} {}: no usable private key: {e}", path.display()))?;
    Ok(pem)
}

/// The coordinator's TLS settings.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// What tonic's server is configured with.
    pub config: ServerTlsConfig,
    /// Whether agents must present a certificate from the agent CA naming their agent id.
    pub agent_certs_required: bool,
}

impl ServerTls {
    /// From PEM text: the server's certificate chain and key, and optionally the CA that signs
    /// agent certificates. With an agent CA, clients may still connect without a certificate
    /// (the CLI authenticates with its token); agents may not.
    pub fn from_pem(cert: &[u8], key: &[u8], agent_ca: Option<&[u8]>) -> Self {
        let mut config = ServerTlsConfig::new()
            .identity(Identity::from_pem(cert, key))
            .timeout(HANDSHAKE_TIMEOUT);
        if let Some(ca) = agent_ca {
            config = config
                .client_ca_root(Certificate::from_pem(ca))
                .client_auth_optional(true);
        }
        ServerTls {
            config,
            agent_certs_required: agent_ca.is_some(),
        }
    }

    /// From the files given by `--tls-cert`, `--tls-key` and `--agent-ca`.
    pub fn load(cert: &Path, key: &Path, agent_ca: Option<&Path>) -> Result<Self, String> {
        let cert = read_certs("--tls-cert", cert)?;
        let key = read_key("--tls-key", key)?;
        let ca = agent_ca.map(|p| read_certs("--agent-ca", p)).transpose()?;
        Ok(ServerTls::from_pem(&cert, &key, ca.as_deref()))
    }
}

/// Whether the verified client certificate chain `peer_certs` (leaf first) names `agent_id`
/// as a subject alternative name. The chain itself was already verified against the agent CA
/// during the handshake.
pub fn certificate_names_agent(peer_certs: &[CertificateDer<'_>], agent_id: &str) -> bool {
    let Some(leaf) = peer_certs.first() else {
        return false;
    };
    let Ok(cert) = webpki::EndEntityCert::try_from(leaf) else {
        return false;
    };
    let Ok(name) = ServerName::try_from(agent_id) else {
        return false;
    };
    cert.verify_is_valid_for_subject_name(&name).is_ok()
}

/// `error` and its sources, joined with ": " (a transport error's own text is only "transport
/// error"; the reason — refused, bad certificate — is in its sources).
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut last = text.clone();
    let mut source = error.source();
    while let Some(e) = source {
        // Layers often repeat their inner error's text; say it once.
        let part = e.to_string();
        if part != last {
            text.push_str(": ");
            text.push_str(&part);
        }
        last = part;
        source = e.source();
    }
    text
}

/// The TLS files an agent or the CLI was given.
#[derive(Debug, Clone, Default)]
pub struct ClientTlsFiles {
    /// CA that signed the coordinator's certificate (`--ca-file`); the system's roots if none.
    pub ca: Option<PathBuf>,
    /// Client certificate for mutual TLS (`--cert-file`).
    pub cert: Option<PathBuf>,
    /// Its key (`--key-file`).
    pub key: Option<PathBuf>,
}

/// How to reach a coordinator: its URL and, for `https://`, the TLS settings.
#[derive(Debug, Clone)]
pub struct CoordinatorLink {
    /// `https://host:port`, or `http://host:port` when plaintext was asked for.
    pub url: String,
    tls: Option<ClientTlsConfig>,
}

impl CoordinatorLink {
    /// Checks the URL against the transport asked for: `https://` needs no flag; `http://`
    /// needs `plaintext` (and logs a warning); anything else is refused. `flag` names the URL's
    /// flag in errors.
    pub fn new(
        flag: &str,
        url: &str,
        files: &ClientTlsFiles,
        plaintext: bool,
    ) -> Result<Self, String> {
        if let Some(rest) = url.strip_prefix("https://") {
            if plaintext {
                return Err(format!(
                    "{flag} {url}: --plaintext contradicts an https:// URL; drop one of them"
                ));
            }
            if rest.is_empty() {
                return Err(format!("{flag} {url}: no host"));
            }
            let mut config = ClientTlsConfig::new();
            config = match &files.ca {
                Some(ca) => {
                    config.ca_certificate(Certificate::from_pem(read_certs("--ca-file", ca)?))
                }
                None => config.with_native_roots(),
            };
            match (&files.cert, &files.key) {
                (Some(cert), Some(key)) => {
                    config = config.identity(Identity::from_pem(
                        read_certs("--cert-file", cert)?,
                        read_key("--key-file", key)?,
                    ));
                }
                (None, None) => {}
                _ => return Err("--cert-file and --key-file go together".to_owned()),
            }
            return Ok(CoordinatorLink {
                url: url.to_owned(),
                tls: Some(config.timeout(HANDSHAKE_TIMEOUT)),
            });
        }
        if url.starts_with("http://") {
            if !plaintext {
                return Err(format!(
                    "{flag} {url}: plaintext URL; use https:// (TLS), or pass --plaintext to send tokens and results unencrypted"
                ));
            }
            if files.ca.is_some() || files.cert.is_some() || files.key.is_some() {
                return Err(format!(
                    "{flag} {url}: --ca-file, --cert-file and --key-file need an https:// URL"
                ));
            }
            tracing::warn!(
                url,
                "Talking to the coordinator in plaintext (--plaintext): tokens and results cross the network unencrypted."
            );
            return Ok(CoordinatorLink {
                url: url.to_owned(),
                tls: None,
            });
        }
        Err(format!("{flag} {url}: expected https://HOST:PORT"))
    }

    /// A TLS link with settings built in memory (the embedded default).
    pub fn with_tls(url: String, config: ClientTlsConfig) -> Self {
        CoordinatorLink {
            url,
            tls: Some(config.timeout(HANDSHAKE_TIMEOUT)),
        }
    }

    /// A plaintext link with no flag to check (tests on loopback).
    pub fn plaintext(url: String) -> Self {
        CoordinatorLink { url, tls: None }
    }

    /// The endpoint to connect to.
    pub fn endpoint(&self) -> Result<Endpoint, String> {
        let endpoint = Endpoint::from_shared(self.url.clone())
            .map_err(|e| format!("bad coordinator URL {}: {e}", self.url))?;
        match &self.tls {
            Some(tls) => endpoint
                .tls_config(tls.clone())
                .map_err(|e| format!("TLS settings for {}: {e}", self.url)),
            None => Ok(endpoint),
        }
    }
}

/// A certificate authority for a lab or a single run: it issues the coordinator's server
/// certificate and one client certificate per agent, each naming the agent id.
#[derive(Debug)]
pub struct LabCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub cert_pem: String,
    /// The CA key, PEM.
    pub key_pem: String,
}

/// A certificate and its key, PEM.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
}

/// What an issued certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertUse {
    /// A coordinator's server certificate.
    Server,
    /// An agent's client certificate.
    Agent,
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "fleetgate lab CA");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
}

impl LabCa {
    /// A new CA (ECDSA P-256, valid five years).
    pub fn generate() -> Result<Self, String> {
        let key = KeyPair::generate().map_err(|e| format!("cannot make a CA key: {e}"))?;
        let mut params = ca_params();
        validity(&mut params, 5 * 365);
        let cert = params
            .self_signed(&key)
            .map_err(|e| format!("cannot make the CA certificate: {e}"))?;
        let key_pem = key.serialize_pem();
        Ok(LabCa {
            issuer: Issuer::new(params, key),
            cert_pem: cert.pem(),
            key_pem,
        })
    }

    /// A CA made earlier by [`LabCa::generate`], from its certificate and key PEM, to issue
    /// more certificates that chain to it.
    pub fn load(cert_pem: String, key_pem: String) -> Result<Self, String> {
        let key = KeyPair::from_pem(&key_pem).map_err(|e| format!("unusable CA key: {e}"))?;
        Ok(LabCa {
            issuer: Issuer::new(ca_params(), key),
            cert_pem,
            key_pem,
        })
    }

    /// A certificate (valid one year) for `names` — host names or IP addresses for a server,
    /// the agent id for an agent.
    pub fn issue(&self, names: &[String], purpose: CertUse) -> Result<IssuedCert, String> {
        let mut params = CertificateParams::new(names.to_vec())
            .map_err(|e| format!("cannot name a certificate {names:?}: {e}"))?;
        if let Some(first) = names.first() {
            params
                .distinguished_name
                .push(DnType::CommonName, first.as_str());
        }
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![match purpose {
            CertUse::Server => ExtendedKeyUsagePurpose::ServerAuth,
            CertUse::Agent => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        validity(&mut params, 365);
        let key = KeyPair::generate().map_err(|e| format!("cannot make a key: {e}"))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| format!("cannot sign a certificate for {names:?}: {e}"))?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

impl LabCa {
    /// Server TLS for a coordinator reached as `names`, requiring agents to present a
    /// certificate from this CA naming their id.
    pub fn server_tls(&self, names: &[String]) -> Result<ServerTls, String> {
        let server = self.issue(names, CertUse::Server)?;
        Ok(ServerTls::from_pem(
            server.cert_pem.as_bytes(),
            server.key_pem.as_bytes(),
            Some(self.cert_pem.as_bytes()),
        ))
    }

    /// Client TLS trusting this CA; for an agent, with a new certificate naming `agent_id`.
    pub fn client_tls(&self, agent_id: Option<&str>) -> Result<ClientTlsConfig, String> {
        let trust = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.cert_pem));
        let Some(id) = agent_id else {
            return Ok(trust);
        };
        let cert = self.issue(&[id.to_owned()], CertUse::Agent)?;
        Ok(trust.identity(Identity::from_pem(cert.cert_pem, cert.key_pem)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_certificate_names_its_agent_id_and_no_other() {
        let ca = LabCa::generate().unwrap();
        let issued = ca.issue(&["agent-1".to_owned()], CertUse::Agent).unwrap();
        let der = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
        assert!(certificate_names_agent(
            std::slice::from_ref(&der),
            "agent-1"
        ));
        assert!(!certificate_names_agent(
            std::slice::from_ref(&der),
            "agent-2"
        ));
        assert!(!certificate_names_agent(&[], "agent-1"));
    }

    #[test]
    fn a_reloaded_ca_issues_certificates_that_chain_to_the_original() {
        let ca = LabCa::generate().unwrap();
        let again = LabCa::load(ca.cert_pem.clone(), ca.key_pem.clone()).unwrap();
        let issued = again.issue(&["a1".to_owned()], CertUse::Agent).unwrap();
        let root = CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).unwrap();
        let anchors = [webpki::anchor_from_trusted_cert(&root).unwrap()];
        let leaf = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
        let cert = webpki::EndEntityCert::try_from(&leaf).unwrap();
        let verified = cert.verify_for_usage(
            &[webpki::ring::ECDSA_P256_SHA256],
            &anchors,
            &[],
            rustls_pki_types::UnixTime::now(),
            webpki::KeyUsage::client_auth(),
            None,
            None,
        );
        assert!(verified.is_ok(), "{:?}", verified.err());
    }

    #[test]
    fn plaintext_needs_the_flag_and_tls_needs_an_https_url() {
        let none = ClientTlsFiles::default();
        assert_eq!(
            CoordinatorLink::new("--coordinator", "http://h:7400", &none, false).unwrap_err(),
            "--coordinator http://h:7400: plaintext URL; use https:// (TLS), or pass --plaintext to send tokens and results unencrypted"
        );
        assert!(CoordinatorLink::new("--coordinator", "http://h:7400", &none, true).is_ok());
        assert_eq!(
            CoordinatorLink::new("--coordinator", "https://h:7400", &none, true).unwrap_err(),
            "--coordinator https://h:7400: --plaintext contradicts an https:// URL; drop one of them"
        );
        assert_eq!(
            CoordinatorLink::new("--coordinator", "h:7400", &none, false).unwrap_err(),
            "--coordinator h:7400: expected https://HOST:PORT"
        );
        let dir = tempfile::tempdir().unwrap();
        let bogus = dir.path().join("ca.pem");
        std::fs::write(&bogus, "not a certificate").unwrap();
        let files = ClientTlsFiles {
            ca: Some(bogus.clone()),
            ..ClientTlsFiles::default()
        };
        assert_eq!(
            CoordinatorLink::new("--coordinator", "https://h:7400", &files, false).unwrap_err(),
            format!("--ca-file {}: not a PEM file", bogus.display())
        );
    }
}
