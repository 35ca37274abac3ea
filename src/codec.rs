//! `plinth codec` (the codec server) and `plinth keys` (the key ring).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use plinth_codec::server::CodecServer;
use plinth_codec::tokens::{JwksSource, TokenPolicy, TokenVerifier};
use plinth_codec::{
    Codec, KekProvider, KeyPurpose, KeyRing, KeyRingNamespaceKeys, KeyState, NamespaceKeys,
    Pkcs11Provider, Pkcs11Settings, WatchedKeyRing,
};
use plinth_identity::Secret;
use plinth_kms::{AwsKmsProvider, AwsKmsSettings};
use plinth_proto::audit::AuditRecord;

use crate::config::{Config, KeyProviderKind};
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
    Rotate {
        /// Rotate this namespace's own key ([keys] per_namespace) instead of the
        /// installation's.
        #[arg(long)]
        namespace: Option<String>,
    },
    /// Show every key's id, creation time and state (never the key).
    List,
    /// Keep the keys of a namespace deleted with spec.shredOnDelete: they are not shredded
    /// when their time comes (until then only).
    Restore {
        /// Its Temporal namespace, as payloads name it.
        #[arg(long)]
        namespace: String,
    },
    /// Open payloads (the codec server's JSON body, {"payloads": [...]}) with the keys here,
    /// without a server: for exports and backups. Reads standard input without --file.
    Decode {
        /// The Temporal namespace the payloads were sealed for.
        #[arg(long)]
        namespace: String,
        /// A file holding the payloads.
        #[arg(long)]
        file: Option<PathBuf>,
    },
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

pub fn keyring_path(config: &Config, home: &Home) -> PathBuf {
    config
        .codec
        .keyring
        .clone()
        .unwrap_or_else(|| home.keyring())
}

/// Logs in to the token `[keys]` names.
pub fn pkcs11(config: &Config) -> anyhow::Result<Pkcs11Provider> {
    let keys = &config.keys;
    let pin = Secret::new("[keys] pkcs11_pin", keys.pkcs11_pin()?).current()?;
    Pkcs11Provider::open(&Pkcs11Settings {
        module: keys.pkcs11_module.clone(),
        token: keys.pkcs11_token.clone(),
        pin: pin.to_string(),
    })
    .context("[keys] provider = \"pkcs11\"")
}

/// Sets up AWS KMS as `[keys]` names it.
pub fn aws_kms(config: &Config) -> anyhow::Result<AwsKmsProvider> {
    let keys = &config.keys;
    AwsKmsProvider::open(&AwsKmsSettings {
        key: keys.aws_kms_key.clone(),
        region: keys.aws_region.clone(),
        endpoint: keys.aws_kms_endpoint.clone(),
        namespace_alias_prefix: keys.aws_kms_namespace_alias_prefix(),
    })
    .context("[keys] provider = \"aws-kms\"")
}

/// Makes the first key of the provider `[keys]` names, unless it has one; returns the
/// active key's id and whether it was made now.
pub fn init_keys(config: &Config, home: &Home) -> anyhow::Result<(String, bool)> {
    match config.keys.provider {
        KeyProviderKind::File => {
            let (ring, created) = KeyRing::init(&keyring_path(config, home))?;
            Ok((active(&ring), created))
        }
        KeyProviderKind::Pkcs11 => pkcs11(config)?.init(),
        KeyProviderKind::AwsKms => SealedKeys::init(&aws_kms(config)?),
    }
}

/// A provider whose keys are made inside it and never leave: a PKCS#11 token, AWS KMS.
trait SealedKeys {
    /// The active installation key, made now if there is none; whether it was.
    fn init(&self) -> anyhow::Result<(String, bool)>;
    /// A new active key of the installation, or of `namespace`.
    fn rotate(&self, namespace: Option<&str>) -> anyhow::Result<String>;
    /// Every key, with its state.
    fn list(&self) -> anyhow::Result<Vec<plinth_codec::KeyInfo>>;
}

impl SealedKeys for Pkcs11Provider {
    fn init(&self) -> anyhow::Result<(String, bool)> {
        match self.active_kek() {
            Ok(id) => Ok((id, false)),
            Err(plinth_codec::CodecError::NoActiveKey) => Ok((self.generate()?, true)),
            Err(e) => Err(e.into()),
        }
    }

    fn rotate(&self, namespace: Option<&str>) -> anyhow::Result<String> {
        Ok(match namespace {
            Some(namespace) => self.rotate_namespace(namespace)?,
            None => self.generate()?,
        })
    }

    fn list(&self) -> anyhow::Result<Vec<plinth_codec::KeyInfo>> {
        Ok(Pkcs11Provider::list(self)?)
    }
}

impl SealedKeys for AwsKmsProvider {
    fn init(&self) -> anyhow::Result<(String, bool)> {
        Ok(AwsKmsProvider::init(self)?)
    }

    fn rotate(&self, namespace: Option<&str>) -> anyhow::Result<String> {
        Ok(match namespace {
            Some(namespace) => self.rotate_namespace(namespace)?,
            None => AwsKmsProvider::rotate(self)?,
        })
    }

    fn list(&self) -> anyhow::Result<Vec<plinth_codec::KeyInfo>> {
        Ok(AwsKmsProvider::list(self)?)
    }
}

/// `plinth keys init`: says whether the first key was made now, and where.
fn print_init(config: &Config, home: &Home, (id, created): (String, bool)) {
    let verb = if created { "created" } else { "kept" };
    let place = match config.keys.provider {
        KeyProviderKind::File => format!("key ring {}", keyring_path(config, home).display()),
        KeyProviderKind::Pkcs11 => format!("token {}", config.keys.pkcs11_token),
        KeyProviderKind::AwsKms => format!("AWS KMS key {}", config.keys.aws_kms_key),
    };
    println!("{verb} {place} (active key {id})");
}

/// What makes namespaces' own keys in the worker, when `[keys] per_namespace` asks for them.
pub fn namespace_keys(
    config: &Config,
    home: &Home,
) -> anyhow::Result<Option<Arc<dyn NamespaceKeys>>> {
    if !config.keys.per_namespace {
        return Ok(None);
    }
    Ok(Some(match config.keys.provider {
        KeyProviderKind::File => {
            // A ring the worker cannot read stops it here, not in every reconcile.
            let path = keyring_path(config, home);
            KeyRing::load(&path).context("[keys] per_namespace: the worker makes keys in it")?;
            Arc::new(KeyRingNamespaceKeys(path))
        }
        KeyProviderKind::Pkcs11 => Arc::new(pkcs11(config)?),
        KeyProviderKind::AwsKms => Arc::new(aws_kms(config)?),
    }))
}

/// `plinth keys` on the key provider `[keys]` names.
pub fn keys(config: &Config, home: &Home, command: &KeysCommand) -> anyhow::Result<ExitCode> {
    match command {
        KeysCommand::Restore { namespace } => return restore(config, home, namespace),
        KeysCommand::Decode { namespace, file } => return decode(config, home, namespace, file),
        _ => {}
    }
    match config.keys.provider {
        KeyProviderKind::File => file_keys(config, home, command),
        KeyProviderKind::Pkcs11 => sealed_keys(config, home, &pkcs11(config)?, command),
        KeyProviderKind::AwsKms => sealed_keys(config, home, &aws_kms(config)?, command),
    }
}

/// The audit record of what `command` changed, once it succeeded; `None` for commands that
/// change nothing (or only start the key ring).
pub fn key_change(command: &KeysCommand) -> Option<AuditRecord> {
    let operator = crate::trail::operator();
    let (action, namespace, outcome, detail) = match command {
        KeysCommand::Rotate { namespace } => (
            "keys.rotated",
            namespace.clone(),
            "rotated",
            "a new key is active; older keys stay, decrypt-only".to_owned(),
        ),
        KeysCommand::Import { id, namespaces, .. } => (
            "keys.imported",
            None,
            "imported",
            format!("key {id} opens namespaces {}", namespaces.join(", ")),
        ),
        KeysCommand::Restore { namespace } => (
            "keys.restored",
            Some(namespace.clone()),
            "restored",
            "kept from shredding".to_owned(),
        ),
        KeysCommand::Init | KeysCommand::List | KeysCommand::Decode { .. } => return None,
    };
    let resource = format!("keys/{}", namespace.as_deref().unwrap_or("installation"));
    let record = AuditRecord::now(operator, action, resource, outcome).detail(detail);
    Some(match namespace {
        Some(namespace) => record.in_namespace(namespace),
        None => record,
    })
}

/// Why the providers' own commands never see these.
const ANY_PROVIDER: &str = "plinth keys restore and decode work the same on every provider";

/// Why `plinth keys import` is for the file provider alone.
const NO_IMPORT: &str = "plinth keys import: this provider's keys are made inside it and never \
     leave; import is for [keys] provider = \"file\"";

/// `plinth keys` on a token or KMS: keys are made inside it and never leave.
fn sealed_keys(
    config: &Config,
    home: &Home,
    keys: &dyn SealedKeys,
    command: &KeysCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        KeysCommand::Init => print_init(config, home, keys.init()?),
        KeysCommand::Rotate { namespace } => {
            let id = keys.rotate(namespace.as_deref())?;
            say_rotated(&id, namespace.as_deref());
        }
        KeysCommand::List => print_keys(&keys.list()?),
        KeysCommand::Import { .. } => bail!(NO_IMPORT),
        KeysCommand::Restore { .. } | KeysCommand::Decode { .. } => unreachable!("{ANY_PROVIDER}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `plinth keys restore`: takes back the shredding of a deleted namespace's keys.
fn restore(config: &Config, home: &Home, namespace: &str) -> anyhow::Result<ExitCode> {
    let Some(keys) = namespace_keys(config, home)? else {
        bail!(
            "plinth keys restore: [keys] per_namespace is off, so no namespace has keys of its \
             own to shred or restore"
        );
    };
    let restored = keys
        .restore(namespace)
        .with_context(|| format!("--namespace {namespace}"))?;
    tracing::info!(target: "plinth::audit", namespace, keys = ?restored, "namespace keys restored");
    println!(
        "kept {} key(s) of namespace {namespace}: {}; they will not be shredded",
        restored.len(),
        restored.join(", ")
    );
    Ok(ExitCode::SUCCESS)
}

/// `plinth keys decode`: opens payloads with the keys here, for exports and backups.
fn decode(
    config: &Config,
    home: &Home,
    namespace: &str,
    file: &Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let text = match file {
        Some(path) => std::fs::read(path).with_context(|| path.display().to_string())?,
        None => {
            let mut text = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut text)?;
            text
        }
    };
    let payloads = plinth_codec::payloads_from_json(&text).map_err(|e| {
        anyhow::anyhow!("payloads: not proto3 JSON Payloads ({{\"payloads\": [...]}}): {e}")
    })?;
    let opened = load(config, home)?
        .decode(namespace, payloads)
        .with_context(|| format!("--namespace {namespace}"))?;
    println!(
        "{}",
        String::from_utf8_lossy(&plinth_codec::payloads_to_json(&opened))
    );
    Ok(ExitCode::SUCCESS)
}

fn say_rotated(id: &str, namespace: Option<&str>) {
    match namespace {
        Some(namespace) => println!(
            "active key of namespace {namespace} is now {id}; its older keys stay for decryption"
        ),
        None => println!("active key is now {id}; older keys stay for decryption"),
    }
}

/// Every key's id, creation time, namespace (`-`: the installation's) and state.
fn print_keys(keys: &[plinth_codec::KeyInfo]) {
    println!("{:<32} {:<22} {:<24} STATE", "ID", "CREATED", "NAMESPACE");
    for key in keys {
        let state = match (key.state, &key.purpose) {
            _ if key.shred.is_some() => {
                let mark = key.shred.as_ref().expect("matched");
                match &mark.shredded {
                    Some(at) => format!("shredded at {at} (deleted by {})", mark.by),
                    None => format!("shred due at {} (deleted by {})", mark.due, mark.by),
                }
            }
            (KeyState::Active, _) => "active".to_owned(),
            (KeyState::DecryptOnly, KeyPurpose::Kek) => "decrypt-only".to_owned(),
            (KeyState::DecryptOnly, KeyPurpose::Samples { namespaces }) => {
                format!(
                    "decrypt-only, samples format, for {}",
                    namespaces.join(", ")
                )
            }
        };
        let namespace = key.namespace.as_deref().unwrap_or("-");
        println!("{:<32} {:<22} {namespace:<24} {state}", key.id, key.created);
    }
}

fn file_keys(config: &Config, home: &Home, command: &KeysCommand) -> anyhow::Result<ExitCode> {
    let path = keyring_path(config, home);
    match command {
        KeysCommand::Init => print_init(config, home, init_keys(config, home)?),
        KeysCommand::Rotate { namespace } => {
            let mut ring = KeyRing::load_for_change(&path)?;
            let id = match namespace {
                Some(namespace) => ring.rotate_namespace(namespace)?,
                None => ring.rotate()?,
            };
            say_rotated(&id, namespace.as_deref());
        }
        KeysCommand::List => print_keys(&KeyRing::load(&path)?.list()),
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
        KeysCommand::Restore { .. } | KeysCommand::Decode { .. } => unreachable!("{ANY_PROVIDER}"),
    }
    Ok(ExitCode::SUCCESS)
}

fn active(ring: &KeyRing) -> String {
    ring.active_kek().unwrap_or_default()
}

/// The codec of `[codec]`, over the keys of the provider `[keys]` names, followed through
/// rotations.
pub fn load(config: &Config, home: &Home) -> anyhow::Result<Arc<Codec>> {
    let provider: Arc<dyn KekProvider> = match config.keys.provider {
        KeyProviderKind::File => {
            let path = keyring_path(config, home);
            if !path.exists() {
                bail!("no key ring at {}: run `plinth keys init`", path.display());
            }
            Arc::new(WatchedKeyRing::load(&path)?)
        }
        KeyProviderKind::Pkcs11 => Arc::new(pkcs11(config)?),
        KeyProviderKind::AwsKms => Arc::new(aws_kms(config)?),
    };
    Ok(Arc::new(Codec::new(
        provider,
        config.codec.settings(&config.keys),
    )))
}

/// Serves until SIGINT or SIGTERM.
pub async fn run(config: &Config, home: &Home, args: &CodecArgs) -> anyhow::Result<()> {
    let codec_config = &config.codec;
    let codec = load(config, home)?;
    let (options, address, settings) = args.temporal.resolve(&config.temporal)?;
    let connection = plinth_control::connect(options).await?;
    let control = plinth_control::ControlPlane::connect(
        connection.clone(),
        &settings.namespace,
        &settings.task_queue,
    )
    .context("control-plane client")?;
    let audit = crate::proxy::audit_sender(control, &config.audit.destinations(home)?, "codec");
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
        audit,
        draining: Default::default(),
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
    let drain = codec_config.drain()?;
    plinth_codec::server::serve(listener, tls, server, shutdown_signal(), drain).await?;
    tracing::info!("codec server stopped");
    Ok(())
}
