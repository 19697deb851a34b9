//! Fixtures shared by the store's integration tests.

use domain::{Plan, Role, TenantAttributes, TenantId, UserId};
use store::{Actor, Database, Scope, TenantTx};

pub fn cli() -> Actor {
    Actor::Cli("test".into())
}

pub async fn tenant(database: &Database, name: &str) -> TenantId {
    let attributes = TenantAttributes::parse(name, Plan::Team, "energy", "eu").unwrap();
    store::control::create_tenant(&database.app, cli(), &attributes)
        .await
        .unwrap()
        .tenant_id
}

pub async fn member_tx(database: &Database, tenant: TenantId, role: Role) -> TenantTx {
    let scope = match role {
        Role::InternalOps => Scope::InternalOps {
            tenant: Some(tenant),
            actor: cli(),
        },
        _ => Scope::Member {
            tenant,
            user: UserId::new_random(),
            role,
        },
    };
    TenantTx::begin(&database.app, scope).await.unwrap()
}

/// The SQLSTATE of a database error, or the error's text for anything else.
pub fn sqlstate(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(error) => error
            .code()
            .map(|code| code.into_owned())
            .unwrap_or_default(),
        other => format!("not a database error: {other}"),
    }
}
