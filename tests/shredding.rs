//! Crypto-shredding: a namespace deleted with `spec.shredOnDelete` has its own key destroyed
//! once `[keys] shred_delay` has passed, so a copy of its history taken before (an export, a
//! backup) no longer opens, while other namespaces' copies do; `plinth keys restore` within
//! the delay keeps the key. Real `plinth` processes with namespaces' own keys in the key ring
//! file, in front of a Temporal dev server.

use std::path::PathBuf;
use std::sync::OnceLock;

use plinth_test_harness::cli::{ok, stdout, text, wait_for};
use plinth_test_harness::sealed::{data, start, stored_payload};
use plinth_test_harness::{ADMIN, DevServer, PAYMENTS_MEMBER, PlinthStack};

const PLINTH: &str = env!("CARGO_BIN_EXE_plinth");
/// Long enough to restore in after `plinth delete --wait` returns, short enough to wait out.
const SHRED_DELAY: &str = "15s";

fn stack() -> &'static PlinthStack {
    static STACK: OnceLock<PlinthStack> = OnceLock::new();
    STACK.get_or_init(|| {
        PlinthStack::start_in(
            DevServer::shared(),
            PLINTH.as_ref(),
            "10m",
            "3s",
            "",
            &format!("[keys]\nper_namespace = true\nshred_delay = \"{SHRED_DELAY}\"\n"),
            &[],
        )
        .and_then(PlinthStack::shared)
        .unwrap()
    })
}

/// Provisions namespace `name` for the payments team (deletable, shredded on delete when
/// `shred`), starts a workflow in it through the proxy with input `"<name>-secret"`, and
/// exports that input as Temporal stores it (read around the proxy), as the codec server's
/// JSON body: the copy a backup or export holds.
fn provision_and_export(name: &str, shred: bool) -> PathBuf {
    let stack = stack();
    let extra = format!("  allowDeletion: true\n  shredOnDelete: {shred}\n");
    stack.provision_for_team_with(name, name, &extra).unwrap();
    let profile = stack.profile(PAYMENTS_MEMBER, name).unwrap();
    start(&profile, "exported", &format!("{name}-secret"));
    let payload = stored_payload(stack, name, "exported");
    assert!(!data(&payload).contains("-secret"), "stored sealed");
    let export = stack.home().join(format!("{name}.export.json"));
    std::fs::write(
        &export,
        serde_json::json!({ "payloads": [payload] }).to_string(),
    )
    .unwrap();
    export
}

/// `plinth keys decode` of an exported copy: the input it holds, or why it does not open.
fn decode(namespace: &str, export: &std::path::Path) -> Result<String, String> {
    let out = stack().plinth(&[
        "keys",
        "decode",
        "--namespace",
        namespace,
        "--file",
        export.to_str().unwrap(),
    ]);
    if !out.status.success() {
        return Err(text(&out));
    }
    let opened: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    Ok(data(&opened["payloads"][0]))
}

/// `plinth keys list`'s lines for namespace `namespace`'s own keys.
fn key_lines(namespace: &str) -> Vec<String> {
    stdout(&ok(stack().plinth(&["keys", "list"])))
        .lines()
        .filter(|line| line.split_whitespace().nth(2) == Some(namespace))
        .map(str::to_owned)
        .collect()
}

fn delete(name: &str) -> String {
    text(&ok(
        stack().plinth_as(ADMIN, &["delete", "namespace", name, "--wait"])
    ))
}

#[test]
fn a_namespace_deleted_with_shred_on_delete_no_longer_opens_anywhere() {
    let doomed = format!("shredded-{}", std::process::id());
    let kept = format!("bystander-{}", std::process::id());
    let doomed_copy = provision_and_export(&doomed, true);
    let kept_copy = provision_and_export(&kept, false);
    assert_eq!(
        decode(&doomed, &doomed_copy),
        Ok(format!("\"{doomed}-secret\""))
    );

    let deleted = delete(&doomed);
    assert!(deleted.contains("shredded at"), "{deleted}");
    wait_for("the doomed namespace's key to be shredded", || {
        key_lines(&doomed)
            .iter()
            .any(|line| line.contains("shredded at"))
    });
    let lines = key_lines(&doomed);
    assert!(
        lines
            .iter()
            .all(|line| line.contains(&format!("(deleted by user:{ADMIN})"))),
        "{lines:?}"
    );
    let refused = decode(&doomed, &doomed_copy).unwrap_err();
    assert!(
        refused.contains("was shredded at") && refused.contains(&format!("by user:{ADMIN}")),
        "{refused}"
    );
    let ring = std::fs::read_to_string(stack().home().join("keys/keyring.json")).unwrap();
    let stored: serde_json::Value = serde_json::from_str(&ring).unwrap();
    for key in stored["keys"].as_array().unwrap() {
        if key["namespace"] == doomed.as_str() {
            assert_eq!(
                key["material"], "",
                "the key's material left the file: {key}"
            );
        }
    }
    // Another namespace's copy still opens.
    assert_eq!(decode(&kept, &kept_copy), Ok(format!("\"{kept}-secret\"")));
    // Nothing shredded can be restored.
    let late = stack().plinth(&["keys", "restore", "--namespace", &doomed]);
    assert!(!late.status.success());
    assert!(
        text(&late).contains("cannot be restored"),
        "{}",
        text(&late)
    );
}

#[test]
fn a_key_restored_within_the_delay_is_kept() {
    let name = format!("reprieved-{}", std::process::id());
    let copy = provision_and_export(&name, true);
    delete(&name);
    let restored = ok(stack().plinth(&["keys", "restore", "--namespace", &name]));
    assert!(
        text(&restored).contains("will not be shredded"),
        "{}",
        text(&restored)
    );
    // The namespace's workflow ends once the delay has passed, shredding nothing.
    wait_for("the deletion to finish", || {
        !stack()
            .plinth_as(ADMIN, &["get", "namespace", &name])
            .status
            .success()
    });
    assert!(
        key_lines(&name).iter().all(|line| !line.contains("shred")),
        "{:?}",
        key_lines(&name)
    );
    assert_eq!(decode(&name, &copy), Ok(format!("\"{name}-secret\"")));
}
