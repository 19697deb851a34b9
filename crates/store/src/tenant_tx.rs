//! `TenantTx`: the transaction every request-path query runs in.
//!
//! Opening one starts a transaction on the app pool (login role `tributary_app`, which owns
//! nothing and may only switch roles), switches with `set local role` to the database role of
//! the caller's platform role, and sets the tenant and user with `set_config(.., true)`. All
//! three end with the transaction, so a pooled connection carries nothing into the next one.

use domain::{Role, SourceId, TenantId, UserId};
use sqlx::{PgConnection, Postgres, Transaction};

use crate::{AppDb, ServiceDb, StoreError};

/// Who is acting; recorded in the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A signed-in person.
    User(UserId),
    /// An operator at the command line, by OS user name.
    Cli(String),
    /// A platform job, by name.
    System(&'static str),
    /// A paired agent.
    Agent(SourceId),
    /// A program calling the JSON API with an API token, by token id.
    ApiToken(uuid::Uuid),
}

impl Actor {
    pub fn kind(&self) -> &'static str {
        match self {
            Actor::User(_) => "user",
            Actor::Cli(_) => "cli",
            Actor::System(_) => "system",
            Actor::Agent(_) => "agent",
            Actor::ApiToken(_) => "api_token",
        }
    }

    pub fn id(&self) -> String {
        match self {
            Actor::User(user) => user.to_string(),
            Actor::Cli(name) => name.chars().take(200).collect(),
            Actor::System(name) => (*name).to_owned(),
            Actor::Agent(source) => source.to_string(),
            Actor::ApiToken(token) => token.to_string(),
        }
    }

    /// The OS user running this process, as a CLI actor.
    pub fn current_cli_user() -> Actor {
        let name = nix::unistd::User::from_uid(nix::unistd::Uid::current())
            .ok()
            .flatten()
            .map_or_else(|| "unknown".to_owned(), |user| user.name);
        Actor::Cli(name)
    }
}

/// On whose behalf, and in which tenant, a transaction runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// A member of `tenant` acting in their tenant role (owner, admin, operator or viewer).
    Member {
        tenant: TenantId,
        user: UserId,
        role: Role,
    },
    /// A program holding an API token of `tenant`, acting in the token's role for the token's
    /// holder, the member who created it (`None` for a token the operator's CLI made).
    ApiToken {
        tenant: TenantId,
        token: uuid::Uuid,
        role: Role,
        holder: Option<UserId>,
    },
    /// Internal operations staff. The tenant registry and the global rollups are readable
    /// without a tenant; tenant tables (such as a tenant's audit log) only with one.
    InternalOps {
        tenant: Option<TenantId>,
        actor: Actor,
    },
    /// A platform job reading one tenant's data on the tenant's behalf (the alert evaluator),
    /// as `tributary_tenant_operator`: the least role that sees everything such a job reads
    /// (read models, sources, dead letters), under the tenant's row-level security like any
    /// member. Jobs only read through it.
    Job { tenant: TenantId, job: &'static str },
    /// The platform's control plane: sign-up, sign-in and the operator CLI. It creates tenants,
    /// accounts and memberships; tenant rows still only for the tenant set here.
    Control {
        tenant: Option<TenantId>,
        actor: Actor,
    },
}

impl Scope {
    fn tenant(&self) -> Option<TenantId> {
        match self {
            Scope::Member { tenant, .. }
            | Scope::ApiToken { tenant, .. }
            | Scope::Job { tenant, .. } => Some(*tenant),
            Scope::InternalOps { tenant, .. } | Scope::Control { tenant, .. } => *tenant,
        }
    }

    fn actor(&self) -> Actor {
        match self {
            Scope::Member { user, .. } => Actor::User(*user),
            Scope::ApiToken { token, .. } => Actor::ApiToken(*token),
            Scope::Job { job, .. } => Actor::System(job),
            Scope::InternalOps { actor, .. } | Scope::Control { actor, .. } => actor.clone(),
        }
    }

    /// The statement that switches to this scope's database role. Static text per role: no part
    /// of it comes from input.
    /// The database role the scope's statements run as.
    /// The user a transaction of this scope acts as. A tenantless control scope acting as a
    /// user may read that user's memberships across tenants (signing in lists their workspaces;
    /// migration 0012's policies). A member, or an API token's holder, is the user credentials
    /// created here are recorded as created by (migration 0019).
    fn user(&self) -> Option<UserId> {
        match self {
            Scope::Member { user, .. } => Some(*user),
            Scope::ApiToken { holder, .. } => *holder,
            Scope::Control {
                tenant: None,
                actor: Actor::User(user),
            } => Some(*user),
            _ => None,
        }
    }

    fn database_role(&self) -> Result<&'static str, StoreError> {
        Ok(match self {
            Scope::Member { role, .. } | Scope::ApiToken { role, .. } => match role {
                Role::Owner => "tributary_tenant_owner",
                Role::Admin => "tributary_tenant_admin",
                Role::Operator => "tributary_tenant_operator",
                Role::Viewer => "tributary_tenant_viewer",
                Role::InternalOps | Role::ServiceRole => {
                    return Err(StoreError::Forbidden(
                        "only owner, admin, operator and viewer are tenant member roles",
                    ));
                }
            },
            Scope::Job { .. } => "tributary_tenant_operator",
            Scope::InternalOps { .. } => "tributary_internal_ops",
            Scope::Control { .. } => "tributary_control",
        })
    }
}

/// A transaction bound to one tenant (or, for control and internal operations, possibly none)
/// and one database role. Dropping it without [`TenantTx::commit`] rolls back.
#[derive(Debug)]
pub struct TenantTx {
    transaction: Transaction<'static, Postgres>,
    tenant: Option<TenantId>,
    actor: Actor,
}

impl TenantTx {
    /// A request-path transaction: on the app handle, switched to the scope's tenant role.
    pub async fn begin(database: &AppDb, scope: Scope) -> Result<Self, StoreError> {
        let role = scope.database_role()?;
        let transaction = database.pool().begin().await?;
        Self::bind(
            transaction,
            Some(role),
            scope.tenant(),
            scope.user(),
            scope.actor(),
        )
        .await
    }

    /// Continues this transaction in `scope`: its role, tenant and user are set anew in one
    /// round trip, as [`TenantTx::begin`] would have set them. What the transaction did before
    /// is kept (and committed with what follows). For a control step that must precede a
    /// request in the same transaction, saving the request a transaction of its own.
    pub async fn rescope(self, scope: Scope) -> Result<Self, StoreError> {
        let role = scope.database_role()?;
        Self::bind(
            self.transaction,
            Some(role),
            scope.tenant(),
            scope.user(),
            scope.actor(),
        )
        .await
    }

    /// A transaction of the edge or the pipeline, as `tributary_service` (BYPASSRLS): the service
    /// handle is the proof that the caller is not on the request path. The tenant is still set so
    /// that audited work lands in the right chain.
    pub async fn begin_service(
        database: &ServiceDb,
        tenant: Option<TenantId>,
        actor: Actor,
    ) -> Result<Self, StoreError> {
        let transaction = database.pool().begin().await?;
        Self::bind(transaction, None, tenant, None, actor).await
    }

    /// Sets the transaction's role (`set_config('role', ..., true)` is `set local role`), tenant
    /// and user in one round trip.
    async fn bind(
        mut transaction: Transaction<'static, Postgres>,
        role: Option<&'static str>,
        tenant: Option<TenantId>,
        user: Option<UserId>,
        actor: Actor,
    ) -> Result<Self, StoreError> {
        let statement = if role.is_some() {
            "select set_config('role', $3, true), \
                    set_config('tributary.tenant_id', $1, true), \
                    set_config('tributary.user_id', $2, true)"
        } else {
            "select set_config('tributary.tenant_id', $1, true), \
                    set_config('tributary.user_id', $2, true)"
        };
        let mut query = sqlx::query(statement)
            .bind(tenant.map(|tenant| tenant.to_string()).unwrap_or_default())
            .bind(user.map(|user| user.to_string()).unwrap_or_default());
        if let Some(role) = role {
            query = query.bind(role);
        }
        query.execute(&mut *transaction).await?;
        Ok(Self {
            transaction,
            tenant,
            actor,
        })
    }

    /// The tenant whose rows this transaction can see, if any.
    pub fn tenant(&self) -> Option<TenantId> {
        self.tenant
    }

    pub fn actor(&self) -> &Actor {
        &self.actor
    }

    /// The person acting, when a person is (a member, not a token or a job).
    pub fn actor_user(&self) -> Option<UserId> {
        match self.actor {
            Actor::User(user) => Some(user),
            _ => None,
        }
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        self.transaction.commit().await?;
        Ok(())
    }

    pub async fn rollback(self) -> Result<(), StoreError> {
        self.transaction.rollback().await?;
        Ok(())
    }

    pub(crate) fn connection(&mut self) -> &mut PgConnection {
        &mut self.transaction
    }

    /// The raw connection, for the store's own isolation tests, which must be able to attempt
    /// what no repository would.
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub fn connection_for_tests(&mut self) -> &mut PgConnection {
        &mut self.transaction
    }
}
