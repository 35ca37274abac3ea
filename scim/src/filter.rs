//! SCIM filters (RFC 7644 §3.4.2.2): parsed from untrusted text into a bounded tree, and
//! evaluated on a resource's JSON. Also the paths of PATCH operations (§3.5.2), which share
//! the grammar.

use serde_json::{Map, Value};

use crate::ScimError;
use crate::schema::{self, Attribute, Kind};

/// Longest filter or path read, in bytes.
pub const MAX_FILTER_LEN: usize = 4096;
/// Deepest nesting of parentheses, `not` and brackets.
const MAX_DEPTH: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Ge,
    Lt,
    Le,
}

/// `attribute` or `attribute.sub`, as written (matched without case later).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttrPath {
    pub attribute: String,
    pub sub: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Filter {
    Compare(AttrPath, Op, Value),
    Present(AttrPath),
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    /// `attribute[filter]`: some value of the multi-valued `attribute` matches.
    Within(String, Box<Filter>),
}

/// A PATCH path: `attribute`, `attribute.sub`, `attribute[filter]` or
/// `attribute[filter].sub`.
#[derive(Clone, Debug, PartialEq)]
pub struct PatchPath {
    pub attribute: String,
    pub filter: Option<Filter>,
    pub sub: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Open,
    Close,
    OpenBracket,
    CloseBracket,
    Word(String),
    Literal(Value),
}

fn invalid(message: impl Into<String>) -> ScimError {
    ScimError::bad_request("invalidFilter", message)
}

fn tokens(text: &str) -> Result<Vec<Token>, ScimError> {
    if text.len() > MAX_FILTER_LEN {
        return Err(invalid(format!("longer than {MAX_FILTER_LEN} bytes")));
    }
    let mut tokens = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        match c {
            ' ' | '\t' | '\n' | '\r' => {
                chars.next();
            }
            '(' | ')' | '[' | ']' => {
                chars.next();
                tokens.push(match c {
                    '(' => Token::Open,
                    ')' => Token::Close,
                    '[' => Token::OpenBracket,
                    _ => Token::CloseBracket,
                });
            }
            '"' => {
                chars.next();
                let mut escaped = false;
                let mut end = None;
                for (i, c) in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        end = Some(i);
                        break;
                    }
                }
                let end = end.ok_or_else(|| invalid("a string is not closed"))?;
                let literal: String = serde_json::from_str(&text[start..=end])
                    .map_err(|e| invalid(format!("a string is not valid JSON: {e}")))?;
                tokens.push(Token::Literal(Value::String(literal)));
            }
            _ => {
                let mut end = text.len();
                while let Some(&(i, c)) = chars.peek() {
                    if matches!(c, ' ' | '\t' | '\n' | '\r' | '(' | ')' | '[' | ']' | '"') {
                        end = i;
                        break;
                    }
                    chars.next();
                }
                let word = &text[start..end];
                tokens.push(match word.to_ascii_lowercase().as_str() {
                    "true" => Token::Literal(Value::Bool(true)),
                    "false" => Token::Literal(Value::Bool(false)),
                    "null" => Token::Literal(Value::Null),
                    _ if word.starts_with(|c: char| c.is_ascii_digit() || c == '-') => {
                        let number: serde_json::Number = word
                            .parse()
                            .map_err(|_| invalid(format!("{word:?} is not a number")))?;
                        Token::Literal(Value::Number(number))
                    }
                    _ => Token::Word(word.to_owned()),
                });
            }
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        token
    }

    fn keyword(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case(word))
    }

    fn deeper(&mut self) -> Result<(), ScimError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(invalid(format!("nested deeper than {MAX_DEPTH}")));
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Filter, ScimError> {
        let mut left = self.and()?;
        while self.keyword("or") {
            self.next();
            left = Filter::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Filter, ScimError> {
        let mut left = self.unary()?;
        while self.keyword("and") {
            self.next();
            left = Filter::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Filter, ScimError> {
        self.deeper()?;
        let filter = if self.keyword("not") {
            self.next();
            if self.next() != Some(Token::Open) {
                return Err(invalid("not must be followed by ("));
            }
            let inner = self.or()?;
            self.close(Token::Close, ")")?;
            Filter::Not(Box::new(inner))
        } else if self.peek() == Some(&Token::Open) {
            self.next();
            let inner = self.or()?;
            self.close(Token::Close, ")")?;
            inner
        } else {
            self.comparison()?
        };
        self.depth -= 1;
        Ok(filter)
    }

    fn close(&mut self, token: Token, shown: &str) -> Result<(), ScimError> {
        if self.next() == Some(token) {
            Ok(())
        } else {
            Err(invalid(format!("{shown} expected")))
        }
    }

    fn comparison(&mut self) -> Result<Filter, ScimError> {
        let Some(Token::Word(path)) = self.next() else {
            return Err(invalid("an attribute name expected"));
        };
        if self.peek() == Some(&Token::OpenBracket) {
            self.next();
            self.deeper()?;
            let inner = self.or()?;
            self.depth -= 1;
            self.close(Token::CloseBracket, "]")?;
            return Ok(Filter::Within(attribute_name(&path)?, Box::new(inner)));
        }
        let path = attr_path(&path)?;
        let Some(Token::Word(op)) = self.next() else {
            return Err(invalid("an operator expected"));
        };
        let op = match op.to_ascii_lowercase().as_str() {
            "pr" => return Ok(Filter::Present(path)),
            "eq" => Op::Eq,
            "ne" => Op::Ne,
            "co" => Op::Co,
            "sw" => Op::Sw,
            "ew" => Op::Ew,
            "gt" => Op::Gt,
            "ge" => Op::Ge,
            "lt" => Op::Lt,
            "le" => Op::Le,
            other => return Err(invalid(format!("unknown operator {other:?}"))),
        };
        match self.next() {
            Some(Token::Literal(value)) => Ok(Filter::Compare(path, op, value)),
            _ => Err(invalid(
                "a value (a quoted string, number, true, false or null) expected",
            )),
        }
    }
}

fn attribute_name(word: &str) -> Result<String, ScimError> {
    let valid = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '$' | '_' | '-' | ':' | '.'));
    if valid {
        Ok(word.to_owned())
    } else {
        Err(invalid(format!("{word:?} is not an attribute name")))
    }
}

/// `attribute` or `attribute.sub`; a schema URN prefix stays part of the attribute.
fn attr_path(word: &str) -> Result<AttrPath, ScimError> {
    let word = attribute_name(word)?;
    // The last `:` ends a URN prefix; a `.` after it separates the sub-attribute.
    let name_start = word.rfind(':').map_or(0, |i| i + 1);
    match word[name_start..].split_once('.') {
        Some((attribute, sub)) if !sub.contains('.') && !sub.is_empty() => Ok(AttrPath {
            attribute: format!("{}{attribute}", &word[..name_start]),
            sub: Some(sub.to_owned()),
        }),
        Some(_) => Err(invalid(format!("{word:?} is not an attribute path"))),
        None => Ok(AttrPath {
            attribute: word,
            sub: None,
        }),
    }
}

/// Parses a `filter` query parameter.
pub fn parse(text: &str) -> Result<Filter, ScimError> {
    let mut parser = Parser {
        tokens: tokens(text)?,
        at: 0,
        depth: 0,
    };
    let filter = parser.or()?;
    if parser.at != parser.tokens.len() {
        return Err(invalid("unexpected text after the filter"));
    }
    Ok(filter)
}

/// Parses the `path` of a PATCH operation.
pub fn parse_path(text: &str) -> Result<PatchPath, ScimError> {
    let no_target = |message: String| ScimError::bad_request("invalidPath", message);
    let text = text.trim();
    let Some(open) = text.find('[') else {
        let path = attr_path(text).map_err(|e| no_target(e.detail))?;
        return Ok(PatchPath {
            attribute: path.attribute,
            filter: None,
            sub: path.sub,
        });
    };
    let close = text
        .rfind(']')
        .ok_or_else(|| no_target(format!("{text:?}: [ is not closed")))?;
    let attribute = attribute_name(&text[..open]).map_err(|e| no_target(e.detail))?;
    let filter = parse(&text[open + 1..close])?;
    let sub = match &text[close + 1..] {
        "" => None,
        rest => match rest.strip_prefix('.') {
            Some(sub) if attribute_name(sub).is_ok() && !sub.contains(['.', ':']) => {
                Some(sub.to_owned())
            }
            _ => {
                return Err(no_target(format!(
                    "{text:?}: nothing may follow ] but .sub"
                )));
            }
        },
    };
    Ok(PatchPath {
        attribute,
        filter: Some(filter),
        sub,
    })
}

/// Where attribute names are looked up, for case-exactness.
#[derive(Clone, Copy)]
pub(crate) enum Scope {
    Resource(Kind),
    Within(&'static Attribute),
}

impl Scope {
    fn case_exact(self, path: &AttrPath) -> bool {
        let attribute = match self {
            Scope::Resource(kind) => {
                if path.attribute.eq_ignore_ascii_case("id") {
                    return true;
                }
                schema::find(kind, &path.attribute)
            }
            Scope::Within(parent) => schema::find_sub(parent, &path.attribute),
        };
        let attribute = match (attribute, &path.sub) {
            (Some(a), Some(sub)) => schema::find_sub(a, sub),
            (Some(a), None) if !a.sub.is_empty() => schema::find_sub(a, "value"),
            (a, _) => a,
        };
        attribute.is_some_and(|a| a.case_exact)
    }

    fn within(self, attribute: &str) -> Option<Scope> {
        match self {
            Scope::Resource(kind) => schema::find(kind, attribute).map(Scope::Within),
            Scope::Within(_) => None,
        }
    }
}

/// The value of `name` in `object`, matched without case (and without a schema URN prefix).
pub(crate) fn get<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    let name = name.rsplit(':').next().unwrap_or(name);
    object
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value)
}

/// The values `path` reaches in `object`: each value of a multi-valued attribute, and for a
/// complex one without a sub-attribute named, its `value`.
fn values<'a>(object: &'a Map<String, Value>, path: &AttrPath) -> Vec<&'a Value> {
    let Some(value) = get(object, &path.attribute) else {
        return Vec::new();
    };
    let each: Vec<&Value> = match value {
        Value::Array(values) => values.iter().collect(),
        value => vec![value],
    };
    each.into_iter()
        .filter_map(|value| match (value, &path.sub) {
            (Value::Object(fields), Some(sub)) => get(fields, sub),
            (Value::Object(fields), None) => get(fields, "value"),
            (_, Some(_)) => None,
            (value, None) => Some(value),
        })
        .filter(|value| !value.is_null())
        .collect()
}

impl Filter {
    /// Whether the resource `object` (its JSON as served) matches.
    pub fn matches(&self, kind: Kind, object: &Map<String, Value>) -> bool {
        self.matches_in(Scope::Resource(kind), object)
    }

    pub(crate) fn matches_in(&self, scope: Scope, object: &Map<String, Value>) -> bool {
        match self {
            Filter::And(a, b) => a.matches_in(scope, object) && b.matches_in(scope, object),
            Filter::Or(a, b) => a.matches_in(scope, object) || b.matches_in(scope, object),
            Filter::Not(inner) => !inner.matches_in(scope, object),
            Filter::Present(path) => values(object, path)
                .iter()
                .any(|v| !matches!(v, Value::String(s) if s.is_empty())),
            Filter::Compare(path, Op::Eq, Value::Null) => values(object, path).is_empty(),
            Filter::Compare(path, Op::Ne, Value::Null) => !values(object, path).is_empty(),
            Filter::Compare(path, op, expected) => {
                let exact = scope.case_exact(path);
                let found = values(object, path);
                match op {
                    Op::Ne => !found.iter().any(|v| compare(v, Op::Eq, expected, exact)),
                    op => found.iter().any(|v| compare(v, *op, expected, exact)),
                }
            }
            Filter::Within(attribute, inner) => {
                let Some(inner_scope) = scope.within(attribute) else {
                    return false;
                };
                match get(object, attribute) {
                    Some(Value::Array(values)) => values.iter().any(|v| {
                        v.as_object()
                            .is_some_and(|fields| inner.matches_in(inner_scope, fields))
                    }),
                    Some(Value::Object(fields)) => inner.matches_in(inner_scope, fields),
                    _ => false,
                }
            }
        }
    }
}

fn compare(found: &Value, op: Op, expected: &Value, exact: bool) -> bool {
    match (found, expected) {
        (Value::String(found), Value::String(expected)) => {
            let (found, expected) = if exact {
                (found.clone(), expected.clone())
            } else {
                (found.to_lowercase(), expected.to_lowercase())
            };
            match op {
                Op::Eq => found == expected,
                Op::Ne => found != expected,
                Op::Co => found.contains(&expected),
                Op::Sw => found.starts_with(&expected),
                Op::Ew => found.ends_with(&expected),
                Op::Gt => found > expected,
                Op::Ge => found >= expected,
                Op::Lt => found < expected,
                Op::Le => found <= expected,
            }
        }
        (Value::Bool(found), Value::Bool(expected)) => match op {
            Op::Eq => found == expected,
            Op::Ne => found != expected,
            _ => false,
        },
        (Value::Number(found), Value::Number(expected)) => {
            let (Some(found), Some(expected)) = (found.as_f64(), expected.as_f64()) else {
                return false;
            };
            match op {
                Op::Eq => found == expected,
                Op::Ne => found != expected,
                Op::Gt => found > expected,
                Op::Ge => found >= expected,
                Op::Lt => found < expected,
                Op::Le => found <= expected,
                Op::Co | Op::Sw | Op::Ew => false,
            }
        }
        _ => false,
    }
}

impl Filter {
    /// The value a filter of the form `<attribute> eq "value"` (alone, or in an `and`) asks
    /// for: a store can look it up instead of listing every resource.
    pub fn value_sought(&self, kind: Kind, attribute: &str) -> Option<&str> {
        match self {
            Filter::Compare(path, Op::Eq, Value::String(value))
                if path.sub.is_none()
                    && schema::strip_urn(kind, &path.attribute).eq_ignore_ascii_case(attribute) =>
            {
                Some(value)
            }
            Filter::And(a, b) => a
                .value_sought(kind, attribute)
                .or_else(|| b.value_sought(kind, attribute)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn user() -> Map<String, Value> {
        json!({
            "id": "AbC",
            "userName": "Ann@Example.com",
            "active": true,
            "emails": [{"value": "ann@work.example", "type": "work"}, {"value": "a@home", "type": "home"}],
            "meta": {"created": "2026-12-01T00:00:00Z"},
        })
        .as_object()
        .cloned()
        .unwrap()
    }

    fn matches(filter: &str) -> bool {
        parse(filter).unwrap().matches(Kind::User, &user())
    }

    #[test]
    fn user_name_is_compared_without_case_and_id_with_it() {
        assert!(matches(r#"userName eq "ann@example.COM""#));
        assert!(matches(r#"id eq "AbC""#));
        assert!(!matches(r#"id eq "abc""#));
    }

    #[test]
    fn logic_brackets_and_presence_combine() {
        assert!(matches(
            r#"emails[type eq "work" and value co "@work"] and active eq true"#
        ));
        assert!(!matches(
            r#"not (emails[type eq "home"]) or userName sw "bob""#
        ));
        assert!(matches(
            r#"emails.value ew "@home" and meta.created gt "2026""#
        ));
        assert!(matches("emails pr and not(displayName pr)"));
    }

    #[test]
    fn bad_filters_are_refused_with_the_cause() {
        for (text, cause) in [
            (r#"userName eq"#, "a value"),
            (r#"userName xx "a""#, "unknown operator"),
            (r#"(userName eq "a""#, ") expected"),
            (r#"userName eq "a" junk"#, "unexpected text"),
            (r#"userName eq "a"#, "not closed"),
        ] {
            let error = parse(text).unwrap_err();
            assert_eq!(error.scim_type, Some("invalidFilter"));
            assert!(error.detail.contains(cause), "{text}: {error:?}");
        }
        let deep = format!("{}userName pr{}", "(".repeat(40), ")".repeat(40));
        assert!(parse(&deep).unwrap_err().detail.contains("nested deeper"));
    }

    #[test]
    fn patch_paths_name_attribute_filter_and_sub_attribute() {
        let path = parse_path(r#"emails[type eq "work"].value"#).unwrap();
        assert_eq!(path.attribute, "emails");
        assert_eq!(path.sub.as_deref(), Some("value"));
        assert!(path.filter.is_some());
        let plain = parse_path("name.givenName").unwrap();
        assert_eq!(
            (plain.attribute.as_str(), plain.sub.as_deref()),
            ("name", Some("givenName"))
        );
        assert!(parse_path(r#"members[value eq "1"]x"#).is_err());
    }

    #[test]
    fn a_name_or_id_equality_is_a_lookup() {
        let filter = parse(r#"USERNAME eq "Ann""#).unwrap();
        assert_eq!(filter.value_sought(Kind::User, "userName"), Some("Ann"));
        let contains = parse(r#"userName co "A""#).unwrap();
        assert_eq!(contains.value_sought(Kind::User, "userName"), None);
        let entra = parse(r#"id eq "g1" and members[value eq "u1"]"#).unwrap();
        assert_eq!(entra.value_sought(Kind::Group, "id"), Some("g1"));
    }
}
