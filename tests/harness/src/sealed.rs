//! Workflows started through the proxy and their first input read back: around the proxy,
//! as Temporal stores it, and through it, as a user reads it. How the key provider tests see
//! what was sealed, and under which key.

use std::path::Path;

use base64::Engine;
use serde_json::Value;

use crate::PlinthStack;
use crate::cli::{ok, stdout, temporal, temporal_as, text, wait_for};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Starts workflow `id` (type `Kept`, on a queue nobody polls) through the proxy as
/// `profile`'s user, with the JSON string `input`.
pub fn start(profile: &Path, id: &str, input: &str) {
    ok(temporal_as(
        profile,
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

/// The first input payload of a `workflow show -o json`, as proto3 JSON.
fn first_input(shown: &std::process::Output) -> Value {
    let history: Value = serde_json::from_slice(&shown.stdout).unwrap_or_default();
    history["events"][0]["workflowExecutionStartedEventAttributes"]["input"]["payloads"][0].clone()
}

/// Workflow `id`'s first input payload as Temporal stores it in `namespace`, read around
/// the proxy: what an export or a backup holds.
pub fn stored_payload(stack: &PlinthStack, namespace: &str, id: &str) -> Value {
    first_input(&ok(temporal(
        &[
            "workflow",
            "show",
            "-w",
            id,
            "--namespace",
            namespace,
            "-o",
            "json",
        ],
        &stack.temporal_address,
    )))
}

/// Workflow `id`'s first input as `profile`'s user reads it through the proxy.
pub fn shown_input(profile: &Path, id: &str) -> String {
    data(&first_input(&ok(temporal_as(
        profile,
        &["workflow", "show", "-w", id, "-o", "json"],
    ))))
}

/// Metadata entry `key` of a proto3 JSON payload, as text.
pub fn metadata(payload: &Value, key: &str) -> String {
    decoded(&payload["metadata"][key])
}

/// The data of a proto3 JSON payload, as text.
pub fn data(payload: &Value) -> String {
    decoded(&payload["data"])
}

fn decoded(value: &Value) -> String {
    let bytes = B64
        .decode(value.as_str().unwrap_or_default())
        .unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The active installation key, as `plinth keys list` shows it.
pub fn active_key(stack: &PlinthStack) -> String {
    stdout(&ok(stack.plinth(&["keys", "list"])))
        .lines()
        .find(|line| line.ends_with(" active"))
        .and_then(|line| line.split_whitespace().next())
        .unwrap_or_default()
        .to_owned()
}

/// Rotates the installation's key with `plinth keys rotate` and checks that the running
/// proxy seals new payloads of `namespace` with the new key, without a restart, while the
/// old key still opens what it sealed.
pub fn rotation_reaches_the_running_proxy(stack: &PlinthStack, profile: &Path, namespace: &str) {
    start(profile, "before-rotation", "old");
    let before = active_key(stack);
    let rotated = ok(stack.plinth(&["keys", "rotate"]));
    let after = active_key(stack);
    assert_ne!(before, after, "{}", text(&rotated));
    let mut n = 0;
    wait_for("the running proxy to seal with the new key", || {
        n += 1;
        let id = format!("after-rotation-{n}");
        start(profile, &id, "new");
        metadata(&stored_payload(stack, namespace, &id), "encryption-key-id") == after
    });
    assert_eq!(
        shown_input(profile, "before-rotation"),
        "\"old\"",
        "the old key still opens"
    );
}
