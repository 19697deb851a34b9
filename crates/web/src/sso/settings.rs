//! `/app/settings/sso`: a workspace's IdP for owners and admins (`ManageWorkspace`) — issuer,
//! client id, the write-only client secret, email domains, the default role of just-in-time
//! members, on or off — and the test sign-in that verifies the domains. The JSON API
//! (`api::sso`) validates with the same [`SsoInput::validate`].

use askama::Template;
use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use domain::{Permission, Role};
use secrecy::SecretString;
use serde::Deserialize;
use store::sso::{FlowPurpose, SsoChange, SsoSettings};

use super::{redirect_uri, refused_page};
use crate::AppState;
use crate::app::{Shell, shell};
use crate::auth::session::Member;
use crate::pages::{Chrome, PageError, SelectOption, render, select_options};

/// The page's path, also its entry in `web::APP_PAGES`.
pub const PATH: &str = "/app/settings/sso";
/// The most domains one workspace lists.
const MAX_DOMAINS: usize = 20;
/// Roles just-in-time members may get: never owner.
pub const DEFAULT_ROLES: [&str; 3] = ["admin", "operator", "viewer"];

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(PATH, get(page).post(save))
        .route("/app/settings/sso/delete", post(remove))
        .route("/app/settings/sso/test", post(test_sign_in))
}

/// A configuration as submitted, by the page or the API, before validation.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SsoInput {
    pub issuer: String,
    pub client_id: String,
    /// Empty keeps the stored secret.
    pub client_secret: String,
    /// Separated by commas, spaces or new lines (the page); the API sends a list.
    pub domains: DomainList,
    pub default_role: String,
    /// The page's checkbox sends `on`; the API a boolean.
    pub enabled: Toggle,
}

/// Domains as a list (JSON) or as text (a form field).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(untagged)]
pub enum DomainList {
    List(Vec<String>),
    Text(String),
    #[default]
    #[serde(skip)]
    Empty,
}

/// A checkbox (`on`, or absent) or a JSON boolean.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(untagged)]
pub enum Toggle {
    Bool(bool),
    Text(String),
    #[default]
    #[serde(skip)]
    Off,
}

impl Toggle {
    fn is_on(&self) -> bool {
        match self {
            Toggle::Bool(on) => *on,
            Toggle::Text(text) => text == "on" || text == "true",
            Toggle::Off => false,
        }
    }
}

/// A configuration that passed validation.
#[derive(Debug)]
pub struct ValidSso {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Option<SecretString>,
    pub domains: Vec<String>,
    pub default_role: Role,
    pub enabled: bool,
}

impl ValidSso {
    pub fn change(&self) -> SsoChange<'_> {
        SsoChange {
            issuer: &self.issuer,
            client_id: &self.client_id,
            client_secret: self.client_secret.as_ref(),
            domains: &self.domains,
            default_role: self.default_role,
            enabled: self.enabled,
        }
    }
}

/// True for a DNS name of at least two labels, lower case, letters, digits and inner hyphens.
fn valid_domain(domain: &str) -> bool {
    let labels: Vec<&str> = domain.split('.').collect();
    (3..=253).contains(&domain.len())
        && labels.len() >= 2
        && labels.iter().all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// Whether `issuer` may be used: an absolute `https` URL without credentials, query or
/// fragment — or `http` to a loopback address, for a local IdP.
pub fn valid_issuer(issuer: &str) -> bool {
    let Ok(url) = url::Url::parse(issuer) else {
        return false;
    };
    let Some(host) = url.host_str() else {
        return false;
    };
    let scheme_ok = match url.scheme() {
        "https" => true,
        "http" => super::is_loopback_host(host),
        _ => false,
    };
    scheme_ok
        && issuer.len() <= 500
        && url.username().is_empty()
        && url.password().is_none()
        && url.query().is_none()
        && url.fragment().is_none()
}

impl SsoInput {
    /// Checks every field; the messages name what to fix (never echo the secret).
    pub fn validate(self) -> Result<ValidSso, Vec<&'static str>> {
        let mut errors = Vec::new();
        let issuer = self.issuer.trim().to_owned();
        if !valid_issuer(&issuer) {
            errors.push(
                "The issuer is an https URL (http only to a loopback address), without a query.",
            );
        }
        let client_id = self.client_id.trim().to_owned();
        if client_id.is_empty() || client_id.len() > 500 || client_id.chars().any(char::is_control)
        {
            errors.push("Enter the client id the IdP gave (up to 500 characters).");
        }
        let secret = self.client_secret.trim();
        if secret.len() > 1000 || secret.chars().any(char::is_control) {
            errors.push("The client secret is at most 1000 characters.");
        }
        let listed: Vec<String> = match self.domains {
            DomainList::List(list) => list,
            DomainList::Text(text) => text
                .split(|c: char| c == ',' || c.is_whitespace())
                .map(str::to_owned)
                .collect(),
            DomainList::Empty => Vec::new(),
        };
        let mut domains: Vec<String> = listed
            .iter()
            .map(|domain| domain.trim().trim_end_matches('.').to_ascii_lowercase())
            .filter(|domain| !domain.is_empty())
            .collect();
        domains.sort();
        domains.dedup();
        if domains.is_empty() || domains.len() > MAX_DOMAINS {
            errors.push("List your organisation's email domains (1 to 20), like example.com.");
        } else if !domains.iter().all(|domain| valid_domain(domain)) {
            errors.push("Each domain is a name like example.com: letters, digits, hyphens, dots.");
        }
        let default_role = DEFAULT_ROLES
            .contains(&self.default_role.as_str())
            .then(|| self.default_role.parse::<Role>().ok())
            .flatten();
        if default_role.is_none() {
            errors.push("New members join as admin, operator or viewer.");
        }
        match (default_role, errors.is_empty()) {
            (Some(default_role), true) => Ok(ValidSso {
                issuer,
                client_id,
                client_secret: (!secret.is_empty()).then(|| SecretString::from(secret.to_owned())),
                domains,
                default_role,
                enabled: self.enabled.is_on(),
            }),
            _ => Err(errors),
        }
    }
}

#[derive(Template)]
#[template(path = "app/sso.html")]
struct SsoPage {
    chrome: Chrome,
    shell: Shell,
    settings: Option<SsoSettings>,
    /// What the form shows (what was submitted, after a refusal).
    issuer: String,
    client_id: String,
    domains: String,
    enabled: bool,
    roles: Vec<SelectOption>,
    redirect_uri: String,
    notice: Option<&'static str>,
    errors: Vec<&'static str>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PageQuery {
    done: String,
    refused: String,
}

fn notice(code: &str) -> Option<&'static str> {
    match code {
        "saved" => Some("Single sign-on saved."),
        "deleted" => Some("Single sign-on was removed; its domains no longer route sign-in here."),
        "verified" => Some("The test sign-in worked: the domain is verified."),
        _ => None,
    }
}

fn refusal(code: &str) -> Option<&'static str> {
    match code {
        "domain-not-listed" => Some(
            "The test sign-in worked, but the address is not on one of the listed domains: \
             nothing was verified.",
        ),
        "domain-taken" => Some("That domain cannot be verified for this workspace."),
        "not-configured" => Some("Save the configuration before the test sign-in."),
        "secret-required" => Some("Enter the client secret the first time."),
        _ => None,
    }
}

/// Back to the page, saying how it went (a fixed code, never text from the request).
pub(crate) fn back(outcome: &str) -> Response {
    Redirect::to(&format!("{PATH}?{outcome}")).into_response()
}

async fn render_page(
    state: &AppState,
    member: &Member,
    headers: &HeaderMap,
    status: StatusCode,
    submitted: Option<SsoInput>,
    notice: Option<&'static str>,
    errors: Vec<&'static str>,
) -> Result<Response, PageError> {
    let mut tx = member.tx(state, Permission::ManageWorkspace).await?;
    let settings = store::sso::settings(&mut tx).await?;
    tx.commit().await?;
    let (issuer, client_id, domains, role, enabled) = match (&submitted, &settings) {
        (Some(input), _) => (
            input.issuer.clone(),
            input.client_id.clone(),
            match &input.domains {
                DomainList::Text(text) => text.clone(),
                DomainList::List(list) => list.join(", "),
                DomainList::Empty => String::new(),
            },
            input.default_role.clone(),
            input.enabled.is_on(),
        ),
        (None, Some(settings)) => (
            settings.issuer.clone(),
            settings.client_id.clone(),
            settings
                .domains
                .iter()
                .map(|domain| domain.domain.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            settings.default_role.as_str().to_owned(),
            settings.enabled,
        ),
        (None, None) => Default::default(),
    };
    let role = if role.is_empty() {
        "viewer".into()
    } else {
        role
    };
    Ok(render(
        status,
        &SsoPage {
            chrome: member.visitor.chrome("app"),
            shell: shell(member, PATH),
            settings,
            issuer,
            client_id,
            domains,
            enabled,
            roles: select_options(&DEFAULT_ROLES, &role),
            redirect_uri: redirect_uri(headers).unwrap_or_default(),
            notice,
            errors,
        },
    ))
}

async fn page(
    State(state): State<AppState>,
    member: Member,
    headers: HeaderMap,
    Query(query): Query<PageQuery>,
) -> Response {
    let errors = refusal(&query.refused).into_iter().collect();
    let result = render_page(
        &state,
        &member,
        &headers,
        StatusCode::OK,
        None,
        notice(&query.done),
        errors,
    )
    .await;
    result.unwrap_or_else(|error| error.into_page(&member.visitor.chrome("app")))
}

async fn save(
    State(state): State<AppState>,
    member: Member,
    headers: HeaderMap,
    Form(input): Form<SsoInput>,
) -> Response {
    let result = async {
        member.require(Permission::ManageWorkspace)?;
        // The form comes back as submitted after a refusal, except the secret.
        let shown = SsoInput {
            client_secret: String::new(),
            ..input.clone()
        };
        let errors = match input.validate() {
            Err(errors) => errors,
            Ok(valid) => {
                let mut tx = member.tx(&state, Permission::ManageWorkspace).await?;
                match store::sso::put(&mut tx, &valid.change(), state.sso.client_secrets()).await
                {
                    Ok(()) => {
                        tx.commit().await?;
                        tracing::info!(tenant = %member.tenant(), by = %member.session().user.user_id, "sso configuration saved");
                        return Ok(back("done=saved"));
                    }
                    Err(store::StoreError::Invalid(_)) => {
                        refusal("secret-required").into_iter().collect()
                    }
                    Err(error) => return Err(error.into()),
                }
            }
        };
        render_page(
            &state,
            &member,
            &headers,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some(shown),
            None,
            errors,
        )
        .await
    }
    .await;
    result.unwrap_or_else(|error| error.into_page(&member.visitor.chrome("app")))
}

async fn remove(State(state): State<AppState>, member: Member) -> Response {
    let result = async {
        let mut tx = member.tx(&state, Permission::ManageWorkspace).await?;
        store::sso::delete(&mut tx).await?;
        tx.commit().await?;
        tracing::info!(tenant = %member.tenant(), by = %member.session().user.user_id, "sso configuration removed");
        Ok(back("done=deleted"))
    }
    .await;
    result.unwrap_or_else(|error: PageError| error.into_page(&member.visitor.chrome("app")))
}

/// Starts the admin's test sign-in through the workspace's IdP (enabled or not yet).
async fn test_sign_in(
    State(state): State<AppState>,
    member: Member,
    headers: HeaderMap,
) -> Response {
    if let Err(error) = member.require(Permission::ManageWorkspace) {
        return error.into_page(&member.visitor.chrome("app"));
    }
    let provider =
        store::sso::identity_provider(&state.database, member.tenant(), state.sso.client_secrets())
            .await;
    let provider = match provider {
        Ok(Some(provider)) => provider,
        Ok(None) => return back("refused=not-configured"),
        Err(error) => return PageError::from(error).into_page(&member.visitor.chrome("app")),
    };
    let purpose = FlowPurpose::Test {
        admin: member.session().user.user_id,
    };
    match super::begin_flow(&state, &headers, &provider, purpose, None).await {
        Ok(response) => response,
        Err(refused) => refused_page(&member.visitor, &refused),
    }
}
