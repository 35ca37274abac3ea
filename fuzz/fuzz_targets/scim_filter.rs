//! SCIM filters and PATCH paths, as clients send them in query strings and bodies: parsed
//! (bounded in length and depth) and evaluated against a resource, never panicking.

#![no_main]

use libfuzzer_sys::fuzz_target;
use plinth_scim::Kind;
use plinth_scim::filter::{parse, parse_path};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let user = serde_json::json!({
        "id": "u1",
        "userName": "ann@example.com",
        "active": true,
        "emails": [{"value": "ann@example.com", "type": "work", "primary": true}],
        "name": {"givenName": "Ann"},
        "meta": {"created": "2026-12-01T00:00:00Z"},
    });
    let user = user.as_object().expect("an object");
    if let Ok(filter) = parse(text) {
        filter.matches(Kind::User, user);
        filter.matches(Kind::Group, user);
        filter.value_sought(Kind::User, "userName");
    }
    let _ = parse_path(text);
});
