//! The wire contract's tests: round trips, and every item of the bad-input list with its code.

use std::io::Write;
use std::time::{Duration, Instant};

use domain::{EventId, Lsn, SourceId, TenantId};
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use time::macros::datetime;
use time::{OffsetDateTime, UtcOffset};
use unicode_normalization::UnicodeNormalization;

use super::*;

const SECRET: &str = "SECRET-CUSTOMER-VALUE-7731";

fn ids() -> (TenantId, SourceId) {
    (TenantId::new_random(), SourceId::new_random())
}

fn columns(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => panic!("test columns must be an object"),
    }
}

/// A valid insert event of `source` at `seq`.
fn insert_event(source: SourceId, seq: u32) -> ChangeEvent {
    let event_time = datetime!(2026-03-01 12:34:56.789 UTC);
    let lsn = Lsn(0x16_B374_D848);
    let millis = (event_time.unix_timestamp_nanos() / 1_000_000) as i64;
    ChangeEvent {
        event_id: EventId::derive(source, millis, lsn, seq),
        op: Op::Insert,
        schema: "public".to_owned(),
        table: "orders".to_owned(),
        lsn,
        seq,
        xid: Some(7781),
        event_time,
        key: columns(json!({ "id": seq })),
        after: Some(columns(
            json!({ "id": seq, "email": "a@example.com", "total": 12.5 }),
        )),
        before: None,
        unchanged: Vec::new(),
        types: Default::default(),
    }
}

/// The JSON of a valid insert event, to be broken by a test.
fn insert_json(source: SourceId, seq: u32) -> Value {
    serde_json::to_value(insert_event(source, seq)).expect("event serializes")
}

/// Re-derives the id after a test changed `event_time`, `lsn` or `seq`.
fn rederive(event: &mut Value, source: SourceId) {
    let parsed: ChangeEvent = serde_json::from_value(event.clone()).expect("still an event");
    event["event_id"] = json!(parsed.expected_event_id(source));
}

fn body(events: &[Value]) -> Vec<u8> {
    serde_json::to_vec(&json!({ "events": events })).expect("body serializes")
}

/// A batch body whose middle event is the given raw text.
fn body_with_raw_middle(source: SourceId, middle: &str) -> Vec<u8> {
    let first = insert_json(source, 0).to_string();
    let last = insert_json(source, 2).to_string();
    format!(r#"{{"events":[{first},{middle},{last}]}}"#).into_bytes()
}

fn decode(body: &[u8], tenant: TenantId, source: SourceId) -> Result<DecodedBatch, BatchError> {
    decode_batch(body, tenant, source, &test_limits())
}

fn batch_error(body: &[u8]) -> BatchError {
    let (tenant, source) = ids();
    match decode(body, tenant, source) {
        Ok(batch) => panic!("expected the batch to be refused, got {batch:?}"),
        Err(error) => error,
    }
}

/// Decodes a batch of three events whose middle one is `middle` and checks that exactly the
/// middle one is rejected, with `code`; returns its message.
fn assert_middle_rejected(
    source: SourceId,
    tenant: TenantId,
    middle: &str,
    code: ReasonCode,
) -> String {
    let decoded = decode(&body_with_raw_middle(source, middle), tenant, source)
        .unwrap_or_else(|error| panic!("batch refused as a whole ({error}) for {middle}"));
    assert_eq!(decoded.len(), 3);
    assert!(
        matches!(&decoded.events[0], Ok(event) if *event == insert_event(source, 0)),
        "event 0 must stay valid, got {:?}",
        decoded.events[0]
    );
    assert!(
        matches!(&decoded.events[2], Ok(event) if *event == insert_event(source, 2)),
        "event 2 must stay valid, got {:?}",
        decoded.events[2]
    );
    match &decoded.events[1] {
        Err(result) => {
            assert_eq!(result.index, 1);
            assert_eq!(result.status, EventStatus::Rejected);
            assert_eq!(
                result.code,
                Some(code),
                "for {middle}: {:?}",
                result.message
            );
            let message = result.message.clone().unwrap_or_default();
            assert!(!message.is_empty());
            assert!(
                !message.contains(SECRET),
                "message echoes a value: {message}"
            );
            message
        }
        Ok(event) => panic!("expected {code} for {middle}, got valid {event:?}"),
    }
}

/// Breaks a valid event with `change` and checks the code it is rejected with.
fn assert_event_rejected(code: ReasonCode, change: impl FnOnce(&mut Value, SourceId)) {
    let (tenant, source) = ids();
    let mut event = insert_json(source, 1);
    change(&mut event, source);
    assert_middle_rejected(source, tenant, &event.to_string(), code);
}

// --- version and encoding headers ---

/// The default limits without the commit-time window, which depends on the clock: the fixed
/// dates of these tests stay valid whatever day they run. The window has tests of its own.
fn test_limits() -> Limits {
    Limits {
        event_time_window: None,
        ..Limits::default()
    }
}

#[test]
fn missing_or_v1_protocol_header_is_accepted() {
    assert_eq!(parse_version(None), Ok(1));
    assert_eq!(parse_version(Some("1")), Ok(1));
    assert_eq!(parse_version(Some(" 1 ")), Ok(1));
    assert_eq!(check_version(None), Ok(()));
    assert_eq!(check_version(Some("1")), Ok(()));
    assert_eq!(CURRENT_VERSION, 1);
    assert_eq!(PROTOCOL_HEADER, "tributary-protocol");
}

#[test]
fn other_protocol_versions_are_unsupported_and_listed() {
    for header in [
        "2",
        "0",
        "01",
        "1.0",
        "",
        "v1",
        "65536",
        "99999999999",
        "1,2",
        "-1",
    ] {
        assert!(check_version(Some(header)).is_err(), "{header:?}");
        let error = parse_version(Some(header)).expect_err(header);
        assert_eq!(error.code, ReasonCode::UnsupportedVersion, "{header:?}");
        assert_eq!(error.http_status(), 400);
        let body = serde_json::to_value(error.to_error_body()).expect("serializes");
        assert_eq!(body["error"]["code"], "unsupported_version");
        assert_eq!(body["error"]["supported_versions"], json!([1]));
        assert!(error.message.contains("supports: 1"), "{}", error.message);
    }
}

#[test]
fn content_encoding_header_is_read() {
    assert_eq!(Encoding::from_header(None), Ok(Encoding::Identity));
    assert_eq!(
        Encoding::from_header(Some("identity")),
        Ok(Encoding::Identity)
    );
    assert_eq!(Encoding::from_header(Some("gzip")), Ok(Encoding::Gzip));
    assert_eq!(Encoding::from_header(Some("GZip")), Ok(Encoding::Gzip));
    assert_eq!(Encoding::from_header(Some("x-gzip")), Ok(Encoding::Gzip));
    assert_eq!(Encoding::from_header(Some(" zstd ")), Ok(Encoding::Zstd));
    for header in ["br", "deflate", "gzip, zstd", "", "compress"] {
        let error = Encoding::from_header(Some(header)).expect_err(header);
        assert_eq!(error.code, ReasonCode::UnsupportedEncoding);
        assert_eq!(error.http_status(), 415);
    }
}

// --- reason codes and bodies ---

#[test]
fn reason_codes_serialize_as_their_stable_text() {
    let mut seen = std::collections::HashSet::new();
    for code in ReasonCode::ALL {
        let text = code.as_str();
        assert!(seen.insert(text), "{text} twice");
        assert_eq!(code.to_string(), text);
        assert_eq!(serde_json::to_value(code).expect("serializes"), json!(text));
        assert_eq!(
            serde_json::from_value::<ReasonCode>(json!(text)).expect("parses"),
            code
        );
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        );
    }
    assert_eq!(
        serde_json::from_value::<ReasonCode>(json!("a_code_from_the_future")).expect("parses"),
        ReasonCode::Unknown
    );
}

#[test]
fn batch_level_codes_have_their_http_status() {
    let expected = [
        (ReasonCode::BodyTooLarge, 413),
        (ReasonCode::DecompressedTooLarge, 413),
        (ReasonCode::TooManyEvents, 413),
        (ReasonCode::UnsupportedEncoding, 415),
        (ReasonCode::UnsupportedVersion, 400),
        (ReasonCode::TenantMismatch, 403),
        (ReasonCode::SourceMismatch, 403),
        (ReasonCode::InvalidJson, 400),
        (ReasonCode::InvalidUtf8, 400),
        (ReasonCode::NestingTooDeep, 400),
        (ReasonCode::EmptyBatch, 400),
        (ReasonCode::InvalidCompression, 400),
    ];
    for (code, status) in expected {
        assert_eq!(code.http_status(), status, "{code}");
        assert!(code.is_batch_level(), "{code}");
    }
}

#[test]
fn every_reason_code_is_documented() {
    let docs = include_str!("../../../docs/protocol.md");
    for code in ReasonCode::ALL {
        let row = format!("| `{}` |", code.as_str());
        assert!(
            docs.contains(&row),
            "docs/protocol.md has no table row for {code}"
        );
    }
    for op in Op::ALL {
        assert!(
            docs.contains(&format!("`{op}`")),
            "docs/protocol.md does not name op {op}"
        );
    }
}

#[test]
fn error_body_has_the_documented_shape() {
    let error = BatchError::new(ReasonCode::TenantMismatch, "`tenant_id` does not match");
    let body = serde_json::to_value(ErrorBody::from(&error)).expect("serializes");
    assert_eq!(
        body,
        json!({"error": {"code": "tenant_mismatch", "message": "`tenant_id` does not match"}})
    );
    let read: ErrorBody = serde_json::from_value(body).expect("parses back");
    assert_eq!(read.error.code, ReasonCode::TenantMismatch);
}

#[test]
fn batch_response_counts_its_results() {
    let source = SourceId::new_random();
    let id = insert_event(source, 0).event_id;
    let response = BatchResponse::from_results(vec![
        EventResult::accepted(0, id),
        EventResult::duplicate(1, id),
        EventResult::rejected(2, None, ReasonCode::MissingKey, "`key` is empty"),
        EventResult::accepted(3, id),
    ]);
    assert_eq!(
        (response.accepted, response.duplicates, response.rejected),
        (2, 1, 1)
    );
    let value = serde_json::to_value(&response).expect("serializes");
    assert_eq!(value["results"][1]["status"], "duplicate");
    assert_eq!(value["results"][2]["code"], "missing_key");
    assert_eq!(value["results"][2]["event_id"], Value::Null);
    assert!(value["results"][0].get("code").is_none());
    let back: BatchResponse = serde_json::from_value(value).expect("parses back");
    assert_eq!(back, response);
}

#[test]
fn an_edge_says_it_reads_batch_types_and_an_older_answer_does_not() {
    let response = BatchResponse::from_results(Vec::new());
    assert!(response.reads_batch_types());
    let value = serde_json::to_value(&response).expect("serializes");
    assert_eq!(value["features"], json!([FEATURE_BATCH_TYPES]));
    let older: BatchResponse = serde_json::from_value(
        json!({"results": [], "accepted": 0, "duplicates": 0, "rejected": 0}),
    )
    .expect("an answer without features parses");
    assert!(!older.reads_batch_types());
}

#[test]
fn a_batchs_types_go_to_its_events_of_that_table_that_carry_none() {
    let (tenant, source) = ids();
    let orders = insert_json(source, 0);
    let mut own = insert_json(source, 1);
    own["types"] = json!({"id": "bigint"});
    let mut other_table = insert_json(source, 2);
    other_table["table"] = json!("payments");
    let mut other_schema = insert_json(source, 3);
    other_schema["schema"] = json!("audit");
    let more_orders = insert_json(source, 4);
    let order_types = json!({"id": "integer", "email": "text", "total": "numeric(10,2)"});
    let batch_body = serde_json::to_vec(&json!({
        "events": [orders, own, other_table, other_schema, more_orders],
        "types": [
            {"schema": "public", "table": "orders", "columns": order_types},
            {"schema": "public", "table": "customers", "columns": {"id": "uuid"}, "rows": 7},
        ],
    }))
    .expect("serializes");
    let batch = decode(&batch_body, tenant, source).expect("decodes");
    let events: Vec<&ChangeEvent> = batch.valid().map(|(_, event)| event).collect();
    assert_eq!(events.len(), 5);
    let expected: std::collections::BTreeMap<String, String> =
        serde_json::from_value(order_types).expect("a map");
    assert_eq!(*events[0].types, expected);
    assert!(
        std::sync::Arc::ptr_eq(&events[0].types, &events[4].types),
        "the events of a table share the batch's map"
    );
    assert_eq!(
        *events[1].types,
        [("id".to_owned(), "bigint".to_owned())].into(),
        "an event's own types win"
    );
    assert!(events[2].types.is_empty(), "another table gets none");
    assert!(
        events[3].types.is_empty(),
        "the same table in another schema gets none"
    );
    // What bronze keeps is what the event would be with its types inside: the batch form and
    // the per-event form of the same changes decode to equal events.
    let mut inline = insert_json(source, 0);
    inline["types"] = serde_json::to_value(&expected).expect("a map");
    let inline = decode(&body(&[inline]), tenant, source).expect("decodes");
    assert_eq!(
        inline.valid().next().map(|(_, event)| event),
        Some(events[0])
    );
    // `null` gives nothing.
    let null_body = serde_json::to_vec(&json!({"events": [insert_json(source, 0)], "types": null}))
        .expect("serializes");
    let batch = decode(&null_body, tenant, source).expect("decodes");
    assert!(batch.valid().all(|(_, event)| event.types.is_empty()));
}

#[test]
fn malformed_batch_types_refuse_the_batch_and_name_the_rule() {
    let (tenant, source) = ids();
    let cases: Vec<(ReasonCode, String)> = vec![
        (ReasonCode::InvalidType, r#"{"schema":"public","table":"orders","columns":{}}"#.into()),
        (ReasonCode::InvalidType, "[42]".into()),
        (ReasonCode::InvalidType, r#"[{"table":"orders","columns":{}}]"#.into()),
        (ReasonCode::InvalidType, r#"[{"schema":"public","table":"","columns":{}}]"#.into()),
        (ReasonCode::InvalidType, r#"[{"schema":"public","table":"orders"}]"#.into()),
        (ReasonCode::InvalidType, r#"[{"schema":"public","table":"orders","columns":["id"]}]"#.into()),
        (ReasonCode::InvalidType, r#"[{"schema":"public","table":"orders","columns":{"id":7}}]"#.into()),
        (ReasonCode::InvalidType, format!(r#"[{{"schema":"public","table":"orders","columns":{{"id":"{}"}}}}]"#, "x".repeat(200))),
        (
            ReasonCode::InvalidType,
            r#"[{"schema":"public","table":"orders","columns":{}},{"schema":"public","table":"orders","columns":{}}]"#.into(),
        ),
        (ReasonCode::DuplicateKey, r#"[{"schema":"public","table":"orders","columns":{"id":"int","id":"text"}}]"#.into()),
        (ReasonCode::DuplicateKey, r#"[{"schema":"public","schema":"audit","table":"orders","columns":{}}]"#.into()),
        (
            ReasonCode::TooManyEvents,
            format!(
                "[{}]",
                (0..=test_limits().max_events)
                    .map(|n| format!(r#"{{"schema":"s","table":"t{n}","columns":{{}}}}"#))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        ),
    ];
    let event = insert_json(source, 0).to_string();
    for (code, types) in cases {
        let body = format!(r#"{{"events":[{event}],"types":{types}}}"#);
        let error = decode(body.as_bytes(), tenant, source).expect_err(&types);
        assert_eq!(error.code, code, "{types}");
        assert!(!error.message.contains("x".repeat(200).as_str()));
    }
    let body = format!(r#"{{"events":[{event}],"types":[],"types":[]}}"#);
    assert_eq!(
        decode(body.as_bytes(), tenant, source)
            .expect_err("repeated")
            .code,
        ReasonCode::DuplicateKey
    );
}

#[test]
fn pairing_bodies_round_trip_and_hide_the_token() {
    let request = PairRequest {
        token: SECRET.to_owned(),
        csr_pem: "-----BEGIN CERTIFICATE REQUEST-----".to_owned(),
    };
    assert!(!format!("{request:?}").contains(SECRET));
    let text = serde_json::to_string(&request).expect("serializes");
    assert_eq!(
        serde_json::from_str::<PairRequest>(&text).expect("parses"),
        request
    );

    let (tenant, source) = ids();
    let response = CertificateResponse {
        tenant_id: tenant,
        source_id: source,
        certificate_pem: "cert".to_owned(),
        ca_certificate_pem: "ca".to_owned(),
        not_after: datetime!(2026-06-01 00:00:00 UTC),
    };
    let value = serde_json::to_value(&response).expect("serializes");
    assert_eq!(value["not_after"], "2026-06-01T00:00:00Z");
    assert_eq!(value["tenant_id"], json!(tenant.to_string()));
    assert_eq!(
        serde_json::from_value::<CertificateResponse>(value).expect("parses"),
        response
    );

    let renew = RenewRequest {
        csr_pem: "csr".to_owned(),
    };
    assert_eq!(
        serde_json::to_value(&renew).expect("serializes"),
        json!({"csr_pem": "csr"})
    );
}

#[test]
fn events_serialize_with_text_lsn_and_rfc3339_time() {
    let source = SourceId::new_random();
    let value = insert_json(source, 3);
    assert_eq!(value["lsn"], "16/B374D848");
    assert_eq!(value["event_time"], "2026-03-01T12:34:56.789Z");
    assert_eq!(value["op"], "insert");
    assert!(value.get("before").is_none());
}

// --- round trips ---

#[test]
fn valid_batch_decodes_in_every_encoding() {
    let (tenant, source) = ids();
    let batch = EventBatch {
        source_id: Some(source),
        tenant_id: Some(tenant),
        events: (0..3).map(|seq| insert_event(source, seq)).collect(),
        types: Vec::new(),
    };
    for encoding in [Encoding::Identity, Encoding::Gzip, Encoding::Zstd] {
        let wire = encode_batch(&batch, encoding).expect("encodes");
        let json = decompress(&wire, encoding, &test_limits()).expect("decompresses");
        let decoded = decode(&json, tenant, source).expect("decodes");
        let valid: Vec<ChangeEvent> = decoded.valid().map(|(_, event)| event.clone()).collect();
        assert_eq!(valid, batch.events, "{encoding:?}");
    }
}

#[test]
fn every_op_with_its_shape_is_valid() {
    let (tenant, source) = ids();
    let mut events = Vec::new();
    for (seq, op) in Op::ALL.into_iter().enumerate() {
        let mut event = insert_event(source, seq as u32);
        event.op = op;
        match op {
            Op::Insert | Op::Read => {}
            Op::Update => event.before = Some(columns(json!({"id": 1, "email": "old@x.io"}))),
            Op::Delete => {
                event.after = None;
                event.before = Some(columns(json!({"id": 1})));
            }
            Op::Truncate => {
                event.after = None;
                event.key = Map::new();
            }
        }
        events.push(serde_json::to_value(&event).expect("serializes"));
    }
    let decoded = decode(&body(&events), tenant, source).expect("decodes");
    assert_eq!(
        decoded.valid().count(),
        5,
        "{:?}",
        decoded.settled().collect::<Vec<_>>()
    );
}

#[test]
fn event_time_with_an_offset_derives_the_id_from_the_instant() {
    let (tenant, source) = ids();
    let mut event = insert_json(source, 1);
    // The same instant as 12:34:56.789Z.
    event["event_time"] = json!("2026-03-01T14:34:56.789+02:00");
    let decoded = decode(&body(&[event]), tenant, source).expect("decodes");
    let (_, valid) = decoded.valid().next().expect("the event is valid");
    assert_eq!(
        valid.event_time.offset(),
        UtcOffset::from_hms(2, 0, 0).expect("offset")
    );
    assert_eq!(valid.event_id, insert_event(source, 1).event_id);
}

#[test]
fn unknown_fields_are_ignored() {
    let (tenant, source) = ids();
    let mut event = insert_json(source, 0);
    event["added_in_1_7"] = json!({"nested": [1, 2, {"x": null}]});
    let text = serde_json::to_vec(&json!({"agent": "tributary-agent/9.9", "events": [event]}))
        .expect("serializes");
    let decoded = decode(&text, tenant, source).expect("decodes");
    assert_eq!(decoded.valid().count(), 1);
}

#[test]
fn matching_tenant_and_source_claims_are_accepted() {
    let (tenant, source) = ids();
    let text = serde_json::to_vec(&json!({
        "tenant_id": tenant, "source_id": source, "events": [insert_json(source, 0)]
    }))
    .expect("serializes");
    assert_eq!(
        decode(&text, tenant, source)
            .expect("decodes")
            .valid()
            .count(),
        1
    );
    let with_nulls = serde_json::to_vec(&json!({
        "tenant_id": null, "source_id": null, "events": [insert_json(source, 0)]
    }))
    .expect("serializes");
    assert_eq!(
        decode(&with_nulls, tenant, source)
            .expect("decodes")
            .valid()
            .count(),
        1
    );
}

#[test]
fn exactly_max_depth_is_accepted() {
    let (tenant, source) = ids();
    let limits = test_limits();
    // Batch object, events array, event object, `after` object: 4 levels, then the rest.
    let mut nested = json!(1);
    for _ in 0..(limits.max_depth - 4) {
        nested = json!([nested]);
    }
    let mut event = insert_json(source, 0);
    event["after"]["deep"] = nested;
    let text = body(&[event]);
    assert_eq!(
        decode(&text, tenant, source)
            .expect("decodes")
            .valid()
            .count(),
        1
    );

    let mut too_deep = insert_json(source, 0);
    let mut nested = json!(1);
    for _ in 0..(limits.max_depth - 3) {
        nested = json!([nested]);
    }
    too_deep["after"]["deep"] = nested;
    let error = decode(&body(&[too_deep]), tenant, source).expect_err("one level too deep");
    assert_eq!(error.code, ReasonCode::NestingTooDeep);
}

#[test]
fn brackets_inside_strings_do_not_count_as_nesting() {
    let (tenant, source) = ids();
    let mut event = insert_json(source, 0);
    event["after"]["note"] = json!(format!("{}\\\"{}", "[{".repeat(5000), "]}".repeat(5000)));
    let decoded = decode(&body(&[event]), tenant, source).expect("decodes");
    assert_eq!(decoded.valid().count(), 1);
}

// --- in-batch repeats ---

#[test]
fn decoded_batches_iterate_with_their_indexes() {
    let (tenant, source) = ids();
    let mut bad = insert_json(source, 1);
    bad["op"] = json!("merge");
    let events = [insert_json(source, 0), bad, insert_json(source, 2)];
    let decoded = decode(&body(&events), tenant, source).expect("decodes");
    assert_eq!(decoded.len(), 3);
    let outcomes: Vec<(u32, bool)> = decoded
        .into_iter()
        .map(|(index, outcome)| (index, outcome.is_ok()))
        .collect();
    assert_eq!(outcomes, [(0, true), (1, false), (2, true)]);
}

#[test]
fn envelopes_carry_the_certificate_identity_and_the_event() {
    let (tenant, source) = ids();
    let envelope = Envelope {
        tenant_id: tenant,
        source_id: source,
        event: insert_event(source, 4),
        replay: None,
    };
    let value = serde_json::to_value(&envelope).expect("serializes");
    assert_eq!(value["tenant_id"], json!(tenant.to_string()));
    assert!(
        value.get("replay").is_none(),
        "no replay field on a first delivery"
    );
    assert_eq!(value["event"]["lsn"], "16/B374D848");
    assert_eq!(
        serde_json::from_value::<Envelope>(value).expect("parses"),
        envelope
    );
}

#[test]
fn an_exact_repeat_in_the_batch_is_a_duplicate_and_a_changed_one_a_conflict() {
    let (tenant, source) = ids();
    let original = insert_json(source, 0);
    let mut changed = original.clone();
    changed["after"]["total"] = json!(99);
    let decoded = decode(
        &body(&[original.clone(), original, changed]),
        tenant,
        source,
    )
    .expect("decodes");
    assert!(decoded.events[0].is_ok());
    match &decoded.events[1] {
        Err(result) => {
            assert_eq!(result.status, EventStatus::Duplicate);
            assert_eq!(result.index, 1);
        }
        other => panic!("expected a duplicate, got {other:?}"),
    }
    match &decoded.events[2] {
        Err(result) => {
            assert_eq!(result.status, EventStatus::Rejected);
            assert_eq!(result.code, Some(ReasonCode::EventIdConflict));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
}

// --- sizes and compression ---

fn gzip_zeros(total: usize) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..total / chunk.len() {
        encoder.write_all(&chunk).expect("compresses");
    }
    encoder.finish().expect("compresses")
}

fn zstd_zeros(total: usize, declare_size: bool) -> Vec<u8> {
    let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).expect("encoder");
    if declare_size {
        encoder
            .include_contentsize(true)
            .expect("content size flag");
        encoder
            .set_pledged_src_size(Some(total as u64))
            .expect("pledged size");
    }
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..total / chunk.len() {
        encoder.write_all(&chunk).expect("compresses");
    }
    encoder.finish().expect("compresses")
}

fn assert_bomb_refused(bomb: &[u8], encoding: Encoding) {
    let started = Instant::now();
    let error = decompress(bomb, encoding, &test_limits()).expect_err("a bomb");
    assert_eq!(error.code, ReasonCode::DecompressedTooLarge, "{encoding:?}");
    assert_eq!(error.http_status(), 413);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{encoding:?} bomb took {:?}",
        started.elapsed()
    );
}

#[test]
fn gzip_bomb_is_refused_at_the_limit() {
    let bomb = gzip_zeros(100 << 20);
    assert!(bomb.len() < 1 << 20, "the bomb is small on the wire");
    assert_bomb_refused(&bomb, Encoding::Gzip);
}

#[test]
fn zstd_bombs_are_refused_at_the_limit() {
    let streamed = zstd_zeros(100 << 20, false);
    assert_eq!(
        zstd::zstd_safe::get_frame_content_size(&streamed).expect("header"),
        None
    );
    assert_bomb_refused(&streamed, Encoding::Zstd);
    let declared = zstd_zeros(100 << 20, true);
    assert_eq!(
        zstd::zstd_safe::get_frame_content_size(&declared).expect("header"),
        Some(100 << 20)
    );
    assert_bomb_refused(&declared, Encoding::Zstd);
}

#[test]
fn zstd_frame_asking_for_a_huge_window_is_refused() {
    // Magic, no content size, window descriptor 2^30 bytes, one last raw block of one byte.
    let frame = [0x28, 0xB5, 0x2F, 0xFD, 0x00, 0xA0, 0x09, 0x00, 0x00, b'{'];
    let error = decompress(&frame, Encoding::Zstd, &test_limits()).expect_err("1 GiB window");
    assert_eq!(error.code, ReasonCode::InvalidCompression);
}

#[test]
fn output_just_under_the_limit_decompresses() {
    let limits = Limits {
        max_decompressed_bytes: 1 << 20,
        ..test_limits()
    };
    let exact = gzip_zeros(1 << 20);
    assert_eq!(
        decompress(&exact, Encoding::Gzip, &limits)
            .expect("fits")
            .len(),
        1 << 20
    );
    let over = gzip_zeros(2 << 20);
    let error = decompress(&over, Encoding::Gzip, &limits).expect_err("over");
    assert_eq!(error.code, ReasonCode::DecompressedTooLarge);
}

#[test]
fn raw_body_over_the_limit_is_refused() {
    let limits = Limits {
        max_body_bytes: 1000,
        ..test_limits()
    };
    for encoding in [Encoding::Identity, Encoding::Gzip, Encoding::Zstd] {
        let error = decompress(&[b' '; 1001], encoding, &limits).expect_err("too large");
        assert_eq!(error.code, ReasonCode::BodyTooLarge);
        assert_eq!(error.http_status(), 413);
    }
    assert!(decompress(&[b' '; 1000], Encoding::Identity, &limits).is_ok());
    let oversized_json = vec![b' '; test_limits().max_decompressed_bytes + 1];
    assert_eq!(
        batch_error(&oversized_json).code,
        ReasonCode::DecompressedTooLarge
    );
}

#[test]
fn corrupt_or_truncated_compression_is_refused() {
    let (_, source) = ids();
    let batch = EventBatch {
        source_id: None,
        tenant_id: None,
        events: vec![insert_event(source, 0)],
        types: Vec::new(),
    };
    for encoding in [Encoding::Gzip, Encoding::Zstd] {
        let wire = encode_batch(&batch, encoding).expect("encodes");
        let truncated = &wire[..wire.len() / 2];
        let error = decompress(truncated, encoding, &test_limits()).expect_err("truncated");
        assert_eq!(error.code, ReasonCode::InvalidCompression, "{encoding:?}");
        let error =
            decompress(b"{\"events\":[]}", encoding, &test_limits()).expect_err("not compressed");
        assert_eq!(error.code, ReasonCode::InvalidCompression, "{encoding:?}");
        let mut trailing = wire.clone();
        trailing.extend_from_slice(b"garbage");
        let error = decompress(&trailing, encoding, &test_limits()).expect_err("trailing");
        assert_eq!(error.code, ReasonCode::InvalidCompression, "{encoding:?}");
    }
}

#[test]
fn too_many_events_is_refused_and_not_collected() {
    let (tenant, source) = ids();
    let limits = Limits {
        max_events: 3,
        ..test_limits()
    };
    let events: Vec<Value> = (0..4).map(|seq| insert_json(source, seq)).collect();
    let error = decode_batch(&body(&events), tenant, source, &limits).expect_err("four events");
    assert_eq!(error.code, ReasonCode::TooManyEvents);
    assert_eq!(error.http_status(), 413);
    assert!(decode_batch(&body(&events[..3]), tenant, source, &limits).is_ok());
    // A million tiny elements are counted, not kept.
    let many = format!("{{\"events\":[{}0]}}", "0,".repeat(1_000_000));
    let error = decode(many.as_bytes(), tenant, source).expect_err("a million events");
    assert_eq!(error.code, ReasonCode::TooManyEvents);
}

// --- whole-batch refusals ---

#[test]
fn invalid_utf8_is_refused_before_parsing() {
    let (_, source) = ids();
    let valid = String::from_utf8(body(&[insert_json(source, 0)])).expect("utf-8");
    for bad in [&b"\xC0\xAF"[..], b"\xED\xA0\x80", b"\xFF", b"\xE2\x82"] {
        let mut text = valid.clone().into_bytes();
        let at = text
            .windows(5)
            .position(|w| w == b"a@exa")
            .expect("email in body");
        text.splice(at..at, bad.iter().copied());
        assert_eq!(batch_error(&text).code, ReasonCode::InvalidUtf8, "{bad:?}");
    }
}

#[test]
fn byte_order_mark_is_refused() {
    let (_, source) = ids();
    let mut text = b"\xEF\xBB\xBF".to_vec();
    text.extend(body(&[insert_json(source, 0)]));
    let error = batch_error(&text);
    assert_eq!(error.code, ReasonCode::InvalidJson);
    assert!(error.message.contains("byte order mark"));
}

#[test]
fn not_one_json_object_is_invalid_json() {
    let (_, source) = ids();
    let valid = String::from_utf8(body(&[insert_json(source, 0)])).expect("utf-8");
    let cases = [
        String::new(),
        "   \n".to_owned(),
        format!("[{valid}]"),
        "42".to_owned(),
        "\"events\"".to_owned(),
        "null".to_owned(),
        format!("{valid} trailing"),
        format!("{valid}{valid}"),
        valid[..valid.len() - 1].to_owned(),
        "{'events': []}".to_owned(),
        "{\"events\": [] /* comment */}".to_owned(),
        "{\"events\": [NaN]}".to_owned(),
        "{\"events\": [Infinity]}".to_owned(),
        "{}".to_owned(),
        "{\"events\": null}".to_owned(),
        "{\"events\": {}}".to_owned(),
        "{\"events\": \"[]\"}".to_owned(),
        format!(
            "{{\"\\ud800\": 1, \"events\": [{}]}}",
            insert_json(source, 0)
        ),
        "{\"events\": [\"a\u{1}b\"]}".to_owned(),
    ];
    for case in cases {
        let error = batch_error(case.as_bytes());
        assert_eq!(error.code, ReasonCode::InvalidJson, "{case:.80}");
        assert_eq!(error.http_status(), 400);
    }
}

#[test]
fn empty_events_is_an_empty_batch() {
    let error = batch_error(b"{\"events\": []}");
    assert_eq!(error.code, ReasonCode::EmptyBatch);
    assert_eq!(error.http_status(), 400);
}

#[test]
fn a_repeated_top_level_field_is_refused() {
    let (tenant, source) = ids();
    let event = insert_json(source, 0);
    let text = format!("{{\"events\":[{event}],\"events\":[{event}]}}");
    let error = decode(text.as_bytes(), tenant, source).expect_err("repeated events");
    assert_eq!(error.code, ReasonCode::DuplicateKey);
    let text =
        format!("{{\"tenant_id\":\"{tenant}\",\"events\":[{event}],\"tenant_id\":\"{tenant}\"}}");
    let error = decode(text.as_bytes(), tenant, source).expect_err("repeated tenant_id");
    assert_eq!(error.code, ReasonCode::DuplicateKey);
}

#[test]
fn deep_nesting_is_refused_without_recursion() {
    let (tenant, source) = ids();
    for levels in [10_000usize, 1_000_000] {
        let top = format!(
            "{{\"events\":{}{}}}",
            "[".repeat(levels),
            "]".repeat(levels)
        );
        let error = decode(top.as_bytes(), tenant, source).expect_err("deep");
        assert_eq!(error.code, ReasonCode::NestingTooDeep, "{levels}");

        let event = insert_json(source, 0).to_string();
        let deep_value = format!("{}1{}", "{\"a\":".repeat(levels), "}".repeat(levels));
        let inside = event.replacen("12.5", &deep_value, 1);
        let text = format!("{{\"events\":[{inside}]}}");
        let error = decode(text.as_bytes(), tenant, source).expect_err("deep in an event");
        assert_eq!(error.code, ReasonCode::NestingTooDeep, "{levels}");

        let unbalanced = "[".repeat(levels);
        let text = format!("{{\"events\":{unbalanced}");
        let error = decode(text.as_bytes(), tenant, source).expect_err("unbalanced");
        assert_eq!(error.code, ReasonCode::NestingTooDeep, "{levels}");
    }
}

#[test]
fn tenant_or_source_claim_that_contradicts_the_certificate_is_forbidden() {
    let (tenant, source) = ids();
    let event = insert_json(source, 0);
    let other_tenant = serde_json::to_vec(&json!({
        "tenant_id": TenantId::new_random(), "events": [event]
    }))
    .expect("serializes");
    let error = decode(&other_tenant, tenant, source).expect_err("tenant B");
    assert_eq!(error.code, ReasonCode::TenantMismatch);
    assert_eq!(error.http_status(), 403);

    let other_source = serde_json::to_vec(&json!({
        "source_id": SourceId::new_random(), "events": [event]
    }))
    .expect("serializes");
    let error = decode(&other_source, tenant, source).expect_err("another source");
    assert_eq!(error.code, ReasonCode::SourceMismatch);
    assert_eq!(error.http_status(), 403);

    for claim in [json!(SECRET), json!(42), json!({"id": tenant})] {
        let garbage = serde_json::to_vec(&json!({"tenant_id": claim, "events": [event]}))
            .expect("serializes");
        let error = decode(&garbage, tenant, source).expect_err("not a uuid");
        assert_eq!(error.code, ReasonCode::InvalidType);
        assert!(!error.message.contains(SECRET));
    }
}

#[test]
fn batch_error_messages_never_echo_the_payload() {
    let (_, source) = ids();
    let mut event = insert_json(source, 0);
    event["after"]["email"] = json!(SECRET);
    let valid = String::from_utf8(body(&[event])).expect("utf-8");
    let cases = [
        format!("{valid}{SECRET}"),
        valid.replacen(SECRET, &format!("{SECRET}\u{1}"), 1),
        valid.replacen(&format!("\"{SECRET}\""), SECRET, 1),
        format!("[{valid}]"),
    ];
    for case in cases {
        let error = batch_error(case.as_bytes());
        assert!(!error.message.contains(SECRET), "{}", error.message);
        assert!(!error.to_string().contains(SECRET), "{error}");
    }
}

// --- per-event rejections ---

#[test]
fn a_bad_middle_event_leaves_its_neighbours_valid() {
    let (tenant, source) = ids();
    let mut middle = insert_json(source, 1);
    middle["op"] = json!("upsert");
    let message =
        assert_middle_rejected(source, tenant, &middle.to_string(), ReasonCode::UnknownOp);
    assert!(message.contains("`op`"), "{message}");
    let decoded = decode(
        &body_with_raw_middle(source, &middle.to_string()),
        tenant,
        source,
    )
    .expect("decodes");
    match &decoded.events[1] {
        Err(result) => {
            assert_eq!(result.event_id, Some(insert_event(source, 1).event_id));
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(
        decoded.valid().map(|(index, _)| index).collect::<Vec<_>>(),
        [0, 2]
    );
}

#[test]
fn repeated_keys_in_an_event_are_refused() {
    let (tenant, source) = ids();
    let event = insert_json(source, 1).to_string();
    let nested = event.replacen(
        "\"total\":12.5",
        &format!("\"total\":12.5,\"deep\":[{{\"x\":\"{SECRET}\",\"x\":2}}]"),
        1,
    );
    let message = assert_middle_rejected(source, tenant, &nested, ReasonCode::DuplicateKey);
    assert!(message.contains("`after`"), "{message}");
    let top = event.replacen(
        "\"op\":\"insert\"",
        "\"op\":\"insert\",\"op\":\"delete\"",
        1,
    );
    assert_middle_rejected(source, tenant, &top, ReasonCode::DuplicateKey);
    let in_key = event.replacen("\"key\":{\"id\":1}", "\"key\":{\"id\":1,\"id\":1}", 1);
    assert_ne!(in_key, event);
    assert_middle_rejected(source, tenant, &in_key, ReasonCode::DuplicateKey);
    // The edge names the event's field, never a key from the payload.
    assert!(!message.contains("deep"), "{message}");

    // Reading on its own (as the masking preview does), the same events are refused for the
    // same reason, and the answer says where.
    let located = |text: &str| match read_event_json(text, &Limits::default()) {
        Err(StrictJsonError::DuplicateKey { path }) => path.to_string(),
        other => panic!("expected a repeated key, got {other:?}"),
    };
    assert_eq!(located(&nested), "after.deep[0].x");
    assert_eq!(located(&top), "op");
    assert_eq!(located(&in_key), "key.id");
    assert!(read_event_json(&event, &Limits::default()).is_ok());
}

#[test]
fn reading_event_json_on_its_own_names_where_a_rule_is_broken() {
    let limits = Limits::default();
    let read = |text: &str| read_event_json(text, &limits);
    let repeated = |text: &str| match read(text) {
        Err(StrictJsonError::DuplicateKey { path }) => path,
        other => panic!("expected a repeated key in {text}, got {other:?}"),
    };
    assert_eq!(
        repeated(r#"{"after": {"id": 1}, "after": {"id": 2}}"#).steps(),
        [PathStep::Key("after".to_owned())]
    );
    assert_eq!(
        repeated(r#"{"after": {"address": {"city": "a", "zip": 1, "city": "b"}}}"#).to_string(),
        "after.address.city"
    );
    assert_eq!(
        repeated(r#"{"before": {"tags": [1, {"k": [{"a.b": 1, "a.b": 2}]}]}}"#).to_string(),
        r#"before.tags[1].k[0]["a.b"]"#
    );
    assert_eq!(
        repeated(r#"{"": {"": 1, "": 2}}"#).to_string(),
        r#"[""][""]"#
    );
    // The same key in different objects is no repetition.
    assert!(read(r#"{"key": {"id": 1}, "after": {"id": 1, "nested": {"id": 1}}}"#).is_ok());

    // The other rules of the edge, located where they are about one string or key.
    match read(r#"{"after": {"note": ["ok", "a\u0000b"]}}"#) {
        Err(StrictJsonError::NulInString { path }) => {
            assert_eq!(path.to_string(), "after.note[1]");
        }
        other => panic!("expected U+0000, got {other:?}"),
    }
    // Keys count too: `after` just fits.
    let small = Limits {
        max_string_bytes: 5,
        ..Limits::default()
    };
    match read_event_json(r#"{"after": {"name": "longer"}}"#, &small) {
        Err(StrictJsonError::StringTooLong { path, max: 5 }) => {
            assert_eq!(path.to_string(), "after.name");
        }
        other => panic!("expected an over-long string, got {other:?}"),
    }
    assert_eq!(
        read(r#"{"after": {"big": 123456789012345678901234567890}}"#),
        Err(StrictJsonError::IntegerOutOfRange)
    );
    // An event sits two levels down in a batch (its object in the `events` array), so its own
    // text may nest two levels less than the batch: `after`'s values here reach 30 and 31.
    let nested = |levels: usize| {
        let deep = format!("{}1{}", "[".repeat(levels), "]".repeat(levels));
        format!(r#"{{"after": {{"deep": {deep}}}}}"#)
    };
    assert!(read(&nested(28)).is_ok());
    assert_eq!(read(&nested(29)), Err(StrictJsonError::TooDeep { max: 30 }));
    assert_eq!(
        read("{\"after\": {\n  \"id\": 1,\n}}"),
        Err(StrictJsonError::Syntax { line: 3, column: 1 })
    );
    assert!(matches!(read("{} {}"), Err(StrictJsonError::Syntax { .. })));
}

#[test]
fn nul_in_a_string_or_key_is_refused() {
    assert_event_rejected(ReasonCode::NulInString, |event, _| {
        event["after"]["email"] = json!(format!("{SECRET}\u{0}"));
    });
    assert_event_rejected(ReasonCode::NulInString, |event, _| {
        event["after"]["nested"] = json!({ "ke\u{0}y": 1 });
    });
    assert_event_rejected(ReasonCode::NulInString, |event, _| {
        event["future_field"] = json!(["\u{0}"]);
    });
}

#[test]
fn over_long_strings_are_refused() {
    let limit = test_limits().max_string_bytes;
    assert_event_rejected(ReasonCode::StringTooLong, |event, _| {
        event["after"]["blob"] = json!("x".repeat(limit + 1));
    });
    assert_event_rejected(ReasonCode::StringTooLong, |event, _| {
        let mut long_key = Map::new();
        long_key.insert("k".repeat(limit + 1), json!(1));
        event["before_image"] = Value::Object(long_key);
    });
    // Escapes count as what they decode to: six bytes of `\u00e9` are two bytes of text.
    let (tenant, source) = ids();
    let event = insert_json(source, 1).to_string();
    let at_limit = event.replacen("a@example.com", &"\\u00e9".repeat(limit / 2), 1);
    let decoded =
        decode(&body_with_raw_middle(source, &at_limit), tenant, source).expect("decodes");
    assert_eq!(decoded.valid().count(), 3);
    let over = event.replacen("a@example.com", &"\\u00e9".repeat(limit / 2 + 1), 1);
    assert_middle_rejected(source, tenant, &over, ReasonCode::StringTooLong);
}

#[test]
fn missing_required_fields_are_refused() {
    for field in [
        "event_id",
        "op",
        "schema",
        "table",
        "lsn",
        "seq",
        "event_time",
    ] {
        assert_event_rejected(ReasonCode::MissingField, |event, _| {
            event.as_object_mut().expect("object").remove(field);
        });
        assert_event_rejected(ReasonCode::MissingField, |event, _| {
            event[field] = Value::Null;
        });
    }
    assert_event_rejected(ReasonCode::MissingField, |event, _| {
        event.as_object_mut().expect("object").remove("after");
    });
}

#[test]
fn wrong_types_are_refused() {
    let cases: Vec<(&str, Value)> = vec![
        ("op", json!(1)),
        ("schema", json!(["public"])),
        ("lsn", json!(12)),
        ("lsn", json!(SECRET)),
        ("seq", json!(-1)),
        ("seq", json!(1.5)),
        ("seq", json!(u64::from(u32::MAX) + 1)),
        ("seq", json!(i64::from(i32::MAX) + 1)),
        ("seq", json!("1")),
        ("xid", json!(-5)),
        ("xid", json!("7781")),
        ("event_id", json!(SECRET)),
        ("event_id", json!(7)),
        ("key", json!([1])),
        ("after", json!(SECRET)),
        ("event_time", json!(1_767_225_600_000_i64)),
    ];
    for (field, value) in cases {
        assert_event_rejected(ReasonCode::InvalidType, |event, _| event[field] = value);
    }
    let (tenant, source) = ids();
    for middle in ["42", "[]", "\"event\"", "null", "true"] {
        assert_middle_rejected(source, tenant, middle, ReasonCode::InvalidType);
    }
}

#[test]
fn numbers_outside_64_bits_are_refused_without_panicking() {
    let (tenant, source) = ids();
    let event = insert_json(source, 1).to_string();
    for number in [
        "1e400",
        "-1e400",
        "18446744073709551616",
        "-9223372036854775809",
        "123456789012345678901234567890",
    ] {
        let text = event.replacen("12.5", number, 1);
        assert_ne!(text, event);
        assert_middle_rejected(source, tenant, &text, ReasonCode::InvalidType);
    }
    for number in [
        "-0",
        "18446744073709551615",
        "-9223372036854775808",
        "1e-400",
        "0.1e1",
    ] {
        let text = event.replacen("12.5", number, 1);
        let decoded =
            decode(&body_with_raw_middle(source, &text), tenant, source).expect("decodes");
        assert_eq!(decoded.valid().count(), 3, "{number}");
    }
}

#[test]
fn lone_surrogate_escape_rejects_only_its_event() {
    let (tenant, source) = ids();
    let event = insert_json(source, 1).to_string();
    for escape in ["\\ud800", "\\udc00", "\\ud800\\u0041"] {
        let text = event.replacen("a@example.com", escape, 1);
        assert_ne!(text, event);
        assert_middle_rejected(source, tenant, &text, ReasonCode::InvalidJson);
    }
    // A proper pair is fine.
    let text = event.replacen("a@example.com", "\\ud83d\\ude00", 1);
    let decoded = decode(&body_with_raw_middle(source, &text), tenant, source).expect("decodes");
    assert_eq!(decoded.valid().count(), 3);
}

/// The middle event of a batch around `middle`: its rejection's code and event id.
fn middle_rejection(source: SourceId, middle: &str) -> (Option<ReasonCode>, Option<EventId>) {
    let (tenant, _) = ids();
    let decoded = decode(&body_with_raw_middle(source, middle), tenant, source)
        .unwrap_or_else(|error| panic!("batch refused as a whole ({error}) for {middle}"));
    assert_eq!(decoded.valid().count(), 2, "{middle}");
    match &decoded.events[1] {
        Err(result) => (result.code, result.event_id),
        Ok(event) => panic!("expected a rejection for {middle}, got {event:?}"),
    }
}

#[test]
fn keys_are_normalised_to_nfc_and_keys_that_collide_are_refused() {
    let (tenant, source) = ids();
    let composed = "caf\u{e9}";
    let decomposed = "cafe\u{301}";
    let mut event = insert_json(source, 1);
    event["after"][decomposed] = json!(1);
    event["after"]["nested"] = json!({ decomposed: { "x\u{30a}": true } });
    let decoded = decode(&body(&[event]), tenant, source).expect("decodes");
    let (_, stored) = decoded.valid().next().expect("the event is valid");
    let after = stored.after.as_ref().unwrap();
    assert_eq!(after.get(composed), Some(&json!(1)));
    assert!(!after.contains_key(decomposed));
    assert_eq!(
        after["nested"],
        json!({ composed: { "x\u{30a}": true } }),
        "`x` + ring has no composed form: kept as sent"
    );

    // Two keys that are one in NFC: refused, whichever comes first, at any depth, with the id.
    for (first, second) in [(composed, decomposed), (decomposed, composed)] {
        let event = insert_json(source, 1);
        let id = event["event_id"].clone();
        let text = event.to_string().replacen(
            "\"total\":12.5",
            &format!("\"total\":12.5,\"deep\":[{{\"{first}\":\"{SECRET}\",\"{second}\":2}}]"),
            1,
        );
        let message = assert_middle_rejected(
            source,
            tenant,
            &text,
            ReasonCode::KeysCollideAfterNormalisation,
        );
        assert!(message.contains("`after`"), "{message}");
        assert!(!message.contains("caf"), "{message}");
        let (_, event_id) = middle_rejection(source, &text);
        assert_eq!(json!(event_id), id);
        match read_event_json(&text, &Limits::default()) {
            Err(StrictJsonError::KeysCollide { path }) => {
                assert_eq!(path.to_string(), format!("after.deep[0].{composed}"));
            }
            other => panic!("expected colliding keys, got {other:?}"),
        }
    }
    // The same key twice, decomposed both times, is a repetition, not a collision.
    let text = insert_json(source, 1).to_string().replacen(
        "\"total\":12.5",
        &format!("\"total\":12.5,\"{decomposed}\":1,\"{decomposed}\":2"),
        1,
    );
    assert_middle_rejected(source, tenant, &text, ReasonCode::DuplicateKey);
}

#[test]
fn rejections_name_the_event_whenever_its_id_is_readable() {
    let source = SourceId::new_random();
    let event = insert_json(source, 1);
    let id: EventId = serde_json::from_value(event["event_id"].clone()).unwrap();
    let text = event.to_string();
    let long = "x".repeat(test_limits().max_string_bytes + 1);
    for (broken, code) in [
        (
            text.replacen("\"total\":12.5", "\"total\":12.5,\"total\":1", 1),
            ReasonCode::DuplicateKey,
        ),
        (
            text.replacen("a@example.com", "a\\u0000b", 1),
            ReasonCode::NulInString,
        ),
        (
            text.replacen("a@example.com", &long, 1),
            ReasonCode::StringTooLong,
        ),
        (
            text.replacen("a@example.com", "\\ud800", 1),
            ReasonCode::InvalidJson,
        ),
        (text.replacen("12.5", "1e400", 1), ReasonCode::InvalidType),
        (
            text.replacen("12.5", "123456789012345678901234567890", 1),
            ReasonCode::InvalidType,
        ),
        (
            text.replacen("\"op\":\"insert\"", "\"op\":\"upsert\"", 1),
            ReasonCode::UnknownOp,
        ),
    ] {
        assert_ne!(broken, text);
        assert_eq!(
            middle_rejection(source, &broken),
            (Some(code), Some(id)),
            "{code}"
        );
    }
    // The rule broken before the id (in text that comes first) does not hide it either.
    let first = format!(
        "{{\"future\":{{\"a\":1,\"a\":2}},{}",
        text.strip_prefix('{').unwrap()
    );
    assert_eq!(
        middle_rejection(source, &first),
        (Some(ReasonCode::DuplicateKey), Some(id))
    );
    // No id to name: absent, not a UUID, or two different ones.
    let other = insert_json(source, 2)["event_id"].to_string();
    for (broken, code) in [
        (
            text.replacen("\"event_id\"", "\"event\"", 1),
            ReasonCode::MissingField,
        ),
        (
            text.replacen(&event["event_id"].to_string(), "\"not-a-uuid\"", 1),
            ReasonCode::InvalidType,
        ),
        (
            text.replacen(
                "\"op\":\"insert\"",
                &format!("\"op\":\"insert\",\"event_id\":{other}"),
                1,
            ),
            ReasonCode::DuplicateKey,
        ),
    ] {
        assert_ne!(broken, text);
        assert_eq!(middle_rejection(source, &broken), (Some(code), None));
    }
}

#[test]
fn negative_zero_is_kept_as_sent() {
    let (tenant, source) = ids();
    let text = insert_json(source, 1).to_string();
    for number in ["-0", "-0.0", "-0e3"] {
        let event = text.replacen("12.5", number, 1);
        let decoded = decode(&body_with_raw_middle(source, &event), tenant, source).unwrap();
        let (_, stored) = decoded.valid().nth(1).expect("valid");
        let total = &stored.after.as_ref().unwrap()["total"];
        let value = total.as_f64().unwrap();
        assert!(
            value == 0.0 && value.is_sign_negative(),
            "{number}: {total}"
        );
        let envelope = serde_json::to_string(stored).unwrap();
        assert!(envelope.contains("\"total\":-0.0"), "{number}: {envelope}");
    }
}

#[test]
fn unknown_ops_are_refused() {
    for op in ["upsert", "INSERT", "Insert", "", "snapshot", "delete "] {
        assert_event_rejected(ReasonCode::UnknownOp, |event, _| event["op"] = json!(op));
    }
}

#[test]
fn timestamps_without_offset_or_not_rfc3339_are_refused() {
    for text in [
        "2026-01-01T00:00:00",
        "2026-01-01",
        "2026-01-01 00:00:00",
        "yesterday",
        "2026-13-01T00:00:00Z",
        "2026-01-01T00:00:00+25:00",
        "1767225600",
    ] {
        assert_event_rejected(ReasonCode::InvalidTimestamp, |event, _| {
            event["event_time"] = json!(text);
        });
    }
}

#[test]
fn far_past_and_far_future_times_are_accepted_with_a_consistent_id() {
    let (tenant, source) = ids();
    let mut events = Vec::new();
    for (seq, time) in ["1900-01-01T00:00:00Z", "9999-12-31T23:59:59.999Z"]
        .into_iter()
        .enumerate()
    {
        let mut event = insert_json(source, seq as u32);
        event["event_time"] = json!(time);
        rederive(&mut event, source);
        events.push(event);
    }
    let decoded = decode(&body(&events), tenant, source).expect("decodes");
    assert_eq!(decoded.valid().count(), 2);
}

#[test]
fn commit_times_outside_the_window_are_refused_and_storage_bounds_are_kept() {
    let (tenant, source) = ids();
    let now = time::OffsetDateTime::now_utc();
    let mut events = Vec::new();
    for (seq, time) in [
        now - time::Duration::days(399),
        now + time::Duration::hours(23),
        now - time::Duration::days(401),
        now + time::Duration::days(2),
    ]
    .into_iter()
    .enumerate()
    {
        let mut event = insert_json(source, seq as u32);
        event["event_time"] = json!(
            time.format(&time::format_description::well_known::Rfc3339)
                .expect("formats")
        );
        rederive(&mut event, source);
        events.push(event);
    }
    let mut out_of_range = insert_json(source, 9);
    out_of_range["seq"] = json!(i64::from(i32::MAX) + 1);
    rederive(&mut out_of_range, source);
    events.push(out_of_range);
    let mut big_xid = insert_json(source, 10);
    big_xid["xid"] = json!(u64::MAX);
    events.push(big_xid);
    let decoded =
        decode_batch(&body(&events), tenant, source, &Limits::default()).expect("decodes");
    let codes: Vec<Option<ReasonCode>> = decoded
        .events
        .iter()
        .map(|event| event.as_ref().err().and_then(|rejection| rejection.code))
        .collect();
    assert_eq!(
        codes,
        [
            None,
            None,
            Some(ReasonCode::InvalidTimestamp),
            Some(ReasonCode::InvalidTimestamp),
            Some(ReasonCode::InvalidType),
            Some(ReasonCode::InvalidType),
        ]
    );
}

#[test]
fn events_without_a_key_are_refused() {
    for op in ["insert", "update", "delete", "read"] {
        assert_event_rejected(ReasonCode::MissingKey, |event, _| {
            event["op"] = json!(op);
            event["key"] = json!({});
            if op == "delete" {
                event.as_object_mut().expect("object").remove("after");
            }
        });
        assert_event_rejected(ReasonCode::MissingKey, |event, _| {
            event["op"] = json!(op);
            event.as_object_mut().expect("object").remove("key");
            if op == "delete" {
                event.as_object_mut().expect("object").remove("after");
            }
        });
    }
}

#[test]
fn fields_the_op_does_not_carry_are_refused() {
    assert_event_rejected(ReasonCode::UnexpectedField, |event, _| {
        event["op"] = json!("truncate");
        event.as_object_mut().expect("object").remove("after");
    });
    assert_event_rejected(ReasonCode::UnexpectedField, |event, _| {
        event["op"] = json!("delete");
    });
    assert_event_rejected(ReasonCode::UnexpectedField, |event, _| {
        event["before"] = json!({"id": 1});
    });
    assert_event_rejected(ReasonCode::UnexpectedField, |event, _| {
        event["op"] = json!("truncate");
        event["key"] = json!({});
        event["before"] = json!({"id": 1});
        event.as_object_mut().expect("object").remove("after");
    });
}

#[test]
fn too_many_key_columns_are_refused() {
    let limit = test_limits().max_key_columns;
    assert_event_rejected(ReasonCode::TooManyKeyColumns, |event, _| {
        let key: Map<String, Value> = (0..=limit).map(|i| (format!("k{i}"), json!(i))).collect();
        event["key"] = Value::Object(key);
    });
    let (tenant, source) = ids();
    let mut event = insert_json(source, 0);
    event["key"] = Value::Object((0..limit).map(|i| (format!("k{i}"), json!(i))).collect());
    assert_eq!(
        decode(&body(&[event]), tenant, source)
            .expect("decodes")
            .valid()
            .count(),
        1
    );
}

#[test]
fn bad_schema_table_and_column_names_are_refused() {
    let too_long = "t".repeat(test_limits().max_name_bytes + 1);
    for (field, name) in [
        ("schema", ""),
        ("table", ""),
        ("table", too_long.as_str()),
        ("table", "orders\n"),
        ("schema", "pub\u{1b}[31mlic"),
        ("table", "ord\u{85}ers"),
    ] {
        assert_event_rejected(ReasonCode::InvalidName, |event, _| {
            event[field] = json!(name)
        });
    }
    assert_event_rejected(ReasonCode::InvalidName, |event, _| {
        event["after"]["bad\tcolumn"] = json!(1);
    });
    assert_event_rejected(ReasonCode::InvalidName, |event, _| {
        event["after"][too_long.as_str()] = json!(1);
    });
    assert_event_rejected(ReasonCode::InvalidName, |event, _| {
        event["key"][""] = json!(1);
    });
    // Odd but legal quoted identifiers pass: they are data, never SQL text.
    let (tenant, source) = ids();
    let mut event = insert_json(source, 0);
    event["table"] = json!("Robert'); DROP TABLE students;--");
    event["schema"] = json!("s".repeat(test_limits().max_name_bytes));
    assert_eq!(
        decode(&body(&[event]), tenant, source)
            .expect("decodes")
            .valid()
            .count(),
        1
    );
}

#[test]
fn an_event_id_that_is_not_derived_is_refused() {
    assert_event_rejected(ReasonCode::EventIdMismatch, |event, source| {
        event["event_id"] = json!(insert_event(source, 9).event_id);
    });
    assert_event_rejected(ReasonCode::EventIdMismatch, |event, _| {
        event["event_id"] = json!(uuid::Uuid::now_v7());
    });
    assert_event_rejected(ReasonCode::EventIdMismatch, |event, _| {
        event["event_id"] = json!(insert_event(SourceId::new_random(), 1).event_id);
    });
    assert_event_rejected(ReasonCode::EventIdMismatch, |event, _| {
        event["event_time"] = json!("2026-03-01T12:34:56.790Z");
    });
    assert_event_rejected(ReasonCode::EventIdMismatch, |event, _| {
        event["lsn"] = json!("16/B374D849");
    });
}

#[test]
fn per_event_messages_never_echo_the_payload() {
    let (tenant, source) = ids();
    let event = insert_json(source, 1);
    type Breaker = Box<dyn Fn(&mut Value)>;
    let breakers: Vec<Breaker> = vec![
        Box::new(|e| e["op"] = json!(SECRET)),
        Box::new(|e| e["lsn"] = json!(SECRET)),
        Box::new(|e| e["event_time"] = json!(SECRET)),
        Box::new(|e| e["event_id"] = json!(SECRET)),
        Box::new(|e| e["table"] = json!(format!("{SECRET}\n"))),
        Box::new(|e| e["after"][format!("{SECRET}\n")] = json!(1)),
        Box::new(|e| e["after"]["x"] = json!(format!("{SECRET}\u{0}"))),
        Box::new(|e| e["seq"] = json!(SECRET)),
    ];
    for breaker in breakers {
        let mut broken = event.clone();
        breaker(&mut broken);
        let decoded = decode(&body(&[broken]), tenant, source).expect("decodes");
        let result = decoded.settled().next().expect("rejected");
        let message = result.message.as_deref().unwrap_or_default();
        assert!(!message.is_empty());
        assert!(!message.contains(SECRET), "{message}");
    }
}

// --- properties ---

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        // Decimals serde_json reads back exactly (it parses doubles best-effort, not always to
        // the last bit, which the contract documents).
        (any::<i32>(), 0i32..6)
            .prop_map(|(mantissa, scale)| { json!(f64::from(mantissa) / 10f64.powi(scale)) }),
        "[^\u{0}]{0,12}".prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            // Keys in NFC, the form the edge stores them in (normalising has a test of its own).
            prop::collection::btree_map("[^\u{0}]{0,8}", inner, 0..4).prop_map(|map| {
                Value::Object(
                    map.into_iter()
                        .map(|(key, value)| (key.nfc().collect(), value))
                        .collect(),
                )
            }),
        ]
    })
}

fn column_map(min: usize) -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map("[a-zA-Z_][a-zA-Z0-9_ $.-]{0,20}", json_value(), min..5)
        .prop_map(|map| map.into_iter().collect())
}

fn event_time() -> impl Strategy<Value = OffsetDateTime> {
    (
        0i64..4_102_444_800,
        0u32..1_000_000_000,
        -12i8..=14,
        prop::sample::select(vec![0i8, 30, 45]),
    )
        .prop_map(|(seconds, nanos, hours, minutes)| {
            let minutes = if hours < 0 { -minutes } else { minutes };
            let offset = UtcOffset::from_hms(hours, minutes, 0).unwrap_or(UtcOffset::UTC);
            (OffsetDateTime::UNIX_EPOCH + time::Duration::new(seconds, nanos as i32))
                .to_offset(offset)
        })
}

fn change_event(source: SourceId) -> impl Strategy<Value = ChangeEvent> {
    (
        prop::sample::select(Op::ALL.to_vec()),
        "[a-z_][a-z0-9_]{0,20}",
        "[a-zA-Z_][a-zA-Z0-9_ ]{0,40}",
        0..=i64::MAX as u64,
        0..=i32::MAX as u32,
        prop::option::of(0..=i64::MAX as u64),
        event_time(),
        column_map(1),
        column_map(0),
        column_map(0),
        any::<bool>(),
    )
        .prop_map(
            move |(
                op,
                schema,
                table,
                lsn,
                seq,
                xid,
                event_time,
                key,
                after,
                before,
                with_before,
            )| {
                let (key, after, before) = match op {
                    Op::Insert | Op::Read => (key, Some(after), None),
                    Op::Update => (key, Some(after), with_before.then_some(before)),
                    Op::Delete => (key, None, with_before.then_some(before)),
                    Op::Truncate => (Map::new(), None, None),
                };
                let mut event = ChangeEvent {
                    event_id: EventId::derive(source, 0, Lsn(0), 0),
                    op,
                    schema,
                    table,
                    lsn: Lsn(lsn),
                    seq,
                    xid,
                    event_time,
                    key,
                    after,
                    before,
                    unchanged: Vec::new(),
                    types: Default::default(),
                };
                event.event_id = event.expected_event_id(source);
                event
            },
        )
}

fn source_and_batch() -> impl Strategy<Value = (TenantId, SourceId, EventBatch)> {
    (any::<u128>(), any::<u128>(), any::<bool>()).prop_flat_map(|(t, s, claim)| {
        let tenant = TenantId::from_uuid(uuid::Uuid::from_u128(t));
        let source = SourceId::from_uuid(uuid::Uuid::from_u128(s));
        prop::collection::vec(change_event(source), 1..6).prop_map(move |events| {
            let batch = EventBatch {
                source_id: claim.then_some(source),
                tenant_id: claim.then_some(tenant),
                events,
                types: Vec::new(),
            };
            (tenant, source, batch)
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn encoded_batches_decode_to_the_same_events(
        (tenant, source, batch) in source_and_batch(),
        encoding in prop::sample::select(vec![Encoding::Identity, Encoding::Gzip, Encoding::Zstd]),
    ) {
        let wire = encode_batch(&batch, encoding).expect("encodes");
        let json = decompress(&wire, encoding, &test_limits()).expect("decompresses");
        let decoded = decode_batch(&json, tenant, source, &test_limits()).expect("decodes");
        let settled: Vec<_> = decoded.settled().collect();
        prop_assert!(settled.is_empty(), "{:?}", settled);
        let valid: Vec<ChangeEvent> = decoded.valid().map(|(_, event)| event.clone()).collect();
        prop_assert_eq!(valid, batch.events);
    }

    #[test]
    fn mangled_bodies_never_panic(
        (tenant, source, batch) in source_and_batch(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8),
    ) {
        let mut bytes = encode_batch(&batch, Encoding::Identity).expect("encodes");
        for (at, byte, kind) in edits {
            let index = at.index(bytes.len().max(1));
            match kind {
                0 if index < bytes.len() => bytes[index] = byte,
                1 => bytes.insert(index.min(bytes.len()), byte),
                _ if index < bytes.len() => { bytes.remove(index); }
                _ => {}
            }
        }
        let outcome = decode_batch(&bytes, tenant, source, &test_limits());
        if let Ok(decoded) = outcome {
            for result in decoded.settled() {
                prop_assert!(result.code.is_some_and(ReasonCode::is_event_level) || result.status == EventStatus::Duplicate);
            }
        }
        for encoding in [Encoding::Gzip, Encoding::Zstd] {
            let _ = decompress(&bytes, encoding, &test_limits());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let (tenant, source) = ids();
        let _ = decode_batch(&bytes, tenant, source, &test_limits());
        let _ = decompress(&bytes, Encoding::Gzip, &test_limits());
        let _ = decompress(&bytes, Encoding::Zstd, &test_limits());
    }
}

// --- the documentation ---

fn doc_json_blocks() -> Vec<&'static str> {
    let docs = include_str!("../../../docs/protocol.md");
    docs.split("```json\n")
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap_or_default())
        .collect()
}

#[test]
fn documented_examples_are_valid() {
    let blocks = doc_json_blocks();
    assert_eq!(
        blocks.len(),
        9,
        "batch, response, error, status, status answer, check, pair, renew, certificate"
    );

    let batch: Value = serde_json::from_str(blocks[0]).expect("batch example is JSON");
    let tenant: TenantId = serde_json::from_value(batch["tenant_id"].clone()).expect("tenant");
    let source: SourceId = serde_json::from_value(batch["source_id"].clone()).expect("source");
    let decoded = decode(blocks[0].as_bytes(), tenant, source).expect("batch example decodes");
    let settled: Vec<_> = decoded.settled().collect();
    assert!(settled.is_empty(), "{settled:?}");
    assert_eq!(decoded.valid().count(), 3);
    let typed: Vec<&str> = decoded
        .valid()
        .filter(|(_, event)| !event.types.is_empty())
        .map(|(_, event)| event.table.as_str())
        .collect();
    assert_eq!(
        typed,
        ["orders"],
        "the batch's types reach its orders event"
    );

    let response: BatchResponse = serde_json::from_str(blocks[1]).expect("response example");
    assert_eq!(
        BatchResponse::from_results(response.results.clone()),
        response
    );
    let error: ErrorBody = serde_json::from_str(blocks[2]).expect("error example");
    assert_eq!(
        error,
        check_version(Some("2")).expect_err("v2").to_error_body()
    );
    let status: crate::AgentStatus = serde_json::from_str(blocks[3]).expect("status example");
    assert_eq!(status.validate(), Ok(()));
    let answer: crate::StatusAnswer =
        serde_json::from_str(blocks[4]).expect("status answer example");
    assert!(answer.resync.is_some());
    let check: crate::CheckReport = serde_json::from_str(blocks[5]).expect("check example");
    assert_eq!(check.validate(), Ok(()));
    assert_eq!(check.tables.len(), 1);
    serde_json::from_str::<PairRequest>(blocks[6]).expect("pair example");
    serde_json::from_str::<RenewRequest>(blocks[7]).expect("renew example");
    let certificate: CertificateResponse =
        serde_json::from_str(blocks[8]).expect("certificate example");
    assert_eq!(certificate.tenant_id, tenant);
}

#[test]
fn a_leap_second_is_read_as_the_end_of_its_minute() {
    let (tenant, source) = ids();
    let mut event = insert_json(source, 0);
    event["event_time"] = json!("2016-12-31T23:59:60Z");
    rederive(&mut event, source);
    let decoded = decode(&body(&[event]), tenant, source).expect("decodes");
    let (_, valid) = decoded.valid().next().expect("valid");
    assert_eq!(
        valid.event_time,
        datetime!(2016-12-31 23:59:59.999_999_999 UTC)
    );
}
