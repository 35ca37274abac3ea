//! The attributes Plinth keeps of Users and Groups (RFC 7643 §4), as one table: it checks
//! what clients send, resolves attribute paths case-insensitively, and is what `/Schemas`
//! publishes. Attributes outside it are not kept; `id` and `meta` are the server's.

use std::collections::HashSet;

use serde_json::{Map, Value, json};

use crate::ScimError;

pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";

/// Longest string value kept, in characters.
const MAX_STRING: usize = 1024;
/// Most values of a multi-valued attribute other than `members`.
const MAX_VALUES: usize = 32;
/// Most members of one group.
pub const MAX_MEMBERS: usize = 20_000;

/// The two resource types served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Kind {
    User,
    Group,
}

impl Kind {
    /// The resource type's name, as in `meta.resourceType`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::User => "User",
            Kind::Group => "Group",
        }
    }

    /// The endpoint, such as `Users`.
    pub fn endpoint(self) -> &'static str {
        match self {
            Kind::User => "Users",
            Kind::Group => "Groups",
        }
    }

    pub fn schema(self) -> &'static str {
        match self {
            Kind::User => USER_SCHEMA,
            Kind::Group => GROUP_SCHEMA,
        }
    }

    /// The attribute that names a resource and is unique among its kind.
    pub fn name_attribute(self) -> &'static str {
        match self {
            Kind::User => "userName",
            Kind::Group => "displayName",
        }
    }

    pub(crate) fn attributes(self) -> &'static [Attribute] {
        match self {
            Kind::User => USER,
            Kind::Group => GROUP,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Type {
    String,
    Boolean,
    Complex,
    Reference,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mutability {
    ReadWrite,
    Immutable,
}

#[derive(Debug)]
pub(crate) struct Attribute {
    pub(crate) name: &'static str,
    pub(crate) kind: Type,
    pub(crate) multi: bool,
    pub(crate) required: bool,
    pub(crate) case_exact: bool,
    pub(crate) mutability: Mutability,
    pub(crate) unique: bool,
    pub(crate) canonical: &'static [&'static str],
    pub(crate) sub: &'static [Attribute],
    description: &'static str,
}

const fn string(name: &'static str, description: &'static str) -> Attribute {
    Attribute {
        name,
        kind: Type::String,
        multi: false,
        required: false,
        case_exact: false,
        mutability: Mutability::ReadWrite,
        unique: false,
        canonical: &[],
        sub: &[],
        description,
    }
}

const fn boolean(name: &'static str, description: &'static str) -> Attribute {
    Attribute {
        kind: Type::Boolean,
        ..string(name, description)
    }
}

const EMAIL: &[Attribute] = &[
    string("value", "The e-mail address."),
    Attribute {
        canonical: &["work", "home", "other"],
        ..string("type", "What the address is for.")
    },
    boolean("primary", "The address Plinth identifies the person by."),
];

const NAME: &[Attribute] = &[
    string("formatted", "The full name."),
    string("familyName", "The family name."),
    string("givenName", "The given name."),
];

const USER: &[Attribute] = &[
    Attribute {
        required: true,
        unique: true,
        ..string(
            "userName",
            "Unique sign-in name; the person's e-mail when no e-mail is listed.",
        )
    },
    Attribute {
        kind: Type::Complex,
        sub: NAME,
        ..string("name", "The person's name.")
    },
    string("displayName", "The name shown."),
    boolean(
        "active",
        "False when the account is disabled: the person then has no access.",
    ),
    Attribute {
        kind: Type::Complex,
        multi: true,
        sub: EMAIL,
        ..string(
            "emails",
            "E-mail addresses; the primary one (or the first) is the identity Plinth checks.",
        )
    },
];

const MEMBER: &[Attribute] = &[
    Attribute {
        case_exact: true,
        mutability: Mutability::Immutable,
        ..string("value", "The id of a member User or Group.")
    },
    Attribute {
        kind: Type::Reference,
        case_exact: true,
        mutability: Mutability::Immutable,
        ..string("$ref", "The member's URI.")
    },
    Attribute {
        mutability: Mutability::Immutable,
        canonical: &["User", "Group"],
        ..string("type", "User or Group.")
    },
];

const GROUP: &[Attribute] = &[
    Attribute {
        required: true,
        unique: true,
        ..string(
            "displayName",
            "The group's name, as policies and owners name it; unique.",
        )
    },
    Attribute {
        kind: Type::Complex,
        multi: true,
        sub: MEMBER,
        ..string("members", "Members: Users, and Groups nested in this one.")
    },
];

/// `externalId`, which every resource may carry (RFC 7643 §3.1).
pub(crate) const EXTERNAL_ID: Attribute = Attribute {
    case_exact: true,
    ..string("externalId", "The client's identifier of the resource.")
};

/// The attribute of `kind` named `name` (case-insensitively; a core schema URN prefix is
/// allowed), `externalId` included.
pub(crate) fn find(kind: Kind, name: &str) -> Option<&'static Attribute> {
    let name = strip_urn(kind, name);
    if EXTERNAL_ID.name.eq_ignore_ascii_case(name) {
        return Some(&EXTERNAL_ID);
    }
    kind.attributes()
        .iter()
        .find(|a| a.name.eq_ignore_ascii_case(name))
}

pub(crate) fn find_sub(attribute: &Attribute, name: &str) -> Option<&'static Attribute> {
    attribute
        .sub
        .iter()
        .find(|a| a.name.eq_ignore_ascii_case(name))
}

/// `name` without a leading `<schema URN>:`.
pub(crate) fn strip_urn(kind: Kind, name: &str) -> &str {
    let urn = kind.schema();
    match name.get(..urn.len()) {
        Some(prefix) if prefix.eq_ignore_ascii_case(urn) && name[urn.len()..].starts_with(':') => {
            &name[urn.len() + 1..]
        }
        _ => name,
    }
}

/// Checks a resource body against the schema of `kind` and gives the attributes kept, under
/// their schema names: read-only attributes and those the schema lacks are dropped, `null`
/// clears, strings `"true"`/`"false"` are taken as booleans (some clients send them so).
pub fn normalize(kind: Kind, body: &Map<String, Value>) -> Result<Map<String, Value>, ScimError> {
    let mut kept = Map::new();
    for (key, value) in body {
        let Some(attribute) = find(kind, key) else {
            continue;
        };
        if value.is_null() {
            continue;
        }
        if let Some(value) = attribute_value(attribute, value, attribute.name)? {
            kept.insert(attribute.name.to_owned(), value);
        }
    }
    for attribute in kind.attributes().iter().filter(|a| a.required) {
        match kept.get(attribute.name) {
            Some(Value::String(s)) if !s.trim().is_empty() => {}
            _ => {
                return Err(ScimError::invalid_value(format!(
                    "{} is required",
                    attribute.name
                )));
            }
        }
    }
    Ok(kept)
}

/// `value` checked as `attribute`; `None` when nothing is left to keep.
pub(crate) fn attribute_value(
    attribute: &Attribute,
    value: &Value,
    path: &str,
) -> Result<Option<Value>, ScimError> {
    if !attribute.multi {
        return single_value(attribute, value, path);
    }
    let values = match value {
        Value::Array(values) => values.as_slice(),
        // One value where a list belongs: taken as a list of one.
        single => std::slice::from_ref(single),
    };
    let most = if attribute.name == "members" {
        MAX_MEMBERS
    } else {
        MAX_VALUES
    };
    if values.len() > most {
        return Err(ScimError::invalid_value(format!(
            "{path} holds {} values, over the {most} kept",
            values.len()
        )));
    }
    let mut kept: Vec<Value> = Vec::with_capacity(values.len());
    let mut seen = HashSet::with_capacity(values.len());
    for value in values {
        if let Some(value) = single_value(attribute, value, path)?
            && seen.insert(value.to_string())
        {
            kept.push(value);
        }
    }
    let primaries = kept
        .iter()
        .filter(|v| v.get("primary") == Some(&Value::Bool(true)))
        .count();
    if primaries > 1 {
        return Err(ScimError::invalid_value(format!(
            "{path}: more than one value is primary"
        )));
    }
    Ok((!kept.is_empty()).then_some(Value::Array(kept)))
}

fn single_value(
    attribute: &Attribute,
    value: &Value,
    path: &str,
) -> Result<Option<Value>, ScimError> {
    let wrong = |expected: &str| {
        ScimError::invalid_value(format!("{path} must be {expected}, not {}", kind_of(value)))
    };
    match (attribute.kind, value) {
        (_, Value::Null) => Ok(None),
        (Type::String | Type::Reference, Value::String(s)) => {
            if s.chars().count() > MAX_STRING {
                return Err(ScimError::invalid_value(format!(
                    "{path} is longer than {MAX_STRING} characters"
                )));
            }
            if s.chars().any(char::is_control) {
                return Err(ScimError::invalid_value(format!(
                    "{path} holds a control character"
                )));
            }
            Ok(Some(Value::String(s.clone())))
        }
        (Type::String | Type::Reference, _) => Err(wrong("a string")),
        (Type::Boolean, Value::Bool(b)) => Ok(Some(Value::Bool(*b))),
        (Type::Boolean, Value::String(s)) if s.eq_ignore_ascii_case("true") => {
            Ok(Some(Value::Bool(true)))
        }
        (Type::Boolean, Value::String(s)) if s.eq_ignore_ascii_case("false") => {
            Ok(Some(Value::Bool(false)))
        }
        (Type::Boolean, _) => Err(wrong("a boolean")),
        (Type::Complex, Value::Object(fields)) => {
            let mut kept = Map::new();
            for (key, value) in fields {
                // A member's `$ref` is derived from its value when served.
                let Some(sub) = find_sub(attribute, key).filter(|s| s.kind != Type::Reference)
                else {
                    continue;
                };
                let sub_path = format!("{path}.{}", sub.name);
                if let Some(value) = single_value(sub, value, &sub_path)? {
                    kept.insert(sub.name.to_owned(), value);
                }
            }
            if attribute.name == "members" && !kept.contains_key("value") {
                return Err(ScimError::invalid_value(format!(
                    "{path}: a member needs a value"
                )));
            }
            Ok((!kept.is_empty()).then_some(Value::Object(kept)))
        }
        (Type::Complex, _) => Err(wrong("an object")),
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The `/Schemas` resource of `kind`.
pub fn schema_resource(kind: Kind, base: &str) -> Value {
    let attributes: Vec<Value> = kind.attributes().iter().map(describe).collect();
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
        "id": kind.schema(),
        "name": kind.name(),
        "description": match kind {
            Kind::User => "A person; inactive or deleted, they have no access.",
            Kind::Group => "A group of people, as access policies name it.",
        },
        "attributes": attributes,
        "meta": {
            "resourceType": "Schema",
            "location": format!("{base}/Schemas/{}", kind.schema()),
        },
    })
}

fn describe(attribute: &Attribute) -> Value {
    let kind = match attribute.kind {
        Type::String => "string",
        Type::Boolean => "boolean",
        Type::Complex => "complex",
        Type::Reference => "reference",
    };
    let mutability = match attribute.mutability {
        Mutability::ReadWrite => "readWrite",
        Mutability::Immutable => "immutable",
    };
    let mut described = json!({
        "name": attribute.name,
        "type": kind,
        "multiValued": attribute.multi,
        "description": attribute.description,
        "required": attribute.required,
        "caseExact": attribute.case_exact,
        "mutability": mutability,
        "returned": "default",
        "uniqueness": if attribute.unique { "server" } else { "none" },
    });
    if !attribute.canonical.is_empty() {
        described["canonicalValues"] = json!(attribute.canonical);
    }
    if attribute.kind == Type::Reference {
        described["referenceTypes"] = json!(["User", "Group"]);
    }
    if !attribute.sub.is_empty() {
        described["subAttributes"] = attribute.sub.iter().map(describe).collect();
    }
    described
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn names_are_matched_without_case_and_unknown_ones_are_dropped() {
        let kept = normalize(
            Kind::User,
            &body(json!({
                "USERNAME": "ann@example.com",
                "Active": "False",
                "nickName": "annie",
                "id": "chosen-by-client",
                "urn:ietf:params:scim:schemas:core:2.0:User:displayName": "Ann",
            })),
        )
        .unwrap();
        assert_eq!(
            Value::Object(kept),
            json!({"userName": "ann@example.com", "active": false, "displayName": "Ann"})
        );
    }

    #[test]
    fn a_missing_name_or_a_wrong_type_is_refused_naming_the_attribute() {
        let missing = normalize(Kind::Group, &body(json!({"members": []}))).unwrap_err();
        assert!(
            missing.detail.contains("displayName is required"),
            "{missing:?}"
        );
        let wrong = normalize(
            Kind::User,
            &body(json!({"userName": "a", "emails": [{"value": 7}]})),
        )
        .unwrap_err();
        assert!(
            wrong.detail.contains("emails.value must be a string"),
            "{wrong:?}"
        );
    }

    #[test]
    fn two_primary_addresses_are_refused() {
        let error = normalize(
            Kind::User,
            &body(json!({"userName": "a", "emails": [
                {"value": "a@x", "primary": true}, {"value": "b@x", "primary": true}
            ]})),
        )
        .unwrap_err();
        assert!(error.detail.contains("more than one value is primary"));
    }
}
