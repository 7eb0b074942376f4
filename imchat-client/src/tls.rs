//! The client's TLS flags and how they become a [`Trust`].

use std::path::PathBuf;

use clap::Args;
use imchat_core::blocking::tls::Trust;

/// The TLS flags.
#[derive(Debug, Clone, Default, Args)]
pub struct TlsArgs {
    /// Connect with TLS (the server runs with --tls-cert or --tls-self-signed)
    ///
    /// The certificate is checked against the system's trusted roots. One
    /// they do not vouch for (a self-signed server) is trusted on first use,
    /// as SSH does: its SHA-256 fingerprint is shown (compare it with the
    /// one the server printed) and kept in the known-servers file; if that
    /// server later shows another certificate, the client refuses to connect.
    #[arg(long)]
    tls: bool,

    /// With TLS, trust only certificates issued by the CAs in this PEM file (implies --tls)
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,

    /// The known-servers file for TLS trust on first use (implies --tls)
    ///
    /// Default: imchat/known_servers in the user's data folder
    /// ($XDG_DATA_HOME, else ~/.local/share on Linux). One line per server:
    /// HOST:PORT and the certificate's SHA-256 fingerprint.
    #[arg(long, value_name = "FILE", conflicts_with = "tls_ca")]
    known_servers: Option<PathBuf>,
}

impl TlsArgs {
    /// How to trust the server; `None`: plaintext.
    ///
    /// # Errors
    ///
    /// When trust on first use is needed and there is no data folder.
    pub fn trust(self) -> Result<Option<Trust>, String> {
        if let Some(ca) = self.tls_ca {
            return Ok(Some(Trust::CaFile(ca)));
        }
        // A known-servers file is only for TLS: given alone, it asks for
        // TLS, rather than being ignored by a plaintext connection (which
        // a man in the middle answering in plaintext would then get).
        if !self.tls && self.known_servers.is_none() {
            return Ok(None);
        }
        let known_servers = match self.known_servers {
            Some(path) => path,
            None => dirs::data_dir()
                .ok_or("no data folder for the known-servers file: give one with --known-servers")?
                .join("imchat")
                .join("known_servers"),
        };
        Ok(Some(Trust::SystemOrKnown { known_servers }))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        tls: TlsArgs,
    }

    fn trust(args: &[&str]) -> Option<Trust> {
        let cli = Cli::try_parse_from(std::iter::once("imchat-client").chain(args.iter().copied()))
            .expect("the flags parse");
        cli.tls.trust().expect("a trust")
    }

    #[test]
    fn a_known_servers_file_alone_means_tls_not_plaintext() {
        let got = trust(&["--known-servers", "ks"]);
        assert!(
            matches!(&got, Some(Trust::SystemOrKnown { known_servers }) if known_servers == Path::new("ks")),
            "{got:?}"
        );
    }

    #[test]
    fn no_tls_flag_is_plaintext() {
        assert!(trust(&[]).is_none());
    }

    #[test]
    fn a_known_servers_file_with_a_ca_file_is_refused() {
        let err = Cli::try_parse_from([
            "imchat-client",
            "--tls-ca",
            "ca.pem",
            "--known-servers",
            "ks",
        ])
        .expect_err("the two flags conflict");
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
    }
}
