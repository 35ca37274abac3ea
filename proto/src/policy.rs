//! Access policies: the two Plinth seeds per namespace and the vocabulary of access levels.

use std::fmt;

use crate::v1::{Policy, Rule};

/// Values of `Policy.access` and `AccessGrant.access`.
pub mod access {
    /// Start, signal, complete tasks: everything but administration.
    pub const WRITE: &str = "write";
    /// Describe, list, query, read history.
    pub const READ: &str = "read";
    /// Held by other means (the platform itself); Plinth never grants it.
    pub const ADMIN: &str = "admin";
}

/// The policy granting write on Temporal namespace `namespace`.
pub fn writers_policy_name(namespace: &str) -> String {
    format!("TEMPORAL-ns-{namespace}")
}

/// The policy granting read on Temporal namespace `namespace`.
pub fn readers_policy_name(namespace: &str) -> String {
    format!("TEMPORAL-ns-{namespace}-readers")
}

/// The writers and readers policies Plinth seeds for a namespace: owned by the platform admin
/// group, edited by the namespace's owner group, with no rules.
pub fn seeded_policies(namespace: &str, admin_group: &str, owner_group: &str) -> [Policy; 2] {
    let policy = |name: String, access: &str| Policy {
        name,
        owner: admin_group.to_owned(),
        editors: vec![owner_group.to_owned()],
        rules: Vec::new(),
        namespace: namespace.to_owned(),
        access: access.to_owned(),
    };
    [
        policy(writers_policy_name(namespace), access::WRITE),
        policy(readers_policy_name(namespace), access::READ),
    ]
}

impl Rule {
    /// The rule as stored: e-mail addresses lower-cased, so one person is one rule.
    pub fn canonical(&self) -> Rule {
        Rule {
            user: self.user.to_ascii_lowercase(),
            ..self.clone()
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts = [
            ("user", &self.user),
            ("group", &self.group),
            ("app", &self.app),
        ];
        let set: Vec<String> = parts
            .iter()
            .filter(|(_, value)| !value.is_empty())
            .map(|(kind, value)| format!("{kind}:{value}"))
            .collect();
        match set.as_slice() {
            [] => f.write_str("(empty rule)"),
            _ => f.write_str(&set.join(",")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_are_owned_by_admins_and_edited_by_the_owner_group() {
        let [writers, readers] = seeded_policies("fancy-test", "temporal-dev", "payments");
        assert_eq!(writers.name, "TEMPORAL-ns-fancy-test");
        assert_eq!(readers.name, "TEMPORAL-ns-fancy-test-readers");
        assert_eq!(
            (writers.access.as_str(), readers.access.as_str()),
            ("write", "read")
        );
        for policy in [writers, readers] {
            assert_eq!(policy.owner, "temporal-dev");
            assert_eq!(policy.editors, ["payments"]);
            assert!(policy.rules.is_empty());
        }
    }

    #[test]
    fn rules_print_as_kind_and_value() {
        let rule = Rule {
            group: "payments".into(),
            ..Default::default()
        };
        assert_eq!(rule.to_string(), "group:payments");
        assert_eq!(Rule::default().to_string(), "(empty rule)");
    }
}
