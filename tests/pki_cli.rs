//! `plinth pki` through the built binary: files, modes, and identities that verify.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use plinth_identity::{ClientVerifier, Identity};

const PLINTH: &str = env!("CARGO_BIN_EXE_plinth");

fn plinth(home: &Path, args: &[&str]) -> Output {
    Command::new(PLINTH)
        .arg("--home")
        .arg(home)
        .args(args)
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn init_then_issue_user_and_app_certificates() {
    let home = tempfile::tempdir().unwrap();
    let pki = home.path().join("pki");

    let init = plinth(home.path(), &["pki", "init"]);
    assert!(init.status.success(), "{}", stderr(&init));
    assert!(stdout(&init).contains("created CA"));
    assert_eq!(mode(&pki.join("ca.key")), 0o600);
    assert_eq!(mode(&pki.join("server.key")), 0o600);
    let ca = std::fs::read(pki.join("ca.pem")).unwrap();

    let again = plinth(home.path(), &["pki", "init"]);
    assert!(stdout(&again).contains("kept CA"));
    assert_eq!(std::fs::read(pki.join("ca.pem")).unwrap(), ca, "CA kept");

    let verifier = ClientVerifier::new(&ca, "plinth.local".parse().unwrap()).unwrap();
    let out = home.path().join("alice");
    let issued = plinth(
        home.path(),
        &[
            "pki",
            "issue",
            "--user",
            "alice@example.com",
            "--ttl",
            "1h",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(issued.status.success(), "{}", stderr(&issued));
    assert!(stdout(&issued).contains("spiffe://plinth.local/user/alice@example.com"));
    assert_eq!(mode(&out.join("key.pem")), 0o600);
    assert_eq!(
        verifier.verify_pem(&std::fs::read(out.join("cert.pem")).unwrap()),
        Identity::user("alice@example.com")
    );

    let app = plinth(home.path(), &["pki", "issue", "--app", "billing-worker"]);
    assert!(app.status.success(), "{}", stderr(&app));
    let app_cert = pki.join("clients/app-billing-worker/cert.pem");
    assert_eq!(
        verifier.verify_pem(&std::fs::read(app_cert).unwrap()),
        Identity::app("billing-worker")
    );
}

#[test]
fn bad_issue_requests_name_the_problem_and_write_nothing() {
    let home = tempfile::tempdir().unwrap();
    let out = home.path().join("out");
    let out_arg = out.to_str().unwrap();

    let before_init = plinth(
        home.path(),
        &["pki", "issue", "--user", "a@example.com", "--out", out_arg],
    );
    assert!(!before_init.status.success());
    assert!(
        stderr(&before_init).contains("plinth pki init"),
        "{}",
        stderr(&before_init)
    );

    assert!(plinth(home.path(), &["pki", "init"]).status.success());
    let bad_user = plinth(
        home.path(),
        &["pki", "issue", "--user", "not-an-email", "--out", out_arg],
    );
    assert!(!bad_user.status.success());
    assert!(
        stderr(&bad_user).contains("--user"),
        "{}",
        stderr(&bad_user)
    );
    assert!(
        stderr(&bad_user).contains("not an e-mail"),
        "{}",
        stderr(&bad_user)
    );

    let bad_app = plinth(
        home.path(),
        &["pki", "issue", "--app", "Billing Worker", "--out", out_arg],
    );
    assert!(!bad_app.status.success());
    assert!(stderr(&bad_app).contains("--app"), "{}", stderr(&bad_app));

    let zero_ttl = plinth(
        home.path(),
        &[
            "pki", "issue", "--app", "x", "--ttl", "0s", "--out", out_arg,
        ],
    );
    assert!(!zero_ttl.status.success());
    assert!(
        stderr(&zero_ttl).contains("lifetime"),
        "{}",
        stderr(&zero_ttl)
    );

    assert!(!out.exists(), "no files written for rejected requests");
}
