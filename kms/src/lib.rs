//! Key encryption keys in AWS KMS: data keys are sealed with `Encrypt` and opened with
//! `Decrypt` under an encryption context naming their namespace, so no KEK ever reaches
//! Plinth and every use of one is in CloudTrail with the namespace it was for.
//!
//! The installation's KEK is `[keys] aws_kms_key`, a key ARN or an alias; rotation makes a
//! new KMS key and points the alias at it, and older keys keep opening what they sealed.
//! A namespace's own KEK is the key its alias (`<prefix><namespace>`) names, tagged with the
//! namespace. Calls run on the provider's own runtime through the AWS SDK's credential
//! chain; callers on a Tokio worker give up their thread for the wait.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use aws_sdk_kms::Client;
use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeyMetadata, KeyState as KmsKeyState, Tag};
use plinth_codec::{
    CodecError, KEY_BYTES, KekProvider, KeyInfo, KeyPurpose, KeyState, NamespaceKeys, ShredMark,
    ShredOutcome, ShredSchedule, wrap_binding,
};
use std::time::SystemTime;

/// How long an alias's target is trusted before KMS is asked again: how soon a rotation is
/// picked up.
const ALIAS_TTL: Duration = Duration::from_secs(5);
/// How long "no such alias" is trusted, so a namespace without a key asks at most once a
/// second.
const MISSING_TTL: Duration = Duration::from_secs(1);
/// Keys and aliases remembered; past this the memory starts over.
const CACHE_CAPACITY: usize = 4096;
/// Lookups of keys this process has not seen, a second: payloads name their key, so made-up
/// names must not turn into unbounded KMS calls. The codec lets each namespace ask for at
/// most a quarter of these, so one namespace's made-up names leave the others theirs.
const UNKNOWN_KEY_LOOKUPS_PER_SECOND: u32 = 256;
/// A KMS call that takes longer fails: sealing fails closed, opening serves from the cache.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The tag every key Plinth makes carries (`installation` or `namespace`).
const TAG_KEK: &str = "plinth-kek";
/// The tag naming the namespace whose own key a key is.
const TAG_NAMESPACE: &str = "plinth-namespace";
/// The tag naming the installation a key belongs to (its `aws_kms_key`), so that
/// installations sharing an account never touch each other's keys.
const TAG_INSTALLATION: &str = "plinth-installation";
/// A restore is refused this close to the due time: the worker may be shredding already.
const RESTORE_MARGIN: Duration = plinth_codec::RESTORE_MARGIN;
/// KMS calls in flight at once, whatever asks for them.
const MAX_CALLS_IN_FLIGHT: usize = 16;
/// Tags of a key scheduled for destruction: when, and who deleted its namespace; and, once
/// destroyed (disabled and scheduled for deletion in KMS), when.
const TAG_SHRED_DUE: &str = "plinth-shred-due";
const TAG_SHRED_BY: &str = "plinth-shred-by";
const TAG_SHREDDED: &str = "plinth-shredded-at";
/// KMS's shortest wait before it deletes a key; the key is disabled at once.
const KMS_DELETION_WINDOW_DAYS: i32 = 7;
/// The encryption context's keys: what a wrapped data key is, and its namespace.
const CONTEXT_PURPOSE: (&str, &str) = ("plinth", "dek/v1");
const CONTEXT_NAMESPACE: &str = "namespace";
/// How the provider names itself in errors.
const PROVIDER: &str = "aws-kms";

/// Where the keys are.
#[derive(Debug, Clone)]
pub struct AwsKmsSettings {
    /// The installation's KEK: a key ARN, or an alias (`alias/plinth`) that rotation points
    /// at each new key.
    pub key: String,
    /// The region; the credential chain's (`AWS_REGION`, profile) when unset.
    pub region: Option<String>,
    /// A KMS endpoint other than the region's (a VPC endpoint, or a stand-in in tests).
    pub endpoint: Option<String>,
    /// Aliases of namespaces' own keys start with this.
    pub namespace_alias_prefix: String,
}

/// Why KMS could not be used; no variant carries key material or credentials.
#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    /// The SDK could not be set up (region, endpoint, runtime).
    #[error("aws-kms: {0}")]
    Setup(String),
    /// A call to KMS failed.
    #[error("aws-kms {operation} ({key}): {reason}")]
    Call {
        /// The KMS operation.
        operation: &'static str,
        /// The key or alias it was for.
        key: String,
        /// KMS's or the SDK's answer.
        reason: String,
    },
    /// Rotation points an alias at a new key; a key named by ARN has no alias to repoint.
    #[error(
        "aws-kms: [keys] aws_kms_key = {0:?} names a key, not an alias: rotation makes a new \
         key and points an alias at it, so name the alias (alias/...)"
    )]
    NotAnAlias(String),
    /// A namespace to rotate has no key of its own.
    #[error(
        "namespace {0:?} has no key of its own to rotate: name it as payloads do (its Temporal \
         namespace, `<name>.<account>` on Temporal Cloud), once it is provisioned"
    )]
    NoSuchNamespace(String),
    /// A namespace's keys cannot be changed or kept as asked, given their shredding.
    #[error("{0}")]
    Shredding(String),
    /// A namespace's alias names a key that is not this installation's key of it.
    #[error(
        "aws-kms: namespace {namespace:?}'s alias names {key}, which is not this installation's \
         key of it (its tags say otherwise)"
    )]
    NotItsOwn {
        /// The namespace.
        namespace: String,
        /// The key its alias names.
        key: String,
    },
    /// The installation's key or alias does not exist.
    #[error("aws-kms: key {0:?} does not exist: run `plinth keys init`")]
    NoKey(String),
}

/// A key's tags, by tag key.
type Tags = HashMap<String, String>;

/// Whose a key is, as its tags (or the configuration) say.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Owner {
    /// The installation's, wrapping every namespace's data keys.
    Installation,
    /// Namespace's own.
    Namespace(String),
    /// Not this installation's, or no key at all: never asked to open anything.
    Foreign,
}

/// An alias's target as last asked, or that it has none.
#[derive(Clone)]
struct Resolved {
    arn: Option<String>,
    at: Instant,
}

/// KEKs in AWS KMS.
pub struct AwsKmsProvider {
    settings: AwsKmsSettings,
    client: Client,
    /// Dropped in the background: a runtime cannot be dropped on another runtime's thread.
    runtime: Option<tokio::runtime::Runtime>,
    /// Alias (or the configured key) to the ARN it names.
    aliases: RwLock<HashMap<String, Resolved>>,
    /// Key ARN to whose key it is. A key's tags are read once: its owner never changes.
    owners: RwLock<HashMap<String, Owner>>,
    /// Bounds the KMS calls in flight.
    in_flight: tokio::sync::Semaphore,
    /// Lookups of unseen keys in the current second.
    lookups: Mutex<(Instant, u32)>,
}

impl std::fmt::Debug for AwsKmsProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsKmsProvider")
            .field("key", &self.settings.key)
            .field("region", &self.settings.region)
            .finish_non_exhaustive()
    }
}

impl Drop for AwsKmsProvider {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Runs `future` on `runtime` from synchronous code, wherever that code runs.
fn block_on<T: Send>(
    runtime: &tokio::runtime::Runtime,
    future: impl Future<Output = T> + Send,
) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Err(_) => runtime.block_on(future),
        // The worker's other tasks move elsewhere while this one waits for KMS.
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| runtime.block_on(future))
        }
        Ok(_) => std::thread::scope(|scope| {
            scope
                .spawn(|| runtime.block_on(future))
                .join()
                .expect("a KMS call does not panic")
        }),
    }
}

impl AwsKmsProvider {
    /// Sets up the SDK: the credential chain, the region and the endpoint. Nothing is asked
    /// of KMS yet.
    pub fn open(settings: &AwsKmsSettings) -> Result<Self, KmsError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("plinth-kms")
            .enable_all()
            .build()
            .map_err(|e| KmsError::Setup(format!("runtime: {e}")))?;
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(http)
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .operation_timeout(CALL_TIMEOUT)
                    .connect_timeout(Duration::from_secs(3))
                    .build(),
            );
        if let Some(region) = &settings.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some(endpoint) = &settings.endpoint {
            loader = loader.endpoint_url(endpoint.clone());
        }
        let config = block_on(&runtime, loader.load());
        if config.region().is_none() {
            return Err(KmsError::Setup(
                "no region: set [keys] aws_region or AWS_REGION".into(),
            ));
        }
        Ok(Self {
            settings: settings.clone(),
            client: Client::new(&config),
            runtime: Some(runtime),
            aliases: RwLock::default(),
            owners: RwLock::default(),
            in_flight: tokio::sync::Semaphore::new(MAX_CALLS_IN_FLIGHT),
            lookups: Mutex::new((Instant::now(), 0)),
        })
    }

    /// Runs one KMS call, once one of the [`MAX_CALLS_IN_FLIGHT`] slots is free; waiting
    /// longer than [`CALL_TIMEOUT`] for a slot fails like a call that timed out.
    #[expect(
        clippy::result_large_err,
        reason = "the SDK's own result, passed through unchanged"
    )]
    fn run<T: Send, E: Send>(
        &self,
        future: impl Future<Output = Result<T, SdkError<E>>> + Send,
    ) -> Result<T, SdkError<E>> {
        block_on(
            self.runtime.as_ref().expect("the runtime lives until drop"),
            async {
                let Ok(permit) = tokio::time::timeout(CALL_TIMEOUT, self.in_flight.acquire()).await
                else {
                    return Err(SdkError::timeout_error(
                        "no free slot for a KMS call: too many calls in flight",
                    ));
                };
                let _permit = permit.expect("never closed");
                future.await
            },
        )
    }

    /// The alias of `namespace`'s own key: characters aliases may not hold are written
    /// `_xx` (hex), and `_` itself, so two names never share an alias.
    pub fn namespace_alias(&self, namespace: &str) -> String {
        let mut alias = self.settings.namespace_alias_prefix.clone();
        for byte in namespace.bytes() {
            if byte.is_ascii_alphanumeric() || byte == b'-' {
                alias.push(byte as char);
            } else {
                alias.push_str(&format!("_{byte:02x}"));
            }
        }
        alias
    }

    /// The installation's key, made (with its alias) when the alias names none yet; returns
    /// its ARN and whether it was made now.
    pub fn init(&self) -> Result<(String, bool), KmsError> {
        let key = self.settings.key.clone();
        if let Some(meta) = self.describe(&key)? {
            return Ok((arn_of(&meta), false));
        }
        if !is_alias(&key) {
            return Err(KmsError::NoKey(key));
        }
        let arn = self.create_key(None)?;
        self.call("CreateAlias", &key, |c| {
            c.create_alias().alias_name(&key).target_key_id(&arn).send()
        })?;
        self.forget(&key);
        Ok((arn, true))
    }

    /// A new installation key, which the alias then names: the active one from now on.
    pub fn rotate(&self) -> Result<String, KmsError> {
        let alias = self.settings.key.clone();
        if !is_alias(&alias) {
            return Err(KmsError::NotAnAlias(alias));
        }
        if self.describe(&alias)?.is_none() {
            return Err(KmsError::NoKey(alias));
        }
        self.repoint(&alias, None)
    }

    /// A new key of `namespace`'s own, which must have one.
    pub fn rotate_namespace(&self, namespace: &str) -> Result<String, KmsError> {
        let alias = self.namespace_alias(namespace);
        let Some(current) = self.describe(&alias)? else {
            return Err(KmsError::NoSuchNamespace(namespace.to_owned()));
        };
        // Repointing another installation's alias would seal its data under this one's key.
        let current = arn_of(&current);
        if !self
            .owner(&current)
            .is_ok_and(|owner| owner == Owner::Namespace(namespace.to_owned()))
        {
            return Err(KmsError::NotItsOwn {
                namespace: namespace.to_owned(),
                key: current,
            });
        }
        self.not_being_shredded(namespace)?;
        let arn = self.repoint(&alias, Some(namespace))?;
        // A shredding scheduled while the key was made covers it too.
        if let Some(mark) = self.pending_mark(namespace)? {
            self.tag(
                &arn,
                &[(TAG_SHRED_DUE, &mark.due), (TAG_SHRED_BY, &mark.by)],
            )?;
        }
        Ok(arn)
    }

    fn repoint(&self, alias: &str, namespace: Option<&str>) -> Result<String, KmsError> {
        let arn = self.create_key(namespace)?;
        self.call("UpdateAlias", alias, |c| {
            c.update_alias()
                .alias_name(alias)
                .target_key_id(&arn)
                .send()
        })?;
        self.forget(alias);
        Ok(arn)
    }

    /// Every key Plinth made (tagged `plinth-kek`), and the installation's key; the ones the
    /// aliases name are active.
    pub fn list(&self) -> Result<Vec<KeyInfo>, KmsError> {
        let installation = self.describe(&self.settings.key)?.map(|m| arn_of(&m));
        let mut keys = Vec::new();
        for (arn, tags) in self.readable_keys()? {
            let namespace = tags.get(TAG_NAMESPACE).cloned();
            if !self.is_ours(&tags) && installation.as_deref() != Some(arn.as_str()) {
                continue;
            }
            let Some(meta) = self.describe(&arn)? else {
                continue;
            };
            let active = match &namespace {
                None => installation.as_deref() == Some(arn.as_str()),
                Some(namespace) => self
                    .describe(&self.namespace_alias(namespace))?
                    .is_some_and(|m| arn_of(&m) == arn),
            };
            keys.push(KeyInfo {
                id: arn,
                created: meta
                    .creation_date()
                    .and_then(|d| {
                        d.fmt(aws_sdk_kms::primitives::DateTimeFormat::DateTime)
                            .ok()
                    })
                    .unwrap_or_default(),
                state: if active {
                    KeyState::Active
                } else {
                    KeyState::DecryptOnly
                },
                purpose: KeyPurpose::Kek,
                namespace,
                shred: shred_mark(&tags),
            });
        }
        keys.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        Ok(keys)
    }

    /// Every key of `namespace`'s own (by tag), with its tags.
    fn namespace_keys(&self, namespace: &str) -> Result<Vec<(String, Tags)>, KmsError> {
        let mut keys = self.readable_keys()?;
        keys.retain(|(_, tags)| {
            self.is_ours(tags)
                && tags.get(TAG_KEK).map(String::as_str) == Some("namespace")
                && tags.get(TAG_NAMESPACE).map(String::as_str) == Some(namespace)
        });
        Ok(keys)
    }

    /// The namespace's key whose shredding is scheduled and not yet done, if any.
    fn pending_mark(&self, namespace: &str) -> Result<Option<ShredMark>, KmsError> {
        Ok(self
            .namespace_keys(namespace)?
            .into_iter()
            .find_map(|(_, tags)| shred_mark(&tags).filter(|m| m.shredded.is_none())))
    }

    /// Every key of the account whose tags this principal may read, with them.
    fn readable_keys(&self) -> Result<Vec<(String, Tags)>, KmsError> {
        let mut keys = Vec::new();
        let mut marker = None;
        loop {
            let page = self.call("ListKeys", "*", |c| {
                c.list_keys().set_marker(marker.clone()).send()
            })?;
            for arn in page.keys().iter().filter_map(|k| k.key_arn()) {
                if let Some(tags) = self.own_tags(arn)? {
                    keys.push((arn.to_owned(), tags));
                }
            }
            match page.next_marker() {
                Some(next) if page.truncated() => marker = Some(next.to_owned()),
                _ => break,
            }
        }
        Ok(keys)
    }

    /// A key's tags, or `None` when the key is gone or not this principal's to read (another
    /// team's key in the account).
    fn own_tags(&self, arn: &str) -> Result<Option<Tags>, KmsError> {
        match self.run(self.client.list_resource_tags().key_id(arn).send()) {
            Ok(answer) => Ok(Some(
                answer
                    .tags()
                    .iter()
                    .map(|t| (t.tag_key().to_owned(), t.tag_value().to_owned()))
                    .collect(),
            )),
            Err(e)
                if matches!(
                    e.code(),
                    Some("NotFoundException" | "AccessDeniedException")
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(call_error("ListResourceTags", arn, e)),
        }
    }

    /// Whether a key's tags make it one this installation made.
    fn is_ours(&self, tags: &Tags) -> bool {
        tags.contains_key(TAG_KEK) && tags.get(TAG_INSTALLATION) == Some(&self.settings.key)
    }

    /// Whose key `arn` is: the installation's by its tags or as the configured key, a
    /// namespace's by its tags, anything else foreign. Asked of KMS once per key, within
    /// this second's budget for unseen keys; a key id outside the installation key's
    /// account and region is foreign without asking.
    fn owner(&self, arn: &str) -> Result<Owner, CodecError> {
        if let Some(owner) = self.owners.read().expect("owners lock").get(arn) {
            return Ok(owner.clone());
        }
        let installation = self.active_kek()?;
        let home = installation.rsplit_once(":key/").map(|(home, _)| home);
        if home.is_none_or(|home| arn.rsplit_once(":key/").map(|(h, _)| h) != Some(home)) {
            return Ok(Owner::Foreign);
        }
        self.take_lookup(arn)?;
        let owner = match self.own_tags(arn).map_err(|e| provider_error(arn, e))? {
            Some(tags) if self.is_ours(&tags) => match tags.get(TAG_NAMESPACE) {
                Some(namespace) => Owner::Namespace(namespace.clone()),
                None => Owner::Installation,
            },
            Some(_) if arn == installation => Owner::Installation,
            Some(_) => Owner::Foreign,
            // Not found (yet: KMS is eventually consistent) or not readable: refused now,
            // asked again next time.
            None => return Ok(Owner::Foreign),
        };
        self.remember(arn, owner.clone());
        Ok(owner)
    }

    fn remember(&self, arn: &str, owner: Owner) {
        let mut owners = self.owners.write().expect("owners lock");
        if owners.len() >= CACHE_CAPACITY {
            owners.clear();
        }
        owners.insert(arn.to_owned(), owner);
    }

    fn tag(&self, arn: &str, tags: &[(&str, &str)]) -> Result<(), KmsError> {
        let tags: Vec<Tag> = tags.iter().map(|(key, value)| tag_of(key, value)).collect();
        self.call("TagResource", arn, |c| {
            c.tag_resource()
                .key_id(arn)
                .set_tags(Some(tags.clone()))
                .send()
        })
        .map(drop)
    }

    /// A new symmetric key, tagged as Plinth's (and with its namespace); returns its ARN.
    fn create_key(&self, namespace: Option<&str>) -> Result<String, KmsError> {
        let mut tags = vec![tag_of(
            TAG_KEK,
            if namespace.is_some() {
                "namespace"
            } else {
                "installation"
            },
        )];
        tags.push(tag_of(TAG_INSTALLATION, &self.settings.key));
        if let Some(namespace) = namespace {
            tags.push(tag_of(TAG_NAMESPACE, namespace));
        }
        let description = match namespace {
            Some(namespace) => format!("Plinth: key encryption key of namespace {namespace}"),
            None => "Plinth: key encryption key of the installation".to_owned(),
        };
        let created = self.call("CreateKey", "(new)", |c| {
            c.create_key()
                .description(&description)
                .set_tags(Some(tags.clone()))
                .send()
        })?;
        let meta = created.key_metadata().ok_or_else(|| KmsError::Call {
            operation: "CreateKey",
            key: "(new)".into(),
            reason: "no key metadata in the answer".into(),
        })?;
        let arn = arn_of(meta);
        let owner = namespace.map_or(Owner::Installation, |n| Owner::Namespace(n.to_owned()));
        self.remember(&arn, owner);
        Ok(arn)
    }

    /// The key `key` (ARN, id or alias) names; `None` when there is none.
    fn describe(&self, key: &str) -> Result<Option<KeyMetadata>, KmsError> {
        match self.run(self.client.describe_key().key_id(key).send()) {
            Ok(answer) => Ok(answer.key_metadata().cloned()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_not_found_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(call_error("DescribeKey", key, e)),
        }
    }

    fn call<T, E, F>(
        &self,
        operation: &'static str,
        key: &str,
        send: impl FnOnce(&Client) -> F,
    ) -> Result<T, KmsError>
    where
        T: Send,
        E: std::error::Error + Send + Sync + 'static,
        F: Future<Output = Result<T, SdkError<E>>> + Send,
    {
        self.run(send(&self.client))
            .map_err(|e| call_error(operation, key, e))
    }

    /// The ARN `alias` names, asked again when older than [`ALIAS_TTL`].
    fn resolve(&self, alias: &str) -> Result<Option<String>, KmsError> {
        if let Some(hit) = self.aliases.read().expect("alias lock").get(alias) {
            let ttl = if hit.arn.is_some() {
                ALIAS_TTL
            } else {
                MISSING_TTL
            };
            if hit.at.elapsed() < ttl {
                return Ok(hit.arn.clone());
            }
        }
        let meta = self.describe(alias)?;
        // Only a key that can seal is active: a disabled or doomed one fails closed.
        let arn = match &meta {
            Some(meta) if meta.key_state() == Some(&KmsKeyState::Enabled) => Some(arn_of(meta)),
            Some(meta) => {
                return Err(KmsError::Call {
                    operation: "DescribeKey",
                    key: alias.to_owned(),
                    reason: format!(
                        "the key it names is {}",
                        meta.key_state().map_or("in no state", |s| s.as_str())
                    ),
                });
            }
            None => None,
        };
        let mut aliases = self.aliases.write().expect("alias lock");
        if aliases.len() >= CACHE_CAPACITY {
            aliases.clear();
        }
        aliases.insert(
            alias.to_owned(),
            Resolved {
                arn: arn.clone(),
                at: Instant::now(),
            },
        );
        Ok(arn)
    }

    fn forget(&self, alias: &str) {
        self.aliases.write().expect("alias lock").remove(alias);
    }

    /// Takes one of this second's lookups of unseen keys, or says there are none left.
    fn take_lookup(&self, key: &str) -> Result<(), CodecError> {
        let mut lookups = self.lookups.lock().expect("lookup lock");
        if lookups.0.elapsed() >= Duration::from_secs(1) {
            *lookups = (Instant::now(), 0);
        }
        if lookups.1 >= UNKNOWN_KEY_LOOKUPS_PER_SECOND {
            return Err(provider_error(
                key,
                "too many keys not seen before, this second; try again",
            ));
        }
        lookups.1 += 1;
        Ok(())
    }
}

fn not_its_own(namespace: &str, arn: &str) -> CodecError {
    provider_error(
        arn,
        KmsError::NotItsOwn {
            namespace: namespace.to_owned(),
            key: arn.to_owned(),
        },
    )
}

/// `value` as a KMS tag value may hold it (letters, digits, spaces and `_.:/=+-@`, at most
/// 256 characters): others become `_`.
fn tag_value(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c.is_whitespace() || "_.:/=+-@".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(256)
        .collect()
}

fn tag_of(key: &str, value: &str) -> Tag {
    Tag::builder()
        .tag_key(key)
        .tag_value(value)
        .build()
        .expect("key and value are set")
}

/// A key's shred mark, from its tags.
fn shred_mark(tags: &Tags) -> Option<ShredMark> {
    let shredded = tags.get(TAG_SHREDDED).cloned();
    let due = tags.get(TAG_SHRED_DUE).or(shredded.as_ref())?.clone();
    Some(ShredMark {
        due,
        by: tags.get(TAG_SHRED_BY).cloned().unwrap_or_default(),
        shredded,
    })
}

/// Whether `mark` is due by `now`; a due time that does not read is an error, never "now".
fn is_due(mark: &ShredMark, now: SystemTime) -> Result<bool, KmsError> {
    mark.is_due(now).ok_or_else(|| KmsError::Call {
        operation: "shred",
        key: mark.due.clone(),
        reason: "the key's plinth-shred-due tag is not an RFC 3339 time".into(),
    })
}

fn is_alias(key: &str) -> bool {
    key.starts_with("alias/") || key.contains(":alias/")
}

fn arn_of(meta: &KeyMetadata) -> String {
    meta.arn().unwrap_or(meta.key_id()).to_owned()
}

fn call_error<E>(operation: &'static str, key: &str, e: SdkError<E>) -> KmsError
where
    E: std::error::Error + Send + Sync + 'static,
{
    KmsError::Call {
        operation,
        key: key.to_owned(),
        reason: DisplayErrorContext(&e).to_string(),
    }
}

fn provider_error(key: &str, reason: impl ToString) -> CodecError {
    CodecError::Provider {
        provider: PROVIDER,
        key: key.to_owned(),
        reason: reason.to_string(),
    }
}

/// The encryption context binding a data key to its namespace, from the associated data the
/// codec gives; KMS binds the key itself.
fn context(kek_id: &str, aad: &[u8]) -> Result<HashMap<String, String>, CodecError> {
    let (namespace, bound_kek) =
        wrap_binding(aad).ok_or(CodecError::Crypto("unrecognised data key binding"))?;
    if bound_kek != kek_id {
        return Err(CodecError::Crypto("data key bound to another key"));
    }
    Ok(HashMap::from([
        (CONTEXT_PURPOSE.0.to_owned(), CONTEXT_PURPOSE.1.to_owned()),
        (CONTEXT_NAMESPACE.to_owned(), namespace.to_owned()),
    ]))
}

impl KekProvider for AwsKmsProvider {
    fn remote(&self) -> bool {
        true
    }

    fn active_kek(&self) -> Result<String, CodecError> {
        let key = &self.settings.key;
        self.resolve(key)
            .map_err(|e| provider_error(key, e))?
            .ok_or(CodecError::NoActiveKey)
    }

    /// The key the namespace's alias names, when it is this installation's key of that
    /// namespace: whoever else repoints the alias (another installation with the same prefix,
    /// anyone allowed `UpdateAlias`) gets no data sealed under their key.
    fn namespace_kek(&self, namespace: &str) -> Result<String, CodecError> {
        let alias = self.namespace_alias(namespace);
        let arn = self
            .resolve(&alias)
            .map_err(|e| provider_error(&alias, e))?
            .ok_or_else(|| CodecError::NoNamespaceKey(namespace.to_owned()))?;
        match self.owner(&arn)? {
            Owner::Namespace(owner) if owner == namespace => Ok(arn),
            _ => Err(not_its_own(namespace, &arn)),
        }
    }

    fn kek_namespace(&self, kek_id: &str) -> Result<Option<String>, CodecError> {
        Ok(match self.owner(kek_id)? {
            Owner::Namespace(namespace) => Some(namespace),
            Owner::Installation | Owner::Foreign => None,
        })
    }

    fn wrap(&self, kek_id: &str, dek: &[u8], aad: &[u8]) -> Result<Vec<u8>, CodecError> {
        let context = context(kek_id, aad)?;
        let answer = self
            .call("Encrypt", kek_id, |c| {
                c.encrypt()
                    .key_id(kek_id)
                    .plaintext(Blob::new(dek))
                    .set_encryption_context(Some(context))
                    .send()
            })
            .map_err(|e| provider_error(kek_id, e))?;
        answer
            .ciphertext_blob()
            .map(|blob| blob.as_ref().to_vec())
            .ok_or_else(|| provider_error(kek_id, "Encrypt returned no ciphertext"))
    }

    fn unwrap(&self, kek_id: &str, wrapped: &[u8], aad: &[u8]) -> Result<Vec<u8>, CodecError> {
        let context = context(kek_id, aad)?;
        // A payload may name any key: only this installation's are ever asked to open.
        if self.owner(kek_id)? == Owner::Foreign {
            return Err(CodecError::UnknownKey(kek_id.to_owned()));
        }
        let tampered = || CodecError::Tampered {
            key_id: kek_id.to_owned(),
        };
        let answer = self.run(
            self.client
                .decrypt()
                .key_id(kek_id)
                .ciphertext_blob(Blob::new(wrapped))
                .set_encryption_context(Some(context))
                .send(),
        );
        let answer = match answer {
            Ok(answer) => answer,
            // KMS's "this ciphertext, context or key does not verify".
            Err(e)
                if matches!(
                    e.code(),
                    Some("InvalidCiphertextException" | "IncorrectKeyException")
                ) =>
            {
                return Err(tampered());
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_not_found_exception()) =>
            {
                return Err(CodecError::UnknownKey(kek_id.to_owned()));
            }
            // A key Plinth shredded says so; another disabled key is an outage to fix.
            Err(e)
                if matches!(
                    e.code(),
                    Some("DisabledException" | "KMSInvalidStateException")
                ) =>
            {
                let tags = self
                    .own_tags(kek_id)
                    .map_err(|e| provider_error(kek_id, e))?
                    .unwrap_or_default();
                return Err(match shred_mark(&tags) {
                    Some(mark) if mark.shredded.is_some() => {
                        mark.refusal(kek_id, tags.get(TAG_NAMESPACE).map_or("", String::as_str))
                    }
                    _ => provider_error(kek_id, call_error("Decrypt", kek_id, e)),
                });
            }
            Err(e) => return Err(provider_error(kek_id, call_error("Decrypt", kek_id, e))),
        };
        // KMS opens a ciphertext under the key it names; a key id that differs means the
        // wrapped key was sealed by another key than the payload says.
        if answer.key_id().is_some_and(|id| id != kek_id) {
            return Err(tampered());
        }
        match answer.plaintext() {
            Some(key) if key.as_ref().len() == KEY_BYTES => Ok(key.as_ref().to_vec()),
            _ => Err(tampered()),
        }
    }
}

impl AwsKmsProvider {
    /// The key an alias of `namespace` names, when it is enabled and this installation's
    /// key of that namespace: anything else would seal what its namespace cannot open.
    fn checked_namespace_key(
        &self,
        namespace: &str,
        meta: &KeyMetadata,
    ) -> Result<String, CodecError> {
        let arn = arn_of(meta);
        if meta.key_state() != Some(&KmsKeyState::Enabled) {
            return Err(provider_error(
                &arn,
                format!(
                    "the key namespace {namespace}'s alias names is {}",
                    meta.key_state().map_or("in no state", |s| s.as_str())
                ),
            ));
        }
        match self.owner(&arn)? {
            Owner::Namespace(owner) if owner == namespace => Ok(arn),
            _ => Err(not_its_own(namespace, &arn)),
        }
    }

    /// Has KMS delete `arn` after its shortest window.
    fn schedule_deletion(&self, arn: &str) -> Result<(), KmsError> {
        self.call("ScheduleKeyDeletion", arn, |c| {
            c.schedule_key_deletion()
                .key_id(arn)
                .pending_window_in_days(KMS_DELETION_WINDOW_DAYS)
                .send()
        })
        .map(drop)
    }

    /// Refuses to change `namespace`'s keys while their shredding is scheduled.
    fn not_being_shredded(&self, namespace: &str) -> Result<(), KmsError> {
        match self.pending_mark(namespace)? {
            Some(mark) => Err(KmsError::Shredding(plinth_codec::being_shredded(
                namespace, &mark,
            ))),
            None => Ok(()),
        }
    }
}

impl NamespaceKeys for AwsKmsProvider {
    /// Should another process make one at the same time, the alias names the first and the
    /// second key is scheduled for deletion unused.
    fn ensure(&self, namespace: &str) -> Result<String, CodecError> {
        let alias = self.namespace_alias(namespace);
        let failed = |e: KmsError| provider_error(&alias, e);
        if let Some(meta) = self.describe(&alias).map_err(failed)? {
            return self.checked_namespace_key(namespace, &meta);
        }
        let arn = self.create_key(Some(namespace)).map_err(failed)?;
        let made = self.run(
            self.client
                .create_alias()
                .alias_name(&alias)
                .target_key_id(&arn)
                .send(),
        );
        match made {
            Ok(_) => {}
            Err(e) if e.code() == Some("AlreadyExistsException") => {
                let _ = self.run(
                    self.client
                        .schedule_key_deletion()
                        .key_id(&arn)
                        .pending_window_in_days(7)
                        .send(),
                );
            }
            Err(e) => return Err(failed(call_error("CreateAlias", &alias, e))),
        }
        self.forget(&alias);
        match self.describe(&alias).map_err(failed)? {
            Some(meta) => self.checked_namespace_key(namespace, &meta),
            None => Err(CodecError::NoNamespaceKey(namespace.to_owned())),
        }
    }

    fn schedule_shred(
        &self,
        namespace: &str,
        by: &str,
        due: SystemTime,
    ) -> Result<ShredSchedule, CodecError> {
        let failed = |e: KmsError| provider_error(&format!("(namespace {namespace})"), e);
        let mut schedule = ShredSchedule {
            keys: Vec::new(),
            due: plinth_codec::rfc3339(due),
        };
        let keys = self.namespace_keys(namespace).map_err(failed)?;
        // The key that seals for the namespace must be among those found, or keys this
        // principal cannot read would live on while the deletion says they are shredded.
        let alias = self.namespace_alias(namespace);
        if let Some(current) = self.describe(&alias).map_err(failed)?.map(|m| arn_of(&m))
            && !keys.iter().any(|(arn, _)| *arn == current)
        {
            return Err(failed(KmsError::Shredding(format!(
                "namespace {namespace:?}: its alias {alias} names {current}, which is not \
                 readable as this installation's key of the namespace (its tags); nothing was \
                 scheduled"
            ))));
        }
        for (arn, tags) in keys {
            if tags.contains_key(TAG_SHREDDED) {
                continue;
            }
            match tags.get(TAG_SHRED_DUE) {
                Some(first) => schedule.due.clone_from(first),
                None => self
                    .tag(
                        &arn,
                        &[
                            (TAG_SHRED_DUE, &schedule.due),
                            (TAG_SHRED_BY, &tag_value(by)),
                        ],
                    )
                    .map_err(failed)?,
            }
            schedule.keys.push(arn);
        }
        Ok(schedule)
    }

    /// Tags each due key as shredded (its due mark read again first, so a restore that
    /// got there before wins), then disables it and has KMS delete it after its shortest
    /// window; once no key of the namespace lives, its alias goes, so a namespace made again
    /// gets a new key. Each step is skipped when an earlier try took it.
    fn shred_due(&self, namespace: &str) -> Result<ShredOutcome, CodecError> {
        let failed = |e: KmsError| provider_error(&format!("(namespace {namespace})"), e);
        let now = SystemTime::now();
        let keys = self.namespace_keys(namespace).map_err(failed)?;
        let alias = self.namespace_alias(namespace);
        if keys.is_empty() && self.describe(&alias).map_err(failed)?.is_some() {
            return Err(failed(KmsError::Shredding(format!(
                "namespace {namespace:?}: no key of it is readable as this installation's, \
                 yet its alias {alias} still names one; nothing was shredded"
            ))));
        }
        let (mut shredded, mut live, mut now_shredded) = (Vec::new(), false, false);
        for (arn, tags) in &keys {
            let Some(mark) = shred_mark(tags) else {
                live = true;
                continue;
            };
            if mark.shredded.is_none() {
                if !is_due(&mark, now).map_err(failed)? {
                    return Ok(ShredOutcome::NotYet(mark.due));
                }
                // Gone or unreadable now is not "restored": the shredding stops and is
                // tried again.
                let again = self.own_tags(arn).map_err(failed)?.ok_or_else(|| {
                    failed(KmsError::Shredding(format!(
                        "key {arn}: its tags can no longer be read; not shredded yet"
                    )))
                })?;
                if shred_mark(&again).is_none() {
                    live = true;
                    continue;
                }
                self.tag(arn, &[(TAG_SHREDDED, &plinth_codec::rfc3339(now))])
                    .map_err(failed)?;
                now_shredded = true;
            }
            let state = self
                .describe(arn)
                .map_err(failed)?
                .and_then(|meta| meta.key_state().cloned());
            match state {
                Some(KmsKeyState::Enabled) => {
                    self.call("DisableKey", arn, |c| c.disable_key().key_id(arn).send())
                        .map_err(failed)?;
                    self.schedule_deletion(arn).map_err(failed)?;
                }
                Some(KmsKeyState::Disabled) => self.schedule_deletion(arn).map_err(failed)?,
                // Done by an earlier try, or by KMS itself.
                Some(KmsKeyState::PendingDeletion) | None => {}
                Some(other) => {
                    return Err(failed(KmsError::Shredding(format!(
                        "key {arn} is {}: not shredded yet; tried again later",
                        other.as_str()
                    ))));
                }
            }
            shredded.push(arn.clone());
        }
        // Nothing was due and a key lives: the deletion was restored (earlier lives' shredded
        // keys are no news).
        if live && !now_shredded {
            return Ok(ShredOutcome::Restored);
        }
        if !live {
            let deleted = self.run(self.client.delete_alias().alias_name(&alias).send());
            match deleted {
                Err(e)
                    if !e
                        .as_service_error()
                        .is_some_and(|e| e.is_not_found_exception()) =>
                {
                    return Err(failed(call_error("DeleteAlias", &alias, e)));
                }
                _ => self.forget(&alias),
            }
        }
        Ok(ShredOutcome::Shredded(shredded))
    }

    fn restore(&self, namespace: &str) -> Result<Vec<String>, CodecError> {
        let failed = |e: KmsError| provider_error(&format!("(namespace {namespace})"), e);
        let (mut restored, mut gone) = (Vec::new(), None);
        let keys = self.namespace_keys(namespace).map_err(failed)?;
        let now = SystemTime::now();
        for (arn, tags) in keys {
            match shred_mark(&tags) {
                Some(mark) if mark.shredded.is_some() => gone = Some(mark),
                // Its time has come, or nearly (clocks differ): the worker may be shredding
                // it now, so a restore could not keep the promise it makes.
                Some(mark) if is_due(&mark, now + RESTORE_MARGIN).map_err(failed)? => {
                    return Err(failed(KmsError::Shredding(format!(
                        "namespace {namespace:?}: its keys were due to be shredded at {}; a \
                         key being shredded cannot be restored",
                        mark.due
                    ))));
                }
                Some(_) => {
                    self.call("UntagResource", &arn, |c| {
                        c.untag_resource()
                            .key_id(&arn)
                            .tag_keys(TAG_SHRED_DUE)
                            .tag_keys(TAG_SHRED_BY)
                            .send()
                    })
                    .map_err(failed)?;
                    restored.push(arn);
                }
                None => {}
            }
        }
        if restored.is_empty() {
            return Err(failed(KmsError::Shredding(
                plinth_codec::nothing_to_restore(namespace, gone.as_ref()),
            )));
        }
        Ok(restored)
    }
}
