//! PATCH (RFC 7644 §3.5.2): `add`, `remove` and `replace` operations applied to a resource's
//! attributes, then checked against the schema as a whole, so a PATCH leaves nothing a PUT
//! could not.

use std::collections::HashSet;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::ScimError;
use crate::filter::{self, Filter, PatchPath, Scope};
use crate::schema::{self, Attribute, Kind};

pub const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
/// Most operations in one request.
const MAX_OPERATIONS: usize = 1000;

#[derive(Debug, Deserialize)]
struct PatchRequest {
    #[serde(default)]
    schemas: Vec<String>,
    #[serde(rename = "Operations", alias = "operations")]
    operations: Vec<Operation>,
}

#[derive(Debug, Deserialize)]
struct Operation {
    op: String,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    value: Option<Value>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verb {
    Add,
    Remove,
    Replace,
}

/// The attributes of a `kind` resource after the PATCH request `body`.
pub fn apply(
    kind: Kind,
    attributes: &Map<String, Value>,
    body: &Value,
) -> Result<Map<String, Value>, ScimError> {
    let request: PatchRequest = serde_json::from_value(body.clone())
        .map_err(|e| ScimError::bad_request("invalidSyntax", format!("PATCH body: {e}")))?;
    if !request.schemas.iter().any(|s| s == PATCH_SCHEMA) {
        return Err(ScimError::bad_request(
            "invalidSyntax",
            format!("schemas must hold {PATCH_SCHEMA}"),
        ));
    }
    if request.operations.len() > MAX_OPERATIONS {
        return Err(ScimError::bad_request(
            "tooMany",
            format!("over {MAX_OPERATIONS} operations"),
        ));
    }
    let mut patched = attributes.clone();
    for (i, operation) in request.operations.iter().enumerate() {
        let verb = match operation.op.to_ascii_lowercase().as_str() {
            "add" => Verb::Add,
            "remove" => Verb::Remove,
            "replace" => Verb::Replace,
            other => {
                return Err(ScimError::bad_request(
                    "invalidSyntax",
                    format!("Operations[{i}].op: {other:?} is not add, remove or replace"),
                ));
            }
        };
        match (&operation.path, &operation.value) {
            (Some(path), value) => {
                let path = filter::parse_path(path)?;
                apply_at(kind, &mut patched, verb, &path, value.as_ref())?;
            }
            (None, _) if verb == Verb::Remove => {
                return Err(ScimError::bad_request(
                    "noTarget",
                    format!("Operations[{i}]: remove needs a path"),
                ));
            }
            (None, Some(Value::Object(fields))) => {
                for (key, value) in fields {
                    let path = filter::parse_path(key)?;
                    apply_at(kind, &mut patched, verb, &path, Some(value))?;
                }
            }
            (None, _) => {
                return Err(ScimError::invalid_value(format!(
                    "Operations[{i}]: without a path, the value must be an object of attributes"
                )));
            }
        }
    }
    schema::normalize(kind, &patched)
}

fn apply_at(
    kind: Kind,
    attributes: &mut Map<String, Value>,
    verb: Verb,
    path: &PatchPath,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    let Some(attribute) = schema::find(kind, &path.attribute) else {
        // Attributes Plinth does not keep are not kept by a PATCH either.
        return Ok(());
    };
    let name = attribute.name.to_owned();
    let value = match (verb, value) {
        (Verb::Remove, value) => value,
        (_, Some(value)) => Some(value),
        (_, None) => {
            return Err(ScimError::invalid_value(format!(
                "{} of {name} needs a value",
                if verb == Verb::Add { "add" } else { "replace" }
            )));
        }
    };
    if let Some(sub) = &path.sub
        && schema::find_sub(attribute, sub).is_none()
    {
        return Ok(());
    }
    match (&path.filter, &path.sub) {
        (None, None) => whole(attributes, attribute, verb, value),
        (None, Some(sub)) => {
            sub_of_each(attributes, attribute, verb, sub, value);
            Ok(())
        }
        (Some(filter), sub) => {
            if !attribute.multi {
                return Err(ScimError::bad_request(
                    "invalidPath",
                    format!("{name} is not multi-valued: it takes no filter"),
                ));
            }
            filtered(attributes, attribute, verb, filter, sub.as_deref(), value)
        }
    }
}

/// An operation on a whole attribute.
fn whole(
    attributes: &mut Map<String, Value>,
    attribute: &Attribute,
    verb: Verb,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    let name = attribute.name;
    match (verb, value) {
        (Verb::Remove, Some(removed)) if attribute.multi => {
            // `{"op": "remove", "path": "members", "value": [{"value": "<id>"}]}`.
            let removed = match removed {
                Value::Array(removed) => removed.as_slice(),
                one => std::slice::from_ref(one),
            };
            let mut ids = HashSet::with_capacity(removed.len());
            for value in removed {
                let id = value.get("value").ok_or_else(|| {
                    ScimError::invalid_value(format!("a value removed from {name} needs its value"))
                })?;
                ids.insert(id.to_string());
            }
            if let Some(Value::Array(values)) = attributes.get_mut(name) {
                values.retain(|v| {
                    !v.get("value")
                        .is_some_and(|id| ids.contains(&id.to_string()))
                });
            }
        }
        (Verb::Remove, _) => {
            attributes.remove(name);
        }
        (Verb::Add, Some(value)) if attribute.multi => {
            let existing = attributes
                .entry(name)
                .or_insert_with(|| Value::Array(Vec::new()));
            if !existing.is_array() {
                *existing = Value::Array(vec![existing.take()]);
            }
            let Value::Array(values) = existing else {
                unreachable!("made a list above")
            };
            let added = match value {
                Value::Array(added) => added.clone(),
                single => vec![single.clone()],
            };
            // A new primary value takes primary from the others.
            if added
                .iter()
                .any(|v| v.get("primary") == Some(&Value::Bool(true)))
            {
                for v in values.iter_mut() {
                    if let Some(fields) = v.as_object_mut() {
                        fields.remove("primary");
                    }
                }
            }
            if values.len() + added.len() > schema::MAX_MEMBERS {
                return Err(ScimError::invalid_value(format!(
                    "{name} would hold over {} values",
                    schema::MAX_MEMBERS
                )));
            }
            // Repeats are dropped when the result is checked against the schema.
            values.extend(added);
        }
        (_, Some(Value::Object(fields)))
            if attribute.kind == schema::Type::Complex && !attribute.multi =>
        {
            let existing = attributes
                .entry(name)
                .or_insert_with(|| Value::Object(Map::new()));
            match existing.as_object_mut() {
                Some(existing) => existing.extend(fields.clone()),
                None => *existing = Value::Object(fields.clone()),
            }
        }
        (_, Some(value)) => {
            attributes.insert(name.to_owned(), value.clone());
        }
        (_, None) => {}
    }
    Ok(())
}

/// `attribute.sub` without a filter: the sub-attribute of a complex attribute, or of every
/// value of a multi-valued one.
fn sub_of_each(
    attributes: &mut Map<String, Value>,
    attribute: &Attribute,
    verb: Verb,
    sub: &str,
    value: Option<&Value>,
) {
    let sub = schema::find_sub(attribute, sub).map_or(sub, |s| s.name);
    let set = |fields: &mut Map<String, Value>| match (verb, value) {
        (Verb::Remove, _) | (_, None) => {
            fields.remove(sub);
        }
        (_, Some(value)) => {
            fields.insert(sub.to_owned(), value.clone());
        }
    };
    match attributes.get_mut(attribute.name) {
        Some(Value::Array(values)) => values
            .iter_mut()
            .filter_map(Value::as_object_mut)
            .for_each(set),
        Some(Value::Object(fields)) => set(fields),
        _ if verb != Verb::Remove => {
            let mut fields = Map::new();
            set(&mut fields);
            let new = Value::Object(fields);
            let new = if attribute.multi {
                Value::Array(vec![new])
            } else {
                new
            };
            attributes.insert(attribute.name.to_owned(), new);
        }
        _ => {}
    }
}

/// `attribute[filter]` or `attribute[filter].sub`.
fn filtered(
    attributes: &mut Map<String, Value>,
    attribute: &'static Attribute,
    verb: Verb,
    filter: &Filter,
    sub: Option<&str>,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    let sub = sub.map(|s| schema::find_sub(attribute, s).map_or(s, |a| a.name));
    let scope = Scope::Within(attribute);
    let mut values = match attributes.remove(attribute.name) {
        Some(Value::Array(values)) => values,
        Some(single) => vec![single],
        None => Vec::new(),
    };
    let matching = |v: &Value| v.as_object().is_some_and(|f| filter.matches_in(scope, f));
    let found = values.iter().any(matching);
    match (verb, sub, value) {
        (Verb::Remove, None, _) => values.retain(|v| !matching(v)),
        (Verb::Remove, Some(sub), _) => {
            for fields in values.iter_mut().filter(|v| matching(v)) {
                if let Some(fields) = fields.as_object_mut() {
                    fields.remove(sub);
                }
            }
        }
        (Verb::Replace, _, _) if !found => {
            attributes.insert(attribute.name.to_owned(), Value::Array(values));
            return Err(ScimError::bad_request(
                "noTarget",
                format!("no value of {} matches the filter", attribute.name),
            ));
        }
        (_, Some(sub), Some(value)) if found => {
            for fields in values.iter_mut().filter(|v| matching(v)) {
                if let Some(fields) = fields.as_object_mut() {
                    fields.insert(sub.to_owned(), value.clone());
                }
            }
        }
        (_, None, Some(Value::Object(new))) if found => {
            for fields in values.iter_mut().filter(|v| matching(v)) {
                if let Some(fields) = fields.as_object_mut() {
                    if verb == Verb::Replace {
                        fields.clear();
                    }
                    fields.extend(new.clone());
                }
            }
        }
        // `add` where nothing matches: a new value, holding what an equality filter names.
        (_, sub, Some(value)) => {
            let mut fields = match filter {
                Filter::Compare(path, filter::Op::Eq, expected) if path.sub.is_none() => {
                    let name = schema::find_sub(attribute, &path.attribute)
                        .map_or(path.attribute.as_str(), |a| a.name);
                    Map::from_iter([(name.to_owned(), expected.clone())])
                }
                _ => Map::new(),
            };
            match (sub, value) {
                (Some(sub), value) => {
                    fields.insert(sub.to_owned(), value.clone());
                }
                (None, Value::Object(new)) => fields.extend(new.clone()),
                (None, _) => {
                    attributes.insert(attribute.name.to_owned(), Value::Array(values));
                    return Err(ScimError::invalid_value(format!(
                        "a value of {} must be an object",
                        attribute.name
                    )));
                }
            }
            values.push(Value::Object(fields));
        }
        (_, _, None) => {}
    }
    if !values.is_empty() {
        attributes.insert(attribute.name.to_owned(), Value::Array(values));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn patch(kind: Kind, before: Value, operations: Value) -> Result<Value, ScimError> {
        let body = json!({"schemas": [PATCH_SCHEMA], "Operations": operations});
        apply(kind, before.as_object().unwrap(), &body).map(Value::Object)
    }

    #[test]
    fn members_are_added_and_removed_by_value() {
        let group = json!({"displayName": "team", "members": [{"value": "a"}]});
        let added = patch(
            Kind::Group,
            group,
            json!([{"op": "Add", "path": "members", "value": [{"value": "b"}, {"value": "a"}]}]),
        )
        .unwrap();
        assert_eq!(added["members"], json!([{"value": "a"}, {"value": "b"}]));
        let removed = patch(
            Kind::Group,
            added.clone(),
            json!([{"op": "remove", "path": "members[value eq \"a\"]"}]),
        )
        .unwrap();
        assert_eq!(removed["members"], json!([{"value": "b"}]));
        let entra_style = patch(
            Kind::Group,
            added,
            json!([{"op": "Remove", "path": "members", "value": [{"value": "b"}]}]),
        )
        .unwrap();
        assert_eq!(entra_style["members"], json!([{"value": "a"}]));
    }

    #[test]
    fn replace_without_a_path_sets_each_attribute_and_strings_become_booleans() {
        let user = json!({"userName": "ann", "active": true, "name": {"givenName": "Ann"}});
        let after = patch(
            Kind::User,
            user,
            json!([{"op": "replace", "value": {"active": "False", "name.familyName": "Lee"}}]),
        )
        .unwrap();
        assert_eq!(after["active"], json!(false));
        assert_eq!(
            after["name"],
            json!({"givenName": "Ann", "familyName": "Lee"})
        );
    }

    #[test]
    fn a_filtered_add_with_no_match_makes_the_value() {
        let user = json!({"userName": "ann"});
        let after = patch(
            Kind::User,
            user,
            json!([{"op": "add", "path": "emails[type eq \"work\"].value", "value": "ann@x"}]),
        )
        .unwrap();
        assert_eq!(after["emails"], json!([{"type": "work", "value": "ann@x"}]));
    }

    #[test]
    fn bad_operations_are_refused_and_change_nothing() {
        let user = json!({"userName": "ann"});
        let unknown = patch(
            Kind::User,
            user.clone(),
            json!([{"op": "move", "path": "x"}]),
        );
        assert!(
            unknown
                .unwrap_err()
                .detail
                .contains("not add, remove or replace")
        );
        let no_target = patch(
            Kind::User,
            user.clone(),
            json!([{"op": "replace", "path": "emails[type eq \"work\"].value", "value": "x"}]),
        );
        assert_eq!(no_target.unwrap_err().scim_type, Some("noTarget"));
        let required = patch(
            Kind::User,
            user,
            json!([{"op": "remove", "path": "userName"}]),
        );
        assert!(
            required
                .unwrap_err()
                .detail
                .contains("userName is required")
        );
    }
}
