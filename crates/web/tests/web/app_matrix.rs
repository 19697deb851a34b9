//! The app's routes × every tenant role × own against other tenant, from one table: the pages
//! the app declares (`web::APP_PAGES`, which also drives the navigation) and the domain's
//! permission table. A page a role may not open is a 403 in the design and is not in its
//! navigation; another tenant's rows never show; another tenant's workspace cannot be chosen.

use domain::{Permission, Role, TenantId};
use store::{Database, Scope, TenantTx};
use test_support::TestDatabase;

use crate::auth::{PASSWORD, member, sign_in};
use crate::browser::Browser;
use crate::serve;
use crate::site::{assert_designed_html, assert_security_headers};

async fn named_source(database: &Database, tenant: TenantId, name: &str) -> domain::SourceId {
    named_source_of_kind(database, tenant, name, "simulator").await
}

async fn named_source_of_kind(
    database: &Database,
    tenant: TenantId,
    name: &str,
    kind: &str,
) -> domain::SourceId {
    let mut tx = TenantTx::begin(
        &database.app,
        Scope::Member {
            tenant,
            user: domain::UserId::new_random(),
            role: Role::Owner,
        },
    )
    .await
    .unwrap();
    let (source, _) = store::sources::create_source(&mut tx, name, kind)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    source.source_id
}

/// `user`'s role in `tenant`, read as that tenant's owner.
async fn role_in(database: &Database, tenant: TenantId, user: domain::UserId) -> Role {
    let mut tx = TenantTx::begin(
        &database.app,
        Scope::Member {
            tenant,
            user: domain::UserId::new_random(),
            role: Role::Owner,
        },
    )
    .await
    .unwrap();
    let role = store::members::role_of(&mut tx, user).await.unwrap();
    tx.rollback().await.unwrap();
    role
}

#[tokio::test]
async fn every_app_route_as_every_role_own_tenant_against_other_tenant() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let a = crate::api::tenant(&database, "Acme").await;
    let b = crate::api::tenant(&database, "Globex").await;
    let a_named_source = named_source(&database, a, "acme-charging-db").await;
    let b_named_source = named_source(&database, b, "globex-secret-db").await;
    // PostgreSQL sources, which can be asked for a resync (a simulator cannot).
    let a_postgres = named_source_of_kind(&database, a, "acme-orders-db", "postgres").await;
    let b_postgres = named_source_of_kind(&database, b, "globex-orders-db", "postgres").await;
    crate::api::paired(&database, a, a_postgres, "0a").await;
    crate::api::paired(&database, b, b_postgres, "0b").await;
    crate::masking::rule(&database, b, "*", "globex_secret_field", "drop").await;
    // A table of each tenant that nobody mapped: its admins see it on the sources page.
    let mut admin = test_database.admin().await;
    for (tenant, table) in [(a, "acme_gadgets"), (b, "globex_gadgets")] {
        sqlx::query(
            "insert into pipeline.unmapped_tables (tenant_id, source_id, schema_name, table_name, \
                 events, first_seen_at, last_seen_at) \
             values ($1, gen_random_uuid(), 'public', $2, 7, now(), now())",
        )
        .bind(tenant.as_uuid())
        .bind(table)
        .execute(&mut admin)
        .await
        .unwrap();
    }
    // Each tenant's read models (a site, a device with an extra and readings, a session),
    // named after it: the explorer lists and shows its own only.
    let mut drift_ids = Vec::new();
    for (tenant, prefix) in [(a, "acme"), (b, "globex")] {
        let source = crate::api::source(&database, tenant).await;
        crate::api::read_models(&mut admin, tenant, source, prefix).await;
        // A field of each tenant left to the typed extras: its admins see it in the inbox.
        let field = format!("{prefix}_drift_field");
        drift_ids.push(crate::drift::drift_field(&mut admin, tenant, source, &field).await);
    }
    let b_drift = drift_ids[1];
    drop(admin);
    // A dead letter of a source of each tenant: its explorer shows tenant A's only.
    let a_letter_source = crate::api::source(&database, a).await;
    let a_letter = crate::api::dead_letter(&database, a, a_letter_source).await;
    let b_letter_source = crate::api::source(&database, b).await;
    let b_letter = crate::api::dead_letter(&database, b, b_letter_source).await;
    // A saved dashboard of tenant B's, which no role of A's may see or change.
    let mut tx = crate::api::owner(&database, b).await;
    let b_dashboard = store::dashboards::create(
        &mut tx,
        "Globex secret board",
        &[store::dashboards::Panel::of_key(
            "globex_only",
            store::analytics::Aggregation::Avg,
            store::analytics::Step::Minute,
        )],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    // Signed out: every app route sends the browser to sign in, and comes back after.
    let mut anonymous = Browser::new(&addr);
    for (path, _, _) in web::APP_PAGES {
        let page = anonymous.get(path).await;
        assert_eq!(page.status, 303, "{path}");
        assert_eq!(
            page.header("location"),
            Some(format!("/auth?next={path}").as_str())
        );
    }

    let mut failures = Vec::new();
    for role in Role::TENANT_ROLES {
        let email = format!("{role}@acme.example.com");
        member(&database, a, &email, role).await;
        let mut browser = Browser::new(&addr);
        assert_eq!(sign_in(&mut browser, &email, PASSWORD).await.status, 303);
        let overview = browser.get("/app/overview").await;
        for (path, _, permission) in web::APP_PAGES {
            let allowed = role.allows(*permission);
            let page = browser.get(path).await;
            assert_security_headers(&page, path);
            assert_designed_html(&page, path);
            let expected = if allowed { 200 } else { 403 };
            if page.status != expected {
                failures.push(format!(
                    "{role} {path}: {} (expected {expected})",
                    page.status
                ));
            }
            if !allowed && !page.body.contains("You do not have access to this page") {
                failures.push(format!("{role} {path}: 403 is not the designed page"));
            }
            if page.body.contains("Globex") || page.body.contains("globex-secret-db") {
                failures.push(format!("{role} {path}: shows tenant B"));
            }
            let in_navigation = overview.body.contains(&format!(r#"<a href="{path}""#));
            if in_navigation != allowed {
                failures.push(format!("{role} {path}: in navigation = {in_navigation}"));
            }
        }
        let sources = browser.get("/app/data-sources").await;
        if role.allows(Permission::ViewSources) && !sources.body.contains("acme-charging-db") {
            failures.push(format!("{role}: own source missing"));
        }
        let lists_unmapped = sources.body.contains("public.acme_gadgets");
        if lists_unmapped != role.allows(Permission::ManageSources) {
            failures.push(format!("{role}: lists unmapped tables = {lists_unmapped}"));
        }
        if sources.body.contains("globex_gadgets") {
            failures.push(format!("{role}: lists tenant B's unmapped table"));
        }
        // A source's page: its own for those who see sources, linked from the list; tenant
        // B's source and an id that is none are not found; 403 without the permission.
        let views = role.allows(Permission::ViewSources);
        let detail_path = format!("/app/data-sources/{a_named_source}");
        if views
            && !sources
                .body
                .contains(&format!(r#"<a href="{detail_path}">"#))
        {
            failures.push(format!(
                "{role}: the list does not link to the source's page"
            ));
        }
        for (path, expected, shows) in [
            (detail_path.clone(), if views { 200 } else { 403 }, views),
            (
                format!("/app/data-sources/{b_named_source}"),
                if views { 404 } else { 403 },
                false,
            ),
            (
                "/app/data-sources/not-a-source".to_owned(),
                if views { 404 } else { 403 },
                false,
            ),
        ] {
            let page = browser.get(&path).await;
            assert_security_headers(&page, &path);
            assert_designed_html(&page, &path);
            if page.status != expected {
                failures.push(format!(
                    "{role} {path}: {} (expected {expected})",
                    page.status
                ));
            }
            if shows != page.body.contains("<h1>acme-charging-db</h1>") {
                failures.push(format!("{role} {path}: shows the source = {}", !shows));
            }
            if page.body.contains("globex") || page.body.contains("Globex") {
                failures.push(format!("{role} {path}: shows tenant B"));
            }
        }
        // Pausing and resuming ingestion: its own source for those who manage sources (the
        // forms on its page), tenant B's source is not found, 403 for the others.
        let manages = role.allows(Permission::ManageSources);
        // A source of its own to revoke, by its name typed to confirm.
        let doomed_name = format!("acme-retired-{role}");
        let doomed = named_source(&database, a, &doomed_name).await;
        let detail = browser.get(&detail_path).await;
        let pause_action = format!("{detail_path}/pause");
        if detail.body.contains(&format!(r#"action="{pause_action}""#)) != manages {
            failures.push(format!("{role}: pause form shown = {}", !manages));
        }
        for (action, fields, allowed_status) in [
            (pause_action.clone(), vec![("reason", "matrix")], 303),
            (format!("{detail_path}/resume"), vec![], 303),
            (
                format!("/app/data-sources/{b_named_source}/pause"),
                vec![],
                404,
            ),
            (
                format!("/app/data-sources/{b_named_source}/resume"),
                vec![],
                404,
            ),
            (
                format!("/app/data-sources/{a_postgres}/resync"),
                vec![],
                303,
            ),
            (
                format!("/app/data-sources/{b_postgres}/resync"),
                vec![],
                404,
            ),
            // A simulator has no slot nor snapshot to take again: refused, saying so.
            (format!("{detail_path}/resync"), vec![], 400),
            (
                format!("/app/data-sources/{a_postgres}/rotate-certificate"),
                vec![],
                303,
            ),
            (
                format!("/app/data-sources/{b_postgres}/rotate-certificate"),
                vec![],
                404,
            ),
            // A revocation without the source's name typed is refused, saying so.
            (
                format!("/app/data-sources/{doomed}/revoke"),
                vec![("reason", "matrix"), ("confirm", "another name")],
                400,
            ),
            (
                format!("/app/data-sources/{doomed}/revoke"),
                vec![("reason", "matrix"), ("confirm", doomed_name.as_str())],
                303,
            ),
            (
                format!("/app/data-sources/{b_named_source}/revoke"),
                vec![("reason", "matrix"), ("confirm", "globex-secret-db")],
                404,
            ),
        ] {
            let page = browser.submit("/app/overview", &action, &fields).await;
            let expected = if manages { allowed_status } else { 403 };
            if page.status != expected {
                failures.push(format!(
                    "{role} POST {action}: {} (expected {expected})",
                    page.status
                ));
            }
        }
        // Without the form's CSRF token nothing is paused.
        let forged = browser.post(&pause_action, &[("reason", "forged")]).await;
        if forged.status == 303 {
            failures.push(format!("{role}: a pause without the CSRF token was taken"));
        }
        if manages {
            // Paused by the form above and resumed: the page offers the pause again.
            let detail = browser.get(&detail_path).await;
            if !detail.body.contains(r#"data-paused="false""#) {
                failures.push(format!("{role}: the source is not resumed"));
            }
            // The resync asked above waits for the agent, and the page says so.
            let postgres = browser
                .get(&format!("/app/data-sources/{a_postgres}"))
                .await;
            if !postgres.body.contains(r#"data-resync="waiting""#) {
                failures.push(format!("{role}: the resync asked is not shown waiting"));
            }
            if !postgres.body.contains(r#"data-rotation="waiting""#) {
                failures.push(format!("{role}: the rotation asked is not shown waiting"));
            }
            let retired = browser.get(&format!("/app/data-sources/{doomed}")).await;
            if !retired.body.contains(r#"data-status="revoked""#)
                || retired.body.contains("/revoke\"")
            {
                failures.push(format!("{role}: the revoked source is not shown revoked"));
            }
        }
        // The dead-letter explorer: its own source's letters for those who see dead letters,
        // replays for those who replay; tenant B's source and letter are not found.
        let explorer = format!("/app/data-sources/{a_letter_source}/dead-letters");
        if role.allows(Permission::ViewSources) && !sources.body.contains(&explorer) {
            failures.push(format!("{role}: no link to a source's dead letters"));
        }
        let sees_letters = role.allows(Permission::ViewDeadLetters);
        let replays = role.allows(Permission::ManageReplays);
        for (path, allowed_status) in [
            (explorer.clone(), 200),
            (format!("{explorer}?letter={a_letter}"), 200),
            (
                format!("{explorer}?reason=bronze_rejected&state=waiting"),
                200,
            ),
            (
                format!("/app/data-sources/{b_letter_source}/dead-letters"),
                404,
            ),
            (format!("{explorer}?letter={b_letter}"), 404),
        ] {
            let page = browser.get(&path).await;
            assert_designed_html(&page, &path);
            let expected = if sees_letters { allowed_status } else { 403 };
            if page.status != expected {
                failures.push(format!(
                    "{role} {path}: {} (expected {expected})",
                    page.status
                ));
            }
            if page.status == 200 {
                if !page.body.contains(&a_letter.to_string()) {
                    failures.push(format!("{role} {path}: its own letter missing"));
                }
                if page.body.contains("/replay\"") != replays {
                    failures.push(format!("{role} {path}: replay forms shown = {}", !replays));
                }
            }
            if page.body.contains(&b_letter.to_string()) || page.body.contains("Globex") {
                failures.push(format!("{role} {path}: shows tenant B's letter"));
            }
        }
        let a_letter_text = a_letter.to_string();
        for (action, fields, allowed_status) in [
            (
                format!("{explorer}/replay"),
                vec![("scope", "selected"), ("ids", a_letter_text.as_str())],
                303,
            ),
            (
                format!("/app/data-sources/{b_letter_source}/dead-letters/replay"),
                vec![("scope", "all")],
                404,
            ),
        ] {
            let page = browser.submit("/app/overview", &action, &fields).await;
            let expected = if replays { allowed_status } else { 403 };
            if page.status != expected {
                failures.push(format!(
                    "{role} POST {action}: {} (expected {expected})",
                    page.status
                ));
            }
        }
        // The drift inbox: its own field for those who map tables; tenant B's field is neither
        // shown nor reachable by its id.
        let drift = browser.get("/app/drift").await;
        let lists_drift = drift.body.contains("<code>acme_drift_field</code>");
        if lists_drift != role.allows(Permission::ManageSources) {
            failures.push(format!("{role}: lists its drift field = {lists_drift}"));
        }
        if drift.body.contains("globex_drift_field") {
            failures.push(format!("{role}: lists tenant B's drift field"));
        }
        for action in ["/app/drift/dismiss", "/app/drift/promote"] {
            let page = browser
                .submit(
                    "/app/overview",
                    action,
                    &[
                        ("drift_id", &b_drift.to_string()),
                        ("typed_column", "model"),
                    ],
                )
                .await;
            let expected = if role.allows(Permission::ManageSources) {
                404
            } else {
                403
            };
            if page.status != expected {
                failures.push(format!(
                    "{role} {action} of tenant B's field: {} (expected {expected})",
                    page.status
                ));
            }
        }
        // The explorer: every role reads its own entities; tenant B's are not found, by id
        // or by search.
        let explore = browser.get("/app/explore").await;
        if (explore.status, explore.header("location")) != (303, Some("/app/explore/devices")) {
            failures.push(format!("{role} /app/explore: {}", explore.status));
        }
        for kind in ["site", "device", "session"] {
            let list = format!("/app/explore/{kind}s");
            for (path, expected, shows) in [
                (list.clone(), 200, Some(format!("acme-{kind}"))),
                (format!("{list}?q=globex"), 200, None),
                (
                    format!("{list}/acme-{kind}"),
                    200,
                    Some(format!("acme-{kind}")),
                ),
                (format!("{list}/globex-{kind}"), 404, None),
            ] {
                let page = browser.get(&path).await;
                assert_designed_html(&page, &path);
                if page.status != expected {
                    failures.push(format!(
                        "{role} {path}: {} (expected {expected})",
                        page.status
                    ));
                }
                if let Some(shown) = shows
                    && !page.body.contains(&format!(">{shown}<"))
                {
                    failures.push(format!("{role} {path}: {shown} missing"));
                }
                if page.body.contains("globex-") || page.body.contains("globex_") {
                    failures.push(format!("{role} {path}: shows tenant B's entities"));
                }
            }
        }
        // The device's own extra and readings (one of 42: average, minimum, maximum, count),
        // and its site's page counts its devices' readings.
        let device = browser.get("/app/explore/devices/acme-device").await;
        let site = browser.get("/app/explore/sites/acme-site").await;
        for (page, shown) in [
            (&device, "<code>acme_only</code>"),
            (&device, "<td>42</td><td>42</td><td>42</td><td>1</td>"),
            (&device, "<code>acme_extra</code>"),
            (
                &device,
                r#"<a href="/app/explore/sites/acme-site">acme-site</a>"#,
            ),
            (&site, "<code>temperature</code>"),
        ] {
            if !page.body.contains(shown) {
                failures.push(format!("{role}: an entity page lacks {shown}"));
            }
        }
        // Member actions: allowed by the permission table in the own tenant; another tenant's
        // member does not exist here.
        let target = member(
            &database,
            a,
            &format!("target-of-{role}@acme.example.com"),
            Role::Viewer,
        )
        .await;
        let outsider = member(
            &database,
            b,
            &format!("outsider-{role}@globex.example.com"),
            Role::Viewer,
        )
        .await;
        let manages = role.allows(Permission::ManageMembers);
        for (user, expected) in [
            (target, if manages { 303 } else { 403 }),
            (outsider, if manages { 404 } else { 403 }),
        ] {
            let page = browser
                .submit(
                    "/app/overview",
                    &format!("/app/settings/members/{user}/role"),
                    &[("role", "operator")],
                )
                .await;
            if page.status != expected {
                failures.push(format!(
                    "{role} changing {user}'s role: {} (expected {expected})",
                    page.status
                ));
            }
        }
        let target_role = role_in(&database, a, target).await;
        let expected_role = if manages {
            Role::Operator
        } else {
            Role::Viewer
        };
        if target_role != expected_role {
            failures.push(format!("{role}: target's role is {target_role}"));
        }
        if role_in(&database, b, outsider).await != Role::Viewer {
            failures.push(format!("{role}: changed tenant B's member"));
        }
        let removed = browser
            .submit(
                "/app/overview",
                &format!("/app/settings/members/{outsider}/remove"),
                &[],
            )
            .await;
        if removed.status != if manages { 404 } else { 403 } {
            failures.push(format!(
                "{role} removing tenant B's member: {}",
                removed.status
            ));
        }

        let workspace = browser
            .submit(
                "/app/overview",
                "/app/settings/workspace",
                &[("name", "Acme"), ("industry", "energy"), ("region", "eu")],
            )
            .await;
        let expected = if role.allows(Permission::ManageWorkspace) {
            303
        } else {
            403
        };
        if workspace.status != expected {
            failures.push(format!(
                "{role} editing the workspace: {} (expected {expected})",
                workspace.status
            ));
        }
        // Dashboards: every role sees them; owners and admins save and change them; tenant
        // B's is not found, to see or to change.
        let edits = role.allows(Permission::ManageWorkspace);
        let editor = browser.get("/app/dashboards/default/edit").await;
        if editor.status != if edits { 200 } else { 403 } {
            failures.push(format!("{role} the dashboard editor: {}", editor.status));
        }
        let created = browser
            .submit(
                "/app/overview",
                "/app/dashboards",
                &[("name", &format!("Board of {role}")), ("from", "default")],
            )
            .await;
        if created.status != if edits { 303 } else { 403 } {
            failures.push(format!("{role} saving a dashboard: {}", created.status));
        }
        for path in [
            format!("/app/dashboards/{b_dashboard}"),
            format!("/app/dashboards/{b_dashboard}/live"),
        ] {
            let page = browser.get(&path).await;
            if page.status != 404 || page.body.contains("Globex secret board") {
                failures.push(format!("{role} GET {path}: {}", page.status));
            }
        }
        for action in [
            "panels",
            "rename",
            "delete",
            "panels/0/remove",
            "panels/1/up",
        ] {
            let action = format!("/app/dashboards/{b_dashboard}/{action}");
            let page = browser
                .submit(
                    "/app/overview",
                    &action,
                    &[
                        ("name", "Taken"),
                        ("key", "temperature"),
                        ("agg", "avg"),
                        ("step", "1m"),
                        ("chart", "line"),
                    ],
                )
                .await;
            let expected = if edits { 404 } else { 403 };
            if page.status != expected {
                failures.push(format!(
                    "{role} POST {action}: {} (expected {expected})",
                    page.status
                ));
            }
        }
        let invited = browser
            .submit(
                "/app/overview",
                "/app/settings/invitations",
                &[
                    ("email", &format!("invitee-of-{role}@example.com")),
                    ("role", "viewer"),
                ],
            )
            .await;
        let expected = if manages { 303 } else { 403 };
        if invited.status != expected {
            failures.push(format!(
                "{role} inviting: {} (expected {expected})",
                invited.status
            ));
        }
        let retention = browser
            .submit(
                "/app/overview",
                "/app/settings/retention",
                &[("days", "45")],
            )
            .await;
        let expected = if role.allows(Permission::ManageRetention) {
            303
        } else {
            403
        };
        if retention.status != expected {
            failures.push(format!(
                "{role} setting retention: {} (expected {expected})",
                retention.status
            ));
        }

        // Single sign-on: saved, tested and removed by owners only (`ManageSso`), never by an
        // admin. The issuer is a closed loopback port, so the allowed test sign-in fails at
        // discovery (400).
        let manages_sso = role.allows(Permission::ManageSso);
        for (action, fields, allowed_status) in [
            (
                "/app/settings/sso",
                vec![
                    ("issuer", "http://127.0.0.1:9"),
                    ("client_id", "acme"),
                    ("client_secret", "acme secret"),
                    ("domains", "acme.example"),
                    ("default_role", "viewer"),
                ],
                303,
            ),
            ("/app/settings/sso/test", vec![], 400),
            ("/app/settings/sso/verify", vec![], 303),
            ("/app/settings/sso/delete", vec![], 303),
        ] {
            let page = browser.submit("/app/overview", action, &fields).await;
            let expected = if manages_sso { allowed_status } else { 403 };
            if page.status != expected {
                failures.push(format!(
                    "{role} POST {action}: {} (expected {expected})",
                    page.status
                ));
            }
        }

        // Masking: owners and admins add, preview and remove rules; tenant B's rule does not
        // exist here, to change or to see.
        let masks = role.allows(Permission::ManageMasking);
        let masking_actions = [
            (
                "/app/settings/masking",
                vec![
                    ("source_table", "*".to_owned()),
                    ("field_path", format!("made_by_{role}")),
                    ("action", "hash".to_owned()),
                ],
                303,
            ),
            (
                "/app/settings/masking/preview",
                vec![
                    ("field_path", "email".to_owned()),
                    ("action", "hash".to_owned()),
                    ("sample_table", "public.customers".to_owned()),
                    (
                        "sample",
                        r#"{"after": {"email": "a@example.com"}}"#.to_owned(),
                    ),
                ],
                200,
            ),
            (
                "/app/settings/masking/remove",
                vec![
                    ("source_table", "*".to_owned()),
                    ("field_path", "globex_secret_field".to_owned()),
                ],
                404,
            ),
            (
                "/app/settings/masking/update",
                vec![
                    ("original_table", "*".to_owned()),
                    ("original_path", "globex_secret_field".to_owned()),
                    ("field_path", "globex_secret_field".to_owned()),
                    ("action", "hash".to_owned()),
                ],
                404,
            ),
        ];
        for (action, fields, allowed) in masking_actions {
            let fields: Vec<(&str, &str)> = fields
                .iter()
                .map(|(name, value)| (*name, value.as_str()))
                .collect();
            let page = browser.submit("/app/overview", action, &fields).await;
            let expected = if masks { allowed } else { 403 };
            if page.status != expected {
                failures.push(format!(
                    "{role} POST {action}: {} (expected {expected})",
                    page.status
                ));
            }
            if page.body.contains("globex_secret_field") && page.status != 422 {
                failures.push(format!("{role} POST {action}: shows tenant B's rule"));
            }
        }
        if masks
            && browser
                .get("/app/settings/masking")
                .await
                .body
                .contains("globex_secret_field")
        {
            failures.push(format!("{role}: the masking page lists tenant B's rule"));
        }

        // Another tenant's workspace cannot be chosen; the session stays in its own.
        let switched = browser
            .submit(
                "/app/overview",
                "/app/workspace",
                &[("tenant_id", &b.to_string())],
            )
            .await;
        if switched.status != 404 {
            failures.push(format!(
                "{role}: switching to tenant B gave {}",
                switched.status
            ));
        }
        let after = browser.get("/app/overview").await;
        if !crate::auth::in_workspace(&after.body, "Acme") {
            failures.push(format!("{role}: left its own workspace"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let mut tx = crate::api::owner(&database, b).await;
    let b_board = store::dashboards::get(&mut tx, b_dashboard).await.unwrap();
    assert_eq!(
        (b_board.name.as_str(), b_board.panels.len()),
        ("Globex secret board", 1),
        "tenant B's dashboard untouched"
    );
    let b_rules = store::masking::list(&mut tx).await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(
        b_rules,
        [store::masking::MaskingRule {
            source_table: "*".into(),
            field_path: "globex_secret_field".into(),
            action: "drop".into(),
        }],
        "tenant B's rules untouched"
    );
}

/// A page its handler refuses is drawn in the visitor's chrome, as the pages they may open:
/// their name in the user menu, and the sign-out form with their anti-forgery token.
#[tokio::test]
async fn a_refused_page_keeps_the_visitors_chrome() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let a = crate::api::tenant(&database, "Acme").await;
    member(&database, a, "viewer@acme.example.com", Role::Viewer).await;
    let mut browser = Browser::new(&addr);
    sign_in(&mut browser, "viewer@acme.example.com", PASSWORD).await;
    let overview = browser.get("/app/overview").await;
    assert_eq!(overview.status, 200);
    assert!(
        overview
            .body
            .contains(r#"<span class="user-name">Test</span>"#),
        "the viewer's name"
    );
    for path in ["/app/settings", "/app/settings/api-tokens", "/app/audit"] {
        let refused = browser.get(path).await;
        assert_eq!(refused.status, 403, "{path}");
        assert!(
            refused.body.contains("You do not have access to this page"),
            "{path}"
        );
        assert!(
            refused
                .body
                .contains(r#"<span class="user-name">Test</span>"#),
            "{path}: the viewer's name"
        );
        assert_eq!(
            refused.csrf(),
            overview.csrf(),
            "{path}: the sign-out form's token"
        );
    }
    let unknown = browser
        .submit("/app/overview", "/app/sessions/no-such-session/end", &[])
        .await;
    assert_eq!(unknown.status, 404);
    assert!(
        unknown
            .body
            .contains(r#"<span class="user-name">Test</span>"#),
        "the viewer's name"
    );
    assert_eq!(unknown.csrf(), overview.csrf(), "the sign-out form's token");
}

#[tokio::test]
async fn a_member_of_two_workspaces_switches_and_gets_each_ones_role() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let a = crate::api::tenant(&database, "Acme").await;
    let b = crate::api::tenant(&database, "Globex").await;
    let c = crate::api::tenant(&database, "Initech").await;
    named_source(&database, b, "globex-db").await;
    member(&database, a, "ada@example.com", Role::Viewer).await;
    member(&database, b, "ada@example.com", Role::Admin).await;

    let mut browser = Browser::new(&addr);
    sign_in(&mut browser, "ada@example.com", PASSWORD).await;
    let overview = browser.get("/app/overview").await;
    // The switcher lists both workspaces, and only those.
    assert!(
        overview.body.contains(&format!(
            r#"<option value="{a}" selected>Acme (viewer)</option>"#
        )),
        "{}",
        overview.body
    );
    assert!(
        overview
            .body
            .contains(&format!(r#"<option value="{b}" >Globex (admin)</option>"#))
    );
    assert!(!overview.body.contains("Initech"));
    assert_eq!(
        browser.get("/app/data-sources").await.status,
        403,
        "viewer in Acme"
    );

    let switched = browser
        .submit(
            "/app/overview",
            "/app/workspace",
            &[("tenant_id", &b.to_string())],
        )
        .await;
    assert_eq!(switched.status, 303);
    let sources = browser.get("/app/data-sources").await;
    assert_eq!(sources.status, 200, "admin in Globex");
    assert!(sources.body.contains("globex-db"));
    // A workspace the account is not in is refused like one that does not exist.
    let refused = browser
        .submit(
            "/app/overview",
            "/app/workspace",
            &[("tenant_id", &c.to_string())],
        )
        .await;
    assert_eq!(refused.status, 404);
    assert!(crate::auth::in_workspace(
        &browser.get("/app/overview").await.body,
        "Globex"
    ));

    // Removed from Globex while signed in: the next request falls back to Acme, as a viewer.
    store::control::remove_member(
        &database.app,
        store::Actor::System("test"),
        b,
        &domain::Email::parse("ada@example.com").unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(browser.get("/app/data-sources").await.status, 403);
    assert!(crate::auth::in_workspace(
        &browser.get("/app/overview").await.body,
        "Acme"
    ));
}

#[tokio::test]
async fn members_settings_keep_an_owner_and_only_owners_touch_owners() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let a = crate::api::tenant(&database, "Acme").await;
    let owner = member(&database, a, "owner@acme.example.com", Role::Owner).await;
    let admin = member(&database, a, "admin@acme.example.com", Role::Admin).await;
    let viewer = member(&database, a, "viewer@acme.example.com", Role::Viewer).await;

    let mut as_owner = Browser::new(&addr);
    sign_in(&mut as_owner, "owner@acme.example.com", PASSWORD).await;
    let page = as_owner.get("/app/settings").await;
    assert_eq!(page.status, 200);
    for email in [
        "owner@acme.example.com",
        "admin@acme.example.com",
        "viewer@acme.example.com",
    ] {
        assert!(page.body.contains(email), "{email} listed");
    }

    // The workspace: owners and admins rename it; only an owner changes the plan (billing).
    let saved = as_owner
        .submit(
            "/app/settings",
            "/app/settings/workspace",
            &[
                ("name", "Acme Charging"),
                ("plan", "business"),
                ("industry", "Energy"),
                ("region", "eu-north"),
            ],
        )
        .await;
    assert_eq!(
        saved.header("location"),
        Some("/app/settings?done=workspace#workspace-heading")
    );
    let page = as_owner.get("/app/settings?done=workspace").await;
    assert!(
        page.body.contains("Workspace saved.") && page.body.contains(r#"value="Acme Charging""#)
    );
    assert!(page.body.contains(r#"<option value="business" selected>"#));
    let refused = as_owner
        .submit(
            "/app/settings",
            "/app/settings/workspace",
            &[("name", ""), ("industry", "x"), ("region", "y")],
        )
        .await;
    assert_eq!(
        refused.header("location"),
        Some("/app/settings?refused=workspace#members-heading")
    );

    // Retention: saved, audited, bounded.
    assert!(page.body.contains(r#"id="retention-days""#) && page.body.contains(r#"value="30""#));
    let saved = as_owner
        .submit(
            "/app/settings",
            "/app/settings/retention",
            &[("days", "90")],
        )
        .await;
    assert_eq!(
        saved.header("location"),
        Some("/app/settings?done=retention#retention-heading")
    );
    let refused = as_owner
        .submit("/app/settings", "/app/settings/retention", &[("days", "0")])
        .await;
    assert_eq!(
        refused.header("location"),
        Some("/app/settings?refused=retention#members-heading")
    );
    let mut tx = TenantTx::begin(
        &database.app,
        Scope::Member {
            tenant: a,
            user: owner,
            role: Role::Owner,
        },
    )
    .await
    .unwrap();
    assert_eq!(store::retention::days(&mut tx).await.unwrap(), 90);
    let entries = store::audit::list(&mut tx, 10).await.unwrap();
    assert_eq!(entries[0].action, "retention.set");
    assert_eq!(entries[0].actor_id, owner.to_string());
    tx.rollback().await.unwrap();

    // The last owner can be neither demoted nor removed.
    for (action, fields) in [("role", vec![("role", "admin")]), ("remove", vec![])] {
        let page = as_owner
            .submit(
                "/app/settings",
                &format!("/app/settings/members/{owner}/{action}"),
                &fields,
            )
            .await;
        assert_eq!(page.status, 303);
        assert_eq!(
            page.header("location"),
            Some("/app/settings?refused=last-owner#members-heading")
        );
        assert_eq!(role_in(&database, a, owner).await, Role::Owner);
    }
    let page = as_owner.get("/app/settings?refused=last-owner").await;
    assert!(
        page.body
            .contains("A workspace must keep at least one owner")
    );

    // An admin manages operators and viewers, but cannot make an owner or touch one.
    let mut as_admin = Browser::new(&addr);
    sign_in(&mut as_admin, "admin@acme.example.com", PASSWORD).await;
    let page = as_admin
        .submit(
            "/app/settings",
            "/app/settings/workspace",
            &[
                ("name", "Acme Fleet"),
                ("plan", "enterprise"),
                ("industry", "energy"),
                ("region", "eu"),
            ],
        )
        .await;
    assert_eq!(page.status, 403, "the plan is billing");
    let page = as_admin
        .submit(
            "/app/settings",
            "/app/settings/workspace",
            &[
                ("name", "Acme Fleet"),
                ("industry", "energy"),
                ("region", "eu"),
            ],
        )
        .await;
    assert_eq!(page.status, 303);
    let page = as_admin.get("/app/settings").await;
    assert!(page.body.contains("Only an owner changes the plan."));
    assert!(
        page.body.contains(r#"value="business" readonly"#),
        "{}",
        page.body
    );
    assert!(page.body.contains("<h1>Settings</h1>") && page.body.contains("Acme Fleet"));
    let page = as_admin
        .submit(
            "/app/settings",
            &format!("/app/settings/members/{viewer}/role"),
            &[("role", "owner")],
        )
        .await;
    assert_eq!(
        page.header("location"),
        Some("/app/settings?refused=owner-only#members-heading")
    );
    let page = as_admin
        .submit(
            "/app/settings",
            &format!("/app/settings/members/{owner}/remove"),
            &[],
        )
        .await;
    assert_eq!(
        page.header("location"),
        Some("/app/settings?refused=owner-only#members-heading")
    );
    assert_eq!(role_in(&database, a, viewer).await, Role::Viewer);
    assert_eq!(role_in(&database, a, owner).await, Role::Owner);
    let page = as_admin
        .submit(
            "/app/settings",
            &format!("/app/settings/members/{viewer}/role"),
            &[("role", "operator")],
        )
        .await;
    assert_eq!(
        page.header("location"),
        Some("/app/settings?done=role#members-heading")
    );
    assert_eq!(role_in(&database, a, viewer).await, Role::Operator);
    let page = as_admin
        .submit(
            "/app/settings",
            &format!("/app/settings/members/{viewer}/role"),
            &[("role", "internal_ops")],
        )
        .await;
    assert_eq!(page.status, 400, "only tenant roles");

    // The owner makes the admin an owner; then the first owner may step down.
    as_owner
        .submit(
            "/app/settings",
            &format!("/app/settings/members/{admin}/role"),
            &[("role", "owner")],
        )
        .await;
    assert_eq!(role_in(&database, a, admin).await, Role::Owner);
    let page = as_owner
        .submit(
            "/app/settings",
            &format!("/app/settings/members/{owner}/role"),
            &[("role", "viewer")],
        )
        .await;
    assert_eq!(
        page.header("location"),
        Some("/app/settings?done=role#members-heading")
    );
    assert_eq!(role_in(&database, a, owner).await, Role::Viewer);
    // Now a viewer: the settings are closed to them, in the page and in the navigation.
    let page = as_owner.get("/app/settings").await;
    assert_eq!(page.status, 403);

    // Removal by the new owner; the removed member's session no longer reaches the workspace.
    let mut as_viewer = Browser::new(&addr);
    sign_in(&mut as_viewer, "viewer@acme.example.com", PASSWORD).await;
    let page = as_admin
        .submit(
            "/app/settings",
            &format!("/app/settings/members/{viewer}/remove"),
            &[],
        )
        .await;
    assert_eq!(
        page.header("location"),
        Some("/app/settings?done=removed#members-heading")
    );
    let page = as_viewer.get("/app/overview").await;
    assert_eq!(page.status, 403);
    assert!(page.body.contains("You are not a member of any workspace"));

    // Every change is in the workspace's audit chain, with the acting user.
    let chain = store::service::audit::verify(&database.service, Some(a))
        .await
        .unwrap();
    assert!(chain[0].is_intact());
    let mut tx = TenantTx::begin(
        &database.app,
        Scope::Member {
            tenant: a,
            user: owner,
            role: Role::Owner,
        },
    )
    .await
    .unwrap();
    let entries = store::audit::list(&mut tx, 100).await.unwrap();
    let changes: Vec<(&str, String)> = entries
        .iter()
        .filter(|entry| entry.actor_type == "user")
        .map(|entry| (entry.action.as_str(), entry.actor_id.clone()))
        .collect();
    assert_eq!(
        changes
            .iter()
            .filter(|(action, _)| *action == "member.change_role")
            .count(),
        3,
        "{changes:?}"
    );
    assert!(
        changes.contains(&("member.remove", admin.to_string())),
        "{changes:?}"
    );
}

#[tokio::test]
async fn api_tokens_are_shown_once_capped_at_the_creators_role_and_revocable() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let a = crate::api::tenant(&database, "Acme").await;
    let b = crate::api::tenant(&database, "Globex").await;
    member(&database, a, "admin@acme.example.com", Role::Admin).await;
    member(&database, a, "operator@acme.example.com", Role::Operator).await;
    let mut as_admin = Browser::new(&addr);
    sign_in(&mut as_admin, "admin@acme.example.com", PASSWORD).await;

    // An admin cannot mint an owner token; the form names what is wrong.
    let page = as_admin
        .submit(
            "/app/settings/api-tokens",
            "/app/settings/api-tokens",
            &[("name", "ci"), ("role", "owner"), ("days", "30")],
        )
        .await;
    assert_eq!(page.status, 422);
    assert!(page.body.contains("Choose a role no higher than your own."));
    assert!(
        !page.body.contains(r#"<option value="owner""#),
        "not offered either"
    );
    let page = as_admin
        .submit(
            "/app/settings/api-tokens",
            "/app/settings/api-tokens",
            &[("name", ""), ("role", "viewer"), ("days", "400")],
        )
        .await;
    assert_eq!(page.status, 422);
    assert!(page.body.contains("between 1 and 366 days") && page.body.contains("Name the token"));

    // Created: shown once, and it works against the API with its role.
    let page = as_admin
        .submit(
            "/app/settings/api-tokens",
            "/app/settings/api-tokens",
            &[
                ("name", "deploy script"),
                ("role", "operator"),
                ("days", "30"),
            ],
        )
        .await;
    assert_eq!(page.status, 201);
    assert_eq!(page.header("cache-control"), Some("no-store"));
    let start = page.body.find("tat1.").expect("the token is shown");
    let end = page.body[start..].find('<').unwrap() + start;
    let token = page.body[start..end].to_owned();
    let (status, _, _) = crate::request(&addr, "GET", "/api/v1/sources", Some(&token), "").await;
    assert_eq!(status, 200, "an operator token may list sources");
    let (status, _, _) = crate::request(
        &addr,
        "POST",
        "/api/v1/sources",
        Some(&token),
        r#"{"name":"x","kind":"simulator"}"#,
    )
    .await;
    assert_eq!(status, 403, "but not create them");
    let listing = as_admin.get("/app/settings/api-tokens").await;
    assert!(listing.body.contains("deploy script"));
    assert!(!listing.body.contains(&token), "never shown again");
    assert!(
        !listing.body.contains(&token[token.len() - 64..]),
        "not even the secret"
    );

    // An operator cannot manage tokens at all.
    let mut as_operator = Browser::new(&addr);
    sign_in(&mut as_operator, "operator@acme.example.com", PASSWORD).await;
    let page = as_operator
        .submit(
            "/app/overview",
            "/app/settings/api-tokens",
            &[("name", "mine"), ("role", "viewer"), ("days", "30")],
        )
        .await;
    assert_eq!(page.status, 403);

    // Revoking: the API refuses the token from then on; another tenant's token is not found.
    let b_token = crate::api::token(&database, b, Role::Viewer).await;
    let b_token_id = b_token.split('.').nth(2).unwrap().to_owned();
    let page = as_admin
        .submit(
            "/app/settings/api-tokens",
            &format!("/app/settings/api-tokens/{b_token_id}/revoke"),
            &[],
        )
        .await;
    assert_eq!(page.status, 404);
    let (status, _, _) =
        crate::request(&addr, "GET", "/api/v1/dead-letters", Some(&b_token), "").await;
    assert_ne!(status, 401, "tenant B's token still works");
    let token_id = token.split('.').nth(2).unwrap().to_owned();
    let token_id = uuid::Uuid::parse_str(&token_id).unwrap();
    let page = as_admin
        .submit(
            "/app/settings/api-tokens",
            &format!("/app/settings/api-tokens/{token_id}/revoke"),
            &[],
        )
        .await;
    assert_eq!(page.status, 303);
    let (status, _, _) = crate::request(&addr, "GET", "/api/v1/sources", Some(&token), "").await;
    assert_eq!(status, 401);
    let listing = as_admin.get("/app/settings/api-tokens?done=revoked").await;
    assert!(listing.body.contains("The token was revoked"));
    assert!(
        listing
            .body
            .contains(r#"<span class="badge badge-revoked">revoked</span>"#)
    );
}

#[tokio::test]
async fn the_audit_log_filters_pages_exports_and_shows_a_broken_chain() {
    use sqlx::Connection;

    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    // Created by an operator whose name looks like a spreadsheet formula.
    let attributes =
        domain::TenantAttributes::parse("Acme", domain::Plan::Team, "energy", "eu").unwrap();
    let a = store::control::create_tenant(
        &database.app,
        store::Actor::Cli("=SUM(1+1)".into()),
        &attributes,
    )
    .await
    .unwrap()
    .tenant_id;
    let owner = member(&database, a, "owner@acme.example.com", Role::Owner).await;
    let mut tx = TenantTx::begin(
        &database.app,
        Scope::Member {
            tenant: a,
            user: owner,
            role: Role::Owner,
        },
    )
    .await
    .unwrap();
    for days in 1..=55 {
        store::retention::set_days(&mut tx, days).await.unwrap();
    }
    tx.commit().await.unwrap();

    let mut browser = Browser::new(&addr);
    sign_in(&mut browser, "owner@acme.example.com", PASSWORD).await;
    let page = browser.get("/app/audit").await;
    assert_eq!(page.status, 200);
    // tenant.create, member.add and 55 retention changes.
    assert!(
        page.body.contains("Chain verified: all 57 entries"),
        "{}",
        page.body
    );
    assert_eq!(
        page.body.matches("<code>retention.set</code>").count(),
        50,
        "a page holds 50"
    );
    assert!(
        page.body.contains(r#"href="/app/audit?before=8""#),
        "older entries link"
    );
    let older = browser.get("/app/audit?before=8").await;
    assert_eq!(older.body.matches("<tr><td>").count(), 7);
    assert!(older.body.contains("<code>tenant.create</code>"));
    assert!(!older.body.contains("Older entries"));

    // Filters narrow, and carry into the export link.
    let filtered = browser.get("/app/audit?action=member.&actor=system").await;
    assert_eq!(filtered.body.matches("<tr><td>").count(), 1);
    assert!(filtered.body.contains("<code>member.add</code>"));
    assert!(
        filtered
            .body
            .contains(r#"href="/app/audit.csv?action=member.&#38;actor=system""#),
        "{}",
        filtered.body
    );
    let by_user = browser.get("/app/audit?actor=user").await;
    assert!(!by_user.body.contains("member.add"));
    let odd = browser.get("/app/audit?action=%25&actor=nobody").await;
    assert!(
        odd.body.contains("No entries match."),
        "a % is literal, an unknown actor ignored"
    );

    // CSV: every entry (streamed), RFC 4180, formulas neutralised.
    let csv = browser.get("/app/audit.csv").await;
    assert_eq!(csv.status, 200);
    assert_eq!(csv.header("content-type"), Some("text/csv; charset=utf-8"));
    assert_eq!(
        csv.header("content-disposition"),
        Some(r#"attachment; filename="audit-log.csv""#)
    );
    let lines: Vec<&str> = csv
        .body
        .split("\r\n")
        .filter(|line| !line.is_empty())
        .collect();
    assert_eq!(
        lines[0],
        "seq,occurred_at,actor_type,actor_id,action,target,details,client_addr"
    );
    assert_eq!(lines.len(), 58);
    assert!(lines[57].starts_with("1,"), "oldest last");
    assert!(
        lines[57].contains(",cli,'=SUM(1+1),tenant.create,"),
        "{}",
        lines[57]
    );
    assert!(
        lines[57].contains(r#""{""#),
        "JSON details with doubled quotes: {}",
        lines[57]
    );

    // Viewers and operators have no audit log.
    member(&database, a, "viewer@acme.example.com", Role::Viewer).await;
    let mut as_viewer = Browser::new(&addr);
    sign_in(&mut as_viewer, "viewer@acme.example.com", PASSWORD).await;
    assert_eq!(as_viewer.get("/app/audit").await.status, 403);
    assert_eq!(as_viewer.get("/app/audit.csv").await.status, 403);

    // An entry edited behind the triggers' back: the page says the chain is broken.
    let mut admin = test_database.admin().await;
    let mut tampering = admin.begin().await.unwrap();
    sqlx::raw_sql("set local session_replication_role = replica")
        .execute(&mut *tampering)
        .await
        .unwrap();
    sqlx::query("update audit.log set target = 'someone else' where tenant_id = $1 and seq = 3")
        .bind(a.as_uuid())
        .execute(&mut *tampering)
        .await
        .unwrap();
    tampering.commit().await.unwrap();
    let page = browser.get("/app/audit").await;
    assert!(
        page.body
            .contains("Chain verification failed: Hash { seq: 3 }"),
        "{}",
        page.body
    );
}

fn invitation_ids(body: &str) -> Vec<String> {
    body.match_indices(r#"action="/app/settings/invitations/"#)
        .map(|(index, _)| {
            let start = index + r#"action="/app/settings/invitations/"#.len();
            let end = body[start..].find('/').unwrap() + start;
            body[start..end].to_owned()
        })
        .collect()
}

/// Invites `email` as `role` through the settings page; returns the logged link.
async fn invite(browser: &mut Browser, email: &str, role: &str) -> String {
    let page = browser
        .submit(
            "/app/settings",
            "/app/settings/invitations",
            &[("email", email), ("role", role)],
        )
        .await;
    assert_eq!(
        page.header("location"),
        Some("/app/settings?done=invited#members-heading")
    );
    let settings = browser.get("/app/settings").await;
    assert!(
        settings.body.contains(&format!("{email} as {role}")),
        "listed as open"
    );
    let id = invitation_ids(&settings.body).into_iter().next().unwrap();
    crate::auth::logged_link("invitation link", &id, "/auth/invitation/").expect("link logged")
}

#[tokio::test]
async fn invitations_bring_new_and_existing_accounts_in_once() {
    crate::auth::server_log();
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let a = crate::api::tenant(&database, "Acme").await;
    let b = crate::api::tenant(&database, "Globex").await;
    member(&database, a, "owner@acme.example.com", Role::Owner).await;
    member(&database, a, "admin@acme.example.com", Role::Admin).await;
    member(&database, b, "bob@example.com", Role::Owner).await;
    let mut owner = Browser::new(&addr);
    sign_in(&mut owner, "owner@acme.example.com", PASSWORD).await;

    // A new person: the link offers an account, which joins with the invited role.
    let link = invite(&mut owner, "grace@example.com", "admin").await;
    let mut grace = Browser::new(&addr);
    let page = grace.get(&link).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Join Acme") && page.body.contains("<strong>admin</strong>"));
    assert!(page.body.contains("Create account and join"));
    let joined = grace
        .submit(
            &link,
            &link,
            &[("display_name", "Grace"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(joined.status, 303, "{}", joined.body);
    let overview = grace.get("/app/overview").await;
    assert!(
        crate::auth::in_workspace(&overview.body, "Acme")
            && overview.body.contains("grace@example.com · admin")
    );
    // Once only.
    let again = Browser::new(&addr).get(&link).await;
    assert_eq!(again.status, 404);
    assert!(
        again
            .body
            .contains("expired, was already used, or was withdrawn")
    );

    // An admin cannot invite an owner.
    let mut admin = Browser::new(&addr);
    sign_in(&mut admin, "admin@acme.example.com", PASSWORD).await;
    let refused = admin
        .submit(
            "/app/settings",
            "/app/settings/invitations",
            &[("email", "x@example.com"), ("role", "owner")],
        )
        .await;
    assert_eq!(
        refused.header("location"),
        Some("/app/settings?refused=invitation#members-heading")
    );

    // An existing account signs in from the link and comes back to accept.
    let link = invite(&mut admin, "bob@example.com", "viewer").await;
    let mut bob = Browser::new(&addr);
    let page = bob.get(&link).await;
    assert!(page.body.contains("Sign in to accept"));
    let signed_in = bob
        .submit(
            &format!("/auth?next={link}"),
            "/auth/sign-in",
            &[
                ("email", "bob@example.com"),
                ("password", PASSWORD),
                ("next", &link),
            ],
        )
        .await;
    assert_eq!(signed_in.header("location"), Some(link.as_str()));
    // Someone else signed in cannot use it.
    let mut grace_tries = grace.clone();
    let page = grace_tries.get(&link).await;
    assert!(page.body.contains("signed in with another address"));
    let stolen = grace_tries.submit(&link, &link, &[]).await;
    assert_eq!(stolen.status, 404);
    let page = bob.get(&link).await;
    assert!(page.body.contains("Join the workspace"));
    let accepted = bob.submit(&link, &link, &[]).await;
    assert_eq!(accepted.header("location"), Some("/app"));
    let overview = bob.get("/app/overview").await;
    assert!(
        crate::auth::in_workspace(&overview.body, "Acme"),
        "switched to the new workspace"
    );
    assert!(
        overview.body.contains("Globex (owner)"),
        "and keeps the old one"
    );
    assert_eq!(
        role_in(
            &database,
            a,
            store::accounts::credentials(
                &database.app,
                &domain::Email::parse("bob@example.com").unwrap()
            )
            .await
            .unwrap()
            .unwrap()
            .user_id
        )
        .await,
        Role::Viewer
    );

    // A withdrawn invitation no longer works.
    let link = invite(&mut owner, "carol@example.com", "operator").await;
    let settings = owner.get("/app/settings").await;
    let id = invitation_ids(&settings.body).into_iter().next().unwrap();
    let withdrawn = owner
        .submit(
            "/app/settings",
            &format!("/app/settings/invitations/{id}/revoke"),
            &[],
        )
        .await;
    assert_eq!(
        withdrawn.header("location"),
        Some("/app/settings?done=withdrawn#members-heading")
    );
    assert_eq!(Browser::new(&addr).get(&link).await.status, 404);
    assert!(invitation_ids(&owner.get("/app/settings").await.body).is_empty());

    // A forged link: another tenant's id in it finds nothing.
    let forged = link.replacen(
        &a.as_uuid().simple().to_string(),
        &b.as_uuid().simple().to_string(),
        1,
    );
    assert_ne!(forged, link);
    assert_eq!(Browser::new(&addr).get(&forged).await.status, 404);
}

/// The app's own chrome: the sidebar with the workspace, the navigation and the user menu (its
/// account link and sign-out form), and not the public site's top bar.
fn assert_app_shell(page: &crate::browser::Page, workspace: &str, what: &str) {
    assert!(
        page.body.contains(r#"<div class="app-layout">"#),
        "{what}: no app layout"
    );
    assert!(
        page.body.contains(r#"<aside class="sidebar""#),
        "{what}: no sidebar"
    );
    assert!(
        page.body
            .contains(&format!(r#"<p class="workspace-name">{workspace}</p>"#)),
        "{what}: the workspace's name"
    );
    assert!(
        page.body.contains(r#"<a href="/app/overview""#),
        "{what}: the navigation"
    );
    assert!(
        page.body.contains(r#"<details class="user-menu">"#)
            && page.body.contains(r#"<a href="/app/settings/account""#)
            && page.body.contains(r#"action="/auth/sign-out""#),
        "{what}: the user menu"
    );
    assert!(
        !page.body.contains(r#"<header class="topbar">"#),
        "{what}: the site's top bar inside the app"
    );
}

/// A 403 or a 404 anywhere under `/app`, from a handler, an extractor or an unknown path, is
/// drawn inside the app's shell with a way back to the overview; outside the app, or signed
/// out, the site's error page stays.
#[tokio::test]
async fn an_app_403_or_404_keeps_the_app_shell() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let a = crate::api::tenant(&database, "Acme").await;
    member(&database, a, "viewer@acme.example.com", Role::Viewer).await;
    let mut browser = Browser::new(&addr);
    sign_in(&mut browser, "viewer@acme.example.com", PASSWORD).await;
    let overview = browser.get("/app/overview").await;
    assert_app_shell(&overview, "Acme", "the overview");

    let forbidden = [
        // The permission check of a member's page.
        "/app/settings",
        "/app/audit",
        // The staff extractor.
        "/app/global",
    ];
    for path in forbidden {
        let page = browser.get(path).await;
        assert_eq!(page.status, 403, "{path}");
        assert_designed_html(&page, path);
        assert_app_shell(&page, "Acme", path);
        assert!(
            page.body.contains("You do not have access to this page"),
            "{path}"
        );
        assert!(
            page.body.contains(
                r#"<a class="button button-primary" href="/app/overview">Back to the overview</a>"#
            ),
            "{path}: the way back"
        );
    }
    let missing = [
        "/app/no-such-page".to_owned(),
        format!("/app/explore/devices/{}", uuid::Uuid::new_v4()),
    ];
    for path in &missing {
        let page = browser.get(path).await;
        assert_eq!(page.status, 404, "{path}");
        assert_designed_html(&page, path);
        assert_app_shell(&page, "Acme", path);
        assert!(page.body.contains("Page not found"), "{path}");
        assert!(
            page.body
                .contains("the pages you can open are in the navigation"),
            "{path}: the helpful message"
        );
        assert!(
            page.body
                .contains(r#"href="/app/overview">Back to the overview</a>"#)
        );
    }
    // A form the handler finds nothing for.
    let unknown = browser
        .submit("/app/overview", "/app/sessions/no-such-session/end", &[])
        .await;
    assert_eq!(unknown.status, 404);
    assert_app_shell(&unknown, "Acme", "an unknown session");
    assert_eq!(unknown.csrf(), overview.csrf(), "the sign-out form's token");

    // Outside the app the site's own 404 page, with its top bar.
    let public = browser.get("/no-such-page").await;
    assert_eq!(public.status, 404);
    assert!(public.body.contains(r#"<header class="topbar">"#));
    assert!(!public.body.contains(r#"<div class="app-layout">"#));
    // Signed out there is no app to keep: the site's 404 page.
    let mut anonymous = Browser::new(&addr);
    let page = anonymous.get("/app/no-such-page").await;
    assert_eq!(page.status, 404);
    assert!(!page.body.contains(r#"<div class="app-layout">"#));
    assert!(page.body.contains(r#"<header class="topbar">"#));
}

/// No tenant role is ever offered the tenant registry or another operations page; staff see
/// them under "Operations" after their workspace's pages, and the account page is in the user
/// menu of both.
#[tokio::test]
async fn a_customers_navigation_has_no_tenants_entry_and_staff_see_operations() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let a = crate::api::tenant(&database, "Acme").await;
    for role in Role::TENANT_ROLES {
        let email = format!("{role}@acme.example.com");
        member(&database, a, &email, role).await;
        let mut browser = Browser::new(&addr);
        sign_in(&mut browser, &email, PASSWORD).await;
        let overview = browser.get("/app/overview").await;
        assert_eq!(overview.status, 200, "{role}");
        assert_app_shell(&overview, "Acme", &format!("{role}'s overview"));
        for (href, _) in web::OPS_PAGES {
            assert!(
                !overview.body.contains(&format!(r#"href="{href}""#)),
                "{role}'s navigation offers {href}"
            );
        }
        assert!(
            !overview.body.contains(">Tenants<"),
            "{role}: a Tenants entry"
        );
        assert!(
            !overview.body.contains(">Operations<"),
            "{role}: operations"
        );
    }

    // Staff who are also an owner of a workspace: its pages, then the operations pages.
    member(&database, a, "ops-owner@acme.example.com", Role::Owner).await;
    store::accounts::grant_staff(
        &database.app,
        store::Actor::Cli("test".into()),
        &domain::Email::parse("ops-owner@acme.example.com").unwrap(),
    )
    .await
    .unwrap();
    let mut staff = Browser::new(&addr);
    sign_in(&mut staff, "ops-owner@acme.example.com", PASSWORD).await;
    let overview = staff.get("/app/overview").await;
    assert_eq!(overview.status, 200);
    assert_app_shell(&overview, "Acme", "staff's overview");
    let operations = overview
        .body
        .find(">Operations<")
        .expect("staff see the operations section");
    assert!(
        overview.body[..operations].contains(r#"<a href="/app/settings""#),
        "the workspace's pages come first"
    );
    for (href, label) in web::OPS_PAGES {
        let entry = format!(r#"<a href="{href}">{label}</a>"#);
        let at = overview
            .body
            .find(&entry)
            .unwrap_or_else(|| panic!("staff navigation lacks {entry}"));
        assert!(at > operations, "{href} is under Operations");
    }
    let registry = staff.get("/app/tenants").await;
    assert_eq!(registry.status, 200);
    assert!(
        registry
            .body
            .contains(r#"<a href="/app/tenants" aria-current="page">Tenants</a>"#),
        "the registry is the current page"
    );
}

/// The text a reader sees: the page without its tags, its attributes, and the ids kept one
/// click away (`<details class="ref-id">`).
fn visible_text(body: &str) -> String {
    let mut text = String::new();
    let mut rest = body;
    while let Some(start) = rest.find(r#"<details class="ref-id">"#) {
        text.push_str(&rest[..start]);
        let end = rest[start..].find("</details>").unwrap() + start + "</details>".len();
        rest = &rest[end..];
    }
    text.push_str(rest);
    let mut visible = String::new();
    let mut in_tag = false;
    for character in text.chars() {
        match character {
            '<' => in_tag = true,
            '>' => in_tag = false,
            _ if !in_tag => visible.push(character),
            _ => {}
        }
    }
    visible
}

/// The sources page and the audit log name what they show (a source by its name, an actor by
/// their email, the workspace by its name) with the id one click away, and show an entry's
/// details as a key and value list rather than JSON.
#[tokio::test]
async fn the_sources_page_and_the_audit_log_show_names_not_uuids() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let a = crate::api::tenant(&database, "Acme").await;
    let owner = member(&database, a, "owner@acme.example.com", Role::Owner).await;
    // The owner creates a source: the log records them and the source by id.
    let mut tx = TenantTx::begin(
        &database.app,
        Scope::Member {
            tenant: a,
            user: owner,
            role: Role::Owner,
        },
    )
    .await
    .unwrap();
    let (source, _) = store::sources::create_source(&mut tx, "acme-charging-db", "simulator")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let source_id = source.source_id.to_string();
    let mut admin = test_database.admin().await;
    sqlx::query(
        "insert into pipeline.unmapped_tables (tenant_id, source_id, schema_name, table_name, \
             events, first_seen_at, last_seen_at) \
         values ($1, $2, 'public', 'gadgets', 7, now(), now())",
    )
    .bind(a.as_uuid())
    .bind(source.source_id.as_uuid())
    .execute(&mut admin)
    .await
    .unwrap();
    drop(admin);
    let mut browser = Browser::new(&addr);
    sign_in(&mut browser, "owner@acme.example.com", PASSWORD).await;

    let sources = browser.get("/app/data-sources").await;
    assert_eq!(sources.status, 200);
    let shown = visible_text(&sources.body);
    assert!(shown.contains("acme-charging-db"), "the source's name");
    assert!(!shown.contains(&source_id), "the source's id as text");
    let named =
        format!(r#"<span class="ref" title="source id {source_id}">acme-charging-db</span>"#);
    assert_eq!(
        sources.body.matches(&named).count(),
        2,
        "the source and its unmapped table, each named with the id in its title"
    );
    assert!(
        sources
            .body
            .contains(&format!("<code>{source_id}</code></details>")),
        "the id one click away"
    );

    let audit = browser.get("/app/audit").await;
    assert_eq!(audit.status, 200);
    let shown = visible_text(&audit.body);
    for id in [source_id.clone(), owner.to_string(), a.to_string()] {
        assert!(!shown.contains(&id), "an id as text: {id}");
    }
    // source.create: the owner by email, the source by name, its details as a list.
    assert!(audit.body.contains(&format!(
        r#"<span class="ref" title="member id {owner}">owner@acme.example.com</span>"#
    )));
    assert!(audit.body.contains(&named), "the created source by name");
    assert!(audit.body.contains(
        r#"<dl class="kv"><dt>name</dt><dd>acme-charging-db</dd><dt>kind</dt><dd>simulator</dd></dl>"#
    ) || audit.body.contains(
        r#"<dl class="kv"><dt>kind</dt><dd>simulator</dd><dt>name</dt><dd>acme-charging-db</dd></dl>"#
    ), "source.create's details as a list");
    // tenant.create: the workspace by name, by the operator who created it.
    assert!(audit.body.contains(&format!(
        r#"<span class="ref" title="workspace id {a}">Acme</span>"#
    )));
    assert!(audit.body.contains("operator: test"));
    // member.add: the member by email.
    assert!(audit.body.contains(&format!(
        r#"<td class="small audit-target"><span class="ref" title="member id {owner}">owner@acme.example.com</span>"#
    )));
    assert!(!audit.body.contains("{&quot;"), "raw JSON details");
    assert!(!shown.contains("{\""), "raw JSON details");
}
