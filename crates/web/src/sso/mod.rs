//! Single sign-on with OpenID Connect, per workspace (docs/sso.md): "Sign in with SSO" on
//! `/auth`, the IdP's redirect back to `/auth/sso/callback`, and the owner's test sign-in that
//! verifies the workspace's email domains. The settings as submitted and their validation are
//! [`settings`]; the settings page is `app::sso`, the JSON API `api::sso`.
//!
//! A flow is the authorization code flow with PKCE (S256), a nonce and a state. State, nonce
//! and the PKCE verifier stay on the server (`store::sso`), for ten minutes and one use, bound
//! to the browser that started the flow by a `__Host-` cookie; a callback in another browser, a
//! reused or unknown state, a token for another nonce, an address the IdP has not verified or
//! one outside the workspace's verified domains are all refused with the same page. The reason
//! goes to the log, never a token or a secret.

pub mod domains;
pub mod settings;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use domain::{Email, Permission, TenantId};
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use store::StoreError;
use store::secret_box::SecretBox;
use store::sso::{FlowPurpose, IdentityProvider, NewFlow};

use crate::AppState;
use crate::auth::session::{LIFETIME, Visitor};
use crate::auth::throttle;
use crate::cookies;
use crate::outbound::{Outbound, OutboundPolicy, is_loopback_host};
use crate::pages::{PageError, render_failures};

/// How long a sign-in flow may take, from the redirect to the IdP to its callback.
const FLOW_LIFETIME: time::Duration = time::Duration::minutes(10);
/// The one message any failed SSO sign-in shows.
const SSO_FAILED: &str = "Single sign-on did not complete. Start again from the sign-in page, \
     or ask your workspace's admin if it keeps failing.";
/// What "Sign in with SSO" answers for an address no workspace routes to SSO.
pub const SSO_UNAVAILABLE: &str = "Single sign-on is not set up for that address. Sign in with \
     your password, or ask your workspace's admin.";

/// What SSO needs besides the database: the box sealing client secrets and PKCE verifiers, and
/// the platform's outbound HTTP client, through which every request to an IdP goes.
#[derive(Debug, Clone)]
pub struct Sso {
    client_secrets: Arc<SecretBox>,
    verifiers: Arc<SecretBox>,
    http: Outbound,
    domains: domains::DomainProof,
}

impl Sso {
    /// Seals under keys derived from the platform's master secret (as the edge does its own);
    /// talks to IdPs through `outbound`, whose policy also decides which issuers are accepted.
    /// Domains are proved by DNS TXT records looked up through `dns_resolver` (the system's
    /// resolvers when `None`).
    pub fn new(
        master_secret: &SecretString,
        outbound: Outbound,
        dns_resolver: Option<std::net::SocketAddr>,
    ) -> Self {
        Self {
            client_secrets: Arc::new(SecretBox::new(
                master_secret,
                store::sso::CLIENT_SECRET_PURPOSE,
            )),
            verifiers: Arc::new(SecretBox::new(master_secret, store::sso::VERIFIER_PURPOSE)),
            http: outbound,
            domains: domains::DomainProof::new(master_secret, dns_resolver),
        }
    }

    /// The workspaces' DNS TXT tokens and the resolver that checks them.
    pub(crate) fn domains(&self) -> &domains::DomainProof {
        &self.domains
    }

    /// What issuers may be: public `https`, or also loopback under the development setting.
    pub fn policy(&self) -> OutboundPolicy {
        self.http.policy()
    }

    pub(crate) fn client_secrets(&self) -> &SecretBox {
        &self.client_secrets
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/auth/sso", post(start_sign_in))
        .route("/auth/sso/callback", get(callback))
        .route_layer(axum::middleware::from_fn_with_state(
            "auth",
            render_failures,
        ))
}

/// A failed step of a flow: a fixed code for the log. The browser only sees [`SSO_FAILED`].
#[derive(Debug)]
pub(crate) struct Refused {
    code: &'static str,
    tenant: Option<TenantId>,
}

impl Refused {
    fn new(code: &'static str, tenant: Option<TenantId>) -> Self {
        Self { code, tenant }
    }
}

impl From<StoreError> for Refused {
    fn from(error: StoreError) -> Self {
        tracing::error!(%error, "sso step failed in the store");
        Self::new("store_error", None)
    }
}

pub(crate) fn refused_page(visitor: &Visitor, refused: &Refused) -> Response {
    match refused.tenant {
        Some(tenant) => tracing::warn!(reason = refused.code, %tenant, "sso sign-in refused"),
        None => tracing::warn!(reason = refused.code, "sso sign-in refused"),
    }
    let mut response = PageError::BadRequest(SSO_FAILED.into()).into_page(&visitor.chrome("auth"));
    response
        .headers_mut()
        .append(header::SET_COOKIE, cookies::clear(cookies::SSO_FLOW));
    response
}

/// The callback address the IdP sends the browser back to, from the request's own host: plain
/// `http` only on loopback (local runs and tests), `https` otherwise. It must be registered at
/// the IdP; a forged `Host` makes the IdP refuse the flow, nothing more.
pub fn redirect_uri(headers: &HeaderMap) -> Option<String> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let well_formed = !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    if !well_formed {
        return None;
    }
    let name = match host.rsplit_once(':') {
        Some((name, port)) if !name.ends_with(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    };
    let scheme = if is_loopback_host(name) {
        "http"
    } else {
        "https"
    };
    Some(format!("{scheme}://{host}/auth/sso/callback"))
}

/// The provider's metadata and a client for it.
async fn client_for(
    sso: &Sso,
    provider: &IdentityProvider,
    redirect: &str,
) -> Result<
    CoreClient<
        openidconnect::EndpointSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointMaybeSet,
        openidconnect::EndpointMaybeSet,
    >,
    Refused,
> {
    let tenant = Some(provider.tenant);
    // Checked before anything is fetched: a secret sealed for another issuer never opens.
    let client_secret = provider
        .client_secret
        .as_ref()
        .ok_or(Refused::new("client_secret_unusable", tenant))?;
    let issuer = IssuerUrl::new(provider.issuer.clone())
        .map_err(|_| Refused::new("issuer_invalid", tenant))?;
    let metadata = CoreProviderMetadata::discover_async(issuer, &sso.http)
        .await
        .map_err(|error| {
            tracing::warn!(error = %error_chain(&error), tenant = %provider.tenant, "sso discovery failed");
            Refused::new("discovery_failed", tenant)
        })?;
    let redirect = RedirectUrl::new(redirect.to_owned())
        .map_err(|_| Refused::new("redirect_invalid", tenant))?;
    Ok(CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(provider.client_id.clone()),
        Some(ClientSecret::new(client_secret.expose_secret().to_owned())),
    )
    .set_redirect_uri(redirect))
}

/// An error and its sources, one line (for the log; these errors carry no secrets or tokens).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Starts a flow for `provider`: stores it, and answers with the redirect to the IdP carrying
/// the browser-binding cookie.
pub(crate) async fn begin_flow(
    state: &AppState,
    headers: &HeaderMap,
    provider: &IdentityProvider,
    purpose: FlowPurpose,
    login_hint: Option<&str>,
) -> Result<Response, Refused> {
    let tenant = Some(provider.tenant);
    let redirect = redirect_uri(headers).ok_or(Refused::new("host_invalid", tenant))?;
    let client = client_for(&state.sso, provider, &redirect).await?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let flow_state = format!(
        "{}.{}",
        provider.tenant.as_uuid().simple(),
        cookies::random_value()
    );
    let nonce = cookies::random_value();
    let state_for_url = flow_state.clone();
    let nonce_for_url = nonce.clone();
    let mut request = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            move || CsrfToken::new(state_for_url),
            move || Nonce::new(nonce_for_url),
        )
        .add_scope(Scope::new("email".into()))
        .set_pkce_challenge(challenge);
    if let Some(hint) = login_hint {
        request = request.add_extra_param("login_hint", hint.to_owned());
    }
    let (url, _, _) = request.url();
    let binding = cookies::random_value();
    let verifier = SecretString::from(verifier.secret().to_owned());
    store::sso::start_flow(
        &state.database,
        provider.tenant,
        &NewFlow {
            state: &flow_state,
            binding: &binding,
            purpose,
            nonce: &nonce,
            pkce_verifier: &verifier,
            redirect_uri: &redirect,
            lifetime: FLOW_LIFETIME,
        },
        &state.sso.verifiers,
    )
    .await?;
    let mut response = Redirect::to(url.as_str()).into_response();
    *response.status_mut() = StatusCode::SEE_OTHER;
    response.headers_mut().append(
        header::SET_COOKIE,
        cookies::set(
            cookies::SSO_FLOW,
            &binding,
            Some(FLOW_LIFETIME.whole_seconds()),
        ),
    );
    Ok(response)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct StartForm {
    email: String,
}

/// "Sign in with SSO": finds the workspace by the address's verified domain and sends the
/// browser to its IdP. An address no workspace routes gets the same answer whether or not the
/// domain is configured anywhere.
async fn start_sign_in(
    State(state): State<AppState>,
    visitor: Visitor,
    headers: HeaderMap,
    Form(form): Form<StartForm>,
) -> Result<Response, PageError> {
    let address = visitor
        .client_addr
        .map_or_else(|| "unknown".to_owned(), |addr| addr.to_string());
    let attempts = store::accounts::count_attempt(
        &state.database,
        &throttle::address_bucket("sso", &address),
        throttle::WINDOW,
    )
    .await?;
    if attempts > throttle::ADDRESS_LIMIT {
        return Ok(crate::auth::sign_in_page(
            &visitor,
            StatusCode::TOO_MANY_REQUESTS,
            &form.email,
            throttle::THROTTLED,
        ));
    }
    let unavailable =
        || crate::auth::sign_in_page(&visitor, StatusCode::OK, &form.email, SSO_UNAVAILABLE);
    let Ok(email) = Email::parse(&form.email) else {
        return Ok(unavailable());
    };
    let domain = email_domain(&email);
    let provider = async {
        let Some(tenant) = store::sso::workspace_for_domain(&state.database, domain).await? else {
            return Ok(None);
        };
        store::sso::identity_provider(&state.database, tenant, state.sso.client_secrets()).await
    }
    .await?;
    let provider = match provider {
        Some(provider) if provider.enabled => provider,
        _ => return Ok(unavailable()),
    };
    Ok(
        match begin_flow(
            &state,
            &headers,
            &provider,
            FlowPurpose::SignIn,
            Some(email.as_str()),
        )
        .await
        {
            Ok(response) => response,
            Err(refused) => refused_page(&visitor, &refused),
        },
    )
}

fn email_domain(email: &Email) -> &str {
    email
        .as_str()
        .rsplit_once('@')
        .map_or("", |(_, domain)| domain)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// The tenant a state names: `<tenant uuid, simple>.<64 hex digits>`.
fn tenant_of_state(state: &str) -> Option<TenantId> {
    let (tenant, random) = state.split_once('.')?;
    if random.len() != 64 || !random.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    uuid::Uuid::try_parse(tenant).ok().map(TenantId::from_uuid)
}

/// An IdP's error code, reduced to what is safe to log.
fn safe_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_lowercase() || *c == '_')
        .take(40)
        .collect()
}

/// The IdP sent the browser back: check everything, then sign in (or, for a test sign-in,
/// verify the domain).
async fn callback(
    State(state): State<AppState>,
    visitor: Visitor,
    headers: HeaderMap,
    Query(query): Query<CallbackQuery>,
) -> Response {
    match complete(&state, &visitor, &headers, query).await {
        Ok(mut response) => {
            response
                .headers_mut()
                .append(header::SET_COOKIE, cookies::clear(cookies::SSO_FLOW));
            response
        }
        Err(refused) => refused_page(&visitor, &refused),
    }
}

async fn complete(
    state: &AppState,
    visitor: &Visitor,
    headers: &HeaderMap,
    query: CallbackQuery,
) -> Result<Response, Refused> {
    let flow_state = query.state.as_deref().unwrap_or_default();
    let tenant = tenant_of_state(flow_state).ok_or(Refused::new("state_malformed", None))?;
    let some_tenant = Some(tenant);
    let binding = cookies::get(headers, cookies::SSO_FLOW)
        .ok_or(Refused::new("no_flow_cookie", some_tenant))?;
    let flow = store::sso::take_flow(
        &state.database,
        tenant,
        flow_state,
        &binding,
        &state.sso.verifiers,
    )
    .await?
    .map_err(|refusal| Refused::new(refusal.code(), some_tenant))?;
    if let Some(error) = &query.error {
        tracing::info!(idp_error = %safe_code(error), %tenant, "the IdP answered with an error");
        return Err(Refused::new("idp_error", some_tenant));
    }
    let code = query
        .code
        .filter(|code| !code.is_empty() && code.len() <= 2048)
        .ok_or(Refused::new("no_code", some_tenant))?;
    let provider =
        store::sso::identity_provider(&state.database, tenant, state.sso.client_secrets())
            .await?
            .ok_or(Refused::new("not_configured", some_tenant))?;
    if flow.purpose == FlowPurpose::SignIn && !provider.enabled {
        return Err(Refused::new("disabled", some_tenant));
    }
    let client = client_for(&state.sso, &provider, &flow.redirect_uri).await?;
    let tokens = client
        .exchange_code(AuthorizationCode::new(code))
        .map_err(|_| Refused::new("no_token_endpoint", some_tenant))?
        .set_pkce_verifier(PkceCodeVerifier::new(
            flow.pkce_verifier.expose_secret().to_owned(),
        ))
        .request_async(&state.sso.http)
        .await
        .map_err(|error| {
            tracing::warn!(error = %token_error(&error), %tenant, "sso code exchange failed");
            Refused::new("code_exchange_failed", some_tenant)
        })?;
    let id_token = tokens
        .id_token()
        .ok_or(Refused::new("no_id_token", some_tenant))?;
    let claims = id_token
        .claims(&client.id_token_verifier(), &Nonce::new(flow.nonce.clone()))
        .map_err(|error| {
            let code = match error {
                openidconnect::ClaimsVerificationError::InvalidNonce(_) => "nonce_mismatch",
                openidconnect::ClaimsVerificationError::SignatureVerification(_) => {
                    "id_token_signature"
                }
                openidconnect::ClaimsVerificationError::InvalidAudience(_) => "id_token_audience",
                openidconnect::ClaimsVerificationError::InvalidIssuer(_) => "id_token_issuer",
                openidconnect::ClaimsVerificationError::Expired(_) => "id_token_expired",
                _ => "id_token_invalid",
            };
            Refused::new(code, some_tenant)
        })?;
    if claims.email_verified() != Some(true) {
        return Err(Refused::new("email_not_verified", some_tenant));
    }
    let email = claims
        .email()
        .and_then(|email| Email::parse(email.as_str()).ok())
        .ok_or(Refused::new("no_email", some_tenant))?;
    let domain = email_domain(&email);
    let listed = provider
        .domains
        .iter()
        .find(|listed| listed.domain == domain);
    match flow.purpose {
        FlowPurpose::SignIn => {
            if !listed.is_some_and(|listed| listed.verified) {
                return Err(Refused::new("domain_not_verified", some_tenant));
            }
            sign_in(state, visitor, &provider, &email).await
        }
        FlowPurpose::Test { admin } => {
            tested(state, visitor, tenant, admin, listed.is_some()).await
        }
    }
}

/// A token endpoint error, for the log: the OAuth error code only, never a response body.
fn token_error<E: std::error::Error + 'static>(
    error: &openidconnect::RequestTokenError<
        E,
        openidconnect::StandardErrorResponse<openidconnect::core::CoreErrorResponseType>,
    >,
) -> String {
    match error {
        openidconnect::RequestTokenError::ServerResponse(response) => {
            format!("the IdP refused: {}", response.error())
        }
        openidconnect::RequestTokenError::Request(error) => error_chain(error),
        openidconnect::RequestTokenError::Parse(_, _) => "unparseable token response".into(),
        openidconnect::RequestTokenError::Other(_) => "unexpected token response".into(),
    }
}

/// Signs `email` in to the provider's workspace like a password sign-in does (a new session
/// replaces the browser's old one, new anti-forgery cookie), after just-in-time membership.
async fn sign_in(
    state: &AppState,
    visitor: &Visitor,
    provider: &IdentityProvider,
    email: &Email,
) -> Result<Response, Refused> {
    let tenant = provider.tenant;
    let member = store::sso::sign_in_member(&state.database, provider, email, visitor.client_addr)
        .await?
        .map_err(|refusal| Refused::new(refusal.code(), Some(tenant)))?;
    if let Some(old) = &visitor.session {
        store::accounts::revoke_session(&state.database, &old.token).await?;
    }
    let token = cookies::random_value();
    store::sso::create_session(
        &state.database,
        member.user,
        &token,
        LIFETIME,
        tenant,
        visitor.client_addr,
        visitor.user_agent.as_deref(),
    )
    .await?;
    tracing::info!(user = %member.user, %tenant, joined = member.joined, role = %member.role, "signed in through sso");
    Ok(crate::auth::signed_in(&token))
}

/// Completes an owner's test sign-in: the same owner, still allowed to manage its single
/// sign-on, in the browser that started it. It shows the IdP signs people in and verifies
/// nothing: an IdP vouching for an address proves nothing about who controls its domain (that
/// is the DNS record's job, [`domains`]).
async fn tested(
    state: &AppState,
    visitor: &Visitor,
    tenant: TenantId,
    owner: domain::UserId,
    listed: bool,
) -> Result<Response, Refused> {
    let some_tenant = Some(tenant);
    let Some(session) = visitor.session.as_ref() else {
        return Err(Refused::new("test_by_another_account", some_tenant));
    };
    if session.user.user_id != owner {
        return Err(Refused::new("test_by_another_account", some_tenant));
    }
    // A session from another workspace's IdP acts in that workspace only.
    if session.user.sso_tenant.is_some_and(|only| only != tenant) {
        return Err(Refused::new("test_from_another_workspace", some_tenant));
    }
    let memberships = store::accounts::memberships(&state.database, owner).await?;
    let still_allowed = memberships.iter().any(|membership| {
        membership.tenant_id == tenant && membership.role.allows(Permission::ManageSso)
    });
    if !still_allowed {
        return Err(Refused::new("test_by_non_owner", some_tenant));
    }
    tracing::info!(%tenant, by = %owner, listed, "sso test sign-in completed");
    Ok(settings::back(if listed {
        "done=tested"
    } else {
        "refused=domain-not-listed"
    }))
}
