//! What identity providers pushed, read back as the platform's directory.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use plinth_directory::{DirectoryError, Snapshot, Source, UserStatus};
use serde_json::Value;

use crate::{Kind, Resource, ScimStore};

/// The [`Source`] of `[directory] source = "scim"`: the Users and Groups in a store.
#[derive(Debug, Clone)]
pub struct ScimDirectory {
    store: Arc<dyn ScimStore>,
}

impl ScimDirectory {
    pub fn new(store: Arc<dyn ScimStore>) -> Self {
        Self { store }
    }
}

/// The address Plinth knows a person by: the primary e-mail, else the first, else a
/// `userName` that is an address.
fn email(user: &Resource) -> Option<String> {
    let emails = user.attributes.get("emails").and_then(Value::as_array);
    let chosen = emails.and_then(|emails| {
        emails
            .iter()
            .find(|e| e.get("primary") == Some(&Value::Bool(true)))
            .or_else(|| emails.first())
            .and_then(|e| e.get("value"))
            .and_then(Value::as_str)
    });
    chosen
        .or_else(|| Some(user.name()).filter(|name| name.contains('@')))
        .map(str::to_ascii_lowercase)
}

/// Builds the directory from every User and Group. Fails closed where the data is
/// ambiguous: an address two Users share reads as departed, and a group name two Groups
/// share has no members.
pub(crate) fn snapshot(users: &[Resource], groups: &[Resource]) -> Snapshot {
    let mut people: HashMap<String, UserStatus> = HashMap::new();
    let mut emails_by_id: HashMap<&str, String> = HashMap::new();
    let mut shared = HashSet::new();
    for user in users {
        let Some(email) = email(user) else {
            continue;
        };
        let active = user.attributes.get("active") != Some(&Value::Bool(false));
        let status = if active {
            UserStatus::Active
        } else {
            UserStatus::Departed
        };
        if people.insert(email.clone(), status).is_some() {
            shared.insert(email.clone());
        }
        emails_by_id.insert(&user.id, email);
    }
    for email in shared {
        tracing::error!(%email, "two SCIM Users share this address: it has no access");
        people.insert(email, UserStatus::Departed);
    }
    let names_by_id: HashMap<&str, &str> =
        groups.iter().map(|g| (g.id.as_str(), g.name())).collect();
    let mut seen = HashSet::new();
    let twice: HashSet<&str> = groups
        .iter()
        .map(Resource::name)
        .filter(|name| !seen.insert(*name))
        .collect();
    let groups = groups.iter().map(|group| {
        let mut members = Vec::new();
        let mut nested = Vec::new();
        if twice.contains(group.name()) {
            tracing::error!(
                group = group.name(),
                "two SCIM Groups share this name: it has no members"
            );
        } else {
            let values = group.attributes.get("members").and_then(Value::as_array);
            for id in values
                .into_iter()
                .flatten()
                .filter_map(|m| m.get("value")?.as_str())
            {
                if let Some(email) = emails_by_id.get(id) {
                    members.push(email.clone());
                } else if let Some(name) = names_by_id.get(id) {
                    nested.push((*name).to_owned());
                }
            }
        }
        (group.name().to_owned(), members, nested)
    });
    Snapshot::from_parts(people, groups)
}

#[async_trait::async_trait]
impl Source for ScimDirectory {
    fn name(&self) -> String {
        "SCIM".to_owned()
    }

    async fn fetch(&self) -> Result<Snapshot, DirectoryError> {
        let read = |kind: Kind| {
            let store = self.store.clone();
            async move {
                store
                    .list(kind, None)
                    .await
                    .map_err(|e| DirectoryError::Scim {
                        message: format!("reading {}: {e}", kind.endpoint()),
                    })
            }
        };
        let (users, groups) = tokio::try_join!(read(Kind::User), read(Kind::Group))?;
        Ok(snapshot(&users, &groups))
    }
}

#[cfg(test)]
mod tests {
    use plinth_directory::Directory;
    use plinth_identity::Identity;
    use serde_json::json;

    use super::*;

    fn resource(kind: Kind, id: &str, attributes: Value) -> Resource {
        Resource {
            kind,
            id: id.into(),
            version: 1,
            created: String::new(),
            modified: String::new(),
            attributes: attributes.as_object().cloned().unwrap(),
        }
    }

    #[test]
    fn members_by_id_nested_groups_and_inactive_people() {
        let users = [
            resource(
                Kind::User,
                "u1",
                json!({"userName": "ann", "emails": [{"value": "b@x"}, {"value": "Ann@X", "primary": true}]}),
            ),
            resource(
                Kind::User,
                "u2",
                json!({"userName": "bob@x", "active": false}),
            ),
            resource(Kind::User, "u3", json!({"userName": "no-address"})),
        ];
        let groups = [
            resource(
                Kind::Group,
                "g1",
                json!({"displayName": "team", "members": [{"value": "u1"}, {"value": "u2"}, {"value": "u3"}, {"value": "gone"}]}),
            ),
            resource(
                Kind::Group,
                "g2",
                json!({"displayName": "all", "members": [{"value": "g1", "type": "Group"}]}),
            ),
        ];
        let directory = snapshot(&users, &groups);
        let ann = Identity::User {
            email: "ann@x".into(),
        };
        assert!(directory.is_member(&ann, "all"));
        assert!(!directory.is_active("bob@x"));
        assert_eq!(
            directory
                .active_members("team")
                .into_iter()
                .collect::<Vec<_>>(),
            ["ann@x"]
        );
        assert_eq!(directory.people(), 2);
    }

    #[test]
    fn shared_addresses_and_shared_group_names_fail_closed() {
        let users = [
            resource(Kind::User, "u1", json!({"userName": "ann@x"})),
            resource(
                Kind::User,
                "u2",
                json!({"userName": "other", "emails": [{"value": "ann@x"}]}),
            ),
            resource(Kind::User, "u3", json!({"userName": "cy@x"})),
        ];
        let groups = [
            resource(
                Kind::Group,
                "g1",
                json!({"displayName": "team", "members": [{"value": "u3"}]}),
            ),
            resource(Kind::Group, "g2", json!({"displayName": "team"})),
        ];
        let directory = snapshot(&users, &groups);
        assert!(!directory.is_active("ann@x"));
        assert!(directory.group_exists("team"));
        assert!(directory.active_members("team").is_empty());
    }
}
