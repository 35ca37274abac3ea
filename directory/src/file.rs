//! The YAML file source: `users` and `groups`, every reference checked, followed on disk.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use plinth_identity::Identity;
use serde::Deserialize;

use crate::snapshot::Group;
use crate::{Directory, DirectoryError, Size, Snapshot, UserStatus};

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

impl Snapshot {
    /// Reads and checks `path`.
    pub fn load_yaml(path: &Path) -> Result<Self, DirectoryError> {
        let text = std::fs::read_to_string(path).map_err(|source| DirectoryError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_yaml(&text).map_err(|message| DirectoryError::Invalid {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses directory YAML; every member and nested group must be defined in the file.
    pub fn from_yaml(text: &str) -> Result<Self, String> {
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
                let group = Group {
                    members,
                    groups: g.groups,
                };
                (g.name, group)
            })
            .collect();
        Ok(Self::new(users, groups))
    }
}

/// What identifies one version of a file on disk.
type FileStamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> FileStamp {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

/// A [`Snapshot`] that follows its file: [`WatchedDirectory::refresh`] re-reads it when
/// it changed on disk. A file that fails to load is reported and the last good one stays in
/// force.
#[derive(Debug)]
pub struct WatchedDirectory {
    path: PathBuf,
    /// The directory in force, and the stamp of the last version tried (good or not).
    state: RwLock<(Arc<Snapshot>, FileStamp)>,
}

impl WatchedDirectory {
    /// Loads `path`; it must be valid at start.
    pub fn load(path: &Path) -> Result<Self, DirectoryError> {
        let seen = stamp(path);
        let directory = Snapshot::load_yaml(path)?;
        Ok(Self {
            path: path.to_owned(),
            state: RwLock::new((Arc::new(directory), seen)),
        })
    }

    fn read_now(&self) -> Result<(), DirectoryError> {
        let now = stamp(&self.path);
        let directory = Snapshot::load_yaml(&self.path)?;
        *self.state.write().expect("directory lock") = (Arc::new(directory), now);
        Ok(())
    }

    fn current(&self) -> Arc<Snapshot> {
        self.state.read().expect("directory lock").0.clone()
    }
}

#[async_trait::async_trait]
impl Directory for WatchedDirectory {
    fn group_exists(&self, group: &str) -> bool {
        self.current().group_exists(group)
    }

    fn is_member(&self, identity: &Identity, group: &str) -> bool {
        self.current().is_member(identity, group)
    }

    fn active_members(&self, group: &str) -> BTreeSet<String> {
        self.current().active_members(group)
    }

    fn is_active(&self, email: &str) -> bool {
        self.current().is_active(email)
    }

    /// Compares the file's modification time and size with the last version tried.
    fn refresh(&self) -> Result<bool, DirectoryError> {
        let now = stamp(&self.path);
        if self.state.read().expect("directory lock").1 == now {
            return Ok(false);
        }
        self.state.write().expect("directory lock").1 = now;
        self.read_now().map(|()| true)
    }

    async fn reload(&self, _floor: Option<Size>) -> Result<Size, DirectoryError> {
        self.read_now()?;
        Ok(self.current().size())
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
        let dir = Snapshot::from_yaml(SAMPLE).unwrap();
        assert!(dir.is_member(&user("alice@example.com"), "payments-team@example.com"));
        assert!(!dir.is_member(&user("dev@example.com"), "payments-team@example.com"));
        assert!(dir.group_exists("temporal-dev"));
        assert!(!dir.group_exists("nobody"));
    }

    #[test]
    fn members_expand_nested_groups_once() {
        let dir = Snapshot::from_yaml(SAMPLE).unwrap();
        let members: Vec<String> = dir
            .active_members("payments-team@example.com")
            .into_iter()
            .collect();
        assert_eq!(
            members,
            ["alice@example.com"],
            "bob departed, alice via the cycle"
        );
        assert!(dir.active_members("nobody").is_empty());
    }

    #[test]
    fn a_bad_new_file_keeps_the_last_good_one() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), SAMPLE).unwrap();
        let dir = WatchedDirectory::load(file.path()).unwrap();
        assert!(!dir.refresh().unwrap(), "unchanged file is not re-read");
        std::fs::write(file.path(), "users: [oops").unwrap();
        let err = dir.refresh().unwrap_err().to_string();
        assert!(err.contains(&file.path().display().to_string()), "{err}");
        assert!(
            dir.group_exists("temporal-dev"),
            "previous directory in force"
        );
        assert!(
            !dir.refresh().unwrap(),
            "the same bad file is reported once"
        );
        let fixed = SAMPLE.replace("temporal-dev", "platform-admins");
        std::fs::write(file.path(), fixed).unwrap();
        assert!(dir.refresh().unwrap());
        assert!(dir.group_exists("platform-admins"));
    }

    #[test]
    fn departed_people_belong_nowhere() {
        let dir = Snapshot::from_yaml(SAMPLE).unwrap();
        assert!(!dir.is_member(&user("bob@example.com"), "payments-team@example.com"));
    }

    #[test]
    fn dangling_references_are_named() {
        let err = Snapshot::from_yaml("groups:\n  - name: a\n    members: [x@example.com]\n")
            .unwrap_err();
        assert!(err.contains("groups[0].members[0]"), "{err}");
        let err = Snapshot::from_yaml("groups:\n  - name: a\n    groups: [b]\n").unwrap_err();
        assert!(err.contains("groups[0].groups[0]"), "{err}");
    }
}
