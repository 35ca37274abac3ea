/// Why a payload could not be encoded or decoded. Each variant names a different cause, so a
/// caller (and the codec server's 400 answer) can tell them apart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The payload was encrypted for another namespace.
    #[error("payload belongs to namespace {found:?}, not {expected:?}")]
    WrongNamespace {
        /// The namespace of the request.
        expected: String,
        /// The namespace the payload was sealed for.
        found: String,
    },
    /// Authentication failed: ciphertext, associated data or wrapped data key were altered.
    #[error("payload failed authentication under key {key_id:?}: it was altered")]
    Tampered {
        /// The key the payload names.
        key_id: String,
    },
    /// The key ring has no key with this id.
    #[error("unknown key id {0:?}")]
    UnknownKey(String),
    /// The ciphertext is shorter than a nonce and a tag.
    #[error("encrypted payload is truncated: {len} bytes, at least 28 needed")]
    Truncated {
        /// Bytes present.
        len: usize,
    },
    /// Encryption metadata is missing or unreadable, or the sealed payload does not parse.
    #[error("malformed encrypted payload: {0}")]
    Malformed(String),
    /// The key ring holds no active key to wrap new data keys with.
    #[error("no active key encryption key: run `plinth keys init`")]
    NoActiveKey,
    /// Namespaces have keys of their own (`[keys] per_namespace`) and this one has none yet.
    #[error(
        "namespace {0:?} has no key encryption key of its own yet: it is made as the namespace \
         is provisioned"
    )]
    NoNamespaceKey(String),
    /// The key provider (a KMS or an HSM) could not be used: nothing was sealed or opened.
    #[error("key provider {provider}, key {key}: {reason}")]
    Provider {
        /// Which provider.
        provider: &'static str,
        /// The key asked for.
        key: String,
        /// What failed.
        reason: String,
    },
    /// The key was destroyed on purpose (its namespace deleted with `spec.shredOnDelete`):
    /// nothing it protected opens again, anywhere.
    #[error(
        "key {key_id:?} of namespace {namespace:?} was shredded at {at} by {by}: what it \
         protected can no longer be opened"
    )]
    Shredded {
        /// The key the payload names.
        key_id: String,
        /// The namespace whose key it was.
        namespace: String,
        /// When it was destroyed (RFC 3339).
        at: String,
        /// Who deleted the namespace.
        by: String,
    },
    /// The system random source or the cipher failed.
    #[error("cryptographic failure: {0}")]
    Crypto(&'static str),
}
