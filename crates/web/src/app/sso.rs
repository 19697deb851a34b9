//! `/app/settings/sso`: a workspace's IdP for its owners (`ManageSso`) — issuer, client id, the
//! write-only client secret, email domains, the default role of just-in-time members, whether
//! owners and admins may sign in through it, on or off — the DNS check that verifies the
//! domains, and the test sign-in that shows the IdP works. The JSON API (`api::sso`) validates
//! with the same [`SsoInput::validate`].

use askama::Template;
use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use domain::{Permission, Role};
use serde::Deserialize;
use store::sso::{FlowPurpose, SsoSettings};

use crate::AppState;
use crate::auth::session::Member;
use crate::pages::{Chrome, PageError, SelectOption, render, select_options};
use crate::shell::{Shell, shell};
use crate::sso::domains::{Verification, check_and_verify};
use crate::sso::settings::{DomainList, PATH, SsoInput, back};
use crate::sso::{begin_flow, redirect_uri, refused_page};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(PATH, get(page).post(save))
        .route("/app/settings/sso/delete", post(remove))
        .route("/app/settings/sso/test", post(test_sign_in))
        .route("/app/settings/sso/verify", post(verify_domains))
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
    privileged_sign_in: bool,
    roles: Vec<SelectOption>,
    redirect_uri: String,
    /// The TXT record every listed domain publishes: its name's first label and its text.
    record_label: &'static str,
    record_value: String,
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
        "verified" => Some("The DNS record was found: the domain is verified."),
        "tested" => Some("The test sign-in worked: the IdP signs people in."),
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
        "dns-not-found" => Some(
            "No listed domain publishes this workspace's TXT record yet (DNS changes can take a \
             while to appear), or it could not be looked up.",
        ),
        "not-configured" => Some("Save the configuration first."),
        "secret-required" => Some(
            "Enter the client secret: the first time, and whenever the issuer or client id \
             changes (the stored one was for the previous IdP and is never sent to another).",
        ),
        _ => None,
    }
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
    let mut tx = member.tx(state, Permission::ManageSso).await?;
    let settings = store::sso::settings(&mut tx).await?;
    tx.commit().await?;
    let (issuer, client_id, domains, role, enabled, privileged_sign_in) =
        match (&submitted, &settings) {
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
                input.privileged_sign_in.is_on(),
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
                settings.privileged_sign_in,
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
            privileged_sign_in,
            roles: select_options(&Role::SSO_DEFAULT_ROLES.map(Role::as_str), &role),
            redirect_uri: redirect_uri(headers).unwrap_or_default(),
            record_label: crate::sso::domains::RECORD_LABEL,
            record_value: state.sso.domains().record_value(member.tenant()),
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
) -> Result<Response, PageError> {
    let errors = refusal(&query.refused).into_iter().collect();
    render_page(
        &state,
        &member,
        &headers,
        StatusCode::OK,
        None,
        notice(&query.done),
        errors,
    )
    .await
}

async fn save(
    State(state): State<AppState>,
    member: Member,
    headers: HeaderMap,
    Form(input): Form<SsoInput>,
) -> Result<Response, PageError> {
    member.require(Permission::ManageSso)?;
    // The form comes back as submitted after a refusal, except the secret.
    let shown = SsoInput {
        client_secret: String::new(),
        ..input.clone()
    };
    let errors = match input.validate(state.sso.policy()) {
        Err(errors) => errors,
        Ok(valid) => {
            let mut tx = member.tx(&state, Permission::ManageSso).await?;
            match store::sso::put(&mut tx, &valid.change(), state.sso.client_secrets()).await {
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

async fn remove(State(state): State<AppState>, member: Member) -> Result<Response, PageError> {
    let mut tx = member.tx(&state, Permission::ManageSso).await?;
    store::sso::delete(&mut tx).await?;
    tx.commit().await?;
    tracing::info!(tenant = %member.tenant(), by = %member.session().user.user_id, "sso configuration removed");
    Ok(back("done=deleted"))
}

/// Starts the owner's test sign-in through the workspace's IdP (enabled or not yet).
async fn test_sign_in(
    State(state): State<AppState>,
    member: Member,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    member.require(Permission::ManageSso)?;
    let provider =
        store::sso::identity_provider(&state.database, member.tenant(), state.sso.client_secrets())
            .await?;
    let Some(provider) = provider else {
        return Ok(back("refused=not-configured"));
    };
    let purpose = FlowPurpose::Test {
        admin: member.session().user.user_id,
    };
    Ok(
        match begin_flow(&state, &headers, &provider, purpose, None).await {
            Ok(response) => response,
            Err(refused) => refused_page(&member.visitor, &refused),
        },
    )
}

/// Checks each listed, unverified domain for this workspace's DNS TXT record and verifies those
/// that publish it (audited). Proof of control outside the IdP: whoever runs the IdP cannot
/// publish it, and another workspace's token does not count.
async fn verify_domains(
    State(state): State<AppState>,
    member: Member,
) -> Result<Response, PageError> {
    let mut tx = member.tx(&state, Permission::ManageSso).await?;
    let settings = store::sso::settings(&mut tx).await?;
    tx.commit().await?;
    let Some(settings) = settings else {
        return Ok(back("refused=not-configured"));
    };
    let tenant = member.tenant();
    let owner = member.session().user.user_id;
    let mut outcome = "refused=dns-not-found";
    for listed in settings.domains.iter().filter(|listed| !listed.verified) {
        match check_and_verify(
            &state,
            tenant,
            owner,
            &listed.domain,
            member.visitor.client_addr,
        )
        .await?
        {
            Verification::Verified => outcome = "done=verified",
            Verification::Taken if outcome != "done=verified" => {
                outcome = "refused=domain-taken";
            }
            _ => {}
        }
    }
    Ok(back(outcome))
}
