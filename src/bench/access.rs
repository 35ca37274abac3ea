//! `plinth bench access`: access runs over many namespaces and a large directory, in the
//! worker's own code path, next to the reads alone that every run needs.

use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt as _;
use plinth_activities::reconcile_access;
use plinth_cloud_double::{Double, Settings as DoubleSettings};
use plinth_control::directory::{Directory, LdapDirectory, Snapshot, Source};
use plinth_control::{
    AccessChange, Cloud, CloudSettings, ControlPlane, NamespaceBackend, ScimResources,
    SecretSource, SelfHosted, UpstreamAuth,
};
use plinth_proto::policy::{readers_policy_name, seeded_policies, writers_policy_name};
use plinth_proto::v1::{AccessSummary, NamespaceSpec, Rule};
use plinth_scim::{Kind, Resource, ScimDirectory, ScimStore as _};
use tokio::task::JoinSet;

use super::{DevStack, cpu_time, memory_of, ms, ratio};
use crate::config::Config;
use crate::home::Home;

#[derive(Debug, clap::Args)]
pub struct AccessBenchArgs {
    /// Namespaces, each with a writers and a readers policy.
    #[arg(long, default_value_t = 1000)]
    namespaces: usize,
    /// People in the directory.
    #[arg(long, default_value_t = 20_000)]
    users: usize,
    /// Groups in the directory; every tenth nests the next.
    #[arg(long, default_value_t = 500)]
    groups: usize,
    /// People who leave before the last cycle.
    #[arg(long, default_value_t = 100)]
    departures: usize,
    /// Namespaces reconciled at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Where the namespaces and their access live: the dev server, or the Temporal Cloud Ops
    /// API test double (a stand-in for Cloud in this process, its calls counted).
    #[arg(long, value_enum, default_value_t = AccessBackend::SelfHosted)]
    backend: AccessBackend,
    /// Where the directory is read from: parsed from YAML in this process; read from the
    /// LDAP server `[directory.ldap]` configures, which must hold the bench's directory
    /// (`--write-ldif` writes it; `scripts/bench-ldap` loads it into a local `slapd`); or
    /// read from the SCIM resources in the dev stack's control plane, which the bench
    /// pushes there first (once: a second run finds them).
    #[arg(long, value_enum, default_value_t = BenchSource::File)]
    source: BenchSource,
    /// Write the bench's directory as LDIF under `--ldif-suffix` to this file, and stop.
    #[arg(long)]
    write_ldif: Option<std::path::PathBuf>,
    #[arg(long, default_value = "dc=bench,dc=example")]
    ldif_suffix: String,
}

/// `plinth bench access --source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchSource {
    /// The YAML file format, parsed here.
    File,
    /// `[directory.ldap]`.
    Ldap,
    /// SCIM resources kept in the control plane.
    Scim,
}

/// Reads of the directory timed to find its refresh cost.
const REFRESHES: usize = 3;

/// `plinth bench access --backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AccessBackend {
    /// The `plinth dev` Temporal.
    SelfHosted,
    /// The Ops API test double.
    CloudDouble,
}

/// What one pass over every namespace cost.
struct Cycle {
    wall: Duration,
    cpu: Duration,
    total: AccessSummary,
    /// Ops API calls and mutations it made, on the Cloud double.
    ops: Option<(u64, u64)>,
}

/// Runs against the `plinth dev` of `$PLINTH_HOME`; use a fresh home: it leaves its
/// namespaces and policies behind (a second run reuses them).
pub async fn access(
    config: &Config,
    home: &Home,
    args: &AccessBenchArgs,
) -> anyhow::Result<ExitCode> {
    if let Some(path) = &args.write_ldif {
        let admins = &config.platform.admin_group;
        std::fs::write(path, directory_ldif(args, admins))?;
        eprintln!("wrote {}", path.display());
        return Ok(ExitCode::SUCCESS);
    }
    let dev = DevStack::read(home)?;
    let connection = super::connect(&dev.temporal).await?;
    let key_dir = tempfile::tempdir()?;
    let (backend, double): (Arc<dyn NamespaceBackend>, _) = match args.backend {
        AccessBackend::SelfHosted => (
            Arc::new(SelfHosted::new(connection.clone(), dev.temporal.clone())),
            None,
        ),
        AccessBackend::CloudDouble => {
            let (cloud, double) = cloud_double(args, key_dir.path()).await?;
            (Arc::new(cloud), Some(Arc::new(double)))
        }
    };
    let counted = |double: &Option<Arc<Double>>| {
        double
            .as_ref()
            .map(|d| (d.calls().values().sum::<u64>(), d.mutations()))
    };
    let control = ControlPlane::connect(
        connection,
        &config.temporal.namespace,
        &config.temporal.task_queue,
    )?;
    let admins = config.platform.admin_group.clone();
    let names: Vec<String> = (0..args.namespaces)
        .map(|i| format!("bench-access-{i}"))
        .collect();

    let text = directory_yaml(args, &admins, 0);
    let expected = Snapshot::from_yaml(&text).map_err(anyhow::Error::msg)?;
    let (directory, refresh) = read_directory(config, args, &control, &text, expected).await?;

    eprintln!("setup: {} namespaces and their policies", names.len());
    for_each(
        &names,
        args.concurrency,
        || counted(&double),
        |i, name| {
            let (backend, control, admins) = (backend.clone(), control.clone(), admins.clone());
            let groups = args.groups;
            async move {
                if backend.describe(&name).await?.is_none() {
                    let spec = NamespaceSpec {
                        name: name.clone(),
                        retention_days: 1,
                        regions: vec!["us-east-1".into()],
                        ..Default::default()
                    };
                    backend.register(&spec).await?;
                }
                let [mut writers, mut readers] = seeded_policies(&name, &admins, "bench-owners");
                writers.rules = vec![group_rule(i % groups), group_rule((i + 1) % groups)];
                readers.rules = vec![group_rule((i + 2) % groups)];
                for policy in [writers, readers] {
                    control.ensure_policy(policy).await?;
                }
                // A full cycle starts from nobody having access.
                let held = backend.list_access(&name).await?;
                let revoke: Vec<AccessChange> =
                    held.into_keys().map(AccessChange::Revoke).collect();
                backend.apply_access(&name, &revoke).await?;
                Ok(AccessSummary::default())
            }
        },
    )
    .await?;

    eprintln!("reads only");
    let reads = for_each(
        &names,
        args.concurrency,
        || counted(&double),
        |_, name| {
            let (backend, control) = (backend.clone(), control.clone());
            async move {
                for policy in [writers_policy_name(&name), readers_policy_name(&name)] {
                    control.policy(&policy).await?;
                }
                control.live_grants(&name, SystemTime::now()).await?;
                backend.list_access(&name).await?;
                Ok(AccessSummary::default())
            }
        },
    )
    .await?;
    let run = |directory: Arc<dyn Directory>| {
        let (backend, control, admins) = (backend.clone(), control.clone(), admins.clone());
        move |_, name: String| {
            let (backend, control) = (backend.clone(), control.clone());
            let (directory, admins) = (directory.clone(), admins.clone());
            async move {
                reconcile_access(
                    &name,
                    &control,
                    backend.as_ref(),
                    directory.as_ref(),
                    &admins,
                )
                .await
            }
        }
    };
    eprintln!("full cycle");
    let full = for_each(
        &names,
        args.concurrency,
        || counted(&double),
        run(directory.clone()),
    )
    .await?;
    eprintln!("no-change cycle");
    let quiet = for_each(
        &names,
        args.concurrency,
        || counted(&double),
        run(directory.clone()),
    )
    .await?;
    let departed: Arc<dyn Directory> = Arc::new(
        Snapshot::from_yaml(&directory_yaml(args, &admins, args.departures))
            .map_err(anyhow::Error::msg)?,
    );
    eprintln!("cycle after {} departures", args.departures);
    let some = for_each(&names, args.concurrency, || counted(&double), run(departed)).await?;

    let n = names.len();
    let on = match args.backend {
        AccessBackend::SelfHosted => dev.temporal.clone(),
        AccessBackend::CloudDouble => "the Temporal Cloud Ops API double".to_owned(),
    };
    println!(
        "{n} namespaces, {} people in {} groups, {} at once, on {on}\n",
        args.users, args.groups, args.concurrency
    );
    println!(
        "{:<26} {:>8} {:>8} {:>8} {:>7} {:>10} {:>10} {:>11} {:>9} {:>10} {:>10}",
        "",
        "granted",
        "revoked",
        "writes",
        "total",
        "wall",
        "CPU",
        "CPU per ns",
        "vs reads",
        "Ops calls",
        "mutations"
    );
    for (label, cycle) in [
        ("reads only (baseline)", &reads),
        ("full cycle", &full),
        ("no-change cycle", &quiet),
        ("after departures", &some),
    ] {
        let t = &cycle.total;
        let (calls, mutations) = cycle
            .ops
            .map_or(("-".to_owned(), "-".to_owned()), |(c, m)| {
                (c.to_string(), m.to_string())
            });
        println!(
            "{:<26} {:>8} {:>8} {:>8} {:>7} {:>10} {:>10} {:>11} {:>9} {:>10} {:>10}",
            label,
            t.granted,
            t.revoked,
            t.backend_writes,
            t.granted + t.changed + t.revoked + t.unchanged,
            ms(cycle.wall),
            ms(cycle.cpu),
            format!("{:.2} ms", cycle.cpu.as_secs_f64() * 1e3 / n as f64),
            ratio(cycle.cpu, reads.cpu),
            calls,
            mutations,
        );
    }
    let (source, refresh_wall, refresh_cpu) = refresh;
    println!(
        "\ndirectory refresh from {source}: {} wall, {} CPU in this process (median of {REFRESHES})",
        ms(refresh_wall),
        ms(refresh_cpu)
    );
    let (rss, _) = memory_of(std::process::id().into())?;
    println!(
        "bench process RSS {rss} MiB (the worker's is {} MiB)",
        memory_of(dev.worker_pid)?.0
    );
    Ok(ExitCode::SUCCESS)
}

/// The Cloud backend against an Ops API double in this process that knows every person of
/// the bench's directory, finishes operations at the first poll and does not rate-limit.
async fn cloud_double(
    args: &AccessBenchArgs,
    dir: &std::path::Path,
) -> anyhow::Result<(Cloud, Double)> {
    let key = "bench-cloud-key";
    let double = Double::start(
        "127.0.0.1:0",
        DoubleSettings {
            api_keys: vec![key.into()],
            polls_to_complete: 1,
            burst: u32::MAX,
            calls_per_second: u32::MAX,
            ..Default::default()
        },
    )
    .await?;
    double.add_user("dev@example.com");
    for i in 0..args.users {
        double.add_user(&format!("user-{i}@bench.example"));
    }
    let key_file = dir.join("api-key");
    std::fs::write(&key_file, key)?;
    let ca = plinth_identity::CertificateAuthority::generate("bench CA")?;
    let cloud = Cloud::new(CloudSettings {
        export_sink: None,
        endpoint: format!("http://{}", double.address()),
        account: double.account(),
        api_key: SecretSource::File(key_file),
        accepted_client_ca: ca.cert_pem().as_bytes().to_vec(),
        api_key_auth: false,
        codec_endpoint: None,
        operation_timeout: Duration::from_secs(60),
        invite_users: false,
        upstream: UpstreamAuth::Mtls,
    })?;
    Ok((cloud, double))
}

fn group_rule(index: usize) -> Rule {
    Rule {
        group: format!("bench-group-{index}"),
        ..Default::default()
    }
}

/// `users` people spread round-robin over `groups` groups; the first `departed` have left.
/// The directory the cycles read, read from the source `--source` names
/// [`REFRESHES`] times; with the median wall and CPU time of a read. What LDAP holds must be
/// the bench's directory (`expected`).
async fn read_directory(
    config: &Config,
    args: &AccessBenchArgs,
    control: &ControlPlane,
    yaml: &str,
    expected: Snapshot,
) -> anyhow::Result<(Arc<dyn Directory>, (String, Duration, Duration))> {
    let source: Option<Box<dyn Source>> = match args.source {
        BenchSource::File => None,
        BenchSource::Ldap => Some(Box::new(LdapDirectory::new(config.directory.ldap.clone())?)),
        BenchSource::Scim => {
            let store = Arc::new(ScimResources::new(control.clone()));
            push_scim(&store, args, &config.platform.admin_group).await?;
            Some(Box::new(ScimDirectory::new(store)))
        }
    };
    let mut reads = Vec::new();
    let mut snapshot = None;
    for _ in 0..REFRESHES {
        let (wall, cpu) = (Instant::now(), cpu_time()?);
        let read = match &source {
            None => Snapshot::from_yaml(yaml).map_err(anyhow::Error::msg)?,
            Some(source) => source.fetch().await?,
        };
        reads.push((wall.elapsed(), cpu_time()? - cpu));
        snapshot = Some(read);
    }
    let snapshot = snapshot.expect("read at least once");
    anyhow::ensure!(
        snapshot == expected,
        "the directory read ({} people, {} groups) is not the bench's ({} people, {} groups): \
         load the LDIF of `plinth bench access --write-ldif` with the same --users and --groups",
        snapshot.people(),
        snapshot.groups(),
        expected.people(),
        expected.groups()
    );
    reads.sort();
    let (wall, cpu) = reads[reads.len() / 2];
    let source = match &source {
        None => "YAML (parse)".to_owned(),
        Some(source) => source.name(),
    };
    Ok((Arc::new(snapshot), (source, wall, cpu)))
}

/// Pushes [`directory_yaml`]'s people and groups as SCIM resources (ids `user-<i>`,
/// `group-<g>`), those not there yet, many at once; says how long it took.
async fn push_scim(
    store: &Arc<ScimResources>,
    args: &AccessBenchArgs,
    admins: &str,
) -> anyhow::Result<()> {
    let stamp = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let resource = |kind: Kind, id: String, attributes: serde_json::Value| Resource {
        kind,
        id,
        version: 1,
        created: stamp.clone(),
        modified: stamp.clone(),
        attributes: attributes.as_object().cloned().unwrap_or_default(),
    };
    let user = |id: String, email: String| {
        let attributes = serde_json::json!({
            "userName": email, "active": true,
            "emails": [{"value": email, "primary": true}],
        });
        resource(Kind::User, id, attributes)
    };
    let member = |id: String, kind: &str| serde_json::json!({"value": id, "type": kind});
    let mut wanted = vec![user("dev".into(), "dev@example.com".into())];
    wanted.extend(
        (0..args.users).map(|i| user(format!("user-{i}"), format!("user-{i}@bench.example"))),
    );
    wanted.push(resource(
        Kind::Group,
        "admins".into(),
        serde_json::json!({"displayName": admins, "members": [member("dev".into(), "User")]}),
    ));
    for g in 0..args.groups {
        let mut members: Vec<serde_json::Value> = (g..args.users)
            .step_by(args.groups)
            .map(|i| member(format!("user-{i}"), "User"))
            .collect();
        if g % 10 == 0 && g + 1 < args.groups {
            members.push(member(format!("group-{}", g + 1), "Group"));
        }
        let attributes =
            serde_json::json!({"displayName": format!("bench-group-{g}"), "members": members});
        wanted.push(resource(Kind::Group, format!("group-{g}"), attributes));
    }
    let mut present = std::collections::HashSet::new();
    for kind in [Kind::User, Kind::Group] {
        present.extend(
            store
                .list(kind, None)
                .await?
                .into_iter()
                .map(|r| (r.kind, r.id)),
        );
    }
    let missing: Vec<Resource> = wanted
        .into_iter()
        .filter(|r| !present.contains(&(r.kind, r.id.clone())))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let (count, started) = (missing.len(), Instant::now());
    eprintln!("pushing {count} SCIM resources into the control plane…");
    let mut pushes = futures::stream::iter(missing)
        .map(|r| {
            let store = store.clone();
            async move { store.create(&r).await }
        })
        .buffer_unordered(32);
    while let Some(pushed) = pushes.next().await {
        pushed?;
    }
    let took = started.elapsed();
    eprintln!(
        "pushed {count} SCIM resources in {} ({:.0} a second)",
        ms(took),
        count as f64 / took.as_secs_f64()
    );
    Ok(())
}

/// [`directory_yaml`]'s people and groups as LDIF entries under `suffix`: people in
/// `ou=people`, groups of names in `ou=groups` nesting by `member`.
fn directory_ldif(args: &AccessBenchArgs, admins: &str) -> String {
    let suffix = &args.ldif_suffix;
    let top = suffix
        .split(',')
        .next()
        .and_then(|rdn| rdn.strip_prefix("dc="))
        .unwrap_or("bench");
    let mut text = format!(
        "dn: {suffix}\nobjectClass: dcObject\nobjectClass: organization\ndc: {top}\no: bench\n\n\
         dn: ou=people,{suffix}\nobjectClass: organizationalUnit\nou: people\n\n\
         dn: ou=groups,{suffix}\nobjectClass: organizationalUnit\nou: groups\n\n"
    );
    let person = |uid: &str, mail: &str| {
        format!(
            "dn: uid={uid},ou=people,{suffix}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\n\
             sn: {uid}\nmail: {mail}\n\n"
        )
    };
    text += &person("dev", "dev@example.com");
    for i in 0..args.users {
        text += &person(&format!("user-{i}"), &format!("user-{i}@bench.example"));
    }
    let group = |name: &str, members: Vec<String>| {
        let members: String = members.iter().map(|m| format!("member: {m}\n")).collect();
        format!(
            "dn: cn={name},ou=groups,{suffix}\nobjectClass: groupOfNames\ncn: {name}\n{members}\n"
        )
    };
    text += &group(admins, vec![format!("uid=dev,ou=people,{suffix}")]);
    for g in 0..args.groups {
        let mut members: Vec<String> = (g..args.users)
            .step_by(args.groups)
            .map(|i| format!("uid=user-{i},ou=people,{suffix}"))
            .collect();
        if g % 10 == 0 && g + 1 < args.groups {
            members.push(format!("cn=bench-group-{},ou=groups,{suffix}", g + 1));
        }
        text += &group(&format!("bench-group-{g}"), members);
    }
    text
}

fn directory_yaml(args: &AccessBenchArgs, admins: &str, departed: usize) -> String {
    let mut text = String::from("users:\n  - email: dev@example.com\n");
    for i in 0..args.users {
        text.push_str(&format!("  - email: user-{i}@bench.example\n"));
        if i < departed {
            text.push_str("    status: departed\n");
        }
    }
    text.push_str(&format!(
        "groups:\n  - name: {admins}\n    members: [dev@example.com]\n"
    ));
    for g in 0..args.groups {
        let members: Vec<String> = (g..args.users)
            .step_by(args.groups)
            .map(|i| format!("user-{i}@bench.example"))
            .collect();
        text.push_str(&format!(
            "  - name: bench-group-{g}\n    members: [{}]\n",
            members.join(", ")
        ));
        if g % 10 == 0 && g + 1 < args.groups {
            text.push_str(&format!("    groups: [bench-group-{}]\n", g + 1));
        }
    }
    text
}

/// Runs `work` for every name, `concurrency` at once; returns the wall time, this
/// process's CPU time and the summed summaries.
async fn for_each<F, Fut>(
    names: &[String],
    concurrency: usize,
    counted: impl Fn() -> Option<(u64, u64)>,
    work: F,
) -> anyhow::Result<Cycle>
where
    F: Fn(usize, String) -> Fut,
    Fut: Future<Output = Result<AccessSummary, plinth_control::BackendError>> + Send + 'static,
{
    let ops_before = counted();
    let cpu_before = cpu_time()?;
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    let mut total = AccessSummary::default();
    let mut add = |summary: AccessSummary| {
        total.granted += summary.granted;
        total.changed += summary.changed;
        total.revoked += summary.revoked;
        total.unchanged += summary.unchanged;
        total.backend_writes += summary.backend_writes;
    };
    for (i, name) in names.iter().enumerate() {
        if tasks.len() >= concurrency.max(1)
            && let Some(done) = tasks.join_next().await
        {
            add(done??);
        }
        tasks.spawn(work(i, name.clone()));
    }
    while let Some(done) = tasks.join_next().await {
        add(done??);
    }
    let ops = counted()
        .zip(ops_before)
        .map(|(after, before)| (after.0 - before.0, after.1 - before.1));
    Ok(Cycle {
        wall: started.elapsed(),
        cpu: cpu_time()? - cpu_before,
        total,
        ops,
    })
}
