//! Who exists and who belongs to which group. The YAML file provider is the default; real
//! directories are further implementations of [`Directory`].

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use plinth_identity::Identity;
use serde::Deserialize;

/// People and groups, as the platform needs them.
pub trait Directory: Send + Sync + std::fmt::Debug {
    /// Whether `group` exists.
    fn group_exists(&self, group: &str) -> bool;
    /// Whether `identity` is an active member of `group`, directly or through nested groups.
    fn is_member(&self, identity: &Identity, group: &str) -> bool;
}

/// Why a directory file was rejected.
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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DirectoryFile {
    #[serde(default)]
    users: Vec<UserEntry>,
    #[serde(default)]
    groups: Vec<GroupEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    email: String,
    #[serde(default)]
    status: UserStatus,
}

/// Whether a person still works here.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserStatus {
    /// Employed: group memberships count.
    #[default]
    Active,
    /// Left the company: no access, whatever the groups say.
    Departed,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupEntry {
    name: String,
    #[serde(default)]
    members: Vec<String>,
    /// Nested groups whose members belong to this one too.
    #[serde(default)]
    groups: Vec<String>,
}

/// A directory read from a YAML file of `users` and `groups`.
#[derive(Debug, Default)]
pub struct FileDirectory {
    users: HashMap<String, UserStatus>,
    groups: HashMap<String, (Vec<String>, Vec<String>)>,
}

impl FileDirectory {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Self, DirectoryError> {
        let text = std::fs::read_to_string(path).map_err(|source| DirectoryError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|message| DirectoryError::Invalid {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses directory YAML; every member and nested group must be defined in the file.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: DirectoryFile = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        let mut users = HashMap::new();
        for (i, user) in file.users.into_iter().enumerate() {
            let email = user.email.to_ascii_lowercase();
            if Identity::user(&email).is_err() {
                return Err(format!(
                    "users[{i}].email: {email:?} is not an e-mail address"
                ));
            }
            if users.insert(email.clone(), user.status).is_some() {
                return Err(format!("users[{i}]: {email} is listed twice"));
            }
        }
        let names: HashSet<&str> = file.groups.iter().map(|g| g.name.as_str()).collect();
        for (i, group) in file.groups.iter().enumerate() {
            for (j, member) in group.members.iter().enumerate() {
                if !users.contains_key(&member.to_ascii_lowercase()) {
                    return Err(format!(
                        "groups[{i}].members[{j}]: {member} is not in users"
                    ));
                }
            }
            for (j, nested) in group.groups.iter().enumerate() {
                if !names.contains(nested.as_str()) {
                    return Err(format!("groups[{i}].groups[{j}]: no group named {nested}"));
                }
            }
        }
        let groups = file
            .groups
            .into_iter()
            .map(|g| {
                let members = g.members.iter().map(|m| m.to_ascii_lowercase()).collect();
                (g.name, (members, g.groups))
            })
            .collect();
        Ok(Self { users, groups })
    }
}

impl Directory for FileDirectory {
    fn group_exists(&self, group: &str) -> bool {
        self.groups.contains_key(group)
    }

    fn is_member(&self, identity: &Identity, group: &str) -> bool {
        let Identity::User { email } = identity else {
            return false;
        };
        if self.users.get(email) != Some(&UserStatus::Active) {
            return false;
        }
        // Breadth-first over nested groups; `seen` makes cycles harmless.
        let mut seen = HashSet::new();
        let mut queue = vec![group];
        while let Some(name) = queue.pop() {
            if !seen.insert(name) {
                continue;
            }
            let Some((members, nested)) = self.groups.get(name) else {
                continue;
            };
            if members.contains(email) {
                return true;
            }
            queue.extend(nested.iter().map(String::as_str));
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
users:
  - email: dev@example.com
  - email: alice@example.com
  - email: bob@example.com
    status: departed
groups:
  - name: temporal-dev
    members: [dev@example.com]
  - name: payments-team@example.com
    members: [bob@example.com]
    groups: [payments-oncall]
  - name: payments-oncall
    members: [alice@example.com]
    groups: [payments-team@example.com]
"#;

    fn user(email: &str) -> Identity {
        Identity::user(email).unwrap()
    }

    #[test]
    fn nested_membership_with_a_cycle() {
        let dir = FileDirectory::parse(SAMPLE).unwrap();
        assert!(dir.is_member(&user("alice@example.com"), "payments-team@example.com"));
        assert!(!dir.is_member(&user("dev@example.com"), "payments-team@example.com"));
        assert!(dir.group_exists("temporal-dev"));
        assert!(!dir.group_exists("nobody"));
    }

    #[test]
    fn departed_people_belong_nowhere() {
        let dir = FileDirectory::parse(SAMPLE).unwrap();
        assert!(!dir.is_member(&user("bob@example.com"), "payments-team@example.com"));
    }

    #[test]
    fn dangling_references_are_named() {
        let err = FileDirectory::parse("groups:\n  - name: a\n    members: [x@example.com]\n")
            .unwrap_err();
        assert!(err.contains("groups[0].members[0]"), "{err}");
        let err = FileDirectory::parse("groups:\n  - name: a\n    groups: [b]\n").unwrap_err();
        assert!(err.contains("groups[0].groups[0]"), "{err}");
    }
}
