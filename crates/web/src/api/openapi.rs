//! The OpenAPI 3.1 document of `/api/v1`, served at `/api/v1/openapi.json`: the contract.
//!
//! Written here as a table rather than derived from the handlers: the handlers answer with JSON
//! built from the store's types, and deriving schemas would mean annotating every one of them
//! in two crates for little gain. What keeps the table true: every route is registered through
//! [`super::registry::Routes`] with its method, and a test (in `api/mod.rs`, which assembles
//! them) requires the registered and the documented operations to be the same set; every request
//! body is held to its schema here before a handler sees it ([`super::conformance`]), so a body
//! the document refuses is refused; and `scripts/fuzz-api` fuzzes the served document against
//! the running server (schemathesis), which finds any schema-valid request a handler still
//! refuses and any answer, status or header the document does not describe.

use domain::read_model::EntityKind;
use serde_json::{Map, Value, json};

/// Who may call an operation.
#[derive(Debug, Clone, Copy)]
pub enum Access {
    /// Anyone; no credentials.
    Public,
    /// Any valid API token or signed-in session, whatever its role.
    Authenticated,
    /// A tenant's API token or a member's session, whose role must hold the permission.
    Tenant(domain::Permission),
    /// A signed-in member's session only: what belongs to the person, not the workspace.
    Session,
    /// Internal operations staff, by session only.
    Staff,
}

/// One query parameter.
#[derive(Debug, Clone, Copy)]
pub struct QueryParam {
    pub name: &'static str,
    pub description: &'static str,
    /// The value's JSON Schema, as JSON text.
    pub schema: &'static str,
    pub required: bool,
}

const fn param(name: &'static str, description: &'static str, schema: &'static str) -> QueryParam {
    QueryParam {
        name,
        description,
        schema,
        required: false,
    }
}

/// An OpenAPI link: where what an operation answers can be used next (the fuzzer's stateful
/// phase follows them, as a generated client can).
#[derive(Debug, Clone, Copy)]
pub struct Link {
    pub name: &'static str,
    /// The operation linked to, by method and path.
    pub method: &'static str,
    pub path: &'static str,
    /// (parameter of the linked operation, runtime expression giving its value).
    pub parameters: &'static [(&'static str, &'static str)],
}

/// One documented operation.
#[derive(Debug, Clone, Copy)]
pub struct Operation {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub access: Access,
    pub query: &'static [QueryParam],
    /// The request body's schema (a component name), if it takes one.
    pub request: Option<&'static str>,
    /// Whether the body may be left out (read as `{}`).
    pub body_optional: bool,
    /// The success status and its schema (a component name; `None` for an empty body).
    pub response: (u16, Option<&'static str>),
    /// Failures particular to this operation: (status, when).
    pub failures: &'static [(u16, &'static str)],
    /// Links from the success answer to the operations that use what it returns.
    pub links: &'static [Link],
}

use domain::Permission as P;

const fn op(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    access: Access,
    response: (u16, Option<&'static str>),
) -> Operation {
    Operation {
        method,
        path,
        summary,
        access,
        query: &[],
        request: None,
        body_optional: false,
        response,
        failures: &[],
        links: &[],
    }
}

/// A string without U+0000, which PostgreSQL cannot store or compare.
const TEXT: &str = r#"{ "type": "string", "pattern": "^[^\\u0000]*$" }"#;

const AUDIT_QUERY: &[QueryParam] = &[
    param("action", "only actions starting with this text", TEXT),
    param(
        "actor",
        "only this actor type (empty: any)",
        r#"{ "enum": ["", "user", "cli", "system", "agent", "api_token"] }"#,
    ),
    param(
        "before",
        "only entries older than this sequence number (paging)",
        r#"{ "type": "integer", "minimum": -9223372036854775808, "maximum": 9223372036854775807 }"#,
    ),
    param(
        "limit",
        "at most this many entries: 100 by default; below 1 counts as 1, above 1000 as 1000",
        r#"{ "type": "integer", "minimum": -9223372036854775808, "maximum": 9223372036854775807 }"#,
    ),
];

/// The dead-letter explorer's filters and paging.
const DEAD_LETTER_QUERY: &[QueryParam] = &[
    param("reason", "only letters of this reason code", TEXT),
    param(
        "table",
        "only letters of events of this `schema.table`",
        TEXT,
    ),
    param(
        "from",
        "only letters whose latest failure is at or after this RFC 3339 time (empty: no bound)",
        DATE_TIME_OR_EMPTY,
    ),
    param(
        "to",
        "only letters whose latest failure is before this RFC 3339 time (empty: no bound)",
        DATE_TIME_OR_EMPTY,
    ),
    param(
        "replayed",
        "`true`: replayed letters only; `false`: letters waiting for a replay only; empty: both",
        r#"{ "enum": ["", "true", "false"] }"#,
    ),
    param(
        "cursor",
        "the `next_cursor` of the previous page (paging)",
        r#"{ "type": "string", "pattern": "^-?[0-9]{1,17}_[0-9a-f]{32}$" }"#,
    ),
    param(
        "limit",
        "at most this many letters: 50 by default; below 1 counts as 1, above 200 as 200",
        r#"{ "type": "integer", "minimum": -9223372036854775808, "maximum": 9223372036854775807 }"#,
    ),
];

/// Names a masking rule, as PUT and DELETE take it.
const RULE_QUERY: &[QueryParam] = &[
    param(
        "source_table",
        "the rule's table: `*`, `schema.table` or `table` (default `*`)",
        TEXT,
    ),
    QueryParam {
        required: true,
        ..param("field_path", "the rule's field path", TEXT)
    },
];

const LAST_OWNER: &[(u16, &str)] = &[(
    409,
    "the change would leave the workspace without an owner (`last_owner`)",
)];

const NO_RULE: &[(u16, &str)] = &[(
    404,
    "the workspace has no rule of that table and path (`not_found`)",
)];

const NO_SSO: &[(u16, &str)] = &[(404, "single sign-on is not configured (`not_found`)")];

const REGISTRY_QUERY: &[QueryParam] = &[
    param("q", "a part of the tenant's name, any case", TEXT),
    param(
        "plan",
        "free, team, business or enterprise (empty: any)",
        TEXT,
    ),
    param("industry", "exact industry", TEXT),
    param("region", "exact region", TEXT),
];

const DATE_TIME: &str = r#"{ "type": "string", "format": "date-time" }"#;
/// A time, or empty for the parameter's default.
const DATE_TIME_OR_EMPTY: &str =
    r#"{ "anyOf": [{ "type": "string", "format": "date-time" }, { "const": "" }] }"#;
const ENTITY_TEXT: &str = r#"{ "type": "string", "maxLength": 500, "pattern": "^[^\\u0000]*$" }"#;

const SERIES_QUERY: &[QueryParam] = &[
    QueryParam {
        required: true,
        ..param(
            "key",
            "the metric key",
            r#"{ "type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[^\\u0000]*$" }"#,
        )
    },
    param(
        "from",
        "the range's start, RFC 3339, inclusive (default: an hour before `to`); rounded down to the step",
        DATE_TIME,
    ),
    param(
        "to",
        "the range's end, RFC 3339, exclusive (default: now); after `from`, at most 1 day after it at 1m, 7 days at 5m, 90 days at 1h, 1830 days at 1d",
        DATE_TIME,
    ),
    param(
        "step",
        "the bucket width (default, or empty: the finest that covers the range); buckets are aligned in UTC",
        r#"{ "enum": ["", "1m", "5m", "1h", "1d"] }"#,
    ),
    param(
        "agg",
        "how a bucket's readings become one value (default, or empty: avg)",
        r#"{ "enum": ["", "avg", "min", "max", "sum", "count", "last"] }"#,
    ),
    param(
        "site",
        "readings of this site, its devices and its sessions",
        ENTITY_TEXT,
    ),
    param(
        "device",
        "readings of this device and its sessions",
        ENTITY_TEXT,
    ),
    param(
        "group_by",
        "one series per site or per device, the top `limit` by the aggregation over the range (empty: one series)",
        r#"{ "enum": ["", "site", "device"] }"#,
    ),
    param(
        "limit",
        "how many groups (default 10)",
        r#"{ "type": "integer", "minimum": 1, "maximum": 50 }"#,
    ),
];

/// The parameters every entity list takes.
macro_rules! list_params {
    ($sort:literal $(, $extra:expr)*) => {
        &[
            param("q", "a case-insensitive part of the id or the name", ENTITY_TEXT),
            $($extra,)*
            param("sort", "the order (every order ends with the id; empty: by id)", $sort),
            param("order", "ascending (default, or empty) or descending", r#"{ "enum": ["", "asc", "desc"] }"#),
            param(
                "limit",
                "page size (default 50)",
                r#"{ "type": "integer", "minimum": 1, "maximum": 500 }"#,
            ),
            param(
                "cursor",
                "the previous page's `next_cursor` (empty: the first page)",
                r#"{ "type": "string", "maxLength": 2000, "pattern": "^[A-Za-z0-9_-]*$" }"#,
            ),
        ]
    };
}

const SITES_QUERY: &[QueryParam] =
    list_params!(r#"{ "enum": ["", "id", "name", "recent", "updated_at"] }"#);
const DEVICES_QUERY: &[QueryParam] = list_params!(
    r#"{ "enum": ["", "id", "name", "recent", "updated_at"] }"#,
    param("site", "devices of this site", ENTITY_TEXT),
    param("status", "exact status", ENTITY_TEXT)
);
const SESSIONS_QUERY: &[QueryParam] = list_params!(
    r#"{ "enum": ["", "id", "recent", "updated_at"] }"#,
    param("site", "sessions at this site", ENTITY_TEXT),
    param("device", "sessions of this device", ENTITY_TEXT),
    param("status", "exact status", ENTITY_TEXT)
);

/// Every operation of `/api/v1`.
pub const OPERATIONS: &[Operation] = &[
    op(
        "get",
        "/api/v1/openapi.json",
        "This document",
        Access::Public,
        (200, None),
    ),
    Operation {
        query: SERIES_QUERY,
        ..op(
            "get",
            "/api/v1/analytics/series",
            "A metric's time series, bucketed, filtered by site or device and optionally one series per site or device",
            Access::Tenant(P::ViewDashboards),
            (200, Some("Series")),
        )
    },
    op(
        "get",
        "/api/v1/analytics/keys",
        "The catalogue: metric keys and typed extras fields, with first and last seen and counts",
        Access::Tenant(P::ViewDashboards),
        (200, Some("Catalogue")),
    ),
    Operation {
        query: SITES_QUERY,
        ..op(
            "get",
            "/api/v1/analytics/sites",
            "The workspace's sites, filtered, sorted and paged",
            Access::Tenant(P::ViewDashboards),
            (200, Some("EntityPage")),
        )
    },
    op(
        "get",
        "/api/v1/analytics/sites/{id}",
        "One site with its typed columns and extras",
        Access::Tenant(P::ViewDashboards),
        (200, Some("Entity")),
    ),
    Operation {
        query: DEVICES_QUERY,
        ..op(
            "get",
            "/api/v1/analytics/devices",
            "The workspace's devices, filtered, sorted and paged",
            Access::Tenant(P::ViewDashboards),
            (200, Some("EntityPage")),
        )
    },
    op(
        "get",
        "/api/v1/analytics/devices/{id}",
        "One device with its typed columns and extras",
        Access::Tenant(P::ViewDashboards),
        (200, Some("Entity")),
    ),
    Operation {
        query: SESSIONS_QUERY,
        ..op(
            "get",
            "/api/v1/analytics/sessions",
            "The workspace's sessions, filtered, sorted and paged",
            Access::Tenant(P::ViewDashboards),
            (200, Some("EntityPage")),
        )
    },
    op(
        "get",
        "/api/v1/analytics/sessions/{id}",
        "One session with its typed columns and extras",
        Access::Tenant(P::ViewDashboards),
        (200, Some("Entity")),
    ),
    op(
        "get",
        "/api/v1/sources",
        "List the workspace's sources, with each agent's last reported status",
        Access::Tenant(P::ViewSources),
        (200, Some("SourceList")),
    ),
    Operation {
        request: Some("NewSource"),
        failures: &[(
            409,
            "the workspace has a source of that name already (`already_exists`)",
        )],
        links: &[
            Link {
                name: "IssuePairingToken",
                method: "post",
                path: "/api/v1/sources/{source}/pairing-tokens",
                parameters: &[("source", "$response.body#/source/source_id")],
            },
            Link {
                name: "RevokeSource",
                method: "post",
                path: "/api/v1/sources/{source}/revoke",
                parameters: &[("source", "$response.body#/source/source_id")],
            },
            Link {
                name: "ListMappings",
                method: "get",
                path: "/api/v1/sources/{source}/mappings",
                parameters: &[("source", "$response.body#/source/source_id")],
            },
            Link {
                name: "SetMapping",
                method: "put",
                path: "/api/v1/sources/{source}/mappings/{table}",
                parameters: &[("source", "$response.body#/source/source_id")],
            },
        ],
        ..op(
            "post",
            "/api/v1/sources",
            "Create a source and its first one-time pairing token",
            Access::Tenant(P::ManageSources),
            (201, Some("CreatedSource")),
        )
    },
    op(
        "get",
        "/api/v1/sources/{source}",
        "One source with its derived status, its slot as last reported, its certificate in force and the forecast of when the source would invalidate the slot",
        Access::Tenant(P::ViewSources),
        (200, Some("SourceDetail")),
    ),
    Operation {
        query: &[
            param(
                "from",
                "the range's start, RFC 3339, inclusive (default, or empty: an hour before `to`)",
                DATE_TIME_OR_EMPTY,
            ),
            param(
                "to",
                "the range's end, RFC 3339, exclusive (default, or empty: now); after `from`, at most 7 days after it",
                DATE_TIME_OR_EMPTY,
            ),
        ],
        ..op(
            "get",
            "/api/v1/sources/{source}/status-history",
            "A source's status sampled at most once a minute (kept 7 days), oldest first",
            Access::Tenant(P::ViewSources),
            (200, Some("StatusHistory")),
        )
    },
    op(
        "post",
        "/api/v1/sources/{source}/pairing-tokens",
        "Issue a new one-time pairing token for a source",
        Access::Tenant(P::ManageSources),
        (201, Some("PairingToken")),
    ),
    Operation {
        request: Some("Revocation"),
        body_optional: true,
        ..op(
            "post",
            "/api/v1/sources/{source}/revoke",
            "Revoke a source and every certificate of its agent",
            Access::Tenant(P::ManageSources),
            (200, Some("Revoked")),
        )
    },
    Operation {
        request: Some("Pause"),
        body_optional: true,
        ..op(
            "post",
            "/api/v1/sources/{source}/pause",
            "Pause a source's ingestion: the edge refuses its batches with `423 source_paused` and its agent keeps them spooled until the source is resumed; pausing a paused source changes nothing; a revoked source cannot be paused",
            Access::Tenant(P::ManageSources),
            (200, Some("Source")),
        )
    },
    op(
        "post",
        "/api/v1/sources/{source}/resume",
        "Resume a paused source's ingestion: within a second the edge takes its batches again and its agent sends what it kept, each change once; resuming a source that is not paused changes nothing",
        Access::Tenant(P::ManageSources),
        (200, Some("Source")),
    ),
    op(
        "post",
        "/api/v1/sources/{source}/resync",
        "Ask a PostgreSQL source's agent for a resync: at its next status heartbeat (or as it starts, when it is down) it drops its replication slot, forgets its positions and takes a new snapshot; what it had spooled is still delivered. A request already waiting is kept; a simulator or revoked source is refused (403)",
        Access::Tenant(P::ManageSources),
        (200, Some("Source")),
    ),
    op(
        "post",
        "/api/v1/sources/{source}/rotate-certificate",
        "Ask the source's agent to replace its certificate: at its next status heartbeat it makes a new key and renews, and the renewal revokes the source's other certificates. A request already waiting is kept; a revoked source, or one whose agent never paired, is refused (403)",
        Access::Tenant(P::ManageSources),
        (200, Some("Source")),
    ),
    op(
        "get",
        "/api/v1/sources/{source}/setup",
        "Where a source's setup stands (the connector wizard's step: pair, check, tables, run, done or revoked), with the agent's commands, its agent.toml, the source database's prerequisites, the agent's last check and how each reported table would feed the read models",
        Access::Tenant(P::ManageSources),
        (200, Some("Setup")),
    ),
    Operation {
        request: Some("CaptureTables"),
        ..op(
            "put",
            "/api/v1/sources/{source}/tables",
            "Choose the tables a PostgreSQL source's agent captures (they go into its agent.toml; audited); a simulator source is refused",
            Access::Tenant(P::ManageSources),
            (200, Some("Setup")),
        )
    },
    op(
        "get",
        "/api/v1/sources/{source}/mappings",
        "A source's table-to-read-model mappings and the typed columns they may target",
        Access::Tenant(P::ViewSources),
        (200, Some("Mappings")),
    ),
    Operation {
        request: Some("NewMapping"),
        links: &[
            Link {
                name: "ListMappings",
                method: "get",
                path: "/api/v1/sources/{source}/mappings",
                parameters: &[("source", "$request.path.source")],
            },
            Link {
                name: "DeleteMapping",
                method: "delete",
                path: "/api/v1/sources/{source}/mappings/{table}",
                parameters: &[
                    ("source", "$request.path.source"),
                    ("table", "$request.path.table"),
                ],
            },
        ],
        ..op(
            "put",
            "/api/v1/sources/{source}/mappings/{table}",
            "Set how one source table maps to a read model (audited)",
            Access::Tenant(P::ManageSources),
            (200, Some("Mapping")),
        )
    },
    op(
        "delete",
        "/api/v1/sources/{source}/mappings/{table}",
        "Remove a table's mapping; the default mapping applies again (audited)",
        Access::Tenant(P::ManageSources),
        (204, None),
    ),
    Operation {
        request: Some("NewReplay"),
        failures: &[
            (
                409,
                "a range replay or rebuild of the workspace is pending or running (`replay_under_way`)",
            ),
            (
                422,
                "a range out of bounds, `details.field` naming the bound: `range_inverted`, \
                 `range_empty`, `range_in_future` (starts after now), `range_ends_too_late` \
                 (ends more than 5 minutes from now) or `range_too_long` (over 7 days)",
            ),
        ],
        links: &[Link {
            name: "ReplayStatus",
            method: "get",
            path: "/api/v1/replays/{request}",
            parameters: &[("request", "$response.body#/request_id")],
        }],
        ..op(
            "post",
            "/api/v1/replays",
            "Ask the pipeline to replay the dead-letter queue, a time range, or rebuild",
            Access::Tenant(P::ManageReplays),
            (202, Some("ReplayAccepted")),
        )
    },
    op(
        "get",
        "/api/v1/replays/{request}",
        "A replay request's progress",
        Access::Tenant(P::ManageReplays),
        (200, Some("Replay")),
    ),
    op(
        "get",
        "/api/v1/dead-letters",
        "Events that could not be applied, with reason codes (newest 1000)",
        Access::Tenant(P::ViewDeadLetters),
        (200, Some("DeadLetters")),
    ),
    Operation {
        query: DEAD_LETTER_QUERY,
        failures: &[(404, "the workspace has no source of this id (`not_found`)")],
        ..op(
            "get",
            "/api/v1/sources/{source}/dead-letters",
            "A source's dead letters grouped by reason code and table (count, first and latest \
             failure), and one page of its letters, latest failure first, with the filters \
             given: attempts, first and latest failure, and the event as the edge masked it",
            Access::Tenant(P::ViewDeadLetters),
            (200, Some("SourceDeadLetters")),
        )
    },
    Operation {
        failures: &[(
            404,
            "the workspace has no dead letter of this id (`not_found`)",
        )],
        ..op(
            "get",
            "/api/v1/dead-letters/{letter}",
            "One dead letter, with its event as the edge masked it",
            Access::Tenant(P::ViewDeadLetters),
            (200, Some("DeadLetter")),
        )
    },
    Operation {
        request: Some("DeadLetterReplay"),
        failures: &[
            (
                404,
                "the workspace has no source of this id, or no letter of the source of one of \
                 `ids` (`not_found`)",
            ),
            (
                422,
                "the selection is empty (`empty_selection`), `all` comes with other fields \
                 (`invalid`, by the schema), the window ends before it starts \
                 (`range_inverted`) or has one bound only (`invalid`); `details.field` names the \
                 field",
            ),
        ],
        links: &[Link {
            name: "ReplayProgress",
            method: "get",
            path: "/api/v1/replays/{request}",
            parameters: &[("request", "$response.body#/request_id")],
        }],
        ..op(
            "post",
            "/api/v1/sources/{source}/dead-letters/replay",
            "Ask the pipeline to replay a source's dead letters: all, or those of a reason code, \
             a table, chosen ids or a window of latest failures (every condition given holds); \
             letters replayed already are not applied again (audited)",
            Access::Tenant(P::ManageReplays),
            (202, Some("ReplayAccepted")),
        )
    },
    op(
        "get",
        "/api/v1/unmapped-tables",
        "Source tables no mapping applies to: their events wait in bronze, counted, until the \
         table is mapped and the workspace rebuilt (most recently seen first, at most 1000)",
        Access::Tenant(P::ManageSources),
        (200, Some("UnmappedTables")),
    ),
    op(
        "get",
        "/api/v1/drift",
        "The schema-drift inbox: source fields no typed column claims, kept in the typed extras, \
         per source table, entity kind and JSON type, not dismissed (most recently seen first, at \
         most 1000)",
        Access::Tenant(P::ManageSources),
        (200, Some("DriftFields")),
    ),
    Operation {
        request: Some("DriftPromotion"),
        failures: &[
            (
                404,
                "the workspace has no drift field of this id (`not_found`)",
            ),
            (
                409,
                "the field cannot be promoted as asked: its table maps by convention \
                 (`mapped_by_convention`: save its mapping first), is no longer mapped as the \
                 field's kind (`kind_changed`), a type the field was seen with does not always \
                 convert to the column's type (`incompatible_type`), the typed column is not one \
                 of the field's kind or is fed already (`invalid_mapping`); or a range replay or \
                 rebuild of the workspace is pending or running (`replay_under_way`)",
            ),
        ],
        links: &[Link {
            name: "RebuildStatus",
            method: "get",
            path: "/api/v1/replays/{request}",
            parameters: &[("request", "$response.body#/rebuild_request_id")],
        }],
        ..op(
            "post",
            "/api/v1/drift/promote",
            "Make a drift field a typed column: add it to its table's mapping and request a \
             rebuild, in one audited transaction (needs manage_replays too)",
            Access::Tenant(P::ManageSources),
            (200, Some("DriftPromoted")),
        )
    },
    Operation {
        request: Some("DriftDismissal"),
        failures: &[(
            404,
            "the workspace has no drift field of this id (`not_found`)",
        )],
        ..op(
            "post",
            "/api/v1/drift/dismiss",
            "Hide a drift field (one JSON type of it) until it is seen with a new type (audited)",
            Access::Tenant(P::ManageSources),
            (204, None),
        )
    },
    op(
        "get",
        "/api/v1/masking-policies",
        "The workspace's masking rules (applied at the edge, before the bus and bronze)",
        Access::Tenant(P::ManageMasking),
        (200, Some("MaskingRules")),
    ),
    Operation {
        request: Some("MaskingRule"),
        failures: &[(
            409,
            "the workspace has a rule of that table and path already (`already_exists`)",
        )],
        links: &[
            Link {
                name: "ChangeRule",
                method: "put",
                path: "/api/v1/masking-policies",
                parameters: &[
                    ("source_table", "$response.body#/source_table"),
                    ("field_path", "$response.body#/field_path"),
                ],
            },
            Link {
                name: "RemoveRule",
                method: "delete",
                path: "/api/v1/masking-policies",
                parameters: &[
                    ("source_table", "$response.body#/source_table"),
                    ("field_path", "$response.body#/field_path"),
                ],
            },
        ],
        ..op(
            "post",
            "/api/v1/masking-policies",
            "Add a rule: a table's field path is hashed, redacted or dropped (audited)",
            Access::Tenant(P::ManageMasking),
            (201, Some("MaskingRule")),
        )
    },
    Operation {
        request: Some("MaskingRule"),
        query: RULE_QUERY,
        failures: &[
            (
                404,
                "the workspace has no rule of that table and path (`not_found`)",
            ),
            (
                409,
                "the workspace has a rule of the body's table and path already (`already_exists`)",
            ),
        ],
        ..op(
            "put",
            "/api/v1/masking-policies",
            "Change the rule named by the query to the body (audited)",
            Access::Tenant(P::ManageMasking),
            (200, Some("MaskingRule")),
        )
    },
    Operation {
        query: RULE_QUERY,
        failures: NO_RULE,
        ..op(
            "delete",
            "/api/v1/masking-policies",
            "Remove the rule named by the query (audited)",
            Access::Tenant(P::ManageMasking),
            (204, None),
        )
    },
    Operation {
        request: Some("MaskingPreviewRequest"),
        ..op(
            "post",
            "/api/v1/masking-policies/preview",
            "Mask a sample event with the edge's own engine, under the saved or the given rules",
            Access::Tenant(P::ManageMasking),
            (200, Some("MaskingPreview")),
        )
    },
    op(
        "get",
        "/api/v1/me",
        "Who is calling: a token's workspace and role, or a member's account and workspaces",
        Access::Authenticated,
        (200, Some("Me")),
    ),
    op(
        "get",
        "/api/v1/activity",
        "The overview's counts: the workspace's events of the last hour and day, and the newest one's table",
        Access::Tenant(P::ViewBronze),
        (200, Some("Activity")),
    ),
    op(
        "get",
        "/api/v1/sessions",
        "The signed-in account's live sessions, most recently used first",
        Access::Session,
        (200, Some("Sessions")),
    ),
    op(
        "delete",
        "/api/v1/sessions/{session}",
        "End one of the account's own sessions; that browser is signed out at once",
        Access::Session,
        (204, None),
    ),
    op(
        "get",
        "/api/v1/workspace",
        "The caller's workspace: name, plan, industry, region, status",
        Access::Tenant(P::ViewWorkspace),
        (200, Some("Workspace")),
    ),
    Operation {
        request: Some("WorkspaceChange"),
        ..op(
            "patch",
            "/api/v1/workspace",
            "Change the workspace's name, industry or region; the plan needs the owner (audited)",
            Access::Tenant(P::ManageWorkspace),
            (200, Some("Workspace")),
        )
    },
    op(
        "get",
        "/api/v1/members",
        "The workspace's members and their roles",
        Access::Tenant(P::ManageMembers),
        (200, Some("Members")),
    ),
    Operation {
        request: Some("RoleChange"),
        failures: LAST_OWNER,
        ..op(
            "patch",
            "/api/v1/members/{user}",
            "Change a member's role: none above the caller's own, and only an owner touches an owner (audited)",
            Access::Tenant(P::ManageMembers),
            (200, Some("RoleChanged")),
        )
    },
    Operation {
        failures: LAST_OWNER,
        ..op(
            "delete",
            "/api/v1/members/{user}",
            "Remove a member from the workspace; only an owner removes an owner (audited)",
            Access::Tenant(P::ManageMembers),
            (204, None),
        )
    },
    op(
        "get",
        "/api/v1/invitations",
        "The workspace's open invitations, newest first",
        Access::Tenant(P::ManageMembers),
        (200, Some("Invitations")),
    ),
    Operation {
        request: Some("NewInvitation"),
        failures: &[(
            429,
            "the caller (20 an hour) or the workspace (50 an hour) sent as many invitations as \
             it may; nothing was sent (`invitations_rate_limited`, `details.limit` says which; \
             `Retry-After` says when to try again)",
        )],
        links: &[Link {
            name: "WithdrawInvitation",
            method: "delete",
            path: "/api/v1/invitations/{invitation}",
            parameters: &[("invitation", "$response.body#/invitation_id")],
        }],
        ..op(
            "post",
            "/api/v1/invitations",
            "Invite an address with a role no higher than the caller's; the one-time link goes to the address by mail, valid 7 days (audited)",
            Access::Tenant(P::ManageMembers),
            (201, Some("Invitation")),
        )
    },
    op(
        "delete",
        "/api/v1/invitations/{invitation}",
        "Withdraw an open invitation; its link stops working (audited)",
        Access::Tenant(P::ManageMembers),
        (204, None),
    ),
    op(
        "get",
        "/api/v1/api-tokens",
        "The workspace's API tokens, newest first (never their secrets)",
        Access::Tenant(P::ManageApiTokens),
        (200, Some("ApiTokens")),
    ),
    Operation {
        request: Some("NewApiToken"),
        links: &[Link {
            name: "RevokeToken",
            method: "post",
            path: "/api/v1/api-tokens/{token}/revoke",
            parameters: &[("token", "$response.body#/api_token/token_id")],
        }],
        ..op(
            "post",
            "/api/v1/api-tokens",
            "Create a token with a role no higher than the caller's; its text is in this answer only (audited)",
            Access::Tenant(P::ManageApiTokens),
            (201, Some("CreatedApiToken")),
        )
    },
    op(
        "post",
        "/api/v1/api-tokens/{token}/revoke",
        "Revoke a token; it works no more (audited)",
        Access::Tenant(P::ManageApiTokens),
        (204, None),
    ),
    op(
        "get",
        "/api/v1/retention",
        "How many days bronze keeps the workspace's raw events",
        Access::Tenant(P::ManageRetention),
        (200, Some("Retention")),
    ),
    Operation {
        request: Some("Retention"),
        ..op(
            "put",
            "/api/v1/retention",
            "Set how many days bronze keeps raw events, 1 to 3650 (audited)",
            Access::Tenant(P::ManageRetention),
            (200, Some("Retention")),
        )
    },
    Operation {
        query: AUDIT_QUERY,
        ..op(
            "get",
            "/api/v1/audit",
            "The workspace's audit log, newest first, filtered and paged, and whether its chain verifies",
            Access::Tenant(P::ViewAudit),
            (200, Some("AuditLog")),
        )
    },
    Operation {
        failures: NO_SSO,
        ..op(
            "get",
            "/api/v1/sso",
            "The workspace's single sign-on configuration (never the client secret)",
            Access::Tenant(P::ManageSso),
            (200, Some("Sso")),
        )
    },
    Operation {
        request: Some("SsoInput"),
        failures: &[(
            409,
            "the body has no `client_secret` while no configuration is stored yet or the \
             issuer or client id changes (`secret_required`), or a domain is another \
             workspace's (`already_exists`)",
        )],
        links: &[
            Link {
                name: "ReadSso",
                method: "get",
                path: "/api/v1/sso",
                parameters: &[],
            },
            Link {
                name: "RemoveSso",
                method: "delete",
                path: "/api/v1/sso",
                parameters: &[],
            },
            Link {
                name: "VerifyFirstDomain",
                method: "post",
                path: "/api/v1/sso/domains/{domain}/verify",
                parameters: &[("domain", "$response.body#/sso/domains/0/domain")],
            },
        ],
        ..op(
            "put",
            "/api/v1/sso",
            "Set the workspace's OpenID Connect provider, email domains and default role (audited)",
            Access::Tenant(P::ManageSso),
            (200, Some("Sso")),
        )
    },
    Operation {
        failures: &[(
            409,
            "the domain is not verified: it has no TXT record at the name in `details.record` \
             (`no_record`), its TXT records do not include `details.value` (`wrong_token`), or \
             another workspace has it verified (`domain_taken`)",
        )],
        ..op(
            "post",
            "/api/v1/sso/domains/{domain}/verify",
            "Check one of the workspace's SSO domains for its DNS TXT record and verify it (audited)",
            Access::Tenant(P::ManageSso),
            (200, Some("VerifiedDomain")),
        )
    },
    Operation {
        failures: NO_SSO,
        ..op(
            "delete",
            "/api/v1/sso",
            "Remove single sign-on (audited)",
            Access::Tenant(P::ManageSso),
            (204, None),
        )
    },
    Operation {
        query: REGISTRY_QUERY,
        ..op(
            "get",
            "/api/v1/ops/tenants",
            "The tenant registry with each tenant's volume",
            Access::Staff,
            (200, Some("Registry")),
        )
    },
    Operation {
        query: AUDIT_QUERY,
        ..op(
            "get",
            "/api/v1/ops/tenants/{tenant}/audit",
            "A tenant's audit log, newest first, and whether its chain verifies",
            Access::Staff,
            (200, Some("AuditLog")),
        )
    },
    op(
        "get",
        "/api/v1/ops/contact-requests",
        "Book-a-demo requests from the public site (newest 500)",
        Access::Staff,
        (200, Some("ContactRequests")),
    ),
    op(
        "get",
        "/api/v1/ops/rollups/allowlist",
        "The metric keys allowed into the global rollups, retired ones included",
        Access::Staff,
        (200, Some("Allowlist")),
    ),
    Operation {
        request: Some("AllowlistKey"),
        links: &[
            Link {
                name: "RemoveKey",
                method: "delete",
                path: "/api/v1/ops/rollups/allowlist/{key}",
                parameters: &[("key", "$response.body#/key")],
            },
            Link {
                name: "KeyCells",
                method: "get",
                path: "/api/v1/ops/rollups/{key}",
                parameters: &[("key", "$response.body#/key")],
            },
        ],
        ..op(
            "post",
            "/api/v1/ops/rollups/allowlist",
            "Allowlist a metric key; its whole history is aggregated (audited)",
            Access::Staff,
            (201, Some("AllowlistChange")),
        )
    },
    Operation {
        query: &[param(
            "purge",
            "true to delete the key's rollup history too",
            r#"{ "type": "boolean" }"#,
        )],
        ..op(
            "delete",
            "/api/v1/ops/rollups/allowlist/{key}",
            "Remove a key: its aggregation stops at once (audited)",
            Access::Staff,
            (200, Some("AllowlistChange")),
        )
    },
    Operation {
        query: &[
            param(
                "granularity",
                "minute (default) or hour",
                r#"{ "enum": ["minute", "hour"] }"#,
            ),
            param(
                "from",
                "RFC 3339 start (default: a day before `to`)",
                r#"{ "type": "string", "format": "date-time" }"#,
            ),
            param(
                "to",
                "RFC 3339 end, exclusive (default: now); after `from`, at most 93 days after it",
                r#"{ "type": "string", "format": "date-time" }"#,
            ),
        ],
        ..op(
            "get",
            "/api/v1/ops/rollups/{key}",
            "A key's rollup cells, one per bucket and (plan, industry, region), never a total; cells of fewer than k distinct tenants are never returned, nor a minute whose hour minus the returned minutes would reveal fewer than k tenants' readings (complementary suppression)",
            Access::Staff,
            (200, Some("RollupCells")),
        )
    },
    op(
        "get",
        "/api/v1/alert-rules",
        "The workspace's alert rules, firing first, then pending, then by name, each with the \
         worst phase of its series and whether a silence covers it",
        Access::Tenant(P::ViewDashboards),
        (200, Some("AlertRules")),
    ),
    Operation {
        request: Some("AlertRuleInput"),
        failures: &[(
            409,
            "a rule of that name exists (`already_exists`), or a channel or source named is not the workspace's or a channel is named twice (`invalid_rule`, `details.parameter`)",
        )],
        links: &[Link {
            name: "Rule",
            method: "get",
            path: "/api/v1/alert-rules/{rule}",
            parameters: &[("rule", "$response.body#/id")],
        }],
        ..op(
            "post",
            "/api/v1/alert-rules",
            "Create an alert rule on a metric key or on the pipeline's health; evaluated from its \
             next round (audited)",
            Access::Tenant(P::ManageAlertRules),
            (201, Some("AlertRule")),
        )
    },
    Operation {
        failures: &[(404, "the workspace has no rule of this id (`not_found`)")],
        ..op(
            "get",
            "/api/v1/alert-rules/{rule}",
            "A rule, the state of each of its series and its timeline (the last 200 entries: \
             phase changes, acknowledgements, silences, notices and their deliveries)",
            Access::Tenant(P::ViewDashboards),
            (200, Some("AlertRuleDetail")),
        )
    },
    Operation {
        request: Some("AlertRuleInput"),
        failures: &[
            (404, "the workspace has no rule of this id (`not_found`)"),
            (
                409,
                "another rule has that name (`already_exists`), or a channel or source named is not the workspace's or a channel is named twice (`invalid_rule`, `details.parameter`)",
            ),
        ],
        ..op(
            "put",
            "/api/v1/alert-rules/{rule}",
            "Replace a rule; its series keep their state and it is evaluated again at once \
             (audited)",
            Access::Tenant(P::ManageAlertRules),
            (200, Some("AlertRule")),
        )
    },
    Operation {
        failures: &[(404, "the workspace has no rule of this id (`not_found`)")],
        ..op(
            "delete",
            "/api/v1/alert-rules/{rule}",
            "Delete a rule with its states and timeline (audited)",
            Access::Tenant(P::ManageAlertRules),
            (204, None),
        )
    },
    op(
        "get",
        "/api/v1/alert-channels",
        "The workspace's alert channels by name, with each one's last delivery and last error; \
         the target (shortened: a Slack URL is a credential) only for roles that manage rules",
        Access::Tenant(P::ViewDashboards),
        (200, Some("AlertChannels")),
    ),
    Operation {
        request: Some("AlertChannelInput"),
        failures: &[(
            409,
            "a channel of that name exists (`already_exists`), or the target is not one of its kind (`invalid_target`)",
        )],
        links: &[Link {
            name: "Test",
            method: "post",
            path: "/api/v1/alert-channels/{channel}/test",
            parameters: &[("channel", "$response.body#/id")],
        }],
        ..op(
            "post",
            "/api/v1/alert-channels",
            "Create a channel: a webhook (signed with a secret returned once, here), a \
             Slack-compatible incoming webhook or an email address (audited)",
            Access::Tenant(P::ManageAlertRules),
            (201, Some("AlertChannelCreated")),
        )
    },
    Operation {
        failures: &[(404, "the workspace has no channel of this id (`not_found`)")],
        ..op(
            "delete",
            "/api/v1/alert-channels/{channel}",
            "Delete a channel and take it off every rule (audited)",
            Access::Tenant(P::ManageAlertRules),
            (204, None),
        )
    },
    Operation {
        failures: &[(404, "the workspace has no channel of this id (`not_found`)")],
        ..op(
            "post",
            "/api/v1/alert-channels/{channel}/test",
            "Queue a test notice to a channel; its result shows as the channel's last delivery \
             or last error (audited)",
            Access::Tenant(P::ManageAlertRules),
            (202, Some("AlertTestQueued")),
        )
    },
    op(
        "get",
        "/api/v1/alerts",
        "The workspace's alerts (every series firing or pending: firing first, then the most \
         severe, then the oldest) and its silences (active first, then the last past ones)",
        Access::Tenant(P::ViewDashboards),
        (200, Some("Alerts")),
    ),
    Operation {
        request: Some("AlertAcknowledgement"),
        failures: &[(404, "no series of this rule is firing (`not_found`)")],
        ..op(
            "post",
            "/api/v1/alerts/acknowledge",
            "Acknowledge a firing alert: no reminders until it resolves; who and when are shown \
             (audited)",
            Access::Tenant(P::AcknowledgeAlerts),
            (204, None),
        )
    },
    Operation {
        request: Some("AlertSilenceInput"),
        failures: &[(404, "the workspace has no rule of this id (`not_found`)")],
        ..op(
            "post",
            "/api/v1/alerts/silences",
            "Silence a rule, or every rule with a label's value, for a duration, with a reason: \
             no notices while it lasts (audited)",
            Access::Tenant(P::AcknowledgeAlerts),
            (201, Some("AlertSilenceCreated")),
        )
    },
    Operation {
        failures: &[(
            404,
            "the workspace has no active silence of this id (`not_found`)",
        )],
        ..op(
            "delete",
            "/api/v1/alerts/silences/{silence}",
            "End a silence now (audited)",
            Access::Tenant(P::AcknowledgeAlerts),
            (204, None),
        )
    },
    op(
        "get",
        "/api/v1/reports",
        "The workspace's report definitions, by name",
        Access::Tenant(P::ViewDashboards),
        (200, Some("Reports")),
    ),
    Operation {
        request: Some("ReportInput"),
        failures: REPORT_REFUSALS,
        links: &[Link {
            name: "Run",
            method: "post",
            path: "/api/v1/reports/{report}/runs",
            parameters: &[("report", "$response.body#/id")],
        }],
        ..op(
            "post",
            "/api/v1/reports",
            "Define a report: a dataset, its columns in file order, its filters and order, and a \
             format (CSV with formula cells neutralised, Parquet with typed columns, JSON lines); \
             audited",
            Access::Tenant(P::ManageReports),
            (201, Some("Report")),
        )
    },
    Operation {
        failures: NO_REPORT,
        ..op(
            "get",
            "/api/v1/reports/{report}",
            "A report definition",
            Access::Tenant(P::ViewDashboards),
            (200, Some("Report")),
        )
    },
    Operation {
        request: Some("ReportInput"),
        failures: REPORT_REFUSALS,
        ..op(
            "put",
            "/api/v1/reports/{report}",
            "Replace a report's definition; runs already asked keep the one they copied (audited)",
            Access::Tenant(P::ManageReports),
            (200, Some("Report")),
        )
    },
    Operation {
        failures: NO_REPORT,
        ..op(
            "delete",
            "/api/v1/reports/{report}",
            "Delete a report definition; its runs and their files stay until they expire \
             (audited)",
            Access::Tenant(P::ManageReports),
            (204, None),
        )
    },
    Operation {
        failures: NO_REPORT,
        ..op(
            "get",
            "/api/v1/reports/{report}/runs",
            "A report's last 100 runs, newest first, with their progress and download links",
            Access::Tenant(P::ViewDashboards),
            (200, Some("ReportRuns")),
        )
    },
    Operation {
        failures: &[
            (
                403,
                "the role may not read the report's dataset (the audit log is for owners and \
                 admins)",
            ),
            (404, "the workspace has no report of this id (`not_found`)"),
        ],
        links: &[Link {
            name: "Progress",
            method: "get",
            path: "/api/v1/report-runs/{run}",
            parameters: &[("run", "$response.body#/id")],
        }],
        ..op(
            "post",
            "/api/v1/reports/{report}/runs",
            "Run a report now: queued, then written by the report runner in the caller's own \
             role (audited when it ends as `report.run`)",
            Access::Tenant(P::RunReports),
            (202, Some("ReportRun")),
        )
    },
    Operation {
        failures: NO_REPORT,
        ..op(
            "get",
            "/api/v1/reports/{report}/schedules",
            "A report's schedules, each with its next occurrences and its last error",
            Access::Tenant(P::ViewDashboards),
            (200, Some("ReportSchedules")),
        )
    },
    Operation {
        request: Some("ReportScheduleInput"),
        failures: SCHEDULE_REFUSALS_FOR_REPORT,
        ..op(
            "post",
            "/api/v1/reports/{report}/schedules",
            "Schedule a report: a five-field cron expression in an IANA time zone, at most every \
             five minutes, and the alert channels its file goes to (mail attaches it up to \
             10 MB, else links it). Runs read in the role of the member who saved the schedule \
             (audited)",
            Access::Tenant(P::ManageReports),
            (201, Some("ReportSchedule")),
        )
    },
    Operation {
        failures: NO_SCHEDULE,
        ..op(
            "get",
            "/api/v1/report-schedules/{schedule}",
            "A report schedule",
            Access::Tenant(P::ViewDashboards),
            (200, Some("ReportSchedule")),
        )
    },
    Operation {
        request: Some("ReportScheduleInput"),
        failures: SCHEDULE_REFUSALS,
        ..op(
            "put",
            "/api/v1/report-schedules/{schedule}",
            "Replace a schedule; its runs then read in the role of whoever saved it, and only \
             occurrences after the save are due (audited)",
            Access::Tenant(P::ManageReports),
            (200, Some("ReportSchedule")),
        )
    },
    Operation {
        failures: NO_SCHEDULE,
        ..op(
            "delete",
            "/api/v1/report-schedules/{schedule}",
            "Delete a schedule; its runs stay (audited)",
            Access::Tenant(P::ManageReports),
            (204, None),
        )
    },
    Operation {
        failures: &[(404, "the workspace has no run of this id (`not_found`)")],
        ..op(
            "get",
            "/api/v1/report-runs/{run}",
            "A run: queued, running (rows and bytes so far), succeeded (with its download link \
             until it expires) or failed (with why)",
            Access::Tenant(P::ViewDashboards),
            (200, Some("ReportRun")),
        )
    },
    Operation {
        failures: &[
            (403, "the role may not read the run's dataset"),
            (404, "the workspace has no run of this id (`not_found`)"),
            (
                409,
                "the run has not finished (`not_ready`) or failed (`run_failed`)",
            ),
            (
                410,
                "the run's file expired (`expired`): run the report again",
            ),
        ],
        ..op(
            "get",
            "/api/v1/report-runs/{run}/download",
            "A finished run's file, streamed (CSV, Parquet or JSON lines, by the report's \
             format), for seven days after its run",
            Access::Tenant(P::RunReports),
            (200, Some(REPORT_FILE)),
        )
    },
];

const NO_REPORT: &[(u16, &str)] = &[(404, "the workspace has no report of this id (`not_found`)")];
const REPORT_REFUSALS: &[(u16, &str)] = &[
    (404, "the workspace has no report of this id (`not_found`)"),
    (
        409,
        "a report of that name exists (`already_exists`), a column is named twice, or the filters contradict each other: \
         a range that ends before it starts, both a relative and an absolute range, half an \
         absolute range, a time that is not a real date (`invalid_report`, `details.parameter`)",
    ),
];
const NO_SCHEDULE: &[(u16, &str)] = &[(
    404,
    "the workspace has no report schedule of this id (`not_found`)",
)];
const SCHEDULE_REFUSAL: (u16, &str) = (
    409,
    "the cron expression does not parse, is not five fields, runs more often than every five \
     minutes or never; the time zone is not in the IANA database; a channel is not the \
     workspace's or is named twice (`invalid_schedule`, `details.parameter`)",
);
const SCHEDULE_REFUSALS: &[(u16, &str)] = &[
    (
        404,
        "the workspace has no report schedule of this id (`not_found`)",
    ),
    SCHEDULE_REFUSAL,
];
const SCHEDULE_REFUSALS_FOR_REPORT: &[(u16, &str)] = &[
    (404, "the workspace has no report of this id (`not_found`)"),
    SCHEDULE_REFUSAL,
];
/// The response of a download: the file, in its format's media type.
const REPORT_FILE: &str = "file:report";

/// Text as the handlers take it: no control character anywhere, no white space at either end,
/// at least one character (they trim, then count).
const TRIMMED: &str = r"^[^\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000](?:[^\u0000-\u001f\u007f-\u009f]*[^\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000])?$";
/// [`TRIMMED`] without U+0130, the one character whose lower case is two characters: text the
/// handler lowers (industry, region) then keeps within the same length.
const TRIMMED_LOWERED: &str = r"^[^\u0000-\u0020\u007f-\u00a0\u0130\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000](?:[^\u0000-\u001f\u007f-\u009f\u0130]*[^\u0000-\u0020\u007f-\u00a0\u0130\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000])?$";
/// No U+0000, which PostgreSQL can neither store nor compare.
const NO_NUL: &str = r"^[^\u0000]*$";
/// One character of a table name or field path, in ASCII so that the byte limits of the edge
/// (127 bytes a table, 500 a path) are character limits here.
const NAME_CHAR: &str = "[A-Za-z0-9_$-]";
/// A host name: labels of letters, digits and inner hyphens, the last starting with a letter
/// (a numeric last label would make it an IPv4 address).
const HOST: &str = r"(?:[a-z0-9]+(?:-[a-z0-9]+)*\.)*[a-z][a-z0-9]*(?:-[a-z0-9]+)*";
/// An IPv4 address's octet.
const OCTET: &str = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])";
/// A TCP port, 1 to 65535.
const PORT: &str =
    r"(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])";

/// The longest field path the API takes: the audit log names a rule as `table/path` in at most
/// 500 characters, and a table takes up to 127 of them.
const MAX_RULE_PATH: usize = 500 - protocol::masking::MAX_TABLE_BYTES - 1;

fn trimmed(max_length: usize) -> Value {
    json!({ "type": "string", "minLength": 1, "maxLength": max_length, "pattern": TRIMMED })
}

/// What an OpenID Connect issuer may be: `https` to a host name or an IPv4 address, or `http`
/// to a loopback address; a port and a path of plain segments; no credentials, query or
/// fragment.
fn issuer_pattern() -> String {
    format!(
        r"^(?:https://(?:{HOST}|{OCTET}(?:\.{OCTET}){{3}})|http://(?:localhost|127(?:\.{OCTET}){{3}}|\[::1\]))(?::{PORT})?(?:/[A-Za-z0-9._~-]+)*/?$"
    )
}

/// The request bodies' schemas, each as strict as the handler's own checks: a body that fits
/// is one the handler takes (apart from relations between fields a schema cannot say, which
/// the descriptions give), and one that does not is refused before the handler.
fn request_schemas() -> Value {
    let object = |properties: Value, required: &[&str]| json!({ "type": "object", "properties": properties, "required": required });
    let closed = |properties: Value, required: &[&str]| json!({ "type": "object", "properties": properties, "required": required, "additionalProperties": false });
    let time = json!({ "type": "string", "format": "date-time" });
    let role = json!({ "enum": ["owner", "admin", "operator", "viewer"] });
    let no_nul = json!({ "type": "string", "pattern": NO_NUL });
    let name =
        json!({ "type": "string", "minLength": 1, "maxLength": 200, "pattern": r"^[^\u0000]+$" });
    let table_scope = format!(r"^(?:|\*|{NAME_CHAR}{{1,63}}(?:\.{NAME_CHAR}{{1,63}})?)$");
    let field_path = format!(r"^(?:(?:{NAME_CHAR}+|\*\*?)\.)*(?:{NAME_CHAR}+|\*)$");
    let sample_table = format!(r"^{NAME_CHAR}{{1,63}}(?:\.{NAME_CHAR}{{1,63}})?$");
    let image = json!({
        "type": ["object", "null"],
        "propertyNames": no_nul,
        "additionalProperties": { "$ref": "#/components/schemas/SampleValue" },
    });
    let mut mapping_kinds: Vec<Value> = EntityKind::ALL
        .iter()
        .map(|kind| {
            let typed: Vec<&str> = kind.typed_columns().iter().map(|(column, _)| *column).collect();
            let reading = if *kind == EntityKind::Reading {
                json!({ "enum": ["site", "device", "session", null] })
            } else {
                json!({ "type": "null" })
            };
            closed(
                json!({
                    "entity_kind": { "const": kind.as_str() },
                    "id_column": { "type": ["string", "null"], "minLength": 1, "maxLength": 200, "pattern": r"^[^\u0000]+$" },
                    "columns": {
                        "type": "object",
                        "description": "source column → typed column; each typed column fed by one source column, never by the id column",
                        "propertyNames": name,
                        "additionalProperties": { "enum": typed },
                    },
                    "reading_entity_kind": reading,
                }),
                &["entity_kind"],
            )
        })
        .collect();
    mapping_kinds.push(closed(
        json!({
            "entity_kind": { "const": "ignore" },
            "id_column": { "type": "null" },
            "columns": { "type": "object", "maxProperties": 0 },
            "reading_entity_kind": { "type": "null" },
        }),
        &["entity_kind"],
    ));
    let sso = object(
        json!({
            "issuer": { "type": "string", "maxLength": 500, "pattern": issuer_pattern(), "description": "https on a public host; plain http and loopback hosts only when the server runs with the development setting TRIBUTARY_DEV_ALLOW_LOOPBACK_HTTP (otherwise refused with 400)" },
            "client_id": trimmed(500),
            "client_secret": { "type": "string", "maxLength": 1000, "pattern": "^(?:[!-~](?:[ -~]*[!-~])?)?$", "description": "write-only; omit or leave empty to keep the stored one (the first configuration needs it)" },
            "domains": { "type": "array", "minItems": 1, "maxItems": 20, "items": {
                "type": "string", "maxLength": 253,
                "pattern": r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+$",
            } },
            "default_role": { "enum": ["admin", "operator", "viewer"] },
            "enabled": { "type": "boolean" },
            "privileged_sign_in": { "type": "boolean", "description": "whether owners and admins may sign in through the IdP (default false); `default_role` admin needs it" },
        }),
        &["issuer", "client_id", "domains", "default_role"],
    );
    // New members join as admin only where owners and admins may sign in with SSO.
    let mut sso = sso;
    sso["anyOf"] = json!([
        { "properties": { "default_role": { "enum": ["operator", "viewer"] } } },
        { "properties": { "privileged_sign_in": { "const": true } }, "required": ["privileged_sign_in"] },
    ]);
    let preview = closed(
        json!({
            "table": { "type": "string", "pattern": sample_table, "description": "`schema.table` (or `table`, in `public`) of the sample" },
            "sample": {
                "type": "object",
                "description": "`{\"key\": .., \"after\": .., \"before\": ..}`: row images, at most 16 KiB, nesting at most 30 deep",
                "properties": { "key": image, "after": image, "before": image },
                "propertyNames": no_nul,
                "additionalProperties": { "$ref": "#/components/schemas/SampleValue" },
            },
            "rules": { "type": "array", "items": { "$ref": "#/components/schemas/MaskingRule" } },
        }),
        &["table", "sample"],
    );
    json!({
        "NewSource": object(json!({
            "name": trimmed(200),
            "kind": { "enum": ["postgres", "simulator"] },
        }), &["name", "kind"]),
        "Revocation": object(json!({ "reason": no_nul }), &[]),
        "CaptureTables": object(json!({ "tables": {
            "type": "array", "minItems": 1, "maxItems": 500,
            "items": {
                "type": "string", "maxLength": 300,
                "pattern": "^[^.\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*\\.[^\\u0000-\\u001f\\u007f-\\u009f]+$",
                "description": "`schema.table`",
            },
        } }), &["tables"]),

        "Pause": object(json!({ "reason": {
            "type": "string",
            "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$",
            "description": "why, for the audit log and the source's page: no control characters; trimmed, at most 200 characters kept",
        } }), &[]),
        "NewMapping": { "oneOf": mapping_kinds },
        "NewReplay": {
            "description": "a range's `from` is before its `to`, not after now, its `to` at most 5 minutes from now, and it covers at most 7 days; one range replay or rebuild at a time",
            "oneOf": [
                object(json!({ "kind": { "const": "dlq" } }), &["kind"]),
                object(json!({ "kind": { "const": "rebuild" } }), &["kind"]),
                object(json!({ "kind": { "const": "range" }, "from": time, "to": time }), &["kind", "from", "to"]),
            ]
        },
        "MaskingRule": object(json!({
            "source_table": { "type": "string", "pattern": table_scope, "description": "`*` (or empty: every table), `schema.table` or `table`" },
            "field_path": { "type": "string", "maxLength": MAX_RULE_PATH, "pattern": field_path, "description": "dot-separated keys; `*` any one key, `**` any depth (not last)" },
            "action": { "enum": protocol::masking::MaskAction::ALL.map(|action| action.as_str()) },
        }), &["field_path", "action"]),
        "SampleValue": {
            "description": "any JSON value without U+0000, its integers within 64 bits",
            "anyOf": [
                { "type": ["boolean", "null"] },
                { "type": "number", "minimum": i64::MIN, "maximum": u64::MAX },
                no_nul,
                { "type": "array", "items": { "$ref": "#/components/schemas/SampleValue" } },
                { "type": "object", "propertyNames": no_nul, "additionalProperties": { "$ref": "#/components/schemas/SampleValue" } },
            ],
        },
        "MaskingPreviewRequest": preview,
        "SsoInput": sso,
        "AllowlistKey": object(json!({ "key": { "type": "string", "pattern": "^[a-z][a-z0-9_.]{0,99}$" } }), &["key"]),
        "WorkspaceChange": closed(json!({
            "name": trimmed(200),
            "plan": { "enum": ["free", "team", "business", "enterprise"], "description": "owners only" },
            "industry": { "type": "string", "minLength": 1, "maxLength": 100, "pattern": TRIMMED_LOWERED },
            "region": { "type": "string", "minLength": 1, "maxLength": 100, "pattern": TRIMMED_LOWERED },
        }), &[]),
        "RoleChange": closed(json!({ "role": role }), &["role"]),
        "NewInvitation": closed(json!({
            "email": { "type": "string", "maxLength": 254, "pattern": r"^[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){1,8}$" },
            "role": role,
        }), &["email", "role"]),
        "NewApiToken": closed(json!({
            "name": trimmed(100), "role": role,
            "days": { "type": "integer", "minimum": 1, "maximum": 366, "default": 90 },
        }), &["name", "role"]),
        "Retention": closed(json!({ "bronze_days": { "type": "integer", "minimum": 1, "maximum": 3650 } }), &["bronze_days"]),
    })
}

/// Loosely typed objects (the answers are built from the store's types, documented in
/// docs/api.md); the shapes callers rely on are named.
fn schemas() -> Value {
    let object = |properties: Value, required: &[&str]| json!({ "type": "object", "properties": properties, "required": required });
    let list = |name: &str, item: Value| {
        object(json!({ name: { "type": "array", "items": item } }), &[name])
    };
    let time = json!({ "type": "string", "format": "date-time" });
    let uuid = json!({ "type": "string", "format": "uuid" });
    let health = object(
        json!({
            "status": {
                "enum": store::sources::SourceHealth::ALL.map(|status| status.as_str()),
                "description": "derived from the agent's last heartbeat, its age and the slot: the first that holds of revoked, paused (ingestion paused on the platform, whatever the heartbeat says), slot_invalidated, failed, disconnected (no heartbeat for 60 s), slot_at_risk, spool_filling, lagging, connected; never_connected without a heartbeat",
            },
            "label": { "type": "string", "description": "the status in words" },
            "reason": { "type": "string", "description": "why, in words" },
        }),
        &["status", "label", "reason"],
    );
    let bytes = json!({ "type": ["integer", "null"] });
    let slot = object(
        json!({
            "name": { "type": "string" },
            "wal_status": { "type": ["string", "null"], "description": "reserved, extended, unreserved or lost" },
            "retained_bytes": bytes, "safe_wal_bytes": bytes,
            "max_keep_bytes": { "type": ["integer", "null"], "description": "max_slot_wal_keep_size in bytes; null when unlimited (-1)" },
        }),
        &[
            "name",
            "wal_status",
            "retained_bytes",
            "safe_wal_bytes",
            "max_keep_bytes",
        ],
    );
    let source = object(
        json!({
            "source_id": uuid, "name": { "type": "string" },
            "kind": { "enum": ["postgres", "simulator"] },
            "status": { "enum": ["pending", "active", "disabled", "revoked"] },
            "created_at": time, "agent": { "type": ["object", "null"] },
            "paused_at": { "type": ["string", "null"], "format": "date-time", "description": "set while the source's ingestion is paused" },
            "paused_by": { "type": ["string", "null"], "description": "who paused it, as `<actor kind>:<actor id>`" },
            "pause_reason": { "type": ["string", "null"] },
            "resync_requested_at": { "type": ["string", "null"], "format": "date-time", "description": "set while a resync waits for the source's agent" },
            "rotate_requested_at": { "type": ["string", "null"], "format": "date-time", "description": "set while a certificate rotation waits for the source's agent" },
            "health": health,
        }),
        &[
            "source_id",
            "name",
            "kind",
            "status",
            "created_at",
            "health",
        ],
    );
    let pairing = object(
        json!({ "token": { "type": "string" }, "expires_at": time }),
        &["token", "expires_at"],
    );
    let cell = object(
        json!({
            "bucket": time, "key": { "type": "string" }, "plan": { "type": "string" },
            "industry": { "type": "string" }, "region": { "type": "string" },
            "value_sum": { "type": "number" }, "value_count": { "type": "integer" },
            "tenant_count": { "type": "integer" },
        }),
        &[
            "bucket",
            "key",
            "plan",
            "industry",
            "region",
            "value_sum",
            "value_count",
            "tenant_count",
        ],
    );
    let entity = object(
        json!({
            "kind": { "enum": ["site", "device", "session"] },
            "id": { "type": "string" }, "source_id": uuid,
            "columns": { "type": "object" }, "extras": { "type": "object" },
            "updated_at": time,
        }),
        &["kind", "id", "source_id", "columns", "extras", "updated_at"],
    );
    let mut schemas = json!({
        "Error": object(json!({
            "error": object(json!({
                "code": { "type": "string", "description": "stable snake_case code" },
                "message": { "type": "string", "description": "what went wrong, for people" },
                "details": { "type": "object", "description": "specifics, e.g. which field or header" },
            }), &["code", "message", "details"]),
        }), &["error"]),
        "Setup": {
            "allOf": [
                object(json!({
                    "source": { "$ref": "#/components/schemas/Source" },
                    "step": { "enum": ["pair", "check", "tables", "run", "done", "revoked"] },
                    "paired": { "type": "boolean", "description": "a certificate was issued to the source's agent" },
                    "pairing_token_expires_at": { "type": ["string", "null"], "format": "date-time", "description": "the newest unused pairing token's expiry (its secret was shown once)" },
                    "check": { "type": ["object", "null"], "description": "the agent's last `check`: reported_at, agent_version, ready, findings (level ok/warning/fix, message), tables (name, has_key, readable, columns), tables_omitted" },
                    "capture_tables": { "type": ["array", "null"], "items": { "type": "string" } },
                    "recent_events": { "type": "array", "items": object(json!({
                        "table": { "type": "string" }, "op": { "type": "string" }, "event_time": time,
                    }), &["table", "op", "event_time"]) },
                    "commands": { "type": "object", "description": "state_dir, pair (with a placeholder for the token), source_url (PostgreSQL), check, run" },
                    "agent_toml": { "type": "string" },
                    "prerequisites_sql": { "type": "string" },
                    "ca_certificate_pem": { "type": "string" },
                    "edge_url": { "type": "string" },
                    "table_previews": { "type": "array", "items": { "type": "object" } },
                }), &["source", "step", "paired", "recent_events", "commands", "agent_toml", "prerequisites_sql", "ca_certificate_pem", "edge_url", "table_previews"]),
            ],
        },
        "Source": source,
        "Series": object(json!({
            "key": { "type": "string" }, "from": time, "to": time,
            "step": { "enum": ["1m", "5m", "1h", "1d"] },
            "agg": { "enum": ["avg", "min", "max", "sum", "count", "last"] },
            "series": { "type": "array", "items": object(json!({
                "group": { "type": ["string", "null"] }, "label": { "type": ["string", "null"] },
                "points": { "type": "array", "items": object(json!({
                    "at": time, "value": { "type": "number" }, "count": { "type": "integer" },
                }), &["at", "value", "count"]) },
            }), &["group", "label", "points"]) },
        }), &["key", "from", "to", "step", "agg", "series"]),
        "Entity": entity.clone(),
        "EntityPage": object(json!({
            "items": { "type": "array", "items": entity },
            "next_cursor": { "type": ["string", "null"] },
        }), &["items", "next_cursor"]),
        "Catalogue": object(json!({
            "metrics": { "type": "array", "items": object(json!({
                "key": { "type": "string" }, "first_seen": time, "last_seen": time,
                "readings": { "type": "integer" }, "entities": { "type": "integer" },
            }), &["key", "first_seen", "last_seen", "readings", "entities"]) },
            "extras": { "type": "array", "items": object(json!({
                "entity_kind": { "enum": ["site", "device", "session"] },
                "key": { "type": "string" },
                "value_type": { "enum": ["text", "number", "boolean", "time"] },
                "entities": { "type": "integer" }, "first_seen": time, "last_seen": time,
            }), &["entity_kind", "key", "value_type", "entities", "first_seen", "last_seen"]) },
        }), &["metrics", "extras"]),
        "SourceList": list("sources", json!({ "$ref": "#/components/schemas/Source" })),
        "SourceDetail": {
            "allOf": [
                { "$ref": "#/components/schemas/Source" },
                object(json!({
                    "slot": { "anyOf": [slot, { "type": "null" }] },
                    "certificate": { "anyOf": [object(json!({
                        "serial": { "type": "string" }, "not_before": time, "not_after": time,
                        "issued_at": time,
                    }), &["serial", "not_before", "not_after", "issued_at"]), { "type": "null" }] },
                    "forecast": object(json!({
                        "kind": { "enum": ["invalidation", "invalidated", "unbounded", "not_growing", "unknown"] },
                        "growth_bytes_per_hour": { "type": ["number", "null"], "description": "least-squares fit of the retained WAL over the last hour" },
                        "max_keep_bytes": bytes, "retained_bytes": bytes,
                        "hours_until_invalidation": { "type": ["number", "null"] },
                        "summary": { "type": "string", "description": "the forecast in words, or why there is none" },
                    }), &["kind", "growth_bytes_per_hour", "max_keep_bytes", "retained_bytes", "hours_until_invalidation", "summary"]),
                }), &["slot", "certificate", "forecast"]),
            ],
        },
        "StatusHistory": object(json!({
            "source_id": uuid, "from": time, "to": time,
            "samples": { "type": "array", "items": object(json!({
                "sampled_at": time, "state": { "type": "string" },
                "wal_status": { "type": ["string", "null"] },
                "retained_wal_bytes": bytes, "safe_wal_bytes": bytes, "max_keep_bytes": bytes,
                "lag_bytes": bytes, "lag_seconds": { "type": ["number", "null"] },
                "spool_batches": { "type": "integer" }, "spool_bytes": { "type": "integer" },
                "backpressure": { "type": "boolean" }, "acked_lsn": bytes,
            }), &["sampled_at", "state", "wal_status", "retained_wal_bytes", "safe_wal_bytes", "max_keep_bytes", "lag_bytes", "lag_seconds", "spool_batches", "spool_bytes", "backpressure", "acked_lsn"]) },
        }), &["source_id", "from", "to", "samples"]),
        "PairingToken": pairing,
        "CreatedSource": object(json!({
            "source": { "$ref": "#/components/schemas/Source" },
            "pairing_token": { "$ref": "#/components/schemas/PairingToken" },
        }), &["source", "pairing_token"]),
        "Revoked": object(json!({ "source_id": uuid, "certificates_revoked": { "type": "integer" } }), &["source_id", "certificates_revoked"]),
        "Mapping": object(json!({
            "entity_kind": { "enum": ["site", "device", "session", "reading", "ignore"] },
            "id_column": { "type": ["string", "null"] },
            "columns": { "type": "object", "additionalProperties": { "type": "string" } },
            "reading_entity_kind": { "type": ["string", "null"] },
        }), &["entity_kind"]),
        "Mappings": object(json!({
            "mappings": { "type": "array", "items": { "$ref": "#/components/schemas/Mapping" } },
            "typed_columns": { "type": "object" },
        }), &["mappings", "typed_columns"]),
        "ReplayAccepted": object(json!({ "request_id": uuid, "status": { "const": "pending" } }), &["request_id", "status"]),
        "Replay": object(json!({
            "request_id": uuid, "kind": { "type": "string" },
            "status": { "enum": ["pending", "running", "done", "failed"] },
            "events_replayed": { "type": "integer" }, "events_failed": { "type": "integer" },
            "events_total": { "type": ["integer", "null"], "description": "a dead-letter replay: the letters it found to replay when it started (null before); its progress is `events_replayed + events_failed` of it" },
            "source_id": { "type": ["string", "null"], "format": "uuid" },
            "reason_code": { "type": ["string", "null"] },
            "source_table": { "type": ["string", "null"] },
            "dlq_ids": { "type": ["array", "null"], "items": uuid },
        }), &["request_id", "kind", "status"]),
        "DeadLetters": list("dead_letters", object(json!({
            "dlq_id": uuid, "consumer": { "type": "string" }, "event_id": uuid,
            "reason_code": { "type": "string" }, "reason": { "type": "string" },
        }), &["dlq_id", "reason_code", "reason"])),
        "UnmappedTables": list("unmapped_tables", object(json!({
            "source_id": uuid, "schema_name": { "type": "string" },
            "table_name": { "type": "string" }, "events": { "type": "integer" },
            "first_seen_at": time, "last_seen_at": time,
        }), &["source_id", "schema_name", "table_name", "events", "first_seen_at", "last_seen_at"])),
        "Registry": list("tenants", object(json!({
            "tenant_id": uuid, "name": { "type": "string" }, "plan": { "type": "string" },
            "industry": { "type": "string" }, "region": { "type": "string" },
            "status": { "type": "string" }, "created_at": time,
            "active_sources": { "type": "integer" }, "events_today": { "type": "integer" },
            "events_7d": { "type": "integer" }, "last_event_at": { "type": ["string", "null"], "format": "date-time" },
        }), &["tenant_id", "name", "events_7d"])),
        "AuditLog": object(json!({
            "tenant_id": uuid,
            "chain": object(json!({ "intact": { "type": "boolean" }, "entries": { "type": "integer" } }), &["intact", "entries"]),
            "entries": { "type": "array", "items": object(json!({
                "seq": { "type": "integer" }, "occurred_at": time,
                "actor_type": { "enum": ["user", "cli", "system", "agent", "api_token"] },
                "actor_id": { "type": "string" }, "action": { "type": "string" },
                "target": { "type": "string" }, "details": { "type": "object" },
                "client_addr": { "type": ["string", "null"] },
            }), &["seq", "occurred_at", "actor_type", "actor_id", "action", "target", "details"]) },
            "next_before": { "type": ["integer", "null"], "description": "pass as `before` for the next page; null on the last" },
        }), &["tenant_id", "chain", "entries", "next_before"]),
        "ContactRequests": list("contact_requests", json!({ "type": "object" })),
        "Allowlist": list("keys", object(json!({
            "key": { "type": "string" }, "added_by": { "type": "string" }, "added_at": time,
            "retired_at": { "type": ["string", "null"], "format": "date-time" },
        }), &["key", "added_at"])),
        "AllowlistChange": object(json!({
            "key": { "type": "string" }, "status": { "enum": ["allowlisted", "retired", "purging"] },
        }), &["key", "status"]),
        "MaskingRules": { "type": "object" },
        "MaskingPreview": { "type": "object", "description": "the masked sample, the rules that applied, or why the edge would refuse it" },
        "Sso": object(json!({
            "sso": { "type": "object", "description": "issuer, client id, domains (each with whether it is verified), default role, enabled; never the secret" },
        }), &["sso"]),
        "VerifiedDomain": object(json!({
            "domain": object(json!({
                "domain": { "type": "string" },
                "verified": { "type": "boolean" },
                "verified_at": { "type": ["string", "null"], "format": "date-time" },
            }), &["domain", "verified", "verified_at"]),
        }), &["domain"]),
        "RollupCells": object(json!({
            "key": { "type": "string" }, "min_cohort": { "type": "integer", "minimum": 2 },
            "from": time, "to": time,
            "cells": { "type": "array", "items": cell },
        }), &["key", "min_cohort", "cells"]),
    });
    for more in [
        account_schemas(),
        request_schemas(),
        drift_schemas(),
        dead_letter_schemas(),
        alert_schemas(),
        alert_input_schemas(),
        report_schemas(),
    ] {
        for (name, schema) in more.as_object().expect("an object") {
            schemas[name] = schema.clone();
        }
    }
    schemas
}

/// The schemas of the alerts' answers (apart from [`schemas`] only to keep each `json!` within
/// the macro's recursion limit).
fn alert_schemas() -> Value {
    let object = |properties: Value, required: &[&str]| json!({ "type": "object", "properties": properties, "required": required });
    let time = json!({ "type": "string", "format": "date-time" });
    let optional_time = json!({ "type": ["string", "null"], "format": "date-time" });
    let uuid = json!({ "type": "string", "format": "uuid" });
    let optional_uuid = json!({ "type": ["string", "null"], "format": "uuid" });
    let number = json!({ "type": ["number", "null"] });
    let severity = json!({ "enum": ["info", "warning", "critical"] });
    let rule = json!({
        "type": "object",
        "properties": {
            "id": uuid, "name": { "type": "string" }, "kind": { "enum": ["metric", "pipeline"] },
            "severity": severity, "state": { "enum": ["ok", "pending", "firing"] },
            "firing": { "type": "integer", "minimum": 0 }, "silenced": { "type": "boolean" },
            "enabled": { "type": "boolean" }, "channels": { "type": "array", "items": uuid },
            "labels": { "type": "object", "additionalProperties": { "type": "string" } },
            "created_at": time, "updated_at": time,
        },
        "required": ["id", "name", "kind", "severity", "state", "firing", "silenced", "enabled",
                     "channels", "labels", "created_at", "updated_at"],
    });
    let alert = object(
        json!({
            "rule": uuid, "rule_name": { "type": "string" }, "severity": severity,
            "series": { "type": "string" }, "phase": { "enum": ["ok", "pending", "firing"] },
            "since": time, "flapping": { "type": "boolean" }, "value": number,
            "evaluated_at": time, "acked_by": optional_uuid, "acked_at": optional_time,
            "silenced": { "type": "boolean" },
        }),
        &[
            "rule",
            "rule_name",
            "severity",
            "series",
            "phase",
            "since",
            "flapping",
            "value",
            "evaluated_at",
            "acked_by",
            "acked_at",
            "silenced",
        ],
    );
    let entry = object(
        json!({
            "at": time, "series": { "type": "string" }, "kind": { "type": "string" },
            "value": number, "detail": { "type": "string" }, "actor": optional_uuid,
        }),
        &["at", "series", "kind", "value", "detail", "actor"],
    );
    let silence = object(
        json!({
            "id": uuid, "match": { "type": "object" }, "starts_at": time, "ends_at": time,
            "ended_at": optional_time, "reason": { "type": "string" }, "created_by": optional_uuid,
            "active": { "type": "boolean" },
        }),
        &[
            "id",
            "match",
            "starts_at",
            "ends_at",
            "ended_at",
            "reason",
            "created_by",
            "active",
        ],
    );
    let channel = object(
        json!({
            "id": uuid, "name": { "type": "string" },
            "kind": { "enum": ["webhook", "slack", "email"] },
            "target": { "type": ["string", "null"] },
            "last_error": { "type": ["string", "null"] }, "last_error_at": optional_time,
            "last_delivered_at": optional_time, "created_at": time,
        }),
        &[
            "id",
            "name",
            "kind",
            "target",
            "last_error",
            "last_error_at",
            "last_delivered_at",
            "created_at",
        ],
    );
    json!({
        "AlertRule": rule,
        "AlertRules": object(json!({ "alert_rules": { "type": "array", "items": rule } }), &["alert_rules"]),
        "AlertRuleDetail": object(json!({
            "rule": rule,
            "series": { "type": "array", "items": alert },
            "timeline": { "type": "array", "items": entry },
        }), &["rule", "series", "timeline"]),
        "Alerts": object(json!({
            "alerts": { "type": "array", "items": alert },
            "silences": { "type": "array", "items": silence },
        }), &["alerts", "silences"]),
        "AlertChannels": object(json!({ "alert_channels": { "type": "array", "items": channel } }), &["alert_channels"]),
        "AlertChannelCreated": object(json!({
            "id": uuid,
            "secret": { "type": ["string", "null"], "description": "a webhook's signing secret, shown only here" },
        }), &["id", "secret"]),
        "AlertTestQueued": object(json!({ "notification_id": uuid }), &["notification_id"]),
        "AlertSilenceCreated": object(json!({ "id": uuid }), &["id"]),
    })
}

/// The schemas of the alerts' request bodies: each field held to what the store accepts, so a
/// body the schema admits is refused only for the workspace's state (409).
fn alert_input_schemas() -> Value {
    // Checked by the server as a pattern (it does not check formats of request bodies).
    let uuid = json!({
        "type": "string",
        "pattern": "^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$",
    });
    // Trimmed text (what the store keeps), as the other names of the document.
    let name = json!({ "type": "string", "minLength": 1, "maxLength": 100, "pattern": TRIMMED });
    let id_text =
        json!({ "type": "string", "minLength": 1, "maxLength": 200, "pattern": r"^[^\u0000]+$" });
    let window = json!({ "type": "integer", "minimum": 60, "maximum": 86400 });
    let common = json!({
        "name": name,
        "for_secs": { "type": "integer", "minimum": 0, "maximum": 86400, "description": "seconds the condition must hold before it fires (default 0)" },
        "severity": { "enum": ["info", "warning", "critical"] },
        "labels": {
            "type": "object", "maxProperties": 10,
            "propertyNames": { "pattern": "^[A-Za-z0-9_.-]{1,100}$" },
            "additionalProperties": { "type": "string", "maxLength": 200, "pattern": r"^[^\u0000]*$" },
        },
        "channels": { "type": "array", "maxItems": 10, "items": uuid },
        "description": { "type": "string", "maxLength": 2000, "pattern": r"^[^\u0000]*$", "description": "sent with each notice; {{rule}}, {{series}}, {{value}} and {{threshold}} are replaced" },
        "enabled": { "type": "boolean" },
        "interval_secs": { "type": "integer", "minimum": 10, "maximum": 3600 },
        "remind_every_secs": { "oneOf": [{ "const": 0 }, { "type": "integer", "minimum": 300, "maximum": 604800 }], "description": "0: no reminders (default 3600)" },
        "flap_window_secs": window,
        "flap_limit": { "type": "integer", "minimum": 2, "maximum": 100 },
    });
    let with = |kind: Value, more: Value, required: &[&str]| {
        let mut properties = common.clone();
        properties["kind"] = kind;
        for (key, value) in more.as_object().expect("an object") {
            properties[key] = value.clone();
        }
        json!({ "type": "object", "properties": properties, "required": required, "additionalProperties": false })
    };
    let thresholded: Vec<&str> = [
        "source_disconnected",
        "lag_above",
        "retained_wal_above",
        "no_events",
        "slot_forecast",
    ]
    .to_vec();
    let metric = with(
        json!({ "const": "metric" }),
        json!({
            "key": { "type": "string", "minLength": 1, "maxLength": 200, "pattern": r"^[^\u0000]+$" },
            "aggregation": { "enum": ["avg", "min", "max", "sum", "count", "last"] },
            "window_secs": window,
            "comparison": { "enum": [">", ">=", "<", "<="] },
            "threshold": { "type": "number" },
            "site": id_text, "device": id_text,
            "group_by": { "enum": ["site", "device"] },
        }),
        &[
            "kind",
            "name",
            "key",
            "aggregation",
            "window_secs",
            "comparison",
            "threshold",
        ],
    );
    let pipeline = |condition: Value, threshold: bool, window: bool| {
        let mut more = json!({ "condition": condition, "source": uuid });
        let mut required = vec!["kind", "name", "condition"];
        if threshold {
            more["threshold"] = json!({ "type": "number", "minimum": 0, "description": "in the condition's unit: minutes (source_disconnected, no_events), seconds (lag_above), bytes (retained_wal_above), dead letters (dlq_growth), hours (slot_forecast)" });
            required.push("threshold");
        }
        if window {
            more["window_secs"] = window_schema();
            required.push("window_secs");
        }
        with(json!({ "const": "pipeline" }), more, &required)
    };
    json!({
        "AlertRuleInput": { "oneOf": [
            metric,
            pipeline(json!({ "enum": thresholded }), true, false),
            pipeline(json!({ "const": "dlq_growth" }), true, true),
            pipeline(json!({ "const": "slot_at_risk" }), false, false),
        ] },
        "AlertChannelInput": { "oneOf": [
            {
                "type": "object",
                "properties": {
                    "name": name, "kind": { "enum": ["webhook", "slack"] },
                    "target": { "type": "string", "minLength": 3, "maxLength": 2000, "pattern": webhook_target() },
                },
                "required": ["name", "kind", "target"], "additionalProperties": false,
            },
            {
                "type": "object",
                "properties": {
                    "name": name, "kind": { "const": "email" },
                    "target": { "type": "string", "minLength": 3, "maxLength": 320, "pattern": "^[!-?A-~]+@[!-?A-~]+$", "description": "an email address (one the mail check refuses is answered 409 invalid_target)" },
                },
                "required": ["name", "kind", "target"], "additionalProperties": false,
            },
        ] },
        "AlertAcknowledgement": {
            "type": "object",
            "properties": {
                "rule": uuid,
                "series": { "type": "string", "maxLength": 250, "pattern": r"^[^\u0000]*$", "description": "'' for a rule's only series; site:<id>, device:<id> or source:<id>" },
            },
            "required": ["rule", "series"], "additionalProperties": false,
        },
        "AlertSilenceInput": { "oneOf": [
            {
                "type": "object",
                "properties": { "rule": uuid, "duration_secs": silence_duration(), "reason": reason() },
                "required": ["rule", "duration_secs", "reason"], "additionalProperties": false,
            },
            {
                "type": "object",
                "properties": {
                    "label_key": { "type": "string", "minLength": 1, "maxLength": 100, "pattern": r"^[^\u0000]+$" },
                    "label_value": { "type": "string", "maxLength": 200, "pattern": r"^[^\u0000]*$" },
                    "duration_secs": silence_duration(), "reason": reason(),
                },
                "required": ["label_key", "label_value", "duration_secs", "reason"], "additionalProperties": false,
            },
        ] },
    })
}

/// The report definitions' and runs' schemas: a definition takes one shape per dataset, its own
/// columns and the filters that apply to it.
fn report_schemas() -> Value {
    use store::reports::{Dataset, Format, MAX_LAST_HOURS};
    let time = json!({ "type": "string", "format": "date-time" });
    let optional_time = json!({ "type": ["string", "null"], "format": "date-time" });
    let uuid = json!({ "type": "string", "format": "uuid" });
    let optional_uuid = json!({ "type": ["string", "null"], "format": "uuid" });
    let formats: Vec<&str> = Format::ALL.iter().map(|format| format.as_str()).collect();
    let datasets: Vec<&str> = Dataset::ALL
        .iter()
        .map(|dataset| dataset.as_str())
        .collect();
    // RFC 3339 in the form the server reads; a date that does not exist (30 February) is
    // answered 409 naming the parameter.
    let instant = json!({
        "type": "string",
        "pattern": r"^[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,9})?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$",
    });
    let filter_text = trimmed(200);
    let inputs: Vec<Value> = Dataset::ALL
        .iter()
        .map(|dataset| {
            let columns: Vec<&str> = dataset.columns().iter().map(|column| column.name).collect();
            let metrics = matches!(dataset, Dataset::MetricsMinute | Dataset::MetricsHour);
            let mut filters = serde_json::Map::new();
            if dataset.is_timed() {
                filters.insert(
                    "last_hours".into(),
                    json!({ "type": "integer", "minimum": 1, "maximum": MAX_LAST_HOURS }),
                );
                filters.insert("from".into(), instant.clone());
                filters.insert("to".into(), instant.clone());
            }
            if metrics || matches!(dataset, Dataset::Devices | Dataset::Sessions) {
                filters.insert("site".into(), filter_text.clone());
            }
            if metrics || *dataset == Dataset::Sessions {
                filters.insert("device".into(), filter_text.clone());
            }
            if metrics || *dataset == Dataset::Extras {
                filters.insert("key".into(), filter_text.clone());
            }
            if *dataset == Dataset::AuditLog {
                filters.insert("action".into(), json!({ "type": "string", "minLength": 1, "maxLength": 200, "pattern": TRIMMED, "description": "entries whose action starts with this (`member.`)" }));
                filters.insert("actor_type".into(), json!({ "enum": store::reports::ACTOR_TYPES }));
            }
            json!({
                "type": "object",
                "properties": {
                    "name": trimmed(100),
                    "dataset": { "const": dataset.as_str() },
                    "columns": { "type": "array", "items": { "enum": columns }, "description": "in file order, each once; empty or left out: every column" },
                    "filters": { "type": "object", "properties": filters, "additionalProperties": false },
                    "descending": { "type": "boolean", "description": "newest (or last id) first" },
                    "format": { "enum": formats },
                },
                "required": ["name", "dataset", "format"],
                "additionalProperties": false,
            })
        })
        .collect();
    let report = json!({
        "type": "object",
        "properties": {
            "id": uuid, "name": { "type": "string" }, "dataset": { "enum": datasets },
            "columns": { "type": "array", "items": { "type": "string" } },
            "filters": { "type": "object" }, "descending": { "type": "boolean" },
            "format": { "enum": formats }, "created_by": optional_uuid,
            "created_at": time, "updated_at": time,
        },
        "required": ["id", "name", "dataset", "columns", "filters", "descending", "format",
                     "created_by", "created_at", "updated_at"],
    });
    let run = json!({
        "type": "object",
        "properties": {
            "id": uuid, "report_id": optional_uuid, "report_name": { "type": "string" },
            "definition": { "type": "object" }, "requested_by": optional_uuid,
            "run_as": { "enum": ["owner", "admin", "operator", "viewer"] },
            "status": { "enum": ["queued", "running", "succeeded", "failed"] },
            "rows": { "type": "integer", "minimum": 0 }, "bytes": { "type": "integer", "minimum": 0 },
            "error": { "type": ["string", "null"] },
            "requested_at": time, "started_at": optional_time, "finished_at": optional_time,
            "expires_at": optional_time,
            "schedule_id": optional_uuid,
            "occurrence": { "type": ["string", "null"], "format": "date-time", "description": "the schedule's occurrence it ran for" },
            "download": { "type": ["string", "null"], "description": "where to download the file, while it can be" },
            "deliveries": {
                "type": "array",
                "description": "a scheduled run's deliveries to its channels (operators and above see them)",
                "items": {
                    "type": "object",
                    "properties": {
                        "channel_id": uuid, "channel_name": { "type": "string" },
                        "kind": { "enum": ["webhook", "slack", "email"] },
                        "attempts": { "type": "integer", "minimum": 0 },
                        "delivered_at": optional_time, "failed_at": optional_time,
                        "last_error": { "type": ["string", "null"] },
                    },
                    "required": ["channel_id", "channel_name", "kind", "attempts", "delivered_at",
                                 "failed_at", "last_error"],
                },
            },
        },
        "required": ["id", "report_id", "report_name", "definition", "requested_by", "run_as",
                     "status", "rows", "bytes", "error", "requested_at", "started_at",
                     "finished_at", "expires_at", "schedule_id", "occurrence", "download"],
    });
    // Checked by the server as a pattern (it does not check formats of request bodies).
    let uuid_text = json!({
        "type": "string",
        "pattern": "^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$",
    });
    let schedule_input = json!({
        "type": "object",
        "properties": {
            "cron": { "type": "string", "minLength": 9, "maxLength": 100, "pattern": TRIMMED, "description": "five fields: minute, hour, day of month, month, day of week (`0 8 * * 1-5`), at most every five minutes" },
            "time_zone": { "type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[A-Za-z0-9_+/-]+$", "description": "an IANA time zone (`Europe/Berlin`, `UTC`)" },
            "channels": { "type": "array", "maxItems": 10, "items": uuid_text, "description": "alert channels the file goes to, each once" },
            "enabled": { "type": "boolean", "description": "default true" },
        },
        "required": ["cron", "time_zone"],
        "additionalProperties": false,
    });
    let schedule = json!({
        "type": "object",
        "properties": {
            "id": uuid, "report_id": uuid, "cron": { "type": "string" },
            "time_zone": { "type": "string" },
            "channels": { "type": "array", "items": uuid }, "enabled": { "type": "boolean" },
            "owner": optional_uuid,
            "run_as": { "enum": ["owner", "admin", "operator", "viewer"] },
            "next_run_at": optional_time, "last_occurrence": optional_time,
            "last_error": { "type": ["string", "null"] },
            "upcoming": { "type": "array", "items": time, "description": "the next occurrences (enabled schedules)" },
            "created_at": time, "updated_at": time,
        },
        "required": ["id", "report_id", "cron", "time_zone", "channels", "enabled", "owner",
                     "run_as", "next_run_at", "last_occurrence", "last_error", "upcoming",
                     "created_at", "updated_at"],
    });
    json!({
        "ReportInput": { "oneOf": inputs },
        "Report": report,
        "Reports": { "type": "object", "properties": { "reports": { "type": "array", "items": report } }, "required": ["reports"] },
        "ReportRun": run,
        "ReportRuns": { "type": "object", "properties": { "runs": { "type": "array", "items": run } }, "required": ["runs"] },
        "ReportScheduleInput": schedule_input,
        "ReportSchedule": schedule,
        "ReportSchedules": { "type": "object", "properties": { "schedules": { "type": "array", "items": schedule } }, "required": ["schedules"] },
    })
}

fn window_schema() -> Value {
    json!({ "type": "integer", "minimum": 60, "maximum": 86400 })
}

fn silence_duration() -> Value {
    json!({ "type": "integer", "minimum": 60, "maximum": store::alerts::MAX_SILENCE_SECS, "description": "seconds, up to 30 days" })
}

fn reason() -> Value {
    json!({ "type": "string", "minLength": 1, "maxLength": 500, "pattern": TRIMMED })
}

/// An http(s) URL as a webhook's target: a host name, an IPv4 address or a bracketed IPv6 one,
/// an optional port, a path of printable ASCII. In ASCII on purpose: the server's and the
/// document's readers differ on what `\s` holds beyond it. Whether the address may be reached
/// is the outbound client's decision at delivery, not the schema's.
fn webhook_target() -> String {
    format!(
        r"^https?://(?:{HOST}|{OCTET}(?:\.{OCTET}){{3}}|\[[0-9A-Fa-f:.]+\])(?::{PORT})?(?:/[!-~]*)?$"
    )
}

/// The schemas of the dead-letter explorer's operations (apart from [`schemas`] only to keep
/// each `json!` within the macro's recursion limit).
fn dead_letter_schemas() -> Value {
    let object = |properties: Value, required: &[&str]| json!({ "type": "object", "properties": properties, "required": required });
    let closed = |properties: Value, required: &[&str]| json!({ "type": "object", "properties": properties, "required": required, "additionalProperties": false });
    let time = json!({ "type": "string", "format": "date-time" });
    let uuid = json!({ "type": "string", "format": "uuid" });
    let letter_id = json!({
        "type": "string",
        "pattern": "^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$",
        "description": "a `dlq_id` of the source's letters",
    });
    let letter = object(
        json!({
            "dlq_id": uuid, "consumer": { "type": "string" }, "event_id": uuid, "source_id": uuid,
            "reason_code": { "type": "string" }, "reason": { "type": "string" },
            "source_table": { "type": ["string", "null"], "description": "`schema.table` of the event; null when the event is not readable" },
            "attempts": { "type": "integer", "minimum": 1 },
            "created_at": { "type": "string", "format": "date-time", "description": "the first failure" },
            "last_failed_at": { "type": "string", "format": "date-time", "description": "the latest failure" },
            "replayed_at": { "type": ["string", "null"], "format": "date-time" },
            "event": { "description": "the event envelope as the edge published it, masked by the workspace's policy" },
        }),
        &[
            "dlq_id",
            "consumer",
            "event_id",
            "source_id",
            "reason_code",
            "reason",
            "source_table",
            "attempts",
            "created_at",
            "last_failed_at",
            "replayed_at",
            "event",
        ],
    );
    let group = object(
        json!({
            "reason_code": { "type": "string" },
            "source_table": { "type": ["string", "null"] },
            "letters": { "type": "integer", "minimum": 1 },
            "waiting": { "type": "integer", "minimum": 0, "description": "letters not replayed yet" },
            "first_failed_at": time, "latest_failed_at": time,
        }),
        &[
            "reason_code",
            "source_table",
            "letters",
            "waiting",
            "first_failed_at",
            "latest_failed_at",
        ],
    );
    json!({
        "DeadLetter": letter,
        "SourceDeadLetters": object(json!({
            "source_id": uuid,
            "groups": { "type": "array", "items": group },
            "dead_letters": { "type": "array", "items": { "$ref": "#/components/schemas/DeadLetter" } },
            "next_cursor": { "type": ["string", "null"], "description": "pass as `cursor` for the next page; null on the last" },
        }), &["source_id", "groups", "dead_letters", "next_cursor"]),
        "DeadLetterReplay": {
            "description": "`{\"all\": true}` alone, or any of `reason`, `table`, `ids`, and `from` with `to` (a window of latest failures, `from` before `to`); every condition given holds",
            "anyOf": [
                closed(json!({ "all": { "const": true } }), &["all"]),
                closed(json!({
                    "all": { "const": false },
                    "reason": { "type": "string", "pattern": "^[a-z][a-z0-9_]{0,63}$" },
                    "table": { "type": "string", "minLength": 1, "maxLength": 300, "pattern": r"^[^\u0000]+$" },
                    "ids": { "type": "array", "minItems": 1, "maxItems": 1000, "items": letter_id },
                    "from": time, "to": time,
                }), &[]),
            ],
        },
    })
}

/// The schemas of the schema-drift inbox's operations (apart from [`schemas`] only to keep each
/// `json!` within the macro's recursion limit).
fn drift_schemas() -> Value {
    let object = |properties: Value, required: &[&str]| json!({ "type": "object", "properties": properties, "required": required });
    let closed = |properties: Value, required: &[&str]| json!({ "type": "object", "properties": properties, "required": required, "additionalProperties": false });
    let time = json!({ "type": "string", "format": "date-time" });
    let uuid = json!({ "type": "string", "format": "uuid" });
    let drift_id = json!({
        "type": "string",
        "pattern": "^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$",
        "description": "a `drift_id` of `GET /api/v1/drift`",
    });
    let mut typed: Vec<&str> = [EntityKind::Site, EntityKind::Device, EntityKind::Session]
        .iter()
        .flat_map(|kind| kind.typed_columns().iter().map(|(column, _)| *column))
        .collect();
    typed.sort_unstable();
    typed.dedup();
    json!({
        "DriftFields": object(json!({ "drift_fields": { "type": "array", "items": object(json!({
            "drift_id": uuid, "source_id": uuid,
            "schema_name": { "type": "string" }, "table_name": { "type": "string" },
            "entity_kind": { "enum": ["site", "device", "session"] },
            "field_name": { "type": "string" },
            "json_type": { "enum": store::drift::JSON_TYPES },
            "rows": { "type": "integer", "minimum": 1 },
            "first_seen_at": time, "last_seen_at": time,
        }), &["drift_id", "source_id", "schema_name", "table_name", "entity_kind", "field_name",
              "json_type", "rows", "first_seen_at", "last_seen_at"]) } }), &["drift_fields"]),
        "DriftPromoted": object(json!({
            "mapping": { "$ref": "#/components/schemas/Mapping" },
            "rebuild_request_id": uuid,
        }), &["mapping", "rebuild_request_id"]),
        "DriftPromotion": closed(json!({
            "drift_id": drift_id,
            "typed_column": {
                "enum": typed,
                "description": "a typed column of the field's entity kind (see `typed_columns` of the mappings list), of a type every type the field was seen with converts to, not fed by another source column",
            },
        }), &["drift_id", "typed_column"]),
        "DriftDismissal": closed(json!({ "drift_id": drift_id }), &["drift_id"]),
    })
}

/// The schemas of the workspace, members, tokens, retention and account operations (apart from
/// [`schemas`] only to keep each `json!` within the macro's recursion limit).
fn account_schemas() -> Value {
    let object = |properties: Value, required: &[&str]| json!({ "type": "object", "properties": properties, "required": required });
    let list = |name: &str, item: Value| {
        object(json!({ name: { "type": "array", "items": item } }), &[name])
    };
    let time = json!({ "type": "string", "format": "date-time" });
    let uuid = json!({ "type": "string", "format": "uuid" });
    let role = json!({ "enum": ["owner", "admin", "operator", "viewer"] });
    let workspace = object(
        json!({
            "tenant_id": uuid, "name": { "type": "string", "maxLength": 200 },
            "plan": { "enum": ["free", "team", "business", "enterprise"] },
            "industry": { "type": "string", "maxLength": 100 },
            "region": { "type": "string", "maxLength": 100 },
            "status": { "type": "string" }, "created_at": time,
        }),
        &[
            "tenant_id",
            "name",
            "plan",
            "industry",
            "region",
            "status",
            "created_at",
        ],
    );
    let invitation = object(
        json!({ "invitation_id": uuid, "email": { "type": "string", "description": "as given, in lower case" }, "role": role, "expires_at": time }),
        &["invitation_id", "email", "role", "expires_at"],
    );
    let api_token = object(
        json!({
            "token_id": uuid, "name": { "type": "string" }, "role": role, "expires_at": time,
            "revoked_at": { "type": ["string", "null"], "format": "date-time" },
            "status": { "enum": ["active", "expired", "revoked"] },
        }),
        &["token_id", "name", "role", "expires_at", "status"],
    );
    json!({
        "Me": object(json!({
            "kind": { "enum": ["api_token", "member"] },
            "token_id": uuid, "user_id": uuid,
            "workspace": object(json!({ "tenant_id": uuid, "role": role }), &["tenant_id", "role"]),
            "workspaces": { "type": "array", "items": object(json!({ "tenant_id": uuid, "name": { "type": "string" }, "role": role }), &["tenant_id", "name", "role"]) },
        }), &["kind", "workspace"]),
        "Activity": object(json!({
            "last_hour": { "type": "integer" }, "last_day": { "type": "integer" },
            "latest": { "type": ["object", "null"], "properties": { "committed_at": time, "table": { "type": "string" } } },
        }), &["last_hour", "last_day", "latest"]),
        "Sessions": list("sessions", object(json!({
            "session_id": { "type": "string", "description": "names the session; cannot act as it" },
            "created_at": time, "last_seen_at": time,
            "client_addr": { "type": ["string", "null"] }, "user_agent": { "type": ["string", "null"] },
            "current": { "type": "boolean", "description": "the session making this call" },
        }), &["session_id", "created_at", "last_seen_at", "current"])),
        "Workspace": object(json!({ "workspace": workspace }), &["workspace"]),
        "Members": list("members", object(json!({
            "user_id": uuid, "email": { "type": "string" }, "display_name": { "type": "string" }, "role": role,
        }), &["user_id", "email", "display_name", "role"])),
        "RoleChanged": object(json!({ "user_id": uuid, "role": role, "previous_role": role }), &["user_id", "role", "previous_role"]),
        "Invitation": invitation,
        "Invitations": list("invitations", json!({ "$ref": "#/components/schemas/Invitation" })),
        "ApiToken": api_token,
        "ApiTokens": list("api_tokens", json!({ "$ref": "#/components/schemas/ApiToken" })),
        "CreatedApiToken": object(json!({
            "api_token": { "$ref": "#/components/schemas/ApiToken" },
            "token": { "type": "string", "description": "`tat1.…`: shown in this answer only; send as `Authorization: Bearer <token>`" },
        }), &["api_token", "token"]),
    })
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } },
    })
}

/// The operation's id: its method and path, e.g. `post_sources_source_revoke`.
fn operation_id(method: &str, path: &str) -> String {
    format!(
        "{method}_{}",
        path.trim_start_matches("/api/v1/")
            .replace(['/', '-', '.'], "_")
            .replace(['{', '}'], "")
    )
}

/// A path parameter's schema, by its name.
fn path_schema(name: &str) -> Value {
    match name {
        "source" | "request" | "tenant" | "user" | "invitation" | "token" | "letter" | "rule"
        | "channel" | "silence" => {
            json!({ "type": "string", "format": "uuid" })
        }
        "table" => {
            json!({ "type": "string", "minLength": 1, "maxLength": 200, "pattern": r"^[^\u0000]+$" })
        }
        "key" => json!({ "type": "string", "pattern": "^[a-z][a-z0-9_.]{0,99}$" }),
        "id" => {
            json!({ "type": "string", "minLength": 1, "maxLength": 500, "pattern": NO_NUL })
        }
        "domain" => {
            json!({ "type": "string", "minLength": 1, "maxLength": 253, "pattern": NO_NUL })
        }
        _ => json!({ "type": "string", "pattern": NO_NUL }),
    }
}

fn operation(operation: &Operation) -> Value {
    let mut parameters: Vec<Value> = operation
        .path
        .split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| {
            json!({ "name": name, "in": "path", "required": true, "schema": path_schema(name) })
        })
        .collect();
    parameters.extend(operation.query.iter().map(|query| {
        let schema: Value =
            serde_json::from_str(query.schema).expect("a query parameter's schema is JSON");
        json!({ "name": query.name, "in": "query", "required": query.required,
                "description": query.description, "schema": schema })
    }));
    let (status, schema) = operation.response;
    let success = match schema {
        Some(REPORT_FILE) => {
            let file = json!({ "schema": { "type": "string", "format": "binary" } });
            json!({
                "description": "the file",
                "content": {
                    "text/csv": file,
                    "application/vnd.apache.parquet": file,
                    "application/x-ndjson": file,
                },
            })
        }
        Some(schema) => json!({
            "description": "success",
            "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } },
        }),
        None => json!({ "description": "success" }),
    };
    let mut success = success;
    if !operation.links.is_empty() {
        let links: Map<String, Value> = operation
            .links
            .iter()
            .map(|link| {
                let parameters: Map<String, Value> = link
                    .parameters
                    .iter()
                    .map(|(name, expression)| ((*name).to_owned(), json!(expression)))
                    .collect();
                let target = json!({
                    "operationId": operation_id(link.method, link.path),
                    "parameters": parameters,
                });
                (link.name.to_owned(), target)
            })
            .collect();
        success["links"] = Value::Object(links);
    }
    let mut responses = Map::new();
    responses.insert(status.to_string(), success);
    // A state-changing call with the session cookie also needs the anti-forgery pair: the
    // `__Host-` CSRF cookie and the page's token derived from it.
    let safe = operation.method == "get";
    let session = if safe {
        json!({ "session": [] })
    } else {
        json!({ "session": [], "csrfCookie": [], "csrfToken": [] })
    };
    let token_or_session = json!([{ "bearerToken": [] }, session]);
    let (security, description) = match operation.access {
        Access::Public => (json!([]), "No credentials needed.".to_owned()),
        Access::Authenticated => (
            token_or_session.clone(),
            "Any valid API token or session, whatever its role.".to_owned(),
        ),
        Access::Session => (
            json!([session]),
            "A signed-in member's session only (an API token belongs to a workspace, not to a \
             person, and gets 403). State-changing calls also send the page's `X-CSRF-Token` \
             header."
                .to_owned(),
        ),
        Access::Tenant(permission) => {
            let roles: Vec<&str> = domain::Role::TENANT_ROLES
                .into_iter()
                .filter(|role| role.allows(permission))
                .map(|role| role.as_str())
                .collect();
            (
                token_or_session,
                format!(
                    "Acts in the caller's workspace. Roles allowed: {}. With a session cookie, \
                     a state-changing call also sends the page's `X-CSRF-Token` header.",
                    roles.join(", ")
                ),
            )
        }
        Access::Staff => (
            json!([session]),
            "Internal operations staff only, by session (API tokens belong to a tenant and are \
             refused). State-changing calls also send the page's `X-CSRF-Token` header."
                .to_owned(),
        ),
    };
    if !matches!(operation.access, Access::Public) {
        responses.insert("401".into(), error_response("no valid credentials"));
        responses.insert("403".into(), error_response("the caller may not do this"));
    }
    if operation.request.is_some() || !parameters.is_empty() {
        responses.insert(
            "400".into(),
            error_response("the request is not valid; details say where"),
        );
    }
    if operation.request.is_some() {
        responses.insert(
            "422".into(),
            error_response("a field's value is not allowed; details name the field"),
        );
        responses.insert(
            "413".into(),
            error_response("the body is larger than the API takes"),
        );
        responses.insert(
            "415".into(),
            error_response("the body is not sent as `application/json`"),
        );
    }
    for (status, when) in operation.failures {
        let mut response = error_response(when);
        if *status == 429 {
            response["headers"] = json!({
                "Retry-After": {
                    "description": "seconds to wait before trying again",
                    "required": true,
                    "schema": { "type": "string", "pattern": "^[0-9]+$" },
                },
            });
        }
        responses.insert(status.to_string(), response);
    }
    if operation.path.contains('{') {
        responses.insert(
            "404".into(),
            error_response("no such object in the caller's reach"),
        );
    }
    responses.insert(
        "503".into(),
        error_response("temporarily unavailable; retry later"),
    );
    let mut value = json!({
        "operationId": operation_id(operation.method, operation.path),
        "summary": operation.summary,
        "description": description,
        "parameters": parameters,
        "responses": responses,
        "security": security,
    });
    if let Some(request) = operation.request {
        value["requestBody"] = json!({
            "required": !operation.body_optional,
            "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{request}") } } },
        });
    }
    value
}

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for entry in OPERATIONS {
        let item = paths
            .entry(entry.path.to_owned())
            .or_insert_with(|| json!({}));
        item[entry.method] = operation(entry);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Tributary API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The JSON API behind the web app: everything its pages do. Errors are \
                `{\"error\": {\"code\", \"message\", \"details\"}}`; no answer ever carries SQL, \
                internals or another tenant's data. See docs/api.md.",
        },
        "servers": [{ "url": "/" }],
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {
                "bearerToken": {
                    "type": "http", "scheme": "bearer",
                    "description": "An API token (`tat1.…`) of one workspace and one role, made in Settings → API tokens.",
                },
                "session": {
                    "type": "apiKey", "in": "cookie", "name": crate::cookies::SESSION,
                    "description": "A signed-in browser session; acts in the session's current workspace.",
                },
                "csrfCookie": {
                    "type": "apiKey", "in": "cookie", "name": crate::cookies::CSRF,
                    "description": "The browser's anti-forgery cookie, which a session's state-changing calls send with the token derived from it.",
                },
                "csrfToken": {
                    "type": "apiKey", "in": "header", "name": "X-CSRF-Token",
                    "description": "The anti-forgery token the app's pages embed (derived from the CSRF cookie); a session's state-changing calls send it.",
                },
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every keyword of every request schema is one the server holds bodies to, and every
    /// pattern compiles: a schema the server only half checked would promise what it does not
    /// enforce.
    #[test]
    fn request_schemas_use_only_what_the_server_checks() {
        fn walk(schema: &Value, at: &str) {
            match schema {
                Value::Object(members) => {
                    for (keyword, value) in members {
                        assert!(
                            crate::api::conformance::KEYWORDS.contains(&keyword.as_str()),
                            "{at}: the server does not check `{keyword}`"
                        );
                        match keyword.as_str() {
                            "properties" => {
                                for (name, property) in value.as_object().unwrap() {
                                    walk(property, &format!("{at}/{name}"));
                                }
                            }
                            "pattern" => {
                                regex::Regex::new(value.as_str().unwrap())
                                    .unwrap_or_else(|error| panic!("{at}: {error}"));
                            }
                            "format" => assert_eq!(value, "date-time", "{at}"),
                            "items" | "additionalProperties" | "propertyNames" => {
                                walk(value, &format!("{at}/{keyword}"));
                            }
                            "oneOf" | "anyOf" => {
                                for branch in value.as_array().unwrap() {
                                    walk(branch, &format!("{at}/{keyword}"));
                                }
                            }
                            _ => {}
                        }
                    }
                }
                Value::Bool(_) => {}
                other => panic!("{at}: not a schema: {other}"),
            }
        }
        let schemas = schemas();
        for entry in OPERATIONS {
            if let Some(request) = entry.request {
                walk(&schemas[request], request);
            }
        }
    }

    #[test]
    fn every_link_names_a_documented_operation_and_its_parameters() {
        let document = document();
        for entry in OPERATIONS {
            for link in entry.links {
                let target = &document["paths"][link.path][link.method];
                assert!(
                    target.is_object(),
                    "{}: no {} {}",
                    link.name,
                    link.method,
                    link.path
                );
                let names: Vec<&str> = target["parameters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|parameter| parameter["name"].as_str().unwrap())
                    .collect();
                for (parameter, expression) in link.parameters {
                    assert!(names.contains(parameter), "{}: {parameter}", link.name);
                    assert!(expression.starts_with('$'), "{}: {expression}", link.name);
                }
            }
        }
        let created = &document["paths"]["/api/v1/sources"]["post"]["responses"]["201"]["links"];
        assert_eq!(
            created["IssuePairingToken"]["operationId"],
            "post_sources_source_pairing_tokens"
        );
    }

    #[test]
    fn every_reference_resolves() {
        let document = document();
        let text = document.to_string();
        let schemas = document["components"]["schemas"].as_object().unwrap();
        for reference in text.split("\"#/components/schemas/").skip(1) {
            let name = &reference[..reference.find('"').unwrap()];
            assert!(schemas.contains_key(name), "dangling reference {name}");
        }
        for entry in OPERATIONS {
            let path = &document["paths"][entry.path][entry.method];
            assert!(
                path["summary"].is_string(),
                "{} {}",
                entry.method,
                entry.path
            );
            let declared: Vec<&str> = path["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["in"] == "path")
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            assert_eq!(declared.len(), entry.path.matches('{').count());
        }
    }
}
