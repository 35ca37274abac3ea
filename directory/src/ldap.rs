//! The LDAP source: people and groups read from Active Directory or OpenLDAP with paged
//! searches, over LDAPS or StartTLS only, nested groups followed through `member` or
//! `memberOf`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchEntry};
use plinth_identity::{Identity, Secret, SecretSource};
use serde::{Deserialize, Serialize};

use crate::snapshot::Group;
use crate::{DirectoryError, Snapshot, Source, UserStatus};

/// Entries one search may return: far above any company's directory, low enough that a
/// runaway filter cannot exhaust memory.
const MAX_ENTRIES: usize = 500_000;

/// How group membership is written in the directory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Membership {
    /// Groups list their members' DNs, people and groups alike (`member`, `uniqueMember`).
    #[default]
    Member,
    /// People and groups list the DNs of the groups they belong to (`memberOf`, as Active
    /// Directory and OpenLDAP's memberof overlay keep it).
    MemberOf,
}

/// `[directory.ldap]`: where the directory is and how people and groups are written in it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LdapSettings {
    /// `ldaps://host[:port]`, or `ldap://host[:port]` with `starttls = true`.
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS before binding.
    pub starttls: bool,
    /// PEM bundle the server's certificate must chain to (default: the system's roots).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// DN Plinth binds as; empty binds anonymously.
    pub bind_dn: String,
    /// File holding the bind password (read again when it changes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind_password_file: Option<PathBuf>,
    /// Where people are searched, with `user_filter`.
    pub user_base: String,
    pub user_filter: String,
    /// The attribute holding a person's e-mail address, which names them in Plinth.
    pub mail_attribute: String,
    /// The attribute telling a disabled account; required, `"none"` when the directory
    /// removes departed people instead of disabling them.
    pub status_attribute: String,
    /// Values of `status_attribute` (any case) that mean disabled.
    pub disabled_values: Vec<String>,
    /// Bits of a numeric `status_attribute` that mean disabled (Active Directory's
    /// `userAccountControl` uses 2).
    pub disabled_bits: u64,
    /// Where groups are searched, with `group_filter`.
    pub group_base: String,
    pub group_filter: String,
    /// The attribute holding the name policies and owners use for a group.
    pub group_name_attribute: String,
    pub membership: Membership,
    /// On groups, with `membership = "member"`: the members' DNs.
    pub member_attribute: String,
    /// On people and groups, with `membership = "memberOf"`: the DNs of their groups.
    pub member_of_attribute: String,
    /// Entries per page of a search.
    pub page_size: i32,
    /// How long one whole read may take, connecting included.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for LdapSettings {
    fn default() -> Self {
        Self {
            url: String::new(),
            starttls: false,
            ca: None,
            bind_dn: String::new(),
            bind_password_file: None,
            user_base: String::new(),
            user_filter: "(objectClass=inetOrgPerson)".into(),
            mail_attribute: "mail".into(),
            status_attribute: String::new(),
            disabled_values: vec!["disabled".into(), "departed".into(), "inactive".into()],
            disabled_bits: 0,
            group_base: String::new(),
            group_filter: "(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames))".into(),
            group_name_attribute: "cn".into(),
            membership: Membership::Member,
            member_attribute: "member".into(),
            member_of_attribute: "memberOf".into(),
            page_size: 500,
            timeout: Duration::from_secs(60),
        }
    }
}

/// Reads an LDAP server as [`LdapSettings`] say.
#[derive(Clone)]
pub struct LdapDirectory(Arc<Reader>);

struct Reader {
    settings: LdapSettings,
    tls: Arc<rustls::ClientConfig>,
    password: Option<Secret>,
}

impl std::fmt::Debug for LdapDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LdapDirectory")
            .field("url", &self.0.settings.url)
            .finish_non_exhaustive()
    }
}

fn setting(setting: &'static str, message: impl Into<String>) -> DirectoryError {
    DirectoryError::Setting {
        setting,
        message: message.into(),
    }
}

impl LdapDirectory {
    /// Checks `settings`; nothing is sent until the first read.
    pub fn new(mut settings: LdapSettings) -> Result<Self, DirectoryError> {
        // Unset, every disabled account would keep its access: it is said, never assumed.
        match settings.status_attribute.trim() {
            "" => {
                return Err(setting(
                    "status_attribute",
                    "required: the attribute telling a disabled account (such as \"employeeType\"; \
                     Active Directory: \"userAccountControl\" with disabled_bits = 2), or \"none\" \
                     when departed people are removed from the directory instead",
                ));
            }
            "none" => settings.status_attribute.clear(),
            _ => {}
        }
        let url = settings.url.to_ascii_lowercase();
        if url.starts_with("ldap://") {
            if !settings.starttls {
                return Err(setting(
                    "url",
                    format!(
                        "{} without starttls = true would send the bind password and the \
                         directory in clear; use ldaps:// or StartTLS",
                        settings.url
                    ),
                ));
            }
        } else if !url.starts_with("ldaps://") {
            return Err(setting(
                "url",
                format!("{:?} is not an ldaps:// or ldap:// URL", settings.url),
            ));
        } else if settings.starttls {
            return Err(setting(
                "starttls",
                "only with an ldap:// url; ldaps:// is TLS from the start",
            ));
        }
        for (name, value) in [
            ("user_base", &settings.user_base),
            ("group_base", &settings.group_base),
            ("mail_attribute", &settings.mail_attribute),
            ("group_name_attribute", &settings.group_name_attribute),
        ] {
            if value.trim().is_empty() {
                return Err(setting(name, "required with source = \"ldap\""));
            }
        }
        if !(1..=10_000).contains(&settings.page_size) {
            return Err(setting("page_size", "must be between 1 and 10000"));
        }
        let password = match (&settings.bind_password_file, settings.bind_dn.is_empty()) {
            (Some(path), false) => Some(Secret::new(
                "[directory.ldap] bind_password",
                SecretSource::File(path.clone()),
            )),
            (None, true) => None,
            (None, false) => {
                return Err(setting(
                    "bind_password_file",
                    "required with bind_dn (the file holding its password)",
                ));
            }
            (Some(_), true) => {
                return Err(setting(
                    "bind_dn",
                    "required with bind_password_file (empty binds anonymously)",
                ));
            }
        };
        let ca = match &settings.ca {
            Some(path) => Some(
                std::fs::read(path)
                    .map_err(|e| setting("ca", format!("cannot read {}: {e}", path.display())))?,
            ),
            None => None,
        };
        let tls = plinth_identity::client_config(ca.as_deref())
            .map_err(|e| setting("ca", e.to_string()))?;
        Ok(Self(Arc::new(Reader {
            settings,
            tls: Arc::new(tls),
            password,
        })))
    }
}

impl Reader {
    fn error(&self, message: impl std::fmt::Display) -> DirectoryError {
        DirectoryError::Ldap {
            url: self.settings.url.clone(),
            message: message.to_string(),
        }
    }

    async fn connect(&self) -> Result<Ldap, DirectoryError> {
        let connection = LdapConnSettings::new()
            .set_conn_timeout(self.settings.timeout)
            .set_starttls(self.settings.starttls)
            .set_config(self.tls.clone());
        let (driver, mut ldap) = LdapConnAsync::with_settings(connection, &self.settings.url)
            .await
            .map_err(|e| self.error(format!("cannot connect: {e}")))?;
        ldap3::drive!(driver);
        if let Some(secret) = &self.password {
            let password = secret.current().map_err(|e| self.error(e))?;
            ldap.simple_bind(&self.settings.bind_dn, &password)
                .await
                .and_then(|result| result.success())
                .map_err(|e| self.error(format!("bind as {}: {e}", self.settings.bind_dn)))?;
        }
        Ok(ldap)
    }

    /// Every entry under `base` matching `filter`, with `attributes`, page by page.
    async fn search(
        &self,
        ldap: &mut Ldap,
        what: &str,
        base: &str,
        filter: &str,
        attributes: Vec<String>,
    ) -> Result<Vec<SearchEntry>, DirectoryError> {
        let failed = |e: ldap3::LdapError| self.error(format!("{what} search under {base}: {e}"));
        let adapters: Vec<Box<dyn Adapter<_, _>>> = vec![
            Box::new(EntriesOnly::new()),
            Box::new(PagedResults::new(self.settings.page_size)),
        ];
        let mut stream = ldap
            .streaming_search_with(adapters, base, Scope::Subtree, filter, attributes)
            .await
            .map_err(failed)?;
        let mut entries = Vec::new();
        while let Some(entry) = stream.next().await.map_err(failed)? {
            if entries.len() == MAX_ENTRIES {
                return Err(self.error(format!(
                    "{what} search under {base} returns over {MAX_ENTRIES} entries; narrow the filter"
                )));
            }
            entries.push(SearchEntry::construct(entry));
        }
        stream.finish().await.success().map_err(failed)?;
        Ok(entries)
    }

    async fn read(&self) -> Result<Snapshot, DirectoryError> {
        let s = &self.settings;
        let mut ldap = self.connect().await?;
        let mut user_attributes = vec![s.mail_attribute.clone()];
        let mut group_attributes = vec![s.group_name_attribute.clone()];
        match s.membership {
            Membership::Member => group_attributes.push(s.member_attribute.clone()),
            Membership::MemberOf => {
                user_attributes.push(s.member_of_attribute.clone());
                group_attributes.push(s.member_of_attribute.clone());
            }
        }
        if !s.status_attribute.is_empty() {
            user_attributes.push(s.status_attribute.clone());
        }
        let people = self
            .search(
                &mut ldap,
                "people",
                &s.user_base,
                &s.user_filter,
                user_attributes,
            )
            .await?;
        let groups = self
            .search(
                &mut ldap,
                "group",
                &s.group_base,
                &s.group_filter,
                group_attributes,
            )
            .await?;
        // The data is read; a failed unbind changes nothing.
        let _ = ldap.unbind().await;
        self.assemble(&people, &groups)
    }

    /// Turns the entries into a snapshot. People without a usable e-mail address and
    /// members outside both searches are left out, and counted in the log. A name two groups
    /// share has no members (failing closed for that group alone). Members sent in ranges
    /// refuse the read: the group would lose members it has.
    fn assemble(
        &self,
        people: &[SearchEntry],
        groups: &[SearchEntry],
    ) -> Result<Snapshot, DirectoryError> {
        let s = &self.settings;
        let mut users: HashMap<String, UserStatus> = HashMap::new();
        let mut email_of: HashMap<String, String> = HashMap::new();
        let mut unnamed = 0usize;
        for entry in people {
            let Some(email) = first(entry, &s.mail_attribute)
                .map(|mail| mail.trim().to_ascii_lowercase())
                .filter(|mail| Identity::user(mail).is_ok())
            else {
                unnamed += 1;
                continue;
            };
            let status = match self.disabled(entry) {
                true => UserStatus::Departed,
                false => UserStatus::Active,
            };
            // Two accounts with one address: disabled wins, failing closed.
            let kept = users.entry(email.clone()).or_insert(status);
            if status == UserStatus::Departed {
                *kept = UserStatus::Departed;
            }
            email_of.insert(normalize_dn(&entry.dn), email);
        }
        let mut name_of: HashMap<String, String> = HashMap::new();
        let mut named: HashMap<String, Group> = HashMap::new();
        let mut dn_of: HashMap<&str, &str> = HashMap::new();
        let mut ambiguous: Vec<String> = Vec::new();
        for entry in groups {
            // Active Directory sends the members of a large group in ranges
            // (`member;range=0-1499`), which this reader does not follow.
            if let Some(ranged) = entry.attrs.keys().find(|name| name.contains(";range=")) {
                return Err(self.error(format!(
                    "group {} sends {ranged}: members in ranges are not read; use membership = \
                     \"memberOf\"",
                    entry.dn
                )));
            }
            let Some(name) = first(entry, &s.group_name_attribute) else {
                continue;
            };
            if let Some(other) = dn_of.insert(name, &entry.dn) {
                tracing::error!(
                    url = %s.url,
                    group = name,
                    first = other,
                    second = %entry.dn,
                    "two LDAP groups of one name: the group has no members until one is renamed"
                );
                ambiguous.push(name.to_owned());
            }
            name_of.insert(normalize_dn(&entry.dn), name.to_owned());
            named.entry(name.to_owned()).or_default();
        }
        let mut outside = 0usize;
        match s.membership {
            Membership::Member => {
                for entry in groups {
                    let Some(name) = name_of.get(&normalize_dn(&entry.dn)) else {
                        continue;
                    };
                    let mut members = Vec::new();
                    let mut nested = Vec::new();
                    for dn in values(entry, &s.member_attribute) {
                        let dn = normalize_dn(dn);
                        if let Some(email) = email_of.get(&dn) {
                            members.push(email.clone());
                        } else if let Some(group) = name_of.get(&dn) {
                            nested.push(group.clone());
                        } else {
                            outside += 1;
                        }
                    }
                    let group = named.entry(name.clone()).or_default();
                    group.members.extend(members);
                    group.groups.extend(nested);
                }
            }
            Membership::MemberOf => {
                for entry in people {
                    let Some(email) = email_of.get(&normalize_dn(&entry.dn)) else {
                        continue;
                    };
                    for dn in values(entry, &s.member_of_attribute) {
                        match name_of.get(&normalize_dn(dn)) {
                            Some(group) => named
                                .entry(group.clone())
                                .or_default()
                                .members
                                .push(email.clone()),
                            None => outside += 1,
                        }
                    }
                }
                for entry in groups {
                    let Some(name) = name_of.get(&normalize_dn(&entry.dn)) else {
                        continue;
                    };
                    for dn in values(entry, &s.member_of_attribute) {
                        match name_of.get(&normalize_dn(dn)) {
                            Some(parent) => named
                                .entry(parent.clone())
                                .or_default()
                                .groups
                                .push(name.clone()),
                            None => outside += 1,
                        }
                    }
                }
            }
        }
        // Policies and owners name a group: a name two groups share names neither.
        for name in ambiguous {
            named.insert(name, Group::default());
        }
        if unnamed > 0 || outside > 0 {
            tracing::info!(
                url = %s.url,
                people_without_email = unnamed,
                memberships_outside_the_bases = outside,
                "LDAP entries left out of the directory"
            );
        }
        Ok(Snapshot::new(users, named))
    }

    /// Whether the account's status attribute says disabled.
    fn disabled(&self, entry: &SearchEntry) -> bool {
        let s = &self.settings;
        if s.status_attribute.is_empty() {
            return false;
        }
        values(entry, &s.status_attribute).any(|value| {
            let value = value.trim();
            s.disabled_values
                .iter()
                .any(|disabled| disabled.eq_ignore_ascii_case(value))
                || (s.disabled_bits != 0
                    && value
                        .parse::<u64>()
                        .is_ok_and(|flags| flags & s.disabled_bits != 0))
        })
    }
}

/// The values of `attribute` (any case, as servers return names as they store them).
fn values<'a>(entry: &'a SearchEntry, attribute: &'a str) -> impl Iterator<Item = &'a String> {
    entry
        .attrs
        .iter()
        .filter(move |(name, _)| name.eq_ignore_ascii_case(attribute))
        .flat_map(|(_, values)| values)
}

fn first<'a>(entry: &'a SearchEntry, attribute: &'a str) -> Option<&'a str> {
    values(entry, attribute).next().map(String::as_str)
}

/// A DN as compared here: lower case, without spaces around separators.
fn normalize_dn(dn: &str) -> String {
    dn.split(',')
        .map(|rdn| rdn.split('=').map(str::trim).collect::<Vec<_>>().join("="))
        .collect::<Vec<_>>()
        .join(",")
        .to_ascii_lowercase()
}

#[async_trait::async_trait]
impl Source for LdapDirectory {
    fn name(&self) -> String {
        format!("LDAP {}", self.0.settings.url)
    }

    /// One read, bounded by `timeout`. The client panics on an entry it cannot parse; the
    /// read runs as its own task so that is an error like any other.
    async fn fetch(&self) -> Result<Snapshot, DirectoryError> {
        let reader = self.0.clone();
        let timeout = reader.settings.timeout;
        let read = tokio::spawn(async move { tokio::time::timeout(timeout, reader.read()).await });
        match read.await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(self.0.error(format!(
                "no whole read within {} ([directory.ldap] timeout)",
                humantime::format_duration(timeout)
            ))),
            Err(_) => Err(self
                .0
                .error("the server sent an entry the client cannot parse")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Directory;

    fn settings() -> LdapSettings {
        LdapSettings {
            url: "ldaps://ldap.example.com".into(),
            user_base: "ou=people,dc=example,dc=com".into(),
            group_base: "ou=groups,dc=example,dc=com".into(),
            status_attribute: "userAccountControl".into(),
            disabled_bits: 2,
            ..LdapSettings::default()
        }
    }

    fn entry(dn: &str, attrs: &[(&str, &[&str])]) -> SearchEntry {
        SearchEntry {
            dn: dn.into(),
            attrs: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
                .collect(),
            bin_attrs: HashMap::new(),
        }
    }

    #[test]
    fn plain_ldap_without_starttls_is_refused() {
        let error = LdapDirectory::new(LdapSettings {
            url: "ldap://ldap.example.com".into(),
            ..settings()
        })
        .unwrap_err()
        .to_string();
        assert!(error.starts_with("[directory.ldap] url:"), "{error}");
        assert!(error.contains("in clear"), "{error}");
    }

    #[test]
    fn how_a_disabled_account_reads_must_be_said() {
        let error = LdapDirectory::new(LdapSettings {
            status_attribute: String::new(),
            ..settings()
        })
        .unwrap_err()
        .to_string();
        assert!(
            error.starts_with("[directory.ldap] status_attribute: required"),
            "{error}"
        );
        let none = LdapSettings {
            status_attribute: "none".into(),
            ..settings()
        };
        assert!(LdapDirectory::new(none).is_ok());
    }

    #[test]
    fn a_bind_dn_needs_its_password_file() {
        let error = LdapDirectory::new(LdapSettings {
            bind_dn: "cn=plinth,dc=example,dc=com".into(),
            ..settings()
        })
        .unwrap_err()
        .to_string();
        assert!(error.contains("bind_password_file"), "{error}");
    }

    #[test]
    fn member_of_nests_groups_and_disabled_bits_read_as_departed() {
        let directory = LdapDirectory::new(LdapSettings {
            membership: Membership::MemberOf,
            ..settings()
        })
        .unwrap();
        let people = [
            entry(
                "CN=Alice, OU=People,DC=example,DC=com",
                &[
                    ("mail", &["Alice@Example.com"]),
                    ("memberof", &["cn=oncall,ou=groups,dc=example,dc=com"]),
                    ("userAccountControl", &["512"]),
                ],
            ),
            entry(
                "cn=bob,ou=people,dc=example,dc=com",
                &[
                    ("mail", &["bob@example.com"]),
                    ("memberOf", &["cn=payments,ou=groups,dc=example,dc=com"]),
                    ("userAccountControl", &["514"]),
                ],
            ),
            entry("cn=nomail,ou=people,dc=example,dc=com", &[]),
        ];
        let groups = [
            entry(
                "cn=oncall,ou=groups,dc=example,dc=com",
                &[
                    ("cn", &["oncall"]),
                    ("memberOf", &["CN=payments,ou=groups,dc=example,dc=com"]),
                ],
            ),
            entry(
                "cn=payments,ou=groups,dc=example,dc=com",
                &[("cn", &["payments"])],
            ),
        ];
        let snapshot = directory.0.assemble(&people, &groups).unwrap();
        assert_eq!(snapshot.people(), 2, "no e-mail, no person");
        let alice = Identity::user("alice@example.com").unwrap();
        assert!(snapshot.is_member(&alice, "payments"), "through oncall");
        assert!(!snapshot.is_active("bob@example.com"), "disabled account");
        assert_eq!(
            snapshot
                .active_members("payments")
                .into_iter()
                .collect::<Vec<_>>(),
            ["alice@example.com"]
        );
    }

    #[test]
    fn a_name_two_groups_share_has_no_members() {
        let directory = LdapDirectory::new(settings()).unwrap();
        let alice = "cn=alice,ou=people,dc=example,dc=com";
        let people = [entry(alice, &[("mail", &["alice@example.com"])])];
        let groups = [
            entry(
                "cn=admins,ou=groups,dc=example,dc=com",
                &[("cn", &["admins"]), ("member", &[alice])],
            ),
            entry(
                "cn=admins,ou=sandbox,dc=example,dc=com",
                &[("cn", &["admins"]), ("member", &[alice])],
            ),
        ];
        let snapshot = directory.0.assemble(&people, &groups).unwrap();
        assert!(snapshot.group_exists("admins"));
        assert!(snapshot.active_members("admins").is_empty());
    }

    #[test]
    fn members_in_ranges_refuse_the_read() {
        let directory = LdapDirectory::new(settings()).unwrap();
        let groups = [entry(
            "cn=everyone,ou=groups,dc=example,dc=com",
            &[("cn", &["everyone"]), ("member;range=0-1499", &["cn=a"])],
        )];
        let error = directory.0.assemble(&[], &groups).unwrap_err().to_string();
        assert!(error.contains("member;range=0-1499"), "{error}");
    }
}
