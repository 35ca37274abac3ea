//! Key encryption keys in a hardware security module: a real SoftHSM2 token, reached over
//! PKCS#11 by real `plinth` processes with `[keys] provider = "pkcs11"`, in front of a
//! Temporal dev server. Payloads are read back around the proxy, from Temporal itself.

use std::sync::OnceLock;

use plinth_test_harness::cli::{ok, stdout, text};
use plinth_test_harness::sealed::{
    data, metadata, rotation_reaches_the_running_proxy, shown_input, start, stored_payload,
};
use plinth_test_harness::{PAYMENTS_MEMBER, PlinthStack, SoftHsm};

const PLINTH: &str = env!("CARGO_BIN_EXE_plinth");

/// A stack whose keys live in a token of its own, with a namespace the payments team
/// writes, and a profile for it.
struct Fixture {
    _hsm: SoftHsm,
    stack: PlinthStack,
    ns: String,
    profile: std::path::PathBuf,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let hsm = SoftHsm::new("plinth-test")
            .and_then(SoftHsm::shared)
            .unwrap();
        let keys = format!(
            "[keys]\nprovider = \"pkcs11\"\npkcs11_token = \"{}\"\npkcs11_pin_file = \"{}\"\n",
            hsm.label,
            hsm.pin_file().unwrap().display()
        );
        let stack = PlinthStack::start_shared(PLINTH.as_ref(), &keys, &[hsm.env()]).unwrap();
        let ns = format!("vaulted-{}", std::process::id());
        stack.provision_for_team("vaulted", &ns).unwrap();
        let profile = stack.profile(PAYMENTS_MEMBER, &ns).unwrap();
        Fixture {
            _hsm: hsm,
            stack,
            ns,
            profile,
        }
    })
}

#[test]
fn payloads_are_stored_sealed_under_the_tokens_key_and_no_key_file_exists() {
    let f = fixture();
    let marker = format!("hsm-secret-{}", std::process::id());
    start(&f.profile, "sealed-by-hsm", &marker);
    let payload = stored_payload(&f.stack, &f.ns, "sealed-by-hsm");
    assert_eq!(metadata(&payload, "encoding"), "binary/encrypted");
    let key = metadata(&payload, "encryption-key-id");
    assert!(key.starts_with("kek-"), "{payload}");
    let listed = stdout(&ok(f.stack.plinth(&["keys", "list"])));
    assert!(listed.contains(&key), "a key of the token: {listed}");
    assert!(!data(&payload).contains(&marker), "stored in plaintext");
    assert!(
        !f.stack.home().join("keys/keyring.json").exists(),
        "no key sits on disk"
    );
    assert_eq!(
        shown_input(&f.profile, "sealed-by-hsm"),
        format!("\"{marker}\""),
        "the writer reads it back through the proxy"
    );
}

#[test]
fn a_key_rotated_in_the_token_seals_new_payloads_without_a_restart() {
    let f = fixture();
    rotation_reaches_the_running_proxy(&f.stack, &f.profile, &f.ns);
}

#[test]
fn keys_cannot_be_imported_into_the_token() {
    let f = fixture();
    let key_file = f.stack.home().join("samples.key");
    std::fs::write(&key_file, [7u8; 32]).unwrap();
    let out = f.stack.plinth(&[
        "keys",
        "import",
        "--id",
        "samples",
        "--from",
        key_file.to_str().unwrap(),
        "--namespace",
        &f.ns,
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("made inside it and never leave"),
        "{}",
        text(&out)
    );
}
