//! The public site: home, platform, solutions, pricing, security, the book-a-demo form, and the
//! product and architecture documents rendered from the repository's markdown.

use askama::Template;
use axum::Router;
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use domain::Email;
use pulldown_cmark::{Event, Options, Parser, Tag};
use serde::Deserialize;

use crate::AppState;
use crate::auth::session::Visitor;
use crate::auth::throttle;
use crate::pages::{Chrome, PageError, SelectOption, render, render_failures, select_options};

/// The site's own pages, in the order of its navigation; [`routes`] serves each. With the
/// documents and the sign-in pages they make up [`crate::public_pages`].
pub const PAGES: [&str; 6] = [
    "/",
    "/platform",
    "/solutions",
    "/pricing",
    "/security",
    "/contact",
];

pub fn routes() -> Router<AppState> {
    let [
        home_path,
        platform_path,
        solutions_path,
        pricing_path,
        security_path,
        contact_path,
    ] = PAGES;
    Router::new()
        .route(home_path, get(home))
        .route(platform_path, get(platform))
        .route(solutions_path, get(solutions))
        .route(pricing_path, get(pricing))
        .route(security_path, get(security))
        .route(
            contact_path,
            get(contact_page).merge(post(contact_submit).route_layer(
                axum::middleware::from_fn_with_state("contact", render_failures),
            )),
        )
        .route("/docs/{slug}", get(document))
}

/// The address of every document the site renders.
pub fn document_paths() -> impl Iterator<Item = String> {
    DOCUMENTS.iter().map(|(slug, _, _)| format!("/docs/{slug}"))
}

#[derive(Template)]
#[template(path = "site/home.html")]
struct HomePage {
    chrome: Chrome,
}

#[derive(Template)]
#[template(path = "site/platform.html")]
struct PlatformPage {
    chrome: Chrome,
}

#[derive(Template)]
#[template(path = "site/solutions.html")]
struct SolutionsPage {
    chrome: Chrome,
}

#[derive(Template)]
#[template(path = "site/security.html")]
struct SecurityPage {
    chrome: Chrome,
}

async fn home(visitor: Visitor) -> Response {
    render(
        StatusCode::OK,
        &HomePage {
            chrome: visitor.chrome("home"),
        },
    )
}

async fn platform(visitor: Visitor) -> Response {
    render(
        StatusCode::OK,
        &PlatformPage {
            chrome: visitor.chrome("platform"),
        },
    )
}

async fn solutions(visitor: Visitor) -> Response {
    render(
        StatusCode::OK,
        &SolutionsPage {
            chrome: visitor.chrome("solutions"),
        },
    )
}

async fn security(visitor: Visitor) -> Response {
    render(
        StatusCode::OK,
        &SecurityPage {
            chrome: visitor.chrome("security"),
        },
    )
}

/// One plan as the pricing page shows it; `id` is the `dim_tenant.plan` value.
#[derive(Debug)]
struct PlanCard {
    id: &'static str,
    name: &'static str,
    price: &'static str,
    audience: &'static str,
    points: &'static [&'static str],
    featured: bool,
    href: &'static str,
    action: &'static str,
}

const PLANS: [PlanCard; 4] = [
    PlanCard {
        id: "free",
        name: "Free",
        price: "No charge",
        audience: "For trying the pipeline with the simulator or a test database.",
        points: &[
            "One workspace",
            "Community support",
            "Every security feature",
        ],
        featured: false,
        href: "/auth?mode=sign-up",
        action: "Create a workspace",
    },
    PlanCard {
        id: "team",
        name: "Team",
        price: "Priced per source",
        audience: "For one operations team streaming its production fleet.",
        points: &[
            "Members with owner, admin, operator and viewer roles",
            "API tokens for your scripts",
            "Email support",
        ],
        featured: true,
        href: "/auth?mode=sign-up",
        action: "Create a workspace",
    },
    PlanCard {
        id: "business",
        name: "Business",
        price: "Priced per source",
        audience: "For several teams and sites, with longer retention.",
        points: &[
            "Everything in Team",
            "Help pairing agents at several sites",
            "Support during business hours",
        ],
        featured: false,
        href: "/contact",
        action: "Talk to us",
    },
    PlanCard {
        id: "enterprise",
        name: "Enterprise",
        price: "Contract",
        audience: "For large fleets that need a scaled-out bus and agreed service levels.",
        points: &[
            "Everything in Business",
            "NATS JetStream bus for scale-out",
            "A named contact and agreed response times",
        ],
        featured: false,
        href: "/contact",
        action: "Talk to us",
    },
];

#[derive(Template)]
#[template(path = "site/pricing.html")]
struct PricingPage {
    chrome: Chrome,
    plans: &'static [PlanCard],
}

async fn pricing(visitor: Visitor) -> Response {
    render(
        StatusCode::OK,
        &PricingPage {
            chrome: visitor.chrome("pricing"),
            plans: &PLANS,
        },
    )
}

const FLEET_SIZES: [&str; 5] = [
    "1-100",
    "101-1,000",
    "1,001-10,000",
    "10,001-100,000",
    "more than 100,000",
];

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ContactForm {
    name: String,
    email: String,
    company: String,
    fleet_size: String,
    message: String,
}

#[derive(Template)]
#[template(path = "site/contact.html")]
struct ContactPage {
    chrome: Chrome,
    form: ContactForm,
    errors: Vec<String>,
    sent: bool,
    fleet_sizes: Vec<SelectOption>,
}

async fn contact_page(visitor: Visitor) -> Response {
    render(
        StatusCode::OK,
        &ContactPage {
            chrome: visitor.chrome("contact"),
            form: ContactForm::default(),
            errors: Vec::new(),
            sent: false,
            fleet_sizes: select_options(&FLEET_SIZES, ""),
        },
    )
}

fn validate(form: &ContactForm) -> Result<store::contact::ContactRequest, Vec<String>> {
    let mut errors = Vec::new();
    let text = |value: &str| value.trim().to_owned();
    let name = text(&form.name);
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        errors.push("Enter your name (up to 200 characters).".to_owned());
    }
    let email = Email::parse(&form.email);
    if email.is_err() {
        errors.push("Enter your work email, like name@example.com.".to_owned());
    }
    let company = text(&form.company);
    if company.is_empty() || company.chars().count() > 200 || company.chars().any(char::is_control)
    {
        errors.push("Enter your company's name (up to 200 characters).".to_owned());
    }
    if !FLEET_SIZES.contains(&form.fleet_size.as_str()) {
        errors.push("Choose the size of your fleet.".to_owned());
    }
    let message = form.message.trim().to_owned();
    if message.chars().count() > 4000 {
        errors.push("Keep the message under 4,000 characters.".to_owned());
    }
    match (errors.is_empty(), email) {
        (true, Ok(email)) => Ok(store::contact::ContactRequest {
            name,
            email: email.as_str().to_owned(),
            company,
            fleet_size: form.fleet_size.clone(),
            message,
        }),
        _ => Err(errors),
    }
}

async fn contact_submit(
    State(state): State<AppState>,
    visitor: Visitor,
    Form(form): Form<ContactForm>,
) -> Result<Response, PageError> {
    let chrome = visitor.chrome("contact");
    let page = |form: ContactForm, errors: Vec<String>, sent: bool| ContactPage {
        chrome: chrome.clone(),
        fleet_sizes: select_options(&FLEET_SIZES, &form.fleet_size),
        form,
        errors,
        sent,
    };
    let request = match validate(&form) {
        Ok(request) => request,
        Err(errors) => {
            return Ok(render(
                StatusCode::UNPROCESSABLE_ENTITY,
                &page(form, errors, false),
            ));
        }
    };
    let bucket = throttle::address_bucket(
        "contact",
        &visitor
            .client_addr
            .map_or_else(|| "unknown".to_owned(), |addr| addr.to_string()),
    );
    let attempts =
        store::accounts::count_attempt(&state.database, &bucket, throttle::WINDOW).await?;
    if attempts > throttle::CONTACT_LIMIT {
        let errors = vec![
            "We have received several requests from your network just now. Wait 15 minutes and try again.".to_owned(),
        ];
        return Ok(render(
            StatusCode::TOO_MANY_REQUESTS,
            &page(form, errors, false),
        ));
    }
    let request_id = store::contact::record(&state.database, &request).await?;
    tracing::info!(%request_id, "book-a-demo request stored");
    Ok(render(
        StatusCode::OK,
        &page(ContactForm::default(), Vec::new(), true),
    ))
}

/// The repository documents the site renders, compiled into the binary: the URL slug under
/// `/docs/`, the file, and its text. The architecture page is `ARCHITECTURE.md`, the product page
/// `docs/prd.md`; the rest are the documents the architecture links to.
const DOCUMENTS: &[(&str, &str, &str)] = &[
    ("prd", "docs/prd.md", include_str!("../../../docs/prd.md")),
    (
        "architecture",
        "ARCHITECTURE.md",
        include_str!("../../../ARCHITECTURE.md"),
    ),
    (
        "database",
        "docs/database.md",
        include_str!("../../../docs/database.md"),
    ),
    (
        "security",
        "docs/security.md",
        include_str!("../../../docs/security.md"),
    ),
    (
        "edge",
        "docs/edge.md",
        include_str!("../../../docs/edge.md"),
    ),
    (
        "protocol",
        "docs/protocol.md",
        include_str!("../../../docs/protocol.md"),
    ),
    (
        "agent",
        "docs/agent.md",
        include_str!("../../../docs/agent.md"),
    ),
    ("bus", "docs/bus.md", include_str!("../../../docs/bus.md")),
    (
        "materializer",
        "docs/materializer.md",
        include_str!("../../../docs/materializer.md"),
    ),
    ("web", "docs/web.md", include_str!("../../../docs/web.md")),
    ("api", "docs/api.md", include_str!("../../../docs/api.md")),
    (
        "alerts",
        "docs/alerts.md",
        include_str!("../../../docs/alerts.md"),
    ),
    (
        "reports",
        "docs/reports.md",
        include_str!("../../../docs/reports.md"),
    ),
    ("sso", "docs/sso.md", include_str!("../../../docs/sso.md")),
    (
        "operations",
        "docs/operations.md",
        include_str!("../../../docs/operations.md"),
    ),
    (
        "benchmarks",
        "docs/benchmarks.md",
        include_str!("../../../docs/benchmarks.md"),
    ),
];

/// A document's title: its first `# ` heading.
fn document_title(markdown: &str) -> &str {
    markdown
        .lines()
        .find_map(|line| line.strip_prefix("# "))
        .unwrap_or("Document")
}

#[derive(Debug)]
struct DocLink {
    href: String,
    title: &'static str,
    current: bool,
}

#[derive(Template)]
#[template(path = "site/doc.html")]
struct DocPage {
    chrome: Chrome,
    title: &'static str,
    source: &'static str,
    documents: Vec<DocLink>,
    html: String,
}

/// Where a repository-relative link in a rendered document points on the site: a document the
/// site renders maps to its page (keeping any `#fragment`); anything else stays as written.
fn site_link(target: &str) -> Option<String> {
    let (path, fragment) = match target.split_once('#') {
        Some((path, fragment)) => (path, format!("#{fragment}")),
        None => (target, String::new()),
    };
    let file = path.trim_start_matches("../").trim_start_matches("docs/");
    DOCUMENTS
        .iter()
        .find(|(_, source, _)| source.trim_start_matches("docs/") == file)
        .map(|(slug, _, _)| format!("/docs/{slug}{fragment}"))
}

/// Markdown to HTML. Raw HTML in the source is shown as text, never passed through: the
/// documents are the repository's own, but a page must not run what a document embeds.
pub fn markdown_to_html(markdown: &str) -> String {
    let options = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH;
    let events = Parser::new_ext(markdown, options).map(|event| match event {
        Event::Html(html) | Event::InlineHtml(html) => Event::Text(html),
        Event::Start(Tag::Link {
            link_type,
            dest_url,
            title,
            id,
        }) => {
            let dest_url = site_link(&dest_url).map_or(dest_url, Into::into);
            Event::Start(Tag::Link {
                link_type,
                dest_url,
                title,
                id,
            })
        }
        event => event,
    });
    let mut html = String::new();
    pulldown_cmark::html::push_html(&mut html, events);
    html
}

async fn document(visitor: Visitor, Path(slug): Path<String>) -> Response {
    let Some((_, source, markdown)) = DOCUMENTS.iter().find(|(known, _, _)| *known == slug) else {
        return PageError::NotFound.into_page(&visitor.chrome("docs"));
    };
    render(
        StatusCode::OK,
        &DocPage {
            chrome: visitor.chrome("docs"),
            title: document_title(markdown),
            source,
            documents: DOCUMENTS
                .iter()
                .map(|(other, _, text)| DocLink {
                    href: format!("/docs/{other}"),
                    title: document_title(text),
                    current: *other == slug,
                })
                .collect(),
            html: markdown_to_html(markdown),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two entries for one slug would register one path twice, which the router refuses at
    /// start-up; two for one file would list a document twice.
    #[test]
    fn every_document_has_a_slug_and_a_file_of_its_own() {
        let mut slugs: Vec<&str> = DOCUMENTS.iter().map(|(slug, _, _)| *slug).collect();
        let mut files: Vec<&str> = DOCUMENTS.iter().map(|(_, file, _)| *file).collect();
        let count = DOCUMENTS.len();
        slugs.sort_unstable();
        slugs.dedup();
        files.sort_unstable();
        files.dedup();
        assert_eq!(
            (slugs.len(), files.len()),
            (count, count),
            "{slugs:?} {files:?}"
        );
    }
}
