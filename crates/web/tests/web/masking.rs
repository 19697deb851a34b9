//! Masking policies in the app and the API: adding, editing and removing rules with specific
//! refusals, every change audited, and the preview, which must show what the edge's engine does
//! (with the published preview key) to a sample taken from bronze or typed by the admin.

use domain::{EventId, Lsn, Role, SourceId, TenantId};
use protocol::masking::{MaskRule, MaskingPolicy, RowImages};
use serde_json::{Value, json};
use store::Database;
use test_support::TestDatabase;

use crate::auth::{member, signed_in};
use crate::browser::Page;
use crate::{request, serve};

const PAGE: &str = "/app/settings/masking";

/// The key the preview hashes with, as the page documents it.
const PREVIEW_KEY: &[u8] = b"tributary masking preview key v1";

pub async fn rule(database: &Database, tenant: TenantId, table: &str, path: &str, action: &str) {
    let mut tx = crate::api::owner(database, tenant).await;
    let rule = store::masking::MaskingRule {
        source_table: table.into(),
        field_path: path.into(),
        action: action.into(),
    };
    store::masking::create(&mut tx, &rule).await.unwrap();
    tx.commit().await.unwrap();
}

async fn rules_of(database: &Database, tenant: TenantId) -> Vec<(String, String, String)> {
    let mut tx = crate::api::owner(database, tenant).await;
    let rules = store::masking::list(&mut tx).await.unwrap();
    tx.rollback().await.unwrap();
    rules
        .into_iter()
        .map(|rule| (rule.source_table, rule.field_path, rule.action))
        .collect()
}

/// A bronze event of `tenant` in `schema.table`, committed `minutes_ago`.
pub async fn bronze_event(
    database: &Database,
    tenant: TenantId,
    table: (&str, &str),
    minutes_ago: i64,
    payload: Value,
) {
    let source = SourceId::new_random();
    bronze_change(
        database,
        tenant,
        source,
        table,
        ("insert", 16, minutes_ago),
        payload,
    )
    .await;
}

/// An event of `source`'s `table`: its operation, position (`lsn`, sequence 0) and age.
pub async fn bronze_change(
    database: &Database,
    tenant: TenantId,
    source: SourceId,
    table: (&str, &str),
    (op, lsn, minutes_ago): (&str, i64, i64),
    payload: Value,
) {
    let event_time = time::OffsetDateTime::now_utc() - time::Duration::minutes(minutes_ago);
    let millis = (event_time.unix_timestamp_nanos() / 1_000_000) as i64;
    let row = store::service::bronze::BronzeRow {
        tenant,
        event_id: EventId::derive(source, millis, Lsn(lsn as u64), 0),
        event_time,
        source,
        op: op.into(),
        schema_name: table.0.into(),
        table_name: table.1.into(),
        lsn,
        seq: 0,
        xid: None,
        payload: payload.to_string(),
    };
    store::service::bronze::insert(&database.service, &[row])
        .await
        .unwrap();
}

/// What the edge's engine makes of `after` (key `{"id": 7}`) under `rules`, with the preview
/// key.
fn engine_output(rules: &[(&str, &str, &str)], table: (&str, &str), after: Value) -> Value {
    let policy = MaskingPolicy::new(rules.iter().map(|(scope, path, action)| MaskRule {
        table: scope.parse().unwrap(),
        path: path.parse().unwrap(),
        action: action.parse().unwrap(),
    }));
    let mut key = json!({"id": 7}).as_object().unwrap().clone();
    let mut after = after.as_object().unwrap().clone();
    let rows = RowImages {
        key: &mut key,
        after: Some(&mut after),
        before: None,
    };
    policy
        .apply_to_rows(PREVIEW_KEY, table.0, table.1, rows)
        .unwrap();
    Value::Object(after)
}

/// The text of the element with `id` (its first line up to `</code>`), unescaped enough for
/// JSON: askama escapes quotes.
fn code_block(page: &Page, id: &str) -> String {
    let marker = format!(r#"<code id="{id}">"#);
    let start = page
        .body
        .find(&marker)
        .unwrap_or_else(|| panic!("no #{id} in:\n{}", page.body))
        + marker.len();
    let end = page.body[start..].find("</code>").unwrap() + start;
    unescape(&page.body[start..end])
}

fn unescape(html: &str) -> String {
    html.replace("&#34;", "\"")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The sample event in the page's form, as the textarea holds it.
fn sample_field(page: &Page) -> String {
    let start = page
        .body
        .find(r#"<textarea id="sample-event""#)
        .unwrap_or_else(|| panic!("no sample field in:\n{}", page.body));
    let start = page.body[start..].find('>').unwrap() + start + 1;
    let end = page.body[start..].find("</textarea>").unwrap() + start;
    unescape(&page.body[start..end])
}

/// Samples that repeat a key (at the top, in `key`, deep in `after`, in an array in `before`),
/// each with the path the refusal names, and the same sample without the repetition.
const REPEATED_KEYS: [(&str, &str, &str); 4] = [
    (
        r#"{"key": {"id": 7}, "after": {"id": 7, "email": "a@example.com"}, "after": {"id": 7, "email": "b@example.com"}}"#,
        "after",
        r#"{"key": {"id": 7}, "after": {"id": 7, "email": "b@example.com"}}"#,
    ),
    (
        r#"{"key": {"id": 7, "id": 8}, "after": {"id": 7, "email": "a@example.com"}}"#,
        "key.id",
        r#"{"key": {"id": 7}, "after": {"id": 7, "email": "a@example.com"}}"#,
    ),
    (
        r#"{"key": {"id": 7}, "after": {"id": 7, "address": {"city": "London", "zip": "W1", "city": "Paris"}}}"#,
        "after.address.city",
        r#"{"key": {"id": 7}, "after": {"id": 7, "address": {"city": "Paris", "zip": "W1"}}}"#,
    ),
    (
        r#"{"key": {"id": 7}, "before": {"id": 7, "contacts": [{"email": "a@example.com", "email": "b@example.com"}]}}"#,
        "before.contacts[0].email",
        r#"{"key": {"id": 7}, "before": {"id": 7, "contacts": [{"email": "b@example.com"}]}}"#,
    ),
];

#[tokio::test]
async fn the_preview_page_refuses_a_sample_with_a_repeated_key_and_names_it() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let a = crate::api::tenant(&database, "Acme").await;
    member(&database, a, "owner@acme.example.com", Role::Owner).await;
    rule(&database, a, "*", "phone", "redact").await;
    let mut browser = signed_in(&addr, "owner@acme.example.com").await;

    for htmx in [false, true] {
        if htmx {
            browser
                .extra_headers
                .push(("HX-Request".into(), "true".into()));
        }
        for (sample, path, without) in REPEATED_KEYS {
            let form = |sample| {
                [
                    ("field_path", "email"),
                    ("action", "hash"),
                    ("sample_table", "public.customers"),
                    ("sample", sample),
                ]
            };
            let refused = browser
                .submit(PAGE, "/app/settings/masking/preview", &form(sample))
                .await;
            assert_eq!(refused.status, 200, "{}", refused.body);
            let message = format!(
                "The sample event repeats the key `{path}`. The edge refuses an event with a \
                 repeated key, so it would refuse this one."
            );
            assert!(
                unescape(&refused.body).contains(&message),
                "{message}\n{}",
                refused.body
            );
            // No masked result (serde_json alone would have shown the last value masked), and
            // the sample stays in the form as typed, to be corrected.
            assert!(!refused.body.contains(r#"id="preview-after""#), "{sample}");
            assert!(!refused.body.contains("hmac-sha256:"), "{sample}");
            if !htmx {
                assert_eq!(sample_field(&refused), sample);
            }

            // Without the repetition the same form previews as usual.
            let shown = browser
                .submit(PAGE, "/app/settings/masking/preview", &form(without))
                .await;
            assert!(!shown.body.contains("repeats the key"), "{}", shown.body);
            let masked: Value = serde_json::from_str(&code_block(&shown, "preview-after")).unwrap();
            assert_eq!(masked["key"], json!({"id": 7}), "{without}");
        }
    }
    // Previewing saves nothing.
    assert_eq!(
        rules_of(&database, a).await,
        [("*".to_owned(), "phone".to_owned(), "redact".to_owned())]
    );
}

#[tokio::test]
async fn admins_add_edit_and_remove_rules_with_specific_refusals_and_every_change_audited() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let a = crate::api::tenant(&database, "Acme").await;
    let admin = member(&database, a, "admin@acme.example.com", Role::Admin).await;
    let mut browser = signed_in(&addr, "admin@acme.example.com").await;

    let page = browser.get(PAGE).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("No rules yet"));
    assert!(
        page.body.contains("public.customers") && page.body.contains("ada@example.com"),
        "without bronze events the sample is the built-in example"
    );
    assert!(page.body.contains("fixed preview key, not your workspace"));

    let added = browser
        .submit(
            PAGE,
            PAGE,
            &[
                ("source_table", "*"),
                ("field_path", "email"),
                ("action", "hash"),
            ],
        )
        .await;
    assert_eq!(added.status, 303, "{}", added.body);
    assert_eq!(
        added.header("location"),
        Some("/app/settings/masking?done=created#rules-heading")
    );
    let page = browser.get("/app/settings/masking?done=created").await;
    assert!(page.body.contains("Rule added."));
    assert!(page.body.contains("<td><code>email</code></td>"));

    // Each mistake is named; nothing is saved.
    for (fields, message) in [
        (
            [
                ("source_table", "*"),
                ("field_path", "contact..email"),
                ("action", "hash"),
            ],
            "A field path must not have an empty segment",
        ),
        (
            [
                ("source_table", "*"),
                ("field_path", "phone"),
                ("action", "mask"),
            ],
            "A masking action must be hash, redact or drop.",
        ),
        (
            [
                ("source_table", "a.b.c"),
                ("field_path", "phone"),
                ("action", "hash"),
            ],
            "A table must be `*`, `schema.table` or `table`",
        ),
        (
            [
                ("source_table", "*"),
                ("field_path", "email"),
                ("action", "redact"),
            ],
            "There is already a rule for this table and path: edit that rule instead.",
        ),
    ] {
        let refused = browser.submit(PAGE, PAGE, &fields).await;
        assert_eq!(refused.status, 422, "{fields:?}");
        assert!(
            refused.body.contains(message),
            "{message:?} missing:\n{}",
            refused.body
        );
        assert!(refused.body.contains("The rule was not saved"));
    }
    assert_eq!(
        rules_of(&database, a).await,
        [("*".into(), "email".into(), "hash".into())]
    );

    // Edit: the form comes prefilled, and the change may move the rule to a table and path.
    let edit_link = "/app/settings/masking?edit_table=%2A&edit_path=email";
    let form = browser.get(edit_link).await;
    assert!(form.body.contains("Edit rule"));
    assert!(form.body.contains(r#"name="original_path" value="email""#));
    let edited = browser
        .submit(
            edit_link,
            "/app/settings/masking/update",
            &[
                ("original_table", "*"),
                ("original_path", "email"),
                ("source_table", "public.customers"),
                ("field_path", "contact.email"),
                ("action", "redact"),
            ],
        )
        .await;
    assert_eq!(
        edited.header("location"),
        Some("/app/settings/masking?done=updated#rules-heading")
    );
    assert_eq!(
        rules_of(&database, a).await,
        [(
            "public.customers".into(),
            "contact.email".into(),
            "redact".into()
        )]
    );
    let missing = browser
        .submit(
            PAGE,
            "/app/settings/masking/update",
            &[
                ("original_table", "*"),
                ("original_path", "email"),
                ("source_table", "*"),
                ("field_path", "email"),
                ("action", "drop"),
            ],
        )
        .await;
    assert_eq!(missing.status, 404);
    assert_eq!(
        browser
            .get("/app/settings/masking?edit_table=%2A&edit_path=nothing")
            .await
            .status,
        404
    );

    let removed = browser
        .submit(
            PAGE,
            "/app/settings/masking/remove",
            &[
                ("source_table", "public.customers"),
                ("field_path", "contact.email"),
            ],
        )
        .await;
    assert_eq!(
        removed.header("location"),
        Some("/app/settings/masking?done=removed#rules-heading")
    );
    assert!(rules_of(&database, a).await.is_empty());
    let again = browser
        .submit(
            PAGE,
            "/app/settings/masking/remove",
            &[
                ("source_table", "public.customers"),
                ("field_path", "contact.email"),
            ],
        )
        .await;
    assert_eq!(again.status, 404);

    // Every change is in the audit log, by the admin, with what changed.
    let mut tx = crate::api::owner(&database, a).await;
    let entries = store::audit::list(&mut tx, 10).await.unwrap();
    tx.rollback().await.unwrap();
    let masking: Vec<_> = entries
        .iter()
        .filter(|entry| entry.action.starts_with("masking."))
        .collect();
    let actions: Vec<&str> = masking.iter().map(|entry| entry.action.as_str()).collect();
    assert_eq!(
        actions,
        ["masking.remove", "masking.update", "masking.create"]
    );
    assert!(
        masking
            .iter()
            .all(|entry| entry.actor_id == admin.to_string())
    );
    assert_eq!(masking[2].target, "*/email");
    assert_eq!(masking[1].details["from"]["action"], "hash");
    assert_eq!(masking[1].details["to"]["field_path"], "contact.email");
    assert_eq!(masking[0].details["action"], "redact");
}

#[tokio::test]
async fn the_preview_runs_the_edges_engine_on_the_newest_bronze_event_of_the_table() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let a = crate::api::tenant(&database, "Acme").await;
    let b = crate::api::tenant(&database, "Globex").await;
    member(&database, a, "owner@acme.example.com", Role::Owner).await;
    rule(&database, a, "*", "phone", "redact").await;
    let after =
        json!({"id": 7, "email": "grace@example.com", "phone": "555-0100", "plan": "fleet"});
    bronze_event(
        &database,
        a,
        ("public", "customers"),
        90,
        json!({"key": {"id": 7}, "after": after}),
    )
    .await;
    bronze_event(
        &database,
        a,
        ("public", "chargers"),
        5,
        json!({"key": {"id": 1}, "after": {"id": 1, "power_kw": 11}}),
    )
    .await;
    bronze_event(
        &database,
        b,
        ("public", "customers"),
        1,
        json!({"key": {"id": 1}, "after": {"id": 1, "email": "secret@globex.example.com"}}),
    )
    .await;
    let mut browser = signed_in(&addr, "owner@acme.example.com").await;

    // The sample: the newest event of the workspace, or of the table asked for; never another
    // tenant's.
    let page = browser.get(PAGE).await;
    assert!(page.body.contains("public.chargers"), "the newest event");
    assert!(!page.body.contains("globex"));
    let page = browser
        .get("/app/settings/masking?sample_table=public.customers")
        .await;
    assert!(page.body.contains("grace@example.com"), "{}", page.body);
    assert!(!page.body.contains("globex"));

    // The form's rule and the saved ones, applied as the edge would, with the preview key.
    let sample = json!({"key": {"id": 7}, "after": after}).to_string();
    let fields = [
        ("source_table", "public.customers"),
        ("field_path", "email"),
        ("action", "hash"),
        ("sample_table", "public.customers"),
        ("sample", sample.as_str()),
    ];
    let full = browser
        .submit(PAGE, "/app/settings/masking/preview", &fields)
        .await;
    assert_eq!(full.status, 200);
    assert!(
        full.body.contains("<h1>Masking policies</h1>"),
        "a whole page without htmx"
    );
    let expected = engine_output(
        &[
            ("*", "phone", "redact"),
            ("public.customers", "email", "hash"),
        ],
        ("public", "customers"),
        after.clone(),
    );
    let shown: Value = serde_json::from_str(&code_block(&full, "preview-after")).unwrap();
    assert_eq!(shown["after"], expected);
    assert!(
        shown["after"]["email"]
            .as_str()
            .unwrap()
            .starts_with("hmac-sha256:")
    );
    assert_eq!(shown["after"]["phone"], "[redacted]");
    assert!(
        full.body
            .contains("<code>hash email (public.customers)</code>")
    );

    // htmx gets the fragment alone.
    browser
        .extra_headers
        .push(("HX-Request".into(), "true".into()));
    let fragment = browser
        .submit(PAGE, "/app/settings/masking/preview", &fields)
        .await;
    assert_eq!(fragment.status, 200);
    assert!(
        fragment
            .body
            .starts_with(r#"<section id="masking-preview""#)
    );
    assert!(!fragment.body.contains("<html"));
    let shown: Value = serde_json::from_str(&code_block(&fragment, "preview-after")).unwrap();
    assert_eq!(shown["after"], expected);

    // Editing the saved phone rule: the preview shows the edit in its place.
    let editing = browser
        .submit(
            PAGE,
            "/app/settings/masking/preview",
            &[
                ("original_table", "*"),
                ("original_path", "phone"),
                ("source_table", "*"),
                ("field_path", "phone"),
                ("action", "drop"),
                ("sample_table", "public.customers"),
                ("sample", sample.as_str()),
            ],
        )
        .await;
    let shown: Value = serde_json::from_str(&code_block(&editing, "preview-after")).unwrap();
    assert!(shown["after"].get("phone").is_none(), "{shown}");
    assert_eq!(shown["after"]["email"], "grace@example.com");

    // A rule that would break the key, a bad sample, a rule still being typed: each said.
    let refused = browser
        .submit(
            PAGE,
            "/app/settings/masking/preview",
            &[
                ("field_path", "id"),
                ("action", "drop"),
                ("sample_table", "public.customers"),
                ("sample", sample.as_str()),
            ],
        )
        .await;
    assert!(
        refused
            .body
            .contains("The edge would refuse events like this one: a drop rule matches key column"),
        "{}",
        refused.body
    );
    let bad_sample = browser
        .submit(
            PAGE,
            "/app/settings/masking/preview",
            &[
                ("sample_table", "public.customers"),
                ("sample", "{\"key\": "),
            ],
        )
        .await;
    assert!(
        bad_sample
            .body
            .contains("The sample event is not valid JSON (line 1, column "),
        "{}",
        bad_sample.body
    );
    let typing = browser
        .submit(
            PAGE,
            "/app/settings/masking/preview",
            &[
                ("field_path", "contact."),
                ("action", "hash"),
                ("sample_table", "public.customers"),
                ("sample", sample.as_str()),
            ],
        )
        .await;
    assert!(
        typing
            .body
            .contains("not in this preview until its fields are valid")
    );
    // Previewing saves nothing.
    assert_eq!(rules_of(&database, a).await.len(), 1);
}

#[tokio::test]
async fn the_api_lists_creates_updates_deletes_and_previews_with_specific_errors() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let a = crate::api::tenant(&database, "Acme").await;
    let bearer = crate::api::token(&database, a, Role::Admin).await;
    let call = |method: &'static str, path: &'static str, body: String| {
        let addr = addr.clone();
        let bearer = bearer.clone();
        async move {
            let (status, _, body) = request(&addr, method, path, Some(&bearer), &body).await;
            let json: Value = if body.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body}"))
            };
            (status, json)
        }
    };

    let (status, created) = call(
        "POST",
        "/api/v1/masking-policies",
        json!({"field_path": "email", "action": "hash"}).to_string(),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(
        created,
        json!({"source_table": "*", "field_path": "email", "action": "hash"})
    );
    for (body, status, code) in [
        (
            json!({"field_path": "a..b", "action": "hash"}),
            422,
            "invalid_path",
        ),
        (
            json!({"field_path": "phone", "action": "scramble"}),
            422,
            "invalid_action",
        ),
        (
            json!({"source_table": "a.b.c", "field_path": "phone", "action": "hash"}),
            422,
            "invalid_table",
        ),
        (
            json!({"field_path": "email", "action": "drop"}),
            409,
            "already_exists",
        ),
    ] {
        let (given, error) = call("POST", "/api/v1/masking-policies", body.to_string()).await;
        assert_eq!(
            (given, error["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}"
        );
    }
    let (status, error) = call("POST", "/api/v1/masking-policies", "{".into()).await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (400, Some("invalid_json"))
    );

    let (status, updated) = call(
        "PUT",
        "/api/v1/masking-policies?source_table=*&field_path=email",
        json!({"source_table": "customers", "field_path": "email", "action": "redact"}).to_string(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(updated["source_table"], "customers");
    let (_, listed) = call("GET", "/api/v1/masking-policies", String::new()).await;
    assert_eq!(
        listed["rules"],
        json!([{"source_table": "customers", "field_path": "email", "action": "redact"}])
    );

    // The preview: saved rules by default, or the rules given.
    let sample = json!({"key": {"id": 7}, "after": {"id": 7, "email": "grace@example.com"}});
    let (status, shown) = call(
        "POST",
        "/api/v1/masking-policies/preview",
        json!({"table": "shop.customers", "sample": sample}).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["after"]["after"]["email"], "[redacted]");
    assert_eq!(shown["hash_key"], "preview");
    let (_, shown) = call(
        "POST",
        "/api/v1/masking-policies/preview",
        json!({"table": "shop.customers", "sample": sample,
               "rules": [{"field_path": "email", "action": "hash"}]})
        .to_string(),
    )
    .await;
    let expected = engine_output(
        &[("*", "email", "hash")],
        ("shop", "customers"),
        sample["after"].clone(),
    );
    assert_eq!(shown["after"]["after"], expected);
    let (status, shown) = call(
        "POST",
        "/api/v1/masking-policies/preview",
        json!({"table": "shop.customers", "sample": sample,
               "rules": [{"field_path": "id", "action": "drop"}]})
        .to_string(),
    )
    .await;
    assert_eq!(status, 200);
    assert!(shown["after"].is_null());
    assert!(
        shown["refused"]
            .as_str()
            .unwrap()
            .contains("matches key column")
    );
    let (status, error) = call(
        "POST",
        "/api/v1/masking-policies/preview",
        json!({"table": "shop.customers", "sample": [1, 2]}).to_string(),
    )
    .await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (400, Some("invalid_sample"))
    );

    // A repeated key, at any depth, is refused as the edge refuses it, and named; the same
    // sample without the repetition is previewed. The sample is read as sent, not after a
    // first parse has kept the last of the repeated values.
    for (repeated, path, without) in REPEATED_KEYS {
        let body = format!(r#"{{"table": "shop.customers", "sample": {repeated}}}"#);
        let (status, error) = call("POST", "/api/v1/masking-policies/preview", body).await;
        assert_eq!(
            (status, error["error"]["code"].as_str()),
            (400, Some("invalid_sample")),
            "{error}"
        );
        assert_eq!(
            error["error"]["message"],
            format!(
                "The sample event repeats the key `{path}`. The edge refuses an event with a \
                 repeated key, so it would refuse this one."
            )
        );
        assert_eq!(error["error"]["details"], json!({ "repeated_key": path }));
        let body = format!(r#"{{"table": "shop.customers", "sample": {without}}}"#);
        let (status, shown) = call("POST", "/api/v1/masking-policies/preview", body).await;
        assert_eq!(status, 200, "{shown}");
        assert_eq!(
            shown["before"],
            serde_json::from_str::<Value>(without).unwrap()
        );
    }
    // A repeated field of the request itself, or of a rule in it, is refused too.
    for body in [
        r#"{"table": "shop.customers", "sample": {"key": {"id": 7}}, "table": "shop.orders"}"#,
        r#"{"table": "shop.customers", "sample": {"key": {"id": 7}}, "sample": {"key": {"id": 8}}}"#,
        r#"{"table": "shop.customers", "sample": {"key": {"id": 7}},
            "rules": [{"field_path": "email", "action": "hash", "action": "drop"}]}"#,
    ] {
        let (status, error) = call("POST", "/api/v1/masking-policies/preview", body.into()).await;
        assert_eq!(
            (status, error["error"]["code"].as_str()),
            (400, Some("invalid_json")),
            "{body}: {error}"
        );
    }

    let (status, _) = call(
        "DELETE",
        "/api/v1/masking-policies?source_table=customers&field_path=email",
        String::new(),
    )
    .await;
    assert_eq!(status, 204);
    let (status, error) = call(
        "DELETE",
        "/api/v1/masking-policies?source_table=customers&field_path=email",
        String::new(),
    )
    .await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
}
