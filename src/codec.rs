//! `plinth codec` (the codec server) and `plinth keys` (the key ring).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use plinth_activities::{AccessLevel, NamespaceBackend};
use plinth_codec::server::{AccessCheck, CodecServer, Need};
use plinth_codec::tokens::{JwksSource, TokenVerifier};
use plinth_codec::{Codec, KeyRing, KeyState, WatchedKeyRing};
use plinth_identity::Identity;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::home::Home;
use crate::signals::shutdown_signal;
use crate::worker::ConnectArgs;

/// How long an access list read from the backend is trusted.
const ACCESS_TTL: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, clap::Args)]
pub struct CodecArgs {
    /// Address to listen on (overrides [codec] listen).
    #[arg(long)]
    listen: Option<String>,
    /// Dev mode: plain HTTP, and unauthenticated calls from loopback are allowed.
    #[arg(long)]
    dev: bool,
    /// A browser origin allowed to call (repeatable; replaces [codec] allowed_origins).
    #[arg(long = "allow-origin")]
    allow_origins: Vec<String>,
    #[command(flatten)]
    temporal: ConnectArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Create the key ring with one active key (kept if present).
    Init,
    /// Make a new key active; older keys stay, decrypt-only.
    Rotate,
    /// Show every key's id, creation time and state (never the key).
    List,
    /// Add an existing 32-byte key as decrypt-only (e.g. the Temporal samples' key).
    Import {
        /// The key id payloads name in `encryption-key-id`.
        #[arg(long)]
        id: String,
        /// File holding the key: 32 raw bytes, or their base64.
        #[arg(long)]
        from: PathBuf,
    },
}

fn keyring_path(config: &Config, home: &Home) -> PathBuf {
    config
        .codec
        .keyring
        .clone()
        .unwrap_or_else(|| home.keyring())
}

pub fn keys(config: &Config, home: &Home, command: &KeysCommand) -> anyhow::Result<ExitCode> {
    let path = keyring_path(config, home);
    match command {
        KeysCommand::Init => {
            let (ring, created) = KeyRing::init(&path)?;
            let verb = if created { "created" } else { "kept" };
            println!(
                "{verb} key ring {} (active key {})",
                path.display(),
                active(&ring)
            );
        }
        KeysCommand::Rotate => {
            let mut ring = KeyRing::load(&path)?;
            let id = ring.rotate()?;
            println!("active key is now {id}; older keys stay for decryption");
        }
        KeysCommand::List => {
            let ring = KeyRing::load(&path)?;
            println!("{:<32} {:<22} STATE", "ID", "CREATED");
            for key in ring.list() {
                let state = match key.state {
                    KeyState::Active => "active",
                    KeyState::DecryptOnly => "decrypt-only",
                };
                println!("{:<32} {:<22} {state}", key.id, key.created);
            }
        }
        KeysCommand::Import { id, from } => {
            let mut ring = KeyRing::load(&path)?;
            let bytes = std::fs::read(from).with_context(|| from.display().to_string())?;
            ring.import(id, &bytes)
                .with_context(|| format!("--from {}", from.display()))?;
            println!("imported {id} (decrypt-only)");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn active(ring: &KeyRing) -> String {
    use plinth_codec::KekProvider;
    ring.active_kek().unwrap_or_default()
}

/// Serves until SIGINT or SIGTERM.
pub async fn run(config: &Config, home: &Home, args: &CodecArgs) -> anyhow::Result<()> {
    let codec_config = &config.codec;
    let path = keyring_path(config, home);
    if !path.exists() {
        bail!("no key ring at {}: run `plinth keys init`", path.display());
    }
    let ring = Arc::new(WatchedKeyRing::load(&path)?);
    let codec = Arc::new(Codec::new(ring, codec_config.settings()));
    let (options, address, _) = args.temporal.resolve(&config.temporal)?;
    let connection = plinth_worker::connect(options).await?;
    // Only the access lists are read here: no directory, no validation rules.
    let backend = crate::platform::backend(config, &connection, &address)?;
    let tokens = match &codec_config.jwks {
        Some(source) => Some(
            TokenVerifier::new(
                JwksSource::parse(source),
                codec_config.jwt_issuer.clone(),
                codec_config.jwt_audience.clone(),
            )
            .await
            .context("[codec] jwks")?,
        ),
        None => None,
    };
    if args.dev {
        tracing::warn!(
            "DEV MODE: plain HTTP, and anyone on this machine may encode and decode without \
             credentials. Never run --dev on a shared or production host."
        );
    }
    let server = Arc::new(CodecServer {
        codec,
        access: Arc::new(AccessLists::new(backend)),
        tokens,
        allowed_origins: if args.allow_origins.is_empty() {
            codec_config.allowed_origins.clone()
        } else {
            args.allow_origins.clone()
        },
        max_body_bytes: codec_config.max_body_bytes,
        dev_mode: args.dev,
    });
    let tls = if codec_config.tls && !args.dev {
        Some(crate::proxy::server_tls(config, home, false, b"http/1.1")?)
    } else {
        None
    };
    let listen = args
        .listen
        .clone()
        .unwrap_or_else(|| codec_config.listen.clone());
    let listener = TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(address = %listen, scheme, "codec server listening");
    plinth_codec::server::serve(listener, tls, server, shutdown_signal()).await?;
    tracing::info!("codec server stopped");
    Ok(())
}

/// Identity (`user:<email>`) to access level.
type AccessList = BTreeMap<String, AccessLevel>;

/// The effective access lists the access runs keep on the backend, read at most every
/// [`ACCESS_TTL`] per namespace.
#[derive(Debug)]
struct AccessLists {
    backend: Arc<dyn NamespaceBackend>,
    /// Per namespace: when it was read, and the list.
    cache: Mutex<HashMap<String, (Instant, Arc<AccessList>)>>,
}

impl AccessLists {
    fn new(backend: Arc<dyn NamespaceBackend>) -> Self {
        Self {
            backend,
            cache: Mutex::default(),
        }
    }
}

#[async_trait::async_trait]
impl AccessCheck for AccessLists {
    async fn allows(
        &self,
        namespace: &str,
        identity: &Identity,
        need: Need,
    ) -> Result<bool, String> {
        let cached = self
            .cache
            .lock()
            .expect("access cache lock")
            .get(namespace)
            .filter(|(read, _)| read.elapsed() < ACCESS_TTL)
            .map(|(_, list)| list.clone());
        let list = match cached {
            Some(list) => list,
            None => {
                let list = match self.backend.list_access(namespace).await {
                    Ok(list) => Arc::new(list),
                    // An unknown namespace grants nothing.
                    Err(plinth_activities::BackendError::Rejected(_)) => Arc::default(),
                    Err(e) => return Err(e.to_string()),
                };
                self.cache
                    .lock()
                    .expect("access cache lock")
                    .insert(namespace.to_owned(), (Instant::now(), list.clone()));
                list
            }
        };
        let held = list.get(&identity.to_string()).copied();
        Ok(match need {
            Need::Read => held.is_some(),
            Need::Write => held.is_some_and(|level| level >= AccessLevel::Write),
        })
    }
}
