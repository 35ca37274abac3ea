//! SCIM request bodies: a resource checked against the schema, and a PATCH applied to a
//! User and a Group; whatever comes out is again a valid resource.

#![no_main]

use libfuzzer_sys::fuzz_target;
use plinth_scim::Kind;
use plinth_scim::patch::apply;
use plinth_scim::schema::normalize;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let user = serde_json::json!({
        "userName": "ann@example.com",
        "emails": [{"value": "ann@example.com", "type": "work", "primary": true}],
    });
    let group = serde_json::json!({"displayName": "team", "members": [{"value": "u1"}]});
    for (kind, before) in [(Kind::User, user), (Kind::Group, group)] {
        if let Some(fields) = body.as_object()
            && let Ok(kept) = normalize(kind, fields)
        {
            assert_eq!(normalize(kind, &kept).as_ref(), Ok(&kept), "normalizing is stable");
        }
        if let Ok(after) = apply(kind, before.as_object().expect("an object"), &body) {
            assert_eq!(normalize(kind, &after).as_ref(), Ok(&after), "a patch gives a valid resource");
        }
    }
});
