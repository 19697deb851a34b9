//! Credentials follow their holder: API tokens and invitations record who created them, a member's
//! removal or demotion revokes what they created above their new role (audited, in the same
//! transaction), and the database holds the owner/admin line against an admin's own SQL.

use domain::{Email, Role, TenantId, UserId};
use sqlx::PgConnection;
use store::{Database, Scope, TenantTx, api_tokens, control, invitations, members};
use test_support::TestDatabase;
use uuid::Uuid;

use crate::support::{cli, sqlstate, tenant};

async fn user(database: &Database, email: &str) -> (Email, UserId) {
    let email = Email::parse(email).unwrap();
    let user = control::create_user(&database.app, cli(), &email, "")
        .await
        .unwrap()
        .user_id;
    (email, user)
}

async fn as_member(database: &Database, tenant: TenantId, user: UserId, role: Role) -> TenantTx {
    TenantTx::begin(&database.app, Scope::Member { tenant, user, role })
        .await
        .unwrap()
}

/// Creates a token as `scope`; returns its text.
async fn token_as(database: &Database, scope: Scope, role: Role) -> String {
    let mut tx = TenantTx::begin(&database.app, scope).await.unwrap();
    let (_, text) = api_tokens::create(&mut tx, "script", role, time::Duration::days(1))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    text
}

async fn invite_as(
    database: &Database,
    tenant: TenantId,
    user: UserId,
    role: Role,
    email: &str,
) -> Uuid {
    let mut tx = as_member(database, tenant, user, Role::Admin).await;
    let email = Email::parse(email).unwrap();
    let (invitation, _) = invitations::create(&mut tx, &email, role, time::Duration::days(7))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    invitation
}

async fn works(database: &Database, text: &str) -> bool {
    api_tokens::authenticate(&database.app, text)
        .await
        .unwrap()
        .is_some()
}

async fn open_invitations(database: &Database, tenant: TenantId, owner: UserId) -> Vec<Uuid> {
    let mut tx = as_member(database, tenant, owner, Role::Owner).await;
    let open = invitations::list_open(&mut tx).await.unwrap();
    tx.rollback().await.unwrap();
    open.into_iter()
        .map(|invitation| invitation.invitation_id)
        .collect()
}

/// The revocations audited in the workspace, oldest first: (action, role, created_by, reason).
async fn revocations(
    database: &Database,
    tenant: TenantId,
    owner: UserId,
) -> Vec<(String, String, String, String)> {
    let mut tx = as_member(database, tenant, owner, Role::Owner).await;
    let entries = store::audit::list(&mut tx, 100).await.unwrap();
    tx.rollback().await.unwrap();
    entries
        .into_iter()
        .rev()
        .filter(|entry| entry.details.get("reason").is_some())
        .map(|entry| {
            let text = |key: &str| entry.details[key].as_str().unwrap_or_default().to_owned();
            (
                entry.action.clone(),
                text("role"),
                text("created_by"),
                text("reason"),
            )
        })
        .collect()
}

#[tokio::test]
async fn removing_or_demoting_a_member_revokes_what_they_created_above_their_new_role() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let acme = tenant(&database, "Acme").await;
    let (ada, ada_id) = user(&database, "ada@example.com").await;
    let (bob, bob_id) = user(&database, "bob@example.com").await;
    control::set_member(&database.app, cli(), acme, &ada, Role::Owner)
        .await
        .unwrap();
    control::set_member(&database.app, cli(), acme, &bob, Role::Admin)
        .await
        .unwrap();

    // Bob, an admin, hands out credentials: from the page's and the API's member scope, and
    // from an admin token of his own (the new token records Bob, the holder, not the token).
    let bob_scope = Scope::Member {
        tenant: acme,
        user: bob_id,
        role: Role::Admin,
    };
    let bob_admin = token_as(&database, bob_scope.clone(), Role::Admin).await;
    let bob_operator = token_as(&database, bob_scope.clone(), Role::Operator).await;
    let bob_viewer = token_as(&database, bob_scope, Role::Viewer).await;
    let grant = api_tokens::authenticate(&database.app, &bob_admin)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(grant.holder, Some(bob_id), "the creator is recorded");
    let from_token = token_as(
        &database,
        Scope::ApiToken {
            tenant: acme,
            token: grant.token,
            role: grant.role,
            holder: grant.holder,
        },
        Role::Admin,
    )
    .await;
    let derived = api_tokens::authenticate(&database.app, &from_token)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        derived.holder,
        Some(bob_id),
        "a token's token is its holder's"
    );
    let bob_invites_admin = invite_as(&database, acme, bob_id, Role::Admin, "x@example.com").await;
    let bob_invites_viewer =
        invite_as(&database, acme, bob_id, Role::Viewer, "y@example.com").await;

    // What others made stays: Ada's token and one the operator made at the CLI (no creator).
    let ada_token = token_as(
        &database,
        Scope::Member {
            tenant: acme,
            user: ada_id,
            role: Role::Owner,
        },
        Role::Admin,
    )
    .await;
    let cli_token = token_as(
        &database,
        Scope::Control {
            tenant: Some(acme),
            actor: cli(),
        },
        Role::Admin,
    )
    .await;
    let cli_grant = api_tokens::authenticate(&database.app, &cli_token)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cli_grant.holder, None, "the CLI is nobody's");

    // The revocation is part of the member change: rolled back with it.
    let mut tx = as_member(&database, acme, ada_id, Role::Owner).await;
    members::change_role(&mut tx, bob_id, Role::Operator)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert!(works(&database, &bob_admin).await);

    // Ada demotes Bob to operator: what he created above operator stops working.
    let mut tx = as_member(&database, acme, ada_id, Role::Owner).await;
    members::change_role(&mut tx, bob_id, Role::Operator)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(!works(&database, &bob_admin).await, "admin token revoked");
    assert!(!works(&database, &from_token).await, "its offspring too");
    assert!(works(&database, &bob_operator).await);
    assert!(works(&database, &bob_viewer).await);
    assert!(works(&database, &ada_token).await);
    assert!(works(&database, &cli_token).await);
    let open = open_invitations(&database, acme, ada_id).await;
    assert!(!open.contains(&bob_invites_admin), "{open:?}");
    assert!(open.contains(&bob_invites_viewer), "{open:?}");

    // The operator removes Bob at the CLI: everything he created goes.
    control::remove_member(&database.app, cli(), acme, &bob)
        .await
        .unwrap();
    assert!(!works(&database, &bob_operator).await);
    assert!(!works(&database, &bob_viewer).await);
    assert!(works(&database, &ada_token).await);
    assert!(works(&database, &cli_token).await);
    assert!(open_invitations(&database, acme, ada_id).await.is_empty());

    // One audit entry per revoked credential, naming its creator and the change that caused it.
    let bob_text = bob_id.to_string();
    let entry = |action: &str, role: &str, reason: &str| {
        (
            action.to_owned(),
            role.to_owned(),
            bob_text.clone(),
            reason.to_owned(),
        )
    };
    assert_eq!(
        revocations(&database, acme, ada_id).await,
        [
            entry("api_token.revoke", "admin", "member.change_role"),
            entry("api_token.revoke", "admin", "member.change_role"),
            entry("member.invite_revoke", "admin", "member.change_role"),
            entry("api_token.revoke", "operator", "member.remove"),
            entry("api_token.revoke", "viewer", "member.remove"),
            entry("member.invite_revoke", "viewer", "member.remove"),
        ]
    );
}

/// Runs `statement` (with `$1` the tenant and `$2` the row it is about) as `role` in a
/// transaction of `user`, then rolls back.
async fn attempt(
    database: &Database,
    tenant: TenantId,
    user: UserId,
    role: Role,
    statement: &'static str,
    subject: Uuid,
) -> Result<u64, sqlx::Error> {
    let mut tx = as_member(database, tenant, user, role).await;
    let connection: &mut PgConnection = tx.connection_for_tests();
    let result = sqlx::query(statement)
        .bind(tenant.as_uuid())
        .bind(subject)
        .execute(connection)
        .await
        .map(|done| done.rows_affected());
    tx.rollback().await.unwrap();
    result
}

const INSERT_OWNER_MEMBER: &str =
    "insert into control.members (tenant_id, user_id, role) values ($1, $2, 'owner')";
const PROMOTE_TO_OWNER: &str =
    "update control.members set role = 'owner' where tenant_id = $1 and user_id = $2";
const DEMOTE_OWNER: &str =
    "update control.members set role = 'viewer' where tenant_id = $1 and user_id = $2";
const DELETE_MEMBER: &str = "delete from control.members where tenant_id = $1 and user_id = $2";
const INSERT_OWNER_TOKEN: &str = "insert into control.api_tokens \
     (tenant_id, token_id, name, role, token_hash, expires_at) \
     select $1, gen_random_uuid(), 'x', 'owner', sha256(gen_random_uuid()::text::bytea), \
     now() + interval '1 day' where $2::uuid is not null";
const RAISE_TOKEN_TO_OWNER: &str =
    "update control.api_tokens set role = 'owner' where tenant_id = $1 and token_id = $2";
const INSERT_OWNER_INVITATION: &str = "insert into control.invitations \
     (tenant_id, invitation_id, email, role, token_hash, expires_at) \
     select $1, gen_random_uuid(), 'z@example.com', 'owner', \
     sha256(gen_random_uuid()::text::bytea), now() + interval '1 day' where $2::uuid is not null";
const CHANGE_PLAN: &str = "update control.dim_tenant set plan = 'enterprise' where tenant_id = $1 and $2::uuid is not null";
const INSERT_TOKEN_FOR_SOMEONE_ELSE: &str = "insert into control.api_tokens \
     (tenant_id, token_id, name, role, token_hash, expires_at, created_by) \
     values ($1, gen_random_uuid(), 'x', 'viewer', sha256(gen_random_uuid()::text::bytea), now() + interval '1 day', $2)";
const INSERT_TOKEN_FOR_NOBODY: &str = "insert into control.api_tokens \
     (tenant_id, token_id, name, role, token_hash, expires_at, created_by) \
     values ($1, gen_random_uuid(), 'x', 'viewer', sha256(gen_random_uuid()::text::bytea), now() + interval '1 day', \
     nullif($2::uuid, $2::uuid))";
const INSERT_INVITATION_FOR_SOMEONE_ELSE: &str = "insert into control.invitations \
     (tenant_id, invitation_id, email, role, token_hash, expires_at, created_by) \
     values ($1, gen_random_uuid(), 'w@example.com', 'viewer', sha256(gen_random_uuid()::text::bytea), \
     now() + interval '1 day', $2)";
const UNREVOKE_TOKEN: &str =
    "update control.api_tokens set revoked_at = null where tenant_id = $1 and token_id = $2";

#[tokio::test]
async fn an_admin_cannot_cross_the_owner_line_even_in_sql() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let acme = tenant(&database, "Acme").await;
    let (ada, ada_id) = user(&database, "ada@example.com").await;
    let (bob, bob_id) = user(&database, "bob@example.com").await;
    let (cyd, cyd_id) = user(&database, "cyd@example.com").await;
    let (_, dan_id) = user(&database, "dan@example.com").await;
    for (email, role) in [
        (&ada, Role::Owner),
        (&bob, Role::Admin),
        (&cyd, Role::Viewer),
    ] {
        control::set_member(&database.app, cli(), acme, email, role)
            .await
            .unwrap();
    }
    let viewer_token = token_as(
        &database,
        Scope::Member {
            tenant: acme,
            user: bob_id,
            role: Role::Admin,
        },
        Role::Viewer,
    )
    .await;
    let viewer_token = api_tokens::authenticate(&database.app, &viewer_token)
        .await
        .unwrap()
        .unwrap()
        .token;
    let revoked = token_as(
        &database,
        Scope::Member {
            tenant: acme,
            user: ada_id,
            role: Role::Owner,
        },
        Role::Admin,
    )
    .await;
    let revoked = api_tokens::authenticate(&database.app, &revoked)
        .await
        .unwrap()
        .unwrap()
        .token;
    let mut tx = as_member(&database, acme, ada_id, Role::Owner).await;
    api_tokens::revoke(&mut tx, revoked).await.unwrap();
    tx.commit().await.unwrap();

    // (what, statement, its subject, refused for the admin, allowed for an owner)
    let refused_for_admin = [
        (
            "insert an owner's membership",
            INSERT_OWNER_MEMBER,
            dan_id.as_uuid(),
        ),
        (
            "promote a viewer to owner",
            PROMOTE_TO_OWNER,
            cyd_id.as_uuid(),
        ),
        ("demote an owner", DEMOTE_OWNER, ada_id.as_uuid()),
        ("mint an owner token", INSERT_OWNER_TOKEN, dan_id.as_uuid()),
        (
            "raise a token to owner",
            RAISE_TOKEN_TO_OWNER,
            &viewer_token,
        ),
        ("invite an owner", INSERT_OWNER_INVITATION, dan_id.as_uuid()),
        ("change the plan", CHANGE_PLAN, dan_id.as_uuid()),
    ];
    for (what, statement, subject) in refused_for_admin {
        let result = attempt(&database, acme, bob_id, Role::Admin, statement, *subject).await;
        assert!(
            matches!(&result, Err(error) if sqlstate(error) == "42501"),
            "an admin could {what}: {result:?}"
        );
    }
    // The same statements are an owner's to make (but a token's role, which nobody changes),
    // so the refusals above are the owner line and not some other failure.
    for (what, statement, subject) in [
        (
            "insert an owner's membership",
            INSERT_OWNER_MEMBER,
            dan_id.as_uuid(),
        ),
        (
            "promote a viewer to owner",
            PROMOTE_TO_OWNER,
            cyd_id.as_uuid(),
        ),
        ("demote an owner", DEMOTE_OWNER, ada_id.as_uuid()),
        ("mint an owner token", INSERT_OWNER_TOKEN, dan_id.as_uuid()),
        ("invite an owner", INSERT_OWNER_INVITATION, dan_id.as_uuid()),
        ("change the plan", CHANGE_PLAN, dan_id.as_uuid()),
    ] {
        let result = attempt(&database, acme, ada_id, Role::Owner, statement, *subject).await;
        assert!(
            matches!(result, Ok(1)),
            "an owner could not {what}: {result:?}"
        );
    }

    // An admin's delete does not see an owner's membership: the owner stays.
    let deleted = attempt(
        &database,
        acme,
        bob_id,
        Role::Admin,
        DELETE_MEMBER,
        *ada_id.as_uuid(),
    )
    .await;
    assert!(matches!(deleted, Ok(0)), "{deleted:?}");
    let deleted = attempt(
        &database,
        acme,
        bob_id,
        Role::Admin,
        DELETE_MEMBER,
        *cyd_id.as_uuid(),
    )
    .await;
    assert!(
        matches!(deleted, Ok(1)),
        "an admin still removes a viewer: {deleted:?}"
    );

    // Nobody records a credential as someone else's, or as nobody's (it would outlive them).
    for role in [Role::Owner, Role::Admin] {
        let acting = if role == Role::Owner { ada_id } else { bob_id };
        for (what, statement) in [
            ("a token for someone else", INSERT_TOKEN_FOR_SOMEONE_ELSE),
            ("a token for nobody", INSERT_TOKEN_FOR_NOBODY),
            (
                "an invitation for someone else",
                INSERT_INVITATION_FOR_SOMEONE_ELSE,
            ),
        ] {
            let result = attempt(&database, acme, acting, role, statement, *cyd_id.as_uuid()).await;
            assert!(
                matches!(&result, Err(error) if sqlstate(error) == "42501"),
                "{role} created {what}: {result:?}"
            );
        }
        let own = attempt(
            &database,
            acme,
            acting,
            role,
            INSERT_TOKEN_FOR_SOMEONE_ELSE,
            *acting.as_uuid(),
        )
        .await;
        assert!(matches!(own, Ok(1)), "{role} records itself: {own:?}");

        // A revoked token stays revoked, even for an owner.
        let result = attempt(&database, acme, acting, role, UNREVOKE_TOKEN, revoked).await;
        assert!(
            matches!(&result, Err(error) if sqlstate(error) == "42501"),
            "{role} revived a revoked token: {result:?}"
        );
    }

    // What an admin may do remains: other workspace fields, a membership below owner.
    let renamed = attempt(
        &database,
        acme,
        bob_id,
        Role::Admin,
        "update control.dim_tenant set name = 'Acme 2' where tenant_id = $1 and $2::uuid is not null",
        *dan_id.as_uuid(),
    )
    .await;
    assert!(matches!(renamed, Ok(1)), "{renamed:?}");
    let promoted = attempt(
        &database,
        acme,
        bob_id,
        Role::Admin,
        "update control.members set role = 'admin' where tenant_id = $1 and user_id = $2",
        *cyd_id.as_uuid(),
    )
    .await;
    assert!(matches!(promoted, Ok(1)), "{promoted:?}");
}

/// A request with an API token runs in the transaction that checked the token, continued in the
/// token's scope: the token's role and tenant, never the control role that read the token, and
/// another tenant's rows stay out of sight. The first call of a token records its use and
/// commits on its own (a request that only reads rolls back); a revoked token is refused at its
/// next call.
#[tokio::test]
async fn a_token_request_continues_the_checking_transaction_in_the_tokens_scope() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let acme = tenant(&database, "acme").await;
    let globex = tenant(&database, "globex").await;
    let (ada, ada_id) = user(&database, "ada@acme.test").await;
    control::set_member(&database.app, cli(), acme, &ada, Role::Owner)
        .await
        .unwrap();
    let text = token_as(
        &database,
        Scope::Member {
            tenant: acme,
            user: ada_id,
            role: Role::Owner,
        },
        Role::Viewer,
    )
    .await;
    let globex_scope = Scope::Control {
        tenant: Some(globex),
        actor: cli(),
    };
    let _ = token_as(&database, globex_scope, Role::Admin).await;

    // The first use is recorded, in a transaction of its own.
    let (grant, begun) = api_tokens::authenticate_and_begin(&database.app, &text)
        .await
        .unwrap()
        .unwrap();
    assert!(begun.is_none(), "the first use commits its record alone");
    assert_eq!((grant.tenant, grant.role), (acme, Role::Viewer));
    let used: Option<time::OffsetDateTime> =
        sqlx::query_scalar("select last_used_at from control.api_tokens where token_id = $1")
            .bind(grant.token)
            .fetch_one(&mut test_database.admin().await)
            .await
            .unwrap();
    assert!(used.is_some(), "the first use is recorded");

    // Later uses continue the checking transaction, as the token's role in its tenant.
    let (_, begun) = api_tokens::authenticate_and_begin(&database.app, &text)
        .await
        .unwrap()
        .unwrap();
    let mut tx = begun.expect("a steady use continues its checking transaction");
    let (role, tenant_setting): (String, String) =
        sqlx::query_as("select current_user::text, current_setting('tributary.tenant_id')")
            .fetch_one(tx.connection_for_tests())
            .await
            .unwrap();
    assert_eq!(role, "tributary_tenant_viewer");
    assert_eq!(tenant_setting, acme.to_string());
    let tenants: Vec<uuid::Uuid> = sqlx::query_scalar("select tenant_id from control.dim_tenant")
        .fetch_all(tx.connection_for_tests())
        .await
        .unwrap();
    assert_eq!(
        tenants,
        vec![*acme.as_uuid()],
        "only the token's tenant is in sight"
    );
    // The control role that read the token could read every token of the tenant; a viewer
    // cannot read them at all.
    let refused = sqlx::query("select token_id from control.api_tokens")
        .execute(tx.connection_for_tests())
        .await
        .unwrap_err();
    assert_eq!(
        sqlstate(&refused),
        "42501",
        "a viewer token reads no tokens"
    );
    drop(tx);

    // Revoked: refused at the next call.
    let mut owner = as_member(&database, acme, ada_id, Role::Owner).await;
    api_tokens::revoke(&mut owner, grant.token).await.unwrap();
    owner.commit().await.unwrap();
    assert!(
        api_tokens::authenticate_and_begin(&database.app, &text)
            .await
            .unwrap()
            .is_none()
    );
}
