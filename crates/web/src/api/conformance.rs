//! Holds a request body to the JSON Schema the OpenAPI document gives it, so that what the
//! document promises and what the server accepts are one thing: a body the schema refuses is
//! refused, naming the field, before any handler sees it.
//!
//! Implements the keywords the document's request schemas use (`type`, `enum`, `const`,
//! `properties`, `required`, `additionalProperties`, `propertyNames`, `minProperties`,
//! `maxProperties`, `minLength`, `maxLength`, `pattern`, `minimum`, `maximum`, `items`,
//! `minItems`, `maxItems`, `oneOf`, `anyOf`, `$ref` and the `date-time` format); a schema using
//! another keyword fails the document's own test rather than being half-checked.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use regex::Regex;
use serde_json::{Map, Value};

/// The keywords [`check`] understands; the document's test requires its request schemas to use
/// no other.
#[cfg(test)]
pub(super) const KEYWORDS: &[&str] = &[
    "type",
    "enum",
    "const",
    "properties",
    "required",
    "additionalProperties",
    "propertyNames",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "minimum",
    "maximum",
    "items",
    "minItems",
    "maxItems",
    "oneOf",
    "anyOf",
    "$ref",
    "format",
    "description",
    "default",
];

/// Why a body does not fit its schema: where (a JSON pointer) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Violation {
    pub pointer: String,
    pub problem: String,
}

impl Violation {
    /// The top-level field the violation is in (empty for the body as a whole).
    pub fn field(&self) -> &str {
        self.pointer
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or_default()
    }
}

/// Checks `value` against `schema`, resolving `$ref`s among `components`.
pub(super) fn check(
    value: &Value,
    schema: &Value,
    components: &Map<String, Value>,
) -> Result<(), Violation> {
    Checker { components }.check(value, schema, &mut String::new())
}

struct Checker<'a> {
    components: &'a Map<String, Value>,
}

fn violation(pointer: &str, problem: impl Into<String>) -> Result<(), Violation> {
    Err(Violation {
        pointer: pointer.to_owned(),
        problem: problem.into(),
    })
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(number) if number.is_i64() || number.is_u64() => "integer",
        // JSON Schema counts a number with a zero fraction as an integer.
        Value::Number(number) if number.as_f64().is_some_and(|float| float.fract() == 0.0) => {
            "integer"
        }
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn has_type(value: &Value, wanted: &str) -> bool {
    let given = type_name(value);
    given == wanted || (wanted == "number" && given == "integer")
}

/// How a number compares with a bound: exactly between integers (floats lose the last digits
/// of 64-bit ones), as floats otherwise.
fn compare(number: &serde_json::Number, bound: &Value) -> Option<std::cmp::Ordering> {
    let exact = |number: &serde_json::Number| {
        number
            .as_i64()
            .map(i128::from)
            .or_else(|| number.as_u64().map(i128::from))
    };
    let Value::Number(bound) = bound else {
        return None;
    };
    match (exact(number), exact(bound)) {
        (Some(number), Some(bound)) => Some(number.cmp(&bound)),
        _ => number.as_f64()?.partial_cmp(&bound.as_f64()?),
    }
}

/// Compiled patterns, each compiled once. A closing `$` matches as the fuzzer's (Python's)
/// does: at the end, or before a final line feed, which every handler trims.
fn pattern(source: &str) -> Regex {
    static CACHE: OnceLock<Mutex<HashMap<String, Regex>>> = OnceLock::new();
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    cache
        .entry(source.to_owned())
        .or_insert_with(|| {
            let anchored = match source.strip_suffix('$') {
                Some(body) if !body.ends_with('\\') => format!(r"{body}\n?\z"),
                _ => source.to_owned(),
            };
            Regex::new(&anchored).expect("the document's patterns compile")
        })
        .clone()
}

impl Checker<'_> {
    fn check(&self, value: &Value, schema: &Value, pointer: &mut String) -> Result<(), Violation> {
        let Some(schema) = schema.as_object() else {
            return Ok(());
        };
        if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            let name = reference
                .strip_prefix("#/components/schemas/")
                .expect("the document's references are to its components");
            let target = self
                .components
                .get(name)
                .expect("the document's references resolve");
            self.check(value, target, pointer)?;
        }
        if let Some(types) = schema.get("type") {
            let allowed: Vec<&str> = match types {
                Value::String(one) => vec![one.as_str()],
                Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            if !allowed.iter().any(|wanted| has_type(value, wanted)) {
                return violation(
                    pointer,
                    format!("must be {}, not {}", allowed.join(" or "), type_name(value)),
                );
            }
        }
        if let Some(options) = schema.get("enum").and_then(Value::as_array)
            && !options.contains(value)
        {
            let names: Vec<String> = options.iter().map(Value::to_string).collect();
            return violation(pointer, format!("must be one of {}", names.join(", ")));
        }
        if let Some(expected) = schema.get("const")
            && value != expected
        {
            return violation(pointer, format!("must be {expected}"));
        }
        match value {
            Value::String(text) => self.check_string(text, schema, pointer)?,
            Value::Number(number) => {
                if let Some(minimum) = schema.get("minimum")
                    && compare(number, minimum) == Some(std::cmp::Ordering::Less)
                {
                    return violation(pointer, format!("must be at least {minimum}"));
                }
                if let Some(maximum) = schema.get("maximum")
                    && compare(number, maximum) == Some(std::cmp::Ordering::Greater)
                {
                    return violation(pointer, format!("must be at most {maximum}"));
                }
            }
            Value::Array(items) => self.check_array(items, schema, pointer)?,
            Value::Object(object) => self.check_object(object, schema, pointer)?,
            Value::Null | Value::Bool(_) => {}
        }
        if let Some(branches) = schema.get("oneOf").and_then(Value::as_array) {
            let misfits: Vec<(&Value, Violation)> = branches
                .iter()
                .filter_map(|branch| {
                    let misfit = self.check(value, branch, &mut pointer.clone()).err()?;
                    Some((branch, misfit))
                })
                .collect();
            match branches.len() - misfits.len() {
                1 => {}
                0 => return Err(closest(value, misfits, pointer)),
                _ => return violation(pointer, "fits more than one of its allowed shapes"),
            }
        }
        if let Some(branches) = schema.get("anyOf").and_then(Value::as_array) {
            let misfits: Vec<(&Value, Violation)> = branches
                .iter()
                .filter_map(|branch| {
                    let misfit = self.check(value, branch, &mut pointer.clone()).err()?;
                    Some((branch, misfit))
                })
                .collect();
            if misfits.len() == branches.len() {
                return Err(closest(value, misfits, pointer));
            }
        }
        Ok(())
    }

    fn check_string(
        &self,
        text: &str,
        schema: &Map<String, Value>,
        pointer: &str,
    ) -> Result<(), Violation> {
        let length = text.chars().count() as u64;
        if let Some(minimum) = schema.get("minLength").and_then(Value::as_u64)
            && length < minimum
        {
            return violation(pointer, format!("must have at least {minimum} characters"));
        }
        if let Some(maximum) = schema.get("maxLength").and_then(Value::as_u64)
            && length > maximum
        {
            return violation(pointer, format!("must have at most {maximum} characters"));
        }
        if let Some(source) = schema.get("pattern").and_then(Value::as_str)
            && !pattern(source).is_match(text)
        {
            return violation(pointer, format!("must match {source}"));
        }
        if schema.get("format").and_then(Value::as_str) == Some("date-time")
            && time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .is_err()
        {
            return violation(pointer, "must be an RFC 3339 date and time");
        }
        Ok(())
    }

    fn check_array(
        &self,
        items: &[Value],
        schema: &Map<String, Value>,
        pointer: &mut String,
    ) -> Result<(), Violation> {
        let count = items.len() as u64;
        if let Some(minimum) = schema.get("minItems").and_then(Value::as_u64)
            && count < minimum
        {
            return violation(pointer, format!("must have at least {minimum} items"));
        }
        if let Some(maximum) = schema.get("maxItems").and_then(Value::as_u64)
            && count > maximum
        {
            return violation(pointer, format!("must have at most {maximum} items"));
        }
        if let Some(item_schema) = schema.get("items") {
            for (index, item) in items.iter().enumerate() {
                let length = pointer.len();
                pointer.push_str(&format!("/{index}"));
                self.check(item, item_schema, pointer)?;
                pointer.truncate(length);
            }
        }
        Ok(())
    }

    fn check_object(
        &self,
        object: &Map<String, Value>,
        schema: &Map<String, Value>,
        pointer: &mut String,
    ) -> Result<(), Violation> {
        let count = object.len() as u64;
        if let Some(minimum) = schema.get("minProperties").and_then(Value::as_u64)
            && count < minimum
        {
            return violation(pointer, format!("must have at least {minimum} members"));
        }
        if let Some(maximum) = schema.get("maxProperties").and_then(Value::as_u64)
            && count > maximum
        {
            return violation(pointer, format!("must have at most {maximum} members"));
        }
        for required in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !object.contains_key(required) {
                return violation(&format!("{pointer}/{}", escape(required)), "is required");
            }
        }
        let properties = schema.get("properties").and_then(Value::as_object);
        for (name, member) in object {
            let length = pointer.len();
            pointer.push('/');
            pointer.push_str(&escape(name));
            if let Some(names) = schema.get("propertyNames") {
                self.check(&Value::String(name.clone()), names, pointer)?;
            }
            match (
                properties.and_then(|properties| properties.get(name)),
                schema.get("additionalProperties"),
            ) {
                (Some(member_schema), _) => self.check(member, member_schema, pointer)?,
                (None, Some(Value::Bool(false))) => {
                    return violation(pointer, "is not a field of this body");
                }
                (None, Some(extra)) => self.check(member, extra, pointer)?,
                (None, None) => {}
            }
            pointer.truncate(length);
        }
        Ok(())
    }
}

/// Of the branches a value fits none of, the one meant (its `const` members, such as a `kind`,
/// match the value's), else the one it got deepest into: so that the answer names a field
/// rather than the whole body when it can.
fn closest(value: &Value, misfits: Vec<(&Value, Violation)>, pointer: &str) -> Violation {
    let meant = |branch: &Value| {
        branch["properties"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(name, property)| Some((name, property.get("const")?)))
            .all(|(name, constant)| value.get(name) == Some(constant))
    };
    let depth = |misfit: &Violation| misfit.pointer.matches('/').count();
    misfits
        .into_iter()
        .max_by_key(|(branch, misfit)| (meant(branch), depth(misfit)))
        .map(|(_, misfit)| misfit)
        .filter(|misfit| depth(misfit) > pointer.matches('/').count())
        .unwrap_or_else(|| Violation {
            pointer: pointer.to_owned(),
            problem: "fits none of its allowed shapes".into(),
        })
}

/// A member name as a JSON pointer token.
fn escape(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fits(value: Value, schema: Value) -> Result<(), Violation> {
        check(&value, &schema, &Map::new())
    }

    #[test]
    fn names_the_member_that_does_not_fit() {
        let schema = json!({
            "type": "object",
            "properties": {
                "name": { "type": "string", "minLength": 1, "maxLength": 3, "pattern": "^[a-z]+$" },
                "days": { "type": "integer", "minimum": 1, "maximum": 9 },
            },
            "required": ["name"],
            "additionalProperties": false,
        });
        assert_eq!(
            fits(json!({"name": "ab", "days": 9}), schema.clone()),
            Ok(())
        );
        for (body, pointer) in [
            (json!({}), "/name"),
            (json!({"name": ""}), "/name"),
            (json!({"name": "abcd"}), "/name"),
            (json!({"name": "AB"}), "/name"),
            (json!({"name": "ab", "days": 0}), "/days"),
            (
                json!({"name": "ab", "days": 9_223_372_036_854_775_807_u64}),
                "/days",
            ),
            (json!({"name": "ab", "days": 1.5}), "/days"),
            (json!({"name": "ab", "colour": 1}), "/colour"),
            (json!([]), ""),
        ] {
            let refused = fits(body.clone(), schema.clone()).expect_err(&body.to_string());
            assert_eq!(refused.pointer, pointer, "{body}");
        }
    }

    #[test]
    fn one_of_needs_exactly_one_branch_and_names_the_closest() {
        let schema = json!({ "oneOf": [
            { "type": "object", "properties": { "kind": { "const": "a" } }, "required": ["kind"] },
            { "type": "object", "properties": { "kind": { "const": "b" }, "at": { "type": "string", "format": "date-time" } }, "required": ["kind", "at"] },
        ]});
        assert_eq!(fits(json!({"kind": "a"}), schema.clone()), Ok(()));
        assert_eq!(
            fits(
                json!({"kind": "b", "at": "2026-01-02T03:04:05Z"}),
                schema.clone()
            ),
            Ok(())
        );
        let refused = fits(json!({"kind": "b", "at": "yesterday"}), schema.clone()).unwrap_err();
        assert_eq!(refused.field(), "at");
        assert!(fits(json!({"kind": "c"}), schema).is_err());
    }

    #[test]
    fn property_names_and_references_are_followed() {
        let mut components = Map::new();
        components.insert("Small".into(), json!({ "type": "integer", "maximum": 3 }));
        let schema = json!({
            "type": "object",
            "propertyNames": { "maxLength": 2 },
            "additionalProperties": { "$ref": "#/components/schemas/Small" },
        });
        assert_eq!(check(&json!({"ab": 3}), &schema, &components), Ok(()));
        assert_eq!(
            check(&json!({"abc": 3}), &schema, &components)
                .unwrap_err()
                .pointer,
            "/abc"
        );
        assert_eq!(
            check(&json!({"ab": 4}), &schema, &components)
                .unwrap_err()
                .pointer,
            "/ab"
        );
    }
}
