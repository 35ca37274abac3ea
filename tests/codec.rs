//! The codec server end to end: a real `plinth codec` over HTTPS with the stack's access lists,
//! called with `curl` (client certificates and bearer tokens), the Temporal samples' Python
//! codec for interoperability, and `plinth keys rotate` under a running server.

use std::path::Path;
use std::process::Command;

use plinth_test_harness::cli::{namespace_yaml, ok, text, wait_for};
use plinth_test_harness::{
    CODEC_MAX_BODY, DevServer, OUTSIDER, PAYMENTS_MEMBER, PAYMENTS_TEAM, PlinthStack,
    TOKEN_AUDIENCE, UI_ORIGIN,
};
use serde_json::Value;

const PLINTH: &str = env!("CARGO_BIN_EXE_plinth");

/// One HTTP exchange: status, lower-cased response headers, body.
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

#[test]
fn codec_server_authenticates_authorizes_and_round_trips() {
    let mut stack =
        PlinthStack::start_with(DevServer::shared(), PLINTH.as_ref(), "10m", "5m").unwrap();
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
    let decode = format!("/{ns}/decode");
    let marker = "codec-marker-4711";

    // 401 without credentials; an expired or foreign-audience token is no better.
    let anonymous = call(&stack, "POST", &decode, &plain_payloads(marker), &[]);
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);
    let expired = format!(
        "Authorization: Bearer {}",
        stack.token(OUTSIDER, TOKEN_AUDIENCE, -120)
    );
    assert_eq!(
        call(&stack, "POST", &decode, "{}", &["-H", &expired]).status,
        401
    );
    let foreign = format!(
        "Authorization: Bearer {}",
        stack.token(OUTSIDER, "other-app", 600)
    );
    assert_eq!(
        call(&stack, "POST", &decode, "{}", &["-H", &foreign]).status,
        401
    );

    // A writer encodes with its client certificate.
    let (cert, key, _) = stack.credentials(PAYMENTS_MEMBER);
    let cert_args = [
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ];
    let sealed = call(&stack, "POST", &encode, &plain_payloads(marker), &cert_args);
    assert_eq!(sealed.status, 200, "{}", sealed.body);
    assert_eq!(metadata(&sealed, "encoding"), "binary/encrypted");
    assert!(!sealed.body.contains(marker));

    // A reader decodes (namespace from X-Namespace this time), but may not encode.
    let reader = bearer(&stack, OUTSIDER);
    let header_ns = format!("X-Namespace: {ns}");
    let opened = call(
        &stack,
        "POST",
        "/decode",
        &sealed.body,
        &["-H", &reader, "-H", &header_ns],
    );
    assert_eq!(opened.status, 200, "{}", opened.body);
    assert_eq!(
        opened.json(),
        serde_json::from_str::<Value>(&plain_payloads(marker)).unwrap()
    );
    let refused = call(
        &stack,
        "POST",
        &encode,
        &plain_payloads(marker),
        &["-H", &reader],
    );
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.body.contains("no write access"), "{}", refused.body);
    assert!(stack.log("codec").contains("decode"), "audited");
    assert!(!stack.log("codec").contains(marker), "content never logged");

    // 403 for someone with no access to the namespace.
    let stranger = bearer(&stack, "erin@example.com");
    assert_eq!(
        call(&stack, "POST", &decode, &sealed.body, &["-H", &stranger]).status,
        403
    );

    // The server counts what it answered and refused, naming no namespace.
    let metrics = call(&stack, "GET", "/metrics", "", &[]);
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
        !metrics.body.contains(&ns),
        "no namespace label: {}",
        metrics.body
    );

    // 400 malformed, 413 oversize, 404 unknown path, 405 not POST.
    let malformed = call(&stack, "POST", &decode, "{not json", &["-H", &reader]);
    assert_eq!(malformed.status, 400);
    assert!(
        malformed.body.contains("not proto3 JSON Payloads"),
        "{}",
        malformed.body
    );
    let moved = call(
        &stack,
        "POST",
        "/elsewhere/decode",
        &sealed.body,
        &cert_args,
    );
    assert_eq!(moved.status, 403, "no access to the other namespace");
    let oversize = plain_payloads(&"x".repeat(CODEC_MAX_BODY));
    assert_eq!(
        call(&stack, "POST", &encode, &oversize, &cert_args).status,
        413
    );
    assert_eq!(
        call(&stack, "POST", "/nowhere", "{}", &["-H", &reader]).status,
        404
    );
    assert_eq!(
        call(&stack, "GET", &decode, "", &["-H", &reader]).status,
        405
    );

    // CORS only for the configured origin; preflights answered.
    let allowed = format!("Origin: {UI_ORIGIN}");
    let cors = call(
        &stack,
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
        &stack,
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
        &stack,
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

    // Interop: the Temporal samples' Python codec, with its key imported decrypt-only.
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
        &ns,
    ]));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/samples_encrypt.py");
    let python = ok(Command::new("python3")
        .arg(&script)
        .arg(&key_file)
        .args(["samples-key", "samples-marker"])
        .output()
        .unwrap());
    let samples_body = String::from_utf8(python.stdout).unwrap();
    let mut from_samples = call(&stack, "POST", &decode, &samples_body, &["-H", &reader]);
    wait_for("the imported key to be in force", || {
        from_samples = call(&stack, "POST", &decode, &samples_body, &["-H", &reader]);
        from_samples.status == 200
    });
    assert_eq!(
        from_samples.json(),
        serde_json::from_str::<Value>(&plain_payloads("samples-marker")).unwrap()
    );

    // Rotation under the running server: new payloads name the new key, old ones still open.
    let before = metadata(&sealed, "encryption-key-id");
    let rotated = ok(stack.plinth(&["keys", "rotate"]));
    let new_key = String::from_utf8_lossy(&rotated.stdout)
        .split_whitespace()
        .nth(4)
        .unwrap_or_default()
        .trim_end_matches(';')
        .to_owned();
    assert!(new_key.starts_with("kek-"), "{}", text(&rotated));
    let mut fresh = call(&stack, "POST", &encode, &plain_payloads(marker), &cert_args);
    wait_for("the new key to seal", || {
        fresh = call(&stack, "POST", &encode, &plain_payloads(marker), &cert_args);
        metadata(&fresh, "encryption-key-id") == new_key
    });
    assert_ne!(before, new_key);
    let old = call(&stack, "POST", &decode, &sealed.body, &["-H", &reader]);
    assert_eq!(old.status, 200, "{}", old.body);
    let listed = String::from_utf8_lossy(&ok(stack.plinth(&["keys", "list"])).stdout).into_owned();
    assert!(
        listed.contains(&before) && listed.contains("decrypt-only"),
        "{listed}"
    );
}
