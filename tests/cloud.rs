//! The Temporal Cloud backend end to end: real `plinth worker` and `plinth proxy` processes
//! with `[backend] kind = "cloud"`, against the Ops API test double (a real gRPC server from
//! Cloud's public protos: Temporal Cloud cannot be reached from here). The control plane runs
//! on a real Temporal dev server.

use std::time::{Duration, Instant};

use plinth_cloud_double::{Double, EndpointIdentity, Settings};
use plinth_identity::CertificateAuthority;
use plinth_test_harness::cli::{namespace_yaml, ok, stdout, temporal_as, text, wait_for};
use plinth_test_harness::{ADMIN, DevServer, PAYMENTS_MEMBER, PAYMENTS_TEAM, PlinthStack};
use temporalio_common::protos::temporal::api::cloud::identity::v1::namespace_access::Permission;
use temporalio_common::protos::temporal::api::cloud::resource::v1::ResourceState;

const PLINTH: &str = env!("CARGO_BIN_EXE_plinth");
const KEY: &str = "plinth-test-cloud-key";

/// The double, served by a runtime of its own for the test's lifetime.
struct Cloud {
    double: Double,
    _runtime: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
}

impl Cloud {
    fn start(settings: Settings) -> Cloud {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let double = runtime
            .block_on(Double::start(
                "127.0.0.1:0",
                Settings {
                    api_keys: vec![KEY.into()],
                    ..settings
                },
            ))
            .unwrap();
        Cloud {
            double,
            _runtime: runtime,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// `[backend]` for this account, with `key` in the API key file.
    fn backend_section(&self, key: &str) -> String {
        let key_file = self.dir.path().join("api-key");
        std::fs::write(&key_file, key).unwrap();
        format!(
            "[backend]\nkind = \"cloud\"\nendpoint = \"http://{}\"\naccount = \"{}\"\n\
             api_key_file = \"{}\"\noperation_timeout = \"2m\"\n",
            self.double.address(),
            self.double.account(),
            key_file.display()
        )
    }

    fn stack(&self, resync: &str) -> anyhow::Result<PlinthStack> {
        self.stack_with(resync, "")
    }

    /// [`Self::stack`] with `more` after `[backend]` (keys of that table first).
    fn stack_with(&self, resync: &str, more: &str) -> anyhow::Result<PlinthStack> {
        PlinthStack::start_configured(
            DevServer::shared(),
            PLINTH.as_ref(),
            resync,
            "5m",
            "",
            &format!("{}{more}", self.backend_section(KEY)),
        )
    }
}

/// Why a stack with `[backend]` section `backend` did not start.
fn refused_start(backend: &str) -> String {
    let error = PlinthStack::start_configured(
        DevServer::shared(),
        PLINTH.as_ref(),
        "10m",
        "5m",
        "",
        backend,
    )
    .expect_err("the stack does not start");
    format!("{error:#}")
}

fn get_json(stack: &PlinthStack, name: &str) -> serde_json::Value {
    let output = stack.plinth_as(ADMIN, &["get", "namespace", name, "-o", "json"]);
    serde_json::from_slice(&output.stdout).unwrap_or_default()
}

fn phase(stack: &PlinthStack, name: &str) -> String {
    get_json(stack, name)["status"]["phase"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn a_namespace_applied_on_cloud_is_created_there_with_plinths_ca_and_its_endpoint() {
    let cloud = Cloud::start(Settings::default());
    let stack = cloud.stack("10m").unwrap();
    let yaml = namespace_yaml("ledger", "ledger", PAYMENTS_TEAM, 14, "");
    let applied = ok(stack.apply_as(PAYMENTS_MEMBER, &yaml, &["--wait"]));
    assert!(
        stdout(&applied).contains("namespace/ledger Ready"),
        "{}",
        text(&applied)
    );

    let namespace = cloud.double.namespace("ledger").expect("created in Cloud");
    assert_eq!(namespace.state, ResourceState::Active as i32);
    let spec = namespace.spec.unwrap();
    assert_eq!(spec.retention_days, 14);
    assert_eq!(spec.replicas[0].region, "aws-us-east-1");
    // Only the proxy's own CA: a caller's certificate does not open the namespace directly.
    let accepted = spec.mtls_auth.unwrap().accepted_client_ca;
    let upstream_ca = std::fs::read(stack.home().join("pki/upstream/ca.pem")).unwrap();
    assert_eq!(accepted, upstream_ca);
    assert_ne!(
        accepted,
        std::fs::read(stack.home().join("pki/ca.pem")).unwrap()
    );
    let status = &get_json(&stack, "ledger")["status"];
    assert_eq!(status["endpoint"], Settings::default().grpc_address);
    assert!(
        !stack.log("worker").contains(KEY),
        "the API key is never logged"
    );
}

#[test]
fn a_worker_whose_api_key_cloud_refuses_does_not_start() {
    let cloud = Cloud::start(Settings::default());
    let error = refused_start(&cloud.backend_section("a-revoked-key"));
    assert!(
        error.contains("Temporal Cloud refused the worker's API key")
            && error.contains("Unauthenticated"),
        "{error}"
    );
    assert!(!error.contains("a-revoked-key"), "the key is never shown");
}

#[test]
fn a_failed_cloud_operation_is_reported_on_the_namespace_status() {
    let cloud = Cloud::start(Settings::default());
    let stack = cloud.stack("10m").unwrap();
    cloud
        .double
        .fail_next_operation("namespace limit reached for the account");
    let yaml = namespace_yaml("capped", "capped", PAYMENTS_TEAM, 7, "");
    ok(stack.apply_as(PAYMENTS_MEMBER, &yaml, &[]));
    wait_for("the failure on the status", || {
        phase(&stack, "capped") == "Failed"
    });
    let message = get_json(&stack, "capped")["status"]["message"].to_string();
    assert!(
        message.contains("namespace limit reached for the account"),
        "{message}"
    );
}

#[test]
fn drift_made_in_cloud_is_repaired_on_the_next_resync() {
    let cloud = Cloud::start(Settings::default());
    let stack = cloud.stack("2s").unwrap();
    let yaml = namespace_yaml("steady", "steady", PAYMENTS_TEAM, 30, "");
    ok(stack.apply_as(PAYMENTS_MEMBER, &yaml, &["--wait"]));
    cloud.double.edit_namespace("steady", |namespace| {
        namespace.spec.as_mut().unwrap().retention_days = 3;
    });
    wait_for("the drift repaired", || {
        get_json(&stack, "steady")["status"]["driftRepairs"].as_i64() >= Some(1)
    });
    let spec = cloud.double.namespace("steady").unwrap().spec.unwrap();
    assert_eq!(spec.retention_days, 30);
}

#[test]
fn a_namespace_deleted_in_cloud_behind_plinths_back_is_created_again() {
    let cloud = Cloud::start(Settings::default());
    let stack = cloud.stack("2s").unwrap();
    let yaml = namespace_yaml("phoenix", "phoenix", PAYMENTS_TEAM, 5, "");
    ok(stack.apply_as(PAYMENTS_MEMBER, &yaml, &["--wait"]));
    assert!(cloud.double.remove_namespace("phoenix"));
    wait_for("the namespace back in Cloud", || {
        cloud
            .double
            .namespace("phoenix")
            .is_some_and(|n| n.state == ResourceState::Active as i32)
    });
    assert_eq!(cloud.double.calls()["CreateNamespace"], 2);
    wait_for("the repair on the status", || {
        get_json(&stack, "phoenix")["status"]["driftRepairs"].as_i64() >= Some(1)
    });
}

#[test]
fn a_worker_killed_mid_operation_finishes_it_after_restart_without_a_second_create() {
    let cloud = Cloud::start(Settings {
        polls_to_complete: 100_000,
        ..Settings::default()
    });
    let mut stack = cloud.stack("10m").unwrap();
    let yaml = namespace_yaml("patient", "patient", PAYMENTS_TEAM, 7, "");
    ok(stack.apply_as(PAYMENTS_MEMBER, &yaml, &[]));
    wait_for("the create under way", || {
        cloud.double.namespace("patient").is_some()
    });
    stack.kill_worker();
    cloud.double.set_polls_to_complete(1);
    stack.start_worker().unwrap();
    // The retry comes after the heartbeat timeout of the attempt that died.
    wait_for("the namespace Ready", || {
        phase(&stack, "patient") == "Ready"
    });
    assert_eq!(cloud.double.calls()["CreateNamespace"], 1);
}

#[test]
fn calls_the_ops_api_rate_limits_are_retried_and_never_fail_the_reconcile() {
    let cloud = Cloud::start(Settings {
        burst: 2,
        calls_per_second: 4,
        retry_delay: Duration::from_millis(300),
        ..Settings::default()
    });
    let stack = cloud.stack("10m").unwrap();
    for name in ["burst-a", "burst-b", "burst-c"] {
        ok(stack.apply_as(
            PAYMENTS_MEMBER,
            &namespace_yaml(name, name, PAYMENTS_TEAM, 7, ""),
            &[],
        ));
    }
    for name in ["burst-a", "burst-b", "burst-c"] {
        wait_for("Ready", || phase(&stack, name) == "Ready");
        let events = get_json(&stack, name)["status"]["events"].to_string();
        assert!(!events.contains("ReconcileFailed"), "{events}");
    }
    assert!(cloud.double.throttled() > 0, "the burst was exceeded");
}

/// A double whose namespaces' endpoints lead to `server`, as Cloud's do: TLS with a
/// certificate from a CA of their own; with the file holding that CA.
fn cloud_in_front_of(server: &DevServer) -> (Cloud, std::path::PathBuf) {
    let endpoint_ca = CertificateAuthority::generate("endpoint test CA").unwrap();
    let endpoint_cert = endpoint_ca
        .issue_server(&["127.0.0.1".into()], Duration::from_secs(3600))
        .unwrap();
    let cloud = Cloud::start(Settings {
        temporal: Some(format!("http://{}", server.address())),
        endpoint: Some(EndpointIdentity {
            cert_pem: endpoint_cert.cert_pem.clone(),
            key_pem: endpoint_cert.key_pem.clone(),
        }),
        ..Settings::default()
    });
    let endpoint_ca_file = cloud.dir.path().join("endpoint-ca.pem");
    std::fs::write(&endpoint_ca_file, endpoint_ca.cert_pem()).unwrap();
    (cloud, endpoint_ca_file)
}

/// Applies namespace `name` as the payments team, grants the team write through a policy
/// rule, waits for the grant to reach Cloud; returns the namespace's status.
fn namespace_the_team_writes(stack: &PlinthStack, cloud: &Cloud, name: &str) -> serde_json::Value {
    cloud.double.add_user(PAYMENTS_MEMBER);
    let yaml = namespace_yaml(name, name, PAYMENTS_TEAM, 7, "");
    ok(stack.apply_as(PAYMENTS_MEMBER, &yaml, &["--wait"]));
    let status = get_json(stack, name)["status"].clone();
    let full_name = format!("{name}.{}", cloud.double.account());
    assert_eq!(status["temporalNamespace"], full_name.as_str());
    ok(stack.plinth_as(
        PAYMENTS_MEMBER,
        &[
            "policy",
            "add-rule",
            &format!("TEMPORAL-ns-{name}"),
            "--group",
            PAYMENTS_TEAM,
        ],
    ));
    wait_for("write access in Cloud", || {
        cloud.double.user(PAYMENTS_MEMBER).is_some_and(|user| {
            let access = user.spec.unwrap().access.unwrap();
            access
                .namespace_accesses
                .get(&full_name)
                .map(|a| a.permission)
                == Some(Permission::Write as i32)
        })
    });
    status
}

/// `temporal workflow start` of workflow `id` through the proxy with `profile`.
fn start_workflow(profile: &std::path::Path, id: &str) -> std::process::Output {
    temporal_as(
        profile,
        &[
            "workflow",
            "start",
            "--type",
            "Vault",
            "--task-queue",
            "vault",
            "--workflow-id",
            id,
        ],
    )
}

#[test]
fn calls_reach_a_cloud_namespace_over_mtls_with_certificates_the_proxy_issues_and_renews() {
    let server = DevServer::shared();
    let (cloud, endpoint_ca_file) = cloud_in_front_of(server);
    let backend = format!(
        "{}upstream_ca = \"{}\"\ncertificate_lifetime = \"9s\"\n",
        cloud.backend_section(KEY),
        endpoint_ca_file.display()
    );
    let stack =
        PlinthStack::start_configured(server, PLINTH.as_ref(), "10m", "3s", "", &backend).unwrap();
    let status = namespace_the_team_writes(&stack, &cloud, "vault");
    assert_eq!(status["endpoint"], cloud.double.grpc_address().as_str());
    let full_name = format!("vault.{}", cloud.double.account());

    let profile = stack.profile(PAYMENTS_MEMBER, &full_name).unwrap();
    let until = Instant::now() + Duration::from_secs(14);
    let mut started = 0;
    while Instant::now() < until {
        let out = start_workflow(&profile, &format!("vault-{started}"));
        assert!(
            out.status.success(),
            "call {started}: {}\n{}",
            text(&out),
            stack.log("proxy")
        );
        started += 1;
        std::thread::sleep(Duration::from_millis(700));
    }
    let presented = cloud.double.presented();
    let mut distinct = presented.clone();
    distinct.sort();
    distinct.dedup();
    assert!(
        distinct.len() >= 2,
        "renewed within {started} calls: {} certificates",
        distinct.len()
    );
    for der in &distinct {
        let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
        let validity = cert.validity();
        let life = validity.not_after.timestamp() - validity.not_before.timestamp();
        // Valid from five minutes back (clock skew) to the lifetime ahead.
        assert!(life <= 300 + 9, "short-lived: {life}s");
        assert_eq!(
            cert.subject_alternative_name()
                .unwrap()
                .unwrap()
                .value
                .general_names
                .len(),
            1
        );
    }
}

#[test]
fn calls_reach_a_cloud_namespace_with_the_proxys_api_key_and_a_rotated_key_takes_over() {
    let server = DevServer::shared();
    let (cloud, endpoint_ca_file) = cloud_in_front_of(server);
    let account = cloud.double.add_service_account("plinth-proxy");
    let first = cloud.double.create_api_key(&account);
    let key_file = cloud.dir.path().join("proxy-key");
    std::fs::write(&key_file, &first).unwrap();
    let backend = format!(
        "{}upstream_ca = \"{}\"\napi_key_auth = true\nupstream_auth = \"api-key\"\n\
         upstream_service_account = \"plinth-proxy\"\nupstream_api_key_file = \"{}\"\n",
        cloud.backend_section(KEY),
        endpoint_ca_file.display(),
        key_file.display()
    );
    let stack =
        PlinthStack::start_configured(server, PLINTH.as_ref(), "10m", "3s", "", &backend).unwrap();
    let status = namespace_the_team_writes(&stack, &cloud, "keyed");
    assert_eq!(status["endpoint"], cloud.double.api_key_address().as_str());
    let mtls = cloud
        .double
        .namespace("keyed")
        .unwrap()
        .spec
        .unwrap()
        .mtls_auth
        .unwrap();
    assert!(!mtls.enabled, "no client certificate opens the namespace");
    let full_name = format!("keyed.{}", cloud.double.account());
    let proxy_access = cloud.double.service_account("plinth-proxy").unwrap();
    assert_eq!(
        proxy_access
            .spec
            .unwrap()
            .access
            .unwrap()
            .namespace_accesses[&full_name]
            .permission,
        Permission::Write as i32,
        "Plinth gave the proxy's service account write"
    );

    let profile = stack.profile(PAYMENTS_MEMBER, &full_name).unwrap();
    let out = start_workflow(&profile, "keyed-1");
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out),
        stack.log("proxy")
    );

    // Rotation: the new key in the file, the old one revoked in Cloud.
    let second = cloud.double.create_api_key(&account);
    std::fs::write(&key_file, &second).unwrap();
    assert!(cloud.double.delete_api_key(&first));
    let mut attempt = 0;
    wait_for("a call with the rotated key", || {
        attempt += 1;
        start_workflow(&profile, &format!("keyed-rotated-{attempt}"))
            .status
            .success()
    });
    for role in ["proxy", "worker"] {
        let log = stack.log(role);
        assert!(
            !log.contains(&first) && !log.contains(&second),
            "{role} logged a key"
        );
    }
}

#[test]
fn the_proxy_refuses_an_upstream_key_that_is_not_its_service_accounts() {
    let cloud = Cloud::start(Settings::default());
    cloud.double.add_service_account("plinth-proxy");
    // The Ops API's own key: an account admin's, which reaches every namespace.
    let key_file = cloud.dir.path().join("proxy-key");
    std::fs::write(&key_file, KEY).unwrap();
    let backend = format!(
        "{}api_key_auth = true\nupstream_auth = \"api-key\"\n\
         upstream_service_account = \"plinth-proxy\"\nupstream_api_key_file = \"{}\"\n",
        cloud.backend_section(KEY),
        key_file.display()
    );
    let error = refused_start(&backend);
    assert!(
        error.contains("[backend] upstream_api_key: the key belongs to service account plinth,"),
        "{error}"
    );
    assert!(!error.contains(KEY), "the key is not shown");
}

#[test]
fn clouds_own_audit_log_is_pulled_into_the_trail_once_per_record() {
    let cloud = Cloud::start(Settings::default());
    let stack = cloud
        .stack_with("10m", "\n[audit]\ninterval = \"1s\"\n")
        .unwrap();
    let yaml = namespace_yaml("audited", "audited", PAYMENTS_TEAM, 7, "");
    ok(stack.apply_as(PAYMENTS_MEMBER, &yaml, &["--wait"]));
    let pulled = || -> Vec<serde_json::Value> {
        let shown = ok(stack.plinth_as(
            ADMIN,
            &[
                "audit", "--since", "1h", "--action", "cloud.*", "-o", "json",
            ],
        ));
        stdout(&shown)
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    };
    let mut records = Vec::new();
    wait_for("Cloud's CreateNamespace record in the trail", || {
        records = pulled();
        records
            .iter()
            .any(|r| r["action"] == "cloud.CreateNamespace")
    });
    let created = records
        .iter()
        .find(|r| r["action"] == "cloud.CreateNamespace")
        .unwrap();
    assert!(
        created["id"].as_str().unwrap().starts_with("cloud:"),
        "{created}"
    );
    assert_eq!(created["actor"], "cloud:serviceaccount:plinth");
    assert!(
        created["detail"].as_str().unwrap().contains("audited"),
        "{created}"
    );
    // Pulled again every second: still once each.
    std::thread::sleep(Duration::from_secs(3));
    let again = pulled();
    let mut ids: Vec<&str> = again.iter().map(|r| r["id"].as_str().unwrap()).collect();
    let count = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), count, "{again:#?}");
    // Only platform admins read the account's log.
    let member = ok(stack.plinth_as(
        PAYMENTS_MEMBER,
        &[
            "audit", "--since", "1h", "--action", "cloud.*", "-o", "json",
        ],
    ));
    assert!(stdout(&member).trim().is_empty(), "{}", text(&member));
}

#[test]
fn an_exported_namespace_gets_clouds_export_sink_and_plinth_reads_what_cloud_wrote() {
    use plinth_archive::history::{PREFIX, WorkflowExecution, WorkflowExecutions};
    use prost::Message as _;
    use temporalio_common::protos::temporal::api::enums::v1::EventType;
    use temporalio_common::protos::temporal::api::history::v1::history_event::Attributes;
    use temporalio_common::protos::temporal::api::history::v1::{
        History, HistoryEvent, WorkflowExecutionStartedEventAttributes,
    };

    let cloud = Cloud::start(Settings::default());
    let bucket = tempfile::tempdir().unwrap();
    let sink = format!(
        "export_bucket = \"acme-history\"\nexport_region = \"us-east-1\"\n\
         export_role = \"temporal-export\"\nexport_aws_account_id = \"123456789012\"\n\n\
         [export]\ndestination = \"file://{}\"\n",
        bucket.path().display()
    );
    let stack = cloud.stack_with("10m", &sink).unwrap();
    let exported = |enabled: bool| {
        let yaml = namespace_yaml(
            "shipped",
            "shipped",
            PAYMENTS_TEAM,
            7,
            &format!("  export:\n    enabled: {enabled}\n"),
        );
        ok(stack.apply_as(PAYMENTS_MEMBER, &yaml, &["--wait"]));
        cloud
            .double
            .export_sink("shipped", "plinth")
            .expect("the namespace's export sink")
    };
    let sink = exported(true);
    let spec = sink.spec.unwrap();
    assert!(spec.enabled);
    let s3 = spec.s3.unwrap();
    assert_eq!(
        (
            s3.bucket_name.as_str(),
            s3.role_name.as_str(),
            s3.aws_account_id.as_str()
        ),
        ("acme-history", "temporal-export", "123456789012")
    );
    assert!(!exported(false).spec.unwrap().enabled);

    // What Cloud's export writes there, Plinth lists (no index of Plinth's beside it).
    let now = std::time::SystemTime::now();
    let time = |t: std::time::SystemTime| Some(prost_wkt_types::Timestamp::from(t));
    let history = History {
        events: vec![
            HistoryEvent {
                event_id: 1,
                event_time: time(now - Duration::from_secs(60)),
                event_type: EventType::WorkflowExecutionStarted as i32,
                attributes: Some(Attributes::WorkflowExecutionStartedEventAttributes(
                    WorkflowExecutionStartedEventAttributes {
                        workflow_id: "order-7".into(),
                        original_execution_run_id: "run-7".into(),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            },
            HistoryEvent {
                event_id: 2,
                event_time: time(now - Duration::from_secs(30)),
                event_type: EventType::WorkflowExecutionCompleted as i32,
                ..Default::default()
            },
        ],
    };
    let stamp = humantime::format_rfc3339_seconds(now).to_string();
    let key = format!(
        "{PREFIX}/shipped.{}/{}/{}/{}/{}/{}/cloud-1",
        cloud.double.account(),
        &stamp[0..4],
        &stamp[5..7],
        &stamp[8..10],
        &stamp[11..13],
        &stamp[14..16]
    );
    let object = bucket.path().join(&key);
    std::fs::create_dir_all(object.parent().unwrap()).unwrap();
    let executions = WorkflowExecutions {
        items: vec![WorkflowExecution {
            history: Some(history),
        }],
    };
    std::fs::write(&object, executions.encode_to_vec()).unwrap();
    let listed = ok(stack.plinth_as(
        ADMIN,
        &["history", "list", "shipped", "--since", "1h", "-o", "json"],
    ));
    let listed: Vec<serde_json::Value> = serde_json::from_str(&stdout(&listed)).unwrap();
    assert_eq!(listed.len(), 1, "{listed:#?}");
    assert_eq!(listed[0]["workflowId"], "order-7");
    assert_eq!(listed[0]["runId"], "run-7");
    assert_eq!(listed[0]["status"], "Completed");
}

#[test]
fn export_on_cloud_without_a_sink_configured_fails_naming_what_to_set() {
    let cloud = Cloud::start(Settings::default());
    let stack = cloud.stack("10m").unwrap();
    let yaml = namespace_yaml(
        "unsunk",
        "unsunk",
        PAYMENTS_TEAM,
        7,
        "  export:\n    enabled: true\n",
    );
    ok(stack.apply_as(PAYMENTS_MEMBER, &yaml, &[]));
    wait_for("the reconcile to fail", || {
        phase(&stack, "unsunk") == "Failed"
    });
    let status = &get_json(&stack, "unsunk")["status"];
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("[backend] export_bucket"),
        "{status}"
    );
}
