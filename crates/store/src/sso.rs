//! Single sign-on with OpenID Connect, per workspace (docs/sso.md): the IdP configuration its
//! owners and admins manage, its email domains and their verification, the sign-in flows in
//! progress, and what a completed sign-in does (the account, just-in-time membership, a session
//! bound to the workspace).
//!
//! Secrets never leave this module in clear except as [`SecretString`]: the client secret and
//! each flow's PKCE verifier are sealed with the platform's [`SecretBox`] before they are
//! stored; state and browser-binding values are stored as SHA-256 only.

use std::net::IpAddr;

use domain::{Email, Role, TenantId, UserId};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

use crate::accounts::SessionLifetime;
use crate::audit::{self, AuditEntry};
use crate::members::parse_role;
use crate::secret_box::SecretBox;
use crate::{Actor, AppDb, Scope, StoreError, TenantTx};

/// The purpose the client secret is sealed under (see [`SecretBox::new`]).
pub const CLIENT_SECRET_PURPOSE: &str = "sso-client-secret";
/// The purpose PKCE verifiers are sealed under.
pub const VERIFIER_PURPOSE: &str = "sso-pkce-verifier";

fn digest(text: &str) -> Vec<u8> {
    Sha256::digest(text.as_bytes()).to_vec()
}

/// What a client secret is sealed bound to: the workspace, issuer and client id it was entered
/// for. It opens for nothing else, so it is never sent to another issuer.
fn secret_context(tenant: TenantId, issuer: &str, client_id: &str) -> Vec<u8> {
    let mut context = b"tributary-sso-client-secret-v1".to_vec();
    for part in [tenant.to_string().as_str(), issuer, client_id] {
        context.push(0);
        context.extend_from_slice(&(part.len() as u64).to_be_bytes());
        context.extend_from_slice(part.as_bytes());
    }
    context
}

fn tenant_of(tx: &TenantTx) -> Result<TenantId, StoreError> {
    tx.tenant()
        .ok_or(StoreError::Forbidden("SSO settings need a tenant scope"))
}

/// A workspace's SSO configuration as its managers see it: everything but the secret, of which
/// only its presence shows.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SsoSettings {
    pub issuer: String,
    pub client_id: String,
    pub default_role: Role,
    pub enabled: bool,
    /// Whether owners and admins may sign in through the IdP.
    pub privileged_sign_in: bool,
    pub domains: Vec<SsoDomain>,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// One of a workspace's email domains.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SsoDomain {
    pub domain: String,
    pub verified: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    pub verified_at: Option<OffsetDateTime>,
}

/// A change to the configuration. `client_secret: None` keeps the stored one.
#[derive(Debug)]
pub struct SsoChange<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub client_secret: Option<&'a SecretString>,
    /// Lower-case domain names (the caller validates their shape; the database checks again).
    pub domains: &'a [String],
    pub default_role: Role,
    pub enabled: bool,
    /// Whether owners and admins may sign in through the IdP (and the default role may be
    /// admin).
    pub privileged_sign_in: bool,
}

/// A `control.sso_domains` row.
#[derive(sqlx::FromRow)]
struct DomainRow {
    domain: String,
    verified_at: Option<OffsetDateTime>,
}

impl From<DomainRow> for SsoDomain {
    fn from(row: DomainRow) -> Self {
        SsoDomain {
            domain: row.domain,
            verified: row.verified_at.is_some(),
            verified_at: row.verified_at,
        }
    }
}

async fn domains_of(tx: &mut TenantTx, tenant: TenantId) -> Result<Vec<SsoDomain>, StoreError> {
    let rows: Vec<DomainRow> = sqlx::query_as(
        "select domain, verified_at from control.sso_domains where tenant_id = $1 \
         order by tenant_id, domain",
    )
    .bind(tenant.as_uuid())
    .fetch_all(tx.connection())
    .await?;
    Ok(rows.into_iter().map(SsoDomain::from).collect())
}

/// The columns of a `control.sso_configs` row its managers see.
#[derive(sqlx::FromRow)]
struct SettingsRow {
    issuer: String,
    client_id: String,
    default_role: String,
    enabled: bool,
    privileged_sign_in: bool,
    updated_at: OffsetDateTime,
}

/// The transaction's tenant's SSO configuration, if it has one.
pub async fn settings(tx: &mut TenantTx) -> Result<Option<SsoSettings>, StoreError> {
    let tenant = tenant_of(tx)?;
    let row: Option<SettingsRow> = sqlx::query_as(
        "select issuer, client_id, default_role, enabled, privileged_sign_in, updated_at \
         from control.sso_configs where tenant_id = $1",
    )
    .bind(tenant.as_uuid())
    .fetch_optional(tx.connection())
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    Ok(Some(SsoSettings {
        default_role: parse_role(&row.default_role)?,
        issuer: row.issuer,
        client_id: row.client_id,
        enabled: row.enabled,
        privileged_sign_in: row.privileged_sign_in,
        updated_at: row.updated_at,
        domains: domains_of(tx, tenant).await?,
    }))
}

/// Creates or replaces the transaction's tenant's configuration (audited, without the secret).
/// Changing the issuer or the client id forgets every domain's verification (it proved control
/// through the previous IdP) and needs the client secret again: the stored one was entered for
/// the previous IdP and is replaced, never sent to the new one. Domains no longer listed are
/// removed. `Invalid` for an owner role as default, admin as default without
/// `privileged_sign_in`, or a first configuration or a change of issuer or client id without a
/// secret.
pub async fn put(
    tx: &mut TenantTx,
    change: &SsoChange<'_>,
    secrets: &SecretBox,
) -> Result<(), StoreError> {
    let tenant = tenant_of(tx)?;
    if !change.default_role.is_tenant_role() || change.default_role == Role::Owner {
        return Err(StoreError::Invalid(
            "the default role is admin, operator or viewer".into(),
        ));
    }
    if change.default_role.is_privileged() && !change.privileged_sign_in {
        return Err(StoreError::Invalid(
            "members join as admin only when owners and admins may sign in through the IdP".into(),
        ));
    }
    let previous: Option<(String, String)> = sqlx::query_as(
        "select issuer, client_id from control.sso_configs where tenant_id = $1 for update",
    )
    .bind(tenant.as_uuid())
    .fetch_optional(tx.connection())
    .await?;
    let sealed = change.client_secret.map(|secret| {
        secrets.seal_bound(
            secret.expose_secret().as_bytes(),
            &secret_context(tenant, change.issuer, change.client_id),
        )
    });
    let idp_changed = previous.as_ref().is_some_and(|(issuer, client_id)| {
        *issuer != change.issuer || *client_id != change.client_id
    });
    if idp_changed && sealed.is_none() {
        return Err(StoreError::Invalid(
            "a new issuer or client id needs its client secret".into(),
        ));
    }
    match (&previous, &sealed) {
        (None, None) => {
            return Err(StoreError::Invalid(
                "a client secret is required the first time".into(),
            ));
        }
        (None, Some((ciphertext, nonce))) => {
            sqlx::query(
                "insert into control.sso_configs (tenant_id, issuer, client_id, \
                     client_secret_ciphertext, client_secret_nonce, default_role, enabled, \
                     privileged_sign_in, client_secret_bound) \
                 values ($1, $2, $3, $4, $5, $6, $7, $8, true)",
            )
            .bind(tenant.as_uuid())
            .bind(change.issuer)
            .bind(change.client_id)
            .bind(ciphertext)
            .bind(nonce.as_slice())
            .bind(change.default_role.as_str())
            .bind(change.enabled)
            .bind(change.privileged_sign_in)
            .execute(tx.connection())
            .await?;
        }
        (Some(_), sealed) => {
            sqlx::query(
                "update control.sso_configs set issuer = $2, client_id = $3, \
                     client_secret_ciphertext = coalesce($4, client_secret_ciphertext), \
                     client_secret_nonce = coalesce($5, client_secret_nonce), \
                     client_secret_bound = client_secret_bound or $4 is not null, \
                     default_role = $6, enabled = $7, privileged_sign_in = $8, \
                     updated_at = now() \
                 where tenant_id = $1",
            )
            .bind(tenant.as_uuid())
            .bind(change.issuer)
            .bind(change.client_id)
            .bind(sealed.as_ref().map(|(ciphertext, _)| ciphertext))
            .bind(sealed.as_ref().map(|(_, nonce)| nonce.as_slice()))
            .bind(change.default_role.as_str())
            .bind(change.enabled)
            .bind(change.privileged_sign_in)
            .execute(tx.connection())
            .await?;
        }
    }
    if idp_changed {
        sqlx::query("delete from control.sso_domains where tenant_id = $1")
            .bind(tenant.as_uuid())
            .execute(tx.connection())
            .await?;
    } else {
        sqlx::query(
            "delete from control.sso_domains where tenant_id = $1 and not (domain = any($2))",
        )
        .bind(tenant.as_uuid())
        .bind(change.domains)
        .execute(tx.connection())
        .await?;
    }
    sqlx::query(
        "insert into control.sso_domains (tenant_id, domain) \
         select $1, domain from unnest($2::text[]) as listed (domain) \
         on conflict (tenant_id, domain) do nothing",
    )
    .bind(tenant.as_uuid())
    .bind(change.domains)
    .execute(tx.connection())
    .await?;
    audit::append(
        tx,
        AuditEntry::new("sso.configure", tenant.to_string()).details(serde_json::json!({
            "issuer": change.issuer,
            "client_id": change.client_id,
            "client_secret_changed": change.client_secret.is_some(),
            "domains": change.domains,
            "default_role": change.default_role,
            "enabled": change.enabled,
            "privileged_sign_in": change.privileged_sign_in,
            "verification_reset": idp_changed,
        })),
    )
    .await
}

/// Removes the transaction's tenant's configuration and domains (audited); `NotFound` if none.
pub async fn delete(tx: &mut TenantTx) -> Result<(), StoreError> {
    let tenant = tenant_of(tx)?;
    sqlx::query("delete from control.sso_domains where tenant_id = $1")
        .bind(tenant.as_uuid())
        .execute(tx.connection())
        .await?;
    let deleted = sqlx::query("delete from control.sso_configs where tenant_id = $1")
        .bind(tenant.as_uuid())
        .execute(tx.connection())
        .await?;
    if deleted.rows_affected() == 0 {
        return Err(StoreError::NotFound("SSO configuration"));
    }
    audit::append(tx, AuditEntry::new("sso.delete", tenant.to_string())).await
}

async fn control(
    database: &AppDb,
    tenant: Option<TenantId>,
    actor: Actor,
) -> Result<TenantTx, StoreError> {
    TenantTx::begin(database, Scope::Control { tenant, actor }).await
}

/// The workspace holding `domain` verified, if any: the one place a tenant is found from
/// outside it (the control role without a tenant sees verified domains only, migration 0014).
pub async fn workspace_for_domain(
    database: &AppDb,
    domain: &str,
) -> Result<Option<TenantId>, StoreError> {
    let mut tx = control(database, None, Actor::System("sso")).await?;
    let tenant: Option<uuid::Uuid> = sqlx::query_scalar(
        "select tenant_id from control.sso_domains where domain = $1 and verified_at is not null",
    )
    .bind(domain)
    .fetch_optional(tx.connection())
    .await?;
    tx.commit().await?;
    Ok(tenant.map(TenantId::from_uuid))
}

/// What running a sign-in through a workspace's IdP needs.
#[derive(Debug)]
pub struct IdentityProvider {
    pub tenant: TenantId,
    pub issuer: String,
    pub client_id: String,
    /// `None` when the stored secret was not sealed for this issuer and client id: the owner
    /// must enter it again, and no flow starts meanwhile.
    pub client_secret: Option<SecretString>,
    pub default_role: Role,
    pub enabled: bool,
    /// Whether owners and admins may sign in through it.
    pub privileged_sign_in: bool,
    /// Configured domains and whether each is verified.
    pub domains: Vec<SsoDomain>,
}

/// A `control.sso_configs` row with its sealed secret.
#[derive(sqlx::FromRow)]
struct IdentityProviderRow {
    issuer: String,
    client_id: String,
    client_secret_ciphertext: Vec<u8>,
    client_secret_nonce: Vec<u8>,
    default_role: String,
    enabled: bool,
    privileged_sign_in: bool,
    client_secret_bound: bool,
}

/// The IdP of `tenant` with its secret opened, if configured (whether enabled or not).
pub async fn identity_provider(
    database: &AppDb,
    tenant: TenantId,
    secrets: &SecretBox,
) -> Result<Option<IdentityProvider>, StoreError> {
    let mut tx = control(database, Some(tenant), Actor::System("sso")).await?;
    let row: Option<IdentityProviderRow> = sqlx::query_as(
        "select issuer, client_id, client_secret_ciphertext, client_secret_nonce, default_role, \
                enabled, privileged_sign_in, client_secret_bound \
         from control.sso_configs where tenant_id = $1",
    )
    .bind(tenant.as_uuid())
    .fetch_optional(tx.connection())
    .await?;
    let Some(row) = row else {
        tx.commit().await?;
        return Ok(None);
    };
    let domains = domains_of(&mut tx, tenant).await?;
    tx.commit().await?;
    // Only a secret sealed for this very issuer and client id opens: one entered for another
    // issuer (or before secrets were bound) is never used.
    let secret = row
        .client_secret_bound
        .then(|| {
            secrets.open_bound(
                &row.client_secret_ciphertext,
                &row.client_secret_nonce,
                &secret_context(tenant, &row.issuer, &row.client_id),
            )
        })
        .and_then(Result::ok)
        .and_then(|secret| String::from_utf8(secret).ok())
        .map(SecretString::from);
    if secret.is_none() {
        tracing::warn!(%tenant, "the stored sso client secret is not usable for this issuer and client id");
    }
    Ok(Some(IdentityProvider {
        tenant,
        default_role: parse_role(&row.default_role)?,
        issuer: row.issuer,
        client_id: row.client_id,
        client_secret: secret,
        enabled: row.enabled,
        privileged_sign_in: row.privileged_sign_in,
        domains,
    }))
}

/// Why a flow was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowPurpose {
    /// Someone signing in to the workspace.
    SignIn,
    /// An owner's test sign-in, which shows the IdP works (and verifies nothing).
    Test { admin: UserId },
}

/// A sign-in flow about to redirect to the IdP. `state` and `binding` are the random values in
/// the redirect and in the browser's flow cookie; only their hashes are stored.
#[derive(Debug)]
pub struct NewFlow<'a> {
    pub state: &'a str,
    pub binding: &'a str,
    pub purpose: FlowPurpose,
    pub nonce: &'a str,
    pub pkce_verifier: &'a SecretString,
    pub redirect_uri: &'a str,
    pub lifetime: Duration,
}

/// Records a flow of `tenant` (and forgets that workspace's flows over a day old).
pub async fn start_flow(
    database: &AppDb,
    tenant: TenantId,
    flow: &NewFlow<'_>,
    secrets: &SecretBox,
) -> Result<(), StoreError> {
    let (purpose, user) = match flow.purpose {
        FlowPurpose::SignIn => ("sign_in", None),
        FlowPurpose::Test { admin } => ("test", Some(*admin.as_uuid())),
    };
    let (ciphertext, nonce) = secrets.seal(flow.pkce_verifier.expose_secret().as_bytes());
    let mut tx = control(database, Some(tenant), Actor::System("sso")).await?;
    sqlx::query(
        "delete from control.sso_flows where tenant_id = $1 and expires_at < now() - interval '1 day'",
    )
    .bind(tenant.as_uuid())
    .execute(tx.connection())
    .await?;
    sqlx::query(
        "insert into control.sso_flows (tenant_id, state_hash, binding_hash, purpose, user_id, \
             nonce, verifier_ciphertext, verifier_nonce, redirect_uri, expires_at) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, now() + $10)",
    )
    .bind(tenant.as_uuid())
    .bind(digest(flow.state))
    .bind(digest(flow.binding))
    .bind(purpose)
    .bind(user)
    .bind(flow.nonce)
    .bind(ciphertext)
    .bind(nonce.as_slice())
    .bind(flow.redirect_uri)
    .bind(flow.lifetime)
    .execute(tx.connection())
    .await?;
    tx.commit().await
}

/// A flow taken for its callback.
#[derive(Debug)]
pub struct PendingFlow {
    pub purpose: FlowPurpose,
    pub nonce: String,
    pub pkce_verifier: SecretString,
    pub redirect_uri: String,
}

/// Why a callback's flow was refused; logged, never shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowRefusal {
    /// No flow of that workspace has this state, or it was used already.
    UnknownOrUsed,
    /// The browser does not hold the flow's binding cookie.
    OtherBrowser,
    Expired,
}

impl FlowRefusal {
    pub fn code(self) -> &'static str {
        match self {
            FlowRefusal::UnknownOrUsed => "state_unknown_or_used",
            FlowRefusal::OtherBrowser => "state_from_another_browser",
            FlowRefusal::Expired => "state_expired",
        }
    }
}

/// A `control.sso_flows` row as its callback spends it.
#[derive(sqlx::FromRow)]
struct FlowRow {
    binding_hash: Vec<u8>,
    live: bool,
    purpose: String,
    user_id: Option<uuid::Uuid>,
    nonce: String,
    verifier_ciphertext: Vec<u8>,
    verifier_nonce: Vec<u8>,
    redirect_uri: String,
}

/// Takes the flow of `tenant` whose state is `state`, spending it whatever happens next (a
/// state works once), and checks it belongs to the browser holding `binding` and is unexpired.
pub async fn take_flow(
    database: &AppDb,
    tenant: TenantId,
    state: &str,
    binding: &str,
    secrets: &SecretBox,
) -> Result<Result<PendingFlow, FlowRefusal>, StoreError> {
    let mut tx = control(database, Some(tenant), Actor::System("sso")).await?;
    let row: Option<FlowRow> = sqlx::query_as(
        "update control.sso_flows set used_at = now() \
         where tenant_id = $1 and state_hash = $2 and used_at is null \
         returning binding_hash, expires_at > now() as live, purpose, user_id, nonce, \
                   verifier_ciphertext, verifier_nonce, redirect_uri",
    )
    .bind(tenant.as_uuid())
    .bind(digest(state))
    .fetch_optional(tx.connection())
    .await?;
    tx.commit().await?;
    let Some(row) = row else {
        return Ok(Err(FlowRefusal::UnknownOrUsed));
    };
    let presented: [u8; 32] = Sha256::digest(binding.as_bytes()).into();
    if !crate::secret_token::same_hash(&row.binding_hash, &presented) {
        return Ok(Err(FlowRefusal::OtherBrowser));
    }
    if !row.live {
        return Ok(Err(FlowRefusal::Expired));
    }
    let purpose = row.purpose;
    let purpose = match (purpose.as_str(), row.user_id) {
        ("test", Some(admin)) => FlowPurpose::Test {
            admin: UserId::from_uuid(admin),
        },
        ("sign_in", _) => FlowPurpose::SignIn,
        _ => {
            return Err(StoreError::Invalid(format!(
                "stored flow purpose {purpose:?}"
            )));
        }
    };
    let verifier = secrets
        .open(&row.verifier_ciphertext, &row.verifier_nonce)
        .map_err(|_| StoreError::Config("a stored PKCE verifier does not open"))?;
    Ok(Ok(PendingFlow {
        purpose,
        nonce: row.nonce,
        pkce_verifier: SecretString::from(
            String::from_utf8(verifier)
                .map_err(|_| StoreError::Config("a stored PKCE verifier is not text"))?,
        ),
        redirect_uri: row.redirect_uri,
    }))
}

/// Marks `domain` verified for `tenant`, proved by the DNS TXT record `admin` had checked
/// (audited as them). `AlreadyExists` when another workspace holds it verified; `NotFound` when it is not
/// one of the workspace's domains.
pub async fn verify_domain(
    database: &AppDb,
    tenant: TenantId,
    admin: UserId,
    domain: &str,
    client_addr: Option<IpAddr>,
) -> Result<(), StoreError> {
    let mut tx = control(database, Some(tenant), Actor::User(admin)).await?;
    let updated = sqlx::query(
        "update control.sso_domains set verified_at = now(), verified_by = $3 \
         where tenant_id = $1 and domain = $2",
    )
    .bind(tenant.as_uuid())
    .bind(domain)
    .bind(admin.as_uuid())
    .execute(tx.connection())
    .await;
    match updated {
        Ok(done) if done.rows_affected() == 0 => return Err(StoreError::NotFound("SSO domain")),
        Ok(_) => {}
        Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("23505") => {
            return Err(StoreError::AlreadyExists(
                "a workspace with this domain verified",
            ));
        }
        Err(error) => return Err(error.into()),
    }
    audit::append(
        &mut tx,
        AuditEntry::new("sso.domain_verify", domain.to_owned())
            .details(serde_json::json!({ "via": "dns_txt" }))
            .client_addr(client_addr),
    )
    .await?;
    tx.commit().await
}

/// Who signed in through the IdP, and whether they joined the workspace just now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SsoMember {
    pub user: UserId,
    pub joined: bool,
    pub role: Role,
}

/// Why a sign-in the IdP vouched for still signs nobody in; logged, never shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignInRefusal {
    AccountDisabled,
    /// The member is an owner or admin, and the workspace's owner has not allowed privileged
    /// members to sign in through the IdP.
    PrivilegedRole,
}

impl SignInRefusal {
    pub fn code(self) -> &'static str {
        match self {
            SignInRefusal::AccountDisabled => "account_disabled",
            SignInRefusal::PrivilegedRole => "privileged_role_needs_password",
        }
    }
}

/// The account of `email` (created without a password if there is none) as a member of
/// `provider`'s workspace. A member keeps their role, never more; anyone else joins with the
/// default role (just-in-time membership), never owner. An owner or admin — an existing one, or
/// a newcomer whose default role is admin — is refused unless the workspace allows privileged
/// sign-in, and then nothing changes. Audited in the workspace: `member.add` when they joined,
/// `sso.sign_in` always.
pub async fn sign_in_member(
    database: &AppDb,
    provider: &IdentityProvider,
    email: &Email,
    client_addr: Option<IpAddr>,
) -> Result<Result<SsoMember, SignInRefusal>, StoreError> {
    let tenant = provider.tenant;
    let default_role = provider.default_role;
    if default_role == Role::Owner || !default_role.is_tenant_role() {
        return Err(StoreError::Invalid(
            "the default role is admin, operator or viewer".into(),
        ));
    }
    let mut tx = control(database, None, Actor::System("sso")).await?;
    sqlx::query(
        "insert into control.users (user_id, email) values ($1, $2) \
         on conflict (email) do nothing",
    )
    .bind(UserId::new_random().as_uuid())
    .bind(email.as_str())
    .execute(tx.connection())
    .await?;
    let (user, disabled): (uuid::Uuid, bool) = sqlx::query_as(
        "select user_id, disabled_at is not null as disabled from control.users where email = $1",
    )
    .bind(email.as_str())
    .fetch_one(tx.connection())
    .await?;
    if disabled {
        return Ok(Err(SignInRefusal::AccountDisabled));
    }
    tx.commit().await?;
    let user = UserId::from_uuid(user);
    let mut tx = control(database, Some(tenant), Actor::User(user)).await?;
    let existing: Option<String> = sqlx::query_scalar(
        "select role from control.members where tenant_id = $1 and user_id = $2",
    )
    .bind(tenant.as_uuid())
    .bind(user.as_uuid())
    .fetch_optional(tx.connection())
    .await?;
    let role = match &existing {
        Some(role) => parse_role(role)?,
        None => default_role,
    };
    if role.is_privileged() && !provider.privileged_sign_in {
        // Rolled back: no membership, no audit entry in the workspace.
        return Ok(Err(SignInRefusal::PrivilegedRole));
    }
    let (role, joined) = match existing {
        Some(_) => (role, false),
        None => {
            let added = sqlx::query(
                "insert into control.members (tenant_id, user_id, role) values ($1, $2, $3) \
                 on conflict (tenant_id, user_id) do nothing",
            )
            .bind(tenant.as_uuid())
            .bind(user.as_uuid())
            .bind(default_role.as_str())
            .execute(tx.connection())
            .await?;
            (default_role, added.rows_affected() == 1)
        }
    };
    if joined {
        audit::append(
            &mut tx,
            AuditEntry::new("member.add", user.to_string())
                .details(serde_json::json!({ "role": role, "via": "sso" }))
                .client_addr(client_addr),
        )
        .await?;
    }
    audit::append(
        &mut tx,
        AuditEntry::new("sso.sign_in", user.to_string()).client_addr(client_addr),
    )
    .await?;
    tx.commit().await?;
    Ok(Ok(SsoMember { user, joined, role }))
}

/// Records a session started through `tenant`'s IdP: it looks at that workspace and acts in it
/// only (`sso_tenant_id`).
pub async fn create_session(
    database: &AppDb,
    user: UserId,
    token: &str,
    lifetime: SessionLifetime,
    tenant: TenantId,
    client_addr: Option<IpAddr>,
    user_agent: Option<&str>,
) -> Result<(), StoreError> {
    let mut tx = control(database, None, Actor::User(user)).await?;
    let user_agent = user_agent.map(|agent| agent.chars().take(500).collect::<String>());
    sqlx::query(
        "insert into control.auth_sessions (session_hash, user_id, idle_expires_at, \
             absolute_expires_at, active_tenant_id, sso_tenant_id, client_addr, user_agent) \
         values ($1, $2, now() + $3, now() + $4, $5, $5, $6::inet, $7)",
    )
    .bind(digest(token))
    .bind(user.as_uuid())
    .bind(lifetime.idle)
    .bind(lifetime.absolute)
    .bind(tenant.as_uuid())
    .bind(client_addr.map(|addr| addr.to_string()))
    .bind(user_agent)
    .execute(tx.connection())
    .await?;
    crate::accounts::remember_last_tenant(&mut tx, user, tenant).await?;
    tx.commit().await
}
