//! Who exists and who belongs to which group, for the platform's checks and access runs.
//!
//! Every source (a YAML file, LDAP) produces a [`Snapshot`]; what sits above the
//! [`Directory`] trait never knows which one is in force. A source that fails, or hands back
//! far fewer people than the snapshot in force, leaves that snapshot in force: an outage of
//! the company's directory never revokes everyone.

#![forbid(unsafe_code)]

mod file;
mod ldap;
mod polled;
mod snapshot;

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use plinth_identity::Identity;

pub use file::WatchedDirectory;
pub use ldap::{LdapDirectory, LdapSettings, Membership};
pub use polled::{PolledDirectory, Source};
pub use snapshot::{Snapshot, UserStatus};

/// People and groups, as the platform needs them.
#[async_trait::async_trait]
pub trait Directory: Send + Sync + std::fmt::Debug {
    /// Whether `group` exists.
    fn group_exists(&self, group: &str) -> bool;
    /// Whether `identity` is an active member of `group`, directly or through nested groups.
    fn is_member(&self, identity: &Identity, group: &str) -> bool;
    /// E-mail addresses of the active members of `group`, nested groups included.
    fn active_members(&self, group: &str) -> BTreeSet<String>;
    /// Whether the person with `email` is listed and active.
    fn is_active(&self, email: &str) -> bool;
    /// Takes up a new version of the source if one is ready, without waiting on the network:
    /// `Ok(true)` when a new version is in force since the last call. An invalid new version is
    /// an error and the previous one stays in force.
    fn refresh(&self) -> Result<bool, DirectoryError> {
        Ok(false)
    }
    /// Reads the source now; on an error the previous version stays in force. A read that
    /// shrank the directory implausibly is taken when it is still plausible against `floor`
    /// (a floor of zero takes any read). Gives the size of the directory then in force.
    async fn reload(&self, _floor: Option<Size>) -> Result<Size, DirectoryError> {
        Ok(Size::default())
    }
}

/// How many people and group memberships (direct members and nested groups) a directory
/// lists: what the guard against an implausibly small read compares.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Size {
    pub people: usize,
    pub memberships: usize,
}

/// Why a new version of the directory was not taken up. Never carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// The file could not be read.
    #[error("directory {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The file is not valid directory YAML or refers to unknown entries.
    #[error("directory {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the entry.
        message: String,
    },
    /// A setting of `[directory.ldap]` cannot be used.
    #[error("[directory.ldap] {setting}: {message}")]
    Setting {
        /// The setting, without its section.
        setting: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The LDAP server could not be reached, refused the bind, or failed a search.
    #[error("LDAP {url}: {message}")]
    Ldap {
        /// The server.
        url: String,
        /// What failed, in the client's or the server's words.
        message: String,
    },
    /// What SCIM clients pushed could not be read back.
    #[error("SCIM: {message}")]
    Scim {
        /// What failed.
        message: String,
    },
    /// The source answered with implausibly few people: more likely an outage or a wrong
    /// filter than the company shrinking.
    #[error(
        "{source_name} lists {count} {what}, under {share}% of the {in_force} in force \
         ([directory] min_share); the previous directory stays in force (`plinth directory \
         reload --force` takes it)"
    )]
    Shrunk {
        /// Where the new version came from.
        source_name: String,
        /// What shrank: `people`, or `group memberships`.
        what: &'static str,
        /// How many the new version has.
        count: usize,
        /// How many the version in force has.
        in_force: usize,
        /// The smallest share taken, in percent.
        share: u32,
    },
}
