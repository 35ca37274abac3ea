//! A real OpenLDAP server (Debian's `slapd`) on free loopback ports, LDAPS on one and plain
//! LDAP (for StartTLS) on the other, with a certificate of its own CA, the data of an LDIF
//! loaded before it starts, and only its service account allowed to read. Stopped and
//! removed when dropped; `ldapmodify` and friends (Debian's `ldap-utils`) change it while it
//! runs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use plinth_identity::CertificateAuthority;

use crate::{Guarded, Janitor, free_port};

/// The suffix of every entry.
pub const LDAP_SUFFIX: &str = "dc=example,dc=com";
/// The account Plinth binds as, and its password.
pub const LDAP_SERVICE_DN: &str = "cn=plinth,dc=example,dc=com";
pub const LDAP_SERVICE_PASSWORD: &str = "plinth-reads-the-directory";
const ADMIN_DN: &str = "cn=admin,dc=example,dc=com";
const ADMIN_PASSWORD: &str = "admin-secret";

/// A running `slapd`.
#[derive(Debug)]
pub struct Slapd {
    process: Option<Guarded>,
    dir: tempfile::TempDir,
    ldaps_port: u16,
    ldap_port: u16,
    _janitor: Janitor,
}

impl Slapd {
    /// Loads `ldif` (entries under [`LDAP_SUFFIX`]; the suffix and the service account are
    /// added here) and starts serving.
    pub fn start(ldif: &str) -> anyhow::Result<Slapd> {
        let dir = tempfile::Builder::new()
            .prefix("plinth-test-slapd-")
            .tempdir()?;
        let path = dir.path();
        let authority = CertificateAuthority::generate("slapd test CA")?;
        std::fs::write(path.join("ca.pem"), authority.cert_pem())?;
        authority
            .issue_server(
                &["localhost".into(), "127.0.0.1".into()],
                Duration::from_secs(86_400),
            )?
            .write(&path.join("server.pem"), &path.join("server.key"))?;
        std::fs::create_dir(path.join("data"))?;
        std::fs::write(path.join("slapd.conf"), config(path))?;
        let base = format!(
            "dn: {LDAP_SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\n\
             o: Example\n\n\
             dn: {LDAP_SERVICE_DN}\nobjectClass: person\ncn: plinth\nsn: plinth\n\
             userPassword: {LDAP_SERVICE_PASSWORD}\n\n{ldif}"
        );
        std::fs::write(path.join("data.ldif"), base)?;
        std::fs::write(
            path.join("service-password"),
            format!("{LDAP_SERVICE_PASSWORD}\n"),
        )?;
        let loaded = Command::new(slapd_tool("slapadd"))
            .arg("-f")
            .arg(path.join("slapd.conf"))
            .arg("-l")
            .arg(path.join("data.ldif"))
            .output()
            .context("run slapadd (Debian package `slapd`; scripts/test installs it)")?;
        if !loaded.status.success() {
            bail!("slapadd: {}", String::from_utf8_lossy(&loaded.stderr));
        }
        let mut slapd = Slapd {
            process: None,
            ldaps_port: free_port(),
            ldap_port: free_port(),
            _janitor: Janitor::remove_at_exit(path)?,
            dir,
        };
        slapd.resume()?;
        Ok(slapd)
    }

    /// `ldaps://127.0.0.1:port`.
    pub fn ldaps_url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.ldaps_port)
    }

    /// `ldap://127.0.0.1:port`, which offers StartTLS.
    pub fn ldap_url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.ldap_port)
    }

    /// A file holding [`LDAP_SERVICE_PASSWORD`], as Plinth reads it.
    pub fn password_file(&self) -> PathBuf {
        self.dir.path().join("service-password")
    }

    /// The CA bundle the server's certificate chains to.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Stops serving, as an outage would; the data stays.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Serves again after [`Slapd::stop`], and waits until it answers.
    pub fn resume(&mut self) -> anyhow::Result<()> {
        let mut command = Command::new(slapd_tool("slapd"));
        command
            .arg("-d")
            .arg("0")
            .arg("-f")
            .arg(self.dir.path().join("slapd.conf"))
            .arg("-h")
            .arg(format!("{}/ {}/", self.ldaps_url(), self.ldap_url()));
        let log = self.dir.path().join("slapd.log");
        let mut process = Guarded::spawn(&command, &log).context("start slapd")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.whoami().is_err() {
            if let Some(status) = process.try_wait()? {
                bail!("slapd exited ({status}): {}", self.log());
            }
            if Instant::now() > deadline {
                bail!("slapd not answering in 30 s: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.process = Some(process);
        Ok(())
    }

    fn whoami(&self) -> anyhow::Result<()> {
        let output = self.tool("ldapwhoami", &[])?;
        if output.status.success() {
            Ok(())
        } else {
            bail!("{}", String::from_utf8_lossy(&output.stderr))
        }
    }

    /// Applies `ldif` with `ldapmodify` as the directory's administrator (`changetype`
    /// records; plain entries are added).
    pub fn modify(&self, ldif: &str) -> anyhow::Result<()> {
        let file = self.dir.path().join("change.ldif");
        std::fs::write(&file, ldif)?;
        let output = self.tool("ldapmodify", &["-a", "-f", file.to_str().context("path")?])?;
        if !output.status.success() {
            bail!("ldapmodify: {}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(())
    }

    /// Runs an `ldap-utils` tool against the plain port, bound as the administrator.
    fn tool(&self, name: &str, args: &[&str]) -> anyhow::Result<std::process::Output> {
        Command::new(name)
            .args([
                "-x",
                "-H",
                &self.ldap_url(),
                "-D",
                ADMIN_DN,
                "-w",
                ADMIN_PASSWORD,
            ])
            .args(args)
            .output()
            .with_context(|| format!("run {name} (Debian package `ldap-utils`)"))
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("slapd.log")).unwrap_or_default()
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Debian keeps the server and its tools in /usr/sbin, off a user's PATH.
fn slapd_tool(name: &str) -> PathBuf {
    let sbin = Path::new("/usr/sbin").join(name);
    if sbin.exists() { sbin } else { name.into() }
}

/// A server of the schemas people and groups need, one database, and access for the
/// service account alone (anonymous readers see nothing).
fn config(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "include /etc/ldap/schema/core.schema\n\
         include /etc/ldap/schema/cosine.schema\n\
         include /etc/ldap/schema/inetorgperson.schema\n\
         modulepath /usr/lib/ldap\n\
         moduleload back_mdb\n\
         pidfile {d}/slapd.pid\n\
         TLSCACertificateFile {d}/ca.pem\n\
         TLSCertificateFile {d}/server.pem\n\
         TLSCertificateKeyFile {d}/server.key\n\
         database mdb\n\
         maxsize 104857600\n\
         suffix \"{LDAP_SUFFIX}\"\n\
         rootdn \"{ADMIN_DN}\"\n\
         rootpw {ADMIN_PASSWORD}\n\
         directory {d}/data\n\
         access to attrs=userPassword by anonymous auth by * none\n\
         access to * by dn.exact=\"{LDAP_SERVICE_DN}\" read by * none\n"
    )
}
