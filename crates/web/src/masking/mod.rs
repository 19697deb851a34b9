//! Masking policies in the web app: what the settings page (`/app/settings/masking`, in
//! `app::masking`) shares with the JSON API (`/api/v1/masking-policies`): reading a rule from a
//! request with specific messages, and the live preview, which runs the edge's own masking
//! engine (`protocol::masking`) on a sample event.
//!
//! The preview hashes with a fixed, published key ([`PREVIEW_KEY`]), not the workspace's secret:
//! the web app never holds tenant secrets, and a preview that answered with real hashes would
//! let anyone who may edit rules test guesses against stored hashes.

use protocol::masking::{MaskAction, MaskError, MaskRule, MaskingPolicy, RowImages, TableScope};
use protocol::{Limits, StrictJsonError};
use serde_json::{Map, Value};
use store::masking::MaskingRule;

/// The HMAC key of every preview: public on purpose (see the module's documentation).
pub const PREVIEW_KEY: &[u8; 32] = b"tributary masking preview key v1";

/// What the page says about hashes in the preview.
pub const PREVIEW_HASH_NOTE: &str = "Hashes in this preview use a fixed preview key, not your \
     workspace's secret key: the same value always gives the same preview hash, but the hashes \
     the platform stores differ.";

/// The largest sample event a preview takes, in bytes of JSON.
pub const MAX_SAMPLE_BYTES: usize = 16 * 1024;

/// A rule as a request gives it, before checking.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(default)]
pub struct RuleFields {
    pub source_table: String,
    pub field_path: String,
    pub action: String,
}

/// One thing wrong with a rule, by field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleProblem {
    /// `source_table`, `field_path` or `action`.
    pub field: &'static str,
    pub message: String,
}

/// A checked rule: the engine's form and the store's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedRule {
    pub rule: MaskRule,
    pub stored: MaskingRule,
}

impl RuleFields {
    /// Checks every field, reporting each problem with its own message. An empty table means
    /// every table.
    pub fn check(&self) -> Result<CheckedRule, Vec<RuleProblem>> {
        let mut problems = Vec::new();
        let table_text = match self.source_table.trim() {
            "" => TableScope::EVERY,
            text => text,
        };
        let table = TableScope::parse(table_text)
            .map_err(|error| problems.push(problem("source_table", error.to_string())))
            .ok();
        let path = self
            .field_path
            .trim()
            .parse()
            .map_err(|error: protocol::masking::FieldPathError| {
                problems.push(problem("field_path", error.to_string()));
            })
            .ok();
        let action = self
            .action
            .trim()
            .parse::<MaskAction>()
            .map_err(|error| problems.push(problem("action", error.to_string())))
            .ok();
        match (table, path, action) {
            (Some(table), Some(path), Some(action)) if problems.is_empty() => {
                let stored = MaskingRule {
                    source_table: table.as_str().to_owned(),
                    field_path: self.field_path.trim().to_owned(),
                    action: action.as_str().to_owned(),
                };
                Ok(CheckedRule {
                    rule: MaskRule {
                        table,
                        path,
                        action,
                    },
                    stored,
                })
            }
            _ => Err(problems),
        }
    }
}

fn problem(field: &'static str, message: String) -> RuleProblem {
    let mut chars = message.chars();
    let message = match chars.next() {
        Some(first) => format!("{}{}.", first.to_uppercase(), chars.as_str()),
        None => message,
    };
    RuleProblem { field, message }
}

/// The engine's rules for stored ones. A stored rule the engine cannot read (which the checks
/// before saving prevent) is left out of a preview rather than failing it.
pub fn engine_rules(stored: &[MaskingRule]) -> Vec<MaskRule> {
    stored
        .iter()
        .filter_map(|rule| {
            Some(MaskRule {
                table: rule.source_table.parse().ok()?,
                path: rule.field_path.parse().ok()?,
                action: rule.action.parse().ok()?,
            })
        })
        .collect()
}

/// The policy the form describes: the saved rules, without the one being edited (`replacing`,
/// by table and path), with the form's rule if it is valid (in place of a saved rule for the
/// same table and path).
pub fn policy_with(
    saved: &[MaskingRule],
    replacing: Option<(&str, &str)>,
    candidate: Option<&CheckedRule>,
) -> MaskingPolicy {
    let kept = saved.iter().filter(|rule| {
        let key = (rule.source_table.as_str(), rule.field_path.as_str());
        Some(key) != replacing
            && candidate.is_none_or(|candidate| {
                key != (
                    candidate.stored.source_table.as_str(),
                    candidate.stored.field_path.as_str(),
                )
            })
    });
    let kept: Vec<MaskingRule> = kept.cloned().collect();
    MaskingPolicy::new(
        engine_rules(&kept)
            .into_iter()
            .chain(candidate.map(|candidate| candidate.rule.clone())),
    )
}

/// A sample change: its table (`schema.table`) and row images.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub schema: String,
    pub table: String,
    pub key: Map<String, Value>,
    pub after: Option<Map<String, Value>>,
    pub before: Option<Map<String, Value>>,
}

/// Why a sample cannot be previewed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SampleError {
    #[error("The sample table must be `schema.table` (for example public.customers).")]
    Table,
    #[error("The sample event is larger than {MAX_SAMPLE_BYTES} bytes.")]
    TooLarge,
    #[error("The sample event is not valid JSON (line {line}, column {column}).")]
    Json { line: usize, column: usize },
    /// serde_json would keep the last of the repeated values; the edge refuses the event.
    #[error(
        "The sample event repeats the key `{path}`. The edge refuses an event with a repeated key, so it would refuse this one."
    )]
    DuplicateKey { path: String },
    /// Any other rule the edge holds an event's JSON to (U+0000, a number beyond 64 bits, too
    /// deep), in the protocol's words.
    #[error("The edge would refuse this sample event: {0}.")]
    Refused(String),
    #[error(
        "The sample event must be a JSON object with `key`, `after` and `before` objects (each may be left out)."
    )]
    Shape,
}

impl Sample {
    /// Reads a sample: `table` as `schema.table` (a bare name is taken as `public.name`), and
    /// `{"key": {..}, "after": {..}, "before": {..}}` as bronze stores events.
    pub fn parse(table: &str, json: &str) -> Result<Self, SampleError> {
        let table = table.trim();
        let (schema, name) = table.split_once('.').unwrap_or(("public", table));
        if TableScope::parse(table).is_err()
            || table == TableScope::EVERY
            || name.contains('.')
            || schema.is_empty()
            || name.is_empty()
        {
            return Err(SampleError::Table);
        }
        if json.len() > MAX_SAMPLE_BYTES {
            return Err(SampleError::TooLarge);
        }
        // The edge's own reader, not plain serde_json: a preview must refuse what the edge
        // refuses, repeated keys first of all.
        let value =
            protocol::read_event_json(json, &Limits::default()).map_err(|error| match error {
                StrictJsonError::Syntax { line, column } => SampleError::Json { line, column },
                StrictJsonError::DuplicateKey { path } => SampleError::DuplicateKey {
                    path: path.to_string(),
                },
                other => SampleError::Refused(other.to_string()),
            })?;
        Self::from_value(schema, name, value)
    }

    fn from_value(schema: &str, table: &str, value: Value) -> Result<Self, SampleError> {
        let Value::Object(mut object) = value else {
            return Err(SampleError::Shape);
        };
        let mut image = |name: &str| match object.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(map)) => Ok(Some(map)),
            Some(_) => Err(SampleError::Shape),
        };
        Ok(Self {
            schema: schema.to_owned(),
            table: table.to_owned(),
            key: image("key")?.unwrap_or_default(),
            after: image("after")?,
            before: image("before")?,
        })
    }

    /// The row images as JSON, `before` and `key` only when present.
    pub fn to_json(&self) -> Value {
        let mut object = Map::new();
        if !self.key.is_empty() {
            object.insert("key".into(), Value::Object(self.key.clone()));
        }
        if let Some(after) = &self.after {
            object.insert("after".into(), Value::Object(after.clone()));
        }
        if let Some(before) = &self.before {
            object.insert("before".into(), Value::Object(before.clone()));
        }
        Value::Object(object)
    }

    pub fn qualified_table(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }
}

/// What a preview shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Preview {
    /// The rules that apply to the sample's table, in the order they apply.
    pub applied: Vec<MaskRule>,
    /// The masked sample, or why the edge would refuse such an event.
    pub outcome: Result<Sample, MaskError>,
}

/// Masks `sample` with `policy` exactly as the edge would, with the preview key.
pub fn preview(policy: &MaskingPolicy, sample: &Sample) -> Preview {
    let applied = policy
        .rules()
        .iter()
        .filter(|rule| rule.table.matches(&sample.schema, &sample.table))
        .cloned()
        .collect();
    let mut masked = sample.clone();
    let rows = RowImages {
        key: &mut masked.key,
        after: masked.after.as_mut(),
        before: masked.before.as_mut(),
    };
    let outcome = policy
        .apply_to_rows(PREVIEW_KEY, &sample.schema, &sample.table, rows)
        .map(|()| masked);
    Preview { applied, outcome }
}

/// The example a preview starts from when the workspace has no recent event.
pub fn example_sample() -> (String, String) {
    let example = serde_json::json!({
        "key": { "id": 4711 },
        "after": {
            "id": 4711,
            "name": "Ada Lovelace",
            "email": "ada@example.com",
            "phone": "+44 20 7946 0958",
            "address": { "street": "12 St James's Square", "city": "London" },
            "contacts": [ { "kind": "billing", "email": "accounts@example.com" } ],
            "plan": "fleet-pro"
        }
    });
    (
        "public.customers".into(),
        serde_json::to_string_pretty(&example).unwrap_or_default(),
    )
}

/// The sample from a bronze event: its table and its row images, pretty-printed.
pub fn bronze_sample(sample: store::masking::BronzeSample) -> (String, String) {
    let mut object = Map::new();
    if let Value::Object(payload) = sample.payload {
        for name in ["key", "after", "before"] {
            if let Some(value) = payload.get(name).filter(|value| !value.is_null()) {
                object.insert(name.into(), value.clone());
            }
        }
    }
    (
        format!("{}.{}", sample.schema_name, sample.table_name),
        serde_json::to_string_pretty(&Value::Object(object)).unwrap_or_default(),
    )
}
