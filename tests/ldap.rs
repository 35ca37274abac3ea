//! People and groups from a real OpenLDAP server (`slapd`): nested groups and disabled
//! accounts decide access, a change in LDAP reaches the namespaces by itself, and an outage
//! or an implausibly small answer leaves the last good directory in force. Each test starts
//! its own `slapd` and stack, since each changes the directory.

use std::time::SystemTime;

use plinth_test_harness::cli::{stderr, text, wait_for};
use plinth_test_harness::{ADMIN, DevServer, LDAP_SERVICE_DN, LDAP_SUFFIX, PlinthStack, Slapd};

const PLINTH: &str = env!("CARGO_BIN_EXE_plinth");

/// The stack's sample directory in LDAP: carol's account is disabled; bob is in the payments
/// team through the nested on-call group.
fn directory_ldif() -> String {
    let person = |uid: &str, status: &str| {
        format!(
            "dn: uid={uid},ou=people,{LDAP_SUFFIX}\nobjectClass: inetOrgPerson\nuid: {uid}\n\
             cn: {uid}\nsn: {uid}\nmail: {uid}@example.com\nemployeeType: {status}\n\n"
        )
    };
    let group = |name: &str, members: &[&str]| {
        let members: String = members
            .iter()
            .map(|m| format!("member: {m},{LDAP_SUFFIX}\n"))
            .collect();
        format!(
            "dn: cn={name},ou=groups,{LDAP_SUFFIX}\nobjectClass: groupOfNames\ncn: {name}\n{members}\n"
        )
    };
    let mut ldif = format!(
        "dn: ou=people,{LDAP_SUFFIX}\nobjectClass: organizationalUnit\nou: people\n\n\
         dn: ou=groups,{LDAP_SUFFIX}\nobjectClass: organizationalUnit\nou: groups\n\n"
    );
    for uid in ["dev", "alice", "bob", "frank", "erin", "mallory"] {
        ldif += &person(uid, "active");
    }
    ldif += &person("carol", "disabled");
    ldif += &group("temporal-dev", &["uid=dev,ou=people"]);
    ldif += &group(
        "payments-team@example.com",
        &[
            "uid=alice,ou=people",
            "uid=carol,ou=people",
            "uid=frank,ou=people",
            "cn=payments-oncall,ou=groups",
        ],
    );
    ldif += &group("payments-oncall", &["uid=bob,ou=people"]);
    ldif += &group("search-team@example.com", &["uid=erin,ou=people"]);
    ldif
}

/// A stack reading `slapd` at `url` (LDAPS, or LDAP with StartTLS), every second.
fn stack(slapd: &Slapd, url: &str) -> PlinthStack {
    let sections = format!(
        "[directory]\nsource = \"ldap\"\nrefresh_interval = \"1s\"\nmin_share = 0.5\n\n\
         [directory.ldap]\nurl = \"{url}\"\nstarttls = {starttls}\nca = \"{ca}\"\n\
         bind_dn = \"{LDAP_SERVICE_DN}\"\nbind_password_file = \"{password}\"\n\
         user_base = \"ou=people,{LDAP_SUFFIX}\"\ngroup_base = \"ou=groups,{LDAP_SUFFIX}\"\n\
         status_attribute = \"employeeType\"\npage_size = 2\n",
        starttls = url.starts_with("ldap://"),
        ca = slapd.ca_path().display(),
        password = slapd.password_file().display(),
    );
    PlinthStack::start_configured(
        DevServer::shared(),
        PLINTH.as_ref(),
        "10m",
        "3s",
        "",
        &sections,
    )
    .expect("start the stack")
}

/// Waits for an access run of `namespace` started after `moment` to finish: runs may overlap,
/// so one that finishes later may have started (and read the directory) before.
fn run_after(stack: &PlinthStack, namespace: &str, moment: SystemTime) {
    wait_for("an access run after the change", || {
        let run = &stack.access_list(namespace)["lastRun"];
        run["workflowId"]
            .as_str()
            .is_some_and(|id| stack.started(id) > moment)
    });
}

fn grants(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(identity, access)| (format!("user:{identity}"), (*access).to_owned()))
        .collect()
}

/// What the payments team's write rule grants under [`directory_ldif`].
fn team_access() -> Vec<(String, String)> {
    grants(&[
        ("alice@example.com", "write"),
        ("bob@example.com", "write"),
        ("frank@example.com", "write"),
    ])
}

#[test]
fn nested_groups_and_disabled_accounts_in_ldap_decide_access_and_changes_arrive_by_themselves() {
    let slapd = Slapd::start(&directory_ldif()).expect("start slapd");
    let stack = stack(&slapd, &slapd.ldaps_url());
    stack
        .provision_for_team("ldap-payments", "ldap-payments")
        .unwrap();
    wait_for("the team's access through LDAP", || {
        stack.access("ldap-payments") == team_access()
    });

    // Bob's account is disabled in LDAP: the next read takes it up and his access goes.
    slapd
        .modify(&format!(
            "dn: uid=bob,ou=people,{LDAP_SUFFIX}\nchangetype: modify\nreplace: employeeType\n\
             employeeType: disabled\n"
        ))
        .unwrap();
    wait_for("bob's access to go", || {
        stack.access("ldap-payments")
            == grants(&[
                ("alice@example.com", "write"),
                ("frank@example.com", "write"),
            ])
    });
    assert!(
        stack.log("worker").contains("directory changed"),
        "{}",
        stack.log("worker")
    );
    assert!(
        !stack.log("worker").contains(
            &std::fs::read_to_string(slapd.password_file())
                .unwrap()
                .trim()
                .to_owned()
        ),
        "the bind password is never logged"
    );
}

#[test]
fn an_ldap_outage_or_a_shrunken_answer_keeps_the_last_good_directory() {
    let mut slapd = Slapd::start(&directory_ldif()).expect("start slapd");
    let stack = stack(&slapd, &slapd.ldap_url());
    stack
        .provision_for_team("ldap-outage", "ldap-outage")
        .unwrap();
    wait_for("the team's access through LDAP (StartTLS)", || {
        stack.access("ldap-outage") == team_access()
    });

    slapd.stop();
    let reload = stack.plinth_as(ADMIN, &["directory", "reload"]);
    assert!(!reload.status.success(), "{}", text(&reload));
    let message = stderr(&reload);
    assert!(
        message.contains(&slapd.ldap_url())
            && message.contains("previous directory stays in force"),
        "{message}"
    );
    // Access runs go on with the last good directory: nobody loses access.
    wait_for("the worker to report the outage", || {
        stack
            .log("worker")
            .contains("directory not refreshed; the previous one stays in force")
    });
    run_after(&stack, "ldap-outage", SystemTime::now());
    assert_eq!(stack.access("ldap-outage"), team_access());

    // Back with everyone gone, as a half-restored server would answer: the people's whole
    // branch moves away (reads then fail) and an empty one takes its place (reads then list
    // nobody), so no read in between lists some of them.
    slapd.resume().unwrap();
    slapd
        .modify(&format!(
            "dn: ou=people,{LDAP_SUFFIX}\nchangetype: modrdn\nnewrdn: ou=former\n\
             deleteoldrdn: 1\n\n\
             dn: ou=people,{LDAP_SUFFIX}\nchangetype: add\nobjectClass: organizationalUnit\n\
             ou: people\n"
        ))
        .unwrap();
    let reload = stack.plinth_as(ADMIN, &["directory", "reload"]);
    assert!(!reload.status.success(), "{}", text(&reload));
    let shrunk = "lists 0 people, under 50% of the 7 in force";
    assert!(stderr(&reload).contains(shrunk), "{}", text(&reload));
    wait_for("the worker to refuse the shrunken read", || {
        stack.log("worker").contains(shrunk)
    });
    run_after(&stack, "ldap-outage", SystemTime::now());
    assert_eq!(stack.access("ldap-outage"), team_access());

    // An operator who knows better takes it: everyone's access goes.
    let forced = stack.plinth_as(ADMIN, &["directory", "reload", "--force"]);
    assert!(forced.status.success(), "{}", text(&forced));
    wait_for("the team's access to go", || {
        stack.access("ldap-outage").is_empty()
    });
}
