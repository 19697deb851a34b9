//! A workspace's SSO settings as the page (`app::sso`, `/app/settings/sso`) and the JSON API
//! (`api::sso`) submit them — issuer, client id, the write-only client secret, email domains,
//! the default role of just-in-time members, on or off — and their one validation,
//! [`SsoInput::validate`].

use axum::response::{IntoResponse, Redirect, Response};
use domain::Role;
use secrecy::SecretString;
use serde::Deserialize;
use store::sso::SsoChange;

use crate::outbound::OutboundPolicy;

/// The settings page's path, also its entry in `web::APP_PAGES`.
pub const PATH: &str = "/app/settings/sso";

/// Back to the settings page, saying how it went (a fixed code, never text from the request):
/// where the page's forms and the test sign-in's callback end.
pub(crate) fn back(outcome: &str) -> Response {
    Redirect::to(&format!("{PATH}?{outcome}")).into_response()
}

/// The most domains one workspace lists.
const MAX_DOMAINS: usize = 20;

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
    /// Whether owners and admins may sign in through the IdP; off unless sent.
    pub privileged_sign_in: Toggle,
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
    pub fn is_on(&self) -> bool {
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
    pub privileged_sign_in: bool,
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
            privileged_sign_in: self.privileged_sign_in,
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
/// fragment, on a host that is not loopback — plain `http` and loopback hosts only when
/// `policy` allows them (the development setting).
pub fn valid_issuer(issuer: &str, policy: OutboundPolicy) -> bool {
    let Ok(url) = url::Url::parse(issuer) else {
        return false;
    };
    let Some(host) = url.host_str() else {
        return false;
    };
    policy.allows_url(url.scheme(), host)
        && issuer.len() <= 500
        && url.username().is_empty()
        && url.password().is_none()
        && url.query().is_none()
        && url.fragment().is_none()
}

impl SsoInput {
    /// Checks every field; the messages name what to fix (never echo the secret).
    pub fn validate(self, policy: OutboundPolicy) -> Result<ValidSso, Vec<&'static str>> {
        let mut errors = Vec::new();
        let issuer = self.issuer.trim().to_owned();
        if !valid_issuer(&issuer, policy) {
            errors.push(
                "The issuer is an https URL on a public host, without a query (plain http and \
                 loopback hosts only under the development setting).",
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
        let default_role = self
            .default_role
            .parse::<Role>()
            .ok()
            .filter(|role| Role::SSO_DEFAULT_ROLES.contains(role));
        if default_role.is_none() {
            errors.push("New members join as admin, operator or viewer.");
        }
        let privileged_sign_in = self.privileged_sign_in.is_on();
        if default_role.is_some_and(Role::is_privileged) && !privileged_sign_in {
            errors
                .push("New members join as admin only if owners and admins may sign in with SSO.");
        }
        match (default_role, errors.is_empty()) {
            (Some(default_role), true) => Ok(ValidSso {
                issuer,
                client_id,
                client_secret: (!secret.is_empty()).then(|| SecretString::from(secret.to_owned())),
                domains,
                default_role,
                enabled: self.enabled.is_on(),
                privileged_sign_in,
            }),
            _ => Err(errors),
        }
    }
}
