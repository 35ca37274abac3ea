//! Access on request end to end: a person asks for access to a namespace, an editor of its
//! policies approves it (never the requester, never someone outside the approver groups),
//! the access run grants it, and a durable timer takes it away when its time ends, across a
//! worker restart; `revoke` ends one early, `deny` grants nothing, and a request nobody
//! answers ends by itself. Real `plinth` processes
//! on a real Temporal dev server; access runs come only from the changes (the schedule's own
//! interval is ten minutes).

use plinth_test_harness::cli::{ok, stderr, stdout, text, wait_for};
use plinth_test_harness::{ADMIN, DevServer, OUTSIDER, PAYMENTS_MEMBER, PlinthStack};
use serde_json::Value;

const PLINTH: &str = env!("CARGO_BIN_EXE_plinth");
/// In the payments team through the nested on-call group: an approver.
const ONCALL: &str = "bob@example.com";

fn stack() -> PlinthStack {
    let stack = PlinthStack::start_configured(
        DevServer::shared(),
        PLINTH.as_ref(),
        "10m",
        "10m",
        "",
        "[audit]\ninterval = \"1s\"\n\n[access]\nrequest_ttl = \"30s\"\n",
    )
    .expect("start the stack");
    let out = stack.home().join("users").join(ONCALL);
    ok(stack.plinth(&[
        "pki",
        "issue",
        "--user",
        ONCALL,
        "--out",
        out.to_str().unwrap(),
    ]));
    stack
}

/// Asks as `user` and returns the request.
fn request(stack: &PlinthStack, user: &str, ns: &str, level: &str, lasting: &str) -> Value {
    let asked = ok(stack.plinth_as(
        user,
        &[
            "access",
            "request",
            ns,
            "--level",
            level,
            "--for",
            lasting,
            "--reason",
            "paged for the payments incident",
            "-o",
            "json",
        ],
    ));
    serde_json::from_slice(&asked.stdout).expect("JSON")
}

fn answer(stack: &PlinthStack, user: &str, verb: &str, id: &str) -> std::process::Output {
    stack.plinth_as(user, &["access", verb, id, "-o", "json"])
}

/// The access list's entry for `identity`: (access, expires).
fn entry(stack: &PlinthStack, ns: &str, identity: &str) -> Option<(String, String)> {
    let list = stack.access_list(ns);
    list["grants"].as_array()?.iter().find_map(|grant| {
        (grant["identity"] == identity).then(|| {
            let field = |k: &str| grant[k].as_str().unwrap_or_default().to_owned();
            (field("access"), field("expires"))
        })
    })
}

/// The audit records of request `id`, by action, in order.
fn audited(stack: &PlinthStack, id: &str) -> Vec<String> {
    stdout(&ok(stack.plinth_as(
        ADMIN,
        &[
            "audit",
            "--since",
            "1h",
            "--action",
            "access_request.*",
            "-o",
            "json",
        ],
    )))
    .lines()
    .map(|line| serde_json::from_str::<Value>(line).unwrap())
    .filter(|record| {
        record["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with(&format!("request {id}:")))
    })
    .map(|record| record["action"].as_str().unwrap_or_default().to_owned())
    .collect()
}

#[test]
fn a_grant_on_request_is_approved_by_an_editor_and_ends_by_itself_across_a_worker_restart() {
    let mut stack = stack();
    let ns = format!("jit-{}", std::process::id());
    stack.provision_for_team(&ns, &ns).unwrap();
    let mallory = format!("user:{OUTSIDER}");

    let asked = request(&stack, OUTSIDER, &ns, "write", "1m");
    let id = asked["id"].as_str().unwrap().to_owned();
    assert_eq!(asked["state"], "pending");
    assert_eq!(
        asked["approvers"],
        serde_json::json!(["payments-team@example.com"])
    );

    // Nobody outside the approver groups answers, nor the requester; a platform admin is not
    // an approver either.
    for user in [OUTSIDER, ADMIN] {
        let refused = answer(&stack, user, "approve", &id);
        assert!(!refused.status.success(), "{user}: {}", text(&refused));
        assert!(
            stderr(&refused).contains("may not approve"),
            "{}",
            text(&refused)
        );
    }
    let listed = stdout(&ok(stack.plinth_as(ONCALL, &["access", "requests"])));
    let waiting = listed.split("Waiting on me:").nth(1).unwrap_or_default();
    assert!(waiting.contains(&id), "{listed}");
    let mine = stdout(&ok(stack.plinth_as(OUTSIDER, &["access", "requests"])));
    assert!(
        mine.split("Waiting on me:").next().unwrap().contains(&id),
        "{mine}"
    );

    let approved: Value =
        serde_json::from_slice(&ok(answer(&stack, ONCALL, "approve", &id)).stdout).unwrap();
    assert_eq!(approved["state"], "granted");
    assert_eq!(approved["decidedBy"], format!("user:{ONCALL}"));
    let expires = approved["expiresAt"].as_str().unwrap().to_owned();
    wait_for("mallory's write access on request", || {
        entry(&stack, &ns, &mallory) == Some(("write".into(), expires.clone()))
    });
    let again = answer(&stack, PAYMENTS_MEMBER, "deny", &id);
    assert!(
        stderr(&again).contains("no longer pending"),
        "{}",
        text(&again)
    );

    // The worker dies and comes back while the grant runs: its timer is Temporal's.
    stack.kill_worker();
    stack.start_worker().unwrap();
    wait_for("the grant to end by itself", || {
        entry(&stack, &ns, &mallory).is_none()
    });
    wait_for("the grant's records", || {
        audited(&stack, &id)
            == [
                "access_request.requested",
                "access_request.approved",
                "access_request.expired",
            ]
    });
}

#[test]
fn a_revoked_grant_goes_at_once_a_denied_request_grants_nothing_and_policies_are_never_lowered() {
    let stack = stack();
    let ns = format!("jit-revoke-{}", std::process::id());
    stack.provision_for_team(&ns, &ns).unwrap();
    let mallory = format!("user:{OUTSIDER}");
    let alice = format!("user:{PAYMENTS_MEMBER}");

    let denied = request(&stack, OUTSIDER, &ns, "read", "10m");
    let id = denied["id"].as_str().unwrap();
    let answered: Value =
        serde_json::from_slice(&ok(answer(&stack, PAYMENTS_MEMBER, "deny", id)).stdout).unwrap();
    assert_eq!(answered["state"], "denied");
    assert_eq!(entry(&stack, &ns, &mallory), None);

    // Alice writes through the policy; her approved read request changes nothing.
    let lower = request(&stack, PAYMENTS_MEMBER, &ns, "read", "10m");
    ok(answer(
        &stack,
        ONCALL,
        "approve",
        lower["id"].as_str().unwrap(),
    ));
    let read = request(&stack, OUTSIDER, &ns, "read", "10m");
    let read_id = read["id"].as_str().unwrap();
    ok(answer(&stack, ONCALL, "approve", read_id));
    wait_for("mallory's read access", || {
        entry(&stack, &ns, &mallory).is_some_and(|(access, _)| access == "read")
    });
    assert_eq!(
        entry(&stack, &ns, &alice).map(|e| e.0),
        Some("write".into())
    );

    let revoked: Value =
        serde_json::from_slice(&ok(answer(&stack, OUTSIDER, "revoke", read_id)).stdout).unwrap();
    assert_eq!(revoked["state"], "revoked");
    assert_eq!(revoked["revokedBy"], mallory);
    wait_for("mallory's access to go", || {
        entry(&stack, &ns, &mallory).is_none()
    });
    assert_eq!(
        entry(&stack, &ns, &alice).map(|e| e.0),
        Some("write".into())
    );

    // Nobody answers this one: it ends after [access] request_ttl.
    let ignored = request(&stack, OUTSIDER, &ns, "write", "10m");
    let ignored_id = ignored["id"].as_str().unwrap().to_owned();
    wait_for("the unanswered request to end", || {
        audited(&stack, &ignored_id) == ["access_request.requested", "access_request.unanswered"]
    });
    let mine = stdout(&ok(stack.plinth_as(OUTSIDER, &["access", "requests"])));
    assert!(!mine.contains(&ignored_id), "{mine}");
    assert_eq!(entry(&stack, &ns, &mallory), None);

    let bad = stack.plinth_as(
        OUTSIDER,
        &[
            "access", "request", &ns, "--level", "write", "--for", "1year", "--reason", "x",
        ],
    );
    assert!(
        stderr(&bad).contains("duration: must be between"),
        "{}",
        text(&bad)
    );
    let unmanaged = stack.plinth_as(
        OUTSIDER,
        &[
            "access",
            "request",
            "nobody-s-namespace",
            "--level",
            "read",
            "--for",
            "1h",
            "--reason",
            "x",
        ],
    );
    assert!(
        stderr(&unmanaged).contains("Plinth does not manage it"),
        "{}",
        text(&unmanaged)
    );
}

#[test]
fn a_platform_admin_denies_and_revokes_any_request_without_being_an_approver() {
    let stack = stack();
    let ns = format!("jit-admin-{}", std::process::id());
    stack.provision_for_team(&ns, &ns).unwrap();
    let mallory = format!("user:{OUTSIDER}");

    // The admin is in no group the payments policies name as editors.
    let asked = request(&stack, OUTSIDER, &ns, "read", "10m");
    let refused = answer(&stack, ADMIN, "approve", asked["id"].as_str().unwrap());
    assert!(
        stderr(&refused).contains("needs membership of one of"),
        "{}",
        text(&refused)
    );
    let denied: Value = serde_json::from_slice(
        &ok(answer(&stack, ADMIN, "deny", asked["id"].as_str().unwrap())).stdout,
    )
    .unwrap();
    assert_eq!(denied["state"], "denied");

    let granted = request(&stack, OUTSIDER, &ns, "read", "10m");
    let id = granted["id"].as_str().unwrap();
    ok(answer(&stack, ONCALL, "approve", id));
    wait_for("mallory's read access", || {
        entry(&stack, &ns, &mallory).is_some_and(|(access, _)| access == "read")
    });
    let revoked: Value =
        serde_json::from_slice(&ok(answer(&stack, ADMIN, "revoke", id)).stdout).unwrap();
    assert_eq!(revoked["state"], "revoked");
    wait_for("mallory's access to go", || {
        entry(&stack, &ns, &mallory).is_none()
    });
}
