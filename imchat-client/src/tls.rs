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

    /// The known-servers file for TLS trust on first use
    ///
    /// Default: imchat/known_servers in the user's data folder
    /// ($XDG_DATA_HOME, else ~/.local/share on Linux). One line per server:
    /// HOST:PORT and the certificate's SHA-256 fingerprint.
    #[arg(long, value_name = "FILE")]
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
        if !self.tls {
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
