//! Tenants, users and memberships through the control-plane repositories.

use domain::{Email, Role};
use store::{audit, control, members};
use test_support::TestDatabase;

use crate::support::{cli, member_tx, tenant};

#[tokio::test]
async fn tenants_users_and_members_round_trip_with_audit() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let acme = tenant(&database, "Acme").await;
    let globex = tenant(&database, "Globex").await;

    let names: Vec<String> = control::list_tenants(&database.app, cli())
        .await
        .unwrap()
        .into_iter()
        .map(|tenant| tenant.name)
        .collect();
    assert_eq!(names, ["Acme", "Globex"]);

    let ada = Email::parse("ada@example.com").unwrap();
    let bob = Email::parse("bob@example.com").unwrap();
    control::create_user(&database.app, cli(), &ada, "Ada")
        .await
        .unwrap();
    control::create_user(&database.app, cli(), &bob, "Bob")
        .await
        .unwrap();
    let duplicate = control::create_user(&database.app, cli(), &ada, "Ada again").await;
    assert!(matches!(
        duplicate,
        Err(store::StoreError::AlreadyExists(_))
    ));

    control::set_member(&database.app, cli(), acme, &ada, Role::Owner)
        .await
        .unwrap();
    control::set_member(&database.app, cli(), acme, &bob, Role::Viewer)
        .await
        .unwrap();
    control::set_member(&database.app, cli(), globex, &bob, Role::Admin)
        .await
        .unwrap();

    let acme_members = control::list_members(&database.app, cli(), acme)
        .await
        .unwrap();
    let listed: Vec<(&str, Role)> = acme_members
        .iter()
        .map(|member| (member.email.as_str(), member.role))
        .collect();
    assert_eq!(
        listed,
        [
            ("ada@example.com", Role::Owner),
            ("bob@example.com", Role::Viewer)
        ]
    );
    let globex_members = control::list_members(&database.app, cli(), globex)
        .await
        .unwrap();
    assert_eq!(globex_members.len(), 1, "Globex sees only its own members");

    // The last owner can be neither demoted nor removed.
    let demote = control::set_member(&database.app, cli(), acme, &ada, Role::Admin).await;
    assert!(
        matches!(demote, Err(store::StoreError::Forbidden(_))),
        "{demote:?}"
    );
    let remove = control::remove_member(&database.app, cli(), acme, &ada).await;
    assert!(
        matches!(remove, Err(store::StoreError::Forbidden(_))),
        "{remove:?}"
    );
    control::remove_member(&database.app, cli(), acme, &bob)
        .await
        .unwrap();
    assert_eq!(
        control::list_members(&database.app, cli(), acme)
            .await
            .unwrap()
            .len(),
        1
    );

    // Every change above is in the right chain, and every chain verifies.
    let reports = store::service::audit::verify(&database.service, None)
        .await
        .unwrap();
    assert!(
        reports.iter().all(|report| report.is_intact()),
        "{reports:#?}"
    );
    let acme_report = reports.iter().find(|report| report.tenant == acme).unwrap();
    // tenant.create, member.add x2, member.remove
    assert_eq!(acme_report.entries, 4);
    let platform = reports
        .iter()
        .find(|report| report.tenant.is_platform())
        .unwrap();
    assert_eq!(platform.entries, 2, "two accounts created");
}

#[tokio::test]
async fn unknown_tenant_and_user_are_reported_as_such() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let ada = Email::parse("ada@example.com").unwrap();
    let missing_tenant =
        control::list_members(&database.app, cli(), domain::TenantId::new_random()).await;
    assert!(matches!(
        missing_tenant,
        Err(store::StoreError::NotFound("tenant"))
    ));
    let acme = tenant(&database, "Acme").await;
    let missing_user = control::set_member(&database.app, cli(), acme, &ada, Role::Viewer).await;
    assert!(matches!(
        missing_user,
        Err(store::StoreError::NotFound("user"))
    ));
}

/// Signing in lists an account's workspaces across tenants (migration 0012): the control role,
/// outside any tenant and acting as that user, sees that user's memberships and those tenants,
/// and nothing of anyone else; inside a tenant, a member list never reveals other workspaces.
#[tokio::test]
async fn the_sign_in_scope_sees_only_the_signing_in_users_workspaces() {
    use store::{Actor, Scope, TenantTx};

    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let acme = tenant(&database, "Acme").await;
    let globex = tenant(&database, "Globex").await;
    let initech = tenant(&database, "Initech").await;
    let ada = Email::parse("ada@example.com").unwrap();
    let bob = Email::parse("bob@example.com").unwrap();
    let ada_id = control::create_user(&database.app, cli(), &ada, "Ada")
        .await
        .unwrap()
        .user_id;
    control::create_user(&database.app, cli(), &bob, "Bob")
        .await
        .unwrap();
    control::set_member(&database.app, cli(), acme, &ada, Role::Owner)
        .await
        .unwrap();
    control::set_member(&database.app, cli(), globex, &ada, Role::Viewer)
        .await
        .unwrap();
    control::set_member(&database.app, cli(), initech, &bob, Role::Owner)
        .await
        .unwrap();

    let workspaces = store::accounts::memberships(&database.app, ada_id)
        .await
        .unwrap();
    let listed: Vec<(&str, Role)> = workspaces
        .iter()
        .map(|workspace| (workspace.name.as_str(), workspace.role))
        .collect();
    assert_eq!(listed, [("Acme", Role::Owner), ("Globex", Role::Viewer)]);

    // The same role without a user, or with a user but inside a tenant, widens nothing.
    for scope in [
        Scope::Control {
            tenant: None,
            actor: Actor::System("test"),
        },
        Scope::Control {
            tenant: Some(initech),
            actor: Actor::User(ada_id),
        },
    ] {
        let inside = matches!(
            scope,
            Scope::Control {
                tenant: Some(_),
                ..
            }
        );
        let mut tx = TenantTx::begin(&database.app, scope).await.unwrap();
        let (members, tenants): (i64, i64) = sqlx::query_as(
            "select (select count(*) from control.members), \
                    (select count(*) from control.dim_tenant)",
        )
        .fetch_one(tx.connection_for_tests())
        .await
        .unwrap();
        // Inside Initech: Initech's own row and Bob's membership only.
        let expected = if inside { (1, 1) } else { (0, 0) };
        assert_eq!((members, tenants), expected);
        tx.rollback().await.unwrap();
    }
    let initech_members = control::list_members(&database.app, Actor::User(ada_id), initech)
        .await
        .unwrap();
    assert_eq!(initech_members.len(), 1);
    assert_eq!(initech_members[0].email, "bob@example.com");
}

/// Book-a-demo requests: the control plane stores them, internal operations reads them, and no
/// tenant role can read or write them.
#[tokio::test]
async fn contact_requests_are_for_internal_operations_only() {
    use store::{Actor, Scope, TenantTx};

    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let acme = tenant(&database, "Acme").await;
    let request = store::contact::ContactRequest {
        name: "Ada".into(),
        email: "ada@example.com".into(),
        company: "Engines".into(),
        fleet_size: "1-100".into(),
        message: String::new(),
    };
    store::contact::record(&database.app, &request)
        .await
        .unwrap();
    let listed = store::contact::list(&database.app, Actor::System("test"), 10)
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].request, request);

    for role in Role::TENANT_ROLES {
        for statement in [
            "select count(*) from control.contact_requests",
            "insert into control.contact_requests (request_id, name, email, company, fleet_size, \
             message) values (gen_random_uuid(), 'x', 'x@y.z', 'x', 'x', '')",
        ] {
            let mut tx = TenantTx::begin(
                &database.app,
                Scope::Member {
                    tenant: acme,
                    user: domain::UserId::new_random(),
                    role,
                },
            )
            .await
            .unwrap();
            let error = sqlx::query(statement)
                .execute(tx.connection_for_tests())
                .await
                .unwrap_err();
            let code = error
                .as_database_error()
                .and_then(|error| error.code())
                .map(|code| code.into_owned());
            assert_eq!(code.as_deref(), Some("42501"), "{role}: {statement}");
        }
    }
}

fn bronze_row(
    tenant: domain::TenantId,
    source: domain::SourceId,
    n: i64,
) -> store::service::bronze::BronzeRow {
    store::service::bronze::BronzeRow {
        tenant,
        event_id: domain::EventId::from_uuid(uuid::Uuid::new_v4()),
        event_time: time::OffsetDateTime::now_utc(),
        source,
        op: "insert".into(),
        schema_name: "public".into(),
        table_name: "devices".into(),
        lsn: n,
        seq: 0,
        xid: None,
        payload: "{}".into(),
    }
}

#[tokio::test]
async fn staff_are_granted_by_the_cli_seen_by_their_sessions_and_revoked_with_them() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let email = Email::parse("ops@example.com").unwrap();
    assert!(matches!(
        store::accounts::grant_staff(&database.app, cli(), &email).await,
        Err(store::StoreError::NotFound(_))
    ));
    let user = control::create_user(&database.app, cli(), &email, "Ops")
        .await
        .unwrap()
        .user_id;
    let lifetime = store::accounts::SessionLifetime {
        idle: time::Duration::minutes(30),
        absolute: time::Duration::hours(12),
    };
    store::accounts::create_session(&database.app, user, "before", lifetime, None, None, None)
        .await
        .unwrap();
    let session = store::accounts::find_session(&database.app, "before", lifetime.idle)
        .await
        .unwrap()
        .unwrap();
    assert!(!session.internal_ops);

    assert_eq!(
        store::accounts::grant_staff(&database.app, cli(), &email)
            .await
            .unwrap(),
        user
    );
    // Granting twice is harmless.
    store::accounts::grant_staff(&database.app, cli(), &email)
        .await
        .unwrap();
    let session = store::accounts::find_session(&database.app, "before", lifetime.idle)
        .await
        .unwrap()
        .unwrap();
    assert!(session.internal_ops, "the session sees the grant at once");
    // A session a workspace's IdP started is never staff, whoever the account is: an IdP
    // speaks for its workspace only.
    let workspace = tenant(&database, "Acme").await;
    store::sso::create_session(
        &database.app,
        user,
        "through-sso",
        lifetime,
        workspace,
        None,
        None,
    )
    .await
    .unwrap();
    let through_sso = store::accounts::find_session(&database.app, "through-sso", lifetime.idle)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (through_sso.internal_ops, through_sso.sso_tenant),
        (false, Some(workspace))
    );
    let staff = store::accounts::list_staff(&database.app).await.unwrap();
    assert_eq!(staff.len(), 1);
    assert_eq!(
        (staff[0].email.as_str(), staff[0].granted_by.as_str()),
        ("ops@example.com", "test")
    );

    store::accounts::revoke_staff(&database.app, cli(), &email)
        .await
        .unwrap();
    assert!(
        store::accounts::find_session(&database.app, "before", lifetime.idle)
            .await
            .unwrap()
            .is_none(),
        "revoking staff ends the account's sessions"
    );
    assert!(
        store::accounts::list_staff(&database.app)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        store::accounts::revoke_staff(&database.app, cli(), &email).await,
        Err(store::StoreError::NotFound(_))
    ));
    // Both changes are in the platform's audit chain.
    let mut service = test_database.service().await;
    let actions: Vec<String> = sqlx::query_scalar(
        "select action from audit.log where tenant_id = $1 and action like 'staff.%' order by seq",
    )
    .bind(domain::TenantId::PLATFORM.as_uuid())
    .fetch_all(&mut service)
    .await
    .unwrap();
    assert_eq!(actions, ["staff.grant", "staff.revoke"]);
}

#[tokio::test]
async fn the_registry_counts_what_bronze_stored_once_and_shows_members_only_their_own() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let acme = tenant(&database, "Acme Charging").await;
    let globex = tenant(&database, "Globex").await;
    let (one, two) = (
        domain::SourceId::new_random(),
        domain::SourceId::new_random(),
    );
    let rows: Vec<_> = (0..5)
        .map(|n| bronze_row(acme, one, n))
        .chain((5..8).map(|n| bronze_row(acme, two, n)))
        .chain((8..10).map(|n| bronze_row(globex, one, n)))
        .collect();
    assert_eq!(
        store::service::bronze::insert(&database.service, &rows)
            .await
            .unwrap(),
        10
    );
    // A redelivered batch (with one new event) counts only the new one.
    let mut again = rows[..3].to_vec();
    again.push(bronze_row(acme, one, 10));
    assert_eq!(
        store::service::bronze::insert(&database.service, &again)
            .await
            .unwrap(),
        1
    );

    let mut ops = store::TenantTx::begin(
        &database.app,
        store::Scope::InternalOps {
            tenant: None,
            actor: cli(),
        },
    )
    .await
    .unwrap();
    let all = control::registry(&mut ops, &control::RegistryFilter::default())
        .await
        .unwrap();
    let volume: Vec<(String, i64, i64, i64)> = all
        .iter()
        .map(|entry| {
            (
                entry.tenant.name.clone(),
                entry.active_sources,
                entry.events_today,
                entry.events_7d,
            )
        })
        .collect();
    assert_eq!(
        volume,
        [
            ("Globex".to_owned(), 1, 2, 2),
            ("Acme Charging".to_owned(), 2, 9, 9)
        ]
    );
    assert!(all.iter().all(|entry| entry.last_event_at.is_some()));
    // Search is by a part of the name, any case; wildcards in the search are literal.
    for (search, expected) in [("acme", 1), ("GLOB", 1), ("%", 0), ("_", 0), ("", 2)] {
        let filter = control::RegistryFilter {
            search: search.into(),
            ..Default::default()
        };
        assert_eq!(
            control::registry(&mut ops, &filter).await.unwrap().len(),
            expected,
            "search {search:?}"
        );
    }
    let filter = control::RegistryFilter {
        plan: "enterprise".into(),
        ..Default::default()
    };
    assert!(
        control::registry(&mut ops, &filter)
            .await
            .unwrap()
            .is_empty()
    );
    ops.rollback().await.unwrap();

    // A member's registry is their own workspace, whatever they search for.
    let mut member = crate::support::member_tx(&database, globex, Role::Viewer).await;
    let own = control::registry(&mut member, &control::RegistryFilter::default())
        .await
        .unwrap();
    assert_eq!(own.len(), 1);
    assert_eq!(
        (own[0].tenant.name.as_str(), own[0].events_today),
        ("Globex", 2)
    );
}

#[tokio::test]
async fn the_operator_and_a_workspaces_owners_keep_one_last_owner_rule() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let acme = tenant(&database, "Acme").await;
    let ada = Email::parse("ada@example.com").unwrap();
    let bob = Email::parse("bob@example.com").unwrap();
    let ada_id = control::create_user(&database.app, cli(), &ada, "Ada")
        .await
        .unwrap()
        .user_id;
    let bob_id = control::create_user(&database.app, cli(), &bob, "Bob")
        .await
        .unwrap()
        .user_id;
    control::set_member(&database.app, cli(), acme, &ada, Role::Owner)
        .await
        .unwrap();
    control::set_member(&database.app, cli(), acme, &bob, Role::Admin)
        .await
        .unwrap();

    // The workspace's own owner cannot demote the last owner either.
    let mut tx = member_tx(&database, acme, Role::Owner).await;
    let demote = members::change_role(&mut tx, ada_id, Role::Viewer).await;
    assert!(
        matches!(demote, Err(store::StoreError::Forbidden(_))),
        "{demote:?}"
    );
    drop(tx);

    // Once Bob is an owner too, the operator may demote Ada, and Bob is then the last owner
    // for both paths.
    let mut tx = member_tx(&database, acme, Role::Owner).await;
    let previous = members::change_role(&mut tx, bob_id, Role::Owner)
        .await
        .unwrap();
    assert_eq!(previous, Role::Admin);
    tx.commit().await.unwrap();
    control::set_member(&database.app, cli(), acme, &ada, Role::Admin)
        .await
        .unwrap();
    let remove = control::remove_member(&database.app, cli(), acme, &bob).await;
    assert!(
        matches!(remove, Err(store::StoreError::Forbidden(_))),
        "{remove:?}"
    );
    let mut tx = member_tx(&database, acme, Role::Owner).await;
    let remove = members::remove(&mut tx, bob_id).await;
    assert!(
        matches!(remove, Err(store::StoreError::Forbidden(_))),
        "{remove:?}"
    );
    drop(tx);

    // Not a member: each path reports it in its own words.
    let carol = Email::parse("carol@example.com").unwrap();
    let carol_id = control::create_user(&database.app, cli(), &carol, "Carol")
        .await
        .unwrap()
        .user_id;
    let remove = control::remove_member(&database.app, cli(), acme, &carol).await;
    assert!(
        matches!(remove, Err(store::StoreError::NotFound("membership"))),
        "{remove:?}"
    );
    let mut tx = member_tx(&database, acme, Role::Owner).await;
    let remove = members::remove(&mut tx, carol_id).await;
    assert!(
        matches!(remove, Err(store::StoreError::NotFound("member"))),
        "{remove:?}"
    );
    drop(tx);

    // Both paths wrote the same audit entries.
    let mut tx = member_tx(&database, acme, Role::Owner).await;
    let entries: Vec<(String, serde_json::Value)> = audit::list(&mut tx, 10)
        .await
        .unwrap()
        .into_iter()
        .filter(|entry| entry.action.starts_with("member."))
        .map(|entry| (entry.action, entry.details))
        .collect();
    assert_eq!(
        entries,
        [
            (
                "member.change_role".to_owned(),
                serde_json::json!({ "role": "admin", "previous_role": "owner" })
            ),
            (
                "member.change_role".to_owned(),
                serde_json::json!({ "role": "owner", "previous_role": "admin" })
            ),
            (
                "member.add".to_owned(),
                serde_json::json!({ "role": "admin", "previous_role": null })
            ),
            (
                "member.add".to_owned(),
                serde_json::json!({ "role": "owner", "previous_role": null })
            ),
        ]
    );
}
