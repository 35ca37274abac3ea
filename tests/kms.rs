//! Key encryption keys in AWS KMS: real `plinth` processes with `[keys] provider = "aws-kms"`
//! in front of a Temporal dev server, against a KMS stand-in (`moto` in server mode, which
//! speaks the KMS protocol; it is not AWS). Payloads are read back around the proxy, from
//! Temporal itself, and their data keys opened by `boto3`, AWS's own SDK.

use std::sync::OnceLock;

use plinth_test_harness::cli::{ok, stdout, temporal, temporal_as, text, wait_for};
use plinth_test_harness::{DevServer, KmsStandIn, PAYMENTS_MEMBER, PlinthStack};

const PLINTH: &str = env!("CARGO_BIN_EXE_plinth");

/// A stack whose keys live in the stand-in, with a namespace the payments team writes, and
/// a profile for it.
struct Fixture {
    kms: KmsStandIn,
    stack: PlinthStack,
    ns: String,
    profile: std::path::PathBuf,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let kms = KmsStandIn::start().unwrap();
        let keys = format!(
            "[keys]\nprovider = \"aws-kms\"\naws_kms_key = \"alias/plinth-e2e\"\n\
             aws_kms_endpoint = \"{}\"\n",
            kms.endpoint()
        );
        let env = kms.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let stack = PlinthStack::start_in(
            DevServer::shared(),
            PLINTH.as_ref(),
            "10m",
            "3s",
            "",
            &keys,
            &env,
        )
        .and_then(PlinthStack::shared)
        .unwrap();
        let ns = format!("kms-{}", std::process::id());
        stack.provision_for_team("kms", &ns).unwrap();
        let profile = stack.profile(PAYMENTS_MEMBER, &ns).unwrap();
        Fixture {
            kms,
            stack,
            ns,
            profile,
        }
    })
}

/// Starts workflow `id` through the proxy with `input`.
fn start(f: &Fixture, id: &str, input: &str) {
    ok(temporal_as(
        &f.profile,
        &[
            "workflow",
            "start",
            "--type",
            "Kept",
            "--task-queue",
            "nobody",
            "-w",
            id,
            "--input",
            &format!("\"{input}\""),
        ],
    ));
}

/// Workflow `id`'s first input as Temporal stores it, read around the proxy: its metadata
/// (base64 values) and data (base64).
fn stored_input(f: &Fixture, id: &str) -> serde_json::Value {
    let shown = ok(temporal(
        &[
            "workflow",
            "show",
            "-w",
            id,
            "--namespace",
            &f.ns,
            "-o",
            "json",
        ],
        &f.stack.temporal_address,
    ));
    let history: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    history["events"][0]["workflowExecutionStartedEventAttributes"]["input"]["payloads"][0].clone()
}

fn metadata(payload: &serde_json::Value, key: &str) -> String {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(payload["metadata"][key].as_str().unwrap_or_default())
        .unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Workflow `id`'s input as the writer reads it through the proxy.
fn shown_input(f: &Fixture, id: &str) -> String {
    use base64::Engine;
    let shown = ok(temporal_as(
        &f.profile,
        &["workflow", "show", "-w", id, "-o", "json"],
    ));
    let history: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    let data = &history["events"][0]["workflowExecutionStartedEventAttributes"]["input"]["payloads"]
        [0]["data"];
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data.as_str().unwrap_or_default())
        .unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The active installation key, as `plinth keys list` shows it.
fn active_key(stack: &PlinthStack) -> String {
    let listed = ok(stack.plinth(&["keys", "list"]));
    stdout(&listed)
        .lines()
        .find(|line| line.ends_with(" active"))
        .and_then(|line| line.split_whitespace().next())
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn payloads_are_stored_sealed_under_a_kms_key_whose_data_key_boto3_opens() {
    let f = fixture();
    let marker = format!("kms-secret-{}", std::process::id());
    start(f, "sealed-by-kms", &marker);
    let payload = stored_input(f, "sealed-by-kms");
    assert_eq!(metadata(&payload, "encoding"), "binary/encrypted");
    let key = metadata(&payload, "encryption-key-id");
    assert!(key.starts_with("arn:aws:kms:"), "{payload}");
    assert!(
        !payload.to_string().contains(&marker),
        "stored in plaintext"
    );
    assert!(
        !f.stack.home().join("keys/keyring.json").exists(),
        "no key sits on disk"
    );
    // The data key in Temporal's copy opens with AWS's own SDK, for this namespace only.
    let opened = f
        .kms
        .boto3(&format!(
            "blob = base64.b64decode({:?})\n\
             out = kms.decrypt(KeyId={key:?}, CiphertextBlob=blob, \
             EncryptionContext={{'plinth': 'dek/v1', 'namespace': {:?}}})\n\
             print(len(out['Plaintext']))\n\
             try:\n    kms.decrypt(KeyId={key:?}, CiphertextBlob=blob, \
             EncryptionContext={{'plinth': 'dek/v1', 'namespace': 'other'}})\n    print('other opened')\n\
             except kms.exceptions.InvalidCiphertextException:\n    print('other refused')\n",
            payload["metadata"]["encryption-dek"].as_str().unwrap_or_default(),
            f.ns
        ))
        .unwrap();
    assert_eq!(opened.lines().collect::<Vec<_>>(), ["32", "other refused"]);
    assert_eq!(
        shown_input(f, "sealed-by-kms"),
        format!("\"{marker}\""),
        "the writer reads it back through the proxy"
    );
}

#[test]
fn a_key_rotated_in_kms_seals_new_payloads_without_a_restart() {
    let f = fixture();
    start(f, "before-rotation", "old");
    let before = active_key(&f.stack);
    let rotated = ok(f.stack.plinth(&["keys", "rotate"]));
    let after = active_key(&f.stack);
    assert_ne!(before, after, "{}", text(&rotated));
    let mut n = 0;
    wait_for("the running proxy to seal with the new key", || {
        n += 1;
        let id = format!("after-rotation-{n}");
        start(f, &id, "new");
        metadata(&stored_input(f, &id), "encryption-key-id") == after
    });
    assert_eq!(
        shown_input(f, "before-rotation"),
        "\"old\"",
        "the old key still opens"
    );
}
