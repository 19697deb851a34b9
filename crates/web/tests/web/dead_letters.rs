//! The dead-letter explorer, in the API and the app: letters made for real by the materializer
//! refusing events (masked first by the edge's engine), grouped, filtered and paged per source;
//! replays of a reason, chosen letters, a table or a window carried out by the pipeline's replay
//! worker, each letter applied once; progress while a replay runs; tenant B's letters never
//! reachable or shown; operators read but do not replay, viewers do not see dead letters.

use std::collections::{BTreeMap, BTreeSet};

use bus::Delivery;
use domain::{EventId, Lsn, Role, SourceId, TenantId};
use protocol::masking::{MaskRule, MaskingPolicy, RowImages};
use serde_json::{Value, json};
use store::Database;
use test_support::TestDatabase;
use time::OffsetDateTime;

use crate::auth::{member, signed_in};
use crate::{request, serve};

/// The key the test's edge masks with.
const MASKING_KEY: &[u8] = b"dead letter test masking key";

/// A customer value the masking policy redacts: never shown anywhere.
const RAW_EMAIL: &str = "owner-secret@acme.example";

/// An insert of `public.{table}` from `source`, masked by a policy that redacts
/// `contact_email` as the edge would before publishing it.
fn envelope(
    tenant: TenantId,
    source: SourceId,
    table: &str,
    lsn: u64,
    key: Value,
    after: Value,
) -> protocol::Envelope {
    let event_time = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap()
        - time::Duration::minutes(5)
        + time::Duration::milliseconds(lsn as i64);
    let millis = (event_time.unix_timestamp_nanos() / 1_000_000) as i64;
    let policy = MaskingPolicy::new([MaskRule {
        table: "*".parse().unwrap(),
        path: "contact_email".parse().unwrap(),
        action: "redact".parse().unwrap(),
    }]);
    let mut key = key.as_object().cloned().unwrap_or_default();
    let mut after = after.as_object().cloned().unwrap_or_default();
    policy
        .apply_to_rows(
            MASKING_KEY,
            "public",
            table,
            RowImages {
                key: &mut key,
                after: Some(&mut after),
                before: None,
            },
        )
        .unwrap();
    protocol::Envelope {
        tenant_id: tenant,
        source_id: source,
        event: protocol::ChangeEvent {
            event_id: EventId::derive(source, millis, Lsn(lsn), 0),
            op: protocol::Op::Insert,
            schema: "public".into(),
            table: table.into(),
            lsn: Lsn(lsn),
            seq: 0,
            xid: Some(lsn),
            event_time,
            key,
            after: Some(after),
            before: None,
            unchanged: Vec::new(),
            types: Default::default(),
        },
        replay: None,
    }
}

/// Sends `envelopes` through the materializer, which dead-letters every one of them.
async fn refused(database: &Database, envelopes: &[protocol::Envelope]) {
    let deliveries: Vec<Delivery> = envelopes
        .iter()
        .map(|envelope| Delivery {
            message: bus::Message {
                tenant: envelope.tenant_id,
                id: envelope.event.event_id,
                payload: serde_json::to_vec(envelope).unwrap().into(),
            },
            partition: 0,
            position: 0,
        })
        .collect();
    let outcome = pipeline::materializer::apply(&database.service, &deliveries)
        .await
        .unwrap();
    assert_eq!(outcome.dead_lettered.len(), envelopes.len(), "{outcome:?}");
}

/// A site whose latitude is not a number: `uncoercible_type` until the mapping stops typing
/// it.
fn bad_site(tenant: TenantId, source: SourceId, n: u64, prefix: &str) -> protocol::Envelope {
    let site = format!("{prefix}-site-{n}");
    envelope(
        tenant,
        source,
        "sites",
        100 + n,
        json!({ "site_id": site }),
        json!({ "site_id": site, "latitude": "north-ish", "contact_email": RAW_EMAIL }),
    )
}

/// A device without its id: `missing_key`, whatever the mapping.
fn keyless_device(tenant: TenantId, source: SourceId, n: u64) -> protocol::Envelope {
    envelope(
        tenant,
        source,
        "devices",
        200 + n,
        json!({}),
        json!({ "name": format!("anonymous {n}"), "contact_email": RAW_EMAIL }),
    )
}

/// A reading without a value: `invalid_reading`.
fn valueless_reading(tenant: TenantId, source: SourceId, n: u64) -> protocol::Envelope {
    envelope(
        tenant,
        source,
        "readings",
        300 + n,
        json!({ "reading_id": n }),
        json!({ "reading_id": n, "device_id": "d1", "metric": "temp",
                "measured_at": "2026-11-20T10:00:00Z" }),
    )
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"))
}

async fn get_json(addr: &str, path: &str, token: &str) -> (u16, Value) {
    let (status, _, body) = request(addr, "GET", path, Some(token), "").await;
    (status, json_of(&body))
}

/// POSTs a replay of `source`'s letters chosen by `body`: its request id.
async fn replay(addr: &str, source: SourceId, token: &str, body: Value) -> uuid::Uuid {
    let path = format!("/api/v1/sources/{source}/dead-letters/replay");
    let (status, _, answer) = request(addr, "POST", &path, Some(token), &body.to_string()).await;
    assert_eq!(status, 202, "{body}: {answer}");
    json_of(&answer)["request_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Carries out the request as the pipeline's replay worker does: (replayed, failed).
async fn run(database: &Database, tenant: TenantId, request: uuid::Uuid) -> (i64, i64) {
    let bus = bus::EmbeddedBus::open(database.service.clone(), 2)
        .await
        .unwrap();
    let done = pipeline::replay::run_request(&database.service, &bus, tenant, request)
        .await
        .unwrap()
        .expect("the request was pending");
    assert_eq!(done.status, "done", "{done:?}");
    (done.events_replayed, done.events_failed)
}

/// Each letter of `tenant`: (reason code, table) → [(attempts, replayed)], read as the database
/// holds them.
async fn letters_in_database(
    admin: &mut sqlx::PgConnection,
    tenant: TenantId,
) -> BTreeMap<(String, String), Vec<(i32, bool)>> {
    let rows: Vec<(String, Option<String>, i32, bool)> = sqlx::query_as(
        "select reason_code, source_table, attempts, replayed_at is not null from pipeline.dlq \
         where tenant_id = $1 order by reason_code, source_table, attempts",
    )
    .bind(tenant.as_uuid())
    .fetch_all(admin)
    .await
    .unwrap();
    let mut letters: BTreeMap<_, Vec<_>> = BTreeMap::new();
    for (reason, table, attempts, replayed) in rows {
        letters
            .entry((reason, table.unwrap_or_default()))
            .or_default()
            .push((attempts, replayed));
    }
    letters
}

async fn sites_of(admin: &mut sqlx::PgConnection, tenant: TenantId) -> i64 {
    sqlx::query_scalar("select count(*) from analytics.sites where tenant_id = $1")
        .bind(tenant.as_uuid())
        .fetch_one(admin)
        .await
        .unwrap()
}

#[tokio::test]
async fn dead_letters_are_grouped_filtered_paged_and_replayed_as_chosen_once() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let a = crate::api::tenant(&database, "Acme").await;
    let b = crate::api::tenant(&database, "Globex").await;
    let a_source = crate::api::source(&database, a).await;
    let b_source = crate::api::source(&database, b).await;

    // Wave one: three sites of a type the mapping cannot take, two keyless devices; tenant B
    // has its own letters.
    let mut wave: Vec<_> = (0..3).map(|n| bad_site(a, a_source, n, "acme")).collect();
    wave.extend((0..2).map(|n| keyless_device(a, a_source, n)));
    refused(&database, &wave).await;
    refused(
        &database,
        &[
            bad_site(b, b_source, 0, "globex"),
            keyless_device(b, b_source, 9),
        ],
    )
    .await;
    let mut admin = test_database.admin().await;
    let between: OffsetDateTime = sqlx::query_scalar("select clock_timestamp()")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    // Wave two, later: a reading without a value.
    refused(&database, &[valueless_reading(a, a_source, 0)]).await;

    let a_admin = crate::api::token(&database, a, Role::Admin).await;
    let a_operator = crate::api::token(&database, a, Role::Operator).await;
    let a_viewer = crate::api::token(&database, a, Role::Viewer).await;
    let b_admin = crate::api::token(&database, b, Role::Admin).await;
    let list = format!("/api/v1/sources/{a_source}/dead-letters");

    // Groups: one per reason and table, counting exactly the rows.
    let (status, body) = get_json(&addr, &list, &a_admin).await;
    assert_eq!(status, 200, "{body}");
    let groups: BTreeMap<(String, String), i64> = body["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|group| {
            assert!(group["first_failed_at"].as_str() <= group["latest_failed_at"].as_str());
            (
                (
                    group["reason_code"].as_str().unwrap().to_owned(),
                    group["source_table"].as_str().unwrap().to_owned(),
                ),
                group["letters"].as_i64().unwrap(),
            )
        })
        .collect();
    let in_database: BTreeMap<(String, String), i64> = letters_in_database(&mut admin, a)
        .await
        .into_iter()
        .map(|(group, letters)| (group, letters.len() as i64))
        .collect();
    assert_eq!(groups, in_database);
    assert_eq!(
        groups,
        BTreeMap::from([
            (("invalid_reading".into(), "public.readings".into()), 1),
            (("missing_key".into(), "public.devices".into()), 2),
            (("uncoercible_type".into(), "public.sites".into()), 3),
        ])
    );
    assert_eq!(body["dead_letters"].as_array().unwrap().len(), 6);
    assert!(body["next_cursor"].is_null());

    // Filters.
    for (query, expected) in [
        ("reason=missing_key", 2),
        ("table=public.sites", 3),
        ("reason=missing_key&table=public.sites", 0),
        ("replayed=true", 0),
        ("replayed=false", 6),
    ] {
        let (status, body) = get_json(&addr, &format!("{list}?{query}"), &a_admin).await;
        assert_eq!(status, 200, "{query}: {body}");
        let letters = body["dead_letters"].as_array().unwrap();
        assert_eq!(letters.len(), expected, "{query}: {body}");
        for letter in letters {
            if let Some(reason) = query.strip_prefix("reason=").filter(|r| !r.contains('&')) {
                assert_eq!(letter["reason_code"], reason);
            }
            assert!(letter["attempts"].as_i64().unwrap() >= 1);
            assert!(letter["created_at"].is_string() && letter["last_failed_at"].is_string());
        }
    }
    let from = between
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (_, later) = get_json(
        &addr,
        &format!("{list}?from={}", from.replace('+', "%2B")),
        &a_admin,
    )
    .await;
    let later: Vec<&str> = later["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|letter| letter["reason_code"].as_str().unwrap())
        .collect();
    assert_eq!(later, ["invalid_reading"]);
    let (_, earlier) = get_json(
        &addr,
        &format!("{list}?to={}", from.replace('+', "%2B")),
        &a_admin,
    )
    .await;
    assert_eq!(earlier["dead_letters"].as_array().unwrap().len(), 5);

    // Paging by cursor: every letter once, latest failure first.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("{list}?limit=4&cursor={cursor}"),
            None => format!("{list}?limit=4"),
        };
        let (status, body) = get_json(&addr, &path, &a_admin).await;
        assert_eq!(status, 200, "{body}");
        pages += 1;
        for letter in body["dead_letters"].as_array().unwrap() {
            seen.push((
                letter["last_failed_at"].as_str().unwrap().to_owned(),
                letter["dlq_id"].as_str().unwrap().to_owned(),
            ));
        }
        match body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 2);
    let distinct: BTreeSet<_> = seen.iter().map(|(_, id)| id.clone()).collect();
    assert_eq!((seen.len(), distinct.len()), (6, 6));
    assert!(
        seen.windows(2).all(|pair| pair[0].0 >= pair[1].0),
        "{seen:?}"
    );
    let (status, body) = get_json(&addr, &format!("{list}?cursor=nonsense"), &a_admin).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("invalid_parameter"))
    );

    // One letter: its masked payload, never the raw value.
    let site_letter = {
        let (_, body) = get_json(&addr, &format!("{list}?table=public.sites"), &a_admin).await;
        body["dead_letters"][0]["dlq_id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (status, _, text) = request(
        &addr,
        "GET",
        &format!("/api/v1/dead-letters/{site_letter}"),
        Some(&a_operator),
        "",
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let letter = json_of(&text);
    let masked = letter["event"]["event"]["after"]["contact_email"].clone();
    assert!(masked.is_string(), "{letter}");
    assert_ne!(masked, json!(RAW_EMAIL));
    assert_eq!(letter["event"]["event"]["after"]["latitude"], "north-ish");
    let (_, _, listing) = request(&addr, "GET", &list, Some(&a_admin), "").await;
    for body in [&text, &listing] {
        assert!(!body.contains(RAW_EMAIL), "the raw value leaked: {body}");
    }

    // Tenant B's source, letters and ids do not exist for tenant A; A never lists B's.
    let b_letters: Vec<String> = sqlx::query_scalar(
        "select dlq_id::text from pipeline.dlq where tenant_id = $1 order by dlq_id",
    )
    .bind(b.as_uuid())
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(b_letters.len(), 2);
    for (method, path, body) in [
        (
            "GET",
            format!("/api/v1/sources/{b_source}/dead-letters"),
            String::new(),
        ),
        (
            "GET",
            format!("/api/v1/dead-letters/{}", b_letters[0]),
            String::new(),
        ),
        (
            "POST",
            format!("/api/v1/sources/{b_source}/dead-letters/replay"),
            json!({ "all": true }).to_string(),
        ),
        (
            "POST",
            format!("/api/v1/sources/{a_source}/dead-letters/replay"),
            json!({ "ids": [b_letters[0]] }).to_string(),
        ),
    ] {
        let (status, _, answer) = request(&addr, method, &path, Some(&a_admin), &body).await;
        assert_eq!(status, 404, "{method} {path} {body}: {answer}");
        assert_eq!(json_of(&answer)["error"]["code"], "not_found");
    }
    for id in &b_letters {
        assert!(!listing.contains(id.as_str()), "tenant B's letter listed");
    }
    assert!(!listing.contains("globex"));
    let (_, b_view) = get_json(
        &addr,
        &format!("/api/v1/sources/{b_source}/dead-letters"),
        &b_admin,
    )
    .await;
    assert_eq!(b_view["dead_letters"].as_array().unwrap().len(), 2);

    // Operators read but do not replay; viewers do not see dead letters.
    let (status, _) = get_json(&addr, &list, &a_operator).await;
    assert_eq!(status, 200);
    let (status, _, _) = request(
        &addr,
        "POST",
        &format!("{list}/replay"),
        Some(&a_operator),
        r#"{"all": true}"#,
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = get_json(&addr, &list, &a_viewer).await;
    assert_eq!(status, 403);
    // Selections the API refuses before anything is recorded.
    for (body, code) in [
        (json!({}), "empty_selection"),
        // The schema allows `all` alone.
        (json!({ "all": true, "reason": "missing_key" }), "invalid"),
        (json!({ "from": from }), "invalid"),
        (json!({ "from": from, "to": from }), "range_inverted"),
    ] {
        let (status, _, answer) = request(
            &addr,
            "POST",
            &format!("{list}/replay"),
            Some(&a_admin),
            &body.to_string(),
        )
        .await;
        assert_eq!(status, 422, "{body}: {answer}");
        assert_eq!(json_of(&answer)["error"]["code"], code, "{body}");
    }

    // Fix the sites' cause: latitude is no longer typed. A replay of that reason applies the
    // three sites once and touches no other letter.
    untype_site_columns(&database, a, a_source).await;
    let by_reason = replay(
        &addr,
        a_source,
        &a_admin,
        json!({ "reason": "uncoercible_type" }),
    )
    .await;
    let (status, pending) =
        get_json(&addr, &format!("/api/v1/replays/{by_reason}"), &a_admin).await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            &pending["status"],
            &pending["events_total"],
            &pending["reason_code"]
        ),
        (&json!("pending"), &Value::Null, &json!("uncoercible_type"))
    );
    assert_eq!(run(&database, a, by_reason).await, (3, 0));
    let (_, finished) = get_json(&addr, &format!("/api/v1/replays/{by_reason}"), &a_admin).await;
    assert_eq!(
        (
            &finished["status"],
            &finished["events_total"],
            &finished["events_replayed"],
            &finished["events_failed"]
        ),
        (&json!("done"), &json!(3), &json!(3), &json!(0)),
        "{finished}"
    );
    assert_eq!(sites_of(&mut admin, a).await, 3);
    let letters = letters_in_database(&mut admin, a).await;
    assert_eq!(
        letters,
        BTreeMap::from([
            (
                ("invalid_reading".into(), "public.readings".into()),
                vec![(1, false)]
            ),
            (
                ("missing_key".into(), "public.devices".into()),
                vec![(1, false); 2]
            ),
            (
                ("uncoercible_type".into(), "public.sites".into()),
                vec![(1, true); 3]
            ),
        ])
    );
    // Again, or naming a replayed letter: nothing is applied twice.
    let again = replay(
        &addr,
        a_source,
        &a_admin,
        json!({ "reason": "uncoercible_type" }),
    )
    .await;
    assert_eq!(run(&database, a, again).await, (0, 0));
    let named = replay(&addr, a_source, &a_admin, json!({ "ids": [site_letter] })).await;
    assert_eq!(run(&database, a, named).await, (0, 0));
    assert_eq!(sites_of(&mut admin, a).await, 3);
    let (_, replayed) = get_json(&addr, &format!("{list}?replayed=true"), &a_admin).await;
    assert_eq!(replayed["dead_letters"].as_array().unwrap().len(), 3);

    // Chosen letters: one of the two devices (still keyless: it fails again, counted).
    let (_, devices) = get_json(&addr, &format!("{list}?reason=missing_key"), &a_admin).await;
    let chosen = devices["dead_letters"][0]["dlq_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let by_ids = replay(&addr, a_source, &a_admin, json!({ "ids": [chosen] })).await;
    assert_eq!(run(&database, a, by_ids).await, (0, 1));
    let (_, chosen_letter) =
        get_json(&addr, &format!("/api/v1/dead-letters/{chosen}"), &a_admin).await;
    assert_eq!(chosen_letter["attempts"], 2);
    assert_eq!(
        letters_in_database(&mut admin, a).await
            [&("missing_key".to_owned(), "public.devices".to_owned())],
        vec![(1, false), (2, false)]
    );
    // A window of latest failures: the reading only.
    let window = replay(
        &addr,
        a_source,
        &a_admin,
        json!({ "from": from, "to": "2100-01-01T00:00:00Z", "table": "public.readings" }),
    )
    .await;
    assert_eq!(run(&database, a, window).await, (0, 1));
    // A table: both devices.
    let by_table = replay(
        &addr,
        a_source,
        &a_admin,
        json!({ "table": "public.devices" }),
    )
    .await;
    assert_eq!(run(&database, a, by_table).await, (0, 2));
    assert_eq!(
        letters_in_database(&mut admin, a).await,
        BTreeMap::from([
            (
                ("invalid_reading".into(), "public.readings".into()),
                vec![(2, false)]
            ),
            (
                ("missing_key".into(), "public.devices".into()),
                vec![(2, false), (3, false)]
            ),
            (
                ("uncoercible_type".into(), "public.sites".into()),
                vec![(1, true); 3]
            ),
        ])
    );
    // Tenant B's letters were never touched.
    assert_eq!(
        letters_in_database(&mut admin, b)
            .await
            .values()
            .flatten()
            .collect::<Vec<_>>(),
        vec![&(1, false), &(1, false)]
    );
    // Every request is in the audit log with its selection.
    let actions: Vec<Value> = sqlx::query_scalar(
        "select details from audit.log where tenant_id = $1 and action = 'replay.request' \
         order by seq",
    )
    .bind(a.as_uuid())
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(actions.len(), 6, "{actions:?}");
    assert_eq!(actions[0]["reason_code"], "uncoercible_type");
    assert_eq!(actions[0]["source_id"], json!(a_source));
}

#[tokio::test]
async fn the_explorer_page_shows_groups_payloads_and_replay_progress_by_role() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let a = crate::api::tenant(&database, "Acme").await;
    let b = crate::api::tenant(&database, "Globex").await;
    let a_source = crate::api::source(&database, a).await;
    let b_source = crate::api::source(&database, b).await;
    let mut wave: Vec<_> = (0..2).map(|n| bad_site(a, a_source, n, "acme")).collect();
    wave.push(keyless_device(a, a_source, 0));
    refused(&database, &wave).await;
    refused(&database, &[bad_site(b, b_source, 0, "globex")]).await;
    let mut admin = test_database.admin().await;
    let a_letters: Vec<(uuid::Uuid, String)> = sqlx::query_as(
        "select dlq_id, reason_code from pipeline.dlq where tenant_id = $1 order by reason_code",
    )
    .bind(a.as_uuid())
    .fetch_all(&mut admin)
    .await
    .unwrap();
    let b_letter: uuid::Uuid =
        sqlx::query_scalar("select dlq_id from pipeline.dlq where tenant_id = $1")
            .bind(b.as_uuid())
            .fetch_one(&mut admin)
            .await
            .unwrap();
    let page = format!("/app/data-sources/{a_source}/dead-letters");

    for role in Role::TENANT_ROLES {
        let email = format!("{role}@acme.example.com");
        member(&database, a, &email, role).await;
        let mut browser = signed_in(&addr, &email).await;
        let sees = role.allows(domain::Permission::ViewDeadLetters);
        let replays = role.allows(domain::Permission::ManageReplays);
        let explorer = browser.get(&page).await;
        crate::site::assert_designed_html(&explorer, &page);
        assert_eq!(explorer.status, if sees { 200 } else { 403 }, "{role}");
        let foreign = browser
            .get(&format!("/app/data-sources/{b_source}/dead-letters"))
            .await;
        assert_eq!(foreign.status, if sees { 404 } else { 403 }, "{role}");
        if !sees {
            let refused = browser
                .submit(
                    "/app/overview",
                    &format!("{page}/replay"),
                    &[("scope", "all")],
                )
                .await;
            assert_eq!(refused.status, 403, "{role}");
            continue;
        }
        // Groups and letters, without tenant B's; replay forms only for those who replay.
        assert!(
            explorer.body.contains("<code>uncoercible_type</code>"),
            "{role}"
        );
        assert!(explorer.body.contains("<code>public.devices</code>"));
        assert_eq!(
            explorer
                .body
                .matches(r#"class="dead-letter-group""#)
                .count(),
            2
        );
        assert_eq!(explorer.body.matches(r#"class="dead-letter""#).count(), 3);
        assert!(!explorer.body.contains(&b_letter.to_string()));
        assert!(!explorer.body.contains("globex"));
        assert_eq!(explorer.body.contains("/replay\""), replays, "{role}");
        // A filter, and a letter's masked payload.
        let filtered = browser.get(&format!("{page}?reason=missing_key")).await;
        assert_eq!(filtered.body.matches(r#"class="dead-letter""#).count(), 1);
        let (site_letter, _) = &a_letters[1];
        let payload = browser.get(&format!("{page}?letter={site_letter}")).await;
        assert_eq!(payload.status, 200);
        assert!(payload.body.contains(r#"id="payload-fields""#));
        assert!(payload.body.contains("north-ish"));
        assert!(
            !payload.body.contains(RAW_EMAIL),
            "{role}: the raw value leaked"
        );
        let other = browser.get(&format!("{page}?letter={b_letter}")).await;
        assert_eq!(other.status, 404, "{role}: tenant B's letter");

        let submitted = browser
            .submit(
                &page,
                &format!("{page}/replay"),
                &[
                    ("scope", "group"),
                    ("reason", "missing_key"),
                    ("table", "public.devices"),
                ],
            )
            .await;
        if !replays {
            // Operators get no form, and a forged post is refused.
            let refused = browser
                .submit(
                    "/app/overview",
                    &format!("{page}/replay"),
                    &[("scope", "all")],
                )
                .await;
            assert_eq!(refused.status, 403, "{role}");
            continue;
        }
        assert_eq!(submitted.status, 303, "{role}");
        let location = submitted.header("location").unwrap().to_owned();
        let request: uuid::Uuid = location
            .split("request=")
            .nth(1)
            .unwrap()
            .trim_end_matches("#progress")
            .parse()
            .unwrap();
        // Recorded: the page follows it, polling while it waits.
        let following = browser.get(&location).await;
        assert_eq!(following.status, 200);
        let poll = format!("{page}/replays/{request}");
        assert!(following.body.contains(&format!(r#"hx-get="{poll}""#)));
        assert!(following.body.contains("Waiting for the pipeline"));
        // Running: the pipeline has counted the letters and done one of them.
        let running = store::service::replay::claim(&database.service, a, request)
            .await
            .unwrap()
            .unwrap();
        store::service::replay::set_total(&database.service, &running, 4)
            .await
            .unwrap();
        store::service::replay::update(&database.service, &running, "running", 1, 0, None)
            .await
            .unwrap();
        let fragment = browser.get(&poll).await;
        assert_eq!(fragment.status, 200);
        assert!(fragment.body.contains("1 of 4"), "{}", fragment.body);
        assert!(fragment.body.contains("hx-trigger=\"every 2s\""));
        // Done: no more polling.
        store::service::replay::update(&database.service, &running, "done", 3, 1, None)
            .await
            .unwrap();
        let fragment = browser.get(&poll).await;
        assert!(fragment.body.contains("4 of 4"), "{}", fragment.body);
        assert!(!fragment.body.contains("hx-trigger"));
        // Chosen letters and a window, as the forms send them; then the pipeline carries out
        // the chosen one.
        let chosen = browser
            .submit(
                &page,
                &format!("{page}/replay"),
                &[("scope", "selected"), ("ids", &a_letters[0].0.to_string())],
            )
            .await;
        assert_eq!(chosen.status, 303);
        let chosen_request: uuid::Uuid = chosen
            .header("location")
            .unwrap()
            .split("request=")
            .nth(1)
            .unwrap()
            .trim_end_matches("#progress")
            .parse()
            .unwrap();
        let (replayed, failed) = run(&database, a, chosen_request).await;
        assert_eq!(replayed + failed, 1);
        let window = browser
            .submit(
                &page,
                &format!("{page}/replay"),
                &[
                    ("scope", "window"),
                    ("from", "2026-01-01T00:00"),
                    ("to", "2100-01-01T00:00"),
                ],
            )
            .await;
        assert_eq!(window.status, 303);
        // Tenant B's letters cannot be chosen, and its replays are not shown here.
        let foreign = browser
            .submit(
                &page,
                &format!("{page}/replay"),
                &[("scope", "selected"), ("ids", &b_letter.to_string())],
            )
            .await;
        assert_eq!(foreign.status, 404, "{role}");
        let b_request = {
            let mut tx = crate::api::owner(&database, b).await;
            let id = store::replay::request(
                &mut tx,
                &store::replay::ReplayKind::SourceDeadLetters(store::replay::LetterSelection::all(
                    b_source,
                )),
            )
            .await
            .unwrap();
            tx.commit().await.unwrap();
            id
        };
        let b_progress = browser.get(&format!("{page}/replays/{b_request}")).await;
        assert_eq!(b_progress.status, 404, "{role}");
    }

    // The sources table links each source to its explorer with its waiting letters counted,
    // as its live stream sends it.
    let email = "admin@acme.example.com";
    let mut browser = signed_in(&addr, email).await;
    let sources = browser.get("/app/data-sources").await.body;
    assert!(sources.contains(&format!(r#"href="{page}""#)), "{sources}");
    let mut stream =
        crate::live::EventStream::open(&addr, "/app/data-sources/stream", &browser.cookies).await;
    let first = stream
        .next(std::time::Duration::from_secs(10))
        .await
        .expect("the sources stream sends the table");
    let waiting: i64 = sqlx::query_scalar(
        "select count(*) from pipeline.dlq where tenant_id = $1 and replayed_at is null",
    )
    .bind(a.as_uuid())
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(
        first.data.contains(&format!(
            r#"<span class="dead-letter-count">{waiting}</span> waiting"#
        )),
        "{}",
        first.data
    );
    assert!(first.data.contains(&format!(r#"href="{page}""#)));
}

#[tokio::test]
async fn two_overlapping_replays_at_once_apply_each_letter_once() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let a = crate::api::tenant(&database, "Acme").await;
    let source = crate::api::source(&database, a).await;
    let sites: Vec<_> = (0..6).map(|n| bad_site(a, source, n, "acme")).collect();
    refused(&database, &sites).await;
    untype_site_columns(&database, a, source).await;
    let token = crate::api::token(&database, a, Role::Owner).await;
    let all = replay(&addr, source, &token, json!({ "all": true })).await;
    let by_table = replay(&addr, source, &token, json!({ "table": "public.sites" })).await;

    let (first, second) = tokio::join!(run(&database, a, all), run(&database, a, by_table));
    assert_eq!(first.0 + second.0, 6, "{first:?} {second:?}");
    assert_eq!(first.1 + second.1, 0);
    let mut admin = test_database.admin().await;
    assert_eq!(sites_of(&mut admin, a).await, 6);
    assert_eq!(
        letters_in_database(&mut admin, a).await,
        BTreeMap::from([(
            ("uncoercible_type".into(), "public.sites".into()),
            vec![(1, true); 6]
        )])
    );
    // Each request's progress ends at its own total.
    for request in [all, by_table] {
        let (_, progress) = get_json(&addr, &format!("/api/v1/replays/{request}"), &token).await;
        assert_eq!(
            progress["events_total"].as_i64(),
            Some(progress["events_replayed"].as_i64().unwrap()),
            "{progress}"
        );
    }
}

#[tokio::test]
async fn a_replays_progress_is_readable_while_it_runs() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let a = crate::api::tenant(&database, "Acme").await;
    let source = crate::api::source(&database, a).await;
    let devices: Vec<_> = (0..40).map(|n| keyless_device(a, source, n)).collect();
    refused(&database, &devices).await;
    let token = crate::api::token(&database, a, Role::Admin).await;
    member(&database, a, "admin@acme.example.com", Role::Admin).await;
    let mut browser = signed_in(&addr, "admin@acme.example.com").await;
    let request = replay(&addr, source, &token, json!({ "all": true })).await;

    // Hold the 31st letter (in the replay's order) as another replay would: the replay does
    // the first 30, records its progress, and waits.
    let mut holder = test_database.admin().await;
    let held: uuid::Uuid = sqlx::query_scalar(
        "select dlq_id from pipeline.dlq where tenant_id = $1 \
         order by created_at, dlq_id offset 30 limit 1",
    )
    .bind(a.as_uuid())
    .fetch_one(&mut holder)
    .await
    .unwrap();
    sqlx::query("select pg_advisory_lock(hashtext('dlq_replay'), hashtext($1))")
        .bind(held.to_string())
        .execute(&mut holder)
        .await
        .unwrap();
    let worker = {
        let database = database.clone();
        tokio::spawn(async move { run(&database, a, request).await })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let progress = loop {
        let (_, progress) = get_json(&addr, &format!("/api/v1/replays/{request}"), &token).await;
        if progress["events_failed"].as_i64() >= Some(25) {
            break progress;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no progress recorded: {progress}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(progress["status"], "running", "{progress}");
    assert_eq!(progress["events_total"], 40, "{progress}");
    assert!(!worker.is_finished());
    let fragment = browser
        .get(&format!(
            "/app/data-sources/{source}/dead-letters/replays/{request}"
        ))
        .await;
    assert!(fragment.body.contains("25 of 40"), "{}", fragment.body);
    assert!(fragment.body.contains("hx-trigger=\"every 2s\""));

    // Let go: it finishes every letter (each keyless device fails again, counted).
    sqlx::query("select pg_advisory_unlock(hashtext('dlq_replay'), hashtext($1))")
        .bind(held.to_string())
        .execute(&mut holder)
        .await
        .unwrap();
    assert_eq!(worker.await.unwrap(), (0, 40));
    let (_, done) = get_json(&addr, &format!("/api/v1/replays/{request}"), &token).await;
    assert_eq!(
        (
            &done["status"],
            &done["events_total"],
            &done["events_failed"]
        ),
        (&json!("done"), &json!(40), &json!(40))
    );
}

/// Fixes the sites' cause of refusal: `a`'s mapping of `sites` from `source` with no typed
/// column beyond the id, so a replayed site applies.
async fn untype_site_columns(database: &Database, a: TenantId, source: SourceId) {
    let mut tx = crate::api::owner(database, a).await;
    store::read_models::put_mapping(
        &mut tx,
        &store::read_models::MappingRow {
            source_id: *source.as_uuid(),
            source_table: "sites".into(),
            entity_kind: "site".into(),
            id_column: None,
            columns: BTreeMap::new(),
            reading_entity_kind: None,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}
