//! The server's TLS settings: a certificate and key from PEM files, or a
//! self-signed certificate made once and kept in the data folder. TLS is
//! on the server's one port: a server is either TLS or plaintext.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use imchat_core::blocking::tls::{fingerprint, pem_reason, provider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

/// Names of the self-signed certificate's files in the data folder.
const CERT_FILE: &str = "tls-cert.pem";
const KEY_FILE: &str = "tls-key.pem";

/// The TLS flags.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "TLS")]
pub struct TlsArgs {
    /// Serve TLS with this certificate chain (PEM), on the same port
    ///
    /// Every connection is then TLS: plaintext clients are refused. Needs
    /// --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// Serve TLS with a self-signed certificate made at the first start
    ///
    /// Kept in the data folder (see --data-dir) and used again at every
    /// start; its SHA-256 fingerprint is printed, for clients to compare
    /// with the one they are shown on first connecting (trust on first
    /// use). Delete its files there to get a new key.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    tls_self_signed: bool,

    /// The server's data folder (the self-signed certificate)
    ///
    /// Default: the platform's data folder + imchat-server/
    /// (~/.local/share/imchat-server on Linux). Created readable by its owner only.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

/// A TLS configuration ready to serve, and what to tell the operator.
#[derive(Debug)]
pub struct Loaded {
    pub config: Arc<ServerConfig>,
    /// The SHA-256 fingerprint of the certificate served.
    pub fingerprint: String,
    /// Where the certificate came from.
    pub source: String,
    /// The private key's file.
    pub key_file: PathBuf,
    /// The certificate is expired or not valid yet: every client refuses
    /// it (see [`validity_warning`]).
    pub warning: Option<String>,
}

impl TlsArgs {
    /// The configuration the flags ask for; `Ok(None)` without TLS flags.
    ///
    /// # Errors
    ///
    /// One line saying which file could not be read, made or used.
    pub fn load(&self) -> Result<Option<Loaded>, String> {
        let (cert, key, source) = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => (cert.clone(), key.clone(), cert.display().to_string()),
            _ if self.tls_self_signed => {
                let dir = match &self.data_dir {
                    Some(dir) => dir.clone(),
                    None => dirs::data_dir()
                        .ok_or("no data folder on this system: give one with --data-dir")?
                        .join("imchat-server"),
                };
                let made = self_signed(&dir)?;
                let cert = dir.join(CERT_FILE);
                let how = if made { "made now" } else { "kept" };
                let source = format!("self-signed, {how} in {}", dir.display());
                (cert, dir.join(KEY_FILE), source)
            }
            _ => return Ok(None),
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
            .and_then(Iterator::collect)
            .map_err(|e| {
                format!(
                    "cannot read the TLS certificate {}: {}",
                    cert.display(),
                    pem_reason(&e)
                )
            })?;
        let Some(first) = certs.first() else {
            return Err(format!("no certificate in {}", cert.display()));
        };
        let fingerprint = fingerprint(first.as_ref());
        let warning = validity_warning(first.as_ref(), unix_now());
        let key_file = key.clone();
        let key = PrivateKeyDer::from_pem_file(&key).map_err(|e| match e {
            rustls::pki_types::pem::Error::NoItemsFound => format!(
                "no private key in {} (is it the certificate? give the key with --tls-key)",
                key.display()
            ),
            e => format!(
                "cannot read the TLS key {}: {}",
                key.display(),
                pem_reason(&e)
            ),
        })?;
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
            .map_err(|e| match e {
                rustls::Error::InconsistentKeys(_) => format!(
                    "the TLS key is not the one of the certificate {} (give the key made with it)",
                    cert.display()
                ),
                e => format!("cannot use the TLS certificate and key: {e}"),
            })?;
        Ok(Some(Loaded {
            config: Arc::new(config),
            fingerprint,
            source,
            key_file,
            warning,
        }))
    }
}

/// Seconds since 1970 now.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The warning for a certificate (DER) that is not valid at `now` (Unix
/// seconds): expired, or not valid yet. Clients refuse such a certificate
/// whatever they trust, so the operator hears it at start rather than
/// from each client. `None` when it is valid, or cannot be parsed (rustls
/// then says what is wrong with it).
pub fn validity_warning(der: &[u8], now: i64) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let validity = cert.validity();
    let (after, before) = (&validity.not_after, &validity.not_before);
    if now > after.timestamp() {
        Some(format!(
            "warning: the TLS certificate expired on {}; every client will refuse it",
            after.to_datetime().date()
        ))
    } else if now < before.timestamp() {
        Some(format!(
            "warning: the TLS certificate is not valid before {}; every client will refuse it until then",
            before.to_datetime().date()
        ))
    } else {
        None
    }
}

/// Makes the self-signed certificate in `dir` unless both its files are
/// there. True when made now.
fn self_signed(dir: &Path) -> Result<bool, String> {
    let (cert, key) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
    if cert.exists() && key.exists() {
        return Ok(false);
    }
    let fail = |what: &Path, e: io::Error| format!("cannot write {}: {e}", what.display());
    private_dir(dir).map_err(|e| fail(dir, e))?;
    let names = vec!["localhost".to_owned()];
    let made = rcgen::generate_simple_self_signed(names)
        .map_err(|e| format!("cannot make a self-signed certificate: {e}"))?;
    // The key first: a certificate without its key would be kept.
    write_private(&key, made.signing_key.serialize_pem().as_bytes()).map_err(|e| fail(&key, e))?;
    write_private(&cert, made.cert.pem().as_bytes()).map_err(|e| fail(&cert, e))?;
    Ok(true)
}

/// Creates `dir` (and its parents) readable by its owner only.
fn private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Writes a new file readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_or_key_file_that_is_missing_is_said_in_words() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("none.pem");
        let dir = tmp.path().join("data");
        self_signed_in(&dir).load().unwrap().unwrap();
        let args = TlsArgs {
            tls_cert: Some(missing.clone()),
            tls_key: Some(dir.join(KEY_FILE)),
            ..TlsArgs::default()
        };
        let err = args.load().unwrap_err();
        assert_eq!(
            err,
            format!(
                "cannot read the TLS certificate {}: no such file or directory",
                missing.display()
            )
        );
        let args = TlsArgs {
            tls_cert: Some(dir.join(CERT_FILE)),
            tls_key: Some(missing.clone()),
            ..TlsArgs::default()
        };
        let err = args.load().unwrap_err();
        assert_eq!(
            err,
            format!(
                "cannot read the TLS key {}: no such file or directory",
                missing.display()
            )
        );
    }

    fn self_signed_in(dir: &Path) -> TlsArgs {
        TlsArgs {
            tls_self_signed: true,
            data_dir: Some(dir.to_owned()),
            ..TlsArgs::default()
        }
    }

    #[test]
    fn no_flags_no_tls() {
        assert!(TlsArgs::default().load().unwrap().is_none());
    }

    #[test]
    fn a_self_signed_certificate_is_made_once_with_private_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let first = self_signed_in(&dir).load().unwrap().unwrap();
        assert!(first.source.contains("made now"), "{}", first.source);
        let again = self_signed_in(&dir).load().unwrap().unwrap();
        assert!(again.source.contains("kept"), "{}", again.source);
        assert_eq!(first.fingerprint, again.fingerprint);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&dir), 0o700);
            assert_eq!(mode(&dir.join(KEY_FILE)), 0o600);
        }
        // A new key once the files are gone.
        fs::remove_file(dir.join(KEY_FILE)).unwrap();
        let renewed = self_signed_in(&dir).load().unwrap().unwrap();
        assert_ne!(renewed.fingerprint, first.fingerprint);
    }

    #[test]
    fn a_certificate_given_as_its_key_or_a_foreign_key_is_said_in_words() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        self_signed_in(&dir).load().unwrap().unwrap();
        let cert = dir.join(CERT_FILE);
        let with_key = |key: PathBuf| TlsArgs {
            tls_cert: Some(cert.clone()),
            tls_key: Some(key),
            ..TlsArgs::default()
        };
        let err = with_key(cert.clone()).load().unwrap_err();
        assert!(err.starts_with("no private key in "), "{err}");
        let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let foreign = tmp.path().join("other.key");
        fs::write(&foreign, other.signing_key.serialize_pem()).unwrap();
        let err = with_key(foreign).load().unwrap_err();
        assert!(
            err.starts_with("the TLS key is not the one of the certificate "),
            "{err}"
        );
    }

    #[test]
    fn an_expired_or_future_certificate_is_warned_about() {
        let made = |before: (i32, u8, u8), after: (i32, u8, u8)| {
            let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
            params.not_before = rcgen::date_time_ymd(before.0, before.1, before.2);
            params.not_after = rcgen::date_time_ymd(after.0, after.1, after.2);
            let key = rcgen::KeyPair::generate().unwrap();
            params.self_signed(&key).unwrap().der().to_vec()
        };
        // 2021-01-01T00:00:00Z.
        let now = 1_609_459_200;
        let expired = made((2019, 1, 1), (2020, 2, 1));
        assert_eq!(
            validity_warning(&expired, now).as_deref(),
            Some("warning: the TLS certificate expired on 2020-02-01; every client will refuse it")
        );
        let future = made((2022, 3, 4), (2030, 1, 1));
        let line = validity_warning(&future, now).unwrap();
        assert!(
            line.starts_with("warning: the TLS certificate is not valid before 2022-03-04"),
            "{line}"
        );
        let valid = made((2020, 1, 1), (2030, 1, 1));
        assert_eq!(validity_warning(&valid, now), None);
        assert_eq!(validity_warning(b"not a certificate", now), None);
    }

    #[test]
    fn a_missing_certificate_file_is_one_line_naming_it() {
        let args = TlsArgs {
            tls_cert: Some("/nonexistent/cert.pem".into()),
            tls_key: Some("/nonexistent/key.pem".into()),
            ..TlsArgs::default()
        };
        let err = args.load().unwrap_err();
        assert!(
            err.contains("/nonexistent/cert.pem") && !err.contains('\n'),
            "{err}"
        );
    }
}
