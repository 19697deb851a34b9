//! The web app in a real headless Chromium (Debian's `chromium` and `chromium-driver`, driven
//! over WebDriver): the stylesheet and htmx load under the CSP, the `__Host-` cookies work on the
//! local address, the contact form swaps in place with htmx, sign-up lands in the app, the first
//! Tab reaches the skip link, every public page loads with nothing in the browser's console (read
//! back from chromedriver's log) and fits a phone's width, sign-out signs out, and an owner
//! invites a viewer who joins through the link and is refused settings, and a promoted drift
//! field becomes a typed column in the explorer once the pipeline rebuilds. Screenshots go to
//! `$TRIBUTARY_SCREENSHOT_DIR` for CI to keep as artifacts (the harness: `test_support::browser`).

use std::time::Duration;

use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::key::Key;
use serde_json::{Value, json};
use test_support::TestDatabase;
use test_support::browser::{
    self, Client, Locator, click, console_errors, fill, poll, screenshot, script, start_chromium,
    text_of, wait_for_console_errors, wait_for_element, wait_for_text,
};

use crate::serve;

#[tokio::test]
async fn the_site_and_sign_up_work_in_a_real_browser() {
    crate::auth::server_log(); // the sign-up link goes to the log (no mail server here)
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let (_driver, client) = start_chromium().await;
    let base = format!("http://{addr}");

    // Home: styled by the one stylesheet, htmx loaded, nothing injected inline, under the CSP.
    client.goto(&format!("{base}/")).await.unwrap();
    assert_eq!(
        script(
            &client,
            "return getComputedStyle(document.querySelector('.button-primary')).backgroundColor"
        )
        .await,
        json!("rgb(11, 94, 126)"),
        "the stylesheet applies"
    );
    assert_eq!(
        script(&client, "return window.htmx && htmx.version").await,
        json!("2.0.11")
    );
    assert_eq!(
        script(&client, "return document.querySelectorAll('style').length").await,
        json!(0)
    );
    screenshot(&client, "home").await;

    // The first Tab reaches the skip link.
    let tab = KeyActions::new("keyboard".into())
        .then(KeyAction::Down {
            value: Key::Tab.into(),
        })
        .then(KeyAction::Up {
            value: Key::Tab.into(),
        });
    client.perform_actions(tab).await.unwrap();
    assert_eq!(
        script(&client, "return document.activeElement.className").await,
        json!("skip-link")
    );

    // The pricing cards stack on a phone (every page's width: see the next test).
    client.set_window_size(390, 844).await.unwrap();
    client.goto(&format!("{base}/pricing")).await.unwrap();
    screenshot(&client, "pricing-phone").await;
    client.set_window_size(1280, 900).await.unwrap();

    // The contact form: htmx posts it (with its anti-forgery token) and swaps the answer in place.
    client.goto(&format!("{base}/contact")).await.unwrap();
    fill(&client, "#contact-name", "Ada Lovelace").await;
    fill(&client, "#contact-email", "ada@example.com").await;
    fill(&client, "#contact-company", "Analytical Engines").await;
    script(&client, "window.__notReloaded = true; return null").await;
    click(&client, "form.form button[type=submit]").await;
    wait_for_text(&client, "Thank you, we have your request.").await;
    assert_eq!(
        script(&client, "return window.__notReloaded === true").await,
        json!(true),
        "swapped in place by htmx, not a full page load"
    );
    screenshot(&client, "contact-sent").await;
    let stored = store::contact::list(&database.app, store::Actor::System("test"), 10)
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);

    // Sign-up, confirmed by its link, lands in the app: the __Host- cookies work on the local
    // address.
    client
        .goto(&format!("{base}/auth?mode=sign-up"))
        .await
        .unwrap();
    fill(&client, "#signup-name", "Ada Lovelace").await;
    fill(&client, "#signup-email", "ada@example.com").await;
    fill(&client, "#signup-password", crate::auth::PASSWORD).await;
    fill(&client, "#signup-workspace", "Analytical Engines").await;
    fill(&client, "#signup-industry", "energy").await;
    fill(&client, "#signup-region", "eu-west").await;
    screenshot(&client, "sign-up").await;
    click(&client, "form.form button[type=submit]").await;
    confirm_sign_up(
        &client,
        &base,
        &database,
        "ada@example.com",
        "Analytical Engines",
        true,
    )
    .await;
    assert_eq!(client.current_url().await.unwrap().path(), "/app/overview");
    assert_eq!(
        script(&client, "return document.cookie").await,
        json!(""),
        "every cookie is HttpOnly"
    );
    screenshot(&client, "app-overview").await;
    client.set_window_size(390, 844).await.unwrap();
    screenshot(&client, "app-overview-phone").await;
    client.set_window_size(1280, 900).await.unwrap();

    // Signing out from the app's user menu ends the session.
    sign_out_from_the_user_menu(&client).await;
    wait_for_text(&client, "You are signed out.").await;
    client.goto(&format!("{base}/app/overview")).await.unwrap();
    assert_eq!(client.current_url().await.unwrap().path(), "/auth");

    // A page that does not exist, in the design.
    client.goto(&format!("{base}/no-such-page")).await.unwrap();
    wait_for_text(&client, "Page not found").await;
    screenshot(&client, "not-found").await;
    client.close().await.unwrap();
}

/// After the sign-up form: sees the check-your-email page, opens the link from the server log,
/// confirms, and waits for the app. `screenshots` keeps the two new pages.
async fn confirm_sign_up(
    client: &Client,
    base: &str,
    database: &store::Database,
    email: &str,
    workspace: &str,
    screenshots: bool,
) {
    wait_for_text(client, "Check your email").await;
    if screenshots {
        screenshot(client, "sign-up-check-email").await;
    }
    let link = crate::auth::logged_sign_up_link(database, email)
        .await
        .expect("the sign-up link is in the server log");
    client.goto(&format!("{base}{link}")).await.unwrap();
    wait_for_text(client, &format!("Create {workspace}")).await;
    if screenshots {
        screenshot(client, "sign-up-confirm").await;
    }
    click(client, "form.form button[type=submit]").await;
    wait_for_text(
        client,
        &format!(r#"<p class="workspace-name">{workspace}</p>"#),
    )
    .await;
}

/// Signs up in the browser with a new workspace, confirms through the link and waits for the app.
async fn sign_up(
    client: &Client,
    base: &str,
    database: &store::Database,
    email: &str,
    workspace: &str,
) {
    client
        .goto(&format!("{base}/auth?mode=sign-up"))
        .await
        .unwrap();
    fill(client, "#signup-name", "Charles Babbage").await;
    fill(client, "#signup-email", email).await;
    fill(client, "#signup-password", crate::auth::PASSWORD).await;
    fill(client, "#signup-workspace", workspace).await;
    fill(client, "#signup-industry", "energy").await;
    fill(client, "#signup-region", "eu-west").await;
    click(client, "form.form button[type=submit]").await;
    confirm_sign_up(client, base, database, email, workspace, false).await;
}

/// Opens the app's user menu and signs out from it.
async fn sign_out_from_the_user_menu(client: &Client) {
    click(client, ".user-menu summary").await;
    screenshot(client, "app-user-menu").await;
    click(client, ".user-menu button[type=submit]").await;
}

#[tokio::test]
async fn an_invited_viewer_joins_and_is_refused_settings_in_a_real_browser() {
    crate::auth::server_log(); // the invitation link goes to the log (no mail server here)
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let (_driver, client) = start_chromium().await;
    let base = format!("http://{addr}");

    // The owner signs up, opens settings and invites a viewer.
    sign_up(
        &client,
        &base,
        &database,
        "owner@babbage.example.com",
        "Difference Engines",
    )
    .await;
    client.goto(&format!("{base}/app/settings")).await.unwrap();
    fill(&client, "#invite-email", "viewer@babbage.example.com").await;
    script(
        &client,
        "document.querySelector('#invite-role').value = 'viewer'; return null",
    )
    .await;
    click(&client, "form.invite-form button[type=submit]").await;
    wait_for_text(&client, "Invitation sent.").await;
    screenshot(&client, "settings-invitation-sent").await;
    let link = crate::auth::logged_link("invitation link", "", "/auth/invitation/")
        .expect("the invitation link is in the server log");

    // Signed out, the invitee opens the link, creates an account and joins as a viewer.
    sign_out_from_the_user_menu(&client).await;
    wait_for_text(&client, "You are signed out.").await;
    client.goto(&format!("{base}{link}")).await.unwrap();
    wait_for_text(&client, "Join Difference Engines").await;
    fill(&client, "#invite-name", "Ada Viewer").await;
    fill(&client, "#invite-password", crate::auth::PASSWORD).await;
    screenshot(&client, "invitation-accept").await;
    click(&client, "form.form button[type=submit]").await;
    wait_for_text(
        &client,
        r#"<p class="workspace-name">Difference Engines</p>"#,
    )
    .await;
    let navigation = script(
        &client,
        "return [...document.querySelectorAll('.sidenav a')].map(a => a.getAttribute('href'))",
    )
    .await;
    let settings: Vec<&str> = navigation
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .filter(|href| href.starts_with("/app/settings"))
        .collect();
    assert!(
        settings.is_empty(),
        "a viewer's navigation offers settings: {navigation}"
    );
    screenshot(&client, "viewer-overview").await;

    // The viewer sees the app, but settings are the designed 403 page.
    client.goto(&format!("{base}/app/settings")).await.unwrap();
    wait_for_text(&client, "You do not have access to this page").await;
    screenshot(&client, "viewer-settings-403").await;
    let roles: Vec<(String, String)> = sqlx::query_as(
        "select u.email, m.role from control.members m join control.users u using (user_id) \
         order by u.email",
    )
    .fetch_all(&mut test_database.admin().await)
    .await
    .unwrap();
    assert_eq!(
        roles,
        [
            ("owner@babbage.example.com".to_owned(), "owner".to_owned()),
            ("viewer@babbage.example.com".to_owned(), "viewer".to_owned()),
        ]
    );
    // Ending the session stops the browser; killing only chromedriver would leave it running.
    client.close().await.unwrap();
}

#[tokio::test]
async fn an_admin_sees_the_masking_preview_change_as_they_type_and_the_overview_update_live() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let tenant = crate::api::tenant(&database, "Acme").await;
    crate::auth::member(
        &database,
        tenant,
        "admin@acme.example.com",
        domain::Role::Admin,
    )
    .await;
    let (_driver, client) = start_chromium().await;
    let base = format!("http://{addr}");

    client.goto(&format!("{base}/auth")).await.unwrap();
    fill(&client, "#signin-email", "admin@acme.example.com").await;
    fill(&client, "#signin-password", crate::auth::PASSWORD).await;
    click(&client, "form.form button[type=submit]").await;
    wait_for_text(&client, r#"<p class="workspace-name">Acme</p>"#).await;

    // The masking page: no rules, the example sample shown as is.
    client
        .goto(&format!("{base}/app/settings/masking"))
        .await
        .unwrap();
    wait_for_text(&client, "Masking policies").await;
    assert_eq!(
        script(&client, "return !!(window.htmx && htmx.version)").await,
        json!(true)
    );
    wait_for_element(&client, "#preview-after", "the unmasked example", |text| {
        text.contains("ada@example.com")
    })
    .await;
    script(&client, "window.__notReloaded = true; return null").await;

    // Typing a rule updates the preview in place: a hash, then a redaction.
    fill(&client, "#rule-path", "email").await;
    wait_for_element(&client, "#preview-after", "a hashed email", |text| {
        text.contains("hmac-sha256:") && !text.contains("ada@example.com")
    })
    .await;
    let rules = text_of(&client, "#preview-rules").await.unwrap();
    assert!(rules.contains("hash email (every table)"), "{rules}");
    client
        .find(Locator::Css("#rule-action"))
        .await
        .unwrap()
        .select_by_value("redact")
        .await
        .unwrap();
    wait_for_element(&client, "#preview-after", "a redacted email", |text| {
        text.contains("\"email\": \"[redacted]\"")
    })
    .await;
    assert_eq!(
        script(&client, "return window.__notReloaded === true").await,
        json!(true),
        "the preview was swapped in by htmx, not a page load"
    );
    script(
        &client,
        "document.querySelector('#masking-preview').scrollIntoView(); return null",
    )
    .await;
    screenshot(&client, "masking-preview").await;

    // Saving adds the rule; the edge's policy now holds it.
    click(&client, "#rule-form button.button-primary").await;
    wait_for_text(&client, "Rule added.").await;
    let mut tx = crate::api::owner(&database, tenant).await;
    let rules = store::masking::list(&mut tx).await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(
        rules,
        [store::masking::MaskingRule::every_table("email", "redact")]
    );
    screenshot(&client, "masking-saved").await;

    // The overview's event counts follow new events without a reload (htmx SSE extension).
    crate::masking::bronze_event(
        &database,
        tenant,
        ("public", "chargers"),
        3,
        json!({"key": {"id": 1}, "after": {"id": 1}}),
    )
    .await;
    client.goto(&format!("{base}/app/overview")).await.unwrap();
    wait_for_element(&client, "#events-last-hour", "1", |text| text == "1").await;
    script(&client, "window.__notReloaded = true; return null").await;
    for _ in 0..2 {
        crate::masking::bronze_event(
            &database,
            tenant,
            ("public", "sessions"),
            0,
            json!({"key": {"id": 2}, "after": {"id": 2}}),
        )
        .await;
    }
    wait_for_element(&client, "#events-last-hour", "3", |text| text == "3").await;
    assert_eq!(
        text_of(&client, "#last-event-table").await.as_deref(),
        Some("public.sessions")
    );
    assert_eq!(
        script(&client, "return window.__notReloaded === true").await,
        json!(true),
        "updated live, not by a page load"
    );
    screenshot(&client, "overview-live").await;
    client.close().await.unwrap();
}

/// The `data-points` of the dashboard's panels as the browser has them now.
async fn sign_in_as(client: &Client, base: &str, email: &str) {
    browser::sign_in_as(client, base, email, crate::auth::PASSWORD).await;
    wait_for_text(client, r#"<p class="workspace-name">Acme</p>"#).await;
}

#[tokio::test]
async fn a_viewer_sees_charts_changes_the_range_and_gets_new_points_live_in_a_real_browser() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let tenant = crate::api::tenant(&database, "Acme").await;
    crate::auth::member(
        &database,
        tenant,
        "viewer@acme.example.com",
        domain::Role::Viewer,
    )
    .await;
    crate::auth::member(
        &database,
        tenant,
        "admin@acme.example.com",
        domain::Role::Admin,
    )
    .await;
    let source = crate::api::source(&database, tenant).await;
    let mut admin = test_database.admin().await;
    crate::api::read_models(&mut admin, tenant, source, "acme").await;
    let (_driver, client) = start_chromium().await;
    let base = format!("http://{addr}");

    sign_in_as(&client, &base, "viewer@acme.example.com").await;
    client.goto(&format!("{base}/app/overview")).await.unwrap();
    wait_for_text(&client, "<h1>Overview</h1>").await;
    let points = browser::panel_points(&client).await;
    assert!(points.iter().any(|&points| points > 0), "{points:?}");
    // Hovering a bucket shows its time and value: each has a title over the plot.
    let hover = text_of(&client, ".ts-hover rect.band title").await.unwrap();
    assert!(hover.contains("42"), "{hover}");
    assert_eq!(
        script(
            &client,
            "return document.querySelectorAll('a[href$=\"/edit\"]').length"
        )
        .await,
        json!(0),
        "a viewer has no edit controls"
    );
    screenshot(&client, "dashboard-viewer").await;

    // The range selector: the last week, drawn over seven days.
    browser::choose_range(&client, "7d", "Last week").await;
    screenshot(&client, "dashboard-week").await;
    browser::choose_range(&client, "1h", "Last hour").await;

    // A reading lands: its point appears without a reload.
    script(&client, "window.__notReloaded = true; return null").await;
    crate::api::late_reading(&mut admin, tenant).await;
    poll(Duration::from_secs(15), async || {
        let points = browser::panel_points(&client).await;
        if points.contains(&2) {
            Ok(())
        } else {
            Err(format!("no panel gained the new point: {points:?}"))
        }
    })
    .await;
    assert_eq!(
        script(&client, "return window.__notReloaded === true").await,
        json!(true),
        "appended live, not by a page load"
    );
    screenshot(&client, "dashboard-live").await;
    assert_eq!(console_errors(&client).await, Vec::<String>::new());
    client.delete_all_cookies().await.unwrap();

    // An admin saves the default dashboard; its editor lists the panels and offers the keys.
    sign_in_as(&client, &base, "admin@acme.example.com").await;
    client.goto(&format!("{base}/app/overview")).await.unwrap();
    click(&client, "a[href='/app/dashboards/default/edit']").await;
    wait_for_text(&client, "Save as a dashboard").await;
    click(&client, "section[aria-labelledby='save-heading'] button").await;
    wait_for_text(&client, "<option value=\"temperature\"").await;
    screenshot(&client, "dashboard-edit").await;
    assert_eq!(console_errors(&client).await, Vec::<String>::new());
    client.close().await.unwrap();
}

/// The screenshot's name for a public page: `page-home`, `page-docs-prd`, `page-auth-mode-sign-up`.
fn page_name(path: &str) -> String {
    let words: Vec<&str> = path
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|word| !word.is_empty())
        .collect();
    match words.as_slice() {
        [] => "page-home".to_owned(),
        words => format!("page-{}", words.join("-")),
    }
}

#[tokio::test]
async fn every_public_page_loads_without_console_errors_in_a_real_browser() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database).await;
    let (_driver, client) = start_chromium().await;
    let base = format!("http://{addr}");

    // The check catches what it is for: on a real page under the real CSP, an asset that is not
    // there, an inline script the CSP refuses, an uncaught exception and a console.error.
    client.goto(&format!("{base}/")).await.unwrap();
    assert_eq!(console_errors(&client).await, Vec::<String>::new());
    script(
        &client,
        "const image = document.createElement('img'); \
         image.src = '/assets/does-not-exist.png'; \
         document.body.append(image); \
         const inline = document.createElement('script'); \
         inline.textContent = 'window.__inlineRan = true'; \
         document.body.append(inline); \
         setTimeout(() => { throw new Error('thrown by the page'); }, 0); \
         console.error('logged by the page'); \
         return null",
    )
    .await;
    let reported = wait_for_console_errors(
        &client,
        &[
            "/assets/does-not-exist.png - Failed to load resource: the server responded with a status of 404",
            "Content Security Policy",
            "thrown by the page",
            "logged by the page",
        ],
    )
    .await;
    assert_eq!(reported.len(), 4, "{reported:#?}");
    assert_eq!(
        script(&client, "return window.__inlineRan === true").await,
        json!(false),
        "the CSP kept the inline script from running"
    );

    // Every public page (the app's own list of them), on a desktop and on a phone: nothing in
    // the console, and no sideways scrolling on a 390 px screen.
    let pages = web::public_pages();
    assert!(pages.len() > 10 && pages.contains(&"/docs/prd".to_owned()));
    for path in &pages {
        client.goto(&format!("{base}{path}")).await.unwrap();
        screenshot(&client, &page_name(path)).await;
        let errors = console_errors(&client).await;
        assert!(errors.is_empty(), "{path} has console errors: {errors:#?}");
    }
    client.set_window_size(390, 844).await.unwrap();
    for path in &pages {
        client.goto(&format!("{base}{path}")).await.unwrap();
        // Wide diagrams and tables scroll inside their own box, not the page. On failure, the
        // innermost elements that stick out say what to fix.
        let overflow = script(
            &client,
            "const width = document.documentElement.clientWidth; \
             const wide = [...document.body.querySelectorAll('*')] \
                 .filter(e => e.getBoundingClientRect().right > width + 1) \
                 .filter(e => !(e.parentElement.getBoundingClientRect().right > width + 1)) \
                 .slice(0, 5) \
                 .map(e => e.tagName + '.' + e.className + ': ' + e.textContent.slice(0, 80)); \
             return [document.documentElement.scrollWidth - width, wide]",
        )
        .await;
        assert_eq!(
            overflow[0],
            json!(0),
            "{path} overflows a 390 px screen: {overflow}"
        );
        let errors = console_errors(&client).await;
        assert!(
            errors.is_empty(),
            "{path} on a phone has console errors: {errors:#?}"
        );
    }
    client.close().await.unwrap();
}

/// The drift inbox end to end: a device table's unclaimed field lands in the extras, an admin
/// promotes it on `/app/drift`, the pipeline's replay worker carries out the rebuild the
/// promotion recorded, and the explorer shows the field as the typed column.
#[tokio::test]
async fn promoting_a_drift_field_makes_it_a_typed_column_in_the_explorer() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let tenant = crate::api::tenant(&database, "Acme").await;
    crate::auth::member(
        &database,
        tenant,
        "admin@acme.example.com",
        domain::Role::Admin,
    )
    .await;
    let source = domain::SourceId::new_random();
    crate::drift::map_devices(&database, tenant, source).await;
    let event_time = time::OffsetDateTime::now_utc() - time::Duration::minutes(1);
    let millis = (event_time.unix_timestamp_nanos() / 1_000_000) as i64;
    store::service::bronze::insert(
        &database.service,
        &[store::service::bronze::BronzeRow {
            tenant,
            event_id: domain::EventId::derive(source, millis, domain::Lsn(16), 0),
            event_time,
            source,
            op: "insert".into(),
            schema_name: "public".into(),
            table_name: "devices".into(),
            lsn: 16,
            seq: 0,
            xid: None,
            payload: json!({
                "key": { "device_id": "d1" },
                "after": { "device_id": "d1", "name": "Charger one", "colour": "red" },
            })
            .to_string(),
        }],
    )
    .await
    .unwrap();
    pipeline::materializer::rebuild(&database.service, tenant)
        .await
        .unwrap();
    let mut tx = crate::api::owner(&database, tenant).await;
    let fields = store::drift::list(&mut tx).await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(fields.len(), 1, "{fields:?}");
    let drift_id = fields[0].drift_id;

    let (_driver, client) = start_chromium().await;
    let base = format!("http://{addr}");
    client.goto(&format!("{base}/auth")).await.unwrap();
    fill(&client, "#signin-email", "admin@acme.example.com").await;
    fill(&client, "#signin-password", crate::auth::PASSWORD).await;
    click(&client, "form.form button[type=submit]").await;
    wait_for_text(&client, r#"href="/app/drift""#).await;

    client
        .goto(&format!("{base}/app/explore/devices/d1"))
        .await
        .unwrap();
    wait_for_text(&client, "<code>colour</code>").await;

    client.goto(&format!("{base}/app/drift")).await.unwrap();
    wait_for_text(&client, "<code>colour</code>").await;
    screenshot(&client, "drift-inbox").await;
    client
        .find(Locator::Css(&format!("#promote-{drift_id}")))
        .await
        .unwrap()
        .select_by_value("model")
        .await
        .unwrap();
    click(
        &client,
        &format!(r#"tr[data-drift-id="{drift_id}"] form[action="/app/drift/promote"] button"#),
    )
    .await;
    wait_for_text(&client, "a rebuild is requested").await;
    assert!(client.source().await.unwrap().contains("No drift"));
    screenshot(&client, "drift-promoted").await;

    // The pipeline carries out the rebuild the promotion recorded.
    let bus = bus::EmbeddedBus::open(database.service.clone(), 2)
        .await
        .unwrap();
    let done = pipeline::replay::run_next(&database.service, &bus)
        .await
        .unwrap()
        .expect("the promotion recorded a rebuild");
    assert_eq!(
        (done.kind.as_str(), done.status.as_str()),
        ("rebuild", "done")
    );

    client
        .goto(&format!("{base}/app/explore/devices/d1"))
        .await
        .unwrap();
    wait_for_text(&client, "<dt>Model</dt><dd>red</dd>").await;
    let page = client.source().await.unwrap();
    // Gone from the extras; the source's own changes, further down, still name it as sent.
    let extras = &page[page.find("extras-heading").unwrap()..];
    let extras = &extras[..extras.find("history-heading").unwrap_or(extras.len())];
    assert!(!extras.contains("<code>colour</code>"), "{page}");
    screenshot(&client, "drift-explorer-column").await;
    assert_eq!(console_errors(&client).await, Vec::<String>::new());
}
