//! Faults under load. Two workers, two proxies behind HAProxy and a codec server share one
//! dev server. Through the balancer, namespaces are applied and given rules while the
//! directory changes, and a Python SDK worker and client run workflows (activities, updates,
//! signals); meanwhile a worker or proxy is killed (SIGKILL) and restarted every few seconds,
//! and the dev server is restarted once on the same database. At the end every namespace is
//! Ready once with its two policies and one access schedule, every access list is what its
//! rules and the directory say, every workflow completed once with its result, no call was
//! answered wrongly, and Temporal holds no plaintext.
//!
//! `./scripts/test` runs it with a few namespaces; `./scripts/chaos` with 200
//! (`PLINTH_CHAOS_NAMESPACES`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use plinth_test_harness::cli::{namespace_yaml, stdout, temporal, with_input};
use plinth_test_harness::interop::{Driver, PythonWorker};
use plinth_test_harness::{
    ADMIN, DIRECTORY, DevServer, PAYMENTS_MEMBER, PAYMENTS_TEAM, PlinthStack,
};

const PLINTH: &str = env!("CARGO_BIN_EXE_plinth");
/// Joins the payments team while the namespaces are applied.
const JOINER: &str = "grace@example.com";
/// Given read access to every tenth namespace.
const READER: &str = "erin@example.com";
/// What a call may answer while the process it reached dies or Temporal restarts: the
/// client retries these. Anything else is a wrong answer.
const RETRYABLE: [&str; 9] = [
    "unavailable",
    "transport",
    "connect",
    "deadline",
    "timed out",
    "timeout",
    "cancel",
    "shutting down",
    "reset",
];

/// `plinth` as one user of the stack, through one address.
#[derive(Clone)]
struct Cli {
    home: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    address: String,
}

/// What the calls of one lane met.
#[derive(Default)]
struct Calls {
    retried: u32,
    /// Answers that were neither success nor retryable, with the call.
    wrong: Vec<String>,
}

impl Cli {
    fn run(&self, args: &[&str], stdin: &str) -> Output {
        let mut command = Command::new(PLINTH);
        command
            .arg("--home")
            .arg(&self.home)
            .env("PLINTH_CLIENT_ADDRESS", &self.address)
            .env("PLINTH_CLIENT_CERT", &self.cert)
            .env("PLINTH_CLIENT_KEY", &self.key)
            .env_remove("TEMPORAL_ADDRESS")
            .args(args);
        with_input(&mut command, stdin)
    }

    /// Runs until it succeeds, as a user retrying an unavailable service would (applying and
    /// adding a rule again change nothing). `not_yet` is an error that only says the call
    /// came early (a policy not yet seeded).
    fn until_done(&self, args: &[&str], stdin: &str, not_yet: &str, calls: &mut Calls) {
        for _ in 0..240 {
            let out = self.run(args, stdin);
            if out.status.success() {
                return;
            }
            let said = String::from_utf8_lossy(&out.stderr).into_owned();
            let lower = said.to_lowercase();
            let early = !not_yet.is_empty() && said.contains(not_yet);
            if !early && !RETRYABLE.iter().any(|cause| lower.contains(cause)) {
                calls.wrong.push(format!("plinth {args:?}: {said}"));
            }
            calls.retried += 1;
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!("plinth {args:?} never succeeded");
    }
}

fn get_json(cli: &Cli, args: &[&str]) -> serde_json::Value {
    let out = cli.run(args, "");
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// The people (`user:…`) with access to `namespace`, and at what level.
fn people_with_access(cli: &Cli, namespace: &str) -> BTreeSet<(String, String)> {
    let access = get_json(cli, &["get", "access", namespace, "-o", "json"]);
    let grants = access["grants"].as_array().cloned().unwrap_or_default();
    grants
        .iter()
        .map(|grant| {
            let field = |k: &str| grant[k].as_str().unwrap_or_default().to_owned();
            (field("identity"), field("access"))
        })
        .filter(|(who, _)| who.starts_with("user:"))
        .collect()
}

/// What namespace `i` must end with: the payments team (with whoever joined it) writes, and
/// every tenth namespace's reader reads.
fn expected_access(i: usize) -> BTreeSet<(String, String)> {
    let writers = [
        "alice@example.com",
        "bob@example.com",
        "frank@example.com",
        JOINER,
    ];
    let mut access: BTreeSet<(String, String)> = writers
        .iter()
        .map(|user| (format!("user:{user}"), "write".to_owned()))
        .collect();
    if i.is_multiple_of(10) {
        access.insert((format!("user:{READER}"), "read".to_owned()));
    }
    access
}

/// Which of `names` (numbered) are settled now, and when each was seen so: listed once,
/// Ready, with the access they must end with.
fn settled_now(cli: &Cli, names: &[(usize, String)]) -> BTreeMap<String, Instant> {
    let listed = get_json(cli, &["get", "namespace", "-o", "json"]);
    let mut phases: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for item in listed.as_array().into_iter().flatten() {
        let name = item["name"].as_str().unwrap_or_default().to_owned();
        let phase = item["phase"].as_str().unwrap_or_default().to_owned();
        phases.entry(name).or_default().push(phase);
    }
    names
        .iter()
        .filter(|(i, ns)| {
            phases.get(ns).map(Vec::as_slice) == Some(&["Ready".to_owned()])
                && people_with_access(cli, ns) == expected_access(*i)
        })
        .map(|(_, ns)| (ns.clone(), Instant::now()))
        .collect()
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

#[test]
fn nothing_is_lost_when_processes_die_under_load() {
    let count = env_number("PLINTH_CHAOS_NAMESPACES", 12) as usize;
    let fault_every = Duration::from_secs(env_number("PLINTH_CHAOS_FAULT_SECS", 8));
    let run = std::process::id();
    let server = DevServer::start().unwrap();
    // Access runs each minute: rule and directory changes start them at once anyway.
    let mut stack = PlinthStack::start_configured(
        &server,
        PLINTH.as_ref(),
        "10m",
        "1m",
        "shutdown_grace = \"2s\"",
        "",
    )
    .unwrap();
    stack.start_another_worker().unwrap();
    let second = stack.start_another_proxy().unwrap();
    stack.start_codec().unwrap();
    let balancer = stack.balance(&second).unwrap();
    let sdk_ns = format!("chaos-sdk-{run}");
    stack.provision_for_team("chaos-sdk", &sdk_ns).unwrap();
    let profile = stack
        .profile_via(PAYMENTS_MEMBER, &sdk_ns, &balancer.address)
        .unwrap();
    let (cert, key, _) = stack.credentials(PAYMENTS_MEMBER);
    let member = Cli {
        home: stack.home().to_owned(),
        cert,
        key,
        address: balancer.address.clone(),
    };
    let (cert, key, _) = stack.credentials(ADMIN);
    let admin = Cli {
        cert,
        key,
        ..member.clone()
    };

    let worker = PythonWorker::start(&profile, "chaos");
    let prefix = format!("chaos-{run}");
    let driver = Driver::start(&profile, "chaos", &prefix, 4);
    let names: Vec<String> = (0..count).map(|i| format!("chaos-{i}-{run}")).collect();
    // When each namespace's last change (its rules) was acknowledged.
    let acknowledged = Arc::new(Mutex::new(BTreeMap::new()));
    let appliers: Vec<_> = (0..4)
        .map(|lane| {
            let (member, names) = (member.clone(), names.clone());
            let acknowledged = acknowledged.clone();
            std::thread::spawn(move || {
                let mut calls = Calls::default();
                let mine = || names.iter().enumerate().skip(lane).step_by(4);
                for (_, ns) in mine() {
                    let yaml = namespace_yaml(ns, ns, PAYMENTS_TEAM, 3, "  allowDeletion: true\n");
                    member.until_done(&["apply", "-f", "-"], &yaml, "", &mut calls);
                }
                // A namespace's policies exist once it is provisioned.
                for (i, ns) in mine() {
                    let writers = format!("TEMPORAL-ns-{ns}");
                    let add = ["policy", "add-rule", &writers, "--group", PAYMENTS_TEAM];
                    let early = format!("policy {writers:?} not found");
                    member.until_done(&add, "", &early, &mut calls);
                    if i.is_multiple_of(10) {
                        let readers = format!("TEMPORAL-ns-{ns}-readers");
                        let add = ["policy", "add-rule", &readers, "--user", READER];
                        let early = format!("policy {readers:?} not found");
                        member.until_done(&add, "", &early, &mut calls);
                    }
                    acknowledged
                        .lock()
                        .unwrap()
                        .insert(ns.clone(), Instant::now());
                }
                calls
            })
        })
        .collect();

    // Watches, as a user would, for each namespace to settle once its last change was
    // acknowledged.
    let settled = Arc::new(Mutex::new(BTreeMap::new()));
    let observing = Arc::new(AtomicBool::new(true));
    let observer = {
        let (admin, names) = (admin.clone(), names.clone());
        let (acknowledged, settled) = (acknowledged.clone(), settled.clone());
        let observing = observing.clone();
        std::thread::spawn(move || {
            while observing.load(Ordering::Relaxed) {
                let waiting: Vec<(usize, String)> = {
                    let acknowledged = acknowledged.lock().unwrap();
                    let settled = settled.lock().unwrap();
                    let waiting = names.iter().cloned().enumerate();
                    waiting
                        .filter(|(_, ns)| {
                            acknowledged.contains_key(ns) && !settled.contains_key(ns)
                        })
                        .collect()
                };
                settled
                    .lock()
                    .unwrap()
                    .extend(settled_now(&admin, &waiting));
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };

    // The directory changes while the first namespaces are applied.
    std::thread::sleep(Duration::from_secs(2));
    let joined = DIRECTORY.replace(
        "members: [alice@example.com, carol@example.com, frank@example.com]",
        &format!("members: [alice@example.com, carol@example.com, frank@example.com, {JOINER}]"),
    );
    let joined = joined.replace(
        "  - email: mallory@example.com\n",
        &format!("  - email: mallory@example.com\n  - email: {JOINER}\n"),
    );
    assert_ne!(joined, DIRECTORY);
    stack.write_directory(&joined).unwrap();

    // The faults, until every namespace is applied and at least one of each kind happened:
    // a worker or proxy killed and restarted every few seconds, and the dev server
    // restarted once, after the first kill.
    let started = Instant::now();
    // How often each kind of fault happened.
    let mut faults: BTreeMap<&str, u32> = BTreeMap::new();
    let mut server_restarted = false;
    let mut seed = u64::from(run);
    let mut killed = [false; 2];
    while !appliers.iter().all(std::thread::JoinHandle::is_finished)
        || !server_restarted
        || !killed.iter().all(|k| *k)
    {
        std::thread::sleep(fault_every);
        if !server_restarted && faults.values().sum::<u32>() >= 1 {
            server.stop_serving().unwrap();
            std::thread::sleep(Duration::from_secs(3));
            server.resume_serving().unwrap();
            eprintln!("chaos: dev server restarted at {:?}", started.elapsed());
            *faults.entry("dev server restarts").or_default() += 1;
            server_restarted = true;
            continue;
        }
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let victim = (seed >> 33) % 4;
        let fault = if victim < 2 {
            let n = victim as usize;
            stack.kill_worker_at(n);
            std::thread::sleep(Duration::from_secs(1));
            stack.start_worker_at(n).unwrap();
            killed[0] = true;
            ("worker kills", format!("worker {n} killed"))
        } else {
            let n = (victim - 2) as usize;
            stack.kill_proxy(n);
            std::thread::sleep(Duration::from_secs(1));
            stack.start_proxy(n).unwrap();
            killed[1] = true;
            ("proxy kills", format!("proxy {n} killed"))
        };
        eprintln!("chaos: {} at {:?}", fault.1, started.elapsed());
        *faults.entry(fault.0).or_default() += 1;
    }
    let calls: Vec<Calls> = appliers.into_iter().map(|a| a.join().unwrap()).collect();
    let retried: u32 = calls.iter().map(|c| c.retried).sum();
    let wrong: Vec<&String> = calls.iter().flat_map(|c| &c.wrong).collect();
    let faults_over = Instant::now();

    // Settled: every namespace Ready once, with the access its policies and the directory
    // give.
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut unsettled: Vec<(usize, String)> = names.iter().cloned().enumerate().collect();
    while !unsettled.is_empty() && Instant::now() < deadline {
        let now_settled = settled_now(&admin, &unsettled);
        unsettled.retain(|(_, ns)| !now_settled.contains_key(ns));
        std::thread::sleep(Duration::from_secs(2));
    }
    let settled_by = Instant::now();
    observing.store(false, Ordering::Relaxed);
    observer.join().unwrap();
    assert!(
        unsettled.is_empty(),
        "{} of {count} namespaces not settled, e.g. {:?}: {:?}",
        unsettled.len(),
        unsettled.first(),
        unsettled
            .first()
            .map(|(_, ns)| people_with_access(&admin, ns))
    );
    let (acknowledged, settled) = (acknowledged.lock().unwrap(), settled.lock().unwrap());
    let (slowest, longest) = names
        .iter()
        .map(|ns| {
            let at = settled.get(ns).copied().unwrap_or(settled_by);
            (ns, at.duration_since(acknowledged[ns]))
        })
        .max_by_key(|(_, took)| *took)
        .unwrap();
    assert!(wrong.is_empty(), "calls answered wrongly: {wrong:#?}");

    // Each policy and schedule exists once, and holds the rules acknowledged.
    let policies = get_json(&admin, &["get", "policy", "-o", "json"]);
    let mut by_name: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for policy in policies.as_array().into_iter().flatten() {
        let name = policy["name"].as_str().unwrap_or_default();
        by_name
            .entry(name)
            .or_default()
            .push(policy["rules"].to_string());
    }
    let rules_of = |name: String| match by_name.get(name.as_str()).map(Vec::as_slice) {
        Some([rules]) => rules.clone(),
        listed => panic!("policy {name} is listed as {listed:?}, not once"),
    };
    let schedules = stdout(&temporal(
        &[
            "schedule",
            "list",
            "--namespace",
            &stack.control_namespace,
            "-o",
            "json",
        ],
        &server.address(),
    ));
    for (i, ns) in names.iter().enumerate() {
        let writers = rules_of(format!("TEMPORAL-ns-{ns}"));
        assert!(writers.contains(PAYMENTS_TEAM), "{ns}: {writers}");
        let readers = rules_of(format!("TEMPORAL-ns-{ns}-readers"));
        assert_eq!(
            readers.contains(READER),
            i.is_multiple_of(10),
            "{ns}: {readers}"
        );
        let schedule = format!("\"users/{ns}\"");
        assert_eq!(schedules.matches(&schedule).count(), 1, "{schedule}");
    }

    // Every workflow the client saw complete ran once, and Temporal lists each once.
    let driven = driver.finish();
    drop(worker);
    assert_eq!(driven.failed, 0, "{}", driven.report);
    // A list call without retries may meet a process as it dies, never a wrong answer.
    let wrongly_unlisted: Vec<&str> = driven
        .report
        .lines()
        .filter(|line| line.starts_with("list, not retried"))
        .filter(|line| {
            let line = line.to_lowercase();
            !RETRYABLE.iter().any(|cause| line.contains(cause))
        })
        .collect();
    assert!(wrongly_unlisted.is_empty(), "{wrongly_unlisted:#?}");
    assert!(driven.completed >= 4, "{}", driven.report);
    let query = format!("WorkflowId STARTS_WITH '{prefix}-'");
    let mut listed = String::new();
    let mut each_once = false;
    for _ in 0..30 {
        let output = temporal(
            &[
                "workflow",
                "list",
                "--namespace",
                &sdk_ns,
                "--query",
                &query,
                "--limit",
                "100000",
                "-o",
                "json",
            ],
            &server.address(),
        );
        listed = stdout(&output);
        let executions: serde_json::Value = serde_json::from_str(&listed).unwrap_or_default();
        let executions = executions.as_array().cloned().unwrap_or_default();
        let ids: BTreeSet<_> = executions
            .iter()
            .map(|e| e["execution"]["workflowId"].as_str().unwrap_or_default())
            .collect();
        let completed = executions
            .iter()
            .filter(|e| e["status"].as_str() == Some("WORKFLOW_EXECUTION_STATUS_COMPLETED"))
            .count();
        each_once = output.status.success()
            && ids.len() == executions.len()
            && executions.len() == driven.completed as usize
            && completed == executions.len();
        if each_once {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(
        each_once,
        "Temporal does not list each of the {} workflows once, completed: {listed}",
        driven.completed
    );

    // Inputs and update arguments (`<prefix>-<lane>-<n>-contents`, `…-item`) are sealed;
    // workflow ids (`<prefix>-<lane>-<n>`) are plaintext by design, which shows the files
    // read are the ones Temporal writes.
    let mut ids_seen = 0;
    for file in server.database_files() {
        let bytes = std::fs::read(&file).unwrap();
        let prefix = format!("{prefix}-");
        for (at, _) in bytes
            .windows(prefix.len())
            .enumerate()
            .filter(|(_, window)| *window == prefix.as_bytes())
        {
            let rest = &bytes[at + prefix.len()..];
            let id_len = rest
                .iter()
                .take_while(|b| b.is_ascii_digit() || **b == b'-')
                .count();
            let after = &rest[id_len..];
            assert!(
                !(after.starts_with(b"contents") || after.starts_with(b"item")),
                "{} is stored unencrypted in {}",
                String::from_utf8_lossy(&rest[..id_len + 8.min(after.len())]),
                file.display()
            );
            ids_seen += 1;
        }
    }
    assert!(
        ids_seen > 0,
        "no workflow id found in Temporal's database files"
    );
    eprintln!(
        "chaos: {count} namespaces; faults {faults:?} over {:?}; {retried} CLI calls retried, none \
         answered wrongly; every namespace settled, the slowest ({slowest}) {longest:?} after its \
         last change was acknowledged, all {:?} after the faults ended; SDK: {}",
        faults_over - started,
        settled_by.duration_since(faults_over),
        driven
            .report
            .lines()
            .find(|line| line.starts_with("completed "))
            .unwrap_or_default(),
    );
}
