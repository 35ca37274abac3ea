//! A stand-in for AWS KMS: `moto` in server mode (PyPI, pinned in scripts/ensure-tools.sh),
//! which speaks the KMS JSON protocol with SigV4-signed requests as AWS does. It is not AWS:
//! it keeps keys in memory. Where moto departs from KMS's public contract in what Plinth
//! relies on, [`FAITHFUL`] brings it back. `boto3`, AWS's own SDK for Python, talks to it as
//! the independent client of cross-checks.

use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::{Guarded, free_port};

/// A running moto KMS; stopped when dropped.
#[derive(Debug)]
pub struct KmsStandIn {
    _process: Guarded,
    _dir: tempfile::TempDir,
    port: u16,
}

/// moto's server, made to keep three rules of KMS's API reference that moto 5.2 does not:
/// `Encrypt` and `Decrypt` refuse a key that is not enabled (`DisabledException`,
/// `KMSInvalidStateException`), `DisableKey` and `ScheduleKeyDeletion` refuse a key pending
/// deletion (`KMSInvalidStateException`), and key management calls take a key ARN as well as
/// its id.
const FAITHFUL: &str = r#"
import sys
from moto.core.exceptions import JsonRESTError
from moto.kms.models import KmsBackend

def usable(backend, key_id):
    key = backend.keys[backend.any_id_to_key_id(key_id)]
    if key.key_state == "Disabled":
        raise JsonRESTError("DisabledException", f"{key.arn} is disabled.")
    if key.key_state != "Enabled":
        raise JsonRESTError("KMSInvalidStateException", f"{key.arn} is {key.key_state}.")

encrypt, decrypt = KmsBackend.encrypt, KmsBackend.decrypt
def checked_encrypt(self, key_id, plaintext, encryption_context):
    usable(self, key_id)
    return encrypt(self, key_id, plaintext, encryption_context)
def checked_decrypt(self, ciphertext_blob, encryption_context, key_id=None):
    plaintext, arn = decrypt(self, ciphertext_blob, encryption_context, key_id)
    usable(self, arn)
    return plaintext, arn
KmsBackend.encrypt, KmsBackend.decrypt = checked_encrypt, checked_decrypt

disable, schedule = KmsBackend.disable_key, KmsBackend.schedule_key_deletion
def not_pending(backend, key_id):
    key = backend.keys[backend.any_id_to_key_id(key_id)]
    if key.key_state == "PendingDeletion":
        raise JsonRESTError("KMSInvalidStateException", f"{key.arn} is pending deletion.")
def checked_disable(self, key_id):
    not_pending(self, key_id)
    return disable(self, key_id)
def checked_schedule(self, key_id, pending_window_in_days):
    not_pending(self, key_id)
    return schedule(self, key_id, pending_window_in_days)
KmsBackend.disable_key, KmsBackend.schedule_key_deletion = checked_disable, checked_schedule

def by_any_id(method):
    def call(self, key_id, *args, **kwargs):
        return method(self, self.any_id_to_key_id(key_id), *args, **kwargs)
    return call
for name in ("disable_key", "enable_key", "cancel_key_deletion", "schedule_key_deletion"):
    setattr(KmsBackend, name, by_any_id(getattr(KmsBackend, name)))

from moto.server import main
main(sys.argv[1:])
"#;

/// The region and made-up credentials every client of the stand-in uses.
const REGION: &str = "eu-central-1";
const ACCESS_KEY: &str = "AKIAPLINTHTEST";
const SECRET_KEY: &str = "plinth-test-secret";

impl KmsStandIn {
    /// Starts it on a free port and waits until it accepts connections.
    pub fn start() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("kms-stand-in-").tempdir()?;
        let port = free_port();
        let mut command = Command::new("python3");
        command.args(["-c", FAITHFUL, "-H", "127.0.0.1", "-p", &port.to_string()]);
        let process = Guarded::spawn(&command, &dir.path().join("moto.log"))
            .context("start moto (PyPI moto[server]; scripts/test installs it)")?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!(
                    "moto not listening in 60 s: {}",
                    std::fs::read_to_string(dir.path().join("moto.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(Self {
            _process: process,
            _dir: dir,
            port,
        })
    }

    /// `http://127.0.0.1:<port>`, as `[keys] aws_kms_endpoint` takes it.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What a process needs to reach it through the AWS credential chain: credentials and
    /// region from the environment, as on a machine without a profile.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", REGION.into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }

    /// Runs `script` with `kms`, a boto3 client of this stand-in, in scope; returns what it
    /// printed.
    pub fn boto3(&self, script: &str) -> anyhow::Result<String> {
        boto3_at(&self.endpoint(), script)
    }
}

/// Runs `script` with `kms`, a boto3 KMS client of the stand-in at `endpoint`, in scope;
/// returns what it printed.
pub fn boto3_at(endpoint: &str, script: &str) -> anyhow::Result<String> {
    let client = format!(
        "kms = boto3.client('kms', endpoint_url={endpoint:?}, region_name={REGION:?}, \
         aws_access_key_id={ACCESS_KEY:?}, aws_secret_access_key={SECRET_KEY:?})"
    );
    crate::run_boto3(&client, script)
}
