//! The audit trail: real `plinth` processes in front of a Temporal dev server ship every change
//! to a real S3-compatible server (`s3s-fs`), where `boto3`, AWS's own SDK, reads it back;
//! `plinth audit` answers each caller with what they may read.

use std::collections::HashSet;
use std::sync::OnceLock;

use plinth_test_harness::cli::{ok, stdout, temporal, temporal_as, text, wait_for};
use plinth_test_harness::{ADMIN, OUTSIDER, PAYMENTS_MEMBER, PAYMENTS_TEAM, PlinthStack, S3Server};

const PLINTH: &str = env!("CARGO_BIN_EXE_plinth");
/// The bucket every change reaches.
const BUCKET: &str = "plinth-audit";
/// The bucket of a second destination, broken (a file where its directory belongs, so the
/// server fails every write to it) until a test mends it.
const LATE_BUCKET: &str = "plinth-audit-late";

struct Fixture {
    s3: S3Server,
    stack: PlinthStack,
    /// A namespace the payments team owns, made before any test runs.
    ns: String,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let s3 = S3Server::start(BUCKET).unwrap();
        std::fs::write(s3.root().join(LATE_BUCKET), "not a bucket").unwrap();
        let audit = format!(
            "[audit]\ninterval = \"1s\"\nread_from = \"s3\"\n\
             destinations = {{ s3 = \"s3://{BUCKET}/trail\", late = \"s3://{LATE_BUCKET}/trail\" }}\n"
        );
        let stack = PlinthStack::start_shared(PLINTH.as_ref(), &audit, &s3.env()).unwrap();
        let ns = format!("audited-{}", std::process::id());
        stack.provision_for_team("audited", &ns).unwrap();
        Fixture { s3, stack, ns }
    })
}

/// Every record under `trail/audit/v1/` of `bucket`, as boto3 reads them.
fn shipped(s3: &S3Server, bucket: &str) -> Vec<serde_json::Value> {
    let printed = s3
        .boto3(&format!(
            "keys = []\n\
             for page in s3.get_paginator('list_objects_v2').paginate(Bucket={bucket:?}, Prefix='trail/audit/v1/'):\n\
             \x20   keys += [o['Key'] for o in page.get('Contents', [])]\n\
             for key in sorted(keys):\n\
             \x20   body = s3.get_object(Bucket={bucket:?}, Key=key)['Body'].read().decode()\n\
             \x20   for line in body.splitlines():\n\
             \x20       print(json.dumps({{'key': key, 'record': json.loads(line)}}))\n"
        ))
        .unwrap();
    printed
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// What `plinth audit` shows `user` of the last hour with `filters`, as records.
fn audit_as(stack: &PlinthStack, user: &str, filters: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["audit", "--since", "1h", "-o", "json"];
    args.extend_from_slice(filters);
    stdout(&ok(stack.plinth_as(user, &args)))
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn records_of<'a>(
    shipped: &'a [serde_json::Value],
    action: &str,
    resource: &str,
) -> Vec<&'a serde_json::Value> {
    shipped
        .iter()
        .map(|entry| &entry["record"])
        .filter(|r| r["action"] == action && r["resource"] == resource)
        .collect()
}

#[test]
fn a_change_reaches_s3_as_one_json_line_naming_who_did_what() {
    let f = fixture();
    let resource = "namespace/audited";
    let mut lines = Vec::new();
    let rule = format!("policy/TEMPORAL-ns-{}", f.ns);
    wait_for("the namespace's creation and its rule in S3", || {
        lines = shipped(&f.s3, BUCKET);
        !records_of(&lines, "namespace.applied", resource).is_empty()
            && !records_of(&lines, "policy.rule_added", &rule).is_empty()
    });
    let created = records_of(&lines, "namespace.applied", resource)[0];
    assert_eq!(created["schema"], "plinth.audit/v1");
    assert_eq!(created["actor"], format!("user:{PAYMENTS_MEMBER}"));
    assert_eq!(created["outcome"], "created");
    assert_eq!(created["namespace"], f.ns.as_str());
    assert_eq!(created["after"]["spec"]["owner"], PAYMENTS_TEAM);
    assert!(created.get("before").is_none(), "{created}");
    // Under the hour it happened in.
    let time = created["time"].as_str().unwrap();
    let hour = format!(
        "trail/audit/v1/{}/{}/{}/{}/",
        &time[0..4],
        &time[5..7],
        &time[8..10],
        &time[11..13]
    );
    let entry = lines
        .iter()
        .find(|entry| entry["record"]["id"] == created["id"])
        .unwrap();
    assert!(entry["key"].as_str().unwrap().starts_with(&hour), "{entry}");
    let added = records_of(&lines, "policy.rule_added", &rule);
    assert_eq!(added.len(), 1, "{lines:#?}");
    assert_eq!(added[0]["detail"], format!("group:{PAYMENTS_TEAM}"));
    let ids: HashSet<&str> = lines
        .iter()
        .map(|entry| entry["record"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), lines.len(), "each record once");
}

#[test]
fn a_spec_change_is_recorded_with_the_fields_that_changed() {
    let f = fixture();
    let yaml = plinth_test_harness::cli::namespace_yaml("audited", &f.ns, PAYMENTS_TEAM, 5, "");
    ok(f.stack.apply_as(PAYMENTS_MEMBER, &yaml, &["--wait"]));
    let mut lines = Vec::new();
    wait_for("the change in S3", || {
        lines = shipped(&f.s3, BUCKET);
        records_of(&lines, "namespace.applied", "namespace/audited")
            .iter()
            .any(|r| r["outcome"] == "configured")
    });
    let changed = records_of(&lines, "namespace.applied", "namespace/audited")
        .into_iter()
        .find(|r| r["outcome"] == "configured")
        .unwrap();
    assert_eq!(
        changed["changes"],
        serde_json::json!([{"path": "spec.retentionDays", "before": 3, "after": 5}])
    );
    assert_eq!(changed["before"]["spec"]["retentionDays"], 3);
}

#[test]
fn plinth_audit_shows_each_caller_only_what_they_may_read() {
    let f = fixture();
    let resource = "namespace/audited";
    let query = |user: &str| audit_as(&f.stack, user, &["--resource", resource]);
    wait_for("the creation in plinth audit", || !query(ADMIN).is_empty());
    let member = query(PAYMENTS_MEMBER);
    assert!(
        member.iter().any(|r| r["outcome"] == "created"),
        "{member:?}"
    );
    assert!(
        query(OUTSIDER).is_empty(),
        "an outsider reads nothing of it"
    );
    let table = stdout(&ok(f.stack.plinth_as(
        ADMIN,
        &["audit", "--since", "1h", "--action", "namespace.*"],
    )));
    assert!(table.starts_with("TIME"), "{table}");
    assert!(table.contains("namespace.applied"), "{table}");
    let bad = f
        .stack
        .plinth_as(ADMIN, &["audit", "--since", "yesterday-ish"]);
    assert!(!bad.status.success());
    assert!(text(&bad).contains("from:"), "{}", text(&bad));
}

#[test]
fn a_destination_that_fails_gets_every_record_once_it_is_back() {
    let f = fixture();
    // The late destination's bucket is broken: its writes fail and are retried.
    let describe = || {
        let out = temporal(
            &[
                "workflow",
                "describe",
                "--namespace",
                &f.stack.control_namespace,
                "--workflow-id",
                "audit/late",
                "-o",
                "json",
            ],
            &f.stack.temporal_address,
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_default()
    };
    wait_for("a failed write being retried", || {
        describe()["pendingActivities"]
            .as_array()
            .and_then(|pending| pending.first())
            .and_then(|activity| activity["attempt"].as_i64())
            .is_some_and(|attempt| attempt >= 2)
    });
    let bucket = f.s3.root().join(LATE_BUCKET);
    std::fs::remove_file(&bucket).unwrap();
    std::fs::create_dir(&bucket).unwrap();
    let mut late = Vec::new();
    wait_for("the late destination to catch up on changes", || {
        let first = shipped(&f.s3, BUCKET);
        late = shipped(&f.s3, LATE_BUCKET);
        // The changes' records: the data stream's have batches of their own.
        let ids = |lines: &[serde_json::Value]| -> HashSet<String> {
            lines
                .iter()
                .filter(|entry| !entry["key"].as_str().unwrap().contains("/data-"))
                .map(|entry| entry["record"]["id"].as_str().unwrap().to_owned())
                .collect()
        };
        !late.is_empty() && ids(&first).is_subset(&ids(&late))
    });
    // The changes' batches numbered from 0 without a gap: none was skipped.
    let mut batches: Vec<u64> = late
        .iter()
        .filter_map(|entry| {
            let key = entry["key"].as_str().unwrap();
            let file = key.rsplit('/').next().unwrap();
            file.trim_end_matches(".ndjson").parse().ok()
        })
        .collect();
    batches.sort_unstable();
    batches.dedup();
    assert_eq!(batches, (0..batches.len() as u64).collect::<Vec<_>>());
}

#[test]
fn a_metrics_target_applied_and_deleted_is_recorded_for_admins_only() {
    let f = fixture();
    let target = format!("audited-{}", std::process::id());
    let yaml = format!(
        "apiVersion: temporal.plinth.dev/v1beta1\nkind: MetricsTarget\n\
         metadata:\n  name: {target}\nspec:\n  url: http://127.0.0.1:9/metrics\n  \
         intervalSeconds: 60\n"
    );
    ok(f.stack.apply_as(ADMIN, &yaml, &[]));
    ok(f.stack
        .plinth_as(ADMIN, &["delete", "metricstarget", &target]));
    let resource = format!("metrics_target/{target}");
    let actions = |user: &str| -> Vec<(String, String)> {
        audit_as(&f.stack, user, &["--resource", &resource])
            .into_iter()
            .map(|record| {
                assert_eq!(record["actor"], format!("user:{ADMIN}"), "{record}");
                (
                    record["action"].as_str().unwrap().to_owned(),
                    record["outcome"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let expected = [
        ("metrics_target.applied".to_owned(), "created".to_owned()),
        ("metrics_target.deleted".to_owned(), "deleted".to_owned()),
    ];
    wait_for("both records in plinth audit", || {
        actions(ADMIN) == expected
    });
    assert!(
        actions(PAYMENTS_MEMBER).is_empty(),
        "not a namespace's record"
    );
}

#[test]
fn each_identity_an_access_run_grants_is_recorded_with_the_run_as_actor() {
    let f = fixture();
    let resource = format!("access/{}", f.ns);
    let mut granted = Vec::new();
    wait_for("the payments member's grant in S3", || {
        let lines = shipped(&f.s3, BUCKET);
        granted = records_of(&lines, "access.granted", &resource)
            .into_iter()
            .cloned()
            .collect();
        granted
            .iter()
            .any(|r| r["detail"] == format!("user:{PAYMENTS_MEMBER}"))
    });
    let member = granted
        .iter()
        .find(|r| r["detail"] == format!("user:{PAYMENTS_MEMBER}"))
        .unwrap();
    assert_eq!(member["after"], serde_json::json!({"access": "write"}));
    assert_eq!(member["namespace"], f.ns.as_str());
    let actor = member["actor"].as_str().unwrap();
    assert!(
        actor.starts_with(&format!("workflow:users/{}-", f.ns)),
        "{actor}"
    );
}

#[test]
fn a_call_the_proxy_refuses_is_recorded_in_the_data_stream() {
    let f = fixture();
    let mallory = f.stack.profile(OUTSIDER, &f.ns).unwrap();
    let listed = temporal_as(&mallory, &["workflow", "list"]);
    assert!(!listed.status.success(), "{}", text(&listed));
    let refused = |user: &str| {
        audit_as(
            &f.stack,
            user,
            &["--action", "proxy.refused", "--namespace", &f.ns],
        )
    };
    let mut records = Vec::new();
    wait_for("the refusal in plinth audit", || {
        records = refused(ADMIN);
        !records.is_empty()
    });
    let record = &records[0];
    assert_eq!(record["actor"], format!("user:{OUTSIDER}"));
    assert_eq!(record["resource"], "rpc/ListWorkflowExecutions");
    assert_eq!(record["outcome"], "denied");
    assert!(
        refused(OUTSIDER).is_empty(),
        "the refused caller reads no record of it"
    );
    // Shipped apart from changes, in the data stream's own batches.
    let lines = shipped(&f.s3, BUCKET);
    let entry = lines
        .iter()
        .find(|entry| entry["record"]["id"] == record["id"])
        .unwrap();
    let key = entry["key"].as_str().unwrap();
    assert!(
        key.rsplit('/').next().unwrap().starts_with("data-"),
        "{key}"
    );
}

#[test]
fn a_directory_reload_is_recorded_with_who_asked() {
    let f = fixture();
    ok(f.stack.plinth_as(ADMIN, &["directory", "reload"]));
    let mut lines = Vec::new();
    wait_for("the reload in S3", || {
        lines = shipped(&f.s3, BUCKET);
        records_of(&lines, "directory.reloaded", "directory")
            .iter()
            .any(|r| r["actor"] == format!("user:{ADMIN}"))
    });
    let reloaded = records_of(&lines, "directory.reloaded", "directory");
    assert!(
        reloaded
            .iter()
            .any(|r| r["detail"].as_str().unwrap().contains("access runs")),
        "{reloaded:#?}"
    );
}

#[test]
fn a_key_rotation_is_recorded_with_the_operator_who_made_it() {
    let f = fixture();
    ok(f.stack.plinth(&["keys", "rotate"]));
    let mut lines = Vec::new();
    wait_for("the rotation in S3", || {
        lines = shipped(&f.s3, BUCKET);
        !records_of(&lines, "keys.rotated", "keys/installation").is_empty()
    });
    let rotated = records_of(&lines, "keys.rotated", "keys/installation")[0];
    assert!(
        rotated["actor"].as_str().unwrap().starts_with("operator:"),
        "{rotated}"
    );
    assert_eq!(rotated["outcome"], "rotated");
}
