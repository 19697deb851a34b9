//! Strict JSON reading for untrusted bodies: a nesting check that never recurses, an integer
//! range check, and a value reader that refuses what serde_json would silently accept
//! (repeated keys) or PostgreSQL `jsonb` would refuse (U+0000), and normalises object keys to
//! Unicode NFC, refusing an object two of whose keys become one. The edge reads every event with
//! it; [`read_event_json`] offers the same reading to others (the web app's masking preview),
//! naming where the rule was broken.

use std::cell::{Cell, RefCell};
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfc_quick};

/// Whether objects and arrays in `text` nest deeper than `max_depth` (the outermost one is at
/// depth 1). One pass over the bytes with a counter, skipping string contents, so any depth
/// costs no stack. Unbalanced brackets are left for the parser to report.
pub(crate) fn nesting_exceeds(text: &[u8], max_depth: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in text {
        if in_string {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max_depth {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Whether `text` (valid JSON) holds an integer literal (no fraction, no exponent) outside
/// both the i64 and the u64 range. serde_json would read it as a double and silently lose
/// digits, which for a key column or a `numeric` is corruption; such values must travel as
/// strings.
pub(crate) fn has_out_of_range_integer(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut in_string = false;
    let mut escaped = false;
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        if in_string {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
            index += 1;
            continue;
        }
        if byte == b'"' {
            in_string = true;
            index += 1;
            continue;
        }
        if byte == b'-' || byte.is_ascii_digit() {
            let start = index;
            while index < bytes.len()
                && matches!(bytes[index], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
            {
                index += 1;
            }
            let literal = &text[start..index];
            let integral = !literal.contains(['.', 'e', 'E']);
            if integral && literal.parse::<i64>().is_err() && literal.parse::<u64>().is_err() {
                return true;
            }
            continue;
        }
        index += 1;
    }
    false
}

/// A rule of strict reading that a value broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Violation {
    DuplicateKey,
    /// Two keys of one object differ as sent and are equal in NFC.
    KeysCollide,
    NulInString,
    StringTooLong,
}

/// Where the first violation happened: the violation and, when it was inside one of the
/// event's known fields, that field's name (never a key taken from the payload). Only a
/// [`StrictContext::locating`] context also keeps the full path, keys included: the edge's
/// never does, so no payload key reaches its answers or its log.
#[derive(Debug, Default)]
pub(crate) struct StrictContext {
    max_string_bytes: usize,
    violation: Cell<Option<(Violation, Option<&'static str>)>>,
    field: Cell<Option<&'static str>>,
    known_fields: &'static [&'static str],
    locate: bool,
    /// The steps to the violation, innermost first: filled in as the error unwinds, so a
    /// value that breaks no rule costs nothing.
    unwound: RefCell<Vec<PathStep>>,
}

impl StrictContext {
    pub(crate) fn new(max_string_bytes: usize, known_fields: &'static [&'static str]) -> Self {
        Self {
            max_string_bytes,
            known_fields,
            ..Self::default()
        }
    }

    /// A context that also records where the violation is ([`StrictContext::path`]).
    fn locating(max_string_bytes: usize) -> Self {
        Self {
            max_string_bytes,
            locate: true,
            ..Self::default()
        }
    }

    pub(crate) fn violation(&self) -> Option<(Violation, Option<&'static str>)> {
        self.violation.get()
    }

    /// The path from the top to the violation (for a repeated key, to that key), when locating.
    fn path(&self) -> JsonPath {
        JsonPath(self.unwound.borrow().iter().rev().cloned().collect())
    }

    /// Records one more step outwards as a violation's error passes through a value.
    fn unwinding(&self, step: PathStep) {
        if self.locate && self.violation.get().is_some() {
            self.unwound.borrow_mut().push(step);
        }
    }

    fn fail<E: de::Error>(&self, violation: Violation) -> E {
        if self.violation.get().is_none() {
            self.violation.set(Some((violation, self.field.get())));
        }
        E::custom("strict JSON rule broken")
    }

    fn check_text<E: de::Error>(&self, text: &str) -> Result<(), E> {
        if text.len() > self.max_string_bytes {
            return Err(self.fail(Violation::StringTooLong));
        }
        if text.contains('\0') {
            return Err(self.fail(Violation::NulInString));
        }
        Ok(())
    }
}

/// Reads `text` as one JSON value under `context`'s rules. When a rule is broken, the error is
/// a generic one and the context says which rule.
pub(crate) fn read_value(text: &str, context: &StrictContext) -> Result<Value, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    StrictValue { context, depth: 0 }
        .deserialize(&mut deserializer)
        .and_then(|value| deserializer.end().map(|()| value))
}

/// One step into a JSON value: an object's key or an array's index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathStep {
    Key(String),
    Index(usize),
}

/// Where in a JSON value something is, written `after.address.city` or
/// `after.contacts[0].email`; a key that is not a plain name (empty, or holding a `.`, a bracket,
/// a quote, a space or a control character) is written as a JSON string in brackets:
/// `after["a.b"]`. The top level itself is written `(top level)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JsonPath(Vec<PathStep>);

impl JsonPath {
    pub fn steps(&self) -> &[PathStep] {
        &self.0
    }
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(top level)");
        }
        for (index, step) in self.0.iter().enumerate() {
            match step {
                PathStep::Index(position) => write!(f, "[{position}]")?,
                PathStep::Key(key)
                    if !key.is_empty()
                        && !key.chars().any(|c| {
                            matches!(c, '.' | '[' | ']' | '"' | '\\')
                                || c.is_whitespace()
                                || c.is_control()
                        }) =>
                {
                    if index > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(key)?;
                }
                PathStep::Key(key) => {
                    let quoted = serde_json::to_string(key).map_err(|_| fmt::Error)?;
                    write!(f, "[{quoted}]")?;
                }
            }
        }
        Ok(())
    }
}

/// Why [`read_event_json`] refused a text: the rule broken and, for a rule about one key or
/// string, where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StrictJsonError {
    #[error("not valid JSON (line {line}, column {column})")]
    Syntax { line: usize, column: usize },
    #[error("objects and arrays nest deeper than {max} levels")]
    TooDeep { max: usize },
    /// `path` ends with the repeated key.
    #[error("the key `{path}` is repeated")]
    DuplicateKey { path: JsonPath },
    /// `path` ends with the second key (in NFC).
    #[error("two keys at `{path}` differ only by Unicode normalisation (the same in NFC)")]
    KeysCollide { path: JsonPath },
    /// `path` leads to the string, or to the object whose key it is.
    #[error("a string or key at `{path}` holds U+0000, which PostgreSQL cannot store")]
    NulInString { path: JsonPath },
    #[error("a string or key at `{path}` is longer than {max} bytes")]
    StringTooLong { path: JsonPath, max: usize },
    #[error("a number is an integer outside the 64-bit range; such values must be strings")]
    IntegerOutOfRange,
}

/// How deep an event's own object sits in a batch (the batch's object, then its `events`
/// array), which [`Limits::max_depth`](crate::Limits) counts from.
const EVENT_DEPTH_IN_BATCH: usize = 2;

/// Reads JSON text standing for one event of a batch (or its row images: `{"key": ..,
/// "after": .., "before": ..}`) under the rules the edge holds every event to, with the same
/// reader: no repeated key at any depth, no U+0000, no string or key over
/// `limits.max_string_bytes`, no integer beyond 64 bits, no deeper nesting than the event could
/// have inside a batch. Unlike the edge, it says where a key or string broke a rule: for
/// someone checking their own sample, not for answers to an agent.
pub fn read_event_json(text: &str, limits: &crate::Limits) -> Result<Value, StrictJsonError> {
    let max_depth = limits.max_depth.saturating_sub(EVENT_DEPTH_IN_BATCH);
    if nesting_exceeds(text.as_bytes(), max_depth) {
        return Err(StrictJsonError::TooDeep { max: max_depth });
    }
    let context = StrictContext::locating(limits.max_string_bytes);
    let value = read_value(text, &context).map_err(|error| match context.violation() {
        Some((Violation::DuplicateKey, _)) => StrictJsonError::DuplicateKey {
            path: context.path(),
        },
        Some((Violation::KeysCollide, _)) => StrictJsonError::KeysCollide {
            path: context.path(),
        },
        Some((Violation::NulInString, _)) => StrictJsonError::NulInString {
            path: context.path(),
        },
        Some((Violation::StringTooLong, _)) => StrictJsonError::StringTooLong {
            path: context.path(),
            max: limits.max_string_bytes,
        },
        None => StrictJsonError::Syntax {
            line: error.line(),
            column: error.column(),
        },
    })?;
    if has_out_of_range_integer(text) {
        return Err(StrictJsonError::IntegerOutOfRange);
    }
    Ok(value)
}

/// Reads any JSON value into a [`Value`] under the rules of a [`StrictContext`]. Recursion is
/// bounded by serde_json's own recursion limit (128), and bodies are checked for nesting
/// before they get here.
#[derive(Clone, Copy)]
pub(crate) struct StrictValue<'c> {
    pub(crate) context: &'c StrictContext,
    pub(crate) depth: usize,
}

impl<'de> DeserializeSeed<'de> for StrictValue<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictValue<'_> {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Value, E> {
        Number::from_f64(value)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number is not finite"))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Value, E> {
        self.context.check_text(value)?;
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Value, E> {
        self.context.check_text(&value)?;
        Ok(Value::String(value))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = StrictValue {
            context: self.context,
            depth: self.depth + 1,
        };
        let mut items = Vec::new();
        loop {
            match seq.next_element_seed(inner) {
                Ok(Some(item)) => items.push(item),
                Ok(None) => return Ok(Value::Array(items)),
                Err(error) => {
                    self.context.unwinding(PathStep::Index(items.len()));
                    return Err(error);
                }
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = StrictValue {
            context: self.context,
            depth: self.depth + 1,
        };
        let mut object = Map::new();
        // The keys NFC changed: (in NFC, as sent), to tell a repeated key from two that collide.
        let mut normalised: Vec<(String, String)> = Vec::new();
        while let Some((key, sent)) = map.next_key_seed(StrictKey {
            context: self.context,
        })? {
            if self.depth == 0 {
                self.context.field.set(None);
            }
            if object.contains_key(&key) {
                let earlier = normalised
                    .iter()
                    .find(|(nfc, _)| *nfc == key)
                    .map_or(key.as_str(), |(_, sent)| sent.as_str());
                let violation = if earlier == sent.as_deref().unwrap_or(&key) {
                    Violation::DuplicateKey
                } else {
                    Violation::KeysCollide
                };
                let error = self.context.fail(violation);
                self.context.unwinding(PathStep::Key(key));
                return Err(error);
            }
            if let Some(sent) = sent {
                normalised.push((key.clone(), sent));
            }
            if self.depth == 0 {
                let known = self.context.known_fields.iter().find(|name| **name == key);
                self.context.field.set(known.copied());
            }
            match map.next_value_seed(inner) {
                Ok(value) => {
                    object.insert(key, value);
                }
                Err(error) => {
                    self.context.unwinding(PathStep::Key(key));
                    return Err(error);
                }
            }
        }
        if self.depth == 0 {
            self.context.field.set(None);
        }
        Ok(Value::Object(object))
    }
}

/// An object key under the same rules as string values, normalised to NFC: the key in NFC, and
/// the key as sent when that differs.
#[derive(Clone, Copy)]
struct StrictKey<'c> {
    context: &'c StrictContext,
}

impl StrictKey<'_> {
    fn normalise<E: de::Error>(self, key: String) -> Result<(String, Option<String>), E> {
        self.context.check_text(&key)?;
        if key.is_ascii() || is_nfc_quick(key.chars()) == IsNormalized::Yes {
            return Ok((key, None));
        }
        let nfc: String = key.nfc().collect();
        if nfc == key {
            return Ok((key, None));
        }
        // NFC can lengthen a few characters: the limit holds for the key as stored.
        self.context.check_text(&nfc)?;
        Ok((nfc, Some(key)))
    }
}

impl<'de> DeserializeSeed<'de> for StrictKey<'_> {
    type Value = (String, Option<String>);

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_string(self)
    }
}

impl<'de> Visitor<'de> for StrictKey<'_> {
    type Value = (String, Option<String>);

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        self.normalise(value.to_owned())
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Self::Value, E> {
        self.normalise(value)
    }
}
