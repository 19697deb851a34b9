//! PII masking: a tenant's rules (a source table, a field path and an action) applied to every
//! event's `key`, `after` and `before`. The edge runs it before anything is published, stored or
//! logged; the web app's policy preview runs the very same code on a sample event, which is why
//! it lives in the wire-contract crate both of them share (it does no I/O).
//!
//! A rule applies to every table (`*`) or to one: `schema.table`, or `table` in any schema. A
//! path is anchored at the row: `email` is the column `email`, `customer.email` the key `email`
//! inside the column `customer`, `*.email` the key `email` inside any column. Keys match
//! case-insensitively (Unicode lowercase); arrays are traversed transparently at any depth, so
//! `contacts.email` reaches every element of `contacts`; a string that holds a JSON object or
//! array (or a JSON-encoded string) is parsed, masked inside and written back. Rules apply in one
//! canonical order (by path, then table, byte-wise), whatever order they were stored or typed
//! in, so the edge and the preview agree.
//!
//! Masking fails closed: a value nested deeper than the traversal bound is an error, not a value
//! left unmasked, and a rule that would drop or redact a primary-key column is refused (a key
//! must stay joinable: hash it instead).

mod free_text;

pub use free_text::{MASKED, mask_free_text};

use std::fmt;
use std::str::FromStr;

use crate::{ChangeEvent, ReasonCode};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;

/// The longest field path, in bytes (the policy table's limit).
pub const MAX_PATH_BYTES: usize = 500;

/// What a hashed value starts with; the rest is 64 lowercase hex digits.
pub const HASH_PREFIX: &str = "hmac-sha256:";

/// What a redacted value becomes.
pub const REDACTED: &str = "[redacted]";

/// The shortest tenant secret `apply` hashes with. Tenant secrets are 32 random bytes; a
/// shorter one is a wiring mistake that would make hashes guessable.
pub const MIN_SECRET_BYTES: usize = 16;

/// How deep masking descends (objects, arrays and embedded JSON together) before it gives up
/// with an error. Decoded events nest at most 32 levels; this only bounds the stack.
const MAX_TRAVERSAL_DEPTH: usize = 256;

/// How many strings-inside-strings masking parses on one path.
const MAX_EMBEDDED_LEVELS: usize = 8;

/// What a rule does to the values its path reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MaskAction {
    /// Replace the value with `hmac-sha256:<hex>`, keyed by the tenant's secret over the
    /// value's canonical JSON text: equal values stay equal (and joinable) within a tenant,
    /// and cannot be linked across tenants.
    Hash,
    /// Replace the value with the string `[redacted]`.
    Redact,
    /// Remove the key.
    Drop,
}

impl MaskAction {
    /// Every action, in the order people are offered them.
    pub const ALL: [MaskAction; 3] = [MaskAction::Hash, MaskAction::Redact, MaskAction::Drop];

    pub const fn as_str(self) -> &'static str {
        match self {
            MaskAction::Hash => "hash",
            MaskAction::Redact => "redact",
            MaskAction::Drop => "drop",
        }
    }
}

impl fmt::Display for MaskAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Text that is not `hash`, `redact` or `drop`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a masking action must be hash, redact or drop")]
pub struct UnknownMaskAction;

impl FromStr for MaskAction {
    type Err = UnknownMaskAction;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "hash" => Ok(MaskAction::Hash),
            "redact" => Ok(MaskAction::Redact),
            "drop" => Ok(MaskAction::Drop),
            _ => Err(UnknownMaskAction),
        }
    }
}

/// Why a field path cannot be used. The messages do not repeat the path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldPathError {
    #[error("a field path must not be empty")]
    Empty,
    #[error("a field path must not have an empty segment (`a..b`, `.a`, `a.`)")]
    EmptySegment,
    #[error("a field path must be at most {max} bytes")]
    TooLong { max: usize },
    #[error("a field path must not contain control characters")]
    ControlCharacter,
    #[error("`**` stands for any depth above a field; it cannot end a path (`**.email`)")]
    EndsWithAnyDepth,
}

/// A path to the values a rule masks: segments separated by `.`, each a key (matched
/// case-insensitively), `*` (any key at that level) or `**` (any depth, zero levels included:
/// `**.email` is an `email` key anywhere). Keys that themselves contain a `.` cannot be named.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FieldPath {
    text: String,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Segment {
    Any,
    /// Zero or more levels of any keys.
    AnyDepth,
    /// Unicode-lowercased.
    Key(String),
}

impl Segment {
    fn matches(&self, key: &str) -> bool {
        match self {
            Segment::Any | Segment::AnyDepth => true,
            Segment::Key(lowercase) => {
                // Lowercasing can change the length, so compare the lowercased text, but skip
                // the allocation when the key is already lowercase.
                key == lowercase || key.to_lowercase() == *lowercase
            }
        }
    }
}

impl FieldPath {
    pub fn parse(text: &str) -> Result<Self, FieldPathError> {
        if text.is_empty() {
            return Err(FieldPathError::Empty);
        }
        if text.len() > MAX_PATH_BYTES {
            return Err(FieldPathError::TooLong {
                max: MAX_PATH_BYTES,
            });
        }
        if text.chars().any(char::is_control) {
            return Err(FieldPathError::ControlCharacter);
        }
        let segments = text
            .split('.')
            .map(|segment| match segment {
                "" => Err(FieldPathError::EmptySegment),
                "*" => Ok(Segment::Any),
                "**" => Ok(Segment::AnyDepth),
                key => Ok(Segment::Key(key.to_lowercase())),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if segments.last() == Some(&Segment::AnyDepth) {
            return Err(FieldPathError::EndsWithAnyDepth);
        }
        Ok(Self {
            text: text.to_owned(),
            segments,
        })
    }

    /// The path as it was written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the path names a column itself (one segment) rather than something inside one.
    pub fn is_column(&self) -> bool {
        self.segments.len() == 1
    }
}

impl FromStr for FieldPath {
    type Err = FieldPathError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        FieldPath::parse(text)
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Why masking refused an event or a policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaskError {
    /// A `drop` rule reaches a primary-key column (or into one).
    #[error("a drop rule matches key column {column:?}; a key must stay joinable, hash it instead")]
    DropsKeyColumn { column: String },
    /// A `redact` rule reaches a primary-key column: every row would get the same key.
    #[error(
        "a redact rule matches key column {column:?}; a key must stay joinable, hash it instead"
    )]
    RedactsKeyColumn { column: String },
    /// A value nests deeper than masking descends; it is refused rather than stored unmasked.
    #[error("a value nests too deeply to be masked")]
    TooDeep,
    /// The tenant secret is too short to hash with (a wiring mistake, not the event's fault).
    #[error("the tenant masking secret is shorter than {min_bytes} bytes")]
    SecretTooShort { min_bytes: usize },
}

impl MaskError {
    /// The reason an event is rejected with, or `None` when the edge itself is at fault (it
    /// should then fail the request, not blame the event).
    pub fn event_reason(&self) -> Option<ReasonCode> {
        match self {
            MaskError::DropsKeyColumn { .. } | MaskError::RedactsKeyColumn { .. } => {
                Some(ReasonCode::PolicyDropsKey)
            }
            MaskError::TooDeep => Some(ReasonCode::NestingTooDeep),
            MaskError::SecretTooShort { .. } => None,
        }
    }
}

/// The longest table name a rule can be scoped to, in bytes: a PostgreSQL schema and table
/// name (63 bytes each) and the dot between them.
pub const MAX_TABLE_BYTES: usize = 127;

/// Why a table scope cannot be used. The messages do not repeat the name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableScopeError {
    #[error("a table must be `*` (every table), `schema.table` or `table`")]
    Empty,
    #[error("a table name must be at most {max} bytes")]
    TooLong { max: usize },
    #[error("a table name must not contain control characters or spaces at either end")]
    BadCharacter,
    #[error(
        "a table must be `*`, `schema.table` or `table`: one dot at most, with a name on each side"
    )]
    BadShape,
}

/// Which tables a rule applies to: every table, or one table named `schema.table` (that schema
/// only) or `table` (that table in any schema). Names match exactly, as PostgreSQL stores them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TableScope {
    Every,
    Named(String),
}

impl TableScope {
    /// What every-table rules are written as.
    pub const EVERY: &'static str = "*";

    pub fn parse(text: &str) -> Result<Self, TableScopeError> {
        if text == Self::EVERY {
            return Ok(TableScope::Every);
        }
        if text.is_empty() {
            return Err(TableScopeError::Empty);
        }
        if text.len() > MAX_TABLE_BYTES {
            return Err(TableScopeError::TooLong {
                max: MAX_TABLE_BYTES,
            });
        }
        if text.chars().any(char::is_control) || text.trim() != text {
            return Err(TableScopeError::BadCharacter);
        }
        let parts: Vec<&str> = text.split('.').collect();
        if parts.len() > 2
            || parts
                .iter()
                .any(|part| part.is_empty() || part.contains('*'))
        {
            return Err(TableScopeError::BadShape);
        }
        Ok(TableScope::Named(text.to_owned()))
    }

    /// The scope as it is written and stored: `*` or the name.
    pub fn as_str(&self) -> &str {
        match self {
            TableScope::Every => Self::EVERY,
            TableScope::Named(name) => name,
        }
    }

    /// Whether the scope covers `schema.table`.
    pub fn matches(&self, schema: &str, table: &str) -> bool {
        match self {
            TableScope::Every => true,
            TableScope::Named(name) => match name.split_once('.') {
                Some((named_schema, named_table)) => named_schema == schema && named_table == table,
                None => name == table,
            },
        }
    }
}

impl FromStr for TableScope {
    type Err = TableScopeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        TableScope::parse(text)
    }
}

impl fmt::Display for TableScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One rule: on the tables of `table`, do `action` to what `path` reaches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MaskRule {
    pub table: TableScope,
    pub path: FieldPath,
    pub action: MaskAction,
}

impl MaskRule {
    /// The order rules apply in: by path, then by table, byte-wise (never a database collation).
    fn order_key(&self) -> (&str, &str) {
        (self.path.as_str(), self.table.as_str())
    }
}

/// A rule for every table.
impl From<(FieldPath, MaskAction)> for MaskRule {
    fn from((path, action): (FieldPath, MaskAction)) -> Self {
        MaskRule {
            table: TableScope::Every,
            path,
            action,
        }
    }
}

/// The row images of one change, as masking sees them.
#[derive(Debug)]
pub struct RowImages<'a> {
    pub key: &'a mut Map<String, Value>,
    pub after: Option<&'a mut Map<String, Value>>,
    pub before: Option<&'a mut Map<String, Value>>,
}

/// A tenant's masking rules, kept in their canonical order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaskingPolicy {
    rules: Vec<MaskRule>,
}

impl MaskingPolicy {
    /// The policy of `rules`, sorted into the order they apply in.
    pub fn new<R: Into<MaskRule>>(rules: impl IntoIterator<Item = R>) -> Self {
        let mut rules: Vec<MaskRule> = rules.into_iter().map(Into::into).collect();
        rules.sort_by(|left, right| left.order_key().cmp(&right.order_key()));
        Self { rules }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules, in the order they apply.
    pub fn rules(&self) -> &[MaskRule] {
        &self.rules
    }

    /// Checks, when a rule is saved, that no `drop` or `redact` names one of a table's key
    /// columns: a path of one segment that matches a key column (including `*`), or a longer
    /// path whose first segment names one. A longer path starting with `*` cannot be judged
    /// without data; [`MaskingPolicy::apply`] refuses the events it would break.
    pub fn validate_drop_against_key_columns(&self, key_columns: &[&str]) -> Result<(), MaskError> {
        for MaskRule { path, action, .. } in &self.rules {
            if *action == MaskAction::Hash {
                continue;
            }
            let first = match path.segments.as_slice() {
                // `**.id` reaches a top-level `id` too.
                [Segment::AnyDepth, only] => only,
                [first, ..] => first,
                [] => continue,
            };
            if !path.is_column() && matches!(first, Segment::Any | Segment::AnyDepth) {
                continue;
            }
            if let Some(column) = key_columns.iter().find(|column| first.matches(column)) {
                return Err(key_error(*action, column));
            }
        }
        Ok(())
    }

    /// Masks `event` in place with the rules for its table; see [`MaskingPolicy::apply_to_rows`].
    pub fn apply(&self, secret: &[u8], event: &mut ChangeEvent) -> Result<(), MaskError> {
        let rows = RowImages {
            key: &mut event.key,
            after: event.after.as_mut(),
            before: event.before.as_mut(),
        };
        self.apply_to_rows(secret, &event.schema, &event.table, rows)
    }

    /// Masks the row images of a change to `schema.table` in place: every rule whose table
    /// scope covers it, in order, on `key`, `after` and `before`. `secret` is the tenant's HMAC
    /// key. On error the rows are unchanged if the error is about a key column, and must be
    /// rejected (never stored) in any case.
    pub fn apply_to_rows(
        &self,
        secret: &[u8],
        schema: &str,
        table: &str,
        rows: RowImages<'_>,
    ) -> Result<(), MaskError> {
        let rules: Vec<&MaskRule> = self
            .rules
            .iter()
            .filter(|rule| rule.table.matches(schema, table))
            .collect();
        if rules.is_empty() {
            return Ok(());
        }
        let hashing = rules.iter().any(|rule| rule.action == MaskAction::Hash);
        let hasher = Hasher::new(secret, hashing)?;
        let RowImages {
            key,
            mut after,
            mut before,
        } = rows;
        // Refuse before changing anything: a drop or redact that would reach into the key.
        for rule in &rules {
            if rule.action == MaskAction::Hash || key.is_empty() {
                continue;
            }
            let mut probe = key.clone();
            if let Some(column) =
                mask_object(&mut probe, &rule.path.segments, rule.action, &hasher, 0, 0)?
            {
                return Err(key_error(rule.action, &column));
            }
        }
        for rule in &rules {
            let segments = &rule.path.segments;
            mask_object(key, segments, rule.action, &hasher, 0, 0)?;
            if let Some(after) = after.as_deref_mut() {
                mask_object(after, segments, rule.action, &hasher, 0, 0)?;
            }
            if let Some(before) = before.as_deref_mut() {
                mask_object(before, segments, rule.action, &hasher, 0, 0)?;
            }
        }
        Ok(())
    }
}

fn key_error(action: MaskAction, column: &str) -> MaskError {
    let column = column.to_owned();
    match action {
        MaskAction::Redact => MaskError::RedactsKeyColumn { column },
        MaskAction::Drop | MaskAction::Hash => MaskError::DropsKeyColumn { column },
    }
}

/// The tenant's keyed hash.
struct Hasher {
    mac: Hmac<Sha256>,
}

impl Hasher {
    /// `hashing`: whether the policy will hash at all (only then must the secret be strong).
    fn new(secret: &[u8], hashing: bool) -> Result<Self, MaskError> {
        let too_short = MaskError::SecretTooShort {
            min_bytes: MIN_SECRET_BYTES,
        };
        if hashing && secret.len() < MIN_SECRET_BYTES {
            return Err(too_short);
        }
        let mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| too_short)?;
        Ok(Self { mac })
    }

    /// `hmac-sha256:` and the lowercase hex HMAC of the value's canonical JSON text (compact,
    /// keys sorted: what `serde_json::to_string` writes for a `Value`).
    fn hash(&self, value: &Value) -> String {
        let mut text = String::new();
        write_canonical(value, &mut text);
        let mut mac = self.mac.clone();
        mac.update(text.as_bytes());
        format!("{HASH_PREFIX}{}", hex::encode(mac.finalize().into_bytes()))
    }
}

/// Compact JSON with object keys sorted, whatever order the map keeps them in (serde_json's
/// `preserve_order` feature could be switched on by any crate of the build).
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|left, right| left.0.cmp(right.0));
            out.push('{');
            for (position, (key, item)) in entries.into_iter().enumerate() {
                if position > 0 {
                    out.push(',');
                }
                out.push_str(&Value::from(key.as_str()).to_string());
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (position, item) in items.iter().enumerate() {
                if position > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Applies one rule below `object`; returns the first key of `object` under which something
/// was masked (at the row level: the column).
fn mask_object(
    object: &mut Map<String, Value>,
    segments: &[Segment],
    action: MaskAction,
    hasher: &Hasher,
    depth: usize,
    embedded: usize,
) -> Result<Option<String>, MaskError> {
    let Some((first, rest)) = segments.split_first() else {
        return Ok(None);
    };
    if *first == Segment::AnyDepth {
        // Zero levels here, then one or more levels below every key.
        let mut masked_under = mask_object(object, rest, action, hasher, depth, embedded)?;
        let keys: Vec<String> = object.keys().cloned().collect();
        for key in keys {
            if let Some(value) = object.get_mut(&key)
                && mask_value(value, segments, action, hasher, depth + 1, embedded)?
                && masked_under.is_none()
            {
                masked_under = Some(key);
            }
        }
        return Ok(masked_under);
    }
    let keys: Vec<String> = object
        .keys()
        .filter(|key| first.matches(key))
        .cloned()
        .collect();
    let mut masked_under = None;
    for key in keys {
        let masked = if rest.is_empty() {
            act(object, &key, action, hasher)
        } else {
            match object.get_mut(&key) {
                Some(value) => mask_value(value, rest, action, hasher, depth + 1, embedded)?,
                None => false,
            }
        };
        if masked && masked_under.is_none() {
            masked_under = Some(key);
        }
    }
    Ok(masked_under)
}

/// Applies the rest of a path to a value: into objects, through arrays, into JSON held in
/// strings. Returns whether anything was masked.
fn mask_value(
    value: &mut Value,
    segments: &[Segment],
    action: MaskAction,
    hasher: &Hasher,
    depth: usize,
    embedded: usize,
) -> Result<bool, MaskError> {
    if depth > MAX_TRAVERSAL_DEPTH {
        return Err(MaskError::TooDeep);
    }
    match value {
        Value::Object(object) => {
            Ok(mask_object(object, segments, action, hasher, depth, embedded)?.is_some())
        }
        Value::Array(items) => {
            let mut masked = false;
            for item in items {
                masked |= mask_value(item, segments, action, hasher, depth + 1, embedded)?;
            }
            Ok(masked)
        }
        Value::String(text) => mask_embedded(text, segments, action, hasher, depth, embedded),
        Value::Null | Value::Bool(_) | Value::Number(_) => Ok(false),
    }
}

/// A string that holds JSON (`"{\"email\": ...}"`): parsed, masked inside and written back
/// compactly, only if something was masked. A string that is not JSON is left as it is.
fn mask_embedded(
    text: &mut String,
    segments: &[Segment],
    action: MaskAction,
    hasher: &Hasher,
    depth: usize,
    embedded: usize,
) -> Result<bool, MaskError> {
    if !text.trim_start().starts_with(['{', '[', '"']) {
        return Ok(false);
    }
    if embedded >= MAX_EMBEDDED_LEVELS {
        return Err(MaskError::TooDeep);
    }
    // serde_json's own recursion limit bounds this parse.
    let Ok(mut inner) = serde_json::from_str::<Value>(text) else {
        return Ok(false);
    };
    let masked = mask_value(
        &mut inner,
        segments,
        action,
        hasher,
        depth + 1,
        embedded + 1,
    )?;
    if masked {
        *text = inner.to_string();
    }
    Ok(masked)
}

/// The action on `object[key]`; whether it masked something. Null carries nothing to hide and
/// stays null under hash and redact.
fn act(object: &mut Map<String, Value>, key: &str, action: MaskAction, hasher: &Hasher) -> bool {
    match action {
        MaskAction::Drop => object.remove(key).is_some(),
        MaskAction::Hash | MaskAction::Redact => match object.get_mut(key) {
            None | Some(Value::Null) => false,
            Some(value) => {
                *value = Value::String(match action {
                    MaskAction::Hash => hasher.hash(value),
                    _ => REDACTED.to_owned(),
                });
                true
            }
        },
    }
}

#[cfg(test)]
mod tests;
