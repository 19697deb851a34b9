//! Single sign-on end to end against a real OpenID provider (npm's `oidc-provider`, started by
//! the test from `tests/oidc/`): configuration, the admin's test sign-in verifying a domain,
//! just-in-time membership, and every refusal — wrong state, wrong nonce, no binding cookie,
//! another browser, a replayed callback, an unverified address or domain — with the client
//! secret never in a page, an API answer or the log.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use domain::{Email, Role, TenantId};
use serde_json::Value;
use store::Database;
use test_support::TestDatabase;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::auth::{PASSWORD, member, server_log, sign_in};
use crate::browser::{Browser, Page};
use crate::site::assert_cookie_attributes;
use crate::{request, serve};

/// What the settings page's and the sign-in page's refusals say.
const SSO_FAILED: &str = "Single sign-on did not complete.";
const SSO_UNAVAILABLE: &str = "Single sign-on is not set up for that address.";

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

/// Installs the provider's locked dependencies once per test process, if missing.
fn install_provider() {
    static INSTALLED: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut installed = INSTALLED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if *installed {
        return;
    }
    let node = std::process::Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|output| output.status.success()),
        "the SSO tests need Node.js and npm to run a real OpenID provider: run \
         `scripts/install-prerequisites --for-tests` (or `apt-get install nodejs npm`)"
    );
    if !fixture_dir().join("node_modules/oidc-provider").is_dir() {
        let status = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(fixture_dir())
            .status()
            .expect("npm runs (install it with nodejs)");
        assert!(status.success(), "npm ci in {}", fixture_dir().display());
    }
    *installed = true;
}

/// A running OpenID provider with one registered client.
struct Provider {
    issuer: String,
    _process: Child,
}

impl Provider {
    async fn start(client_id: &str, client_secret: &str, redirect_uri: &str) -> Self {
        install_provider();
        let mut process = Command::new("node")
            .arg("provider.mjs")
            .current_dir(fixture_dir())
            .env("OIDC_CLIENT_ID", client_id)
            .env("OIDC_CLIENT_SECRET", client_secret)
            .env("OIDC_REDIRECT_URI", redirect_uri)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("node starts");
        let mut lines = BufReader::new(process.stdout.take().unwrap()).lines();
        let issuer = tokio::time::timeout(std::time::Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(issuer) = line.strip_prefix("listening ") {
                    return issuer.to_owned();
                }
            }
            panic!("the OpenID provider exited before listening");
        })
        .await
        .expect("the OpenID provider listens within 30 s");
        // Keep reading: a closed pipe would make the provider's next write kill it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            issuer,
            _process: process,
        }
    }

    fn addr(&self) -> &str {
        self.issuer.trim_start_matches("http://")
    }
}

/// The settings form for `provider`'s one client, enabled.
fn idp_fields<'a>(
    provider: &'a Provider,
    client_secret: &'a str,
    domains: &'a str,
    default_role: &'a str,
) -> Vec<(&'static str, &'a str)> {
    vec![
        ("issuer", &provider.issuer),
        ("client_id", "tributary-acme"),
        ("client_secret", client_secret),
        ("domains", domains),
        ("default_role", default_role),
        ("enabled", "on"),
    ]
}

/// `http://host:port/path?query` as (`host:port`, `/path?query`).
fn split_url(url: &str) -> (String, String) {
    let rest = url.strip_prefix("http://").expect("a loopback http URL");
    let slash = rest.find('/').unwrap_or(rest.len());
    (rest[..slash].to_owned(), rest[slash..].to_owned())
}

/// A query parameter of a URL (values here are URL-safe; no decoding needed).
fn param<'a>(url: &'a str, name: &str) -> Option<&'a str> {
    url.split_once('?')?
        .1
        .split('&')
        .find_map(|pair| pair.strip_prefix(&format!("{name}=")))
}

/// Follows the IdP's pages from `authorize_url` as a person would, signing in with `login` at
/// its login form; returns the path and query the IdP sends the browser back to on `app_addr`.
async fn through_idp(
    idp: &mut Browser,
    authorize_url: &str,
    login: &str,
    app_addr: &str,
) -> String {
    let (host, mut path) = split_url(authorize_url);
    assert_eq!(host, idp.addr, "the redirect goes to the configured IdP");
    for _ in 0..10 {
        let page = idp.get(&path).await;
        if path.starts_with("/interaction/") && page.status == 200 {
            assert!(
                page.body.contains(r#"name="login""#),
                "the IdP's login form"
            );
            let answer = idp
                .post(
                    &path,
                    &[("prompt", "login"), ("login", login), ("password", "any")],
                )
                .await;
            assert_eq!(answer.status, 303, "login accepted: {}", answer.body);
            path = split_url(answer.header("location").unwrap()).1;
            continue;
        }
        assert!(
            [302, 303].contains(&page.status),
            "{path}: {} {}",
            page.status,
            page.body
        );
        let location = page.header("location").unwrap().to_owned();
        let location = if location.starts_with('/') {
            format!("http://{}{location}", idp.addr)
        } else {
            location
        };
        let (host, next) = split_url(&location);
        if host == app_addr {
            return next;
        }
        path = next;
    }
    panic!("the IdP never sent the browser back");
}

/// How many refusals for `reason` in `tenant` the server has logged.
fn refusals(reason: &str, tenant: TenantId) -> usize {
    let log = String::from_utf8_lossy(&server_log().lock().unwrap()).into_owned();
    log.lines()
        .filter(|line| {
            line.contains("sso sign-in refused")
                && line.contains(reason)
                && line.contains(&tenant.to_string())
        })
        .count()
}

/// The server's SSO log lines, for a failing assertion's message.
fn sso_log() -> String {
    whole_log()
        .lines()
        .filter(|line| line.contains("sso"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn whole_log() -> String {
    String::from_utf8_lossy(&server_log().lock().unwrap()).into_owned()
}

/// "Sign in with SSO" for `email` in `browser`; returns the answer (a redirect to the IdP, or
/// the sign-in page).
async fn start_sso(browser: &mut Browser, email: &str) -> Page {
    browser
        .submit("/auth", "/auth/sso", &[("email", email)])
        .await
}

/// A whole SSO sign-in in a fresh browser, as `login` at the IdP; returns the browser and the
/// callback's answer.
async fn sso_sign_in(addr: &str, idp_addr: &str, email: &str, login: &str) -> (Browser, Page) {
    let mut browser = Browser::new(addr);
    let started = start_sso(&mut browser, email).await;
    assert_eq!(started.status, 303, "{}", started.body);
    let mut idp = Browser::new(idp_addr);
    let callback = through_idp(&mut idp, started.header("location").unwrap(), login, addr).await;
    let answer = browser.get(&callback).await;
    (browser, answer)
}

async fn role_in(database: &Database, tenant: TenantId, email: &str) -> Option<Role> {
    let credentials = store::accounts::credentials(&database.app, &Email::parse(email).unwrap())
        .await
        .unwrap()?;
    store::accounts::memberships(&database.app, credentials.user_id)
        .await
        .unwrap()
        .into_iter()
        .find(|membership| membership.tenant_id == tenant)
        .map(|membership| membership.role)
}

/// The TXT record text the settings page tells the owner to publish.
fn record_value(page: &str) -> String {
    let start = page
        .find(r#"id="sso-dns-value">"#)
        .expect("the page shows the record")
        + 19;
    let end = page[start..].find('<').unwrap() + start;
    page[start..end].to_owned()
}

/// The workspace's audit log as (action, target), newest first.
async fn audit_entries(database: &Database, tenant: TenantId) -> Vec<(String, String)> {
    let mut tx = store::TenantTx::begin(
        &database.app,
        store::Scope::Member {
            tenant,
            user: domain::UserId::new_random(),
            role: Role::Owner,
        },
    )
    .await
    .unwrap();
    let entries = store::audit::list(&mut tx, 1000).await.unwrap();
    tx.rollback().await.unwrap();
    entries
        .into_iter()
        .map(|entry| (entry.action, entry.target))
        .collect()
}

#[tokio::test]
async fn sso_verifies_a_domain_signs_people_in_just_in_time_and_refuses_every_forgery() {
    server_log();
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let acme = crate::api::tenant(&database, "Acme").await;
    let globex = crate::api::tenant(&database, "Globex").await;
    member(&database, acme, "owner@acme.test", Role::Owner).await;
    member(&database, acme, "admin@acme.test", Role::Admin).await;
    member(&database, acme, "viewer@acme.test", Role::Viewer).await;
    member(&database, globex, "owner@globex.test", Role::Owner).await;
    // Someone in both workspaces, with a password.
    member(&database, acme, "both@acme.test", Role::Viewer).await;
    member(&database, globex, "both@acme.test", Role::Owner).await;

    let client_secret = format!("client-secret-{}", store::random_token(12));
    let redirect_uri = format!("http://{addr}/auth/sso/callback");
    let provider = Provider::start("tributary-acme", &client_secret, &redirect_uri).await;
    let idp_addr = provider.addr().to_owned();

    // The owner configures the IdP; the page shows where to register the callback.
    let mut admin = Browser::new(&addr);
    sign_in(&mut admin, "owner@acme.test", PASSWORD).await;
    let page = admin.get("/app/settings/sso").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains(&redirect_uri), "{}", page.body);
    let refused = admin
        .submit(
            "/app/settings/sso",
            "/app/settings/sso",
            &[
                ("issuer", "http://idp.example.com"),
                ("client_id", "x"),
                ("client_secret", "y"),
                ("domains", "acme.test"),
                ("default_role", "owner"),
            ],
        )
        .await;
    assert_eq!(refused.status, 422);
    assert!(
        refused.body.contains("https URL") && refused.body.contains("admin, operator or viewer")
    );
    let saved = admin
        .submit(
            "/app/settings/sso",
            "/app/settings/sso",
            &idp_fields(
                &provider,
                &client_secret,
                "acme.test, other.test",
                "operator",
            ),
        )
        .await;
    assert_eq!(
        saved.header("location"),
        Some("/app/settings/sso?done=saved")
    );
    let page = admin.get("/app/settings/sso?done=saved").await;
    assert!(page.body.contains("Single sign-on saved."));
    assert!(page.body.contains("acme.test") && page.body.contains("not verified"));
    assert!(
        !page.body.contains(&client_secret),
        "the secret is write-only"
    );

    // Not verified yet: the domain routes nowhere, and says so like an unknown one.
    let mut stranger = Browser::new(&addr);
    for email in [
        "new.person@acme.test",
        "someone@unknown.test",
        "not an address",
    ] {
        let answer = start_sso(&mut stranger, email).await;
        assert_eq!(answer.status, 200, "{email}");
        assert!(answer.body.contains(SSO_UNAVAILABLE), "{email}");
        assert!(answer.set_cookie("__Host-tributary-sso").is_none());
    }

    // The test sign-in: code flow with PKCE S256, a nonce and a state, bound to this browser.
    let started = admin
        .submit("/app/settings/sso", "/app/settings/sso/test", &[])
        .await;
    assert_eq!(started.status, 303, "{}", started.body);
    assert_cookie_attributes(&started, "sso flow start");
    assert!(
        started
            .set_cookie("__Host-tributary-sso")
            .is_some_and(|line| line.contains("Max-Age=600")),
        "{:?}",
        started.set_cookies()
    );
    let authorize = started.header("location").unwrap().to_owned();
    assert!(
        authorize.starts_with(&format!("{}/auth?", provider.issuer)),
        "{authorize}"
    );
    for (name, expected) in [
        ("response_type", Some("code")),
        ("code_challenge_method", Some("S256")),
        ("client_id", Some("tributary-acme")),
    ] {
        assert_eq!(param(&authorize, name), expected, "{name} in {authorize}");
    }
    for name in ["code_challenge", "nonce", "state", "redirect_uri"] {
        assert!(param(&authorize, name).is_some(), "{name} in {authorize}");
    }
    let mut admin_idp = Browser::new(&idp_addr);
    let callback = through_idp(&mut admin_idp, &authorize, "it.admin@acme.test", &addr).await;
    let tested = admin.get(&callback).await;
    assert_eq!(
        tested.header("location"),
        Some("/app/settings/sso?done=tested"),
        "{} {}\n{}",
        tested.status,
        tested.body,
        sso_log()
    );
    // The IdP vouching for an address proves nothing about who controls its domain: still
    // unverified, still routing nowhere.
    let page = admin.get("/app/settings/sso?done=tested").await;
    assert!(page.body.contains("the IdP signs people in"));
    assert_eq!(page.body.matches("badge-active\">verified").count(), 0);
    let answer = start_sso(&mut stranger, "new.person@acme.test").await;
    assert!(answer.body.contains(SSO_UNAVAILABLE));

    // Proof of control outside the IdP: the workspace's own TXT record in the domain's DNS,
    // checked through the resolver the platform is configured with (the tests' DNS server).
    let value = record_value(&page.body);
    let checked = admin
        .submit("/app/settings/sso", "/app/settings/sso/verify", &[])
        .await;
    assert_eq!(
        checked.header("location"),
        Some("/app/settings/sso?refused=dns-not-found"),
        "no record yet"
    );
    crate::dns::server().publish(
        "_tributary-sso.acme.test",
        "tributary-sso-verification=0123456789abcdef0123456789abcdef",
    );
    let checked = admin
        .submit("/app/settings/sso", "/app/settings/sso/verify", &[])
        .await;
    assert_eq!(
        checked.header("location"),
        Some("/app/settings/sso?refused=dns-not-found"),
        "a record with another token proves nothing"
    );
    crate::dns::server().publish("_tributary-sso.acme.test", &value);
    let verified = admin
        .submit("/app/settings/sso", "/app/settings/sso/verify", &[])
        .await;
    assert_eq!(
        verified.header("location"),
        Some("/app/settings/sso?done=verified"),
        "{}",
        sso_log()
    );
    let page = admin.get("/app/settings/sso?done=verified").await;
    assert!(page.body.contains("the domain is verified"));
    assert_eq!(
        page.body.matches("badge-active\">verified").count(),
        1,
        "only acme.test"
    );
    assert!(
        audit_entries(&database, acme)
            .await
            .contains(&("sso.domain_verify".to_owned(), "acme.test".to_owned()))
    );

    // A new person of the domain signs in through the IdP and joins with the default role.
    let mut newcomer = Browser::new(&addr);
    let sign_in_page = newcomer.get("/auth").await;
    assert!(sign_in_page.body.contains("Sign in with SSO"));
    let pre_auth_csrf = newcomer.cookies["__Host-tributary-csrf"].clone();
    let started = start_sso(&mut newcomer, "New.Person@acme.test").await;
    assert_eq!(started.status, 303);
    let flow_cookie = newcomer.cookies["__Host-tributary-sso"].clone();
    let authorize = started.header("location").unwrap().to_owned();
    assert_eq!(
        param(&authorize, "login_hint"),
        Some("new.person%40acme.test")
    );
    let mut newcomer_idp = Browser::new(&idp_addr);
    let callback = through_idp(&mut newcomer_idp, &authorize, "new.person@acme.test", &addr).await;
    let mut replayer = newcomer.clone();
    let signed_in = newcomer.get(&callback).await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    assert_eq!(signed_in.header("location"), Some("/app"));
    assert_cookie_attributes(&signed_in, "sso sign-in");
    let session = newcomer.cookies["__Host-tributary-session"].clone();
    assert_ne!(session, pre_auth_csrf);
    assert_ne!(session, flow_cookie);
    assert_ne!(
        newcomer.cookies["__Host-tributary-csrf"], pre_auth_csrf,
        "rotated"
    );
    assert!(
        !newcomer.cookies.contains_key("__Host-tributary-sso"),
        "spent"
    );
    let overview = newcomer.get("/app/overview").await;
    assert_eq!(overview.status, 200);
    assert!(
        overview.body.contains("new.person@acme.test · operator"),
        "{}",
        overview.body
    );
    assert_eq!(
        role_in(&database, acme, "new.person@acme.test").await,
        Some(Role::Operator)
    );
    let credentials = store::accounts::credentials(
        &database.app,
        &Email::parse("new.person@acme.test").unwrap(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(
        credentials.password_hash.is_none(),
        "an account without a password"
    );

    // The same callback again, even with the flow cookie: the state is spent.
    let before = refusals("state_unknown_or_used", acme);
    let replayed = replayer.get(&callback).await;
    assert_eq!(replayed.status, 400);
    assert!(replayed.body.contains(SSO_FAILED));
    assert!(replayed.set_cookie("__Host-tributary-session").is_none());
    assert_eq!(refusals("state_unknown_or_used", acme), before + 1);

    // A returning member signs in again: same role, one membership, one member.add.
    let (_, again) = sso_sign_in(
        &addr,
        &idp_addr,
        "new.person@acme.test",
        "new.person@acme.test",
    )
    .await;
    assert_eq!(again.header("location"), Some("/app"));
    assert_eq!(
        role_in(&database, acme, "new.person@acme.test").await,
        Some(Role::Operator)
    );
    let memberships = store::accounts::memberships(&database.app, credentials.user_id)
        .await
        .unwrap();
    assert_eq!(memberships.len(), 1);
    let entries = audit_entries(&database, acme).await;
    let newcomer_id = credentials.user_id.to_string();
    let count = |action: &str| {
        entries
            .iter()
            .filter(|(logged, target)| logged == action && *target == newcomer_id)
            .count()
    };
    assert_eq!(
        (count("sso.sign_in"), count("member.add")),
        (2, 1),
        "{entries:?}"
    );

    // Privilege comes from the workspace, never from the IdP. While the owner has not allowed
    // privileged members to sign in with SSO, an owner or admin the IdP vouches for is refused
    // (whoever runs the IdP could otherwise act as them), and nothing changes.
    for email in ["owner@acme.test", "admin@acme.test"] {
        let before = refusals("privileged_role_needs_password", acme);
        let (browser, answer) = sso_sign_in(&addr, &idp_addr, email, email).await;
        assert_eq!(answer.status, 400, "{email}: {}", answer.body);
        assert!(answer.set_cookie("__Host-tributary-session").is_none());
        assert!(!browser.cookies.contains_key("__Host-tributary-session"));
        assert_eq!(
            refusals("privileged_role_needs_password", acme),
            before + 1,
            "{email}"
        );
    }
    assert_eq!(
        role_in(&database, acme, "owner@acme.test").await,
        Some(Role::Owner)
    );
    assert_eq!(
        role_in(&database, acme, "admin@acme.test").await,
        Some(Role::Admin)
    );
    // An existing member never gets more than their role, whatever the default role is.
    let (mut viewer_sso, answer) =
        sso_sign_in(&addr, &idp_addr, "viewer@acme.test", "viewer@acme.test").await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    assert!(
        viewer_sso
            .get("/app/overview")
            .await
            .body
            .contains("viewer@acme.test · viewer")
    );
    assert_eq!(
        role_in(&database, acme, "viewer@acme.test").await,
        Some(Role::Viewer)
    );
    // Newcomers join as admin only if privileged sign-in is on: the settings refuse otherwise.
    let mut admin_default = idp_fields(&provider, "", "acme.test, other.test", "admin");
    let refused = admin
        .submit("/app/settings/sso", "/app/settings/sso", &admin_default)
        .await;
    assert_eq!(refused.status, 422);
    assert!(
        refused
            .body
            .contains("join as admin only if owners and admins may sign in")
    );
    // The owner allows it: now an admin signs in through the IdP, as admin and no more, and
    // the domain stays verified (same issuer and client).
    admin_default.push(("privileged_sign_in", "on"));
    let saved = admin
        .submit("/app/settings/sso", "/app/settings/sso", &admin_default)
        .await;
    assert_eq!(
        saved.header("location"),
        Some("/app/settings/sso?done=saved")
    );
    let (mut admin_sso, answer) =
        sso_sign_in(&addr, &idp_addr, "admin@acme.test", "admin@acme.test").await;
    assert_eq!(answer.status, 303, "{}\n{}", answer.body, sso_log());
    assert!(
        admin_sso
            .get("/app/overview")
            .await
            .body
            .contains("admin@acme.test · admin")
    );
    assert_eq!(
        role_in(&database, acme, "admin@acme.test").await,
        Some(Role::Admin)
    );
    // Back to the default: privileged members sign in with their password again.
    let saved = admin
        .submit(
            "/app/settings/sso",
            "/app/settings/sso",
            &idp_fields(&provider, "", "acme.test, other.test", "operator"),
        )
        .await;
    assert_eq!(
        saved.header("location"),
        Some("/app/settings/sso?done=saved")
    );
    let (_, answer) = sso_sign_in(&addr, &idp_addr, "admin@acme.test", "admin@acme.test").await;
    assert_eq!(answer.status, 400);

    // A session from Acme's IdP acts in Acme only, though the account is also Globex's owner.
    let (mut both, answer) =
        sso_sign_in(&addr, &idp_addr, "both@acme.test", "both@acme.test").await;
    assert_eq!(answer.status, 303);
    let overview = both.get("/app/overview").await;
    assert!(
        overview
            .body
            .contains(r#"<p class="workspace-name">Acme</p>"#)
            && !overview.body.contains("Globex")
    );
    let switched = both
        .submit(
            "/app/overview",
            "/app/workspace",
            &[("tenant_id", &globex.to_string())],
        )
        .await;
    assert_eq!(switched.status, 404);
    let api = both.get("/api/v1/workspace").await;
    assert_eq!(api.status, 200);
    assert!(
        api.body.contains("Acme") && !api.body.contains("Globex"),
        "{}",
        api.body
    );

    // Wrong state: unknown, or not even well-formed.
    let forged = format!("{}.{}", acme.as_uuid().simple(), "ab".repeat(32));
    let mut forger = Browser::new(&addr);
    start_sso(&mut forger, "x@acme.test").await;
    let before = refusals("state_unknown_or_used", acme);
    let answer = forger
        .get(&format!("/auth/sso/callback?code=abc&state={forged}"))
        .await;
    assert_eq!(answer.status, 400);
    assert_eq!(refusals("state_unknown_or_used", acme), before + 1);
    let answer = forger
        .get("/auth/sso/callback?code=abc&state=nonsense")
        .await;
    assert_eq!(answer.status, 400);
    assert!(answer.body.contains(SSO_FAILED));

    // Wrong nonce: the IdP issues its token for another nonce than the flow's.
    let mut victim = Browser::new(&addr);
    let started = start_sso(&mut victim, "nonce@acme.test").await;
    let authorize = started.header("location").unwrap().to_owned();
    let nonce = param(&authorize, "nonce").unwrap().to_owned();
    let tampered = authorize.replace(
        &format!("nonce={nonce}"),
        &format!("nonce={}", "cd".repeat(32)),
    );
    assert_ne!(tampered, authorize);
    let callback = through_idp(
        &mut Browser::new(&idp_addr),
        &tampered,
        "nonce@acme.test",
        &addr,
    )
    .await;
    let before = refusals("nonce_mismatch", acme);
    let answer = victim.get(&callback).await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert!(answer.set_cookie("__Host-tributary-session").is_none());
    assert_eq!(refusals("nonce_mismatch", acme), before + 1);
    assert_eq!(role_in(&database, acme, "nonce@acme.test").await, None);

    // Login CSRF: the victim's browser opens a callback of a flow the attacker started — with
    // no flow cookie, or with a flow cookie of its own.
    let (mut attacker, mut innocent) = (Browser::new(&addr), Browser::new(&addr));
    let started = start_sso(&mut attacker, "attacker@acme.test").await;
    let callback = through_idp(
        &mut Browser::new(&idp_addr),
        started.header("location").unwrap(),
        "attacker@acme.test",
        &addr,
    )
    .await;
    let before = refusals("no_flow_cookie", acme);
    let answer = innocent.get(&callback).await;
    assert_eq!(answer.status, 400);
    assert!(answer.set_cookie("__Host-tributary-session").is_none());
    assert_eq!(refusals("no_flow_cookie", acme), before + 1);
    start_sso(&mut innocent, "innocent@acme.test").await;
    let before = refusals("state_from_another_browser", acme);
    let answer = innocent.get(&callback).await;
    assert_eq!(answer.status, 400);
    assert_eq!(refusals("state_from_another_browser", acme), before + 1);
    assert_eq!(role_in(&database, acme, "attacker@acme.test").await, None);

    // The IdP has not verified the address: refused.
    let before = refusals("email_not_verified", acme);
    let (_, answer) = sso_sign_in(
        &addr,
        &idp_addr,
        "eve@acme.test",
        "unverified:eve@acme.test",
    )
    .await;
    assert_eq!(answer.status, 400);
    assert_eq!(refusals("email_not_verified", acme), before + 1);
    assert_eq!(role_in(&database, acme, "eve@acme.test").await, None);

    // An address on a listed but unverified domain: refused.
    let before = refusals("domain_not_verified", acme);
    let (_, answer) = sso_sign_in(&addr, &idp_addr, "m@acme.test", "mallory@other.test").await;
    assert_eq!(answer.status, 400);
    assert_eq!(refusals("domain_not_verified", acme), before + 1);
    assert_eq!(role_in(&database, acme, "mallory@other.test").await, None);

    // A viewer has no SSO settings.
    let mut viewer = Browser::new(&addr);
    sign_in(&mut viewer, "viewer@acme.test", PASSWORD).await;
    assert_eq!(viewer.get("/app/settings/sso").await.status, 403);
    let refused = viewer
        .submit(
            "/app/overview",
            "/app/settings/sso",
            &[
                ("issuer", "https://evil.example.com"),
                ("client_id", "x"),
                ("domains", "acme.test"),
                ("default_role", "viewer"),
            ],
        )
        .await;
    assert_eq!(refused.status, 403);

    // Nor has an admin: configuring SSO decides who may act as the workspace's members, an
    // owner's action. The page, the form, the test sign-in and the API all refuse them.
    let mut acme_admin = Browser::new(&addr);
    sign_in(&mut acme_admin, "admin@acme.test", PASSWORD).await;
    assert_eq!(acme_admin.get("/app/settings/sso").await.status, 403);
    for (action, fields) in [
        (
            "/app/settings/sso",
            vec![
                ("issuer", "https://evil.example.com"),
                ("client_id", "x"),
                ("client_secret", "y"),
                ("domains", "acme.test"),
                ("default_role", "admin"),
                ("privileged_sign_in", "on"),
            ],
        ),
        ("/app/settings/sso/test", vec![]),
        ("/app/settings/sso/delete", vec![]),
    ] {
        let refused = acme_admin.submit("/app/overview", action, &fields).await;
        assert_eq!(refused.status, 403, "admin POST {action}");
    }
    let admin_token = crate::api::token(&database, acme, Role::Admin).await;
    for (method, body) in [
        ("GET", ""),
        (
            "PUT",
            r#"{"issuer": "https://evil.example.com", "client_id": "x", "client_secret": "y", "domains": ["acme.test"], "default_role": "viewer", "enabled": true}"#,
        ),
        ("DELETE", ""),
    ] {
        let (status, _, _) = request(&addr, method, "/api/v1/sso", Some(&admin_token), body).await;
        assert_eq!(status, 403, "admin {method} /api/v1/sso");
    }
    let configured = audit_entries(&database, acme)
        .await
        .into_iter()
        .filter(|(action, _)| action == "sso.configure")
        .count();
    assert_eq!(
        configured, 3,
        "only the owner's three changes were made, and audited"
    );

    // Another tenant's owner sees and changes only their own workspace's SSO, and cannot verify
    // a domain another workspace holds.
    let mut rival = Browser::new(&addr);
    sign_in(&mut rival, "owner@globex.test", PASSWORD).await;
    let page = rival.get("/app/settings/sso").await;
    assert_eq!(page.status, 200);
    assert!(!page.body.contains("tributary-acme") && !page.body.contains(&provider.issuer));
    let mut globex_fields = idp_fields(&provider, &client_secret, "acme.test", "admin");
    globex_fields.push(("privileged_sign_in", "on"));
    let saved = rival
        .submit("/app/settings/sso", "/app/settings/sso", &globex_fields)
        .await;
    assert_eq!(saved.status, 303);
    // Acme's record in acme.test's DNS does not count for Globex: its token is Acme's.
    let checked = rival
        .submit("/app/settings/sso", "/app/settings/sso/verify", &[])
        .await;
    assert_eq!(
        checked.header("location"),
        Some("/app/settings/sso?refused=dns-not-found")
    );
    // Even with Globex's own record there, the domain stays Acme's.
    let globex_value = record_value(&rival.get("/app/settings/sso").await.body);
    assert_ne!(globex_value, value, "each workspace has its own token");
    crate::dns::server().publish("_tributary-sso.acme.test", &globex_value);
    let taken = rival
        .submit("/app/settings/sso", "/app/settings/sso/verify", &[])
        .await;
    assert_eq!(
        taken.header("location"),
        Some("/app/settings/sso?refused=domain-taken")
    );
    let globex_token = crate::api::token(&database, globex, Role::Owner).await;
    let (status, _, body) = request(&addr, "GET", "/api/v1/sso", Some(&globex_token), "").await;
    assert_eq!(status, 200);
    let globex_sso: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        globex_sso["sso"]["domains"][0]["verified"],
        Value::Bool(false)
    );
    assert_eq!(globex_sso["sso"]["default_role"], "admin");
    let (status, _, _) = request(&addr, "DELETE", "/api/v1/sso", Some(&globex_token), "").await;
    assert_eq!(status, 204);
    let acme_token = crate::api::token(&database, acme, Role::Owner).await;
    let (status, _, body) = request(&addr, "GET", "/api/v1/sso", Some(&acme_token), "").await;
    assert_eq!(status, 200, "Acme's configuration is untouched");
    assert!(body.contains("\"verified\":true") && body.contains("tributary-acme"));

    // The client secret is in no page, no API answer, no log line.
    assert!(!body.contains(&client_secret));
    assert!(
        !admin
            .get("/app/settings/sso")
            .await
            .body
            .contains(&client_secret)
    );
    assert!(
        !whole_log().contains(&client_secret),
        "the secret reached the log"
    );
}

#[tokio::test]
async fn the_idp_client_refuses_internal_addresses_and_plain_http_beyond_loopback() {
    server_log();
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let acme = crate::api::tenant(&database, "Acme").await;
    member(&database, acme, "owner@acme.test", Role::Owner).await;
    let token = crate::api::token(&database, acme, Role::Owner).await;
    for (issuer, accepted) in [
        ("http://idp.example.com", false),
        ("https://idp.example.com?x=1", false),
        ("https://user:pw@idp.example.com", false),
        ("ftp://idp.example.com", false),
        ("http://127.0.0.1:9", true),
        ("https://169.254.169.254", true),
    ] {
        let body = format!(
            r#"{{"issuer": "{issuer}", "client_id": "c", "client_secret": "s", "domains": ["acme.test"], "default_role": "viewer", "enabled": true}}"#
        );
        let (status, _, response) = request(&addr, "PUT", "/api/v1/sso", Some(&token), &body).await;
        assert_eq!(status == 200, accepted, "{issuer}: {status} {response}");
    }
    // The metadata service's address is a valid https issuer, but never dialled.
    let mut admin = Browser::new(&addr);
    sign_in(&mut admin, "owner@acme.test", PASSWORD).await;
    let answer = admin
        .submit("/app/settings/sso", "/app/settings/sso/test", &[])
        .await;
    assert_eq!(answer.status, 400);
    assert!(answer.body.contains(SSO_FAILED));
    assert!(refusals("discovery_failed", acme) >= 1);
    assert!(
        whole_log().contains("internal address"),
        "refused before connecting"
    );
}

/// A loopback listener that counts the connections made to it (and answers none): an issuer
/// the client secret must never reach.
async fn trap() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(stream);
        }
    });
    (format!("http://{addr}"), connections)
}

#[tokio::test]
async fn a_new_issuer_or_client_needs_the_secret_again_and_a_secret_reaches_no_other_issuer() {
    server_log();
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let acme = crate::api::tenant(&database, "Acme").await;
    member(&database, acme, "owner@acme.test", Role::Owner).await;
    let token = crate::api::token(&database, acme, Role::Owner).await;
    let secret = format!("client-secret-{}", store::random_token(12));
    let config = |issuer: &str, client_id: &str, secret: Option<&str>| {
        let secret = secret
            .map(|secret| format!(r#""client_secret": "{secret}", "#))
            .unwrap_or_default();
        format!(
            r#"{{"issuer": "{issuer}", "client_id": "{client_id}", {secret}"domains": ["acme.test"], "default_role": "viewer", "enabled": true}}"#
        )
    };
    let (status, _, body) = request(
        &addr,
        "PUT",
        "/api/v1/sso",
        Some(&token),
        &config("https://login.acme.example", "acme", Some(&secret)),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // Pointing the stored secret at another issuer, or another client, without entering it
    // again is refused: the stored one was entered for the first IdP.
    let (attacker_issuer, connections) = trap().await;
    for (issuer, client_id) in [
        (attacker_issuer.as_str(), "acme"),
        ("https://login.acme.example", "another-client"),
    ] {
        let (status, _, body) = request(
            &addr,
            "PUT",
            "/api/v1/sso",
            Some(&token),
            &config(issuer, client_id, None),
        )
        .await;
        assert_eq!(status, 409, "{issuer} {client_id}: {body}");
        assert!(body.contains("secret_required"), "{body}");
    }
    let mut owner = Browser::new(&addr);
    sign_in(&mut owner, "owner@acme.test", PASSWORD).await;
    let refused = owner
        .submit(
            "/app/settings/sso",
            "/app/settings/sso",
            &[
                ("issuer", attacker_issuer.as_str()),
                ("client_id", "acme"),
                ("domains", "acme.test"),
                ("default_role", "viewer"),
                ("enabled", "on"),
            ],
        )
        .await;
    assert_eq!(refused.status, 422);
    assert!(refused.body.contains("whenever the issuer or client id"));
    let (_, _, body) = request(&addr, "GET", "/api/v1/sso", Some(&token), "").await;
    assert!(body.contains("https://login.acme.example") && !body.contains(&attacker_issuer));

    // Even a row changed behind the application's back (here, the owner role's own grant used
    // directly) cannot send the secret elsewhere: it is sealed bound to its issuer and client,
    // so it does not open for the new issuer, and nothing is fetched from it.
    let mut tx = store::TenantTx::begin(
        &database.app,
        store::Scope::Member {
            tenant: acme,
            user: domain::UserId::new_random(),
            role: Role::Owner,
        },
    )
    .await
    .unwrap();
    sqlx::query("update control.sso_configs set issuer = $1 where tenant_id = $2")
        .bind(&attacker_issuer)
        .bind(acme.as_uuid())
        .execute(tx.connection_for_tests())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let before = refusals("client_secret_unusable", acme);
    let answer = owner
        .submit("/app/settings/sso", "/app/settings/sso/test", &[])
        .await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert_eq!(refusals("client_secret_unusable", acme), before + 1);
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the other issuer was contacted"
    );

    // Entered again for the new issuer, the secret is that issuer's to use.
    let (status, _, body) = request(
        &addr,
        "PUT",
        "/api/v1/sso",
        Some(&token),
        &config(&attacker_issuer, "acme", Some("its own secret")),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let answer = owner
        .submit("/app/settings/sso", "/app/settings/sso/test", &[])
        .await;
    assert_eq!(answer.status, 400);
    assert!(
        connections.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "discovery at the newly entered issuer"
    );
    assert!(!whole_log().contains(&secret), "the secret reached the log");
}

/// Production runs without the development setting: an issuer on a loopback host, or over plain
/// http, is refused when it is configured, and nothing connects to it.
#[tokio::test]
async fn without_the_development_setting_a_loopback_or_plain_http_issuer_is_refused() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = crate::serve_with(
        database.clone(),
        None,
        web::outbound::OutboundPolicy::production(),
    )
    .await;
    let acme = crate::api::tenant(&database, "Acme").await;
    let token = crate::api::token(&database, acme, Role::Owner).await;
    let (loopback_issuer, connections) = trap().await;
    let port = loopback_issuer.rsplit(':').next().unwrap().to_owned();
    for issuer in [
        loopback_issuer.clone(),
        format!("https://127.0.0.1:{port}"),
        format!("https://localhost:{port}"),
        format!("https://[::1]:{port}"),
        "http://idp.example.com".to_owned(),
    ] {
        let body = format!(
            r#"{{"issuer": "{issuer}", "client_id": "c", "client_secret": "s", "domains": ["acme.test"], "default_role": "viewer", "enabled": true}}"#
        );
        let (status, _, response) = request(&addr, "PUT", "/api/v1/sso", Some(&token), &body).await;
        assert_eq!(status, 400, "{issuer}: {response}");
        assert!(response.contains("issuer"), "{response}");
    }
    let body = r#"{"issuer": "https://login.acme.example", "client_id": "c", "client_secret": "s", "domains": ["acme.test"], "default_role": "viewer", "enabled": true}"#;
    let (status, _, response) = request(&addr, "PUT", "/api/v1/sso", Some(&token), body).await;
    assert_eq!(status, 200, "a public https issuer: {response}");
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nothing connected to the loopback issuer"
    );
}

/// The settings page's DNS check through the API: an owner (by session or by a token they hold)
/// verifies one domain, and is told with a specific code why it is not verified — no record,
/// another value, another workspace's already — with the record to publish; other roles are
/// refused, and a domain the workspace does not list is not found.
#[tokio::test]
async fn an_owner_verifies_a_domain_through_the_api_and_is_told_why_it_is_not() {
    let test_database = TestDatabase::new().await;
    let database = test_database.connect().await;
    let (addr, _stop) = serve(database.clone()).await;
    let acme = crate::api::tenant(&database, "Acme").await;
    let globex = crate::api::tenant(&database, "Globex").await;
    member(&database, acme, "owner@api-acme.test", Role::Owner).await;
    member(&database, acme, "admin@api-acme.test", Role::Admin).await;
    member(&database, globex, "owner@api-globex.test", Role::Owner).await;
    let mut owner = crate::auth::signed_in(&addr, "owner@api-acme.test").await;
    let owner_token = crate::api::page_token(&mut owner, "owner's", "owner").await;
    let mut admin = crate::auth::signed_in(&addr, "admin@api-acme.test").await;
    let admin_token = crate::api::page_token(&mut admin, "admin's", "admin").await;
    let mut rival = crate::auth::signed_in(&addr, "owner@api-globex.test").await;
    let rival_token = crate::api::page_token(&mut rival, "rival's", "owner").await;
    let configure = |token: &str| {
        let (addr, token) = (addr.clone(), token.to_owned());
        async move {
            let body = r#"{"issuer": "https://idp.api-acme.test", "client_id": "acme", "client_secret": "s", "domains": ["api-acme.test", "api-other.test"], "default_role": "viewer", "enabled": false}"#;
            let (status, _, response) =
                request(&addr, "PUT", "/api/v1/sso", Some(&token), body).await;
            assert_eq!(status, 200, "{response}");
        }
    };
    let verify = |token: &str, domain: &str| {
        let (addr, token) = (addr.clone(), token.to_owned());
        let path = format!("/api/v1/sso/domains/{domain}/verify");
        async move {
            let (status, _, response) = request(&addr, "POST", &path, Some(&token), "").await;
            let body: Value =
                serde_json::from_str(&response).unwrap_or_else(|_| panic!("not JSON: {response}"));
            (status, body)
        }
    };
    configure(&owner_token).await;

    // Only listed domains, only owners.
    let (status, body) = verify(&owner_token, "api-unlisted.test").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, body) = verify(&admin_token, "api-acme.test").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );

    // No record yet: told so, with the record to publish (the settings page's value).
    let (status, body) = verify(&owner_token, "api-acme.test").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("no_record")),
        "{body}"
    );
    let details = &body["error"]["details"];
    assert_eq!(details["record"], "_tributary-sso.api-acme.test");
    assert_eq!(details["type"], "TXT");
    let value = details["value"].as_str().unwrap().to_owned();
    let page = owner.get("/app/settings/sso").await;
    assert!(page.body.contains(&value), "the page's value is the API's");

    // A record with another value proves nothing.
    crate::dns::server().publish(
        "_tributary-sso.api-acme.test",
        "tributary-sso-verification=00000000000000000000000000000000",
    );
    let (status, body) = verify(&owner_token, "api-acme.test").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("wrong_token")),
        "{body}"
    );
    assert_eq!(body["error"]["details"]["value"], value.as_str());

    // The workspace's own value: verified, answered with the domain, audited; once only.
    crate::dns::server().publish("_tributary-sso.api-acme.test", &value);
    let (status, body) = verify(&owner_token, "API-ACME.test").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["domain"]["domain"], "api-acme.test");
    assert_eq!(body["domain"]["verified"], true);
    assert!(body["domain"]["verified_at"].is_string());
    let (status, again) = verify(&owner_token, "api-acme.test").await;
    assert_eq!((status, &again["domain"]), (200, &body["domain"]));
    let verifications = audit_entries(&database, acme)
        .await
        .into_iter()
        .filter(|(action, target)| action == "sso.domain_verify" && target == "api-acme.test")
        .count();
    assert_eq!(verifications, 1);
    let (_, _, listed) = request(&addr, "GET", "/api/v1/sso", Some(&owner_token), "").await;
    let listed: Value = serde_json::from_str(&listed).unwrap();
    let domains = listed["sso"]["domains"].as_array().unwrap();
    assert!(
        domains
            .iter()
            .any(|listed| listed["domain"] == "api-acme.test" && listed["verified"] == true)
    );
    assert!(
        domains
            .iter()
            .any(|listed| listed["domain"] == "api-other.test" && listed["verified"] == false),
        "only the domain asked about"
    );

    // Another workspace listing the same domain: Acme's record is not its proof, and with its
    // own record there the domain stays Acme's.
    configure(&rival_token).await;
    let (status, body) = verify(&rival_token, "api-acme.test").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("wrong_token")),
        "{body}"
    );
    let rival_value = body["error"]["details"]["value"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(rival_value, value, "each workspace has its own value");
    crate::dns::server().publish("_tributary-sso.api-acme.test", &rival_value);
    let (status, body) = verify(&rival_token, "api-acme.test").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("domain_taken")),
        "{body}"
    );
    let globex_verifications = audit_entries(&database, globex)
        .await
        .into_iter()
        .filter(|(action, _)| action == "sso.domain_verify")
        .count();
    assert_eq!(globex_verifications, 0);
}
