//! `plinth apply`, `get`, `describe`, `delete`: kubectl-style commands over the platform API.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use plinth_identity::Identity;
use plinth_proto::v1::platform_service_client::PlatformServiceClient;
use plinth_proto::v1::{
    ApplyMetricsTargetRequest, ApplyNamespaceRequest, DeleteMetricsTargetRequest,
    DeleteNamespaceRequest, GetAccessRequest, GetMetricsTargetRequest, GetNamespaceRequest,
    GetPolicyRequest, ListMetricsTargetsRequest, ListNamespacesRequest, ListPoliciesRequest,
    MetricsTarget, NamespaceSummary, Policy, PolicyRuleRequest, ReloadDirectoryRequest, Rule,
    WatchNamespaceRequest,
};
use plinth_proto::{Resource, parse_documents, phase};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

use crate::config::Config;
use crate::home::Home;

pub(crate) type Api = PlatformServiceClient<Channel>;

/// What `get` shows.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Kind {
    #[value(alias = "namespaces", alias = "ns")]
    Namespace,
    /// Access policies.
    #[value(alias = "policies")]
    Policy,
    /// The effective access list of a Temporal namespace.
    Access,
    /// Endpoints whose metrics Plinth scrapes.
    #[value(alias = "metricstargets", alias = "mt")]
    Metricstarget,
}

#[derive(Debug, Clone, Copy, Default, clap::ValueEnum)]
pub enum Output {
    #[default]
    Table,
    Yaml,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// A file, a directory of .yaml/.yml/.json files, or - for standard input.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
    /// Validate and authorize, change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Wait until every resource is Ready (or Failed), showing its phases.
    #[arg(long)]
    wait: bool,
}

#[derive(Debug, clap::Args)]
pub struct GetArgs {
    kind: Kind,
    /// One resource; all when omitted.
    name: Option<String>,
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: Output,
}

/// Resources that `describe` and `delete` act on.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ResourceKind {
    #[value(alias = "ns")]
    Namespace,
    #[value(alias = "mt")]
    Metricstarget,
}

#[derive(Debug, clap::Args)]
pub struct NameArgs {
    kind: ResourceKind,
    name: String,
}

#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    kind: ResourceKind,
    name: String,
    /// Wait until the namespace is gone.
    #[arg(long)]
    wait: bool,
}

/// The caller's client certificate, key and the CA its servers are checked against:
/// `[client]`, else the `[dev]` user's in `$PLINTH_HOME`.
pub struct ClientCredentials {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
    pub ca: Vec<u8>,
}

impl ClientCredentials {
    pub fn load(config: &Config, home: &Home) -> anyhow::Result<Self> {
        let client = &config.client;
        let user_dir = Identity::user(&config.dev.user)
            .map(|user| home.client_dir(&user))
            .context("[dev] user")?;
        let cert = client
            .cert
            .clone()
            .unwrap_or_else(|| user_dir.join("cert.pem"));
        let key = client
            .key
            .clone()
            .unwrap_or_else(|| user_dir.join("key.pem"));
        let ca = client.ca.clone().unwrap_or_else(|| home.ca_cert());
        let read = |path: &Path, what: &str| {
            std::fs::read(path).with_context(|| {
                format!(
                    "{what} {}: run `plinth dev` or set [client] in plinth.toml",
                    path.display()
                )
            })
        };
        Ok(Self {
            cert: read(&cert, "client certificate")?,
            key: read(&key, "client key")?,
            ca: read(&ca, "CA")?,
        })
    }
}

/// A channel to the proxy, with the client certificate.
async fn channel(config: &Config, home: &Home) -> anyhow::Result<Channel> {
    let (address, server_name) = proxy_endpoint(config, home);
    let credentials = ClientCredentials::load(config, home)?;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(credentials.ca))
        .identity(tonic::transport::Identity::from_pem(
            credentials.cert,
            credentials.key,
        ))
        .domain_name(server_name);
    Channel::from_shared(format!("https://{address}"))?
        .tls_config(tls)?
        .connect()
        .await
        .with_context(|| format!("cannot reach the platform API at {address}"))
}

/// Connects to the platform API with the client certificate.
pub async fn connect(config: &Config, home: &Home) -> anyhow::Result<Api> {
    Ok(PlatformServiceClient::new(channel(config, home).await?))
}

/// The proxy address a running `plinth dev` wrote to `dev.json`.
/// The proxy's address (`[client]`, else the running `plinth dev`'s, else `[proxy] listen`) and
/// the name its certificate is checked against.
pub fn proxy_endpoint(config: &Config, home: &Home) -> (String, String) {
    let address = match &config.client.address {
        Some(address) => address.clone(),
        None => dev_proxy_address(home).unwrap_or_else(|| config.proxy.listen.clone()),
    };
    let host = address
        .rsplit_once(':')
        .map_or(address.as_str(), |(h, _)| h);
    let server_name = config
        .client
        .server_name
        .clone()
        .unwrap_or_else(|| host.to_owned());
    (address, server_name)
}

fn dev_proxy_address(home: &Home) -> Option<String> {
    home.running_dev()?["proxy"]["address"]
        .as_str()
        .map(str::to_owned)
}

pub fn status_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", status.message())
}

/// Reads every document first: one bad document stops the whole apply.
fn read_documents(files: &[PathBuf]) -> anyhow::Result<Vec<(String, usize, Resource)>> {
    let mut sources = Vec::new();
    for file in files {
        if file.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text)?;
            sources.push(("-".to_owned(), text));
        } else if file.is_dir() {
            let mut paths: Vec<PathBuf> = std::fs::read_dir(file)
                .with_context(|| file.display().to_string())?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| {
                    matches!(
                        p.extension().and_then(|e| e.to_str()),
                        Some("yaml" | "yml" | "json")
                    )
                })
                .collect();
            paths.sort();
            for path in paths {
                let text =
                    std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
                sources.push((path.display().to_string(), text));
            }
        } else {
            let text = std::fs::read_to_string(file).with_context(|| file.display().to_string())?;
            sources.push((file.display().to_string(), text));
        }
    }
    let mut documents = Vec::new();
    for (source, text) in sources {
        let parsed = parse_documents(&text, &source)?;
        documents.extend(
            parsed
                .into_iter()
                .enumerate()
                .map(|(i, doc)| (source.clone(), i + 1, doc)),
        );
    }
    if documents.is_empty() {
        bail!(
            "no resources found in {}",
            files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(documents)
}

pub async fn apply(config: &Config, home: &Home, args: &ApplyArgs) -> anyhow::Result<ExitCode> {
    let documents = read_documents(&args.files)?;
    let mut api = connect(config, home).await?;
    // Every document passes the server's validation and authorization before any is applied.
    let mut outcomes = Vec::new();
    for (source, index, resource) in &documents {
        outcomes.push(apply_one(&mut api, source, *index, resource, true).await?);
    }
    if args.dry_run {
        for ((_, _, resource), outcome) in documents.iter().zip(outcomes) {
            println!("{} {outcome} (dry run)", resource.reference());
        }
        return Ok(ExitCode::SUCCESS);
    }
    for (source, index, resource) in &documents {
        let outcome = apply_one(&mut api, source, *index, resource, false).await?;
        println!("{} {outcome}", resource.reference());
    }
    if !args.wait {
        return Ok(ExitCode::SUCCESS);
    }
    let mut all_ready = true;
    // A metrics target is scraping once applied; namespaces take provisioning.
    for (_, _, resource) in &documents {
        let Resource::Namespace(resource) = resource else {
            continue;
        };
        let last = watch(&mut api, resource.name()).await?;
        all_ready &= last == phase::READY;
    }
    Ok(if all_ready {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Applies one document; errors name the file and document.
async fn apply_one(
    api: &mut Api,
    source: &str,
    index: usize,
    resource: &Resource,
    dry_run: bool,
) -> anyhow::Result<String> {
    let in_document = |status: tonic::Status| {
        anyhow::anyhow!(
            "{source}: document {index} ({}): {}",
            resource.name(),
            status.message()
        )
    };
    let outcome = match resource {
        Resource::Namespace(namespace) => {
            let request = ApplyNamespaceRequest {
                namespace: Some(namespace.clone()),
                dry_run,
            };
            let response = api.apply_namespace(request).await.map_err(in_document)?;
            response.into_inner().outcome
        }
        Resource::MetricsTarget(target) => {
            let request = ApplyMetricsTargetRequest {
                target: Some(target.clone()),
                dry_run,
            };
            let response = api
                .apply_metrics_target(request)
                .await
                .map_err(in_document)?;
            response.into_inner().outcome
        }
    };
    Ok(outcome)
}

/// Prints each phase until the resource settles; returns the last phase.
async fn watch(api: &mut Api, name: &str) -> anyhow::Result<String> {
    let mut stream = api
        .watch_namespace(WatchNamespaceRequest {
            name: name.to_owned(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let mut last_phase = String::new();
    while let Some(resource) = stream.message().await.map_err(status_error)? {
        let status = resource.status.unwrap_or_default();
        if status.phase != last_phase {
            match status.message.as_str() {
                "" => println!("namespace/{name} {}", status.phase),
                message => println!("namespace/{name} {}: {message}", status.phase),
            }
            last_phase = status.phase;
        }
    }
    Ok(last_phase)
}

pub async fn get(config: &Config, home: &Home, args: &GetArgs) -> anyhow::Result<ExitCode> {
    let mut api = connect(config, home).await?;
    let name = args.name.clone();
    match (args.kind, name) {
        (Kind::Namespace, Some(name)) => {
            let resource = api
                .get_namespace(GetNamespaceRequest { name })
                .await
                .map_err(status_error)?
                .into_inner();
            show(args.output, &resource, || {
                namespace_rows(&[resource.summary()])
            })?;
        }
        (Kind::Namespace, None) => {
            let list = api
                .list_namespaces(ListNamespacesRequest {})
                .await
                .map_err(status_error)?
                .into_inner()
                .namespaces;
            show(args.output, &list, || namespace_rows(&list))?;
        }
        (Kind::Policy, Some(name)) => {
            let policy = api
                .get_policy(GetPolicyRequest { name })
                .await
                .map_err(status_error)?
                .into_inner();
            show(args.output, &policy, || {
                policy_rows(std::slice::from_ref(&policy))
            })?;
        }
        (Kind::Policy, None) => {
            let policies = api
                .list_policies(ListPoliciesRequest {})
                .await
                .map_err(status_error)?
                .into_inner()
                .policies;
            show(args.output, &policies, || policy_rows(&policies))?;
        }
        (Kind::Access, Some(namespace)) => {
            let access = api
                .get_access(GetAccessRequest { namespace })
                .await
                .map_err(status_error)?
                .into_inner();
            show(args.output, &access, || {
                let rows = access
                    .grants
                    .iter()
                    .map(|g| vec![g.identity.clone(), g.access.clone(), g.expires.clone()])
                    .collect();
                print_rows(&["IDENTITY", "ACCESS", "EXPIRES"], rows);
                match &access.last_run {
                    Some(run) => println!(
                        "last run {} ({}): {} granted, {} changed, {} revoked, {} unchanged, \
                         {} backend writes",
                        run.time,
                        run.workflow_id,
                        run.granted,
                        run.changed,
                        run.revoked,
                        run.unchanged,
                        run.backend_writes
                    ),
                    None => println!("no access run yet"),
                }
            })?;
        }
        (Kind::Access, None) => bail!("get access needs a Temporal namespace name"),
        (Kind::Metricstarget, Some(name)) => {
            let target = api
                .get_metrics_target(GetMetricsTargetRequest { name })
                .await
                .map_err(status_error)?
                .into_inner();
            show(args.output, &target, || {
                target_rows(std::slice::from_ref(&target))
            })?;
        }
        (Kind::Metricstarget, None) => {
            let targets = api
                .list_metrics_targets(ListMetricsTargetsRequest {})
                .await
                .map_err(status_error)?
                .into_inner()
                .targets;
            show(args.output, &targets, || target_rows(&targets))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints `value` as JSON or YAML, or calls `table`.
pub fn show<T: serde::Serialize>(
    output: Output,
    value: &T,
    table: impl FnOnce(),
) -> anyhow::Result<()> {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Output::Yaml => println!("{}", serde_yaml::to_string(value)?.trim_end()),
        Output::Table => table(),
    }
    Ok(())
}

fn namespace_rows(summaries: &[NamespaceSummary]) {
    let rows = summaries
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.temporal_name.clone(),
                s.owner.clone(),
                s.phase.clone(),
                format!("{}d", s.retention_days),
            ]
        })
        .collect();
    print_rows(
        &["NAME", "TEMPORAL NAMESPACE", "OWNER", "PHASE", "RETENTION"],
        rows,
    );
}

fn target_rows(targets: &[MetricsTarget]) {
    let rows = targets
        .iter()
        .map(|target| {
            let spec = target.spec_or_default();
            let status = target.status.clone().unwrap_or_default();
            vec![
                target.name().to_owned(),
                spec.url.clone(),
                if spec.temporal_cloud { "yes" } else { "no" }.to_owned(),
                format!("{}s", spec.interval_secs()),
                status.phase,
                status.message,
            ]
        })
        .collect();
    print_rows(
        &["NAME", "URL", "CLOUD", "INTERVAL", "PHASE", "LAST ERROR"],
        rows,
    );
}

fn policy_rows(policies: &[Policy]) {
    let rows = policies
        .iter()
        .map(|p| {
            let rules: Vec<String> = p.rules.iter().map(ToString::to_string).collect();
            vec![
                p.name.clone(),
                p.namespace.clone(),
                p.access.clone(),
                p.owner.clone(),
                p.editors.join(","),
                rules.join(","),
            ]
        })
        .collect();
    print_rows(
        &["NAME", "NAMESPACE", "ACCESS", "OWNER", "EDITORS", "RULES"],
        rows,
    );
}

pub fn print_rows(header: &[&str], rows: Vec<Vec<String>>) {
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    let mut widths: Vec<usize> = header.iter().map(String::len).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", cells.join("   ").trim_end());
    }
}

/// Which rule, from `--user`, `--group` or `--app`.
#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("target").required(true))]
pub struct RuleArgs {
    /// The policy, e.g. TEMPORAL-ns-payments.
    policy: String,
    /// A person, by e-mail.
    #[arg(long, group = "target")]
    user: Option<String>,
    /// A directory group; its nested groups count too.
    #[arg(long, group = "target")]
    group: Option<String>,
    /// A workload, by app name.
    #[arg(long, group = "target")]
    app: Option<String>,
}

impl RuleArgs {
    fn request(&self) -> PolicyRuleRequest {
        PolicyRuleRequest {
            policy: self.policy.clone(),
            rule: Some(Rule {
                user: self.user.clone().unwrap_or_default(),
                group: self.group.clone().unwrap_or_default(),
                app: self.app.clone().unwrap_or_default(),
            }),
        }
    }
}

/// `plinth policy add-rule` and `remove-rule`.
pub async fn change_rule(
    config: &Config,
    home: &Home,
    args: &RuleArgs,
    add: bool,
) -> anyhow::Result<ExitCode> {
    let mut api = connect(config, home).await?;
    let request = args.request();
    let rule = request.rule.clone().unwrap_or_default();
    let policy = if add {
        api.add_policy_rule(request).await
    } else {
        api.remove_policy_rule(request).await
    }
    .map_err(status_error)?
    .into_inner();
    let verb = if add { "added to" } else { "removed from" };
    println!("rule {rule} {verb} policy/{}", policy.name);
    Ok(ExitCode::SUCCESS)
}

/// `plinth directory reload`.
pub async fn reload_directory(
    config: &Config,
    home: &Home,
    force: bool,
) -> anyhow::Result<ExitCode> {
    let mut api = connect(config, home).await?;
    api.reload_directory(ReloadDirectoryRequest { force })
        .await
        .map_err(status_error)?;
    println!("directory reloaded; each worker reads it again, then runs every namespace's access");
    Ok(ExitCode::SUCCESS)
}

pub async fn describe(config: &Config, home: &Home, args: &NameArgs) -> anyhow::Result<ExitCode> {
    let mut api = connect(config, home).await?;
    match args.kind {
        ResourceKind::Namespace => describe_namespace(&mut api, &args.name).await?,
        ResourceKind::Metricstarget => describe_target(&mut api, &args.name).await?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn describe_target(api: &mut Api, name: &str) -> anyhow::Result<()> {
    let target = api
        .get_metrics_target(GetMetricsTargetRequest {
            name: name.to_owned(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let metadata = target.metadata.clone().unwrap_or_default();
    let spec = target.spec_or_default();
    let status = target.status.clone().unwrap_or_default();
    let token = match (spec.token_file.as_str(), spec.token_env.as_str()) {
        ("", "") => "none".to_owned(),
        (file, "") => format!("file {file} (on the worker)"),
        (_, var) => format!("variable {var} (of the worker)"),
    };
    println!("Name:                {}", metadata.name);
    println!("Generation:          {}", metadata.generation);
    println!("Spec:");
    println!("  URL:                {}", spec.url);
    println!("  Temporal Cloud:     {}", spec.temporal_cloud);
    println!("  Token:              {token}");
    println!("  Interval:           {}s", spec.interval_secs());
    println!("Status:");
    println!("  Phase:               {}", status.phase);
    println!("  Observed generation: {}", status.observed_generation);
    if !status.message.is_empty() {
        println!("  Last error:          {}", status.message);
    }
    Ok(())
}

async fn describe_namespace(api: &mut Api, name: &str) -> anyhow::Result<()> {
    let resource = api
        .get_namespace(GetNamespaceRequest {
            name: name.to_owned(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let metadata = resource.metadata.clone().unwrap_or_default();
    let spec = resource.spec.clone().unwrap_or_default();
    let status = resource.status.clone().unwrap_or_default();
    println!("Name:                {}", metadata.name);
    println!("Group:               {}", metadata.namespace);
    println!("Generation:          {}", metadata.generation);
    println!("Spec:");
    println!("  Temporal namespace: {}", spec.name);
    println!("  Owner:              {}", spec.owner);
    println!("  Regions:            {}", spec.regions.join(", "));
    println!("  Retention:          {} days", spec.retention_days);
    println!("  Description:        {}", spec.description);
    println!("  Allow deletion:     {}", spec.allow_deletion);
    println!("  Shred on delete:    {}", spec.shred_on_delete);
    let mut attributes: Vec<_> = spec.search_attributes.iter().collect();
    attributes.sort();
    for (name, kind) in attributes {
        println!("  Search attribute:   {name} ({kind})");
    }
    println!("Status:");
    println!("  Phase:               {}", status.phase);
    println!("  Observed generation: {}", status.observed_generation);
    println!("  Endpoint:            {}", status.endpoint);
    println!("  Last reconcile:      {}", status.last_reconcile_time);
    println!("  Drift repairs:       {}", status.drift_repairs);
    if !status.message.is_empty() {
        println!("  Message:             {}", status.message);
    }
    println!("Conditions:");
    for c in &status.conditions {
        println!(
            "  {}={} ({}) {} since {}",
            c.r#type, c.status, c.reason, c.message, c.last_transition_time
        );
    }
    println!("Events:");
    for e in &status.events {
        println!("  {}  {:<14} {}", e.time, e.reason, e.message);
    }
    Ok(())
}

pub async fn delete(config: &Config, home: &Home, args: &DeleteArgs) -> anyhow::Result<ExitCode> {
    let mut api = connect(config, home).await?;
    let name = args.name.clone();
    match args.kind {
        ResourceKind::Metricstarget => {
            api.delete_metrics_target(DeleteMetricsTargetRequest { name })
                .await
                .map_err(status_error)?;
            // Scraping stops within a heartbeat of the run in progress.
            println!("metricstarget/{} deleted", args.name);
        }
        ResourceKind::Namespace => {
            api.delete_namespace(DeleteNamespaceRequest { name })
                .await
                .map_err(status_error)?;
            println!("namespace/{} deleting", args.name);
            if args.wait {
                let last = watch(&mut api, &args.name).await?;
                if last != phase::DELETED {
                    bail!("namespace/{} ended {last}, not deleted", args.name);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `plinth audit`: which records of the audit trail.
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// Records since this long ago (e.g. 2h, 7d), or since an RFC 3339 time.
    #[arg(long, default_value = "24h")]
    since: String,
    /// Records before this RFC 3339 time (default: now).
    #[arg(long)]
    until: Option<String>,
    /// Only this actor, e.g. user:alice@example.com (a trailing * matches a prefix).
    #[arg(long)]
    actor: Option<String>,
    /// Only records of this Temporal namespace.
    #[arg(long)]
    namespace: Option<String>,
    /// Only this resource, e.g. policy/TEMPORAL-ns-payments or namespace/* .
    #[arg(long)]
    resource: Option<String>,
    /// Only this action, e.g. policy.rule_added or namespace.* .
    #[arg(long)]
    action: Option<String>,
    /// At most this many records.
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// table, or json: one record per line, as shipped.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: Output,
}

/// `--since`: a duration ago (`2h`, `7d`) or an RFC 3339 time, as RFC 3339.
pub fn since(text: &str) -> anyhow::Result<String> {
    match humantime::parse_duration(text) {
        Ok(ago) => {
            let from = std::time::SystemTime::now()
                .checked_sub(ago)
                .filter(|from| *from > std::time::SystemTime::UNIX_EPOCH)
                .context("--since: reaches before 1970, where Plinth's archive starts")?;
            Ok(humantime::format_rfc3339_seconds(from).to_string())
        }
        Err(_) => Ok(text.to_owned()),
    }
}

/// `plinth audit`.
pub async fn audit(config: &Config, home: &Home, args: &AuditArgs) -> anyhow::Result<ExitCode> {
    let from = since(&args.since)?;
    let request = plinth_proto::v1::QueryAuditRequest {
        from,
        to: args.until.clone().unwrap_or_default(),
        actor: args.actor.clone().unwrap_or_default(),
        namespace: args.namespace.clone().unwrap_or_default(),
        resource: args.resource.clone().unwrap_or_default(),
        action: args.action.clone().unwrap_or_default(),
        limit: args.limit,
    };
    let mut api = connect(config, home).await?;
    let answer = api
        .query_audit(request)
        .await
        .map_err(status_error)?
        .into_inner();
    let mut records = Vec::new();
    for line in &answer.records {
        records.push(serde_json::from_str::<plinth_proto::audit::AuditRecord>(
            line,
        )?);
    }
    match args.output {
        Output::Json => {
            for line in &answer.records {
                println!("{line}");
            }
        }
        Output::Yaml => println!("{}", serde_yaml::to_string(&records)?.trim_end()),
        Output::Table => {
            let rows = records
                .iter()
                .map(|r| {
                    let changes: Vec<&str> = r.changes.iter().map(|c| c.path.as_str()).collect();
                    vec![
                        r.time.clone(),
                        r.actor.clone(),
                        r.action.clone(),
                        r.resource.clone(),
                        r.outcome.clone(),
                        if r.detail.is_empty() {
                            changes.join(", ")
                        } else {
                            r.detail.clone()
                        },
                    ]
                })
                .collect();
            print_rows(
                &["TIME", "ACTOR", "ACTION", "RESOURCE", "OUTCOME", "DETAIL"],
                rows,
            );
        }
    }
    if answer.truncated {
        eprintln!("more records match: narrow the range or the filters, or raise --limit");
    }
    if !answer.destination.is_empty() {
        eprintln!("read from {}", answer.destination);
    }
    Ok(ExitCode::SUCCESS)
}
