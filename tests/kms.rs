//! Key encryption keys in AWS KMS: real `plinth` processes with `[keys] provider = "aws-kms"`
//! in front of a Temporal dev server, against a KMS stand-in (`moto` in server mode, which
//! speaks the KMS protocol; it is not AWS). Payloads are read back around the proxy, from
//! Temporal itself, and their data keys opened by `boto3`, AWS's own SDK.

use std::sync::OnceLock;

use plinth_test_harness::sealed::{
    data, metadata, rotation_reaches_the_running_proxy, shown_input, start, stored_payload,
};
use plinth_test_harness::{KmsStandIn, PAYMENTS_MEMBER, PlinthStack};

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
        let stack = PlinthStack::start_shared(PLINTH.as_ref(), &keys, &kms.env()).unwrap();
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

#[test]
fn payloads_are_stored_sealed_under_a_kms_key_whose_data_key_boto3_opens() {
    let f = fixture();
    let marker = format!("kms-secret-{}", std::process::id());
    start(&f.profile, "sealed-by-kms", &marker);
    let payload = stored_payload(&f.stack, &f.ns, "sealed-by-kms");
    assert_eq!(metadata(&payload, "encoding"), "binary/encrypted");
    let key = metadata(&payload, "encryption-key-id");
    assert!(key.starts_with("arn:aws:kms:"), "{payload}");
    assert!(!data(&payload).contains(&marker), "stored in plaintext");
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
        shown_input(&f.profile, "sealed-by-kms"),
        format!("\"{marker}\""),
        "the writer reads it back through the proxy"
    );
}

#[test]
fn a_key_rotated_in_kms_seals_new_payloads_without_a_restart() {
    let f = fixture();
    rotation_reaches_the_running_proxy(&f.stack, &f.profile, &f.ns);
}
