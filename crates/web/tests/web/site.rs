//! The public site: every page type in the design with the security headers and cookie
//! attributes, the documents rendered from the repository, and the book-a-demo form (validated,
//! stored, rate-limited, CSRF-protected).

use store::Actor;
use test_support::TestDatabase;

use crate::browser::{Browser, Page};
use crate::serve;

pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; \
     object-src 'none'";

/// The headers every response carries, whatever produced it.
pub fn assert_security_headers(page: &Page, what: &str) {
    for (name, value) in [
        ("content-security-policy", CSP),
        (
            "strict-transport-security",
            "max-age=31536000; includeSubDomains",
        ),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("cross-origin-opener-policy", "same-origin"),
    ] {
        assert_eq!(page.header(name), Some(value), "{name} on {what}");
    }
}

/// Every cookie the app sets is `__Host-`, Secure, HttpOnly, SameSite, Path=/ and has no Domain.
pub fn assert_cookie_attributes(page: &Page, what: &str) {
    for line in page.set_cookies() {
        assert!(line.starts_with("__Host-tributary-"), "{what}: {line}");
        for attribute in ["; Path=/", "; Secure", "; HttpOnly", "; SameSite=Lax"] {
            assert!(line.contains(attribute), "{what}: {line} lacks {attribute}");
        }
        assert!(!line.contains("Domain="), "{what}: {line}");
    }
}

/// A page in the design: the one stylesheet, the vendored htmx, no inline script or style.
pub fn assert_designed_html(page: &Page, what: &str) {
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8"),
        "{what}"
    );
    assert!(
        page.body
            .contains(r#"<link rel="stylesheet" href="/assets/tributary.css">"#),
        "{what} lacks the stylesheet"
    );
    assert!(
        page.body
            .contains(r#"<link rel="icon" href="/assets/favicon.svg" type="image/svg+xml">"#),
        "{what} lacks the icon"
    );
    assert!(
        page.body
            .contains(r##"<a class="skip-link" href="#main">"##),
        "{what}"
    );
    for (index, _) in page.body.match_indices("<script") {
        let tag_end = page.body[index..].find('>').unwrap() + index;
        assert!(
            page.body[index..tag_end].contains(r#"src="/assets/"#),
            "{what} has an inline or foreign script: {}",
            &page.body[index..tag_end]
        );
    }
    assert!(!page.body.contains("<style"), "{what} has an inline style");
    assert!(
        !page.body.contains(" style="),
        "{what} has a style attribute"
    );
    // Links, sources and form targets; text may show a URL (the SSO settings show their
    // callback address, plain http on loopback in tests, and the issuer as a field's value).
    for attribute in ["href=\"http://", "src=\"http://", "action=\"http://"] {
        assert!(
            !page.body.contains(attribute) || what.contains("docs"),
            "{what} links off-site"
        );
    }
}

#[tokio::test]
async fn every_public_page_is_designed_secured_and_sets_only_host_cookies() {
    let test_database = TestDatabase::new().await;
    let (addr, _stop) = serve(test_database.connect().await).await;

    let pages = [
        ("/", "Every change in your operational database"),
        ("/platform", "The stream bus"),
        ("/solutions", "EV charging"),
        ("/pricing", "What every plan includes"),
        ("/security", "Isolation by the database"),
        ("/contact", "Book a demo"),
        ("/docs/prd", "Fixed decisions"),
        ("/docs/architecture", "Architecture invariants"),
        ("/auth", "Sign in"),
        ("/auth?mode=sign-up", "Create a workspace"),
    ];
    for (path, content) in pages {
        let mut browser = Browser::new(&addr);
        let page = browser.get(path).await;
        assert_eq!(page.status, 200, "{path}");
        assert!(page.body.contains(content), "{path} lacks {content:?}");
        assert_designed_html(&page, path);
        assert_security_headers(&page, path);
        assert_eq!(page.header("cache-control"), Some("no-store"), "{path}");
        assert!(
            page.set_cookie("__Host-tributary-csrf").is_some(),
            "{path} gives a new browser its anti-forgery cookie"
        );
        assert_cookie_attributes(&page, path);
        // A browser that has the cookie keeps it.
        let again = browser.get(path).await;
        assert!(
            again.set_cookie("__Host-tributary-csrf").is_none(),
            "{path}"
        );
    }

    // Error pages are in the design too, and JSON under /api.
    let mut browser = Browser::new(&addr);
    let missing = browser.get("/no-such-page").await;
    assert_eq!(missing.status, 404);
    assert!(missing.body.contains("Page not found"));
    assert_designed_html(&missing, "404");
    assert_security_headers(&missing, "404");
    let api_missing = browser.get("/api/v1/no-such-endpoint").await;
    assert_eq!(api_missing.status, 404);
    assert!(
        api_missing
            .body
            .starts_with(r#"{"error":{"code":"not_found""#),
        "{}",
        api_missing.body
    );
    assert_security_headers(&api_missing, "API 404");

    // Assets: served from the binary, with their types, cacheable, still with the headers.
    let css = browser.get("/assets/tributary.css").await;
    assert_eq!(css.status, 200);
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    assert_eq!(css.header("cache-control"), Some("public, max-age=3600"));
    assert!(
        css.body.contains("@media (max-width: 48rem)"),
        "responsive rules"
    );
    assert!(css.body.contains(":focus-visible"), "visible focus");
    assert_security_headers(&css, "css");
    assert!(
        css.set_cookies().is_empty(),
        "a cacheable asset sets no cookie"
    );
    let icon = browser.get("/assets/favicon.svg").await;
    assert_eq!(icon.status, 200);
    assert_eq!(icon.header("content-type"), Some("image/svg+xml"));
    assert!(icon.body.starts_with("<svg "));
    let htmx = browser.get("/assets/htmx-2.0.11.min.js").await;
    assert_eq!(htmx.status, 200);
    assert_eq!(
        htmx.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert!(htmx.body.contains(r#"version:"2.0.11""#));
    let sse = browser.get("/assets/htmx-ext-sse-2.2.4.min.js").await;
    assert_eq!(sse.status, 200);
    assert!(sse.body.contains(r#"htmx.defineExtension("sse""#));
}

#[test]
fn vendored_assets_are_the_versions_the_lockfile_pins() {
    let assets = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
    let lock: serde_json::Value =
        serde_json::from_slice(&std::fs::read(assets.join("package-lock.json")).unwrap()).unwrap();
    let package: serde_json::Value =
        serde_json::from_slice(&std::fs::read(assets.join("package.json")).unwrap()).unwrap();
    // (npm package, vendored file name, file in the package, text that names the version)
    let vendored = [
        ("htmx.org", "htmx", "dist/htmx.min.js", true),
        ("htmx-ext-sse", "htmx-ext-sse", "dist/sse.min.js", false),
    ];
    for (name, file_name, dist, names_version) in vendored {
        let version = lock["packages"][format!("node_modules/{name}")]["version"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} is not in the lockfile"));
        assert_eq!(
            package["dependencies"][name], version,
            "{name} pinned exactly"
        );
        let file = assets.join(format!("vendor/{file_name}-{version}.min.js"));
        let text = std::fs::read_to_string(&file).unwrap_or_else(|_| panic!("{file:?} missing"));
        if names_version {
            assert!(text.contains(&format!(r#"version:"{version}""#)));
        }
        // When `npm ci` has run, the vendored copy is byte for byte the registry's.
        let installed = assets.join(format!("node_modules/{name}/{dist}"));
        if let Ok(installed) = std::fs::read_to_string(installed) {
            assert_eq!(installed, text, "re-run scripts/vendor-web-assets");
        }
    }
}

#[tokio::test]
async fn documents_render_from_the_repository_markdown() {
    let test_database = TestDatabase::new().await;
    let (addr, _stop) = serve(test_database.connect().await).await;
    let mut browser = Browser::new(&addr);

    let architecture = browser.get("/docs/architecture").await;
    let source = include_str!("../../../../ARCHITECTURE.md");
    // The planes diagram, as a preformatted block, escaped.
    assert!(architecture.body.contains("<pre><code"), "diagram block");
    assert!(
        architecture
            .body
            .contains("stream bus, partitioned by tenant")
    );
    assert!(
        architecture
            .body
            .contains("tributary-agent ──outbound TLS┼─▶")
    );
    // Every second-level heading of the file is on the page.
    for heading in source.lines().filter_map(|line| line.strip_prefix("## ")) {
        assert!(
            architecture.body.contains(&format!("<h2>{heading}</h2>")),
            "heading {heading:?}"
        );
    }
    let prd = browser.get("/docs/prd").await;
    assert!(prd.body.contains("<h2>Fixed decisions</h2>"));
    assert!(
        prd.body.contains(r#"href="/docs/architecture""#),
        "links map to site pages"
    );

    // Every document the navigation lists renders, and every link between documents resolves to
    // a page of the site rather than to a markdown file.
    let documents: Vec<String> = architecture
        .body
        .match_indices(r#"<li><a href="/docs/"#)
        .map(|(index, _)| {
            let start = index + r#"<li><a href=""#.len();
            let end = architecture.body[start..].find('"').unwrap() + start;
            architecture.body[start..end].to_owned()
        })
        .collect();
    assert!(documents.len() >= 10, "{documents:?}");
    for path in &documents {
        let page = browser.get(path).await;
        assert_eq!(page.status, 200, "{path}");
        assert_designed_html(&page, path);
        assert!(
            !page.body.contains(".md\""),
            "{path} links to a markdown file"
        );
        for (index, _) in page.body.match_indices(r#"href="/docs/"#) {
            let start = index + r#"href=""#.len();
            let end = page.body[start..].find(['"', '#']).unwrap() + start;
            let target = &page.body[start..end];
            assert!(
                documents.iter().any(|known| known == target),
                "{path} links to {target}"
            );
        }
    }
    assert_eq!(browser.get("/docs/no-such-document").await.status, 404);
}

#[tokio::test]
async fn the_contact_form_is_validated_stored_rate_limited_and_csrf_protected() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let stored = || async {
        store::contact::list(&database.app, Actor::System("test"), 100)
            .await
            .unwrap()
    };
    let good = [
        ("name", "Ada Lovelace"),
        ("email", "Ada@Example.com"),
        ("company", "Analytical Engines"),
        ("fleet_size", "101-1,000"),
        ("message", "We run 400 chargers."),
    ];

    // Without the token: refused, nothing stored.
    let mut browser = Browser::new(&addr);
    browser.get("/contact").await;
    let refused = browser.post("/contact", &good).await;
    assert_eq!(refused.status, 403);
    assert!(refused.body.contains("This form has expired"));
    // Without any cookie at all.
    let refused = Browser::new(&addr).post("/contact", &good).await;
    assert_eq!(refused.status, 403);
    // With a token from another browser.
    let mut other = Browser::new(&addr);
    let other_token = other.get("/contact").await.csrf();
    let mut fields = good.to_vec();
    fields.push(("csrf", &other_token));
    assert_eq!(browser.post("/contact", &fields).await.status, 403);
    // With a valid token, but sent from another site.
    let mut cross = Browser::new(&addr);
    cross.extra_headers = vec![("Origin".into(), "https://evil.example".into())];
    assert_eq!(
        cross.submit("/contact", "/contact", &good).await.status,
        403
    );
    let mut cross = Browser::new(&addr);
    cross.extra_headers = vec![("Sec-Fetch-Site".into(), "cross-site".into())];
    assert_eq!(
        cross.submit("/contact", "/contact", &good).await.status,
        403
    );
    assert!(stored().await.is_empty());

    // Invalid fields: each named, nothing stored, what was typed is kept.
    let invalid = browser
        .submit(
            "/contact",
            "/contact",
            &[
                ("name", ""),
                ("email", "not-an-email"),
                ("company", "Acme"),
                ("fleet_size", "a million"),
                ("message", "<script>alert(1)</script>"),
            ],
        )
        .await;
    assert_eq!(invalid.status, 422);
    for message in [
        "Enter your name",
        "Enter your work email",
        "Choose the size of your fleet",
    ] {
        assert!(invalid.body.contains(message), "{message}");
    }
    assert!(
        invalid.body.contains("&#60;script&#62;alert(1)"),
        "kept, escaped: {}",
        invalid.body
    );
    assert!(!invalid.body.contains("<script>alert"), "never raw");
    assert!(stored().await.is_empty());

    // A valid request is stored, normalised, and thanked for.
    let sent = browser.submit("/contact", "/contact", &good).await;
    assert_eq!(sent.status, 200);
    assert!(sent.body.contains("Thank you, we have your request."));
    let requests = stored().await;
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].request.email, "ada@example.com");
    assert_eq!(requests[0].request.fleet_size, "101-1,000");

    // Five per address per window, then refused until the window ends.
    for _ in 0..4 {
        assert_eq!(
            browser.submit("/contact", "/contact", &good).await.status,
            200
        );
    }
    let limited = browser.submit("/contact", "/contact", &good).await;
    assert_eq!(limited.status, 429);
    assert!(limited.body.contains("Wait 15 minutes"));
    assert_eq!(limited.header("retry-after"), Some("900"));
    assert_eq!(stored().await.len(), 5);
}

/// The public pages and the documents describe what ships: PostgreSQL capture, the materializer
/// and the aggregator as running parts, the dashboards, the explorer and the analytics API by
/// name (the schema-drift inbox and the connector wizard among them), scheduled reports and their
/// S3-compatible store, and what is only planned as planned, never as available.
#[tokio::test]
async fn the_public_pages_are_true_to_what_ships() {
    let test_database = TestDatabase::new().await;
    let (addr, _stop) = serve(test_database.connect().await).await;
    let mut browser = Browser::new(&addr);
    // Phrases that described shipped parts as still to come.
    let stale = [
        "next source being built",
        "In development",
        "in development",
        "simulator source today",
        "The dashboards arrive",
        "The remaining app pages (dashboard",
        "logical replication first",
        "an operational dashboard, data sources and their health,\nthe connector wizard",
        "Planned, not built yet: a connector wizard",
        "Planned: the connector wizard",
        "not built yet: scheduled reports",
        "Planned: scheduled reports",
        "S3-compatible store is the same API; configuring one is planned",
    ];
    let mut pages = Vec::new();
    for path in ["/", "/platform", "/solutions", "/pricing", "/security"] {
        let page = browser.get(path).await;
        assert_eq!(page.status, 200, "{path}");
        pages.push((path.to_owned(), page.body));
    }
    for document in ["prd", "architecture", "web"] {
        let path = format!("/docs/{document}");
        let page = browser.get(&path).await;
        assert_eq!(page.status, 200, "{path}");
        pages.push((path, page.body));
    }
    pages.push((
        "README.md".into(),
        include_str!("../../../../README.md").to_owned(),
    ));
    for (path, body) in &pages {
        for phrase in stale {
            assert!(!body.contains(phrase), "{path} still says {phrase:?}");
        }
        // What is not built is only ever named as planned.
        for planned in ["a check of new passwords against a list of common ones"] {
            for (at, _) in body.match_indices(planned) {
                let before = &body[at.saturating_sub(400)..at];
                assert!(
                    before.contains("Planned") || before.contains("planned"),
                    "{path} names the {planned} without saying it is planned"
                );
            }
        }
    }
    let body = |path: &str| {
        pages
            .iter()
            .find(|(page, _)| page == path)
            .map(|(_, body)| body.as_str())
            .unwrap()
    };
    let platform = body("/platform");
    for shipped in [
        "PostgreSQL, by logical replication",
        "The materializer applies every event",
        "The aggregator recomputes",
        "saved dashboards",
        "server-drawn SVG charts",
        "<code>/app/explore</code>",
        "<code>/api/v1/analytics/*</code>",
        "<code>/app/drift</code>",
        "<code>/app/connectors</code>",
        "<code>/api/v1/alert-rules</code>",
        "<code>/app/alerts</code>",
    ] {
        assert!(
            platform.contains(shipped),
            "/platform does not say {shipped:?}"
        );
    }
    assert!(
        platform.contains("A report can run on a schedule")
            && platform.contains("S3-compatible bucket"),
        "/platform says reports run on a schedule and files go to a bucket"
    );
    let home = body("/");
    assert!(home.contains("saved dashboards") && home.contains("explorer"));
    let prd = body("/docs/prd");
    assert!(prd.contains("PostgreSQL logical replication today"));
    assert!(prd.contains("saved dashboards") && prd.contains("/api/v1/analytics/*"));
    let readme = body("README.md");
    for shipped in [
        "captures PostgreSQL by\nlogical replication",
        "tenant\nmaterializer",
        "global\naggregator",
        "saved dashboards",
        "`/api/v1/analytics/*`",
        "the explorer",
    ] {
        assert!(
            readme.contains(shipped),
            "README.md does not say {shipped:?}"
        );
    }
    let web = body("/docs/web");
    assert!(web.contains("Your account"), "docs/web.md: the user menu");
}
