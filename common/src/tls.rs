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

use crate::input::InputError;

/// The largest PEM file read (a certificate chain is a few KiB).
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// How long a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why TLS settings could not be made from the operator's flags and files. Each message is one
/// line naming the flag and the file or URL.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file is unusable.
    #[error("{flag} {}: {source}", path.display())]
    File {
        /// The flag that named the file (`--tls-cert`, `--ca-file`, …).
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: PemFileError,
    },
    /// `--plaintext` with an `https://` URL.
    #[error("{flag} {url}: --plaintext contradicts an https:// URL; drop one of them")]
    PlaintextWithHttps {
        /// The URL's flag.
        flag: String,
        /// The URL.
        url: String,
    },
    /// An `https://` URL without a host.
    #[error("{flag} {url}: no host")]
    NoHost {
        /// The URL's flag.
        flag: String,
        /// The URL.
        url: String,
    },
    /// Only one of `--cert-file` and `--key-file`.
    #[error("--cert-file and --key-file go together")]
    CertWithoutKey,
    /// An `http://` URL without `--plaintext`.
    #[error(
        "{flag} {url}: plaintext URL; use https:// (TLS), or pass --plaintext to send tokens and results unencrypted"
    )]
    PlaintextNotAllowed {
        /// The URL's flag.
        flag: String,
        /// The URL.
        url: String,
    },
    /// Certificate or key files with an `http://` URL.
    #[error("{flag} {url}: --ca-file, --cert-file and --key-file need an https:// URL")]
    FilesNeedHttps {
        /// The URL's flag.
        flag: String,
        /// The URL.
        url: String,
    },
    /// A URL that is neither `https://` nor `http://`.
    #[error("{flag} {url}: expected https://HOST:PORT")]
    UnknownScheme {
        /// The URL's flag.
        flag: String,
        /// The URL.
        url: String,
    },
    /// The coordinator URL is not a URI tonic accepts.
    #[error("bad coordinator URL {url}: {source}")]
    BadUrl {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// tonic refused the TLS settings for the URL.
    #[error("TLS settings for {url}: {source}")]
    Settings {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
}

/// What is wrong with a PEM file (the flag and file are named by [`TlsError::File`]).
#[derive(Debug, thiserror::Error)]
pub enum PemFileError {
    /// The file could not be read, or is too large.
    #[error(transparent)]
    Unreadable(#[from] InputError),
    /// The file holds no PEM block.
    #[error("not a PEM file")]
    NotPem,
    /// A certificate block could not be decoded.
    #[error("unreadable certificate: {0}")]
    BadCertificate(#[source] rustls_pki_types::pem::Error),
    /// The file holds PEM blocks but no certificate.
    #[error("holds no certificate")]
    NoCertificate,
    /// The file holds no private key that can be decoded.
    #[error("no usable private key: {0}")]
    BadKey(#[source] rustls_pki_types::pem::Error),
}

/// Why the lab CA could not make or load a key or certificate.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The CA key could not be generated.
    #[error("cannot make a CA key: {0}")]
    CaKey(#[source] rcgen::Error),
    /// The CA certificate could not be made.
    #[error("cannot make the CA certificate: {0}")]
    CaCertificate(#[source] rcgen::Error),
    /// The CA key PEM could not be used.
    #[error("unusable CA key: {0}")]
    UnusableCaKey(#[source] rcgen::Error),
    /// The names are not valid certificate subject names.
    #[error("cannot name a certificate {names:?}: {source}")]
    Names {
        /// The names asked for.
        names: Vec<String>,
        /// Why.
        #[source]
        source: rcgen::Error,
    },
    /// A certificate's key could not be generated.
    #[error("cannot make a key: {0}")]
    Key(#[source] rcgen::Error),
    /// The certificate could not be signed.
    #[error("cannot sign a certificate for {names:?}: {source}")]
    Sign {
        /// The names asked for.
        names: Vec<String>,
        /// Why.
        #[source]
        source: rcgen::Error,
    },
}

/// Reads the PEM file `path`, refusing anything that holds no PEM block.
fn read_pem(path: &Path) -> Result<Vec<u8>, PemFileError> {
    let bytes = crate::input::read_file_limited(path, MAX_PEM_BYTES)?;
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(PemFileError::NotPem);
    }
    Ok(bytes)
}

/// A file error naming `flag` and `path`.
fn file_error(flag: &'static str, path: &Path) -> impl FnOnce(PemFileError) -> TlsError {
    let path = path.to_path_buf();
    move |source| TlsError::File { flag, path, source }
}

fn read_certs(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let certs = || -> Result<Vec<u8>, PemFileError> {
        let pem = read_pem(path)?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(PemFileError::BadCertificate)?;
        if certs.is_empty() {
            return Err(PemFileError::NoCertificate);
        }
        Ok(pem)
    };
    certs().map_err(file_error(flag, path))
}

fn read_key(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let key = || -> Result<Vec<u8>, PemFileError> {
        let pem = read_pem(path)?;
        PrivateKeyDer::from_pem_slice(&pem).map_err(PemFileError::BadKey)?;
        Ok(pem)
    };
    key().map_err(file_error(flag, path))
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
    pub fn load(cert: &Path, key: &Path, agent_ca: Option<&Path>) -> Result<Self, TlsError> {
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
    ) -> Result<Self, TlsError> {
        let flag_url = || (flag.to_owned(), url.to_owned());
        if let Some(rest) = url.strip_prefix("https://") {
            if plaintext {
                let (flag, url) = flag_url();
                return Err(TlsError::PlaintextWithHttps { flag, url });
            }
            if rest.is_empty() {
                let (flag, url) = flag_url();
                return Err(TlsError::NoHost { flag, url });
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
                _ => return Err(TlsError::CertWithoutKey),
            }
            return Ok(CoordinatorLink {
                url: url.to_owned(),
                tls: Some(config.timeout(HANDSHAKE_TIMEOUT)),
            });
        }
        if url.starts_with("http://") {
            if !plaintext {
                let (flag, url) = flag_url();
                return Err(TlsError::PlaintextNotAllowed { flag, url });
            }
            if files.ca.is_some() || files.cert.is_some() || files.key.is_some() {
                let (flag, url) = flag_url();
                return Err(TlsError::FilesNeedHttps { flag, url });
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
        let (flag, url) = flag_url();
        Err(TlsError::UnknownScheme { flag, url })
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
    pub fn endpoint(&self) -> Result<Endpoint, TlsError> {
        let endpoint =
            Endpoint::from_shared(self.url.clone()).map_err(|source| TlsError::BadUrl {
                url: self.url.clone(),
                source,
            })?;
        match &self.tls {
            Some(tls) => endpoint
                .tls_config(tls.clone())
                .map_err(|source| TlsError::Settings {
                    url: self.url.clone(),
                    source,
                }),
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
    pub fn generate() -> Result<Self, CaError> {
        let key = KeyPair::generate().map_err(CaError::CaKey)?;
        let mut params = ca_params();
        validity(&mut params, 5 * 365);
        let cert = params.self_signed(&key).map_err(CaError::CaCertificate)?;
        let key_pem = key.serialize_pem();
        Ok(LabCa {
            issuer: Issuer::new(params, key),
            cert_pem: cert.pem(),
            key_pem,
        })
    }

    /// A CA made earlier by [`LabCa::generate`], from its certificate and key PEM, to issue
    /// more certificates that chain to it.
    pub fn load(cert_pem: String, key_pem: String) -> Result<Self, CaError> {
        let key = KeyPair::from_pem(&key_pem).map_err(CaError::UnusableCaKey)?;
        Ok(LabCa {
            issuer: Issuer::new(ca_params(), key),
            cert_pem,
            key_pem,
        })
    }

    /// A certificate (valid one year) for `names` — host names or IP addresses for a server,
    /// the agent id for an agent.
    pub fn issue(&self, names: &[String], purpose: CertUse) -> Result<IssuedCert, CaError> {
        let mut params =
            CertificateParams::new(names.to_vec()).map_err(|source| CaError::Names {
                names: names.to_vec(),
                source,
            })?;
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
        let key = KeyPair::generate().map_err(CaError::Key)?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|source| CaError::Sign {
                names: names.to_vec(),
                source,
            })?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

impl LabCa {
    /// Server TLS for a coordinator reached as `names`, requiring agents to present a
    /// certificate from this CA naming their id.
    pub fn server_tls(&self, names: &[String]) -> Result<ServerTls, CaError> {
        let server = self.issue(names, CertUse::Server)?;
        Ok(ServerTls::from_pem(
            server.cert_pem.as_bytes(),
            server.key_pem.as_bytes(),
            Some(self.cert_pem.as_bytes()),
        ))
    }

    /// Client TLS trusting this CA; for an agent, with a new certificate naming `agent_id`.
    pub fn client_tls(&self, agent_id: Option<&str>) -> Result<ClientTlsConfig, CaError> {
        let trust = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.cert_pem));
        let Some(id) = agent_id else {
            return Ok(trust);
        };
        let cert = self.issue(&[id.to_owned()], CertUse::Agent)?;
        Ok(trust.identity(Identity::from_pem(cert.cert_pem, cert.key_pem)))
    }
}

/// What [`write_lab_set`] makes in a folder: the lab CA (reused when the folder has one), the
/// coordinator's server certificate and one client certificate per agent, each with its key.
#[derive(Debug, Clone, Default)]
pub struct LabSetRequest {
    /// The folder (created owner-only if missing).
    pub dir: PathBuf,
    /// Host names or IP addresses for the coordinator's certificate; empty: `localhost` and
    /// `127.0.0.1`, and only when the folder has no coordinator certificate yet.
    pub coordinator_names: Vec<String>,
    /// Agent ids, one client certificate each.
    pub agents: Vec<String>,
    /// Replace certificates and keys already in the folder (a complete CA is still reused),
    /// and make a reused CA key readable by its owner only.
    pub force: bool,
}

/// Why [`write_lab_set`] wrote nothing (every check is made before the first write) or
/// stopped part way (a write that failed).
#[derive(Debug, thiserror::Error)]
pub enum LabSetError {
    /// A file would be replaced and `force` was not given.
    #[error("{}: already exists; {remedy}", path.display())]
    Exists {
        /// The file.
        path: PathBuf,
        /// What to do about it.
        remedy: String,
    },
    /// A symbolic link is where a certificate or key would go.
    #[error("{}: is a symbolic link; certificates and keys are never written through one", path.display())]
    SymbolicLink {
        /// The link.
        path: PathBuf,
    },
    /// The CA in the folder cannot be used.
    #[error("{}: {source}", path.display())]
    UnusableCa {
        /// The CA key.
        path: PathBuf,
        /// Why.
        #[source]
        source: CaError,
    },
    /// A file or the folder could not be read, inspected or changed.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The error (part of the message, so not chained as a source).
        error: std::io::Error,
    },
    /// A key or certificate could not be made.
    #[error(transparent)]
    Issue(#[from] CaError),
    /// A file could not be written (the file there before, if any, is whole).
    #[error(transparent)]
    Write(#[from] crate::atomic_file::AtomicWriteError),
}

/// Permission bits of key files: owner read and write only.
pub const KEY_MODE: u32 = 0o600;
/// Permission bits of certificate files (public).
pub const CERT_MODE: u32 = 0o644;

/// A certificate and key to write: their paths, and what to tell an operator who would
/// replace them.
struct PairPlan {
    key: PathBuf,
    cert: PathBuf,
    names: Vec<String>,
    purpose: CertUse,
    remedy: String,
}

/// Writes a lab certificate set into `request.dir` (see [`LabSetRequest`]) and returns the
/// files written, in order. Keys are written with mode 0600 and certificates with 0644, set
/// explicitly, each through a new temporary file (never through a symbolic link) renamed into
/// place. Without `force`, a certificate or key already there is never replaced, and the call
/// writes nothing at all; a symbolic link where a file would go is always refused.
pub fn write_lab_set(request: &LabSetRequest) -> Result<Vec<PathBuf>, LabSetError> {
    use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};

    let dir = &request.dir;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |error| LabSetError::Io { path, error }
    };
    match std::fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => {
            return Err(io(dir)(std::io::Error::from(
                std::io::ErrorKind::NotADirectory,
            )));
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(dir))?,
        Err(e) => return Err(io(dir)(e)),
    }
    // What is already there: `None` when nothing (not even a dangling link) is.
    let present = |path: &Path| match std::fs::symlink_metadata(path) {
        Ok(meta) => Ok(Some(meta)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path)(e)),
    };
    // May `path` be written? A link never; an existing file only with `force`.
    let writable = |path: &Path, remedy: &str| match present(path)? {
        Some(meta) if meta.is_symlink() => Err(LabSetError::SymbolicLink {
            path: path.to_path_buf(),
        }),
        Some(_) if !request.force => Err(LabSetError::Exists {
            path: path.to_path_buf(),
            remedy: remedy.to_owned(),
        }),
        _ => Ok(()),
    };

    // The CA: reused when complete; made when absent; half a CA is replaced only with force.
    let (ca_cert, ca_key) = (dir.join("ca.pem"), dir.join("ca.key"));
    let reuse_ca = match (present(&ca_cert)?, present(&ca_key)?) {
        (Some(_), Some(_)) => true,
        (None, None) => false,
        (cert, _) => {
            let (there, missing) = if cert.is_some() {
                (&ca_cert, &ca_key)
            } else {
                (&ca_key, &ca_cert)
            };
            let remedy = format!(
                "{} is missing; pass --force to make a new CA (certificates from the old one stop working)",
                missing.display()
            );
            writable(there, &remedy)?;
            false
        }
    };

    let mut pairs = Vec::new();
    let server_key = dir.join("coordinator.key");
    let server_cert = dir.join("coordinator.pem");
    let server_names = if !request.coordinator_names.is_empty() {
        Some(request.coordinator_names.clone())
    } else if present(&server_cert)?.is_none() {
        Some(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
    } else {
        None
    };
    if let Some(names) = server_names {
        pairs.push(PairPlan {
            key: server_key,
            cert: server_cert,
            names,
            purpose: CertUse::Server,
            remedy: "pass --force to replace the coordinator's certificate and key".to_owned(),
        });
    }
    for id in &request.agents {
        pairs.push(PairPlan {
            key: dir.join(format!("agent-{id}.key")),
            cert: dir.join(format!("agent-{id}.pem")),
            names: vec![id.clone()],
            purpose: CertUse::Agent,
            remedy: format!("pass --force to replace agent {id}'s certificate and key"),
        });
    }
    for pair in &pairs {
        writable(&pair.key, &pair.remedy)?;
        writable(&pair.cert, &pair.remedy)?;
    }

    let key_options = crate::atomic_file::WriteOptions {
        mode: Some(KEY_MODE),
        replace: request.force,
    };
    let cert_options = crate::atomic_file::WriteOptions {
        mode: Some(CERT_MODE),
        replace: request.force,
    };
    let mut written = Vec::new();
    let ca = if reuse_ca {
        let read = |p: &Path| std::fs::read_to_string(p).map_err(io(p));
        let ca = LabCa::load(read(&ca_cert)?, read(&ca_key)?).map_err(|source| {
            LabSetError::UnusableCa {
                path: ca_key.clone(),
                source,
            }
        })?;
        let mode = std::fs::metadata(&ca_key).map_err(io(&ca_key))?.mode() & 0o777;
        if mode & 0o077 != 0 {
            if request.force {
                restrict_key(&ca_key).map_err(io(&ca_key))?;
            } else {
                tracing::warn!(
                    path = %ca_key.display(),
                    mode = format!("{mode:04o}"),
                    "The CA key is readable by others; pass --force to make it owner-only."
                );
            }
        }
        ca
    } else {
        let ca = LabCa::generate()?;
        crate::atomic_file::write(&ca_key, ca.key_pem.as_bytes(), key_options)?;
        written.push(ca_key);
        crate::atomic_file::write(&ca_cert, ca.cert_pem.as_bytes(), cert_options)?;
        written.push(ca_cert);
        ca
    };
    for pair in pairs {
        let issued = ca.issue(&pair.names, pair.purpose)?;
        crate::atomic_file::write(&pair.key, issued.key_pem.as_bytes(), key_options)?;
        written.push(pair.key);
        crate::atomic_file::write(&pair.cert, issued.cert_pem.as_bytes(), cert_options)?;
        written.push(pair.cert);
    }
    Ok(written)
}

/// Sets an existing key file's mode to [`KEY_MODE`], refusing a symbolic link.
fn restrict_key(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(KEY_MODE))
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
            CoordinatorLink::new("--coordinator", "http://h:7400", &none, false)
                .unwrap_err()
                .to_string(),
            "--coordinator http://h:7400: plaintext URL; use https:// (TLS), or pass --plaintext to send tokens and results unencrypted"
        );
        assert!(CoordinatorLink::new("--coordinator", "http://h:7400", &none, true).is_ok());
        assert_eq!(
            CoordinatorLink::new("--coordinator", "https://h:7400", &none, true)
                .unwrap_err()
                .to_string(),
            "--coordinator https://h:7400: --plaintext contradicts an https:// URL; drop one of them"
        );
        assert_eq!(
            CoordinatorLink::new("--coordinator", "h:7400", &none, false)
                .unwrap_err()
                .to_string(),
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
            CoordinatorLink::new("--coordinator", "https://h:7400", &files, false)
                .unwrap_err()
                .to_string(),
            format!("--ca-file {}: not a PEM file", bogus.display())
        );
    }
}
