//! Strict JSON reading for untrusted bodies: a nesting check that never recurses, an integer
//! range check, and a value reader that refuses what serde_json would silently accept
//! (repeated keys) or PostgreSQL `jsonb` would refuse (U+0000).

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

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
    NulInString,
    StringTooLong,
}

/// Where the first violation happened: the violation and, when it was inside one of the
/// event's known fields, that field's name (never a key taken from the payload).
#[derive(Debug, Default)]
pub(crate) struct StrictContext {
    max_string_bytes: usize,
    violation: Cell<Option<(Violation, Option<&'static str>)>>,
    field: Cell<Option<&'static str>>,
    known_fields: &'static [&'static str],
}

impl StrictContext {
    pub(crate) fn new(max_string_bytes: usize, known_fields: &'static [&'static str]) -> Self {
        Self {
            max_string_bytes,
            known_fields,
            ..Self::default()
        }
    }

    pub(crate) fn violation(&self) -> Option<(Violation, Option<&'static str>)> {
        self.violation.get()
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
        while let Some(item) = seq.next_element_seed(inner)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = StrictValue {
            context: self.context,
            depth: self.depth + 1,
        };
        let mut object = Map::new();
        while let Some(key) = map.next_key_seed(StrictKey {
            context: self.context,
        })? {
            if self.depth == 0 {
                self.context.field.set(None);
            }
            if object.contains_key(&key) {
                return Err(self.context.fail(Violation::DuplicateKey));
            }
            if self.depth == 0 {
                let known = self.context.known_fields.iter().find(|name| **name == key);
                self.context.field.set(known.copied());
            }
            let value = map.next_value_seed(inner)?;
            object.insert(key, value);
        }
        if self.depth == 0 {
            self.context.field.set(None);
        }
        Ok(Value::Object(object))
    }
}

/// An object key under the same rules as string values.
#[derive(Clone, Copy)]
struct StrictKey<'c> {
    context: &'c StrictContext,
}

impl<'de> DeserializeSeed<'de> for StrictKey<'_> {
    type Value = String;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        deserializer.deserialize_string(self)
    }
}

impl<'de> Visitor<'de> for StrictKey<'_> {
    type Value = String;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<String, E> {
        self.context.check_text(value)?;
        Ok(value.to_owned())
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<String, E> {
        self.context.check_text(&value)?;
        Ok(value)
    }
}
