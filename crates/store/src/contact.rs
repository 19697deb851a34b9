//! Book-a-demo requests from the public site: stored by the control plane, read by internal
//! operations. Prospects have no tenant yet, so these rows belong to no tenant.

use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{Actor, AppDb, Scope, StoreError, TenantTx};

/// A request as the form submitted it, already validated by the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ContactRequest {
    pub name: String,
    pub email: String,
    pub company: String,
    pub fleet_size: String,
    pub message: String,
}

/// A stored request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct StoredContactRequest {
    pub request_id: Uuid,
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub request: ContactRequest,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

pub async fn record(database: &AppDb, request: &ContactRequest) -> Result<Uuid, StoreError> {
    let request_id = Uuid::now_v7();
    let mut tx = TenantTx::begin(
        database,
        Scope::Control {
            tenant: None,
            actor: Actor::System("contact-form"),
        },
    )
    .await?;
    sqlx::query(
        "insert into control.contact_requests \
             (request_id, name, email, company, fleet_size, message) \
         values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(request_id)
    .bind(&request.name)
    .bind(&request.email)
    .bind(&request.company)
    .bind(&request.fleet_size)
    .bind(&request.message)
    .execute(tx.connection())
    .await?;
    tx.commit().await?;
    Ok(request_id)
}

/// The newest `limit` requests, as internal operations sees them.
pub async fn list(
    database: &AppDb,
    actor: Actor,
    limit: i64,
) -> Result<Vec<StoredContactRequest>, StoreError> {
    let mut tx = TenantTx::begin(
        database,
        Scope::InternalOps {
            tenant: None,
            actor,
        },
    )
    .await?;
    let requests = sqlx::query_as(
        "select request_id, name, email, company, fleet_size, message, created_at \
         from control.contact_requests order by created_at desc, request_id desc limit $1",
    )
    .bind(limit)
    .fetch_all(tx.connection())
    .await?;
    tx.commit().await?;
    Ok(requests)
}
