//! Key encryption keys in a hardware security module: a real SoftHSM2 token, reached over
//! PKCS#11 by real `plinth` processes with `[keys] provider = "pkcs11"`, in front of a
//! Temporal dev server. Payloads are read back around the proxy, from Temporal itself.

use std::sync::OnceLock;

use plinth_test_harness::cli::{ok, stdout, temporal, temporal_as, text, wait_for};
use plinth_test_harness::{DevServer, PAYMENTS_MEMBER, PlinthStack, SoftHsm};

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
        let (name, value) = hsm.env();
        let stack = PlinthStack::start_in(
            DevServer::shared(),
            PLINTH.as_ref(),
            "10m",
            "3s",
            "",
            &keys,
            &[(name, &value)],
        )
        .and_then(PlinthStack::shared)
        .unwrap();
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

/// Starts workflow `id` through the proxy with `input`.
fn start(f: &Fixture, id: &str, input: &str) {
    ok(temporal_as(
        &f.profile,
        &[
            "workflow",
            "start",
            "--type",
            "Vaulted",
            "--task-queue",
            "nobody",
            "-w",
            id,
            "--input",
            &format!("\"{input}\""),
        ],
    ));
}

/// The first event's input in a `workflow show -o json`: `(metadata key → value, data)`,
/// decoded to text.
fn first_input(
    shown: &std::process::Output,
) -> (serde_json::Map<String, serde_json::Value>, String) {
    use base64::Engine;
    let decode = |v: &serde_json::Value| {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    let history: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    let payload =
        &history["events"][0]["workflowExecutionStartedEventAttributes"]["input"]["payloads"][0];
    let metadata = payload["metadata"]
        .as_object()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            let text = decode(&v);
            (k, serde_json::Value::String(text))
        })
        .collect();
    (metadata, decode(&payload["data"]))
}

/// Workflow `id`'s input as Temporal stores it, read around the proxy.
fn stored_input(f: &Fixture, id: &str) -> (serde_json::Map<String, serde_json::Value>, String) {
    first_input(&ok(temporal(
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
    )))
}

/// Workflow `id`'s input as the writer reads it through the proxy.
fn shown_input(f: &Fixture, id: &str) -> String {
    first_input(&ok(temporal_as(
        &f.profile,
        &["workflow", "show", "-w", id, "-o", "json"],
    )))
    .1
}

/// The active key of the token, as `plinth keys list` shows it.
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
fn payloads_are_stored_sealed_under_the_tokens_key_and_no_key_file_exists() {
    let f = fixture();
    let marker = format!("hsm-secret-{}", std::process::id());
    start(f, "sealed-by-hsm", &marker);
    let (metadata, data) = stored_input(f, "sealed-by-hsm");
    assert_eq!(metadata["encoding"], "binary/encrypted");
    let key = metadata["encryption-key-id"].as_str().unwrap_or_default();
    assert!(key.starts_with("kek-"), "{metadata:?}");
    let listed = stdout(&ok(f.stack.plinth(&["keys", "list"])));
    assert!(listed.contains(key), "a key of the token: {listed}");
    assert!(!data.contains(&marker), "stored in plaintext");
    assert!(
        !f.stack.home().join("keys/keyring.json").exists(),
        "no key sits on disk"
    );
    assert_eq!(
        shown_input(f, "sealed-by-hsm"),
        format!("\"{marker}\""),
        "the writer reads it back through the proxy"
    );
}

#[test]
fn a_key_rotated_in_the_token_seals_new_payloads_without_a_restart() {
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
        stored_input(f, &id).0["encryption-key-id"] == after.as_str()
    });
    // The old key still opens what it sealed.
    assert_eq!(shown_input(f, "before-rotation"), "\"old\"");
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
