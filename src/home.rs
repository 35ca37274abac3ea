//! The layout of `$PLINTH_HOME`.

use std::path::{Path, PathBuf};

use plinth_identity::Identity;

/// Paths inside the Plinth home directory.
#[derive(Clone, Debug)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Default config file.
    pub fn config_file(&self) -> PathBuf {
        self.root.join("plinth.toml")
    }

    /// The bearer token of the SCIM service.
    pub fn scim_token_file(&self) -> PathBuf {
        self.root.join("scim-token")
    }

    /// Default directory (people and groups) file.
    pub fn directory_file(&self) -> PathBuf {
        self.root.join("directory.yaml")
    }

    /// CA, server and client certificates.
    pub fn pki_dir(&self) -> PathBuf {
        self.root.join("pki")
    }

    /// The CA of the proxy's own client certificates to Temporal Cloud namespaces.
    pub fn upstream_pki_dir(&self) -> PathBuf {
        self.pki_dir().join("upstream")
    }

    pub fn ca_cert(&self) -> PathBuf {
        plinth_identity::CertificateAuthority::cert_path(&self.pki_dir())
    }

    pub fn server_cert(&self) -> PathBuf {
        self.pki_dir().join("server.pem")
    }

    pub fn server_key(&self) -> PathBuf {
        self.pki_dir().join("server.key")
    }

    /// Default directory of a client certificate for `identity`.
    pub fn client_dir(&self, identity: &Identity) -> PathBuf {
        let name = match identity {
            Identity::User { email } => format!("user-{email}"),
            Identity::App { name } => format!("app-{name}"),
        };
        self.pki_dir().join("clients").join(name)
    }

    /// What a running `plinth dev` serves, for scripts and tests.
    /// The key ring of key encryption keys.
    pub fn keyring(&self) -> PathBuf {
        self.root.join("keys").join("keyring.json")
    }

    pub fn dev_json(&self) -> PathBuf {
        self.root.join("dev.json")
    }

    /// What the `plinth dev` of this home wrote to `dev.json`, if it has (it removes the file
    /// when it stops).
    pub fn running_dev(&self) -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(self.dev_json()).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// The dev server's SQLite database.
    pub fn temporal_db(&self) -> PathBuf {
        self.root.join("temporal.db")
    }

    /// Where the audit trail goes when no destination is configured.
    pub fn archive_dir(&self) -> PathBuf {
        self.root.join("archive")
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }
}
