//! The stable reason codes the edge answers with, for a whole batch or for one event.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a batch or an event was refused. The snake_case text ([`ReasonCode::as_str`], also the
/// serde form) is part of the wire contract: agents and dashboards match on it, so a code is
/// never renamed. New codes may be added within a major version; a receiver that meets a code it
/// does not know reads it as [`ReasonCode::Unknown`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    /// Not JSON, trailing bytes, a byte order mark, top level not an object, no `events` array.
    InvalidJson,
    /// The body is not valid UTF-8 (overlong forms and encoded surrogates included).
    InvalidUtf8,
    /// A string or key holds U+0000, which PostgreSQL `jsonb` cannot store.
    NulInString,
    /// An object repeats a key.
    DuplicateKey,
    /// Two keys of an object differ as sent but are the same once normalised to Unicode NFC
    /// (`é` as U+00E9 and as `e` + U+0301): the edge stores keys in NFC and would have to drop
    /// one of them.
    KeysCollideAfterNormalisation,
    /// Objects and arrays nest deeper than `max_depth` (or, for one event, deeper than masking
    /// descends into JSON held in strings).
    NestingTooDeep,
    /// A string or key is longer than `max_string_bytes`.
    StringTooLong,
    /// The body as sent is larger than `max_body_bytes`.
    BodyTooLarge,
    /// The body decompresses to more than `max_decompressed_bytes`.
    DecompressedTooLarge,
    /// More events than `max_events` in one batch.
    TooManyEvents,
    /// A `Content-Encoding` other than identity, gzip or zstd.
    UnsupportedEncoding,
    /// The body does not decompress with the declared `Content-Encoding`.
    InvalidCompression,
    /// A `Tributary-Protocol` major version this edge does not speak.
    UnsupportedVersion,
    /// `events` is an empty array.
    EmptyBatch,
    /// A required field is absent or null.
    MissingField,
    /// `op` is a string but not one of the five operations.
    UnknownOp,
    /// A field has the wrong JSON type or an unusable value (including numbers outside the
    /// 64-bit integer and double ranges).
    InvalidType,
    /// `event_time` is not RFC 3339 with an explicit offset.
    InvalidTimestamp,
    /// `key` is empty for an insert, update, delete or read.
    MissingKey,
    /// A field that the event's `op` does not allow (a delete with `after`, a truncate with a key).
    UnexpectedField,
    /// `event_id` is not the id derived from the source, commit time, commit LSN and sequence.
    EventIdMismatch,
    /// The same `event_id` appears earlier in the batch with a different payload.
    EventIdConflict,
    /// The payload names a tenant other than the client certificate's.
    TenantMismatch,
    /// The payload names a source other than the client certificate's.
    SourceMismatch,
    /// A schema, table or column name is empty, too long or holds control characters.
    InvalidName,
    /// `key` has more columns than `max_key_columns`.
    TooManyKeyColumns,
    /// The tenant's masking policy would drop or redact a primary-key column, which would make
    /// the row impossible to join or to tell apart; the policy should hash it instead.
    PolicyDropsKey,
    /// A code this build does not know (sent by a newer peer).
    #[serde(other)]
    Unknown,
}

impl ReasonCode {
    /// Every code, in the order of the documentation's table.
    pub const ALL: [ReasonCode; 28] = [
        ReasonCode::InvalidJson,
        ReasonCode::InvalidUtf8,
        ReasonCode::NulInString,
        ReasonCode::DuplicateKey,
        ReasonCode::KeysCollideAfterNormalisation,
        ReasonCode::NestingTooDeep,
        ReasonCode::StringTooLong,
        ReasonCode::BodyTooLarge,
        ReasonCode::DecompressedTooLarge,
        ReasonCode::TooManyEvents,
        ReasonCode::UnsupportedEncoding,
        ReasonCode::InvalidCompression,
        ReasonCode::UnsupportedVersion,
        ReasonCode::EmptyBatch,
        ReasonCode::MissingField,
        ReasonCode::UnknownOp,
        ReasonCode::InvalidType,
        ReasonCode::InvalidTimestamp,
        ReasonCode::MissingKey,
        ReasonCode::UnexpectedField,
        ReasonCode::EventIdMismatch,
        ReasonCode::EventIdConflict,
        ReasonCode::TenantMismatch,
        ReasonCode::SourceMismatch,
        ReasonCode::InvalidName,
        ReasonCode::TooManyKeyColumns,
        ReasonCode::PolicyDropsKey,
        ReasonCode::Unknown,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            ReasonCode::InvalidJson => "invalid_json",
            ReasonCode::InvalidUtf8 => "invalid_utf8",
            ReasonCode::NulInString => "nul_in_string",
            ReasonCode::DuplicateKey => "duplicate_key",
            ReasonCode::KeysCollideAfterNormalisation => "keys_collide_after_normalisation",
            ReasonCode::NestingTooDeep => "nesting_too_deep",
            ReasonCode::StringTooLong => "string_too_long",
            ReasonCode::BodyTooLarge => "body_too_large",
            ReasonCode::DecompressedTooLarge => "decompressed_too_large",
            ReasonCode::TooManyEvents => "too_many_events",
            ReasonCode::UnsupportedEncoding => "unsupported_encoding",
            ReasonCode::InvalidCompression => "invalid_compression",
            ReasonCode::UnsupportedVersion => "unsupported_version",
            ReasonCode::EmptyBatch => "empty_batch",
            ReasonCode::MissingField => "missing_field",
            ReasonCode::UnknownOp => "unknown_op",
            ReasonCode::InvalidType => "invalid_type",
            ReasonCode::InvalidTimestamp => "invalid_timestamp",
            ReasonCode::MissingKey => "missing_key",
            ReasonCode::UnexpectedField => "unexpected_field",
            ReasonCode::EventIdMismatch => "event_id_mismatch",
            ReasonCode::EventIdConflict => "event_id_conflict",
            ReasonCode::TenantMismatch => "tenant_mismatch",
            ReasonCode::SourceMismatch => "source_mismatch",
            ReasonCode::InvalidName => "invalid_name",
            ReasonCode::TooManyKeyColumns => "too_many_key_columns",
            ReasonCode::PolicyDropsKey => "policy_drops_key",
            ReasonCode::Unknown => "unknown",
        }
    }

    /// The HTTP status of a whole-batch refusal with this code: 413 for size limits, 415 for an
    /// unsupported encoding, 403 when the payload contradicts the certificate, 400 otherwise.
    /// (Per-event codes travel inside a 200 response; their status is what they would get if
    /// they ended a whole batch.)
    pub const fn http_status(self) -> u16 {
        match self {
            ReasonCode::BodyTooLarge
            | ReasonCode::DecompressedTooLarge
            | ReasonCode::TooManyEvents => 413,
            ReasonCode::UnsupportedEncoding => 415,
            ReasonCode::TenantMismatch | ReasonCode::SourceMismatch => 403,
            _ => 400,
        }
    }

    /// Whether the code can end a whole batch (as opposed to refusing one event of it).
    pub const fn is_batch_level(self) -> bool {
        matches!(
            self,
            ReasonCode::InvalidJson
                | ReasonCode::InvalidUtf8
                | ReasonCode::NestingTooDeep
                | ReasonCode::BodyTooLarge
                | ReasonCode::DecompressedTooLarge
                | ReasonCode::TooManyEvents
                | ReasonCode::UnsupportedEncoding
                | ReasonCode::InvalidCompression
                | ReasonCode::UnsupportedVersion
                | ReasonCode::EmptyBatch
                | ReasonCode::TenantMismatch
                | ReasonCode::SourceMismatch
                | ReasonCode::DuplicateKey
                | ReasonCode::InvalidType
        )
    }

    /// Whether the code can refuse one event while the rest of its batch goes on.
    pub const fn is_event_level(self) -> bool {
        matches!(
            self,
            ReasonCode::InvalidJson
                | ReasonCode::NestingTooDeep
                | ReasonCode::NulInString
                | ReasonCode::DuplicateKey
                | ReasonCode::KeysCollideAfterNormalisation
                | ReasonCode::StringTooLong
                | ReasonCode::MissingField
                | ReasonCode::UnknownOp
                | ReasonCode::InvalidType
                | ReasonCode::InvalidTimestamp
                | ReasonCode::MissingKey
                | ReasonCode::UnexpectedField
                | ReasonCode::EventIdMismatch
                | ReasonCode::EventIdConflict
                | ReasonCode::InvalidName
                | ReasonCode::TooManyKeyColumns
                | ReasonCode::PolicyDropsKey
        )
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
