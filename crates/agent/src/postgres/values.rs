//! From PostgreSQL's text output of a value to JSON, by the column's type.
//!
//! Both the snapshot (`format('%s', column)`) and the replication stream (pgoutput's text format) give
//! a value as its type's output function prints it, under the session settings the agent fixes
//! (`DateStyle=ISO`, `TimeZone=UTC`, `IntervalStyle=iso_8601`, `extra_float_digits=3`), so one
//! conversion serves both and a row reads the same whichever way it arrived.

use serde_json::{Number, Value};

/// The session settings under which the conversions below hold.
pub const SESSION_SETTINGS: &[(&str, &str)] = &[
    ("DateStyle", "ISO, YMD"),
    ("TimeZone", "UTC"),
    ("IntervalStyle", "iso_8601"),
    ("extra_float_digits", "3"),
    ("bytea_output", "hex"),
];

/// How a column's values become JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Integer,
    Float,
    Numeric,
    Json,
    TimestampTz,
    Timestamp,
    /// Text as printed: strings, dates, times, intervals, UUIDs, arrays, enums, anything else.
    Text,
}

/// The name and conversion of a built-in type, or `None` for a type to look up in the
/// catalog (user types, domains, enums, rarer built-ins).
pub fn builtin(oid: u32) -> Option<(&'static str, Kind)> {
    Some(match oid {
        16 => ("boolean", Kind::Bool),
        17 => ("bytea", Kind::Text),
        18 => ("\"char\"", Kind::Text),
        19 => ("name", Kind::Text),
        20 => ("bigint", Kind::Integer),
        21 => ("smallint", Kind::Integer),
        23 => ("integer", Kind::Integer),
        25 => ("text", Kind::Text),
        26 => ("oid", Kind::Integer),
        114 => ("json", Kind::Json),
        142 => ("xml", Kind::Text),
        650 => ("cidr", Kind::Text),
        700 => ("real", Kind::Float),
        701 => ("double precision", Kind::Float),
        790 => ("money", Kind::Text),
        829 => ("macaddr", Kind::Text),
        869 => ("inet", Kind::Text),
        1000 => ("boolean[]", Kind::Text),
        1005 => ("smallint[]", Kind::Text),
        1007 => ("integer[]", Kind::Text),
        1009 => ("text[]", Kind::Text),
        1015 => ("character varying[]", Kind::Text),
        1016 => ("bigint[]", Kind::Text),
        1021 => ("real[]", Kind::Text),
        1022 => ("double precision[]", Kind::Text),
        1042 => ("character", Kind::Text),
        1043 => ("character varying", Kind::Text),
        1082 => ("date", Kind::Text),
        1083 => ("time without time zone", Kind::Text),
        1114 => ("timestamp without time zone", Kind::Timestamp),
        1184 => ("timestamp with time zone", Kind::TimestampTz),
        1186 => ("interval", Kind::Text),
        1231 => ("numeric[]", Kind::Text),
        1266 => ("time with time zone", Kind::Text),
        1560 => ("bit", Kind::Text),
        1562 => ("bit varying", Kind::Text),
        1700 => ("numeric", Kind::Numeric),
        2950 => ("uuid", Kind::Text),
        2951 => ("uuid[]", Kind::Text),
        3614 => ("tsvector", Kind::Text),
        3802 => ("jsonb", Kind::Json),
        3807 => ("jsonb[]", Kind::Text),
        _ => return None,
    })
}

/// The conversion for a catalog type by its `typcategory` (B boolean, N numeric, ...), for
/// domains over built-ins and other types not in [`builtin`].
pub fn kind_of_category(category: &str, base_oid: u32) -> Kind {
    if let Some((_, kind)) = builtin(base_oid) {
        return kind;
    }
    match category {
        "B" => Kind::Bool,
        _ => Kind::Text,
    }
}

/// The JSON value of `text`, printed by a column of `kind`.
pub fn to_json(kind: Kind, text: String) -> Value {
    match kind {
        Kind::Bool => match text.as_str() {
            "t" | "true" => Value::Bool(true),
            "f" | "false" => Value::Bool(false),
            _ => Value::String(text),
        },
        Kind::Integer => match text.parse::<i64>() {
            Ok(integer) => Value::Number(integer.into()),
            Err(_) => Value::String(text),
        },
        Kind::Float => text
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map_or(Value::String(text), Value::Number),
        Kind::Numeric => numeric(text),
        Kind::Json => match serde_json::from_str(&text) {
            Ok(value) => value,
            Err(_) => Value::String(text),
        },
        Kind::TimestampTz => Value::String(timestamp_tz(&text).unwrap_or(text)),
        Kind::Timestamp => Value::String(timestamp(&text).unwrap_or(text)),
        Kind::Text => Value::String(text),
    }
}

/// A numeric becomes a JSON number when a double holds it exactly (it prints back the same),
/// and stays text otherwise (`NaN`, more digits than a double has), so no digit is ever lost.
fn numeric(text: String) -> Value {
    match exact_double(&text).and_then(Number::from_f64) {
        Some(number) => Value::Number(number),
        None => Value::String(text),
    }
}

/// The double that prints back as `text`, if there is one.
fn exact_double(text: &str) -> Option<f64> {
    let float = text.parse::<f64>().ok().filter(|float| float.is_finite())?;
    same_decimal(text, &float.to_string()).then_some(float)
}

/// `text`, printed by a column of `kind`, serialised as [`to_json`] would make it, without
/// building the value first.
#[derive(Debug, Clone, Copy)]
pub struct Typed<'a>(pub Kind, pub &'a str);

impl serde::Serialize for Typed<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Typed(kind, text) = *self;
        match kind {
            Kind::Bool => match text {
                "t" | "true" => serializer.serialize_bool(true),
                "f" | "false" => serializer.serialize_bool(false),
                _ => serializer.serialize_str(text),
            },
            Kind::Integer => match text.parse::<i64>() {
                Ok(integer) => serializer.serialize_i64(integer),
                Err(_) => serializer.serialize_str(text),
            },
            Kind::Float => match text.parse::<f64>() {
                Ok(float) if float.is_finite() => serializer.serialize_f64(float),
                _ => serializer.serialize_str(text),
            },
            Kind::Numeric => match exact_double(text) {
                Some(float) => serializer.serialize_f64(float),
                None => serializer.serialize_str(text),
            },
            Kind::Json => match serde_json::from_str::<&serde_json::value::RawValue>(text) {
                Ok(raw) => raw.serialize(serializer),
                Err(_) => serializer.serialize_str(text),
            },
            Kind::TimestampTz => match timestamp_tz(text) {
                Some(rfc3339) => serializer.serialize_str(&rfc3339),
                None => serializer.serialize_str(text),
            },
            Kind::Timestamp => match timestamp(text) {
                Some(iso) => serializer.serialize_str(&iso),
                None => serializer.serialize_str(text),
            },
            Kind::Text => serializer.serialize_str(text),
        }
    }
}

/// Whether two decimal texts denote the same number, up to trailing fractional zeros and a
/// leading plus.
fn same_decimal(left: &str, right: &str) -> bool {
    fn canonical(text: &str) -> &str {
        let text = text.strip_prefix('+').unwrap_or(text);
        if text.contains('.') {
            text.trim_end_matches('0').trim_end_matches('.')
        } else {
            text
        }
    }
    canonical(left) == canonical(right)
}

/// `2026-11-27 06:00:00.123456+00` (ISO style, UTC) → `2026-11-27T06:00:00.123456Z`.
fn timestamp_tz(text: &str) -> Option<String> {
    let (date, time) = text.split_once(' ')?;
    if date.len() != 10 || date.contains(' ') {
        return None; // infinity, BC dates: kept as printed
    }
    let time = if let Some(time) = time.strip_suffix("+00") {
        format!("{time}Z")
    } else if time.len() > 3 && matches!(time.as_bytes()[time.len() - 3], b'+' | b'-') {
        format!("{time}:00")
    } else {
        time.to_owned()
    };
    Some(format!("{date}T{time}"))
}

/// `2026-11-27 06:00:00.5` → `2026-11-27T06:00:00.5`.
fn timestamp(text: &str) -> Option<String> {
    let (date, time) = text.split_once(' ')?;
    if date.len() != 10 || time.contains(' ') {
        return None;
    }
    Some(format!("{date}T{time}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scalars_become_their_json_types() {
        assert_eq!(to_json(Kind::Bool, "t".into()), json!(true));
        assert_eq!(to_json(Kind::Bool, "f".into()), json!(false));
        assert_eq!(
            to_json(Kind::Integer, "-9223372036854775808".into()),
            json!(i64::MIN)
        );
        assert_eq!(to_json(Kind::Float, "1.5".into()), json!(1.5));
        assert_eq!(to_json(Kind::Float, "NaN".into()), json!("NaN"));
        assert_eq!(to_json(Kind::Float, "Infinity".into()), json!("Infinity"));
        assert_eq!(
            to_json(Kind::Json, r#"{"a": [1, "x"]}"#.into()),
            json!({"a": [1, "x"]})
        );
        assert_eq!(to_json(Kind::Text, "O'Brien".into()), json!("O'Brien"));
    }

    #[test]
    fn numerics_never_lose_a_digit() {
        assert_eq!(to_json(Kind::Numeric, "12.50".into()), json!(12.5));
        assert_eq!(to_json(Kind::Numeric, "0.1".into()), json!(0.1));
        assert_eq!(to_json(Kind::Numeric, "42".into()), json!(42.0));
        assert_eq!(
            to_json(Kind::Numeric, "12345678901234567890.12".into()),
            json!("12345678901234567890.12")
        );
        assert_eq!(to_json(Kind::Numeric, "NaN".into()), json!("NaN"));
    }

    #[test]
    fn serialising_in_place_gives_the_same_json() {
        let cases = [
            (Kind::Bool, "t"),
            (Kind::Bool, "false"),
            (Kind::Integer, "-42"),
            (Kind::Integer, "x"),
            (Kind::Float, "1.5"),
            (Kind::Float, "-Infinity"),
            (Kind::Numeric, "12.50"),
            (Kind::Numeric, "12345678901234567890.12"),
            (Kind::Json, r#"{"a": [1, "x", {"b": null}]}"#),
            (Kind::Json, "not json"),
            (Kind::TimestampTz, "2026-11-27 06:00:00.123456+00"),
            (Kind::Timestamp, "2026-11-27 06:00:00"),
            (Kind::Text, "quote \" and \\ and\nnewline"),
        ];
        for (kind, text) in cases {
            let direct: Value =
                serde_json::from_str(&serde_json::to_string(&Typed(kind, text)).unwrap()).unwrap();
            assert_eq!(direct, to_json(kind, text.to_owned()), "{kind:?} {text}");
        }
    }

    #[test]
    fn timestamps_become_rfc3339() {
        assert_eq!(
            to_json(Kind::TimestampTz, "2026-11-27 06:00:00.123456+00".into()),
            json!("2026-11-27T06:00:00.123456Z")
        );
        assert_eq!(
            to_json(Kind::TimestampTz, "2026-11-27 06:00:00+05:30".into()),
            json!("2026-11-27T06:00:00+05:30")
        );
        assert_eq!(
            to_json(Kind::TimestampTz, "2026-11-27 06:00:00-08".into()),
            json!("2026-11-27T06:00:00-08:00")
        );
        assert_eq!(
            to_json(Kind::TimestampTz, "infinity".into()),
            json!("infinity")
        );
        assert_eq!(
            to_json(Kind::Timestamp, "2026-11-27 06:00:00.5".into()),
            json!("2026-11-27T06:00:00.5")
        );
    }
}
