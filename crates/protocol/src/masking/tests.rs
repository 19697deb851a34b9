//! Masking: path parsing, each action, key-column refusals, and the property that planted PII
//! never survives `apply`.

use domain::SourceId;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::*;

const SECRET_A: &[u8] = b"0123456789abcdef0123456789abcdef";
const SECRET_B: &[u8] = b"fedcba9876543210fedcba9876543210";

fn path(text: &str) -> FieldPath {
    text.parse()
        .unwrap_or_else(|error| panic!("{text:?}: {error}"))
}

fn policy(rules: &[(&str, MaskAction)]) -> MaskingPolicy {
    MaskingPolicy::new(rules.iter().map(|(text, action)| (path(text), *action)))
}

fn columns(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("test columns must be an object, got {other}"),
    }
}

/// An update event with the given key, after and before (no other constraint applies to
/// masking; the id is not checked here).
fn event(key: Value, after: Value, before: Option<Value>) -> ChangeEvent {
    let mut value = json!({
        "event_id": domain::EventId::derive(SourceId::new_random(), 0, domain::Lsn(1), 0),
        "op": "update",
        "schema": "public",
        "table": "customers",
        "lsn": "0/1",
        "seq": 0,
        "event_time": "2026-03-01T12:00:00Z",
        "key": key,
        "after": after,
    });
    if let Some(before) = before {
        value["before"] = before;
    }
    serde_json::from_value(value).expect("a change event")
}

fn text_of(event: &ChangeEvent) -> String {
    serde_json::to_string(event).expect("serializes")
}

fn expected_hash(secret: &[u8], canonical_json: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(canonical_json.as_bytes());
    format!("hmac-sha256:{}", hex::encode(mac.finalize().into_bytes()))
}

// --- parsing ---

#[test]
fn paths_parse_into_case_folded_segments() {
    let parsed = path("Customer.EMAIL");
    assert_eq!(parsed.as_str(), "Customer.EMAIL");
    assert_eq!(parsed.to_string(), "Customer.EMAIL");
    assert_eq!(
        parsed.segments,
        [
            Segment::Key("customer".to_owned()),
            Segment::Key("email".to_owned())
        ]
    );
    assert_eq!(path("*.email").segments[0], Segment::Any);
    assert!(path("email").is_column());
    assert!(!path("contacts.email").is_column());
    assert_eq!(path("ÉMAIL").segments, [Segment::Key("émail".to_owned())]);
    assert!("x".repeat(MAX_PATH_BYTES).parse::<FieldPath>().is_ok());
    // Odd but legal column names.
    assert!("$weird key-1".parse::<FieldPath>().is_ok());
}

#[test]
fn bad_paths_are_refused_with_their_reason() {
    let cases = [
        (String::new(), FieldPathError::Empty),
        ("a..b".to_owned(), FieldPathError::EmptySegment),
        (".a".to_owned(), FieldPathError::EmptySegment),
        ("a.".to_owned(), FieldPathError::EmptySegment),
        (".".to_owned(), FieldPathError::EmptySegment),
        (
            "x".repeat(MAX_PATH_BYTES + 1),
            FieldPathError::TooLong {
                max: MAX_PATH_BYTES,
            },
        ),
        ("a\nb".to_owned(), FieldPathError::ControlCharacter),
        ("email\u{0}".to_owned(), FieldPathError::ControlCharacter),
        ("a.\u{7f}".to_owned(), FieldPathError::ControlCharacter),
        ("\u{1b}[31m".to_owned(), FieldPathError::ControlCharacter),
    ];
    for (text, expected) in cases {
        assert_eq!(text.parse::<FieldPath>(), Err(expected), "{text:?}");
    }
}

#[test]
fn actions_parse_from_their_names() {
    assert_eq!("hash".parse(), Ok(MaskAction::Hash));
    assert_eq!("redact".parse(), Ok(MaskAction::Redact));
    assert_eq!("drop".parse(), Ok(MaskAction::Drop));
    for action in [MaskAction::Hash, MaskAction::Redact, MaskAction::Drop] {
        assert_eq!(action.to_string().parse(), Ok(action));
    }
    for bad in ["", "Hash", "remove", " drop", "mask"] {
        assert_eq!(bad.parse::<MaskAction>(), Err(UnknownMaskAction), "{bad:?}");
    }
}

// --- actions ---

#[test]
fn hash_is_hmac_sha256_of_the_canonical_json() {
    let mut event = event(
        json!({"id": 1}),
        json!({"id": 1, "email": "ana@example.com", "profile": {"b": [true, null], "a": 1}}),
        None,
    );
    policy(&[("email", MaskAction::Hash), ("profile", MaskAction::Hash)])
        .apply(SECRET_A, &mut event)
        .expect("masks");
    let after = event.after.as_ref().expect("after");
    // Computed independently (Python's hmac module) so the format cannot drift unnoticed.
    assert_eq!(
        after["email"],
        "hmac-sha256:a7289d34338fc905e6425d29cef75393c0baedae5d44b49a4a14ba936f6aa320"
    );
    assert_eq!(
        after["profile"],
        "hmac-sha256:f7971c9e2320aeb60403f8030a4d52939b93aea3d6c512c1b02f59cea38b7ad1"
    );
    assert_eq!(
        after["profile"],
        json!(expected_hash(SECRET_A, r#"{"a":1,"b":[true,null]}"#))
    );
    assert_eq!(after["id"], 1);
}

#[test]
fn hash_is_stable_per_secret_and_differs_across_secrets() {
    let original = event(json!({"id": 1}), json!({"email": "ana@example.com"}), None);
    let rules = policy(&[("email", MaskAction::Hash)]);
    let mut first = original.clone();
    let mut second = original.clone();
    let mut other_tenant = original.clone();
    rules.apply(SECRET_A, &mut first).expect("masks");
    rules.apply(SECRET_A, &mut second).expect("masks");
    rules.apply(SECRET_B, &mut other_tenant).expect("masks");
    assert_eq!(first, second);
    assert_ne!(first.after, other_tenant.after);
}

#[test]
fn a_hashed_key_column_stays_joinable() {
    let mut event = event(
        json!({"email": "ana@example.com"}),
        json!({"email": "ana@example.com", "name": "Ana"}),
        Some(json!({"email": "ana@example.com", "name": "Ana B."})),
    );
    policy(&[("EMAIL", MaskAction::Hash)])
        .apply(SECRET_A, &mut event)
        .expect("hashing a key column is allowed");
    let hashed = event.key["email"].clone();
    assert!(
        hashed
            .as_str()
            .is_some_and(|text| text.starts_with(HASH_PREFIX))
    );
    assert_eq!(event.after.as_ref().expect("after")["email"], hashed);
    assert_eq!(event.before.as_ref().expect("before")["email"], hashed);
}

#[test]
fn redact_and_drop_do_what_they_say() {
    let mut event = event(
        json!({"id": 7}),
        json!({"id": 7, "phone": "+351 912 345 678", "ssn": "123-45-6789", "note": null}),
        Some(json!({"id": 7, "phone": "+351 000", "ssn": "987-65-4321"})),
    );
    policy(&[
        ("phone", MaskAction::Redact),
        ("ssn", MaskAction::Drop),
        ("note", MaskAction::Redact),
    ])
    .apply(SECRET_A, &mut event)
    .expect("masks");
    assert_eq!(
        event.after,
        Some(columns(
            json!({"id": 7, "phone": "[redacted]", "note": null})
        ))
    );
    assert_eq!(
        event.before,
        Some(columns(json!({"id": 7, "phone": "[redacted]"})))
    );
    assert_eq!(event.key, columns(json!({"id": 7})));
}

#[test]
fn keys_match_case_insensitively_and_arrays_are_traversed() {
    let mut event = event(
        json!({"id": 1}),
        json!({
            "Contacts": [
                {"EMAIL": "a@example.com", "kind": "work"},
                [{"Email": "b@example.com"}, [{"eMaIl": "c@example.com"}]],
                "not an object",
                42
            ],
            "Émail": "d@example.com",
            "email_verified": true
        }),
        None,
    );
    policy(&[
        ("contacts.email", MaskAction::Redact),
        ("émail", MaskAction::Redact),
    ])
    .apply(SECRET_A, &mut event)
    .expect("masks");
    let text = text_of(&event);
    for raw in [
        "a@example.com",
        "b@example.com",
        "c@example.com",
        "d@example.com",
    ] {
        assert!(!text.contains(raw), "{raw} survived: {text}");
    }
    let after = event.after.as_ref().expect("after");
    assert_eq!(after["Contacts"][0]["kind"], "work");
    assert_eq!(after["Contacts"][2], "not an object");
    assert_eq!(after["email_verified"], true);
}

#[test]
fn a_wildcard_matches_any_key_at_its_level_only() {
    let mut event = event(
        json!({"id": 1}),
        json!({
            "email": "top@example.com",
            "billing": {"email": "b@example.com"},
            "shipping": [{"email": "s@example.com"}],
            "deep": {"inner": {"email": "deep@example.com"}}
        }),
        None,
    );
    policy(&[("*.email", MaskAction::Drop)])
        .apply(SECRET_A, &mut event)
        .expect("masks");
    let after = event.after.as_ref().expect("after");
    assert_eq!(after["email"], "top@example.com", "one level down only");
    assert_eq!(after["billing"], json!({}));
    assert_eq!(after["shipping"], json!([{}]));
    assert_eq!(after["deep"]["inner"]["email"], "deep@example.com");
}

#[test]
fn json_held_in_a_string_is_masked_inside() {
    let payload = json!({"email": "a@example.com", "items": [{"Email": "b@example.com"}]});
    let double_encoded = Value::String(payload.to_string()).to_string();
    let mut event = event(
        json!({"id": 1}),
        json!({
            "payload": payload.to_string(),
            "twice": double_encoded,
            "in_array": [payload.to_string()],
            "not_json": "{email: a@example.com",
        }),
        None,
    );
    policy(&[
        ("payload.email", MaskAction::Hash),
        ("payload.items.email", MaskAction::Hash),
        ("twice.email", MaskAction::Redact),
        ("in_array.email", MaskAction::Drop),
        ("not_json.email", MaskAction::Drop),
    ])
    .apply(SECRET_A, &mut event)
    .expect("masks");
    let after = event.after.as_ref().expect("after");
    let payload: Value =
        serde_json::from_str(after["payload"].as_str().expect("still a string")).expect("json");
    assert_eq!(
        payload["email"],
        json!(expected_hash(SECRET_A, "\"a@example.com\""))
    );
    assert!(
        payload["items"][0]["Email"]
            .as_str()
            .is_some_and(|h| h.starts_with(HASH_PREFIX))
    );
    let twice: Value =
        serde_json::from_str(after["twice"].as_str().expect("string")).expect("json");
    let twice: Value = serde_json::from_str(twice.as_str().expect("string")).expect("json");
    assert_eq!(twice["email"], REDACTED);
    let in_array: Value =
        serde_json::from_str(after["in_array"][0].as_str().expect("string")).expect("json");
    assert!(in_array.get("email").is_none());
    // Not JSON: left as it is (there is no structure to find `email` in).
    assert_eq!(after["not_json"], "{email: a@example.com");
}

#[test]
fn a_truncate_event_has_nothing_to_mask() {
    let mut truncate: ChangeEvent = serde_json::from_value(json!({
        "event_id": domain::EventId::derive(SourceId::new_random(), 0, domain::Lsn(1), 0),
        "op": "truncate", "schema": "public", "table": "customers", "lsn": "0/1", "seq": 0,
        "event_time": "2026-03-01T12:00:00Z"
    }))
    .expect("event");
    let before = truncate.clone();
    policy(&[("*", MaskAction::Drop), ("email", MaskAction::Hash)])
        .apply(SECRET_A, &mut truncate)
        .expect("nothing to do");
    assert_eq!(truncate, before);
}

// --- refusals ---

#[test]
fn dropping_a_key_column_is_refused_and_leaves_the_event_unchanged() {
    let original = event(
        json!({"ID": 5, "tenant_email": "k@example.com"}),
        json!({"ID": 5, "tenant_email": "k@example.com", "email": "a@example.com"}),
        None,
    );
    for (rules, column) in [
        (policy(&[("id", MaskAction::Drop)]), "ID"),
        (
            policy(&[
                ("email", MaskAction::Hash),
                ("tenant_email", MaskAction::Drop),
            ]),
            "tenant_email",
        ),
        (policy(&[("*", MaskAction::Drop)]), "ID"),
    ] {
        let mut event = original.clone();
        assert_eq!(
            rules.apply(SECRET_A, &mut event),
            Err(MaskError::DropsKeyColumn {
                column: column.to_owned()
            })
        );
        assert_eq!(event, original, "refused before any change");
    }
    let mut event = original.clone();
    assert_eq!(
        policy(&[("id", MaskAction::Redact)]).apply(SECRET_A, &mut event),
        Err(MaskError::RedactsKeyColumn {
            column: "ID".to_owned()
        })
    );
    assert_eq!(event, original);
    // Dropping a field that is not in the key is fine even if the name is close.
    let mut event = original.clone();
    policy(&[("email", MaskAction::Drop)])
        .apply(SECRET_A, &mut event)
        .expect("email is not a key column");
    assert!(
        event
            .after
            .as_ref()
            .is_some_and(|after| !after.contains_key("email"))
    );
}

#[test]
fn dropping_inside_a_json_key_column_is_refused() {
    let mut event = event(
        json!({"ref": {"kind": "order", "no": 7}}),
        json!({"ref": {"kind": "order", "no": 7}}),
        None,
    );
    assert_eq!(
        policy(&[("*.kind", MaskAction::Drop)]).apply(SECRET_A, &mut event),
        Err(MaskError::DropsKeyColumn {
            column: "ref".to_owned()
        })
    );
    assert_eq!(
        MaskError::DropsKeyColumn {
            column: "ref".to_owned()
        }
        .event_reason(),
        Some(crate::ReasonCode::PolicyDropsKey)
    );
}

#[test]
fn policies_that_drop_or_redact_key_columns_fail_validation() {
    let key_columns = ["id", "Order_No"];
    let fine = [
        policy(&[("email", MaskAction::Drop)]),
        policy(&[("id", MaskAction::Hash)]),
        policy(&[("*", MaskAction::Hash)]),
        policy(&[("*.email", MaskAction::Drop)]),
        policy(&[("identity", MaskAction::Drop)]),
    ];
    for rules in fine {
        assert_eq!(
            rules.validate_drop_against_key_columns(&key_columns),
            Ok(()),
            "{rules:?}"
        );
    }
    let refused = [
        (policy(&[("ID", MaskAction::Drop)]), "id", MaskAction::Drop),
        (
            policy(&[("order_no", MaskAction::Drop)]),
            "Order_No",
            MaskAction::Drop,
        ),
        (policy(&[("*", MaskAction::Drop)]), "id", MaskAction::Drop),
        (
            policy(&[("id.part", MaskAction::Drop)]),
            "id",
            MaskAction::Drop,
        ),
        (
            policy(&[("email", MaskAction::Hash), ("id", MaskAction::Redact)]),
            "id",
            MaskAction::Redact,
        ),
    ];
    for (rules, column, action) in refused {
        let expected = match action {
            MaskAction::Redact => MaskError::RedactsKeyColumn {
                column: column.to_owned(),
            },
            _ => MaskError::DropsKeyColumn {
                column: column.to_owned(),
            },
        };
        assert_eq!(
            rules.validate_drop_against_key_columns(&key_columns),
            Err(expected)
        );
    }
}

#[test]
fn a_short_secret_is_refused_only_when_hashing() {
    let mut event = event(json!({"id": 1}), json!({"email": "a@example.com"}), None);
    let error = policy(&[("email", MaskAction::Hash)])
        .apply(b"short", &mut event)
        .expect_err("too short");
    assert_eq!(
        error,
        MaskError::SecretTooShort {
            min_bytes: MIN_SECRET_BYTES
        }
    );
    assert_eq!(error.event_reason(), None);
    assert_eq!(
        event.after.as_ref().expect("after")["email"],
        "a@example.com"
    );
    policy(&[])
        .apply(b"", &mut event)
        .expect("an empty policy needs no secret");
    policy(&[("email", MaskAction::Redact)])
        .apply(b"", &mut event)
        .expect("redacting needs no secret");
    assert_eq!(event.after.as_ref().expect("after")["email"], REDACTED);
}

#[test]
fn values_too_deep_to_mask_are_refused_not_left_unmasked() {
    let mut nested = json!({"email": "a@example.com"});
    for _ in 0..(MAX_TRAVERSAL_DEPTH + 10) {
        nested = json!([nested]);
    }
    let mut deep = event(json!({"id": 1}), json!({"list": nested}), None);
    let error = policy(&[("list.email", MaskAction::Redact)])
        .apply(SECRET_A, &mut deep)
        .expect_err("too deep");
    assert_eq!(error, MaskError::TooDeep);
    assert_eq!(
        error.event_reason(),
        Some(crate::ReasonCode::NestingTooDeep)
    );

    let mut embedded = json!({"email": "a@example.com"});
    for _ in 0..(MAX_EMBEDDED_LEVELS + 1) {
        embedded = Value::String(embedded.to_string());
    }
    let mut deep = event(json!({"id": 1}), json!({"doc": embedded}), None);
    assert_eq!(
        policy(&[("doc.email", MaskAction::Redact)]).apply(SECRET_A, &mut deep),
        Err(MaskError::TooDeep)
    );
}

// --- properties ---

const PII: &str = "PII-7F3Q9@EXAMPLE.COM";

/// Filler JSON that can never contain the PII (no `@`, no upper case).
fn filler() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-z0-9 ]{0,10}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn filler_object() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map("[a-z]{1,6}", filler(), 0..4)
        .prop_map(|map| map.into_iter().collect())
}

/// One key on the way to the PII: its name as written in the document (mixed case), whether
/// the rule names it or uses `*`, how many arrays wrap the value under it, and whether that
/// value is JSON held in a string.
#[derive(Debug, Clone)]
struct Layer {
    name: String,
    wildcard: bool,
    arrays: usize,
    embedded: bool,
    siblings: Map<String, Value>,
}

fn layer() -> impl Strategy<Value = Layer> {
    (
        "[a-z]{1,8}",
        prop::collection::vec(any::<bool>(), 8),
        prop::bool::weighted(0.2),
        0usize..3,
        prop::bool::weighted(0.3),
        filler_object(),
    )
        .prop_map(|(name, upper, wildcard, arrays, embedded, siblings)| {
            let name = name
                .chars()
                .zip(upper)
                .map(|(c, up)| if up { c.to_ascii_uppercase() } else { c })
                .collect();
            Layer {
                name,
                wildcard,
                arrays,
                embedded,
                siblings,
            }
        })
}

/// The value stored under `layers[0].name`, with the PII at the end of the path.
fn build(layers: &[Layer]) -> Value {
    let Some((layer, rest)) = layers.split_first() else {
        return Value::String(PII.to_owned());
    };
    let mut value = match rest.first() {
        None => Value::String(PII.to_owned()),
        Some(next) => {
            let mut object = layer.siblings.clone();
            object.insert(next.name.clone(), build(rest));
            Value::Object(object)
        }
    };
    if layer.embedded {
        value = Value::String(value.to_string());
    }
    for _ in 0..layer.arrays {
        value = Value::Array(vec![json!("x"), value, json!({"k": 1})]);
    }
    value
}

/// The rule reaching the PII. A lone `*` would also reach the key column, which
/// `dropping_a_key_column_is_refused_and_leaves_the_event_unchanged` covers, so a one-segment
/// rule always names its column.
fn rule_path(layers: &[Layer], upper: bool) -> FieldPath {
    let text: Vec<String> = layers
        .iter()
        .map(|layer| match (layer.wildcard && layers.len() > 1, upper) {
            (true, _) => "*".to_owned(),
            (false, true) => layer.name.to_uppercase(),
            (false, false) => layer.name.to_lowercase(),
        })
        .collect();
    path(&text.join("."))
}

fn planted_event(layers: &[Layer], row: &Map<String, Value>) -> ChangeEvent {
    let mut after = row.clone();
    after.insert(layers[0].name.clone(), build(layers));
    let mut before = row.clone();
    before.insert(layers[0].name.clone(), build(layers));
    event(
        json!({"row_id": 1}),
        Value::Object(after),
        Some(Value::Object(before)),
    )
}

/// Whether a rule still finds something to act on (dry run on a copy).
fn still_matches(rule: &FieldPath, event: &ChangeEvent) -> bool {
    let hasher = Hasher::new(SECRET_A, true).expect("secret");
    [event.after.clone(), event.before.clone()]
        .into_iter()
        .flatten()
        .any(|mut row| {
            mask_object(&mut row, &rule.segments, MaskAction::Drop, &hasher, 0, 0)
                .expect("not too deep")
                .is_some()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn planted_pii_never_survives(
        layers in prop::collection::vec(layer(), 1..5),
        row in filler_object(),
        upper in any::<bool>(),
        action in prop::sample::select(vec![MaskAction::Hash, MaskAction::Redact, MaskAction::Drop]),
    ) {
        let mut event = planted_event(&layers, &row);
        prop_assert!(text_of(&event).contains(PII));
        let rule = rule_path(&layers, upper);
        let rules = MaskingPolicy::new(vec![(rule.clone(), action)]);
        let outcome = rules.apply(SECRET_A, &mut event);
        prop_assert_eq!(&outcome, &Ok(()));
        let text = text_of(&event);
        prop_assert!(!text.contains(PII), "{} left PII in {}", rule, text);
        match action {
            MaskAction::Hash => prop_assert!(text.contains(HASH_PREFIX)),
            MaskAction::Redact => prop_assert!(text.contains(REDACTED)),
            MaskAction::Drop => prop_assert!(!still_matches(&rule, &event), "{} still matches", rule),
        }
        // The untouched key stays as it was.
        prop_assert_eq!(&event.key, &columns(json!({"row_id": 1})));
    }

    #[test]
    fn hashes_are_stable_within_a_tenant_and_differ_across_tenants(
        layers in prop::collection::vec(layer(), 1..4),
        row in filler_object(),
    ) {
        let original = planted_event(&layers, &row);
        let rules = MaskingPolicy::new(vec![(rule_path(&layers, false), MaskAction::Hash)]);
        let mut first = original.clone();
        let mut again = original.clone();
        let mut other = original.clone();
        rules.apply(SECRET_A, &mut first).expect("masks");
        rules.apply(SECRET_A, &mut again).expect("masks");
        rules.apply(SECRET_B, &mut other).expect("masks");
        prop_assert_eq!(&first, &again);
        prop_assert_ne!(text_of(&first), text_of(&other));
        let pii_hash = expected_hash(SECRET_A, &Value::from(PII).to_string());
        let whole_value_hashed = layers.last().is_some_and(|last| last.arrays > 0 || last.embedded);
        if !whole_value_hashed {
            prop_assert!(text_of(&first).contains(&pii_hash));
        }
    }

    #[test]
    fn masking_arbitrary_documents_never_panics(
        document in filler(),
        // `*` and `**` may stand anywhere but at the end, where `**` is refused.
        rule in "([a-z*]{1,3}\\.){0,3}[a-z]{1,3}",
        action in prop::sample::select(vec![MaskAction::Hash, MaskAction::Redact, MaskAction::Drop]),
    ) {
        let mut event = event(json!({"id": 1}), json!({"doc": document.clone(), "raw": document.to_string()}), None);
        let rules = MaskingPolicy::new(vec![(path(&format!("doc.{rule}")), action), (path(&format!("raw.{rule}")), action)]);
        prop_assert!(rules.apply(SECRET_A, &mut event).is_ok());
    }
}

#[test]
fn any_depth_reaches_a_key_at_every_level_and_cannot_end_a_path() {
    let policy = MaskingPolicy::new(vec![(
        FieldPath::parse("**.email").unwrap(),
        MaskAction::Redact,
    )]);
    let mut event = event(
        json!({ "id": 1 }),
        json!({
            "email": "top@pii.example",
            "profile": { "nested": { "EMAIL": "deep@pii.example" }, "list": [ { "email": "listed@pii.example" } ] },
            "note": "{\"email\": \"embedded@pii.example\"}"
        }),
        None,
    );
    policy.apply(&[7u8; 32], &mut event).unwrap();
    let text = serde_json::to_string(&event).unwrap();
    assert!(!text.contains("pii.example"), "{text}");
    assert_eq!(
        event.after.as_ref().unwrap()["profile"]["nested"]["EMAIL"],
        REDACTED
    );
    assert_eq!(
        FieldPath::parse("a.**").unwrap_err(),
        FieldPathError::EndsWithAnyDepth
    );
    let drop_id = MaskingPolicy::new(vec![(FieldPath::parse("**.id").unwrap(), MaskAction::Drop)]);
    assert!(drop_id.validate_drop_against_key_columns(&["id"]).is_err());
}

// --- table scopes and order ---

#[test]
fn table_scopes_parse_and_match_by_schema_and_table() {
    assert_eq!(TableScope::parse("*"), Ok(TableScope::Every));
    let qualified = TableScope::parse("public.customers").unwrap();
    assert!(qualified.matches("public", "customers"));
    assert!(!qualified.matches("billing", "customers"));
    assert!(
        !qualified.matches("public", "Customers"),
        "names match exactly"
    );
    let bare = TableScope::parse("customers").unwrap();
    assert!(bare.matches("public", "customers") && bare.matches("billing", "customers"));
    assert!(!bare.matches("public", "orders"));
    assert!(TableScope::Every.matches("any", "thing"));
    assert_eq!(qualified.to_string(), "public.customers");
    for (text, expected) in [
        ("", TableScopeError::Empty),
        ("a.b.c", TableScopeError::BadShape),
        (".customers", TableScopeError::BadShape),
        ("public.", TableScopeError::BadShape),
        ("public.*", TableScopeError::BadShape),
        (" customers", TableScopeError::BadCharacter),
        ("cust\nomers", TableScopeError::BadCharacter),
    ] {
        assert_eq!(TableScope::parse(text), Err(expected), "{text:?}");
    }
    assert_eq!(
        TableScope::parse(&"t".repeat(MAX_TABLE_BYTES + 1)),
        Err(TableScopeError::TooLong {
            max: MAX_TABLE_BYTES
        })
    );
}

fn scoped(table: &str, text: &str, action: MaskAction) -> MaskRule {
    MaskRule {
        table: TableScope::parse(table).unwrap(),
        path: path(text),
        action,
    }
}

#[test]
fn a_scoped_rule_masks_only_its_tables_events() {
    let policy = MaskingPolicy::new([
        scoped("public.customers", "email", MaskAction::Redact),
        scoped("orders", "email", MaskAction::Drop),
        scoped("*", "phone", MaskAction::Redact),
    ]);
    let row = json!({"id": 1, "email": "a@example.com", "phone": "555"});
    let mut customers = event(json!({"id": 1}), row.clone(), None);
    policy.apply(SECRET_A, &mut customers).unwrap();
    assert_eq!(
        customers.after.unwrap(),
        columns(json!({"id": 1, "email": REDACTED, "phone": REDACTED}))
    );
    let mut images = (columns(json!({"id": 1})), columns(row.clone()));
    let rows = RowImages {
        key: &mut images.0,
        after: Some(&mut images.1),
        before: None,
    };
    policy
        .apply_to_rows(SECRET_A, "shop", "orders", rows)
        .unwrap();
    assert_eq!(images.1, columns(json!({"id": 1, "phone": REDACTED})));
    let mut images = (columns(json!({"id": 1})), columns(row));
    let rows = RowImages {
        key: &mut images.0,
        after: Some(&mut images.1),
        before: None,
    };
    policy
        .apply_to_rows(SECRET_A, "public", "devices", rows)
        .unwrap();
    assert_eq!(images.1["email"], "a@example.com", "no rule for this table");
    // A rule scoped to another table is not even checked against this table's key.
    let drop_other_key = MaskingPolicy::new([scoped("orders", "id", MaskAction::Drop)]);
    let mut event = event(json!({"id": 1}), json!({"id": 1}), None);
    assert_eq!(drop_other_key.apply(SECRET_A, &mut event), Ok(()));
}

#[test]
fn rules_apply_in_one_order_whatever_order_they_come_in() {
    let rules = [
        scoped("*", "customer.email", MaskAction::Drop),
        scoped("*", "customer", MaskAction::Hash),
        scoped("customers", "customer", MaskAction::Redact),
    ];
    let forward = MaskingPolicy::new(rules.clone());
    let backward = MaskingPolicy::new(rules.iter().rev().cloned());
    assert_eq!(forward, backward);
    let order: Vec<(&str, &str)> = forward
        .rules()
        .iter()
        .map(|rule| (rule.path.as_str(), rule.table.as_str()))
        .collect();
    assert_eq!(
        order,
        [
            ("customer", "*"),
            ("customer", "customers"),
            ("customer.email", "*")
        ]
    );
}
