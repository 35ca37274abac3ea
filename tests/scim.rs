//! People and groups pushed over SCIM 2.0, as an identity provider would: they decide access,
//! a deactivated or deleted person loses it at once, and an independent compliance suite
//! (`scim2-tester`, from PyPI) finds the service faithful to RFC 7643/7644. Each test starts
//! its own stack, since each changes the directory.

use std::process::Command;

use plinth_test_harness::cli::{text, wait_for};
use plinth_test_harness::{DevServer, PlinthStack, free_port};
use serde_json::{Value, json};

const PLINTH: &str = env!("CARGO_BIN_EXE_plinth");
const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// The bearer token of every test's SCIM service.
const TOKEN: &str = "a-scim-token-of-the-tests-0123456789abcdef";

/// A stack whose directory is what SCIM clients push. It reads the store again only every
/// hour on its own: what a test sees arrive came from the change itself.
fn stack() -> (PlinthStack, String) {
    let port = free_port();
    let token_file = std::env::temp_dir().join(format!("plinth-scim-token-{port}"));
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(
        &token_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let sections = format!(
        "[directory]\nsource = \"scim\"\nrefresh_interval = \"1h\"\n\n\
         [directory.scim]\nlisten = \"127.0.0.1:{port}\"\ntoken_file = \"{}\"\n",
        token_file.display()
    );
    let stack = PlinthStack::start_configured(
        DevServer::shared(),
        PLINTH.as_ref(),
        "10m",
        "3s",
        "",
        &sections,
    )
    .expect("start the stack");
    (stack, format!("https://127.0.0.1:{port}/scim/v2"))
}

/// A SCIM client: curl.
struct Scim {
    base: String,
    token: String,
    ca: std::path::PathBuf,
}

impl Scim {
    fn of(stack: &PlinthStack, base: String) -> Self {
        Self {
            base,
            token: TOKEN.to_owned(),
            ca: stack.home().join("pki").join("ca.pem"),
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut curl = Command::new("curl");
        curl.args(["-sS", "--cacert"])
            .arg(&self.ca)
            .args(["-X", method, "-w", "\n%{http_code}"])
            .args(["-H", &format!("Authorization: Bearer {}", self.token)])
            .args(["-H", "Content-Type: application/scim+json"]);
        if let Some(body) = body {
            curl.args(["--data-binary", &body.to_string()]);
        }
        let output = curl.arg(format!("{}{path}", self.base)).output().unwrap();
        let out = String::from_utf8_lossy(&output.stdout).into_owned();
        let (body, status) = out.rsplit_once('\n').unwrap_or(("", &out));
        let status = status
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("curl: {}", text(&output)));
        (status, serde_json::from_str(body).unwrap_or(Value::Null))
    }

    fn create_user(&self, email: &str, active: bool) -> String {
        let user = json!({
            "schemas": [USER_SCHEMA],
            "userName": email,
            "active": active,
            "emails": [{"value": email, "type": "work", "primary": true}],
        });
        let (status, created) = self.call("POST", "/Users", Some(user));
        assert_eq!(status, 201, "{created}");
        created["id"].as_str().unwrap().to_owned()
    }

    fn create_group(&self, name: &str, users: &[&str], groups: &[&str]) -> String {
        let members: Vec<Value> = users
            .iter()
            .map(|id| json!({"value": id, "type": "User"}))
            .chain(
                groups
                    .iter()
                    .map(|id| json!({"value": id, "type": "Group"})),
            )
            .collect();
        let group = json!({"schemas": [GROUP_SCHEMA], "displayName": name, "members": members});
        let (status, created) = self.call("POST", "/Groups", Some(group));
        assert_eq!(status, 201, "{created}");
        created["id"].as_str().unwrap().to_owned()
    }
}

fn grants(emails: &[&str]) -> Vec<(String, String)> {
    emails
        .iter()
        .map(|email| (format!("user:{email}"), "write".to_owned()))
        .collect()
}

#[test]
fn a_deactivated_or_deleted_scim_user_loses_access_at_once() {
    let (stack, base) = stack();
    let scim = Scim::of(&stack, base);
    // The harness's sample directory, pushed as an identity provider would.
    let id = |email: &str, active: bool| scim.create_user(email, active);
    let dev = id("dev@example.com", true);
    let alice = id("alice@example.com", true);
    let bob = id("bob@example.com", true);
    let frank = id("frank@example.com", true);
    let carol = id("carol@example.com", false);
    id("mallory@example.com", true);
    scim.create_group("temporal-dev", &[&dev], &[]);
    let oncall = scim.create_group("payments-oncall", &[&bob], &[]);
    let team = scim.create_group(
        "payments-team@example.com",
        &[&alice, &carol, &frank],
        &[&oncall],
    );
    // Workers hear of each change from the reload mark, within seconds.
    wait_for("the worker to take the groups up", || {
        stack.log("worker").contains("groups=3")
    });
    stack
        .provision_for_team("scim-payments", "scim-payments")
        .unwrap();
    wait_for("the team's access, nested group included", || {
        stack.access("scim-payments")
            == grants(&["alice@example.com", "bob@example.com", "frank@example.com"])
    });

    // Okta deactivates with PATCH; the change alone (no hourly read) takes bob's access.
    let deactivate = json!({
        "schemas": [PATCH_SCHEMA],
        "Operations": [{"op": "replace", "value": {"active": false}}],
    });
    let (status, patched) = scim.call("PATCH", &format!("/Users/{bob}"), Some(deactivate));
    assert_eq!(
        (status, &patched["active"]),
        (200, &json!(false)),
        "{patched}"
    );
    wait_for("bob's access to go", || {
        stack.access("scim-payments") == grants(&["alice@example.com", "frank@example.com"])
    });

    let (status, _) = scim.call("DELETE", &format!("/Users/{frank}"), None);
    assert_eq!(status, 204);
    wait_for("frank's access to go", || {
        stack.access("scim-payments") == grants(&["alice@example.com"])
    });
    let (status, gone) = scim.call("GET", &format!("/Users/{frank}"), None);
    assert_eq!(status, 404, "{gone}");

    // The directory lives in Temporal: a new worker reads the same one.
    let mut stack = stack;
    stack.kill_worker();
    stack.start_worker().unwrap();
    let (status, found) = scim.call(
        "GET",
        "/Users?filter=userName%20eq%20%22BOB@example.com%22",
        None,
    );
    assert_eq!(
        (status, &found["totalResults"]),
        (200, &json!(1)),
        "{found}"
    );
    assert_eq!(found["Resources"][0]["active"], json!(false));
    assert_eq!(
        stack.access("scim-payments"),
        grants(&["alice@example.com"])
    );
    // Deleting the team takes most of the memberships at once: pushed deletions are real,
    // so no share of the last directory holds them back, as it would an LDAP read.
    let (status, _) = scim.call("DELETE", &format!("/Groups/{team}"), None);
    assert_eq!(status, 204);
    wait_for("the team's access to go", || {
        stack.access("scim-payments").is_empty()
    });
    for role in ["proxy", "worker"] {
        assert!(
            !stack.log(role).contains(&scim.token),
            "the token is in the {role} log"
        );
    }
}

#[test]
fn a_request_without_the_token_changes_nothing() {
    let (stack, base) = stack();
    let mut scim = Scim::of(&stack, base);
    let token = std::mem::replace(&mut scim.token, "not-the-token".into());
    let user = json!({"schemas": [USER_SCHEMA], "userName": "eve@example.com"});
    let (status, refused) = scim.call("POST", "/Users", Some(user));
    assert_eq!(status, 401, "{refused}");
    assert_eq!(
        refused["schemas"][0],
        "urn:ietf:params:scim:api:messages:2.0:Error"
    );
    scim.token = token;
    let (_, listed) = scim.call("GET", "/Users", None);
    assert_eq!(listed["totalResults"], json!(0), "{listed}");
}

#[test]
fn scim2_tester_finds_the_service_compliant() {
    let (stack, base) = stack();
    let scim = Scim::of(&stack, base);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scim_check.py");
    let output = Command::new("python3")
        .arg(script)
        .arg(&scim.base)
        .arg(&scim.token)
        .arg(&scim.ca)
        .output()
        .unwrap();
    let report = text(&output);
    println!("{report}");
    assert!(output.status.success(), "{report}");
    let summary = report
        .lines()
        .find(|l| l.starts_with("scim2-tester:"))
        .unwrap_or_else(|| panic!("no summary: {report}"));
    assert!(summary.contains(" 0 failed"), "{summary}");
}
