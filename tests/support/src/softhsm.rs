//! A real PKCS#11 token for tests: SoftHSM2 (Debian's `softhsm2`), its token files in a
//! directory of its own, initialised with `softhsm2-util`. SoftHSM finds its configuration
//! through `SOFTHSM2_CONF`, which every process using the token must get ([`SoftHsm::env`]).

use std::path::PathBuf;
use std::process::Command;

/// An initialised token; its files go when it is dropped, or, once [`SoftHsm::shared`], when
/// the test process ends.
#[derive(Debug)]
pub struct SoftHsm {
    dir: tempfile::TempDir,
    janitor: Option<crate::Janitor>,
    /// The token's label.
    pub label: String,
    /// Its user PIN.
    pub pin: String,
}

impl SoftHsm {
    /// Initialises a token labelled `label` in a new directory.
    pub fn new(label: &str) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("softhsm-").tempdir()?;
        std::fs::create_dir(dir.path().join("tokens"))?;
        let hsm = Self {
            label: label.to_owned(),
            pin: "4711-0815".into(),
            dir,
            janitor: None,
        };
        std::fs::write(
            hsm.conf(),
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                hsm.dir.path().join("tokens").display()
            ),
        )?;
        let output = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", hsm.conf())
            .args(["--init-token", "--free", "--label", label])
            .args(["--pin", &hsm.pin, "--so-pin", "so-4711-0815"])
            .output()?;
        anyhow::ensure!(
            output.status.success(),
            "softhsm2-util --init-token: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(hsm)
    }

    /// Makes this token a fixture that a test binary's tests share through a static, which is
    /// never dropped: its files are removed when the test process ends.
    pub fn shared(mut self) -> anyhow::Result<Self> {
        self.janitor = Some(crate::Janitor::remove_at_exit(self.dir.path())?);
        Ok(self)
    }

    /// The configuration file SoftHSM reads.
    pub fn conf(&self) -> PathBuf {
        self.dir.path().join("softhsm2.conf")
    }

    /// The environment a process needs to find this token.
    pub fn env(&self) -> (&'static str, String) {
        ("SOFTHSM2_CONF", self.conf().display().to_string())
    }

    /// A file holding the PIN, as `[keys] pkcs11_pin_file` reads it.
    pub fn pin_file(&self) -> anyhow::Result<PathBuf> {
        let path = self.dir.path().join("pin");
        std::fs::write(&path, &self.pin)?;
        Ok(path)
    }
}
