//! `plinth`: one binary for the whole platform.

mod access;
mod bench;
mod client;
mod codec;
mod config;
mod connect;
mod dev;
mod fault;
mod history;
mod home;
mod logging;
mod metrics;
mod pki;
mod platform;
mod profile;
mod proxy;
mod scim;
mod signals;
mod trail;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::{Config, LogFormat};
use crate::home::Home;

#[derive(Debug, Parser)]
#[command(
    name = "plinth",
    version,
    about = "A self-service platform around Temporal"
)]
struct Cli {
    /// Data directory: dev database, certificates, logs.
    #[arg(long, global = true, env = "PLINTH_HOME", default_value = ".plinth")]
    home: PathBuf,
    /// Configuration file (default: $PLINTH_HOME/plinth.toml when it exists).
    #[arg(long, global = true, env = "PLINTH_CONFIG")]
    config: Option<PathBuf>,
    /// Log format (overrides [log] format).
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start Temporal's dev server and the Plinth worker, and supervise them until Ctrl-C.
    Dev(dev::DevArgs),
    /// Run the control-plane worker against any Temporal.
    Worker(worker::WorkerArgs),
    /// Serve the platform API over mTLS.
    Proxy(proxy::ProxyArgs),
    /// Serve the codec endpoint the Web UI and CLI decrypt payloads through.
    Codec(codec::CodecArgs),
    /// The key ring of key encryption keys.
    #[command(subcommand)]
    Keys(codec::KeysCommand),
    /// Create or update resources from YAML or JSON files.
    Apply(client::ApplyArgs),
    /// List resources, or show one.
    Get(client::GetArgs),
    /// Show a resource with its status, conditions and recent events.
    Describe(client::NameArgs),
    /// Delete a resource (platform admins only).
    Delete(client::DeleteArgs),
    /// Edit access policies (their editors and platform admins).
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// The people and groups access is resolved through.
    #[command(subcommand)]
    Directory(DirectoryCommand),
    /// Temporary access on request: ask, approve or deny, revoke.
    #[command(subcommand)]
    Access(access::AccessCommand),
    /// Local certificate authority and client certificates.
    #[command(subcommand)]
    Pki(PkiCommand),
    /// Write a temporal.toml profile (proxy address, namespace, certificate) that every
    /// Temporal SDK and the CLI read unchanged.
    Profile(profile::ProfileArgs),
    /// Who changed what: the audit trail as shipped (admins read all of it, others the
    /// records of namespaces they may read).
    Audit(client::AuditArgs),
    /// Closed workflows' histories: what the export holds, and one history decrypted.
    #[command(subcommand)]
    History(history::HistoryCommand),
    /// Benchmarks against the running `plinth dev`, printed as a table.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Add a rule; the namespace's access is recomputed at once.
    AddRule(client::RuleArgs),
    /// Remove a rule; the namespace's access is recomputed at once.
    RemoveRule(client::RuleArgs),
}

#[derive(Debug, Subcommand)]
enum DirectoryCommand {
    /// Re-read the directory now, everywhere, and recompute every namespace's access (admins
    /// only).
    Reload {
        /// Take a read that lists far fewer people or group memberships than the directory
        /// in force ([directory] min_share), after a real departure of many.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Apply-to-Ready of N concurrent namespaces next to N bare RegisterNamespace calls.
    Namespaces(bench::BenchArgs),
    /// One full access cycle over many namespaces, one with no change, and one with a few.
    Access(bench::AccessBenchArgs),
    /// AES-256-GCM next to `openssl speed`, and /decode of the dev codec server.
    Codec(bench::CodecBenchArgs),
    /// Temporal directly, through nginx (TLS only) and through plinth proxy: latency,
    /// throughput, CPU per RPC, and memory holding long polls.
    Proxy(bench::ProxyBenchArgs),
    /// Scrape, parse, relabel and remote write of a 30,000-sample Temporal Cloud body, next to
    /// Prometheus scraping the same body (needs Debian's `prometheus`; no plinth dev).
    Metrics(bench::MetricsBenchArgs),
    /// Audit records shipped per second next to writing them straight to storage, and the
    /// cost of exporting closed workflows' histories next to only reading them.
    Archive(bench::ArchiveBenchArgs),
}

#[derive(Debug, Subcommand)]
enum PkiCommand {
    /// Create the CA and the server certificate in $PLINTH_HOME/pki (kept if present).
    Init,
    /// Issue a short-lived client certificate carrying one SPIFFE ID.
    Issue(IssueArgs),
}

#[derive(Debug, clap::Args)]
struct IssueArgs {
    #[command(flatten)]
    who: pki::Who,
    /// Lifetime, e.g. 12h or 30m (default: [pki] client_cert_ttl).
    #[arg(long, value_parser = humantime::parse_duration)]
    ttl: Option<Duration>,
    /// Directory for cert.pem, key.pem and ca.pem (default: $PLINTH_HOME/pki/clients/<who>).
    #[arg(long)]
    out: Option<PathBuf>,
}

fn main() -> ExitCode {
    // Plinth's one TLS crypto: clients that take the process default (object storage's) use it.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let home = Home::new(cli.home.clone());
    let (config_file, required) = match &cli.config {
        Some(path) => (path.clone(), true),
        None => (home.config_file(), false),
    };
    let mut config = match Config::load(Some(&config_file), required) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("plinth: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(format) = cli.log_format {
        config.log.format = format;
    }
    logging::init(&config.log);
    // What `plinth dev` passes on to the children it starts.
    let mut global: Vec<std::ffi::OsString> = vec!["--home".into(), cli.home.clone().into()];
    if let Some(path) = &cli.config {
        global.extend(["--config".into(), path.clone().into()]);
    }
    global.extend(["--log-format".into(), config.log.format.as_str().into()]);
    let mut runtime = match cli.command {
        // One thread: every wakeup stays on it, with no cross-thread hand-off.
        Command::Proxy(_) if config.proxy.threads <= 1 => {
            tokio::runtime::Builder::new_current_thread()
        }
        Command::Proxy(_) => {
            let mut runtime = tokio::runtime::Builder::new_multi_thread();
            runtime.worker_threads(config.proxy.threads);
            runtime
        }
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = runtime.enable_all().build().expect("tokio runtime");
    match runtime.block_on(run(cli.command, config, home, global)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("plinth: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    command: Command,
    config: Config,
    home: Home,
    global: Vec<std::ffi::OsString>,
) -> anyhow::Result<ExitCode> {
    match command {
        Command::Dev(args) => dev::run(config, home, &args, &global).await,
        Command::Worker(args) => {
            worker::run(&config, &home, &args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Proxy(args) => {
            proxy::run(&config, &home, &args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Codec(args) => {
            codec::run(&config, &home, &args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys(command) => {
            let code = codec::keys(&config, &home, &command)?;
            if let Some(record) = codec::key_change(&command) {
                trail::record_change(&config, &home, record).await?;
            }
            Ok(code)
        }
        Command::Apply(args) => client::apply(&config, &home, &args).await,
        Command::Get(args) => client::get(&config, &home, &args).await,
        Command::Audit(args) => client::audit(&config, &home, &args).await,
        Command::History(command) => history::run(&config, &home, &command).await,
        Command::Describe(args) => client::describe(&config, &home, &args).await,
        Command::Delete(args) => client::delete(&config, &home, &args).await,
        Command::Policy(PolicyCommand::AddRule(args)) => {
            client::change_rule(&config, &home, &args, true).await
        }
        Command::Policy(PolicyCommand::RemoveRule(args)) => {
            client::change_rule(&config, &home, &args, false).await
        }
        Command::Directory(DirectoryCommand::Reload { force }) => {
            client::reload_directory(&config, &home, force).await
        }
        Command::Access(command) => access::run(&config, &home, &command).await,
        Command::Bench(BenchCommand::Namespaces(args)) => {
            bench::namespaces(&config, &home, &args).await
        }
        Command::Bench(BenchCommand::Access(args)) => bench::access(&config, &home, &args).await,
        Command::Bench(BenchCommand::Archive(args)) => bench::archive(&config, &home, &args).await,
        Command::Bench(BenchCommand::Codec(args)) => bench::codec(&config, &home, &args).await,
        Command::Bench(BenchCommand::Proxy(args)) => bench::proxy(&home, &args).await,
        Command::Bench(BenchCommand::Metrics(args)) => bench::metrics(&args).await,
        Command::Profile(args) => profile::write(&config, &home, &args),
        Command::Pki(PkiCommand::Init) => {
            let report = pki::init(&home, &config.pki)?;
            let dir = home.pki_dir();
            match report.ca_created {
                true => println!("created CA {}", dir.join("ca.pem").display()),
                false => println!("kept CA {}", dir.join("ca.pem").display()),
            }
            if report.server_issued {
                println!("issued server certificate {}", home.server_cert().display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Pki(PkiCommand::Issue(args)) => {
            let identity = args.who.identity(None)?;
            let ttl = args.ttl.unwrap_or(config.pki.client_cert_ttl);
            let out = args.out.unwrap_or_else(|| home.client_dir(&identity));
            let (files, issued) = pki::issue(&home, &config.pki, &identity, ttl, &out)?;
            let trust_domain = pki::trust_domain(&config.pki)?;
            println!("identity  {}", identity.spiffe_id(&trust_domain));
            println!("cert      {}", files.cert.display());
            println!("key       {}", files.key.display());
            println!("ca        {}", files.ca.display());
            println!(
                "expires   {}",
                humantime::format_rfc3339_seconds(issued.not_after)
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
