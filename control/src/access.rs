//! From policies to an access list: who may use a namespace, and the fewest changes that get
//! the backend there.

use std::collections::BTreeMap;

use plinth_identity::Identity;
use plinth_proto::FieldError;
use plinth_proto::v1::{AccessSummary, Policy, Rule};

use crate::backend::{AccessChange, AccessLevel};
use crate::directory::Directory;

/// Checks that `rule` names exactly one thing, and that it exists: a valid e-mail, a
/// directory group, or a valid app name. Returns the rule as stored.
pub fn validate_rule(rule: &Rule, directory: &dyn Directory) -> Result<Rule, FieldError> {
    let invalid = |field: &str, message: String| FieldError {
        field: format!("rule.{field}"),
        message,
    };
    let set = [&rule.user, &rule.group, &rule.app]
        .iter()
        .filter(|v| !v.is_empty())
        .count();
    if set != 1 {
        return Err(invalid(
            "",
            format!("set exactly one of user, group or app (found {set})"),
        ));
    }
    if !rule.user.is_empty() {
        Identity::user(&rule.user).map_err(|e| invalid("user", e.to_string()))?;
    } else if !rule.group.is_empty() {
        if !directory.group_exists(&rule.group) {
            return Err(invalid(
                "group",
                format!("{:?} is not a group in the directory", rule.group),
            ));
        }
    } else {
        Identity::app(&rule.app).map_err(|e| invalid("app", e.to_string()))?;
    }
    Ok(rule.canonical())
}

/// The access `policies` give, through the directory as it is now: groups expand to their
/// active members (nested groups included), named people count only while active, apps
/// always. Write wins over read; a policy naming another level grants nothing.
pub fn effective_access(
    policies: &[Policy],
    directory: &dyn Directory,
) -> BTreeMap<String, AccessLevel> {
    let mut access = BTreeMap::new();
    for policy in policies {
        let level = match AccessLevel::parse(&policy.access) {
            Some(level @ (AccessLevel::Read | AccessLevel::Write)) => level,
            _ => continue,
        };
        let mut grant = |identity: Identity| {
            let entry = access.entry(identity.to_string()).or_insert(level);
            *entry = (*entry).max(level);
        };
        for rule in &policy.rules {
            if !rule.group.is_empty() {
                for email in directory.active_members(&rule.group) {
                    grant(Identity::User { email });
                }
            } else if !rule.user.is_empty() {
                if let Ok(identity) = Identity::user(&rule.user)
                    && directory.is_active(&rule.user)
                {
                    grant(identity);
                }
            } else if let Ok(identity) = Identity::app(&rule.app) {
                grant(identity);
            }
        }
    }
    access
}

/// The changes that take `current` to `desired`, and the summary counts. Admin access and
/// the access of anyone `keeps_access` protects (the platform admins) are never taken away
/// or lowered; admin is never granted because `desired` cannot hold it.
pub fn plan_access(
    current: &BTreeMap<String, AccessLevel>,
    desired: &BTreeMap<String, AccessLevel>,
    keeps_access: &dyn Fn(&str) -> bool,
) -> (Vec<AccessChange>, AccessSummary) {
    let mut changes = Vec::new();
    let mut summary = AccessSummary::default();
    for (identity, level) in desired {
        match current.get(identity) {
            None => {
                changes.push(AccessChange::Grant(identity.clone(), *level));
                summary.granted += 1;
            }
            Some(held) if held == level || *held == AccessLevel::Admin => summary.unchanged += 1,
            Some(held) if *held > *level && keeps_access(identity) => summary.unchanged += 1,
            Some(_) => {
                changes.push(AccessChange::Change(identity.clone(), *level));
                summary.changed += 1;
            }
        }
    }
    for (identity, held) in current {
        if desired.contains_key(identity) {
            continue;
        }
        if *held == AccessLevel::Admin || keeps_access(identity) {
            summary.unchanged += 1;
        } else {
            changes.push(AccessChange::Revoke(identity.clone()));
            summary.revoked += 1;
        }
    }
    (changes, summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::Snapshot;

    const DIRECTORY: &str = r#"
users:
  - email: dev@example.com
  - email: alice@example.com
  - email: bob@example.com
  - email: carol@example.com
    status: departed
groups:
  - name: admins
    members: [dev@example.com]
  - name: payments
    members: [alice@example.com, carol@example.com]
    groups: [payments-oncall]
  - name: payments-oncall
    members: [bob@example.com]
    groups: [payments]
"#;

    fn directory() -> Snapshot {
        Snapshot::from_yaml(DIRECTORY).unwrap()
    }

    fn rule(kind: &str, value: &str) -> Rule {
        let mut rule = Rule::default();
        match kind {
            "user" => rule.user = value.into(),
            "group" => rule.group = value.into(),
            _ => rule.app = value.into(),
        }
        rule
    }

    fn policies(writers: Vec<Rule>, readers: Vec<Rule>) -> Vec<Policy> {
        let [mut w, mut r] = plinth_proto::policy::seeded_policies("ns", "admins", "payments");
        w.rules = writers;
        r.rules = readers;
        vec![w, r]
    }

    fn levels(pairs: &[(&str, AccessLevel)]) -> BTreeMap<String, AccessLevel> {
        pairs.iter().map(|(i, l)| ((*i).to_owned(), *l)).collect()
    }

    #[test]
    fn groups_expand_through_nesting_and_write_wins() {
        let policies = policies(
            vec![rule("group", "payments"), rule("app", "billing")],
            vec![
                rule("user", "Bob@Example.com"),
                rule("user", "dev@example.com"),
            ],
        );
        let access = effective_access(&policies, &directory());
        assert_eq!(
            access,
            levels(&[
                ("app:billing", AccessLevel::Write),
                ("user:alice@example.com", AccessLevel::Write),
                ("user:bob@example.com", AccessLevel::Write),
                ("user:dev@example.com", AccessLevel::Read),
            ]),
            "carol departed; bob is a writer through the nested group"
        );
    }

    #[test]
    fn departed_and_unknown_people_named_by_rules_get_nothing() {
        let policies = policies(
            vec![rule("user", "carol@example.com")],
            vec![rule("user", "nobody@example.com")],
        );
        assert!(effective_access(&policies, &directory()).is_empty());
    }

    #[test]
    fn plan_touches_only_what_differs() {
        let current = levels(&[
            ("user:a@x.com", AccessLevel::Write),
            ("user:b@x.com", AccessLevel::Read),
            ("user:gone@x.com", AccessLevel::Read),
            ("user:dev@x.com", AccessLevel::Write),
            ("app:platform", AccessLevel::Admin),
        ]);
        let desired = levels(&[
            ("user:a@x.com", AccessLevel::Write),
            ("user:b@x.com", AccessLevel::Write),
            ("user:new@x.com", AccessLevel::Read),
        ]);
        let keeps = |identity: &str| identity == "user:dev@x.com";
        let (changes, summary) = plan_access(&current, &desired, &keeps);
        assert_eq!(
            changes,
            [
                AccessChange::Change("user:b@x.com".into(), AccessLevel::Write),
                AccessChange::Grant("user:new@x.com".into(), AccessLevel::Read),
                AccessChange::Revoke("user:gone@x.com".into()),
            ]
        );
        assert_eq!(
            (
                summary.granted,
                summary.changed,
                summary.revoked,
                summary.unchanged
            ),
            (1, 1, 1, 3),
            "a unchanged, the admin app and the platform admin kept"
        );
        let (again, _) = plan_access(&desired, &desired, &keeps);
        assert!(again.is_empty());
    }

    #[test]
    fn rules_name_exactly_one_existing_thing() {
        let dir = directory();
        let err = |r: Rule| validate_rule(&r, &dir).unwrap_err().to_string();
        assert!(err(Rule::default()).contains("exactly one"));
        assert!(err(rule("group", "nope")).starts_with("rule.group"));
        assert!(err(rule("user", "not-an-email")).starts_with("rule.user"));
        assert!(err(rule("app", "Bad App")).starts_with("rule.app"));
        let both = Rule {
            user: "a@x.com".into(),
            group: "payments".into(),
            ..Default::default()
        };
        assert!(err(both).contains("found 2"));
        let stored = validate_rule(&rule("user", "Alice@Example.com"), &dir).unwrap();
        assert_eq!(stored.user, "alice@example.com");
    }
}
