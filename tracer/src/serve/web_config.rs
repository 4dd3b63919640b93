//! `tracer serve --web-config FILE`: TLS, client certificates and basic auth, in the file format
//! Prometheus's exporters share (exporter-toolkit's `--web.config.file`), so one file and one
//! scrape configuration serve node_exporter and tracer alike.
//!
//! The file and the files it names are read again when any of them changes, so a rotated
//! certificate (a Kubernetes Secret updated in place) is served without a restart.

use std::{
    cell::RefCell,
    collections::{BTreeMap, HashSet},
    path::{Path, PathBuf},
    sync::Arc,
    time::SystemTime,
};

use anyhow::{Context, Result, bail};
use base64::Engine;
use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};
use serde::Deserialize;

/// The file as exporter-toolkit reads it. Settings it has and tracer lacks are refused by name
/// (unknown fields), never ignored: a TLS setting silently dropped is a hole.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct File {
    tls_server_config: Option<TlsFile>,
    #[serde(default)]
    basic_auth_users: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert_file: PathBuf,
    key_file: PathBuf,
    #[serde(default)]
    client_auth_type: ClientAuth,
    client_ca_file: Option<PathBuf>,
    min_version: Option<TlsVersion>,
    max_version: Option<TlsVersion>,
}

/// Go's `tls.ClientAuthType` names, as the file spells them. rustls verifies every certificate
/// it asks for, so Go's two "take any certificate" types have no equivalent.
#[derive(Deserialize, Default, PartialEq, Clone, Copy)]
enum ClientAuth {
    #[default]
    NoClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

#[derive(Deserialize, PartialEq, PartialOrd, Clone, Copy)]
enum TlsVersion {
    TLS12,
    TLS13,
}

/// What the file asks for, ready to serve.
pub struct WebConfig {
    path: PathBuf,
    /// The files read and when each was last changed, to see a change.
    read: RefCell<Vec<(PathBuf, Option<SystemTime>)>>,
    pub tls: Option<Arc<ServerConfig>>,
    /// User name -> bcrypt hash.
    users: BTreeMap<String, String>,
    /// Digests of credentials already checked good: bcrypt costs tens of milliseconds a check,
    /// on purpose, and Prometheus sends the same ones at every scrape.
    accepted: RefCell<HashSet<Vec<u8>>>,
    /// One bcrypt check at a time: a burst of scrapers with the same new credentials waits for
    /// the first check instead of each burning a core on its own.
    pub checking: tokio::sync::Mutex<()>,
}

/// Credentials remembered as good before the memory starts over.
const MAX_ACCEPTED: usize = 1024;

impl WebConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--web-config {}", path.display()))?;
        let file: File = serde_yaml_ng::from_str::<Option<File>>(&text)
            .map_err(|err| anyhow::anyhow!("--web-config {}: {err}", path.display()))?
            .unwrap_or_default();
        // Paths in the file are relative to it, as exporter-toolkit has them.
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut read = vec![path.to_owned()];
        let tls = match file.tls_server_config {
            Some(tls) => Some(Arc::new(
                server_config(&tls, dir, &mut read)
                    .with_context(|| format!("--web-config {}", path.display()))?,
            )),
            None => None,
        };
        for (user, hash) in &file.basic_auth_users {
            if hash.parse::<bcrypt::HashParts>().is_err() {
                bail!(
                    "--web-config {}: basic_auth_users: {user}'s password is not a bcrypt hash \
                     (make one with `htpasswd -nBC 10 {user}`)",
                    path.display()
                );
            }
        }
        Ok(Self {
            path: path.to_owned(),
            read: RefCell::new(read.into_iter().map(|p| (p.clone(), changed(&p))).collect()),
            tls,
            users: file.basic_auth_users,
            accepted: RefCell::default(),
            checking: tokio::sync::Mutex::default(),
        })
    }

    /// The configuration as the files now say, if any of them changed since the last look;
    /// `Err` when they changed into something that cannot be served (the caller keeps what it
    /// has, and hears of it once per change).
    pub fn refresh(&self) -> Option<Result<Self>> {
        let mut any = false;
        for (path, when) in self.read.borrow_mut().iter_mut() {
            let now = changed(path);
            any |= now != *when;
            *when = now;
        }
        any.then(|| Self::load(&self.path))
    }

    pub fn needs_auth(&self) -> bool {
        !self.users.is_empty()
    }

    /// The credentials of an `Authorization: Basic` header. An unknown user's are checked
    /// against a stand-in hash (and fail): a refusal takes as long whether the user exists or
    /// not, as exporter-toolkit has it.
    pub fn credentials(&self, header: &[u8]) -> Option<Credentials> {
        let encoded = header.strip_prefix(b"Basic ")?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (user, password) = decoded.split_once(':')?;
        let (known, hash) = match self.users.get(user) {
            Some(hash) => (true, hash.clone()),
            None => (false, STAND_IN_HASH.to_owned()),
        };
        let digest = ring::digest::digest(
            &ring::digest::SHA256,
            [user, password, &hash].join("\0").as_bytes(),
        )
        .as_ref()
        .to_vec();
        Some(Credentials {
            password: password.to_owned(),
            hash,
            known,
            digest,
        })
    }

    pub fn accepted_before(&self, credentials: &Credentials) -> bool {
        self.accepted.borrow().contains(&credentials.digest)
    }

    pub fn accept(&self, credentials: Credentials) {
        let mut accepted = self.accepted.borrow_mut();
        if accepted.len() >= MAX_ACCEPTED {
            accepted.clear();
        }
        accepted.insert(credentials.digest);
    }
}

/// Credentials as sent, with the hash they must match.
pub struct Credentials {
    password: String,
    hash: String,
    /// Whether the user is one of the file's.
    known: bool,
    digest: Vec<u8>,
}

/// bcrypt of nothing anyone sends, at cost 10, the cost `htpasswd -B` gives.
const STAND_IN_HASH: &str = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi";

impl Credentials {
    /// bcrypt's check: slow on purpose, so run it off the serving thread.
    pub fn verify(&self) -> bool {
        let matches = bcrypt::verify(&self.password, &self.hash).unwrap_or(false);
        self.known && matches
    }
}

fn changed(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn server_config(tls: &TlsFile, dir: &Path, read: &mut Vec<PathBuf>) -> Result<ServerConfig> {
    // ring, not aws-lc-rs (whose post-quantum key exchange rustls now prefers): ring builds with
    // a plain C compiler for every target tracer ships (static musl, arm64, fuzz builds).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: Vec<_> = [
        (TlsVersion::TLS12, &rustls::version::TLS12),
        (TlsVersion::TLS13, &rustls::version::TLS13),
    ]
    .into_iter()
    .filter(|(version, _)| tls.min_version.is_none_or(|min| *version >= min))
    .filter(|(version, _)| tls.max_version.is_none_or(|max| *version <= max))
    .map(|(_, version)| version)
    .collect();
    if versions.is_empty() {
        bail!("tls_server_config: min_version is above max_version");
    }
    let builder =
        ServerConfig::builder_with_provider(provider.clone()).with_protocol_versions(&versions)?;
    let builder = match (tls.client_auth_type, &tls.client_ca_file) {
        (ClientAuth::NoClientCert, None) => builder.with_no_client_auth(),
        (ClientAuth::NoClientCert, Some(_)) => {
            bail!("tls_server_config: client_ca_file given but client_auth_type is NoClientCert")
        }
        (_, None) => bail!("tls_server_config: client_auth_type needs a client_ca_file"),
        (auth, Some(ca)) => {
            let ca = file(dir, ca, read);
            let mut roots = RootCertStore::empty();
            for cert in certificates(&ca)? {
                roots
                    .add(cert)
                    .with_context(|| format!("client_ca_file {}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider);
            let verifier = if auth == ClientAuth::VerifyClientCertIfGiven {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(verifier.build()?)
        }
    };
    let cert = file(dir, &tls.cert_file, read);
    let key = file(dir, &tls.key_file, read);
    let key = PrivateKeyDer::from_pem_file(&key)
        .map_err(|err| anyhow::anyhow!("key_file {}: {err}", key.display()))?;
    let mut config = builder
        .with_single_cert(certificates(&cert)?, key)
        .context("cert_file and key_file")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// `name` as the file means it, remembered to be watched.
fn file(dir: &Path, name: &Path, read: &mut Vec<PathBuf>) -> PathBuf {
    let path = dir.join(name);
    read.push(path.clone());
    path
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|err| anyhow::anyhow!("{}: {err}", path.display()))?;
    if certs.is_empty() {
        bail!("{}: no certificate in it", path.display());
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unknown user costs a bcrypt check of the same cost as a user's, and never passes.
    #[test]
    fn unknown_users_cost_a_check_and_fail() {
        let parts: bcrypt::HashParts = STAND_IN_HASH.parse().unwrap();
        assert_eq!(parts.get_cost(), 10);
        let credentials = Credentials {
            password: String::new(),
            hash: STAND_IN_HASH.to_owned(),
            known: false,
            digest: Vec::new(),
        };
        assert!(!credentials.verify());
    }
}
