//! `plinth codec` (the codec server) and `plinth keys` (the key ring).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use plinth_codec::server::CodecServer;
use plinth_codec::tokens::{JwksSource, TokenPolicy, TokenVerifier};
use plinth_codec::{Codec, KeyPurpose, KeyRing, KeyState, WatchedKeyRing};

use crate::config::Config;
use crate::connect::ConnectArgs;
use crate::home::Home;
use crate::signals::shutdown_signal;

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
        /// A namespace whose payloads in the Temporal samples' format the key opens (repeat
        /// for more); it opens nothing else.
        #[arg(long = "namespace", required = true)]
        namespaces: Vec<String>,
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
            let mut ring = KeyRing::load_for_change(&path)?;
            let id = ring.rotate()?;
            println!("active key is now {id}; older keys stay for decryption");
        }
        KeysCommand::List => {
            let ring = KeyRing::load(&path)?;
            println!("{:<32} {:<22} STATE", "ID", "CREATED");
            for key in ring.list() {
                let state = match (key.state, &key.purpose) {
                    (KeyState::Active, _) => "active".to_owned(),
                    (KeyState::DecryptOnly, KeyPurpose::Kek) => "decrypt-only".to_owned(),
                    (KeyState::DecryptOnly, KeyPurpose::Samples { namespaces }) => {
                        format!(
                            "decrypt-only, samples format, for {}",
                            namespaces.join(", ")
                        )
                    }
                };
                println!("{:<32} {:<22} {state}", key.id, key.created);
            }
        }
        KeysCommand::Import {
            id,
            from,
            namespaces,
        } => {
            let mut ring = KeyRing::load_for_change(&path)?;
            let bytes = std::fs::read(from).with_context(|| from.display().to_string())?;
            let purpose = KeyPurpose::Samples {
                namespaces: namespaces.clone(),
            };
            ring.import(id, &bytes, purpose)
                .with_context(|| format!("--from {}", from.display()))?;
            println!(
                "imported {id} (decrypt-only, samples format, for {})",
                namespaces.join(", ")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn active(ring: &KeyRing) -> String {
    use plinth_codec::KekProvider;
    ring.active_kek().unwrap_or_default()
}

/// The codec of `[codec]`, over the key ring it names, watched for rotations.
pub fn load(config: &Config, home: &Home) -> anyhow::Result<Arc<Codec>> {
    let path = keyring_path(config, home);
    if !path.exists() {
        bail!("no key ring at {}: run `plinth keys init`", path.display());
    }
    let ring = Arc::new(WatchedKeyRing::load(&path)?);
    Ok(Arc::new(Codec::new(ring, config.codec.settings())))
}

/// Serves until SIGINT or SIGTERM.
pub async fn run(config: &Config, home: &Home, args: &CodecArgs) -> anyhow::Result<()> {
    let codec_config = &config.codec;
    let codec = load(config, home)?;
    let (options, address, _) = args.temporal.resolve(&config.temporal)?;
    let connection = plinth_control::connect(options).await?;
    // Only the access lists are read here: no directory, no validation rules.
    let backend = crate::platform::backend(config, home, &connection, &address)?;
    let tokens = match &codec_config.jwks {
        Some(source) => Some(
            TokenVerifier::new(
                JwksSource::parse(source),
                TokenPolicy {
                    issuer: codec_config.jwt_issuer.clone().context(
                        "[codec] jwt_issuer is required when [codec] jwks is set: tokens from \
                         any issuer the keys sign for would be accepted",
                    )?,
                    audience: codec_config.jwt_audience.clone().context(
                        "[codec] jwt_audience is required when [codec] jwks is set: tokens \
                         issued for any other application would be accepted",
                    )?,
                    identity_claim: codec_config.jwt_identity_claim.clone(),
                },
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
        access: Arc::new(plinth_control::AccessLists::new(backend)),
        tokens,
        allowed_origins: if args.allow_origins.is_empty() {
            codec_config.allowed_origins.clone()
        } else {
            args.allow_origins.clone()
        },
        max_body_bytes: codec_config.max_body_bytes,
        dev_mode: args.dev,
        metrics: Default::default(),
    });
    let tls = if codec_config.tls && !args.dev {
        Some(crate::proxy::server_tls(config, home, false, b"http/1.1")?)
    } else {
        None
    };
    let (listener, listen) =
        crate::proxy::bind(args.listen.as_ref(), &codec_config.listen, "[codec] listen").await?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(address = %listen, scheme, "codec server listening");
    plinth_codec::server::serve(listener, tls, server, shutdown_signal()).await?;
    tracing::info!("codec server stopped");
    Ok(())
}
