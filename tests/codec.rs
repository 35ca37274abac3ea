//! The codec server end to end: a real `plinth codec` over HTTPS with the stack's access lists,
//! called with `curl` (client certificates and bearer tokens), the Temporal samples' Python
//! codec for interoperability, and `plinth keys rotate` under a running server. The tests share
//! one stack and namespace, where alice may write and mallory may read.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use plinth_test_harness::cli::{namespace_yaml, ok, text, wait_for};
use plinth_test_harness::{
    ADMIN, CODEC_MAX_BODY, DevServer, OUTSIDER, PAYMENTS_MEMBER, PAYMENTS_TEAM, PlinthStack,
    TOKEN_AUDIENCE, UI_ORIGIN,
};
use serde_json::Value;

const PLINTH: &str = env!("CARGO_BIN_EXE_plinth");

/// One HTTP exchange: status, lower-cased response headers, body.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: String,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// `curl` against the stack's codec server; `extra` are curl arguments (headers, certs).
fn call(stack: &PlinthStack, method: &str, path: &str, body: &str, extra: &[&str]) -> Reply {
    let port = stack.codec_address.rsplit(':').next().unwrap();
    let ca = stack.home().join("pki/ca.pem");
    let output = Command::new("curl")
        .args(["-s", "-i", "--http1.1", "-X", method])
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
        .arg("--cacert")
        .arg(&ca)
        .args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            "@-",
        ])
        .args(extra)
        .arg(format!("https://localhost:{port}{path}"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(body.as_bytes())?;
            child.wait_with_output()
        })
        .expect("run curl");
    let raw = String::from_utf8_lossy(&output.stdout).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {raw}"));
    Reply {
        status,
        headers: head.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}

fn bearer(stack: &PlinthStack, email: &str) -> String {
    format!(
        "Authorization: Bearer {}",
        stack.token(email, TOKEN_AUDIENCE, 600)
    )
}

fn plain_payloads(text: &str) -> String {
    use base64::Engine;
    let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
    serde_json::json!({"payloads": [{
        "metadata": {"encoding": b64(b"json/plain")},
        "data": b64(format!("{text:?}").as_bytes()),
    }]})
    .to_string()
}

fn metadata(reply: &Reply, key: &str) -> String {
    use base64::Engine;
    let value = reply.json()["payloads"][0]["metadata"][key]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value)
        .unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn access(stack: &PlinthStack, namespace: &str) -> Value {
    let output = ok(stack.plinth_as(OUTSIDER, &["get", "access", namespace, "-o", "json"]));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The stack the tests share, its namespace, and a payload the writer sealed there.
struct Fixture {
    stack: PlinthStack,
    ns: String,
    sealed: Reply,
}

const MARKER: &str = "codec-marker-4711";

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let mut stack = PlinthStack::start_with(DevServer::shared(), PLINTH.as_ref(), "10m", "5m")
            .and_then(PlinthStack::shared)
            .unwrap();
        let ns = format!("codec-{}", std::process::id());
        let yaml = namespace_yaml("codec", &ns, PAYMENTS_TEAM, 7, "");
        ok(stack.apply_as(PAYMENTS_MEMBER, &yaml, &["--wait"]));
        let readers = format!("TEMPORAL-ns-{ns}-readers");
        let writers = format!("TEMPORAL-ns-{ns}");
        ok(stack.plinth_as(
            PAYMENTS_MEMBER,
            &["policy", "add-rule", &writers, "--user", PAYMENTS_MEMBER],
        ));
        ok(stack.plinth_as(
            PAYMENTS_MEMBER,
            &["policy", "add-rule", &readers, "--user", OUTSIDER],
        ));
        wait_for("the access run", || {
            access(&stack, &ns)["grants"].as_array().map_or(0, Vec::len) == 2
        });
        stack.start_codec().unwrap();
        let encode = format!("/{ns}/encode");
        let sealed = call(
            &stack,
            "POST",
            &encode,
            &plain_payloads(MARKER),
            &args(&writer(&stack)),
        );
        Fixture { stack, ns, sealed }
    })
}

/// curl arguments that present the writer's client certificate.
fn writer(stack: &PlinthStack) -> Vec<String> {
    let (cert, key, _) = stack.credentials(PAYMENTS_MEMBER);
    let path = |p: &Path| p.to_str().unwrap().to_owned();
    vec!["--cert".into(), path(&cert), "--key".into(), path(&key)]
}

/// The header that presents the reader's bearer token.
fn reader(stack: &PlinthStack) -> String {
    bearer(stack, OUTSIDER)
}

fn args(list: &[String]) -> Vec<&str> {
    list.iter().map(String::as_str).collect()
}

#[test]
fn a_request_without_a_valid_token_is_unauthorized() {
    let Fixture { stack, ns, .. } = fixture();
    let decode = format!("/{ns}/decode");
    let anonymous = call(stack, "POST", &decode, &plain_payloads(MARKER), &[]);
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);
    let expired = format!(
        "Authorization: Bearer {}",
        stack.token(OUTSIDER, TOKEN_AUDIENCE, -120)
    );
    assert_eq!(
        call(stack, "POST", &decode, "{}", &["-H", &expired]).status,
        401
    );
    let foreign = format!(
        "Authorization: Bearer {}",
        stack.token(OUTSIDER, "other-app", 600)
    );
    assert_eq!(
        call(stack, "POST", &decode, "{}", &["-H", &foreign]).status,
        401
    );
}

#[test]
fn a_writer_encodes_with_its_client_certificate() {
    let Fixture { sealed, .. } = fixture();
    assert_eq!(sealed.status, 200, "{}", sealed.body);
    assert_eq!(metadata(sealed, "encoding"), "binary/encrypted");
    assert!(!sealed.body.contains(MARKER));
}

#[test]
fn a_reader_decodes_naming_the_namespace_in_a_header() {
    let Fixture { stack, ns, sealed } = fixture();
    let header_ns = format!("X-Namespace: {ns}");
    let reader = reader(stack);
    let opened = call(
        stack,
        "POST",
        "/decode",
        &sealed.body,
        &["-H", &reader, "-H", &header_ns],
    );
    assert_eq!(opened.status, 200, "{}", opened.body);
    assert_eq!(
        opened.json(),
        serde_json::from_str::<Value>(&plain_payloads(MARKER)).unwrap()
    );
    assert!(stack.log("codec").contains("decode"), "audited");
    assert!(!stack.log("codec").contains(MARKER), "content never logged");
}

#[test]
fn a_decode_is_in_the_audit_trail_naming_who_read_which_namespace() {
    let Fixture { stack, ns, sealed } = fixture();
    let path = format!("/{ns}/decode");
    let reader = reader(stack);
    let opened = call(stack, "POST", &path, &sealed.body, &["-H", &reader]);
    assert_eq!(opened.status, 200, "{}", opened.body);
    let who = format!("user:{OUTSIDER}");
    // Shipped with the data path's records at the next [audit] interval (1 minute).
    wait_for("the decode in plinth audit", || {
        let out = ok(stack.plinth_as(
            ADMIN,
            &[
                "audit",
                "--since",
                "1h",
                "--action",
                "codec.decoded",
                "--namespace",
                ns,
                "--actor",
                &who,
                "-o",
                "json",
            ],
        ));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|line| line.contains("\"detail\":\"1 payloads\""))
    });
}

#[test]
fn a_reader_may_not_encode() {
    let Fixture { stack, ns, .. } = fixture();
    let encode = format!("/{ns}/encode");
    let refused = call(
        stack,
        "POST",
        &encode,
        &plain_payloads(MARKER),
        &["-H", &reader(stack)],
    );
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.body.contains("no write access"), "{}", refused.body);
}

#[test]
fn a_caller_without_access_to_the_namespace_is_forbidden() {
    let Fixture { stack, ns, sealed } = fixture();
    let stranger = bearer(stack, "erin@example.com");
    let decode = format!("/{ns}/decode");
    assert_eq!(
        call(stack, "POST", &decode, &sealed.body, &["-H", &stranger]).status,
        403
    );
    let moved = call(
        stack,
        "POST",
        "/elsewhere/decode",
        &sealed.body,
        &args(&writer(stack)),
    );
    assert_eq!(moved.status, 403, "no access to the other namespace");
}

#[test]
fn the_server_counts_what_it_answered_and_refused_naming_no_namespace() {
    let Fixture { stack, ns, sealed } = fixture();
    let decode = format!("/{ns}/decode");
    let encode = format!("/{ns}/encode");
    let stranger = bearer(stack, "erin@example.com");
    let reader = reader(stack);
    call(stack, "POST", &decode, &sealed.body, &["-H", &reader]);
    call(stack, "POST", &decode, &sealed.body, &["-H", &stranger]);
    call(
        stack,
        "POST",
        &encode,
        &plain_payloads(MARKER),
        &["-H", &reader],
    );

    let metrics = call(stack, "GET", "/metrics", "", &[]);
    assert_eq!(metrics.status, 200);
    let count = |series: &str| -> f64 {
        metrics
            .body
            .lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    assert!(count("plinth_codec_requests_total{op=\"decode\",status=\"200\"}") >= 1.0);
    assert!(count("plinth_codec_requests_total{op=\"decode\",status=\"403\"}") >= 1.0);
    assert!(count("plinth_codec_requests_total{op=\"encode\",status=\"403\"}") >= 1.0);
    assert!(count("plinth_codec_denials_total{access=\"write\"}") >= 1.0);
    assert!(count("plinth_codec_denials_total{access=\"read\"}") >= 1.0);
    assert!(count("plinth_codec_payloads_total{op=\"decode\"}") >= 1.0);
    assert!(
        !metrics.body.contains(ns.as_str()),
        "no namespace label: {}",
        metrics.body
    );
}

#[test]
fn malformed_oversize_unknown_and_non_post_requests_get_400_413_404_and_405() {
    let Fixture { stack, ns, .. } = fixture();
    let decode = format!("/{ns}/decode");
    let encode = format!("/{ns}/encode");
    let reader = reader(stack);
    let malformed = call(stack, "POST", &decode, "{not json", &["-H", &reader]);
    assert_eq!(malformed.status, 400);
    assert!(
        malformed.body.contains("not proto3 JSON Payloads"),
        "{}",
        malformed.body
    );
    let oversize = plain_payloads(&"x".repeat(CODEC_MAX_BODY));
    assert_eq!(
        call(stack, "POST", &encode, &oversize, &args(&writer(stack))).status,
        413
    );
    assert_eq!(
        call(stack, "POST", "/nowhere", "{}", &["-H", &reader]).status,
        404
    );
    assert_eq!(
        call(stack, "GET", &decode, "", &["-H", &reader]).status,
        405
    );
}

#[test]
fn cors_answers_only_the_configured_origin_and_preflights() {
    let Fixture { stack, ns, sealed } = fixture();
    let decode = format!("/{ns}/decode");
    let allowed = format!("Origin: {UI_ORIGIN}");
    let reader = reader(stack);
    let cors = call(
        stack,
        "POST",
        &decode,
        &sealed.body,
        &["-H", &reader, "-H", &allowed],
    );
    assert!(
        cors.headers
            .contains(&format!("access-control-allow-origin: {UI_ORIGIN}"))
    );
    assert!(
        cors.headers
            .contains("access-control-allow-credentials: true")
    );
    let evil = call(
        stack,
        "POST",
        &decode,
        &sealed.body,
        &["-H", &reader, "-H", "Origin: http://evil.test"],
    );
    assert!(
        !evil.headers.contains("access-control-allow-origin"),
        "{}",
        evil.headers
    );
    let preflight = call(
        stack,
        "OPTIONS",
        &decode,
        "",
        &["-H", &allowed, "-H", "Access-Control-Request-Method: POST"],
    );
    assert_eq!(preflight.status, 204);
    assert!(
        preflight.headers.contains("x-namespace"),
        "{}",
        preflight.headers
    );
}

#[test]
fn payloads_of_the_samples_python_codec_open_with_its_key_imported() {
    let Fixture { stack, ns, .. } = fixture();
    let decode = format!("/{ns}/decode");
    let reader = reader(stack);
    let key_file = stack.home().join("samples.key");
    std::fs::write(&key_file, [42u8; 32]).unwrap();
    ok(stack.plinth(&[
        "keys",
        "import",
        "--id",
        "samples-key",
        "--from",
        key_file.to_str().unwrap(),
        "--namespace",
        ns,
    ]));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/samples_encrypt.py");
    let python = ok(Command::new("python3")
        .arg(&script)
        .arg(&key_file)
        .args(["samples-key", "samples-marker"])
        .output()
        .unwrap());
    let samples_body = String::from_utf8(python.stdout).unwrap();
    let mut from_samples = call(stack, "POST", &decode, &samples_body, &["-H", &reader]);
    wait_for("the imported key to be in force", || {
        from_samples = call(stack, "POST", &decode, &samples_body, &["-H", &reader]);
        from_samples.status == 200
    });
    assert_eq!(
        from_samples.json(),
        serde_json::from_str::<Value>(&plain_payloads("samples-marker")).unwrap()
    );
}

#[test]
fn after_a_rotation_new_payloads_name_the_new_key_and_old_ones_still_open() {
    let Fixture { stack, ns, sealed } = fixture();
    let decode = format!("/{ns}/decode");
    let encode = format!("/{ns}/encode");
    let writer = writer(stack);
    let before = metadata(sealed, "encryption-key-id");
    let rotated = ok(stack.plinth(&["keys", "rotate"]));
    let new_key = String::from_utf8_lossy(&rotated.stdout)
        .split_whitespace()
        .nth(4)
        .unwrap_or_default()
        .trim_end_matches(';')
        .to_owned();
    assert!(new_key.starts_with("kek-"), "{}", text(&rotated));
    wait_for("the new key to seal", || {
        let fresh = call(
            stack,
            "POST",
            &encode,
            &plain_payloads(MARKER),
            &args(&writer),
        );
        metadata(&fresh, "encryption-key-id") == new_key
    });
    assert_ne!(before, new_key);
    let old = call(
        stack,
        "POST",
        &decode,
        &sealed.body,
        &["-H", &reader(stack)],
    );
    assert_eq!(old.status, 200, "{}", old.body);
    let listed = String::from_utf8_lossy(&ok(stack.plinth(&["keys", "list"])).stdout).into_owned();
    assert!(
        listed.contains(&before) && listed.contains("decrypt-only"),
        "{listed}"
    );
}

/// A codec server told to stop reports not ready at once, finishes a request whose body was
/// still arriving, and exits cleanly.
#[test]
fn a_stopping_codec_server_reports_not_ready_and_finishes_requests_in_flight() {
    use std::io::Write;
    let mut stack = PlinthStack::start_in(
        DevServer::shared(),
        PLINTH.as_ref(),
        "10m",
        "3s",
        "",
        "",
        &[
            ("PLINTH_CODEC_SHUTDOWN_DELAY", "6s"),
            ("PLINTH_CODEC_SHUTDOWN_GRACE", "20s"),
        ],
    )
    .unwrap();
    let ns = format!("codec-stop-{}", std::process::id());
    stack.provision_for_team("codec-stop", &ns).unwrap();
    stack.start_codec().unwrap();
    assert_eq!(call(&stack, "GET", "/readyz", "", &[]).status, 200);
    let port = stack.codec_address.rsplit(':').next().unwrap();
    let (cert, key, _) = stack.credentials(PAYMENTS_MEMBER);
    // The body goes out as it is written (chunked), so the request is under way until the
    // last half is.
    let mut upload = Command::new("curl")
        .args(["-s", "--http1.1", "-X", "POST", "-T", "-"])
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
        .arg("--cacert")
        .arg(stack.home().join("pki/ca.pem"))
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .args(["-H", "Content-Type: application/json"])
        .arg(format!("https://localhost:{port}/{ns}/encode"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let body = plain_payloads(MARKER);
    let (first, last) = body.split_at(body.len() / 2);
    let mut input = upload.stdin.take().unwrap();
    input.write_all(first.as_bytes()).unwrap();
    input.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let pid = stack.codec_pid().to_string();
    ok(Command::new("kill").args(["-TERM", &pid]).output().unwrap());
    wait_for("readiness to turn false", || {
        let ready = call(&stack, "GET", "/readyz", "", &[]);
        ready.status == 503 && ready.body == "shutting down\n"
    });
    std::thread::sleep(std::time::Duration::from_secs(7)); // past the delay: no new connections now
    input.write_all(last.as_bytes()).unwrap();
    drop(input);
    let sealed = upload.wait_with_output().unwrap();
    let sealed: Value = serde_json::from_slice(&sealed.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&sealed.stdout)));
    assert!(sealed["payloads"][0]["data"].is_string(), "{sealed}");
    assert!(!sealed.to_string().contains(MARKER), "{sealed}");
    let status = stack.terminate_codec().unwrap();
    assert!(status.success(), "{status}");
}
