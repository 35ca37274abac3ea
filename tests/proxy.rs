//! The front door end to end: the `temporal` CLI, a Python SDK worker and client and the
//! Rust SDK's `plinth worker`, each configured only by a `plinth profile`, talk to a real
//! `plinth proxy` in front of a real Temporal dev server. Temporal stores ciphertext only.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use plinth_test_harness::cli::{
    namespace_yaml, ok, stderr, stdout, temporal, temporal_as, text, wait_for,
};
use plinth_test_harness::interop::{Driver, PythonWorker, script as interop};
use plinth_test_harness::{
    ADMIN, DIRECTORY, DevServer, OUTSIDER, PAYMENTS_MEMBER, PAYMENTS_TEAM, PlinthStack, TlsRelay,
    temporal_bin,
};

const PLINTH: &str = env!("CARGO_BIN_EXE_plinth");
const READER: &str = "erin@example.com";
const LEAVER: &str = "frank@example.com";

/// `temporal workflow start` of the Python worker's `Parcel` on task queue `parcels`.
fn start_parcel(profile: &Path, workflow_id: &str, contents: &str) -> Output {
    let input = format!("\"{contents}\"");
    temporal_as(
        profile,
        &[
            "workflow",
            "start",
            "--type",
            "Parcel",
            "--task-queue",
            "parcels",
            "-w",
            workflow_id,
            "--input",
            &input,
        ],
    )
}

fn python_run(profile: &Path, task_queue: &str, workflow_id: &str, input: &str) -> Output {
    Command::new("python3")
        .arg(interop("proxy_client.py"))
        .arg("run")
        .arg(profile)
        .args(["team", task_queue, workflow_id, input])
        .output()
        .expect("run the Python client")
}

fn database_contains(server: &DevServer, marker: &str) -> bool {
    server.database_files().iter().any(|file| {
        std::fs::read(file).is_ok_and(|bytes| {
            bytes
                .windows(marker.len())
                .any(|window| window == marker.as_bytes())
        })
    })
}

fn metric(stack: &PlinthStack, prefix: &str) -> f64 {
    let body = ok(Command::new("curl")
        .args([
            "-sf",
            &format!("http://{}/metrics", stack.proxy_metrics_address),
        ])
        .output()
        .unwrap());
    stdout(&body)
        .lines()
        .filter(|line| line.starts_with(prefix))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn denied(output: &Output) -> bool {
    !output.status.success() && stderr(output).contains("has no")
}

/// One ListWorkflowExecutions with the SDK's retries off: `ok`, or `error CODE message`.
fn list_once(profile: &Path) -> String {
    let out = Command::new("python3")
        .arg(interop("proxy_client.py"))
        .arg("once")
        .arg(profile)
        .args(["team", "-"])
        .output()
        .expect("run the Python client");
    assert!(out.status.success(), "{}", text(&out));
    stdout(&out).trim().to_owned()
}

/// A namespace owned by the payments team: the team writes, erin reads.
fn provision(stack: &PlinthStack, name: &str) -> String {
    provision_with(stack, name, "")
}

/// [`provision`], with `spec` (YAML lines) added to the namespace's spec.
fn provision_with(stack: &PlinthStack, name: &str, spec: &str) -> String {
    let ns = format!("{name}-{}", std::process::id());
    let spec = format!("  allowDeletion: true\n{spec}");
    let yaml = namespace_yaml(name, &ns, PAYMENTS_TEAM, 3, &spec);
    ok(stack.apply_as(PAYMENTS_MEMBER, &yaml, &["--wait"]));
    let writers = format!("TEMPORAL-ns-{ns}");
    let readers = format!("TEMPORAL-ns-{ns}-readers");
    ok(stack.plinth_as(
        PAYMENTS_MEMBER,
        &["policy", "add-rule", &writers, "--group", PAYMENTS_TEAM],
    ));
    ok(stack.plinth_as(
        PAYMENTS_MEMBER,
        &["policy", "add-rule", &readers, "--user", READER],
    ));
    ok(stack.plinth_as(ADMIN, &["policy", "add-rule", &writers, "--user", ADMIN]));
    wait_for("access granted", || {
        let out = stdout(&stack.plinth_as(ADMIN, &["get", "access", &ns]));
        out.contains(&format!("user:{READER}"))
            && out.contains(&format!("user:{PAYMENTS_MEMBER}"))
            && out.contains(&format!("user:{ADMIN}"))
    });
    ns
}

/// A shared stack (access runs every 3 s) with the payments team's namespace `orders`, and
/// alice's profile for it.
struct Orders {
    stack: PlinthStack,
    ns: String,
    alice: PathBuf,
}

fn orders() -> &'static Orders {
    static FIXTURE: OnceLock<Orders> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let stack = PlinthStack::start_with(DevServer::shared(), PLINTH.as_ref(), "10m", "3s")
            .and_then(PlinthStack::shared)
            .expect("start the stack");
        let ns = provision(&stack, "orders");
        let alice = stack.profile(PAYMENTS_MEMBER, &ns).unwrap();
        Orders { stack, ns, alice }
    })
}

/// A card number, unique to this test process, for the payload of `sdk`'s workflow.
fn card_number(sdk: &str) -> String {
    format!("card-4111-{}-{sdk}", std::process::id())
}

/// Whether Temporal's database holds `text` in plaintext, asked once a start sent around the
/// proxy shows up there: so the search does see plaintext, and what came before is written.
fn stored_in_plaintext(stack: &PlinthStack, ns: &str, text: &str) -> bool {
    static BYPASSES: AtomicU32 = AtomicU32::new(0);
    let id = format!("bypass-{}", BYPASSES.fetch_add(1, Ordering::Relaxed));
    let bypass = format!("{id}-{}", std::process::id());
    ok(temporal(
        &[
            "workflow",
            "start",
            "--type",
            "Parcel",
            "--task-queue",
            "nobody",
            "-w",
            &id,
            "--namespace",
            ns,
            "--input",
            &format!("\"{bypass}\""),
        ],
        &stack.temporal_address,
    ));
    let server = DevServer::shared();
    wait_for(
        "plaintext sent around the proxy reaches the database",
        || database_contains(server, &bypass),
    );
    database_contains(server, text)
}

/// The CLI starts, queries, signals, lists and describes a workflow that a Python SDK worker
/// serves, each seeing plaintext; Temporal stores it sealed.
#[test]
fn the_cli_drives_a_python_sdk_workflow_through_the_proxy_and_temporal_stores_it_sealed() {
    let Orders { stack, ns, alice } = orders();
    let _worker = PythonWorker::start(alice, "parcels");
    let contents = card_number("cli");
    ok(start_parcel(alice, "parcel-1", &contents));
    let mut query = String::new();
    wait_for("the query answers", || {
        let out = temporal_as(
            alice,
            &["workflow", "query", "-w", "parcel-1", "--name", "status"],
        );
        query = stdout(&out);
        out.status.success()
    });
    assert!(query.contains(&format!("holding {contents}")), "{query}");
    ok(temporal_as(
        alice,
        &[
            "workflow", "signal", "-w", "parcel-1", "--name", "deliver", "--input", "\"bob\"",
        ],
    ));
    let result = ok(temporal_as(
        alice,
        &["workflow", "result", "-w", "parcel-1"],
    ));
    assert!(
        stdout(&result).contains(&format!("charged {contents}, delivered to bob")),
        "{}",
        text(&result)
    );
    let listed = ok(temporal_as(alice, &["workflow", "list"]));
    assert!(stdout(&listed).contains("parcel-1"), "{}", text(&listed));
    let described = ok(temporal_as(
        alice,
        &["workflow", "describe", "-w", "parcel-1"],
    ));
    assert!(
        stdout(&described).contains("Parcel"),
        "{}",
        text(&described)
    );
    assert!(
        !stored_in_plaintext(stack, ns, &contents),
        "{contents} is in Temporal's database in plaintext"
    );
}

#[test]
fn temporals_own_errors_reach_the_cli_with_their_status_and_message() {
    let Orders { alice, .. } = orders();
    let missing = temporal_as(alice, &["workflow", "describe", "-w", "no-such-parcel"]);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("workflow not found"),
        "{}",
        text(&missing)
    );
}

/// A workflow with an activity: the client gets the result in plaintext, the proxy counts the
/// bytes it sealed and opened, and Temporal stores them sealed.
#[test]
fn the_python_sdk_client_runs_a_workflow_through_the_proxy_and_temporal_stores_it_sealed() {
    let Orders { stack, ns, alice } = orders();
    let _worker = PythonWorker::start(alice, "checkouts");
    let order = card_number("py");
    let run = python_run(alice, "checkouts", "checkout-1", &order);
    assert!(run.status.success(), "{}", text(&run));
    assert_eq!(stdout(&run).trim(), format!("charged {order}"));
    assert!(
        metric(
            stack,
            "plinth_proxy_payload_bytes_total{direction=\"encrypt\"}"
        ) > 0.0
    );
    assert!(
        metric(
            stack,
            "plinth_proxy_payload_bytes_total{direction=\"decrypt\"}"
        ) > 0.0
    );
    assert!(
        !stored_in_plaintext(stack, ns, &order),
        "{order} is in Temporal's database in plaintext"
    );
}

/// `plinth worker` runs its canary (a workflow and an activity) from the admin's profile, which
/// may also prepare the namespace.
#[test]
fn the_rust_sdk_worker_runs_its_canary_through_the_proxy_and_temporal_stores_it_sealed() {
    let Orders { stack, ns, alice } = orders();
    let token = card_number("rust");
    let admin = stack.profile(ADMIN, ns).unwrap();
    let rust_home = tempfile::tempdir().unwrap();
    std::fs::write(rust_home.path().join("directory.yaml"), DIRECTORY).unwrap();
    let mut rust_worker = Command::new(PLINTH)
        .args(["--home", rust_home.path().to_str().unwrap(), "worker"])
        .arg("--config-file")
        .arg(&admin)
        .args(["--profile", "team", "--task-queue", "rust"])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .env_remove("TEMPORAL_ADDRESS")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let canary = temporal_as(
        alice,
        &[
            "workflow",
            "execute",
            "--type",
            "Canary",
            "--task-queue",
            "rust",
            "-w",
            "canary-1",
            "--input",
            &format!("\"{token}\""),
            "--output",
            "json",
        ],
    );
    let _ = rust_worker.kill();
    let _ = rust_worker.wait();
    assert!(canary.status.success(), "{}", text(&canary));
    let report: serde_json::Value = serde_json::from_slice(&canary.stdout).unwrap();
    assert_eq!(report["result"]["token"], token, "{report}");
    assert!(
        !stored_in_plaintext(stack, ns, &token),
        "{token} is in Temporal's database in plaintext"
    );
}

/// The proxy refuses, naming the namespace, and counts each refusal.
#[test]
fn a_reader_may_read_but_not_write_and_an_outsider_may_do_neither() {
    let Orders { stack, ns, alice } = orders();
    ok(start_parcel(alice, "for-erin", "for a reader"));
    let erin = stack.profile(READER, ns).unwrap();
    ok(temporal_as(&erin, &["workflow", "list"]));
    ok(temporal_as(
        &erin,
        &["workflow", "describe", "-w", "for-erin"],
    ));
    let start = start_parcel(&erin, "by-erin", "from a reader");
    assert!(denied(&start), "{}", text(&start));
    assert!(
        stderr(&start).contains("no write access"),
        "{}",
        text(&start)
    );
    let signal = temporal_as(
        &erin,
        &["workflow", "signal", "-w", "for-erin", "--name", "deliver"],
    );
    assert!(denied(&signal), "{}", text(&signal));
    let mallory = stack.profile(OUTSIDER, ns).unwrap();
    for out in [
        temporal_as(&mallory, &["workflow", "list"]),
        start_parcel(&mallory, "m", "from an outsider"),
    ] {
        assert!(denied(&out), "{}", text(&out));
        assert!(
            stderr(&out).contains(ns.as_str()),
            "names the namespace: {}",
            text(&out)
        );
    }
    assert!(
        metric(
            stack,
            &format!("plinth_proxy_denials_total{{namespace=\"{ns}\"")
        ) >= 4.0
    );
}

#[test]
fn an_unknown_namespace_is_not_found_rather_than_a_hang_or_a_denial() {
    let Orders { alice, .. } = orders();
    let unknown = Command::new(temporal_bin())
        .args(["workflow", "list", "--config-file"])
        .arg(alice)
        .args(["--profile", "team", "--namespace", "no-such-namespace"])
        .output()
        .unwrap();
    assert!(
        stderr(&unknown).contains("not served here"),
        "{}",
        text(&unknown)
    );
}

/// The directory changes under the stack, so it has a stack of its own.
#[test]
fn a_departed_user_loses_access_after_the_next_access_run() {
    let stack = PlinthStack::start_with(DevServer::shared(), PLINTH.as_ref(), "10m", "3s")
        .expect("start the stack");
    let ns = provision(&stack, "departures");
    let alice = stack.profile(PAYMENTS_MEMBER, &ns).unwrap();
    let frank = stack.profile(LEAVER, &ns).unwrap();
    ok(temporal_as(&frank, &["workflow", "list"]));
    stack
        .write_directory(&DIRECTORY.replace(
            "  - email: frank@example.com\n",
            "  - email: frank@example.com\n    status: departed\n",
        ))
        .unwrap();
    wait_for("frank's access to end", || {
        denied(&temporal_as(&frank, &["workflow", "list"]))
    });
    ok(temporal_as(&alice, &["workflow", "list"]));
}

#[test]
fn the_proxy_reports_itself_healthy_and_ready() {
    let Orders { stack, .. } = orders();
    let health = |path: &str| {
        let out = Command::new("curl")
            .args([
                "-s",
                &format!("http://{}{path}", stack.proxy_metrics_address),
            ])
            .output()
            .unwrap();
        stdout(&out)
    };
    assert_eq!(health("/healthz").trim(), "ok");
    assert_eq!(health("/readyz").trim(), "ready");
}

/// Deletes a namespace of its own: the shared one must stay.
#[test]
fn a_deleted_namespace_stops_being_served() {
    let Orders { stack, .. } = orders();
    let ns = provision(stack, "retired");
    let alice = stack.profile(PAYMENTS_MEMBER, &ns).unwrap();
    ok(temporal_as(&alice, &["workflow", "list"]));
    ok(stack.plinth_as(ADMIN, &["delete", "namespace", "retired", "--wait"]));
    wait_for("the deleted namespace to be unknown", || {
        stderr(&temporal_as(&alice, &["workflow", "list"])).contains("not served here")
    });
}

/// An unmodified Python SDK worker and client, configured by `plinth profile`, use every
/// feature through the proxy: activities with heartbeats, retries and failure details, local
/// activities, timers, signals and signal-with-start, queries (one failing), updates (one
/// rejected by its validator) and update-with-start, a child workflow, continue-as-new,
/// cancel and terminate, memo and search attributes with list and count, a schedule, and a
/// Nexus operation served in another namespace. The client sees every text as it was, and
/// Temporal's database holds none of it.
#[test]
fn every_sdk_feature_works_through_the_proxy_and_is_stored_encrypted() {
    let server = DevServer::shared();
    let mut stack =
        PlinthStack::start_with(server, PLINTH.as_ref(), "10m", "3s").expect("start the stack");
    let ns = provision_with(
        &stack,
        "features",
        "  searchAttributes:\n    Tag: Keyword\n",
    );
    let handler_ns = provision(&stack, "features-nexus");
    let alice = stack.profile(PAYMENTS_MEMBER, &ns).unwrap();
    let alice_handler = stack.profile(PAYMENTS_MEMBER, &handler_ns).unwrap();
    // Nexus endpoints are the cluster admin's: made on Temporal directly.
    let endpoint = format!("plinth-features-{}", std::process::id());
    ok(temporal(
        &[
            "operator",
            "nexus",
            "endpoint",
            "create",
            "--name",
            &endpoint,
            "--target-namespace",
            &handler_ns,
            "--target-task-queue",
            "features",
        ],
        &stack.temporal_address,
    ));
    let marker = format!("feature-{}", std::process::id());
    let run = Command::new("timeout")
        .args(["300", "python3"])
        .arg(interop("features.py"))
        .arg(&alice)
        .args(["team", "features", &marker])
        .arg(&alice_handler)
        .arg(&endpoint)
        .output()
        .expect("run the Python features");
    assert!(run.status.success(), "{}", text(&run));
    // The last line: the SDK's core logs to standard output too.
    let seen: serde_json::Value = serde_json::from_str(stdout(&run).lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("one JSON object ({e}): {}", text(&run)));
    let expected = serde_json::json!({
        "update": format!("renamed to {marker}-update"),
        "rejected": format!("refused forbidden {marker}-reject"),
        "query": format!("query failed for {marker}-update"),
        "result": format!("finished as {marker}-update"),
        "update_with_start": format!("renamed to {marker}-uws"),
        "update_with_start_result": format!("finished as {marker}-uws"),
        "failure": format!("workflow failed after boom {marker}-failure"),
        "everything": [
            format!("{marker}-everything").to_uppercase(),
            format!("child got {marker}-everything"),
            format!("hello {marker}-everything"),
            "True",
        ],
        "nexus_failure": format!("refused {marker}-nexus-failure"),
        "signal_with_start": format!("finished as {marker}-sws"),
        "cancel": "CancelledError",
        "terminate": "TerminatedError",
        "listed": true,
        "memo": format!("{marker}-memo"),
        "schedule": [format!("{marker}-schedule")],
        "scheduled": format!("child got {marker}-schedule"),
    });
    assert_eq!(seen, expected);
    for text in [marker.clone(), marker.to_uppercase()] {
        assert!(
            !database_contains(server, &text),
            "{text} is in Temporal's database in plaintext"
        );
    }
    stack.kill_worker();
}

type WorkflowClient = temporalio_common::protos::temporal::api::workflowservice::v1::workflow_service_client::WorkflowServiceClient<tonic::transport::Channel>;

/// What a workflow's history holds, as a reader sees it through the proxy: who started it, its
/// input, the signals it got and the children it started, by kind.
type History = Vec<(&'static str, String)>;

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

/// One JSON string, as an SDK encodes it.
fn json_string(text: &str) -> temporalio_common::protos::temporal::api::common::v1::Payloads {
    use temporalio_common::protos::temporal::api::common::v1::{Payload, Payloads};
    Payloads {
        payloads: vec![Payload {
            metadata: [("encoding".to_owned(), b"json/plain".to_vec())].into(),
            data: format!("\"{text}\"").into_bytes(),
            ..Default::default()
        }],
    }
}

/// A start of `id`, of a type no worker serves, in `ns` on task queue `queue`.
fn start_anything(
    ns: &str,
    id: &str,
    queue: &str,
) -> temporalio_common::protos::temporal::api::workflowservice::v1::StartWorkflowExecutionRequest {
    use temporalio_common::protos::temporal::api::common::v1::WorkflowType;
    use temporalio_common::protos::temporal::api::taskqueue::v1::TaskQueue;
    temporalio_common::protos::temporal::api::workflowservice::v1::StartWorkflowExecutionRequest {
        namespace: ns.to_owned(),
        workflow_id: id.to_owned(),
        workflow_type: Some(WorkflowType {
            name: "Anything".into(),
        }),
        task_queue: Some(TaskQueue {
            name: queue.to_owned(),
            ..Default::default()
        }),
        request_id: id.to_owned(),
        ..Default::default()
    }
}

/// Starts `source-{who}` in `a`, takes its first task and completes it with a signal to the
/// workflow `target` of `b` and a child `child-of-{who}` in `b`; their inputs are
/// `{marker}-{who}` and `{marker}-child-{who}`.
async fn command_across(
    mut client: WorkflowClient,
    a: &str,
    b: &str,
    marker: &str,
    who: &str,
) -> Result<(), tonic::Status> {
    use temporalio_common::protos::temporal::api::command::v1::{
        Command, SignalExternalWorkflowExecutionCommandAttributes,
        StartChildWorkflowExecutionCommandAttributes, command,
    };
    use temporalio_common::protos::temporal::api::common::v1::{WorkflowExecution, WorkflowType};
    use temporalio_common::protos::temporal::api::enums::v1::CommandType;
    use temporalio_common::protos::temporal::api::taskqueue::v1::TaskQueue;
    use temporalio_common::protos::temporal::api::workflowservice::v1::{
        PollWorkflowTaskQueueRequest, RespondWorkflowTaskCompletedRequest,
    };
    let queue = format!("xns-{who}");
    client
        .start_workflow_execution(start_anything(a, &format!("source-{who}"), &queue))
        .await?;
    let mut poll = tonic::Request::new(PollWorkflowTaskQueueRequest {
        namespace: a.to_owned(),
        task_queue: Some(TaskQueue {
            name: queue,
            ..Default::default()
        }),
        ..Default::default()
    });
    poll.set_timeout(Duration::from_secs(30));
    let task = client.poll_workflow_task_queue(poll).await?.into_inner();
    #[allow(deprecated)]
    let signal = SignalExternalWorkflowExecutionCommandAttributes {
        namespace: b.to_owned(),
        execution: Some(WorkflowExecution {
            workflow_id: "target".into(),
            ..Default::default()
        }),
        signal_name: "poke".into(),
        input: Some(json_string(&format!("{marker}-{who}"))),
        ..Default::default()
    };
    #[allow(deprecated)]
    let child = StartChildWorkflowExecutionCommandAttributes {
        namespace: b.to_owned(),
        workflow_id: format!("child-of-{who}"),
        workflow_type: Some(WorkflowType {
            name: "Anything".into(),
        }),
        task_queue: Some(TaskQueue {
            name: "nobody".into(),
            ..Default::default()
        }),
        input: Some(json_string(&format!("{marker}-child-{who}"))),
        ..Default::default()
    };
    client
        .respond_workflow_task_completed(RespondWorkflowTaskCompletedRequest {
            namespace: a.to_owned(),
            task_token: task.task_token,
            commands: vec![
                Command {
                    command_type: CommandType::SignalExternalWorkflowExecution as i32,
                    attributes: Some(
                        command::Attributes::SignalExternalWorkflowExecutionCommandAttributes(
                            signal,
                        ),
                    ),
                    ..Default::default()
                },
                Command {
                    command_type: CommandType::StartChildWorkflowExecution as i32,
                    attributes: Some(
                        command::Attributes::StartChildWorkflowExecutionCommandAttributes(child),
                    ),
                    ..Default::default()
                },
            ],
            ..Default::default()
        })
        .await
        .map(|_| ())
}

/// The history of workflow `id` in `ns`, empty if there is none.
async fn history_of(client: &WorkflowClient, ns: &str, id: &str) -> History {
    use temporalio_common::protos::temporal::api::common::v1::{Payloads, WorkflowExecution};
    use temporalio_common::protos::temporal::api::history::v1::history_event::Attributes;
    use temporalio_common::protos::temporal::api::workflowservice::v1::GetWorkflowExecutionHistoryRequest;
    let history = client
        .clone()
        .get_workflow_execution_history(GetWorkflowExecutionHistoryRequest {
            namespace: ns.to_owned(),
            execution: Some(WorkflowExecution {
                workflow_id: id.to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .map(|history| history.into_inner().history.unwrap_or_default().events)
        .unwrap_or_default();
    let text = |input: Option<Payloads>| {
        input.map_or(String::new(), |input| {
            String::from_utf8_lossy(&input.payloads[0].data).into_owned()
        })
    };
    history
        .into_iter()
        .filter_map(|event| match event.attributes? {
            Attributes::WorkflowExecutionStartedEventAttributes(started) => Some(vec![
                ("identity", started.identity),
                ("input", text(started.input)),
            ]),
            Attributes::WorkflowExecutionSignaledEventAttributes(signal) => {
                Some(vec![("signal", text(signal.input))])
            }
            Attributes::StartChildWorkflowExecutionInitiatedEventAttributes(child) => {
                Some(vec![("child", text(child.input))])
            }
            _ => None,
        })
        .flatten()
        .collect()
}

/// [`history_of`] once `done` holds of it, or as it is after 20 seconds.
async fn history_when(
    client: &WorkflowClient,
    ns: &str,
    id: &str,
    done: impl Fn(&History) -> bool,
) -> History {
    let mut history = Vec::new();
    for _ in 0..100 {
        history = history_of(client, ns, id).await;
        if done(&history) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    history
}

/// Two namespaces of the payments team, with cross-namespace commands enabled on the dev
/// server: mallory may write `a` alone. Alice has started `target` in `b` and completed a
/// workflow task in `a` with [`command_across`]; what came of it is here as alice reads it.
struct TwoNamespaces {
    stack: PlinthStack,
    a: String,
    b: String,
    alice: PathBuf,
    marker: String,
    target: History,
    child: History,
    parent: History,
}

fn two_namespaces() -> &'static TwoNamespaces {
    static FIXTURE: OnceLock<TwoNamespaces> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        use temporalio_common::protos::temporal::api::workflowservice::v1::StartWorkflowExecutionRequest;
        let stack = PlinthStack::start_with(DevServer::shared(), PLINTH.as_ref(), "10m", "3s")
            .and_then(PlinthStack::shared)
            .expect("start the stack");
        let a = provision(&stack, "xns-a");
        let b = provision(&stack, "xns-b");
        ok(stack.plinth_as(
            PAYMENTS_MEMBER,
            &[
                "policy",
                "add-rule",
                &format!("TEMPORAL-ns-{a}"),
                "--user",
                OUTSIDER,
            ],
        ));
        wait_for("mallory may write a", || {
            stdout(&stack.plinth_as(ADMIN, &["get", "access", &a]))
                .contains(&format!("user:{OUTSIDER}"))
        });
        let alice = stack.profile(PAYMENTS_MEMBER, &a).unwrap();
        let marker = format!("signal-{}", std::process::id());
        let (target, child, parent) = block_on(async {
            let client = WorkflowClient::new(channel_of(&alice).await);
            client
                .clone()
                .start_workflow_execution(StartWorkflowExecutionRequest {
                    identity: "claims to be user:admin@example.com".into(),
                    ..start_anything(&b, "target", "nobody")
                })
                .await
                .expect("start the target in b");
            command_across(client.clone(), &a, &b, &marker, "alice")
                .await
                .expect("write on both: the commands go");
            let target = history_when(&client, &b, "target", |history| {
                history.iter().any(|(kind, _)| *kind == "signal")
            })
            .await;
            let child = history_when(&client, &b, "child-of-alice", |history| {
                !history.is_empty()
            })
            .await;
            let parent = history_of(&client, &a, "source-alice").await;
            (target, child, parent)
        });
        TwoNamespaces {
            stack,
            a,
            b,
            alice,
            marker,
            target,
            child,
            parent,
        }
    })
}

/// Write on one namespace does not act on another: the whole task completion is refused, so
/// neither of its commands takes effect.
#[test]
fn a_command_acting_on_another_namespace_is_refused_without_write_there() {
    let TwoNamespaces {
        stack,
        a,
        b,
        alice,
        marker,
        ..
    } = two_namespaces();
    let mallory = stack.profile(OUTSIDER, a).unwrap();
    block_on(async {
        let alice = WorkflowClient::new(channel_of(alice).await);
        let mallory = WorkflowClient::new(channel_of(&mallory).await);
        let refused = command_across(mallory, a, b, marker, "mallory")
            .await
            .expect_err("write on a alone does not reach b");
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
        assert!(
            refused.message().contains(b.as_str()),
            "names b: {refused:?}"
        );
        let target = history_of(&alice, b, "target").await;
        assert!(
            !target.contains(&("signal", format!("\"{marker}-mallory\""))),
            "mallory's signal never arrived: {target:?}"
        );
        assert!(
            history_of(&alice, b, "child-of-mallory").await.is_empty(),
            "mallory's child was never started"
        );
    });
    assert!(
        metric(
            stack,
            &format!("plinth_proxy_denials_total{{namespace=\"{b}\"")
        ) >= 1.0
    );
}

#[test]
fn a_signal_to_another_namespace_arrives_opened_for_its_readers() {
    let TwoNamespaces { marker, target, .. } = two_namespaces();
    let signals: Vec<&str> = target
        .iter()
        .filter(|(kind, _)| *kind == "signal")
        .map(|(_, input)| input.as_str())
        .collect();
    assert_eq!(
        signals,
        [format!("\"{marker}-alice\"")],
        "only alice's signal, opened for b"
    );
}

/// Its input is sealed for `b`; the parent's record of it in `a` opens for alice, who may read
/// `b`.
#[test]
fn a_child_started_in_another_namespace_gets_its_input_there_and_its_parent_records_it() {
    let TwoNamespaces {
        marker,
        child,
        parent,
        ..
    } = two_namespaces();
    let input = format!("\"{marker}-child-alice\"");
    assert!(child.contains(&("input", input.clone())), "{child:?}");
    assert!(parent.contains(&("child", input)), "{parent:?}");
}

#[test]
fn a_start_records_the_certified_caller_ahead_of_the_identity_it_claims() {
    let TwoNamespaces { target, .. } = two_namespaces();
    let started: History = target
        .iter()
        .filter(|(kind, _)| *kind != "signal")
        .cloned()
        .collect();
    assert_eq!(
        started,
        vec![
            (
                "identity",
                format!("user:{PAYMENTS_MEMBER} claims to be user:admin@example.com")
            ),
            ("input", String::new()),
        ],
        "started by alice as certified"
    );
}

#[test]
fn temporal_stores_what_crosses_namespaces_sealed() {
    let TwoNamespaces { marker, .. } = two_namespaces();
    assert!(
        !database_contains(DevServer::shared(), marker),
        "{marker} is in Temporal's database in plaintext"
    );
}

/// The proxy's peak resident memory, from /proc.
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .expect("VmHWM in /proc status");
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib / 1024
}

/// A start whose input is `size` bytes of zeros, as a gzip bomb carries.
fn zeros_start(
    ns: &str,
    size: usize,
) -> temporalio_common::protos::temporal::api::workflowservice::v1::StartWorkflowExecutionRequest {
    use temporalio_common::protos::temporal::api::common::v1::{Payload, Payloads, WorkflowType};
    use temporalio_common::protos::temporal::api::taskqueue::v1::TaskQueue;
    temporalio_common::protos::temporal::api::workflowservice::v1::StartWorkflowExecutionRequest {
        namespace: ns.to_owned(),
        workflow_id: "bomb".into(),
        workflow_type: Some(WorkflowType {
            name: "Bomb".into(),
        }),
        task_queue: Some(TaskQueue {
            name: "bombs".into(),
            ..Default::default()
        }),
        input: Some(Payloads {
            payloads: vec![Payload {
                data: vec![0; size],
                ..Default::default()
            }],
        }),
        request_id: "bomb".into(),
        ..Default::default()
    }
}

/// Gzip bombs (8 MiB of zeros in a few KiB each, four at once) are refused with
/// RESOURCE_EXHAUSTED once decompression reaches `[proxy] max_message_bytes`; the proxy's memory
/// stays small, the refusals are counted, and other calls are answered.
#[test]
fn a_gzip_bomb_is_refused_at_the_message_limit_while_other_calls_are_answered() {
    use temporalio_common::protos::temporal::api::workflowservice::v1::workflow_service_client::WorkflowServiceClient;
    let server = DevServer::shared();
    let stack =
        PlinthStack::start_with(server, PLINTH.as_ref(), "10m", "3s").expect("start the stack");
    let ns = provision(&stack, "bombs");
    let alice = stack.profile(PAYMENTS_MEMBER, &ns).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = WorkflowServiceClient::new(channel_of(&alice).await)
            .send_compressed(tonic::codec::CompressionEncoding::Gzip);
        let bombs = (0..4).map(|_| {
            let mut client = client.clone();
            let bomb = zeros_start(&ns, 8 << 20);
            async move { client.start_workflow_execution(bomb).await }
        });
        for answer in futures::future::join_all(bombs).await {
            let refused = answer.expect_err("a bomb is refused");
            assert_eq!(
                refused.code(),
                tonic::Code::ResourceExhausted,
                "{refused:?}"
            );
            assert!(
                refused.message().contains("exceeds 4194304 bytes"),
                "{refused:?}"
            );
        }
    });
    assert_eq!(list_once(&alice), "ok", "another call is answered");
    assert!(metric(&stack, "plinth_proxy_limited_total{limit=\"message_size\"}") >= 4.0);
    let peak = peak_rss_mib(stack.proxy_pid());
    assert!(peak < 200, "the proxy peaked at {peak} MiB");
}

/// A stack whose proxy has `limits` (TOML lines of `[proxy]`), with a namespace `name` the
/// payments team writes, and alice's profile for it.
fn limited_stack(limits: &str, name: &str) -> (PlinthStack, String, PathBuf) {
    let stack = PlinthStack::start_configured(
        DevServer::shared(),
        PLINTH.as_ref(),
        "10m",
        "3s",
        limits,
        "",
    )
    .expect("start the stack");
    let ns = provision(&stack, name);
    let alice = stack.profile(PAYMENTS_MEMBER, &ns).unwrap();
    (stack, ns, alice)
}

/// A client that holds its connection's stream limit busy with long polls gets no more at
/// once; the limit is counted, and another client's calls are answered.
#[test]
fn a_stream_flood_stops_at_the_connection_limit_while_other_clients_are_served() {
    use temporalio_common::protos::temporal::api::taskqueue::v1::TaskQueue;
    use temporalio_common::protos::temporal::api::workflowservice::v1::PollActivityTaskQueueRequest;
    use temporalio_common::protos::temporal::api::workflowservice::v1::workflow_service_client::WorkflowServiceClient;
    let (stack, ns, alice) = limited_stack("max_streams_per_connection = 4", "streams");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let flood = runtime.block_on(async {
        let client = WorkflowServiceClient::new(channel_of(&alice).await);
        (0..12)
            .map(|_| {
                let mut client = client.clone();
                let mut poll = tonic::Request::new(PollActivityTaskQueueRequest {
                    namespace: ns.clone(),
                    task_queue: Some(TaskQueue {
                        name: "nobody".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
                poll.set_timeout(Duration::from_secs(60));
                tokio::spawn(async move { client.poll_activity_task_queue(poll).await })
            })
            .collect::<Vec<_>>()
    });
    wait_for("the connection to reach its stream limit", || {
        metric(&stack, "plinth_proxy_limited_total{limit=\"streams\"}") >= 1.0
    });
    assert_eq!(list_once(&alice), "ok", "another connection is served");
    for poll in flood {
        poll.abort();
    }
}

/// Connections that never start their TLS handshake, from one address, hold at most
/// `[proxy] max_handshakes_per_peer` places; the rest are dropped and counted, and a client from
/// another address is served at once.
#[test]
fn a_slow_handshake_flood_is_held_to_its_share_while_other_clients_are_served() {
    let (stack, _, alice) = limited_stack(
        "max_handshakes_per_peer = 8\nhandshake_timeout = \"5m\"",
        "handshakes",
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let proxy: std::net::SocketAddr = stack.proxy_address.parse().unwrap();
    let silent = runtime.block_on(async {
        let mut silent = Vec::new();
        for _ in 0..50 {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
            silent.push(socket.connect(proxy).await.expect("connect"));
        }
        silent
    });
    wait_for("handshakes past the share to be dropped", || {
        metric(&stack, "plinth_proxy_limited_total{limit=\"handshakes\"}") >= 40.0
    });
    // With a five-minute handshake timeout, only the limit lets this through now.
    assert_eq!(list_once(&alice), "ok", "a client from 127.0.0.1 is served");
    drop(silent);
}

/// Upstream mTLS: the proxy reaches Temporal through a TLS front demanding its client
/// certificate, picks up a rotated certificate without dropping a long poll, and rides out
/// Temporal going away and coming back.
#[test]
fn upstream_certificates_rotate_and_an_upstream_outage_is_unavailable_then_recovers() {
    let server = DevServer::start().expect("a dev server of this test's own");
    let relay = TlsRelay::start(server.address()).unwrap();
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = (
        certs.path().join("ca.pem"),
        certs.path().join("proxy.pem"),
        certs.path().join("proxy.key"),
    );
    relay.write_ca(&ca).unwrap();
    let first = relay.issue_client("plinth-proxy-1", &cert, &key).unwrap();
    let settings = format!(
        "upstream = \"{}\"\nupstream_ca = \"{}\"\nupstream_cert = \"{}\"\nupstream_key = \"{}\"\n\
         upstream_server_name = \"localhost\"",
        relay.address,
        ca.display(),
        cert.display(),
        key.display()
    );
    let stack = PlinthStack::start_configured(&server, PLINTH.as_ref(), "10m", "3s", &settings, "")
        .expect("start the stack");
    let ns = provision(&stack, "shipping");
    let alice = stack.profile(PAYMENTS_MEMBER, &ns).unwrap();

    // A worker long-polls through the first certificate's connection.
    let worker = PythonWorker::start(&alice, "rotation");
    let run = python_run(&alice, "rotation", "before-rotation", "one");
    assert!(run.status.success(), "{}", text(&run));
    assert_eq!(relay.presented().last(), Some(&first));

    // 5. Rotated on disk: the polling worker keeps working, new connections use the new one.
    std::thread::sleep(Duration::from_millis(1100)); // a modification time the proxy can tell apart
    let second = relay.issue_client("plinth-proxy-2", &cert, &key).unwrap();
    wait_for("the proxy to connect with the new certificate", || {
        let _ = temporal_as(&alice, &["workflow", "list"]);
        relay.presented().contains(&second)
    });
    let run = python_run(&alice, "rotation", "after-rotation", "two");
    assert!(run.status.success(), "{}", text(&run));
    assert_eq!(stdout(&run).trim(), "charged two");
    assert!(stack.log("proxy").contains("upstream credentials reloaded"));

    // 6. Temporal stops: calls fail fast with UNAVAILABLE; it comes back: the same worker and
    //    proxy carry on.
    server.stop_serving().unwrap();
    let asked = Instant::now();
    let answer = list_once(&alice);
    let waited = asked.elapsed();
    assert!(answer.starts_with("error UNAVAILABLE"), "{answer}");
    assert!(
        waited < Duration::from_secs(20),
        "answered without waiting out the deadline: {waited:?}"
    );
    server.resume_serving().unwrap();
    let mut recovered = None;
    wait_for("calls through the proxy to succeed again", || {
        let run = python_run(&alice, "rotation", "after-outage", "three");
        let ok = run.status.success();
        recovered = Some(run);
        ok
    });
    assert_eq!(stdout(&recovered.unwrap()).trim(), "charged three");
    drop(worker);
}

/// While Temporal is down the proxy says so at once: readiness fails, and the platform API
/// and calls in a namespace (past the access list's cache) answer UNAVAILABLE naming
/// Temporal's address. When it returns, the same proxy and worker carry on by themselves.
#[test]
fn while_temporal_is_down_the_proxy_says_so_and_carries_on_when_it_returns() {
    use temporalio_common::protos::temporal::api::workflowservice::v1::ListWorkflowExecutionsRequest;
    let server = DevServer::start().unwrap();
    let stack =
        PlinthStack::start_with(&server, PLINTH.as_ref(), "10m", "3s").expect("start the stack");
    let ns = provision(&stack, "outage");
    let alice = stack.profile(PAYMENTS_MEMBER, &ns).unwrap();
    let readiness = || {
        let out = Command::new("curl")
            .args(["-s", "-w", " %{http_code}"])
            .arg(format!("http://{}/readyz", stack.proxy_metrics_address))
            .output()
            .unwrap();
        stdout(&out)
    };
    let list = || {
        block_on(async {
            let mut client = WorkflowClient::new(channel_of(&alice).await);
            client
                .list_workflow_executions(ListWorkflowExecutionsRequest {
                    namespace: ns.clone(),
                    ..Default::default()
                })
                .await
                .map(drop)
        })
    };
    list().expect("alice lists her namespace");
    assert!(readiness().ends_with(" 200"), "{}", readiness());
    let down = format!("Temporal at {} is unreachable", stack.temporal_address);

    server.stop_serving().unwrap();
    wait_for("readiness to say Temporal is down", || {
        let answer = readiness();
        answer.ends_with(" 503") && answer.contains(&down)
    });
    let refused = stack.plinth_as(ADMIN, &["get", "namespaces"]);
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(stderr(&refused).contains(&down), "{}", text(&refused));
    std::thread::sleep(Duration::from_secs(6)); // past the access list's cache
    let forwarded = list().expect_err("no list while Temporal is down");
    assert_eq!(forwarded.code(), tonic::Code::Unavailable, "{forwarded:?}");
    assert!(forwarded.message().contains(&down), "{forwarded:?}");

    server.resume_serving().unwrap();
    wait_for("readiness to return", || readiness().ends_with(" 200"));
    list().expect("alice lists her namespace again");
    let after = provision(&stack, "after-outage");
    assert!(
        stack
            .access(&after)
            .contains(&(format!("user:{PAYMENTS_MEMBER}"), "write".into()))
    );
}

/// A tonic channel to the proxy made from a `plinth profile`, as any gRPC client would.
async fn channel_of(profile: &Path) -> tonic::transport::Channel {
    use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
    let document: toml::Table = std::fs::read_to_string(profile).unwrap().parse().unwrap();
    let team = &document["profile"]["team"];
    let tls = &team["tls"];
    let read = |key: &str| std::fs::read(tls[key].as_str().unwrap()).unwrap();
    let config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("server_ca_cert_path")))
        .identity(Identity::from_pem(
            read("client_cert_path"),
            read("client_key_path"),
        ))
        .domain_name(tls["server_name"].as_str().unwrap());
    Channel::from_shared(format!("https://{}", team["address"].as_str().unwrap()))
        .unwrap()
        .tls_config(config)
        .unwrap()
        .connect()
        .await
        .expect("connect to the proxy")
}

/// Deadlines and cancellation pass through the proxy: a long poll ends with Temporal's own
/// empty answer at its deadline, and a poll its client abandons is withdrawn upstream, so the
/// next task goes to a live poller instead of timing out in a dead one.
#[test]
fn long_polls_keep_their_deadline_and_abandoned_polls_are_withdrawn_upstream() {
    use temporalio_common::protos::temporal::api::common::v1::WorkflowType;
    use temporalio_common::protos::temporal::api::taskqueue::v1::TaskQueue;
    use temporalio_common::protos::temporal::api::workflowservice::v1::workflow_service_client::WorkflowServiceClient;
    use temporalio_common::protos::temporal::api::workflowservice::v1::{
        PollWorkflowTaskQueueRequest, StartWorkflowExecutionRequest,
    };

    let server = DevServer::shared();
    let stack =
        PlinthStack::start_with(server, PLINTH.as_ref(), "10m", "3s").expect("start the stack");
    let ns = provision(&stack, "deadlines");
    let alice = stack.profile(PAYMENTS_MEMBER, &ns).unwrap();
    let poll = |queue: &str, deadline: Duration| {
        let mut request = tonic::Request::new(PollWorkflowTaskQueueRequest {
            namespace: ns.clone(),
            task_queue: Some(TaskQueue {
                name: queue.to_owned(),
                ..Default::default()
            }),
            identity: "deadline-test".into(),
            ..Default::default()
        });
        request.set_timeout(deadline);
        request
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut client = WorkflowServiceClient::new(channel_of(&alice).await);

        // Temporal saw the deadline: it answers (empty) before the client would give up.
        let idle = client
            .poll_workflow_task_queue(poll("idle", Duration::from_secs(5)))
            .await
            .expect("Temporal's own empty answer, not the client's DEADLINE_EXCEEDED");
        assert!(idle.get_ref().task_token.is_empty());

        // A poll abandoned by its client is reset upstream...
        let abandoned = tokio::time::timeout(
            Duration::from_secs(2),
            client
                .clone()
                .poll_workflow_task_queue(poll("handoff", Duration::from_secs(60))),
        )
        .await;
        assert!(abandoned.is_err(), "no task to hand out yet");
        tokio::time::sleep(Duration::from_secs(1)).await;
        client
            .start_workflow_execution(StartWorkflowExecutionRequest {
                namespace: ns.clone(),
                workflow_id: "handoff-1".into(),
                workflow_type: Some(WorkflowType {
                    name: "Handoff".into(),
                }),
                task_queue: Some(TaskQueue {
                    name: "handoff".into(),
                    ..Default::default()
                }),
                request_id: "handoff-1".into(),
                identity: "deadline-test".into(),
                ..Default::default()
            })
            .await
            .expect("start a workflow");
        // ...so its workflow task goes to this poller at the first attempt, not after timing
        // out in the abandoned one.
        let task = client
            .poll_workflow_task_queue(poll("handoff", Duration::from_secs(60)))
            .await
            .expect("poll")
            .into_inner();
        assert!(!task.task_token.is_empty(), "the workflow task arrives");
        assert_eq!(task.attempt, 1, "first attempt, handed to the live poller");
    });
}

/// A client built against a newer Temporal API than the proxy's: fields the proxy does not know
/// go on to Temporal as they were, at the top level of a request whose payloads are sealed and
/// nested inside it, and come back in what Temporal recorded.
#[test]
fn fields_from_a_newer_api_pass_the_proxy_both_ways() {
    use temporalio_common::protos::temporal::api::common::v1::{
        Payload, Payloads, WorkflowExecution,
    };
    use temporalio_common::protos::temporal::api::taskqueue::v1::TaskQueue;
    use temporalio_common::protos::temporal::api::workflowservice::v1::{
        GetWorkflowExecutionHistoryRequest, StartWorkflowExecutionResponse,
    };

    #[derive(Clone, PartialEq, prost::Message)]
    struct NewerWorkflowType {
        #[prost(string, tag = "1")]
        name: String,
        #[prost(string, tag = "9999")]
        hint: String,
    }
    /// StartWorkflowExecutionRequest's first fields, and one from the future.
    #[derive(Clone, PartialEq, prost::Message)]
    struct NewerStartRequest {
        #[prost(string, tag = "1")]
        namespace: String,
        #[prost(string, tag = "2")]
        workflow_id: String,
        #[prost(message, optional, tag = "3")]
        workflow_type: Option<NewerWorkflowType>,
        #[prost(message, optional, tag = "4")]
        task_queue: Option<TaskQueue>,
        #[prost(message, optional, tag = "5")]
        input: Option<Payloads>,
        #[prost(string, tag = "10")]
        request_id: String,
        #[prost(string, tag = "9999")]
        from_the_future: String,
    }
    /// GetWorkflowExecutionHistoryResponse with its history left as bytes.
    #[derive(Clone, PartialEq, prost::Message)]
    struct RawHistory {
        #[prost(bytes = "vec", tag = "1")]
        history: Vec<u8>,
    }

    let server = DevServer::shared();
    let stack =
        PlinthStack::start_with(server, PLINTH.as_ref(), "10m", "3s").expect("start the stack");
    let ns = provision(&stack, "newer-api");
    let alice = stack.profile(PAYMENTS_MEMBER, &ns).unwrap();
    let request = NewerStartRequest {
        namespace: ns.clone(),
        workflow_id: "newer".into(),
        workflow_type: Some(NewerWorkflowType {
            name: "Parcel".into(),
            hint: "newer-api-hint".into(),
        }),
        task_queue: Some(TaskQueue {
            name: "newer-api".into(),
            ..Default::default()
        }),
        input: Some(Payloads {
            payloads: vec![Payload {
                metadata: [("encoding".to_owned(), b"json/plain".to_vec())].into(),
                data: b"\"newer-api-marker\"".to_vec(),
                ..Default::default()
            }],
        }),
        request_id: "newer".into(),
        from_the_future: "kept".into(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let history =
        runtime.block_on(async {
            let mut grpc = tonic::client::Grpc::new(channel_of(&alice).await);
            let service = "/temporal.api.workflowservice.v1.WorkflowService";
            grpc.ready().await.unwrap();
            grpc.unary(
            tonic::Request::new(request),
            format!("{service}/StartWorkflowExecution").parse().unwrap(),
            tonic_prost::ProstCodec::<NewerStartRequest, StartWorkflowExecutionResponse>::default(),
        )
        .await
        .expect("the start goes on, unknown fields and all");
            grpc.ready().await.unwrap();
            let history = grpc.unary(
            tonic::Request::new(GetWorkflowExecutionHistoryRequest {
                namespace: ns.clone(),
                execution: Some(WorkflowExecution {
                    workflow_id: "newer".into(),
                    run_id: String::new(),
                }),
                ..Default::default()
            }),
            format!("{service}/GetWorkflowExecutionHistory")
                .parse()
                .unwrap(),
            tonic_prost::ProstCodec::<GetWorkflowExecutionHistoryRequest, RawHistory>::default(),
        )
        .await
        .expect("read the history")
        .into_inner()
        .history;
            // An RPC the proxy's table lacks can be neither authorized nor encrypted: refused.
            grpc.ready().await.unwrap();
            let unknown = grpc
            .unary(
                tonic::Request::new(GetWorkflowExecutionHistoryRequest {
                    namespace: ns.clone(),
                    ..Default::default()
                }),
                format!("{service}/GetWorkflowExecutionHistoryFromTheFuture")
                    .parse()
                    .unwrap(),
                tonic_prost::ProstCodec::<GetWorkflowExecutionHistoryRequest, RawHistory>::default(
                ),
            )
            .await
            .expect_err("an unknown RPC is refused");
            assert_eq!(unknown.code(), tonic::Code::Unimplemented, "{unknown:?}");
            assert!(
                unknown.message().contains("does not know this RPC"),
                "{unknown:?}"
            );
            history
        });
    // The fields Plinth's protos lack are counted by the message that carried them.
    assert!(
        metric(
            &stack,
            "plinth_proxy_unknown_fields_total{message=\"temporal.api.workflowservice.v1.StartWorkflowExecutionRequest\"}"
        ) >= 1.0
    );
    let contains = |text: &[u8]| history.windows(text.len()).any(|w| w == text);
    assert!(
        contains(b"newer-api-hint"),
        "the nested field reached Temporal and came back"
    );
    assert!(contains(b"newer-api-marker"), "the input, decrypted");
    let described = temporal_as(&alice, &["workflow", "describe", "-w", "newer"]);
    assert!(stdout(&ok(described)).contains("Parcel"));
    assert!(
        !database_contains(server, "newer-api-marker"),
        "input sealed"
    );
}

/// `/readyz` of the proxy whose health checks are at `address`: body and status code.
fn readiness_at(address: &str) -> String {
    let out = Command::new("curl")
        .args(["-s", "-w", " %{http_code}"])
        .arg(format!("http://{address}/readyz"))
        .output()
        .unwrap();
    stdout(&out)
}

/// TCP connections established to the server at `address`.
fn established_to(address: &str) -> usize {
    let port = address.rsplit_once(':').unwrap().1;
    let out = ok(Command::new("ss")
        .args(["-Htn", "state", "established"])
        .arg(format!("( sport = :{port} )"))
        .output()
        .unwrap());
    stdout(&out).lines().count()
}

/// Two proxies behind a TCP load balancer (HAProxy, checking `/readyz`) are restarted one
/// after the other with SIGTERM, as an orchestrator rolls them, while a Python SDK worker and
/// client run workflows through the balancer: each proxy reports not ready, drains the
/// connections it holds, and exits cleanly; every workflow completes once with its result, and
/// list calls made without the SDK's retries all succeed, but for those the client itself sent
/// as a GOAWAY arrived (which never reach a server, and which the SDKs retry).
#[test]
fn a_rolling_restart_of_two_proxies_behind_a_balancer_fails_no_call() {
    let mut stack = PlinthStack::start_configured(
        DevServer::shared(),
        PLINTH.as_ref(),
        "10m",
        "3s",
        "shutdown_delay = \"1s\"\nshutdown_grace = \"3s\"",
        "",
    )
    .unwrap();
    let ns = provision(&stack, "rolling");
    let second = stack.start_another_proxy().unwrap();
    let balancer = stack.balance(&second).unwrap();
    let first = stack.first_proxy();
    let profile = stack
        .profile_via(PAYMENTS_MEMBER, &ns, &balancer.address)
        .unwrap();
    let _worker = PythonWorker::start(&profile, "rolling");
    let driver = Driver::start(&profile, "rolling", "order", 4);
    for (n, proxy) in [first, second].iter().enumerate() {
        wait_for("the balancer to send the proxy a client", || {
            established_to(&proxy.address) > 0
        });
        std::thread::sleep(Duration::from_secs(1)); // calls under way on it
        let status = stack.terminate_proxy(n).unwrap();
        assert!(status.success(), "proxy {n} exited with {status}");
        stack.start_proxy(n).unwrap();
        wait_for("the restarted proxy to be ready", || {
            readiness_at(&proxy.metrics_address).ends_with(" 200")
        });
        std::thread::sleep(Duration::from_secs(2)); // the balancer's checks take it back
    }
    std::thread::sleep(Duration::from_secs(2));
    let driven = driver.finish();
    eprintln!(
        "rolling restart: {}",
        driven.report.lines().next().unwrap_or("")
    );
    let report = &driven.report;
    // A graceful restart loses no connection under a call: nothing had to be repeated.
    let lost = (driven.failed, driven.unlisted, driven.retried);
    assert_eq!(lost, (0, 0, 0), "{report}");
    assert!(driven.completed >= 10 && driven.listed >= 10, "{report}");
    // A call meets a GOAWAY on its way out only as its connection is drained: once a restart
    // at most, for the one connection the list calls use.
    assert!(driven.raced <= 2, "{report}");
    for role in ["proxy", "proxy2"] {
        let log = stack.log(role);
        let draining = log
            .lines()
            .find(|line| line.contains("GOAWAY sent"))
            .unwrap_or_else(|| panic!("{role} did not drain: {log}"));
        assert!(
            !draining.contains("connections=0"),
            "{role} held no connection when stopped, so nothing was drained: {draining}"
        );
        assert!(!log.contains("not drained in time"), "{log}");
    }
}

/// A proxy told to stop reports not ready at once and still serves new connections for its
/// shutdown delay; then it takes no new connection, and a task queue poll still waiting when
/// its grace is over is answered as Temporal answers a poll that found no task (so its worker
/// polls again, elsewhere), not with an error.
#[test]
fn a_stopping_proxy_reports_not_ready_then_ends_long_polls_with_an_empty_answer() {
    use temporalio_common::protos::temporal::api::taskqueue::v1::TaskQueue;
    use temporalio_common::protos::temporal::api::workflowservice::v1::{
        ListWorkflowExecutionsRequest, PollActivityTaskQueueRequest,
    };
    let mut stack = PlinthStack::start_configured(
        DevServer::shared(),
        PLINTH.as_ref(),
        "10m",
        "3s",
        "shutdown_delay = \"3s\"\nshutdown_grace = \"4s\"",
        "",
    )
    .unwrap();
    let ns = provision(&stack, "stopping");
    let alice = stack.profile(PAYMENTS_MEMBER, &ns).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut client = runtime.block_on(async { WorkflowClient::new(channel_of(&alice).await) });
    let request = PollActivityTaskQueueRequest {
        namespace: ns.clone(),
        task_queue: Some(TaskQueue {
            name: "nothing-comes".into(),
            ..Default::default()
        }),
        identity: "stopping-test".into(),
        ..Default::default()
    };
    let poll = runtime.spawn(async move {
        let mut poll = tonic::Request::new(request);
        poll.set_timeout(Duration::from_secs(70)); // Temporal answers empty after a minute
        client.poll_activity_task_queue(poll).await
    });
    wait_for("the poll to wait in Temporal", || {
        let described = temporal_as(
            &alice,
            &[
                "task-queue",
                "describe",
                "--task-queue",
                "nothing-comes",
                "--task-queue-type",
                "activity",
            ],
        );
        stdout(&described).contains("stopping-test")
    });
    let pid = stack.proxy_pid().to_string();
    ok(Command::new("kill").args(["-TERM", &pid]).output().unwrap());
    wait_for("readiness to turn false", || {
        readiness_at(&stack.proxy_metrics_address) == "shutting down\n 503"
    });
    runtime.block_on(async {
        let mut fresh = WorkflowClient::new(channel_of(&alice).await);
        fresh
            .list_workflow_executions(ListWorkflowExecutionsRequest {
                namespace: ns.clone(),
                ..Default::default()
            })
            .await
            .expect("a new connection is served during the shutdown delay");
    });
    wait_for("the proxy to stop accepting connections", || {
        std::net::TcpStream::connect(&stack.proxy_address).is_err()
    });
    assert!(!poll.is_finished(), "the poll waits on into the grace");
    let answer = runtime
        .block_on(poll)
        .unwrap()
        .expect("the poll is answered, not failed");
    assert!(answer.get_ref().task_token.is_empty(), "{answer:?}");
    let status = stack.terminate_proxy(0).unwrap();
    assert!(status.success(), "{status}");
    let log = stack.log("proxy");
    assert!(log.contains("shutdown grace over"), "{log}");
}

/// One caller holding as many calls as `[proxy] max_calls_per_identity` allows is refused
/// more, with RESOURCE_EXHAUSTED naming the setting, while another caller's calls pass; its
/// calls pass again once its own have ended.
#[test]
fn a_caller_at_its_limit_is_refused_while_other_callers_pass() {
    use temporalio_common::protos::temporal::api::common::v1::WorkflowExecution;
    use temporalio_common::protos::temporal::api::workflowservice::v1::{
        DescribeWorkflowExecutionRequest, GetWorkflowExecutionHistoryRequest,
    };
    let stack = PlinthStack::start_configured(
        DevServer::shared(),
        PLINTH.as_ref(),
        "10m",
        "3s",
        "max_calls_per_identity = 3",
        "",
    )
    .unwrap();
    let ns = provision(&stack, "limited");
    let alice = stack.profile(PAYMENTS_MEMBER, &ns).unwrap();
    let erin = stack.profile(READER, &ns).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut client = WorkflowClient::new(channel_of(&alice).await);
        client
            .start_workflow_execution(start_anything(&ns, "held", "nobody-polls"))
            .await
            .unwrap();
        let execution = Some(WorkflowExecution {
            workflow_id: "held".into(),
            ..Default::default()
        });
        // Each waits for the workflow's next event, which never comes: a call held in flight.
        let wait = GetWorkflowExecutionHistoryRequest {
            namespace: ns.clone(),
            execution: execution.clone(),
            wait_new_event: true,
            next_page_token: Vec::new(),
            ..Default::default()
        };
        let history = client
            .get_workflow_execution_history(wait.clone())
            .await
            .unwrap();
        let next = history.into_inner().next_page_token;
        let held: Vec<_> = (0..3)
            .map(|_| {
                let mut client = client.clone();
                let wait = GetWorkflowExecutionHistoryRequest {
                    next_page_token: next.clone(),
                    ..wait.clone()
                };
                tokio::spawn(async move { client.get_workflow_execution_history(wait).await })
            })
            .collect();
        let describe = DescribeWorkflowExecutionRequest {
            namespace: ns.clone(),
            execution,
        };
        let refused = loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            match client.describe_workflow_execution(describe.clone()).await {
                Err(status) => break status,
                Ok(_) => assert!(
                    !held.iter().all(tokio::task::JoinHandle::is_finished),
                    "the waits ended early"
                ),
            }
        };
        assert_eq!(
            refused.code(),
            tonic::Code::ResourceExhausted,
            "{refused:?}"
        );
        assert!(
            refused.message().contains("[proxy] max_calls_per_identity"),
            "{refused:?}"
        );
        let mut other = WorkflowClient::new(channel_of(&erin).await);
        other
            .describe_workflow_execution(describe.clone())
            .await
            .expect("another caller's call passes");
        for wait in &held {
            wait.abort();
        }
        let mut again = None;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            again = Some(client.describe_workflow_execution(describe.clone()).await);
            if again.as_ref().is_some_and(Result::is_ok) {
                break;
            }
        }
        again
            .unwrap()
            .expect("its calls pass once its own have ended");
    });
    assert!(
        metric(
            &stack,
            "plinth_proxy_limited_total{limit=\"calls_per_identity\"}"
        ) >= 1.0
    );
}

/// Driven far past what its upstream takes (64 callers at once against a limit of 8 calls in
/// flight), the proxy answers every call: admitted ones succeed, the rest are refused at once
/// with RESOURCE_EXHAUSTED, counted, and memory stays bounded. Prints the admitted calls'
/// p50 and p99 and the proxy's peak RSS.
#[test]
fn a_proxy_past_saturation_refuses_the_excess_and_keeps_admitted_calls_moving() {
    const LANES: usize = 64;
    const CALLS: usize = 25;
    let stack = PlinthStack::start_configured(
        DevServer::shared(),
        PLINTH.as_ref(),
        "10m",
        "3s",
        "max_concurrent_calls = 8",
        "",
    )
    .unwrap();
    let ns = provision(&stack, "saturated");
    let alice = stack.profile(PAYMENTS_MEMBER, &ns).unwrap();
    let before = peak_rss_mib(stack.proxy_pid());
    let answers = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut channels = Vec::new();
        for _ in 0..4 {
            channels.push(channel_of(&alice).await);
        }
        let lanes: Vec<_> = (0..LANES)
            .map(|lane| {
                let mut client = WorkflowClient::new(channels[lane % channels.len()].clone());
                let ns = ns.clone();
                tokio::spawn(async move {
                    let mut answers = Vec::new();
                    for call in 0..CALLS {
                        let id = format!("saturated-{lane}-{call}");
                        let started = Instant::now();
                        let answer = client
                            .start_workflow_execution(start_anything(&ns, &id, "nobody-polls"))
                            .await;
                        answers.push((answer.map(drop).map_err(|s| s.code()), started.elapsed()));
                    }
                    answers
                })
            })
            .collect();
        let mut answers = Vec::new();
        for lane in lanes {
            answers.extend(lane.await.unwrap());
        }
        answers
    });
    let mut admitted: Vec<Duration> = answers
        .iter()
        .filter(|(answer, _)| answer.is_ok())
        .map(|(_, took)| *took)
        .collect();
    let refused = answers
        .iter()
        .filter(|(answer, _)| *answer == Err(tonic::Code::ResourceExhausted))
        .count();
    let other: Vec<_> = answers
        .iter()
        .filter(|(answer, _)| !matches!(answer, Ok(()) | Err(tonic::Code::ResourceExhausted)))
        .collect();
    assert!(
        other.is_empty(),
        "answers other than OK and RESOURCE_EXHAUSTED: {other:?}"
    );
    assert!(
        refused > 0 && !admitted.is_empty(),
        "{refused} refused, {} admitted",
        admitted.len()
    );
    assert_eq!(
        metric(&stack, "plinth_proxy_limited_total{limit=\"calls\"}"),
        refused as f64
    );
    admitted.sort();
    let at = |q: f64| admitted[((admitted.len() - 1) as f64 * q) as usize];
    let peak = peak_rss_mib(stack.proxy_pid());
    eprintln!(
        "saturation: {} calls from {LANES} callers at once, limit 8: {} admitted (p50 {:?}, p99 {:?}), {refused} refused; proxy peak RSS {peak} MiB ({before} MiB before)",
        answers.len(),
        admitted.len(),
        at(0.5),
        at(0.99),
    );
    assert!(
        peak < before + 64,
        "peak RSS {peak} MiB, {before} MiB before"
    );
}
