//! Dashboards as members use them: the overview draws charts with points from the read models,
//! the range selector moves the window, admins save and edit dashboards (audited), viewers see
//! them without edit controls and cannot change them, and another workspace's dashboard is not
//! found.

use domain::Role;
use test_support::TestDatabase;

use crate::auth::{member, signed_in};
use crate::serve;

/// The `data-points` of every panel figure on a page, in order.
fn panel_points(body: &str) -> Vec<u64> {
    let marker = r#"<figure class="card panel" data-points=""#;
    body.match_indices(marker)
        .map(|(start, _)| {
            let rest = &body[start + marker.len()..];
            rest[..rest.find('"').unwrap()].parse().unwrap()
        })
        .collect()
}

/// The dashboard id in an editor's address (`/app/dashboards/{id}/edit`).
fn edited_id(location: &str) -> String {
    location
        .strip_prefix("/app/dashboards/")
        .and_then(|rest| rest.strip_suffix("/edit"))
        .unwrap_or_else(|| panic!("not an editor: {location}"))
        .to_owned()
}

#[tokio::test]
async fn the_overview_charts_the_workspaces_own_keys_and_the_range_moves_the_window() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let acme = crate::api::tenant(&database, "Acme").await;
    member(&database, acme, "viewer@acme.example", Role::Viewer).await;
    member(&database, acme, "admin@acme.example", Role::Admin).await;
    let mut viewer = signed_in(&addr, "viewer@acme.example").await;
    let mut admin = signed_in(&addr, "admin@acme.example").await;

    // Nothing streamed yet: the empty state says what to do, and only to whom may do it.
    let empty = admin.get("/app/overview").await;
    assert_eq!(empty.status, 200);
    assert!(empty.body.contains("No metrics yet"), "{}", empty.body);
    assert!(empty.body.contains(
        r#"<a class="button button-primary" href="/app/data-sources">Pair a source</a>"#
    ));
    let empty = viewer.get("/app/overview").await;
    assert!(
        empty
            .body
            .contains("Ask an admin of this workspace to pair a source")
    );

    let source = crate::api::source(&database, acme).await;
    let mut connection = test_database.admin().await;
    crate::api::read_models(&mut connection, acme, source, "acme").await;
    drop(connection);

    let overview = viewer.get("/app/overview").await;
    assert_eq!(overview.status, 200);
    assert!(overview.body.contains("<h1>Overview</h1>"));
    let points = panel_points(&overview.body);
    assert!(!points.is_empty(), "{}", overview.body);
    assert!(
        points.iter().any(|&points| points > 0),
        "a chart with the seeded minute: {points:?}"
    );
    assert!(overview.body.contains(r#"<svg class="ts-chart""#));
    assert!(overview.body.contains("temperature"));
    assert!(
        overview.body.contains("<dt>Devices</dt><dd>1</dd>"),
        "{}",
        overview.body
    );
    assert!(overview.body.contains("<dt>Open sessions</dt><dd>1</dd>"));
    assert!(
        overview
            .body
            .contains(r#"aria-current="page">Last hour</a>"#),
        "the last hour is the default range"
    );
    // A viewer has no edit controls.
    assert!(!overview.body.contains("Edit dashboard"));
    assert!(
        overview
            .body
            .contains("sse-connect=\"/app/dashboards/default/live?range=1h\"")
    );

    // The last week: the window starts seven days back, and the link says so.
    let week = viewer.get("/app/overview?range=7d").await;
    assert_eq!(week.status, 200);
    assert!(week.body.contains(r#"aria-current="page">Last week</a>"#));
    let week_ago = (time::OffsetDateTime::now_utc() - time::Duration::days(7)).date();
    assert!(
        week.body.contains(&week_ago.to_string()),
        "the window begins {week_ago}"
    );
    // A custom range before any reading: the charts are there and say they are empty.
    let past = viewer
        .get("/app/overview?from=2020-01-01T00:00&to=2020-01-01T06:00")
        .await;
    assert_eq!(past.status, 200);
    assert!(panel_points(&past.body).iter().all(|&points| points == 0));
    assert!(past.body.contains("No readings in this range."));
    assert!(past.body.contains("2020-01-01"));
    // A range that is not one is refused, named, and the last hour shown instead.
    let wrong = viewer.get("/app/overview?range=2w").await;
    assert_eq!(wrong.status, 400);
    assert!(wrong.body.contains("range is one of 1h, 24h, 7d, 30d"));
    let backwards = viewer
        .get("/app/overview?from=2020-01-02T00:00&to=2020-01-01T00:00")
        .await;
    assert_eq!(backwards.status, 400);
    assert!(backwards.body.contains("from must be before to"));

    // The admin sees the way to change it.
    assert!(
        admin
            .get("/app/overview")
            .await
            .body
            .contains(r#"href="/app/dashboards/default/edit">Edit dashboard</a>"#)
    );
}

#[tokio::test]
async fn an_admin_saves_and_edits_a_dashboard_audited_a_viewer_cannot_and_another_workspace_never_finds_it()
 {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let acme = crate::api::tenant(&database, "Acme").await;
    let globex = crate::api::tenant(&database, "Globex").await;
    member(&database, acme, "admin@acme.example", Role::Admin).await;
    member(&database, acme, "viewer@acme.example", Role::Viewer).await;
    member(&database, acme, "operator@acme.example", Role::Operator).await;
    member(&database, globex, "admin@globex.example", Role::Admin).await;
    let source = crate::api::source(&database, acme).await;
    let mut connection = test_database.admin().await;
    crate::api::read_models(&mut connection, acme, source, "acme").await;
    let mut admin = signed_in(&addr, "admin@acme.example").await;
    let mut viewer = signed_in(&addr, "viewer@acme.example").await;
    let mut operator = signed_in(&addr, "operator@acme.example").await;
    let mut globex_admin = signed_in(&addr, "admin@globex.example").await;

    // Saved from the default one, then a table panel added.
    let created = admin
        .submit(
            "/app/dashboards/default/edit",
            "/app/dashboards",
            &[("name", "Plant floor"), ("from", "default")],
        )
        .await;
    assert_eq!(created.status, 303, "{}", created.body);
    let id = edited_id(created.header("location").unwrap());
    let editor = format!("/app/dashboards/{id}/edit");
    let panels = format!("/app/dashboards/{id}/panels");
    let added = admin
        .submit(
            &editor,
            &panels,
            &[
                ("title", "Hottest minute"),
                ("key", "temperature"),
                ("agg", "max"),
                ("step", "1m"),
                ("chart", "table"),
            ],
        )
        .await;
    assert_eq!(added.status, 303, "{}", added.body);
    // A panel without a key is refused, naming the field, and nothing is saved.
    let refused = admin
        .submit(
            &editor,
            &panels,
            &[("agg", "avg"), ("step", "1m"), ("chart", "line")],
        )
        .await;
    assert_eq!(refused.status, 422);
    assert!(refused.body.contains("key: choose a metric key"));
    let refused = admin
        .submit(
            &editor,
            &panels,
            &[
                ("key", "temperature"),
                ("agg", "median"),
                ("step", "1m"),
                ("chart", "line"),
            ],
        )
        .await;
    assert_eq!(refused.status, 422);
    assert!(refused.body.contains("aggregation: one of avg"));

    // The first saved dashboard is the overview, for every role.
    let overview = viewer.get("/app/overview").await;
    assert_eq!(overview.status, 200);
    assert!(
        overview.body.contains("<h1>Plant floor</h1>"),
        "{}",
        overview.body
    );
    assert!(overview.body.contains("Hottest minute"));
    assert!(
        overview.body.contains("<td>42</td>"),
        "the table panel's reading"
    );
    assert!(!overview.body.contains("Edit dashboard"));
    let panel_count = panel_points(&overview.body).len();

    // Moving the new last panel up, then removing it, is saved.
    let up = admin
        .submit(
            &editor,
            &format!("/app/dashboards/{id}/panels/{}/up", panel_count - 1),
            &[],
        )
        .await;
    assert_eq!(up.status, 303);
    let moved = viewer.get(&format!("/app/dashboards/{id}")).await;
    let hottest = moved.body.find("Hottest minute").unwrap();
    let figures: Vec<usize> = moved
        .body
        .match_indices("<figure class=\"card panel\"")
        .map(|(at, _)| at)
        .collect();
    assert!(
        figures[panel_count - 2] < hottest && hottest < figures[panel_count - 1],
        "the table panel is now second to last"
    );
    let removed = admin
        .submit(
            &editor,
            &format!("/app/dashboards/{id}/panels/{}/remove", panel_count - 2),
            &[],
        )
        .await;
    assert_eq!(removed.status, 303);
    let after = viewer.get(&format!("/app/dashboards/{id}")).await;
    assert!(!after.body.contains("Hottest minute"));
    assert_eq!(panel_points(&after.body).len(), panel_count - 1);

    // Every change is in the audit log, by the admin.
    let actions: Vec<(String, String)> = sqlx::query_as(
        "select action, target from audit.log where tenant_id = $1 \
         and action like 'dashboard.%' order by seq",
    )
    .bind(acme.as_uuid())
    .fetch_all(&mut connection)
    .await
    .unwrap();
    let expected: Vec<(String, String)> = [
        "dashboard.create",
        "dashboard.update",
        "dashboard.update",
        "dashboard.update",
    ]
    .into_iter()
    .map(|action| (action.to_owned(), id.clone()))
    .collect();
    assert_eq!(actions, expected);

    // A viewer and an operator may look, not change.
    for browser in [&mut viewer, &mut operator] {
        let page = browser
            .submit(
                &format!("/app/dashboards/{id}"),
                &panels,
                &[
                    ("key", "temperature"),
                    ("agg", "avg"),
                    ("step", "1m"),
                    ("chart", "line"),
                ],
            )
            .await;
        assert_eq!(page.status, 403);
        assert_eq!(browser.get(&editor).await.status, 403);
        let page = browser
            .submit("/app/overview", "/app/dashboards", &[("name", "Mine")])
            .await;
        assert_eq!(page.status, 403);
    }

    // Another workspace's admin finds nothing under Acme's id, and changes nothing.
    for path in [
        format!("/app/dashboards/{id}"),
        format!("/app/dashboards/{id}/live"),
        editor.clone(),
    ] {
        assert_eq!(globex_admin.get(&path).await.status, 404, "{path}");
    }
    for action in [
        panels.clone(),
        format!("/app/dashboards/{id}/rename"),
        format!("/app/dashboards/{id}/delete"),
        format!("/app/dashboards/{id}/panels/0/remove"),
    ] {
        let page = globex_admin
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
        assert_eq!(page.status, 404, "{action}");
    }
    assert!(
        !globex_admin
            .get("/app/overview")
            .await
            .body
            .contains("Plant floor")
    );

    // Renamed, then deleted: the overview falls back to the default dashboard.
    let renamed = admin
        .submit(
            &editor,
            &format!("/app/dashboards/{id}/rename"),
            &[("name", "Line 2")],
        )
        .await;
    assert_eq!(renamed.status, 303);
    assert!(
        viewer
            .get("/app/overview")
            .await
            .body
            .contains("<h1>Line 2</h1>")
    );
    let deleted = admin
        .submit(&editor, &format!("/app/dashboards/{id}/delete"), &[])
        .await;
    assert_eq!(deleted.status, 303);
    assert!(
        viewer
            .get("/app/overview")
            .await
            .body
            .contains("<h1>Overview</h1>")
    );
    assert_eq!(
        viewer.get(&format!("/app/dashboards/{id}")).await.status,
        404
    );
    let last: String = sqlx::query_scalar(
        "select action from audit.log where tenant_id = $1 order by seq desc limit 1",
    )
    .bind(acme.as_uuid())
    .fetch_one(&mut connection)
    .await
    .unwrap();
    assert_eq!(last, "dashboard.delete");
}
