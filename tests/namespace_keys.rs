//! Keys of their own per namespace (`[keys] per_namespace`): real `plinth` processes on a
//! Temporal dev server. The worker makes each namespace's key encryption key as it
//! provisions the namespace and records it in the status; the proxy seals the namespace's
//! payloads under that key alone. Payloads are read back around the proxy.

use plinth_test_harness::cli::{ok, stdout, temporal_as, text, wait_for};
use plinth_test_harness::{ADMIN, DevServer, PAYMENTS_MEMBER, PlinthStack};

const PLINTH: &str = env!("CARGO_BIN_EXE_plinth");

/// Provisions namespace `name` for the payments team; returns its Temporal name and status.
fn provision(stack: &PlinthStack, name: &str) -> (String, serde_json::Value) {
    let ns = format!("{name}-{}", std::process::id());
    stack.provision_for_team(name, &ns).unwrap();
    let got = ok(stack.plinth_as(ADMIN, &["get", "namespace", name, "-o", "json"]));
    let resource: serde_json::Value = serde_json::from_slice(&got.stdout).unwrap();
    (ns, resource["status"].clone())
}

/// Starts workflow `id` in `ns` through the proxy; returns the key id its input was stored
/// under.
fn stored_key(stack: &PlinthStack, ns: &str, id: &str) -> String {
    let profile = stack.profile(PAYMENTS_MEMBER, ns).unwrap();
    ok(temporal_as(
        &profile,
        &[
            "workflow",
            "start",
            "--type",
            "Keyed",
            "--task-queue",
            "nobody",
            "-w",
            id,
            "--input",
            "\"x\"",
        ],
    ));
    stack.stored_key_id(ns, id)
}

#[test]
fn each_namespace_gets_its_own_key_its_payloads_are_sealed_under_and_it_rotates_alone() {
    let stack = PlinthStack::start_configured(
        DevServer::shared(),
        PLINTH.as_ref(),
        "10m",
        "3s",
        "",
        "[keys]\nper_namespace = true\n",
    )
    .unwrap();
    let (ledger, ledger_status) = provision(&stack, "ledger");
    let (billing, billing_status) = provision(&stack, "billing");
    let ledger_key = ledger_status["encryptionKey"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let billing_key = billing_status["encryptionKey"].as_str().unwrap_or_default();
    assert!(ledger_key.starts_with("kek-"), "{ledger_status}");
    assert!(billing_key.starts_with("kek-") && billing_key != ledger_key);
    let listed = stdout(&ok(stack.plinth(&["keys", "list"])));
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with(&ledger_key) && l.contains(&ledger) && l.ends_with("active")),
        "{listed}"
    );

    assert_eq!(stored_key(&stack, &ledger, "first"), ledger_key);
    assert_eq!(stored_key(&stack, &billing, "first"), billing_key);

    let rotated = ok(stack.plinth(&["keys", "rotate", "--namespace", &ledger]));
    let new_key = stdout(&rotated)
        .split_whitespace()
        .find(|w| w.starts_with("kek-"))
        .unwrap_or_default()
        .trim_end_matches(';')
        .to_owned();
    assert!(
        new_key.starts_with("kek-") && new_key != ledger_key,
        "{}",
        text(&rotated)
    );
    let mut n = 0;
    wait_for("the proxy to seal with the namespace's new key", || {
        n += 1;
        stored_key(&stack, &ledger, &format!("rotated-{n}")) == new_key
    });
    assert_eq!(
        stored_key(&stack, &billing, "second"),
        billing_key,
        "the other namespace keeps its key"
    );
}
