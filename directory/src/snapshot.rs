//! One version of the directory, held in memory: every check is a lookup.

use std::collections::{BTreeSet, HashMap, HashSet};

use plinth_identity::Identity;
use serde::Deserialize;

use crate::{Directory, Size};

/// Whether a person still works here.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserStatus {
    /// Employed: group memberships count.
    #[default]
    Active,
    /// Left the company, or the account is disabled: no access, whatever the groups say.
    Departed,
}

/// A group's direct members (lower-case e-mail addresses) and the groups nested in it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Group {
    pub(crate) members: Vec<String>,
    pub(crate) groups: Vec<String>,
}

/// People by lower-case e-mail address, and groups by name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Snapshot {
    users: HashMap<String, UserStatus>,
    groups: HashMap<String, Group>,
}

impl Snapshot {
    /// A snapshot of `users` and `groups`; member lists are kept sorted and without repeats,
    /// so two reads of the same directory compare equal.
    pub(crate) fn new(users: HashMap<String, UserStatus>, groups: HashMap<String, Group>) -> Self {
        let groups = groups
            .into_iter()
            .map(|(name, mut group)| {
                group.members.sort_unstable();
                group.members.dedup();
                group.groups.sort_unstable();
                group.groups.dedup();
                (name, group)
            })
            .collect();
        Self { users, groups }
    }

    /// A snapshot of people by e-mail address, and of groups by name, each with its direct
    /// members' e-mail addresses and the names of the groups nested in it.
    pub fn from_parts(
        users: impl IntoIterator<Item = (String, UserStatus)>,
        groups: impl IntoIterator<Item = (String, Vec<String>, Vec<String>)>,
    ) -> Self {
        let users = users
            .into_iter()
            .map(|(email, status)| (email.to_ascii_lowercase(), status))
            .collect();
        let groups = groups
            .into_iter()
            .map(|(name, members, groups)| {
                let members = members.iter().map(|m| m.to_ascii_lowercase()).collect();
                (name, Group { members, groups })
            })
            .collect();
        Self::new(users, groups)
    }

    /// How many people are listed, departed ones included.
    pub fn people(&self) -> usize {
        self.users.len()
    }

    /// How many groups are listed.
    pub fn groups(&self) -> usize {
        self.groups.len()
    }

    /// How many people and memberships (direct members and nested groups) it lists.
    pub fn size(&self) -> Size {
        Size {
            people: self.users.len(),
            memberships: self
                .groups
                .values()
                .map(|group| group.members.len() + group.groups.len())
                .sum(),
        }
    }

    /// `group` and every group nested in it, each once: a cycle ends where it closes.
    fn groups_within<'a>(&'a self, group: &'a str) -> impl Iterator<Item = &'a Group> + 'a {
        let mut seen = HashSet::new();
        let mut queue = vec![group];
        std::iter::from_fn(move || {
            while let Some(name) = queue.pop() {
                if !seen.insert(name) {
                    continue;
                }
                if let Some(entry) = self.groups.get(name) {
                    queue.extend(entry.groups.iter().map(String::as_str));
                    return Some(entry);
                }
            }
            None
        })
    }
}

impl Directory for Snapshot {
    fn group_exists(&self, group: &str) -> bool {
        self.groups.contains_key(group)
    }

    fn is_member(&self, identity: &Identity, group: &str) -> bool {
        let Identity::User { email } = identity else {
            return false;
        };
        self.is_active(email)
            && self
                .groups_within(group)
                .any(|entry| entry.members.binary_search(email).is_ok())
    }

    fn active_members(&self, group: &str) -> BTreeSet<String> {
        self.groups_within(group)
            .flat_map(|entry| &entry.members)
            .filter(|email| self.is_active(email))
            .cloned()
            .collect()
    }

    fn is_active(&self, email: &str) -> bool {
        self.users.get(&email.to_ascii_lowercase()) == Some(&UserStatus::Active)
    }
}
